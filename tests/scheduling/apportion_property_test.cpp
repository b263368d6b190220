// Apportionment against an exact rational reference: for every
// finite, non-negative weight vector with a positive sum and any n, the counts
// sum to n, each is within 1 of its exact quota n*w_i/Σw, zero weight gets 0,
// and the counts are exactly the largest-remainder answer (ties to the earlier
// index). The same for the capped split (water-filling) and the layer split.
// Run in CI under ASan+UBSan too (scripts/test.sh asan), where a NaN or
// out-of-range float-to-integer conversion stops the test.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <boost/multiprecision/cpp_int.hpp>

#include "gpucluster/scheduling/distribution.hpp"

namespace gpucluster {
namespace {

using u64 = std::uint64_t;
using Big = boost::multiprecision::cpp_int;  // unbounded: the reference never rounds
using Counts = std::vector<u64>;
constexpr u64 kU64Max = std::numeric_limits<u64>::max();
constexpr double kMax = std::numeric_limits<double>::max();
constexpr double kSmallestSubnormal = std::numeric_limits<double>::denorm_min();

// ---------------------------------------------------------------------------
// The exact reference

// A finite w > 0 is f·2^x with f in [0.5, 1) (frexp, exact), so w = m·2^(x-53)
// with the integer m = f·2^53 < 2^53. Scaled by the lowest such exponent, the
// weights become integers with exactly the weights' ratios.
std::vector<Big> exact_integers(const std::vector<double>& weights) {
  int lowest = std::numeric_limits<int>::max();
  for (const double w : weights) {
    if (w == 0) continue;
    int exponent = 0;
    std::frexp(w, &exponent);
    lowest = std::min(lowest, exponent - 53);
  }
  std::vector<Big> exact(weights.size(), 0);
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] == 0) continue;
    int exponent = 0;
    const double fraction = std::frexp(weights[i], &exponent);
    exact[i] = Big(static_cast<u64>(std::ldexp(fraction, 53))) << (exponent - 53 - lowest);
  }
  return exact;
}

Big sum_of(const std::vector<Big>& values) {
  Big total = 0;
  for (const Big& v : values) total += v;
  return total;
}

// Floors of n·w_i/S, then one more each to the n - Σfloors largest remainders,
// ties to the earlier index (a stable sort).
Counts reference_apportion(const std::vector<Big>& weights, u64 n) {
  const Big total = sum_of(weights);
  Counts counts(weights.size(), 0);
  std::vector<Big> remainders(weights.size());
  u64 assigned = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    Big quotient;
    boost::multiprecision::divide_qr(Big(n) * weights[i], total, quotient, remainders[i]);
    counts[i] = quotient.convert_to<u64>();
    assigned += counts[i];
  }
  std::vector<std::size_t> order(weights.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return remainders[a] > remainders[b]; });
  // Σ remainders/S = n - Σ floors < the number of weights, so this stays in range.
  for (u64 k = 0; k < n - assigned; ++k) ++counts[order.at(k)];
  return counts;
}

// Water-filling by its definition: while some open index's quota at the
// current level reaches its cap (remaining·w_i ≥ cap_i·S), fill every such
// index; the level only rises, so what is filled stays filled. The rest share
// what is left by largest remainder. Everyone full when the caps cannot hold n.
Counts reference_water_fill(const std::vector<Big>& weights, u64 n, const Counts& caps) {
  Counts counts(weights.size(), 0);
  std::vector<std::size_t> open;
  Big capacity = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] > 0 && caps[i] > 0) {
      open.push_back(i);
      capacity += caps[i];
    }
  }
  if (capacity <= n) {
    for (const std::size_t i : open) counts[i] = caps[i];
    return counts;
  }
  u64 remaining = n;
  for (bool filled_some = true; filled_some && !open.empty();) {
    Big total = 0;
    for (const std::size_t i : open) total += weights[i];
    filled_some = false;
    std::vector<std::size_t> still_open;
    for (const std::size_t i : open) {
      if (Big(remaining) * weights[i] >= Big(caps[i]) * total) {
        counts[i] = caps[i];
        filled_some = true;
      } else {
        still_open.push_back(i);
      }
    }
    for (const std::size_t i : open) {
      if (counts[i] == caps[i]) remaining -= caps[i];
    }
    open = std::move(still_open);
  }
  std::vector<Big> open_weights;
  for (const std::size_t i : open) open_weights.push_back(weights[i]);
  const Counts shares = reference_apportion(open_weights, remaining);
  for (std::size_t k = 0; k < open.size(); ++k) counts[open[k]] = shares[k];
  return counts;
}

// ---------------------------------------------------------------------------
// Checks (each a property of its own, then equality with the reference)

std::string describe(const std::vector<double>& weights, u64 n) {
  const std::size_t shown = std::min<std::size_t>(weights.size(), 12);
  std::vector<std::string> texts;
  for (std::size_t i = 0; i < shown; ++i) texts.push_back(fmt::format("{:a}", weights[i]));
  return fmt::format("n={} devices={} weights=[{}{}]", n, weights.size(), fmt::join(texts, ", "),
                     shown < weights.size() ? ", ..." : "");
}

::testing::AssertionResult is_exact_apportionment(const std::vector<double>& weights, u64 n, const Counts& counts) {
  if (counts.size() != weights.size()) return ::testing::AssertionFailure() << "wrong size " << counts.size();
  const std::vector<Big> exact = exact_integers(weights);
  const Big total = sum_of(exact);
  Big assigned = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    assigned += counts[i];
    if (weights[i] == 0 && counts[i] != 0) {
      return ::testing::AssertionFailure() << "zero weight " << i << " got " << counts[i];
    }
    // |count - n·w/S| < 1  ⇔  |count·S - n·w| < S
    const Big scaled_count = Big(counts[i]) * total;
    const Big scaled_quota = Big(n) * exact[i];
    const Big distance = scaled_count > scaled_quota ? scaled_count - scaled_quota : scaled_quota - scaled_count;
    if (distance >= total)
      return ::testing::AssertionFailure() << "count " << i << " = " << counts[i] << " is 1 or more off";
  }
  if (assigned != n) return ::testing::AssertionFailure() << "counts sum to " << assigned << ", not " << n;
  const Counts expected = reference_apportion(exact, n);
  if (counts != expected) {
    return ::testing::AssertionFailure() << "not the largest-remainder answer: got " << fmt::format("{}", counts)
                                         << ", expected " << fmt::format("{}", expected);
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult is_exact_water_fill(const std::vector<Big>& exact, u64 n, const Counts& caps,
                                               const Counts& counts) {
  if (counts.size() != exact.size()) return ::testing::AssertionFailure() << "wrong size " << counts.size();
  Big assigned = 0;
  Big capacity = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] > caps[i]) return ::testing::AssertionFailure() << "count " << i << " over its cap " << caps[i];
    if (exact[i] == 0 && counts[i] != 0) return ::testing::AssertionFailure() << "zero weight " << i << " got items";
    if (exact[i] > 0) capacity += caps[i];
    assigned += counts[i];
  }
  if (assigned != std::min(Big(n), capacity)) {
    return ::testing::AssertionFailure() << "counts sum to " << assigned << " for n=" << n << ", capacity " << capacity;
  }
  const Counts expected = reference_water_fill(exact, n, caps);
  if (counts != expected) {
    return ::testing::AssertionFailure() << "not the water-filling answer: got " << fmt::format("{}", counts)
                                         << ", expected " << fmt::format("{}", expected);
  }
  return ::testing::AssertionSuccess();
}

Counts counts_of(const Plan& plan) {
  Counts counts;
  for (const Assignment& a : plan.assignments) counts.push_back(a.count);
  return counts;
}

DeviceKey key(std::size_t i) {
  return {fmt::format("node{}", i / 8), fmt::format("cuda:{}", i % 8)};
}

std::vector<WeightedDevice> weighted(const std::vector<double>& weights) {
  std::vector<WeightedDevice> devices;
  for (std::size_t i = 0; i < weights.size(); ++i) devices.push_back({key(i), weights[i]});
  return devices;
}

// ---------------------------------------------------------------------------
// The cases, one by one

TEST(ApportionExtremeWeights, SubnormalWeightAmongZerosTakesEveryItem) {
  const std::vector<double> weights{1e-320, 0, 0};
  EXPECT_EQ(apportion(weights, 10), (Counts{10, 0, 0}));
  EXPECT_EQ(apportion(std::vector<double>{0, kSmallestSubnormal, 0}, 7), (Counts{0, 7, 0}));
  EXPECT_EQ(apportion_capped(weights, 10, Counts{4, 4, 4}), (Counts{4, 0, 0}));
  EXPECT_EQ(apportion_capped(weights, 10, Counts{20, 20, 20}), (Counts{10, 0, 0}));
  EXPECT_EQ(counts_of(plan_capacity(weighted(weights), 10)), (Counts{10, 0, 0}));
  EXPECT_EQ(counts_of(plan_capacity(weighted(weights), 10, 3)), (Counts{3, 0, 0}));
}

TEST(ApportionExtremeWeights, SubnormalsKeepTheirExactRatios) {
  // 1·2^-1074 and 3·2^-1074: exactly 1:3.
  EXPECT_EQ(apportion(std::vector<double>{kSmallestSubnormal, 3 * kSmallestSubnormal}, 8), (Counts{2, 6}));
  EXPECT_TRUE(is_exact_apportionment({1e-320, 2e-320, 0, 5e-321}, 1'000'003,
                                     apportion(std::vector<double>{1e-320, 2e-320, 0, 5e-321}, 1'000'003)));
}

TEST(ApportionExtremeWeights, HugeWeightsWhoseSumOverflowsADouble) {
  EXPECT_EQ(apportion(std::vector<double>{kMax, kMax, kMax}, 10), (Counts{4, 3, 3}));
  EXPECT_EQ(apportion(std::vector<double>{1e308, 0, 1e308}, 9), (Counts{5, 0, 4}));
  EXPECT_EQ(apportion_capped(std::vector<double>{kMax, kMax}, 10, Counts{3, 100}), (Counts{3, 7}));
  EXPECT_EQ(counts_of(plan_capacity(weighted({1e308, 1e308, 1e308, 1e308}), 6)), (Counts{2, 2, 1, 1}));
}

TEST(ApportionExtremeWeights, MixesOf1e308And1e300AndSubnormals) {
  const std::vector<std::vector<double>> cases{
      {1e308, 1e-300},         {1e-300, 1e308, 1e-300},           {1e308, 1e308, 1e-300, 1e-320}, {kMax, 1.0, 1e-300},
      {1e-300, 1.0, 1.0, 1.0}, {1e308, 3e307, 1e-300, 0, 7e-310}, {kMax, kSmallestSubnormal}};
  const Counts ns{
      0,      1, 2, 3, 10, 1000, u64{1} << 32, (u64{1} << 53) - 1, u64{1} << 53, (u64{1} << 53) + 1, (u64{1} << 63) - 1,
      kU64Max};
  for (const auto& weights : cases) {
    for (const u64 n : ns) {
      SCOPED_TRACE(describe(weights, n));
      const Counts counts = apportion(weights, n);
      EXPECT_TRUE(is_exact_apportionment(weights, n, counts));
      EXPECT_EQ(counts_of(plan_capacity(weighted(weights), n)), counts);
      const Counts caps(weights.size(), n / 2 + 1);
      EXPECT_TRUE(is_exact_water_fill(exact_integers(weights), n, caps, apportion_capped(weights, n, caps)));
    }
  }
}

TEST(ApportionExtremeWeights, OneSmallWeightAmongHugeOnesNearTheTop) {
  // The 1e-300 weight's quota is far below 1, but its remainder still ranks
  // against the others' exactly: with n = 3 over two equal 1e308 weights, the
  // leftover goes to the earlier of the two.
  EXPECT_EQ(apportion(std::vector<double>{1e-300, 1e308, 1e308}, 3), (Counts{0, 2, 1}));
  EXPECT_EQ(apportion(std::vector<double>{1e308, 1e308, 1e-300}, 1), (Counts{1, 0, 0}));
}

// ---------------------------------------------------------------------------
// Random and adversarial vectors

std::size_t random_size(std::mt19937_64& rng) {
  const u64 pick = rng() % 4000;
  if (pick == 0) return 1 + rng() % 10'000;  // rare: plan-sized
  if (pick < 200) return 1 + rng() % 200;
  return 1 + rng() % 8;  // mostly small, so 10^5 vectors stay fast under sanitizers
}

u64 random_n(std::mt19937_64& rng) {
  switch (rng() % 16) {
    case 0: return 0;
    case 1: return 1;
    case 2: return rng() % 20;
    case 3: return rng() % 1000;
    case 4: return rng() % 10'000'001;
    case 5: return u64{1} << 32;
    case 6: return (u64{1} << 53) - 1;
    case 7: return u64{1} << 53;
    case 8: return (u64{1} << 53) + 1;
    case 9: return (u64{1} << 63) - 1;
    case 10: return kU64Max;
    case 11: return rng();
    default: return rng() >> (rng() % 64);
  }
}

double random_subnormal(std::mt19937_64& rng) {
  return std::bit_cast<double>(1 + rng() % ((u64{1} << 52) - 1));
}

// Any finite double ≥ 0 (random exponent and mantissa bits).
double random_finite(std::mt19937_64& rng) {
  const u64 exponent = rng() % 2047;  // 2047 would be inf/NaN
  return std::bit_cast<double>((exponent << 52) | (rng() & ((u64{1} << 52) - 1)));
}

double random_huge(std::mt19937_64& rng) {
  return std::bit_cast<double>((u64{0x7fe} - rng() % 4) << 52 | (rng() & ((u64{1} << 52) - 1)));
}

std::vector<double> random_weights(std::mt19937_64& rng, std::size_t count, int style) {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<double> weights(count, 0.0);
  const double zero_chance = rng() % 3 == 0 ? 0.4 : 0.0;
  const double same = random_finite(rng);
  for (double& w : weights) {
    if (unit(rng) < zero_chance) continue;
    switch (style) {
      case 0: w = random_subnormal(rng); break;
      case 1: w = random_huge(rng); break;
      case 2: {  // 1e308 and 1e-300 mixes, with subnormals and ordinary values
        const u64 pick = rng() % 4;
        w = pick == 0   ? 1e308 * (0.5 + unit(rng))
            : pick == 1 ? 1e-300 * (1 + unit(rng))
            : pick == 2 ? random_subnormal(rng)
                        : unit(rng);
        break;
      }
      case 3: w = 0; break;  // one non-zero among zeros, set below
      case 4: w = same; break;
      case 5: w = random_finite(rng); break;
      case 6: w = static_cast<double>(rng() % 101); break;
      case 7: w = unit(rng); break;
      case 8:
        w = std::ldexp(1.75 + static_cast<double>(rng() % 64) * 0x1p-52, static_cast<int>(rng() % 2000) - 1000);
        break;
      case 9: w = std::ldexp(1.0, static_cast<int>(rng() % 2098) - 1074); break;  // powers of two, subnormal to 2^1023
      default: w = std::pow(10.0, unit(rng) * 600.0 - 300.0); break;
    }
  }
  if (style == 3 || std::none_of(weights.begin(), weights.end(), [](double w) { return w > 0; })) {
    const double lone = rng() % 2 == 0 ? random_finite(rng) : random_subnormal(rng);
    weights[rng() % count] = lone > 0 ? lone : kSmallestSubnormal;
  }
  return weights;
}

constexpr int kStyles = 11;

TEST(ApportionProperty, MatchesTheExactReferenceOnAdversarialVectors) {
  std::mt19937_64 rng(12);
  constexpr int kVectors = 100'000;
  int through_plans = 0;
  for (int trial = 0; trial < kVectors; ++trial) {
    const std::size_t count = random_size(rng);
    const int style = trial % kStyles;
    const std::vector<double> weights = random_weights(rng, count, style);
    const u64 n = random_n(rng);
    const Counts counts = apportion(weights, n);
    ASSERT_TRUE(is_exact_apportionment(weights, n, counts)) << "trial " << trial << " " << describe(weights, n);
    if (trial % 16 == 0) {
      ++through_plans;
      ASSERT_EQ(counts_of(plan_capacity(weighted(weights), n)), counts)
          << "trial " << trial << " " << describe(weights, n);
    }
  }
  EXPECT_GT(through_plans, 0);
}

TEST(ApportionProperty, LargeVectorsOfEveryStyle) {
  // 10,000 devices per style: the histogram and band selections of the fast
  // path and the wide exact path at plan size.
  std::mt19937_64 rng(1212);
  for (int style = 0; style < kStyles; ++style) {
    const std::vector<double> weights = random_weights(rng, 10'000, style);
    for (const u64 n : {u64{10'000'000}, u64{1} << 53, kU64Max}) {
      ASSERT_TRUE(is_exact_apportionment(weights, n, apportion(weights, n))) << "style " << style << " n " << n;
    }
  }
}

TEST(ApportionProperty, CappedMatchesExactWaterFilling) {
  std::mt19937_64 rng(1234);
  constexpr int kVectors = 20'000;
  int binding = 0;
  int loose = 0;
  int full = 0;
  for (int trial = 0; trial < kVectors; ++trial) {
    const std::size_t count = std::min<std::size_t>(random_size(rng), 2'000);
    const std::vector<double> weights = random_weights(rng, count, trial % kStyles);
    const u64 n = random_n(rng);
    // Caps around the even share: caps that bind, caps that do not, and caps too small to hold n.
    const u64 even = n / count + 1;
    Counts caps(count);
    const u64 spread = even > kU64Max / 2 ? kU64Max : 2 * even + 1;
    for (u64& cap : caps) cap = rng() % 5 == 0 ? even : rng() % spread;
    const std::vector<Big> exact = exact_integers(weights);
    const Counts counts = apportion_capped(weights, n, caps);
    ASSERT_TRUE(is_exact_water_fill(exact, n, caps, counts)) << "trial " << trial << " " << describe(weights, n);
    const u64 assigned = std::accumulate(counts.begin(), counts.end(), u64{0});
    bool any_capped = false;
    for (std::size_t i = 0; i < count; ++i) any_capped = any_capped || (counts[i] == caps[i] && caps[i] > 0);
    if (assigned < n) {
      ++full;
    } else if (any_capped) {
      ++binding;
    } else {
      ++loose;
    }
    if (trial % 16 == 0) {
      const Plan plan = plan_capacity(weighted(weights), n, even);
      ASSERT_TRUE(is_exact_water_fill(exact, n, Counts(count, even), counts_of(plan))) << "trial " << trial;
      ASSERT_EQ(plan.unassigned, n - plan.assigned());
    }
  }
  // The generator must exercise every outcome.
  EXPECT_GT(binding, 0);
  EXPECT_GT(loose, 0);
  EXPECT_GT(full, 0);
}

// Free memory: byte-granular, zero, tiny and near 2^64 (a sum past 2^64).
u64 random_free_bytes(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0: return 0;
    case 1: return rng() % 16;
    case 2: return kU64Max - rng() % 1000;
    case 3: return (u64{1} << 30) * (1 + rng() % 80);
    default: return rng() >> (rng() % 64);
  }
}

TEST(ApportionProperty, LayerSplitMatchesTheExactReference) {
  std::mt19937_64 rng(4321);
  constexpr int kVectors = 20'000;
  int proportional = 0;
  int rebalanced = 0;
  int refused = 0;
  for (int trial = 0; trial < kVectors; ++trial) {
    const std::size_t count = std::min<std::size_t>(random_size(rng), 2'000);
    std::vector<MemoryDevice> devices;
    std::vector<Big> exact;
    Big total_free = 0;
    for (std::size_t i = 0; i < count; ++i) {
      const u64 free_bytes = random_free_bytes(rng);
      devices.push_back({key(i), free_bytes});
      exact.emplace_back(free_bytes);
      total_free += free_bytes;
    }
    if (total_free == 0) {
      devices[0].free_memory_bytes = 1 + rng() % 100;
      exact[0] = devices[0].free_memory_bytes;
      total_free = exact[0];
    }
    const u64 layers = rng() % 4 == 0 ? random_n(rng) : 1 + rng() % 200;
    const std::string context = fmt::format("trial {} devices {} layers {}", trial, count, layers);

    // Contiguous shards summing to `layers`, each within 1 of its exact quota.
    const Counts expected = reference_apportion(exact, layers);
    const Plan plain = plan_memory(devices, layers);
    ASSERT_EQ(counts_of(plain), expected) << context;
    ASSERT_EQ(plain.unassigned, 0u) << context;
    u64 next = 0;
    for (const Assignment& a : plain.assignments) {
      ASSERT_EQ(a.start, next) << context;
      next += a.count;
    }
    ASSERT_EQ(next, layers) << context;
    if (layers == 0) continue;

    // With a layer size around total_free/layers: fits as is, rebalanced, or refused.
    const Big scaled = total_free * (85 + rng() % 30) / (Big(layers) * 100);
    const u64 layer_bytes = scaled == 0 ? 1 : scaled > kU64Max ? kU64Max : scaled.convert_to<u64>();
    Counts caps(count);
    Big capacity = 0;
    bool fits = true;
    for (std::size_t i = 0; i < count; ++i) {
      caps[i] = devices[i].free_memory_bytes / layer_bytes;
      capacity += caps[i];
      fits = fits && expected[i] <= caps[i];
    }
    if (capacity < layers) {
      ++refused;
      ASSERT_THROW(plan_memory(devices, layers, layer_bytes), InsufficientMemoryError) << context;
      continue;
    }
    const Plan plan = plan_memory(devices, layers, layer_bytes);
    ASSERT_EQ(plan.unassigned, 0u) << context;
    for (std::size_t i = 0; i < count; ++i) {
      ASSERT_LE(Big(plan.assignments[i].count) * layer_bytes, Big(devices[i].free_memory_bytes)) << context;
    }
    if (fits) {
      ++proportional;
      ASSERT_EQ(counts_of(plan), expected) << context;  // the proportional split whenever it fits
    } else {
      ++rebalanced;
      ASSERT_TRUE(is_exact_water_fill(exact, layers, caps, counts_of(plan))) << context;
    }
  }
  EXPECT_GT(proportional, 0);
  EXPECT_GT(rebalanced, 0);
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace gpucluster
