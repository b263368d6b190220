#pragma once
// Human-readable tables for the CLI; an unavailable field prints as "n/a".

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpucluster/node/manager.hpp"

namespace gpucluster::cli {

std::string devices_table(const std::vector<DeviceState>& devices, const std::vector<RankedDevice>& ranked);
std::string ranking_table(const std::vector<RankedDevice>& ranked);
std::string aggregate_line(const ClusterAggregate& aggregate);
std::string plan_table(const Plan& plan);
std::string backends_lines(const std::vector<BackendReport>& reports);
// GET /v1/nodes as a table: name, state, last report, devices, clock offset, address.
std::string nodes_table(const nlohmann::json& nodes);

}  // namespace gpucluster::cli
