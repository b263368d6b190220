#pragma once
// A client for etcd's v3 JSON gateway (etcd 3.4: POST /v3/...; keys and
// values base64, int64s as JSON strings): leases, put, range, delete, watch.
// What the gateway does on each path is recorded at the top of
// etcd_client.cpp. Used by the registry (docs/design/cluster-plan.md, Part 7).
//
// Keys are relative to the client's prefix: put("nodes/a", …) writes
// "<prefix>nodes/a", and every key handed back has the prefix removed.
//
// Endpoints: one is used at a time; a transport error (refused, reset,
// timeout) or an "unavailable" answer moves to the next, within the same
// call's deadline. Threads: the unary calls are serialized by an internal
// mutex; watch_prefix() uses its own connection, so one thread may watch while
// another calls put() or keepalive(). Each watch_prefix() blocks its caller.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/http_client.hpp"
#include "gpucluster/model/errors.hpp"

namespace gpucluster {

inline constexpr std::string_view kDefaultEtcdPrefix = "/gpucluster/";

// etcd answered, with an error (a gRPC status over HTTP: a non-2xx status and
// {"error", "message", "code"}), or with a body that is not what the API says.
class EtcdError : public Error {
 public:
  EtcdError(const std::string& message, int http_status, int grpc_code)
      : Error(message), http_status_(http_status), grpc_code_(grpc_code) {}
  int http_status() const noexcept { return http_status_; }
  int grpc_code() const noexcept { return grpc_code_; }  // -1 when the body had none

 private:
  int http_status_;
  int grpc_code_;
};

// No endpoint answered within the call's deadline (each one's failure is in
// the message). Also a TransportError, so callers can treat both alike.
class EtcdUnavailable : public TransportError {
 public:
  using TransportError::TransportError;
};

// The lease is gone: it expired (its TTL ran out without a keepalive), was
// revoked, or never existed. keepalive() and put() with that lease throw it;
// the registry then grants a new lease and writes its keys again.
class LeaseExpired : public Error {
 public:
  explicit LeaseExpired(std::int64_t lease);
  std::int64_t lease() const noexcept { return lease_; }

 private:
  std::int64_t lease_;
};

// The watch cannot go on: the caller re-lists (range_prefix) and watches again
// from the new header revision + 1.
class WatchInterrupted : public Error {
 public:
  using Error::Error;
};
// The revisions the watch needed were compacted away: etcd canceled it.
class WatchCompacted : public WatchInterrupted {
 public:
  explicit WatchCompacted(std::int64_t compact_revision);
  std::int64_t compact_revision() const noexcept { return compact_revision_; }

 private:
  std::int64_t compact_revision_;
};

struct EtcdKeyValue {
  std::string key;    // without the client's prefix
  std::string value;  // decoded bytes; empty in a DELETE event
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t version = 0;
  std::int64_t lease = 0;  // 0: no lease
};

struct EtcdRange {
  std::vector<EtcdKeyValue> kvs;  // sorted by key (etcd's order)
  std::int64_t revision = 0;      // the store's revision the range was read at
};

enum class EtcdEventType : std::uint8_t { put, del };

struct EtcdEvent {
  EtcdEventType type = EtcdEventType::put;
  EtcdKeyValue kv;
};

// One message of a watch: events (empty for the "created" message that comes
// first, and for progress notifications) and the header's revision.
struct EtcdWatchBatch {
  bool created = false;  // the watch is registered: events from start_revision on follow
  std::int64_t revision = 0;
  std::vector<EtcdEvent> events;
};

struct EtcdClientOptions {
  std::chrono::milliseconds call_timeout{2000};  // per call, across all endpoints tried
  // The longest silence on a watch stream before it counts as dead. The watch
  // asks for progress notifications, which etcd sends every 10 min by default
  // (--experimental-watch-progress-notify-interval), so this is longer.
  std::chrono::milliseconds watch_idle_timeout{std::chrono::minutes{11}};
  std::size_t max_message_bytes = 16 * 1024 * 1024;  // one answer or one watch message
};

// Throws InputError naming `field` unless every endpoint is http://HOST:PORT
// and the list is not empty; for the prefix: not empty, starts and ends with '/'.
class EtcdClient {
 public:
  EtcdClient(std::vector<std::string> endpoints, std::string prefix = std::string(kDefaultEtcdPrefix),
             EtcdClientOptions options = {});
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  // etcd raises a TTL below its minimum (2 s with the default heartbeat and
  // election timeout) to that minimum: Lease::ttl_seconds is what it granted.
  struct Lease {
    std::int64_t id = 0;
    std::int64_t ttl_seconds = 0;  // as granted
  };
  Lease grant_lease(std::int64_t ttl_seconds);
  // Renews the lease; returns its TTL again (seconds). Throws LeaseExpired when
  // etcd answers without a TTL (expired, revoked or unknown lease).
  std::int64_t keepalive(std::int64_t lease);
  // Revokes the lease, deleting its keys at once. False when it was already gone.
  bool revoke(std::int64_t lease);

  // Returns the store's revision after the put. lease 0: the key outlives any
  // lease. Throws LeaseExpired when the lease is gone.
  std::int64_t put(std::string_view key, std::string_view value, std::int64_t lease = 0);
  // Every key that starts with prefix ("nodes/"; "" = all under the client's prefix).
  EtcdRange range_prefix(std::string_view prefix);
  // Returns how many keys were deleted (0 or 1).
  std::int64_t erase(std::string_view key);
  // Compacts the store's history up to `revision` (tests, and operators).
  void compact(std::int64_t revision);

  // Watches every key under prefix from start_revision (0: from now), calling
  // on_batch on this thread for each message, the first with created = true.
  // Returns when stop fires (from any thread). Throws WatchCompacted when
  // start_revision is compacted, WatchInterrupted when the stream breaks or
  // etcd sends an error or cancels the watch, EtcdUnavailable when no endpoint
  // accepts the watch within call_timeout; exceptions from on_batch propagate.
  // In every error case the caller re-lists and watches again.
  void watch_prefix(std::string_view prefix, std::int64_t start_revision,
                    const std::function<void(const EtcdWatchBatch&)>& on_batch, std::stop_token stop);

  const std::string& prefix() const noexcept { return prefix_; }
  // The endpoint the next call tries first.
  std::string current_endpoint() const;

 private:
  struct Answer {
    int status = 0;
    std::string body;
  };
  // POSTs to the current endpoint, rotating on transport errors until the
  // deadline; returns whatever etcd answered (any status).
  Answer post(std::string_view path, const std::string& body);
  std::string full_key(std::string_view key) const;

  std::vector<HttpUrl> endpoints_;
  std::string prefix_;
  EtcdClientOptions options_;
  mutable std::mutex mutex_;  // guards current_ and clients_
  std::size_t current_ = 0;
  std::vector<std::unique_ptr<HttpClient>> clients_;
};

// The registry's keys (relative to the prefix). Throw InputError unless the id
// is non-empty and has no '/'.
std::string etcd_node_key(std::string_view node_id);
std::string etcd_coordinator_key(std::string_view node_id);

}  // namespace gpucluster
