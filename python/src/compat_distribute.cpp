// exo_compat's distribution: the seed's distribute_by_capacity and
// distribute_uniform shapes over the core's largest-remainder plans.

#include "compat_distribute.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "gpucluster/scheduling/distribution.hpp"

namespace gpucluster::python::compat {

namespace {

// Weights in the order of `ids` (a list), checked with the device named in the error.
std::vector<double> capacity_weights(const py::dict& capacities, const py::list& ids) {
  const bool exact = PyDict_CheckExact(capacities.ptr());
  const auto field = [](PyObject* id) { return fmt::format("capacities[{}]", py::repr(id).cast<std::string>()); };
  std::vector<double> weights;
  weights.reserve(ids.size());
  for (Py_ssize_t i = 0, n = PyList_GET_SIZE(ids.ptr()); i < n; ++i) {
    PyObject* id = PyList_GET_ITEM(ids.ptr(), i);
    py::object value;
    if (exact) {
      PyObject* v = PyDict_GetItemWithError(capacities.ptr(), id);  // borrowed
      if (v == nullptr) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, id);
        throw py::error_already_set();
      }
      value = py::reinterpret_borrow<py::object>(v);
    } else {
      value = py::reinterpret_steal<py::object>(PyObject_GetItem(capacities.ptr(), id));  // a subclass's __getitem__
      if (!value) throw py::error_already_set();
    }
    const double w = PyFloat_CheckExact(value.ptr()) ? PyFloat_AS_DOUBLE(value.ptr()) : PyFloat_AsDouble(value.ptr());
    if (w == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    if (!std::isfinite(w)) throw PlanError(field(id), fmt::format("{}", w), "must be a finite number");
    if (w < 0) throw PlanError(field(id), fmt::format("{}", w), "must be non-negative");
    weights.push_back(w);
  }
  // Only a positive total is required: the sum of finite capacities may pass
  // DBL_MAX (two of 1e308), and apportion() is exact for those.
  if (std::none_of(weights.begin(), weights.end(), [](double w) { return w > 0; })) {
    throw PlanError("capacities", "0", "Total capacity must be positive: at least one device needs a capacity > 0");
  }
  return weights;
}

py::list as_list(const py::handle& items) {
  if (PyList_CheckExact(items.ptr())) return py::reinterpret_borrow<py::list>(items);
  return py::list(py::reinterpret_borrow<py::object>(items));
}

py::object slice(const py::list& items, std::uint64_t start, std::uint64_t count) {
  return py::reinterpret_steal<py::object>(
      PyList_GetSlice(items.ptr(), static_cast<Py_ssize_t>(start), static_cast<Py_ssize_t>(start + count)));
}

// list[start:start + count] as a new list (a new reference, or nullptr with the error set).
PyObject* copy_slice(PyObject* list, Py_ssize_t start, Py_ssize_t count) {
  return PyList_GetSlice(list, start, start + count);
}

// The per-device slices of one plan. Each new list stays out of the cyclic GC
// until all are built: their allocations would otherwise trigger young-generation
// collections that traverse the slices built so far, item by item (~7 ms for 10^6
// items in 1,000 slices, more than the slicing itself). They are tracked again,
// as any list, before the call returns (and on the way out of an exception).
class Slices {
 public:
  explicit Slices(const py::list& items, std::size_t parts) : items_(items) { untracked_.reserve(parts); }
  Slices(const Slices&) = delete;
  Slices& operator=(const Slices&) = delete;
  ~Slices() {
    for (const py::object& list : untracked_) PyObject_GC_Track(list.ptr());
  }

  // items[start:start + count], a new list.
  py::object take(std::uint64_t start, std::uint64_t count) {
    py::object list = py::reinterpret_steal<py::object>(
        copy_slice(items_.ptr(), static_cast<Py_ssize_t>(start), static_cast<Py_ssize_t>(count)));
    if (!list) throw py::error_already_set();
    if (PyObject_GC_IsTracked(list.ptr()) != 0) {
      PyObject_GC_UnTrack(list.ptr());
      untracked_.push_back(list);  // kept alive until tracked again
    }
    return list;
  }

 private:
  const py::list& items_;
  std::vector<py::object> untracked_;
};

}  // namespace

// The seed's distribute_by_capacity shape ({id: [items]} in the caller's key
// order, contiguous slices in sorted-id order) with largest remainder.
// Returns (distribution, unplaced).
py::tuple distribute_by_capacity(const py::dict& capacities, const py::handle& workload_items) {
  const py::list items = as_list(workload_items);
  const auto n = static_cast<std::uint64_t>(items.size());
  py::dict distribution;
  // Every device in the caller's key order; each value is replaced by its slice
  // below (an exact dict's keys are exactly the sorted ids, so None will do).
  PyObject* placeholder = PyDict_CheckExact(capacities.ptr()) ? Py_None : nullptr;
  for (const auto& [id, value] : capacities) {
    if (placeholder != nullptr) {
      if (PyDict_SetItem(distribution.ptr(), id.ptr(), placeholder) < 0) throw py::error_already_set();
    } else {
      distribution[id] = py::list();
    }
  }
  if (capacities.empty()) return py::make_tuple(distribution, items);  // nobody to take them
  // sorted(capacities): the keys as iteration gives them, then list.sort().
  py::list ids = py::reinterpret_steal<py::list>(placeholder != nullptr ? PyDict_Keys(capacities.ptr())
                                                                        : PySequence_List(capacities.ptr()));
  if (!ids || PyList_Sort(ids.ptr()) < 0) throw py::error_already_set();
  const std::vector<double> weights = capacity_weights(capacities, ids);
  std::vector<std::uint64_t> counts;
  {
    py::gil_scoped_release release;
    counts = apportion(weights, n);
  }
  Slices slices(items, counts.size());
  std::uint64_t start = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    const py::object part = slices.take(start, counts[i]);
    if (PyDict_SetItem(distribution.ptr(), PyList_GET_ITEM(ids.ptr(), i), part.ptr()) < 0) {
      throw py::error_already_set();
    }
    start += counts[i];
  }
  return py::make_tuple(distribution, py::list());
}

// The seed's distribute_uniform shape (contiguous, the first devices one more),
// but items past max_per_device are returned as unplaced, never dropped.
py::tuple distribute_uniform(const py::handle& devices_in, const py::handle& workload_items,
                             std::optional<std::int64_t> max_per_device) {
  const py::list items = as_list(workload_items);
  const py::list devices = as_list(devices_in);
  py::dict distribution;
  for (const py::handle d : devices) distribution[d] = py::list();
  const auto n = static_cast<std::uint64_t>(items.size());
  if (devices.empty()) return py::make_tuple(distribution, items);
  if (static_cast<std::size_t>(py::len(distribution)) != devices.size()) {
    throw PlanError("devices", py::repr(devices).cast<std::string>(), "must not name the same device twice");
  }
  if (max_per_device && *max_per_device < 0) {
    throw PlanError("max_per_device", std::to_string(*max_per_device), "must be >= 0");
  }
  std::vector<DeviceKey> keys(devices.size());
  for (std::size_t i = 0; i < keys.size(); ++i) keys[i].local_id = std::to_string(i);  // positions; ids stay Python
  Plan plan;
  {
    py::gil_scoped_release release;
    std::optional<std::uint64_t> cap;
    if (max_per_device) cap = static_cast<std::uint64_t>(*max_per_device);
    plan = plan_uniform(keys, n, cap);
  }
  for (std::size_t i = 0; i < plan.assignments.size(); ++i) {
    const Assignment& a = plan.assignments[i];
    distribution[devices[i]] = slice(items, a.start, a.count);
  }
  return py::make_tuple(distribution, slice(items, plan.total_items - plan.unassigned, plan.unassigned));
}

}  // namespace gpucluster::python::compat
