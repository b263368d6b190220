#include "cluster/clock_offset.hpp"

#include <algorithm>

namespace gpucluster {

void ClockOffset::first_contact(Timestamp sent_at, Timestamp received) {
  if (filled_ > 0) return;  // exchanges are better than a one-way estimate
  offset_ = received - sent_at;
  error_.reset();
  known_ = true;
}

void ClockOffset::exchange(Timestamp t0, Timestamp r, Timestamp t, Timestamp t1) {
  const std::chrono::nanoseconds delay = (t1 - t0) - (t - r);
  if (delay.count() < 0 || t < r || t1 < t0) return;
  filter_[next_] = Estimate{((r - t0) + (t - t1)) / 2, delay};
  next_ = (next_ + 1) % kFilterSize;
  filled_ = std::min(filled_ + 1, kFilterSize);
  const auto best = std::min_element(filter_.begin(), filter_.begin() + static_cast<std::ptrdiff_t>(filled_),
                                     [](const Estimate& a, const Estimate& b) { return a.delay < b.delay; });
  offset_ = best->offset;
  error_ = best->delay / 2;
  known_ = true;
}

}  // namespace gpucluster
