#include "gpucluster/telemetry/store.hpp"

#include <algorithm>
#include <limits>
#include <mutex>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include "gpucluster/core/errors.hpp"
#include "gpucluster/telemetry/ring_buffer.hpp"

namespace gpucluster {

class TelemetryStore::DeviceSlot {
 public:
  DeviceSlot(DeviceInfo device_info, std::size_t capacity)
      : info(std::make_shared<const DeviceInfo>(std::move(device_info))), history(capacity) {}

  std::mutex mutex;
  std::shared_ptr<const DeviceInfo> info;  // replaced whole on update, so readers may keep a copy
  RingBuffer<Sample> history;
  bool available = true;
  std::string unavailable_reason;
  bool removed = false;  // set on unregister; handles held elsewhere then fail
};

namespace {

std::string format_timestamp(Timestamp t) {
  return fmt::format("{:.9f}", to_seconds(t));
}

ValidationError unregistered(const DeviceKey& key) {
  return ValidationError(key.str(), "device_id", key.str(), "the device must be registered before it reports",
                         RejectReason::unknown_device);
}

ValidationError out_of_order(const DeviceKey& key, Timestamp timestamp, Timestamp newest) {
  return ValidationError(
      key.str(), "timestamp", format_timestamp(timestamp),
      fmt::format("must not be older than the device's newest sample ({})", format_timestamp(newest)),
      RejectReason::out_of_order);
}

// Appends one accepted sample and drops what max_age no longer keeps.
void append(RingBuffer<Sample>& history, const Sample& sample, const HistoryLimits& limits) {
  history.push(sample);
  if (limits.max_age) {
    const Timestamp oldest_kept = sample.timestamp - *limits.max_age;
    while (history.size() > 1 && history.front().timestamp < oldest_kept) history.pop_front();
  }
}

void accumulate(FieldStats& stats, double value) {
  if (stats.count == 0) {
    stats.min = stats.max = value;
  } else {
    stats.min = std::min(stats.min, value);
    stats.max = std::max(stats.max, value);
  }
  stats.mean += (value - stats.mean) / static_cast<double>(stats.count + 1);  // running mean, no overflow
  stats.last = value;
  ++stats.count;
}

void accumulate(FieldStats& stats, const std::optional<float>& value) {
  if (value) accumulate(stats, static_cast<double>(*value));
}

}  // namespace

TelemetryStore::TelemetryStore(HistoryLimits limits, ValidationLimits validation)
    : limits_(limits), validation_(validation) {
  validate_limits(validation_);
  if (limits_.max_samples == 0) throw InputError("history.max_samples", "0", "must be at least 1");
  if (limits_.max_age && limits_.max_age->count() <= 0) {
    throw InputError("history.max_age", fmt::format("{}", *limits_.max_age), "must be positive");
  }
}

TelemetryStore::~TelemetryStore() = default;

TelemetryStore::Handle TelemetryStore::add_device(DeviceInfo info) {
  validate_device_info(info);
  const DeviceKey key = info.key;
  std::unique_lock map_lock(map_mutex_);
  if (auto it = devices_.find(key); it != devices_.end()) {
    std::lock_guard slot_lock(it->second->mutex);
    it->second->info = std::make_shared<const DeviceInfo>(std::move(info));
    return it->second;
  }
  auto slot = std::make_shared<DeviceSlot>(std::move(info), limits_.max_samples);
  devices_.emplace(key, slot);
  return slot;
}

bool TelemetryStore::remove_device(const DeviceKey& key) {
  Handle slot;
  {
    std::unique_lock map_lock(map_mutex_);
    auto it = devices_.find(key);
    if (it == devices_.end()) return false;
    slot = std::move(it->second);
    devices_.erase(it);
  }
  std::lock_guard slot_lock(slot->mutex);
  slot->removed = true;
  slot->history.clear();
  return true;
}

bool TelemetryStore::contains(const DeviceKey& key) const {
  std::shared_lock map_lock(map_mutex_);
  return devices_.contains(key);
}

TelemetryStore::Handle TelemetryStore::handle(const DeviceKey& key) const {
  std::shared_lock map_lock(map_mutex_);
  auto it = devices_.find(key);
  if (it == devices_.end()) throw UnknownDeviceError(key.str());
  return it->second;
}

std::size_t TelemetryStore::device_count() const {
  std::shared_lock map_lock(map_mutex_);
  return devices_.size();
}

void TelemetryStore::record(const Handle& slot, const Sample& sample) {
  const std::optional<ValidationFailure> failure = check_sample(sample, validation_);
  std::lock_guard slot_lock(slot->mutex);
  if (slot->removed) throw unregistered(slot->info->key);
  if (failure) throw make_validation_error(slot->info->key.str(), *failure);
  RingBuffer<Sample>& history = slot->history;
  if (!history.empty() && sample.timestamp < history.back().timestamp) {
    throw out_of_order(slot->info->key, sample.timestamp, history.back().timestamp);
  }
  append(history, sample, limits_);
}

void TelemetryStore::record(const DeviceKey& key, const Sample& sample) {
  Handle slot;
  {
    std::shared_lock map_lock(map_mutex_);
    auto it = devices_.find(key);
    if (it == devices_.end()) {
      throw unregistered(key);
    }
    slot = it->second;
  }
  record(slot, sample);
}

TelemetryStore::BatchResult TelemetryStore::record_batch(const Handle& slot, std::span<const Sample> samples) {
  BatchResult result;
  if (samples.empty()) return result;
  // Values first, without the lock (as record() checks them).
  std::size_t valid = samples.size();
  std::optional<ValidationFailure> failure;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    failure = check_sample(samples[i], validation_);
    if (failure) {
      valid = i;
      break;
    }
  }
  std::lock_guard slot_lock(slot->mutex);
  const DeviceKey& key = slot->info->key;
  if (slot->removed) {
    result.rejection = unregistered(key);
    return result;
  }
  // Then the order: each sample against the one before it (the device's newest for the first).
  RingBuffer<Sample>& history = slot->history;
  std::optional<Timestamp> newest;
  if (!history.empty()) newest = history.back().timestamp;
  std::size_t accepted = 0;
  for (; accepted < valid; ++accepted) {
    const Timestamp t = samples[accepted].timestamp;
    if (newest && t < *newest) {
      result.rejection = out_of_order(key, t, *newest);
      break;
    }
    newest = t;
  }
  if (accepted == valid && failure) result.rejection = make_validation_error(key.str(), *failure);
  // Only the newest `capacity` accepted samples can survive in the ring; max_age
  // trims relative to the newest, which only grows, so trimming after each of
  // them leaves what trimming after every sample would have left.
  const std::size_t first = accepted > history.capacity() ? accepted - history.capacity() : 0;
  for (std::size_t i = first; i < accepted; ++i) append(history, samples[i], limits_);
  result.stored = accepted;
  return result;
}

TelemetryStore::BatchResult TelemetryStore::record_batch(const DeviceKey& key, std::span<const Sample> samples) {
  Handle slot;
  {
    std::shared_lock map_lock(map_mutex_);
    auto it = devices_.find(key);
    if (it == devices_.end()) {
      BatchResult result;
      if (!samples.empty()) result.rejection = unregistered(key);
      return result;
    }
    slot = it->second;
  }
  return record_batch(slot, samples);
}

void TelemetryStore::set_availability(const DeviceKey& key, bool available, std::string reason) {
  const Handle slot = handle(key);
  std::lock_guard slot_lock(slot->mutex);
  slot->available = available;
  slot->unavailable_reason = available ? std::string{} : std::move(reason);
}

namespace {
DeviceState state_of(TelemetryStore::DeviceSlot& slot);
}

std::optional<DeviceState> TelemetryStore::state(const DeviceKey& key) const {
  std::shared_lock map_lock(map_mutex_);
  auto it = devices_.find(key);
  if (it == devices_.end()) return std::nullopt;
  return state_of(*it->second);
}

std::vector<DeviceState> TelemetryStore::states() const {
  std::shared_lock map_lock(map_mutex_);
  std::vector<DeviceState> result;
  result.reserve(devices_.size());
  for (const auto& [key, slot] : devices_) result.push_back(state_of(*slot));
  return result;
}

std::optional<Sample> TelemetryStore::latest(const DeviceKey& key) const {
  const Handle slot = handle(key);
  std::lock_guard slot_lock(slot->mutex);
  if (slot->history.empty()) return std::nullopt;
  return slot->history.back();
}

std::vector<Sample> TelemetryStore::history(const DeviceKey& key, std::size_t limit) const {
  const Handle slot = handle(key);
  std::lock_guard slot_lock(slot->mutex);
  const RingBuffer<Sample>& ring = slot->history;
  const std::size_t count = std::min(limit, ring.size());
  std::vector<Sample> result;
  result.reserve(count);
  for (std::size_t i = ring.size() - count; i < ring.size(); ++i) result.push_back(ring[i]);
  return result;
}

WindowStats TelemetryStore::window_stats(const DeviceKey& key) const {
  const Handle slot = handle(key);
  std::lock_guard slot_lock(slot->mutex);
  const RingBuffer<Sample>& ring = slot->history;
  WindowStats stats;
  stats.samples = ring.size();
  if (ring.empty()) return stats;
  stats.first = ring.front().timestamp;
  stats.last = ring.back().timestamp;
  for (std::size_t i = 0; i < ring.size(); ++i) {
    const Sample& s = ring[i];
    accumulate(stats.memory_used_bytes, static_cast<double>(s.memory_used_bytes));
    accumulate(stats.utilization_percent, s.utilization_percent);
    accumulate(stats.power_watts, s.power_watts);
    accumulate(stats.temperature_celsius, s.temperature_celsius);
    accumulate(stats.clock_mhz, s.clock_mhz);
  }
  return stats;
}

ClusterAggregate TelemetryStore::aggregate() const {
  ClusterAggregate aggregate;
  double utilization_sum = 0, temperature_sum = 0, power_sum = 0;
  std::size_t utilization_count = 0, temperature_count = 0, power_count = 0;
  std::shared_lock map_lock(map_mutex_);
  aggregate.device_count = devices_.size();
  for (const auto& [key, slot] : devices_) {
    std::lock_guard slot_lock(slot->mutex);
    if (slot->history.empty()) continue;
    const Sample& s = slot->history.back();
    ++aggregate.devices_with_samples;
    aggregate.total_memory_bytes += static_cast<std::uint64_t>(s.memory_total_bytes);
    aggregate.used_memory_bytes += static_cast<std::uint64_t>(s.memory_used_bytes);
    if (s.utilization_percent) utilization_sum += *s.utilization_percent, ++utilization_count;
    if (s.temperature_celsius) temperature_sum += *s.temperature_celsius, ++temperature_count;
    if (s.power_watts) power_sum += *s.power_watts, ++power_count;
    if (!aggregate.timestamp || s.timestamp > *aggregate.timestamp) aggregate.timestamp = s.timestamp;
  }
  aggregate.available_memory_bytes = aggregate.total_memory_bytes - aggregate.used_memory_bytes;
  if (utilization_count > 0) aggregate.average_utilization_percent = utilization_sum / double(utilization_count);
  if (temperature_count > 0) aggregate.average_temperature_celsius = temperature_sum / double(temperature_count);
  if (power_count > 0) aggregate.total_power_watts = power_sum;
  return aggregate;
}

void TelemetryStore::clear() {
  std::unique_lock map_lock(map_mutex_);
  for (auto& [key, slot] : devices_) {
    std::lock_guard slot_lock(slot->mutex);
    slot->removed = true;
    slot->history.clear();
  }
  devices_.clear();
}

namespace {
DeviceState state_of(TelemetryStore::DeviceSlot& slot) {
  std::lock_guard slot_lock(slot.mutex);
  DeviceState state;
  state.info = slot.info;
  state.available = slot.available;
  state.unavailable_reason = slot.unavailable_reason;
  if (!slot.history.empty()) state.latest = slot.history.back();
  return state;
}
}  // namespace

}  // namespace gpucluster
