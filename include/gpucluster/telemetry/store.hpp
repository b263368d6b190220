#pragma once
// The telemetry store: registered devices, their availability and a bounded
// history of validated samples each (seed fix #1: bounded, O(1) append).
// Thread-safe: a shared lock guards the device map, a mutex per device its
// history, so recording for different devices never contends. Lock order:
// map, then one device; never two devices at once.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gpucluster/model/device.hpp"
#include "gpucluster/model/fields.hpp"
#include "gpucluster/model/sample.hpp"
#include "gpucluster/model/validation.hpp"

namespace gpucluster {

struct HistoryLimits {
  std::size_t max_samples = 100;                    // per device; at least 1
  std::optional<std::chrono::nanoseconds> max_age;  // samples older than newest - max_age are dropped
  // Budget for the histories' worst case: a device is registered only while
  // (devices + 1) * max_samples * sizeof(Sample) stays within it. Histories
  // grow as samples arrive, so this bounds what they can come to hold.
  std::optional<std::uint64_t> max_total_bytes;
};

// Bytes one device's full history takes (its ring of Samples); saturates.
inline std::uint64_t history_bytes_per_device(const HistoryLimits& limits) noexcept {
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  const auto samples = static_cast<std::uint64_t>(limits.max_samples);
  return samples > kMax / sizeof(Sample) ? kMax : samples * sizeof(Sample);
}

// What record() did with a valid sample.
enum class RecordOutcome : std::uint8_t {
  stored,
  duplicate,  // the device already holds this exact sample (a retransmission): acknowledged, not stored again
};

// A device as seen now: static info, availability, latest sample (if any).
struct DeviceState {
  std::shared_ptr<const DeviceInfo> info;
  bool available = true;
  std::string unavailable_reason;
  std::optional<Sample> latest;
};

// A device as seen now, without copies: valid only during a visit_states()
// call (the device's lock is held), for views over thousands of devices.
struct DeviceStateRef {
  const DeviceInfo& info;
  bool available;
  std::string_view unavailable_reason;
  const Sample* latest;  // nullptr without a sample
};

// min/mean/max/last of one field over a device's history; count = samples that reported it.
struct FieldStats {
  std::size_t count = 0;
  double min = 0, mean = 0, max = 0, last = 0;
};
struct WindowStats {
  std::size_t samples = 0;
  std::optional<Timestamp> first, last;
  std::array<FieldStats, kQuantityCount> fields{};  // one per row of the field table
  const FieldStats& operator[](Quantity quantity) const noexcept { return fields[static_cast<std::size_t>(quantity)]; }
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

  // The receiver's clock, for refusing samples from the future; empty: the
  // system clock (coarse: the skew allowed is seconds, not nanoseconds).
  using Clock = std::function<Timestamp()>;

  explicit TelemetryStore(HistoryLimits limits = {}, ValidationLimits validation = {}, Clock clock = {});
  ~TelemetryStore();
  TelemetryStore(const TelemetryStore&) = delete;
  TelemetryStore& operator=(const TelemetryStore&) = delete;

  // Registers a device or replaces its static info (history kept). Throws
  // InputError on bad info, and when a new device would take the histories
  // past limits.max_total_bytes.
  Handle add_device(DeviceInfo info);
  // Removes the device and its history; handles to it then throw UnknownDeviceError.
  bool remove_device(const DeviceKey& key);
  bool contains(const DeviceKey& key) const;
  Handle handle(const DeviceKey& key) const;  // throws UnknownDeviceError
  std::size_t device_count() const;

  // Validates, then stores. Throws ValidationError (nothing stored): bad
  // values; reason unknown_device for an unregistered device; future_timestamp
  // for a timestamp more than validation.max_future_skew ahead of the clock;
  // out_of_order for one older than the device's newest that it does not hold;
  // conflict for a timestamp it holds with other values. A sample equal to
  // one the device holds is a retransmission: `duplicate`, nothing changes.
  RecordOutcome record(const Handle& handle, const Sample& sample);
  RecordOutcome record(const DeviceKey& key, const Sample& sample);

  // What record_batch did: samples[0, accepted) were accepted (stored, or
  // `duplicates` of them already held); when accepted < size, `rejection` says
  // why samples[accepted] was not, and nothing after it was stored.
  struct BatchResult {
    std::size_t accepted = 0;
    std::size_t duplicates = 0;
    std::optional<ValidationError> rejection;
  };
  // Records the samples in turn under one lock, each checked as record() would,
  // stopping at the first rejected one. Only the newest samples the history can
  // hold are copied in; the history ends exactly as if each had been recorded
  // in turn. An unregistered or removed device rejects samples[0] (reason
  // unknown_device). Throws nothing else (std::bad_alloc aside).
  BatchResult record_batch(const Handle& handle, std::span<const Sample> samples);
  BatchResult record_batch(const DeviceKey& key, std::span<const Sample> samples);

  void set_availability(const DeviceKey& key, bool available, std::string reason = {});

  std::optional<DeviceState> state(const DeviceKey& key) const;
  std::vector<DeviceState> states() const;  // sorted by key
  // Calls visit for every device (in no particular order), each under its own
  // lock, with nothing copied. visit must not call back into the store.
  void visit_states(const std::function<void(const DeviceStateRef&)>& visit) const;
  std::optional<Sample> latest(const DeviceKey& key) const;
  // Chronological (oldest first), at most `limit` newest samples. Throws UnknownDeviceError.
  std::vector<Sample> history(const DeviceKey& key, std::size_t limit = SIZE_MAX) const;
  WindowStats window_stats(const DeviceKey& key) const;
  // Sample slots allocated for the device's history now (it grows as samples
  // arrive, up to limits().max_samples). Throws UnknownDeviceError.
  std::size_t history_slots(const DeviceKey& key) const;
  ClusterAggregate aggregate() const;
  // Over the devices of the hosts `include_host` accepts (a coordinator leaves
  // out the devices of nodes that are down). It is asked about each host at
  // least once (usually once per host), with the store's lock held, and must
  // not call back into the store.
  ClusterAggregate aggregate(const std::function<bool(const std::string& host)>& include_host) const;

  // Drops every device and sample (shutdown).
  void clear();
  const HistoryLimits& limits() const noexcept { return limits_; }

 private:
  Timestamp now() const;

  HistoryLimits limits_;
  ValidationLimits validation_;
  Clock clock_;
  // With the system clock: the newest timestamp (ns) a sample could carry when
  // the clock was last read. The clock only moves on, so anything up to it is
  // still allowed.
  mutable std::atomic<std::int64_t> future_limit_ns_{std::numeric_limits<std::int64_t>::min()};
  mutable std::shared_mutex map_mutex_;
  std::map<DeviceKey, Handle> devices_;  // ordered: states() comes out sorted by key
  std::vector<DeviceSlot*> slots_;       // devices_'s slots in no order, contiguous for scans
};

}  // namespace gpucluster
