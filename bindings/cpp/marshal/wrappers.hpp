// marshal: the typed C++ API, the types a signature is written with.
// marshal::error, out<T>/inout<T> (references to the caller's variable),
// address (an opaque void*), and callback<R(A...)> (any callable).
#pragma once

#include "value.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace marshal {

class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
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
template <class Sig> class callback;
template <class R, class... A> class callback<R(A...)> {
 public:
  template <class F, class = std::enable_if_t<std::is_invocable_r_v<R, F&, A...>>>
  callback(F f) : fn_(std::move(f)), host_(std::make_shared<std::shared_ptr<HostFunction>>()) {}
  const std::function<R(A...)>& fn() const { return fn_; }
  std::shared_ptr<HostFunction>& host() const { return *host_; }

 private:
  std::function<R(A...)> fn_;
  std::shared_ptr<std::shared_ptr<HostFunction>> host_;  // shared by copies
};

}  // namespace marshal
