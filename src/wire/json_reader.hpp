#pragma once
// The agent's one bounded JSON reader, for protocol messages and request
// bodies alike (/v1/telemetry, /v1/select, /v1/plan). RapidJSON's SAX reader
// in iterative mode (no input can exhaust the stack) feeds a builder that
// refuses, as soon as it sees them, a body past max_body_bytes, nesting past
// max_depth, strings or keys longer than max_string_bytes and duplicate keys;
// numbers get nlohmann's typing (integers that fit 64 bits stay integers).
//
// Errors name the value by its JSON path, one format for every route:
// "body" for the document as a whole, "payload.metrics.power_watts" for an
// object member, "payload.list[2]" for an array element.
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "gpucluster/wire/protocol.hpp"

namespace gpucluster::agent {

// The error of a refused document: message "<kind> <subject>: <field> = <value> (<rule>)",
// e.g. "malformed request body: min_memory_bytes = (duplicate) (keys must be unique in an object)".
ProtocolError json_error(ProtocolError::Kind kind, std::string_view subject, const std::string& field,
                         const std::string& value, const std::string& rule);

// One JSON document within limits. subject names it in error messages
// ("telemetry message", "request body"). Throws ProtocolError: malformed for
// bad JSON (NaN and Infinity literals included), a NUL byte, limits and
// duplicate keys; invalid for a number beyond a double (1e400).
nlohmann::json read_bounded_json(std::string_view body, const ProtocolLimits& limits, std::string_view subject);

}  // namespace gpucluster::agent
