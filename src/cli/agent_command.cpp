#include "agent_command.hpp"

#include <sys/stat.h>
#include <algorithm>
#include <csignal>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "gpucluster/agent/server.hpp"
#include "gpucluster/core/units.hpp"
#include "gpucluster/manager.hpp"

namespace gpucluster::cli {
namespace {

std::string read_token(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw InputError("--token-file", path, "must be a readable file holding the token");
  std::stringstream content;
  content << file.rdbuf();
  std::string token = content.str();
  const auto first = token.find_first_not_of(" \t\r\n");
  const auto last = token.find_last_not_of(" \t\r\n");
  token = first == std::string::npos ? std::string{} : token.substr(first, last - first + 1);
  if (token.empty()) throw InputError("--token-file", path, "the file holds no token");
  if (token.find_first_of(" \t\r\n") != std::string::npos) {
    throw InputError("--token-file", path, "the token must be one word (no spaces or line breaks)");
  }
  struct stat info {};
  if (::stat(path.c_str(), &info) == 0 && (info.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    spdlog::warn("token file {} is readable by group or others; chmod 600 it", path);
  }
  return token;
}

agent::AgentConfig agent_config(const AgentOptions& options) {
  agent::AgentConfig config;
  config.listen = agent::parse_listen_address(options.listen);
  if (!options.token_file.empty()) config.token = read_token(options.token_file);
  const auto drain = parse_duration(options.drain_timeout, "--drain-timeout");
  if (drain.count() <= 0) throw InputError("--drain-timeout", options.drain_timeout, "must be positive");
  config.drain_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(drain);
  if (options.threads > 256) {
    throw InputError("--threads", std::to_string(options.threads), "must be 1 to 256");
  }
  config.worker_threads = options.threads > 0 ? options.threads : std::max(1U, std::thread::hardware_concurrency());
  agent::validate_agent_config(config);
  return config;
}

ManagerConfig manager_config(const AgentOptions& options, ManagerConfig config) {
  config.sample_interval = parse_duration(options.interval, "--interval");
  if (config.sample_interval.count() <= 0) throw InputError("--interval", options.interval, "must be positive");
  if (options.history == 0) throw InputError("--history", "0", "must be at least 1 sample per device");
  config.history.max_samples = options.history;
  if (!options.max_age.empty()) {
    config.history.max_age = parse_duration(options.max_age, "--max-age");
    if (config.history.max_age->count() <= 0) throw InputError("--max-age", options.max_age, "must be positive");
  }
  return config;
}

void print_banner(const agent::Agent& agent, const Manager& manager) {
  const std::string url = agent.base_url();
  std::string backends;
  for (const BackendReport& report : manager.backend_reports()) {
    if (report.devices == 0) continue;
    backends += fmt::format("{}{} {}", backends.empty() ? "" : ", ", report.devices, report.backend);
  }
  std::cout << fmt::format(
                   "gpucluster agent on {} (host {}; devices: {})\n"
                   "  {}/v1/devices    {}/v1/cluster    {}/metrics    {}/healthz\n"
                   "  POST {}/v1/select  {}/v1/plan  {}/v1/telemetry\n"
                   "SIGTERM or Ctrl-C drains and stops it.\n",
                   url, manager.host(), backends.empty() ? "none yet" : backends, url, url, url, url, url, url, url)
            << std::flush;
}

}  // namespace

int run_agent(const AgentOptions& options, std::vector<BackendPtr> backends, ManagerConfig manager_base) {
  agent::AgentConfig config = agent_config(options);  // bad options fail before anything starts
  ManagerConfig manager_settings = manager_config(options, std::move(manager_base));

  // Signals are taken by sigwait on this thread: block them before any thread
  // starts so every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  Manager manager(std::move(manager_settings), std::move(backends));
  agent::Agent agent(manager, std::move(config));
  agent.bind();
  manager.start(/*background_sampling=*/true);
  std::thread server([&agent] { agent.serve(); });
  print_banner(agent, manager);
  spdlog::info("agent listening on {}", agent.base_url());

  int received = 0;
  sigwait(&stop_signals, &received);
  spdlog::info("{} received: draining in-flight requests", received == SIGTERM ? "SIGTERM" : "SIGINT");
  const bool drained = agent.stop();
  if (!drained) {
    spdlog::error("in-flight requests did not finish within {}; exiting without waiting for them",
                  options.drain_timeout);
    std::cerr.flush();
    std::_Exit(1);  // the manager cannot be shut down under requests still using it
  }
  server.join();
  manager.shutdown();
  spdlog::info("agent stopped");
  return 0;
}

}  // namespace gpucluster::cli
