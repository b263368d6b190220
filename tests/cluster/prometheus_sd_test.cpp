// A real Prometheus (Debian's /usr/bin/prometheus) configured with
// http_sd_configs against a coordinator's GET /v1/sd/prometheus discovers
// the coordinator and every agent that joined it, and scrapes each one's own
// devices (scope=local) with the node labels from the discovery. promtool
// checks the configuration first, as a user would.
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/agent_process.hpp"
#include "support/prometheus_process.hpp"

namespace gpucluster::testing {
namespace {

using nlohmann::json;

constexpr const char* kPrometheus = "/usr/bin/prometheus";
constexpr const char* kPromtool = "/usr/bin/promtool";

TEST(PrometheusServiceDiscovery, APlainAgentListsItselfOnlyAndTheTargetsAreAnArray) {
  AgentProcess plain({"--fleet", source_path("examples/fleet-home.json")});
  const auto result = plain.client().Get("/v1/sd/prometheus");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  const json targets = json::parse(result->body);
  ASSERT_TRUE(targets.is_array());
  ASSERT_EQ(targets.size(), 1U) << targets.dump();
  EXPECT_EQ(targets[0]["targets"], json::array({fmt::format("127.0.0.1:{}", plain.port())}));
  EXPECT_EQ(targets[0]["labels"]["__param_scope"], "local");
}

TEST(PrometheusServiceDiscovery, PrometheusDiscoversAndScrapesEveryAgent) {
  if (::access(kPrometheus, X_OK) != 0 || ::access(kPromtool, X_OK) != 0) {
    GTEST_SKIP() << "Prometheus is not installed (Debian package `prometheus`; scripts/bootstrap.sh installs it)";
  }
  TempDir dir("gpucluster-sd");
  AgentProcess coordinator({"--coordinator", "--state-dir", (dir.path() / "coord").string(), "--node-name", "coord",
                            "--fleet", source_path("examples/fleet-home.json"), "--report-interval", "200ms",
                            "--suspect-after", "600ms", "--evict-after", "2s"});
  std::vector<std::unique_ptr<AgentProcess>> agents;
  for (int i = 1; i <= 3; ++i) {
    agents.push_back(std::make_unique<AgentProcess>(std::vector<std::string>{
        "--state-dir", (dir.path() / fmt::format("n{}", i)).string(), "--node-name", fmt::format("n{}", i), "--fleet",
        source_path("examples/fleet-8x-h100.json"), "--join", coordinator.base_url()}));
  }
  ASSERT_TRUE(PrometheusProcess::eventually(
      [&] { return json::parse(coordinator.client().Get("/v1/sd/prometheus")->body).size() == 4; },
      std::chrono::seconds{10}))
      << coordinator.client().Get("/v1/sd/prometheus")->body;

  const std::string scrape = fmt::format(
      "  - job_name: gpucluster\n"
      "    http_sd_configs:\n"
      "      - url: http://127.0.0.1:{}/v1/sd/prometheus\n"
      "        refresh_interval: 1s\n",
      coordinator.port());
  PrometheusProcess prometheus(PrometheusProcess::ScrapeConfigs{scrape}, "gpucluster");
  const CommandResult check = run_command({kPromtool, "check", "config", prometheus.config_path().string()}, "");
  ASSERT_EQ(check.exit_code, 0) << check.output;

  const bool all_up = PrometheusProcess::eventually(
      [&] { return prometheus.value("count(up{job=\"gpucluster\"} == 1)") == 4.0; }, std::chrono::seconds{60});
  ASSERT_TRUE(all_up) << prometheus.target_report() << prometheus.log_tail();
  // n1's devices come from n1 itself (scope=local), labelled with the discovery's node.
  const json n1_memory = prometheus.query("gpucluster_memory_total_bytes{node=\"n1\"}");
  ASSERT_EQ(n1_memory.size(), 8U) << n1_memory.dump();
  EXPECT_EQ(n1_memory[0]["metric"]["instance"], fmt::format("127.0.0.1:{}", agents[0]->port()));
  // No device is scraped twice: the coordinator's target serves its own three devices only, not its members'.
  EXPECT_EQ(prometheus.value("count(gpucluster_memory_total_bytes{node=\"coord\"})"), 3.0);
  EXPECT_EQ(prometheus.value("count(gpucluster_memory_total_bytes)"), 3.0 + 3 * 8);
}

}  // namespace
}  // namespace gpucluster::testing
