// marshal: the typed C++ API, the types a signature is written with.
// marshal::error, out<T>/inout<T> (references to the caller's variable),
// address (an opaque void*), and callback<R(A...)> (any callable).
#pragma once

#include "base/error.hpp"
#include "values/value.hpp"

#include <atomic>
#include <cstdint>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace marshal {

// The engine lives in marshal::engine; the typed API names its types there
// (engine::Value, engine::Context...). Re-exported on purpose, because a user
// handling marshal::error reads them: the error record (error::record()), its
// id (error::id(), compared with marshal::ErrorId::...) and the kind of its
// native code (error::native_kind()).
using engine::Error;
using engine::ErrorId;
using engine::NativeCodeKind;

// The exception of the typed API. It holds the engine's record of the failure
// (base/error.hpp): the id and what is known of the file, JSON Pointer,
// function, parameter, got/expected and native code; what() is its one line.
class error : public std::runtime_error {
 public:
  // A message from the engine: its record when it is this thread's last error,
  // else a record of id `unclassified` holding the message.
  explicit error(const std::string& what) : std::runtime_error(what), record_(record_of(what)) {}
  explicit error(const char* what) : error(std::string(what)) {}
  explicit error(engine::Error record) : std::runtime_error(record.message), record_(std::move(record)) {}

  const engine::Error& record() const { return record_; }
  engine::ErrorId id() const { return record_.id; }
  const char* id_name() const { return engine::error_id_name(record_.id); }
  const std::string& file() const { return record_.file; }
  const std::string& pointer() const { return record_.pointer; }
  const std::string& function() const { return record_.function; }
  int parameter_index() const { return record_.param_index; }
  const std::string& parameter_name() const { return record_.param_name; }
  const std::string& got() const { return record_.got; }
  const std::string& expected() const { return record_.expected; }
  engine::NativeCodeKind native_kind() const { return record_.native_kind; }
  std::int64_t native_code() const { return record_.native_code; }

 private:
  static engine::Error record_of(const std::string& what) {
    const engine::Error& last = engine::last_error();
    if (last.id != engine::ErrorId::none && last.message == what) return last;
    engine::Error e;
    e.id = engine::ErrorId::unclassified;
    e.message = what;
    return e;
  }
  engine::Error record_;
};

// Parameters the callee writes, bound to the caller's variable: out<T> is not
// read before the call, inout<T> is; both are assigned after it. A signature
// says int(marshal::out<std::vector<uint8_t>>, ...) and a call passes the
// variable itself: f(buffer, ...).
namespace detail {
template <class T, bool ReadFirst> class written {
 public:
  using type = T;
  written(T& target) : target_(&target) {}
  T& get() const { return *target_; }

 private:
  T* target_;
};
}  // namespace detail
template <class T> using out = detail::written<T, false>;
template <class T> using inout = detail::written<T, true>;
// An opaque address (C void*), explicit because a raw pointer is ambiguous.
struct address { std::uintptr_t value = 0; };

// A host function passed where the typemap has a callback: any callable,
// capturing lambdas included. Its closure is made on first use and reused while
// this object (or a copy) lives; keep one object to call many times without
// making a closure per call. An exception thrown by the callable reaches native
// code as the signature's on_error value and the host as marshal::error.
namespace detail {
// The closure a callback object keeps for the typed API's direct calls
// (function<>, marshal.hpp): taken once from one library's pool and made
// active around each call of scope "call" (Callback::reactivate), so a call
// passes its code pointer without a pool lookup. `state` and `owner` name
// the library (detail::State) it belongs to.
struct kept_closure {
  const void* state = nullptr;
  std::weak_ptr<const void> owner;
  std::shared_ptr<engine::Callback> closure;
};
// What the copies of a callback share: its host function (made on first use)
// and the closure kept for direct calls (set once, never replaced).
struct callback_state {
  std::shared_ptr<engine::HostFunction> host;
  std::atomic<bool> made{false};  // host is set (copies may be used on several threads at once)
  std::mutex making;
  std::atomic<kept_closure*> kept{nullptr};
  callback_state() = default;
  callback_state(const callback_state&) = delete;
  callback_state& operator=(const callback_state&) = delete;
  ~callback_state() { delete kept.load(); }
};
}  // namespace detail

template <class Sig> class callback;
template <class R, class... A> class callback<R(A...)> {
 public:
  template <class F, class = std::enable_if_t<std::is_invocable_r_v<R, F&, A...>>>
  callback(F f) : fn_(std::move(f)), state_(std::make_shared<detail::callback_state>()) {}
  const std::function<R(A...)>& fn() const { return fn_; }
  std::shared_ptr<engine::HostFunction>& host() const { return state_->host; }
  detail::callback_state& state() const { return *state_; }

 private:
  std::function<R(A...)> fn_;
  std::shared_ptr<detail::callback_state> state_;  // shared by copies
};

template <class Sig> class method;

// A COM-style object held by the host: a native object (one per COM identity,
// so == is identity, whichever interface each side came through) or a host
// object. Methods are called by name with typed arguments: the typemap's
// signature converts them, as for functions. Copies share the object; the
// native reference is released with the last copy.
class object {
 public:
  object() = default;
  explicit object(engine::Value v) : v_(std::move(v)) {}
  // A method of a native object: c.call<int32_t>("Add", 5). out<T>/inout<T>
  // parameters work as for functions; a failed HRESULT throws marshal::error.
  template <class R = void, class... A> R call(const std::string& method, A&&... args) const;
  // A method bound once, for repeated calls: auto add = c.bind<int32_t(int32_t)>("Add"); add(5).
  template <class Sig> marshal::method<Sig> bind(const std::string& name) const;
  // The same object as another interface (QueryInterface by the typemap's iid).
  object as(const std::string& iface) const;
  // The interface a native object was obtained as ("" for host objects).
  std::string interface_name() const;
  bool is_host() const { return v_.is<std::shared_ptr<engine::HostObject>>(); }
  // A reference marshaled from another apartment: calls run there.
  bool is_proxy() const { return v_.is<engine::ObjectRef>() && v_.as<engine::ObjectRef>().proxy != nullptr; }
  explicit operator bool() const { return !v_.is_null(); }
  const engine::Value& value() const { return v_; }
  friend bool operator==(const object& a, const object& b) { return a.v_ == b.v_; }

 private:
  engine::Value v_;
};

// This thread in an apartment for the scope (TYPEMAP.md, Apartments): a new
// single-threaded apartment, whose thread must run its message loop (pump,
// run_until) for calls from other apartments, or the process's multithreaded
// apartment. Leaving an STA fails the calls still queued for it and releases
// what other apartments held through proxies.
class apartment_scope {
 public:
  enum class kind { sta, mta };
  explicit apartment_scope(kind k);
  apartment_scope(const apartment_scope&) = delete;
  apartment_scope& operator=(const apartment_scope&) = delete;
  ~apartment_scope();
  std::size_t pump(std::chrono::milliseconds wait = std::chrono::milliseconds(0));
  void run_until(const std::function<bool()>& done);
  void wake();

 private:
  std::shared_ptr<engine::Apartment> a_;
};

// A token for an object reference, made in the reference's apartment; another
// apartment turns it, once, into a proxy (or the object itself, back home).
std::uint64_t marshal_interface(const object& obj);
object unmarshal_interface(std::uint64_t token);

}  // namespace marshal
