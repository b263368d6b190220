#include "gpucluster/backends/fleet.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <string_view>
#include <system_error>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/validation.hpp"

namespace gpucluster {

namespace {

using nlohmann::json;

// Sample memory is int64; larger byte counts cannot be stored, so they are rejected here.
constexpr std::uint64_t kMaxBytes = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());

// Keys a device object may carry; anything else is logged and ignored.
constexpr std::string_view kDeviceKeys[] = {"device_id",
                                            "name",
                                            "vendor",
                                            "device_type",
                                            "memory_bytes",
                                            "compute_units",
                                            "memory_bandwidth_gbps",
                                            "uuid",
                                            "pci_bus_id",
                                            "compute_capability",
                                            "max_clock_mhz",
                                            "driver_version",
                                            "power_limit_watts",
                                            "temperature_slowdown_celsius",
                                            "temperature_shutdown_celsius",
                                            "supports_fp64",
                                            "supports_tensor_cores",
                                            "available",
                                            "error_message",
                                            "metrics"};

// A short, printable form of a JSON value for error messages.
std::string describe(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 64) text = text.substr(0, 61) + "...";
  return text;
}

std::string child(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : fmt::format("{}.{}", parent, key);
}

// The member, or nullptr when it is absent or null (null means "not reported").
const json* member(const json& object, std::string_view key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

const json& require_member(const json& object, const std::string& parent, std::string_view key) {
  const json* value = member(object, key);
  if (value == nullptr) throw InputError(child(parent, key), "missing", "is required");
  return *value;
}

std::string as_string(const json& value, const std::string& path) {
  if (!value.is_string()) throw InputError(path, describe(value), "must be a string");
  return value.get<std::string>();
}

std::optional<std::string> optional_string(const json& object, const std::string& parent, std::string_view key) {
  const json* value = member(object, key);
  if (value == nullptr) return std::nullopt;
  return as_string(*value, child(parent, key));
}

std::optional<bool> optional_bool(const json& object, const std::string& parent, std::string_view key) {
  const json* value = member(object, key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_boolean()) throw InputError(child(parent, key), describe(*value), "must be true or false");
  return value->get<bool>();
}

double as_finite_double(const json& value, const std::string& path) {
  if (!value.is_number()) throw InputError(path, describe(value), "must be a number");
  const double number = value.get<double>();
  // Parsed JSON cannot hold NaN or infinity, but a document built in code can.
  if (!std::isfinite(number)) throw InputError(path, describe(value), "must be a finite number");
  return number;
}

std::optional<double> optional_double(const json& object, const std::string& parent, std::string_view key) {
  const json* value = member(object, key);
  if (value == nullptr) return std::nullopt;
  return as_finite_double(*value, child(parent, key));
}

// A non-negative integer up to `max`; integral floats such as 8.5899e10 are accepted.
std::uint64_t as_count(const json& value, const std::string& path, std::uint64_t max) {
  const std::string rule_max = fmt::format("must be at most {}", max);
  if (value.is_number_unsigned()) {
    const auto number = value.get<std::uint64_t>();
    if (number > max) throw InputError(path, describe(value), rule_max);
    return number;
  }
  if (value.is_number_integer()) {
    const auto number = value.get<std::int64_t>();
    if (number < 0) throw InputError(path, describe(value), "must be >= 0");
    if (static_cast<std::uint64_t>(number) > max) throw InputError(path, describe(value), rule_max);
    return static_cast<std::uint64_t>(number);
  }
  if (value.is_number_float()) {
    const double number = value.get<double>();
    if (!std::isfinite(number) || std::trunc(number) != number) {
      throw InputError(path, describe(value), "must be an integer");
    }
    if (number < 0) throw InputError(path, describe(value), "must be >= 0");
    // 2^64 as a double; compare before converting, since converting a larger value is undefined.
    if (number >= 18446744073709551616.0 || static_cast<std::uint64_t>(number) > max) {
      throw InputError(path, describe(value), rule_max);
    }
    return static_cast<std::uint64_t>(number);
  }
  throw InputError(path, describe(value), "must be an integer");
}

std::uint64_t require_bytes(const json& object, const std::string& parent, std::string_view key) {
  return as_count(require_member(object, parent, key), child(parent, key), kMaxBytes);
}

std::optional<std::uint64_t> optional_bytes(const json& object, const std::string& parent, std::string_view key) {
  const json* value = member(object, key);
  if (value == nullptr) return std::nullopt;
  return as_count(*value, child(parent, key), kMaxBytes);
}

// A gauge as float. A double beyond float's range becomes infinity, which validation then rejects.
std::optional<float> optional_gauge(const json& object, const std::string& parent, std::string_view key) {
  const json* value = member(object, key);
  if (value == nullptr) return std::nullopt;
  const std::string path = child(parent, key);
  if (!value->is_number()) throw InputError(path, describe(*value), "must be a number");
  const double number = value->get<double>();
  if (std::isfinite(number) && std::fabs(number) > std::numeric_limits<float>::max()) {
    constexpr float kInfinity = std::numeric_limits<float>::infinity();
    return number > 0 ? kInfinity : -kInfinity;
  }
  return static_cast<float>(number);
}

// Re-raises validate_device_info's errors with the JSON path of the device.
void check_info(const DeviceInfo& info, const std::string& path) {
  DeviceInfo checked = info;
  // The fleet's host was checked on its own; an empty one means "the machine's host", filled in later.
  if (checked.key.host.empty()) checked.key.host = "fleet";
  try {
    validate_device_info(checked);
  } catch (const InputError& error) {
    throw InputError(child(path, error.field()), error.value(), error.rule());
  }
}

void check_host(const std::string& host) {
  if (host.empty()) return;
  DeviceInfo probe;
  probe.key = DeviceKey{host, "probe"};
  validate_device_info(probe);  // names the field "host", which is its JSON path too
}

Sample parse_metrics(const json& metrics, const std::string& path, const DeviceInfo& info) {
  if (!metrics.is_object()) throw InputError(path, describe(metrics), "must be an object");
  Sample sample;
  sample.memory_used_bytes = static_cast<std::int64_t>(require_bytes(metrics, path, "memory_used_bytes"));
  sample.memory_total_bytes =
      static_cast<std::int64_t>(optional_bytes(metrics, path, "memory_total_bytes").value_or(info.memory_total_bytes));
  // The optional quantities, by the seed protocol's names (a fleet file's
  // metrics are a protocol metrics message's).
  for_each_field([&](const auto& row) {
    auto& value = sample.*row.member;
    using Member = std::decay_t<decltype(value)>;
    if constexpr (std::is_same_v<Member, PackedOptional<float>>) {
      value = optional_gauge(metrics, path, row.wire_name);
    } else if constexpr (std::is_same_v<Member, PackedOptional<double>>) {
      value = optional_double(metrics, path, row.wire_name);
    }
  });
  const std::string device = info.key.host.empty() ? info.key.local_id : info.key.str();
  try {
    validate_sample(device, sample);
  } catch (const ValidationError& error) {
    throw with_wire_field_name(error);
  }
  return sample;
}

void log_unknown_keys(const json& entry, const std::string& path) {
  for (const auto& [key, value] : entry.items()) {
    if (std::find(std::begin(kDeviceKeys), std::end(kDeviceKeys), key) == std::end(kDeviceKeys)) {
      spdlog::debug("fleet: ignoring unknown field {}", child(path, key));
    }
  }
}

FleetDevice parse_device(const json& entry, const std::string& path, const std::string& host) {
  if (!entry.is_object()) throw InputError(path, describe(entry), "must be an object");
  FleetDevice device;
  DeviceInfo& info = device.info;
  info.key = DeviceKey{host, as_string(require_member(entry, path, "device_id"), child(path, "device_id"))};
  info.name = optional_string(entry, path, "name").value_or("");
  info.vendor = optional_string(entry, path, "vendor").value_or("");
  if (const auto type = optional_string(entry, path, "device_type")) {
    const auto kind = parse_device_kind(*type);
    if (!kind) {
      throw InputError(child(path, "device_type"), *type,
                       "must be one of cuda, rocm, metal, vulkan, vulkan_android, vulkan_linux, intel_xe, directml, "
                       "cpu, unknown");
    }
    info.kind = *kind;
  }
  info.memory_total_bytes = require_bytes(entry, path, "memory_bytes");
  if (const json* units = member(entry, "compute_units")) {
    info.compute_units = static_cast<std::uint32_t>(
        as_count(*units, child(path, "compute_units"), std::numeric_limits<std::uint32_t>::max()));
  }
  info.memory_bandwidth_gbps = optional_double(entry, path, "memory_bandwidth_gbps");
  info.uuid = optional_string(entry, path, "uuid");
  info.pci_bus_id = optional_string(entry, path, "pci_bus_id");
  info.compute_capability = optional_string(entry, path, "compute_capability");
  info.max_clock_mhz = optional_double(entry, path, "max_clock_mhz");
  info.driver_version = optional_string(entry, path, "driver_version");
  info.power_limit_watts = optional_double(entry, path, "power_limit_watts");
  info.temperature_slowdown_celsius = optional_double(entry, path, "temperature_slowdown_celsius");
  info.temperature_shutdown_celsius = optional_double(entry, path, "temperature_shutdown_celsius");
  info.supports_fp64 = optional_bool(entry, path, "supports_fp64");
  info.supports_tensor_cores = optional_bool(entry, path, "supports_tensor_cores");
  device.available = optional_bool(entry, path, "available").value_or(true);
  device.error_message = optional_string(entry, path, "error_message").value_or("");
  check_info(info, path);

  if (const json* metrics = member(entry, "metrics")) {
    device.metrics = parse_metrics(*metrics, child(path, "metrics"), info);
    device.has_metrics = true;
  }
  log_unknown_keys(entry, path);
  return device;
}

}  // namespace

Fleet parse_fleet(const json& document) {
  if (!document.is_object()) throw InputError("fleet", describe(document), "must be a JSON object");
  Fleet fleet;
  fleet.host = optional_string(document, "", "host").value_or("");
  check_host(fleet.host);

  const json& devices = require_member(document, "", "devices");
  if (!devices.is_array()) throw InputError("devices", describe(devices), "must be an array");
  std::map<std::string, std::size_t, std::less<>> index_of_id;
  fleet.devices.reserve(devices.size());
  for (std::size_t i = 0; i < devices.size(); ++i) {
    const std::string path = fmt::format("devices[{}]", i);
    FleetDevice device = parse_device(devices[i], path, fleet.host);
    const auto [it, inserted] = index_of_id.emplace(device.info.key.local_id, i);
    if (!inserted) {
      throw InputError(child(path, "device_id"), device.info.key.local_id,
                       fmt::format("must be unique (devices[{}] has the same id)", it->second));
    }
    fleet.devices.push_back(std::move(device));
  }
  return fleet;
}

Fleet parse_fleet_text(std::string_view text, const std::string& source) {
  if (text.size() > kMaxFleetFileBytes) {
    throw InputError(source, fmt::format("{} bytes", text.size()),
                     fmt::format("a fleet file must be at most {} bytes", kMaxFleetFileBytes));
  }
  json document;
  try {
    // The depth is checked as the parser opens each array or object, so a
    // file of nothing but '[' is refused at the first one too deep.
    document = json::parse(text, [&source](int depth, json::parse_event_t event, json&) {
      if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
          depth >= static_cast<int>(kMaxFleetDepth)) {
        throw InputError(source, fmt::format("nesting deeper than {}", kMaxFleetDepth),
                         fmt::format("a fleet file may nest at most {} levels", kMaxFleetDepth));
      }
      return true;
    });
  } catch (const json::exception& parse_error) {
    // out_of_range (number overflow) as well as parse_error: both mean the file is not usable JSON.
    throw InputError(source, "not JSON", parse_error.what());
  }
  return parse_fleet(document);
}

Fleet load_fleet(const std::filesystem::path& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) throw InputError(path.string(), "a directory", "must be a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const std::string reason = errno != 0 ? std::error_code(errno, std::generic_category()).message() : "unknown error";
    throw InputError(path.string(), "unreadable", fmt::format("cannot open fleet file: {}", reason));
  }
  // One byte past the limit is enough to know the file is too large.
  std::string text(kMaxFleetFileBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) throw InputError(path.string(), "unreadable", "cannot read fleet file");
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > kMaxFleetFileBytes) {
    throw InputError(path.string(), fmt::format("more than {} bytes", kMaxFleetFileBytes),
                     fmt::format("a fleet file must be at most {} bytes", kMaxFleetFileBytes));
  }
  return parse_fleet_text(text, path.string());
}

}  // namespace gpucluster
