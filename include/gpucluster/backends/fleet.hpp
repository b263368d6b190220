#pragma once
// Fleet files: a JSON description of a host's devices and their current
// metrics (field names follow the seed's protocol), for demos and tests.
//   {"host": "lab-1", "devices": [{"device_id": "cuda:0", "name": ..., "vendor": ...,
//     "device_type": "cuda", "memory_bytes": N, "compute_units": N, "memory_bandwidth_gbps": X,
//     "metrics": {"memory_used_bytes": N, "memory_total_bytes": N (default memory_bytes),
//                 "compute_utilization_percent": X, "power_watts": X,
//                 "temperature_celsius": X, "clock_rate_mhz": X}}]}
// Required: devices, and per device device_id and memory_bytes (and memory_used_bytes
// when "metrics" is given). "host" is optional: empty means the machine's own host.
// A metric left out (or null) is unavailable. Optional device fields: name, vendor,
// device_type (default unknown), uuid, pci_bus_id, compute_capability, max_clock_mhz,
// driver_version, power_limit_watts, temperature_slowdown_celsius,
// temperature_shutdown_celsius, supports_fp64, supports_tensor_cores, available
// (default true), error_message. Byte counts are integers >= 0; device ids are unique.
// A device without "metrics" has no sample (Backend::sample throws NoReading):
// its use is unknown, never an idle, empty device.

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "gpucluster/model/device.hpp"
#include "gpucluster/model/sample.hpp"

namespace gpucluster {

struct FleetDevice {
  DeviceInfo info;
  Sample metrics;  // timestamp is filled in when sampled
  bool has_metrics = false;
  bool available = true;
  std::string error_message;
};

struct Fleet {
  std::string host;
  std::vector<FleetDevice> devices;
};

// Throws InputError naming the JSON path (e.g. "devices[1].metrics.power_watts"),
// or ValidationError for metrics that break a sample rule.
Fleet parse_fleet(const nlohmann::json& document);

// Limits of a fleet file, checked before and while it is parsed (a fleet of
// 10,000 devices is about 5 MiB; a device object nests 3 levels deep).
inline constexpr std::size_t kMaxFleetFileBytes = 8 * 1024 * 1024;
inline constexpr std::size_t kMaxFleetDepth = 16;

// Parses fleet JSON text within the limits above; `source` names it in errors
// (a path). Throws InputError.
Fleet parse_fleet_text(std::string_view text, const std::string& source);
Fleet load_fleet(const std::filesystem::path& path);

}  // namespace gpucluster
