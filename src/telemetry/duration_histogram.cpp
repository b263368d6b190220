#include "gpucluster/telemetry/duration_histogram.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {

std::vector<double> DurationHistogram::default_bounds() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

DurationHistogram::DurationHistogram(std::vector<double> upper_bounds_seconds)
    : upper_bounds_seconds_(std::move(upper_bounds_seconds)),
      counts_(std::make_unique<std::atomic<std::uint64_t>[]>(upper_bounds_seconds_.size() + 1)) {
  for (std::size_t i = 0; i < upper_bounds_seconds_.size(); ++i) {
    const double bound = upper_bounds_seconds_[i];
    if (!std::isfinite(bound) || (i > 0 && bound <= upper_bounds_seconds_[i - 1])) {
      throw InputError("upper_bounds_seconds", std::to_string(bound), "finite and strictly increasing");
    }
  }
}

void DurationHistogram::observe(std::chrono::nanoseconds duration) noexcept {
  const double seconds = std::chrono::duration<double>(duration).count();
  const auto bucket =
      static_cast<std::size_t>(std::lower_bound(upper_bounds_seconds_.begin(), upper_bounds_seconds_.end(), seconds) -
                               upper_bounds_seconds_.begin());
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_nanoseconds_.fetch_add(static_cast<std::uint64_t>(std::max<std::int64_t>(0, duration.count())),
                             std::memory_order_relaxed);
}

DurationHistogram::Snapshot DurationHistogram::snapshot() const {
  Snapshot snapshot;
  snapshot.upper_bounds_seconds = upper_bounds_seconds_;
  snapshot.cumulative_counts.reserve(upper_bounds_seconds_.size() + 1);
  std::uint64_t running = 0;
  for (std::size_t i = 0; i <= upper_bounds_seconds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    snapshot.cumulative_counts.push_back(running);
  }
  snapshot.count = running;
  snapshot.sum_seconds = static_cast<double>(sum_nanoseconds_.load(std::memory_order_relaxed)) / 1e9;
  return snapshot;
}

}  // namespace gpucluster
