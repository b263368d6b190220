#pragma once
// JSON forms of the library's objects, shared by the CLI's --json and the agent.
// Field names follow the seed protocol; an unavailable field is null, never 0.

#include <nlohmann/json.hpp>

#include "gpucluster/model/device.hpp"
#include "gpucluster/model/sample.hpp"
#include "gpucluster/scheduling/distribution.hpp"
#include "gpucluster/scheduling/scoring.hpp"
#include "gpucluster/telemetry/store.hpp"

namespace gpucluster {

struct BackendReport;  // manager.hpp

nlohmann::json to_json(const DeviceInfo& info);
nlohmann::json to_json(const Sample& sample);  // protocol "metrics" field names
// Device object of `devices --json`: fleet fields + id, host, available, score, metrics.
nlohmann::json to_json(const DeviceState& state, const std::optional<RankedDevice>& ranked);
// The array of `devices --json` and GET /v1/devices: each device with its rank entry.
nlohmann::json devices_to_json(const std::vector<DeviceState>& devices, const std::vector<RankedDevice>& ranked);
nlohmann::json to_json(const ClusterAggregate& aggregate);
nlohmann::json to_json(const WindowStats& stats);
nlohmann::json to_json(const Selection& selection);
nlohmann::json to_json(const RankedDevice& ranked);
nlohmann::json to_json(const Plan& plan);
// What a backend found at start: backend, status ("ok", "none", "unavailable",
// "failed"), devices, note and error (null when empty). `status --json`, /healthz, /v1/cluster.
nlohmann::json to_json(const BackendReport& report);
nlohmann::json backends_to_json(const std::vector<BackendReport>& reports);

// Reading the views back (the CLI's --agent shows an agent's answers in the
// same tables as its own): GET /v1/devices, POST /v1/select, POST /v1/plan.
// Throws InputError naming the field of a shape these views never have.
struct DeviceViews {
  std::vector<DeviceState> devices;
  std::vector<RankedDevice> ranked;  // score and eligibility as the agent ranked them
};
DeviceViews devices_from_json(const nlohmann::json& devices);
Selection selection_from_json(const nlohmann::json& selection);
Plan plan_from_json(const nlohmann::json& plan);

}  // namespace gpucluster
