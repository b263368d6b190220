// exo_compat's native core (compat_core.hpp): registration, the record hot
// path, batch ingest, reads, selection and shutdown.

#include "compat_core.hpp"

#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "column.hpp"
#include "compat_metrics.hpp"
#include "gpucluster/model/validation.hpp"

namespace gpucluster::python::compat {

CompatCore::CompatCore(std::size_t max_history, bool auto_register, std::optional<double> staleness_seconds)
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

void CompatCore::register_device(const std::string& device_id, const std::string& name, const std::string& vendor,
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

bool CompatCore::unregister_device(const std::string& device_id) {
  const auto guard = gate_.enter("unregister a device");
  const auto it = handles_.find(device_id);
  if (it == handles_.end()) return false;
  forget_cached_handle();
  handles_.erase(it);
  return store_.remove_device(DeviceKey{kHost, device_id});
}

void CompatCore::record(PyObject* obj) {
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

std::size_t CompatCore::record_columns(const std::string& device_id, const py::handle& timestamps,
                                       const py::handle& used, const py::handle& total, const py::handle& utilization,
                                       const py::handle& power, const py::handle& temperature,
                                       const py::handle& clock) {
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
    try {
      std::rethrow_exception(failure);
    } catch (const ValidationError& e) {
      failure = renamed(e, device_id);  // the seed's field names
    } catch (...) {
    }
    py::dict attributes;
    attributes["index"] = index;
    attributes["recorded"] = index;
    raise_with_attributes(failure, attributes);
  }
  return count;
}

py::object CompatCore::latest(const std::string& device_id) const {
  const auto guard = gate_.enter("read metrics");
  if (!contains(device_id)) return py::none();
  const auto s = store_.latest(DeviceKey{kHost, device_id});
  if (!s) return py::none();
  return as_tuple(*s);
}

py::list CompatCore::history(const std::string& device_id) const {
  const auto guard = gate_.enter("read metrics history");
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

py::object CompatCore::aggregate() const {
  const auto guard = gate_.enter("aggregate metrics");
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

std::optional<std::string> CompatCore::select(std::int64_t min_memory_bytes) const {
  const auto guard = gate_.enter("select a device");
  const auto min_free = static_cast<std::uint64_t>(std::max<std::int64_t>(min_memory_bytes, 0));
  py::gil_scoped_release release;
  const std::vector<DeviceState> states = store_.states();
  const Selection selection = select_device(states, scoring_, now_timestamp(), min_free);
  if (!selection.device) return std::nullopt;
  return selection.device->local_id;
}

std::vector<std::pair<std::string, double>> CompatCore::rank() const {
  const auto guard = gate_.enter("rank devices");
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

bool CompatCore::shutdown() {
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

std::exception_ptr CompatCore::renamed(const ValidationError& e, std::string_view device_id) {
  return std::make_exception_ptr(ValidationError(std::string(device_id), std::string(wire_field_name(e.field())),
                                                 e.value(), e.rule(), e.reason()));
}

void CompatCore::store_record(const TelemetryStore::Handle& handle, const Sample& s, std::string_view device_id) {
  try {
    store_.record(handle, s);
  } catch (const ValidationError& e) {
    std::rethrow_exception(renamed(e, device_id));
  }
}

const TelemetryStore::Handle& CompatCore::handle_for(std::string_view device_id, const Sample& sample) {
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
  validate_seed_sample(std::string(device_id), sample);
  DeviceInfo info;
  info.key = DeviceKey{kHost, std::string(device_id)};
  info.backend = "exo_compat";
  info.memory_total_bytes = static_cast<std::uint64_t>(std::max<std::int64_t>(sample.memory_total_bytes, 0));
  forget_cached_handle();
  auto [it, inserted] = handles_.emplace(std::string(device_id), store_.add_device(std::move(info)));
  return it->second;
}

py::tuple CompatCore::as_tuple(const Sample& s) {
  return py::make_tuple(to_seconds(s.timestamp), s.memory_used_bytes, s.memory_total_bytes,
                        gauge_value(s.utilization_percent), gauge_value(s.power_watts),
                        gauge_value(s.temperature_celsius), clock_value(s.clock_mhz));
}

}  // namespace gpucluster::python::compat
