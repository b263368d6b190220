#pragma once
// The wire encoders' shared writers (internal), the inverse of
// decode_fields.hpp: timestamps as model/time.hpp's to_seconds (the double
// that reads back to the same nanosecond), gauges as their shortest decimal
// (the double that narrows back to the same float), and a sample's fields
// through the field table. protocol_encode.cpp and report_encode.cpp use them,
// so decode(encode(x)) == x holds on both.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "gpucluster/model/sample.hpp"
#include "wire/decode_fields.hpp"

namespace gpucluster::agent::wire {

// A gauge's shortest decimal, or null when unavailable.
nlohmann::json gauge_json(PackedOptional<float> gauge);

// Seconds since the epoch that read back to t's nanosecond.
inline nlohmann::json timestamp_json(Timestamp t) {
  return nlohmann::json(to_seconds(t));
}

template <class T>
nlohmann::json optional_json(const std::optional<T>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

// Adds a sample's fields to out: "timestamp", "memory_used_bytes",
// "memory_total_bytes" and the optional quantities by their names under
// `names`. With FieldNames::seed an unavailable quantity of the seed's
// protocol is written as null (the seed's clients send every field) and our
// extensions are left out when unavailable; with FieldNames::canonical every
// unavailable quantity is left out.
void put_sample_fields(nlohmann::json& out, const Sample& sample, FieldNames names);

}  // namespace gpucluster::agent::wire
