#include "cluster/outbox.hpp"

#include <algorithm>

namespace gpucluster {

Outbox::Outbox(std::size_t capacity_per_device, std::size_t links)
    : capacity_(std::max<std::size_t>(capacity_per_device, 1)), links_(links), dropped_(links, 0) {}

std::size_t Outbox::add_link() {
  std::lock_guard lock(mutex_);
  dropped_.push_back(0);
  return links_++;
}

std::uint64_t& Outbox::cursor(Ring& ring, std::size_t link) {
  if (ring.cursors.size() <= link) ring.cursors.resize(link + 1, ring.first_index);
  return ring.cursors[link];
}

void Outbox::append(const std::string& device, const std::vector<Sample>& samples) {
  std::lock_guard lock(mutex_);
  Ring& ring = rings_[device];
  if (ring.cursors.size() < links_) ring.cursors.resize(links_, ring.first_index);
  for (const Sample& sample : samples) {
    if (!ring.samples.empty() && sample.timestamp <= ring.samples.back().timestamp) continue;
    ring.samples.push_back(sample);
    if (ring.samples.size() > capacity_) {
      ring.samples.pop_front();
      ++ring.first_index;
    }
  }
}

Timestamp Outbox::newest(const std::string& device) const {
  std::lock_guard lock(mutex_);
  const auto it = rings_.find(device);
  return it == rings_.end() || it->second.samples.empty() ? Timestamp{} : it->second.samples.back().timestamp;
}

Outbox::Batch Outbox::take(std::size_t link, std::size_t max_per_device, std::size_t max_total) const {
  std::lock_guard lock(mutex_);
  Batch batch;
  for (const auto& [device, ring] : rings_) {
    const std::uint64_t position = link < ring.cursors.size() ? ring.cursors[link] : ring.first_index;
    const std::uint64_t start = std::max(position, ring.first_index);
    const std::uint64_t end = ring.first_index + ring.samples.size();
    if (start > position) batch.dropped[device] = start - position;
    if (start >= end) {
      if (start > position) batch.upto[device] = start;
      continue;
    }
    const std::size_t room = std::min(max_per_device, max_total - batch.count);
    const std::uint64_t stop = std::min<std::uint64_t>(end, start + room);
    if (stop < end) batch.more = true;
    if (stop > start) {
      auto& out = batch.samples[device];
      out.assign(ring.samples.begin() + static_cast<std::ptrdiff_t>(start - ring.first_index),
                 ring.samples.begin() + static_cast<std::ptrdiff_t>(stop - ring.first_index));
      batch.count += out.size();
    }
    batch.upto[device] = stop;
    if (batch.count >= max_total) {
      batch.more = batch.more || std::next(rings_.find(device)) != rings_.end();
      break;
    }
  }
  return batch;
}

void Outbox::acknowledge(std::size_t link, const Batch& batch) {
  std::lock_guard lock(mutex_);
  for (const auto& [device, upto] : batch.upto) {
    const auto it = rings_.find(device);
    if (it == rings_.end()) continue;
    std::uint64_t& at = cursor(it->second, link);
    at = std::max(at, upto);
  }
  for (const auto& [device, count] : batch.dropped) dropped_.at(link) += count;
}

std::uint64_t Outbox::backlog(std::size_t link) const {
  std::lock_guard lock(mutex_);
  std::uint64_t total = 0;
  for (const auto& [device, ring] : rings_) {
    const std::uint64_t end = ring.first_index + ring.samples.size();
    const std::uint64_t at = link < ring.cursors.size() ? ring.cursors[link] : ring.first_index;
    total += end - std::min(end, std::max(at, ring.first_index));
  }
  return total;
}

std::uint64_t Outbox::dropped(std::size_t link) const {
  std::lock_guard lock(mutex_);
  return dropped_.at(link);
}

}  // namespace gpucluster
