#include "gpucluster/backends/rocm.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "backends/vendor_library.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/fields.hpp"
#include "model/text.hpp"

// The ROCm SMI C API as far as this backend uses it, declared here so the build
// needs no ROCm package. Every enum of the C API is int-sized (checked below
// against the real header when it is installed), so it is passed as uint32_t.
namespace gpucluster::rsmi {

using Status = std::uint32_t;  // rsmi_status_t
inline constexpr Status kSuccess = 0x0;
inline constexpr Status kNotSupported = 0x2;
inline constexpr Status kNotYetImplemented = 0x9;
inline constexpr Status kInsufficientSize = 0xB;
inline constexpr Status kUnknownError = 0xFFFFFFFF;

inline constexpr std::uint32_t kMemTypeVram = 0;       // RSMI_MEM_TYPE_VRAM
inline constexpr std::uint32_t kClkTypeSys = 0;        // RSMI_CLK_TYPE_SYS
inline constexpr std::uint32_t kTempTypeEdge = 0;      // RSMI_TEMP_TYPE_EDGE
inline constexpr std::uint32_t kTempTypeJunction = 1;  // RSMI_TEMP_TYPE_JUNCTION
inline constexpr std::uint32_t kTempCurrent = 0;       // RSMI_TEMP_CURRENT
inline constexpr std::uint32_t kSwCompDriver = 0;      // RSMI_SW_COMP_DRIVER
inline constexpr std::size_t kMaxNumFrequencies = 32;  // RSMI_MAX_NUM_FREQUENCIES

struct Frequencies {  // rsmi_frequencies_t
  std::uint32_t num_supported;
  std::uint32_t current;
  std::uint64_t frequency[kMaxNumFrequencies];  // Hz
};

extern "C" {
using InitFn = Status (*)(std::uint64_t init_flags);
using ShutDownFn = Status (*)();
using NumMonitorDevicesFn = Status (*)(std::uint32_t* num_devices);
using MemoryTotalFn = Status (*)(std::uint32_t dv_ind, std::uint32_t mem_type, std::uint64_t* total);
using MemoryUsageFn = Status (*)(std::uint32_t dv_ind, std::uint32_t mem_type, std::uint64_t* used);
using StatusStringFn = Status (*)(Status status, const char** status_string);
using BusyPercentFn = Status (*)(std::uint32_t dv_ind, std::uint32_t* busy_percent);
using PowerAveFn = Status (*)(std::uint32_t dv_ind, std::uint32_t sensor_ind, std::uint64_t* power);  // µW
using PowerCapFn = Status (*)(std::uint32_t dv_ind, std::uint32_t sensor_ind, std::uint64_t* cap);    // µW
using TempMetricFn = Status (*)(std::uint32_t dv_ind, std::uint32_t sensor_type, std::uint32_t metric,
                                std::int64_t* temperature);  // m°C
using GpuClkFreqFn = Status (*)(std::uint32_t dv_ind, std::uint32_t clk_type, Frequencies* f);
using NameFn = Status (*)(std::uint32_t dv_ind, char* name, std::size_t len);
using UniqueIdFn = Status (*)(std::uint32_t dv_ind, std::uint64_t* id);
using PciIdFn = Status (*)(std::uint32_t dv_ind, std::uint64_t* bdfid);
using VersionStrFn = Status (*)(std::uint32_t component, char* ver_str, std::uint32_t len);
using FanSpeedFn = Status (*)(std::uint32_t dv_ind, std::uint32_t sensor_ind, std::int64_t* speed);
using FanSpeedMaxFn = Status (*)(std::uint32_t dv_ind, std::uint32_t sensor_ind, std::uint64_t* max_speed);
using EnergyCountFn = Status (*)(std::uint32_t dv_ind, std::uint64_t* counter, float* counter_resolution,
                                 std::uint64_t* timestamp);  // counter × resolution µJ
}

}  // namespace gpucluster::rsmi

#if __has_include(<rocm_smi/rocm_smi.h>)
// Only to check the declarations above against the vendor's; nothing is linked.
#include <rocm_smi/rocm_smi.h>
namespace gpucluster::rsmi {
static_assert(sizeof(::rsmi_status_t) == sizeof(Status));
static_assert(sizeof(::rsmi_memory_type_t) == sizeof(std::uint32_t));
static_assert(sizeof(::rsmi_clk_type_t) == sizeof(std::uint32_t));
static_assert(sizeof(::rsmi_temperature_metric_t) == sizeof(std::uint32_t));
static_assert(sizeof(::rsmi_sw_component_t) == sizeof(std::uint32_t));
static_assert(::RSMI_STATUS_SUCCESS == kSuccess && ::RSMI_STATUS_NOT_SUPPORTED == kNotSupported);
static_assert(::RSMI_STATUS_NOT_YET_IMPLEMENTED == kNotYetImplemented);
static_assert(::RSMI_STATUS_INSUFFICIENT_SIZE == kInsufficientSize && ::RSMI_STATUS_UNKNOWN_ERROR == kUnknownError);
static_assert(::RSMI_MEM_TYPE_VRAM == kMemTypeVram && ::RSMI_CLK_TYPE_SYS == kClkTypeSys);
static_assert(::RSMI_TEMP_TYPE_EDGE == kTempTypeEdge && ::RSMI_TEMP_TYPE_JUNCTION == kTempTypeJunction);
static_assert(::RSMI_TEMP_CURRENT == kTempCurrent && ::RSMI_SW_COMP_DRIVER == kSwCompDriver);
static_assert(RSMI_MAX_NUM_FREQUENCIES == kMaxNumFrequencies);
static_assert(sizeof(::rsmi_frequencies_t) == sizeof(Frequencies));
static_assert(offsetof(::rsmi_frequencies_t, current) == offsetof(Frequencies, current));
static_assert(offsetof(::rsmi_frequencies_t, frequency) == offsetof(Frequencies, frequency));
}  // namespace gpucluster::rsmi
#endif

namespace gpucluster {

namespace {

// rsmi_init prints its own failures ("Failed to open drm root directory ...")
// to stderr on every machine without an AMD GPU; our note already says why, so
// its stderr is silenced for that one call, only where /dev/kfd is missing
// (there it fails at once). With an AMD driver loaded rsmi_init may take long or
// hang (the manager's discovery deadline then gives up on it), and stderr is
// process-wide: silencing it there could lose the other threads' log lines
// for as long as the call lasts. (It writes to file descriptor 2 itself:
// muting std::cerr does not silence it.) Even the short window can swallow a
// line another backend's thread logs while it discovers; the manager's own
// discovery messages are logged after every backend has answered.
template <class Call>
auto quietly(Call call) {
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  const int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (saved >= 0 && null_fd >= 0) ::dup2(null_fd, STDERR_FILENO);
  auto result = call();
  std::fflush(stderr);
  if (saved >= 0) {
    ::dup2(saved, STDERR_FILENO);
    ::close(saved);
  }
  if (null_fd >= 0) ::close(null_fd);
  return result;
}

// The names of rsmi_status_t's values (the library's own strings name only some).
std::string_view status_name(rsmi::Status code) noexcept {
  static constexpr std::array<std::string_view, 18> kNames = {"RSMI_STATUS_SUCCESS",
                                                              "RSMI_STATUS_INVALID_ARGS",
                                                              "RSMI_STATUS_NOT_SUPPORTED",
                                                              "RSMI_STATUS_FILE_ERROR",
                                                              "RSMI_STATUS_PERMISSION",
                                                              "RSMI_STATUS_OUT_OF_RESOURCES",
                                                              "RSMI_STATUS_INTERNAL_EXCEPTION",
                                                              "RSMI_STATUS_INPUT_OUT_OF_BOUNDS",
                                                              "RSMI_STATUS_INIT_ERROR",
                                                              "RSMI_STATUS_NOT_YET_IMPLEMENTED",
                                                              "RSMI_STATUS_NOT_FOUND",
                                                              "RSMI_STATUS_INSUFFICIENT_SIZE",
                                                              "RSMI_STATUS_INTERRUPT",
                                                              "RSMI_STATUS_UNEXPECTED_SIZE",
                                                              "RSMI_STATUS_NO_DATA",
                                                              "RSMI_STATUS_UNEXPECTED_DATA",
                                                              "RSMI_STATUS_BUSY",
                                                              "RSMI_STATUS_REFCOUNT_OVERFLOW"};
  if (code < kNames.size()) return kNames[code];
  if (code == rsmi::kUnknownError) return "RSMI_STATUS_UNKNOWN_ERROR";
  return {};
}

bool is_not_supported(rsmi::Status code) noexcept {
  return code == rsmi::kNotSupported || code == rsmi::kNotYetImplemented;
}

struct Api {
  // Required.
  rsmi::InitFn init = nullptr;
  rsmi::ShutDownFn shut_down = nullptr;
  rsmi::NumMonitorDevicesFn num_monitor_devices = nullptr;
  rsmi::MemoryTotalFn memory_total = nullptr;
  rsmi::MemoryUsageFn memory_usage = nullptr;
  rsmi::StatusStringFn status_string = nullptr;
  // Optional: nullptr when the loaded library lacks them.
  rsmi::BusyPercentFn busy_percent = nullptr;
  rsmi::PowerAveFn power_ave = nullptr;
  rsmi::TempMetricFn temp_metric = nullptr;
  rsmi::GpuClkFreqFn gpu_clk_freq = nullptr;
  rsmi::NameFn name = nullptr;
  rsmi::UniqueIdFn unique_id = nullptr;
  rsmi::PciIdFn pci_id = nullptr;
  rsmi::VersionStrFn version_str = nullptr;
  rsmi::PowerCapFn power_cap = nullptr;
  rsmi::FanSpeedFn fan_speed = nullptr;
  rsmi::FanSpeedMaxFn fan_speed_max = nullptr;
  rsmi::EnergyCountFn energy_count = nullptr;
};

// "RSMI_STATUS_NOT_SUPPORTED: This function is not supported …", from the
// library's rsmi_status_string and the code's name.
std::string status_text(const Api& api, rsmi::Status code) {
  const std::string_view name = status_name(code);
  const char* description = nullptr;
  if (api.status_string == nullptr || api.status_string(code, &description) != rsmi::kSuccess ||
      description == nullptr || *description == '\0') {
    return name.empty() ? fmt::format("unknown ROCm SMI status {}", code) : std::string(name);
  }
  const std::string_view text(description);
  if (name.empty()) return fmt::format("status {}: {}", code, text);
  if (text.starts_with(name)) return std::string(text);  // the library already names some codes
  return fmt::format("{}: {}", name, text);
}

// Binds every function the backend uses; false when a required one is missing
// (library.missing_message() then names every one).
bool bind_api(VendorLibrary& library, Api& api) {
  library.require(api.init, "rsmi_init");
  library.require(api.shut_down, "rsmi_shut_down");
  library.require(api.num_monitor_devices, "rsmi_num_monitor_devices");
  library.require(api.memory_total, "rsmi_dev_memory_total_get");
  library.require(api.memory_usage, "rsmi_dev_memory_usage_get");
  library.require(api.status_string, "rsmi_status_string");
  if (!library.complete()) return false;
  library.optional(api.busy_percent, "rsmi_dev_busy_percent_get");
  library.optional(api.power_ave, "rsmi_dev_power_ave_get");
  library.optional(api.temp_metric, "rsmi_dev_temp_metric_get");
  library.optional(api.gpu_clk_freq, "rsmi_dev_gpu_clk_freq_get");
  library.optional(api.name, "rsmi_dev_name_get");
  library.optional(api.unique_id, "rsmi_dev_unique_id_get");
  library.optional(api.pci_id, "rsmi_dev_pci_id_get");
  library.optional(api.version_str, "rsmi_version_str_get");
  library.optional(api.power_cap, "rsmi_dev_power_cap_get");
  library.optional(api.fan_speed, "rsmi_dev_fan_speed_get");
  library.optional(api.fan_speed_max, "rsmi_dev_fan_speed_max_get");
  library.optional(api.energy_count, "rsmi_dev_energy_count_get");
  return true;
}

// "0000:65:00.0" from ROCm SMI's BDFID: domain in bits 63..32, bus 15..8, device 7..3, function 2..0.
std::string pci_bus_id_from_bdfid(std::uint64_t bdfid) {
  return text::pci_bus_id(static_cast<std::uint32_t>(bdfid >> 32), (bdfid >> 8) & 0xFFu, (bdfid >> 3) & 0x1Fu,
                          bdfid & 0x7u);
}

// A NUL-terminated string from a buffer the library wrote (it may have filled it).
template <std::size_t N>
std::string string_from_buffer(const std::array<char, N>& buffer) {
  const auto end = std::find(buffer.begin(), buffer.end(), '\0');
  std::string text(buffer.begin(), end);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\n')) text.pop_back();
  return text;
}

std::int64_t to_signed_bytes(std::uint64_t bytes, const std::string& label, const char* what) {
  if (bytes > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    throw Error(fmt::format("rocm {}: {} answered an impossible {} bytes", label, what, bytes));
  }
  return static_cast<std::int64_t>(bytes);
}

enum class TemperatureSensor : std::uint8_t { edge, junction };

struct Device {
  std::uint32_t index = 0;
  std::string label;  // "rocm:<index>"
  DeviceInfo info;    // key.host is set by each discover()
  FieldAvailability fields;
  TemperatureSensor sensor = TemperatureSensor::edge;
  std::uint64_t fan_speed_max = 0;  // fan sensor 0's full speed, in the units of rsmi_dev_fan_speed_get
};

}  // namespace

struct RocmBackend::State {
  explicit State(VendorLibrary loaded, ImplausibleReadings& dropped)
      : library(std::move(loaded)), implausible(dropped) {}

  VendorLibrary library;
  Api api;                           // bound to library
  ImplausibleReadings& implausible;  // the backend's: what sample() drops
  bool initialised = false;          // rsmi_init succeeded and rsmi_shut_down is still owed
  std::vector<Device> devices;
  std::string note;
  bool unavailable = false;  // initialised but cannot count its devices

  Device& find(const std::string& local_id) {
    const auto it =
        std::find_if(devices.begin(), devices.end(), [&](const Device& device) { return device.label == local_id; });
    if (it == devices.end()) throw UnknownDeviceError(local_id);
    return *it;
  }

  [[noreturn]] void fail(const Device& device, const char* what, rsmi::Status code) const {
    throw Error(fmt::format("rocm {}: {}: {}", device.label, what, status_text(api, code)));
  }

  // An optional gauge's call answered `code`: true when it has a value;
  // NOT_SUPPORTED turns the field off for good; other errors throw.
  bool gauge_ok(Device& device, Quantity quantity, const char* what, rsmi::Status code) const {
    if (code == rsmi::kSuccess) return true;
    if (is_not_supported(code)) {
      turn_gauge_off("rocm", device.label, device.fields, quantity, what, status_text(api, code));
      return false;
    }
    fail(device, what, code);
  }

  std::optional<float> read_temperature(Device& device) const {
    for (;;) {
      const std::uint32_t sensor =
          device.sensor == TemperatureSensor::edge ? rsmi::kTempTypeEdge : rsmi::kTempTypeJunction;
      std::int64_t millicelsius = 0;
      const rsmi::Status code = api.temp_metric(device.index, sensor, rsmi::kTempCurrent, &millicelsius);
      if (code == rsmi::kSuccess) {
        const double celsius = static_cast<double>(millicelsius) / 1000.0;
        if (!plausible_or_count(Quantity::temperature_celsius, celsius, implausible)) return std::nullopt;
        return static_cast<float>(celsius);
      }
      if (is_not_supported(code) && device.sensor == TemperatureSensor::edge) {
        device.sensor = TemperatureSensor::junction;  // e.g. MI-series cards report only the junction
        continue;
      }
      if (!gauge_ok(device, Quantity::temperature_celsius, "rsmi_dev_temp_metric_get", code)) return std::nullopt;
    }
  }

  // The current system clock in MHz; nullopt for this reading when the
  // library reports no current level.
  std::optional<float> read_clock(Device& device) const {
    rsmi::Frequencies frequencies{};
    const rsmi::Status code = api.gpu_clk_freq(device.index, rsmi::kClkTypeSys, &frequencies);
    if (!gauge_ok(device, Quantity::clock_mhz, "rsmi_dev_gpu_clk_freq_get", code)) return std::nullopt;
    if (frequencies.num_supported > rsmi::kMaxNumFrequencies || frequencies.current >= frequencies.num_supported) {
      return std::nullopt;
    }
    const double mhz = static_cast<double>(frequencies.frequency[frequencies.current]) / 1e6;
    if (!plausible_or_count(Quantity::clock_mhz, mhz, implausible)) return std::nullopt;
    return static_cast<float>(mhz);
  }

  std::optional<float> read_power(Device& device) const {
    std::uint64_t microwatts = 0;
    const rsmi::Status code = api.power_ave(device.index, 0, &microwatts);
    if (!gauge_ok(device, Quantity::power_watts, "rsmi_dev_power_ave_get", code)) return std::nullopt;
    const double watts = static_cast<double>(microwatts) / 1e6;
    if (!plausible_or_count(Quantity::power_watts, watts, implausible)) return std::nullopt;
    return static_cast<float>(watts);
  }

  std::optional<float> read_utilization(Device& device) const {
    std::uint32_t percent = 0;
    const rsmi::Status code = api.busy_percent(device.index, &percent);
    if (!gauge_ok(device, Quantity::utilization_percent, "rsmi_dev_busy_percent_get", code)) return std::nullopt;
    if (!plausible_or_count(Quantity::utilization_percent, percent, implausible)) return std::nullopt;
    return static_cast<float>(percent);
  }

  // Fan sensor 0's speed as a percent of its maximum (read at discovery).
  std::optional<float> read_fan_speed(Device& device) const {
    std::int64_t speed = 0;
    const rsmi::Status code = api.fan_speed(device.index, 0, &speed);
    if (!gauge_ok(device, Quantity::fan_speed_percent, "rsmi_dev_fan_speed_get", code)) return std::nullopt;
    const double percent = static_cast<double>(speed) / static_cast<double>(device.fan_speed_max) * 100.0;
    if (!plausible_or_count(Quantity::fan_speed_percent, percent, implausible)) return std::nullopt;
    return static_cast<float>(percent);
  }

  // The energy counter in joules: counter × resolution µJ.
  std::optional<double> read_energy(Device& device) const {
    std::uint64_t counter = 0;
    float resolution_uj = 0;
    std::uint64_t timestamp_ns = 0;
    const rsmi::Status code = api.energy_count(device.index, &counter, &resolution_uj, &timestamp_ns);
    if (!gauge_ok(device, Quantity::energy_joules, "rsmi_dev_energy_count_get", code)) return std::nullopt;
    if (!(resolution_uj > 0)) return std::nullopt;  // no scale: the counter means nothing
    const double joules = static_cast<double>(counter) * static_cast<double>(resolution_uj) / 1e6;
    if (!plausible_or_count(Quantity::energy_joules, joules, implausible)) return std::nullopt;
    return joules;
  }
};

RocmBackend::RocmBackend(std::string library_path) {
  LibraryChoice choice = choose_library(std::move(library_path), kLibraryEnvironmentVariable, kDefaultLibrary);
  library_path_ = std::move(choice.path);
  from_environment_ = choice.from_environment;
}

std::string RocmBackend::library_hint() const {
  if (from_environment_) {
    return fmt::format("the library was named by {}; point it at ROCm's {}", kLibraryEnvironmentVariable,
                       kDefaultLibrary);
  }
  if (library_path_ == kDefaultLibrary) {
    return fmt::format("install it (Debian package librocm-smi64-1) or set {} to its path",
                       kLibraryEnvironmentVariable);
  }
  return fmt::format("the path was given by the caller; give the path of ROCm's {}", kDefaultLibrary);
}

RocmBackend::~RocmBackend() {
  std::lock_guard lock(mutex_);
  try {
    shutdown_locked();
  } catch (const std::exception& e) {
    spdlog::warn("rocm backend: {}", e.what());
  }
}

namespace {

// Reads one device's static information; nullopt (and a reason) when its VRAM total cannot be read.
std::optional<Device> describe_device(const Api& api, std::uint32_t index, const std::optional<std::string>& driver,
                                      std::string& reason) {
  Device device;
  device.index = index;
  device.label = fmt::format("rocm:{}", index);

  std::uint64_t memory_total = 0;
  if (const rsmi::Status code = api.memory_total(index, rsmi::kMemTypeVram, &memory_total); code != rsmi::kSuccess) {
    reason = fmt::format("{}: rsmi_dev_memory_total_get: {}", device.label, status_text(api, code));
    return std::nullopt;
  }

  DeviceInfo& info = device.info;
  info.key.local_id = device.label;
  info.vendor = "amd";
  info.kind = DeviceKind::rocm;
  info.backend = "rocm";
  info.memory_total_bytes = memory_total;
  info.driver_version = driver;

  if (api.name != nullptr) {
    std::array<char, 256> buffer{};
    const rsmi::Status code = api.name(index, buffer.data(), buffer.size() - 1);
    if (code == rsmi::kSuccess || code == rsmi::kInsufficientSize) info.name = string_from_buffer(buffer);
  }
  if (info.name.empty()) info.name = fmt::format("AMD GPU {}", index);

  if (api.unique_id != nullptr) {
    std::uint64_t id = 0;
    if (api.unique_id(index, &id) == rsmi::kSuccess && id != 0) info.uuid = fmt::format("0x{:016x}", id);
  }
  if (api.pci_id != nullptr) {
    std::uint64_t bdfid = 0;
    if (api.pci_id(index, &bdfid) == rsmi::kSuccess) info.pci_bus_id = pci_bus_id_from_bdfid(bdfid);
  }
  if (api.power_cap != nullptr) {
    std::uint64_t microwatts = 0;
    if (api.power_cap(index, 0, &microwatts) == rsmi::kSuccess && microwatts != 0) {
      info.power_limit_watts = static_cast<double>(microwatts) / 1e6;
    }
  }

  // Each optional gauge is probed once: a function the library lacks, or one
  // answering NOT_SUPPORTED, is unavailable from the start. Other errors leave
  // it available; sample() reports them.
  FieldAvailability& fields = device.fields;
  if (api.busy_percent != nullptr) {
    std::uint32_t percent = 0;
    fields.set(Quantity::utilization_percent, !is_not_supported(api.busy_percent(index, &percent)));
  }
  if (api.power_ave != nullptr) {
    std::uint64_t microwatts = 0;
    fields.set(Quantity::power_watts, !is_not_supported(api.power_ave(index, 0, &microwatts)));
  }
  if (api.temp_metric != nullptr) {
    std::int64_t millicelsius = 0;
    if (!is_not_supported(api.temp_metric(index, rsmi::kTempTypeEdge, rsmi::kTempCurrent, &millicelsius))) {
      fields.set(Quantity::temperature_celsius);
    } else if (!is_not_supported(api.temp_metric(index, rsmi::kTempTypeJunction, rsmi::kTempCurrent, &millicelsius))) {
      fields.set(Quantity::temperature_celsius);
      device.sensor = TemperatureSensor::junction;
    }
  }
  if (api.gpu_clk_freq != nullptr) {
    rsmi::Frequencies frequencies{};
    const rsmi::Status code = api.gpu_clk_freq(index, rsmi::kClkTypeSys, &frequencies);
    fields.set(Quantity::clock_mhz, !is_not_supported(code));
    if (code == rsmi::kSuccess && frequencies.num_supported > 0 &&
        frequencies.num_supported <= rsmi::kMaxNumFrequencies) {
      const std::uint64_t max_hz =
          *std::max_element(frequencies.frequency, frequencies.frequency + frequencies.num_supported);
      if (max_hz > 0) info.max_clock_mhz = static_cast<double>(max_hz) / 1e6;
    }
  }
  // The fan's speed means something only over its maximum: without a maximum
  // (any error, or 0) the field is unavailable. Passively cooled cards
  // (Instinct) answer NOT_SUPPORTED.
  if (api.fan_speed != nullptr && api.fan_speed_max != nullptr) {
    std::uint64_t max_speed = 0;
    if (api.fan_speed_max(index, 0, &max_speed) == rsmi::kSuccess && max_speed > 0) {
      std::int64_t speed = 0;
      device.fan_speed_max = max_speed;
      fields.set(Quantity::fan_speed_percent, !is_not_supported(api.fan_speed(index, 0, &speed)));
    }
  }
  if (api.energy_count != nullptr) {
    std::uint64_t counter = 0;
    float resolution_uj = 0;
    std::uint64_t timestamp_ns = 0;
    fields.set(Quantity::energy_joules,
               !is_not_supported(api.energy_count(index, &counter, &resolution_uj, &timestamp_ns)));
  }
  return device;
}

}  // namespace

Discovery RocmBackend::discover(const std::string& host) {
  std::lock_guard lock(mutex_);
  if (shut_down_) throw Error("rocm backend: discover() after shutdown()");

  if (!state_) {
    VendorLibrary library = VendorLibrary::open(library_path_);
    if (!library.is_open()) {
      return Discovery{
          {},
          fmt::format("cannot load the ROCm SMI library {}: {}; {}", library_path_, library.dl_error(), library_hint()),
          true};
    }
    auto state = std::make_unique<State>(std::move(library), implausible_);
    Api& api = state->api;
    if (!bind_api(state->library, api)) {
      return Discovery{
          {}, fmt::format("the ROCm SMI library {}; {}", state->library.missing_message(""), library_hint()), true};
    }

    const bool driver_loaded = access("/dev/kfd", F_OK) == 0;
    const rsmi::Status init_code = driver_loaded ? api.init(0) : quietly([&] { return api.init(0); });
    if (init_code != rsmi::kSuccess) {
      std::string note = fmt::format("rsmi_init: {} (library {})", status_text(api, init_code), library_path_);
      if (!driver_loaded) note += "; no AMD GPU driver loaded: /dev/kfd is missing";
      return Discovery{{}, std::move(note), true};  // nothing owed: rsmi_shut_down only balances a successful rsmi_init
    }
    state->initialised = true;

    std::uint32_t count = 0;
    if (const rsmi::Status code = api.num_monitor_devices(&count); code != rsmi::kSuccess) {
      state->note = fmt::format("rsmi_num_monitor_devices: {}", status_text(api, code));
      state->unavailable = true;
    } else if (count == 0) {
      state->note = "ROCm SMI initialised but reports no AMD GPUs";
    } else {
      std::optional<std::string> driver;
      if (api.version_str != nullptr) {
        std::array<char, 256> buffer{};
        if (api.version_str(rsmi::kSwCompDriver, buffer.data(), buffer.size() - 1) == rsmi::kSuccess) {
          std::string text = string_from_buffer(buffer);
          if (!text.empty()) driver = std::move(text);
        }
      }
      std::vector<std::string> skipped;
      for (std::uint32_t index = 0; index < count; ++index) {
        std::string reason;
        if (std::optional<Device> device = describe_device(api, index, driver, reason)) {
          state->devices.push_back(std::move(*device));
        } else {
          skipped.push_back(std::move(reason));
        }
      }
      if (!skipped.empty()) state->note = fmt::format("skipped {}", fmt::join(skipped, "; "));
    }
    state_ = std::move(state);
  }

  Discovery discovery;
  discovery.note = state_->note;
  discovery.unavailable = state_->unavailable;
  discovery.devices.reserve(state_->devices.size());
  for (const Device& device : state_->devices) {
    DeviceInfo info = device.info;
    info.key.host = host;
    discovery.devices.push_back(std::move(info));
  }
  return discovery;
}

Sample RocmBackend::sample(const std::string& local_id) {
  std::lock_guard lock(mutex_);
  if (shut_down_) throw Error("rocm backend: sample() after shutdown()");
  if (!state_) throw UnknownDeviceError(local_id);
  State& state = *state_;
  Device& device = state.find(local_id);

  Sample sample;
  std::uint64_t used = 0;
  if (const rsmi::Status code = state.api.memory_usage(device.index, rsmi::kMemTypeVram, &used);
      code != rsmi::kSuccess) {
    state.fail(device, "rsmi_dev_memory_usage_get", code);
  }
  sample.memory_used_bytes = to_signed_bytes(used, device.label, "rsmi_dev_memory_usage_get");
  sample.memory_total_bytes =
      to_signed_bytes(device.info.memory_total_bytes, device.label, "rsmi_dev_memory_total_get");
  if (device.fields.has(Quantity::utilization_percent)) sample.utilization_percent = state.read_utilization(device);
  if (device.fields.has(Quantity::power_watts)) sample.power_watts = state.read_power(device);
  if (device.fields.has(Quantity::temperature_celsius)) sample.temperature_celsius = state.read_temperature(device);
  if (device.fields.has(Quantity::clock_mhz)) sample.clock_mhz = state.read_clock(device);
  if (device.fields.has(Quantity::fan_speed_percent)) sample.fan_speed_percent = state.read_fan_speed(device);
  if (device.fields.has(Quantity::energy_joules)) sample.energy_joules = state.read_energy(device);
  sample.timestamp = now_timestamp();
  return sample;
}

FieldAvailability RocmBackend::available_fields(const std::string& local_id) const {
  std::lock_guard lock(mutex_);
  if (!state_) throw UnknownDeviceError(local_id);
  return state_->find(local_id).fields;
}

void RocmBackend::shutdown() {
  std::lock_guard lock(mutex_);
  shutdown_locked();
}

void RocmBackend::shutdown_locked() {
  shut_down_ = true;
  if (!state_) return;
  std::unique_ptr<State> state = std::move(state_);
  rsmi::Status code = rsmi::kSuccess;
  std::string text;
  if (state->initialised) {
    state->initialised = false;
    code = state->api.shut_down();
    if (code != rsmi::kSuccess) text = status_text(state->api, code);
  }
  state.reset();  // dlclose: the library's functions must not be called again
  if (code != rsmi::kSuccess) throw Error(fmt::format("rocm backend: rsmi_shut_down: {}", text));
}

}  // namespace gpucluster
