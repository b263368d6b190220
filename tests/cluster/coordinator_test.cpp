// The coordinator (src/cluster/coordinator.cpp) in-process, on a stepped
// steady clock: reports register a node's devices, every refusal changes
// nothing and is counted, liveness moves a silent node to suspect, down and
// forgotten, a restart replaces devices, and a node whose clock is an hour off
// stores samples on the coordinator's time.
#include "gpucluster/cluster/coordinator.hpp"

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cluster/membership.hpp"

namespace gpucluster {
namespace {

using agent::Report;
using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

constexpr const char* kNodeA = "3f1c2a9b-0c1d-4e5f-8a9b-0c1d2e3f4a5b";
constexpr const char* kNodeB = "9d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a";

DeviceInfo gpu(const std::string& id, std::uint64_t memory = 80'000'000'000ULL) {
  DeviceInfo info;
  info.key.local_id = id;
  info.name = "GPU " + id;
  info.vendor = "nvidia";
  info.kind = DeviceKind::cuda;
  info.backend = "nvml";
  info.memory_total_bytes = memory;
  return info;
}

Sample sample_at(Timestamp at, std::int64_t used = 1'000'000'000) {
  Sample sample;
  sample.timestamp = at;
  sample.memory_used_bytes = used;
  sample.memory_total_bytes = 80'000'000'000LL;
  sample.utilization_percent = 50.0F;
  return sample;
}

class CoordinatorTest : public ::testing::Test {
 protected:
  CoordinatorTest() {
    ManagerConfig config;
    config.host = "coord";
    config.clock = [this] { return wall; };
    manager = std::make_unique<Manager>(config);
    membership = std::make_unique<ClusterMembership>(*manager, MembershipLimits{10'000, 256});
    rebuild();
  }

  void rebuild(CoordinatorOptions options = {}) {
    coordinator.reset();
    NodeIdentity self;
    self.id = "00000000-0000-4000-8000-000000000001";
    self.name = "coord";
    self.incarnation = 1;
    coordinator = std::make_unique<Coordinator>(*manager, *membership, options, self, [this] { return now; });
  }

  Report report(const char* id, std::uint64_t seq, std::vector<std::string> devices = {"cuda:0", "cuda:1"},
                std::uint64_t incarnation = 1, const std::string& name = "gpu-a") {
    Report r;
    r.node.id = id;
    r.node.incarnation = incarnation;
    r.node.name = name;
    r.node.agent_version = "0.1.0";
    r.node.url = "http://127.0.0.1:9421";
    r.seq = seq;
    r.sent_at = wall;
    r.inventory_version = 1;
    if (!devices.empty()) {
      r.inventory.emplace();
      for (const auto& d : devices) r.inventory->push_back(gpu(d));
    }
    return r;
  }

  agent::ReportAck ingest(const Report& r) { return coordinator->ingest(r, Receipt{now, wall, "127.0.0.1"}); }

  std::string refusal(const Report& r) {
    try {
      ingest(r);
    } catch (const ReportRefused& e) {
      return std::to_string(e.status()) + " " + e.code();
    }
    return "accepted";
  }

  std::vector<std::string> device_ids() const {
    std::vector<std::string> out;
    for (const DeviceState& d : manager->devices()) out.push_back(d.info->key.str());
    return out;
  }

  NodeView view(const std::string& id) const { return coordinator->node(id).value(); }

  steady_clock::time_point now = steady_clock::time_point{} + std::chrono::hours{1};
  Timestamp wall = Timestamp{} + std::chrono::hours{24 * 365 * 56};
  std::unique_ptr<Manager> manager;
  std::unique_ptr<ClusterMembership> membership;
  std::unique_ptr<Coordinator> coordinator;
};

TEST_F(CoordinatorTest, FirstReportRegistersTheNodesDevicesUnderItsName) {
  const agent::ReportAck ack = ingest(report(kNodeA, 1));
  EXPECT_EQ(ack.ack, 1U);
  EXPECT_EQ(ack.host, "gpu-a");
  EXPECT_EQ(ack.state, "alive");
  EXPECT_EQ(ack.epoch, coordinator->epoch());
  EXPECT_EQ(ack.interval_ms, 1000U);
  EXPECT_EQ(ack.coordinator, "00000000-0000-4000-8000-000000000001");
  EXPECT_EQ(device_ids(), (std::vector<std::string>{"gpu-a/cuda:0", "gpu-a/cuda:1"}));
  EXPECT_EQ(manager->device(DeviceKey{"gpu-a", "cuda:0"}).info->backend, "remote");
  const NodeView node = view(kNodeA);
  EXPECT_EQ(node.state, NodeState::alive);
  EXPECT_EQ(node.devices, 2U);
  EXPECT_EQ(node.address, "http://127.0.0.1:9421");
  const std::vector<NodeView> all = coordinator->nodes();
  ASSERT_EQ(all.size(), 2U);
  EXPECT_EQ(all[0].kind, "self");
  EXPECT_EQ(all[1].id, kNodeA);
}

TEST_F(CoordinatorTest, SamplesAreStoredAndRetransmissionsAreDuplicates) {
  Report first = report(kNodeA, 1);
  first.samples["cuda:0"] = {sample_at(wall - seconds{2}), sample_at(wall - seconds{1})};
  agent::ReportAck ack = ingest(first);
  EXPECT_EQ(ack.accepted, 2U);
  EXPECT_EQ(manager->history(DeviceKey{"gpu-a", "cuda:0"}).size(), 2U);
  // The same samples again in the next report (its ack was lost): duplicates, nothing doubled.
  Report second = report(kNodeA, 2, {});
  second.samples["cuda:0"] = {sample_at(wall - seconds{1}), sample_at(wall)};
  ack = ingest(second);
  EXPECT_EQ(ack.accepted, 1U);
  EXPECT_EQ(ack.duplicates, 1U);
  EXPECT_EQ(manager->history(DeviceKey{"gpu-a", "cuda:0"}).size(), 3U);
}

TEST_F(CoordinatorTest, EveryRefusalChangesNothingAndIsCounted) {
  Report accepted = report(kNodeA, 5, {"cuda:0"});
  accepted.samples["cuda:0"] = {sample_at(wall - seconds{1})};
  ingest(accepted);
  const auto before_devices = device_ids();
  const auto before_history = manager->history(DeviceKey{"gpu-a", "cuda:0"});
  const auto before_view = view(kNodeA);

  // A new node without its inventory.
  EXPECT_EQ(refusal(report(kNodeB, 1, {})), "409 inventory_required");
  // The same seq again, and one going backwards.
  Report again = report(kNodeA, 5, {});
  again.samples["cuda:0"] = {sample_at(wall)};
  EXPECT_EQ(refusal(again), "409 stale_sequence");
  EXPECT_EQ(refusal(report(kNodeA, 4, {})), "409 stale_sequence");
  // An older incarnation (a replay from before a restart).
  Report old = report(kNodeA, 9, {"cuda:0"});
  ingest(report(kNodeA, 1, {"cuda:0"}, 2));  // incarnation 2 now
  const auto after_restart_history = manager->history(DeviceKey{"gpu-a", "cuda:0"});
  EXPECT_EQ(refusal(old), "409 stale_incarnation");
  // Another process with this node's id and another name.
  EXPECT_EQ(refusal(report(kNodeA, 7, {}, 2, "impostor")), "409 identity_conflict");
  // The coordinator's own id.
  EXPECT_EQ(refusal(report("00000000-0000-4000-8000-000000000001", 1)), "409 identity_conflict");
  // Samples of a device that is not in the inventory.
  Report unknown = report(kNodeA, 8, {}, 2);
  unknown.samples["cuda:9"] = {sample_at(wall)};
  EXPECT_EQ(refusal(unknown), "422 unknown_device");
  // A changed inventory_version without the inventory.
  Report changed = report(kNodeA, 8, {}, 2);
  changed.inventory_version = 2;
  EXPECT_EQ(refusal(changed), "409 inventory_required");

  EXPECT_EQ(device_ids(), before_devices);
  EXPECT_EQ(manager->history(DeviceKey{"gpu-a", "cuda:0"}), after_restart_history);
  EXPECT_EQ(view(kNodeA).incarnation, 2U);
  EXPECT_EQ(before_view.incarnation, 1U);
  EXPECT_FALSE(before_history.empty());
  std::map<std::string, std::uint64_t> rejected;
  for (const auto& [code, count] : coordinator->reports_rejected()) rejected[code] = count;
  EXPECT_EQ(rejected["inventory_required"], 2U);
  EXPECT_EQ(rejected["stale_sequence"], 2U);
  EXPECT_EQ(rejected["stale_incarnation"], 1U);
  EXPECT_EQ(rejected["identity_conflict"], 2U);
  EXPECT_EQ(rejected["unknown_device"], 1U);
}

TEST_F(CoordinatorTest, NodeLimitAndDeviceLimitAreRefusedAndForgettingFreesTheSlot) {
  CoordinatorOptions options;
  options.max_nodes = 1;
  options.max_devices_per_node = 2;
  rebuild(options);
  ingest(report(kNodeA, 1));
  EXPECT_EQ(refusal(report(kNodeB, 1, {"cuda:0"}, 1, "gpu-b")), "503 node_limit");
  EXPECT_EQ(refusal(report(kNodeA, 2, {"cuda:0", "cuda:1", "cuda:2"})), "422 device_limit");
  coordinator->forget("gpu-a");
  EXPECT_EQ(device_ids(), std::vector<std::string>{});
  EXPECT_EQ(refusal(report(kNodeB, 1, {"cuda:0"}, 1, "gpu-b")), "accepted");
}

TEST_F(CoordinatorTest, SilentNodeIsSuspectThenDownThenForgotten) {
  CoordinatorOptions options;
  options.liveness = {seconds{3}, seconds{10}, seconds{60}};
  rebuild(options);
  Report r = report(kNodeA, 1);
  r.samples["cuda:0"] = {sample_at(wall)};
  ingest(r);
  const auto last = now;
  coordinator->tick(last + seconds{3});  // exactly suspect_after: not yet
  EXPECT_EQ(view(kNodeA).state, NodeState::alive);
  coordinator->tick(last + seconds{3} + std::chrono::nanoseconds{1});
  EXPECT_EQ(view(kNodeA).state, NodeState::suspect);
  // Suspect devices stay selectable.
  EXPECT_TRUE(manager->device(DeviceKey{"gpu-a", "cuda:0"}).available);
  coordinator->tick(last + seconds{10});
  EXPECT_EQ(view(kNodeA).state, NodeState::suspect);
  coordinator->tick(last + seconds{10} + std::chrono::nanoseconds{1});
  const NodeView down = view(kNodeA);
  EXPECT_EQ(down.state, NodeState::down);
  EXPECT_NE(down.down_reason.find("no report for 10.0 s"), std::string::npos) << down.down_reason;
  const DeviceState device = manager->device(DeviceKey{"gpu-a", "cuda:0"});
  EXPECT_FALSE(device.available);
  EXPECT_NE(device.unavailable_reason.find("node gpu-a is down"), std::string::npos) << device.unavailable_reason;
  // Down devices leave select and the totals at once.
  for (const RankedDevice& ranked : manager->rank()) {
    if (ranked.key.host == "gpu-a") {
      EXPECT_EQ(ranked.eligibility, Eligibility::unavailable);
    }
  }
  EXPECT_FALSE(manager->select().device.has_value());
  EXPECT_EQ(coordinator->down_hosts(), std::unordered_set<std::string>{"gpu-a"});
  EXPECT_EQ(coordinator->counts().down, 1U);
  // Forgotten after forget_after spent down: devices unregistered.
  coordinator->tick(last + seconds{10} + std::chrono::nanoseconds{1} + seconds{60});
  EXPECT_TRUE(coordinator->node(kNodeA).has_value());
  coordinator->tick(last + seconds{71});
  EXPECT_FALSE(coordinator->node(kNodeA).has_value());
  EXPECT_EQ(device_ids(), std::vector<std::string>{});
}

// The liveness pass skips its walk until some node may change state; every
// change that brings such a time closer (a down node reporting again, a new
// node) must still be seen on time.
TEST_F(CoordinatorTest, ANodeBackFromDownIsSuspectOnTimeThoughThePassWasQuiet) {
  CoordinatorOptions options;
  options.liveness = {seconds{3}, seconds{10}, seconds{600}};
  rebuild(options);
  ingest(report(kNodeA, 1));
  const auto start = now;
  coordinator->tick(start + seconds{10} + std::chrono::nanoseconds{1});
  ASSERT_EQ(view(kNodeA).state, NodeState::down);  // the next change it knows of: forgotten, 600 s on
  now = start + seconds{20};
  ingest(report(kNodeA, 2, {}));
  EXPECT_EQ(view(kNodeA).state, NodeState::alive);
  coordinator->tick(now + seconds{1});
  EXPECT_EQ(view(kNodeA).state, NodeState::alive);
  coordinator->tick(now + seconds{3} + std::chrono::nanoseconds{1});
  EXPECT_EQ(view(kNodeA).state, NodeState::suspect);
  // A node that joins after the last pass is judged by its own first report.
  now += seconds{4};
  ingest(report(kNodeB, 1, {"cuda:0"}, 1, "gpu-b"));
  coordinator->tick(now + seconds{3});
  EXPECT_EQ(view(kNodeB).state, NodeState::alive);
  EXPECT_EQ(view(kNodeA).state, NodeState::suspect);
  coordinator->tick(now + seconds{3} + std::chrono::nanoseconds{1});
  EXPECT_EQ(view(kNodeB).state, NodeState::suspect);
  EXPECT_EQ(view(kNodeA).state, NodeState::suspect);
  coordinator->tick(start + seconds{30});  // A's last report + evict_after: not yet
  EXPECT_EQ(view(kNodeA).state, NodeState::suspect);
  coordinator->tick(start + seconds{30} + std::chrono::nanoseconds{1});
  EXPECT_EQ(view(kNodeA).state, NodeState::down);
}

// The views' join table: every reporting node and seed host by its key host, in its state.
TEST_F(CoordinatorTest, LabelsByHostNameEveryNodeAndSeedHostInItsState) {
  ingest(report(kNodeA, 1));                       // gpu-a: down below
  coordinator->note_seed_message("seedbox", now);  // a seed host: down with it
  now += seconds{8};
  ingest(report(kNodeB, 1, {"cuda:0"}, 1, "gpu-a"));  // a second gpu-a: suspect below
  now += seconds{4};
  coordinator->tick(now);
  const auto labels = coordinator->labels_by_host();
  ASSERT_EQ(labels.size(), 3U);
  const NodeLabel& a = labels.at("gpu-a");
  EXPECT_EQ(a.name, "gpu-a");
  EXPECT_EQ(a.id, kNodeA);
  EXPECT_EQ(a.state, NodeState::down);
  const NodeLabel& b = labels.at("gpu-a~9d0e1f2a");  // the same name: the host part is qualified
  EXPECT_EQ(b.name, "gpu-a");
  EXPECT_EQ(b.id, kNodeB);
  EXPECT_EQ(b.state, NodeState::suspect);
  const NodeLabel& seed = labels.at("seedbox");
  EXPECT_EQ(seed.name, "seedbox");
  EXPECT_EQ(seed.id, "");
  EXPECT_EQ(seed.state, NodeState::down);
  ingest(report(kNodeB, 2, {}, 1, "gpu-a"));
  EXPECT_EQ(coordinator->labels_by_host().at("gpu-a~9d0e1f2a").state, NodeState::alive);
  const NodeLabel self = coordinator->self_label();
  EXPECT_EQ(self.name, "coord");
  EXPECT_EQ(self.id, "00000000-0000-4000-8000-000000000001");
  EXPECT_EQ(self.state, NodeState::alive);
}

TEST_F(CoordinatorTest, ADownNodeThatReportsAgainIsAliveWithItsDevicesAvailable) {
  ingest(report(kNodeA, 1));
  now += seconds{11};
  coordinator->tick(now);
  ASSERT_EQ(view(kNodeA).state, NodeState::down);
  Report back = report(kNodeA, 2, {});  // same incarnation: SIGSTOP then SIGCONT
  back.unavailable["cuda:1"] = "backend nvml has not answered";
  ingest(back);
  EXPECT_EQ(view(kNodeA).state, NodeState::alive);
  EXPECT_EQ(view(kNodeA).incarnation, 1U);
  EXPECT_TRUE(manager->device(DeviceKey{"gpu-a", "cuda:0"}).available);
  const DeviceState cuda1 = manager->device(DeviceKey{"gpu-a", "cuda:1"});
  EXPECT_FALSE(cuda1.available);
  EXPECT_EQ(cuda1.unavailable_reason, "backend nvml has not answered");
}

TEST_F(CoordinatorTest, LeavingMarksTheNodeDownAtOnce) {
  ingest(report(kNodeA, 1));
  Report bye = report(kNodeA, 2, {});
  bye.leaving = true;
  ingest(bye);
  EXPECT_EQ(view(kNodeA).state, NodeState::down);
  EXPECT_EQ(view(kNodeA).down_reason, "left");
}

TEST_F(CoordinatorTest, ANewIncarnationReplacesTheDevicesWithoutDuplicates) {
  Report first = report(kNodeA, 10, {"cuda:0", "cuda:1"});
  first.samples["cuda:0"] = {sample_at(wall - seconds{5})};
  ingest(first);
  Report restarted = report(kNodeA, 1, {"cuda:0", "cuda:2"}, 2);
  restarted.samples["cuda:0"] = {sample_at(wall - seconds{5})};  // the same timestamp after the restart: stored
  ingest(restarted);
  EXPECT_EQ(device_ids(), (std::vector<std::string>{"gpu-a/cuda:0", "gpu-a/cuda:2"}));
  EXPECT_EQ(manager->history(DeviceKey{"gpu-a", "cuda:0"}).size(), 1U);
  EXPECT_EQ(view(kNodeA).incarnation, 2U);
  EXPECT_EQ(coordinator->nodes().size(), 2U);
}

TEST_F(CoordinatorTest, ASecondNodeWithTheSameNameGetsADistinctHost) {
  ingest(report(kNodeA, 1));
  const agent::ReportAck ack = ingest(report(kNodeB, 1, {"cuda:0"}, 1, "gpu-a"));  // a cloned machine
  EXPECT_EQ(ack.host, "gpu-a~9d0e1f2a");
  EXPECT_EQ(device_ids(), (std::vector<std::string>{"gpu-a/cuda:0", "gpu-a/cuda:1", "gpu-a~9d0e1f2a/cuda:0"}));
  // And a node named like the coordinator's own host.
  EXPECT_EQ(ingest(report("11111111-2222-4333-8444-555555555555", 1, {"cuda:0"}, 1, "coord")).host, "coord~11111111");
}

TEST_F(CoordinatorTest, WithEtcdTheOlderKeyOfANameGetsThePlainNameWhoeverReportsFirst) {
  CoordinatorOptions options;
  options.etcd = true;
  // Two coordinators that hear the twins in opposite orders choose alike.
  for (const bool a_first : {true, false}) {
    rebuild(options);
    coordinator->node_lease_present(kNodeB, "gpu-a", 5);  // B's key is older
    coordinator->node_lease_present(kNodeA, "gpu-a", 9);
    const char* first = a_first ? kNodeA : kNodeB;
    const char* second = a_first ? kNodeB : kNodeA;
    ingest(report(first, 1));
    ingest(report(second, 1));
    EXPECT_EQ(view(kNodeB).host, "gpu-a") << "A first: " << a_first;
    EXPECT_EQ(view(kNodeA).host, "gpu-a~3f1c2a9b") << "A first: " << a_first;
    coordinator->forget(kNodeA);
    coordinator->forget(kNodeB);
  }
  // A node whose key is not seen yet counts as the younger.
  rebuild(options);
  coordinator->node_lease_present(kNodeB, "gpu-a", 5);
  EXPECT_EQ(ingest(report(kNodeA, 1)).host, "gpu-a~3f1c2a9b");
}

TEST_F(CoordinatorTest, LeaseStatesAndAReportDoesNotReviveANodeWhoseKeyIsGone) {
  ingest(report(kNodeA, 1));
  EXPECT_EQ(view(kNodeA).lease, std::nullopt);  // no etcd: not applicable
  coordinator->forget(kNodeA);

  CoordinatorOptions options;
  options.etcd = true;
  rebuild(options);
  ingest(report(kNodeA, 1));
  EXPECT_EQ(view(kNodeA).lease, LeaseState::unknown);           // never seen in etcd (a --join-only node)
  EXPECT_EQ(coordinator->nodes().front().lease, std::nullopt);  // self
  EXPECT_EQ(to_json(view(kNodeA))["lease"], "unknown");
  coordinator->node_lease_present(kNodeA, "gpu-a", 3);
  EXPECT_EQ(view(kNodeA).lease, LeaseState::present);

  coordinator->node_lease_lost(kNodeA);
  EXPECT_EQ(view(kNodeA).state, NodeState::down);
  EXPECT_EQ(view(kNodeA).down_reason, "etcd lease expired");
  EXPECT_EQ(view(kNodeA).lease, LeaseState::absent);
  EXPECT_FALSE(manager->device(DeviceKey{"gpu-a", "cuda:0"}).available);
  now += milliseconds{200};
  EXPECT_EQ(ingest(report(kNodeA, 2, {})).state, "down");  // its key is still gone
  EXPECT_EQ(view(kNodeA).state, NodeState::down);

  coordinator->node_lease_present(kNodeA, "gpu-a", 7);  // registered again
  EXPECT_EQ(view(kNodeA).state, NodeState::down);       // until its next report
  now += milliseconds{200};
  EXPECT_EQ(ingest(report(kNodeA, 3, {})).state, "alive");
  EXPECT_TRUE(manager->device(DeviceKey{"gpu-a", "cuda:0"}).available);

  // A restart (new incarnation) without its key: reports alone decide again.
  coordinator->node_lease_lost(kNodeA);
  EXPECT_EQ(ingest(report(kNodeA, 1, {"cuda:0"}, 2)).state, "alive");
  EXPECT_EQ(view(kNodeA).lease, LeaseState::unknown);
  // A key that goes before the node ever reported: its first report is still taken.
  coordinator->node_lease_present(kNodeB, "gpu-b", 8);
  coordinator->node_lease_lost(kNodeB);
  EXPECT_EQ(ingest(report(kNodeB, 1, {"cuda:0"}, 1, "gpu-b")).state, "alive");
}

TEST_F(CoordinatorTest, ANodeAnHourAheadIsStoredOnTheCoordinatorsTime) {
  Report r = report(kNodeA, 1);
  r.sent_at = wall + std::chrono::hours{1};
  r.samples["cuda:0"] = {sample_at(wall + std::chrono::hours{1} - seconds{1})};
  const agent::ReportAck ack = ingest(r);
  EXPECT_EQ(ack.accepted, 1U);
  EXPECT_EQ(ack.rejected, 0U);
  const auto history = manager->history(DeviceKey{"gpu-a", "cuda:0"});
  ASSERT_EQ(history.size(), 1U);
  EXPECT_EQ(history[0].timestamp, wall - seconds{1});
  EXPECT_NEAR(view(kNodeA).clock_offset_seconds.value(), -3600.0, 1e-9);
  // A full exchange refines it: symmetric 10 ms each way, node 1 h ahead.
  Report next = report(kNodeA, 2, {});
  const auto node_clock = [&](Timestamp t) { return t + std::chrono::hours{1}; };
  next.clock = agent::ClockExchange{node_clock(wall - milliseconds{20}), wall - milliseconds{10},
                                    wall - milliseconds{9}, node_clock(wall + milliseconds{1})};
  next.samples["cuda:0"] = {sample_at(node_clock(wall))};
  ingest(next);
  EXPECT_NEAR(view(kNodeA).clock_offset_seconds.value(), -3600.0, 1e-9);
  EXPECT_NEAR(view(kNodeA).clock_offset_error_seconds.value(), 0.010, 1e-9);
  EXPECT_EQ(manager->history(DeviceKey{"gpu-a", "cuda:0"}).back().timestamp, wall);
}

TEST_F(CoordinatorTest, ForgetRefusesSelfAndUnknownNodes) {
  try {
    coordinator->forget("nobody");
    FAIL();
  } catch (const ReportRefused& e) {
    EXPECT_EQ(e.status(), 404);
  }
  try {
    coordinator->forget("coord");
    FAIL();
  } catch (const ReportRefused& e) {
    EXPECT_EQ(e.status(), 409);
  }
}

TEST_F(CoordinatorTest, SeedHostsAreDownWhenSilentAndForgottenWhichFreesTheirSlot) {
  CoordinatorOptions options;
  options.liveness = {seconds{3}, seconds{10}, seconds{60}};
  rebuild(options);
  // A membership with room for two remote hosts, as the agent's 1,024 in small.
  ClusterMembership small(*manager, MembershipLimits{2, 8});
  Coordinator coordinator_small(*manager, small, options, NodeIdentity{}, [this] { return now; });
  const auto seed_device = [](const std::string& host) {
    DeviceInfo info = gpu("cuda:0");
    info.key.host = host;
    info.backend = "remote";
    return info;
  };
  for (const std::string host : {"seed-1", "seed-2"}) {
    small.register_device(seed_device(host));
    coordinator_small.note_seed_message(host, now);
  }
  EXPECT_THROW(small.register_device(seed_device("seed-3")), MembershipError);  // the limit holds
  // seed-1 keeps talking, seed-2 goes silent.
  now += seconds{8};
  coordinator_small.note_seed_message("seed-1", now);
  now += seconds{3};
  coordinator_small.tick(now);
  EXPECT_EQ(coordinator_small.node("seed-2")->state, NodeState::down);
  EXPECT_EQ(coordinator_small.node("seed-2")->kind, "seed");
  EXPECT_EQ(coordinator_small.node("seed-1")->state, NodeState::alive);
  const DeviceState down = manager->device(DeviceKey{"seed-2", "cuda:0"});
  EXPECT_FALSE(down.available);
  EXPECT_NE(down.unavailable_reason.find("host seed-2 is down"), std::string::npos) << down.unavailable_reason;
  // Forgotten after forget_after down: the slot is free, not a permanent 422.
  now += seconds{61};
  coordinator_small.note_seed_message("seed-1", now);
  coordinator_small.tick(now);
  EXPECT_FALSE(coordinator_small.node("seed-2").has_value());
  EXPECT_EQ(small.hosts(), std::vector<std::string>{"seed-1"});
  EXPECT_NO_THROW(small.register_device(seed_device("seed-3")));
  // A host that talks again after being down is alive with its devices available.
  coordinator_small.note_seed_message("seed-3", now);
  now += seconds{11};
  coordinator_small.tick(now);
  ASSERT_EQ(coordinator_small.node("seed-3")->state, NodeState::down);
  coordinator_small.note_seed_message("seed-3", now);
  EXPECT_EQ(coordinator_small.node("seed-3")->state, NodeState::alive);
  EXPECT_TRUE(manager->device(DeviceKey{"seed-3", "cuda:0"}).available);
}

TEST(Liveness, SettingsAreCheckedAgainstTheInterval) {
  LivenessConfig config;
  EXPECT_NO_THROW(validate_liveness(config, seconds{1}));
  EXPECT_THROW(validate_liveness(config, milliseconds{99}), InputError);
  EXPECT_THROW(validate_liveness(config, seconds{2}), InputError);  // suspect 3 s < 2 × 2 s
  config.evict_after = config.suspect_after;
  EXPECT_THROW(validate_liveness(config, seconds{1}), InputError);
  config = {};
  config.forget_after = seconds{5};
  try {
    validate_liveness(config, seconds{1});
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.field()), "--forget-after");
  }
}

TEST(Liveness, StableUntilIsTheLastInstantOfTheState) {
  const LivenessConfig config;
  const steady_clock::time_point t0 = steady_clock::time_point{} + std::chrono::hours{1};
  for (const NodeState state : {NodeState::alive, NodeState::suspect, NodeState::down}) {
    LivenessInput input{t0, t0, t0 + seconds{1}, state};
    input.now = stable_until(input, config);
    const LivenessStep at = next_state(input, config);
    EXPECT_EQ(at.state, state) << to_string(state);
    EXPECT_FALSE(at.forget) << to_string(state);
    input.now += std::chrono::nanoseconds{1};
    const LivenessStep after = next_state(input, config);
    EXPECT_TRUE(after.state != state || after.forget) << to_string(state);
  }
  EXPECT_EQ(stable_until({t0, t0, t0, NodeState::alive}, config), t0 + config.suspect_after);
  EXPECT_EQ(stable_until({t0, t0, t0, NodeState::suspect}, config), t0 + config.evict_after);
  EXPECT_EQ(stable_until({t0, t0, t0 + seconds{1}, NodeState::down}, config), t0 + seconds{1} + config.forget_after);
}

TEST(Liveness, DownIsKeptUntilForgotten) {
  const LivenessConfig config;
  const steady_clock::time_point t0{};
  LivenessInput input{t0 + seconds{11} + std::chrono::minutes{5}, t0, t0 + seconds{11}, NodeState::down};
  EXPECT_EQ(next_state(input, config).state, NodeState::down);
  EXPECT_FALSE(next_state(input, config).forget);
  input.now = t0 + seconds{11} + std::chrono::minutes{10};
  EXPECT_FALSE(next_state(input, config).forget);
  input.now += std::chrono::nanoseconds{1};
  EXPECT_TRUE(next_state(input, config).forget);
}

}  // namespace
}  // namespace gpucluster
