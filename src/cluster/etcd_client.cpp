// What etcd 3.4.23 (Debian bookworm's etcd-server, one member, defaults)
// answers on the gRPC gateway, verified with curl and by etcd_client_test:
//
// - Every path takes POST with a JSON body. int64 fields (ID, TTL, revision,
//   lease, create_revision, ...) come back as JSON strings; numbers and strings
//   are both accepted in requests. Fields with a zero value are left out of
//   answers (an empty range has no "kvs" and no "count"; a deleterange of a
//   missing key has no "deleted"). Every answer has "header": {"cluster_id",
//   "member_id", "revision", "raft_term"}.
// - Errors: a non-2xx status with {"error": M, "message": M, "code": gRPC
//   code}, sometimes chunked with an HTTP trailer (Grpc-Trailer-Content-Type).
//   Malformed JSON → 400 code 3. Unknown lease (put with "lease", revoke) →
//   404 code 5 "etcdserver: requested lease not found". Compaction at or below
//   the compacted revision → 400 code 11 "mvcc: required revision has been
//   compacted"; above the current revision → 400 code 11 "... is a future
//   revision".
// - /v3/lease/grant {"TTL": N, "ID": 0} → {"ID": "7587…", "TTL": "N"}. A TTL
//   below the minimum (2 s with the default 100 ms heartbeat and 1000 ms
//   election timeout), 1, 0 or negative, is raised to 2: the answer says "2".
// - /v3/lease/keepalive {"ID"} → 200, chunked, one message, then the body
//   ends: {"result": {"header", "ID", "TTL": "N"}}. For an expired, revoked or
//   never granted lease it is still 200, {"result": {"header", "ID"}} without
//   "TTL" (never 404).
// - /v3/lease/revoke {"ID"} → 200 {"header"}, and the lease's keys are deleted
//   (watchers get DELETE events). A second revoke → 404 code 5.
// - /v3/kv/put {"key", "value", "lease"} → {"header"}; header.revision is the
//   put's revision.
// - /v3/kv/range {"key": P, "range_end": P+1} → {"header", "kvs": [{"key",
//   "create_revision", "mod_revision", "version", "value", "lease"}],
//   "count"}; "lease" is absent for keys without one.
// - /v3/kv/deleterange {"key"} → {"header", "deleted": "1"}.
// - /v3/kv/compaction {"revision", "physical": true} → {"header"}.
// - /v3/watch {"create_request": {"key", "range_end", "start_revision",
//   "progress_notify"}} → 200, chunked, one JSON object per line, never ending
//   by itself: first {"result": {"header", "created": true}}, then
//   {"result": {"header", "events": [...]}}. A PUT event is {"kv": {...}}
//   with no "type" (PUT is enum value 0); a DELETE is {"type": "DELETE", "kv":
//   {"key", "mod_revision"}}. A key whose lease expires gets a DELETE like any
//   other. A start_revision at or below the compacted revision gives
//   "created", then {"result": {"header" (no revision), "canceled": true,
//   "compact_revision": "C"}}, and then the stream stays open, silent: the
//   client must close it. A body without create_request gets nothing at all.
// - Expiry: the key of a TTL-2 lease without keepalives got its DELETE on a
//   watch 2.09-2.45 s after the grant (6 runs of etcd_client_test; the lessor
//   checks every 500 ms); curl polling /v3/lease/timetolive saw TTL -1 after
//   2.5-3.5 s. Never earlier than the TTL in the test runs.
// - kill -9 and restart on the same data dir: a lease granted before keeps
//   working (keepalive answers the full TTL again: leases get a fresh TTL when
//   a leader is elected); /health gives {"health":"true"} about 0.2 s after
//   start.
#include "cluster/etcd_client.hpp"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cluster/base64.hpp"

namespace gpucluster {

namespace {

using json = nlohmann::json;

// An int64 that etcd writes as a string ("123") or a number; absent → 0.
std::int64_t int64_field(const json& object, const char* field, std::string_view where) {
  const auto found = object.find(field);
  if (found == object.end() || found->is_null()) return 0;
  if (found->is_number_integer()) return found->get<std::int64_t>();
  if (found->is_string()) {
    const std::string& text = found->get_ref<const std::string&>();
    std::int64_t value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error == std::errc{} && end == text.data() + text.size()) return value;
  }
  throw EtcdError(fmt::format("etcd {}: field {} is {}, not an int64", where, field, found->dump().substr(0, 64)), 200,
                  -1);
}

std::string string_field(const json& object, const char* field) {
  const auto found = object.find(field);
  return found != object.end() && found->is_string() ? found->get<std::string>() : std::string();
}

json parse_body(std::string_view body, std::string_view where) {
  json parsed = json::parse(body, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    throw EtcdError(fmt::format("etcd {}: the answer is not a JSON object: {}", where, body.substr(0, 200)), 200, -1);
  }
  return parsed;
}

// The first key after every key that starts with `key` (etcd's range_end for
// a prefix): the last byte below 0xff incremented, the bytes after it dropped.
std::string prefix_end(std::string key) {
  while (!key.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(key.back());
    if (last < 0xff) {
      ++last;
      return key;
    }
    key.pop_back();
  }
  return std::string(1, '\0');  // every key
}

constexpr int kGrpcNotFound = 5;

}  // namespace

LeaseExpired::LeaseExpired(std::int64_t lease)
    : Error(fmt::format("etcd lease {} has expired (or was revoked): grant a new one", lease)), lease_(lease) {}

WatchCompacted::WatchCompacted(std::int64_t compact_revision)
    : WatchInterrupted(fmt::format("etcd compacted the watched revisions (compact_revision {}): re-list and watch from "
                                   "the new revision",
                                   compact_revision)),
      compact_revision_(compact_revision) {}

std::string etcd_node_key(std::string_view node_id) {
  if (node_id.empty() || node_id.find('/') != std::string_view::npos) {
    throw InputError("node_id", std::string(node_id.substr(0, 128)), "must be non-empty and without '/'");
  }
  return "nodes/" + std::string(node_id);
}

std::string etcd_coordinator_key(std::string_view node_id) {
  if (node_id.empty() || node_id.find('/') != std::string_view::npos) {
    throw InputError("node_id", std::string(node_id.substr(0, 128)), "must be non-empty and without '/'");
  }
  return "coordinators/" + std::string(node_id);
}

EtcdClient::EtcdClient(std::vector<std::string> endpoints, std::string prefix, EtcdClientOptions options)
    : prefix_(std::move(prefix)), options_(options) {
  if (endpoints.empty()) throw InputError("etcd", "", "needs at least one endpoint http://HOST:PORT");
  for (const auto& endpoint : endpoints) endpoints_.push_back(parse_http_url(endpoint, "etcd"));
  if (prefix_.size() < 2 || prefix_.front() != '/' || prefix_.back() != '/') {
    throw InputError("etcd_prefix", prefix_.substr(0, 128), "must start and end with '/' (e.g. /gpucluster/)");
  }
  if (options_.call_timeout.count() <= 0) {
    throw InputError("call_timeout_ms", std::to_string(options_.call_timeout.count()), "must be positive");
  }
  for (const auto& url : endpoints_) clients_.push_back(std::make_unique<HttpClient>(url, options_.max_message_bytes));
}

EtcdClient::~EtcdClient() = default;

std::string EtcdClient::current_endpoint() const {
  std::lock_guard lock(mutex_);
  return endpoints_[current_].str();
}

std::string EtcdClient::full_key(std::string_view key) const {
  return prefix_ + std::string(key);
}

EtcdClient::Answer EtcdClient::post(std::string_view path, const std::string& body) {
  std::lock_guard lock(mutex_);
  const auto deadline = std::chrono::steady_clock::now() + options_.call_timeout;
  std::string failures;
  for (std::size_t tried = 0; tried < endpoints_.size(); ++tried) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    // A silent endpoint must leave time for the others.
    const auto attempt = std::max(left / static_cast<long>(endpoints_.size() - tried), std::chrono::milliseconds{1});
    HttpClient& client = *clients_[current_];
    try {
      const HttpClientResponse response = client.request("POST", path, body, std::nullopt, attempt);
      if (response.status != 503) return Answer{response.status, response.body};
      failures += fmt::format("; {}: 503 {}", client.url().str(), response.body.substr(0, 200));
    } catch (const TransportError& error) {
      failures += fmt::format("; {}", error.what());
    }
    current_ = (current_ + 1) % endpoints_.size();
  }
  throw EtcdUnavailable(
      fmt::format("etcd {}: no endpoint answered within {} ms{}", path, options_.call_timeout.count(), failures));
}

namespace {

// The answer's JSON, or EtcdError carrying etcd's error text and code.
json checked(int status, const std::string& body, std::string_view path) {
  if (status >= 200 && status < 300) return parse_body(body, path);
  const json error = json::parse(body, nullptr, false);
  int code = -1;
  std::string message = body.substr(0, 200);
  if (error.is_object()) {
    if (const auto found = error.find("code"); found != error.end() && found->is_number_integer()) {
      code = found->get<int>();
    }
    if (const std::string text = string_field(error, "message"); !text.empty()) message = text;
  }
  throw EtcdError(fmt::format("etcd {} answered {}: {} (gRPC code {})", path, status, message, code), status, code);
}

bool lease_not_found(const EtcdError& error) {
  return error.grpc_code() == kGrpcNotFound &&
         std::string_view(error.what()).find("lease not found") != std::string_view::npos;
}

}  // namespace

EtcdClient::Lease EtcdClient::grant_lease(std::int64_t ttl_seconds) {
  if (ttl_seconds < 1) throw InputError("ttl_seconds", std::to_string(ttl_seconds), "must be at least 1");
  constexpr std::string_view kPath = "/v3/lease/grant";
  const Answer answer = post(kPath, json{{"TTL", ttl_seconds}, {"ID", 0}}.dump());
  const json body = checked(answer.status, answer.body, kPath);
  if (const std::string error = string_field(body, "error"); !error.empty()) {
    throw EtcdError(fmt::format("etcd {}: {}", kPath, error), answer.status, -1);
  }
  Lease lease{int64_field(body, "ID", kPath), int64_field(body, "TTL", kPath)};
  if (lease.id == 0 || lease.ttl_seconds <= 0) {
    throw EtcdError(fmt::format("etcd {}: the answer has no lease: {}", kPath, answer.body.substr(0, 200)),
                    answer.status, -1);
  }
  return lease;
}

std::int64_t EtcdClient::keepalive(std::int64_t lease) {
  constexpr std::string_view kPath = "/v3/lease/keepalive";
  const Answer answer = post(kPath, json{{"ID", std::to_string(lease)}}.dump());
  try {
    const json body = checked(answer.status, answer.body, kPath);
    if (const auto error = body.find("error"); error != body.end()) {
      throw EtcdError(fmt::format("etcd {}: {}", kPath, error->dump().substr(0, 200)), answer.status, -1);
    }
    const auto result = body.find("result");
    if (result == body.end() || !result->is_object()) {
      throw EtcdError(fmt::format("etcd {}: the answer has no result: {}", kPath, answer.body.substr(0, 200)),
                      answer.status, -1);
    }
    const std::int64_t ttl = int64_field(*result, "TTL", kPath);
    if (ttl <= 0) throw LeaseExpired(lease);  // etcd leaves TTL out for a lease it does not have
    return ttl;
  } catch (const EtcdError& error) {
    if (lease_not_found(error)) throw LeaseExpired(lease);
    throw;
  }
}

bool EtcdClient::revoke(std::int64_t lease) {
  constexpr std::string_view kPath = "/v3/lease/revoke";
  const Answer answer = post(kPath, json{{"ID", std::to_string(lease)}}.dump());
  try {
    checked(answer.status, answer.body, kPath);
    return true;
  } catch (const EtcdError& error) {
    if (lease_not_found(error)) return false;
    throw;
  }
}

std::int64_t EtcdClient::put(std::string_view key, std::string_view value, std::int64_t lease) {
  constexpr std::string_view kPath = "/v3/kv/put";
  json request{{"key", base64_encode(full_key(key))}, {"value", base64_encode(value)}};
  if (lease != 0) request["lease"] = std::to_string(lease);
  const Answer answer = post(kPath, request.dump());
  try {
    const json body = checked(answer.status, answer.body, kPath);
    return int64_field(body.value("header", json::object()), "revision", kPath);
  } catch (const EtcdError& error) {
    if (lease != 0 && lease_not_found(error)) throw LeaseExpired(lease);
    throw;
  }
}

namespace {

EtcdKeyValue decode_kv(const json& kv, const std::string& prefix, std::string_view where) {
  if (!kv.is_object()) throw EtcdError(fmt::format("etcd {}: a kv is not an object", where), 200, -1);
  EtcdKeyValue out;
  std::string key = base64_decode(string_field(kv, "key"), "kv.key");
  if (key.rfind(prefix, 0) != 0) {
    throw EtcdError(fmt::format("etcd {}: key {} is outside the prefix {}", where, key.substr(0, 128), prefix), 200,
                    -1);
  }
  out.key = key.substr(prefix.size());
  out.value = base64_decode(string_field(kv, "value"), "kv.value");
  out.create_revision = int64_field(kv, "create_revision", where);
  out.mod_revision = int64_field(kv, "mod_revision", where);
  out.version = int64_field(kv, "version", where);
  out.lease = int64_field(kv, "lease", where);
  return out;
}

}  // namespace

EtcdRange EtcdClient::range_prefix(std::string_view prefix) {
  constexpr std::string_view kPath = "/v3/kv/range";
  const std::string from = full_key(prefix);
  const Answer answer =
      post(kPath, json{{"key", base64_encode(from)}, {"range_end", base64_encode(prefix_end(from))}}.dump());
  const json body = checked(answer.status, answer.body, kPath);
  EtcdRange out;
  out.revision = int64_field(body.value("header", json::object()), "revision", kPath);
  if (const auto kvs = body.find("kvs"); kvs != body.end() && kvs->is_array()) {
    out.kvs.reserve(kvs->size());
    for (const auto& kv : *kvs) out.kvs.push_back(decode_kv(kv, prefix_, kPath));
  }
  return out;
}

std::int64_t EtcdClient::erase(std::string_view key) {
  constexpr std::string_view kPath = "/v3/kv/deleterange";
  const Answer answer = post(kPath, json{{"key", base64_encode(full_key(key))}}.dump());
  return int64_field(checked(answer.status, answer.body, kPath), "deleted", kPath);
}

void EtcdClient::compact(std::int64_t revision) {
  constexpr std::string_view kPath = "/v3/kv/compaction";
  // physical: answer only once the compaction is applied, so a watch from an
  // older revision is surely canceled afterwards.
  const Answer answer = post(kPath, json{{"revision", std::to_string(revision)}, {"physical", true}}.dump());
  checked(answer.status, answer.body, kPath);
}

void EtcdClient::watch_prefix(std::string_view prefix, std::int64_t start_revision,
                              const std::function<void(const EtcdWatchBatch&)>& on_batch, std::stop_token stop) {
  constexpr std::string_view kPath = "/v3/watch";
  const std::string from = full_key(prefix);
  json create{{"key", base64_encode(from)}, {"range_end", base64_encode(prefix_end(from))}, {"progress_notify", true}};
  if (start_revision > 0) create["start_revision"] = std::to_string(start_revision);
  const std::string request = json{{"create_request", create}}.dump();

  const auto deadline = std::chrono::steady_clock::now() + options_.call_timeout;
  std::string failures;
  for (std::size_t tried = 0; tried < endpoints_.size(); ++tried) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    std::size_t index = 0;
    {
      std::lock_guard lock(mutex_);
      index = current_;
    }
    HttpClient client(endpoints_[index], options_.max_message_bytes);
    HttpStreamOptions stream_options;
    stream_options.header_timeout =
        std::max(left / static_cast<long>(endpoints_.size() - tried), std::chrono::milliseconds{1});
    stream_options.idle_timeout = options_.watch_idle_timeout;
    stream_options.framing = StreamFraming::json_objects;
    stream_options.max_message_bytes = options_.max_message_bytes;
    bool answered = false;  // a message came: errors from now on end the watch, not this endpoint
    // One watch message → on_batch; a message that is not what etcd documents
    // ends the watch like a broken stream (the caller re-lists).
    const auto decode = [&](std::string_view message) {
      const json parsed = parse_body(message, kPath);
      if (const auto error = parsed.find("error"); error != parsed.end()) {
        throw WatchInterrupted(fmt::format("etcd {} sent an error: {}", kPath, error->dump().substr(0, 300)));
      }
      const auto result = parsed.find("result");
      if (result == parsed.end() || !result->is_object()) {
        throw WatchInterrupted(fmt::format("etcd {}: a message without result: {}", kPath, message.substr(0, 200)));
      }
      if (result->value("canceled", false)) {
        if (const std::int64_t compacted = int64_field(*result, "compact_revision", kPath); compacted > 0) {
          throw WatchCompacted(compacted);
        }
        throw WatchInterrupted(fmt::format("etcd canceled the watch: {}", string_field(*result, "cancel_reason")));
      }
      EtcdWatchBatch batch;
      batch.created = result->value("created", false);
      batch.revision = int64_field(result->value("header", json::object()), "revision", kPath);
      if (const auto events = result->find("events"); events != result->end() && events->is_array()) {
        batch.events.reserve(events->size());
        for (const auto& event : *events) {
          EtcdEvent out;
          out.type = string_field(event, "type") == "DELETE" ? EtcdEventType::del : EtcdEventType::put;
          out.kv = decode_kv(event.value("kv", json::object()), prefix_, kPath);
          batch.events.push_back(std::move(out));
        }
      }
      return batch;
    };
    const auto on_message = [&](std::string_view message) {
      answered = true;
      EtcdWatchBatch batch;
      try {
        batch = decode(message);
      } catch (const EtcdError& error) {
        throw WatchInterrupted(error.what());
      } catch (const InputError& error) {
        throw WatchInterrupted(fmt::format("etcd {}: {}", kPath, error.what()));
      }
      on_batch(batch);
      return true;
    };
    HttpStreamResult result;
    try {
      result = client.stream("POST", kPath, request, std::nullopt, stream_options, on_message, stop);
    } catch (const TransportError& error) {
      if (answered) throw WatchInterrupted(fmt::format("etcd watch stream broke: {}", error.what()));
      failures += fmt::format("; {}", error.what());
      std::lock_guard lock(mutex_);
      if (current_ == index) current_ = (current_ + 1) % endpoints_.size();
      continue;
    } catch (const StreamFramingError& error) {
      throw WatchInterrupted(fmt::format("etcd watch stream: {}", error.what()));
    }
    if (result.end == HttpStreamEnd::stop_requested) return;
    if (result.status < 200 || result.status >= 300) {
      throw WatchInterrupted(fmt::format("etcd {} answered {}: {}", kPath, result.status, result.body.substr(0, 300)));
    }
    throw WatchInterrupted(fmt::format("etcd {} closed the watch stream", endpoints_[index].str()));
  }
  if (stop.stop_requested()) return;
  throw EtcdUnavailable(fmt::format("etcd {}: no endpoint accepted the watch within {} ms{}", kPath,
                                    options_.call_timeout.count(), failures));
}

}  // namespace gpucluster
