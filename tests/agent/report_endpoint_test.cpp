// POST /v2/report against the real agent binary (`gpucluster agent
// --coordinator --token-file F`): every kind of bad report is a clear 4xx
// naming the field, changes nothing (the devices and nodes read the same
// before and after) and is counted (gpucluster_reports_rejected_total{reason},
// or the HTTP request counter for a refusal on the head).
#include <unistd.h>

#include <csignal>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "gpucluster/wire/report.hpp"
#include "support/agent_process.hpp"
#include "support/loopback_connection.hpp"

namespace gpucluster::testing {
namespace {

using agent::Report;
using nlohmann::json;

constexpr const char* kToken = "s3cret-token-for-reports";
constexpr const char* kNodeA = "3f1c2a9b-0c1d-4e5f-8a9b-0c1d2e3f4a5b";
constexpr const char* kNodeB = "9d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a";

Report base_report(const std::string& id, std::uint64_t seq, std::uint64_t incarnation, int devices,
                   const std::string& name) {
  Report report;
  report.node.id = id;
  report.node.incarnation = incarnation;
  report.node.name = name;
  report.node.agent_version = "test";
  report.seq = seq;
  report.sent_at = now_timestamp();
  report.inventory_version = 1;
  if (devices > 0) {
    report.inventory.emplace();
    for (int i = 0; i < devices; ++i) {
      DeviceInfo info;
      info.key.local_id = fmt::format("cuda:{}", i);
      info.name = "GPU";
      info.vendor = "nvidia";
      info.kind = DeviceKind::cuda;
      info.backend = "nvml";
      info.memory_total_bytes = 80'000'000'000ULL;
      report.inventory->push_back(info);
    }
  }
  return report;
}

class ReportEndpoint : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::signal(SIGPIPE, SIG_IGN);  // a refused body's write fails with EPIPE instead
    dir_ = std::filesystem::temp_directory_path() / fmt::format("gpucluster-report-endpoint-{}", ::getpid());
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "token") << kToken << "\n";
    std::filesystem::permissions(dir_ / "token",
                                 std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    coordinator_ = new AgentProcess({"--coordinator", "--state-dir", (dir_ / "state").string(), "--node-name", "coord",
                                     "--token-file", (dir_ / "token").string(), "--fleet",
                                     source_path("examples/fleet-home.json")});
    // One node the bad reports try to disturb: gpu-a, incarnation 2, last seq 10.
    ASSERT_EQ(post(base_report(kNodeA, 1, 1, 2, "gpu-a")).status, 200);
    ASSERT_EQ(post(base_report(kNodeA, 10, 2, 2, "gpu-a")).status, 200);
  }
  static void TearDownTestSuite() {
    delete coordinator_;  // SIGKILL, as a crashed test would leave it
    coordinator_ = nullptr;
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  struct Answer {
    int status = 0;
    json body;
  };
  static Answer post_body(const std::string& body, bool with_token = true) {
    httplib::Client client = coordinator_->client();
    httplib::Headers headers;
    if (with_token) headers.emplace("Authorization", std::string("Bearer ") + kToken);
    const auto result = client.Post("/v2/report", headers, body, "application/json");
    if (!result) return {};
    return {result->status, json::parse(result->body, nullptr, false)};
  }
  static Answer post(const Report& report) { return post_body(agent::encode_report(report)); }

  // What must not change: the devices, and each node's identity, incarnation, state and devices.
  static json state() {
    httplib::Client client = coordinator_->client();
    json devices = json::array();
    for (const json& device : json::parse(client.Get("/v1/devices")->body)) {
      devices.push_back({device["id"], device["available"]});
    }
    json nodes = json::array();
    // Held in a variable: a range-for over a member of a temporary would read freed memory.
    const json listed = json::parse(client.Get("/v1/nodes")->body);
    for (const json& node : listed["nodes"]) {
      nodes.push_back({node["id"], node["name"], node["incarnation"], node["state"], node["devices"], node["reports"]});
    }
    return json{{"devices", devices}, {"nodes", nodes}};
  }

  // The value of one series of /metrics (0 when absent).
  static double metric(const std::string& series) {
    httplib::Client client = coordinator_->client();
    const std::string text = client.Get("/metrics")->body;
    const std::size_t at = text.find("\n" + series + " ");
    if (at == std::string::npos) return 0;
    return std::stod(text.substr(at + series.size() + 2));
  }

  // Posts `body`, expects `status` and `code` naming `field`, the state unchanged and `counter` + 1.
  static void expect_refused(const std::string& body, int status, const std::string& code, const std::string& field,
                             const std::string& counter, bool with_token = true) {
    const json before = state();
    const double counted_before = metric(counter);
    const Answer answer = post_body(body, with_token);
    EXPECT_EQ(answer.status, status) << answer.body.dump();
    ASSERT_TRUE(answer.body.is_object()) << "not JSON";
    EXPECT_EQ(answer.body["error"]["code"], code) << answer.body.dump();
    if (!field.empty()) {
      EXPECT_EQ(answer.body["error"]["field"], field) << answer.body.dump();
    }
    EXPECT_FALSE(answer.body["error"]["message"].get<std::string>().empty());
    EXPECT_EQ(state(), before) << "a refused report changed the coordinator's view";
    EXPECT_EQ(metric(counter), counted_before + 1) << counter;
  }

  static inline std::filesystem::path dir_;
  static inline AgentProcess* coordinator_ = nullptr;
};

TEST_F(ReportEndpoint, WithoutTheTokenIsUnauthorized) {
  expect_refused(agent::encode_report(base_report(kNodeB, 1, 1, 1, "gpu-b")), 401, "unauthorized", "Authorization",
                 "gpucluster_http_requests_total{route=\"/v2/report\",code=\"401\"}", /*with_token=*/false);
}

TEST_F(ReportEndpoint, WrongTypesNameTheField) {
  json body = json::parse(agent::encode_report(base_report(kNodeB, 1, 1, 1, "gpu-b")));
  body["node"]["incarnation"] = "one";
  expect_refused(body.dump(), 400, "malformed", "node.incarnation",
                 "gpucluster_reports_rejected_total{reason=\"malformed\"}");
  body = json::parse(agent::encode_report(base_report(kNodeB, 1, 1, 1, "gpu-b")));
  body["samples"] = json{{"cuda:0", json::array({json{{"timestamp", "now"}}})}};
  expect_refused(body.dump(), 400, "malformed", "samples.cuda:0[0].timestamp",
                 "gpucluster_reports_rejected_total{reason=\"malformed\"}");
  expect_refused("{not json", 400, "malformed", "", "gpucluster_reports_rejected_total{reason=\"malformed\"}");
  body = json::parse(agent::encode_report(base_report(kNodeB, 1, 1, 1, "gpu-b")));
  body["report"] = 3;
  expect_refused(body.dump(), 400, "unsupported_version", "report",
                 "gpucluster_reports_rejected_total{reason=\"unsupported_version\"}");
}

TEST_F(ReportEndpoint, HugeInventoriesAndBodiesAreRefused) {
  expect_refused(agent::encode_report(base_report(kNodeB, 1, 1, 257, "gpu-b")), 422, "device_limit", "inventory",
                 "gpucluster_reports_rejected_total{reason=\"device_limit\"}");
  // A 2 MiB body is refused on its head (Content-Length), before a byte of it is read.
  const json before = state();
  LoopbackConnection connection(coordinator_->port());
  ASSERT_TRUE(
      connection.send(fmt::format("POST /v2/report HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n"
                                  "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                                  kToken, 2 * 1024 * 1024)));
  const std::string answer = connection.read_all();
  EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0U) << answer;
  EXPECT_NE(answer.find("payload_too_large"), std::string::npos) << answer;
  EXPECT_EQ(state(), before);
}

TEST_F(ReportEndpoint, SequenceGoingBackwardsIsStale) {
  expect_refused(agent::encode_report(base_report(kNodeA, 9, 2, 0, "gpu-a")), 409, "stale_sequence", "seq",
                 "gpucluster_reports_rejected_total{reason=\"stale_sequence\"}");
}

TEST_F(ReportEndpoint, AnotherNodesIdWithAnotherNameIsAConflict) {
  expect_refused(agent::encode_report(base_report(kNodeA, 11, 2, 0, "impostor")), 409, "identity_conflict", "node.name",
                 "gpucluster_reports_rejected_total{reason=\"identity_conflict\"}");
}

TEST_F(ReportEndpoint, AReplayedOldIncarnationIsStale) {
  expect_refused(agent::encode_report(base_report(kNodeA, 50, 1, 2, "gpu-a")), 409, "stale_incarnation",
                 "node.incarnation", "gpucluster_reports_rejected_total{reason=\"stale_incarnation\"}");
}

TEST_F(ReportEndpoint, SamplesOfADeviceOutsideTheInventoryAreRefused) {
  Report report = base_report(kNodeA, 12, 2, 0, "gpu-a");
  Sample sample;
  sample.timestamp = now_timestamp();
  sample.memory_total_bytes = 1;
  report.samples["cuda:7"] = {sample};
  expect_refused(agent::encode_report(report), 422, "unknown_device", "samples.cuda:7",
                 "gpucluster_reports_rejected_total{reason=\"unknown_device\"}");
}

TEST_F(ReportEndpoint, ANewNodeWithoutItsInventoryIsAskedForIt) {
  expect_refused(agent::encode_report(base_report(kNodeB, 1, 1, 0, "gpu-b")), 409, "inventory_required", "inventory",
                 "gpucluster_reports_rejected_total{reason=\"inventory_required\"}");
}

TEST(ReportEndpointPlainAgent, AnAgentWithoutCoordinatorSaysSo) {
  AgentProcess plain({"--fleet", source_path("examples/fleet-home.json")});
  httplib::Client client = plain.client();
  const auto result =
      client.Post("/v2/report", agent::encode_report(base_report(kNodeB, 1, 1, 1, "gpu-b")), "application/json");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
  EXPECT_EQ(json::parse(result->body)["error"]["code"], "not_a_coordinator");
}

}  // namespace
}  // namespace gpucluster::testing
