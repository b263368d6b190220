#pragma once
// JSON request bodies parsed within limits: nesting depth is checked by a
// linear scan before the (recursive) parser runs, so hostile input such as a
// megabyte of '[' cannot exhaust the stack.
#include <string_view>

#include <nlohmann/json.hpp>

#include "gpucluster/agent/protocol.hpp"

namespace gpucluster::agent {

// Throws ProtocolError (malformed) for invalid JSON, nesting past
// limits.max_depth or a string/key longer than limits.max_string_bytes.
nlohmann::json parse_bounded_json(std::string_view body, const ProtocolLimits& limits);

}  // namespace gpucluster::agent
