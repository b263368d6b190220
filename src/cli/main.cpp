// gpucluster command-line interface. Exit status: 0 success, 2 bad input or
// usage (one-line error on stderr), 3 when no device qualifies, 1 otherwise.

#include <sys/resource.h>
#include <algorithm>

#include <atomic>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "agent_command.hpp"
#include "gpucluster/export/json.hpp"
#include "gpucluster/model/units.hpp"
#include "gpucluster/node/backend_registry.hpp"
#include "gpucluster/node/manager.hpp"
#include "output.hpp"
#include "remote.hpp"

namespace gpucluster::cli {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNoDevice = 3;

// Options every command shares.
struct CommonOptions {
  std::string fleet_path;
  std::string backends;    // empty: auto
  std::string sysfs_root;  // empty: $GPUCLUSTER_SYSFS_ROOT or /sys
  bool json = false;
  std::string log_level = "error";  // the tables already show unavailable devices
  std::string discovery_timeout = "30s";
  std::string backend_timeout = "5s";
};

struct PlanOptions {
  std::optional<std::uint64_t> items;
  std::string strategy = "uniform";
  std::vector<std::string> weights;
  std::optional<std::uint64_t> max_per_device;
  std::optional<std::uint64_t> layers;
  std::string layer_bytes;
};

// Counts are whole numbers >= 0; CLI11 alone would wrap "-3" into a huge unsigned value.
const CLI::Validator kCount(
    [](std::string& text) -> std::string {
      const bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
      return digits ? std::string{} : "must be a whole number >= 0, got \"" + text + "\"";
    },
    "COUNT");

void add_common_options(CLI::App& command, CommonOptions& options) {
  command.add_option("--fleet", options.fleet_path, "Simulated fleet file (JSON); see examples/")
      ->check(CLI::ExistingFile);
  command.add_option(
      "--backend", options.backends,
      fmt::format("Backends: {} (default: auto; simulated alone when --fleet is given)", backend_help()));
  command.add_option("--sysfs-root", options.sysfs_root, "Root of sysfs for the sysfs backend (default /sys)");
  command.add_option("--discovery-timeout", options.discovery_timeout,
                     "How long each backend may take to discover its devices (default 30s); a backend that takes "
                     "longer is reported failed and the others go on");
  command.add_option("--backend-timeout", options.backend_timeout,
                     "How long a backend may take to read its devices (default 5s); a backend that takes longer has "
                     "its devices marked unavailable until it answers");
  command.add_flag("--json", options.json, "Machine-readable JSON output");
  command.add_option("--log-level", options.log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
}

// Errors inside a fleet name the JSON path; add the file so the user knows where.
Fleet load_fleet_file(const std::string& path) {
  try {
    return load_fleet(path);
  } catch (const ValidationError& e) {
    throw InputError(fmt::format("{}: {}", path, e.what()), path + ": " + e.field(), e.value(), e.rule());
  } catch (const InputError& e) {
    if (e.field().rfind(path, 0) == 0) throw;
    throw InputError(fmt::format("{}: {}", path, e.what()), path + ": " + e.field(), e.value(), e.rule());
  }
}

using ChosenBackends = BackendChoice;

// The registry's choice (src/node/backend_registry.cpp) from --backend,
// --sysfs-root and --fleet.
ChosenBackends make_backends(const CommonOptions& options) {
  BackendOptions backend_options;
  backend_options.sysfs_root = options.sysfs_root;
  if (!options.fleet_path.empty()) {
    backend_options.load_fleet = [&options] { return load_fleet_file(options.fleet_path); };
  }
  backend_options.names_field = "--backend";
  backend_options.fleet_hint = "--fleet FILE";
  return choose_backends(split_backend_names(options.backends), backend_options);
}

std::chrono::nanoseconds positive_duration(const std::string& text, const char* option) {
  const auto duration = parse_duration(text, option);
  if (duration.count() <= 0) throw InputError(option, text, "must be positive");
  return duration;
}

// What every command's manager shares: deadlines and the backends that must work.
ManagerConfig manager_config(const CommonOptions& options, std::vector<std::string> required) {
  ManagerConfig config;
  config.discovery_timeout = positive_duration(options.discovery_timeout, "--discovery-timeout");
  config.backend_timeout = positive_duration(options.backend_timeout, "--backend-timeout");
  config.required_backends = std::move(required);
  return config;
}

std::unique_ptr<Manager> start_manager(const CommonOptions& options) {
  ChosenBackends chosen = make_backends(options);
  auto manager =
      std::make_unique<Manager>(manager_config(options, std::move(chosen.required)), std::move(chosen.backends));
  manager->start(/*background_sampling=*/false);
  return manager;
}

void print_json(const nlohmann::json& document) {
  std::cout << document.dump(2) << '\n';
}

nlohmann::json devices_json(const Manager& manager) {
  return devices_to_json(manager.devices(), manager.rank());
}

// --agent asks a running agent; --fleet, --backend and --sysfs-root describe this machine.
void check_remote(const CommonOptions& options, const RemoteOptions& remote) {
  if (remote.agent.empty()) {
    if (!remote.token_file.empty()) throw InputError("--token-file", remote.token_file, "is for --agent URL");
    return;
  }
  if (!options.fleet_path.empty() || !options.backends.empty() || !options.sysfs_root.empty()) {
    throw InputError("--agent", remote.agent,
                     "asks a running agent about its devices; --fleet, --backend and --sysfs-root describe this "
                     "machine's: give one or the other");
  }
}

int run_devices(const CommonOptions& options, const RemoteOptions& remote) {
  check_remote(options, remote);
  if (!remote.agent.empty()) {
    const nlohmann::json devices = ask_agent(remote, "GET", "/v1/devices");
    if (options.json) {
      print_json(devices);
    } else {
      const DeviceViews views = devices_from_json(devices);
      std::cout << devices_table(views.devices, views.ranked);
    }
    return kExitOk;
  }
  const auto manager = start_manager(options);
  if (options.json) {
    print_json(devices_json(*manager));
  } else {
    std::cout << devices_table(manager->devices(), manager->rank());
  }
  return kExitOk;
}

void print_selection(const Selection& selection) {
  if (selection.device) {
    std::cout << fmt::format("{} (score {:.3f}): {}\n", selection.device->str(), selection.score, selection.reason);
  } else {
    std::cout << fmt::format("no device: {}\n", selection.reason);
  }
}

int run_select(const CommonOptions& options, const RemoteOptions& remote, const std::string& min_memory, bool explain) {
  check_remote(options, remote);
  const std::uint64_t min_free = min_memory.empty() ? 0 : parse_size_bytes(min_memory, "--min-memory");
  if (!remote.agent.empty()) {
    if (explain) {
      throw InputError("--explain", "true",
                       "ranks this machine's devices; with --agent, `gpucluster devices --agent URL` shows each "
                       "device's score and eligibility");
    }
    const nlohmann::json answer =
        ask_agent(remote, "POST", "/v1/select", nlohmann::json{{"min_memory_bytes", min_free}}.dump());
    const Selection selection = selection_from_json(answer);
    if (options.json) {
      print_json(answer);
    } else {
      print_selection(selection);
    }
    return selection.device ? kExitOk : kExitNoDevice;
  }
  const auto manager = start_manager(options);
  const Selection selection = manager->select(min_free);
  if (options.json) {
    nlohmann::json out = to_json(selection);
    if (explain) {
      out["ranking"] = nlohmann::json::array();
      for (const RankedDevice& r : manager->rank(min_free)) out["ranking"].push_back(to_json(r));
    }
    print_json(out);
  } else {
    if (explain) std::cout << ranking_table(manager->rank(min_free)) << '\n';
    print_selection(selection);
  }
  return selection.device ? kExitOk : kExitNoDevice;
}

std::pair<std::string, double> parse_weight(const std::string& text) {
  const auto equals = text.rfind('=');
  if (equals == std::string::npos || equals == 0) {
    throw InputError("--weight", text, "must be ID=WEIGHT, e.g. cuda:0=2.5");
  }
  const std::string number = text.substr(equals + 1);
  double weight = 0;
  const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), weight);
  if (error != std::errc{} || end != number.data() + number.size()) {
    throw InputError("--weight", text, "the weight must be a number");
  }
  return {text.substr(0, equals), weight};
}

// The plan request as POST /v1/plan takes it (the same field names as the rules use).
nlohmann::json plan_request_json(const PlanRequest& request) {
  nlohmann::json body{{"strategy", std::string(to_string(request.strategy))}};
  if (request.items) body["items"] = *request.items;
  if (request.max_per_device) body["max_per_device"] = *request.max_per_device;
  if (request.layers) body["layers"] = *request.layers;
  if (request.layer_bytes) body["layer_bytes"] = *request.layer_bytes;
  if (!request.weights.empty()) {
    body["weights"] = nlohmann::json::object();
    for (const auto& [id, weight] : request.weights) body["weights"][id] = weight;
  }
  return body;
}

int run_plan(const CommonOptions& options, const RemoteOptions& remote, const PlanOptions& plan_options) {
  check_remote(options, remote);
  PlanRequest request;
  try {
    request.strategy = plan_strategy(plan_options.strategy);
    request.items = plan_options.items;
    request.max_per_device = plan_options.max_per_device;
    request.layers = plan_options.layers;
    for (const std::string& weight : plan_options.weights) request.weights.push_back(parse_weight(weight));
    if (!plan_options.layer_bytes.empty()) {
      request.layer_bytes = parse_size_bytes(plan_options.layer_bytes, "--layer-bytes");
    }
    check_plan_request(request);  // before discovery: bad options fail at once
  } catch (const PlanError& e) {
    // The rules name the JSON fields; the user typed options.
    std::string option = "--" + (e.field() == "weights" ? std::string("weight") : e.field());
    std::replace(option.begin(), option.end(), '_', '-');
    throw InputError(option, e.value(), e.rule());
  }
  if (!remote.agent.empty()) {
    const nlohmann::json answer = ask_agent(remote, "POST", "/v1/plan", plan_request_json(request).dump());
    if (options.json) {
      print_json(answer);
    } else {
      std::cout << plan_table(plan_from_json(answer));
    }
    return kExitOk;
  }
  const auto manager = start_manager(options);
  const Plan plan = manager->plan(request);
  if (options.json) {
    print_json(to_json(plan));
  } else {
    std::cout << plan_table(plan);
  }
  return kExitOk;
}

int run_nodes(const CommonOptions& options, const RemoteOptions& remote) {
  const nlohmann::json answer = ask_agent(remote, "GET", "/v1/nodes");
  if (options.json) {
    print_json(answer);
  } else {
    std::cout << nodes_table(answer);
  }
  return kExitOk;
}

int run_status(const CommonOptions& options, const std::string& duration_text) {
  const auto duration = parse_duration(duration_text, "--duration");
  const auto manager = start_manager(options);
  std::this_thread::sleep_for(duration);  // utilization and power are rates over this window
  manager->sample_now();
  const Selection best = manager->select();
  if (options.json) {
    print_json({{"host", manager->host()},
                {"backends", backends_to_json(manager->backend_reports())},
                {"devices", devices_json(*manager)},
                {"cluster", to_json(manager->aggregate())},
                {"best", to_json(best)}});
    return kExitOk;
  }
  std::cout << fmt::format("gpucluster status on {}\n\nBackends:\n{}\nDevices:\n", manager->host(),
                           backends_lines(manager->backend_reports()));
  std::cout << devices_table(manager->devices(), manager->rank()) << '\n';
  std::cout << "Cluster: " << aggregate_line(manager->aggregate());
  if (best.device) {
    std::cout << fmt::format("Best device: {} (score {:.3f}; {})\n", best.device->str(), best.score, best.reason);
  } else {
    std::cout << fmt::format("Best device: none ({})\n", best.reason);
  }
  return kExitOk;
}

std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) {
  g_interrupted.store(true);
}

// Samples in the background until --duration passes or SIGINT/SIGTERM, printing
// one line (or JSON object) per interval; ends with the sampler's own cost.
int run_watch(const CommonOptions& options, const std::string& interval_text, const std::string& duration_text,
              bool quiet) {
  const auto interval = parse_duration(interval_text, "--interval");
  if (interval.count() <= 0) throw InputError("--interval", interval_text, "must be positive");
  const std::chrono::nanoseconds duration =  // max: until interrupted
      duration_text.empty() ? std::chrono::nanoseconds::max() : parse_duration(duration_text, "--duration");
  ChosenBackends chosen = make_backends(options);
  ManagerConfig config = manager_config(options, std::move(chosen.required));
  config.sample_interval = interval;
  Manager manager(config, std::move(chosen.backends));
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  const auto started = std::chrono::steady_clock::now();
  manager.start(/*background_sampling=*/true);
  std::uint64_t ticks = 0;
  while (!g_interrupted.load() && std::chrono::steady_clock::now() - started < duration) {
    std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(interval, std::chrono::milliseconds{100}));
    const auto elapsed = std::chrono::steady_clock::now() - started;
    if (elapsed < interval * static_cast<std::int64_t>(ticks + 1)) continue;
    ++ticks;
    if (quiet) continue;
    if (options.json) {
      std::cout << nlohmann::json{{"cluster", to_json(manager.aggregate())}, {"devices", devices_json(manager)}}.dump()
                << std::endl;
    } else {
      std::cout << aggregate_line(manager.aggregate()) << std::flush;
    }
  }
  const std::size_t devices = manager.devices().size();
  const auto rejected = manager.rejected_samples();
  const std::uint64_t rejected_total = std::accumulate(rejected.begin(), rejected.end(), std::uint64_t{0});
  const std::uint64_t errors = manager.backend_errors();
  manager.shutdown();
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const double cpu_seconds = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                             static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
  const double wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::cerr << fmt::format(
      "watch: {} device(s), {} tick(s) in {:.1f} s; {} rejected sample(s), {} backend error(s); process CPU {:.3f} s "
      "= {:.3f}% of one core\n",
      devices, ticks, wall_seconds, rejected_total, errors, cpu_seconds, 100.0 * cpu_seconds / wall_seconds);
  return kExitOk;
}

void configure_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("gpucluster");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

int run(int argc, char** argv) {
  CLI::App app{"gpucluster: discover GPUs, watch their telemetry, pick a device and split work across devices"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "gpucluster " GPUCLUSTER_VERSION);
  CommonOptions common;
  PlanOptions plan_options;
  std::string min_memory, duration = "1s";
  bool explain = false;

  RemoteOptions remote;
  const auto add_remote_options = [&remote](CLI::App& command) {
    command.add_option("--agent", remote.agent,
                       "Ask the running agent or coordinator at this URL (http://HOST:PORT) instead of this "
                       "machine's devices");
    command.add_option("--token-file", remote.token_file, "File with the agent's Bearer token (POST routes)");
  };

  auto* devices = app.add_subcommand("devices", "List devices and their latest telemetry");
  add_common_options(*devices, common);
  add_remote_options(*devices);

  auto* select = app.add_subcommand("select", "Pick the best device (exit 3 when none qualifies)");
  add_common_options(*select, common);
  add_remote_options(*select);
  select->add_option("--min-memory", min_memory, "Free memory the job needs: 8GiB, 8G, 8000000000");
  select->add_flag("--explain", explain, "Show every device's score and why it was or was not chosen");

  auto* plan = app.add_subcommand("plan", "Split work items (or a model's layers) across devices");
  add_common_options(*plan, common);
  add_remote_options(*plan);
  plan->add_option("--items", plan_options.items, "Number of work items N (items are 0..N-1)")->check(kCount);
  plan->add_option("--strategy", plan_options.strategy, "uniform, capacity or memory")
      ->check(CLI::IsMember({"uniform", "capacity", "memory"}));
  plan->add_option("--weight", plan_options.weights,
                   "ID=W capacity weight (repeatable; default: the devices' compute units)");
  plan->add_option("--max-per-device", plan_options.max_per_device, "Cap per device; the rest is reported unassigned")
      ->check(kCount);
  plan->add_option("--layers", plan_options.layers, "Model layers L (memory strategy)")->check(kCount);
  plan->add_option("--layer-bytes", plan_options.layer_bytes, "Bytes per layer, e.g. 1.5GiB (memory strategy)");

  std::string interval = "1s", watch_duration;
  bool quiet = false;
  auto* watch =
      app.add_subcommand("watch", "Sample in the background and print the cluster every interval (Ctrl-C stops)");
  add_common_options(*watch, common);
  watch->add_option("--interval", interval, "Sampling interval (default 1s)");
  watch->add_option("--duration", watch_duration, "Stop after this long (default: until interrupted)");
  watch->add_flag("--quiet", quiet, "Print only the closing summary (for measuring the sampler's cost)");

  auto* nodes = app.add_subcommand(
      "nodes", "List the nodes of a cluster as a coordinator sees them (state, last report, devices, clock offset)");
  RemoteOptions nodes_remote{"http://127.0.0.1:9420", ""};
  nodes->add_option("--agent", nodes_remote.agent, "The coordinator (or agent) to ask (default http://127.0.0.1:9420)");
  nodes->add_flag("--json", common.json, "Machine-readable JSON output (GET /v1/nodes as the agent answers)");
  nodes->add_option("--log-level", common.log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));

  auto* status = app.add_subcommand("status", "Discover this machine's devices, sample them and summarise");
  add_common_options(*status, common);
  status->add_option("--duration", duration, "How long to sample before reporting (default 1s)");

  AgentOptions agent_options;
  auto* agent = app.add_subcommand(
      "agent", "Run the node agent: background sampling, HTTP JSON API, telemetry ingest and /metrics");
  add_common_options(*agent, common);
  agent->add_option("--listen", agent_options.listen,
                    "Address to serve on, HOST:PORT (default 127.0.0.1:9420; a non-loopback address needs "
                    "--token-file)");
  agent->add_option("--interval", agent_options.interval, "Sampling interval (default 1s)");
  agent->add_option("--history", agent_options.history, "Samples kept per device (default 100)")->check(kCount);
  agent->add_option("--max-age", agent_options.max_age, "Also drop samples older than this, e.g. 10m");
  agent->add_option("--history-memory", agent_options.history_memory,
                    "Memory the devices' full histories may take, e.g. 2GiB; a device that would pass it is "
                    "refused (default: half of the memory this process may use)");
  agent->add_option("--max-clock-skew", agent_options.max_clock_skew,
                    "Reject samples stamped further ahead of this machine's clock (default 60s)");
  agent->add_option("--token-file", agent_options.token_file,
                    "File holding the Bearer token that POST endpoints then require");
  agent->add_option("--drain-timeout", agent_options.drain_timeout,
                    "How long SIGTERM waits for in-flight requests (default 10s)");
  agent
      ->add_option("--threads", agent_options.threads,
                   "HTTP event-loop threads; each connection stays on one (default: one per CPU core)")
      ->check(kCount);
  agent->add_option("--head-timeout", agent_options.head_timeout,
                    "Close a connection whose request head is not complete this long after the accept or the "
                    "request's first byte (default 10s)");
  agent->add_option("--body-timeout", agent_options.body_timeout,
                    "Close a connection whose request body is not complete this long after its head (default 10s)");
  agent->add_option("--write-timeout", agent_options.write_timeout,
                    "Close a connection whose client has not taken the answer within this long (default 10s)");
  agent->add_option("--idle-timeout", agent_options.idle_timeout,
                    "Close a keep-alive connection with no new request for this long (default 60s)");
  agent->add_option("--max-body-memory", agent_options.max_body_memory,
                    "Request bodies held across all connections; more are answered 503 (default 64MiB)");
  agent->add_option("--state-dir", agent_options.state_dir,
                    "Directory for this node's identity (node.json: a node id kept across restarts and a start "
                    "counter) and its lock; one agent per directory, created with mode 0700 (default: none, nothing "
                    "is written and the agent has no node id)");
  agent->add_option("--node-name", agent_options.node_name,
                    "Name of this node in /healthz and the banner, and the host part of its devices' ids "
                    "(default: this machine's host name)");
  // The cluster (docs/cluster.md).
  agent->add_flag("--coordinator", agent_options.coordinator,
                  "Accept the reports of agents that joined (POST /v2/report) and serve one view of every node "
                  "(GET /v1/nodes); also a normal agent with its own devices");
  agent->add_option("--join", agent_options.join,
                    "Report this node's devices to the coordinator(s) at URL[,URL...] (http://HOST:PORT), one report "
                    "per interval");
  agent->add_option("--join-token-file", agent_options.join_token_file,
                    "File with the coordinators' Bearer token (default: --token-file); required for a coordinator "
                    "that is not on this machine");
  agent->add_option("--advertise", agent_options.advertise,
                    "URL at which coordinators and Prometheus reach this agent (default: the --listen address, or "
                    "the address the coordinator sees with the --listen port when listening on all addresses)");
  agent
      ->add_option("--outbox", agent_options.outbox,
                   "Samples per device kept for a coordinator that does not answer (default 300; the oldest are "
                   "dropped first and counted)")
      ->check(kCount);
  agent->add_option("--etcd", agent_options.etcd,
                    "The etcd tier, URL[,URL...] (http://HOST:PORT): this node holds a lease there; coordinators "
                    "register too and see a node down as soon as its lease expires; agents find the coordinators "
                    "there (no --join needed)");
  agent->add_option("--etcd-prefix", agent_options.etcd_prefix, "Keys under this prefix (default /gpucluster/)");
  agent->add_option("--etcd-ttl", agent_options.etcd_ttl,
                    "Lease TTL (default 10s, at least 2s); kept alive every TTL/3");
  // Internal (tests): how often the etcd watches list again even when nothing broke.
  agent->add_option("--etcd-relist-every", agent_options.etcd_relist_every)->group("");
  agent->add_option("--report-interval", agent_options.report_interval,
                    "Coordinator: the report interval asked of every node (default 1s; 100ms to 60s)");
  agent->add_option("--suspect-after", agent_options.suspect_after,
                    "Coordinator: a node without a report for this long is suspect (default 3s)");
  agent->add_option("--evict-after", agent_options.evict_after,
                    "Coordinator: a node without a report for this long is down; its devices leave select, plan "
                    "and the totals (default 10s)");
  agent->add_option("--forget-after", agent_options.forget_after,
                    "Coordinator: a node down for this long is forgotten and its slot freed (default 10m)");
  agent
      ->add_option("--max-connections", agent_options.max_connections,
                   "HTTP connections held at once; more are closed at once (default 1024, or max(1024, --max-nodes "
                   "+ 64) with --coordinator: every node keeps one open)")
      ->check(kCount);
  agent
      ->add_option("--max-nodes", agent_options.max_nodes,
                   "Coordinator: nodes held at once, down ones included until forgotten (default 10000)")
      ->check(kCount);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "gpucluster: " << e.what() << " (see gpucluster --help)\n";
    return kExitUsage;
  }
  // The agent is a service: it logs at info unless told otherwise.
  const bool log_level_given = agent->parsed() && agent->count("--log-level") > 0;
  configure_logging(*agent && !log_level_given ? "info" : common.log_level);

  try {
    if (*devices) return run_devices(common, remote);
    if (*select) return run_select(common, remote, min_memory, explain);
    if (*plan) return run_plan(common, remote, plan_options);
    if (*nodes) return run_nodes(common, nodes_remote);
    if (*status) return run_status(common, duration);
    if (*watch) return run_watch(common, interval, watch_duration, quiet);
    if (*agent) {
      ChosenBackends chosen = make_backends(common);
      return run_agent(agent_options, std::move(chosen.backends), manager_config(common, std::move(chosen.required)),
                       common.json);
    }
  } catch (const BackendUnavailableError& e) {
    std::cerr << "gpucluster: " << e.what() << " (--backend auto skips backends that cannot be used)\n";
    return kExitUsage;
  } catch (const InputError& e) {
    std::cerr << "gpucluster: " << e.what() << '\n';
    return kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "gpucluster: error: " << e.what() << '\n';
    return kExitFailure;
  }
  return kExitUsage;
}

}  // namespace
}  // namespace gpucluster::cli

int main(int argc, char** argv) {
  return gpucluster::cli::run(argc, argv);
}
