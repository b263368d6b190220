// The native Manager: backends, lifecycle, telemetry, selection, plans.
// Calls that can block or scan (start, sample_now, shutdown, listings,
// selection, plans, batch ingest) release the GIL; the core is thread-safe.

#include <pybind11/functional.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <algorithm>

#include <fmt/format.h>

#include "column.hpp"
#include "common.hpp"
#include "gpucluster/backends/fleet.hpp"
#include "gpucluster/backends/host.hpp"
#include "gpucluster/backends/nvml.hpp"
#include "gpucluster/backends/rocm.hpp"
#include "gpucluster/backends/simulated.hpp"
#include "gpucluster/backends/sysfs.hpp"
#include "gpucluster/model/fields.hpp"
#include "gpucluster/node/backend_registry.hpp"
#include "gpucluster/node/manager.hpp"
#include "types.hpp"

namespace gpucluster::python {

namespace {

// A backend handed to one Manager (it takes ownership on construction).
class PyBackend {
 public:
  explicit PyBackend(BackendPtr backend) : name_(backend->name()), backend_(std::move(backend)) {}
  const std::string& name() const noexcept { return name_; }
  bool consumed() const noexcept { return backend_ == nullptr; }
  BackendPtr take() {
    if (!backend_) throw InputError("backends", name_, "a backend object can be given to one Manager only");
    return std::move(backend_);
  }

 private:
  std::string name_;
  BackendPtr backend_;
};

std::chrono::nanoseconds seconds_to_ns(double seconds, const char* field) {
  if (!std::isfinite(seconds)) throw InputError(field, fmt::format("{}", seconds), "must be a finite number");
  // Past ±9.2e9 s the nanoseconds do not fit 64 bits.
  if (std::fabs(seconds) > kMaxDurationSeconds)
    throw InputError(field, fmt::format("{}", seconds), "must be within ±9.2e9 seconds");
  return duration_from_seconds(seconds);
}

class PyManager {
 public:
  PyManager(const py::object& backends, std::optional<std::string> fleet, std::optional<std::string> host,
            std::size_t max_history, std::optional<double> max_age_seconds, double sample_interval_seconds,
            double backend_timeout_seconds, double discovery_timeout_seconds, bool require_backends,
            double staleness_seconds, double memory_weight, double compute_weight, double thermal_threshold_celsius,
            double thermal_span_celsius, double min_thermal_penalty, std::optional<std::function<double()>> clock) {
    ManagerConfig config;
    config.history.max_samples = max_history;
    if (max_age_seconds) config.history.max_age = seconds_to_ns(*max_age_seconds, "max_age_seconds");
    config.sample_interval = seconds_to_ns(sample_interval_seconds, "sample_interval_seconds");
    config.backend_timeout = seconds_to_ns(backend_timeout_seconds, "backend_timeout_seconds");
    config.discovery_timeout = seconds_to_ns(discovery_timeout_seconds, "discovery_timeout_seconds");
    config.scoring.staleness = seconds_to_ns(staleness_seconds, "staleness_seconds");
    config.scoring.memory_weight = memory_weight;
    config.scoring.compute_weight = compute_weight;
    config.scoring.thermal_threshold_celsius = thermal_threshold_celsius;
    config.scoring.thermal_span_celsius = thermal_span_celsius;
    config.scoring.min_thermal_penalty = min_thermal_penalty;
    if (host) config.host = *host;
    if (clock && *clock) {
      // Called from whichever thread asks for the time; takes the GIL itself.
      config.clock = [fn = std::move(*clock)]() {
        py::gil_scoped_acquire gil;
        return checked_timestamp(fn(), "clock");
      };
    }
    std::vector<BackendPtr> owned;
    if (py::isinstance<py::str>(backends)) {
      // Names through the library's registry (as the CLI's --backend): "auto",
      // "nvml,host", ... Names given explicitly must work; `auto` skips what cannot.
      const auto text = backends.cast<std::string>();
      std::vector<std::string> names = split_backend_names(text);
      if (names.empty()) {
        throw InputError("backends", text, fmt::format("must name backends: auto, {}", backend_names()));
      }
      BackendOptions options;
      if (fleet) {
        options.load_fleet = [path = *fleet] { return load_fleet(path); };
        // fleet= always adds its devices, as with a list of Backend objects.
        if (std::find(names.begin(), names.end(), "auto") == names.end()) names.emplace_back("simulated");
      }
      BackendChoice choice = choose_backends(names, options);
      if (require_backends) config.required_backends = std::move(choice.required);
      owned = std::move(choice.backends);
    } else {
      const auto objects = backends.cast<std::vector<PyBackend*>>();
      for (PyBackend* backend : objects) {
        if (backend == nullptr) throw InputError("backends", "None", "every backend must be a Backend");
        if (backend->consumed()) throw InputError("backends", backend->name(), "already given to another Manager");
      }
      // Backends named by the caller must work (start() raises BackendUnavailableError
      // otherwise), unless require_backends=False: then they are skipped and reported.
      if (require_backends) {
        for (PyBackend* backend : objects) config.required_backends.push_back(backend->name());
      }
      for (PyBackend* backend : objects) owned.push_back(backend->take());
      if (fleet) owned.push_back(std::make_unique<SimulatedBackend>(load_fleet(*fleet)));
    }
    manager_ = std::make_unique<Manager>(std::move(config), std::move(owned));
  }

  ~PyManager() {
    if (!manager_) return;
    // Shutdown may wait for in-flight calls and backend threads: not with the GIL.
    py::gil_scoped_release release;
    manager_.reset();
  }
  PyManager(const PyManager&) = delete;
  PyManager& operator=(const PyManager&) = delete;

  Manager& get() { return *manager_; }

  DeviceKey key(const py::handle& k) const {
    if (py::isinstance<DeviceKey>(k)) return k.cast<DeviceKey>();
    return manager_->resolve_key(k.cast<std::string>());
  }

  // The optional columns are keyword arguments named after the field table's
  // rows (utilization_percent=…, fan_speed_percent=…); None or absent: unavailable.
  std::size_t record_batch(const py::handle& device, const py::handle& timestamps, const py::handle& used,
                           const py::handle& total, const py::kwargs& optional_columns) {
    const DeviceKey k = key(device);
    const Column ts(timestamps, "timestamps");
    const Column used_c(used, "memory_used_bytes");
    const Column total_c(total, "memory_total_bytes");
    std::vector<py::object> given(kOptionalColumns, py::none());
    for (const auto& [name_object, column] : optional_columns) {
      const std::string name = py::cast<std::string>(name_object);
      std::size_t g = 0;
      while (g < kOptionalColumns && field_name(kOptionalQuantities[g]) != name) ++g;
      if (g == kOptionalColumns) {
        throw py::type_error(fmt::format("record_batch() got an unexpected keyword argument '{}'", name));
      }
      given[g] = py::reinterpret_borrow<py::object>(column);
    }
    std::vector<Column> optional;
    optional.reserve(kOptionalColumns);
    for (std::size_t g = 0; g < kOptionalColumns; ++g) {
      optional.emplace_back(given[g], field_name(kOptionalQuantities[g]).data());
    }
    const std::size_t n = ts.size();
    std::vector<const Column*> all{&used_c, &total_c};
    for (const Column& c : optional) all.push_back(&c);
    for (const Column* c : all) {
      if (c->present() && c->size() != n) {
        throw InputError(c->name(), std::to_string(c->size()), fmt::format("must have {} values (timestamps)", n));
      }
    }
    if (!used_c.present() || !total_c.present()) {
      throw InputError("memory_used_bytes", "None", "memory_used_bytes and memory_total_bytes are required");
    }
    BatchColumns columns{&ts, &used_c, &total_c, {}};
    for (std::size_t g = 0; g < kOptionalColumns; ++g) columns.optional[g] = &optional[g];
    std::size_t i = 0;
    std::exception_ptr failure;
    {
      py::gil_scoped_release release;
      try {
        ingest(columns, n, key_text(k), i, [&](const Sample& s) { manager_->record(k, s); });
      } catch (...) {
        failure = std::current_exception();
      }
    }
    if (failure) {
      py::dict attributes;
      attributes["index"] = i;
      attributes["recorded"] = i;
      raise_with_attributes(failure, attributes);
    }
    return n;
  }

 private:
  std::unique_ptr<Manager> manager_;
};

template <class F>
auto released(F&& f) {
  py::gil_scoped_release release;
  return f();
}

}  // namespace

void bind_manager(py::module_& m) {
  py::enum_<ManagerState>(m, "ManagerState")
      .value("created", ManagerState::created)
      .value("running", ManagerState::running)
      .value("draining", ManagerState::draining)
      .value("stopped", ManagerState::stopped);

  py::class_<PyBackend>(m, "Backend", "A device source, handed to one Manager (see gpucluster.backends).")
      .def_property_readonly("name", &PyBackend::name)
      .def_property_readonly("consumed", &PyBackend::consumed)
      .def("__repr__", [](const PyBackend& b) { return fmt::format("<Backend {}>", b.name()); });
  m.def(
      "host_backend", [] { return PyBackend(std::make_unique<HostBackend>()); },
      "This machine's CPU from /proc and /sys.");
  m.def(
      "simulated_backend",
      [](const py::object& fleet) {
        if (py::isinstance<Fleet>(fleet)) return PyBackend(std::make_unique<SimulatedBackend>(fleet.cast<Fleet>()));
        return PyBackend(std::make_unique<SimulatedBackend>(load_fleet(py::str(fleet).cast<std::string>())));
      },
      py::arg("fleet"), "Devices of a fleet file (a path) or a Fleet.");
  m.def(
      "nvml_backend", [](const std::string& library) { return PyBackend(std::make_unique<NvmlBackend>(library)); },
      py::arg("library_path") = "", "NVIDIA GPUs through NVML (dlopen at run time).");
  m.def(
      "rocm_backend", [](const std::string& library) { return PyBackend(std::make_unique<RocmBackend>(library)); },
      py::arg("library_path") = "", "AMD GPUs through ROCm SMI (dlopen at run time).");
  m.def(
      "sysfs_backend",
      [](const std::optional<std::string>& root) {
        if (root) return PyBackend(std::make_unique<SysfsBackend>(*root));
        return PyBackend(std::make_unique<SysfsBackend>());
      },
      py::arg("root") = py::none(), "AMD/Intel GPUs from /sys/class/drm.");

  py::class_<BackendReport>(m, "BackendReport")
      .def_readonly("backend", &BackendReport::backend)
      .def_readonly("devices", &BackendReport::devices)
      .def_readonly("note", &BackendReport::note)
      .def_readonly("error", &BackendReport::error)
      .def_readonly("unavailable", &BackendReport::unavailable)
      .def_property_readonly("status", [](const BackendReport& r) { return std::string(report_status(r)); })
      .def_property_readonly(
          "implausible_readings",
          [](const BackendReport& r) {
            // {"utilization_percent": 0, …}: the quantities a backend reads, as in the JSON views.
            py::dict counts;
            for_each_field([&](const auto& field) {
              if (field.required || !field.read_by_backend) return;
              counts[py::str(std::string(field.name))] = r.implausible_readings[field.index()];
            });
            return counts;
          },
          "Readings the backend dropped as implausible (outside the field table's range), per quantity.")
      .def("__repr__", [](const BackendReport& r) {
        return fmt::format("BackendReport('{}', status={}, devices={}, note='{}', error='{}')", r.backend,
                           report_status(r), r.devices, r.note, r.error);
      });

  py::class_<PyManager>(m, "Manager",
                        "Discovers devices, keeps validated telemetry, selects devices and plans work. "
                        "Thread-safe; long calls release the GIL. Device arguments are 'host/local_id', a bare "
                        "local id (resolved on this manager's host or, if unique, any host) or a DeviceKey.")
      .def(py::init<const py::object&, std::optional<std::string>, std::optional<std::string>, std::size_t,
                    std::optional<double>, double, double, double, bool, double, double, double, double, double, double,
                    std::optional<std::function<double()>>>(),
           py::kw_only(), py::arg("backends") = py::list(), py::arg("fleet") = py::none(), py::arg("host") = py::none(),
           py::arg("max_history") = 100, py::arg("max_age_seconds") = py::none(),
           py::arg("sample_interval_seconds") = 1.0, py::arg("backend_timeout_seconds") = 5.0,
           py::arg("discovery_timeout_seconds") = 30.0, py::arg("require_backends") = true,
           py::arg("staleness_seconds") = 10.0, py::arg("memory_weight") = 0.6, py::arg("compute_weight") = 0.4,
           py::arg("thermal_threshold_celsius") = 80.0, py::arg("thermal_span_celsius") = 40.0,
           py::arg("min_thermal_penalty") = 0.1, py::arg("clock") = py::none())
      .def(
          "start", [](PyManager& self, bool background) { released([&] { self.get().start(background); }); },
          py::arg("background_sampling") = true,
          "Discovers every backend's devices (in parallel, within discovery_timeout_seconds), samples once, "
          "starts the background sampler. Raises BackendUnavailableError (manager stopped) when a backend given "
          "in `backends` cannot be used, unless require_backends=False.")
      .def("sample_now", [](PyManager& self) { released([&] { self.get().sample_now(); }); })
      .def(
          "shutdown", [](PyManager& self) { released([&] { self.get().shutdown(); }); },
          "Waits for in-flight calls, stops sampling, shuts backends down, frees telemetry. Idempotent.")
      .def("__enter__", [](PyManager& self) -> PyManager& { return self; })
      .def("__exit__",
           [](PyManager& self, const py::args&) {
             released([&] { self.get().shutdown(); });
             return false;
           })
      .def_property_readonly("state", [](PyManager& self) { return self.get().state(); })
      .def_property_readonly("host", [](PyManager& self) { return self.get().host(); })
      .def("now", [](PyManager& self) { return to_seconds(self.get().now()); })
      .def(
          "register_device", [](PyManager& self, const DeviceInfo& info) { self.get().register_device(info); },
          py::arg("info"), "Registers a device or replaces its static info (history kept).")
      .def(
          "unregister_device",
          [](PyManager& self, const py::handle& device) { return self.get().unregister_device(self.key(device)); },
          py::arg("device"))
      .def(
          "record",
          [](PyManager& self, const py::handle& device, const Sample& sample) {
            self.get().record(self.key(device), sample);
          },
          py::arg("device"), py::arg("sample"),
          "Validates and stores one sample; raises ValidationError (nothing stored).")
      .def("record_batch", &PyManager::record_batch, py::arg("device"), py::arg("timestamps"),
           py::arg("memory_used_bytes"), py::arg("memory_total_bytes"),
           "Many samples of one device in one call, as columns (buffers such as array.array, or sequences; "
           "None for an unavailable column or value). Optional columns by keyword, one per quantity: "
           "utilization_percent, power_watts, temperature_celsius, clock_mhz, fan_speed_percent, energy_joules. "
           "Returns the number stored. On a bad sample raises its "
           "ValidationError with .index: samples before it are stored, none after.")
      .def(
          "set_availability",
          [](PyManager& self, const py::handle& device, bool available, std::string reason) {
            self.get().set_availability(self.key(device), available, std::move(reason));
          },
          py::arg("device"), py::arg("available"), py::arg("reason") = "")
      .def("devices", [](PyManager& self) { return released([&] { return self.get().devices(); }); })
      .def(
          "device", [](PyManager& self, const py::handle& device) { return self.get().device(self.key(device)); },
          py::arg("device"), "Raises UnknownDeviceError (a KeyError).")
      .def(
          "history",
          [](PyManager& self, const py::handle& device, std::optional<std::size_t> limit) {
            const DeviceKey k = self.key(device);
            return released([&] { return self.get().history(k, limit.value_or(SIZE_MAX)); });
          },
          py::arg("device"), py::arg("limit") = py::none(), "Oldest first; at most `limit` newest samples.")
      .def(
          "window_stats",
          [](PyManager& self, const py::handle& device) {
            const DeviceKey k = self.key(device);
            return released([&] { return self.get().window_stats(k); });
          },
          py::arg("device"))
      .def("aggregate", [](PyManager& self) { return released([&] { return self.get().aggregate(); }); })
      .def(
          "rank",
          [](PyManager& self, std::uint64_t min_free) { return released([&] { return self.get().rank(min_free); }); },
          py::arg("min_free_memory_bytes") = 0, "Every device with its score breakdown; eligible ones first.")
      .def(
          "select",
          [](PyManager& self, std::uint64_t min_free) { return released([&] { return self.get().select(min_free); }); },
          py::arg("min_free_memory_bytes") = 0, "The best eligible device (Selection; falsy when none qualifies).")
      .def(
          "plan",
          [](PyManager& self, const py::object& strategy, std::optional<std::uint64_t> items, const py::object& weights,
             std::optional<std::uint64_t> max_per_device, std::optional<std::uint64_t> layers,
             std::optional<std::uint64_t> layer_bytes) {
            PlanRequest request;
            if (py::isinstance<py::str>(strategy)) {
              request.strategy = plan_strategy(strategy.cast<std::string>());
            } else {
              request.strategy = strategy.cast<Strategy>();
            }
            request.items = items;
            if (!weights.is_none()) {
              const py::object pairs = py::isinstance<py::dict>(weights) ? weights.attr("items")() : weights;
              for (const py::handle pair : pairs) {
                const auto t = pair.cast<py::tuple>();
                request.weights.emplace_back(py::str(t[0]).cast<std::string>(), t[1].cast<double>());
              }
            }
            request.max_per_device = max_per_device;
            request.layers = layers;
            request.layer_bytes = layer_bytes;
            return released([&] { return self.get().plan(request); });
          },
          py::arg("strategy") = "uniform", py::kw_only(), py::arg("items") = py::none(),
          py::arg("weights") = py::none(), py::arg("max_per_device") = py::none(), py::arg("layers") = py::none(),
          py::arg("layer_bytes") = py::none(),
          "A Plan over the usable devices (Plan.left_out names the others and why). uniform, capacity: `items` "
          "(required); capacity: weights {device: w} or the devices' compute units; memory: `layers` split by free "
          "memory (each shard fits when layer_bytes is given). A field the strategy would ignore is a PlanError.")
      .def(
          "resolve_key", [](PyManager& self, const std::string& text) { return self.get().resolve_key(text); },
          py::arg("text"))
      .def("backend_reports", [](PyManager& self) { return self.get().backend_reports(); })
      .def("rejected_samples",
           [](PyManager& self) {
             py::dict out;
             const auto counts = self.get().rejected_samples();
             for (std::size_t i = 0; i < counts.size(); ++i) {
               out[py::str(to_string(static_cast<RejectReason>(i)))] = counts[i];
             }
             return out;
           })
      .def_property_readonly("backend_errors", [](PyManager& self) { return self.get().backend_errors(); });
}

}  // namespace gpucluster::python
