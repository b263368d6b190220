#include "backends/vendor_library.hpp"

#include <dlfcn.h>

#include <string>
#include <utility>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace gpucluster {
namespace {

// The fake vendor libraries built next to the tests (tests/backends/fake_*).
std::string fake_library(const std::string& name) {
  return fmt::format("{}/lib{}.so", GPUCLUSTER_BUILD_DIR, name);
}

// Whether the process has `path` loaded: dlopen with RTLD_NOLOAD loads nothing.
bool loaded(const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr) return false;
  dlclose(handle);  // RTLD_NOLOAD still took a reference
  return true;
}

// The address of `symbol` in the already loaded `path`; null when either is absent.
void* symbol_of(const std::string& path, const char* symbol) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr) return nullptr;
  void* address = dlsym(handle, symbol);
  dlclose(handle);
  dlerror();
  return address;
}

using InitFn = int (*)();
using CountFn = int (*)(unsigned int*);
using PciInfoFn = int (*)(void*, void*);

// Anything but null, to see a binding overwrite it.
int stand_in_init() {
  return -1;
}
int stand_in_count(unsigned int*) {
  return -1;
}

TEST(VendorLibrary, RequiredFunctionsPresentAreBound) {
  VendorLibrary library = VendorLibrary::open(fake_library("fake_nvml"));
  ASSERT_TRUE(library.is_open()) << library.open_error();
  EXPECT_EQ(library.open_error(), "");
  InitFn shutdown = nullptr;
  EXPECT_STREQ(library.require(shutdown, "nvmlShutdown"), "nvmlShutdown");
  EXPECT_NE(shutdown, nullptr);
  EXPECT_TRUE(library.complete());
  EXPECT_EQ(library.missing_message("NVML"), "");
  EXPECT_EQ(dlerror(), nullptr);
}

TEST(VendorLibrary, OptionalFunctionAbsentIsNullAndLeavesNoErrorBehind) {
  VendorLibrary library = VendorLibrary::open(fake_library("fake_nvml_minimal"));
  ASSERT_TRUE(library.is_open()) << library.open_error();
  CountFn fan_speed = &stand_in_count;
  EXPECT_EQ(library.optional(fan_speed, "nvmlDeviceGetFanSpeed"), nullptr);
  EXPECT_EQ(fan_speed, nullptr);
  EXPECT_TRUE(library.complete());  // optional: not missing
  EXPECT_EQ(dlerror(), nullptr);    // a later dlerror() reader must not see this one's
}

TEST(VendorLibrary, VersionedFunctionBindsTheNewestAvailable) {
  // The full fake has nvmlInit_v2 only; the legacy one nvmlInit only.
  VendorLibrary full = VendorLibrary::open(fake_library("fake_nvml"));
  VendorLibrary legacy = VendorLibrary::open(fake_library("fake_nvml_legacy"));
  ASSERT_TRUE(full.is_open()) << full.open_error();
  ASSERT_TRUE(legacy.is_open()) << legacy.open_error();
  InitFn init = nullptr;
  EXPECT_STREQ(full.require(init, {"nvmlInit_v2", "nvmlInit"}), "nvmlInit_v2");
  EXPECT_EQ(reinterpret_cast<void*>(init), symbol_of(fake_library("fake_nvml"), "nvmlInit_v2"));
  EXPECT_STREQ(legacy.require(init, {"nvmlInit_v2", "nvmlInit"}), "nvmlInit");
  EXPECT_EQ(reinterpret_cast<void*>(init), symbol_of(fake_library("fake_nvml_legacy"), "nvmlInit"));
  EXPECT_NE(init, nullptr);
  EXPECT_TRUE(full.complete());
  EXPECT_TRUE(legacy.complete());

  // Both _v3 and _v2 in the full fake: _v3 wins; the legacy one has only _v2.
  PciInfoFn pci = nullptr;
  EXPECT_STREQ(full.optional(pci, {"nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2"}), "nvmlDeviceGetPciInfo_v3");
  EXPECT_STREQ(legacy.optional(pci, {"nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2"}), "nvmlDeviceGetPciInfo_v2");
  EXPECT_NE(pci, nullptr);
  EXPECT_EQ(legacy.optional(pci, {"nvmlDeviceGetPciInfo_v4", "nvmlDeviceGetPciInfo_v3"}), nullptr);
  EXPECT_EQ(pci, nullptr);
  EXPECT_TRUE(legacy.complete());
}

TEST(VendorLibrary, OneMessageNamesEveryMissingRequiredFunction) {
  const std::string path = fake_library("fake_nvml_broken");
  VendorLibrary library = VendorLibrary::open(path);
  ASSERT_TRUE(library.is_open()) << library.open_error();
  InitFn init = nullptr;
  CountFn count = nullptr;
  CountFn clock = nullptr;
  CountFn absent = nullptr;
  library.require(init, {"nvmlInit_v2", "nvmlInit"});                          // present
  library.require(clock, "nvmlDeviceGetClockInfo");                            // absent from the broken fake
  library.require(count, {"nvmlDeviceGetCount_v3", "nvmlDeviceGetCount_v2"});  // _v2 present
  library.require(absent, {"nvmlNoSuchFunction_v3", "nvmlNoSuchFunction_v2", "nvmlNoSuchFunction"});
  EXPECT_NE(init, nullptr);
  EXPECT_NE(count, nullptr);
  EXPECT_EQ(clock, nullptr);
  EXPECT_EQ(absent, nullptr);
  EXPECT_FALSE(library.complete());
  EXPECT_EQ(library.missing().size(), 2U);
  EXPECT_EQ(library.missing_message("NVML"),
            path +
                " lacks the required NVML functions nvmlDeviceGetClockInfo, nvmlNoSuchFunction (tried "
                "nvmlNoSuchFunction_v3, nvmlNoSuchFunction_v2, nvmlNoSuchFunction)");
  EXPECT_EQ(dlerror(), nullptr);

  VendorLibrary one = VendorLibrary::open(path);
  one.require(clock, "nvmlDeviceGetClockInfo");
  EXPECT_EQ(one.missing_message(""), path + " lacks the required function nvmlDeviceGetClockInfo");
}

TEST(VendorLibrary, MissingFileSaysWhichPathAndWhy) {
  VendorLibrary library = VendorLibrary::open("/nonexistent/libvendor.so.1");
  EXPECT_FALSE(library.is_open());
  EXPECT_EQ(library.path(), "/nonexistent/libvendor.so.1");
  EXPECT_NE(library.open_error().find("cannot load /nonexistent/libvendor.so.1 ("), std::string::npos)
      << library.open_error();
  EXPECT_NE(library.open_error().find("No such file or directory"), std::string::npos) << library.open_error();
  // Nothing to bind from: every required function is missing, none is called.
  InitFn init = &stand_in_init;
  EXPECT_EQ(library.require(init, "nvmlInit_v2"), nullptr);
  EXPECT_EQ(init, nullptr);
  EXPECT_FALSE(library.complete());
  EXPECT_TRUE(library.close());
}

TEST(VendorLibrary, TheHandleIsClosedOnDestructionAndFollowsAMove) {
  // A fake no other test in this program keeps open, so its reference count is ours alone.
  const std::string path = fake_library("fake_rocm_minimal");
  ASSERT_FALSE(loaded(path));
  {
    VendorLibrary library = VendorLibrary::open(path);
    ASSERT_TRUE(library.is_open()) << library.open_error();
    EXPECT_TRUE(loaded(path));
    VendorLibrary moved = std::move(library);
    EXPECT_FALSE(library.is_open());  // NOLINT(bugprone-use-after-move): the moved-from state is the point
    EXPECT_TRUE(moved.is_open());
    VendorLibrary assigned = VendorLibrary::open(fake_library("fake_rocm_broken"));
    assigned = std::move(moved);  // closes what `assigned` held
    EXPECT_FALSE(loaded(fake_library("fake_rocm_broken")));
    EXPECT_TRUE(loaded(path));
  }
  EXPECT_FALSE(loaded(path));

  VendorLibrary closed_early = VendorLibrary::open(path);
  EXPECT_TRUE(loaded(path));
  EXPECT_TRUE(closed_early.close());
  EXPECT_FALSE(closed_early.is_open());
  EXPECT_FALSE(loaded(path));
}

}  // namespace
}  // namespace gpucluster
