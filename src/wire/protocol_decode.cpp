// The wire protocol's decoding: a document read by the bounded reader
// (json_reader.hpp) → the typed messages of protocol.hpp, every field checked
// and every refusal naming its JSON path. The field readers are the wire
// layer's shared ones (decode_fields.hpp), which the v2 report uses too.
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "gpucluster/wire/protocol.hpp"
#include "model/text.hpp"
#include "wire/decode_fields.hpp"
#include "wire/json_reader.hpp"

namespace gpucluster::agent {

namespace {

using nlohmann::json;
using text::printable;
using namespace wire;  // NOLINT(google-build-using-namespace): the shared field readers

constexpr std::string_view kSubject = "telemetry message";

void check_same_device(const json* value, const FieldPath& field, const std::string& device_id,
                       const FieldPath& device_field) {
  if (value == nullptr) return;
  const std::string& id = string_at(*value, field);
  if (id != device_id) {
    fail(Kind::invalid, field.str(), shown(*value),
         fmt::format("must equal {} (\"{}\") when present", device_field.str(), printable(device_id)));
  }
}

std::optional<std::string> optional_hostname(const Fields& payload) {
  const json* value = payload.optional("hostname");
  if (value == nullptr) return std::nullopt;
  return identifier_at(*value, payload.path_of("hostname"));
}

DeviceRegistration parse_registration(const Fields& payload) {
  DeviceRegistration registration;
  DeviceInfo& info = registration.info;
  info.key.host = identifier_at(payload.required("hostname"), payload.path_of("hostname"));
  if (const json* port = payload.optional("port")) {
    registration.port = static_cast<int>(integer_at(*port, payload.path_of("port"), 1, 65535));
  }
  info.key.local_id = identifier_at(payload.required("device_id"), payload.path_of("device_id"));
  registration.timestamp = timestamp_at(payload.required("timestamp"), payload.path_of("timestamp"));

  const Fields caps = object_at(payload.required("capabilities"), payload.path_of("capabilities"));
  check_same_device(caps.optional("device_id"), caps.path_of("device_id"), info.key.local_id,
                    payload.path_of("device_id"));
  const std::string& device_type = string_at(caps.required("device_type"), caps.path_of("device_type"));
  const std::optional<DeviceKind> kind = parse_device_kind(device_type);
  if (!kind) {
    fail(Kind::invalid, caps.path_of("device_type").str(), shown(caps.required("device_type")),
         "must be one of cuda, rocm, metal, vulkan_android, vulkan_linux, intel_xe, directml, cpu");
  }
  info.kind = *kind;
  info.name = string_at(caps.required("device_name"), caps.path_of("device_name"));
  info.vendor = string_at(caps.required("vendor"), caps.path_of("vendor"));
  info.backend = "remote";
  info.memory_total_bytes = static_cast<std::uint64_t>(
      integer_at(caps.required("max_memory_bytes"), caps.path_of("max_memory_bytes"), 1, kMaxInt64));
  if (const json* units = caps.optional("compute_units")) {
    info.compute_units = static_cast<std::uint32_t>(
        integer_at(*units, caps.path_of("compute_units"), 0, std::numeric_limits<std::uint32_t>::max()));
  }
  if (const json* bandwidth = caps.optional("memory_bandwidth_gbps")) {
    info.memory_bandwidth_gbps = non_negative_at(*bandwidth, caps.path_of("memory_bandwidth_gbps"));
  }
  if (const json* driver = caps.optional("driver_version")) {
    info.driver_version = string_at(*driver, caps.path_of("driver_version"));
  }
  if (const json* fp64 = caps.optional("supports_fp64")) {
    info.supports_fp64 = bool_at(*fp64, caps.path_of("supports_fp64"));
  }
  if (const json* tensor = caps.optional("supports_tensor_cores")) {
    info.supports_tensor_cores = bool_at(*tensor, caps.path_of("supports_tensor_cores"));
  }

  // The core's own checks, as a backstop; its field names mapped to JSON paths.
  try {
    validate_device_info(info);
  } catch (const InputError& e) {
    const std::string field = e.field() == "host"        ? payload.path_of("hostname").str()
                              : e.field() == "device_id" ? payload.path_of("device_id").str()
                                                         : caps.path_of(e.field()).str();
    fail(Kind::invalid, field, printable(e.value()), e.rule());
  }
  return registration;
}

Heartbeat parse_heartbeat(const Fields& payload) {
  Heartbeat heartbeat;
  heartbeat.device_id = identifier_at(payload.required("device_id"), payload.path_of("device_id"));
  heartbeat.hostname = optional_hostname(payload);
  heartbeat.timestamp = timestamp_at(payload.required("timestamp"), payload.path_of("timestamp"));
  if (const json* metrics = payload.optional("metrics")) {
    const Fields fields = object_at(*metrics, payload.path_of("metrics"));
    check_same_device(fields.optional("device_id"), fields.path_of("device_id"), heartbeat.device_id,
                      payload.path_of("device_id"));
    heartbeat.sample = sample_at(fields, FieldNames::seed, heartbeat.timestamp);
  }
  if (const json* available = payload.optional("is_available")) {
    heartbeat.is_available = bool_at(*available, payload.path_of("is_available"));
  }
  if (const json* message = payload.optional("error_message")) {
    heartbeat.error_message = string_at(*message, payload.path_of("error_message"));
  }
  return heartbeat;
}

MetricsReport parse_metrics(const Fields& payload) {
  MetricsReport report;
  report.device_id = identifier_at(payload.required("device_id"), payload.path_of("device_id"));
  report.hostname = optional_hostname(payload);
  report.sample = sample_at(payload, FieldNames::seed, std::nullopt);
  return report;
}

TelemetryMessage parse_message(std::string_view body, const ProtocolLimits& limits) {
  const json document = read_bounded_json(body, limits, kSubject);
  if (!document.is_object()) wrong_type("body", document, "an object (the envelope)");
  const FieldPath root;
  const Fields envelope(document, root);

  const json& version = envelope.required("version");
  if (!version.is_string() || version.get_ref<const std::string&>() != kProtocolVersion) {
    fail(Kind::malformed, "version", shown(version),
         fmt::format("must be \"{}\" (the only version)", kProtocolVersion));
  }
  const std::string& type = string_at(envelope.required("type"), "type");
  timestamp_at(envelope.required("timestamp"), "timestamp");
  const json& payload_value = envelope.required("payload");

  if (type == "topology") {
    fail(Kind::malformed, "type", shown(envelope.required("type")),
         "topology is declared by the seed's protocol but not supported");
  }
  if (type != "device_registration" && type != "heartbeat" && type != "metrics") {
    fail(Kind::malformed, "type", shown(envelope.required("type")),
         "must be one of device_registration, heartbeat, metrics");
  }
  const Fields payload = object_at(payload_value, "payload");
  if (type == "device_registration") return parse_registration(payload);
  if (type == "heartbeat") return parse_heartbeat(payload);
  return parse_metrics(payload);
}

}  // namespace

TelemetryMessage parse_telemetry_message(std::string_view body, const ProtocolLimits& limits) {
  return decoding(kSubject, [&] { return parse_message(body, limits); });
}

}  // namespace gpucluster::agent
