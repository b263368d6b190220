#include "gpucluster/telemetry/store.hpp"

#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "gpucluster/model/errors.hpp"
#include "telemetry/ring_buffer.hpp"

namespace gpucluster {
namespace {

using std::chrono::seconds;

Timestamp at(std::int64_t s) {
  return Timestamp{seconds{s}};
}

DeviceInfo make_info(const std::string& host, const std::string& local_id, const std::string& name = "GPU") {
  DeviceInfo info;
  info.key = DeviceKey{host, local_id};
  info.name = name;
  info.kind = DeviceKind::cuda;
  info.memory_total_bytes = 10000;
  return info;
}

Sample make_sample(std::int64_t t, std::int64_t used = 1000, std::int64_t total = 10000) {
  Sample s;
  s.timestamp = at(t);
  s.memory_used_bytes = used;
  s.memory_total_bytes = total;
  s.utilization_percent = 50.0f;
  s.power_watts = 100.0f;
  s.temperature_celsius = 65.0f;
  s.clock_mhz = 2500.0f;
  return s;
}

std::vector<std::int64_t> seconds_of(const std::vector<Sample>& history) {
  std::vector<std::int64_t> out;
  for (const Sample& s : history) {
    out.push_back(std::chrono::duration_cast<seconds>(s.timestamp.time_since_epoch()).count());
  }
  return out;
}

const DeviceKey kA{"host-a", "cuda:0"};

// The review's verification of fix #1: max 10, record 20 -> exactly the last 10.
TEST(TelemetryStore, HistoryIsBoundedByCount) {
  TelemetryStore store(HistoryLimits{10, std::nullopt, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  for (int i = 0; i < 20; ++i) store.record(kA, make_sample(i));

  const std::vector<Sample> history = store.history(kA);
  ASSERT_EQ(history.size(), 10u);
  EXPECT_EQ(history.front().timestamp, at(10));
  EXPECT_EQ(history.back().timestamp, at(19));
  EXPECT_EQ(seconds_of(history), (std::vector<std::int64_t>{10, 11, 12, 13, 14, 15, 16, 17, 18, 19}));
  EXPECT_EQ(store.limits().max_samples, 10u);
}

TEST(TelemetryStore, HistoryStaysBoundedOverManyWraps) {
  TelemetryStore store(HistoryLimits{7, std::nullopt, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  for (int i = 0; i < 1000; ++i) {
    store.record(kA, make_sample(i));
    ASSERT_LE(store.history(kA).size(), 7u);
  }
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{993, 994, 995, 996, 997, 998, 999}));
}

TEST(TelemetryStore, HistoryReadsAreChronologicalAndKeepEveryField) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  Sample first = make_sample(1, 100);
  first.utilization_percent.reset();
  first.clock_mhz = 1234.5f;
  store.record(kA, first);
  store.record(kA, make_sample(2, 200));
  store.record(kA, make_sample(3, 300));

  const std::vector<Sample> history = store.history(kA);
  ASSERT_EQ(seconds_of(history), (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_EQ(history[0].memory_used_bytes, 100);
  EXPECT_EQ(history[2].memory_used_bytes, 300);
  EXPECT_FALSE(history[0].utilization_percent.has_value());
  ASSERT_TRUE(history[0].clock_mhz.has_value());
  EXPECT_FLOAT_EQ(*history[0].clock_mhz, 1234.5f);
  ASSERT_TRUE(history[1].utilization_percent.has_value());
  EXPECT_FLOAT_EQ(*history[1].utilization_percent, 50.0f);
}

TEST(TelemetryStore, HistoryLimitReturnsTheNewestInOrder) {
  TelemetryStore store(HistoryLimits{10, std::nullopt, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  for (int i = 0; i < 20; ++i) store.record(kA, make_sample(i));

  EXPECT_EQ(seconds_of(store.history(kA, 3)), (std::vector<std::int64_t>{17, 18, 19}));
  EXPECT_EQ(seconds_of(store.history(kA, 1)), (std::vector<std::int64_t>{19}));
  EXPECT_TRUE(store.history(kA, 0).empty());
  EXPECT_EQ(store.history(kA, 50).size(), 10u);
}

TEST(TelemetryStore, HistoryOfADeviceWithoutSamplesIsEmpty) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  EXPECT_TRUE(store.history(kA).empty());
  EXPECT_FALSE(store.latest(kA).has_value());
}

TEST(TelemetryStore, HistoryIsBoundedByAge) {
  TelemetryStore store(HistoryLimits{100, std::chrono::nanoseconds{seconds{5}}, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  for (int i = 0; i <= 20; ++i) store.record(kA, make_sample(i));
  // Newest is 20; samples older than 20 - 5 = 15 are dropped, 15 itself is kept.
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{15, 16, 17, 18, 19, 20}));

  // A long gap drops everything older, but the newest sample always stays.
  store.record(kA, make_sample(100));
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{100}));
}

TEST(TelemetryStore, AgeAndCountLimitsBothApply) {
  TelemetryStore store(HistoryLimits{3, std::chrono::nanoseconds{seconds{100}}, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  for (int i = 0; i < 10; ++i) store.record(kA, make_sample(i));
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{7, 8, 9}));
}

TEST(TelemetryStore, InvalidLimitsAreRejected) {
  EXPECT_THROW(TelemetryStore(HistoryLimits{0, std::nullopt, std::nullopt}), InputError);
  EXPECT_THROW(TelemetryStore(HistoryLimits{10, std::chrono::nanoseconds{0}, std::nullopt}), InputError);
  EXPECT_THROW(TelemetryStore(HistoryLimits{10, std::chrono::nanoseconds{-5}, std::nullopt}), InputError);
  try {
    TelemetryStore store(HistoryLimits{0, std::nullopt, std::nullopt});
    FAIL() << "max_samples = 0 must be rejected";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "history.max_samples");
  }
  EXPECT_NO_THROW(TelemetryStore(HistoryLimits{1, std::chrono::nanoseconds{1}, std::nullopt}));
}

TEST(TelemetryStore, LatestIsTheNewestSample) {
  TelemetryStore store(HistoryLimits{2, std::nullopt, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  store.record(kA, make_sample(1, 10));
  store.record(kA, make_sample(2, 20));
  store.record(kA, make_sample(3, 30));
  const std::optional<Sample> latest = store.latest(kA);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->timestamp, at(3));
  EXPECT_EQ(latest->memory_used_bytes, 30);
  const std::optional<DeviceState> state = store.state(kA);
  ASSERT_TRUE(state.has_value());
  ASSERT_TRUE(state->latest.has_value());
  EXPECT_EQ(state->latest->timestamp, at(3));
}

TEST(TelemetryStore, OutOfOrderSampleIsRejectedAndHistoryUnchanged) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  store.record(kA, make_sample(10));
  store.record(kA, make_sample(20));
  try {
    store.record(kA, make_sample(15, 4242));
    FAIL() << "an older sample must be rejected";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.reason(), RejectReason::out_of_order);
    EXPECT_EQ(e.field(), "timestamp");
    EXPECT_EQ(e.device(), "host-a/cuda:0");
    EXPECT_NE(std::string(e.what()).find("timestamp"), std::string::npos);
  }
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{10, 20}));
  EXPECT_EQ(store.latest(kA)->memory_used_bytes, 1000);
}

TEST(TelemetryStore, OlderSampleNeverOverwritesTheLatest) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  store.record(kA, make_sample(20, 2000));
  EXPECT_THROW(store.record(kA, make_sample(5, 500)), ValidationError);
  EXPECT_EQ(store.latest(kA)->timestamp, at(20));
  EXPECT_EQ(store.latest(kA)->memory_used_bytes, 2000);
}

// A retransmission (same device, timestamp and values) is acknowledged and not
// stored again; the same timestamp with other values is a conflict.
TEST(TelemetryStore, ExactDuplicateIsAcknowledgedAndNotStoredTwice) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  EXPECT_EQ(store.record(kA, make_sample(10, 100)), RecordOutcome::stored);
  EXPECT_EQ(store.record(kA, make_sample(10, 100)), RecordOutcome::duplicate);
  EXPECT_EQ(store.record(kA, make_sample(10, 100)), RecordOutcome::duplicate);
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{10}));
}

TEST(TelemetryStore, SameTimestampWithOtherValuesIsAConflict) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  store.record(kA, make_sample(10, 100));
  try {
    store.record(kA, make_sample(10, 200));
    FAIL() << "a second sample with the same timestamp must be a conflict";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.reason(), RejectReason::conflict);
    EXPECT_EQ(e.field(), "memory_used_bytes");
    EXPECT_EQ(e.value(), "200");
    EXPECT_NE(std::string(e.what()).find("memory_used_bytes = 100"), std::string::npos) << e.what();
  }
  Sample unavailable_gauge = make_sample(10, 100);
  unavailable_gauge.power_watts.reset();  // unavailable is not the held 100 W
  try {
    store.record(kA, unavailable_gauge);
    FAIL() << "an unavailable gauge differs from a reported one";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.reason(), RejectReason::conflict);
    EXPECT_EQ(e.field(), "power_watts");
    EXPECT_EQ(e.value(), "unavailable");
  }
  const std::vector<Sample> history = store.history(kA);
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].memory_used_bytes, 100);
}

// A retransmission of an older sample the device still holds is a duplicate
// too (not out of order); one it does not hold is out of order.
TEST(TelemetryStore, RetransmittedOlderSampleIsADuplicateWhileHeld) {
  TelemetryStore store(HistoryLimits{3, std::nullopt, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  for (int t : {10, 20, 30, 40}) store.record(kA, make_sample(t, t));  // holds 20, 30, 40
  EXPECT_EQ(store.record(kA, make_sample(30, 30)), RecordOutcome::duplicate);
  EXPECT_EQ(store.record(kA, make_sample(20, 20)), RecordOutcome::duplicate);
  try {
    store.record(kA, make_sample(30, 31));
    FAIL();
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.reason(), RejectReason::conflict);
  }
  for (int t : {10, 25}) {  // 10 has left the history; 25 was never there
    try {
      store.record(kA, make_sample(t, t));
      FAIL() << t;
    } catch (const ValidationError& e) {
      EXPECT_EQ(e.reason(), RejectReason::out_of_order);
    }
  }
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{20, 30, 40}));
}

// One sender stamping a sample in 2099 must not poison the device: the sample
// is refused (future_timestamp) and true samples go on being stored.
TEST(TelemetryStore, SampleFromTheFarFutureIsRejectedAndDoesNotPoisonTheDevice) {
  Timestamp now = at(1'800'000'000);
  ValidationLimits validation;
  validation.max_future_skew = seconds{60};
  TelemetryStore store(HistoryLimits{}, validation, [&now] { return now; });
  store.add_device(make_info("host-a", "cuda:0"));
  store.record(kA, make_sample(1'800'000'000));
  try {
    store.record(kA, make_sample(4'070'908'800));  // 2099-01-01
    FAIL() << "a sample from 2099 must be rejected";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.reason(), RejectReason::future_timestamp);
    EXPECT_EQ(e.field(), "timestamp");
    EXPECT_NE(std::string(e.what()).find("ahead of the receiver's clock"), std::string::npos) << e.what();
  }
  now = at(1'800'000'001);
  EXPECT_EQ(store.record(kA, make_sample(1'800'000'001)), RecordOutcome::stored);
  // Within the skew is accepted; just past it is not.
  EXPECT_EQ(store.record(kA, make_sample(1'800'000'061)), RecordOutcome::stored);
  EXPECT_THROW(store.record(kA, make_sample(1'800'000'062)), ValidationError);
  const auto batch =
      store.record_batch(kA, std::vector<Sample>{make_sample(1'800'000'061), make_sample(1'800'000'070)});
  EXPECT_EQ(batch.accepted, 1u);
  EXPECT_EQ(batch.duplicates, 1u);
  ASSERT_TRUE(batch.rejection);
  EXPECT_EQ(batch.rejection->reason(), RejectReason::future_timestamp);
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{1'800'000'000, 1'800'000'001, 1'800'000'061}));
}

TEST(TelemetryStore, TheSkewIsChecked) {
  ValidationLimits validation;
  validation.max_future_skew = std::chrono::nanoseconds{0};
  EXPECT_THROW(TelemetryStore(HistoryLimits{}, validation), InputError);
}

// With a budget, devices are registered while their full histories fit it.
TEST(TelemetryStore, DevicesBeyondTheHistoryMemoryBudgetAreRefused) {
  HistoryLimits limits{100, std::nullopt, std::nullopt};
  limits.max_total_bytes = 3 * 100 * sizeof(Sample);
  TelemetryStore store(limits);
  for (int i = 0; i < 3; ++i) store.add_device(make_info("host-a", "cuda:" + std::to_string(i)));
  EXPECT_NO_THROW(store.add_device(make_info("host-a", "cuda:1", "renamed")));  // an update takes no room
  try {
    store.add_device(make_info("host-a", "cuda:3"));
    FAIL() << "a fourth device does not fit";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "history");
    EXPECT_NE(e.rule().find("room for 3 devices"), std::string::npos) << e.rule();
  }
  EXPECT_EQ(store.device_count(), 3u);
  store.remove_device(DeviceKey{"host-a", "cuda:0"});  // frees its room
  EXPECT_NO_THROW(store.add_device(make_info("host-a", "cuda:3")));
  // One device's history larger than the budget: the store cannot be made.
  limits.max_total_bytes = 100 * sizeof(Sample) - 1;
  EXPECT_THROW(TelemetryStore{limits}, InputError);
}

// History memory follows the samples held: a device with few samples holds
// little, whatever the bound; a full history holds exactly the bound.
TEST(TelemetryStore, HistoryMemoryFollowsTheSamplesHeld) {
  TelemetryStore store(HistoryLimits{10'000, std::nullopt, std::nullopt});
  const auto handle = store.add_device(make_info("host-a", "cuda:0"));
  const auto allocated = [&] { return store.history_slots(kA); };
  EXPECT_EQ(allocated(), 0u);
  store.record(handle, make_sample(1));
  EXPECT_LE(allocated(), RingBuffer<Sample>::kFirstChunk);
  for (int t = 2; t <= 100; ++t) store.record(handle, make_sample(t));
  EXPECT_LE(allocated(), 200u);
  for (int t = 101; t <= 20'000; ++t) store.record(handle, make_sample(t));
  EXPECT_EQ(allocated(), 10'000u);
  EXPECT_EQ(store.history(kA).size(), 10'000u);
}

// A max_age longer than the time since the epoch keeps everything (no overflow).
TEST(TelemetryStore, HugeMaxAgeDoesNotOverflow) {
  TelemetryStore store(
      HistoryLimits{10, std::chrono::nanoseconds{std::numeric_limits<std::int64_t>::max()}, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  Sample early = make_sample(0);
  early.timestamp = Timestamp{std::chrono::nanoseconds{std::numeric_limits<std::int64_t>::min() + 5}};
  store.record(kA, early);
  store.record(kA, make_sample(-100));  // newest - max_age is below the int64 range: everything is kept
  EXPECT_EQ(store.history(kA).size(), 2u);
  store.record(kA, make_sample(1));  // now `early` is older than newest - max_age
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{-100, 1}));
}

// Views read each device's newest sample from its slot, not its history: it
// must follow every way the history changes (record, batches, a replaced
// device), and visit_states must see each device exactly once.
TEST(TelemetryStore, VisitStatesSeesEveryDeviceWithItsNewestSample) {
  TelemetryStore store(HistoryLimits{3, seconds{100}, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  store.add_device(make_info("host-a", "cuda:1"));
  store.add_device(make_info("host-b", "cuda:0"));
  store.record(kA, make_sample(1));
  const std::vector<Sample> batch{make_sample(2), make_sample(3, 2000), make_sample(4, 3000)};
  ASSERT_FALSE(store.record_batch(DeviceKey{"host-b", "cuda:0"}, batch).rejection);
  store.set_availability(DeviceKey{"host-a", "cuda:1"}, false, "gone");
  const auto seen = [&store] {
    std::map<std::string, std::string> out;  // key → "available/used" or "no sample"
    store.visit_states([&out](const DeviceStateRef& device) {
      const std::string value =
          device.latest == nullptr
              ? std::string(device.available ? "no sample" : "unavailable: ") + std::string(device.unavailable_reason)
              : std::to_string(device.latest->memory_used_bytes);
      EXPECT_TRUE(out.emplace(device.info.key.str(), value).second) << device.info.key.str() << " seen twice";
    });
    return out;
  };
  EXPECT_EQ(seen(), (std::map<std::string, std::string>{
                        {"host-a/cuda:0", "1000"}, {"host-a/cuda:1", "unavailable: gone"}, {"host-b/cuda:0", "3000"}}));
  // Removed and registered again: no sample (the old one is gone with the history).
  ASSERT_TRUE(store.remove_device(kA));
  store.add_device(make_info("host-a", "cuda:0"));
  EXPECT_EQ(seen().at("host-a/cuda:0"), "no sample");
  EXPECT_FALSE(store.state(kA)->latest);
  store.record(kA, make_sample(5, 4000));
  EXPECT_EQ(seen().at("host-a/cuda:0"), "4000");
  EXPECT_EQ(store.state(kA)->latest->memory_used_bytes, 4000);
  store.clear();
  EXPECT_TRUE(seen().empty());
}

// The coordinator's filter is asked about hosts (the devices of a down node
// are left out), and the totals are those of the hosts it keeps.
TEST(TelemetryStore, AggregateLeavesOutTheHostsTheFilterRefuses) {
  TelemetryStore store;
  for (const char* host : {"host-a", "host-b", "host-c"}) {
    for (const char* id : {"cuda:0", "cuda:1"}) {
      store.add_device(make_info(host, id));
      store.record(DeviceKey{host, id}, make_sample(1, std::string_view(host) == "host-b" ? 5000 : 1000));
    }
  }
  std::map<std::string, int> asked;
  const ClusterAggregate without_b = store.aggregate([&asked](const std::string& host) {
    ++asked[host];
    return host != "host-b";
  });
  EXPECT_EQ(without_b.devices_with_samples, 4u);
  EXPECT_EQ(without_b.device_count, 6u);  // every registered device is counted; the totals are over the kept ones
  EXPECT_EQ(without_b.used_memory_bytes, 4000u);
  EXPECT_EQ(without_b.total_memory_bytes, 40000u);
  EXPECT_EQ(asked.size(), 3u);
  const ClusterAggregate all = store.aggregate();
  EXPECT_EQ(all.used_memory_bytes, 14000u);
}

TEST(TelemetryStore, InvalidSampleIsRejectedAndNothingStored) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  store.record(kA, make_sample(1));
  Sample bad = make_sample(2);
  bad.temperature_celsius = std::numeric_limits<float>::quiet_NaN();
  try {
    store.record(kA, bad);
    FAIL() << "NaN temperature must be rejected";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.reason(), RejectReason::not_finite);
    EXPECT_EQ(e.field(), "temperature_celsius");
    EXPECT_EQ(e.device(), "host-a/cuda:0");
  }
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{1}));
}

TEST(TelemetryStore, UnregisteredDeviceIsAValidationError) {
  TelemetryStore store;
  try {
    store.record(DeviceKey{"host-a", "cuda:9"}, make_sample(1));
    FAIL() << "an unregistered device must be rejected";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.reason(), RejectReason::unknown_device);
    EXPECT_EQ(e.device(), "host-a/cuda:9");
  }
  EXPECT_FALSE(store.contains(DeviceKey{"host-a", "cuda:9"}));
  EXPECT_EQ(store.device_count(), 0u);
}

TEST(TelemetryStore, RemovedHandleIsAValidationErrorUnknownDevice) {
  TelemetryStore store;
  const TelemetryStore::Handle handle = store.add_device(make_info("host-a", "cuda:0"));
  store.record(handle, make_sample(1));
  EXPECT_EQ(store.history(kA).size(), 1u);
  EXPECT_TRUE(store.remove_device(kA));
  EXPECT_FALSE(store.remove_device(kA));
  try {
    store.record(handle, make_sample(2));
    FAIL() << "a removed device's handle must be rejected";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.reason(), RejectReason::unknown_device);
    EXPECT_EQ(e.device(), "host-a/cuda:0");
  }
  EXPECT_THROW(store.record(kA, make_sample(3)), ValidationError);
  EXPECT_FALSE(store.contains(kA));
  EXPECT_THROW(store.history(kA), UnknownDeviceError);
  EXPECT_THROW(store.handle(kA), UnknownDeviceError);
  EXPECT_FALSE(store.state(kA).has_value());
}

TEST(TelemetryStore, ReAddingARemovedDeviceStartsAFreshHistory) {
  TelemetryStore store;
  const TelemetryStore::Handle old_handle = store.add_device(make_info("host-a", "cuda:0"));
  store.record(kA, make_sample(5));
  ASSERT_TRUE(store.remove_device(kA));
  store.add_device(make_info("host-a", "cuda:0"));
  EXPECT_TRUE(store.history(kA).empty());
  // An older timestamp than the removed history is fine for the new registration.
  EXPECT_NO_THROW(store.record(kA, make_sample(1)));
  // The stale handle still refers to the removed slot.
  EXPECT_THROW(store.record(old_handle, make_sample(6)), ValidationError);
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{1}));
}

TEST(TelemetryStore, HandleRecordsIntoTheSameHistoryAsTheKey) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  const TelemetryStore::Handle handle = store.handle(kA);
  store.record(handle, make_sample(1));
  store.record(kA, make_sample(2));
  store.record(handle, make_sample(3));
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{1, 2, 3}));
}

TEST(TelemetryStore, SameLocalIdOnTwoHostsAreTwoDevices) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  store.add_device(make_info("host-b", "cuda:0"));
  EXPECT_EQ(store.device_count(), 2u);
  store.record(DeviceKey{"host-a", "cuda:0"}, make_sample(1, 111));
  EXPECT_EQ(store.history(DeviceKey{"host-a", "cuda:0"}).size(), 1u);
  EXPECT_TRUE(store.history(DeviceKey{"host-b", "cuda:0"}).empty());
}

TEST(TelemetryStore, StatesAreSortedByKey) {
  TelemetryStore store;
  store.add_device(make_info("host-b", "cuda:0"));
  store.add_device(make_info("host-a", "cuda:1"));
  store.add_device(make_info("host-a", "cuda:0"));
  const std::vector<DeviceState> states = store.states();
  ASSERT_EQ(states.size(), 3u);
  EXPECT_EQ(states[0].info->key, (DeviceKey{"host-a", "cuda:0"}));
  EXPECT_EQ(states[1].info->key, (DeviceKey{"host-a", "cuda:1"}));
  EXPECT_EQ(states[2].info->key, (DeviceKey{"host-b", "cuda:0"}));
  for (const DeviceState& s : states) {
    EXPECT_TRUE(s.available);
    EXPECT_FALSE(s.latest.has_value());
  }
}

TEST(TelemetryStore, WindowStatsSkipUnavailableFields) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  Sample s1 = make_sample(1, 1000);
  s1.utilization_percent = 10.0f;
  s1.temperature_celsius = 50.0f;
  s1.power_watts.reset();
  s1.clock_mhz = 1000.0f;
  Sample s2 = make_sample(2, 3000);
  s2.utilization_percent.reset();
  s2.temperature_celsius = 60.0f;
  s2.power_watts.reset();
  s2.clock_mhz = 2000.0f;
  Sample s3 = make_sample(3, 2000);
  s3.utilization_percent = 30.0f;
  s3.temperature_celsius.reset();
  s3.power_watts.reset();
  s3.clock_mhz = 3000.0f;
  store.record(kA, s1);
  store.record(kA, s2);
  store.record(kA, s3);

  const WindowStats stats = store.window_stats(kA);
  EXPECT_EQ(stats.samples, 3u);
  ASSERT_TRUE(stats.first.has_value());
  ASSERT_TRUE(stats.last.has_value());
  EXPECT_EQ(*stats.first, at(1));
  EXPECT_EQ(*stats.last, at(3));

  EXPECT_EQ(stats[Quantity::memory_used_bytes].count, 3u);
  EXPECT_DOUBLE_EQ(stats[Quantity::memory_used_bytes].min, 1000);
  EXPECT_DOUBLE_EQ(stats[Quantity::memory_used_bytes].max, 3000);
  EXPECT_DOUBLE_EQ(stats[Quantity::memory_used_bytes].mean, 2000);
  EXPECT_DOUBLE_EQ(stats[Quantity::memory_used_bytes].last, 2000);

  EXPECT_EQ(stats[Quantity::utilization_percent].count, 2u);
  EXPECT_DOUBLE_EQ(stats[Quantity::utilization_percent].min, 10);
  EXPECT_DOUBLE_EQ(stats[Quantity::utilization_percent].max, 30);
  EXPECT_DOUBLE_EQ(stats[Quantity::utilization_percent].mean, 20);  // not (10 + 0 + 30) / 3
  EXPECT_DOUBLE_EQ(stats[Quantity::utilization_percent].last, 30);

  EXPECT_EQ(stats[Quantity::temperature_celsius].count, 2u);
  EXPECT_DOUBLE_EQ(stats[Quantity::temperature_celsius].min, 50);
  EXPECT_DOUBLE_EQ(stats[Quantity::temperature_celsius].max, 60);
  EXPECT_DOUBLE_EQ(stats[Quantity::temperature_celsius].mean, 55);
  EXPECT_DOUBLE_EQ(stats[Quantity::temperature_celsius].last, 60);  // last reported, not the last sample

  EXPECT_EQ(stats[Quantity::power_watts].count, 0u);

  EXPECT_EQ(stats[Quantity::clock_mhz].count, 3u);
  EXPECT_DOUBLE_EQ(stats[Quantity::clock_mhz].min, 1000);
  EXPECT_DOUBLE_EQ(stats[Quantity::clock_mhz].max, 3000);
  EXPECT_DOUBLE_EQ(stats[Quantity::clock_mhz].mean, 2000);
  EXPECT_DOUBLE_EQ(stats[Quantity::clock_mhz].last, 3000);
}

TEST(TelemetryStore, WindowStatsCoverOnlyTheRetainedWindow) {
  TelemetryStore store(HistoryLimits{2, std::nullopt, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  for (int i = 1; i <= 4; ++i) store.record(kA, make_sample(i, i * 100));
  const WindowStats stats = store.window_stats(kA);
  EXPECT_EQ(stats.samples, 2u);
  EXPECT_EQ(*stats.first, at(3));
  EXPECT_DOUBLE_EQ(stats[Quantity::memory_used_bytes].min, 300);
  EXPECT_DOUBLE_EQ(stats[Quantity::memory_used_bytes].mean, 350);
}

TEST(TelemetryStore, WindowStatsOfAnEmptyOrUnknownDevice) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  const WindowStats empty = store.window_stats(kA);
  EXPECT_EQ(empty.samples, 0u);
  EXPECT_FALSE(empty.first.has_value());
  EXPECT_FALSE(empty.last.has_value());
  EXPECT_EQ(empty[Quantity::utilization_percent].count, 0u);
  EXPECT_THROW(store.window_stats(DeviceKey{"host-a", "cuda:7"}), UnknownDeviceError);
}

TEST(TelemetryStore, AggregateAveragesOnlyOverDevicesThatReport) {
  TelemetryStore store;
  store.add_device(make_info("h", "a"));
  store.add_device(make_info("h", "b"));
  store.add_device(make_info("h", "c"));  // never reports

  Sample a_old = make_sample(1, 3000, 4000);
  a_old.utilization_percent = 90.0f;
  store.record(DeviceKey{"h", "a"}, a_old);
  Sample a = make_sample(5, 1000, 4000);
  a.utilization_percent = 50.0f;
  a.temperature_celsius = 60.0f;
  a.power_watts = 100.0f;
  store.record(DeviceKey{"h", "a"}, a);

  Sample b = make_sample(7, 500, 2000);
  b.utilization_percent = 30.0f;
  b.temperature_celsius.reset();  // must not pull the average toward 0
  b.power_watts.reset();
  store.record(DeviceKey{"h", "b"}, b);

  const ClusterAggregate agg = store.aggregate();
  EXPECT_EQ(agg.device_count, 3u);
  EXPECT_EQ(agg.devices_with_samples, 2u);
  EXPECT_EQ(agg.total_memory_bytes, 6000u);
  EXPECT_EQ(agg.used_memory_bytes, 1500u);
  EXPECT_EQ(agg.available_memory_bytes, 4500u);
  ASSERT_TRUE(agg.average_utilization_percent.has_value());
  EXPECT_DOUBLE_EQ(*agg.average_utilization_percent, 40.0);  // latest samples only: (50 + 30) / 2
  ASSERT_TRUE(agg.average_temperature_celsius.has_value());
  EXPECT_DOUBLE_EQ(*agg.average_temperature_celsius, 60.0);
  ASSERT_TRUE(agg.total_power_watts.has_value());
  EXPECT_DOUBLE_EQ(*agg.total_power_watts, 100.0);
  ASSERT_TRUE(agg.timestamp.has_value());
  EXPECT_EQ(*agg.timestamp, at(7));
}

TEST(TelemetryStore, AggregateWithoutAnyPowerIsUnknownNotZero) {
  TelemetryStore store;
  store.add_device(make_info("h", "a"));
  store.add_device(make_info("h", "b"));
  for (const char* id : {"a", "b"}) {
    Sample s = make_sample(1);
    s.power_watts.reset();
    s.temperature_celsius.reset();
    s.utilization_percent.reset();
    store.record(DeviceKey{"h", id}, s);
  }
  const ClusterAggregate agg = store.aggregate();
  EXPECT_EQ(agg.devices_with_samples, 2u);
  EXPECT_FALSE(agg.total_power_watts.has_value());
  EXPECT_FALSE(agg.average_temperature_celsius.has_value());
  EXPECT_FALSE(agg.average_utilization_percent.has_value());
  EXPECT_EQ(agg.total_memory_bytes, 20000u);
}

TEST(TelemetryStore, AggregateOfAnEmptyStore) {
  TelemetryStore store;
  const ClusterAggregate agg = store.aggregate();
  EXPECT_EQ(agg.device_count, 0u);
  EXPECT_EQ(agg.devices_with_samples, 0u);
  EXPECT_EQ(agg.total_memory_bytes, 0u);
  EXPECT_EQ(agg.used_memory_bytes, 0u);
  EXPECT_EQ(agg.available_memory_bytes, 0u);
  EXPECT_FALSE(agg.average_utilization_percent.has_value());
  EXPECT_FALSE(agg.average_temperature_celsius.has_value());
  EXPECT_FALSE(agg.total_power_watts.has_value());
  EXPECT_FALSE(agg.timestamp.has_value());
}

TEST(TelemetryStore, SetAvailabilityKeepsTheReasonOnlyWhileUnavailable) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  EXPECT_TRUE(store.state(kA)->available);
  store.set_availability(kA, false, "Xid 79: fell off the bus");
  std::optional<DeviceState> state = store.state(kA);
  ASSERT_TRUE(state.has_value());
  EXPECT_FALSE(state->available);
  EXPECT_EQ(state->unavailable_reason, "Xid 79: fell off the bus");
  store.set_availability(kA, true, "ignored");
  state = store.state(kA);
  EXPECT_TRUE(state->available);
  EXPECT_TRUE(state->unavailable_reason.empty());
  EXPECT_THROW(store.set_availability(DeviceKey{"host-a", "nope"}, false, "x"), UnknownDeviceError);
}

TEST(TelemetryStore, UnavailableDeviceStillRecords) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  store.set_availability(kA, false, "down");
  store.record(kA, make_sample(1));
  EXPECT_EQ(store.history(kA).size(), 1u);
  EXPECT_FALSE(store.state(kA)->available);
}

TEST(TelemetryStore, AddDeviceUpdatesStaticInfoAndKeepsHistory) {
  TelemetryStore store;
  const TelemetryStore::Handle first = store.add_device(make_info("host-a", "cuda:0", "old name"));
  for (int i = 0; i < 3; ++i) store.record(kA, make_sample(i));
  const std::shared_ptr<const DeviceInfo> old_info = store.state(kA)->info;

  const TelemetryStore::Handle second = store.add_device(make_info("host-a", "cuda:0", "new name"));
  EXPECT_EQ(first, second);
  EXPECT_EQ(store.device_count(), 1u);
  EXPECT_EQ(store.state(kA)->info->name, "new name");
  EXPECT_EQ(old_info->name, "old name");  // readers keep the copy they took
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{0, 1, 2}));
  // Ordering still applies to the kept history.
  EXPECT_THROW(store.record(kA, make_sample(1, 4242)), ValidationError);
}

TEST(TelemetryStore, InvalidDeviceInfoIsRejected) {
  TelemetryStore store;
  DeviceInfo no_id = make_info("host-a", "");
  EXPECT_THROW(store.add_device(no_id), InputError);
  DeviceInfo no_host = make_info("", "cuda:0");
  EXPECT_THROW(store.add_device(no_host), InputError);
  DeviceInfo slash = make_info("host/a", "cuda:0");
  EXPECT_THROW(store.add_device(slash), InputError);
  DeviceInfo nan_clock = make_info("host-a", "cuda:0");
  nan_clock.max_clock_mhz = std::nan("");
  EXPECT_THROW(store.add_device(nan_clock), InputError);
  EXPECT_EQ(store.device_count(), 0u);

  // A bad update leaves the registered info and history alone.
  store.add_device(make_info("host-a", "cuda:0", "good"));
  store.record(kA, make_sample(1));
  DeviceInfo bad_update = make_info("host-a", "cuda:0", "bad");
  bad_update.power_limit_watts = -5.0;
  EXPECT_THROW(store.add_device(bad_update), InputError);
  EXPECT_EQ(store.state(kA)->info->name, "good");
  EXPECT_EQ(store.history(kA).size(), 1u);
}

TEST(TelemetryStore, ClearDropsEveryDeviceAndSample) {
  TelemetryStore store;
  const TelemetryStore::Handle handle = store.add_device(make_info("host-a", "cuda:0"));
  store.add_device(make_info("host-b", "cuda:0"));
  store.record(kA, make_sample(1));
  std::weak_ptr<const DeviceInfo> info = store.state(kA)->info;
  ASSERT_FALSE(info.expired());

  store.clear();
  EXPECT_EQ(store.device_count(), 0u);
  EXPECT_TRUE(store.states().empty());
  EXPECT_FALSE(store.contains(kA));
  EXPECT_THROW(store.history(kA), UnknownDeviceError);
  EXPECT_EQ(store.aggregate().device_count, 0u);
  EXPECT_THROW(store.record(handle, make_sample(2)), ValidationError);
  try {
    store.record(kA, make_sample(2));
    FAIL();
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.reason(), RejectReason::unknown_device);
  }
  // Only the handle we still hold keeps the info alive.
  EXPECT_FALSE(info.expired());
  EXPECT_EQ(handle.use_count(), 1);

  // The store is usable again after clear().
  store.add_device(make_info("host-a", "cuda:0"));
  store.record(kA, make_sample(1));
  EXPECT_EQ(store.history(kA).size(), 1u);
}

TEST(TelemetryStore, ClearReleasesTheSlots) {
  TelemetryStore store;
  store.add_device(make_info("host-a", "cuda:0"));
  store.record(kA, make_sample(1));
  std::weak_ptr<const DeviceInfo> info = store.state(kA)->info;
  std::weak_ptr<TelemetryStore::DeviceSlot> slot = store.handle(kA);
  ASSERT_FALSE(slot.expired());
  store.clear();
  EXPECT_TRUE(slot.expired());
  EXPECT_TRUE(info.expired());
}

// ---------------------------------------------------------------------------
// record_batch: one lock per batch, the same outcome as recording each in turn.

std::vector<Sample> samples_at(std::initializer_list<std::int64_t> seconds_list) {
  std::vector<Sample> out;
  for (const std::int64_t s : seconds_list) out.push_back(make_sample(s));
  return out;
}

TEST(TelemetryStoreBatch, StoresEverySampleAndKeepsTheNewest) {
  TelemetryStore store(HistoryLimits{10, std::nullopt, std::nullopt});
  const auto handle = store.add_device(make_info("host-a", "cuda:0"));
  store.record(kA, make_sample(0));
  std::vector<Sample> batch;
  for (int i = 1; i <= 25; ++i) batch.push_back(make_sample(i, i));
  const auto result = store.record_batch(handle, batch);
  EXPECT_EQ(result.accepted, 25u);
  EXPECT_FALSE(result.rejection);
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{16, 17, 18, 19, 20, 21, 22, 23, 24, 25}));
  EXPECT_EQ(store.latest(kA)->memory_used_bytes, 25);
}

TEST(TelemetryStoreBatch, ShortBatchAppendsToTheHistory) {
  TelemetryStore store(HistoryLimits{10, std::nullopt, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  store.record(kA, make_sample(1));
  const auto result = store.record_batch(kA, samples_at({1, 2, 2, 3}));  // retransmissions: acknowledged once
  EXPECT_EQ(result.accepted, 4u);
  EXPECT_EQ(result.duplicates, 2u);
  EXPECT_FALSE(result.rejection);
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_EQ(store.record_batch(kA, std::span<const Sample>{}).accepted, 0u);
}

TEST(TelemetryStoreBatch, StopsAtTheFirstInvalidSample) {
  TelemetryStore store(HistoryLimits{10, std::nullopt, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  auto batch = samples_at({1, 2, 3, 4, 5});
  batch[3].temperature_celsius = std::numeric_limits<float>::quiet_NaN();
  batch[4].memory_used_bytes = -1;
  const auto result = store.record_batch(kA, batch);
  EXPECT_EQ(result.accepted, 3u);
  ASSERT_TRUE(result.rejection);
  EXPECT_EQ(result.rejection->reason(), RejectReason::not_finite);
  EXPECT_EQ(result.rejection->field(), "temperature_celsius");
  EXPECT_EQ(result.rejection->device(), "host-a/cuda:0");
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{1, 2, 3}));  // none after it
}

TEST(TelemetryStoreBatch, OrderIsCheckedAgainstTheNewestAndInsideTheBatch) {
  TelemetryStore store(HistoryLimits{10, std::nullopt, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  store.record(kA, make_sample(10));
  auto older = store.record_batch(kA, samples_at({9, 11}));
  EXPECT_EQ(older.accepted, 0u);
  ASSERT_TRUE(older.rejection);
  EXPECT_EQ(older.rejection->reason(), RejectReason::out_of_order);
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{10}));

  auto inside = store.record_batch(kA, samples_at({11, 12, 9, 13}));
  EXPECT_EQ(inside.accepted, 2u);
  ASSERT_TRUE(inside.rejection);
  EXPECT_EQ(inside.rejection->reason(), RejectReason::out_of_order);
  EXPECT_EQ(inside.rejection->field(), "timestamp");
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{10, 11, 12}));
}

TEST(TelemetryStoreBatch, TheFirstRejectionWinsAsIfRecordedInTurn) {
  TelemetryStore store(HistoryLimits{10, std::nullopt, std::nullopt});
  store.add_device(make_info("host-a", "cuda:0"));
  // Out of order at 1, invalid values at 2: the out-of-order one comes first.
  auto batch = samples_at({5, 4, 6});
  batch[2].utilization_percent = 101.0f;
  auto result = store.record_batch(kA, batch);
  EXPECT_EQ(result.accepted, 1u);
  EXPECT_EQ(result.rejection->reason(), RejectReason::out_of_order);
  // Both at 1: values are checked before the order, as record() does.
  batch = samples_at({6, 1});
  batch[1].utilization_percent = 101.0f;
  result = store.record_batch(kA, batch);
  EXPECT_EQ(result.accepted, 1u);
  EXPECT_EQ(result.rejection->reason(), RejectReason::out_of_range);
  EXPECT_EQ(seconds_of(store.history(kA)), (std::vector<std::int64_t>{5, 6}));
}

TEST(TelemetryStoreBatch, UnknownOrRemovedDeviceRejectsTheFirstSample) {
  TelemetryStore store;
  auto result = store.record_batch(kA, samples_at({1}));
  EXPECT_EQ(result.accepted, 0u);
  ASSERT_TRUE(result.rejection);
  EXPECT_EQ(result.rejection->reason(), RejectReason::unknown_device);
  EXPECT_FALSE(store.record_batch(kA, std::span<const Sample>{}).rejection);  // nothing to reject

  const auto handle = store.add_device(make_info("host-a", "cuda:0"));
  store.remove_device(kA);
  result = store.record_batch(handle, samples_at({1, 2}));
  EXPECT_EQ(result.accepted, 0u);
  ASSERT_TRUE(result.rejection);
  EXPECT_EQ(result.rejection->reason(), RejectReason::unknown_device);
}

// The batch must leave exactly the history, and give exactly the answer, that
// recording one by one gives: with count and age limits, over batches shorter
// and longer than the ring, with retransmissions (of the newest, of older held
// samples, of samples earlier in the same batch), conflicts and older samples.
TEST(TelemetryStoreBatch, SameOutcomeAsRecordingInTurn) {
  const HistoryLimits limits{7, std::chrono::nanoseconds{seconds{5}}, std::nullopt};
  std::uint64_t state = 12345;
  const auto next = [&state](std::uint64_t below) {  // a small fixed-seed LCG: the cases are the same every run
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (state >> 33) % below;
  };
  for (const std::size_t batch_size : {1u, 2u, 3u, 7u, 8u, 30u}) {
    for (int trial = 0; trial < 40; ++trial) {
      TelemetryStore one_by_one(limits), batched(limits);
      one_by_one.add_device(make_info("host-a", "cuda:0"));
      batched.add_device(make_info("host-a", "cuda:0"));
      std::vector<Sample> sent;  // every sample offered so far, to retransmit from
      std::int64_t t = 100;
      for (int round = 0; round < 5; ++round) {
        std::vector<Sample> batch;
        for (std::size_t i = 0; i < batch_size; ++i) {
          const std::uint64_t kind = next(10);
          if (kind == 0 && !sent.empty()) {
            batch.push_back(sent[sent.size() - 1 - next(std::min<std::uint64_t>(sent.size(), 12))]);  // retransmit
          } else if (kind == 1 && !sent.empty()) {
            Sample clash = sent.back();  // same timestamp, other values
            clash.memory_used_bytes += 1;
            batch.push_back(clash);
          } else if (kind == 2) {
            batch.push_back(make_sample(t - static_cast<std::int64_t>(next(4)), 7));  // older, or equal
          } else {
            t += static_cast<std::int64_t>(next(3));  // gaps of 0-2 s
            batch.push_back(make_sample(t, static_cast<std::int64_t>(next(3))));
          }
          sent.push_back(batch.back());
        }
        std::size_t expected_accepted = 0, expected_duplicates = 0;
        std::optional<RejectReason> expected_reason;
        for (const Sample& sample : batch) {
          try {
            if (one_by_one.record(kA, sample) == RecordOutcome::duplicate) ++expected_duplicates;
            ++expected_accepted;
          } catch (const ValidationError& e) {
            expected_reason = e.reason();
            break;
          }
        }
        const auto result = batched.record_batch(kA, batch);
        const std::string where = "batch of " + std::to_string(batch_size) + ", trial " + std::to_string(trial) +
                                  ", round " + std::to_string(round);
        ASSERT_EQ(result.accepted, expected_accepted) << where;
        ASSERT_EQ(result.duplicates, expected_duplicates) << where;
        ASSERT_EQ(result.rejection.has_value(), expected_reason.has_value()) << where;
        if (expected_reason) {
          ASSERT_EQ(result.rejection->reason(), *expected_reason) << where;
        }
        const auto expected = one_by_one.history(kA), actual = batched.history(kA);
        ASSERT_EQ(actual, expected) << where;
      }
    }
  }
}

TEST(TelemetryStoreBatch, ConcurrentBatchesRecordsAndReads) {
  TelemetryStore store(HistoryLimits{50, std::nullopt, std::nullopt});
  const DeviceKey kB{"host-a", "cuda:1"};
  const auto a = store.add_device(make_info("host-a", "cuda:0"));
  store.add_device(make_info("host-a", "cuda:1"));
  constexpr int kRounds = 200;
  std::thread batcher([&] {
    for (int r = 0; r < kRounds; ++r) {
      std::vector<Sample> batch;
      for (int i = 0; i < 20; ++i) batch.push_back(make_sample(r * 20 + i));
      const auto result = store.record_batch(a, batch);
      EXPECT_EQ(result.accepted, batch.size());
    }
  });
  std::thread recorder([&] {
    for (int r = 0; r < kRounds * 20; ++r) store.record(kB, make_sample(r));
  });
  std::thread reader([&] {
    for (int r = 0; r < kRounds; ++r) {
      const auto history = store.history(kA);
      for (std::size_t i = 1; i < history.size(); ++i) EXPECT_LE(history[i - 1].timestamp, history[i].timestamp);
      (void)store.aggregate();
    }
  });
  batcher.join();
  recorder.join();
  reader.join();
  EXPECT_EQ(store.history(kA).size(), 50u);
  EXPECT_EQ(store.latest(kA)->timestamp, at(kRounds * 20 - 1));
  EXPECT_EQ(store.latest(kB)->timestamp, at(kRounds * 20 - 1));
}

}  // namespace
}  // namespace gpucluster
