#include "gpucluster/backends/host.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/fields.hpp"
#include "gpucluster/model/validation.hpp"
#include "model/text.hpp"

namespace gpucluster {

namespace fs = std::filesystem;

namespace {

// A sysfs attribute is one short value; anything longer is not what we expect.
constexpr std::size_t kMaxSysfsBytes = 4096;
// /proc/cpuinfo on a machine with hundreds of CPUs runs to a few MiB.
constexpr std::size_t kMaxProcBytes = std::size_t{16} << 20;
// A reading outside the field table's range comes from a broken sensor or file: it is
// unavailable (plausible_or_count, backend.hpp), rather than a value that would get the
// whole sample (memory too) rejected.

using text::parse_number;
using text::trim;
constexpr auto read_text = text::read_text_file;

std::optional<std::uint64_t> read_u64(const fs::path& path) {
  const auto text = read_text(path, kMaxSysfsBytes);
  if (!text) return std::nullopt;
  return parse_number<std::uint64_t>(*text);
}

std::optional<std::string> read_line(const fs::path& path) {
  const auto text = read_text(path, kMaxSysfsBytes);
  if (!text) return std::nullopt;
  return std::string(trim(*text));
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const auto end = text.find('\n');
    lines.push_back(text.substr(0, end));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return lines;
}

// Values of every "key : value" line whose key matches (cpuinfo, meminfo).
std::vector<std::string_view> values_for_key(std::string_view text, std::string_view key) {
  std::vector<std::string_view> values;
  for (const std::string_view line : split_lines(text)) {
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || trim(line.substr(0, colon)) != key) continue;
    values.push_back(trim(line.substr(colon + 1)));
  }
  return values;
}

// Entries of `dir` named prefix + digits (cpu12, thermal_zone3, hwmon0), in numeric order.
std::vector<fs::path> numbered_entries(const fs::path& dir, std::string_view prefix) {
  std::vector<std::pair<std::uint64_t, fs::path>> found;
  std::error_code error;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with(prefix)) continue;
    const std::string_view suffix = std::string_view(name).substr(prefix.size());
    const bool all_digits = std::all_of(suffix.begin(), suffix.end(),
                                        [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; });
    if (!all_digits) continue;  // cpufreq, cpuidle and the like share the prefix
    const auto index = parse_number<std::uint64_t>(suffix);
    if (!index) continue;
    found.emplace_back(*index, it->path());
  }
  std::sort(found.begin(), found.end());
  std::vector<fs::path> paths;
  paths.reserve(found.size());
  for (auto& entry : found) paths.push_back(std::move(entry.second));
  return paths;
}

// A meminfo value in bytes ("MemTotal:  16318480 kB").
std::optional<std::uint64_t> meminfo_bytes(std::string_view text, std::string_view key) {
  const auto values = values_for_key(text, key);
  if (values.empty()) return std::nullopt;
  std::string_view value = values.front();
  std::uint64_t scale = 1;
  if (value.ends_with("kB")) {
    value.remove_suffix(2);
    scale = 1024;
  }
  const auto number = parse_number<std::uint64_t>(value);
  if (!number || *number > std::numeric_limits<std::uint64_t>::max() / scale) return std::nullopt;
  return *number * scale;
}

struct MemoryReading {
  std::uint64_t total_bytes = 0;
  std::uint64_t available_bytes = 0;
};

std::optional<MemoryReading> read_memory(const fs::path& proc_root) {
  const auto text = read_text(proc_root / "meminfo", kMaxProcBytes);
  if (!text) return std::nullopt;
  const auto total = meminfo_bytes(*text, "MemTotal");
  if (!total || *total == 0 || *total > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return std::nullopt;
  }
  auto available = meminfo_bytes(*text, "MemAvailable");
  if (!available) {
    // Kernels before 3.14 lack MemAvailable; free + buffers + page cache is the usual estimate.
    const auto free = meminfo_bytes(*text, "MemFree");
    const auto buffers = meminfo_bytes(*text, "Buffers");
    const auto cached = meminfo_bytes(*text, "Cached");
    if (!free || !buffers || !cached) return std::nullopt;
    available = std::min(*total, *free + *buffers + *cached);
  }
  if (*available > *total) return std::nullopt;
  return MemoryReading{*total, *available};
}

std::string map_vendor(std::string_view cpuinfo) {
  const auto vendor_ids = values_for_key(cpuinfo, "vendor_id");
  if (!vendor_ids.empty()) {
    const std::string_view id = vendor_ids.front();
    if (id == "GenuineIntel") return "intel";
    if (id == "AuthenticAMD") return "amd";
    if (id == "HygonGenuine") return "hygon";
    if (id == "CentaurHauls") return "centaur";
    std::string lower(id);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return lower;
  }
  // Arm kernels name the implementer by its JEDEC code instead.
  const auto implementers = values_for_key(cpuinfo, "CPU implementer");
  if (!implementers.empty()) {
    const std::string_view code = implementers.front();
    if (code == "0x41") return "arm";
    if (code == "0x61") return "apple";
    if (code == "0x51") return "qualcomm";
    if (code == "0x48") return "hisilicon";
    if (code == "0x4e") return "nvidia";
    if (code == "0xc0") return "ampere";
  }
  return "unknown";
}

std::string model_name(std::string_view cpuinfo) {
  for (const std::string_view key : {"model name", "Model", "Hardware", "cpu model"}) {
    const auto values = values_for_key(cpuinfo, key);
    if (!values.empty() && !values.front().empty()) return std::string(values.front());
  }
  return "CPU";
}

std::optional<float> plausible_celsius(std::optional<std::int64_t> millicelsius, ImplausibleReadings& dropped) {
  if (!millicelsius) return std::nullopt;
  const double celsius = static_cast<double>(*millicelsius) / 1000.0;
  if (!plausible_or_count(Quantity::temperature_celsius, celsius, dropped)) return std::nullopt;
  return static_cast<float>(celsius);
}

std::optional<float> read_millicelsius_file(const fs::path& path, ImplausibleReadings& dropped) {
  const auto text = read_text(path, kMaxSysfsBytes);
  if (!text) return std::nullopt;
  return plausible_celsius(parse_number<std::int64_t>(*text), dropped);
}

std::optional<float> thermal_zone_celsius(const fs::path& sys_root, ImplausibleReadings& dropped) {
  std::optional<float> first;
  for (const fs::path& zone : numbered_entries(sys_root / "class" / "thermal", "thermal_zone")) {
    const auto celsius = read_millicelsius_file(zone / "temp", dropped);
    if (!celsius) continue;
    if (read_line(zone / "type") == "x86_pkg_temp") return celsius;  // the package sensor is the CPU's own
    if (!first) first = celsius;
  }
  return first;
}

std::optional<float> hwmon_celsius(const fs::path& sys_root, ImplausibleReadings& dropped) {
  // Only CPU drivers: another hwmon (an NVMe drive, a GPU) would pass off its temperature as the CPU's.
  static constexpr std::array<std::string_view, 5> kCpuDrivers = {"coretemp", "k10temp", "zenpower", "cpu_thermal",
                                                                  "acpitz"};
  for (const fs::path& hwmon : numbered_entries(sys_root / "class" / "hwmon", "hwmon")) {
    const auto driver = read_line(hwmon / "name");
    if (!driver || std::find(kCpuDrivers.begin(), kCpuDrivers.end(), *driver) == kCpuDrivers.end()) continue;
    if (const auto celsius = read_millicelsius_file(hwmon / "temp1_input", dropped)) return celsius;
  }
  return std::nullopt;
}

// 0 MHz is what cpufreq reports for a CPU it does not know the clock of: no reading, not a broken one.
bool plausible_mhz(double mhz, ImplausibleReadings& dropped) {
  return mhz > 0 && plausible_or_count(Quantity::clock_mhz, mhz, dropped);
}

std::optional<float> mean(const std::vector<double>& values) {
  if (values.empty()) return std::nullopt;
  double sum = 0;
  for (const double v : values) sum += v;
  return static_cast<float>(sum / static_cast<double>(values.size()));
}

// CPU utilization over the interval between two /proc/stat snapshots.
std::optional<float> utilization_between(std::uint64_t busy_before, std::uint64_t total_before,
                                         std::uint64_t busy_after, std::uint64_t total_after) {
  if (total_after <= total_before || busy_after < busy_before) return std::nullopt;
  const std::uint64_t total_delta = total_after - total_before;
  const std::uint64_t busy_delta = busy_after - busy_before;
  if (busy_delta > total_delta) return std::nullopt;
  return static_cast<float>(100.0 * static_cast<double>(busy_delta) / static_cast<double>(total_delta));
}

// The energy counted between two RAPL readings; the counter wraps at
// max_range_uj. nullopt when it went backwards with no known range: a reset,
// not a measurement.
std::optional<std::uint64_t> energy_between(std::uint64_t before_uj, std::uint64_t after_uj,
                                            std::optional<std::uint64_t> max_range_uj) {
  if (after_uj >= before_uj) return after_uj - before_uj;
  if (max_range_uj && *max_range_uj >= before_uj) return (*max_range_uj - before_uj) + after_uj;
  return std::nullopt;
}

// Average power from two RAPL energy readings.
std::optional<float> power_between(std::uint64_t before_uj, std::uint64_t after_uj,
                                   std::optional<std::uint64_t> max_range_uj, double seconds,
                                   ImplausibleReadings& dropped) {
  if (!(seconds > 0)) return std::nullopt;
  const auto delta_uj = energy_between(before_uj, after_uj, max_range_uj);
  if (!delta_uj) return std::nullopt;
  const double watts = static_cast<double>(*delta_uj) / 1e6 / seconds;
  if (!plausible_or_count(Quantity::power_watts, watts, dropped)) return std::nullopt;
  return static_cast<float>(watts);
}

fs::path rapl_package(const fs::path& sys_root) {
  return sys_root / "class" / "powercap" / "intel-rapl:0";
}

}  // namespace

HostBackend::HostBackend(HostBackendPaths paths) : paths_(std::move(paths)) {}

std::optional<HostBackend::CpuTimes> HostBackend::read_cpu_times() const {
  const auto text = read_text(paths_.proc_root / "stat", kMaxProcBytes);
  if (!text) return std::nullopt;
  // The aggregate line comes first; per-CPU lines ("cpu0 ...") follow it.
  const std::string_view first_line = std::string_view(*text).substr(0, text->find('\n'));
  if (!first_line.starts_with("cpu ")) return std::nullopt;
  // user nice system idle iowait irq softirq steal; guest time is already counted in user.
  std::array<std::uint64_t, 8> fields{};
  std::size_t count = 0;
  std::string_view rest = first_line.substr(4);
  while (count < fields.size()) {
    rest = trim(rest);
    if (rest.empty()) break;
    const auto end = rest.find(' ');
    const auto value = parse_number<std::uint64_t>(rest.substr(0, end));
    if (!value) return std::nullopt;
    fields[count++] = *value;
    if (end == std::string_view::npos) break;
    rest.remove_prefix(end);
  }
  if (count < 4) return std::nullopt;
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < count; ++i) {
    if (fields[i] > std::numeric_limits<std::uint64_t>::max() - total) return std::nullopt;
    total += fields[i];
  }
  const std::uint64_t idle = fields[3] + (count > 4 ? fields[4] : 0);  // idle + iowait; bounded by total
  return CpuTimes{total - idle, total};
}

std::optional<float> HostBackend::read_temperature_celsius(ImplausibleReadings& dropped) const {
  if (auto celsius = thermal_zone_celsius(paths_.sys_root, dropped)) return celsius;
  return hwmon_celsius(paths_.sys_root, dropped);
}

std::optional<float> HostBackend::read_clock_mhz(ImplausibleReadings& dropped) const {
  std::vector<double> mhz;
  for (const fs::path& cpu : numbered_entries(paths_.sys_root / "devices" / "system" / "cpu", "cpu")) {
    const auto khz = read_u64(cpu / "cpufreq" / "scaling_cur_freq");
    if (!khz) continue;
    const double value_mhz = static_cast<double>(*khz) / 1000.0;
    if (plausible_mhz(value_mhz, dropped)) mhz.push_back(value_mhz);
  }
  if (!mhz.empty()) return mean(mhz);
  // Virtual machines often lack cpufreq; /proc/cpuinfo still reports each CPU's clock.
  const auto cpuinfo = read_text(paths_.proc_root / "cpuinfo", kMaxProcBytes);
  if (!cpuinfo) return std::nullopt;
  for (const std::string_view value : values_for_key(*cpuinfo, "cpu MHz")) {
    const auto parsed = parse_number<double>(value);
    if (parsed && plausible_mhz(*parsed, dropped)) mhz.push_back(*parsed);
  }
  return mean(mhz);
}

std::optional<std::uint64_t> HostBackend::read_energy_microjoules() const {
  return read_u64(rapl_package(paths_.sys_root) / "energy_uj");
}

std::optional<std::uint64_t> HostBackend::read_energy_range_microjoules() const {
  return read_u64(rapl_package(paths_.sys_root) / "max_energy_range_uj");
}

// RAPL's energy_uj wraps to 0 at max_energy_range_uj (about 262 kJ for a
// package: minutes to an hour under load), so it is not itself a counter that
// only grows. The energy_joules reported is a running total: the first reading
// as read, then every later reading's increase added, a wrap's included. It
// keeps growing as long as readings come more often than one wrap; a reading
// lower than the last with no known range (or a total beyond 64 bits of µJ)
// is a reset, and the total starts again from that reading, which a counter's
// reader (Prometheus rate()) handles as a reset. A failed read leaves the total
// unavailable for that sample only: the next reading's increase spans the gap.
std::optional<double> HostBackend::count_energy(std::optional<std::uint64_t> energy_uj,
                                                std::optional<std::uint64_t> max_range_uj,
                                                ImplausibleReadings& dropped) {
  if (!energy_uj) return std::nullopt;
  std::optional<std::uint64_t> delta_uj;
  if (energy_total_uj_ && energy_counted_uj_) delta_uj = energy_between(*energy_counted_uj_, *energy_uj, max_range_uj);
  if (delta_uj && *delta_uj <= std::numeric_limits<std::uint64_t>::max() - *energy_total_uj_) {
    *energy_total_uj_ += *delta_uj;
  } else {
    energy_total_uj_ = *energy_uj;
  }
  energy_counted_uj_ = energy_uj;
  const double joules = static_cast<double>(*energy_total_uj_) / 1e6;
  if (!plausible_or_count(Quantity::energy_joules, joules, dropped)) return std::nullopt;
  return joules;
}

Discovery HostBackend::discover(const std::string& host) {
  std::lock_guard lock(mutex_);
  const auto memory = read_memory(paths_.proc_root);
  if (!memory) {
    return Discovery{
        {},
        fmt::format("no host CPU device: {} is missing or unreadable", (paths_.proc_root / "meminfo").string()),
        true};
  }
  const std::string cpuinfo = read_text(paths_.proc_root / "cpuinfo", kMaxProcBytes).value_or("");

  DeviceInfo info;
  info.key = DeviceKey{host, kLocalId};
  info.name = model_name(cpuinfo);
  info.vendor = map_vendor(cpuinfo);
  info.kind = DeviceKind::cpu;
  info.backend = "host";
  info.memory_total_bytes = memory->total_bytes;
  if (const auto processors = values_for_key(cpuinfo, "processor").size(); processors > 0) {
    info.compute_units = static_cast<std::uint32_t>(std::min<std::size_t>(processors, UINT32_MAX));
  }
  const auto max_khz =
      read_u64(paths_.sys_root / "devices" / "system" / "cpu" / "cpu0" / "cpufreq" / "cpuinfo_max_freq");
  if (max_khz && *max_khz > 0) info.max_clock_mhz = static_cast<double>(*max_khz) / 1000.0;
  info.supports_fp64 = true;  // every CPU this runs on has hardware double precision
  validate_device_info(info);

  // Baselines, so the first sample() already has a utilization and power interval.
  last_cpu_ = read_cpu_times();
  last_energy_uj_ = read_energy_microjoules();
  last_energy_time_ = std::chrono::steady_clock::now();
  // These readings only probe which fields the host has: what they drop is not counted.
  ImplausibleReadings uncounted;
  const bool energy = count_energy(last_energy_uj_, read_energy_range_microjoules(), uncounted).has_value();
  fields_ = FieldAvailability{};
  fields_.set(Quantity::utilization_percent, last_cpu_.has_value());
  fields_.set(Quantity::power_watts, last_energy_uj_.has_value());
  fields_.set(Quantity::energy_joules, energy);
  fields_.set(Quantity::temperature_celsius, read_temperature_celsius(uncounted).has_value());
  fields_.set(Quantity::clock_mhz, read_clock_mhz(uncounted).has_value());
  spdlog::debug("host backend: {} ({}, {} CPUs); reads {}", info.name, info.vendor, info.compute_units.value_or(0),
                to_string(fields_));
  return Discovery{{std::move(info)}, ""};
}

Sample HostBackend::sample(const std::string& local_id) {
  if (local_id != kLocalId) throw UnknownDeviceError(local_id);
  // One lock for the whole reading: the CPU and energy baselines must advance in call order.
  std::lock_guard lock(mutex_);
  const auto memory = read_memory(paths_.proc_root);
  if (!memory)
    throw Error(fmt::format("host {}: cannot read memory from {}", local_id, (paths_.proc_root / "meminfo").string()));

  Sample sample;
  sample.timestamp = now_timestamp();
  sample.memory_total_bytes = static_cast<std::int64_t>(memory->total_bytes);
  sample.memory_used_bytes = static_cast<std::int64_t>(memory->total_bytes - memory->available_bytes);
  sample.temperature_celsius = read_temperature_celsius(implausible_);
  sample.clock_mhz = read_clock_mhz(implausible_);

  const auto cpu = read_cpu_times();
  if (cpu && last_cpu_) {
    sample.utilization_percent = utilization_between(last_cpu_->busy, last_cpu_->total, cpu->busy, cpu->total);
  }
  // No tick elapsed: keep the old baseline so the next call measures a longer interval.
  if (!(cpu && last_cpu_ && cpu->total == last_cpu_->total)) last_cpu_ = cpu;

  const auto energy_uj = read_energy_microjoules();
  const auto now = std::chrono::steady_clock::now();
  const auto max_range_uj = energy_uj ? read_energy_range_microjoules() : std::nullopt;
  if (energy_uj && last_energy_uj_ && last_energy_time_) {
    const double seconds = std::chrono::duration<double>(now - *last_energy_time_).count();
    sample.power_watts = power_between(*last_energy_uj_, *energy_uj, max_range_uj, seconds, implausible_);
  }
  last_energy_uj_ = energy_uj;
  last_energy_time_ = now;
  sample.energy_joules = count_energy(energy_uj, max_range_uj, implausible_);

  fields_ = FieldAvailability{};
  fields_.set(Quantity::utilization_percent, cpu.has_value());
  fields_.set(Quantity::power_watts, energy_uj.has_value());
  fields_.set(Quantity::energy_joules, sample.energy_joules.has_value());
  fields_.set(Quantity::temperature_celsius, sample.temperature_celsius.has_value());
  fields_.set(Quantity::clock_mhz, sample.clock_mhz.has_value());
  return sample;
}

FieldAvailability HostBackend::available_fields(const std::string& local_id) const {
  if (local_id != kLocalId) throw UnknownDeviceError(local_id);
  std::lock_guard lock(mutex_);
  return fields_;
}

}  // namespace gpucluster
