#include "gpucluster/node/backend_registry.hpp"

#include <algorithm>
#include <array>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "gpucluster/backends/host.hpp"
#include "gpucluster/backends/nvml.hpp"
#include "gpucluster/backends/rocm.hpp"
#include "gpucluster/backends/simulated.hpp"
#include "gpucluster/backends/sysfs.hpp"
#include "gpucluster/model/errors.hpp"

namespace gpucluster {
namespace {

enum Index : std::size_t { kNvml, kRocm, kSysfs, kHost, kSimulated, kCount };

constexpr std::array<BackendEntry, kCount> kRegistry{{
    {"nvml", "NVIDIA GPUs through NVML", NvmlBackend::kLibraryEnvironmentVariable, true},
    {"rocm", "AMD GPUs through ROCm SMI", RocmBackend::kLibraryEnvironmentVariable, true},
    {"sysfs", "AMD and Intel GPUs from /sys/class/drm", "GPUCLUSTER_SYSFS_ROOT", true},
    {"host", "this machine's CPU", "", true},
    {"simulated", "the devices of a fleet file", "", false},
}};

BackendPtr make_backend(std::size_t index, const BackendOptions& options) {
  switch (index) {
    case kNvml: return std::make_unique<NvmlBackend>(options.nvml_library);
    case kRocm: return std::make_unique<RocmBackend>(options.rocm_library);
    case kSysfs:
      return options.sysfs_root.empty() ? std::make_unique<SysfsBackend>()
                                        : std::make_unique<SysfsBackend>(options.sysfs_root);
    case kHost: return std::make_unique<HostBackend>();
    default: return std::make_unique<SimulatedBackend>(options.load_fleet());
  }
}

}  // namespace

std::span<const BackendEntry> backend_registry() noexcept {
  return kRegistry;
}

std::string backend_names() {
  std::vector<std::string_view> names;
  for (const BackendEntry& entry : kRegistry) names.emplace_back(entry.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

std::string backend_help() {
  std::vector<std::string> parts;
  for (const BackendEntry& entry : kRegistry) {
    parts.push_back(*entry.option != '\0' ? fmt::format("{} ({}; {})", entry.name, entry.description, entry.option)
                                          : fmt::format("{} ({})", entry.name, entry.description));
  }
  return fmt::format(
      "auto, {}, comma-separated, richest first: {}. auto = every backend that finds devices "
      "(and simulated when a fleet is given)",
      backend_names(), fmt::join(parts, ", "));
}

std::vector<std::string> split_backend_names(std::string_view text) {
  std::vector<std::string> parts;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    const std::size_t comma = text.find(',', begin);
    const std::size_t end = comma == std::string_view::npos ? text.size() : comma;
    if (end > begin) parts.emplace_back(text.substr(begin, end - begin));
    if (comma == std::string_view::npos) break;
    begin = comma + 1;
  }
  return parts;
}

BackendChoice choose_backends(std::span<const std::string> names, const BackendOptions& options) {
  const bool have_fleet = static_cast<bool>(options.load_fleet);
  std::array<bool, kCount> chosen{};
  std::array<bool, kCount> named{};
  const auto choose_auto = [&] {
    for (std::size_t i = 0; i < kCount; ++i) chosen[i] = chosen[i] || kRegistry[i].in_auto;
    chosen[kSimulated] = chosen[kSimulated] || have_fleet;
  };
  if (names.empty()) {
    if (have_fleet) {
      chosen[kSimulated] = named[kSimulated] = true;
    } else {
      choose_auto();
    }
  }
  for (const std::string& name : names) {
    if (name == "auto") {
      choose_auto();
      continue;
    }
    const auto it =
        std::find_if(kRegistry.begin(), kRegistry.end(), [&](const BackendEntry& entry) { return name == entry.name; });
    if (it == kRegistry.end()) {
      throw InputError(options.names_field, name, fmt::format("must be one of auto, {}", backend_names()));
    }
    const auto index = static_cast<std::size_t>(it - kRegistry.begin());
    chosen[index] = named[index] = true;
  }
  if (chosen[kSimulated] && !have_fleet) {
    throw InputError(options.names_field, "simulated", fmt::format("needs a fleet file: give {}", options.fleet_hint));
  }
  BackendChoice choice;
  for (std::size_t i = 0; i < kCount; ++i) {
    if (!chosen[i]) continue;
    choice.backends.push_back(make_backend(i, options));
    if (named[i]) choice.required.emplace_back(kRegistry[i].name);
  }
  return choice;
}

}  // namespace gpucluster
