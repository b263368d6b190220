#include "gpucluster/model/time.hpp"

#include <fmt/format.h>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {

Timestamp checked_timestamp_from_seconds(double seconds_since_epoch, std::string_view field) {
  if (!timestamp_seconds_in_range(seconds_since_epoch)) {
    throw InputError(std::string(field), fmt::format("{}", seconds_since_epoch), std::string(kTimestampSecondsRule));
  }
  return timestamp_from_seconds(seconds_since_epoch);
}

}  // namespace gpucluster
