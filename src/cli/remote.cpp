#include "remote.hpp"

#include <chrono>

#include <fmt/format.h>

#include "agent_command.hpp"
#include "cluster/http_client.hpp"

namespace gpucluster::cli {

nlohmann::json ask_agent(const RemoteOptions& options, std::string_view method, std::string_view path,
                         const std::string& body) {
  const HttpUrl url = parse_http_url(options.agent, "--agent");
  std::optional<std::string> token;
  if (!options.token_file.empty()) token = read_token(options.token_file, "--token-file");
  HttpClient client(url, 64 * 1024 * 1024);
  HttpClientResponse response;
  try {
    response = client.request(method, path, body, token, std::chrono::seconds{30});
  } catch (const TransportError& e) {
    throw AgentUnreachable(fmt::format("cannot reach the agent at {}: {}", url.str(), e.what()));
  }
  const nlohmann::json document = nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  if (response.status >= 200 && response.status < 300 && !document.is_discarded()) return document;
  const nlohmann::json error = document.is_object() && document.contains("error") && document["error"].is_object()
                                   ? document["error"]
                                   : nlohmann::json::object();
  const auto field_text = [&](const char* key) {
    const auto it = error.find(key);
    return it != error.end() && it->is_string() ? it->get<std::string>() : std::string{};
  };
  const std::string message = error.contains("message") ? field_text("message") : response.body.substr(0, 200);
  if (response.status >= 400 && response.status < 500) {
    throw InputError(fmt::format("the agent at {} refused {} {} (HTTP {} {}): {}", url.str(), method, path,
                                 response.status, field_text("code"), message),
                     field_text("field"), field_text("value"), field_text("rule"));
  }
  throw AgentUnreachable(fmt::format("the agent at {} answered {} {} with HTTP {}: {}", url.str(), method, path,
                                     response.status, message));
}

}  // namespace gpucluster::cli
