#pragma once
// A vendor library loaded at run time with dlopen (NVML, ROCm SMI), shared by
// the backends that bind its C functions: one owner of the handle (dlclose in
// the destructor), and one way to bind required, optional and versioned
// symbols that names EVERY missing required function in one message, not just
// the first one found missing.
//
//   VendorLibrary library = VendorLibrary::open(path);
//   if (!library.is_open()) return library.open_error();  // "cannot load <path> (<dlerror>)"
//   library.require(api.init, {"nvmlInit_v2", "nvmlInit"});  // the newest found wins
//   library.require(api.shutdown, "nvmlShutdown");
//   library.optional(api.fan_speed, "nvmlDeviceGetFanSpeed");  // absent: nullptr
//   if (!library.complete()) return library.missing_message("NVML");
//
// Internal to the backends layer.

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "gpucluster/backends/backend.hpp"

namespace gpucluster {

// The library a backend loads: `given` when non-empty, else the environment
// variable's value when set and non-empty, else `default_library` (found by the
// dynamic loader).
struct LibraryChoice {
  std::string path;
  bool from_environment = false;  // for the hint of a note: which setting to change
};
LibraryChoice choose_library(std::string given, const char* environment_variable, const char* default_library);

// A vendor gauge answered "not supported" (or "no permission"), which does not
// change while the process runs: the field is unavailable for that device from
// now on, said once in the log ("nvml cuda:0: nvmlDeviceGetFanSpeed answered
// Not Supported; the field is unavailable from now on").
void turn_gauge_off(std::string_view backend, std::string_view device, FieldAvailability& fields, Quantity quantity,
                    std::string_view function, std::string_view answer);

class VendorLibrary {
 public:
  // dlopen(path, RTLD_NOW | RTLD_LOCAL). Never throws for a library that
  // cannot be loaded: is_open() is then false and open_error() says why.
  static VendorLibrary open(std::string path);

  VendorLibrary(VendorLibrary&& other) noexcept;
  VendorLibrary& operator=(VendorLibrary&& other) noexcept;
  VendorLibrary(const VendorLibrary&) = delete;
  VendorLibrary& operator=(const VendorLibrary&) = delete;
  ~VendorLibrary();

  bool is_open() const noexcept { return handle_ != nullptr; }
  const std::string& path() const noexcept { return path_; }
  // dlerror's text of the failed dlopen ("…: cannot open shared object file: No such file or directory").
  const std::string& dl_error() const noexcept { return dl_error_; }
  // "cannot load <path> (<dlerror>)"; empty when the library is open.
  std::string open_error() const;

  // Binds `target` to the first of `names` the library exports (list the
  // newest version first: {"nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"}) and
  // returns that name; nullptr when none is exported, and the function is then
  // recorded as missing. Every call binds, whatever was missing before.
  template <typename Function>
  const char* require(Function& target, std::initializer_list<const char*> names) {
    return bind(target, names, /*required=*/true);
  }
  template <typename Function>
  const char* require(Function& target, const char* name) {
    return bind(target, {name}, /*required=*/true);
  }
  // As require(), but a function none of whose names is exported is not
  // missing: `target` is nullptr and the caller goes without it.
  template <typename Function>
  const char* optional(Function& target, std::initializer_list<const char*> names) {
    return bind(target, names, /*required=*/false);
  }
  template <typename Function>
  const char* optional(Function& target, const char* name) {
    return bind(target, {name}, /*required=*/false);
  }

  // Whether every required function was found (true before any was asked for).
  bool complete() const noexcept { return missing_.empty(); }
  // The missing required functions in the order they were required: a name,
  // or "a (tried a_v2, a)" for one with several versions.
  const std::vector<std::string>& missing() const noexcept { return missing_; }
  // "<path> lacks the required <kind> functions a, b (tried b_v2, b)" ("function"
  // for one; no kind word when kind is empty); empty when nothing is missing.
  std::string missing_message(std::string_view kind) const;

  // dlclose now (the destructor does it otherwise); false with dl_error() set
  // when dlclose failed. Bound function pointers must not be called afterwards.
  bool close() noexcept;

 private:
  VendorLibrary(std::string path, void* handle, std::string dl_error);

  template <typename Function>
  const char* bind(Function& target, std::initializer_list<const char*> names, bool required) {
    void* address = nullptr;
    const char* found = find(names, required, address);
    // POSIX guarantees that dlsym's result converts to a function pointer.
    target = reinterpret_cast<Function>(address);
    return found;
  }
  // The first of `names` exported (its address in `address`), else nullptr
  // (recorded as missing when required). Leaves no dlerror behind.
  const char* find(std::initializer_list<const char*> names, bool required, void*& address);

  std::string path_;
  void* handle_ = nullptr;
  std::string dl_error_;
  std::vector<std::string> missing_;
};

}  // namespace gpucluster
