#pragma once
// The agent's side of a cluster: `gpucluster agent --join URL[,URL…]` sends
// this node's devices, their availability and the samples taken since the
// last acknowledged report to each coordinator, one batched report per
// interval (wire/report.hpp, POST /v2/report). Samples wait in a bounded
// outbox per device while a coordinator is unreachable (oldest dropped first,
// counted) and are delivered in order; failures back off with full jitter.
// docs/cluster.md is the contract.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gpucluster/cluster/identity.hpp"
#include "gpucluster/node/manager.hpp"

namespace gpucluster {

struct PusherOptions {
  std::vector<std::string>
      coordinators;                  // base URLs, "http://HOST:PORT" (checked: InputError naming --join); may be empty
  std::optional<std::string> token;  // Bearer token for the coordinators
  std::optional<std::string> url;    // where this node's own API is reached (node.url)
  std::optional<int> port;           // without url: the port it listens on (the coordinator adds the address)
  std::size_t outbox_samples = 300;  // per device: 5 minutes at 1 Hz
  std::chrono::milliseconds backoff_base{100};
  // Longest wait between tries; 0: the coordinator's report interval.
  std::chrono::milliseconds backoff_cap{0};
  std::chrono::milliseconds leave_timeout{1000};  // the last report ("leaving") on stop
  std::string agent_version;
};

// Throws InputError naming the option (--join: a URL, twice the same URL;
// --outbox: 0).
void validate_pusher_options(const PusherOptions& options);

// One coordinator as the pusher sees it (GET /v1/push, /healthz "push").
struct PushLinkStatus {
  std::string url;
  std::string coordinator;  // its node id, once it answered
  std::string epoch;
  std::string state;  // "connecting", "ok", "backoff"
  std::optional<double> last_ack_age_seconds;
  std::uint64_t reports = 0, failures = 0;
  std::uint64_t backlog_samples = 0, dropped_samples = 0;
  std::uint32_t interval_ms = 0;
  std::string last_error;
  std::string host;  // the host part the coordinator gave this node's devices
};

class Pusher {
 public:
  // The manager must outlive the pusher and be shut down after it.
  Pusher(Manager& manager, NodeIdentity node, PusherOptions options);
  ~Pusher();  // stop(false)
  Pusher(const Pusher&) = delete;
  Pusher& operator=(const Pusher&) = delete;

  void start();
  // Stops every link; with leaving, each sends a last report saying the node
  // is leaving (within leave_timeout), so coordinators mark it down at once.
  void stop(bool leaving = true);
  std::vector<PushLinkStatus> status() const;
  // The coordinators found (in etcd) besides those of options.coordinators:
  // a link is added for each new URL and removed for each that is gone. A
  // coordinator on another machine needs options.token (else it is skipped,
  // with an error logged).
  void set_found_coordinators(const std::vector<std::string>& urls);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpucluster
