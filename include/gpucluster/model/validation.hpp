#pragma once
// Sample validation: every rule a stored sample must satisfy, from the field
// table's ranges (model/fields.hpp) plus memory used <= total. Pure functions.

#include <chrono>
#include <optional>
#include <string>

#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/fields.hpp"
#include "gpucluster/model/sample.hpp"

namespace gpucluster {

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
