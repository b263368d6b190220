#include "gpucluster/model/units.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <string>

#include <fmt/format.h>

#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/time.hpp"

namespace gpucluster {

namespace {

struct Split {
  double number;
  std::string_view suffix;
};

// Leading decimal number, then a unit suffix.
Split split_number(std::string_view text, std::string_view field, const char* rule) {
  const std::string owned(text);
  const char* begin = owned.c_str();
  const char* end = begin + owned.size();
  double number = 0;
  const auto [ptr, ec] = std::from_chars(begin, end, number);
  if (ec != std::errc{} || ptr == begin || !std::isfinite(number) || number < 0) {
    throw InputError(std::string(field), fmt::format("\"{}\"", text), rule);
  }
  return Split{number, text.substr(static_cast<std::size_t>(ptr - begin))};
}

}  // namespace

std::uint64_t parse_size_bytes(std::string_view text, std::string_view field) {
  constexpr const char* kRule = "must be a non-negative size such as 8GiB, 8G, 512MiB or 8000000000";
  const Split split = split_number(text, field, kRule);
  struct Unit {
    std::string_view suffix;
    double multiplier;
  };
  static constexpr std::array<Unit, 14> kUnits{{{"", 1},
                                                {"B", 1},
                                                {"K", 1e3},
                                                {"KB", 1e3},
                                                {"KiB", 1024.0},
                                                {"M", 1e6},
                                                {"MB", 1e6},
                                                {"MiB", 1048576.0},
                                                {"G", 1e9},
                                                {"GB", 1e9},
                                                {"GiB", 1073741824.0},
                                                {"T", 1e12},
                                                {"TB", 1e12},
                                                {"TiB", 1099511627776.0}}};
  for (const Unit& unit : kUnits) {
    if (split.suffix != unit.suffix) continue;
    const double bytes = split.number * unit.multiplier;
    // 2^64 and above do not fit (and converting them would be undefined); below, round() is exact.
    if (bytes >= 18446744073709551616.0) throw InputError(std::string(field), std::string(text), "size too large");
    return static_cast<std::uint64_t>(std::round(bytes));
  }
  throw InputError(std::string(field), fmt::format("\"{}\"", text), kRule);
}

std::chrono::nanoseconds parse_duration(std::string_view text, std::string_view field) {
  constexpr const char* kRule = "must be a non-negative duration such as 1s, 250ms, 2m or 1h";
  const Split split = split_number(text, field, kRule);
  double seconds_per_unit = 0;
  if (split.suffix.empty() || split.suffix == "s") {
    seconds_per_unit = 1;
  } else if (split.suffix == "ms") {
    seconds_per_unit = 1e-3;
  } else if (split.suffix == "us") {
    seconds_per_unit = 1e-6;
  } else if (split.suffix == "m" || split.suffix == "min") {
    seconds_per_unit = 60;
  } else if (split.suffix == "h") {
    seconds_per_unit = 3600;
  } else {
    throw InputError(std::string(field), fmt::format("\"{}\"", text), kRule);
  }
  const double seconds = split.number * seconds_per_unit;
  if (seconds > kMaxDurationSeconds) throw InputError(std::string(field), std::string(text), "duration too long");
  return duration_from_seconds(seconds);
}

std::string format_bytes(std::uint64_t bytes) {
  static constexpr std::array<const char*, 5> kUnits{"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < kUnits.size()) {
    value /= 1024.0;
    ++unit;
  }
  if (unit == 0) return fmt::format("{} B", bytes);
  return fmt::format("{:.1f} {}", value, kUnits[unit]);
}

}  // namespace gpucluster
