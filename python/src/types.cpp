// Value types of the native API: enums, device keys and info, samples, device
// states, scores, selections, aggregates, plans, fleets; and the pure
// functions over them (validation, scoring, apportionment, plans).

#include <pybind11/operators.h>
#include <pybind11/stl.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "gpucluster/backends/fleet.hpp"
#include "gpucluster/export/json.hpp"
#include "gpucluster/model/device.hpp"
#include "gpucluster/model/fields.hpp"
#include "gpucluster/model/validation.hpp"
#include "gpucluster/scheduling/distribution.hpp"
#include "gpucluster/scheduling/scoring.hpp"
#include "gpucluster/telemetry/store.hpp"
#include "types.hpp"

namespace gpucluster::python {

DeviceKey parse_key(std::string_view text, std::string_view default_host) {
  if (text.find('/') == std::string_view::npos) return DeviceKey{std::string(default_host), std::string(text)};
  return parse_device_key(text, default_host);
}

std::string key_text(const DeviceKey& key) {
  return key.host.empty() ? key.local_id : key.str();
}

py::object optional_timestamp(const std::optional<Timestamp>& t) {
  if (!t) return py::none();
  return py::float_(to_seconds(*t));
}

py::dict apply_plan_to(const Plan& plan, const py::handle& items_in) {
  const py::list items = py::isinstance<py::list>(items_in) ? py::reinterpret_borrow<py::list>(items_in)
                                                            : py::list(py::reinterpret_borrow<py::object>(items_in));
  if (static_cast<std::uint64_t>(items.size()) != plan.total_items) {
    throw PlanError("items", std::to_string(items.size()),
                    fmt::format("must equal the plan's total_items ({})", plan.total_items));
  }
  py::dict out;
  for (const Assignment& a : plan.assignments) {
    const auto start = static_cast<Py_ssize_t>(a.start);
    const auto stop = static_cast<Py_ssize_t>(a.start + a.count);
    out[py::str(key_text(a.device))] = py::reinterpret_steal<py::object>(PyList_GetSlice(items.ptr(), start, stop));
  }
  if (plan.unassigned > 0) {
    // Never lose an item: what no device could take is raised with it, as the drop-in does.
    const auto first = static_cast<Py_ssize_t>(plan.total_items - plan.unassigned);
    const py::object unplaced = py::reinterpret_steal<py::object>(
        PyList_GetSlice(items.ptr(), first, static_cast<Py_ssize_t>(plan.total_items)));
    const py::object error_class = py::module_::import("gpucluster.errors").attr("UnplacedItemsError");
    const std::string message = fmt::format(
        "{} of {} items could not be placed (every device is at its max_per_device); the error's `unplaced` holds "
        "them, `distribution` what was placed",
        plan.unassigned, plan.total_items);
    const py::object error =
        error_class(message, out, unplaced, "items", std::to_string(plan.unassigned), "every item must be placed");
    PyErr_SetObject(error_class.ptr(), error.ptr());
    throw py::error_already_set();
  }
  return out;
}

namespace {

py::object to_python(const nlohmann::json& j) {
  return json_to_python(j.dump());
}

// Sample(timestamp=…, memory_used_bytes=…, <any quantity of the field table>=…).
Sample make_sample(const py::kwargs& kwargs) {
  Sample s;
  s.timestamp = now_timestamp();
  for (const auto& [key, value] : kwargs) {
    const std::string name = py::cast<std::string>(key);
    if (name == "timestamp") {
      if (!value.is_none()) s.timestamp = checked_timestamp(py::cast<double>(value), "");
      continue;
    }
    bool known = false;
    for_each_field([&](const auto& row) {
      if (row.name != name) return;
      known = true;
      auto& member = s.*row.member;
      using Member = std::decay_t<decltype(member)>;
      if constexpr (std::is_integral_v<Member>) {
        member = py::cast<Member>(value);
      } else {
        using Value = typename Member::value_type;
        member = value.is_none() ? Member{} : Member{static_cast<Value>(py::cast<double>(value))};
      }
    });
    if (!known) throw py::type_error(fmt::format("Sample() got an unexpected keyword argument '{}'", name));
  }
  return s;
}

std::string sample_repr(const Sample& s) {
  std::string out = fmt::format("Sample(timestamp={:.9f}", to_seconds(s.timestamp));
  for_each_field([&](const auto& row) {
    const std::string text = format_field(s, row.quantity);
    fmt::format_to(std::back_inserter(out), ", {}={}", row.name, text == "unavailable" ? "None" : text);
  });
  return out + ")";
}

// One property per row of the field table: memory as int; a float quantity
// reads back as its tidy double and is written as a float (NaN is kept, and
// rejected on record); a double quantity as is; None when unavailable.
void bind_sample_fields(py::class_<Sample>& cls) {
  for_each_field([&](const auto& row) {
    using Member = std::decay_t<decltype(std::declval<Sample&>().*row.member)>;
    const auto member = row.member;
    if constexpr (std::is_integral_v<Member>) {
      cls.def_property(
          std::string(row.name).c_str(), [member](const Sample& s) { return s.*member; },
          [member](Sample& s, Member v) { s.*member = v; });
    } else {
      using Value = typename Member::value_type;
      cls.def_property(
          std::string(row.name).c_str(),
          [member](const Sample& s) -> std::optional<double> {
            const std::optional<Value> v = s.*member;
            if (!v) return std::nullopt;
            if constexpr (std::is_same_v<Value, float>)
              return tidy(v);
            else
              return *v;
          },
          [member](Sample& s, std::optional<double> v) { s.*member = v ? Member{static_cast<Value>(*v)} : Member{}; });
    }
  });
}

py::dict field_stats(const FieldStats& f) {
  py::dict d;
  d["count"] = f.count;
  d["min"] = f.min;
  d["mean"] = f.mean;
  d["max"] = f.max;
  d["last"] = f.last;
  return d;
}

}  // namespace

void bind_types(py::module_& m) {
  py::enum_<DeviceKind>(m, "DeviceKind", "What kind of accelerator a device is (kept as reported).")
      .value("cuda", DeviceKind::cuda)
      .value("rocm", DeviceKind::rocm)
      .value("metal", DeviceKind::metal)
      .value("vulkan", DeviceKind::vulkan)
      .value("intel_xe", DeviceKind::intel_xe)
      .value("directml", DeviceKind::directml)
      .value("cpu", DeviceKind::cpu)
      .value("unknown", DeviceKind::unknown);
  m.def(
      "parse_device_kind",
      [](std::string_view text) {
        const auto kind = parse_device_kind(text);
        if (!kind) throw InputError("device_type", std::string(text), "names no known device type");
        return *kind;
      },
      py::arg("text"), "Our names and the seed protocol's (vulkan_android, vulkan_linux -> vulkan).");

  py::enum_<Strategy>(m, "Strategy", "How a plan splits work.")
      .value("uniform", Strategy::uniform)
      .value("capacity", Strategy::capacity)
      .value("memory", Strategy::memory);
  py::enum_<Eligibility>(m, "Eligibility", "Whether a device may be selected, and why not.")
      .value("eligible", Eligibility::eligible)
      .value("unavailable", Eligibility::unavailable)
      .value("no_sample", Eligibility::no_sample)
      .value("stale", Eligibility::stale)
      .value("insufficient_memory", Eligibility::insufficient_memory)
      .value("zero_score", Eligibility::zero_score);
  py::enum_<RejectReason>(m, "RejectReason", "Why a sample was rejected.")
      .value("not_finite", RejectReason::not_finite)
      .value("out_of_range", RejectReason::out_of_range)
      .value("used_exceeds_total", RejectReason::used_exceeds_total)
      .value("out_of_order", RejectReason::out_of_order)
      .value("unknown_device", RejectReason::unknown_device)
      .value("future_timestamp", RejectReason::future_timestamp)
      .value("conflict", RejectReason::conflict);

  py::class_<DeviceKey>(m, "DeviceKey", "Cluster-wide identity: host + local id.")
      .def(py::init<std::string, std::string>(), py::arg("host"), py::arg("local_id"))
      .def(py::init([](const std::string& text) { return parse_key(text, ""); }), py::arg("text"),
           "From 'host/local_id' (or a bare local id, with an empty host).")
      .def_readwrite("host", &DeviceKey::host)
      .def_readwrite("local_id", &DeviceKey::local_id)
      .def("__str__", &key_text)
      .def("__repr__", [](const DeviceKey& k) { return fmt::format("DeviceKey('{}', '{}')", k.host, k.local_id); })
      .def("__hash__", [](const DeviceKey& k) { return py::hash(py::make_tuple(k.host, k.local_id)); })
      .def(py::self == py::self)
      .def(py::self < py::self);
  py::implicitly_convertible<py::str, DeviceKey>();

  py::class_<DeviceInfo>(m, "DeviceInfo", "Static information of a device; optional fields are None when unknown.")
      .def(py::init([](const DeviceKey& key, std::string name, std::string vendor, DeviceKind kind, std::string backend,
                       std::uint64_t memory_total_bytes, std::optional<std::uint32_t> compute_units,
                       std::optional<std::string> compute_capability, std::optional<double> max_clock_mhz,
                       std::optional<double> memory_bandwidth_gbps, std::optional<std::string> driver_version,
                       std::optional<std::string> uuid, std::optional<std::string> pci_bus_id,
                       std::optional<double> power_limit_watts, std::optional<double> temperature_slowdown_celsius,
                       std::optional<double> temperature_shutdown_celsius, std::optional<bool> supports_fp64,
                       std::optional<bool> supports_tensor_cores) {
             DeviceInfo info;
             info.key = key;
             info.name = std::move(name);
             info.vendor = std::move(vendor);
             info.kind = kind;
             info.backend = std::move(backend);
             info.memory_total_bytes = memory_total_bytes;
             info.compute_units = compute_units;
             info.compute_capability = std::move(compute_capability);
             info.max_clock_mhz = max_clock_mhz;
             info.memory_bandwidth_gbps = memory_bandwidth_gbps;
             info.driver_version = std::move(driver_version);
             info.uuid = std::move(uuid);
             info.pci_bus_id = std::move(pci_bus_id);
             info.power_limit_watts = power_limit_watts;
             info.temperature_slowdown_celsius = temperature_slowdown_celsius;
             info.temperature_shutdown_celsius = temperature_shutdown_celsius;
             info.supports_fp64 = supports_fp64;
             info.supports_tensor_cores = supports_tensor_cores;
             return info;
           }),
           py::arg("key"), py::kw_only(), py::arg("name") = "", py::arg("vendor") = "",
           py::arg("kind") = DeviceKind::unknown, py::arg("backend") = "python", py::arg("memory_total_bytes") = 0,
           py::arg("compute_units") = py::none(), py::arg("compute_capability") = py::none(),
           py::arg("max_clock_mhz") = py::none(), py::arg("memory_bandwidth_gbps") = py::none(),
           py::arg("driver_version") = py::none(), py::arg("uuid") = py::none(), py::arg("pci_bus_id") = py::none(),
           py::arg("power_limit_watts") = py::none(), py::arg("temperature_slowdown_celsius") = py::none(),
           py::arg("temperature_shutdown_celsius") = py::none(), py::arg("supports_fp64") = py::none(),
           py::arg("supports_tensor_cores") = py::none())
      .def_readwrite("key", &DeviceInfo::key)
      .def_property_readonly("id", [](const DeviceInfo& i) { return key_text(i.key); })
      .def_readwrite("name", &DeviceInfo::name)
      .def_readwrite("vendor", &DeviceInfo::vendor)
      .def_readwrite("kind", &DeviceInfo::kind)
      .def_readwrite("backend", &DeviceInfo::backend)
      .def_readwrite("uuid", &DeviceInfo::uuid)
      .def_readwrite("pci_bus_id", &DeviceInfo::pci_bus_id)
      .def_readwrite("memory_total_bytes", &DeviceInfo::memory_total_bytes)
      .def_readwrite("compute_units", &DeviceInfo::compute_units)
      .def_readwrite("compute_capability", &DeviceInfo::compute_capability)
      .def_readwrite("max_clock_mhz", &DeviceInfo::max_clock_mhz)
      .def_readwrite("memory_bandwidth_gbps", &DeviceInfo::memory_bandwidth_gbps)
      .def_readwrite("driver_version", &DeviceInfo::driver_version)
      .def_readwrite("power_limit_watts", &DeviceInfo::power_limit_watts)
      .def_readwrite("temperature_slowdown_celsius", &DeviceInfo::temperature_slowdown_celsius)
      .def_readwrite("temperature_shutdown_celsius", &DeviceInfo::temperature_shutdown_celsius)
      .def_readwrite("supports_fp64", &DeviceInfo::supports_fp64)
      .def_readwrite("supports_tensor_cores", &DeviceInfo::supports_tensor_cores)
      .def(
          "to_dict", [](const DeviceInfo& i) { return to_python(to_json(i)); },
          "The JSON form (the seed protocol's field names; unknown fields are None).")
      .def("__repr__", [](const DeviceInfo& i) {
        return fmt::format("DeviceInfo('{}', name='{}', kind={}, memory_total_bytes={})", key_text(i.key), i.name,
                           to_string(i.kind), i.memory_total_bytes);
      });

  py::class_<Sample> sample_class(m, "Sample",
                                  "One telemetry reading. Gauges are None when unavailable (never 0); "
                                  "stored as 32-bit floats and read back as their shortest decimal.");
  sample_class
      .def(py::init(&make_sample),
           "Keyword arguments only: timestamp (seconds since the epoch, default now), memory_used_bytes, "
           "memory_total_bytes (default 0) and any quantity of the field table (default None): "
           "utilization_percent, power_watts, temperature_celsius, clock_mhz, fan_speed_percent, energy_joules.")
      .def_property(
          "timestamp", [](const Sample& s) { return to_seconds(s.timestamp); },
          [](Sample& s, double seconds) { s.timestamp = checked_timestamp(seconds, ""); }, "Seconds since the epoch.")
      .def_property(
          "timestamp_ns", [](const Sample& s) { return s.timestamp.time_since_epoch().count(); },
          [](Sample& s, std::int64_t ns) { s.timestamp = Timestamp{std::chrono::nanoseconds{ns}}; })
      .def_property_readonly("memory_free_bytes", &Sample::memory_free_bytes);
  bind_sample_fields(sample_class);
  sample_class
      .def(
          "to_dict", [](const Sample& s) { return to_python(to_json(s)); }, "The protocol's 'metrics' fields.")
      .def("__repr__", &sample_repr)
      .def("__eq__", [](const Sample& a, const Sample& b) { return a == b; });

  py::class_<ScoreBreakdown>(m, "ScoreBreakdown", "How a score was made.")
      .def_readonly("score", &ScoreBreakdown::score)
      .def_readonly("memory_free_ratio", &ScoreBreakdown::memory_free_ratio)
      .def_readonly("compute_idle_ratio", &ScoreBreakdown::compute_idle_ratio)
      .def_readonly("thermal_penalty", &ScoreBreakdown::thermal_penalty)
      .def_readonly("temperature_known", &ScoreBreakdown::temperature_known)
      .def_readonly("thermal_threshold_celsius", &ScoreBreakdown::thermal_threshold_celsius)
      .def("__repr__", [](const ScoreBreakdown& b) {
        return fmt::format("ScoreBreakdown(score={}, memory_free_ratio={}, thermal_penalty={})", b.score,
                           b.memory_free_ratio, b.thermal_penalty);
      });

  py::class_<DeviceState>(m, "Device", "A device as seen now: static info, availability, latest sample.")
      .def_property_readonly("info", [](const DeviceState& s) { return *s.info; })
      .def_property_readonly("key", [](const DeviceState& s) { return s.info->key; })
      .def_property_readonly("id", [](const DeviceState& s) { return key_text(s.info->key); })
      .def_readonly("available", &DeviceState::available)
      .def_readonly("unavailable_reason", &DeviceState::unavailable_reason)
      .def_readonly("latest", &DeviceState::latest)
      .def("to_dict", [](const DeviceState& s) { return to_python(to_json(s, std::nullopt)); })
      .def("__repr__", [](const DeviceState& s) {
        return fmt::format("Device('{}', available={}, has_sample={})", key_text(s.info->key), s.available,
                           s.latest.has_value());
      });

  py::class_<RankedDevice>(m, "RankedDevice", "A device's place in a ranking, with its score breakdown.")
      .def_readonly("key", &RankedDevice::key)
      .def_property_readonly("id", [](const RankedDevice& r) { return key_text(r.key); })
      .def_readonly("eligibility", &RankedDevice::eligibility)
      .def_readonly("reason", &RankedDevice::reason)
      .def_readonly("breakdown", &RankedDevice::breakdown)
      .def_property_readonly("score",
                             [](const RankedDevice& r) -> std::optional<double> {
                               if (!r.breakdown) return std::nullopt;
                               return r.breakdown->score;
                             })
      .def_readonly("memory_free_bytes", &RankedDevice::memory_free_bytes)
      .def("to_dict", [](const RankedDevice& r) { return to_python(to_json(r)); })
      .def("__repr__", [](const RankedDevice& r) {
        return fmt::format("RankedDevice('{}', {}, score={})", key_text(r.key), to_string(r.eligibility),
                           r.breakdown ? fmt::format("{}", r.breakdown->score) : std::string("None"));
      });

  py::class_<Selection>(m, "Selection", "The best device, or None and the reason none qualifies.")
      .def_readonly("device", &Selection::device)
      .def_property_readonly("id",
                             [](const Selection& s) -> std::optional<std::string> {
                               if (!s.device) return std::nullopt;
                               return key_text(*s.device);
                             })
      .def_readonly("score", &Selection::score)
      .def_readonly("reason", &Selection::reason)
      .def("__bool__", [](const Selection& s) { return s.device.has_value(); })
      .def("to_dict", [](const Selection& s) { return to_python(to_json(s)); })
      .def("__repr__", [](const Selection& s) {
        return fmt::format("Selection({}, score={}, reason='{}')",
                           s.device ? fmt::format("'{}'", key_text(*s.device)) : std::string("None"), s.score,
                           s.reason);
      });

  py::class_<ClusterAggregate>(m, "ClusterAggregate", "The cluster aggregate; averages over devices that report.")
      .def_readonly("device_count", &ClusterAggregate::device_count)
      .def_readonly("devices_with_samples", &ClusterAggregate::devices_with_samples)
      .def_readonly("total_memory_bytes", &ClusterAggregate::total_memory_bytes)
      .def_readonly("used_memory_bytes", &ClusterAggregate::used_memory_bytes)
      .def_readonly("available_memory_bytes", &ClusterAggregate::available_memory_bytes)
      .def_readonly("average_utilization_percent", &ClusterAggregate::average_utilization_percent)
      .def_readonly("average_temperature_celsius", &ClusterAggregate::average_temperature_celsius)
      .def_readonly("total_power_watts", &ClusterAggregate::total_power_watts)
      .def_property_readonly("timestamp", [](const ClusterAggregate& a) { return optional_timestamp(a.timestamp); })
      .def("to_dict", [](const ClusterAggregate& a) { return to_python(to_json(a)); });

  py::class_<WindowStats> window_stats_class(m, "WindowStats", "min/mean/max/last per field over a device's history.");
  window_stats_class.def_readonly("samples", &WindowStats::samples)
      .def_property_readonly("first", [](const WindowStats& w) { return optional_timestamp(w.first); })
      .def_property_readonly("last", [](const WindowStats& w) { return optional_timestamp(w.last); });
  for_each_field([&](const auto& row) {
    const Quantity quantity = row.quantity;
    window_stats_class.def_property_readonly(std::string(row.name).c_str(),
                                             [quantity](const WindowStats& w) { return field_stats(w[quantity]); });
  });
  window_stats_class.def("to_dict", [](const WindowStats& w) { return to_python(to_json(w)); });

  py::class_<Assignment>(m, "Assignment", "One device's contiguous range of items [start, start + count).")
      .def_readonly("device", &Assignment::device)
      .def_property_readonly("id", [](const Assignment& a) { return key_text(a.device); })
      .def_readonly("start", &Assignment::start)
      .def_readonly("count", &Assignment::count)
      .def_property_readonly("stop", [](const Assignment& a) { return a.start + a.count; })
      .def("__repr__", [](const Assignment& a) {
        return fmt::format("Assignment('{}', start={}, count={})", key_text(a.device), a.start, a.count);
      });

  py::class_<Plan>(m, "Plan",
                   "Contiguous index ranges per device plus an unassigned tail; never loses an item. "
                   "apply(items) turns it into per-device lists of the caller's items.")
      .def_readonly("strategy", &Plan::strategy)
      .def_readonly("total_items", &Plan::total_items)
      .def_readonly("assignments", &Plan::assignments)
      .def_readonly("unassigned", &Plan::unassigned, "How many items no device could take (the tail).")
      .def_property_readonly(
          "left_out",
          [](const Plan& p) {
            py::list out;
            for (const LeftOut& l : p.left_out) out.append(py::make_tuple(key_text(l.device), l.reason));
            return out;
          },
          "[(device id, reason)]: the registered devices the plan did not use, and why.")
      .def_property_readonly("assigned", &Plan::assigned)
      .def(
          "ranges",
          [](const Plan& p) {
            py::dict out;
            for (const Assignment& a : p.assignments)
              out[py::str(key_text(a.device))] = py::make_tuple(a.start, a.count);
            return out;
          },
          "device id -> (start, count)")
      .def(
          "counts",
          [](const Plan& p) {
            py::dict out;
            for (const Assignment& a : p.assignments) out[py::str(key_text(a.device))] = a.count;
            return out;
          },
          "device id -> count")
      .def("apply", &apply_plan_to, py::arg("items"),
           "device id -> list of the caller's items (len(items) must equal total_items). Raises "
           "UnplacedItemsError (with .distribution and .unplaced) when the plan leaves items unassigned.")
      .def(
          "unassigned_items",
          [](const Plan& p, const py::sequence& items) {
            if (static_cast<std::uint64_t>(py::len(items)) != p.total_items) {
              throw PlanError("items", std::to_string(py::len(items)),
                              fmt::format("must equal the plan's total_items ({})", p.total_items));
            }
            const auto start = static_cast<Py_ssize_t>(p.total_items - p.unassigned);
            return py::list(py::reinterpret_steal<py::object>(
                PySequence_GetSlice(items.ptr(), start, static_cast<Py_ssize_t>(p.total_items))));
          },
          py::arg("items"), "The items no device could take, in order.")
      .def("to_dict", [](const Plan& p) { return to_python(to_json(p)); })
      .def("__repr__", [](const Plan& p) {
        return fmt::format("Plan({}, total_items={}, devices={}, unassigned={})", to_string(p.strategy), p.total_items,
                           p.assignments.size(), p.unassigned);
      });

  py::class_<FleetDevice>(m, "FleetDevice", "One device of a fleet file.")
      .def_readonly("info", &FleetDevice::info)
      .def_property_readonly("metrics",
                             [](const FleetDevice& d) -> std::optional<Sample> {
                               if (!d.has_metrics) return std::nullopt;
                               return d.metrics;
                             })
      .def_readonly("available", &FleetDevice::available)
      .def_readonly("error_message", &FleetDevice::error_message);
  py::class_<Fleet>(m, "Fleet", "A simulated fleet (see examples/fleet-*.json).")
      .def_readonly("host", &Fleet::host)
      .def_readonly("devices", &Fleet::devices);
  m.def(
      "load_fleet", [](const std::string& path) { return load_fleet(path); }, py::arg("path"),
      "Reads a fleet file; raises InputError naming the JSON path of a bad field.");
  m.def(
      "parse_fleet", [](const std::string& text) { return parse_fleet_text(text, "fleet"); }, py::arg("json_text"),
      "A fleet from JSON text.");

  m.def(
      "validate_sample", [](const Sample& sample, const std::string& device) { validate_sample(device, sample); },
      py::arg("sample"), py::arg("device") = "", "Raises ValidationError unless the sample satisfies every rule.");
  m.def(
      "score_sample",
      [](const DeviceInfo& info, const Sample& sample) { return score_sample(info, sample, ScoringConfig{}); },
      py::arg("info"), py::arg("sample"), "The seed's score (default weights) with its breakdown.");
  m.def(
      "apportion",
      [](const std::vector<double>& weights, std::uint64_t n, std::optional<std::vector<std::uint64_t>> caps) {
        py::gil_scoped_release release;
        if (caps) return apportion_capped(weights, n, *caps);
        return apportion(weights, n);
      },
      py::arg("weights"), py::arg("n"), py::arg("caps") = py::none(),
      "Largest-remainder apportionment of n among weights (optionally capped per index).");
  m.def(
      "plan_uniform",
      [](const std::vector<DeviceKey>& devices, std::uint64_t items, std::optional<std::uint64_t> max_per_device) {
        py::gil_scoped_release release;
        return plan_uniform(devices, items, max_per_device);
      },
      py::arg("devices"), py::arg("items"), py::arg("max_per_device") = py::none());
  m.def(
      "plan_capacity",
      [](const std::vector<std::pair<DeviceKey, double>>& weights, std::uint64_t items,
         std::optional<std::uint64_t> max_per_device) {
        std::vector<WeightedDevice> devices;
        devices.reserve(weights.size());
        for (const auto& [key, weight] : weights) devices.push_back({key, weight});
        py::gil_scoped_release release;
        return plan_capacity(devices, items, max_per_device);
      },
      py::arg("weights"), py::arg("items"), py::arg("max_per_device") = py::none(),
      "weights: a list of (device, weight) pairs, e.g. list(weights.items()).");
  m.def(
      "plan_memory",
      [](const std::vector<std::pair<DeviceKey, std::uint64_t>>& free_memory, std::uint64_t layers,
         std::optional<std::uint64_t> layer_bytes) {
        std::vector<MemoryDevice> devices;
        devices.reserve(free_memory.size());
        for (const auto& [key, bytes] : free_memory) devices.push_back({key, bytes});
        py::gil_scoped_release release;
        return plan_memory(devices, layers, layer_bytes);
      },
      py::arg("free_memory"), py::arg("layers"), py::arg("layer_bytes") = py::none());
}

}  // namespace gpucluster::python
