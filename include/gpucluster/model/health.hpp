#pragma once
// A device's health: a verdict (PASS, WARN, FAIL, LOST, or UNKNOWN when its
// backend watches nothing) with the reasons behind it, each with a suggested
// action. docs/design/health-plan.md is the design; DCGM's health model
// (PASS 0 / WARN 10 / FAIL 20, incidents with a source and a code) is the
// anchor, and NVIDIA's XID catalog gives the default verdict per XID.
//
// This header holds the vocabulary and the policy that maps one observation
// (a HealthSignal) to a verdict; telemetry/health.hpp keeps per-device state
// over time (counts, how long a WARN is held, sticky FAILs).
#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gpucluster/model/time.hpp"

namespace gpucluster {

// Worse states compare greater: the device's state is the worst of its reasons.
enum class HealthState : std::uint8_t {
  unknown,  // the backend reports no health signal at all (fleet, host CPU): scored as pass
  pass,
  warn,  // selectable, ranked lower
  fail,  // never selected or planned; sticky until cleared or the driver reloads
  lost,  // the device does not answer (fallen off the bus, reset required)
};
const char* to_string(HealthState state) noexcept;
std::optional<HealthState> parse_health_state(std::string_view text) noexcept;
// /metrics' gpucluster_device_health value: DCGM's 0 / 10 / 20, and 30 for
// lost; nullopt for unknown (no series: unavailable is not zero).
std::optional<int> health_state_value(HealthState state) noexcept;

// Where an observation came from.
enum class HealthSource : std::uint8_t { xid, ecc, remap, retired_pages, pcie, clocks, lost, backend };
const char* to_string(HealthSource source) noexcept;

// What an operator should do about a reason (the XID catalog's immediate actions, simplified).
enum class SuggestedAction : std::uint8_t { none, restart_app, reset_gpu, reboot, drain, inspect_hardware, rma };
const char* to_string(SuggestedAction action) noexcept;

// The codes of the sources other than xid (an XID's code is the XID). The
// backends of later parts map their vendor's events and counters onto these.
namespace health_code {
inline constexpr std::uint32_t kEccSingleBit = 1;       // ecc: corrected errors (counted; the counters decide)
inline constexpr std::uint32_t kEccDoubleBit = 2;       // ecc: an uncorrected error
inline constexpr std::uint32_t kRemapPending = 1;       // remap: a row remapping waits for a reset
inline constexpr std::uint32_t kRemapFailure = 2;       // remap: a row could not be remapped
inline constexpr std::uint32_t kPagesPending = 1;       // retired_pages: a retirement waits for a reboot
inline constexpr std::uint32_t kPagesOverSoft = 2;      // retired_pages: more than the soft limit
inline constexpr std::uint32_t kPagesOverHard = 3;      // retired_pages: more than the hard limit
inline constexpr std::uint32_t kPcieReplayRate = 1;     // pcie: replays faster than the policy's rate
inline constexpr std::uint32_t kHwSlowdown = 1;         // clocks: hardware slowdowns sustained
inline constexpr std::uint32_t kNotAnswering = 1;       // lost: the device does not answer
inline constexpr std::uint32_t kEventsUnavailable = 1;  // backend: health events cannot be watched
}  // namespace health_code

// One observation a backend made: an XID, an ECC event, a counter that rose,
// a device that stopped answering.
struct HealthSignal {
  HealthSource source = HealthSource::backend;
  std::uint32_t code = 0;  // the XID, the event's bit, the counter's id
  Timestamp at{};
  std::string detail;  // the vendor's text, if any

  bool operator==(const HealthSignal&) const = default;
};

// One reason of a device's verdict: the signals of one (source, code), merged.
struct HealthReason {
  HealthSource source = HealthSource::backend;
  std::uint32_t code = 0;
  std::string message;  // "XID 79: GPU has fallen off the bus"
  HealthState state = HealthState::pass;
  SuggestedAction action = SuggestedAction::none;
  Timestamp first_seen{}, last_seen{};
  std::uint64_t count = 0;
  bool sticky = false;  // a FAIL kept until cleared

  bool operator==(const HealthReason&) const = default;
};

struct DeviceHealth {
  HealthState state = HealthState::unknown;
  Timestamp since{};                  // when state began
  std::vector<HealthReason> reasons;  // worst first, then the most recent

  bool operator==(const DeviceHealth&) const = default;
};

// ---- The XID catalog ---------------------------------------------------------

// NVIDIA's XID catalog rows the default policy relies on (docs/design/health-plan.md
// lists them with the catalog's immediate action). Any other XID is unknown
// and judged by HealthPolicy::unknown_xid.
struct XidEntry {
  std::uint32_t code;
  std::string_view meaning;
  HealthState state;  // the default verdict (pass: counted, not judged)
  SuggestedAction action;
};
std::span<const XidEntry> xid_catalog() noexcept;
const XidEntry* find_xid(std::uint32_t code) noexcept;

// ---- The policy ----------------------------------------------------------------

struct HealthPolicy {
  // Application errors (a faulting kernel, not a failing GPU), ignored as the
  // Kubernetes device plugin ignores them: counted, never judged.
  std::set<std::uint32_t> ignored_xids{13, 31, 43, 45, 68, 109};
  HealthState unknown_xid = HealthState::warn;                   // an XID the catalog does not list
  std::chrono::nanoseconds warn_hold = std::chrono::minutes{5};  // a WARN lasts this long after its last signal
};

// The rules: warn_hold from 1 s to 24 h; unknown_xid pass, warn or fail.
// Throws InputError naming the option (--health-warn-hold, --health-unknown-xid).
void validate_health_policy(const HealthPolicy& policy);

// What one signal means under a policy.
struct HealthVerdict {
  HealthState state = HealthState::pass;
  SuggestedAction action = SuggestedAction::none;
  bool sticky = false;   // FAIL and LOST stay until cleared
  bool ignored = false;  // counted only (an application XID)
  std::string message;
};
HealthVerdict judge(const HealthSignal& signal, const HealthPolicy& policy);

}  // namespace gpucluster
