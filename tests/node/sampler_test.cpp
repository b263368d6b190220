// The background sampler's fault isolation: one backend per thread, so a call
// that hangs stalls only its own devices, which turn unavailable and recover.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "gpucluster/node/manager.hpp"
#include "support/fake_backend.hpp"

namespace gpucluster {
namespace {

using namespace std::chrono_literals;
using testing::FakeBackend;

// A gate the test opens and closes; sample() blocks while it is closed.
struct Gate {
  std::mutex mutex;
  std::condition_variable changed;
  bool open = true;
  std::atomic<int> waiting{0};
  void set(bool value) {
    {
      std::lock_guard lock(mutex);
      open = value;
    }
    changed.notify_all();
  }
  void pass() {
    std::unique_lock lock(mutex);
    ++waiting;
    changed.wait(lock, [&] { return open; });
    --waiting;
  }
};

// A backend with one device whose reads pass `gate` first (hang while it is closed).
BackendPtr gated_reads(std::string name, std::string device, std::shared_ptr<Gate> gate,
                       std::shared_ptr<FakeBackend::Counters> counters) {
  FakeBackend::Config config;
  config.name = std::move(name);
  config.devices.push_back(testing::fake_device(std::move(device)));
  config.devices.back().kind = DeviceKind::cuda;
  config.sample = testing::fake_sample(10, 1000);
  config.on_sample = [gate = std::move(gate)](const std::string& /*local_id*/, Sample fixed) {
    gate->pass();
    return fixed;
  };
  return std::make_unique<FakeBackend>(std::move(config), std::move(counters));
}

struct Rig {
  std::shared_ptr<Gate> stuck_gate = std::make_shared<Gate>();
  std::shared_ptr<Gate> good_gate = std::make_shared<Gate>();
  std::shared_ptr<FakeBackend::Counters> stuck = std::make_shared<FakeBackend::Counters>();
  std::shared_ptr<FakeBackend::Counters> good = std::make_shared<FakeBackend::Counters>();

  std::unique_ptr<Manager> make(std::chrono::nanoseconds interval, std::chrono::nanoseconds timeout) {
    ManagerConfig config;
    config.host = "h";
    config.sample_interval = interval;
    config.backend_timeout = timeout;
    std::vector<BackendPtr> backends;
    backends.push_back(gated_reads("stuck", "cuda:0", stuck_gate, stuck));
    backends.push_back(gated_reads("good", "cuda:1", good_gate, good));
    return std::make_unique<Manager>(config, std::move(backends));
  }
};

template <class Predicate>
bool eventually(Predicate predicate, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (predicate()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return predicate();
}

const DeviceKey kStuck{"h", "cuda:0"}, kGood{"h", "cuda:1"};

TEST(Sampler, AHangingBackendDoesNotStallTheOthersAndRecovers) {
  Rig rig;
  auto manager = rig.make(5ms, 100ms);
  manager->start();
  ASSERT_TRUE(manager->device(kStuck).available);

  rig.stuck_gate->set(false);  // the next read of cuda:0 hangs
  ASSERT_TRUE(eventually([&] { return rig.stuck_gate->waiting.load() == 1; }));
  const int good_before = rig.good->sample_returned.load();
  ASSERT_TRUE(eventually([&] { return rig.good->sample_returned.load() >= good_before + 5; }))
      << "the good backend stopped being sampled while the other hung";
  ASSERT_TRUE(eventually([&] { return !manager->device(kStuck).available; }));
  const DeviceState stuck = manager->device(kStuck);
  EXPECT_NE(stuck.unavailable_reason.find("backend stuck has not answered"), std::string::npos)
      << stuck.unavailable_reason;
  EXPECT_TRUE(manager->device(kGood).available);
  ASSERT_TRUE(manager->select().device.has_value());
  EXPECT_EQ(*manager->select().device, kGood);

  rig.stuck_gate->set(true);  // the backend answers again
  ASSERT_TRUE(eventually([&] { return manager->device(kStuck).available; }));
  manager->shutdown();
  EXPECT_EQ(rig.stuck->shutdown_calls.load(), 1);
  EXPECT_EQ(rig.good->shutdown_calls.load(), 1);
}

TEST(Sampler, SampleNowWaitsAtMostTheTimeoutAndMarksTheLateBackend) {
  Rig rig;
  auto manager = rig.make(0ns, 150ms);  // no background sampling
  manager->start();
  rig.stuck_gate->set(false);
  const auto started = std::chrono::steady_clock::now();
  manager->sample_now();
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 5s);
  const DeviceState stuck = manager->device(kStuck);
  EXPECT_FALSE(stuck.available);
  EXPECT_NE(stuck.unavailable_reason.find("did not answer within 150ms"), std::string::npos)
      << stuck.unavailable_reason;
  EXPECT_TRUE(manager->device(kGood).available);
  rig.stuck_gate->set(true);
  manager->sample_now();
  EXPECT_TRUE(manager->device(kStuck).available);
}

TEST(Sampler, ShutdownLeavesAStuckBackendBehindAndItShutsDownWhenItReturns) {
  Rig rig;
  auto manager = rig.make(0ns, 100ms);
  manager->start();
  rig.stuck_gate->set(false);
  EXPECT_NO_THROW(manager->sample_now());  // leaves cuda:0's read hanging
  ASSERT_EQ(rig.stuck_gate->waiting.load(), 1);

  const auto started = std::chrono::steady_clock::now();
  manager->shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s) << "shutdown waited for the hung call";
  EXPECT_EQ(manager->state(), ManagerState::stopped);
  EXPECT_EQ(rig.good->shutdown_calls.load(), 1);
  EXPECT_EQ(rig.stuck->shutdown_calls.load(), 0) << "shut down while a call was still inside it";
  manager.reset();  // the stuck worker must outlive the manager safely

  rig.stuck_gate->set(true);  // the call returns: the worker shuts its backend down itself
  EXPECT_TRUE(eventually([&] { return rig.stuck->shutdown_calls.load() == 1; }));
}

TEST(Sampler, ReadsNeverHappenOnTheCallersThread) {
  // sample_now on a thread the test owns: the backend sees another thread id.
  std::thread::id seen;
  FakeBackend::Config probe;
  probe.name = "probe";
  probe.devices.push_back(testing::fake_device("x:0", 1));
  probe.sample = testing::fake_sample(0, 1);
  probe.on_sample = [&seen](const std::string& /*local_id*/, Sample fixed) {
    seen = std::this_thread::get_id();
    return fixed;
  };
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<FakeBackend>(std::move(probe)));
  ManagerConfig config;
  config.host = "h";
  Manager manager(config, std::move(backends));
  manager.start(false);
  manager.sample_now();
  EXPECT_NE(seen, std::this_thread::get_id());
  EXPECT_NE(seen, std::thread::id{});
}

}  // namespace
}  // namespace gpucluster

namespace gpucluster {
namespace {

// Two backends that both see one GPU (as rocm and sysfs see an AMD card).
BackendPtr pci_backend(std::string name, std::string id, std::string pci) {
  FakeBackend::Config config;
  config.name = std::move(name);
  config.devices.push_back(testing::fake_device(std::move(id), 1));
  if (!pci.empty()) config.devices.back().pci_bus_id = std::move(pci);
  config.sample = testing::fake_sample(0, 1);
  return std::make_unique<FakeBackend>(std::move(config));
}

TEST(Discovery, OnePhysicalGpuIsKeptOnceByTheEarlierBackend) {
  std::vector<BackendPtr> backends;
  backends.push_back(pci_backend("rocm", "rocm:0", "0000:65:00.0"));
  backends.push_back(pci_backend("sysfs", "card1", "0000:65:00.0"));
  backends.push_back(pci_backend("nvml", "cuda:0", "00000000:B3:00.0"));
  backends.push_back(pci_backend("other", "cuda-again:0", "0000:b3:00.0"));
  ManagerConfig config;
  config.host = "h";
  Manager manager(config, std::move(backends));
  manager.start(false);
  const auto devices = manager.devices();
  ASSERT_EQ(devices.size(), 2U);
  EXPECT_EQ(devices[0].info->backend, "nvml");
  EXPECT_EQ(devices[1].info->backend, "rocm");
  const auto reports = manager.backend_reports();
  EXPECT_EQ(reports[1].devices, 0U);
  EXPECT_NE(reports[1].note.find("already found by an earlier backend"), std::string::npos) << reports[1].note;
  EXPECT_EQ(reports[3].devices, 0U);
}

}  // namespace
}  // namespace gpucluster

namespace gpucluster {
namespace {

// Errors are retried with backoff by the background sampler: a device failing
// every read is asked less and less often, a healthy one every tick, and an
// explicit sample_now still reads it.
TEST(Sampler, FailingDevicesAreRetriedWithBackoff) {
  auto failing = std::make_shared<std::atomic<int>>(0), healthy = std::make_shared<std::atomic<int>>(0);
  FakeBackend::Config flaky;
  flaky.name = "flaky";
  flaky.devices = {testing::fake_device("bad:0", 1), testing::fake_device("good:0", 1)};
  flaky.sample = testing::fake_sample(0, 1);
  flaky.on_sample = [failing, healthy](const std::string& id, Sample fixed) {
    if (id == "bad:0") {
      ++*failing;
      throw Error("driver error 999");
    }
    ++*healthy;
    return fixed;
  };
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<FakeBackend>(std::move(flaky)));
  ManagerConfig config;
  config.host = "h";
  config.sample_interval = 2ms;
  Manager manager(config, std::move(backends));
  manager.start();
  ASSERT_TRUE(eventually([&] { return healthy->load() >= 60; }));
  manager.shutdown();
  // 60 healthy reads ≈ 60 ticks; backoff 1, 2, 4, 8, 16, 16, … allows about 8 reads.
  EXPECT_LE(failing->load(), 15) << "failing reads " << failing->load() << " for " << healthy->load() << " ticks";
  EXPECT_GE(failing->load(), 3);
  EXPECT_GE(manager.backend_errors(), 3U);
}

TEST(Sampler, ExplicitSampleNowIgnoresBackoff) {
  FakeBackend::Config broken;
  broken.name = "broken";
  broken.devices.push_back(testing::fake_device("x:0", 1));
  broken.on_sample = [](const std::string& /*local_id*/, Sample /*fixed*/) -> Sample { throw Error("no"); };
  auto backend = std::make_unique<FakeBackend>(std::move(broken));
  const std::shared_ptr<FakeBackend::Counters> probe = backend->counters();
  std::vector<BackendPtr> backends;
  backends.push_back(std::move(backend));
  ManagerConfig config;
  config.host = "h";
  Manager manager(config, std::move(backends));
  manager.start(false);
  for (int i = 0; i < 4; ++i) manager.sample_now();
  EXPECT_EQ(probe->sample_calls.load(), 5);  // start's pass + 4 explicit ones
  manager.shutdown();
}

}  // namespace
}  // namespace gpucluster

namespace gpucluster {
namespace {

// Discovery under a deadline: every backend's discover() runs on its own
// worker thread, all at once; start() waits at most discovery_timeout.

// What a gated_discovery backend did: discover_calls are the discover() calls
// begun, discover_returned those that returned.
struct DiscoveryProbe : FakeBackend::Counters {
  Gate gate;
  std::atomic<bool> saw_other{false};  // another backend was discovering at the same time
};

// A backend whose discover() waits on a gate (a vendor library's init that
// hangs), then finds one device; counts its shutdowns. With `other`, it first
// waits (bounded) for that backend's discover() to begin.
BackendPtr gated_discovery(std::string name, std::string device, std::shared_ptr<DiscoveryProbe> probe,
                           std::shared_ptr<DiscoveryProbe> other = nullptr, std::string pci = {}) {
  FakeBackend::Config config;
  config.name = std::move(name);
  config.devices.push_back(testing::fake_device(std::move(device)));
  if (!pci.empty()) config.devices.back().pci_bus_id = std::move(pci);
  config.sample = testing::fake_sample(0, 1000);
  config.on_discover = [probe, other](const std::string& /*host*/, Discovery fixed) {
    if (other) {  // bounded: proves overlap without hanging a sequential manager forever
      const auto deadline = std::chrono::steady_clock::now() + 5s;
      while (other->discover_calls.load() == 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
      }
      probe->saw_other = other->discover_calls.load() > 0;
    }
    probe->gate.pass();
    return fixed;
  };
  return std::make_unique<FakeBackend>(std::move(config), std::move(probe));
}

// A backend whose source cannot be used (as nvml without libnvidia-ml.so.1).
BackendPtr unusable_backend(
    std::shared_ptr<FakeBackend::Counters> counters = std::make_shared<FakeBackend::Counters>()) {
  FakeBackend::Config config;
  config.name = "vendor";
  config.note = "no devices: cannot load libvendor.so.1; set VENDOR_LIBRARY to its path";
  config.unavailable = true;
  return std::make_unique<FakeBackend>(std::move(config), std::move(counters));
}

ManagerConfig discovery_config(std::chrono::nanoseconds discovery_timeout) {
  ManagerConfig config;
  config.host = "h";
  config.sample_interval = 0ns;
  config.discovery_timeout = discovery_timeout;
  return config;
}

TEST(DiscoveryDeadline, AHangingDiscoverFailsOnlyItsBackendAndStartReturns) {
  auto stuck = std::make_shared<DiscoveryProbe>();
  auto good = std::make_shared<DiscoveryProbe>();
  stuck->gate.set(false);  // its discover() hangs
  std::vector<BackendPtr> backends;
  backends.push_back(gated_discovery("stuck", "cuda:0", stuck));
  backends.push_back(gated_discovery("good", "cuda:1", good));
  auto manager = std::make_unique<Manager>(discovery_config(100ms), std::move(backends));
  manager->start(false);

  EXPECT_EQ(manager->state(), ManagerState::running);
  const auto reports = manager->backend_reports();
  ASSERT_EQ(reports.size(), 2U);
  EXPECT_EQ(reports[0].backend, "stuck");
  EXPECT_EQ(reports[0].error, "backend stuck did not finish discovery within 100ms");
  EXPECT_STREQ(report_status(reports[0]), "failed");
  EXPECT_EQ(reports[0].devices, 0U);
  EXPECT_EQ(reports[1].error, "");
  EXPECT_STREQ(report_status(reports[1]), "ok");
  const auto devices = manager->devices();
  ASSERT_EQ(devices.size(), 1U);
  EXPECT_EQ(devices[0].info->key, kGood);
  EXPECT_TRUE(devices[0].latest.has_value()) << "the other backend was not sampled";
  EXPECT_EQ(stuck->gate.waiting.load(), 1);

  // The late discover() returns: its device is never added, and its worker
  // (not the manager) shuts the backend down.
  stuck->gate.set(true);
  EXPECT_TRUE(eventually([&] { return stuck->shutdown_calls.load() == 1; }));
  manager->sample_now();
  EXPECT_EQ(manager->devices().size(), 1U);
  manager->shutdown();
  EXPECT_EQ(good->shutdown_calls.load(), 1);
  EXPECT_EQ(stuck->shutdown_calls.load(), 1) << "a late backend must be shut down exactly once";
}

TEST(DiscoveryDeadline, ALateBackendOutlivesItsManagerSafely) {
  auto stuck = std::make_shared<DiscoveryProbe>();
  stuck->gate.set(false);
  std::vector<BackendPtr> backends;
  backends.push_back(gated_discovery("stuck", "cuda:0", stuck));
  auto manager = std::make_unique<Manager>(discovery_config(50ms), std::move(backends));
  manager->start();
  manager.reset();  // the hung discover() is still running
  EXPECT_EQ(stuck->shutdown_calls.load(), 0) << "shut down while discover() was still running";
  stuck->gate.set(true);
  EXPECT_TRUE(eventually([&] { return stuck->shutdown_calls.load() == 1; }));
}

TEST(DiscoveryDeadline, BackendsDiscoverInParallel) {
  auto first = std::make_shared<DiscoveryProbe>();
  auto second = std::make_shared<DiscoveryProbe>();
  std::vector<BackendPtr> backends;
  backends.push_back(gated_discovery("first", "cuda:0", first, second));
  backends.push_back(gated_discovery("second", "cuda:1", second, first));
  Manager manager(discovery_config(30s), std::move(backends));
  manager.start(false);
  EXPECT_TRUE(first->saw_other.load()) << "discover() calls ran one after the other";
  EXPECT_TRUE(second->saw_other.load()) << "discover() calls ran one after the other";
  EXPECT_EQ(manager.devices().size(), 2U);
}

TEST(DiscoveryDeadline, DuplicatesAreKeptByTheEarlierBackendWhateverFinishesFirst) {
  // The richer backend (listed first) finishes last; it still keeps the GPU.
  auto rich = std::make_shared<DiscoveryProbe>();
  auto poor = std::make_shared<DiscoveryProbe>();
  rich->gate.set(false);
  std::vector<BackendPtr> backends;
  backends.push_back(gated_discovery("rocm", "rocm:0", rich, nullptr, "0000:65:00.0"));
  backends.push_back(gated_discovery("sysfs", "card0", poor, nullptr, "0000:65:00.0"));
  Manager manager(discovery_config(30s), std::move(backends));
  std::thread opener([&] {
    eventually([&] { return poor->discover_returned.load() == 1; });  // the poorer backend finishes first
    rich->gate.set(true);
  });
  manager.start(false);
  opener.join();
  const auto devices = manager.devices();
  ASSERT_EQ(devices.size(), 1U);
  EXPECT_EQ(devices[0].info->backend, "rocm");
  const auto reports = manager.backend_reports();
  EXPECT_EQ(reports[1].devices, 0U);
  EXPECT_NE(reports[1].note.find("already found by an earlier backend"), std::string::npos) << reports[1].note;
}

TEST(DiscoveryDeadline, DiscoverNeverRunsOnTheCallersThread) {
  std::thread::id seen;
  FakeBackend::Config probe;
  probe.name = "probe";
  probe.on_discover = [&seen](const std::string& /*host*/, Discovery fixed) {
    seen = std::this_thread::get_id();
    return fixed;
  };
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<FakeBackend>(std::move(probe)));
  Manager manager(discovery_config(30s), std::move(backends));
  manager.start(false);
  EXPECT_NE(seen, std::this_thread::get_id());
  EXPECT_NE(seen, std::thread::id{});
}

TEST(DiscoveryDeadline, ADeviceThatCannotBeRegisteredFailsOnlyItsBackend) {
  FakeBackend::Config broken;
  broken.name = "broken";
  broken.devices.push_back(testing::fake_device("", 1));  // fails validation: a device needs an id
  auto good = std::make_shared<DiscoveryProbe>();
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<FakeBackend>(std::move(broken)));
  backends.push_back(gated_discovery("good", "cuda:1", good));
  Manager manager(discovery_config(30s), std::move(backends));
  ASSERT_NO_THROW(manager.start(false));
  const auto reports = manager.backend_reports();
  EXPECT_STREQ(report_status(reports[0]), "failed");
  EXPECT_NE(reports[0].error.find("device_id"), std::string::npos) << reports[0].error;
  ASSERT_EQ(manager.devices().size(), 1U);
  EXPECT_EQ(manager.devices()[0].info->key, kGood);
}

// A vendor shutdown call that hangs (nvmlShutdown) is bounded like any other
// call: shutdown() returns after backend_timeout, the others are shut down.
TEST(Sampler, AShutdownCallThatHangsIsLeftBehind) {
  auto gate = std::make_shared<Gate>();
  auto stuck_shutdowns = std::make_shared<FakeBackend::Counters>();  // counts the calls that returned
  auto good = std::make_shared<DiscoveryProbe>();
  gate->set(false);
  FakeBackend::Config stuck;
  stuck.name = "stuck-shutdown";
  stuck.on_shutdown = [gate] { gate->pass(); };
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<FakeBackend>(std::move(stuck), stuck_shutdowns));
  backends.push_back(gated_discovery("good", "cuda:1", good));
  ManagerConfig config = discovery_config(30s);
  config.backend_timeout = 100ms;
  auto manager = std::make_unique<Manager>(config, std::move(backends));
  manager->start(false);
  auto stopping = std::async(std::launch::async, [&] { manager->shutdown(); });
  const bool returned = stopping.wait_for(10s) == std::future_status::ready;
  EXPECT_TRUE(returned) << "shutdown() waited for a backend's hung shutdown call";
  EXPECT_EQ(good->shutdown_calls.load(), 1);
  EXPECT_EQ(gate->waiting.load(), 1);
  gate->set(true);  // the call returns; the worker ends by itself
  stopping.wait();
  EXPECT_TRUE(eventually([&] { return stuck_shutdowns->shutdown_returned.load() == 1; }));
  manager.reset();
}

TEST(DiscoveryDeadline, DefaultsAreTheDocumentedOnes) {
  const ManagerConfig config;  // docs/agent.md, README: 30 s to discover, 5 s per sampling pass
  EXPECT_EQ(config.discovery_timeout, 30s);
  EXPECT_EQ(config.backend_timeout, 5s);
  EXPECT_TRUE(config.required_backends.empty());
}

TEST(DiscoveryDeadline, TheDeadlineMustBePositive) {
  for (const auto timeout : {0ns, -1ns}) {
    try {
      Manager manager(discovery_config(timeout));
      ADD_FAILURE() << "accepted discovery_timeout " << timeout.count();
    } catch (const InputError& e) {
      EXPECT_EQ(e.field(), "discovery_timeout");
      EXPECT_EQ(e.rule(), "must be positive");
    }
  }
}

// ---- Required backends (the CLI's explicit --backend): failing loudly ----

TEST(RequiredBackends, AnUnavailableRequiredBackendMakesStartThrowAndStopsEverything) {
  auto vendor_shutdowns = std::make_shared<FakeBackend::Counters>();
  auto good = std::make_shared<DiscoveryProbe>();
  std::vector<BackendPtr> backends;
  backends.push_back(unusable_backend(vendor_shutdowns));
  backends.push_back(gated_discovery("good", "cuda:1", good));
  ManagerConfig config = discovery_config(30s);
  config.required_backends = {"vendor", "good"};
  Manager manager(config, std::move(backends));
  try {
    manager.start();
    FAIL() << "start() accepted a required backend that cannot be used";
  } catch (const BackendUnavailableError& e) {
    ASSERT_EQ(e.failed().size(), 1U);
    EXPECT_EQ(e.failed()[0].backend, "vendor");
    EXPECT_EQ(e.field(), "backends");
    EXPECT_EQ(e.value(), "vendor");
    EXPECT_EQ(std::string(e.what()),
              "requested backend cannot be used: vendor: cannot load libvendor.so.1; set VENDOR_LIBRARY to its path");
  }
  EXPECT_EQ(manager.state(), ManagerState::stopped);
  EXPECT_EQ(vendor_shutdowns->shutdown_calls.load(), 1);
  EXPECT_EQ(good->shutdown_calls.load(), 1);
  EXPECT_THROW(manager.devices(), ShutDownError);
}

TEST(RequiredBackends, ARequiredBackendThatMissesTheDeadlineMakesStartThrow) {
  auto stuck = std::make_shared<DiscoveryProbe>();
  stuck->gate.set(false);
  std::vector<BackendPtr> backends;
  backends.push_back(gated_discovery("stuck", "cuda:0", stuck));
  ManagerConfig config = discovery_config(100ms);
  config.required_backends = {"stuck"};
  Manager manager(config, std::move(backends));
  try {
    manager.start();
    FAIL() << "start() accepted a required backend that did not finish discovery";
  } catch (const BackendUnavailableError& e) {
    EXPECT_NE(std::string(e.what()).find("stuck: backend stuck did not finish discovery within 100ms"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(manager.state(), ManagerState::stopped);
  stuck->gate.set(true);
  EXPECT_TRUE(eventually([&] { return stuck->shutdown_calls.load() == 1; }));
}

TEST(RequiredBackends, ZeroDevicesIsNotAFailureAndUnrequiredUnavailableIsSkipped) {
  FakeBackend::Config empty;
  empty.name = "empty";
  empty.note = "no devices: 0 GPUs";
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<FakeBackend>(std::move(empty)));
  backends.push_back(unusable_backend());
  ManagerConfig config = discovery_config(30s);
  config.required_backends = {"empty"};
  Manager manager(config, std::move(backends));
  ASSERT_NO_THROW(manager.start(false));
  const auto reports = manager.backend_reports();
  ASSERT_EQ(reports.size(), 2U);
  EXPECT_STREQ(report_status(reports[0]), "none");
  EXPECT_FALSE(reports[0].unavailable);
  EXPECT_STREQ(report_status(reports[1]), "unavailable");
  EXPECT_TRUE(reports[1].unavailable);
  EXPECT_NE(reports[1].note.find("cannot load libvendor.so.1"), std::string::npos);
}

TEST(RequiredBackends, ARequiredNameMustBeOneOfTheBackends) {
  std::vector<BackendPtr> backends;
  backends.push_back(unusable_backend());
  ManagerConfig config = discovery_config(30s);
  config.required_backends = {"nvml"};
  try {
    Manager manager(config, std::move(backends));
    FAIL() << "accepted a required backend the manager does not have";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "required_backends");
    EXPECT_EQ(e.value(), "nvml");
  }
}

}  // namespace
}  // namespace gpucluster
