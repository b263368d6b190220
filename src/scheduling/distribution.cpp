#include "gpucluster/scheduling/distribution.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>

#include <fmt/format.h>

namespace gpucluster {

namespace {

using u64 = std::uint64_t;
__extension__ typedef unsigned __int128 u128;  // __extension__: GCC/Clang builtin, silences -Wpedantic

constexpr u64 kU64Max = std::numeric_limits<u64>::max();

u64 saturate_u64(u128 value) noexcept {
  return value > kU64Max ? kU64Max : static_cast<u64>(value);
}

// ---------------------------------------------------------------------------
// Validation

// `name_of(i)` is only called on failure, so the happy path formats nothing.
template <class NameOf>
void validate_weights(std::span<const double> weights, NameOf name_of) {
  bool any_positive = false;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    const double weight = weights[i];
    if (!std::isfinite(weight)) throw PlanError(name_of(i), fmt::format("{}", weight), "must be a finite number");
    if (weight < 0) throw PlanError(name_of(i), fmt::format("{}", weight), "must be >= 0");
    any_positive = any_positive || weight > 0;
  }
  if (!any_positive) {
    throw PlanError("weights", "0", "their total must be > 0: at least one device needs a positive weight");
  }
}

void require_devices(std::size_t count) {
  if (count == 0) throw PlanError("devices", "[]", "at least one device is needed to plan work");
  if (count > std::numeric_limits<std::uint32_t>::max()) {
    throw PlanError("devices", std::to_string(count), "at most 2^32-1 devices per plan");
  }
}

u64 load_bytes(const char* data, std::size_t count) noexcept {
  u64 value = 0;
  std::memcpy(&value, data, count);
  return value;
}

// The last 1..7 bytes without a variable-length memcpy (overlapping loads).
u64 load_tail(const char* data, std::size_t size) noexcept {
  if (size >= 4) return (load_bytes(data, 4) << 32) | load_bytes(data + size - 4, 4);
  if (size == 0) return 0;
  const auto byte = [&](std::size_t i) { return static_cast<u64>(static_cast<unsigned char>(data[i])); };
  return (byte(0) << 16) | (byte(size / 2) << 8) | byte(size - 1);
}

// A cheap hash for the duplicate check only (8 bytes per step; device ids are
// short): std::hash costs about twice as much and dominated plan time.
u64 hash_text(u64 hash, std::string_view text) noexcept {
  constexpr u64 kMultiplier = 0x9e3779b97f4a7c15ULL;
  for (; text.size() >= 8; text.remove_prefix(8)) {
    hash = (hash ^ load_bytes(text.data(), 8)) * kMultiplier;
    hash ^= hash >> 32;
  }
  hash = (hash ^ load_tail(text.data(), text.size()) ^ (static_cast<u64>(text.size()) << 56)) * kMultiplier;
  return hash ^ (hash >> 29);
}

u64 hash_key(const DeviceKey& key) noexcept {
  return hash_text(hash_text(0x243f6a8885a308d3ULL, key.host), key.local_id);
}

// Open addressing over hashes: O(devices), no per-key allocation. A plan that
// lists a device twice would hand it two ranges, so it is rejected.
template <class T, class KeyOf>
void require_distinct(std::span<const T> devices, KeyOf key_of) {
  if (devices.size() < 2) return;
  int slot_bits = 4;
  while ((std::size_t{1} << slot_bits) < devices.size() * 2) ++slot_bits;
  std::vector<std::uint32_t> table(std::size_t{1} << slot_bits, 0);  // index + 1; 0 = empty
  const u64 mask = table.size() - 1;
  const auto hashes = std::make_unique_for_overwrite<u64[]>(devices.size());
  for (std::size_t i = 0; i < devices.size(); ++i) {
    const DeviceKey& key = key_of(devices[i]);
    const u64 hash = hash_key(key);
    hashes[i] = hash;
    u64 slot = hash >> (64 - slot_bits);  // the multiply mixes into the high bits; the low ones cluster
    for (; table[slot] != 0; slot = (slot + 1) & mask) {
      const std::size_t other = table[slot] - 1;
      if (hashes[other] == hash && key_of(devices[other]) == key) {
        throw PlanError("devices", key.str(), fmt::format("must be distinct: listed at positions {} and {}", other, i));
      }
    }
    table[slot] = static_cast<std::uint32_t>(i + 1);
  }
}

// ---------------------------------------------------------------------------
// Largest-remainder apportionment

// Adds `delta` (+1 or -1) to the `amount` candidates that `before` ranks first;
// `before` is a strict total order (index breaks ties), so the choice is stable.
// O(candidates) per round via nth_element; more than one round only happens
// when floating rounding leaves more leftovers than candidates.
template <class Before>
void adjust_first(std::vector<std::size_t>& candidates, u64 amount, std::span<u64> counts, int delta, Before before) {
  while (amount > 0 && !candidates.empty()) {
    if (amount >= candidates.size()) {
      for (const std::size_t i : candidates) counts[i] = delta > 0 ? counts[i] + 1 : counts[i] - 1;
      amount -= candidates.size();
      if (delta < 0) std::erase_if(candidates, [&](std::size_t i) { return counts[i] == 0; });
      continue;
    }
    const auto nth = candidates.begin() + static_cast<std::ptrdiff_t>(amount);
    std::nth_element(candidates.begin(), nth, candidates.end(), before);
    for (auto it = candidates.begin(); it != nth; ++it) counts[*it] = delta > 0 ? counts[*it] + 1 : counts[*it] - 1;
    amount = 0;
  }
}

double to_double(u128 value) noexcept {
  return static_cast<double>(static_cast<u64>(value >> 64)) * 0x1p64 + static_cast<double>(static_cast<u64>(value));
}

// value/divisor rounded down a little further than the floating error can
// reach (relative error < 2^-50), so quotient*divisor never passes value.
u64 estimate_below(u128 value, double inverse_divisor, u64 max_quotient) noexcept {
  const double estimate = to_double(value) * inverse_divisor * (1 - 0x1p-50) - 1;
  if (!(estimate > 0)) return 0;
  if (estimate >= static_cast<double>(max_quotient)) return max_quotient;
  return static_cast<u64>(estimate);
}

struct DivMod {
  u64 quotient = 0;
  u128 remainder = 0;
};

// floor(dividend / divisor) for a quotient known to be ≤ max_quotient: a double
// estimate from below, a second one on the remainder only for quotients past
// ~2^49, then at most a few exact steps. libgcc's 128-bit division costs
// several times more and dominated plan time.
DivMod divide(u128 dividend, u128 divisor, double inverse_divisor, u64 max_quotient) noexcept {
  u64 quotient = estimate_below(dividend, inverse_divisor, max_quotient);
  u128 remainder = dividend - static_cast<u128>(quotient) * divisor;
  if ((remainder >> 2) >= divisor) {
    const u64 more = estimate_below(remainder, inverse_divisor, max_quotient - quotient);
    quotient += more;
    remainder -= static_cast<u128>(more) * divisor;
  }
  while (remainder >= divisor) {
    ++quotient;
    remainder -= divisor;
  }
  return DivMod{quotient, remainder};
}

int bit_width(u128 value) noexcept {
  const auto high = static_cast<u64>(value >> 64);
  return high != 0 ? 64 + static_cast<int>(std::bit_width(high))
                   : static_cast<int>(std::bit_width(static_cast<u64>(value)));
}

// One more item each to the `amount` indices with the largest remainders,
// ties to the earlier index (amount < the number of non-zero remainders).
// Remainders are bucketed by their top bits, which is monotone in the
// remainder, so every bucket above the boundary one wins outright and only the
// boundary bucket needs exact comparisons: O(d) with few of nth_element's
// unpredictable branches, which dominated plan time.
void give_to_largest_remainders(std::span<const u128> remainders, u128 total, u64 amount, std::span<u64> counts) {
  const int bucket_bits = std::clamp(static_cast<int>(std::bit_width(remainders.size())), 4, 16);
  const int shift = std::max(0, bit_width(total) - bucket_bits);  // remainder < total
  std::vector<std::uint32_t> histogram(std::size_t{1} << bucket_bits, 0);
  std::vector<std::uint32_t> buckets(remainders.size());  // computed once: the u128 shift is not free
  for (std::size_t i = 0; i < remainders.size(); ++i) {
    buckets[i] = static_cast<std::uint32_t>(remainders[i] >> shift);
    ++histogram[buckets[i]];
  }
  std::size_t boundary = histogram.size() - 1;
  u64 above = 0;  // indices in buckets above the boundary
  while (boundary > 0 && above + histogram[boundary] < amount) above += histogram[boundary--];
  std::vector<std::size_t> boundary_indices;
  for (std::size_t i = 0; i < remainders.size(); ++i) {
    const std::size_t bucket = buckets[i];
    if (bucket > boundary) {
      ++counts[i];
    } else if (bucket == boundary && remainders[i] > 0) {
      boundary_indices.push_back(i);
    }
  }
  adjust_first(boundary_indices, amount - above, counts, +1, [&](std::size_t a, std::size_t b) {
    return remainders[a] != remainders[b] ? remainders[a] > remainders[b] : a < b;
  });
}

// Exact: quota_i = n*w_i/S with every n*w_i and S below 2^128 (guaranteed by
// exact_weights or by u64 inputs), so floors and remainders are exact and
// integral quotas are hit exactly.
void apportion_into(std::span<const u128> weights, u64 n, std::span<u64> counts) {
  u128 total = 0;
  for (const u128 weight : weights) total += weight;
  const double inverse_total = 1.0 / to_double(total);
  std::vector<u128> remainders(weights.size());
  u64 assigned = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    const DivMod quota = divide(n * weights[i], total, inverse_total, n);
    counts[i] = quota.quotient;
    remainders[i] = quota.remainder;
    assigned += quota.quotient;
  }
  const u64 leftover = n - assigned;  // Σremainders/total < the number of non-zero remainders
  if (leftover > 0) give_to_largest_remainders(remainders, total, leftover, counts);
}

// Floating: quotas in long double (64-bit mantissa, so relative error ~1e-19),
// floors, leftovers by largest fractional part, then an exact fix-up of the total.
void apportion_into(std::span<const double> weights, u64 n, std::span<u64> counts) {
  long double total = 0;
  for (const double weight : weights) total += weight;
  const long double items = static_cast<long double>(n);
  const long double per_weight = items / total;
  std::vector<long double> fractions(weights.size(), 0);
  u128 assigned = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    const long double quota = weights[i] * per_weight;
    if (quota >= items) {
      counts[i] = n;
    } else {
      const long double floor = std::floor(quota);
      counts[i] = static_cast<u64>(floor);
      fractions[i] = quota - floor;
    }
    assigned += counts[i];
  }
  std::vector<std::size_t> candidates;
  candidates.reserve(weights.size());
  if (assigned > n) {  // rounding pushed floors over n (only for n near 2^64): take back the smallest fractions
    for (std::size_t i = 0; i < weights.size(); ++i) {
      if (counts[i] > 0) candidates.push_back(i);
    }
    adjust_first(candidates, static_cast<u64>(assigned - n), counts, -1, [&](std::size_t a, std::size_t b) {
      return fractions[a] != fractions[b] ? fractions[a] < fractions[b] : a > b;
    });
    return;
  }
  const u64 leftover = n - static_cast<u64>(assigned);
  if (leftover == 0) return;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] > 0) candidates.push_back(i);  // zero weight never gets an item
  }
  adjust_first(candidates, leftover, counts, +1, [&](std::size_t a, std::size_t b) {
    return fractions[a] != fractions[b] ? fractions[a] > fractions[b] : a < b;
  });
}

// Every finite double is an integer M·2^e. Scaled by the smallest e, the
// weights become integers with the same ratios; when they are small enough
// that n*W_i and ΣW fit 128 bits, apportionment is exact for the weights'
// true values (integral weights, and also 0.29/0.71, ...). Only extreme
// spreads (say 1e-300 next to 1e300) fall back to the floating path.
struct Dyadic {
  u64 mantissa = 0;  // odd
  int exponent = 0;
};

// A positive finite double as mantissa·2^exponent with an odd mantissa.
Dyadic decompose(double value) noexcept {
  const u64 bits = std::bit_cast<u64>(value);
  const int biased = static_cast<int>((bits >> 52) & 0x7ff);
  u64 mantissa = bits & ((u64{1} << 52) - 1);
  int exponent = -1074;  // subnormal
  if (biased != 0) {
    mantissa |= u64{1} << 52;
    exponent = biased - 1075;
  }
  const int zeros = std::countr_zero(mantissa);
  return Dyadic{mantissa >> zeros, exponent + zeros};
}

std::optional<std::vector<u128>> exact_weights(std::span<const double> weights, u64 n) {
  // Decompose once; the second pass only shifts.
  std::vector<Dyadic> parts(weights.size());
  int lowest = std::numeric_limits<int>::max();
  int highest_bit = std::numeric_limits<int>::min();
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] == 0) continue;
    parts[i] = decompose(weights[i]);
    lowest = std::min(lowest, parts[i].exponent);
    highest_bit = std::max(highest_bit, parts[i].exponent + static_cast<int>(std::bit_width(parts[i].mantissa)));
  }
  const int budget =
      128 - static_cast<int>(std::max(std::bit_width(n), std::bit_width(static_cast<u64>(weights.size()))));
  if (highest_bit - lowest > budget) return std::nullopt;
  std::vector<u128> scaled(weights.size());
  for (std::size_t i = 0; i < weights.size(); ++i) {
    scaled[i] = parts[i].mantissa == 0 ? 0 : static_cast<u128>(parts[i].mantissa) << (parts[i].exponent - lowest);
  }
  return scaled;
}

// Weights already validated.
std::vector<u64> apportion_validated(std::span<const double> weights, u64 n) {
  std::vector<u64> counts(weights.size(), 0);
  if (auto exact = exact_weights(weights, n)) {
    apportion_into(std::span<const u128>(*exact), n, counts);
  } else {
    apportion_into(weights, n, counts);
  }
  return counts;
}

// ---------------------------------------------------------------------------
// Water-filling with caps

// The sum type of a weight type: exact for integers, long double for doubles.
template <class W>
using WeightSum = std::conditional_t<std::is_same_v<W, u128>, u128, long double>;

// Does an index fill up at the current level, i.e. remaining*w/W_total >= cap?
bool saturates(u64 remaining, double weight, u64 cap, long double total) {
  return cap <= remaining && static_cast<long double>(remaining) * weight >= static_cast<long double>(cap) * total;
}

// Exact: compares remaining*w (< 2^128 as remaining ≤ n) with cap*total (up to 2^192).
bool saturates(u64 remaining, u128 weight, u64 cap, u128 total) {
  if (cap > remaining) return false;
  const u128 lhs = remaining * weight;
  const u128 low = static_cast<u128>(cap) * static_cast<u64>(total);
  const u128 high = static_cast<u128>(cap) * static_cast<u64>(total >> 64) + (low >> 64);
  if ((high >> 64) != 0) return false;  // cap*total ≥ 2^128 > lhs
  const u128 rhs = (high << 64) | static_cast<u64>(low);
  return lhs >= rhs;
}

// Capped indices take their cap; the rest share what is left in proportion
// (max-min fair). Sorting by cap/weight finds the saturated set in one pass.
template <class W>
std::vector<u64> water_fill(std::span<const W> weights, u64 n, std::span<const u64> caps) {
  std::vector<u64> counts(weights.size(), 0);
  std::vector<std::size_t> open;  // indices that can still take items
  u128 capacity = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] > 0 && caps[i] > 0) {
      open.push_back(i);
      capacity += caps[i];
    }
  }
  if (capacity <= n) {  // everyone full; the caller reports the rest as unassigned
    for (const std::size_t i : open) counts[i] = caps[i];
    return counts;
  }
  u64 remaining = n;
  std::vector<long double> fill_level(weights.size(), 0);
  for (const std::size_t i : open) {
    fill_level[i] = static_cast<long double>(caps[i]) / static_cast<long double>(weights[i]);
  }
  std::vector<WeightSum<W>> suffix;
  std::vector<W> sub_weights;
  std::vector<u64> sub_counts;
  while (!open.empty() && remaining > 0) {
    std::sort(open.begin(), open.end(), [&](std::size_t a, std::size_t b) {
      return fill_level[a] != fill_level[b] ? fill_level[a] < fill_level[b] : a < b;
    });
    suffix.assign(open.size() + 1, WeightSum<W>{0});
    for (std::size_t k = open.size(); k-- > 0;) suffix[k] = suffix[k + 1] + weights[open[k]];
    std::size_t filled = 0;
    while (filled < open.size() && saturates(remaining, weights[open[filled]], caps[open[filled]], suffix[filled])) {
      counts[open[filled]] = caps[open[filled]];
      remaining -= caps[open[filled]];
      ++filled;
    }
    open.erase(open.begin(), open.begin() + static_cast<std::ptrdiff_t>(filled));
    if (open.empty() || remaining == 0) break;

    // Share the rest among the unsaturated, in their original order (stable ties).
    std::sort(open.begin(), open.end());
    sub_weights.resize(open.size());
    for (std::size_t k = 0; k < open.size(); ++k) sub_weights[k] = weights[open[k]];
    sub_counts.assign(open.size(), 0);
    apportion_into(std::span<const W>(sub_weights), remaining, sub_counts);
    bool over_cap = false;
    for (std::size_t k = 0; k < open.size(); ++k) over_cap = over_cap || sub_counts[k] > caps[open[k]];
    if (!over_cap) {
      for (std::size_t k = 0; k < open.size(); ++k) counts[open[k]] = sub_counts[k];
      break;
    }
    // Rounding (a +1 leftover, or a level compared in long double) pushed some
    // past their caps: fill those and share again among the others.
    std::vector<std::size_t> still_open;
    for (std::size_t k = 0; k < open.size(); ++k) {
      const std::size_t i = open[k];
      if (sub_counts[k] >= caps[i]) {
        counts[i] = caps[i];
        remaining -= caps[i];
      } else {
        still_open.push_back(i);
      }
    }
    open = std::move(still_open);
  }
  return counts;
}

std::vector<u64> apportion_capped_validated(std::span<const double> weights, u64 n, std::span<const u64> caps) {
  if (auto exact = exact_weights(weights, n)) return water_fill(std::span<const u128>(*exact), n, caps);
  return water_fill(weights, n, caps);
}

// ---------------------------------------------------------------------------
// Plans

template <class T, class KeyOf>
Plan make_plan(Strategy strategy, u64 total_items, std::span<const T> devices, KeyOf key_of,
               std::span<const u64> counts) {
  Plan plan;
  plan.strategy = strategy;
  plan.total_items = total_items;
  plan.assignments.reserve(devices.size());
  u64 start = 0;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    plan.assignments.emplace_back(key_of(devices[i]), start, counts[i]);  // in place: one copy of the key
    start += counts[i];
  }
  plan.unassigned = total_items - start;
  return plan;
}

const DeviceKey& key_of_key(const DeviceKey& key) {
  return key;
}
const DeviceKey& key_of_weighted(const WeightedDevice& device) {
  return device.device;
}
const DeviceKey& key_of_memory(const MemoryDevice& device) {
  return device.device;
}

[[noreturn]] void throw_insufficient(std::span<const MemoryDevice> devices, std::span<const u64> proportional,
                                     std::span<const u64> caps, u64 layers, u64 layer_bytes, u128 total_free) {
  std::vector<MemoryShortfall> shortfalls;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    if (proportional[i] <= caps[i]) continue;
    shortfalls.push_back(MemoryShortfall{devices[i].device.str(), proportional[i],
                                         saturate_u64(static_cast<u128>(proportional[i]) * layer_bytes),
                                         devices[i].free_memory_bytes});
  }
  throw InsufficientMemoryError(std::move(shortfalls), saturate_u64(static_cast<u128>(layers) * layer_bytes),
                                saturate_u64(total_free));
}

}  // namespace

std::string_view to_string(Strategy strategy) noexcept {
  switch (strategy) {
    case Strategy::uniform: return "uniform";
    case Strategy::capacity: return "capacity";
    case Strategy::memory: return "memory";
  }
  return "unknown";
}

std::optional<Strategy> parse_strategy(std::string_view text) noexcept {
  if (text == "uniform") return Strategy::uniform;
  if (text == "capacity") return Strategy::capacity;
  if (text == "memory") return Strategy::memory;
  return std::nullopt;
}

std::vector<std::uint64_t> apportion(std::span<const double> weights, std::uint64_t n) {
  validate_weights(weights, [](std::size_t i) { return fmt::format("weights[{}]", i); });
  return apportion_validated(weights, n);
}

std::vector<std::uint64_t> apportion_capped(std::span<const double> weights, std::uint64_t n,
                                            std::span<const std::uint64_t> caps) {
  if (caps.size() != weights.size()) {
    throw PlanError("caps", std::to_string(caps.size()),
                    fmt::format("must have one entry per weight ({})", weights.size()));
  }
  validate_weights(weights, [](std::size_t i) { return fmt::format("weights[{}]", i); });
  return apportion_capped_validated(weights, n, caps);
}

Plan plan_uniform(std::span<const DeviceKey> devices, std::uint64_t items,
                  std::optional<std::uint64_t> max_per_device) {
  require_devices(devices.size());
  require_distinct(devices, key_of_key);
  const u64 device_count = devices.size();
  const u64 cap = max_per_device.value_or(kU64Max);
  std::vector<u64> counts(devices.size(), 0);
  if (static_cast<u128>(cap) * device_count < items) {
    std::fill(counts.begin(), counts.end(), cap);  // every device full; the rest is unassigned
  } else {
    // ceil(items/d) ≤ cap here, so the even split already respects the cap.
    const u64 base = items / device_count;
    const u64 extra = items % device_count;
    for (std::size_t i = 0; i < counts.size(); ++i) counts[i] = base + (i < extra ? 1 : 0);
  }
  return make_plan(Strategy::uniform, items, devices, key_of_key, counts);
}

Plan plan_capacity(std::span<const WeightedDevice> devices, std::uint64_t items,
                   std::optional<std::uint64_t> max_per_device) {
  require_devices(devices.size());
  require_distinct(devices, key_of_weighted);
  std::vector<double> weights(devices.size());
  for (std::size_t i = 0; i < devices.size(); ++i) weights[i] = devices[i].weight;
  validate_weights(weights, [&](std::size_t i) { return fmt::format("weights[{}]", devices[i].device.str()); });
  std::vector<u64> counts;
  if (max_per_device) {
    const std::vector<u64> caps(devices.size(), *max_per_device);
    counts = apportion_capped_validated(weights, items, caps);
  } else {
    counts = apportion_validated(weights, items);
  }
  return make_plan(Strategy::capacity, items, devices, key_of_weighted, counts);
}

Plan plan_memory(std::span<const MemoryDevice> devices, std::uint64_t layers,
                 std::optional<std::uint64_t> layer_bytes) {
  require_devices(devices.size());
  require_distinct(devices, key_of_memory);
  std::vector<u128> free_bytes(devices.size());  // as exact weights: layers*free and Σfree fit 128 bits
  u128 total_free = 0;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    free_bytes[i] = devices[i].free_memory_bytes;
    total_free += free_bytes[i];
  }
  std::vector<u64> counts(devices.size(), 0);
  if (layers == 0) return make_plan(Strategy::memory, layers, devices, key_of_memory, counts);
  const u64 bytes_per_layer = layer_bytes.value_or(0);
  if (total_free == 0) {
    if (bytes_per_layer > 0) {
      throw InsufficientMemoryError({}, saturate_u64(static_cast<u128>(layers) * bytes_per_layer), 0);
    }
    throw PlanError("free_memory_bytes", "0", "at least one device needs free memory to place layers");
  }
  // The seed's placement: floors of the shares, leftovers by largest fraction (exact).
  apportion_into(std::span<const u128>(free_bytes), layers, counts);
  if (bytes_per_layer == 0) return make_plan(Strategy::memory, layers, devices, key_of_memory, counts);

  std::vector<u64> caps(devices.size());
  u128 capacity = 0;
  bool fits = true;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    // count*layer_bytes ≤ free ⇔ count ≤ free/layer_bytes: no product, no overflow.
    caps[i] = devices[i].free_memory_bytes / bytes_per_layer;
    capacity += caps[i];
    fits = fits && counts[i] <= caps[i];
  }
  if (fits) return make_plan(Strategy::memory, layers, devices, key_of_memory, counts);
  if (capacity < layers) throw_insufficient(devices, counts, caps, layers, bytes_per_layer, total_free);
  // Rounding overflowed a device but the whole model fits: rebalance under the caps.
  const std::vector<u64> rebalanced = water_fill(std::span<const u128>(free_bytes), layers, caps);
  return make_plan(Strategy::memory, layers, devices, key_of_memory, rebalanced);
}

}  // namespace gpucluster
