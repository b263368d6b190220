#include "gpucluster/backends/simulated.hpp"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/fields.hpp"

namespace gpucluster {

SimulatedBackend::SimulatedBackend(Fleet fleet) : fleet_(std::move(fleet)) {}

Discovery SimulatedBackend::discover(const std::string& host) {
  const std::string& device_host = fleet_.host.empty() ? host : fleet_.host;
  Discovery discovery;
  discovery.devices.reserve(fleet_.devices.size());
  for (const FleetDevice& device : fleet_.devices) {
    DeviceInfo info = device.info;
    info.key.host = device_host;
    info.backend = "simulated";
    discovery.devices.push_back(std::move(info));
  }
  if (discovery.devices.empty()) discovery.note = "the fleet lists no devices";
  return discovery;
}

Sample SimulatedBackend::sample(const std::string& local_id) {
  const FleetDevice& device = find(local_id);
  if (!device.available) {
    throw Error(fmt::format("simulated device {} is unavailable: {}", local_id,
                            device.error_message.empty() ? "no reason given" : device.error_message));
  }
  // Without metrics the fleet says nothing of the device's use: it has no
  // sample (unknown everywhere), never an idle, empty one.
  if (!device.has_metrics) throw NoReading(fmt::format("fleet device {} has no metrics", local_id));
  Sample sample = device.metrics;
  sample.timestamp = now_timestamp();
  return sample;
}

FieldAvailability SimulatedBackend::available_fields(const std::string& local_id) const {
  const FleetDevice& device = find(local_id);
  if (!device.available || !device.has_metrics) return FieldAvailability{};
  // Every optional row of the field table that the fleet's metrics give.
  FieldAvailability fields;
  for (const Quantity quantity : kOptionalQuantities) {
    fields.set(quantity, field_value(device.metrics, quantity).has_value());
  }
  return fields;
}

const FleetDevice& SimulatedBackend::find(const std::string& local_id) const {
  const auto it = std::find_if(fleet_.devices.begin(), fleet_.devices.end(),
                               [&](const FleetDevice& device) { return device.info.key.local_id == local_id; });
  if (it == fleet_.devices.end()) throw UnknownDeviceError(local_id);
  return *it;
}

}  // namespace gpucluster
