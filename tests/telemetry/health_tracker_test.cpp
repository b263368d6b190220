#include "gpucluster/telemetry/health_tracker.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace gpucluster {
namespace {

using std::chrono::minutes;
using std::chrono::seconds;

const Timestamp t0 = Timestamp{} + std::chrono::hours{24 * 365 * 55};

HealthSignal signal(HealthSource source, std::uint32_t code, Timestamp at) {
  return HealthSignal{.source = source, .code = code, .at = at, .detail = {}};
}

TEST(HealthTracker, UnwatchedIsUnknownAndWatchedIsPass) {
  HealthTracker tracker;
  const HealthPolicy policy;
  EXPECT_EQ(tracker.evaluate(t0, policy).state, HealthState::unknown);
  tracker.set_watched(true);
  EXPECT_EQ(tracker.evaluate(t0, policy).state, HealthState::pass);
  EXPECT_EQ(tracker.evaluate(t0, policy).since, t0);
}

TEST(HealthTracker, TheWorstReasonWinsAndSignalsOfOneKindAreCounted) {
  HealthTracker tracker;
  tracker.set_watched(true);
  const HealthPolicy policy;
  tracker.observe(signal(HealthSource::xid, 74, t0), policy);               // warn
  tracker.observe(signal(HealthSource::xid, 74, t0 + seconds{5}), policy);  // the same reason
  tracker.observe(signal(HealthSource::pcie, 1, t0 + seconds{6}), policy);  // warn
  DeviceHealth health = tracker.evaluate(t0 + seconds{10}, policy);
  EXPECT_EQ(health.state, HealthState::warn);
  EXPECT_EQ(health.since, t0);
  ASSERT_EQ(health.reasons.size(), 2U);
  EXPECT_EQ(health.reasons[0].source, HealthSource::pcie);  // equal states: the most recent first
  EXPECT_EQ(health.reasons[1].count, 2U);
  EXPECT_EQ(health.reasons[1].first_seen, t0);
  EXPECT_EQ(health.reasons[1].last_seen, t0 + seconds{5});
  tracker.observe(signal(HealthSource::xid, 48, t0 + seconds{20}), policy);  // fail
  health = tracker.evaluate(t0 + seconds{21}, policy);
  EXPECT_EQ(health.state, HealthState::fail);
  EXPECT_EQ(health.since, t0 + seconds{20});
  EXPECT_EQ(health.reasons.front().code, 48U);
  EXPECT_EQ(health.reasons.front().action, SuggestedAction::reset_gpu);
}

TEST(HealthTracker, AWarnIsHeldThenPasses) {
  HealthTracker tracker;
  tracker.set_watched(true);
  const HealthPolicy policy;  // warn_hold 5 min
  tracker.observe(signal(HealthSource::xid, 74, t0), policy);
  EXPECT_EQ(tracker.evaluate(t0 + minutes{5}, policy).state, HealthState::warn);  // exactly the hold: still
  const DeviceHealth& passed = tracker.evaluate(t0 + minutes{5} + std::chrono::nanoseconds{1}, policy);
  EXPECT_EQ(passed.state, HealthState::pass);
  EXPECT_TRUE(passed.reasons.empty());
  EXPECT_EQ(passed.since, t0 + minutes{5} + std::chrono::nanoseconds{1});
}

TEST(HealthTracker, AFailIsStickyUntilCleared) {
  HealthTracker tracker;
  tracker.set_watched(true);
  const HealthPolicy policy;
  tracker.observe(signal(HealthSource::xid, 79, t0), policy);
  EXPECT_EQ(tracker.evaluate(t0 + std::chrono::hours{48}, policy).state, HealthState::fail);
  tracker.clear(t0 + std::chrono::hours{49});
  const DeviceHealth& cleared = tracker.evaluate(t0 + std::chrono::hours{49}, policy);
  EXPECT_EQ(cleared.state, HealthState::pass);
  EXPECT_TRUE(cleared.reasons.empty());
  EXPECT_EQ(tracker.xid_counts().at(79), 1U);  // a counter: clearing keeps it
}

TEST(HealthTracker, ALostDeviceThatAnswersAgainIsAStickyFail) {
  HealthTracker tracker;
  tracker.set_watched(true);
  const HealthPolicy policy;
  tracker.observe(signal(HealthSource::lost, health_code::kNotAnswering, t0), policy);
  EXPECT_EQ(tracker.evaluate(t0 + seconds{1}, policy).state, HealthState::lost);
  tracker.answered(t0 + seconds{30});
  const DeviceHealth& health = tracker.evaluate(t0 + std::chrono::hours{1}, policy);
  EXPECT_EQ(health.state, HealthState::fail);
  ASSERT_EQ(health.reasons.size(), 1U);
  EXPECT_TRUE(health.reasons[0].sticky);
  EXPECT_EQ(health.reasons[0].action, SuggestedAction::reboot);
  EXPECT_NE(health.reasons[0].message.find("answers again"), std::string::npos);
}

TEST(HealthTracker, IgnoredXidsAreCountedButChangeNothing) {
  HealthTracker tracker;
  tracker.set_watched(true);
  const HealthPolicy policy;
  for (int i = 0; i < 3; ++i) tracker.observe(signal(HealthSource::xid, 13, t0 + seconds{i}), policy);
  const DeviceHealth& health = tracker.evaluate(t0 + seconds{3}, policy);
  EXPECT_EQ(health.state, HealthState::pass);
  EXPECT_TRUE(health.reasons.empty());
  EXPECT_EQ(tracker.xid_counts().at(13), 3U);
}

TEST(HealthTracker, DistinctReasonsAreBoundedAndStickyOnesAreKept) {
  HealthTracker tracker;
  tracker.set_watched(true);
  const HealthPolicy policy;
  tracker.observe(signal(HealthSource::xid, 79, t0), policy);  // sticky fail, the oldest
  for (std::uint32_t code = 5000; code < 5000 + 2 * HealthTracker::kMaxReasons; ++code) {
    tracker.observe(signal(HealthSource::xid, code, t0 + seconds{code - 4999}), policy);  // unknown: warn
  }
  const DeviceHealth& health = tracker.evaluate(t0 + seconds{100}, policy);
  EXPECT_EQ(health.reasons.size(), HealthTracker::kMaxReasons);
  EXPECT_EQ(health.state, HealthState::fail);
  EXPECT_EQ(health.reasons.front().code, 79U);
  // 64 warns came; the newest 31 stay beside the fail: the oldest of them is the 34th.
  EXPECT_EQ(health.reasons.back().code, 5000U + HealthTracker::kMaxReasons + 1);
}

}  // namespace
}  // namespace gpucluster
