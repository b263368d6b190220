#pragma once
// The etcd tier (`gpucluster agent --etcd URL[,URL...]`, docs/cluster.md
// "etcd"): every node holds a lease (TTL --etcd-ttl, kept alive every TTL/3)
// on a small key with its identity and address, nodes/<id>; coordinators also
// on coordinators/<id>. Coordinators list and watch nodes/ and mark a node
// down as soon as its key is deleted (its lease expired: the process is gone
// or frozen), even if its last report was recent; every node lists and
// watches coordinators/ and reports to each coordinator it finds there. No
// per-second telemetry goes through etcd: reports go to the coordinators.
//
// While etcd cannot be reached nothing is marked down for it (liveness falls
// back to the reports). The watches list again (a re-list) when a stream
// breaks or closes, on an error or a compaction cancel, and every
// relist_every (30 s) in case a stream died silently; a node present before a
// re-list and absent from it lost its lease. An agent reports to the
// coordinators only once its own key is in etcd, so a coordinator usually
// knows a node's key (and its create_revision) before its first report.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gpucluster/cluster/identity.hpp"

namespace gpucluster {

struct EtcdRegistryOptions {
  std::vector<std::string> endpoints;  // http://HOST:PORT (InputError naming --etcd)
  std::string prefix = "/gpucluster/";
  std::chrono::seconds ttl{10};  // at least 2 s (etcd's minimum)
  std::string url;               // where this node's API is reached (the coordinators' report URL)
  bool coordinator = false;      // also register under coordinators/ and watch nodes/
  // The safety re-list (internal: the hidden --etcd-relist-every shortens it in tests).
  std::chrono::milliseconds relist_every{std::chrono::seconds{30}};
};

// Throws InputError naming --etcd, --etcd-prefix or --etcd-ttl.
void validate_etcd_registry_options(const EtcdRegistryOptions& options);

struct EtcdRegistryHooks {
  // nodes/<id> was deleted (a coordinator's watch): that node is down.
  std::function<void(const std::string& node_id)> node_lease_lost;
  // nodes/<id> is there (a PUT, or found by a list), with the name its value
  // gives ("" if none) and the key's create_revision (a coordinator's watch).
  std::function<void(const std::string& node_id, const std::string& name, std::int64_t create_revision)>
      node_lease_present;
  // The coordinators' URLs now in etcd, this node's own left out (every node).
  std::function<void(const std::vector<std::string>& urls)> coordinators;
};

struct EtcdRange;

// One nodes/ key as a list or a PUT shows it.
struct EtcdNodeKey {
  std::string id;
  std::string name;  // from the value's "name"; "" when the value is not the registry's JSON
  std::int64_t create_revision = 0;
};
// The nodes/ keys of a list of nodes/ (keys without an id are skipped).
std::vector<EtcdNodeKey> etcd_node_keys(const EtcdRange& range);
// The ids in `before` that `now` no longer has: they lost their lease while
// the watch was not looking.
std::vector<std::string> etcd_ids_gone(const std::set<std::string>& before, const std::vector<EtcdNodeKey>& now);

class EtcdRegistry {
 public:
  EtcdRegistry(EtcdRegistryOptions options, NodeIdentity self, EtcdRegistryHooks hooks);
  ~EtcdRegistry();  // stop(false)
  EtcdRegistry(const EtcdRegistry&) = delete;
  EtcdRegistry& operator=(const EtcdRegistry&) = delete;

  void start();
  // revoke: delete this node's keys now (a clean shutdown: coordinators see it
  // leave at once instead of after the TTL).
  void stop(bool revoke);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpucluster
