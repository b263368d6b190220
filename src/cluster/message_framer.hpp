#pragma once
// Cuts a byte stream (an HTTP response body read piece by piece) into whole
// messages: lines, or top-level JSON objects ("{…}{…}" or one per line, as
// etcd's /v3/watch writes them). Chunk boundaries of the transport are
// irrelevant: a message may span pieces, a piece may hold several messages.
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {

enum class StreamFraming {
  lines,         // '\n'-terminated (a trailing '\r' is dropped); empty lines are skipped
  json_objects,  // top-level JSON objects; whitespace between them is skipped
};

// The stream broke the framing: a message over the bound, or bytes between
// JSON objects that do not start one.
class StreamFramingError : public Error {
 public:
  using Error::Error;
};

class MessageFramer {
 public:
  // on_message returns false to stop: feed() then returns false and keeps the
  // bytes after that message for nothing (the stream is being abandoned).
  using Handler = std::function<bool(std::string_view message)>;

  MessageFramer(StreamFraming framing, std::size_t max_message_bytes);

  // Throws StreamFramingError when a message grows past max_message_bytes
  // (before it is complete) or, for json_objects, on a byte that cannot start
  // an object.
  bool feed(std::string_view bytes, const Handler& on_message);

  // Bytes of an incomplete message held back (a stream that ends with some
  // was cut off mid-message).
  std::size_t pending_bytes() const noexcept { return pending_.size(); }

 private:
  bool feed_lines(const Handler& on_message);
  bool feed_json(const Handler& on_message);
  void check_size() const;

  StreamFraming framing_;
  std::size_t max_message_bytes_;
  std::string pending_;
  std::size_t scanned_ = 0;  // bytes of pending_ already scanned
  // json_objects scanner state over pending_[0, scanned_).
  int depth_ = 0;
  bool in_string_ = false;
  bool escaped_ = false;
};

}  // namespace gpucluster
