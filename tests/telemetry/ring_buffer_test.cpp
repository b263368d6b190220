#include "telemetry/ring_buffer.hpp"

#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

namespace gpucluster {
namespace {

std::vector<int> contents(const RingBuffer<int>& ring) {
  std::vector<int> out;
  for (std::size_t i = 0; i < ring.size(); ++i) out.push_back(ring[i]);
  return out;
}

TEST(RingBuffer, ZeroCapacityThrows) {
  EXPECT_THROW(RingBuffer<int>(0), std::invalid_argument);
}

TEST(RingBuffer, StartsEmptyWithItsCapacity) {
  const RingBuffer<int> ring(4);
  EXPECT_TRUE(ring.empty());
  EXPECT_EQ(ring.size(), 0u);
  EXPECT_EQ(ring.capacity(), 4u);
  EXPECT_EQ(ring.allocated(), 0u);  // storage comes with the elements
  EXPECT_EQ(ring.storage_bytes(), 0u);
}

// Storage grows in chunks (doubling from kFirstChunk) up to exactly the bound,
// keeping the elements in order, and never grows again once full.
TEST(RingBuffer, StorageGrowsInChunksUpToTheBound) {
  RingBuffer<int> ring(100);
  std::vector<std::size_t> sizes_seen;
  for (int i = 0; i < 250; ++i) {
    ring.push(i);
    if (sizes_seen.empty() || sizes_seen.back() != ring.allocated()) sizes_seen.push_back(ring.allocated());
    ASSERT_GE(ring.allocated(), ring.size());
  }
  EXPECT_EQ(sizes_seen, (std::vector<std::size_t>{8, 16, 32, 64, 100}));
  EXPECT_EQ(ring.storage_bytes(), 100 * sizeof(int));
  EXPECT_EQ(ring.size(), 100u);
  EXPECT_EQ(ring.front(), 150);
  EXPECT_EQ(ring.back(), 249);
}

// Growing after pop_front (the age limit) and wrapping keeps the order.
TEST(RingBuffer, GrowthAfterPopFrontAndWrapKeepsTheOrder) {
  RingBuffer<int> ring(20);
  std::vector<int> reference;
  for (int i = 0; i < 8; ++i) ring.push(i), reference.push_back(i);
  for (int i = 0; i < 5; ++i) ring.pop_front(), reference.erase(reference.begin());
  for (int i = 8; i < 40; ++i) {
    ring.push(i);
    reference.push_back(i);
    if (reference.size() > 20) reference.erase(reference.begin());
    ASSERT_EQ(contents(ring), reference) << "after pushing " << i;
  }
}

TEST(RingBuffer, PushBelowCapacityKeepsInsertionOrder) {
  RingBuffer<int> ring(4);
  ring.push(1);
  ring.push(2);
  ring.push(3);
  EXPECT_FALSE(ring.empty());
  EXPECT_EQ(ring.size(), 3u);
  EXPECT_EQ(contents(ring), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(ring.front(), 1);
  EXPECT_EQ(ring.back(), 3);
}

TEST(RingBuffer, WraparoundOverwritesTheOldest) {
  RingBuffer<int> ring(3);
  for (int i = 0; i < 10; ++i) {
    ring.push(i);
    EXPECT_EQ(ring.size(), std::min<std::size_t>(static_cast<std::size_t>(i) + 1, 3u));
    EXPECT_EQ(ring.back(), i);
  }
  EXPECT_EQ(ring.capacity(), 3u);
  EXPECT_EQ(contents(ring), (std::vector<int>{7, 8, 9}));
  EXPECT_EQ(ring.front(), 7);
}

TEST(RingBuffer, CapacityOneKeepsOnlyTheNewest) {
  RingBuffer<int> ring(1);
  ring.push(5);
  ring.push(6);
  EXPECT_EQ(ring.size(), 1u);
  EXPECT_EQ(ring.front(), 6);
  EXPECT_EQ(ring.back(), 6);
}

TEST(RingBuffer, PopFrontRemovesTheOldest) {
  RingBuffer<int> ring(3);
  ring.push(1);
  ring.push(2);
  ring.push(3);
  ring.pop_front();
  EXPECT_EQ(contents(ring), (std::vector<int>{2, 3}));
  ring.pop_front();
  EXPECT_EQ(contents(ring), (std::vector<int>{3}));
  ring.pop_front();
  EXPECT_TRUE(ring.empty());
  ring.pop_front();  // no-op on empty
  EXPECT_TRUE(ring.empty());
  EXPECT_EQ(ring.size(), 0u);
}

TEST(RingBuffer, PopFrontAfterWraparoundThenPushAgain) {
  RingBuffer<int> ring(3);
  for (int i = 0; i < 5; ++i) ring.push(i);  // holds 2,3,4; head wrapped
  ring.pop_front();                          // 3,4
  EXPECT_EQ(contents(ring), (std::vector<int>{3, 4}));
  ring.push(5);  // 3,4,5
  EXPECT_EQ(contents(ring), (std::vector<int>{3, 4, 5}));
  ring.push(6);  // 4,5,6
  EXPECT_EQ(contents(ring), (std::vector<int>{4, 5, 6}));
  ring.pop_front();
  ring.pop_front();
  ring.push(7);
  EXPECT_EQ(contents(ring), (std::vector<int>{6, 7}));
}

TEST(RingBuffer, ClearEmptiesAndKeepsCapacity) {
  RingBuffer<int> ring(3);
  for (int i = 0; i < 4; ++i) ring.push(i);
  ring.clear();
  EXPECT_TRUE(ring.empty());
  EXPECT_EQ(ring.capacity(), 3u);
  EXPECT_EQ(ring.storage_bytes(), 0u);  // the storage is given back
  ring.push(42);
  EXPECT_EQ(contents(ring), (std::vector<int>{42}));
}

TEST(RingBuffer, ManyWrapsMatchAReferenceWindow) {
  constexpr std::size_t kCapacity = 7;
  RingBuffer<int> ring(kCapacity);
  std::vector<int> reference;
  for (int i = 0; i < 200; ++i) {
    if (i % 5 == 4 && !reference.empty()) {
      ring.pop_front();
      reference.erase(reference.begin());
    } else {
      ring.push(i);
      reference.push_back(i);
      if (reference.size() > kCapacity) reference.erase(reference.begin());
    }
    ASSERT_EQ(contents(ring), reference) << "after step " << i;
  }
}

}  // namespace
}  // namespace gpucluster
