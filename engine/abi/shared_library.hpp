// marshal engine: shared libraries.
// Loads a typemap's library from its candidates for this OS (or the host process
// itself, "self") and resolves symbols, versioned ELF symbols included.
#pragma once

#include "types/typemap.hpp"

#include <memory>
#include <string>

namespace marshal::engine {

class SharedLibrary {
 public:
  // The OS key of this platform in library.load ("linux", "darwin", ...).
  static const char* os_key();
  // Tries this OS's candidates, then "any"; a failure lists every candidate
  // with the loader's own error text.
  static std::unique_ptr<SharedLibrary> open(const LibrarySpec& spec, std::string& error);
  // Opens one file by name (for "lib!symbol" ownership).
  static std::unique_ptr<SharedLibrary> open_file(const std::string& file, std::string& error);

  ~SharedLibrary();
  SharedLibrary(const SharedLibrary&) = delete;
  SharedLibrary& operator=(const SharedLibrary&) = delete;

  // nullptr with a message naming the symbol and the library when missing.
  void* symbol(const std::string& name, const std::string& version, std::string& error) const;
  const std::string& file() const { return file_; }
  const std::string& name() const { return name_; }

 private:
  SharedLibrary(void* handle, std::string file, std::string name) : handle_(handle), file_(std::move(file)), name_(std::move(name)) {}
  void* handle_;
  std::string file_;
  std::string name_;
};

}  // namespace marshal::engine
