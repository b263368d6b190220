#pragma once
// Sample validation: every rule a stored sample must satisfy (seed fix #3 and
// the Python design's NaN/ordering bugs). Pure functions; no state.

#include <chrono>
#include <optional>
#include <string>

#include "gpucluster/core/errors.hpp"
#include "gpucluster/core/sample.hpp"

namespace gpucluster {

struct ValidationLimits {
  double min_temperature_celsius = -273.15;  // absolute zero
  double max_temperature_celsius = 250.0;    // no silicon reports more and lives
  double max_power_watts = 100'000.0;        // far above any single accelerator
  double max_clock_mhz = 100'000.0;
  // A sample stamped further ahead of the receiver's clock than this is
  // rejected (future_timestamp): stored, it would make every true sample of
  // its device "out of order" until the receiver's clock caught up.
  std::chrono::nanoseconds max_future_skew = std::chrono::seconds{60};
};

// Throws InputError unless every limit is finite and each range non-empty.
void validate_limits(const ValidationLimits& limits);

// A failed rule, without the cost of an exception on the hot path. The rule
// names the configured limits (it allocates only when a sample fails).
struct ValidationFailure {
  const char* field;
  double value;
  std::string rule;
  RejectReason reason;
};

// Checks every field; does not check ordering or registration (the store does).
std::optional<ValidationFailure> check_sample(const Sample& sample, const ValidationLimits& limits = {});

// Builds the typed error for a failure on a named device.
ValidationError make_validation_error(const std::string& device, const ValidationFailure& failure);

// Throws ValidationError if check_sample fails.
void validate_sample(const std::string& device, const Sample& sample, const ValidationLimits& limits = {});

}  // namespace gpucluster
