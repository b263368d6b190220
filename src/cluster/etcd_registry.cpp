#include "cluster/etcd_registry.hpp"

#include <algorithm>
#include <condition_variable>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <stop_token>
#include <thread>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "cluster/etcd_client.hpp"
#include "cluster/http_client.hpp"

namespace gpucluster {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

void validate_etcd_registry_options(const EtcdRegistryOptions& options) {
  if (options.endpoints.empty()) throw InputError("--etcd", "(empty)", "must name at least one http://HOST:PORT");
  for (const std::string& endpoint : options.endpoints) parse_http_url(endpoint, "--etcd");
  if (options.prefix.empty() || options.prefix.front() != '/' || options.prefix.back() != '/') {
    throw InputError("--etcd-prefix", options.prefix, "must start and end with /, e.g. /gpucluster/");
  }
  if (options.ttl < std::chrono::seconds{2} || options.ttl > std::chrono::hours{1}) {
    throw InputError("--etcd-ttl", fmt::format("{} s", options.ttl.count()),
                     "must be from 2 s (etcd's shortest lease) to 1 h");
  }
  if (options.relist_every < milliseconds{100}) {
    throw InputError("--etcd-relist-every", fmt::format("{} ms", options.relist_every.count()),
                     "must be at least 100 ms");
  }
}

namespace {

constexpr std::string_view kNodes = "nodes/";
constexpr std::string_view kCoordinators = "coordinators/";
constexpr auto kRetry = std::chrono::seconds{1};
constexpr auto kErrorLogEvery = std::chrono::seconds{30};

// "nodes/<id>" → "<id>".
std::string id_of(const std::string& key, std::string_view prefix) {
  return key.rfind(prefix, 0) == 0 ? key.substr(prefix.size()) : std::string{};
}

// A string field of the registry's JSON value ("" when absent or not JSON).
std::string value_field(const std::string& value, const char* field) {
  const nlohmann::json document = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (!document.is_object()) return {};
  const auto found = document.find(field);
  return found != document.end() && found->is_string() ? found->get<std::string>() : std::string{};
}

EtcdNodeKey node_key_of(const EtcdKeyValue& kv) {
  return EtcdNodeKey{id_of(kv.key, kNodes), value_field(kv.value, "name"), kv.create_revision};
}

}  // namespace

std::vector<EtcdNodeKey> etcd_node_keys(const EtcdRange& range) {
  std::vector<EtcdNodeKey> keys;
  for (const EtcdKeyValue& kv : range.kvs) {
    EtcdNodeKey key = node_key_of(kv);
    if (!key.id.empty()) keys.push_back(std::move(key));
  }
  return keys;
}

std::vector<std::string> etcd_ids_gone(const std::set<std::string>& before, const std::vector<EtcdNodeKey>& now) {
  std::set<std::string> listed;
  for (const EtcdNodeKey& key : now) listed.insert(key.id);
  std::vector<std::string> gone;
  std::set_difference(before.begin(), before.end(), listed.begin(), listed.end(), std::back_inserter(gone));
  return gone;
}

struct EtcdRegistry::Impl {
  Impl(EtcdRegistryOptions registry_options, NodeIdentity identity, EtcdRegistryHooks registry_hooks)
      : options(std::move(registry_options)), self(std::move(identity)), hooks(std::move(registry_hooks)) {
    validate_etcd_registry_options(options);
  }

  const EtcdRegistryOptions options;
  const NodeIdentity self;
  const EtcdRegistryHooks hooks;

  std::mutex wake_mutex;
  std::condition_variable_any wake;
  std::mutex lease_mutex;
  std::int64_t lease = 0;     // the lease this node's keys hold (0: none)
  bool registered = false;    // this node's keys were put once (guarded by wake_mutex)
  bool nodes_listed = false;  // a coordinator's first list of nodes/ is done (guarded by wake_mutex)
  std::vector<std::jthread> threads;
  std::mutex log_mutex;  // the lease and watch threads all log
  steady_clock::time_point last_error_log{};

  std::string identity_json() const {
    return nlohmann::json{{"id", self.id},
                          {"name", self.name},
                          {"incarnation", self.incarnation},
                          {"url", options.url},
                          {"coordinator", options.coordinator}}
        .dump();
  }
  void log_error(const std::string& what) {
    std::lock_guard lock(log_mutex);
    const auto now = steady_clock::now();
    if (last_error_log != steady_clock::time_point{} && now - last_error_log < kErrorLogEvery) {
      spdlog::debug("etcd: {}", what);
      return;
    }
    last_error_log = now;
    spdlog::warn("etcd: {} (said at most every 30 s; liveness falls back to reports meanwhile)", what);
  }
  // Sleeps `duration` or until stop; false when stopped.
  bool pause(std::stop_token stop, std::chrono::nanoseconds duration) {
    std::unique_lock lock(wake_mutex);
    wake.wait_for(lock, stop, duration, [] { return false; });
    return !stop.stop_requested();
  }
  // Waits until this node's keys are in etcd; false when stopped first.
  bool wait_registered(std::stop_token stop) {
    std::unique_lock lock(wake_mutex);
    return wake.wait(lock, stop, [this] { return registered; });
  }
  void set_flag(bool& flag) {
    {
      std::lock_guard lock(wake_mutex);
      flag = true;
    }
    wake.notify_all();
  }
  bool watches_nodes() const { return options.coordinator && static_cast<bool>(hooks.node_lease_lost); }
  void hold_lease(std::stop_token stop);
  // List, then watch from the list's revision; again after any interruption.
  void list_and_watch(std::stop_token stop, std::string_view prefix,
                      const std::function<void(const EtcdRange&)>& on_list,
                      const std::function<void(const EtcdEvent&)>& on_event);
};

void EtcdRegistry::Impl::hold_lease(std::stop_token stop) {
  EtcdClient etcd(options.endpoints, options.prefix);
  // A coordinator announces itself once it knows the nodes' keys, so the
  // first reports it gets find their keys (and create_revisions) there.
  if (watches_nodes()) {
    std::unique_lock lock(wake_mutex);
    if (!wake.wait(lock, stop, [this] { return nodes_listed; })) return;
  }
  steady_clock::time_point renewed = steady_clock::now();
  steady_clock::time_point checked = renewed;
  std::int64_t held = 0;
  while (!stop.stop_requested()) {
    try {
      if (held == 0) {
        // Held only once both keys are written: a put that fails is retried with a new lease.
        const std::int64_t granted = etcd.grant_lease(options.ttl.count()).id;
        etcd.put(std::string(kNodes) + self.id, identity_json(), granted);
        if (options.coordinator) etcd.put(std::string(kCoordinators) + self.id, identity_json(), granted);
        held = granted;
        spdlog::info("etcd: node {} registered under {} (lease {:x}, TTL {} s)", self.name, options.prefix, held,
                     options.ttl.count());
        {
          std::lock_guard lock(lease_mutex);
          lease = held;
        }
        set_flag(registered);
        checked = steady_clock::now();
      } else {
        etcd.keepalive(held);
        // A key deleted by hand while the lease lives would keep this node
        // down on the coordinators: look for it every relist_every.
        if (steady_clock::now() - checked >= options.relist_every) {
          checked = steady_clock::now();
          const EtcdRange mine = etcd.range_prefix(std::string(kNodes) + self.id);
          const bool there = std::any_of(mine.kvs.begin(), mine.kvs.end(), [&](const EtcdKeyValue& kv) {
            return kv.key == std::string(kNodes) + self.id && kv.lease == held;
          });
          if (!there) {
            spdlog::warn("etcd: the key of node {} is gone while its lease lives; putting it again", self.name);
            etcd.put(std::string(kNodes) + self.id, identity_json(), held);
            if (options.coordinator) etcd.put(std::string(kCoordinators) + self.id, identity_json(), held);
          }
        }
      }
      renewed = steady_clock::now();
      if (!pause(stop, options.ttl / 3)) break;
    } catch (const LeaseExpired&) {
      spdlog::warn("etcd: the lease of node {} expired (etcd was away, or this process was stopped); registering again",
                   self.name);
      held = 0;
    } catch (const std::exception& e) {
      log_error(e.what());
      // Past the TTL the lease is gone on etcd's side: register anew once it answers.
      if (steady_clock::now() - renewed > options.ttl) held = 0;
      if (!pause(stop, kRetry)) break;
    }
  }
}

void EtcdRegistry::Impl::list_and_watch(std::stop_token stop, std::string_view prefix,
                                        const std::function<void(const EtcdRange&)>& on_list,
                                        const std::function<void(const EtcdEvent&)>& on_event) {
  EtcdClient etcd(options.endpoints, options.prefix);
  while (!stop.stop_requested()) {
    try {
      const EtcdRange range = etcd.range_prefix(prefix);
      on_list(range);
      // The watch runs until stop, or until relist_every passes: then the
      // loop lists again (the safety re-list, against a stream that died
      // without a word).
      std::stop_source cycle;
      const std::stop_callback forward(stop, [&cycle] { cycle.request_stop(); });
      std::jthread timer([&cycle, period = options.relist_every](std::stop_token timer_stop) {
        std::mutex mutex;
        std::condition_variable_any wait;
        std::unique_lock lock(mutex);
        if (!wait.wait_for(lock, timer_stop, period, [] { return false; }) && !timer_stop.stop_requested()) {
          cycle.request_stop();
        }
      });
      etcd.watch_prefix(
          prefix, range.revision + 1,
          [&](const EtcdWatchBatch& batch) {
            for (const EtcdEvent& event : batch.events) on_event(event);
          },
          cycle.get_token());
      if (!stop.stop_requested()) spdlog::debug("etcd: safety re-list of {}", prefix);
    } catch (const WatchInterrupted& e) {
      spdlog::info("etcd: watch of {} interrupted ({}); listing again", prefix, e.what());
      if (!pause(stop, milliseconds{100})) break;
    } catch (const std::exception& e) {
      log_error(e.what());
      if (!pause(stop, kRetry)) break;
    }
  }
}

EtcdRegistry::EtcdRegistry(EtcdRegistryOptions options, NodeIdentity self, EtcdRegistryHooks hooks)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(self), std::move(hooks))) {}

EtcdRegistry::~EtcdRegistry() {
  stop(false);
}

void EtcdRegistry::start() {
  Impl& self = *impl_;
  if (!self.threads.empty()) return;
  self.threads.emplace_back([&self](std::stop_token stop) { self.hold_lease(stop); });
  if (self.options.coordinator && self.hooks.node_lease_lost) {
    // Node ids with a key now; one that disappears (a DELETE, or absent from a re-list) lost its lease.
    self.threads.emplace_back([&self](std::stop_token stop) {
      std::set<std::string> present;
      const auto lost = [&](const std::string& id, const char* how) {
        if (id.empty() || id == self.self.id) return;
        spdlog::info("etcd: the lease of node {} is gone ({})", id, how);
        self.hooks.node_lease_lost(id);
      };
      const auto found = [&](const EtcdNodeKey& key) {
        if (self.hooks.node_lease_present) self.hooks.node_lease_present(key.id, key.name, key.create_revision);
      };
      self.list_and_watch(
          stop, kNodes,
          [&](const EtcdRange& range) {
            const std::vector<EtcdNodeKey> keys = etcd_node_keys(range);
            for (const std::string& id : etcd_ids_gone(present, keys)) lost(id, "absent from a re-list");
            present.clear();
            for (const EtcdNodeKey& key : keys) {
              present.insert(key.id);
              found(key);
            }
            self.set_flag(self.nodes_listed);
          },
          [&](const EtcdEvent& event) {
            const std::string id = id_of(event.kv.key, kNodes);
            if (id.empty()) return;
            if (event.type == EtcdEventType::del) {
              present.erase(id);
              lost(id, "its key was deleted");
            } else {
              present.insert(id);
              found(node_key_of(event.kv));
            }
          });
    });
  }
  if (self.hooks.coordinators) {
    self.threads.emplace_back([&self](std::stop_token stop) {
      // Report only once this node's key is there: a coordinator then knows
      // the key (and its create_revision) before the first report.
      if (!self.wait_registered(stop)) return;
      std::map<std::string, std::string> urls;  // coordinator id → its URL
      const auto publish = [&] {
        std::vector<std::string> list;
        for (const auto& [id, url] : urls) {
          if (id != self.self.id && !url.empty()) list.push_back(url);
        }
        self.hooks.coordinators(list);
      };
      const auto url_of = [](const std::string& value) { return value_field(value, "url"); };
      self.list_and_watch(
          stop, kCoordinators,
          [&](const EtcdRange& range) {
            urls.clear();
            for (const EtcdKeyValue& kv : range.kvs) urls[id_of(kv.key, kCoordinators)] = url_of(kv.value);
            publish();
          },
          [&](const EtcdEvent& event) {
            const std::string id = id_of(event.kv.key, kCoordinators);
            if (event.type == EtcdEventType::del) {
              urls.erase(id);
            } else {
              urls[id] = url_of(event.kv.value);
            }
            publish();
          });
    });
  }
}

void EtcdRegistry::stop(bool revoke) {
  Impl& self = *impl_;
  for (std::jthread& thread : self.threads) thread.request_stop();
  self.threads.clear();  // joins
  std::int64_t held = 0;
  {
    std::lock_guard lock(self.lease_mutex);
    held = std::exchange(self.lease, 0);
  }
  if (!revoke || held == 0) return;
  try {
    EtcdClient(self.options.endpoints, self.options.prefix).revoke(held);
    spdlog::info("etcd: node {} left (its lease revoked)", self.self.name);
  } catch (const std::exception& e) {
    spdlog::warn("etcd: could not revoke the lease on leaving ({}); it expires within {} s", e.what(),
                 self.options.ttl.count());
  }
}

}  // namespace gpucluster
