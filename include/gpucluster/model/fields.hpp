#pragma once
// The field table: one row per telemetry quantity of a Sample. Validation,
// the JSON views, the wire protocol, the Prometheus exposition, window
// statistics and the Python columns are driven by these rows, so a new
// quantity is one row here (and a member of Sample) plus the backends' reads.
//
// Each quantity has one name everywhere inside the project (the C++ member,
// JSON views, Python, validation errors). The seed protocol's names (wire_name)
// and the Prometheus families exist only at those two boundaries.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/sample.hpp"

namespace gpucluster {

// Bounds a receiver may configure (the CLI's and Python's validation options).
struct ValidationLimits {
  double min_temperature_celsius = -273.15;  // absolute zero
  double max_temperature_celsius = 250.0;    // no silicon reports more and lives
  double max_power_watts = 100'000.0;        // far above any single accelerator
  double max_clock_mhz = 100'000.0;
  // A sample stamped further ahead of the receiver's clock than this is
  // rejected (future_timestamp): stored, it would make every true sample of
  // its device "out of order" until the receiver's clock caught up.
  std::chrono::nanoseconds max_future_skew = std::chrono::seconds{60};
};

enum class FieldKind : std::uint8_t {
  gauge,    // a level that goes up and down
  counter,  // only grows, except when the device resets it
};

// The quantities in table order; Quantity::count is the number of rows.
enum class Quantity : std::uint8_t {
  memory_used_bytes,
  memory_total_bytes,
  utilization_percent,
  power_watts,
  temperature_celsius,
  clock_mhz,
  fan_speed_percent,
  energy_joules,
  count,
};
inline constexpr std::size_t kQuantityCount = static_cast<std::size_t>(Quantity::count);

template <class Member>
struct FieldRow {
  Quantity quantity;
  Member Sample::*member;
  std::string_view name;  // the one name
  std::string_view unit;  // as people write it, for errors and help ("%", "W")
  FieldKind kind;
  bool required;         // memory is part of every sample; the rest may be unavailable
  bool read_by_backend;  // a device backend reads it (all do today; a derived quantity would not)
  // Valid range, inclusive unless min_exclusive. A limit pointer, when set,
  // takes the bound from the receiver's ValidationLimits instead.
  double min;
  double max;
  const double ValidationLimits::*min_limit = nullptr;
  const double ValidationLimits::*max_limit = nullptr;
  bool min_exclusive = false;
  // The seed protocol's name for it (docs/protocol.md), and whether the seed
  // has it (sent as null when unavailable) or it is our extension (left out).
  std::string_view wire_name{};
  bool in_seed_protocol = true;
  // A name the JSON views also printed before the table (deprecated alias).
  std::string_view json_alias{};
  // Prometheus: family name without the "gpucluster_" prefix (base units, a
  // counter ends in _total), its help text, and value × 10^scale in the
  // exposition (percent → ratio is -2, MHz → Hz is 6). Empty: not exported.
  std::string_view prometheus_family{};
  std::string_view prometheus_help{};
  int prometheus_scale_exponent = 0;

  constexpr std::size_t index() const noexcept { return static_cast<std::size_t>(quantity); }
  constexpr double min_of(const ValidationLimits& limits) const noexcept { return min_limit ? limits.*min_limit : min; }
  constexpr double max_of(const ValidationLimits& limits) const noexcept { return max_limit ? limits.*max_limit : max; }
};

// clang-format off
inline constexpr auto kSampleFields = std::make_tuple(
    FieldRow<std::int64_t>{.quantity = Quantity::memory_used_bytes, .member = &Sample::memory_used_bytes,
        .name = "memory_used_bytes", .unit = "bytes", .kind = FieldKind::gauge, .required = true,
        .read_by_backend = true, .min = 0, .max = 9.2e18,
        .wire_name = "memory_used_bytes",
        .prometheus_family = "memory_used_bytes", .prometheus_help = "Device memory in use, in bytes."},
    FieldRow<std::int64_t>{.quantity = Quantity::memory_total_bytes, .member = &Sample::memory_total_bytes,
        .name = "memory_total_bytes", .unit = "bytes", .kind = FieldKind::gauge, .required = true,
        .read_by_backend = true, .min = 0, .max = 9.2e18, .min_exclusive = true,
        .wire_name = "memory_total_bytes",
        .prometheus_family = "memory_total_bytes",
        .prometheus_help = "Device memory in total, in bytes (from static device information until sampled)."},
    FieldRow<PackedOptional<float>>{.quantity = Quantity::utilization_percent, .member = &Sample::utilization_percent,
        .name = "utilization_percent", .unit = "%", .kind = FieldKind::gauge, .required = false,
        .read_by_backend = true, .min = 0, .max = 100,
        .wire_name = "compute_utilization_percent", .json_alias = "compute_utilization_percent",
        .prometheus_family = "utilization_ratio", .prometheus_help = "Compute utilization, 0 to 1.",
        .prometheus_scale_exponent = -2},
    FieldRow<PackedOptional<float>>{.quantity = Quantity::power_watts, .member = &Sample::power_watts,
        .name = "power_watts", .unit = "W", .kind = FieldKind::gauge, .required = false,
        .read_by_backend = true, .min = 0, .max = 0, .max_limit = &ValidationLimits::max_power_watts,
        .wire_name = "power_watts",
        .prometheus_family = "power_watts", .prometheus_help = "Power draw, in watts."},
    FieldRow<PackedOptional<float>>{.quantity = Quantity::temperature_celsius, .member = &Sample::temperature_celsius,
        .name = "temperature_celsius", .unit = "degrees Celsius", .kind = FieldKind::gauge, .required = false,
        .read_by_backend = true, .min = 0, .max = 0, .min_limit = &ValidationLimits::min_temperature_celsius,
        .max_limit = &ValidationLimits::max_temperature_celsius,
        .wire_name = "temperature_celsius",
        .prometheus_family = "temperature_celsius", .prometheus_help = "Device temperature, in degrees Celsius."},
    FieldRow<PackedOptional<float>>{.quantity = Quantity::clock_mhz, .member = &Sample::clock_mhz,
        .name = "clock_mhz", .unit = "MHz", .kind = FieldKind::gauge, .required = false,
        .read_by_backend = true, .min = 0, .max = 0, .max_limit = &ValidationLimits::max_clock_mhz,
        .wire_name = "clock_rate_mhz", .json_alias = "clock_rate_mhz",
        .prometheus_family = "clock_hertz", .prometheus_help = "Compute (SM) clock, in hertz.",
        .prometheus_scale_exponent = 6},
    FieldRow<PackedOptional<float>>{.quantity = Quantity::fan_speed_percent, .member = &Sample::fan_speed_percent,
        .name = "fan_speed_percent", .unit = "%", .kind = FieldKind::gauge, .required = false,
        .read_by_backend = true, .min = 0, .max = 100,
        .wire_name = "fan_speed_percent", .in_seed_protocol = false,
        .prometheus_family = "fan_speed_ratio", .prometheus_help = "Fan speed, 0 to 1 of its maximum.",
        .prometheus_scale_exponent = -2},
    // 10^15 J: a 1 kW device running for 31,000 years.
    FieldRow<PackedOptional<double>>{.quantity = Quantity::energy_joules, .member = &Sample::energy_joules,
        .name = "energy_joules", .unit = "J", .kind = FieldKind::counter, .required = false,
        .read_by_backend = true, .min = 0, .max = 1e15,
        .wire_name = "energy_joules", .in_seed_protocol = false,
        .prometheus_family = "energy_joules_total",
        .prometheus_help = "Energy consumed since the driver started counting, in joules."});
// clang-format on

// Calls f(row) for every row, in table order.
template <class F>
constexpr void for_each_field(F&& f) {
  std::apply([&](const auto&... row) { (f(row), ...); }, kSampleFields);
}

namespace detail {
template <std::size_t... I>
constexpr bool rows_in_quantity_order(std::index_sequence<I...>) {
  return ((std::get<I>(kSampleFields).index() == I) && ...);
}
}  // namespace detail
static_assert(std::tuple_size_v<std::decay_t<decltype(kSampleFields)>> == kQuantityCount, "one row per quantity");
static_assert(detail::rows_in_quantity_order(std::make_index_sequence<kQuantityCount>{}),
              "rows in the order of enum Quantity");

// The row's name for a quantity (for messages and lookups).
constexpr std::string_view field_name(Quantity quantity) noexcept {
  std::string_view name;
  for_each_field([&](const auto& row) {
    if (row.quantity == quantity) name = row.name;
  });
  return name;
}

// A quantity's value in a sample as a double, or nothing when unavailable.
inline std::optional<double> field_value(const Sample& sample, Quantity quantity) noexcept {
  std::optional<double> value;
  for_each_field([&](const auto& row) {
    if (row.quantity != quantity) return;
    const auto& member = sample.*row.member;
    if constexpr (std::is_integral_v<std::decay_t<decltype(member)>>) {
      value = static_cast<double>(member);
    } else if (member) {
      value = static_cast<double>(*member);
    }
  });
  return value;
}

// Sets a quantity from a double (a float quantity is rounded to float; an
// integer one truncated: callers check the range first). For the column paths
// (Python batches), where a dispatch per value must be cheap.
namespace detail {
template <std::size_t I>
void set_row(Sample& sample, double value) noexcept {
  const auto& row = std::get<I>(kSampleFields);
  auto& member = sample.*row.member;
  using Member = std::decay_t<decltype(member)>;
  if constexpr (std::is_integral_v<Member>) {
    member = static_cast<Member>(value);
  } else {
    member = static_cast<typename Member::value_type>(value);
  }
}
template <std::size_t... I>
constexpr auto make_setters(std::index_sequence<I...>) {
  return std::array<void (*)(Sample&, double) noexcept, sizeof...(I)>{&set_row<I>...};
}
}  // namespace detail
inline constexpr auto kFieldSetters = detail::make_setters(std::make_index_sequence<kQuantityCount>{});
inline void set_field(Sample& sample, Quantity quantity, double value) noexcept {
  kFieldSetters[static_cast<std::size_t>(quantity)](sample, value);
}

// The quantities a sample may lack (every row not required), in table order:
// the optional columns of a Python batch.
inline constexpr std::size_t kOptionalQuantityCount = [] {
  std::size_t count = 0;
  for_each_field([&](const auto& row) { count += row.required ? 0 : 1; });
  return count;
}();
inline constexpr auto kOptionalQuantities = [] {
  std::array<Quantity, kOptionalQuantityCount> out{};
  std::size_t i = 0;
  for_each_field([&](const auto& row) {
    if (!row.required) out[i++] = row.quantity;
  });
  return out;
}();
// Whether the quantity is stored as a float (else a double or an integer).
constexpr bool is_float_field(Quantity quantity) noexcept {
  bool is_float = false;
  for_each_field([&](const auto& row) {
    using Member = std::decay_t<decltype(std::declval<Sample&>().*row.member)>;
    if (row.quantity == quantity) is_float = std::is_same_v<Member, PackedOptional<float>>;
  });
  return is_float;
}
// The row's range under the receiver's limits.
inline std::pair<double, double> field_range(Quantity quantity, const ValidationLimits& limits) noexcept {
  std::pair<double, double> range{0, 0};
  for_each_field([&](const auto& row) {
    if (row.quantity == quantity) range = {row.min_of(limits), row.max_of(limits)};
  });
  return range;
}

// The value as text for messages: the shortest decimal that round-trips, or
// "unavailable".
std::string format_field(const Sample& sample, Quantity quantity);

// The seed protocol's name of a field ("compute_utilization_percent" for
// "utilization_percent"); a name that is not a row's is returned as is.
constexpr std::string_view wire_field_name(std::string_view name) noexcept {
  std::string_view wire = name;
  for_each_field([&](const auto& row) {
    if (row.name == name) wire = row.wire_name;
  });
  return wire;
}
// The same error with its field named as the seed protocol names it: for the
// paths that speak the seed's names (the agent's protocol routes, fleet files,
// exo_compat), so an error names the key the caller sent.
ValidationError with_wire_field_name(const ValidationError& error);

}  // namespace gpucluster
