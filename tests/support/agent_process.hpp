#pragma once
// Starts the real `gpucluster agent` binary on a free loopback port for
// integration tests, and stops it with SIGTERM as an operator would.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <httplib.h>

namespace gpucluster::testing {

inline std::string source_path(const std::string& relative) {
  return std::string(GPUCLUSTER_SOURCE_DIR) + "/" + relative;
}

// How the agent's process is set up, beyond its arguments.
struct AgentLaunch {
  // RLIMIT_NOFILE (soft, hard) set in the child before exec; unset: inherited.
  std::optional<std::pair<rlim_t, rlim_t>> open_files_limit;
  // stderr goes to a pipe the test holds (close_stderr_pipe() closes its read
  // end) instead of a log file; stderr_text() is then empty.
  bool stderr_to_pipe = false;
  // The agent listens before discovery is done; by default the constructor
  // also waits for its "ready:" line (devices discovered, /healthz 200).
  bool wait_until_ready = true;
  // A program the agent runs under, e.g. {"faketime", "-f", "+1h"}; found on PATH.
  std::vector<std::string> wrapper;
};

class AgentProcess {
 public:
  // Arguments after `gpucluster agent`; --listen 127.0.0.1:0 is added unless given.
  explicit AgentProcess(std::vector<std::string> arguments, std::chrono::seconds startup = std::chrono::seconds{30},
                        AgentLaunch launch = {}) {
    static int counter = 0;
    stderr_path_ = std::filesystem::temp_directory_path() /
                   ("gpucluster-agent-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".log");
    std::vector<std::string> argv_strings = launch.wrapper;
    argv_strings.emplace_back(GPUCLUSTER_CLI_PATH);
    argv_strings.emplace_back("agent");
    bool has_listen = false;
    for (const auto& argument : arguments) has_listen = has_listen || argument.rfind("--listen", 0) == 0;
    if (!has_listen) {
      argv_strings.emplace_back("--listen");
      argv_strings.emplace_back("127.0.0.1:0");
    }
    argv_strings.insert(argv_strings.end(), arguments.begin(), arguments.end());
    std::vector<char*> argv;
    for (auto& argument : argv_strings) argv.push_back(argument.data());
    argv.push_back(nullptr);

    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    int err[2] = {-1, -1};
    if (launch.stderr_to_pipe) {
      if (::pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    } else {
      err[1] = ::open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    }
    rlimit open_files{};
    if (launch.open_files_limit) open_files = {launch.open_files_limit->first, launch.open_files_limit->second};
    pid_ = ::fork();
    if (pid_ == 0) {                       // child: only async-signal-safe calls until exec
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test never leaves its agent running
      ::dup2(out[1], STDOUT_FILENO);       // dup2 clears O_CLOEXEC on the copies
      ::dup2(err[1], STDERR_FILENO);
      if (launch.open_files_limit && ::setrlimit(RLIMIT_NOFILE, &open_files) != 0) ::_exit(126);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    stderr_pipe_fd_ = err[0];
    stdout_fd_ = out[0];
    if (pid_ < 0) throw std::runtime_error("cannot start " + std::string(argv[0]));
    read_banner(startup, launch.wait_until_ready);
  }

  ~AgentProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    if (stdout_fd_ >= 0) ::close(stdout_fd_);
    close_stderr_pipe();
    std::error_code ignored;
    std::filesystem::remove(stderr_path_, ignored);
  }

  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // The agent's stderr reader goes away (with AgentLaunch::stderr_to_pipe).
  void close_stderr_pipe() {
    if (stderr_pipe_fd_ >= 0) ::close(stderr_pipe_fd_);
    stderr_pipe_fd_ = -1;
  }
  const std::string& banner() const { return banner_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  httplib::Client client() const {
    httplib::Client client("127.0.0.1", port_);
    client.set_connection_timeout(std::chrono::seconds{5});
    client.set_read_timeout(std::chrono::seconds{30});
    return client;
  }

  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == 0) return true;
    pid_ = -1;
    exit_status_ = status;
    return false;
  }

  // Sends a signal and waits for the exit; returns the raw wait status.
  int stop(int signal_number = SIGTERM, std::chrono::seconds patience = std::chrono::seconds{20}) {
    if (pid_ <= 0) return exit_status_;
    ::kill(pid_, signal_number);
    const auto deadline = std::chrono::steady_clock::now() + patience;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_status_ = status;
        return status;
      }
      ::usleep(20'000);
    }
    throw std::runtime_error("agent did not exit within the patience after the signal");
  }

  std::string stderr_text() const {
    std::ifstream file(stderr_path_);
    std::stringstream content;
    content << file.rdbuf();
    return content.str();
  }

 private:
  void read_banner(std::chrono::seconds startup, bool until_ready) {
    const auto deadline = std::chrono::steady_clock::now() + startup;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd descriptor{stdout_fd_, POLLIN, 0};
      if (::poll(&descriptor, 1, 100) <= 0) continue;
      char buffer[4096];
      const ssize_t n = ::read(stdout_fd_, buffer, sizeof buffer);
      if (n <= 0) break;  // the agent exited
      banner_.append(buffer, static_cast<std::size_t>(n));
      if (const auto port = port_in_banner()) {
        port_ = *port;
        if (!until_ready) return;
        const std::size_t ready = banner_.find("\nready: ");
        if (ready != std::string::npos && banner_.find('\n', ready + 1) != std::string::npos) return;
      }
    }
    throw std::runtime_error(port_ > 0 ? "agent did not say it was ready; stderr:\n" + stderr_text()
                                       : "agent did not print its URL; stderr:\n" + stderr_text());
  }

  // The port of "gpucluster agent on http://HOST:PORT " once the line is complete.
  std::optional<int> port_in_banner() const {
    constexpr std::string_view kPrefix = "gpucluster agent on http://";
    const std::size_t begin = banner_.find(kPrefix);
    if (begin == std::string::npos) return std::nullopt;
    const std::size_t end = banner_.find(' ', begin + kPrefix.size());
    if (end == std::string::npos) return std::nullopt;
    const std::size_t colon = banner_.rfind(':', end);
    if (colon == std::string::npos || colon + 1 >= end) return std::nullopt;
    return std::stoi(banner_.substr(colon + 1, end - colon - 1));
  }

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  int stderr_pipe_fd_ = -1;  // read end, with AgentLaunch::stderr_to_pipe
  int port_ = 0;
  int exit_status_ = -1;
  std::string banner_;
  std::filesystem::path stderr_path_;
};

}  // namespace gpucluster::testing
