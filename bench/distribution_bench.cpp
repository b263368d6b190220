// Plan computation cost: O(devices), independent of the item count (10^7 here).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gpucluster/scheduling/distribution.hpp"

namespace {

using gpucluster::DeviceKey;
using gpucluster::MemoryDevice;
using gpucluster::WeightedDevice;

constexpr std::uint64_t kItems = 10'000'000;
constexpr std::uint64_t kGiB = std::uint64_t{1} << 30;

DeviceKey key(std::size_t i) {
  return {"node" + std::to_string(i / 8), "cuda:" + std::to_string(i % 8)};
}

std::vector<DeviceKey> keys(std::size_t count) {
  std::vector<DeviceKey> out;
  for (std::size_t i = 0; i < count; ++i) out.push_back(key(i));
  return out;
}

// Non-integral capacities (TFLOPS-like, 1..100), a few idle devices at 0.
std::vector<WeightedDevice> weighted(std::size_t count, bool integral) {
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> tflops(1.0, 100.0);
  std::vector<WeightedDevice> out;
  for (std::size_t i = 0; i < count; ++i) {
    const double weight = (i % 17 == 3) ? 0.0 : tflops(rng);
    out.push_back({key(i), integral ? static_cast<double>(static_cast<std::uint64_t>(weight)) : weight});
  }
  return out;
}

// Free memory between 1 and 80 GiB, byte-granular.
std::vector<MemoryDevice> with_memory(std::size_t count) {
  std::mt19937_64 rng(7);
  std::vector<MemoryDevice> out;
  for (std::size_t i = 0; i < count; ++i) out.push_back({key(i), kGiB + rng() % (79 * kGiB)});
  return out;
}

void BM_PlanCapacity(benchmark::State& state) {
  const auto devices = weighted(static_cast<std::size_t>(state.range(0)), false);
  for (auto _ : state) {
    gpucluster::Plan plan = gpucluster::plan_capacity(devices, kItems);
    benchmark::DoNotOptimize(plan);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));  // devices per second
}
BENCHMARK(BM_PlanCapacity)->Arg(64)->Arg(1000);

void BM_PlanCapacityIntegral(benchmark::State& state) {
  const auto devices = weighted(static_cast<std::size_t>(state.range(0)), true);
  for (auto _ : state) {
    gpucluster::Plan plan = gpucluster::plan_capacity(devices, kItems);
    benchmark::DoNotOptimize(plan);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PlanCapacityIntegral)->Arg(1000);

// A cap below the largest quotas, so water-filling does real work.
void BM_PlanCapacityCapped(benchmark::State& state) {
  const auto devices = weighted(static_cast<std::size_t>(state.range(0)), false);
  const std::uint64_t cap = kItems / static_cast<std::uint64_t>(state.range(0)) * 3 / 2;
  for (auto _ : state) {
    gpucluster::Plan plan = gpucluster::plan_capacity(devices, kItems, cap);
    benchmark::DoNotOptimize(plan);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PlanCapacityCapped)->Arg(1000);

// Capacities spread over 1e-300..1e300 (and a few subnormals): too wide for
// 128-bit integers, so the exact multi-limb path, not the fast one.
void BM_PlanCapacityWideSpread(benchmark::State& state) {
  std::mt19937_64 rng(12);
  std::uniform_real_distribution<double> exponent(-300.0, 300.0);
  std::vector<WeightedDevice> devices;
  for (std::size_t i = 0; i < static_cast<std::size_t>(state.range(0)); ++i) {
    devices.push_back({key(i), i % 97 == 5 ? 1e-320 : std::pow(10.0, exponent(rng))});
  }
  for (auto _ : state) {
    gpucluster::Plan plan = gpucluster::plan_capacity(devices, kItems);
    benchmark::DoNotOptimize(plan);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PlanCapacityWideSpread)->Arg(1000);

void BM_PlanUniform(benchmark::State& state) {
  const auto devices = keys(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    gpucluster::Plan plan = gpucluster::plan_uniform(devices, kItems);
    benchmark::DoNotOptimize(plan);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PlanUniform)->Arg(64)->Arg(1000);

// An 80-layer model of 256 MiB layers: the proportional split fits as is.
void BM_PlanMemory(benchmark::State& state) {
  const auto devices = with_memory(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    gpucluster::Plan plan = gpucluster::plan_memory(devices, 80, kGiB / 4);
    benchmark::DoNotOptimize(plan);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PlanMemory)->Arg(64)->Arg(1000);

// 10^4 layers filling ~95% of free memory: rounding overflows some devices,
// so the split is rebalanced under per-device caps.
void BM_PlanMemoryRebalance(benchmark::State& state) {
  const auto devices = with_memory(static_cast<std::size_t>(state.range(0)));
  std::uint64_t total_free = 0;
  for (const MemoryDevice& d : devices) total_free += d.free_memory_bytes;
  const std::uint64_t layers = 10'000;
  const std::uint64_t layer_bytes = total_free / layers * 95 / 100;
  for (auto _ : state) {
    gpucluster::Plan plan = gpucluster::plan_memory(devices, layers, layer_bytes);
    benchmark::DoNotOptimize(plan);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PlanMemoryRebalance)->Arg(1000);

}  // namespace
