#pragma once
// Reading the small text files of /proc and /sys: bounded reads and strict
// number parsing, shared by the host and sysfs backends.

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace gpucluster::text_file {

// The whole file, or nullopt when it cannot be read or is larger than max_bytes.
// /proc and /sys report sizes of 0 or 4096 whatever the content, so the file is
// read in chunks rather than by its size.
inline std::optional<std::string> read_text(const std::filesystem::path& path, std::size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string text;
  std::array<char, 4096> chunk{};
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const auto got = static_cast<std::size_t>(in.gcount());
    if (text.size() + got > max_bytes) return std::nullopt;
    text.append(chunk.data(), got);
  }
  if (in.bad()) return std::nullopt;
  return text;
}

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

}  // namespace gpucluster::text_file
