#include "gpucluster/export/json.hpp"

#include <unordered_map>

#include <cstdlib>

#include <fmt/format.h>

#include "gpucluster/model/fields.hpp"
#include "gpucluster/node/manager.hpp"
#include "model/text.hpp"

namespace gpucluster {

namespace {

using nlohmann::json;

template <class T>
json optional_json(const std::optional<T>& value) {
  if (!value) return nullptr;
  if constexpr (std::is_same_v<T, float>) {
    return text::shortest_decimal(*value);  // 41.3f prints as 41.3
  } else {
    return *value;
  }
}
template <class T>
json optional_json(const PackedOptional<T>& value) {
  return optional_json(static_cast<std::optional<T>>(value));
}

// One entry per row of the field table, under its name and, for the rows
// that had another name in these views before the table, that deprecated
// alias too (docs/agent.md).
template <class Value>
void put_fields(json& out, const Value& value_of) {
  for_each_field([&](const auto& row) {
    json value = value_of(row);
    if (!row.json_alias.empty()) out[std::string(row.json_alias)] = value;
    out[std::string(row.name)] = std::move(value);
  });
}

json breakdown_json(const ScoreBreakdown& b) {
  return json{{"score", b.score},
              {"memory_free_ratio", b.memory_free_ratio},
              {"compute_idle_ratio", optional_json(b.compute_idle_ratio)},
              {"thermal_penalty", b.thermal_penalty},
              {"temperature_known", b.temperature_known},
              {"thermal_threshold_celsius", b.thermal_threshold_celsius}};
}

json field_stats_json(const FieldStats& s) {
  if (s.count == 0) return nullptr;
  return json{{"count", s.count}, {"min", s.min}, {"mean", s.mean}, {"max", s.max}, {"last", s.last}};
}

}  // namespace

json to_json(const DeviceInfo& info) {
  return json{{"id", info.key.str()},
              {"host", info.key.host},
              {"device_id", info.key.local_id},
              {"name", info.name},
              {"vendor", info.vendor},
              {"device_type", std::string(to_string(info.kind))},
              {"backend", info.backend},
              {"uuid", optional_json(info.uuid)},
              {"pci_bus_id", optional_json(info.pci_bus_id)},
              {"memory_bytes", info.memory_total_bytes},
              {"compute_units", optional_json(info.compute_units)},
              {"compute_capability", optional_json(info.compute_capability)},
              {"max_clock_mhz", optional_json(info.max_clock_mhz)},
              {"memory_bandwidth_gbps", optional_json(info.memory_bandwidth_gbps)},
              {"driver_version", optional_json(info.driver_version)},
              {"power_limit_watts", optional_json(info.power_limit_watts)},
              {"temperature_slowdown_celsius", optional_json(info.temperature_slowdown_celsius)},
              {"temperature_shutdown_celsius", optional_json(info.temperature_shutdown_celsius)},
              {"supports_fp64", optional_json(info.supports_fp64)},
              {"supports_tensor_cores", optional_json(info.supports_tensor_cores)}};
}

json to_json(const Sample& sample) {
  json out{{"timestamp", to_seconds(sample.timestamp)}};
  put_fields(out, [&](const auto& row) {
    const auto& member = sample.*row.member;
    if constexpr (std::is_integral_v<std::decay_t<decltype(member)>>) {
      return json(member);
    } else {
      return optional_json(member);
    }
  });
  return out;
}

json to_json(const DeviceState& state, const std::optional<RankedDevice>& ranked) {
  json out = to_json(*state.info);
  out["available"] = state.available;
  out["error_message"] = state.available ? json(nullptr) : json(state.unavailable_reason);
  out["metrics"] = state.latest ? to_json(*state.latest) : json(nullptr);
  if (ranked && ranked->breakdown) {
    out["score"] = ranked->breakdown->score;
    out["eligibility"] = to_string(ranked->eligibility);
    out["score_breakdown"] = breakdown_json(*ranked->breakdown);
  } else {
    out["score"] = nullptr;
    out["eligibility"] = ranked ? json(to_string(ranked->eligibility)) : json(nullptr);
  }
  return out;
}

json to_json(const ClusterAggregate& a) {
  return json{{"device_count", a.device_count},
              {"devices_with_samples", a.devices_with_samples},
              {"total_memory_bytes", a.total_memory_bytes},
              {"used_memory_bytes", a.used_memory_bytes},
              {"available_memory_bytes", a.available_memory_bytes},
              {"average_utilization_percent", optional_json(a.average_utilization_percent)},
              {"average_temperature_celsius", optional_json(a.average_temperature_celsius)},
              {"total_power_watts", optional_json(a.total_power_watts)},
              {"timestamp", a.timestamp ? json(to_seconds(*a.timestamp)) : json(nullptr)}};
}

json to_json(const WindowStats& s) {
  json out{{"samples", s.samples},
           {"first_timestamp", s.first ? json(to_seconds(*s.first)) : json(nullptr)},
           {"last_timestamp", s.last ? json(to_seconds(*s.last)) : json(nullptr)}};
  put_fields(out, [&](const auto& row) { return field_stats_json(s[row.quantity]); });
  return out;
}

json to_json(const Selection& selection) {
  return json{{"device", selection.device ? json(selection.device->str()) : json(nullptr)},
              {"score", selection.score},
              {"reason", selection.reason}};
}

json to_json(const RankedDevice& r) {
  return json{{"device", r.key.str()},
              {"eligibility", to_string(r.eligibility)},
              {"reason", r.reason},
              {"memory_free_bytes", r.memory_free_bytes},
              {"score", r.breakdown ? json(r.breakdown->score) : json(nullptr)},
              {"breakdown", r.breakdown ? breakdown_json(*r.breakdown) : json(nullptr)}};
}

json to_json(const Plan& plan) {
  json assignments = json::array();
  for (const Assignment& a : plan.assignments) {
    assignments.push_back(json{{"device", a.device.str()}, {"start", a.start}, {"count", a.count}});
  }
  json left_out = json::array();
  for (const LeftOut& l : plan.left_out) left_out.push_back(json{{"device", l.device.str()}, {"reason", l.reason}});
  return json{{"strategy", std::string(to_string(plan.strategy))},
              {"total_items", plan.total_items},
              {"assignments", std::move(assignments)},
              {"unassigned", plan.unassigned},
              {"left_out", std::move(left_out)}};
}

namespace {

// {"utilization_percent": 0, "power_watts": 2, …}: the optional quantities a backend reads.
json implausible_to_json(const ImplausibleCounts& counts) {
  json object = json::object();
  for_each_field([&](const auto& field) {
    if (field.required || !field.read_by_backend) return;
    object[std::string(field.name)] = counts[static_cast<std::size_t>(field.quantity)];
  });
  return object;
}

}  // namespace

nlohmann::json to_json(const BackendReport& report) {
  const auto text_or_null = [](const std::string& text) { return text.empty() ? json(nullptr) : json(text); };
  return json{{"backend", report.backend},
              {"status", report_status(report)},
              {"devices", report.devices},
              {"note", text_or_null(report.note)},
              {"error", text_or_null(report.error)},
              {"implausible_readings", implausible_to_json(report.implausible_readings)}};
}

nlohmann::json backends_to_json(const std::vector<BackendReport>& reports) {
  nlohmann::json array = nlohmann::json::array();
  for (const BackendReport& report : reports) array.push_back(to_json(report));
  return array;
}

nlohmann::json devices_to_json(const std::vector<DeviceState>& devices, const std::vector<RankedDevice>& ranked) {
  std::unordered_map<DeviceKey, const RankedDevice*, DeviceKeyHash> by_key;
  by_key.reserve(ranked.size());
  for (const RankedDevice& entry : ranked) by_key.emplace(entry.key, &entry);
  nlohmann::json array = nlohmann::json::array();
  for (const DeviceState& state : devices) {
    const auto found = by_key.find(state.info->key);
    array.push_back(to_json(state, found == by_key.end() ? std::nullopt : std::optional<RankedDevice>(*found->second)));
  }
  return array;
}

}  // namespace gpucluster
