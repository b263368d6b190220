// Every file the CLI and the agent read is bounded in size and depth, and
// options that would make the agent need more memory than it can have are
// refused at start (exit 2) with a message naming the limit. Runs the real binary.

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "support/cli_process.hpp"

namespace {

namespace fs = std::filesystem;

using Result = gpucluster::testing::CliResult;

class InputLimits : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gpucluster-limits-" + std::to_string(std::random_device{}()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs the CLI with a time limit (timeout(1)), so a regression fails instead of hanging.
  Result run(const std::string& args) const { return gpucluster::testing::run_cli(args, dir_, "timeout 20"); }

  fs::path write(const std::string& name, const std::string& content) const {
    const fs::path path = dir_ / name;
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }

  static std::string example(const std::string& name) {
    return std::string(GPUCLUSTER_SOURCE_DIR) + "/examples/" + name;
  }

  fs::path dir_;
};

// 50 MB of '[' once took 13-15 s and 3.85 GiB before it was refused.
TEST_F(InputLimits, FleetFileOfFiftyMegabytesOfBracketsIsRefusedAtOnce) {
  const fs::path fleet = write("brackets.json", std::string(50'000'000, '['));
  const Result result = run("devices --fleet " + fleet.string());
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("at most 8388608 bytes"), std::string::npos) << result.err;
}

TEST_F(InputLimits, FleetFileNestedTooDeepIsRefusedNamingTheLimit) {
  const fs::path fleet = write("deep.json", std::string(1'000, '[') + std::string(1'000, ']'));
  const Result result = run("devices --fleet " + fleet.string());
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("at most 16 levels"), std::string::npos) << result.err;
  // Just within the limits is parsed (and then refused for what it is, not its depth).
  const fs::path shallow = write("shallow.json", std::string(16, '[') + std::string(16, ']'));
  const Result parsed = run("devices --fleet " + shallow.string());
  EXPECT_EQ(parsed.exit_code, 2);
  EXPECT_EQ(parsed.err.find("levels"), std::string::npos) << parsed.err;
  EXPECT_NE(parsed.err.find("must be a JSON object"), std::string::npos) << parsed.err;
}

TEST_F(InputLimits, TokenFileLargerThanFourKibibytesIsRefused) {
  const fs::path token = write("token", std::string(5'000, 'x'));
  fs::permissions(token, fs::perms::owner_read | fs::perms::owner_write);
  const Result result =
      run("agent --listen 127.0.0.1:0 --fleet " + example("fleet-home.json") + " --token-file " + token.string());
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("at most 4096 bytes"), std::string::npos) << result.err;
}

// --history sized past the memory the agent may use once took every request
// to a 500 (bad_alloc at each registration); now it is refused before anything
// is bound.
TEST_F(InputLimits, HistoryThatCannotFitInMemoryIsRefusedAtStart) {
  const auto started = std::chrono::steady_clock::now();
  const Result huge =
      run("agent --listen 127.0.0.1:0 --fleet " + example("fleet-home.json") + " --history 1000000000000000");
  EXPECT_EQ(huge.exit_code, 2) << huge.err;
  EXPECT_NE(huge.err.find("--history-memory"), std::string::npos) << huge.err;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds{10});
  // So large that samples x 56 bytes passes 2^64: still refused, not wrapped around.
  const Result wrapping =
      run("agent --listen 127.0.0.1:0 --fleet " + example("fleet-home.json") + " --history 329406144173384851");
  EXPECT_EQ(wrapping.exit_code, 2) << wrapping.err;
  // An explicit budget too small for one device's history, likewise.
  const Result small =
      run("agent --listen 127.0.0.1:0 --fleet " + example("fleet-home.json") + " --history 1000 --history-memory 1KiB");
  EXPECT_EQ(small.exit_code, 2) << small.err;
  EXPECT_NE(small.err.find("invalid --history: 1000"), std::string::npos) << small.err;
}

TEST_F(InputLimits, ClockSkewMustBePositive) {
  const Result result =
      run("agent --listen 127.0.0.1:0 --fleet " + example("fleet-home.json") + " --max-clock-skew 0s");
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("--max-clock-skew"), std::string::npos) << result.err;
}

}  // namespace
