#pragma once
// A fixed-bucket histogram of durations for Prometheus-style export: observe()
// is lock-free (one relaxed atomic add per bucket hit), so hot paths such as a
// sampling pass or an HTTP request can record without contention.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

namespace gpucluster {

class DurationHistogram {
 public:
  // Upper bounds in seconds, strictly increasing and finite; +Inf is implied.
  explicit DurationHistogram(std::vector<double> upper_bounds_seconds = default_bounds());

  void observe(std::chrono::nanoseconds duration) noexcept;

  struct Snapshot {
    std::vector<double> upper_bounds_seconds;
    std::vector<std::uint64_t> cumulative_counts;  // one per bound, then the +Inf bucket (== count)
    double sum_seconds = 0;
    std::uint64_t count = 0;
  };
  Snapshot snapshot() const;

  // 100 µs … 10 s, roughly ×2.5 apart.
  static std::vector<double> default_bounds();

 private:
  std::vector<double> upper_bounds_seconds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // per bucket, +Inf last
  std::atomic<std::uint64_t> sum_nanoseconds_{0};
};

}  // namespace gpucluster
