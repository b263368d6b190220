// libFuzzer target for the telemetry protocol parser (scripts/fuzz.sh).
// Holds parse_telemetry_message to its contract for any bytes:
//   - it returns a message or throws ProtocolError, nothing else (anything
//     else escapes and libFuzzer reports it as a crash);
//   - an error's texts are valid UTF-8 (the agent puts them in JSON answers;
//     json::dump throws on invalid UTF-8);
//   - an accepted message round-trips: parse(to_protocol_json(m).dump()) == m.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "gpucluster/wire/protocol.hpp"

namespace {

using gpucluster::agent::ProtocolError;
using gpucluster::agent::TelemetryMessage;

[[noreturn]] void violated(const char* what, std::string_view body) {
  std::fprintf(stderr, "protocol_fuzzer: %s\ninput (%zu bytes): %.*s\n", what, body.size(),
               static_cast<int>(body.size() > 2000 ? 2000 : body.size()), body.data());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  TelemetryMessage message;
  try {
    message = gpucluster::agent::parse_telemetry_message(body);
  } catch (const ProtocolError& e) {
    // Throws json::type_error (a crash here) unless every text is valid UTF-8.
    (void)nlohmann::json{{"error", e.what()}, {"field", e.field()}, {"value", e.value()}, {"rule", e.rule()}}.dump();
    if (e.field().empty() || e.rule().empty()) violated("an error without a field or a rule", body);
    return 0;
  }
  const std::string written =
      gpucluster::agent::to_protocol_json(message, gpucluster::timestamp_from_seconds(1717171717.0)).dump();
  TelemetryMessage again;
  try {
    again = gpucluster::agent::parse_telemetry_message(written);
  } catch (const ProtocolError& e) {
    std::fprintf(stderr, "written: %s\nrefused: %s\n", written.c_str(), e.what());
    violated("a written message was refused", body);
  }
  if (!(again == message)) {
    std::fprintf(stderr, "written: %s\n", written.c_str());
    violated("the round trip changed the message", body);
  }
  return 0;
}
