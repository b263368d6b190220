#pragma once
// One device's health over time: the signals its backend observed, merged
// into reasons (one per source and code, counted), judged by the policy
// (model/health.hpp). A WARN lasts HealthPolicy::warn_hold after its last
// signal; a FAIL or LOST stays until an operator clears it; a device that
// was lost and answers again is a sticky FAIL (it fell off once). Not
// thread-safe: the store keeps one per device under that device's lock.
#include <cstddef>
#include <cstdint>
#include <map>

#include "gpucluster/model/health.hpp"

namespace gpucluster {

class HealthTracker {
 public:
  // At most this many reasons per device; past it the mildest, oldest
  // non-sticky one makes room (a flood of distinct XIDs cannot grow memory).
  static constexpr std::size_t kMaxReasons = 32;

  // A backend that watches the device's health: with no reason it is pass, not unknown.
  void set_watched(bool watched) { watched_ = watched; }
  bool watched() const { return watched_; }

  // One signal, judged by policy; returns the verdict. An ignored XID is only counted.
  HealthVerdict observe(const HealthSignal& signal, const HealthPolicy& policy);

  // The device answers again after a LOST: that reason becomes a sticky FAIL.
  void answered(Timestamp at);

  // The health at now: held WARN (and PASS) reasons whose last signal is more
  // than warn_hold ago are dropped; the state is the worst reason's.
  const DeviceHealth& evaluate(Timestamp now, const HealthPolicy& policy);

  // An operator's clear (or a driver reload): every reason goes, sticky ones
  // included; the XID counts stay (they are counters).
  void clear(Timestamp at);

  // XID → signals seen, ignored ones included (gpucluster_xid_errors_total).
  const std::map<std::uint32_t, std::uint64_t>& xid_counts() const { return xid_counts_; }

 private:
  void settle(Timestamp at);

  bool watched_ = false;
  DeviceHealth health_;
  std::map<std::uint32_t, std::uint64_t> xid_counts_;
};

}  // namespace gpucluster
