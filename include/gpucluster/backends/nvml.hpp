#pragma once
// NVIDIA GPUs through NVML, loaded at run time with dlopen so one binary builds
// and runs on machines with and without the NVIDIA driver (no NVIDIA headers or
// libraries at build time).
//
// NVML stays initialised and device handles stay open from
// discover() until shutdown(); static fields (name, UUID, PCI bus id, limits,
// thresholds, max clock, compute capability, driver version) are read once in
// discover(); sample() reads only the cheap gauges (memory, utilization, power,
// temperature, SM clock, fan speed) and the energy counter. Units are converted
// here: power mW → W, memory bytes, temperature °C, clocks MHz, fan speed % of
// its maximum, energy mJ since the driver loaded → J. nvmlDeviceGetFanSpeed and
// nvmlDeviceGetTotalEnergyConsumption are optional: a library without them still
// loads and the field is unavailable. nvmlInit_v2, nvmlDeviceGetCount_v2 and
// nvmlDeviceGetHandleByIndex_v2 fall back to their first versions (nvmlInit, …)
// when a driver lacks them. A reading outside the field table's range
// (model/fields.hpp) is unavailable for that tick, never a rejected sample, and
// counted (implausible_readings()).
//
// Errors: a missing library, missing required NVML functions (the note names
// every one) or a failed nvmlInit_v2 make discover() find no devices, mark the
// Discovery unavailable and say in its note why, which library was tried and how to point at
// another (GPUCLUSTER_NVML_LIBRARY) (never a throw). 0 GPUs is not unavailable. A gauge answering NOT_SUPPORTED (or
// NO_PERMISSION) is unavailable for that device from then on and not asked again. GPU_IS_LOST makes sample() throw an
// Error naming the device and "GPU is lost"; other NVML errors throw an Error with nvmlErrorString's text. Memory is
// required: if it cannot be read, sample() throws. Thread-safe.

#include <memory>
#include <mutex>
#include <string>

#include "gpucluster/backends/backend.hpp"

namespace gpucluster {

class NvmlBackend final : public Backend {
 public:
  static constexpr const char* kDefaultLibrary = "libnvidia-ml.so.1";
  static constexpr const char* kLibraryEnvironmentVariable = "GPUCLUSTER_NVML_LIBRARY";

  // The library to load: library_path when non-empty, else $GPUCLUSTER_NVML_LIBRARY
  // when set and non-empty, else libnvidia-ml.so.1 (found by the dynamic loader).
  // Nothing is loaded until discover().
  explicit NvmlBackend(std::string library_path = {});
  // Calls shutdown() if it has not been called (errors are logged, not thrown).
  ~NvmlBackend() override;
  NvmlBackend(const NvmlBackend&) = delete;
  NvmlBackend& operator=(const NvmlBackend&) = delete;

  std::string_view name() const noexcept override { return "nvml"; }
  // Loads the library and initialises NVML (once), then lists its GPUs as
  // "cuda:<NVML index>". A device whose handle or memory cannot be read is
  // skipped and named in the note. Throws Error after shutdown(), or when NVML
  // initialised but cannot count its devices.
  Discovery discover(const std::string& host) override;
  // Throws UnknownDeviceError for an id discover() did not report.
  Sample sample(const std::string& local_id) override;
  FieldAvailability available_fields(const std::string& local_id) const override;
  ImplausibleCounts implausible_readings() const noexcept override { return implausible_.snapshot(); }
  // nvmlShutdown exactly once (only if nvmlInit_v2 succeeded), then dlclose.
  // Idempotent. Throws Error if nvmlShutdown fails (the library is closed anyway).
  void shutdown() override;

  const std::string& library_path() const noexcept { return library_path_; }

 private:
  struct State;
  void shutdown_locked();

  // How to point at another library, for the note of an unusable one.
  std::string library_hint() const;

  std::string library_path_;
  bool from_environment_ = false;  // library_path_ came from GPUCLUSTER_NVML_LIBRARY
  mutable std::mutex mutex_;
  ImplausibleReadings implausible_;  // readings sample() dropped; atomic, read without the mutex
  std::unique_ptr<State> state_;
};

}  // namespace gpucluster
