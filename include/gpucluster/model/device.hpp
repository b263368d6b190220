#pragma once
// Static description of a device and its cluster-wide identity.

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gpucluster {

// What kind of accelerator a device is; kept as reported, never assumed CUDA.
enum class DeviceKind : std::uint8_t { cuda, rocm, metal, vulkan, intel_xe, directml, cpu, unknown };

std::string_view to_string(DeviceKind kind) noexcept;
// Accepts our names and the seed protocol's (vulkan_android, vulkan_linux → vulkan).
std::optional<DeviceKind> parse_device_kind(std::string_view text) noexcept;

// Cluster-wide identity: host + local id, so cuda:0 on two hosts never collides.
struct DeviceKey {
  std::string host;
  std::string local_id;

  std::string str() const { return host + "/" + local_id; }
  auto operator<=>(const DeviceKey&) const = default;
  bool operator==(const DeviceKey&) const = default;
};

// "host/local" or, with no slash, a local id on default_host.
DeviceKey parse_device_key(std::string_view text, std::string_view default_host);

struct DeviceKeyHash {
  std::size_t operator()(const DeviceKey& key) const noexcept;
};

// Static information; optional fields are unknown, never zero.
struct DeviceInfo {
  DeviceKey key;
  std::string name;
  std::string vendor;
  DeviceKind kind = DeviceKind::unknown;
  std::string backend;
  std::optional<std::string> uuid;
  std::optional<std::string> pci_bus_id;
  std::uint64_t memory_total_bytes = 0;
  std::optional<std::uint32_t> compute_units;
  std::optional<std::string> compute_capability;
  std::optional<double> max_clock_mhz;
  std::optional<double> memory_bandwidth_gbps;
  std::optional<std::string> driver_version;
  std::optional<double> power_limit_watts;
  std::optional<double> temperature_slowdown_celsius;
  std::optional<double> temperature_shutdown_celsius;
  std::optional<bool> supports_fp64;
  std::optional<bool> supports_tensor_cores;

  bool operator==(const DeviceInfo&) const = default;
};

// A host name or local id: 1–256 characters, no '/', no control characters, not "." or "..".
// Throws InputError.
void validate_identifier(const std::string& id, const char* field);

// Checks the static fields (non-empty ids, finite optional numbers); throws InputError.
void validate_device_info(const DeviceInfo& info);

}  // namespace gpucluster
