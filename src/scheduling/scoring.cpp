#include "gpucluster/scheduling/scoring.hpp"

#include <algorithm>
#include <array>
#include <cmath>

#include <fmt/format.h>

#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/units.hpp"

namespace gpucluster {

void validate_scoring_config(const ScoringConfig& config) {
  const auto require = [](double value, const char* field, bool ok, const char* rule) {
    if (!std::isfinite(value) || !ok) throw InputError(field, fmt::format("{}", value), rule);
  };
  require(config.memory_weight, "scoring.memory_weight", config.memory_weight >= 0, "must be finite and >= 0");
  require(config.compute_weight, "scoring.compute_weight", config.compute_weight >= 0, "must be finite and >= 0");
  require(config.memory_weight + config.compute_weight, "scoring.memory_weight + scoring.compute_weight",
          config.memory_weight + config.compute_weight > 0, "must be > 0");
  require(config.thermal_threshold_celsius, "scoring.thermal_threshold_celsius", true, "must be finite");
  require(config.thermal_span_celsius, "scoring.thermal_span_celsius", config.thermal_span_celsius > 0,
          "must be finite and > 0");
  require(config.min_thermal_penalty, "scoring.min_thermal_penalty",
          config.min_thermal_penalty >= 0 && config.min_thermal_penalty <= 1, "must be within [0, 1]");
  if (config.staleness.count() <= 0) {
    throw InputError("scoring.staleness", fmt::format("{}ns", config.staleness.count()), "must be positive");
  }
}

namespace {

ScoreBreakdown score_with(const DeviceInfo& info, const Sample& sample, const ScoreFactors& f) noexcept {
  ScoreBreakdown b;
  b.memory_free_ratio = sample.memory_total_bytes > 0 ? static_cast<double>(sample.memory_free_bytes()) /
                                                            static_cast<double>(sample.memory_total_bytes)
                                                      : 0.0;
  double base = f.memory_share_alone * b.memory_free_ratio;
  if (sample.utilization_percent) {
    b.compute_idle_ratio = 1.0 - static_cast<double>(*sample.utilization_percent) * 0.01;
    base = f.memory_share_with_compute * b.memory_free_ratio + f.compute_share_with_compute * *b.compute_idle_ratio;
  }
  b.thermal_threshold_celsius = info.temperature_slowdown_celsius.value_or(f.default_threshold_celsius);
  if (sample.temperature_celsius) {
    b.temperature_known = true;
    const double over = static_cast<double>(*sample.temperature_celsius) - b.thermal_threshold_celsius;
    if (over > 0) b.thermal_penalty = std::max(f.min_thermal_penalty, 1.0 - over * f.inverse_thermal_span);
  }
  b.score = std::clamp(base * b.thermal_penalty, 0.0, 1.0);
  return b;
}

}  // namespace

ScoreBreakdown score_sample(const DeviceInfo& info, const Sample& sample, const ScoringConfig& config) noexcept {
  return score_with(info, sample, ScoreFactors(config));
}

const char* to_string(Eligibility eligibility) noexcept {
  switch (eligibility) {
    case Eligibility::eligible: return "eligible";
    case Eligibility::unavailable: return "unavailable";
    case Eligibility::no_sample: return "no_sample";
    case Eligibility::stale: return "stale";
    case Eligibility::insufficient_memory: return "insufficient_memory";
    case Eligibility::zero_score: return "zero_score";
  }
  return "unknown";
}

bool can_take_plan_work(Eligibility eligibility) noexcept {
  return eligibility == Eligibility::eligible || eligibility == Eligibility::zero_score;
}

namespace {

// The one place that decides whether a device may be selected. Cheap filters
// first; the score is computed only for devices that pass them.
Eligibility filter(bool available, const Sample* latest, std::chrono::nanoseconds staleness, Timestamp now,
                   std::uint64_t min_free_memory_bytes) noexcept {
  if (!available) return Eligibility::unavailable;
  if (latest == nullptr) return Eligibility::no_sample;
  if (now - latest->timestamp > staleness) return Eligibility::stale;
  if (static_cast<std::uint64_t>(latest->memory_free_bytes()) < min_free_memory_bytes) {
    return Eligibility::insufficient_memory;
  }
  return Eligibility::eligible;
}

Eligibility filter(const DeviceState& state, const ScoringConfig& config, Timestamp now,
                   std::uint64_t min_free_memory_bytes) noexcept {
  return filter(state.available, state.latest ? &*state.latest : nullptr, config.staleness, now, min_free_memory_bytes);
}

std::string explain(const DeviceState& state, Eligibility eligibility, Timestamp now, std::uint64_t min_free) {
  switch (eligibility) {
    case Eligibility::eligible: return {};
    case Eligibility::unavailable:
      return state.unavailable_reason.empty() ? "marked unavailable" : "unavailable: " + state.unavailable_reason;
    case Eligibility::no_sample: return "no telemetry sample yet";
    case Eligibility::stale:
      return fmt::format("stale: newest sample is {:.1f} s old",
                         std::chrono::duration<double>(now - state.latest->timestamp).count());
    case Eligibility::insufficient_memory:
      return fmt::format("{} free, {} required",
                         format_bytes(static_cast<std::uint64_t>(state.latest->memory_free_bytes())),
                         format_bytes(min_free));
    case Eligibility::zero_score: return "score is 0";
  }
  return {};
}

bool better(double score, const DeviceKey& key, double best_score, const DeviceKey& best_key) {
  if (score != best_score) return score > best_score;
  return key < best_key;
}

}  // namespace

std::vector<RankedDevice> rank_devices(std::span<const DeviceState> devices, const ScoringConfig& config, Timestamp now,
                                       std::uint64_t min_free_memory_bytes) {
  std::vector<RankedDevice> ranked;
  ranked.reserve(devices.size());
  for (const DeviceState& state : devices) {
    RankedDevice r;
    r.key = state.info->key;
    r.eligibility = filter(state, config, now, min_free_memory_bytes);
    if (state.latest) {
      r.breakdown = score_sample(*state.info, *state.latest, config);
      r.memory_free_bytes = state.latest->memory_free_bytes();
      if (r.eligibility == Eligibility::eligible && r.breakdown->score <= 0) r.eligibility = Eligibility::zero_score;
    }
    r.reason = explain(state, r.eligibility, now, min_free_memory_bytes);
    ranked.push_back(std::move(r));
  }
  std::stable_sort(ranked.begin(), ranked.end(), [](const RankedDevice& x, const RankedDevice& y) {
    const bool x_ok = x.eligibility == Eligibility::eligible, y_ok = y.eligibility == Eligibility::eligible;
    if (x_ok != y_ok) return x_ok;
    const double xs = x.breakdown ? x.breakdown->score : -1.0, ys = y.breakdown ? y.breakdown->score : -1.0;
    return better(xs, x.key, ys, y.key);
  });
  return ranked;
}

Selection select_device(std::span<const DeviceState> devices, const ScoringConfig& config, Timestamp now,
                        std::uint64_t min_free_memory_bytes) {
  DeviceSelector selector(config, now, min_free_memory_bytes);
  for (const DeviceState& state : devices) {
    selector.add(DeviceStateRef{*state.info, state.available, state.unavailable_reason,
                                state.latest ? &*state.latest : nullptr});
  }
  return selector.result();
}

DeviceSelector::DeviceSelector(const ScoringConfig& config, Timestamp now, std::uint64_t min_free_memory_bytes)
    : factors_(config), staleness_(config.staleness), now_(now), min_free_memory_bytes_(min_free_memory_bytes) {}

void DeviceSelector::add(const DeviceStateRef& device) {
  ++devices_;
  const Eligibility eligibility = filter(device.available, device.latest, staleness_, now_, min_free_memory_bytes_);
  if (eligibility != Eligibility::eligible) {
    ++rejected_[static_cast<std::size_t>(eligibility)];
    return;
  }
  const double score = score_with(device.info, *device.latest, factors_).score;
  if (score <= 0) {
    ++rejected_[static_cast<std::size_t>(Eligibility::zero_score)];
    return;
  }
  if (!best_ || better(score, device.info.key, best_score_, *best_)) {
    best_ = device.info.key;  // a copy: the device is only borrowed for this call
    best_score_ = score;
  }
}

Selection DeviceSelector::result() const {
  Selection selection;
  if (best_) {
    selection.device = *best_;
    selection.score = best_score_;
    // Integers only: the score is in selection.score, and float formatting would dominate small selections.
    const std::size_t eligible = devices_ - (rejected_[1] + rejected_[2] + rejected_[3] + rejected_[4] + rejected_[5]);
    selection.reason = fmt::format("highest score among {} eligible of {} devices", eligible, devices_);
    return selection;
  }
  if (devices_ == 0) {
    selection.reason = "no devices registered";
    return selection;
  }
  std::string parts;
  for (std::size_t i = 1; i < rejected_.size(); ++i) {
    if (rejected_[i] == 0) continue;
    if (!parts.empty()) parts += ", ";
    parts += fmt::format("{} {}", rejected_[i], to_string(static_cast<Eligibility>(i)));
  }
  selection.reason = fmt::format("no device qualifies among {}: {}", devices_, parts);
  if (rejected_[static_cast<std::size_t>(Eligibility::insufficient_memory)] > 0) {
    selection.reason += fmt::format(" (need {} free)", format_bytes(min_free_memory_bytes_));
  }
  return selection;
}

}  // namespace gpucluster
