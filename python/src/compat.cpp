// The native half of gpucluster.exo_compat: a telemetry store keyed by the
// seed's device ids, fed straight from the seed's GPUMetrics objects, with
// the seed's selection and distribution shapes on top of the core's fixed
// algorithms (validation, ordering, scoring, largest-remainder plans).
//
// Concurrency: the id → handle map is only read or written with the GIL held
// (lookups happen before a call releases it), so it needs no lock of its own;
// the TelemetryStore below it is thread-safe. The gate counts calls in flight
// so that shutdown waits for them and refuses new ones (seed fixes #5, #6).

#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <unordered_map>

#include <fmt/format.h>

#include "column.hpp"
#include "common.hpp"
#include "gpucluster/scheduling/distribution.hpp"
#include "gpucluster/scheduling/scoring.hpp"
#include "gpucluster/telemetry/store.hpp"
#include "gpucluster/telemetry/validation.hpp"

namespace gpucluster::python {

namespace {

constexpr const char* kHost = "exo";

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

// Counts calls in flight; close() refuses new ones and waits for the rest.
class Gate {
 public:
  class Guard {
   public:
    explicit Guard(Gate* gate) noexcept : gate_(gate) {}
    Guard(Guard&& other) noexcept : gate_(std::exchange(other.gate_, nullptr)) {}
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    Guard& operator=(Guard&&) = delete;
    ~Guard() {
      if (gate_ != nullptr && gate_->in_flight_.fetch_sub(1) == 1 && gate_->closed_.load()) {
        gate_->in_flight_.notify_all();
      }
    }

   private:
    Gate* gate_;
  };

  Guard enter(const char* operation) {
    in_flight_.fetch_add(1);
    Guard guard(this);
    if (closed_.load()) throw ShutDownError(operation);
    return guard;
  }
  // Returns false if already closed.
  bool close() {
    if (closed_.exchange(true)) return false;
    for (auto n = in_flight_.load(); n != 0; n = in_flight_.load()) in_flight_.wait(n);
    return true;
  }
  bool closed() const noexcept { return closed_.load(); }

 private:
  std::atomic<std::int64_t> in_flight_{0};
  std::atomic<bool> closed_{false};
};

// Interned attribute names of the seed's GPUMetrics.
struct Names {
  py::str device_id{"device_id"}, timestamp{"timestamp"}, memory_used_bytes{"memory_used_bytes"},
      memory_total_bytes{"memory_total_bytes"}, compute_utilization_percent{"compute_utilization_percent"},
      power_watts{"power_watts"}, temperature_celsius{"temperature_celsius"}, clock_rate_mhz{"clock_rate_mhz"};
  Names() {
    for (py::str* s : {&device_id, &timestamp, &memory_used_bytes, &memory_total_bytes, &compute_utilization_percent,
                       &power_watts, &temperature_celsius, &clock_rate_mhz}) {
      PyObject* p = s->release().ptr();
      PyUnicode_InternInPlace(&p);
      *s = py::reinterpret_steal<py::str>(p);
    }
  }
};

const Names& names() {
  static auto* n = new Names();  // leaked: outlives the interpreter's teardown order
  return *n;
}

py::object get_attr(PyObject* obj, const py::str& name) {
  PyObject* v = PyObject_GetAttr(obj, name.ptr());
  if (v == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(v);
}

// A byte count: an int, or an integral float. Non-finite → ValidationError.
std::int64_t read_bytes(PyObject* obj, const py::str& name, std::string_view device) {
  PyObject* v = PyObject_GetAttr(obj, name.ptr());
  if (v == nullptr) throw py::error_already_set();
  const py::object owner = py::reinterpret_steal<py::object>(v);
  if (PyLong_Check(v)) {
    int overflow = 0;
    const long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow != 0) {
      throw ValidationError(std::string(device), name.cast<std::string>(), py::str(owner).cast<std::string>(),
                            "must fit in 64 bits", RejectReason::out_of_range);
    }
    return n;
  }
  const double d = PyFloat_AsDouble(v);
  if (d == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  if (!std::isfinite(d)) {
    throw ValidationError(std::string(device), name.cast<std::string>(), fmt::format("{}", d),
                          "must be a finite number", RejectReason::not_finite);
  }
  if (d != std::floor(d) || std::fabs(d) > 9.2e18) {
    throw ValidationError(std::string(device), name.cast<std::string>(), fmt::format("{}", d),
                          "must be a whole number of bytes", RejectReason::out_of_range);
  }
  return static_cast<std::int64_t>(d);
}

// A gauge: a number, or None (unavailable). Stored as float; NaN stays NaN and is rejected.
std::optional<float> read_gauge(PyObject* obj, const py::str& name) {
  PyObject* v = PyObject_GetAttr(obj, name.ptr());
  if (v == nullptr) throw py::error_already_set();
  const py::object owner = py::reinterpret_steal<py::object>(v);
  if (v == Py_None) return std::nullopt;
  const double d = PyFloat_AsDouble(v);
  if (d == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  return static_cast<float>(d);
}

py::object gauge_value(const std::optional<float>& g) {
  if (!g) return py::none();
  return py::float_(tidy(*g));
}

py::object clock_value(const std::optional<float>& g) {
  if (!g) return py::none();
  const float f = *g;
  if (std::isfinite(f) && f == std::floor(f) && std::fabs(f) < 9e15F) return py::int_(static_cast<long long>(f));
  return py::float_(tidy(f));
}

class CompatCore {
 public:
  CompatCore(std::size_t max_history, bool auto_register, std::optional<double> staleness_seconds)
      : store_(HistoryLimits{max_history, std::nullopt}), auto_register_(auto_register) {
    if (staleness_seconds) {
      if (!std::isfinite(*staleness_seconds) || *staleness_seconds <= 0) {
        throw InputError("staleness_seconds", fmt::format("{}", *staleness_seconds), "must be a positive number");
      }
      scoring_.staleness = std::chrono::nanoseconds{std::llround(*staleness_seconds * 1e9)};
    } else {
      // The seed never ages metrics out; timestamps are bounded to [0, 9e9] s,
      // so this cannot overflow when subtracted from now.
      scoring_.staleness = std::chrono::nanoseconds{std::numeric_limits<std::int64_t>::max()};
    }
  }

  void register_device(const std::string& device_id, const std::string& name, const std::string& vendor,
                       const std::string& device_type, std::uint64_t memory_bytes,
                       std::optional<std::uint32_t> compute_units, std::optional<std::string> driver_version,
                       std::optional<double> bandwidth_gbps, std::optional<std::string> compute_capability) {
    const auto guard = gate_.enter("register a device");
    DeviceInfo info;
    info.key = DeviceKey{kHost, device_id};
    info.name = name;
    info.vendor = vendor;
    info.kind = parse_device_kind(device_type).value_or(DeviceKind::unknown);
    info.backend = "exo_compat";
    info.memory_total_bytes = memory_bytes;
    info.compute_units = compute_units;
    info.driver_version = std::move(driver_version);
    info.memory_bandwidth_gbps = bandwidth_gbps;
    info.compute_capability = std::move(compute_capability);
    last_handle_ = nullptr;
    handles_[device_id] = store_.add_device(std::move(info));
  }

  bool unregister_device(const std::string& device_id) {
    const auto guard = gate_.enter("unregister a device");
    const auto it = handles_.find(device_id);
    if (it == handles_.end()) return false;
    last_handle_ = nullptr;
    handles_.erase(it);
    return store_.remove_device(DeviceKey{kHost, device_id});
  }

  bool contains(std::string_view device_id) const { return handles_.find(device_id) != handles_.end(); }

  // The hot path: one GPUMetrics-like object, GIL held throughout (~1 µs budget).
  void record(const py::handle& metrics) {
    const auto guard = gate_.enter("record metrics");
    const Names& n = names();
    PyObject* obj = metrics.ptr();
    const py::object id_obj = get_attr(obj, n.device_id);
    Py_ssize_t length = 0;
    const char* utf8 = PyUnicode_Check(id_obj.ptr()) ? PyUnicode_AsUTF8AndSize(id_obj.ptr(), &length) : nullptr;
    if (utf8 == nullptr) {
      if (PyErr_Occurred()) throw py::error_already_set();
      throw py::type_error("metrics.device_id must be a str");
    }
    const std::string_view device_id(utf8, static_cast<std::size_t>(length));
    Sample s;
    {
      PyObject* t = PyObject_GetAttr(obj, n.timestamp.ptr());
      if (t == nullptr) throw py::error_already_set();
      const double seconds = PyFloat_AsDouble(t);
      Py_DECREF(t);
      if (seconds == -1.0 && PyErr_Occurred()) throw py::error_already_set();
      s.timestamp = checked_timestamp(seconds, std::string(device_id));
    }
    s.memory_used_bytes = read_bytes(obj, n.memory_used_bytes, device_id);
    s.memory_total_bytes = read_bytes(obj, n.memory_total_bytes, device_id);
    s.utilization_percent = read_gauge(obj, n.compute_utilization_percent);
    s.power_watts = read_gauge(obj, n.power_watts);
    s.temperature_celsius = read_gauge(obj, n.temperature_celsius);
    s.clock_mhz = read_gauge(obj, n.clock_rate_mhz);
    store_record(handle_for(device_id, s), s, device_id);
  }

  // Many samples of one device as columns; GIL released while storing.
  std::size_t record_columns(const std::string& device_id, const py::handle& timestamps, const py::handle& used,
                             const py::handle& total, const py::handle& utilization, const py::handle& power,
                             const py::handle& temperature, const py::handle& clock) {
    const auto guard = gate_.enter("record metrics");
    const Column ts(timestamps, "timestamps");
    const Column used_c(used, "memory_used_bytes");
    const Column total_c(total, "memory_total_bytes");
    const Column util_c(utilization, "compute_utilization_percent");
    const Column power_c(power, "power_watts");
    const Column temp_c(temperature, "temperature_celsius");
    const Column clock_c(clock, "clock_rate_mhz");
    const std::size_t count = ts.size();
    for (const Column* c : {&used_c, &total_c, &util_c, &power_c, &temp_c, &clock_c}) {
      if (c->present() && c->size() != count) {
        throw InputError(c->name(), std::to_string(c->size()),
                         fmt::format("must have {} values, one per timestamp", count));
      }
    }
    if (!used_c.present() || !total_c.present()) {
      throw InputError("memory_used_bytes", "None", "memory_used_bytes and memory_total_bytes are required");
    }
    if (count == 0) return 0;
    TelemetryStore::Handle handle;
    {
      Sample first;
      first.memory_total_bytes = total_c.integer_at(0);
      handle = handle_for(device_id, first);
    }
    std::size_t i = 0;
    std::exception_ptr failure;
    {
      py::gil_scoped_release release;
      const BatchColumns columns{&ts, &used_c, &total_c, {&util_c, &power_c, &temp_c, &clock_c}};
      // Every sample is validated (values, then order) as record() would; only the
      // newest max_history of them can survive in the ring, so only those are
      // stored: the history ends up exactly as if each had been recorded in turn.
      const std::size_t keep = std::min(count, store_.limits().max_samples);
      std::vector<std::pair<std::size_t, Sample>> tail(keep);
      std::size_t accepted = 0, slot = 0;
      std::optional<Timestamp> newest;
      try {
        if (const auto latest = store_.latest(DeviceKey{kHost, device_id})) newest = latest->timestamp;
        ingest(columns, count, device_id, i, [&](const Sample& s) {
          if (const auto bad = check_sample(s)) throw make_validation_error(device_id, *bad);
          if (newest && s.timestamp < *newest) {
            throw ValidationError(
                device_id, "timestamp", fmt::format("{:.9f}", to_seconds(s.timestamp)),
                fmt::format("must not be older than the device's newest sample ({:.9f})", to_seconds(*newest)),
                RejectReason::out_of_order);
          }
          newest = s.timestamp;
          tail[slot] = {accepted, s};
          slot = slot + 1 == keep ? 0 : slot + 1;  // no division on the hot path
          ++accepted;
        });
      } catch (...) {
        failure = std::current_exception();
      }
      const std::size_t stored = std::min(accepted, keep);
      std::size_t flushing = 0;
      try {
        for (std::size_t j = accepted - stored; j < accepted; ++j) {
          const auto& [index, sample] = tail[j % keep];
          flushing = index;
          store_record(handle, sample, device_id);
        }
      } catch (...) {
        if (!failure) {  // a concurrent recorder got ahead of this batch
          failure = std::current_exception();
          i = flushing;
        }
      }
    }
    if (failure) {
      py::dict attributes;
      attributes["index"] = i;
      attributes["recorded"] = i;
      raise_with_attributes(failure, attributes);
    }
    return count;
  }

  // (timestamp, used, total, util, power, temperature, clock) of the newest sample, or None.
  py::object latest(const std::string& device_id) const {
    const auto guard = gate_enter_const("read metrics");
    if (!contains(device_id)) return py::none();
    const auto s = store_.latest(DeviceKey{kHost, device_id});
    if (!s) return py::none();
    return as_tuple(*s);
  }

  py::list history(const std::string& device_id) const {
    const auto guard = gate_enter_const("read metrics history");
    py::list out;
    if (!contains(device_id)) return out;
    std::vector<Sample> samples;
    {
      py::gil_scoped_release release;
      samples = store_.history(DeviceKey{kHost, device_id});
    }
    for (const Sample& s : samples) out.append(as_tuple(s));
    return out;
  }

  py::object aggregate() const {
    const auto guard = gate_enter_const("aggregate metrics");
    ClusterAggregate a;
    {
      py::gil_scoped_release release;
      a = store_.aggregate();
    }
    py::dict out;
    if (a.devices_with_samples == 0) return py::object(std::move(out));
    out["device_count"] = a.devices_with_samples;
    out["total_memory_bytes"] = a.total_memory_bytes;
    out["used_memory_bytes"] = a.used_memory_bytes;
    out["available_memory_bytes"] = a.available_memory_bytes;
    out["average_utilization_percent"] = a.average_utilization_percent;
    out["average_temperature_celsius"] = a.average_temperature_celsius;
    out["total_power_watts"] = a.total_power_watts;
    return py::object(std::move(out));
  }

  std::optional<std::string> select(std::int64_t min_memory_bytes) const {
    const auto guard = gate_enter_const("select a device");
    const auto min_free = static_cast<std::uint64_t>(std::max<std::int64_t>(min_memory_bytes, 0));
    py::gil_scoped_release release;
    const std::vector<DeviceState> states = store_.states();
    const Selection selection = select_device(states, scoring_, now_timestamp(), min_free);
    if (!selection.device) return std::nullopt;
    return selection.device->local_id;
  }

  // (device_id, score) for every device with metrics, best first; then ineligible ones.
  std::vector<std::pair<std::string, double>> rank() const {
    const auto guard = gate_enter_const("rank devices");
    py::gil_scoped_release release;
    const std::vector<DeviceState> states = store_.states();
    std::vector<RankedDevice> ranked = rank_devices(states, scoring_, now_timestamp(), 0);
    std::vector<std::pair<std::string, double>> out;
    for (const RankedDevice& r : ranked) {
      if (r.breakdown) out.emplace_back(r.key.local_id, r.breakdown->score);
    }
    std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    return out;
  }

  bool shutdown() {
    bool first = false;
    {
      py::gil_scoped_release release;
      first = gate_.close();
      if (first) store_.clear();
    }
    if (first) {
      last_handle_ = nullptr;
      handles_.clear();
    }
    return first;
  }
  bool is_shut_down() const noexcept { return gate_.closed(); }

 private:
  Gate::Guard gate_enter_const(const char* operation) const { return const_cast<Gate&>(gate_).enter(operation); }

  // Stores; a rejection names the seed's device id, not the store's "exo/" key.
  void store_record(const TelemetryStore::Handle& handle, const Sample& s, std::string_view device_id) {
    try {
      store_.record(handle, s);
    } catch (const ValidationError& e) {
      throw ValidationError(std::string(device_id), e.field(), e.value(), e.rule(), e.reason());
    }
  }

  const TelemetryStore::Handle& handle_for(std::string_view device_id, const Sample& sample) {
    if (last_handle_ != nullptr && device_id == last_id_) return *last_handle_;
    if (const auto it = handles_.find(device_id); it != handles_.end()) {
      last_id_.assign(device_id);
      last_handle_ = &it->second;
      return it->second;
    }
    if (!auto_register_) {
      throw ValidationError(std::string(device_id), "device_id", std::string(device_id),
                            fmt::format("Device {} not registered", device_id), RejectReason::unknown_device);
    }
    // A standalone collector learns devices from their first metrics (as the seed's did).
    validate_sample(std::string(device_id), sample);
    DeviceInfo info;
    info.key = DeviceKey{kHost, std::string(device_id)};
    info.backend = "exo_compat";
    info.memory_total_bytes = static_cast<std::uint64_t>(std::max<std::int64_t>(sample.memory_total_bytes, 0));
    last_handle_ = nullptr;
    auto [it, inserted] = handles_.emplace(std::string(device_id), store_.add_device(std::move(info)));
    return it->second;
  }

  static py::tuple as_tuple(const Sample& s) {
    return py::make_tuple(to_seconds(s.timestamp), s.memory_used_bytes, s.memory_total_bytes,
                          gauge_value(s.utilization_percent), gauge_value(s.power_watts),
                          gauge_value(s.temperature_celsius), clock_value(s.clock_mhz));
  }

  TelemetryStore store_;
  ScoringConfig scoring_;
  bool auto_register_;
  Gate gate_;
  std::unordered_map<std::string, TelemetryStore::Handle, StringHash, std::equal_to<>> handles_;
  // One-entry lookup cache (GIL-held like the map); reset whenever the map changes.
  std::string last_id_;
  const TelemetryStore::Handle* last_handle_ = nullptr;
};

// record() as a plain CPython METH_O function: the per-call path skips
// pybind11's argument dispatch (its allocations and thread-local bookkeeping).
struct FastRecord {
  CompatCore* core;
  PyObject* owner;  // the _CompatCore Python object, kept alive by the capsule
};

PyObject* fast_record(PyObject* self, PyObject* metrics) {
  auto* bound = static_cast<FastRecord*>(PyCapsule_GetPointer(self, nullptr));
  if (bound == nullptr) return nullptr;
  try {
    bound->core->record(metrics);
  } catch (py::error_already_set& e) {
    e.restore();
    return nullptr;
  } catch (const py::builtin_exception& e) {
    e.set_error();
    return nullptr;
  } catch (...) {
    try {
      translate_error(std::current_exception());
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
      PyErr_SetString(PyExc_RuntimeError, "unknown C++ error");
    }
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "unknown C++ error");
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyMethodDef fast_record_def = {"record", &fast_record, METH_O,
                               "record(metrics): validate and store one GPUMetrics (the fast path)"};

py::object make_fast_record(const py::object& core_object) {
  auto* bound = new FastRecord{core_object.cast<CompatCore*>(), core_object.ptr()};
  Py_INCREF(bound->owner);
  PyObject* capsule = PyCapsule_New(bound, nullptr, [](PyObject* c) {
    auto* b = static_cast<FastRecord*>(PyCapsule_GetPointer(c, nullptr));
    Py_DECREF(b->owner);
    delete b;
  });
  if (capsule == nullptr) {
    Py_DECREF(bound->owner);
    delete bound;
    throw py::error_already_set();
  }
  const py::object owner = py::reinterpret_steal<py::object>(capsule);
  PyObject* function = PyCFunction_New(&fast_record_def, capsule);
  if (function == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(function);
}

// Weights in the order of `ids`, checked with the device named in the error.
std::vector<double> capacity_weights(const py::dict& capacities, const py::list& ids) {
  std::vector<double> weights;
  weights.reserve(ids.size());
  for (const py::handle id : ids) {
    const py::handle value = capacities[id];
    const double w = PyFloat_AsDouble(value.ptr());
    if (w == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    const std::string field = fmt::format("capacities[{}]", py::repr(id).cast<std::string>());
    if (!std::isfinite(w)) throw PlanError(field, fmt::format("{}", w), "must be a finite number");
    if (w < 0) throw PlanError(field, fmt::format("{}", w), "must be non-negative");
    weights.push_back(w);
  }
  double total = 0;
  for (const double w : weights) total += w;
  if (!(total > 0) || !std::isfinite(total)) {
    throw PlanError("capacities", fmt::format("{}", total), "Total capacity must be positive and finite");
  }
  return weights;
}

py::list as_list(const py::handle& items) {
  if (PyList_CheckExact(items.ptr())) return py::reinterpret_borrow<py::list>(items);
  return py::list(py::reinterpret_borrow<py::object>(items));
}

py::object slice(const py::list& items, std::uint64_t start, std::uint64_t count) {
  return py::reinterpret_steal<py::object>(
      PyList_GetSlice(items.ptr(), static_cast<Py_ssize_t>(start), static_cast<Py_ssize_t>(start + count)));
}

// The seed's distribute_by_capacity shape ({id: [items]} in the caller's key
// order, contiguous slices in sorted-id order) with largest remainder.
// Returns (distribution, unplaced).
py::tuple distribute_by_capacity(const py::dict& capacities, const py::handle& workload_items) {
  const py::list items = as_list(workload_items);
  py::dict distribution;
  for (const auto& [id, value] : capacities) distribution[id] = py::list();
  const auto n = static_cast<std::uint64_t>(items.size());
  if (capacities.empty()) return py::make_tuple(distribution, items);  // nobody to take them
  py::list ids(py::module_::import("builtins").attr("sorted")(capacities));
  const std::vector<double> weights = capacity_weights(capacities, ids);
  std::vector<std::uint64_t> counts;
  {
    py::gil_scoped_release release;
    counts = apportion(weights, n);
  }
  std::uint64_t start = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    distribution[ids[i]] = slice(items, start, counts[i]);
    start += counts[i];
  }
  return py::make_tuple(distribution, py::list());
}

// The seed's distribute_uniform shape (contiguous, the first devices one more),
// but items past max_per_device are returned as unplaced, never dropped.
py::tuple distribute_uniform(const py::handle& devices_in, const py::handle& workload_items,
                             std::optional<std::int64_t> max_per_device) {
  const py::list items = as_list(workload_items);
  const py::list devices = as_list(devices_in);
  py::dict distribution;
  for (const py::handle d : devices) distribution[d] = py::list();
  const auto n = static_cast<std::uint64_t>(items.size());
  if (devices.empty()) return py::make_tuple(distribution, items);
  if (static_cast<std::size_t>(py::len(distribution)) != devices.size()) {
    throw PlanError("devices", py::repr(devices).cast<std::string>(), "must not name the same device twice");
  }
  if (max_per_device && *max_per_device < 0) {
    throw PlanError("max_per_device", std::to_string(*max_per_device), "must be >= 0");
  }
  std::vector<DeviceKey> keys(devices.size());
  for (std::size_t i = 0; i < keys.size(); ++i) keys[i].local_id = std::to_string(i);  // positions; ids stay Python
  Plan plan;
  {
    py::gil_scoped_release release;
    std::optional<std::uint64_t> cap;
    if (max_per_device) cap = static_cast<std::uint64_t>(*max_per_device);
    plan = plan_uniform(keys, n, cap);
  }
  for (std::size_t i = 0; i < plan.assignments.size(); ++i) {
    const Assignment& a = plan.assignments[i];
    distribution[devices[i]] = slice(items, a.start, a.count);
  }
  return py::make_tuple(distribution, slice(items, plan.total_items - plan.unassigned, plan.unassigned));
}

// The core's score of one seed GPUMetrics (live memory total, the seed's weights); NaN → ValidationError.
double score_metrics(const py::handle& metrics) {
  const Names& n = names();
  PyObject* obj = metrics.ptr();
  const std::string device = py::str(get_attr(obj, n.device_id)).cast<std::string>();
  Sample s;
  s.timestamp = now_timestamp();
  s.memory_used_bytes = read_bytes(obj, n.memory_used_bytes, device);
  s.memory_total_bytes = read_bytes(obj, n.memory_total_bytes, device);
  s.utilization_percent = read_gauge(obj, n.compute_utilization_percent);
  s.power_watts = read_gauge(obj, n.power_watts);
  s.temperature_celsius = read_gauge(obj, n.temperature_celsius);
  s.clock_mhz = read_gauge(obj, n.clock_rate_mhz);
  validate_sample(device, s);
  DeviceInfo info;
  info.key = DeviceKey{kHost, device};
  return score_sample(info, s, ScoringConfig{}).score;
}

}  // namespace

void bind_compat(py::module_& m) {
  py::class_<CompatCore>(m, "_CompatCore", "Native core of gpucluster.exo_compat (not a public API).")
      .def(py::init<std::size_t, bool, std::optional<double>>(), py::arg("max_history") = 100,
           py::arg("auto_register") = false, py::arg("staleness_seconds") = py::none())
      .def("register_device", &CompatCore::register_device, py::arg("device_id"), py::arg("name") = "",
           py::arg("vendor") = "", py::arg("device_type") = "", py::arg("memory_bytes") = 0,
           py::arg("compute_units") = py::none(), py::arg("driver_version") = py::none(),
           py::arg("bandwidth_gbps") = py::none(), py::arg("compute_capability") = py::none())
      .def("unregister_device", &CompatCore::unregister_device, py::arg("device_id"))
      .def("__contains__", [](const CompatCore& c, const std::string& id) { return c.contains(id); })
      .def("record", &CompatCore::record, py::arg("metrics"))
      .def_property_readonly("fast_record", [](const py::object& self) { return make_fast_record(self); })
      .def(
          "record_many",
          [](CompatCore& c, const py::iterable& metrics) {
            std::size_t count = 0;
            for (const py::handle item : metrics) {
              try {
                c.record(item);
              } catch (...) {
                py::dict attributes;
                attributes["index"] = count;
                attributes["recorded"] = count;
                raise_with_attributes(std::current_exception(), attributes);
              }
              ++count;
            }
            return count;
          },
          py::arg("metrics"))
      .def("record_columns", &CompatCore::record_columns, py::arg("device_id"), py::arg("timestamps"),
           py::arg("memory_used_bytes"), py::arg("memory_total_bytes"),
           py::arg("compute_utilization_percent") = py::none(), py::arg("power_watts") = py::none(),
           py::arg("temperature_celsius") = py::none(), py::arg("clock_rate_mhz") = py::none())
      .def("latest", &CompatCore::latest, py::arg("device_id"))
      .def("history", &CompatCore::history, py::arg("device_id"))
      .def("aggregate", &CompatCore::aggregate)
      .def("select", &CompatCore::select, py::arg("min_memory_bytes") = 0)
      .def("rank", &CompatCore::rank)
      .def("shutdown", &CompatCore::shutdown)
      .def_property_readonly("is_shut_down", &CompatCore::is_shut_down);
  m.def("_distribute_by_capacity", &distribute_by_capacity, py::arg("capacities"), py::arg("workload_items"));
  m.def("_distribute_uniform", &distribute_uniform, py::arg("devices"), py::arg("workload_items"),
        py::arg("max_per_device") = py::none());
  m.def("_score_metrics", &score_metrics, py::arg("metrics"));
}

}  // namespace gpucluster::python
