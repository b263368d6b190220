#pragma once
// One telemetry reading of one device. Kept small (56 bytes) because the
// history stores many of them; gauges are float, which holds their precision;
// the energy counter is a double (whole millijoules exact up to 9e12 J).
// Every quantity is a row of the field table (core/fields.hpp).

#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>

#include "gpucluster/core/packed_optional.hpp"

namespace gpucluster {

using Timestamp = std::chrono::sys_time<std::chrono::nanoseconds>;

// Seconds as Python's time.time() gives them. Whole seconds and the fraction
// are converted apart so 1717171721.25 is exactly …721 s + 250 ms (a single
// multiplication by 1e9 would lose the low digits). Callers validate the range
// (finite, within ±9.2e9 s); values outside are clamped and NaN is 0, never
// undefined behaviour.
inline Timestamp timestamp_from_seconds(double seconds_since_epoch) {
  constexpr double kLimit = 9.2e9;
  const double clamped =
      seconds_since_epoch > kLimit ? kLimit : (seconds_since_epoch < -kLimit ? -kLimit : seconds_since_epoch);
  if (std::isnan(clamped)) return Timestamp{};
  const double whole = std::floor(clamped);
  const auto nanoseconds = static_cast<std::int64_t>(whole) * 1'000'000'000 +
                           static_cast<std::int64_t>(std::llround((clamped - whole) * 1e9));
  return Timestamp{std::chrono::nanoseconds{nanoseconds}};
}
inline double to_seconds(Timestamp t) {
  const std::int64_t nanoseconds = t.time_since_epoch().count();
  std::int64_t whole = nanoseconds / 1'000'000'000;
  std::int64_t fraction = nanoseconds % 1'000'000'000;
  if (fraction < 0) {
    fraction += 1'000'000'000;
    --whole;
  }
  return static_cast<double>(whole) + static_cast<double>(fraction) / 1e9;
}
inline Timestamp now_timestamp() {
  return std::chrono::time_point_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now());
}

// Optional quantities are unavailable (nullopt) when the device cannot report
// them; unavailable is never the same as zero.
struct Sample {
  Timestamp timestamp{};
  std::int64_t memory_used_bytes = 0;
  std::int64_t memory_total_bytes = 0;
  PackedOptional<float> utilization_percent;
  PackedOptional<float> power_watts;
  PackedOptional<float> temperature_celsius;
  PackedOptional<float> clock_mhz;
  PackedOptional<float> fan_speed_percent;
  PackedOptional<double> energy_joules;  // a counter

  std::int64_t memory_free_bytes() const noexcept { return memory_total_bytes - memory_used_bytes; }
  // Every field equal: a retransmission of the same reading.
  bool operator==(const Sample&) const = default;
};
static_assert(sizeof(Sample) <= 56, "the history's memory per sample (docs/benchmarks.md)");

}  // namespace gpucluster
