// The wire protocol's decoding: a document read by the bounded reader
// (json_reader.hpp) → the typed messages of protocol.hpp, every field checked
// and every refusal naming its JSON path.
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "gpucluster/model/fields.hpp"
#include "gpucluster/wire/protocol.hpp"
#include "model/text.hpp"
#include "wire/json_reader.hpp"

namespace gpucluster::agent {

namespace {

using nlohmann::json;
using Kind = ProtocolError::Kind;
using text::printable;

constexpr double kTwoTo63 = 9223372036854775808.0;
constexpr std::int64_t kMaxInt64 = std::numeric_limits<std::int64_t>::max();
constexpr double kFloatOverflow = 0x1.ffffffp127;  // 2^128 - 2^103: from here doubles round to a float infinity

// A JSON value as quoted in an error: its JSON text, shortened.
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

constexpr std::string_view kSubject = "telemetry message";

ProtocolError make_error(Kind kind, const std::string& field, const std::string& value, const std::string& rule) {
  return json_error(kind, kSubject, field, value, rule);
}

[[noreturn]] void fail(Kind kind, const std::string& field, const std::string& value, const std::string& rule) {
  throw make_error(kind, field, value, rule);
}

// ---------------------------------------------------------------------------
// Fields of an object at a JSON path.

std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

// A field's JSON path ("payload.metrics.power_watts"), spelled out only when
// an error names it: the accepted path (every heartbeat) builds no strings.
class FieldPath {
 public:
  FieldPath(const char* top_level) : key_(top_level) {}  // NOLINT(google-explicit-constructor): "type", "payload"
  FieldPath(const std::string& parent, std::string_view key) : parent_(&parent), key_(key) {}
  std::string str() const { return parent_ == nullptr ? std::string(key_) : join(*parent_, key_); }

 private:
  const std::string* parent_ = nullptr;
  std::string_view key_;
};

class Fields {
 public:
  Fields(const json& object, std::string path) : object_(object), path_(std::move(path)) {}

  const std::string& path() const { return path_; }
  FieldPath path_of(std::string_view key) const { return FieldPath(path_, key); }

  // nullptr when absent or null (an optional field left out).
  const json* optional(std::string_view key) const {
    const auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  const json* present(std::string_view key) const {
    const auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }
  const json& required(std::string_view key) const {
    const json* value = present(key);
    if (value == nullptr) fail(Kind::malformed, path_of(key).str(), "missing", "required field");
    return *value;
  }

 private:
  const json& object_;
  std::string path_;
};

[[noreturn]] void wrong_type(const FieldPath& field, const json& value, const char* expected) {
  fail(Kind::malformed, field.str(), shown(value), fmt::format("must be {}, not {}", expected, type_name(value)));
}

Fields object_at(const json& value, const FieldPath& field) {
  if (!value.is_object()) wrong_type(field, value, "an object");
  return Fields(value, field.str());
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

// An integer within [min, max]; an integral float such as 8.0e10 counts (the
// Python client may send either).
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
  if (!timestamp_seconds_in_range(seconds))
    fail(Kind::invalid, field.str(), shown(value), std::string(kTimestampSecondsRule));
  return timestamp_from_seconds(seconds);
}

// A host name or device id: a string that core's validate_identifier accepts.
std::string identifier_at(const json& value, const FieldPath& field) {
  std::string id = string_at(value, field);
  try {
    validate_identifier(id, "id");  // its field name is not used: the error names ours
  } catch (const InputError& e) {
    fail(Kind::invalid, field.str(), printable(e.value()), e.rule());
  }
  return id;
}

void check_same_device(const json* value, const FieldPath& field, const std::string& device_id,
                       const FieldPath& device_field) {
  if (value == nullptr) return;
  const std::string& id = string_at(*value, field);
  if (id != device_id) {
    fail(Kind::invalid, field.str(), shown(*value),
         fmt::format("must equal {} (\"{}\") when present", device_field.str(), printable(device_id)));
  }
}

// The seed's metrics fields. timestamp falls back to default_timestamp (a
// heartbeat's) when that is given and the field is left out.
Sample sample_at(const Fields& fields, const std::optional<Timestamp>& default_timestamp) {
  Sample sample;
  const json* timestamp = default_timestamp ? fields.optional("timestamp") : &fields.required("timestamp");
  sample.timestamp = timestamp != nullptr ? timestamp_at(*timestamp, fields.path_of("timestamp")) : *default_timestamp;
  sample.memory_used_bytes =
      integer_at(fields.required("memory_used_bytes"), fields.path_of("memory_used_bytes"), 0, kMaxInt64);
  sample.memory_total_bytes =
      integer_at(fields.required("memory_total_bytes"), fields.path_of("memory_total_bytes"), 0, kMaxInt64);
  // Every optional quantity of the field table, by its wire name.
  for_each_field([&](const auto& row) {
    auto& member = sample.*row.member;
    using Member = std::decay_t<decltype(member)>;
    if constexpr (!std::is_integral_v<Member>) {
      const json* value = fields.optional(row.wire_name);
      if (value == nullptr) return;
      if constexpr (std::is_same_v<Member, PackedOptional<float>>) {
        member = gauge_at(*value, fields.path_of(row.wire_name));
      } else {
        member = number_at(*value, fields.path_of(row.wire_name));
      }
    }
  });
  return sample;
}

std::optional<std::string> optional_hostname(const Fields& payload) {
  const json* value = payload.optional("hostname");
  if (value == nullptr) return std::nullopt;
  return identifier_at(*value, payload.path_of("hostname"));
}

DeviceRegistration parse_registration(const Fields& payload) {
  DeviceRegistration registration;
  DeviceInfo& info = registration.info;
  info.key.host = identifier_at(payload.required("hostname"), payload.path_of("hostname"));
  if (const json* port = payload.optional("port")) {
    registration.port = static_cast<int>(integer_at(*port, payload.path_of("port"), 1, 65535));
  }
  info.key.local_id = identifier_at(payload.required("device_id"), payload.path_of("device_id"));
  registration.timestamp = timestamp_at(payload.required("timestamp"), payload.path_of("timestamp"));

  const Fields caps = object_at(payload.required("capabilities"), payload.path_of("capabilities"));
  check_same_device(caps.optional("device_id"), caps.path_of("device_id"), info.key.local_id,
                    payload.path_of("device_id"));
  const std::string& device_type = string_at(caps.required("device_type"), caps.path_of("device_type"));
  const std::optional<DeviceKind> kind = parse_device_kind(device_type);
  if (!kind) {
    fail(Kind::invalid, caps.path_of("device_type").str(), shown(caps.required("device_type")),
         "must be one of cuda, rocm, metal, vulkan_android, vulkan_linux, intel_xe, directml, cpu");
  }
  info.kind = *kind;
  info.name = string_at(caps.required("device_name"), caps.path_of("device_name"));
  info.vendor = string_at(caps.required("vendor"), caps.path_of("vendor"));
  info.backend = "remote";
  info.memory_total_bytes = static_cast<std::uint64_t>(
      integer_at(caps.required("max_memory_bytes"), caps.path_of("max_memory_bytes"), 1, kMaxInt64));
  if (const json* units = caps.optional("compute_units")) {
    info.compute_units = static_cast<std::uint32_t>(
        integer_at(*units, caps.path_of("compute_units"), 0, std::numeric_limits<std::uint32_t>::max()));
  }
  if (const json* bandwidth = caps.optional("memory_bandwidth_gbps")) {
    info.memory_bandwidth_gbps = non_negative_at(*bandwidth, caps.path_of("memory_bandwidth_gbps"));
  }
  if (const json* driver = caps.optional("driver_version")) {
    info.driver_version = string_at(*driver, caps.path_of("driver_version"));
  }
  if (const json* fp64 = caps.optional("supports_fp64")) {
    info.supports_fp64 = bool_at(*fp64, caps.path_of("supports_fp64"));
  }
  if (const json* tensor = caps.optional("supports_tensor_cores")) {
    info.supports_tensor_cores = bool_at(*tensor, caps.path_of("supports_tensor_cores"));
  }

  // The core's own checks, as a backstop; its field names mapped to JSON paths.
  try {
    validate_device_info(info);
  } catch (const InputError& e) {
    const std::string field = e.field() == "host"        ? payload.path_of("hostname").str()
                              : e.field() == "device_id" ? payload.path_of("device_id").str()
                                                         : caps.path_of(e.field()).str();
    fail(Kind::invalid, field, printable(e.value()), e.rule());
  }
  return registration;
}

Heartbeat parse_heartbeat(const Fields& payload) {
  Heartbeat heartbeat;
  heartbeat.device_id = identifier_at(payload.required("device_id"), payload.path_of("device_id"));
  heartbeat.hostname = optional_hostname(payload);
  heartbeat.timestamp = timestamp_at(payload.required("timestamp"), payload.path_of("timestamp"));
  if (const json* metrics = payload.optional("metrics")) {
    const Fields fields = object_at(*metrics, payload.path_of("metrics"));
    check_same_device(fields.optional("device_id"), fields.path_of("device_id"), heartbeat.device_id,
                      payload.path_of("device_id"));
    heartbeat.sample = sample_at(fields, heartbeat.timestamp);
  }
  if (const json* available = payload.optional("is_available")) {
    heartbeat.is_available = bool_at(*available, payload.path_of("is_available"));
  }
  if (const json* message = payload.optional("error_message")) {
    heartbeat.error_message = string_at(*message, payload.path_of("error_message"));
  }
  return heartbeat;
}

MetricsReport parse_metrics(const Fields& payload) {
  MetricsReport report;
  report.device_id = identifier_at(payload.required("device_id"), payload.path_of("device_id"));
  report.hostname = optional_hostname(payload);
  report.sample = sample_at(payload, std::nullopt);
  return report;
}

TelemetryMessage parse_message(std::string_view body, const ProtocolLimits& limits) {
  const json document = read_bounded_json(body, limits, kSubject);
  if (!document.is_object()) wrong_type("body", document, "an object (the envelope)");
  const Fields envelope(document, "");

  const json& version = envelope.required("version");
  if (!version.is_string() || version.get_ref<const std::string&>() != kProtocolVersion) {
    fail(Kind::malformed, "version", shown(version),
         fmt::format("must be \"{}\" (the only version)", kProtocolVersion));
  }
  const std::string& type = string_at(envelope.required("type"), "type");
  timestamp_at(envelope.required("timestamp"), "timestamp");
  const json& payload_value = envelope.required("payload");

  if (type == "topology") {
    fail(Kind::malformed, "type", shown(envelope.required("type")),
         "topology is declared by the seed's protocol but not supported");
  }
  if (type != "device_registration" && type != "heartbeat" && type != "metrics") {
    fail(Kind::malformed, "type", shown(envelope.required("type")),
         "must be one of device_registration, heartbeat, metrics");
  }
  const Fields payload = object_at(payload_value, "payload");
  if (type == "device_registration") return parse_registration(payload);
  if (type == "heartbeat") return parse_heartbeat(payload);
  return parse_metrics(payload);
}

}  // namespace

TelemetryMessage parse_telemetry_message(std::string_view body, const ProtocolLimits& limits) {
  try {
    return parse_message(body, limits);
  } catch (const ProtocolError&) {
    throw;
  } catch (const InputError& e) {  // not expected: every check above names its own path
    throw make_error(Kind::invalid, e.field(), printable(e.value()), e.rule());
  } catch (const nlohmann::json::exception& e) {  // not expected: types are checked before every access
    throw make_error(Kind::malformed, "body", "", printable(e.what(), 200));
  }
}

}  // namespace gpucluster::agent
