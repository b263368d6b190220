#pragma once
// exo_compat's record fast paths (compat_record.cpp).

#include "common.hpp"

namespace gpucluster::python::compat {

// Creates the awaitable's type and adds it to the module (once, at import).
void init_record_types(py::module_& m);
// core.record(metrics) as a CPython function bound to `core` (a _CompatCore).
py::object fast_record_function(const py::object& core);
// core.record_metrics(metrics): an awaitable that records when awaited.
py::object record_later_function(const py::object& core);

}  // namespace gpucluster::python::compat
