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
#include "gpucluster/wire/report.hpp"

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

// The coordinator's side of a joined agent's report (POST /v2/report): a
// steady-state report of 8 devices, one sample each with every quantity, as
// bench/cluster_sim.cpp sends them at 1,000 nodes; and the ack it answers.
gpucluster::agent::Report steady_report() {
  using gpucluster::Timestamp;
  gpucluster::agent::Report report;
  report.node = {.id = "3f1c2a9b-0c1d-4e5f-8a9b-0c1d2e3f4a5b",
                 .incarnation = 1,
                 .name = "sim-0001",
                 .agent_version = "0.1.0",
                 .url = std::nullopt,
                 .port = 9420};
  report.seq = 1234;
  report.sent_at = gpucluster::timestamp_from_seconds(1'717'171'721.25);
  report.clock = gpucluster::agent::ClockExchange{
      .t0 = report.sent_at, .r = report.sent_at, .t = report.sent_at, .t1 = report.sent_at};
  report.inventory_version = 1;
  for (int device = 0; device < 8; ++device) {
    gpucluster::Sample sample;
    sample.timestamp = gpucluster::timestamp_from_seconds(1'717'171'721.0 + device * 0.001);
    sample.memory_used_bytes = 40'000'000'000 + device;
    sample.memory_total_bytes = 85'520'809'984;
    sample.utilization_percent = 42.5f;
    sample.power_watts = 450.5f;
    sample.temperature_celsius = 60.25f;
    sample.clock_mhz = 1980.0f;
    sample.fan_speed_percent = 33.0f;
    sample.energy_joules = 123'456'789.5;
    report.samples["cuda:" + std::to_string(device)] = {sample};
  }
  return report;
}

void BM_ParseReport(benchmark::State& state) {
  const std::string body = gpucluster::agent::encode_report(steady_report());
  for (auto _ : state) {
    auto report = gpucluster::agent::parse_report(body);
    benchmark::DoNotOptimize(report);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_ParseReport);

void BM_EncodeReportAck(benchmark::State& state) {
  gpucluster::agent::ReportAck ack;
  ack.ack = 1234;
  ack.coordinator = "9d0e7c4a-1b2f-4c3d-8e5f-6a7b8c9d0e1f";
  ack.epoch = "b2c4d6e8-f0a1-4b3c-9d5e-7f8091a2b3c4";
  ack.host = "sim-0001";
  ack.state = "alive";
  ack.accepted = 8;
  ack.received_at = gpucluster::timestamp_from_seconds(1'717'171'721.2507);
  ack.replied_at = gpucluster::timestamp_from_seconds(1'717'171'721.2509);
  for (auto _ : state) {
    auto text = gpucluster::agent::encode_report_ack(ack);
    benchmark::DoNotOptimize(text);
  }
}
BENCHMARK(BM_EncodeReportAck);

}  // namespace
