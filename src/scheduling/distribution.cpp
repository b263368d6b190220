#include "gpucluster/scheduling/distribution.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <boost/multiprecision/cpp_int.hpp>

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
// short): std::hash costs about twice as much and dominated plan time. Inlined:
// a call per string cost as much as the hashing.
[[gnu::always_inline]] inline u64 hash_text(u64 hash, std::string_view text) noexcept {
  constexpr u64 kMultiplier = 0x9e3779b97f4a7c15ULL;
  for (; text.size() >= 8; text.remove_prefix(8)) {
    hash = (hash ^ load_bytes(text.data(), 8)) * kMultiplier;
    hash ^= hash >> 32;
  }
  hash = (hash ^ load_tail(text.data(), text.size()) ^ (static_cast<u64>(text.size()) << 56)) * kMultiplier;
  return hash ^ (hash >> 29);
}

[[gnu::always_inline]] inline u64 hash_key(const DeviceKey& key) noexcept {
  return hash_text(hash_text(0x243f6a8885a308d3ULL, key.host), key.local_id);
}

// Open addressing over hashes: O(devices), no per-key allocation. A plan that
// lists a device twice would hand it two ranges, so it is rejected. A slot
// holds the index + 1 (0 = empty) and the hash's low 32 bits, so a probe
// compares keys only when those match too.
// `visit(i)` is called on each device in the same pass (plan_capacity reads the
// weights there: one pass over the devices instead of two).
struct VisitNothing {
  void operator()(std::size_t) const noexcept {}
};

template <class T, class KeyOf, class Visit = VisitNothing>
void require_distinct(std::span<const T> devices, KeyOf key_of, Visit visit = {}) {
  if (devices.size() < 2) {
    if (devices.size() == 1) visit(0);
    return;
  }
  int slot_bits = 4;
  while ((std::size_t{1} << slot_bits) < devices.size() * 2) ++slot_bits;
  std::vector<u64> table(std::size_t{1} << slot_bits, 0);
  const u64 mask = table.size() - 1;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    const DeviceKey& key = key_of(devices[i]);
    const u64 hash = hash_key(key);
    const u64 tag = hash & 0xffffffffULL;
    u64 slot = hash >> (64 - slot_bits);  // the multiply mixes into the high bits; the low ones cluster
    for (; table[slot] != 0; slot = (slot + 1) & mask) {
      if ((table[slot] & 0xffffffffULL) != tag) continue;
      const std::size_t other = (table[slot] >> 32) - 1;
      if (key_of(devices[other]) == key) {
        throw PlanError("devices", key.str(), fmt::format("must be distinct: listed at positions {} and {}", other, i));
      }
    }
    table[slot] = (static_cast<u64>(i + 1) << 32) | tag;
    visit(i);
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

// Every finite double is an integer M·2^e. Scaled by the smallest e, the
// weights become integers with the same ratios, so apportionment is exact for
// the weights' true values (integral weights, and also 0.29/0.71, ...). When
// n*W_i and ΣW fit 128 bits they are u128s; extreme spreads (1e-300 next to
// 1e300, subnormals next to 1e308) take the Wide integers below.
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

// Wide enough for every number the exact paths form, whatever the weights: a
// finite double is below 2^1024 and a multiple of 2^-1074, so a weight scaled
// by the smallest weight's exponent is below 2^2098, a sum of up to 2^64 of
// them below 2^2162, and n (or a cap) times that below 2^2226. Fixed size, so
// no allocation per number; checked, so an overflow would throw, never wrap.
using Wide = boost::multiprecision::number<boost::multiprecision::cpp_int_backend<
    2240, 2240, boost::multiprecision::unsigned_magnitude, boost::multiprecision::checked, void>>;

std::vector<Wide> wide_weights(std::span<const double> weights) {
  std::vector<Dyadic> parts(weights.size());
  int lowest = std::numeric_limits<int>::max();
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] == 0) continue;
    parts[i] = decompose(weights[i]);
    lowest = std::min(lowest, parts[i].exponent);
  }
  std::vector<Wide> scaled(weights.size());
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (parts[i].mantissa != 0) scaled[i] = Wide(parts[i].mantissa) << (parts[i].exponent - lowest);
  }
  return scaled;
}

// Exact for any weights (see Wide): floors of n*W_i/ΣW, then the leftovers to
// the largest remainders, ties to the earlier index. Slower than the 128-bit
// path (a multi-limb division per weight), so only for spreads it cannot hold.
void apportion_into(std::span<const Wide> weights, u64 n, std::span<u64> counts) {
  Wide total = 0;
  for (const Wide& weight : weights) total += weight;
  std::vector<Wide> remainders(weights.size());
  std::vector<std::size_t> candidates;  // non-zero remainders
  Wide quotient;
  u64 assigned = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] == 0) continue;  // count and remainder 0
    boost::multiprecision::divide_qr(weights[i] * n, total, quotient, remainders[i]);
    counts[i] = quotient.convert_to<u64>();  // ≤ n, as W_i ≤ ΣW
    assigned += counts[i];
    if (remainders[i] != 0) candidates.push_back(i);
  }
  // Σremainders/ΣW = n - assigned, so fewer leftovers than candidates.
  adjust_first(candidates, n - assigned, counts, +1, [&](std::size_t a, std::size_t b) {
    return remainders[a] != remainders[b] ? remainders[a] > remainders[b] : a < b;
  });
}

// ---------------------------------------------------------------------------
// Fast exact apportionment

// A positive finite double is a multiple of 2^ulp_exponent and below 2^top_bit.
int ulp_exponent(double value) noexcept {
  const int biased = static_cast<int>((std::bit_cast<u64>(value) >> 52) & 0x7ff);
  return biased == 0 ? -1074 : biased - 1075;
}

int top_bit(double value) noexcept {
  const u64 bits = std::bit_cast<u64>(value);
  const int biased = static_cast<int>((bits >> 52) & 0x7ff);
  return biased == 0 ? -1074 + static_cast<int>(std::bit_width(bits & ((u64{1} << 52) - 1))) : biased - 1022;
}

// The weights as the integers w·2^-lowest (lowest = the smallest weight's ulp
// exponent, so every weight is such a multiple): the integers exact_weights
// gives up to a power of two, hence the same quotas, floors and remainder
// order. Built only when the double estimates cannot decide something.
class ExactQuotas {
 public:
  ExactQuotas(std::span<const double> weights, u64 n, int lowest) : weights_(weights), n_(n), lowest_(lowest) {
    for (const double weight : weights) total_ += scaled(weight);
  }

  u128 scaled(double weight) const noexcept {
    if (weight == 0) return 0;
    const u64 bits = std::bit_cast<u64>(weight);
    const int biased = static_cast<int>((bits >> 52) & 0x7ff);
    const u64 mantissa = (bits & ((u64{1} << 52) - 1)) | (biased == 0 ? 0 : u64{1} << 52);
    return static_cast<u128>(mantissa) << (ulp_exponent(weight) - lowest_);
  }

  // n·w_i = quotient·total + remainder, exactly (both sides below 2^128).
  DivMod quota(std::size_t i) const noexcept {
    const u128 product = n_ * scaled(weights_[i]);
    return DivMod{static_cast<u64>(product / total_), product % total_};
  }

  double fraction(u128 remainder) const noexcept { return to_double(remainder) / to_double(total_); }

 private:
  std::span<const double> weights_;
  u64 n_;
  int lowest_;
  u128 total_ = 0;
};

// Largest remainder from double estimates, for n·devices well below 2^53 and
// weights that the exact path takes: each quota n·w_i/Σw is estimated within
// `slack` (a bound on the rounding of the sum, the division and the product),
// so a floor is certain unless the estimate is within slack of an integer, and
// one leftover beats another for certain when their estimated fractions differ
// by more than 2·slack. Only what the estimates cannot decide (floors near an
// integer, fractions near the cut for the leftovers) is computed exactly, with
// the integers of ExactQuotas, so the counts are the exact path's, ties by
// index included. Returns false, writing nothing, where it does not apply.
bool apportion_fast(std::span<const double> weights, u64 n, std::span<u64> counts) {
  const std::size_t d = weights.size();
  if (n == 0 || d == 0 || d >= std::numeric_limits<std::uint32_t>::max()) return false;
  // Σw in four chains (the rounding bound below holds for any order), with the
  // extremes; branch-free (0 for zero weights: largest starts there anyway).
  constexpr double kInfinity = std::numeric_limits<double>::infinity();
  double sums[4] = {0, 0, 0, 0};
  double largest[4] = {0, 0, 0, 0};
  double smallest[4] = {kInfinity, kInfinity, kInfinity, kInfinity};
  std::size_t i = 0;
  for (; i + 4 <= d; i += 4) {
    for (std::size_t k = 0; k < 4; ++k) {
      const double weight = weights[i + k];
      sums[k] += weight;
      largest[k] = std::max(largest[k], weight);
      smallest[k] = std::min(smallest[k], weight > 0 ? weight : kInfinity);
    }
  }
  for (; i < d; ++i) {
    const double weight = weights[i];
    sums[0] += weight;
    largest[0] = std::max(largest[0], weight);
    smallest[0] = std::min(smallest[0], weight > 0 ? weight : kInfinity);
  }
  const double total = (sums[0] + sums[1]) + (sums[2] + sums[3]);
  const double largest_weight = std::max(std::max(largest[0], largest[1]), std::max(largest[2], largest[3]));
  const double smallest_weight = std::min(std::min(smallest[0], smallest[1]), std::min(smallest[2], smallest[3]));
  // The error bounds below need the quotas' scale in the normal range: a sum
  // past DBL_MAX (1e308 weights) gives 0 here, a subnormal one (1e-320) can
  // give inf, and 0·inf would be NaN. Those take the exact paths.
  const double per_weight = static_cast<double>(n) / total;
  if (!std::isnormal(per_weight)) return false;
  // The exact path applies when the scaled weights fit its budget (checked here
  // against the smallest weight's ulp, which is at most the lowest set bit).
  const int budget = 128 - static_cast<int>(std::max(std::bit_width(n), std::bit_width(static_cast<u64>(d))));
  if (top_bit(largest_weight) - ulp_exponent(smallest_weight) > budget) return false;
  // Relative error of an estimate: the sum's (d-1)·u, the division's and the
  // product's u each (u = 2^-53), with margin (also covering the ~5u of an exact
  // remainder turned into a fraction); quotas are at most n.
  const double relative = static_cast<double>(d + 8) * 0x1p-53 * 1.001;
  if (!(relative < 0x1p-20)) return false;
  const double slack = static_cast<double>(n) * relative;
  if (!(slack <= 0x1p-12)) return false;  // n·d past ~2^41: most estimates would be unsure

  // About one estimate per bucket of the fractions' histogram.
  const int bucket_bits = std::clamp(static_cast<int>(std::bit_width(d)), 4, 16);
  const std::size_t bucket_count = std::size_t{1} << bucket_bits;
  const double bucket_scale = static_cast<double>(bucket_count);
  std::vector<std::uint32_t> histogram(bucket_count, 0);
  const auto fractions = std::make_unique_for_overwrite<double[]>(d);
  const auto listed = std::make_unique_for_overwrite<std::uint32_t[]>(d);  // unsure, later the band

  // Floors and fractions of the estimates; branch-free, the few unsure ones listed.
  const double sure_below = 1 - slack;
  u64 assigned = 0;
  std::size_t unsure = 0;
  for (std::size_t j = 0; j < d; ++j) {
    // Within [0, 2^42) by the checks above, so the conversions are exact; the
    // clamp (NaN to 0) keeps them defined whatever the input.
    const double estimate = std::min(0x1p62, std::max(0.0, weights[j] * per_weight));
    const u64 floor = static_cast<u64>(static_cast<std::int64_t>(estimate));
    const double fraction = estimate - static_cast<double>(floor);
    counts[j] = floor;
    assigned += floor;
    fractions[j] = fraction;
    ++histogram[static_cast<std::size_t>(fraction * bucket_scale)];
    listed[unsure] = static_cast<std::uint32_t>(j);
    unsure += static_cast<std::size_t>((fraction < slack) | (fraction >= sure_below));  // zero weights too
  }

  std::optional<ExactQuotas> exact;
  const auto exact_quotas = [&]() -> const ExactQuotas& {
    if (!exact) exact.emplace(weights, n, ulp_exponent(smallest_weight));
    return *exact;
  };
  for (std::size_t k = 0; k < unsure; ++k) {
    const std::size_t j = listed[k];
    --histogram[static_cast<std::size_t>(fractions[j] * bucket_scale)];
    if (weights[j] == 0) {
      fractions[j] = -1;  // exactly 0 items, never a leftover: out of the histogram
      continue;
    }
    const DivMod quota = exact_quotas().quota(j);
    const double fraction = std::min(exact_quotas().fraction(quota.remainder), 1 - 0x1p-53);  // in [0, 1)
    ++histogram[static_cast<std::size_t>(fraction * bucket_scale)];
    assigned = assigned - counts[j] + quota.quotient;
    counts[j] = quota.quotient;
    fractions[j] = fraction;
  }

  const u64 leftover = n - assigned;  // the floors are exact now: Σfloors ≤ n
  if (leftover == 0) return true;
  // The bucket holding the leftover-th largest estimate: fewer than `leftover`
  // estimates lie above it, at least `leftover` at or above its lower edge.
  std::size_t boundary = bucket_count - 1;
  u64 above = 0;
  while (boundary > 0 && above + histogram[boundary] < leftover) above += histogram[boundary--];
  // At or above `upper`: certainly among the largest leftover. Below `lower`:
  // certainly not. In between (the band): decided below. (3·slack where 2
  // would do: room for the rounding of these bounds themselves.)
  const double upper = static_cast<double>(boundary + 1) / bucket_scale + 3 * slack;
  const double lower = static_cast<double>(boundary) / bucket_scale - 3 * slack;
  u64 given = 0;
  std::size_t band_size = 0;
  for (std::size_t j = 0; j < d; ++j) {
    const double fraction = fractions[j];
    const bool wins = fraction >= upper;
    counts[j] += wins;
    given += wins;
    listed[band_size] = static_cast<std::uint32_t>(j);
    band_size += static_cast<std::size_t>(!wins & (fraction >= lower));
  }
  const std::span<std::uint32_t> band(listed.get(), band_size);
  const std::size_t need = static_cast<std::size_t>(leftover - given);  // 1..band_size
  if (need < band.size()) {
    // O(band) selections, not sorts: the plan stays O(devices) even when ties
    // put every device in the band.
    const auto cut = band.begin() + static_cast<std::ptrdiff_t>(need - 1);
    std::nth_element(band.begin(), cut, band.end(), [&](std::size_t a, std::size_t b) {
      return fractions[a] != fractions[b] ? fractions[a] > fractions[b] : a < b;
    });
    double best_left_out = -1;
    for (auto it = cut + 1; it != band.end(); ++it) best_left_out = std::max(best_left_out, fractions[*it]);
    if (!(fractions[*cut] - best_left_out > 3 * slack)) {
      // Too close to call from the estimates: exact remainders, ties by index.
      std::vector<std::pair<u128, std::uint32_t>> exact_band(band.size());
      for (std::size_t k = 0; k < band.size(); ++k) exact_band[k] = {exact_quotas().quota(band[k]).remainder, band[k]};
      std::nth_element(
          exact_band.begin(), exact_band.begin() + static_cast<std::ptrdiff_t>(need - 1), exact_band.end(),
          [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
      for (std::size_t k = 0; k < need; ++k) ++counts[exact_band[k].second];
      return true;
    }
  }
  for (std::size_t k = 0; k < need && k < band.size(); ++k) ++counts[band[k]];
  return true;
}

// Weights already validated.
std::vector<u64> apportion_validated(std::span<const double> weights, u64 n) {
  std::vector<u64> counts(weights.size(), 0);
  if (n == 0 || apportion_fast(weights, n, counts)) return counts;
  if (auto exact = exact_weights(weights, n)) {
    apportion_into(std::span<const u128>(*exact), n, counts);
  } else {
    const std::vector<Wide> wide = wide_weights(weights);
    apportion_into(std::span<const Wide>(wide), n, counts);
  }
  return counts;
}

// ---------------------------------------------------------------------------
// Water-filling with caps

// a·x for the exact comparisons of water-filling: 192 bits for the 128-bit
// weights (a·x = high·2^64 + low), a Wide for the others.
struct U192 {
  u128 high = 0;
  u64 low = 0;
};

bool operator<(const U192& a, const U192& b) noexcept {
  return a.high != b.high ? a.high < b.high : a.low < b.low;
}

U192 product(u64 a, u128 x) noexcept {
  const u128 low = static_cast<u128>(a) * static_cast<u64>(x);
  const u128 high = static_cast<u128>(a) * static_cast<u64>(x >> 64) + (low >> 64);  // < 2^128
  return U192{high, static_cast<u64>(low)};
}

Wide product(u64 a, const Wide& x) {
  return x * a;
}

// Does an index fill up at the level remaining/total, i.e. remaining*w >= cap*total?
// (cap > remaining cannot: w ≤ total.)
template <class W>
bool saturates(u64 remaining, const W& weight, u64 cap, const W& total) {
  return cap <= remaining && !(product(remaining, weight) < product(cap, total));
}

// Capped indices take their cap; the rest share what is left in proportion
// (max-min fair). In order of fill level cap/w, the indices that fill up are a
// prefix: filling one at or below the level only raises the level. Every
// comparison is exact, so the result is the exact water level's: the others'
// quotas remaining*w/Σw are below their (integral) caps, and largest remainder
// rounds such a quota up to at most its cap.
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
  // By fill level, exactly: cap_a/w_a < cap_b/w_b ⇔ cap_a*w_b < cap_b*w_a; ties by index.
  std::sort(open.begin(), open.end(), [&](std::size_t a, std::size_t b) {
    const auto left = product(caps[a], weights[b]);
    const auto right = product(caps[b], weights[a]);
    return left < right || (!(right < left) && a < b);
  });
  W open_weight{0};  // Σw of the indices not filled yet
  for (const std::size_t i : open) open_weight += weights[i];
  u64 remaining = n;
  std::size_t filled = 0;
  while (filled < open.size() && saturates(remaining, weights[open[filled]], caps[open[filled]], open_weight)) {
    counts[open[filled]] = caps[open[filled]];
    remaining -= caps[open[filled]];
    open_weight -= weights[open[filled]];
    ++filled;
  }
  // Each filled cap was ≤ what remained, so filling all would mean Σcaps ≤ n:
  // with capacity > n some index stays open.
  std::vector<std::size_t> rest(open.begin() + static_cast<std::ptrdiff_t>(filled), open.end());
  std::sort(rest.begin(), rest.end());  // original order: leftover ties by index
  std::vector<W> rest_weights(rest.size());
  for (std::size_t k = 0; k < rest.size(); ++k) rest_weights[k] = weights[rest[k]];
  std::vector<u64> rest_counts(rest.size(), 0);
  apportion_into(std::span<const W>(rest_weights), remaining, rest_counts);
  for (std::size_t k = 0; k < rest.size(); ++k) counts[rest[k]] = rest_counts[k];
  return counts;
}

std::vector<u64> apportion_capped_validated(std::span<const double> weights, u64 n, std::span<const u64> caps) {
  if (auto exact = exact_weights(weights, n)) return water_fill(std::span<const u128>(*exact), n, caps);
  const std::vector<Wide> wide = wide_weights(weights);
  return water_fill(std::span<const Wide>(wide), n, caps);
}

// ---------------------------------------------------------------------------
// Plans

// A copy of a string: for SSO-sized strings, a constant-length copy per length,
// which the compiler inlines; a std::string copy calls memcpy, and those calls
// were a third of a plan's time. Returned as a prvalue: built in place.
[[gnu::flatten]] std::string copy_string(const std::string& text) {
  const char* data = text.data();
  switch (text.size()) {
    case 0: return std::string();
    case 1: return std::string(data, 1);
    case 2: return std::string(data, 2);
    case 3: return std::string(data, 3);
    case 4: return std::string(data, 4);
    case 5: return std::string(data, 5);
    case 6: return std::string(data, 6);
    case 7: return std::string(data, 7);
    case 8: return std::string(data, 8);
    case 9: return std::string(data, 9);
    case 10: return std::string(data, 10);
    case 11: return std::string(data, 11);
    case 12: return std::string(data, 12);
    case 13: return std::string(data, 13);
    case 14: return std::string(data, 14);
    case 15: return std::string(data, 15);
    default: return text;
  }
}

// Converts to a copy of `key`, so that emplace_back builds the copy directly in
// the assignment (no temporary DeviceKey to move from).
struct KeyCopy {
  const DeviceKey& key;
  operator DeviceKey() const { return DeviceKey{copy_string(key.host), copy_string(key.local_id)}; }
};

template <class T, class KeyOf>
Plan make_plan(Strategy strategy, u64 total_items, std::span<const T> devices, KeyOf key_of,
               std::span<const u64> counts) {
  Plan plan;
  plan.strategy = strategy;
  plan.total_items = total_items;
  plan.assignments.reserve(devices.size());
  u64 start = 0;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    plan.assignments.emplace_back(KeyCopy{key_of(devices[i])}, start, counts[i]);  // in place: one copy of the key
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
  const auto weights_buffer = std::make_unique_for_overwrite<double[]>(devices.size());
  const std::span<const double> weights(weights_buffer.get(), devices.size());
  require_distinct(devices, key_of_weighted, [&](std::size_t i) { weights_buffer[i] = devices[i].weight; });
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
