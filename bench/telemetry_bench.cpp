// Telemetry hot paths: recording one validated sample, and history memory.

#include <malloc.h>

#include <vector>

#include <benchmark/benchmark.h>

#include "gpucluster/node/manager.hpp"
#include "gpucluster/telemetry/store.hpp"

namespace {

// Heap bytes in use (glibc), malloc's own overhead included.
std::size_t heap_in_use_bytes() {
  return mallinfo2().uordblks;
}

gpucluster::DeviceInfo make_device(int index) {
  gpucluster::DeviceInfo info;
  info.key = {"bench-host", "cuda:" + std::to_string(index)};
  info.name = "Bench GPU";
  info.vendor = "nvidia";
  info.kind = gpucluster::DeviceKind::cuda;
  info.backend = "bench";
  info.memory_total_bytes = 80ULL << 30;
  return info;
}

gpucluster::Sample make_sample(std::int64_t step) {
  gpucluster::Sample sample;
  sample.timestamp = gpucluster::Timestamp{std::chrono::nanoseconds{1'700'000'000'000'000'000 + step}};
  sample.memory_total_bytes = 80LL << 30;
  sample.memory_used_bytes = (step % 64) << 30;
  sample.utilization_percent = static_cast<float>(step % 100);
  sample.power_watts = 300.0F;
  sample.temperature_celsius = 60.0F;
  sample.clock_mhz = 1980.0F;
  return sample;
}

// One validated sample into a full history (steady state: overwrites the oldest).
void BM_RecordSample(benchmark::State& state) {
  gpucluster::TelemetryStore store(gpucluster::HistoryLimits{100, std::nullopt, std::nullopt});
  const auto handle = store.add_device(make_device(0));
  std::int64_t step = 0;
  for (int i = 0; i < 200; ++i) store.record(handle, make_sample(step++));
  gpucluster::Sample sample = make_sample(step);
  for (auto _ : state) {
    sample.timestamp += std::chrono::nanoseconds{1};
    store.record(handle, sample);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RecordSample);

// The same through the manager's public API by device key (map lookup, in-flight count).
void BM_ManagerRecordByKey(benchmark::State& state) {
  gpucluster::Manager manager;
  for (int i = 0; i < state.range(0); ++i) manager.register_device(make_device(i));
  const gpucluster::DeviceKey key{"bench-host", "cuda:0"};
  gpucluster::Sample sample = make_sample(0);
  for (auto _ : state) {
    sample.timestamp += std::chrono::nanoseconds{1};
    manager.record(key, sample);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ManagerRecordByKey)->Arg(8)->Arg(1024);

// Heap bytes per stored sample: register devices, fill their histories, divide
// the growth of the heap by the samples held (device bookkeeping included).
void BM_HistoryBytesPerSample(benchmark::State& state) {
  const int devices = 100;
  const std::size_t capacity = static_cast<std::size_t>(state.range(0));
  double bytes_per_sample = 0;
  for (auto _ : state) {
    const std::size_t before = heap_in_use_bytes();
    {
      gpucluster::TelemetryStore store(gpucluster::HistoryLimits{capacity, std::nullopt, std::nullopt});
      for (int d = 0; d < devices; ++d) {
        const auto handle = store.add_device(make_device(d));
        for (std::size_t s = 0; s < capacity; ++s) store.record(handle, make_sample(static_cast<std::int64_t>(s)));
      }
      const std::size_t growth = heap_in_use_bytes() - before;
      bytes_per_sample =
          static_cast<double>(growth) / static_cast<double>(static_cast<std::size_t>(devices) * capacity);
    }
  }
  state.counters["bytes_per_sample"] = bytes_per_sample;
  state.counters["sizeof_sample"] = sizeof(gpucluster::Sample);
}
BENCHMARK(BM_HistoryBytesPerSample)->Arg(100)->Arg(1000)->Iterations(3);

// Heap bytes per registered device before any sample arrives (its slot, static
// info and map entry; the history grows with the samples), and once it holds
// one sample (the first chunk of its history).
void BM_DeviceBytesWithoutAndWithOneSample(benchmark::State& state) {
  const int devices = 1000;
  double empty_bytes = 0, one_sample_bytes = 0;
  for (auto _ : state) {
    const std::size_t before = heap_in_use_bytes();
    {
      gpucluster::TelemetryStore store(gpucluster::HistoryLimits{10'000, std::nullopt, std::nullopt});
      std::vector<gpucluster::TelemetryStore::Handle> handles;
      handles.reserve(devices);
      const std::size_t reserved = heap_in_use_bytes();
      for (int d = 0; d < devices; ++d) handles.push_back(store.add_device(make_device(d)));
      const std::size_t registered = heap_in_use_bytes();
      for (const auto& handle : handles) store.record(handle, make_sample(0));
      const std::size_t sampled = heap_in_use_bytes();
      empty_bytes = static_cast<double>(registered - reserved) / devices;
      one_sample_bytes = static_cast<double>(sampled - reserved) / devices;
    }
    benchmark::DoNotOptimize(before);
  }
  state.counters["bytes_per_device_empty"] = empty_bytes;
  state.counters["bytes_per_device_one_sample"] = one_sample_bytes;
}
BENCHMARK(BM_DeviceBytesWithoutAndWithOneSample)->Iterations(3);

}  // namespace
