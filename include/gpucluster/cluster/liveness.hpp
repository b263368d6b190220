#pragma once
// When a node that reports to a coordinator is alive, suspect, down or
// forgotten: a pure function of the coordinator's own monotonic clock (the
// time each report was received), never of the sender's timestamps, so a
// node whose clock is hours off is judged like any other. docs/cluster.md
// "States and timings" is the contract.
#include <chrono>
#include <cstdint>
#include <string>

namespace gpucluster {

enum class NodeState : std::uint8_t {
  alive,    // reports arrive
  suspect,  // none for longer than suspect_after: still selectable
  down,     // none for longer than evict_after, or it left: its devices leave select, plan and the totals
};
const char* to_string(NodeState state) noexcept;

struct LivenessConfig {
  std::chrono::nanoseconds suspect_after = std::chrono::seconds{3};
  std::chrono::nanoseconds evict_after = std::chrono::seconds{10};
  std::chrono::nanoseconds forget_after = std::chrono::minutes{10};  // time spent down
};

// The rules between the settings and the report interval the coordinator asks
// for (docs/cluster.md): 100 ms ≤ interval ≤ 60 s, suspect_after ≥ 2 × interval,
// evict_after > suspect_after, forget_after ≥ evict_after. Throws InputError
// naming the flag (--report-interval, --suspect-after, --evict-after, --forget-after).
void validate_liveness(const LivenessConfig& config, std::chrono::nanoseconds report_interval);

struct LivenessInput {
  std::chrono::steady_clock::time_point now;
  std::chrono::steady_clock::time_point last_report;  // receipt of the newest accepted report
  std::chrono::steady_clock::time_point state_since;  // when `state` began
  NodeState state = NodeState::alive;
};

struct LivenessStep {
  NodeState state = NodeState::alive;
  bool forget = false;  // down for longer than forget_after: erase the node
  std::string reason;   // why it is down ("no report for 10.0 s"), empty otherwise
};

// The node's state at `now`. Exactly suspect_after (evict_after) without a
// report is not yet suspect (down); one nanosecond more is. A down node stays
// down until a report arrives (which the coordinator handles, not this
// function), and is forgotten once it has been down for longer than forget_after.
LivenessStep next_state(const LivenessInput& input, const LivenessConfig& config);

// The last time at which next_state still answers the node's current state
// (no report arriving meanwhile): last_report + suspect_after for an alive
// node, + evict_after for a suspect one, state_since + forget_after for a
// down one. The coordinator's liveness pass skips its walk over the nodes
// until the earliest of these has passed.
std::chrono::steady_clock::time_point stable_until(const LivenessInput& input, const LivenessConfig& config);

}  // namespace gpucluster
