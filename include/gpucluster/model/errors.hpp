#pragma once
// Typed errors. Every error that comes from bad input names what was wrong
// (device, field, value, rule) so a caller can report it without parsing text.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace gpucluster {

// Base of every error the library throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad input that names a field, its value and the rule it broke.
class InputError : public Error {
 public:
  InputError(std::string field, std::string value, std::string rule);
  const std::string& field() const noexcept { return field_; }
  const std::string& value() const noexcept { return value_; }
  const std::string& rule() const noexcept { return rule_; }

  // With a message of the caller's (e.g. with more context). Arguments by
  // reference: callers format the message from the same strings.
  InputError(const std::string& message, const std::string& field, const std::string& value, const std::string& rule);

 private:
  std::string field_;
  std::string value_;
  std::string rule_;
};

// Why a sample was rejected; counted per reason by the manager.
enum class RejectReason : std::uint8_t {
  not_finite,
  out_of_range,
  used_exceeds_total,
  out_of_order,
  unknown_device,
  future_timestamp,  // further ahead of the receiver's clock than the allowed skew
  conflict,          // same timestamp as a stored sample, other values (or a remote sample for a local device)
};
inline constexpr std::size_t kRejectReasonCount = 7;
const char* to_string(RejectReason reason) noexcept;

// A sample that failed validation. Nothing was stored.
class ValidationError : public InputError {
 public:
  ValidationError(std::string device, std::string field, std::string value, std::string rule, RejectReason reason);
  const std::string& device() const noexcept { return device_; }
  RejectReason reason() const noexcept { return reason_; }

 private:
  std::string device_;
  RejectReason reason_;
};

// An operation named a device the registry does not know.
class UnknownDeviceError : public Error {
 public:
  explicit UnknownDeviceError(std::string device);
  const std::string& device() const noexcept { return device_; }

 private:
  std::string device_;
};

// A bare local id ("cuda:0") that several hosts' devices have: the caller must
// name the host. candidates() lists them ("home/cuda:0", "node-a/cuda:0").
class AmbiguousDeviceError : public InputError {
 public:
  AmbiguousDeviceError(std::string id, std::vector<std::string> candidates);
  const std::vector<std::string>& candidates() const noexcept { return candidates_; }

 private:
  std::vector<std::string> candidates_;
};

// The manager is draining or stopped and refuses new work.
class ShutDownError : public Error {
 public:
  explicit ShutDownError(const std::string& operation);
};

// Invalid request for a work plan (weights, counts, caps).
class PlanError : public InputError {
 public:
  using InputError::InputError;
};

// One device's part of a model that does not fit.
struct MemoryShortfall {
  std::string device;
  std::uint64_t layers = 0;
  std::uint64_t needed_bytes = 0;
  std::uint64_t free_bytes = 0;
  std::uint64_t short_bytes() const noexcept { return needed_bytes - free_bytes; }
};

// A model split that cannot fit: names each device that falls short and by how much.
class InsufficientMemoryError : public PlanError {
 public:
  explicit InsufficientMemoryError(std::vector<MemoryShortfall> shortfalls, std::uint64_t total_needed_bytes,
                                   std::uint64_t total_free_bytes);
  const std::vector<MemoryShortfall>& shortfalls() const noexcept { return shortfalls_; }

 private:
  std::vector<MemoryShortfall> shortfalls_;
};

}  // namespace gpucluster
