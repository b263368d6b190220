#include "gpucluster/model/validation.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {
namespace {

Sample valid_sample() {
  Sample s;
  s.timestamp = Timestamp{std::chrono::seconds{1000}};
  s.memory_used_bytes = 1000;
  s.memory_total_bytes = 10000;
  s.utilization_percent = 50.0f;
  s.power_watts = 100.0f;
  s.temperature_celsius = 65.0f;
  s.clock_mhz = 2500.0f;
  return s;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Expects validate_sample to throw with the given reason and field; returns the error.
ValidationError expect_rejected(const Sample& sample, RejectReason reason, const std::string& field,
                                const ValidationLimits& limits = {}) {
  const std::optional<ValidationFailure> failure = check_sample(sample, limits);
  EXPECT_TRUE(failure.has_value());
  if (failure) {
    EXPECT_EQ(failure->reason, reason);
    EXPECT_EQ(std::string(failure->field), field);
  }
  try {
    validate_sample("h/cuda:0", sample, limits);
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.reason(), reason);
    EXPECT_EQ(e.field(), field);
    EXPECT_EQ(e.device(), "h/cuda:0");
    return e;
  }
  ADD_FAILURE() << "expected a ValidationError for " << field;
  return ValidationError("", "", "", "", reason);
}

void expect_valid(const Sample& sample, const ValidationLimits& limits = {}) {
  const std::optional<ValidationFailure> failure = check_sample(sample, limits);
  EXPECT_FALSE(failure.has_value()) << "unexpected failure on " << (failure ? failure->field : "");
  EXPECT_NO_THROW(validate_sample("h/cuda:0", sample, limits));
}

TEST(Validation, ValidSamplePasses) {
  expect_valid(valid_sample());
}

TEST(Validation, EveryOptionalFieldUnavailablePasses) {
  Sample s;
  s.timestamp = Timestamp{std::chrono::seconds{1}};
  s.memory_used_bytes = 0;
  s.memory_total_bytes = 1;
  ASSERT_FALSE(s.utilization_percent || s.power_watts || s.temperature_celsius || s.clock_mhz);
  expect_valid(s);
}

// A setter for each optional gauge and the field name its error carries.
struct GaugeField {
  const char* field;
  void (*set)(Sample&, float);
};

const std::vector<GaugeField>& gauge_fields() {
  static const std::vector<GaugeField> fields = {
      {"utilization_percent", [](Sample& s, float v) { s.utilization_percent = v; }},
      {"power_watts", [](Sample& s, float v) { s.power_watts = v; }},
      {"temperature_celsius", [](Sample& s, float v) { s.temperature_celsius = v; }},
      {"clock_mhz", [](Sample& s, float v) { s.clock_mhz = v; }},
      {"fan_speed_percent", [](Sample& s, float v) { s.fan_speed_percent = v; }},
      {"energy_joules", [](Sample& s, float v) { s.energy_joules = static_cast<double>(v); }},
  };
  return fields;
}

TEST(Validation, NonFiniteIsRejectedInEveryOptionalField) {
  struct NonFinite {
    float value;
    const char* label;
  };
  const NonFinite values[] = {
      {std::numeric_limits<float>::quiet_NaN(), "NaN"},
      {-std::numeric_limits<float>::quiet_NaN(), "-NaN"},
      {std::numeric_limits<float>::infinity(), "+inf"},
      {-std::numeric_limits<float>::infinity(), "-inf"},
  };
  for (const GaugeField& gauge : gauge_fields()) {
    for (const NonFinite& v : values) {
      SCOPED_TRACE(std::string(gauge.field) + " = " + v.label);
      Sample s = valid_sample();
      gauge.set(s, v.value);
      const ValidationError e = expect_rejected(s, RejectReason::not_finite, gauge.field);
      if (std::isnan(v.value)) {
        EXPECT_EQ(e.value(), "NaN");
      } else {
        EXPECT_TRUE(contains(e.value(), "Inf") || contains(e.value(), "inf")) << e.value();
        EXPECT_EQ(v.value < 0, contains(e.value(), "-")) << e.value();
      }
    }
  }
}

TEST(Validation, NonFiniteFieldAloneIsRejectedWhenOthersAreUnavailable) {
  for (const GaugeField& gauge : gauge_fields()) {
    SCOPED_TRACE(gauge.field);
    Sample s;
    s.memory_total_bytes = 100;
    gauge.set(s, std::numeric_limits<float>::quiet_NaN());
    expect_rejected(s, RejectReason::not_finite, gauge.field);
  }
}

// Every optional row of the field table is in the list above (a new row gets
// its non-finite checks here).
TEST(Validation, EveryOptionalRowOfTheFieldTableIsChecked) {
  std::size_t optional_rows = 0;
  for_each_field([&](const auto& row) {
    if (row.required) return;
    ++optional_rows;
    const auto it = std::find_if(gauge_fields().begin(), gauge_fields().end(),
                                 [&](const GaugeField& g) { return row.name == g.field; });
    EXPECT_NE(it, gauge_fields().end()) << row.name;
  });
  EXPECT_EQ(optional_rows, gauge_fields().size());
}

TEST(Validation, FanSpeedIsAPercentAndEnergyACounterFromZero) {
  Sample s = valid_sample();
  s.fan_speed_percent = 100.0f;
  s.energy_joules = 0.0;
  expect_valid(s);
  s.fan_speed_percent = 100.5f;
  expect_rejected(s, RejectReason::out_of_range, "fan_speed_percent");
  s.fan_speed_percent = -0.5f;
  expect_rejected(s, RejectReason::out_of_range, "fan_speed_percent");
  s.fan_speed_percent = 40.0f;
  s.energy_joules = -1.0;
  const ValidationError e = expect_rejected(s, RejectReason::out_of_range, "energy_joules");
  EXPECT_EQ(e.value(), "-1");
  s.energy_joules = 2e15;
  expect_rejected(s, RejectReason::out_of_range, "energy_joules");
  s.energy_joules = 3.6e9;  // 1 MWh: a counter far past any float's exact range
  expect_valid(s);
}

TEST(Validation, UtilizationMustBeWithin0And100) {
  Sample s = valid_sample();
  s.utilization_percent = 150.0f;
  const ValidationError high = expect_rejected(s, RejectReason::out_of_range, "utilization_percent");
  EXPECT_EQ(high.value(), "150");
  s.utilization_percent = -1.0f;
  const ValidationError low = expect_rejected(s, RejectReason::out_of_range, "utilization_percent");
  EXPECT_EQ(low.value(), "-1");
  s.utilization_percent = 100.5f;
  expect_rejected(s, RejectReason::out_of_range, "utilization_percent");

  s.utilization_percent = 0.0f;
  expect_valid(s);
  s.utilization_percent = 100.0f;
  expect_valid(s);
}

TEST(Validation, MemoryUsedMustNotBeNegative) {
  Sample s = valid_sample();
  s.memory_used_bytes = -1;
  const ValidationError e = expect_rejected(s, RejectReason::out_of_range, "memory_used_bytes");
  EXPECT_EQ(e.value(), "-1");
  s.memory_used_bytes = -1000;
  expect_rejected(s, RejectReason::out_of_range, "memory_used_bytes");
  s.memory_used_bytes = 0;
  expect_valid(s);
}

TEST(Validation, MemoryTotalMustBePositive) {
  Sample s = valid_sample();
  s.memory_used_bytes = 0;
  s.memory_total_bytes = 0;
  const ValidationError zero = expect_rejected(s, RejectReason::out_of_range, "memory_total_bytes");
  EXPECT_EQ(zero.value(), "0");
  s.memory_total_bytes = -10000;
  expect_rejected(s, RejectReason::out_of_range, "memory_total_bytes");
  s.memory_total_bytes = 1;
  expect_valid(s);
}

TEST(Validation, UsedMustNotExceedTotal) {
  Sample s = valid_sample();
  s.memory_used_bytes = 10001;
  s.memory_total_bytes = 10000;
  const ValidationError e = expect_rejected(s, RejectReason::used_exceeds_total, "memory_used_bytes");
  EXPECT_EQ(e.value(), "10001");
  EXPECT_TRUE(contains(e.rule(), "memory_total_bytes")) << e.rule();
  s.memory_used_bytes = 10000;  // full is fine
  expect_valid(s);
}

TEST(Validation, TemperatureMustBeAboveAbsoluteZeroAndBelowTheCeiling) {
  Sample s = valid_sample();
  s.temperature_celsius = -274.0f;
  expect_rejected(s, RejectReason::out_of_range, "temperature_celsius");
  s.temperature_celsius = -1000.0f;
  expect_rejected(s, RejectReason::out_of_range, "temperature_celsius");
  s.temperature_celsius = -273.0f;
  expect_valid(s);

  const ValidationLimits defaults;
  s.temperature_celsius = static_cast<float>(defaults.max_temperature_celsius);
  expect_valid(s);
  s.temperature_celsius = static_cast<float>(defaults.max_temperature_celsius + 1.0);
  expect_rejected(s, RejectReason::out_of_range, "temperature_celsius");
  s.temperature_celsius = 1.0e6f;
  expect_rejected(s, RejectReason::out_of_range, "temperature_celsius");
}

TEST(Validation, PowerMustNotBeNegative) {
  Sample s = valid_sample();
  s.power_watts = -1.0f;
  const ValidationError e = expect_rejected(s, RejectReason::out_of_range, "power_watts");
  EXPECT_EQ(e.value(), "-1");
  s.power_watts = -0.5f;
  expect_rejected(s, RejectReason::out_of_range, "power_watts");
  s.power_watts = 0.0f;
  expect_valid(s);
  s.power_watts = static_cast<float>(ValidationLimits{}.max_power_watts * 2);
  expect_rejected(s, RejectReason::out_of_range, "power_watts");
}

TEST(Validation, ClockMustNotBeNegative) {
  Sample s = valid_sample();
  s.clock_mhz = -1.0f;
  const ValidationError e = expect_rejected(s, RejectReason::out_of_range, "clock_mhz");
  EXPECT_EQ(e.value(), "-1");
  s.clock_mhz = 0.0f;
  expect_valid(s);
  s.clock_mhz = static_cast<float>(ValidationLimits{}.max_clock_mhz * 2);
  expect_rejected(s, RejectReason::out_of_range, "clock_mhz");
}

TEST(Validation, ConfiguredLimitsAreApplied) {
  ValidationLimits limits;
  limits.max_temperature_celsius = 100.0;
  limits.min_temperature_celsius = -40.0;
  limits.max_power_watts = 500.0;
  limits.max_clock_mhz = 3000.0;
  Sample s = valid_sample();
  s.temperature_celsius = 101.0f;
  expect_rejected(s, RejectReason::out_of_range, "temperature_celsius", limits);
  s.temperature_celsius = -41.0f;
  expect_rejected(s, RejectReason::out_of_range, "temperature_celsius", limits);
  s.temperature_celsius = 99.0f;
  expect_valid(s, limits);
  s.power_watts = 501.0f;
  expect_rejected(s, RejectReason::out_of_range, "power_watts", limits);
  s.power_watts = 499.0f;
  s.clock_mhz = 3001.0f;
  expect_rejected(s, RejectReason::out_of_range, "clock_mhz", limits);
  s.clock_mhz = 2999.0f;
  expect_valid(s, limits);
}

// The rule text must describe the limits that were applied, not the defaults.
TEST(Validation, RuleNamesTheConfiguredLimits) {
  ValidationLimits limits;
  limits.max_temperature_celsius = 95.0;
  limits.max_power_watts = 700.0;
  limits.max_clock_mhz = 3000.0;
  Sample s = valid_sample();
  s.temperature_celsius = 120.0f;
  const ValidationError temperature = expect_rejected(s, RejectReason::out_of_range, "temperature_celsius", limits);
  EXPECT_TRUE(contains(temperature.rule(), "95")) << temperature.rule();
  EXPECT_FALSE(contains(temperature.rule(), "250")) << temperature.rule();
  s = valid_sample();
  s.power_watts = 800.0f;
  const ValidationError power = expect_rejected(s, RejectReason::out_of_range, "power_watts", limits);
  EXPECT_TRUE(contains(power.rule(), "700")) << power.rule();
  s = valid_sample();
  s.clock_mhz = 3500.0f;
  const ValidationError clock = expect_rejected(s, RejectReason::out_of_range, "clock_mhz", limits);
  EXPECT_TRUE(contains(clock.rule(), "3000")) << clock.rule();
}

TEST(Validation, ErrorCarriesDeviceFieldValueRuleAndReason) {
  Sample s = valid_sample();
  s.temperature_celsius = std::numeric_limits<float>::quiet_NaN();
  try {
    validate_sample("node-7/rocm:3", s);
    FAIL() << "NaN temperature must be rejected";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.device(), "node-7/rocm:3");
    EXPECT_EQ(e.field(), "temperature_celsius");
    EXPECT_EQ(e.value(), "NaN");
    EXPECT_FALSE(e.rule().empty());
    EXPECT_EQ(e.reason(), RejectReason::not_finite);
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "node-7/rocm:3")) << what;
    EXPECT_TRUE(contains(what, "temperature_celsius")) << what;
    EXPECT_TRUE(contains(what, "NaN")) << what;
    EXPECT_TRUE(contains(what, e.rule())) << what;
  }
}

TEST(Validation, ErrorForARangeViolationNamesTheValue) {
  Sample s = valid_sample();
  s.utilization_percent = 150.0f;
  try {
    validate_sample("h/cuda:1", s);
    FAIL() << "150 % must be rejected";
  } catch (const InputError& e) {  // a ValidationError is an InputError
    const auto* v = dynamic_cast<const ValidationError*>(&e);
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(v->reason(), RejectReason::out_of_range);
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "h/cuda:1")) << what;
    EXPECT_TRUE(contains(what, "utilization_percent")) << what;
    EXPECT_TRUE(contains(what, "150")) << what;
    EXPECT_TRUE(contains(what, e.rule())) << what;
    EXPECT_TRUE(contains(e.rule(), "100")) << e.rule();
  }
}

TEST(Validation, MakeValidationErrorMatchesTheFailure) {
  Sample s = valid_sample();
  s.power_watts = -3.0f;
  const std::optional<ValidationFailure> failure = check_sample(s);
  ASSERT_TRUE(failure.has_value());
  EXPECT_DOUBLE_EQ(failure->value, -3.0);
  const ValidationError e = make_validation_error("x/y", *failure);
  EXPECT_EQ(e.device(), "x/y");
  EXPECT_EQ(e.field(), "power_watts");
  EXPECT_EQ(e.value(), "-3");
  EXPECT_EQ(e.rule(), failure->rule);
  EXPECT_EQ(e.reason(), RejectReason::out_of_range);
}

TEST(Validation, LimitsMustBeFiniteAndNonEmpty) {
  EXPECT_NO_THROW(validate_limits(ValidationLimits{}));
  const auto expect_rejected_limits = [](void (*edit)(ValidationLimits&), const char* field) {
    ValidationLimits limits;
    edit(limits);
    try {
      validate_limits(limits);
      ADD_FAILURE() << "limits accepted; expected a complaint about " << field;
    } catch (const InputError& e) {
      EXPECT_TRUE(contains(e.field(), field)) << e.field();
    }
  };
  expect_rejected_limits([](ValidationLimits& l) { l.max_temperature_celsius = std::nan(""); },
                         "max_temperature_celsius");
  expect_rejected_limits(
      [](ValidationLimits& l) { l.min_temperature_celsius = -std::numeric_limits<double>::infinity(); },
      "min_temperature_celsius");
  expect_rejected_limits([](ValidationLimits& l) { l.max_power_watts = std::nan(""); }, "max_power_watts");
  expect_rejected_limits([](ValidationLimits& l) { l.max_clock_mhz = std::numeric_limits<double>::infinity(); },
                         "max_clock_mhz");
  expect_rejected_limits(
      [](ValidationLimits& l) {
        l.min_temperature_celsius = 100;
        l.max_temperature_celsius = 50;
      },
      "temperature_celsius");
  expect_rejected_limits([](ValidationLimits& l) { l.max_power_watts = -1; }, "max_power_watts");
  expect_rejected_limits([](ValidationLimits& l) { l.max_clock_mhz = -1; }, "max_clock_mhz");
}

TEST(Validation, RejectReasonNames) {
  EXPECT_STREQ(to_string(RejectReason::not_finite), "not_finite");
  EXPECT_STREQ(to_string(RejectReason::out_of_range), "out_of_range");
  EXPECT_STREQ(to_string(RejectReason::used_exceeds_total), "used_exceeds_total");
  EXPECT_STREQ(to_string(RejectReason::out_of_order), "out_of_order");
  EXPECT_STREQ(to_string(RejectReason::unknown_device), "unknown_device");
}

}  // namespace
}  // namespace gpucluster
