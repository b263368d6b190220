#pragma once
// A small blocking HTTP/1.1 client over one kept-alive connection (Boost.Beast):
// how an agent reports to a coordinator, and how the CLI will ask a running
// agent. Every call has a deadline covering resolve, connect, write and read;
// a call that fails or times out closes the connection (the next one
// reconnects, resolving the name again). Not thread-safe: one caller at a time.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

#include "cluster/message_framer.hpp"
#include "gpucluster/model/errors.hpp"

namespace gpucluster {

// A base URL "http://HOST:PORT" (a path other than "/" is refused: requests
// name their own). Throws InputError naming `field`: https (no TLS here; see
// docs/cluster.md), a missing or bad port, user info, a query.
struct HttpUrl {
  std::string host;  // without brackets for IPv6
  int port = 0;
  std::string str() const;  // "http://host:port"
};
HttpUrl parse_http_url(std::string_view text, const char* field);

// 127.0.0.0/8, ::1 and "localhost": where a token is not required.
bool is_loopback_host(std::string_view host) noexcept;

// The coordinator could not be reached or did not answer in time.
class TransportError : public Error {
 public:
  using Error::Error;
};

struct HttpClientResponse {
  int status = 0;
  std::string body;
  std::optional<int> retry_after_seconds;  // Retry-After in seconds, when sent
};

// How stream() reads a response whose body is a long-lived series of
// messages (etcd's /v3/watch: chunked JSON objects that arrive when keys change).
struct HttpStreamOptions {
  std::chrono::milliseconds header_timeout{2000};  // resolve, connect, write and the response header
  std::chrono::milliseconds idle_timeout{60000};   // the longest silence allowed between body bytes
  StreamFraming framing = StreamFraming::json_objects;
  std::size_t max_message_bytes = 1024 * 1024;  // per message, not per stream
};

enum class HttpStreamEnd : std::uint8_t {
  finished,         // the server ended the body (or the status was not 2xx)
  handler_stopped,  // on_message returned false
  stop_requested,   // the stop token fired (from any thread)
};

struct HttpStreamResult {
  int status = 0;
  std::string body;  // a non-2xx answer's whole body (no messages are delivered then); empty for 2xx
  HttpStreamEnd end = HttpStreamEnd::finished;
};

class HttpClient {
 public:
  explicit HttpClient(HttpUrl url, std::size_t max_response_bytes = 8 * 1024 * 1024);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Throws TransportError (connection refused, reset, timeout, a response
  // larger than max_response_bytes). token: sent as Authorization: Bearer.
  HttpClientResponse request(std::string_view method, std::string_view target, std::string_view body,
                             const std::optional<std::string>& token, std::chrono::milliseconds timeout);
  // Sends one request and reads a 2xx response's body incrementally, calling
  // on_message (on this thread) for each whole message as it arrives; blocks
  // until the body ends, on_message returns false or `stop` fires. A stop
  // requested from another thread cancels the pending read at once. Always on
  // a new connection, closed at the end (a stream is usually abandoned
  // mid-body). Throws TransportError (connect, header_timeout, idle_timeout,
  // the server closing mid-stream or mid-message) and StreamFramingError (a
  // message over max_message_bytes, bytes that are not a message); exceptions
  // from on_message propagate.
  HttpStreamResult stream(std::string_view method, std::string_view target, std::string_view body,
                          const std::optional<std::string>& token, const HttpStreamOptions& options,
                          const MessageFramer::Handler& on_message, std::stop_token stop = {});
  void close();
  const HttpUrl& url() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpucluster
