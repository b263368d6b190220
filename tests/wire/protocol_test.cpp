#include "gpucluster/wire/protocol.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <initializer_list>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "gpucluster/export/json.hpp"

namespace gpucluster::agent {
namespace {

using nlohmann::json;
using Kind = ProtocolError::Kind;

const char* const kExamples[] = {"registration.json", "heartbeat.json", "heartbeat-unavailable.json", "metrics.json",
                                 "metrics-partial.json"};

std::string read_example(const std::string& name) {
  std::ifstream in(std::string(GPUCLUSTER_SOURCE_DIR) + "/examples/protocol/" + name);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Concatenation without operator+ on string literals (GCC 12 -Wrestrict false positives).
std::string cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (const std::string_view part : parts) out.append(part);
  return out;
}

Timestamp at_ns(std::int64_t nanoseconds) {
  return Timestamp{std::chrono::nanoseconds{nanoseconds}};
}

json example(const std::string& name) {
  return json::parse(read_example(name));
}

// The example with one field (a JSON pointer) replaced.
std::string edit(const std::string& name, const std::string& pointer, const json& value) {
  json j = example(name);
  j[json::json_pointer(pointer)] = value;
  return j.dump();
}

// The example with one field left out.
std::string erase(const std::string& name, const std::string& pointer) {
  json j = example(name);
  const json::json_pointer field(pointer);
  j[field.parent_pointer()].erase(field.back());
  return j.dump();
}

// The example with one field's value written as raw text (not necessarily JSON).
std::string raw(const std::string& name, const std::string& pointer, const std::string& text) {
  std::string body = edit(name, pointer, "@RAW@");
  body.replace(body.find("\"@RAW@\""), 7, text);
  return body;
}

template <class T>
T parse_as(std::string_view body) {
  const TelemetryMessage message = parse_telemetry_message(body);
  EXPECT_TRUE(std::holds_alternative<T>(message));
  return std::get<T>(message);
}

// Valid UTF-8: the agent puts error texts into JSON answers, where invalid UTF-8 throws.
bool dumps_as_json(const std::string& text) {
  try {
    (void)json(text).dump();
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

std::optional<ProtocolError> refusal(std::string_view body, const ProtocolLimits& limits = {}) {
  try {
    (void)parse_telemetry_message(body, limits);
  } catch (const ProtocolError& e) {
    return e;
  }
  return std::nullopt;
}

void expect_refused(std::string_view body, Kind kind, const std::string& field, const ProtocolLimits& limits = {}) {
  const auto error = refusal(body, limits);
  ASSERT_TRUE(error.has_value()) << "accepted: " << body.substr(0, 200);
  EXPECT_EQ(error->kind(), kind) << error->what();
  EXPECT_EQ(error->field(), field) << error->what();
  EXPECT_FALSE(error->value().empty()) << error->what();
  EXPECT_FALSE(error->rule().empty()) << error->what();
  EXPECT_NE(std::string(error->what()).find(field), std::string::npos) << error->what();
  EXPECT_TRUE(dumps_as_json(error->what()) && dumps_as_json(error->field()) && dumps_as_json(error->value()) &&
              dumps_as_json(error->rule()));
}

// ---------------------------------------------------------------------------
// Accepted messages.

TEST(Protocol, RegistrationExample) {
  const auto r = parse_as<DeviceRegistration>(read_example("registration.json"));
  EXPECT_EQ(r.info.key, (DeviceKey{"node-a", "cuda:0"}));
  EXPECT_EQ(r.info.backend, "remote");
  EXPECT_EQ(r.info.kind, DeviceKind::cuda);
  EXPECT_EQ(r.info.name, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(r.info.vendor, "NVIDIA");
  EXPECT_EQ(r.info.memory_total_bytes, 85520809984ULL);
  EXPECT_EQ(r.info.compute_units, 132U);
  EXPECT_EQ(r.info.memory_bandwidth_gbps, 3350.0);
  EXPECT_EQ(r.info.driver_version, "535.129.03");
  EXPECT_EQ(r.info.supports_fp64, true);
  EXPECT_EQ(r.info.supports_tensor_cores, true);
  EXPECT_EQ(r.port, 8765);
  EXPECT_EQ(r.timestamp, at_ns(1717171717125000000));
  EXPECT_FALSE(r.info.uuid.has_value());
}

TEST(Protocol, HeartbeatExample) {
  const auto h = parse_as<Heartbeat>(read_example("heartbeat.json"));
  EXPECT_EQ(h.device_id, "cuda:0");
  EXPECT_FALSE(h.hostname.has_value());
  EXPECT_TRUE(h.is_available);
  EXPECT_EQ(h.error_message, "");
  EXPECT_EQ(h.timestamp, at_ns(1717171720500000000));
  ASSERT_TRUE(h.sample.has_value());
  EXPECT_EQ(h.sample->timestamp, at_ns(1717171720500000000));
  EXPECT_EQ(h.sample->memory_used_bytes, 42949672960);
  EXPECT_EQ(h.sample->memory_total_bytes, 85520809984);
  EXPECT_EQ(h.sample->utilization_percent, 87.5F);
  EXPECT_EQ(h.sample->power_watts, 612.25F);
  EXPECT_EQ(h.sample->temperature_celsius, 67.0F);
  EXPECT_EQ(h.sample->clock_mhz, 1980.0F);
}

TEST(Protocol, UnavailableHeartbeatExample) {
  const auto h = parse_as<Heartbeat>(read_example("heartbeat-unavailable.json"));
  EXPECT_FALSE(h.is_available);
  EXPECT_FALSE(h.sample.has_value());
  EXPECT_EQ(h.error_message, "NVML: GPU is lost (Xid 79); reset required");
}

TEST(Protocol, MetricsExample) {
  const auto m = parse_as<MetricsReport>(read_example("metrics.json"));
  EXPECT_EQ(m.device_id, "cuda:0");
  EXPECT_EQ(m.sample.timestamp, at_ns(1717171721250000000));
  EXPECT_EQ(m.sample.memory_used_bytes, 43486543872);
  EXPECT_EQ(m.sample.utilization_percent, 91.0F);
  EXPECT_EQ(m.sample.power_watts, 655.5F);
  EXPECT_EQ(m.sample.temperature_celsius, 69.0F);
  EXPECT_EQ(m.sample.clock_mhz, 1980.0F);
}

TEST(Protocol, NullGaugesAreUnavailableNeverZero) {
  const auto m = parse_as<MetricsReport>(read_example("metrics-partial.json"));
  EXPECT_EQ(m.sample.utilization_percent, 88.5F);
  EXPECT_FALSE(m.sample.power_watts.has_value());
  EXPECT_FALSE(m.sample.temperature_celsius.has_value());
  EXPECT_FALSE(m.sample.clock_mhz.has_value());
}

TEST(Protocol, AbsentGaugesAreUnavailable) {
  json j = example("metrics.json");
  for (const char* key : {"compute_utilization_percent", "power_watts", "temperature_celsius", "clock_rate_mhz"}) {
    j["payload"].erase(key);
  }
  const auto m = parse_as<MetricsReport>(j.dump());
  EXPECT_FALSE(m.sample.utilization_percent || m.sample.power_watts || m.sample.temperature_celsius ||
               m.sample.clock_mhz);
  EXPECT_EQ(m.sample.memory_total_bytes, 85520809984);
}

TEST(Protocol, RealZeroStaysZero) {
  const auto m = parse_as<MetricsReport>(edit("metrics.json", "/payload/compute_utilization_percent", 0));
  EXPECT_EQ(m.sample.utilization_percent, 0.0F);
}

TEST(Protocol, IntegralFloatsAreAcceptedForIntegers) {
  json j = example("metrics.json");
  j["payload"]["memory_used_bytes"] = 4.0e10;
  j["payload"]["memory_total_bytes"] = 8.0e10;
  const auto m = parse_as<MetricsReport>(j.dump());
  EXPECT_EQ(m.sample.memory_used_bytes, 40000000000);
  EXPECT_EQ(m.sample.memory_total_bytes, 80000000000);
  const auto r = parse_as<DeviceRegistration>(edit("registration.json", "/payload/port", 8765.0));
  EXPECT_EQ(r.port, 8765);
}

TEST(Protocol, NumbersAreReadAsJsonWritesThem) {
  // Exponents and signs as JSON allows them; an underflow reads as zero, as strtod does.
  const auto exponent = parse_as<MetricsReport>(raw("metrics.json", "/payload/memory_used_bytes", "4E10"));
  EXPECT_EQ(exponent.sample.memory_used_bytes, 40000000000);
  const auto plus = parse_as<MetricsReport>(raw("metrics.json", "/payload/memory_used_bytes", "4.0e+10"));
  EXPECT_EQ(plus.sample.memory_used_bytes, 40000000000);
  const auto negative_zero = parse_as<MetricsReport>(raw("metrics.json", "/payload/compute_utilization_percent", "-0"));
  EXPECT_EQ(negative_zero.sample.utilization_percent, 0.0F);
  const auto tiny = parse_as<MetricsReport>(raw("metrics.json", "/payload/power_watts", "1e-400"));
  EXPECT_EQ(tiny.sample.power_watts, 0.0F);
  // Integers past int64 but within uint64, and past uint64 (read as doubles): out of range, named.
  expect_refused(raw("metrics.json", "/payload/memory_total_bytes", "9223372036854775808"), Kind::invalid,
                 "payload.memory_total_bytes");
  expect_refused(raw("metrics.json", "/payload/memory_used_bytes", "-9223372036854775809"), Kind::invalid,
                 "payload.memory_used_bytes");
}

TEST(Protocol, NumbersJsonDoesNotAllowAreMalformed) {
  for (const char* text : {"01", "1.", ".5", "+1", "0x10", "1e", "--1", "1_000"}) {
    const auto error = refusal(raw("metrics.json", "/payload/power_watts", text));
    ASSERT_TRUE(error.has_value()) << "accepted " << text;
    EXPECT_EQ(error->kind(), Kind::malformed) << text << ": " << error->what();
    EXPECT_EQ(error->field(), "body") << text;
  }
}

TEST(Protocol, ANulByteAnywhereIsMalformed) {
  std::string body = example("metrics.json").dump();
  body.push_back('\0');  // after a complete document: a reader that stops at NUL would accept it
  const auto error = refusal(body);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->kind(), Kind::malformed);
  EXPECT_EQ(error->value(), fmt::format("byte {}", body.size() - 1));
  const auto inside = refusal(raw("metrics.json", "/payload/device_id", std::string("\"cuda\0:0\"", 9)));
  ASSERT_TRUE(inside.has_value());
  EXPECT_EQ(inside->kind(), Kind::malformed);
}

TEST(Protocol, IntegerTimestampsAndSubMicrosecondPrecision) {
  const auto m = parse_as<MetricsReport>(edit("metrics.json", "/payload/timestamp", 1717171721));
  EXPECT_EQ(m.sample.timestamp, at_ns(1717171721000000000));
  const auto precise = parse_as<MetricsReport>(raw("metrics.json", "/payload/timestamp", "1717171721.123456"));
  // The double nearest 1717171721.123456 is 1717171721.1234560012817383: the nearest nanosecond is kept.
  EXPECT_EQ(precise.sample.timestamp, at_ns(1717171721123456001));
}

// The two quantities added through the field table travel in both directions
// (an extension of the seed's metrics: absent keys stay absent).
TEST(Protocol, FanSpeedAndEnergyTravelByTheirFieldTableNames) {
  json j = example("metrics.json");
  j["payload"]["fan_speed_percent"] = 41.5;
  j["payload"]["energy_joules"] = 123456789.125;
  const auto m = parse_as<MetricsReport>(j.dump());
  ASSERT_TRUE(m.sample.fan_speed_percent.has_value());
  EXPECT_EQ(*m.sample.fan_speed_percent, 41.5f);
  ASSERT_TRUE(m.sample.energy_joules.has_value());
  EXPECT_EQ(*m.sample.energy_joules, 123456789.125);
  const json out = to_protocol_json(m, now_timestamp());
  EXPECT_EQ(out["payload"]["fan_speed_percent"], 41.5);
  EXPECT_EQ(out["payload"]["energy_joules"], 123456789.125);
  EXPECT_EQ(parse_as<MetricsReport>(out.dump()), m);
  const auto plain = parse_as<MetricsReport>(read_example("metrics.json"));
  EXPECT_FALSE(plain.sample.fan_speed_percent.has_value());
  EXPECT_FALSE(to_protocol_json(plain, now_timestamp())["payload"].contains("energy_joules"));
  j["payload"]["fan_speed_percent"] = "fast";
  const auto error = refusal(j.dump());
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->field(), "payload.fan_speed_percent");
}

TEST(Protocol, UnknownKeysAreIgnored) {
  json j = example("heartbeat.json");
  j["trace_id"] = "abc";
  j["payload"]["gpu_processes"] = json::array({json{{"pid", 42}, {"name", "python3"}}});
  j["payload"]["metrics"]["fan_speed"] = 40;  // not a field-table wire name
  j["payload"]["metrics"]["extra"] = json{{"nested", json{{"deeper", json::array({1, 2, 3})}}}};
  EXPECT_EQ(parse_as<Heartbeat>(j.dump()), parse_as<Heartbeat>(read_example("heartbeat.json")));
}

TEST(Protocol, HostnameExtension) {
  const auto m = parse_as<MetricsReport>(edit("metrics.json", "/payload/hostname", "node-a"));
  EXPECT_EQ(m.hostname, "node-a");
  const auto h = parse_as<Heartbeat>(edit("heartbeat.json", "/payload/hostname", "node-a"));
  EXPECT_EQ(h.hostname, "node-a");
  const auto none = parse_as<Heartbeat>(edit("heartbeat.json", "/payload/hostname", nullptr));
  EXPECT_FALSE(none.hostname.has_value());
}

TEST(Protocol, HeartbeatMetricsDefaultToTheHeartbeatTimestamp) {
  json j = example("heartbeat.json");
  j["payload"]["metrics"].erase("timestamp");
  j["payload"]["metrics"].erase("device_id");
  j["payload"]["timestamp"] = 1717171730.0;
  const auto h = parse_as<Heartbeat>(j.dump());
  ASSERT_TRUE(h.sample.has_value());
  EXPECT_EQ(h.sample->timestamp, at_ns(1717171730000000000));
}

TEST(Protocol, HeartbeatOptionalFields) {
  json j = example("heartbeat.json");
  j["payload"].erase("metrics");
  j["payload"].erase("is_available");
  j["payload"].erase("error_message");
  const auto h = parse_as<Heartbeat>(j.dump());
  EXPECT_FALSE(h.sample.has_value());
  EXPECT_TRUE(h.is_available);
  EXPECT_EQ(h.error_message, "");
}

TEST(Protocol, RegistrationOptionalCapabilities) {
  json j = example("registration.json");
  for (const char* key : {"device_id", "compute_units", "memory_bandwidth_gbps", "driver_version", "supports_fp64"}) {
    j["payload"]["capabilities"].erase(key);
  }
  j["payload"]["capabilities"]["supports_tensor_cores"] = nullptr;
  j["payload"]["port"] = nullptr;
  const auto r = parse_as<DeviceRegistration>(j.dump());
  EXPECT_FALSE(r.info.compute_units || r.info.memory_bandwidth_gbps || r.info.driver_version || r.info.supports_fp64 ||
               r.info.supports_tensor_cores || r.port);
  EXPECT_EQ(r.info.key, (DeviceKey{"node-a", "cuda:0"}));
}

TEST(Protocol, EverySeedDeviceType) {
  const std::pair<const char*, DeviceKind> types[] = {
      {"cuda", DeviceKind::cuda},           {"rocm", DeviceKind::rocm},
      {"metal", DeviceKind::metal},         {"vulkan_android", DeviceKind::vulkan},
      {"vulkan_linux", DeviceKind::vulkan}, {"intel_xe", DeviceKind::intel_xe},
      {"directml", DeviceKind::directml},   {"cpu", DeviceKind::cpu}};
  for (const auto& [name, kind] : types) {
    const auto r = parse_as<DeviceRegistration>(edit("registration.json", "/payload/capabilities/device_type", name));
    EXPECT_EQ(r.info.kind, kind) << name;
  }
}

TEST(Protocol, NestingUpToTheLimitIsAccepted) {
  json j = example("metrics.json");
  json nested = 1;
  for (int i = 0; i < 14; ++i) nested = json::array({nested});  // envelope, payload + 14 arrays = 16 levels
  j["payload"]["extension"] = nested;
  EXPECT_NO_THROW((void)parse_telemetry_message(j.dump()));
}

TEST(Protocol, StringsUpToTheLimitAreAccepted) {
  const auto r = parse_as<DeviceRegistration>(
      edit("registration.json", "/payload/capabilities/device_name", std::string(256, 'x')));
  EXPECT_EQ(r.info.name.size(), 256U);
}

// ---------------------------------------------------------------------------
// Refused messages: one case per error path, each naming the JSON path.

struct Case {
  std::string name;
  std::string body;
  Kind kind;
  std::string field;
  ProtocolLimits limits{};
};

std::ostream& operator<<(std::ostream& out, const Case& c) {
  return out << c.name;
}

std::vector<Case> refused_cases() {
  const Kind M = Kind::malformed;
  const Kind I = Kind::invalid;
  const std::string registration = read_example("registration.json");
  std::vector<Case> cases = {
      // Not JSON, or not the envelope.
      {"Empty", "", M, "body"},
      {"Truncated", registration.substr(0, registration.size() / 2), M, "body"},
      {"NaNLiteral", raw("metrics.json", "/payload/power_watts", "NaN"), M, "body"},
      {"InfinityLiteral", raw("metrics.json", "/payload/temperature_celsius", "Infinity"), M, "body"},
      {"TrailingGarbage", cat({read_example("metrics.json"), "}"}), M, "body"},
      {"TwoDocuments", cat({read_example("metrics.json"), read_example("metrics.json")}), M, "body"},
      {"SingleQuotes", "{'type': 'metrics'}", M, "body"},
      {"Comment", cat({"/* hi */", read_example("metrics.json")}), M, "body"},
      {"InvalidUtf8", raw("metrics.json", "/payload/device_id", "\"\xff\xfe\""), M, "body"},
      {"TopLevelArray", cat({"[", read_example("metrics.json"), "]"}), M, "body"},
      {"TopLevelString", "\"metrics\"", M, "body"},
      {"DuplicateKey", R"({"type":"metrics","type":"heartbeat"})", M, "type"},
      {"BodyTooLarge", read_example("metrics.json"), M, "body", ProtocolLimits{64, 16, 256}},
      {"TooDeep", edit("metrics.json", "/payload/extension", json::array({json::array({json::array({1})})})), M,
       "payload.extension[0][0]", ProtocolLimits{1 << 20, 4, 256}},
      {"LongDeviceId", edit("metrics.json", "/payload/device_id", std::string(257, 'a')), M, "payload.device_id"},
      {"LongUnknownValue", edit("metrics.json", "/payload/note", std::string(1000, 'n')), M, "payload.note"},
      {"LongKey", edit("metrics.json", cat({"/payload/", std::string(300, 'k')}), 1), M,
       cat({"payload.", std::string(32, 'k'), "..."})},
      // Envelope fields.
      {"MissingVersion", erase("metrics.json", "/version"), M, "version"},
      {"Version2", edit("metrics.json", "/version", "2.0"), M, "version"},
      {"VersionNumber", edit("metrics.json", "/version", 1.0), M, "version"},
      {"MissingType", erase("metrics.json", "/type"), M, "type"},
      {"TypeNotString", edit("metrics.json", "/type", 3), M, "type"},
      {"UnknownType", edit("metrics.json", "/type", "telemetry"), M, "type"},
      {"TopologyUnsupported", edit("metrics.json", "/type", "topology"), M, "type"},
      {"MissingEnvelopeTimestamp", erase("metrics.json", "/timestamp"), M, "timestamp"},
      {"EnvelopeTimestampString", edit("metrics.json", "/timestamp", "now"), M, "timestamp"},
      {"EnvelopeTimestamp1e400", raw("metrics.json", "/timestamp", "1e400"), I, "timestamp"},
      {"MissingPayload", erase("metrics.json", "/payload"), M, "payload"},
      {"PayloadArray", edit("metrics.json", "/payload", json::array()), M, "payload"},
      {"PayloadNull", edit("metrics.json", "/payload", nullptr), M, "payload"},
      {"PayloadString", edit("heartbeat.json", "/payload", "cuda:0"), M, "payload"},
      // metrics.
      {"MissingDeviceId", erase("metrics.json", "/payload/device_id"), M, "payload.device_id"},
      {"DeviceIdNumber", edit("metrics.json", "/payload/device_id", 0), M, "payload.device_id"},
      {"DeviceIdNull", edit("metrics.json", "/payload/device_id", nullptr), M, "payload.device_id"},
      {"DeviceIdEmpty", edit("metrics.json", "/payload/device_id", ""), I, "payload.device_id"},
      {"DeviceIdSlash", edit("metrics.json", "/payload/device_id", "node-a/cuda:0"), I, "payload.device_id"},
      {"HostnameControlCharacter", edit("metrics.json", "/payload/hostname", "node\x01"), I, "payload.hostname"},
      {"HostnameNumber", edit("metrics.json", "/payload/hostname", 7), M, "payload.hostname"},
      {"MissingTimestamp", erase("metrics.json", "/payload/timestamp"), M, "payload.timestamp"},
      {"NegativeTimestamp", edit("metrics.json", "/payload/timestamp", -1.0), I, "payload.timestamp"},
      {"MillisecondTimestamp", edit("metrics.json", "/payload/timestamp", 1717171721250.0), I, "payload.timestamp"},
      {"MissingMemoryUsed", erase("metrics.json", "/payload/memory_used_bytes"), M, "payload.memory_used_bytes"},
      {"MissingMemoryTotal", erase("metrics.json", "/payload/memory_total_bytes"), M, "payload.memory_total_bytes"},
      {"MemoryUsedNull", edit("metrics.json", "/payload/memory_used_bytes", nullptr), M, "payload.memory_used_bytes"},
      {"MemoryUsedString", edit("metrics.json", "/payload/memory_used_bytes", "1024"), M, "payload.memory_used_bytes"},
      {"MemoryUsedNegative", edit("metrics.json", "/payload/memory_used_bytes", -1), I, "payload.memory_used_bytes"},
      {"MemoryUsed1e30", raw("metrics.json", "/payload/memory_used_bytes", "1e30"), I, "payload.memory_used_bytes"},
      {"MemoryUsedFraction", edit("metrics.json", "/payload/memory_used_bytes", 1.5), I, "payload.memory_used_bytes"},
      {"MemoryTotalPast2To63", raw("metrics.json", "/payload/memory_total_bytes", "9223372036854775808"), I,
       "payload.memory_total_bytes"},
      {"MemoryTotalPast2To64", raw("metrics.json", "/payload/memory_total_bytes", "18446744073709551616"), I,
       "payload.memory_total_bytes"},
      {"Power1e400", raw("metrics.json", "/payload/power_watts", "1e400"), I, "payload.power_watts"},
      {"PowerMinus1e400", raw("metrics.json", "/payload/power_watts", "-1e400"), I, "payload.power_watts"},
      {"PowerBeyondFloat", raw("metrics.json", "/payload/power_watts", "1e39"), I, "payload.power_watts"},
      {"PowerString", edit("metrics.json", "/payload/power_watts", "612 W"), M, "payload.power_watts"},
      {"UtilizationBoolean", edit("metrics.json", "/payload/compute_utilization_percent", true), M,
       "payload.compute_utilization_percent"},
      {"TemperatureObject", edit("metrics.json", "/payload/temperature_celsius", json{{"gpu", 60}}), M,
       "payload.temperature_celsius"},
      {"ClockArray", edit("metrics.json", "/payload/clock_rate_mhz", json::array({1980})), M, "payload.clock_rate_mhz"},
      // heartbeat.
      {"HeartbeatMissingTimestamp", erase("heartbeat.json", "/payload/timestamp"), M, "payload.timestamp"},
      {"HeartbeatMetricsArray", edit("heartbeat.json", "/payload/metrics", json::array()), M, "payload.metrics"},
      {"HeartbeatMetricsMissingMemory", erase("heartbeat.json", "/payload/metrics/memory_total_bytes"), M,
       "payload.metrics.memory_total_bytes"},
      {"HeartbeatMetricsNaN", raw("heartbeat.json", "/payload/metrics/power_watts", "NaN"), M, "body"},
      {"HeartbeatMetrics1e400", raw("heartbeat.json", "/payload/metrics/temperature_celsius", "1e400"), I,
       "payload.metrics.temperature_celsius"},
      {"HeartbeatMetricsOtherDevice", edit("heartbeat.json", "/payload/metrics/device_id", "cuda:1"), I,
       "payload.metrics.device_id"},
      {"HeartbeatIsAvailableString", edit("heartbeat.json", "/payload/is_available", "yes"), M, "payload.is_available"},
      {"HeartbeatIsAvailableNumber", edit("heartbeat.json", "/payload/is_available", 1), M, "payload.is_available"},
      {"HeartbeatErrorMessageNumber", edit("heartbeat-unavailable.json", "/payload/error_message", 79), M,
       "payload.error_message"},
      {"HeartbeatLongErrorMessage", edit("heartbeat-unavailable.json", "/payload/error_message", std::string(300, 'e')),
       M, "payload.error_message"},
      // device_registration.
      {"RegistrationMissingHostname", erase("registration.json", "/payload/hostname"), M, "payload.hostname"},
      {"RegistrationEmptyHostname", edit("registration.json", "/payload/hostname", ""), I, "payload.hostname"},
      {"RegistrationPortString", edit("registration.json", "/payload/port", "8765"), M, "payload.port"},
      {"RegistrationPortZero", edit("registration.json", "/payload/port", 0), I, "payload.port"},
      {"RegistrationPortTooLarge", edit("registration.json", "/payload/port", 70000), I, "payload.port"},
      {"RegistrationMissingCapabilities", erase("registration.json", "/payload/capabilities"), M,
       "payload.capabilities"},
      {"RegistrationCapabilitiesString", edit("registration.json", "/payload/capabilities", "cuda"), M,
       "payload.capabilities"},
      {"RegistrationMismatchedDeviceIds", edit("registration.json", "/payload/capabilities/device_id", "cuda:1"), I,
       "payload.capabilities.device_id"},
      {"RegistrationMissingDeviceType", erase("registration.json", "/payload/capabilities/device_type"), M,
       "payload.capabilities.device_type"},
      {"RegistrationUnknownDeviceType", edit("registration.json", "/payload/capabilities/device_type", "tpu"), I,
       "payload.capabilities.device_type"},
      {"RegistrationMissingDeviceName", erase("registration.json", "/payload/capabilities/device_name"), M,
       "payload.capabilities.device_name"},
      {"RegistrationMissingMaxMemory", erase("registration.json", "/payload/capabilities/max_memory_bytes"), M,
       "payload.capabilities.max_memory_bytes"},
      {"RegistrationZeroMaxMemory", edit("registration.json", "/payload/capabilities/max_memory_bytes", 0), I,
       "payload.capabilities.max_memory_bytes"},
      {"RegistrationNegativeComputeUnits", edit("registration.json", "/payload/capabilities/compute_units", -1), I,
       "payload.capabilities.compute_units"},
      {"RegistrationComputeUnitsPast32Bits",
       edit("registration.json", "/payload/capabilities/compute_units", 4294967296LL), I,
       "payload.capabilities.compute_units"},
      {"RegistrationNegativeBandwidth", edit("registration.json", "/payload/capabilities/memory_bandwidth_gbps", -5), I,
       "payload.capabilities.memory_bandwidth_gbps"},
      {"RegistrationFp64String", edit("registration.json", "/payload/capabilities/supports_fp64", "true"), M,
       "payload.capabilities.supports_fp64"},
      {"RegistrationDriverVersionNumber", edit("registration.json", "/payload/capabilities/driver_version", 535), M,
       "payload.capabilities.driver_version"},
      {"RegistrationMissingTimestamp", erase("registration.json", "/payload/timestamp"), M, "payload.timestamp"},
  };
  return cases;
}

class Refused : public ::testing::TestWithParam<Case> {};

TEST_P(Refused, NamesTheField) {
  const Case& c = GetParam();
  expect_refused(c.body, c.kind, c.field, c.limits);
}

INSTANTIATE_TEST_SUITE_P(Protocol, Refused, ::testing::ValuesIn(refused_cases()),
                         [](const ::testing::TestParamInfo<Case>& param) { return param.param.name; });

TEST(Protocol, ErrorTextNamesFieldValueAndRule) {
  const auto error = refusal(raw("metrics.json", "/payload/memory_used_bytes", "1e30"));
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->value(), "1e+30");
  EXPECT_NE(error->rule().find("whole number"), std::string::npos);
  EXPECT_STREQ(error->what(),
               "invalid telemetry message: payload.memory_used_bytes = 1e+30 (must be a whole number within [0, "
               "9223372036854775807])");
  EXPECT_STREQ(to_string(Kind::malformed), "malformed");
  EXPECT_STREQ(to_string(Kind::invalid), "invalid");
}

TEST(Protocol, TopologyErrorSaysItIsUnsupported) {
  const auto error = refusal(edit("metrics.json", "/type", "topology"));
  ASSERT_TRUE(error.has_value());
  EXPECT_NE(error->rule().find("not supported"), std::string::npos) << error->what();
}

TEST(Protocol, MegabyteOfOpenBracketsDoesNotOverflowTheStack) {
  const std::string brackets(1 << 20, '[');
  expect_refused(brackets, Kind::malformed, "[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]");
  const std::string braces = [] {
    std::string text;
    while (text.size() < (1 << 20) - 8) text += R"({"a":)";
    return text;
  }();
  const auto error = refusal(braces);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->kind(), Kind::malformed);
  // Past the body limit the size is refused before anything is parsed.
  const auto large = refusal(std::string(4 << 20, '['));
  ASSERT_TRUE(large.has_value());
  EXPECT_EQ(large->field(), "body");
  // With the limits lifted, the parser (iterative) and the document's destruction still use no deep recursion.
  ProtocolLimits generous;
  generous.max_body_bytes = 8 << 20;
  generous.max_depth = 1000000;
  const auto deep = refusal(std::string(4 << 20, '['), generous);
  ASSERT_TRUE(deep.has_value());
  EXPECT_EQ(deep->kind(), Kind::malformed);
  EXPECT_LT(deep->field().size(), 300U);  // paths in errors are cut short
}

TEST(Protocol, InvalidUtf8NeverLeaksIntoErrorTexts) {
  const std::string bodies[] = {"\xff", "{\"type\xc3\":1}", "{\"a\":\"\xed\xa0\x80\"}", "[\"\xf4\x90\x80\x80\"]",
                                std::string(300, '\xe2')};
  for (const std::string& body : bodies) {
    const auto error = refusal(body);
    ASSERT_TRUE(error.has_value());
    EXPECT_TRUE(dumps_as_json(error->what()) && dumps_as_json(error->value()) && dumps_as_json(error->field()))
        << error->what();
  }
}

// A JSON escape of a lone low surrogate decodes to bytes that are not UTF-8
// (RapidJSON 1.1.0 lets it through): refused, in a value or a key, so no stored
// string fails to be written again (the protocol fuzzer found it in a device id).
TEST(Protocol, EscapedLoneSurrogatesAreRefused) {
  for (const std::string body : {R"({"a":"x\udeee"})", R"({"x\udc00":1})", R"(["\udfff"])"}) {
    const auto error = refusal(body);
    ASSERT_TRUE(error.has_value()) << body;
    EXPECT_EQ(error->kind(), ProtocolError::Kind::malformed) << error->what();
    EXPECT_NE(error->rule().find("valid UTF-8"), std::string::npos) << error->what();
    EXPECT_TRUE(dumps_as_json(error->what()) && dumps_as_json(error->value())) << error->what();
  }
  // A pair is a character.
  EXPECT_FALSE(refusal(R"({"a":"\ud83d\ude00"})").has_value() &&
               refusal(R"({"a":"\ud83d\ude00"})")->rule().find("valid UTF-8") != std::string::npos);
}

// ---------------------------------------------------------------------------
// Writing and round trips.

TEST(Protocol, ToProtocolJsonReproducesEachExample) {
  for (const char* name : kExamples) {
    const json original = example(name);
    const TelemetryMessage message = parse_telemetry_message(original.dump());
    // Each example's envelope carries the same time as its payload.
    const Timestamp envelope = std::visit(
        [](const auto& m) {
          if constexpr (std::is_same_v<std::decay_t<decltype(m)>, MetricsReport>) {
            return m.sample.timestamp;
          } else {
            return m.timestamp;
          }
        },
        message);
    EXPECT_EQ(to_protocol_json(message, envelope), original) << name;
  }
}

TEST(Protocol, ExamplesRoundTrip) {
  for (const char* name : kExamples) {
    const TelemetryMessage message = parse_telemetry_message(read_example(name));
    const TelemetryMessage again = parse_telemetry_message(to_protocol_json(message, now_timestamp()).dump());
    EXPECT_EQ(again, message) << name;
  }
}

TEST(Protocol, MetricsFieldNamesMatchCoreJson) {
  const auto m = parse_as<MetricsReport>(read_example("metrics.json"));
  const json ours = to_protocol_json(m, now_timestamp())["payload"];
  std::set<std::string> ours_keys;
  for (const auto& item : ours.items()) ours_keys.insert(item.key());
  std::set<std::string> core_keys{"device_id"};
  const json core = to_json(m.sample);
  for (const auto& item : core.items()) core_keys.insert(item.key());
  // Every key the protocol writes can be read under the same name in the
  // core's JSON (the seed's names there are deprecated aliases).
  for (const std::string& key : ours_keys) EXPECT_TRUE(core_keys.count(key) == 1) << key;
}

TEST(Protocol, UnavailableGaugesAreWrittenAsNull) {
  const auto m = parse_as<MetricsReport>(read_example("metrics-partial.json"));
  const json payload = to_protocol_json(m, now_timestamp())["payload"];
  EXPECT_TRUE(payload["power_watts"].is_null());
  EXPECT_TRUE(payload["temperature_celsius"].is_null());
  EXPECT_TRUE(payload["clock_rate_mhz"].is_null());
  EXPECT_EQ(payload["compute_utilization_percent"], 88.5);
}

TEST(Protocol, OddValuesRoundTripExactly) {
  MetricsReport report;
  report.device_id = "metal:0";
  report.hostname = "mac.local";
  report.sample.memory_used_bytes = 0;
  report.sample.memory_total_bytes = INT64_MAX;
  report.sample.utilization_percent = 0.1F;  // not a short decimal as a float
  report.sample.power_watts = 3.4028234e38F;
  report.sample.temperature_celsius = -273.15F;
  report.sample.clock_mhz = 1e-40F;  // subnormal
  for (const char* seconds : {"0", "1717171721.123456789", "1717171721.1", "4102444800", "0.000000001"}) {
    const json j = json::parse(cat({"{\"t\":", seconds, "}"}));
    const auto parsed = parse_as<MetricsReport>(edit("metrics.json", "/payload/timestamp", j["t"]));
    report.sample.timestamp = parsed.sample.timestamp;
    const TelemetryMessage message = report;
    EXPECT_EQ(parse_telemetry_message(to_protocol_json(message, report.sample.timestamp).dump()), message) << seconds;
  }
  Heartbeat heartbeat;
  heartbeat.device_id = "cpu:0";
  heartbeat.is_available = false;
  heartbeat.error_message = "\x01 \"quoted\" \xc3\xa9";
  heartbeat.timestamp = at_ns(1717171721500000000);
  const TelemetryMessage message = heartbeat;
  EXPECT_EQ(parse_telemetry_message(to_protocol_json(message, heartbeat.timestamp).dump()), message);
}

TEST(Protocol, VulkanIsWrittenWithTheSeedsName) {
  auto r =
      parse_as<DeviceRegistration>(edit("registration.json", "/payload/capabilities/device_type", "vulkan_android"));
  EXPECT_EQ(to_protocol_json(r, r.timestamp)["payload"]["capabilities"]["device_type"], "vulkan_linux");
}

// ---------------------------------------------------------------------------
// No input throws anything but ProtocolError, and every accepted one round-trips.

void check_any(std::string_view body) {
  try {
    const TelemetryMessage message = parse_telemetry_message(body);
    const std::string written = to_protocol_json(message, at_ns(1717171717000000000)).dump();
    EXPECT_EQ(parse_telemetry_message(written), message) << body;
  } catch (const ProtocolError& e) {
    EXPECT_TRUE(dumps_as_json(e.what()) && dumps_as_json(e.value()) && dumps_as_json(e.field())) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw " << e.what() << " for " << body.substr(0, 200);
  } catch (...) {
    ADD_FAILURE() << "threw a non-std exception for " << body.substr(0, 200);
  }
}

TEST(Protocol, EveryTruncationOfEachExample) {
  for (const char* name : kExamples) {
    const std::string body = read_example(name);
    for (std::size_t size = 0; size <= body.size(); ++size) check_any(std::string_view(body).substr(0, size));
  }
}

TEST(Protocol, ByteMutationsOfEachExample) {
  std::mt19937 random(12345);
  const char replacements[] = {'"', '{', '}', '[', ']', ',', ':', '-', '0', '9', 'e', '.', 'n', '\\', '\0', '\xff'};
  for (const char* name : kExamples) {
    const std::string original = read_example(name);
    for (int round = 0; round < 2000; ++round) {
      std::string body = original;
      const int edits = 1 + static_cast<int>(random() % 3);
      for (int e = 0; e < edits; ++e) {
        const std::size_t at = random() % body.size();
        switch (random() % 3) {
          case 0: body[at] = replacements[random() % sizeof(replacements)]; break;
          case 1: body.erase(at, 1 + random() % 8); break;
          default: body.insert(at, 1, replacements[random() % sizeof(replacements)]); break;
        }
        if (body.empty()) body.push_back('{');
      }
      check_any(body);
    }
  }
}

TEST(Protocol, RandomBytes) {
  std::mt19937 random(777);
  for (int round = 0; round < 2000; ++round) {
    std::string body(random() % 64, '\0');
    for (char& c : body) c = static_cast<char>(random() % 256);
    check_any(body);
  }
}

}  // namespace
}  // namespace gpucluster::agent
