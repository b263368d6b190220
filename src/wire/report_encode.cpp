// The v2 report's encoding: Report / ReportAck → the JSON of docs/protocol.md
// "Reports (v2)", through the wire layer's shared writers
// (encode_fields.hpp), so parse_report(encode_report(r)) == r and
// parse_report_ack(encode_report_ack(a)) == a. Optional fields that are
// unknown (and empty maps, leaving = false) are left out: the parser reads
// absent as unknown, so the report stays small.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <nlohmann/json.hpp>

#include "gpucluster/wire/report.hpp"
#include "model/text.hpp"
#include "wire/encode_fields.hpp"

namespace gpucluster::agent {

namespace {

using nlohmann::json;
using namespace wire;  // NOLINT(google-build-using-namespace): the shared field writers

// Invalid UTF-8 (never in a parsed report) is written as U+FFFD rather than thrown.
std::string dump(const json& document) {
  return document.dump(-1, ' ', false, json::error_handler_t::replace);
}

json node_json(const ReportNode& node) {
  json out{
      {"id", node.id}, {"incarnation", node.incarnation}, {"name", node.name}, {"agent_version", node.agent_version}};
  if (node.url) out["url"] = *node.url;
  if (node.port) out["port"] = *node.port;
  return out;
}

template <class T>
void put_optional(json& out, const char* key, const std::optional<T>& value) {
  if (value) out[key] = *value;
}

// "device_id" and DeviceInfo's fields by their member names; key.host is not sent.
json device_json(const DeviceInfo& info) {
  json out{{"device_id", info.key.local_id}, {"name", info.name},
           {"vendor", info.vendor},          {"kind", std::string(to_string(info.kind))},
           {"backend", info.backend},        {"memory_total_bytes", info.memory_total_bytes}};
  put_optional(out, "uuid", info.uuid);
  put_optional(out, "pci_bus_id", info.pci_bus_id);
  put_optional(out, "compute_units", info.compute_units);
  put_optional(out, "compute_capability", info.compute_capability);
  put_optional(out, "max_clock_mhz", info.max_clock_mhz);
  put_optional(out, "memory_bandwidth_gbps", info.memory_bandwidth_gbps);
  put_optional(out, "driver_version", info.driver_version);
  put_optional(out, "power_limit_watts", info.power_limit_watts);
  put_optional(out, "temperature_slowdown_celsius", info.temperature_slowdown_celsius);
  put_optional(out, "temperature_shutdown_celsius", info.temperature_shutdown_celsius);
  put_optional(out, "supports_fp64", info.supports_fp64);
  put_optional(out, "supports_tensor_cores", info.supports_tensor_cores);
  return out;
}

json samples_json(const std::map<std::string, std::vector<Sample>>& samples) {
  json out = json::object();
  for (const auto& [device_id, list] : samples) {
    json& entries = out[device_id];
    entries = json::array();
    entries.get_ref<json::array_t&>().reserve(list.size());
    for (const Sample& sample : list) {
      json entry = json::object();
      put_sample_fields(entry, sample, FieldNames::canonical);
      entries.push_back(std::move(entry));
    }
  }
  return out;
}

}  // namespace

std::string encode_report(const Report& report) {
  json out{{"report", kReportFormat},
           {"node", node_json(report.node)},
           {"seq", report.seq},
           {"sent_at", timestamp_json(report.sent_at)},
           {"interval_ms", report.interval_ms},
           {"inventory_version", report.inventory_version},
           {"samples", samples_json(report.samples)}};
  if (report.clock) {
    out["clock"] = json{{"t0", timestamp_json(report.clock->t0)},
                        {"r", timestamp_json(report.clock->r)},
                        {"t", timestamp_json(report.clock->t)},
                        {"t1", timestamp_json(report.clock->t1)}};
  }
  if (report.inventory) {
    json& inventory = out["inventory"];
    inventory = json::array();
    for (const DeviceInfo& info : *report.inventory) inventory.push_back(device_json(info));
  }
  if (!report.unavailable.empty()) out["unavailable"] = report.unavailable;
  if (!report.dropped.empty()) out["dropped"] = report.dropped;
  if (report.leaving) out["leaving"] = true;
  return dump(out);
}

// The coordinator writes one ack per report, a thousand a second at 1,000
// nodes: RapidJSON's writer puts it straight into its text, where a document
// would allocate a node and a key per field first.
std::string encode_report_ack(const ReportAck& ack) {
  rapidjson::StringBuffer text;
  rapidjson::Writer<rapidjson::StringBuffer> writer(text);
  const auto key = [&](std::string_view name) {
    writer.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
  };
  // Every string as valid UTF-8 (never otherwise in a parsed ack; a stray byte would make it unreadable).
  const auto string = [&](const std::string& value) {
    if (text::is_valid_utf8(value)) {
      writer.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
    } else {
      const std::string shown = text::printable(value, value.size() * 4);
      writer.String(shown.data(), static_cast<rapidjson::SizeType>(shown.size()));
    }
  };
  const auto member = [&](std::string_view name, const auto& value) {
    key(name);
    using Value = std::decay_t<decltype(value)>;
    if constexpr (std::is_same_v<Value, std::string>) {
      string(value);
    } else if constexpr (std::is_same_v<Value, bool>) {
      writer.Bool(value);
    } else if constexpr (std::is_same_v<Value, Timestamp>) {
      writer.Double(to_seconds(value));
    } else {
      writer.Uint64(value);
    }
  };
  writer.StartObject();
  member("ack", ack.ack);
  member("coordinator", ack.coordinator);
  member("epoch", ack.epoch);
  member("interval_ms", std::uint64_t{ack.interval_ms});
  member("inventory_required", ack.inventory_required);
  member("host", ack.host);
  member("state", ack.state);
  member("accepted", ack.accepted);
  member("duplicates", ack.duplicates);
  member("rejected", ack.rejected);
  key("rejections");
  writer.StartArray();
  for (const std::string& rejection : ack.rejections) string(rejection);
  writer.EndArray();
  member("received_at", ack.received_at);
  member("replied_at", ack.replied_at);
  writer.EndObject();
  return {text.GetString(), text.GetSize()};
}

}  // namespace gpucluster::agent
