#pragma once
// Samples of this node's devices waiting to be acknowledged by each
// coordinator: a bounded ring per device (the oldest is dropped first when it
// is full) and, per link, the index of the next sample to deliver. A link whose
// cursor falls behind the ring's oldest sample reports the gap as dropped.
// Delivery is in order: a batch is taken, sent, and only its acknowledgement
// moves the link's cursors. Thread-safe.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "gpucluster/model/sample.hpp"

namespace gpucluster {

class Outbox {
 public:
  Outbox(std::size_t capacity_per_device, std::size_t links);

  // A new link (a coordinator found later, e.g. in etcd): its index. It is
  // owed every sample the rings still hold. Indices are never reused.
  std::size_t add_link();

  // Appends the samples (oldest first) newer than the device's newest one.
  void append(const std::string& device, const std::vector<Sample>& samples);
  // The device's newest sample time (epoch when none yet).
  Timestamp newest(const std::string& device) const;

  struct Batch {
    std::map<std::string, std::vector<Sample>> samples;  // device → oldest first
    std::map<std::string, std::uint64_t> dropped;        // device → samples lost before these
    std::map<std::string, std::uint64_t> upto;           // device → the cursor once acknowledged
    std::size_t count = 0;
    bool more = false;  // samples were left for the next batch (limits)
  };
  Batch take(std::size_t link, std::size_t max_per_device, std::size_t max_total) const;
  void acknowledge(std::size_t link, const Batch& batch);

  std::uint64_t backlog(std::size_t link) const;  // samples not yet acknowledged
  std::uint64_t dropped(std::size_t link) const;  // samples this link never got (acknowledged gaps)

 private:
  struct Ring {
    std::deque<Sample> samples;
    std::uint64_t first_index = 0;  // index of samples.front()
    std::vector<std::uint64_t> cursors;
  };
  // The cursor of `link` in `ring`, created at the ring's oldest sample for a link added later.
  std::uint64_t& cursor(Ring& ring, std::size_t link);

  const std::size_t capacity_;
  std::size_t links_;
  mutable std::mutex mutex_;
  std::map<std::string, Ring> rings_;
  std::vector<std::uint64_t> dropped_;
};

}  // namespace gpucluster
