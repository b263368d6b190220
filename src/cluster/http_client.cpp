#include "cluster/http_client.hpp"

#include <charconv>

#include <fmt/format.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
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
    if (rest.substr(slash) != "/") throw InputError(field, shown, "must be a base URL http://HOST:PORT, without a path");
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

const HttpUrl& HttpClient::url() const noexcept { return impl_->url; }

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
                              self.stream->async_connect(results, [&](beast::error_code connect_error,
                                                                      const tcp::endpoint&) {
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
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (reused && closed_by_peer && left.count() > 0) return request(method, target, body, token, left);
    const bool timed_out = failure == beast::error::timeout || failure == net::error::timed_out;
    throw TransportError(fmt::format("{} {}: {} failed: {}", method, self.url.str() + std::string(target), step,
                                     timed_out ? fmt::format("no answer within {} ms", timeout.count())
                                               : failure.message()));
  }
  return out;
}

}  // namespace gpucluster
