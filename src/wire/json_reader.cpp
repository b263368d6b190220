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
// their text and get nlohmann's typing (integer, unsigned, double). The value
// of one top-level member may go to a JsonValueSink instead (json_reader.hpp).

class BoundedBuilder {
 public:
  BoundedBuilder(const ProtocolLimits& limits, std::string_view subject, const StreamedMember& streamed)
      : limits_(limits), subject_(subject), streamed_(streamed) {}

  bool null() { return scalar(json(nullptr)); }
  bool boolean(bool value) { return scalar(json(value)); }
  bool string(std::string_view text) {
    if (text.size() > limits_.max_string_bytes) return refuse_string(path_here(), text);
    if (!text::is_valid_utf8(text)) return refuse_encoding(path_here(), text);
    return scalar(json(std::string(text)));
  }
  bool start_object() { return open(true); }
  bool end_object() { return close(); }
  bool start_array() { return open(false); }
  bool end_array() { return close(); }

  bool key(std::string_view name) {
    Frame& frame = frames_.back();
    frame.key.assign(name.data(), name.size());  // keeps its buffer from key to key
    if (frame.key.size() > limits_.max_string_bytes) return refuse_string(path_here(), frame.key);
    if (!text::is_valid_utf8(frame.key)) return refuse_encoding(path_here(), frame.key);
    const bool duplicate =
        frame.container != nullptr ? frame.container->contains(frame.key) : !streamed_.sink->key(frame.key);
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
        if (error == std::errc{} && end == last) return scalar(json(value));
      } else {
        std::uint64_t value = 0;
        const auto [end, error] = std::from_chars(first, last, value);
        if (error == std::errc{} && end == last) return scalar(json(value));
      }
    }
    double value = 0;
    if (std::from_chars(first, last, value).ec == std::errc::result_out_of_range) {
      value = std::strtod(std::string(text).c_str(), nullptr);  // ±HUGE_VAL on overflow, ~0 on underflow
    }
    if (!std::isfinite(value)) return out_of_range(text);
    return scalar(json(value));
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
    Frame(json* built, bool object, bool for_sink = false) : container(built), is_object(object), to_sink(for_sink) {}
    json* container;  // nullptr: a container streamed to the sink (not built)
    bool is_object;
    bool to_sink;           // built whole for the sink: handed to it when it closes
    std::size_t count = 0;  // values in it so far
    std::string key;        // an object's current key
  };

  // The JSON path of the value the parser is at: "payload.metrics.power_watts", "payload.list[2]".
  std::string path_here() const {
    std::string path;
    for (std::size_t i = 0; i < frames_.size(); ++i) {
      const Frame& frame = frames_[i];
      const bool innermost = i + 1 == frames_.size();
      if (frame.is_object) {
        if (!path.empty()) path += '.';
        path += printable(frame.key, 32);
      } else {
        path += fmt::format("[{}]", innermost ? frame.count : (frame.count == 0 ? 0 : frame.count - 1));
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
  // RapidJSON 1.1.0 checks the bytes of the text, but decodes a JSON escape
  // of a lone low surrogate (U+DC00 to U+DFFF) into bytes that are not UTF-8:
  // every string and key is checked once decoded (a stored string must be
  // writable as JSON again).
  bool refuse_encoding(const std::string& field, std::string_view text) {
    return refuse(make_error(Kind::malformed, field, fmt::format("\"{}\"", printable(text, 32)),
                             "strings and keys must be valid UTF-8 (a \\u escape of a lone surrogate is not)"));
  }
  bool refuse_string(const std::string& field, std::string_view text) {
    return refuse(make_error(Kind::malformed, field, fmt::format("\"{}\" ({} bytes)", printable(text, 32), text.size()),
                             fmt::format("strings and keys must be at most {} bytes", limits_.max_string_bytes)));
  }

  // True where the next value goes to the sink: inside a streamed container,
  // or as the value of the streamed top-level member (which the document
  // keeps a null for).
  bool value_goes_to_sink() {
    Frame& frame = frames_.back();
    if (frame.container == nullptr) return true;
    if (streamed_.sink == nullptr || frames_.size() != 1 || !frame.is_object || frame.key != streamed_.key) {
      return false;
    }
    (*frame.container)[frame.key] = nullptr;
    return true;
  }

  // Adds a value to the innermost container; returns it.
  json* add(json value) {
    Frame& frame = frames_.back();
    ++frame.count;
    if (frame.is_object) {
      json& slot = (*frame.container)[frame.key];
      slot = std::move(value);
      return &slot;
    }
    frame.container->push_back(std::move(value));
    return &frame.container->back();
  }

  bool scalar(json value) {
    if (frames_.empty()) {
      root_ = std::move(value);
    } else if (value_goes_to_sink()) {
      ++frames_.back().count;
      streamed_.sink->value(std::move(value));
    } else {
      add(std::move(value));
    }
    return true;
  }

  bool open(bool is_object) {
    if (frames_.size() + 1 > limits_.max_depth) {
      return refuse(make_error(Kind::malformed, path_here(), fmt::format("depth {}", frames_.size() + 1),
                               fmt::format("must nest at most {} levels", limits_.max_depth)));
    }
    json container = is_object ? json::object() : json::array();
    if (frames_.empty()) {
      root_ = std::move(container);
      frames_.push_back(Frame{&root_, is_object});
    } else if (value_goes_to_sink()) {
      ++frames_.back().count;
      if (streamed_.sink->stream_container(is_object)) {
        frames_.push_back(Frame{nullptr, is_object});
      } else {  // built here (nothing is streamed inside it), then handed over whole
        sink_value_ = std::move(container);
        frames_.push_back(Frame{&sink_value_, is_object, true});
      }
    } else {
      json* added = add(std::move(container));
      frames_.push_back(Frame{added, is_object});
    }
    return true;
  }

  bool close() {
    const bool streamed = frames_.back().container == nullptr;
    const bool to_sink = frames_.back().to_sink;
    frames_.pop_back();
    if (streamed) streamed_.sink->end_container();
    if (to_sink) streamed_.sink->value(std::move(sink_value_));
    return true;
  }

  ProtocolError make_error(Kind kind, const std::string& field, const std::string& value,
                           const std::string& rule) const {
    return json_error(kind, subject_, field, value, rule);
  }

  const ProtocolLimits& limits_;
  std::string_view subject_;
  const StreamedMember& streamed_;
  json root_;
  json sink_value_;  // a container the sink takes whole, while it is built
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
    return builder.string(std::string_view(text, length));
  }
  bool Key(const char* text, rapidjson::SizeType length, bool /*copy*/) {
    return builder.key(std::string_view(text, length));
  }
  bool StartObject() { return builder.start_object(); }
  bool EndObject(rapidjson::SizeType /*members*/) { return builder.end_object(); }
  bool StartArray() { return builder.start_array(); }
  bool EndArray(rapidjson::SizeType /*elements*/) { return builder.end_array(); }
  BoundedBuilder& builder;
};

}  // namespace

json read_bounded_json(std::string_view body, const ProtocolLimits& limits, std::string_view subject,
                       const StreamedMember& streamed) {
  if (body.size() > limits.max_body_bytes) {
    throw json_error(Kind::malformed, subject, "body", fmt::format("{} bytes", body.size()),
                     fmt::format("must be at most {} bytes", limits.max_body_bytes));
  }
  BoundedBuilder builder(limits, subject, streamed);
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
