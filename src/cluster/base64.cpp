#include "cluster/base64.hpp"

#include <array>
#include <cstdint>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {

namespace {

constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<std::int8_t, 256> make_decode_table() {
  std::array<std::int8_t, 256> table{};
  for (auto& entry : table) entry = -1;
  for (std::size_t i = 0; i < kAlphabet.size(); ++i) {
    table[static_cast<unsigned char>(kAlphabet[i])] = static_cast<std::int8_t>(i);
  }
  return table;
}
constexpr auto kDecode = make_decode_table();

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t group = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16 |
                                static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                                static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[group >> 18 & 63];
    out += kAlphabet[group >> 12 & 63];
    out += kAlphabet[group >> 6 & 63];
    out += kAlphabet[group & 63];
  }
  const std::size_t left = bytes.size() - i;
  if (left > 0) {
    std::uint32_t group = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (left == 2) group |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out += kAlphabet[group >> 18 & 63];
    out += kAlphabet[group >> 12 & 63];
    out += left == 2 ? kAlphabet[group >> 6 & 63] : '=';
    out += '=';
  }
  return out;
}

std::string base64_decode(std::string_view text, const char* field) {
  const auto shown = [&] { return std::string(text.substr(0, 128)); };
  if (text.size() % 4 != 0) {
    throw InputError(field, shown(), "must be base64: the length must be a multiple of 4 (with '=' padding)");
  }
  std::size_t padding = 0;
  if (!text.empty() && text.back() == '=') padding = text.size() >= 2 && text[text.size() - 2] == '=' ? 2 : 1;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    const std::size_t data_chars = last ? 4 - padding : 4;
    std::uint32_t group = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      std::uint32_t value = 0;
      if (j < data_chars) {
        const std::int8_t decoded = kDecode[static_cast<unsigned char>(text[i + j])];
        if (decoded < 0) {
          throw InputError(field, shown(),
                           "must be base64: character " + std::to_string(i + j) + " is not in A-Z a-z 0-9 + / " +
                               "(or '=' padding at the end)");
        }
        value = static_cast<std::uint32_t>(decoded);
      }
      group = group << 6 | value;
    }
    out += static_cast<char>(group >> 16 & 0xff);
    if (data_chars >= 3) out += static_cast<char>(group >> 8 & 0xff);
    if (data_chars == 4) out += static_cast<char>(group & 0xff);
    // Canonical form: the bits the padding hides must be zero.
    if ((data_chars == 2 && (group & 0xffff) != 0) || (data_chars == 3 && (group & 0xff) != 0)) {
      throw InputError(field, shown(), "must be canonical base64: the bits before the '=' padding must be zero");
    }
  }
  return out;
}

}  // namespace gpucluster
