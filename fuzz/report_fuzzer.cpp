// libFuzzer target for the v2 report and ack parsers (scripts/fuzz.sh).
// Holds parse_report and parse_report_ack to their contract for any bytes:
//   - each returns a value or throws ProtocolError, nothing else (anything
//     else escapes and libFuzzer reports it as a crash);
//   - an error's texts are valid UTF-8 and name a field and a rule;
//   - an accepted input round-trips: parse(encode(parse(x))) == parse(x).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "gpucluster/wire/report.hpp"

namespace {

using gpucluster::agent::ProtocolError;

[[noreturn]] void violated(const char* what, std::string_view body) {
  std::fprintf(stderr, "report_fuzzer: %s\ninput (%zu bytes): %.*s\n", what, body.size(),
               static_cast<int>(body.size() > 2000 ? 2000 : body.size()), body.data());
  std::abort();
}

void check_error(const ProtocolError& e, std::string_view body) {
  // Throws json::type_error (a crash here) unless every text is valid UTF-8.
  (void)nlohmann::json{{"error", e.what()}, {"field", e.field()}, {"value", e.value()}, {"rule", e.rule()}}.dump();
  if (e.field().empty() || e.rule().empty()) violated("an error without a field or a rule", body);
  (void)gpucluster::agent::report_error_code(e);
}

// parse(encode(parse(x))) == parse(x) for one of the two parsers.
template <class Parse, class Encode>
void check(std::string_view body, Parse parse, Encode encode) {
  decltype(parse(body)) value;
  try {
    value = parse(body);
  } catch (const ProtocolError& e) {
    check_error(e, body);
    return;
  }
  const std::string written = encode(value);
  decltype(parse(body)) again;
  try {
    again = parse(written);
  } catch (const ProtocolError& e) {
    std::fprintf(stderr, "written: %s\nrefused: %s\n", written.c_str(), e.what());
    violated("a written value was refused", body);
  }
  if (!(again == value)) {
    std::fprintf(stderr, "written: %s\n", written.c_str());
    violated("the round trip changed the value", body);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  check(
      body, [](std::string_view text) { return gpucluster::agent::parse_report(text); },
      [](const gpucluster::agent::Report& report) { return gpucluster::agent::encode_report(report); });
  check(
      body, [](std::string_view text) { return gpucluster::agent::parse_report_ack(text); },
      [](const gpucluster::agent::ReportAck& ack) { return gpucluster::agent::encode_report_ack(ack); });
  return 0;
}
