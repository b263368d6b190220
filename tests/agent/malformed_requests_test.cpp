// The agent against malformed and hostile requests: a table of rows,
// one test each, all sent to ONE real `gpucluster agent` process that runs a
// simulated fleet, needs a token for POSTs and has a remote device (node-a's
// cuda:0, registered and fed one heartbeat through the seed's protocol).
//
// Every row is sent as raw bytes over a socket (so paths, methods, headers and
// bodies are exactly what the row says) and must get its 4xx status, never a
// 5xx, with the body {"error": {"code", "message", "field"}}; the agent's state
// (devices, cluster aggregate, the remote device's history) must be the same
// after the row as before it, and /healthz must still answer 200.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/agent_process.hpp"

namespace gpucluster::testing {
namespace {

using nlohmann::json;

constexpr const char* kToken = "malformed-table-token";

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 over a loopback socket.

struct Reply {
  int status = 0;  // 0: no answer
  std::string body;
  std::string error;  // why there is no answer
};

Reply exchange(int port, const std::string& request) {
  Reply reply;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    reply.error = "socket failed";
    return reply;
  }
  timeval timeout{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    reply.error = std::string("connect failed: ") + std::strerror(errno);
    ::close(fd);
    return reply;
  }
  // The server may answer (413) and stop reading before the whole body is
  // sent: a failed write ends the sending, and the answer is read anyway.
  for (std::size_t sent = 0; sent < request.size();) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  std::string raw;
  char buffer[16384];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    raw.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const std::size_t head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos || raw.size() < 12) {
    reply.error = "no HTTP answer (" + std::to_string(raw.size()) + " bytes): " + raw.substr(0, 200);
    return reply;
  }
  reply.status = std::atoi(raw.c_str() + 9);
  reply.body = raw.substr(head_end + 4);
  return reply;
}

// ---------------------------------------------------------------------------
// Message bodies: objects as ordered (key, raw JSON text) members, so that a
// row can put any text (NaN, 1e400, a duplicate key) where a value goes.

using Members = std::vector<std::pair<std::string, std::string>>;
const std::optional<std::string> kOmit = std::nullopt;

std::string object(const Members& members) {
  std::string text = "{";
  for (const auto& [key, raw] : members) {
    if (text.size() > 1) text += ", ";
    text += json(key).dump() + ": " + raw;
  }
  return text + "}";
}

// The members with key's value replaced by raw (appended when absent, removed when kOmit).
Members with(Members members, const std::string& key, const std::optional<std::string>& raw) {
  for (auto it = members.begin(); it != members.end(); ++it) {
    if (it->first != key) continue;
    if (raw) {
      it->second = *raw;
    } else {
      members.erase(it);
    }
    return members;
  }
  if (raw) members.emplace_back(key, *raw);
  return members;
}

std::string quoted(const std::string& text) {
  return json(text).dump();
}

Members envelope_members(const std::string& type, const std::string& payload) {
  return {{"type", quoted(type)}, {"version", "\"1.0\""}, {"timestamp", "1717171730.0"}, {"payload", payload}};
}

// A metrics message for node-a's cuda:0, newer than its newest sample: the
// agent accepts it as is (the control at the end checks that), so each row
// that changes one field is refused for that field alone.
Members metrics_payload() {
  return {{"device_id", "\"cuda:0\""},
          {"hostname", "\"node-a\""},
          {"timestamp", "1717171730.0"},
          {"memory_used_bytes", "43486543872"},
          {"memory_total_bytes", "85520809984"},
          {"compute_utilization_percent", "50.0"},
          {"power_watts", "300.0"},
          {"temperature_celsius", "60.0"},
          {"clock_rate_mhz", "1900.0"}};
}

std::string metrics_message() {
  return object(envelope_members("metrics", object(metrics_payload())));
}

// The metrics message with one payload field changed.
std::string metrics(const std::string& key, const std::optional<std::string>& raw) {
  return object(envelope_members("metrics", object(with(metrics_payload(), key, raw))));
}

// The metrics message with one envelope field changed.
std::string metrics_envelope(const std::string& key, const std::optional<std::string>& raw) {
  return object(with(envelope_members("metrics", object(metrics_payload())), key, raw));
}

Members heartbeat_payload() {
  return {{"device_id", "\"cuda:0\""},
          {"hostname", "\"node-a\""},
          {"metrics", object(with(metrics_payload(), "hostname", kOmit))},
          {"timestamp", "1717171730.0"},
          {"is_available", "true"},
          {"error_message", "null"}};
}

std::string heartbeat_message() {
  return object(envelope_members("heartbeat", object(heartbeat_payload())));
}

std::string heartbeat(const std::string& key, const std::optional<std::string>& raw) {
  return object(envelope_members("heartbeat", object(with(heartbeat_payload(), key, raw))));
}

// The heartbeat with one field of its metrics changed (and, optionally, availability).
std::string heartbeat_metrics(const std::string& key, const std::optional<std::string>& raw,
                              const std::string& is_available = "true") {
  Members payload =
      with(heartbeat_payload(), "metrics", object(with(with(metrics_payload(), "hostname", kOmit), key, raw)));
  payload = with(payload, "is_available", is_available);
  if (is_available == "false") payload = with(payload, "error_message", "\"GPU is lost\"");
  return object(envelope_members("heartbeat", object(payload)));
}

// A registration of a new remote device, node-b's cuda:0.
Members capabilities() {
  return {{"device_id", "\"cuda:0\""},
          {"device_type", "\"cuda\""},
          {"device_name", "\"NVIDIA H100 80GB HBM3\""},
          {"vendor", "\"NVIDIA\""},
          {"compute_units", "132"},
          {"memory_bandwidth_gbps", "3350.0"},
          {"max_memory_bytes", "85520809984"},
          {"driver_version", "\"535.129.03\""},
          {"supports_fp64", "true"},
          {"supports_tensor_cores", "true"}};
}

Members registration_payload() {
  return {{"hostname", "\"node-b\""},
          {"port", "8765"},
          {"device_id", "\"cuda:0\""},
          {"capabilities", object(capabilities())},
          {"timestamp", "1717171717.125"}};
}

std::string registration_message() {
  return object(envelope_members("device_registration", object(registration_payload())));
}

std::string registration(const std::string& key, const std::optional<std::string>& raw) {
  return object(envelope_members("device_registration", object(with(registration_payload(), key, raw))));
}

std::string registration_capability(const std::string& key, const std::optional<std::string>& raw) {
  return registration("capabilities", object(with(capabilities(), key, raw)));
}

// ---------------------------------------------------------------------------
// The table.

enum class Auth { token, none, custom };

struct Row {
  std::string name;  // the test's name: letters, digits and '_'
  std::string method;
  std::string target;
  std::string body;
  int status = 0;
  // The expected error.field: a string, JSON null, or not checked (absent).
  std::optional<json> field;
  Auth auth = Auth::token;
  std::string authorization;  // the header's value when auth is custom
  bool chunked = false;       // send the body with Transfer-Encoding: chunked
  bool no_length = false;     // send the body without Content-Length
};

// Shown by GoogleTest instead of the bytes (a row's body may be 10 MB).
void PrintTo(const Row& row, std::ostream* out) {
  *out << row.name << " (" << row.method << " " << row.target.substr(0, 80) << ", " << row.body.size()
       << " body bytes)";
}

std::string request_bytes(const Row& row) {
  std::string request = row.method + " " + row.target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  if (row.auth == Auth::token) request += std::string("Authorization: Bearer ") + kToken + "\r\n";
  if (row.auth == Auth::custom) request += "Authorization: " + row.authorization + "\r\n";
  const bool has_body = !row.body.empty() || row.method == "POST" || row.method == "PUT";
  if (has_body) request += "Content-Type: application/json\r\n";
  if (row.chunked) {
    request += "Transfer-Encoding: chunked\r\n\r\n";
    constexpr std::size_t kChunk = 64 * 1024;
    for (std::size_t at = 0; at < row.body.size(); at += kChunk) {
      const std::string chunk = row.body.substr(at, kChunk);
      std::ostringstream size;
      size << std::hex << chunk.size();
      request += size.str() + "\r\n" + chunk + "\r\n";
    }
    return request + "0\r\n\r\n";
  }
  if (has_body && !row.no_length) request += "Content-Length: " + std::to_string(row.body.size()) + "\r\n";
  return request + "\r\n" + row.body;
}

Row make_row(std::string name, std::string method, std::string target, std::string body, int status,
             std::optional<json> field) {
  Row row;
  row.name = std::move(name);
  row.method = std::move(method);
  row.target = std::move(target);
  row.body = std::move(body);
  row.status = status;
  row.field = std::move(field);
  return row;
}
Row post(std::string name, std::string target, std::string body, int status, std::optional<json> field) {
  return make_row(std::move(name), "POST", std::move(target), std::move(body), status, std::move(field));
}
Row telemetry(std::string name, std::string body, int status, std::optional<json> field) {
  return post(std::move(name), "/v1/telemetry", std::move(body), status, std::move(field));
}
Row select(std::string name, std::string body, int status, std::optional<json> field) {
  return post(std::move(name), "/v1/select", std::move(body), status, std::move(field));
}
Row plan(std::string name, std::string body, int status, std::optional<json> field) {
  return post(std::move(name), "/v1/plan", std::move(body), status, std::move(field));
}
Row get(std::string name, std::string target, int status, std::optional<json> field) {
  return make_row(std::move(name), "GET", std::move(target), {}, status, std::move(field));
}
Row with_auth(Row row, Auth auth, std::string authorization = {}) {
  row.auth = auth;
  row.authorization = std::move(authorization);
  return row;
}

const json kNull = json(nullptr);
const std::optional<json> kUnchecked = std::nullopt;

std::vector<Row> rows() {
  const std::string two_to_64 = "18446744073709551616";
  const std::string two_to_70 = "1180591620717411303424";
  const std::string long_id(300, 'x');  // past the 256-byte string limit
  std::vector<Row> table{
      // --- JSON itself -------------------------------------------------------
      telemetry("TelemetryEmptyBody", "", 400, json("body")),
      telemetry("TelemetryTruncatedJson", metrics_message().substr(0, metrics_message().size() / 2), 400, json("body")),
      telemetry("TelemetryJsonArrayBody", R"([{"type": "metrics"}])", 400, json("body")),
      telemetry("TelemetryNullBody", "null", 400, json("body")),
      telemetry("TelemetryStringBody", "\"metrics\"", 400, json("body")),
      telemetry("TelemetryTwoDocuments", metrics_message() + metrics_message(), 400, json("body")),
      telemetry("TelemetryNaNLiteral", metrics("power_watts", "NaN"), 400, json("body")),
      telemetry("TelemetryInfinityLiteral", metrics("power_watts", "Infinity"), 400, json("body")),
      telemetry("TelemetryNegativeInfinityLiteral", metrics("temperature_celsius", "-Infinity"), 400, json("body")),
      telemetry("TelemetryDeepNesting10000", std::string(10000, '['), 400, kUnchecked),
      telemetry("TelemetryDeepNestingInPayload", metrics("power_watts", std::string(200, '[') + std::string(200, ']')),
                400, kUnchecked),
      telemetry("TelemetryBody10MB", metrics_message() + std::string(10 * 1024 * 1024, ' '), 413, json("(body)")),
      [] {
        // Chunked bodies are refused before they are read (httplib would buffer them past the limit).
        Row row = telemetry("TelemetryChunkedBody2MB", std::string(2 * 1024 * 1024, ' ') + metrics_message(), 411,
                            json("Content-Length"));
        row.chunked = true;
        return row;
      }(),
      [] {
        Row row = telemetry("TelemetryChunkedSmallBody", metrics_message(), 411, json("Content-Length"));
        row.chunked = true;
        return row;
      }(),
      [] {
        Row row = telemetry("TelemetryWithoutContentLength", metrics_message(), 411, json("Content-Length"));
        row.no_length = true;
        return row;
      }(),
      telemetry("TelemetryDuplicateKey",
                object(with(envelope_members("metrics", object(metrics_payload())), "type",
                            "\"metrics\", \"type\": \"device_registration\"")),
                400, json("type")),
      telemetry("TelemetryStringPastLimit", metrics_envelope("comment", quoted(std::string(100'000, 'a'))), 400,
                kUnchecked),
      // --- the envelope --------------------------------------------------------
      telemetry("UnknownMessageType", metrics_envelope("type", "\"bogus\""), 400, json("type")),
      telemetry("TopologyTypeUnsupported", metrics_envelope("type", "\"topology\""), 400, json("type")),
      telemetry("TypeNotString", metrics_envelope("type", "3"), 400, json("type")),
      telemetry("Version2", metrics_envelope("version", "\"2.0\""), 400, json("version")),
      telemetry("VersionAsNumber", metrics_envelope("version", "1.0"), 400, json("version")),
      telemetry("MissingType", metrics_envelope("type", kOmit), 400, json("type")),
      telemetry("MissingVersion", metrics_envelope("version", kOmit), 400, json("version")),
      telemetry("MissingPayload", metrics_envelope("payload", kOmit), 400, json("payload")),
      telemetry("MissingEnvelopeTimestamp", metrics_envelope("timestamp", kOmit), 400, json("timestamp")),
      telemetry("EnvelopeTimestampString", metrics_envelope("timestamp", "\"now\""), 400, json("timestamp")),
      telemetry("PayloadArray", metrics_envelope("payload", "[1, 2]"), 400, json("payload")),
      telemetry("PayloadString", metrics_envelope("payload", "\"cuda:0\""), 400, json("payload")),
      telemetry("PayloadNull", metrics_envelope("payload", "null"), 400, json("payload")),
      // --- metrics: missing fields and wrong types -----------------------------
      telemetry("MetricsMissingDeviceId", metrics("device_id", kOmit), 400, json("payload.device_id")),
      telemetry("MetricsMissingMemoryTotal", metrics("memory_total_bytes", kOmit), 400,
                json("payload.memory_total_bytes")),
      telemetry("MetricsMissingMemoryUsed", metrics("memory_used_bytes", kOmit), 400,
                json("payload.memory_used_bytes")),
      telemetry("MetricsMissingTimestamp", metrics("timestamp", kOmit), 400, json("payload.timestamp")),
      telemetry("MetricsDeviceIdNumber", metrics("device_id", "0"), 400, json("payload.device_id")),
      telemetry("MetricsMemoryUsedString", metrics("memory_used_bytes", "\"43486543872\""), 400,
                json("payload.memory_used_bytes")),
      telemetry("MetricsUtilizationBoolean", metrics("compute_utilization_percent", "true"), 400,
                json("payload.compute_utilization_percent")),
      telemetry("MetricsPowerObject", metrics("power_watts", "{}"), 400, json("payload.power_watts")),
      telemetry("MetricsClockArray", metrics("clock_rate_mhz", "[1900]"), 400, json("payload.clock_rate_mhz")),
      telemetry("MetricsTimestampString", metrics("timestamp", "\"2024-05-31T16:15:30Z\""), 400,
                json("payload.timestamp")),
      telemetry("MetricsHostnameNumber", metrics("hostname", "7"), 400, json("payload.hostname")),
      // --- metrics: numbers out of range ---------------------------------------
      telemetry("MetricsMemoryUsed1e400", metrics("memory_used_bytes", "1e400"), 422,
                json("payload.memory_used_bytes")),
      telemetry("MetricsMemoryTotal2Pow64", metrics("memory_total_bytes", two_to_64), 422,
                json("payload.memory_total_bytes")),
      telemetry("MetricsMemoryTotal2Pow70", metrics("memory_total_bytes", two_to_70), 422,
                json("payload.memory_total_bytes")),
      telemetry("MetricsMemoryUsedNegative", metrics("memory_used_bytes", "-1"), 422,
                json("payload.memory_used_bytes")),
      telemetry("MetricsMemoryUsedFraction", metrics("memory_used_bytes", "1.5"), 422,
                json("payload.memory_used_bytes")),
      telemetry("MetricsPowerBeyondFloat", metrics("power_watts", "1e39"), 422, json("payload.power_watts")),
      telemetry("MetricsTimestampNegative", metrics("timestamp", "-1"), 422, json("payload.timestamp")),
      telemetry("MetricsTimestampYear3000", metrics("timestamp", "32503680000"), 422, json("payload.timestamp")),
      // The smallest double past model/time.hpp's one range, [0, 4102444800] s.
      telemetry("MetricsTimestampPastRangeEnd", metrics("timestamp", "4102444800.0000005"), 422,
                json("payload.timestamp")),
      // --- metrics: the core's rules -------------------------------------------
      telemetry("Utilization150", metrics("compute_utilization_percent", "150"), 422,
                json("compute_utilization_percent")),
      telemetry("UtilizationNegative", metrics("compute_utilization_percent", "-0.5"), 422,
                json("compute_utilization_percent")),
      telemetry("UsedExceedsTotal", metrics("memory_used_bytes", "85520809985"), 422, json("memory_used_bytes")),
      telemetry("MemoryTotalZero", metrics("memory_total_bytes", "0"), 422, json("memory_total_bytes")),
      telemetry("NegativePower", metrics("power_watts", "-5"), 422, json("power_watts")),
      telemetry("TemperatureBelowAbsoluteZero", metrics("temperature_celsius", "-300"), 422,
                json("temperature_celsius")),
      telemetry("NegativeClock", metrics("clock_rate_mhz", "-1"), 422, json("clock_rate_mhz")),
      telemetry("OutOfOrderTimestamp", metrics("timestamp", "1717171700.0"), 422, json("timestamp")),
      // --- metrics: which device ----------------------------------------------
      telemetry("UnregisteredDevice", metrics("device_id", "\"cuda:7\""), 404, json("payload.device_id")),
      telemetry("UnregisteredHost", metrics("hostname", "\"node-z\""), 404, json("payload.device_id")),
      telemetry("UnregisteredDeviceWithoutHost",
                object(envelope_members(
                    "metrics", object(with(with(metrics_payload(), "hostname", kOmit), "device_id", "\"rocm:3\"")))),
                404, json("payload.device_id")),
      telemetry("MetricsForALocalDevice", metrics("hostname", "\"home\""), 409, json("payload.device_id")),
      telemetry("DeviceIdPathTraversal", metrics("device_id", "\"../../etc/passwd\""), 422, json("payload.device_id")),
      telemetry("DeviceIdNul", metrics("device_id", "\"cuda:0\\u0000\""), 422, json("payload.device_id")),
      telemetry("DeviceIdControlCharacter", metrics("device_id", "\"cuda:\\u001b[31m0\""), 422,
                json("payload.device_id")),
      telemetry("DeviceIdEmpty", metrics("device_id", "\"\""), 422, json("payload.device_id")),
      telemetry("DeviceIdPastLengthLimit", metrics("device_id", quoted(long_id)), 400, json("payload.device_id")),
      telemetry("HostnameWithSlash", metrics("hostname", "\"node-a/cuda:0\""), 422, json("payload.hostname")),
      telemetry("DeviceIdDotDot", metrics("device_id", "\"..\""), 422, json("payload.device_id")),
      telemetry("DeviceIdDot", metrics("device_id", "\".\""), 422, json("payload.device_id")),
      // --- heartbeat -------------------------------------------------------------
      telemetry("HeartbeatAvailabilityString", heartbeat("is_available", "\"yes\""), 400, json("payload.is_available")),
      telemetry("HeartbeatMetricsArray", heartbeat("metrics", "[]"), 400, json("payload.metrics")),
      telemetry("HeartbeatErrorMessageNumber", heartbeat("error_message", "42"), 400, json("payload.error_message")),
      telemetry("HeartbeatMissingDeviceId", heartbeat("device_id", kOmit), 400, json("payload.device_id")),
      telemetry("HeartbeatMetricsOfAnotherDevice", heartbeat_metrics("device_id", "\"cuda:1\""), 422,
                json("payload.metrics.device_id")),
      // A refused sample must not mark the device unavailable either.
      telemetry("HeartbeatUnavailableWithUtilization150",
                heartbeat_metrics("compute_utilization_percent", "150", "false"), 422,
                json("compute_utilization_percent")),
      telemetry("HeartbeatOutOfOrderWhileUnavailable", heartbeat_metrics("timestamp", "1717171700.0", "false"), 422,
                json("timestamp")),
      telemetry("HeartbeatUnregisteredDevice",
                object(envelope_members("heartbeat", object(with(with(heartbeat_payload(), "device_id", "\"cuda:7\""),
                                                                 "metrics", "null")))),
                404, json("payload.device_id")),
      // --- registration -------------------------------------------------------
      telemetry("RegistrationHostnamePastLengthLimit", registration("hostname", quoted(long_id)), 400,
                json("payload.hostname")),
      telemetry("RegistrationHostnameWithSlash", registration("hostname", "\"node/b\""), 422, json("payload.hostname")),
      telemetry("RegistrationHostnamePathTraversal", registration("hostname", "\"../../etc\""), 422,
                json("payload.hostname")),
      telemetry("RegistrationHostnameEmpty", registration("hostname", "\"\""), 422, json("payload.hostname")),
      telemetry("RegistrationHostnameDotDot", registration("hostname", "\"..\""), 422, json("payload.hostname")),
      telemetry("RegistrationHostnameDot", registration("hostname", "\".\""), 422, json("payload.hostname")),
      telemetry("RegistrationHostnameNewline", registration("hostname", "\"node-b\\nX-Injected: 1\""), 422,
                json("payload.hostname")),
      telemetry("RegistrationMissingHostname", registration("hostname", kOmit), 400, json("payload.hostname")),
      telemetry("RegistrationDuplicateKey", registration("device_id", "\"cuda:0\", \"device_id\": \"cuda:1\""), 400,
                json("payload.device_id")),
      telemetry("RegistrationCapabilitiesString", registration("capabilities", "\"all\""), 400,
                json("payload.capabilities")),
      telemetry("RegistrationMissingCapabilities", registration("capabilities", kOmit), 400,
                json("payload.capabilities")),
      telemetry("RegistrationUnknownDeviceType", registration_capability("device_type", "\"quantum\""), 422,
                json("payload.capabilities.device_type")),
      telemetry("RegistrationMaxMemory2Pow70", registration_capability("max_memory_bytes", two_to_70), 422,
                json("payload.capabilities.max_memory_bytes")),
      telemetry("RegistrationMaxMemoryNegative", registration_capability("max_memory_bytes", "-1"), 422,
                json("payload.capabilities.max_memory_bytes")),
      // Found by this table: the protocol decoder's integer_at (now in
      // src/wire/protocol_decode.cpp) skipped the minimum for JSON numbers parsed as
      // unsigned, so max_memory_bytes 0 (and port 0) registered a device (202); fixed there.
      telemetry("RegistrationMaxMemoryZero", registration_capability("max_memory_bytes", "0"), 422,
                json("payload.capabilities.max_memory_bytes")),
      telemetry("RegistrationBandwidthNaN", registration_capability("memory_bandwidth_gbps", "NaN"), 400, json("body")),
      telemetry("RegistrationComputeUnitsNegative", registration_capability("compute_units", "-1"), 422,
                json("payload.capabilities.compute_units")),
      telemetry("RegistrationDeviceNameNumber", registration_capability("device_name", "4090"), 400,
                json("payload.capabilities.device_name")),
      telemetry("RegistrationCapabilitiesOfAnotherDevice", registration_capability("device_id", "\"cuda:1\""), 422,
                json("payload.capabilities.device_id")),
      telemetry("RegistrationPortZero", registration("port", "0"), 422, json("payload.port")),
      telemetry("RegistrationPort70000", registration("port", "70000"), 422, json("payload.port")),
      telemetry("RegistrationReplacingALocalDevice", registration("hostname", "\"home\""), 409,
                json("payload.device_id")),
      // --- the token ------------------------------------------------------------
      with_auth(telemetry("MissingToken", metrics_message(), 401, json("Authorization")), Auth::none),
      with_auth(telemetry("WrongToken", metrics_message(), 401, json("Authorization")), Auth::custom,
                "Bearer not-the-token"),
      with_auth(telemetry("TokenPrefixOnly", metrics_message(), 401, json("Authorization")), Auth::custom,
                "Bearer malformed"),
      with_auth(telemetry("EmptyBearer", metrics_message(), 401, json("Authorization")), Auth::custom, "Bearer "),
      with_auth(telemetry("BasicScheme", metrics_message(), 401, json("Authorization")), Auth::custom,
                "Basic dXNlcjptYWxmb3JtZWQtdGFibGUtdG9rZW4="),
      with_auth(telemetry("TokenWithoutScheme", metrics_message(), 401, json("Authorization")), Auth::custom, kToken),
      with_auth(select("SelectMissingToken", R"({"min_memory_bytes": 0})", 401, json("Authorization")), Auth::none),
      with_auth(plan("PlanWrongToken", R"({"items": 10})", 401, json("Authorization")), Auth::custom, "Bearer wrong"),
      // --- select ----------------------------------------------------------------
      select("SelectMemoryString", R"({"min_memory_bytes": "8GiB"})", 400, json("min_memory_bytes")),
      select("SelectMemoryNegative", R"({"min_memory_bytes": -1})", 422, json("min_memory_bytes")),
      select("SelectMemory1e400", R"({"min_memory_bytes": 1e400})", 422, json("min_memory_bytes")),
      select("SelectMemory2Pow64", R"({"min_memory_bytes": )" + two_to_64 + "}", 422, json("min_memory_bytes")),
      select("SelectMemoryNaNLiteral", R"({"min_memory_bytes": NaN})", 400, json("body")),
      select("SelectMemoryInfinityLiteral", R"({"min_memory_bytes": Infinity})", 400, json("body")),
      select("SelectEmptyBody", "", 400, json("body")),
      select("SelectArrayBody", "[]", 400, json("body")),
      select("SelectNullBody", "null", 400, json("body")),
      select("SelectTruncated", R"({"min_memory_bytes": 1)", 400, json("body")),
      select("SelectUnknownField", R"({"min_free_bytes": 0})", 400, json("min_free_bytes")),
      select("SelectDeepNesting", std::string(10000, '{'), 400, json("body")),
      // One error-path format for request bodies and protocol messages (src/wire/json_reader.hpp):
      // array elements are [i] and a limit names the value's path (was "min_memory_bytes[]" and "(body)").
      select("SelectNumberBeyondDoubleInArray", R"({"min_memory_bytes": [1, 1e400]})", 422,
             json("min_memory_bytes[1]")),
      // 16 arrays in the object: the 17th level is refused where it opens.
      select("SelectNestingPastLimit", R"({"min_memory_bytes": )" + std::string(16, '[') + std::string(16, ']') + "}",
             400, json("min_memory_bytes[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]")),
      plan("PlanWeightStringPastLimit",
           R"({"items": 10, "strategy": "capacity", "weights": {"home/cuda:0": ")" + std::string(300, 'a') + R"("}})",
           400, json("weights.home/cuda:0")),
      select("SelectDuplicateKey", R"({"min_memory_bytes": 0, "min_memory_bytes": 1})", 400, json("min_memory_bytes")),
      // --- plan ------------------------------------------------------------------
      plan("PlanItemsNegative", R"({"items": -1})", 422, json("items")),
      plan("PlanItemsString", R"({"items": "ten"})", 400, json("items")),
      plan("PlanItems2Pow70", R"({"items": )" + two_to_70 + "}", 422, json("items")),
      plan("PlanItemsFraction", R"({"items": 1.5})", 422, json("items")),
      plan("PlanItems1e400", R"({"items": 1e400})", 422, json("items")),
      plan("PlanDuplicateWeight",
           R"({"items": 10, "strategy": "capacity", "weights": {"home/cuda:0": 1, "home/cuda:0": 5}})", 400,
           json("weights.home/cuda:0")),
      plan("PlanUnknownStrategy", R"({"items": 10, "strategy": "random"})", 422, json("strategy")),
      plan("PlanStrategyNumber", R"({"items": 10, "strategy": 2})", 400, json("strategy")),
      plan("PlanWeightsArray", R"({"items": 10, "strategy": "capacity", "weights": [1, 2]})", 400, json("weights")),
      plan("PlanWeightNaNViaString", R"({"items": 10, "strategy": "capacity", "weights": {"home/cuda:0": "NaN"}})", 400,
           json("weights.home/cuda:0")),
      plan("PlanWeightForUnknownDevice", R"({"items": 10, "strategy": "capacity", "weights": {"home/cuda:9": 1}})", 422,
           json("weights[home/cuda:9]")),
      plan("PlanWeightPathTraversal", R"({"items": 10, "strategy": "capacity", "weights": {"../../etc/passwd": 1}})",
           422, kUnchecked),
      plan("PlanAllZeroWeights",
           R"({"items": 10, "strategy": "capacity", "weights": {"home/cuda:0": 0, "home/cuda:1": 0}})", 422,
           json("weights")),
      plan("PlanNegativeWeight", R"({"items": 10, "strategy": "capacity", "weights": {"home/cuda:0": -1}})", 422,
           kUnchecked),
      plan("PlanWeightsWithUniform", R"({"items": 10, "strategy": "uniform", "weights": {"home/cuda:0": 1}})", 422,
           json("weights")),
      plan("PlanMemoryWithoutLayers", R"({"strategy": "memory", "layer_bytes": 1024})", 422, json("layers")),
      plan("PlanLayerBytesNegative", R"({"strategy": "memory", "layers": 4, "layer_bytes": -1})", 422,
           json("layer_bytes")),
      plan("PlanMaxPerDeviceString", R"({"items": 10, "max_per_device": "5"})", 400, json("max_per_device")),
      plan("PlanUnknownField", R"({"items": 10, "nodes": 3})", 400, json("nodes")),
      plan("PlanBodyArray", R"([{"items": 10}])", 400, json("body")),
      // --- paths ------------------------------------------------------------------
      get("DevicePathTraversal", "/v1/devices/../../etc/passwd", 422, json("id")),
      get("DeviceEncodedPathTraversal", "/v1/devices/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 422, json("id")),
      get("DeviceDotDot", "/v1/devices/..", 422, json("id")),
      get("DeviceDot", "/v1/devices/.", 422, json("id")),
      get("DeviceEncodedDotDot", "/v1/devices/%2E%2E", 422, json("id")),
      get("DeviceHostThenDotDot", "/v1/devices/home/..", 422, json("id")),
      get("DeviceDotDotThenId", "/v1/devices/../cuda:0", 422, json("id")),
      get("HistoryOfDotDot", "/v1/devices/../history", 422, json("id")),
      get("DeviceUnknown", "/v1/devices/cuda:9", 404, json("device")),
      get("DeviceUnknownRemoteEncodedSlash", "/v1/devices/node-a%2Fcuda:9", 404, json("device")),
      get("DeviceEncodedSlashes", "/v1/devices/node-a%2F%2Fcuda:0", 422, json("id")),
      get("DeviceIdOf600Bytes", "/v1/devices/" + std::string(600, 'a'), 400, json("id")),
      get("DeviceIdOf9000BytesUriTooLong", "/v1/devices/" + std::string(9000, 'a'), 414, kNull),
      get("DeviceIdWithNul", "/v1/devices/cuda:0%00", 422, json("id")),
      get("DeviceIdWithControlCharacter", "/v1/devices/cuda%1B:0", 422, json("id")),
      get("HistoryPathTraversal", "/v1/devices/..%2F..%2Fetc%2Fshadow/history", 422, json("id")),
      get("HistoryLimitNegative", "/v1/devices/node-a/cuda:0/history?limit=-1", 400, json("limit")),
      get("HistoryLimitExponent", "/v1/devices/node-a/cuda:0/history?limit=1e9", 400, json("limit")),
      get("HistoryLimitText", "/v1/devices/node-a/cuda:0/history?limit=abc", 400, json("limit")),
      get("HistoryLimitEmpty", "/v1/devices/node-a/cuda:0/history?limit=", 400, json("limit")),
      get("HistoryLimitZero", "/v1/devices/node-a/cuda:0/history?limit=0", 422, json("limit")),
      get("HistoryLimitBillion", "/v1/devices/node-a/cuda:0/history?limit=1000000000", 422, json("limit")),
      get("HistoryLimitPast2Pow64", "/v1/devices/node-a/cuda:0/history?limit=" + two_to_70, 400, json("limit")),
      get("HistoryOfUnknownDevice", "/v1/devices/node-a/cuda:9/history", 404, json("device")),
      // --- routes and methods -------------------------------------------------------
      get("UnknownRoute", "/v2/nothing", 404, kNull),
      get("DevicesTrailingSlash", "/v1/devices/", 404, kNull),
      get("EtcPasswdRoute", "/../../etc/passwd", 404, kNull),
      get("GetOnSelect", "/v1/select", 405, json("method")),
      get("GetOnTelemetry", "/v1/telemetry", 405, json("method")),
      post("PostOnDevices", "/v1/devices", "{}", 405, json("method")),
      post("PostOnHealthz", "/healthz", "{}", 405, json("method")),
      make_row("DeleteDevice", "DELETE", "/v1/devices/node-a/cuda:0", {}, 405, json("method")),
      make_row("PutTelemetry", "PUT", "/v1/telemetry", metrics_message(), 405, json("method")),
      make_row("UnknownMethod", "BREW", "/healthz", {}, 400, json("method")),
  };
  return table;
}

// ---------------------------------------------------------------------------
// One agent for the whole table.

std::string read_file(const std::string& path) {
  std::ifstream file(path);
  std::stringstream content;
  content << file.rdbuf();
  return content.str();
}

class AgentEnvironment : public ::testing::Environment {
 public:
  static AgentProcess* agent() { return agent_.get(); }
  static std::string& setup_error() { return setup_error_; }

  void SetUp() override {
    token_path_ = std::filesystem::temp_directory_path() / ("gpucluster-malformed-token-" + std::to_string(::getpid()));
    {
      std::ofstream token(token_path_);
      token << kToken << "\n";
    }
    std::filesystem::permissions(token_path_, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    // A short interval keeps the local devices fresh (plans need usable devices);
    // the simulated fleet's samples differ only in their timestamps, which the
    // state comparison leaves out. The seed host registered below must not go
    // suspect while the table runs (its node_state is part of the state
    // compared; a slow sanitizer run takes longer than the default 3 s).
    agent_ = std::make_unique<AgentProcess>(std::vector<std::string>{
        "--fleet", source_path("examples/fleet-home.json"), "--token-file", token_path_.string(), "--interval", "1s",
        "--suspect-after", "1h", "--evict-after", "2h", "--forget-after", "3h"});
    auto client = agent_->client();
    const httplib::Headers auth{{"Authorization", std::string("Bearer ") + kToken}};
    for (const char* name : {"registration.json", "heartbeat.json"}) {
      const auto result = client.Post(
          "/v1/telemetry", auth, read_file(source_path(std::string("examples/protocol/") + name)), "application/json");
      if (!result || result->status != 202) {
        setup_error_ = std::string(name) + " was not accepted: " + (result ? result->body : "no answer");
        return;
      }
    }
  }

  void TearDown() override {
    if (!agent_) return;
    EXPECT_TRUE(agent_->running()) << "the agent died during the table:\n" << agent_->stderr_text();
    if (agent_->running() && setup_error_.empty()) {
      // The controls: the messages each row changed one field of are accepted
      // as they are, so every row was refused for its change alone.
      auto client = agent_->client();
      const httplib::Headers auth{{"Authorization", std::string("Bearer ") + kToken}};
      for (const auto& [what, body] :
           {std::pair{"metrics", metrics_message()}, std::pair{"heartbeat", heartbeat_message()},
            std::pair{"registration", registration_message()}}) {
        const auto result = client.Post("/v1/telemetry", auth, body, "application/json");
        ASSERT_TRUE(result) << what;
        EXPECT_EQ(result->status, 202) << what << ": " << result->body;
      }
      const auto planned =
          client.Post("/v1/plan", auth, R"({"items": 10, "strategy": "capacity", "weights": {"home/cuda:0": 1}})",
                      "application/json");
      ASSERT_TRUE(planned);
      EXPECT_EQ(planned->status, 200) << planned->body;
      const int status = agent_->stop(SIGTERM);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << agent_->stderr_text();
    }
    agent_.reset();
    std::error_code ignored;
    std::filesystem::remove(token_path_, ignored);
  }

 private:
  static std::unique_ptr<AgentProcess> agent_;
  static std::string setup_error_;
  std::filesystem::path token_path_;
};
std::unique_ptr<AgentProcess> AgentEnvironment::agent_;
std::string AgentEnvironment::setup_error_;

const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new AgentEnvironment);

json get_json(httplib::Client& client, const std::string& path) {
  const auto result = client.Get(path);
  if (!result) return json{{"no answer", path}};
  if (result->status != 200) return json{{"status", result->status}, {"path", path}, {"body", result->body}};
  return json::parse(result->body, nullptr, false);
}

// What a row must not change: every device (the local devices' sample
// timestamps left out: the background sampler moves them), the cluster
// aggregate (its timestamp likewise) and the remote device's whole history.
json state_of(AgentProcess& agent) {
  auto client = agent.client();
  json devices = get_json(client, "/v1/devices");
  if (devices.is_array()) {
    for (json& device : devices) {
      if (device.value("backend", "") != "remote" && device["metrics"].is_object())
        device["metrics"].erase("timestamp");
    }
  }
  json cluster = get_json(client, "/v1/cluster");
  if (cluster.is_object()) cluster.erase("timestamp");
  return json{{"devices", std::move(devices)},
              {"cluster", std::move(cluster)},
              {"remote_history", get_json(client, "/v1/devices/node-a/cuda:0/history")}};
}

class MalformedRequest : public ::testing::TestWithParam<Row> {};

TEST_P(MalformedRequest, IsRefusedWithoutChangingState) {
  AgentProcess* agent = AgentEnvironment::agent();
  ASSERT_NE(agent, nullptr);
  ASSERT_TRUE(AgentEnvironment::setup_error().empty()) << AgentEnvironment::setup_error();
  ASSERT_TRUE(agent->running());
  const Row& row = GetParam();

  const json before = state_of(*agent);
  ASSERT_TRUE(before["devices"].is_array()) << before.dump();
  ASSERT_EQ(before["remote_history"]["samples"].size(), 1U) << before.dump();

  const Reply reply = exchange(agent->port(), request_bytes(row));
  ASSERT_NE(reply.status, 0) << reply.error;
  EXPECT_LT(reply.status, 500) << reply.body;
  EXPECT_EQ(reply.status, row.status) << reply.body.substr(0, 2000);

  // The error shape (checked without stopping, so the state is compared whatever the answer).
  const json body = json::parse(reply.body, nullptr, false);
  const bool error_shape = body.is_object() && body.contains("error") && body["error"].is_object();
  EXPECT_TRUE(error_shape) << "not the error shape: " << reply.body.substr(0, 2000);
  if (error_shape) {
    const json& error = body["error"];
    EXPECT_TRUE(error.contains("code") && error["code"].is_string()) << error.dump();
    EXPECT_TRUE(error.contains("message") && error["message"].is_string()) << error.dump();
    EXPECT_TRUE(error.contains("field") && (error["field"].is_string() || error["field"].is_null())) << error.dump();
    if (row.field) {
      EXPECT_EQ(error.value("field", json()), *row.field) << error.dump();
    }
  }

  const json after = state_of(*agent);
  EXPECT_EQ(before, after) << "state changed: " << json::diff(before, after).dump();

  auto client = agent->client();
  const auto health = client.Get("/healthz");
  ASSERT_TRUE(health) << "the agent stopped answering";
  EXPECT_EQ(health->status, 200) << health->body;
  EXPECT_TRUE(agent->running()) << agent->stderr_text();
}

INSTANTIATE_TEST_SUITE_P(Table, MalformedRequest, ::testing::ValuesIn(rows()),
                         [](const ::testing::TestParamInfo<Row>& row_info) { return row_info.param.name; });

TEST(MalformedRequestTable, HasAtLeastFortyRowsWithDistinctNames) {
  const std::vector<Row> table = rows();
  EXPECT_GE(table.size(), 40U);
  std::set<std::string> names;
  for (const Row& row : table) EXPECT_TRUE(names.insert(row.name).second) << row.name;
}

}  // namespace
}  // namespace gpucluster::testing
