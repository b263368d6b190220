#include "gpucluster/node/manager.hpp"

#include "model/text.hpp"
#include "node/backend_worker.hpp"
#include "node/in_flight_gate.hpp"

#include <algorithm>
#include <cctype>
#include <set>
#include <unordered_map>
#include <utility>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

namespace gpucluster {

const char* to_string(ManagerState state) noexcept {
  switch (state) {
    case ManagerState::created: return "created";
    case ManagerState::running: return "running";
    case ManagerState::draining: return "draining";
    case ManagerState::stopped: return "stopped";
  }
  return "unknown";
}

const char* report_status(const BackendReport& report) noexcept {
  if (!report.error.empty()) return "failed";
  if (report.unavailable) return "unavailable";
  return report.devices > 0 ? "ok" : "none";
}

namespace {
std::string describe_failures(const std::vector<BackendReport>& failed) {
  std::vector<std::string> parts;
  for (const BackendReport& report : failed) {
    std::string_view why = report.error.empty() ? report.note : report.error;
    if (why.starts_with("no devices: ")) why.remove_prefix(std::string_view("no devices: ").size());
    parts.push_back(fmt::format("{}: {}", report.backend, why));
  }
  return fmt::format("requested backend{} cannot be used: {}", failed.size() > 1 ? "s" : "", fmt::join(parts, "; "));
}

std::string failed_names(const std::vector<BackendReport>& failed) {
  std::vector<std::string> names;
  for (const BackendReport& report : failed) names.push_back(report.backend);
  return fmt::format("{}", fmt::join(names, ","));
}
}  // namespace

BackendUnavailableError::BackendUnavailableError(std::vector<BackendReport> failed)
    : InputError(describe_failures(failed), "backends", failed_names(failed),
                 "a requested backend must load and discover its devices"),
      failed_(std::move(failed)) {}

namespace {
// One backend failing to shut down must not skip the others.
void shut_down_backend(Backend& backend) {
  try {
    backend.shutdown();
  } catch (const std::exception& e) {
    spdlog::error("backend {} failed to shut down: {}", backend.name(), e.what());
  }
}

// "0000:65:00.0" and "00000000:65:00.0" (NVML's 8-digit domain) name the same
// device (model/text.hpp's normalisation); a text that is no bus id is compared as written, case aside.
std::string normalise_pci_bus_id(std::string id) {
  if (std::optional<std::string> normal = text::normalise_pci_bus_id(id)) return std::move(*normal);
  std::transform(id.begin(), id.end(), id.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return id;
}

// "300ms", "5s": durations in messages, in the unit the caller most likely wrote.
std::string describe_duration(std::chrono::nanoseconds duration) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(duration);
  if (ms.count() >= 1000 && ms.count() % 1000 == 0) return fmt::format("{}s", ms.count() / 1000);
  return fmt::format("{}ms", ms.count());
}

std::string resolve_host(const ManagerConfig& config) {
  std::string host = config.host.empty() ? local_host_name() : config.host;
  validate_identifier(host, "host");
  return host;
}
}  // namespace

Manager::Manager(ManagerConfig config, std::vector<BackendPtr> backends)
    : config_(std::move(config)),
      host_(resolve_host(config_)),
      backends_(std::move(backends)),
      store_(config_.history, config_.validation, config_.clock),
      gate_(std::make_unique<InFlightGate>()) {
  validate_scoring_config(config_.scoring);
  if (config_.backend_timeout.count() <= 0) {
    throw InputError("backend_timeout", fmt::format("{}ns", config_.backend_timeout.count()), "must be positive");
  }
  if (config_.discovery_timeout.count() <= 0) {
    throw InputError("discovery_timeout", fmt::format("{}ns", config_.discovery_timeout.count()), "must be positive");
  }
  if (config_.sample_interval.count() < 0) {
    throw InputError("sample_interval", fmt::format("{}ns", config_.sample_interval.count()), "must be >= 0");
  }
  for (const BackendPtr& backend : backends_) {
    if (!backend) throw InputError("backends", "null", "every backend must be non-null");
  }
  for (const std::string& name : config_.required_backends) {
    const bool given = std::any_of(backends_.begin(), backends_.end(),
                                   [&](const BackendPtr& backend) { return backend->name() == name; });
    if (!given) throw InputError("required_backends", name, "must name one of this manager's backends");
  }
}

Manager::~Manager() {
  shutdown();
}

InFlightGuard Manager::enter(const char* operation) const {
  return gate_->enter(operation);  // closed from `draining` on
}

Timestamp Manager::now() const {
  return config_.clock ? config_.clock() : now_timestamp();
}

void Manager::start(bool background_sampling) {
  std::lock_guard lifecycle(lifecycle_mutex_);
  const ManagerState state = state_.load();
  if (state == ManagerState::running) return;
  if (state != ManagerState::created) throw ShutDownError("start");

  // spdlog creates its registry on first use; make that happen here, before
  // the backend threads log at once. (C++ makes it thread-safe, but the guard
  // is inside the uninstrumented libspdlog, so ThreadSanitizer cannot see it.)
  spdlog::default_logger_raw();

  // Every backend discovers on its own worker thread, all at once, under one
  // deadline: a vendor library whose init hangs stalls only its own backend.
  std::vector<std::shared_ptr<BackendWorker>> started;
  started.reserve(backends_.size());
  for (BackendPtr& backend : backends_) {
    const Backend& source = *backend;
    auto worker = std::make_shared<BackendWorker>(
        std::move(backend), host_,
        [this, &source](const DeviceKey& key, const SampleOutcome& outcome, std::chrono::nanoseconds took) {
          sample_duration_.observe(took);
          apply_outcome(source, key, outcome);
        });
    worker->launch();
    started.push_back(std::move(worker));
  }
  backends_.clear();
  const auto deadline = BackendWorker::Clock::now() + config_.discovery_timeout;

  // Results are taken in the callers' order (richest first), whatever order
  // they finished in, so de-duplication by PCI bus id keeps the richer backend.
  std::set<std::string> seen_pci_bus_ids;
  // Logged once every backend has answered (or missed its deadline): a
  // backend may silence the process's stderr while it discovers (rocm.cpp).
  std::vector<std::pair<spdlog::level::level_enum, std::string>> log_later;
  for (const std::shared_ptr<BackendWorker>& worker : started) {
    const std::string name(worker->backend().name());
    BackendReport report;
    report.backend = name;
    std::optional<DiscoveryOutcome> outcome = worker->wait_discovery(deadline);
    if (!outcome) {
      report.error = fmt::format("backend {} did not finish discovery within {}", name,
                                 describe_duration(config_.discovery_timeout));
      log_later.emplace_back(spdlog::level::warn,
                             fmt::format("{}; its devices are left out (the other backends go on)", report.error));
      // Never sampled, and its late result is never taken: it cannot touch the
      // manager again. It shuts its backend down itself when discover() returns.
      worker->stop(std::chrono::nanoseconds{0});
      reports_.push_back(std::move(report));
      report_backends_.push_back(nullptr);
      continue;
    }
    std::vector<DeviceKey> keys;
    if (auto* failure = std::get_if<std::string>(&*outcome)) {
      report.error = std::move(*failure);
      log_later.emplace_back(spdlog::level::warn,
                             fmt::format("backend {} failed to discover devices: {}", name, report.error));
    } else {
      Discovery& discovery = std::get<Discovery>(*outcome);
      report.note = std::move(discovery.note);
      report.unavailable = discovery.unavailable;
      if (report.unavailable) {
        log_later.emplace_back(spdlog::level::debug, fmt::format("backend {} skipped: {}", name, report.note));
      }
      std::size_t duplicates = 0;
      try {
        for (DeviceInfo& info : discovery.devices) {
          // One physical GPU seen by two backends (rocm and sysfs) is kept once:
          // by the earlier backend, which callers list richest first.
          if (info.pci_bus_id && !seen_pci_bus_ids.insert(normalise_pci_bus_id(*info.pci_bus_id)).second) {
            ++duplicates;
            continue;
          }
          DeviceKey key = info.key;
          store_.add_device(std::move(info));  // validates: a broken device fails its backend, not start()
          keys.push_back(std::move(key));
        }
      } catch (const std::exception& e) {
        report.error = e.what();
        log_later.emplace_back(
            spdlog::level::warn,
            fmt::format("backend {} reported a device that cannot be registered: {}", name, e.what()));
      }
      report.devices = keys.size();
      if (duplicates > 0) {
        report.note += fmt::format("{}{} device(s) already found by an earlier backend",
                                   report.note.empty() ? "" : "; ", duplicates);
      }
    }
    worker->set_devices(std::move(keys));
    workers_.push_back(worker);
    reports_.push_back(std::move(report));
    report_backends_.push_back(&worker->backend());
  }
  for (const auto& [level, message] : log_later) spdlog::log(level, "{}", message);

  std::vector<BackendReport> failed;
  for (const BackendReport& report : reports_) {
    const bool required = std::find(config_.required_backends.begin(), config_.required_backends.end(),
                                    report.backend) != config_.required_backends.end();
    if (required && (report.unavailable || !report.error.empty())) failed.push_back(report);
  }
  if (!failed.empty()) {
    shutdown_locked();  // nothing was published: stop what was started, then refuse
    throw BackendUnavailableError(std::move(failed));
  }

  state_.store(ManagerState::running);  // publishes workers_ to sample_now and the sampler
  sample_now();
  if (background_sampling && config_.sample_interval.count() > 0 && !workers_.empty()) {
    sampler_ = std::thread([this] { sampler_loop(); });
  }
}

void Manager::sample_now() {
  const InFlightGuard guard = enter("sample");
  if (state_.load() != ManagerState::running) return;  // nothing discovered yet
  const auto deadline = BackendWorker::Clock::now() + config_.backend_timeout;
  std::vector<std::uint64_t> passes;
  passes.reserve(workers_.size());
  for (const auto& worker : workers_) passes.push_back(worker->request_pass());
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    if (!workers_[i]->wait_pass(passes[i], deadline)) {
      mark_backend_late(*workers_[i],
                        fmt::format("did not answer within {}", describe_duration(config_.backend_timeout)));
    }
  }
}

void Manager::apply_outcome(const Backend& backend, const DeviceKey& key, const SampleOutcome& outcome) {
  if (const auto* error = std::get_if<std::string>(&outcome)) {
    backend_errors_.fetch_add(1);
    spdlog::warn("{}: {} backend failed to sample: {}", key.str(), backend.name(), *error);
    mark_unavailable(key, *error);
    return;
  }
  if (std::holds_alternative<NothingToReport>(outcome)) return;  // no sample is made up
  try {
    if (store_.record(key, std::get<Sample>(outcome)) == RecordOutcome::duplicate) {
      duplicates_.fetch_add(1, std::memory_order_relaxed);
    }
    store_.set_availability(key, true);
  } catch (const ValidationError& e) {
    // A device a caller unregistered since discovery: its sample has nowhere to
    // go, which is no one's error (not counted).
    if (e.reason() == RejectReason::unknown_device) return;
    count_rejected_sample(e.reason());
    spdlog::warn("rejected sample from {} backend: {}", backend.name(), e.what());
  } catch (const UnknownDeviceError&) {
    // Unregistered between recording and marking it available: nothing to do.
  }
}

void Manager::mark_backend_late(BackendWorker& worker, const std::string& why) {
  const std::string reason = fmt::format("backend {} {}", worker.backend().name(), why);
  spdlog::warn("{}", reason);
  for (const DeviceKey& key : worker.devices()) mark_unavailable(key, reason);
}

void Manager::mark_unavailable(const DeviceKey& key, const std::string& reason) {
  try {
    store_.set_availability(key, false, reason);
  } catch (const UnknownDeviceError&) {
    // Unregistered by a caller meanwhile: nothing left to mark.
  }
}

// Asks every idle backend for a pass each interval; a backend whose pass has
// run past backend_timeout gets its devices marked unavailable (once per pass).
void Manager::sampler_loop() {
  std::vector<bool> reported_late(workers_.size(), false);
  std::unique_lock lock(sampler_mutex_);
  while (!sampler_wake_.wait_for(lock, config_.sample_interval, [this] { return stop_sampler_; })) {
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      BackendWorker& worker = *workers_[i];
      const auto running = worker.running_for();
      if (running && *running > config_.backend_timeout) {
        if (!reported_late[i]) {
          mark_backend_late(worker, fmt::format("has not answered for {}",
                                                std::chrono::duration_cast<std::chrono::milliseconds>(*running)));
        }
        reported_late[i] = true;
        continue;
      }
      reported_late[i] = false;
      worker.request_pass(/*background=*/true);
    }
  }
}

void Manager::count_rejected_sample(RejectReason reason) const {
  rejected_[static_cast<std::size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
}

void Manager::register_device(DeviceInfo info) {
  const InFlightGuard guard = enter("register a device");
  store_.add_device(std::move(info));
}

bool Manager::unregister_device(const DeviceKey& key) {
  const InFlightGuard guard = enter("unregister a device");
  return store_.remove_device(key);
}

RecordOutcome Manager::record(const DeviceKey& key, const Sample& sample) {
  const InFlightGuard guard = enter("record a sample");
  try {
    const RecordOutcome outcome = store_.record(key, sample);
    if (outcome == RecordOutcome::duplicate) duplicates_.fetch_add(1, std::memory_order_relaxed);
    return outcome;
  } catch (const ValidationError& e) {
    count_rejected_sample(e.reason());
    throw;
  }
}

void Manager::set_availability(const DeviceKey& key, bool available, std::string reason) {
  const InFlightGuard guard = enter("set availability");
  store_.set_availability(key, available, std::move(reason));
}

std::vector<DeviceState> Manager::devices() const {
  const InFlightGuard guard = enter("list devices");
  return store_.states();
}

void Manager::visit_devices(const std::function<void(const DeviceStateRef&)>& visit) const {
  const InFlightGuard guard = enter("list devices");
  store_.visit_states(visit);
}

DeviceState Manager::device(const DeviceKey& key) const {
  const InFlightGuard guard = enter("read a device");
  std::optional<DeviceState> state = store_.state(key);
  if (!state) throw UnknownDeviceError(key.str());
  return std::move(*state);
}

std::vector<Sample> Manager::history(const DeviceKey& key, std::size_t limit) const {
  const InFlightGuard guard = enter("read history");
  return store_.history(key, limit);
}

WindowStats Manager::window_stats(const DeviceKey& key) const {
  const InFlightGuard guard = enter("read statistics");
  return store_.window_stats(key);
}

ClusterAggregate Manager::aggregate() const {
  return aggregate({});
}

ClusterAggregate Manager::aggregate(const std::function<bool(const std::string& host)>& include_host) const {
  const InFlightGuard guard = enter("aggregate");
  return store_.aggregate(include_host);
}

std::vector<RankedDevice> Manager::rank(std::uint64_t min_free_memory_bytes) const {
  const InFlightGuard guard = enter("rank devices");
  const std::vector<DeviceState> states = store_.states();
  return rank_devices(states, config_.scoring, now(), min_free_memory_bytes);
}

Selection Manager::select(std::uint64_t min_free_memory_bytes) const {
  const InFlightGuard guard = enter("select a device");
  DeviceSelector selector(config_.scoring, now(), min_free_memory_bytes);
  store_.visit_states([&selector](const DeviceStateRef& device) { selector.add(device); });
  return selector.result();
}

DeviceKey Manager::resolve_key(std::string_view text) const {
  const InFlightGuard guard = enter("resolve a device id");
  if (text.find('/') != std::string_view::npos) return parse_device_key(text, host_);
  DeviceKey local{host_, std::string(text)};
  if (store_.contains(local)) return local;
  // A bare local id that exactly one device (on any host) has, e.g. a fleet's cuda:0.
  std::vector<std::string> matches;
  for (const DeviceState& state : store_.states()) {
    if (state.info->key.local_id == text) matches.push_back(state.info->key.str());
  }
  if (matches.size() > 1) throw AmbiguousDeviceError(std::string(text), std::move(matches));
  return matches.empty() ? local : parse_device_key(matches.front(), host_);
}

Strategy plan_strategy(std::string_view text) {
  const std::optional<Strategy> strategy = parse_strategy(text);
  if (!strategy) throw PlanError("strategy", std::string(text), "must be uniform, capacity or memory");
  return *strategy;
}

void check_plan_request(const PlanRequest& request) {
  const std::string strategy(to_string(request.strategy));
  if (request.strategy == Strategy::memory) {
    if (!request.layers || *request.layers == 0) {
      throw PlanError("layers", request.layers ? "0" : "absent", "a memory plan needs layers > 0");
    }
    if (request.items) {
      throw PlanError("items", std::to_string(*request.items),
                      "items apply to uniform and capacity plans; a memory plan splits layers");
    }
    if (request.max_per_device) {
      throw PlanError("max_per_device", std::to_string(*request.max_per_device),
                      "applies to uniform and capacity plans; a memory plan's shards are bounded by each device's "
                      "free memory (give layer_bytes)");
    }
  } else {
    if (!request.items) throw PlanError("items", "absent", fmt::format("a {} plan needs items", strategy));
    if (request.layers) {
      throw PlanError("layers", std::to_string(*request.layers), "layers apply only to the memory strategy");
    }
    if (request.layer_bytes) {
      throw PlanError("layer_bytes", std::to_string(*request.layer_bytes),
                      "layer_bytes applies only to the memory strategy");
    }
  }
  if (request.strategy != Strategy::capacity && !request.weights.empty()) {
    throw PlanError("weights", request.weights.front().first, "weights apply only to the capacity strategy");
  }
}

namespace {

std::vector<WeightedDevice> weights_from_compute_units(const std::vector<const DeviceState*>& devices) {
  std::vector<WeightedDevice> weighted;
  for (const DeviceState* state : devices) {
    if (!state->info->compute_units) {
      throw PlanError("weights", state->info->key.str(),
                      "this device's compute units are unknown; give explicit weights");
    }
    weighted.push_back({state->info->key, static_cast<double>(*state->info->compute_units)});
  }
  return weighted;
}

}  // namespace

Plan Manager::plan(const PlanRequest& request) const {
  const InFlightGuard guard = enter("plan work");
  check_plan_request(request);
  const std::vector<DeviceState> states = store_.states();  // sorted by key: plans list devices in that order
  std::unordered_map<DeviceKey, RankedDevice, DeviceKeyHash> ranked;
  for (RankedDevice& entry : rank_devices(states, config_.scoring, now())) ranked.emplace(entry.key, std::move(entry));
  std::vector<const DeviceState*> usable_devices;
  std::vector<LeftOut> left_out;
  for (const DeviceState& state : states) {
    const RankedDevice& entry = ranked.at(state.info->key);
    if (can_take_plan_work(entry.eligibility)) {
      usable_devices.push_back(&state);
    } else {
      left_out.push_back({state.info->key, entry.reason});
    }
  }
  if (usable_devices.empty()) {
    throw PlanError("devices", fmt::format("0 usable of {} registered", states.size()),
                    "a plan needs at least one available device with fresh telemetry");
  }
  Plan plan;
  switch (request.strategy) {
    case Strategy::uniform: {
      std::vector<DeviceKey> keys;
      for (const DeviceState* state : usable_devices) keys.push_back(state->info->key);
      plan = plan_uniform(keys, *request.items, request.max_per_device);
      break;
    }
    case Strategy::capacity: {
      if (request.weights.empty()) {
        plan = plan_capacity(weights_from_compute_units(usable_devices), *request.items, request.max_per_device);
        break;
      }
      std::vector<WeightedDevice> weighted;
      for (const auto& [id, weight] : request.weights) {
        const DeviceKey key = resolve_key(id);
        const auto it = ranked.find(key);
        if (it == ranked.end()) throw PlanError(fmt::format("weights[{}]", id), id, "names no registered device");
        if (!can_take_plan_work(it->second.eligibility)) {
          throw PlanError(fmt::format("weights[{}]", id), id, "the device cannot take work: " + it->second.reason);
        }
        weighted.push_back({key, weight});
      }
      // Usable devices the weights leave out are shown as such, never dropped silently.
      for (const DeviceState* state : usable_devices) {
        const bool weighed = std::any_of(weighted.begin(), weighted.end(),
                                         [&](const WeightedDevice& w) { return w.device == state->info->key; });
        if (!weighed) left_out.push_back({state->info->key, "no weight given"});
      }
      plan = plan_capacity(weighted, *request.items, request.max_per_device);
      break;
    }
    case Strategy::memory: {
      std::vector<MemoryDevice> memory;
      for (const DeviceState* state : usable_devices) {
        memory.push_back({state->info->key, static_cast<std::uint64_t>(state->latest->memory_free_bytes())});
      }
      plan = plan_memory(memory, *request.layers, request.layer_bytes);
      break;
    }
  }
  std::sort(left_out.begin(), left_out.end(), [](const LeftOut& a, const LeftOut& b) { return a.device < b.device; });
  plan.left_out = std::move(left_out);
  return plan;
}

std::vector<BackendReport> Manager::backend_reports() const {
  const InFlightGuard guard = enter("report backends");
  // start() writes the reports, then publishes them with `running`: until
  // then (discovery still going on) there are none to read.
  if (state_.load() != ManagerState::running) return {};
  std::vector<BackendReport> reports = reports_;
  for (std::size_t i = 0; i < reports.size() && i < report_backends_.size(); ++i) {
    if (report_backends_[i] != nullptr) reports[i].implausible_readings = report_backends_[i]->implausible_readings();
  }
  return reports;
}

std::array<std::uint64_t, kRejectReasonCount> Manager::rejected_samples() const {
  std::array<std::uint64_t, kRejectReasonCount> counts{};
  for (std::size_t i = 0; i < counts.size(); ++i) counts[i] = rejected_[i].load(std::memory_order_relaxed);
  return counts;
}

void Manager::shutdown() {
  std::lock_guard lifecycle(lifecycle_mutex_);
  shutdown_locked();
}

void Manager::shutdown_locked() {
  if (state_.load() == ManagerState::stopped) return;
  state_.store(ManagerState::draining);
  gate_->close();  // refuses new operations and waits for the counted ones
  {
    std::lock_guard lock(sampler_mutex_);
    stop_sampler_ = true;
  }
  sampler_wake_.notify_all();
  if (sampler_.joinable()) sampler_.join();
  // Every worker shuts its backend down on its own thread, all at once, and
  // all get one backend_timeout: a stuck one (in a read or in its shutdown) is
  // left behind and never touches the manager again.
  for (const auto& worker : workers_) worker->request_stop();
  const auto deadline = BackendWorker::Clock::now() + config_.backend_timeout;
  for (const auto& worker : workers_) {
    if (!worker->wait_stopped(deadline)) {
      spdlog::error("backend {} is stuck in a call; it is left to shut down when the call returns",
                    worker->backend().name());
    }
  }
  for (const BackendPtr& backend : backends_) shut_down_backend(*backend);  // never started
  report_backends_.clear();                                                 // they die with their workers
  workers_.clear();  // release drivers and handles now, not at destruction
  backends_.clear();
  store_.clear();
  state_.store(ManagerState::stopped);
}

}  // namespace gpucluster
