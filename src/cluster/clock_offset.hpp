#pragma once
// How far a node's wall clock is from the coordinator's, estimated from the
// report exchanges (NTP's on-wire calculation and clock filter, RFC 5905 §8
// and §10): offset = coordinator wall − node wall. Samples a node sends are
// stored at their timestamp + offset, so a node whose clock is hours off is
// neither stale nor in the future.
#include <array>
#include <chrono>
#include <cstddef>
#include <optional>

#include "gpucluster/model/time.hpp"

namespace gpucluster {

class ClockOffset {
 public:
  // The first report of a node: one-way, offset = received − sent_at (off by
  // at most the transfer delay, which the error then is taken to be unknown).
  void first_contact(Timestamp sent_at, Timestamp received);
  // One full exchange: t0 the node sent, r the coordinator received, t it
  // replied, t1 the node received. θ = ((r − t0) + (t − t1)) / 2 and the round
  // trip δ = (t1 − t0) − (t − r). Of the last kFilterSize exchanges, the one
  // with the smallest δ gives the offset, and its δ / 2 bounds the error.
  // An exchange with δ < 0 (impossible unless a clock stepped) is ignored.
  void exchange(Timestamp t0, Timestamp r, Timestamp t, Timestamp t1);

  bool known() const noexcept { return known_; }
  std::chrono::nanoseconds offset() const noexcept { return offset_; }
  // nullopt while only the one-way estimate exists.
  std::optional<std::chrono::nanoseconds> error() const noexcept { return error_; }

  static constexpr std::size_t kFilterSize = 8;

 private:
  struct Estimate {
    std::chrono::nanoseconds offset{0};
    std::chrono::nanoseconds delay{0};
  };
  std::array<Estimate, kFilterSize> filter_{};
  std::size_t filled_ = 0, next_ = 0;
  bool known_ = false;
  std::chrono::nanoseconds offset_{0};
  std::optional<std::chrono::nanoseconds> error_;
};

}  // namespace gpucluster
