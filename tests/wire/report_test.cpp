#include "gpucluster/wire/report.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace gpucluster::agent {
namespace {

using nlohmann::json;
using Kind = ProtocolError::Kind;

constexpr const char* kNodeId = "3f1c2a9b-0c1d-4e5f-8a9b-0c1d2e3f4a5b";

std::string read_example(const std::string& name) {
  std::ifstream in(std::string(GPUCLUSTER_SOURCE_DIR) + "/examples/report/" + name);
  EXPECT_TRUE(in.good()) << name;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Timestamp at_ns(std::int64_t nanoseconds) {
  return Timestamp{std::chrono::nanoseconds{nanoseconds}};
}

// A time a double reaches (timestamps travel as seconds; about 238 ns apart near 2024).
Timestamp at_s(double seconds) {
  return timestamp_from_seconds(seconds);
}

Sample full_sample(Timestamp timestamp) {
  Sample s;
  s.timestamp = timestamp;
  s.memory_used_bytes = 42949672960;
  s.memory_total_bytes = 85520809984;
  s.utilization_percent = 41.3f;
  s.power_watts = 612.3f;
  s.temperature_celsius = -12.5f;
  s.clock_mhz = 1755.0f;
  s.fan_speed_percent = 33.3f;
  s.energy_joules = 123456789.123456;
  return s;
}

Report minimal_report() {
  Report r;
  r.node.id = kNodeId;
  r.node.incarnation = 1;
  r.node.name = "gpu-a";
  r.node.agent_version = "";
  r.seq = 1;
  r.sent_at = at_ns(0);
  r.interval_ms = 100;
  r.inventory_version = 1;
  return r;
}

Report full_report() {
  Report r;
  r.node = ReportNode{.id = kNodeId,
                      .incarnation = 9223372036854775807ULL,
                      .name = "gpu-a~3f1c2a9b",
                      .agent_version = std::string(64, 'v'),
                      .url = "http://[fe80::1]:65535",
                      .port = 9420};
  r.seq = 9223372036854775807ULL;
  r.sent_at = at_s(1717171721.25);
  r.clock = ClockExchange{
      .t0 = at_s(1717171720.2501), .r = at_s(1717171720.2507), .t = at_s(1717171720.2509), .t1 = at_s(1717171720.2513)};
  r.interval_ms = 60000;
  r.inventory_version = 3;
  DeviceInfo full;
  full.key.local_id = "cuda:0";
  full.name = "NVIDIA H100 80GB HBM3";
  full.vendor = "NVIDIA";
  full.kind = DeviceKind::cuda;
  full.backend = "nvml";
  full.uuid = "GPU-5a3e1f0c";
  full.pci_bus_id = "0000:65:00.0";
  full.memory_total_bytes = 85520809984;
  full.compute_units = 4294967295U;
  full.compute_capability = "9.0";
  full.max_clock_mhz = 1980.5;
  full.memory_bandwidth_gbps = 3352.3;
  full.driver_version = "550.54.15";
  full.power_limit_watts = 700;
  full.temperature_slowdown_celsius = -273.15;
  full.temperature_shutdown_celsius = 92.1;
  full.supports_fp64 = false;
  full.supports_tensor_cores = true;
  DeviceInfo bare;
  bare.key.local_id = "vulkan:1";
  bare.kind = DeviceKind::vulkan;
  DeviceInfo unknown;
  unknown.key.local_id = "x";
  unknown.kind = DeviceKind::unknown;
  r.inventory = std::vector<DeviceInfo>{full, bare, unknown};
  r.unavailable = {{"vulkan:1", "backend vulkan has not answered for 6.0 s"}, {"x", ""}};
  Sample partial;
  partial.timestamp = at_ns(4102444800000000000);  // the last accepted second
  partial.memory_total_bytes = 1;
  r.samples = {{"cuda:0", {full_sample(at_s(1717171720.0)), full_sample(at_s(1717171720.999999))}},
               {"vulkan:1", {partial}},
               {"x", {}}};
  r.dropped = {{"cuda:0", 9223372036854775807ULL}, {"x", 0}};
  r.leaving = true;
  return r;
}

ReportAck full_ack() {
  ReportAck a;
  a.ack = 42;
  a.coordinator = "9d0e7c4a-1b2f-4c3d-8e5f-6a7b8c9d0e1f";
  a.epoch = "b2c4d6e8-f0a1-4b3c-9d5e-7f8091a2b3c4";
  a.interval_ms = 250;
  a.inventory_required = true;
  a.host = "gpu-a~3f1c2a9b";
  a.state = "alive";
  a.accepted = 8;
  a.duplicates = 2;
  a.rejected = 9223372036854775807ULL;
  a.rejections = {"cuda:0: utilization_percent = 150 (must be within [0, 100])", "\xc3\xa9"};
  a.received_at = at_s(1717171721.2507);
  a.replied_at = at_s(1717171721.2509001);
  return a;
}

// The error parse_report throws for body (a test failure when none).
ProtocolError report_error(const std::string& body, const ReportLimits& report_limits = {}) {
  try {
    parse_report(body, {}, report_limits);
  } catch (const ProtocolError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body.substr(0, 300);
  return ProtocolError(Kind::malformed, "", "", "", "");
}

ProtocolError ack_error(const std::string& body) {
  try {
    parse_report_ack(body);
  } catch (const ProtocolError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body.substr(0, 300);
  return ProtocolError(Kind::malformed, "", "", "", "");
}

json full_json() {
  return json::parse(encode_report(full_report()));
}

// full_report's JSON with one field (a JSON pointer) replaced.
std::string edited(const std::string& pointer, const json& value) {
  json j = full_json();
  j[json::json_pointer(pointer)] = value;
  return j.dump();
}

std::string erased(const std::string& pointer) {
  json j = full_json();
  const json::json_pointer at(pointer);
  j[at.parent_pointer()].erase(at.back());
  return j.dump();
}

// ---------------------------------------------------------------------------
// Round trips

TEST(ReportRoundTrip, FullReportWithEveryOptional) {
  const Report r = full_report();
  const std::string written = encode_report(r);
  EXPECT_EQ(parse_report(written), r) << written;
  EXPECT_EQ(encode_report(parse_report(written)), written);
}

TEST(ReportRoundTrip, MinimalReport) {
  const Report r = minimal_report();
  const std::string written = encode_report(r);
  EXPECT_EQ(parse_report(written), r) << written;
  const json j = json::parse(written);
  // Unknown optionals, empty maps and leaving = false are left out.
  for (const char* key : {"clock", "inventory", "unavailable", "dropped", "leaving"}) {
    EXPECT_FALSE(j.contains(key)) << key;
  }
  EXPECT_FALSE(j["node"].contains("url"));
  EXPECT_FALSE(j["node"].contains("port"));
  EXPECT_EQ(j["samples"], json::object());
}

TEST(ReportRoundTrip, EmptyInventoryIsKeptApartFromNone) {
  Report r = minimal_report();
  r.inventory = std::vector<DeviceInfo>{};
  EXPECT_EQ(parse_report(encode_report(r)), r);
  EXPECT_TRUE(parse_report(encode_report(r)).inventory.has_value());
}

TEST(ReportRoundTrip, Ack) {
  const ReportAck a = full_ack();
  EXPECT_EQ(parse_report_ack(encode_report_ack(a)), a);
  ReportAck plain;
  plain.ack = 1;
  EXPECT_EQ(parse_report_ack(encode_report_ack(plain)), plain);
  // A stray byte (never in an ack that was read) is written readable, not as invalid UTF-8.
  ReportAck stray = plain;
  stray.rejections = {"\xff bad"};
  EXPECT_EQ(parse_report_ack(encode_report_ack(stray)).rejections, std::vector<std::string>{"\\xFF bad"});
}

TEST(ReportRoundTrip, TimestampsToTheNanosecondAndGaugesAsFloats) {
  Report r = minimal_report();
  std::vector<Sample>& samples = r.samples["cuda:0"];
  // Times that doubles can tell apart near 2024 (their spacing is 238 ns).
  for (const std::int64_t ns : {std::int64_t{0}, std::int64_t{1}, std::int64_t{999999999},
                                std::int64_t{1717171721250000000}, std::int64_t{1717171721000000238}}) {
    Sample s = full_sample(at_ns(ns));
    s.utilization_percent = 0.1f;
    s.power_watts = 3.4028234e38f;
    s.temperature_celsius = 1e-45f;  // the smallest float
    samples.push_back(s);
  }
  r.sent_at = at_ns(1717171721000000238);
  EXPECT_EQ(parse_report(encode_report(r)), r);
}

TEST(ReportRoundTrip, FieldNamesAreTheFieldTablesOne) {
  const json j = full_json();
  const json& sample = j["samples"]["cuda:0"][0];
  for (const char* key : {"timestamp", "memory_used_bytes", "memory_total_bytes", "utilization_percent", "power_watts",
                          "temperature_celsius", "clock_mhz", "fan_speed_percent", "energy_joules"}) {
    EXPECT_TRUE(sample.contains(key)) << key;
  }
  EXPECT_EQ(sample["utilization_percent"], 41.3);  // the shortest decimal
  const json& device = j["inventory"][0];
  EXPECT_EQ(device["kind"], "cuda");
  EXPECT_EQ(device["device_id"], "cuda:0");
  EXPECT_FALSE(device.contains("host"));
  // An unavailable quantity is left out, and null reads the same.
  EXPECT_FALSE(j["samples"]["vulkan:1"][0].contains("power_watts"));
  const Report with_null = parse_report(edited("/samples/vulkan:1/0/power_watts", nullptr));
  EXPECT_EQ(with_null, full_report());
}

TEST(ReportRoundTrip, HostIsEmptyAfterParsing) {
  Report r = full_report();
  const Report parsed = parse_report(encode_report(r));
  for (const DeviceInfo& info : *parsed.inventory) EXPECT_EQ(info.key.host, "");
  // A host given by the caller is not sent.
  (*r.inventory)[0].key.host = "gpu-a";
  EXPECT_EQ((*parse_report(encode_report(r)).inventory)[0].key.host, "");
}

// ---------------------------------------------------------------------------
// Example files (examples/report/, the fuzzer's seeds, docs/protocol.md)

TEST(ReportExamples, ParseAndRoundTrip) {
  const Report first = parse_report(read_example("first.json"));
  ASSERT_TRUE(first.inventory.has_value());
  EXPECT_EQ(first.inventory->size(), 2U);
  EXPECT_EQ((*first.inventory)[0].key.local_id, "cuda:0");
  EXPECT_EQ(first.node.url, "http://10.0.0.5:9420");
  EXPECT_EQ(first.samples.at("cuda:0").size(), 2U);
  EXPECT_EQ(first.samples.at("cuda:0")[0].utilization_percent, 91.5f);
  EXPECT_FALSE(first.samples.at("cuda:0")[0].fan_speed_percent.has_value());
  EXPECT_EQ(first.unavailable.at("cuda:1"), "backend nvml has not answered for 6.0 s");
  EXPECT_EQ(parse_report(encode_report(first)), first);

  const Report steady = parse_report(read_example("steady.json"));
  EXPECT_FALSE(steady.inventory.has_value());
  ASSERT_TRUE(steady.clock.has_value());
  EXPECT_EQ(steady.seq, 42U);
  EXPECT_EQ(steady.node.port, 9420);
  EXPECT_EQ(steady.dropped.at("cuda:0"), 12U);
  EXPECT_EQ(parse_report(encode_report(steady)), steady);

  const ReportAck ack = parse_report_ack(read_example("ack.json"));
  EXPECT_EQ(ack.ack, 42U);
  EXPECT_EQ(ack.host, "gpu-a");
  EXPECT_EQ(parse_report_ack(encode_report_ack(ack)), ack);
}

TEST(ReportExamples, DocsExamplesParse) {
  // The json blocks of docs/protocol.md's "Reports (v2)": a report or an ack each.
  std::ifstream in(std::string(GPUCLUSTER_SOURCE_DIR) + "/docs/protocol.md");
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  const std::size_t start = doc.find("\n## Reports (v2)\n");
  ASSERT_NE(start, std::string::npos);
  const std::size_t end = doc.find("\n## ", start + 1);
  int blocks = 0;
  for (std::size_t at = doc.find("```json\n", start); at < end; at = doc.find("```json\n", at + 1)) {
    const std::size_t body = at + 8;
    const std::string block = doc.substr(body, doc.find("```", body) - body);
    if (block.find("\"report\": 2") != std::string::npos) {
      EXPECT_NO_THROW(parse_report(block)) << block;
    } else {
      EXPECT_NO_THROW(parse_report_ack(block)) << block;
    }
    ++blocks;
  }
  EXPECT_EQ(blocks, 2);
}

TEST(ReportExamples, NeverThrowsAnythingButProtocolError) {
  // Every prefix of every example and single-byte edits of them: parsed or refused, nothing else.
  for (const char* name : {"first.json", "steady.json", "ack.json"}) {
    const std::string text = read_example(name);
    for (std::size_t size = 0; size <= text.size(); size += 7) {
      for (const char patch : {'\0', '"', '9', '-', '{', ']'}) {
        std::string body = text.substr(0, size);
        if (!body.empty()) body[body.size() / 2] = patch;
        for (const std::string& input : {text.substr(0, size), body}) {
          try {
            parse_report(input);
          } catch (const ProtocolError&) {
          }
          try {
            parse_report_ack(input);
          } catch (const ProtocolError&) {
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Errors: kind, JSON path and code

struct ErrorCase {
  const char* pointer;  // the field edited ("" for a raw body)
  json value;           // its new value (discarded: erase)
  const char* field;    // the error's field
  Kind kind;
  ReportErrorCode code;
};

void expect_error(const std::string& body, const char* field, Kind kind, ReportErrorCode code,
                  const std::string& what) {
  const ProtocolError e = report_error(body);
  EXPECT_EQ(e.field(), field) << what << ": " << e.what();
  EXPECT_EQ(e.kind(), kind) << what << ": " << e.what();
  EXPECT_EQ(report_error_code(e), code) << what << ": " << e.what();
  EXPECT_FALSE(e.rule().empty()) << what;
}

TEST(ReportErrors, EveryFieldRule) {
  using C = ReportErrorCode;
  const ErrorCase cases[] = {
      {"/report", 3, "report", Kind::malformed, C::unsupported_version},
      {"/report", 1, "report", Kind::malformed, C::unsupported_version},
      {"/report", "2", "report", Kind::malformed, C::unsupported_version},
      {"/report", 2.0, "report", Kind::malformed, C::unsupported_version},
      {"/report", nullptr, "report", Kind::malformed, C::unsupported_version},
      {"/extra", 1, "extra", Kind::malformed, C::malformed},
      {"/node/extra", 1, "node.extra", Kind::malformed, C::malformed},
      {"/clock/seq", 41, "clock.seq", Kind::malformed, C::malformed},
      {"/node", "gpu-a", "node", Kind::malformed, C::malformed},
      {"/node/id", 1, "node.id", Kind::malformed, C::malformed},
      {"/node/id", "3F1C2A9B-0C1D-4E5F-8A9B-0C1D2E3F4A5B", "node.id", Kind::invalid, C::invalid_value},
      {"/node/id", "3f1c2a9b0c1d4e5f8a9b0c1d2e3f4a5b", "node.id", Kind::invalid, C::invalid_value},
      {"/node/incarnation", 0, "node.incarnation", Kind::invalid, C::invalid_value},
      {"/node/incarnation", 9223372036854775808ULL, "node.incarnation", Kind::invalid, C::invalid_value},
      {"/node/incarnation", -1, "node.incarnation", Kind::invalid, C::invalid_value},
      {"/node/incarnation", 1.5, "node.incarnation", Kind::invalid, C::invalid_value},
      {"/node/incarnation", "1", "node.incarnation", Kind::malformed, C::malformed},
      {"/node/name", "gpu/a", "node.name", Kind::invalid, C::invalid_value},
      {"/node/name", "", "node.name", Kind::invalid, C::invalid_value},
      {"/node/name", "..", "node.name", Kind::invalid, C::invalid_value},
      {"/node/agent_version", std::string(65, 'v'), "node.agent_version", Kind::invalid, C::invalid_value},
      {"/node/url", "https://10.0.0.5:9420", "node.url", Kind::invalid, C::invalid_value},
      {"/node/url", "http://10.0.0.5", "node.url", Kind::invalid, C::invalid_value},
      {"/node/url", "http://10.0.0.5:0", "node.url", Kind::invalid, C::invalid_value},
      {"/node/url", "http://10.0.0.5:65536", "node.url", Kind::invalid, C::invalid_value},
      {"/node/url", "http://10.0.0.5:9420/", "node.url", Kind::invalid, C::invalid_value},
      {"/node/url", "http://user@host:9420", "node.url", Kind::invalid, C::invalid_value},
      {"/node/url", "http://:9420", "node.url", Kind::invalid, C::invalid_value},
      {"/node/url", 9420, "node.url", Kind::malformed, C::malformed},
      {"/node/port", 0, "node.port", Kind::invalid, C::invalid_value},
      {"/node/port", 65536, "node.port", Kind::invalid, C::invalid_value},
      {"/seq", 0, "seq", Kind::invalid, C::invalid_value},
      {"/seq", nullptr, "seq", Kind::malformed, C::malformed},
      {"/sent_at", 1717171721250LL, "sent_at", Kind::invalid, C::invalid_value},
      {"/sent_at", -1, "sent_at", Kind::invalid, C::invalid_value},
      {"/clock/t1", "now", "clock.t1", Kind::malformed, C::malformed},
      {"/clock/r", 4102444801.0, "clock.r", Kind::invalid, C::invalid_value},
      {"/clock", 1, "clock", Kind::malformed, C::malformed},
      {"/interval_ms", 99, "interval_ms", Kind::invalid, C::invalid_value},
      {"/interval_ms", 60001, "interval_ms", Kind::invalid, C::invalid_value},
      {"/inventory_version", 0, "inventory_version", Kind::invalid, C::invalid_value},
      {"/inventory", json::object(), "inventory", Kind::malformed, C::malformed},
      {"/inventory/1", "cuda:0", "inventory[1]", Kind::malformed, C::malformed},
      {"/inventory/2/device_id", "cuda:0", "inventory[2].device_id", Kind::invalid, C::invalid_value},
      {"/inventory/2/device_id", "", "inventory[2].device_id", Kind::invalid, C::invalid_value},
      {"/inventory/2/device_id", "a\tb", "inventory[2].device_id", Kind::invalid, C::invalid_value},
      {"/inventory/0/kind", "tpu", "inventory[0].kind", Kind::invalid, C::invalid_value},
      {"/inventory/0/name", nullptr, "inventory[0].name", Kind::malformed, C::malformed},
      {"/inventory/0/memory_total_bytes", -1, "inventory[0].memory_total_bytes", Kind::invalid, C::invalid_value},
      {"/inventory/0/compute_units", 4294967296LL, "inventory[0].compute_units", Kind::invalid, C::invalid_value},
      {"/inventory/0/max_clock_mhz", -1, "inventory[0].max_clock_mhz", Kind::invalid, C::invalid_value},
      {"/inventory/0/temperature_shutdown_celsius", -274, "inventory[0].temperature_shutdown_celsius", Kind::invalid,
       C::invalid_value},
      {"/inventory/0/supports_fp64", "yes", "inventory[0].supports_fp64", Kind::malformed, C::malformed},
      {"/unavailable", json::array(), "unavailable", Kind::malformed, C::malformed},
      {"/unavailable/vulkan:1", 1, "unavailable.vulkan:1", Kind::malformed, C::malformed},
      {"/unavailable/a~1b", "x", "unavailable.a/b", Kind::invalid, C::invalid_value},
      {"/samples", json::array(), "samples", Kind::malformed, C::malformed},
      {"/samples/cuda:0", json::object(), "samples.cuda:0", Kind::malformed, C::malformed},
      {"/samples/a~1b", json::array(), "samples.a/b", Kind::invalid, C::invalid_value},
      {"/samples/.", json::array(), "samples..", Kind::invalid, C::invalid_value},
      {"/samples/cuda:0/1", 1, "samples.cuda:0[1]", Kind::malformed, C::malformed},
      {"/samples/cuda:0/1/power_watts", "hot", "samples.cuda:0[1].power_watts", Kind::malformed, C::malformed},
      {"/samples/cuda:0/1/utilization_percent", 1e39, "samples.cuda:0[1].utilization_percent", Kind::invalid,
       C::invalid_value},
      {"/samples/cuda:0/0/memory_used_bytes", 1.5, "samples.cuda:0[0].memory_used_bytes", Kind::invalid,
       C::invalid_value},
      {"/samples/cuda:0/0/timestamp", 4102444800.5, "samples.cuda:0[0].timestamp", Kind::invalid, C::invalid_value},
      {"/samples/cuda:0/0/energy_joules", true, "samples.cuda:0[0].energy_joules", Kind::malformed, C::malformed},
      {"/dropped/cuda:0", -1, "dropped.cuda:0", Kind::invalid, C::invalid_value},
      {"/dropped/cuda:0", "12", "dropped.cuda:0", Kind::malformed, C::malformed},
      {"/leaving", "yes", "leaving", Kind::malformed, C::malformed},
  };
  for (const ErrorCase& c : cases) expect_error(edited(c.pointer, c.value), c.field, c.kind, c.code, c.pointer);

  // Missing required fields.
  for (const auto& [pointer, field] : std::vector<std::pair<const char*, const char*>>{
           {"/report", "report"},
           {"/node", "node"},
           {"/node/id", "node.id"},
           {"/node/incarnation", "node.incarnation"},
           {"/node/name", "node.name"},
           {"/node/agent_version", "node.agent_version"},
           {"/seq", "seq"},
           {"/sent_at", "sent_at"},
           {"/clock/t0", "clock.t0"},
           {"/interval_ms", "interval_ms"},
           {"/inventory_version", "inventory_version"},
           {"/inventory/1/device_id", "inventory[1].device_id"},
           {"/inventory/1/kind", "inventory[1].kind"},
           {"/inventory/1/memory_total_bytes", "inventory[1].memory_total_bytes"},
           {"/samples", "samples"},
           {"/samples/cuda:0/1/timestamp", "samples.cuda:0[1].timestamp"},
           {"/samples/cuda:0/1/memory_total_bytes", "samples.cuda:0[1].memory_total_bytes"},
       }) {
    expect_error(erased(pointer), field, Kind::malformed, ReportErrorCode::malformed, pointer);
  }
}

TEST(ReportErrors, DeepPathNamesTheSample) {
  Report r = minimal_report();
  for (int i = 0; i < 4; ++i) r.samples["cuda:0"].push_back(full_sample(at_s(1717171720.0 + i)));
  json j = json::parse(encode_report(r));
  j["samples"]["cuda:0"][3]["power_watts"] = -1e300;
  const ProtocolError e = report_error(j.dump());
  EXPECT_EQ(e.field(), "samples.cuda:0[3].power_watts");
  EXPECT_EQ(e.kind(), Kind::invalid);
  EXPECT_EQ(std::string(e.what()).rfind("invalid report: samples.cuda:0[3].power_watts = ", 0), 0U) << e.what();
}

TEST(ReportErrors, BoundaryValuesPass) {
  for (const auto& [pointer, value] : std::vector<std::pair<const char*, json>>{
           {"/node/incarnation", 1},
           {"/node/incarnation", 9223372036854775807ULL},
           {"/node/incarnation", 8.0e10},  // an integral float
           {"/node/agent_version", std::string(64, 'v')},
           {"/node/url", "http://localhost:1"},
           {"/node/url", "http://gpu-a.lab.example:9420"},
           {"/node/url", nullptr},
           {"/node/port", 65535},
           {"/node/port", 1},
           {"/interval_ms", 100},
           {"/interval_ms", 60000},
           {"/sent_at", 0},
           {"/sent_at", 4102444800.0},
           {"/clock", nullptr},
           {"/inventory/0/extension", json{{"future", 1}}},  // unknown keys inside entries: ignored
           {"/samples/cuda:0/0/extension", "later"},         // and inside samples
           {"/leaving", nullptr},
       }) {
    EXPECT_NO_THROW(parse_report(edited(pointer, value))) << pointer << " = " << value.dump();
  }
}

TEST(ReportErrors, NotJsonAndNumbersBeyondDouble) {
  expect_error("[]", "body", Kind::malformed, ReportErrorCode::malformed, "array");
  expect_error("", "body", Kind::malformed, ReportErrorCode::malformed, "empty");
  expect_error("{\"report\": 2,", "body", Kind::malformed, ReportErrorCode::malformed, "truncated");
  expect_error("{\"report\": 2, \"report\": 2}", "report", Kind::malformed, ReportErrorCode::malformed, "duplicate");
  // A number beyond a double is refused where it stands, never read as infinity.
  std::string body = full_json().dump();
  const std::string marker = "\"power_watts\":612.3";
  ASSERT_NE(body.find(marker), std::string::npos);
  body.replace(body.find(marker), marker.size(), "\"power_watts\":1e400");
  expect_error(body, "samples.cuda:0[0].power_watts", Kind::invalid, ReportErrorCode::invalid_value, "1e400");
  std::string nan_body = full_json().dump();
  nan_body.replace(nan_body.find(marker), marker.size(), "\"power_watts\":NaN");
  expect_error(nan_body, "body", Kind::malformed, ReportErrorCode::malformed, "NaN");
  std::string inf_body = full_json().dump();
  inf_body.replace(inf_body.find(marker), marker.size(), "\"power_watts\":-Infinity");
  expect_error(inf_body, "body", Kind::malformed, ReportErrorCode::malformed, "Infinity");
}

TEST(ReportErrors, BodyLimitsOfTheReader) {
  ProtocolLimits small;
  small.max_body_bytes = 100;
  EXPECT_THROW(parse_report(encode_report(full_report()), small), ProtocolError);
  const ProtocolError e = report_error(edited("/node/agent_version", std::string(257, 'v')));
  EXPECT_EQ(e.kind(), Kind::malformed);  // strings past 256 bytes: the reader's limit
  EXPECT_EQ(e.field(), "node.agent_version");
}

// ---------------------------------------------------------------------------
// ReportLimits: exactly the limit passes, one more fails (device_limit)

std::string report_with(std::size_t devices, std::size_t samples_each, bool inventory) {
  Report r = minimal_report();
  if (inventory) r.inventory.emplace();
  for (std::size_t d = 0; d < devices; ++d) {
    const std::string id = "gpu" + std::to_string(d);
    if (inventory) {
      DeviceInfo info;
      info.key.local_id = id;
      r.inventory->push_back(info);
    }
    std::vector<Sample>& list = r.samples[id];
    for (std::size_t i = 0; i < samples_each; ++i) {
      Sample s;
      s.timestamp = at_ns(static_cast<std::int64_t>(i) * 1000000000);
      s.memory_total_bytes = 1;
      list.push_back(s);
    }
  }
  return encode_report(r);
}

void expect_limit(const std::string& body, const ReportLimits& limits, const char* field, const char* limit_name) {
  const ProtocolError e = report_error(body, limits);
  EXPECT_EQ(e.field(), field) << e.what();
  EXPECT_EQ(e.kind(), Kind::invalid) << e.what();
  EXPECT_EQ(report_error_code(e), ReportErrorCode::device_limit) << e.what();
  EXPECT_NE(e.rule().find(std::string(kReportLimitRulePrefix) + limit_name), std::string::npos) << e.what();
}

TEST(ReportLimitsTest, SmallLimitsAtTheBoundary) {
  const ReportLimits limits{.max_devices = 2, .max_samples_per_device = 3, .max_samples = 5};
  EXPECT_NO_THROW(parse_report(report_with(2, 2, true), {}, limits));
  expect_limit(report_with(3, 0, true), limits, "inventory", "max_devices");
  expect_limit(report_with(3, 0, false), limits, "samples", "max_devices");
  EXPECT_NO_THROW(parse_report(report_with(1, 3, false), {}, limits));
  expect_limit(report_with(1, 4, false), limits, "samples.gpu0", "max_samples_per_device");
  const auto minimal_with = [](const char* key, const json& value) {
    json j = json::parse(encode_report(minimal_report()));
    j[key] = value;
    return j.dump();
  };
  EXPECT_NO_THROW(parse_report(minimal_with("unavailable", json{{"a", ""}, {"b", ""}}), {}, limits));
  expect_limit(minimal_with("unavailable", json{{"a", ""}, {"b", ""}, {"c", ""}}), limits, "unavailable",
               "max_devices");
  EXPECT_NO_THROW(parse_report(minimal_with("dropped", json{{"a", 1}, {"b", 1}}), {}, limits));
  expect_limit(minimal_with("dropped", json{{"a", 1}, {"b", 1}, {"c", 1}}), limits, "dropped", "max_devices");
  // Five samples over two devices pass; six fail on the total.
  json five = json::parse(report_with(2, 3, false));
  five["samples"]["gpu1"].erase(2);
  EXPECT_NO_THROW(parse_report(five.dump(), {}, limits));
  expect_limit(report_with(2, 3, false), limits, "samples", "max_samples");
}

TEST(ReportLimitsTest, DefaultLimitsAtTheBoundary) {
  const ReportLimits limits;
  EXPECT_NO_THROW(parse_report(report_with(256, 0, true)));
  expect_limit(report_with(257, 0, true), limits, "inventory", "max_devices");
  expect_limit(report_with(257, 0, false), limits, "samples", "max_devices");
  EXPECT_NO_THROW(parse_report(report_with(1, 600, false)));
  expect_limit(report_with(1, 601, false), limits, "samples.gpu0", "max_samples_per_device");
  // 8,192 samples: 14 devices of 585 plus 2 more (well under the 1 MiB body).
  json full = json::parse(report_with(14, 585, false));
  full["samples"]["gpu0"].push_back(full["samples"]["gpu0"][0]);
  full["samples"]["gpu0"].push_back(full["samples"]["gpu0"][0]);
  ASSERT_LE(full.dump().size(), std::size_t{1} << 20);
  EXPECT_NO_THROW(parse_report(full.dump()));
  full["samples"]["gpu1"].push_back(full["samples"]["gpu1"][0]);
  expect_limit(full.dump(), limits, "samples", "max_samples");
}

// ---------------------------------------------------------------------------
// "samples" is decoded as the reader goes (no document is built for it): the
// rules, paths and the order in which refusals are found are a document's.

// minimal_report's JSON with "samples" written as raw text (so duplicate keys
// and document order can be tested), first or last in the report.
std::string with_raw_samples(const std::string& raw, bool first = false) {
  json j = json::parse(encode_report(minimal_report()));
  j.erase("samples");
  const std::string rest = j.dump();
  if (first) return "{\"samples\":" + raw + "," + rest.substr(1);
  return rest.substr(0, rest.size() - 1) + ",\"samples\":" + raw + "}";
}

// A sample's required fields, its object left open.
constexpr const char* kOpenSample = R"({"timestamp":1717171720.5,"memory_used_bytes":1,"memory_total_bytes":2)";

std::string sample_with(const std::string& members) {
  return std::string(kOpenSample) + members + "}";
}

TEST(ReportStreamedSamples, UnknownKeysAreSkippedAndNullIsUnavailable) {
  const Report r = parse_report(with_raw_samples(
      R"({"b:0":[)" + sample_with(R"(,"future":{"a":[1,{"b":null}],"c":"x"},"power_watts":null)") + R"(],"a:0":[)" +
          sample_with(R"(,"power_watts":300,"extra":[[]])") + "," + sample_with("") + R"(],"c:0":[]})",
      true));
  ASSERT_EQ(r.samples.size(), 3U);
  ASSERT_EQ(r.samples.at("a:0").size(), 2U);
  ASSERT_TRUE(r.samples.at("a:0")[0].power_watts);
  EXPECT_EQ(*r.samples.at("a:0")[0].power_watts, 300.0f);
  EXPECT_FALSE(r.samples.at("a:0")[1].power_watts);
  EXPECT_EQ(r.samples.at("a:0")[1].memory_total_bytes, 2);
  ASSERT_EQ(r.samples.at("b:0").size(), 1U);
  EXPECT_FALSE(r.samples.at("b:0")[0].power_watts);
  EXPECT_TRUE(r.samples.at("c:0").empty());
  // The same report with its samples last reads the same.
  EXPECT_EQ(parse_report(with_raw_samples(R"({"a:0":[)" + sample_with(R"(,"power_watts":300,"extra":[[]])") + "," +
                                          sample_with("") + "]}"))
                .samples.at("a:0"),
            r.samples.at("a:0"));
}

TEST(ReportStreamedSamples, RefusalsNameTheirPath) {
  using C = ReportErrorCode;
  const auto one = [](const std::string& members) {
    return with_raw_samples(R"({"cuda:0":[)" + sample_with(members) + "]}");
  };
  // Duplicate keys, wherever they are (the reader's rule for every object).
  expect_error(one(R"(,"power_watts":1,"power_watts":2)"), "samples.cuda:0[0].power_watts", Kind::malformed,
               C::malformed, "a known key twice");
  expect_error(one(R"(,"future":1,"future":2)"), "samples.cuda:0[0].future", Kind::malformed, C::malformed,
               "an unknown key twice");
  expect_error(one(R"(,"future":{"a":1,"a":2})"), "samples.cuda:0[0].future.a", Kind::malformed, C::malformed,
               "a key twice inside a skipped value");
  expect_error(with_raw_samples(R"({"cuda:0":[],"cuda:0":[]})"), "samples.cuda:0", Kind::malformed, C::malformed,
               "a device twice");
  const std::string twice = with_raw_samples("{}", true);
  expect_error(twice.substr(0, twice.size() - 1) + R"(,"samples":{}})", "samples", Kind::malformed, C::malformed,
               "samples twice");
  // Wrong types at each level.
  expect_error(one(R"(,"power_watts":{"a":1})"), "samples.cuda:0[0].power_watts", Kind::malformed, C::malformed,
               "an object for a gauge");
  expect_error(one(R"(,"clock_mhz":[1])"), "samples.cuda:0[0].clock_mhz", Kind::malformed, C::malformed,
               "an array for a gauge");
  expect_error(with_raw_samples(R"({"cuda:0":[)" + sample_with("") + ",[1]]}"), "samples.cuda:0[1]", Kind::malformed,
               C::malformed, "an array for a sample");
  expect_error(with_raw_samples(R"({"cuda:0":[)" + sample_with("") + ",null]}"), "samples.cuda:0[1]", Kind::malformed,
               C::malformed, "null for a sample");
  expect_error(with_raw_samples(R"({"cuda:0":null})"), "samples.cuda:0", Kind::malformed, C::malformed,
               "null for a device's list");
  expect_error(with_raw_samples("null"), "samples", Kind::malformed, C::malformed, "null for samples");
  expect_error(with_raw_samples(R"("x")"), "samples", Kind::malformed, C::malformed, "a string for samples");
  expect_error(with_raw_samples(R"({"cuda:0":[{"memory_used_bytes":1,"memory_total_bytes":2}]})"),
               "samples.cuda:0[0].timestamp", Kind::malformed, C::malformed, "no timestamp");
  // The reader's limits hold inside samples too.
  const ProtocolError long_key = report_error(one(",\"" + std::string(300, 'k') + "\":1"));
  EXPECT_EQ(long_key.field().rfind("samples.cuda:0[0].kkk", 0), 0U) << long_key.what();
  EXPECT_EQ(report_error_code(long_key), C::malformed);
  const ProtocolError deep = report_error(one(R"(,"future":)" + std::string(20, '[') + std::string(20, ']')));
  EXPECT_EQ(deep.field().rfind("samples.cuda:0[0].future[0]", 0), 0U) << deep.what();
  EXPECT_EQ(report_error_code(deep), C::malformed);
}

TEST(ReportStreamedSamples, RefusalsAreFoundInTheDocumentsOrder) {
  using C = ReportErrorCode;
  const std::string bad_gauge = sample_with(R"(,"utilization_percent":1e39)");  // beyond a float
  // Devices in key order, as an object's members, whatever the document's order.
  expect_error(with_raw_samples(R"({"b:0":[)" + bad_gauge + R"(],"a:0":[)" + bad_gauge + "]}", true),
               "samples.a:0[0].utilization_percent", Kind::invalid, C::invalid_value, "the first device by key");
  // A device's first refused sample.
  expect_error(with_raw_samples(R"({"a:0":[)" + sample_with("") + "," + bad_gauge + R"(,"x"]})"),
               "samples.a:0[1].utilization_percent", Kind::invalid, C::invalid_value, "the first refused sample");
  // Every key before any device's samples.
  expect_error(with_raw_samples(R"({"a:0":[)" + bad_gauge + R"(],"b/c":[]})"), "samples.b/c", Kind::invalid,
               C::invalid_value, "a bad key after a bad sample");
  // The fields the report checks before samples, though samples come first in the text.
  std::string report = with_raw_samples(R"({"a:0":[)" + bad_gauge + "]}", true);
  std::string seq_zero = report;
  seq_zero.replace(seq_zero.find(R"("seq":1)"), 7, R"("seq":0)");
  expect_error(seq_zero, "seq", Kind::invalid, C::invalid_value, "seq before samples");
  std::string format_three = report;
  format_three.replace(format_three.find(R"("report":2)"), 10, R"("report":3)");
  expect_error(format_three, "report", Kind::malformed, C::unsupported_version, "the format first");
  // A bound of ReportLimits before the samples it counts.
  const ReportLimits limits{.max_devices = 2, .max_samples_per_device = 2, .max_samples = 3};
  expect_limit(with_raw_samples(R"({"a:0":[)" + bad_gauge + "," + sample_with("") + "," + sample_with("") + "]}"),
               limits, "samples.a:0", "max_samples_per_device");
  expect_limit(with_raw_samples(R"({"a:0":[)" + sample_with("") + "," + sample_with("") + R"(],"b:0":[)" +
                                sample_with("") + "," + bad_gauge + "]}"),
               limits, "samples", "max_samples");
  // Past the total only in key order: a device before it that has a refused sample is named.
  const ProtocolError first =
      report_error(with_raw_samples(R"({"b:0":[)" + sample_with("") + "," + sample_with("") + R"(],"c:0":[)" +
                                    sample_with("") + R"(],"a:0":[)" + bad_gauge + "]}"),
                   ReportLimits{.max_devices = 4, .max_samples_per_device = 2, .max_samples = 3});
  EXPECT_EQ(first.field(), "samples.a:0[0].utilization_percent") << first.what();
}

// ---------------------------------------------------------------------------
// The ack

TEST(ReportAckErrors, FieldsAndPaths) {
  const json ack = json::parse(encode_report_ack(full_ack()));
  const auto edited_ack = [&](const char* key, const json& value) {
    json j = ack;
    j[key] = value;
    return j.dump();
  };
  for (const char* key : {"ack", "coordinator", "epoch", "interval_ms", "inventory_required", "host", "state",
                          "accepted", "duplicates", "rejected", "rejections", "received_at", "replied_at"}) {
    json j = ack;
    j.erase(key);
    const ProtocolError e = ack_error(j.dump());
    EXPECT_EQ(e.field(), key);
    EXPECT_EQ(e.kind(), Kind::malformed);
  }
  struct Case {
    const char* key;
    json value;
    const char* field;
    Kind kind;
  };
  const Case cases[] = {
      {"ack", 0, "ack", Kind::invalid},
      {"interval_ms", 60001, "interval_ms", Kind::invalid},
      {"inventory_required", 1, "inventory_required", Kind::malformed},
      {"accepted", -1, "accepted", Kind::invalid},
      {"rejections", "none", "rejections", Kind::malformed},
      {"rejections", json::array({"a", 1}), "rejections[1]", Kind::malformed},
      {"replied_at", 1e12, "replied_at", Kind::invalid},
      {"host", nullptr, "host", Kind::malformed},
  };
  for (const Case& c : cases) {
    const ProtocolError e = ack_error(edited_ack(c.key, c.value));
    EXPECT_EQ(e.field(), c.field) << e.what();
    EXPECT_EQ(e.kind(), c.kind) << e.what();
  }
  // A newer coordinator's extra fields are ignored.
  EXPECT_EQ(parse_report_ack(edited_ack("retry_after_ms", 100)), full_ack());
  EXPECT_EQ(std::string(ack_error("[]").what()).rfind("malformed report ack: body", 0), 0U);
}

// ---------------------------------------------------------------------------
// Helpers

TEST(ReportHelpers, IsUuidText) {
  EXPECT_TRUE(is_uuid_text("3f1c2a9b-0c1d-4e5f-8a9b-0c1d2e3f4a5b"));
  EXPECT_TRUE(is_uuid_text("00000000-0000-0000-0000-000000000000"));
  EXPECT_FALSE(is_uuid_text(""));
  EXPECT_FALSE(is_uuid_text("3F1C2A9B-0C1D-4E5F-8A9B-0C1D2E3F4A5B"));  // lowercase only
  EXPECT_FALSE(is_uuid_text("3f1c2a9b-0c1d-4e5f-8a9b-0c1d2e3f4a5"));   // 35
  EXPECT_FALSE(is_uuid_text("3f1c2a9b-0c1d-4e5f-8a9b-0c1d2e3f4a5b0"));
  EXPECT_FALSE(is_uuid_text("3f1c2a9b0c1d-4e5f-8a9b-0c1d2e3f4a5b-"));
  EXPECT_FALSE(is_uuid_text("3f1c2a9g-0c1d-4e5f-8a9b-0c1d2e3f4a5b"));
  EXPECT_FALSE(is_uuid_text("{3f1c2a9b-0c1d-4e5f-8a9b-0c1d2e3f4a5}"));
}

TEST(ReportHelpers, ErrorCodes) {
  EXPECT_STREQ(to_string(ReportErrorCode::malformed), "malformed");
  EXPECT_STREQ(to_string(ReportErrorCode::unsupported_version), "unsupported_version");
  EXPECT_STREQ(to_string(ReportErrorCode::invalid_value), "invalid_value");
  EXPECT_STREQ(to_string(ReportErrorCode::device_limit), "device_limit");
  const ProtocolError e = report_error(edited("/report", 3));
  EXPECT_EQ(e.rule(), kUnsupportedReportRule);
  EXPECT_NE(std::string(e.what()).find("[2]"), std::string::npos);
}

}  // namespace
}  // namespace gpucluster::agent
