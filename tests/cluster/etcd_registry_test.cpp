// The registry's pure parts (src/cluster/etcd_registry.cpp): what a list of
// nodes/ says, the re-list diff (ids present before and absent now lost their
// lease while the watch was not looking) and the option checks. The registry
// against a real etcd is tests/cluster/etcd_cluster_test.cpp.
#include "cluster/etcd_registry.hpp"

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cluster/etcd_client.hpp"

namespace gpucluster {
namespace {

EtcdKeyValue kv(const std::string& key, const std::string& value, std::int64_t create_revision) {
  EtcdKeyValue out;
  out.key = key;
  out.value = value;
  out.create_revision = create_revision;
  out.mod_revision = create_revision;
  return out;
}

TEST(EtcdRegistry, NodeKeysOfAListCarryIdNameAndCreateRevision) {
  EtcdRange range;
  range.kvs = {kv("nodes/a", R"({"id": "a", "name": "gpu-a", "incarnation": 3})", 7), kv("nodes/b", "not json", 9),
               kv("nodes/", "{}", 11)};
  const std::vector<EtcdNodeKey> keys = etcd_node_keys(range);
  ASSERT_EQ(keys.size(), 2U);  // "nodes/" has no id
  EXPECT_EQ(keys[0].id, "a");
  EXPECT_EQ(keys[0].name, "gpu-a");
  EXPECT_EQ(keys[0].create_revision, 7);
  EXPECT_EQ(keys[1].id, "b");
  EXPECT_EQ(keys[1].name, "");  // a value that is not the registry's JSON: no name, still a key
}

TEST(EtcdRegistry, AReListLosesExactlyTheIdsThatAreNoLongerListed) {
  const std::vector<EtcdNodeKey> now{{"b", "gpu-b", 2}, {"d", "gpu-d", 5}};
  EXPECT_EQ(etcd_ids_gone({"a", "b", "c"}, now), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(etcd_ids_gone({}, now), std::vector<std::string>{});
  EXPECT_EQ(etcd_ids_gone({"b", "d"}, now), std::vector<std::string>{});
  EXPECT_EQ(etcd_ids_gone({"a"}, {}), std::vector<std::string>{"a"});  // an etcd that lost its data
}

TEST(EtcdRegistry, OptionsNameTheFlagTheyBreak) {
  EtcdRegistryOptions options;
  options.endpoints = {"http://127.0.0.1:2379"};
  EXPECT_NO_THROW(validate_etcd_registry_options(options));
  EXPECT_EQ(options.relist_every, std::chrono::seconds{30});  // docs/cluster.md "etcd"
  const auto field_of = [](const EtcdRegistryOptions& broken) {
    try {
      validate_etcd_registry_options(broken);
    } catch (const InputError& e) {
      return std::string(e.field());
    }
    return std::string("accepted");
  };
  EtcdRegistryOptions ttl = options;
  ttl.ttl = std::chrono::seconds{1};
  EXPECT_EQ(field_of(ttl), "--etcd-ttl");
  EtcdRegistryOptions relist = options;
  relist.relist_every = std::chrono::milliseconds{10};
  EXPECT_EQ(field_of(relist), "--etcd-relist-every");
  EtcdRegistryOptions prefix = options;
  prefix.prefix = "gpucluster";
  EXPECT_EQ(field_of(prefix), "--etcd-prefix");
}

}  // namespace
}  // namespace gpucluster
