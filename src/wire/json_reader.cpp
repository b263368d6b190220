#include "wire/json_reader.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

#include "model/text.hpp"

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

ProtocolError json_error(ProtocolError::Kind kind, std::string_view subject, const std::string& field,
                         const std::string& value, const std::string& rule) {
  return ProtocolError(kind, fmt::format("{} {}: {} = {} ({})", to_string(kind), subject, field, value, rule), field,
                       value, rule);
}

namespace {

using nlohmann::json;
using Kind = ProtocolError::Kind;
using text::printable;

constexpr std::size_t kMaxPathBytes = 256;  // of a JSON path quoted in an error

// ---------------------------------------------------------------------------
// A SAX handler builds the document and refuses, as
// soon as it sees them, nesting past max_depth, strings or keys longer than
// max_string_bytes and duplicate keys. RapidJSON's reader (iterative mode: no
// input can exhaust the stack) feeds it; it is several times faster than
// nlohmann's lexer, which matters on the heartbeat path. Numbers arrive as
// their text and get nlohmann's typing (integer, unsigned, double).

class BoundedBuilder {
 public:
  BoundedBuilder(const ProtocolLimits& limits, std::string_view subject) : limits_(limits), subject_(subject) {}

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

  ProtocolError make_error(Kind kind, const std::string& field, const std::string& value,
                           const std::string& rule) const {
    return json_error(kind, subject_, field, value, rule);
  }

  const ProtocolLimits& limits_;
  std::string_view subject_;
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

}  // namespace

json read_bounded_json(std::string_view body, const ProtocolLimits& limits, std::string_view subject) {
  if (body.size() > limits.max_body_bytes) {
    throw json_error(Kind::malformed, subject, "body", fmt::format("{} bytes", body.size()),
                     fmt::format("must be at most {} bytes", limits.max_body_bytes));
  }
  BoundedBuilder builder(limits, subject);
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

}  // namespace gpucluster::agent
