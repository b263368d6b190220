#include "cluster/http_client.hpp"

#include <array>
#include <charconv>
#include <limits>

#include <fmt/format.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

namespace gpucluster {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

std::string HttpUrl::str() const {
  return host.find(':') != std::string::npos ? fmt::format("http://[{}]:{}", host, port)
                                             : fmt::format("http://{}:{}", host, port);
}

bool is_loopback_host(std::string_view host) noexcept {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

HttpUrl parse_http_url(std::string_view text, const char* field) {
  const std::string shown(text.substr(0, 256));
  constexpr std::string_view kScheme = "http://";
  if (text.rfind("https://", 0) == 0) {
    throw InputError(field, shown,
                     "https is not supported: gpucluster speaks plain HTTP; use a private network, a VPN or an SSH "
                     "tunnel (docs/cluster.md, \"Security\")");
  }
  if (text.rfind(kScheme, 0) != 0) throw InputError(field, shown, "must be a URL http://HOST:PORT");
  std::string_view rest = text.substr(kScheme.size());
  if (const std::size_t slash = rest.find('/'); slash != std::string_view::npos) {
    if (rest.substr(slash) != "/")
      throw InputError(field, shown, "must be a base URL http://HOST:PORT, without a path");
    rest = rest.substr(0, slash);
  }
  if (rest.find_first_of("@?#") != std::string_view::npos) {
    throw InputError(field, shown, "must be http://HOST:PORT (no user, query or fragment)");
  }
  std::string_view host;
  std::string_view port_text;
  if (!rest.empty() && rest.front() == '[') {
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      throw InputError(field, shown, "an IPv6 address is written http://[ADDRESS]:PORT");
    }
    host = rest.substr(1, close - 1);
    port_text = rest.substr(close + 2);
  } else {
    const std::size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) throw InputError(field, shown, "must name the port: http://HOST:PORT");
    host = rest.substr(0, colon);
    port_text = rest.substr(colon + 1);
  }
  int port = 0;
  const auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (host.empty() || port_text.empty() || error != std::errc{} || end != port_text.data() + port_text.size() ||
      port < 1 || port > 65535) {
    throw InputError(field, shown, "must be http://HOST:PORT with a port from 1 to 65535");
  }
  return HttpUrl{std::string(host), port};
}

struct HttpClient::Impl {
  Impl(HttpUrl base, std::size_t limit) : url(std::move(base)), max_response_bytes(limit) {}
  HttpUrl url;
  std::size_t max_response_bytes;
  net::io_context io;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
};

HttpClient::HttpClient(HttpUrl url, std::size_t max_response_bytes)
    : impl_(std::make_unique<Impl>(std::move(url), max_response_bytes)) {}
HttpClient::~HttpClient() = default;

const HttpUrl& HttpClient::url() const noexcept {
  return impl_->url;
}

void HttpClient::close() {
  if (!impl_->stream) return;
  beast::error_code ignored;
  impl_->stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
  impl_->stream->close();
  impl_->stream.reset();
  impl_->buffer.clear();
}

HttpClientResponse HttpClient::request(std::string_view method, std::string_view target, std::string_view body,
                                       const std::optional<std::string>& token, std::chrono::milliseconds timeout) {
  Impl& self = *impl_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const bool reused = self.stream.has_value();
  beast::error_code failure;
  const char* step = "connect";
  HttpClientResponse out;
  const auto fail = [&](const char* what, const beast::error_code& ec) {
    step = what;
    failure = ec;
  };

  http::request<http::string_body> req{http::string_to_verb(beast::string_view(method.data(), method.size())),
                                       beast::string_view(target.data(), target.size()), 11};
  req.set(http::field::host, fmt::format("{}:{}", self.url.host, self.url.port));
  req.set(http::field::user_agent, "gpucluster");
  req.keep_alive(true);
  if (token) req.set(http::field::authorization, "Bearer " + *token);
  if (!body.empty() || method == "POST") {
    req.set(http::field::content_type, "application/json");
    req.body() = std::string(body);
    req.prepare_payload();
  }
  std::optional<http::response_parser<http::string_body>> parser;
  parser.emplace();
  parser->body_limit(self.max_response_bytes);

  const auto read_response = [&] {
    http::async_read(*self.stream, self.buffer, *parser, [&](beast::error_code ec, std::size_t) {
      if (ec) return fail("read", ec);
      const auto& res = parser->get();
      out.status = static_cast<int>(res.result_int());
      out.body = res.body();
      if (const auto retry = res.find(http::field::retry_after); retry != res.end()) {
        int seconds = 0;
        const std::string_view text(retry->value().data(), retry->value().size());
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), seconds);
        if (error == std::errc{} && end == text.data() + text.size() && seconds >= 0) out.retry_after_seconds = seconds;
      }
      if (!res.keep_alive()) close();
    });
  };
  const auto write_request = [&] {
    self.stream->expires_at(deadline);
    http::async_write(*self.stream, req, [&](beast::error_code ec, std::size_t) {
      if (ec) return fail("write", ec);
      read_response();
    });
  };

  self.io.restart();
  if (self.stream) {
    write_request();
  } else {
    self.stream.emplace(self.io);
    self.stream->expires_at(deadline);
    auto resolver = std::make_shared<tcp::resolver>(self.io);
    resolver->async_resolve(self.url.host, std::to_string(self.url.port),
                            [&, resolver](beast::error_code ec, tcp::resolver::results_type results) {
                              if (ec) return fail("resolve", ec);
                              if (std::chrono::steady_clock::now() >= deadline) {
                                return fail("resolve", net::error::timed_out);
                              }
                              self.stream->expires_at(deadline);
                              self.stream->async_connect(
                                  results, [&](beast::error_code connect_error, const tcp::endpoint&) {
                                    if (connect_error) return fail("connect", connect_error);
                                    beast::error_code ignored;
                                    self.stream->socket().set_option(tcp::no_delay(true), ignored);
                                    write_request();
                                  });
                            });
  }
  self.io.run();
  if (failure) {
    close();
    // A kept-alive connection the server has closed meanwhile (its idle
    // timeout) fails on first use: once, on a new connection.
    const bool closed_by_peer = failure == http::error::end_of_stream || failure == net::error::eof ||
                                failure == net::error::connection_reset || failure == net::error::broken_pipe;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (reused && closed_by_peer && left.count() > 0) return request(method, target, body, token, left);
    const bool timed_out = failure == beast::error::timeout || failure == net::error::timed_out;
    throw TransportError(
        fmt::format("{} {}: {} failed: {}", method, self.url.str() + std::string(target), step,
                    timed_out ? fmt::format("no answer within {} ms", timeout.count()) : failure.message()));
  }
  return out;
}

namespace {

// Runs one asynchronous step on the caller's thread and returns its error.
template <class Start>
beast::error_code run_step(net::io_context& io, Start&& start) {
  beast::error_code result;
  io.restart();
  start([&result](beast::error_code ec, auto&&...) { result = ec; });
  io.run();
  return result;
}

bool timed_out(const beast::error_code& ec) {
  return ec == beast::error::timeout || ec == net::error::timed_out;
}

}  // namespace

HttpStreamResult HttpClient::stream(std::string_view method, std::string_view target, std::string_view body,
                                    const std::optional<std::string>& token, const HttpStreamOptions& options,
                                    const MessageFramer::Handler& on_message, std::stop_token stop) {
  Impl& self = *impl_;
  const std::string where = fmt::format("{} {}{}", method, self.url.str(), target);
  close();
  HttpStreamResult out;
  if (stop.stop_requested()) {
    out.end = HttpStreamEnd::stop_requested;
    return out;
  }
  // The posted cancel may run after this call returned (it was queued late):
  // `active` turns it into a no-op for whatever request comes next.
  auto active = std::make_shared<bool>(true);
  std::stop_callback on_stop(stop, [&self, active] {
    net::post(self.io, [&self, active] {
      if (*active && self.stream) self.stream->cancel();
    });
  });
  struct Finish {
    HttpClient* client;
    std::shared_ptr<bool> active;
    ~Finish() {
      *active = false;
      client->close();
    }
  } finish{this, active};

  const auto header_deadline = std::chrono::steady_clock::now() + options.header_timeout;
  const auto fail = [&](const char* step, const beast::error_code& ec,
                        std::chrono::milliseconds limit) -> HttpStreamResult {
    if (stop.stop_requested()) {
      out.end = HttpStreamEnd::stop_requested;
      return out;
    }
    throw TransportError(
        fmt::format("{}: {} failed: {}", where, step,
                    timed_out(ec) ? fmt::format("nothing within {} ms", limit.count()) : ec.message()));
  };

  tcp::resolver resolver(self.io);
  tcp::resolver::results_type endpoints;
  beast::error_code ec = run_step(self.io, [&](auto handler) {
    resolver.async_resolve(self.url.host, std::to_string(self.url.port),
                           [&endpoints, handler](beast::error_code e, tcp::resolver::results_type results) mutable {
                             endpoints = std::move(results);
                             handler(e);
                           });
  });
  if (ec) return fail("resolve", ec, options.header_timeout);
  self.stream.emplace(self.io);
  self.stream->expires_at(header_deadline);
  ec = run_step(self.io, [&](auto handler) { self.stream->async_connect(endpoints, handler); });
  if (ec) return fail("connect", ec, options.header_timeout);
  beast::error_code ignored;
  self.stream->socket().set_option(tcp::no_delay(true), ignored);

  http::request<http::string_body> req{http::string_to_verb(beast::string_view(method.data(), method.size())),
                                       beast::string_view(target.data(), target.size()), 11};
  req.set(http::field::host, fmt::format("{}:{}", self.url.host, self.url.port));
  req.set(http::field::user_agent, "gpucluster");
  if (token) req.set(http::field::authorization, "Bearer " + *token);
  if (!body.empty() || method == "POST") {
    req.set(http::field::content_type, "application/json");
    req.body() = std::string(body);
    req.prepare_payload();
  }
  self.stream->expires_at(header_deadline);
  ec = run_step(self.io, [&](auto handler) { http::async_write(*self.stream, req, handler); });
  if (ec) return fail("write", ec, options.header_timeout);

  http::response_parser<http::buffer_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // bounded per message instead
  self.stream->expires_at(header_deadline);
  ec = run_step(self.io, [&](auto handler) { http::async_read_header(*self.stream, self.buffer, parser, handler); });
  if (ec) return fail("reading the response header", ec, options.header_timeout);
  out.status = static_cast<int>(parser.get().result_int());
  const bool success = out.status >= 200 && out.status < 300;

  MessageFramer framer(options.framing, options.max_message_bytes);
  std::array<char, 16 * 1024> piece{};
  while (!parser.is_done()) {
    if (stop.stop_requested()) {
      out.end = HttpStreamEnd::stop_requested;
      return out;
    }
    parser.get().body().data = piece.data();
    parser.get().body().size = piece.size();
    self.stream->expires_after(options.idle_timeout);
    ec = run_step(self.io, [&](auto handler) { http::async_read_some(*self.stream, self.buffer, parser, handler); });
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      return fail(success ? "reading the stream" : "reading the error body", ec, options.idle_timeout);
    }
    const std::string_view bytes(piece.data(), piece.size() - parser.get().body().size);
    if (!success) {
      if (out.body.size() + bytes.size() > self.max_response_bytes) {
        throw TransportError(
            fmt::format("{}: the {} answer is longer than {} bytes", where, out.status, self.max_response_bytes));
      }
      out.body.append(bytes);
      continue;
    }
    if (!bytes.empty() && !framer.feed(bytes, on_message)) {
      out.end = HttpStreamEnd::handler_stopped;
      return out;
    }
  }
  if (success && framer.pending_bytes() > 0) {
    throw TransportError(
        fmt::format("{}: the stream ended inside a message ({} bytes of it came)", where, framer.pending_bytes()));
  }
  out.end = HttpStreamEnd::finished;
  return out;
}

}  // namespace gpucluster
