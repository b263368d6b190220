#pragma once
// Shared helpers of the gpucluster Python extension (_native).
// Conventions: timestamps cross the boundary as float seconds since the epoch;
// device keys as "host/local_id" strings (a bare local id resolves on the
// manager's host); float gauges come back as the shortest decimal that
// round-trips the stored float (41.3 stays 41.3).

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

#include <pybind11/pybind11.h>

#include "gpucluster/model/sample.hpp"

namespace gpucluster::python {

namespace py = pybind11;

// Binders, one per source file.
void register_errors(py::module_& m);
void bind_types(py::module_& m);
void bind_manager(py::module_& m);
void bind_compat(py::module_& m);
void bind_protocol(py::module_& m);

// Sets the Python error for one of the library's C++ errors (rethrows anything else).
void translate_error(std::exception_ptr p);
// Raises the Python form of the error with extra attributes (e.g. a batch's index).
[[noreturn]] void raise_with_attributes(std::exception_ptr p, const py::dict& attributes);

// float → double with the float's shortest round-trip decimal (41.3f → 41.3).
double tidy(float value);
std::optional<double> tidy(const std::optional<float>& value);

// Seconds since the epoch → Timestamp (model/time.hpp's conversion). Throws
// ValidationError (field "timestamp"; reason not_finite or out_of_range) unless
// finite and within core's accepted range, [0, kMaxTimestampSeconds].
Timestamp checked_timestamp(double seconds, const std::string& device);

// The JSON text of an nlohmann value as a Python object (dict/list/...).
py::object json_to_python(const std::string& text);

}  // namespace gpucluster::python
