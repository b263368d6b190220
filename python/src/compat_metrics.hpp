#pragma once
// exo_compat: reading the seed's GPUMetrics objects (attribute by attribute,
// through the CPython API, as the record hot path needs) into the core's types.

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "common.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/validation.hpp"

namespace gpucluster::python::compat {

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

inline const Names& names() {
  static auto* n = new Names();  // leaked: outlives the interpreter's teardown order
  return *n;
}

inline py::object get_attr(PyObject* obj, const py::str& name) {
  PyObject* v = PyObject_GetAttr(obj, name.ptr());
  if (v == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(v);
}

// The device id of an error message: the metrics' device_id (a str, already read).
inline std::string id_text(PyObject* id) {
  Py_ssize_t length = 0;
  const char* utf8 = PyUnicode_AsUTF8AndSize(id, &length);
  if (utf8 == nullptr) throw py::error_already_set();
  return {utf8, static_cast<std::size_t>(length)};
}

// A byte count: an int, or an integral float. Non-finite → ValidationError.
inline std::int64_t read_bytes(PyObject* obj, const py::str& name, PyObject* id) {
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
inline void read_gauge(PyObject* obj, const py::str& name, PackedOptional<float>& out) {
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

// validate_sample, its errors naming the seed's fields (compute_utilization_percent).
inline void validate_seed_sample(const std::string& device, const Sample& sample) {
  try {
    validate_sample(device, sample);
  } catch (const ValidationError& error) {
    throw with_wire_field_name(error);
  }
}

inline py::object gauge_value(const std::optional<float>& g) {
  if (!g) return py::none();
  return py::float_(tidy(*g));
}

inline py::object clock_value(const std::optional<float>& g) {
  if (!g) return py::none();
  const float f = *g;
  if (std::isfinite(f) && f == std::floor(f) && std::fabs(f) < 9e15F) return py::int_(static_cast<long long>(f));
  return py::float_(tidy(f));
}

// The core's score of one seed GPUMetrics (live memory total, the seed's weights); NaN → ValidationError.
double score_metrics(const py::handle& metrics);
// The seed's DeviceSelector.select_best_device: the position in `metrics` (seed
// GPUMetrics objects) of the device scoring selects (best score > 0 with
// min_memory_bytes free; ties to the earlier), or nullopt.
std::optional<std::size_t> select_metrics(const py::list& metrics, std::int64_t min_memory_bytes);

}  // namespace gpucluster::python::compat
