#include "gpucluster/agent/server.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include "gpucluster/agent/bounded_json.hpp"
#include "gpucluster/agent/exposition.hpp"
#include "gpucluster/json.hpp"

namespace gpucluster::agent {
namespace {

using nlohmann::json;

constexpr const char* kJsonContentType = "application/json";

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

void write_error(httplib::Response& res, int status, const std::string& code, const std::string& message,
                 const std::string& field = {}, const std::string& value = {}, const std::string& rule = {}) {
  json error{{"code", code}, {"message", message}, {"field", field.empty() ? json(nullptr) : json(field)}};
  if (!value.empty()) error["value"] = value;
  if (!rule.empty()) error["rule"] = rule;
  res.status = status;
  res.set_content(json{{"error", std::move(error)}}.dump(-1, ' ', false, json::error_handler_t::replace),
                  kJsonContentType);
}

void write_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), kJsonContentType);
}

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
  require_object(body, "(body)");
  reject_unknown_keys(body, {"items", "strategy", "weights", "max_per_device", "layers", "layer_bytes"});
  PlanRequest request;
  if (const auto it = body.find("strategy"); it != body.end()) {
    if (!it->is_string()) throw bad_request("strategy", it->dump(), "must be a string");
    const auto strategy = parse_strategy(it->get<std::string>());
    if (!strategy) throw unprocessable("strategy", it->get<std::string>(), "must be uniform, capacity or memory");
    request.strategy = *strategy;
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
  if (request.strategy == Strategy::memory && request.layers == 0) {
    throw unprocessable("layers", "0", "the memory strategy needs layers > 0");
  }
  if (request.strategy != Strategy::capacity && !request.weights.empty()) {
    throw unprocessable("weights", request.weights.front().first, "weights apply only to the capacity strategy");
  }
  return request;
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

// Which route the current worker thread is answering, and since when; set by
// the pre-routing handler and the route wrappers, read by the logger that
// httplib calls on the same thread after each response.
thread_local std::string_view current_route;
thread_local std::chrono::steady_clock::time_point request_started;

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
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
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
}

struct Agent::Impl {
  Impl(Manager& manager_ref, AgentConfig agent_config) : manager(manager_ref), config(std::move(agent_config)) {}

  Manager& manager;
  AgentConfig config;
  httplib::Server server;
  RequestStats stats;
  std::atomic<bool> refusing{false};
  int port = -1;

  // Remote devices registered through the protocol: device id → hosts, so a
  // heartbeat naming only "cuda:0" (as the seed's clients send) finds its host.
  mutable std::shared_mutex remote_mutex;
  std::unordered_map<std::string, std::vector<std::string>> remote_hosts_by_device;
  std::unordered_map<std::string, std::size_t> remote_devices_per_host;

  std::mutex serve_mutex;
  std::condition_variable serve_done;
  bool serving = false;
  bool served = false;

  void install_routes();
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  Handler wrap(std::string_view route, bool needs_token, Handler handler);
  void check_token(const httplib::Request& req) const;

  void handle_health(httplib::Response& res) const;
  void handle_devices(httplib::Response& res) const;
  void handle_device(const httplib::Request& req, httplib::Response& res) const;
  void handle_history(const httplib::Request& req, httplib::Response& res) const;
  void handle_cluster(httplib::Response& res) const;
  void handle_select(const httplib::Request& req, httplib::Response& res) const;
  void handle_plan(const httplib::Request& req, httplib::Response& res) const;
  void handle_telemetry(const httplib::Request& req, httplib::Response& res);
  void handle_metrics(httplib::Response& res) const;

  DeviceKey device_from_path(const std::string& text) const;
  DeviceKey remote_device(const std::string& device_id, const std::optional<std::string>& hostname) const;
  void register_remote(const DeviceRegistration& registration);
};

Agent::Agent(Manager& manager, AgentConfig config) {
  validate_agent_config(config);
  impl_ = std::make_unique<Impl>(manager, std::move(config));
  impl_->install_routes();
}

Agent::~Agent() {
  if (impl_) impl_->server.stop();
}

int Agent::bind() {
  Impl& self = *impl_;
  const ListenAddress& listen = self.config.listen;
  if (listen.port == 0) {
    self.port = self.server.bind_to_any_port(listen.host);
  } else if (self.server.bind_to_port(listen.host, listen.port)) {
    self.port = listen.port;
  }
  if (self.port <= 0) {
    throw Error(fmt::format("cannot listen on {}: the address is in use or not local to this machine", listen.str()));
  }
  return self.port;
}

void Agent::serve() {
  Impl& self = *impl_;
  {
    std::lock_guard lock(self.serve_mutex);
    self.serving = true;
  }
  self.server.listen_after_bind();
  std::lock_guard lock(self.serve_mutex);
  self.serving = false;
  self.served = true;
  self.serve_done.notify_all();
}

void Agent::refuse_new_requests() {
  impl_->refusing.store(true);
}

bool Agent::stop() {
  Impl& self = *impl_;
  refuse_new_requests();
  self.server.stop();
  std::unique_lock lock(self.serve_mutex);
  return self.serve_done.wait_for(lock, self.config.drain_timeout, [&] { return !self.serving; });
}

std::string Agent::base_url() const {
  ListenAddress shown = impl_->config.listen;
  if (impl_->port > 0) shown.port = impl_->port;
  return "http://" + shown.str();
}

Agent::Impl::Handler Agent::Impl::wrap(std::string_view route, bool needs_token, Handler handler) {
  return [this, route, needs_token, handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    current_route = route;
    try {
      if (refusing.load()) throw ShutDownError("serve a request");
      if (needs_token) check_token(req);
      handler(req, res);
    } catch (const HttpError& e) {
      write_error(res, e.status, e.code, e.what(), e.field, e.value, e.rule);
    } catch (const ProtocolError& e) {
      const bool malformed = e.kind() == ProtocolError::Kind::malformed;
      write_error(res, malformed ? 400 : 422, malformed ? "malformed" : "invalid_value", e.what(), e.field(), e.value(),
                  e.rule());
    } catch (const ValidationError& e) {
      if (e.reason() == RejectReason::unknown_device) {
        write_error(res, 404, "unknown_device", e.what(), "device_id", e.device());
      } else {
        write_error(res, 422, std::string("rejected_") + to_string(e.reason()), e.what(), e.field(), e.value(),
                    e.rule());
      }
    } catch (const UnknownDeviceError& e) {
      write_error(res, 404, "unknown_device", e.what(), "device", e.device());
    } catch (const ShutDownError& e) {
      write_error(res, 409, "shutting_down", e.what());
    } catch (const InputError& e) {  // PlanError, InsufficientMemoryError, identifiers
      write_error(res, 422, "invalid_value", e.what(), e.field(), e.value(), e.rule());
    } catch (const nlohmann::json::exception& e) {
      write_error(res, 400, "invalid_request", e.what());
    } catch (const std::exception& e) {
      spdlog::error("{} {}: internal error: {}", req.method, req.path, e.what());
      write_error(res, 500, "internal", "internal error (logged by the agent)");
    }
  };
}

void Agent::Impl::check_token(const httplib::Request& req) const {
  if (!config.token) return;
  constexpr std::string_view kScheme = "Bearer ";
  const std::string header = req.get_header_value("Authorization");
  const bool bearer = header.size() > kScheme.size() && header.compare(0, kScheme.size(), kScheme) == 0;
  if (!bearer || !same_secret(std::string_view(header).substr(kScheme.size()), *config.token)) {
    throw HttpError(401, "unauthorized", "this endpoint needs the header Authorization: Bearer <token>",
                    "Authorization", bearer ? "Bearer (wrong token)" : (header.empty() ? "(absent)" : "(not Bearer)"),
                    "Bearer token of the agent's --token-file");
  }
}

void Agent::Impl::install_routes() {
  server.new_task_queue = [threads = config.worker_threads] {
    return new httplib::ThreadPool(threads);  // httplib takes ownership
  };
  server.set_payload_max_length(config.limits.max_body_bytes);
  // Small answers go out in two send()s (headers, body): without TCP_NODELAY
  // the body waits for the client's delayed ACK, 40 ms on Linux.
  server.set_tcp_nodelay(true);
  // Producers keep one connection open and post for hours; a low cap would
  // only force reconnects (keep-alive connections still end after the idle timeout).
  server.set_keep_alive_max_count(1'000'000);
  server.set_read_timeout(std::chrono::seconds(10));
  server.set_write_timeout(std::chrono::seconds(10));
  server.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    current_route = "(unmatched)";
    request_started = std::chrono::steady_clock::now();
    // httplib 0.11 reads a chunked body, or a POST/PUT/PATCH body without
    // Content-Length (until the peer closes), whole and past the payload limit:
    // such a request could make the agent buffer any amount of memory, before
    // any token check. This handler runs before the body is read: refuse them.
    const bool carries_body = req.method == "POST" || req.method == "PUT" || req.method == "PATCH";
    if (req.has_header("Transfer-Encoding") || (carries_body && !req.has_header("Content-Length"))) {
      write_error(res, 411, "length_required", "the request body needs a Content-Length header (no chunked bodies)",
                  "Content-Length",
                  req.has_header("Transfer-Encoding")
                      ? "Transfer-Encoding: " + req.get_header_value("Transfer-Encoding")
                      : "(absent)",
                  "a Content-Length header, and no Transfer-Encoding");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Routes that did not match, and bodies over the limit (413), reach here
  // with an empty body: give them the JSON error shape too.
  server.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 413) {
      write_error(res, 413, "payload_too_large",
                  fmt::format("the body is larger than {} bytes", config.limits.max_body_bytes), "(body)",
                  req.get_header_value("Content-Length"),
                  fmt::format("at most {} bytes", config.limits.max_body_bytes));
    } else if (res.status == 404) {
      write_error(res, 404, "not_found", fmt::format("no route {} {}", req.method, req.path));
    } else {
      write_error(res, res.status, "http_error", fmt::format("HTTP status {}", res.status));
    }
  });
  server.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr) {
    spdlog::error("{} {}: unhandled exception", req.method, req.path);
    write_error(res, 500, "internal", "internal error (logged by the agent)");
  });
  server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    stats.record(current_route, res.status);
    if (request_started != std::chrono::steady_clock::time_point{}) {
      stats.durations.observe(std::chrono::steady_clock::now() - request_started);
    }
    spdlog::debug("{} {} → {}", req.method, req.path, res.status);
  });

  server.Get("/healthz", wrap("/healthz", false, [this](const auto&, auto& res) { handle_health(res); }));
  server.Get("/metrics", wrap("/metrics", false, [this](const auto&, auto& res) { handle_metrics(res); }));
  server.Get("/v1/devices", wrap("/v1/devices", false, [this](const auto&, auto& res) { handle_devices(res); }));
  server.Get(R"(/v1/devices/(.+)/history)",
             wrap("/v1/devices/{id}/history", false, [this](const auto& req, auto& res) { handle_history(req, res); }));
  server.Get(R"(/v1/devices/(.+))",
             wrap("/v1/devices/{id}", false, [this](const auto& req, auto& res) { handle_device(req, res); }));
  server.Get("/v1/cluster", wrap("/v1/cluster", false, [this](const auto&, auto& res) { handle_cluster(res); }));
  // Routes are tried in order: the hot one (telemetry ingest) first.
  server.Post("/v1/telemetry",
              wrap("/v1/telemetry", true, [this](const auto& req, auto& res) { handle_telemetry(req, res); }));
  server.Post("/v1/select", wrap("/v1/select", true, [this](const auto& req, auto& res) { handle_select(req, res); }));
  server.Post("/v1/plan", wrap("/v1/plan", true, [this](const auto& req, auto& res) { handle_plan(req, res); }));
}

void Agent::Impl::handle_health(httplib::Response& res) const {
  const ManagerState state = manager.state();
  const bool ok = state == ManagerState::running && !refusing.load();
  write_json(res, ok ? 200 : 503,
             json{{"status", ok ? "ok" : "unavailable"},
                  {"state", refusing.load() ? "draining" : to_string(state)},
                  {"host", manager.host()}});
}

void Agent::Impl::handle_devices(httplib::Response& res) const {
  write_json(res, 200, devices_to_json(manager.devices(), manager.rank()));
}

DeviceKey Agent::Impl::device_from_path(const std::string& text) const {
  if (text.empty() || text.size() > 2 * config.limits.max_string_bytes + 1) {
    throw bad_request("id", text.substr(0, 64), "a device id such as cuda:0 or host/cuda:0");
  }
  const DeviceKey key = manager.resolve_key(text);
  // Both parts must be identifiers a device can have (InputError → 422): "..", "a//b", NUL or control characters.
  validate_identifier(key.host, "id");
  validate_identifier(key.local_id, "id");
  return key;
}

void Agent::Impl::handle_device(const httplib::Request& req, httplib::Response& res) const {
  const DeviceKey key = device_from_path(req.matches[1].str());
  const DeviceState state = manager.device(key);
  std::optional<RankedDevice> ranked;
  for (RankedDevice& entry : manager.rank()) {
    if (entry.key == key) ranked = std::move(entry);
  }
  json body = to_json(state, ranked);
  body["window"] = to_json(manager.window_stats(key));
  write_json(res, 200, body);
}

void Agent::Impl::handle_history(const httplib::Request& req, httplib::Response& res) const {
  const DeviceKey key = device_from_path(req.matches[1].str());
  std::size_t limit = config.max_history_limit;
  if (req.has_param("limit")) {
    limit = parse_query_count(req.get_param_value("limit"), "limit");
    if (limit == 0 || limit > config.max_history_limit) {
      throw unprocessable("limit", std::to_string(limit), fmt::format("must be 1 to {}", config.max_history_limit));
    }
  }
  json samples = json::array();
  for (const Sample& sample : manager.history(key, limit)) samples.push_back(to_json(sample));
  write_json(res, 200, json{{"device", key.str()}, {"samples", std::move(samples)}});
}

void Agent::Impl::handle_cluster(httplib::Response& res) const {
  write_json(res, 200, to_json(manager.aggregate()));
}

void Agent::Impl::handle_select(const httplib::Request& req, httplib::Response& res) const {
  const json body = parse_bounded_json(req.body, config.limits);
  require_object(body, "(body)");
  reject_unknown_keys(body, {"min_memory_bytes"});
  std::uint64_t min_memory = 0;
  if (const auto it = body.find("min_memory_bytes"); it != body.end()) {
    min_memory = get_count(*it, "min_memory_bytes");
  }
  write_json(res, 200, to_json(manager.select(min_memory)));
}

void Agent::Impl::handle_plan(const httplib::Request& req, httplib::Response& res) const {
  const PlanRequest request = plan_request_from_json(parse_bounded_json(req.body, config.limits));
  write_json(res, 200, to_json(manager.plan(request)));
}

DeviceKey Agent::Impl::remote_device(const std::string& device_id, const std::optional<std::string>& hostname) const {
  DeviceKey key{hostname.value_or(""), device_id};  // the parser has validated both as identifiers
  {
    std::shared_lock lock(remote_mutex);
    const auto found = remote_hosts_by_device.find(key.local_id);
    if (found != remote_hosts_by_device.end()) {
      const std::vector<std::string>& hosts = found->second;
      if (key.host.empty() && hosts.size() == 1) return DeviceKey{hosts.front(), key.local_id};
      if (key.host.empty()) {
        throw bad_request(
            "payload.hostname", "(absent)",
            fmt::format("device {} is registered on {} hosts: name the host", key.local_id, hosts.size()));
      }
      if (std::find(hosts.begin(), hosts.end(), key.host) != hosts.end()) return key;
    }
  }
  if (!key.host.empty()) {
    try {
      const DeviceState local = manager.device(key);
      throw HttpError(409, "conflict",
                      fmt::format("device {} is sampled by this agent's {} backend, not fed by the protocol", key.str(),
                                  local.info->backend),
                      "payload.device_id", key.local_id);
    } catch (const UnknownDeviceError&) {
      // Neither remote nor local: unknown below.
    }
  }
  throw HttpError(404, "unknown_device",
                  fmt::format("device {} is not registered: send a device_registration first",
                              key.host.empty() ? key.local_id : key.str()),
                  "payload.device_id", key.local_id);
}

void Agent::Impl::register_remote(const DeviceRegistration& registration) {
  const DeviceKey& key = registration.info.key;
  try {
    const DeviceState existing = manager.device(key);
    if (existing.info->backend != registration.info.backend) {
      throw HttpError(409, "conflict",
                      fmt::format("device {} is sampled by this agent's {} backend; a remote registration cannot "
                                  "replace it",
                                  key.str(), existing.info->backend),
                      "payload.device_id", key.local_id);
    }
  } catch (const UnknownDeviceError&) {
    // New device: fine.
  }
  std::unique_lock lock(remote_mutex);
  auto& hosts = remote_hosts_by_device[key.local_id];
  const bool known = std::find(hosts.begin(), hosts.end(), key.host) != hosts.end();
  if (!known) {
    const auto per_host = remote_devices_per_host.find(key.host);
    if (per_host == remote_devices_per_host.end() && remote_devices_per_host.size() >= config.max_hosts) {
      if (hosts.empty()) remote_hosts_by_device.erase(key.local_id);
      throw unprocessable("payload.hostname", key.host, fmt::format("at most {} remote hosts", config.max_hosts));
    }
    if (per_host != remote_devices_per_host.end() && per_host->second >= config.max_devices_per_host) {
      if (hosts.empty()) remote_hosts_by_device.erase(key.local_id);
      throw unprocessable("payload.device_id", key.local_id,
                          fmt::format("at most {} devices per host", config.max_devices_per_host));
    }
  }
  manager.register_device(registration.info);  // validated by the parser; registers or updates
  if (!known) {
    hosts.push_back(key.host);
    ++remote_devices_per_host[key.host];
  }
}

void Agent::Impl::handle_telemetry(const httplib::Request& req, httplib::Response& res) {
  const TelemetryMessage message = parse_telemetry_message(req.body, config.limits);
  DeviceKey key;
  if (const auto* registration = std::get_if<DeviceRegistration>(&message)) {
    key = registration->info.key;
    register_remote(*registration);
  } else if (const auto* heartbeat = std::get_if<Heartbeat>(&message)) {
    key = remote_device(heartbeat->device_id, heartbeat->hostname);
    if (heartbeat->sample) manager.record(key, *heartbeat->sample);  // validates first: a bad one changes nothing
    manager.set_availability(key, heartbeat->is_available,
                             heartbeat->is_available ? std::string{} : heartbeat->error_message);
  } else {
    const auto& metrics = std::get<MetricsReport>(message);
    key = remote_device(metrics.device_id, metrics.hostname);
    manager.record(key, metrics.sample);
  }
  // The hot path's answer, written directly (ids are validated identifiers, but
  // escape them anyway: the body must stay valid JSON whatever they hold).
  res.status = 202;
  res.set_content(fmt::format(R"({{"device":{},"status":"accepted"}})", json(key.str()).dump()), kJsonContentType);
}

void Agent::Impl::handle_metrics(httplib::Response& res) const {
  ExpositionSnapshot snapshot;
  snapshot.devices = manager.devices();
  snapshot.ranked = manager.rank();
  snapshot.rejected_samples = manager.rejected_samples();
  snapshot.backend_errors = manager.backend_errors();
  snapshot.sample_durations = manager.sample_durations();
  snapshot.http_requests = stats.counts();
  snapshot.http_request_durations = stats.durations.snapshot();
  res.status = 200;
  res.set_content(render_exposition(snapshot), kExpositionContentType);
}

}  // namespace gpucluster::agent
