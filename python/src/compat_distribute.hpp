#pragma once
// exo_compat's distribution (compat_distribute.cpp).

#include <cstdint>
#include <optional>

#include "common.hpp"

namespace gpucluster::python::compat {

// The seed's distribute_by_capacity: ({id: [items]}, unplaced).
py::tuple distribute_by_capacity(const py::dict& capacities, const py::handle& workload_items);
// The seed's distribute_uniform: ({id: [items]}, unplaced); items past max_per_device are unplaced.
py::tuple distribute_uniform(const py::handle& devices_in, const py::handle& workload_items,
                             std::optional<std::int64_t> max_per_device);

}  // namespace gpucluster::python::compat
