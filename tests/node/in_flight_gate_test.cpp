// The in-flight gate (src/node/in_flight_gate.hpp) shared by the Manager and
// the Python exo_compat core.

#include "node/in_flight_gate.hpp"

#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include <gtest/gtest.h>

namespace gpucluster {
namespace {

TEST(InFlightGate, CountsCallsAndRefusesThemOnceClosed) {
  InFlightGate gate;
  {
    const InFlightGuard first = gate.enter("first");
    const InFlightGuard second = gate.enter("second");
    EXPECT_EQ(gate.in_flight(), 2);
  }
  EXPECT_EQ(gate.in_flight(), 0);
  EXPECT_TRUE(gate.close());
  EXPECT_TRUE(gate.closed());
  try {
    (void)gate.enter("record a sample");
    FAIL() << "no error";
  } catch (const ShutDownError& e) {
    EXPECT_NE(std::string(e.what()).find("record a sample"), std::string::npos) << e.what();
  }
  EXPECT_EQ(gate.in_flight(), 0);  // a refused call is not left counted
  EXPECT_FALSE(gate.close());      // already closed
}

TEST(InFlightGate, MovedGuardCountsOnce) {
  InFlightGate gate;
  {
    InFlightGuard guard = gate.enter("call");
    const InFlightGuard moved(std::move(guard));
    EXPECT_EQ(gate.in_flight(), 1);
  }
  EXPECT_EQ(gate.in_flight(), 0);
}

// close() returns only after the call in flight has ended.
TEST(InFlightGate, CloseWaitsForTheCallsInFlight) {
  InFlightGate gate;
  std::atomic<bool> closed_returned{false};
  std::optional<InFlightGuard> call(gate.enter("long call"));
  std::thread closer([&] {
    gate.close();
    closed_returned.store(true);
  });
  // Bounded wait for the closer to have begun closing (it then waits for `call`).
  for (int i = 0; i < 100000 && !gate.closed(); ++i) std::this_thread::yield();
  ASSERT_TRUE(gate.closed());
  EXPECT_FALSE(closed_returned.load());  // `call` is still in flight
  call.reset();                          // the call ends: close() may return
  closer.join();
  EXPECT_TRUE(closed_returned.load());
  EXPECT_EQ(gate.in_flight(), 0);
}

}  // namespace
}  // namespace gpucluster
