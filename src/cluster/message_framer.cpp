#include "cluster/message_framer.hpp"

#include <fmt/format.h>

namespace gpucluster {

MessageFramer::MessageFramer(StreamFraming framing, std::size_t max_message_bytes)
    : framing_(framing), max_message_bytes_(max_message_bytes) {
  if (max_message_bytes == 0) throw InputError("max_message_bytes", "0", "must be at least 1");
}

bool MessageFramer::feed(std::string_view bytes, const Handler& on_message) {
  pending_.append(bytes);
  return framing_ == StreamFraming::lines ? feed_lines(on_message) : feed_json(on_message);
}

void MessageFramer::check_size() const {
  if (pending_.size() > max_message_bytes_) {
    throw StreamFramingError(
        fmt::format("a streamed message is longer than {} bytes (the bound per message)", max_message_bytes_));
  }
}

bool MessageFramer::feed_lines(const Handler& on_message) {
  std::size_t start = 0;
  std::size_t from = scanned_;  // the bytes before it hold no '\n'
  for (;;) {
    const std::size_t newline = pending_.find('\n', from);
    if (newline == std::string::npos) break;
    std::string_view line(pending_.data() + start, newline - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    start = from = newline + 1;
    if (line.size() > max_message_bytes_) {
      throw StreamFramingError(
          fmt::format("a streamed line is longer than {} bytes (the bound per message)", max_message_bytes_));
    }
    if (!line.empty() && !on_message(line)) {
      pending_.clear();
      scanned_ = 0;
      return false;
    }
  }
  pending_.erase(0, start);
  scanned_ = pending_.size();
  check_size();
  return true;
}

bool MessageFramer::feed_json(const Handler& on_message) {
  std::size_t start = 0;  // first byte of the message being scanned
  for (std::size_t i = scanned_; i < pending_.size(); ++i) {
    const char c = pending_[i];
    if (depth_ == 0) {
      if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
        start = i + 1;
        continue;
      }
      if (c != '{') {
        throw StreamFramingError(
            fmt::format("a streamed message must be a JSON object: byte 0x{:02x} does not start one",
                        static_cast<unsigned char>(c)));
      }
      start = i;
      depth_ = 1;
      continue;
    }
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (c == '\\') {
        escaped_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
      continue;
    }
    if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      ++depth_;
    } else if (c == '}' || c == ']') {
      if (--depth_ == 0) {
        const std::string_view message(pending_.data() + start, i + 1 - start);
        if (message.size() > max_message_bytes_) {
          throw StreamFramingError(
              fmt::format("a streamed message is longer than {} bytes (the bound per message)", max_message_bytes_));
        }
        if (!on_message(message)) {
          pending_.clear();
          scanned_ = 0;
          return false;
        }
        start = i + 1;
      }
    }
  }
  // Keep only the incomplete message (whitespace before it is dropped).
  if (depth_ == 0) start = pending_.size();
  pending_.erase(0, start);
  scanned_ = pending_.size();
  check_size();
  return true;
}

}  // namespace gpucluster
