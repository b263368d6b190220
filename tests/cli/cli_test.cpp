// Runs the real gpucluster binary and checks its output and exit codes.

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/cli_process.hpp"

#include "support/agent_process.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using Result = gpucluster::testing::CliResult;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gpucluster-cli-" + std::to_string(std::random_device{}()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // `environment`: VAR=value assignments for the command, as a shell reads them.
  Result run(const std::string& args, const std::string& environment = {}) const {
    return gpucluster::testing::run_cli(args, dir_, environment);
  }

  fs::path write(const std::string& name, const json& document) const {
    const fs::path path = dir_ / name;
    std::ofstream(path) << document.dump();
    return path;
  }

  // n identical devices with healthy metrics.
  fs::path equal_fleet(int n) const {
    json devices = json::array();
    for (int i = 0; i < n; ++i) {
      devices.push_back({{"device_id", "cuda:" + std::to_string(i)},
                         {"name", "GPU"},
                         {"vendor", "nvidia"},
                         {"device_type", "cuda"},
                         {"memory_bytes", 1 << 30},
                         {"compute_units", 10},
                         {"metrics", {{"memory_used_bytes", 0}, {"compute_utilization_percent", 10.0}}}});
    }
    return write("equal.json", {{"host", "lab"}, {"devices", devices}});
  }

  static std::string example(const std::string& name) {
    return std::string(GPUCLUSTER_SOURCE_DIR) + "/examples/" + name;
  }

  fs::path dir_;
};

TEST_F(CliTest, HelpExitsZeroAndNamesCommands) {
  const Result r = run("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* command : {"devices", "select", "plan", "status"}) {
    EXPECT_NE(r.out.find(command), std::string::npos) << command;
  }
  EXPECT_EQ(run("plan --help").exit_code, 0);
}

TEST_F(CliTest, UsageErrorsExitTwoWithOneLine) {
  for (const std::string args : {"", "frobnicate", "plan --items -3", "plan --items 1.5", "select --min-memory 8XB",
                                 "plan --items 4 --strategy magic", "devices --fleet /nonexistent.json"}) {
    const Result r = run(args);
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << ": " << r.err;
  }
}

TEST_F(CliTest, DevicesJsonListsTheFleet) {
  const Result r = run("devices --json --fleet " + example("fleet-8x-h100.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json devices = json::parse(r.out);
  ASSERT_EQ(devices.size(), 8U);
  for (const json& d : devices) {
    EXPECT_EQ(d["device_type"], "cuda");
    EXPECT_EQ(d["memory_bytes"], 85899345920ULL);
    EXPECT_TRUE(d["available"].get<bool>());
    EXPECT_TRUE(d["score"].is_number());
    EXPECT_TRUE(d["metrics"]["compute_utilization_percent"].is_number());
  }
}

TEST_F(CliTest, UnavailableMetricIsNullNotZero) {
  const Result r = run("devices --json --fleet " + example("fleet-home.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  bool saw_missing_power = false;
  for (const json& d : json::parse(r.out)) {
    if (d["device_type"] == "metal") {
      EXPECT_TRUE(d["metrics"]["power_watts"].is_null());
      saw_missing_power = true;
    }
  }
  EXPECT_TRUE(saw_missing_power);
  const Result table = run("devices --fleet " + example("fleet-home.json"));
  EXPECT_NE(table.out.find("n/a"), std::string::npos);
}

TEST_F(CliTest, InvalidFleetMetricIsRejectedWithTheField) {
  const fs::path fleet =
      write("bad.json", {{"host", "lab"},
                         {"devices",
                          {{{"device_id", "cuda:0"},
                            {"device_type", "cuda"},
                            {"memory_bytes", 100},
                            {"metrics", {{"memory_used_bytes", 1}, {"compute_utilization_percent", 150}}}}}}});
  const Result r = run("devices --fleet " + fleet.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("compute_utilization_percent"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("150"), std::string::npos) << r.err;
}

TEST_F(CliTest, SelectJsonAndNoDeviceExitsThree) {
  const std::string fleet = example("fleet-8x-h100.json");
  Result r = run("select --json --fleet " + fleet);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json selection = json::parse(r.out);
  EXPECT_TRUE(selection["device"].is_string());
  EXPECT_GT(selection["score"].get<double>(), 0.0);

  r = run("select --json --min-memory 1TiB --fleet " + fleet);
  EXPECT_EQ(r.exit_code, 3);
  selection = json::parse(r.out);
  EXPECT_TRUE(selection["device"].is_null());
  EXPECT_NE(selection["reason"].get<std::string>().find("insufficient_memory"), std::string::npos);
}

TEST_F(CliTest, SelectExplainShowsBreakdown) {
  const Result r = run("select --explain --fleet " + example("fleet-home.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("THERMAL"), std::string::npos);
  EXPECT_NE(r.out.find("home/cuda:1"), std::string::npos);
}

TEST_F(CliTest, CapacityPlanOf19OverTenEqualDevices) {
  // The Python design gave 10,1,1,...; largest remainder gives nine 2s and one 1.
  const Result r = run("plan --json --items 19 --strategy capacity --fleet " + equal_fleet(10).string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json plan = json::parse(r.out);
  EXPECT_EQ(plan["strategy"], "capacity");
  EXPECT_EQ(plan["unassigned"], 0);
  ASSERT_EQ(plan["assignments"].size(), 10U);
  std::uint64_t start = 0;
  for (std::size_t i = 0; i < 10; ++i) {
    const json& a = plan["assignments"][i];
    EXPECT_EQ(a["device"], "lab/cuda:" + std::to_string(i));
    EXPECT_EQ(a["start"], start);
    EXPECT_EQ(a["count"], i < 9 ? 2 : 1);
    start += a["count"].get<std::uint64_t>();
  }
}

TEST_F(CliTest, CapacityPlanWithExplicitWeightsIsExact) {
  const Result r =
      run("plan --json --items 100 --strategy capacity --weight cuda:0=29 --weight lab/cuda:1=71 --fleet " +
          equal_fleet(2).string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json plan = json::parse(r.out);
  EXPECT_EQ(plan["assignments"][0]["count"], 29);
  EXPECT_EQ(plan["assignments"][1]["count"], 71);
}

TEST_F(CliTest, CapacityPlanRejectsBadWeights) {
  const std::string fleet = equal_fleet(2).string();
  for (const std::string weight : {"cuda:0=-1", "cuda:9=1", "cuda:0=nan", "cuda:0=abc", "nonsense"}) {
    const Result r = run("plan --items 10 --strategy capacity --weight " + weight + " --fleet " + fleet);
    EXPECT_EQ(r.exit_code, 2) << weight << ": " << r.err;
  }
}

TEST_F(CliTest, CapNeverDropsAnItem) {
  const Result r =
      run("plan --json --items 10 --strategy uniform --max-per-device 3 --fleet " + equal_fleet(2).string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json plan = json::parse(r.out);
  EXPECT_EQ(plan["assignments"][0]["count"], 3);
  EXPECT_EQ(plan["assignments"][1]["count"], 3);
  EXPECT_EQ(plan["unassigned"], 4);
}

TEST_F(CliTest, MemoryPlanThatDoesNotFitNamesTheDevice) {
  const Result r = run("plan --strategy memory --layers 80 --layer-bytes 1GiB --fleet " + example("fleet-home.json"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("insufficient memory"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("home/cuda:0"), std::string::npos) << r.err;
}

TEST_F(CliTest, MemoryPlanSplitsLayersContiguously) {
  const Result r = run("plan --json --strategy memory --layers 80 --fleet " + example("fleet-8x-h100.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json plan = json::parse(r.out);
  std::uint64_t next = 0;
  for (const json& a : plan["assignments"]) {
    EXPECT_EQ(a["start"], next);
    next += a["count"].get<std::uint64_t>();
  }
  EXPECT_EQ(next, 80U);
}

TEST_F(CliTest, StatusOnThisMachine) {
  const Result r = run("status --duration 200ms");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Backends:"), std::string::npos);
  EXPECT_NE(r.out.find("cpu:0"), std::string::npos);
  EXPECT_NE(r.out.find("Best device:"), std::string::npos);
  const Result j = run("status --json --duration 200ms");
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const json status = json::parse(j.out);
  EXPECT_EQ(status["cluster"]["device_count"], 1);
  EXPECT_GT(status["cluster"]["total_memory_bytes"].get<std::uint64_t>(), 0U);
  bool host_reported = false;
  for (const json& backend : status["backends"]) {
    if (backend["backend"] == "host") host_reported = backend["devices"] == 1;
    if (backend["devices"] == 0) {
      EXPECT_TRUE(backend["note"].is_string()) << backend;  // says why
    }
  }
  EXPECT_TRUE(host_reported) << status["backends"];
}

TEST_F(CliTest, NvmlDevicesComeFromTheLoadedLibrary) {
  json devices = json::array();
  for (int i = 0; i < 8; ++i) {
    devices.push_back({{"name", "NVIDIA H100 80GB HBM3"},
                       {"uuid", "GPU-0000000" + std::to_string(i)},
                       {"pci_bus_id", "00000000:" + std::to_string(10 + i) + ":00.0"},
                       {"memory_total", 85899345920LL},
                       {"memory_used", 1073741824LL * i},
                       {"utilization_gpu", 10 * i},
                       {"power_mw", 250500},
                       {"temperature", 40 + i},
                       {"sm_clock", 1755}});
  }
  const fs::path scenario = write("scenario.json", {{"devices", devices}});
  const std::string environment = "GPUCLUSTER_NVML_LIBRARY=" + std::string(GPUCLUSTER_BUILD_DIR) +
                                  "/libfake_nvml.so FAKE_NVML_SCENARIO=" + scenario.string();
  const Result r = run("devices --backend nvml --json", environment);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json listed = json::parse(r.out);
  ASSERT_EQ(listed.size(), 8U);
  for (int i = 0; i < 8; ++i) {
    const json& d = listed[static_cast<std::size_t>(i)];
    EXPECT_EQ(d["device_id"], "cuda:" + std::to_string(i));
    EXPECT_EQ(d["name"], "NVIDIA H100 80GB HBM3");
    EXPECT_EQ(d["uuid"], "GPU-0000000" + std::to_string(i));
    EXPECT_EQ(d["backend"], "nvml");
    EXPECT_EQ(d["memory_bytes"], 85899345920ULL);
    EXPECT_EQ(d["metrics"]["memory_used_bytes"], 1073741824LL * i);
    EXPECT_DOUBLE_EQ(d["metrics"]["power_watts"].get<double>(), 250.5);  // mW → W
    EXPECT_DOUBLE_EQ(d["metrics"]["temperature_celsius"].get<double>(), 40 + i);
    EXPECT_DOUBLE_EQ(d["metrics"]["clock_rate_mhz"].get<double>(), 1755);
  }
}

TEST_F(CliTest, StatusSaysWhichBackendsFoundNothingAndWhy) {
  const Result r = run("status --duration 100ms", "GPUCLUSTER_NVML_LIBRARY=/nonexistent/libnvidia-ml.so.1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("nvml       no devices"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("/nonexistent/libnvidia-ml.so.1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rocm       no devices"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sysfs      "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("host       1 device(s)"), std::string::npos) << r.out;
  EXPECT_EQ(r.err.find("Failed to open drm root"), std::string::npos) << "vendor library noise: " << r.err;
}

TEST_F(CliTest, SysfsDevicesComeFromTheGivenRoot) {
  const fs::path device = dir_ / "sys/class/drm/card0/device";
  fs::create_directories(device / "hwmon/hwmon3");
  const auto put = [](const fs::path& path, const std::string& text) { std::ofstream(path) << text << '\n'; };
  put(device / "uevent", "DRIVER=amdgpu\nPCI_SLOT_NAME=0000:03:00.0");
  put(device / "product_name", "AMD Radeon RX 7900 XTX");
  put(device / "mem_info_vram_total", "25753026560");
  put(device / "mem_info_vram_used", "1073741824");
  put(device / "gpu_busy_percent", "37");
  put(device / "hwmon/hwmon3/power1_average", "123000000");
  put(device / "hwmon/hwmon3/temp1_input", "45000");
  const Result r = run("devices --json --backend sysfs --sysfs-root " + (dir_ / "sys").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json listed = json::parse(r.out);
  ASSERT_EQ(listed.size(), 1U) << r.out;
  EXPECT_EQ(listed[0]["device_type"], "rocm");
  EXPECT_EQ(listed[0]["name"], "AMD Radeon RX 7900 XTX");
  EXPECT_EQ(listed[0]["pci_bus_id"], "0000:03:00.0");
  EXPECT_EQ(listed[0]["memory_bytes"], 25753026560ULL);
  EXPECT_DOUBLE_EQ(listed[0]["metrics"]["compute_utilization_percent"].get<double>(), 37);
  EXPECT_DOUBLE_EQ(listed[0]["metrics"]["power_watts"].get<double>(), 123);         // µW → W
  EXPECT_DOUBLE_EQ(listed[0]["metrics"]["temperature_celsius"].get<double>(), 45);  // m°C → °C
}

// ---- Explicit backends fail loudly; discovery and reads run under deadlines ----

std::string fake_nvml_environment(const fs::path& scenario) {
  return "GPUCLUSTER_NVML_LIBRARY=" + std::string(GPUCLUSTER_BUILD_DIR) +
         "/libfake_nvml.so FAKE_NVML_SCENARIO=" + scenario.string();
}

json one_nvml_device() {
  return {{"name", "NVIDIA H100 80GB HBM3"},
          {"uuid", "GPU-00000000"},
          {"pci_bus_id", "00000000:10:00.0"},
          {"memory_total", 85899345920LL},
          {"memory_used", 1073741824LL},
          {"utilization_gpu", 10},
          {"power_mw", 250500},
          {"temperature", 40},
          {"sm_clock", 1755}};
}

std::size_t line_count(const std::string& text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

// Every command (the agent bounded by `timeout`: it would otherwise serve
// forever) refuses an explicitly named backend whose library cannot be loaded.
TEST_F(CliTest, ExplicitBackendThatCannotLoadExitsTwoOnEveryCommand) {
  const std::string missing = "GPUCLUSTER_NVML_LIBRARY=/nonexistent/libnvidia-ml.so.1";
  for (const std::string command : {"status --duration 10ms", "devices", "select", "plan --items 4",
                                    "watch --duration 100ms", "agent --listen 127.0.0.1:0"}) {
    const std::string args = command + " --backend nvml,host";
    const Result r = command.rfind("agent", 0) == 0
                         ? run(args, missing + " timeout 20")  // `timeout` runs the CLI with the environment
                         : run(args, missing);
    EXPECT_EQ(r.exit_code, 2) << command << "\n" << r.out << r.err;
    EXPECT_EQ(line_count(r.err), 1U) << command << ": " << r.err;
    EXPECT_NE(r.err.find("requested backend cannot be used: nvml: cannot load /nonexistent/libnvidia-ml.so.1"),
              std::string::npos)
        << command << ": " << r.err;
    EXPECT_NE(r.err.find("GPUCLUSTER_NVML_LIBRARY"), std::string::npos) << command << ": " << r.err;
    EXPECT_EQ(r.err.find("host"), std::string::npos) << "the host backend works: " << r.err;
  }
}

TEST_F(CliTest, ExplicitRocmAndSysfsThatCannotBeUsedExitTwo) {
  const Result rocm = run("devices --backend rocm,host", "GPUCLUSTER_ROCM_SMI_LIBRARY=/nonexistent/librocm_smi64.so.1");
  EXPECT_EQ(rocm.exit_code, 2) << rocm.out << rocm.err;
  EXPECT_NE(rocm.err.find("rocm: cannot load the ROCm SMI library /nonexistent/librocm_smi64.so.1"), std::string::npos)
      << rocm.err;
  EXPECT_NE(rocm.err.find("GPUCLUSTER_ROCM_SMI_LIBRARY"), std::string::npos) << rocm.err;

  const Result sysfs = run("devices --backend sysfs --sysfs-root " + (dir_ / "no-such-sys").string());
  EXPECT_EQ(sysfs.exit_code, 2) << sysfs.out << sysfs.err;
  EXPECT_NE(sysfs.err.find("sysfs: the sysfs root " + (dir_ / "no-such-sys").string() + " is not a directory"),
            std::string::npos)
      << sysfs.err;
}

TEST_F(CliTest, ExplicitBackendWithZeroDevicesIsNotAnError) {
  const fs::path scenario = write("scenario.json", {{"devices", json::array()}});
  const Result r = run("devices --backend nvml", fake_nvml_environment(scenario));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(no devices)"), std::string::npos) << r.out;
  const Result status = run("status --duration 10ms --backend nvml", fake_nvml_environment(scenario));
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("nvml       no devices: NVML reports 0 GPUs"), std::string::npos) << status.out;
}

TEST_F(CliTest, AutoSkipsABackendThatCannotLoadQuietlyWithADebugLine) {
  const std::string missing = "GPUCLUSTER_NVML_LIBRARY=/nonexistent/libnvidia-ml.so.1";
  const Result quiet = run("devices --sysfs-root " + dir_.string(), missing);
  EXPECT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(quiet.err, "");
  const Result debug = run("devices --log-level debug --sysfs-root " + dir_.string(), missing);
  EXPECT_EQ(debug.exit_code, 0) << debug.err;
  EXPECT_NE(debug.err.find("backend nvml skipped: no devices: cannot load /nonexistent/libnvidia-ml.so.1"),
            std::string::npos)
      << debug.err;
}

// nvmlInit_v2 hangs (far longer than the test): status still answers within
// its discovery deadline, reports nvml failed and lists the host.
TEST_F(CliTest, StatusReportsABackendWhoseDiscoveryHangs) {
  const fs::path scenario =
      write("scenario.json", {{"devices", json::array({one_nvml_device()})}, {"hang_ms", {{"nvmlInit_v2", 60000}}}});
  const std::string options = " --duration 10ms --discovery-timeout 300ms --sysfs-root " + dir_.string();
  const Result r = run("status --json" + options, fake_nvml_environment(scenario));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json status = json::parse(r.out);
  bool nvml_reported = false;
  for (const json& backend : status["backends"]) {
    if (backend["backend"] == "nvml") {
      nvml_reported = true;
      EXPECT_EQ(backend["status"], "failed") << backend;
      EXPECT_EQ(backend["error"], "backend nvml did not finish discovery within 300ms") << backend;
      EXPECT_EQ(backend["devices"], 0) << backend;
    }
    if (backend["backend"] == "host") {
      EXPECT_EQ(backend["status"], "ok") << backend;
    }
  }
  EXPECT_TRUE(nvml_reported) << status["backends"];
  ASSERT_EQ(status["devices"].size(), 1U) << status["devices"];
  EXPECT_EQ(status["devices"][0]["backend"], "host");

  const Result table = run("status" + options, fake_nvml_environment(scenario));
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("nvml       error: backend nvml did not finish discovery within 300ms"), std::string::npos)
      << table.out;
}

TEST_F(CliTest, ExplicitBackendWhoseDiscoveryHangsExitsTwo) {
  const fs::path scenario =
      write("scenario.json", {{"devices", json::array({one_nvml_device()})}, {"hang_ms", {{"nvmlInit_v2", 60000}}}});
  const Result r = run("devices --backend nvml,host --discovery-timeout 300ms", fake_nvml_environment(scenario));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("nvml: backend nvml did not finish discovery within 300ms"), std::string::npos) << r.err;
}

// A sample read that hangs past --backend-timeout marks only that backend's
// devices unavailable, with the reason.
TEST_F(CliTest, StatusMarksTheDevicesOfAHangingReadUnavailable) {
  json device = one_nvml_device();
  device["hang_ms"] = {{"nvmlDeviceGetPowerUsage", 60000}};
  device["hang_after_calls"] = 14;  // discovery's calls answer at once; the first sample hangs
  const fs::path scenario = write("scenario.json", {{"devices", json::array({device})}});
  const Result r =
      run("status --json --duration 10ms --backend nvml,host --backend-timeout 300ms", fake_nvml_environment(scenario));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json status = json::parse(r.out);
  ASSERT_EQ(status["devices"].size(), 2U) << status["devices"];
  for (const json& d : status["devices"]) {
    if (d["backend"] == "nvml") {
      EXPECT_EQ(d["available"], false) << d;
      EXPECT_NE(d["error_message"].get<std::string>().find("backend nvml did not answer within 300ms"),
                std::string::npos)
          << d;
    } else {
      EXPECT_EQ(d["available"], true) << d;
    }
  }
}

TEST_F(CliTest, DeadlinesMustBePositiveDurations) {
  const Result help = run("status --help");
  EXPECT_NE(help.out.find("--discovery-timeout"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("(default 30s)"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("(default 5s)"), std::string::npos) << help.out;
  for (const std::string bad :
       {"--discovery-timeout 0s", "--discovery-timeout soon", "--backend-timeout 0ms", "--backend-timeout -1s"}) {
    const Result r = run("devices --backend host " + bad);
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_NE(r.err.find(bad.substr(0, bad.find(' '))), std::string::npos) << bad << ": " << r.err;
  }
}

// The agent starts although NVML's init hangs, and says so in /healthz,
// /v1/cluster and its log; the host's device is served.
TEST_F(CliTest, AgentStartsWhenADiscoveryHangsAndReportsTheBackend) {
  const fs::path scenario =
      write("scenario.json", {{"devices", json::array({one_nvml_device()})}, {"hang_ms", {{"nvmlInit_v2", 60000}}}});
  const std::string library = std::string(GPUCLUSTER_BUILD_DIR) + "/libfake_nvml.so";
  ::setenv("GPUCLUSTER_NVML_LIBRARY", library.c_str(), 1);  // inherited by the agent
  ::setenv("FAKE_NVML_SCENARIO", scenario.c_str(), 1);
  gpucluster::testing::AgentProcess agent(
      {"--discovery-timeout", "300ms", "--interval", "100ms", "--sysfs-root", dir_.string()});
  ::unsetenv("GPUCLUSTER_NVML_LIBRARY");
  ::unsetenv("FAKE_NVML_SCENARIO");
  auto client = agent.client();

  const auto health = client.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  const json body = json::parse(health->body);
  EXPECT_EQ(body["status"], "ok");
  const auto nvml_in = [](const json& backends) {
    for (const json& backend : backends) {
      if (backend["backend"] == "nvml") return backend;
    }
    return json();
  };
  const json nvml = nvml_in(body["backends"]);
  EXPECT_EQ(nvml["status"], "failed") << body;
  EXPECT_EQ(nvml["error"], "backend nvml did not finish discovery within 300ms") << body;

  const auto cluster = client.Get("/v1/cluster");
  ASSERT_TRUE(cluster);
  EXPECT_EQ(nvml_in(json::parse(cluster->body)["backends"]), nvml) << cluster->body;

  const auto devices = client.Get("/v1/devices");
  ASSERT_TRUE(devices);
  const json listed = json::parse(devices->body);
  ASSERT_TRUE(listed.is_array()) << "/v1/devices must stay a bare array";
  ASSERT_EQ(listed.size(), 1U) << listed;
  EXPECT_EQ(listed[0]["backend"], "host");

  EXPECT_NE(agent.stderr_text().find("backend nvml did not finish discovery within 300ms"), std::string::npos)
      << agent.stderr_text();
  const int status = agent.stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// agent --json prints its banner as JSON lines (docs audit row 27: --json had
// no effect on the agent).
TEST_F(CliTest, AgentJsonBannerIsJsonLines) {
  // timeout(1) sends SIGTERM after 3 s; the agent drains and exits 0 (timeout then exits 124).
  const Result r =
      run("agent --listen 127.0.0.1:0 --fleet " + example("fleet-home.json") + " --json", "timeout -s TERM 3");
  EXPECT_EQ(r.exit_code, 124) << r.err;
  std::istringstream lines(r.out);
  std::string first, second;
  std::getline(lines, first);
  std::getline(lines, second);
  const json listening = json::parse(first);
  EXPECT_EQ(listening["event"], "listening");
  EXPECT_EQ(listening["url"].get<std::string>().rfind("http://127.0.0.1:", 0), 0U) << first;
  const json ready = json::parse(second);
  EXPECT_EQ(ready["event"], "ready");
  ASSERT_EQ(ready["backends"].size(), 1U) << second;
  EXPECT_EQ(ready["backends"][0]["devices"], 3);
  EXPECT_TRUE(ready["discovery_seconds"].is_number());
}

// The agent listens before it discovers (docs audit row 24: it waited out a
// hung backend before it bound its port): /healthz says "starting" (503) while
// a backend takes its time, then "ok"; the address is there at once.
TEST_F(CliTest, AgentListensFirstAndSaysItIsStartingWhileDiscovering) {
  const fs::path scenario =
      write("scenario.json", {{"devices", json::array({one_nvml_device()})}, {"hang_ms", {{"nvmlInit_v2", 1500}}}});
  const std::string library = std::string(GPUCLUSTER_BUILD_DIR) + "/libfake_nvml.so";
  ::setenv("GPUCLUSTER_NVML_LIBRARY", library.c_str(), 1);  // inherited by the agent
  ::setenv("FAKE_NVML_SCENARIO", scenario.c_str(), 1);
  gpucluster::testing::AgentLaunch launch;
  launch.wait_until_ready = false;
  const auto launched = std::chrono::steady_clock::now();
  gpucluster::testing::AgentProcess agent({"--backend", "nvml", "--discovery-timeout", "20s"}, std::chrono::seconds{30},
                                          launch);
  ::unsetenv("GPUCLUSTER_NVML_LIBRARY");
  ::unsetenv("FAKE_NVML_SCENARIO");
  EXPECT_LT(std::chrono::steady_clock::now() - launched, std::chrono::milliseconds{1500})
      << "the address must come before discovery ends";
  auto client = agent.client();
  const auto starting = client.Get("/healthz");
  ASSERT_TRUE(starting);
  EXPECT_EQ(starting->status, 503);
  EXPECT_EQ(json::parse(starting->body)["status"], "starting") << starting->body;
  EXPECT_EQ(json::parse(starting->body)["state"], "discovering") << starting->body;
  EXPECT_EQ(json::parse(client.Get("/v1/devices")->body).size(), 0U);
  // Then ready: bounded wait for the discovery to end (1.5 s hang).
  int status = 0;
  for (int i = 0; i < 200 && status != 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
    status = client.Get("/healthz")->status;
  }
  EXPECT_EQ(status, 200);
  EXPECT_EQ(json::parse(client.Get("/v1/devices")->body).size(), 1U);
  const int stopped = agent.stop();
  EXPECT_TRUE(WIFEXITED(stopped) && WEXITSTATUS(stopped) == 0) << stopped;
}

// The cell under `column` in the row of `device` of the devices table: columns
// after NAME are right-aligned, so a cell ends where its header ends and is
// as wide as the header's field (src/cli/output.cpp: FAN 6, ENERGY 9).
std::string table_cell(const std::string& table, const std::string& device, const std::string& column,
                       std::size_t width) {
  std::istringstream lines(table);
  std::string header, line, row;
  std::getline(lines, header);
  while (std::getline(lines, line)) {
    if (line.rfind(device + " ", 0) == 0) row = line;
  }
  const std::size_t at = header.find("  " + column + "  ");
  if (at == std::string::npos || row.empty()) return "(no " + column + " column or no row " + device + ")";
  const std::size_t end = at + 2 + column.size();
  if (end < width || row.size() < end) return "(row too short: " + row + ")";
  std::string cell = row.substr(end - width, width);
  cell.erase(0, cell.find_first_not_of(' '));
  return cell;
}

// Fan speed and energy from a fleet file: their values in the table and in
// --json; a device without them shows "n/a" and null, never 0.
TEST_F(CliTest, DevicesShowFanSpeedAndEnergyAndNullWithoutThem) {
  const json with_them = {{"device_id", "cuda:0"},
                          {"name", "GPU"},
                          {"vendor", "nvidia"},
                          {"device_type", "cuda"},
                          {"memory_bytes", 1 << 30},
                          {"metrics",
                           {{"memory_used_bytes", 1 << 20},
                            {"compute_utilization_percent", 10.0},
                            {"fan_speed_percent", 37.4},
                            {"energy_joules", 123456.0}}}};
  json without_them = with_them;
  without_them["device_id"] = "cuda:1";
  without_them["metrics"].erase("fan_speed_percent");
  without_them["metrics"].erase("energy_joules");
  const fs::path fleet = write("fan.json", {{"host", "lab"}, {"devices", {with_them, without_them}}});

  const Result table = run("devices --fleet " + fleet.string());
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_EQ(table_cell(table.out, "lab/cuda:0", "FAN", 6), "37%") << table.out;
  EXPECT_EQ(table_cell(table.out, "lab/cuda:0", "ENERGY", 9), "123.5 kJ") << table.out;
  EXPECT_EQ(table_cell(table.out, "lab/cuda:1", "FAN", 6), "n/a") << table.out;
  EXPECT_EQ(table_cell(table.out, "lab/cuda:1", "ENERGY", 9), "n/a") << table.out;

  const Result r = run("devices --json --fleet " + fleet.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json devices = json::parse(r.out);
  ASSERT_EQ(devices.size(), 2U) << r.out;
  for (const json& d : devices) {
    const json& metrics = d["metrics"];
    ASSERT_TRUE(metrics.contains("fan_speed_percent")) << d.dump();
    ASSERT_TRUE(metrics.contains("energy_joules")) << d.dump();
    if (d["device_id"] == "cuda:0") {
      EXPECT_EQ(metrics["fan_speed_percent"].dump(), "37.4") << d.dump();
      EXPECT_EQ(metrics["energy_joules"].dump(), "123456.0") << d.dump();
    } else {
      EXPECT_EQ(d["device_id"], "cuda:1");
      EXPECT_TRUE(metrics["fan_speed_percent"].is_null()) << d.dump();
      EXPECT_TRUE(metrics["energy_joules"].is_null()) << d.dump();
    }
  }
}

}  // namespace
