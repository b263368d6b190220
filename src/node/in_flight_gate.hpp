#pragma once
// The in-flight gate: counts the calls in flight so that a shutdown can refuse
// new ones and wait for the counted ones to end, without sleeping. The one copy
// of that rule, shared by the Manager (include/gpucluster/manager.hpp) and the
// Python exo_compat core (python/src/compat_core.hpp).

#include <atomic>
#include <cstdint>
#include <utility>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {

class InFlightGate;

// One counted call: leaving it (destruction) uncounts it, and wakes a close()
// that waits for the last one.
class InFlightGuard {
 public:
  InFlightGuard(InFlightGuard&& other) noexcept : gate_(std::exchange(other.gate_, nullptr)) {}
  InFlightGuard(const InFlightGuard&) = delete;
  InFlightGuard& operator=(const InFlightGuard&) = delete;
  InFlightGuard& operator=(InFlightGuard&&) = delete;
  inline ~InFlightGuard();

 private:
  friend class InFlightGate;
  explicit InFlightGuard(InFlightGate* gate) noexcept : gate_(gate) {}
  InFlightGate* gate_;
};

class InFlightGate {
 public:
  InFlightGate() = default;
  InFlightGate(const InFlightGate&) = delete;
  InFlightGate& operator=(const InFlightGate&) = delete;

  // Counts the call, then checks: a close() that begins after the check still
  // sees it counted and waits for it. Throws ShutDownError(operation) once closed.
  InFlightGuard enter(const char* operation) {
    in_flight_.fetch_add(1);
    InFlightGuard guard(this);
    if (closed_.load()) throw ShutDownError(operation);
    return guard;
  }

  // Refuses new calls and waits until none is in flight. Returns false, without
  // waiting, when the gate was already closed. Must not be called from inside a
  // counted call (it would wait for itself).
  bool close() {
    if (closed_.exchange(true)) return false;
    for (std::int64_t count = in_flight_.load(); count != 0; count = in_flight_.load()) in_flight_.wait(count);
    return true;
  }

  bool closed() const noexcept { return closed_.load(); }
  std::int64_t in_flight() const noexcept { return in_flight_.load(); }

 private:
  friend class InFlightGuard;
  std::atomic<std::int64_t> in_flight_{0};
  std::atomic<bool> closed_{false};
};

InFlightGuard::~InFlightGuard() {
  // Only a closing gate waits on the counter, so only then wake it.
  if (gate_ != nullptr && gate_->in_flight_.fetch_sub(1) == 1 && gate_->closed_.load()) gate_->in_flight_.notify_all();
}

}  // namespace gpucluster
