// marshal engine: shared libraries (dlopen, dlsym, dlvsym).
#include "abi/shared_library.hpp"
#include "base/error.hpp"

#include <dlfcn.h>

namespace marshal::engine {

const char* SharedLibrary::os_key() {
#if defined(__linux__)
  return "linux";
#elif defined(__APPLE__)
  return "darwin";
#elif defined(_WIN32)
  return "windows";
#elif defined(__FreeBSD__)
  return "freebsd";
#else
  return "any";
#endif
}

std::unique_ptr<SharedLibrary> SharedLibrary::open_file(const std::string& file, std::string& error) {
  void* h = file == "self" ? ::dlopen(nullptr, RTLD_NOW) : ::dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = ::dlerror();
    error = e ? e : "unknown error";
    return nullptr;
  }
  return std::unique_ptr<SharedLibrary>(new SharedLibrary(h, file, file));
}

std::unique_ptr<SharedLibrary> SharedLibrary::open(const LibrarySpec& spec, std::string& error) {
  std::vector<std::string> candidates;
  for (const char* os : {os_key(), "any"})
    if (auto it = spec.load.find(os); it != spec.load.end())
      candidates.insert(candidates.end(), it->second.begin(), it->second.end());
  if (candidates.empty()) {
    raise_error(ErrorId::library_not_found, "library '" + spec.name + "' has no candidates for " + os_key() +
                                                " (library.load." + os_key() + " or library.load.any)");
    error = last_error().message;
    return nullptr;
  }
  std::string tried;
  for (const std::string& c : candidates) {
    std::string why;
    if (auto lib = open_file(c, why)) {
      lib->name_ = spec.name;
      return lib;
    }
    tried += (tried.empty() ? "" : "; ") + c + ": " + why;
  }
  Error& e = raise_error(ErrorId::library_not_found, "cannot load library '" + spec.name + "': tried " + tried);
  e.got = tried;
  error = e.message;
  return nullptr;
}

SharedLibrary::~SharedLibrary() {
  if (handle_) ::dlclose(handle_);
}

void* SharedLibrary::symbol(const std::string& name, const std::string& version, std::string& error) const {
  ::dlerror();
#if defined(__GLIBC__)
  void* p = version.empty() ? ::dlsym(handle_, name.c_str()) : ::dlvsym(handle_, name.c_str(), version.c_str());
#else
  void* p = version.empty() ? ::dlsym(handle_, name.c_str()) : nullptr;
#endif
  if (!p) {
    const char* e = ::dlerror();
    Error& r = raise_error(ErrorId::symbol_not_found, "symbol '" + name + (version.empty() ? "" : "@" + version) +
                                                          "' not found in library '" + name_ + "' (" + file_ + ")" +
                                                          (e ? std::string(": ") + e : std::string()));
    r.got = name;
    error = r.message;
  }
  return p;
}

}  // namespace marshal::engine
