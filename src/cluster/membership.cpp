#include "cluster/membership.hpp"

#include <algorithm>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace gpucluster {

MembershipError::MembershipError(Kind kind, const std::string& message, const std::string& field,
                                 const std::string& value, const std::string& rule)
    : InputError(message, field, value, rule), kind_(kind) {}

const char* to_string(HostRemoval reason) noexcept {
  switch (reason) {
    case HostRemoval::removed: return "removed";
    case HostRemoval::expired: return "expired";
  }
  return "unknown";
}

namespace {

MembershipLimits checked(MembershipLimits limits) {
  if (limits.max_hosts == 0) throw InputError("max_hosts", "0", "must be > 0");
  if (limits.max_devices_per_host == 0) throw InputError("max_devices_per_host", "0", "must be > 0");
  return limits;
}

}  // namespace

ClusterMembership::ClusterMembership(Manager& manager, MembershipLimits limits)
    : manager_(manager), limits_(checked(limits)) {}

void ClusterMembership::register_device(const DeviceInfo& info) {
  const DeviceKey& key = info.key;
  try {
    const DeviceState existing = manager_.device(key);
    if (existing.info->backend != info.backend) {
      throw MembershipError(MembershipError::Kind::conflict,
                            fmt::format("device {} is sampled by this agent's {} backend; a remote registration "
                                        "cannot replace it",
                                        key.str(), existing.info->backend),
                            "device_id", key.local_id, "a remote device cannot replace a local one");
    }
  } catch (const UnknownDeviceError&) {
    // New device: fine.
  }
  std::unique_lock lock(mutex_);
  const auto hosts_entry = hosts_by_device_.find(key.local_id);
  const bool known =
      hosts_entry != hosts_by_device_.end() &&
      std::find(hosts_entry->second.begin(), hosts_entry->second.end(), key.host) != hosts_entry->second.end();
  if (!known) {
    const auto per_host = devices_by_host_.find(key.host);
    if (per_host == devices_by_host_.end() && devices_by_host_.size() >= limits_.max_hosts) {
      const std::string rule = fmt::format("at most {} remote hosts", limits_.max_hosts);
      throw MembershipError(MembershipError::Kind::host_limit, fmt::format("hostname: {} ({})", rule, key.host),
                            "hostname", key.host, rule);
    }
    if (per_host != devices_by_host_.end() && per_host->second.size() >= limits_.max_devices_per_host) {
      const std::string rule = fmt::format("at most {} devices per host", limits_.max_devices_per_host);
      throw MembershipError(MembershipError::Kind::device_limit, fmt::format("device_id: {} ({})", rule, key.local_id),
                            "device_id", key.local_id, rule);
    }
  }
  manager_.register_device(info);  // registers or updates; throws (changing nothing) on a bad device
  if (!known) {
    hosts_by_device_[key.local_id].push_back(key.host);
    devices_by_host_[key.host].push_back(key.local_id);
  }
}

DeviceKey ClusterMembership::resolve(const std::string& device_id, const std::optional<std::string>& hostname) const {
  DeviceKey key{hostname.value_or(""), device_id};
  {
    std::shared_lock lock(mutex_);
    const auto found = hosts_by_device_.find(key.local_id);
    if (found != hosts_by_device_.end()) {
      const std::vector<std::string>& hosts = found->second;
      if (key.host.empty() && hosts.size() == 1) return DeviceKey{hosts.front(), key.local_id};
      if (key.host.empty()) {
        const std::string rule =
            fmt::format("device {} is registered on {} hosts: name the host", key.local_id, hosts.size());
        throw MembershipError(MembershipError::Kind::ambiguous, fmt::format("hostname: {} ((absent))", rule),
                              "hostname", "(absent)", rule);
      }
      if (std::find(hosts.begin(), hosts.end(), key.host) != hosts.end()) return key;
    }
  }
  if (!key.host.empty()) {
    std::optional<DeviceState> local;
    try {
      local = manager_.device(key);
    } catch (const UnknownDeviceError&) {
      // Neither remote nor local: unknown below.
    }
    if (local) {
      throw MembershipError(MembershipError::Kind::conflict,
                            fmt::format("device {} is sampled by this agent's {} backend, not fed by the protocol",
                                        key.str(), local->info->backend),
                            "device_id", key.local_id, "a local device is not fed by messages");
    }
  }
  throw MembershipError(MembershipError::Kind::unknown_device,
                        fmt::format("device {} is not registered: send a device_registration first",
                                    key.host.empty() ? key.local_id : key.str()),
                        "device_id", key.local_id, "must be registered first");
}

std::vector<DeviceKey> ClusterMembership::remove_host(const std::string& host) {
  return leave(host, HostRemoval::removed);
}

std::vector<DeviceKey> ClusterMembership::expire_host(const std::string& host) {
  return leave(host, HostRemoval::expired);
}

std::vector<DeviceKey> ClusterMembership::leave(const std::string& host, HostRemoval reason) {
  HostLeft left{host, reason, {}};
  {
    std::unique_lock lock(mutex_);
    const auto entry = devices_by_host_.find(host);
    if (entry == devices_by_host_.end()) return {};
    const std::vector<std::string> local_ids = std::move(entry->second);
    devices_by_host_.erase(entry);
    for (const std::string& local_id : local_ids) {
      const auto hosts = hosts_by_device_.find(local_id);
      if (hosts != hosts_by_device_.end()) {
        std::erase(hosts->second, host);
        if (hosts->second.empty()) hosts_by_device_.erase(hosts);
      }
      left.devices.push_back(DeviceKey{host, local_id});
    }
    // Under the lock: a registration for this host waits until its old devices are gone.
    for (const DeviceKey& key : left.devices) manager_.unregister_device(key);
  }
  std::sort(left.devices.begin(), left.devices.end());
  std::vector<HostLeftHook> hooks;
  {
    std::lock_guard lock(hooks_mutex_);
    hooks = hooks_;
  }
  for (const HostLeftHook& hook : hooks) {
    try {
      hook(left);
    } catch (const std::exception& e) {
      spdlog::error("a host-left hook failed for host {} ({}): {}", host, to_string(reason), e.what());
    }
  }
  return std::move(left.devices);
}

bool ClusterMembership::unregister_device(const DeviceKey& key) {
  std::unique_lock lock(mutex_);
  const auto per_host = devices_by_host_.find(key.host);
  if (per_host == devices_by_host_.end()) return false;
  if (std::erase(per_host->second, key.local_id) == 0) return false;
  if (per_host->second.empty()) devices_by_host_.erase(per_host);
  if (const auto hosts = hosts_by_device_.find(key.local_id); hosts != hosts_by_device_.end()) {
    std::erase(hosts->second, key.host);
    if (hosts->second.empty()) hosts_by_device_.erase(hosts);
  }
  manager_.unregister_device(key);
  return true;
}

void ClusterMembership::add_host_left_hook(HostLeftHook hook) {
  std::lock_guard lock(hooks_mutex_);
  hooks_.push_back(std::move(hook));
}

std::vector<std::string> ClusterMembership::hosts() const {
  std::shared_lock lock(mutex_);
  std::vector<std::string> out;
  out.reserve(devices_by_host_.size());
  for (const auto& [host, devices] : devices_by_host_) out.push_back(host);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<DeviceKey> ClusterMembership::devices_of(const std::string& host) const {
  std::vector<DeviceKey> out;
  {
    std::shared_lock lock(mutex_);
    const auto entry = devices_by_host_.find(host);
    if (entry == devices_by_host_.end()) return out;
    for (const std::string& local_id : entry->second) out.push_back(DeviceKey{host, local_id});
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::size_t ClusterMembership::host_count() const {
  std::shared_lock lock(mutex_);
  return devices_by_host_.size();
}

}  // namespace gpucluster
