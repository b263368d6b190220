#include "gpucluster/backends/backend.hpp"

#include <unistd.h>

#include <array>
#include <climits>
#include <string>

namespace gpucluster {

bool plausible_reading(Quantity quantity, double value) noexcept {
  static constexpr ValidationLimits kDefaults{};
  const auto [min, max] = field_range(quantity, kDefaults);
  return value >= min && value <= max;
}

bool plausible_or_count(Quantity quantity, double value, ImplausibleReadings& dropped) noexcept {
  if (plausible_reading(quantity, value)) return true;
  dropped.count(quantity);
  return false;
}

std::string to_string(const FieldAvailability& fields) {
  std::string names;
  for_each_field([&](const auto& row) {
    if (!fields.has(row.quantity)) return;
    if (!names.empty()) names += ", ";
    names += row.name;
  });
  return names.empty() ? std::string("none") : names;
}

std::string local_host_name() {
  // HOST_NAME_MAX is 64 on Linux; leave room for the terminator and for systems with longer names.
  std::array<char, 256> buffer{};
  if (gethostname(buffer.data(), buffer.size() - 1) != 0) return "localhost";
  buffer.back() = '\0';  // POSIX does not promise termination when the name is truncated
  std::string name(buffer.data());
  return name.empty() ? "localhost" : name;
}

}  // namespace gpucluster
