// A real Prometheus (Debian's /usr/bin/prometheus, on its own loopback port
// with a temporary config and data dir) scrapes the real agent, and the values
// read back through Prometheus's query API must be what the agent reports
// through its JSON API; `promtool check metrics` must accept /metrics as is.
// Skipped only where the Debian package is not installed (scripts/bootstrap.sh
// installs it, so CI runs these).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/agent_process.hpp"
#include "support/prometheus_process.hpp"

namespace gpucluster::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// A model name that exercises the exposition's label escaping end to end:
// quote, backslash, line break and multi-byte UTF-8 must come back unchanged.
const std::string kOddModel = "Odd \"quoted\" back\\slash\nsecond line \xC3\xBC \xE2\x98\x83";

std::string example(const std::string& name) {
  return read_text(source_path("examples/protocol/" + name + ".json"));
}

// POSTs a protocol message; the agent's answer status.
int post_telemetry(const AgentProcess& agent, const std::string& body) {
  auto client = agent.client();
  const auto result = client.Post("/v1/telemetry", body, "application/json");
  return result ? result->status : -1;
}

// The example registration of node-a's H100, as node-b's cuda:1 under the odd
// model name (another id than node-a's cuda:0, so that the examples' messages,
// which name no host, still resolve to node-a).
std::string odd_registration() {
  json message = json::parse(example("registration"));
  message["payload"]["hostname"] = "node-b";
  message["payload"]["device_id"] = "cuda:1";
  message["payload"]["capabilities"]["device_id"] = "cuda:1";
  message["payload"]["capabilities"]["device_name"] = kOddModel;
  return message.dump();
}

json agent_devices(const AgentProcess& agent) {
  auto client = agent.client();
  const auto result = client.Get("/v1/devices");
  if (!result || result->status != 200) throw std::runtime_error("GET /v1/devices failed");
  return json::parse(result->body);
}

const json& device_by_id(const json& devices, const std::string& id) {
  for (const json& device : devices) {
    if (device["id"] == id) return device;
  }
  throw std::runtime_error("the agent does not list " + id);
}

// Equal up to a few units in the last place: a value crosses a decimal
// rendering in the exposition and again in Prometheus's API.
bool same_value(double a, double b) {
  return a == b || std::abs(a - b) <= 4 * std::numeric_limits<double>::epsilon() * std::max(std::abs(a), std::abs(b));
}

// host/device → value, for every series of one query.
using SeriesValues = std::map<std::string, double>;

std::string series_key(const json& labels) {
  return labels.value("host", "?") + "/" + labels.value("device", "?");
}

// Duplicate (host, device) series are reported under the key "duplicate".
SeriesValues series_of(const PrometheusProcess& prometheus, const std::string& family,
                       std::vector<std::string>& problems) {
  SeriesValues values;
  for (const json& series : prometheus.query(family + "{job=\"" + prometheus.job() + "\"}")) {
    const std::string key = series_key(series["metric"]);
    if (values.count(key) != 0) problems.push_back(family + " has two series for " + key);
    values[key] = std::stod(series["value"][1].get<std::string>());
  }
  return values;
}

// The per-device families whose value comes from the live sample: the JSON
// field of /v1/devices' "metrics" and the unit conversion.
struct SampleFamily {
  const char* family;
  const char* field;
  double multiplier;
  double divisor;
};
constexpr SampleFamily kSampleFamilies[] = {
    {"gpucluster_memory_used_bytes", "memory_used_bytes", 1, 1},
    {"gpucluster_utilization_ratio", "compute_utilization_percent", 1, 100},
    {"gpucluster_power_watts", "power_watts", 1, 1},
    {"gpucluster_temperature_celsius", "temperature_celsius", 1, 1},
    {"gpucluster_clock_hertz", "clock_rate_mhz", 1e6, 1},
};

// Every device family read back through Prometheus must hold exactly the
// series the agent's JSON implies: a value for each known reading, no series
// at all for an unknown one (never a fake 0), nothing for a device that is
// unavailable except its up = 0 and its static memory total. Returns the
// differences, empty when Prometheus agrees with the agent.
std::vector<std::string> differences(const PrometheusProcess& prometheus, const json& devices) {
  std::map<std::string, SeriesValues> expected;
  for (const json& device : devices) {
    const std::string key = device["host"].get<std::string>() + "/" + device["device_id"].get<std::string>();
    const bool available = device["available"].get<bool>();
    const json& metrics = device["metrics"];
    const bool live = available && metrics.is_object();
    expected["gpucluster_device_up"][key] = available ? 1 : 0;
    expected["gpucluster_memory_total_bytes"][key] =
        live ? metrics["memory_total_bytes"].get<double>() : device["memory_bytes"].get<double>();
    for (const SampleFamily& family : kSampleFamilies) {
      if (live && metrics.contains(family.field) && metrics[family.field].is_number()) {
        expected[family.family][key] = metrics[family.field].get<double>() * family.multiplier / family.divisor;
      }
    }
    if (available && device.contains("score") && device["score"].is_number()) {
      expected["gpucluster_device_score"][key] = device["score"].get<double>();
    }
  }
  for (const char* family : {"gpucluster_device_up", "gpucluster_memory_total_bytes", "gpucluster_device_score"}) {
    expected.try_emplace(family);
  }
  for (const SampleFamily& family : kSampleFamilies) expected.try_emplace(family.family);

  std::vector<std::string> problems;
  for (const auto& [family, want] : expected) {
    const SeriesValues got = series_of(prometheus, family, problems);
    for (const auto& [key, value] : want) {
      const auto found = got.find(key);
      if (found == got.end()) {
        problems.push_back(family + " has no series for " + key + " in Prometheus; the agent says " +
                           std::to_string(value));
      } else if (!same_value(found->second, value)) {
        problems.push_back(family + " of " + key + " is " + std::to_string(found->second) +
                           " in Prometheus, the agent says " + std::to_string(value));
      }
    }
    for (const auto& [key, value] : got) {
      if (want.count(key) == 0) {
        problems.push_back(family + " has a series for " + key + " (value " + std::to_string(value) +
                           ") that the agent's JSON does not imply");
      }
    }
  }
  return problems;
}

// Polls until Prometheus agrees with the agent's JSON (a scrape that failed
// on a loaded machine marks every series stale until the next one succeeds).
void expect_prometheus_matches_agent(const PrometheusProcess& prometheus, const json& devices) {
  std::vector<std::string> problems{"not compared yet"};
  const bool agreed = PrometheusProcess::eventually(
      [&] {
        problems = {"the query API failed"};
        problems = differences(prometheus, devices);
        return problems.empty();
      },
      30s, 200ms);
  if (!agreed) {
    std::string report;
    for (const std::string& problem : problems) report += "  " + problem + "\n";
    ADD_FAILURE() << "Prometheus disagrees with the agent's /v1/devices:\n"
                  << report << prometheus.target_report() << "agent devices: " << devices.dump();
  }
}

bool prometheus_installed(std::string& why) {
  for (const char* path : {kPrometheusPath, kPromtoolPath}) {
    if (!executable(path)) {
      why = std::string(path) + " is not installed (Debian package `prometheus`; scripts/bootstrap.sh installs it)";
      return false;
    }
  }
  return true;
}

std::vector<std::string> agent_arguments() {
  return {"--fleet", source_path("examples/fleet-home.json"), "--interval", "200ms"};
}

TEST(PrometheusScrape, PrometheusReadsBackWhatTheAgentReports) {
  std::string why;
  if (!prometheus_installed(why)) GTEST_SKIP() << why;

  AgentProcess agent(agent_arguments());
  ASSERT_EQ(post_telemetry(agent, example("registration")), 202);
  ASSERT_EQ(post_telemetry(agent, example("metrics")), 202);
  ASSERT_EQ(post_telemetry(agent, odd_registration()), 202);
  const auto posted = std::chrono::system_clock::now();

  std::unique_ptr<PrometheusProcess> prometheus;
  try {
    prometheus = std::make_unique<PrometheusProcess>(agent.port());
    // The first scrape comes ~5 s after start (Prometheus's discovery update
    // interval); a loaded CI machine gets far more.
    prometheus->wait_for_scrape_after(posted, 90s);
  } catch (const std::exception& error) {
    FAIL() << error.what() << "\nagent stderr:\n" << tail_of(agent.stderr_text());
  }
  EXPECT_EQ(prometheus->value("up{job=\"gpucluster\"}"), 1.0);

  // ---- phase 1: the fleet, node-a with a full sample, node-b registered only ----
  {
    SCOPED_TRACE("fleet + node-a metrics + node-b registration");
    const json devices = agent_devices(agent);
    ASSERT_EQ(devices.size(), 5U) << devices.dump(2);
    expect_prometheus_matches_agent(*prometheus, devices);

    // The same facts spelled out, as an operator's queries would read them.
    EXPECT_EQ(prometheus->value("count(gpucluster_device_up{job=\"gpucluster\"})"),
              static_cast<double>(devices.size()));
    EXPECT_EQ(prometheus->value("gpucluster_memory_total_bytes{host=\"home\",device=\"cuda:0\"}"),
              device_by_id(devices, "home/cuda:0")["metrics"]["memory_total_bytes"].get<double>());
    EXPECT_EQ(prometheus->value("sum(gpucluster_device_up{job=\"gpucluster\"})"), 5.0);
    const json metrics_message = json::parse(example("metrics"));
    const auto node_a_utilization =
        prometheus->value("gpucluster_utilization_ratio{host=\"node-a\",device=\"cuda:0\"}");
    ASSERT_TRUE(node_a_utilization);
    EXPECT_DOUBLE_EQ(*node_a_utilization,
                     metrics_message["payload"]["compute_utilization_percent"].get<double>() / 100.0);
    EXPECT_DOUBLE_EQ(
        *node_a_utilization,
        device_by_id(devices, "node-a/cuda:0")["metrics"]["compute_utilization_percent"].get<double>() / 100.0);
    // metal:0 reports neither power nor clock in the fleet file: no series, not a 0.
    ASSERT_TRUE(device_by_id(devices, "home/metal:0")["metrics"]["power_watts"].is_null());
    EXPECT_TRUE(prometheus->query("gpucluster_power_watts{host=\"home\",device=\"metal:0\"}").empty());
    EXPECT_TRUE(prometheus->query("gpucluster_clock_hertz{host=\"home\",device=\"metal:0\"}").empty());
    EXPECT_EQ(prometheus->value("gpucluster_temperature_celsius{host=\"home\",device=\"metal:0\"}"), 47.0);
    // node-b has no sample yet: up, and its memory total from the registration, nothing else.
    EXPECT_TRUE(prometheus->query("gpucluster_memory_used_bytes{host=\"node-b\"}").empty());

    // Labels: uuid when known, the model name exactly as registered.
    const json cuda0 = prometheus->query("gpucluster_device_up{host=\"home\",device=\"cuda:0\"}");
    ASSERT_EQ(cuda0.size(), 1U);
    EXPECT_EQ(cuda0[0]["metric"]["uuid"], device_by_id(devices, "home/cuda:0")["uuid"]);
    EXPECT_EQ(cuda0[0]["metric"]["model"], device_by_id(devices, "home/cuda:0")["name"]);
    const json metal = prometheus->query("gpucluster_device_up{host=\"home\",device=\"metal:0\"}");
    ASSERT_EQ(metal.size(), 1U);
    EXPECT_FALSE(metal[0]["metric"].contains("uuid")) << metal.dump();
    const json odd = prometheus->query("gpucluster_device_up{host=\"node-b\",device=\"cuda:1\"}");
    ASSERT_EQ(odd.size(), 1U);
    EXPECT_EQ(odd[0]["metric"]["model"], kOddModel);

    // The agent's own families arrive too.
    EXPECT_GE(prometheus->value("gpucluster_http_requests_total{route=\"/v1/telemetry\",code=\"202\"}").value_or(0),
              3.0);
    EXPECT_GT(prometheus->value("gpucluster_sample_duration_seconds_count").value_or(0), 0.0);
    EXPECT_EQ(prometheus->query("gpucluster_sample_duration_seconds_bucket{le=\"+Inf\"}").size(), 1U);
    EXPECT_FALSE(prometheus->query("gpucluster_rejected_samples_total{reason=\"out_of_order\"}").empty());
  }

  // ---- phase 2: node-a's power, temperature and clock become unknown ----
  {
    SCOPED_TRACE("after metrics-partial.json");
    ASSERT_EQ(post_telemetry(agent, example("metrics-partial")), 202);
    const auto after = std::chrono::system_clock::now();
    ASSERT_NO_THROW(prometheus->wait_for_scrape_after(after, 60s));
    const json devices = agent_devices(agent);
    ASSERT_TRUE(device_by_id(devices, "node-a/cuda:0")["metrics"]["power_watts"].is_null());
    expect_prometheus_matches_agent(*prometheus, devices);
    // The series that vanished from the scrape are stale in Prometheus, not a leftover value.
    EXPECT_TRUE(prometheus->query("gpucluster_power_watts{host=\"node-a\"}").empty());
    EXPECT_TRUE(prometheus->query("gpucluster_clock_hertz{host=\"node-a\"}").empty());
    EXPECT_EQ(prometheus->value("gpucluster_utilization_ratio{host=\"node-a\"}"), 0.885);
  }

  // ---- phase 3: node-a is lost ----
  {
    SCOPED_TRACE("after heartbeat-unavailable.json");
    ASSERT_EQ(post_telemetry(agent, example("heartbeat-unavailable")), 202);
    const auto after = std::chrono::system_clock::now();
    ASSERT_NO_THROW(prometheus->wait_for_scrape_after(after, 60s));
    const json devices = agent_devices(agent);
    const json& node_a = device_by_id(devices, "node-a/cuda:0");
    ASSERT_FALSE(node_a["available"].get<bool>());
    expect_prometheus_matches_agent(*prometheus, devices);
    EXPECT_EQ(prometheus->value("gpucluster_device_up{host=\"node-a\"}"), 0.0);
    EXPECT_EQ(prometheus->value("count(gpucluster_device_up{job=\"gpucluster\"})"),
              static_cast<double>(devices.size()));
    EXPECT_EQ(prometheus->value("sum(gpucluster_device_up{job=\"gpucluster\"})"), 4.0);
    EXPECT_TRUE(prometheus->query("gpucluster_memory_used_bytes{host=\"node-a\"}").empty());
    EXPECT_TRUE(prometheus->query("gpucluster_utilization_ratio{host=\"node-a\"}").empty());
    EXPECT_TRUE(prometheus->query("gpucluster_device_score{host=\"node-a\"}").empty());
    EXPECT_EQ(prometheus->value("gpucluster_memory_total_bytes{host=\"node-a\"}"),
              node_a["memory_bytes"].get<double>());
  }
  if (HasFailure()) {
    ADD_FAILURE() << "Prometheus targets: " << prometheus->target_report() << "Prometheus log tail:\n"
                  << prometheus->log_tail();
  }
}

TEST(PrometheusScrape, PromtoolAcceptsTheExposition) {
  std::string why;
  if (!prometheus_installed(why)) GTEST_SKIP() << why;

  AgentProcess agent(agent_arguments());
  // Every kind of state the exposition renders: remote devices with full,
  // partial and no samples, an unavailable one, an odd model name, rejected
  // samples and error responses in the request counters.
  ASSERT_EQ(post_telemetry(agent, example("registration")), 202);
  ASSERT_EQ(post_telemetry(agent, example("heartbeat")), 202);
  ASSERT_EQ(post_telemetry(agent, example("metrics")), 202);
  ASSERT_EQ(post_telemetry(agent, example("metrics-partial")), 202);
  ASSERT_EQ(post_telemetry(agent, example("heartbeat-unavailable")), 202);
  ASSERT_EQ(post_telemetry(agent, example("metrics")), 202);  // a retransmission: counted as a duplicate
  std::string out_of_range = example("metrics");
  out_of_range.replace(out_of_range.find("91.0"), 4, "150.0");
  ASSERT_EQ(post_telemetry(agent, out_of_range), 422);  // utilization 150 %: rejected
  ASSERT_EQ(post_telemetry(agent, odd_registration()), 202);
  ASSERT_EQ(post_telemetry(agent, "{"), 400);
  auto client = agent.client();
  ASSERT_TRUE(client.Get("/v1/devices/home/cuda:9"));

  const auto result = client.Get("/metrics");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200);
  EXPECT_EQ(result->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0), 0U)
      << result->get_header_value("Content-Type");
  ASSERT_NE(result->body.find("gpucluster_device_up{host=\"node-a\""), std::string::npos);
  ASSERT_NE(result->body.find("gpucluster_rejected_samples_total{reason=\"out_of_range\"} 1"), std::string::npos)
      << result->body;
  ASSERT_NE(result->body.find("gpucluster_duplicate_samples_total 1"), std::string::npos) << result->body;

  const CommandResult check = run_command({kPromtoolPath, "check", "metrics"}, result->body);
  EXPECT_EQ(check.exit_code, 0) << "promtool check metrics:\n" << check.output << "\non:\n" << result->body;
  EXPECT_EQ(check.output, "") << "promtool check metrics printed lint problems:\n" << check.output;
}

}  // namespace
}  // namespace gpucluster::testing
