#pragma once
// exo_compat's native core: a telemetry store keyed by the seed's device ids,
// fed straight from the seed's GPUMetrics objects, with the seed's selection
// shapes on top of the core's fixed algorithms (validation, ordering, scoring).
//
// Concurrency: the id → handle map is only read or written with the GIL held
// (lookups happen before a call releases it), so it needs no lock of its own;
// the TelemetryStore below it is thread-safe. The in-flight gate (the
// library's, shared with the Manager) counts calls in flight so that shutdown
// waits for them and refuses new ones.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common.hpp"
#include "gpucluster/scheduling/scoring.hpp"
#include "gpucluster/telemetry/store.hpp"
#include "node/in_flight_gate.hpp"

namespace gpucluster::python::compat {

inline constexpr const char* kHost = "exo";

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

class CompatCore {
 public:
  CompatCore(std::size_t max_history, bool auto_register, std::optional<double> staleness_seconds);

  void register_device(const std::string& device_id, const std::string& name, const std::string& vendor,
                       const std::string& device_type, std::uint64_t memory_bytes,
                       std::optional<std::uint32_t> compute_units, std::optional<std::string> driver_version,
                       std::optional<double> bandwidth_gbps, std::optional<std::string> compute_capability);

  bool unregister_device(const std::string& device_id);

  bool contains(std::string_view device_id) const { return handles_.find(device_id) != handles_.end(); }

  // The hot path: one GPUMetrics-like object, with the GIL. Reads in the order
  // device_id, timestamp, byte counts, gauges; the first bad one raises.
  void record(PyObject* obj);

  // Many samples of one device as columns; GIL released while storing.
  std::size_t record_columns(const std::string& device_id, const py::handle& timestamps, const py::handle& used,
                             const py::handle& total, const py::handle& utilization, const py::handle& power,
                             const py::handle& temperature, const py::handle& clock);

  // (timestamp, used, total, util, power, temperature, clock) of the newest sample, or None.
  py::object latest(const std::string& device_id) const;

  py::list history(const std::string& device_id) const;

  py::object aggregate() const;

  std::optional<std::string> select(std::int64_t min_memory_bytes) const;

  // (device_id, score) for every device with metrics, best first; then ineligible ones.
  std::vector<std::pair<std::string, double>> rank() const;

  bool shutdown();
  bool is_shut_down() const noexcept { return gate_.closed(); }

 private:
  // The store's rejection, naming the seed's device id rather than the store's "exo/" key.
  static std::exception_ptr renamed(const ValidationError& e, std::string_view device_id);

  // Stores; a rejection names the seed's device id, not the store's "exo/" key.
  void store_record(const TelemetryStore::Handle& handle, const Sample& s, std::string_view device_id);

  const TelemetryStore::Handle& handle_for(std::string_view device_id, const Sample& sample);

  static py::tuple as_tuple(const Sample& s);

  TelemetryStore store_;
  ScoringConfig scoring_;
  bool auto_register_;
  mutable InFlightGate gate_;  // shutdown() closes it: refuses new calls, waits for those in flight
  std::unordered_map<std::string, TelemetryStore::Handle, StringHash, std::equal_to<>> handles_;
  // One-entry lookup cache (GIL-held like the map); reset whenever the map changes.
  // last_id_object_, when set, is a str object whose text is last_id_ (record() then
  // skips the comparison).
  void forget_cached_handle() {
    last_handle_ = nullptr;
    last_id_object_ = py::object();
  }
  std::string last_id_;
  const TelemetryStore::Handle* last_handle_ = nullptr;
  py::object last_id_object_;
};

}  // namespace gpucluster::python::compat
