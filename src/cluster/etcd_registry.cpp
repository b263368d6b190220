#include "cluster/etcd_registry.hpp"

#include <algorithm>
#include <condition_variable>
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

}  // namespace

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
  std::int64_t lease = 0;  // the lease this node's keys hold (0: none)
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
  void hold_lease(std::stop_token stop);
  // List, then watch from the list's revision; again after any interruption.
  void list_and_watch(std::stop_token stop, std::string_view prefix,
                      const std::function<void(const EtcdRange&)>& on_list,
                      const std::function<void(const EtcdEvent&)>& on_event);
};

void EtcdRegistry::Impl::hold_lease(std::stop_token stop) {
  EtcdClient etcd(options.endpoints, options.prefix);
  steady_clock::time_point renewed = steady_clock::now();
  std::int64_t held = 0;
  while (!stop.stop_requested()) {
    try {
      if (held == 0) {
        held = etcd.grant_lease(options.ttl.count()).id;
        etcd.put(std::string(kNodes) + self.id, identity_json(), held);
        if (options.coordinator) etcd.put(std::string(kCoordinators) + self.id, identity_json(), held);
        spdlog::info("etcd: node {} registered under {} (lease {:x}, TTL {} s)", self.name, options.prefix, held,
                     options.ttl.count());
        std::lock_guard lock(lease_mutex);
        lease = held;
      } else {
        etcd.keepalive(held);
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
      etcd.watch_prefix(
          prefix, range.revision + 1,
          [&](const EtcdWatchBatch& batch) {
            for (const EtcdEvent& event : batch.events) on_event(event);
          },
          stop);
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
      const auto lost = [&](const std::string& id) {
        if (id.empty() || id == self.self.id) return;
        spdlog::info("etcd: the lease of node {} is gone", id);
        self.hooks.node_lease_lost(id);
      };
      self.list_and_watch(
          stop, kNodes,
          [&](const EtcdRange& range) {
            std::set<std::string> now;
            for (const EtcdKeyValue& kv : range.kvs) now.insert(id_of(kv.key, kNodes));
            for (const std::string& id : present) {
              if (!now.contains(id)) lost(id);
            }
            present = std::move(now);
          },
          [&](const EtcdEvent& event) {
            const std::string id = id_of(event.kv.key, kNodes);
            if (event.type == EtcdEventType::del) {
              present.erase(id);
              lost(id);
            } else {
              present.insert(id);
            }
          });
    });
  }
  if (self.hooks.coordinators) {
    self.threads.emplace_back([&self](std::stop_token stop) {
      std::map<std::string, std::string> urls;  // coordinator id → its URL
      const auto publish = [&] {
        std::vector<std::string> list;
        for (const auto& [id, url] : urls) {
          if (id != self.self.id && !url.empty()) list.push_back(url);
        }
        self.hooks.coordinators(list);
      };
      const auto url_of = [](const std::string& value) {
        const nlohmann::json document = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
        const auto url = document.is_object() ? document.find("url") : document.end();
        return document.is_object() && url != document.end() && url->is_string() ? url->get<std::string>()
                                                                                 : std::string{};
      };
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
