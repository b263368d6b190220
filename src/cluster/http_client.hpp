#pragma once
// A small blocking HTTP/1.1 client over one kept-alive connection (Boost.Beast):
// how an agent reports to a coordinator, and how the CLI will ask a running
// agent. Every call has a deadline covering resolve, connect, write and read;
// a call that fails or times out closes the connection (the next one
// reconnects, resolving the name again). Not thread-safe: one caller at a time.
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

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
  void close();
  const HttpUrl& url() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpucluster
