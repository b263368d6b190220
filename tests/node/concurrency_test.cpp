// Many threads on one Manager at once: recording, reading, registering and
// shutting down. Each test is bounded (a few thousand operations per thread).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <latch>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "gpucluster/model/errors.hpp"
#include "gpucluster/node/manager.hpp"
#include "support/fake_backend.hpp"

namespace gpucluster {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kMaxSamples = 32;
constexpr std::int64_t kBaseNs = 1'000'000'000'000'000'000;  // ~2001-09-09
constexpr std::int64_t kTotalBytes = 1'000'000;

ManagerConfig concurrent_config() {
  ManagerConfig config;
  config.host = "h";
  config.sample_interval = 0ns;
  config.history.max_samples = kMaxSamples;
  // Every sample is at or after kBaseNs, so nothing is ever stale.
  config.clock = [] { return Timestamp{std::chrono::nanoseconds{kBaseNs}}; };
  return config;
}

DeviceInfo make_info(const std::string& host, const std::string& id) {
  DeviceInfo info;
  info.key = DeviceKey{host, id};
  info.name = "GPU " + id;
  info.kind = DeviceKind::cuda;
  info.memory_total_bytes = kTotalBytes;
  info.compute_units = 64;
  return info;
}

Sample make_sample(std::int64_t sequence, bool valid = true) {
  Sample s;
  s.timestamp = Timestamp{std::chrono::nanoseconds{kBaseNs + sequence}};
  s.memory_used_bytes = (sequence * 7919) % kTotalBytes;
  s.memory_total_bytes = kTotalBytes;
  s.utilization_percent = valid ? static_cast<float>(sequence % 101) : std::numeric_limits<float>::quiet_NaN();
  s.temperature_celsius = 40.0f + static_cast<float>(sequence % 50);
  return s;
}

// Collects failures from worker threads; gtest assertions stay on the main thread.
class Failures {
 public:
  void add(std::string message) {
    std::lock_guard lock(mutex_);
    if (messages_.size() < 20) messages_.push_back(std::move(message));
    ++count_;
  }
  std::size_t count() const {
    std::lock_guard lock(mutex_);
    return count_;
  }
  std::string summary() const {
    std::lock_guard lock(mutex_);
    std::string text;
    for (const std::string& m : messages_) text += m + "\n";
    return text;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> messages_;
  std::size_t count_ = 0;
};

// Checks one history read: bounded and chronological.
void check_history(const std::vector<Sample>& history, Failures& failures, const std::string& where) {
  if (history.size() > kMaxSamples) failures.add(where + ": history larger than max_samples");
  for (std::size_t i = 1; i < history.size(); ++i) {
    if (history[i].timestamp < history[i - 1].timestamp) {
      failures.add(where + ": history not chronological");
      return;
    }
  }
}

template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds timeout = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

std::string recorder_id(int i) {
  return "rec:" + std::to_string(i);
}

// Phase 1 checks exact counts while everything runs; phase 2 shuts down under load.
TEST(ManagerConcurrency, RecordReadRegisterThenShutdownUnderLoad) {
  constexpr int kRecorders = 4;
  constexpr int kRecordsPerThread = 3000;
  constexpr int kInvalidEvery = 10;  // every 10th sample has a NaN utilization
  constexpr int kReaderLoops = 600;
  constexpr int kRegistrarLoops = 1000;

  Manager manager(concurrent_config());
  for (int i = 0; i < kRecorders; ++i) manager.register_device(make_info("h", recorder_id(i)));

  Failures failures;
  std::vector<std::int64_t> successes(kRecorders, 0);
  std::vector<std::int64_t> last_success(kRecorders, -1);
  std::atomic<std::uint64_t> invalid_sent{0};
  std::atomic<std::uint64_t> unknown_seen{0};
  std::latch go(8);
  std::vector<std::thread> threads;

  // Phase 1: 4 recorders, 2 readers, 1 registrar, 1 stats reader.
  for (int r = 0; r < kRecorders; ++r) {
    threads.emplace_back([&, r] {
      go.arrive_and_wait();
      const DeviceKey key{"h", recorder_id(r)};
      for (int i = 1; i <= kRecordsPerThread; ++i) {
        const bool valid = i % kInvalidEvery != 0;
        try {
          manager.record(key, make_sample(i, valid));
          if (!valid) failures.add("invalid sample accepted");
          ++successes[static_cast<std::size_t>(r)];
          last_success[static_cast<std::size_t>(r)] = i;
        } catch (const ValidationError& e) {
          if (valid) failures.add(std::string("valid sample rejected: ") + e.what());
          if (e.reason() != RejectReason::not_finite) failures.add("wrong reason: " + std::string(e.what()));
          invalid_sent.fetch_add(1);
        } catch (const std::exception& e) {
          failures.add(std::string("recorder: unexpected exception: ") + e.what());
        }
      }
    });
  }
  for (int reader = 0; reader < 2; ++reader) {
    threads.emplace_back([&, reader] {
      go.arrive_and_wait();
      for (int i = 0; i < kReaderLoops; ++i) {
        try {
          const std::vector<DeviceState> devices = manager.devices();
          if (devices.size() < static_cast<std::size_t>(kRecorders)) failures.add("recorder device missing");
          if (!std::is_sorted(devices.begin(), devices.end(),
                              [](const DeviceState& a, const DeviceState& b) { return a.info->key < b.info->key; })) {
            failures.add("devices() not sorted by key");
          }
          const int target = (i + reader) % kRecorders;
          check_history(manager.history(DeviceKey{"h", recorder_id(target)}), failures, "reader");
          check_history(manager.history(DeviceKey{"h", recorder_id(target)}, 5), failures, "reader(limit)");
          const ClusterAggregate agg = manager.aggregate();
          if (agg.devices_with_samples > agg.device_count) failures.add("aggregate counts inconsistent");
          if (agg.used_memory_bytes > agg.total_memory_bytes) failures.add("aggregate used > total");
          const Selection selection = manager.select();
          if (selection.device && selection.device->local_id.rfind("rec:", 0) != 0 &&
              selection.device->local_id.rfind("tmp:", 0) != 0) {
            failures.add("selected an unknown device");
          }
          const std::vector<RankedDevice> ranked = manager.rank();
          if (ranked.size() < static_cast<std::size_t>(kRecorders)) failures.add("rank lost a device");
        } catch (const std::exception& e) {
          failures.add(std::string("reader: unexpected exception: ") + e.what());
        }
      }
    });
  }
  threads.emplace_back([&] {  // registrar: temporary devices come and go
    go.arrive_and_wait();
    for (int i = 0; i < kRegistrarLoops; ++i) {
      const DeviceKey key{"h", "tmp:" + std::to_string(i % 3)};
      try {
        manager.register_device(make_info("h", key.local_id));
        manager.record(key, make_sample(kRecordsPerThread + i));
        if (!manager.unregister_device(key)) failures.add("unregister of a registered device returned false");
        try {
          manager.record(key, make_sample(kRecordsPerThread + i + 1));
          failures.add("record after unregister succeeded");
        } catch (const ValidationError& e) {
          if (e.reason() != RejectReason::unknown_device) failures.add("wrong reason after unregister");
          unknown_seen.fetch_add(1);
        }
        try {
          manager.history(key);
          failures.add("history after unregister succeeded");
        } catch (const UnknownDeviceError&) {
        }
      } catch (const std::exception& e) {
        failures.add(std::string("registrar: unexpected exception: ") + e.what());
      }
    }
  });
  threads.emplace_back([&] {  // stats reader
    go.arrive_and_wait();
    for (int i = 0; i < kReaderLoops; ++i) {
      try {
        const DeviceKey key{"h", recorder_id(i % kRecorders)};
        const WindowStats stats = manager.window_stats(key);
        if (stats.samples > kMaxSamples) failures.add("window larger than max_samples");
        if (stats.first && stats.last && *stats.first > *stats.last) failures.add("window first > last");
        const DeviceState state = manager.device(key);
        if (state.info->key != key) failures.add("device() returned another device");
        manager.set_availability(key, true);
      } catch (const std::exception& e) {
        failures.add(std::string("stats: unexpected exception: ") + e.what());
      }
    }
  });
  for (std::thread& t : threads) t.join();
  threads.clear();

  ASSERT_EQ(failures.count(), 0u) << failures.summary();
  const std::uint64_t expected_invalid = kRecorders * (kRecordsPerThread / kInvalidEvery);
  EXPECT_EQ(invalid_sent.load(), expected_invalid);
  for (int r = 0; r < kRecorders; ++r) {
    const auto index = static_cast<std::size_t>(r);
    EXPECT_EQ(successes[index], kRecordsPerThread - kRecordsPerThread / kInvalidEvery);
    const std::vector<Sample> history = manager.history(DeviceKey{"h", recorder_id(r)});
    EXPECT_EQ(history.size(), std::min<std::size_t>(static_cast<std::size_t>(successes[index]), kMaxSamples));
    ASSERT_FALSE(history.empty());
    EXPECT_EQ(history.back().timestamp, make_sample(last_success[index]).timestamp);
  }
  const auto rejected = manager.rejected_samples();
  EXPECT_EQ(rejected[static_cast<std::size_t>(RejectReason::not_finite)], expected_invalid);
  EXPECT_EQ(rejected[static_cast<std::size_t>(RejectReason::unknown_device)], unknown_seen.load());
  EXPECT_EQ(unknown_seen.load(), static_cast<std::uint64_t>(kRegistrarLoops));
  EXPECT_EQ(rejected[static_cast<std::size_t>(RejectReason::out_of_order)], 0u);
  EXPECT_EQ(manager.devices().size(), static_cast<std::size_t>(kRecorders));

  // Phase 2: the same mix runs until shutdown stops it.
  std::atomic<bool> shutdown_returned{false};
  std::atomic<std::uint64_t> after_shutdown_successes{0};
  std::vector<std::atomic<std::int64_t>> phase2_records(kRecorders);
  std::atomic<int> ended_with_shutdown_error{0};
  std::latch go2(8);
  for (int r = 0; r < kRecorders; ++r) {
    threads.emplace_back([&, r] {
      go2.arrive_and_wait();
      const DeviceKey key{"h", recorder_id(r)};
      for (std::int64_t i = kRecordsPerThread + 1;; ++i) {
        const bool already_shut_down = shutdown_returned.load();
        try {
          manager.record(key, make_sample(i));
          phase2_records[static_cast<std::size_t>(r)].fetch_add(1);
          if (already_shut_down) after_shutdown_successes.fetch_add(1);
        } catch (const ShutDownError&) {
          ended_with_shutdown_error.fetch_add(1);
          return;
        } catch (const ValidationError& e) {
          if (e.reason() != RejectReason::unknown_device) failures.add(std::string("recorder 2: ") + e.what());
        } catch (const std::exception& e) {
          failures.add(std::string("recorder 2: unexpected exception: ") + e.what());
          return;
        }
      }
    });
  }
  for (int reader = 0; reader < 2; ++reader) {
    threads.emplace_back([&, reader] {
      go2.arrive_and_wait();
      for (int i = 0;; ++i) {
        try {
          check_history(manager.history(DeviceKey{"h", recorder_id((i + reader) % kRecorders)}), failures, "reader 2");
          manager.aggregate();
          manager.select();
          manager.rank();
          manager.devices();
        } catch (const ShutDownError&) {
          ended_with_shutdown_error.fetch_add(1);
          return;
        } catch (const std::exception& e) {
          failures.add(std::string("reader 2: unexpected exception: ") + e.what());
          return;
        }
      }
    });
  }
  threads.emplace_back([&] {  // registrar
    go2.arrive_and_wait();
    for (int i = 0;; ++i) {
      const DeviceKey key{"h", "tmp:" + std::to_string(i % 3)};
      try {
        manager.register_device(make_info("h", key.local_id));
        manager.unregister_device(key);
      } catch (const ShutDownError&) {
        ended_with_shutdown_error.fetch_add(1);
        return;
      } catch (const std::exception& e) {
        failures.add(std::string("registrar 2: unexpected exception: ") + e.what());
        return;
      }
    }
  });
  threads.emplace_back([&] {  // closer
    go2.arrive_and_wait();
    const bool loaded = wait_until([&] {
      return std::all_of(phase2_records.begin(), phase2_records.end(),
                         [](const std::atomic<std::int64_t>& n) { return n.load() >= 100; });
    });
    if (!loaded) failures.add("recorders made no progress before shutdown");
    manager.shutdown();
    shutdown_returned.store(true);
  });
  for (std::thread& t : threads) t.join();

  EXPECT_EQ(failures.count(), 0u) << failures.summary();
  EXPECT_EQ(after_shutdown_successes.load(), 0u) << "a sample was recorded after shutdown returned";
  EXPECT_EQ(ended_with_shutdown_error.load(), kRecorders + 2 + 1);
  EXPECT_EQ(manager.state(), ManagerState::stopped);
  const DeviceKey key{"h", recorder_id(0)};
  EXPECT_THROW(manager.record(key, make_sample(std::numeric_limits<std::int32_t>::max())), ShutDownError);
  EXPECT_THROW(manager.history(key), ShutDownError);
  EXPECT_THROW(manager.devices(), ShutDownError);
  EXPECT_THROW(manager.aggregate(), ShutDownError);
  EXPECT_THROW(manager.select(), ShutDownError);
  EXPECT_THROW(manager.register_device(make_info("h", "late")), ShutDownError);
}

// Recorders share one device: every accepted sample is newer than or equal to
// the one before it, and every rejection is out_of_order.
TEST(ManagerConcurrency, RecordersOnOneDeviceNeverStoreOutOfOrder) {
  constexpr int kThreads = 8;
  constexpr int kRecords = 2000;
  Manager manager(concurrent_config());
  const DeviceKey key{"h", "shared"};
  manager.register_device(make_info("h", "shared"));
  std::atomic<std::int64_t> sequence{0};
  std::atomic<std::uint64_t> accepted{0}, out_of_order{0};
  Failures failures;
  std::latch go(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      go.arrive_and_wait();
      for (int i = 0; i < kRecords; ++i) {
        try {
          manager.record(key, make_sample(sequence.fetch_add(1)));
          accepted.fetch_add(1);
        } catch (const ValidationError& e) {
          if (e.reason() == RejectReason::out_of_order) {
            out_of_order.fetch_add(1);
          } else {
            failures.add(e.what());
          }
        }
        if (i % 64 == t) check_history(manager.history(key), failures, "shared");
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(failures.count(), 0u) << failures.summary();
  EXPECT_EQ(accepted.load() + out_of_order.load(), static_cast<std::uint64_t>(kThreads * kRecords));
  EXPECT_EQ(manager.rejected_samples()[static_cast<std::size_t>(RejectReason::out_of_order)], out_of_order.load());
  const std::vector<Sample> history = manager.history(key);
  EXPECT_EQ(history.size(), std::min<std::size_t>(accepted.load(), kMaxSamples));
  check_history(history, failures, "final");
  EXPECT_EQ(failures.count(), 0u) << failures.summary();
}

// --- a backend for the sampling tests ---

// Counts the backend's calls (FakeBackend::Counters); with fail_odd_calls, every other read fails.
struct SamplerProbe : testing::FakeBackend::Counters {
  std::atomic<bool> fail_odd_calls{false};
};

// One backend with `devices` devices whose reads return samples of a rising sequence.
std::vector<BackendPtr> counting_backend(int devices, std::shared_ptr<SamplerProbe> probe) {
  testing::FakeBackend::Config config;
  config.name = "counting";
  for (int i = 0; i < devices; ++i) config.devices.push_back(make_info("", "sim:" + std::to_string(i)));
  config.fields = FieldAvailability{Quantity::utilization_percent, Quantity::temperature_celsius};
  config.on_sample = [probe, calls = std::make_shared<std::atomic<int>>(0),
                      sequence = std::make_shared<std::atomic<std::int64_t>>(0)](const std::string& /*local_id*/,
                                                                                 Sample /*fixed*/) {
    const int call = calls->fetch_add(1);
    if (probe->fail_odd_calls.load() && call % 2 == 1) throw Error("transient read failure");
    return make_sample(sequence->fetch_add(1) + 1);
  };
  std::vector<BackendPtr> backends;
  backends.push_back(std::make_unique<testing::FakeBackend>(std::move(config), std::move(probe)));
  return backends;
}

// sample_now must absorb a device being unregistered at any point of its pass:
// it is what the background sampler runs, and an exception escaping it there
// would terminate the process. With failing reads, the pass takes the "mark
// unavailable" path; with good reads, the "record, then mark available" path.
void sample_while_unregistering(bool failing_reads) {
  constexpr int kDevices = 4;
  constexpr int kPasses = 3000;
  auto probe = std::make_shared<SamplerProbe>();
  probe->fail_odd_calls = failing_reads;
  Manager manager(concurrent_config(), counting_backend(kDevices, probe));
  manager.start(false);
  std::vector<DeviceInfo> infos;
  for (const DeviceState& s : manager.devices()) infos.push_back(*s.info);
  ASSERT_EQ(infos.size(), static_cast<std::size_t>(kDevices));

  Failures failures;
  std::atomic<bool> done{false};
  std::latch go(2);
  std::thread sampler([&] {
    go.arrive_and_wait();
    for (int i = 0; i < kPasses; ++i) {
      try {
        manager.sample_now();
      } catch (const std::exception& e) {
        failures.add(std::string("sample_now threw: ") + e.what());
      }
    }
    done = true;
  });
  std::thread toggler([&] {
    go.arrive_and_wait();
    for (std::size_t i = 0; !done.load(); ++i) {
      const DeviceInfo& info = infos[i % infos.size()];
      try {
        manager.unregister_device(info.key);
        manager.register_device(info);
      } catch (const std::exception& e) {
        failures.add(std::string("toggler: ") + e.what());
      }
    }
  });
  sampler.join();
  toggler.join();
  EXPECT_EQ(failures.count(), 0u) << failures.summary();
  EXPECT_EQ(manager.devices().size(), static_cast<std::size_t>(kDevices));
  manager.shutdown();
  EXPECT_EQ(probe->shutdown_calls.load(), 1);
}

TEST(ManagerConcurrency, FailingSamplesWhileDevicesAreUnregisteredNeverThrow) {
  sample_while_unregistering(true);
}

TEST(ManagerConcurrency, GoodSamplesWhileDevicesAreUnregisteredNeverThrow) {
  sample_while_unregistering(false);
}

TEST(ManagerConcurrency, BackgroundSamplerWithReadersThenShutdown) {
  constexpr int kDevices = 4;
  auto probe = std::make_shared<SamplerProbe>();
  ManagerConfig config = concurrent_config();
  config.sample_interval = 1ms;
  Manager manager(config, counting_backend(kDevices, probe));
  manager.start();

  Failures failures;
  std::atomic<int> stopped_readers{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 4; ++r) {
    readers.emplace_back([&, r] {
      for (int i = 0;; ++i) {
        try {
          const DeviceKey key{"h", "sim:" + std::to_string((i + r) % kDevices)};
          check_history(manager.history(key), failures, "sampled");
          manager.select();
          manager.aggregate();
          if (i % 16 == 0) manager.sample_now();  // callers may sample alongside the sampler
        } catch (const ShutDownError&) {
          stopped_readers.fetch_add(1);
          return;
        } catch (const std::exception& e) {
          failures.add(std::string("reader: ") + e.what());
          return;
        }
      }
    });
  }
  EXPECT_TRUE(wait_until([&] { return probe->sample_calls.load() >= 10 * kDevices; }));
  manager.shutdown();
  const int calls_at_shutdown = probe->sample_calls.load();
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(failures.count(), 0u) << failures.summary();
  EXPECT_EQ(stopped_readers.load(), 4);
  EXPECT_EQ(probe->shutdown_calls.load(), 1);
  std::this_thread::sleep_for(10ms);
  EXPECT_EQ(probe->sample_calls.load(), calls_at_shutdown) << "sampling continued after shutdown returned";
}

TEST(ManagerConcurrency, ManyThreadsShutDownAtOnce) {
  constexpr int kThreads = 8;
  auto probe = std::make_shared<SamplerProbe>();
  ManagerConfig config = concurrent_config();
  config.sample_interval = 1ms;
  Manager manager(config, counting_backend(2, probe));
  manager.start();
  std::latch go(kThreads);
  std::atomic<int> returned_stopped{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      go.arrive_and_wait();
      manager.shutdown();
      if (manager.state() == ManagerState::stopped) returned_stopped.fetch_add(1);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(returned_stopped.load(), kThreads) << "a shutdown call returned before the manager stopped";
  EXPECT_EQ(probe->shutdown_calls.load(), 1);
}

}  // namespace
}  // namespace gpucluster
