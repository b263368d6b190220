#pragma once
// The cluster's report (format 2): one batched message per node per interval,
// from an agent that joined (`gpucluster agent --join URL`) to a coordinator
// (`POST /v2/report`), and the coordinator's answer (the ack). docs/protocol.md
// "Reports (v2)" is the contract. Parsing is a pure function of the body, so
// the fuzzer, the coordinator and the agent (reading an ack) run the same code:
// the bounded JSON reader (src/wire/json_reader.cpp), then
// src/wire/report_decode.cpp; writing is src/wire/report_encode.cpp.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gpucluster/model/device.hpp"
#include "gpucluster/model/sample.hpp"
#include "gpucluster/wire/protocol.hpp"

namespace gpucluster::agent {

inline constexpr int kReportFormat = 2;

// Bounds on one report, past which it is refused whole (422 device_limit or
// sample limit) before anything is stored. The body itself is bounded by
// ProtocolLimits (1 MiB, depth 16, strings 256).
struct ReportLimits {
  std::size_t max_devices = 256;  // inventory entries (and keys of samples/unavailable/dropped)
  std::size_t max_samples_per_device = 600;
  std::size_t max_samples = 8192;  // over every device of one report
};

// Who sent the report.
struct ReportNode {
  std::string id;                  // UUID text: 36 characters, lowercase hex digits and dashes
  std::uint64_t incarnation = 0;   // 1 … 2^63-1, grows on every start of the node
  std::string name;                // display name (an identifier)
  std::string agent_version;       // ≤ 64 bytes
  std::optional<std::string> url;  // "http://host:port" the node's own API is reached at
  std::optional<int> port;         // without url: the node listens on the sender's address, this port

  bool operator==(const ReportNode&) const = default;
};

// The four times of the previous exchange on this link (NTP's on-wire
// calculation): t0 the agent sent, r the coordinator received, t it replied,
// t1 the agent received (r and t are echoed from that exchange's ack).
struct ClockExchange {
  Timestamp t0{}, r{}, t{}, t1{};
  bool operator==(const ClockExchange&) const = default;
};

struct Report {
  ReportNode node;
  std::uint64_t seq = 0;  // ≥ 1, strictly increasing per (node, incarnation)
  Timestamp sent_at{};    // the agent's wall clock when it wrote the report
  std::optional<ClockExchange> clock;
  std::uint32_t interval_ms = 1000;     // 100 … 60000
  std::uint64_t inventory_version = 0;  // ≥ 1; grows when the device list changes
  // Present on a change, a new incarnation, a new coordinator epoch, or when
  // the coordinator asked. DeviceInfo::key.host is empty on the wire (the
  // coordinator chooses the host part); key.local_id is "device_id", unique.
  std::optional<std::vector<DeviceInfo>> inventory;
  std::map<std::string, std::string> unavailable;      // local id → reason (current condition)
  std::map<std::string, std::vector<Sample>> samples;  // local id → samples, oldest first
  std::map<std::string, std::uint64_t> dropped;        // local id → samples the agent's outbox dropped
  bool leaving = false;                                // the node is shutting down

  bool operator==(const Report&) const = default;
};

// The coordinator's answer to an accepted report (HTTP 200).
struct ReportAck {
  std::uint64_t ack = 0;             // the report's seq
  std::string coordinator;           // the coordinator's node id ("" when it has none)
  std::string epoch;                 // random per coordinator process: a new one means it restarted
  std::uint32_t interval_ms = 1000;  // the interval the coordinator wants
  bool inventory_required = false;   // send the full inventory next time
  std::string host;                  // the host part the node's device keys got
  std::string state;                 // the node's state: "alive"
  std::uint64_t accepted = 0, duplicates = 0, rejected = 0;  // samples
  std::vector<std::string> rejections;                       // the first 16 rejected samples' reasons
  Timestamp received_at{};                                   // coordinator wall clock on receipt (r)
  Timestamp replied_at{};                                    // coordinator wall clock when it answered (t)

  bool operator==(const ReportAck&) const = default;
};

// Parses and checks one report. Errors are ProtocolError (malformed → 400:
// bad JSON, wrong types, missing fields, "report" ≠ 2; invalid → 422: ranges,
// identifiers, limits), naming the field by its JSON path
// ("samples.cuda:0[3].power_watts"). Never throws anything else (fuzzed).
Report parse_report(std::string_view body, const ProtocolLimits& limits = {}, const ReportLimits& report_limits = {});
std::string encode_report(const Report& report);

// The agent reads the ack with the same rules (ProtocolError on anything else).
ReportAck parse_report_ack(std::string_view body, const ProtocolLimits& limits = {});
std::string encode_report_ack(const ReportAck& ack);

// The error code (and so the HTTP status) of a refused report, from the
// ProtocolError that parse_report threw: malformed → 400, unsupported_version
// ("report" present but not 2) → 400, invalid_value → 422, device_limit (a
// ReportLimits bound: devices, samples per device, samples) → 422. A body
// past ProtocolLimits::max_body_bytes is the HTTP layer's 413 before parsing.
enum class ReportErrorCode : std::uint8_t { malformed, unsupported_version, invalid_value, device_limit };
ReportErrorCode report_error_code(const ProtocolError& error) noexcept;
const char* to_string(ReportErrorCode code) noexcept;

// The rule of a refused "report" field, and the text that every ReportLimits
// rule names its bound with ("must hold at most 600 samples (ReportLimits::max_samples_per_device)").
inline constexpr std::string_view kUnsupportedReportRule = "must be the integer 2 (supported formats: [2])";
inline constexpr std::string_view kReportLimitRulePrefix = "ReportLimits::";

// True for "3f1c2a9b-0c1d-4e5f-8a9b-0c1d2e3f4a5b" (36 characters, lowercase).
bool is_uuid_text(std::string_view text) noexcept;

}  // namespace gpucluster::agent
