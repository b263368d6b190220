// The sampler's own cost per device per tick, above the vendor library's:
// one pass over 8 devices read directly from the backend, against the same
// pass through the manager (worker thread hand-off, validation, store, locks).
// Uses the fake NVML library the tests build (libfake_nvml.so in the build dir;
// GPUCLUSTER_NVML_LIBRARY overrides).

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include "gpucluster/backends/nvml.hpp"
#include "gpucluster/node/manager.hpp"

namespace {

constexpr int kDevices = 8;

// Points the fake library at a scenario of 8 H100s; false if the fake is not built.
bool prepare_fake_nvml() {
  const std::string library = std::getenv("GPUCLUSTER_NVML_LIBRARY") != nullptr
                                  ? std::getenv("GPUCLUSTER_NVML_LIBRARY")
                                  : std::string(GPUCLUSTER_BUILD_DIR) + "/libfake_nvml.so";
  if (!std::filesystem::exists(library)) return false;
  nlohmann::json devices = nlohmann::json::array();
  for (int i = 0; i < kDevices; ++i) {
    devices.push_back({{"name", "NVIDIA H100 80GB HBM3"},
                       {"uuid", "GPU-" + std::to_string(i)},
                       {"memory_total", 85899345920LL},
                       {"memory_used", 1073741824LL * i},
                       {"utilization_gpu", 10 * i},
                       {"utilization_memory", 5},
                       {"power_mw", 250500},
                       {"temperature", 40 + i},
                       {"sm_clock", 1755}});
  }
  const auto scenario = std::filesystem::temp_directory_path() / "gpucluster-sampler-bench.json";
  std::ofstream(scenario) << nlohmann::json{{"devices", devices}}.dump();
  ::setenv("GPUCLUSTER_NVML_LIBRARY", library.c_str(), 1);
  ::setenv("FAKE_NVML_SCENARIO", scenario.c_str(), 1);
  ::unsetenv("FAKE_NVML_CALL_LOG");
  return true;
}

void BM_NvmlBackendPassDirect(benchmark::State& state) {
  if (!prepare_fake_nvml()) return state.SkipWithError("libfake_nvml.so not built (build the tests)");
  gpucluster::NvmlBackend backend;
  const auto discovery = backend.discover("bench");
  for (auto _ : state) {
    for (const auto& device : discovery.devices) benchmark::DoNotOptimize(backend.sample(device.key.local_id));
  }
  state.counters["ns_per_device"] = benchmark::Counter(static_cast<double>(state.iterations() * kDevices),
                                                       benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  backend.shutdown();
}
BENCHMARK(BM_NvmlBackendPassDirect)->UseRealTime();

void BM_ManagerPassOverFakeNvml(benchmark::State& state) {
  if (!prepare_fake_nvml()) return state.SkipWithError("libfake_nvml.so not built (build the tests)");
  std::vector<gpucluster::BackendPtr> backends;
  backends.push_back(std::make_unique<gpucluster::NvmlBackend>());
  gpucluster::ManagerConfig config;
  config.host = "bench";
  gpucluster::Manager manager(config, std::move(backends));
  manager.start(/*background_sampling=*/false);
  for (auto _ : state) manager.sample_now();
  state.counters["ns_per_device"] = benchmark::Counter(static_cast<double>(state.iterations() * kDevices),
                                                       benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  manager.shutdown();
}
BENCHMARK(BM_ManagerPassOverFakeNvml)->UseRealTime();

}  // namespace
