#include "gpucluster/backends/fleet.hpp"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/validation.hpp"

namespace gpucluster {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kExamples = fs::path(GPUCLUSTER_SOURCE_DIR) / "examples";

// The InputError's field, or a failure message when parsing did not throw one.
std::string error_field(const json& document) {
  try {
    parse_fleet(document);
  } catch (const ValidationError& error) {
    return "ValidationError(" + error.field() + ")";
  } catch (const InputError& error) {
    return error.field();
  }
  return "(no error)";
}

json one_device(json device) {
  return json{{"host", "lab"}, {"devices", json::array({std::move(device)})}};
}

json minimal_device(const std::string& id = "cuda:0") {
  return json{{"device_id", id}, {"memory_bytes", 1024}};
}

// A temporary file, removed at the end of the test.
class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    static int counter = 0;
    path_ = fs::temp_directory_path() / fmt::format("gpucluster-fleet-{}-{}.json", ::getpid(), counter++);
    std::ofstream(path_, std::ios::binary) << content;
  }
  ~TempFile() {
    std::error_code ignored;
    fs::remove(path_, ignored);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

TEST(Fleet, EveryExampleParses) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(kExamples)) {
    if (entry.path().extension() == ".json") files.push_back(entry.path());
  }
  ASSERT_GE(files.size(), 3u);
  for (const fs::path& file : files) {
    SCOPED_TRACE(file.string());
    Fleet fleet;
    ASSERT_NO_THROW(fleet = load_fleet(file));
    EXPECT_FALSE(fleet.devices.empty());
    for (const FleetDevice& device : fleet.devices) {
      EXPECT_NE(device.info.kind, DeviceKind::unknown) << device.info.key.local_id;
      EXPECT_GT(device.info.memory_total_bytes, 0u);
      if (device.has_metrics) {
        EXPECT_NO_THROW(validate_sample(device.info.key.str(), device.metrics));
      }
    }
  }
}

TEST(Fleet, H100ExampleDescribesEightH100s) {
  const Fleet fleet = load_fleet(kExamples / "fleet-8x-h100.json");
  ASSERT_EQ(fleet.devices.size(), 8u);
  for (std::size_t i = 0; i < fleet.devices.size(); ++i) {
    const FleetDevice& device = fleet.devices[i];
    EXPECT_EQ(device.info.key.local_id, fmt::format("cuda:{}", i));
    EXPECT_EQ(device.info.key.host, fleet.host);
    EXPECT_EQ(device.info.name, "NVIDIA H100 80GB HBM3");
    EXPECT_EQ(device.info.kind, DeviceKind::cuda);
    EXPECT_EQ(device.info.memory_total_bytes, 85899345920u);
    EXPECT_EQ(device.info.compute_units, 132u);
    EXPECT_EQ(device.info.compute_capability, "9.0");
    EXPECT_EQ(device.info.memory_bandwidth_gbps, 3350.0);
    ASSERT_TRUE(device.info.uuid.has_value());
    EXPECT_EQ(device.info.uuid->rfind("GPU-", 0), 0u);
    EXPECT_TRUE(device.info.pci_bus_id.has_value());
    EXPECT_TRUE(device.has_metrics);
    EXPECT_TRUE(device.available);
  }
}

TEST(Fleet, HomeExampleLeavesTheMacsPowerUnavailable) {
  const Fleet fleet = load_fleet(kExamples / "fleet-home.json");
  EXPECT_EQ(fleet.host, "home");
  ASSERT_EQ(fleet.devices.size(), 3u);
  const FleetDevice& mac = fleet.devices[2];
  EXPECT_EQ(mac.info.kind, DeviceKind::metal);
  EXPECT_EQ(mac.info.memory_total_bytes, 32ull << 30);
  EXPECT_EQ(mac.info.compute_units, 38u);
  ASSERT_TRUE(mac.has_metrics);
  EXPECT_FALSE(mac.metrics.power_watts.has_value());
  EXPECT_EQ(mac.metrics.memory_total_bytes, 32ll << 30);  // defaulted from memory_bytes
  EXPECT_EQ(fleet.devices[0].info.compute_units, 128u);
  EXPECT_EQ(fleet.devices[1].info.compute_units, 82u);
}

TEST(Fleet, MixedExampleHasAnUnavailableDeviceAndOtherVendors) {
  const Fleet fleet = load_fleet(kExamples / "fleet-mixed.json");
  bool saw_unavailable = false, saw_rocm = false, saw_xe = false;
  for (const FleetDevice& device : fleet.devices) {
    if (!device.available) {
      saw_unavailable = true;
      EXPECT_FALSE(device.error_message.empty());
    }
    saw_rocm = saw_rocm || device.info.kind == DeviceKind::rocm;
    saw_xe = saw_xe || device.info.kind == DeviceKind::intel_xe;
  }
  EXPECT_TRUE(saw_unavailable);
  EXPECT_TRUE(saw_rocm);
  EXPECT_TRUE(saw_xe);
}

TEST(Fleet, MinimalDocumentUsesDefaults) {
  const Fleet fleet = parse_fleet(json{{"devices", json::array({minimal_device()})}});
  EXPECT_TRUE(fleet.host.empty());
  ASSERT_EQ(fleet.devices.size(), 1u);
  const FleetDevice& device = fleet.devices[0];
  EXPECT_EQ(device.info.key.local_id, "cuda:0");
  EXPECT_EQ(device.info.memory_total_bytes, 1024u);
  EXPECT_EQ(device.info.kind, DeviceKind::unknown);
  EXPECT_FALSE(device.info.compute_units.has_value());
  EXPECT_FALSE(device.has_metrics);
  EXPECT_TRUE(device.available);
}

TEST(Fleet, SeedDeviceTypesAreAccepted) {
  json device = minimal_device();
  device["device_type"] = "vulkan_android";
  EXPECT_EQ(parse_fleet(one_device(device)).devices[0].info.kind, DeviceKind::vulkan);
}

TEST(Fleet, MissingOrNullMetricIsUnavailableNotZero) {
  json device = minimal_device();
  device["metrics"] = {{"memory_used_bytes", 512}, {"power_watts", nullptr}};
  const FleetDevice parsed = parse_fleet(one_device(device)).devices.at(0);
  ASSERT_TRUE(parsed.has_metrics);
  EXPECT_EQ(parsed.metrics.memory_used_bytes, 512);
  EXPECT_EQ(parsed.metrics.memory_total_bytes, 1024);
  EXPECT_FALSE(parsed.metrics.utilization_percent.has_value());
  EXPECT_FALSE(parsed.metrics.power_watts.has_value());
  EXPECT_FALSE(parsed.metrics.temperature_celsius.has_value());
  EXPECT_FALSE(parsed.metrics.clock_mhz.has_value());
}

TEST(Fleet, ZeroMetricIsKeptAsZero) {
  json device = minimal_device();
  device["metrics"] = {{"memory_used_bytes", 0}, {"compute_utilization_percent", 0}};
  const FleetDevice parsed = parse_fleet(one_device(device)).devices.at(0);
  ASSERT_TRUE(parsed.metrics.utilization_percent.has_value());
  EXPECT_EQ(*parsed.metrics.utilization_percent, 0.0f);
}

TEST(Fleet, IntegralFloatByteCountsAreAccepted) {
  json device = minimal_device();
  device["memory_bytes"] = 8.589934592e10;
  EXPECT_EQ(parse_fleet(one_device(device)).devices[0].info.memory_total_bytes, 85899345920u);
}

struct BadCase {
  const char* what;
  json document;
  const char* field;
};

json with(json device, const std::string& key, json value) {
  device[key] = std::move(value);
  return device;
}

json with_metrics(json metrics) {
  return with(minimal_device(), "metrics", std::move(metrics));
}

TEST(Fleet, InputErrorsNameTheJsonPath) {
  const json two_devices_second_lacks_memory = {
      {"devices", json::array({minimal_device("cuda:0"), json{{"device_id", "cuda:1"}}})}};
  const std::vector<BadCase> cases = {
      {"not an object", json::array(), "fleet"},
      {"no devices", json{{"host", "lab"}}, "devices"},
      {"devices not an array", json{{"devices", json::object()}}, "devices"},
      {"host not a string", json{{"host", 7}, {"devices", json::array()}}, "host"},
      {"host with a slash", json{{"host", "a/b"}, {"devices", json::array()}}, "host"},
      {"device not an object", one_device("cuda:0"), "devices[0]"},
      {"no device_id", one_device(json{{"memory_bytes", 1}}), "devices[0].device_id"},
      {"device_id not a string", one_device(with(minimal_device(), "device_id", 3)), "devices[0].device_id"},
      {"empty device_id", one_device(with(minimal_device(), "device_id", "")), "devices[0].device_id"},
      {"device_id with a slash", one_device(with(minimal_device(), "device_id", "a/b")), "devices[0].device_id"},
      {"no memory_bytes", two_devices_second_lacks_memory, "devices[1].memory_bytes"},
      {"negative memory", one_device(with(minimal_device(), "memory_bytes", -1)), "devices[0].memory_bytes"},
      {"fractional memory", one_device(with(minimal_device(), "memory_bytes", 1.5)), "devices[0].memory_bytes"},
      {"memory as text", one_device(with(minimal_device(), "memory_bytes", "8GiB")), "devices[0].memory_bytes"},
      {"memory past int64", one_device(with(minimal_device(), "memory_bytes", 9223372036854775808ull)),
       "devices[0].memory_bytes"},
      {"memory past uint64", one_device(with(minimal_device(), "memory_bytes", 1e30)), "devices[0].memory_bytes"},
      {"unknown device_type", one_device(with(minimal_device(), "device_type", "tpu")), "devices[0].device_type"},
      {"negative compute_units", one_device(with(minimal_device(), "compute_units", -1)), "devices[0].compute_units"},
      {"compute_units past uint32", one_device(with(minimal_device(), "compute_units", 4294967296ull)),
       "devices[0].compute_units"},
      {"bandwidth as text", one_device(with(minimal_device(), "memory_bandwidth_gbps", "fast")),
       "devices[0].memory_bandwidth_gbps"},
      {"negative max clock", one_device(with(minimal_device(), "max_clock_mhz", -5)), "devices[0].max_clock_mhz"},
      {"NaN power limit", one_device(with(minimal_device(), "power_limit_watts", std::nan(""))),
       "devices[0].power_limit_watts"},
      {"uuid not a string", one_device(with(minimal_device(), "uuid", 12)), "devices[0].uuid"},
      {"available not a bool", one_device(with(minimal_device(), "available", "yes")), "devices[0].available"},
      {"metrics not an object", one_device(with(minimal_device(), "metrics", 5)), "devices[0].metrics"},
      {"metrics without memory_used_bytes", one_device(with_metrics({{"power_watts", 10}})),
       "devices[0].metrics.memory_used_bytes"},
      {"negative memory_total_bytes", one_device(with_metrics({{"memory_used_bytes", 0}, {"memory_total_bytes", -1}})),
       "devices[0].metrics.memory_total_bytes"},
      {"power as text", one_device(with_metrics({{"memory_used_bytes", 0}, {"power_watts", "high"}})),
       "devices[0].metrics.power_watts"},
      {"duplicate device_id", json{{"devices", json::array({minimal_device("cuda:0"), minimal_device("cuda:0")})}},
       "devices[1].device_id"},
  };
  for (const BadCase& bad : cases) {
    EXPECT_EQ(error_field(bad.document), bad.field) << bad.what;
  }
}

TEST(Fleet, MetricThatBreaksARuleIsAValidationError) {
  struct Case {
    json metrics;
    const char* field;
    RejectReason reason;
  };
  const std::vector<Case> cases = {
      {{{"memory_used_bytes", 0}, {"compute_utilization_percent", 150}},
       "compute_utilization_percent",
       RejectReason::out_of_range},
      {{{"memory_used_bytes", 2048}}, "memory_used_bytes", RejectReason::used_exceeds_total},
      {{{"memory_used_bytes", 0}, {"temperature_celsius", -300}}, "temperature_celsius", RejectReason::out_of_range},
      // Finite as a double, infinite as a float.
      {{{"memory_used_bytes", 0}, {"power_watts", 1e300}}, "power_watts", RejectReason::not_finite},
      {{{"memory_used_bytes", 0}, {"clock_rate_mhz", -1}}, "clock_rate_mhz", RejectReason::out_of_range},
  };
  for (const Case& c : cases) {
    try {
      parse_fleet(one_device(with_metrics(c.metrics)));
      ADD_FAILURE() << "no error for " << c.metrics.dump();
    } catch (const ValidationError& error) {
      EXPECT_EQ(error.device(), "lab/cuda:0");
      EXPECT_EQ(error.field(), c.field);
      EXPECT_EQ(error.reason(), c.reason) << c.metrics.dump();
    }
  }
}

TEST(Fleet, ValidationErrorNamesTheLocalIdWhenTheFleetHasNoHost) {
  const json document = {
      {"devices", json::array({with_metrics({{"memory_used_bytes", 0}, {"compute_utilization_percent", 101}})})}};
  try {
    parse_fleet(document);
    FAIL() << "expected a ValidationError";
  } catch (const ValidationError& error) {
    EXPECT_EQ(error.device(), "cuda:0");
  }
}

TEST(Fleet, LoadFleetReportsUnreadableFiles) {
  const fs::path missing = fs::temp_directory_path() / fmt::format("gpucluster-no-such-{}.json", ::getpid());
  try {
    load_fleet(missing);
    FAIL() << "expected an InputError";
  } catch (const InputError& error) {
    EXPECT_EQ(error.field(), missing.string());
    EXPECT_NE(std::string(error.what()).find("No such file"), std::string::npos) << error.what();
  }
  EXPECT_THROW(load_fleet(fs::temp_directory_path()), InputError);
}

TEST(Fleet, LoadFleetReportsFilesThatAreNotJson) {
  for (const std::string content : {"", "{\"devices\": [", "not json", "{\"devices\": [], \"x\": 1e400}"}) {
    const TempFile file(content);
    try {
      load_fleet(file.path());
      ADD_FAILURE() << "no error for " << content;
    } catch (const InputError& error) {
      EXPECT_EQ(error.field(), file.path().string());
      EXPECT_EQ(error.value(), "not JSON");
      EXPECT_FALSE(error.rule().empty());
    }
  }
}

TEST(Fleet, LoadFleetPassesFieldErrorsThrough) {
  const TempFile file(R"({"devices": [{"device_id": "cuda:0"}]})");
  try {
    load_fleet(file.path());
    FAIL() << "expected an InputError";
  } catch (const InputError& error) {
    EXPECT_EQ(error.field(), "devices[0].memory_bytes");
  }
}

}  // namespace
}  // namespace gpucluster
