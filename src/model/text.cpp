#include "model/text.hpp"

#include <array>
#include <fstream>

#include <fmt/format.h>

namespace gpucluster::text {

double shortest_decimal(float value) noexcept {
  if (!std::isfinite(value)) return static_cast<double>(value);
  std::array<char, 64> buffer{};
  const auto written = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);  // shortest round trip
  double decimal = 0;
  if (written.ec != std::errc{} || std::from_chars(buffer.data(), written.ptr, decimal).ec != std::errc{}) {
    return static_cast<double>(value);
  }
  return static_cast<float>(decimal) == value ? decimal : static_cast<double>(value);
}

std::size_t utf8_sequence_length(std::string_view text, std::size_t i) noexcept {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return 1;
  std::size_t length = 0;
  unsigned char low = 0x80;  // allowed range of the second byte
  unsigned char high = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    if (b0 == 0xE0) low = 0xA0;   // no overlongs
    if (b0 == 0xED) high = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    if (b0 == 0xF0) low = 0x90;   // no overlongs
    if (b0 == 0xF4) high = 0x8F;  // ≤ U+10FFFF
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  if (byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < length; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return length;
}

bool is_valid_utf8(std::string_view text) noexcept {
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t length = utf8_sequence_length(text, i);
    if (length == 0) return false;
    i += length;
  }
  return true;
}

std::string printable(std::string_view text, std::size_t max_bytes) {
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t length = utf8_sequence_length(text, i);
    const auto b0 = static_cast<unsigned char>(text[i]);
    const bool escape = length == 0 || (length == 1 && (b0 < 0x20 || b0 == 0x7F));
    const std::size_t added = escape ? 4 : length;
    if (out.size() + added > max_bytes) {
      out += "...";
      break;
    }
    if (escape) {
      out += fmt::format("\\x{:02X}", b0);
      i += 1;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  return out;
}

std::string pci_bus_id(std::uint32_t domain, std::uint32_t bus, std::uint32_t device, std::uint32_t function) {
  return fmt::format("{:04x}:{:02x}:{:02x}.{:x}", domain, bus, device, function);
}

namespace {

std::optional<std::uint32_t> parse_hex(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::uint32_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
  if (error != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

std::optional<std::string> normalise_pci_bus_id(std::string_view text) {
  const auto first = text.find(':');
  const auto second = text.find(':', first == std::string_view::npos ? first : first + 1);
  const auto dot = text.find('.', second == std::string_view::npos ? second : second + 1);
  if (first == std::string_view::npos || second == std::string_view::npos || dot == std::string_view::npos) {
    return std::nullopt;
  }
  const auto domain = parse_hex(text.substr(0, first));
  const auto bus = parse_hex(text.substr(first + 1, second - first - 1));
  const auto device = parse_hex(text.substr(second + 1, dot - second - 1));
  const auto function = parse_hex(text.substr(dot + 1));
  if (!domain || !bus || !device || !function || *bus > 0xff || *device > 0x1f || *function > 7) return std::nullopt;
  return pci_bus_id(*domain, *bus, *device, *function);
}

std::optional<std::string> read_text_file(const std::filesystem::path& path, std::size_t max_bytes) {
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

}  // namespace gpucluster::text
