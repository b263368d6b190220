// `gpucluster devices|select|plan|nodes --agent URL` against a real
// coordinator with a joined agent: the JSON output is the agent's own answer,
// the tables show its devices, an unreachable agent is exit 1 and a refusal
// (no token, bad plan) exit 2 with the agent's message.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/agent_process.hpp"
#include "support/cli_process.hpp"
#include "support/prometheus_process.hpp"

namespace gpucluster::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

class CliAgent : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = fs::temp_directory_path() / fmt::format("gpucluster-cli-agent-{}", ::getpid());
    fs::create_directories(scratch_);
    std::ofstream(scratch_ / "token") << "cli-agent-token\n";
    fs::permissions(scratch_ / "token", fs::perms::owner_read | fs::perms::owner_write);
    coordinator_ = new AgentProcess({"--coordinator", "--state-dir", (scratch_ / "coord").string(), "--node-name",
                                     "coord", "--token-file", (scratch_ / "token").string(), "--fleet",
                                     source_path("examples/fleet-home.json"), "--report-interval", "200ms",
                                     "--suspect-after", "600ms", "--evict-after", "2s"});
    member_ = new AgentProcess({"--state-dir", (scratch_ / "n1").string(), "--node-name", "n1", "--fleet",
                                source_path("examples/fleet-8x-h100.json"), "--join", coordinator_->base_url(),
                                "--join-token-file", (scratch_ / "token").string()});
    // Converged: the coordinator lists n1's eight devices.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
    while (std::chrono::steady_clock::now() < deadline) {
      const auto devices = coordinator_->client().Get("/v1/devices");
      if (devices && devices->body.find("\"n1/cuda:7\"") != std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds{50});
    }
  }
  static void TearDownTestSuite() {
    delete member_;
    delete coordinator_;
    std::error_code ignored;
    fs::remove_all(scratch_, ignored);
  }

  static CliResult cli(const std::string& args) { return run_cli(args, scratch_); }
  static std::string agent_flag() { return "--agent " + coordinator_->base_url(); }
  static std::string token_flag() { return "--token-file " + (scratch_ / "token").string(); }

  static inline fs::path scratch_;
  static inline AgentProcess* coordinator_ = nullptr;
  static inline AgentProcess* member_ = nullptr;
};

TEST_F(CliAgent, DevicesJsonIsTheAgentsAnswerAndTheTableShowsRemoteDevices) {
  const CliResult result = cli("devices --json " + agent_flag());
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const json listed = json::parse(result.out);
  std::vector<std::string> ids;
  for (const json& device : listed) ids.push_back(device["id"]);
  std::vector<std::string> expected;
  for (const json& device : json::parse(coordinator_->client().Get("/v1/devices")->body)) {
    expected.push_back(device["id"]);
  }
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(std::count_if(ids.begin(), ids.end(), [](const std::string& id) { return id.rfind("n1/", 0) == 0; }), 8);

  const CliResult table = cli("devices " + agent_flag());
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("n1/cuda:0"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("NVIDIA H100 80GB HBM3"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("GiB / 80.0 GiB"), std::string::npos) << table.out;
}

TEST_F(CliAgent, SelectAndPlanAskTheAgentWithItsToken) {
  const CliResult select = cli("select --json --min-memory 1GiB " + agent_flag() + " " + token_flag());
  ASSERT_EQ(select.exit_code, 0) << select.err;
  const json selected = json::parse(select.out);
  ASSERT_TRUE(selected["device"].is_string()) << select.out;
  const CliResult plan = cli("plan --json --items 1000 --strategy capacity " + agent_flag() + " " + token_flag());
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  const json planned = json::parse(plan.out);
  EXPECT_EQ(planned["total_items"], 1000);
  std::uint64_t assigned = 0;
  for (const json& a : planned["assignments"]) assigned += a["count"].get<std::uint64_t>();
  EXPECT_EQ(assigned + planned["unassigned"].get<std::uint64_t>(), 1000U);
  const CliResult table = cli("plan --items 1000 --strategy capacity " + agent_flag() + " " + token_flag());
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("capacity plan of 1000 items"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("n1/cuda:"), std::string::npos) << table.out;
}

TEST_F(CliAgent, NodesListsTheCoordinatorAndItsMember) {
  const CliResult table = cli("nodes " + agent_flag());
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("coord"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("n1"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("alive"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(member_->base_url()), std::string::npos) << table.out;
  const CliResult listed = cli("nodes --json " + agent_flag());
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(json::parse(listed.out)["nodes"].size(), 2U) << listed.out;
}

TEST_F(CliAgent, WithoutTheTokenThePostRoutesAreRefusedWithExitTwo) {
  const CliResult result = cli("select " + agent_flag());
  EXPECT_EQ(result.exit_code, 2) << result.out;
  EXPECT_NE(result.err.find("HTTP 401 unauthorized"), std::string::npos) << result.err;
}

TEST_F(CliAgent, TheAgentsRefusalOfABadPlanIsExitTwoNamingTheField) {
  const CliResult result =
      cli("plan --strategy capacity --items 10 --weight nowhere/cuda:0=1 " + agent_flag() + " " + token_flag());
  EXPECT_EQ(result.exit_code, 2) << result.out;
  EXPECT_NE(result.err.find("refused POST /v1/plan"), std::string::npos) << result.err;
}

TEST_F(CliAgent, AnUnreachableAgentIsExitOne) {
  const CliResult result = cli(fmt::format("devices --agent http://127.0.0.1:{}", free_loopback_port()));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("cannot reach the agent"), std::string::npos) << result.err;
}

TEST_F(CliAgent, AgentAndLocalSourcesCannotBeMixed) {
  const CliResult result = cli("devices --fleet " + source_path("examples/fleet-home.json") + " " + agent_flag());
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("--agent"), std::string::npos) << result.err;
  const CliResult https = cli("devices --agent https://127.0.0.1:9420");
  EXPECT_EQ(https.exit_code, 2);
  EXPECT_NE(https.err.find("https is not supported"), std::string::npos) << https.err;
}

}  // namespace
}  // namespace gpucluster::testing
