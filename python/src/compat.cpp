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

#if defined(__x86_64__)
#endif

#include <algorithm>
#include <atomic>
#include <unordered_map>
#include <utility>
#include <vector>

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

// The device id of an error message: the metrics' device_id (a str, already read).
std::string id_text(PyObject* id) {
  Py_ssize_t length = 0;
  const char* utf8 = PyUnicode_AsUTF8AndSize(id, &length);
  if (utf8 == nullptr) throw py::error_already_set();
  return {utf8, static_cast<std::size_t>(length)};
}

// A byte count: an int, or an integral float. Non-finite → ValidationError.
std::int64_t read_bytes(PyObject* obj, const py::str& name, PyObject* id) {
  PyObject* v = PyObject_GetAttr(obj, name.ptr());
  if (v == nullptr) throw py::error_already_set();
  const py::object owner = py::reinterpret_steal<py::object>(v);
  if (PyLong_Check(v)) {
    int overflow = 0;
    const long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow != 0) {
      throw ValidationError(id_text(id), name.cast<std::string>(), py::str(owner).cast<std::string>(),
                            "must fit in 64 bits", RejectReason::out_of_range);
    }
    if (n == -1 && PyErr_Occurred()) throw py::error_already_set();
    return n;
  }
  const double d = PyFloat_AsDouble(v);
  if (d == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  if (!std::isfinite(d)) {
    throw ValidationError(id_text(id), name.cast<std::string>(), fmt::format("{}", d), "must be a finite number",
                          RejectReason::not_finite);
  }
  if (d != std::floor(d) || std::fabs(d) > 9.2e18) {
    throw ValidationError(id_text(id), name.cast<std::string>(), fmt::format("{}", d),
                          "must be a whole number of bytes", RejectReason::out_of_range);
  }
  return static_cast<std::int64_t>(d);
}

// A gauge: a number, or None (unavailable), stored as float into `out` (NaN stays
// NaN and is rejected by validation). Written in place: returning the optional
// by value stalls on store forwarding, once per gauge per call.
void read_gauge(PyObject* obj, const py::str& name, std::optional<float>& out) {
  PyObject* v = PyObject_GetAttr(obj, name.ptr());
  if (v == nullptr) throw py::error_already_set();
  if (v == Py_None) {
    Py_DECREF(v);
    return;
  }
  const double d = PyFloat_CheckExact(v) ? PyFloat_AS_DOUBLE(v) : PyFloat_AsDouble(v);
  Py_DECREF(v);
  if (d == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  out = static_cast<float>(d);
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
      : store_(HistoryLimits{max_history, std::nullopt, std::nullopt}), auto_register_(auto_register) {
    if (staleness_seconds) {
      if (!std::isfinite(*staleness_seconds) || *staleness_seconds <= 0 || *staleness_seconds > kMaxDurationSeconds) {
        throw InputError("staleness_seconds", fmt::format("{}", *staleness_seconds),
                         "must be a positive number of seconds up to 9.2e9");
      }
      scoring_.staleness = duration_from_seconds(*staleness_seconds);
    } else {
      // The seed never ages metrics out; timestamps are bounded to [0, kMaxTimestampSeconds],
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
    forget_cached_handle();
    handles_[device_id] = store_.add_device(std::move(info));
  }

  bool unregister_device(const std::string& device_id) {
    const auto guard = gate_.enter("unregister a device");
    const auto it = handles_.find(device_id);
    if (it == handles_.end()) return false;
    forget_cached_handle();
    handles_.erase(it);
    return store_.remove_device(DeviceKey{kHost, device_id});
  }

  bool contains(std::string_view device_id) const { return handles_.find(device_id) != handles_.end(); }

  // The hot path: one GPUMetrics-like object, with the GIL. Reads in the order
  // device_id, timestamp, byte counts, gauges; the first bad one raises.
  void record(PyObject* obj) {
    const auto guard = gate_.enter("record metrics");
    const Names& n = names();
    PyObject* id = PyObject_GetAttr(obj, n.device_id.ptr());
    if (id == nullptr) throw py::error_already_set();
    const py::object id_owner = py::reinterpret_steal<py::object>(id);
    Py_ssize_t length = 0;
    const char* utf8 = PyUnicode_Check(id) ? PyUnicode_AsUTF8AndSize(id, &length) : nullptr;
    if (utf8 == nullptr) {
      if (PyErr_Occurred()) throw py::error_already_set();
      throw py::type_error("metrics.device_id must be a str");
    }
    Sample s;
    {
      PyObject* t = PyObject_GetAttr(obj, n.timestamp.ptr());
      if (t == nullptr) throw py::error_already_set();
      const double seconds = PyFloat_CheckExact(t) ? PyFloat_AS_DOUBLE(t) : PyFloat_AsDouble(t);
      Py_DECREF(t);
      if (seconds == -1.0 && PyErr_Occurred()) throw py::error_already_set();
      if (timestamp_seconds_in_range(seconds)) {  // checked_timestamp's conversion, without its std::string
        s.timestamp = timestamp_from_seconds(seconds);
      } else {
        s.timestamp = checked_timestamp(seconds, id_text(id));  // throws
      }
    }
    s.memory_used_bytes = read_bytes(obj, n.memory_used_bytes, id);
    s.memory_total_bytes = read_bytes(obj, n.memory_total_bytes, id);
    read_gauge(obj, n.compute_utilization_percent, s.utilization_percent);
    read_gauge(obj, n.power_watts, s.power_watts);
    read_gauge(obj, n.temperature_celsius, s.temperature_celsius);
    read_gauge(obj, n.clock_rate_mhz, s.clock_mhz);
    // The attribute reads above may have run Python code (properties) that changed
    // the devices, so the id is resolved only now, and re-read as UTF-8 (cheap: cached).
    const std::string_view device_id(PyUnicode_AsUTF8AndSize(id, &length), static_cast<std::size_t>(length));
    if (id == last_id_object_.ptr() && last_handle_ != nullptr) {  // the same str object: the same id
      store_record(*last_handle_, s, device_id);
      return;
    }
    const TelemetryStore::Handle& handle = handle_for(device_id, s);
    if (&handle == last_handle_) last_id_object_ = id_owner;
    store_record(handle, s, device_id);
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
    std::size_t index = 0;
    std::exception_ptr failure;
    {
      py::gil_scoped_release release;
      const BatchColumns columns{&ts, &used_c, &total_c, {&util_c, &power_c, &temp_c, &clock_c}};
      try {
        // 1. Every sample is checked (values, then order inside the batch) without
        //    a lock; `accepted` leading samples pass.
        const ValidationLimits limits;
        const Timestamp newest_allowed = now_timestamp() + limits.max_future_skew;
        const std::size_t accepted =
            validate_batch(columns, count, device_id, limits, newest_allowed.time_since_epoch().count(), failure);
        index = accepted;
        // 2. One store call under one lock: the first sample (the order against the
        //    device's newest is checked there) and the newest max_history accepted
        //    ones, which are all the ring can keep: the history ends exactly as if
        //    each had been recorded in turn.
        bool rejected = false;
        if (accepted > 0) {
          const std::size_t tail = accepted - std::min(accepted, store_.limits().max_samples);
          std::vector<Sample> samples;
          samples.reserve(accepted - tail + 1);
          if (tail > 0) samples.push_back(batch_sample(columns, 0, device_id));
          for (std::size_t j = tail; j < accepted; ++j) samples.push_back(batch_sample(columns, j, device_id));
          const TelemetryStore::BatchResult result = store_.record_batch(handle, samples);
          if (result.rejection) {  // in practice only samples[0]: older than the newest, or the device removed
            const std::size_t k = result.accepted;
            index = tail > 0 && k > 0 ? tail + k - 1 : k;
            failure = renamed(*result.rejection, device_id);
            rejected = true;
          }
        }
        // 3. A sample validate_batch left to the store (a retransmission, a
        //    conflict, out of order, from the future): the store settles the rest
        //    of the batch sample by sample, up to the first one with bad values.
        if (!rejected && !failure && accepted < count) {
          std::vector<Sample> rest;
          std::exception_ptr bad_values;
          for (std::size_t j = accepted; j < count; ++j) {
            try {
              Sample s = batch_sample(columns, j, device_id);
              if (const auto bad = check_sample(s, limits)) throw make_validation_error(device_id, *bad);
              rest.push_back(s);
            } catch (...) {
              bad_values = std::current_exception();
              break;
            }
          }
          const TelemetryStore::BatchResult result = store_.record_batch(handle, rest);
          index = accepted + result.accepted;
          if (result.rejection) {
            failure = renamed(*result.rejection, device_id);
          } else if (bad_values) {
            failure = bad_values;
          } else {
            index = count;
          }
        }
      } catch (...) {
        failure = std::current_exception();
      }
    }
    if (failure) {
      py::dict attributes;
      attributes["index"] = index;
      attributes["recorded"] = index;
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
      forget_cached_handle();
      handles_.clear();
    }
    return first;
  }
  bool is_shut_down() const noexcept { return gate_.closed(); }

 private:
  Gate::Guard gate_enter_const(const char* operation) const { return const_cast<Gate&>(gate_).enter(operation); }

  // The store's rejection, naming the seed's device id rather than the store's "exo/" key.
  static std::exception_ptr renamed(const ValidationError& e, std::string_view device_id) {
    return std::make_exception_ptr(ValidationError(std::string(device_id), e.field(), e.value(), e.rule(), e.reason()));
  }

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
      forget_cached_handle();
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
    forget_cached_handle();
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

// record() as plain CPython METH_O functions: the per-call path skips
// pybind11's argument dispatch (its allocations and thread-local bookkeeping).
struct FastRecord {
  CompatCore* core;
  PyObject* owner;  // the _CompatCore Python object, kept alive by the capsule
};

// Runs core->record(metrics); false with the Python error set if it raised.
bool run_record(CompatCore* core, PyObject* metrics) noexcept {
  try {
    core->record(metrics);
    return true;
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const py::builtin_exception& e) {
    e.set_error();
  } catch (...) {
    try {
      translate_error(std::current_exception());
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
      PyErr_SetString(PyExc_RuntimeError, "unknown C++ error");
    }
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "unknown C++ error");
  }
  return false;
}

PyObject* fast_record(PyObject* self, PyObject* metrics) {
  auto* bound = static_cast<FastRecord*>(PyCapsule_GetPointer(self, nullptr));
  if (bound == nullptr) return nullptr;
  if (!run_record(bound->core, metrics)) return nullptr;
  Py_RETURN_NONE;
}

// What `await manager.record_metrics(m)` awaits: a native stand-in for the
// seed's coroutine, which records `m` when it is first resumed (awaited, sent
// None, or stepped by a Task) and then returns None, raising the record's
// error there. It is a collections.abc.Coroutine (__await__, send, throw,
// close), so asyncio.create_task/ensure_future/gather/run take it; like a
// coroutine it runs once, and one dropped unawaited warns (RuntimeWarning).
// Costs one small allocation, against a coroutine's frame and object.
struct PendingRecord {
  PyObject ob_base;  // PyObject_HEAD
  CompatCore* core;
  PyObject* owner;    // the _CompatCore object (strong): keeps `core` alive
  PyObject* metrics;  // strong; nullptr once run, thrown into or closed
};

PyTypeObject* pending_record_type = nullptr;

// A few freed PendingRecords, reused (as CPython's own free lists do): each
// await then costs no allocator call. Touched only with the GIL held.
constexpr int kPendingFreeMax = 16;
PendingRecord* pending_free[kPendingFreeMax];
int pending_free_count = 0;

PySendResult pending_send(PyObject* self, PyObject* arg, PyObject** result) {
  auto* p = reinterpret_cast<PendingRecord*>(self);
  *result = nullptr;
  if (p->metrics == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
    return PYGEN_ERROR;
  }
  if (arg != nullptr && arg != Py_None) {
    PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started coroutine");
    return PYGEN_ERROR;
  }
  PyObject* metrics = std::exchange(p->metrics, nullptr);
  const bool ok = run_record(p->core, metrics);
  Py_DECREF(metrics);
  if (!ok) return PYGEN_ERROR;
  Py_INCREF(Py_None);
  *result = Py_None;
  return PYGEN_RETURN;
}

PyObject* pending_iternext(PyObject* self) {
  PyObject* result = nullptr;
  if (pending_send(self, Py_None, &result) == PYGEN_RETURN) Py_DECREF(result);  // returned: StopIteration
  return nullptr;
}

PyObject* pending_await(PyObject* self) {
  Py_INCREF(self);
  return self;
}

PyObject* pending_send_method(PyObject* self, PyObject* value) {
  PyObject* result = nullptr;
  const PySendResult status = pending_send(self, value, &result);
  if (status == PYGEN_RETURN) {
    Py_DECREF(result);
    PyErr_SetNone(PyExc_StopIteration);
  }
  return nullptr;
}

// throw(exception) or throw(type[, value[, traceback]]): the record never runs
// and the exception is raised, as from a coroutine that has not started.
PyObject* pending_throw(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1 || nargs > 3) {
    PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
    return nullptr;
  }
  Py_CLEAR(reinterpret_cast<PendingRecord*>(self)->metrics);
  PyObject* type = args[0];
  PyObject* value = nargs > 1 && args[1] != Py_None ? args[1] : nullptr;
  PyObject* traceback = nargs > 2 && args[2] != Py_None ? args[2] : nullptr;
  if (traceback != nullptr && !PyTraceBack_Check(traceback)) {
    PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
    return nullptr;
  }
  if (PyExceptionInstance_Check(type)) {
    if (value != nullptr) {
      PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
      return nullptr;
    }
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(type)), type);
  } else if (PyExceptionClass_Check(type)) {
    PyErr_SetObject(type, value);
  } else {
    PyErr_Format(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException, not %s",
                 Py_TYPE(type)->tp_name);
    return nullptr;
  }
  if (traceback != nullptr) {
    PyObject *t = nullptr, *v = nullptr, *tb = nullptr;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (v != nullptr) PyException_SetTraceback(v, traceback);
    Py_XDECREF(tb);
    Py_INCREF(traceback);
    PyErr_Restore(t, v, traceback);
  }
  return nullptr;
}

PyObject* pending_close(PyObject* self, PyObject* /*unused*/) {
  Py_CLEAR(reinterpret_cast<PendingRecord*>(self)->metrics);
  Py_RETURN_NONE;
}

int pending_traverse(PyObject* self, visitproc visit, void* arg) {
  auto* p = reinterpret_cast<PendingRecord*>(self);
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(p->owner);
  Py_VISIT(p->metrics);
  return 0;
}

int pending_clear(PyObject* self) {
  auto* p = reinterpret_cast<PendingRecord*>(self);
  Py_CLEAR(p->metrics);
  Py_CLEAR(p->owner);
  return 0;
}

void pending_dealloc(PyObject* self) {
  auto* p = reinterpret_cast<PendingRecord*>(self);
  PyTypeObject* type = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  if (p->metrics != nullptr) {  // never awaited: nothing was recorded, as with the seed's coroutine
    PyObject *t = nullptr, *v = nullptr, *tb = nullptr;
    PyErr_Fetch(&t, &v, &tb);
    if (PyErr_WarnEx(PyExc_RuntimeWarning, "coroutine 'record_metrics' was never awaited", 1) < 0) {
      PyErr_WriteUnraisable(nullptr);
    }
    PyErr_Restore(t, v, tb);
  }
  pending_clear(self);
  if (pending_free_count < kPendingFreeMax) {
    pending_free[pending_free_count++] = p;  // memory kept for record_later
  } else {
    PyObject_GC_Del(self);
  }
  Py_DECREF(type);
}

PyMethodDef pending_methods[] = {
    {"send", &pending_send_method, METH_O, "send(None): records the sample; raises StopIteration (returns None)."},
    {"throw", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&pending_throw)), METH_FASTCALL,
     "throw(exception): drops the sample and raises the exception."},
    {"close", &pending_close, METH_NOARGS, "close(): drops the sample unrecorded."},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot pending_slots[] = {
    {Py_am_await, reinterpret_cast<void*>(&pending_await)},
    {Py_am_send, reinterpret_cast<void*>(&pending_send)},
    {Py_tp_iternext, reinterpret_cast<void*>(&pending_iternext)},
    {Py_tp_methods, pending_methods},
    {Py_tp_traverse, reinterpret_cast<void*>(&pending_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(&pending_clear)},
    {Py_tp_dealloc, reinterpret_cast<void*>(&pending_dealloc)},
    {Py_tp_doc, const_cast<char*>("A record_metrics call waiting to be awaited (a native coroutine stand-in).")},
    {0, nullptr},
};

PyType_Spec pending_spec = {"gpucluster._native._PendingRecord", sizeof(PendingRecord), 0,
                            Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, pending_slots};

PyObject* record_later(PyObject* self, PyObject* metrics) {
  auto* bound = static_cast<FastRecord*>(PyCapsule_GetPointer(self, nullptr));
  if (bound == nullptr) return nullptr;
  PendingRecord* p = nullptr;
  if (pending_free_count > 0) {
    p = pending_free[--pending_free_count];
    PyObject_Init(reinterpret_cast<PyObject*>(p), pending_record_type);  // refcount 1, a type reference
  } else {
    p = PyObject_GC_New(PendingRecord, pending_record_type);
    if (p == nullptr) return nullptr;
  }
  p->core = bound->core;
  Py_INCREF(bound->owner);
  p->owner = bound->owner;
  Py_INCREF(metrics);
  p->metrics = metrics;
  PyObject_GC_Track(p);
  return reinterpret_cast<PyObject*>(p);
}

PyMethodDef fast_record_def = {"record", &fast_record, METH_O,
                               "record(metrics): validate and store one GPUMetrics (the fast path)"};
PyMethodDef record_later_def = {"record_metrics", &record_later, METH_O,
                                "record_metrics(metrics): an awaitable that validates and stores one GPUMetrics "
                                "when awaited (the seed's async record_metrics)"};

py::object bind_to_core(const py::object& core_object, PyMethodDef* def) {
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
  PyObject* function = PyCFunction_New(def, capsule);
  if (function == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(function);
}

// Weights in the order of `ids` (a list), checked with the device named in the error.
std::vector<double> capacity_weights(const py::dict& capacities, const py::list& ids) {
  const bool exact = PyDict_CheckExact(capacities.ptr());
  const auto field = [](PyObject* id) { return fmt::format("capacities[{}]", py::repr(id).cast<std::string>()); };
  std::vector<double> weights;
  weights.reserve(ids.size());
  for (Py_ssize_t i = 0, n = PyList_GET_SIZE(ids.ptr()); i < n; ++i) {
    PyObject* id = PyList_GET_ITEM(ids.ptr(), i);
    py::object value;
    if (exact) {
      PyObject* v = PyDict_GetItemWithError(capacities.ptr(), id);  // borrowed
      if (v == nullptr) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, id);
        throw py::error_already_set();
      }
      value = py::reinterpret_borrow<py::object>(v);
    } else {
      value = py::reinterpret_steal<py::object>(PyObject_GetItem(capacities.ptr(), id));  // a subclass's __getitem__
      if (!value) throw py::error_already_set();
    }
    const double w = PyFloat_CheckExact(value.ptr()) ? PyFloat_AS_DOUBLE(value.ptr()) : PyFloat_AsDouble(value.ptr());
    if (w == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    if (!std::isfinite(w)) throw PlanError(field(id), fmt::format("{}", w), "must be a finite number");
    if (w < 0) throw PlanError(field(id), fmt::format("{}", w), "must be non-negative");
    weights.push_back(w);
  }
  // Only a positive total is required: the sum of finite capacities may pass
  // DBL_MAX (two of 1e308), and apportion() is exact for those.
  if (std::none_of(weights.begin(), weights.end(), [](double w) { return w > 0; })) {
    throw PlanError("capacities", "0", "Total capacity must be positive: at least one device needs a capacity > 0");
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

// list[start:start + count] as a new list (a new reference, or nullptr with the error set).
PyObject* copy_slice(PyObject* list, Py_ssize_t start, Py_ssize_t count) {
  return PyList_GetSlice(list, start, start + count);
}

// The per-device slices of one plan. Each new list stays out of the cyclic GC
// until all are built: their allocations would otherwise trigger young-generation
// collections that traverse the slices built so far, item by item (~7 ms for 10^6
// items in 1,000 slices, more than the slicing itself). They are tracked again,
// as any list, before the call returns (and on the way out of an exception).
class Slices {
 public:
  explicit Slices(const py::list& items, std::size_t parts) : items_(items) { untracked_.reserve(parts); }
  Slices(const Slices&) = delete;
  Slices& operator=(const Slices&) = delete;
  ~Slices() {
    for (const py::object& list : untracked_) PyObject_GC_Track(list.ptr());
  }

  // items[start:start + count], a new list.
  py::object take(std::uint64_t start, std::uint64_t count) {
    py::object list = py::reinterpret_steal<py::object>(
        copy_slice(items_.ptr(), static_cast<Py_ssize_t>(start), static_cast<Py_ssize_t>(count)));
    if (!list) throw py::error_already_set();
    if (PyObject_GC_IsTracked(list.ptr()) != 0) {
      PyObject_GC_UnTrack(list.ptr());
      untracked_.push_back(list);  // kept alive until tracked again
    }
    return list;
  }

 private:
  const py::list& items_;
  std::vector<py::object> untracked_;
};

// The seed's distribute_by_capacity shape ({id: [items]} in the caller's key
// order, contiguous slices in sorted-id order) with largest remainder.
// Returns (distribution, unplaced).
py::tuple distribute_by_capacity(const py::dict& capacities, const py::handle& workload_items) {
  const py::list items = as_list(workload_items);
  const auto n = static_cast<std::uint64_t>(items.size());
  py::dict distribution;
  // Every device in the caller's key order; each value is replaced by its slice
  // below (an exact dict's keys are exactly the sorted ids, so None will do).
  PyObject* placeholder = PyDict_CheckExact(capacities.ptr()) ? Py_None : nullptr;
  for (const auto& [id, value] : capacities) {
    if (placeholder != nullptr) {
      if (PyDict_SetItem(distribution.ptr(), id.ptr(), placeholder) < 0) throw py::error_already_set();
    } else {
      distribution[id] = py::list();
    }
  }
  if (capacities.empty()) return py::make_tuple(distribution, items);  // nobody to take them
  // sorted(capacities): the keys as iteration gives them, then list.sort().
  py::list ids = py::reinterpret_steal<py::list>(placeholder != nullptr ? PyDict_Keys(capacities.ptr())
                                                                        : PySequence_List(capacities.ptr()));
  if (!ids || PyList_Sort(ids.ptr()) < 0) throw py::error_already_set();
  const std::vector<double> weights = capacity_weights(capacities, ids);
  std::vector<std::uint64_t> counts;
  {
    py::gil_scoped_release release;
    counts = apportion(weights, n);
  }
  Slices slices(items, counts.size());
  std::uint64_t start = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    const py::object part = slices.take(start, counts[i]);
    if (PyDict_SetItem(distribution.ptr(), PyList_GET_ITEM(ids.ptr(), i), part.ptr()) < 0) {
      throw py::error_already_set();
    }
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
  const py::str id(get_attr(obj, n.device_id));
  const auto device = id.cast<std::string>();
  Sample s;
  s.timestamp = now_timestamp();
  s.memory_used_bytes = read_bytes(obj, n.memory_used_bytes, id.ptr());
  s.memory_total_bytes = read_bytes(obj, n.memory_total_bytes, id.ptr());
  read_gauge(obj, n.compute_utilization_percent, s.utilization_percent);
  read_gauge(obj, n.power_watts, s.power_watts);
  read_gauge(obj, n.temperature_celsius, s.temperature_celsius);
  read_gauge(obj, n.clock_rate_mhz, s.clock_mhz);
  validate_sample(device, s);
  DeviceInfo info;
  info.key = DeviceKey{kHost, device};
  return score_sample(info, s, ScoringConfig{}).score;
}

}  // namespace

void bind_compat(py::module_& m) {
  pending_record_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&pending_spec));  // lives as long as the module
  if (pending_record_type == nullptr) throw py::error_already_set();
  m.add_object("_PendingRecord", py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(pending_record_type)));
  py::class_<CompatCore>(m, "_CompatCore", "Native core of gpucluster.exo_compat (not a public API).")
      .def(py::init<std::size_t, bool, std::optional<double>>(), py::arg("max_history") = 100,
           py::arg("auto_register") = false, py::arg("staleness_seconds") = py::none())
      .def("register_device", &CompatCore::register_device, py::arg("device_id"), py::arg("name") = "",
           py::arg("vendor") = "", py::arg("device_type") = "", py::arg("memory_bytes") = 0,
           py::arg("compute_units") = py::none(), py::arg("driver_version") = py::none(),
           py::arg("bandwidth_gbps") = py::none(), py::arg("compute_capability") = py::none())
      .def("unregister_device", &CompatCore::unregister_device, py::arg("device_id"))
      .def("__contains__", [](const CompatCore& c, const std::string& id) { return c.contains(id); })
      .def(
          "record", [](CompatCore& c, const py::handle& metrics) { c.record(metrics.ptr()); }, py::arg("metrics"))
      .def_property_readonly("fast_record", [](const py::object& self) { return bind_to_core(self, &fast_record_def); })
      .def_property_readonly("record_later",
                             [](const py::object& self) { return bind_to_core(self, &record_later_def); })
      .def(
          "record_many",
          [](CompatCore& c, const py::iterable& metrics) {
            std::size_t count = 0;
            for (const py::handle item : metrics) {
              try {
                c.record(item.ptr());
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
