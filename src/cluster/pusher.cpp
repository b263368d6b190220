#include "gpucluster/cluster/pusher.hpp"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <stop_token>
#include <thread>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "cluster/backoff.hpp"
#include "cluster/http_client.hpp"
#include "cluster/outbox.hpp"
#include "gpucluster/wire/report.hpp"

namespace gpucluster {

using agent::Report;
using agent::ReportAck;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

void validate_pusher_options(const PusherOptions& options) {
  std::set<std::string> seen;
  for (const std::string& url : options.coordinators) {
    const HttpUrl parsed = parse_http_url(url, "--join");
    if (!seen.insert(parsed.str()).second) throw InputError("--join", url, "each coordinator once");
  }
  if (options.outbox_samples == 0) throw InputError("--outbox", "0", "must be at least 1 sample per device");
  if (options.backoff_base.count() <= 0) throw InputError("--push-backoff-base", "0", "must be positive");
}

namespace {

constexpr std::size_t kMaxSamplesPerDevice = 600;   // ReportLimits
constexpr std::size_t kMaxSamplesPerReport = 4096;  // half of ReportLimits::max_samples: stays far below 1 MiB
constexpr std::size_t kRecentSamples = 64;          // read per device and tick; more only after a gap
constexpr milliseconds kMinInterval{100};
constexpr milliseconds kMaxInterval{60'000};
constexpr auto kErrorLogEvery = std::chrono::seconds{60};

// The code of an error answer {"error": {"code": …}}, or "" when the body is not one.
std::string error_code(const std::string& body) {
  const nlohmann::json document = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!document.is_object()) return {};
  const auto error = document.find("error");
  if (error == document.end() || !error->is_object()) return {};
  const auto code = error->find("code");
  return code != error->end() && code->is_string() ? code->get<std::string>() : std::string{};
}

}  // namespace

struct Pusher::Impl {
  Impl(Manager& manager_ref, NodeIdentity identity, PusherOptions pusher_options)
      : manager(manager_ref),
        node(std::move(identity)),
        options(std::move(pusher_options)),
        outbox(options.outbox_samples, 0) {
    validate_pusher_options(options);
    for (const std::string& url : options.coordinators) add_link(parse_http_url(url, "--join"), /*found=*/false);
  }

  struct Link {
    HttpUrl url;
    std::size_t outbox_link = 0;  // its index in the outbox
    bool found = false;           // discovered (etcd), not named by --join: removed when it goes away
    std::uint64_t seq = 0;
    milliseconds interval{1000};
    bool need_inventory = true;
    std::uint64_t acked_inventory_version = 0;
    std::optional<agent::ClockExchange> clock;
    std::uint32_t attempt = 0;
    steady_clock::time_point last_log{};
    std::optional<steady_clock::time_point> last_ack;
    PushLinkStatus status;  // guarded by Impl::status_mutex
    std::jthread thread;
  };

  Manager& manager;
  const NodeIdentity node;
  const PusherOptions options;
  Outbox outbox;
  mutable std::mutex links_mutex;  // the list; each link's state is its own thread's
  std::vector<std::unique_ptr<Link>> links;
  bool started = false;

  std::mutex inventory_mutex;  // the inventory and its version
  std::vector<DeviceInfo> inventory;
  std::uint64_t inventory_version = 0;
  std::map<std::string, std::string> unavailable;

  mutable std::mutex status_mutex;
  std::mutex wake_mutex;
  std::condition_variable_any wake;
  bool leaving = false;

  // Reads this node's own devices (never remote ones: no aggregating of
  // aggregators) into the inventory and the outbox.
  void collect();
  Report build(Link& link, Outbox::Batch& batch, bool is_leaving);
  void run(std::stop_token stop, Link& link);
  // One report; returns how long to wait before the next one.
  milliseconds push_once(Link& link, bool is_leaving, milliseconds timeout, HttpClient& client);
  void log_error(Link& link, const std::string& message);
  // With links_mutex held (or before any thread runs).
  Link& add_link(const HttpUrl& url, bool found) {
    auto link = std::make_unique<Link>();
    link->url = url;
    link->found = found;
    link->outbox_link = outbox.add_link();
    link->status.url = url.str();
    link->status.state = "connecting";
    links.push_back(std::move(link));
    return *links.back();
  }
  void start_link(Link& link) {
    link.thread = std::jthread([this, &link](std::stop_token stop) { run(stop, link); });
  }
};

Pusher::Pusher(Manager& manager, NodeIdentity node, PusherOptions options)
    : impl_(std::make_unique<Impl>(manager, std::move(node), std::move(options))) {}

Pusher::~Pusher() {
  stop(false);
}

void Pusher::Impl::collect() {
  std::vector<DeviceInfo> current;
  std::map<std::string, std::string> down;
  for (const DeviceState& device : manager.devices()) {
    if (device.info->backend == "remote") continue;
    DeviceInfo info = *device.info;
    const DeviceKey key = info.key;
    info.key.host.clear();  // the coordinator chooses the host part
    current.push_back(std::move(info));
    if (!device.available) down.emplace(key.local_id, device.unavailable_reason);
    const Timestamp newest = outbox.newest(key.local_id);
    std::vector<Sample> recent = manager.history(key, kRecentSamples);
    if (recent.size() == kRecentSamples && recent.front().timestamp > newest) {
      recent = manager.history(key, options.outbox_samples);  // a gap: read as far back as the outbox holds
    }
    std::erase_if(recent, [&](const Sample& sample) { return sample.timestamp <= newest; });
    if (!recent.empty()) outbox.append(key.local_id, recent);
  }
  std::lock_guard lock(inventory_mutex);
  if (current != inventory || inventory_version == 0) {
    inventory = std::move(current);
    ++inventory_version;
  }
  unavailable = std::move(down);
}

Report Pusher::Impl::build(Link& link, Outbox::Batch& batch, bool is_leaving) {
  Report report;
  report.node.id = node.id;
  report.node.incarnation = node.incarnation;
  report.node.name = node.name;
  report.node.agent_version = options.agent_version;
  report.node.url = options.url;
  if (!options.url) report.node.port = options.port;
  report.seq = ++link.seq;
  report.clock = link.clock;
  report.interval_ms = static_cast<std::uint32_t>(link.interval.count());
  {
    std::lock_guard lock(inventory_mutex);
    report.inventory_version = inventory_version;
    if (link.need_inventory || link.acked_inventory_version != inventory_version) report.inventory = inventory;
    report.unavailable = unavailable;
  }
  batch = outbox.take(link.outbox_link, kMaxSamplesPerDevice, kMaxSamplesPerReport);
  report.samples = batch.samples;
  report.dropped = batch.dropped;
  report.leaving = is_leaving;
  return report;
}

void Pusher::Impl::log_error(Link& link, const std::string& message) {
  const auto now = steady_clock::now();
  {
    std::lock_guard lock(status_mutex);
    link.status.last_error = message;
  }
  if (link.last_log != steady_clock::time_point{} && now - link.last_log < kErrorLogEvery) {
    spdlog::debug("push to {}: {}", link.url.str(), message);
    return;
  }
  link.last_log = now;
  spdlog::warn("push to {}: {} (said at most once a minute; GET /v1/push shows the latest)", link.url.str(), message);
}

milliseconds Pusher::Impl::push_once(Link& link, bool is_leaving, milliseconds timeout, HttpClient& client) {
  const BackoffPolicy policy{options.backoff_base,
                             options.backoff_cap.count() > 0 ? options.backoff_cap : link.interval};
  thread_local std::minstd_rand random{std::random_device{}()};
  const auto back_off = [&](milliseconds retry_after = milliseconds{0}) {
    const milliseconds delay = backoff_delay(policy, link.attempt, random, retry_after);
    link.attempt = std::min<std::uint32_t>(link.attempt + 1, 30);
    std::lock_guard lock(status_mutex);
    ++link.status.failures;
    link.status.state = "backoff";
    return delay;
  };

  Outbox::Batch batch;
  Report report = build(link, batch, is_leaving);
  const bool sent_inventory = report.inventory.has_value();
  const Timestamp t0 = now_timestamp();
  report.sent_at = t0;
  HttpClientResponse response;
  try {
    response = client.request("POST", "/v2/report", agent::encode_report(report), options.token, timeout);
  } catch (const TransportError& e) {
    log_error(link, e.what());
    return back_off();
  }
  const Timestamp t1 = now_timestamp();
  if (response.status == 200) {
    ReportAck ack;
    try {
      ack = agent::parse_report_ack(response.body);
    } catch (const InputError& e) {
      log_error(link, fmt::format("the coordinator's answer is not an ack: {}", e.what()));
      return back_off();
    }
    outbox.acknowledge(link.outbox_link, batch);
    if (sent_inventory) link.acked_inventory_version = report.inventory_version;
    link.need_inventory = ack.inventory_required;
    link.clock = agent::ClockExchange{t0, ack.received_at, ack.replied_at, t1};
    link.interval = std::clamp(milliseconds{ack.interval_ms}, kMinInterval, kMaxInterval);
    link.attempt = 0;
    {
      std::lock_guard lock(status_mutex);
      link.last_ack = steady_clock::now();
      if (link.status.epoch != ack.epoch && !link.status.epoch.empty()) {
        spdlog::info("push to {}: the coordinator restarted (new epoch)", link.url.str());
      }
      if (link.status.state != "ok") spdlog::info("push to {}: reporting as host {}", link.url.str(), ack.host);
      link.status.state = "ok";
      link.status.coordinator = ack.coordinator;
      link.status.epoch = ack.epoch;
      link.status.host = ack.host;
      link.status.interval_ms = ack.interval_ms;
      link.status.last_error.clear();
      ++link.status.reports;
    }
    if (ack.rejected > 0) {
      log_error(link, fmt::format("{} samples rejected, e.g. {}", ack.rejected,
                                  ack.rejections.empty() ? std::string("?") : ack.rejections.front()));
    }
    return batch.more ? milliseconds{0} : link.interval;  // catch up at once after an outage
  }
  const std::string code = error_code(response.body);
  if (response.status == 409 && code == "inventory_required") {
    link.need_inventory = true;
    if (!sent_inventory) return milliseconds{0};  // at once, with the inventory
    log_error(link, "the coordinator asks for the inventory that was sent");
    return back_off();
  }
  if (response.status == 409 && code == "stale_sequence") {
    // The previous report was taken although its answer was lost: the next
    // one carries the same samples, which the coordinator recognises.
    return milliseconds{0};
  }
  log_error(link, fmt::format("HTTP {} {}: {}", response.status, code, response.body.substr(0, 300)));
  if (response.status == 400 || response.status == 422) {
    // A report the coordinator will never take: its samples are dropped (and
    // counted) so one bad sample cannot wedge the link.
    for (const auto& [device, samples] : batch.samples) batch.dropped[device] += samples.size();
    outbox.acknowledge(link.outbox_link, batch);
  }
  return back_off(milliseconds{std::int64_t{1000} * response.retry_after_seconds.value_or(0)});
}

void Pusher::Impl::run(std::stop_token stop, Link& link) {
  HttpClient client(link.url, 1024 * 1024);
  while (!stop.stop_requested()) {
    milliseconds wait{0};
    try {
      collect();
      const milliseconds timeout = std::max(2 * link.interval, milliseconds{2000});
      wait = push_once(link, false, timeout, client);
    } catch (const ShutDownError&) {
      return;  // the manager is going away
    } catch (const std::exception& e) {
      log_error(link, fmt::format("internal error: {}", e.what()));
      wait = link.interval;
    }
    {
      std::lock_guard lock(status_mutex);
      link.status.backlog_samples = outbox.backlog(link.outbox_link);
      link.status.dropped_samples = outbox.dropped(link.outbox_link);
    }
    if (wait.count() > 0) {
      std::unique_lock lock(wake_mutex);
      wake.wait_for(lock, stop, wait, [] { return false; });
    }
  }
  std::unique_lock lock(wake_mutex);
  if (!leaving) return;
  lock.unlock();
  try {
    collect();
    push_once(link, true, options.leave_timeout, client);
  } catch (const std::exception& e) {
    spdlog::debug("push to {}: the last report failed: {}", link.url.str(), e.what());
  }
}

void Pusher::start() {
  Impl& self = *impl_;
  std::lock_guard lock(self.links_mutex);
  if (self.started) return;
  self.started = true;
  for (const auto& link : self.links) self.start_link(*link);
  if (!self.links.empty()) {
    spdlog::info("node {} reports to {} coordinator(s): {}", self.node.name, self.links.size(),
                 fmt::join(self.options.coordinators, ", "));
  }
}

void Pusher::set_found_coordinators(const std::vector<std::string>& urls) {
  Impl& self = *impl_;
  std::set<std::string> wanted;
  for (const std::string& text : urls) {
    try {
      const HttpUrl url = parse_http_url(text, "coordinator url");
      if (!self.options.token && !is_loopback_host(url.host)) {
        spdlog::error(
            "coordinator {} is on another machine and this agent has no token for it (--join-token-file "
            "or --token-file): not reporting to it",
            url.str());
        continue;
      }
      wanted.insert(url.str());
    } catch (const InputError& e) {
      spdlog::warn("ignoring a coordinator found in etcd: {}", e.what());
    }
  }
  std::vector<std::unique_ptr<Impl::Link>> stopping;
  {
    std::lock_guard lock(self.links_mutex);
    for (auto it = self.links.begin(); it != self.links.end();) {
      Impl::Link& link = **it;
      if (link.found && !wanted.contains(link.url.str())) {
        spdlog::info("coordinator {} is gone from etcd: no longer reporting to it", link.url.str());
        link.thread.request_stop();
        stopping.push_back(std::move(*it));
        it = self.links.erase(it);
        continue;
      }
      wanted.erase(link.url.str());  // already a link (found or --join)
      ++it;
    }
    for (const std::string& url : wanted) {
      Impl::Link& link = self.add_link(parse_http_url(url, "coordinator url"), /*found=*/true);
      spdlog::info("coordinator {} found in etcd: reporting to it", url);
      if (self.started) self.start_link(link);
    }
  }
  stopping.clear();  // joins their threads, outside the lock (a report in flight ends within its deadline)
}

void Pusher::stop(bool leaving) {
  Impl& self = *impl_;
  {
    std::lock_guard lock(self.wake_mutex);
    self.leaving = leaving;
  }
  std::lock_guard lock(self.links_mutex);
  for (const auto& link : self.links) link->thread.request_stop();
  for (const auto& link : self.links) {
    if (link->thread.joinable()) link->thread.join();
  }
}

std::vector<PushLinkStatus> Pusher::status() const {
  std::lock_guard links_lock(impl_->links_mutex);
  std::lock_guard lock(impl_->status_mutex);
  std::vector<PushLinkStatus> out;
  const auto now = steady_clock::now();
  for (const auto& link : impl_->links) {
    PushLinkStatus status = link->status;
    if (link->last_ack) status.last_ack_age_seconds = std::chrono::duration<double>(now - *link->last_ack).count();
    out.push_back(std::move(status));
  }
  return out;
}

}  // namespace gpucluster
