#include "gpucluster/backends/nvml.hpp"

#include <array>
#include <charconv>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "backends/vendor_library.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/validation.hpp"
#include "model/text.hpp"

namespace gpucluster {

namespace {

// ---- The few NVML C types we use, declared here (no NVIDIA headers at build time). ----
// Layouts as in nvml.h (checked against nvml.h of driver 4xx–5xx releases).

using nvmlReturn_t = int;  // a C enum: int-sized on every ABI NVML supports
struct nvmlDevice_st;      // opaque
using nvmlDevice_t = nvmlDevice_st*;

constexpr nvmlReturn_t NVML_SUCCESS = 0;
constexpr nvmlReturn_t NVML_ERROR_NOT_SUPPORTED = 3;
constexpr nvmlReturn_t NVML_ERROR_NO_PERMISSION = 4;
constexpr nvmlReturn_t NVML_ERROR_GPU_IS_LOST = 15;

struct nvmlMemory_t {
  unsigned long long total;  // bytes
  unsigned long long free;
  unsigned long long used;
};

struct nvmlUtilization_t {
  unsigned int gpu;  // percent of time a kernel ran over the last sample period
  unsigned int memory;
};

// nvmlPciInfo_t since NVML 2.285 (the struct of nvmlDeviceGetPciInfo_v2 and _v3):
// busIdLegacy[NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE = 16], domain, bus, device,
// pciDeviceId, pciSubSystemId, busId[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE = 32].
// busId reads "00000000:65:00.0" (an 8-digit domain). The original
// nvmlDeviceGetPciInfo (v1) had busId[16] first and is not used.
struct nvmlPciInfo_t {
  char busIdLegacy[16];
  unsigned int domain;
  unsigned int bus;
  unsigned int device;
  unsigned int pciDeviceId;
  unsigned int pciSubSystemId;
  char busId[32];
};
static_assert(sizeof(nvmlPciInfo_t) == 68, "nvmlPciInfo_t must match nvml.h");

// Enum arguments (nvmlTemperatureSensors_t, nvmlClockType_t, nvmlTemperatureThresholds_t) are C enums: int.
constexpr int NVML_TEMPERATURE_GPU = 0;
constexpr int NVML_CLOCK_SM = 1;
constexpr int NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = 0;
constexpr int NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1;

// NVML_DEVICE_NAME_V2_BUFFER_SIZE, NVML_DEVICE_UUID_V2_BUFFER_SIZE, NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE.
constexpr unsigned int kNameBufferSize = 96;
constexpr unsigned int kUuidBufferSize = 96;
constexpr unsigned int kDriverVersionBufferSize = 80;

// Readings outside what validation accepts come from a broken sensor: that gauge is
// unavailable this tick rather than a value that would get the whole sample rejected.
constexpr ValidationLimits kPlausible{};

struct Api {
  // Required. The three versioned ones fall back to their first version (an
  // older driver); a library has both versions of all three or neither, so the
  // count and the index of a handle always come from the same version.
  nvmlReturn_t (*init)() = nullptr;  // nvmlInit_v2, else nvmlInit
  nvmlReturn_t (*shutdown)() = nullptr;
  const char* (*error_string)(nvmlReturn_t) = nullptr;
  nvmlReturn_t (*device_count)(unsigned int*) = nullptr;                   // _v2, else the first
  nvmlReturn_t (*handle_by_index)(unsigned int, nvmlDevice_t*) = nullptr;  // _v2, else the first
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*uuid)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*utilization)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlReturn_t (*power_usage)(nvmlDevice_t, unsigned int*) = nullptr;  // mW
  nvmlReturn_t (*temperature)(nvmlDevice_t, int, unsigned int*) = nullptr;
  nvmlReturn_t (*clock)(nvmlDevice_t, int, unsigned int*) = nullptr;  // MHz
  // Optional: absent on older drivers; their fields are then unknown.
  nvmlReturn_t (*pci_info)(nvmlDevice_t, nvmlPciInfo_t*) = nullptr;  // _v3, else _v2
  nvmlReturn_t (*max_clock)(nvmlDevice_t, int, unsigned int*) = nullptr;
  nvmlReturn_t (*power_limit)(nvmlDevice_t, unsigned int*) = nullptr;  // mW
  nvmlReturn_t (*temperature_threshold)(nvmlDevice_t, int, unsigned int*) = nullptr;
  nvmlReturn_t (*compute_capability)(nvmlDevice_t, int*, int*) = nullptr;
  nvmlReturn_t (*driver_version)(char*, unsigned int) = nullptr;
  nvmlReturn_t (*gpu_cores)(nvmlDevice_t, unsigned int*) = nullptr;
  // Optional gauges: without them the field is unavailable.
  nvmlReturn_t (*fan_speed)(nvmlDevice_t, unsigned int*) = nullptr;           // % of the fan's maximum
  nvmlReturn_t (*total_energy)(nvmlDevice_t, unsigned long long*) = nullptr;  // mJ since the driver loaded
  // The names bound for the versioned functions, for messages.
  const char* init_name = "nvmlInit_v2";
  const char* device_count_name = "nvmlDeviceGetCount_v2";
  const char* handle_by_index_name = "nvmlDeviceGetHandleByIndex_v2";
};

// Binds every function the backend uses; false when a required one is missing
// (library.missing_message() then names every one).
bool bind_api(VendorLibrary& library, Api& api) {
  const auto name_or = [](const char* bound, const char* otherwise) { return bound != nullptr ? bound : otherwise; };
  api.init_name = name_or(library.require(api.init, {"nvmlInit_v2", "nvmlInit"}), api.init_name);
  library.require(api.shutdown, "nvmlShutdown");
  library.require(api.error_string, "nvmlErrorString");
  api.device_count_name = name_or(library.require(api.device_count, {"nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"}),
                                  api.device_count_name);
  api.handle_by_index_name =
      name_or(library.require(api.handle_by_index, {"nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"}),
              api.handle_by_index_name);
  library.require(api.name, "nvmlDeviceGetName");
  library.require(api.uuid, "nvmlDeviceGetUUID");
  library.require(api.memory, "nvmlDeviceGetMemoryInfo");
  library.require(api.utilization, "nvmlDeviceGetUtilizationRates");
  library.require(api.power_usage, "nvmlDeviceGetPowerUsage");
  library.require(api.temperature, "nvmlDeviceGetTemperature");
  library.require(api.clock, "nvmlDeviceGetClockInfo");
  if (!library.complete()) return false;
  library.optional(api.pci_info, {"nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2"});
  library.optional(api.max_clock, "nvmlDeviceGetMaxClockInfo");
  library.optional(api.power_limit, "nvmlDeviceGetPowerManagementLimit");
  library.optional(api.temperature_threshold, "nvmlDeviceGetTemperatureThreshold");
  library.optional(api.compute_capability, "nvmlDeviceGetCudaComputeCapability");
  library.optional(api.driver_version, "nvmlSystemGetDriverVersion");
  library.optional(api.gpu_cores, "nvmlDeviceGetNumGpuCores");
  library.optional(api.fan_speed, "nvmlDeviceGetFanSpeed");
  library.optional(api.total_energy, "nvmlDeviceGetTotalEnergyConsumption");  // Volta and newer, driver 390+
  return true;
}

std::string error_text(const Api& api, nvmlReturn_t code) {
  const char* text = api.error_string != nullptr ? api.error_string(code) : nullptr;
  if (text == nullptr || *text == '\0') return fmt::format("NVML error {}", code);
  return fmt::format("{} (NVML error {})", text, code);
}

// A string from a fixed NVML buffer, which a broken library might leave unterminated.
template <std::size_t N>
std::string from_buffer(const std::array<char, N>& buffer) {
  std::size_t length = 0;
  while (length < N && buffer[length] != '\0') ++length;
  return std::string(buffer.data(), length);
}

// CUDA cores per streaming multiprocessor by compute capability (CUDA C Programming
// Guide, "Arithmetic Instructions"); NVML reports cores, the fleet counts SMs.
std::optional<unsigned int> cores_per_multiprocessor(int major, int minor) {
  switch (major) {
    case 3: return 192;
    case 5: return 128;
    case 6: return minor == 0 ? 64 : 128;
    case 7: return 64;
    case 8: return minor == 0 ? 64 : 128;
    case 9: return 128;
    case 10:
    case 11:
    case 12: return 128;
    default: return std::nullopt;
  }
}

bool is_field_unsupported(nvmlReturn_t code) {
  // Neither changes while the process runs: asking again every tick only costs driver time.
  return code == NVML_ERROR_NOT_SUPPORTED || code == NVML_ERROR_NO_PERMISSION;
}

}  // namespace

struct NvmlBackend::State {
  struct Device {
    unsigned int index = 0;
    std::string local_id;
    std::string label;  // "cuda:0 (GPU-…)" for messages
    nvmlDevice_t handle = nullptr;
    FieldAvailability fields;
  };

  std::optional<VendorLibrary> library;  // with api: bound to it
  std::optional<Api> api;
  bool initialised = false;  // nvmlInit(_v2) succeeded and nvmlShutdown is still owed
  bool shut_down = false;
  std::optional<std::string> driver_version;
  std::vector<Device> devices;

  Device* find(const std::string& local_id) {
    for (Device& device : devices) {
      if (device.local_id == local_id) return &device;
    }
    return nullptr;
  }

  [[noreturn]] void fail(const Device& device, const char* what, nvmlReturn_t code) const {
    if (code == NVML_ERROR_GPU_IS_LOST) {
      throw Error(fmt::format("nvml {}: GPU is lost ({} answered {})", device.label, what, error_text(*api, code)));
    }
    throw Error(fmt::format("nvml {}: {} failed: {}", device.label, what, error_text(*api, code)));
  }

  // Whether a gauge read succeeded. NOT_SUPPORTED turns the field off for good; other errors throw.
  bool gauge_read(Device& device, Quantity quantity, const char* what, nvmlReturn_t code) {
    if (code == NVML_SUCCESS) return true;
    if (is_field_unsupported(code)) {
      turn_gauge_off("nvml", device.label, device.fields, quantity, what, error_text(*api, code));
      return false;
    }
    fail(device, what, code);
  }
};

NvmlBackend::NvmlBackend(std::string library_path) : state_(std::make_unique<State>()) {
  LibraryChoice choice = choose_library(std::move(library_path), kLibraryEnvironmentVariable, kDefaultLibrary);
  library_path_ = std::move(choice.path);
  from_environment_ = choice.from_environment;
}

std::string NvmlBackend::library_hint() const {
  if (from_environment_) {
    return fmt::format("the library was named by {}; point it at the NVIDIA driver's {}", kLibraryEnvironmentVariable,
                       kDefaultLibrary);
  }
  if (library_path_ == kDefaultLibrary) {
    return fmt::format("set {} to the path of {} if the NVIDIA driver installed it elsewhere",
                       kLibraryEnvironmentVariable, kDefaultLibrary);
  }
  return fmt::format("the path was given by the caller; give the path of the NVIDIA driver's {}", kDefaultLibrary);
}

NvmlBackend::~NvmlBackend() {
  std::lock_guard lock(mutex_);
  try {
    shutdown_locked();
  } catch (const std::exception& e) {
    spdlog::warn("nvml backend: {}", e.what());
  }
}

Discovery NvmlBackend::discover(const std::string& host) {
  std::lock_guard lock(mutex_);
  State& state = *state_;
  if (state.shut_down) throw Error("nvml backend is shut down");

  // The source cannot be used: say why, which library was tried, and how to point at another.
  const auto unavailable = [&](const std::string& why, bool hint) {
    std::string note = hint ? fmt::format("{}; {}", why, library_hint()) : why;
    spdlog::debug("nvml backend: {}", note);
    return Discovery{{}, std::move(note), true};
  };
  if (!state.api) {
    VendorLibrary library = VendorLibrary::open(library_path_);
    if (!library.is_open()) return unavailable(fmt::format("no devices: {}", library.open_error()), /*hint=*/true);
    Api api;
    if (!bind_api(library, api)) {
      return unavailable(fmt::format("no devices: {}", library.missing_message("NVML")), /*hint=*/true);
    }
    state.library = std::move(library);
    state.api = api;
  }
  const Api& api = *state.api;
  if (!state.initialised) {
    const nvmlReturn_t code = api.init();
    if (code != NVML_SUCCESS) {
      return unavailable(
          fmt::format("no devices: {} of {} failed: {}", api.init_name, library_path_, error_text(api, code)),
          /*hint=*/false);
    }
    state.initialised = true;
    if (api.driver_version != nullptr) {
      std::array<char, kDriverVersionBufferSize> version{};
      if (api.driver_version(version.data(), kDriverVersionBufferSize) == NVML_SUCCESS) {
        std::string text = from_buffer(version);
        if (!text.empty()) state.driver_version = std::move(text);
      }
    }
  }

  unsigned int count = 0;
  if (const nvmlReturn_t code = api.device_count(&count); code != NVML_SUCCESS) {
    throw Error(fmt::format("nvml backend: {} failed: {}", api.device_count_name, error_text(api, code)));
  }

  Discovery discovery;
  std::vector<State::Device> devices;
  std::vector<std::string> skipped;
  for (unsigned int index = 0; index < count; ++index) {
    State::Device device;
    device.index = index;
    device.local_id = fmt::format("cuda:{}", index);
    device.label = device.local_id;
    if (const nvmlReturn_t code = api.handle_by_index(index, &device.handle); code != NVML_SUCCESS) {
      skipped.push_back(
          fmt::format("{}: {} failed: {}", device.local_id, api.handle_by_index_name, error_text(api, code)));
      continue;
    }

    DeviceInfo info;
    info.key = DeviceKey{host, device.local_id};
    info.vendor = "nvidia";
    info.kind = DeviceKind::cuda;
    info.backend = "nvml";
    info.driver_version = state.driver_version;

    std::array<char, kUuidBufferSize> uuid{};
    if (api.uuid(device.handle, uuid.data(), kUuidBufferSize) == NVML_SUCCESS && uuid[0] != '\0') {
      info.uuid = from_buffer(uuid);
      device.label = fmt::format("{} ({})", device.local_id, *info.uuid);
    }
    std::array<char, kNameBufferSize> name{};
    if (api.name(device.handle, name.data(), kNameBufferSize) == NVML_SUCCESS) info.name = from_buffer(name);
    if (info.name.empty()) info.name = "NVIDIA GPU";

    nvmlMemory_t memory{};
    if (const nvmlReturn_t code = api.memory(device.handle, &memory); code != NVML_SUCCESS) {
      skipped.push_back(fmt::format("{}: nvmlDeviceGetMemoryInfo failed: {}", device.label, error_text(api, code)));
      continue;
    }
    if (memory.total == 0 || memory.total > static_cast<unsigned long long>(std::numeric_limits<std::int64_t>::max())) {
      skipped.push_back(fmt::format("{}: implausible memory total {} bytes", device.label, memory.total));
      continue;
    }
    info.memory_total_bytes = memory.total;

    // Expensive and static fields: read once, here.
    if (api.pci_info != nullptr) {
      nvmlPciInfo_t pci{};
      if (api.pci_info(device.handle, &pci) == NVML_SUCCESS) {
        pci.busId[sizeof(pci.busId) - 1] = '\0';
        pci.busIdLegacy[sizeof(pci.busIdLegacy) - 1] = '\0';
        info.pci_bus_id = text::normalise_pci_bus_id(pci.busId);
        if (!info.pci_bus_id) info.pci_bus_id = text::normalise_pci_bus_id(pci.busIdLegacy);
        if (!info.pci_bus_id && pci.bus <= 0xff && pci.device <= 0x1f) {
          info.pci_bus_id = text::pci_bus_id(pci.domain, pci.bus, pci.device, 0);
        }
      }
    }
    unsigned int value = 0;
    if (api.max_clock != nullptr && api.max_clock(device.handle, NVML_CLOCK_SM, &value) == NVML_SUCCESS && value > 0 &&
        value <= kPlausible.max_clock_mhz) {
      info.max_clock_mhz = static_cast<double>(value);
    }
    if (api.power_limit != nullptr && api.power_limit(device.handle, &value) == NVML_SUCCESS && value > 0) {
      info.power_limit_watts = static_cast<double>(value) / 1000.0;  // mW → W
    }
    if (api.temperature_threshold != nullptr) {
      const auto threshold = [&](int which) -> std::optional<double> {
        unsigned int celsius = 0;
        if (api.temperature_threshold(device.handle, which, &celsius) != NVML_SUCCESS) return std::nullopt;
        if (celsius == 0 || celsius > kPlausible.max_temperature_celsius) return std::nullopt;
        return static_cast<double>(celsius);
      };
      info.temperature_slowdown_celsius = threshold(NVML_TEMPERATURE_THRESHOLD_SLOWDOWN);
      info.temperature_shutdown_celsius = threshold(NVML_TEMPERATURE_THRESHOLD_SHUTDOWN);
    }
    int major = 0;
    int minor = 0;
    if (api.compute_capability != nullptr && api.compute_capability(device.handle, &major, &minor) == NVML_SUCCESS &&
        major > 0 && minor >= 0) {
      info.compute_capability = fmt::format("{}.{}", major, minor);
      info.supports_fp64 = true;                // every CUDA GPU since compute capability 1.3
      info.supports_tensor_cores = major >= 7;  // Volta and newer
      const auto per_sm = cores_per_multiprocessor(major, minor);
      if (per_sm && api.gpu_cores != nullptr && api.gpu_cores(device.handle, &value) == NVML_SUCCESS && value > 0 &&
          value % *per_sm == 0) {
        info.compute_units = value / *per_sm;  // streaming multiprocessors
      }
    }

    // Which cheap gauges this device answers at all: one probe each, now.
    nvmlUtilization_t utilization{};
    device.fields.set(Quantity::utilization_percent,
                      !is_field_unsupported(api.utilization(device.handle, &utilization)));
    device.fields.set(Quantity::power_watts, !is_field_unsupported(api.power_usage(device.handle, &value)));
    device.fields.set(Quantity::temperature_celsius,
                      !is_field_unsupported(api.temperature(device.handle, NVML_TEMPERATURE_GPU, &value)));
    device.fields.set(Quantity::clock_mhz, !is_field_unsupported(api.clock(device.handle, NVML_CLOCK_SM, &value)));
    // A passively cooled datacenter GPU answers NOT_SUPPORTED for its fan.
    device.fields.set(Quantity::fan_speed_percent,
                      api.fan_speed != nullptr && !is_field_unsupported(api.fan_speed(device.handle, &value)));
    unsigned long long millijoules = 0;
    const bool energy =
        api.total_energy != nullptr && !is_field_unsupported(api.total_energy(device.handle, &millijoules));
    device.fields.set(Quantity::energy_joules, energy);

    try {
      validate_device_info(info);
    } catch (const InputError& e) {
      skipped.push_back(fmt::format("{}: {}", device.label, e.what()));
      continue;
    }
    spdlog::debug("nvml {}: {} ({}), reads {}", device.label, info.name, info.pci_bus_id.value_or("no PCI id"),
                  to_string(device.fields));
    devices.push_back(std::move(device));
    discovery.devices.push_back(std::move(info));
  }
  state.devices = std::move(devices);

  if (count == 0) {
    discovery.note = "no devices: NVML reports 0 GPUs";
  } else if (!skipped.empty()) {
    discovery.note = fmt::format("skipped {} of {} NVML devices: {}", skipped.size(), count, fmt::join(skipped, "; "));
  }
  return discovery;
}

Sample NvmlBackend::sample(const std::string& local_id) {
  std::lock_guard lock(mutex_);
  State& state = *state_;
  if (state.shut_down) throw Error("nvml backend is shut down");
  State::Device* device = state.find(local_id);
  if (device == nullptr) throw UnknownDeviceError(local_id);
  const Api& api = *state.api;

  Sample sample;
  sample.timestamp = now_timestamp();
  nvmlMemory_t memory{};
  if (const nvmlReturn_t code = api.memory(device->handle, &memory); code != NVML_SUCCESS) {
    state.fail(*device, "nvmlDeviceGetMemoryInfo", code);
  }
  constexpr auto kMaxBytes = static_cast<unsigned long long>(std::numeric_limits<std::int64_t>::max());
  if (memory.total > kMaxBytes || memory.used > kMaxBytes) {
    throw Error(fmt::format("nvml {}: implausible memory reading (total {}, used {} bytes)", device->label,
                            memory.total, memory.used));
  }
  sample.memory_total_bytes = static_cast<std::int64_t>(memory.total);
  sample.memory_used_bytes = static_cast<std::int64_t>(memory.used);

  if (device->fields.has(Quantity::utilization_percent)) {
    nvmlUtilization_t utilization{};
    if (state.gauge_read(*device, Quantity::utilization_percent, "nvmlDeviceGetUtilizationRates",
                         api.utilization(device->handle, &utilization)) &&
        plausible_or_count(Quantity::utilization_percent, utilization.gpu, implausible_)) {
      sample.utilization_percent = static_cast<float>(utilization.gpu);
    }
  }
  unsigned int value = 0;
  if (device->fields.has(Quantity::power_watts) &&
      state.gauge_read(*device, Quantity::power_watts, "nvmlDeviceGetPowerUsage",
                       api.power_usage(device->handle, &value))) {
    const double watts = static_cast<double>(value) / 1000.0;  // mW → W
    if (plausible_or_count(Quantity::power_watts, watts, implausible_)) sample.power_watts = static_cast<float>(watts);
  }
  if (device->fields.has(Quantity::temperature_celsius) &&
      state.gauge_read(*device, Quantity::temperature_celsius, "nvmlDeviceGetTemperature",
                       api.temperature(device->handle, NVML_TEMPERATURE_GPU, &value)) &&
      plausible_or_count(Quantity::temperature_celsius, value, implausible_)) {
    sample.temperature_celsius = static_cast<float>(value);
  }
  if (device->fields.has(Quantity::clock_mhz) &&
      state.gauge_read(*device, Quantity::clock_mhz, "nvmlDeviceGetClockInfo",
                       api.clock(device->handle, NVML_CLOCK_SM, &value)) &&
      plausible_or_count(Quantity::clock_mhz, value, implausible_)) {
    sample.clock_mhz = static_cast<float>(value);
  }
  // NVML's fan speed is a percent of the fan's maximum and "may exceed 100%"
  // (nvml.h): beyond the table's range it is unavailable this tick.
  if (device->fields.has(Quantity::fan_speed_percent) &&
      state.gauge_read(*device, Quantity::fan_speed_percent, "nvmlDeviceGetFanSpeed",
                       api.fan_speed(device->handle, &value)) &&
      plausible_or_count(Quantity::fan_speed_percent, value, implausible_)) {
    sample.fan_speed_percent = static_cast<float>(value);
  }
  unsigned long long millijoules = 0;
  if (device->fields.has(Quantity::energy_joules) &&
      state.gauge_read(*device, Quantity::energy_joules, "nvmlDeviceGetTotalEnergyConsumption",
                       api.total_energy(device->handle, &millijoules))) {
    const double joules = static_cast<double>(millijoules) / 1000.0;  // mJ → J
    if (plausible_or_count(Quantity::energy_joules, joules, implausible_)) sample.energy_joules = joules;
  }
  return sample;
}

FieldAvailability NvmlBackend::available_fields(const std::string& local_id) const {
  std::lock_guard lock(mutex_);
  const State::Device* device = state_->find(local_id);
  if (device == nullptr) throw UnknownDeviceError(local_id);
  return device->fields;
}

void NvmlBackend::shutdown() {
  std::lock_guard lock(mutex_);
  shutdown_locked();
}

void NvmlBackend::shutdown_locked() {
  State& state = *state_;
  if (state.shut_down) return;
  state.shut_down = true;
  state.devices.clear();  // handles die with NVML
  if (!state.api) return;
  std::optional<std::string> failure;
  if (state.initialised) {
    state.initialised = false;
    if (const nvmlReturn_t code = state.api->shutdown(); code != NVML_SUCCESS) {
      failure = fmt::format("nvml backend: nvmlShutdown failed: {}", error_text(*state.api, code));
    }
  }
  state.api.reset();  // its functions die with the library
  if (state.library && !state.library->close()) {
    spdlog::warn("nvml backend: dlclose({}) failed: {}", library_path_, state.library->dl_error());
  }
  state.library.reset();
  if (failure) throw Error(*failure);
}

}  // namespace gpucluster
