#include "gpucluster/telemetry/duration_histogram.hpp"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

TEST(DurationHistogram, CountsAreCumulativeAndEndWithTheTotal) {
  DurationHistogram histogram({0.001, 0.01, 0.1});
  histogram.observe(microseconds(500));  // ≤ 1 ms
  histogram.observe(milliseconds(1));    // exactly on a bound: counted in it (le)
  histogram.observe(milliseconds(5));    // ≤ 10 ms
  histogram.observe(milliseconds(500));  // +Inf only
  const auto snapshot = histogram.snapshot();
  ASSERT_EQ(snapshot.cumulative_counts.size(), 4U);
  EXPECT_EQ(snapshot.cumulative_counts[0], 2U);
  EXPECT_EQ(snapshot.cumulative_counts[1], 3U);
  EXPECT_EQ(snapshot.cumulative_counts[2], 3U);
  EXPECT_EQ(snapshot.cumulative_counts[3], 4U);
  EXPECT_EQ(snapshot.count, 4U);
  EXPECT_NEAR(snapshot.sum_seconds, 0.5065, 1e-9);
}

TEST(DurationHistogram, BoundsMustIncrease) {
  EXPECT_THROW(DurationHistogram(std::vector<double>{0.1, 0.01}), InputError);
  EXPECT_THROW(DurationHistogram(std::vector<double>{0.1, 0.1}), InputError);
  EXPECT_NO_THROW(DurationHistogram(std::vector<double>{}));
}

TEST(DurationHistogram, NegativeDurationsCountWithoutLoweringTheSum) {
  DurationHistogram histogram({0.001});
  histogram.observe(std::chrono::nanoseconds(-5));
  const auto snapshot = histogram.snapshot();
  EXPECT_EQ(snapshot.count, 1U);
  EXPECT_EQ(snapshot.sum_seconds, 0.0);
}

TEST(DurationHistogram, ConcurrentObserversLoseNothing) {
  DurationHistogram histogram;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&histogram] {
      for (int i = 0; i < 10'000; ++i) histogram.observe(microseconds(i % 2000));
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(histogram.snapshot().count, 40'000U);
}

}  // namespace
}  // namespace gpucluster
