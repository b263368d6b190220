// Device selection among many devices.

#include <random>

#include <benchmark/benchmark.h>

#include "gpucluster/node/manager.hpp"
#include "gpucluster/scheduling/scoring.hpp"

namespace {

const gpucluster::Timestamp kNow{std::chrono::seconds{1'700'000'000}};

std::vector<gpucluster::DeviceState> make_states(std::int64_t count) {
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<float> util(0, 100), temp(30, 95);
  std::vector<gpucluster::DeviceState> states;
  for (std::int64_t i = 0; i < count; ++i) {
    auto info = std::make_shared<gpucluster::DeviceInfo>();
    info->key = {"host-" + std::to_string(i / 8), "cuda:" + std::to_string(i % 8)};
    info->kind = gpucluster::DeviceKind::cuda;
    info->memory_total_bytes = 80ULL << 30;
    gpucluster::Sample sample;
    sample.timestamp = kNow;
    sample.memory_total_bytes = 80LL << 30;
    sample.memory_used_bytes = static_cast<std::int64_t>(rng() % (80ULL << 30));
    sample.utilization_percent = util(rng);
    sample.temperature_celsius = temp(rng);
    states.push_back({std::move(info), true, {}, sample});
  }
  return states;
}

// The scheduler's hot path: score every device's latest sample, pick the best.
void BM_SelectDevice(benchmark::State& state) {
  const auto states = make_states(state.range(0));
  const gpucluster::ScoringConfig config;
  for (auto _ : state) {
    auto selection = gpucluster::select_device(states, config, kNow, 8ULL << 30);
    benchmark::DoNotOptimize(selection);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_SelectDevice)->Arg(1)->Arg(64)->Arg(10000);

// Full ranking with breakdowns (sorts and copies keys: slower, for --explain and the API).
void BM_RankDevices(benchmark::State& state) {
  const auto states = make_states(state.range(0));
  const gpucluster::ScoringConfig config;
  for (auto _ : state) benchmark::DoNotOptimize(gpucluster::rank_devices(states, config, kNow));
}
BENCHMARK(BM_RankDevices)->Arg(64)->Arg(10000);

// Through the manager: snapshot of the store (locks each device) + selection.
void BM_ManagerSelect(benchmark::State& state) {
  gpucluster::ManagerConfig config;
  config.clock = [] { return kNow; };
  gpucluster::Manager manager(config);
  for (const auto& device : make_states(state.range(0))) {
    manager.register_device(*device.info);
    manager.record(device.info->key, *device.latest);
  }
  for (auto _ : state) benchmark::DoNotOptimize(manager.select(8ULL << 30));
}
BENCHMARK(BM_ManagerSelect)->Arg(64)->Arg(10000);

}  // namespace
