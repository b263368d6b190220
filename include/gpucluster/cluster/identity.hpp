#pragma once
// Who this agent is in a cluster: a node id that survives restarts (kept in a
// state directory), a counter of its starts, a display name, and a hash of the
// machine id so a cloned machine is noticed and given a new id.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace gpucluster {

struct NodeIdentity {
  std::string id;                      // lowercase 36-character UUID v4, persisted
  std::uint64_t incarnation = 0;       // persisted, +1 on every load (strictly increasing per id)
  std::string name;                    // display name (validate_identifier)
  std::optional<std::string> machine;  // UUID v5 of the machine id; nullopt when none is readable
};

// machine-id(5) asks for an application-specific hash instead of the raw id.
inline constexpr const char* kMachineNamespaceUuid = "6f1c4a52-3b8e-4d27-9a61-0c5e2f7d8b34";

struct IdentityOptions {
  std::filesystem::path state_dir;
  std::string name;  // the display name; checked with validate_identifier (field --node-name)
  // Tried in order; the first readable, non-empty one is the machine id.
  std::vector<std::filesystem::path> machine_id_paths{"/etc/machine-id", "/var/lib/dbus/machine-id"};
};

// $STATE_DIRECTORY (systemd's StateDirectory=), else /var/lib/gpucluster for
// root, else ${XDG_STATE_HOME:-$HOME/.local/state}/gpucluster.
std::filesystem::path default_state_dir();

// The UUID v5 of the first readable machine id under kMachineNamespaceUuid, or nullopt.
std::optional<std::string> machine_uuid(const std::vector<std::filesystem::path>& machine_id_paths);

// A random (version 4) UUID, lowercase: node ids and coordinator epochs.
std::string random_uuid();

// True for a lowercase 8-4-4-4-12 hex UUID.
bool is_uuid(const std::string& text);

// Reads STATE_DIR/node.json (creating the directory, mode 0700, and the file,
// mode 0600, when missing), increments the incarnation and writes it back
// atomically (temp file, fsync, rename, fsync of the directory) before
// returning. A machine id other than the stored one gives a new id with
// incarnation 1. Throws InputError naming the file, the field and the rule for
// a file that cannot be read or parsed (it is never regenerated: that would
// fork the identity), and for an invalid name (field --node-name).
// The caller holds a StateDirLock on the directory.
NodeIdentity load_or_create_identity(const IdentityOptions& options);

// Exclusive use of a state directory: flock(LOCK_EX | LOCK_NB) on DIR/lock,
// which then holds this process's pid. Creates DIR (mode 0700) when missing.
// Throws InputError "state directory DIR is in use by another gpucluster agent
// (pid N)" while another holder has it. Released by the destructor.
class StateDirLock {
 public:
  explicit StateDirLock(const std::filesystem::path& state_dir);
  ~StateDirLock();
  StateDirLock(const StateDirLock&) = delete;
  StateDirLock& operator=(const StateDirLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace gpucluster
