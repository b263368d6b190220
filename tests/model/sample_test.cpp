#include "gpucluster/model/sample.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace gpucluster {
namespace {

TEST(SampleTimestamp, PythonSecondsMapToTheExactNanosecond) {
  EXPECT_EQ(timestamp_from_seconds(1717171721.25).time_since_epoch().count(), 1717171721250000000);
  EXPECT_EQ(timestamp_from_seconds(1717171720.5).time_since_epoch().count(), 1717171720500000000);
  EXPECT_EQ(timestamp_from_seconds(0.000000001).time_since_epoch().count(), 1);
}

TEST(SampleTimestamp, SecondsRoundTripWithoutDrift) {
  for (const double seconds : {1717171721.25, 1717171720.5, 1795753864.396683, 0.0, 12.125, -3.75}) {
    EXPECT_DOUBLE_EQ(to_seconds(timestamp_from_seconds(seconds)), seconds) << seconds;
  }
  EXPECT_EQ(to_seconds(timestamp_from_seconds(1717171721.25)), 1717171721.25);  // exactly, as JSON prints it
}

TEST(SampleTimestamp, NegativeSecondsBeforeTheEpoch) {
  EXPECT_EQ(timestamp_from_seconds(-1.5).time_since_epoch().count(), -1500000000);
  EXPECT_EQ(to_seconds(Timestamp{std::chrono::nanoseconds{-1500000000}}), -1.5);
}

TEST(SampleTimestamp, OutOfRangeIsClampedNotUndefined) {
  EXPECT_GT(timestamp_from_seconds(1e300).time_since_epoch().count(), 0);
  EXPECT_LT(timestamp_from_seconds(-1e300).time_since_epoch().count(), 0);
  EXPECT_EQ(timestamp_from_seconds(std::numeric_limits<double>::infinity()), timestamp_from_seconds(9.2e9));
  EXPECT_EQ(timestamp_from_seconds(std::nan("")).time_since_epoch().count(), 0);
}

TEST(SampleLayout, StaysSmallForTheHistory) {
  EXPECT_LE(sizeof(Sample), 56U);
}

}  // namespace
}  // namespace gpucluster
