#pragma once
// Standard base64 (RFC 4648 §4, with padding), as etcd's JSON gateway writes
// keys and values. Decoding is strict: a malformed field is a typed error,
// never a silently shortened value.
#include <string>
#include <string_view>

namespace gpucluster {

std::string base64_encode(std::string_view bytes);

// Throws InputError naming `field` when `text` is not canonical padded base64:
// a length that is not a multiple of 4, a character outside A-Z a-z 0-9 + /,
// '=' anywhere but the last one or two places, or non-zero unused bits.
std::string base64_decode(std::string_view text, const char* field);

}  // namespace gpucluster
