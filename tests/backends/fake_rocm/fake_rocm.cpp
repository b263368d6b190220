// A fake librocm_smi64.so for tests: exports the ROCm SMI C functions the rocm
// backend uses, in the vendor's units (µW, m°C, Hz, bytes), plus two control
// functions a test reaches by dlopen-ing the same path (the loader then shares
// one instance with the backend):
//   fake_rocm_set(key, value)  sets a knob (below); fake_rocm_reset() restores the defaults
//   fake_rocm_get(key)         reads a knob or a counter ("init_calls", "shut_down_calls")
// Knobs: "devices" (default 2); "<function>_status" forces that function's
// rsmi_status_t for every device, e.g. "rsmi_init_status" = 8 (INIT_ERROR),
// "rsmi_num_monitor_devices_status"; "rsmi_init_hang_ms" makes rsmi_init sleep first;
// "rsmi_dev_temp_metric_get_edge_status" / "_junction_status" per sensor;
// "busy_percent", "power_uw", "temp_edge_mc", "temp_junction_mc", "memory_used",
// "clock_current" (index into 500/1200/2100 MHz; ≥ 3 → no current level),
// "fan_speed" (default 102), "fan_speed_max" (default 255), "energy_count" (default
// 1'000'000) and "energy_resolution_nj" (the counter's resolution in nJ, default 15'259).
// Device i: VRAM (8 + i) GiB, PCI BDFID domain 1 bus 0xC3 + i device 0x1F function 7,
// name "AMD Instinct MI210", unique id 0x1234abcd5678ef90 + i, power cap 300 W.
// Built three ways: full; FAKE_ROCM_MINIMAL (only the required functions);
// FAKE_ROCM_BROKEN (lacks rsmi_dev_memory_usage_get, a required function).

#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#define FAKE_ROCM_API extern "C" __attribute__((visibility("default")))

namespace {

using Status = std::uint32_t;
constexpr Status kSuccess = 0;
constexpr Status kInvalidArgs = 1;
constexpr Status kInitError = 8;
constexpr Status kInsufficientSize = 11;
constexpr std::uint64_t kGiB = 1ull << 30;

struct Frequencies {
  std::uint32_t num_supported;
  std::uint32_t current;
  std::uint64_t frequency[32];
};

std::mutex& mutex() {
  static std::mutex instance;
  return instance;
}

std::map<std::string, std::int64_t>& knobs() {
  static std::map<std::string, std::int64_t> instance;
  return instance;
}

std::int64_t knob(const std::string& key, std::int64_t fallback) {
  const auto it = knobs().find(key);
  return it == knobs().end() ? fallback : it->second;
}

void count(const char* counter) {
  ++knobs()[counter];
}

bool initialised() {
  return knob("refcount", 0) > 0;
}

// The forced status of `function`, or SUCCESS; INIT_ERROR before rsmi_init, INVALID_ARGS for a bad index.
Status check(const std::string& function, std::uint32_t index) {
  if (!initialised()) return kInitError;
  if (static_cast<std::int64_t>(index) >= knob("devices", 2)) return kInvalidArgs;
  return static_cast<Status>(knob(function + "_status", kSuccess));
}

}  // namespace

FAKE_ROCM_API void fake_rocm_set(const char* key, std::int64_t value) {
  std::lock_guard lock(mutex());
  knobs()[key] = value;
}

FAKE_ROCM_API std::int64_t fake_rocm_get(const char* key) {
  std::lock_guard lock(mutex());
  return knob(key, 0);
}

FAKE_ROCM_API void fake_rocm_reset() {
  std::lock_guard lock(mutex());
  knobs().clear();
}

FAKE_ROCM_API Status rsmi_init(std::uint64_t) {
  std::int64_t hang_ms = 0;
  Status result = kSuccess;
  {
    std::lock_guard lock(mutex());
    count("init_calls");
    hang_ms = knob("rsmi_init_hang_ms", 0);
    result = static_cast<Status>(knob("rsmi_init_status", kSuccess));
    if (result == kSuccess) count("refcount");
  }
  // A driver that is slow to answer (or never does); the knobs stay readable meanwhile.
  if (hang_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(hang_ms));
  return result;
}

FAKE_ROCM_API Status rsmi_shut_down() {
  std::lock_guard lock(mutex());
  count("shut_down_calls");
  if (!initialised()) return kInitError;
  --knobs()["refcount"];
  return kSuccess;
}

FAKE_ROCM_API Status rsmi_num_monitor_devices(std::uint32_t* num_devices) {
  std::lock_guard lock(mutex());
  if (!initialised()) return kInitError;
  if (const auto forced = static_cast<Status>(knob("rsmi_num_monitor_devices_status", kSuccess)); forced != kSuccess) {
    return forced;
  }
  if (num_devices == nullptr) return kInvalidArgs;
  *num_devices = static_cast<std::uint32_t>(knob("devices", 2));
  return kSuccess;
}

FAKE_ROCM_API Status rsmi_dev_memory_total_get(std::uint32_t index, std::uint32_t, std::uint64_t* total) {
  std::lock_guard lock(mutex());
  if (const Status status = check("rsmi_dev_memory_total_get", index); status != kSuccess) return status;
  *total = (8 + index) * kGiB;
  return kSuccess;
}

#ifndef FAKE_ROCM_BROKEN
FAKE_ROCM_API Status rsmi_dev_memory_usage_get(std::uint32_t index, std::uint32_t, std::uint64_t* used) {
  std::lock_guard lock(mutex());
  if (const Status status = check("rsmi_dev_memory_usage_get", index); status != kSuccess) return status;
  *used = static_cast<std::uint64_t>(knob("memory_used", static_cast<std::int64_t>(kGiB)));
  return kSuccess;
}

#endif  // FAKE_ROCM_BROKEN

FAKE_ROCM_API Status rsmi_status_string(Status status, const char** text) {
  if (text == nullptr) return kInvalidArgs;
  switch (status) {
    case 0: *text = "RSMI_STATUS_SUCCESS: The function has been executed successfully."; break;
    case 2: *text = "RSMI_STATUS_NOT_SUPPORTED: This function is not supported in the current environment."; break;
    case 3: *text = "RSMI_STATUS_FILE_ERROR: There was an error in finding or opening a file or directory."; break;
    case 8: *text = "An error occurred during initialization"; break;
    case 9: *text = "The called function has not been implemented in this system for this device type"; break;
    case 16: *text = "A resource or mutex could not be acquired because it is already being used"; break;
    default: *text = "An unknown error occurred"; break;
  }
  return kSuccess;
}

#if !defined(FAKE_ROCM_MINIMAL) && !defined(FAKE_ROCM_BROKEN)

FAKE_ROCM_API Status rsmi_dev_busy_percent_get(std::uint32_t index, std::uint32_t* percent) {
  std::lock_guard lock(mutex());
  if (const Status status = check("rsmi_dev_busy_percent_get", index); status != kSuccess) return status;
  *percent = static_cast<std::uint32_t>(knob("busy_percent", 37));
  return kSuccess;
}

FAKE_ROCM_API Status rsmi_dev_power_ave_get(std::uint32_t index, std::uint32_t, std::uint64_t* power) {
  std::lock_guard lock(mutex());
  if (const Status status = check("rsmi_dev_power_ave_get", index); status != kSuccess) return status;
  *power = static_cast<std::uint64_t>(knob("power_uw", 123'456'789));
  return kSuccess;
}

FAKE_ROCM_API Status rsmi_dev_power_cap_get(std::uint32_t index, std::uint32_t, std::uint64_t* cap) {
  std::lock_guard lock(mutex());
  if (const Status status = check("rsmi_dev_power_cap_get", index); status != kSuccess) return status;
  *cap = 300'000'000;
  return kSuccess;
}

FAKE_ROCM_API Status rsmi_dev_temp_metric_get(std::uint32_t index, std::uint32_t sensor, std::uint32_t metric,
                                              std::int64_t* temperature) {
  std::lock_guard lock(mutex());
  if (metric != 0 || sensor > 1) return kInvalidArgs;
  const std::string function = sensor == 0 ? "rsmi_dev_temp_metric_get_edge" : "rsmi_dev_temp_metric_get_junction";
  if (const Status status = check(function, index); status != kSuccess) return status;
  *temperature = sensor == 0 ? knob("temp_edge_mc", 45'500) : knob("temp_junction_mc", 61'000);
  return kSuccess;
}

FAKE_ROCM_API Status rsmi_dev_gpu_clk_freq_get(std::uint32_t index, std::uint32_t clk_type, Frequencies* f) {
  std::lock_guard lock(mutex());
  if (const Status status = check("rsmi_dev_gpu_clk_freq_get", index); status != kSuccess) return status;
  if (clk_type != 0 || f == nullptr) return kInvalidArgs;
  *f = Frequencies{};
  f->num_supported = 3;
  f->frequency[0] = 500'000'000;
  f->frequency[1] = 1'200'000'000;
  f->frequency[2] = 2'100'000'000;
  f->current = static_cast<std::uint32_t>(knob("clock_current", 1));
  return kSuccess;
}

FAKE_ROCM_API Status rsmi_dev_name_get(std::uint32_t index, char* name, std::size_t len) {
  std::lock_guard lock(mutex());
  if (const Status status = check("rsmi_dev_name_get", index); status != kSuccess) return status;
  static constexpr char kName[] = "AMD Instinct MI210";
  if (len == 0) return kInsufficientSize;
  std::strncpy(name, kName, len - 1);
  name[len - 1] = '\0';
  return len > sizeof(kName) - 1 ? kSuccess : kInsufficientSize;
}

FAKE_ROCM_API Status rsmi_dev_unique_id_get(std::uint32_t index, std::uint64_t* id) {
  std::lock_guard lock(mutex());
  if (const Status status = check("rsmi_dev_unique_id_get", index); status != kSuccess) return status;
  *id = 0x1234abcd5678ef90ull + index;
  return kSuccess;
}

FAKE_ROCM_API Status rsmi_dev_pci_id_get(std::uint32_t index, std::uint64_t* bdfid) {
  std::lock_guard lock(mutex());
  if (const Status status = check("rsmi_dev_pci_id_get", index); status != kSuccess) return status;
  *bdfid = (1ull << 32) | ((0xC3ull + index) << 8) | (0x1Full << 3) | 0x7ull;
  return kSuccess;
}

FAKE_ROCM_API Status rsmi_version_str_get(std::uint32_t component, char* text, std::uint32_t len) {
  std::lock_guard lock(mutex());
  if (component != 0 || text == nullptr || len == 0) return kInvalidArgs;
  std::strncpy(text, "6.1.0-fake", len - 1);
  text[len - 1] = '\0';
  return kSuccess;
}

FAKE_ROCM_API Status rsmi_dev_fan_speed_get(std::uint32_t index, std::uint32_t sensor, std::int64_t* speed) {
  std::lock_guard lock(mutex());
  if (const Status status = check("rsmi_dev_fan_speed_get", index); status != kSuccess) return status;
  if (sensor != 0 || speed == nullptr) return kInvalidArgs;
  *speed = knob("fan_speed", 102);
  return kSuccess;
}

FAKE_ROCM_API Status rsmi_dev_fan_speed_max_get(std::uint32_t index, std::uint32_t sensor, std::uint64_t* max_speed) {
  std::lock_guard lock(mutex());
  if (const Status status = check("rsmi_dev_fan_speed_max_get", index); status != kSuccess) return status;
  if (sensor != 0 || max_speed == nullptr) return kInvalidArgs;
  *max_speed = static_cast<std::uint64_t>(knob("fan_speed_max", 255));
  return kSuccess;
}

FAKE_ROCM_API Status rsmi_dev_energy_count_get(std::uint32_t index, std::uint64_t* counter, float* resolution,
                                               std::uint64_t* timestamp) {
  std::lock_guard lock(mutex());
  if (const Status status = check("rsmi_dev_energy_count_get", index); status != kSuccess) return status;
  if (counter == nullptr || resolution == nullptr || timestamp == nullptr) return kInvalidArgs;
  *counter = static_cast<std::uint64_t>(knob("energy_count", 1'000'000));
  *resolution = static_cast<float>(static_cast<double>(knob("energy_resolution_nj", 15'259)) / 1000.0);
  *timestamp = 1'700'000'000'000'000'000ull;
  return kSuccess;
}

#endif  // !FAKE_ROCM_MINIMAL && !FAKE_ROCM_BROKEN
