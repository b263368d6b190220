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

// Takes the value of one member of the document's top-level object as the
// reader goes, instead of a document being built for it: the coordinator
// decodes the bulk of every report (its "samples") this way, with no
// allocation per key. The reader keeps every limit, the duplicate-key rule and
// the error paths inside that value; the sink sees, in document order:
//   - where a value starts with { or [: stream_container(is_object), true to
//     take its contents as further events, false to get it whole (built as a
//     document) through value();
//   - each key of a streamed object: key(name), false when the object already
//     had that key (the reader then refuses the document as it would any
//     duplicate key);
//   - each scalar, and each container it did not stream: value(json);
//   - the end of a streamed container: end_container().
// The document keeps the member's place with a null (so "missing" and the
// top-level duplicate check still hold). A sink records what it refuses and
// reports it after the read: the reader's own errors come first, as they do
// for every other member.
class JsonValueSink {
 public:
  JsonValueSink() = default;
  JsonValueSink(const JsonValueSink&) = delete;
  JsonValueSink& operator=(const JsonValueSink&) = delete;
  virtual ~JsonValueSink() = default;

  virtual bool stream_container(bool is_object) = 0;
  virtual bool key(std::string_view name) = 0;
  virtual void value(nlohmann::json&& value) = 0;
  virtual void end_container() = 0;
};

// The top-level member whose value goes to a sink.
struct StreamedMember {
  std::string_view key;
  JsonValueSink* sink = nullptr;
};

// One JSON document within limits. subject names it in error messages
// ("telemetry message", "request body"). Throws ProtocolError: malformed for
// bad JSON (NaN and Infinity literals included), a NUL byte, limits and
// duplicate keys; invalid for a number beyond a double (1e400).
nlohmann::json read_bounded_json(std::string_view body, const ProtocolLimits& limits, std::string_view subject,
                                 const StreamedMember& streamed = {});

}  // namespace gpucluster::agent
