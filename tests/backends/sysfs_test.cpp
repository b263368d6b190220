#include "gpucluster/backends/sysfs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "gpucluster/backends/host.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/node/manager.hpp"
#include "support/fake_backend.hpp"

namespace gpucluster {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A throwaway sysfs tree under the temp directory, removed when the test ends.
class FakeSys {
 public:
  FakeSys() {
    static std::atomic<int> counter{0};
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = test != nullptr ? test->name() : "tree";
    for (char& c : name) {
      if (c == '/') c = '_';  // parameterized test names
    }
    root_ = fs::temp_directory_path() / fmt::format("gpucluster-sysfs-{}-{}-{}", ::getpid(), name, counter++);
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  ~FakeSys() {
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }
  FakeSys(const FakeSys&) = delete;
  FakeSys& operator=(const FakeSys&) = delete;

  void write(const std::string& relative, const std::string& content) const {
    const fs::path path = root_ / relative;
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
  }
  void remove(const std::string& relative) const { fs::remove_all(root_ / relative); }
  void symlink(const std::string& target, const std::string& relative) const {
    const fs::path path = root_ / relative;
    fs::create_directories(path.parent_path());
    fs::create_directory_symlink(target, path);
  }
  const fs::path& root() const { return root_; }

 private:
  fs::path root_;
};

std::string card(int n) {
  return fmt::format("class/drm/card{}", n);
}
std::string dev(int n) {
  return card(n) + "/device";
}
std::string hwmon(int n) {
  return dev(n) + "/hwmon/hwmon3";
}

constexpr std::uint64_t kAmdVramTotal = 25'753'026'560;  // 24 GiB card as the kernel reports it
constexpr std::uint64_t kAmdVramUsed = 1'073'741'824;

// An amdgpu card with every file the backend reads.
void write_amdgpu(const FakeSys& sys, int n) {
  sys.write(dev(n) + "/uevent", "DRIVER=amdgpu\nPCI_CLASS=30000\nPCI_ID=1002:744C\nPCI_SLOT_NAME=0000:03:00.0\n");
  sys.write(dev(n) + "/device", "0x744c\n");
  sys.write(dev(n) + "/product_name", "Radeon RX 7900 XTX\n");
  sys.write(dev(n) + "/power/runtime_status", "active\n");
  sys.write(dev(n) + "/gpu_busy_percent", "42\n");
  sys.write(dev(n) + "/mem_info_vram_total", fmt::format("{}\n", kAmdVramTotal));
  sys.write(dev(n) + "/mem_info_vram_used", fmt::format("{}\n", kAmdVramUsed));
  sys.write(dev(n) + "/pp_dpm_sclk", "0: 500Mhz \n1: 1850Mhz *\n2: 2482Mhz \n");
  sys.write(hwmon(n) + "/name", "amdgpu\n");
  sys.write(hwmon(n) + "/power1_average", "123456789\n");  // µW
  sys.write(hwmon(n) + "/power1_input", "150000000\n");
  sys.write(hwmon(n) + "/power1_cap", "303000000\n");
  sys.write(hwmon(n) + "/temp1_input", "54000\n");  // m°C
  sys.write(hwmon(n) + "/temp1_crit", "100000\n");
  sys.write(hwmon(n) + "/temp1_emergency", "105000\n");
  sys.write(hwmon(n) + "/freq1_input", "1700000000\n");  // Hz
  sys.write(hwmon(n) + "/pwm1", "153\n");                // of pwm1_max
  sys.write(hwmon(n) + "/pwm1_max", "255\n");
  sys.write(hwmon(n) + "/fan1_input", "1650\n");             // RPM: never read as a percent
  sys.write(hwmon(n) + "/energy1_input", "987654321000\n");  // µJ
}

// A discrete i915 card (DG2): clocks in the card dir, memory from the backports' lmem files.
void write_i915(const FakeSys& sys, int n) {
  sys.write(dev(n) + "/uevent", "DRIVER=i915\nPCI_ID=8086:56A0\nPCI_SLOT_NAME=0000:04:00.0\n");
  sys.write(dev(n) + "/device", "0x56a0\n");
  sys.write(dev(n) + "/power/runtime_status", "active\n");
  sys.write(card(n) + "/gt_cur_freq_mhz", "1300\n");
  sys.write(card(n) + "/gt_max_freq_mhz", "2050\n");
  sys.write(card(n) + "/gt_min_freq_mhz", "300\n");
  sys.write(card(n) + "/lmem_total_bytes", "17179869184\n");
  sys.write(card(n) + "/lmem_avail_bytes", "16106127360\n");
  sys.write(hwmon(n) + "/name", "i915\n");
  sys.write(hwmon(n) + "/energy1_input", "5000000000\n");  // µJ
  sys.write(hwmon(n) + "/power1_max", "190000000\n");
}

void write_xe(const FakeSys& sys, int n) {
  sys.write(dev(n) + "/uevent", "DRIVER=xe\nPCI_ID=8086:E20B\nPCI_SLOT_NAME=0000:05:00.0\n");
  sys.write(dev(n) + "/power/runtime_status", "active\n");
  sys.write(dev(n) + "/tile0/gt0/freq0/cur_freq", "1800\n");
  sys.write(dev(n) + "/tile0/gt0/freq0/max_freq", "2400\n");
  sys.write(dev(n) + "/tile0/gt0/freq0/rp0_freq", "2850\n");
  sys.write(dev(n) + "/tile0/physical_vram_size_bytes", "12884901888\n");
  sys.write(dev(n) + "/mem_info_vram_total", "12884901888\n");
  sys.write(dev(n) + "/mem_info_vram_used", "536870912\n");
  sys.write(hwmon(n) + "/name", "xe\n");
  sys.write(hwmon(n) + "/temp1_input", "48500\n");
  sys.write(hwmon(n) + "/energy1_input", "1000\n");
}

TEST(SysfsBackend, AmdgpuCardReportsEveryFieldInBaseUnits) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  SysfsBackend backend(sys.root());
  EXPECT_EQ(backend.name(), "sysfs");

  const Discovery discovery = backend.discover("node-1");
  ASSERT_EQ(discovery.devices.size(), 1u) << discovery.note;
  EXPECT_TRUE(discovery.note.empty()) << discovery.note;
  const DeviceInfo& info = discovery.devices.front();
  EXPECT_EQ(info.key, (DeviceKey{"node-1", "rocm:0"}));
  EXPECT_EQ(info.kind, DeviceKind::rocm);
  EXPECT_EQ(info.vendor, "amd");
  EXPECT_EQ(info.backend, "sysfs");
  EXPECT_EQ(info.name, "Radeon RX 7900 XTX");
  EXPECT_EQ(info.pci_bus_id, "0000:03:00.0");
  EXPECT_EQ(info.memory_total_bytes, kAmdVramTotal);
  ASSERT_TRUE(info.max_clock_mhz.has_value());
  EXPECT_DOUBLE_EQ(*info.max_clock_mhz, 2482.0);  // highest pp_dpm_sclk level
  ASSERT_TRUE(info.temperature_slowdown_celsius.has_value());
  EXPECT_DOUBLE_EQ(*info.temperature_slowdown_celsius, 100.0);
  ASSERT_TRUE(info.temperature_shutdown_celsius.has_value());
  EXPECT_DOUBLE_EQ(*info.temperature_shutdown_celsius, 105.0);
  ASSERT_TRUE(info.power_limit_watts.has_value());
  EXPECT_NEAR(*info.power_limit_watts, 303.0, 1e-3);

  const Sample sample = backend.sample("rocm:0");
  EXPECT_EQ(sample.memory_total_bytes, static_cast<std::int64_t>(kAmdVramTotal));
  EXPECT_EQ(sample.memory_used_bytes, static_cast<std::int64_t>(kAmdVramUsed));
  EXPECT_EQ(sample.utilization_percent, 42.0F);
  ASSERT_TRUE(sample.power_watts.has_value());
  EXPECT_NEAR(*sample.power_watts, 123.456789, 1e-3);  // power1_average wins over power1_input
  EXPECT_EQ(sample.temperature_celsius, 54.0F);
  EXPECT_EQ(sample.clock_mhz, 1850.0F);                         // the starred level, not freq1_input
  EXPECT_EQ(sample.fan_speed_percent, 60.0F);                   // pwm1 153 of 255
  EXPECT_DOUBLE_EQ(sample.energy_joules.value(), 987'654.321);  // µJ → J
  EXPECT_GT(sample.timestamp.time_since_epoch().count(), 0);

  const FieldAvailability fields = backend.available_fields("rocm:0");
  EXPECT_TRUE(fields.has(Quantity::utilization_percent));
  EXPECT_TRUE(fields.has(Quantity::power_watts));
  EXPECT_TRUE(fields.has(Quantity::temperature_celsius));
  EXPECT_TRUE(fields.has(Quantity::clock_mhz));
  EXPECT_TRUE(fields.has(Quantity::fan_speed_percent));
  EXPECT_TRUE(fields.has(Quantity::energy_joules));
}

// pwm1 over pwm1_max (255 when absent); without pwm1 the fan is unavailable,
// never guessed from fan1_input (RPM); a broken pwm file is unavailable too.
TEST(SysfsBackend, AmdgpuFanSpeedIsPwmOverItsMaximumAndNeverFromRpm) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  SysfsBackend backend(sys.root());
  ASSERT_EQ(backend.discover("h").devices.size(), 1u);

  sys.remove(hwmon(0) + "/pwm1_max");
  sys.write(hwmon(0) + "/pwm1", "51\n");
  EXPECT_EQ(backend.sample("rocm:0").fan_speed_percent, 20.0F);  // 51 of the default 255

  sys.write(hwmon(0) + "/pwm1_max", "100\n");
  sys.write(hwmon(0) + "/pwm1", "101\n");  // above its maximum: implausible, counted
  EXPECT_FALSE(backend.sample("rocm:0").fan_speed_percent.has_value());
  sys.write(hwmon(0) + "/pwm1_max", "0\n");
  sys.write(hwmon(0) + "/pwm1", "0\n");  // no scale: no reading at all
  EXPECT_FALSE(backend.sample("rocm:0").fan_speed_percent.has_value());
  sys.write(hwmon(0) + "/pwm1_max", "255\n");
  sys.write(hwmon(0) + "/pwm1", "-3\n");  // malformed: no reading either
  EXPECT_FALSE(backend.sample("rocm:0").fan_speed_percent.has_value());
  EXPECT_EQ(backend.implausible_readings()[static_cast<std::size_t>(Quantity::fan_speed_percent)], 1U);

  sys.remove(hwmon(0) + "/pwm1");  // fan1_input (RPM) is still there
  const Sample sample = backend.sample("rocm:0");
  EXPECT_FALSE(sample.fan_speed_percent.has_value());
  EXPECT_FALSE(backend.available_fields("rocm:0").has(Quantity::fan_speed_percent));
  EXPECT_EQ(sample.temperature_celsius, 54.0F);  // the rest of the sample stands
}

TEST(SysfsBackend, AmdgpuWithoutEnergyOrWithABrokenCounterHasNoEnergy) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  sys.remove(hwmon(0) + "/energy1_input");
  SysfsBackend backend(sys.root());
  ASSERT_EQ(backend.discover("h").devices.size(), 1u);
  EXPECT_FALSE(backend.available_fields("rocm:0").has(Quantity::energy_joules));
  EXPECT_FALSE(backend.sample("rocm:0").energy_joules.has_value());

  sys.write(hwmon(0) + "/energy1_input", "2000000000000000000000\n");  // beyond 64 bits: a broken file
  EXPECT_FALSE(backend.sample("rocm:0").energy_joules.has_value());
  sys.write(hwmon(0) + "/energy1_input", "-5\n");
  EXPECT_FALSE(backend.sample("rocm:0").energy_joules.has_value());
  sys.write(hwmon(0) + "/energy1_input", "42\n");
  EXPECT_DOUBLE_EQ(backend.sample("rocm:0").energy_joules.value(), 42e-6);
  EXPECT_TRUE(backend.available_fields("rocm:0").has(Quantity::energy_joules));
}

TEST(SysfsBackend, AmdgpuFallsBackToPowerInputFreqInputAndDriverSymlink) {
  FakeSys sys;
  write_amdgpu(sys, 2);
  // A real tree: the driver is a symlink, uevent has no DRIVER= line, no product name.
  sys.write(dev(2) + "/uevent", "PCI_SLOT_NAME=0000:0a:00.0\n");
  fs::create_directories(sys.root() / "bus/pci/drivers/amdgpu");
  sys.symlink((sys.root() / "bus/pci/drivers/amdgpu").string(), dev(2) + "/driver");
  sys.remove(dev(2) + "/product_name");
  sys.remove(dev(2) + "/pp_dpm_sclk");
  sys.remove(hwmon(2) + "/power1_average");
  sys.remove(hwmon(2) + "/temp1_crit");
  sys.remove(hwmon(2) + "/temp1_emergency");
  sys.remove(hwmon(2) + "/power1_cap");
  SysfsBackend backend(sys.root());

  const Discovery discovery = backend.discover("h");
  ASSERT_EQ(discovery.devices.size(), 1u) << discovery.note;
  const DeviceInfo& info = discovery.devices.front();
  EXPECT_EQ(info.key.local_id, "rocm:2");
  EXPECT_EQ(info.name, "AMD GPU 0x744c");
  EXPECT_EQ(info.pci_bus_id, "0000:0a:00.0");
  EXPECT_FALSE(info.max_clock_mhz.has_value());
  EXPECT_FALSE(info.temperature_slowdown_celsius.has_value());
  EXPECT_FALSE(info.temperature_shutdown_celsius.has_value());
  EXPECT_FALSE(info.power_limit_watts.has_value());

  const Sample sample = backend.sample("rocm:2");
  ASSERT_TRUE(sample.power_watts.has_value());
  EXPECT_NEAR(*sample.power_watts, 150.0, 1e-3);  // µW → W from power1_input
  EXPECT_EQ(sample.clock_mhz, 1700.0F);           // Hz → MHz from freq1_input
}

TEST(SysfsBackend, AmdgpuNameFromPciIdWhenDeviceFileIsMissing) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  sys.remove(dev(0) + "/product_name");
  sys.remove(dev(0) + "/device");
  SysfsBackend backend(sys.root());
  EXPECT_EQ(backend.discover("h").devices.at(0).name, "AMD GPU 0x744C");
}

TEST(SysfsBackend, I915ClocksFromTheCardDirAndPowerFromEnergyDeltas) {
  FakeSys sys;
  write_i915(sys, 0);
  SysfsBackend backend(sys.root());

  const Discovery discovery = backend.discover("h");
  ASSERT_EQ(discovery.devices.size(), 1u) << discovery.note;
  const DeviceInfo& info = discovery.devices.front();
  EXPECT_EQ(info.key.local_id, "xe:0");
  EXPECT_EQ(info.kind, DeviceKind::intel_xe);
  EXPECT_EQ(info.vendor, "intel");
  EXPECT_EQ(info.name, "Intel GPU 0x56a0");
  EXPECT_EQ(info.pci_bus_id, "0000:04:00.0");
  EXPECT_EQ(info.memory_total_bytes, 17179869184u);
  EXPECT_EQ(info.max_clock_mhz, 2050.0);  // no gt_RP0_freq_mhz: the max limit
  ASSERT_TRUE(info.power_limit_watts.has_value());
  EXPECT_NEAR(*info.power_limit_watts, 190.0, 1e-3);
  const FieldAvailability fields = backend.available_fields("xe:0");
  EXPECT_FALSE(fields.has(Quantity::utilization_percent));
  EXPECT_TRUE(fields.has(Quantity::power_watts));
  EXPECT_FALSE(fields.has(Quantity::temperature_celsius));
  EXPECT_TRUE(fields.has(Quantity::clock_mhz));

  const auto before_first = std::chrono::steady_clock::now();
  const Sample first = backend.sample("xe:0");
  const auto after_first = std::chrono::steady_clock::now();
  EXPECT_FALSE(first.power_watts.has_value());  // no interval yet
  EXPECT_FALSE(first.utilization_percent.has_value());
  EXPECT_FALSE(first.temperature_celsius.has_value());
  EXPECT_FALSE(first.fan_speed_percent.has_value());
  EXPECT_DOUBLE_EQ(first.energy_joules.value(), 5000.0);  // the counter itself: µJ → J, from the first sample
  EXPECT_TRUE(backend.available_fields("xe:0").has(Quantity::energy_joules));
  EXPECT_EQ(first.clock_mhz, 1300.0F);
  EXPECT_EQ(first.memory_total_bytes, 17179869184);
  EXPECT_EQ(first.memory_used_bytes, 17179869184 - 16106127360);

  constexpr std::uint64_t kDeltaUj = 2'000'000;  // 2 J
  sys.write(hwmon(0) + "/energy1_input", fmt::format("{}\n", 5'000'000'000 + kDeltaUj));
  sys.write(card(0) + "/gt_cur_freq_mhz", "2050\n");
  std::this_thread::sleep_for(100ms);
  const auto before_second = std::chrono::steady_clock::now();
  const Sample second = backend.sample("xe:0");
  const auto after_second = std::chrono::steady_clock::now();
  ASSERT_TRUE(second.power_watts.has_value());
  const double longest = std::chrono::duration<double>(after_second - before_first).count();
  const double shortest = std::chrono::duration<double>(before_second - after_first).count();
  const double joules = static_cast<double>(kDeltaUj) / 1e6;
  EXPECT_GE(*second.power_watts, joules / longest * (1 - 1e-5));
  EXPECT_LE(*second.power_watts, joules / shortest * (1 + 1e-5));
  EXPECT_EQ(second.clock_mhz, 2050.0F);

  // The counter went backwards (driver reload): no power for that interval, then it resumes.
  sys.write(hwmon(0) + "/energy1_input", "10\n");
  EXPECT_FALSE(backend.sample("xe:0").power_watts.has_value());
  sys.write(hwmon(0) + "/energy1_input", "1000010\n");
  std::this_thread::sleep_for(20ms);
  const Sample resumed = backend.sample("xe:0");
  ASSERT_TRUE(resumed.power_watts.has_value());
  EXPECT_GT(*resumed.power_watts, 0.0F);
}

TEST(SysfsBackend, I915PrefersTheHardwareMaximumAndReadsPrelimLmem) {
  FakeSys sys;
  write_i915(sys, 0);
  sys.write(card(0) + "/gt_RP0_freq_mhz", "2400\n");
  sys.remove(card(0) + "/lmem_total_bytes");
  sys.remove(card(0) + "/lmem_avail_bytes");
  sys.write(card(0) + "/prelim_lmem_total_bytes", "8589934592\n");
  sys.write(card(0) + "/prelim_lmem_avail_bytes", "8589934592\n");
  SysfsBackend backend(sys.root());
  const DeviceInfo info = backend.discover("h").devices.at(0);
  EXPECT_EQ(info.max_clock_mhz, 2400.0);
  EXPECT_EQ(info.memory_total_bytes, 8589934592u);
  EXPECT_EQ(backend.sample("xe:0").memory_used_bytes, 0);
}

TEST(SysfsBackend, XeClocksFromTile0Gt0Freq0) {
  FakeSys sys;
  write_xe(sys, 1);
  SysfsBackend backend(sys.root());

  const Discovery discovery = backend.discover("h");
  ASSERT_EQ(discovery.devices.size(), 1u) << discovery.note;
  const DeviceInfo& info = discovery.devices.front();
  EXPECT_EQ(info.key.local_id, "xe:1");
  EXPECT_EQ(info.kind, DeviceKind::intel_xe);
  EXPECT_EQ(info.name, "Intel GPU 0xE20B");
  EXPECT_EQ(info.max_clock_mhz, 2850.0);  // rp0_freq before the max_freq limit
  EXPECT_EQ(info.memory_total_bytes, 12884901888u);

  const Sample sample = backend.sample("xe:1");
  EXPECT_EQ(sample.clock_mhz, 1800.0F);
  EXPECT_EQ(sample.temperature_celsius, 48.5F);
  EXPECT_EQ(sample.memory_used_bytes, 536870912);
  EXPECT_FALSE(sample.utilization_percent.has_value());
  EXPECT_FALSE(sample.power_watts.has_value());
  const FieldAvailability fields = backend.available_fields("xe:1");
  EXPECT_FALSE(fields.has(Quantity::utilization_percent));
  EXPECT_TRUE(fields.has(Quantity::power_watts));
  EXPECT_TRUE(fields.has(Quantity::temperature_celsius));
  EXPECT_TRUE(fields.has(Quantity::clock_mhz));

  sys.write(dev(1) + "/tile0/gt0/freq0/max_freq", "garbage\n");
  sys.remove(dev(1) + "/tile0/gt0/freq0/rp0_freq");
  EXPECT_FALSE(backend.discover("h").devices.at(0).max_clock_mhz.has_value());
}

TEST(SysfsBackend, IntelCardsWithoutMemoryUsageAreSkippedWithANote) {
  FakeSys sys;
  write_i915(sys, 0);  // integrated: no lmem files
  sys.remove(card(0) + "/lmem_total_bytes");
  sys.remove(card(0) + "/lmem_avail_bytes");
  write_xe(sys, 1);  // upstream xe: only the total
  sys.remove(dev(1) + "/mem_info_vram_total");
  sys.remove(dev(1) + "/mem_info_vram_used");
  SysfsBackend backend(sys.root());

  const Discovery discovery = backend.discover("h");
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_NE(discovery.note.find("i915 card0: no readable memory information"), std::string::npos) << discovery.note;
  EXPECT_NE(discovery.note.find("xe card1: no readable memory information"), std::string::npos) << discovery.note;
  EXPECT_THROW(backend.sample("xe:0"), UnknownDeviceError);
}

// Files a read would wake the card for, overwritten with values the test would notice.
void poison_awake_files(const FakeSys& sys, int n) {
  sys.write(dev(n) + "/gpu_busy_percent", "93\n");
  sys.write(dev(n) + "/mem_info_vram_total", "1\n");  // would make used > total: a throw
  sys.write(dev(n) + "/mem_info_vram_used", "999\n");
  sys.write(dev(n) + "/pp_dpm_sclk", "0: 777Mhz *\n");
  sys.write(hwmon(n) + "/power1_average", "250000000\n");
  sys.write(hwmon(n) + "/power1_input", "250000000\n");
  sys.write(hwmon(n) + "/temp1_input", "99000\n");
  sys.write(hwmon(n) + "/freq1_input", "777000000\n");
}

TEST(SysfsBackend, SuspendedAmdgpuIsReportedIdleWithoutReadingWakingFiles) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  SysfsBackend backend(sys.root());
  ASSERT_EQ(backend.discover("h").devices.size(), 1u);
  const FieldAvailability awake_fields = backend.available_fields("rocm:0");

  sys.write(dev(0) + "/power/runtime_status", "suspended\n");
  poison_awake_files(sys, 0);
  const Sample asleep = backend.sample("rocm:0");
  EXPECT_EQ(asleep.utilization_percent, 0.0F);
  EXPECT_FALSE(asleep.power_watts.has_value());
  EXPECT_FALSE(asleep.temperature_celsius.has_value());
  EXPECT_FALSE(asleep.clock_mhz.has_value());
  EXPECT_EQ(asleep.memory_total_bytes, static_cast<std::int64_t>(kAmdVramTotal));  // last read while awake
  EXPECT_EQ(asleep.memory_used_bytes, static_cast<std::int64_t>(kAmdVramUsed));
  const FieldAvailability fields = backend.available_fields("rocm:0");
  EXPECT_EQ(fields.has(Quantity::power_watts), awake_fields.has(Quantity::power_watts));
  EXPECT_EQ(fields.has(Quantity::clock_mhz), awake_fields.has(Quantity::clock_mhz));

  // Rediscovery while it sleeps keeps the card and what was learned awake.
  const Discovery again = backend.discover("h");
  ASSERT_EQ(again.devices.size(), 1u) << again.note;
  EXPECT_EQ(again.devices.front().memory_total_bytes, kAmdVramTotal);
  EXPECT_EQ(again.devices.front().max_clock_mhz, 2482.0);
  EXPECT_EQ(again.devices.front().name, "Radeon RX 7900 XTX");
  EXPECT_EQ(backend.sample("rocm:0").utilization_percent, 0.0F);

  // The poisoned files are the ones an awake card is read from: awake, they are used.
  sys.write(dev(0) + "/power/runtime_status", "active\n");
  EXPECT_THROW(backend.sample("rocm:0"), Error);  // used 999 > total 1
  sys.write(dev(0) + "/mem_info_vram_total", "4096\n");
  const Sample awake = backend.sample("rocm:0");
  EXPECT_EQ(awake.utilization_percent, 93.0F);
  EXPECT_EQ(awake.power_watts, 250.0F);
  EXPECT_EQ(awake.temperature_celsius, 99.0F);
  EXPECT_EQ(awake.clock_mhz, 777.0F);
  EXPECT_EQ(awake.memory_used_bytes, 999);
}

TEST(SysfsBackend, CardSuspendedAtFirstDiscoveryIsSkippedUntilAwake) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  sys.write(dev(0) + "/power/runtime_status", "suspended\n");
  SysfsBackend backend(sys.root());

  const Discovery asleep = backend.discover("h");
  EXPECT_TRUE(asleep.devices.empty());
  EXPECT_NE(asleep.note.find("amdgpu card0: runtime-suspended"), std::string::npos) << asleep.note;
  EXPECT_THROW(backend.sample("rocm:0"), UnknownDeviceError);

  sys.write(dev(0) + "/power/runtime_status", "active\n");
  EXPECT_EQ(backend.discover("h").devices.size(), 1u);
}

TEST(SysfsBackend, SuspendedIntelCardKeepsItsEnergyBaselineAndReadsNothing) {
  FakeSys sys;
  write_xe(sys, 0);
  SysfsBackend backend(sys.root());
  ASSERT_EQ(backend.discover("h").devices.size(), 1u);
  EXPECT_FALSE(backend.sample("xe:0").power_watts.has_value());

  sys.write(dev(0) + "/power/runtime_status", "suspended\n");
  sys.write(dev(0) + "/tile0/gt0/freq0/cur_freq", "999\n");
  sys.write(hwmon(0) + "/energy1_input", "1001000\n");  // +1 J
  const Sample asleep = backend.sample("xe:0");
  EXPECT_EQ(asleep.utilization_percent, 0.0F);
  EXPECT_FALSE(asleep.power_watts.has_value());
  EXPECT_FALSE(asleep.clock_mhz.has_value());
  EXPECT_FALSE(asleep.temperature_celsius.has_value());
  EXPECT_EQ(asleep.memory_used_bytes, 536870912);

  // Awake again: the interval runs from the last awake reading.
  sys.write(dev(0) + "/power/runtime_status", "active\n");
  const Sample awake = backend.sample("xe:0");
  ASSERT_TRUE(awake.power_watts.has_value());
  EXPECT_GT(*awake.power_watts, 0.0F);
  EXPECT_EQ(awake.clock_mhz, 999.0F);
}

// Every kind of broken content a gauge file may hold.
class MalformedGauge : public ::testing::TestWithParam<const char*> {};

TEST_P(MalformedGauge, AmdgpuGaugeFieldsBecomeUnavailable) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  const std::string bad = GetParam();
  sys.write(dev(0) + "/gpu_busy_percent", bad);
  sys.write(hwmon(0) + "/power1_average", bad);
  sys.write(hwmon(0) + "/power1_input", bad);
  sys.write(hwmon(0) + "/temp1_input", bad);
  sys.write(dev(0) + "/pp_dpm_sclk", bad);
  sys.write(hwmon(0) + "/freq1_input", bad);
  sys.write(hwmon(0) + "/temp1_crit", bad);
  sys.write(hwmon(0) + "/power1_cap", bad);
  SysfsBackend backend(sys.root());

  const Discovery discovery = backend.discover("h");
  ASSERT_EQ(discovery.devices.size(), 1u) << discovery.note;
  EXPECT_FALSE(discovery.devices.front().max_clock_mhz.has_value());
  EXPECT_FALSE(discovery.devices.front().temperature_slowdown_celsius.has_value());
  EXPECT_FALSE(discovery.devices.front().power_limit_watts.has_value());
  const Sample sample = backend.sample("rocm:0");
  EXPECT_FALSE(sample.utilization_percent.has_value());
  EXPECT_FALSE(sample.power_watts.has_value());
  EXPECT_FALSE(sample.temperature_celsius.has_value());
  EXPECT_FALSE(sample.clock_mhz.has_value());
  EXPECT_EQ(sample.memory_total_bytes, static_cast<std::int64_t>(kAmdVramTotal));  // memory unaffected
  const FieldAvailability fields = backend.available_fields("rocm:0");
  EXPECT_FALSE(fields.has(Quantity::utilization_percent));
  EXPECT_FALSE(fields.has(Quantity::power_watts));
  EXPECT_FALSE(fields.has(Quantity::temperature_celsius));
  EXPECT_FALSE(fields.has(Quantity::clock_mhz));
}

TEST_P(MalformedGauge, IntelGaugeFieldsBecomeUnavailable) {
  FakeSys sys;
  write_i915(sys, 0);
  write_xe(sys, 1);
  const std::string bad = GetParam();
  sys.write(card(0) + "/gt_cur_freq_mhz", bad);
  sys.write(card(0) + "/gt_max_freq_mhz", bad);
  sys.write(hwmon(0) + "/energy1_input", bad);
  sys.write(dev(1) + "/tile0/gt0/freq0/cur_freq", bad);
  sys.write(dev(1) + "/tile0/gt0/freq0/rp0_freq", bad);
  sys.write(dev(1) + "/tile0/gt0/freq0/max_freq", bad);
  sys.write(hwmon(1) + "/temp1_input", bad);
  SysfsBackend backend(sys.root());

  const Discovery discovery = backend.discover("h");
  ASSERT_EQ(discovery.devices.size(), 2u) << discovery.note;
  for (const DeviceInfo& info : discovery.devices) EXPECT_FALSE(info.max_clock_mhz.has_value()) << info.key.str();
  for (int pass = 0; pass < 2; ++pass) {  // the second pass has a baseline, if a bad counter had made one
    const Sample i915 = backend.sample("xe:0");
    EXPECT_FALSE(i915.clock_mhz.has_value());
    EXPECT_FALSE(i915.power_watts.has_value());
    const Sample xe = backend.sample("xe:1");
    EXPECT_FALSE(xe.clock_mhz.has_value());
    EXPECT_FALSE(xe.temperature_celsius.has_value());
  }
  EXPECT_FALSE(backend.available_fields("xe:0").has(Quantity::power_watts));
  EXPECT_FALSE(backend.available_fields("xe:0").has(Quantity::clock_mhz));
  EXPECT_FALSE(backend.available_fields("xe:1").has(Quantity::temperature_celsius));
}

INSTANTIATE_TEST_SUITE_P(SysfsBackend, MalformedGauge,
                         ::testing::Values("", "abc", "99999999999999999999999", "-5", "12abc", "0x20", "1e400",
                                           "\n\n"),
                         [](const auto& case_info) { return fmt::format("case{}", case_info.index); });

TEST(SysfsBackend, GaugesBeyondSaneLimitsAreUnavailable) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  sys.write(dev(0) + "/gpu_busy_percent", "101\n");
  sys.write(hwmon(0) + "/power1_average", "18446744073709551615\n");  // UINT64_MAX µW
  sys.write(hwmon(0) + "/power1_input", "100000000000000\n");         // 10^8 W
  sys.write(hwmon(0) + "/temp1_input", "300000\n");                   // 300 °C
  sys.write(dev(0) + "/pp_dpm_sclk", "0: 500Mhz \n1: 900000000Mhz *\n");
  sys.write(hwmon(0) + "/freq1_input", "999999999999999\n");  // 10^9 MHz
  SysfsBackend backend(sys.root());
  ASSERT_EQ(backend.discover("h").devices.size(), 1u);
  EXPECT_EQ(backend.implausible_readings(), ImplausibleCounts{});  // discovery's probes are not counted

  const Sample sample = backend.sample("rocm:0");
  EXPECT_FALSE(sample.utilization_percent.has_value());
  EXPECT_FALSE(sample.power_watts.has_value());
  EXPECT_FALSE(sample.temperature_celsius.has_value());
  EXPECT_FALSE(sample.clock_mhz.has_value());
  EXPECT_TRUE(sample.fan_speed_percent.has_value());  // the rest of the sample stands

  // Each dropped reading is counted, the fallbacks' too: power1_average and
  // power1_input, pp_dpm_sclk's current level and freq1_input.
  ImplausibleCounts expected{};
  expected[static_cast<std::size_t>(Quantity::utilization_percent)] = 1;
  expected[static_cast<std::size_t>(Quantity::power_watts)] = 2;
  expected[static_cast<std::size_t>(Quantity::temperature_celsius)] = 1;
  expected[static_cast<std::size_t>(Quantity::clock_mhz)] = 2;
  EXPECT_EQ(backend.implausible_readings(), expected);
}

TEST(SysfsBackend, IntelPowerAndClockBeyondTheirRangesAreUnavailableAndCounted) {
  FakeSys sys;
  write_i915(sys, 0);
  SysfsBackend backend(sys.root());
  ASSERT_EQ(backend.discover("h").devices.size(), 1u);
  ASSERT_TRUE(backend.sample("xe:0").clock_mhz.has_value());         // and the energy baseline
  sys.write(card(0) + "/gt_cur_freq_mhz", "200000\n");               // 200 GHz
  sys.write(hwmon(0) + "/energy1_input", "18000000000000000000\n");  // 1.8e13 J since the baseline
  const Sample sample = backend.sample("xe:0");
  EXPECT_FALSE(sample.clock_mhz.has_value());
  EXPECT_FALSE(sample.power_watts.has_value());
  EXPECT_TRUE(sample.energy_joules.has_value());  // 1.8e13 J is within the table's range
  EXPECT_EQ(backend.implausible_readings()[static_cast<std::size_t>(Quantity::clock_mhz)], 1U);
  EXPECT_EQ(backend.implausible_readings()[static_cast<std::size_t>(Quantity::power_watts)], 1U);
  EXPECT_EQ(backend.implausible_readings()[static_cast<std::size_t>(Quantity::energy_joules)], 0U);
}

class MalformedMemory : public ::testing::TestWithParam<const char*> {};

TEST_P(MalformedMemory, CardWithABadMemoryTotalIsSkippedWithANote) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  write_amdgpu(sys, 1);
  sys.write(dev(1) + "/mem_info_vram_total", GetParam());
  SysfsBackend backend(sys.root());

  const Discovery discovery = backend.discover("h");
  ASSERT_EQ(discovery.devices.size(), 1u);
  EXPECT_EQ(discovery.devices.front().key.local_id, "rocm:0");
  EXPECT_NE(discovery.note.find("amdgpu card1: no readable memory information"), std::string::npos) << discovery.note;
  EXPECT_THROW(backend.sample("rocm:1"), UnknownDeviceError);
}

TEST_P(MalformedMemory, SampleThrowsWhenTheMemoryTotalGoesBad) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  SysfsBackend backend(sys.root());
  ASSERT_EQ(backend.discover("h").devices.size(), 1u);

  sys.write(dev(0) + "/mem_info_vram_total", GetParam());
  EXPECT_THROW(backend.sample("rocm:0"), Error);
  sys.write(dev(0) + "/mem_info_vram_total", fmt::format("{}\n", kAmdVramTotal));
  EXPECT_NO_THROW(backend.sample("rocm:0"));  // recovers with the file
}

INSTANTIATE_TEST_SUITE_P(SysfsBackend, MalformedMemory,
                         ::testing::Values("", "abc", "99999999999999999999999", "-5", "0",
                                           "2251799813685248",  // 2 PiB: beyond any GPU
                                           "1024"),             // less than the used bytes
                         [](const auto& case_info) { return fmt::format("case{}", case_info.index); });

TEST(SysfsBackend, MalformedMemoryUsageSkipsTheCard) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  sys.write(dev(0) + "/mem_info_vram_used", "-5\n");
  SysfsBackend backend(sys.root());
  const Discovery discovery = backend.discover("h");
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_NE(discovery.note.find("no readable memory information"), std::string::npos) << discovery.note;
}

TEST(SysfsBackend, ConnectorsAndUnknownDriversAreSkipped) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  write_xe(sys, 3);
  // A connector with its own files, and the render node, must not be taken for cards.
  sys.write(card(0) + "-DP-1/status", "connected\n");
  sys.write(card(0) + "-DP-1/device/uevent", "DRIVER=amdgpu\n");
  sys.write("class/drm/renderD128/device/uevent", "DRIVER=amdgpu\n");
  sys.write("class/drm/version", "drm 1.1.0 20060810\n");
  sys.write(dev(1) + "/uevent", "DRIVER=nouveau\nPCI_SLOT_NAME=0000:07:00.0\n");
  fs::create_directories(sys.root() / "bus/pci/drivers/nvidia");
  sys.write(dev(2) + "/uevent", "PCI_SLOT_NAME=0000:08:00.0\n");
  sys.symlink((sys.root() / "bus/pci/drivers/nvidia").string(), dev(2) + "/driver");
  sys.write(dev(4) + "/uevent", "DRIVER=simpledrm\n");
  sys.write(dev(5) + "/uevent", "MODALIAS=platform:none\n");  // no driver at all
  fs::create_directories(sys.root() / card(6));               // no device directory
  SysfsBackend backend(sys.root());

  const Discovery discovery = backend.discover("h");
  ASSERT_EQ(discovery.devices.size(), 2u) << discovery.note;
  EXPECT_EQ(discovery.devices[0].key.local_id, "rocm:0");
  EXPECT_EQ(discovery.devices[1].key.local_id, "xe:3");
  for (const char* expected : {"card1: driver nouveau", "card2: driver nvidia", "card4: driver simpledrm",
                               "card5: driver unknown", "card6: no device directory"}) {
    EXPECT_NE(discovery.note.find(expected), std::string::npos) << expected << " in " << discovery.note;
  }
  EXPECT_EQ(discovery.note.find("DP-1"), std::string::npos) << discovery.note;
  EXPECT_EQ(discovery.note.find("renderD128"), std::string::npos) << discovery.note;
  EXPECT_THROW(backend.sample("rocm:1"), UnknownDeviceError);
}

TEST(SysfsBackend, EmptySysHasNoDevicesAndSaysWhy) {
  FakeSys sys;
  SysfsBackend backend(sys.root());
  const Discovery discovery = backend.discover("h");
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_NE(discovery.note.find("no DRM cards"), std::string::npos) << discovery.note;

  EXPECT_FALSE(discovery.unavailable) << "a sysfs tree without GPUs is not an unusable source";

  // A mistyped root is not "no GPUs": the source is unavailable and says how to fix it.
  SysfsBackend missing(sys.root() / "does-not-exist");
  const Discovery nothing = missing.discover("h");
  EXPECT_TRUE(nothing.devices.empty());
  EXPECT_TRUE(nothing.unavailable);
  EXPECT_NE(nothing.note.find("does-not-exist is not a directory"), std::string::npos) << nothing.note;
  EXPECT_NE(nothing.note.find("GPUCLUSTER_SYSFS_ROOT"), std::string::npos) << nothing.note;
}

// A device file whose read blocks (a hung driver behind sysfs) stalls only the
// sysfs backend's discovery: the manager's deadline gives up on it and the
// host backend goes on.
TEST(SysfsBackend, AHungDeviceFileFailsOnlyTheSysfsBackend) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  const fs::path fifo = sys.root() / (dev(0) + "/mem_info_vram_total");
  fs::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);  // opening it for reading blocks until a writer comes
  ManagerConfig config;
  config.host = "h";
  config.sample_interval = std::chrono::nanoseconds{0};
  config.discovery_timeout = std::chrono::milliseconds{300};
  std::vector<BackendPtr> backends;
  // The sysfs backend, counting its shutdowns (done by its worker thread once a
  // stuck call returns), so the test can wait for that thread to finish.
  auto shutdowns = std::make_shared<testing::FakeBackend::Counters>();
  backends.push_back(testing::FakeBackend::wrapping(std::make_unique<SysfsBackend>(sys.root()), shutdowns));
  backends.push_back(std::make_unique<HostBackend>());
  Manager manager(config, std::move(backends));
  manager.start(false);
  const std::vector<BackendReport> reports = manager.backend_reports();
  ASSERT_EQ(reports.size(), 2U);
  EXPECT_EQ(reports[0].error, "backend sysfs did not finish discovery within 300ms");
  EXPECT_EQ(reports[1].devices, 1U);
  ASSERT_EQ(manager.devices().size(), 1U);
  EXPECT_EQ(manager.devices()[0].info->backend, "host");

  // Let the blocked read finish (bounded), so its thread ends before the tree is removed.
  bool written = false;
  for (int attempt = 0; attempt < 500 && !written; ++attempt) {
    const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);  // ENXIO until the reader has it open
    if (fd >= 0) {
      const std::string total = "25753026560\n";
      written = ::write(fd, total.data(), total.size()) == static_cast<ssize_t>(total.size());
      ::close(fd);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
  }
  EXPECT_TRUE(written) << "the sysfs backend was not blocked reading the device file";
  // Its thread finishes discovery, shuts the backend down and ends (bounded wait).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  while (shutdowns->shutdown_returned.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
  EXPECT_EQ(shutdowns->shutdown_returned.load(), 1);
  EXPECT_EQ(manager.devices().size(), 1U) << "the late card was added";
  manager.shutdown();
  EXPECT_EQ(shutdowns->shutdown_returned.load(), 1);
}

TEST(SysfsBackend, UnknownDeviceIsReported) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  SysfsBackend backend(sys.root());
  backend.discover("h");
  EXPECT_THROW(backend.sample("rocm:7"), UnknownDeviceError);
  EXPECT_THROW(backend.available_fields("cpu:0"), UnknownDeviceError);
}

TEST(SysfsBackend, RediscoveryForgetsRemovedCards) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  write_amdgpu(sys, 1);
  SysfsBackend backend(sys.root());
  ASSERT_EQ(backend.discover("h").devices.size(), 2u);
  sys.remove(card(1));
  ASSERT_EQ(backend.discover("h").devices.size(), 1u);
  EXPECT_THROW(backend.sample("rocm:1"), UnknownDeviceError);
  EXPECT_NO_THROW(backend.sample("rocm:0"));
}

TEST(SysfsBackend, DefaultRootComesFromTheEnvironment) {
  const char* saved = std::getenv("GPUCLUSTER_SYSFS_ROOT");
  const std::string restore = saved != nullptr ? saved : "";
  ::setenv("GPUCLUSTER_SYSFS_ROOT", "/tmp/fake-sys", 1);
  EXPECT_EQ(SysfsBackend::default_root(), fs::path("/tmp/fake-sys"));
  EXPECT_EQ(SysfsBackend().root(), fs::path("/tmp/fake-sys"));
  ::setenv("GPUCLUSTER_SYSFS_ROOT", "", 1);
  EXPECT_EQ(SysfsBackend::default_root(), fs::path("/sys"));
  ::unsetenv("GPUCLUSTER_SYSFS_ROOT");
  EXPECT_EQ(SysfsBackend::default_root(), fs::path("/sys"));
  if (saved != nullptr) ::setenv("GPUCLUSTER_SYSFS_ROOT", restore.c_str(), 1);
}

TEST(SysfsBackend, ConcurrentSamplingAndRediscoveryAreSafe) {
  FakeSys sys;
  write_amdgpu(sys, 0);
  write_i915(sys, 1);
  SysfsBackend backend(sys.root());
  ASSERT_EQ(backend.discover("h").devices.size(), 2u);

  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&backend, &failures, t] {
      for (int i = 0; i < 100; ++i) {
        try {
          const Sample sample = backend.sample(t % 2 == 0 ? "rocm:0" : "xe:1");
          if (sample.memory_total_bytes <= 0) ++failures;
          (void)backend.available_fields(t % 2 == 0 ? "rocm:0" : "xe:1");
          if (i % 25 == 0 && backend.discover("h").devices.size() != 2) ++failures;
        } catch (const Error&) {
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace gpucluster
