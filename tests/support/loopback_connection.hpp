#pragma once
// A raw loopback TCP connection for tests that speak HTTP byte by byte
// (stalled heads, partial bodies, pipelining): blocking reads and writes that
// wait at most 5 s each.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace gpucluster::testing {

class LoopbackConnection {
 public:
  // receive_buffer_bytes: SO_RCVBUF set before connecting (0: the default).
  explicit LoopbackConnection(int port, int receive_buffer_bytes = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval timeout{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (receive_buffer_bytes > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer_bytes, sizeof receive_buffer_bytes);
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    connected_ = ::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
    connect_errno_ = connected_ ? 0 : errno;
  }
  ~LoopbackConnection() { ::close(fd_); }
  LoopbackConnection(const LoopbackConnection&) = delete;
  LoopbackConnection& operator=(const LoopbackConnection&) = delete;

  bool connected() const { return connected_; }
  int connect_errno() const { return connect_errno_; }
  // False when the server closed (or reset) the connection before all was sent.
  bool send(const std::string& bytes) const {
    for (std::size_t sent = 0; sent < bytes.size();) {
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }
  // Everything until the server closes (or a read times out).
  std::string read_all() const {
    std::string out;
    char buffer[8192];
    for (;;) {
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) return out;
      out.append(buffer, static_cast<std::size_t>(n));
    }
  }
  // At least `bytes` bytes, or what came before a read timed out or the close.
  std::string read_some(std::size_t bytes) const {
    std::string out;
    char buffer[8192];
    while (out.size() < bytes) {
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      out.append(buffer, static_cast<std::size_t>(n));
    }
    return out;
  }
  // Without waiting: nullopt while the server keeps the connection open with
  // nothing to say; else what it answered before closing ("" when it reset
  // the connection before the answer could be read).
  std::optional<std::string> answer_now() const {
    std::string out;
    char buffer[8192];
    for (;;) {
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, MSG_DONTWAIT);
      if (n > 0) {
        out.append(buffer, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0 || errno == ECONNRESET || errno == EPIPE) return out;
      if (out.empty()) return std::nullopt;  // EAGAIN: open, nothing sent
      return out;
    }
  }
  // True when the server closed the connection (waits up to the read timeout).
  bool closed_by_server() const {
    char byte = 0;
    return ::recv(fd_, &byte, 1, 0) == 0;
  }
  // Whether the server has closed by now (no data must be pending).
  bool closed_now() const {
    char byte = 0;
    const ssize_t n = ::recv(fd_, &byte, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  int connect_errno_ = 0;
};

}  // namespace gpucluster::testing
