#pragma once
// Device scoring and selection (the seed's formula, from live telemetry only).
//   score = (w_mem * free/total + w_compute * (1 - util/100)) * thermal_penalty
//   thermal_penalty = 1 up to the threshold, then max(min_penalty, 1 - (T - threshold)/span)
// A gauge that is unavailable is left out and the remaining weights are
// renormalised: unavailable is never read as 0 % busy or 0 °C.

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "gpucluster/model/device.hpp"
#include "gpucluster/telemetry/store.hpp"

namespace gpucluster {

struct ScoringConfig {
  double memory_weight = 0.6;
  double compute_weight = 0.4;
  double thermal_threshold_celsius = 80.0;  // used when the device has no slowdown temperature
  double thermal_span_celsius = 40.0;
  double min_thermal_penalty = 0.1;
  std::chrono::nanoseconds staleness = std::chrono::seconds{10};  // older latest sample → stale
};

// Throws InputError if weights are negative/non-finite/all zero, span ≤ 0, etc.
void validate_scoring_config(const ScoringConfig& config);

struct ScoreBreakdown {
  double score = 0;                          // clamped to [0, 1]
  double memory_free_ratio = 0;              // free / total
  std::optional<double> compute_idle_ratio;  // 1 - util/100; nullopt when utilization is unavailable
  double thermal_penalty = 1;                // 1 when temperature is unavailable or below threshold
  bool temperature_known = false;
  double thermal_threshold_celsius = 0;  // the threshold that applied
};

// Scores one sample of one device.
ScoreBreakdown score_sample(const DeviceInfo& info, const Sample& sample, const ScoringConfig& config) noexcept;

enum class Eligibility : std::uint8_t { eligible, unavailable, no_sample, stale, insufficient_memory, zero_score };
const char* to_string(Eligibility eligibility) noexcept;

// Whether a ranked device may take a share of a plan: what selection could
// take, whatever its score (a busy device still takes its share). Plans ask
// scoring, as selection does, so eligibility is decided in one place.
bool can_take_plan_work(Eligibility eligibility) noexcept;

struct RankedDevice {
  DeviceKey key;
  Eligibility eligibility = Eligibility::no_sample;
  std::string reason;                       // why not eligible; empty when eligible
  std::optional<ScoreBreakdown> breakdown;  // nullopt without a sample
  std::int64_t memory_free_bytes = 0;
};

// Every device with its score; eligible ones first by score (desc), then by key.
std::vector<RankedDevice> rank_devices(std::span<const DeviceState> devices, const ScoringConfig& config, Timestamp now,
                                       std::uint64_t min_free_memory_bytes = 0);

struct Selection {
  std::optional<DeviceKey> device;  // nullopt when none qualifies
  double score = 0;
  std::string reason;
};

// The best eligible device (ties by key), or the reason none qualifies. O(devices).
Selection select_device(std::span<const DeviceState> devices, const ScoringConfig& config, Timestamp now,
                        std::uint64_t min_free_memory_bytes = 0);

// The config folded into shares and reciprocals once per call, so scoring a
// device costs one division (free/total) on the selection hot path.
struct ScoreFactors {
  double memory_share_with_compute;   // w_mem / (w_mem + w_compute)
  double compute_share_with_compute;  // w_compute / (w_mem + w_compute)
  double memory_share_alone;          // 1 when w_mem > 0: utilization unavailable, memory decides
  double inverse_thermal_span;
  double min_thermal_penalty;
  double default_threshold_celsius;

  explicit ScoreFactors(const ScoringConfig& config) noexcept
      : memory_share_with_compute(config.memory_weight / (config.memory_weight + config.compute_weight)),
        compute_share_with_compute(config.compute_weight / (config.memory_weight + config.compute_weight)),
        memory_share_alone(config.memory_weight > 0 ? 1.0 : 0.0),
        inverse_thermal_span(1.0 / config.thermal_span_celsius),
        min_thermal_penalty(config.min_thermal_penalty),
        default_threshold_celsius(config.thermal_threshold_celsius) {}
};

// select_device one device at a time, for callers that visit devices in place
// (TelemetryStore::visit_states) instead of copying them: the same rules, the
// same answer.
class DeviceSelector {
 public:
  DeviceSelector(const ScoringConfig& config, Timestamp now, std::uint64_t min_free_memory_bytes = 0);
  void add(const DeviceStateRef& device);
  Selection result() const;

 private:
  ScoreFactors factors_;
  std::chrono::nanoseconds staleness_;
  Timestamp now_;
  std::uint64_t min_free_memory_bytes_;
  std::optional<DeviceKey> best_;
  double best_score_ = 0;
  std::size_t devices_ = 0;
  std::array<std::size_t, 6> rejected_{};  // by Eligibility
};

}  // namespace gpucluster
