#include "gpucluster/agent/protocol.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>
#include <nlohmann/json.hpp>

namespace gpucluster::agent {

ProtocolError::ProtocolError(Kind kind, const std::string& message, const std::string& field, const std::string& value,
                             const std::string& rule)
    : InputError(message, field, value, rule), kind_(kind) {}

const char* to_string(ProtocolError::Kind kind) noexcept {
  switch (kind) {
    case ProtocolError::Kind::malformed: return "malformed";
    case ProtocolError::Kind::invalid: return "invalid";
  }
  return "invalid";
}

namespace {

using nlohmann::json;
using Kind = ProtocolError::Kind;

constexpr std::size_t kMaxShownBytes = 64;  // of a value quoted in an error
constexpr double kTwoTo63 = 9223372036854775808.0;
constexpr std::int64_t kMaxInt64 = std::numeric_limits<std::int64_t>::max();
constexpr double kFloatOverflow = 0x1.ffffffp127;  // 2^128 - 2^103: from here doubles round to a float infinity
constexpr std::size_t kMaxPathBytes = 256;         // of a JSON path quoted in an error

// Length of the well-formed UTF-8 sequence at text[i] (RFC 3629, no overlong
// forms, no surrogates), or 0 when the bytes there are not one.
std::size_t utf8_sequence_length(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return 1;
  std::size_t length = 0;
  unsigned char low = 0x80;
  unsigned char high = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    if (b0 == 0xE0) low = 0xA0;
    if (b0 == 0xED) high = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    if (b0 == 0xF0) low = 0x90;
    if (b0 == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  if (byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < length; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return length;
}

// Text for an error: valid UTF-8 (so the agent can put it in a JSON answer),
// control characters and stray bytes written as \xNN, cut at max_bytes on a
// character boundary with "..." appended.
std::string printable(std::string_view text, std::size_t max_bytes = kMaxShownBytes) {
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t length = utf8_sequence_length(text, i);
    const auto b0 = static_cast<unsigned char>(text[i]);
    const bool escape = length == 0 || (length == 1 && (b0 < 0x20 || b0 == 0x7F));
    const std::size_t added = escape ? 4 : length;
    if (out.size() + added > max_bytes) {
      out += "...";
      break;
    }
    if (escape) {
      out += fmt::format("\\x{:02X}", b0);
      i += 1;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  return out;
}

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

ProtocolError make_error(Kind kind, const std::string& field, const std::string& value, const std::string& rule) {
  return ProtocolError(kind, fmt::format("{} telemetry message: {} = {} ({})", to_string(kind), field, value, rule),
                       field, value, rule);
}

[[noreturn]] void fail(Kind kind, const std::string& field, const std::string& value, const std::string& rule) {
  throw make_error(kind, field, value, rule);
}

// ---------------------------------------------------------------------------
// Parsing within limits: a SAX handler builds the document and refuses, as
// soon as it sees them, nesting past max_depth, strings or keys longer than
// max_string_bytes and duplicate keys. RapidJSON's reader (iterative mode: no
// input can exhaust the stack) feeds it; it is several times faster than
// nlohmann's lexer, which matters on the heartbeat path. Numbers arrive as
// their text and get nlohmann's typing (integer, unsigned, double).

class BoundedBuilder {
 public:
  explicit BoundedBuilder(const ProtocolLimits& limits) : limits_(limits) {}

  bool null() { return add(json(nullptr)) != nullptr; }
  bool boolean(bool value) { return add(json(value)) != nullptr; }
  bool number_integer(json::number_integer_t value) { return add(json(value)) != nullptr; }
  bool number_unsigned(json::number_unsigned_t value) { return add(json(value)) != nullptr; }
  bool string(json::string_t& value) {
    if (value.size() > limits_.max_string_bytes) return refuse_string(path_here(), value);
    return add(json(std::move(value))) != nullptr;
  }
  bool start_object(std::size_t /*size*/) { return open(json::object()); }
  bool end_object() { return close(); }
  bool start_array(std::size_t /*size*/) { return open(json::array()); }
  bool end_array() { return close(); }

  bool key(json::string_t& name) {
    Frame& frame = frames_.back();
    const bool duplicate = frame.container->contains(name);
    frame.key = std::move(name);
    if (frame.key.size() > limits_.max_string_bytes) return refuse_string(path_here(), frame.key);
    if (duplicate) {
      return refuse(make_error(Kind::malformed, path_here(), "(duplicate)", "keys must be unique in an object"));
    }
    return true;
  }

  // A number's text as the JSON grammar allows it (RapidJSON checked that):
  // integers that fit 64 bits stay integers, the rest become doubles.
  bool number(std::string_view text) {
    const char* first = text.data();
    const char* last = first + text.size();
    if (text.find_first_of(".eE") == std::string_view::npos) {
      if (text.front() == '-') {
        std::int64_t value = 0;
        const auto [end, error] = std::from_chars(first, last, value);
        if (error == std::errc{} && end == last) return number_integer(value);
      } else {
        std::uint64_t value = 0;
        const auto [end, error] = std::from_chars(first, last, value);
        if (error == std::errc{} && end == last) return number_unsigned(value);
      }
    }
    double value = 0;
    if (std::from_chars(first, last, value).ec == std::errc::result_out_of_range) {
      value = std::strtod(std::string(text).c_str(), nullptr);  // ±HUGE_VAL on overflow, ~0 on underflow
    }
    if (!std::isfinite(value)) return out_of_range(text);
    return add(json(value)) != nullptr;
  }

  // A number beyond the range of a double, such as 1e400.
  bool out_of_range(std::string_view text) {
    return refuse(make_error(Kind::invalid, path_here(), printable(text), "must be a finite number"));
  }

  bool syntax_error(std::size_t position, std::string_view what) {
    return refuse(
        make_error(Kind::malformed, "body", fmt::format("byte {}", position),
                   fmt::format("must be one JSON document (NaN and Infinity are not JSON): {}", printable(what, 200))));
  }

  json& root() { return root_; }
  const std::optional<ProtocolError>& error() const { return error_; }

 private:
  struct Frame {
    json* container;
    std::string key;  // an object's current key
  };

  // The JSON path of the value the parser is at: "payload.metrics.power_watts", "payload.list[2]".
  std::string path_here() const {
    std::string path;
    for (std::size_t i = 0; i < frames_.size(); ++i) {
      const Frame& frame = frames_[i];
      const bool innermost = i + 1 == frames_.size();
      if (frame.container->is_object()) {
        if (!path.empty()) path += '.';
        path += printable(frame.key, 32);
      } else {
        const std::size_t size = frame.container->size();
        path += fmt::format("[{}]", innermost ? size : (size == 0 ? 0 : size - 1));
      }
      if (path.size() > kMaxPathBytes) {
        path += "...";
        break;
      }
    }
    return path.empty() ? "body" : path;
  }

  bool refuse(ProtocolError error) {
    if (!error_) error_.emplace(std::move(error));
    return false;
  }
  bool refuse_string(const std::string& field, const std::string& text) {
    return refuse(make_error(Kind::malformed, field, fmt::format("\"{}\" ({} bytes)", printable(text, 32), text.size()),
                             fmt::format("strings and keys must be at most {} bytes", limits_.max_string_bytes)));
  }

  json* add(json value) {
    if (frames_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    Frame& frame = frames_.back();
    if (frame.container->is_object()) {
      json& slot = (*frame.container)[frame.key];
      slot = std::move(value);
      return &slot;
    }
    frame.container->push_back(std::move(value));
    return &frame.container->back();
  }

  bool open(json container) {
    if (frames_.size() + 1 > limits_.max_depth) {
      return refuse(make_error(Kind::malformed, path_here(), fmt::format("depth {}", frames_.size() + 1),
                               fmt::format("must nest at most {} levels", limits_.max_depth)));
    }
    json* added = add(std::move(container));
    frames_.push_back(Frame{added, {}});
    return true;
  }

  bool close() {
    frames_.pop_back();
    return true;
  }

  const ProtocolLimits& limits_;
  json root_;
  std::vector<Frame> frames_;
  std::optional<ProtocolError> error_;
};

// RapidJSON's SAX events → the builder.
struct ReaderEvents : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, ReaderEvents> {
  explicit ReaderEvents(BoundedBuilder& target) : builder(target) {}
  bool Null() { return builder.null(); }
  bool Bool(bool value) { return builder.boolean(value); }
  bool RawNumber(const char* text, rapidjson::SizeType length, bool /*copy*/) {
    return builder.number(std::string_view(text, length));
  }
  bool String(const char* text, rapidjson::SizeType length, bool /*copy*/) {
    std::string value(text, length);
    return builder.string(value);
  }
  bool Key(const char* text, rapidjson::SizeType length, bool /*copy*/) {
    std::string name(text, length);
    return builder.key(name);
  }
  bool StartObject() { return builder.start_object(0); }
  bool EndObject(rapidjson::SizeType /*members*/) { return builder.end_object(); }
  bool StartArray() { return builder.start_array(0); }
  bool EndArray(rapidjson::SizeType /*elements*/) { return builder.end_array(); }
  BoundedBuilder& builder;
};

json parse_document(std::string_view body, const ProtocolLimits& limits) {
  if (body.size() > limits.max_body_bytes) {
    fail(Kind::malformed, "body", fmt::format("{} bytes", body.size()),
         fmt::format("must be at most {} bytes", limits.max_body_bytes));
  }
  BoundedBuilder builder(limits);
  // RapidJSON's streams read a NUL byte as the end of the text: refuse one
  // outright (JSON has no raw NUL, not even inside strings).
  if (const std::size_t nul = body.find('\0'); nul != std::string_view::npos) {
    builder.syntax_error(nul, "a NUL byte");
    throw *builder.error();
  }
  constexpr unsigned kFlags =
      rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag | rapidjson::kParseNumbersAsStringsFlag;
  rapidjson::MemoryStream stream(body.data(), body.size());
  rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> input(stream);
  rapidjson::Reader reader;
  ReaderEvents events(builder);
  const rapidjson::ParseResult parsed = reader.Parse<kFlags>(input, events);
  if (builder.error()) throw *builder.error();
  if (parsed.Code() == rapidjson::kParseErrorNumberTooBig) {  // such as 1e400: a value out of range, not bad JSON
    const std::string_view rest = body.substr(std::min(parsed.Offset(), body.size()));
    builder.out_of_range(rest.substr(0, rest.find_first_not_of("+-0123456789.eE")));
    throw *builder.error();
  }
  if (parsed.IsError()) {
    builder.syntax_error(parsed.Offset(), rapidjson::GetParseError_En(parsed.Code()));
    throw *builder.error();
  }
  return std::move(builder.root());
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

// The one conversion of the project (core's, exact to the nanosecond: see
// sample.hpp), so the same float gives the same nanoseconds over HTTP and
// through Python. Monotonic in seconds.
Timestamp seconds_to_timestamp(double seconds) {
  return timestamp_from_seconds(seconds);
}

Timestamp timestamp_at(const json& value, const FieldPath& field) {
  const double seconds = number_at(value, field);
  if (seconds < 0 || seconds > kMaxTimestampSeconds) {
    fail(Kind::invalid, field.str(), shown(value),
         fmt::format("must be seconds since the epoch within [0, {}]", kMaxTimestampSeconds));
  }
  return seconds_to_timestamp(seconds);
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
  const auto gauge = [&](std::string_view key) -> std::optional<float> {
    const json* value = fields.optional(key);
    if (value == nullptr) return std::nullopt;
    return gauge_at(*value, fields.path_of(key));
  };
  sample.utilization_percent = gauge("compute_utilization_percent");
  sample.power_watts = gauge("power_watts");
  sample.temperature_celsius = gauge("temperature_celsius");
  sample.clock_mhz = gauge("clock_rate_mhz");
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
  const json document = parse_document(body, limits);
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

// ---------------------------------------------------------------------------
// Writing.

// The double that parses back to exactly t (the parser rounds seconds·10⁹ to
// the nearest nanosecond, a monotonic map, so a few steps from t/10⁹ find it).
double timestamp_seconds(Timestamp t) {
  const std::int64_t target = t.time_since_epoch().count();
  double seconds = to_seconds(t);
  if (!(seconds >= 0 && seconds <= kMaxTimestampSeconds)) return seconds;
  const auto at = [](double s) { return seconds_to_timestamp(s).time_since_epoch().count(); };
  for (int step = 0; step < 16 && at(seconds) < target; ++step) {
    seconds = std::nextafter(seconds, kMaxTimestampSeconds + 1);
  }
  for (int step = 0; step < 16 && at(seconds) > target; ++step) seconds = std::nextafter(seconds, -1.0);
  // A time that no double reaches (finer than the doubles near it): the nearest one.
  const double above = std::nextafter(seconds, kMaxTimestampSeconds + 1);
  if (at(seconds) != target && above <= kMaxTimestampSeconds && at(above) - target < target - at(seconds)) {
    return above;
  }
  return seconds;
}

// The shortest decimal of a float when it parses back to the same float
// (41.3f → 41.3), else the float's exact value.
double float_json(float value) {
  const double tidy = std::strtod(fmt::format("{}", value).c_str(), nullptr);
  return static_cast<float>(tidy) == value ? tidy : static_cast<double>(value);
}

json gauge_json(const std::optional<float>& gauge) {
  return gauge ? json(float_json(*gauge)) : json(nullptr);
}

// The metrics fields (names as core's to_json(Sample)) with the device id first.
json sample_json(const std::string& device_id, const Sample& sample) {
  return json{{"device_id", device_id},
              {"timestamp", timestamp_seconds(sample.timestamp)},
              {"memory_used_bytes", sample.memory_used_bytes},
              {"memory_total_bytes", sample.memory_total_bytes},
              {"compute_utilization_percent", gauge_json(sample.utilization_percent)},
              {"power_watts", gauge_json(sample.power_watts)},
              {"temperature_celsius", gauge_json(sample.temperature_celsius)},
              {"clock_rate_mhz", gauge_json(sample.clock_mhz)}};
}

template <class T>
json optional_json(const std::optional<T>& value) {
  return value ? json(*value) : json(nullptr);
}

// The seed's device_type for a kind; vulkan goes out as vulkan_linux, which
// the parser maps back to vulkan.
std::string device_type_name(DeviceKind kind) {
  if (kind == DeviceKind::vulkan) return "vulkan_linux";
  return std::string(to_string(kind));
}

json payload_json(const DeviceRegistration& registration) {
  const DeviceInfo& info = registration.info;
  return json{{"hostname", info.key.host},
              {"port", optional_json(registration.port)},
              {"device_id", info.key.local_id},
              {"capabilities",
               {{"device_id", info.key.local_id},
                {"device_type", device_type_name(info.kind)},
                {"device_name", info.name},
                {"vendor", info.vendor},
                {"compute_units", optional_json(info.compute_units)},
                {"memory_bandwidth_gbps", optional_json(info.memory_bandwidth_gbps)},
                {"max_memory_bytes", info.memory_total_bytes},
                {"driver_version", optional_json(info.driver_version)},
                {"supports_fp64", optional_json(info.supports_fp64)},
                {"supports_tensor_cores", optional_json(info.supports_tensor_cores)}}},
              {"timestamp", timestamp_seconds(registration.timestamp)}};
}

json payload_json(const Heartbeat& heartbeat) {
  json payload{{"device_id", heartbeat.device_id},
               {"metrics", heartbeat.sample ? sample_json(heartbeat.device_id, *heartbeat.sample) : json(nullptr)},
               {"timestamp", timestamp_seconds(heartbeat.timestamp)},
               {"is_available", heartbeat.is_available},
               {"error_message", heartbeat.error_message.empty() ? json(nullptr) : json(heartbeat.error_message)}};
  if (heartbeat.hostname) payload["hostname"] = *heartbeat.hostname;
  return payload;
}

json payload_json(const MetricsReport& report) {
  json payload = sample_json(report.device_id, report.sample);
  if (report.hostname) payload["hostname"] = *report.hostname;
  return payload;
}

const char* type_of(const DeviceRegistration& /*message*/) {
  return "device_registration";
}
const char* type_of(const Heartbeat& /*message*/) {
  return "heartbeat";
}
const char* type_of(const MetricsReport& /*message*/) {
  return "metrics";
}

bool same_info(const DeviceInfo& a, const DeviceInfo& b) {
  return a.key == b.key && a.name == b.name && a.vendor == b.vendor && a.kind == b.kind && a.backend == b.backend &&
         a.uuid == b.uuid && a.pci_bus_id == b.pci_bus_id && a.memory_total_bytes == b.memory_total_bytes &&
         a.compute_units == b.compute_units && a.compute_capability == b.compute_capability &&
         a.max_clock_mhz == b.max_clock_mhz && a.memory_bandwidth_gbps == b.memory_bandwidth_gbps &&
         a.driver_version == b.driver_version && a.power_limit_watts == b.power_limit_watts &&
         a.temperature_slowdown_celsius == b.temperature_slowdown_celsius &&
         a.temperature_shutdown_celsius == b.temperature_shutdown_celsius && a.supports_fp64 == b.supports_fp64 &&
         a.supports_tensor_cores == b.supports_tensor_cores;
}

bool same_sample(const Sample& a, const Sample& b) {
  return a.timestamp == b.timestamp && a.memory_used_bytes == b.memory_used_bytes &&
         a.memory_total_bytes == b.memory_total_bytes && a.utilization_percent == b.utilization_percent &&
         a.power_watts == b.power_watts && a.temperature_celsius == b.temperature_celsius && a.clock_mhz == b.clock_mhz;
}

}  // namespace

bool operator==(const DeviceRegistration& a, const DeviceRegistration& b) {
  return same_info(a.info, b.info) && a.port == b.port && a.timestamp == b.timestamp;
}

bool operator==(const Heartbeat& a, const Heartbeat& b) {
  const bool samples_equal =
      a.sample.has_value() == b.sample.has_value() && (!a.sample.has_value() || same_sample(*a.sample, *b.sample));
  return a.device_id == b.device_id && a.hostname == b.hostname && samples_equal && a.is_available == b.is_available &&
         a.error_message == b.error_message && a.timestamp == b.timestamp;
}

bool operator==(const MetricsReport& a, const MetricsReport& b) {
  return a.device_id == b.device_id && a.hostname == b.hostname && same_sample(a.sample, b.sample);
}

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

nlohmann::json to_protocol_json(const TelemetryMessage& message, Timestamp envelope_timestamp) {
  return std::visit(
      [&](const auto& m) {
        return json{{"type", type_of(m)},
                    {"version", std::string(kProtocolVersion)},
                    {"timestamp", timestamp_seconds(envelope_timestamp)},
                    {"payload", payload_json(m)}};
      },
      message);
}

}  // namespace gpucluster::agent
