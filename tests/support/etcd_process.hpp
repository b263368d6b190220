#pragma once
// A private etcd for integration tests: Debian's /usr/bin/etcd (package
// etcd-server) as a one-member cluster on free loopback ports, with a
// temporary data dir. Never the system etcd on 2379/2380: always this process
// on its own ports. kill_hard(), resume() and restart() keep the data dir and
// the ports; wipe_data() (while stopped) starts the next one empty, as an etcd
// that lost its data.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "support/prometheus_process.hpp"  // TempDir, free_loopback_port, spawn_process, read_text, tail_of

namespace gpucluster::testing {

inline constexpr const char* kEtcdPath = "/usr/bin/etcd";
inline constexpr const char* kEtcdMissing =
    "/usr/bin/etcd is missing: apt-get install etcd-server (scripts/bootstrap.sh installs it)";

class EtcdProcess {
 public:
  explicit EtcdProcess(std::chrono::seconds startup = std::chrono::seconds{60}) : dir_("gpucluster-etcd") {
    const auto deadline = std::chrono::steady_clock::now() + startup;
    // A probed free port can be taken before etcd binds it: retry on new ones.
    for (int attempt = 0;; ++attempt) {
      client_port_ = free_loopback_port();
      peer_port_ = free_loopback_port();
      if (peer_port_ == client_port_) continue;
      start();
      if (wait_ready(deadline)) return;
      const std::string log = log_text();
      kill_hard();
      if (attempt < 4 && log.find("address already in use") != std::string::npos) {
        std::error_code ignored;
        std::filesystem::remove_all(dir_.path() / "data", ignored);
        continue;
      }
      throw std::runtime_error("etcd did not become healthy on " + endpoint() + "; its log:\n" + tail_of(log));
    }
  }
  ~EtcdProcess() { kill_hard(); }
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  int client_port() const { return client_port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(client_port_); }
  bool running() const { return pid_ > 0; }
  // Every start's log, oldest first.
  std::string log_text() const {
    std::string text;
    for (int i = 0; i < starts_; ++i) text += read_text(log_path(i));
    return text;
  }

  // SIGKILL, as a crash: no clean shutdown of the data dir.
  void kill_hard() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // Starts it again on the same data dir and ports; blocks until healthy.
  void restart(std::chrono::seconds patience = std::chrono::seconds{60}) {
    kill_hard();
    resume(patience);
  }

  // After kill_hard(): starts it again on the same data dir and ports; blocks until healthy.
  void resume(std::chrono::seconds patience = std::chrono::seconds{60}) {
    if (running()) throw std::logic_error("etcd is still running: kill_hard() first");
    start();
    if (!wait_ready(std::chrono::steady_clock::now() + patience)) {
      throw std::runtime_error("etcd did not become healthy again on " + endpoint() + "; its log:\n" +
                               tail_of(log_text()));
    }
  }

  // After kill_hard(): the next start has an empty data dir (every key and lease gone).
  void wipe_data() {
    if (running()) throw std::logic_error("etcd is still running: kill_hard() first");
    std::filesystem::remove_all(dir_.path() / "data");
  }

  // POST to the gateway with httplib (independent of the client under test).
  nlohmann::json post(const std::string& path, const nlohmann::json& body) const {
    httplib::Client http("127.0.0.1", client_port_);
    http.set_connection_timeout(std::chrono::seconds{5});
    http.set_read_timeout(std::chrono::seconds{10});
    const auto result = http.Post(path.c_str(), body.dump(), "application/json");
    if (!result) throw std::runtime_error("no answer from etcd for " + path);
    if (result->status != 200) {
      throw std::runtime_error("etcd " + path + " answered " + std::to_string(result->status) + ": " + result->body);
    }
    return nlohmann::json::parse(result->body);
  }

  // Compacts the history up to `revision`, waiting until it is applied.
  void compact(long long revision) const {
    post("/v3/kv/compaction", {{"revision", std::to_string(revision)}, {"physical", true}});
  }

 private:
  std::filesystem::path log_path(int start) const { return dir_.path() / ("etcd-" + std::to_string(start) + ".log"); }

  void start() {
    // One log per start (spawn_process truncates), so a failure shows all of them.
    const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
    const std::string log = log_path(starts_++).string();
    pid_ = spawn_process(
        {kEtcdPath, "--name", "t", "--data-dir", (dir_.path() / "data").string(), "--listen-client-urls", endpoint(),
         "--advertise-client-urls", endpoint(), "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", "t=" + peer, "--log-outputs", "stderr"},
        "/dev/null", log);
  }

  bool wait_ready(std::chrono::steady_clock::time_point deadline) {
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;  // exited: the caller reads why in the log
      }
      httplib::Client http("127.0.0.1", client_port_);
      http.set_connection_timeout(std::chrono::seconds{1});
      http.set_read_timeout(std::chrono::seconds{2});
      if (const auto result = http.Get("/health"); result && result->status == 200) {
        const auto body = nlohmann::json::parse(result->body, nullptr, false);
        if (!body.is_discarded() && body.value("health", "") == "true") return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  TempDir dir_;
  int client_port_ = 0;
  int peer_port_ = 0;
  pid_t pid_ = -1;
  int starts_ = 0;
};

}  // namespace gpucluster::testing
