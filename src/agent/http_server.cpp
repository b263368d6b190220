#include "agent/http_server.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <iterator>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/http.hpp>

#include "gpucluster/model/errors.hpp"

namespace gpucluster::agent {
namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX → the byte; a '%' not followed by two hex digits stays as it is.
// plus_is_space for query strings (application/x-www-form-urlencoded).
std::string percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%' && i + 2 < text.size()) {
      const int high = hex_digit(text[i + 1]);
      const int low = hex_digit(text[i + 2]);
      if (high >= 0 && low >= 0) {
        out.push_back(static_cast<char>(high * 16 + low));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && c == '+' ? ' ' : c);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> parse_query(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (part.empty()) continue;
    const std::size_t eq = part.find('=');
    out.emplace_back(percent_decode(part.substr(0, eq), true),
                     eq == std::string_view::npos ? std::string{} : percent_decode(part.substr(eq + 1), true));
  }
  return out;
}

// The methods of RFC 9110 and PATCH: others are malformed requests (400),
// these reach the handler (which answers 404 where no route has them).
bool known_method(http::verb verb) {
  switch (verb) {
    case http::verb::get:
    case http::verb::head:
    case http::verb::post:
    case http::verb::put:
    case http::verb::delete_:
    case http::verb::options:
    case http::verb::patch:
    case http::verb::trace:
    case http::verb::connect: return true;
    default: return false;
  }
}

std::string_view reason_phrase(http::status status) {
  const auto reason = http::obsolete_reason(status);
  return {reason.data(), reason.size()};
}

}  // namespace

std::string_view HttpRequest::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return value;
  }
  return {};
}

bool HttpRequest::has_header(std::string_view name) const {
  return std::any_of(headers.begin(), headers.end(), [&](const auto& entry) { return iequals(entry.first, name); });
}

const std::string* HttpRequest::query_value(std::string_view name) const {
  for (const auto& [key, value] : query) {
    if (key == name) return &value;
  }
  return nullptr;
}

class HttpSession;

namespace {

// At most one log line per interval; the lines left out in between are counted
// and reported with the next one, so a storm (descriptors exhausted, a flood of
// connections) cannot fill the disk. Used from one thread (the acceptor's).
class LogLimiter {
 public:
  explicit LogLimiter(Clock::duration interval) : interval_(interval) {}
  // True when a line may be logged now; `suppressed` is then the number left out since the last one.
  bool allow(Clock::time_point now, std::uint64_t& suppressed) {
    if (logged_ && now - last_ < interval_) {
      ++suppressed_;
      return false;
    }
    suppressed = suppressed_;
    suppressed_ = 0;
    last_ = now;
    logged_ = true;
    return true;
  }

 private:
  Clock::duration interval_;
  Clock::time_point last_{};
  std::uint64_t suppressed_ = 0;
  bool logged_ = false;
};

// A body buffer of at most this many bytes stays with its connection for the
// next request (on_body); at most this times the connection limit in all.
constexpr std::size_t kKeptBodyBytes = 8 * 1024;

constexpr std::chrono::seconds kLogInterval{10};
// A failed accept is retried after 10 ms, doubling up to 1 s, back to 10 ms
// after a success: the listening socket stays readable while descriptors are
// exhausted, and retrying at once would spin.
constexpr std::chrono::milliseconds kAcceptBackoffMin{10};
constexpr std::chrono::milliseconds kAcceptBackoffMax{1000};

// The sweep that closes timed-out connections runs every second, or every
// quarter of the shortest timeout when that is shorter (10 ms at least): a
// connection is closed at most that long after its deadline.
std::chrono::milliseconds sweep_interval_of(const HttpServerOptions& options) {
  const auto shortest =
      std::min({options.head_timeout, options.body_timeout, options.write_timeout, options.idle_timeout});
  return std::clamp(shortest / 4, std::chrono::milliseconds{10}, std::chrono::milliseconds{1000});
}

}  // namespace

struct HttpServer::Impl {
  Impl(HttpServerOptions server_options, HttpHandler request_handler, HttpRefusal request_refusal,
       HttpObserver request_observer, HttpHeadCheck request_head_check)
      : options(server_options),
        handler(std::move(request_handler)),
        refusal(std::move(request_refusal)),
        observer(std::move(request_observer)),
        head_check(std::move(request_head_check)),
        sweep_interval(sweep_interval_of(server_options)),
        contexts(make_contexts(std::max<std::size_t>(1, server_options.threads))),
        acceptor(*contexts.front()),
        accept_timer(*contexts.front()),
        sweep_timer(*contexts.front()) {
    for (const auto& context : contexts) guards.push_back(net::make_work_guard(*context));
  }

  static std::vector<std::unique_ptr<net::io_context>> make_contexts(std::size_t count) {
    std::vector<std::unique_ptr<net::io_context>> out;
    for (std::size_t i = 0; i < count; ++i) out.push_back(std::make_unique<net::io_context>(1));
    return out;
  }

  HttpServerOptions options;
  HttpHandler handler;
  HttpRefusal refusal;
  HttpObserver observer;
  HttpHeadCheck head_check;
  std::chrono::milliseconds sweep_interval;
  std::atomic<bool> stopping{false};
  // Body bytes announced (Content-Length) by requests being read or answered,
  // across all connections; at most options.max_body_memory_bytes.
  std::atomic<std::size_t> body_bytes_reserved{0};
  std::atomic<std::uint64_t> accept_errors{0};
  // Declared before the loops: a session destroyed with their pending handlers still finds them.
  std::mutex sessions_mutex;
  std::unordered_map<HttpSession*, std::weak_ptr<HttpSession>> sessions;

  // One single-threaded event loop per thread; each connection lives on one
  // of them (round robin), so no handler ever hops threads or takes a lock.
  std::vector<std::unique_ptr<net::io_context>> contexts;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> guards;  // until stop()
  std::size_t next_context = 0;
  tcp::acceptor acceptor;          // on contexts[0]
  net::steady_timer accept_timer;  // the back-off after a failed accept; on contexts[0]
  net::steady_timer sweep_timer;   // closes timed-out connections; on contexts[0]
  // Used on contexts[0] only (the acceptor's handlers).
  std::chrono::milliseconds accept_backoff{0};
  LogLimiter accept_log{kLogInterval};
  LogLimiter refused_log{kLogInterval};

  void accept();
  void accept_failed(boost::system::error_code ec);
  void sweep();
  std::vector<std::shared_ptr<HttpSession>> live_sessions();
  void forget(HttpSession* session);

  // Reserves `bytes` of the body budget; false (nothing reserved) when they do not fit.
  bool reserve_body(std::size_t bytes) {
    std::size_t current = body_bytes_reserved.load();
    do {
      if (bytes > options.max_body_memory_bytes - current) return false;  // current ≤ the budget, always
    } while (!body_bytes_reserved.compare_exchange_weak(current, current + bytes));
    return true;
  }
  void release_body(std::size_t bytes) { body_bytes_reserved.fetch_sub(bytes); }
};

// One connection: wait for a request's first byte, read its head, check it,
// read the body, answer, repeat. Every step runs on the connection's event
// loop (one thread), the sweep's checks too.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  // server outlives every session: serve() returns only once all have ended.
  HttpSession(tcp::socket socket, HttpServer::Impl& server) : socket_(std::move(socket)), server_(&server) {}
  ~HttpSession() {
    release_body();
    server_->forget(this);
  }

  void start() {
    boost::system::error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);  // answers are one write; no Nagle wait behind it
    const tcp::endpoint peer = socket_.remote_endpoint(ignored);
    if (!ignored) {
      const net::ip::address address = peer.address();
      // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d; name it as IPv4.
      remote_address_ = address.is_v6() && address.to_v6().is_v4_mapped()
                            ? net::ip::make_address_v4(net::ip::v4_mapped, address.to_v6()).to_string()
                            : address.to_string();
    }
    buffer_.reserve(4096);  // a request (head + a heartbeat's body) in one read
    phase_ = Phase::head;   // the head timeout runs from the accept
    set_deadline(server_->options.head_timeout);
    next_request();
  }

  tcp::socket::executor_type executor() { return socket_.get_executor(); }

  // From the sweep timer: close when past the deadline, or, while stopping,
  // when no request is in flight (waiting for one, or its head incomplete).
  //
  // The posted check holds the session weakly: while stopping, the session's
  // event loop may already have run out of work and returned, so the check
  // never runs; a strong reference parked in that loop's queue would keep the
  // session alive, the sweep would keep finding it, and stop() would never end.
  void check(Clock::time_point now, bool stopping) {
    net::post(socket_.get_executor(), [weak = weak_from_this(), now, stopping] {
      const std::shared_ptr<HttpSession> self = weak.lock();
      if (!self) return;
      const bool in_flight = self->phase_ == Phase::body || self->phase_ == Phase::writing;
      if (now >= self->deadline_ || (stopping && !in_flight)) self->close();
    });
  }

 private:
  enum class Phase : std::uint8_t {
    idle,     // keep-alive: waiting for the next request's first byte (idle_timeout)
    head,     // from the accept or the first byte until the head is complete (head_timeout)
    body,     // the head arrived: the request is in flight; reading its body (body_timeout)
    writing,  // the answer is being written (write_timeout)
  };

  void set_deadline(std::chrono::milliseconds from_now) { deadline_ = Clock::now() + from_now; }

  void release_body() {
    if (reserved_body_bytes_ == 0) return;
    server_->release_body(reserved_body_bytes_);
    reserved_body_bytes_ = 0;
  }

  void next_request() {
    release_body();
    if (server_->stopping.load()) return close();  // draining: no new request on this connection
    request_ = HttpRequest{};
    request_.remote_address = remote_address_;
    keep_alive_ = true;
    http_1_0_ = false;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_->options.max_head_bytes));
    parser_->body_limit(server_->options.max_body_bytes);
    parser_->get().body() = std::move(spare_body_);  // empty, with the last small body's capacity
    spare_body_ = std::string{};
    if (buffer_.size() > 0) {  // pipelined: the next request has begun
      begin_head();
      return parse_head();
    }
    if (phase_ != Phase::head) {  // (a new connection's head timeout already runs)
      phase_ = Phase::idle;
      set_deadline(server_->options.idle_timeout);
    }
    socket_.async_read_some(buffer_.prepare(boost::beast::read_size(buffer_, 65536)),
                            [self = shared_from_this()](boost::system::error_code ec, std::size_t bytes) {
                              self->buffer_.commit(bytes);
                              if (ec) return self->close();  // the peer closed, or the sweep did
                              self->begin_head();
                              self->parse_head();
                            });
  }

  void begin_head() {
    if (phase_ == Phase::head) return;
    phase_ = Phase::head;
    set_deadline(server_->options.head_timeout);
  }

  // The head from the buffer when it is all there, else read the rest.
  void parse_head() {
    boost::system::error_code ec;
    buffer_.consume(parser_->put(buffer_.data(), ec));
    if (ec == http::error::need_more) ec = {};
    if (ec || parser_->is_header_done()) return on_head(ec);
    http::async_read_header(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](boost::system::error_code read_error, std::size_t) { self->on_head(read_error); });
  }

  void on_head(boost::system::error_code ec) {
    started_ = Clock::now();
    request_.head_received = started_;
    phase_ = Phase::body;
    set_deadline(server_->options.body_timeout);
    if (ec == http::error::body_limit) {  // the parser checks Content-Length against the limit with the head
      const auto& head = parser_->get();
      request_.method = std::string(head.method_string());
      request_.target = std::string(head.target());
      return refuse(413, "payload_too_large",
                    fmt::format("the body is larger than {} bytes", server_->options.max_body_bytes), "(body)",
                    std::string(head[http::field::content_length]),
                    fmt::format("at most {} bytes", server_->options.max_body_bytes));
    }
    if (ec == http::error::header_limit) {
      return refuse(431, "header_too_large", "the request line and headers are too large", "(head)", "",
                    fmt::format("at most {} bytes", server_->options.max_head_bytes));
    }
    if (ec == http::error::end_of_stream || ec == net::error::operation_aborted || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == http::error::partial_message) {
      return close();
    }
    if (ec) return refuse(400, "bad_request", fmt::format("malformed HTTP request: {}", ec.message()), "", "", "");

    const auto& head = parser_->get();
    request_.method = std::string(head.method_string());
    request_.target = std::string(head.target());
    if (!known_method(head.method())) {
      return refuse(400, "bad_request", fmt::format("unknown HTTP method {}", request_.method), "method",
                    request_.method.substr(0, 32), "GET, HEAD, POST, PUT, DELETE, OPTIONS or PATCH");
    }
    if (request_.target.size() > server_->options.max_target_bytes) {
      return refuse(414, "uri_too_long", "the request target is too long", "", "",
                    fmt::format("at most {} bytes", server_->options.max_target_bytes));
    }
    for (const auto& field : head) request_.headers.emplace_back(field.name_string(), field.value());
    const std::string_view target = request_.target;
    const std::size_t question = target.find('?');
    request_.path = percent_decode(target.substr(0, question), false);
    if (question != std::string_view::npos) request_.query = parse_query(target.substr(question + 1));
    request_.head_only = head.method() == http::verb::head;
    if (request_.head_only) request_.method = "GET";
    keep_alive_ = head.keep_alive();
    http_1_0_ = head.version() == 10;

    // Chunked bodies, and bodies whose end only the peer's close would mark,
    // are refused before any of them is read (nothing unbounded is buffered).
    const bool carries_body =
        head.method() == http::verb::post || head.method() == http::verb::put || head.method() == http::verb::patch;
    if (request_.has_header("Transfer-Encoding") || (carries_body && !request_.has_header("Content-Length"))) {
      const std::string_view encoding = request_.header("Transfer-Encoding");
      return refuse(411, "length_required", "the request body needs a Content-Length header (no chunked bodies)",
                    "Content-Length",
                    request_.has_header("Transfer-Encoding") ? "Transfer-Encoding: " + std::string(encoding)
                                                             : std::string("(absent)"),
                    "a Content-Length header, and no Transfer-Encoding");
    }
    const auto length = parser_->content_length();
    if (length && *length > server_->options.max_body_bytes) {
      return refuse(413, "payload_too_large",
                    fmt::format("the body is larger than {} bytes", server_->options.max_body_bytes), "(body)",
                    std::string(request_.header("Content-Length")),
                    fmt::format("at most {} bytes", server_->options.max_body_bytes));
    }
    // The owner's check (the token) before any body byte is read or held.
    if (server_->head_check) {
      if (std::optional<HttpResponse> refused = server_->head_check(request_)) {
        return send(std::move(*refused), false);  // the body was not read: the connection cannot go on
      }
    }
    if (length && *length > 0) {
      const auto bytes = static_cast<std::size_t>(*length);
      if (!server_->reserve_body(bytes)) {
        HttpResponse busy = server_->refusal(
            503, "overloaded",
            fmt::format("the agent holds too many request bodies; retry in {} s", server_->options.retry_after.count()),
            "(body)", std::string(request_.header("Content-Length")),
            fmt::format("at most {} body bytes held across all connections", server_->options.max_body_memory_bytes));
        busy.headers.emplace_back("Retry-After", std::to_string(server_->options.retry_after.count()));
        return send(std::move(busy), false);
      }
      reserved_body_bytes_ = bytes;
      if (iequals(request_.header("Expect"), "100-continue")) return send_continue();
    }
    read_body();
  }

  void send_continue() {
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    net::async_write(socket_, net::buffer(kContinue.data(), kContinue.size()),
                     [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                       if (ec) return self->close();
                       self->read_body();
                     });
  }

  void read_body() {
    // The body usually came in the same read as the head: parse it from the
    // buffer without another trip through the event loop.
    if (!parser_->is_done() && buffer_.size() > 0) {
      boost::system::error_code ec;
      const std::size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec && ec != http::error::need_more) return on_body(ec);
    }
    if (parser_->is_done()) return on_body({});
    http::async_read(socket_, buffer_, *parser_,
                     [self = shared_from_this()](boost::system::error_code ec, std::size_t) { self->on_body(ec); });
  }

  void on_body(boost::system::error_code ec) {
    if (ec == http::error::body_limit) {
      return refuse(413, "payload_too_large",
                    fmt::format("the body is larger than {} bytes", server_->options.max_body_bytes), "(body)", "",
                    fmt::format("at most {} bytes", server_->options.max_body_bytes));
    }
    if (ec) return close();
    request_.body = std::move(parser_->get().body());

    HttpResponse response;
    try {
      server_->handler(request_, response);
    } catch (const std::exception& e) {
      spdlog::error("{} {}: unhandled exception: {}", request_.method, request_.path, e.what());
      response = server_->refusal(500, "internal", "internal error (logged by the agent)", "", "", "");
    }
    // Answered: the body's memory goes back now, not after the write. A small
    // body's buffer is kept for the connection's next request instead: a
    // coordinator gets one report a second on each of a thousand connections,
    // and allocating their bodies afresh each time made malloc merge its free
    // lists on every one.
    if (request_.body.capacity() <= kKeptBodyBytes) {
      request_.body.clear();
      spare_body_ = std::move(request_.body);
    }
    std::string().swap(request_.body);
    release_body();
    send(std::move(response), keep_alive_ && !server_->stopping.load());
  }

  void refuse(int status, std::string_view code, std::string_view message, std::string_view field,
              std::string_view value, std::string_view rule) {
    if (request_.method.empty() && parser_) request_.method = std::string(parser_->get().method_string());
    if (request_.path.empty()) request_.path = request_.target.substr(0, request_.target.find('?'));
    // The rest of this request's bytes were not read: the connection cannot go on.
    send(server_->refusal(status, code, message, field, value, rule), false);
  }

  // The answer in one buffer, one write (reused across requests: no allocation
  // once it has grown). Beast's serializer costs more per small answer.
  void send(HttpResponse response, bool keep_alive) {
    phase_ = Phase::writing;
    set_deadline(server_->options.write_timeout);
    if (server_->observer) server_->observer(request_, response, Clock::now() - started_);
    const auto status = static_cast<http::status>(response.status);
    out_.clear();
    fmt::format_to(std::back_inserter(out_), "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
                   response.status, reason_phrase(status), response.content_type, response.body.size());
    if (!keep_alive) {
      out_ += "Connection: close\r\n";
    } else if (http_1_0_) {
      out_ += "Connection: keep-alive\r\n";  // HTTP/1.0 closes unless told otherwise
    }
    for (const auto& [name, value] : response.headers)
      fmt::format_to(std::back_inserter(out_), "{}: {}\r\n", name, value);
    out_ += "\r\n";
    if (!request_.head_only) out_ += response.body;
    net::async_write(socket_, net::buffer(out_),
                     [self = shared_from_this(), keep_alive](boost::system::error_code ec, std::size_t) {
                       if (ec || !keep_alive) return self->close();
                       self->next_request();
                     });
  }

  void close() {
    release_body();
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  tcp::socket socket_;
  HttpServer::Impl* server_;
  boost::beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string spare_body_;  // the last body's buffer when small (see on_body)
  HttpRequest request_;
  std::string out_;             // the answer being written
  std::string remote_address_;  // the peer, for every request of this connection
  bool keep_alive_ = true;
  bool http_1_0_ = false;
  Phase phase_ = Phase::head;
  std::size_t reserved_body_bytes_ = 0;  // of the server's body budget, for the request being read or answered
  Clock::time_point started_;
  Clock::time_point deadline_ = Clock::time_point::max();
};

void HttpServer::Impl::forget(HttpSession* session) {
  std::lock_guard lock(sessions_mutex);
  sessions.erase(session);
}

std::vector<std::shared_ptr<HttpSession>> HttpServer::Impl::live_sessions() {
  std::vector<std::shared_ptr<HttpSession>> live;
  std::lock_guard lock(sessions_mutex);
  live.reserve(sessions.size());
  for (const auto& [raw, weak] : sessions) {
    if (auto session = weak.lock()) live.push_back(std::move(session));
  }
  return live;
}

void HttpServer::Impl::accept() {
  net::io_context& context = *contexts[next_context];
  next_context = (next_context + 1) % contexts.size();
  acceptor.async_accept(context, [self = this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || self->stopping.load()) return;  // closed by stop()
    if (ec) return self->accept_failed(ec);
    self->accept_backoff = std::chrono::milliseconds{0};
    std::shared_ptr<HttpSession> session;
    {
      std::lock_guard lock(self->sessions_mutex);
      if (self->sessions.size() < self->options.max_connections) {
        session = std::make_shared<HttpSession>(std::move(socket), *self);
        self->sessions.emplace(session.get(), session);
      }
    }
    if (session) {
      // Everything a session does happens on its own event loop, its start too.
      net::post(session->executor(), [session] { session->start(); });
    } else if (std::uint64_t suppressed = 0; self->refused_log.allow(Clock::now(), suppressed)) {
      spdlog::warn("refused a connection: {} connections are open ({} more refused since the last message)",
                   self->options.max_connections, suppressed);
    }
    self->accept();
  });
}

// EMFILE, ENFILE, ENOBUFS, ENOMEM …: the pending connection stays queued and
// the socket stays readable, so accepting again at once would spin. Back off,
// count, and log at most once per kLogInterval.
void HttpServer::Impl::accept_failed(boost::system::error_code ec) {
  accept_errors.fetch_add(1, std::memory_order_relaxed);
  accept_backoff = std::clamp(accept_backoff * 2, kAcceptBackoffMin, kAcceptBackoffMax);
  if (std::uint64_t suppressed = 0; accept_log.allow(Clock::now(), suppressed)) {
    const bool descriptors = ec == net::error::no_descriptors || ec.value() == ENFILE;
    spdlog::warn("accept failed: {}{}; retrying in {} ms ({} more failures since the last message)", ec.message(),
                 descriptors ? " (raise the open-files limit: LimitNOFILE in the systemd unit, ulimit -n)" : "",
                 accept_backoff.count(), suppressed);
  }
  accept_timer.expires_after(accept_backoff);
  accept_timer.async_wait([self = this](boost::system::error_code wait_error) {
    if (wait_error || self->stopping.load()) return;  // cancelled by stop()
    self->accept();
  });
}

// Every sweep_interval (every 50 ms at most while stopping): connections past
// their deadline are closed; once stopped and no connection is left, the timer
// is not re-armed and the event loop runs out of work.
void HttpServer::Impl::sweep() {
  const bool is_stopping = stopping.load();
  const auto live = live_sessions();
  if (is_stopping && live.empty()) return;
  const Clock::time_point now = Clock::now();
  for (const auto& session : live) session->check(now, is_stopping);
  sweep_timer.expires_after(is_stopping ? std::min(sweep_interval, std::chrono::milliseconds(50)) : sweep_interval);
  sweep_timer.async_wait([self = this](boost::system::error_code ec) {
    if (ec && ec != net::error::operation_aborted) return;
    self->sweep();
  });
}

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler, HttpRefusal refusal, HttpObserver observer,
                       HttpHeadCheck head_check)
    : impl_(std::make_unique<Impl>(options, std::move(handler), std::move(refusal), std::move(observer),
                                   std::move(head_check))) {}

HttpServer::~HttpServer() {
  stop();
  for (const auto& context : impl_->contexts) context->stop();
}

int HttpServer::bind(const std::string& host, int port) {
  Impl& self = *impl_;
  boost::system::error_code ec;
  tcp::resolver resolver(*self.contexts.front());
  const auto endpoints = resolver.resolve(host, std::to_string(port), tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    throw Error(fmt::format("cannot listen on {}:{}: {}", host, port, ec ? ec.message() : "no address"));
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  self.acceptor.open(endpoint.protocol(), ec);
  if (!ec) self.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) self.acceptor.bind(endpoint, ec);
  if (!ec) self.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    boost::system::error_code ignored;
    self.acceptor.close(ignored);
    throw Error(fmt::format("cannot listen on {}:{}: {}", host, port, ec.message()));
  }
  return self.acceptor.local_endpoint().port();
}

void HttpServer::serve() {
  Impl& self = *impl_;
  if (!self.acceptor.is_open()) throw Error("HttpServer::serve() before bind()");
  net::post(self.acceptor.get_executor(), [impl = impl_.get()] {
    impl->accept();
    impl->sweep();
  });
  std::vector<std::thread> extra;
  for (std::size_t i = 1; i < self.contexts.size(); ++i) {
    extra.emplace_back([context = self.contexts[i].get()] { context->run(); });
  }
  self.contexts.front()->run();
  for (std::thread& thread : extra) thread.join();
}

void HttpServer::stop() {
  if (impl_->stopping.exchange(true)) return;
  net::post(impl_->acceptor.get_executor(), [impl = impl_.get()] {
    boost::system::error_code ignored;
    impl->acceptor.close(ignored);
    impl->accept_timer.cancel();
    impl->sweep_timer.cancel();  // re-armed at the stopping cadence (or not, when nothing is open)
    impl->guards.clear();        // each loop ends once its connections have
  });
}

HttpServerCounters HttpServer::counters() const {
  return HttpServerCounters{.accept_errors = impl_->accept_errors.load(std::memory_order_relaxed)};
}

}  // namespace gpucluster::agent
