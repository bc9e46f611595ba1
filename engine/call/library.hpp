// marshal engine: a typemap's library, loaded.
#pragma once

#include "abi/shared_library.hpp"
#include "call/plan.hpp"
#include "callbacks/callback.hpp"
#include "objects/object.hpp"
#include "typemap/context.hpp"
#include "values/handles.hpp"

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace marshal::engine {

// A typemap's library, loaded: binds functions to plans (lazily, once each),
// keeps handle identity, and resolves free/release functions.
class Library final : public ObjectHost, public std::enable_shared_from_this<Library> {
 public:
  static std::shared_ptr<Library> open(Context& ctx, const Typemap& tm, std::string& error);

  // The plan for a function of the typemap, built on first use; nullptr with a
  // message (unknown function, missing symbol, a type libffi cannot express).
  const Plan* bind(const std::string& function, std::string& error);
  // The plan for a method of an interface (`iface` declares it), built on first use.
  const Plan* bind_method(const Interface& iface, const Method& method, std::string& error);
  // Every symbol of the typemap that cannot be resolved, as messages.
  std::vector<std::string> missing_symbols();

  const Typemap& typemap() const override { return tm_; }
  // Guard mode (guard.hpp) for this library's calls: on when the typemap's
  // library says "guard": true or MARSHAL_GUARD is set, or turned on here.
  void set_guard(bool on) { guard_.store(on, std::memory_order_relaxed); }
  bool guarded() const { return guard_.load(std::memory_order_relaxed); }
  // The largest buffer the engine allocates, copies or reads for one value of
  // a call: the typemap's "max_buffer", else the default (bounds.hpp). A host
  // may change it at any time (0 restores the default); calls read it once.
  std::size_t max_buffer() const override { return max_buffer_.load(std::memory_order_relaxed); }
  void set_max_buffer(std::size_t bytes) { max_buffer_.store(bytes ? bytes : default_max_buffer, std::memory_order_relaxed); }
  // A registered callback of signature `sig` calling fn, active until released.
  std::shared_ptr<Callback> callback(const std::string& sig, std::shared_ptr<HostFunction> fn, std::string& error);
  CallbackPool& callbacks() { return callbacks_; }
  Context& context() override { return ctx_; }
  // What ctx_ and tm_ live in, when the library's owner may go first (the C
  // API's context): held to the end, dropped after every other member.
  void keep_alive(std::shared_ptr<const void> owner) { keep_alive_ = std::move(owner); }
  HandleTable& handles() override { return handles_; }
  ObjectSpace& objects() override { return objects_; }
  std::shared_ptr<ObjectHost> keep_loaded() override { return shared_from_this(); }
  bool call_method(const Interface& owner, const Method& m, void* self, void* target,
                   std::span<const Value* const> args, CallResult& result, std::string& error) override;
  bool call_function(const std::string& name, std::span<const Value> args, CallResult& result,
                     std::string& error) override;

  Library(Context& ctx, const Typemap& tm, std::unique_ptr<SharedLibrary> so);

 private:
  friend class Plan;
  bool resolve_free(const FreeWith& fw, Releaser& out, std::string& error);
  std::function<void(std::int64_t)> handle_releaser(TypeId type);
  std::unique_ptr<Plan> build(const Function& fn, void* symbol, bool method, std::string& error);
  void bind_failed(const std::string& function, const std::string& error) const;

  std::shared_ptr<const void> keep_alive_;  // first: destroyed last
  Context& ctx_;
  const Typemap& tm_;
  std::unique_ptr<SharedLibrary> so_;
  HandleTable handles_;
  CallbackPool callbacks_;
  std::atomic<std::size_t> max_buffer_;
  std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Plan>> plans_;
  std::map<const Method*, std::pair<std::unique_ptr<Function>, std::unique_ptr<Plan>>> method_plans_;
  // Method plans once built, read without the lock: a slot per method of the
  // typemap (Method::ordinal); a plan serves only the method it was built for.
  std::unique_ptr<std::atomic<const Plan*>[]> method_cache_;
  std::map<std::string, std::unique_ptr<SharedLibrary>> others_;  // "lib!symbol" owners
  std::atomic<bool> guard_{guard_from_environment()};
  ObjectSpace objects_{*this};  // last: its wrappers use everything above
};

}  // namespace marshal::engine
