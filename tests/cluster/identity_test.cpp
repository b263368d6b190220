// The node identity (src/cluster/identity.cpp): node.json created, reloaded
// with the next incarnation, replaced on a new machine id, refused when
// corrupt; the state directory's lock and the modes of what is written.

#include "gpucluster/cluster/identity.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

unsigned mode_of(const fs::path& path) {
  struct stat info {};
  EXPECT_EQ(::stat(path.c_str(), &info), 0) << path;
  return info.st_mode & 07777U;
}

class Identity : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("gpucluster-identity-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    write_file(root_ / "machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4\n");
  }
  void TearDown() override { fs::remove_all(root_); }

  IdentityOptions options() const {
    IdentityOptions result;
    result.state_dir = state_dir();
    result.name = "gpu-a";
    result.machine_id_paths = {root_ / "machine-id"};
    return result;
  }
  fs::path state_dir() const { return root_ / "state" / "gpucluster"; }
  fs::path node_file() const { return state_dir() / "node.json"; }

  // The InputError of loading, or a test failure when it loads.
  InputError load_error() const {
    try {
      load_or_create_identity(options());
    } catch (const InputError& e) {
      return e;
    }
    ADD_FAILURE() << "no InputError";
    return InputError("none", "none", "none");
  }

  fs::path root_;
};

TEST_F(Identity, NewDirectoryGivesIncarnationOneAndAReloadTheSameIdWithTwo) {
  const NodeIdentity first = load_or_create_identity(options());
  EXPECT_TRUE(is_uuid(first.id)) << first.id;
  EXPECT_EQ(first.id[14], '4') << "a UUID v4: " << first.id;
  EXPECT_EQ(first.incarnation, 1U);
  EXPECT_EQ(first.name, "gpu-a");
  ASSERT_TRUE(first.machine.has_value());
  EXPECT_TRUE(is_uuid(*first.machine));
  EXPECT_EQ((*first.machine)[14], '5') << "a UUID v5: " << *first.machine;

  const NodeIdentity second = load_or_create_identity(options());
  EXPECT_EQ(second.id, first.id);
  EXPECT_EQ(second.incarnation, 2U);
  EXPECT_EQ(second.machine, first.machine);

  const auto document = nlohmann::json::parse(read_file(node_file()));
  EXPECT_EQ(document.at("format"), 1);
  EXPECT_EQ(document.at("id"), first.id);
  EXPECT_EQ(document.at("machine"), *first.machine);
  EXPECT_EQ(document.at("incarnation"), 2);
  EXPECT_GT(document.at("created").get<double>(), 1.7e9);
  EXPECT_FALSE(fs::exists(state_dir() / "node.json.tmp"));
}

TEST_F(Identity, TheRawMachineIdIsNeverStored) {
  load_or_create_identity(options());
  EXPECT_EQ(read_file(node_file()).find("3d1219c7c4c5404aaa1f6d2a48adfda4"), std::string::npos);
}

TEST_F(Identity, AChangedMachineIdGivesANewIdWithIncarnationOne) {
  const NodeIdentity before = load_or_create_identity(options());
  load_or_create_identity(options());
  write_file(root_ / "machine-id", "0123456789abcdef0123456789abcdef\n");  // a clone of this state dir
  const NodeIdentity after = load_or_create_identity(options());
  EXPECT_NE(after.id, before.id);
  EXPECT_EQ(after.incarnation, 1U);
  EXPECT_NE(after.machine, before.machine);
  EXPECT_EQ(load_or_create_identity(options()).id, after.id);
}

TEST_F(Identity, NoMachineIdGivesNullMachineAndStillWorks) {
  IdentityOptions without = options();
  without.machine_id_paths = {root_ / "missing", root_ / "also-missing"};
  const NodeIdentity first = load_or_create_identity(without);
  EXPECT_FALSE(first.machine.has_value());
  EXPECT_TRUE(nlohmann::json::parse(read_file(node_file())).at("machine").is_null());
  const NodeIdentity second = load_or_create_identity(without);
  EXPECT_EQ(second.id, first.id);
  EXPECT_EQ(second.incarnation, 2U);
}

TEST_F(Identity, TheSecondMachineIdPathIsTheFallback) {
  IdentityOptions fallback = options();
  fallback.machine_id_paths = {root_ / "missing", root_ / "machine-id"};
  EXPECT_EQ(load_or_create_identity(fallback).machine, machine_uuid({root_ / "machine-id"}));
}

TEST_F(Identity, DirectoryModeIs0700AndFileMode0600) {
  load_or_create_identity(options());
  EXPECT_EQ(mode_of(state_dir()), 0700U);
  EXPECT_EQ(mode_of(node_file()), 0600U);
  const StateDirLock lock(state_dir());
  EXPECT_EQ(mode_of(state_dir() / "lock"), 0600U);
}

TEST_F(Identity, ASecondLockFailsWhileTheFirstIsHeldAndSucceedsAfter) {
  {
    const StateDirLock first(state_dir());
    EXPECT_EQ(read_file(state_dir() / "lock"), std::to_string(::getpid()) + "\n");
    try {
      const StateDirLock second(state_dir());
      ADD_FAILURE() << "the second lock was taken";
    } catch (const InputError& e) {
      EXPECT_EQ(e.field(), "--state-dir");
      const std::string expected = "state directory " + state_dir().string() +
                                   " is in use by another gpucluster agent (pid " + std::to_string(::getpid()) + ")";
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(StateDirLock again(state_dir()));
}

TEST_F(Identity, NotJsonIsAnErrorNamingTheFileAndLeavesItUnchanged) {
  fs::create_directories(state_dir());
  write_file(node_file(), "{\"format\": 1, \"id\": ");
  const InputError error = load_error();
  EXPECT_NE(std::string(error.what()).find(node_file().string()), std::string::npos) << error.what();
  EXPECT_EQ(error.field(), node_file().string() + ": file");
  EXPECT_EQ(read_file(node_file()), "{\"format\": 1, \"id\": ");
}

struct CorruptCase {
  const char* field;
  nlohmann::json value;
  const char* rule_part;
};

TEST_F(Identity, WrongTypesAreErrorsNamingFileFieldAndRule) {
  const NodeIdentity stored = load_or_create_identity(options());
  const auto good = nlohmann::json::parse(read_file(node_file()));
  for (const CorruptCase& bad : {
           CorruptCase{"incarnation", "3", "whole number"},
           CorruptCase{"incarnation", 0, "whole number"},
           CorruptCase{"incarnation", -2, "whole number"},
           CorruptCase{"incarnation", 1.5, "whole number"},
           CorruptCase{"id", "not-a-uuid", "UUID"},
           CorruptCase{"id", "5C7747BA-DE2D-4B75-B7BB-5E0EF018D264", "UUID"},
           CorruptCase{"id", 7, "UUID"},
           CorruptCase{"machine", 7, "UUID"},
           CorruptCase{"format", 2, "must be 1"},
           CorruptCase{"created", "yesterday", "seconds since the epoch"},
       }) {
    auto document = good;
    document[bad.field] = bad.value;
    const std::string text = document.dump();
    write_file(node_file(), text);
    const InputError error = load_error();
    EXPECT_EQ(error.field(), node_file().string() + ": " + bad.field) << bad.field << " = " << bad.value;
    EXPECT_NE(error.rule().find(bad.rule_part), std::string::npos) << error.rule();
    EXPECT_NE(std::string(error.what()).find(node_file().string()), std::string::npos) << error.what();
    EXPECT_EQ(read_file(node_file()), text) << "the file must be left as it was";
  }
  auto missing = good;
  missing.erase("incarnation");
  write_file(node_file(), missing.dump());
  EXPECT_EQ(load_error().field(), node_file().string() + ": incarnation");
  write_file(node_file(), "[1, 2]");
  EXPECT_EQ(load_error().field(), node_file().string() + ": file");
  // Put back, it loads with the next incarnation.
  write_file(node_file(), good.dump());
  EXPECT_EQ(load_or_create_identity(options()).incarnation, stored.incarnation + 1);
}

TEST_F(Identity, AnInvalidNodeNameIsRefusedAndNothingIsWritten) {
  for (const std::string& name : {std::string{}, std::string("a/b"), std::string(".."), std::string("bad\nname")}) {
    IdentityOptions bad = options();
    bad.name = name;
    try {
      load_or_create_identity(bad);
      ADD_FAILURE() << "accepted name " << name;
    } catch (const InputError& e) {
      EXPECT_EQ(e.field(), "--node-name");
    }
  }
  EXPECT_FALSE(fs::exists(node_file()));
}

TEST_F(Identity, DefaultStateDirFollowsTheEnvironment) {
  const auto with_env = [](const char* name, const char* value) {
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  };
  const char* saved_state = std::getenv("STATE_DIRECTORY");
  const char* saved_xdg = std::getenv("XDG_STATE_HOME");
  const std::optional<std::string> state_copy = saved_state ? std::optional<std::string>(saved_state) : std::nullopt;
  const std::optional<std::string> xdg_copy = saved_xdg ? std::optional<std::string>(saved_xdg) : std::nullopt;
  with_env("STATE_DIRECTORY", "/run/sd/gpucluster");
  EXPECT_EQ(default_state_dir(), fs::path("/run/sd/gpucluster"));
  with_env("STATE_DIRECTORY", nullptr);
  with_env("XDG_STATE_HOME", "/x/state");
  if (::geteuid() == 0) {
    EXPECT_EQ(default_state_dir(), fs::path("/var/lib/gpucluster"));
  } else {
    EXPECT_EQ(default_state_dir(), fs::path("/x/state/gpucluster"));
  }
  with_env("STATE_DIRECTORY", state_copy ? state_copy->c_str() : nullptr);
  with_env("XDG_STATE_HOME", xdg_copy ? xdg_copy->c_str() : nullptr);
}

}  // namespace
}  // namespace gpucluster
