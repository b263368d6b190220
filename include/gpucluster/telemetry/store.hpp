#pragma once
// The telemetry store: registered devices, their availability and a bounded
// history of validated samples each (seed fix #1: bounded, O(1) append).
// Thread-safe: a shared lock guards the device map, a mutex per device its
// history, so recording for different devices never contends. Lock order:
// map, then one device; never two devices at once.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "gpucluster/core/device.hpp"
#include "gpucluster/core/sample.hpp"
#include "gpucluster/telemetry/validation.hpp"

namespace gpucluster {

struct HistoryLimits {
  std::size_t max_samples = 100;                    // per device; at least 1
  std::optional<std::chrono::nanoseconds> max_age;  // samples older than newest - max_age are dropped
};

// A device as seen now: static info, availability, latest sample (if any).
struct DeviceState {
  std::shared_ptr<const DeviceInfo> info;
  bool available = true;
  std::string unavailable_reason;
  std::optional<Sample> latest;
};

// min/mean/max/last of one field over a device's history; count = samples that reported it.
struct FieldStats {
  std::size_t count = 0;
  double min = 0, mean = 0, max = 0, last = 0;
};
struct WindowStats {
  std::size_t samples = 0;
  std::optional<Timestamp> first, last;
  FieldStats memory_used_bytes, utilization_percent, power_watts, temperature_celsius, clock_mhz;
};

// The seed's cluster aggregate. Averages are over devices that report the field;
// nullopt when none does (never 0 by default).
struct ClusterAggregate {
  std::size_t device_count = 0;
  std::size_t devices_with_samples = 0;
  std::uint64_t total_memory_bytes = 0;
  std::uint64_t used_memory_bytes = 0;
  std::uint64_t available_memory_bytes = 0;
  std::optional<double> average_utilization_percent;
  std::optional<double> average_temperature_celsius;
  std::optional<double> total_power_watts;
  std::optional<Timestamp> timestamp;  // newest sample in the cluster
};

class TelemetryStore {
 public:
  class DeviceSlot;
  // A registered device's slot; recording through it skips the map lookup.
  using Handle = std::shared_ptr<DeviceSlot>;

  explicit TelemetryStore(HistoryLimits limits = {}, ValidationLimits validation = {});
  ~TelemetryStore();
  TelemetryStore(const TelemetryStore&) = delete;
  TelemetryStore& operator=(const TelemetryStore&) = delete;

  // Registers a device or replaces its static info (history kept). Throws InputError on bad info.
  Handle add_device(DeviceInfo info);
  // Removes the device and its history; handles to it then throw UnknownDeviceError.
  bool remove_device(const DeviceKey& key);
  bool contains(const DeviceKey& key) const;
  Handle handle(const DeviceKey& key) const;  // throws UnknownDeviceError
  std::size_t device_count() const;

  // Validates, then stores. Throws ValidationError (nothing stored); an unregistered
  // device is a ValidationError with reason unknown_device.
  void record(const Handle& handle, const Sample& sample);
  void record(const DeviceKey& key, const Sample& sample);

  // What record_batch did: samples[0, stored) were stored; when stored < size,
  // `rejection` says why samples[stored] was not, and nothing after it was stored.
  struct BatchResult {
    std::size_t stored = 0;
    std::optional<ValidationError> rejection;
  };
  // Records the samples in turn under one lock, each validated as record() would
  // (values, then not older than the device's newest), stopping at the first
  // rejected one. Only the newest samples the history can hold are copied in; the
  // history ends exactly as if each had been recorded in turn. An unregistered or
  // removed device rejects samples[0] (reason unknown_device). Throws nothing else.
  BatchResult record_batch(const Handle& handle, std::span<const Sample> samples);
  BatchResult record_batch(const DeviceKey& key, std::span<const Sample> samples);

  void set_availability(const DeviceKey& key, bool available, std::string reason = {});

  std::optional<DeviceState> state(const DeviceKey& key) const;
  std::vector<DeviceState> states() const;  // sorted by key
  std::optional<Sample> latest(const DeviceKey& key) const;
  // Chronological (oldest first), at most `limit` newest samples. Throws UnknownDeviceError.
  std::vector<Sample> history(const DeviceKey& key, std::size_t limit = SIZE_MAX) const;
  WindowStats window_stats(const DeviceKey& key) const;
  ClusterAggregate aggregate() const;

  // Drops every device and sample (shutdown).
  void clear();
  const HistoryLimits& limits() const noexcept { return limits_; }

 private:
  HistoryLimits limits_;
  ValidationLimits validation_;
  mutable std::shared_mutex map_mutex_;
  std::map<DeviceKey, Handle> devices_;  // ordered: states() comes out sorted by key
};

}  // namespace gpucluster
