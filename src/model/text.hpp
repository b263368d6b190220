#pragma once
// The project's one home for small text work that every layer needs: a
// float's shortest decimal, UTF-8 checks, PCI bus ids, and bounded reads of
// the small text files of /proc and /sys. Internal (not installed): the core,
// the agent, the backends and the Python module include it as "model/text.hpp".

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace gpucluster::text {

// ---- numbers ---------------------------------------------------------------

// A float as the double of its shortest round-trip decimal (41.3f → 41.3, not
// 41.29999923706055), for JSON and Python; the float's exact value in the
// rare case where that decimal, read as a double, would not narrow back to the
// same float. Non-finite values are returned unchanged.
double shortest_decimal(float value) noexcept;

// ---- UTF-8 -------------------------------------------------------------------

// Length of the well-formed UTF-8 sequence at text[i] (RFC 3629: no overlong
// forms, no surrogates, at most U+10FFFF), or 0 when the bytes there are not one.
std::size_t utf8_sequence_length(std::string_view text, std::size_t i) noexcept;

// Every byte belongs to a well-formed sequence.
bool is_valid_utf8(std::string_view text) noexcept;

// Text to quote in an error: valid UTF-8 (so it can go into a JSON answer),
// control characters and stray bytes written as \xNN, cut at max_bytes on a
// character boundary with "..." appended.
std::string printable(std::string_view text, std::size_t max_bytes = 64);

// ---- PCI bus ids ---------------------------------------------------------------

// "0000:65:00.0": domain, bus, device and function as Linux names a PCI device.
std::string pci_bus_id(std::uint32_t domain, std::uint32_t bus, std::uint32_t device, std::uint32_t function);

// "00000000:65:00.0" (NVML's 8-digit domain), "0000:65:00.0", any case →
// "0000:65:00.0"; nullopt when the text is not a bus id (bus ≤ 0xff, device ≤
// 0x1f, function ≤ 7, hexadecimal fields).
std::optional<std::string> normalise_pci_bus_id(std::string_view text);

// ---- /proc and /sys files ------------------------------------------------------

// The whole file, or nullopt when it cannot be read or is larger than max_bytes.
// /proc and /sys report sizes of 0 or 4096 whatever the content, so the file is
// read in chunks rather than by its size.
std::optional<std::string> read_text_file(const std::filesystem::path& path, std::size_t max_bytes);

inline std::string_view trim(std::string_view text) {
  const auto is_space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return text;
}

// Strict parse: the whole (trimmed) text is the number — no sign for unsigned
// types, no overflow, finite for floating point.
template <typename Number>
std::optional<Number> parse_number(std::string_view text) {
  text = trim(text);
  if (text.empty()) return std::nullopt;
  Number value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  if constexpr (std::is_floating_point_v<Number>) {
    if (!std::isfinite(value)) return std::nullopt;
  }
  return value;
}

}  // namespace gpucluster::text
