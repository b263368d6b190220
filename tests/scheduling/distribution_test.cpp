#include "gpucluster/scheduling/distribution.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace gpucluster {
namespace {

using u64 = std::uint64_t;
__extension__ typedef unsigned __int128 u128;  // reference arithmetic for exact quotas
using Counts = std::vector<u64>;
constexpr u64 kU64Max = std::numeric_limits<u64>::max();
constexpr u64 kGiB = u64{1} << 30;

// Keys are built once: property tests slice up to 10^4 of them per case.
const std::vector<DeviceKey>& key_pool() {
  static const std::vector<DeviceKey> pool = [] {
    std::vector<DeviceKey> keys;
    for (std::size_t i = 0; i < 10'000; ++i)
      keys.push_back({fmt::format("node{}", i / 8), fmt::format("cuda:{}", i % 8)});
    return keys;
  }();
  return pool;
}

std::vector<DeviceKey> keys(std::size_t count) {
  return {key_pool().begin(), key_pool().begin() + count};
}

std::vector<WeightedDevice> weighted(const std::vector<double>& weights) {
  std::vector<WeightedDevice> devices;
  for (std::size_t i = 0; i < weights.size(); ++i) devices.push_back({key_pool()[i], weights[i]});
  return devices;
}

std::vector<MemoryDevice> with_memory(const std::vector<u64>& free_bytes) {
  std::vector<MemoryDevice> devices;
  for (std::size_t i = 0; i < free_bytes.size(); ++i) devices.push_back({key_pool()[i], free_bytes[i]});
  return devices;
}

Counts counts_of(const Plan& plan) {
  Counts counts;
  for (const Assignment& a : plan.assignments) counts.push_back(a.count);
  return counts;
}

// One assignment per device in the given order, contiguous ranges from 0, and
// assigned + unassigned == total: no item lost, none given twice.
void expect_well_formed(const Plan& plan, std::span<const DeviceKey> devices) {
  ASSERT_EQ(plan.assignments.size(), devices.size());
  u64 next = 0;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    EXPECT_EQ(plan.assignments[i].device, devices[i]);
    EXPECT_EQ(plan.assignments[i].start, next) << "device " << i;
    ASSERT_LE(plan.assignments[i].count, plan.total_items - next) << "device " << i;
    next += plan.assignments[i].count;
  }
  EXPECT_EQ(next + plan.unassigned, plan.total_items);
  EXPECT_EQ(plan.assigned(), next);
}

template <class F>
PlanError plan_error_of(F&& f) {
  try {
    f();
  } catch (const InsufficientMemoryError&) {
    ADD_FAILURE() << "expected a plain PlanError";
  } catch (const PlanError& e) {
    return e;
  }
  ADD_FAILURE() << "expected a PlanError";
  return PlanError("none", "none", "none");
}

template <class F>
InsufficientMemoryError memory_error_of(F&& f) {
  try {
    f();
  } catch (const InsufficientMemoryError& e) {
    return e;
  }
  ADD_FAILURE() << "expected an InsufficientMemoryError";
  return InsufficientMemoryError({}, 0, 0);
}

// ---------------------------------------------------------------------------
// Strategy names

TEST(Strategy, NamesRoundTrip) {
  for (const Strategy s : {Strategy::uniform, Strategy::capacity, Strategy::memory}) {
    EXPECT_EQ(parse_strategy(to_string(s)), s);
  }
  EXPECT_EQ(to_string(Strategy::capacity), "capacity");
}

TEST(Strategy, ParseRejectsUnknownNames) {
  EXPECT_FALSE(parse_strategy(""));
  EXPECT_FALSE(parse_strategy("Uniform"));
  EXPECT_FALSE(parse_strategy("round_robin"));
}

// ---------------------------------------------------------------------------
// apportion

TEST(Apportion, NineteenItemsOverTenEqualWeightsGivesNineTwosThenAOne) {
  // The seed gave max(1, int(19*0.1)) = 1 each and dumped the 9 leftovers on one device.
  const Counts expected{2, 2, 2, 2, 2, 2, 2, 2, 2, 1};
  EXPECT_EQ(apportion(std::vector<double>(10, 1.0), 19), expected);
  EXPECT_EQ(apportion(std::vector<double>(10, 0.1), 19), expected);
  EXPECT_EQ(apportion(std::vector<double>(10, 3e300), 19), expected);
  // A 1e-300 weight widens the spread past 128 bits: the multi-limb exact
  // path must break ties the same way.
  std::vector<double> with_tiny(10, 1.0);
  with_tiny.push_back(1e-300);
  Counts expected_with_tiny = expected;
  expected_with_tiny.push_back(0);
  EXPECT_EQ(apportion(with_tiny, 19), expected_with_tiny);
  EXPECT_EQ(apportion(std::vector<double>{1e-300, 1, 1, 1}, 2), (Counts{0, 1, 1, 0}));
}

TEST(Apportion, IntegralQuotasAreExact) {
  // int(100 * 0.29) == 28 in the seed.
  EXPECT_EQ(apportion(std::vector<double>{29, 71}, 100), (Counts{29, 71}));
  EXPECT_EQ(apportion(std::vector<double>{0.29, 0.71}, 100), (Counts{29, 71}));
  EXPECT_EQ(apportion(std::vector<double>{0.1, 0.2, 0.7}, 10), (Counts{1, 2, 7}));
  // Integral weights far past 2^53 of precision in the product still come out exact.
  EXPECT_EQ(apportion(std::vector<double>{3e15, 1e15}, 4'000'000'000'000'000'000ULL),
            (Counts{3'000'000'000'000'000'000ULL, 1'000'000'000'000'000'000ULL}));
}

TEST(Apportion, ZeroWeightGetsNothing) {
  // The seed gave every device at least one item.
  EXPECT_EQ(apportion(std::vector<double>{0, 1}, 5), (Counts{0, 5}));
  EXPECT_EQ(apportion(std::vector<double>{0, 0.5, 0}, 1), (Counts{0, 1, 0}));
}

TEST(Apportion, FewerItemsThanDevicesNeverOvershoots) {
  // The seed handed out four items for three.
  EXPECT_EQ(apportion(std::vector<double>{1, 1, 1, 1}, 3), (Counts{1, 1, 1, 0}));
  EXPECT_EQ(apportion(std::vector<double>{0.25, 0.25, 0.25, 0.25}, 3), (Counts{1, 1, 1, 0}));
}

TEST(Apportion, LeftoversGoToTheLargestFractionalParts) {
  // Quotas 0.7, 1.4, 2.1, 2.8: floors 0,1,2,2 then the two leftovers to .8 and .7.
  EXPECT_EQ(apportion(std::vector<double>{1, 2, 3, 4}, 7), (Counts{1, 1, 2, 3}));
  EXPECT_EQ(apportion(std::vector<double>{0.1, 0.2, 0.3, 0.4}, 7), (Counts{1, 1, 2, 3}));
}

TEST(Apportion, ZeroItemsGivesAllZeros) {
  EXPECT_EQ(apportion(std::vector<double>{1, 2.5}, 0), (Counts{0, 0}));
}

TEST(Apportion, ExtremeMagnitudes) {
  EXPECT_EQ(apportion(std::vector<double>{5e-324, 5e-324}, 3), (Counts{2, 1}));  // subnormals
  EXPECT_EQ(apportion(std::vector<double>{1e-300, 3e-300}, 4), (Counts{1, 3}));
  EXPECT_EQ(apportion(std::vector<double>{1e300, 1e-300}, 5), (Counts{5, 0}));
  // Maximal item count, exact path with a total past 2^64.
  const double two_pow_63 = 9223372036854775808.0;
  const Counts third(3, kU64Max / 3);
  EXPECT_EQ(apportion(std::vector<double>(3, two_pow_63), kU64Max), third);
  const Counts thirds = apportion(std::vector<double>(3, 1.5), kU64Max);
  EXPECT_EQ(thirds, third);
}

TEST(Apportion, WideSpreadKeepsTheTotalExactNearTwoToThe64) {
  // A 1e-300 weight next to ~0.5 is too wide a spread for 128-bit integers, so
  // these take the multi-limb path (a long double path once, where rounding at
  // n ≈ 2^64 made the floors add up to more than n). Each count must still be within one of its
  // exact quota (computed here from the doubles scaled by 2^60; the tiny
  // weight's share is far below one item) and the total exactly n.
  const std::vector<std::pair<u64, std::vector<double>>> cases{
      {18446744073709551507ULL, {0.36209382773800713, 0.60050177369804236, 1e-300}},
      {18446744073709551420ULL, {0.11296438464912895, 0.18281995813556895, 0.5924475078771706, 1e-300}},
      {18446744073709550985ULL, {0.54336015424700745, 0.21582331478675396, 0.13020192194255084, 1e-300}},
  };
  for (const auto& [n, weights] : cases) {
    const Counts counts = apportion(weights, n);
    ASSERT_EQ(counts.size(), weights.size());
    EXPECT_EQ(counts.back(), 0u);
    std::vector<u128> scaled;
    u128 total = 0;
    for (std::size_t i = 0; i + 1 < weights.size(); ++i) {
      scaled.push_back(static_cast<u128>(std::ldexp(weights[i], 60)));
      total += scaled.back();
    }
    u128 sum = counts.back();
    for (std::size_t i = 0; i < scaled.size(); ++i) {
      const u128 product = static_cast<u128>(n) * scaled[i];
      const u128 floor = product / total;
      const bool has_fraction = product % total != 0;
      EXPECT_TRUE(counts[i] == floor || (has_fraction && counts[i] == floor + 1)) << "n " << n << " device " << i;
      sum += counts[i];
    }
    EXPECT_TRUE(sum == n) << "n " << n;
  }
}

TEST(Apportion, RejectsInvalidWeightsNamingIndexValueAndRule) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  PlanError e = plan_error_of([&] { apportion(std::vector<double>{1, 2, nan}, 3); });
  EXPECT_EQ(e.field(), "weights[2]");
  EXPECT_EQ(e.value(), "nan");
  EXPECT_NE(e.rule().find("finite"), std::string::npos);

  e = plan_error_of([&] { apportion(std::vector<double>{inf, 1}, 3); });
  EXPECT_EQ(e.field(), "weights[0]");
  EXPECT_EQ(e.value(), "inf");

  e = plan_error_of([&] { apportion(std::vector<double>{1, -0.5}, 3); });
  EXPECT_EQ(e.field(), "weights[1]");
  EXPECT_EQ(e.value(), "-0.5");
  EXPECT_NE(e.rule().find(">= 0"), std::string::npos);

  e = plan_error_of([&] { apportion(std::vector<double>{0, 0}, 3); });
  EXPECT_EQ(e.field(), "weights");
  EXPECT_NE(e.rule().find("> 0"), std::string::npos);

  e = plan_error_of([&] { apportion(std::vector<double>{}, 3); });
  EXPECT_EQ(e.field(), "weights");
}

// ---------------------------------------------------------------------------
// apportion_capped

TEST(ApportionCapped, CappedIndicesFillAndTheRestIsShared) {
  EXPECT_EQ(apportion_capped(std::vector<double>{1, 1, 1}, 9, Counts{1, 10, 10}), (Counts{1, 4, 4}));
  // Quota of index 2 is 8.4 > 3: it takes 3, the other 9 split 1:2.
  EXPECT_EQ(apportion_capped(std::vector<double>{1, 2, 7}, 12, Counts{100, 100, 3}), (Counts{3, 6, 3}));
}

TEST(ApportionCapped, NeverDropsItemsSilently) {
  // The seed cut at the cap and forgot the rest; here the shortfall is visible in the sum.
  const Counts counts = apportion_capped(std::vector<double>{1, 1, 1}, 10, Counts{2, 2, 2});
  EXPECT_EQ(counts, (Counts{2, 2, 2}));
  EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), u64{0}), 6u);
}

TEST(ApportionCapped, ZeroWeightStaysAtZeroEvenWithRoomLeft) {
  EXPECT_EQ(apportion_capped(std::vector<double>{0, 1}, 10, Counts{100, 4}), (Counts{0, 4}));
}

TEST(ApportionCapped, LooseCapsChangeNothing) {
  const std::vector<double> weights{0.3, 1.7, 2.2, 0};
  EXPECT_EQ(apportion_capped(weights, 1001, Counts(4, 1001)), apportion(weights, 1001));
}

TEST(ApportionCapped, RejectsCapsOfTheWrongLength) {
  const PlanError e = plan_error_of([] { apportion_capped(std::vector<double>{1, 1}, 3, Counts{1}); });
  EXPECT_EQ(e.field(), "caps");
  EXPECT_EQ(e.value(), "1");
}

// ---------------------------------------------------------------------------
// plan_uniform

TEST(PlanUniform, SizesDifferByAtMostOneAndEarlierDevicesGetTheExtra) {
  const auto devices = keys(4);
  const Plan plan = plan_uniform(devices, 10);
  expect_well_formed(plan, devices);
  EXPECT_EQ(plan.strategy, Strategy::uniform);
  EXPECT_EQ(counts_of(plan), (Counts{3, 3, 2, 2}));
  EXPECT_EQ(plan.assignments[2].start, 6u);
  EXPECT_EQ(plan.unassigned, 0u);
}

TEST(PlanUniform, NoDevicesIsAnErrorNotAnEmptyPlan) {
  // The seed returned {} and every task vanished.
  const PlanError e = plan_error_of([] { plan_uniform({}, 5); });
  EXPECT_EQ(e.field(), "devices");
}

TEST(PlanUniform, ZeroItemsGivesZeroCounts) {
  const auto devices = keys(3);
  const Plan plan = plan_uniform(devices, 0);
  expect_well_formed(plan, devices);
  EXPECT_EQ(counts_of(plan), (Counts{0, 0, 0}));
}

TEST(PlanUniform, CapCountsTheRestAsUnassigned) {
  const auto devices = keys(3);
  const Plan plan = plan_uniform(devices, 10, 2);
  expect_well_formed(plan, devices);
  EXPECT_EQ(counts_of(plan), (Counts{2, 2, 2}));
  EXPECT_EQ(plan.unassigned, 4u);
  EXPECT_EQ(plan.assigned(), 6u);
}

TEST(PlanUniform, CapThatHoldsEverythingChangesNothing) {
  const auto devices = keys(3);
  const Plan capped = plan_uniform(devices, 10, 4);
  EXPECT_EQ(capped.assignments, plan_uniform(devices, 10).assignments);
  EXPECT_EQ(capped.unassigned, 0u);
  EXPECT_EQ(plan_uniform(devices, 10, 0).unassigned, 10u);
}

TEST(PlanUniform, HugeCountsDoNotOverflow) {
  const auto devices = keys(3);
  const Plan plan = plan_uniform(devices, kU64Max, kU64Max);
  expect_well_formed(plan, devices);
  EXPECT_EQ(counts_of(plan), Counts(3, kU64Max / 3));
}

TEST(PlanUniform, RejectsTheSameDeviceTwice) {
  std::vector<DeviceKey> devices = keys(5);
  devices[4] = devices[1];
  const PlanError e = plan_error_of([&] { plan_uniform(devices, 5); });
  EXPECT_EQ(e.field(), "devices");
  EXPECT_EQ(e.value(), devices[1].str());
  EXPECT_NE(e.rule().find("1 and 4"), std::string::npos);
}

TEST(PlanUniform, SameLocalIdOnTwoHostsIsTwoDevices) {
  const std::vector<DeviceKey> devices{{"a", "cuda:0"}, {"b", "cuda:0"}};
  EXPECT_EQ(counts_of(plan_uniform(devices, 3)), (Counts{2, 1}));
}

// ---------------------------------------------------------------------------
// plan_capacity

TEST(PlanCapacity, KnownCasesThatTheSeedGotWrong) {
  EXPECT_EQ(counts_of(plan_capacity(weighted(std::vector<double>(10, 1.0)), 19)),
            (Counts{2, 2, 2, 2, 2, 2, 2, 2, 2, 1}));
  EXPECT_EQ(counts_of(plan_capacity(weighted({29, 71}), 100)), (Counts{29, 71}));
  EXPECT_EQ(counts_of(plan_capacity(weighted({0, 1}), 7)), (Counts{0, 7}));
  EXPECT_EQ(counts_of(plan_capacity(weighted({1, 1, 1, 1}), 3)), (Counts{1, 1, 1, 0}));
}

TEST(PlanCapacity, AssignmentsFollowDeviceOrderAndAreContiguous) {
  const auto devices = weighted({4, 0, 2, 1});
  const Plan plan = plan_capacity(devices, 1000);
  expect_well_formed(plan, keys(4));
  EXPECT_EQ(plan.strategy, Strategy::capacity);
  EXPECT_EQ(counts_of(plan), (Counts{571, 0, 286, 143}));  // quotas 571.43, 0, 285.71, 142.86
}

TEST(PlanCapacity, CapNeverDropsAnItem) {
  // The seed truncated at the cap and lost the overflow.
  const Plan tight = plan_capacity(weighted({1, 1, 8}), 10, 3);
  expect_well_formed(tight, keys(3));
  EXPECT_EQ(counts_of(tight), (Counts{3, 3, 3}));
  EXPECT_EQ(tight.unassigned, 1u);

  // Device 2's quota 8 exceeds its cap 4: the other six go to the others.
  const Plan water = plan_capacity(weighted({1, 1, 8}), 10, 4);
  EXPECT_EQ(counts_of(water), (Counts{3, 3, 4}));
  EXPECT_EQ(water.unassigned, 0u);
}

TEST(PlanCapacity, RejectsBadWeightsNamingTheDevice) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<WeightedDevice> devices = weighted({1, nan});
  devices[1].device = DeviceKey{"lab", "cuda:1"};
  PlanError e = plan_error_of([&] { plan_capacity(devices, 3); });
  EXPECT_EQ(e.field(), "weights[lab/cuda:1]");
  EXPECT_EQ(e.value(), "nan");
  EXPECT_NE(std::string(e.what()).find("lab/cuda:1"), std::string::npos);

  devices[1].weight = -std::numeric_limits<double>::infinity();
  e = plan_error_of([&] { plan_capacity(devices, 3); });
  EXPECT_EQ(e.value(), "-inf");

  devices[1].weight = -2;
  e = plan_error_of([&] { plan_capacity(devices, 3); });
  EXPECT_EQ(e.value(), "-2");
  EXPECT_NE(e.rule().find(">= 0"), std::string::npos);

  e = plan_error_of([] { plan_capacity(weighted({0, 0, 0}), 3); });
  EXPECT_EQ(e.field(), "weights");

  e = plan_error_of([] { plan_capacity({}, 3); });
  EXPECT_EQ(e.field(), "devices");
}

TEST(PlanCapacity, RejectsTheSameDeviceTwice) {
  std::vector<WeightedDevice> devices = weighted({1, 2, 3});
  devices[2].device = devices[0].device;
  const PlanError e = plan_error_of([&] { plan_capacity(devices, 3); });
  EXPECT_EQ(e.field(), "devices");
  EXPECT_EQ(e.value(), devices[0].device.str());
}

// ---------------------------------------------------------------------------
// plan_memory

TEST(PlanMemory, LayersFollowFreeMemory) {
  const auto devices = with_memory({8 * kGiB, 4 * kGiB, 4 * kGiB});
  const Plan plan = plan_memory(devices, 32);
  expect_well_formed(plan, keys(3));
  EXPECT_EQ(plan.strategy, Strategy::memory);
  EXPECT_EQ(counts_of(plan), (Counts{16, 8, 8}));
}

TEST(PlanMemory, LeftoverLayersGoByLargestFractionThenDeviceOrder) {
  EXPECT_EQ(counts_of(plan_memory(with_memory({3, 3, 3}), 10)), (Counts{4, 3, 3}));
  EXPECT_EQ(counts_of(plan_memory(with_memory({1, 2, 3, 4}), 7)), (Counts{1, 1, 2, 3}));
}

TEST(PlanMemory, DeviceWithoutFreeMemoryGetsNoLayers) {
  EXPECT_EQ(counts_of(plan_memory(with_memory({0, 5 * kGiB, 0}), 9, kGiB / 2)), (Counts{0, 9, 0}));
}

TEST(PlanMemory, ZeroLayersIsAnEmptyPlacement) {
  EXPECT_EQ(counts_of(plan_memory(with_memory({0, 0}), 0, kGiB)), (Counts{0, 0}));
}

TEST(PlanMemory, RebalancesWhenTheProportionalSplitOverflowsADevice) {
  // Quotas 1.76 and 9.24 round to 2 and 9, but device 0 only holds one 10-byte layer.
  const auto devices = with_memory({19, 100});
  EXPECT_EQ(counts_of(plan_memory(devices, 11)), (Counts{2, 9}));
  const Plan plan = plan_memory(devices, 11, 10);
  expect_well_formed(plan, keys(2));
  EXPECT_EQ(counts_of(plan), (Counts{1, 10}));
}

TEST(PlanMemory, ModelThatCannotFitNamesEachShortDevice) {
  std::vector<MemoryDevice> devices = with_memory({19, 100});
  devices[0].device = DeviceKey{"lab", "rocm:0"};
  // Proportional split 2 + 10 layers; 11 layers of 10 bytes fit at most.
  const InsufficientMemoryError e = memory_error_of([&] { plan_memory(devices, 12, 10); });
  ASSERT_EQ(e.shortfalls().size(), 1u);
  EXPECT_EQ(e.shortfalls()[0].device, "lab/rocm:0");
  EXPECT_EQ(e.shortfalls()[0].layers, 2u);
  EXPECT_EQ(e.shortfalls()[0].needed_bytes, 20u);
  EXPECT_EQ(e.shortfalls()[0].free_bytes, 19u);
  EXPECT_EQ(e.shortfalls()[0].short_bytes(), 1u);
  const std::string text = e.what();
  EXPECT_NE(text.find("lab/rocm:0"), std::string::npos);
  EXPECT_NE(text.find("120"), std::string::npos);  // total needed
  EXPECT_NE(text.find("119"), std::string::npos);  // total free
}

TEST(PlanMemory, HugeLayerBytesDoNotOverflow) {
  const u64 half = kU64Max / 2;
  const auto devices = with_memory({kU64Max, kU64Max});
  EXPECT_EQ(counts_of(plan_memory(devices, 4, half)), (Counts{2, 2}));
  const InsufficientMemoryError e = memory_error_of([&] { plan_memory(devices, 5, half); });
  ASSERT_EQ(e.shortfalls().size(), 1u);
  EXPECT_EQ(e.shortfalls()[0].layers, 3u);
  EXPECT_EQ(e.shortfalls()[0].needed_bytes, kU64Max);  // 3 * half saturates
  EXPECT_EQ(e.shortfalls()[0].free_bytes, kU64Max);
}

TEST(PlanMemory, NoFreeMemoryAnywhereIsAnError) {
  const auto devices = with_memory({0, 0});
  const InsufficientMemoryError e = memory_error_of([&] { plan_memory(devices, 3, 10); });
  EXPECT_NE(std::string(e.what()).find("30"), std::string::npos);
  EXPECT_EQ(plan_error_of([&] { plan_memory(devices, 3); }).field(), "free_memory_bytes");
}

TEST(PlanMemory, NoDevicesOrDuplicatesAreErrors) {
  EXPECT_EQ(plan_error_of([] { plan_memory({}, 3); }).field(), "devices");
  std::vector<MemoryDevice> devices = with_memory({10, 10});
  devices[1].device = devices[0].device;
  EXPECT_EQ(plan_error_of([&] { plan_memory(devices, 3); }).field(), "devices");
}

// ---------------------------------------------------------------------------
// apply_plan

TEST(ApplyPlan, EveryItemAppearsExactlyOnceWithoutCopies) {
  std::vector<int> items(1000);
  for (std::size_t i = 0; i < items.size(); ++i) items[i] = static_cast<int>(i * 7 + 3);
  const Plan plan = plan_capacity(weighted({3, 0, 1.5, 2}), items.size(), 300);
  ASSERT_GT(plan.unassigned, 0u);
  const AppliedPlan<int> applied = apply_plan(plan, std::span<const int>(items));
  ASSERT_EQ(applied.per_device.size(), plan.assignments.size());
  std::vector<int> seen;
  for (std::size_t i = 0; i < applied.per_device.size(); ++i) {
    const auto& [device, span] = applied.per_device[i];
    EXPECT_EQ(device, plan.assignments[i].device);
    EXPECT_EQ(span.data(), items.data() + plan.assignments[i].start);  // a view, not a copy
    seen.insert(seen.end(), span.begin(), span.end());
  }
  EXPECT_EQ(applied.unassigned.data(), items.data() + plan.assigned());
  seen.insert(seen.end(), applied.unassigned.begin(), applied.unassigned.end());
  EXPECT_EQ(seen, items);  // each exactly once, in order
}

TEST(ApplyPlan, RejectsItemsOfTheWrongSize) {
  const std::vector<int> items(5);
  const Plan plan = plan_uniform(keys(2), 6);
  EXPECT_EQ(plan_error_of([&] { apply_plan(plan, std::span<const int>(items)); }).field(), "items");
}

// ---------------------------------------------------------------------------
// Properties over random inputs (fixed seeds)

// Slack for comparing exact counts with long double quotas: the quota itself
// carries ~1e-18 relative rounding, so "within one" is checked as < 1 + 1e-9.
constexpr long double kSlack = 1e-9L;

std::size_t random_device_count(std::mt19937_64& rng) {
  switch (rng() % 3) {
    case 0: return 1 + rng() % 8;
    case 1: return 1 + rng() % 200;
    default: return 1 + rng() % 10'000;
  }
}

u64 random_item_count(std::mt19937_64& rng) {
  switch (rng() % 4) {
    case 0: return rng() % 20;
    case 1: return rng() % 1000;
    default: return rng() % 10'000'001;
  }
}

// Zeros, small integers, huge integers, fractions, and 1e-300..1e300.
std::vector<double> random_weights(std::mt19937_64& rng, std::size_t count) {
  const int style = static_cast<int>(rng() % 6);
  const double zero_chance = (rng() % 3 == 0) ? 0.3 : 0.0;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<double> weights(count);
  for (double& w : weights) {
    if (unit(rng) < zero_chance) continue;
    switch (style) {
      case 0: w = static_cast<double>(rng() % 101); break;
      case 1: w = unit(rng); break;
      case 2: w = std::pow(10.0, unit(rng) * 600.0 - 300.0); break;
      case 3: w = static_cast<double>(rng() >> 2); break;  // integral, up to 2^62
      case 4: w = 1e-300 * (1.0 + unit(rng)); break;
      default: w = (rng() % 2 == 0) ? static_cast<double>(rng() % 1000) : unit(rng) * 1e6; break;
    }
  }
  if (std::none_of(weights.begin(), weights.end(), [](double w) { return w > 0; })) weights[rng() % count] = 1.0;
  return weights;
}

long double total_of(const std::vector<double>& weights) {
  long double total = 0;
  for (const double w : weights) total += w;
  return total;
}

TEST(DistributionProperty, CapacityCountsStayWithinOneOfTheirQuota) {
  std::mt19937_64 rng(20240611);
  for (int trial = 0; trial < 300; ++trial) {
    const std::size_t device_count = random_device_count(rng);
    const u64 items = random_item_count(rng);
    const std::vector<double> weights = random_weights(rng, device_count);
    SCOPED_TRACE(fmt::format("trial {} devices {} items {}", trial, device_count, items));

    const Plan plan = plan_capacity(weighted(weights), items);
    expect_well_formed(plan, keys(device_count));
    ASSERT_EQ(plan.unassigned, 0u);
    const long double total = total_of(weights);
    for (std::size_t i = 0; i < device_count; ++i) {
      const u64 count = plan.assignments[i].count;
      if (weights[i] == 0) {
        ASSERT_EQ(count, 0u) << "device " << i;
        continue;
      }
      const long double quota = static_cast<long double>(items) * weights[i] / total;
      ASSERT_LT(std::fabs(static_cast<long double>(count) - quota), 1 + kSlack)
          << "device " << i << " weight " << weights[i] << " quota " << static_cast<double>(quota);
    }
  }
}

// Largest remainder computed independently with 128-bit division: floors,
// then the leftovers to the largest remainders, ties to the earlier index.
Counts reference_apportion(const std::vector<u128>& weights, u64 n) {
  u128 total = 0;
  for (const u128 w : weights) total += w;
  Counts counts(weights.size());
  std::vector<u128> remainders(weights.size());
  u64 assigned = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    counts[i] = static_cast<u64>(n * weights[i] / total);
    remainders[i] = n * weights[i] % total;
    assigned += counts[i];
  }
  std::vector<std::size_t> order(weights.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return remainders[a] > remainders[b]; });
  for (std::size_t k = 0; k < n - assigned; ++k) ++counts[order[k]];
  return counts;
}

TEST(DistributionProperty, ExactPathMatchesIndependentIntegerArithmetic) {
  // Weights m·2^(shift - scale) with m < 2^40 and shifts within 20 bits are
  // exact doubles (integral or not) whose ratios fit the 128-bit path even for
  // n near 2^64, where quotients are largest.
  std::mt19937_64 rng(4242);
  for (int trial = 0; trial < 300; ++trial) {
    const std::size_t device_count = 1 + rng() % 50;
    const int scale = static_cast<int>(rng() % 80);
    std::vector<u128> exact(device_count);
    std::vector<double> weights(device_count);
    for (std::size_t i = 0; i < device_count; ++i) {
      if (rng() % 5 == 0) continue;  // zero weight
      const u64 mantissa = rng() >> (24 + rng() % 40);
      const int shift = static_cast<int>(rng() % 21);
      exact[i] = static_cast<u128>(mantissa) << shift;
      weights[i] = std::ldexp(static_cast<double>(mantissa), shift - scale);
    }
    if (std::all_of(exact.begin(), exact.end(), [](u128 w) { return w == 0; })) {
      exact[0] = 1;
      weights[0] = std::ldexp(1.0, -scale);
    }
    const u64 n = trial % 3 == 0 ? kU64Max - rng() % 1000 : rng() >> (rng() % 64);
    SCOPED_TRACE(fmt::format("trial {} devices {} items {}", trial, device_count, n));
    ASSERT_EQ(apportion(weights, n), reference_apportion(exact, n));
  }
}

// Any finite weights as the integers w·2^-e, e the lowest exponent of a set bit
// among them (for spreads well within 128 bits).
std::vector<u128> dyadic_integers(const std::vector<double>& weights) {
  int lowest = std::numeric_limits<int>::max();
  for (const double w : weights) {
    if (w == 0) continue;
    int exponent = 0;
    std::frexp(w, &exponent);
    lowest = std::min(lowest, exponent - 53);
  }
  std::vector<u128> exact(weights.size(), 0);
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] == 0) continue;
    int exponent = 0;
    const double fraction = std::frexp(weights[i], &exponent);
    exact[i] = static_cast<u128>(static_cast<u64>(std::ldexp(fraction, 53))) << (exponent - 53 - lowest);
  }
  return exact;
}

TEST(DistributionProperty, PlanSizedInputsMatchIndependentIntegerArithmetic) {
  // Hundreds to thousands of devices and up to ~2^41/devices items (where
  // quotas are first estimated in double precision), with the inputs that make
  // estimates hard to trust: many equal weights (exact ties), quotas that are
  // exactly integral, decimal and random fractional weights, zeros.
  std::mt19937_64 rng(99);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int trial = 0; trial < 450; ++trial) {
    const std::size_t device_count = trial % 4 == 0 ? 1 + rng() % 8 : 1 + rng() % 3000;
    const int style = trial % 9;
    std::vector<double> weights(device_count);
    for (double& w : weights) {
      switch (style) {
        case 0: w = 1.0 + 99.0 * unit(rng); break;                  // TFLOPS-like, as in the benchmark
        case 1: w = static_cast<double>(rng() % 6); break;          // few values: ties everywhere
        case 2: w = 2.5; break;                                     // all equal
        case 3: w = static_cast<double>(1 + rng() % 1000); break;   // integral; n below makes quotas integral
        case 4: w = static_cast<double>(rng() % 100) * 0.1; break;  // decimals (not exact in binary)
        case 5: w = std::ldexp(1.0 + unit(rng), static_cast<int>(rng() % 20) - 10); break;  // wide spread
        case 6: w = (rng() % 3 == 0) ? 0.0 : 1.0 + static_cast<double>(rng() % 3) * 0.5; break;
        default:
          w = std::ldexp(1.75 + static_cast<double>(rng() % 64) * 0x1p-52, style - 7);
          break;  // neighbours:
                  // fractions closer together than the estimates' rounding, so only exact arithmetic orders them
      }
      if (style != 2 && style < 7 && rng() % 17 == 0) w = 0;
    }
    if (std::none_of(weights.begin(), weights.end(), [](double w) { return w > 0; })) weights[0] = 1;
    const std::vector<u128> exact = dyadic_integers(weights);
    u64 n = 0;
    switch (rng() % 5) {
      case 0: n = rng() % 20; break;
      case 1: n = rng() % 10'000'001; break;
      case 2: {
        u128 total = 0;
        for (const u128 w : exact) total += w;
        n = total < (u128{1} << 30) ? static_cast<u64>(total) * (1 + rng() % 1000) : rng() % 10'000'001;
        break;
      }
      case 3: n = (u64{1} << 41) / (device_count + 8) - rng() % 3; break;  // about the estimates' limit
      default: n = (u64{1} << 41) / (device_count + 8) + 1 + rng() % 1000; break;
    }
    SCOPED_TRACE(fmt::format("trial {} style {} devices {} items {}", trial, style, device_count, n));
    const Counts expected = reference_apportion(exact, n);
    ASSERT_EQ(apportion(weights, n), expected);
    if (trial % 10 == 0) {
      ASSERT_EQ(counts_of(plan_capacity(weighted(weights), n)), expected);
    }
  }
}

TEST(DistributionProperty, CappedCountsRespectCapsAndFillFairly) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const std::size_t device_count = random_device_count(rng);
    const u64 items = random_item_count(rng);
    const std::vector<double> weights = random_weights(rng, device_count);
    // Caps around the even share, so both "everything fits" and "caps bind" occur.
    const u64 even = items / device_count + 1;
    Counts caps(device_count);
    for (u64& cap : caps) cap = rng() % (2 * even + 1);
    SCOPED_TRACE(fmt::format("trial {} devices {} items {}", trial, device_count, items));

    const Counts counts = apportion_capped(weights, items, caps);
    ASSERT_EQ(counts.size(), device_count);
    u64 capacity = 0;
    u64 assigned = 0;
    for (std::size_t i = 0; i < device_count; ++i) {
      ASSERT_LE(counts[i], caps[i]) << "device " << i;
      if (weights[i] == 0) {
        ASSERT_EQ(counts[i], 0u) << "device " << i;
      }
      if (weights[i] > 0) capacity += caps[i];
      assigned += counts[i];
    }
    ASSERT_EQ(assigned, std::min(items, capacity));  // nothing lost: the rest is the caller's unassigned

    // Water-filling: no device got more per weight than one below its cap
    // (beyond the ±1 of rounding): max (c_j-1)/w_j < min over unsaturated (c_i+1)/w_i.
    long double highest = -1;
    long double lowest_open = std::numeric_limits<long double>::infinity();
    for (std::size_t i = 0; i < device_count; ++i) {
      if (weights[i] == 0) continue;
      highest = std::max(highest, (static_cast<long double>(counts[i]) - 1) / weights[i]);
      if (counts[i] < caps[i])
        lowest_open = std::min(lowest_open, (static_cast<long double>(counts[i]) + 1) / weights[i]);
    }
    ASSERT_LT(highest, lowest_open * (1 + kSlack));

    const Plan plan = plan_capacity(weighted(weights), items, even);
    expect_well_formed(plan, keys(device_count));
    for (const Assignment& a : plan.assignments) ASSERT_LE(a.count, even);
  }
}

TEST(DistributionProperty, UniformSizesDifferByAtMostOne) {
  std::mt19937_64 rng(99);
  for (int trial = 0; trial < 300; ++trial) {
    const std::size_t device_count = random_device_count(rng);
    const u64 items = trial % 50 == 0 ? kU64Max - rng() % 1000 : random_item_count(rng);
    std::optional<u64> cap;
    if (rng() % 2 == 0) cap = rng() % (items / device_count + 3);
    SCOPED_TRACE(fmt::format("trial {} devices {} items {}", trial, device_count, items));

    const auto devices = keys(device_count);
    const Plan plan = plan_uniform(devices, items, cap);
    expect_well_formed(plan, devices);
    const Counts counts = counts_of(plan);
    ASSERT_TRUE(std::is_sorted(counts.rbegin(), counts.rend())) << "earlier devices get the extra";
    ASSERT_LE(counts.front() - counts.back(), 1u);
    if (cap) {
      ASSERT_LE(counts.front(), *cap);
      const bool caps_bind = *cap < items / device_count + (items % device_count != 0 ? 1 : 0);
      ASSERT_EQ(plan.unassigned, caps_bind ? items - *cap * device_count : 0u);
    } else {
      ASSERT_EQ(plan.unassigned, 0u);
    }
  }
}

TEST(DistributionProperty, MemoryShardsFitOrTheErrorIsJustified) {
  std::mt19937_64 rng(31337);
  int fitted = 0;
  int rebalanced = 0;
  int refused = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const std::size_t device_count = 1 + rng() % (trial % 3 == 0 ? 500 : 8);
    std::vector<u64> free_bytes(device_count);
    for (u64& f : free_bytes) f = (rng() % 4 == 0) ? 0 : rng() % (80 * kGiB) + (rng() % 2) * (rng() % 1000);
    if (std::all_of(free_bytes.begin(), free_bytes.end(), [](u64 f) { return f == 0; })) free_bytes[0] = kGiB;
    const u64 layers = 1 + rng() % (trial % 2 == 0 ? 200 : 100'000);
    const u64 total_free = std::accumulate(free_bytes.begin(), free_bytes.end(), u64{0});
    // Layer size around total_free/layers: fits, needs a rebalance, or cannot fit.
    const u64 layer_bytes = std::max<u64>(1, total_free / layers * (85 + rng() % 30) / 100);
    SCOPED_TRACE(fmt::format("trial {} devices {} layers {} layer_bytes {}", trial, device_count, layers, layer_bytes));

    const auto devices = with_memory(free_bytes);
    const std::vector<double> free_weights(free_bytes.begin(), free_bytes.end());
    const Counts proportional = apportion(free_weights, layers);
    ASSERT_EQ(counts_of(plan_memory(devices, layers)), proportional);

    u64 capacity = 0;
    bool proportional_fits = true;
    for (std::size_t i = 0; i < device_count; ++i) {
      capacity += free_bytes[i] / layer_bytes;
      proportional_fits = proportional_fits && proportional[i] <= free_bytes[i] / layer_bytes;
    }
    if (capacity < layers) {
      ++refused;
      const InsufficientMemoryError e = memory_error_of([&] { plan_memory(devices, layers, layer_bytes); });
      std::size_t next = 0;
      for (std::size_t i = 0; i < device_count; ++i) {
        if (proportional[i] <= free_bytes[i] / layer_bytes) continue;
        ASSERT_LT(next, e.shortfalls().size());
        const MemoryShortfall& s = e.shortfalls()[next++];
        ASSERT_EQ(s.device, devices[i].device.str());
        ASSERT_EQ(s.layers, proportional[i]);
        ASSERT_EQ(s.needed_bytes, proportional[i] * layer_bytes);
        ASSERT_EQ(s.free_bytes, free_bytes[i]);
        ASSERT_GT(s.needed_bytes, s.free_bytes);
      }
      ASSERT_EQ(next, e.shortfalls().size());
      continue;
    }
    const Plan plan = plan_memory(devices, layers, layer_bytes);
    expect_well_formed(plan, keys(device_count));
    ASSERT_EQ(plan.unassigned, 0u);
    for (std::size_t i = 0; i < device_count; ++i) {
      ASSERT_LE(plan.assignments[i].count, free_bytes[i] / layer_bytes) << "device " << i << " overflows";
      if (free_bytes[i] == 0) {
        ASSERT_EQ(plan.assignments[i].count, 0u);
      }
    }
    if (proportional_fits) {
      ++fitted;
      ASSERT_EQ(counts_of(plan), proportional);  // the seed's placement whenever it fits
    } else {
      ++rebalanced;
    }
  }
  // The generator must exercise every outcome.
  EXPECT_GT(fitted, 0);
  EXPECT_GT(rebalanced, 0);
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace gpucluster
