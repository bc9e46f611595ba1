// marshal engine: the context.
// Explicit state: the type registry and every typemap loaded into it. No globals.
#pragma once

#include "abi/abi.hpp"
#include "types/registry.hpp"
#include "types/typemap.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace marshal::engine {

struct LoadResult {
  const Typemap* typemap = nullptr;  // set when errors is empty
  std::vector<Diagnostic> errors;
  bool ok() const { return typemap != nullptr; }
};

class Context {
 public:
  Context() = default;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Reads, validates and resolves a typemap; on failure reports every error found.
  LoadResult load_file(const std::string& path);
  LoadResult load_text(std::string_view text, const std::string& file);

  const TypeRegistry& types() const { return registry_; }
  FfiTypes& ffi() { return ffi_; }
  // A nul-terminated string type of an encoding (for variadic string arguments).
  TypeId string_type(Encoding e);
  // A variadic argument's type expression, read against a loaded typemap of
  // this context (once per distinct expression); no_type and a message when bad.
  TypeId variadic_type(const Typemap& tm, const nlohmann::ordered_json& expr, std::string& error);
  static constexpr std::size_t max_variadic_types = 4096;

 private:
  TypeRegistry registry_;
  FfiTypes ffi_;
  std::mutex load_mutex_;
  std::vector<std::unique_ptr<Typemap>> typemaps_;
  std::map<std::string, std::pair<TypeId, std::string>> variadic_types_;  // variadic_type: typemap:expression
};

}  // namespace marshal::engine
