#pragma once
// Prometheus text exposition (format 0.0.4) of the cluster and of the agent
// itself. A pure function of a snapshot, so it is tested without a server.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gpucluster/backends/backend.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/scheduling/scoring.hpp"
#include "gpucluster/telemetry/duration_histogram.hpp"
#include "gpucluster/telemetry/store.hpp"

namespace gpucluster::agent {

struct HttpRequestCount {
  std::string route;  // the route pattern ("/v1/devices/{id}"), never the raw path: bounded label values
  int status = 0;
  std::uint64_t count = 0;
};

// One backend's dropped readings (BackendReport::implausible_readings).
struct BackendImplausibleReadings {
  std::string backend;
  ImplausibleCounts counts{};
};

// One node of the cluster as a coordinator sees it (GET /v1/nodes).
struct NodeRow {
  std::string id;  // empty for a node without a persisted id
  std::string name;
  std::string host;                               // the host label of its devices' series
  std::string state;                              // "alive", "suspect", "down"
  std::optional<double> last_report_age_seconds;  // none for the node itself
  std::optional<double> clock_offset_seconds;     // coordinator − node
  std::uint64_t reports = 0;
  std::size_t devices = 0;
};

// One coordinator this agent reports to (--join).
struct PushRow {
  std::string coordinator;  // its URL
  bool ok = false;          // the last report was acknowledged
  std::uint64_t reports = 0, failures = 0, backlog_samples = 0, dropped_samples = 0;
};

struct ExpositionSnapshot {
  std::vector<DeviceState> devices;
  std::vector<RankedDevice> ranked;  // gpucluster_device_score for each device with a breakdown
  std::array<std::uint64_t, kRejectReasonCount> rejected_samples{};
  std::uint64_t duplicate_samples = 0;
  std::uint64_t backend_errors = 0;
  std::vector<BackendImplausibleReadings> implausible_readings;  // one per backend the manager reports
  DurationHistogram::Snapshot sample_durations;
  std::vector<HttpRequestCount> http_requests;
  DurationHistogram::Snapshot http_request_durations;
  std::uint64_t http_accept_errors = 0;  // failed accept() calls of the HTTP server
  // The cluster (docs/cluster.md): empty on a plain agent's local-only view.
  std::vector<NodeRow> nodes;
  bool coordinator = false;  // reports_* families are emitted
  std::uint64_t reports_accepted = 0;
  std::vector<std::pair<std::string, std::uint64_t>> reports_rejected;  // by code
  std::vector<PushRow> push;
};

// Every family with HELP and TYPE; an unavailable field emits no series.
std::string render_exposition(const ExpositionSnapshot& snapshot);

inline constexpr const char* kExpositionContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace gpucluster::agent
