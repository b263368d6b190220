#include "gpucluster/model/units.hpp"

#include <gtest/gtest.h>

#include "gpucluster/model/device.hpp"
#include "gpucluster/model/errors.hpp"

namespace gpucluster {
namespace {

TEST(ParseSize, AcceptsBinaryDecimalAndPlainBytes) {
  EXPECT_EQ(parse_size_bytes("8GiB", "f"), 8ULL << 30);
  EXPECT_EQ(parse_size_bytes("8G", "f"), 8'000'000'000ULL);
  EXPECT_EQ(parse_size_bytes("8000000000", "f"), 8'000'000'000ULL);
  EXPECT_EQ(parse_size_bytes("512MiB", "f"), 512ULL << 20);
  EXPECT_EQ(parse_size_bytes("1.5GiB", "f"), 3ULL << 29);
  EXPECT_EQ(parse_size_bytes("0", "f"), 0U);
}

TEST(ParseSize, RejectsGarbageNamingTheField) {
  for (const char* bad : {"", "-1G", "8XB", "GiB", "nan", "inf", "1e400"}) {
    try {
      parse_size_bytes(bad, "--min-memory");
      FAIL() << bad;
    } catch (const InputError& e) {
      EXPECT_EQ(e.field(), "--min-memory");
      EXPECT_NE(std::string(e.what()).find("--min-memory"), std::string::npos);
    }
  }
}

TEST(ParseDuration, UnitsAndBareSeconds) {
  using namespace std::chrono_literals;
  EXPECT_EQ(parse_duration("1s", "d"), 1s);
  EXPECT_EQ(parse_duration("250ms", "d"), 250ms);
  EXPECT_EQ(parse_duration("2m", "d"), 120s);
  EXPECT_EQ(parse_duration("1h", "d"), 3600s);
  EXPECT_EQ(parse_duration("1.5", "d"), 1500ms);
  EXPECT_THROW(parse_duration("5 parsecs", "d"), InputError);
  EXPECT_THROW(parse_duration("-1s", "d"), InputError);
}

TEST(FormatBytes, HumanUnits) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(85899345920ULL), "80.0 GiB");
  EXPECT_EQ(format_bytes(1536ULL << 20), "1.5 GiB");
}

TEST(DeviceKind, ParsesOursAndTheProtocols) {
  EXPECT_EQ(parse_device_kind("cuda"), DeviceKind::cuda);
  EXPECT_EQ(parse_device_kind("vulkan_android"), DeviceKind::vulkan);
  EXPECT_EQ(parse_device_kind("intel_xe"), DeviceKind::intel_xe);
  EXPECT_FALSE(parse_device_kind("CUDA").has_value());
  for (DeviceKind kind : {DeviceKind::cuda, DeviceKind::rocm, DeviceKind::metal, DeviceKind::vulkan,
                          DeviceKind::intel_xe, DeviceKind::directml, DeviceKind::cpu}) {
    EXPECT_EQ(parse_device_kind(to_string(kind)), kind);
  }
}

TEST(DeviceKey, HostAndLocalIdMakeTheIdentity) {
  const DeviceKey a{"host-a", "cuda:0"}, b{"host-b", "cuda:0"};
  EXPECT_NE(a, b);
  EXPECT_NE(DeviceKeyHash{}(a), DeviceKeyHash{}(b));
  EXPECT_EQ(parse_device_key("host-b/cuda:0", "x"), b);
  EXPECT_EQ(parse_device_key("cuda:0", "host-a"), a);
  EXPECT_EQ(a.str(), "host-a/cuda:0");
}

TEST(DeviceInfo, ValidationNamesTheField) {
  DeviceInfo info;
  info.key = {"h", "cuda:0"};
  EXPECT_NO_THROW(validate_device_info(info));
  info.power_limit_watts = -5;
  try {
    validate_device_info(info);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "power_limit_watts");
  }
  info.power_limit_watts.reset();
  info.key.local_id = "";
  EXPECT_THROW(validate_device_info(info), InputError);
  info.key.local_id = "a/b";
  EXPECT_THROW(validate_device_info(info), InputError);
}

}  // namespace
}  // namespace gpucluster
