// The agent's heartbeat ingest path without the network: parsing one
// heartbeat envelope (POST /v1/telemetry body, as bench/agent/heartbeat.lua
// sends it) and recording it in the manager. Budget: the whole request
// (these plus HTTP and the kernel) under ~50 µs of CPU, for ≥ 20,000
// heartbeats/s on a 2-core VM with wrk on the same cores (docs/load.md).

#include <string>

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include "gpucluster/node/manager.hpp"
#include "gpucluster/wire/protocol.hpp"

namespace {

std::string heartbeat_body(double timestamp) {
  return fmt::format(
      R"({{"type": "heartbeat", "version": "1.0", "timestamp": {0:.6f}, "payload": {{"hostname": "wrk-load", )"
      R"("device_id": "hb:0", "metrics": {{"device_id": "hb:0", "timestamp": {0:.6f}, )"
      R"("memory_used_bytes": 40000000000, "memory_total_bytes": 85520809984, "compute_utilization_percent": 42.5, )"
      R"("power_watts": 450.5, "temperature_celsius": 60.25, "clock_rate_mhz": 1980.0}}, "timestamp": {0:.6f}, )"
      R"("is_available": true, "error_message": null}}}})",
      timestamp);
}

void BM_ParseHeartbeat(benchmark::State& state) {
  const std::string body = heartbeat_body(1'717'171'720.5);
  for (auto _ : state) {
    auto message = gpucluster::agent::parse_telemetry_message(body);
    benchmark::DoNotOptimize(message);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_ParseHeartbeat);

// What the agent does with a parsed heartbeat: record its sample, set availability.
void BM_RecordHeartbeat(benchmark::State& state) {
  gpucluster::Manager manager;
  const std::string first = R"({"type": "device_registration", "version": "1.0", "timestamp": 1717171720.0,
    "payload": {"hostname": "wrk-load", "port": 9420, "device_id": "hb:0", "timestamp": 1717171720.0,
    "capabilities": {"device_id": "hb:0", "device_type": "cuda", "device_name": "Simulated", "vendor": "NVIDIA",
    "compute_units": 132, "memory_bandwidth_gbps": 3350.0, "max_memory_bytes": 85520809984,
    "driver_version": "535.129.03", "supports_fp64": true, "supports_tensor_cores": true}}})";
  const auto registration =
      std::get<gpucluster::agent::DeviceRegistration>(gpucluster::agent::parse_telemetry_message(first));
  manager.register_device(registration.info);
  const auto heartbeat =
      std::get<gpucluster::agent::Heartbeat>(gpucluster::agent::parse_telemetry_message(heartbeat_body(1.7e9)));
  gpucluster::Sample sample = *heartbeat.sample;
  const gpucluster::DeviceKey key = registration.info.key;
  for (auto _ : state) {
    sample.timestamp += std::chrono::microseconds{1};
    manager.record(key, sample);
    manager.set_availability(key, true, {});
  }
}
BENCHMARK(BM_RecordHeartbeat);

}  // namespace
