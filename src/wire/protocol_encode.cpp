// The wire protocol's encoding: typed messages → the seed's JSON envelope.
// Timestamps go out as model/time.hpp's to_seconds (the double that reads back
// to the same nanosecond) and gauges as their shortest decimal (the shared
// writers of encode_fields.hpp), so
// parse_telemetry_message(to_protocol_json(m, t).dump()) == m.
#include <string>

#include <nlohmann/json.hpp>

#include "gpucluster/wire/protocol.hpp"
#include "wire/encode_fields.hpp"

namespace gpucluster::agent {
namespace {

using nlohmann::json;
using namespace wire;  // NOLINT(google-build-using-namespace): the shared field writers

// The metrics fields with the device id first, by the seed's names.
json sample_json(const std::string& device_id, const Sample& sample) {
  json out{{"device_id", device_id}};
  put_sample_fields(out, sample, FieldNames::seed);
  return out;
}

// The seed's device_type for a kind; vulkan goes out as vulkan_linux, which
// the parser maps back to vulkan.
std::string device_type_name(DeviceKind kind) {
  if (kind == DeviceKind::vulkan) return "vulkan_linux";
  return std::string(to_string(kind));
}

json payload_json(const DeviceRegistration& registration) {
  const DeviceInfo& info = registration.info;
  return json{{"hostname", info.key.host},
              {"port", optional_json(registration.port)},
              {"device_id", info.key.local_id},
              {"capabilities",
               {{"device_id", info.key.local_id},
                {"device_type", device_type_name(info.kind)},
                {"device_name", info.name},
                {"vendor", info.vendor},
                {"compute_units", optional_json(info.compute_units)},
                {"memory_bandwidth_gbps", optional_json(info.memory_bandwidth_gbps)},
                {"max_memory_bytes", info.memory_total_bytes},
                {"driver_version", optional_json(info.driver_version)},
                {"supports_fp64", optional_json(info.supports_fp64)},
                {"supports_tensor_cores", optional_json(info.supports_tensor_cores)}}},
              {"timestamp", to_seconds(registration.timestamp)}};
}

json payload_json(const Heartbeat& heartbeat) {
  json payload{{"device_id", heartbeat.device_id},
               {"metrics", heartbeat.sample ? sample_json(heartbeat.device_id, *heartbeat.sample) : json(nullptr)},
               {"timestamp", to_seconds(heartbeat.timestamp)},
               {"is_available", heartbeat.is_available},
               {"error_message", heartbeat.error_message.empty() ? json(nullptr) : json(heartbeat.error_message)}};
  if (heartbeat.hostname) payload["hostname"] = *heartbeat.hostname;
  return payload;
}

json payload_json(const MetricsReport& report) {
  json payload = sample_json(report.device_id, report.sample);
  if (report.hostname) payload["hostname"] = *report.hostname;
  return payload;
}

const char* type_of(const DeviceRegistration& /*message*/) {
  return "device_registration";
}
const char* type_of(const Heartbeat& /*message*/) {
  return "heartbeat";
}
const char* type_of(const MetricsReport& /*message*/) {
  return "metrics";
}

}  // namespace

nlohmann::json to_protocol_json(const TelemetryMessage& message, Timestamp envelope_timestamp) {
  return std::visit(
      [&](const auto& m) {
        return json{{"type", type_of(m)},
                    {"version", std::string(kProtocolVersion)},
                    {"timestamp", to_seconds(envelope_timestamp)},
                    {"payload", payload_json(m)}};
      },
      message);
}

}  // namespace gpucluster::agent
