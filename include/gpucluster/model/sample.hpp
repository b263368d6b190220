#pragma once
// One telemetry reading of one device. Kept small (56 bytes) because the
// history stores many of them; gauges are float, which holds their precision;
// the energy counter is a double (whole millijoules exact up to 9e12 J).
// Every quantity is a row of the field table (model/fields.hpp).

#include <cstdint>
#include <optional>

#include "gpucluster/model/packed_optional.hpp"
#include "gpucluster/model/time.hpp"

namespace gpucluster {

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
