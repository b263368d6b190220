// The native half of gpucluster.exo_compat, split by concern:
//   compat_metrics.*    reading the seed's GPUMetrics objects; their score
//   compat_core.*       the store keyed by the seed's device ids (_CompatCore)
//   compat_record.*     the record fast paths (a CPython function, an awaitable)
//   compat_distribute.* the seed's distribution shapes
// and here, their bindings. The in-flight gate is the library's
// (src/node/in_flight_gate.hpp), shared with the Manager.

#include <pybind11/stl.h>

#include <exception>

#include "common.hpp"
#include "compat_core.hpp"
#include "compat_distribute.hpp"
#include "compat_metrics.hpp"
#include "compat_record.hpp"

namespace gpucluster::python {

void bind_compat(py::module_& m) {
  using compat::CompatCore;
  compat::init_record_types(m);
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
      .def_property_readonly("fast_record", [](const py::object& self) { return compat::fast_record_function(self); })
      .def_property_readonly("record_later", [](const py::object& self) { return compat::record_later_function(self); })
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
  m.def("_distribute_by_capacity", &compat::distribute_by_capacity, py::arg("capacities"), py::arg("workload_items"));
  m.def("_distribute_uniform", &compat::distribute_uniform, py::arg("devices"), py::arg("workload_items"),
        py::arg("max_per_device") = py::none());
  m.def("_score_metrics", &compat::score_metrics, py::arg("metrics"));
  m.def("_select_metrics", &compat::select_metrics, py::arg("metrics"), py::arg("min_memory_bytes") = 0);
}

}  // namespace gpucluster::python
