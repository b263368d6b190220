#include "gpucluster/model/device.hpp"

#include <cmath>
#include <functional>

#include <fmt/format.h>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {

std::string_view to_string(DeviceKind kind) noexcept {
  switch (kind) {
    case DeviceKind::cuda: return "cuda";
    case DeviceKind::rocm: return "rocm";
    case DeviceKind::metal: return "metal";
    case DeviceKind::vulkan: return "vulkan";
    case DeviceKind::intel_xe: return "intel_xe";
    case DeviceKind::directml: return "directml";
    case DeviceKind::cpu: return "cpu";
    case DeviceKind::unknown: return "unknown";
  }
  return "unknown";
}

std::optional<DeviceKind> parse_device_kind(std::string_view text) noexcept {
  if (text == "cuda") return DeviceKind::cuda;
  if (text == "rocm") return DeviceKind::rocm;
  if (text == "metal") return DeviceKind::metal;
  if (text == "vulkan" || text == "vulkan_android" || text == "vulkan_linux") return DeviceKind::vulkan;
  if (text == "intel_xe") return DeviceKind::intel_xe;
  if (text == "directml") return DeviceKind::directml;
  if (text == "cpu") return DeviceKind::cpu;
  if (text == "unknown") return DeviceKind::unknown;
  return std::nullopt;
}

DeviceKey parse_device_key(std::string_view text, std::string_view default_host) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) return DeviceKey{std::string(default_host), std::string(text)};
  return DeviceKey{std::string(text.substr(0, slash)), std::string(text.substr(slash + 1))};
}

std::size_t DeviceKeyHash::operator()(const DeviceKey& key) const noexcept {
  const std::size_t h = std::hash<std::string>{}(key.host);
  return h ^ (std::hash<std::string>{}(key.local_id) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
}

namespace {
void require_finite_non_negative(const std::optional<double>& value, const char* field) {
  if (!value) return;
  if (!std::isfinite(*value)) throw InputError(field, fmt::format("{}", *value), "must be a finite number");
  if (*value < 0) throw InputError(field, fmt::format("{}", *value), "must be >= 0");
}

}  // namespace

void validate_identifier(const std::string& id, const char* field) {
  if (id.empty()) throw InputError(field, "\"\"", "must not be empty");
  if (id.size() > 256) throw InputError(field, id.substr(0, 32) + "...", "must be at most 256 characters");
  if (id.find('/') != std::string::npos) throw InputError(field, id, "must not contain '/'");
  // Ids are path segments of /v1/devices/{host}/{id}, where "." and ".." would
  // be read as "this folder" and "the parent" (and clients rewrite them).
  if (id == "." || id == "..")
    throw InputError(field, id, "must not be \".\" or \"..\" (they cannot be a path segment)");
  for (const char c : id) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      throw InputError(field, id, "must not contain control characters");
    }
  }
}

void validate_device_info(const DeviceInfo& info) {
  validate_identifier(info.key.host, "host");
  validate_identifier(info.key.local_id, "device_id");
  require_finite_non_negative(info.max_clock_mhz, "max_clock_mhz");
  require_finite_non_negative(info.memory_bandwidth_gbps, "memory_bandwidth_gbps");
  require_finite_non_negative(info.power_limit_watts, "power_limit_watts");
  for (const auto& [value, field] : {std::pair{info.temperature_slowdown_celsius, "temperature_slowdown_celsius"},
                                     std::pair{info.temperature_shutdown_celsius, "temperature_shutdown_celsius"}}) {
    if (value && (!std::isfinite(*value) || *value < -273.15)) {
      throw InputError(field, fmt::format("{}", *value), "must be a finite temperature >= -273.15");
    }
  }
}

}  // namespace gpucluster
