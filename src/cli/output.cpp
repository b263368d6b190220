#include "output.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>

#include <fmt/format.h>

#include "gpucluster/model/units.hpp"

namespace gpucluster::cli {

namespace {

constexpr const char* kUnavailable = "n/a";

std::string gauge(const std::optional<float>& value, const char* format) {
  return value ? fmt::format(fmt::runtime(format), *value) : kUnavailable;
}

std::string gauge(const std::optional<double>& value, const char* format) {
  return value ? fmt::format(fmt::runtime(format), *value) : kUnavailable;
}

// A counter in joules with an SI prefix: "812.0 J", "5.4 kJ", "61.2 MJ".
std::string energy(const std::optional<double>& joules) {
  if (!joules) return kUnavailable;
  constexpr const char* kPrefixes[] = {"", "k", "M", "G", "T"};
  double value = *joules;
  std::size_t prefix = 0;
  while (std::fabs(value) >= 1000.0 && prefix + 1 < std::size(kPrefixes)) {
    value /= 1000.0;
    ++prefix;
  }
  return fmt::format("{:.1f} {}J", value, kPrefixes[prefix]);
}

const RankedDevice* find_ranked(const std::vector<RankedDevice>& ranked, const DeviceKey& key) {
  const auto it = std::find_if(ranked.begin(), ranked.end(), [&](const RankedDevice& r) { return r.key == key; });
  return it == ranked.end() ? nullptr : &*it;
}

std::string state_text(const DeviceState& state, const RankedDevice* ranked) {
  if (!state.available) return "unavailable: " + state.unavailable_reason;
  if (ranked == nullptr || ranked->eligibility == Eligibility::eligible) return "ok";
  if (ranked->eligibility == Eligibility::insufficient_memory) return "ok";
  return ranked->reason;
}

std::string truncate(std::string text, std::size_t width) {
  if (text.size() <= width) return text;
  return text.substr(0, width - 1) + "~";
}

}  // namespace

std::string devices_table(const std::vector<DeviceState>& devices, const std::vector<RankedDevice>& ranked) {
  if (devices.empty()) return "(no devices)\n";
  std::size_t id_width = 6;
  for (const DeviceState& d : devices) id_width = std::max(id_width, d.info->key.str().size());
  std::string out = fmt::format("{:<{}}  {:<28}  {:<8}  {:>21}  {:>6}  {:>8}  {:>9}  {:>9}  {:>6}  {:>9}  {:>5}  {}\n",
                                "DEVICE", id_width, "NAME", "KIND", "MEMORY USED / TOTAL", "UTIL", "TEMP", "POWER",
                                "CLOCK", "FAN", "ENERGY", "SCORE", "STATE");
  for (const DeviceState& d : devices) {
    const RankedDevice* r = find_ranked(ranked, d.info->key);
    // Without a sample the use is unknown; the total is static information.
    std::string memory = d.info->memory_total_bytes > 0
                             ? std::string(kUnavailable) + " / " + format_bytes(d.info->memory_total_bytes)
                             : std::string(kUnavailable);
    std::string util = kUnavailable, temp = kUnavailable, power = kUnavailable, clock = kUnavailable;
    std::string fan = kUnavailable, energy_used = kUnavailable;
    if (d.latest) {
      memory = format_bytes(static_cast<std::uint64_t>(d.latest->memory_used_bytes)) + " / " +
               format_bytes(static_cast<std::uint64_t>(d.latest->memory_total_bytes));
      util = gauge(d.latest->utilization_percent, "{:.1f}%");
      temp = gauge(d.latest->temperature_celsius, "{:.1f}C");
      power = gauge(d.latest->power_watts, "{:.1f} W");
      clock = gauge(d.latest->clock_mhz, "{:.0f} MHz");
      fan = gauge(d.latest->fan_speed_percent, "{:.0f}%");
      energy_used = energy(d.latest->energy_joules);
    }
    const std::string score = r != nullptr && r->breakdown ? fmt::format("{:.3f}", r->breakdown->score) : kUnavailable;
    out += fmt::format("{:<{}}  {:<28}  {:<8}  {:>21}  {:>6}  {:>8}  {:>9}  {:>9}  {:>6}  {:>9}  {:>5}  {}\n",
                       d.info->key.str(), id_width, truncate(d.info->name, 28), to_string(d.info->kind), memory, util,
                       temp, power, clock, fan, energy_used, score, state_text(d, r));
  }
  return out;
}

std::string ranking_table(const std::vector<RankedDevice>& ranked) {
  std::string out = fmt::format("{:<4}  {:<24}  {:>6}  {:>7}  {:>8}  {:>7}  {}\n", "RANK", "DEVICE", "SCORE", "MEMORY",
                                "COMPUTE", "THERMAL", "ELIGIBILITY");
  std::size_t rank = 1;
  for (const RankedDevice& r : ranked) {
    const std::string position = r.eligibility == Eligibility::eligible ? std::to_string(rank++) : "-";
    if (!r.breakdown) {
      out += fmt::format("{:<4}  {:<24}  {:>6}  {:>7}  {:>8}  {:>7}  {}\n", position, r.key.str(), kUnavailable,
                         kUnavailable, kUnavailable, kUnavailable, r.reason);
      continue;
    }
    const ScoreBreakdown& b = *r.breakdown;
    out += fmt::format("{:<4}  {:<24}  {:>6.3f}  {:>7.3f}  {:>8}  {:>7}  {}\n", position, r.key.str(), b.score,
                       b.memory_free_ratio, gauge(b.compute_idle_ratio, "{:.3f}"),
                       b.temperature_known ? fmt::format("{:.3f}", b.thermal_penalty) : kUnavailable,
                       r.eligibility == Eligibility::eligible ? "eligible" : r.reason);
  }
  return out;
}

std::string aggregate_line(const ClusterAggregate& a) {
  return fmt::format(
      "{} device(s), {} reporting; memory {} used of {} ({} available); utilization {}; temperature {}; power {}\n",
      a.device_count, a.devices_with_samples, format_bytes(a.used_memory_bytes), format_bytes(a.total_memory_bytes),
      format_bytes(a.available_memory_bytes), gauge(a.average_utilization_percent, "{:.1f}% avg"),
      gauge(a.average_temperature_celsius, "{:.1f}C avg"), gauge(a.total_power_watts, "{:.1f} W total"));
}

std::string plan_table(const Plan& plan) {
  const bool layers = plan.strategy == Strategy::memory;
  std::string out =
      fmt::format("{} plan of {} {}\n", to_string(plan.strategy), plan.total_items, layers ? "layers" : "items");
  out += fmt::format("{:<24}  {:>12}  {:>12}  {:>12}\n", "DEVICE", "START", "COUNT", "END");
  for (const Assignment& a : plan.assignments) {
    out += fmt::format("{:<24}  {:>12}  {:>12}  {:>12}\n", a.device.str(), a.start, a.count, a.start + a.count);
  }
  out += fmt::format("unassigned: {}\n", plan.unassigned);
  for (const LeftOut& l : plan.left_out) out += fmt::format("left out: {} ({})\n", l.device.str(), l.reason);
  return out;
}

std::string backends_lines(const std::vector<BackendReport>& reports) {
  std::string out;
  for (const BackendReport& r : reports) {
    if (!r.error.empty()) {
      out += fmt::format("  {:<10} error: {}\n", r.backend, r.error);
    } else if (r.devices == 0) {
      const bool says_so = r.note.rfind("no devices", 0) == 0;  // backends often start their note so
      out += fmt::format("  {:<10} {}\n", r.backend,
                         says_so ? r.note : "no devices" + (r.note.empty() ? std::string{} : ": " + r.note));
    } else {
      out += fmt::format("  {:<10} {} device(s){}\n", r.backend, r.devices, r.note.empty() ? "" : " (" + r.note + ")");
    }
  }
  return out;
}

std::string nodes_table(const nlohmann::json& answer) {
  const nlohmann::json& nodes = answer.at("nodes");
  const auto text = [](const nlohmann::json& value) {
    return value.is_string() ? value.get<std::string>() : std::string(kUnavailable);
  };
  const auto seconds = [](const nlohmann::json& value, const char* format) {
    return value.is_number() ? fmt::format(fmt::runtime(format), value.get<double>()) : std::string("-");
  };
  std::size_t name_width = 4;
  for (const nlohmann::json& node : nodes) name_width = std::max(name_width, text(node["host"]).size());
  std::string out = fmt::format("{:<{}}  {:<7}  {:<7}  {:>11}  {:>7}  {:>11}  {:>5}  {}\n", "NODE", name_width, "KIND",
                                "STATE", "LAST REPORT", "DEVICES", "CLOCK OFF", "INC", "ADDRESS / WHY DOWN");
  for (const nlohmann::json& node : nodes) {
    const std::string state = text(node["state"]);
    const std::string address = state == "down" && node["down_reason"].is_string()
                                    ? node["down_reason"].get<std::string>()
                                    : (node["address"].is_string() ? node["address"].get<std::string>() : "");
    out += fmt::format("{:<{}}  {:<7}  {:<7}  {:>11}  {:>7}  {:>11}  {:>5}  {}\n", text(node["host"]), name_width,
                       text(node["kind"]), state, seconds(node["last_report_age_seconds"], "{:.1f} s ago"),
                       node["devices"].dump(), seconds(node["clock_offset_seconds"], "{:+.3f} s"),
                       node["incarnation"].is_number() ? node["incarnation"].dump() : "-", address);
  }
  return out;
}

}  // namespace gpucluster::cli
