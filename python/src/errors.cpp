// Translates the library's typed C++ errors into the Python classes of
// gpucluster.errors, with their attributes (device, field, value, rule, ...).

#include <cmath>
#include <cstdlib>
#include <exception>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/node/manager.hpp"
#include "model/text.hpp"

namespace gpucluster::python {

namespace {

// The classes of gpucluster.errors, looked up once. Leaked on purpose: they
// must outlive every translator call, and are never destroyed after the
// interpreter has gone.
py::object& errors_module() {
  static auto* module = new py::object(py::module_::import("gpucluster.errors"));
  return *module;
}

void set_python_error(const py::object& cls, const py::object& instance) {
  PyErr_SetObject(cls.ptr(), instance.ptr());
}

py::object make(const char* name, const std::exception& e, py::kwargs kwargs) {
  return errors_module().attr(name)(py::str(e.what()), **kwargs);
}

}  // namespace

double tidy(float value) {
  return text::shortest_decimal(value);
}

std::optional<double> tidy(const std::optional<float>& value) {
  if (!value) return std::nullopt;
  return tidy(*value);
}

Timestamp checked_timestamp(double seconds, const std::string& device) {
  if (!std::isfinite(seconds)) {
    throw ValidationError(device, "timestamp", fmt::format("{}", seconds), "must be a finite number",
                          RejectReason::not_finite);
  }
  if (!timestamp_seconds_in_range(seconds)) {
    throw ValidationError(device, "timestamp", fmt::format("{}", seconds), std::string(kTimestampSecondsRule),
                          RejectReason::out_of_range);
  }
  return timestamp_from_seconds(seconds);
}

py::object json_to_python(const std::string& text) {
  static auto* loads = new py::object(py::module_::import("json").attr("loads"));
  return (*loads)(py::str(text));
}

void translate_error(std::exception_ptr p) {
  if (!p) return;
  try {
    std::rethrow_exception(p);
  } catch (const InsufficientMemoryError& e) {
    py::list shortfalls;
    const py::object shortfall = errors_module().attr("MemoryShortfall");
    for (const MemoryShortfall& s : e.shortfalls()) {
      shortfalls.append(shortfall(s.device, s.layers, s.needed_bytes, s.free_bytes));
    }
    py::kwargs kw;
    kw["field"] = e.field();
    kw["value"] = e.value();
    kw["rule"] = e.rule();
    kw["shortfalls"] = shortfalls;
    const py::object instance = make("InsufficientMemoryError", e, kw);
    set_python_error(errors_module().attr("InsufficientMemoryError"), instance);
  } catch (const PlanError& e) {
    py::kwargs kw;
    kw["field"] = e.field();
    kw["value"] = e.value();
    kw["rule"] = e.rule();
    set_python_error(errors_module().attr("PlanError"), make("PlanError", e, kw));
  } catch (const ValidationError& e) {
    const char* cls = e.reason() == RejectReason::unknown_device ? "UnregisteredDeviceError" : "ValidationError";
    py::kwargs kw;
    kw["device"] = e.device();
    kw["field"] = e.field();
    kw["value"] = e.value();
    kw["rule"] = e.rule();
    kw["reason"] = to_string(e.reason());
    set_python_error(errors_module().attr(cls), make(cls, e, kw));
  } catch (const BackendUnavailableError& e) {
    py::list names;
    for (const BackendReport& report : e.failed()) names.append(report.backend);
    py::kwargs kw;
    kw["field"] = e.field();
    kw["value"] = e.value();
    kw["rule"] = e.rule();
    kw["backends"] = names;
    set_python_error(errors_module().attr("BackendUnavailableError"), make("BackendUnavailableError", e, kw));
  } catch (const InputError& e) {
    py::kwargs kw;
    kw["field"] = e.field();
    kw["value"] = e.value();
    kw["rule"] = e.rule();
    set_python_error(errors_module().attr("InputError"), make("InputError", e, kw));
  } catch (const UnknownDeviceError& e) {
    py::kwargs kw;
    kw["device"] = e.device();
    set_python_error(errors_module().attr("UnknownDeviceError"), make("UnknownDeviceError", e, kw));
  } catch (const ShutDownError& e) {
    set_python_error(errors_module().attr("ShutDownError"), make("ShutDownError", e, py::kwargs()));
  } catch (const Error& e) {
    set_python_error(errors_module().attr("Error"), make("Error", e, py::kwargs()));
  } catch (const nlohmann::json::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  }
}

void raise_with_attributes(std::exception_ptr p, const py::dict& attributes) {
  try {
    translate_error(p);
  } catch (...) {
    std::rethrow_exception(p);  // not one of ours: let pybind11 translate it
  }
  if (!PyErr_Occurred()) std::rethrow_exception(p);
  py::error_already_set error;  // fetches and normalises the pending exception
  for (const auto& [name, value] : attributes) error.value().attr(name) = value;
  throw error;
}

void register_errors(py::module_& m) {
  (void)m;
  errors_module();  // import now, so a broken package fails at import time
  py::register_exception_translator(&translate_error);
}

}  // namespace gpucluster::python
