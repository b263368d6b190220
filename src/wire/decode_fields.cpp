#include "wire/decode_fields.hpp"

#include <cmath>

#include <fmt/format.h>

#include "gpucluster/model/device.hpp"

namespace gpucluster::agent::wire {

using nlohmann::json;
using text::printable;

namespace {

constexpr double kTwoTo63 = 9223372036854775808.0;
constexpr double kFloatOverflow = 0x1.ffffffp127;  // 2^128 - 2^103: from here doubles round to a float infinity
constexpr std::size_t kMaxKeyBytesInPath = 64;

}  // namespace

void fail(Kind kind, std::string field, std::string value, std::string rule) {
  throw FieldError{kind, std::move(field), std::move(value), std::move(rule)};
}

std::string shown(const json& value) {
  if (value.is_object()) return "{...}";
  if (value.is_array()) return "[...]";
  return printable(value.dump(-1, ' ', false, json::error_handler_t::replace));
}

const char* type_name(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "a number";
    default: return "not JSON";
  }
}

// ---------------------------------------------------------------------------
// Paths

void FieldPath::append_to(std::string& out) const {
  if (parent_ != nullptr) parent_->append_to(out);
  if (index_ != kNoIndex) {
    out += fmt::format("[{}]", index_);
    return;
  }
  if (key_.empty() && parent_ == nullptr) return;  // the document
  if (!out.empty()) out += '.';
  out += printable(key_, kMaxKeyBytesInPath);
}

std::string FieldPath::str() const {
  if (is_root()) return "body";
  std::string out;
  append_to(out);
  return out;
}

void Fields::unknown_key(const std::string& key, const std::string_view* known, std::size_t count) const {
  std::string names;
  for (std::size_t i = 0; i < count; ++i) {
    if (i > 0) names += ", ";
    names += known[i];
  }
  fail(Kind::malformed, FieldPath(path_, key).str(), "(unknown)", fmt::format("unknown field (known: {})", names));
}

// ---------------------------------------------------------------------------
// Typed readers

void wrong_type(const FieldPath& field, const json& value, const char* expected) {
  fail(Kind::malformed, field.str(), shown(value), fmt::format("must be {}, not {}", expected, type_name(value)));
}

Fields object_at(const json& value, const FieldPath& field) {
  if (!value.is_object()) wrong_type(field, value, "an object");
  return Fields(value, field);
}

const json::array_t& array_at(const json& value, const FieldPath& field) {
  if (!value.is_array()) wrong_type(field, value, "an array");
  return value.get_ref<const json::array_t&>();
}

const std::string& string_at(const json& value, const FieldPath& field) {
  if (!value.is_string()) wrong_type(field, value, "a string");
  return value.get_ref<const std::string&>();
}

bool bool_at(const json& value, const FieldPath& field) {
  if (!value.is_boolean()) wrong_type(field, value, "a boolean");
  return value.get<bool>();
}

double number_at(const json& value, const FieldPath& field) {
  if (!value.is_number()) wrong_type(field, value, "a number");
  // Integers above 2^53 lose precision here; callers that need them exact use integer_at.
  const double number = value.get<double>();
  if (!std::isfinite(number)) fail(Kind::invalid, field.str(), shown(value), "must be a finite number");
  return number;
}

std::int64_t integer_at(const json& value, const FieldPath& field, std::int64_t min, std::int64_t max) {
  const auto refuse = [&] {
    fail(Kind::invalid, field.str(), shown(value), fmt::format("must be a whole number within [{}, {}]", min, max));
  };
  if (value.is_number_unsigned()) {
    const auto number = value.get<std::uint64_t>();
    if (number > static_cast<std::uint64_t>(max) || (min > 0 && number < static_cast<std::uint64_t>(min))) {
      refuse();
    }
    return static_cast<std::int64_t>(number);
  }
  if (value.is_number_integer()) {
    const auto number = value.get<std::int64_t>();
    if (number < min || number > max) refuse();
    return number;
  }
  const double number = number_at(value, field);
  // Compared as doubles before converting, so no out-of-range conversion happens.
  if (std::trunc(number) != number || number < -kTwoTo63 || number >= kTwoTo63) {
    refuse();
  }
  const auto integer = static_cast<std::int64_t>(number);
  if (integer < min || integer > max) refuse();
  return integer;
}

float gauge_at(const json& value, const FieldPath& field) {
  const double number = number_at(value, field);
  if (std::fabs(number) >= kFloatOverflow) {
    fail(Kind::invalid, field.str(), shown(value), "must be a finite number that fits a 32-bit float");
  }
  return static_cast<float>(number);
}

double non_negative_at(const json& value, const FieldPath& field) {
  const double number = number_at(value, field);
  if (number < 0) fail(Kind::invalid, field.str(), shown(value), "must be >= 0");
  return number;
}

Timestamp timestamp_at(const json& value, const FieldPath& field) {
  const double seconds = number_at(value, field);
  // model/time.hpp's range and conversion, as for every path that takes seconds (Python too).
  if (!timestamp_seconds_in_range(seconds)) {
    fail(Kind::invalid, field.str(), shown(value), std::string(kTimestampSecondsRule));
  }
  return timestamp_from_seconds(seconds);
}

const std::string& identifier_at(const json& value, const FieldPath& field) {
  const std::string& id = string_at(value, field);
  try {
    validate_identifier(id, "id");  // its field name is not used: the error names ours
  } catch (const InputError& e) {
    fail(Kind::invalid, field.str(), printable(e.value()), e.rule());
  }
  return id;
}

void check_identifier_key(const std::string& key, const FieldPath& key_path) {
  try {
    validate_identifier(key, "id");
  } catch (const InputError& e) {
    fail(Kind::invalid, key_path.str(), printable(e.value()), "keys must be device ids: " + e.rule());
  }
}

}  // namespace gpucluster::agent::wire
