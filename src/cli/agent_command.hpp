#pragma once
// `gpucluster agent`: the manager with its background sampler behind the HTTP API.
#include <string>
#include <vector>

#include "gpucluster/backends/backend.hpp"
#include "gpucluster/node/manager.hpp"

namespace gpucluster::cli {

struct AgentOptions {
  std::string listen = "127.0.0.1:9420";
  std::string interval = "1s";
  std::size_t history = 100;
  std::string max_age;     // empty: bounded by count only
  std::string token_file;  // empty: no token (loopback only)
  std::string drain_timeout = "10s";
  std::size_t threads = 0;             // 0: one per CPU core
  std::string history_memory;          // empty: half of the memory this process may use
  std::string max_clock_skew = "60s";  // samples stamped further ahead of this clock are rejected
  // Connection timeouts and the body budget (docs/agent.md, "Connections").
  std::string head_timeout = "10s";
  std::string body_timeout = "10s";
  std::string write_timeout = "10s";
  std::string idle_timeout = "60s";
  std::string max_body_memory = "64MiB";
  // Node identity (docs/agent.md, "Node identity"): empty state_dir: nothing is
  // written and the agent has no node id; empty node_name: the manager's host name.
  std::string state_dir;
  std::string node_name;
  // The cluster (docs/cluster.md). With --coordinator or --join and no
  // --state-dir, the default state directory is used.
  bool coordinator = false;
  std::string join;             // URL[,URL...]
  std::string join_token_file;  // empty: --token-file
  std::string advertise;
  std::size_t outbox = 300;
  std::string report_interval = "1s";
  std::string suspect_after = "3s";
  std::string evict_after = "10s";
  std::string forget_after = "10m";
  std::size_t max_nodes = 10'000;
  std::size_t max_connections = 0;  // 0: 1024, or max(1024, max_nodes + 64) with --coordinator
  std::string etcd;                 // URL[,URL...]: the etcd tier (docs/cluster.md "etcd")
  std::string etcd_prefix = "/gpucluster/";
  std::string etcd_ttl = "10s";
  std::string etcd_relist_every = "30s";  // hidden: the watches' safety re-list (tests shorten it)
};

// The Bearer token in a file (one word, at most 4 KiB; a warning when group or
// others may read it). Throws InputError naming `option`.
std::string read_token(const std::string& path, const char* option);

// Serves until SIGTERM/SIGINT, then drains in-flight requests within the
// drain timeout, shuts the manager down and returns 0 (1 when the drain ran
// out of time). Throws InputError for bad options before binding anything, and
// BackendUnavailableError when a backend of manager_base.required_backends
// cannot be used. manager_base carries the options every command shares
// (deadlines, required backends); the agent's own options are set on top.
// as_json: the banner as JSON lines ({"event": "listening", "url"}, then
// {"event": "ready", "backends"}).
int run_agent(const AgentOptions& options, std::vector<BackendPtr> backends, ManagerConfig manager_base,
              bool as_json = false);

}  // namespace gpucluster::cli
