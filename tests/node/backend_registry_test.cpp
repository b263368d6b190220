// The backend registry (src/node/backend_registry.cpp): names, `auto`,
// richest-first order, explicit names required, options, errors.

#include "gpucluster/node/backend_registry.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace gpucluster {
namespace {

std::vector<std::string> names_of(const BackendChoice& choice) {
  std::vector<std::string> names;
  for (const BackendPtr& backend : choice.backends) names.emplace_back(backend->name());
  return names;
}

Fleet one_device_fleet() {
  return parse_fleet_text(R"({"host": "sim", "devices": [{"device_id": "cuda:0", "memory_bytes": 1000}]})", "test");
}

TEST(BackendRegistry, ListsEveryBackendRichestFirst) {
  std::vector<std::string> names;
  for (const BackendEntry& entry : backend_registry()) names.emplace_back(entry.name);
  EXPECT_EQ(names, (std::vector<std::string>{"nvml", "rocm", "sysfs", "host", "simulated"}));
  EXPECT_EQ(backend_names(), "nvml, rocm, sysfs, host, simulated");
  const std::string help = backend_help();
  for (const std::string& name : names) EXPECT_NE(help.find(name), std::string::npos) << name;
  EXPECT_NE(help.find("GPUCLUSTER_NVML_LIBRARY"), std::string::npos);
  EXPECT_NE(help.find("GPUCLUSTER_ROCM_SMI_LIBRARY"), std::string::npos);
  EXPECT_NE(help.find("GPUCLUSTER_SYSFS_ROOT"), std::string::npos);
}

TEST(BackendRegistry, AutoIsEveryBackendRichestFirstAndRequiresNone) {
  const std::vector<std::string> names{"auto"};
  const BackendChoice choice = choose_backends(names, BackendOptions{});
  EXPECT_EQ(names_of(choice), (std::vector<std::string>{"nvml", "rocm", "sysfs", "host"}));
  EXPECT_TRUE(choice.required.empty());
  // No names at all: auto as well.
  EXPECT_EQ(names_of(choose_backends({}, BackendOptions{})), names_of(choice));
}

TEST(BackendRegistry, AFleetJoinsAutoAndIsTheDefaultAlone) {
  BackendOptions options;
  int loads = 0;
  options.load_fleet = [&] {
    ++loads;
    return one_device_fleet();
  };
  const std::vector<std::string> automatic{"auto"};
  EXPECT_EQ(names_of(choose_backends(automatic, options)),
            (std::vector<std::string>{"nvml", "rocm", "sysfs", "host", "simulated"}));
  const BackendChoice by_default = choose_backends({}, options);
  EXPECT_EQ(names_of(by_default), std::vector<std::string>{"simulated"});
  EXPECT_EQ(by_default.required, std::vector<std::string>{"simulated"});
  // Not chosen: not loaded.
  loads = 0;
  const std::vector<std::string> host{"host"};
  EXPECT_EQ(names_of(choose_backends(host, options)), std::vector<std::string>{"host"});
  EXPECT_EQ(loads, 0);
}

TEST(BackendRegistry, NamedBackendsAreRequiredAndKeepTheRegistryOrder) {
  const std::vector<std::string> names{"host", "auto", "nvml", "host"};
  const BackendChoice choice = choose_backends(names, BackendOptions{});
  EXPECT_EQ(names_of(choice), (std::vector<std::string>{"nvml", "rocm", "sysfs", "host"}));
  EXPECT_EQ(choice.required, (std::vector<std::string>{"nvml", "host"}));
}

TEST(BackendRegistry, UnknownNamesAndSimulatedWithoutAFleetAreInputErrors) {
  BackendOptions options;
  options.names_field = "--backend";
  options.fleet_hint = "--fleet FILE";
  const std::vector<std::string> unknown{"nvml", "cuda"};
  try {
    choose_backends(unknown, options);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "--backend");
    EXPECT_EQ(e.value(), "cuda");
    EXPECT_EQ(e.rule(), "must be one of auto, nvml, rocm, sysfs, host, simulated");
  }
  const std::vector<std::string> simulated{"simulated"};
  try {
    choose_backends(simulated, options);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "--backend");
    EXPECT_EQ(e.value(), "simulated");
    EXPECT_EQ(e.rule(), "needs a fleet file: give --fleet FILE");
  }
}

TEST(BackendRegistry, SplitsCommaSeparatedNames) {
  EXPECT_EQ(split_backend_names("nvml,,host,"), (std::vector<std::string>{"nvml", "host"}));
  EXPECT_TRUE(split_backend_names("").empty());
}

TEST(BackendRegistry, SysfsRootOptionReachesTheBackend) {
  BackendOptions options;
  options.sysfs_root = "/nonexistent/sysfs-root";
  const std::vector<std::string> names{"sysfs"};
  BackendChoice choice = choose_backends(names, options);
  ASSERT_EQ(choice.backends.size(), 1U);
  const Discovery discovery = choice.backends.front()->discover("test-host");
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_NE(discovery.note.find("/nonexistent/sysfs-root"), std::string::npos) << discovery.note;
}

}  // namespace
}  // namespace gpucluster
