// The etcd tier with real processes: a real etcd (Debian etcd-server) on
// loopback ports, two coordinators and two agents that name only etcd (no
// --join). Both coordinators converge on the whole cluster; a frozen agent is
// down on both as soon as its lease expires (the report path alone would wait
// for --evict-after, set long here to tell the two apart); a killed
// coordinator leaves the other serving everything.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/agent_process.hpp"
#include "support/etcd_process.hpp"

namespace gpucluster::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr milliseconds kSlack{6000};
#else
constexpr milliseconds kSlack{2000};
#endif

bool wait_until(const std::function<bool()>& condition, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(milliseconds{50});
  }
  return condition();
}

std::map<std::string, json> nodes_of(const AgentProcess& agent) {
  std::map<std::string, json> out;
  const auto result = agent.client().Get("/v1/nodes");
  if (!result) return out;
  const json body = json::parse(result->body, nullptr, false);
  if (!body.is_object()) return out;
  for (const json& node : body["nodes"]) out[node["name"].get<std::string>()] = node;
  return out;
}

std::string state_on(const AgentProcess& coordinator, const std::string& name) {
  const auto nodes = nodes_of(coordinator);
  const auto it = nodes.find(name);
  return it == nodes.end() ? "absent" : it->second["state"].get<std::string>();
}

class EtcdCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kEtcdPath, X_OK) != 0) GTEST_SKIP() << kEtcdMissing;
    etcd_ = std::make_unique<EtcdProcess>();
    // Reports every 200 ms, but down only after 60 s of silence: a node down
    // within seconds went down through its lease.
    const std::vector<std::string> timings{"--report-interval", "200ms", "--suspect-after", "600ms",
                                           "--evict-after",     "60s",   "--etcd-ttl",      "2s"};
    for (const char* name : {"ca", "cb"}) {
      std::vector<std::string> args{"--coordinator",
                                    "--state-dir",
                                    dir_.path().string() + "/" + name,
                                    "--node-name",
                                    name,
                                    "--fleet",
                                    source_path("examples/fleet-home.json"),
                                    "--etcd",
                                    etcd_->endpoint()};
      args.insert(args.end(), timings.begin(), timings.end());
      coordinators_.push_back(std::make_unique<AgentProcess>(args));
    }
    for (const char* name : {"n1", "n2"}) {
      agents_.push_back(std::make_unique<AgentProcess>(std::vector<std::string>{
          "--state-dir", dir_.path().string() + "/" + name, "--node-name", name, "--fleet",
          source_path("examples/fleet-8x-h100.json"), "--etcd", etcd_->endpoint(), "--etcd-ttl", "2s"}));
    }
  }

  // Each coordinator lists the other and both agents alive, with their devices.
  bool converged(const AgentProcess& coordinator, const std::vector<std::string>& names) {
    const auto nodes = nodes_of(coordinator);
    for (const std::string& name : names) {
      const auto it = nodes.find(name);
      if (it == nodes.end() || it->second["state"] != "alive" || it->second["devices"].get<int>() == 0) return false;
    }
    return true;
  }

  TempDir dir_{"gpucluster-etcd-cluster"};
  std::unique_ptr<EtcdProcess> etcd_;
  std::vector<std::unique_ptr<AgentProcess>> coordinators_;
  std::vector<std::unique_ptr<AgentProcess>> agents_;
};

TEST_F(EtcdCluster, AgentsFindBothCoordinatorsAndAFrozenAgentIsDownOnBothByItsLease) {
  for (const auto& coordinator : coordinators_) {
    const std::string other = coordinator.get() == coordinators_[0].get() ? "cb" : "ca";
    ASSERT_TRUE(wait_until(
        [&] {
          return converged(*coordinator, {"n1", "n2", other});
        },
        seconds{10} + kSlack))
        << json(nodes_of(*coordinator)).dump(1);
  }
  const json n1_devices = json::parse(coordinators_[1]->client().Get("/v1/devices/n1/cuda:0")->body);
  EXPECT_EQ(n1_devices["available"], true) << n1_devices.dump();

  ::kill(agents_[0]->pid(), SIGSTOP);
  const auto frozen = Clock::now();
  for (const auto& coordinator : coordinators_) {
    EXPECT_TRUE(wait_until([&] { return state_on(*coordinator, "n1") == "down"; }, seconds{2} + kSlack + seconds{2}))
        << json(nodes_of(*coordinator)).dump(1);
    EXPECT_EQ(nodes_of(*coordinator)["n1"]["down_reason"], "etcd lease expired");
  }
  const double took = std::chrono::duration<double>(Clock::now() - frozen).count();
  std::printf("frozen agent down on both coordinators by its lease after %.2f s (TTL 2 s, evict-after 60 s)\n", took);
  EXPECT_LT(took, 30.0);  // far below --evict-after: the lease decided
  EXPECT_EQ(state_on(*coordinators_[0], "n2"), "alive");

  ::kill(agents_[0]->pid(), SIGCONT);
  for (const auto& coordinator : coordinators_) {
    EXPECT_TRUE(wait_until([&] { return state_on(*coordinator, "n1") == "alive"; }, seconds{3} + kSlack));
  }
}

TEST_F(EtcdCluster, AKilledCoordinatorLeavesTheOtherServingEverything) {
  ASSERT_TRUE(wait_until([&] { return converged(*coordinators_[1], {"n1", "n2", "ca"}); }, seconds{10} + kSlack));
  coordinators_[0].reset();  // SIGKILL
  // cb keeps every agent alive and their devices selectable; ca itself goes down by its lease.
  EXPECT_TRUE(
      wait_until([&] { return state_on(*coordinators_[1], "ca") == "down"; }, seconds{2} + kSlack + seconds{2}));
  std::this_thread::sleep_for(seconds{1});
  EXPECT_TRUE(converged(*coordinators_[1], {"n1", "n2"})) << json(nodes_of(*coordinators_[1])).dump(1);
  httplib::Client client = coordinators_[1]->client();
  const auto selected = client.Post("/v1/select", R"({"min_memory_bytes": 0})", "application/json");
  ASSERT_TRUE(selected);
  EXPECT_NE(json::parse(selected->body)["device"], nullptr) << selected->body;
  // The agents stop reporting to the dead one: it left etcd.
  const json push = json::parse(agents_[0]->client().Get("/v1/push")->body);
  EXPECT_TRUE(wait_until([&] { return json::parse(agents_[0]->client().Get("/v1/push")->body).size() == 1; },
                         seconds{3} + kSlack))
      << push.dump(1);
}

}  // namespace
}  // namespace gpucluster::testing
