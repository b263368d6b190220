#include "gpucluster/backends/sysfs.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/validation.hpp"
#include "model/text.hpp"

namespace gpucluster {

namespace fs = std::filesystem;

namespace {

// A sysfs attribute is one short value (pp_dpm_sclk, a few lines, is the longest we read).
constexpr std::size_t kMaxSysfsBytes = 4096;
// A reading outside the field table's range comes from a broken file: unavailable
// (plausible_or_count, backend.hpp), rather than a value that would get the whole
// sample (memory too) rejected. Static information (thresholds, limits, the
// maximum clock) is read under the same limits, uncounted.
constexpr ValidationLimits kPlausible{};

using text::parse_number;
using text::trim;

// Whole sysfs attribute files are small; anything bigger is not what we expect.
std::optional<std::string> read_text(const fs::path& path) {
  return text::read_text_file(path, kMaxSysfsBytes);
}

std::optional<std::uint64_t> read_u64(const fs::path& path) {
  const auto text = read_text(path);
  if (!text) return std::nullopt;
  return parse_number<std::uint64_t>(*text);
}

// The trimmed single value of a text attribute; nullopt when unreadable or empty.
std::optional<std::string> read_word(const fs::path& path) {
  const auto text = read_text(path);
  if (!text) return std::nullopt;
  const std::string_view value = trim(*text);
  if (value.empty()) return std::nullopt;
  return std::string(value);
}

// The value of "KEY=value" in a uevent file.
std::optional<std::string> uevent_value(const fs::path& uevent, std::string_view key) {
  const auto text = read_text(uevent);
  if (!text) return std::nullopt;
  std::string_view rest = *text;
  while (!rest.empty()) {
    const auto end = rest.find('\n');
    const std::string_view line = trim(rest.substr(0, end));
    if (line.size() > key.size() && line.starts_with(key) && line[key.size()] == '=') {
      const std::string_view value = trim(line.substr(key.size() + 1));
      if (value.empty()) return std::nullopt;
      return std::string(value);
    }
    if (end == std::string_view::npos) break;
    rest.remove_prefix(end + 1);
  }
  return std::nullopt;
}

// Entries of `dir` named prefix + digits only (card0, hwmon3), in numeric order with their
// number; card0-DP-1 and other connector entries do not match.
std::vector<std::pair<unsigned, fs::path>> numbered_entries(const fs::path& dir, std::string_view prefix) {
  std::vector<std::pair<unsigned, fs::path>> found;
  std::error_code error;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with(prefix)) continue;
    const std::string_view suffix = std::string_view(name).substr(prefix.size());
    if (suffix.empty() || suffix.size() > 6 ||
        !std::all_of(suffix.begin(), suffix.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    if (const auto number = parse_number<unsigned>(suffix)) found.emplace_back(*number, it->path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

// The device's first hwmon directory (device/hwmon/hwmon<k>), if any.
std::optional<fs::path> hwmon_dir(const fs::path& device_dir) {
  auto entries = numbered_entries(device_dir / "hwmon", "hwmon");
  if (entries.empty()) return std::nullopt;
  return std::move(entries.front().second);
}

// The kernel driver bound to a device: the name of the device/driver symlink, or the
// uevent DRIVER= line (fake trees, and sysfs copies that lost their links).
std::optional<std::string> driver_name(const fs::path& device_dir) {
  std::error_code error;
  const fs::path link = fs::read_symlink(device_dir / "driver", error);
  if (!error && !link.filename().empty()) return link.filename().string();
  return uevent_value(device_dir / "uevent", "DRIVER");
}

// A reading of `quantity`, or nullopt when there is none or it is implausible (counted in `dropped`).
std::optional<float> plausible_gauge(Quantity quantity, std::optional<double> value, ImplausibleReadings& dropped) {
  if (!value || !plausible_or_count(quantity, *value, dropped)) return std::nullopt;
  return static_cast<float>(*value);
}

// hwmon temperatures are signed, but a GPU die below 0 °C is a broken sensor,
// not a reading: negative text does not parse as a std::uint64_t.
std::optional<float> celsius_from_milli(std::optional<std::uint64_t> millicelsius, ImplausibleReadings& dropped) {
  if (!millicelsius) return std::nullopt;
  return plausible_gauge(Quantity::temperature_celsius, static_cast<double>(*millicelsius) / 1000.0, dropped);
}

std::optional<float> watts_from_micro(std::optional<std::uint64_t> microwatts, ImplausibleReadings& dropped) {
  if (!microwatts) return std::nullopt;
  return plausible_gauge(Quantity::power_watts, static_cast<double>(*microwatts) / 1e6, dropped);
}

// A current clock: 0 MHz is a gated clock, so allowed (the field table's range).
std::optional<float> plausible_mhz(std::optional<double> mhz, ImplausibleReadings& dropped) {
  return plausible_gauge(Quantity::clock_mhz, mhz, dropped);
}

std::optional<double> positive_mhz(std::optional<std::uint64_t> mhz) {
  if (!mhz || *mhz == 0 || static_cast<double>(*mhz) > kPlausible.max_clock_mhz) return std::nullopt;
  return static_cast<double>(*mhz);
}

std::optional<double> mhz_from_hz(std::optional<std::uint64_t> hz) {
  if (!hz) return std::nullopt;
  return static_cast<double>(*hz) / 1e6;
}

struct DpmLevels {
  std::optional<double> current_mhz;
  std::optional<double> max_mhz;
};

// amdgpu pp_dpm_sclk: one level a line, "1: 1850Mhz *", the current level starred.
// Lines that do not parse are ignored, and so is a level of 0 or beyond the
// clock's range for the maximum; the current level is kept as read, for the
// plausibility rule of a reading.
DpmLevels parse_dpm_levels(std::string_view text) {
  DpmLevels levels;
  while (!text.empty()) {
    const auto end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    line = trim(line.substr(colon + 1));
    const bool current = line.ends_with('*');
    if (current) line = trim(line.substr(0, line.size() - 1));
    if (line.size() < 3) continue;
    std::string unit(line.substr(line.size() - 3));
    std::transform(unit.begin(), unit.end(), unit.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (unit != "mhz") continue;
    const auto read_mhz = parse_number<std::uint64_t>(line.substr(0, line.size() - 3));
    if (!read_mhz) continue;
    // A current level of 0 MHz says nothing: freq1_input is read instead.
    if (current && !levels.current_mhz && *read_mhz > 0) levels.current_mhz = static_cast<double>(*read_mhz);
    const auto mhz = positive_mhz(read_mhz);
    if (mhz && (!levels.max_mhz || *mhz > *levels.max_mhz)) levels.max_mhz = mhz;
  }
  return levels;
}

DpmLevels read_dpm_levels(const fs::path& device_dir) {
  const auto text = read_text(device_dir / "pp_dpm_sclk");
  if (!text) return {};
  return parse_dpm_levels(*text);
}

// hwmon energy1_input (µJ, a counter) in joules; beyond the field table's range
// (model/fields.hpp) it comes from a broken file.
std::optional<double> joules_from_micro(std::optional<std::uint64_t> microjoules, ImplausibleReadings& dropped) {
  if (!microjoules) return std::nullopt;
  const double joules = static_cast<double>(*microjoules) / 1e6;
  if (!plausible_or_count(Quantity::energy_joules, joules, dropped)) return std::nullopt;
  return joules;
}

// The fan's duty cycle as a percent of its maximum: hwmon pwm1 over pwm1_max
// (the hwmon ABI's range is 0–255 when pwm1_max is absent). Without pwm1 the
// fan is unavailable: fan1_input is RPM, and a percent of an unknown maximum
// RPM would be a guess. pwm1 above its maximum (over 100 %) is a broken file;
// a maximum of 0 gives no scale at all.
std::optional<float> fan_percent(const fs::path& hwmon, ImplausibleReadings& dropped) {
  const auto pwm = read_u64(hwmon / "pwm1");
  if (!pwm) return std::nullopt;
  const std::uint64_t max = read_u64(hwmon / "pwm1_max").value_or(255);
  if (max == 0) return std::nullopt;
  return plausible_gauge(Quantity::fan_speed_percent, static_cast<double>(*pwm) * 100.0 / static_cast<double>(max),
                         dropped);
}

// Average power from two energy readings (µJ); a counter that went backwards was reset.
std::optional<float> power_between(std::uint64_t before_uj, std::uint64_t after_uj, double seconds,
                                   ImplausibleReadings& dropped) {
  if (!(seconds > 0) || after_uj < before_uj) return std::nullopt;
  return plausible_gauge(Quantity::power_watts, static_cast<double>(after_uj - before_uj) / 1e6 / seconds, dropped);
}

// Gauges read from an awake card.
struct Gauges {
  std::optional<float> utilization;
  std::optional<float> power;
  std::optional<float> temperature;
  std::optional<float> clock;
  std::optional<float> fan_speed;
  std::optional<double> energy;

  FieldAvailability availability() const {
    FieldAvailability fields;
    fields.set(Quantity::utilization_percent, utilization.has_value());
    fields.set(Quantity::power_watts, power.has_value());
    fields.set(Quantity::temperature_celsius, temperature.has_value());
    fields.set(Quantity::clock_mhz, clock.has_value());
    fields.set(Quantity::fan_speed_percent, fan_speed.has_value());
    fields.set(Quantity::energy_joules, energy.has_value());
    return fields;
  }
};

std::optional<double> as_double(std::optional<std::uint64_t> value) {
  if (!value) return std::nullopt;
  return static_cast<double>(*value);
}

// Each implausible reading is counted in `dropped`, the fallbacks' too (power1_input
// after power1_average, freq1_input after pp_dpm_sclk).
Gauges read_amd_gauges(const fs::path& device_dir, ImplausibleReadings& dropped) {
  Gauges gauges;
  gauges.utilization =
      plausible_gauge(Quantity::utilization_percent, as_double(read_u64(device_dir / "gpu_busy_percent")), dropped);
  const auto hwmon = hwmon_dir(device_dir);
  if (hwmon) {
    gauges.power = watts_from_micro(read_u64(*hwmon / "power1_average"), dropped);
    if (!gauges.power) gauges.power = watts_from_micro(read_u64(*hwmon / "power1_input"), dropped);
    gauges.temperature = celsius_from_milli(read_u64(*hwmon / "temp1_input"), dropped);
    gauges.fan_speed = fan_percent(*hwmon, dropped);
    gauges.energy = joules_from_micro(read_u64(*hwmon / "energy1_input"), dropped);
  }
  gauges.clock = plausible_mhz(read_dpm_levels(device_dir).current_mhz, dropped);
  if (!gauges.clock && hwmon) gauges.clock = plausible_mhz(mhz_from_hz(read_u64(*hwmon / "freq1_input")), dropped);
  return gauges;
}

// "0x744c" from device/device, else the device half of uevent PCI_ID ("1002:744C").
std::string pci_device_id(const fs::path& device_dir) {
  if (auto id = read_word(device_dir / "device")) return *id;
  if (const auto pci_id = uevent_value(device_dir / "uevent", "PCI_ID")) {
    const auto colon = pci_id->find(':');
    if (colon != std::string::npos && colon + 1 < pci_id->size()) return "0x" + pci_id->substr(colon + 1);
  }
  return "";
}

// A marketing name is free text from firmware: printable ASCII only, else unusable.
bool printable(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (const auto& part : parts) {
    if (!out.empty()) out += separator;
    out += part;
  }
  return out;
}

}  // namespace

SysfsBackend::SysfsBackend(fs::path root) : root_(std::move(root)) {}

fs::path SysfsBackend::default_root() {
  const char* env = std::getenv("GPUCLUSTER_SYSFS_ROOT");  // NOLINT(concurrency-mt-unsafe): read-only use
  if (env != nullptr && *env != '\0') return fs::path(env);
  return fs::path("/sys");
}

bool SysfsBackend::suspended(const Card& card) const {
  // Reading runtime_status never resumes the device.
  const auto status = read_word(card.device_dir / "power" / "runtime_status");
  return status && (*status == "suspended" || *status == "suspending");
}

std::optional<SysfsBackend::Memory> SysfsBackend::read_memory(const Card& card) const {
  std::optional<std::uint64_t> total = read_u64(card.device_dir / "mem_info_vram_total");
  std::optional<std::uint64_t> used;
  if (total) {
    used = read_u64(card.device_dir / "mem_info_vram_used");
  } else if (card.driver != Driver::amdgpu) {
    // Out-of-tree i915 (intel-gpu-i915-backports) reports device memory in the card dir.
    for (const char* prefix : {"", "prelim_"}) {
      const auto lmem_total = read_u64(card.card_dir / fmt::format("{}lmem_total_bytes", prefix));
      if (!lmem_total) continue;
      total = lmem_total;
      const auto available = read_u64(card.card_dir / fmt::format("{}lmem_avail_bytes", prefix));
      if (available && *available <= *total) used = *total - *available;
      break;
    }
  }
  if (!total || *total == 0 || *total > kMaxMemoryBytes || !used || *used > *total) return std::nullopt;
  return Memory{*total, *used};
}

Discovery SysfsBackend::discover(const std::string& host) {
  std::lock_guard lock(mutex_);
  const fs::path drm = root_ / "class" / "drm";
  std::map<std::string, Card> found_cards;
  Discovery discovery;
  std::vector<std::string> notes;

  std::error_code root_error;
  if (!fs::is_directory(root_, root_error)) {
    // A mistyped root must not read as "no GPUs here".
    cards_.clear();
    discovery.note = fmt::format(
        "the sysfs root {} is not a directory; set GPUCLUSTER_SYSFS_ROOT (the CLI: --sysfs-root) to the sysfs "
        "mount point, /sys",
        root_.string());
    discovery.unavailable = true;
    spdlog::debug("{}", discovery.note);
    return discovery;
  }
  const auto entries = numbered_entries(drm, "card");
  if (entries.empty()) {
    cards_.clear();
    discovery.note = fmt::format("sysfs: no DRM cards under {}", drm.string());
    spdlog::debug("{}", discovery.note);
    return discovery;
  }

  const auto skip = [&notes](std::string reason) {
    spdlog::debug("sysfs backend: {}", reason);
    notes.push_back(std::move(reason));
  };

  for (const auto& [number, card_dir] : entries) {
    const std::string card_name = card_dir.filename().string();
    const fs::path device_dir = card_dir / "device";
    std::error_code error;
    if (!fs::is_directory(device_dir, error)) {
      skip(fmt::format("{}: no device directory, skipped", card_name));
      continue;
    }
    const auto driver = driver_name(device_dir);
    if (!driver) {
      skip(fmt::format("{}: driver unknown, skipped", card_name));
      continue;
    }
    Card card;
    if (*driver == "amdgpu") {
      card.driver = Driver::amdgpu;
    } else if (*driver == "i915") {
      card.driver = Driver::i915;
    } else if (*driver == "xe") {
      card.driver = Driver::xe;
    } else {
      skip(fmt::format("{}: driver {} is not read by the sysfs backend, skipped", card_name, *driver));
      continue;
    }
    const bool amd = card.driver == Driver::amdgpu;
    const std::string label = fmt::format("{} {}", *driver, card_name);
    card.card_dir = card_dir;
    card.device_dir = device_dir;
    card.pci_slot = uevent_value(device_dir / "uevent", "PCI_SLOT_NAME").value_or("");
    const std::string local_id = fmt::format("{}:{}", amd ? "rocm" : "xe", number);

    // The same card seen by an earlier discovery keeps what was learned while it was awake.
    std::optional<DeviceInfo> previous_info;
    if (const auto old = cards_.find(local_id);
        old != cards_.end() && old->second.driver == card.driver && old->second.pci_slot == card.pci_slot) {
      card.last_memory = old->second.last_memory;
      card.last_energy_uj = old->second.last_energy_uj;
      card.last_energy_time = old->second.last_energy_time;
      card.fields = old->second.fields;
      previous_info = old->second.info;
    }

    const bool asleep = suspended(card);
    if (!asleep) {
      card.last_memory = read_memory(card);
      if (!card.last_memory) {
        skip(fmt::format("{}: no readable memory information (VRAM total and usage), skipped", label));
        continue;
      }
    } else if (!card.last_memory || !previous_info) {
      skip(
          fmt::format("{}: runtime-suspended and its memory size is unknown without waking it, skipped until it "
                      "is awake at a later discovery",
                      label));
      continue;
    }

    DeviceInfo info;
    if (asleep) {
      info = *previous_info;  // static fields from when it was awake; reading them now could wake it
    } else {
      info.name = amd ? read_word(device_dir / "product_name").value_or("") : "";
      if (info.name.empty() || !printable(info.name)) {
        const std::string id = pci_device_id(device_dir);
        info.name = fmt::format("{} GPU{}{}", amd ? "AMD" : "Intel", id.empty() ? "" : " ", id);
      }
      info.vendor = amd ? "amd" : "intel";
      info.kind = amd ? DeviceKind::rocm : DeviceKind::intel_xe;
      info.backend = "sysfs";
      if (!card.pci_slot.empty()) info.pci_bus_id = card.pci_slot;
      info.driver_version = read_word(root_ / "module" / *driver / "version");
      const auto hwmon = hwmon_dir(device_dir);
      // Discovery's readings only probe which fields the card has: what they drop is not counted.
      ImplausibleReadings uncounted;
      if (amd) {
        info.max_clock_mhz = read_dpm_levels(device_dir).max_mhz;
        if (hwmon) {
          const auto slowdown = celsius_from_milli(read_u64(*hwmon / "temp1_crit"), uncounted);
          const auto shutdown = celsius_from_milli(read_u64(*hwmon / "temp1_emergency"), uncounted);
          if (slowdown) info.temperature_slowdown_celsius = *slowdown;
          if (shutdown) info.temperature_shutdown_celsius = *shutdown;
          if (const auto cap = watts_from_micro(read_u64(*hwmon / "power1_cap"), uncounted); cap && *cap > 0) {
            info.power_limit_watts = *cap;
          }
        }
        const Gauges gauges = read_amd_gauges(device_dir, uncounted);
        card.fields = gauges.availability();
      } else {
        const bool xe = card.driver == Driver::xe;
        const fs::path freq_dir = xe ? device_dir / "tile0" / "gt0" / "freq0" : card_dir;
        info.max_clock_mhz = positive_mhz(read_u64(freq_dir / (xe ? "rp0_freq" : "gt_RP0_freq_mhz")));
        if (!info.max_clock_mhz) {
          info.max_clock_mhz = positive_mhz(read_u64(freq_dir / (xe ? "max_freq" : "gt_max_freq_mhz")));
        }
        const auto clock = read_u64(freq_dir / (xe ? "cur_freq" : "gt_cur_freq_mhz"));
        bool power = false;
        bool energy = false;
        bool temperature = false;
        if (hwmon) {
          const auto energy_uj = read_u64(*hwmon / "energy1_input");
          power = energy_uj.has_value();
          energy = joules_from_micro(energy_uj, uncounted).has_value();
          temperature = celsius_from_milli(read_u64(*hwmon / "temp1_input"), uncounted).has_value();
          if (const auto cap = watts_from_micro(read_u64(*hwmon / "power1_max"), uncounted); cap && *cap > 0) {
            info.power_limit_watts = *cap;
          }
        }
        card.fields = FieldAvailability{};
        card.fields.set(Quantity::power_watts, power);
        card.fields.set(Quantity::energy_joules, energy);
        card.fields.set(Quantity::temperature_celsius, temperature);
        card.fields.set(Quantity::clock_mhz, plausible_mhz(as_double(clock), uncounted).has_value());
      }
    }
    info.key = DeviceKey{host, local_id};
    info.memory_total_bytes = card.last_memory->total_bytes;
    try {
      validate_device_info(info);
    } catch (const InputError& invalid) {
      skip(fmt::format("{}: {}, skipped", label, invalid.what()));
      continue;
    }
    spdlog::debug("sysfs backend: {} is {} ({}{}), {} bytes of VRAM; reads {}", label, local_id, info.name,
                  asleep ? ", runtime-suspended" : "", info.memory_total_bytes, to_string(card.fields));
    card.info = info;
    discovery.devices.push_back(std::move(info));
    found_cards.emplace(local_id, std::move(card));
  }
  cards_ = std::move(found_cards);
  discovery.note = join(notes, "; ");
  if (discovery.devices.empty() && discovery.note.empty()) {
    discovery.note = fmt::format("sysfs: no GPU under {}", drm.string());
  }
  return discovery;
}

Sample SysfsBackend::read_awake(Card& card, const std::string& local_id) {
  const auto memory = read_memory(card);
  if (!memory) {
    throw Error(fmt::format("sysfs {}: VRAM total or usage unreadable or implausible under {}", local_id,
                            card.device_dir.string()));
  }
  card.last_memory = memory;

  Sample sample;
  sample.timestamp = now_timestamp();
  sample.memory_total_bytes = static_cast<std::int64_t>(memory->total_bytes);
  sample.memory_used_bytes = static_cast<std::int64_t>(memory->used_bytes);

  if (card.driver == Driver::amdgpu) {
    const Gauges gauges = read_amd_gauges(card.device_dir, implausible_);
    sample.utilization_percent = gauges.utilization;
    sample.power_watts = gauges.power;
    sample.temperature_celsius = gauges.temperature;
    sample.clock_mhz = gauges.clock;
    sample.fan_speed_percent = gauges.fan_speed;
    sample.energy_joules = gauges.energy;
    card.fields = gauges.availability();
    return sample;
  }

  const bool xe = card.driver == Driver::xe;
  const auto clock =
      read_u64(xe ? card.device_dir / "tile0" / "gt0" / "freq0" / "cur_freq" : card.card_dir / "gt_cur_freq_mhz");
  sample.clock_mhz = plausible_mhz(as_double(clock), implausible_);

  std::optional<std::uint64_t> energy_uj;
  if (const auto hwmon = hwmon_dir(card.device_dir)) {
    sample.temperature_celsius = celsius_from_milli(read_u64(*hwmon / "temp1_input"), implausible_);
    energy_uj = read_u64(*hwmon / "energy1_input");
  }
  sample.energy_joules = joules_from_micro(energy_uj, implausible_);
  const auto now = std::chrono::steady_clock::now();
  if (energy_uj && card.last_energy_uj && card.last_energy_time) {
    const double seconds = std::chrono::duration<double>(now - *card.last_energy_time).count();
    sample.power_watts = power_between(*card.last_energy_uj, *energy_uj, seconds, implausible_);
  }
  card.last_energy_uj = energy_uj;
  card.last_energy_time = now;
  card.fields = FieldAvailability{};
  card.fields.set(Quantity::power_watts, energy_uj.has_value());
  card.fields.set(Quantity::energy_joules, sample.energy_joules.has_value());
  card.fields.set(Quantity::temperature_celsius, sample.temperature_celsius.has_value());
  card.fields.set(Quantity::clock_mhz, sample.clock_mhz.has_value());
  return sample;
}

Sample SysfsBackend::sample(const std::string& local_id) {
  std::lock_guard lock(mutex_);
  const auto it = cards_.find(local_id);
  if (it == cards_.end()) throw UnknownDeviceError(local_id);
  Card& card = it->second;
  if (!suspended(card)) return read_awake(card, local_id);

  // Asleep: idle by construction; nothing is read that would resume it.
  if (!card.last_memory) throw Error(fmt::format("sysfs {}: runtime-suspended and memory never read", local_id));
  Sample sample;
  sample.timestamp = now_timestamp();
  sample.memory_total_bytes = static_cast<std::int64_t>(card.last_memory->total_bytes);
  sample.memory_used_bytes = static_cast<std::int64_t>(card.last_memory->used_bytes);
  sample.utilization_percent = 0.0F;
  return sample;
}

FieldAvailability SysfsBackend::available_fields(const std::string& local_id) const {
  std::lock_guard lock(mutex_);
  const auto it = cards_.find(local_id);
  if (it == cards_.end()) throw UnknownDeviceError(local_id);
  return it->second.fields;
}

}  // namespace gpucluster
