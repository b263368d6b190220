// A coordinator's views of its nodes (docs/agent.md, docs/cluster.md), in
// process: reports and a seed message posted over HTTP, liveness stepped with
// Coordinator::tick (its reaper is stopped, so no state moves by itself), then
// /v1/cluster's per-node and per-state counts, each device's node and state in
// /v1/devices and /v1/devices/{id}, and the node state families of /metrics.
#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "gpucluster/agent/server.hpp"
#include "gpucluster/node/manager.hpp"
#include "gpucluster/wire/report.hpp"
#include "support/agent_process.hpp"

namespace gpucluster::testing {
namespace {

using agent::Report;
using nlohmann::json;
using std::chrono::seconds;
using std::chrono::steady_clock;

constexpr const char* kNodeA = "3f1c2a9b-0c1d-4e5f-8a9b-0c1d2e3f4a5b";
constexpr const char* kNodeB = "9d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a";
constexpr const char* kNodeC = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d";

DeviceInfo gpu(const std::string& host, const std::string& id) {
  DeviceInfo info;
  info.key = DeviceKey{host, id};
  info.name = "GPU";
  info.vendor = "nvidia";
  info.kind = DeviceKind::cuda;
  info.backend = "nvml";
  info.memory_total_bytes = 80'000'000'000ULL;
  return info;
}

Sample sample_now() {
  Sample sample;
  sample.timestamp = now_timestamp();
  sample.memory_used_bytes = 1'000'000'000;
  sample.memory_total_bytes = 80'000'000'000LL;
  sample.utilization_percent = 50.0F;
  return sample;
}

// A first report: `devices` devices, samples for the first `sampled` of them.
Report first_report(const std::string& id, const std::string& name, int devices, int sampled) {
  Report report;
  report.node.id = id;
  report.node.incarnation = 1;
  report.node.name = name;
  report.node.agent_version = "test";
  report.seq = 1;
  report.sent_at = now_timestamp();
  report.inventory_version = 1;
  report.inventory.emplace();
  for (int i = 0; i < devices; ++i) {
    const std::string local_id = fmt::format("cuda:{}", i);
    report.inventory->push_back(gpu("", local_id));
    if (i < sampled) report.samples[local_id] = {sample_now()};
  }
  return report;
}

class ClusterViews : public ::testing::Test {
 protected:
  void SetUp() override {
    ManagerConfig manager_config;
    manager_config.host = "coord";
    manager = std::make_unique<Manager>(manager_config);
    manager->start(/*background_sampling=*/false);
    manager->register_device(gpu("coord", "cuda:0"));  // the coordinator's own device
    manager->record(DeviceKey{"coord", "cuda:0"}, sample_now());
    agent::AgentConfig config;
    config.listen.port = 0;
    config.worker_threads = 1;
    config.coordinator = true;
    config.node.id = "00000000-0000-4000-8000-000000000001";
    config.node.name = "coord";
    config.node.incarnation = 1;
    server = std::make_unique<agent::Agent>(*manager, config);
    server->coordinator().stop();  // liveness moves only with the test's tick()
    port = server->bind();
    serving = std::thread([this] { server->serve(); });
  }
  void TearDown() override {
    server->stop();
    serving.join();
    server.reset();
    manager->shutdown();
  }

  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(seconds{10});
    return c;
  }
  void post(const std::string& path, const std::string& body) const {
    const auto result = client().Post(path, body, "application/json");
    ASSERT_TRUE(result) << path;
    ASSERT_LT(result->status, 300) << path << ": " << result->body;
  }
  json get(const std::string& path) const {
    const auto result = client().Get(path);
    EXPECT_TRUE(result) << path;
    if (!result) return nullptr;
    EXPECT_EQ(result->status, 200) << path << ": " << result->body;
    return json::parse(result->body);
  }

  // coord (self, 1 sampled device) and gpu-a alive, gpu-b suspect, gpu-c and
  // the seed host node-a down.
  void make_cluster() {
    std::ifstream registration(source_path("examples/protocol/registration.json"));
    post("/v1/telemetry", std::string(std::istreambuf_iterator<char>(registration), {}));
    post("/v2/report", agent::encode_report(first_report(kNodeC, "gpu-c", 1, 1)));
    server->coordinator().tick(steady_clock::now() + seconds{11});  // past --evict-after (10 s)
    post("/v2/report", agent::encode_report(first_report(kNodeB, "gpu-b", 2, 1)));
    server->coordinator().tick(steady_clock::now() + seconds{4});  // past --suspect-after (3 s)
    post("/v2/report", agent::encode_report(first_report(kNodeA, "gpu-a", 2, 2)));
  }

  std::unique_ptr<Manager> manager;
  std::unique_ptr<agent::Agent> server;
  int port = 0;
  std::thread serving;
};

TEST_F(ClusterViews, ClusterCountsDevicesPerNodeAndByTheirNodesState) {
  make_cluster();
  const json cluster = get("/v1/cluster");
  EXPECT_EQ(cluster["nodes"], (json{{"alive", 2}, {"suspect", 1}, {"down", 2}, {"total", 5}})) << cluster.dump();
  EXPECT_EQ(cluster["devices_by_state"], (json{{"alive", 3}, {"suspect", 2}, {"down", 2}})) << cluster.dump();
  const json per_node = json::array({
      json{{"node", "coord"},
           {"id", "00000000-0000-4000-8000-000000000001"},
           {"state", "alive"},
           {"devices", 1},
           {"devices_with_samples", 1}},
      json{{"node", "gpu-a"}, {"id", kNodeA}, {"state", "alive"}, {"devices", 2}, {"devices_with_samples", 2}},
      json{{"node", "gpu-b"}, {"id", kNodeB}, {"state", "suspect"}, {"devices", 2}, {"devices_with_samples", 1}},
      json{{"node", "gpu-c"}, {"id", kNodeC}, {"state", "down"}, {"devices", 1}, {"devices_with_samples", 1}},
      json{{"node", "node-a"}, {"id", nullptr}, {"state", "down"}, {"devices", 1}, {"devices_with_samples", 0}},
  });
  EXPECT_FALSE(cluster.contains("per_node")) << "per_node is sent only when asked for";
  const json asked = get("/v1/cluster?per_node=true");
  EXPECT_EQ(asked["per_node"], per_node) << asked["per_node"].dump(1);
  EXPECT_EQ(asked["devices_by_state"], cluster["devices_by_state"]);
  EXPECT_EQ(asked["nodes"], cluster["nodes"]);
  EXPECT_FALSE(get("/v1/cluster?per_node=false").contains("per_node"));
  const auto bad = client().Get("/v1/cluster?per_node=yes");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body)["error"]["field"], "per_node") << bad->body;
  // The totals still leave the down nodes' devices out; device_count lists them all.
  EXPECT_EQ(cluster["device_count"], 7);
  EXPECT_EQ(cluster["devices_with_samples"], 4);
}

TEST_F(ClusterViews, EachDeviceNamesItsNodeAndItsNodesState) {
  make_cluster();
  const json devices = get("/v1/devices");
  std::map<std::string, std::tuple<std::string, std::string, bool>> seen;  // id → node, node_state, available
  for (const json& device : devices) {
    seen[device["id"].get<std::string>()] = {device["node"].get<std::string>(), device["node_state"].get<std::string>(),
                                             device["available"].get<bool>()};
  }
  using Row = std::tuple<std::string, std::string, bool>;
  const std::map<std::string, Row> expected{
      {"coord/cuda:0", Row{"coord", "alive", true}},   {"gpu-a/cuda:0", Row{"gpu-a", "alive", true}},
      {"gpu-a/cuda:1", Row{"gpu-a", "alive", true}},   {"gpu-b/cuda:0", Row{"gpu-b", "suspect", true}},
      {"gpu-b/cuda:1", Row{"gpu-b", "suspect", true}}, {"gpu-c/cuda:0", Row{"gpu-c", "down", false}},
      {"node-a/cuda:0", Row{"node-a", "down", false}},
  };
  EXPECT_EQ(seen, expected) << devices.dump(1);
  for (const json& device : devices) {
    if (device["id"] == "gpu-c/cuda:0") {
      EXPECT_NE(device["error_message"].get<std::string>().find("node gpu-c is down"), std::string::npos)
          << device.dump();
    }
  }
  const json one = get("/v1/devices/gpu-b/cuda:1");
  EXPECT_EQ(one["node"], "gpu-b");
  EXPECT_EQ(one["node_state"], "suspect");
  EXPECT_TRUE(one.contains("window"));
  const json local = get("/v1/devices/coord/cuda:0");
  EXPECT_EQ(local["node"], "coord");
  EXPECT_EQ(local["node_state"], "alive");
}

TEST_F(ClusterViews, MetricsHaveEachNodesStateAndTheNodesByState) {
  make_cluster();
  const auto result = client().Get("/metrics");
  ASSERT_TRUE(result);
  const std::string& text = result->body;
  EXPECT_NE(text.find(fmt::format("gpucluster_node_state{{node=\"gpu-b\",node_id=\"{}\",host=\"gpu-b\","
                                  "state=\"suspect\"}} 1\n",
                                  kNodeB)),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(fmt::format("gpucluster_node_state{{node=\"gpu-b\",node_id=\"{}\",host=\"gpu-b\","
                                  "state=\"alive\"}} 0\n",
                                  kNodeB)),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\ngpucluster_nodes{state=\"alive\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\ngpucluster_nodes{state=\"suspect\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\ngpucluster_nodes{state=\"down\"} 2\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace gpucluster::testing
