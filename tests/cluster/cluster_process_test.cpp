// A real cluster on loopback: one coordinator and several agents, each the
// real `gpucluster agent` binary in its own process with its own state
// directory and simulated fleet, joined with --join. Fast timings (report
// every 200 ms, suspect after 600 ms, down after 2 s) keep the suite short;
// docs/cluster.md has the defaults. The coordinator's view is read over HTTP
// as a user would (GET /v1/nodes, /v1/devices, /v1/cluster, POST /v1/select).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
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
#include "support/prometheus_process.hpp"

namespace gpucluster::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr milliseconds kSlack{3000};  // sanitized binaries start and answer several times slower
#else
constexpr milliseconds kSlack{700};
#endif

constexpr milliseconds kInterval{200};
constexpr milliseconds kSuspectAfter{600};
constexpr milliseconds kEvictAfter{2000};

const std::vector<std::string> kFastTimings{"--report-interval", "200ms", "--suspect-after", "600ms",
                                            "--evict-after",     "2s",    "--forget-after",  "60s"};

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() / fmt::format("gpucluster-cluster-{}-{}", ::getpid(), counter++);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

json get_json(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(seconds{2});
  client.set_read_timeout(seconds{5});
  const auto response = client.Get(path);
  if (!response) return json();
  return json::parse(response->body, nullptr, false);
}

bool wait_until(const std::function<bool()>& condition, milliseconds timeout, milliseconds poll = milliseconds{20}) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(poll);
  }
  return condition();
}

// The coordinator's view of the nodes: name → node object.
std::map<std::string, json> nodes_by_name(int port) {
  std::map<std::string, json> out;
  const json body = get_json(port, "/v1/nodes");
  if (!body.is_object()) return out;
  for (const json& node : body["nodes"]) out[node["name"].get<std::string>()] = node;
  return out;
}

std::string state_of(int port, const std::string& name) {
  const auto nodes = nodes_by_name(port);
  const auto it = nodes.find(name);
  return it == nodes.end() ? "absent" : it->second["state"].get<std::string>();
}

// Device ids per host part, as GET /v1/devices lists them.
std::map<std::string, int> devices_per_host(int port) {
  std::map<std::string, int> out;
  const json devices = get_json(port, "/v1/devices");
  if (!devices.is_array()) return out;
  for (const json& device : devices) {
    const std::string id = device["id"].get<std::string>();
    ++out[id.substr(0, id.find('/'))];
  }
  return out;
}

class Cluster {
 public:
  explicit Cluster(int agents, bool coordinator_first = true) {
    coordinator_port_ = free_loopback_port();
    if (coordinator_first) start_coordinator();
    for (int i = 0; i < agents; ++i) add_agent();
    if (!coordinator_first) start_coordinator();
  }

  void start_coordinator() {
    std::vector<std::string> args{"--coordinator",
                                  "--listen",
                                  fmt::format("127.0.0.1:{}", coordinator_port_),
                                  "--state-dir",
                                  dir_ / "coordinator",
                                  "--node-name",
                                  "coord",
                                  "--fleet",
                                  source_path("examples/fleet-home.json")};
    args.insert(args.end(), kFastTimings.begin(), kFastTimings.end());
    coordinator_ = std::make_unique<AgentProcess>(args);
  }

  std::vector<std::string> agent_args(int index) const {
    return {"--state-dir", dir_ / fmt::format("n{}", index),
            "--node-name", fmt::format("n{}", index),
            "--fleet",     source_path("examples/fleet-8x-h100.json"),
            "--interval",  "200ms",
            "--join",      fmt::format("http://127.0.0.1:{}", coordinator_port_)};
  }

  AgentProcess& add_agent(AgentLaunch launch = {}) {
    const int index = static_cast<int>(agents_.size());
    agents_.push_back(std::make_unique<AgentProcess>(agent_args(index), seconds{30}, std::move(launch)));
    return *agents_.back();
  }

  void restart_agent(int index) {
    agents_.at(static_cast<std::size_t>(index)).reset();
    agents_.at(static_cast<std::size_t>(index)) = std::make_unique<AgentProcess>(agent_args(index));
  }

  bool converged(milliseconds timeout) {
    return wait_until(
        [&] {
          const auto nodes = nodes_by_name(coordinator_port_);
          if (nodes.size() != agents_.size() + 1) return false;
          for (const auto& [name, node] : nodes) {
            if (node["state"] != "alive") return false;
          }
          const auto devices = devices_per_host(coordinator_port_);
          for (std::size_t i = 0; i < agents_.size(); ++i) {
            const auto it = devices.find(fmt::format("n{}", i));
            if (it == devices.end() || it->second != 8) return false;
          }
          return true;
        },
        timeout);
  }

  int port() const { return coordinator_port_; }
  AgentProcess& coordinator() { return *coordinator_; }
  void kill_coordinator() { coordinator_.reset(); }  // SIGKILL
  AgentProcess& agent(int index) { return *agents_.at(static_cast<std::size_t>(index)); }

 private:
  TempDir dir_;
  int coordinator_port_ = 0;
  std::unique_ptr<AgentProcess> coordinator_;
  std::vector<std::unique_ptr<AgentProcess>> agents_;
};

TEST(ClusterProcess, AgentsJoinAndTheViewConverges) {
  Cluster cluster(3);
  ASSERT_TRUE(cluster.converged(seconds{5} + kSlack)) << get_json(cluster.port(), "/v1/nodes").dump(1);
  const auto nodes = nodes_by_name(cluster.port());
  EXPECT_EQ(nodes.at("coord")["kind"], "self");
  EXPECT_EQ(nodes.at("n1")["kind"], "report");
  EXPECT_EQ(nodes.at("n1")["incarnation"], 1);
  EXPECT_EQ(nodes.at("n1")["address"], cluster.agent(1).base_url());
  EXPECT_EQ(nodes.at("n1")["devices"], 8);
  EXPECT_EQ(nodes.at("n1")["agent_version"], "0.1.0");
  // Samples flow: every remote device has a recent sample on the coordinator.
  ASSERT_TRUE(wait_until(
      [&] {
        const json devices = get_json(cluster.port(), "/v1/devices");
        return std::all_of(devices.begin(), devices.end(),
                           [](const json& d) { return d.contains("metrics") && !d["metrics"].is_null(); });
      },
      seconds{3}))
      << get_json(cluster.port(), "/v1/devices").dump(1);
  const json totals = get_json(cluster.port(), "/v1/cluster");
  EXPECT_EQ(totals["nodes"]["alive"], 4);
  EXPECT_EQ(totals["nodes"]["down"], 0);
  int listed = 0;
  for (const auto& [host, count] : devices_per_host(cluster.port())) listed += count;
  EXPECT_EQ(totals["device_count"].get<int>(), listed);
  EXPECT_EQ(listed, nodes_by_name(cluster.port()).at("coord")["devices"].get<int>() + 24);
  // The agent's own view stays its own devices.
  EXPECT_EQ(devices_per_host(cluster.agent(0).port()).size(), 1U);
}

TEST(ClusterProcess, AKilledAgentIsDownWithinEvictAfterPlusAnInterval) {
  Cluster cluster(2);
  ASSERT_TRUE(cluster.converged(seconds{5} + kSlack));
  std::vector<double> notice_seconds;
  for (int round = 0; round < 3; ++round) {
    if (round > 0) {
      cluster.restart_agent(1);
      ASSERT_TRUE(wait_until([&] { return state_of(cluster.port(), "n1") == "alive"; }, seconds{3} + kSlack));
    }
    // Kill at a random moment within the report interval.
    std::this_thread::sleep_for(milliseconds{37 * (round + 1) % kInterval.count()});
    const auto killed = Clock::now();
    ::kill(cluster.agent(1).pid(), SIGKILL);
    ASSERT_TRUE(wait_until([&] { return state_of(cluster.port(), "n1") == "down"; }, kEvictAfter + seconds{3}));
    const double took = std::chrono::duration<double>(Clock::now() - killed).count();
    notice_seconds.push_back(took);
    EXPECT_LE(took, std::chrono::duration<double>(kEvictAfter + kInterval + kSlack).count());
    EXPECT_GE(took, std::chrono::duration<double>(kEvictAfter - kInterval - milliseconds{100}).count());
    // Its devices leave select and the totals at once; the other node's stay.
    const json totals = get_json(cluster.port(), "/v1/cluster");
    EXPECT_EQ(totals["nodes"]["down"], 1);
    httplib::Client client("127.0.0.1", cluster.port());
    const auto selected = client.Post("/v1/select", R"({"min_memory_bytes": 0})", "application/json");
    ASSERT_TRUE(selected);
    EXPECT_EQ(selected->body.find("n1/"), std::string::npos) << selected->body;
    const auto nodes = nodes_by_name(cluster.port());
    EXPECT_NE(nodes.at("n1")["down_reason"].get<std::string>().find("no report for"), std::string::npos);
    EXPECT_EQ(nodes.at("n0")["state"], "alive");
  }
  std::sort(notice_seconds.begin(), notice_seconds.end());
  RecordProperty("notice_seconds_min", fmt::format("{:.3f}", notice_seconds.front()));
  RecordProperty("notice_seconds_median", fmt::format("{:.3f}", notice_seconds[notice_seconds.size() / 2]));
  RecordProperty("notice_seconds_max", fmt::format("{:.3f}", notice_seconds.back()));
  std::printf("kill -> down: min %.3f s, median %.3f s, max %.3f s over %zu kills (evict-after 2 s, interval 0.2 s)\n",
              notice_seconds.front(), notice_seconds[notice_seconds.size() / 2], notice_seconds.back(),
              notice_seconds.size());
}

TEST(ClusterProcess, AStoppedAgentIsSuspectThenDownAndAliveAgainWithTheSameIncarnation) {
  Cluster cluster(1);
  ASSERT_TRUE(cluster.converged(seconds{5} + kSlack));
  ::kill(cluster.agent(0).pid(), SIGSTOP);
  EXPECT_TRUE(
      wait_until([&] { return state_of(cluster.port(), "n0") == "suspect"; }, kSuspectAfter + kInterval + kSlack));
  EXPECT_TRUE(wait_until([&] { return state_of(cluster.port(), "n0") == "down"; }, kEvictAfter + kSlack));
  const json down_device = get_json(cluster.port(), "/v1/devices/n0/cuda:0");
  EXPECT_EQ(down_device["available"], false) << down_device.dump();
  ::kill(cluster.agent(0).pid(), SIGCONT);
  EXPECT_TRUE(wait_until([&] { return state_of(cluster.port(), "n0") == "alive"; }, seconds{2} + kSlack));
  EXPECT_EQ(nodes_by_name(cluster.port()).at("n0")["incarnation"], 1);
  EXPECT_EQ(get_json(cluster.port(), "/v1/devices/n0/cuda:0")["available"], true);
  EXPECT_EQ(devices_per_host(cluster.port())["n0"], 8);
}

TEST(ClusterProcess, ARestartedAgentIsANewIncarnationWithItsDevicesReplacedNotDoubled) {
  Cluster cluster(1);
  ASSERT_TRUE(cluster.converged(seconds{5} + kSlack));
  cluster.restart_agent(0);
  EXPECT_TRUE(wait_until([&] { return nodes_by_name(cluster.port())["n0"]["incarnation"] == 2; }, seconds{3} + kSlack));
  EXPECT_TRUE(cluster.converged(seconds{2} + kSlack));
  EXPECT_EQ(devices_per_host(cluster.port())["n0"], 8);
  EXPECT_EQ(nodes_by_name(cluster.port()).size(), 2U);
}

TEST(ClusterProcess, ACoordinatorRestartIsRejoinedByEveryAgentWithNothingLostOrDoubled) {
  Cluster cluster(3);
  ASSERT_TRUE(cluster.converged(seconds{5} + kSlack));
  const auto wall_seconds = [] {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  };
  const double killed_at = wall_seconds();
  cluster.kill_coordinator();
  std::this_thread::sleep_for(milliseconds{1500});  // the agents back off meanwhile
  const double restarting_at = wall_seconds();
  cluster.start_coordinator();          // same port, same state directory
  const auto restarted = Clock::now();  // it has said "ready:" (AgentProcess waits for it)
  ASSERT_TRUE(cluster.converged(seconds{5} + kSlack)) << get_json(cluster.port(), "/v1/nodes").dump(1);
  const double took = std::chrono::duration<double>(Clock::now() - restarted).count();
  std::printf("coordinator ready -> all 3 agents re-registered: %.3f s\n", took);
  // Two intervals plus the backoff cap (one interval) after it listens, with slack for its start.
  EXPECT_LE(took, std::chrono::duration<double>(3 * kInterval + seconds{1} + kSlack).count());
  const auto devices = devices_per_host(cluster.port());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(devices.at(fmt::format("n{}", i)), 8);
  // The samples the agents kept while the coordinator was away arrived (the
  // history holds samples taken while no coordinator ran), each once. By their
  // times, not their count: how many fit in the gap depends on how fast the
  // coordinator starts.
  const json history = get_json(cluster.port(), "/v1/devices/n0/cuda:0/history");
  ASSERT_TRUE(history.is_object() && history["samples"].is_array()) << history.dump();
  std::size_t taken_while_away = 0;
  double previous = 0;
  for (const json& sample : history["samples"]) {
    const double taken = sample["timestamp"].get<double>();
    EXPECT_GT(taken, previous) << "doubled or out of order: " << history.dump();
    previous = taken;
    if (taken > killed_at + 0.5 && taken < restarting_at) ++taken_while_away;
  }
  // 1.5 s away at one sample per 200 ms: about 7, of which at least the 4 well inside the gap.
  EXPECT_GE(taken_while_away, 4U) << history.dump();
}

TEST(ClusterProcess, AgentsStartedBeforeTheCoordinatorConverge) {
  Cluster cluster(2, /*coordinator_first=*/false);
  EXPECT_TRUE(cluster.converged(seconds{3} + kSlack)) << get_json(cluster.port(), "/v1/nodes").dump(1);
}

TEST(ClusterProcess, AnAgentLeavingOnSigtermIsDownAtOnce) {
  Cluster cluster(1);
  ASSERT_TRUE(cluster.converged(seconds{5} + kSlack));
  const auto stopped = Clock::now();
  cluster.agent(0).stop(SIGTERM);
  const auto nodes = nodes_by_name(cluster.port());
  EXPECT_EQ(nodes.at("n0")["state"], "down");
  EXPECT_EQ(nodes.at("n0")["down_reason"], "left");
  EXPECT_LT(Clock::now() - stopped, kEvictAfter + kSlack);  // and the reason says it did not wait for eviction
}

TEST(ClusterProcess, AnAgentWhoseClockIsAnHourAheadStaysAliveWithCorrectedTimes) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  // A sanitizer's runtime must come first in the library list; libfaketime is
  // an LD_PRELOAD that comes before it. The release suite runs this test.
  GTEST_SKIP() << "libfaketime's LD_PRELOAD and a sanitizer's interposition do not mix";
#endif
  constexpr const char* kLibfaketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
  if (::access(kLibfaketime, R_OK) != 0) {
    GTEST_SKIP() << kLibfaketime << " is missing (apt-get install faketime; scripts/bootstrap.sh does)";
  }
  Cluster cluster(0);
  AgentLaunch launch;
  // libfaketime as the faketime program sets it up (faketime --exclude-monotonic
  // -f +1h), but through env, which execs: the faketime program forks and
  // waits, so killing it would leave the agent running. Only the wall clock is
  // faked: a faked monotonic clock would stall the agent's timed waits.
  launch.wrapper = {"env", std::string("LD_PRELOAD=") + kLibfaketime, "FAKETIME=+1h", "FAKETIME_DONT_FAKE_MONOTONIC=1"};
  cluster.add_agent(launch);
  ASSERT_TRUE(cluster.converged(seconds{5} + kSlack)) << get_json(cluster.port(), "/v1/nodes").dump(1);
  std::this_thread::sleep_for(kSuspectAfter + kInterval);  // alive well past the suspect time
  const json node = nodes_by_name(cluster.port()).at("n0");
  EXPECT_EQ(node["state"], "alive");
  EXPECT_NEAR(node["clock_offset_seconds"].get<double>(), -3600.0, 1.0) << node.dump();
  const json device = get_json(cluster.port(), "/v1/devices/n0/cuda:0");
  ASSERT_TRUE(device.contains("metrics") && device["metrics"].is_object()) << device.dump();
  const double newest = device["metrics"]["timestamp"].get<double>();
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_NEAR(newest, now, 2.0) << device.dump();
  EXPECT_EQ(device["available"], true);
  EXPECT_EQ(device["eligibility"], "eligible") << device.dump();  // not stale
}

}  // namespace
}  // namespace gpucluster::testing
