// Integration tests of the node agent's HTTP API: each starts the real
// `gpucluster agent` binary on a free loopback port with a simulated fleet.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "support/agent_process.hpp"

namespace gpucluster::testing {
namespace {

using nlohmann::json;

std::string read_file(const std::string& path) {
  std::ifstream file(path);
  std::stringstream content;
  content << file.rdbuf();
  return content.str();
}

json body_of(const httplib::Result& result) {
  EXPECT_TRUE(result) << "no response";
  if (!result) return nullptr;
  return json::parse(result->body);
}

std::string home_fleet() {
  return source_path("examples/fleet-home.json");
}

// The home fleet with fan speed and energy for cuda:0 (an RTX 4090 has a fan
// and an energy counter); cuda:1 and metal:0 report neither.
constexpr double kFanSpeedPercent = 42.5;
constexpr double kEnergyJoules = 123456.0;

std::filesystem::path write_fleet_with_fan_and_energy() {
  json fleet = json::parse(read_file(home_fleet()));
  for (json& device : fleet["devices"]) {
    if (device["device_id"] != "cuda:0") continue;
    device["metrics"]["fan_speed_percent"] = kFanSpeedPercent;
    device["metrics"]["energy_joules"] = kEnergyJoules;
  }
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("gpucluster-agent-api-fleet-" + std::to_string(::getpid()) + ".json");
  std::ofstream(path) << fleet.dump();
  return path;
}

class AgentApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fleet_ = write_fleet_with_fan_and_energy();
    agent_ =
        std::make_unique<AgentProcess>(std::vector<std::string>{"--fleet", fleet_.string(), "--interval", "100ms"});
  }
  static void TearDownTestSuite() {
    agent_.reset();
    std::error_code ignored;
    std::filesystem::remove(fleet_, ignored);
  }
  static std::unique_ptr<AgentProcess> agent_;
  static std::filesystem::path fleet_;
};
std::unique_ptr<AgentProcess> AgentApi::agent_;
std::filesystem::path AgentApi::fleet_;

TEST_F(AgentApi, BannerPrintsTheUrls) {
  EXPECT_NE(agent_->banner().find("/v1/devices"), std::string::npos) << agent_->banner();
  EXPECT_NE(agent_->banner().find("/metrics"), std::string::npos);
}

TEST_F(AgentApi, HealthzIsOkWhileRunning) {
  auto client = agent_->client();
  const auto result = client.Get("/healthz");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  const json body = json::parse(result->body);
  EXPECT_EQ(body["status"], "ok");
  EXPECT_EQ(body["state"], "running");
}

TEST_F(AgentApi, DevicesListsTheFleetWithTheCliJsonObjects) {
  auto client = agent_->client();
  const auto result = client.Get("/v1/devices");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->get_header_value("Content-Type"), "application/json");
  const json devices = json::parse(result->body);
  ASSERT_TRUE(devices.is_array());
  std::vector<std::string> ids;
  for (const json& device : devices) ids.push_back(device["id"]);
  EXPECT_NE(std::find(ids.begin(), ids.end(), "home/cuda:0"), ids.end());
  EXPECT_NE(std::find(ids.begin(), ids.end(), "home/metal:0"), ids.end());
  for (const char* key : {"device_id", "host", "available", "score", "metrics", "memory_bytes", "eligibility"}) {
    EXPECT_TRUE(devices[0].contains(key)) << key;
  }
}

TEST_F(AgentApi, OneDeviceByIdWithItsWindowStatistics) {
  auto client = agent_->client();
  const auto result = client.Get("/v1/devices/home/cuda:0");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const json device = json::parse(result->body);
  EXPECT_EQ(device["id"], "home/cuda:0");
  EXPECT_EQ(device["name"], "NVIDIA GeForce RTX 4090");
  EXPECT_TRUE(device.contains("window"));
  // The slash of the id may also come percent-encoded.
  const auto encoded = client.Get("/v1/devices/home%2Fcuda:0");
  ASSERT_TRUE(encoded);
  EXPECT_EQ(encoded->status, 200);
}

TEST_F(AgentApi, UnknownDeviceIs404WithTheErrorShape) {
  auto client = agent_->client();
  const auto result = client.Get("/v1/devices/home/cuda:9");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
  const json body = json::parse(result->body);
  EXPECT_EQ(body["error"]["code"], "unknown_device");
  EXPECT_TRUE(body["error"]["message"].is_string());
  EXPECT_TRUE(body["error"].contains("field"));
}

TEST_F(AgentApi, UnknownRouteIs404Json) {
  auto client = agent_->client();
  const auto result = client.Get("/v2/nothing");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
  EXPECT_EQ(json::parse(result->body)["error"]["code"], "not_found");
}

TEST_F(AgentApi, HistoryIsChronologicalAndLimited) {
  auto client = agent_->client();
  std::this_thread::sleep_for(std::chrono::milliseconds(350));  // a few 100 ms sampling passes
  const auto result = client.Get("/v1/devices/home/cuda:0/history?limit=3");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const json body = json::parse(result->body);
  EXPECT_EQ(body["device"], "home/cuda:0");
  const json& samples = body["samples"];
  ASSERT_GE(samples.size(), 2U);
  EXPECT_LE(samples.size(), 3U);
  for (std::size_t i = 1; i < samples.size(); ++i) {
    EXPECT_LT(samples[i - 1]["timestamp"].get<double>(), samples[i]["timestamp"].get<double>());
  }
}

TEST_F(AgentApi, HistoryLimitIsChecked) {
  auto client = agent_->client();
  const auto zero = client.Get("/v1/devices/home/cuda:0/history?limit=0");
  ASSERT_TRUE(zero);
  EXPECT_EQ(zero->status, 422);
  EXPECT_EQ(json::parse(zero->body)["error"]["field"], "limit");
  const auto text = client.Get("/v1/devices/home/cuda:0/history?limit=ten");
  ASSERT_TRUE(text);
  EXPECT_EQ(text->status, 400);
  const auto huge = client.Get("/v1/devices/home/cuda:0/history?limit=99999999999");
  ASSERT_TRUE(huge);
  EXPECT_EQ(huge->status, 422);
}

TEST_F(AgentApi, ClusterHasTheSeedKeys) {
  auto client = agent_->client();
  const json body = body_of(client.Get("/v1/cluster"));
  for (const char* key :
       {"device_count", "total_memory_bytes", "used_memory_bytes", "available_memory_bytes",
        "average_utilization_percent", "average_temperature_celsius", "total_power_watts", "timestamp"}) {
    EXPECT_TRUE(body.contains(key)) << key;
  }
  EXPECT_GE(body["device_count"].get<int>(), 3);
}

TEST_F(AgentApi, SelectReturnsTheBestDeviceOrNull) {
  auto client = agent_->client();
  const auto any = client.Post("/v1/select", R"({"min_memory_bytes": 0})", "application/json");
  ASSERT_TRUE(any);
  ASSERT_EQ(any->status, 200) << any->body;
  const json chosen = json::parse(any->body);
  EXPECT_TRUE(chosen["device"].is_string());
  EXPECT_GT(chosen["score"].get<double>(), 0.0);
  EXPECT_TRUE(chosen["reason"].is_string());

  const auto none = client.Post("/v1/select", R"({"min_memory_bytes": 1e15})", "application/json");
  ASSERT_TRUE(none);
  ASSERT_EQ(none->status, 200);
  EXPECT_TRUE(json::parse(none->body)["device"].is_null());

  const auto wrong = client.Post("/v1/select", R"({"min_memory_bytes": "8GiB"})", "application/json");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 400);
  EXPECT_EQ(json::parse(wrong->body)["error"]["field"], "min_memory_bytes");
}

TEST_F(AgentApi, PlanMatchesTheCliPlanJson) {
  auto client = agent_->client();
  const auto result =
      client.Post("/v1/plan", R"({"items": 1000, "strategy": "uniform", "max_per_device": 100})", "application/json");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const json plan = json::parse(result->body);
  std::uint64_t assigned = 0;
  for (const json& assignment : plan["assignments"]) assigned += assignment["count"].get<std::uint64_t>();
  EXPECT_EQ(assigned + plan["unassigned"].get<std::uint64_t>(), 1000U);  // nothing lost
  EXPECT_GT(plan["unassigned"].get<std::uint64_t>(), 0U);

  const auto capacity = client.Post(
      "/v1/plan", R"({"items": 10, "strategy": "capacity", "weights": {"home/cuda:0": 3, "home/cuda:1": 1}})",
      "application/json");
  ASSERT_TRUE(capacity);
  ASSERT_EQ(capacity->status, 200) << capacity->body;
  const json weighted = json::parse(capacity->body);
  ASSERT_EQ(weighted["assignments"].size(), 2U);

  const auto bad_weight = client.Post(
      "/v1/plan", R"({"items": 10, "strategy": "capacity", "weights": {"home/cuda:0": -1}})", "application/json");
  ASSERT_TRUE(bad_weight);
  EXPECT_EQ(bad_weight->status, 422);

  const auto memory =
      client.Post("/v1/plan", R"({"strategy": "memory", "layers": 4, "layer_bytes": 1e15})", "application/json");
  ASSERT_TRUE(memory);
  EXPECT_EQ(memory->status, 422);
  EXPECT_NE(json::parse(memory->body)["error"]["message"].get<std::string>().find("falls short"), std::string::npos);
}

TEST_F(AgentApi, MetricsIsPrometheusText) {
  auto client = agent_->client();
  const auto result = client.Get("/metrics");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_NE(result->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  EXPECT_NE(result->body.find("# TYPE gpucluster_device_up gauge"), std::string::npos);
  EXPECT_NE(result->body.find("device=\"cuda:0\""), std::string::npos);
}

// Fan speed and energy as the agent serves them: values in /v1/devices and
// /metrics for the device that has them, null and no series for the others.
TEST_F(AgentApi, DevicesCarryFanSpeedAndEnergyAndNullWithoutThem) {
  auto client = agent_->client();
  const json devices = body_of(client.Get("/v1/devices"));
  ASSERT_TRUE(devices.is_array()) << devices.dump();
  int seen = 0;
  for (const json& device : devices) {
    const json& metrics = device["metrics"];
    ASSERT_TRUE(metrics.is_object()) << device.dump();
    if (device["id"] == "home/cuda:0") {
      ++seen;
      EXPECT_EQ(metrics["fan_speed_percent"], kFanSpeedPercent) << metrics.dump();
      EXPECT_EQ(metrics["energy_joules"], kEnergyJoules) << metrics.dump();
    } else if (device["id"] == "home/cuda:1" || device["id"] == "home/metal:0") {
      ++seen;
      ASSERT_TRUE(metrics.contains("fan_speed_percent")) << metrics.dump();
      ASSERT_TRUE(metrics.contains("energy_joules")) << metrics.dump();
      EXPECT_TRUE(metrics["fan_speed_percent"].is_null()) << device["id"] << ": " << metrics.dump();
      EXPECT_TRUE(metrics["energy_joules"].is_null()) << device["id"] << ": " << metrics.dump();
    }
  }
  EXPECT_EQ(seen, 3) << devices.dump();
}

TEST_F(AgentApi, MetricsExportFanSpeedAsARatioAndEnergyAsACounter) {
  auto client = agent_->client();
  const auto result = client.Get("/metrics");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200);
  const std::string& text = result->body;
  const std::string labels =
      R"({host="home",device="cuda:0",uuid="GPU-3f8e1a6c-52d9-4b07-9e2a-c6d14f8b0a73",model="NVIDIA GeForce RTX 4090"})";
  EXPECT_NE(text.find("\ngpucluster_fan_speed_ratio" + labels + " 0.425\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\ngpucluster_energy_joules_total" + labels + " 123456\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE gpucluster_fan_speed_ratio gauge\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE gpucluster_energy_joules_total counter\n"), std::string::npos) << text;
  // One series each: the devices without them have none (not a 0).
  std::istringstream lines(text);
  int fan_series = 0, energy_series = 0;
  for (std::string line; std::getline(lines, line);) {
    fan_series += line.rfind("gpucluster_fan_speed_ratio{", 0) == 0 ? 1 : 0;
    energy_series += line.rfind("gpucluster_energy_joules_total{", 0) == 0 ? 1 : 0;
  }
  EXPECT_EQ(fan_series, 1) << text;
  EXPECT_EQ(energy_series, 1) << text;
}

// The protocol's documented example messages, in the order a client sends them.
TEST(AgentTelemetry, DocumentedExampleMessagesFeedTheAgent) {
  AgentProcess agent({"--fleet", home_fleet(), "--interval", "1s"});
  auto client = agent.client();
  const auto post = [&](const std::string& name) {
    auto result = client.Post("/v1/telemetry", read_file(source_path("examples/protocol/" + name)), "application/json");
    EXPECT_TRUE(result);
    return result;
  };
  const auto registered = post("registration.json");
  ASSERT_EQ(registered->status, 202) << registered->body;
  EXPECT_EQ(json::parse(registered->body)["device"], "node-a/cuda:0");

  const json device = body_of(client.Get("/v1/devices/node-a/cuda:0"));
  EXPECT_EQ(device["name"], "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(device["backend"], "remote");
  EXPECT_EQ(device["memory_bytes"], 85520809984);

  ASSERT_EQ(post("heartbeat.json")->status, 202);
  ASSERT_EQ(post("metrics.json")->status, 202);
  ASSERT_EQ(post("metrics-partial.json")->status, 202);
  const json latest = body_of(client.Get("/v1/devices/node-a/cuda:0"));
  EXPECT_EQ(latest["metrics"]["compute_utilization_percent"], 88.5);
  EXPECT_TRUE(latest["metrics"]["power_watts"].is_null()) << "unavailable must stay null, never 0";
  EXPECT_EQ(latest["available"], true);

  const json history = body_of(client.Get("/v1/devices/node-a/cuda:0/history"));
  ASSERT_EQ(history["samples"].size(), 3U);
  EXPECT_EQ(history["samples"][0]["timestamp"], 1717171720.5);

  ASSERT_EQ(post("heartbeat-unavailable.json")->status, 202);
  const json lost = body_of(client.Get("/v1/devices/node-a/cuda:0"));
  EXPECT_EQ(lost["available"], false);
  EXPECT_NE(lost["error_message"].get<std::string>().find("GPU is lost"), std::string::npos);

  // A retransmitted sample (the agent holds it) is acknowledged and not stored twice.
  const auto again = post("metrics.json");
  ASSERT_EQ(again->status, 202) << again->body;
  EXPECT_EQ(json::parse(again->body)["status"], "duplicate");
  EXPECT_EQ(body_of(client.Get("/v1/devices/node-a/cuda:0/history"))["samples"].size(), 3U);
  // The same timestamp with other values is a conflict (409); a sample older
  // than the newest that the agent does not hold is out of order (422). Neither changes anything.
  std::string clash = read_file(source_path("examples/protocol/metrics.json"));
  clash.replace(clash.find("\"power_watts\": 655.5"), 20, "\"power_watts\": 600.0");
  const auto conflict = client.Post("/v1/telemetry", clash, "application/json");
  ASSERT_TRUE(conflict);
  EXPECT_EQ(conflict->status, 409) << conflict->body;
  EXPECT_EQ(json::parse(conflict->body)["error"]["code"], "rejected_conflict");
  EXPECT_EQ(json::parse(conflict->body)["error"]["field"], "power_watts");
  std::string older = read_file(source_path("examples/protocol/metrics.json"));
  for (std::size_t at = older.find("1717171721.25"); at != std::string::npos; at = older.find("1717171721.25")) {
    older.replace(at, 13, "1717171700.00");
  }
  const auto stale = client.Post("/v1/telemetry", older, "application/json");
  ASSERT_TRUE(stale);
  EXPECT_EQ(stale->status, 422) << stale->body;
  EXPECT_EQ(json::parse(stale->body)["error"]["code"], "rejected_out_of_order");
  EXPECT_EQ(body_of(client.Get("/v1/devices/node-a/cuda:0/history"))["samples"].size(), 3U);
  const auto exposition = client.Get("/metrics");
  ASSERT_TRUE(exposition);
  EXPECT_NE(exposition->body.find("gpucluster_duplicate_samples_total 1\n"), std::string::npos);
  EXPECT_NE(exposition->body.find("gpucluster_rejected_samples_total{reason=\"conflict\"} 1\n"), std::string::npos);
  EXPECT_NE(exposition->body.find("gpucluster_rejected_samples_total{reason=\"out_of_order\"} 1\n"), std::string::npos);

  // Remote devices show up in the Prometheus output with their host label.
  const auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("host=\"node-a\""), std::string::npos);
}

// docs/protocol.md's examples in the order of its table: the unavailable
// heartbeat marks the device unavailable; a sample stamped after it shows the
// device reporting again; one stamped before it (a late delivery) does not.
TEST(AgentTelemetry, ASampleAfterAnUnavailableHeartbeatMakesTheDeviceAvailableAgain) {
  AgentProcess agent({"--fleet", home_fleet()});
  auto client = agent.client();
  const auto post = [&](const std::string& name) {
    return client.Post("/v1/telemetry", read_file(source_path("examples/protocol/" + name)), "application/json");
  };
  const auto available = [&] { return body_of(client.Get("/v1/devices/node-a/cuda:0"))["available"]; };
  ASSERT_EQ(post("registration.json")->status, 202);
  ASSERT_EQ(post("heartbeat.json")->status, 202);
  ASSERT_EQ(post("heartbeat-unavailable.json")->status, 202);
  EXPECT_EQ(available(), false);
  std::string late = read_file(source_path("examples/protocol/metrics.json"));
  for (std::size_t at = late.find("1717171721.25"); at != std::string::npos; at = late.find("1717171721.25")) {
    late.replace(at, 13, "1717171720.75");  // after the last sample, before the unavailable heartbeat
  }
  ASSERT_EQ(client.Post("/v1/telemetry", late, "application/json")->status, 202);
  EXPECT_EQ(available(), false) << "a sample taken before the heartbeat says nothing of after it";
  ASSERT_EQ(post("metrics.json")->status, 202);
  EXPECT_EQ(available(), true);
  ASSERT_EQ(post("metrics-partial.json")->status, 202);
  EXPECT_EQ(available(), true);
}

TEST(AgentTelemetry, HeartbeatForAnUnregisteredDeviceIs404) {
  AgentProcess agent({"--fleet", home_fleet()});
  auto client = agent.client();
  const auto result =
      client.Post("/v1/telemetry", read_file(source_path("examples/protocol/heartbeat.json")), "application/json");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
  EXPECT_EQ(json::parse(result->body)["error"]["code"], "unknown_device");
}

// Every rejected sample is counted under its reason, including those refused
// before the store sees them: a device nobody registered, or a device id
// registered from two hosts that the message does not settle.
TEST(AgentTelemetry, SamplesForUnknownOrAmbiguousDevicesAreCounted) {
  AgentProcess agent({"--fleet", home_fleet()});
  auto client = agent.client();
  const auto rejected_unknown = [&] {
    const std::string text = client.Get("/metrics")->body;
    const std::string series = "gpucluster_rejected_samples_total{reason=\"unknown_device\"} ";
    const auto at = text.find(series);
    return at == std::string::npos ? std::string("absent")
                                   : text.substr(at + series.size(), text.find('\n', at) - at - series.size());
  };
  EXPECT_EQ(rejected_unknown(), "0");
  const std::string metrics = read_file(source_path("examples/protocol/metrics.json"));
  EXPECT_EQ(client.Post("/v1/telemetry", metrics, "application/json")->status, 404);
  EXPECT_EQ(rejected_unknown(), "1");
  // A heartbeat without a sample carries no sample to count.
  std::string bare_heartbeat = read_file(source_path("examples/protocol/heartbeat-unavailable.json"));
  EXPECT_EQ(client.Post("/v1/telemetry", bare_heartbeat, "application/json")->status, 404);
  EXPECT_EQ(rejected_unknown(), "1");
  // cuda:0 from two hosts: a metrics message naming no host cannot be placed.
  std::string registration = read_file(source_path("examples/protocol/registration.json"));
  ASSERT_EQ(client.Post("/v1/telemetry", registration, "application/json")->status, 202);
  registration.replace(registration.find("\"node-a\""), 8, "\"node-b\"");
  ASSERT_EQ(client.Post("/v1/telemetry", registration, "application/json")->status, 202);
  EXPECT_EQ(client.Post("/v1/telemetry", metrics, "application/json")->status, 400);
  EXPECT_EQ(rejected_unknown(), "2");
}

// The devices' full histories stay within --history-memory: a registration
// that would pass it is refused (422, naming the budget) and changes nothing.
TEST(AgentTelemetry, RegistrationsBeyondTheHistoryMemoryAreRefused) {
  // fleet-home has 3 devices; room for 4 histories of 100 samples (56 bytes each).
  AgentProcess agent({"--fleet", home_fleet(), "--history", "100", "--history-memory", "22400"});
  auto client = agent.client();
  std::string registration = read_file(source_path("examples/protocol/registration.json"));
  ASSERT_EQ(client.Post("/v1/telemetry", registration, "application/json")->status, 202);
  registration.replace(registration.find("\"node-a\""), 8, "\"node-b\"");
  const auto refused = client.Post("/v1/telemetry", registration, "application/json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 422) << refused->body;
  EXPECT_EQ(json::parse(refused->body)["error"]["field"], "history");
  EXPECT_NE(refused->body.find("room for 4 devices"), std::string::npos) << refused->body;
  EXPECT_EQ(body_of(client.Get("/v1/devices")).size(), 4U);
}

// A bare id that several hosts have is ambiguous: the answer says so and
// lists the candidates (docs audit row 26: it was a 404 naming the agent's host).
TEST(AgentTelemetry, AnAmbiguousBareDeviceIdListsTheCandidates) {
  AgentProcess agent({"--fleet", home_fleet()});
  auto client = agent.client();
  ASSERT_EQ(
      client.Post("/v1/telemetry", read_file(source_path("examples/protocol/registration.json")), "application/json")
          ->status,
      202);
  const auto answer = client.Get("/v1/devices/cuda:0");
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 400) << answer->body;
  const json error = json::parse(answer->body)["error"];
  EXPECT_EQ(error["code"], "ambiguous_device");
  EXPECT_EQ(error["value"], "cuda:0");
  EXPECT_NE(error["message"].get<std::string>().find("home/cuda:0, node-a/cuda:0"), std::string::npos) << error;
  EXPECT_EQ(client.Get("/v1/devices/metal:0")->status, 200);  // one host has it: resolved
  EXPECT_EQ(client.Get("/v1/devices/node-a%2Fcuda:0")->status, 200);
}

// "." and ".." cannot be one path segment of /v1/devices/{id}: refused at
// ingest (paths naming them: tests/agent/malformed_requests_test.cpp).
TEST(AgentTelemetry, DotAndDotDotAreNotDeviceIdsOrHostNames) {
  AgentProcess agent({"--fleet", home_fleet()});
  auto client = agent.client();
  const std::string registration = read_file(source_path("examples/protocol/registration.json"));
  for (const std::string& bad : {std::string("."), std::string("..")}) {
    std::string as_host = registration;
    as_host.replace(as_host.find("\"node-a\""), 8, "\"" + bad + "\"");
    const auto host = client.Post("/v1/telemetry", as_host, "application/json");
    ASSERT_TRUE(host);
    EXPECT_EQ(host->status, 422) << bad << ": " << host->body;
    EXPECT_NE(host->body.find("path segment"), std::string::npos) << host->body;
    std::string as_device = registration;
    for (std::size_t at = as_device.find("\"cuda:0\""); at != std::string::npos; at = as_device.find("\"cuda:0\"")) {
      as_device.replace(at, 8, "\"" + bad + "\"");
    }
    const auto device = client.Post("/v1/telemetry", as_device, "application/json");
    ASSERT_TRUE(device);
    EXPECT_EQ(device->status, 422) << bad << ": " << device->body;
  }
  EXPECT_EQ(body_of(client.Get("/v1/devices")).size(), 3U) << "nothing was registered";
}

TEST(AgentSecurity, NonLoopbackAddressWithoutTokenRefusesToStart) {
  EXPECT_THROW(AgentProcess({"--fleet", home_fleet(), "--listen", "0.0.0.0:0"}, std::chrono::seconds{10}),
               std::runtime_error);
}

TEST(AgentSecurity, TokenIsRequiredOnPostButNotOnGet) {
  const auto token_path = std::filesystem::temp_directory_path() / ("gpucluster-token-" + std::to_string(getpid()));
  {
    std::ofstream token(token_path);
    token << "s3cret-token\n";
  }
  std::filesystem::permissions(token_path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  AgentProcess agent({"--fleet", home_fleet(), "--token-file", token_path.string()});
  auto client = agent.client();
  const std::string body = R"({"min_memory_bytes": 0})";
  const auto missing = client.Post("/v1/select", body, "application/json");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 401);
  EXPECT_EQ(json::parse(missing->body)["error"]["code"], "unauthorized");

  const auto wrong = client.Post("/v1/select", {{"Authorization", "Bearer s3cret-tokem"}}, body, "application/json");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);

  const auto right = client.Post("/v1/select", {{"Authorization", "Bearer s3cret-token"}}, body, "application/json");
  ASSERT_TRUE(right);
  EXPECT_EQ(right->status, 200);

  // RFC 7235: the scheme name is case-insensitive, and one or more spaces follow it.
  for (const char* authorization :
       {"bearer s3cret-token", "BEARER s3cret-token", "bEaReR s3cret-token", "Bearer   s3cret-token"}) {
    const auto any_case = client.Post("/v1/select", {{"Authorization", authorization}}, body, "application/json");
    ASSERT_TRUE(any_case) << authorization;
    EXPECT_EQ(any_case->status, 200) << authorization << ": " << any_case->body;
  }
  for (const char* authorization : {"bearer s3cret-tokem", "Bearers3cret-token", "Bearer\ts3cret-token", "bearer"}) {
    const auto refused = client.Post("/v1/select", {{"Authorization", authorization}}, body, "application/json");
    ASSERT_TRUE(refused) << authorization;
    EXPECT_EQ(refused->status, 401) << authorization;
  }

  const auto open = client.Get("/v1/devices");
  ASSERT_TRUE(open);
  EXPECT_EQ(open->status, 200);
  std::filesystem::remove(token_path);
}

// Without the token, a POST is refused on its head: the agent neither waits
// for nor reads the body it announces, and closes the connection.
TEST(AgentSecurity, PostWithoutTheTokenIsRefusedBeforeItsBodyIsRead) {
  const auto token_path =
      std::filesystem::temp_directory_path() / ("gpucluster-head-token-" + std::to_string(getpid()));
  {
    std::ofstream token(token_path);
    token << "head-token\n";
  }
  std::filesystem::permissions(token_path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  AgentProcess agent({"--fleet", home_fleet(), "--token-file", token_path.string()});
  httplib::Client client("127.0.0.1", agent.port());
  client.set_read_timeout(std::chrono::seconds{5});
  // Only the head is sent (1 MiB announced); the answer comes without the body.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(agent.port()));
  ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);
  const std::string head =
      "POST /v1/telemetry HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer wrong\r\nContent-Length: "
      "1048576\r\n\r\n";
  ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
  std::string answer;
  char buffer[4096];
  for (ssize_t n = 0; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;)
    answer.append(buffer, static_cast<std::size_t>(n));
  ::close(fd);
  EXPECT_EQ(answer.rfind("HTTP/1.1 401", 0), 0U) << "no answer before the body: " << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  const std::size_t body_at = answer.find("\r\n\r\n");
  ASSERT_NE(body_at, std::string::npos) << answer;
  const json error = json::parse(answer.substr(body_at + 4))["error"];
  EXPECT_EQ(error["code"], "unauthorized");
  EXPECT_EQ(error["field"], "Authorization");
  // Counted under its route like any answer.
  const auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find(R"(gpucluster_http_requests_total{route="/v1/telemetry",code="401"} 1)"),
            std::string::npos)
      << metrics->body;
  std::filesystem::remove(token_path);
}

TEST(AgentLifecycle, SigtermDrainsAndExitsZero) {
  AgentProcess agent({"--fleet", home_fleet(), "--interval", "50ms"});
  // Load from several clients while the signal arrives: every request either
  // gets a whole answer or a refused connection, never a 5xx or a cut answer.
  std::atomic<bool> stop{false};
  std::atomic<int> server_errors{0}, answered{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&] {
      auto client = agent.client();
      while (!stop.load()) {
        const auto result = client.Get("/v1/devices");
        if (!result) continue;
        if (result->status >= 500) ++server_errors;
        if (result->status == 200) {
          json parsed;
          EXPECT_NO_THROW(parsed = json::parse(result->body));
          ++answered;
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const int status = agent.stop(SIGTERM);
  stop.store(true);
  for (auto& client : clients) client.join();
  ASSERT_TRUE(WIFEXITED(status)) << agent.stderr_text();
  EXPECT_EQ(WEXITSTATUS(status), 0) << agent.stderr_text();
  EXPECT_EQ(server_errors.load(), 0);
  EXPECT_GT(answered.load(), 0);
  EXPECT_NE(agent.stderr_text().find("agent stopped"), std::string::npos) << agent.stderr_text();
}

}  // namespace
}  // namespace gpucluster::testing
