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
// back to the reports), and the watches re-list when they come back, after a
// compaction or when a stream breaks.
#include <chrono>
#include <functional>
#include <memory>
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
};

// Throws InputError naming --etcd, --etcd-prefix or --etcd-ttl.
void validate_etcd_registry_options(const EtcdRegistryOptions& options);

struct EtcdRegistryHooks {
  // nodes/<id> was deleted (a coordinator's watch): that node is down.
  std::function<void(const std::string& node_id)> node_lease_lost;
  // The coordinators' URLs now in etcd, this node's own left out (every node).
  std::function<void(const std::vector<std::string>& urls)> coordinators;
};

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
