#pragma once
// The agent's HTTP/1.1 transport: Boost.Beast parsing over Boost.Asio's epoll
// reactor, a few threads for all connections. It knows nothing of routes; one
// handler answers every request. Limits (head size, body size, URI length,
// chunked bodies) are enforced before a body is read, so a request can never
// make the server buffer more than max_body_bytes, nor all connections
// together more than max_body_memory_bytes.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gpucluster::agent {

struct HttpRequest {
  std::string method;                                      // "GET"; HEAD requests arrive as "GET" with head_only set
  std::string target;                                      // as sent: "/v1/devices/a%2Fb/history?limit=5"
  std::string path;                                        // percent-decoded path part: "/v1/devices/a/b/history"
  std::vector<std::pair<std::string, std::string>> query;  // decoded, in order
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool head_only = false;
  std::string remote_address;  // the client's IP address ("127.0.0.1", "::1"); "" when unknown
  // When the head was complete (the request is in flight from then on).
  std::chrono::steady_clock::time_point head_received{};

  // The first header of that name (case-insensitive), or "" when absent.
  std::string_view header(std::string_view name) const;
  bool has_header(std::string_view name) const;
  // The first query parameter of that name, or nullptr.
  const std::string* query_value(std::string_view name) const;
};

struct HttpResponse {
  // The route pattern that answered, for metrics labels: a string literal
  // (static storage), never request text.
  std::string_view route = "(unmatched)";
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // more header fields, e.g. Allow
};

// Answers one request. It must not throw (an exception is logged and answered 500).
using HttpHandler = std::function<void(const HttpRequest&, HttpResponse&)>;
// Answers a request the transport refuses itself (411, 413, 414, 400 …):
// status, error code, message, field, value, rule → the response to send.
using HttpRefusal = std::function<HttpResponse(int status, std::string_view code, std::string_view message,
                                               std::string_view field, std::string_view value, std::string_view rule)>;
// Called after every answer (routes via the handler, refusals too).
using HttpObserver = std::function<void(const HttpRequest&, const HttpResponse&, std::chrono::nanoseconds took)>;
// Looks at a request when its head has arrived (method, target, path, query,
// headers; no body yet) and returns an answer to refuse it with, or nullopt
// to go on. A refused request's body is never read; its connection closes.
// Runs on the connection's event loop; it must not throw.
using HttpHeadCheck = std::function<std::optional<HttpResponse>(const HttpRequest& head)>;

struct HttpServerOptions {
  std::size_t threads = 2;                               // event-loop threads (handlers run on them)
  std::size_t max_body_bytes = 1024 * 1024;              // 413 past this
  std::size_t max_body_memory_bytes = 64 * 1024 * 1024;  // bodies held by all connections; 503 past this
  std::size_t max_target_bytes = 8192;                   // 414 past this
  std::size_t max_head_bytes = 16 * 1024;                // request line + headers; 431 past this
  std::size_t max_connections = 1024;                    // more are closed at once
  std::chrono::milliseconds head_timeout{10'000};        // from accept (or a request's first byte) to its full head
  std::chrono::milliseconds body_timeout{10'000};        // from the end of the head to the end of the body
  std::chrono::milliseconds write_timeout{10'000};       // for the answer to be taken by the client
  std::chrono::milliseconds idle_timeout{60'000};        // keep-alive wait for the next request's first byte
  std::chrono::seconds retry_after{1};                   // Retry-After of a 503 for the body budget
};

// What the transport counts itself (for /metrics).
struct HttpServerCounters {
  std::uint64_t accept_errors = 0;  // accept() calls that failed (descriptors or memory exhausted …)
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandler handler, HttpRefusal refusal, HttpObserver observer,
             HttpHeadCheck head_check = nullptr);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens; returns the port (the chosen one for port 0). Throws
  // gpucluster::Error when the address cannot be bound.
  int bind(const std::string& host, int port);
  // Runs the event loop on options.threads threads (this one included) until
  // stop() and every connection has ended.
  void serve();
  // Stops accepting; connections without a request in flight (idle, or whose
  // head has not arrived in full) are closed, a request whose head has arrived
  // is read and answered within its timeouts (its connection then closes).
  // Safe from any thread, idempotent; does not wait (serve() returns when all
  // is done).
  void stop();
  // Safe from any thread.
  HttpServerCounters counters() const;

 private:
  friend class HttpSession;  // one connection (http_server.cpp)
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpucluster::agent
