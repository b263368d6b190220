// exo_compat: the seed's DeviceScorer and DeviceSelector over the core's
// scoring (score_sample, select_device): eligibility is scoring's alone.

#include "compat_metrics.hpp"

#include <pybind11/stl.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <vector>

#include "compat_core.hpp"
#include "gpucluster/model/validation.hpp"
#include "gpucluster/scheduling/scoring.hpp"

namespace gpucluster::python::compat {

namespace {

// One seed GPUMetrics as a validated Sample stamped `now` (the seed scores the
// live values whatever their age); NaN and the like → ValidationError.
Sample metrics_sample(PyObject* obj, Timestamp now) {
  const Names& n = names();
  const py::str id(get_attr(obj, n.device_id));
  Sample s;
  s.timestamp = now;
  s.memory_used_bytes = read_bytes(obj, n.memory_used_bytes, id.ptr());
  s.memory_total_bytes = read_bytes(obj, n.memory_total_bytes, id.ptr());
  read_gauge(obj, n.compute_utilization_percent, s.utilization_percent);
  read_gauge(obj, n.power_watts, s.power_watts);
  read_gauge(obj, n.temperature_celsius, s.temperature_celsius);
  read_gauge(obj, n.clock_rate_mhz, s.clock_mhz);
  validate_seed_sample(id.cast<std::string>(), s);
  return s;
}

}  // namespace

double score_metrics(const py::handle& metrics) {
  const Sample s = metrics_sample(metrics.ptr(), now_timestamp());
  DeviceInfo info;
  info.key = DeviceKey{kHost, "device"};
  return score_sample(info, s, ScoringConfig{}).score;
}

std::optional<std::size_t> select_metrics(const py::list& metrics, std::int64_t min_memory_bytes) {
  const Timestamp now = now_timestamp();
  std::vector<DeviceState> states;
  states.reserve(metrics.size());
  // Keys are the positions, zero-padded: select_device breaks ties by key, so
  // the earlier device wins a tie, as in the seed's stable sort.
  for (std::size_t i = 0; i < metrics.size(); ++i) {
    auto info = std::make_shared<DeviceInfo>();
    info->key = DeviceKey{kHost, fmt::format("{:020}", i)};
    states.push_back(DeviceState{std::move(info), true, {}, metrics_sample(metrics[i].ptr(), now)});
  }
  ScoringConfig config;
  config.staleness = std::chrono::nanoseconds::max();  // the seed's metrics never go stale
  const Selection selection =
      select_device(states, config, now, static_cast<std::uint64_t>(std::max<std::int64_t>(min_memory_bytes, 0)));
  if (!selection.device) return std::nullopt;
  return static_cast<std::size_t>(std::stoull(selection.device->local_id));
}

}  // namespace gpucluster::python::compat
