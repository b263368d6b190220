// The agent's telemetry protocol (seed wire format) from Python: parse a
// message body into typed objects, and write a message back as the agent's
// JSON.

#include "common.hpp"

#include <pybind11/stl.h>

#include <nlohmann/json.hpp>

#include "gpucluster/wire/protocol.hpp"
#include "types.hpp"

namespace gpucluster::python {

void bind_protocol(py::module_& m) {
  using agent::DeviceRegistration;
  using agent::Heartbeat;
  using agent::MetricsReport;
  using agent::ProtocolError;

  py::register_exception_translator([](std::exception_ptr p) {
    if (!p) return;
    try {
      std::rethrow_exception(p);
    } catch (const ProtocolError& e) {
      const py::object cls = py::module_::import("gpucluster.errors").attr("ProtocolError");
      const py::object instance = cls(py::str(e.what()), e.field(), e.value(), e.rule(),
                                      e.kind() == ProtocolError::Kind::malformed ? "malformed" : "invalid");
      PyErr_SetObject(cls.ptr(), instance.ptr());
    }
  });

  py::class_<DeviceRegistration>(m, "DeviceRegistration", "A parsed device_registration message.")
      .def(py::init<>())
      .def_readwrite("info", &DeviceRegistration::info)
      .def_readwrite("port", &DeviceRegistration::port)
      .def_property(
          "timestamp", [](const DeviceRegistration& r) { return to_seconds(r.timestamp); },
          [](DeviceRegistration& r, double s) { r.timestamp = checked_timestamp(s, ""); });
  py::class_<Heartbeat>(m, "Heartbeat", "A parsed heartbeat message.")
      .def(py::init<>())
      .def_readwrite("device_id", &Heartbeat::device_id)
      .def_readwrite("hostname", &Heartbeat::hostname)
      .def_readwrite("sample", &Heartbeat::sample)
      .def_readwrite("is_available", &Heartbeat::is_available)
      .def_readwrite("error_message", &Heartbeat::error_message)
      .def_property(
          "timestamp", [](const Heartbeat& h) { return to_seconds(h.timestamp); },
          [](Heartbeat& h, double s) { h.timestamp = checked_timestamp(s, ""); });
  py::class_<MetricsReport>(m, "MetricsReport", "A parsed metrics message.")
      .def(py::init<>())
      .def_readwrite("device_id", &MetricsReport::device_id)
      .def_readwrite("hostname", &MetricsReport::hostname)
      .def_readwrite("sample", &MetricsReport::sample);

  m.attr("PROTOCOL_VERSION") = std::string(agent::kProtocolVersion);
  m.def(
      "parse_telemetry_message",
      [](const py::object& body) -> py::object {
        std::string text = py::isinstance<py::bytes>(body) ? body.cast<std::string>() : body.cast<std::string>();
        agent::TelemetryMessage message;
        {
          py::gil_scoped_release release;
          message = agent::parse_telemetry_message(text);
        }
        return std::visit([](auto&& value) { return py::cast(std::move(value)); }, std::move(message));
      },
      py::arg("body"),
      "Parses one protocol message (str or bytes) into DeviceRegistration, Heartbeat or MetricsReport; "
      "raises ProtocolError (kind 'malformed' or 'invalid').");
  m.def(
      "to_protocol_json",
      [](const py::object& message, std::optional<double> envelope_timestamp) {
        agent::TelemetryMessage variant;
        if (py::isinstance<DeviceRegistration>(message)) {
          variant = message.cast<DeviceRegistration>();
        } else if (py::isinstance<Heartbeat>(message)) {
          variant = message.cast<Heartbeat>();
        } else {
          variant = message.cast<MetricsReport>();
        }
        const Timestamp t = envelope_timestamp ? checked_timestamp(*envelope_timestamp, "") : now_timestamp();
        return agent::to_protocol_json(variant, t).dump();
      },
      py::arg("message"), py::arg("envelope_timestamp") = py::none(),
      "The message's envelope as the agent writes it (JSON text, the seed's field names).");
}

}  // namespace gpucluster::python
