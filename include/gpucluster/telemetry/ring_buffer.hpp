#pragma once
// Fixed-capacity ring buffer: O(1) push that overwrites the oldest element,
// storage allocated once at construction (no allocation in steady state).

#include <cassert>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <vector>

namespace gpucluster {

template <class T>
class RingBuffer {
 public:
  explicit RingBuffer(std::size_t capacity) : storage_(capacity) {
    if (capacity == 0) throw std::invalid_argument("RingBuffer capacity must be at least 1");
  }

  std::size_t capacity() const noexcept { return storage_.size(); }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  void push(const T& value) noexcept {
    storage_[head_] = value;
    head_ = head_ + 1 == storage_.size() ? 0 : head_ + 1;
    if (size_ < storage_.size()) ++size_;
  }

  // i = 0 is the oldest element.
  const T& operator[](std::size_t i) const noexcept {
    assert(i < size_);
    std::size_t index = first_index() + i;
    if (index >= storage_.size()) index -= storage_.size();
    return storage_[index];
  }
  const T& front() const noexcept { return (*this)[0]; }
  const T& back() const noexcept { return (*this)[size_ - 1]; }

  void pop_front() noexcept {
    if (size_ > 0) --size_;
  }
  void clear() noexcept { size_ = 0; }

  // Bytes held for element storage, for memory accounting.
  std::size_t storage_bytes() const noexcept { return storage_.capacity() * sizeof(T); }

 private:
  std::size_t first_index() const noexcept { return head_ >= size_ ? head_ - size_ : head_ + storage_.size() - size_; }

  std::vector<T> storage_;
  std::size_t head_ = 0;  // next write position
  std::size_t size_ = 0;
};

}  // namespace gpucluster
