#include "gpucluster/model/errors.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace gpucluster {

InputError::InputError(std::string field, std::string value, std::string rule)
    : Error(fmt::format("invalid {}: {} ({})", field, value, rule)),
      field_(std::move(field)),
      value_(std::move(value)),
      rule_(std::move(rule)) {}

InputError::InputError(const std::string& message, const std::string& field, const std::string& value,
                       const std::string& rule)
    : Error(message), field_(field), value_(value), rule_(rule) {}

const char* to_string(RejectReason reason) noexcept {
  switch (reason) {
    case RejectReason::not_finite: return "not_finite";
    case RejectReason::out_of_range: return "out_of_range";
    case RejectReason::used_exceeds_total: return "used_exceeds_total";
    case RejectReason::out_of_order: return "out_of_order";
    case RejectReason::unknown_device: return "unknown_device";
    case RejectReason::future_timestamp: return "future_timestamp";
    case RejectReason::conflict: return "conflict";
  }
  return "unknown";
}

ValidationError::ValidationError(std::string device, std::string field, std::string value, std::string rule,
                                 RejectReason reason)
    : InputError(fmt::format("invalid sample for {}: {} = {} ({})", device, field, value, rule), field, value, rule),
      device_(std::move(device)),
      reason_(reason) {}

AmbiguousDeviceError::AmbiguousDeviceError(std::string id, std::vector<std::string> candidates)
    : InputError(fmt::format("ambiguous device id {}: {} hosts have it ({}); name the host, e.g. {}", id,
                             candidates.size(), fmt::join(candidates, ", "), candidates.front()),
                 "id", id,
                 fmt::format("a bare id must name one device; {} hosts have it: {}", candidates.size(),
                             fmt::join(candidates, ", "))),
      candidates_(std::move(candidates)) {}

UnknownDeviceError::UnknownDeviceError(std::string device)
    : Error(fmt::format("unknown device: {} is not registered", device)), device_(std::move(device)) {}

ShutDownError::ShutDownError(const std::string& operation)
    : Error(fmt::format("cannot {}: the manager is shut down", operation)) {}

namespace {
std::string describe_shortfalls(const std::vector<MemoryShortfall>& shortfalls, std::uint64_t total_needed,
                                std::uint64_t total_free) {
  std::string text = fmt::format("insufficient memory: the model needs {} bytes, the devices have {} bytes free",
                                 total_needed, total_free);
  for (const MemoryShortfall& s : shortfalls) {
    text += fmt::format("; {} falls short by {} bytes ({} layers need {} bytes, {} free)", s.device, s.short_bytes(),
                        s.layers, s.needed_bytes, s.free_bytes);
  }
  return text;
}
}  // namespace

InsufficientMemoryError::InsufficientMemoryError(std::vector<MemoryShortfall> shortfalls,
                                                 std::uint64_t total_needed_bytes, std::uint64_t total_free_bytes)
    : PlanError(describe_shortfalls(shortfalls, total_needed_bytes, total_free_bytes), "layers",
                std::to_string(total_needed_bytes), "the model must fit in the devices' free memory"),
      shortfalls_(std::move(shortfalls)) {}

}  // namespace gpucluster
