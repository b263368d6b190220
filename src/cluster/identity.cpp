#include "gpucluster/cluster/identity.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <string_view>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/uuid/name_generator_sha1.hpp>
#include <boost/uuid/random_generator.hpp>
#include <boost/uuid/string_generator.hpp>
#include <boost/uuid/uuid.hpp>
#include <boost/uuid/uuid_io.hpp>

#include <nlohmann/json.hpp>

#include "gpucluster/model/device.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/time.hpp"
#include "gpucluster/wire/report.hpp"

namespace gpucluster {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kFormat = 1;
constexpr const char* kIdentityFile = "node.json";
constexpr const char* kLockFile = "lock";
// node.json is a few hundred bytes; a larger file is not ours.
constexpr std::size_t kMaxIdentityFileBytes = 64 * 1024;
constexpr const char* kCorruptHint = "fix it, or remove it to give this agent a new node id";

// A file descriptor closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

InputError state_dir_error(const fs::path& dir, const std::string& what) {
  const std::string rule = fmt::format("must be a local directory this user can write ({})", what);
  return InputError(fmt::format("state directory {}: {}", dir.string(), what), "--state-dir", dir.string(), rule);
}

// Creates the directory with mode 0700 (only this user reads the node's state);
// an existing directory keeps its mode (systemd's StateDirectory= sets its own).
void ensure_state_dir(const fs::path& dir) {
  std::error_code error;
  if (fs::is_directory(dir, error)) return;
  if (dir.has_parent_path()) {
    fs::create_directories(dir.parent_path(), error);
    if (error) throw state_dir_error(dir, "cannot create its parent: " + error.message());
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw state_dir_error(dir, std::strerror(errno));
  if (!fs::is_directory(dir, error)) throw state_dir_error(dir, "it is not a directory");
  ::chmod(dir.c_str(), 0700);  // the umask may have taken bits away; 0700 is what was asked
}

InputError file_error(const fs::path& file, const std::string& field, const std::string& value,
                      const std::string& rule) {
  return InputError(fmt::format("{}: invalid {}: {} ({}; {})", file.string(), field, value, rule, kCorruptHint),
                    file.string() + ": " + field, value, rule);
}

std::string quoted(const json& value) {
  std::string text = value.dump();
  if (text.size() > 64) text = text.substr(0, 64) + "...";
  return text;
}

struct StoredIdentity {
  std::string id;
  std::optional<std::string> machine;
  std::uint64_t incarnation = 0;
  double created_seconds = 0;
};

// nullopt when the file does not exist; InputError for anything else that is not a valid node.json.
std::optional<StoredIdentity> read_identity_file(const fs::path& file) {
  std::error_code error;
  if (!fs::exists(fs::symlink_status(file, error))) return std::nullopt;
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    throw InputError(fmt::format("{}: cannot be read: {}", file.string(), std::strerror(errno)), file.string(),
                     "unreadable", "must be readable by the agent's user");
  }
  std::string text(kMaxIdentityFileBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > kMaxIdentityFileBytes) {
    throw file_error(file, "file", fmt::format("{}+ bytes", text.size()),
                     fmt::format("must be at most {} bytes", kMaxIdentityFileBytes));
  }
  json document;
  try {
    document = json::parse(text);
  } catch (const json::parse_error& e) {
    throw file_error(file, "file", "not JSON", fmt::format("must be the JSON object the agent wrote ({})", e.what()));
  }
  if (!document.is_object()) throw file_error(file, "file", quoted(document), "must be a JSON object");
  const auto field = [&](const char* name) -> const json& {
    const auto found = document.find(name);
    if (found == document.end()) throw file_error(file, name, "missing", "is required");
    return *found;
  };
  const json& format = field("format");
  if (!format.is_number_integer() || format.get<std::int64_t>() != kFormat) {
    throw file_error(file, "format", quoted(format), fmt::format("must be {} (written by this version)", kFormat));
  }
  StoredIdentity stored;
  const json& id = field("id");
  if (!id.is_string() || !is_uuid(id.get<std::string>())) {
    throw file_error(file, "id", quoted(id), "must be a lowercase UUID such as 5c7747ba-de2d-4b75-b7bb-5e0ef018d264");
  }
  stored.id = id.get<std::string>();
  const json& machine = field("machine");
  if (!machine.is_null()) {
    if (!machine.is_string() || !is_uuid(machine.get<std::string>())) {
      throw file_error(file, "machine", quoted(machine), "must be null or a lowercase UUID");
    }
    stored.machine = machine.get<std::string>();
  }
  const json& incarnation = field("incarnation");
  // The parser types every integer >= 0 unsigned; at least 1, with room for one more start.
  if (!incarnation.is_number_unsigned() || incarnation.get<std::uint64_t>() < 1 ||
      incarnation.get<std::uint64_t>() == std::numeric_limits<std::uint64_t>::max()) {
    throw file_error(file, "incarnation", quoted(incarnation), "must be a whole number from 1 to 2^64-2");
  }
  stored.incarnation = incarnation.get<std::uint64_t>();
  const json& created = field("created");
  if (!created.is_number() || !timestamp_seconds_in_range(created.get<double>())) {
    throw file_error(file, "created", quoted(created), std::string(kTimestampSecondsRule));
  }
  stored.created_seconds = created.get<double>();
  return stored;
}

void write_all(int fd, std::string_view text, const fs::path& dir, const fs::path& path) {
  while (!text.empty()) {
    const ssize_t written = ::write(fd, text.data(), text.size());
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0)
      throw state_dir_error(dir, fmt::format("cannot write {}: {}", path.string(), std::strerror(errno)));
    text.remove_prefix(static_cast<std::size_t>(written));
  }
}

// Temp file, fsync, rename over node.json, fsync of the directory: after a crash
// at any point the file is the old or the new one, and once this returns the
// new one survives a power loss (the incarnation must never go back).
void write_identity_file(const fs::path& dir, const StoredIdentity& stored) {
  // In the order docs/agent.md shows them (nlohmann::json would sort the keys).
  const nlohmann::ordered_json document{
      {"format", kFormat},
      {"id", stored.id},
      {"machine", stored.machine ? nlohmann::ordered_json(*stored.machine) : nlohmann::ordered_json(nullptr)},
      {"incarnation", stored.incarnation},
      {"created", stored.created_seconds}};
  const std::string text = document.dump(2) + "\n";
  const fs::path file = dir / kIdentityFile;
  const fs::path temp = dir / (std::string(kIdentityFile) + ".tmp");
  {
    Fd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd.get() < 0) {
      throw state_dir_error(dir, fmt::format("cannot create {}: {}", temp.string(), std::strerror(errno)));
    }
    ::fchmod(fd.get(), 0600);  // a temp file left by an earlier run may have had other bits
    write_all(fd.get(), text, dir, temp);
    if (::fsync(fd.get()) != 0) {
      throw state_dir_error(dir, fmt::format("cannot fsync {}: {}", temp.string(), std::strerror(errno)));
    }
    if (::close(fd.release()) != 0) {
      throw state_dir_error(dir, fmt::format("cannot close {}: {}", temp.string(), std::strerror(errno)));
    }
  }
  if (::rename(temp.c_str(), file.c_str()) != 0) {
    throw state_dir_error(
        dir, fmt::format("cannot rename {} to {}: {}", temp.string(), file.string(), std::strerror(errno)));
  }
  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0 || ::fsync(dir_fd.get()) != 0) {
    throw state_dir_error(dir, fmt::format("cannot fsync the directory: {}", std::strerror(errno)));
  }
}

std::string paths_text(const std::vector<fs::path>& paths) {
  std::string text;
  for (const fs::path& path : paths) text += (text.empty() ? "" : ", ") + path.string();
  return text.empty() ? "none given" : text;
}

}  // namespace

std::string random_uuid() {
  return boost::uuids::to_string(boost::uuids::random_generator()());
}

// The one rule, the wire's.
bool is_uuid(const std::string& text) {
  return agent::is_uuid_text(text);
}

fs::path default_state_dir() {
  if (const char* systemd = std::getenv("STATE_DIRECTORY"); systemd != nullptr && *systemd != '\0') {
    // systemd lists several directories separated by ':' when the unit names several; the first is ours.
    const std::string_view all(systemd);
    return fs::path(std::string(all.substr(0, all.find(':'))));
  }
  if (::geteuid() == 0) return "/var/lib/gpucluster";
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg != nullptr && *xdg != '\0') {
    return fs::path(xdg) / "gpucluster";
  }
  const char* home = std::getenv("HOME");
  return fs::path(home != nullptr && *home != '\0' ? home : ".") / ".local" / "state" / "gpucluster";
}

std::optional<std::string> machine_uuid(const std::vector<fs::path>& machine_id_paths) {
  static const boost::uuids::uuid kNamespace = boost::uuids::string_generator()(kMachineNamespaceUuid);
  for (const fs::path& path : machine_id_paths) {
    std::ifstream in(path);
    std::string machine_id;
    if (!in || !std::getline(in, machine_id)) continue;
    const auto first = machine_id.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) continue;
    machine_id = machine_id.substr(first, machine_id.find_last_not_of(" \t\r\n") - first + 1);
    return boost::uuids::to_string(boost::uuids::name_generator_sha1(kNamespace)(machine_id));
  }
  return std::nullopt;
}

NodeIdentity load_or_create_identity(const IdentityOptions& options) {
  validate_identifier(options.name, "--node-name");
  ensure_state_dir(options.state_dir);
  const fs::path file = options.state_dir / kIdentityFile;
  std::optional<StoredIdentity> stored = read_identity_file(file);
  const std::optional<std::string> machine = machine_uuid(options.machine_id_paths);
  if (!machine) {
    spdlog::warn(
        "no machine id ({}): cloned machines keep one node id; mount /etc/machine-id, or give each agent "
        "its own --state-dir",
        paths_text(options.machine_id_paths));
  }
  StoredIdentity next;
  if (!stored) {
    next = {random_uuid(), machine, 1, to_seconds(now_timestamp())};
    spdlog::info("new node id {} in {}", next.id, file.string());
  } else if (stored->machine != machine) {
    next = {random_uuid(), machine, 1, to_seconds(now_timestamp())};
    spdlog::warn("machine id changed (a clone or a new machine): new node id {} (was {})", next.id, stored->id);
  } else {
    next = *stored;
    ++next.incarnation;
  }
  // Persisted before the agent serves: a restart must never reuse an incarnation.
  write_identity_file(options.state_dir, next);
  return NodeIdentity{next.id, next.incarnation, options.name, next.machine};
}

StateDirLock::StateDirLock(const fs::path& state_dir) {
  ensure_state_dir(state_dir);
  const fs::path path = state_dir / kLockFile;
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd.get() < 0) {
    throw state_dir_error(state_dir, fmt::format("cannot open {}: {}", path.string(), std::strerror(errno)));
  }
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) {
      throw state_dir_error(state_dir, fmt::format("cannot lock {}: {}", path.string(), std::strerror(errno)));
    }
    std::array<char, 32> buffer{};
    const ssize_t n = ::pread(fd.get(), buffer.data(), buffer.size() - 1, 0);
    std::string pid(buffer.data(), n > 0 ? static_cast<std::size_t>(n) : 0);
    pid = pid.substr(0, pid.find_first_not_of("0123456789"));
    if (pid.empty()) pid = "unknown";
    throw InputError(fmt::format("state directory {} is in use by another gpucluster agent (pid {}); give each agent "
                                 "its own --state-dir",
                                 state_dir.string(), pid),
                     "--state-dir", state_dir.string(), "must not be in use by another running agent");
  }
  const std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd.get(), 0) == 0) {
    // The pid only helps the message above; the lock is what counts.
    if (::pwrite(fd.get(), pid.data(), pid.size(), 0) < 0) {
      spdlog::debug("cannot write the pid into {}: {}", path.string(), std::strerror(errno));
    }
  }
  fd_ = fd.release();
}

StateDirLock::~StateDirLock() {
  if (fd_ >= 0) {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
}

}  // namespace gpucluster
