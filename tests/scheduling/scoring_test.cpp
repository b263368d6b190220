#include "gpucluster/scheduling/scoring.hpp"

#include <cmath>

#include <gtest/gtest.h>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {
namespace {

using std::chrono::seconds;

const Timestamp kNow{seconds{1'700'000'000}};
constexpr std::int64_t kGiB = 1LL << 30;

DeviceState device(const std::string& id, std::int64_t used_gib, std::int64_t total_gib, std::optional<float> util,
                   std::optional<float> temp, Timestamp at = kNow, const std::string& host = "h") {
  auto info = std::make_shared<DeviceInfo>();
  info->key = {host, id};
  info->kind = DeviceKind::cuda;
  info->memory_total_bytes = static_cast<std::uint64_t>(total_gib * kGiB);
  Sample s;
  s.timestamp = at;
  s.memory_used_bytes = used_gib * kGiB;
  s.memory_total_bytes = total_gib * kGiB;
  s.utilization_percent = util;
  s.temperature_celsius = temp;
  return DeviceState{std::move(info), true, {}, s};
}

TEST(ScoreSample, FollowsTheSeedFormula) {
  const DeviceState d = device("cuda:0", 40, 80, 50.0F, 60.0F);
  const ScoreBreakdown b = score_sample(*d.info, *d.latest, ScoringConfig{});
  EXPECT_DOUBLE_EQ(b.memory_free_ratio, 0.5);
  EXPECT_DOUBLE_EQ(*b.compute_idle_ratio, 0.5);
  EXPECT_DOUBLE_EQ(b.thermal_penalty, 1.0);
  EXPECT_DOUBLE_EQ(b.score, 0.6 * 0.5 + 0.4 * 0.5);
}

TEST(ScoreSample, ThermalPenaltyAboveThresholdWithFloor) {
  const ScoringConfig config;
  EXPECT_DOUBLE_EQ(score_sample(*device("a", 0, 80, 0.0F, 80.0F).info, *device("a", 0, 80, 0.0F, 80.0F).latest, config)
                       .thermal_penalty,
                   1.0);
  const DeviceState hot = device("a", 0, 80, 0.0F, 100.0F);
  const ScoreBreakdown b = score_sample(*hot.info, *hot.latest, config);
  EXPECT_DOUBLE_EQ(b.thermal_penalty, 0.5);  // 1 - (100 - 80) / 40
  EXPECT_DOUBLE_EQ(b.score, 0.5);
  const DeviceState very_hot = device("a", 0, 80, 0.0F, 130.0F);
  EXPECT_DOUBLE_EQ(score_sample(*very_hot.info, *very_hot.latest, config).thermal_penalty, 0.1);
}

TEST(ScoreSample, UsesTheDevicesOwnSlowdownTemperature) {
  DeviceState d = device("a", 0, 80, 0.0F, 70.0F);
  auto info = std::make_shared<DeviceInfo>(*d.info);
  info->temperature_slowdown_celsius = 60.0;
  const ScoreBreakdown b = score_sample(*info, *d.latest, ScoringConfig{});
  EXPECT_DOUBLE_EQ(b.thermal_threshold_celsius, 60.0);
  EXPECT_DOUBLE_EQ(b.thermal_penalty, 0.75);  // 1 - (70 - 60) / 40
}

TEST(ScoreSample, UnavailableUtilizationIsNotReadAsIdle) {
  const DeviceState d = device("a", 40, 80, std::nullopt, 50.0F);
  const ScoreBreakdown b = score_sample(*d.info, *d.latest, ScoringConfig{});
  EXPECT_FALSE(b.compute_idle_ratio.has_value());
  // Memory alone decides; reading "unavailable" as 0 % busy would give 0.7.
  EXPECT_DOUBLE_EQ(b.score, 0.5);
}

TEST(ScoreSample, UnavailableTemperatureIsNotReadAsCold) {
  const DeviceState d = device("a", 40, 80, 50.0F, std::nullopt);
  const ScoreBreakdown b = score_sample(*d.info, *d.latest, ScoringConfig{});
  EXPECT_FALSE(b.temperature_known);
  EXPECT_DOUBLE_EQ(b.thermal_penalty, 1.0);
}

TEST(ScoreSample, ConfigurableWeights) {
  ScoringConfig config;
  config.memory_weight = 1.0;
  config.compute_weight = 0.0;
  const DeviceState d = device("a", 20, 80, 100.0F, 40.0F);
  EXPECT_DOUBLE_EQ(score_sample(*d.info, *d.latest, config).score, 0.75);
}

TEST(ScoringConfig, RejectsBadValues) {
  ScoringConfig config;
  config.memory_weight = std::nan("");
  EXPECT_THROW(validate_scoring_config(config), InputError);
  config = {};
  config.memory_weight = 0;
  config.compute_weight = 0;
  EXPECT_THROW(validate_scoring_config(config), InputError);
  config = {};
  config.thermal_span_celsius = 0;
  EXPECT_THROW(validate_scoring_config(config), InputError);
  config = {};
  config.staleness = std::chrono::nanoseconds{0};
  EXPECT_THROW(validate_scoring_config(config), InputError);
  EXPECT_NO_THROW(validate_scoring_config(ScoringConfig{}));
}

TEST(SelectDevice, PicksTheHighestScore) {
  const std::vector<DeviceState> devices{device("cuda:0", 70, 80, 90.0F, 60.0F), device("cuda:1", 10, 80, 5.0F, 50.0F),
                                         device("cuda:2", 40, 80, 50.0F, 60.0F)};
  const Selection s = select_device(devices, ScoringConfig{}, kNow);
  ASSERT_TRUE(s.device.has_value());
  EXPECT_EQ(s.device->local_id, "cuda:1");
  EXPECT_GT(s.score, 0.8);
  EXPECT_NE(s.reason.find("3 eligible of 3"), std::string::npos) << s.reason;
}

TEST(SelectDevice, TiesBreakByIdDeterministically) {
  const std::vector<DeviceState> devices{device("cuda:3", 10, 80, 5.0F, 50.0F), device("cuda:1", 10, 80, 5.0F, 50.0F),
                                         device("cuda:2", 10, 80, 5.0F, 50.0F)};
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(select_device(devices, ScoringConfig{}, kNow).device->local_id, "cuda:1");
  }
}

TEST(SelectDevice, NeverPicksAStaleDevice) {
  const std::vector<DeviceState> devices{device("best-but-stale", 0, 80, 0.0F, 30.0F, kNow - seconds{11}),
                                         device("fresh", 60, 80, 80.0F, 70.0F, kNow - seconds{9})};
  const Selection s = select_device(devices, ScoringConfig{}, kNow);
  ASSERT_TRUE(s.device.has_value());
  EXPECT_EQ(s.device->local_id, "fresh");
}

TEST(SelectDevice, NeverPicksAnUnavailableDevice) {
  std::vector<DeviceState> devices{device("lost", 0, 80, 0.0F, 30.0F), device("ok", 60, 80, 80.0F, 70.0F)};
  devices[0].available = false;
  devices[0].unavailable_reason = "GPU is lost";
  EXPECT_EQ(select_device(devices, ScoringConfig{}, kNow).device->local_id, "ok");
}

TEST(SelectDevice, RespectsMinimumFreeMemory) {
  const std::vector<DeviceState> devices{device("small", 0, 16, 0.0F, 30.0F), device("big", 40, 80, 50.0F, 60.0F)};
  const Selection s = select_device(devices, ScoringConfig{}, kNow, 24 * kGiB);
  EXPECT_EQ(s.device->local_id, "big");
}

TEST(SelectDevice, ExplainsWhyNoneQualifies) {
  std::vector<DeviceState> devices{device("a", 70, 80, 0.0F, 30.0F),
                                   device("b", 0, 80, 0.0F, 30.0F, kNow - seconds{60}),
                                   device("c", 0, 80, 0.0F, 30.0F)};
  devices[2].available = false;
  const Selection s = select_device(devices, ScoringConfig{}, kNow, 20 * kGiB);
  EXPECT_FALSE(s.device.has_value());
  EXPECT_NE(s.reason.find("1 unavailable"), std::string::npos) << s.reason;
  EXPECT_NE(s.reason.find("1 stale"), std::string::npos) << s.reason;
  EXPECT_NE(s.reason.find("1 insufficient_memory"), std::string::npos) << s.reason;
  EXPECT_EQ(select_device({}, ScoringConfig{}, kNow).reason, "no devices registered");
}

TEST(SelectDevice, ZeroScoreIsNeverSelected) {
  // Full memory and 100 % busy: score 0, as in the seed (score > 0 required).
  const std::vector<DeviceState> devices{device("full", 80, 80, 100.0F, 30.0F)};
  EXPECT_FALSE(select_device(devices, ScoringConfig{}, kNow).device.has_value());
}

TEST(SelectDevice, SameLocalIdOnTwoHostsAreDistinct) {
  const std::vector<DeviceState> devices{device("cuda:0", 70, 80, 90.0F, 60.0F, kNow, "host-a"),
                                         device("cuda:0", 10, 80, 5.0F, 50.0F, kNow, "host-b")};
  const Selection s = select_device(devices, ScoringConfig{}, kNow);
  EXPECT_EQ(s.device->str(), "host-b/cuda:0");
}

TEST(RankDevices, OrdersEligibleByScoreThenTheRest) {
  std::vector<DeviceState> devices{device("a", 70, 80, 90.0F, 60.0F), device("b", 10, 80, 5.0F, 50.0F),
                                   device("c", 0, 80, 0.0F, 30.0F, kNow - seconds{60})};
  const std::vector<RankedDevice> ranked = rank_devices(devices, ScoringConfig{}, kNow);
  ASSERT_EQ(ranked.size(), 3U);
  EXPECT_EQ(ranked[0].key.local_id, "b");
  EXPECT_EQ(ranked[1].key.local_id, "a");
  EXPECT_EQ(ranked[2].key.local_id, "c");
  EXPECT_EQ(ranked[2].eligibility, Eligibility::stale);
  EXPECT_NE(ranked[2].reason.find("stale"), std::string::npos);
  ASSERT_TRUE(ranked[0].breakdown.has_value());
  EXPECT_GT(ranked[0].breakdown->score, ranked[1].breakdown->score);
}

TEST(RankDevices, DeviceWithoutSampleHasNoScore) {
  DeviceState d = device("a", 0, 80, 0.0F, 30.0F);
  d.latest.reset();
  const std::vector<RankedDevice> ranked = rank_devices(std::vector<DeviceState>{d}, ScoringConfig{}, kNow);
  EXPECT_EQ(ranked[0].eligibility, Eligibility::no_sample);
  EXPECT_FALSE(ranked[0].breakdown.has_value());
}

// Plans take what selection could take, whatever the score: the rule is scoring's.
TEST(Eligibility, PlansTakeEligibleAndZeroScoreDevicesOnly) {
  EXPECT_TRUE(can_take_plan_work(Eligibility::eligible));
  EXPECT_TRUE(can_take_plan_work(Eligibility::zero_score));
  EXPECT_FALSE(can_take_plan_work(Eligibility::unavailable));
  EXPECT_FALSE(can_take_plan_work(Eligibility::no_sample));
  EXPECT_FALSE(can_take_plan_work(Eligibility::stale));
  EXPECT_FALSE(can_take_plan_work(Eligibility::insufficient_memory));
}

}  // namespace
}  // namespace gpucluster
