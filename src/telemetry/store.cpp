#include "gpucluster/telemetry/store.hpp"

#include <time.h>
#include <algorithm>
#include <limits>
#include <mutex>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include "gpucluster/model/errors.hpp"
#include "telemetry/ring_buffer.hpp"

namespace gpucluster {

class TelemetryStore::DeviceSlot {
 public:
  DeviceSlot(DeviceInfo device_info, std::size_t capacity)
      : info(std::make_shared<const DeviceInfo>(std::move(device_info))), history(capacity) {}

  std::mutex mutex;
  // history.back(), kept next to the mutex: views over thousands of devices
  // (aggregate, select) then read one slot and never its history's storage.
  std::optional<Sample> newest;
  bool available = true;
  bool removed = false;                    // set on unregister; handles held elsewhere then fail
  std::shared_ptr<const DeviceInfo> info;  // replaced whole on update, so readers may keep a copy
  RingBuffer<Sample> history;
  std::string unavailable_reason;
  std::size_t scan_index = 0;  // where the store's slots_ holds this slot
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

// Names the first field (in table order) where `sample` differs from the held one.
ValidationError conflicting(const DeviceKey& key, const Sample& sample, const Sample& held) {
  std::string_view field = "timestamp";
  std::string given, kept;
  for_each_field([&](const auto& row) {
    if (!given.empty() || sample.*row.member == held.*row.member) return;
    field = row.name;
    given = format_field(sample, row.quantity);
    kept = format_field(held, row.quantity);
  });
  return ValidationError(key.str(), std::string(field), given,
                         fmt::format("the device already holds a sample at {} with {} = {} (a timestamp "
                                     "identifies one sample; a retransmission must repeat it exactly)",
                                     format_timestamp(sample.timestamp), field, kept),
                         RejectReason::conflict);
}

ValidationError from_the_future(const DeviceKey& key, Timestamp timestamp, Timestamp now,
                                std::chrono::nanoseconds skew) {
  return ValidationError(key.str(), "timestamp", format_timestamp(timestamp),
                         fmt::format("must not be more than {} s ahead of the receiver's clock ({})",
                                     static_cast<double>(skew.count()) / 1e9, format_timestamp(now)),
                         RejectReason::future_timestamp);
}

// The newest timestamp a sample may carry now (saturating: a test clock may be anywhere).
Timestamp future_limit(Timestamp now, std::chrono::nanoseconds skew) {
  const std::int64_t at = now.time_since_epoch().count();
  const std::int64_t room = std::numeric_limits<std::int64_t>::max() - skew.count();
  return at > room ? Timestamp::max() : now + skew;
}

// The first index in [low, high) whose sample (at(i), in timestamp order) is
// not older than t; high when there is none.
template <class At>
std::size_t first_not_older(std::size_t low, std::size_t high, const At& at, Timestamp t) {
  while (low < high) {
    const std::size_t middle = low + (high - low) / 2;
    if (at(middle).timestamp < t) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low;
}

// The sample with timestamp t among `count` samples in timestamp order, or nullptr.
template <class At>
const Sample* find_timestamp(std::size_t count, const At& at, Timestamp t) {
  const std::size_t index = first_not_older(0, count, at, t);
  return index < count && at(index).timestamp == t ? &at(index) : nullptr;
}

// A sample not newer than the newest held: a retransmission of the one held
// at its timestamp, a conflict with it, or (none held there) out of order.
RecordOutcome settle_past(const Sample* held, const Sample& sample, const DeviceKey& key, Timestamp newest) {
  if (held == nullptr) throw out_of_order(key, sample.timestamp, newest);
  if (*held == sample) return RecordOutcome::duplicate;
  throw conflicting(key, sample, *held);
}

const Sample* find_timestamp(const RingBuffer<Sample>& history, Timestamp t) {
  const auto at = [&history](std::size_t i) -> const Sample& { return history[i]; };
  return find_timestamp(history.size(), at, t);
}

// The oldest timestamp max_age keeps once `newest` is held; nullopt when it
// keeps everything (no max_age, or one reaching past the int64 range).
std::optional<Timestamp> oldest_kept(Timestamp newest, const HistoryLimits& limits) {
  if (!limits.max_age) return std::nullopt;
  if (newest.time_since_epoch().count() < std::numeric_limits<std::int64_t>::min() + limits.max_age->count()) {
    return std::nullopt;
  }
  return newest - *limits.max_age;
}

// Appends one accepted sample and drops what max_age no longer keeps.
void append(TelemetryStore::DeviceSlot& slot, const Sample& sample, const HistoryLimits& limits) {
  RingBuffer<Sample>& history = slot.history;
  history.push(sample);
  slot.newest = sample;
  if (const std::optional<Timestamp> oldest = oldest_kept(sample.timestamp, limits)) {
    while (history.size() > 1 && history.front().timestamp < *oldest) history.pop_front();
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

// Calls visit(slot) for every slot, each under its lock. A view walks
// thousands of slots that reports have pushed out of the cache: fetching the
// ones a few steps ahead hides most of that wait.
template <class Visit>
void scan_slots(const std::vector<TelemetryStore::DeviceSlot*>& slots, Visit&& visit) {
  constexpr std::size_t kAhead = 8;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    if (i + kAhead < slots.size()) {
      const char* ahead = reinterpret_cast<const char*>(slots[i + kAhead]);
      __builtin_prefetch(ahead);
      __builtin_prefetch(ahead + 64);
      __builtin_prefetch(ahead + 128);
    }
    std::lock_guard slot_lock(slots[i]->mutex);
    visit(*slots[i]);
  }
}

}  // namespace

TelemetryStore::TelemetryStore(HistoryLimits limits, ValidationLimits validation, Clock clock)
    : limits_(limits), validation_(validation), clock_(std::move(clock)) {
  validate_limits(validation_);
  if (limits_.max_samples == 0) throw InputError("history.max_samples", "0", "must be at least 1");
  if (limits_.max_total_bytes && history_bytes_per_device(limits_) > *limits_.max_total_bytes) {
    throw InputError("history.max_samples", std::to_string(limits_.max_samples),
                     fmt::format("one device's history ({} samples of {} bytes) must fit the history memory "
                                 "budget of {} bytes",
                                 limits_.max_samples, sizeof(Sample), *limits_.max_total_bytes));
  }
  if (limits_.max_age && limits_.max_age->count() <= 0) {
    throw InputError("history.max_age", fmt::format("{}", *limits_.max_age), "must be positive");
  }
}

TelemetryStore::~TelemetryStore() = default;

Timestamp TelemetryStore::now() const {
  if (clock_) return clock_();
  timespec coarse{};
  ::clock_gettime(CLOCK_REALTIME_COARSE, &coarse);  // a few ns; its resolution (ms) is far below the skew
  return Timestamp{std::chrono::seconds{coarse.tv_sec} + std::chrono::nanoseconds{coarse.tv_nsec}};
}

TelemetryStore::Handle TelemetryStore::add_device(DeviceInfo info) {
  validate_device_info(info);
  const DeviceKey key = info.key;
  std::unique_lock map_lock(map_mutex_);
  if (auto it = devices_.find(key); it != devices_.end()) {
    std::lock_guard slot_lock(it->second->mutex);
    it->second->info = std::make_shared<const DeviceInfo>(std::move(info));
    return it->second;
  }
  if (limits_.max_total_bytes) {
    const std::uint64_t per_device = history_bytes_per_device(limits_);
    const std::uint64_t devices = devices_.size() + 1;
    if (devices > *limits_.max_total_bytes / per_device) {
      throw InputError(
          "history", fmt::format("{} devices x {} samples x {} bytes", devices, limits_.max_samples, sizeof(Sample)),
          fmt::format("the histories of all devices must fit the history memory budget of {} bytes (room for {} "
                      "devices)",
                      *limits_.max_total_bytes, *limits_.max_total_bytes / per_device));
    }
  }
  auto slot = std::make_shared<DeviceSlot>(std::move(info), limits_.max_samples);
  slot->scan_index = slots_.size();
  slots_.push_back(slot.get());
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
    // Swap-remove from the scan list (its order does not matter).
    DeviceSlot* last = slots_.back();
    slots_[slot->scan_index] = last;
    last->scan_index = slot->scan_index;
    slots_.pop_back();
  }
  std::lock_guard slot_lock(slot->mutex);
  slot->removed = true;
  slot->history.clear();
  slot->newest.reset();
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

RecordOutcome TelemetryStore::record(const Handle& slot, const Sample& sample) {
  const std::optional<ValidationFailure> failure = check_sample(sample, validation_);
  std::lock_guard slot_lock(slot->mutex);
  if (slot->removed) throw unregistered(slot->info->key);
  if (failure) throw make_validation_error(slot->info->key.str(), *failure);
  RingBuffer<Sample>& history = slot->history;
  if (!history.empty() && sample.timestamp <= history.back().timestamp) {
    return settle_past(find_timestamp(history, sample.timestamp), sample, slot->info->key, history.back().timestamp);
  }
  // A sample stamped now is within the limit last computed (up to the skew ago
  // on the system clock): the clock is read only when that no longer settles it.
  if (clock_ || sample.timestamp.time_since_epoch().count() > future_limit_ns_.load(std::memory_order_relaxed)) {
    const Timestamp current = now();
    const Timestamp limit = future_limit(current, validation_.max_future_skew);
    if (!clock_) future_limit_ns_.store(limit.time_since_epoch().count(), std::memory_order_relaxed);
    if (sample.timestamp > limit)
      throw from_the_future(slot->info->key, sample.timestamp, current, validation_.max_future_skew);
  }
  append(*slot, sample, limits_);
  return RecordOutcome::stored;
}

RecordOutcome TelemetryStore::record(const DeviceKey& key, const Sample& sample) {
  Handle slot;
  {
    std::shared_lock map_lock(map_mutex_);
    auto it = devices_.find(key);
    if (it == devices_.end()) {
      throw unregistered(key);
    }
    slot = it->second;
  }
  return record(slot, sample);
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
  std::vector<std::size_t> fresh;  // indices of the samples to append: strictly increasing timestamps
  fresh.reserve(valid);
  std::lock_guard slot_lock(slot->mutex);
  const DeviceKey& key = slot->info->key;
  if (slot->removed) {
    result.rejection = unregistered(key);
    return result;
  }
  // Then each sample as record() would see it: against the history and the
  // batch's samples before it.
  RingBuffer<Sample>& history = slot->history;
  const Timestamp current = now();
  const Timestamp limit = future_limit(current, validation_.max_future_skew);
  // What recording in turn would hold at each step: the history followed by
  // the fresh samples (one timestamp order), less what the count and age
  // limits would have dropped by then.
  const std::size_t held_before = history.size();
  const auto held_at = [&](std::size_t i) -> const Sample& {
    return i < held_before ? history[i] : samples[fresh[i - held_before]];
  };
  const auto find_held = [&](Timestamp t) -> const Sample* {
    const std::size_t total = held_before + fresh.size();
    std::size_t first = total > history.capacity() ? total - history.capacity() : 0;
    if (!fresh.empty()) {
      if (const std::optional<Timestamp> oldest = oldest_kept(samples[fresh.back()].timestamp, limits_)) {
        first = first_not_older(first, total - 1, held_at, *oldest);  // the newest is always kept
      }
    }
    const auto at = [&](std::size_t i) -> const Sample& { return held_at(first + i); };
    return find_timestamp(total - first, at, t);
  };
  std::size_t accepted = 0;
  try {
    for (; accepted < valid; ++accepted) {
      const Sample& sample = samples[accepted];
      const std::size_t total = held_before + fresh.size();
      if (total > 0 && sample.timestamp <= held_at(total - 1).timestamp) {
        const RecordOutcome outcome =
            settle_past(find_held(sample.timestamp), sample, key, held_at(total - 1).timestamp);
        if (outcome == RecordOutcome::duplicate) ++result.duplicates;
        continue;
      }
      if (sample.timestamp > limit) {
        throw from_the_future(key, sample.timestamp, current, validation_.max_future_skew);
      }
      fresh.push_back(accepted);
    }
  } catch (const ValidationError& e) {
    result.rejection = e;
  }
  if (accepted == valid && failure) result.rejection = make_validation_error(key.str(), *failure);
  // Only the newest `capacity` fresh samples can survive in the ring; max_age
  // trims relative to the newest, which only grows, so trimming after each of
  // them leaves what trimming after every sample would have left.
  const std::size_t first = fresh.size() > history.capacity() ? fresh.size() - history.capacity() : 0;
  for (std::size_t i = first; i < fresh.size(); ++i) append(*slot, samples[fresh[i]], limits_);
  result.accepted = accepted;
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

void TelemetryStore::visit_states(const std::function<void(const DeviceStateRef&)>& visit) const {
  std::shared_lock map_lock(map_mutex_);
  scan_slots(slots_, [&visit](const DeviceSlot& slot) {
    const DeviceStateRef ref{*slot.info, slot.available, slot.unavailable_reason,
                             slot.newest ? &*slot.newest : nullptr};
    visit(ref);
  });
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

std::size_t TelemetryStore::history_slots(const DeviceKey& key) const {
  const Handle slot = handle(key);
  std::lock_guard slot_lock(slot->mutex);
  return slot->history.allocated();
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
    for (std::size_t q = 0; q < kQuantityCount; ++q) {
      if (const std::optional<double> value = field_value(s, static_cast<Quantity>(q))) {
        accumulate(stats.fields[q], *value);
      }
    }
  }
  return stats;
}

ClusterAggregate TelemetryStore::aggregate() const {
  return aggregate({});
}

ClusterAggregate TelemetryStore::aggregate(const std::function<bool(const std::string& host)>& include_host) const {
  ClusterAggregate aggregate;
  double utilization_sum = 0, temperature_sum = 0, power_sum = 0;
  std::size_t utilization_count = 0, temperature_count = 0, power_count = 0;
  std::shared_lock map_lock(map_mutex_);
  aggregate.device_count = devices_.size();
  // A host's devices were mostly registered together: ask once per run of them.
  const std::string* asked_host = nullptr;
  bool host_included = true;
  scan_slots(slots_, [&](const DeviceSlot& slot) {
    if (!slot.newest) return;
    if (include_host) {
      const std::string& host = slot.info->key.host;
      if (asked_host == nullptr || *asked_host != host) {
        asked_host = &host;
        host_included = include_host(host);
      }
      if (!host_included) return;
    }
    const Sample& s = *slot.newest;
    ++aggregate.devices_with_samples;
    aggregate.total_memory_bytes += static_cast<std::uint64_t>(s.memory_total_bytes);
    aggregate.used_memory_bytes += static_cast<std::uint64_t>(s.memory_used_bytes);
    if (s.utilization_percent) utilization_sum += *s.utilization_percent, ++utilization_count;
    if (s.temperature_celsius) temperature_sum += *s.temperature_celsius, ++temperature_count;
    if (s.power_watts) power_sum += *s.power_watts, ++power_count;
    if (!aggregate.timestamp || s.timestamp > *aggregate.timestamp) aggregate.timestamp = s.timestamp;
  });
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
    slot->newest.reset();
  }
  devices_.clear();
  slots_.clear();
}

namespace {
DeviceState state_of(TelemetryStore::DeviceSlot& slot) {
  std::lock_guard slot_lock(slot.mutex);
  DeviceState state;
  state.info = slot.info;
  state.available = slot.available;
  state.unavailable_reason = slot.unavailable_reason;
  state.latest = slot.newest;
  return state;
}
}  // namespace

}  // namespace gpucluster
