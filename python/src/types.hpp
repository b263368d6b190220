#pragma once
// Helpers shared by the type bindings and the manager bindings.

#include <string>
#include <string_view>

#include "common.hpp"
#include "gpucluster/model/device.hpp"
#include "gpucluster/scheduling/distribution.hpp"

namespace gpucluster::python {

// "host/local" → {host, local}; a bare local id → {default_host, id}.
DeviceKey parse_key(std::string_view text, std::string_view default_host);
// "host/local", or the bare local id when the host is empty.
std::string key_text(const DeviceKey& key);
py::object optional_timestamp(const std::optional<Timestamp>& t);
// device id → list of the caller's items (a list or any sequence).
py::dict apply_plan_to(const Plan& plan, const py::handle& items);

}  // namespace gpucluster::python
