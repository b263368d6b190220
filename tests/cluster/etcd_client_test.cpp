// EtcdClient against a real etcd (Debian's etcd-server 3.4) on loopback ports.
#include "cluster/etcd_client.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include "support/etcd_process.hpp"

namespace gpucluster {
namespace {

using namespace std::chrono_literals;
using testing::EtcdProcess;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr auto kSlack = 10s;
#else
constexpr auto kSlack = 3s;
#endif

#define SKIP_WITHOUT_ETCD() \
  if (!testing::executable(testing::kEtcdPath)) GTEST_SKIP() << testing::kEtcdMissing

// watch_prefix on its own thread, collecting what it delivers.
class Watcher {
 public:
  Watcher(EtcdClient& client, std::string prefix, std::int64_t start_revision)
      : thread_([this, &client, prefix, start_revision](std::stop_token stop) {
          try {
            client.watch_prefix(
                prefix, start_revision,
                [this](const EtcdWatchBatch& batch) {
                  std::lock_guard lock(mutex_);
                  if (batch.created) created_ = true;
                  for (const auto& event : batch.events) events_.push_back(event);
                  changed_.notify_all();
                },
                stop);
          } catch (...) {
            std::lock_guard lock(mutex_);
            error_ = std::current_exception();
          }
          std::lock_guard lock(mutex_);
          returned_ = true;
          changed_.notify_all();
        }) {}

  ~Watcher() { stop(); }

  // Requests a stop and waits for watch_prefix to return; the time it took.
  std::chrono::milliseconds stop() {
    const auto start = std::chrono::steady_clock::now();
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  }

  bool wait_created(std::chrono::milliseconds patience = 10s) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, patience, [&] { return created_ || returned_; }) && created_;
  }
  // Waits until `count` events came; returns a copy of them all.
  std::vector<EtcdEvent> wait_events(std::size_t count, std::chrono::milliseconds patience = 10s) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, patience, [&] { return events_.size() >= count || returned_; });
    return events_;
  }
  // Waits until watch_prefix returned; its exception (null when it returned normally).
  std::exception_ptr wait_returned(std::chrono::milliseconds patience = 10s) {
    std::unique_lock lock(mutex_);
    EXPECT_TRUE(changed_.wait_for(lock, patience, [&] { return returned_; })) << "the watch did not return";
    return error_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool created_ = false;
  bool returned_ = false;
  std::vector<EtcdEvent> events_;
  std::exception_ptr error_;
  std::jthread thread_;  // last: it uses the members above
};

std::int64_t ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
}

TEST(EtcdClient, GrantAndKeepalive) {
  SKIP_WITHOUT_ETCD();
  EtcdProcess etcd;
  EtcdClient client({etcd.endpoint()});
  const auto lease = client.grant_lease(10);
  EXPECT_NE(lease.id, 0);
  EXPECT_EQ(lease.ttl_seconds, 10);
  EXPECT_EQ(client.keepalive(lease.id), 10);
  const auto other = client.grant_lease(10);
  EXPECT_NE(other.id, lease.id);
  EXPECT_TRUE(client.revoke(other.id));
  EXPECT_FALSE(client.revoke(other.id));  // already gone
  EXPECT_THROW(client.keepalive(other.id), LeaseExpired);
  EXPECT_THROW(client.keepalive(12345), LeaseExpired);  // never granted
  EXPECT_THROW(client.grant_lease(0), InputError);
}

TEST(EtcdClient, TtlBelowTheMinimumIsRaisedToTwoSeconds) {
  SKIP_WITHOUT_ETCD();
  EtcdProcess etcd;
  EtcdClient client({etcd.endpoint()});
  // etcd 3.4's minimum TTL is ceil(1.5 × election timeout) = 2 s with the defaults.
  EXPECT_EQ(client.grant_lease(1).ttl_seconds, 2);
  EXPECT_EQ(client.grant_lease(2).ttl_seconds, 2);
  EXPECT_EQ(client.grant_lease(3).ttl_seconds, 3);
}

TEST(EtcdClient, LeaseWithoutKeepaliveExpiresAndItsKeyIsDeleted) {
  SKIP_WITHOUT_ETCD();
  EtcdProcess etcd;
  EtcdClient client({etcd.endpoint()});
  const std::int64_t start_revision = client.range_prefix("").revision + 1;
  Watcher watcher(client, "nodes/", start_revision);
  ASSERT_TRUE(watcher.wait_created());

  const auto granted = std::chrono::steady_clock::now();
  const auto lease = client.grant_lease(2);
  client.put(etcd_node_key("a"), R"({"id":"a"})", lease.id);
  ASSERT_EQ(client.range_prefix("nodes/").kvs.size(), 1u);
  EXPECT_EQ(client.range_prefix("nodes/").kvs[0].lease, lease.id);

  const auto events = watcher.wait_events(2, 2s + 10s + kSlack);
  const auto expired_ms = ms_since(granted);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].type, EtcdEventType::put);
  EXPECT_EQ(events[1].type, EtcdEventType::del);
  EXPECT_EQ(events[1].kv.key, "nodes/a");
  EXPECT_TRUE(events[1].kv.value.empty());
  // Expiry is checked every 500 ms: measured 2.1-2.5 s for a TTL of 2 s.
  EXPECT_GE(expired_ms, 1500);  // not before its TTL (less a little for the grant's own round trip)
  EXPECT_LE(expired_ms, 2000 + 2000 + std::chrono::milliseconds(kSlack).count());
  std::printf("a TTL-2 lease without keepalives: its key's DELETE came %lld ms after the grant\n",
              static_cast<long long>(expired_ms));
  RecordProperty("lease_expiry_ms", std::to_string(expired_ms));

  EXPECT_TRUE(client.range_prefix("nodes/").kvs.empty());
  EXPECT_THROW(client.keepalive(lease.id), LeaseExpired);
  try {
    client.put(etcd_node_key("a"), "{}", lease.id);
    ADD_FAILURE() << "a put with an expired lease succeeded";
  } catch (const LeaseExpired& error) {
    EXPECT_EQ(error.lease(), lease.id);
  }
}

TEST(EtcdClient, KeptAliveLeaseOutlivesItsTtl) {
  SKIP_WITHOUT_ETCD();
  EtcdProcess etcd;
  EtcdClient client({etcd.endpoint()});
  const auto lease = client.grant_lease(2);
  client.put(etcd_node_key("a"), "{}", lease.id);
  // 4 s of keepalives every 500 ms: twice the TTL, and the key stays.
  for (int i = 0; i < 8; ++i) {
    std::this_thread::sleep_for(500ms);
    EXPECT_EQ(client.keepalive(lease.id), 2);
  }
  EXPECT_EQ(client.range_prefix("nodes/").kvs.size(), 1u);
}

TEST(EtcdClient, RangePrefixListsOnlyItsKeysUnderTheClientsPrefix) {
  SKIP_WITHOUT_ETCD();
  EtcdProcess etcd;
  EtcdClient client({etcd.endpoint()});
  EtcdClient other({etcd.endpoint()}, "/other/");
  const auto lease = client.grant_lease(30);
  client.put("nodes/b", "value-b");
  client.put("nodes/a", std::string("bytes\0\xff", 7), lease.id);
  client.put("coordinators/a", "c");
  client.put("nodesX", "not under nodes/");
  const std::int64_t last = other.put("nodes/z", "another prefix");

  const EtcdRange nodes = client.range_prefix("nodes/");
  EXPECT_EQ(nodes.revision, last);
  ASSERT_EQ(nodes.kvs.size(), 2u);
  EXPECT_EQ(nodes.kvs[0].key, "nodes/a");  // sorted by key
  EXPECT_EQ(nodes.kvs[0].value, std::string("bytes\0\xff", 7));
  EXPECT_EQ(nodes.kvs[0].lease, lease.id);
  EXPECT_EQ(nodes.kvs[1].key, "nodes/b");
  EXPECT_EQ(nodes.kvs[1].value, "value-b");
  EXPECT_EQ(nodes.kvs[1].lease, 0);
  EXPECT_LT(nodes.kvs[1].create_revision, nodes.kvs[0].create_revision);  // b was put first

  // A second put keeps create_revision and moves mod_revision.
  const std::int64_t again = client.put("nodes/b", "value-b2");
  const EtcdRange after = client.range_prefix("nodes/b");
  ASSERT_EQ(after.kvs.size(), 1u);
  EXPECT_EQ(after.kvs[0].create_revision, nodes.kvs[1].create_revision);
  EXPECT_EQ(after.kvs[0].mod_revision, again);
  EXPECT_EQ(after.kvs[0].version, 2);

  EXPECT_EQ(client.range_prefix("").kvs.size(), 4u);
  EXPECT_TRUE(client.range_prefix("missing/").kvs.empty());
  EXPECT_EQ(client.erase("nodes/b"), 1);
  EXPECT_EQ(client.erase("nodes/b"), 0);
  EXPECT_EQ(client.range_prefix("nodes/").kvs.size(), 1u);
}

TEST(EtcdClient, WatchSeesPutsAndDeletesInOrderAndStopsOnRequest) {
  SKIP_WITHOUT_ETCD();
  EtcdProcess etcd;
  EtcdClient client({etcd.endpoint()});
  client.put("nodes/before", "old");  // before the watch's start: not delivered
  const std::int64_t start = client.range_prefix("").revision + 1;
  Watcher watcher(client, "nodes/", start);
  ASSERT_TRUE(watcher.wait_created());
  const auto lease = client.grant_lease(30);
  client.put("nodes/a", "1");
  client.put("coordinators/a", "not watched");
  client.erase("nodes/a");
  client.put("nodes/b", "2", lease.id);
  client.revoke(lease.id);  // deletes nodes/b

  const auto events = watcher.wait_events(4);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].type, EtcdEventType::put);
  EXPECT_EQ(events[0].kv.key, "nodes/a");
  EXPECT_EQ(events[0].kv.value, "1");
  EXPECT_EQ(events[1].type, EtcdEventType::del);
  EXPECT_EQ(events[1].kv.key, "nodes/a");
  EXPECT_EQ(events[2].type, EtcdEventType::put);
  EXPECT_EQ(events[2].kv.key, "nodes/b");
  EXPECT_EQ(events[2].kv.lease, lease.id);
  EXPECT_EQ(events[3].type, EtcdEventType::del);
  EXPECT_EQ(events[3].kv.key, "nodes/b");
  for (std::size_t i = 1; i < events.size(); ++i) EXPECT_GT(events[i].kv.mod_revision, events[i - 1].kv.mod_revision);

  // A stop from this thread ends the blocked read at once, without an error.
  const auto stop_ms = watcher.stop();
  EXPECT_LT(stop_ms, std::chrono::milliseconds(kSlack));
  EXPECT_EQ(watcher.wait_returned(), nullptr);
}

TEST(EtcdClient, CompactionCancelsTheWatchAndAReListFromAFreshRevisionWorks) {
  SKIP_WITHOUT_ETCD();
  EtcdProcess etcd;
  EtcdClient client({etcd.endpoint()});
  const std::int64_t first = client.put("nodes/a", "1");
  client.put("nodes/a", "2");
  const std::int64_t compacted = client.put("nodes/a", "3");
  client.compact(compacted);

  Watcher stale(client, "nodes/", first);
  const std::exception_ptr error = stale.wait_returned();
  ASSERT_NE(error, nullptr);
  try {
    std::rethrow_exception(error);
  } catch (const WatchCompacted& compaction) {
    EXPECT_EQ(compaction.compact_revision(), compacted);
  } catch (const std::exception& other) {
    ADD_FAILURE() << "not WatchCompacted: " << other.what();
  }

  // The caller's recovery: re-list, then watch from the list's revision + 1.
  const EtcdRange listed = client.range_prefix("nodes/");
  ASSERT_EQ(listed.kvs.size(), 1u);
  EXPECT_EQ(listed.kvs[0].value, "3");
  EXPECT_GE(listed.revision, compacted);
  Watcher fresh(client, "nodes/", listed.revision + 1);
  ASSERT_TRUE(fresh.wait_created());
  client.put("nodes/a", "4");
  const auto events = fresh.wait_events(1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kv.value, "4");

  EXPECT_THROW(client.compact(compacted), EtcdError);  // already compacted
}

TEST(EtcdClient, RecoversAfterEtcdIsKilledAndRestarted) {
  SKIP_WITHOUT_ETCD();
  EtcdProcess etcd;
  EtcdClient client({etcd.endpoint()});
  const auto lease = client.grant_lease(30);
  client.put("nodes/a", "1", lease.id);
  Watcher watcher(client, "nodes/", client.range_prefix("").revision + 1);
  ASSERT_TRUE(watcher.wait_created());

  etcd.kill_hard();
  // The open watch stream breaks: the caller re-lists.
  const std::exception_ptr broken = watcher.wait_returned(kSlack + 5s);
  ASSERT_NE(broken, nullptr);
  EXPECT_THROW(std::rethrow_exception(broken), WatchInterrupted);
  EXPECT_THROW(client.keepalive(lease.id), EtcdUnavailable);
  EXPECT_THROW(client.range_prefix(""), TransportError);

  etcd.restart();
  // etcd keeps leases in its data dir and gives them a full TTL again.
  EXPECT_EQ(client.keepalive(lease.id), 30);
  const EtcdRange listed = client.range_prefix("nodes/");
  ASSERT_EQ(listed.kvs.size(), 1u);
  EXPECT_EQ(listed.kvs[0].lease, lease.id);
  Watcher again(client, "nodes/", listed.revision + 1);
  ASSERT_TRUE(again.wait_created());
  client.put("nodes/b", "2");
  EXPECT_EQ(again.wait_events(1).size(), 1u);
}

TEST(EtcdClient, FailsOverToTheNextEndpointWhenTheFirstIsDead) {
  SKIP_WITHOUT_ETCD();
  EtcdProcess etcd;
  const std::string dead = "http://127.0.0.1:" + std::to_string(testing::free_loopback_port());
  EtcdClient client({dead, etcd.endpoint()});
  EXPECT_EQ(client.current_endpoint(), dead);
  const auto lease = client.grant_lease(10);
  EXPECT_EQ(client.current_endpoint(), etcd.endpoint());  // it stays on the live one
  client.put("nodes/a", "1", lease.id);
  EXPECT_EQ(client.keepalive(lease.id), 10);

  // The watch fails over too, from its own connection.
  EtcdClient watching({dead, etcd.endpoint()});
  Watcher watcher(watching, "nodes/", 0);
  ASSERT_TRUE(watcher.wait_created());
  client.put("nodes/b", "2");
  EXPECT_EQ(watcher.wait_events(1).size(), 1u);
}

TEST(EtcdClient, NoLiveEndpointIsUnavailableWithinTheDeadline) {
  const std::string dead1 = "http://127.0.0.1:" + std::to_string(testing::free_loopback_port());
  const std::string dead2 = "http://127.0.0.1:" + std::to_string(testing::free_loopback_port());
  EtcdClientOptions options;
  options.call_timeout = 500ms;
  EtcdClient client({dead1, dead2}, "/gpucluster/", options);
  const auto start = std::chrono::steady_clock::now();
  try {
    client.grant_lease(10);
    ADD_FAILURE() << "granted without etcd";
  } catch (const EtcdUnavailable& error) {
    EXPECT_NE(std::string(error.what()).find(dead1.substr(7)), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find(dead2.substr(7)), std::string::npos) << error.what();
  }
  EXPECT_LT(ms_since(start), 500 + std::chrono::milliseconds(kSlack).count());
}

TEST(EtcdClient, BadConfigurationIsATypedErrorNamingTheField) {
  try {
    EtcdClient client({}, "/gpucluster/");
    ADD_FAILURE();
  } catch (const InputError& error) {
    EXPECT_EQ(error.field(), "etcd");
  }
  try {
    EtcdClient client({"127.0.0.1:2379"});
    ADD_FAILURE();
  } catch (const InputError& error) {
    EXPECT_EQ(error.field(), "etcd");
  }
  for (const char* prefix : {"", "/", "gpucluster/", "/gpucluster"}) {
    try {
      EtcdClient client({"http://127.0.0.1:1"}, prefix);
      ADD_FAILURE() << prefix;
    } catch (const InputError& error) {
      EXPECT_EQ(error.field(), "etcd_prefix");
      EXPECT_EQ(error.value(), prefix);
    }
  }
  EXPECT_EQ(etcd_node_key("n1"), "nodes/n1");
  EXPECT_EQ(etcd_coordinator_key("n1"), "coordinators/n1");
  EXPECT_THROW(etcd_node_key(""), InputError);
  EXPECT_THROW(etcd_coordinator_key("a/b"), InputError);
}

}  // namespace
}  // namespace gpucluster
