#include "gpucluster/model/validation.hpp"

#include <cmath>

#include <fmt/format.h>

namespace gpucluster {

namespace {

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

namespace {

// Why `value` of `row` is refused: built only for a refused value, so that the
// per-row check in check_sample stays a few inlined comparisons.
template <class Row>
[[gnu::cold, gnu::noinline]] ValidationFailure field_failure(const Row& row, double value,
                                                             const ValidationLimits& limits) {
  const char* field = row.name.data();  // the table's names are literals
  if (!std::isfinite(value))
    return ValidationFailure{field, value, "must be a finite number", RejectReason::not_finite};
  const double min = row.min_of(limits), max = row.max_of(limits);
  std::string rule;
  if (row.required) {  // memory: the seed's messages name the lower bound only
    rule = row.min_exclusive ? fmt::format("must be > {}", min) : fmt::format("must be >= {}", min);
    if (value > max) rule = fmt::format("must be <= {}", max);
  } else {
    // "[0, 100]" for a percentage, "[0, 100000] W" for the rest.
    rule = row.unit == "%" ? fmt::format("must be within [{}, {}]", min, max)
                           : fmt::format("must be within [{}, {}] {}", min, max, row.unit);
  }
  return ValidationFailure{field, value, std::move(rule), RejectReason::out_of_range};
}

}  // namespace

std::optional<ValidationFailure> check_sample(const Sample& sample, const ValidationLimits& limits) {
  std::optional<ValidationFailure> failure;
  // Every row's check inlined (the table is constexpr, so bounds without a
  // limit are constants); the first refused row in table order is reported.
  for_each_field([&](const auto& row) __attribute__((always_inline)) {
    const auto& member = sample.*row.member;
    double value = 0;
    if constexpr (std::is_integral_v<std::decay_t<decltype(member)>>) {
      value = static_cast<double>(member);
    } else {
      if (!member) return;
      value = static_cast<double>(*member);
    }
    const double min = row.min_of(limits), max = row.max_of(limits);
    const bool within =
        std::isfinite(value) && (row.min_exclusive ? value > min && value <= max : value >= min && value <= max);
    if (!within && !failure) failure = field_failure(row, value, limits);
  });
  if (failure) return failure;
  if (sample.memory_used_bytes > sample.memory_total_bytes) {
    return ValidationFailure{"memory_used_bytes", static_cast<double>(sample.memory_used_bytes),
                             "must not exceed memory_total_bytes", RejectReason::used_exceeds_total};
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
