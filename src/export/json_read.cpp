// The JSON views read back into their types (export/json.hpp): the inverse
// of json.cpp for what the CLI shows of an agent's answers. Field names come
// from the same field table, so a new quantity is read back without a change here.
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "gpucluster/export/json.hpp"
#include "gpucluster/model/fields.hpp"

namespace gpucluster {

namespace {

using nlohmann::json;

[[noreturn]] void unexpected(const std::string& field, const json& value, const char* expected) {
  throw InputError(
      fmt::format("the agent's answer has {} = {} (expected {})", field, value.dump().substr(0, 80), expected), field,
      value.dump().substr(0, 80), std::string("must be ") + expected);
}

const json& member(const json& object, const char* key, const std::string& where) {
  if (!object.is_object()) unexpected(where, object, "an object");
  const auto it = object.find(key);
  if (it == object.end()) unexpected(where + "." + key, json("(absent)"), "present");
  return *it;
}

std::string text(const json& object, const char* key, const std::string& where) {
  const json& value = member(object, key, where);
  if (!value.is_string()) unexpected(where + "." + key, value, "a string");
  return value.get<std::string>();
}

template <class T>
T number(const json& object, const char* key, const std::string& where) {
  const json& value = member(object, key, where);
  if (!value.is_number()) unexpected(where + "." + key, value, "a number");
  return value.get<T>();
}

template <class T>
std::optional<T> optional_value(const json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  return it->get<T>();
}

DeviceKey key_of(const std::string& id) {
  return parse_device_key(id, "");
}

Sample sample_from_json(const json& metrics, const std::string& where) {
  Sample sample;
  sample.timestamp = timestamp_from_seconds(number<double>(metrics, "timestamp", where));
  for_each_field([&](const auto& row) {
    auto& value = sample.*row.member;
    using Member = std::decay_t<decltype(value)>;
    const auto it = metrics.find(std::string(row.name));
    if (it == metrics.end() || it->is_null()) return;
    if (!it->is_number()) unexpected(where + "." + std::string(row.name), *it, "a number");
    if constexpr (std::is_integral_v<Member>) {
      value = it->template get<Member>();
    } else {
      value = it->template get<typename Member::value_type>();
    }
  });
  return sample;
}

DeviceInfo info_from_json(const json& device, const std::string& where) {
  DeviceInfo info;
  info.key = DeviceKey{text(device, "host", where), text(device, "device_id", where)};
  info.name = text(device, "name", where);
  info.vendor = text(device, "vendor", where);
  info.kind = parse_device_kind(text(device, "device_type", where)).value_or(DeviceKind::unknown);
  info.backend = text(device, "backend", where);
  info.uuid = optional_value<std::string>(device, "uuid");
  info.pci_bus_id = optional_value<std::string>(device, "pci_bus_id");
  info.memory_total_bytes = number<std::uint64_t>(device, "memory_bytes", where);
  info.compute_units = optional_value<std::uint32_t>(device, "compute_units");
  info.compute_capability = optional_value<std::string>(device, "compute_capability");
  info.max_clock_mhz = optional_value<double>(device, "max_clock_mhz");
  info.memory_bandwidth_gbps = optional_value<double>(device, "memory_bandwidth_gbps");
  info.driver_version = optional_value<std::string>(device, "driver_version");
  info.power_limit_watts = optional_value<double>(device, "power_limit_watts");
  info.temperature_slowdown_celsius = optional_value<double>(device, "temperature_slowdown_celsius");
  info.temperature_shutdown_celsius = optional_value<double>(device, "temperature_shutdown_celsius");
  info.supports_fp64 = optional_value<bool>(device, "supports_fp64");
  info.supports_tensor_cores = optional_value<bool>(device, "supports_tensor_cores");
  return info;
}

Eligibility eligibility_from(const std::string& name, const std::string& where) {
  for (const Eligibility e : {Eligibility::eligible, Eligibility::unavailable, Eligibility::no_sample,
                              Eligibility::stale, Eligibility::insufficient_memory, Eligibility::zero_score}) {
    if (name == to_string(e)) return e;
  }
  unexpected(where, json(name), "an eligibility the agent names");
}

}  // namespace

DeviceViews devices_from_json(const json& devices) {
  if (!devices.is_array()) unexpected("devices", devices, "an array");
  DeviceViews out;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    const json& device = devices[i];
    const std::string where = fmt::format("devices[{}]", i);
    DeviceState state;
    state.info = std::make_shared<const DeviceInfo>(info_from_json(device, where));
    state.available = member(device, "available", where).get<bool>();
    state.unavailable_reason = optional_value<std::string>(device, "error_message").value_or("");
    if (const auto metrics = device.find("metrics"); metrics != device.end() && !metrics->is_null()) {
      state.latest = sample_from_json(*metrics, where + ".metrics");
    }
    if (const auto eligibility = optional_value<std::string>(device, "eligibility")) {
      RankedDevice ranked;
      ranked.key = state.info->key;
      ranked.eligibility = eligibility_from(*eligibility, where + ".eligibility");
      if (ranked.eligibility != Eligibility::eligible) ranked.reason = *eligibility;
      if (const auto score = optional_value<double>(device, "score")) {
        ranked.breakdown = ScoreBreakdown{};
        ranked.breakdown->score = *score;
      }
      out.ranked.push_back(std::move(ranked));
    }
    out.devices.push_back(std::move(state));
  }
  return out;
}

Selection selection_from_json(const json& selection) {
  Selection out;
  if (const auto device = optional_value<std::string>(selection, "device")) out.device = key_of(*device);
  out.score = number<double>(selection, "score", "selection");
  out.reason = text(selection, "reason", "selection");
  return out;
}

Plan plan_from_json(const json& plan) {
  Plan out;
  const std::string strategy = text(plan, "strategy", "plan");
  out.strategy = parse_strategy(strategy).value_or(Strategy::uniform);
  out.total_items = number<std::uint64_t>(plan, "total_items", "plan");
  out.unassigned = number<std::uint64_t>(plan, "unassigned", "plan");
  const json& assignments = member(plan, "assignments", "plan");
  if (!assignments.is_array()) unexpected("plan.assignments", assignments, "an array");
  for (const json& a : assignments) {
    out.assignments.push_back(Assignment{key_of(text(a, "device", "plan.assignments")),
                                         number<std::uint64_t>(a, "start", "plan.assignments"),
                                         number<std::uint64_t>(a, "count", "plan.assignments")});
  }
  const json& left_out = member(plan, "left_out", "plan");
  if (!left_out.is_array()) unexpected("plan.left_out", left_out, "an array");
  for (const json& l : left_out) {
    out.left_out.push_back(LeftOut{key_of(text(l, "device", "plan.left_out")), text(l, "reason", "plan.left_out")});
  }
  return out;
}

}  // namespace gpucluster
