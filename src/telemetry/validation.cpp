#include "gpucluster/telemetry/validation.hpp"

#include <cmath>

#include <fmt/format.h>

namespace gpucluster {

namespace {

std::optional<ValidationFailure> check_gauge(const std::optional<float>& gauge, const char* field, double min,
                                             double max, const char* range_rule) noexcept {
  if (!gauge) return std::nullopt;
  const double value = *gauge;
  if (!std::isfinite(value))
    return ValidationFailure{field, value, "must be a finite number", RejectReason::not_finite};
  if (value < min || value > max) return ValidationFailure{field, value, range_rule, RejectReason::out_of_range};
  return std::nullopt;
}

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  return fmt::format("{}", value);
}

}  // namespace

std::optional<ValidationFailure> check_sample(const Sample& sample, const ValidationLimits& limits) noexcept {
  if (sample.memory_used_bytes < 0) {
    return ValidationFailure{"memory_used_bytes", static_cast<double>(sample.memory_used_bytes), "must be >= 0",
                             RejectReason::out_of_range};
  }
  if (sample.memory_total_bytes <= 0) {
    return ValidationFailure{"memory_total_bytes", static_cast<double>(sample.memory_total_bytes), "must be > 0",
                             RejectReason::out_of_range};
  }
  if (sample.memory_used_bytes > sample.memory_total_bytes) {
    return ValidationFailure{"memory_used_bytes", static_cast<double>(sample.memory_used_bytes),
                             "must not exceed memory_total_bytes", RejectReason::used_exceeds_total};
  }
  if (auto failure = check_gauge(sample.utilization_percent, "compute_utilization_percent", 0.0, 100.0,
                                 "must be within [0, 100]")) {
    return failure;
  }
  if (auto failure = check_gauge(sample.temperature_celsius, "temperature_celsius", limits.min_temperature_celsius,
                                 limits.max_temperature_celsius, "must be within [-273.15, 250] degrees Celsius")) {
    return failure;
  }
  if (auto failure =
          check_gauge(sample.power_watts, "power_watts", 0.0, limits.max_power_watts, "must be within [0, 100000] W")) {
    return failure;
  }
  if (auto failure = check_gauge(sample.clock_mhz, "clock_rate_mhz", 0.0, limits.max_clock_mhz,
                                 "must be within [0, 100000] MHz")) {
    return failure;
  }
  return std::nullopt;
}

ValidationError make_validation_error(const std::string& device, const ValidationFailure& failure) {
  return ValidationError(device, failure.field, format_value(failure.value), failure.rule, failure.reason);
}

void validate_sample(const std::string& device, const Sample& sample, const ValidationLimits& limits) {
  if (auto failure = check_sample(sample, limits)) throw make_validation_error(device, *failure);
}

}  // namespace gpucluster
