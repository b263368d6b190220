#include "gpucluster/model/health.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <utility>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {
namespace {

HealthSignal xid(std::uint32_t code, std::string detail = {}) {
  return HealthSignal{.source = HealthSource::xid, .code = code, .at = {}, .detail = std::move(detail)};
}

TEST(Health, StatesRoundTripAndOrderByBadness) {
  for (const HealthState state :
       {HealthState::unknown, HealthState::pass, HealthState::warn, HealthState::fail, HealthState::lost}) {
    EXPECT_EQ(parse_health_state(to_string(state)), state);
  }
  EXPECT_FALSE(parse_health_state("PASS"));
  EXPECT_LT(HealthState::pass, HealthState::warn);
  EXPECT_LT(HealthState::warn, HealthState::fail);
  EXPECT_LT(HealthState::fail, HealthState::lost);
  // DCGM's numbers, and no value (no series) for unknown.
  EXPECT_EQ(health_state_value(HealthState::pass), 0);
  EXPECT_EQ(health_state_value(HealthState::warn), 10);
  EXPECT_EQ(health_state_value(HealthState::fail), 20);
  EXPECT_EQ(health_state_value(HealthState::lost), 30);
  EXPECT_FALSE(health_state_value(HealthState::unknown));
}

TEST(Health, TheCatalogIsSortedAndHoldsEveryDefaultIgnoredXid) {
  const auto catalog = xid_catalog();
  ASSERT_FALSE(catalog.empty());
  for (std::size_t i = 1; i < catalog.size(); ++i) EXPECT_LT(catalog[i - 1].code, catalog[i].code);
  for (const std::uint32_t code : HealthPolicy{}.ignored_xids) {
    ASSERT_NE(find_xid(code), nullptr) << code;
  }
  EXPECT_EQ(find_xid(79)->state, HealthState::fail);
  EXPECT_EQ(find_xid(79)->action, SuggestedAction::reboot);
  EXPECT_EQ(find_xid(12345), nullptr);
}

TEST(Health, ApplicationXidsAreIgnoredByDefault) {
  const HealthPolicy policy;
  for (const std::uint32_t code : {13U, 31U, 43U, 45U, 68U, 109U}) {
    const HealthVerdict verdict = judge(xid(code), policy);
    EXPECT_TRUE(verdict.ignored) << code;
    EXPECT_EQ(verdict.state, HealthState::pass) << code;
    EXPECT_NE(verdict.message.find("ignored"), std::string::npos) << verdict.message;
  }
  // Watching 109 again (--watch-xid 109): the catalog's RESET_GPU.
  HealthPolicy watching = policy;
  watching.ignored_xids.erase(109);
  const HealthVerdict verdict = judge(xid(109), watching);
  EXPECT_FALSE(verdict.ignored);
  EXPECT_EQ(verdict.state, HealthState::fail);
  EXPECT_EQ(verdict.action, SuggestedAction::reset_gpu);
  EXPECT_TRUE(verdict.sticky);
}

TEST(Health, XidsAreJudgedByTheCatalogAndUnknownOnesByThePolicy) {
  HealthPolicy policy;
  const HealthVerdict fallen = judge(xid(79, "PCI:0000:65:00"), policy);
  EXPECT_EQ(fallen.state, HealthState::fail);
  EXPECT_TRUE(fallen.sticky);
  EXPECT_EQ(fallen.message, "XID 79: GPU has fallen off the bus (PCI:0000:65:00)");
  EXPECT_EQ(judge(xid(74), policy).state, HealthState::warn);
  EXPECT_FALSE(judge(xid(74), policy).sticky);
  EXPECT_EQ(judge(xid(63), policy).state, HealthState::pass);
  const HealthVerdict unknown = judge(xid(4242), policy);
  EXPECT_EQ(unknown.state, HealthState::warn);
  EXPECT_EQ(unknown.action, SuggestedAction::inspect_hardware);
  EXPECT_EQ(unknown.message, "XID 4242: not in the catalog");
  policy.unknown_xid = HealthState::fail;
  EXPECT_EQ(judge(xid(4242), policy).state, HealthState::fail);
}

TEST(Health, OtherSourcesFollowTheirRules) {
  const HealthPolicy policy;
  const auto state_of = [&](HealthSource source, std::uint32_t code) {
    return judge(HealthSignal{.source = source, .code = code, .at = {}, .detail = {}}, policy).state;
  };
  EXPECT_EQ(state_of(HealthSource::ecc, health_code::kEccSingleBit), HealthState::pass);
  EXPECT_EQ(state_of(HealthSource::ecc, health_code::kEccDoubleBit), HealthState::warn);
  EXPECT_EQ(state_of(HealthSource::remap, health_code::kRemapPending), HealthState::fail);
  EXPECT_EQ(judge({HealthSource::remap, health_code::kRemapFailure, {}, {}}, policy).action, SuggestedAction::rma);
  EXPECT_EQ(state_of(HealthSource::retired_pages, health_code::kPagesOverHard), HealthState::fail);
  EXPECT_EQ(state_of(HealthSource::pcie, health_code::kPcieReplayRate), HealthState::warn);
  EXPECT_EQ(state_of(HealthSource::lost, health_code::kNotAnswering), HealthState::lost);
  EXPECT_EQ(state_of(HealthSource::clocks, 77), HealthState::warn);  // a code without a rule
}

TEST(Health, VendorTextIsQuotedPrintable) {
  const HealthVerdict verdict = judge(xid(79, std::string("bad\xff\n", 5)), HealthPolicy{});
  EXPECT_EQ(verdict.message.find('\n'), std::string::npos) << verdict.message;
  EXPECT_EQ(verdict.message.find('\xff'), std::string::npos) << verdict.message;
}

TEST(Health, PolicyRulesNameTheirOption) {
  HealthPolicy policy;
  EXPECT_NO_THROW(validate_health_policy(policy));
  policy.warn_hold = std::chrono::milliseconds{999};
  try {
    validate_health_policy(policy);
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "--health-warn-hold");
  }
  policy = {};
  policy.unknown_xid = HealthState::lost;
  try {
    validate_health_policy(policy);
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "--health-unknown-xid");
    EXPECT_EQ(e.value(), "lost");
  }
}

}  // namespace
}  // namespace gpucluster
