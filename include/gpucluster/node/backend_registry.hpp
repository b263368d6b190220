#pragma once
// The backend registry: every device source by name, richest first, what
// `auto` means, and each backend's options. The CLI (--backend) and Python
// (Manager(backends="auto")) both choose backends through it.
//
// Richest first matters: one GPU seen by two backends (rocm and sysfs) is kept
// by the earlier one (the manager de-duplicates by PCI bus id).

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gpucluster/backends/backend.hpp"
#include "gpucluster/backends/fleet.hpp"

namespace gpucluster {

struct BackendEntry {
  const char* name;
  const char* description;  // one line, for help texts
  const char* option;       // the option that points it elsewhere (an environment variable or a file), or ""
  bool in_auto;             // chosen by `auto` (which also takes simulated when a fleet is given)
};

// Every backend, richest first.
std::span<const BackendEntry> backend_registry() noexcept;
// "nvml, rocm, sysfs, host, simulated": the names, richest first.
std::string backend_names();
// "auto, nvml, rocm, sysfs, host, simulated, comma-separated: ..." with each
// backend's description and option, for a --backend help text.
std::string backend_help();

// Options of the backends a choice may create.
struct BackendOptions {
  std::string nvml_library;  // empty: $GPUCLUSTER_NVML_LIBRARY, else the driver's libnvidia-ml.so.1
  std::string rocm_library;  // empty: $GPUCLUSTER_ROCM_SMI_LIBRARY, else librocm_smi64.so
  std::string sysfs_root;    // empty: $GPUCLUSTER_SYSFS_ROOT, else /sys
  // The simulated backend's devices, loaded only when it is chosen; empty: no fleet
  // (then `auto` leaves simulated out and naming it is an error).
  std::function<Fleet()> load_fleet;
  // How the caller spells its options, for error messages.
  std::string names_field = "backends";
  std::string fleet_hint = "fleet=PATH";
};

// The backends to start, richest first, and those named explicitly (not
// through `auto`): an explicit backend that cannot be used is an error
// (ManagerConfig::required_backends), not "no devices".
struct BackendChoice {
  std::vector<BackendPtr> backends;
  std::vector<std::string> required;
};

// `names`: backend names and/or "auto" (each at most once in the result).
// None: `auto`, or simulated alone when a fleet is given. Throws InputError
// (field options.names_field) for an unknown name, or simulated without a fleet.
BackendChoice choose_backends(std::span<const std::string> names, const BackendOptions& options);
// "nvml,host" → {"nvml", "host"} (empty parts are skipped).
std::vector<std::string> split_backend_names(std::string_view text);

}  // namespace gpucluster
