// Using gpucluster as a library: discover this machine's devices, pick one for a
// job that needs 1 GiB, and split a million work items by capacity.
// Build: part of the default build (build/release/library_example).

#include <cstdio>
#include <numeric>
#include <span>
#include <vector>

#include "gpucluster/backends/host.hpp"
#include "gpucluster/node/manager.hpp"

int main() {
  std::vector<gpucluster::BackendPtr> backends;
  backends.push_back(std::make_unique<gpucluster::HostBackend>());
  gpucluster::Manager manager({}, std::move(backends));
  manager.start();  // discovers devices, samples once, then every second in the background

  const gpucluster::Selection best = manager.select(1ULL << 30);
  std::printf("best device: %s (%s)\n", best.device ? best.device->str().c_str() : "none", best.reason.c_str());

  std::vector<int> items(1'000'000);
  std::iota(items.begin(), items.end(), 0);
  gpucluster::PlanRequest request;
  request.strategy = gpucluster::Strategy::uniform;
  request.items = items.size();
  request.max_per_device = 600'000;
  const gpucluster::Plan plan = manager.plan(request);
  const auto parts = gpucluster::apply_plan(plan, std::span<const int>(items));
  for (const auto& [device, span] : parts.per_device) {
    std::printf("%s: items %d..%d\n", device.str().c_str(), span.empty() ? 0 : span.front(),
                span.empty() ? -1 : span.back());
  }
  std::printf("unassigned: %zu (never dropped: the caller decides)\n", parts.unassigned.size());
  manager.shutdown();
  return 0;
}
