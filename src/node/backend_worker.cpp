#include "node/backend_worker.hpp"

#include <algorithm>
#include <utility>

#include <spdlog/spdlog.h>

namespace gpucluster {

BackendWorker::BackendWorker(BackendPtr backend, std::string host, Sink sink)
    : backend_(std::move(backend)), host_(std::move(host)), sink_(std::move(sink)) {}

BackendWorker::~BackendWorker() {
  // Only reached once the thread has ended (it holds a reference while it runs).
  if (thread_.joinable()) thread_.detach();
}

void BackendWorker::launch() {
  thread_ = std::thread([self = shared_from_this()] { self->run(); });
}

std::optional<DiscoveryOutcome> BackendWorker::wait_discovery(Clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  if (!done_.wait_until(lock, deadline, [&] { return discovered_; })) return std::nullopt;
  return std::exchange(discovery_, std::nullopt);
}

void BackendWorker::set_devices(std::vector<DeviceKey> devices) {
  std::lock_guard lock(mutex_);  // publishes them to the thread with the next pass request
  devices_ = std::move(devices);
  backoff_.assign(devices_.size(), Backoff{});
}

std::uint64_t BackendWorker::request_pass(bool background) {
  std::lock_guard lock(mutex_);
  if (requested_ > completed_) {                                   // one is pending or running
    if (!background && !running_since_) background_pass_ = false;  // an explicit request widens a pending one
    return requested_;
  }
  background_pass_ = background;
  ++requested_;
  wake_.notify_one();
  return requested_;
}

bool BackendWorker::wait_pass(std::uint64_t number, Clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  return done_.wait_until(lock, deadline, [&] { return completed_ >= number || exited_; }) && completed_ >= number;
}

std::optional<BackendWorker::Clock::duration> BackendWorker::running_for() const {
  std::lock_guard lock(mutex_);
  if (!running_since_) return std::nullopt;
  return Clock::now() - *running_since_;
}

void BackendWorker::deliver(const DeviceKey& key, const SampleOutcome& outcome, std::chrono::nanoseconds took) {
  std::lock_guard lock(deliver_mutex_);
  if (delivering_) sink_(key, outcome, took);
}

void BackendWorker::run() {
  DiscoveryOutcome found;
  try {
    found = backend_->discover(host_);
  } catch (const std::exception& e) {
    found = std::string(e.what());
  } catch (...) {
    found = std::string("unknown error");
  }
  std::unique_lock lock(mutex_);
  // Kept here, never pushed to the manager: a discovery that returns after its
  // deadline is simply never taken (stop() has been called by then).
  discovery_ = std::move(found);
  discovered_ = true;
  done_.notify_all();
  while (true) {
    wake_.wait(lock, [&] { return stop_ || requested_ > completed_; });
    if (stop_) break;
    const std::uint64_t number = requested_;
    const bool background = background_pass_;
    running_since_ = Clock::now();
    lock.unlock();
    for (std::size_t i = 0; i < devices_.size(); ++i) {
      const DeviceKey& key = devices_[i];
      Backoff& backoff = backoff_[i];
      if (background && backoff.skip > 0) {  // failing device: retried less and less often
        --backoff.skip;
        continue;
      }
      SampleOutcome outcome;
      const auto started = Clock::now();
      try {
        outcome = backend_->sample(key.local_id);
      } catch (const NoReading&) {
        outcome = NothingToReport{};
      } catch (const std::exception& e) {
        outcome = std::string(e.what());
      } catch (...) {
        outcome = std::string("unknown error");
      }
      if (std::holds_alternative<std::string>(outcome)) {
        backoff.failures = std::min(backoff.failures + 1, 31U);
        backoff.skip = std::min(std::uint32_t{1} << (backoff.failures - 1), kMaxBackoffPasses) - 1;
      } else {
        backoff = Backoff{};
      }
      deliver(key, outcome, std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started));
    }
    lock.lock();
    completed_ = number;
    running_since_.reset();
    done_.notify_all();
  }
  // The backend is shut down here, on its own thread, so a vendor shutdown call
  // that hangs (nvmlShutdown, rsmi_shut_down) is bounded by the stopper's wait
  // like any other call of the backend.
  lock.unlock();
  try {
    backend_->shutdown();
  } catch (const std::exception& e) {
    spdlog::error("backend {} failed to shut down: {}", backend_->name(), e.what());
  } catch (...) {
    spdlog::error("backend {} failed to shut down: unknown error", backend_->name());
  }
  lock.lock();
  exited_ = true;
  done_.notify_all();
}

void BackendWorker::request_stop() {
  {
    std::lock_guard fence(deliver_mutex_);  // waits for a sink call in progress
    delivering_ = false;
  }
  std::lock_guard lock(mutex_);
  stop_ = true;
  wake_.notify_all();
}

bool BackendWorker::wait_stopped(Clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  if (done_.wait_until(lock, deadline, [&] { return exited_; })) {
    lock.unlock();
    if (thread_.joinable()) thread_.join();
    return true;
  }
  abandoned_ = true;  // the thread keeps a reference to this worker and ends by itself
  lock.unlock();
  if (thread_.joinable()) thread_.detach();
  return false;
}

bool BackendWorker::stop(Clock::duration drain) {
  request_stop();
  return wait_stopped(Clock::now() + drain);
}

}  // namespace gpucluster
