#pragma once
// Devices from a fleet file, reporting the fleet's metrics at the current time.

#include <map>
#include <string>

#include "gpucluster/backends/backend.hpp"
#include "gpucluster/backends/fleet.hpp"

namespace gpucluster {

class SimulatedBackend final : public Backend {
 public:
  explicit SimulatedBackend(Fleet fleet);
  std::string_view name() const noexcept override { return "simulated"; }
  // The fleet's own host name wins over `host` when the fleet names one.
  Discovery discover(const std::string& host) override;
  Sample sample(const std::string& local_id) override;
  FieldAvailability available_fields(const std::string& local_id) const override;
  void shutdown() noexcept override {}

  const Fleet& fleet() const noexcept { return fleet_; }

 private:
  const FleetDevice& find(const std::string& local_id) const;
  Fleet fleet_;
};

}  // namespace gpucluster
