#pragma once
// The project's one time model: timestamps are nanoseconds since the epoch;
// seconds (a double, as Python's time.time() gives them and as the wire
// protocol carries them) convert to and from them only here, and every path
// that accepts seconds from outside (HTTP, the wire protocol, Python) accepts
// the same range, [kMinTimestampSeconds, kMaxTimestampSeconds].

#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

namespace gpucluster {

using Timestamp = std::chrono::sys_time<std::chrono::nanoseconds>;

// Accepted timestamps: 1970-01-01 to 2100-01-01 (4102444800 s). Within it a
// double is finer than a microsecond and the nanoseconds fit 64 bits with room
// for differences.
inline constexpr double kMinTimestampSeconds = 0.0;
inline constexpr double kMaxTimestampSeconds = 4102444800.0;
// The rule an accepted timestamp meets, as errors quote it.
inline constexpr std::string_view kTimestampSecondsRule =
    "must be seconds since the epoch within [0, 4102444800] (1970 to 2100)";

// False for NaN and infinities too.
constexpr bool timestamp_seconds_in_range(double seconds) noexcept {
  return seconds >= kMinTimestampSeconds && seconds <= kMaxTimestampSeconds;
}

// Seconds → the nanosecond nearest to the double's exact value (halves up,
// towards later). The whole seconds and the fraction are converted apart, and the
// rounding of fraction·10⁹ is decided on the exact product (std::fma), so
// 1717171721.25 is exactly …721 s + 250 ms and no input is off by one. The
// conversion itself accepts anything: values past ±9.2e9 s are clamped and NaN
// is 0, never undefined behaviour; callers check the accepted range first
// (timestamp_seconds_in_range, or checked_timestamp_from_seconds).
inline Timestamp timestamp_from_seconds(double seconds_since_epoch) noexcept {
  constexpr double kLimit = 9.2e9;  // kMaxDurationSeconds, declared below
  constexpr double kNanosecondsPerSecond = 1e9;
  const double clamped =
      seconds_since_epoch > kLimit ? kLimit : (seconds_since_epoch < -kLimit ? -kLimit : seconds_since_epoch);
  if (std::isnan(clamped)) return Timestamp{};
  const double whole = std::floor(clamped);
  const double fraction = clamped - whole;  // exact, in [0, 1)
  // floor(fraction·10⁹) of the exact product, then round half up on it.
  double nanoseconds = std::floor(fraction * kNanosecondsPerSecond);
  if (std::fma(fraction, kNanosecondsPerSecond, -nanoseconds) < 0) nanoseconds -= 1;
  if (std::fma(fraction, kNanosecondsPerSecond, -(nanoseconds + 1)) >= 0) nanoseconds += 1;
  if (std::fma(fraction, kNanosecondsPerSecond, -(nanoseconds + 0.5)) >= 0) nanoseconds += 1;
  return Timestamp{std::chrono::nanoseconds{static_cast<std::int64_t>(whole) * 1'000'000'000 +
                                            static_cast<std::int64_t>(nanoseconds)}};
}

// The conversion with the range check: throws InputError(field, value,
// kTimestampSecondsRule) for NaN, infinities and values outside the range.
Timestamp checked_timestamp_from_seconds(double seconds_since_epoch, std::string_view field);

// t/10⁹ seconds, as the nearest double; within the accepted range the double
// that timestamp_from_seconds maps back to exactly t whenever one exists, so
// seconds written out (JSON, the wire, Python) read back to the same
// nanosecond.
inline double to_seconds(Timestamp t) noexcept {
  const std::int64_t target = t.time_since_epoch().count();
  std::int64_t whole = target / 1'000'000'000;
  std::int64_t fraction = target % 1'000'000'000;
  if (fraction < 0) {
    fraction += 1'000'000'000;
    --whole;
  }
  double seconds = static_cast<double>(whole) + static_cast<double>(fraction) / 1e9;
  if (!timestamp_seconds_in_range(seconds)) return seconds;
  // timestamp_from_seconds is monotonic, so a few steps from t/10⁹ find the double.
  const auto at = [](double s) { return timestamp_from_seconds(s).time_since_epoch().count(); };
  constexpr double kUp = kMaxTimestampSeconds + 1;
  for (int step = 0; step < 16 && at(seconds) < target; ++step) seconds = std::nextafter(seconds, kUp);
  for (int step = 0; step < 16 && at(seconds) > target; ++step) seconds = std::nextafter(seconds, -1.0);
  // A time that no double reaches (finer than the doubles near it): the nearest one.
  const double above = std::nextafter(seconds, kUp);
  if (at(seconds) != target && above <= kMaxTimestampSeconds && at(above) - target < target - at(seconds)) {
    return above;
  }
  return seconds;
}

// The longest duration given in seconds: past it the nanoseconds do not fit 64 bits.
inline constexpr double kMaxDurationSeconds = 9.2e9;

// A duration given in seconds (an option such as a staleness bound), with the
// same exact rounding and clamping; callers check the range they allow.
inline std::chrono::nanoseconds duration_from_seconds(double seconds) noexcept {
  return timestamp_from_seconds(seconds).time_since_epoch();
}

inline Timestamp now_timestamp() {
  return std::chrono::time_point_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now());
}

}  // namespace gpucluster
