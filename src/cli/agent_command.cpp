#include "agent_command.hpp"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "agent/http_server.hpp"
#include "cluster/etcd_registry.hpp"
#include "cluster/http_client.hpp"
#include "gpucluster/agent/server.hpp"
#include "gpucluster/backends/backend.hpp"
#include "gpucluster/cluster/coordinator.hpp"
#include "gpucluster/cluster/identity.hpp"
#include "gpucluster/cluster/pusher.hpp"
#include "gpucluster/export/json.hpp"
#include "gpucluster/model/device.hpp"
#include "gpucluster/model/units.hpp"
#include "gpucluster/node/manager.hpp"

namespace gpucluster::cli {
namespace {

// A token is one word; the file is read no further than this.
constexpr std::size_t kMaxTokenFileBytes = 4096;

}  // namespace

std::string read_token(const std::string& path, const char* option) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw InputError(option, path, "must be a readable file holding the token");
  std::string token(kMaxTokenFileBytes + 1, '\0');
  file.read(token.data(), static_cast<std::streamsize>(token.size()));
  token.resize(static_cast<std::size_t>(file.gcount()));
  if (token.size() > kMaxTokenFileBytes) {
    throw InputError(option, path, fmt::format("must be at most {} bytes", kMaxTokenFileBytes));
  }
  const auto first = token.find_first_not_of(" \t\r\n");
  const auto last = token.find_last_not_of(" \t\r\n");
  token = first == std::string::npos ? std::string{} : token.substr(first, last - first + 1);
  if (token.empty()) throw InputError(option, path, "the file holds no token");
  if (token.find_first_of(" \t\r\n") != std::string::npos) {
    throw InputError(option, path, "the token must be one word (no spaces or line breaks)");
  }
  struct stat info {};
  if (::stat(path.c_str(), &info) == 0 && (info.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    spdlog::warn("token file {} is readable by group or others; chmod 600 it", path);
  }
  return token;
}

namespace {

// A duration from 1 ms (the agent's timers count milliseconds) to 24 h
// (deadlines are steady_clock time points: far larger ones would overflow).
std::chrono::milliseconds parse_timeout(const std::string& text, const char* option) {
  const auto duration = parse_duration(text, option);
  if (duration < std::chrono::milliseconds{1} || duration > std::chrono::hours{24}) {
    throw InputError(option, text, "must be from 1ms to 24h");
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(duration);
}

agent::AgentConfig agent_config(const AgentOptions& options) {
  agent::AgentConfig config;
  config.listen = agent::parse_listen_address(options.listen);
  if (!options.token_file.empty()) config.token = read_token(options.token_file, "--token-file");
  config.drain_timeout = parse_timeout(options.drain_timeout, "--drain-timeout");
  config.head_timeout = parse_timeout(options.head_timeout, "--head-timeout");
  config.body_timeout = parse_timeout(options.body_timeout, "--body-timeout");
  config.write_timeout = parse_timeout(options.write_timeout, "--write-timeout");
  config.idle_timeout = parse_timeout(options.idle_timeout, "--idle-timeout");
  config.max_body_memory_bytes = parse_size_bytes(options.max_body_memory, "--max-body-memory");
  if (config.max_body_memory_bytes < config.limits.max_body_bytes) {  // as the user wrote it, not in bytes
    throw InputError("--max-body-memory", options.max_body_memory,
                     fmt::format("must be at least the body limit ({} bytes): a body of that size could never be read",
                                 config.limits.max_body_bytes));
  }
  if (options.threads > 256) {
    throw InputError("--threads", std::to_string(options.threads), "must be 1 to 256");
  }
  config.worker_threads = options.threads > 0 ? options.threads : std::max(1U, std::thread::hardware_concurrency());
  config.coordinator = options.coordinator;
  if (!options.advertise.empty()) config.advertise_url = parse_http_url(options.advertise, "--advertise").str();
  config.cluster.report_interval = parse_timeout(options.report_interval, "--report-interval");
  config.cluster.liveness.suspect_after = parse_timeout(options.suspect_after, "--suspect-after");
  config.cluster.liveness.evict_after = parse_timeout(options.evict_after, "--evict-after");
  config.cluster.liveness.forget_after = parse_timeout(options.forget_after, "--forget-after");
  if (options.max_nodes == 0) throw InputError("--max-nodes", "0", "must be > 0");
  config.cluster.max_nodes = options.max_nodes;
  config.cluster.etcd = !options.etcd.empty();
  // Every node that reports holds a kept-alive connection to its coordinator.
  config.max_connections = options.max_connections > 0 ? options.max_connections
                           : options.coordinator       ? std::max<std::size_t>(1024, options.max_nodes + 64)
                                                       : 1024;
  validate_coordinator_options(config.cluster);
  agent::validate_agent_config(config);
  return config;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    if (comma > start) items.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return items;
}

// --join and its companions; checked before anything starts.
PusherOptions pusher_options(const AgentOptions& options, const agent::AgentConfig& config) {
  PusherOptions push;
  push.coordinators = split_list(options.join);
  if (push.coordinators.empty() && options.etcd.empty()) {
    throw InputError("--join", options.join, "must name at least one URL");
  }
  if (!options.join_token_file.empty()) {
    push.token = read_token(options.join_token_file, "--join-token-file");
  } else {
    push.token = config.token;
  }
  push.outbox_samples = options.outbox;
  push.agent_version = GPUCLUSTER_VERSION;
  if (!options.advertise.empty()) push.url = config.advertise_url;
  validate_pusher_options(push);
  for (const std::string& url : push.coordinators) {
    const HttpUrl parsed = parse_http_url(url, "--join");
    if (!push.token && !agent::is_loopback(parsed.host)) {
      throw InputError("--join", url,
                       "a coordinator on another machine needs a token: give --join-token-file FILE (or --token-file)");
    }
  }
  return push;
}

// The memory this process may use: physical memory, lowered by a cgroup
// (v2 memory.max, e.g. a container or systemd's MemoryMax=) and RLIMIT_AS.
std::uint64_t usable_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_bytes = ::sysconf(_SC_PAGESIZE);
  std::uint64_t usable = pages > 0 && page_bytes > 0
                             ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page_bytes)
                             : std::numeric_limits<std::uint64_t>::max();
  if (std::ifstream cgroup("/sys/fs/cgroup/memory.max"); cgroup) {
    std::uint64_t limit = 0;
    if (cgroup >> limit && limit > 0) usable = std::min(usable, limit);  // "max" fails to parse: no limit
  }
  rlimit address_space{};
  if (::getrlimit(RLIMIT_AS, &address_space) == 0 && address_space.rlim_cur != RLIM_INFINITY) {
    usable = std::min<std::uint64_t>(usable, address_space.rlim_cur);
  }
  return usable;
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
  const std::uint64_t budget = options.history_memory.empty()
                                   ? usable_memory_bytes() / 2
                                   : parse_size_bytes(options.history_memory, "--history-memory");
  const std::uint64_t per_device = history_bytes_per_device(config.history);
  if (per_device > budget) {
    throw InputError(
        "--history", std::to_string(options.history),
        fmt::format("one device's full history ({} samples of {} bytes = {}) must fit the history memory of {} ({}); "
                    "lower --history or raise --history-memory",
                    options.history, sizeof(Sample), format_bytes(per_device), format_bytes(budget),
                    options.history_memory.empty() ? "half of the memory this process may use" : "--history-memory"));
  }
  config.history.max_total_bytes = budget;
  config.validation.max_future_skew = parse_duration(options.max_clock_skew, "--max-clock-skew");
  if (config.validation.max_future_skew.count() <= 0) {
    throw InputError("--max-clock-skew", options.max_clock_skew, "must be positive");
  }
  return config;
}

nlohmann::json node_to_json(const NodeIdentity& node) {
  const bool persisted = !node.id.empty();
  return {{"id", persisted ? nlohmann::json(node.id) : nlohmann::json(nullptr)},
          {"name", node.name},
          {"incarnation", persisted ? nlohmann::json(node.incarnation) : nlohmann::json(nullptr)}};
}

// "; node NAME ID, incarnation N" for the banner's first line (nothing without
// --state-dir unless --node-name gave a name other than the host's).
std::string node_banner(const NodeIdentity& node, const Manager& manager) {
  if (!node.id.empty()) return fmt::format("; node {} {}, incarnation {}", node.name, node.id, node.incarnation);
  if (node.name != manager.host()) return fmt::format("; node {} (no --state-dir: no node id)", node.name);
  return {};
}

// Printed as soon as the agent listens (its devices are still being
// discovered); scripts read the address from its first line.
void print_listening(const agent::Agent& agent, const Manager& manager, const NodeIdentity& node, bool as_json) {
  const std::string url = agent.base_url();
  if (as_json) {
    std::cout << nlohmann::json{{"event", "listening"},
                                {"url", url},
                                {"host", manager.host()},
                                {"node", node_to_json(node)}}
                     .dump()
              << std::endl;
    return;
  }
  std::cout << fmt::format(
                   "gpucluster agent on {} (host {}{}; discovering devices: /healthz says \"starting\" until done)\n"
                   "  {}/v1/devices    {}/v1/cluster    {}/metrics    {}/healthz\n"
                   "  POST {}/v1/select  {}/v1/plan  {}/v1/telemetry\n"
                   "SIGTERM or Ctrl-C drains and stops it.\n",
                   url, manager.host(), node_banner(node, manager), url, url, url, url, url, url, url)
            << std::flush;
}

// Printed once discovery is done (the agent is then ready, /healthz 200).
void print_ready(const Manager& manager, std::chrono::steady_clock::duration took, bool as_json) {
  const std::vector<BackendReport> reports = manager.backend_reports();
  const double seconds = std::chrono::duration<double>(took).count();
  if (as_json) {
    std::cout << nlohmann::json{{"event", "ready"},
                                {"discovery_seconds", seconds},
                                {"backends", backends_to_json(reports)}}
                     .dump()
              << std::endl;
    return;
  }
  std::string found;
  for (const BackendReport& report : reports) {
    if (report.devices == 0) continue;
    found += fmt::format("{}{} {}", found.empty() ? "" : ", ", report.devices, report.backend);
  }
  std::cout << fmt::format("ready: devices: {} (discovered in {:.1f} s)\n", found.empty() ? "none" : found, seconds)
            << std::flush;
}

// The open-files limit bounds the connections the agent can hold (one
// descriptor each): the soft limit (often 1024) is raised to the hard one.
// Returns what to log (once the agent is ready) and whether it is a warning.
std::pair<std::string, bool> raise_open_files_limit(std::size_t connections) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return {fmt::format("cannot read the open-files limit: {}", std::strerror(errno)), true};
  }
  std::string said;
  bool warning = false;
  if (limit.rlim_cur == limit.rlim_max) {
    said = fmt::format("open-files limit: {} (the hard limit)", limit.rlim_cur);
  } else {
    const rlim_t before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) == 0) {
      said = fmt::format("open-files limit raised from {} to {} (the hard limit)", before, limit.rlim_cur);
    } else {
      said = fmt::format("open-files limit: {}; raising it to the hard limit {} failed: {}", before, limit.rlim_max,
                         std::strerror(errno));
      warning = true;
      limit.rlim_cur = before;
    }
  }
  // Descriptors besides the connections: the listening socket, event loops, backends, logs.
  constexpr rlim_t kOtherDescriptors = 64;
  if (limit.rlim_cur < connections + kOtherDescriptors) {
    said += fmt::format(
        "; it is below the {} connections the agent accepts: accepts will fail (and back off) before that; raise it "
        "(LimitNOFILE= in the systemd unit, ulimit -n)",
        connections);
    warning = true;
  }
  return {said, warning};
}

// Sent by the discovery thread to the main one, which waits for signals.
constexpr int kDiscoveryDone = SIGUSR1;

}  // namespace

int run_agent(const AgentOptions& options, std::vector<BackendPtr> backends, ManagerConfig manager_base, bool as_json) {
  agent::AgentConfig config = agent_config(options);  // bad options fail before anything starts
  ManagerConfig manager_settings = manager_config(options, std::move(manager_base));

  // The node identity, before anything serves: the state directory is locked
  // for the process's life and the new incarnation is on disk first.
  config.node.name = options.node_name.empty()
                         ? (manager_settings.host.empty() ? local_host_name() : manager_settings.host)
                         : options.node_name;
  validate_identifier(config.node.name, "--node-name");
  // The node's name is also the host part of its own devices' ids, so that the
  // node and its devices read the same in every view (a fleet file's own host
  // still names the fleet's devices).
  manager_settings.host = config.node.name;
  std::optional<PusherOptions> push;
  // --etcd finds the coordinators (and registers a coordinator) in etcd; --join names them.
  if (!options.join.empty() || !options.etcd.empty()) push = pusher_options(options, config);
  std::optional<EtcdRegistryOptions> etcd;
  if (!options.etcd.empty()) {
    etcd.emplace();
    etcd->endpoints = split_list(options.etcd);
    etcd->prefix = options.etcd_prefix;
    etcd->ttl = std::chrono::duration_cast<std::chrono::seconds>(parse_timeout(options.etcd_ttl, "--etcd-ttl"));
    etcd->coordinator = options.coordinator;
    etcd->relist_every = parse_timeout(options.etcd_relist_every, "--etcd-relist-every");
    validate_etcd_registry_options(*etcd);
  }
  // A node of a cluster needs an id that survives restarts: without
  // --state-dir it is kept in the default state directory.
  const bool in_cluster = options.coordinator || push.has_value() || etcd.has_value();
  const std::filesystem::path state_dir = !options.state_dir.empty()
                                              ? std::filesystem::path(options.state_dir)
                                              : (in_cluster ? default_state_dir() : std::filesystem::path{});
  std::optional<StateDirLock> state_lock;
  if (!state_dir.empty()) {
    state_lock.emplace(state_dir);
    IdentityOptions identity;
    identity.state_dir = state_dir;
    identity.name = config.node.name;
    config.node = load_or_create_identity(identity);
    spdlog::info("node {} id {} incarnation {} (state in {})", config.node.name, config.node.id,
                 config.node.incarnation, state_dir.string());
  }
  const NodeIdentity node = config.node;

  // A service's stderr and stdout are pipes (journald, a log shipper) whose
  // reader may go away: writing to them must fail with EPIPE (which the log
  // sinks ignore), not kill the agent. Sockets are written with MSG_NOSIGNAL.
  std::signal(SIGPIPE, SIG_IGN);

  // Signals are taken by sigwait on this thread: block them before any thread
  // starts so every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, kDiscoveryDone);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // Listen first, then discover: a backend that takes its time (up to
  // --discovery-timeout) delays readiness (/healthz 503 "starting"), not the
  // address, and SIGTERM is heard meanwhile.
  Manager manager(std::move(manager_settings), std::move(backends));
  const std::size_t max_connections = config.max_connections;
  agent::Agent agent(manager, std::move(config));
  const int port = agent.bind();
  if (push && !push->url) {
    const agent::ListenAddress listen = agent::parse_listen_address(options.listen);
    if (listen.host == "0.0.0.0" || listen.host == "::") {
      push->port = port;  // the coordinator pairs it with the address it sees
    } else {
      push->url = agent.base_url();
    }
  }
  std::optional<Pusher> pusher;
  std::optional<EtcdRegistry> registry;  // after the pusher: its hooks call the pusher
  const auto [open_files, open_files_warning] = raise_open_files_limit(max_connections);  // before the first accept
  std::thread server([&agent] { agent.serve(); });
  print_listening(agent, manager, node, as_json);
  const auto discovery_began = std::chrono::steady_clock::now();
  std::exception_ptr start_error;
  std::thread starter([&manager, &start_error, main_thread = pthread_self()] {
    try {
      manager.start(/*background_sampling=*/true);
    } catch (...) {
      start_error = std::current_exception();  // read by the main thread after it joins this one
    }
    pthread_kill(main_thread, kDiscoveryDone);
  });

  int received = 0;
  for (;;) {
    sigwait(&stop_signals, &received);
    if (received != kDiscoveryDone) break;
    starter.join();
    if (start_error) {  // a backend named in --backend cannot be used: stop serving, exit 2
      agent.stop();
      server.join();
      manager.shutdown();
      std::rethrow_exception(start_error);
    }
    // Logged before the ready line, so whoever waits for that line finds them.
    if (open_files_warning) {
      spdlog::warn("{}", open_files);
    } else {
      spdlog::info("{}", open_files);
    }
    spdlog::info("agent ready on {}", agent.base_url());
    print_ready(manager, std::chrono::steady_clock::now() - discovery_began, as_json);
    if (push) {  // once the devices are known: the first report carries them
      pusher.emplace(manager, node, *push);
      pusher->start();
      agent.attach_pusher(&*pusher);
    }
    if (etcd) {
      etcd->url = agent.base_url();
      EtcdRegistryHooks hooks;
      hooks.coordinators = [&pusher](const std::vector<std::string>& urls) {
        if (pusher) pusher->set_found_coordinators(urls);
      };
      if (options.coordinator) {
        hooks.node_lease_lost = [&agent](const std::string& id) { agent.coordinator().node_lease_lost(id); };
        hooks.node_lease_present = [&agent](const std::string& id, const std::string& name, std::int64_t revision) {
          agent.coordinator().node_lease_present(id, name, revision);
        };
      }
      registry.emplace(*etcd, node, std::move(hooks));
      registry->start();
    }
  }
  spdlog::info("{} received: draining in-flight requests", received == SIGTERM ? "SIGTERM" : "SIGINT");
  // Coordinators hear that this node leaves (it is down at once there) before it stops answering.
  if (registry) registry->stop(/*revoke=*/true);
  if (pusher) pusher->stop(/*leaving=*/true);  // its status stays readable until the agent is stopped
  const bool drained = agent.stop();
  if (!drained) {
    spdlog::error("in-flight requests did not finish within {}; exiting without waiting for them",
                  options.drain_timeout);
    std::cerr.flush();
    std::_Exit(1);  // the manager cannot be shut down under requests still using it
  }
  server.join();
  agent.attach_pusher(nullptr);
  if (starter.joinable()) starter.join();  // SIGTERM during discovery: it ends within --discovery-timeout
  manager.shutdown();
  spdlog::info("agent stopped");
  return 0;
}

}  // namespace gpucluster::cli
