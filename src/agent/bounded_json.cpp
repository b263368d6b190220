#include "gpucluster/agent/bounded_json.hpp"

#include <string>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>

namespace gpucluster::agent {
namespace {

ProtocolError too_deep(const ProtocolLimits& limits) {
  return {ProtocolError::Kind::malformed, fmt::format("the body nests deeper than {} levels", limits.max_depth),
          "(body)", fmt::format("depth > {}", limits.max_depth),
          fmt::format("nesting at most {} levels", limits.max_depth)};
}

ProtocolError string_too_long(const ProtocolLimits& limits) {
  return {ProtocolError::Kind::malformed,
          fmt::format("a string in the body is longer than {} bytes", limits.max_string_bytes), "(body)",
          fmt::format("string of more than {} bytes", limits.max_string_bytes),
          fmt::format("strings at most {} bytes", limits.max_string_bytes)};
}

// One pass over the text: depth of [ and { outside strings, and string lengths
// (escapes counted as written: an upper bound of the decoded length).
void check_shape(std::string_view body, const ProtocolLimits& limits) {
  std::size_t depth = 0;
  bool in_string = false;
  bool escaped = false;
  std::size_t string_bytes = 0;
  for (const char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
        continue;
      }
      if (++string_bytes > limits.max_string_bytes) throw string_too_long(limits);
      continue;
    }
    if (c == '"') {
      in_string = true;
      string_bytes = 0;
    } else if (c == '[' || c == '{') {
      if (++depth > limits.max_depth) throw too_deep(limits);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

// The containers open at the parser's position, for naming a value in an
// error ("weights.cuda:0") and refusing a key given twice in one object.
class OpenContainers {
 public:
  bool on_event(nlohmann::json::parse_event_t event, const nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    switch (event) {
      case Event::object_start: frames_.push_back(Frame{true, {}, {}}); break;
      case Event::array_start: frames_.push_back(Frame{false, {}, {}}); break;
      case Event::object_end:
      case Event::array_end:
        if (!frames_.empty()) frames_.pop_back();
        break;
      case Event::key: {
        Frame& frame = frames_.back();
        frame.key = parsed.get<std::string>();
        if (!frame.keys.insert(frame.key).second) {
          throw ProtocolError(ProtocolError::Kind::malformed, fmt::format("{}: the key is given twice", path()), path(),
                              "(duplicate)", "keys must be unique in an object");
        }
        break;
      }
      case Event::value: break;
    }
    return true;
  }

  // "min_memory_bytes", "weights.cuda:0", "(body)" at the top level.
  std::string path() const {
    std::string out;
    for (const Frame& frame : frames_) {
      if (!frame.object) {
        out += "[]";
        continue;
      }
      if (!out.empty()) out += '.';
      out += frame.key;
    }
    return out.empty() ? "(body)" : out;
  }

 private:
  struct Frame {
    bool object;
    std::unordered_set<std::string> keys;
    std::string key;  // the current key of an object
  };
  std::vector<Frame> frames_;
};

}  // namespace

nlohmann::json parse_bounded_json(std::string_view body, const ProtocolLimits& limits) {
  check_shape(body, limits);
  OpenContainers open;
  try {
    return nlohmann::json::parse(body, [&open](int /*depth*/, nlohmann::json::parse_event_t event,
                                               nlohmann::json& parsed) { return open.on_event(event, parsed); });
  } catch (const nlohmann::json::parse_error& e) {
    throw ProtocolError(ProtocolError::Kind::malformed, fmt::format("the body is not valid JSON: {}", e.what()),
                        "(body)", std::string(body.substr(0, 40)),
                        "a JSON document (RFC 8259: NaN and Infinity are not JSON)");
  } catch (const nlohmann::json::out_of_range& e) {  // 406: a number beyond a double, such as 1e400
    throw ProtocolError(ProtocolError::Kind::invalid,
                        fmt::format("{}: the number is out of range: {}", open.path(), e.what()), open.path(),
                        "beyond ±1.8e308", "must be a finite number");
  }
}

}  // namespace gpucluster::agent
