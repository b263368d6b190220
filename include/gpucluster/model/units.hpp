#pragma once
// Parsing and formatting of sizes and durations given by people.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace gpucluster {

// "8GiB", "8G" (= 8e9), "512MiB", "8000000000", "1.5GiB". Throws InputError naming field.
std::uint64_t parse_size_bytes(std::string_view text, std::string_view field);
// "1s", "250ms", "2m", "1h", "500us"; a bare number is seconds. Throws InputError.
std::chrono::nanoseconds parse_duration(std::string_view text, std::string_view field);
// 85899345920 → "80.0 GiB".
std::string format_bytes(std::uint64_t bytes);

}  // namespace gpucluster
