// The pusher's outbox (src/cluster/outbox.cpp) and its retry delays
// (src/cluster/backoff.hpp): bounded per device, oldest dropped first and
// counted per link, delivered in order, cursors moved only by an ack.
#include "cluster/outbox.hpp"

#include <chrono>
#include <random>

#include <gtest/gtest.h>

#include "cluster/backoff.hpp"

namespace gpucluster {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::vector<Sample> samples_at(int from, int to) {
  std::vector<Sample> out;
  for (int i = from; i <= to; ++i) {
    Sample sample;
    sample.timestamp = Timestamp{} + seconds{i};
    out.push_back(sample);
  }
  return out;
}

std::vector<int> seconds_of(const std::vector<Sample>& samples) {
  std::vector<int> out;
  for (const Sample& s : samples) out.push_back(static_cast<int>(s.timestamp.time_since_epoch() / seconds{1}));
  return out;
}

TEST(Outbox, DeliversInOrderAndOnlyTheAckMovesTheCursor) {
  Outbox outbox(10, 1);
  outbox.append("cuda:0", samples_at(1, 3));
  outbox.append("cuda:0", samples_at(2, 4));  // overlapping reads add only what is newer
  Outbox::Batch first = outbox.take(0, 600, 8192);
  EXPECT_EQ(seconds_of(first.samples["cuda:0"]), (std::vector<int>{1, 2, 3, 4}));
  // Not acknowledged (the report failed): the same samples again.
  EXPECT_EQ(seconds_of(outbox.take(0, 600, 8192).samples["cuda:0"]), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(outbox.backlog(0), 4U);
  outbox.acknowledge(0, first);
  EXPECT_EQ(outbox.backlog(0), 0U);
  EXPECT_TRUE(outbox.take(0, 600, 8192).samples.empty());
  outbox.append("cuda:0", samples_at(5, 5));
  EXPECT_EQ(seconds_of(outbox.take(0, 600, 8192).samples["cuda:0"]), (std::vector<int>{5}));
}

TEST(Outbox, FullRingDropsTheOldestAndTheLinkCountsTheGap) {
  Outbox outbox(3, 2);
  outbox.append("cuda:0", samples_at(1, 5));  // 1 and 2 pushed out
  Outbox::Batch batch = outbox.take(0, 600, 8192);
  EXPECT_EQ(seconds_of(batch.samples["cuda:0"]), (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(batch.dropped["cuda:0"], 2U);
  outbox.acknowledge(0, batch);
  EXPECT_EQ(outbox.dropped(0), 2U);
  EXPECT_EQ(outbox.dropped(1), 0U);  // counted when that link's report is acknowledged
  EXPECT_EQ(outbox.backlog(1), 3U);  // the other link still has all three to deliver
}

TEST(Outbox, BatchesRespectTheLimitsAndSayMoreIsWaiting) {
  Outbox outbox(100, 1);
  outbox.append("a", samples_at(1, 10));
  outbox.append("b", samples_at(1, 10));
  Outbox::Batch batch = outbox.take(0, 4, 6);
  EXPECT_EQ(batch.samples["a"].size(), 4U);
  EXPECT_EQ(batch.samples["b"].size(), 2U);
  EXPECT_EQ(batch.count, 6U);
  EXPECT_TRUE(batch.more);
  outbox.acknowledge(0, batch);
  EXPECT_EQ(outbox.backlog(0), 14U);
  EXPECT_EQ(seconds_of(outbox.take(0, 4, 6).samples["a"]), (std::vector<int>{5, 6, 7, 8}));
}

TEST(Backoff, FullJitterStaysUnderTheDoublingCeilingAndTheCap) {
  const BackoffPolicy policy{milliseconds{100}, milliseconds{1000}};
  EXPECT_EQ(backoff_ceiling(policy, 0), milliseconds{100});
  EXPECT_EQ(backoff_ceiling(policy, 1), milliseconds{200});
  EXPECT_EQ(backoff_ceiling(policy, 3), milliseconds{800});
  EXPECT_EQ(backoff_ceiling(policy, 4), milliseconds{1000});
  EXPECT_EQ(backoff_ceiling(policy, 4'000'000'000U), milliseconds{1000});  // no overflow
  std::mt19937 random(7);
  milliseconds low{1000}, high{0};
  for (int i = 0; i < 2000; ++i) {
    const milliseconds delay = backoff_delay(policy, 10, random);
    ASSERT_LE(delay, milliseconds{1000});
    low = std::min(low, delay);
    high = std::max(high, delay);
  }
  EXPECT_LT(low, milliseconds{100});  // spread over the whole range, not clustered at the cap
  EXPECT_GT(high, milliseconds{900});
  // A Retry-After from the server is a floor.
  EXPECT_GE(backoff_delay(policy, 0, random, milliseconds{5000}), milliseconds{5000});
}

}  // namespace
}  // namespace gpucluster
