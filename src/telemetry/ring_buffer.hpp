#pragma once
// Bounded ring buffer: O(1) push that overwrites the oldest element once
// `capacity` elements are held. Storage grows in chunks (doubling from 8) as
// elements arrive, so memory follows what is held rather than the bound;
// once full it never allocates again.

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <new>
#include <stdexcept>
#include <vector>

namespace gpucluster {

template <class T>
class RingBuffer {
 public:
  static constexpr std::size_t kFirstChunk = 8;

  explicit RingBuffer(std::size_t capacity) : capacity_(capacity) {
    if (capacity == 0) throw std::invalid_argument("RingBuffer capacity must be at least 1");
  }

  // The bound: at most this many elements are held.
  std::size_t capacity() const noexcept { return capacity_; }
  // Slots allocated now (≤ capacity).
  std::size_t allocated() const noexcept { return storage_.size(); }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  // Throws std::bad_alloc only when not even the first chunk can be had; a
  // later growth that fails keeps the slots already allocated as the bound.
  void push(const T& value) {
    if (size_ == storage_.size() && storage_.size() < capacity_) grow();
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
  // Empties the buffer and gives its storage back; the bound stays.
  void clear() noexcept {
    size_ = 0;
    head_ = 0;
    std::vector<T>().swap(storage_);
  }

  // Bytes held for element storage, for memory accounting.
  std::size_t storage_bytes() const noexcept { return storage_.capacity() * sizeof(T); }

 private:
  std::size_t first_index() const noexcept { return head_ >= size_ ? head_ - size_ : head_ + storage_.size() - size_; }

  // Called when every allocated slot holds an element: reallocates with the
  // elements oldest first, so the next write goes right after them.
  void grow() {
    const std::size_t next = std::min(capacity_, std::max(kFirstChunk, storage_.size() * 2));
    try {
      std::vector<T> grown(next);
      for (std::size_t i = 0; i < size_; ++i) grown[i] = (*this)[i];
      storage_.swap(grown);
      head_ = size_;
    } catch (const std::bad_alloc&) {
      if (storage_.empty()) throw;
      capacity_ = storage_.size();  // keep the newest within what we have
    }
  }

  std::vector<T> storage_;
  std::size_t capacity_;
  std::size_t head_ = 0;  // next write position
  std::size_t size_ = 0;
};

}  // namespace gpucluster
