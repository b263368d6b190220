#pragma once
// The manager ties it together: backends discover and sample devices into the
// telemetry store; callers select devices and plan work from live telemetry.
//
// Lifecycle (seed fixes #2, #5, #6): construction fully succeeds or throws.
// created → running (start) → draining (shutdown begins) → stopped. Every public
// operation is counted while in flight; shutdown refuses new ones, waits for the
// counted ones (no sleeps), stops the sampler, shuts every backend down (one
// failing does not skip the others) and frees all telemetry. Calls after
// shutdown throw ShutDownError.

#include <array>
#include <atomic>
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
#include "gpucluster/model/errors.hpp"
#include "gpucluster/scheduling/distribution.hpp"
#include "gpucluster/scheduling/scoring.hpp"
#include "gpucluster/telemetry/duration_histogram.hpp"
#include "gpucluster/telemetry/store.hpp"

namespace gpucluster {

enum class ManagerState : std::uint8_t { created, running, draining, stopped };
const char* to_string(ManagerState state) noexcept;

struct ManagerConfig {
  HistoryLimits history;
  ValidationLimits validation;
  ScoringConfig scoring;
  std::chrono::nanoseconds sample_interval = std::chrono::seconds{1};
  // A backend pass running longer than this marks that backend's devices
  // unavailable (they recover when it answers); also how long shutdown waits
  // for the backends' shutdown calls (each on its backend's thread, all at
  // once) before leaving a stuck one behind.
  std::chrono::nanoseconds backend_timeout = std::chrono::seconds{5};
  // How long start() waits for the backends' discover() calls (all run at once,
  // each on its backend's thread). A backend still discovering then is failed
  // for the manager's life (its report says so) and the others go on. Longer
  // than backend_timeout: a vendor library's init (nvmlInit_v2 without
  // persistence mode, rsmi_init) can take seconds per GPU.
  std::chrono::nanoseconds discovery_timeout = std::chrono::seconds{30};
  // Backends (by name) that must work: if one of them is unavailable (library
  // missing, driver not initialised), throws in discover() or misses the
  // discovery deadline, start() shuts everything down and throws
  // BackendUnavailableError. The others are skipped and reported.
  std::vector<std::string> required_backends;
  std::string host;                  // empty: this machine's host name
  std::function<Timestamp()> clock;  // empty: system clock (tests inject their own)
};

// What a backend found at start, for `status`, /healthz and diagnostics.
struct BackendReport {
  std::string backend;
  std::size_t devices = 0;
  std::string note;          // why nothing was found, when nothing was
  std::string error;         // discovery failed (threw, or missed the discovery deadline)
  bool unavailable = false;  // the source cannot be used here (Discovery::unavailable); note says why
  // Readings its sample() calls dropped as implausible, per quantity
  // (Backend::implausible_readings), as of the Manager::backend_reports() call.
  ImplausibleCounts implausible_readings{};
};
// "ok" (devices found), "none" (works, found nothing), "unavailable" or "failed".
const char* report_status(const BackendReport& report) noexcept;

// Backends the caller required (ManagerConfig::required_backends) that cannot
// be used; the message names each one and why (its library path and how to
// point at another, a discovery error or the missed deadline).
class BackendUnavailableError : public InputError {
 public:
  explicit BackendUnavailableError(std::vector<BackendReport> failed);
  const std::vector<BackendReport>& failed() const noexcept { return failed_; }

 private:
  std::vector<BackendReport> failed_;
};

// A plan request in caller terms; the manager fills in devices and free memory.
struct PlanRequest {
  Strategy strategy = Strategy::uniform;
  std::optional<std::uint64_t> items;                   // uniform, capacity: required
  std::vector<std::pair<std::string, double>> weights;  // capacity; empty → compute units
  std::optional<std::uint64_t> max_per_device;          // uniform, capacity
  std::optional<std::uint64_t> layers;                  // memory: required, > 0
  std::optional<std::uint64_t> layer_bytes;             // memory
};

// The rules of a plan request, the one place the CLI, the HTTP API and Python
// share (Manager::plan checks them too): each strategy's required fields, and
// no field that another strategy's plan would silently ignore. Throws
// PlanError naming the field (as the JSON API spells it: "items", "max_per_device").
void check_plan_request(const PlanRequest& request);
// A plan strategy by name ("uniform", "capacity", "memory"); throws PlanError
// (field "strategy") for any other text. The CLI, the HTTP API and Python parse
// with it, so the rule and its message are written once.
Strategy plan_strategy(std::string_view text);

class BackendWorker;
class InFlightGate;
class InFlightGuard;

class Manager {
 public:
  explicit Manager(ManagerConfig config = {}, std::vector<BackendPtr> backends = {});
  ~Manager();
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Discovers every backend's devices (in parallel, within discovery_timeout),
  // takes a first sample and starts the background sampler (when there are
  // backends and the interval is > 0). Each backend is read on its own thread,
  // never on a caller's. Throws BackendUnavailableError, leaving the manager
  // stopped, when a required backend cannot be used.
  void start(bool background_sampling = true);
  // One sampling pass over every backend's devices; waits at most
  // backend_timeout, and marks the devices of a backend that did not answer
  // in time unavailable.
  void sample_now();
  ManagerState state() const noexcept { return state_.load(); }
  const std::string& host() const noexcept { return host_; }
  Timestamp now() const;

  void register_device(DeviceInfo info);  // registers or updates static info
  bool unregister_device(const DeviceKey& key);
  // Throws ValidationError (counted per reason); a retransmitted sample is a
  // counted `duplicate` and changes nothing.
  RecordOutcome record(const DeviceKey& key, const Sample& sample);
  // Counts a sample refused before it reached the store (e.g. the agent could
  // not tell which device a message meant), so every rejection is counted.
  void count_rejected_sample(RejectReason reason) const;
  void set_availability(const DeviceKey& key, bool available, std::string reason = {});

  std::vector<DeviceState> devices() const;
  // Every device in place, nothing copied (TelemetryStore::visit_states): for
  // views over thousands of devices. visit must not call back into the manager.
  void visit_devices(const std::function<void(const DeviceStateRef&)>& visit) const;
  DeviceState device(const DeviceKey& key) const;  // throws UnknownDeviceError
  std::vector<Sample> history(const DeviceKey& key, std::size_t limit = SIZE_MAX) const;
  WindowStats window_stats(const DeviceKey& key) const;
  ClusterAggregate aggregate() const;
  ClusterAggregate aggregate(
      const std::function<bool(const std::string& host)>& include_host) const;  // TelemetryStore's
  std::vector<RankedDevice> rank(std::uint64_t min_free_memory_bytes = 0) const;
  Selection select(std::uint64_t min_free_memory_bytes = 0) const;
  Plan plan(const PlanRequest& request) const;
  // Resolves "host/cuda:0", or a bare "cuda:0": this manager's host's device,
  // else the one device on any host with that local id; throws
  // AmbiguousDeviceError when several hosts have it.
  DeviceKey resolve_key(std::string_view text) const;

  std::vector<BackendReport> backend_reports() const;  // empty until start() has discovered
  std::array<std::uint64_t, kRejectReasonCount> rejected_samples() const;
  std::uint64_t duplicate_samples() const noexcept { return duplicates_.load(std::memory_order_relaxed); }
  std::uint64_t backend_errors() const noexcept { return backend_errors_.load(); }
  // How long each backend call to sample one device took (successful or not).
  DurationHistogram::Snapshot sample_durations() const { return sample_duration_.snapshot(); }

  // Idempotent; safe while other threads call in. Blocks until in-flight calls end,
  // so it must not be called from inside a backend's discover() or sample().
  void shutdown();

 private:
  InFlightGuard enter(const char* operation) const;
  void sampler_loop();
  void mark_unavailable(const DeviceKey& key, const std::string& reason);
  void apply_outcome(const Backend& backend, const DeviceKey& key,
                     const std::variant<Sample, NothingToReport, std::string>& outcome);
  void mark_backend_late(BackendWorker& worker, const std::string& why);
  void shutdown_locked();  // shutdown() with lifecycle_mutex_ held

  ManagerConfig config_;
  std::string host_;
  std::vector<BackendPtr> backends_;                     // until start() hands them to workers
  std::vector<std::shared_ptr<BackendWorker>> workers_;  // written in start() before `running` is published
  std::vector<BackendReport> reports_;
  // Per report, the backend it is about (its worker keeps it alive while the
  // manager runs); null for a backend that missed its discovery deadline.
  std::vector<const Backend*> report_backends_;
  TelemetryStore store_;

  std::atomic<ManagerState> state_{ManagerState::created};
  // Counts public calls in flight; closed when shutdown begins (draining).
  std::unique_ptr<InFlightGate> gate_;
  mutable std::array<std::atomic<std::uint64_t>, kRejectReasonCount> rejected_{};
  std::atomic<std::uint64_t> duplicates_{0};
  std::atomic<std::uint64_t> backend_errors_{0};
  DurationHistogram sample_duration_;

  std::mutex lifecycle_mutex_;  // serialises start/shutdown
  std::mutex sampler_mutex_;
  std::condition_variable sampler_wake_;
  bool stop_sampler_ = false;
  std::thread sampler_;
};

}  // namespace gpucluster
