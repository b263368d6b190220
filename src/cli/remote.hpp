#pragma once
// `--agent URL`: the CLI's commands that read devices or plans ask a running
// agent or coordinator over HTTP instead of this machine's backends.
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "gpucluster/model/errors.hpp"

namespace gpucluster::cli {

struct RemoteOptions {
  std::string agent;       // http://HOST:PORT; empty: this machine
  std::string token_file;  // Bearer token for POST routes (select, plan)
};

// The agent could not be reached, or failed (5xx): exit 1.
class AgentUnreachable : public Error {
 public:
  using Error::Error;
};

// The agent's JSON answer to one request. Throws AgentUnreachable, and
// InputError (exit 2) for a refusal (4xx), with the agent's own message, field,
// value and rule.
nlohmann::json ask_agent(const RemoteOptions& options, std::string_view method, std::string_view path,
                         const std::string& body = {});

}  // namespace gpucluster::cli
