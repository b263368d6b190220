// The agent's node identity end to end: the real `gpucluster agent` with
// --state-dir and --node-name, as /healthz and the banner show it.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/agent_process.hpp"
#include "support/cli_process.hpp"

namespace gpucluster::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json node_of(const AgentProcess& agent) {
  auto client = agent.client();
  const auto result = client.Get("/healthz");
  EXPECT_TRUE(result) << "no response";
  if (!result) return nullptr;
  EXPECT_EQ(result->status, 200) << result->body;
  return json::parse(result->body).at("node");
}

class AgentIdentity : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("gpucluster-agent-identity-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  std::vector<std::string> arguments(const fs::path& state_dir) const {
    return {"--fleet", source_path("examples/fleet-home.json"), "--state-dir", state_dir.string()};
  }

  fs::path root_;
};

TEST_F(AgentIdentity, WithoutStateDirTheNodeHasNoId) {
  AgentProcess agent({"--fleet", source_path("examples/fleet-home.json"), "--node-name", "lab-7"});
  const json node = node_of(agent);
  EXPECT_TRUE(node.at("id").is_null()) << node;
  EXPECT_TRUE(node.at("incarnation").is_null()) << node;
  EXPECT_EQ(node.at("name"), "lab-7");
}

TEST_F(AgentIdentity, TheNodeNameIsTheHostOfItsOwnDevices) {
  AgentProcess agent({"--backend", "host", "--node-name", "lab-7"});
  auto client = agent.client();
  const auto result = client.Get("/v1/devices");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const json body = json::parse(result->body);
  const json& devices = body.is_array() ? body : body.at("devices");
  ASSERT_EQ(devices.size(), 1u) << body;  // this machine's CPU
  EXPECT_EQ(devices[0].at("host"), "lab-7") << body;
  EXPECT_EQ(devices[0].at("id"), "lab-7/cpu:0") << body;
}

TEST_F(AgentIdentity, TwoStateDirsAreTwoNodes) {
  AgentProcess first(arguments(root_ / "a"));
  AgentProcess second(arguments(root_ / "b"));
  const json a = node_of(first);
  const json b = node_of(second);
  ASSERT_TRUE(a.at("id").is_string()) << a;
  ASSERT_TRUE(b.at("id").is_string()) << b;
  EXPECT_NE(a.at("id"), b.at("id"));
  EXPECT_EQ(a.at("incarnation"), 1);
  EXPECT_EQ(b.at("incarnation"), 1);
  EXPECT_NE(first.banner().find(a.at("id").get<std::string>() + ", incarnation 1"), std::string::npos)
      << first.banner();
}

TEST_F(AgentIdentity, ARestartKeepsTheIdAndIncrementsTheIncarnation) {
  std::vector<std::string> args = arguments(root_ / "state");
  args.insert(args.end(), {"--node-name", "gpu-a"});
  json before;
  {
    AgentProcess agent(args);
    before = node_of(agent);
    EXPECT_EQ(agent.stop(), 0);
  }
  AgentProcess again(args);
  const json after = node_of(again);
  EXPECT_EQ(after.at("id"), before.at("id"));
  EXPECT_EQ(after.at("name"), "gpu-a");
  EXPECT_EQ(before.at("incarnation"), 1);
  EXPECT_EQ(after.at("incarnation"), 2);
}

TEST_F(AgentIdentity, ASecondAgentOnTheSameStateDirExits2NamingIt) {
  const fs::path state = root_ / "shared";
  AgentProcess first(arguments(state));
  const json node = node_of(first);
  fs::create_directories(root_ / "scratch");
  const CliResult second = run_cli("agent --listen 127.0.0.1:0 --fleet " + source_path("examples/fleet-home.json") +
                                       " --state-dir " + state.string(),
                                   root_ / "scratch", "timeout 20");
  EXPECT_EQ(second.exit_code, 2) << second.err;
  EXPECT_NE(second.err.find("state directory " + state.string() + " is in use by another gpucluster agent (pid " +
                            std::to_string(first.pid()) + ")"),
            std::string::npos)
      << second.err;
  EXPECT_EQ(second.out.find("gpucluster agent on"), std::string::npos) << "it must not have served";
  // The first one is untouched: same node, same incarnation.
  EXPECT_EQ(node_of(first), node);
}

TEST_F(AgentIdentity, AnInvalidNodeNameOrACorruptNodeFileExits2) {
  fs::create_directories(root_ / "scratch");
  const std::string fleet = " --fleet " + source_path("examples/fleet-home.json");
  const CliResult bad_name =
      run_cli("agent --listen 127.0.0.1:0" + fleet + " --node-name a/b", root_ / "scratch", "timeout 20");
  EXPECT_EQ(bad_name.exit_code, 2) << bad_name.err;
  EXPECT_NE(bad_name.err.find("--node-name"), std::string::npos) << bad_name.err;

  const fs::path state = root_ / "state";
  fs::create_directories(state);
  std::ofstream(state / "node.json") << "not json";
  const CliResult corrupt =
      run_cli("agent --listen 127.0.0.1:0" + fleet + " --state-dir " + state.string(), root_ / "scratch", "timeout 20");
  EXPECT_EQ(corrupt.exit_code, 2) << corrupt.err;
  EXPECT_NE(corrupt.err.find((state / "node.json").string()), std::string::npos) << corrupt.err;
}

}  // namespace
}  // namespace gpucluster::testing
