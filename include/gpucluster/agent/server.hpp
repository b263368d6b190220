#pragma once
// The node agent's HTTP server: the JSON API, the seed protocol's ingest
// endpoint and the Prometheus endpoint, in front of one Manager.
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "gpucluster/cluster/coordinator.hpp"
#include "gpucluster/cluster/identity.hpp"
#include "gpucluster/cluster/pusher.hpp"
#include "gpucluster/node/manager.hpp"
#include "gpucluster/wire/protocol.hpp"

namespace gpucluster::agent {

struct ListenAddress {
  std::string host = "127.0.0.1";
  int port = 9420;
  std::string str() const;  // "127.0.0.1:9420", "[::1]:9420"
};

// "HOST:PORT", "[IPv6]:PORT" or ":PORT" (loopback). Port 0 picks a free one.
// Throws InputError naming --listen.
ListenAddress parse_listen_address(std::string_view text);

// 127.0.0.0/8, ::1 and "localhost".
bool is_loopback(std::string_view host);

struct AgentConfig {
  ListenAddress listen;
  // Bearer token for POST endpoints; required when listen.host is not loopback.
  std::optional<std::string> token;
  ProtocolLimits limits;
  std::size_t max_history_limit = 10'000;  // GET …/history?limit=N
  std::size_t max_devices_per_host = 256;  // remote registrations per host
  std::size_t max_hosts = 1024;            // distinct remote hosts
  std::chrono::milliseconds drain_timeout{10'000};
  // Connections held at once; more are closed at once (a coordinator needs one per node).
  std::size_t max_connections = 1024;
  // HTTP event-loop threads; each connection stays on one, handlers run on them.
  std::size_t worker_threads = 2;
  // Connection timeouts (docs/agent.md, "Connections"): from the accept or a
  // request's first byte to its full head; from the head to the end of the
  // body; for the answer to be taken; keep-alive wait for the next request.
  std::chrono::milliseconds head_timeout{10'000};
  std::chrono::milliseconds body_timeout{10'000};
  std::chrono::milliseconds write_timeout{10'000};
  std::chrono::milliseconds idle_timeout{60'000};
  // Request bodies held across all connections (announced by Content-Length); 503 past it.
  std::size_t max_body_memory_bytes = 64 * 1024 * 1024;
  // Who this agent is (GET /healthz "node"): an empty id when no --state-dir
  // was given (nothing persisted), an empty name for the manager's host name.
  NodeIdentity node;
  // Accept the reports of agents that joined (POST /v2/report; docs/cluster.md).
  // Without it the node table (GET /v1/nodes) lists this node and seed hosts only.
  bool coordinator = false;
  CoordinatorOptions cluster;
  // Where others reach this agent (--advertise): base_url() and the Prometheus
  // service discovery's target for this node. Unset: the listening address.
  std::optional<std::string> advertise_url;  // liveness timings, the report interval, node limits
};

// Refuses (InputError) a non-loopback address without a token, an empty
// token, and zero limits: nothing is bound then.
void validate_agent_config(const AgentConfig& config);

class Agent {
 public:
  Agent(Manager& manager, AgentConfig config);  // validates config
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Binds the listening socket; returns the port (the chosen one for port 0).
  // Throws Error when the address cannot be bound.
  int bind();
  // Serves until stop(); returns once the in-flight requests have ended.
  void serve();
  // Stops accepting and waits up to drain_timeout for serve() to return.
  // True when every in-flight request ended in time. Safe from any thread.
  bool stop();
  // Requests whose head arrives from now on are answered 409 (GET /healthz:
  // 503 "draining"); requests already in flight are answered as usual.
  void refuse_new_requests();

  std::string base_url() const;

  // The pusher of an agent that joined coordinators (--join), for GET
  // /v1/push, /healthz and /metrics; nullptr detaches it (before it is destroyed).
  void attach_pusher(const Pusher* pusher);
  // The node table (GET /v1/nodes): the etcd tier tells it of expired leases.
  Coordinator& coordinator();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpucluster::agent
