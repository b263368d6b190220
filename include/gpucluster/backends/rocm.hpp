#pragma once
// AMD GPUs through ROCm SMI (librocm_smi64, Debian package librocm-smi64-1),
// loaded at run time with dlopen so one binary builds and runs on machines with
// and without the AMD driver. No ROCm headers or libraries are needed at build
// time: the few C types and functions used are declared in rocm.cpp (and
// checked against <rocm_smi/rocm_smi.h> at compile time when that header is
// installed).
//
// ROCm SMI stays initialised from discover() until
// shutdown(); static fields (name, unique id, PCI bus id, VRAM total, power
// cap, maximum system clock, driver version) are read once in discover();
// sample() reads only the cheap gauges (VRAM used, busy percent, average
// power, temperature, current system clock, fan speed) and the energy counter.
// Units are converted here: power µW → W, temperature m°C → °C, clocks Hz →
// MHz, memory bytes, fan speed (rsmi_dev_fan_speed_get of sensor 0) → percent
// of rsmi_dev_fan_speed_max_get (read once in discover(); without it, or 0,
// the fan is unavailable), energy (rsmi_dev_energy_count_get) counter ×
// resolution µJ → J.
//
// Required functions: rsmi_init, rsmi_shut_down, rsmi_num_monitor_devices,
// rsmi_dev_memory_total_get, rsmi_dev_memory_usage_get, rsmi_status_string.
// Every other function is optional: a symbol missing from the loaded library
// makes its fields unavailable.
//
// Errors: a missing library, missing required functions (the note names every
// one), a failed rsmi_init
// (as on a machine without the amdgpu/KFD driver) or a failed device count make
// discover() find no devices, mark the Discovery unavailable and say in its
// note why and which library was tried (and, when it could not be loaded, how
// to point at another: GPUCLUSTER_ROCM_SMI_LIBRARY). Zero devices is not
// unavailable. Never a throw.
// A gauge answering NOT_SUPPORTED (or NOT_YET_IMPLEMENTED) is unavailable for
// that device from then on and not asked again; any other error makes
// sample() throw an Error with rsmi_status_string's text. A reading outside the
// field table's range (model/fields.hpp, under validation's default limits: a
// busy percent over 100, a temperature over 250 °C, a fan over its maximum) is
// unavailable for that tick, as in the nvml backend, and the rest of the
// sample stands (before, the whole sample was rejected by validation); each
// such reading is counted (implausible_readings()).
// Thread-safe.

#include <memory>
#include <mutex>
#include <string>

#include "gpucluster/backends/backend.hpp"

namespace gpucluster {

class RocmBackend final : public Backend {
 public:
  static constexpr const char* kDefaultLibrary = "librocm_smi64.so.1";
  static constexpr const char* kLibraryEnvironmentVariable = "GPUCLUSTER_ROCM_SMI_LIBRARY";

  // The library to load: library_path when non-empty, else
  // $GPUCLUSTER_ROCM_SMI_LIBRARY when set and non-empty, else
  // librocm_smi64.so.1 (found by the dynamic loader). Nothing is loaded until
  // discover().
  explicit RocmBackend(std::string library_path = {});
  // Calls shutdown() if it has not been called (errors are logged, not thrown).
  ~RocmBackend() override;
  RocmBackend(const RocmBackend&) = delete;
  RocmBackend& operator=(const RocmBackend&) = delete;

  std::string_view name() const noexcept override { return "rocm"; }
  // Loads the library and initialises ROCm SMI (once; a failed attempt is
  // retried by the next call), then lists its GPUs as "rocm:<ROCm SMI index>"
  // with pci_bus_id like "0000:65:00.0". A device whose VRAM total cannot be
  // read is skipped and named in the note. Throws Error after shutdown().
  Discovery discover(const std::string& host) override;
  // Throws UnknownDeviceError for an id discover() did not report, Error on a
  // ROCm SMI failure or after shutdown().
  Sample sample(const std::string& local_id) override;
  FieldAvailability available_fields(const std::string& local_id) const override;
  ImplausibleCounts implausible_readings() const noexcept override { return implausible_.snapshot(); }
  // rsmi_shut_down exactly once (only if rsmi_init succeeded), then dlclose.
  // Idempotent. Throws Error if rsmi_shut_down fails (the library is closed anyway).
  void shutdown() override;

  const std::string& library_path() const noexcept { return library_path_; }

 private:
  struct State;
  void shutdown_locked();

  // How to point at another library, for the note of an unusable one.
  std::string library_hint() const;

  std::string library_path_;
  bool from_environment_ = false;  // library_path_ came from GPUCLUSTER_ROCM_SMI_LIBRARY
  mutable std::mutex mutex_;
  ImplausibleReadings implausible_;  // readings sample() dropped; atomic, read without the mutex
  std::unique_ptr<State> state_;
  bool shut_down_ = false;
};

}  // namespace gpucluster
