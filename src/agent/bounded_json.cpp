#include "gpucluster/agent/bounded_json.hpp"

#include <string>

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

}  // namespace

nlohmann::json parse_bounded_json(std::string_view body, const ProtocolLimits& limits) {
  check_shape(body, limits);
  try {
    return nlohmann::json::parse(body);
  } catch (const nlohmann::json::parse_error& e) {
    throw ProtocolError(ProtocolError::Kind::malformed, fmt::format("the body is not valid JSON: {}", e.what()),
                        "(body)", std::string(body.substr(0, 40)),
                        "a JSON document (RFC 8259: NaN and Infinity are not JSON)");
  }
}

}  // namespace gpucluster::agent
