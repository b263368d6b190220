#include "backends/vendor_library.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

namespace gpucluster {

LibraryChoice choose_library(std::string given, const char* environment_variable, const char* default_library) {
  if (!given.empty()) return {std::move(given), false};
  const char* from_environment = std::getenv(environment_variable);  // read-only use
  if (from_environment != nullptr && *from_environment != '\0') return {from_environment, true};
  return {default_library, false};
}

void turn_gauge_off(std::string_view backend, std::string_view device, FieldAvailability& fields, Quantity quantity,
                    std::string_view function, std::string_view answer) {
  spdlog::info("{} {}: {} answered {}; the field is unavailable from now on", backend, device, function, answer);
  fields.set(quantity, false);
}

namespace {

// dlerror's text (and clears it); `otherwise` when there is none.
std::string take_dl_error(const char* otherwise) {
  const char* error = dlerror();
  return error != nullptr ? std::string(error) : std::string(otherwise);
}

}  // namespace

VendorLibrary::VendorLibrary(std::string path, void* handle, std::string dl_error)
    : path_(std::move(path)), handle_(handle), dl_error_(std::move(dl_error)) {}

VendorLibrary VendorLibrary::open(std::string path) {
  dlerror();  // a stale error must not be taken for this call's
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  std::string error = handle == nullptr ? take_dl_error("unknown dlopen error") : std::string();
  return VendorLibrary(std::move(path), handle, std::move(error));
}

VendorLibrary::VendorLibrary(VendorLibrary&& other) noexcept
    : path_(std::move(other.path_)),
      handle_(std::exchange(other.handle_, nullptr)),
      dl_error_(std::move(other.dl_error_)),
      missing_(std::move(other.missing_)) {}

VendorLibrary& VendorLibrary::operator=(VendorLibrary&& other) noexcept {
  if (this != &other) {
    close();
    path_ = std::move(other.path_);
    handle_ = std::exchange(other.handle_, nullptr);
    dl_error_ = std::move(other.dl_error_);
    missing_ = std::move(other.missing_);
  }
  return *this;
}

VendorLibrary::~VendorLibrary() {
  close();
}

bool VendorLibrary::close() noexcept {
  if (handle_ == nullptr) return true;
  void* handle = std::exchange(handle_, nullptr);
  if (dlclose(handle) == 0) return true;
  try {
    dl_error_ = take_dl_error("unknown dlclose error");
  } catch (...) {  // out of memory for the message: the library is released all the same
  }
  return false;
}

std::string VendorLibrary::open_error() const {
  if (is_open()) return {};
  return fmt::format("cannot load {} ({})", path_, dl_error_);
}

const char* VendorLibrary::find(std::initializer_list<const char*> names, bool required, void*& address) {
  address = nullptr;
  if (handle_ != nullptr) {
    for (const char* name : names) {
      dlerror();
      address = dlsym(handle_, name);
      // A symbol whose value is null cannot be called either: both count as absent.
      if (address != nullptr) return name;
    }
  }
  dlerror();  // an absent symbol leaves an error behind; nobody should read it as theirs
  if (required && names.size() > 0) {
    const char* const* const begin = names.begin();
    // Versions are listed newest first: the function goes by its oldest name, the last.
    missing_.push_back(names.size() == 1 ? std::string(*begin)
                                         : fmt::format("{} (tried {})", *(names.end() - 1), fmt::join(names, ", ")));
  }
  return nullptr;
}

std::string VendorLibrary::missing_message(std::string_view kind) const {
  if (missing_.empty()) return {};
  return fmt::format("{} lacks the required {}{}function{} {}", path_, kind, kind.empty() ? "" : " ",
                     missing_.size() > 1 ? "s" : "", fmt::join(missing_, ", "));
}

}  // namespace gpucluster
