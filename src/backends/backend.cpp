#include "gpucluster/backends/backend.hpp"

#include <unistd.h>

#include <array>
#include <climits>

namespace gpucluster {

std::string local_host_name() {
  // HOST_NAME_MAX is 64 on Linux; leave room for the terminator and for systems with longer names.
  std::array<char, 256> buffer{};
  if (gethostname(buffer.data(), buffer.size() - 1) != 0) return "localhost";
  buffer.back() = '\0';  // POSIX does not promise termination when the name is truncated
  std::string name(buffer.data());
  return name.empty() ? "localhost" : name;
}

}  // namespace gpucluster
