#pragma once
// Retry delays after a failed report: exponential backoff with full jitter
// (a delay drawn uniformly from [0, min(cap, base × 2^attempt)]), so agents
// that lost their coordinator together do not come back together.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>

namespace gpucluster {

struct BackoffPolicy {
  std::chrono::milliseconds base{100};
  std::chrono::milliseconds cap{1000};
};

// The ceiling of the delay after `attempt` failures in a row (attempt 0: base).
inline std::chrono::milliseconds backoff_ceiling(const BackoffPolicy& policy, std::uint32_t attempt) {
  const std::uint32_t doublings = std::min<std::uint32_t>(attempt, 30);  // 2^30 × base is past any cap
  const auto ceiling = policy.base.count() * (std::int64_t{1} << doublings);
  return std::chrono::milliseconds{std::min<std::int64_t>(ceiling, policy.cap.count())};
}

// A delay in [0, backoff_ceiling], at least the server's Retry-After when it sent one.
template <class Random>
std::chrono::milliseconds backoff_delay(const BackoffPolicy& policy, std::uint32_t attempt, Random& random,
                                        std::chrono::milliseconds retry_after = std::chrono::milliseconds{0}) {
  std::uniform_int_distribution<std::int64_t> draw(0, backoff_ceiling(policy, attempt).count());
  return std::max(std::chrono::milliseconds{draw(random)}, retry_after);
}

}  // namespace gpucluster
