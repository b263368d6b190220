#pragma once
// Runs the real gpucluster binary for the CLI tests: exit status, stdout and
// stderr (through files in the test's scratch folder).

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace gpucluster::testing {

struct CliResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string out;
  std::string err;
};

inline std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// `prefix`: what goes before the binary on the shell line, e.g. VAR=value
// assignments or `timeout 20`.
inline CliResult run_cli(const std::string& args, const std::filesystem::path& scratch,
                         const std::string& prefix = {}) {
  const std::filesystem::path out = scratch / "stdout", err = scratch / "stderr";
  const std::string command = prefix + " " + std::string(GPUCLUSTER_CLI_PATH) + " " + args + " >" + out.string() +
                              " 2>" + err.string() + " </dev/null";
  const int status = std::system(command.c_str());
  CliResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = read_text_file(out);
  result.err = read_text_file(err);
  return result;
}

}  // namespace gpucluster::testing
