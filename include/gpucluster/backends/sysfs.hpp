#pragma once
// GPUs seen through the Linux DRM sysfs tree, no vendor library needed (as nvtop
// reads them): <root>/class/drm/card<n>/device for amdgpu ("rocm:<n>"), i915 and
// xe ("xe:<n>"). Other drivers (nouveau, nvidia, virtio_gpu, simpledrm, ...) are
// skipped with a debug line and named in Discovery::note.
//
// Units are converted at the boundary: hwmon power µW → W, energy1_input µJ → J
// (the energy counter, on amdgpu and Intel), temperature m°C → °C, freq1_input
// Hz → MHz, memory in bytes; amdgpu fan speed is hwmon pwm1 over pwm1_max (255
// when absent) in percent, unavailable without pwm1 (fan1_input is RPM, not a
// percent). A file that is missing, empty, non-numeric, negative, or beyond a
// sane limit (the field table's ranges under validation's default limits; 100 %
// for utilization and fan speed; 1 PiB of VRAM) makes its field unavailable,
// never zero. Negative
// temperatures count as malformed: a GPU die below 0 °C is a broken sensor. Memory is required: a card without a
// readable, plausible VRAM total and usage is skipped in discover() with a note,
// and sample() throws Error when they become unreadable.
//
// amdgpu thresholds: hwmon temp1_crit (where the firmware throttles) is the
// slowdown temperature, temp1_emergency the shutdown one, power1_cap the power
// limit; max clock is the highest pp_dpm_sclk level.
//
// Intel power comes from hwmon energy1_input deltas between two samples: the first
// sample, and one after the counter went backwards (a reset), have no power.
// Intel utilization is not in sysfs: unavailable (except on a suspended card).
// Intel memory comes from mem_info_vram_total/_used (device dir) or the i915
// backports' lmem_total_bytes/lmem_avail_bytes (card dir, also "prelim_"-prefixed);
// integrated GPUs and upstream xe (which exposes only the total, in
// tile0/physical_vram_size_bytes) have no usage, so they are skipped with a note
// rather than given invented numbers.
//
// Runtime-suspended cards (device/power/runtime_status "suspended" or
// "suspending") are never woken: only runtime_status is read. Their sample is
// idle by construction: utilization 0 %, power, temperature and clock
// unavailable, memory total and used as last read while the card was awake
// (at discovery or an earlier sample; usage is not assumed to drop to zero).
// A card that is already suspended when first discovered has no known memory
// total, so it is skipped with a note until a later discover() finds it awake;
// a card seen awake by an earlier discover() keeps its last memory values.
//
// A root that is not a directory makes discover() unavailable (a mistyped
// root is not "no GPUs"); a root without class/drm cards finds no devices.
//
// Thread-safe: one mutex guards the card table and the energy baselines.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "gpucluster/backends/backend.hpp"

namespace gpucluster {

class SysfsBackend final : public Backend {
 public:
  // root is the sysfs mount point ("/sys", or a fake tree in tests).
  explicit SysfsBackend(std::filesystem::path root = default_root());
  // GPUCLUSTER_SYSFS_ROOT when set and non-empty, else "/sys".
  static std::filesystem::path default_root();

  std::string_view name() const noexcept override { return "sysfs"; }
  Discovery discover(const std::string& host) override;
  Sample sample(const std::string& local_id) override;
  FieldAvailability available_fields(const std::string& local_id) const override;
  ImplausibleCounts implausible_readings() const noexcept override { return implausible_.snapshot(); }
  void shutdown() noexcept override {}

  const std::filesystem::path& root() const noexcept { return root_; }

  // Larger VRAM totals than this (1 PiB) come from a broken file, not a GPU.
  static constexpr std::uint64_t kMaxMemoryBytes = std::uint64_t{1} << 50;

 private:
  enum class Driver : std::uint8_t { amdgpu, i915, xe };

  struct Memory {
    std::uint64_t total_bytes = 0;
    std::uint64_t used_bytes = 0;
  };

  struct Card {
    Driver driver = Driver::amdgpu;
    std::filesystem::path card_dir;     // <root>/class/drm/card<n>
    std::filesystem::path device_dir;   // card_dir/device
    std::string pci_slot;               // empty when unknown
    std::optional<Memory> last_memory;  // last values read while awake
    std::optional<std::uint64_t> last_energy_uj;
    std::optional<std::chrono::steady_clock::time_point> last_energy_time;
    FieldAvailability fields;
    DeviceInfo info;  // as last discovered while awake
  };

  bool suspended(const Card& card) const;
  std::optional<Memory> read_memory(const Card& card) const;
  Sample read_awake(Card& card, const std::string& local_id);

  std::filesystem::path root_;
  mutable std::mutex mutex_;
  std::map<std::string, Card> cards_;  // by local id
  ImplausibleReadings implausible_;    // readings sample() dropped; atomic, read without the mutex
};

}  // namespace gpucluster
