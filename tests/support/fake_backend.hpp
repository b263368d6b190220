#pragma once
// One configurable Backend for the tests of the manager, its sampler and its
// workers: fixed devices and a fixed sample, hooks a test sets to make a call
// block, fail or answer otherwise, and counters of the calls that the test can
// read after the manager has destroyed the backend.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gpucluster/backends/backend.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/time.hpp"

namespace gpucluster::testing {

class FakeBackend final : public gpucluster::Backend {
 public:
  // What happened to the backend. Shared with the test (the manager owns and
  // destroys the backend); a test may derive its own probe from it to keep its
  // flags next to the counts. Each call is counted when it begins and, if it
  // does not throw, again when it returns.
  struct Counters {
    std::atomic<int> discover_calls{0};
    std::atomic<int> discover_returned{0};
    std::atomic<int> sample_calls{0};
    std::atomic<int> sample_returned{0};
    std::atomic<int> shutdown_calls{0};
    std::atomic<int> shutdown_returned{0};
    std::atomic<int> destroyed{0};
  };

  // Set before the backend is handed to a manager and not changed after; the
  // hooks run on the manager's threads, so what they share with the test must
  // be thread-safe (atomics, a gate).
  struct Config {
    std::string name = "fake";
    // discover(): these devices, each with the host asked for and, when it has
    // none, this backend's name; and this note and unavailable flag.
    std::vector<DeviceInfo> devices;
    std::string note;
    bool unavailable = false;
    // sample() of a listed device (another id: UnknownDeviceError, unless
    // on_discover is set, when any id is answered): this sample.
    Sample sample;
    FieldAvailability fields;

    // Hooks. on_discover and on_sample get the fixed answer and return the
    // answer (it, changed, or another); they may block or throw instead (a
    // hung or failing call). A sample returned without a timestamp gets a
    // fresh one, strictly increasing per backend.
    std::function<Discovery(const std::string& host, Discovery fixed)> on_discover;
    std::function<Sample(const std::string& local_id, Sample fixed)> on_sample;
    std::function<FieldAvailability(const std::string& local_id)> on_available_fields;
    std::function<void()> on_shutdown;
    // implausible_readings(): zeros unless set.
    std::function<ImplausibleCounts()> on_implausible_readings;
  };

  explicit FakeBackend(Config config, std::shared_ptr<Counters> counters = std::make_shared<Counters>())
      : config_(std::move(config)), counters_(std::move(counters)) {}
  ~FakeBackend() override { counters_->destroyed.fetch_add(1); }
  FakeBackend(const FakeBackend&) = delete;
  FakeBackend& operator=(const FakeBackend&) = delete;

  // Every call forwarded to `inner`, and counted.
  static std::unique_ptr<FakeBackend> wrapping(BackendPtr inner,
                                               std::shared_ptr<Counters> counters = std::make_shared<Counters>()) {
    std::shared_ptr<Backend> shared = std::move(inner);
    Config config;
    config.name = std::string(shared->name());
    config.on_discover = [shared](const std::string& host, Discovery) { return shared->discover(host); };
    config.on_sample = [shared](const std::string& local_id, Sample) { return shared->sample(local_id); };
    config.on_available_fields = [shared](const std::string& local_id) { return shared->available_fields(local_id); };
    config.on_shutdown = [shared] { shared->shutdown(); };
    config.on_implausible_readings = [shared] { return shared->implausible_readings(); };
    return std::make_unique<FakeBackend>(std::move(config), std::move(counters));
  }

  const std::shared_ptr<Counters>& counters() const noexcept { return counters_; }

  std::string_view name() const noexcept override { return config_.name; }

  Discovery discover(const std::string& host) override {
    counters_->discover_calls.fetch_add(1);
    Discovery discovery;
    discovery.devices = config_.devices;
    for (DeviceInfo& info : discovery.devices) {
      info.key.host = host;
      if (info.backend.empty()) info.backend = config_.name;
    }
    discovery.note = config_.note;
    discovery.unavailable = config_.unavailable;
    if (config_.on_discover) discovery = config_.on_discover(host, std::move(discovery));
    counters_->discover_returned.fetch_add(1);
    return discovery;
  }

  Sample sample(const std::string& local_id) override {
    counters_->sample_calls.fetch_add(1);
    if (!config_.on_discover && !lists(local_id)) throw UnknownDeviceError(local_id);
    Sample sample = config_.sample;
    if (config_.on_sample) sample = config_.on_sample(local_id, std::move(sample));
    if (sample.timestamp == Timestamp{}) sample.timestamp = next_timestamp();
    counters_->sample_returned.fetch_add(1);
    return sample;
  }

  FieldAvailability available_fields(const std::string& local_id) const override {
    return config_.on_available_fields ? config_.on_available_fields(local_id) : config_.fields;
  }

  ImplausibleCounts implausible_readings() const noexcept override {
    return config_.on_implausible_readings ? config_.on_implausible_readings() : ImplausibleCounts{};
  }

  void shutdown() override {
    counters_->shutdown_calls.fetch_add(1);
    if (config_.on_shutdown) config_.on_shutdown();
    counters_->shutdown_returned.fetch_add(1);
  }

 private:
  bool lists(const std::string& local_id) const {
    for (const DeviceInfo& info : config_.devices) {
      if (info.key.local_id == local_id) return true;
    }
    return false;
  }

  // now, or just after the previous one when the clock has not moved: two
  // reads of one device never share a timestamp (the store keeps one of them).
  Timestamp next_timestamp() {
    std::lock_guard lock(mutex_);
    Timestamp t = now_timestamp();
    if (t <= last_) t = last_ + std::chrono::nanoseconds{1};
    last_ = t;
    return t;
  }

  const Config config_;
  const std::shared_ptr<Counters> counters_;
  std::mutex mutex_;
  Timestamp last_{};
};

// A device for FakeBackend::Config::devices (the host is the one discover() is
// asked for; kind and the rest unknown unless the test sets them).
inline DeviceInfo fake_device(std::string local_id, std::uint64_t memory_total_bytes = 1000) {
  DeviceInfo info;
  info.key.local_id = std::move(local_id);
  info.memory_total_bytes = memory_total_bytes;
  return info;
}

// A sample for FakeBackend::Config::sample (its timestamp is filled in per read).
inline Sample fake_sample(std::int64_t memory_used_bytes, std::int64_t memory_total_bytes) {
  Sample sample;
  sample.memory_used_bytes = memory_used_bytes;
  sample.memory_total_bytes = memory_total_bytes;
  return sample;
}

}  // namespace gpucluster::testing
