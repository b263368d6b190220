#include "gpucluster/cluster/coordinator.hpp"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <stop_token>
#include <thread>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "cluster/clock_offset.hpp"
#include "cluster/membership.hpp"

namespace gpucluster {

using agent::Report;
using agent::ReportAck;
using agent::ReportNode;
using std::chrono::steady_clock;

ReportRefused::ReportRefused(int status, std::string code, const std::string& message, const std::string& field,
                             const std::string& value, const std::string& rule, std::optional<int> retry_after_seconds)
    : InputError(message, field, value, rule),
      status_(status),
      code_(std::move(code)),
      retry_after_(retry_after_seconds) {}

void validate_coordinator_options(const CoordinatorOptions& options) {
  validate_liveness(options.liveness, options.report_interval);
  if (options.max_nodes == 0) throw InputError("--max-nodes", "0", "must be > 0");
  if (options.max_devices_per_node == 0) throw InputError("--max-devices-per-node", "0", "must be > 0");
}

const char* to_string(LeaseState state) noexcept {
  switch (state) {
    case LeaseState::unknown: return "unknown";
    case LeaseState::present: return "present";
    case LeaseState::absent: return "absent";
  }
  return "unknown";
}

namespace {

constexpr std::size_t kMaxRejectionsListed = 16;
constexpr const char* kLeaseLost = "etcd lease expired";
constexpr std::size_t kKeyHostIdChars = 8;  // name~<first 8 hex digits of the node id>

double seconds(std::chrono::nanoseconds duration) {
  return std::chrono::duration<double>(duration).count();
}

// What the coordinator knows of one device of a node.
struct DeviceTrack {
  Timestamp last_raw{};        // newest sample time as the node sent it (dedupe runs on these)
  Timestamp last_corrected{};  // newest stored time (corrected; never goes backwards)
  bool reported_available = true;
  std::string reason;             // why the node says it is unavailable
  bool applied_available = true;  // what the manager was last told
  std::string applied_reason;
};

struct NodeRecord {
  std::string id, name, key_host, agent_version, address;
  std::uint64_t incarnation = 0, last_seq = 0, inventory_version = 0;
  steady_clock::time_point last_report, state_since;
  NodeState state = NodeState::alive;
  LeaseState lease = LeaseState::unknown;
  std::string down_reason;
  ClockOffset offset;
  bool offset_warned = false;
  std::map<std::string, DeviceTrack> devices;  // local id →
  std::uint64_t reports = 0, samples = 0, duplicates = 0, rejected_samples = 0, dropped_by_agent = 0;
};

// A host of the seed protocol: no id, no clock exchange; alive while its messages arrive.
struct SeedHost {
  steady_clock::time_point last_message, state_since;
  NodeState state = NodeState::alive;
  std::string down_reason;
  std::uint64_t messages = 0;
};

ReportRefused refused(int status, std::string code, const std::string& message, const std::string& field,
                      const std::string& value, const std::string& rule, std::optional<int> retry_after = {}) {
  return ReportRefused(status, std::move(code), message, field, value, rule, retry_after);
}

std::string node_address(const ReportNode& node, const std::string& peer) {
  if (node.url) return *node.url;
  if (node.port && !peer.empty()) {
    return peer.find(':') != std::string::npos ? fmt::format("http://[{}]:{}", peer, *node.port)
                                               : fmt::format("http://{}:{}", peer, *node.port);
  }
  return {};
}

}  // namespace

struct Coordinator::Impl {
  Impl(Manager& manager_ref, ClusterMembership& membership_ref, CoordinatorOptions coordinator_options,
       NodeIdentity self_identity, SteadyClock steady_clock_fn)
      : manager(manager_ref),
        membership(membership_ref),
        options(coordinator_options),
        self(std::move(self_identity)),
        steady(steady_clock_fn ? std::move(steady_clock_fn) : SteadyClock([] { return steady_clock::now(); })),
        epoch(random_uuid()),
        started(steady()) {
    validate_coordinator_options(options);
  }

  Manager& manager;
  ClusterMembership& membership;
  const CoordinatorOptions options;
  const NodeIdentity self;
  const SteadyClock steady;
  const std::string epoch;
  const steady_clock::time_point started;

  mutable std::mutex mutex;                           // the node table and counters; before membership and the manager
  std::unordered_map<std::string, NodeRecord> nodes;  // id →
  std::unordered_map<std::string, std::string> id_by_host;  // key host → id
  std::unordered_map<std::string, SeedHost> seed_hosts;     // host →
  struct EtcdKey {
    std::string name;
    std::int64_t create_revision = 0;
  };
  std::unordered_map<std::string, EtcdKey> etcd_keys;  // node id → its nodes/ key, reporting or not
  std::uint64_t accepted = 0;
  std::map<std::string, std::uint64_t> rejected;

  // tick() walks the nodes only once one of them may change state: until the
  // earliest stable_until (liveness.hpp) of any node or seed host, which each
  // walk recomputes and every change that moves one lowers (watch). At 1,000
  // nodes that is one walk in a couple of seconds instead of ten a second.
  steady_clock::time_point quiet_until = steady_clock::time_point::min();
  void watch(steady_clock::time_point last_heard, steady_clock::time_point state_since, NodeState state) {
    quiet_until =
        std::min(quiet_until, stable_until(LivenessInput{{}, last_heard, state_since, state}, options.liveness));
  }

  std::mutex reaper_mutex;
  std::condition_variable_any reaper_wake;
  std::jthread reaper;

  void refuse(const ReportRefused& error) {
    ++rejected[error.code()];
    throw error;
  }
  std::string choose_key_host(const std::string& name, const std::string& id) const;
  void apply_availability(NodeRecord& node);
  void mark_down(NodeRecord& node, steady_clock::time_point now, const std::string& reason);
  NodeView view(const NodeRecord& node, steady_clock::time_point now) const;
  NodeView self_view(steady_clock::time_point now) const;
  NodeView seed_view(const std::string& host, const SeedHost& seed, steady_clock::time_point now) const;
  void set_seed_availability(const std::string& host, const SeedHost& seed);
  const NodeRecord* find(std::string_view id_or_name) const;
  void erase(const std::string& id, HostRemoval how);
};

Coordinator::Coordinator(Manager& manager, ClusterMembership& membership, CoordinatorOptions options, NodeIdentity self,
                         SteadyClock steady)
    : impl_(std::make_unique<Impl>(manager, membership, options, std::move(self), std::move(steady))) {}

Coordinator::~Coordinator() {
  stop();
}

const CoordinatorOptions& Coordinator::options() const noexcept {
  return impl_->options;
}
const std::string& Coordinator::epoch() const noexcept {
  return impl_->epoch;
}

std::string Coordinator::Impl::choose_key_host(const std::string& name, const std::string& id) const {
  const std::vector<std::string> members = membership.hosts();  // seed hosts and reporting nodes
  const bool taken =
      name == manager.host() || id_by_host.contains(name) || std::binary_search(members.begin(), members.end(), name);
  if (taken) return name + "~" + id.substr(0, kKeyHostIdChars);
  // With etcd the plain name goes to the oldest key of that name, whichever
  // node reported first here, so every coordinator chooses alike. A node not
  // (yet) seen in etcd counts as newer than every key it has.
  const auto own = etcd_keys.find(id);
  for (const auto& [other, key] : etcd_keys) {
    if (other == id || key.name != name) continue;
    if (own == etcd_keys.end() || key.create_revision < own->second.create_revision) {
      return name + "~" + id.substr(0, kKeyHostIdChars);
    }
  }
  return name;
}

// Tells the manager each device's availability: down when the node is, else
// what the node reports. Only changes are passed on.
void Coordinator::Impl::apply_availability(NodeRecord& node) {
  const bool node_down = node.state == NodeState::down;
  const std::string down_text =
      node_down ? fmt::format("node {} is down: {}", node.name, node.down_reason) : std::string{};
  for (auto& [local_id, track] : node.devices) {
    const bool available = !node_down && track.reported_available;
    const std::string& reason = node_down ? down_text : track.reason;
    if (available == track.applied_available && (available || reason == track.applied_reason)) continue;
    manager.set_availability(DeviceKey{node.key_host, local_id}, available, available ? std::string{} : reason);
    track.applied_available = available;
    track.applied_reason = available ? std::string{} : reason;
  }
}

void Coordinator::Impl::mark_down(NodeRecord& node, steady_clock::time_point now, const std::string& reason) {
  node.state = NodeState::down;
  node.state_since = now;
  node.down_reason = reason;
  watch(node.last_report, node.state_since, node.state);
  apply_availability(node);
  spdlog::warn("node {} ({}) is down: {}", node.name, node.id, reason);
}

ReportAck Coordinator::ingest(const Report& report, const Receipt& receipt) {
  Impl& self = *impl_;
  std::lock_guard lock(self.mutex);
  const ReportNode& sender = report.node;
  if (!self.self.id.empty() && sender.id == self.self.id) {
    self.refuse(refused(409, "identity_conflict", "node.id is this coordinator's own id (a copied state directory?)",
                        "node.id", sender.id, "must not be the coordinator's node id"));
  }
  const auto found = self.nodes.find(sender.id);
  NodeRecord* known = found == self.nodes.end() ? nullptr : &found->second;
  const bool new_incarnation = known == nullptr || sender.incarnation > known->incarnation;
  if (known != nullptr && sender.incarnation < known->incarnation) {
    self.refuse(refused(409, "stale_incarnation",
                        fmt::format("node {} is at incarnation {}; a report of incarnation {} is from an older start",
                                    sender.id, known->incarnation, sender.incarnation),
                        "node.incarnation", std::to_string(sender.incarnation),
                        fmt::format("must be at least {}", known->incarnation)));
  }
  if (known != nullptr && !new_incarnation) {
    if (report.seq <= known->last_seq) {
      self.refuse(refused(
          409, "stale_sequence",
          fmt::format("report {} of node {} was already received (last {})", report.seq, sender.id, known->last_seq),
          "seq", std::to_string(report.seq), fmt::format("must be greater than {}", known->last_seq)));
    }
    if (sender.name != known->name) {
      self.refuse(refused(
          409, "identity_conflict",
          fmt::format("node {} is named {}; another process sends its id as {}", sender.id, known->name, sender.name),
          "node.name", sender.name, fmt::format("must be {} for this incarnation", known->name)));
    }
  }
  const bool inventory_changed = new_incarnation || report.inventory_version != known->inventory_version;
  if (inventory_changed && !report.inventory) {
    self.refuse(refused(409, "inventory_required",
                        new_incarnation ? "the coordinator does not know this node (incarnation): send the inventory"
                                        : "the inventory changed: send it",
                        "inventory", "(absent)", "required for a new node, incarnation or inventory_version"));
  }
  if (known == nullptr && self.nodes.size() >= self.options.max_nodes) {
    self.refuse(refused(503, "node_limit",
                        fmt::format("the coordinator holds {} nodes, its limit (--max-nodes); slots free up as "
                                    "down nodes are forgotten",
                                    self.nodes.size()),
                        "node.id", sender.id, fmt::format("at most {} nodes", self.options.max_nodes), 10));
  }
  // The device ids this report may name.
  std::set<std::string> ids;
  if (report.inventory) {
    if (report.inventory->size() > self.options.max_devices_per_node) {
      self.refuse(refused(422, "device_limit", fmt::format("the inventory lists {} devices", report.inventory->size()),
                          "inventory", std::to_string(report.inventory->size()),
                          fmt::format("at most {} devices per node", self.options.max_devices_per_node)));
    }
    for (const DeviceInfo& info : *report.inventory) ids.insert(info.key.local_id);
  } else {
    for (const auto& [local_id, track] : known->devices) ids.insert(local_id);
  }
  const auto check_known = [&](const std::string& local_id, const char* what) {
    if (!ids.contains(local_id)) {
      self.refuse(refused(422, "unknown_device", fmt::format("{}.{} is not in the node's inventory", what, local_id),
                          std::string(what) + "." + local_id, local_id, "must be a device of the inventory"));
    }
  };
  for (const auto& [local_id, samples] : report.samples) check_known(local_id, "samples");
  for (const auto& [local_id, reason] : report.unavailable) check_known(local_id, "unavailable");

  // Accepted: apply.
  const bool first_contact = known == nullptr;
  if (first_contact) {
    NodeRecord record;
    record.id = sender.id;
    record.name = sender.name;
    record.key_host = self.choose_key_host(sender.name, sender.id);
    record.state_since = receipt.received;
    record.lease = self.etcd_keys.contains(sender.id) ? LeaseState::present : LeaseState::unknown;
    known = &self.nodes.emplace(sender.id, std::move(record)).first->second;
    self.id_by_host.emplace(known->key_host, sender.id);
    spdlog::info("node {} ({}) joined from {}: host {}, incarnation {}, {} devices", sender.name, sender.id,
                 receipt.peer, known->key_host, sender.incarnation, report.inventory->size());
  } else if (new_incarnation) {
    // A restart: its old devices (and their histories) are replaced, nothing is doubled.
    self.membership.remove_host(known->key_host);
    known->devices.clear();
    known->last_seq = 0;
    known->offset = ClockOffset{};
    // A restarted process may no longer use etcd: its lease is unknown until its key shows.
    if (known->lease == LeaseState::absent) known->lease = LeaseState::unknown;
    spdlog::info("node {} ({}) restarted: incarnation {} → {}", sender.name, sender.id, known->incarnation,
                 sender.incarnation);
  }
  NodeRecord& node = *known;
  if (report.inventory) {
    std::vector<DeviceKey> added;
    try {
      for (const DeviceInfo& reported : *report.inventory) {
        DeviceInfo info = reported;
        info.key = DeviceKey{node.key_host, reported.key.local_id};
        info.backend = "remote";
        const bool is_new = !node.devices.contains(info.key.local_id);
        self.membership.register_device(info);
        if (is_new) added.push_back(info.key);
        node.devices.try_emplace(info.key.local_id);
      }
    } catch (const InputError& e) {
      for (const DeviceKey& key : added) {
        self.membership.unregister_device(key);
        node.devices.erase(key.local_id);
      }
      if (first_contact && node.devices.empty()) {
        self.id_by_host.erase(node.key_host);
        self.nodes.erase(sender.id);
      }
      const bool memory = std::string_view(e.field()) == "history";
      self.refuse(refused(memory ? 503 : 422, memory ? "history_memory_full" : "invalid_value",
                          fmt::format("the coordinator cannot hold the inventory: {}", e.what()), e.field(), e.value(),
                          e.rule(), memory ? std::optional<int>(10) : std::nullopt));
    }
    for (auto it = node.devices.begin(); it != node.devices.end();) {
      if (ids.contains(it->first)) {
        ++it;
        continue;
      }
      self.membership.unregister_device(DeviceKey{node.key_host, it->first});
      it = node.devices.erase(it);
    }
    node.inventory_version = report.inventory_version;
  }
  node.incarnation = sender.incarnation;
  node.name = sender.name;
  node.agent_version = sender.agent_version;
  if (std::string address = node_address(sender, receipt.peer); !address.empty()) node.address = std::move(address);

  if (report.clock) {
    node.offset.exchange(report.clock->t0, report.clock->r, report.clock->t, report.clock->t1);
  } else {
    node.offset.first_contact(report.sent_at, receipt.wall);
  }
  const std::chrono::nanoseconds offset = node.offset.offset();
  if (!node.offset_warned && (offset > std::chrono::seconds{1} || offset < -std::chrono::seconds{1})) {
    node.offset_warned = true;
    spdlog::warn("node {}'s clock is {:.3f} s off this coordinator's; its samples are stored corrected", node.name,
                 -seconds(offset));
  }

  ReportAck ack;
  ack.ack = report.seq;
  ack.coordinator = self.self.id;
  ack.epoch = self.epoch;
  ack.interval_ms = static_cast<std::uint32_t>(self.options.report_interval.count());
  ack.host = node.key_host;
  ack.received_at = receipt.wall;
  for (const auto& [local_id, samples] : report.samples) {
    DeviceTrack& track = node.devices[local_id];
    const DeviceKey key{node.key_host, local_id};
    for (const Sample& raw : samples) {
      if (raw.timestamp <= track.last_raw) {  // a retransmission, whatever the offset estimate does meanwhile
        ++ack.duplicates;
        continue;
      }
      track.last_raw = raw.timestamp;
      Sample corrected = raw;
      corrected.timestamp =
          std::min(std::max(raw.timestamp + offset, track.last_corrected + std::chrono::nanoseconds{1}), receipt.wall);
      if (corrected.timestamp <= track.last_corrected) {  // only if the coordinator's own clock stepped back
        ++ack.duplicates;
        continue;
      }
      try {
        if (self.manager.record(key, corrected) == RecordOutcome::duplicate) {
          ++ack.duplicates;
        } else {
          ++ack.accepted;
          track.last_corrected = corrected.timestamp;
        }
      } catch (const ValidationError& e) {
        ++ack.rejected;
        if (ack.rejections.size() < kMaxRejectionsListed) {
          ack.rejections.push_back(fmt::format("samples.{}: {}", local_id, e.what()));
        }
      }
    }
  }
  for (auto& [local_id, track] : node.devices) {
    const auto reason = report.unavailable.find(local_id);
    track.reported_available = reason == report.unavailable.end();
    track.reason = track.reported_available ? std::string{} : reason->second;
  }
  for (const auto& [local_id, count] : report.dropped) node.dropped_by_agent += count;
  node.samples += ack.accepted;
  node.duplicates += ack.duplicates;
  node.rejected_samples += ack.rejected;
  ++node.reports;
  node.last_seq = report.seq;
  node.last_report = receipt.received;
  if (report.leaving) {
    if (node.state != NodeState::down) self.mark_down(node, receipt.received, "left");
  } else if (node.state == NodeState::down && node.lease == LeaseState::absent) {
    // Down by its lease: alive again only once its key is back (a frozen
    // process that thaws re-registers within a keepalive period).
  } else if (node.state != NodeState::alive) {
    if (node.state == NodeState::down) spdlog::info("node {} ({}) is alive again", node.name, node.id);
    node.state = NodeState::alive;
    node.state_since = receipt.received;
    node.down_reason.clear();
  }
  self.watch(node.last_report, node.state_since, node.state);
  self.apply_availability(node);
  ++self.accepted;
  ack.state = to_string(node.state);
  ack.replied_at = std::max(now_timestamp(), receipt.wall);
  return ack;
}

void Coordinator::tick() {
  tick(impl_->steady());
}

void Coordinator::tick(steady_clock::time_point now) {
  Impl& self = *impl_;
  std::lock_guard lock(self.mutex);
  if (now <= self.quiet_until) return;
  steady_clock::time_point next = steady_clock::time_point::max();
  std::vector<std::string> forget;
  for (auto& [id, node] : self.nodes) {
    const LivenessStep step =
        next_state(LivenessInput{now, node.last_report, node.state_since, node.state}, self.options.liveness);
    if (step.forget) {
      forget.push_back(id);
    } else if (step.state != node.state) {
      if (step.state == NodeState::down) {
        self.mark_down(node, now, step.reason);
      } else {
        spdlog::info("node {} ({}) is {}: no report for {:.1f} s", node.name, id, to_string(step.state),
                     seconds(now - node.last_report));
        node.state = step.state;
        node.state_since = now;
      }
    }
    if (!step.forget) {
      next = std::min(next, stable_until(LivenessInput{now, node.last_report, node.state_since, node.state},
                                         self.options.liveness));
    }
  }
  for (const std::string& id : forget) {
    spdlog::info("node {} forgotten after {:.0f} s down", self.nodes.at(id).name,
                 seconds(self.options.liveness.forget_after));
    self.erase(id, HostRemoval::expired);
  }
  for (auto it = self.seed_hosts.begin(); it != self.seed_hosts.end();) {
    auto& [host, seed] = *it;
    const LivenessStep step =
        next_state(LivenessInput{now, seed.last_message, seed.state_since, seed.state}, self.options.liveness);
    if (step.forget) {
      spdlog::info("seed host {} forgotten after {:.0f} s down; its slot is free", host,
                   seconds(self.options.liveness.forget_after));
      self.membership.expire_host(host);
      it = self.seed_hosts.erase(it);
      continue;
    }
    if (step.state != seed.state) {
      seed.state = step.state;
      seed.state_since = now;
      if (step.state == NodeState::down) {
        seed.down_reason = step.reason;
        self.set_seed_availability(host, seed);
        spdlog::warn("seed host {} is down: {}", host, step.reason);
      }
    }
    next = std::min(
        next, stable_until(LivenessInput{now, seed.last_message, seed.state_since, seed.state}, self.options.liveness));
    ++it;
  }
  self.quiet_until = next;
}

void Coordinator::Impl::set_seed_availability(const std::string& host, const SeedHost& seed) {
  const bool down = seed.state == NodeState::down;
  for (const DeviceKey& key : membership.devices_of(host)) {
    manager.set_availability(key, !down, down ? fmt::format("host {} is down: {}", host, seed.down_reason) : "");
  }
}

void Coordinator::node_lease_lost(const std::string& node_id) {
  Impl& self = *impl_;
  const steady_clock::time_point now = self.steady();
  std::lock_guard lock(self.mutex);
  self.etcd_keys.erase(node_id);
  const auto it = self.nodes.find(node_id);
  if (it == self.nodes.end()) return;
  it->second.lease = LeaseState::absent;
  if (it->second.state != NodeState::down) self.mark_down(it->second, now, kLeaseLost);
}

void Coordinator::node_lease_present(const std::string& node_id, const std::string& name,
                                     std::int64_t create_revision) {
  Impl& self = *impl_;
  std::lock_guard lock(self.mutex);
  if (!self.self.id.empty() && node_id == self.self.id) return;  // its own host is its own name already
  self.etcd_keys[node_id] = Impl::EtcdKey{name, create_revision};
  const auto it = self.nodes.find(node_id);
  if (it == self.nodes.end()) return;
  if (it->second.lease == LeaseState::absent) {
    spdlog::info("node {} ({}) is back in etcd; its next report makes it alive", it->second.name, node_id);
  }
  it->second.lease = LeaseState::present;
}

void Coordinator::note_seed_message(const std::string& host, steady_clock::time_point received) {
  Impl& self = *impl_;
  std::lock_guard lock(self.mutex);
  auto [it, added] = self.seed_hosts.try_emplace(host);
  SeedHost& seed = it->second;
  if (added) seed.state_since = received;
  seed.last_message = std::max(seed.last_message, received);
  ++seed.messages;
  if (seed.state == NodeState::alive) {
    self.watch(seed.last_message, seed.state_since, seed.state);
    return;
  }
  const bool was_down = seed.state == NodeState::down;
  seed.state = NodeState::alive;
  seed.state_since = received;
  seed.down_reason.clear();
  self.watch(seed.last_message, seed.state_since, seed.state);
  // Back from down: its devices are available again (a heartbeat that says
  // otherwise is applied after this).
  if (was_down) {
    self.set_seed_availability(host, seed);
    spdlog::info("seed host {} is alive again", host);
  }
}

NodeView Coordinator::Impl::seed_view(const std::string& host, const SeedHost& seed,
                                      steady_clock::time_point now) const {
  NodeView out;
  out.name = host;
  out.host = host;
  out.kind = "seed";
  out.state = seed.state;
  out.state_since_seconds = seconds(now - seed.state_since);
  out.last_report_age_seconds = seconds(now - seed.last_message);
  out.down_reason = seed.down_reason;
  out.reports = seed.messages;
  out.device_keys = membership.devices_of(host);
  out.devices = out.device_keys.size();
  return out;
}

void Coordinator::Impl::erase(const std::string& id, HostRemoval how) {
  const auto it = nodes.find(id);
  if (it == nodes.end()) return;
  if (how == HostRemoval::expired) {
    membership.expire_host(it->second.key_host);
  } else {
    membership.remove_host(it->second.key_host);
  }
  id_by_host.erase(it->second.key_host);
  nodes.erase(it);
}

void Coordinator::start() {
  Impl& self = *impl_;
  if (self.reaper.joinable()) return;
  const auto period =
      std::min<std::chrono::nanoseconds>(std::chrono::milliseconds{100}, self.options.liveness.suspect_after / 10);
  self.reaper = std::jthread([this, period](std::stop_token stop) {
    Impl& impl = *impl_;
    std::unique_lock lock(impl.reaper_mutex);
    while (!impl.reaper_wake.wait_for(lock, stop, period, [] { return false; })) {
      if (stop.stop_requested()) break;
      lock.unlock();
      try {
        tick();
      } catch (const std::exception& e) {
        spdlog::error("coordinator: liveness pass failed: {}", e.what());
      }
      lock.lock();
    }
  });
}

void Coordinator::stop() {
  Impl& self = *impl_;
  if (!self.reaper.joinable()) return;
  self.reaper.request_stop();
  self.reaper.join();
}

NodeView Coordinator::Impl::view(const NodeRecord& node, steady_clock::time_point now) const {
  NodeView out;
  out.id = node.id;
  out.name = node.name;
  out.host = node.key_host;
  out.kind = "report";
  out.address = node.address;
  out.state = node.state;
  out.state_since_seconds = seconds(now - node.state_since);
  out.last_report_age_seconds = seconds(now - node.last_report);
  out.incarnation = node.incarnation;
  out.devices = node.devices.size();
  if (node.offset.known()) out.clock_offset_seconds = seconds(node.offset.offset());
  if (const auto error = node.offset.error()) out.clock_offset_error_seconds = seconds(*error);
  out.agent_version = node.agent_version;
  out.down_reason = node.down_reason;
  if (options.etcd) out.lease = node.lease;
  out.reports = node.reports;
  out.samples = node.samples;
  out.duplicates = node.duplicates;
  out.rejected_samples = node.rejected_samples;
  out.dropped_by_agent = node.dropped_by_agent;
  for (const auto& [local_id, track] : node.devices) out.device_keys.push_back(DeviceKey{node.key_host, local_id});
  return out;
}

NodeView Coordinator::Impl::self_view(steady_clock::time_point now) const {
  NodeView out;
  out.id = self.id;
  out.name = self.name.empty() ? manager.host() : self.name;
  out.host = manager.host();
  out.kind = "self";
  out.state = NodeState::alive;
  out.state_since_seconds = seconds(now - started);
  out.incarnation = self.incarnation;
  for (const DeviceState& device : manager.devices()) {
    if (device.info->backend != "remote") out.device_keys.push_back(device.info->key);
  }
  std::sort(out.device_keys.begin(), out.device_keys.end());
  out.devices = out.device_keys.size();
  return out;
}

const NodeRecord* Coordinator::Impl::find(std::string_view id_or_name) const {
  if (const auto it = nodes.find(std::string(id_or_name)); it != nodes.end()) return &it->second;
  if (const auto it = id_by_host.find(std::string(id_or_name)); it != id_by_host.end()) return &nodes.at(it->second);
  const NodeRecord* match = nullptr;
  for (const auto& [id, node] : nodes) {
    if (node.name == id_or_name) {
      if (match != nullptr) return nullptr;  // two nodes of that name: ask by id or host
      match = &node;
    }
  }
  return match;
}

std::vector<NodeView> Coordinator::nodes() const {
  const Impl& self = *impl_;
  const steady_clock::time_point now = self.steady();
  std::vector<NodeView> out{self.self_view(now)};
  std::lock_guard lock(self.mutex);
  out.reserve(self.nodes.size() + 1);
  for (const auto& [id, node] : self.nodes) out.push_back(self.view(node, now));
  for (const auto& [host, seed] : self.seed_hosts) out.push_back(self.seed_view(host, seed, now));
  std::sort(out.begin() + 1, out.end(),
            [](const NodeView& a, const NodeView& b) { return std::tie(a.name, a.id) < std::tie(b.name, b.id); });
  return out;
}

std::optional<NodeView> Coordinator::node(std::string_view id_or_name) const {
  const Impl& self = *impl_;
  const steady_clock::time_point now = self.steady();
  const std::string self_name = self.self.name.empty() ? self.manager.host() : self.self.name;
  {
    std::lock_guard lock(self.mutex);
    if (const NodeRecord* node = self.find(id_or_name)) return self.view(*node, now);
    if (const auto seed = self.seed_hosts.find(std::string(id_or_name)); seed != self.seed_hosts.end()) {
      return self.seed_view(seed->first, seed->second, now);
    }
  }
  if ((!self.self.id.empty() && id_or_name == self.self.id) || id_or_name == self_name ||
      id_or_name == self.manager.host()) {
    return self.self_view(now);
  }
  return std::nullopt;
}

NodeView Coordinator::forget(std::string_view id_or_name) {
  Impl& self = *impl_;
  const steady_clock::time_point now = self.steady();
  std::lock_guard lock(self.mutex);
  const NodeRecord* node = self.find(id_or_name);
  if (node == nullptr) {
    if (const auto seed = self.seed_hosts.find(std::string(id_or_name)); seed != self.seed_hosts.end()) {
      NodeView view = self.seed_view(seed->first, seed->second, now);
      spdlog::info("seed host {} forgotten on request", seed->first);
      self.membership.remove_host(seed->first);
      self.seed_hosts.erase(seed);
      return view;
    }
    const std::string self_name = self.self.name.empty() ? self.manager.host() : self.self.name;
    if ((!self.self.id.empty() && id_or_name == self.self.id) || id_or_name == self_name) {
      throw refused(409, "self", "a coordinator cannot forget itself", "id", std::string(id_or_name),
                    "must name a node that reports to this coordinator");
    }
    throw refused(404, "unknown_node", fmt::format("no node {} (GET /v1/nodes lists them)", id_or_name), "id",
                  std::string(id_or_name), "must be a node's id, name or host");
  }
  NodeView view = self.view(*node, now);
  spdlog::info("node {} ({}) forgotten on request", node->name, node->id);
  self.erase(node->id, HostRemoval::removed);
  return view;
}

NodeCounts Coordinator::counts() const {
  std::lock_guard lock(impl_->mutex);
  NodeCounts counts;
  counts.alive = 1;  // self
  for (const auto& [id, node] : impl_->nodes) counts.add(node.state);
  for (const auto& [host, seed] : impl_->seed_hosts) counts.add(seed.state);
  return counts;
}

NodeCounts Coordinator::remote_devices_by_state() const {
  std::lock_guard lock(impl_->mutex);
  NodeCounts devices;
  for (const auto& [id, node] : impl_->nodes) devices.add(node.state, node.devices.size());
  for (const auto& [host, seed] : impl_->seed_hosts) {
    devices.add(seed.state, impl_->membership.devices_of(host).size());
  }
  return devices;
}

std::unordered_set<std::string> Coordinator::down_hosts() const {
  std::lock_guard lock(impl_->mutex);
  std::unordered_set<std::string> hosts;
  for (const auto& [id, node] : impl_->nodes) {
    if (node.state == NodeState::down) hosts.insert(node.key_host);
  }
  for (const auto& [host, seed] : impl_->seed_hosts) {
    if (seed.state == NodeState::down) hosts.insert(host);
  }
  return hosts;
}

std::unordered_map<std::string, NodeLabel> Coordinator::labels_by_host() const {
  std::lock_guard lock(impl_->mutex);
  std::unordered_map<std::string, NodeLabel> labels;
  labels.reserve(impl_->nodes.size() + impl_->seed_hosts.size());
  for (const auto& [id, node] : impl_->nodes) labels.emplace(node.key_host, NodeLabel{node.name, node.id, node.state});
  for (const auto& [host, seed] : impl_->seed_hosts) labels.try_emplace(host, NodeLabel{host, {}, seed.state});
  return labels;
}

NodeLabel Coordinator::self_label() const {
  const Impl& self = *impl_;
  return NodeLabel{self.self.name.empty() ? self.manager.host() : self.self.name, self.self.id, NodeState::alive};
}

bool Coordinator::owns_host(const std::string& host) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->id_by_host.contains(host);
}

std::uint64_t Coordinator::reports_accepted() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->accepted;
}

std::vector<std::pair<std::string, std::uint64_t>> Coordinator::reports_rejected() const {
  std::lock_guard lock(impl_->mutex);
  return {impl_->rejected.begin(), impl_->rejected.end()};
}

void Coordinator::count_rejected(const std::string& code) {
  std::lock_guard lock(impl_->mutex);
  ++impl_->rejected[code];
}

nlohmann::json to_json(const NodeView& node) {
  using nlohmann::json;
  const auto optional = [](const std::optional<double>& value) { return value ? json(*value) : json(nullptr); };
  json devices = json::array();
  for (const DeviceKey& key : node.device_keys) devices.push_back(key.str());
  return json{{"id", node.id.empty() ? json(nullptr) : json(node.id)},
              {"name", node.name},
              {"host", node.host},
              {"kind", node.kind},
              {"address", node.address.empty() ? json(nullptr) : json(node.address)},
              {"state", to_string(node.state)},
              {"state_since_seconds", node.state_since_seconds},
              {"last_report_age_seconds", optional(node.last_report_age_seconds)},
              {"incarnation", node.incarnation == 0 ? json(nullptr) : json(node.incarnation)},
              {"devices", node.devices},
              {"device_ids", std::move(devices)},
              {"clock_offset_seconds", optional(node.clock_offset_seconds)},
              {"clock_offset_error_seconds", optional(node.clock_offset_error_seconds)},
              {"agent_version", node.agent_version.empty() ? json(nullptr) : json(node.agent_version)},
              {"down_reason", node.down_reason.empty() ? json(nullptr) : json(node.down_reason)},
              {"lease", node.lease ? json(to_string(*node.lease)) : json(nullptr)},
              {"reports", node.reports},
              {"samples", node.samples},
              {"duplicates", node.duplicates},
              {"rejected_samples", node.rejected_samples},
              {"dropped_by_agent", node.dropped_by_agent}};
}

}  // namespace gpucluster
