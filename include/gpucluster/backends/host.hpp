#pragma once
// The host CPU as a device, from /proc and /sys: memory and utilization on any
// Linux machine; temperature, power (RAPL energy deltas), energy (RAPL's counter
// as a running total that survives its wraps: HostBackend::count_energy) and
// clock when readable. No fan speed: unavailable.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>

#include "gpucluster/backends/backend.hpp"

namespace gpucluster {

struct HostBackendPaths {
  std::filesystem::path proc_root = "/proc";
  std::filesystem::path sys_root = "/sys";
};

class HostBackend final : public Backend {
 public:
  explicit HostBackend(HostBackendPaths paths = {});
  std::string_view name() const noexcept override { return "host"; }
  Discovery discover(const std::string& host) override;
  Sample sample(const std::string& local_id) override;
  FieldAvailability available_fields(const std::string& local_id) const override;
  ImplausibleCounts implausible_readings() const noexcept override { return implausible_.snapshot(); }
  void shutdown() noexcept override {}

  static constexpr const char* kLocalId = "cpu:0";

 private:
  struct CpuTimes {
    std::uint64_t busy = 0;
    std::uint64_t total = 0;
  };
  std::optional<CpuTimes> read_cpu_times() const;
  // Each reading the plausibility rule drops is counted in `dropped`.
  std::optional<float> read_temperature_celsius(ImplausibleReadings& dropped) const;
  std::optional<float> read_clock_mhz(ImplausibleReadings& dropped) const;
  std::optional<std::uint64_t> read_energy_microjoules() const;
  std::optional<std::uint64_t> read_energy_range_microjoules() const;  // where energy_uj wraps to 0
  // The running energy total in joules after a reading (with the lock held).
  std::optional<double> count_energy(std::optional<std::uint64_t> energy_uj, std::optional<std::uint64_t> max_range_uj,
                                     ImplausibleReadings& dropped);

  HostBackendPaths paths_;
  mutable std::mutex mutex_;
  std::optional<CpuTimes> last_cpu_;
  std::optional<std::uint64_t> last_energy_uj_;
  std::optional<std::chrono::steady_clock::time_point> last_energy_time_;
  std::optional<std::uint64_t> energy_total_uj_;    // the running total reported as energy_joules
  std::optional<std::uint64_t> energy_counted_uj_;  // the reading the total last advanced from
  FieldAvailability fields_;
  ImplausibleReadings implausible_;  // readings sample() dropped; atomic, read without the mutex
};

}  // namespace gpucluster
