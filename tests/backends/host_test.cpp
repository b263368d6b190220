#include "gpucluster/backends/host.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kMeminfo =
    "MemTotal:       16318480 kB\n"
    "MemFree:         1203344 kB\n"
    "MemAvailable:   10240000 kB\n"
    "Buffers:          512000 kB\n"
    "Cached:          8000000 kB\n"
    "HugePages_Total:       0\n";

constexpr const char* kIntelCpuinfo =
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n"
    "cpu MHz\t\t: 2000.000\n\n"
    "processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n"
    "cpu MHz\t\t: 2400.000\n\n"
    "processor\t: 2\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n"
    "cpu MHz\t\t: 2600.000\n\n"
    "processor\t: 3\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n"
    "cpu MHz\t\t: 3000.000\n\n";

// A throwaway /proc + /sys tree under the temp directory, removed when the test ends.
class FakeTree {
 public:
  FakeTree() {
    static std::atomic<int> counter{0};
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::temp_directory_path() /
            fmt::format("gpucluster-host-{}-{}-{}", ::getpid(), test != nullptr ? test->name() : "tree", counter++);
    fs::remove_all(root_);
    fs::create_directories(root_ / "proc");
    fs::create_directories(root_ / "sys");
  }
  ~FakeTree() {
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }
  FakeTree(const FakeTree&) = delete;
  FakeTree& operator=(const FakeTree&) = delete;

  void write(const std::string& relative, const std::string& content) const {
    const fs::path path = root_ / relative;
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
  }
  void remove(const std::string& relative) const { fs::remove(root_ / relative); }
  HostBackendPaths paths() const { return HostBackendPaths{root_ / "proc", root_ / "sys"}; }

 private:
  fs::path root_;
};

// A tree with memory only: enough for discover() and sample() to succeed.
void write_minimal(const FakeTree& tree) {
  tree.write("proc/meminfo", kMeminfo);
  tree.write("proc/cpuinfo", kIntelCpuinfo);
}

TEST(HostBackend, DiscoverDescribesTheCpuFromProcAndSys) {
  FakeTree tree;
  write_minimal(tree);
  tree.write("sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "3200000\n");
  HostBackend backend(tree.paths());

  const Discovery discovery = backend.discover("node-7");
  ASSERT_EQ(discovery.devices.size(), 1u);
  EXPECT_TRUE(discovery.note.empty());
  const DeviceInfo& info = discovery.devices.front();
  EXPECT_EQ(info.key, (DeviceKey{"node-7", "cpu:0"}));
  EXPECT_EQ(info.kind, DeviceKind::cpu);
  EXPECT_EQ(info.backend, "host");
  EXPECT_EQ(info.vendor, "intel");
  EXPECT_EQ(info.name, "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz");
  EXPECT_EQ(info.compute_units, 4u);
  EXPECT_EQ(info.memory_total_bytes, 16318480ull * 1024);
  ASSERT_TRUE(info.max_clock_mhz.has_value());
  EXPECT_DOUBLE_EQ(*info.max_clock_mhz, 3200.0);
}

TEST(HostBackend, AmdVendorIdMapsToAmdAndMissingMaxFreqIsUnknown) {
  FakeTree tree;
  tree.write("proc/meminfo", kMeminfo);
  tree.write("proc/cpuinfo",
             "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n");
  HostBackend backend(tree.paths());

  const DeviceInfo info = backend.discover("h").devices.at(0);
  EXPECT_EQ(info.vendor, "amd");
  EXPECT_EQ(info.name, "AMD EPYC 9654 96-Core Processor");
  EXPECT_EQ(info.compute_units, 1u);
  EXPECT_FALSE(info.max_clock_mhz.has_value());
}

TEST(HostBackend, DiscoverFindsNothingWithoutMeminfo) {
  FakeTree tree;
  tree.write("proc/cpuinfo", kIntelCpuinfo);
  HostBackend backend(tree.paths());

  const Discovery discovery = backend.discover("h");
  EXPECT_TRUE(discovery.devices.empty());
  EXPECT_TRUE(discovery.unavailable) << "no /proc/meminfo: the source cannot be used, not \"no CPU\"";
  EXPECT_NE(discovery.note.find("meminfo"), std::string::npos) << discovery.note;
  EXPECT_THROW(backend.sample(HostBackend::kLocalId), Error);
}

TEST(HostBackend, MemoryUsedIsTotalMinusAvailable) {
  FakeTree tree;
  write_minimal(tree);
  HostBackend backend(tree.paths());

  const Sample sample = backend.sample(HostBackend::kLocalId);
  EXPECT_EQ(sample.memory_total_bytes, 16318480ll * 1024);
  EXPECT_EQ(sample.memory_used_bytes, (16318480ll - 10240000ll) * 1024);
}

TEST(HostBackend, MemoryWithoutMemAvailableUsesFreePlusBuffersPlusCached) {
  FakeTree tree;
  tree.write("proc/meminfo", "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n");
  HostBackend backend(tree.paths());

  const Sample sample = backend.sample(HostBackend::kLocalId);
  EXPECT_EQ(sample.memory_total_bytes, 1000 * 1024);
  EXPECT_EQ(sample.memory_used_bytes, (1000 - 400) * 1024);
}

TEST(HostBackend, MalformedMeminfoIsAnErrorNotAFakeReading) {
  for (const std::string meminfo : {"", "MemTotal: lots kB\nMemAvailable: 1 kB\n",
                                    "MemTotal: 100 kB\nMemAvailable: 200 kB\n",  // more available than exists
                                    "MemTotal: 99999999999999999999999 kB\nMemAvailable: 1 kB\n",
                                    "MemTotal: 18014398509481984 kB\nMemAvailable: 1 kB\n"}) {  // 2^54 kB overflows
    FakeTree tree;
    tree.write("proc/meminfo", meminfo);
    HostBackend backend(tree.paths());
    EXPECT_THROW(backend.sample(HostBackend::kLocalId), Error) << meminfo;
    EXPECT_TRUE(backend.discover("h").devices.empty()) << meminfo;
  }
}

TEST(HostBackend, UtilizationComesFromStatDeltasSinceDiscover) {
  FakeTree tree;
  write_minimal(tree);
  // user nice system idle iowait irq softirq steal guest guest_nice
  tree.write("proc/stat", "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n");
  HostBackend backend(tree.paths());
  backend.discover("h");

  // total 1000 → 1810 (guest 30 is already inside user, so not added); idle+iowait 850 → 1300.
  // busy 150 → 510: 360 busy ticks of 810 = 44.44 %.
  tree.write("proc/stat", "cpu  400 10 90 1200 100 5 5 0 30 0\n");
  const Sample first = backend.sample(HostBackend::kLocalId);
  ASSERT_TRUE(first.utilization_percent.has_value());
  EXPECT_NEAR(*first.utilization_percent, 100.0 * 360.0 / 810.0, 1e-3);

  // No tick elapsed: nothing to measure, and the baseline stays.
  const Sample unchanged = backend.sample(HostBackend::kLocalId);
  EXPECT_FALSE(unchanged.utilization_percent.has_value());

  // 1810 → 2010 total, 510 → 560 busy: 25 %.
  tree.write("proc/stat", "cpu  440 10 100 1350 100 5 5 0 0 0\n");
  const Sample next = backend.sample(HostBackend::kLocalId);
  ASSERT_TRUE(next.utilization_percent.has_value());
  EXPECT_NEAR(*next.utilization_percent, 25.0, 1e-3);
}

TEST(HostBackend, UtilizationIsUnavailableWithoutABaseline) {
  FakeTree tree;
  write_minimal(tree);
  tree.write("proc/stat", "cpu  100 0 50 800 50 0 0 0 0 0\n");
  HostBackend backend(tree.paths());

  EXPECT_FALSE(backend.sample(HostBackend::kLocalId).utilization_percent.has_value());
  tree.write("proc/stat", "cpu  200 0 50 850 50 0 0 0 0 0\n");  // 100 busy of 150
  const Sample second = backend.sample(HostBackend::kLocalId);
  ASSERT_TRUE(second.utilization_percent.has_value());
  EXPECT_NEAR(*second.utilization_percent, 100.0 * 100.0 / 150.0, 1e-3);
}

TEST(HostBackend, UtilizationIsUnavailableWhenCountersGoBackwards) {
  FakeTree tree;
  write_minimal(tree);
  tree.write("proc/stat", "cpu  500 0 50 800 50 0 0 0 0 0\n");
  HostBackend backend(tree.paths());
  backend.discover("h");

  tree.write("proc/stat", "cpu  100 0 50 800 50 0 0 0 0 0\n");
  EXPECT_FALSE(backend.sample(HostBackend::kLocalId).utilization_percent.has_value());
}

TEST(HostBackend, TemperaturePrefersThePackageSensorInMillidegrees) {
  FakeTree tree;
  write_minimal(tree);
  tree.write("sys/class/thermal/thermal_zone0/type", "acpitz\n");
  tree.write("sys/class/thermal/thermal_zone0/temp", "45000\n");
  tree.write("sys/class/thermal/thermal_zone1/type", "x86_pkg_temp\n");
  tree.write("sys/class/thermal/thermal_zone1/temp", "61500\n");
  HostBackend backend(tree.paths());

  const Sample sample = backend.sample(HostBackend::kLocalId);
  ASSERT_TRUE(sample.temperature_celsius.has_value());
  EXPECT_FLOAT_EQ(*sample.temperature_celsius, 61.5f);
}

TEST(HostBackend, TemperatureFallsBackToTheFirstReadableZoneInNumericOrder) {
  FakeTree tree;
  write_minimal(tree);
  tree.write("sys/class/thermal/thermal_zone0/type", "acpitz\n");  // no temp file: unreadable
  tree.write("sys/class/thermal/thermal_zone1/type", "broken\n");
  tree.write("sys/class/thermal/thermal_zone1/temp", "n/a\n");
  tree.write("sys/class/thermal/thermal_zone10/type", "later\n");
  tree.write("sys/class/thermal/thermal_zone10/temp", "70000\n");
  tree.write("sys/class/thermal/thermal_zone2/type", "iwlwifi_1\n");
  tree.write("sys/class/thermal/thermal_zone2/temp", "-5500\n");
  HostBackend backend(tree.paths());

  const Sample sample = backend.sample(HostBackend::kLocalId);
  ASSERT_TRUE(sample.temperature_celsius.has_value());
  EXPECT_FLOAT_EQ(*sample.temperature_celsius, -5.5f);
}

TEST(HostBackend, TemperatureFallsBackToACpuHwmon) {
  FakeTree tree;
  write_minimal(tree);
  tree.write("sys/class/hwmon/hwmon0/name", "nvme\n");  // a drive, not the CPU
  tree.write("sys/class/hwmon/hwmon0/temp1_input", "40000\n");
  tree.write("sys/class/hwmon/hwmon1/name", "k10temp\n");
  tree.write("sys/class/hwmon/hwmon1/temp1_input", "55250\n");
  HostBackend backend(tree.paths());

  const Sample sample = backend.sample(HostBackend::kLocalId);
  ASSERT_TRUE(sample.temperature_celsius.has_value());
  EXPECT_FLOAT_EQ(*sample.temperature_celsius, 55.25f);
}

// Power over an interval the test cannot fix exactly: bound it by timing the calls themselves.
TEST(HostBackend, PowerComesFromRaplEnergyDeltas) {
  FakeTree tree;
  write_minimal(tree);
  const std::string rapl = "sys/class/powercap/intel-rapl:0/";
  tree.write(rapl + "energy_uj", "1000000\n");
  HostBackend backend(tree.paths());

  const auto first_start = std::chrono::steady_clock::now();
  const Sample first = backend.sample(HostBackend::kLocalId);
  const auto first_end = std::chrono::steady_clock::now();
  EXPECT_FALSE(first.power_watts.has_value()) << "one reading is not an interval";
  EXPECT_TRUE(backend.available_fields(HostBackend::kLocalId).has(Quantity::power_watts));

  std::this_thread::sleep_for(100ms);
  tree.write(rapl + "energy_uj", "6000000\n");  // 5 J later
  const auto second_start = std::chrono::steady_clock::now();
  const Sample second = backend.sample(HostBackend::kLocalId);
  const auto second_end = std::chrono::steady_clock::now();

  ASSERT_TRUE(second.power_watts.has_value());
  const double longest_s = std::chrono::duration<double>(second_end - first_start).count();
  const double shortest_s = std::chrono::duration<double>(second_start - first_end).count();
  EXPECT_GE(*second.power_watts, 5.0 / longest_s * 0.999);
  EXPECT_LE(*second.power_watts, 5.0 / shortest_s * 1.001);
}

TEST(HostBackend, PowerHandlesTheEnergyCounterWrapping) {
  FakeTree tree;
  write_minimal(tree);
  const std::string rapl = "sys/class/powercap/intel-rapl:0/";
  tree.write(rapl + "max_energy_range_uj", "262143328850\n");
  tree.write(rapl + "energy_uj", "262143000000\n");
  HostBackend backend(tree.paths());
  const auto start = std::chrono::steady_clock::now();
  backend.discover("h");

  std::this_thread::sleep_for(20ms);
  tree.write(rapl + "energy_uj", "1000000\n");  // wrapped: 328850 µJ to the top, then 1000000 µJ
  const Sample sample = backend.sample(HostBackend::kLocalId);
  const double longest_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(sample.power_watts.has_value());
  // 1.32885 J over at least 20 ms and at most the time the test took.
  EXPECT_GE(*sample.power_watts, 1.32885 / longest_s * 0.999);
  EXPECT_LE(*sample.power_watts, 1.32885 / 0.02 * 1.001);
}

TEST(HostBackend, PowerIsUnavailableWhenTheCounterGoesBackWithoutARange) {
  FakeTree tree;
  write_minimal(tree);
  const std::string rapl = "sys/class/powercap/intel-rapl:0/";
  tree.write(rapl + "energy_uj", "5000000\n");
  HostBackend backend(tree.paths());
  backend.discover("h");

  tree.write(rapl + "energy_uj", "1000\n");
  EXPECT_FALSE(backend.sample(HostBackend::kLocalId).power_watts.has_value());
}

// energy_joules is RAPL's counter as a running total: it keeps growing across
// the counter's wrap at max_energy_range_uj, is unavailable for a failed read
// only, and starts again from the reading after a reset (back with no range).
TEST(HostBackend, EnergyIsRaplsCounterAsATotalThatKeepsGrowingAcrossWraps) {
  FakeTree tree;
  write_minimal(tree);
  const std::string rapl = "sys/class/powercap/intel-rapl:0/";
  tree.write(rapl + "max_energy_range_uj", "262143328850\n");
  tree.write(rapl + "energy_uj", "262000000000\n");
  HostBackend backend(tree.paths());
  ASSERT_EQ(backend.discover("h").devices.size(), 1u);
  EXPECT_TRUE(backend.available_fields(HostBackend::kLocalId).has(Quantity::energy_joules));
  EXPECT_FALSE(backend.available_fields(HostBackend::kLocalId).has(Quantity::fan_speed_percent));

  EXPECT_DOUBLE_EQ(backend.sample(HostBackend::kLocalId).energy_joules.value(), 262'000.0);  // µJ → J
  tree.write(rapl + "energy_uj", "262100000000\n");
  EXPECT_DOUBLE_EQ(backend.sample(HostBackend::kLocalId).energy_joules.value(), 262'100.0);
  tree.write(rapl + "energy_uj", "5000000\n");  // wrapped: 43.32885 J to the top, then 5 J
  EXPECT_DOUBLE_EQ(backend.sample(HostBackend::kLocalId).energy_joules.value(), 262'148.32885);
  tree.write(rapl + "energy_uj", "7000000\n");
  EXPECT_DOUBLE_EQ(backend.sample(HostBackend::kLocalId).energy_joules.value(), 262'150.32885);

  tree.remove(rapl + "energy_uj");  // one failed read: unavailable, never 0
  Sample sample = backend.sample(HostBackend::kLocalId);
  EXPECT_FALSE(sample.energy_joules.has_value());
  EXPECT_FALSE(backend.available_fields(HostBackend::kLocalId).has(Quantity::energy_joules));
  tree.write(rapl + "energy_uj", "9000000\n");  // the total resumes from the last good reading
  EXPECT_DOUBLE_EQ(backend.sample(HostBackend::kLocalId).energy_joules.value(), 262'152.32885);
  EXPECT_TRUE(backend.available_fields(HostBackend::kLocalId).has(Quantity::energy_joules));

  tree.remove(rapl + "max_energy_range_uj");
  tree.write(rapl + "energy_uj", "1000000\n");  // back, with no range known: a reset
  EXPECT_DOUBLE_EQ(backend.sample(HostBackend::kLocalId).energy_joules.value(), 1.0);

  // Discovering again does not restart the total.
  tree.write(rapl + "energy_uj", "3000000\n");
  backend.discover("h");
  EXPECT_DOUBLE_EQ(backend.sample(HostBackend::kLocalId).energy_joules.value(), 3.0);
  sample = backend.sample(HostBackend::kLocalId);
  EXPECT_FALSE(sample.fan_speed_percent.has_value());
}

TEST(HostBackend, ClockIsTheMeanOfScalingCurFreq) {
  FakeTree tree;
  write_minimal(tree);
  tree.write("sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "2000000\n");
  tree.write("sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq", "3000000\n");
  tree.write("sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq", "9999999\n");  // not a cpuN entry
  HostBackend backend(tree.paths());

  const Sample sample = backend.sample(HostBackend::kLocalId);
  ASSERT_TRUE(sample.clock_mhz.has_value());
  EXPECT_FLOAT_EQ(*sample.clock_mhz, 2500.0f);
}

TEST(HostBackend, ClockFallsBackToCpuinfoMhz) {
  FakeTree tree;
  write_minimal(tree);  // cpu MHz 2000, 2400, 2600, 3000
  HostBackend backend(tree.paths());

  const Sample sample = backend.sample(HostBackend::kLocalId);
  ASSERT_TRUE(sample.clock_mhz.has_value());
  EXPECT_FLOAT_EQ(*sample.clock_mhz, 2500.0f);
}

TEST(HostBackend, MissingOptionalSourcesAreUnavailableNotZero) {
  FakeTree tree;
  tree.write("proc/meminfo", kMeminfo);  // no stat, cpuinfo, thermal, RAPL or cpufreq
  HostBackend backend(tree.paths());
  ASSERT_EQ(backend.discover("h").devices.size(), 1u);

  const Sample sample = backend.sample(HostBackend::kLocalId);
  EXPECT_FALSE(sample.utilization_percent.has_value());
  EXPECT_FALSE(sample.power_watts.has_value());
  EXPECT_FALSE(sample.temperature_celsius.has_value());
  EXPECT_FALSE(sample.clock_mhz.has_value());
  EXPECT_FALSE(sample.energy_joules.has_value());
  EXPECT_FALSE(sample.fan_speed_percent.has_value());
  const FieldAvailability fields = backend.available_fields(HostBackend::kLocalId);
  EXPECT_FALSE(fields.any());
  EXPECT_FALSE(fields.has(Quantity::utilization_percent));
  EXPECT_FALSE(fields.has(Quantity::power_watts));
  EXPECT_FALSE(fields.has(Quantity::temperature_celsius));
  EXPECT_FALSE(fields.has(Quantity::clock_mhz));
}

TEST(HostBackend, MalformedFilesAreUnavailableNotZero) {
  const std::string huge = "99999999999999999999999999\n";
  for (const std::string& bad :
       {std::string(""), std::string("abc\n"), std::string("12x\n"), huge, std::string(10000, '7')}) {
    FakeTree tree;
    tree.write("proc/meminfo", kMeminfo);
    tree.write("proc/stat", "cpu  " + bad);
    tree.write("sys/class/thermal/thermal_zone0/temp", bad);
    tree.write("sys/class/powercap/intel-rapl:0/energy_uj", bad);
    tree.write("sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", bad);
    tree.write("proc/cpuinfo", "processor : 0\ncpu MHz : " + bad);
    HostBackend backend(tree.paths());
    backend.discover("h");

    const Sample sample = backend.sample(HostBackend::kLocalId);
    EXPECT_FALSE(sample.utilization_percent.has_value()) << bad;
    EXPECT_FALSE(sample.power_watts.has_value()) << bad;
    EXPECT_FALSE(sample.temperature_celsius.has_value()) << bad;
    EXPECT_FALSE(sample.clock_mhz.has_value()) << bad;
    EXPECT_FALSE(sample.energy_joules.has_value()) << bad;
    const FieldAvailability fields = backend.available_fields(HostBackend::kLocalId);
    EXPECT_FALSE(fields.any()) << bad;
  }
}

TEST(HostBackend, ImplausibleTemperatureIsUnavailable) {
  FakeTree tree;
  write_minimal(tree);
  tree.write("sys/class/thermal/thermal_zone0/temp", "-274000\n");  // below absolute zero
  tree.write("sys/class/thermal/thermal_zone1/temp", "900000\n");   // 900 °C
  HostBackend backend(tree.paths());

  EXPECT_FALSE(backend.sample(HostBackend::kLocalId).temperature_celsius.has_value());
  // Both zones' readings were dropped, and counted.
  EXPECT_EQ(backend.implausible_readings()[static_cast<std::size_t>(Quantity::temperature_celsius)], 2U);
}

TEST(HostBackend, ImplausibleClockIsUnavailableAndCountedButNotAtDiscovery) {
  FakeTree tree;
  write_minimal(tree);
  tree.write("sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "200000000\n");  // 200 GHz
  tree.write("sys/class/thermal/thermal_zone0/temp", "50000\n");
  tree.write("proc/cpuinfo", "processor : 0\n");  // no "cpu MHz" to fall back on
  HostBackend backend(tree.paths());
  backend.discover("h");
  EXPECT_EQ(backend.implausible_readings(), ImplausibleCounts{});  // discovery's probes are not counted

  const Sample sample = backend.sample(HostBackend::kLocalId);
  EXPECT_FALSE(sample.clock_mhz.has_value());
  EXPECT_EQ(sample.temperature_celsius, 50.0F);  // the rest of the sample stands
  ImplausibleCounts expected{};
  expected[static_cast<std::size_t>(Quantity::clock_mhz)] = 1;
  EXPECT_EQ(backend.implausible_readings(), expected);
}

TEST(HostBackend, AvailableFieldsFollowTheLastReading) {
  FakeTree tree;
  write_minimal(tree);
  tree.write("proc/stat", "cpu  100 0 50 800 50 0 0 0 0 0\n");
  tree.write("sys/class/thermal/thermal_zone0/temp", "50000\n");
  HostBackend backend(tree.paths());
  backend.discover("h");

  FieldAvailability fields = backend.available_fields(HostBackend::kLocalId);
  EXPECT_TRUE(fields.has(Quantity::utilization_percent));
  EXPECT_TRUE(fields.has(Quantity::temperature_celsius));
  EXPECT_TRUE(fields.has(Quantity::clock_mhz));  // cpuinfo "cpu MHz"
  EXPECT_FALSE(fields.has(Quantity::power_watts));

  tree.remove("sys/class/thermal/thermal_zone0/temp");
  backend.sample(HostBackend::kLocalId);
  fields = backend.available_fields(HostBackend::kLocalId);
  EXPECT_FALSE(fields.has(Quantity::temperature_celsius));
  EXPECT_TRUE(fields.has(Quantity::utilization_percent));
}

TEST(HostBackend, UnknownLocalIdIsRejected) {
  FakeTree tree;
  write_minimal(tree);
  HostBackend backend(tree.paths());

  EXPECT_THROW(backend.sample("cpu:1"), UnknownDeviceError);
  EXPECT_THROW(backend.available_fields("cuda:0"), UnknownDeviceError);
}

TEST(HostBackend, ConcurrentSamplesAreSafe) {
  FakeTree tree;
  write_minimal(tree);
  tree.write("proc/stat", "cpu  100 0 50 800 50 0 0 0 0 0\n");
  HostBackend backend(tree.paths());
  backend.discover("h");

  std::atomic<int> samples{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        const Sample sample = backend.sample(HostBackend::kLocalId);
        if (sample.memory_total_bytes > 0) ++samples;
        (void)backend.available_fields(HostBackend::kLocalId);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(samples.load(), 200);
}

// The real /proc of this Linux machine.
TEST(HostBackend, ReadsThisMachine) {
  HostBackend backend;
  const Discovery discovery = backend.discover("this-host");
  ASSERT_EQ(discovery.devices.size(), 1u) << discovery.note;
  EXPECT_GT(discovery.devices.front().memory_total_bytes, 0u);
  EXPECT_EQ(discovery.devices.front().kind, DeviceKind::cpu);

  std::this_thread::sleep_for(20ms);
  const Sample sample = backend.sample(HostBackend::kLocalId);
  EXPECT_GT(sample.memory_total_bytes, 0);
  EXPECT_GE(sample.memory_used_bytes, 0);
  EXPECT_LE(sample.memory_used_bytes, sample.memory_total_bytes);
  if (sample.utilization_percent) {
    EXPECT_GE(*sample.utilization_percent, 0.0f);
    EXPECT_LE(*sample.utilization_percent, 100.0f);
  }
}

}  // namespace
}  // namespace gpucluster
