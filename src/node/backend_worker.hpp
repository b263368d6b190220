#pragma once
// One thread per backend, so a backend call that hangs or throws stalls only
// that backend's devices: the others keep being sampled, and the manager can
// see how long a pass has been running and mark the stuck devices unavailable.
// The thread's first call is the backend's discover(), so discovery too runs
// off the caller's thread and under a deadline the caller chooses.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "gpucluster/backends/backend.hpp"

namespace gpucluster {

// The result of reading one device: a sample, or the backend's error message.
// A device's reading; nothing to report (Backend::sample threw NoReading); or why it failed.
using SampleOutcome = std::variant<Sample, NothingToReport, std::string>;
// The result of discover(): what it found, or the message of what it threw.
using DiscoveryOutcome = std::variant<Discovery, std::string>;

class BackendWorker : public std::enable_shared_from_this<BackendWorker> {
 public:
  using Clock = std::chrono::steady_clock;
  // Called on the worker thread for every device read, never after stop() returned.
  // Receives each device's outcome and how long the backend took to produce it.
  using Sink = std::function<void(const DeviceKey&, const SampleOutcome&, std::chrono::nanoseconds)>;

  // `host` is passed to the backend's discover(); no device is read until set_devices().
  BackendWorker(BackendPtr backend, std::string host, Sink sink);
  ~BackendWorker();
  BackendWorker(const BackendWorker&) = delete;
  BackendWorker& operator=(const BackendWorker&) = delete;

  void launch();  // starts the thread, which discovers first (separate from the constructor: shared_from_this)

  // Waits until discover() has returned or thrown, or the deadline passes;
  // nullopt when it is still running (the caller then stop()s this worker).
  // The outcome is handed over once: a second call returns nullopt.
  std::optional<DiscoveryOutcome> wait_discovery(Clock::time_point deadline);
  // The devices every pass reads, in order; called once, after discovery and
  // before the first request_pass().
  void set_devices(std::vector<DeviceKey> devices);

  // Asks for a pass; returns the pass number to wait for. A pass already
  // running is not restarted: its number is returned. A background pass skips
  // devices in error backoff (after n failures in a row, the next
  // min(2^(n-1), kMaxBackoffPasses) - 1 background passes); an explicit one reads every device.
  std::uint64_t request_pass(bool background = false);
  static constexpr std::uint32_t kMaxBackoffPasses = 16;
  // Waits until pass `number` has finished or the deadline passes; true if finished.
  bool wait_pass(std::uint64_t number, Clock::time_point deadline);
  // How long the current pass has been running; nullopt when idle.
  std::optional<Clock::duration> running_for() const;

  // Stops delivering results at once and asks the thread to shut the backend
  // down (on the thread) and end.
  void request_stop();
  // After request_stop(): waits until the deadline for the thread to end.
  // True: it ended, the backend is shut down. False: the backend is stuck in a
  // call (or in its shutdown); the thread is left to finish by itself (the
  // worker keeps itself alive until then) and never delivers again.
  bool wait_stopped(Clock::time_point deadline);
  // request_stop(), then wait_stopped(now + drain).
  bool stop(Clock::duration drain);

  Backend& backend() noexcept { return *backend_; }
  const std::vector<DeviceKey>& devices() const noexcept { return devices_; }

 private:
  void run();
  void deliver(const DeviceKey& key, const SampleOutcome& outcome, std::chrono::nanoseconds took);

  BackendPtr backend_;
  const std::string host_;
  std::vector<DeviceKey> devices_;  // written by set_devices() before any pass, then read-only
  Sink sink_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;  // a pass requested, or stop
  std::condition_variable done_;  // discovery or a pass finished, or the thread ended
  bool stop_ = false;
  bool exited_ = false;
  bool abandoned_ = false;                     // the stopper gave up waiting: the thread ends by itself
  std::optional<DiscoveryOutcome> discovery_;  // set once discover() has returned, until taken
  bool discovered_ = false;
  std::uint64_t requested_ = 0;
  std::uint64_t completed_ = 0;
  std::optional<Clock::time_point> running_since_;
  bool background_pass_ = false;  // the pending/running pass honours backoff

  // Per device (same order as devices_); touched only by the worker thread.
  struct Backoff {
    std::uint32_t failures = 0;  // in a row
    std::uint32_t skip = 0;      // background passes still to skip
  };
  std::vector<Backoff> backoff_;

  std::mutex deliver_mutex_;  // held while the sink runs; stop() takes it to fence delivery
  bool delivering_ = true;
  std::thread thread_;
};

}  // namespace gpucluster
