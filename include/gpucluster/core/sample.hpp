#pragma once
// One telemetry reading of one device. Kept small (≤ 64 bytes) because the
// history stores many of them; gauges are float, which holds their precision.

#include <cstdint>
#include <optional>

#include "gpucluster/core/time.hpp"

namespace gpucluster {

// Optional gauges are unavailable (nullopt) when the device cannot report
// them; unavailable is never the same as zero.
struct Sample {
  Timestamp timestamp{};
  std::int64_t memory_used_bytes = 0;
  std::int64_t memory_total_bytes = 0;
  std::optional<float> utilization_percent;
  std::optional<float> power_watts;
  std::optional<float> temperature_celsius;
  std::optional<float> clock_mhz;

  std::int64_t memory_free_bytes() const noexcept { return memory_total_bytes - memory_used_bytes; }
  // Every field equal: a retransmission of the same reading.
  bool operator==(const Sample&) const = default;
};

// Fields that may be unavailable, for per-field availability reporting.
enum class SampleField : std::uint8_t { utilization, power, temperature, clock };

}  // namespace gpucluster
