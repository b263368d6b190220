#pragma once
// One telemetry reading of one device. Kept small (≤ 64 bytes) because the
// history stores many of them; gauges are float, which holds their precision.

#include <chrono>
#include <cstdint>
#include <optional>

namespace gpucluster {

using Timestamp = std::chrono::sys_time<std::chrono::nanoseconds>;

inline Timestamp timestamp_from_seconds(double seconds_since_epoch) {
  return Timestamp{std::chrono::nanoseconds{static_cast<std::int64_t>(seconds_since_epoch * 1e9)}};
}
inline double to_seconds(Timestamp t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}
inline Timestamp now_timestamp() {
  return std::chrono::time_point_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now());
}

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
};

// Fields that may be unavailable, for per-field availability reporting.
enum class SampleField : std::uint8_t { utilization, power, temperature, clock };

}  // namespace gpucluster
