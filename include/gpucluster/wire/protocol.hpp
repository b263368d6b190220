#pragma once
// The seed's JSON telemetry protocol between hosts:
// envelope {"type", "version": "1.0", "timestamp", "payload"} with the message
// types device_registration, heartbeat and metrics. Parsing is a pure function
// of the request body, so the fuzzer and the agent run the same code: the
// agent's bounded JSON reader (src/wire/json_reader.cpp), then the decoding
// (src/wire/protocol_decode.cpp); writing is src/wire/protocol_encode.cpp.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json_fwd.hpp>

#include "gpucluster/model/device.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/sample.hpp"

namespace gpucluster::agent {

inline constexpr std::string_view kProtocolVersion = "1.0";

// Bounds on what a message may hold; a body past any of them is refused
// before anything is stored.
struct ProtocolLimits {
  std::size_t max_body_bytes = 1 << 20;  // the HTTP layer answers 413 past this
  std::size_t max_depth = 16;            // JSON nesting
  std::size_t max_string_bytes = 256;    // any string value or key
};

// device_registration: registers (or updates) device_id under hostname.
struct DeviceRegistration {
  DeviceInfo info;  // info.key = {payload.hostname, payload.device_id}; backend "remote"
  std::optional<int> port;
  Timestamp timestamp{};

  bool operator==(const DeviceRegistration&) const = default;
};

// heartbeat: liveness, availability and (optionally) a sample.
struct Heartbeat {
  std::string device_id;
  std::optional<std::string> hostname;  // our extension; the seed's clients omit it
  std::optional<Sample> sample;         // from payload.metrics when present and not null
  bool is_available = true;
  std::string error_message;  // empty when none
  Timestamp timestamp{};

  bool operator==(const Heartbeat&) const = default;
};

// metrics: one sample.
struct MetricsReport {
  std::string device_id;
  std::optional<std::string> hostname;  // our extension
  Sample sample;

  bool operator==(const MetricsReport&) const = default;
};

using TelemetryMessage = std::variant<DeviceRegistration, Heartbeat, MetricsReport>;

// Every message compares member by member (gauges and timestamps exactly), so
// the round-trip tests and the fuzzer hold
// parse_telemetry_message(to_protocol_json(m, t).dump()) == m.

// Timestamps on the wire are float seconds since the epoch (Python's
// time.time()), accepted within model/time.hpp's range [0, kMaxTimestampSeconds]
// (1970 to 2100) and kept to the nanosecond nearest to the double.
using gpucluster::kMaxTimestampSeconds;

// How a message was refused, mapped to an HTTP status by the agent:
// malformed → 400 (bad JSON, wrong type, unknown type/version, missing field,
// too deep, string too long), invalid → 422 (well-formed but breaks a rule:
// non-finite or out-of-range number, unknown device type).
class ProtocolError : public InputError {
 public:
  enum class Kind { malformed, invalid };
  ProtocolError(Kind kind, const std::string& message, const std::string& field, const std::string& value,
                const std::string& rule);
  Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

// "malformed" or "invalid".
const char* to_string(ProtocolError::Kind kind) noexcept;

// Parses and checks one message. Field names in errors are JSON paths such as
// "payload.metrics.power_watts". Throws ProtocolError; never anything else for
// any input (the fuzzer holds it to that).
TelemetryMessage parse_telemetry_message(std::string_view body, const ProtocolLimits& limits = {});

// The other direction, for clients and round-trip tests: the envelope of a
// message, with the seed's field names (unavailable fields are null).
nlohmann::json to_protocol_json(const TelemetryMessage& message, Timestamp envelope_timestamp);

}  // namespace gpucluster::agent
