#include "gpucluster/backends/rocm.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "gpucluster/backends/host.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/validation.hpp"
#include "gpucluster/node/manager.hpp"

namespace gpucluster {
namespace {

// The text contains part; on failure the message shows both.
::testing::AssertionResult HasSubstr(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

const std::string kFakeLibrary = std::string(GPUCLUSTER_BUILD_DIR) + "/libfake_rocm.so";
const std::string kFakeMinimalLibrary = std::string(GPUCLUSTER_BUILD_DIR) + "/libfake_rocm_minimal.so";
const std::string kFakeBrokenLibrary = std::string(GPUCLUSTER_BUILD_DIR) + "/libfake_rocm_broken.so";

// Keeps GPUCLUSTER_ROCM_SMI_LIBRARY unset (or set) for one test, restoring it afterwards.
class ScopedLibraryVariable {
 public:
  explicit ScopedLibraryVariable(const char* value) {
    if (const char* old = std::getenv(RocmBackend::kLibraryEnvironmentVariable)) saved_ = old;
    if (value == nullptr) {
      unsetenv(RocmBackend::kLibraryEnvironmentVariable);
    } else {
      setenv(RocmBackend::kLibraryEnvironmentVariable, value, 1);
    }
  }
  ~ScopedLibraryVariable() {
    if (saved_) {
      setenv(RocmBackend::kLibraryEnvironmentVariable, saved_->c_str(), 1);
    } else {
      unsetenv(RocmBackend::kLibraryEnvironmentVariable);
    }
  }
  ScopedLibraryVariable(const ScopedLibraryVariable&) = delete;
  ScopedLibraryVariable& operator=(const ScopedLibraryVariable&) = delete;

 private:
  std::optional<std::string> saved_;
};

bool debian_library_installed() {
  void* handle = dlopen(RocmBackend::kDefaultLibrary, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) return false;
  dlclose(handle);
  return true;
}

bool amd_gpu_driver_present() {
  return access("/dev/kfd", F_OK) == 0;
}

// ---- The real ROCm SMI library from Debian, on a machine without an AMD GPU ----

TEST(RocmBackendRealLibrary, FindsNoDevicesCleanlyWithoutAnAmdGpu) {
  if (!debian_library_installed())
    GTEST_SKIP() << "librocm_smi64.so.1 not found: install the Debian package librocm-smi64-1";
  if (amd_gpu_driver_present()) GTEST_SKIP() << "/dev/kfd exists: this machine has an AMD GPU driver";
  ScopedLibraryVariable unset(nullptr);
  RocmBackend backend;
  EXPECT_EQ(backend.library_path(), "librocm_smi64.so.1");
  EXPECT_EQ(backend.name(), "rocm");

  Discovery discovery;
  ASSERT_NO_THROW(discovery = backend.discover("node-a"));
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_TRUE(discovery.unavailable);
  EXPECT_TRUE(HasSubstr(discovery.note, "rsmi_init: RSMI_STATUS_INIT_ERROR"));
  EXPECT_TRUE(HasSubstr(discovery.note, "(library librocm_smi64.so.1)"));
  EXPECT_TRUE(HasSubstr(discovery.note, "no AMD GPU driver loaded: /dev/kfd is missing"));

  // A second discover retries and answers the same, without crashing the library.
  Discovery again;
  ASSERT_NO_THROW(again = backend.discover("node-a"));
  EXPECT_TRUE(again.devices.empty());
  EXPECT_EQ(again.note, discovery.note);

  EXPECT_THROW(backend.sample("rocm:0"), UnknownDeviceError);
  EXPECT_THROW(backend.available_fields("rocm:0"), UnknownDeviceError);
  EXPECT_NO_THROW(backend.shutdown());
  EXPECT_NO_THROW(backend.shutdown());
  EXPECT_THROW(backend.discover("node-a"), Error);
  EXPECT_THROW(backend.sample("rocm:0"), Error);
}

TEST(RocmBackendRealLibrary, ShutdownWithoutDiscoverAndDestructorAreSafe) {
  if (!debian_library_installed())
    GTEST_SKIP() << "librocm_smi64.so.1 not found: install the Debian package librocm-smi64-1";
  ScopedLibraryVariable unset(nullptr);
  { RocmBackend never_used; }
  {
    RocmBackend discovered_only;
    EXPECT_NO_THROW(discovered_only.discover("node-a"));
  }  // the destructor shuts down
  RocmBackend backend;
  EXPECT_NO_THROW(backend.shutdown());
  EXPECT_NO_THROW(backend.shutdown());
}

TEST(RocmBackendRealLibrary, ConcurrentDiscoverIsSafe) {
  if (!debian_library_installed())
    GTEST_SKIP() << "librocm_smi64.so.1 not found: install the Debian package librocm-smi64-1";
  if (amd_gpu_driver_present()) GTEST_SKIP() << "/dev/kfd exists: this machine has an AMD GPU driver";
  ScopedLibraryVariable unset(nullptr);
  RocmBackend backend;
  std::vector<std::thread> threads;
  std::vector<std::size_t> found(4, 99);
  for (std::size_t i = 0; i < found.size(); ++i) {
    threads.emplace_back([&, i] { found[i] = backend.discover("node-a").devices.size(); });
  }
  for (std::thread& thread : threads) thread.join();
  for (std::size_t count : found) EXPECT_EQ(count, 0u);
  EXPECT_NO_THROW(backend.shutdown());
}

// ---- Library path resolution and loading failures ----

TEST(RocmBackendLoading, MissingLibraryGivesNoDevicesAndNamesPathAndDlerror) {
  ScopedLibraryVariable set("/nonexistent/librocm_smi64.so.1");
  RocmBackend backend;
  EXPECT_EQ(backend.library_path(), "/nonexistent/librocm_smi64.so.1");
  Discovery discovery;
  ASSERT_NO_THROW(discovery = backend.discover("node-a"));
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_TRUE(discovery.unavailable);
  EXPECT_TRUE(HasSubstr(discovery.note, "cannot load the ROCm SMI library /nonexistent/librocm_smi64.so.1"));
  EXPECT_TRUE(HasSubstr(discovery.note, "cannot open shared object file"));  // dlerror's text
  EXPECT_TRUE(HasSubstr(discovery.note,
                        "the library was named by GPUCLUSTER_ROCM_SMI_LIBRARY; point it at ROCm's librocm_smi64"));
  EXPECT_NO_THROW(backend.shutdown());
  EXPECT_NO_THROW(backend.shutdown());
}

TEST(RocmBackendLoading, ConstructorArgumentWinsOverTheEnvironment) {
  ScopedLibraryVariable set("/nonexistent/from-environment.so");
  EXPECT_EQ(RocmBackend("/nonexistent/from-argument.so").library_path(), "/nonexistent/from-argument.so");
  EXPECT_EQ(RocmBackend().library_path(), "/nonexistent/from-environment.so");
  ScopedLibraryVariable empty("");
  EXPECT_EQ(RocmBackend().library_path(), "librocm_smi64.so.1");
}

TEST(RocmBackendLoading, LibraryWithoutTheRequiredFunctionsNamesEveryMissingOne) {
  RocmBackend backend("libm.so.6");
  Discovery discovery;
  ASSERT_NO_THROW(discovery = backend.discover("node-a"));
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_TRUE(discovery.unavailable);
  EXPECT_TRUE(HasSubstr(discovery.note,
                        "the ROCm SMI library libm.so.6 lacks the required functions rsmi_init, rsmi_shut_down, "
                        "rsmi_num_monitor_devices, rsmi_dev_memory_total_get, rsmi_dev_memory_usage_get, "
                        "rsmi_status_string; "));
  EXPECT_TRUE(HasSubstr(discovery.note, "the path was given by the caller"));
  EXPECT_NO_THROW(backend.shutdown());
}

TEST(RocmBackendLoading, LibraryLackingALaterRequiredFunctionNamesIt) {
  RocmBackend backend(kFakeBrokenLibrary);
  Discovery discovery;
  ASSERT_NO_THROW(discovery = backend.discover("node-a"));
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_TRUE(HasSubstr(discovery.note, "the ROCm SMI library " + kFakeBrokenLibrary +
                                            " lacks the required function rsmi_dev_memory_usage_get; "));
  EXPECT_NO_THROW(backend.shutdown());
}

// ---- A fake ROCm SMI library with devices ----

class RocmBackendFake : public ::testing::Test {
 protected:
  using SetFn = void (*)(const char*, std::int64_t);
  using GetFn = std::int64_t (*)(const char*);
  using ResetFn = void (*)();

  void SetUp() override {
    // The same path as the backend's, so the loader shares one instance of the fake.
    handle_ = dlopen(kFakeLibrary.c_str(), RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(handle_, nullptr) << dlerror();
    set_ = reinterpret_cast<SetFn>(dlsym(handle_, "fake_rocm_set"));
    get_ = reinterpret_cast<GetFn>(dlsym(handle_, "fake_rocm_get"));
    reset_ = reinterpret_cast<ResetFn>(dlsym(handle_, "fake_rocm_reset"));
    ASSERT_TRUE(set_ != nullptr && get_ != nullptr && reset_ != nullptr);
    reset_();
  }
  void TearDown() override {
    if (handle_ != nullptr) dlclose(handle_);
  }

  void set(const char* key, std::int64_t value) { set_(key, value); }
  void fake_rocm_reset_knobs() { reset_(); }
  std::int64_t get(const char* key) { return get_(key); }

  void* handle_ = nullptr;
  SetFn set_ = nullptr;
  GetFn get_ = nullptr;
  ResetFn reset_ = nullptr;
};

TEST_F(RocmBackendFake, DiscoversDevicesWithStaticInfoInOurUnits) {
  RocmBackend backend(kFakeLibrary);
  const Discovery discovery = backend.discover("node-a");
  EXPECT_EQ(discovery.note, "");
  ASSERT_EQ(discovery.devices.size(), 2u);
  const DeviceInfo& first = discovery.devices[0];
  EXPECT_EQ(first.key.host, "node-a");
  EXPECT_EQ(first.key.local_id, "rocm:0");
  EXPECT_EQ(first.name, "AMD Instinct MI210");
  EXPECT_EQ(first.vendor, "amd");
  EXPECT_EQ(first.kind, DeviceKind::rocm);
  EXPECT_EQ(first.backend, "rocm");
  EXPECT_EQ(first.uuid, "0x1234abcd5678ef90");
  EXPECT_EQ(first.pci_bus_id, "0001:c3:1f.7");
  EXPECT_EQ(first.memory_total_bytes, 8ull << 30);
  EXPECT_EQ(first.driver_version, "6.1.0-fake");
  ASSERT_TRUE(first.power_limit_watts.has_value());
  EXPECT_DOUBLE_EQ(*first.power_limit_watts, 300.0);
  ASSERT_TRUE(first.max_clock_mhz.has_value());
  EXPECT_DOUBLE_EQ(*first.max_clock_mhz, 2100.0);
  const DeviceInfo& second = discovery.devices[1];
  EXPECT_EQ(second.key.local_id, "rocm:1");
  EXPECT_EQ(second.pci_bus_id, "0001:c4:1f.7");
  EXPECT_EQ(second.uuid, "0x1234abcd5678ef91");
  EXPECT_EQ(second.memory_total_bytes, 9ull << 30);

  const FieldAvailability fields = backend.available_fields("rocm:0");
  EXPECT_TRUE(fields.has(Quantity::utilization_percent) && fields.has(Quantity::power_watts) &&
              fields.has(Quantity::temperature_celsius) && fields.has(Quantity::clock_mhz) &&
              fields.has(Quantity::fan_speed_percent) && fields.has(Quantity::energy_joules));
  EXPECT_EQ(get("init_calls"), 1);

  // Discover again: cached, ROCm SMI not initialised twice, host applied.
  const Discovery again = backend.discover("node-b");
  ASSERT_EQ(again.devices.size(), 2u);
  EXPECT_EQ(again.devices[1].key.host, "node-b");
  EXPECT_EQ(get("init_calls"), 1);

  backend.shutdown();
  backend.shutdown();
  EXPECT_EQ(get("shut_down_calls"), 1);
  EXPECT_EQ(get("refcount"), 0);
}

TEST_F(RocmBackendFake, SampleConvertsUnitsAtTheBoundary) {
  RocmBackend backend(kFakeLibrary);
  ASSERT_EQ(backend.discover("node-a").devices.size(), 2u);
  set("memory_used", 3ll << 30);
  const Timestamp before = now_timestamp();
  const Sample sample = backend.sample("rocm:1");
  EXPECT_GE(sample.timestamp, before);
  EXPECT_EQ(sample.memory_used_bytes, 3ll << 30);
  EXPECT_EQ(sample.memory_total_bytes, 9ll << 30);
  EXPECT_EQ(sample.utilization_percent, 37.0f);
  ASSERT_TRUE(sample.power_watts.has_value());
  EXPECT_NEAR(*sample.power_watts, 123.456789, 1e-4);  // µW → W
  ASSERT_TRUE(sample.temperature_celsius.has_value());
  EXPECT_NEAR(*sample.temperature_celsius, 45.5, 1e-6);  // m°C → °C, edge sensor
  ASSERT_TRUE(sample.clock_mhz.has_value());
  EXPECT_NEAR(*sample.clock_mhz, 1200.0, 1e-3);  // Hz → MHz, frequency[current]
  EXPECT_EQ(sample.fan_speed_percent, 40.0F);    // 102 of 255
  ASSERT_TRUE(sample.energy_joules.has_value());
  EXPECT_DOUBLE_EQ(*sample.energy_joules, 1e6 * static_cast<double>(15.259F) / 1e6);  // counter × µJ → J

  set("clock_current", 7);  // no current level: unknown for this reading only
  EXPECT_FALSE(backend.sample("rocm:0").clock_mhz.has_value());
  EXPECT_TRUE(backend.available_fields("rocm:0").has(Quantity::clock_mhz));
  set("clock_current", 2);
  EXPECT_NEAR(backend.sample("rocm:0").clock_mhz.value_or(0.0f), 2100.0, 1e-3);
  EXPECT_THROW(backend.sample("rocm:2"), UnknownDeviceError);
  EXPECT_THROW(backend.sample("cuda:0"), UnknownDeviceError);
}

TEST_F(RocmBackendFake, NotSupportedMakesAFieldUnavailableForGood) {
  set("rsmi_dev_power_ave_get_status", 2);  // RSMI_STATUS_NOT_SUPPORTED from the start
  set("rsmi_dev_power_cap_get_status", 2);
  set("rsmi_dev_temp_metric_get_edge_status", 2);  // edge unsupported: the junction sensor is used
  RocmBackend backend(kFakeLibrary);
  const Discovery discovery = backend.discover("node-a");
  ASSERT_EQ(discovery.devices.size(), 2u);
  EXPECT_FALSE(discovery.devices[0].power_limit_watts.has_value());
  FieldAvailability fields = backend.available_fields("rocm:0");
  EXPECT_FALSE(fields.has(Quantity::power_watts));
  EXPECT_TRUE(fields.has(Quantity::temperature_celsius));

  Sample sample = backend.sample("rocm:0");
  EXPECT_FALSE(sample.power_watts.has_value());
  EXPECT_NEAR(sample.temperature_celsius.value_or(0.0f), 61.0, 1e-6);

  // A field that turns NOT_SUPPORTED (or NOT_YET_IMPLEMENTED) mid-run is unavailable from then on.
  set("rsmi_dev_busy_percent_get_status", 9);
  sample = backend.sample("rocm:0");
  EXPECT_FALSE(sample.utilization_percent.has_value());
  EXPECT_FALSE(backend.available_fields("rocm:0").has(Quantity::utilization_percent));
  set("rsmi_dev_busy_percent_get_status", 0);
  EXPECT_FALSE(backend.sample("rocm:0").utilization_percent.has_value());              // not asked again
  EXPECT_TRUE(backend.available_fields("rocm:1").has(Quantity::utilization_percent));  // the other device is unaffected

  set("rsmi_dev_temp_metric_get_junction_status", 2);
  EXPECT_FALSE(backend.sample("rocm:0").temperature_celsius.has_value());
  EXPECT_FALSE(backend.available_fields("rocm:0").has(Quantity::temperature_celsius));
}

TEST_F(RocmBackendFake, AFanWithoutAMaximumOrNotSupportedAndAnUnsupportedEnergyCounterAreUnavailable) {
  set("rsmi_dev_fan_speed_get_status", 2);  // a passively cooled card
  set("rsmi_dev_energy_count_get_status", 2);
  {
    RocmBackend backend(kFakeLibrary);
    ASSERT_EQ(backend.discover("node-a").devices.size(), 2u);
    const FieldAvailability fields = backend.available_fields("rocm:0");
    EXPECT_FALSE(fields.has(Quantity::fan_speed_percent));
    EXPECT_FALSE(fields.has(Quantity::energy_joules));
    const Sample sample = backend.sample("rocm:0");
    EXPECT_FALSE(sample.fan_speed_percent.has_value());
    EXPECT_FALSE(sample.energy_joules.has_value());
  }
  set("rsmi_dev_fan_speed_get_status", 0);
  set("rsmi_dev_energy_count_get_status", 0);
  for (const auto& [knob, value] : {std::pair{"rsmi_dev_fan_speed_max_get_status", 2}, {"fan_speed_max", 0}}) {
    SCOPED_TRACE(knob);
    fake_rocm_reset_knobs();
    set(knob, value);
    RocmBackend backend(kFakeLibrary);
    ASSERT_EQ(backend.discover("node-a").devices.size(), 2u);
    EXPECT_FALSE(backend.available_fields("rocm:0").has(Quantity::fan_speed_percent));  // no maximum: no percent
    EXPECT_TRUE(backend.available_fields("rocm:0").has(Quantity::energy_joules));
    EXPECT_FALSE(backend.sample("rocm:0").fan_speed_percent.has_value());
  }
}

// One plausibility rule for every backend: an implausible reading is
// unavailable for that tick, never a sample that validation rejects whole.
TEST_F(RocmBackendFake, ImplausibleReadingsAreUnavailableAndTheSampleStands) {
  RocmBackend backend(kFakeLibrary);
  ASSERT_EQ(backend.discover("node-a").devices.size(), 2u);
  EXPECT_EQ(backend.implausible_readings(), ImplausibleCounts{});
  set("busy_percent", 250);
  set("power_uw", 200'000'000'000'000);  // 200 MW
  set("temp_edge_mc", 900'000);          // 900 °C
  set("fan_speed", 300);                 // of 255
  set("energy_count", 9'000'000'000'000'000'000);
  set("energy_resolution_nj", 1'000'000'000);  // 1 kJ a count: 9e18 kJ
  for (int tick = 0; tick < 2; ++tick) {
    const Sample sample = backend.sample("rocm:0");
    EXPECT_FALSE(sample.utilization_percent.has_value());
    EXPECT_FALSE(sample.power_watts.has_value());
    EXPECT_FALSE(sample.temperature_celsius.has_value());
    EXPECT_FALSE(sample.fan_speed_percent.has_value());
    EXPECT_FALSE(sample.energy_joules.has_value());
    EXPECT_NEAR(sample.clock_mhz.value_or(0.0F), 1200.0, 1e-3);  // the rest of the sample stands
    EXPECT_EQ(sample.memory_total_bytes, 8ll << 30);
    EXPECT_NO_THROW(validate_sample("node-a/rocm:0", sample));
  }
  // Every dropped reading is counted by quantity: two ticks each, the clock none.
  const ImplausibleCounts dropped = backend.implausible_readings();
  for (const Quantity quantity : kOptionalQuantities) {
    EXPECT_EQ(dropped[static_cast<std::size_t>(quantity)], quantity == Quantity::clock_mhz ? 0U : 2U)
        << field_name(quantity);
  }
  // Implausible is not unsupported: every field is still asked.
  const FieldAvailability fields = backend.available_fields("rocm:0");
  for (const Quantity quantity : kOptionalQuantities) EXPECT_TRUE(fields.has(quantity)) << field_name(quantity);
  set("busy_percent", 100);
  set("temp_edge_mc", -40'000);
  const Sample sample = backend.sample("rocm:0");
  EXPECT_EQ(sample.utilization_percent, 100.0F);  // the range is inclusive
  EXPECT_EQ(sample.temperature_celsius, -40.0F);  // cold, not broken
  EXPECT_EQ(backend.implausible_readings()[static_cast<std::size_t>(Quantity::utilization_percent)], 2U);
}

TEST_F(RocmBackendFake, OtherErrorsThrowWithTheStatusText) {
  RocmBackend backend(kFakeLibrary);
  ASSERT_EQ(backend.discover("node-a").devices.size(), 2u);
  set("rsmi_dev_power_ave_get_status", 16);  // RSMI_STATUS_BUSY
  try {
    backend.sample("rocm:1");
    FAIL() << "sample should throw";
  } catch (const Error& e) {
    EXPECT_TRUE(HasSubstr(std::string(e.what()),
                          "rocm rocm:1: rsmi_dev_power_ave_get: RSMI_STATUS_BUSY: A resource or "
                          "mutex could not be acquired"));
  }
  EXPECT_TRUE(backend.available_fields("rocm:1").has(Quantity::power_watts));  // still asked: the error may pass
  set("rsmi_dev_power_ave_get_status", 0);
  EXPECT_TRUE(backend.sample("rocm:1").power_watts.has_value());

  set("rsmi_dev_memory_usage_get_status", 2);  // memory is required: even NOT_SUPPORTED throws
  EXPECT_THROW(backend.sample("rocm:0"), Error);
}

TEST_F(RocmBackendFake, DeviceWhoseMemoryCannotBeReadIsSkippedWithANote) {
  set("rsmi_dev_memory_total_get_status", 3);  // RSMI_STATUS_FILE_ERROR for every device
  RocmBackend backend(kFakeLibrary);
  const Discovery discovery = backend.discover("node-a");
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_TRUE(HasSubstr(discovery.note, "rocm:0: rsmi_dev_memory_total_get: RSMI_STATUS_FILE_ERROR"));
  EXPECT_TRUE(HasSubstr(discovery.note, "rocm:1: rsmi_dev_memory_total_get"));
  backend.shutdown();
  EXPECT_EQ(get("shut_down_calls"), 1);  // initialised, so shut down even with no devices
}

TEST_F(RocmBackendFake, ZeroDevicesAndFailedInit) {
  set("devices", 0);
  {
    RocmBackend backend(kFakeLibrary);
    const Discovery discovery = backend.discover("node-a");
    EXPECT_TRUE(discovery.devices.empty());
    EXPECT_FALSE(discovery.unavailable) << "ROCm SMI works and has no GPUs: not an unusable source";
    EXPECT_EQ(discovery.note, "ROCm SMI initialised but reports no AMD GPUs");
  }  // the destructor shuts down
  EXPECT_EQ(get("shut_down_calls"), 1);

  set("rsmi_init_status", 8);
  RocmBackend backend(kFakeLibrary);
  const Discovery discovery = backend.discover("node-a");
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_TRUE(discovery.unavailable);
  EXPECT_TRUE(HasSubstr(discovery.note, "rsmi_init: RSMI_STATUS_INIT_ERROR: An error occurred during initialization"));
  EXPECT_TRUE(HasSubstr(discovery.note, "(library " + kFakeLibrary + ")"));
  backend.shutdown();
  EXPECT_EQ(get("shut_down_calls"), 1);  // a failed rsmi_init is not balanced by rsmi_shut_down
}

TEST_F(RocmBackendFake, FailedInitIsRetriedByTheNextDiscover) {
  set("rsmi_init_status", 8);
  RocmBackend backend(kFakeLibrary);
  EXPECT_TRUE(backend.discover("node-a").devices.empty());
  set("rsmi_init_status", 0);
  EXPECT_EQ(backend.discover("node-a").devices.size(), 2u);
  EXPECT_EQ(get("init_calls"), 2);
  backend.shutdown();
  EXPECT_EQ(get("shut_down_calls"), 1);
}

TEST(RocmBackendFakeMinimal, OptionalFunctionsAbsentMakeTheirFieldsUnavailable) {
  RocmBackend backend(kFakeMinimalLibrary);
  const Discovery discovery = backend.discover("node-a");
  ASSERT_EQ(discovery.devices.size(), 2u) << discovery.note;
  const DeviceInfo& info = discovery.devices[0];
  EXPECT_EQ(info.name, "AMD GPU 0");
  EXPECT_FALSE(info.uuid.has_value());
  EXPECT_FALSE(info.pci_bus_id.has_value());
  EXPECT_FALSE(info.driver_version.has_value());
  EXPECT_FALSE(info.power_limit_watts.has_value());
  EXPECT_FALSE(info.max_clock_mhz.has_value());
  const FieldAvailability fields = backend.available_fields("rocm:0");
  EXPECT_FALSE(fields.any());
  const Sample sample = backend.sample("rocm:0");
  EXPECT_EQ(sample.memory_used_bytes, 1ll << 30);
  EXPECT_EQ(sample.memory_total_bytes, 8ll << 30);
  EXPECT_FALSE(sample.utilization_percent || sample.power_watts || sample.temperature_celsius || sample.clock_mhz ||
               sample.fan_speed_percent || sample.energy_joules);
}

TEST_F(RocmBackendFake, ConcurrentSamplesAreSerialised) {
  RocmBackend backend(kFakeLibrary);
  ASSERT_EQ(backend.discover("node-a").devices.size(), 2u);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (std::size_t i = 0; i < ok.size(); ++i) {
    threads.emplace_back([&, i] {
      for (int n = 0; n < 200; ++n) ok[i] += backend.sample(i % 2 == 0 ? "rocm:0" : "rocm:1").power_watts ? 1 : 0;
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int count : ok) EXPECT_EQ(count, 200);
  backend.shutdown();
  EXPECT_EQ(get("shut_down_calls"), 1);
}

TEST_F(RocmBackendFake, AFailedDeviceCountMakesTheSourceUnavailable) {
  set("rsmi_num_monitor_devices_status", 3);  // RSMI_STATUS_FILE_ERROR
  RocmBackend backend(kFakeLibrary);
  const Discovery discovery = backend.discover("node-a");
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_TRUE(discovery.unavailable) << "a ROCm SMI that cannot count its GPUs is not \"0 GPUs\"";
  EXPECT_TRUE(HasSubstr(discovery.note, "rsmi_num_monitor_devices"));
  EXPECT_TRUE(backend.discover("node-a").unavailable);  // the next discover answers the same
  backend.shutdown();
}

// rsmi_init hanging past the discovery deadline: start() returns, ROCm is
// reported failed, the host goes on; the worker shuts ROCm down once it returns.
TEST_F(RocmBackendFake, ManagerGivesUpOnAnInitThatHangsAndKeepsTheHost) {
  set("rsmi_init_hang_ms", 1500);
  ManagerConfig config;
  config.host = "node-a";
  config.discovery_timeout = std::chrono::milliseconds{300};
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<RocmBackend>(kFakeLibrary));
  backends.push_back(std::make_unique<HostBackend>());
  Manager manager(config, std::move(backends));
  manager.start(false);
  const std::vector<BackendReport> reports = manager.backend_reports();
  ASSERT_EQ(reports.size(), 2U);
  EXPECT_EQ(reports[0].error, "backend rocm did not finish discovery within 300ms");
  EXPECT_EQ(reports[1].devices, 1U);
  EXPECT_EQ(manager.devices().size(), 1U);
  EXPECT_TRUE(manager.device(DeviceKey{"node-a", HostBackend::kLocalId}).latest.has_value());

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  while (get("shut_down_calls") < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
  EXPECT_EQ(get("shut_down_calls"), 1) << "the late backend was not shut down when rsmi_init returned";
  EXPECT_EQ(manager.devices().size(), 1U) << "a late discovery added its devices";
  manager.shutdown();
  EXPECT_EQ(get("shut_down_calls"), 1);
}

}  // namespace
}  // namespace gpucluster
