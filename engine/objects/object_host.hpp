// marshal engine: what an object space needs of the library it belongs to.
// The call layer's Library implements it: objects call their methods and their
// classes' factory functions through the library's plans, which sit above them.
#pragma once

#include "values/call_values.hpp"
#include "types/typemap.hpp"

#include <memory>
#include <span>
#include <string>

namespace marshal::engine {

class Context;
class HandleTable;
class ObjectSpace;

class ObjectHost {
 public:
  virtual ~ObjectHost() = default;
  virtual const Typemap& typemap() const = 0;
  virtual Context& context() = 0;
  virtual HandleTable& handles() = 0;
  virtual ObjectSpace& objects() = 0;
  // The largest buffer for one value of a call (bounds.hpp).
  virtual std::size_t max_buffer() const = 0;
  // What keeps the library loaded while wrappers, proxies and vtables exist.
  virtual std::shared_ptr<ObjectHost> keep_loaded() = 0;
  // Calls method m, declared by `owner`, on native `self` through `target` (its
  // vtable slot): the arity is checked against the host-supplied parameters.
  virtual bool call_method(const Interface& owner, const Method& m, void* self, void* target,
                           std::span<const Value* const> args, CallResult& result, std::string& error) = 0;
  // Calls a function of the typemap by name (a class's factory).
  virtual bool call_function(const std::string& name, std::span<const Value> args, CallResult& result,
                             std::string& error) = 0;
};

}  // namespace marshal::engine
