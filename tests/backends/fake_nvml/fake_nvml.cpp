// A fake libnvidia-ml.so for tests: exports the NVML C functions the nvml backend
// uses, with devices and behaviour from a JSON scenario file.
//
// Environment (read by nvmlInit_v2 when NVML is not yet initialised):
//   FAKE_NVML_SCENARIO  path of the scenario; unset → no devices
//   FAKE_NVML_CALL_LOG  path of a JSON object {function name: calls}, rewritten after
//                       every call (counts start again when the path changes)
//
// Scenario:
// {
//   "driver_version": "550.54.15",                   // absent → NOT_SUPPORTED
//   "return_codes": {"nvmlInit_v2": 9},              // forced result of any function
//   "hang_ms": {"nvmlInit_v2": 2000},                // sleep in that function (any function,
//                                                    // nvmlInit_v2 and nvmlShutdown included)
//   "devices": [{
//     "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-…", "pci_bus_id": "00000000:65:00.0",
//     "memory_total": 85899345920, "memory_used": 1048576,
//     "utilization_gpu": 42, "utilization_memory": 7, "power_mw": 250500,
//     "temperature": 55, "sm_clock": 1755, "max_sm_clock": 1980,
//     "power_limit_mw": 700000, "temperature_slowdown": 90, "temperature_shutdown": 95,
//     "compute_capability": [9, 0], "cores": 16896,
//     "fan_speed": 45,                       // percent of the fan's maximum
//     "energy_mj": 123456789,                // millijoules since the driver loaded
//     "return_codes": {"nvmlDeviceGetPowerUsage": 3},  // this device only
//     "hang_ms": {"nvmlDeviceGetPowerUsage": 2000},
//     "hang_after_calls": 14,    // this device's hangs start after its first 14 calls (after discovery)
//     "lost_after_calls": 5,     // after 5 calls on this device every call answers GPU_IS_LOST …
//     "recover_after_calls": 2   // … for 2 calls, then it works again (absent: lost for good)
//   }]
// }
// A device field that is absent makes its function answer NOT_SUPPORTED.
// Built four ways: full; FAKE_NVML_MINIMAL (no optional functions, as an old
// driver); FAKE_NVML_BROKEN (no nvmlDeviceGetClockInfo, a required function);
// FAKE_NVML_LEGACY (the first versions' names only: nvmlInit, nvmlDeviceGetCount,
// nvmlDeviceGetHandleByIndex, and nvmlDeviceGetPciInfo_v2 without _v3, as a
// driver older than their newer versions; the call log and the scenario's
// return_codes and hang_ms use those names).

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#define FAKE_NVML_API extern "C" __attribute__((visibility("default")))
// The exported name of a function with a _v2: the first version's in the legacy build.
#ifdef FAKE_NVML_LEGACY
#define FAKE_NVML_V2(name) name
#else
#define FAKE_NVML_V2(name) name##_v2
#endif
#define FAKE_NVML_STRING_OF(name) #name
#define FAKE_NVML_STRING(name) FAKE_NVML_STRING_OF(name)
constexpr const char* kInitName = FAKE_NVML_STRING(FAKE_NVML_V2(nvmlInit));
constexpr const char* kCountName = FAKE_NVML_STRING(FAKE_NVML_V2(nvmlDeviceGetCount));
constexpr const char* kHandleName = FAKE_NVML_STRING(FAKE_NVML_V2(nvmlDeviceGetHandleByIndex));

struct nvmlDevice_st {
  unsigned int index;
};
using nvmlDevice_t = nvmlDevice_st*;
using nvmlReturn_t = int;

struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

struct nvmlUtilization_t {
  unsigned int gpu;
  unsigned int memory;
};

struct nvmlPciInfo_t {
  char busIdLegacy[16];
  unsigned int domain;
  unsigned int bus;
  unsigned int device;
  unsigned int pciDeviceId;
  unsigned int pciSubSystemId;
  char busId[32];
};

namespace {

using json = nlohmann::json;

constexpr nvmlReturn_t kSuccess = 0;
constexpr nvmlReturn_t kUninitialized = 1;
constexpr nvmlReturn_t kInvalidArgument = 2;
constexpr nvmlReturn_t kNotSupported = 3;
constexpr nvmlReturn_t kInsufficientSize = 7;
constexpr nvmlReturn_t kGpuIsLost = 15;
constexpr nvmlReturn_t kUnknown = 999;

struct FakeDevice {
  nvmlDevice_st handle{};
  std::optional<std::string> name, uuid, pci_bus_id;
  std::optional<unsigned long long> memory_total, memory_used;
  std::optional<unsigned int> utilization_gpu, utilization_memory, power_mw, temperature, sm_clock, max_sm_clock,
      power_limit_mw, temperature_slowdown, temperature_shutdown, cores, fan_speed;
  std::optional<unsigned long long> energy_mj;
  std::optional<std::pair<int, int>> compute_capability;
  std::map<std::string, nvmlReturn_t> return_codes;
  std::map<std::string, unsigned int> hang_ms;
  std::optional<unsigned long long> lost_after_calls, recover_after_calls, hang_after_calls;
  unsigned long long calls = 0;
};

struct Fake {
  std::mutex mutex;
  int init_count = 0;  // nvmlInit_v2 nests like the real one
  std::vector<std::unique_ptr<FakeDevice>> devices;
  std::optional<std::string> driver_version;
  std::map<std::string, nvmlReturn_t> return_codes;
  std::map<std::string, unsigned int> hang_ms;
  std::string log_path;
  std::map<std::string, unsigned long long> calls;
};

// Never destroyed: tests leave a thread hung inside the fake on purpose (a
// driver call that does not return), and the process may exit meanwhile; the
// state must not be torn down under it by static destruction.
Fake& fake() {
  static auto* instance = new Fake;
  return *instance;
}

template <typename T>
std::optional<T> optional_member(const json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  return it->get<T>();
}

template <typename Value>
std::map<std::string, Value> map_member(const json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end()) return {};
  return it->get<std::map<std::string, Value>>();
}

// Called with the lock held.
void write_log(const Fake& state) {
  if (state.log_path.empty()) return;
  std::ofstream out(state.log_path, std::ios::trunc);
  out << json(state.calls).dump() << '\n';
}

// Called with the lock held.
void count(Fake& state, const char* function) {
  ++state.calls[function];
  write_log(state);
}

void load_scenario(Fake& state) {
  state.devices.clear();
  state.driver_version.reset();
  state.return_codes.clear();
  state.hang_ms.clear();
  const char* path = std::getenv("FAKE_NVML_SCENARIO");
  if (path == nullptr || *path == '\0') return;
  std::ifstream in(path);
  if (!in) throw std::runtime_error(std::string("cannot open scenario ") + path);
  const json scenario = json::parse(in);
  state.driver_version = optional_member<std::string>(scenario, "driver_version");
  state.return_codes = map_member<nvmlReturn_t>(scenario, "return_codes");
  state.hang_ms = map_member<unsigned int>(scenario, "hang_ms");
  const auto devices = scenario.find("devices");
  if (devices == scenario.end()) return;
  unsigned int index = 0;
  for (const json& entry : *devices) {
    auto device = std::make_unique<FakeDevice>();
    device->handle.index = index++;
    device->name = optional_member<std::string>(entry, "name");
    device->uuid = optional_member<std::string>(entry, "uuid");
    device->pci_bus_id = optional_member<std::string>(entry, "pci_bus_id");
    device->memory_total = optional_member<unsigned long long>(entry, "memory_total");
    device->memory_used = optional_member<unsigned long long>(entry, "memory_used");
    device->utilization_gpu = optional_member<unsigned int>(entry, "utilization_gpu");
    device->utilization_memory = optional_member<unsigned int>(entry, "utilization_memory");
    device->power_mw = optional_member<unsigned int>(entry, "power_mw");
    device->temperature = optional_member<unsigned int>(entry, "temperature");
    device->sm_clock = optional_member<unsigned int>(entry, "sm_clock");
    device->max_sm_clock = optional_member<unsigned int>(entry, "max_sm_clock");
    device->power_limit_mw = optional_member<unsigned int>(entry, "power_limit_mw");
    device->temperature_slowdown = optional_member<unsigned int>(entry, "temperature_slowdown");
    device->temperature_shutdown = optional_member<unsigned int>(entry, "temperature_shutdown");
    device->cores = optional_member<unsigned int>(entry, "cores");
    device->fan_speed = optional_member<unsigned int>(entry, "fan_speed");
    device->energy_mj = optional_member<unsigned long long>(entry, "energy_mj");
    device->compute_capability = optional_member<std::pair<int, int>>(entry, "compute_capability");
    device->return_codes = map_member<nvmlReturn_t>(entry, "return_codes");
    device->hang_ms = map_member<unsigned int>(entry, "hang_ms");
    device->lost_after_calls = optional_member<unsigned long long>(entry, "lost_after_calls");
    device->recover_after_calls = optional_member<unsigned long long>(entry, "recover_after_calls");
    device->hang_after_calls = optional_member<unsigned long long>(entry, "hang_after_calls");
    state.devices.push_back(std::move(device));
  }
}

FakeDevice* find_device(Fake& state, nvmlDevice_t handle) {
  for (const auto& device : state.devices) {
    if (&device->handle == handle) return device.get();
  }
  return nullptr;
}

std::optional<nvmlReturn_t> forced(const std::map<std::string, nvmlReturn_t>& codes, const char* function) {
  const auto it = codes.find(function);
  if (it == codes.end()) return std::nullopt;
  return it->second;
}

unsigned int hang_for(const std::map<std::string, unsigned int>& hangs, const char* function) {
  const auto it = hangs.find(function);
  return it == hangs.end() ? 0 : it->second;
}

void sleep_ms(unsigned int ms) {
  if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

bool is_lost(const FakeDevice& device) {
  if (!device.lost_after_calls || device.calls <= *device.lost_after_calls) return false;
  return !device.recover_after_calls || device.calls <= *device.lost_after_calls + *device.recover_after_calls;
}

// A call that takes no device: counted, forced codes and hangs applied, then body().
template <typename Body>
nvmlReturn_t system_call(const char* function, Body body) {
  Fake& state = fake();
  unsigned int hang = 0;
  nvmlReturn_t result = kSuccess;
  {
    std::lock_guard lock(state.mutex);
    count(state, function);
    hang = hang_for(state.hang_ms, function);
    if (state.init_count == 0) {
      result = kUninitialized;
    } else if (const auto code = forced(state.return_codes, function)) {
      result = *code;
    } else {
      result = body(state);
    }
  }
  sleep_ms(hang);
  return result;
}

// A call on one device: also that device's forced codes, hangs and lost state.
template <typename Body>
nvmlReturn_t device_call(const char* function, nvmlDevice_t handle, Body body) {
  Fake& state = fake();
  unsigned int hang = 0;
  nvmlReturn_t result = kSuccess;
  {
    std::lock_guard lock(state.mutex);
    count(state, function);
    hang = hang_for(state.hang_ms, function);
    FakeDevice* device = find_device(state, handle);
    if (state.init_count == 0) {
      result = kUninitialized;
    } else if (device == nullptr) {
      result = kInvalidArgument;
    } else {
      if (const unsigned int own = hang_for(device->hang_ms, function); own > 0) hang = own;
      ++device->calls;
      if (device->hang_after_calls && device->calls <= *device->hang_after_calls) hang = 0;
      if (is_lost(*device)) {
        result = kGpuIsLost;
      } else if (const auto code = forced(device->return_codes, function)) {
        result = *code;
      } else if (const auto global = forced(state.return_codes, function)) {
        result = *global;
      } else {
        result = body(*device);
      }
    }
  }
  sleep_ms(hang);
  return result;
}

nvmlReturn_t copy_string(const std::optional<std::string>& value, char* buffer, unsigned int length) {
  if (!value) return kNotSupported;
  if (buffer == nullptr) return kInvalidArgument;
  if (value->size() + 1 > length) return kInsufficientSize;
  std::memcpy(buffer, value->c_str(), value->size() + 1);
  return kSuccess;
}

template <typename T>
nvmlReturn_t copy_value(const std::optional<T>& value, T* out) {
  if (!value) return kNotSupported;
  if (out == nullptr) return kInvalidArgument;
  *out = *value;
  return kSuccess;
}

void copy_bounded(char* target, std::size_t size, const std::string& text) {
  const std::size_t length = text.size() < size - 1 ? text.size() : size - 1;
  std::memcpy(target, text.data(), length);
  target[length] = '\0';
}

[[maybe_unused]] nvmlReturn_t fill_pci(const FakeDevice& device, nvmlPciInfo_t* pci) {
  if (!device.pci_bus_id) return kNotSupported;
  if (pci == nullptr) return kInvalidArgument;
  *pci = nvmlPciInfo_t{};
  unsigned int domain = 0, bus = 0, slot = 0, function = 0;
  if (std::sscanf(device.pci_bus_id->c_str(), "%x:%x:%x.%x", &domain, &bus, &slot, &function) != 4) return kUnknown;
  pci->domain = domain;
  pci->bus = bus;
  pci->device = slot;
  pci->pciDeviceId = 0x233010de;  // device 0x2330, vendor NVIDIA
  copy_bounded(pci->busId, sizeof(pci->busId), *device.pci_bus_id);
  char legacy[32];
  std::snprintf(legacy, sizeof(legacy), "%04x:%02x:%02x.%x", domain & 0xffffu, bus & 0xffu, slot & 0x1fu,
                function & 7u);
  copy_bounded(pci->busIdLegacy, sizeof(pci->busIdLegacy), legacy);
  return kSuccess;
}

}  // namespace

// Initialises (loading the scenario on the first call), then hangs for the
// scenario's hang_ms["nvmlInit_v2"] before returning, as a driver that is
// slow to answer (or never does) would; the lock is not held while it hangs.
FAKE_NVML_API nvmlReturn_t FAKE_NVML_V2(nvmlInit)() {
  Fake& state = fake();
  unsigned int hang = 0;
  nvmlReturn_t result = kSuccess;
  {
    std::lock_guard lock(state.mutex);
    const char* log = std::getenv("FAKE_NVML_CALL_LOG");
    const std::string log_path = log != nullptr ? log : "";
    if (log_path != state.log_path) {
      state.log_path = log_path;
      state.calls.clear();
    }
    count(state, kInitName);
    if (state.init_count == 0) {
      try {
        load_scenario(state);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "fake_nvml: bad scenario: %s\n", e.what());
        state.devices.clear();
        return kUnknown;
      }
    }
    hang = hang_for(state.hang_ms, kInitName);
    if (const auto code = forced(state.return_codes, kInitName)) {
      result = *code;
    } else {
      ++state.init_count;
    }
  }
  sleep_ms(hang);
  return result;
}

FAKE_NVML_API nvmlReturn_t nvmlShutdown() {
  Fake& state = fake();
  unsigned int hang = 0;
  nvmlReturn_t result = kSuccess;
  {
    std::lock_guard lock(state.mutex);
    count(state, "nvmlShutdown");
    hang = hang_for(state.hang_ms, "nvmlShutdown");
    if (state.init_count == 0) {
      result = kUninitialized;
    } else if (const auto code = forced(state.return_codes, "nvmlShutdown")) {
      result = *code;
    } else {
      --state.init_count;
    }
  }
  sleep_ms(hang);
  return result;
}

FAKE_NVML_API const char* nvmlErrorString(nvmlReturn_t result) {
  switch (result) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 6: return "Not Found";
    case 7: return "Insufficient Size";
    case 9: return "Driver Not Loaded";
    case 10: return "Timeout";
    case 15: return "GPU is lost";
    case 999: return "Unknown Error";
    default: return "Unknown Error";
  }
}

FAKE_NVML_API nvmlReturn_t FAKE_NVML_V2(nvmlDeviceGetCount)(unsigned int* device_count) {
  return system_call(kCountName, [&](Fake& state) {
    if (device_count == nullptr) return kInvalidArgument;
    *device_count = static_cast<unsigned int>(state.devices.size());
    return kSuccess;
  });
}

FAKE_NVML_API nvmlReturn_t FAKE_NVML_V2(nvmlDeviceGetHandleByIndex)(unsigned int index, nvmlDevice_t* device) {
  return system_call(kHandleName, [&](Fake& state) {
    if (device == nullptr || index >= state.devices.size()) return kInvalidArgument;
    FakeDevice& found = *state.devices[index];
    if (const auto code = forced(found.return_codes, kHandleName)) return *code;
    *device = &found.handle;
    return kSuccess;
  });
}

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char* name, unsigned int length) {
  return device_call("nvmlDeviceGetName", device,
                     [&](FakeDevice& found) { return copy_string(found.name, name, length); });
}

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char* uuid, unsigned int length) {
  return device_call("nvmlDeviceGetUUID", device,
                     [&](FakeDevice& found) { return copy_string(found.uuid, uuid, length); });
}

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t* memory) {
  return device_call("nvmlDeviceGetMemoryInfo", device, [&](FakeDevice& found) {
    if (!found.memory_total) return kNotSupported;
    if (memory == nullptr) return kInvalidArgument;
    memory->total = *found.memory_total;
    memory->used = found.memory_used.value_or(0);
    memory->free = memory->total >= memory->used ? memory->total - memory->used : 0;
    return kSuccess;
  });
}

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t* utilization) {
  return device_call("nvmlDeviceGetUtilizationRates", device, [&](FakeDevice& found) {
    if (!found.utilization_gpu) return kNotSupported;
    if (utilization == nullptr) return kInvalidArgument;
    utilization->gpu = *found.utilization_gpu;
    utilization->memory = found.utilization_memory.value_or(0);
    return kSuccess;
  });
}

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int* power) {
  return device_call("nvmlDeviceGetPowerUsage", device,
                     [&](FakeDevice& found) { return copy_value(found.power_mw, power); });
}

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int* temperature) {
  return device_call("nvmlDeviceGetTemperature", device, [&](FakeDevice& found) {
    if (sensor != 0) return kInvalidArgument;  // NVML_TEMPERATURE_GPU is the only sensor
    return copy_value(found.temperature, temperature);
  });
}

#ifndef FAKE_NVML_BROKEN
FAKE_NVML_API nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, int type, unsigned int* clock) {
  return device_call("nvmlDeviceGetClockInfo", device, [&](FakeDevice& found) {
    if (type != 1) return kNotSupported;  // only NVML_CLOCK_SM is faked
    return copy_value(found.sm_clock, clock);
  });
}
#endif

#ifndef FAKE_NVML_MINIMAL
#ifndef FAKE_NVML_LEGACY
FAKE_NVML_API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t* pci) {
  return device_call("nvmlDeviceGetPciInfo_v3", device, [&](FakeDevice& found) { return fill_pci(found, pci); });
}
#endif

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t* pci) {
  return device_call("nvmlDeviceGetPciInfo_v2", device, [&](FakeDevice& found) { return fill_pci(found, pci); });
}

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, int type, unsigned int* clock) {
  return device_call("nvmlDeviceGetMaxClockInfo", device, [&](FakeDevice& found) {
    if (type != 1) return kNotSupported;
    return copy_value(found.max_sm_clock, clock);
  });
}

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int* limit) {
  return device_call("nvmlDeviceGetPowerManagementLimit", device,
                     [&](FakeDevice& found) { return copy_value(found.power_limit_mw, limit); });
}

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t device, int threshold,
                                                             unsigned int* temperature) {
  return device_call("nvmlDeviceGetTemperatureThreshold", device, [&](FakeDevice& found) {
    if (threshold == 0) return copy_value(found.temperature_shutdown, temperature);
    if (threshold == 1) return copy_value(found.temperature_slowdown, temperature);
    return kNotSupported;
  });
}

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int* major, int* minor) {
  return device_call("nvmlDeviceGetCudaComputeCapability", device, [&](FakeDevice& found) {
    if (!found.compute_capability) return kNotSupported;
    if (major == nullptr || minor == nullptr) return kInvalidArgument;
    *major = found.compute_capability->first;
    *minor = found.compute_capability->second;
    return kSuccess;
  });
}

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetNumGpuCores(nvmlDevice_t device, unsigned int* cores) {
  return device_call("nvmlDeviceGetNumGpuCores", device,
                     [&](FakeDevice& found) { return copy_value(found.cores, cores); });
}

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int* speed) {
  return device_call("nvmlDeviceGetFanSpeed", device,
                     [&](FakeDevice& found) { return copy_value(found.fan_speed, speed); });
}

FAKE_NVML_API nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long* energy) {
  return device_call("nvmlDeviceGetTotalEnergyConsumption", device,
                     [&](FakeDevice& found) { return copy_value(found.energy_mj, energy); });
}

FAKE_NVML_API nvmlReturn_t nvmlSystemGetDriverVersion(char* version, unsigned int length) {
  return system_call("nvmlSystemGetDriverVersion",
                     [&](Fake& state) { return copy_string(state.driver_version, version, length); });
}
#endif
