#pragma once
// Cluster membership: the remote hosts whose devices this node holds (fed
// today by the seed's protocol, docs/protocol.md), their devices, the limits
// that keep that state bounded, how a message's (device id, hostname) finds
// its device, and the hooks that run when a host leaves (removed or expired).
// The agent's HTTP server (src/agent/server.cpp) is one caller; the multi-host
// coordinator will be another (it decides when a host expires and calls
// remove_host).
//
// Thread-safe: every member may be called from several threads at once.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "gpucluster/model/device.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/node/manager.hpp"

namespace gpucluster {

struct MembershipLimits {
  std::size_t max_hosts = 1024;            // distinct remote hosts
  std::size_t max_devices_per_host = 256;  // remote devices of one host
};

// A membership rule a message broke. field() is the message's own name of the
// part at fault ("hostname" or "device_id"); kind() tells callers how to answer.
class MembershipError : public InputError {
 public:
  enum class Kind : std::uint8_t {
    ambiguous,       // a bare device id registered on several hosts: the host must be named
    unknown_device,  // neither registered remotely nor sampled here
    conflict,        // the device is sampled by one of this node's own backends
    host_limit,      // MembershipLimits::max_hosts reached
    device_limit,    // MembershipLimits::max_devices_per_host reached for this host
  };
  MembershipError(Kind kind, const std::string& message, const std::string& field, const std::string& value,
                  const std::string& rule);
  Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

// Why a host left.
enum class HostRemoval : std::uint8_t {
  removed,  // a caller asked (remove_host)
  expired,  // its liveness ran out (expire_host)
};
const char* to_string(HostRemoval reason) noexcept;

// What a host-left hook is told: the host, why, and the devices it had (now
// unregistered from the manager).
struct HostLeft {
  std::string host;
  HostRemoval reason = HostRemoval::removed;
  std::vector<DeviceKey> devices;
};

class ClusterMembership {
 public:
  using HostLeftHook = std::function<void(const HostLeft&)>;

  // Throws InputError when a limit is 0. The manager must outlive this object.
  ClusterMembership(Manager& manager, MembershipLimits limits = {});
  ClusterMembership(const ClusterMembership&) = delete;
  ClusterMembership& operator=(const ClusterMembership&) = delete;

  const MembershipLimits& limits() const noexcept { return limits_; }

  // Registers a remote device (or updates the static info of one already
  // registered) under info.key.host. Throws MembershipError: conflict when one
  // of this node's backends samples that key, host_limit for a new host past
  // max_hosts, device_limit for a new device past max_devices_per_host; and
  // what Manager::register_device throws (validation, memory budget). A
  // refused registration changes nothing.
  void register_device(const DeviceInfo& info);

  // The device a message names: `device_id` on `hostname`, or, without a
  // hostname, on the one host that registered that id. Throws MembershipError:
  // ambiguous (several hosts, no hostname), conflict (the named device is
  // sampled by this node's backends), unknown_device (not registered).
  DeviceKey resolve(const std::string& device_id, const std::optional<std::string>& hostname) const;

  // Unregisters every device of `host` from the manager and forgets the host
  // (freeing its slot under max_hosts); then runs the host-left hooks, outside
  // the membership's lock. Returns the devices removed (empty, and no hook
  // runs, when the host is not a member).
  std::vector<DeviceKey> remove_host(const std::string& host);
  // remove_host for a host whose liveness ran out (the hooks see `expired`).
  std::vector<DeviceKey> expire_host(const std::string& host);

  // Unregisters one remote device (no hook runs; a host left without devices
  // is no longer a member). False when it was not registered here.
  bool unregister_device(const DeviceKey& key);

  // Hooks run, in the order added, after a host has left; they must not call
  // add_host_left_hook. An exception from a hook is logged and the others run.
  void add_host_left_hook(HostLeftHook hook);

  std::vector<std::string> hosts() const;                            // sorted
  std::vector<DeviceKey> devices_of(const std::string& host) const;  // sorted; empty for a non-member
  std::size_t host_count() const;

 private:
  std::vector<DeviceKey> leave(const std::string& host, HostRemoval reason);

  Manager& manager_;
  const MembershipLimits limits_;

  mutable std::shared_mutex mutex_;
  // device id → the hosts that registered it, so a message naming only
  // "cuda:0" (as the seed's clients send) finds its host.
  std::unordered_map<std::string, std::vector<std::string>> hosts_by_device_;
  // host → its devices' local ids.
  std::unordered_map<std::string, std::vector<std::string>> devices_by_host_;

  std::mutex hooks_mutex_;
  std::vector<HostLeftHook> hooks_;
};

}  // namespace gpucluster
