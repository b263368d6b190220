// The v2 report's decoding: a document read by the bounded reader
// (json_reader.hpp) → Report / ReportAck, every field checked by the wire
// layer's shared readers (decode_fields.hpp) and every refusal naming its JSON
// path ("samples.cuda:0[3].power_watts", "inventory[2].device_id").
//
// Unknown keys: refused at the top level, in "node" and in "clock" (the
// envelope: a typo there must not pass silently); ignored inside inventory
// entries and samples (forward compatible: a newer agent may report more) and
// in the ack (a newer coordinator may answer more).
#include <array>
#include <cctype>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "gpucluster/wire/report.hpp"
#include "model/text.hpp"
#include "wire/decode_fields.hpp"
#include "wire/json_reader.hpp"

namespace gpucluster::agent {

namespace {

using nlohmann::json;
using text::printable;
using namespace wire;  // NOLINT(google-build-using-namespace): the shared field readers

constexpr std::string_view kReportSubject = "report";
constexpr std::string_view kAckSubject = "report ack";
constexpr std::size_t kMaxAgentVersionBytes = 64;
constexpr std::int64_t kMinIntervalMs = 100;
constexpr std::int64_t kMaxIntervalMs = 60000;
constexpr double kMinCelsius = -273.15;

constexpr std::string_view kReportKeys[] = {
    "report",    "node",        "seq",     "sent_at", "clock",  "interval_ms", "inventory_version",
    "inventory", "unavailable", "samples", "dropped", "leaving"};
constexpr std::string_view kNodeKeys[] = {"id", "incarnation", "name", "agent_version", "url", "port"};
constexpr std::string_view kClockKeys[] = {"t0", "r", "t", "t1"};

[[noreturn]] void over_limit(const FieldPath& field, std::size_t count, std::size_t limit, std::string_view what,
                             std::string_view limit_name) {
  fail(Kind::invalid, field.str(), fmt::format("{} {}", count, what),
       fmt::format("must hold at most {} {} ({}{})", limit, what, kReportLimitRulePrefix, limit_name));
}

std::uint64_t positive_at(const json& value, const FieldPath& field) {
  return static_cast<std::uint64_t>(integer_at(value, field, 1, kMaxInt64));
}

std::uint64_t count_at(const json& value, const FieldPath& field) {
  return static_cast<std::uint64_t>(integer_at(value, field, 0, kMaxInt64));
}

std::uint32_t interval_at(const json& value, const FieldPath& field) {
  return static_cast<std::uint32_t>(integer_at(value, field, kMinIntervalMs, kMaxIntervalMs));
}

// "http://host:port": host a DNS name, an IPv4 address or a bracketed IPv6
// address; port 1 … 65535; nothing before or after.
bool is_http_url(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (!url.starts_with(kScheme)) return false;
  url.remove_prefix(kScheme.size());
  std::string_view host;
  std::string_view port;
  if (url.starts_with('[')) {
    const std::size_t close = url.find(']');
    if (close == std::string_view::npos || close + 1 >= url.size() || url[close + 1] != ':') return false;
    host = url.substr(1, close - 1);
    port = url.substr(close + 2);
    if (host.empty()) return false;
    for (const char c : host) {
      if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.')) return false;
    }
  } else {
    const std::size_t colon = url.rfind(':');
    if (colon == std::string_view::npos) return false;
    host = url.substr(0, colon);
    port = url.substr(colon + 1);
    if (host.empty()) return false;
    for (const char c : host) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_')) return false;
    }
  }
  if (port.empty() || port.size() > 5 || port.front() == '0') return false;
  int number = 0;
  for (const char c : port) {
    if (c < '0' || c > '9') return false;
    number = number * 10 + (c - '0');
  }
  return number >= 1 && number <= 65535;
}

ReportNode node_at(const Fields& node) {
  node.refuse_unknown_keys(kNodeKeys);
  ReportNode out;
  const json& id = node.required("id");
  out.id = string_at(id, node.path_of("id"));
  if (!is_uuid_text(out.id)) {
    fail(Kind::invalid, node.path_of("id").str(), shown(id),
         "must be a UUID: 36 characters, lowercase hex digits and dashes (8-4-4-4-12)");
  }
  out.incarnation = positive_at(node.required("incarnation"), node.path_of("incarnation"));
  out.name = identifier_at(node.required("name"), node.path_of("name"));
  const json& version = node.required("agent_version");
  out.agent_version = string_at(version, node.path_of("agent_version"));
  if (out.agent_version.size() > kMaxAgentVersionBytes) {
    fail(Kind::invalid, node.path_of("agent_version").str(), shown(version),
         fmt::format("must be at most {} bytes", kMaxAgentVersionBytes));
  }
  if (const json* url = node.optional("url")) {
    out.url = string_at(*url, node.path_of("url"));
    if (!is_http_url(*out.url)) {
      fail(Kind::invalid, node.path_of("url").str(), shown(*url),
           "must be http://host:port (a DNS name, an IPv4 address or [IPv6]; port 1-65535; no path)");
    }
  }
  if (const json* port = node.optional("port")) {
    out.port = static_cast<int>(integer_at(*port, node.path_of("port"), 1, 65535));
  }
  return out;
}

ClockExchange clock_at(const Fields& clock) {
  clock.refuse_unknown_keys(kClockKeys);
  ClockExchange out;
  out.t0 = timestamp_at(clock.required("t0"), clock.path_of("t0"));
  out.r = timestamp_at(clock.required("r"), clock.path_of("r"));
  out.t = timestamp_at(clock.required("t"), clock.path_of("t"));
  out.t1 = timestamp_at(clock.required("t1"), clock.path_of("t1"));
  return out;
}

std::optional<std::string> optional_string(const Fields& fields, std::string_view key) {
  const json* value = fields.optional(key);
  if (value == nullptr) return std::nullopt;
  return string_at(*value, fields.path_of(key));
}

std::optional<double> optional_non_negative(const Fields& fields, std::string_view key) {
  const json* value = fields.optional(key);
  if (value == nullptr) return std::nullopt;
  return non_negative_at(*value, fields.path_of(key));
}

std::optional<double> optional_celsius(const Fields& fields, std::string_view key) {
  const json* value = fields.optional(key);
  if (value == nullptr) return std::nullopt;
  const double celsius = number_at(*value, fields.path_of(key));
  if (celsius < kMinCelsius) fail(Kind::invalid, fields.path_of(key).str(), shown(*value), "must be >= -273.15");
  return celsius;
}

std::optional<bool> optional_bool(const Fields& fields, std::string_view key) {
  const json* value = fields.optional(key);
  if (value == nullptr) return std::nullopt;
  return bool_at(*value, fields.path_of(key));
}

// One inventory entry: "device_id" and DeviceInfo's fields by their member
// names ("kind" for the device kind). key.host stays empty.
DeviceInfo device_at(const Fields& device) {
  DeviceInfo info;
  info.key.local_id = identifier_at(device.required("device_id"), device.path_of("device_id"));
  info.name = string_at(device.required("name"), device.path_of("name"));
  info.vendor = string_at(device.required("vendor"), device.path_of("vendor"));
  const json& kind = device.required("kind");
  const std::optional<DeviceKind> parsed = parse_device_kind(string_at(kind, device.path_of("kind")));
  if (!parsed) {
    fail(Kind::invalid, device.path_of("kind").str(), shown(kind),
         "must be one of cuda, rocm, metal, vulkan, intel_xe, directml, cpu, unknown");
  }
  info.kind = *parsed;
  info.backend = optional_string(device, "backend").value_or("");
  info.uuid = optional_string(device, "uuid");
  info.pci_bus_id = optional_string(device, "pci_bus_id");
  info.memory_total_bytes = count_at(device.required("memory_total_bytes"), device.path_of("memory_total_bytes"));
  if (const json* units = device.optional("compute_units")) {
    info.compute_units = static_cast<std::uint32_t>(
        integer_at(*units, device.path_of("compute_units"), 0, std::numeric_limits<std::uint32_t>::max()));
  }
  info.compute_capability = optional_string(device, "compute_capability");
  info.max_clock_mhz = optional_non_negative(device, "max_clock_mhz");
  info.memory_bandwidth_gbps = optional_non_negative(device, "memory_bandwidth_gbps");
  info.driver_version = optional_string(device, "driver_version");
  info.power_limit_watts = optional_non_negative(device, "power_limit_watts");
  info.temperature_slowdown_celsius = optional_celsius(device, "temperature_slowdown_celsius");
  info.temperature_shutdown_celsius = optional_celsius(device, "temperature_shutdown_celsius");
  info.supports_fp64 = optional_bool(device, "supports_fp64");
  info.supports_tensor_cores = optional_bool(device, "supports_tensor_cores");

  // The model's own checks, as a backstop (with a stand-in host: the
  // coordinator chooses the real one); its field names mapped to JSON paths.
  info.key.host.push_back('-');  // (not = "-": GCC 12 -Wrestrict false positive)
  try {
    validate_device_info(info);
  } catch (const InputError& e) {
    fail(Kind::invalid, device.path_of(e.field()).str(), printable(e.value()), e.rule());
  }
  info.key.host.clear();
  return info;
}

std::vector<DeviceInfo> inventory_at(const json& value, const FieldPath& field, const ReportLimits& report_limits) {
  const json::array_t& entries = array_at(value, field);
  if (entries.size() > report_limits.max_devices) {
    over_limit(field, entries.size(), report_limits.max_devices, "devices", "max_devices");
  }
  std::vector<DeviceInfo> inventory;
  inventory.reserve(entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const FieldPath entry_path(field, i);
    inventory.push_back(device_at(object_at(entries[i], entry_path)));
    const std::string& id = inventory.back().key.local_id;
    for (std::size_t j = 0; j < i; ++j) {  // at most 256 entries, rare (inventory changes)
      if (inventory[j].key.local_id == id) {
        fail(Kind::invalid, FieldPath(entry_path, "device_id").str(), shown(entries[i]["device_id"]),
             fmt::format("must be unique in the inventory (also {}[{}].device_id)", field.str(), j));
      }
    }
  }
  return inventory;
}

// The keys of an object keyed by device ids (checked in key order); at most max_devices keys.
template <class Map>
void check_device_keys(const Map& devices, const FieldPath& field, const ReportLimits& report_limits) {
  if (devices.size() > report_limits.max_devices) {
    over_limit(field, devices.size(), report_limits.max_devices, "devices", "max_devices");
  }
  for (const auto& [key, value] : devices) check_identifier_key(key, FieldPath(field, key));
}

// An object keyed by device ids, each key checked; at most max_devices keys.
const json& device_map_at(const json& value, const FieldPath& field, const ReportLimits& report_limits) {
  if (!value.is_object()) wrong_type(field, value, "an object keyed by device id");
  check_device_keys(value.get_ref<const json::object_t&>(), field, report_limits);
  return value;
}

// ---------------------------------------------------------------------------
// "samples", decoded as the reader goes (json_reader.hpp's JsonValueSink): it
// is the bulk of every report, and building a document for it cost the
// coordinator an allocation or three per key. Each sample's values are kept
// in one slot per key it can have and checked by sample_from, the rules the
// document path uses. What it refuses is kept and raised by samples_into in
// the order the checks of a document would find it: the map's type, its size
// and keys, then per device (in key order) its type, its count, the total,
// and its first refused sample.

// The keys a sample can carry ("timestamp" and the field table's names); any
// other key of a sample is ignored.
constexpr auto kSampleKeys = [] {
  std::array<std::string_view, kQuantityCount + 1> keys{"timestamp"};
  std::size_t i = 1;
  for_each_field([&](const auto& row) { keys[i++] = field_key(row, FieldNames::canonical); });
  return keys;
}();
constexpr std::size_t kNoSlot = kSampleKeys.size();

std::size_t sample_slot(std::string_view key) {
  for (std::size_t i = 0; i < kSampleKeys.size(); ++i) {
    if (kSampleKeys[i] == key) return i;
  }
  return kNoSlot;
}

class SamplesSink final : public JsonValueSink {
 public:
  struct Device {
    std::vector<Sample> samples;
    std::size_t count = 0;              // elements of its array
    std::optional<json> not_an_array;   // its value, when that is not an array
    std::optional<FieldError> refused;  // its first refused sample
  };

  explicit SamplesSink(const ReportLimits& report_limits) : limits_(report_limits) {}

  bool stream_container(bool is_object) override {
    switch (level_) {
      case Level::value:  // the map
        if (!is_object) return false;
        level_ = Level::devices;
        return true;
      case Level::devices:  // a device's list
        if (is_object) return false;
        level_ = Level::list;
        return true;
      case Level::list:  // a sample
        if (!is_object) return false;
        level_ = Level::sample;
        present_.fill(false);
        unknown_keys_.clear();
        return true;
      case Level::sample: return false;  // a field's value: taken whole
    }
    return false;
  }

  bool key(std::string_view name) override {
    if (level_ == Level::devices) {
      const auto [it, inserted] = devices_.try_emplace(std::string(name));
      device_ = &*it;
      return inserted;
    }
    slot_ = sample_slot(name);
    if (slot_ == kNoSlot) return unknown_keys_.emplace(name).second;
    if (present_[slot_]) return false;
    present_[slot_] = true;
    return true;
  }

  void value(json&& value) override {
    switch (level_) {
      case Level::value: not_an_object_ = std::move(value); return;
      case Level::devices: device_->second.not_an_array = std::move(value); return;
      case Level::list: {
        Device& device = device_->second;
        if (!device.refused) {
          try {
            const FieldPath samples_path("samples");
            const FieldPath device_path(samples_path, device_->first);
            wrong_type(FieldPath(device_path, device.count), value, "an object");  // object_at's refusal
          } catch (FieldError& e) {
            device.refused = std::move(e);
          }
        }
        ++device.count;
        return;
      }
      case Level::sample:
        if (slot_ != kNoSlot) slots_[slot_] = std::move(value);
        return;
    }
  }

  void end_container() override {
    switch (level_) {
      case Level::value: return;
      case Level::devices: level_ = Level::value; return;
      case Level::list: level_ = Level::devices; return;
      case Level::sample: {
        level_ = Level::list;
        Device& device = device_->second;
        // Past its device's limit the report is refused before any of that
        // device's samples would be looked at: the rest is only counted. (Not
        // so for the total: a device earlier in key order may have a sample
        // to refuse first.)
        if (!device.refused && device.count < limits_.max_samples_per_device) {
          try {
            const FieldPath samples_path("samples");
            const FieldPath device_path(samples_path, device_->first);
            const FieldPath path(device_path, device.count);
            device.samples.push_back(sample_from(
                [&](std::string_view key) -> const json* {
                  const std::size_t slot = sample_slot(key);
                  return slot != kNoSlot && present_[slot] ? &slots_[slot] : nullptr;
                },
                path, FieldNames::canonical, std::nullopt));
          } catch (FieldError& e) {
            device.refused = std::move(e);
          }
        }
        ++device.count;
        return;
      }
    }
  }

  // The samples into report, or the first refusal (see above).
  void samples_into(Report& report) {
    const FieldPath field("samples");
    if (not_an_object_) wrong_type(field, *not_an_object_, "an object keyed by device id");
    check_device_keys(devices_, field, limits_);
    std::size_t total = 0;
    for (auto& [key, device] : devices_) {
      const FieldPath device_path(field, key);
      if (device.not_an_array) wrong_type(device_path, *device.not_an_array, "an array");
      if (device.count > limits_.max_samples_per_device) {
        over_limit(device_path, device.count, limits_.max_samples_per_device, "samples", "max_samples_per_device");
      }
      total += device.count;
      if (total > limits_.max_samples) over_limit(field, total, limits_.max_samples, "samples", "max_samples");
      if (device.refused) throw *device.refused;
      report.samples.emplace_hint(report.samples.end(), key, std::move(device.samples));
    }
  }

 private:
  enum class Level : std::uint8_t { value, devices, list, sample };

  const ReportLimits& limits_;
  Level level_ = Level::value;
  std::optional<json> not_an_object_;
  std::map<std::string, Device> devices_;  // in key order, as a document's object
  std::pair<const std::string, Device>* device_ = nullptr;
  std::array<json, kSampleKeys.size()> slots_;
  std::array<bool, kSampleKeys.size()> present_{};
  std::size_t slot_ = kNoSlot;
  std::set<std::string, std::less<>> unknown_keys_;  // of the current sample (rare)
};

Report parse_report_document(std::string_view body, const ProtocolLimits& limits, const ReportLimits& report_limits) {
  SamplesSink samples(report_limits);
  const json document = read_bounded_json(body, limits, kReportSubject, StreamedMember{"samples", &samples});
  if (!document.is_object()) wrong_type("body", document, "an object (the report)");
  const FieldPath root;
  const Fields top(document, root);

  // The format first: a future format's fields are not this one's.
  const json& format = top.required("report");
  if (!format.is_number_integer() || format != kReportFormat) {
    fail(Kind::malformed, "report", shown(format), std::string(kUnsupportedReportRule));
  }
  top.refuse_unknown_keys(kReportKeys);

  Report report;
  const FieldPath node_path("node");
  report.node = node_at(object_at(top.required("node"), node_path));
  report.seq = positive_at(top.required("seq"), "seq");
  report.sent_at = timestamp_at(top.required("sent_at"), "sent_at");
  if (const json* clock = top.optional("clock")) {
    const FieldPath clock_path("clock");
    report.clock = clock_at(object_at(*clock, clock_path));
  }
  report.interval_ms = interval_at(top.required("interval_ms"), "interval_ms");
  report.inventory_version = positive_at(top.required("inventory_version"), "inventory_version");
  if (const json* inventory = top.optional("inventory")) {
    report.inventory = inventory_at(*inventory, "inventory", report_limits);
  }
  if (const json* unavailable = top.optional("unavailable")) {
    const FieldPath path("unavailable");
    for (const auto& item : device_map_at(*unavailable, path, report_limits).items()) {
      const std::string& reason = string_at(item.value(), FieldPath(path, item.key()));
      report.unavailable.emplace_hint(report.unavailable.end(), item.key(), reason);
    }
  }
  (void)top.required("samples");  // the document keeps its place; the sink has its value
  samples.samples_into(report);
  if (const json* dropped = top.optional("dropped")) {
    const FieldPath path("dropped");
    for (const auto& item : device_map_at(*dropped, path, report_limits).items()) {
      const std::uint64_t count = count_at(item.value(), FieldPath(path, item.key()));
      report.dropped.emplace_hint(report.dropped.end(), item.key(), count);
    }
  }
  if (const json* leaving = top.optional("leaving")) report.leaving = bool_at(*leaving, "leaving");
  return report;
}

ReportAck parse_ack_document(std::string_view body, const ProtocolLimits& limits) {
  const json document = read_bounded_json(body, limits, kAckSubject);
  if (!document.is_object()) wrong_type("body", document, "an object (the ack)");
  const FieldPath root;
  const Fields top(document, root);

  ReportAck ack;
  ack.ack = positive_at(top.required("ack"), "ack");
  ack.coordinator = string_at(top.required("coordinator"), "coordinator");
  ack.epoch = string_at(top.required("epoch"), "epoch");
  ack.interval_ms = interval_at(top.required("interval_ms"), "interval_ms");
  ack.inventory_required = bool_at(top.required("inventory_required"), "inventory_required");
  ack.host = string_at(top.required("host"), "host");
  ack.state = string_at(top.required("state"), "state");
  ack.accepted = count_at(top.required("accepted"), "accepted");
  ack.duplicates = count_at(top.required("duplicates"), "duplicates");
  ack.rejected = count_at(top.required("rejected"), "rejected");
  const FieldPath rejections_path("rejections");
  const json::array_t& rejections = array_at(top.required("rejections"), rejections_path);
  ack.rejections.reserve(rejections.size());
  for (std::size_t i = 0; i < rejections.size(); ++i) {
    ack.rejections.push_back(string_at(rejections[i], FieldPath(rejections_path, i)));
  }
  ack.received_at = timestamp_at(top.required("received_at"), "received_at");
  ack.replied_at = timestamp_at(top.required("replied_at"), "replied_at");
  return ack;
}

}  // namespace

Report parse_report(std::string_view body, const ProtocolLimits& limits, const ReportLimits& report_limits) {
  return decoding(kReportSubject, [&] { return parse_report_document(body, limits, report_limits); });
}

ReportAck parse_report_ack(std::string_view body, const ProtocolLimits& limits) {
  return decoding(kAckSubject, [&] { return parse_ack_document(body, limits); });
}

bool is_uuid_text(std::string_view text) noexcept {
  if (text.size() != 36) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

ReportErrorCode report_error_code(const ProtocolError& error) noexcept {
  if (error.kind() == ProtocolError::Kind::malformed) {
    return error.field() == "report" && error.rule() == kUnsupportedReportRule ? ReportErrorCode::unsupported_version
                                                                               : ReportErrorCode::malformed;
  }
  return error.rule().find(kReportLimitRulePrefix) != std::string::npos ? ReportErrorCode::device_limit
                                                                        : ReportErrorCode::invalid_value;
}

const char* to_string(ReportErrorCode code) noexcept {
  switch (code) {
    case ReportErrorCode::malformed: return "malformed";
    case ReportErrorCode::unsupported_version: return "unsupported_version";
    case ReportErrorCode::invalid_value: return "invalid_value";
    case ReportErrorCode::device_limit: return "device_limit";
  }
  return "invalid_value";
}

}  // namespace gpucluster::agent
