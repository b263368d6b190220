// The etcd tier with real processes: a real etcd (Debian etcd-server) on
// loopback ports, two coordinators and two agents that name only etcd (no
// --join). Both coordinators converge on the whole cluster; a frozen agent is
// down on both as soon as its lease expires (the report path alone would wait
// for --evict-after, set long here to tell the two apart); a killed
// coordinator leaves the other serving everything; etcd killed and restarted
// (or restarted empty) costs nothing but the nodes it no longer has; two
// agents of one name get the same hosts on every coordinator.
//
// The coordinators re-list every second (the hidden --etcd-relist-every; 30 s
// by default), so every test here also checks that re-lists flap nothing.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cluster/etcd_client.hpp"
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

// The node's "lease" field ("none" when the node is not listed, "null" for null).
std::string lease_on(const AgentProcess& coordinator, const std::string& name) {
  const auto nodes = nodes_of(coordinator);
  const auto it = nodes.find(name);
  if (it == nodes.end()) return "none";
  return it->second["lease"].is_string() ? it->second["lease"].get<std::string>() : "null";
}

// id → host of every reporting node (names may repeat; ids do not).
std::map<std::string, std::string> hosts_by_id(const AgentProcess& coordinator) {
  std::map<std::string, std::string> out;
  const auto result = coordinator.client().Get("/v1/nodes");
  if (!result) return out;
  const json body = json::parse(result->body, nullptr, false);
  if (!body.is_object()) return out;
  for (const json& node : body["nodes"]) {
    if (node["kind"] == "report" && node["state"] == "alive") out[node["id"].get<std::string>()] = node["host"];
  }
  return out;
}

class EtcdCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kEtcdPath, X_OK) != 0) GTEST_SKIP() << kEtcdMissing;
    etcd_ = std::make_unique<EtcdProcess>();
    // Reports every 200 ms, but down only after 60 s of silence: a node down
    // within seconds went down through its lease.
    const std::vector<std::string> timings{"--report-interval",   "200ms", "--suspect-after", "600ms",
                                           "--evict-after",       "60s",   "--etcd-ttl",      "2s",
                                           "--etcd-relist-every", "1s"};
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
      coordinator_args_.push_back(args);
      coordinators_.push_back(std::make_unique<AgentProcess>(args));
    }
    for (std::size_t i = 0; i < agent_names_.size(); ++i) add_agent(agent_names_[i], "a" + std::to_string(i));
  }

  // An agent named `name` with its own state dir `dir`, that names only etcd.
  void add_agent(const std::string& name, const std::string& dir) {
    agents_.push_back(std::make_unique<AgentProcess>(std::vector<std::string>{
        "--state-dir", dir_.path().string() + "/" + dir, "--node-name", name, "--fleet",
        source_path("examples/fleet-8x-h100.json"), "--etcd", etcd_->endpoint(), "--etcd-ttl", agent_ttl_}));
  }

  // Every coordinator lists the other, and each of `names`, alive with its devices.
  void expect_converged(const std::vector<std::string>& names, milliseconds timeout = seconds{10} + kSlack) {
    for (std::size_t i = 0; i < coordinators_.size(); ++i) {
      std::vector<std::string> all = names;
      all.emplace_back(i == 0 ? "cb" : "ca");
      EXPECT_TRUE(wait_until([&] { return converged(*coordinators_[i], all); }, timeout))
          << json(nodes_of(*coordinators_[i])).dump(1);
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

  std::vector<std::string> agent_names_{"n1", "n2"};
  std::string agent_ttl_ = "2s";
  TempDir dir_{"gpucluster-etcd-cluster"};
  std::unique_ptr<EtcdProcess> etcd_;
  std::vector<std::vector<std::string>> coordinator_args_;
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

TEST_F(EtcdCluster, EtcdRestartedEveryoneRecovers) {
  expect_converged({"n1", "n2"});
  for (const auto& coordinator : coordinators_) {
    EXPECT_TRUE(wait_until([&] { return lease_on(*coordinator, "n1") == "present"; }, kSlack));
    const json self = json::parse(coordinator->client().Get("/v1/nodes")->body)["nodes"][0];
    EXPECT_EQ(self["kind"], "self");
    EXPECT_EQ(self["lease"], nullptr) << self.dump();  // a coordinator does not judge its own lease
  }
  ASSERT_FALSE(HasFailure());

  // etcd gone for longer than the TTL (2 s): the reports alone keep everyone
  // alive (--evict-after 60 s), nobody is down for a lease meanwhile.
  etcd_->kill_hard();
  const auto killed = Clock::now();
  while (Clock::now() - killed < seconds{3}) {
    for (const auto& coordinator : coordinators_) {
      for (const char* name : {"n1", "n2", "ca", "cb"}) {
        const std::string state = state_on(*coordinator, name);
        EXPECT_NE(state, "down") << name << " while etcd is away: " << json(nodes_of(*coordinator)).dump(1);
      }
    }
    std::this_thread::sleep_for(milliseconds{200});
  }
  const auto restarting = Clock::now();
  etcd_->resume();
  // Keys back (the leases were kept alive or granted again) and everyone alive on both.
  for (const auto& coordinator : coordinators_) {
    EXPECT_TRUE(wait_until(
        [&] {
          return converged(*coordinator, {"n1", "n2"}) && lease_on(*coordinator, "n1") == "present" &&
                 lease_on(*coordinator, "n2") == "present";
        },
        seconds{5} + kSlack))
        << json(nodes_of(*coordinator)).dump(1);
  }
  std::printf("etcd down 3 s: every node alive with its key on both coordinators %.2f s after the restart\n",
              std::chrono::duration<double>(Clock::now() - restarting).count());
  ASSERT_FALSE(HasFailure());

  // A lease still expires: a frozen agent is down on both by it.
  ::kill(agents_[0]->pid(), SIGSTOP);
  for (const auto& coordinator : coordinators_) {
    EXPECT_TRUE(wait_until([&] { return state_on(*coordinator, "n1") == "down"; }, seconds{4} + kSlack))
        << json(nodes_of(*coordinator)).dump(1);
    EXPECT_EQ(nodes_of(*coordinator)["n1"]["down_reason"], "etcd lease expired");
    EXPECT_EQ(lease_on(*coordinator, "n1"), "absent");
  }
  // Agents still find the coordinators in etcd: one started now reports to both.
  add_agent("n3", "a3");
  expect_converged({"n2", "n3"});
  ::kill(agents_[0]->pid(), SIGCONT);
  expect_converged({"n1"}, seconds{3} + kSlack);
}

TEST_F(EtcdCluster, AnEtcdRestartedEmptyIsReListedAndAFrozenNodeIsDown) {
  expect_converged({"n1", "n2"});
  ASSERT_FALSE(HasFailure());
  // n1 cannot register again; the new etcd never had its key, so no DELETE
  // ever comes: only the re-list can tell the coordinators it is gone.
  ::kill(agents_[0]->pid(), SIGSTOP);
  etcd_->kill_hard();
  etcd_->wipe_data();
  etcd_->resume();
  for (const auto& coordinator : coordinators_) {
    EXPECT_TRUE(wait_until([&] { return state_on(*coordinator, "n1") == "down"; }, seconds{4} + kSlack))
        << json(nodes_of(*coordinator)).dump(1);
    EXPECT_EQ(nodes_of(*coordinator)["n1"]["down_reason"], "etcd lease expired");
  }
  // The others find their leases gone, register again and are alive (they may flap meanwhile).
  for (const auto& coordinator : coordinators_) {
    EXPECT_TRUE(wait_until([&] { return converged(*coordinator, {"n2"}) && lease_on(*coordinator, "n2") == "present"; },
                           seconds{5} + kSlack))
        << json(nodes_of(*coordinator)).dump(1);
  }
  EXPECT_EQ(lease_on(*coordinators_[0], "n1"), "absent");
  ::kill(agents_[0]->pid(), SIGCONT);
  expect_converged({"n1", "n2"}, seconds{5} + kSlack);
}

class EtcdTwins : public EtcdCluster {
 protected:
  EtcdTwins() {
    agent_names_ = {"twin", "twin"};
    agent_ttl_ = "10s";  // the older twin is frozen for a while below and must keep its key
  }
};

// Two agents named "twin": the one whose nodes/ key is older (lowest
// create_revision) is "twin" on every coordinator, the other "twin~<id8>",
// whichever reports first. A restarted coordinator that hears the younger one
// first still chooses alike.
TEST_F(EtcdTwins, TheOlderKeyGetsThePlainNameOnEveryCoordinator) {
  // Both twins and the other coordinator alive.
  const auto both_known = [&](const AgentProcess& coordinator) { return hosts_by_id(coordinator).size() == 3; };
  for (const auto& coordinator : coordinators_) {
    ASSERT_TRUE(wait_until([&] { return both_known(*coordinator); }, seconds{10} + kSlack))
        << json(nodes_of(*coordinator)).dump(1);
  }
  // Which twin's key is older, from etcd itself.
  std::vector<std::pair<std::int64_t, std::string>> keys;  // create_revision, node id
  for (const EtcdKeyValue& kv : EtcdClient({etcd_->endpoint()}).range_prefix("nodes/").kvs) {
    const json value = json::parse(kv.value);
    if (value["name"] == "twin") keys.emplace_back(kv.create_revision, value["id"].get<std::string>());
  }
  ASSERT_EQ(keys.size(), 2U);
  std::sort(keys.begin(), keys.end());
  const std::string older = keys[0].second;
  const std::string younger = keys[1].second;
  const std::map<std::string, std::string> expected{{older, "twin"}, {younger, "twin~" + younger.substr(0, 8)}};
  // The twins' hosts on a coordinator (the other coordinator, also a node, left out).
  const auto twins_on = [&](const AgentProcess& coordinator) {
    const std::map<std::string, std::string> hosts = hosts_by_id(coordinator);
    std::map<std::string, std::string> out;
    for (const std::string& id : {older, younger}) {
      if (const auto it = hosts.find(id); it != hosts.end()) out.insert(*it);
    }
    return out;
  };
  for (const auto& coordinator : coordinators_) EXPECT_EQ(twins_on(*coordinator), expected);

  // cb restarts while the older twin is frozen (for less than its TTL: its
  // key stays): the younger reports to the new cb first.
  const auto self_id = [](const AgentProcess& agent) {
    return json::parse(agent.client().Get("/v1/nodes")->body)["self"].get<std::string>();
  };
  AgentProcess& older_agent = self_id(*agents_[0]) == older ? *agents_[0] : *agents_[1];
  ::kill(older_agent.pid(), SIGSTOP);
  coordinators_[1].reset();  // SIGKILL
  coordinators_[1] = std::make_unique<AgentProcess>(coordinator_args_[1]);
  EXPECT_TRUE(wait_until([&] { return hosts_by_id(*coordinators_[1]).contains(younger); }, seconds{5} + kSlack))
      << json(nodes_of(*coordinators_[1])).dump(1);
  ::kill(older_agent.pid(), SIGCONT);
  for (const auto& coordinator : coordinators_) {
    ASSERT_TRUE(wait_until([&] { return both_known(*coordinator); }, seconds{5} + kSlack))
        << json(nodes_of(*coordinator)).dump(1);
  }
  for (const auto& coordinator : coordinators_) EXPECT_EQ(twins_on(*coordinator), expected);
}

}  // namespace
}  // namespace gpucluster::testing
