#include "gpucluster/backends/nvml.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "gpucluster/backends/host.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/node/manager.hpp"

namespace gpucluster {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kHost = "node1";

std::string fake_library(const std::string& name = "fake_nvml") {
  return fmt::format("{}/lib{}.so", GPUCLUSTER_BUILD_DIR, name);
}

// Sets an environment variable for the scope and restores what was there.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, const std::string& value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) old_ = old;
    ::setenv(name_.c_str(), value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// An H100-like device; index makes names, UUIDs and bus ids distinct.
json h100(int index) {
  return json{{"name", fmt::format("NVIDIA H100 80GB HBM3 #{}", index)},
              {"uuid", fmt::format("GPU-00000000-1111-2222-3333-{:012d}", index)},
              {"pci_bus_id", fmt::format("00000000:{:02X}:00.0", 0x18 + 0x10 * index)},
              {"memory_total", 85'520'809'984ULL},
              {"memory_used", 1'048'576ULL * static_cast<unsigned long long>(100 + index)},
              {"utilization_gpu", 10 + index},
              {"utilization_memory", 5},
              {"power_mw", 250'500 + 1000 * index},
              {"temperature", 40 + index},
              {"sm_clock", 1755},
              {"max_sm_clock", 1980},
              {"power_limit_mw", 700'000},
              {"temperature_slowdown", 90},
              {"temperature_shutdown", 95},
              {"compute_capability", {9, 0}},
              {"cores", 16896},
              {"fan_speed", 30 + index},
              {"energy_mj", 5'000'000'123ULL + static_cast<unsigned long long>(index)}};
}

json scenario_of(std::vector<json> devices) {
  return json{{"driver_version", "550.54.15"}, {"devices", std::move(devices)}};
}

class NvmlBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / fmt::format("gpucluster-nvml-{}-{}-{}", ::getpid(), test->name(), counter++);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    log_env_ = std::make_unique<ScopedEnv>("FAKE_NVML_CALL_LOG", (dir_ / "calls.json").string());
    library_env_ = std::make_unique<ScopedEnv>(NvmlBackend::kLibraryEnvironmentVariable, fake_library());
  }
  void TearDown() override {
    scenario_env_.reset();
    library_env_.reset();
    log_env_.reset();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  void write_scenario(const json& scenario) {
    const fs::path path = dir_ / "scenario.json";
    std::ofstream(path) << scenario.dump(2);
    scenario_env_.reset();  // restore the old value before saving it again
    scenario_env_ = std::make_unique<ScopedEnv>("FAKE_NVML_SCENARIO", path.string());
  }

  // Calls per NVML function so far, from the fake's log.
  json calls() const {
    std::ifstream in(dir_ / "calls.json");
    if (!in) return json::object();
    // A thread left behind may be rewriting the log right now: a torn read counts as no calls yet.
    json log = json::parse(in, nullptr, /*allow_exceptions=*/false);
    return log.is_object() ? log : json::object();
  }
  // Waits (bounded) until `function` has been called `times` times.
  bool eventually_called(const std::string& function, unsigned long long times) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
    while (std::chrono::steady_clock::now() < deadline) {
      if (calls_to(function) >= times) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
    return calls_to(function) >= times;
  }
  unsigned long long calls_to(const std::string& function) const {
    const json log = calls();
    return log.contains(function) ? log.at(function).get<unsigned long long>() : 0;
  }

  fs::path dir_;
  std::unique_ptr<ScopedEnv> log_env_;
  std::unique_ptr<ScopedEnv> library_env_;
  std::unique_ptr<ScopedEnv> scenario_env_;
};

TEST_F(NvmlBackendTest, MissingLibraryFindsNoDevicesWithAClearNote) {
  ScopedEnv library("GPUCLUSTER_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1");
  NvmlBackend backend;
  EXPECT_EQ(backend.library_path(), "/nonexistent/libnvidia-ml.so.1");
  Discovery discovery;
  ASSERT_NO_THROW(discovery = backend.discover(kHost));
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_TRUE(discovery.unavailable);
  EXPECT_NE(discovery.note.find("no devices"), std::string::npos) << discovery.note;
  EXPECT_NE(discovery.note.find("cannot load /nonexistent/libnvidia-ml.so.1"), std::string::npos) << discovery.note;
  EXPECT_NE(discovery.note.find("No such file"), std::string::npos) << discovery.note;  // dlerror's reason
  // Where the path came from, and how to point at another library.
  EXPECT_NE(discovery.note.find("the library was named by GPUCLUSTER_NVML_LIBRARY; point it at the NVIDIA driver's "
                                "libnvidia-ml.so.1"),
            std::string::npos)
      << discovery.note;
  EXPECT_THROW(backend.sample("cuda:0"), UnknownDeviceError);
  EXPECT_NO_THROW(backend.shutdown());
}

TEST_F(NvmlBackendTest, AnUnloadableLibrarySaysHowToPointAtAnother) {
  const Discovery given = NvmlBackend("/nonexistent/libnvml-given.so").discover(kHost);
  EXPECT_TRUE(given.unavailable);
  EXPECT_NE(given.note.find("cannot load /nonexistent/libnvml-given.so"), std::string::npos) << given.note;
  EXPECT_NE(given.note.find("the path was given by the caller"), std::string::npos) << given.note;

  ::unsetenv(NvmlBackend::kLibraryEnvironmentVariable);  // restored by the fixture
  if (void* real = dlopen(NvmlBackend::kDefaultLibrary, RTLD_NOW | RTLD_LOCAL)) {
    dlclose(real);
    GTEST_SKIP() << "this machine has libnvidia-ml.so.1";
  }
  const Discovery by_default = NvmlBackend().discover(kHost);
  EXPECT_TRUE(by_default.unavailable);
  EXPECT_NE(by_default.note.find("cannot load libnvidia-ml.so.1"), std::string::npos) << by_default.note;
  EXPECT_NE(by_default.note.find("set GPUCLUSTER_NVML_LIBRARY to the path of libnvidia-ml.so.1"), std::string::npos)
      << by_default.note;
}

TEST_F(NvmlBackendTest, DefaultLibraryNameWithoutTheEnvironmentVariable) {
  ::unsetenv(NvmlBackend::kLibraryEnvironmentVariable);  // restored by the fixture
  EXPECT_EQ(NvmlBackend().library_path(), "libnvidia-ml.so.1");
  EXPECT_EQ(NvmlBackend("/explicit/libnvml.so").library_path(), "/explicit/libnvml.so");
}

TEST_F(NvmlBackendTest, ExplicitPathWinsOverTheEnvironment) {
  write_scenario(scenario_of({h100(0)}));
  ScopedEnv library("GPUCLUSTER_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1");
  NvmlBackend backend(fake_library());
  EXPECT_EQ(backend.discover(kHost).devices.size(), 1U);
}

TEST_F(NvmlBackendTest, ZeroDevices) {
  write_scenario(scenario_of({}));
  NvmlBackend backend;
  const Discovery discovery = backend.discover(kHost);
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_FALSE(discovery.unavailable) << "NVML works and has no GPUs: not an unusable source";
  EXPECT_NE(discovery.note.find("0 GPUs"), std::string::npos) << discovery.note;
  backend.shutdown();
  EXPECT_EQ(calls_to("nvmlInit_v2"), 1U);
  EXPECT_EQ(calls_to("nvmlShutdown"), 1U);
}

TEST_F(NvmlBackendTest, EightDevicesWithNamesUuidsAndUnits) {
  std::vector<json> devices;
  for (int i = 0; i < 8; ++i) devices.push_back(h100(i));
  write_scenario(scenario_of(devices));
  NvmlBackend backend;
  const Discovery discovery = backend.discover(kHost);
  EXPECT_EQ(discovery.note, "");
  ASSERT_EQ(discovery.devices.size(), 8U);
  for (int i = 0; i < 8; ++i) {
    const DeviceInfo& info = discovery.devices[static_cast<std::size_t>(i)];
    SCOPED_TRACE(info.key.str());
    EXPECT_EQ(info.key, (DeviceKey{kHost, fmt::format("cuda:{}", i)}));
    EXPECT_EQ(info.name, fmt::format("NVIDIA H100 80GB HBM3 #{}", i));
    EXPECT_EQ(info.uuid, fmt::format("GPU-00000000-1111-2222-3333-{:012d}", i));
    EXPECT_EQ(info.pci_bus_id, fmt::format("0000:{:02x}:00.0", 0x18 + 0x10 * i));  // lower case, 4-digit domain
    EXPECT_EQ(info.kind, DeviceKind::cuda);
    EXPECT_EQ(info.vendor, "nvidia");
    EXPECT_EQ(info.backend, "nvml");
    EXPECT_EQ(info.memory_total_bytes, 85'520'809'984ULL);
    EXPECT_EQ(info.max_clock_mhz, 1980.0);
    EXPECT_EQ(info.power_limit_watts, 700.0);  // 700000 mW
    EXPECT_EQ(info.temperature_slowdown_celsius, 90.0);
    EXPECT_EQ(info.temperature_shutdown_celsius, 95.0);
    EXPECT_EQ(info.compute_capability, "9.0");
    EXPECT_EQ(info.compute_units, 132U);  // 16896 cores / 128 per SM on compute capability 9.0
    EXPECT_EQ(info.driver_version, "550.54.15");
    EXPECT_EQ(info.supports_tensor_cores, true);
    EXPECT_EQ(info.supports_fp64, true);

    const Sample sample = backend.sample(info.key.local_id);
    EXPECT_EQ(sample.memory_total_bytes, 85'520'809'984LL);
    EXPECT_EQ(sample.memory_used_bytes, 1'048'576LL * (100 + i));
    EXPECT_EQ(sample.utilization_percent, static_cast<float>(10 + i));
    EXPECT_FLOAT_EQ(sample.power_watts.value(), 250.5F + static_cast<float>(i));  // mW → W
    EXPECT_EQ(sample.temperature_celsius, static_cast<float>(40 + i));
    EXPECT_EQ(sample.clock_mhz, 1755.0F);
    EXPECT_EQ(sample.fan_speed_percent, static_cast<float>(30 + i));
    EXPECT_DOUBLE_EQ(sample.energy_joules.value(), (5'000'000'123.0 + i) / 1000.0);  // mJ → J
    EXPECT_GT(sample.timestamp.time_since_epoch().count(), 0);

    const FieldAvailability fields = backend.available_fields(info.key.local_id);
    EXPECT_TRUE(fields.has(Quantity::utilization_percent) && fields.has(Quantity::power_watts) &&
                fields.has(Quantity::temperature_celsius) && fields.has(Quantity::clock_mhz) &&
                fields.has(Quantity::fan_speed_percent) && fields.has(Quantity::energy_joules));
  }
  EXPECT_THROW(backend.sample("cuda:8"), UnknownDeviceError);
  EXPECT_THROW(backend.available_fields("cuda:8"), UnknownDeviceError);
}

TEST_F(NvmlBackendTest, StaticFieldsAreReadOnceAndGaugesEveryTick) {
  write_scenario(scenario_of({h100(0), h100(1)}));
  NvmlBackend backend;
  ASSERT_EQ(backend.discover(kHost).devices.size(), 2U);
  for (int tick = 0; tick < 5; ++tick) {
    backend.sample("cuda:0");
    backend.sample("cuda:1");
  }
  for (const char* once :
       {"nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetMaxClockInfo",
        "nvmlDeviceGetPowerManagementLimit", "nvmlDeviceGetCudaComputeCapability", "nvmlDeviceGetNumGpuCores"}) {
    EXPECT_EQ(calls_to(once), 2U) << once;  // one per device, in discover
  }
  EXPECT_EQ(calls_to("nvmlDeviceGetTemperatureThreshold"), 4U);  // slowdown + shutdown per device
  EXPECT_EQ(calls_to("nvmlSystemGetDriverVersion"), 1U);
  EXPECT_EQ(calls_to("nvmlDeviceGetHandleByIndex_v2"), 2U);
  EXPECT_EQ(calls_to("nvmlInit_v2"), 1U);
  EXPECT_EQ(calls_to("nvmlDeviceGetMemoryInfo"), 2U + 10U);  // discover + every sample
  EXPECT_EQ(calls_to("nvmlDeviceGetPowerUsage"), 2U + 10U);  // discover's probe + every sample
}

TEST_F(NvmlBackendTest, NotSupportedFieldsAreUnavailableNeverZeroAndNotAskedAgain) {
  json partial = h100(0);
  partial["return_codes"] = {{"nvmlDeviceGetPowerUsage", 3},
                             {"nvmlDeviceGetTemperature", 3},
                             {"nvmlDeviceGetPowerManagementLimit", 3},
                             {"nvmlDeviceGetTemperatureThreshold", 3}};
  partial.erase("utilization_gpu");  // absent in the scenario: NOT_SUPPORTED
  partial.erase("max_sm_clock");
  partial.erase("fan_speed");  // a passively cooled GPU has no fan to report
  partial.erase("energy_mj");
  write_scenario(scenario_of({partial, h100(1)}));
  NvmlBackend backend;
  const Discovery discovery = backend.discover(kHost);
  ASSERT_EQ(discovery.devices.size(), 2U);
  const DeviceInfo& info = discovery.devices[0];
  EXPECT_FALSE(info.power_limit_watts.has_value());
  EXPECT_FALSE(info.temperature_slowdown_celsius.has_value());
  EXPECT_FALSE(info.temperature_shutdown_celsius.has_value());
  EXPECT_FALSE(info.max_clock_mhz.has_value());
  EXPECT_TRUE(discovery.devices[1].power_limit_watts.has_value());

  const FieldAvailability fields = backend.available_fields("cuda:0");
  EXPECT_FALSE(fields.has(Quantity::utilization_percent));
  EXPECT_FALSE(fields.has(Quantity::power_watts));
  EXPECT_FALSE(fields.has(Quantity::temperature_celsius));
  EXPECT_FALSE(fields.has(Quantity::fan_speed_percent));
  EXPECT_FALSE(fields.has(Quantity::energy_joules));
  EXPECT_TRUE(fields.has(Quantity::clock_mhz));
  const FieldAvailability other = backend.available_fields("cuda:1");
  EXPECT_TRUE(other.has(Quantity::utilization_percent) && other.has(Quantity::power_watts) &&
              other.has(Quantity::temperature_celsius) && other.has(Quantity::clock_mhz));

  for (int tick = 0; tick < 4; ++tick) {
    const Sample sample = backend.sample("cuda:0");
    EXPECT_FALSE(sample.utilization_percent.has_value());
    EXPECT_FALSE(sample.power_watts.has_value());
    EXPECT_FALSE(sample.temperature_celsius.has_value());
    EXPECT_FALSE(sample.fan_speed_percent.has_value());
    EXPECT_FALSE(sample.energy_joules.has_value());
    EXPECT_EQ(sample.clock_mhz, 1755.0F);
    EXPECT_EQ(sample.memory_total_bytes, 85'520'809'984LL);
    const Sample healthy = backend.sample("cuda:1");
    EXPECT_TRUE(healthy.power_watts.has_value());
    EXPECT_TRUE(healthy.fan_speed_percent.has_value());
    EXPECT_TRUE(healthy.energy_joules.has_value());
  }
  // cuda:0 was asked once (discover's probe); cuda:1 at discover and on each of 4 ticks.
  EXPECT_EQ(calls_to("nvmlDeviceGetPowerUsage"), 1U + 5U);
  EXPECT_EQ(calls_to("nvmlDeviceGetUtilizationRates"), 1U + 5U);
  EXPECT_EQ(calls_to("nvmlDeviceGetTemperature"), 1U + 5U);
  EXPECT_EQ(calls_to("nvmlDeviceGetFanSpeed"), 1U + 5U);
  EXPECT_EQ(calls_to("nvmlDeviceGetTotalEnergyConsumption"), 1U + 5U);
}

TEST_F(NvmlBackendTest, FanSpeedBeyondItsRangeOrEnergyBeyondTheTablesIsUnavailableForThatTick) {
  json device = h100(0);
  device["fan_speed"] = 120;                           // nvml.h: "may exceed 100%"
  device["energy_mj"] = 2'000'000'000'000'000'000ULL;  // 2e15 J, beyond the table's 1e15 J
  write_scenario(scenario_of({device}));
  NvmlBackend backend;
  ASSERT_EQ(backend.discover(kHost).devices.size(), 1U);
  EXPECT_EQ(backend.implausible_readings(), ImplausibleCounts{});  // discovery's probes are not readings
  for (int tick = 0; tick < 2; ++tick) {
    const Sample sample = backend.sample("cuda:0");
    EXPECT_FALSE(sample.fan_speed_percent.has_value());
    EXPECT_FALSE(sample.energy_joules.has_value());
    EXPECT_EQ(sample.clock_mhz, 1755.0F);  // the rest of the sample stands
  }
  // Every dropped reading is counted, by quantity.
  ImplausibleCounts expected{};
  expected[static_cast<std::size_t>(Quantity::fan_speed_percent)] = 2;
  expected[static_cast<std::size_t>(Quantity::energy_joules)] = 2;
  EXPECT_EQ(backend.implausible_readings(), expected);
  // Implausible is not unsupported: the fields stay available and are asked every tick.
  const FieldAvailability fields = backend.available_fields("cuda:0");
  EXPECT_TRUE(fields.has(Quantity::fan_speed_percent));
  EXPECT_TRUE(fields.has(Quantity::energy_joules));
  EXPECT_EQ(calls_to("nvmlDeviceGetFanSpeed"), 1U + 2U);
}

TEST_F(NvmlBackendTest, NoPermissionMakesAFieldUnavailableLikeNotSupported) {
  json device = h100(0);
  device["return_codes"] = {{"nvmlDeviceGetPowerUsage", 4}};  // NVML_ERROR_NO_PERMISSION
  write_scenario(scenario_of({device}));
  NvmlBackend backend;
  ASSERT_EQ(backend.discover(kHost).devices.size(), 1U);
  EXPECT_FALSE(backend.available_fields("cuda:0").has(Quantity::power_watts));
  EXPECT_FALSE(backend.sample("cuda:0").power_watts.has_value());
  EXPECT_FALSE(backend.sample("cuda:0").power_watts.has_value());
  EXPECT_EQ(calls_to("nvmlDeviceGetPowerUsage"), 1U);
}

TEST_F(NvmlBackendTest, OtherErrorsThrowWithNvmlsTextAndAreRetried) {
  json device = h100(0);
  device["return_codes"] = {{"nvmlDeviceGetUtilizationRates", 10}};  // NVML_ERROR_TIMEOUT
  write_scenario(scenario_of({device}));
  NvmlBackend backend;
  ASSERT_EQ(backend.discover(kHost).devices.size(), 1U);
  EXPECT_TRUE(backend.available_fields("cuda:0").has(Quantity::utilization_percent));  // a timeout is not "unsupported"
  for (int tick = 0; tick < 3; ++tick) {
    try {
      backend.sample("cuda:0");
      FAIL() << "sample should throw";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("cuda:0"), std::string::npos) << message;
      EXPECT_NE(message.find("nvmlDeviceGetUtilizationRates"), std::string::npos) << message;
      EXPECT_NE(message.find("Timeout"), std::string::npos) << message;
    }
  }
  EXPECT_EQ(calls_to("nvmlDeviceGetUtilizationRates"), 1U + 3U);  // asked again every tick
}

TEST_F(NvmlBackendTest, MemoryIsRequiredForASample) {
  const json device = h100(0);
  {
    // Memory unreadable at discovery: the device is skipped and named in the note.
    json no_memory = h100(1);
    no_memory.erase("memory_total");
    write_scenario(scenario_of({device, no_memory}));
    NvmlBackend backend;
    const Discovery discovery = backend.discover(kHost);
    ASSERT_EQ(discovery.devices.size(), 1U);
    EXPECT_EQ(discovery.devices[0].key.local_id, "cuda:0");
    EXPECT_NE(discovery.note.find("cuda:1"), std::string::npos) << discovery.note;
    EXPECT_NE(discovery.note.find("nvmlDeviceGetMemoryInfo"), std::string::npos) << discovery.note;
    EXPECT_THROW(backend.sample("cuda:1"), UnknownDeviceError);
  }
  {
    // Memory failing after discovery: the sample throws.
    json failing = h100(0);
    failing["lost_after_calls"] = 16;  // every call of discover succeeds; then lost for good
    write_scenario(scenario_of({failing}));
    NvmlBackend backend;
    ASSERT_EQ(backend.discover(kHost).devices.size(), 1U);
    EXPECT_THROW(backend.sample("cuda:0"), Error);
  }
}

TEST_F(NvmlBackendTest, OneDevicesHandleFailingSkipsOnlyThatDevice) {
  json bad = h100(1);
  bad["return_codes"] = {{"nvmlDeviceGetHandleByIndex_v2", 4}};  // NO_PERMISSION
  write_scenario(scenario_of({h100(0), bad, h100(2)}));
  NvmlBackend backend;
  const Discovery discovery = backend.discover(kHost);
  ASSERT_EQ(discovery.devices.size(), 2U);
  EXPECT_EQ(discovery.devices[0].key.local_id, "cuda:0");
  EXPECT_EQ(discovery.devices[1].key.local_id, "cuda:2");  // ids stay the NVML index
  EXPECT_NE(discovery.note.find("skipped 1 of 3"), std::string::npos) << discovery.note;
  EXPECT_NE(discovery.note.find("Insufficient Permissions"), std::string::npos) << discovery.note;
}

TEST_F(NvmlBackendTest, OptionalSymbolsAbsentLeaveStaticFieldsUnknownAndSamplingWorks) {
  write_scenario(scenario_of({h100(0), h100(1)}));
  NvmlBackend backend(fake_library("fake_nvml_minimal"));
  const Discovery discovery = backend.discover(kHost);
  EXPECT_EQ(discovery.note, "");
  ASSERT_EQ(discovery.devices.size(), 2U);
  for (const DeviceInfo& info : discovery.devices) {
    SCOPED_TRACE(info.key.str());
    EXPECT_EQ(info.name, fmt::format("NVIDIA H100 80GB HBM3 #{}", info.key.local_id == "cuda:0" ? 0 : 1));
    EXPECT_TRUE(info.uuid.has_value());
    EXPECT_FALSE(info.pci_bus_id.has_value());
    EXPECT_FALSE(info.max_clock_mhz.has_value());
    EXPECT_FALSE(info.power_limit_watts.has_value());
    EXPECT_FALSE(info.temperature_slowdown_celsius.has_value());
    EXPECT_FALSE(info.temperature_shutdown_celsius.has_value());
    EXPECT_FALSE(info.compute_capability.has_value());
    EXPECT_FALSE(info.compute_units.has_value());
    EXPECT_FALSE(info.driver_version.has_value());
    EXPECT_FALSE(info.supports_tensor_cores.has_value());

    const Sample sample = backend.sample(info.key.local_id);
    EXPECT_EQ(sample.memory_total_bytes, 85'520'809'984LL);
    EXPECT_TRUE(sample.utilization_percent.has_value());
    EXPECT_TRUE(sample.power_watts.has_value());
    EXPECT_TRUE(sample.temperature_celsius.has_value());
    EXPECT_TRUE(sample.clock_mhz.has_value());
    // nvmlDeviceGetFanSpeed and nvmlDeviceGetTotalEnergyConsumption are optional symbols.
    EXPECT_FALSE(sample.fan_speed_percent.has_value());
    EXPECT_FALSE(sample.energy_joules.has_value());
    const FieldAvailability fields = backend.available_fields(info.key.local_id);
    EXPECT_FALSE(fields.has(Quantity::fan_speed_percent));
    EXPECT_FALSE(fields.has(Quantity::energy_joules));
  }
  backend.shutdown();
  EXPECT_EQ(calls_to("nvmlShutdown"), 1U);
}

TEST_F(NvmlBackendTest, TemperatureBeyondTheTablesRangeIsUnavailableAndCounted) {
  json device = h100(0);
  device["temperature"] = 4000;  // °C: a broken sensor, beyond the table's 250 °C
  write_scenario(scenario_of({device}));
  NvmlBackend backend;
  ASSERT_EQ(backend.discover(kHost).devices.size(), 1U);
  const Sample sample = backend.sample("cuda:0");
  EXPECT_FALSE(sample.temperature_celsius.has_value());
  EXPECT_TRUE(sample.power_watts.has_value());
  EXPECT_EQ(backend.implausible_readings()[static_cast<std::size_t>(Quantity::temperature_celsius)], 1U);
  EXPECT_EQ(backend.implausible_readings()[static_cast<std::size_t>(Quantity::power_watts)], 0U);
}

// A driver older than nvmlInit_v2, nvmlDeviceGetCount_v2 and
// nvmlDeviceGetHandleByIndex_v2 (and nvmlDeviceGetPciInfo_v3): their first versions are used.
TEST_F(NvmlBackendTest, FirstVersionsAreUsedWhenTheNewerAreAbsent) {
  write_scenario(scenario_of({h100(0), h100(1)}));
  NvmlBackend backend(fake_library("fake_nvml_legacy"));
  const Discovery discovery = backend.discover(kHost);
  EXPECT_EQ(discovery.note, "");
  ASSERT_EQ(discovery.devices.size(), 2U);
  EXPECT_EQ(discovery.devices[1].pci_bus_id, "0000:28:00.0");  // from nvmlDeviceGetPciInfo_v2
  EXPECT_EQ(backend.sample("cuda:1").temperature_celsius, 41.0F);
  EXPECT_EQ(calls_to("nvmlInit"), 1U);
  EXPECT_EQ(calls_to("nvmlDeviceGetCount"), 1U);
  EXPECT_EQ(calls_to("nvmlDeviceGetHandleByIndex"), 2U);
  EXPECT_EQ(calls_to("nvmlDeviceGetPciInfo_v2"), 2U);
  backend.shutdown();
  EXPECT_EQ(calls_to("nvmlShutdown"), 1U);
}

TEST_F(NvmlBackendTest, AFailedFirstVersionInitIsNamedInTheNote) {
  json scenario = scenario_of({h100(0)});
  scenario["return_codes"] = {{"nvmlInit", 9}};
  write_scenario(scenario);
  NvmlBackend backend(fake_library("fake_nvml_legacy"));
  const Discovery discovery = backend.discover(kHost);
  EXPECT_TRUE(discovery.unavailable);
  EXPECT_NE(discovery.note.find("nvmlInit of " + fake_library("fake_nvml_legacy") + " failed: Driver Not Loaded"),
            std::string::npos)
      << discovery.note;
}

TEST_F(NvmlBackendTest, RequiredSymbolAbsentFindsNoDevicesAndNamesTheSymbol) {
  write_scenario(scenario_of({h100(0)}));
  NvmlBackend backend(fake_library("fake_nvml_broken"));
  Discovery discovery;
  ASSERT_NO_THROW(discovery = backend.discover(kHost));
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_TRUE(discovery.unavailable);
  EXPECT_NE(discovery.note.find("no devices"), std::string::npos) << discovery.note;
  EXPECT_NE(discovery.note.find("nvmlDeviceGetClockInfo"), std::string::npos) << discovery.note;
  EXPECT_NE(discovery.note.find("libfake_nvml_broken.so"), std::string::npos) << discovery.note;
  backend.shutdown();
  EXPECT_EQ(calls_to("nvmlInit_v2"), 0U);  // never initialised, so never shut down
  EXPECT_EQ(calls_to("nvmlShutdown"), 0U);
}

TEST_F(NvmlBackendTest, InitFailureFindsNoDevicesAndSaysWhy) {
  json scenario = scenario_of({h100(0)});
  scenario["return_codes"] = {{"nvmlInit_v2", 9}};  // NVML_ERROR_DRIVER_NOT_LOADED
  write_scenario(scenario);
  NvmlBackend backend;
  const Discovery discovery = backend.discover(kHost);
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_TRUE(discovery.unavailable);
  EXPECT_NE(discovery.note.find("nvmlInit_v2 of " + fake_library() + " failed"), std::string::npos) << discovery.note;
  EXPECT_NE(discovery.note.find("Driver Not Loaded"), std::string::npos) << discovery.note;
  backend.shutdown();
  EXPECT_EQ(calls_to("nvmlShutdown"), 0U);  // nvmlInit_v2 failed: nothing to shut down
}

TEST_F(NvmlBackendTest, CountFailureAfterInitThrows) {
  json scenario = scenario_of({h100(0)});
  scenario["return_codes"] = {{"nvmlDeviceGetCount_v2", 999}};
  write_scenario(scenario);
  NvmlBackend backend;
  EXPECT_THROW(backend.discover(kHost), Error);
  backend.shutdown();
  EXPECT_EQ(calls_to("nvmlShutdown"), 1U);
}

TEST_F(NvmlBackendTest, GpuLostMidRunThrowsThenRecovers) {
  json flaky = h100(0);
  // discover makes 16 calls on the device and each sample 7: two samples succeed, then
  // three calls answer GPU_IS_LOST (each failing sample stops at its first call).
  flaky["lost_after_calls"] = 16 + 2 * 7;
  flaky["recover_after_calls"] = 3;
  write_scenario(scenario_of({flaky, h100(1)}));
  NvmlBackend backend;
  ASSERT_EQ(backend.discover(kHost).devices.size(), 2U);

  std::vector<std::string> outcomes;
  for (int tick = 0; tick < 8; ++tick) {
    try {
      const Sample sample = backend.sample("cuda:0");
      EXPECT_EQ(sample.memory_total_bytes, 85'520'809'984LL);
      outcomes.emplace_back("ok");
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("cuda:0"), std::string::npos) << message;
      EXPECT_NE(message.find("GPU-00000000-1111-2222-3333-000000000000"), std::string::npos) << message;
      EXPECT_NE(message.find("GPU is lost"), std::string::npos) << message;
      outcomes.emplace_back("lost");
    }
    EXPECT_NO_THROW(backend.sample("cuda:1"));  // the other GPU is unaffected
  }
  EXPECT_EQ(outcomes, (std::vector<std::string>{"ok", "ok", "lost", "lost", "lost", "ok", "ok", "ok"}));
  // Losing the GPU did not turn its fields off.
  const FieldAvailability fields = backend.available_fields("cuda:0");
  EXPECT_TRUE(fields.has(Quantity::utilization_percent) && fields.has(Quantity::power_watts) &&
              fields.has(Quantity::temperature_celsius) && fields.has(Quantity::clock_mhz));
}

TEST_F(NvmlBackendTest, ShutdownCallsNvmlShutdownExactlyOnce) {
  write_scenario(scenario_of({h100(0)}));
  {
    NvmlBackend backend;
    ASSERT_EQ(backend.discover(kHost).devices.size(), 1U);
    backend.sample("cuda:0");
    backend.shutdown();
    backend.shutdown();
    EXPECT_THROW(backend.sample("cuda:0"), Error);
    EXPECT_THROW(backend.discover(kHost), Error);
  }
  EXPECT_EQ(calls_to("nvmlInit_v2"), 1U);
  EXPECT_EQ(calls_to("nvmlShutdown"), 1U);
}

TEST_F(NvmlBackendTest, DestructorShutsDownWhenShutdownWasNotCalled) {
  write_scenario(scenario_of({h100(0)}));
  {
    NvmlBackend backend;
    ASSERT_EQ(backend.discover(kHost).devices.size(), 1U);
  }
  EXPECT_EQ(calls_to("nvmlInit_v2"), 1U);
  EXPECT_EQ(calls_to("nvmlShutdown"), 1U);
}

TEST_F(NvmlBackendTest, DiscoverTwiceInitialisesOnce) {
  write_scenario(scenario_of({h100(0), h100(1)}));
  NvmlBackend backend;
  EXPECT_EQ(backend.discover(kHost).devices.size(), 2U);
  EXPECT_EQ(backend.discover(kHost).devices.size(), 2U);
  EXPECT_NO_THROW(backend.sample("cuda:1"));
  backend.shutdown();
  EXPECT_EQ(calls_to("nvmlInit_v2"), 1U);
  EXPECT_EQ(calls_to("nvmlShutdown"), 1U);
}

TEST_F(NvmlBackendTest, ConcurrentSamplesAreSafe) {
  std::vector<json> devices;
  for (int i = 0; i < 8; ++i) devices.push_back(h100(i));
  write_scenario(scenario_of(devices));
  ScopedEnv no_log("FAKE_NVML_CALL_LOG", "");  // rewriting the log after every call would dominate
  NvmlBackend backend;
  ASSERT_EQ(backend.discover(kHost).devices.size(), 8U);
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 40; ++i) {
        const std::string id = fmt::format("cuda:{}", (t + i) % 8);
        if (backend.sample(id).memory_total_bytes > 0 && backend.available_fields(id).has(Quantity::power_watts))
          ++good;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(good.load(), 160);
}

TEST_F(NvmlBackendTest, ManagerKeepsSamplingTheHostWhenTheNvmlDeviceIsLost) {
  json lost = h100(0);
  lost["lost_after_calls"] = 16;  // lost right after discovery, for good
  write_scenario(scenario_of({lost, h100(1)}));

  ManagerConfig config;
  config.host = kHost;
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<NvmlBackend>());
  backends.push_back(std::make_unique<HostBackend>());
  Manager manager(config, std::move(backends));
  manager.start(false);
  manager.sample_now();
  manager.sample_now();

  const DeviceState nvml_lost = manager.device(DeviceKey{kHost, "cuda:0"});
  EXPECT_FALSE(nvml_lost.available);
  EXPECT_NE(nvml_lost.unavailable_reason.find("GPU is lost"), std::string::npos) << nvml_lost.unavailable_reason;
  EXPECT_FALSE(nvml_lost.latest.has_value());

  const DeviceState nvml_healthy = manager.device(DeviceKey{kHost, "cuda:1"});
  EXPECT_TRUE(nvml_healthy.available);
  ASSERT_TRUE(nvml_healthy.latest.has_value());
  EXPECT_FLOAT_EQ(nvml_healthy.latest->power_watts.value(), 251.5F);

  const DeviceState host = manager.device(DeviceKey{kHost, HostBackend::kLocalId});
  EXPECT_TRUE(host.available);
  EXPECT_TRUE(host.latest.has_value());
  EXPECT_GE(manager.history(DeviceKey{kHost, HostBackend::kLocalId}).size(), 1U);
  EXPECT_GE(manager.backend_errors(), 3U);  // start's first pass + two more

  manager.shutdown();
  EXPECT_EQ(calls_to("nvmlShutdown"), 1U);
}

TEST_F(NvmlBackendTest, ManagerReportsAMissingLibraryAndKeepsTheHost) {
  ScopedEnv library("GPUCLUSTER_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1");
  ManagerConfig config;
  config.host = kHost;
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<NvmlBackend>());
  backends.push_back(std::make_unique<HostBackend>());
  Manager manager(config, std::move(backends));
  ASSERT_NO_THROW(manager.start(false));
  bool reported = false;
  for (const BackendReport& report : manager.backend_reports()) {
    if (report.backend != "nvml") continue;
    reported = true;
    EXPECT_EQ(report.devices, 0U);
    EXPECT_NE(report.note.find("cannot load /nonexistent/libnvidia-ml.so.1"), std::string::npos) << report.note;
    EXPECT_EQ(report.error, "");
    EXPECT_TRUE(report.unavailable);
  }
  EXPECT_TRUE(reported);
  EXPECT_TRUE(manager.device(DeviceKey{kHost, HostBackend::kLocalId}).latest.has_value());
  manager.shutdown();
}

// A call that hangs past the manager's deadline turns the NVML devices
// unavailable with the reason, never stalls the host backend, and they recover
// once the call returns.
TEST_F(NvmlBackendTest, HangingCallMakesDevicesUnavailableUntilItReturns) {
  json slow = h100(0);
  slow["hang_ms"] = {{"nvmlDeviceGetPowerUsage", 1500}};
  write_scenario(scenario_of({slow, h100(1)}));
  ManagerConfig config;
  config.host = kHost;
  config.backend_timeout = std::chrono::milliseconds{300};
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<NvmlBackend>());
  backends.push_back(std::make_unique<HostBackend>());
  Manager manager(config, std::move(backends));
  manager.start(false);  // its first pass hangs in cuda:0's power reading

  const DeviceState late = manager.device(DeviceKey{kHost, "cuda:1"});
  EXPECT_FALSE(late.available);
  EXPECT_NE(late.unavailable_reason.find("backend nvml did not answer within 300ms"), std::string::npos)
      << late.unavailable_reason;
  const DeviceState host = manager.device(DeviceKey{kHost, HostBackend::kLocalId});
  EXPECT_TRUE(host.available);
  EXPECT_TRUE(host.latest.has_value()) << "the host backend was stalled by the hanging NVML call";

  // The late pass still completes and its samples bring the devices back.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  while (std::chrono::steady_clock::now() < deadline && !manager.device(DeviceKey{kHost, "cuda:1"}).available) {
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  EXPECT_TRUE(manager.device(DeviceKey{kHost, "cuda:0"}).available);
  EXPECT_TRUE(manager.device(DeviceKey{kHost, "cuda:1"}).available);
  EXPECT_TRUE(manager.device(DeviceKey{kHost, "cuda:1"}).latest.has_value());
  manager.shutdown();
  EXPECT_EQ(calls_to("nvmlShutdown"), 1U);
}

// An explicitly required NVML that cannot be loaded fails start() with the
// path tried and how to point at another library, and leaves nothing running.
TEST_F(NvmlBackendTest, ManagerRequiringAMissingLibraryThrows) {
  ScopedEnv library("GPUCLUSTER_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1");
  ManagerConfig config;
  config.host = kHost;
  config.required_backends = {"nvml"};
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<NvmlBackend>());
  backends.push_back(std::make_unique<HostBackend>());
  Manager manager(config, std::move(backends));
  try {
    manager.start(false);
    FAIL() << "start() accepted a required NVML that cannot be loaded";
  } catch (const BackendUnavailableError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("nvml: cannot load /nonexistent/libnvidia-ml.so.1"), std::string::npos) << message;
    EXPECT_NE(message.find("GPUCLUSTER_NVML_LIBRARY"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
  }
  EXPECT_EQ(manager.state(), ManagerState::stopped);
}

// nvmlInit_v2 hanging past the discovery deadline: start() returns, NVML is
// reported failed, the host is discovered and sampled; when the call finally
// returns the worker shuts NVML down and its GPUs never appear.
TEST_F(NvmlBackendTest, ManagerGivesUpOnAnInitThatHangsAndKeepsTheHost) {
  json scenario = scenario_of({h100(0)});
  scenario["hang_ms"] = {{"nvmlInit_v2", 1500}};
  write_scenario(scenario);
  ManagerConfig config;
  config.host = kHost;
  config.discovery_timeout = std::chrono::milliseconds{300};
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<NvmlBackend>());
  backends.push_back(std::make_unique<HostBackend>());
  Manager manager(config, std::move(backends));
  manager.start(false);

  const std::vector<BackendReport> reports = manager.backend_reports();
  ASSERT_EQ(reports.size(), 2U);
  EXPECT_EQ(reports[0].backend, "nvml");
  EXPECT_EQ(reports[0].error, "backend nvml did not finish discovery within 300ms");
  EXPECT_EQ(reports[0].devices, 0U);
  EXPECT_EQ(reports[1].devices, 1U);
  EXPECT_EQ(manager.devices().size(), 1U);
  EXPECT_TRUE(manager.device(DeviceKey{kHost, HostBackend::kLocalId}).latest.has_value());
  EXPECT_EQ(calls_to("nvmlInit_v2"), 1U);

  EXPECT_TRUE(eventually_called("nvmlShutdown", 1)) << "the late backend was not shut down when init returned";
  manager.sample_now();
  EXPECT_EQ(manager.devices().size(), 1U) << "a late discovery added its devices";
  EXPECT_EQ(calls_to("nvmlDeviceGetMemoryInfo"), 1U) << "the late backend was sampled";  // discover's read only
  manager.shutdown();
  EXPECT_EQ(calls_to("nvmlShutdown"), 1U);
}

// The same for a later discovery call (counting the GPUs) that hangs.
TEST_F(NvmlBackendTest, ManagerGivesUpOnADeviceCountThatHangs) {
  json scenario = scenario_of({h100(0)});
  scenario["hang_ms"] = {{"nvmlDeviceGetCount_v2", 1500}};
  write_scenario(scenario);
  ManagerConfig config;
  config.host = kHost;
  config.discovery_timeout = std::chrono::milliseconds{300};
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<NvmlBackend>());
  backends.push_back(std::make_unique<HostBackend>());
  Manager manager(config, std::move(backends));
  manager.start(false);
  EXPECT_EQ(manager.backend_reports()[0].error, "backend nvml did not finish discovery within 300ms");
  EXPECT_EQ(manager.devices().size(), 1U);
  EXPECT_TRUE(eventually_called("nvmlShutdown", 1));
}

// nvmlShutdown hanging: the manager's shutdown is bounded by backend_timeout
// (the call runs on the backend's worker thread, which is left behind).
TEST_F(NvmlBackendTest, ManagerShutdownDoesNotWaitForAHangingNvmlShutdown) {
  json scenario = scenario_of({h100(0)});
  scenario["hang_ms"] = {{"nvmlShutdown", 60000}};
  write_scenario(scenario);
  ManagerConfig config;
  config.host = kHost;
  config.backend_timeout = std::chrono::milliseconds{300};
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<NvmlBackend>());
  backends.push_back(std::make_unique<HostBackend>());
  Manager manager(config, std::move(backends));
  manager.start(false);
  ASSERT_EQ(manager.devices().size(), 2U);
  auto stopping = std::async(std::launch::async, [&] { manager.shutdown(); });
  EXPECT_EQ(stopping.wait_for(std::chrono::seconds{10}), std::future_status::ready)
      << "shutdown() waited for nvmlShutdown";
  stopping.wait();
  EXPECT_EQ(manager.state(), ManagerState::stopped);
  EXPECT_EQ(calls_to("nvmlShutdown"), 1U);
}

}  // namespace
}  // namespace gpucluster
