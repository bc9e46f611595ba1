// marshal: the typed C++ API.
// Binds native exports to C++ callables with compile-time signatures. With a
// typemap, the C++ signature is checked against it when binding; without one
// (plain_library), only unambiguous blittable types are accepted, at compile
// time. Calls whose arguments and return are all blittable take a fast path:
// the prepared CIF and the C++ arguments themselves, no conversion, no
// allocation. Everything else goes through the engine's dynamic values and the
// same plan as every other binding.
#pragma once

#include "marshal/detail.hpp"
#include "marshal/wrappers.hpp"

namespace marshal {

template <class Sig> class function;
class library;
class plain_library;

template <class R, class... A>
class function<R(A...)> {
 public:
  static constexpr bool fast = (detail::blittable<std::remove_cvref_t<A>>() && ...) &&
                               (std::is_void_v<R> || detail::blittable<R>());

  R operator()(A... args) const {
    if constexpr (fast) {
      if (!cif_) return slow(args...);  // the plan lowers some argument (abi.hpp)
      // Blittable: the C++ arguments are the native arguments.
      void* av[sizeof...(A) > 0 ? sizeof...(A) : 1] = {const_cast<void*>(static_cast<const void*>(&args))...};
      alignas(16) unsigned char rbuf[(sizeof(std::conditional_t<std::is_void_v<R>, char, R>) > 16
                                          ? sizeof(std::conditional_t<std::is_void_v<R>, char, R>) : 16)];
      ffi_call(const_cast<ffi_cif*>(cif_), FFI_FN(symbol_), rbuf, av);
      if constexpr (!std::is_void_v<R>) return detail::read_return<R>(rbuf);
    } else {
      return slow(args...);
    }
  }

 private:
  friend class library;
  friend class plain_library;

  R slow(A&... args) const {
    const TypeRegistry& reg = plan_->types();
    const Function& fn = plan_->function();
    std::vector<Value> values;
    values.reserve(sizeof...(A));
    std::size_t i = 0;
    (push_arg(reg, fn, i++, args, values), ...);
    CallResult result;
    std::string err;
    if (!plan_->call(values, result, err)) throw error(err);
    i = 0;
    std::size_t out_index = 0;
    (copy_back(reg, fn, i++, args, result, out_index), ...);
    if constexpr (!std::is_void_v<R>) return detail::from_value<R>(reg, fn.returns, result.ret);
  }

  template <class T>
  static void push_arg(const TypeRegistry& reg, const Function& fn, std::size_t i, T& a, std::vector<Value>& values) {
    using U = std::remove_cvref_t<T>;
    if constexpr (detail::is_out<U>::value) {
      return;
    } else if constexpr (detail::is_inout<U>::value) {
      values.push_back(detail::to_value(reg, detail::value_type(reg, fn.params[i].type), a.get()));
    } else {
      values.push_back(detail::to_value(reg, detail::value_type(reg, fn.params[i].type), a));
    }
  }

  template <class T>
  static void copy_back(const TypeRegistry& reg, const Function& fn, std::size_t i, T& a, const CallResult& result,
                        std::size_t& out_index) {
    using U = std::remove_cvref_t<T>;
    if constexpr (detail::is_out<U>::value || detail::is_inout<U>::value) {
      const Value& v = result.out.at(out_index++).second;
      a.get() = detail::from_value<typename U::type>(reg, detail::value_type(reg, fn.params[i].type), v);
    }
  }

  const Plan* plan_ = nullptr;
  const ffi_cif* cif_ = nullptr;
  void* symbol_ = nullptr;
  std::shared_ptr<detail::State> keep_;  // the library outlives its functions
};

// A library described by a typemap: every signature is checked against it.
class library {
 public:
  explicit library(const std::string& typemap_path);
  Context& context();
  const Typemap& typemap() const;

  template <class Sig> marshal::function<Sig> function(const std::string& name) const {
    return bind(name, static_cast<Sig*>(nullptr));
  }

 private:
  template <class R, class... A> marshal::function<R(A...)> bind(const std::string& name, R (*)(A...)) const {
    (detail::check_usable<A, true>(), ...);
    if constexpr (!std::is_void_v<R>) detail::check_usable<R, true>();
    const Plan* plan = plan_of(name);
    const Function& fn = plan->function();
    const TypeRegistry& reg = plan->types();
    if (fn.params.size() != sizeof...(A))
      throw error(typemap().file + ": " + name + ": the C++ signature has " + std::to_string(sizeof...(A)) +
                  " parameters, the typemap " + std::to_string(fn.params.size()));
    std::size_t i = 0;
    (check_param<A>(reg, fn, i++), ...);
    if (std::string why = detail::mismatch<R>(reg, fn.returns); !why.empty())
      throw error(typemap().file + ": " + name + ": return: " + why);
    marshal::function<R(A...)> f;
    f.plan_ = plan;
    f.cif_ = plan->cif();
    f.symbol_ = plan->symbol();
    f.keep_ = state_;
    if (fn.variadic_from >= 0)
      throw error(typemap().file + ": " + name + ": variadic functions cannot be bound with a fixed C++ signature");
    return f;
  }

  template <class T> void check_param(const TypeRegistry& reg, const Function& fn, std::size_t i) const {
    using U = std::remove_cvref_t<T>;
    const Param& p = fn.params[i];
    const std::string where = typemap().file + ": " + fn.name + ": parameter " + std::to_string(i) + " '" + p.name + "': ";
    const bool writes = detail::is_out<U>::value || detail::is_inout<U>::value;
    const Dir want = detail::is_out<U>::value ? Dir::out : detail::is_inout<U>::value ? Dir::inout : Dir::in;
    if (p.dir != want)
      throw error(where + "the typemap says " + std::string(dir_name(p.dir)) + ", the C++ signature " +
                  std::string(dir_name(want)) + (p.dir != Dir::in && !writes ? " (use marshal::out<T> or inout<T>)" : ""));
    TypeId t = p.type;
    if (reg.get(t).kind == Kind::ptr) t = reg.get(t).ref;
    std::string why;
    if constexpr (detail::is_out<U>::value || detail::is_inout<U>::value) why = detail::mismatch<typename U::type>(reg, t);
    else why = detail::mismatch<U>(reg, t);
    if (!why.empty()) throw error(where + why);
    if constexpr (detail::blittable<U>()) {
      if (reg.get(p.type).kind == Kind::ptr) throw error(where + "the typemap passes a pointer; use out<T> or inout<T>");
    }
  }

  const Plan* plan_of(const std::string& name) const;
  std::shared_ptr<detail::State> state_;
};

// A library without a typemap: blittable signatures only, checked at compile time.
class plain_library {
 public:
  explicit plain_library(const std::string& file);

  template <class Sig> marshal::function<Sig> function(const std::string& name) const {
    return bind(name, static_cast<Sig*>(nullptr));
  }

 private:
  template <class R, class... A> marshal::function<R(A...)> bind(const std::string& name, R (*)(A...)) const {
    (detail::check_usable<A, false>(), ...);
    if constexpr (!std::is_void_v<R>) detail::check_usable<R, false>();
    static_assert(marshal::function<R(A...)>::fast,
                  "marshal: without a typemap only blittable signatures can be bound (numbers, enums, "
                  "aggregates and std::array of those)");
    marshal::function<R(A...)> f;
    f.symbol_ = symbol_of(name);
    f.keep_ = state_;
    ffi_type* args[sizeof...(A) > 0 ? sizeof...(A) : 1] = {ffi_of<std::remove_cvref_t<A>>()...};
    f.cif_ = prepare(ffi_of<R>(), sizeof...(A), args);
    return f;
  }
  template <class T> ffi_type* ffi_of() const {
    std::lock_guard lock(state_->mutex);
    return state_->ffi.get<T>();
  }
  const ffi_cif* prepare(ffi_type* r, std::size_t n, ffi_type** args) const;
  void* symbol_of(const std::string& name) const;
  std::shared_ptr<detail::State> state_;
};

}  // namespace marshal
