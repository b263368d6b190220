// ClusterMembership (src/cluster/membership.cpp): limits, the ambiguity rule,
// conflicts with local devices, host removal and its hooks, concurrency.

#include "cluster/membership.hpp"

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace gpucluster {
namespace {

DeviceInfo remote_info(const std::string& host, const std::string& id) {
  DeviceInfo info;
  info.key = DeviceKey{host, id};
  info.name = "GPU " + id;
  info.kind = DeviceKind::cuda;
  info.backend = "remote";
  info.memory_total_bytes = 1000;
  return info;
}

ManagerConfig config_on(const std::string& host) {
  ManagerConfig config;
  config.host = host;
  return config;
}

MembershipError::Kind kind_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const MembershipError& e) {
    return e.kind();
  }
  ADD_FAILURE() << "no MembershipError";
  return MembershipError::Kind::unknown_device;
}

TEST(Membership, ZeroLimitsAreRefused) {
  Manager manager(config_on("home"));
  EXPECT_THROW(ClusterMembership(manager, MembershipLimits{0, 1}), InputError);
  EXPECT_THROW(ClusterMembership(manager, MembershipLimits{1, 0}), InputError);
}

TEST(Membership, RegisteredDeviceIsInTheManagerAndResolvesByBareId) {
  Manager manager(config_on("home"));
  ClusterMembership membership(manager);
  membership.register_device(remote_info("node-a", "cuda:0"));
  EXPECT_EQ(manager.device(DeviceKey{"node-a", "cuda:0"}).info->backend, "remote");
  EXPECT_EQ(membership.resolve("cuda:0", std::nullopt), (DeviceKey{"node-a", "cuda:0"}));
  EXPECT_EQ(membership.resolve("cuda:0", std::string("node-a")), (DeviceKey{"node-a", "cuda:0"}));
  EXPECT_EQ(membership.hosts(), std::vector<std::string>{"node-a"});
  EXPECT_EQ(membership.devices_of("node-a"), std::vector<DeviceKey>{(DeviceKey{"node-a", "cuda:0"})});
  // Registering again updates, and counts once.
  membership.register_device(remote_info("node-a", "cuda:0"));
  EXPECT_EQ(membership.devices_of("node-a").size(), 1U);
}

TEST(Membership, BareIdOnSeveralHostsIsAmbiguousNamedHostIsNot) {
  Manager manager(config_on("home"));
  ClusterMembership membership(manager);
  membership.register_device(remote_info("node-a", "cuda:0"));
  membership.register_device(remote_info("node-b", "cuda:0"));
  try {
    membership.resolve("cuda:0", std::nullopt);
    FAIL() << "no error";
  } catch (const MembershipError& e) {
    EXPECT_EQ(e.kind(), MembershipError::Kind::ambiguous);
    EXPECT_EQ(e.field(), "hostname");
    EXPECT_EQ(e.value(), "(absent)");
    EXPECT_EQ(e.rule(), "device cuda:0 is registered on 2 hosts: name the host");
  }
  EXPECT_EQ(membership.resolve("cuda:0", std::string("node-b")), (DeviceKey{"node-b", "cuda:0"}));
}

TEST(Membership, UnknownAndLocalDevicesAreRefused) {
  Manager manager(config_on("home"));
  DeviceInfo local = remote_info("home", "cuda:0");
  local.backend = "nvml";
  manager.register_device(local);
  ClusterMembership membership(manager);
  EXPECT_EQ(kind_of([&] { membership.resolve("cuda:9", std::nullopt); }), MembershipError::Kind::unknown_device);
  EXPECT_EQ(kind_of([&] { membership.resolve("cuda:0", std::string("node-a")); }),
            MembershipError::Kind::unknown_device);
  EXPECT_EQ(kind_of([&] { membership.resolve("cuda:0", std::string("home")); }), MembershipError::Kind::conflict);
  // A remote registration cannot replace the local device.
  EXPECT_EQ(kind_of([&] { membership.register_device(remote_info("home", "cuda:0")); }),
            MembershipError::Kind::conflict);
  EXPECT_EQ(manager.device(DeviceKey{"home", "cuda:0"}).info->backend, "nvml");
  EXPECT_EQ(membership.host_count(), 0U);
}

TEST(Membership, HostLimitRefusesANewHostAndChangesNothing) {
  Manager manager(config_on("home"));
  ClusterMembership membership(manager, MembershipLimits{2, 4});
  membership.register_device(remote_info("node-a", "cuda:0"));
  membership.register_device(remote_info("node-b", "cuda:0"));
  try {
    membership.register_device(remote_info("node-c", "cuda:7"));
    FAIL() << "no error";
  } catch (const MembershipError& e) {
    EXPECT_EQ(e.kind(), MembershipError::Kind::host_limit);
    EXPECT_EQ(e.field(), "hostname");
    EXPECT_EQ(e.value(), "node-c");
    EXPECT_EQ(e.rule(), "at most 2 remote hosts");
  }
  EXPECT_THROW(manager.device(DeviceKey{"node-c", "cuda:7"}), UnknownDeviceError);
  EXPECT_EQ(kind_of([&] { membership.resolve("cuda:7", std::nullopt); }), MembershipError::Kind::unknown_device);
  // A known host may still add devices.
  membership.register_device(remote_info("node-a", "cuda:1"));
  EXPECT_EQ(membership.host_count(), 2U);
}

TEST(Membership, DeviceLimitPerHost) {
  Manager manager(config_on("home"));
  ClusterMembership membership(manager, MembershipLimits{4, 2});
  membership.register_device(remote_info("node-a", "cuda:0"));
  membership.register_device(remote_info("node-a", "cuda:1"));
  try {
    membership.register_device(remote_info("node-a", "cuda:2"));
    FAIL() << "no error";
  } catch (const MembershipError& e) {
    EXPECT_EQ(e.kind(), MembershipError::Kind::device_limit);
    EXPECT_EQ(e.field(), "device_id");
    EXPECT_EQ(e.value(), "cuda:2");
    EXPECT_EQ(e.rule(), "at most 2 devices per host");
  }
  EXPECT_THROW(manager.device(DeviceKey{"node-a", "cuda:2"}), UnknownDeviceError);
  // Updating a registered device is not a new one; another host has its own budget.
  membership.register_device(remote_info("node-a", "cuda:1"));
  membership.register_device(remote_info("node-b", "cuda:2"));
  EXPECT_EQ(membership.devices_of("node-a").size(), 2U);
}

TEST(Membership, RemoveHostUnregistersItsDevicesFreesItsSlotAndRunsTheHooks) {
  Manager manager(config_on("home"));
  ClusterMembership membership(manager, MembershipLimits{1, 4});
  std::vector<HostLeft> seen;
  membership.add_host_left_hook([&](const HostLeft& left) { seen.push_back(left); });
  membership.register_device(remote_info("node-a", "cuda:1"));
  membership.register_device(remote_info("node-a", "cuda:0"));
  EXPECT_THROW(membership.register_device(remote_info("node-b", "cuda:0")), MembershipError);

  const std::vector<DeviceKey> removed = membership.remove_host("node-a");
  const std::vector<DeviceKey> expected{{"node-a", "cuda:0"}, {"node-a", "cuda:1"}};
  EXPECT_EQ(removed, expected);
  EXPECT_TRUE(manager.devices().empty());
  EXPECT_EQ(membership.host_count(), 0U);
  EXPECT_EQ(kind_of([&] { membership.resolve("cuda:0", std::nullopt); }), MembershipError::Kind::unknown_device);
  ASSERT_EQ(seen.size(), 1U);
  EXPECT_EQ(seen[0].host, "node-a");
  EXPECT_EQ(seen[0].reason, HostRemoval::removed);
  EXPECT_EQ(seen[0].devices, expected);

  // The slot is free again: another host may join; a removed host may come back.
  membership.register_device(remote_info("node-b", "cuda:0"));
  EXPECT_EQ(membership.resolve("cuda:0", std::nullopt), (DeviceKey{"node-b", "cuda:0"}));
  EXPECT_EQ(membership.expire_host("node-b").size(), 1U);
  ASSERT_EQ(seen.size(), 2U);
  EXPECT_EQ(seen[1].reason, HostRemoval::expired);
  membership.register_device(remote_info("node-a", "cuda:0"));
  EXPECT_EQ(membership.hosts(), std::vector<std::string>{"node-a"});
}

TEST(Membership, RemovingAnUnknownHostDoesNothing) {
  Manager manager(config_on("home"));
  ClusterMembership membership(manager);
  bool called = false;
  membership.add_host_left_hook([&](const HostLeft&) { called = true; });
  membership.register_device(remote_info("node-a", "cuda:0"));
  EXPECT_TRUE(membership.remove_host("node-z").empty());
  EXPECT_FALSE(called);
  EXPECT_EQ(manager.devices().size(), 1U);
}

TEST(Membership, RemovingOneHostKeepsTheOthersDevicesOfTheSameId) {
  Manager manager(config_on("home"));
  ClusterMembership membership(manager);
  membership.register_device(remote_info("node-a", "cuda:0"));
  membership.register_device(remote_info("node-b", "cuda:0"));
  membership.remove_host("node-a");
  // No longer ambiguous: the bare id finds the remaining host.
  EXPECT_EQ(membership.resolve("cuda:0", std::nullopt), (DeviceKey{"node-b", "cuda:0"}));
  EXPECT_EQ(manager.devices().size(), 1U);
}

TEST(Membership, AFailingHookDoesNotStopTheOthers) {
  Manager manager(config_on("home"));
  ClusterMembership membership(manager);
  int second_calls = 0;
  membership.add_host_left_hook([](const HostLeft&) { throw Error("hook failed"); });
  membership.add_host_left_hook([&](const HostLeft&) { ++second_calls; });
  membership.register_device(remote_info("node-a", "cuda:0"));
  EXPECT_EQ(membership.remove_host("node-a").size(), 1U);
  EXPECT_EQ(second_calls, 1);
}

// Registrations, resolutions and removals from several threads at once (run
// under ThreadSanitizer in the tsan preset): the limits hold and the manager
// and the membership agree at the end.
TEST(Membership, ConcurrentRegistrationResolutionAndRemoval) {
  Manager manager(config_on("home"));
  constexpr std::size_t kHosts = 4;
  constexpr std::size_t kDevicesPerHost = 3;
  ClusterMembership membership(manager, MembershipLimits{kHosts, kDevicesPerHost});
  std::atomic<std::size_t> hooks_run{0};
  membership.add_host_left_hook([&](const HostLeft&) { hooks_run.fetch_add(1); });
  constexpr int kRounds = 200;
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        const std::string host = fmt::format("node-{}", (t + static_cast<std::size_t>(round)) % (kHosts + 2));
        const std::string id = fmt::format("cuda:{}", static_cast<std::size_t>(round) % (kDevicesPerHost + 1));
        try {
          membership.register_device(remote_info(host, id));
        } catch (const MembershipError& e) {
          EXPECT_TRUE(e.kind() == MembershipError::Kind::host_limit || e.kind() == MembershipError::Kind::device_limit)
              << e.what();
        }
        try {
          (void)membership.resolve(id, host);
        } catch (const MembershipError&) {
          // Refused or removed meanwhile.
        }
        if (round % 7 == static_cast<int>(t)) membership.remove_host(host);
        EXPECT_LE(membership.host_count(), kHosts);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::size_t registered = 0;
  for (const std::string& host : membership.hosts()) {
    const std::vector<DeviceKey> devices = membership.devices_of(host);
    EXPECT_LE(devices.size(), kDevicesPerHost);
    for (const DeviceKey& key : devices) EXPECT_NO_THROW(manager.device(key)) << key.str();
    registered += devices.size();
  }
  EXPECT_EQ(manager.devices().size(), registered);
  EXPECT_GT(hooks_run.load(), 0U);
}

}  // namespace
}  // namespace gpucluster
