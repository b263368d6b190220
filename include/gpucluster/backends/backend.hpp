#pragma once
// The one small interface every device source implements (as nvtop does per
// vendor): discover, static info, sample, per-field availability, shutdown.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gpucluster/model/device.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/fields.hpp"
#include "gpucluster/model/sample.hpp"

namespace gpucluster {

// Which of the field table's optional quantities (model/fields.hpp, the rows
// that are not required) a device can report, one flag per row, all false by
// default. The required rows (memory) are part of every sample and are not
// recorded: has() answers false for them unless a caller set them.
class FieldAvailability {
 public:
  constexpr FieldAvailability() noexcept = default;
  // Available: exactly the quantities listed.
  constexpr FieldAvailability(std::initializer_list<Quantity> available) noexcept {
    for (const Quantity quantity : available) set(quantity);
  }

  constexpr bool has(Quantity quantity) const noexcept {
    const auto index = static_cast<std::size_t>(quantity);
    return index < kQuantityCount && available_[index];
  }
  constexpr void set(Quantity quantity, bool available = true) noexcept {
    const auto index = static_cast<std::size_t>(quantity);
    if (index < kQuantityCount) available_[index] = available;
  }
  // Whether any quantity is available.
  constexpr bool any() const noexcept {
    for (const bool available : available_) {
      if (available) return true;
    }
    return false;
  }

  friend constexpr bool operator==(const FieldAvailability&, const FieldAvailability&) noexcept = default;

 private:
  std::array<bool, kQuantityCount> available_{};
};

// The one plausibility rule of every backend: a reading outside the field
// table's range (model/fields.hpp) under validation's default limits comes from a
// broken sensor or file, and the backend reports that quantity unavailable for
// that reading rather than a value that would get the whole sample rejected.
// False for NaN.
bool plausible_reading(Quantity quantity, double value) noexcept;

// How many readings a backend dropped as implausible, per quantity (indexed by
// Quantity, table order). Only the optional rows can count: a required one
// (memory) is never dropped, its failure is the sample's.
using ImplausibleCounts = std::array<std::uint64_t, kQuantityCount>;

// A backend's running counts of implausible readings: counted on the backend's
// sampling thread, read by any thread (the manager's reports, /metrics).
class ImplausibleReadings {
 public:
  void count(Quantity quantity) noexcept {
    const auto index = static_cast<std::size_t>(quantity);
    if (index < kQuantityCount) counts_[index].fetch_add(1, std::memory_order_relaxed);
  }
  ImplausibleCounts snapshot() const noexcept {
    ImplausibleCounts counts{};
    for (std::size_t i = 0; i < kQuantityCount; ++i) counts[i] = counts_[i].load(std::memory_order_relaxed);
    return counts;
  }

 private:
  std::array<std::atomic<std::uint64_t>, kQuantityCount> counts_{};
};

// plausible_reading(quantity, value), and when it is not, counts the dropped
// reading in `dropped`: the one way a backend applies the rule to what it samples.
bool plausible_or_count(Quantity quantity, double value, ImplausibleReadings& dropped) noexcept;

// The available quantities' names in table order ("utilization_percent,
// power_watts"), or "none": for log lines.
std::string to_string(const FieldAvailability& fields);

struct Discovery {
  std::vector<DeviceInfo> devices;
  std::string note;  // why nothing was found, or what was skipped; empty when all is well
  // The source itself cannot be used on this machine (vendor library missing or
  // unusable, driver not initialised, no such tree), as opposed to a source that
  // works and has no devices. The note then says why, and how to point at another
  // source. Callers that asked for this backend by name treat it as an error.
  bool unavailable = false;
};

// Thrown by Backend::sample when a device has no reading to give, which is not
// a failure (a fleet device described without metrics): the device stays
// available and without a sample, so nothing about it is made up.
class NoReading : public Error {
 public:
  using Error::Error;
};
struct NothingToReport {};  // the sampler's record of a NoReading

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const noexcept = 0;
  // Finds devices; the host of their keys is `host`. Throws Error if the source is broken.
  // The manager calls it on the backend's own thread and waits at most its
  // discovery deadline, so it may block (a vendor library's init), but a call
  // that never returns leaves the backend failed for the manager's life.
  virtual Discovery discover(const std::string& host) = 0;
  // Reads one device (by local id). Throws Error on failure; must not block long.
  virtual Sample sample(const std::string& local_id) = 0;
  virtual FieldAvailability available_fields(const std::string& local_id) const = 0;
  // The readings this backend's sample() calls dropped as implausible
  // (plausible_or_count), per quantity, since it was made. Thread-safe and
  // non-blocking: called while the backend samples on its own thread. A backend
  // that applies no plausibility rule reports zeros.
  virtual ImplausibleCounts implausible_readings() const noexcept { return {}; }
  // Releases the source. Called once by the manager; if it throws, the manager
  // logs the error and still shuts the other backends down.
  virtual void shutdown() = 0;
};

using BackendPtr = std::unique_ptr<Backend>;

// This machine's host name (gethostname), "localhost" if unknown.
std::string local_host_name();

}  // namespace gpucluster
