#include "gpucluster/export/exposition.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <locale>
#include <map>
#include <set>
#include <sstream>
#include <string_view>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace gpucluster::agent {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

const Timestamp kNow{seconds{1'700'000'000}};
constexpr std::int64_t kGiB = 1LL << 30;

// family → type, for every family the exposition must carry.
const std::map<std::string, std::string> kFamilies = {
    {"gpucluster_memory_used_bytes", "gauge"},
    {"gpucluster_memory_total_bytes", "gauge"},
    {"gpucluster_utilization_ratio", "gauge"},
    {"gpucluster_power_watts", "gauge"},
    {"gpucluster_temperature_celsius", "gauge"},
    {"gpucluster_clock_hertz", "gauge"},
    {"gpucluster_fan_speed_ratio", "gauge"},
    {"gpucluster_energy_joules_total", "counter"},
    {"gpucluster_device_up", "gauge"},
    {"gpucluster_device_score", "gauge"},
    {"gpucluster_last_sample_timestamp_seconds", "gauge"},
    {"gpucluster_sample_duration_seconds", "histogram"},
    {"gpucluster_rejected_samples_total", "counter"},
    {"gpucluster_duplicate_samples_total", "counter"},
    {"gpucluster_backend_errors_total", "counter"},
    {"gpucluster_backend_implausible_readings_total", "counter"},
    {"gpucluster_http_requests_total", "counter"},
    {"gpucluster_http_request_duration_seconds", "histogram"},
    {"gpucluster_http_accept_errors_total", "counter"},
};

struct DeviceSpec {
  std::string host = "node-1";
  std::string id = "cuda:0";
  std::string name = "NVIDIA H100 80GB HBM3";
  std::optional<std::string> uuid;
  std::uint64_t info_total = 80 * static_cast<std::uint64_t>(kGiB);
  bool available = true;
  bool has_sample = true;
  std::int64_t used = 10 * kGiB;
  std::int64_t total = 80 * kGiB;
  std::optional<float> util = 50.0F, power = 300.0F, temp = 60.0F, clock = 1980.0F;
};

DeviceState make_device(const DeviceSpec& spec) {
  auto info = std::make_shared<DeviceInfo>();
  info->key = {spec.host, spec.id};
  info->name = spec.name;
  info->vendor = "nvidia";
  info->kind = DeviceKind::cuda;
  info->uuid = spec.uuid;
  info->memory_total_bytes = spec.info_total;
  DeviceState state{std::move(info), spec.available, spec.available ? "" : "backend timed out", std::nullopt};
  if (spec.has_sample) {
    Sample s;
    s.timestamp = kNow;
    s.memory_used_bytes = spec.used;
    s.memory_total_bytes = spec.total;
    s.utilization_percent = spec.util;
    s.power_watts = spec.power;
    s.temperature_celsius = spec.temp;
    s.clock_mhz = spec.clock;
    state.latest = s;
  }
  return state;
}

ExpositionSnapshot snapshot_of(std::vector<DeviceState> devices) {
  ExpositionSnapshot snapshot;
  snapshot.devices = std::move(devices);
  snapshot.ranked = rank_devices(snapshot.devices, ScoringConfig{}, kNow);
  return snapshot;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Sample lines (not comments) whose metric name is exactly `name`.
std::vector<std::string> series(const std::string& text, std::string_view name) {
  std::vector<std::string> found;
  for (const std::string& line : lines_of(text)) {
    if (line.starts_with('#')) continue;
    const std::size_t end = line.find_first_of("{ ");
    if (line.substr(0, end) == name) found.push_back(line);
  }
  return found;
}

// The value of the one series of `name` whose line contains `selector`; nullopt if none.
std::optional<std::string> value_of(const std::string& text, std::string_view name, std::string_view selector) {
  std::optional<std::string> value;
  for (const std::string& line : series(text, name)) {
    if (line.find(selector) == std::string::npos) continue;
    EXPECT_FALSE(value) << "two series of " << name << " match " << selector;
    value = line.substr(line.rfind(' ') + 1);
  }
  return value;
}

// The family a sample line belongs to (histogram suffixes stripped).
std::string family_of(const std::string& sample_name) {
  for (std::string_view suffix : {"_bucket", "_sum", "_count"}) {
    if (sample_name.ends_with(suffix)) {
      const std::string base = sample_name.substr(0, sample_name.size() - suffix.size());
      if (kFamilies.contains(base) && kFamilies.at(base) == "histogram") return base;
    }
  }
  return sample_name;
}

// An 8-device snapshot as a busy node reports it: mixed availability, fields
// missing, a device without a sample, hostile text, agent counters.
ExpositionSnapshot realistic_snapshot() {
  std::vector<DeviceState> devices;
  for (int i = 0; i < 8; ++i) {
    DeviceSpec spec;
    spec.id = fmt::format("cuda:{}", i);
    spec.uuid = fmt::format("GPU-{:08x}-0000-0000-0000-000000000000", 0xabc00 + i);
    spec.used = (static_cast<std::int64_t>(i) * 9 + 1) * kGiB + i * 12345;
    spec.util = static_cast<float>(i) * 12.5F + 0.3F;
    spec.temp = 35.0F + static_cast<float>(i) * 7.1F;
    spec.power = 95.5F + static_cast<float>(i) * 40.25F;
    spec.clock = 1410.0F + static_cast<float>(i) * 75.5F;
    devices.push_back(make_device(spec));
  }
  devices[1].latest->power_watts.reset();  // no power reading
  devices[2].latest->utilization_percent.reset();
  devices[2].latest->clock_mhz.reset();
  devices[3].available = false;  // stale reading behind an unavailable backend
  devices[3].unavailable_reason = "nvml: call timed out after 5 s";
  devices[4].latest.reset();  // registered, not sampled yet
  auto info5 = std::make_shared<DeviceInfo>(*devices[5].info);
  info5->uuid.reset();
  info5->name = "Weird \"GPU\" \\ model\nline two \xff";
  devices[5].info = info5;
  auto info6 = std::make_shared<DeviceInfo>(*devices[6].info);
  info6->key.host = "node-2";
  devices[6].info = info6;
  devices[7].latest->temperature_celsius.reset();

  ExpositionSnapshot snapshot = snapshot_of(std::move(devices));
  snapshot.rejected_samples[static_cast<std::size_t>(RejectReason::out_of_range)] = 3;
  snapshot.rejected_samples[static_cast<std::size_t>(RejectReason::unknown_device)] = 1;
  snapshot.backend_errors = 7;
  snapshot.implausible_readings = {{"nvml", {}}, {"sysfs", {}}};
  snapshot.implausible_readings[0].counts[static_cast<std::size_t>(Quantity::fan_speed_percent)] = 4;
  DurationHistogram sample_durations;
  for (int i = 0; i < 100; ++i) sample_durations.observe(std::chrono::microseconds{50 + i * 37});
  sample_durations.observe(seconds{20});  // past the last bound
  snapshot.sample_durations = sample_durations.snapshot();
  DurationHistogram http_durations;
  for (int i = 0; i < 40; ++i) http_durations.observe(std::chrono::microseconds{200 + i * 11});
  snapshot.http_request_durations = http_durations.snapshot();
  snapshot.http_requests = {{"/metrics", 200, 30}, {"/v1/devices", 200, 8}, {"/v1/devices/{id}", 404, 2}};
  snapshot.http_accept_errors = 12;
  return snapshot;
}

// Placed before the other cases on purpose (cases added at the end merge apart).
TEST(Exposition, ImplausibleReadingsPerBackendAndOptionalQuantityEvenAtZero) {
  constexpr std::string_view kFamily = "gpucluster_backend_implausible_readings_total";
  ExpositionSnapshot snapshot;
  snapshot.implausible_readings = {{"nvml", {}}, {"rocm", {}}, {"nvml", {}}};
  snapshot.implausible_readings[0].counts[static_cast<std::size_t>(Quantity::temperature_celsius)] = 3;
  snapshot.implausible_readings[1].counts[static_cast<std::size_t>(Quantity::energy_joules)] = 1;
  snapshot.implausible_readings[2].counts[static_cast<std::size_t>(Quantity::temperature_celsius)] = 2;
  const std::string text = render_exposition(snapshot);
  EXPECT_NE(text.find(fmt::format("# TYPE {} counter\n", kFamily)), std::string::npos) << text;

  // Every optional quantity a backend reads, zeros included; memory (required) is never dropped.
  EXPECT_EQ(series(text, kFamily).size(), 2U * 6U) << text;
  EXPECT_EQ(value_of(text, kFamily, "{backend=\"nvml\",quantity=\"temperature_celsius\"}"), "5");  // one series
  EXPECT_EQ(value_of(text, kFamily, "{backend=\"nvml\",quantity=\"power_watts\"}"), "0");
  EXPECT_EQ(value_of(text, kFamily, "{backend=\"rocm\",quantity=\"energy_joules\"}"), "1");
  EXPECT_EQ(value_of(text, kFamily, "{backend=\"rocm\",quantity=\"utilization_percent\"}"), "0");
  EXPECT_EQ(value_of(text, kFamily, "quantity=\"memory_used_bytes\""), std::nullopt);

  // No backend: the family is there (HELP, TYPE), with no series.
  const std::string empty = render_exposition(ExpositionSnapshot{});
  EXPECT_NE(empty.find(fmt::format("# TYPE {} counter\n", kFamily)), std::string::npos);
  EXPECT_TRUE(series(empty, kFamily).empty());
}

TEST(Exposition, EveryFamilyHasHelpAndTypeOnceAndItsSamplesAreContiguous) {
  for (const ExpositionSnapshot& snapshot : {realistic_snapshot(), ExpositionSnapshot{}}) {
    const std::string text = render_exposition(snapshot);
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    std::map<std::string, int> help, type;
    std::set<std::string> finished;
    std::string current;
    for (const std::string& line : lines_of(text)) {
      ASSERT_FALSE(line.empty()) << "blank line in\n" << text;
      if (line.starts_with("# HELP ")) {
        const std::string name = line.substr(7, line.find(' ', 7) - 7);
        ++help[name];
        EXPECT_GT(line.size(), 8 + name.size()) << "empty HELP text: " << line;
        continue;
      }
      if (line.starts_with("# TYPE ")) {
        std::istringstream in(line.substr(7));
        std::string name, kind;
        in >> name >> kind;
        ++type[name];
        ASSERT_TRUE(kFamilies.contains(name)) << "unexpected family " << name;
        EXPECT_EQ(kind, kFamilies.at(name)) << name;
        EXPECT_EQ(help[name], 1) << "HELP must precede TYPE for " << name;
        if (!current.empty()) finished.insert(current);
        EXPECT_FALSE(finished.contains(name)) << name << " appears twice";
        current = name;
        continue;
      }
      ASSERT_FALSE(line.starts_with('#')) << line;
      const std::string family = family_of(line.substr(0, line.find_first_of("{ ")));
      EXPECT_EQ(family, current) << "sample outside its family's block: " << line;
      // The value parses as a float in the exposition format's spelling.
      const std::string value = line.substr(line.rfind(' ') + 1);
      if (value != "+Inf" && value != "-Inf" && value != "NaN") {
        double parsed = 0;
        const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), parsed);
        EXPECT_TRUE(ec == std::errc{} && end == value.data() + value.size()) << "bad value in: " << line;
      }
    }
    for (const auto& [name, kind] : kFamilies) {
      EXPECT_EQ(help[name], 1) << "HELP of " << name;
      EXPECT_EQ(type[name], 1) << "TYPE of " << name;
    }
  }
}

TEST(Exposition, DeviceGaugesInBaseUnits) {
  DeviceSpec spec;
  spec.util = 41.3F;
  spec.power = 120.5F;
  spec.temp = 41.3F;
  spec.clock = 1837.3F;
  spec.used = 12 * kGiB;
  const std::string text = render_exposition(snapshot_of({make_device(spec)}));
  const std::string labels = R"({host="node-1",device="cuda:0",model="NVIDIA H100 80GB HBM3"} )";
  EXPECT_EQ(value_of(text, "gpucluster_device_up", labels), "1");
  EXPECT_EQ(value_of(text, "gpucluster_memory_used_bytes", labels), "12884901888");
  EXPECT_EQ(value_of(text, "gpucluster_memory_total_bytes", labels), "85899345920");
  EXPECT_EQ(value_of(text, "gpucluster_utilization_ratio", labels), "0.413");  // not 0.41299999…
  EXPECT_EQ(value_of(text, "gpucluster_power_watts", labels), "120.5");
  EXPECT_EQ(value_of(text, "gpucluster_temperature_celsius", labels), "41.3");
  EXPECT_EQ(value_of(text, "gpucluster_clock_hertz", labels), "1837300000");  // MHz × 1e6, exactly
  const auto score = value_of(text, "gpucluster_device_score", labels);
  ASSERT_TRUE(score);
  const DeviceState again = make_device(spec);
  EXPECT_DOUBLE_EQ(std::stod(*score), score_sample(*again.info, *again.latest, ScoringConfig{}).score);
}

TEST(Exposition, LastSampleTimestampLetsAlertsSeeStaleDevices) {
  DeviceSpec fresh, unavailable, never;
  unavailable.id = "cuda:1";
  unavailable.available = false;  // its last reading is not exported as current, but its time is
  never.id = "cuda:2";
  never.has_sample = false;
  const std::string text =
      render_exposition(snapshot_of({make_device(fresh), make_device(unavailable), make_device(never)}));
  const std::string expected = fmt::format("{:.3f}", to_seconds(kNow));
  EXPECT_EQ(value_of(text, "gpucluster_last_sample_timestamp_seconds", R"(device="cuda:0")"), expected);
  EXPECT_EQ(value_of(text, "gpucluster_last_sample_timestamp_seconds", R"(device="cuda:1")"), expected);
  EXPECT_FALSE(value_of(text, "gpucluster_last_sample_timestamp_seconds", R"(device="cuda:2")"));
}

TEST(Exposition, ZeroIsPrintedWhenMeasuredAndFullUtilizationIsOne) {
  DeviceSpec spec;
  spec.util = 100.0F;
  spec.power = 0.0F;
  spec.clock = 0.0F;
  spec.used = 0;
  const std::string text = render_exposition(snapshot_of({make_device(spec)}));
  EXPECT_EQ(value_of(text, "gpucluster_utilization_ratio", "cuda:0"), "1");
  EXPECT_EQ(value_of(text, "gpucluster_power_watts", "cuda:0"), "0");
  EXPECT_EQ(value_of(text, "gpucluster_clock_hertz", "cuda:0"), "0");
  EXPECT_EQ(value_of(text, "gpucluster_memory_used_bytes", "cuda:0"), "0");
}

TEST(Exposition, UnavailableFieldsEmitNoSeries) {
  DeviceSpec spec;
  spec.util.reset();
  spec.power.reset();
  spec.temp.reset();
  spec.clock.reset();
  const std::string text = render_exposition(snapshot_of({make_device(spec)}));
  EXPECT_TRUE(series(text, "gpucluster_utilization_ratio").empty()) << text;
  EXPECT_TRUE(series(text, "gpucluster_power_watts").empty()) << text;
  EXPECT_TRUE(series(text, "gpucluster_temperature_celsius").empty()) << text;
  EXPECT_TRUE(series(text, "gpucluster_clock_hertz").empty()) << text;
  // Still HELP/TYPE for them, and memory (always in a sample) is there.
  EXPECT_NE(text.find("# TYPE gpucluster_power_watts gauge\n"), std::string::npos);
  EXPECT_EQ(series(text, "gpucluster_memory_used_bytes").size(), 1U);
  EXPECT_EQ(value_of(text, "gpucluster_device_up", "cuda:0"), "1");
}

TEST(Exposition, DeviceWithoutSampleEmitsOnlyUpAndStaticTotal) {
  DeviceSpec spec;
  spec.has_sample = false;
  spec.info_total = 24ULL << 30;
  const std::string text = render_exposition(snapshot_of({make_device(spec)}));
  EXPECT_EQ(value_of(text, "gpucluster_device_up", "cuda:0"), "1");
  EXPECT_EQ(value_of(text, "gpucluster_memory_total_bytes", "cuda:0"), "25769803776");
  for (const char* name : {"gpucluster_memory_used_bytes", "gpucluster_utilization_ratio", "gpucluster_power_watts",
                           "gpucluster_temperature_celsius", "gpucluster_clock_hertz", "gpucluster_device_score"}) {
    EXPECT_TRUE(series(text, name).empty()) << name << " in\n" << text;
  }
  // Static total unknown (0): no memory_total series either.
  spec.info_total = 0;
  const std::string unknown = render_exposition(snapshot_of({make_device(spec)}));
  EXPECT_TRUE(series(unknown, "gpucluster_memory_total_bytes").empty()) << unknown;
  EXPECT_EQ(value_of(unknown, "gpucluster_device_up", "cuda:0"), "1");
}

TEST(Exposition, UnavailableDeviceIsDownAndItsStaleReadingIsNotExported) {
  DeviceSpec up, down;
  down.id = "cuda:1";
  down.available = false;
  const std::string text = render_exposition(snapshot_of({make_device(up), make_device(down)}));
  EXPECT_EQ(value_of(text, "gpucluster_device_up", R"(device="cuda:0")"), "1");
  EXPECT_EQ(value_of(text, "gpucluster_device_up", R"(device="cuda:1")"), "0");
  for (const char* name : {"gpucluster_memory_used_bytes", "gpucluster_utilization_ratio", "gpucluster_power_watts",
                           "gpucluster_temperature_celsius", "gpucluster_clock_hertz", "gpucluster_device_score"}) {
    EXPECT_TRUE(value_of(text, name, R"(device="cuda:0")")) << name;
    EXPECT_FALSE(value_of(text, name, R"(device="cuda:1")")) << name << " exported for a down device";
  }
  // Its total memory is static information, still exported.
  EXPECT_EQ(value_of(text, "gpucluster_memory_total_bytes", R"(device="cuda:1")"), "85899345920");
}

TEST(Exposition, UuidLabelOnlyWhenKnown) {
  DeviceSpec known, unknown, empty;
  known.uuid = "GPU-12345678-abcd-ef01-2345-6789abcdef01";
  unknown.id = "cuda:1";
  empty.id = "cuda:2";
  empty.uuid = "";
  const std::string text =
      render_exposition(snapshot_of({make_device(known), make_device(unknown), make_device(empty)}));
  EXPECT_EQ(value_of(text, "gpucluster_device_up",
                     R"({host="node-1",device="cuda:0",uuid="GPU-12345678-abcd-ef01-2345-6789abcdef01",)"
                     R"(model="NVIDIA H100 80GB HBM3"} )"),
            "1");
  EXPECT_EQ(value_of(text, "gpucluster_device_up", R"({host="node-1",device="cuda:1",model="NVIDIA H100 80GB HBM3"} )"),
            "1");
  EXPECT_EQ(value_of(text, "gpucluster_device_up", R"({host="node-1",device="cuda:2",model="NVIDIA H100 80GB HBM3"} )"),
            "1");
  for (const std::string& line : lines_of(text)) {
    if (line.find("cuda:1") != std::string::npos || line.find("cuda:2") != std::string::npos) {
      EXPECT_EQ(line.find("uuid="), std::string::npos) << line;
    }
  }
}

TEST(Exposition, HostileModelNameIsEscaped) {
  DeviceSpec spec;
  spec.name = "Evil \"GPU\" C:\\path\\ x\nmetric_injected 1";
  const std::string text = render_exposition(snapshot_of({make_device(spec)}));
  EXPECT_NE(text.find(R"(model="Evil \"GPU\" C:\\path\\ x\nmetric_injected 1"})"), std::string::npos) << text;
  // The newline did not start a line of its own.
  for (const std::string& line : lines_of(text)) EXPECT_FALSE(line.starts_with("metric_injected")) << line;
}

TEST(Exposition, InvalidUtf8InLabelsIsReplacedAndValidUtf8Kept) {
  DeviceSpec spec;
  spec.name = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x9A\x80 bad\xFF \xC0\xAF \xED\xA0\x80 cut\xE2\x82";
  const std::string text = render_exposition(snapshot_of({make_device(spec)}));
  EXPECT_NE(text.find("model=\"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x9A\x80 bad\xEF\xBF\xBD "
                      "\xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD cut\xEF\xBF\xBD\xEF\xBF\xBD\""),
            std::string::npos)
      << text;
}

TEST(Exposition, ExactLargeByteValues) {
  DeviceSpec big;
  big.used = 123'456'789'012'345'678;  // needs all 18 digits: a double would round it
  big.total = std::numeric_limits<std::int64_t>::max();
  DeviceSpec unsampled;
  unsampled.id = "cuda:1";
  unsampled.has_sample = false;
  unsampled.info_total = std::numeric_limits<std::uint64_t>::max();
  const std::string text = render_exposition(snapshot_of({make_device(big), make_device(unsampled)}));
  EXPECT_EQ(value_of(text, "gpucluster_memory_used_bytes", "cuda:0"), "123456789012345678");
  EXPECT_EQ(value_of(text, "gpucluster_memory_total_bytes", "cuda:0"), "9223372036854775807");
  EXPECT_EQ(value_of(text, "gpucluster_memory_total_bytes", "cuda:1"), "18446744073709551615");
  EXPECT_EQ(text.find("e+"), std::string::npos) << "exponent notation in\n" << text;
}

TEST(Exposition, HistogramBucketsAreCumulativeAndInfEqualsCount) {
  DurationHistogram histogram;
  for (int i = 0; i < 1000; ++i) histogram.observe(std::chrono::microseconds{(i * 7919) % 3'000'000});
  histogram.observe(seconds{30});
  histogram.observe(seconds{30});
  ExpositionSnapshot snapshot;
  snapshot.sample_durations = histogram.snapshot();
  const std::string text = render_exposition(snapshot);
  const auto buckets = series(text, "gpucluster_sample_duration_seconds_bucket");
  ASSERT_EQ(buckets.size(), DurationHistogram::default_bounds().size() + 1);
  std::uint64_t previous = 0;
  double previous_le = -1;
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    const std::string& line = buckets[i];
    const std::size_t le_at = line.find("{le=\"");
    ASSERT_NE(le_at, std::string::npos) << line;
    const std::string le = line.substr(le_at + 5, line.find('"', le_at + 5) - le_at - 5);
    const std::uint64_t count = std::stoull(line.substr(line.rfind(' ') + 1));
    EXPECT_GE(count, previous) << "not cumulative at " << line;
    previous = count;
    if (i + 1 == buckets.size()) {
      EXPECT_EQ(le, "+Inf");
    } else {
      const double bound = std::stod(le);
      EXPECT_GT(bound, previous_le);
      EXPECT_DOUBLE_EQ(bound, DurationHistogram::default_bounds()[i]);
      previous_le = bound;
    }
  }
  EXPECT_EQ(value_of(text, "gpucluster_sample_duration_seconds_count", ""), "1002");
  EXPECT_EQ(previous, 1002U);  // le="+Inf" == _count
  const auto sum = value_of(text, "gpucluster_sample_duration_seconds_sum", "");
  ASSERT_TRUE(sum);
  EXPECT_NEAR(std::stod(*sum), histogram.snapshot().sum_seconds, 1e-9);
  // An empty (default) snapshot still is a valid histogram: +Inf, _sum, _count.
  EXPECT_EQ(value_of(text, "gpucluster_http_request_duration_seconds_bucket", "le=\"+Inf\""), "0");
  EXPECT_EQ(value_of(text, "gpucluster_http_request_duration_seconds_count", ""), "0");
  EXPECT_EQ(value_of(text, "gpucluster_http_request_duration_seconds_sum", ""), "0");
}

TEST(Exposition, EveryRejectReasonListedEvenAtZero) {
  ExpositionSnapshot snapshot;
  snapshot.rejected_samples[static_cast<std::size_t>(RejectReason::used_exceeds_total)] = 42;
  snapshot.backend_errors = 5;
  const std::string text = render_exposition(snapshot);
  EXPECT_EQ(series(text, "gpucluster_rejected_samples_total").size(), kRejectReasonCount);
  for (std::size_t i = 0; i < kRejectReasonCount; ++i) {
    const auto reason = static_cast<RejectReason>(i);
    EXPECT_EQ(value_of(text, "gpucluster_rejected_samples_total", fmt::format("{{reason=\"{}\"}}", to_string(reason))),
              reason == RejectReason::used_exceeds_total ? "42" : "0");
  }
  EXPECT_EQ(value_of(text, "gpucluster_backend_errors_total", ""), "5");
}

TEST(Exposition, AcceptErrorsAreACounterEvenAtZero) {
  EXPECT_EQ(value_of(render_exposition(ExpositionSnapshot{}), "gpucluster_http_accept_errors_total", ""), "0");
  ExpositionSnapshot snapshot;
  snapshot.http_accept_errors = 3;
  EXPECT_EQ(value_of(render_exposition(snapshot), "gpucluster_http_accept_errors_total", ""), "3");
}

TEST(Exposition, HttpRequestsByRouteAndCodeMergedAndEscaped) {
  ExpositionSnapshot snapshot;
  snapshot.http_requests = {
      {"/metrics", 200, 10}, {"/v1/devices/{id}", 404, 2}, {"/metrics", 200, 5}, {"/a\"b", 500, 1}};
  const std::string text = render_exposition(snapshot);
  EXPECT_EQ(series(text, "gpucluster_http_requests_total").size(), 3U) << text;
  EXPECT_EQ(value_of(text, "gpucluster_http_requests_total", R"({route="/metrics",code="200"})"), "15");
  EXPECT_EQ(value_of(text, "gpucluster_http_requests_total", R"({route="/v1/devices/{id}",code="404"})"), "2");
  EXPECT_EQ(value_of(text, "gpucluster_http_requests_total", R"({route="/a\"b",code="500"})"), "1");
}

TEST(Exposition, ScoreOnlyForDevicesWithABreakdownAndKnownLabels) {
  DeviceSpec sampled, unsampled;
  unsampled.id = "cuda:1";
  unsampled.has_sample = false;
  ExpositionSnapshot snapshot = snapshot_of({make_device(sampled), make_device(unsampled)});
  RankedDevice stranger;  // a ranked device not among `devices`: no labels to share, left out
  stranger.key = {"elsewhere", "cuda:9"};
  stranger.breakdown = ScoreBreakdown{};
  snapshot.ranked.push_back(stranger);
  const std::string text = render_exposition(snapshot);
  const auto scores = series(text, "gpucluster_device_score");
  ASSERT_EQ(scores.size(), 1U) << text;
  EXPECT_NE(scores[0].find(R"(device="cuda:0")"), std::string::npos);
}

TEST(Exposition, OutputDoesNotDependOnTheGlobalLocale) {
  struct CommaDecimal : std::numpunct<char> {
    char do_decimal_point() const override { return ','; }
    char do_thousands_sep() const override { return '.'; }
    std::string do_grouping() const override { return "\3"; }
  };
  const ExpositionSnapshot snapshot = realistic_snapshot();
  const std::string before = render_exposition(snapshot);
  const std::locale previous = std::locale::global(std::locale(std::locale::classic(), new CommaDecimal));
  const std::string after = render_exposition(snapshot);
  std::locale::global(previous);
  EXPECT_EQ(before, after);
}

// The real parser and linter: `promtool check metrics` on a realistic scrape.
class PromtoolCheck : public ::testing::Test {
 protected:
  static constexpr const char* kPromtool = "/usr/bin/promtool";

  void SetUp() override {
    if (!fs::exists(kPromtool)) {
      GTEST_SKIP() << kPromtool << " not found: install the Debian package `prometheus` to run this check";
    }
    static int counter = 0;
    dir_ = fs::temp_directory_path() / fmt::format("gpucluster-expo-{}-{}", ::getpid(), counter++);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ignored;
    if (!dir_.empty()) fs::remove_all(dir_, ignored);
  }

  // Runs promtool on `text`; returns its exit status and fills `output` (stdout and stderr).
  int check(const std::string& text, std::string& output) {
    const fs::path input = dir_ / "metrics.txt", log = dir_ / "promtool.log";
    std::ofstream(input, std::ios::binary) << text;
    const std::string command =
        fmt::format("{} check metrics < '{}' > '{}' 2>&1", kPromtool, input.string(), log.string());
    const int status = std::system(command.c_str());
    std::ifstream in(log, std::ios::binary);
    output.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  fs::path dir_;
};

TEST_F(PromtoolCheck, RealisticSnapshotPassesWithoutLintProblems) {
  const std::string text = render_exposition(realistic_snapshot());
  std::string output;
  EXPECT_EQ(check(text, output), 0) << output << "\n--- input ---\n" << text;
  EXPECT_EQ(output, "") << "promtool complained:\n" << output << "\n--- input ---\n" << text;
}

TEST_F(PromtoolCheck, EmptySnapshotPasses) {
  std::string output;
  EXPECT_EQ(check(render_exposition(ExpositionSnapshot{}), output), 0) << output;
  EXPECT_EQ(output, "") << output;
}

// The checker itself catches what it must (guards against a vacuous pass).
TEST_F(PromtoolCheck, CatchesABrokenExposition) {
  std::string output;
  EXPECT_NE(check("# TYPE broken_total counter\nbroken_total{a=\"x} 1\n", output), 0) << output;
  const int lint = check("# TYPE requests counter\nrequests 1\n", output);
  EXPECT_TRUE(lint != 0 || !output.empty()) << "no complaint about a counter without HELP and _total";
}

// Fan speed (a gauge, percent → ratio) and energy (a counter, in joules) are
// rows of the field table like the others: exported when measured, no series
// when unavailable (never 0), HELP and TYPE either way.
TEST(Exposition, FanSpeedIsAGaugeRatioAndEnergyACounterInJoules) {
  DeviceSpec with, without;
  without.id = "cuda:1";
  DeviceState measured = make_device(with);
  measured.latest->fan_speed_percent = 42.5F;
  measured.latest->energy_joules = 123456.0;
  const std::string text = render_exposition(snapshot_of({measured, make_device(without)}));
  const std::string labels = R"({host="node-1",device="cuda:0",model="NVIDIA H100 80GB HBM3"} )";
  EXPECT_EQ(value_of(text, "gpucluster_fan_speed_ratio", labels), "0.425") << text;
  EXPECT_EQ(value_of(text, "gpucluster_energy_joules_total", labels), "123456") << text;
  EXPECT_NE(text.find("# TYPE gpucluster_fan_speed_ratio gauge\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE gpucluster_energy_joules_total counter\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# HELP gpucluster_fan_speed_ratio "), std::string::npos) << text;
  EXPECT_NE(text.find("# HELP gpucluster_energy_joules_total "), std::string::npos) << text;
  // The device without them: no series, not a 0 (its other gauges are there).
  EXPECT_EQ(series(text, "gpucluster_fan_speed_ratio").size(), 1U) << text;
  EXPECT_EQ(series(text, "gpucluster_energy_joules_total").size(), 1U) << text;
  EXPECT_FALSE(value_of(text, "gpucluster_fan_speed_ratio", R"(device="cuda:1")")) << text;
  EXPECT_FALSE(value_of(text, "gpucluster_energy_joules_total", R"(device="cuda:1")")) << text;
  EXPECT_EQ(value_of(text, "gpucluster_power_watts", R"(device="cuda:1")"), "300");
}

TEST(Exposition, FanAndEnergyOfADeviceWithoutThemHaveHeadersButNoSeries) {
  const std::string text = render_exposition(snapshot_of({make_device(DeviceSpec{})}));
  EXPECT_TRUE(series(text, "gpucluster_fan_speed_ratio").empty()) << text;
  EXPECT_TRUE(series(text, "gpucluster_energy_joules_total").empty()) << text;
  EXPECT_NE(text.find("# TYPE gpucluster_fan_speed_ratio gauge\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE gpucluster_energy_joules_total counter\n"), std::string::npos) << text;
}

TEST(Exposition, FanAndEnergyOfAnUnavailableDeviceAreNotExported) {
  DeviceSpec spec;
  spec.available = false;  // its last reading is stale
  DeviceState down = make_device(spec);
  down.latest->fan_speed_percent = 42.5F;
  down.latest->energy_joules = 123456.0;
  const std::string text = render_exposition(snapshot_of({down}));
  EXPECT_TRUE(series(text, "gpucluster_fan_speed_ratio").empty()) << text;
  EXPECT_TRUE(series(text, "gpucluster_energy_joules_total").empty()) << text;
}

TEST(Exposition, ZeroFanSpeedAndZeroEnergyArePrintedWhenMeasured) {
  DeviceState device = make_device(DeviceSpec{});
  device.latest->fan_speed_percent = 0.0F;
  device.latest->energy_joules = 0.0;
  const std::string text = render_exposition(snapshot_of({device}));
  EXPECT_EQ(value_of(text, "gpucluster_fan_speed_ratio", "cuda:0"), "0");
  EXPECT_EQ(value_of(text, "gpucluster_energy_joules_total", "cuda:0"), "0");
}

// promtool's linter on the two families with values (a counter must end in _total).
TEST_F(PromtoolCheck, FanSpeedAndEnergyPassWithoutLintProblems) {
  DeviceState device = make_device(DeviceSpec{});
  device.latest->fan_speed_percent = 42.5F;
  device.latest->energy_joules = 123456.0;
  const std::string text = render_exposition(snapshot_of({device}));
  ASSERT_EQ(series(text, "gpucluster_energy_joules_total").size(), 1U) << text;
  std::string output;
  EXPECT_EQ(check(text, output), 0) << output << "\n--- input ---\n" << text;
  EXPECT_EQ(output, "") << "promtool complained:\n" << output << "\n--- input ---\n" << text;
}

// The cluster families: a coordinator's nodes and an agent's links to its coordinators.
ExpositionSnapshot cluster_snapshot() {
  ExpositionSnapshot snapshot;
  snapshot.coordinator = true;
  snapshot.nodes = {
      NodeRow{"", "coord", "coord", "alive", std::nullopt, std::nullopt, 0, 2},
      NodeRow{"3f1c2a9b-0c1d-4e5f-8a9b-0c1d2e3f4a5b", "gpu-a", "gpu-a", "alive", 0.25, -3600.5, 42, 8},
      NodeRow{"9d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a", "gpu-b", "gpu-b~9d0e1f2a", "down", 11.5, 0.001, 7, 4}};
  snapshot.reports_accepted = 49;
  snapshot.reports_rejected = {{"stale_sequence", 2}, {"unknown_device", 1}};
  snapshot.push = {PushRow{"http://10.0.0.1:9420", true, 100, 3, 8, 12}};
  return snapshot;
}

TEST(Exposition, NodesAreUpUntilDownWithTheirAgeOffsetAndReports) {
  const std::string text = render_exposition(cluster_snapshot());
  const auto up = series(text, "gpucluster_node_up");
  ASSERT_EQ(up.size(), 3U) << text;
  EXPECT_NE(
      text.find("gpucluster_node_up{node=\"gpu-a\",node_id=\"3f1c2a9b-0c1d-4e5f-8a9b-0c1d2e3f4a5b\",host=\"gpu-a\","
                "state=\"alive\"} 1\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("host=\"gpu-b~9d0e1f2a\",state=\"down\"} 0\n"), std::string::npos) << text;
  // The coordinator itself has no report age or offset.
  EXPECT_EQ(series(text, "gpucluster_node_last_report_age_seconds").size(), 2U) << text;
  EXPECT_NE(text.find("gpucluster_node_clock_offset_seconds{node=\"gpu-a\""), std::string::npos);
  EXPECT_NE(text.find("} -3600.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("gpucluster_reports_rejected_total{reason=\"stale_sequence\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("gpucluster_reports_received_total 49\n"), std::string::npos);
  EXPECT_NE(text.find("gpucluster_push_dropped_samples_total{coordinator=\"http://10.0.0.1:9420\"} 12\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE gpucluster_push_backlog_samples gauge\n"), std::string::npos);
}

TEST(Exposition, NodeStateIsAnEnumAndNodesAreCountedByState) {
  ExpositionSnapshot snapshot = cluster_snapshot();
  snapshot.nodes.push_back(NodeRow{"", "seedbox", "seedbox", "suspect", 4.0, std::nullopt, 3, 1});
  const std::string text = render_exposition(snapshot);
  // Three series per node, 1 only for its current state.
  const auto state = series(text, "gpucluster_node_state");
  ASSERT_EQ(state.size(), 12U) << text;
  const std::string gpu_b =
      "gpucluster_node_state{node=\"gpu-b\",node_id=\"9d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a\","
      "host=\"gpu-b~9d0e1f2a\",state=";
  EXPECT_NE(text.find(gpu_b + "\"alive\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find(gpu_b + "\"suspect\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find(gpu_b + "\"down\"} 1\n"), std::string::npos) << text;
  const std::string seedbox = "gpucluster_node_state{node=\"seedbox\",node_id=\"\",host=\"seedbox\",state=";
  EXPECT_NE(text.find(seedbox + "\"alive\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find(seedbox + "\"suspect\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find(seedbox + "\"down\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE gpucluster_node_state gauge\n"), std::string::npos);
  // Every state is listed, at 0 too.
  EXPECT_NE(text.find("# TYPE gpucluster_nodes gauge\n"), std::string::npos);
  EXPECT_NE(text.find("\ngpucluster_nodes{state=\"alive\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\ngpucluster_nodes{state=\"suspect\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\ngpucluster_nodes{state=\"down\"} 1\n"), std::string::npos) << text;
  snapshot.nodes.resize(1);  // the coordinator alone
  const std::string alone = render_exposition(snapshot);
  EXPECT_NE(alone.find("\ngpucluster_nodes{state=\"down\"} 0\n"), std::string::npos) << alone;
}

TEST(Exposition, APlainAgentHasNoClusterFamilies) {
  const std::string text = render_exposition(ExpositionSnapshot{});
  EXPECT_EQ(text.find("gpucluster_node_"), std::string::npos);
  EXPECT_EQ(text.find("gpucluster_nodes"), std::string::npos);
  EXPECT_EQ(text.find("gpucluster_reports_"), std::string::npos);
  EXPECT_EQ(text.find("gpucluster_push_"), std::string::npos);
}

TEST_F(PromtoolCheck, ClusterFamiliesPassWithoutLintProblems) {
  const std::string text = render_exposition(cluster_snapshot());
  std::string output;
  EXPECT_EQ(check(text, output), 0) << output << "\n--- input ---\n" << text;
  EXPECT_EQ(output, "") << "promtool complained:\n" << output << "\n--- input ---\n" << text;
}

}  // namespace
}  // namespace gpucluster::agent
