#pragma once
// Work distribution: items 0..N-1 are split into contiguous ranges per device.
// Plans are computed in O(devices) (O(devices log devices) with caps), never
// O(items), and never lose an item: what no device can take is counted in
// `unassigned`, and it is always the tail of the item range.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gpucluster/model/device.hpp"
#include "gpucluster/model/errors.hpp"

namespace gpucluster {

enum class Strategy : std::uint8_t { uniform, capacity, memory };
std::string_view to_string(Strategy strategy) noexcept;
std::optional<Strategy> parse_strategy(std::string_view text) noexcept;

struct Assignment {
  DeviceKey device;
  std::uint64_t start = 0;  // first item (or layer) index
  std::uint64_t count = 0;
  bool operator==(const Assignment&) const = default;
};

// A registered device a plan did not use, and why (unavailable, no sample,
// stale telemetry, no weight given).
struct LeftOut {
  DeviceKey device;
  std::string reason;
  bool operator==(const LeftOut&) const = default;
};

struct Plan {
  Strategy strategy = Strategy::uniform;
  std::uint64_t total_items = 0;
  std::vector<Assignment> assignments;  // one per device, in the order the devices were given
  std::uint64_t unassigned = 0;         // items [total_items - unassigned, total_items)
  std::vector<LeftOut> left_out;        // filled by Manager::plan: every registered device not in `assignments`

  std::uint64_t assigned() const noexcept { return total_items - unassigned; }
};

// Largest-remainder apportionment of n among weights: each count is within 1
// of its exact quota n*w/Σw, zero weight gets 0, integral quotas are exact,
// leftover ties go to the earlier index. Weights must be finite, ≥ 0, Σ > 0.
// Exact for every such input and any n (subnormal to DBL_MAX weights, a Σ past
// DBL_MAX): the counts are those of exact rational arithmetic on the weights.
std::vector<std::uint64_t> apportion(std::span<const double> weights, std::uint64_t n);

// As apportion, with a per-index cap: capped indices are filled to their cap and
// the rest re-apportioned among the others (water-filling at the exact level:
// an index is filled iff its quota at that level reaches its cap). Returns
// counts, each ≤ its cap; the sum is min(n, the caps of positive weights).
std::vector<std::uint64_t> apportion_capped(std::span<const double> weights, std::uint64_t n,
                                            std::span<const std::uint64_t> caps);

// Sizes differ by at most one; earlier devices get the extra items.
Plan plan_uniform(std::span<const DeviceKey> devices, std::uint64_t items,
                  std::optional<std::uint64_t> max_per_device = std::nullopt);

struct WeightedDevice {
  DeviceKey device;
  double weight = 0;
};
// Proportional to weights. Throws PlanError for no devices, a negative, NaN or
// infinite weight, a zero total, or the same device twice.
Plan plan_capacity(std::span<const WeightedDevice> devices, std::uint64_t items,
                   std::optional<std::uint64_t> max_per_device = std::nullopt);

struct MemoryDevice {
  DeviceKey device;
  std::uint64_t free_memory_bytes = 0;
};
// A model of `layers` layers split into contiguous shards proportional to free
// memory. With layer_bytes, every shard fits its device (shards are rebalanced
// if rounding would overflow one); if the model cannot fit at all, throws
// InsufficientMemoryError naming each device that falls short and by how much.
Plan plan_memory(std::span<const MemoryDevice> devices, std::uint64_t layers,
                 std::optional<std::uint64_t> layer_bytes = std::nullopt);

// The caller's items split by a plan: spans into `items`, no copies.
template <class T>
struct AppliedPlan {
  std::vector<std::pair<DeviceKey, std::span<const T>>> per_device;
  std::span<const T> unassigned;
};

// Throws PlanError if items.size() differs from plan.total_items.
template <class T>
AppliedPlan<T> apply_plan(const Plan& plan, std::span<const T> items) {
  if (items.size() != plan.total_items) {
    throw PlanError("items", std::to_string(items.size()),
                    "must equal the plan's total_items (" + std::to_string(plan.total_items) + ")");
  }
  AppliedPlan<T> applied;
  applied.per_device.reserve(plan.assignments.size());
  for (const Assignment& a : plan.assignments) {
    applied.per_device.emplace_back(a.device, items.subspan(a.start, a.count));
  }
  applied.unassigned = items.subspan(plan.total_items - plan.unassigned, plan.unassigned);
  return applied;
}

}  // namespace gpucluster
