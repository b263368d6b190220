#include "gpucluster/cluster/liveness.hpp"

#include <fmt/format.h>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {

const char* to_string(NodeState state) noexcept {
  switch (state) {
    case NodeState::alive: return "alive";
    case NodeState::suspect: return "suspect";
    case NodeState::down: return "down";
  }
  return "unknown";
}

namespace {

std::string shown(std::chrono::nanoseconds duration) {
  return fmt::format("{} ms", std::chrono::duration_cast<std::chrono::milliseconds>(duration).count());
}

}  // namespace

void validate_liveness(const LivenessConfig& config, std::chrono::nanoseconds report_interval) {
  using std::chrono::milliseconds;
  using std::chrono::seconds;
  if (report_interval < milliseconds{100} || report_interval > seconds{60}) {
    throw InputError("--report-interval", shown(report_interval), "must be from 100 ms to 60 s");
  }
  if (config.suspect_after < 2 * report_interval) {
    throw InputError("--suspect-after", shown(config.suspect_after),
                     fmt::format("must be at least twice the report interval ({})", shown(report_interval)));
  }
  if (config.evict_after <= config.suspect_after) {
    throw InputError("--evict-after", shown(config.evict_after),
                     fmt::format("must be longer than --suspect-after ({})", shown(config.suspect_after)));
  }
  if (config.forget_after < config.evict_after) {
    throw InputError("--forget-after", shown(config.forget_after),
                     fmt::format("must be at least --evict-after ({})", shown(config.evict_after)));
  }
}

LivenessStep next_state(const LivenessInput& input, const LivenessConfig& config) {
  if (input.state == NodeState::down) {
    return {NodeState::down, input.now - input.state_since > config.forget_after, {}};
  }
  const std::chrono::nanoseconds silent = input.now - input.last_report;
  if (silent > config.evict_after) {
    return {NodeState::down, false,
            fmt::format("no report for {:.1f} s", std::chrono::duration<double>(silent).count())};
  }
  if (silent > config.suspect_after) return {NodeState::suspect, false, {}};
  return {NodeState::alive, false, {}};
}

std::chrono::steady_clock::time_point stable_until(const LivenessInput& input, const LivenessConfig& config) {
  switch (input.state) {
    case NodeState::alive: return input.last_report + config.suspect_after;
    case NodeState::suspect: return input.last_report + config.evict_after;
    case NodeState::down: return input.state_since + config.forget_after;
  }
  return input.now;
}

}  // namespace gpucluster
