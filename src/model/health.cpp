#include "gpucluster/model/health.hpp"

#include <algorithm>
#include <array>

#include <fmt/format.h>

#include "gpucluster/model/errors.hpp"
#include "model/text.hpp"

namespace gpucluster {

const char* to_string(HealthState state) noexcept {
  switch (state) {
    case HealthState::unknown: return "unknown";
    case HealthState::pass: return "pass";
    case HealthState::warn: return "warn";
    case HealthState::fail: return "fail";
    case HealthState::lost: return "lost";
  }
  return "unknown";
}

std::optional<HealthState> parse_health_state(std::string_view text) noexcept {
  for (const HealthState state :
       {HealthState::unknown, HealthState::pass, HealthState::warn, HealthState::fail, HealthState::lost}) {
    if (text == to_string(state)) return state;
  }
  return std::nullopt;
}

std::optional<int> health_state_value(HealthState state) noexcept {
  switch (state) {
    case HealthState::unknown: return std::nullopt;
    case HealthState::pass: return 0;
    case HealthState::warn: return 10;
    case HealthState::fail: return 20;
    case HealthState::lost: return 30;
  }
  return std::nullopt;
}

const char* to_string(HealthSource source) noexcept {
  switch (source) {
    case HealthSource::xid: return "xid";
    case HealthSource::ecc: return "ecc";
    case HealthSource::remap: return "remap";
    case HealthSource::retired_pages: return "retired_pages";
    case HealthSource::pcie: return "pcie";
    case HealthSource::clocks: return "clocks";
    case HealthSource::lost: return "lost";
    case HealthSource::backend: return "backend";
  }
  return "backend";
}

const char* to_string(SuggestedAction action) noexcept {
  switch (action) {
    case SuggestedAction::none: return "none";
    case SuggestedAction::restart_app: return "restart_app";
    case SuggestedAction::reset_gpu: return "reset_gpu";
    case SuggestedAction::reboot: return "reboot";
    case SuggestedAction::drain: return "drain";
    case SuggestedAction::inspect_hardware: return "inspect_hardware";
    case SuggestedAction::rma: return "rma";
  }
  return "none";
}

namespace {

using S = HealthState;
using A = SuggestedAction;

// docs/design/health-plan.md "The XID rows we rely on", from NVIDIA's XID
// catalog (its immediate action → our state and action). In code order.
constexpr std::array<XidEntry, 30> kXidCatalog{{
    {8, "GPU stopped processing", S::warn, A::restart_app},
    {13, "graphics engine exception", S::warn, A::restart_app},
    {31, "GPU memory page fault", S::warn, A::restart_app},
    {43, "GPU stopped processing", S::pass, A::none},
    {45, "preemptive cleanup, due to previous errors", S::pass, A::none},
    {48, "double-bit ECC error", S::fail, A::reset_gpu},
    {62, "internal micro-controller halt", S::fail, A::reset_gpu},
    {63, "ECC page retirement or row remapping event", S::pass, A::none},
    {64, "ECC page retirement or row remapping failure", S::fail, A::reset_gpu},
    {68, "NVDEC0 exception", S::warn, A::restart_app},
    {74, "NVLink error", S::warn, A::inspect_hardware},
    {79, "GPU has fallen off the bus", S::fail, A::reboot},
    {92, "high single-bit ECC error rate", S::pass, A::none},
    {94, "contained memory error", S::warn, A::restart_app},
    {95, "uncontained memory error", S::fail, A::reset_gpu},
    {109, "context switch timeout", S::fail, A::reset_gpu},
    {110, "security fault", S::fail, A::reset_gpu},
    {119, "GSP RPC timeout", S::fail, A::reset_gpu},
    {120, "GSP error", S::fail, A::reset_gpu},
    {136, "link training failure", S::fail, A::reset_gpu},
    {140, "unrecovered ECC error", S::fail, A::reset_gpu},
    {143, "GPU initialization failure", S::fail, A::reset_gpu},
    {144, "NVLink SAW error", S::warn, A::inspect_hardware},
    {145, "NVLink RLW error", S::warn, A::inspect_hardware},
    {150, "NVLink MSE error", S::warn, A::inspect_hardware},
    {154, "GPU recovery action changed", S::warn, A::inspect_hardware},
    {155, "NVLink software error", S::fail, A::reset_gpu},
    {156, "resource retirement event", S::fail, A::reset_gpu},
    {158, "fatal timeout", S::fail, A::reset_gpu},
    {999, "unknown XID (reported by the driver as such)", S::warn, A::inspect_hardware},
}};

// The rows of the other sources (health_code in the header).
struct SignalRule {
  HealthSource source;
  std::uint32_t code;
  std::string_view meaning;
  HealthState state;
  SuggestedAction action;
};
constexpr std::array<SignalRule, 11> kSignalRules{{
    {HealthSource::ecc, health_code::kEccSingleBit, "corrected ECC errors", S::pass, A::none},
    {HealthSource::ecc, health_code::kEccDoubleBit, "uncorrected ECC error", S::warn, A::reset_gpu},
    {HealthSource::remap, health_code::kRemapPending, "row remapping pending: a reset applies it", S::fail,
     A::reset_gpu},
    {HealthSource::remap, health_code::kRemapFailure, "row remapping failed", S::fail, A::rma},
    {HealthSource::retired_pages, health_code::kPagesPending, "page retirement pending: a reboot applies it", S::warn,
     A::reboot},
    {HealthSource::retired_pages, health_code::kPagesOverSoft, "retired pages past the soft limit", S::warn,
     A::inspect_hardware},
    {HealthSource::retired_pages, health_code::kPagesOverHard, "retired pages past the hard limit", S::fail, A::rma},
    {HealthSource::pcie, health_code::kPcieReplayRate, "PCIe replays faster than the limit", S::warn,
     A::inspect_hardware},
    {HealthSource::clocks, health_code::kHwSlowdown, "hardware slowdowns sustained", S::warn, A::inspect_hardware},
    {HealthSource::lost, health_code::kNotAnswering, "the device does not answer", S::lost, A::reboot},
    {HealthSource::backend, health_code::kEventsUnavailable, "health events cannot be watched", S::warn, A::none},
}};

}  // namespace

std::span<const XidEntry> xid_catalog() noexcept {
  return kXidCatalog;
}

const XidEntry* find_xid(std::uint32_t code) noexcept {
  const auto catalog = xid_catalog();
  const auto it = std::lower_bound(catalog.begin(), catalog.end(), code,
                                   [](const XidEntry& e, std::uint32_t c) { return e.code < c; });
  return it != catalog.end() && it->code == code ? &*it : nullptr;
}

void validate_health_policy(const HealthPolicy& policy) {
  if (policy.warn_hold < std::chrono::seconds{1} || policy.warn_hold > std::chrono::hours{24}) {
    throw InputError("--health-warn-hold",
                     fmt::format("{} s", std::chrono::duration_cast<std::chrono::seconds>(policy.warn_hold).count()),
                     "must be from 1 s to 24 h");
  }
  if (policy.unknown_xid != HealthState::pass && policy.unknown_xid != HealthState::warn &&
      policy.unknown_xid != HealthState::fail) {
    throw InputError("--health-unknown-xid", to_string(policy.unknown_xid), "must be pass, warn or fail");
  }
}

HealthVerdict judge(const HealthSignal& signal, const HealthPolicy& policy) {
  HealthVerdict verdict;
  if (signal.source == HealthSource::xid) {
    const XidEntry* entry = find_xid(signal.code);
    const std::string_view meaning = entry != nullptr ? entry->meaning : "not in the catalog";
    if (policy.ignored_xids.contains(signal.code)) {
      verdict.ignored = true;
      verdict.message = fmt::format("XID {}: {} (ignored: an application error)", signal.code, meaning);
      return verdict;
    }
    verdict.state = entry != nullptr ? entry->state : policy.unknown_xid;
    verdict.action = entry != nullptr ? entry->action : SuggestedAction::inspect_hardware;
    verdict.message = fmt::format("XID {}: {}", signal.code, meaning);
  } else {
    const auto rule = std::find_if(kSignalRules.begin(), kSignalRules.end(), [&](const SignalRule& r) {
      return r.source == signal.source && r.code == signal.code;
    });
    if (rule != kSignalRules.end()) {
      verdict.state = rule->state;
      verdict.action = rule->action;
      verdict.message = std::string(rule->meaning);
    } else {
      verdict.state = HealthState::warn;
      verdict.action = SuggestedAction::inspect_hardware;
      verdict.message = fmt::format("{} signal {}", to_string(signal.source), signal.code);
    }
  }
  if (!signal.detail.empty()) verdict.message += fmt::format(" ({})", text::printable(signal.detail, 200));
  verdict.sticky = verdict.state >= HealthState::fail;
  return verdict;
}

}  // namespace gpucluster
