#include "gpucluster/node/manager.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <latch>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "gpucluster/model/errors.hpp"
#include "support/fake_backend.hpp"

namespace gpucluster {
namespace {

using namespace std::chrono_literals;

constexpr std::int64_t kTotalBytes = 80'000'000'000;

using testing::FakeBackend;

// Steers a test backend (make_backend) and counts its calls; outlives the
// backend so its destruction is observable.
struct Probe : FakeBackend::Counters {
  std::atomic<bool> discover_fails{false};
  std::atomic<bool> shutdown_fails{false};
  std::atomic<bool> bad_samples{false};  // utilization 150 %

  // Blocking sample(): entered is set, then it waits for release.
  std::atomic<bool> block{false};
  std::atomic<bool> entered{false};
  std::atomic<bool> finished{false};
  std::atomic<bool> sampling{false};
  std::atomic<bool> shutdown_while_sampling{false};
  std::latch release{1};

  void set_sample_error(std::string error) {
    std::lock_guard lock(mutex);
    sample_error = std::move(error);
  }
  std::string get_sample_error() {
    std::lock_guard lock(mutex);
    return sample_error;
  }

 private:
  std::mutex mutex;
  std::string sample_error;  // non-empty: sample() throws it
};

// A backend with one device per id whose discover(), sample() and shutdown()
// fail, block or read badly as the probe says.
BackendPtr make_backend(const std::string& name, std::vector<std::string> ids, std::shared_ptr<Probe> probe) {
  FakeBackend::Config config;
  config.name = name;
  for (const std::string& id : ids) {
    DeviceInfo info = testing::fake_device(id, static_cast<std::uint64_t>(kTotalBytes));
    info.name = "Test GPU " + id;
    info.kind = DeviceKind::cuda;
    info.compute_units = 100;
    config.devices.push_back(std::move(info));
  }
  if (ids.empty()) config.note = "no devices";
  config.sample = testing::fake_sample(kTotalBytes / 4, kTotalBytes);
  config.sample.utilization_percent = 20.0f;
  config.sample.temperature_celsius = 50.0f;
  config.fields = FieldAvailability{Quantity::utilization_percent, Quantity::temperature_celsius};
  config.on_discover = [probe, name](const std::string& /*host*/, Discovery fixed) {
    if (probe->discover_fails.load()) throw Error(name + ": driver not loaded");
    return fixed;
  };
  config.on_sample = [probe](const std::string& /*local_id*/, Sample fixed) {
    probe->sampling.store(true);
    if (probe->block.load()) {
      probe->entered.store(true);
      probe->entered.notify_all();
      probe->release.wait();
      probe->finished.store(true);
    }
    const std::string error = probe->get_sample_error();
    if (!error.empty()) {
      probe->sampling.store(false);
      throw Error(error);
    }
    if (probe->bad_samples.load()) fixed.utilization_percent = 150.0f;
    probe->sampling.store(false);
    return fixed;
  };
  config.on_shutdown = [probe, name] {
    if (probe->sampling.load()) probe->shutdown_while_sampling.store(true);
    if (probe->shutdown_fails.load()) throw Error(name + ": shutdown failed");
  };
  return std::make_unique<FakeBackend>(std::move(config), std::move(probe));
}

std::vector<BackendPtr> backends_of(BackendPtr a, BackendPtr b = nullptr, BackendPtr c = nullptr) {
  std::vector<BackendPtr> out;
  out.push_back(std::move(a));
  if (b) out.push_back(std::move(b));
  if (c) out.push_back(std::move(c));
  return out;
}

// A settable clock for the manager (seconds since the epoch).
struct FakeClock {
  std::shared_ptr<std::atomic<std::int64_t>> ns = std::make_shared<std::atomic<std::int64_t>>(0);
  void set(std::int64_t seconds) { ns->store(seconds * 1'000'000'000); }
  std::function<Timestamp()> fn() const {
    return [ns = ns] { return Timestamp{std::chrono::nanoseconds{ns->load()}}; };
  }
};

ManagerConfig config_for(const std::string& host) {
  ManagerConfig config;
  config.host = host;
  config.sample_interval = 0ns;
  return config;
}

DeviceInfo make_info(const std::string& host, const std::string& id, std::optional<std::uint32_t> units = 100) {
  DeviceInfo info;
  info.key = DeviceKey{host, id};
  info.name = "GPU " + id;
  info.kind = DeviceKind::cuda;
  info.memory_total_bytes = 1000;
  info.compute_units = units;
  return info;
}

Sample make_sample(std::int64_t seconds, std::int64_t used = 100, float util = 10.0f) {
  Sample s;
  s.timestamp = Timestamp{std::chrono::seconds{seconds}};
  s.memory_used_bytes = used;
  s.memory_total_bytes = 1000;
  s.utilization_percent = util;
  s.temperature_celsius = 50.0f;
  return s;
}

// Waits (bounded) until pred() holds; returns whether it did.
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// --- construction (fix #2: fully succeeds or throws) ---

TEST(ManagerConstruction, ValidConfigConstructsInCreatedState) {
  Manager manager(config_for("node-1"));
  EXPECT_EQ(manager.state(), ManagerState::created);
  EXPECT_EQ(manager.host(), "node-1");
  EXPECT_TRUE(manager.devices().empty());
}

TEST(ManagerConstruction, EmptyHostMeansThisMachine) {
  ManagerConfig config;
  Manager manager(config);
  EXPECT_EQ(manager.host(), local_host_name());
  EXPECT_FALSE(manager.host().empty());
}

TEST(ManagerConstruction, InvalidHistoryLimitsThrow) {
  ManagerConfig zero = config_for("h");
  zero.history.max_samples = 0;
  EXPECT_THROW(Manager{zero}, InputError);
  ManagerConfig age = config_for("h");
  age.history.max_age = 0ns;
  EXPECT_THROW(Manager{age}, InputError);
}

TEST(ManagerConstruction, InvalidScoringThrows) {
  const auto expect_rejected = [](const std::function<void(ScoringConfig&)>& edit, const char* what) {
    ManagerConfig config = config_for("h");
    edit(config.scoring);
    EXPECT_THROW(Manager{config}, InputError) << what;
  };
  expect_rejected([](ScoringConfig& s) { s.memory_weight = std::nan(""); }, "memory_weight NaN");
  expect_rejected([](ScoringConfig& s) { s.compute_weight = std::numeric_limits<double>::infinity(); },
                  "compute_weight inf");
  expect_rejected([](ScoringConfig& s) { s.memory_weight = -0.1; }, "negative weight");
  expect_rejected(
      [](ScoringConfig& s) {
        s.memory_weight = 0;
        s.compute_weight = 0;
      },
      "all-zero weights");
  expect_rejected([](ScoringConfig& s) { s.thermal_span_celsius = 0; }, "zero span");
  expect_rejected([](ScoringConfig& s) { s.min_thermal_penalty = 1.5; }, "penalty > 1");
  expect_rejected([](ScoringConfig& s) { s.staleness = 0ns; }, "zero staleness");
}

TEST(ManagerConstruction, NegativeIntervalAndNullBackendThrow) {
  ManagerConfig interval = config_for("h");
  interval.sample_interval = -1ms;
  EXPECT_THROW(Manager{interval}, InputError);

  std::vector<BackendPtr> with_null;
  with_null.push_back(nullptr);
  EXPECT_THROW(Manager(config_for("h"), std::move(with_null)), InputError);
}

// Fix #2 and the design's "NaN passes validation": a NaN limit would silently
// disable the range check it configures, so construction must refuse it.
TEST(ManagerConstruction, InvalidValidationLimitsThrow) {
  ManagerConfig nan_max = config_for("h");
  nan_max.validation.max_temperature_celsius = std::nan("");
  EXPECT_THROW(Manager{nan_max}, InputError);
  ManagerConfig nan_power = config_for("h");
  nan_power.validation.max_power_watts = std::nan("");
  EXPECT_THROW(Manager{nan_power}, InputError);
  ManagerConfig inverted = config_for("h");
  inverted.validation.min_temperature_celsius = 100.0;
  inverted.validation.max_temperature_celsius = 50.0;
  EXPECT_THROW(Manager{inverted}, InputError);
}

// A host every device key would be rejected for must fail construction, not
// every later registration and discovery.
TEST(ManagerConstruction, InvalidHostThrows) {
  EXPECT_THROW(Manager{config_for("bad/host")}, InputError);
  EXPECT_THROW(Manager{config_for(std::string("bad\nhost"))}, InputError);
}

// --- lifecycle (fixes #5, #6) ---

TEST(ManagerLifecycle, StatesGoCreatedRunningStopped) {
  auto probe = std::make_shared<Probe>();
  Manager manager(config_for("h"), backends_of(make_backend("test", {"cuda:0"}, probe)));
  EXPECT_EQ(manager.state(), ManagerState::created);
  manager.start(false);
  EXPECT_EQ(manager.state(), ManagerState::running);
  EXPECT_EQ(probe->discover_calls.load(), 1);
  EXPECT_EQ(probe->sample_calls.load(), 1);  // start takes a first sample
  manager.shutdown();
  EXPECT_EQ(manager.state(), ManagerState::stopped);
  EXPECT_STREQ(to_string(ManagerState::created), "created");
  EXPECT_STREQ(to_string(ManagerState::running), "running");
  EXPECT_STREQ(to_string(ManagerState::draining), "draining");
  EXPECT_STREQ(to_string(ManagerState::stopped), "stopped");
}

TEST(ManagerLifecycle, StartTwiceDiscoversOnce) {
  auto probe = std::make_shared<Probe>();
  Manager manager(config_for("h"), backends_of(make_backend("test", {"cuda:0", "cuda:1"}, probe)));
  manager.start(false);
  manager.start(false);
  EXPECT_EQ(probe->discover_calls.load(), 1);
  EXPECT_EQ(manager.devices().size(), 2u);
  ASSERT_EQ(manager.backend_reports().size(), 1u);
}

TEST(ManagerLifecycle, StartDiscoversAndTakesAFirstSample) {
  auto probe = std::make_shared<Probe>();
  Manager manager(config_for("node-3"), backends_of(make_backend("test", {"cuda:0", "cuda:1"}, probe)));
  manager.start(false);
  const std::vector<DeviceState> devices = manager.devices();
  ASSERT_EQ(devices.size(), 2u);
  for (const DeviceState& d : devices) {
    EXPECT_EQ(d.info->key.host, "node-3");
    EXPECT_EQ(d.info->backend, "test");
    EXPECT_TRUE(d.available);
    ASSERT_TRUE(d.latest.has_value());
    EXPECT_EQ(d.latest->memory_total_bytes, kTotalBytes);
  }
  const std::vector<BackendReport> reports = manager.backend_reports();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].backend, "test");
  EXPECT_EQ(reports[0].devices, 2u);
  EXPECT_TRUE(reports[0].error.empty());
}

// A backend whose every sample drops one implausible temperature reading (900 °C)
// by the backends' one rule, and reports its count.
BackendPtr dropping_backend() {
  auto dropped = std::make_shared<ImplausibleReadings>();
  FakeBackend::Config config;
  config.name = "dropping";
  config.devices = {testing::fake_device("cuda:0", static_cast<std::uint64_t>(kTotalBytes))};
  config.sample = testing::fake_sample(kTotalBytes / 4, kTotalBytes);
  config.fields = FieldAvailability{Quantity::temperature_celsius};
  config.on_sample = [dropped](const std::string&, Sample sample) {
    if (plausible_or_count(Quantity::temperature_celsius, 900.0, *dropped)) sample.temperature_celsius = 900.0F;
    return sample;
  };
  config.on_implausible_readings = [dropped] { return dropped->snapshot(); };
  return std::make_unique<FakeBackend>(std::move(config));
}

TEST(ManagerLifecycle, BackendReportsCarryTheBackendsLiveImplausibleCounts) {
  auto probe = std::make_shared<Probe>();
  std::vector<BackendPtr> backends;
  backends.push_back(dropping_backend());
  backends.push_back(make_backend("test", {"cuda:1"}, probe));
  Manager manager(config_for("h"), std::move(backends));
  manager.start(false);  // one first sample
  manager.sample_now();
  const std::vector<BackendReport> reports = manager.backend_reports();
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].backend, "dropping");
  EXPECT_EQ(reports[0].implausible_readings[static_cast<std::size_t>(Quantity::temperature_celsius)], 2u);
  EXPECT_EQ(reports[1].implausible_readings, ImplausibleCounts{});  // a backend without the rule: zeros
  // Live, not a copy taken at start: one more pass, one more drop.
  manager.sample_now();
  EXPECT_EQ(manager.backend_reports()[0].implausible_readings[static_cast<std::size_t>(Quantity::temperature_celsius)],
            3u);
  // The sample itself was recorded, without the temperature.
  const DeviceState state = manager.device(DeviceKey{"h", "cuda:0"});
  ASSERT_TRUE(state.latest.has_value());
  EXPECT_FALSE(state.latest->temperature_celsius.has_value());
}

TEST(ManagerLifecycle, EveryPublicCallAfterShutdownThrowsShutDownError) {
  auto probe = std::make_shared<Probe>();
  Manager manager(config_for("h"), backends_of(make_backend("test", {"cuda:0"}, probe)));
  manager.start(false);
  const DeviceKey key{"h", "cuda:0"};
  manager.register_device(make_info("h", "extra"));
  manager.shutdown();

  EXPECT_THROW(manager.record(key, make_sample(1)), ShutDownError);
  EXPECT_THROW(manager.register_device(make_info("h", "new")), ShutDownError);
  EXPECT_THROW(manager.unregister_device(key), ShutDownError);
  EXPECT_THROW(manager.set_availability(key, false, "x"), ShutDownError);
  EXPECT_THROW(manager.devices(), ShutDownError);
  EXPECT_THROW(manager.device(key), ShutDownError);
  EXPECT_THROW(manager.history(key), ShutDownError);
  EXPECT_THROW(manager.window_stats(key), ShutDownError);
  EXPECT_THROW(manager.aggregate(), ShutDownError);
  EXPECT_THROW(manager.rank(), ShutDownError);
  EXPECT_THROW(manager.select(), ShutDownError);
  EXPECT_THROW(manager.plan(PlanRequest{Strategy::uniform, 10, {}, std::nullopt, std::nullopt, std::nullopt}),
               ShutDownError);
  EXPECT_THROW(manager.sample_now(), ShutDownError);
  EXPECT_THROW(manager.start(), ShutDownError);
  EXPECT_THROW(manager.start(false), ShutDownError);
  EXPECT_THROW(manager.backend_reports(), ShutDownError);
  EXPECT_EQ(manager.state(), ManagerState::stopped);
  EXPECT_EQ(probe->sample_calls.load(), 1);  // sample_now did not reach the backend

  try {
    manager.devices();
    FAIL();
  } catch (const ShutDownError& e) {
    EXPECT_TRUE(contains(e.what(), "shut down")) << e.what();
  }
  // A ShutDownError is an Error: callers may catch the library's base class.
  EXPECT_THROW(manager.aggregate(), Error);
}

TEST(ManagerLifecycle, ShutdownBeforeStartStillRefusesCalls) {
  Manager manager(config_for("h"));
  manager.shutdown();
  EXPECT_EQ(manager.state(), ManagerState::stopped);
  EXPECT_THROW(manager.start(), ShutDownError);
  EXPECT_THROW(manager.register_device(make_info("h", "cuda:0")), ShutDownError);
}

TEST(ManagerLifecycle, ShutdownIsIdempotent) {
  auto probe = std::make_shared<Probe>();
  {
    Manager manager(config_for("h"), backends_of(make_backend("test", {"cuda:0"}, probe)));
    manager.start(false);
    manager.shutdown();
    EXPECT_NO_THROW(manager.shutdown());
    EXPECT_NO_THROW(manager.shutdown());
    EXPECT_EQ(manager.state(), ManagerState::stopped);
    EXPECT_EQ(probe->shutdown_calls.load(), 1);
  }
  // The destructor does not shut the backend down a second time.
  EXPECT_EQ(probe->shutdown_calls.load(), 1);
  EXPECT_EQ(probe->destroyed.load(), 1);
}

TEST(ManagerLifecycle, DestructorShutsBackendsDownOnce) {
  auto started = std::make_shared<Probe>();
  auto never_started = std::make_shared<Probe>();
  {
    Manager manager(config_for("h"), backends_of(make_backend("test", {"cuda:0"}, started)));
    manager.start(false);
  }
  { Manager manager(config_for("h"), backends_of(make_backend("test", {"cuda:0"}, never_started))); }
  EXPECT_EQ(started->shutdown_calls.load(), 1);
  EXPECT_EQ(started->destroyed.load(), 1);
  EXPECT_EQ(never_started->shutdown_calls.load(), 1);
  EXPECT_EQ(never_started->discover_calls.load(), 0);
  EXPECT_EQ(never_started->destroyed.load(), 1);
}

TEST(ManagerLifecycle, ShutdownReachesEveryBackendEvenWhenOneThrows) {
  auto first = std::make_shared<Probe>();
  auto failing = std::make_shared<Probe>();
  auto last = std::make_shared<Probe>();
  failing->shutdown_fails = true;
  Manager manager(config_for("h"),
                  backends_of(make_backend("first", {"a:0"}, first), make_backend("failing", {"b:0"}, failing),
                              make_backend("last", {"c:0"}, last)));
  manager.start(false);
  EXPECT_NO_THROW(manager.shutdown());
  EXPECT_EQ(first->shutdown_calls.load(), 1);
  EXPECT_EQ(failing->shutdown_calls.load(), 1);
  EXPECT_EQ(last->shutdown_calls.load(), 1);
  EXPECT_EQ(manager.state(), ManagerState::stopped);
  EXPECT_NO_THROW(manager.shutdown());
  EXPECT_EQ(failing->shutdown_calls.load(), 1);
}

TEST(ManagerLifecycle, ShutdownFreesAllTelemetry) {
  Manager manager(config_for("h"));
  manager.register_device(make_info("h", "cuda:0"));
  manager.register_device(make_info("h", "cuda:1"));
  for (int i = 0; i < 50; ++i) manager.record(DeviceKey{"h", "cuda:0"}, make_sample(i));
  std::vector<std::weak_ptr<const DeviceInfo>> infos;
  for (const DeviceState& s : manager.devices()) infos.emplace_back(s.info);
  ASSERT_EQ(infos.size(), 2u);
  for (const auto& info : infos) EXPECT_FALSE(info.expired());

  manager.shutdown();
  for (const auto& info : infos) EXPECT_TRUE(info.expired()) << "device state still held after shutdown";
  EXPECT_THROW(manager.devices(), ShutDownError);
  EXPECT_THROW(manager.history(DeviceKey{"h", "cuda:0"}), ShutDownError);
}

// Fix #6 drops the backend (`self._backend = None`) at shutdown: the manager must
// not keep backend objects alive until it is destroyed.
TEST(ManagerLifecycle, ShutdownReleasesBackends) {
  auto probe = std::make_shared<Probe>();
  Manager manager(config_for("h"), backends_of(make_backend("test", {"cuda:0"}, probe)));
  manager.start(false);
  manager.shutdown();
  EXPECT_EQ(probe->shutdown_calls.load(), 1);
  EXPECT_EQ(probe->destroyed.load(), 1) << "backend still alive after shutdown";
}

// Fix #5: shutdown counts in-flight operations and waits for them (no grace sleep).
TEST(ManagerLifecycle, ShutdownWaitsForAnInFlightSample) {
  auto probe = std::make_shared<Probe>();
  Manager manager(config_for("h"), backends_of(make_backend("test", {"cuda:0"}, probe)));
  manager.start(false);
  const int samples_before = probe->sample_calls.load();
  probe->block = true;

  std::atomic<bool> sample_threw{false};
  std::thread sampler([&] {
    try {
      manager.sample_now();
    } catch (...) {
      sample_threw = true;
    }
  });
  probe->entered.wait(false);  // the backend is inside sample(), blocked on the latch

  std::atomic<bool> shutdown_returned{false};
  std::atomic<bool> finished_when_shutdown_returned{false};
  std::atomic<int> backend_shutdowns_when_returned{-1};
  const auto shut_down = [&] {
    manager.shutdown();
    finished_when_shutdown_returned = probe->finished.load();
    backend_shutdowns_when_returned = probe->shutdown_calls.load();
    shutdown_returned = true;
  };
  std::thread closer(shut_down);
  std::thread second_closer(shut_down);  // a concurrent shutdown must wait too

  ASSERT_TRUE(wait_until([&] { return manager.state() == ManagerState::draining; }));
  // Draining: new calls are refused while the in-flight one finishes.
  EXPECT_THROW(manager.devices(), ShutDownError);
  EXPECT_THROW(manager.record(DeviceKey{"h", "cuda:0"}, make_sample(1)), ShutDownError);
  EXPECT_THROW(manager.sample_now(), ShutDownError);
  // Give a wrong implementation a bounded chance to return early.
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(shutdown_returned.load());
  EXPECT_EQ(probe->shutdown_calls.load(), 0) << "backend shut down while its sample() was running";
  EXPECT_EQ(manager.state(), ManagerState::draining);

  probe->release.count_down();
  sampler.join();
  closer.join();
  second_closer.join();
  EXPECT_FALSE(sample_threw.load()) << "an operation admitted before shutdown must complete normally";
  EXPECT_TRUE(shutdown_returned.load());
  EXPECT_TRUE(finished_when_shutdown_returned.load());
  EXPECT_EQ(backend_shutdowns_when_returned.load(), 1);
  EXPECT_FALSE(probe->shutdown_while_sampling.load());
  EXPECT_EQ(probe->shutdown_calls.load(), 1);
  EXPECT_EQ(probe->sample_calls.load(), samples_before + 1);
  EXPECT_EQ(manager.state(), ManagerState::stopped);
}

// --- background sampling ---

TEST(ManagerSampling, BackgroundSamplerRunsAtTheInterval) {
  auto probe = std::make_shared<Probe>();
  ManagerConfig config = config_for("h");
  config.sample_interval = 5ms;
  Manager manager(config, backends_of(make_backend("test", {"cuda:0"}, probe)));
  manager.start();
  EXPECT_TRUE(wait_until([&] { return probe->sample_calls.load() >= 4; }, 30s))
      << "sampler made " << probe->sample_calls.load() << " calls";
  EXPECT_GE(manager.history(DeviceKey{"h", "cuda:0"}).size(), 3u);
  manager.shutdown();
  const int after_shutdown = probe->sample_calls.load();
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(probe->sample_calls.load(), after_shutdown) << "sampler still running after shutdown";
}

TEST(ManagerSampling, BackgroundSamplerIsNotFasterThanTheInterval) {
  auto probe = std::make_shared<Probe>();
  ManagerConfig config = config_for("h");
  config.sample_interval = 40ms;
  Manager manager(config, backends_of(make_backend("test", {"cuda:0"}, probe)));
  const auto begin = std::chrono::steady_clock::now();
  manager.start();
  std::this_thread::sleep_for(200ms);
  const int calls = probe->sample_calls.load();
  const auto elapsed = std::chrono::steady_clock::now() - begin;
  manager.shutdown();
  // One pass at start, then at most one per full interval.
  const auto intervals = elapsed / config.sample_interval;
  EXPECT_LE(calls, static_cast<int>(intervals) + 1) << "elapsed " << elapsed.count() << " ns";
  EXPECT_GE(calls, 1);
}

TEST(ManagerSampling, NoBackgroundSamplingWhenDisabledOrIntervalZero) {
  auto disabled = std::make_shared<Probe>();
  auto zero = std::make_shared<Probe>();
  ManagerConfig config = config_for("h");
  config.sample_interval = 1ms;
  Manager manager(config, backends_of(make_backend("test", {"cuda:0"}, disabled)));
  manager.start(false);
  ManagerConfig zero_config = config_for("h");
  zero_config.sample_interval = 0ns;
  Manager zero_manager(zero_config, backends_of(make_backend("test", {"cuda:0"}, zero)));
  zero_manager.start(true);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(disabled->sample_calls.load(), 1);
  EXPECT_EQ(zero->sample_calls.load(), 1);
  manager.sample_now();
  EXPECT_EQ(disabled->sample_calls.load(), 2);
  EXPECT_EQ(manager.history(DeviceKey{"h", "cuda:0"}).size(), 2u);
}

TEST(ManagerSampling, FailingSampleMarksTheDeviceUnavailableAndRecovers) {
  auto probe = std::make_shared<Probe>();
  Manager manager(config_for("h"), backends_of(make_backend("test", {"cuda:0"}, probe)));
  manager.start(false);
  const DeviceKey key{"h", "cuda:0"};
  ASSERT_TRUE(manager.device(key).available);
  EXPECT_EQ(manager.backend_errors(), 0u);

  probe->set_sample_error("NVML_ERROR_GPU_IS_LOST");
  EXPECT_NO_THROW(manager.sample_now());
  DeviceState state = manager.device(key);
  EXPECT_FALSE(state.available);
  EXPECT_TRUE(contains(state.unavailable_reason, "NVML_ERROR_GPU_IS_LOST")) << state.unavailable_reason;
  EXPECT_EQ(manager.backend_errors(), 1u);
  EXPECT_EQ(manager.history(key).size(), 1u);
  EXPECT_FALSE(manager.select().device.has_value());

  probe->set_sample_error("");
  manager.sample_now();
  state = manager.device(key);
  EXPECT_TRUE(state.available);
  EXPECT_TRUE(state.unavailable_reason.empty());
  EXPECT_EQ(manager.history(key).size(), 2u);
  EXPECT_EQ(manager.backend_errors(), 1u);
  ASSERT_TRUE(manager.select().device.has_value());
  EXPECT_EQ(*manager.select().device, key);
}

// A backend with one device whose sample() is a caller-supplied function.
BackendPtr function_backend(std::function<Sample()> sample) {
  FakeBackend::Config config;
  config.name = "function";
  config.devices.push_back(make_info("", "cuda:0"));
  config.on_sample = [sample = std::move(sample)](const std::string& /*local_id*/, Sample /*fixed*/) {
    return sample();
  };
  return std::make_unique<FakeBackend>(std::move(config));
}

// An error whose message is read more than once; on the second read the device
// is unregistered, as another thread may do at any moment during a sampling pass.
class DeviceLostError : public std::exception {
 public:
  explicit DeviceLostError(std::function<void()> on_second_read) : on_second_read_(std::move(on_second_read)) {}
  const char* what() const noexcept override {
    if (++reads_ == 2) {
      try {
        on_second_read_();
      } catch (...) {
      }
    }
    return "device lost";
  }

 private:
  std::function<void()> on_second_read_;
  mutable int reads_ = 0;
};

// sample_now is what the background sampler runs: a device unregistered while
// the pass handles its failed read must not make it throw (in the sampler thread
// that exception would terminate the process).
TEST(ManagerSampling, DeviceUnregisteredDuringAFailedReadDoesNotEscapeSampleNow) {
  Manager* manager_ptr = nullptr;
  std::atomic<bool> fail{false};
  const DeviceKey key{"h", "cuda:0"};
  std::vector<BackendPtr> backends;
  backends.push_back(function_backend([&]() -> Sample {
    if (fail.load()) {
      // Unregistered while its read fails: marking it unavailable must not escape.
      manager_ptr->unregister_device(key);
      throw DeviceLostError([] {});
    }
    return make_sample(1);
  }));
  Manager manager(config_for("h"), std::move(backends));
  manager_ptr = &manager;
  manager.start(false);
  ASSERT_EQ(manager.devices().size(), 1u);

  fail = true;
  EXPECT_NO_THROW(manager.sample_now());
  EXPECT_TRUE(manager.devices().empty());
  EXPECT_NO_THROW(manager.sample_now());  // the device is gone: nothing to do
}

// A device unregistered by a caller after discovery is not a rejected sample.
TEST(ManagerSampling, DeviceUnregisteredAfterDiscoveryIsSkipped) {
  auto probe = std::make_shared<Probe>();
  Manager manager(config_for("h"), backends_of(make_backend("test", {"cuda:0", "cuda:1"}, probe)));
  manager.start(false);
  ASSERT_TRUE(manager.unregister_device(DeviceKey{"h", "cuda:0"}));
  EXPECT_NO_THROW(manager.sample_now());
  EXPECT_EQ(manager.devices().size(), 1u);
  EXPECT_EQ(manager.history(DeviceKey{"h", "cuda:1"}).size(), 2u);
  EXPECT_THROW(manager.history(DeviceKey{"h", "cuda:0"}), UnknownDeviceError);
  // Not the backend's fault: not counted as a rejected sample.
  EXPECT_EQ(manager.rejected_samples()[static_cast<std::size_t>(RejectReason::unknown_device)], 0u);
}

TEST(ManagerSampling, FailingDiscoveryIsReportedAndOtherBackendsWork) {
  auto broken = std::make_shared<Probe>();
  auto good = std::make_shared<Probe>();
  broken->discover_fails = true;
  Manager manager(config_for("h"), backends_of(make_backend("broken", {"x:0"}, broken),
                                               make_backend("good", {"cuda:0", "cuda:1"}, good)));
  EXPECT_NO_THROW(manager.start(false));
  EXPECT_EQ(manager.state(), ManagerState::running);
  const std::vector<BackendReport> reports = manager.backend_reports();
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].backend, "broken");
  EXPECT_EQ(reports[0].devices, 0u);
  EXPECT_TRUE(contains(reports[0].error, "driver not loaded")) << reports[0].error;
  EXPECT_EQ(reports[1].backend, "good");
  EXPECT_EQ(reports[1].devices, 2u);
  EXPECT_TRUE(reports[1].error.empty());

  const std::vector<DeviceState> devices = manager.devices();
  ASSERT_EQ(devices.size(), 2u);
  for (const DeviceState& d : devices) EXPECT_TRUE(d.latest.has_value());
  EXPECT_EQ(broken->sample_calls.load(), 0);
  EXPECT_TRUE(manager.select().device.has_value());
  manager.shutdown();
  EXPECT_EQ(broken->shutdown_calls.load(), 1);
  EXPECT_EQ(good->shutdown_calls.load(), 1);
}

TEST(ManagerSampling, EmptyDiscoveryIsReportedWithItsNote) {
  auto probe = std::make_shared<Probe>();
  Manager manager(config_for("h"), backends_of(make_backend("empty", {}, probe)));
  manager.start();
  const std::vector<BackendReport> reports = manager.backend_reports();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].devices, 0u);
  EXPECT_EQ(reports[0].note, "no devices");
  EXPECT_TRUE(reports[0].error.empty());
  EXPECT_TRUE(manager.devices().empty());
}

TEST(ManagerSampling, InvalidBackendSamplesAreRejectedAndCounted) {
  auto probe = std::make_shared<Probe>();
  Manager manager(config_for("h"), backends_of(make_backend("test", {"cuda:0"}, probe)));
  manager.start(false);
  const DeviceKey key{"h", "cuda:0"};
  probe->bad_samples = true;
  EXPECT_NO_THROW(manager.sample_now());
  EXPECT_NO_THROW(manager.sample_now());
  EXPECT_EQ(manager.history(key).size(), 1u);
  EXPECT_EQ(manager.rejected_samples()[static_cast<std::size_t>(RejectReason::out_of_range)], 2u);
  EXPECT_TRUE(manager.device(key).available);
}

// --- recording and rejection counts ---

TEST(ManagerRecord, RejectedSamplesAreCountedPerReason) {
  Manager manager(config_for("h"));
  const DeviceKey key{"h", "cuda:0"};
  manager.register_device(make_info("h", "cuda:0"));
  manager.record(key, make_sample(10));

  const auto count = [&](RejectReason reason) { return manager.rejected_samples()[static_cast<std::size_t>(reason)]; };
  for (std::size_t i = 0; i < kRejectReasonCount; ++i) EXPECT_EQ(manager.rejected_samples()[i], 0u);

  Sample nan = make_sample(11);
  nan.temperature_celsius = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(manager.record(key, nan), ValidationError);
  Sample inf = make_sample(11);
  inf.power_watts = std::numeric_limits<float>::infinity();
  EXPECT_THROW(manager.record(key, inf), ValidationError);
  EXPECT_THROW(manager.record(key, make_sample(11, 100, 150.0f)), ValidationError);
  EXPECT_THROW(manager.record(key, make_sample(11, 2000)), ValidationError);  // used > total
  EXPECT_THROW(manager.record(key, make_sample(5)), ValidationError);         // older than 10
  try {
    manager.record(DeviceKey{"h", "cuda:9"}, make_sample(11));
    FAIL() << "unregistered device must be rejected";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.reason(), RejectReason::unknown_device);
  }

  EXPECT_EQ(count(RejectReason::not_finite), 2u);
  EXPECT_EQ(count(RejectReason::out_of_range), 1u);
  EXPECT_EQ(count(RejectReason::used_exceeds_total), 1u);
  EXPECT_EQ(count(RejectReason::out_of_order), 1u);
  EXPECT_EQ(count(RejectReason::unknown_device), 1u);
  EXPECT_EQ(manager.history(key).size(), 1u);
  // Counts survive shutdown for a final report.
  manager.shutdown();
  EXPECT_EQ(count(RejectReason::not_finite), 2u);
}

TEST(ManagerRecord, RegisterUpdatesAndUnregisterRemoves) {
  Manager manager(config_for("h"));
  const DeviceKey key{"h", "cuda:0"};
  manager.register_device(make_info("h", "cuda:0"));
  manager.record(key, make_sample(1));
  DeviceInfo renamed = make_info("h", "cuda:0");
  renamed.name = "renamed";
  manager.register_device(renamed);
  EXPECT_EQ(manager.device(key).info->name, "renamed");
  EXPECT_EQ(manager.history(key).size(), 1u);

  EXPECT_THROW(manager.register_device(make_info("h", "")), InputError);
  EXPECT_EQ(manager.devices().size(), 1u);

  EXPECT_TRUE(manager.unregister_device(key));
  EXPECT_FALSE(manager.unregister_device(key));
  EXPECT_THROW(manager.device(key), UnknownDeviceError);
  EXPECT_THROW(manager.history(key), UnknownDeviceError);
  EXPECT_THROW(manager.window_stats(key), UnknownDeviceError);
  EXPECT_THROW(manager.set_availability(key, false), UnknownDeviceError);
  try {
    manager.device(DeviceKey{"h", "cuda:5"});
    FAIL();
  } catch (const UnknownDeviceError& e) {
    EXPECT_EQ(e.device(), "h/cuda:5");
  }
}

TEST(ManagerRecord, AggregateAndWindowStatsComeFromTheStore) {
  Manager manager(config_for("h"));
  manager.register_device(make_info("h", "a"));
  manager.register_device(make_info("h", "b"));
  Sample a = make_sample(1, 200, 30.0f);
  Sample b = make_sample(2, 400, 50.0f);
  b.temperature_celsius.reset();
  manager.record(DeviceKey{"h", "a"}, a);
  manager.record(DeviceKey{"h", "b"}, b);
  const ClusterAggregate agg = manager.aggregate();
  EXPECT_EQ(agg.device_count, 2u);
  EXPECT_EQ(agg.total_memory_bytes, 2000u);
  EXPECT_EQ(agg.used_memory_bytes, 600u);
  ASSERT_TRUE(agg.average_utilization_percent.has_value());
  EXPECT_DOUBLE_EQ(*agg.average_utilization_percent, 40.0);
  ASSERT_TRUE(agg.average_temperature_celsius.has_value());
  EXPECT_DOUBLE_EQ(*agg.average_temperature_celsius, 50.0);
  EXPECT_FALSE(agg.total_power_watts.has_value());
  const WindowStats stats = manager.window_stats(DeviceKey{"h", "b"});
  EXPECT_EQ(stats.samples, 1u);
  EXPECT_EQ(stats[Quantity::temperature_celsius].count, 0u);
}

// --- identity ---

TEST(ManagerIdentity, SameLocalIdOnTwoHostsAreTwoDevices) {
  Manager manager(config_for("h1"));
  manager.register_device(make_info("h1", "cuda:0"));
  manager.register_device(make_info("h2", "cuda:0"));
  EXPECT_EQ(manager.devices().size(), 2u);
  manager.record(DeviceKey{"h1", "cuda:0"}, make_sample(1, 100));
  manager.record(DeviceKey{"h2", "cuda:0"}, make_sample(1, 700));
  manager.record(DeviceKey{"h2", "cuda:0"}, make_sample(2, 800));
  EXPECT_EQ(manager.history(DeviceKey{"h1", "cuda:0"}).size(), 1u);
  EXPECT_EQ(manager.history(DeviceKey{"h2", "cuda:0"}).size(), 2u);
  EXPECT_EQ(manager.device(DeviceKey{"h1", "cuda:0"}).latest->memory_used_bytes, 100);
  EXPECT_EQ(manager.device(DeviceKey{"h2", "cuda:0"}).latest->memory_used_bytes, 800);
  EXPECT_TRUE(manager.unregister_device(DeviceKey{"h2", "cuda:0"}));
  EXPECT_EQ(manager.devices().size(), 1u);
  EXPECT_EQ(manager.device(DeviceKey{"h1", "cuda:0"}).info->key.host, "h1");
}

TEST(ManagerIdentity, ResolveKey) {
  Manager manager(config_for("h1"));
  // Nothing registered: a bare id is on this manager's host.
  EXPECT_EQ(manager.resolve_key("cuda:0"), (DeviceKey{"h1", "cuda:0"}));
  // host/id is taken as written.
  EXPECT_EQ(manager.resolve_key("h9/cuda:3"), (DeviceKey{"h9", "cuda:3"}));

  manager.register_device(make_info("h2", "rocm:0"));
  // A bare id that exactly one device (on another host) has resolves to it.
  EXPECT_EQ(manager.resolve_key("rocm:0"), (DeviceKey{"h2", "rocm:0"}));

  manager.register_device(make_info("h3", "rocm:0"));
  // Ambiguous across hosts: an error that lists the candidates.
  try {
    manager.resolve_key("rocm:0");
    FAIL() << "rocm:0 is on two hosts";
  } catch (const AmbiguousDeviceError& e) {
    EXPECT_EQ(e.candidates(), (std::vector<std::string>{"h2/rocm:0", "h3/rocm:0"}));
    EXPECT_EQ(e.field(), "id");
    EXPECT_TRUE(contains(e.what(), "name the host")) << e.what();
  }

  manager.register_device(make_info("h1", "rocm:0"));
  // The local device wins.
  EXPECT_EQ(manager.resolve_key("rocm:0"), (DeviceKey{"h1", "rocm:0"}));
  EXPECT_EQ(manager.resolve_key("h3/rocm:0"), (DeviceKey{"h3", "rocm:0"}));
}

// --- selection ---

TEST(ManagerSelection, NeverPicksAStaleDevice) {
  FakeClock clock;
  ManagerConfig config = config_for("h");
  config.clock = clock.fn();
  config.scoring.staleness = 10s;
  Manager manager(config);
  manager.register_device(make_info("h", "best"));
  manager.register_device(make_info("h", "worse"));
  clock.set(100);  // samples from further ahead of the manager's clock than the skew allowed are refused
  manager.record(DeviceKey{"h", "best"}, make_sample(100, 0, 0.0f));      // idle and empty
  manager.record(DeviceKey{"h", "worse"}, make_sample(115, 900, 90.0f));  // busy and full

  clock.set(105);
  ASSERT_TRUE(manager.select().device.has_value());
  EXPECT_EQ(*manager.select().device, (DeviceKey{"h", "best"}));

  clock.set(120);  // best's sample is 20 s old, worse's 5 s
  const Selection selection = manager.select();
  ASSERT_TRUE(selection.device.has_value());
  EXPECT_EQ(*selection.device, (DeviceKey{"h", "worse"}));
  const std::vector<RankedDevice> ranked = manager.rank();
  ASSERT_EQ(ranked.size(), 2u);
  EXPECT_EQ(ranked[0].key, (DeviceKey{"h", "worse"}));
  EXPECT_EQ(ranked[0].eligibility, Eligibility::eligible);
  EXPECT_EQ(ranked[1].key, (DeviceKey{"h", "best"}));
  EXPECT_EQ(ranked[1].eligibility, Eligibility::stale);

  clock.set(200);  // both stale
  const Selection none = manager.select();
  EXPECT_FALSE(none.device.has_value());
  EXPECT_TRUE(contains(none.reason, "stale")) << none.reason;
}

TEST(ManagerSelection, NeverPicksAnUnavailableDevice) {
  FakeClock clock;
  clock.set(100);
  ManagerConfig config = config_for("h");
  config.clock = clock.fn();
  Manager manager(config);
  manager.register_device(make_info("h", "best"));
  manager.register_device(make_info("h", "worse"));
  manager.register_device(make_info("h", "silent"));  // never reports
  manager.record(DeviceKey{"h", "best"}, make_sample(100, 0, 0.0f));
  manager.record(DeviceKey{"h", "worse"}, make_sample(100, 900, 90.0f));

  manager.set_availability(DeviceKey{"h", "best"}, false, "ECC errors");
  Selection selection = manager.select();
  ASSERT_TRUE(selection.device.has_value());
  EXPECT_EQ(*selection.device, (DeviceKey{"h", "worse"}));

  manager.set_availability(DeviceKey{"h", "worse"}, false, "thermal");
  selection = manager.select();
  EXPECT_FALSE(selection.device.has_value());
  EXPECT_FALSE(selection.reason.empty());

  manager.set_availability(DeviceKey{"h", "best"}, true);
  selection = manager.select();
  ASSERT_TRUE(selection.device.has_value());
  EXPECT_EQ(*selection.device, (DeviceKey{"h", "best"}));
  // Free-memory requirement excludes what cannot fit.
  EXPECT_FALSE(manager.select(2000).device.has_value());
}

// --- planning ---

TEST(ManagerPlan, NoUsableDevicesIsAPlanError) {
  FakeClock clock;
  clock.set(100);
  ManagerConfig config = config_for("h");
  config.clock = clock.fn();
  Manager manager(config);
  const PlanRequest uniform{Strategy::uniform, 10, {}, std::nullopt, std::nullopt, std::nullopt};
  EXPECT_THROW(manager.plan(uniform), PlanError);  // nothing registered

  manager.register_device(make_info("h", "cuda:0"));
  EXPECT_THROW(manager.plan(uniform), PlanError);  // no sample yet

  manager.record(DeviceKey{"h", "cuda:0"}, make_sample(100));
  manager.set_availability(DeviceKey{"h", "cuda:0"}, false, "down");
  EXPECT_THROW(manager.plan(uniform), PlanError);  // unavailable

  manager.set_availability(DeviceKey{"h", "cuda:0"}, true);
  clock.set(1000);
  EXPECT_THROW(manager.plan(uniform), PlanError);  // stale

  clock.set(101);
  const Plan plan = manager.plan(uniform);
  ASSERT_EQ(plan.assignments.size(), 1u);
  EXPECT_EQ(plan.assignments[0].device, (DeviceKey{"h", "cuda:0"}));
  EXPECT_EQ(plan.assignments[0].count, 10u);
  EXPECT_EQ(plan.unassigned, 0u);
}

TEST(ManagerPlan, WeightsNamingAnUnknownDeviceAreAPlanErrorNamingIt) {
  FakeClock clock;
  clock.set(100);
  ManagerConfig config = config_for("h");
  config.clock = clock.fn();
  Manager manager(config);
  manager.register_device(make_info("h", "cuda:0"));
  manager.register_device(make_info("h", "cuda:1"));
  manager.record(DeviceKey{"h", "cuda:0"}, make_sample(100));
  manager.record(DeviceKey{"h", "cuda:1"}, make_sample(100));

  PlanRequest request{Strategy::capacity, 12,           {{"cuda:0", 1.0}, {"ghost:7", 2.0}},
                      std::nullopt,       std::nullopt, std::nullopt};
  try {
    manager.plan(request);
    FAIL() << "a weight for an unknown device must be rejected";
  } catch (const PlanError& e) {
    EXPECT_TRUE(contains(e.what(), "ghost:7")) << e.what();
    EXPECT_TRUE(contains(e.field() + e.value(), "ghost:7"));
  }

  request.weights = {{"cuda:0", 1.0}, {"cuda:1", 2.0}};
  const Plan plan = manager.plan(request);
  ASSERT_EQ(plan.assignments.size(), 2u);
  EXPECT_EQ(plan.assignments[0].count, 4u);
  EXPECT_EQ(plan.assignments[1].count, 8u);

  // A weight for a device that cannot be used is an error too.
  manager.set_availability(DeviceKey{"h", "cuda:1"}, false, "down");
  EXPECT_THROW(manager.plan(request), PlanError);
}

TEST(ManagerPlan, CapacityWithoutWeightsUsesComputeUnits) {
  FakeClock clock;
  clock.set(100);
  ManagerConfig config = config_for("h");
  config.clock = clock.fn();
  Manager manager(config);
  manager.register_device(make_info("h", "big", 300));
  manager.register_device(make_info("h", "small", 100));
  manager.record(DeviceKey{"h", "big"}, make_sample(100));
  manager.record(DeviceKey{"h", "small"}, make_sample(100));
  const Plan plan = manager.plan(PlanRequest{Strategy::capacity, 8, {}, std::nullopt, std::nullopt, std::nullopt});
  ASSERT_EQ(plan.assignments.size(), 2u);
  std::uint64_t big = 0, small = 0;
  for (const Assignment& a : plan.assignments) (a.device.local_id == "big" ? big : small) = a.count;
  EXPECT_EQ(big, 6u);
  EXPECT_EQ(small, 2u);

  manager.register_device(make_info("h", "unknown-units", std::nullopt));
  manager.record(DeviceKey{"h", "unknown-units"}, make_sample(100));
  EXPECT_THROW(manager.plan(PlanRequest{Strategy::capacity, 8, {}, std::nullopt, std::nullopt, std::nullopt}),
               PlanError);
}

// A plan never drops a device silently: every registered device it did not
// use is listed with the reason (docs audit rows 15 and 17).
TEST(ManagerPlan, DevicesLeftOutAreListedWithTheirReasons) {
  FakeClock clock;
  clock.set(100);
  ManagerConfig config = config_for("h");
  config.clock = clock.fn();
  Manager manager(config);
  for (const char* id : {"a", "b", "down", "fresh", "old"}) manager.register_device(make_info("h", id));
  manager.record(DeviceKey{"h", "old"}, make_sample(50));
  clock.set(200);
  for (const char* id : {"a", "b", "down"}) manager.record(DeviceKey{"h", id}, make_sample(200));
  manager.set_availability(DeviceKey{"h", "down"}, false, "GPU is lost");
  const Plan uniform = manager.plan(PlanRequest{Strategy::uniform, 10, {}, std::nullopt, std::nullopt, std::nullopt});
  EXPECT_EQ(uniform.assignments.size(), 2u);
  ASSERT_EQ(uniform.left_out.size(), 3u);
  EXPECT_EQ(uniform.left_out[0].device.local_id, "down");
  EXPECT_TRUE(contains(uniform.left_out[0].reason, "GPU is lost")) << uniform.left_out[0].reason;
  EXPECT_EQ(uniform.left_out[1].device.local_id, "fresh");
  EXPECT_TRUE(contains(uniform.left_out[1].reason, "no telemetry sample")) << uniform.left_out[1].reason;
  EXPECT_EQ(uniform.left_out[2].device.local_id, "old");
  EXPECT_TRUE(contains(uniform.left_out[2].reason, "stale")) << uniform.left_out[2].reason;

  // Weights naming only some usable devices: the others are shown, not dropped.
  const Plan weighted =
      manager.plan(PlanRequest{Strategy::capacity, 19, {{"b", 1.0}}, std::nullopt, std::nullopt, std::nullopt});
  ASSERT_EQ(weighted.assignments.size(), 1u);
  EXPECT_EQ(weighted.assignments[0].count, 19u);
  ASSERT_EQ(weighted.left_out.size(), 4u);
  EXPECT_EQ(weighted.left_out[0], (LeftOut{DeviceKey{"h", "a"}, "no weight given"}));
}

// One set of rules for every caller: each strategy's required fields, and no
// field the strategy would ignore (docs audit rows 16 and 28).
TEST(ManagerPlan, FieldsAStrategyWouldIgnoreAreRefused) {
  const auto field_of = [](const PlanRequest& request) -> std::string {
    try {
      check_plan_request(request);
    } catch (const PlanError& e) {
      return e.field();
    }
    return "accepted";
  };
  const std::optional<std::uint64_t> none;
  EXPECT_EQ(field_of({Strategy::uniform, none, {}, none, none, none}), "items");
  EXPECT_EQ(field_of({Strategy::capacity, none, {}, none, none, none}), "items");
  EXPECT_EQ(field_of({Strategy::uniform, 5, {}, none, 80, none}), "layers");
  EXPECT_EQ(field_of({Strategy::uniform, 5, {}, none, none, 1024}), "layer_bytes");
  EXPECT_EQ(field_of({Strategy::uniform, 5, {{"a", 1.0}}, none, none, none}), "weights");
  EXPECT_EQ(field_of({Strategy::memory, none, {}, none, none, none}), "layers");
  EXPECT_EQ(field_of({Strategy::memory, none, {}, none, 0, none}), "layers");
  EXPECT_EQ(field_of({Strategy::memory, 10, {}, none, 80, none}), "items");
  EXPECT_EQ(field_of({Strategy::memory, none, {}, 2, 80, none}), "max_per_device");
  EXPECT_EQ(field_of({Strategy::memory, none, {}, none, 80, 1024}), "accepted");
  EXPECT_EQ(field_of({Strategy::uniform, 0, {}, 3, none, none}), "accepted");
  EXPECT_EQ(field_of({Strategy::capacity, 7, {{"a", 1.0}}, 3, none, none}), "accepted");
}

}  // namespace
}  // namespace gpucluster

namespace gpucluster {
namespace {

TEST(ManagerPlan, StrategyNamesAreParsedByOneRule) {
  EXPECT_EQ(plan_strategy("uniform"), Strategy::uniform);
  EXPECT_EQ(plan_strategy("capacity"), Strategy::capacity);
  EXPECT_EQ(plan_strategy("memory"), Strategy::memory);
  try {
    plan_strategy("Uniform");
    FAIL() << "no error";
  } catch (const PlanError& e) {
    EXPECT_EQ(e.field(), "strategy");
    EXPECT_EQ(e.value(), "Uniform");
    EXPECT_EQ(e.rule(), "must be uniform, capacity or memory");
  }
}

}  // namespace
}  // namespace gpucluster
