#include "gpucluster/model/fields.hpp"

#include <fmt/format.h>

namespace gpucluster {

std::string format_field(const Sample& sample, Quantity quantity) {
  std::string text = "unavailable";
  for_each_field([&](const auto& row) {
    if (row.quantity != quantity) return;
    const auto& member = sample.*row.member;
    if constexpr (std::is_integral_v<std::decay_t<decltype(member)>>) {
      text = fmt::format("{}", member);
    } else if (member) {
      text = fmt::format("{}", *member);  // float or double: shortest round-trip
    }
  });
  return text;
}

ValidationError with_wire_field_name(const ValidationError& error) {
  return ValidationError(error.device(), std::string(wire_field_name(error.field())), error.value(), error.rule(),
                         error.reason());
}

}  // namespace gpucluster
