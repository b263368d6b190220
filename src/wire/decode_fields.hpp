#pragma once
// The wire decoders' shared field readers (internal): a document read by the
// bounded reader (json_reader.hpp) is walked with Fields, and every value is
// taken through one of the typed readers below, which check it and, when it
// is refused, name it by its JSON path ("samples.cuda:0[3].power_watts").
// The seed protocol (protocol_decode.cpp) and the v2 report
// (report_decode.cpp) use the same readers, so a value means the same on
// both and is refused with the same rule.
//
// Paths are spelled out only when an error names them: a FieldPath is a chain
// of (parent, key or index) links on the stack, so the accepted path (every
// report, every heartbeat) builds no strings.
//
// The readers throw FieldError, which names no subject; decoding() runs a
// decoder and turns it (and anything unexpected) into the ProtocolError of
// that subject ("telemetry message", "report").
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <nlohmann/json.hpp>

#include "gpucluster/model/fields.hpp"
#include "gpucluster/model/sample.hpp"
#include "gpucluster/wire/protocol.hpp"
#include "model/text.hpp"
#include "wire/json_reader.hpp"

namespace gpucluster::agent::wire {

using Kind = ProtocolError::Kind;

inline constexpr std::int64_t kMaxInt64 = std::numeric_limits<std::int64_t>::max();

// A refused value, before decoding() names the document it was in.
struct FieldError {
  Kind kind;
  std::string field;
  std::string value;
  std::string rule;
};

[[noreturn]] void fail(Kind kind, std::string field, std::string value, std::string rule);

// A JSON value as quoted in an error: its JSON text, shortened.
std::string shown(const nlohmann::json& value);
// "null", "an object", "a number", ...
const char* type_name(const nlohmann::json& value);

// A value's JSON path: a top-level key ("seq"), a member of a parent
// ("node.id"), or an element of a parent ("inventory[2]"). A FieldPath refers
// to its parent and to its key's characters: both must outlive it (they do
// when paths live on the stack of the decoder and keys in the document or in
// string literals).
class FieldPath {
 public:
  FieldPath() = default;                                 // the document itself: "body" in errors, "" as a parent
  FieldPath(const char* top_level) : key_(top_level) {}  // NOLINT(google-explicit-constructor): "type", "payload"
  FieldPath(const FieldPath& parent, std::string_view key) : parent_(&parent), key_(key) {}
  FieldPath(const FieldPath& parent, std::size_t index) : parent_(&parent), index_(index) {}

  // "samples.cuda:0[3].power_watts"; "body" for the document.
  std::string str() const;

 private:
  void append_to(std::string& out) const;
  bool is_root() const { return parent_ == nullptr && index_ == kNoIndex && key_.empty(); }

  static constexpr std::size_t kNoIndex = static_cast<std::size_t>(-1);
  const FieldPath* parent_ = nullptr;
  std::string_view key_;
  std::size_t index_ = kNoIndex;
};

// The members of an object at a path.
class Fields {
 public:
  Fields(const nlohmann::json& object, const FieldPath& path) : object_(object), path_(path) {}

  const nlohmann::json& object() const { return object_; }
  const FieldPath& path() const { return path_; }
  FieldPath path_of(std::string_view key) const { return FieldPath(path_, key); }

  // nullptr when absent or null (an optional field left out).
  const nlohmann::json* optional(std::string_view key) const {
    const auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  const nlohmann::json* present(std::string_view key) const {
    const auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }
  const nlohmann::json& required(std::string_view key) const {
    const nlohmann::json* value = present(key);
    if (value == nullptr) fail(Kind::malformed, path_of(key).str(), "missing", "required field");
    return *value;
  }

  // Refuses (malformed) the first key that is not one of known, listing them.
  template <std::size_t N>
  void refuse_unknown_keys(const std::string_view (&known)[N]) const {
    for (const auto& item : object_.items()) {
      bool found = false;
      for (const std::string_view name : known) found = found || item.key() == name;
      if (!found) unknown_key(item.key(), known, N);
    }
  }

 private:
  [[noreturn]] void unknown_key(const std::string& key, const std::string_view* known, std::size_t count) const;

  const nlohmann::json& object_;
  FieldPath path_;
};

[[noreturn]] void wrong_type(const FieldPath& field, const nlohmann::json& value, const char* expected);

// The object at a path (malformed unless an object). The Fields refers to
// field: keep that alive while the Fields is used.
Fields object_at(const nlohmann::json& value, const FieldPath& field);
// The array at a path (malformed unless an array).
const nlohmann::json::array_t& array_at(const nlohmann::json& value, const FieldPath& field);

const std::string& string_at(const nlohmann::json& value, const FieldPath& field);
bool bool_at(const nlohmann::json& value, const FieldPath& field);
// A finite number (a number beyond a double never gets here: the reader refuses it).
double number_at(const nlohmann::json& value, const FieldPath& field);
// An integer within [min, max]; an integral float such as 8.0e10 counts (the
// Python client may send either).
std::int64_t integer_at(const nlohmann::json& value, const FieldPath& field, std::int64_t min, std::int64_t max);
// A gauge: a finite number that fits a 32-bit float.
float gauge_at(const nlohmann::json& value, const FieldPath& field);
double non_negative_at(const nlohmann::json& value, const FieldPath& field);
// Seconds since the epoch within model/time.hpp's range, to the nanosecond.
Timestamp timestamp_at(const nlohmann::json& value, const FieldPath& field);
// A host name or device id: a string that the model's validate_identifier accepts.
const std::string& identifier_at(const nlohmann::json& value, const FieldPath& field);
// An object key that must be an identifier (a device id keying samples).
void check_identifier_key(const std::string& key, const FieldPath& key_path);

// Which names a sample's optional quantities go by: the seed protocol's
// (FieldRow::wire_name: "compute_utilization_percent") or the project's one
// name (FieldRow::name: "utilization_percent"), which the v2 report uses.
enum class FieldNames { seed, canonical };

constexpr std::string_view field_key(const auto& row, FieldNames names) {
  return names == FieldNames::seed ? row.wire_name : row.name;
}

// A sample's fields: "timestamp", "memory_used_bytes", "memory_total_bytes"
// and every optional quantity of the field table (absent or null:
// unavailable). timestamp falls back to default_timestamp (a heartbeat's)
// when that is given and the field is left out. Other keys are ignored.
// present(key) gives the sample's value of a key, nullptr when it has none:
// a document's object (sample_at) or the values a streaming decoder kept
// (report_decode.cpp), so both are checked by these same rules, in the same
// order.
template <class Present>
Sample sample_from(const Present& present, const FieldPath& path, FieldNames names,
                   const std::optional<Timestamp>& default_timestamp) {
  const auto optional = [&](std::string_view key) -> const nlohmann::json* {
    const nlohmann::json* value = present(key);
    return value == nullptr || value->is_null() ? nullptr : value;
  };
  const auto required = [&](std::string_view key) -> const nlohmann::json& {
    const nlohmann::json* value = present(key);
    if (value == nullptr) fail(Kind::malformed, FieldPath(path, key).str(), "missing", "required field");
    return *value;
  };
  Sample sample;
  const nlohmann::json* timestamp = default_timestamp ? optional("timestamp") : &required("timestamp");
  sample.timestamp = timestamp != nullptr ? timestamp_at(*timestamp, FieldPath(path, "timestamp"))
                                          : default_timestamp.value_or(Timestamp{});
  sample.memory_used_bytes =
      integer_at(required("memory_used_bytes"), FieldPath(path, "memory_used_bytes"), 0, kMaxInt64);
  sample.memory_total_bytes =
      integer_at(required("memory_total_bytes"), FieldPath(path, "memory_total_bytes"), 0, kMaxInt64);
  // Every optional quantity of the field table, by its name under `names`.
  for_each_field([&](const auto& row) {
    auto& member = sample.*row.member;
    using Member = std::decay_t<decltype(member)>;
    if constexpr (!std::is_integral_v<Member>) {
      const std::string_view key = field_key(row, names);
      const nlohmann::json* value = optional(key);
      if (value == nullptr) return;
      if constexpr (std::is_same_v<Member, PackedOptional<float>>) {
        member = gauge_at(*value, FieldPath(path, key));
      } else {
        member = number_at(*value, FieldPath(path, key));
      }
    }
  });
  return sample;
}

inline Sample sample_at(const Fields& fields, FieldNames names, const std::optional<Timestamp>& default_timestamp) {
  return sample_from([&](std::string_view key) { return fields.present(key); }, fields.path(), names,
                     default_timestamp);
}

// Runs decode() and returns its result; every refusal comes out as the
// ProtocolError of subject, and nothing else escapes (an InputError or a JSON
// exception that a check missed becomes one too).
template <class Decode>
auto decoding(std::string_view subject, Decode&& decode) -> decltype(decode()) {
  try {
    return decode();
  } catch (const ProtocolError&) {
    throw;
  } catch (const FieldError& e) {
    throw json_error(e.kind, subject, e.field, e.value, e.rule);
  } catch (const InputError& e) {  // not expected: every check names its own path
    throw json_error(Kind::invalid, subject, e.field(), text::printable(e.value()), e.rule());
  } catch (const nlohmann::json::exception& e) {  // not expected: types are checked before every access
    throw json_error(Kind::malformed, subject, "body", "", text::printable(e.what(), 200));
  }
}

}  // namespace gpucluster::agent::wire
