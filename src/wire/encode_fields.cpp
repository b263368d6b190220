#include "wire/encode_fields.hpp"

#include <type_traits>

#include "gpucluster/model/fields.hpp"
#include "model/text.hpp"

namespace gpucluster::agent::wire {

using nlohmann::json;

json gauge_json(PackedOptional<float> gauge) {
  return gauge ? json(text::shortest_decimal(*gauge)) : json(nullptr);
}

void put_sample_fields(json& out, const Sample& sample, FieldNames names) {
  out["timestamp"] = to_seconds(sample.timestamp);
  out["memory_used_bytes"] = sample.memory_used_bytes;
  out["memory_total_bytes"] = sample.memory_total_bytes;
  // Every optional quantity of the field table.
  for_each_field([&](const auto& row) {
    const auto& member = sample.*row.member;
    using Member = std::decay_t<decltype(member)>;
    if constexpr (!std::is_integral_v<Member>) {
      if (!member && (names == FieldNames::canonical || !row.in_seed_protocol)) return;
      json& slot = out[std::string(field_key(row, names))];
      if constexpr (std::is_same_v<Member, PackedOptional<float>>) {
        slot = gauge_json(member);
      } else {
        slot = member ? json(*member) : json(nullptr);
      }
    }
  });
}

}  // namespace gpucluster::agent::wire
