#include "gpucluster/export/exposition.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <iterator>
#include <string_view>
#include <tuple>
#include <utility>

#include <fmt/format.h>

#include "gpucluster/model/fields.hpp"
#include "model/text.hpp"

namespace gpucluster::agent {

namespace {

using Out = std::back_insert_iterator<std::string>;

// ---- values -----------------------------------------------------------------
// fmt's "{}" is the shortest decimal that round-trips and never locale
// dependent; non-finite values use the exposition format's spellings.

template <typename Float>
void append_float(std::string& out, Float value) {
  if (std::isnan(value)) {
    out += "NaN";
  } else if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
  } else {
    fmt::format_to(Out(out), "{}", value);
  }
}

// value × 10^power_of_ten, computed from the float's shortest decimal so that
// 41.3 % becomes 0.413 (not 0.41299999237…) and 1837.3 MHz 1837300000 Hz.
template <typename Float>
double scale_decimal(Float value, int power_of_ten) noexcept {
  if (!std::isfinite(value)) return static_cast<double>(value);
  char text[64];
  auto [end, ec] = std::to_chars(text, text + 32, value, std::chars_format::scientific);
  if (ec != std::errc{}) return static_cast<double>(value) * std::pow(10.0, power_of_ten);
  // text is "<mantissa>e<exponent>"; rewrite the exponent.
  char* e = std::find(text, end, 'e');
  int exponent = 0;
  if (e == end || std::from_chars(e + 1 + (e[1] == '+' ? 1 : 0), end, exponent).ec != std::errc{}) {
    return static_cast<double>(value) * std::pow(10.0, power_of_ten);
  }
  const auto rewritten =
      fmt::format_to_n(e + 1, static_cast<std::size_t>(text + sizeof text - (e + 1)), "{}", exponent + power_of_ten);
  double result = 0;
  if (std::from_chars(text, rewritten.out, result).ec != std::errc{}) {
    return static_cast<double>(value) * std::pow(10.0, power_of_ten);
  }
  return result;
}

// ---- label values ------------------------------------------------------------
// Escapes backslash, double quote and newline (exposition format 0.0.4) and
// replaces bytes that are not valid UTF-8 with U+FFFD: Prometheus rejects a
// whole scrape whose label value is not valid UTF-8, and a model name comes
// from a driver.

using text::utf8_sequence_length;  // model/text.hpp

void append_label_value(std::string& out, std::string_view value) {
  std::size_t i = 0;
  while (i < value.size()) {
    // Copy the longest run of plain ASCII in one go.
    std::size_t run = i;
    while (run < value.size()) {
      const auto c = static_cast<unsigned char>(value[run]);
      if (c >= 0x80 || c == '\\' || c == '"' || c == '\n') break;
      ++run;
    }
    out.append(value.data() + i, run - i);
    i = run;
    if (i == value.size()) break;
    const char c = value[i];
    if (c == '\\') {
      out += "\\\\";
      ++i;
    } else if (c == '"') {
      out += "\\\"";
      ++i;
    } else if (c == '\n') {
      out += "\\n";
      ++i;
    } else if (const std::size_t length = utf8_sequence_length(value, i); length > 0) {
      out.append(value.data() + i, length);
      i += length;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD for one invalid byte
      ++i;
    }
  }
}

void append_label(std::string& out, std::string_view name, std::string_view value, bool& first) {
  if (!first) out += ',';
  first = false;
  out += name;
  out += "=\"";
  append_label_value(out, value);
  out += '"';
}

// ---- families ------------------------------------------------------------------

void append_header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(Out(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

// "name{labels} " — the caller appends the value and the newline.
void append_series_start(std::string& out, std::string_view name, std::string_view labels) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
}

void append_histogram(std::string& out, std::string_view name, std::string_view help,
                      const DurationHistogram::Snapshot& h) {
  append_header(out, name, "histogram", help);
  // Buckets from the snapshot's cumulative counts; a malformed snapshot (fewer
  // counts than bounds) keeps only +Inf, which is always _count.
  if (h.cumulative_counts.size() >= h.upper_bounds_seconds.size()) {
    for (std::size_t i = 0; i < h.upper_bounds_seconds.size(); ++i) {
      const double bound = h.upper_bounds_seconds[i];
      if (!std::isfinite(bound)) continue;
      fmt::format_to(Out(out), "{}_bucket{{le=\"{}\"}} {}\n", name, bound, h.cumulative_counts[i]);
    }
  }
  fmt::format_to(Out(out), "{}_bucket{{le=\"+Inf\"}} {}\n", name, h.count);
  fmt::format_to(Out(out), "{}_sum ", name);
  append_float(out, h.sum_seconds);
  fmt::format_to(Out(out), "\n{}_count {}\n", name, h.count);
}

struct DeviceRow {
  const DeviceState* state = nullptr;
  std::size_t labels_begin = 0, labels_size = 0;  // into the shared labels buffer
  const ScoreBreakdown* score = nullptr;
  // The live sample, only for an available device (an unavailable device's
  // last reading is stale: it is not exported as current).
  const Sample* live() const { return state->available && state->latest ? &*state->latest : nullptr; }
};

// The node families (a coordinator's view of its nodes) and the push
// families (an agent that joined). A node's devices carry host="<its host>",
// the same value as the host label here, so the two join on it.
void append_cluster(std::string& out, const ExpositionSnapshot& snapshot) {
  const auto node_labels = [&](const NodeRow& node) {
    std::string labels;
    bool first = true;
    append_label(labels, "node", node.name, first);
    append_label(labels, "node_id", node.id, first);
    append_label(labels, "host", node.host, first);
    return labels;
  };
  if (!snapshot.nodes.empty()) {
    constexpr std::string_view kUp = "gpucluster_node_up";
    append_header(out, kUp, "gauge", "1 while the node is alive or suspect, 0 once it is down (state label).");
    for (const NodeRow& node : snapshot.nodes) {
      std::string labels = node_labels(node);
      bool first = false;
      append_label(labels, "state", node.state, first);
      append_series_start(out, kUp, labels);
      out += node.state == "down" ? "0\n" : "1\n";
    }
    // Enum style (one series per state, 1 for the current one): a state's
    // series exists before the node enters it, so alerts and rates over it work.
    constexpr std::array<std::string_view, 3> kStates{"alive", "suspect", "down"};
    constexpr std::string_view kState = "gpucluster_node_state";
    append_header(out, kState, "gauge", "1 for the node's current state (alive, suspect, down), 0 for the others.");
    for (const NodeRow& node : snapshot.nodes) {
      const std::string labels = node_labels(node);
      for (const std::string_view state : kStates) {
        std::string with_state = labels;
        bool first = false;
        append_label(with_state, "state", state, first);
        append_series_start(out, kState, with_state);
        out += node.state == state ? "1\n" : "0\n";
      }
    }
    constexpr std::string_view kNodes = "gpucluster_nodes";
    append_header(out, kNodes, "gauge", "Nodes by state (the node table of GET /v1/nodes).");
    for (const std::string_view state : kStates) {
      const auto count = std::count_if(snapshot.nodes.begin(), snapshot.nodes.end(),
                                       [&](const NodeRow& node) { return node.state == state; });
      fmt::format_to(Out(out), "{}{{state=\"{}\"}} {}\n", kNodes, state, count);
    }
    constexpr std::string_view kAge = "gpucluster_node_last_report_age_seconds";
    append_header(out, kAge, "gauge", "Seconds since the node's last accepted report, on the coordinator's clock.");
    for (const NodeRow& node : snapshot.nodes) {
      if (!node.last_report_age_seconds) continue;
      append_series_start(out, kAge, node_labels(node));
      fmt::format_to(Out(out), "{}\n", *node.last_report_age_seconds);
    }
    constexpr std::string_view kOffset = "gpucluster_node_clock_offset_seconds";
    append_header(out, kOffset, "gauge",
                  "The coordinator's wall clock minus the node's, estimated from report exchanges; the node's samples "
                  "are stored corrected by it.");
    for (const NodeRow& node : snapshot.nodes) {
      if (!node.clock_offset_seconds) continue;
      append_series_start(out, kOffset, node_labels(node));
      fmt::format_to(Out(out), "{}\n", *node.clock_offset_seconds);
    }
    constexpr std::string_view kReports = "gpucluster_node_reports_total";
    append_header(out, kReports, "counter", "Reports accepted from the node (this incarnation of the coordinator).");
    for (const NodeRow& node : snapshot.nodes) {
      if (!node.last_report_age_seconds) continue;
      append_series_start(out, kReports, node_labels(node));
      fmt::format_to(Out(out), "{}\n", node.reports);
    }
    constexpr std::string_view kDevices = "gpucluster_node_devices";
    append_header(out, kDevices, "gauge", "Devices of the node.");
    for (const NodeRow& node : snapshot.nodes) {
      append_series_start(out, kDevices, node_labels(node));
      fmt::format_to(Out(out), "{}\n", node.devices);
    }
  }
  if (snapshot.coordinator) {
    constexpr std::string_view kAccepted = "gpucluster_reports_received_total";
    append_header(out, kAccepted, "counter", "Reports (POST /v2/report) accepted.");
    fmt::format_to(Out(out), "{} {}\n", kAccepted, snapshot.reports_accepted);
    constexpr std::string_view kRejected = "gpucluster_reports_rejected_total";
    append_header(out, kRejected, "counter", "Reports refused (nothing of them was applied), by reason.");
    for (const auto& [reason, count] : snapshot.reports_rejected) {
      out += kRejected;
      out += "{reason=\"";
      append_label_value(out, reason);
      fmt::format_to(Out(out), "\"}} {}\n", count);
    }
  }
  if (!snapshot.push.empty()) {
    const auto push_family = [&](std::string_view name, std::string_view type, std::string_view help, auto value_of) {
      append_header(out, name, type, help);
      for (const PushRow& row : snapshot.push) {
        out += name;
        out += "{coordinator=\"";
        append_label_value(out, row.coordinator);
        fmt::format_to(Out(out), "\"}} {}\n", value_of(row));
      }
    };
    push_family("gpucluster_push_up", "gauge", "1 when the last report to the coordinator was acknowledged.",
                [](const PushRow& row) { return row.ok ? 1 : 0; });
    push_family("gpucluster_push_reports_total", "counter", "Reports the coordinator acknowledged.",
                [](const PushRow& row) { return row.reports; });
    push_family("gpucluster_push_failures_total", "counter",
                "Reports that failed (unreachable, timed out or refused); each is retried after a back-off.",
                [](const PushRow& row) { return row.failures; });
    push_family("gpucluster_push_backlog_samples", "gauge", "Samples waiting for the coordinator's acknowledgement.",
                [](const PushRow& row) { return row.backlog_samples; });
    push_family("gpucluster_push_dropped_samples_total", "counter",
                "Samples the coordinator never got: the outbox (--outbox) was full and dropped the oldest.",
                [](const PushRow& row) { return row.dropped_samples; });
  }
}

}  // namespace

std::string render_exposition(const ExpositionSnapshot& snapshot) {
  // Each device's label set is rendered once and reused by every family.
  std::string labels;
  labels.reserve(snapshot.devices.size() * 128);
  std::vector<DeviceRow> rows;
  rows.reserve(snapshot.devices.size());
  for (const DeviceState& state : snapshot.devices) {
    if (!state.info) continue;
    const DeviceInfo& info = *state.info;
    DeviceRow row;
    row.state = &state;
    row.labels_begin = labels.size();
    bool first = true;
    append_label(labels, "host", info.key.host, first);
    append_label(labels, "device", info.key.local_id, first);
    if (info.uuid && !info.uuid->empty()) append_label(labels, "uuid", *info.uuid, first);
    if (!info.name.empty()) append_label(labels, "model", info.name, first);
    row.labels_size = labels.size() - row.labels_begin;
    rows.push_back(row);
  }
  const auto labels_of = [&](const DeviceRow& row) {
    return std::string_view(labels).substr(row.labels_begin, row.labels_size);
  };

  // Scores by device key. Ranked entries of devices not in `devices` have no
  // label set to share and are left out; so are unavailable devices.
  {
    std::vector<std::size_t> by_key(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) by_key[i] = i;
    std::sort(by_key.begin(), by_key.end(),
              [&](std::size_t a, std::size_t b) { return rows[a].state->info->key < rows[b].state->info->key; });
    for (const RankedDevice& ranked : snapshot.ranked) {
      if (!ranked.breakdown || ranked.eligibility == Eligibility::unavailable) continue;
      const auto it = std::lower_bound(by_key.begin(), by_key.end(), ranked.key,
                                       [&](std::size_t i, const DeviceKey& k) { return rows[i].state->info->key < k; });
      if (it != by_key.end() && rows[*it].state->info->key == ranked.key) rows[*it].score = &*ranked.breakdown;
    }
  }

  // HTTP counters merged by (route, code), so a duplicate in the input never
  // becomes a duplicate series.
  std::vector<HttpRequestCount> http = snapshot.http_requests;
  std::sort(http.begin(), http.end(), [](const HttpRequestCount& a, const HttpRequestCount& b) {
    return std::tie(a.route, a.status) < std::tie(b.route, b.status);
  });
  std::size_t http_bytes = 0;
  {
    std::size_t kept = 0;
    for (std::size_t i = 0; i < http.size(); ++i) {
      if (kept > 0 && http[kept - 1].route == http[i].route && http[kept - 1].status == http[i].status) {
        http[kept - 1].count += http[i].count;
      } else {
        if (kept != i) http[kept] = std::move(http[i]);
        http_bytes += http[kept].route.size() + 96;
        ++kept;
      }
    }
    http.resize(kept);
  }

  std::string out;
  out.reserve(4096 + rows.size() * 8 * 80 + labels.size() * 8 +
              (snapshot.sample_durations.upper_bounds_seconds.size() +
               snapshot.http_request_durations.upper_bounds_seconds.size()) *
                  96 +
              http_bytes);

  // ---- devices ----
  constexpr std::string_view kUp = "gpucluster_device_up";
  append_header(out, kUp, "gauge", "1 if the device is available, 0 if its backend marked it unavailable.");
  for (const DeviceRow& row : rows) {
    append_series_start(out, kUp, labels_of(row));
    out += row.state->available ? "1\n" : "0\n";
  }

  // One family per row of the field table (model/fields.hpp), in table order:
  // its name, type, help and unit scaling all come from the row.
  std::string family;
  for_each_field([&](const auto& field) {
    if (field.prometheus_family.empty()) return;
    family.assign("gpucluster_").append(field.prometheus_family);
    append_header(out, family, field.kind == FieldKind::counter ? "counter" : "gauge", field.prometheus_help);
    for (const DeviceRow& row : rows) {
      const Sample* s = row.live();
      if constexpr (std::is_integral_v<std::decay_t<decltype(s->*field.member)>>) {
        if (s != nullptr) {
          append_series_start(out, family, labels_of(row));
          fmt::format_to(Out(out), "{}\n", s->*field.member);
        } else if (field.quantity == Quantity::memory_total_bytes && row.state->info->memory_total_bytes > 0) {
          // A device not sampled yet still has its static memory size.
          append_series_start(out, family, labels_of(row));
          fmt::format_to(Out(out), "{}\n", row.state->info->memory_total_bytes);
        }
      } else {
        if (s == nullptr || !(s->*field.member)) continue;
        append_series_start(out, family, labels_of(row));
        const auto value = *(s->*field.member);
        if (field.prometheus_scale_exponent != 0) {
          append_float(out, scale_decimal(value, field.prometheus_scale_exponent));
        } else {
          append_float(out, value);
        }
        out += '\n';
      }
    }
  });

  constexpr std::string_view kScore = "gpucluster_device_score";
  append_header(out, kScore, "gauge", "Scheduling score from live telemetry, 0 to 1 (higher is better).");
  for (const DeviceRow& row : rows) {
    if (row.score && row.state->available) {
      append_series_start(out, kScore, labels_of(row));
      append_float(out, row.score->score);
      out += '\n';
    }
  }

  // Lets dashboards and alerts see a device whose telemetry stopped (time() - this).
  constexpr std::string_view kLastSample = "gpucluster_last_sample_timestamp_seconds";
  append_header(out, kLastSample, "gauge", "Time of the device's newest sample, in seconds since the epoch.");
  for (const DeviceRow& row : rows) {
    if (row.state->latest) {
      append_series_start(out, kLastSample, labels_of(row));
      fmt::format_to(Out(out), "{:.3f}\n", to_seconds(row.state->latest->timestamp));
    }
  }

  // ---- the agent itself ----
  append_histogram(out, "gpucluster_sample_duration_seconds", "Duration of backend sampling calls, in seconds.",
                   snapshot.sample_durations);

  constexpr std::string_view kRejected = "gpucluster_rejected_samples_total";
  append_header(out, kRejected, "counter", "Samples rejected, by reason.");
  for (std::size_t i = 0; i < kRejectReasonCount; ++i) {
    fmt::format_to(Out(out), "{}{{reason=\"{}\"}} {}\n", kRejected, to_string(static_cast<RejectReason>(i)),
                   snapshot.rejected_samples[i]);
  }

  constexpr std::string_view kDuplicates = "gpucluster_duplicate_samples_total";
  append_header(out, kDuplicates, "counter",
                "Samples received again with the same timestamp and values (acknowledged, not stored twice).");
  fmt::format_to(Out(out), "{} {}\n", kDuplicates, snapshot.duplicate_samples);

  constexpr std::string_view kBackendErrors = "gpucluster_backend_errors_total";
  append_header(out, kBackendErrors, "counter", "Backend sampling calls that failed.");
  fmt::format_to(Out(out), "{} {}\n", kBackendErrors, snapshot.backend_errors);

  // One series per backend and optional quantity, zeros included, so rate()
  // sees the first drop; a backend reported twice is summed into one series.
  constexpr std::string_view kImplausible = "gpucluster_backend_implausible_readings_total";
  append_header(out, kImplausible, "counter",
                "Readings a backend dropped as outside the field's plausible range (the field is unavailable in that "
                "sample, the rest of the sample stands), by backend and quantity.");
  {
    std::vector<BackendImplausibleReadings> backends;
    for (const BackendImplausibleReadings& entry : snapshot.implausible_readings) {
      const auto same = std::find_if(backends.begin(), backends.end(),
                                     [&](const BackendImplausibleReadings& b) { return b.backend == entry.backend; });
      if (same == backends.end()) {
        backends.push_back(entry);
      } else {
        for (std::size_t i = 0; i < kQuantityCount; ++i) same->counts[i] += entry.counts[i];
      }
    }
    for (const BackendImplausibleReadings& entry : backends) {
      for_each_field([&](const auto& field) {
        if (field.required || !field.read_by_backend) return;
        out += kImplausible;
        out += "{backend=\"";
        append_label_value(out, entry.backend);
        fmt::format_to(Out(out), "\",quantity=\"{}\"}} {}\n", field.name,
                       entry.counts[static_cast<std::size_t>(field.quantity)]);
      });
    }
  }

  constexpr std::string_view kHttp = "gpucluster_http_requests_total";
  append_header(out, kHttp, "counter", "HTTP requests served, by route pattern and status code.");
  for (const HttpRequestCount& r : http) {
    out += kHttp;
    out += "{route=\"";
    append_label_value(out, r.route);
    fmt::format_to(Out(out), "\",code=\"{}\"}} {}\n", r.status, r.count);
  }

  append_histogram(out, "gpucluster_http_request_duration_seconds", "Duration of HTTP requests, in seconds.",
                   snapshot.http_request_durations);

  constexpr std::string_view kAcceptErrors = "gpucluster_http_accept_errors_total";
  append_header(out, kAcceptErrors, "counter",
                "Failed accepts of HTTP connections (open-files limit or memory exhausted); each is retried after a "
                "back-off.");
  fmt::format_to(Out(out), "{} {}\n", kAcceptErrors, snapshot.http_accept_errors);
  append_cluster(out, snapshot);
  return out;
}

}  // namespace gpucluster::agent
