#pragma once
// An optional floating-point reading stored in the value's own bits: absence
// is one NaN bit pattern that no arithmetic produces, so an optional float
// takes 4 bytes (std::optional<float> takes 8) and a Sample with every
// quantity of the field table stays within 56 bytes. A NaN that a device or a
// caller gives is a present value (validation rejects it); only the marker is
// absence. The interface is std::optional's, so callers read it the same way.

#include <bit>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <type_traits>

namespace gpucluster {

template <class T>
class PackedOptional {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "a float or a double");
  using Bits = std::conditional_t<std::is_same_v<T, float>, std::uint32_t, std::uint64_t>;
  // A quiet NaN with a payload of its own (x86 produces 0xFFC00000 / 0xFFF8…0,
  // std::nan("") 0x7FC00000 / 0x7FF8…0).
  static constexpr Bits kAbsent =
      static_cast<Bits>(std::is_same_v<T, float> ? 0x7FC0'DEADull : 0x7FF8'0000'DEAD'BEEFull);

 public:
  using value_type = T;

  constexpr PackedOptional() noexcept = default;
  constexpr PackedOptional(std::nullopt_t) noexcept {}
  constexpr PackedOptional(T value) noexcept : bits_(present_bits(value)) {}
  constexpr PackedOptional(const std::optional<T>& value) noexcept : bits_(value ? present_bits(*value) : kAbsent) {}

  constexpr PackedOptional& operator=(std::nullopt_t) noexcept {
    bits_ = kAbsent;
    return *this;
  }
  constexpr void reset() noexcept { bits_ = kAbsent; }

  constexpr bool has_value() const noexcept { return bits_ != kAbsent; }
  constexpr explicit operator bool() const noexcept { return has_value(); }
  // As std::optional: reading an absent value is the caller's error.
  constexpr T operator*() const noexcept { return std::bit_cast<T>(bits_); }
  T value() const {
    if (!has_value()) throw std::bad_optional_access();
    return **this;
  }
  constexpr T value_or(T fallback) const noexcept { return has_value() ? **this : fallback; }
  constexpr operator std::optional<T>() const noexcept { return has_value() ? std::optional<T>(**this) : std::nullopt; }

  // As std::optional: both absent are equal, present values compare as T.
  friend constexpr bool operator==(PackedOptional a, PackedOptional b) noexcept {
    if (!a.has_value() || !b.has_value()) return a.has_value() == b.has_value();
    return *a == *b;
  }
  friend constexpr bool operator==(PackedOptional a, std::nullopt_t) noexcept { return !a.has_value(); }
  friend constexpr bool operator==(PackedOptional a, T b) noexcept { return a.has_value() && *a == b; }

 private:
  // A given NaN that happens to carry the marker's bits stays a present NaN
  // (so validation still rejects it) instead of turning into "absent".
  static constexpr Bits present_bits(T value) noexcept {
    const Bits bits = std::bit_cast<Bits>(value);
    return bits == kAbsent ? std::bit_cast<Bits>(std::numeric_limits<T>::quiet_NaN()) : bits;
  }

  Bits bits_ = kAbsent;
};

}  // namespace gpucluster
