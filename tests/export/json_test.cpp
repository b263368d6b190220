#include "gpucluster/export/json.hpp"

#include <gtest/gtest.h>

namespace gpucluster {
namespace {

TEST(Json, UnavailableGaugesAreNullNeverZero) {
  Sample s;
  s.timestamp = timestamp_from_seconds(1700000000.5);
  s.memory_used_bytes = 1;
  s.memory_total_bytes = 2;
  s.utilization_percent = 0.0F;  // a real zero stays zero
  const nlohmann::json j = to_json(s);
  EXPECT_EQ(j["compute_utilization_percent"], 0.0);
  EXPECT_TRUE(j["power_watts"].is_null());
  EXPECT_TRUE(j["temperature_celsius"].is_null());
  EXPECT_TRUE(j["clock_rate_mhz"].is_null());
  EXPECT_DOUBLE_EQ(j["timestamp"].get<double>(), 1700000000.5);
}

TEST(Json, FloatsPrintAsTheirShortestDecimal) {
  Sample s;
  s.memory_total_bytes = 1;
  s.temperature_celsius = 41.3F;
  EXPECT_EQ(to_json(s)["temperature_celsius"].dump(), "41.3");
}

TEST(Json, DeviceUsesProtocolFieldNamesAndKeepsKind) {
  DeviceInfo info;
  info.key = {"lab", "rocm:0"};
  info.kind = DeviceKind::rocm;
  info.memory_total_bytes = 192ULL << 30;
  info.compute_units = 304;
  const nlohmann::json j = to_json(info);
  EXPECT_EQ(j["id"], "lab/rocm:0");
  EXPECT_EQ(j["device_id"], "rocm:0");
  EXPECT_EQ(j["host"], "lab");
  EXPECT_EQ(j["device_type"], "rocm");
  EXPECT_EQ(j["compute_units"], 304);
  EXPECT_TRUE(j["uuid"].is_null());
}

TEST(Json, AggregateWithoutReportsHasNullAverages) {
  ClusterAggregate a;
  a.device_count = 2;
  const nlohmann::json j = to_json(a);
  for (const char* key :
       {"device_count", "total_memory_bytes", "used_memory_bytes", "available_memory_bytes",
        "average_utilization_percent", "average_temperature_celsius", "total_power_watts", "timestamp"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_TRUE(j["average_utilization_percent"].is_null());
  EXPECT_TRUE(j["total_power_watts"].is_null());
}

TEST(Json, PlanShape) {
  Plan plan;
  plan.strategy = Strategy::capacity;
  plan.total_items = 5;
  plan.assignments = {{{"h", "a"}, 0, 3}, {{"h", "b"}, 3, 1}};
  plan.unassigned = 1;
  const nlohmann::json j = to_json(plan);
  EXPECT_EQ(j["strategy"], "capacity");
  EXPECT_EQ(j["assignments"][1]["device"], "h/b");
  EXPECT_EQ(j["assignments"][1]["start"], 3);
  EXPECT_EQ(j["unassigned"], 1);
}

TEST(Json, SelectionWithoutDeviceIsNull) {
  Selection none;
  none.reason = "no devices registered";
  EXPECT_TRUE(to_json(none)["device"].is_null());
}

Sample fan_and_energy_sample() {
  Sample s;
  s.timestamp = timestamp_from_seconds(1700000000.0);
  s.memory_used_bytes = 1;
  s.memory_total_bytes = 2;
  s.fan_speed_percent = 42.5F;
  s.energy_joules = 123456.0;
  return s;
}

TEST(Json, SampleCarriesFanSpeedAndEnergy) {
  const nlohmann::json j = to_json(fan_and_energy_sample());
  ASSERT_TRUE(j["fan_speed_percent"].is_number()) << j.dump();
  EXPECT_EQ(j["fan_speed_percent"].get<double>(), 42.5);
  ASSERT_TRUE(j["energy_joules"].is_number()) << j.dump();
  EXPECT_EQ(j["energy_joules"].get<double>(), 123456.0);
  EXPECT_EQ(j["fan_speed_percent"].dump(), "42.5");
  EXPECT_EQ(j["energy_joules"].dump(), "123456.0");
}

TEST(Json, SampleWithoutFanSpeedAndEnergyHasTheKeysAsNull) {
  Sample s = fan_and_energy_sample();
  s.fan_speed_percent.reset();
  s.energy_joules.reset();
  const nlohmann::json j = to_json(s);
  ASSERT_TRUE(j.contains("fan_speed_percent")) << j.dump();
  ASSERT_TRUE(j.contains("energy_joules")) << j.dump();
  EXPECT_TRUE(j["fan_speed_percent"].is_null()) << j.dump();
  EXPECT_TRUE(j["energy_joules"].is_null()) << j.dump();
  // A measured zero stays zero.
  s.fan_speed_percent = 0.0F;
  s.energy_joules = 0.0;
  const nlohmann::json zero = to_json(s);
  EXPECT_EQ(zero["fan_speed_percent"], 0.0);
  EXPECT_EQ(zero["energy_joules"], 0.0);
}

TEST(Json, DeviceStateCarriesFanSpeedAndEnergyInItsMetrics) {
  auto info = std::make_shared<DeviceInfo>();
  info->key = {"lab", "cuda:0"};
  info->kind = DeviceKind::cuda;
  info->memory_total_bytes = 2;
  DeviceState with{info, true, "", fan_and_energy_sample()};
  const nlohmann::json j = to_json(with, std::nullopt);
  EXPECT_EQ(j["metrics"]["fan_speed_percent"].get<double>(), 42.5) << j.dump();
  EXPECT_EQ(j["metrics"]["energy_joules"].get<double>(), 123456.0) << j.dump();

  DeviceState without = with;
  without.latest->fan_speed_percent.reset();
  without.latest->energy_joules.reset();
  const nlohmann::json none = devices_to_json({without}, {});
  ASSERT_EQ(none.size(), 1U);
  ASSERT_TRUE(none[0]["metrics"].contains("fan_speed_percent")) << none.dump();
  ASSERT_TRUE(none[0]["metrics"].contains("energy_joules")) << none.dump();
  EXPECT_TRUE(none[0]["metrics"]["fan_speed_percent"].is_null()) << none.dump();
  EXPECT_TRUE(none[0]["metrics"]["energy_joules"].is_null()) << none.dump();
}

}  // namespace
}  // namespace gpucluster
