#include "gpucluster/telemetry/health_tracker.hpp"

#include <algorithm>
#include <vector>

namespace gpucluster {

HealthVerdict HealthTracker::observe(const HealthSignal& signal, const HealthPolicy& policy) {
  HealthVerdict verdict = judge(signal, policy);
  if (signal.source == HealthSource::xid) ++xid_counts_[signal.code];
  if (verdict.ignored) return verdict;
  std::vector<HealthReason>& reasons = health_.reasons;
  auto it = std::find_if(reasons.begin(), reasons.end(), [&](const HealthReason& reason) {
    return reason.source == signal.source && reason.code == signal.code;
  });
  if (it == reasons.end()) {
    if (reasons.size() >= kMaxReasons) {
      // The mildest non-sticky reason, the oldest among equals, makes room; when all are sticky, the oldest.
      auto victim = std::min_element(reasons.begin(), reasons.end(), [](const HealthReason& a, const HealthReason& b) {
        if (a.sticky != b.sticky) return !a.sticky;
        if (a.state != b.state) return a.state < b.state;
        return a.last_seen < b.last_seen;
      });
      reasons.erase(victim);
    }
    reasons.push_back(HealthReason{.source = signal.source,
                                   .code = signal.code,
                                   .message = verdict.message,
                                   .state = verdict.state,
                                   .action = verdict.action,
                                   .first_seen = signal.at,
                                   .last_seen = signal.at,
                                   .count = 1,
                                   .sticky = verdict.sticky});
  } else {
    HealthReason& reason = *it;
    ++reason.count;
    reason.first_seen = std::min(reason.first_seen, signal.at);
    reason.last_seen = std::max(reason.last_seen, signal.at);
    reason.message = verdict.message;
    if (verdict.state >= reason.state) {
      reason.state = verdict.state;
      reason.action = verdict.action;
    }
    reason.sticky = reason.sticky || verdict.sticky;
  }
  settle(signal.at);
  return verdict;
}

void HealthTracker::answered(Timestamp at) {
  bool changed = false;
  for (HealthReason& reason : health_.reasons) {
    if (reason.state != HealthState::lost) continue;
    reason.state = HealthState::fail;
    reason.action = SuggestedAction::reboot;
    reason.sticky = true;
    reason.message += "; it answers again";
    reason.last_seen = std::max(reason.last_seen, at);
    changed = true;
  }
  if (changed) settle(at);
}

const DeviceHealth& HealthTracker::evaluate(Timestamp now, const HealthPolicy& policy) {
  std::erase_if(health_.reasons, [&](const HealthReason& reason) {
    return !reason.sticky && reason.state <= HealthState::warn && now - reason.last_seen > policy.warn_hold;
  });
  settle(now);
  return health_;
}

void HealthTracker::clear(Timestamp at) {
  health_.reasons.clear();
  settle(at);
}

void HealthTracker::settle(Timestamp at) {
  HealthState state = watched_ ? HealthState::pass : HealthState::unknown;
  for (const HealthReason& reason : health_.reasons) state = std::max(state, reason.state);
  if (state != health_.state) {
    health_.state = state;
    health_.since = at;
  }
  std::sort(health_.reasons.begin(), health_.reasons.end(), [](const HealthReason& a, const HealthReason& b) {
    if (a.state != b.state) return a.state > b.state;
    return a.last_seen > b.last_seen;
  });
}

}  // namespace gpucluster
