// model/time.hpp, the one time model: seconds → nanoseconds is exact (checked
// against an integer reference), the range is one constant, and the wire
// protocol's decoder gives the same nanoseconds as the core for the same float
// (Python's paths are checked by tests/python/test_time_model.py).
#include "gpucluster/model/time.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <variant>
#include <vector>

#include <fmt/format.h>

#include "gpucluster/model/errors.hpp"
#include "gpucluster/wire/protocol.hpp"

namespace gpucluster {
namespace {

__extension__ using Int128 = __int128;

// The nanosecond nearest to the double's exact value (halves up), in integers:
// seconds = mantissa · 2^exponent exactly.
std::int64_t reference_nanoseconds(double seconds) {
  int exponent = 0;
  const double fraction = std::frexp(seconds, &exponent);  // seconds = fraction · 2^exponent, |fraction| in [0.5, 1)
  const auto mantissa = static_cast<Int128>(std::ldexp(fraction, 53));
  exponent -= 53;
  Int128 scaled = mantissa * 1'000'000'000;
  if (exponent >= 0) return static_cast<std::int64_t>(scaled << exponent);
  if (exponent < -120) return 0;
  const Int128 unit = static_cast<Int128>(1) << -exponent;
  const Int128 floor = scaled >= 0 ? scaled / unit : -((-scaled + unit - 1) / unit);
  const Int128 remainder = scaled - floor * unit;
  return static_cast<std::int64_t>(2 * remainder >= unit ? floor + 1 : floor);
}

std::int64_t core_nanoseconds(double seconds) {
  return timestamp_from_seconds(seconds).time_since_epoch().count();
}

std::int64_t protocol_nanoseconds(double seconds) {
  // The shortest decimal that reads back as the same double, as Python's json.dumps writes it.
  const std::string text = fmt::format("{}", seconds);
  const std::string body =
      R"({"type": "metrics", "version": "1.0", "timestamp": 1.0, "payload": {"device_id": "cuda:0", )"
      R"("timestamp": )" +
      text + R"(, "memory_used_bytes": 1, "memory_total_bytes": 2}})";
  const agent::TelemetryMessage message = agent::parse_telemetry_message(body);
  return std::get<agent::MetricsReport>(message).sample.timestamp.time_since_epoch().count();
}

// Awkward floats: quarter seconds, decimal fractions a double cannot hold,
// the range's ends, values whose fraction·10⁹ lands near a half.
std::vector<double> awkward_seconds() {
  std::vector<double> values{0.0,
                             5e-324,
                             1e-9,
                             5e-10,
                             1.5e-9,
                             0.1,
                             0.3,
                             0.7,
                             1.0000000005,
                             0.7637746185,
                             0.4954350875,
                             12.125,
                             1000000.0000000005,
                             1717171721.25,
                             1717171721.1,
                             1717171721.123456789,
                             1795753864.396683,
                             kMaxTimestampSeconds,
                             std::nextafter(kMaxTimestampSeconds, 0.0)};
  for (double s = 0.0000000012345; s < 4e9; s = s * 7.3 + 0.1) values.push_back(s);
  return values;
}

TEST(TimeModel, SecondsToNanosecondsIsExact) {
  for (const double seconds : awkward_seconds()) {
    EXPECT_EQ(core_nanoseconds(seconds), reference_nanoseconds(seconds)) << fmt::format("{}", seconds);
  }
  // Below 2^20 s a double's fraction has more than 32 bits, so fraction·10⁹ is
  // not exact in a double: 0.7637746185 is 763774618.49999995 ns, which the
  // product rounded to …618.5 and the former llround(fraction·1e9) made …619.
  EXPECT_EQ(core_nanoseconds(0.7637746185), 763774618);
  EXPECT_EQ(core_nanoseconds(0.0938595865), 93859586);
}

TEST(TimeModel, ProtocolDecoderGivesTheCoreNanoseconds) {
  for (const double seconds : awkward_seconds()) {
    EXPECT_EQ(protocol_nanoseconds(seconds), core_nanoseconds(seconds)) << fmt::format("{}", seconds);
  }
}

TEST(TimeModel, ToSecondsReadsBackToTheSameNanosecond) {
  for (const double seconds : awkward_seconds()) {
    const Timestamp t = timestamp_from_seconds(seconds);
    EXPECT_EQ(timestamp_from_seconds(to_seconds(t)), t) << fmt::format("{}", seconds);
  }
  EXPECT_EQ(to_seconds(timestamp_from_seconds(1717171721.25)), 1717171721.25);
}

TEST(TimeModel, OneRangeForEveryPath) {
  const double largest = kMaxTimestampSeconds;
  const double smallest_rejected = std::nextafter(kMaxTimestampSeconds, 1e300);
  EXPECT_TRUE(timestamp_seconds_in_range(0.0));
  EXPECT_TRUE(timestamp_seconds_in_range(largest));
  EXPECT_FALSE(timestamp_seconds_in_range(smallest_rejected));
  EXPECT_FALSE(timestamp_seconds_in_range(-5e-324));
  EXPECT_FALSE(timestamp_seconds_in_range(std::nan("")));
  EXPECT_FALSE(timestamp_seconds_in_range(std::numeric_limits<double>::infinity()));

  EXPECT_EQ(checked_timestamp_from_seconds(largest, "timestamp").time_since_epoch().count(), 4102444800000000000);
  try {
    checked_timestamp_from_seconds(smallest_rejected, "metrics.timestamp");
    ADD_FAILURE() << "accepted";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "metrics.timestamp");
    EXPECT_EQ(e.value(), "4102444800.0000005");
    EXPECT_EQ(e.rule(), kTimestampSecondsRule);
  }

  EXPECT_EQ(protocol_nanoseconds(largest), 4102444800000000000);
  try {
    protocol_nanoseconds(smallest_rejected);
    ADD_FAILURE() << "accepted";
  } catch (const agent::ProtocolError& e) {
    EXPECT_EQ(e.kind(), agent::ProtocolError::Kind::invalid);
    EXPECT_EQ(e.field(), "payload.timestamp");
    EXPECT_EQ(e.rule(), kTimestampSecondsRule);
  }
}

TEST(TimeModel, DurationsUseTheSameConversion) {
  EXPECT_EQ(duration_from_seconds(0.0000000005).count(), 1);
  EXPECT_EQ(duration_from_seconds(1.25).count(), 1250000000);
  EXPECT_EQ(duration_from_seconds(-1.5).count(), -1500000000);
}

}  // namespace
}  // namespace gpucluster
