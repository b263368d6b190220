#include "gpucluster/telemetry/validation.hpp"

#include <cmath>

#include <fmt/format.h>

namespace gpucluster {

namespace {

std::optional<ValidationFailure> check_gauge(const std::optional<float>& gauge, const char* field, double min,
                                             double max, const char* unit) {
  if (!gauge) return std::nullopt;
  const double value = *gauge;
  if (!std::isfinite(value))
    return ValidationFailure{field, value, "must be a finite number", RejectReason::not_finite};
  if (value < min || value > max) {
    return ValidationFailure{field, value, fmt::format("must be within [{}, {}]{}", min, max, unit),
                             RejectReason::out_of_range};
  }
  return std::nullopt;
}

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  return fmt::format("{}", value);
}

}  // namespace

void validate_limits(const ValidationLimits& limits) {
  const auto require = [](double min, double max, const char* min_field, const char* max_field) {
    if (!std::isfinite(min)) throw InputError(min_field, format_value(min), "must be a finite number");
    if (!std::isfinite(max)) throw InputError(max_field, format_value(max), "must be a finite number");
    if (min > max)
      throw InputError(min_field, format_value(min), fmt::format("must not exceed {} ({})", max_field, max));
  };
  require(limits.min_temperature_celsius, limits.max_temperature_celsius, "validation.min_temperature_celsius",
          "validation.max_temperature_celsius");
  require(0.0, limits.max_power_watts, "validation.max_power_watts", "validation.max_power_watts");
  require(0.0, limits.max_clock_mhz, "validation.max_clock_mhz", "validation.max_clock_mhz");
  if (limits.max_future_skew.count() <= 0) {
    throw InputError("validation.max_future_skew", fmt::format("{}ns", limits.max_future_skew.count()),
                     "must be positive");
  }
}

std::optional<ValidationFailure> check_sample(const Sample& sample, const ValidationLimits& limits) {
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
  if (auto failure = check_gauge(sample.utilization_percent, "compute_utilization_percent", 0.0, 100.0, "")) {
    return failure;
  }
  if (auto failure = check_gauge(sample.temperature_celsius, "temperature_celsius", limits.min_temperature_celsius,
                                 limits.max_temperature_celsius, " degrees Celsius")) {
    return failure;
  }
  if (auto failure = check_gauge(sample.power_watts, "power_watts", 0.0, limits.max_power_watts, " W")) {
    return failure;
  }
  if (auto failure = check_gauge(sample.clock_mhz, "clock_rate_mhz", 0.0, limits.max_clock_mhz, " MHz")) {
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
