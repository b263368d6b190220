#pragma once
// The coordinator: the node table of a cluster. Agents that joined
// (`gpucluster agent --join URL`) send one report per interval
// (wire/report.hpp, POST /v2/report); the coordinator registers their devices
// in its own Manager under the node's host name (remote hosts are just another
// source of devices), keeps their samples with the sender's clock corrected,
// and decides on its own monotonic clock whether each node is alive, suspect,
// down or forgotten (liveness.hpp). Down nodes' devices are unavailable (so
// select and plan skip them) and left out of the cluster totals.
// docs/cluster.md is the contract.
//
// Thread-safe: ingest, tick, the views and forget may be called from several
// threads at once.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "gpucluster/cluster/identity.hpp"
#include "gpucluster/cluster/liveness.hpp"
#include "gpucluster/model/device.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/node/manager.hpp"
#include "gpucluster/wire/report.hpp"

namespace gpucluster {

class ClusterMembership;

struct CoordinatorOptions {
  LivenessConfig liveness;
  std::chrono::milliseconds report_interval{1000};  // asked of every node in the ack
  std::size_t max_nodes = 10'000;                   // nodes that report (down ones included until forgotten)
  std::size_t max_devices_per_node = 256;
  bool etcd = false;  // nodes also hold an etcd lease (--etcd): NodeView::lease is set
};

// Throws InputError naming the flag (validate_liveness, and limits of 0).
void validate_coordinator_options(const CoordinatorOptions& options);

// A report the coordinator refused; nothing was changed. status and code are
// the HTTP answer (docs/protocol.md "Reports (v2)": 409 stale_incarnation,
// stale_sequence, identity_conflict, inventory_required; 422 device_limit,
// unknown_device; 503 node_limit, history_memory_full with Retry-After).
class ReportRefused : public InputError {
 public:
  ReportRefused(int status, std::string code, const std::string& message, const std::string& field,
                const std::string& value, const std::string& rule, std::optional<int> retry_after_seconds = {});
  int status() const noexcept { return status_; }
  const std::string& code() const noexcept { return code_; }
  std::optional<int> retry_after_seconds() const noexcept { return retry_after_; }

 private:
  int status_;
  std::string code_;
  std::optional<int> retry_after_;
};

// Where and when a report arrived, on the coordinator's clocks.
struct Receipt {
  std::chrono::steady_clock::time_point received;  // liveness runs on this
  Timestamp wall{};                                // clock offsets and sample correction
  std::string peer;                                // the sender's address (no port)
};

// A node's key in etcd (nodes/<id>) as this coordinator last saw it
// (docs/cluster.md "etcd").
enum class LeaseState : std::uint8_t {
  unknown,  // never seen in etcd (a --join-only node): liveness by its reports alone
  present,  // the key is there
  absent,   // the key was deleted (the lease expired or was revoked): down until the key is back
};
const char* to_string(LeaseState state) noexcept;

// One node as the views show it (GET /v1/nodes).
struct NodeView {
  std::string id;  // empty: the coordinator itself without a persisted id
  std::string name;
  std::string host;     // the host part of its devices' keys
  std::string kind;     // "self", "report" or "seed"
  std::string address;  // "http://host:port" when known
  NodeState state = NodeState::alive;
  double state_since_seconds = 0;                 // how long it has been in that state
  std::optional<double> last_report_age_seconds;  // none for self
  std::uint64_t incarnation = 0;
  std::size_t devices = 0;
  std::optional<double> clock_offset_seconds;  // coordinator − node
  std::optional<double> clock_offset_error_seconds;
  std::string agent_version;
  std::string down_reason;
  // None (null in JSON) for self, seed hosts and every node of a coordinator
  // without --etcd: a coordinator does not judge its own lease.
  std::optional<LeaseState> lease;
  std::uint64_t reports = 0, samples = 0, duplicates = 0, rejected_samples = 0, dropped_by_agent = 0;
  std::vector<DeviceKey> device_keys;  // sorted
};
nlohmann::json to_json(const NodeView& node);

struct NodeCounts {
  std::size_t alive = 0, suspect = 0, down = 0;
  // Counts `count` more in `state`'s field.
  void add(NodeState state, std::size_t count = 1) noexcept {
    switch (state) {
      case NodeState::alive: alive += count; break;
      case NodeState::suspect: suspect += count; break;
      case NodeState::down: down += count; break;
    }
  }
};

// Which node a device belongs to, as the device views name it.
struct NodeLabel {
  std::string name;
  std::string id;  // empty: a seed host, or self without a persisted id
  NodeState state = NodeState::alive;
};

class Coordinator {
 public:
  using SteadyClock = std::function<std::chrono::steady_clock::time_point()>;

  // self: this process's identity (its node is listed as kind "self").
  // steady: the clock liveness runs on (empty: steady_clock; tests step it).
  Coordinator(Manager& manager, ClusterMembership& membership, CoordinatorOptions options, NodeIdentity self,
              SteadyClock steady = {});
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  const CoordinatorOptions& options() const noexcept;
  const std::string& epoch() const noexcept;  // random per process

  // Checks a report against the node table and applies it, or throws
  // ReportRefused changing nothing. Samples that fail validation do not fail
  // the report: they are counted and named in the ack.
  agent::ReportAck ingest(const agent::Report& report, const Receipt& receipt);

  // Moves every node along its liveness at `now` (the reaper calls it every
  // tick; tests call it directly).
  void tick(std::chrono::steady_clock::time_point now);
  void tick();
  // The reaper thread: tick() every min(100 ms, suspect_after / 10).
  void start();
  void stop();  // idempotent; also run by the destructor

  std::vector<NodeView> nodes() const;  // self first, then by name
  // By id, name or host; nullopt when none matches.
  std::optional<NodeView> node(std::string_view id_or_name) const;
  // Forgets a reporting node now (its devices are unregistered, its slot is
  // freed); a node that is still alive comes back with its next report.
  // Throws ReportRefused 404 unknown_node, 409 for self. Returns the view it had.
  NodeView forget(std::string_view id_or_name);
  NodeCounts counts() const;
  // The devices of reporting nodes and seed hosts by their node's state, from
  // the node table alone (no pass over the devices: GET /v1/cluster's
  // devices_by_state at thousands of devices).
  NodeCounts remote_devices_by_state() const;
  // The host parts of the devices of nodes that are down (for the totals).
  std::unordered_set<std::string> down_hosts() const;
  // Every reporting node and seed host by the host part of its devices' keys,
  // taken under one lock: the views join the device list with it in one pass
  // (GET /v1/cluster, /v1/devices). The agent's own devices belong to self_label().
  std::unordered_map<std::string, NodeLabel> labels_by_host() const;
  NodeLabel self_label() const;  // always alive
  // True when `host` is a reporting node's: the seed protocol may not register devices there.
  bool owns_host(const std::string& host) const;
  // A message of the seed protocol (POST /v1/telemetry) from `host` arrived:
  // seed hosts have the same liveness as reporting nodes (listed with kind
  // "seed"), so a host that went away is down after evict_after and forgotten
  // after forget_after, which frees its slot under the host limit.
  void note_seed_message(const std::string& host, std::chrono::steady_clock::time_point received);
  // The node's etcd lease is gone (its key was deleted: the process is gone or
  // frozen; or a re-list no longer finds it): it is down at once, whatever its
  // last report, and its reports do not make it alive again until its key is
  // back (docs/cluster.md "etcd").
  void node_lease_lost(const std::string& node_id);
  // nodes/<id> is in etcd (a PUT, or found by a list). name and
  // create_revision decide name collisions: of the nodes/ keys with one name,
  // the lowest create_revision gets the plain name as its host, so every
  // coordinator chooses alike.
  void node_lease_present(const std::string& node_id, const std::string& name, std::int64_t create_revision);

  std::uint64_t reports_accepted() const;
  // Refused reports by code ("stale_sequence", …), sorted by code.
  std::vector<std::pair<std::string, std::uint64_t>> reports_rejected() const;
  // Counts a report refused before the coordinator saw it (a parse error), by code.
  void count_rejected(const std::string& code);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpucluster
