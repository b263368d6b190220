#include "gpucluster/agent/server.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/beast/core/string.hpp>

#include "agent/http_server.hpp"
#include "cluster/http_client.hpp"
#include "cluster/membership.hpp"
#include "gpucluster/export/exposition.hpp"
#include "gpucluster/export/json.hpp"
#include "gpucluster/wire/report.hpp"
#include "wire/json_reader.hpp"

namespace gpucluster::agent {
namespace {

using nlohmann::json;

constexpr const char* kJsonContentType = "application/json";
constexpr std::string_view kRequestBody = "request body";  // names a /v1/select or /v1/plan body in errors

// An error answer: HTTP status plus the body {"error": {code, message, field, …}}.
struct HttpError : Error {
  HttpError(int status_code, std::string error_code, const std::string& message, std::string error_field = {},
            std::string error_value = {}, std::string error_rule = {})
      : Error(message),
        status(status_code),
        code(std::move(error_code)),
        field(std::move(error_field)),
        value(std::move(error_value)),
        rule(std::move(error_rule)) {}
  int status;
  std::string code;
  std::string field;
  std::string value;
  std::string rule;
};

HttpError bad_request(const std::string& field, const std::string& value, const std::string& rule) {
  return {400, "invalid_request", fmt::format("{}: {} ({})", field, rule, value), field, value, rule};
}

HttpError unprocessable(const std::string& field, const std::string& value, const std::string& rule) {
  return {422, "invalid_value", fmt::format("{}: {} ({})", field, rule, value), field, value, rule};
}

void write_error(HttpResponse& res, int status, std::string_view code, std::string_view message,
                 std::string_view field = {}, std::string_view value = {}, std::string_view rule = {}) {
  json error{{"code", code}, {"message", message}, {"field", field.empty() ? json(nullptr) : json(field)}};
  if (!value.empty()) error["value"] = value;
  if (!rule.empty()) error["rule"] = rule;
  res.status = status;
  res.content_type = kJsonContentType;
  res.body = json{{"error", std::move(error)}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

void write_json(HttpResponse& res, int status, const json& body) {
  res.status = status;
  res.content_type = kJsonContentType;
  res.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
}

json push_json(const PushLinkStatus& link);  // GET /v1/push, /healthz "push"

// Constant-time comparison: the time taken does not depend on where the
// strings first differ (only on the presented length).
bool same_secret(std::string_view presented, std::string_view expected) {
  unsigned char difference = presented.size() == expected.size() ? 0 : 1;
  for (std::size_t i = 0; i < presented.size(); ++i) {
    const char other = expected.empty() ? '\0' : expected[i % expected.size()];
    difference |= static_cast<unsigned char>(presented[i] ^ other);
  }
  return difference == 0;
}

// Whole number ≥ 0 that fits std::uint64_t (integral floats such as 8e9 allowed).
std::uint64_t get_count(const json& value, const std::string& field) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer()) throw unprocessable(field, value.dump(), "must be ≥ 0");
  if (value.is_number_float()) {
    const double number = value.get<double>();
    if (!std::isfinite(number) || number < 0 || number != std::floor(number) || number >= 18446744073709551616.0) {
      throw unprocessable(field, value.dump(), "must be a whole number from 0 to 2^64-1");
    }
    return static_cast<std::uint64_t>(number);
  }
  throw bad_request(field, value.dump(), "must be a number");
}

std::size_t parse_query_count(const std::string& text, const std::string& field) {
  std::size_t number = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (text.empty() || error != std::errc{} || end != text.data() + text.size()) {
    throw bad_request(field, text, "must be a whole number ≥ 0");
  }
  return number;
}

const json& require_object(const json& document, const std::string& what) {
  if (!document.is_object()) throw bad_request(what, document.type_name(), "must be a JSON object");
  return document;
}

void reject_unknown_keys(const json& object, std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : object.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      throw bad_request(key, "present", "unknown field");
    }
  }
}

PlanRequest plan_request_from_json(const json& body) {
  require_object(body, "body");
  reject_unknown_keys(body, {"items", "strategy", "weights", "max_per_device", "layers", "layer_bytes"});
  PlanRequest request;
  if (const auto it = body.find("strategy"); it != body.end()) {
    if (!it->is_string()) throw bad_request("strategy", it->dump(), "must be a string");
    request.strategy = plan_strategy(it->get<std::string>());  // PlanError: 422
  }
  if (const auto it = body.find("items"); it != body.end()) request.items = get_count(*it, "items");
  if (const auto it = body.find("max_per_device"); it != body.end() && !it->is_null()) {
    request.max_per_device = get_count(*it, "max_per_device");
  }
  if (const auto it = body.find("layers"); it != body.end()) request.layers = get_count(*it, "layers");
  if (const auto it = body.find("layer_bytes"); it != body.end() && !it->is_null()) {
    request.layer_bytes = get_count(*it, "layer_bytes");
  }
  if (const auto it = body.find("weights"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) throw bad_request("weights", it->type_name(), "must be an object {ID: weight}");
    for (const auto& [id, weight] : it->items()) {
      if (!weight.is_number()) throw bad_request("weights." + id, weight.dump(), "must be a number");
      request.weights.emplace_back(id, weight.get<double>());
    }
  }
  return request;  // the plan rules are the manager's (check_plan_request)
}

// Per (route, status) request counts and the request durations, for /metrics.
class RequestStats {
 public:
  // route: a string literal (static storage), so the key can keep the view.
  void record(std::string_view route, int status) {
    std::lock_guard lock(mutex_);
    ++counts_[{route, status}];
  }
  std::vector<HttpRequestCount> counts() const {
    std::lock_guard lock(mutex_);
    std::vector<HttpRequestCount> out;
    out.reserve(counts_.size());
    for (const auto& [key, count] : counts_) out.push_back({std::string(key.first), key.second, count});
    return out;
  }
  DurationHistogram durations;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string_view, int>, std::uint64_t> counts_;
};

}  // namespace

std::string ListenAddress::str() const {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port) : fmt::format("{}:{}", host, port);
}

ListenAddress parse_listen_address(std::string_view text) {
  const auto invalid = [&](const char* rule) { return InputError("--listen", std::string(text), rule); };
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) throw invalid("must be HOST:PORT, e.g. 127.0.0.1:9420");
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "127.0.0.1";
  int port = -1;
  const auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || error != std::errc{} || end != port_text.data() + port_text.size() || port < 0 ||
      port > 65535) {
    throw invalid("the port must be a number from 0 to 65535");
  }
  return ListenAddress{std::string(host), port};
}

bool is_loopback(std::string_view host) {
  return is_loopback_host(host);
}

void validate_agent_config(const AgentConfig& config) {
  if (config.token && config.token->empty()) {
    throw InputError("--token-file", "(empty)", "the token file must hold a non-empty token");
  }
  if (!is_loopback(config.listen.host) && !config.token) {
    throw InputError("--listen", config.listen.str(),
                     "binding a non-loopback address needs a token: give --token-file FILE");
  }
  const auto positive = [](std::size_t value, const char* field) {
    if (value == 0) throw InputError(field, "0", "must be > 0");
  };
  positive(config.limits.max_body_bytes, "max_body_bytes");
  positive(config.limits.max_depth, "max_depth");
  positive(config.limits.max_string_bytes, "max_string_bytes");
  positive(config.max_history_limit, "max_history_limit");
  positive(config.max_devices_per_host, "max_devices_per_host");
  positive(config.max_hosts, "max_hosts");
  positive(config.worker_threads, "worker_threads");
  positive(config.max_connections, "--max-connections");
  const auto positive_duration = [](std::chrono::milliseconds value, const char* field) {
    if (value.count() <= 0) throw InputError(field, fmt::format("{} ms", value.count()), "must be positive");
  };
  positive_duration(config.head_timeout, "--head-timeout");
  positive_duration(config.body_timeout, "--body-timeout");
  positive_duration(config.write_timeout, "--write-timeout");
  positive_duration(config.idle_timeout, "--idle-timeout");
  positive_duration(config.drain_timeout, "--drain-timeout");
  // Below one body's limit, a request of the allowed size could never be read.
  if (config.max_body_memory_bytes < config.limits.max_body_bytes) {
    throw InputError("--max-body-memory", std::to_string(config.max_body_memory_bytes),
                     fmt::format("must be at least the body limit ({} bytes)", config.limits.max_body_bytes));
  }
}

namespace {

// The route label of a POST refused on its head (a string literal, for metrics).
std::string_view post_route_name(std::string_view path) {
  if (path == "/v1/telemetry") return "/v1/telemetry";
  if (path == "/v1/select") return "/v1/select";
  if (path == "/v1/plan") return "/v1/plan";
  if (path == "/v2/report") return "/v2/report";
  return "(unmatched)";
}

// The credentials of `Authorization: Bearer <token>`, or nullopt when the
// header does not use that scheme. RFC 7235: the scheme name is
// case-insensitive and one or more spaces separate it from the token.
std::optional<std::string_view> bearer_credentials(std::string_view header) {
  constexpr std::string_view kScheme = "Bearer";
  if (header.size() <= kScheme.size() || header[kScheme.size()] != ' ' ||
      !boost::beast::iequals(boost::beast::string_view(header.data(), kScheme.size()),
                             boost::beast::string_view(kScheme.data(), kScheme.size()))) {
    return std::nullopt;
  }
  std::string_view credentials = header.substr(kScheme.size());
  credentials.remove_prefix(std::min(credentials.find_first_not_of(' '), credentials.size()));
  if (credentials.empty()) return std::nullopt;
  return credentials;
}

using Clock = std::chrono::steady_clock;

// Who may call a route, and whether it is answered while draining.
enum class Access {
  open,    // GET endpoints: no token; 409 once draining
  token,   // POST endpoints: the Bearer token when one is set; 409 once draining
  health,  // GET /healthz: no token; answered while draining (503 "draining", for load balancers)
};

// The node of each device, from one snapshot of the coordinator's node table,
// so that a view joins the device list with it in one pass (no per-node
// rescans: a coordinator may hold thousands of devices).
struct DeviceNodes {
  explicit DeviceNodes(const Coordinator& coordinator)
      : self(coordinator.self_label()), by_host(coordinator.labels_by_host()) {}

  // The agent's own devices are self's. nullptr for a remote device whose host
  // the table does not list (a seed registration a moment before its message
  // is noted): the views name it by its host, alive.
  const NodeLabel* find(const DeviceState& device) const {
    if (device.info->backend != "remote") return &self;
    const auto it = by_host.find(device.info->key.host);
    return it != by_host.end() ? &it->second : nullptr;
  }

  NodeLabel self;
  std::unordered_map<std::string, NodeLabel> by_host;
};

// A device object of /v1/devices gains its node's name and state (the export
// layer knows nothing of nodes).
void add_node_fields(json& device_json, const DeviceState& device, const DeviceNodes& nodes) {
  const NodeLabel* node = nodes.find(device);
  device_json["node"] = node != nullptr ? node->name : device.info->key.host;
  device_json["node_state"] = to_string(node != nullptr ? node->state : NodeState::alive);
}

}  // namespace

struct Agent::Impl {
  Impl(Manager& manager_ref, AgentConfig agent_config)
      : manager(manager_ref),
        config(std::move(agent_config)),
        http(
            HttpServerOptions{.threads = config.worker_threads,
                              .max_body_bytes = config.limits.max_body_bytes,
                              .max_body_memory_bytes = config.max_body_memory_bytes,
                              .max_connections = config.max_connections,
                              .head_timeout = config.head_timeout,
                              .body_timeout = config.body_timeout,
                              .write_timeout = config.write_timeout,
                              .idle_timeout = config.idle_timeout},
            [this](const HttpRequest& req, HttpResponse& res) { route(req, res); },
            [](int status, std::string_view code, std::string_view message, std::string_view field,
               std::string_view value, std::string_view rule) {
              HttpResponse res;
              write_error(res, status, code, message, field, value, rule);
              return res;
            },
            [this](const HttpRequest& req, const HttpResponse& res, std::chrono::nanoseconds took) {
              stats.record(res.route, res.status);
              stats.durations.observe(took);
              spdlog::debug("{} {} → {}", req.method, req.path, res.status);
            },
            [this](const HttpRequest& req) { return check_head(req); }) {
    // A host that leaves takes its devices' heartbeat state with it.
    membership.add_host_left_hook([this](const HostLeft& left) { forget_availability(left.devices); });
  }

  Manager& manager;
  AgentConfig config;
  RequestStats stats;
  // When refuse_new_requests() was first called (max: not draining). A
  // request whose head arrived before it is in flight and answered as usual.
  std::atomic<Clock::rep> drain_started{Clock::time_point::max().time_since_epoch().count()};
  int port = -1;

  // The remote hosts and their devices, registered through the protocol.
  // Seed hosts count against max_hosts; reporting nodes against the coordinator's max_nodes.
  ClusterMembership membership{
      manager, MembershipLimits{config.max_hosts + (config.coordinator ? config.cluster.max_nodes : 0),
                                std::max(config.max_devices_per_host, config.cluster.max_devices_per_node)}};
  std::atomic<const Pusher*> pusher{nullptr};
  // The node table: this node, and with --coordinator the nodes that report to it.
  Coordinator coordinator{manager, membership, config.cluster, config.node};

  // Remote devices a heartbeat marked unavailable, with that heartbeat's time:
  // a sample stamped later shows the device reporting again (docs/protocol.md).
  std::mutex unavailable_mutex;
  std::map<DeviceKey, Timestamp> unavailable_since;
  std::atomic<std::size_t> unavailable_count{0};  // lets the hot path skip the lock when none is
  void note_availability(const DeviceKey& key, bool available, Timestamp as_of);
  void note_sample(const DeviceKey& key, Timestamp sample_time);
  void forget_availability(const std::vector<DeviceKey>& keys);

  std::mutex serve_mutex;
  std::condition_variable serve_done;
  bool serving = false;

  HttpServer http;  // last: its threads call back into the members above

  bool draining() const { return drain_started.load() != Clock::time_point::max().time_since_epoch().count(); }
  void route(const HttpRequest& req, HttpResponse& res);
  template <typename Handler>
  void answer(std::string_view route_name, Access access, const HttpRequest& req, HttpResponse& res, Handler&& handler);
  void check_token(const HttpRequest& req) const;
  std::optional<HttpResponse> check_head(const HttpRequest& req) const;

  json node_json() const;  // /healthz "node"
  void handle_health(HttpResponse& res) const;
  void handle_devices(HttpResponse& res) const;
  void handle_device(std::string_view id, HttpResponse& res) const;
  void handle_history(std::string_view id, const HttpRequest& req, HttpResponse& res) const;
  void handle_cluster(const HttpRequest& req, HttpResponse& res) const;
  void tally_nodes(NodeCounts& counts, NodeCounts& devices_by_state, std::unordered_set<std::string>& down,
                   json& per_node) const;
  void handle_select(const HttpRequest& req, HttpResponse& res) const;
  void handle_plan(const HttpRequest& req, HttpResponse& res) const;
  void handle_telemetry(const HttpRequest& req, HttpResponse& res);
  void handle_metrics(const HttpRequest& req, HttpResponse& res) const;
  void handle_push(HttpResponse& res) const;
  void handle_service_discovery(HttpResponse& res) const;
  std::vector<PushLinkStatus> push_status() const;
  std::string base_url() const;
  void handle_report(const HttpRequest& req, HttpResponse& res);
  void handle_nodes(HttpResponse& res) const;
  void handle_node(std::string_view id, HttpResponse& res) const;
  void handle_forget_node(std::string_view id, HttpResponse& res);

  DeviceKey device_from_path(std::string_view text) const;
  DeviceKey sample_device(const std::string& device_id, const std::optional<std::string>& hostname,
                          bool carries_sample) const;
  void register_remote(const DeviceRegistration& registration);
};

Agent::Agent(Manager& manager, AgentConfig config) {
  validate_agent_config(config);
  impl_ = std::make_unique<Impl>(manager, std::move(config));
  impl_->coordinator.start();  // liveness of reporting nodes and of seed hosts
}

Agent::~Agent() = default;

int Agent::bind() {
  Impl& self = *impl_;
  const ListenAddress& listen = self.config.listen;
  try {
    self.port = self.http.bind(listen.host, listen.port);
  } catch (const Error& e) {
    throw Error(fmt::format("cannot listen on {}: {} (the address is in use or not local to this machine)",
                            listen.str(), e.what()));
  }
  return self.port;
}

void Agent::serve() {
  Impl& self = *impl_;
  {
    std::lock_guard lock(self.serve_mutex);
    self.serving = true;
  }
  self.http.serve();
  std::lock_guard lock(self.serve_mutex);
  self.serving = false;
  self.serve_done.notify_all();
}

void Agent::refuse_new_requests() {
  auto not_yet = Clock::time_point::max().time_since_epoch().count();
  impl_->drain_started.compare_exchange_strong(not_yet, Clock::now().time_since_epoch().count());
}

bool Agent::stop() {
  Impl& self = *impl_;
  refuse_new_requests();
  self.http.stop();
  std::unique_lock lock(self.serve_mutex);
  return self.serve_done.wait_for(lock, self.config.drain_timeout, [&] { return !self.serving; });
}

std::string Agent::base_url() const {
  return impl_->base_url();
}

std::string Agent::Impl::base_url() const {
  if (config.advertise_url) return *config.advertise_url;
  ListenAddress shown = config.listen;
  if (port > 0) shown.port = port;
  return "http://" + shown.str();
}

template <typename Handler>
void Agent::Impl::answer(std::string_view route_name, Access access, const HttpRequest& req, HttpResponse& res,
                         Handler&& handler) {
  res.route = route_name;
  try {
    if (access != Access::health && req.head_received.time_since_epoch().count() >= drain_started.load()) {
      throw ShutDownError("serve a request");
    }
    // check_head() refused a POST without the token before its body was read;
    // checked again here so that no route depends on the transport's hook.
    if (access == Access::token) check_token(req);
    handler();
  } catch (const HttpError& e) {
    write_error(res, e.status, e.code, e.what(), e.field, e.value, e.rule);
  } catch (const ReportRefused& e) {
    write_error(res, e.status(), e.code(), e.what(), e.field(), e.value(), e.rule());
    if (e.retry_after_seconds()) res.headers.emplace_back("Retry-After", std::to_string(*e.retry_after_seconds()));
  } catch (const ProtocolError& e) {
    const bool malformed = e.kind() == ProtocolError::Kind::malformed;
    write_error(res, malformed ? 400 : 422, malformed ? "malformed" : "invalid_value", e.what(), e.field(), e.value(),
                e.rule());
  } catch (const ValidationError& error) {
    // Every sample route speaks the seed protocol: name its keys.
    const ValidationError e = with_wire_field_name(error);
    if (e.reason() == RejectReason::unknown_device) {
      write_error(res, 404, "unknown_device", e.what(), "device_id", e.device());
    } else {
      // A conflict is a clash with what is held (409); the rest break a rule (422).
      write_error(res, e.reason() == RejectReason::conflict ? 409 : 422,
                  std::string("rejected_") + to_string(e.reason()), e.what(), e.field(), e.value(), e.rule());
    }
  } catch (const UnknownDeviceError& e) {
    write_error(res, 404, "unknown_device", e.what(), "device", e.device());
  } catch (const ShutDownError& e) {
    write_error(res, 409, "shutting_down", e.what());
  } catch (const AmbiguousDeviceError& e) {
    write_error(res, 400, "ambiguous_device", e.what(), e.field(), e.value(), e.rule());
  } catch (const InputError& e) {  // PlanError, InsufficientMemoryError, identifiers
    write_error(res, 422, "invalid_value", e.what(), e.field(), e.value(), e.rule());
  } catch (const nlohmann::json::exception& e) {
    write_error(res, 400, "invalid_request", e.what());
  } catch (const std::bad_alloc&) {
    // Not the request's fault and maybe passing: tell the client to come back.
    spdlog::error("{} {}: out of memory", req.method, req.path);
    write_error(res, 503, "out_of_memory", "the agent could not allocate memory for this request; try again later");
    res.headers.emplace_back("Retry-After", "1");
  } catch (const std::exception& e) {
    spdlog::error("{} {}: internal error: {}", req.method, req.path, e.what());
    write_error(res, 500, "internal", "internal error (logged by the agent)");
  }
}

void Agent::Impl::check_token(const HttpRequest& req) const {
  if (!config.token) return;
  const std::string_view header = req.header("Authorization");
  const std::optional<std::string_view> credentials = bearer_credentials(header);
  if (!credentials || !same_secret(*credentials, *config.token)) {
    throw HttpError(401, "unauthorized", "this endpoint needs the header Authorization: Bearer <token>",
                    "Authorization",
                    credentials ? "Bearer (wrong token)" : (header.empty() ? "(absent)" : "(not Bearer)"),
                    "Bearer token of the agent's --token-file");
  }
}

// On the head, before any body byte is read: a POST without the token is
// refused here, so an unauthenticated client never makes the agent read or
// hold a body (the transport then closes the connection).
std::optional<HttpResponse> Agent::Impl::check_head(const HttpRequest& req) const {
  if (!config.token || (req.method != "POST" && req.method != "DELETE")) return std::nullopt;
  try {
    check_token(req);
    return std::nullopt;
  } catch (const HttpError& e) {
    HttpResponse res;
    res.route = req.method == "DELETE" ? std::string_view("/v1/nodes/{id}") : post_route_name(req.path);
    write_error(res, e.status, e.code, e.what(), e.field, e.value, e.rule);
    return res;
  }
}

// The methods a route path takes (for 405 and Allow), or nullptr when no route has that path.
const char* allowed_methods(std::string_view path) {
  if (path == "/v1/telemetry" || path == "/v1/select" || path == "/v1/plan" || path == "/v2/report") return "POST";
  constexpr std::string_view kNodes = "/v1/nodes/";
  if (path.size() > kNodes.size() && path.substr(0, kNodes.size()) == kNodes) return "GET, HEAD, DELETE";
  constexpr std::string_view kDevices = "/v1/devices/";
  if (path == "/healthz" || path == "/metrics" || path == "/v1/devices" || path == "/v1/cluster" ||
      path == "/v1/nodes" || path == "/v1/push" || path == "/v1/sd/prometheus" ||
      (path.size() > kDevices.size() && path.substr(0, kDevices.size()) == kDevices)) {
    return "GET, HEAD";
  }
  return nullptr;
}

void Agent::Impl::route(const HttpRequest& req, HttpResponse& res) {
  const std::string_view path = req.path;
  if (req.method == "POST") {
    // The hot route (telemetry ingest) first.
    if (path == "/v1/telemetry") {
      return answer("/v1/telemetry", Access::token, req, res, [&] { handle_telemetry(req, res); });
    }
    if (path == "/v1/select") return answer("/v1/select", Access::token, req, res, [&] { handle_select(req, res); });
    if (path == "/v1/plan") return answer("/v1/plan", Access::token, req, res, [&] { handle_plan(req, res); });
    if (path == "/v2/report") return answer("/v2/report", Access::token, req, res, [&] { handle_report(req, res); });
  } else if (req.method == "DELETE") {
    constexpr std::string_view kNodes = "/v1/nodes/";
    if (path.size() > kNodes.size() && path.substr(0, kNodes.size()) == kNodes) {
      return answer("/v1/nodes/{id}", Access::token, req, res,
                    [&] { handle_forget_node(path.substr(kNodes.size()), res); });
    }
  } else if (req.method == "GET") {  // HEAD too
    if (path == "/healthz") return answer("/healthz", Access::health, req, res, [&] { handle_health(res); });
    if (path == "/metrics") return answer("/metrics", Access::open, req, res, [&] { handle_metrics(req, res); });
    if (path == "/v1/push") return answer("/v1/push", Access::open, req, res, [&] { handle_push(res); });
    if (path == "/v1/sd/prometheus") {
      return answer("/v1/sd/prometheus", Access::open, req, res, [&] { handle_service_discovery(res); });
    }
    if (path == "/v1/devices") return answer("/v1/devices", Access::open, req, res, [&] { handle_devices(res); });
    if (path == "/v1/cluster") return answer("/v1/cluster", Access::open, req, res, [&] { handle_cluster(req, res); });
    if (path == "/v1/nodes") return answer("/v1/nodes", Access::open, req, res, [&] { handle_nodes(res); });
    constexpr std::string_view kNodes = "/v1/nodes/";
    if (path.size() > kNodes.size() && path.substr(0, kNodes.size()) == kNodes) {
      return answer("/v1/nodes/{id}", Access::open, req, res, [&] { handle_node(path.substr(kNodes.size()), res); });
    }
    constexpr std::string_view kDevices = "/v1/devices/";
    constexpr std::string_view kHistory = "/history";
    if (path.size() > kDevices.size() && path.substr(0, kDevices.size()) == kDevices) {
      const std::string_view rest = path.substr(kDevices.size());
      if (rest.size() > kHistory.size() && rest.substr(rest.size() - kHistory.size()) == kHistory) {
        const std::string_view id = rest.substr(0, rest.size() - kHistory.size());
        return answer("/v1/devices/{id}/history", Access::open, req, res, [&] { handle_history(id, req, res); });
      }
      return answer("/v1/devices/{id}", Access::open, req, res, [&] { handle_device(rest, res); });
    }
  }
  if (const char* allowed = allowed_methods(path)) {
    write_error(res, 405, "method_not_allowed", fmt::format("{} takes {}, not {}", req.path, allowed, req.method),
                "method", req.method, fmt::format("one of: {}", allowed));
    res.headers.emplace_back("Allow", allowed);
    return;
  }
  write_error(res, 404, "not_found", fmt::format("no route {} {}", req.method, req.path));
}

json Agent::Impl::node_json() const {
  const NodeIdentity& node = config.node;
  const bool persisted = !node.id.empty();
  return json{{"id", persisted ? json(node.id) : json(nullptr)},
              {"name", node.name.empty() ? manager.host() : node.name},
              {"incarnation", persisted ? json(node.incarnation) : json(nullptr)}};
}

void Agent::Impl::handle_health(HttpResponse& res) const {
  const ManagerState state = manager.state();
  const bool is_draining = draining();
  const bool ok = state == ManagerState::running && !is_draining;
  // The agent listens before its backends have discovered their devices:
  // until then it is "starting" (503, so a load balancer waits for it).
  const bool starting = state == ManagerState::created && !is_draining;
  json body{{"status", ok ? "ok" : (starting ? "starting" : "unavailable")},
            {"state", is_draining ? "draining" : (starting ? "discovering" : to_string(state))},
            {"host", manager.host()},
            {"node", node_json()}};
  // A backend that failed (or missed its discovery deadline) does not make the
  // agent unhealthy, but a client must be able to see it: /v1/devices stays a
  // bare array of devices for compatibility.
  if (ok) body["backends"] = backends_to_json(manager.backend_reports());
  if (const std::vector<PushLinkStatus> links = push_status(); !links.empty()) {
    json push = json::array();
    for (const PushLinkStatus& link : links) push.push_back(push_json(link));
    body["push"] = std::move(push);
  }
  write_json(res, ok ? 200 : 503, body);
}

void Agent::Impl::handle_devices(HttpResponse& res) const {
  const std::vector<DeviceState> devices = manager.devices();
  json body = devices_to_json(devices, manager.rank());  // one object per device, in order
  const DeviceNodes nodes(coordinator);
  for (std::size_t i = 0; i < devices.size(); ++i) add_node_fields(body[i], devices[i], nodes);
  write_json(res, 200, body);
}

DeviceKey Agent::Impl::device_from_path(std::string_view text) const {
  if (text.empty() || text.size() > 2 * config.limits.max_string_bytes + 1) {
    throw bad_request("id", std::string(text.substr(0, 64)), "a device id such as cuda:0 or host/cuda:0");
  }
  const DeviceKey key = manager.resolve_key(std::string(text));
  // Both parts must be identifiers a device can have (InputError → 422): "..", "a//b", NUL or control characters.
  validate_identifier(key.host, "id");
  validate_identifier(key.local_id, "id");
  return key;
}

void Agent::Impl::handle_device(std::string_view id, HttpResponse& res) const {
  const DeviceKey key = device_from_path(id);
  const DeviceState state = manager.device(key);
  std::optional<RankedDevice> ranked;
  for (RankedDevice& entry : manager.rank()) {
    if (entry.key == key) ranked = std::move(entry);
  }
  json body = to_json(state, ranked);
  add_node_fields(body, state, DeviceNodes(coordinator));
  body["window"] = to_json(manager.window_stats(key));
  write_json(res, 200, body);
}

void Agent::Impl::handle_history(std::string_view id, const HttpRequest& req, HttpResponse& res) const {
  const DeviceKey key = device_from_path(id);
  std::size_t limit = config.max_history_limit;
  if (const std::string* limit_text = req.query_value("limit")) {
    limit = parse_query_count(*limit_text, "limit");
    if (limit == 0 || limit > config.max_history_limit) {
      throw unprocessable("limit", std::to_string(limit), fmt::format("must be 1 to {}", config.max_history_limit));
    }
  }
  json samples = json::array();
  for (const Sample& sample : manager.history(key, limit)) samples.push_back(to_json(sample));
  write_json(res, 200, json{{"device", key.str()}, {"samples", std::move(samples)}});
}

void Agent::Impl::handle_cluster(const HttpRequest& req, HttpResponse& res) const {
  // per_node lists every node: asked for, not sent with every poll of the
  // totals (at 1,000 nodes it is ~90 KB; docs/benchmarks.md "Cluster").
  bool per_node_asked = false;
  if (const std::string* text = req.query_value("per_node")) {
    if (*text != "true" && *text != "false") throw bad_request("per_node", *text, "must be true or false");
    per_node_asked = *text == "true";
  }
  NodeCounts counts;
  NodeCounts devices_by_state;
  std::unordered_set<std::string> down;  // key hosts of down nodes: listed, left out of the totals
  json per_node = json::array();
  if (per_node_asked) {
    tally_nodes(counts, devices_by_state, down, per_node);
  } else {
    // From the node table alone, without a pass over the devices; the agent's
    // own devices are what the aggregate counts beyond the remote ones.
    counts = coordinator.counts();
    devices_by_state = coordinator.remote_devices_by_state();
    if (counts.down > 0) down = coordinator.down_hosts();
  }
  const ClusterAggregate aggregate =
      down.empty() ? manager.aggregate()
                   : manager.aggregate([&](const std::string& host) { return !down.contains(host); });
  if (!per_node_asked) {
    const std::size_t remote = devices_by_state.alive + devices_by_state.suspect + devices_by_state.down;
    devices_by_state.alive += aggregate.device_count > remote ? aggregate.device_count - remote : 0;
  }
  json body = to_json(aggregate);
  body["nodes"] = json{{"alive", counts.alive},
                       {"suspect", counts.suspect},
                       {"down", counts.down},
                       {"total", counts.alive + counts.suspect + counts.down}};
  body["devices_by_state"] =
      json{{"alive", devices_by_state.alive}, {"suspect", devices_by_state.suspect}, {"down", devices_by_state.down}};
  if (per_node_asked) body["per_node"] = std::move(per_node);
  body["backends"] = backends_to_json(manager.backend_reports());  // which local sources the aggregate lacks
  write_json(res, 200, body);
}

// GET /v1/cluster?per_node=true: one snapshot of the node table joined with
// the devices in one pass over them in place.
void Agent::Impl::tally_nodes(NodeCounts& counts, NodeCounts& devices_by_state, std::unordered_set<std::string>& down,
                              json& per_node) const {
  struct Tally {
    const NodeLabel* node;
    std::size_t devices = 0, with_samples = 0;
  };
  const DeviceNodes nodes(coordinator);
  std::deque<NodeLabel> unlisted;  // remote hosts the node table does not list (yet): named by their host, alive
  Tally self{&nodes.self, 0, 0};
  std::unordered_map<std::string_view, Tally> remote;  // key host →
  remote.reserve(nodes.by_host.size());
  for (const auto& [host, node] : nodes.by_host) remote.emplace(host, Tally{&node, 0, 0});
  // A host's devices mostly come one after another: each run is looked up once.
  std::string_view last_host;
  Tally* last = nullptr;
  manager.visit_devices([&](const DeviceStateRef& device) {
    Tally* tally = &self;
    if (device.info.backend == "remote") {
      const std::string& host = device.info.key.host;
      if (last == nullptr || last_host != host) {
        auto it = remote.find(host);
        if (it == remote.end()) {
          const NodeLabel& label = unlisted.emplace_back(NodeLabel{host, {}, NodeState::alive});
          it = remote.emplace(label.name, Tally{&label, 0, 0}).first;
        }
        last_host = it->first;
        last = &it->second;
      }
      tally = last;
    }
    ++tally->devices;
    if (device.latest != nullptr) ++tally->with_samples;
  });
  std::vector<const Tally*> sorted{&self};
  sorted.reserve(remote.size() + 1);
  for (const auto& [host, tally] : remote) {
    if (tally.node->state == NodeState::down) down.emplace(host);
    sorted.push_back(&tally);
  }
  std::sort(sorted.begin(), sorted.end(), [](const Tally* a, const Tally* b) {
    return std::tie(a->node->name, a->node->id) < std::tie(b->node->name, b->node->id);
  });
  for (const Tally* tally : sorted) {
    counts.add(tally->node->state);
    devices_by_state.add(tally->node->state, tally->devices);
    per_node.push_back(json{{"node", tally->node->name},
                            {"id", tally->node->id.empty() ? json(nullptr) : json(tally->node->id)},
                            {"state", to_string(tally->node->state)},
                            {"devices", tally->devices},
                            {"devices_with_samples", tally->with_samples}});
  }
}

void Agent::Impl::handle_select(const HttpRequest& req, HttpResponse& res) const {
  const json body = read_bounded_json(req.body, config.limits, kRequestBody);
  require_object(body, "body");
  reject_unknown_keys(body, {"min_memory_bytes"});
  std::uint64_t min_memory = 0;
  if (const auto it = body.find("min_memory_bytes"); it != body.end()) {
    min_memory = get_count(*it, "min_memory_bytes");
  }
  write_json(res, 200, to_json(manager.select(min_memory)));
}

void Agent::Impl::handle_plan(const HttpRequest& req, HttpResponse& res) const {
  const PlanRequest request = plan_request_from_json(read_bounded_json(req.body, config.limits, kRequestBody));
  write_json(res, 200, to_json(manager.plan(request)));
}

namespace {

// A membership rule broken by a protocol message, as the HTTP answer: the
// message's fields are under "payload.".
HttpError http_error(const MembershipError& e) {
  const std::string field = "payload." + e.field();
  switch (e.kind()) {
    case MembershipError::Kind::ambiguous: return bad_request(field, e.value(), e.rule());
    case MembershipError::Kind::host_limit:
    case MembershipError::Kind::device_limit: return unprocessable(field, e.value(), e.rule());
    case MembershipError::Kind::conflict: return {409, "conflict", e.what(), field, e.value()};
    case MembershipError::Kind::unknown_device: break;
  }
  return {404, "unknown_device", e.what(), field, e.value()};
}

}  // namespace

void Agent::Impl::register_remote(const DeviceRegistration& registration) {
  if (coordinator.owns_host(registration.info.key.host)) {
    throw HttpError(409, "conflict",
                    fmt::format("host {} is a node that reports to this coordinator (GET /v1/nodes); the seed "
                                "protocol cannot register devices there",
                                registration.info.key.host),
                    "payload.hostname", registration.info.key.host, "must not be a reporting node's host");
  }
  try {
    membership.register_device(registration.info);  // validated by the parser; registers or updates
  } catch (const MembershipError& e) {
    throw http_error(e);
  }
}

DeviceKey Agent::Impl::sample_device(const std::string& device_id, const std::optional<std::string>& hostname,
                                     bool carries_sample) const {
  try {
    return membership.resolve(device_id, hostname);  // the parser has validated both as identifiers
  } catch (const MembershipError& e) {
    // The sample was refused before the store saw it: counted here, so every
    // rejected sample is counted under its reason.
    if (carries_sample) {
      manager.count_rejected_sample(e.kind() == MembershipError::Kind::conflict ? RejectReason::conflict
                                                                                : RejectReason::unknown_device);
    }
    throw http_error(e);
  }
}

void Agent::Impl::handle_telemetry(const HttpRequest& req, HttpResponse& res) {
  const TelemetryMessage message = parse_telemetry_message(req.body, config.limits);
  DeviceKey key;
  RecordOutcome outcome = RecordOutcome::stored;
  if (const auto* registration = std::get_if<DeviceRegistration>(&message)) {
    key = registration->info.key;
    register_remote(*registration);
    coordinator.note_seed_message(key.host, req.head_received);
  } else if (const auto* heartbeat = std::get_if<Heartbeat>(&message)) {
    key = sample_device(heartbeat->device_id, heartbeat->hostname, heartbeat->sample.has_value());
    coordinator.note_seed_message(key.host, req.head_received);
    // validates first: a bad sample changes nothing, availability included
    if (heartbeat->sample) outcome = manager.record(key, *heartbeat->sample);
    manager.set_availability(key, heartbeat->is_available,
                             heartbeat->is_available ? std::string{} : heartbeat->error_message);
    note_availability(key, heartbeat->is_available, heartbeat->timestamp);
  } else {
    const auto& metrics = std::get<MetricsReport>(message);
    key = sample_device(metrics.device_id, metrics.hostname, true);
    coordinator.note_seed_message(key.host, req.head_received);
    outcome = manager.record(key, metrics.sample);
    if (outcome == RecordOutcome::stored) note_sample(key, metrics.sample.timestamp);
  }
  // The hot path's answer, written directly (ids are validated identifiers, but
  // escape them anyway: the body must stay valid JSON whatever they hold).
  res.status = 202;
  res.content_type = kJsonContentType;
  res.body = fmt::format(R"({{"device":{},"status":"{}"}})", json(key.str()).dump(),
                         outcome == RecordOutcome::duplicate ? "duplicate" : "accepted");
}

void Agent::Impl::note_availability(const DeviceKey& key, bool available, Timestamp as_of) {
  std::lock_guard lock(unavailable_mutex);
  if (available) {
    unavailable_since.erase(key);
  } else {
    unavailable_since.insert_or_assign(key, as_of);
  }
  unavailable_count.store(unavailable_since.size());
}

void Agent::Impl::note_sample(const DeviceKey& key, Timestamp sample_time) {
  if (unavailable_count.load() == 0) return;
  std::lock_guard lock(unavailable_mutex);
  const auto it = unavailable_since.find(key);
  if (it == unavailable_since.end() || sample_time <= it->second) return;
  unavailable_since.erase(it);
  unavailable_count.store(unavailable_since.size());
  manager.set_availability(key, true);
}

void Agent::Impl::forget_availability(const std::vector<DeviceKey>& keys) {
  std::lock_guard lock(unavailable_mutex);
  for (const DeviceKey& key : keys) unavailable_since.erase(key);
  unavailable_count.store(unavailable_since.size());
}

void Agent::Impl::handle_report(const HttpRequest& req, HttpResponse& res) {
  if (!config.coordinator) {
    throw HttpError(404, "not_a_coordinator",
                    "this agent does not accept reports: start the coordinator with gpucluster agent --coordinator",
                    "path", "/v2/report", "needs --coordinator");
  }
  const Receipt receipt{req.head_received, now_timestamp(), req.remote_address};
  Report report;
  try {
    report = parse_report(req.body, config.limits);
  } catch (const ProtocolError& e) {
    const ReportErrorCode code = report_error_code(e);
    coordinator.count_rejected(to_string(code));
    const bool malformed = code == ReportErrorCode::malformed || code == ReportErrorCode::unsupported_version;
    throw HttpError(malformed ? 400 : 422, to_string(code), e.what(), e.field(), e.value(), e.rule());
  }
  res.status = 200;
  res.content_type = kJsonContentType;
  res.body = encode_report_ack(coordinator.ingest(report, receipt));
}

void Agent::Impl::handle_nodes(HttpResponse& res) const {
  json nodes = json::array();
  for (const NodeView& node : coordinator.nodes()) nodes.push_back(to_json(node));
  write_json(res, 200,
             json{{"self", config.node.id.empty() ? json(nullptr) : json(config.node.id)},
                  {"coordinator", config.coordinator},
                  {"epoch", coordinator.epoch()},
                  {"nodes", std::move(nodes)}});
}

void Agent::Impl::handle_node(std::string_view id, HttpResponse& res) const {
  const std::optional<NodeView> node = coordinator.node(id);
  if (!node) {
    throw HttpError(404, "unknown_node", fmt::format("no node {} (GET /v1/nodes lists them)", id), "id",
                    std::string(id), "a node's id, name or host");
  }
  write_json(res, 200, to_json(*node));
}

void Agent::Impl::handle_forget_node(std::string_view id, HttpResponse& res) {
  const NodeView node = coordinator.forget(id);
  json devices = json::array();
  for (const DeviceKey& key : node.device_keys) devices.push_back(key.str());
  write_json(res, 200, json{{"forgotten", node.id}, {"name", node.name}, {"devices", std::move(devices)}});
}

Coordinator& Agent::coordinator() {
  return impl_->coordinator;
}

void Agent::attach_pusher(const Pusher* pusher) {
  impl_->pusher.store(pusher);
}

std::vector<PushLinkStatus> Agent::Impl::push_status() const {
  const Pusher* attached = pusher.load();
  return attached == nullptr ? std::vector<PushLinkStatus>{} : attached->status();
}

namespace {

json push_json(const PushLinkStatus& link) {
  const auto text_or_null = [](const std::string& text) { return text.empty() ? json(nullptr) : json(text); };
  return json{{"url", link.url},
              {"coordinator", text_or_null(link.coordinator)},
              {"epoch", text_or_null(link.epoch)},
              {"host", text_or_null(link.host)},
              {"state", link.state},
              {"last_ack_age_seconds", link.last_ack_age_seconds ? json(*link.last_ack_age_seconds) : json(nullptr)},
              {"interval_ms", link.interval_ms == 0 ? json(nullptr) : json(link.interval_ms)},
              {"reports", link.reports},
              {"failures", link.failures},
              {"backlog_samples", link.backlog_samples},
              {"dropped_samples", link.dropped_samples},
              {"last_error", text_or_null(link.last_error)}};
}

}  // namespace

void Agent::Impl::handle_push(HttpResponse& res) const {
  json links = json::array();
  for (const PushLinkStatus& link : push_status()) links.push_back(push_json(link));
  write_json(res, 200, links);
}

namespace {

// "HOST:PORT" of an http:// URL, or "" when it is not one.
std::string url_authority(const std::string& url) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) return {};
  std::string rest = url.substr(kScheme.size());
  return rest.substr(0, rest.find('/'));
}

}  // namespace

// Prometheus http_sd (docs/cluster.md): every known node's own /metrics,
// scope=local so that a coordinator's remote devices are not scraped twice.
void Agent::Impl::handle_service_discovery(HttpResponse& res) const {
  json targets = json::array();
  for (const NodeView& node : coordinator.nodes()) {
    std::string address = node.kind == "self" ? url_authority(base_url()) : url_authority(node.address);
    if (address.empty()) continue;
    targets.push_back(json{{"targets", json::array({address})},
                           {"labels",
                            {{"node", node.name},
                             {"node_id", node.id},
                             {"host", node.host},
                             {"state", to_string(node.state)},
                             {"__param_scope", "local"}}}});
  }
  write_json(res, 200, targets);
}

void Agent::Impl::handle_metrics(const HttpRequest& req, HttpResponse& res) const {
  bool local_only = false;
  if (const std::string* scope = req.query_value("scope")) {
    if (*scope != "local" && *scope != "all") throw bad_request("scope", *scope, "must be local or all");
    local_only = *scope == "local";
  }
  ExpositionSnapshot snapshot;
  snapshot.devices = manager.devices();
  if (local_only) {
    std::erase_if(snapshot.devices, [](const DeviceState& device) { return device.info->backend == "remote"; });
  } else {
    for (const NodeView& node : coordinator.nodes()) {
      snapshot.nodes.push_back(NodeRow{node.id, node.name, node.host, to_string(node.state),
                                       node.last_report_age_seconds, node.clock_offset_seconds, node.reports,
                                       node.devices});
    }
    snapshot.coordinator = config.coordinator;
    snapshot.reports_accepted = coordinator.reports_accepted();
    snapshot.reports_rejected = coordinator.reports_rejected();
  }
  for (const PushLinkStatus& link : push_status()) {
    snapshot.push.push_back(
        PushRow{link.url, link.state == "ok", link.reports, link.failures, link.backlog_samples, link.dropped_samples});
  }
  snapshot.ranked = manager.rank();
  snapshot.rejected_samples = manager.rejected_samples();
  snapshot.duplicate_samples = manager.duplicate_samples();
  snapshot.backend_errors = manager.backend_errors();
  for (const BackendReport& report : manager.backend_reports()) {
    snapshot.implausible_readings.push_back({report.backend, report.implausible_readings});
  }
  snapshot.sample_durations = manager.sample_durations();
  snapshot.http_requests = stats.counts();
  snapshot.http_request_durations = stats.durations.snapshot();
  snapshot.http_accept_errors = http.counters().accept_errors;
  res.status = 200;
  res.content_type = kExpositionContentType;
  res.body = render_exposition(snapshot);
}

}  // namespace gpucluster::agent
