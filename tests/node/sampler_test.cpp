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

namespace gpucluster {
namespace {

using namespace std::chrono_literals;

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

class TestBackend final : public Backend {
 public:
  TestBackend(std::string name, std::string device, std::shared_ptr<Gate> gate,
              std::shared_ptr<std::atomic<int>> samples, std::shared_ptr<std::atomic<int>> shutdowns)
      : name_(std::move(name)),
        device_(std::move(device)),
        gate_(std::move(gate)),
        samples_(std::move(samples)),
        shutdowns_(std::move(shutdowns)) {}
  std::string_view name() const noexcept override { return name_; }
  Discovery discover(const std::string& host) override {
    DeviceInfo info;
    info.key = {host, device_};
    info.kind = DeviceKind::cuda;
    info.memory_total_bytes = 1000;
    return Discovery{{info}, {}};
  }
  Sample sample(const std::string&) override {
    gate_->pass();
    ++*samples_;
    Sample s;
    s.timestamp = now_timestamp();
    s.memory_total_bytes = 1000;
    s.memory_used_bytes = 10;
    return s;
  }
  FieldAvailability available_fields(const std::string&) const override { return {}; }
  void shutdown() override { ++*shutdowns_; }

 private:
  std::string name_, device_;
  std::shared_ptr<Gate> gate_;
  std::shared_ptr<std::atomic<int>> samples_, shutdowns_;
};

struct Rig {
  std::shared_ptr<Gate> stuck_gate = std::make_shared<Gate>();
  std::shared_ptr<Gate> good_gate = std::make_shared<Gate>();
  std::shared_ptr<std::atomic<int>> stuck_samples = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<int>> good_samples = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<int>> stuck_shutdowns = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<int>> good_shutdowns = std::make_shared<std::atomic<int>>(0);

  std::unique_ptr<Manager> make(std::chrono::nanoseconds interval, std::chrono::nanoseconds timeout) {
    ManagerConfig config;
    config.host = "h";
    config.sample_interval = interval;
    config.backend_timeout = timeout;
    std::vector<BackendPtr> backends;
    backends.push_back(std::make_unique<TestBackend>("stuck", "cuda:0", stuck_gate, stuck_samples, stuck_shutdowns));
    backends.push_back(std::make_unique<TestBackend>("good", "cuda:1", good_gate, good_samples, good_shutdowns));
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
  const int good_before = rig.good_samples->load();
  ASSERT_TRUE(eventually([&] { return rig.good_samples->load() >= good_before + 5; }))
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
  EXPECT_EQ(rig.stuck_shutdowns->load(), 1);
  EXPECT_EQ(rig.good_shutdowns->load(), 1);
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
  EXPECT_EQ(rig.good_shutdowns->load(), 1);
  EXPECT_EQ(rig.stuck_shutdowns->load(), 0) << "shut down while a call was still inside it";
  manager.reset();  // the stuck worker must outlive the manager safely

  rig.stuck_gate->set(true);  // the call returns: the worker shuts its backend down itself
  EXPECT_TRUE(eventually([&] { return rig.stuck_shutdowns->load() == 1; }));
}

TEST(Sampler, ReadsNeverHappenOnTheCallersThread) {
  // sample_now on a thread the test owns: the backend sees another thread id.
  struct ThreadProbe final : Backend {
    std::thread::id* seen;
    explicit ThreadProbe(std::thread::id* out) : seen(out) {}
    std::string_view name() const noexcept override { return "probe"; }
    Discovery discover(const std::string& host) override {
      DeviceInfo info;
      info.key = {host, "x:0"};
      info.memory_total_bytes = 1;
      return Discovery{{info}, {}};
    }
    Sample sample(const std::string&) override {
      *seen = std::this_thread::get_id();
      Sample s;
      s.timestamp = now_timestamp();
      s.memory_total_bytes = 1;
      return s;
    }
    FieldAvailability available_fields(const std::string&) const override { return {}; }
    void shutdown() override {}
  };
  std::thread::id seen;
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<ThreadProbe>(&seen));
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
class PciBackend final : public Backend {
 public:
  PciBackend(std::string name, std::string id, std::string pci)
      : name_(std::move(name)), id_(std::move(id)), pci_(std::move(pci)) {}
  std::string_view name() const noexcept override { return name_; }
  Discovery discover(const std::string& host) override {
    DeviceInfo info;
    info.key = {host, id_};
    if (!pci_.empty()) info.pci_bus_id = pci_;
    info.memory_total_bytes = 1;
    info.backend = name_;
    return Discovery{{info}, {}};
  }
  Sample sample(const std::string&) override {
    Sample s;
    s.timestamp = now_timestamp();
    s.memory_total_bytes = 1;
    return s;
  }
  FieldAvailability available_fields(const std::string&) const override { return {}; }
  void shutdown() override {}

 private:
  std::string name_, id_, pci_;
};

TEST(Discovery, OnePhysicalGpuIsKeptOnceByTheEarlierBackend) {
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<PciBackend>("rocm", "rocm:0", "0000:65:00.0"));
  backends.push_back(std::make_unique<PciBackend>("sysfs", "card1", "0000:65:00.0"));
  backends.push_back(std::make_unique<PciBackend>("nvml", "cuda:0", "00000000:B3:00.0"));
  backends.push_back(std::make_unique<PciBackend>("other", "cuda-again:0", "0000:b3:00.0"));
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
  struct Failing final : Backend {
    std::shared_ptr<std::atomic<int>> failing_reads, healthy_reads;
    Failing(std::shared_ptr<std::atomic<int>> f, std::shared_ptr<std::atomic<int>> h)
        : failing_reads(std::move(f)), healthy_reads(std::move(h)) {}
    std::string_view name() const noexcept override { return "flaky"; }
    Discovery discover(const std::string& host) override {
      DeviceInfo bad, good;
      bad.key = {host, "bad:0"};
      good.key = {host, "good:0"};
      bad.memory_total_bytes = good.memory_total_bytes = 1;
      return Discovery{{bad, good}, {}};
    }
    Sample sample(const std::string& id) override {
      if (id == "bad:0") {
        ++*failing_reads;
        throw Error("driver error 999");
      }
      ++*healthy_reads;
      Sample s;
      s.timestamp = now_timestamp();
      s.memory_total_bytes = 1;
      return s;
    }
    FieldAvailability available_fields(const std::string&) const override { return {}; }
    void shutdown() override {}
  };
  auto failing = std::make_shared<std::atomic<int>>(0), healthy = std::make_shared<std::atomic<int>>(0);
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<Failing>(failing, healthy));
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
  struct AlwaysFailing final : Backend {
    std::atomic<int> reads{0};
    std::string_view name() const noexcept override { return "broken"; }
    Discovery discover(const std::string& host) override {
      DeviceInfo info;
      info.key = {host, "x:0"};
      info.memory_total_bytes = 1;
      return Discovery{{info}, {}};
    }
    Sample sample(const std::string&) override {
      ++reads;
      throw Error("no");
    }
    FieldAvailability available_fields(const std::string&) const override { return {}; }
    void shutdown() override {}
  };
  auto backend = std::make_unique<AlwaysFailing>();
  AlwaysFailing* probe = backend.get();
  std::vector<BackendPtr> backends;
  backends.push_back(std::move(backend));
  ManagerConfig config;
  config.host = "h";
  Manager manager(config, std::move(backends));
  manager.start(false);
  for (int i = 0; i < 4; ++i) manager.sample_now();
  EXPECT_EQ(probe->reads.load(), 5);  // start's pass + 4 explicit ones
  manager.shutdown();
}

}  // namespace
}  // namespace gpucluster

namespace gpucluster {
namespace {

// Discovery under a deadline: every backend's discover() runs on its own
// worker thread, all at once; start() waits at most discovery_timeout.

// A backend whose discover() waits on a gate (a vendor library's init that
// hangs), then finds one device; counts its shutdowns.
class GatedDiscovery final : public Backend {
 public:
  struct Probe {
    Gate gate;
    std::atomic<int> entered{0};  // discover() calls begun
    std::atomic<int> shutdowns{0};
    std::atomic<bool> saw_other{false};  // another backend was discovering at the same time
    std::atomic<int> finished{0};        // discover() calls that returned
  };
  GatedDiscovery(std::string name, std::string device, std::shared_ptr<Probe> probe,
                 std::shared_ptr<Probe> other = nullptr, std::string pci = {})
      : name_(std::move(name)),
        device_(std::move(device)),
        probe_(std::move(probe)),
        other_(std::move(other)),
        pci_(std::move(pci)) {}
  std::string_view name() const noexcept override { return name_; }
  Discovery discover(const std::string& host) override {
    ++probe_->entered;
    if (other_) {  // bounded: proves overlap without hanging a sequential manager forever
      const auto deadline = std::chrono::steady_clock::now() + 5s;
      while (other_->entered.load() == 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
      }
      probe_->saw_other = other_->entered.load() > 0;
    }
    probe_->gate.pass();
    DeviceInfo info;
    info.key = {host, device_};
    info.memory_total_bytes = 1000;
    info.backend = name_;
    if (!pci_.empty()) info.pci_bus_id = pci_;
    ++probe_->finished;
    return Discovery{{info}, {}};
  }
  Sample sample(const std::string&) override {
    Sample s;
    s.timestamp = now_timestamp();
    s.memory_total_bytes = 1000;
    return s;
  }
  FieldAvailability available_fields(const std::string&) const override { return {}; }
  void shutdown() override { ++probe_->shutdowns; }

 private:
  std::string name_, device_;
  std::shared_ptr<Probe> probe_, other_;
  std::string pci_;  // empty: none
};

// A backend whose source cannot be used (as nvml without libnvidia-ml.so.1).
class UnusableBackend final : public Backend {
 public:
  explicit UnusableBackend(std::shared_ptr<std::atomic<int>> shutdowns = std::make_shared<std::atomic<int>>(0))
      : shutdowns_(std::move(shutdowns)) {}
  std::string_view name() const noexcept override { return "vendor"; }
  Discovery discover(const std::string&) override {
    return Discovery{{}, "no devices: cannot load libvendor.so.1; set VENDOR_LIBRARY to its path", true};
  }
  Sample sample(const std::string& id) override { throw UnknownDeviceError(id); }
  FieldAvailability available_fields(const std::string&) const override { return {}; }
  void shutdown() override { ++*shutdowns_; }

 private:
  std::shared_ptr<std::atomic<int>> shutdowns_;
};

ManagerConfig discovery_config(std::chrono::nanoseconds discovery_timeout) {
  ManagerConfig config;
  config.host = "h";
  config.sample_interval = 0ns;
  config.discovery_timeout = discovery_timeout;
  return config;
}

TEST(DiscoveryDeadline, AHangingDiscoverFailsOnlyItsBackendAndStartReturns) {
  auto stuck = std::make_shared<GatedDiscovery::Probe>();
  auto good = std::make_shared<GatedDiscovery::Probe>();
  stuck->gate.set(false);  // its discover() hangs
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<GatedDiscovery>("stuck", "cuda:0", stuck));
  backends.push_back(std::make_unique<GatedDiscovery>("good", "cuda:1", good));
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
  EXPECT_TRUE(eventually([&] { return stuck->shutdowns.load() == 1; }));
  manager->sample_now();
  EXPECT_EQ(manager->devices().size(), 1U);
  manager->shutdown();
  EXPECT_EQ(good->shutdowns.load(), 1);
  EXPECT_EQ(stuck->shutdowns.load(), 1) << "a late backend must be shut down exactly once";
}

TEST(DiscoveryDeadline, ALateBackendOutlivesItsManagerSafely) {
  auto stuck = std::make_shared<GatedDiscovery::Probe>();
  stuck->gate.set(false);
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<GatedDiscovery>("stuck", "cuda:0", stuck));
  auto manager = std::make_unique<Manager>(discovery_config(50ms), std::move(backends));
  manager->start();
  manager.reset();  // the hung discover() is still running
  EXPECT_EQ(stuck->shutdowns.load(), 0) << "shut down while discover() was still running";
  stuck->gate.set(true);
  EXPECT_TRUE(eventually([&] { return stuck->shutdowns.load() == 1; }));
}

TEST(DiscoveryDeadline, BackendsDiscoverInParallel) {
  auto first = std::make_shared<GatedDiscovery::Probe>();
  auto second = std::make_shared<GatedDiscovery::Probe>();
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<GatedDiscovery>("first", "cuda:0", first, second));
  backends.push_back(std::make_unique<GatedDiscovery>("second", "cuda:1", second, first));
  Manager manager(discovery_config(30s), std::move(backends));
  manager.start(false);
  EXPECT_TRUE(first->saw_other.load()) << "discover() calls ran one after the other";
  EXPECT_TRUE(second->saw_other.load()) << "discover() calls ran one after the other";
  EXPECT_EQ(manager.devices().size(), 2U);
}

TEST(DiscoveryDeadline, DuplicatesAreKeptByTheEarlierBackendWhateverFinishesFirst) {
  // The richer backend (listed first) finishes last; it still keeps the GPU.
  auto rich = std::make_shared<GatedDiscovery::Probe>();
  auto poor = std::make_shared<GatedDiscovery::Probe>();
  rich->gate.set(false);
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<GatedDiscovery>("rocm", "rocm:0", rich, nullptr, "0000:65:00.0"));
  backends.push_back(std::make_unique<GatedDiscovery>("sysfs", "card0", poor, nullptr, "0000:65:00.0"));
  Manager manager(discovery_config(30s), std::move(backends));
  std::thread opener([&] {
    eventually([&] { return poor->finished.load() == 1; });  // the poorer backend finishes first
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
  struct Probe final : Backend {
    std::thread::id* seen;
    explicit Probe(std::thread::id* out) : seen(out) {}
    std::string_view name() const noexcept override { return "probe"; }
    Discovery discover(const std::string&) override {
      *seen = std::this_thread::get_id();
      return {};
    }
    Sample sample(const std::string& id) override { throw UnknownDeviceError(id); }
    FieldAvailability available_fields(const std::string&) const override { return {}; }
    void shutdown() override {}
  };
  std::thread::id seen;
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<Probe>(&seen));
  Manager manager(discovery_config(30s), std::move(backends));
  manager.start(false);
  EXPECT_NE(seen, std::this_thread::get_id());
  EXPECT_NE(seen, std::thread::id{});
}

TEST(DiscoveryDeadline, ADeviceThatCannotBeRegisteredFailsOnlyItsBackend) {
  struct Broken final : Backend {
    std::string_view name() const noexcept override { return "broken"; }
    Discovery discover(const std::string& host) override {
      DeviceInfo info;
      info.key = {host, ""};  // fails validation: a device needs an id
      info.memory_total_bytes = 1;
      return Discovery{{info}, {}};
    }
    Sample sample(const std::string& id) override { throw UnknownDeviceError(id); }
    FieldAvailability available_fields(const std::string&) const override { return {}; }
    void shutdown() override {}
  };
  auto good = std::make_shared<GatedDiscovery::Probe>();
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<Broken>());
  backends.push_back(std::make_unique<GatedDiscovery>("good", "cuda:1", good));
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
  struct StuckShutdown final : Backend {
    std::shared_ptr<Gate> gate;
    std::shared_ptr<std::atomic<int>> shutdowns;
    StuckShutdown(std::shared_ptr<Gate> g, std::shared_ptr<std::atomic<int>> s)
        : gate(std::move(g)), shutdowns(std::move(s)) {}
    std::string_view name() const noexcept override { return "stuck-shutdown"; }
    Discovery discover(const std::string&) override { return {}; }
    Sample sample(const std::string& id) override { throw UnknownDeviceError(id); }
    FieldAvailability available_fields(const std::string&) const override { return {}; }
    void shutdown() override {
      gate->pass();
      ++*shutdowns;
    }
  };
  auto gate = std::make_shared<Gate>();
  auto stuck_shutdowns = std::make_shared<std::atomic<int>>(0);
  auto good = std::make_shared<GatedDiscovery::Probe>();
  gate->set(false);
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<StuckShutdown>(gate, stuck_shutdowns));
  backends.push_back(std::make_unique<GatedDiscovery>("good", "cuda:1", good));
  ManagerConfig config = discovery_config(30s);
  config.backend_timeout = 100ms;
  auto manager = std::make_unique<Manager>(config, std::move(backends));
  manager->start(false);
  auto stopping = std::async(std::launch::async, [&] { manager->shutdown(); });
  const bool returned = stopping.wait_for(10s) == std::future_status::ready;
  EXPECT_TRUE(returned) << "shutdown() waited for a backend's hung shutdown call";
  EXPECT_EQ(good->shutdowns.load(), 1);
  EXPECT_EQ(gate->waiting.load(), 1);
  gate->set(true);  // the call returns; the worker ends by itself
  stopping.wait();
  EXPECT_TRUE(eventually([&] { return stuck_shutdowns->load() == 1; }));
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
  auto vendor_shutdowns = std::make_shared<std::atomic<int>>(0);
  auto good = std::make_shared<GatedDiscovery::Probe>();
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<UnusableBackend>(vendor_shutdowns));
  backends.push_back(std::make_unique<GatedDiscovery>("good", "cuda:1", good));
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
  EXPECT_EQ(vendor_shutdowns->load(), 1);
  EXPECT_EQ(good->shutdowns.load(), 1);
  EXPECT_THROW(manager.devices(), ShutDownError);
}

TEST(RequiredBackends, ARequiredBackendThatMissesTheDeadlineMakesStartThrow) {
  auto stuck = std::make_shared<GatedDiscovery::Probe>();
  stuck->gate.set(false);
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<GatedDiscovery>("stuck", "cuda:0", stuck));
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
  EXPECT_TRUE(eventually([&] { return stuck->shutdowns.load() == 1; }));
}

TEST(RequiredBackends, ZeroDevicesIsNotAFailureAndUnrequiredUnavailableIsSkipped) {
  struct Empty final : Backend {
    std::string_view name() const noexcept override { return "empty"; }
    Discovery discover(const std::string&) override { return Discovery{{}, "no devices: 0 GPUs", false}; }
    Sample sample(const std::string& id) override { throw UnknownDeviceError(id); }
    FieldAvailability available_fields(const std::string&) const override { return {}; }
    void shutdown() override {}
  };
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<Empty>());
  backends.push_back(std::make_unique<UnusableBackend>());
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
  backends.push_back(std::make_unique<UnusableBackend>());
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
