#pragma once
// A private Prometheus server for integration tests: the Debian package's
// /usr/bin/prometheus started on a free loopback port with a temporary config
// and data directory, queried through its HTTP API, and killed at the end.
// Never a system-wide Prometheus: always this process on its own port.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace gpucluster::testing {

inline constexpr const char* kPrometheusPath = "/usr/bin/prometheus";
inline constexpr const char* kPromtoolPath = "/usr/bin/promtool";

inline bool executable(const char* path) {
  return ::access(path, X_OK) == 0;
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream file(path);
  std::stringstream content;
  content << file.rdbuf();
  return content.str();
}

inline std::string tail_of(const std::string& text, std::size_t max_chars = 4000) {
  return text.size() <= max_chars ? text : "…" + text.substr(text.size() - max_chars);
}

// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix) {
    std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A loopback port that was free a moment ago (the kernel's pick for port 0).
inline int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot bind a loopback port");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

// fork + exec with stdin from `stdin_path` and stdout and stderr into
// `output_path`. The child is killed if the test process dies first, so a
// crashed or timed-out test never leaves a server behind.
inline pid_t spawn_process(const std::vector<std::string>& arguments, const std::string& stdin_path,
                           const std::string& output_path) {
  std::vector<char*> argv;
  std::vector<std::string> copy = arguments;
  for (auto& argument : copy) argv.push_back(argument.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {  // only async-signal-safe calls until exec
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    const int in = ::open(stdin_path.c_str(), O_RDONLY);
    const int out = ::open(output_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (in < 0 || out < 0) ::_exit(126);
    ::dup2(in, STDIN_FILENO);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(out, STDERR_FILENO);
    ::close(in);
    ::close(out);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal or out of time
  std::string output;  // stdout and stderr together
};

// Runs a command to completion with `input` on its stdin.
inline CommandResult run_command(const std::vector<std::string>& arguments, const std::string& input,
                                 std::chrono::seconds patience = std::chrono::seconds{60}) {
  TempDir dir("gpucluster-command");
  const auto in = dir.path() / "stdin";
  const auto out = dir.path() / "output";
  std::ofstream(in, std::ios::binary) << input;
  const pid_t pid = spawn_process(arguments, in.string(), out.string());
  const auto deadline = std::chrono::steady_clock::now() + patience;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return {-1, read_text(out) + "\n(killed: still running after the patience)"};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text(out)};
}

class PrometheusProcess {
 public:
  // Scrapes 127.0.0.1:`target_port` every second as job `job`; blocks until
  // Prometheus answers /-/ready.
  PrometheusProcess(int target_port, std::string job = "gpucluster",
                    std::chrono::seconds startup = std::chrono::seconds{60})
      : PrometheusProcess(ScrapeConfigs{"  - job_name: " + job +
                                        "\n"
                                        "    static_configs:\n"
                                        "      - targets: ['127.0.0.1:" +
                                        std::to_string(target_port) + "']\n"},
                          job, startup) {}

  // The scrape_configs section as YAML (its entries, indented by two spaces).
  struct ScrapeConfigs {
    std::string yaml;
  };
  PrometheusProcess(const ScrapeConfigs& scrape_configs, std::string job,
                    std::chrono::seconds startup = std::chrono::seconds{60})
      : dir_("gpucluster-prometheus"), job_(std::move(job)) {
    config_path_ = dir_.path() / "prometheus.yml";
    log_path_ = dir_.path() / "prometheus.log";
    std::ofstream(config_path_) << "global:\n"
                                   "  scrape_interval: 1s\n"
                                   "  scrape_timeout: 1s\n"
                                   "  evaluation_interval: 1s\n"
                                   "scrape_configs:\n"
                                << scrape_configs.yaml;
    const auto deadline = std::chrono::steady_clock::now() + startup;
    // The free port can be taken between our probe and Prometheus's bind: retry on a new one.
    for (int attempt = 0;; ++attempt) {
      port_ = free_loopback_port();
      start();
      if (wait_ready(deadline)) return;
      const std::string log = log_text();
      stop();
      if (attempt < 4 && log.find("address already in use") != std::string::npos) continue;
      throw std::runtime_error("Prometheus did not become ready on 127.0.0.1:" + std::to_string(port_) +
                               "; its log:\n" + tail_of(log));
    }
  }

  ~PrometheusProcess() { stop(); }
  PrometheusProcess(const PrometheusProcess&) = delete;
  PrometheusProcess& operator=(const PrometheusProcess&) = delete;

  int port() const { return port_; }
  const std::string& job() const { return job_; }
  const std::filesystem::path& config_path() const { return config_path_; }
  std::string log_text() const { return read_text(log_path_); }
  std::string log_tail() const { return tail_of(log_text()); }

  httplib::Client client() const {
    httplib::Client client("127.0.0.1", port_);
    client.set_connection_timeout(std::chrono::seconds{5});
    client.set_read_timeout(std::chrono::seconds{30});
    return client;
  }

  // GET /api/v1/<endpoint>; the parsed `data` of a success, or an exception
  // naming the error Prometheus gave.
  nlohmann::json api(const std::string& endpoint, const httplib::Params& params = {}) const {
    auto http = client();
    const auto result = http.Get(httplib::append_query_params("/api/v1/" + endpoint, params).c_str());
    if (!result) throw std::runtime_error("no answer from Prometheus for /api/v1/" + endpoint);
    const auto body = nlohmann::json::parse(result->body, nullptr, false);
    if (result->status != 200 || body.is_discarded() || body.value("status", "") != "success") {
      throw std::runtime_error("Prometheus /api/v1/" + endpoint + " answered " + std::to_string(result->status) + ": " +
                               result->body);
    }
    return body["data"];
  }

  // An instant query's result vector: [{"metric": {labels}, "value": [t, "v"]}, …].
  nlohmann::json query(const std::string& expression) const {
    const nlohmann::json data = api("query", {{"query", expression}});
    if (data.value("resultType", "") != "vector") {
      throw std::runtime_error("query " + expression + " is not a vector: " + data.dump());
    }
    return data["result"];
  }

  // The value of a query that must have exactly one series, or nullopt when it has none.
  std::optional<double> value(const std::string& expression) const {
    const nlohmann::json result = query(expression);
    if (result.empty()) return std::nullopt;
    if (result.size() != 1) throw std::runtime_error(expression + " has " + std::to_string(result.size()) + " series");
    return std::stod(result[0]["value"][1].get<std::string>());
  }

  // The scrape target's last error and health, for failure messages.
  std::string target_report() const {
    try {
      std::string report;
      for (const auto& target : api("targets")["activeTargets"]) {
        report += target.value("scrapeUrl", "?") + " health " + target.value("health", "?") + " lastError \"" +
                  target.value("lastError", "") + "\"\n";
      }
      return report.empty() ? "no active targets\n" : report;
    } catch (const std::exception& error) {
      return std::string("targets unknown: ") + error.what() + "\n";
    }
  }

  // Polls `condition` until it holds or `patience` runs out; true if it held.
  static bool eventually(const std::function<bool()>& condition,
                         std::chrono::milliseconds patience = std::chrono::seconds{30},
                         std::chrono::milliseconds pause = std::chrono::milliseconds{100}) {
    const auto deadline = std::chrono::steady_clock::now() + patience;
    for (;;) {
      try {
        if (condition()) return true;
      } catch (const std::exception&) {
        // A query that fails while the server is busy is retried until the deadline.
      }
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(pause);
    }
  }

  // Waits for a successful scrape (up == 1) that started after `after`, so
  // that what the target served at `after` is in Prometheus. Throws with the
  // target's error and the log tail when none comes within `patience`.
  void wait_for_scrape_after(std::chrono::system_clock::time_point after,
                             std::chrono::milliseconds patience = std::chrono::seconds{30}) const {
    const double after_seconds = std::chrono::duration<double>(after.time_since_epoch()).count();
    const std::string up = "up{job=\"" + job_ + "\"}";
    const bool scraped = eventually(
        [&] {
          const auto timestamp = value("timestamp(" + up + ")");
          return timestamp && *timestamp > after_seconds && value(up) == 1.0;
        },
        patience);
    if (!scraped) {
      throw std::runtime_error("no successful scrape of job " + job_ + " within " + std::to_string(patience.count()) +
                               " ms; " + target_report() + "Prometheus log tail:\n" + log_tail());
    }
  }

 private:
  void start() {
    pid_ = spawn_process({kPrometheusPath, "--config.file=" + config_path_.string(),
                          "--storage.tsdb.path=" + (dir_.path() / "data").string(),
                          "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--log.level=info"},
                         "/dev/null", log_path_.string());
  }

  bool wait_ready(std::chrono::steady_clock::time_point deadline) {
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;  // exited: the caller reads why in the log
      }
      httplib::Client http("127.0.0.1", port_);
      http.set_connection_timeout(std::chrono::seconds{2});
      http.set_read_timeout(std::chrono::seconds{5});
      if (const auto result = http.Get("/-/ready"); result && result->status == 200) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  void stop() {
    if (pid_ <= 0) return;
    // SIGTERM lets it close its TSDB; the data dir is thrown away anyway, so
    // a slow shutdown is cut short with SIGKILL.
    ::kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{5};
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
  }

  TempDir dir_;
  std::string job_;
  std::filesystem::path config_path_;
  std::filesystem::path log_path_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace gpucluster::testing
