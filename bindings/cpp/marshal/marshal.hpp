// marshal: the typed C++ API.
// Binds native exports to C++ callables with compile-time signatures. With a
// typemap, the C++ signature is checked against it when binding; without one
// (plain_library), only unambiguous blittable types are accepted, at compile
// time. Calls whose arguments and return are all blittable take a fast path:
// the prepared CIF and the C++ arguments themselves, no conversion, no
// allocation. So do pinned `in` arrays and strings, and out data of plain
// elements written in place into the caller's vector or variable (see
// Plan::in_place). Everything else goes through the engine's dynamic values and
// the same plan as every other binding.
#pragma once

#include "marshal/detail.hpp"
#include "marshal/wrappers.hpp"

namespace marshal {

template <class Sig> class function;
class library;
class plain_library;
template <class C> class host_object;

template <class R, class... A>
class function<R(A...)> {
 public:
  static constexpr bool fast = (detail::blittable<std::remove_cvref_t<A>>() && ...) &&
                               (std::is_void_v<R> || detail::blittable<R>());
  // Blittable values plus pinned arrays and UTF-8 strings: a direct call too.
  static constexpr bool pinnable = !fast && (detail::passes_direct<std::remove_cvref_t<A>>() && ...) &&
                                   (std::is_void_v<R> || detail::blittable<R>());
  // Blittable values plus callbacks of scope "call": a direct call too, each
  // callback passed as the code of the closure its callback object keeps
  // (active for the call, released when it returns, as the engine does).
  static constexpr bool with_callbacks =
      !fast && !pinnable && (detail::is_callback<std::remove_cvref_t<A>>::value || ...) &&
      ((detail::blittable<std::remove_cvref_t<A>>() || detail::is_callback<std::remove_cvref_t<A>>::value) && ...) &&
      (std::is_void_v<R> || detail::blittable<R>());

  R operator()(A... args) const {
    if constexpr (pinnable) {
      if (pinned_ && (detail::pinnable_value(args) && ...)) {
        // Counts come from the caller's integer arguments: each pinned array
        // must hold at least that many elements (the engine's own check).
        const std::int64_t ints[sizeof...(A)] = {detail::integral_or_zero(args)...};
        const std::size_t sizes[sizeof...(A)] = {detail::size_or_zero(args)...};
        for (std::size_t i = 0; i < sizeof...(A); ++i) {
          const std::int64_t want = counts_[i] >= 0 ? ints[counts_[i]] : counts_[i] == -1 ? 0 : -counts_[i] - 2;
          if (want < 0 || static_cast<std::uint64_t>(want) > sizes[i])
            throw error(plan_->function().name + ": parameter " + std::to_string(i) + " '" +
                        plan_->function().params[i].name + "': the array has " + std::to_string(sizes[i]) +
                        " elements but its count is " + std::to_string(want));
        }
        using Native = R (*)(detail::native_t<A>...);
        if constexpr (in_place) {
          // Out data in place: each count checked as the engine checks it
          // (else the engine's path reports it), then the caller's storage
          // sized by that count, never by what the caller or callee claims.
          if (plan_->guarded()) return slow(args...);
          std::uint64_t caps[sizeof...(A) + 1] = {};
          std::size_t k = 0;
          bool ok = true;
          ((ok = ok && admit(k, args, ints, caps[k]), ++k), ...);
          if (!ok) return slow(args...);
          k = 0;
          (size_before(k++, args, caps), ...);
          alignas(std::max_align_t) unsigned char empty[alignof(std::max_align_t)] = {};
          if constexpr (std::is_void_v<R>) {
            reinterpret_cast<Native>(symbol_)(detail::native_arg(args, empty)...);
            k = 0;
            (size_after(k++, args, caps, 0), ...);
            return;
          } else {
            R r = reinterpret_cast<Native>(symbol_)(detail::native_arg(args, empty)...);
            std::int64_t ret = 0;
            if constexpr (std::is_integral_v<R>) ret = static_cast<std::int64_t>(r);
            k = 0;
            (size_after(k++, args, caps, ret), ...);
            return r;
          }
        } else {
          alignas(std::max_align_t) unsigned char empty[alignof(std::max_align_t)] = {};
          return reinterpret_cast<Native>(symbol_)(detail::native_arg(args, empty)...);
        }
      }
      if constexpr (host_scalars)
        if (laned_) return through_lane(args...);
      return slow(args...);
    } else if constexpr (fast) {
      // The specialized invoker: the C++ types were checked against the
      // typemap when binding and are blittable, so the C++ compiler's call
      // through this function type is the C call (the same registers and
      // stack, struct classification included; the fixture tests compare it
      // with libffi for every blittable signature they have).
      if (direct_) return reinterpret_cast<R (*)(std::remove_cvref_t<A>...)>(symbol_)(args...);
      if (!cif_) {  // a check, errno, or an argument the plan lowers (abi.hpp)
        if constexpr (host_scalars)
          if (laned_) return through_lane(args...);
        return slow(args...);
      }
      // Blittable: the C++ arguments are the native arguments.
      void* av[sizeof...(A) > 0 ? sizeof...(A) : 1] = {const_cast<void*>(static_cast<const void*>(&args))...};
      alignas(16) unsigned char rbuf[(sizeof(std::conditional_t<std::is_void_v<R>, char, R>) > 16
                                          ? sizeof(std::conditional_t<std::is_void_v<R>, char, R>) : 16)];
      ffi_call(const_cast<ffi_cif*>(cif_), FFI_FN(symbol_), rbuf, av);
      if constexpr (!std::is_void_v<R>) return detail::read_return<R>(rbuf);
    } else if constexpr (with_callbacks) {
      if (callbacks_direct_) return call_with_callbacks(args...);
      return slow(args...);
    } else if constexpr (host_scalars) {
      if (laned_) return through_lane(args...);
      return slow(args...);
    } else {
      return slow(args...);
    }
  }

 private:
  friend class library;
  friend class plain_library;

  // Scalars (bool included) and std::string only, a scalar or void result:
  // arguments the engine's scalar lane takes as host scalars (host_io.hpp),
  // text by view, without a Value per argument (a UTF-16 or UTF-32 string
  // parameter: transcoded into the plan's stack scratch). Values are made only
  // when the plan asks for them (a value the lane refuses: the general path).
  // (The fast and pinned forms come first where they apply; this is what
  // they fall back to before the Values of slow().)
  static constexpr bool host_scalars =
      ((detail::scalar_v<std::remove_cvref_t<A>> || std::is_same_v<std::remove_cvref_t<A>, std::string>) && ...) &&
      (std::is_void_v<R> || detail::scalar_v<R>);
  class scalar_args final : public engine::HostArgs {
   public:
    scalar_args(const function& f, A&... args) : f_(f), args_(args...) {
      std::size_t k = 0;
      ((s_[k++] = scalar_of(args)), ...);
    }
    std::size_t size() const override { return sizeof...(A); }
    void scalar(std::size_t i, engine::HostScalar& out) const override { out = s_[i]; }
    const engine::Value& value(std::size_t i) const override {
      if (values_.empty()) {
        values_.reserve(sizeof...(A));
        std::apply([&](auto&... a) {
          std::size_t k = 0;
          (detail::push_arg(*f_.reg_, *f_.fn_, detail::cpp_param(*f_.fn_, k++), a, values_), ...);
        }, args_);
      }
      return values_[i];
    }

   private:
    template <class T> static engine::HostScalar scalar_of(const T& v) {
      if constexpr (std::is_same_v<std::remove_cvref_t<T>, std::string>) return engine::HostScalar::of_text(v);
      else return detail::to_scalar(v);
    }
    const function& f_;
    std::tuple<A&...> args_;
    engine::HostScalar s_[sizeof...(A) + 1];
    mutable std::vector<engine::Value> values_;
  };
  // The return: a scalar from the lane, or a Value from the general path.
  class scalar_result final : public engine::HostResults {
   public:
    void scalar(int, const engine::HostScalar& s) override { ret = s; }
    void value(int, engine::Value&& v) override {
      value_ = std::move(v);
      has_value = true;
    }
    engine::HostScalar ret;
    engine::Value value_;
    bool has_value = false;
  };
  R through_lane(A&... args) const {
    scalar_args in(*this, args...);
    scalar_result out;
    std::string err;
    if (!plan_->call(static_cast<const engine::HostArgs&>(in), static_cast<engine::HostResults&>(out), err))
      throw error(err);
    if constexpr (!std::is_void_v<R>) {
      if (out.has_value) return detail::from_value<R>(*reg_, fn_->returns, out.value_);
      return detail::from_scalar<R>(out.ret);
    }
  }

  // ---- callbacks passed directly (with_callbacks) ----
  template <class T> using direct_t =
      std::conditional_t<detail::is_callback<std::remove_cvref_t<T>>::value, void*, std::remove_cvref_t<T>>;
  // The closures made active for one call: released when it returns, whatever
  // way (scope "call"; a late call from native code reaches the trap).
  struct held_closures {
    engine::Callback* held[sizeof...(A) + 1] = {};
    std::size_t n = 0;
    void release() {
      for (std::size_t i = 0; i < n; ++i) held[i]->release();
      n = 0;
    }
    ~held_closures() { release(); }
  };
  // The code of the closure that callback argument k's object keeps for this
  // library, made active for this call; false (nothing taken) where the
  // engine's path decides: the first closure cannot be had (the pool's limit:
  // its error), the object keeps a closure of another library or signature,
  // or another call has its closure active now (the engine takes another).
  template <class T> bool take_closure(std::size_t k, T& a, held_closures& held, void*& code) const {
    if constexpr (detail::is_callback<std::remove_cvref_t<T>>::value) {
      const engine::CallbackSig& sig = *callback_sigs_[k];
      detail::callback_state& st = a.state();
      const std::shared_ptr<engine::HostFunction>& host = detail::host_of(a, *reg_, &sig);
      detail::kept_closure* kept = st.kept.load(std::memory_order_acquire);
      if (!kept) {
        std::string err;
        std::shared_ptr<engine::Callback> cb = keep_->lib->callbacks().acquire(sig, host, err);  // active
        if (!cb) return false;
        auto* mine = new detail::kept_closure{keep_.get(), keep_, cb};
        detail::kept_closure* none = nullptr;
        if (!st.kept.compare_exchange_strong(none, mine, std::memory_order_acq_rel)) {
          cb->release();  // another thread kept one first
          delete mine;
          return false;
        }
        held.held[held.n++] = cb.get();
        code = cb->code();
        return true;
      }
      engine::Callback& cb = *kept->closure;
      if (kept->state != keep_.get() || kept->owner.expired() || &cb.signature() != &sig || !cb.reactivate())
        return false;
      held.held[held.n++] = &cb;
      code = cb.code();
      return true;
    } else {
      (void)k, (void)a, (void)held, (void)code;
      return true;
    }
  }
  template <class T> static direct_t<T> direct_arg(const T& a, void* code) {
    if constexpr (detail::is_callback<std::remove_cvref_t<T>>::value) {
      (void)a;
      return code;
    } else {
      (void)code;
      return a;
    }
  }
  // A host callback that failed inside the call (native code got its
  // on_error value): thrown now, in the words of the engine's path.
  void callback_failure() const {
    std::string text;
    if (!engine::callback_error_pending() || !engine::callback_take_error(text)) return;
    const engine::Typemap& tm = *keep_->typemap;
    engine::Error e = engine::error_for(text);
    e.message = tm.file + ": " + fn_->name + ": " + text;
    e.file = tm.file;
    e.function = fn_->name;
    std::string message;
    engine::set_error(message, std::move(e));
    throw error(message);
  }
  R call_with_callbacks(A&... args) const {
    {
      held_closures held;
      void* codes[sizeof...(A) + 1] = {};
      std::size_t k = 0;
      bool ok = true;
      ((ok = ok && take_closure(k, args, held, codes[k]), ++k), ...);
      if (ok) {
        if (engine::callback_error_pending()) {
          std::string stale;
          engine::callback_take_error(stale);  // a failure from an earlier call is not this call's
        }
        using Native = R (*)(direct_t<A>...);
        auto target = reinterpret_cast<Native>(symbol_);
        auto call = [&]<std::size_t... I>(std::index_sequence<I...>) { return target(direct_arg(args, codes[I])...); };
        if constexpr (std::is_void_v<R>) {
          call(std::index_sequence_for<A...>{});
          held.release();
          callback_failure();
          return;
        } else {
          R r = call(std::index_sequence_for<A...>{});
          held.release();
          callback_failure();
          return r;
        }
      }
    }
    return slow(args...);
  }

  static constexpr bool in_place = (detail::in_place_arg<std::remove_cvref_t<A>>::value || ...);

  // In-place out data (see Plan::in_place): the element count the engine
  // would give the callee for array parameter k; false where the engine
  // refuses it or an inout vector holds fewer elements (its path reports it).
  template <class T> bool admit(std::size_t k, const T& v, const std::int64_t* ints, std::uint64_t& cap) const {
    using U = std::remove_cvref_t<T>;
    if constexpr (detail::in_place_arg<U>::value && (detail::in_place_arg<U>::array || detail::in_place_arg<U>::string)) {
      const int from = places_[k].count_param;
      if (!plan_->in_place_count(k, from >= 0 ? ints[from] : 0, cap)) return false;
      if constexpr (detail::in_place_arg<U>::string) return cap > 0;  // an empty buffer: the engine's path (1 byte)
      if constexpr (detail::is_inout<U>::value) return v.get().size() >= cap;
    }
    (void)k, (void)v, (void)ints, (void)cap;
    return true;
  }
  // Out storage as the engine gives it to the callee: zeroed, `cap` elements.
  template <class T> void size_before(std::size_t k, const T& v, const std::uint64_t* caps) const {
    using U = std::remove_cvref_t<T>;
    if constexpr (detail::in_place_arg<U>::value && detail::is_out<U>::value) {
      if constexpr (detail::in_place_arg<U>::string) {
        v.get().assign(static_cast<std::size_t>(caps[k]), '\0');  // the string's own buffer, reused call after call
      } else if constexpr (detail::in_place_arg<U>::array) {
        v.get().clear();
        v.get().resize(static_cast<std::size_t>(caps[k]));
      } else {
        v.get() = typename U::type{};
      }
    }
    (void)k, (void)v, (void)caps;
  }
  // After the call: the count, or the length the callee reports, checked by
  // the engine against the count (a vector is never read past it).
  template <class T> void size_after(std::size_t k, const T& v, const std::uint64_t* caps, std::int64_t ret) const {
    using U = std::remove_cvref_t<T>;
    if constexpr (detail::in_place_arg<U>::value && detail::in_place_arg<U>::string) {
      // Up to the terminator (the whole buffer without one): plain ASCII is
      // the text as it is; anything else is read by the engine, which
      // decodes and checks it exactly as its own path does.
      std::string& s = v.get();
      const auto cap = static_cast<std::size_t>(caps[k]);
      const void* nul = std::memchr(s.data(), 0, cap);
      const std::size_t n = nul ? static_cast<std::size_t>(static_cast<const char*>(nul) - s.data()) : cap;
      if (engine::plain_ascii(std::string_view(s.data(), n))) {
        s.resize(n);
      } else {
        std::string text, err;
        if (!plan_->in_place_string(k, s.data(), cap, text, err)) {
          s.clear();  // what the callee wrote is not trusted
          throw error(err);
        }
        s = std::move(text);
      }
    } else if constexpr (detail::in_place_arg<U>::value && detail::in_place_arg<U>::array) {
      std::uint64_t n = caps[k];
      if (places_[k].length_is_return) {
        std::string err;
        if (!plan_->in_place_length(k, ret, caps[k], n, err)) {
          v.get().clear();  // what the callee wrote is not trusted
          throw error(err);
        }
      }
      v.get().resize(static_cast<std::size_t>(n));
    }
    (void)k, (void)v, (void)caps, (void)ret;
  }

  R slow(A&... args) const {
    const engine::TypeRegistry& reg = *reg_;
    const engine::Function& fn = *fn_;
    std::vector<engine::Value> values;
    values.reserve(sizeof...(A));
    std::size_t i = 0;
    (detail::push_arg(reg, fn, detail::cpp_param(fn, i++), args, values), ...);
    engine::CallResult result;
    std::string err;
    if (!(plan_ ? plan_->call(values, result, err) : detail::call_isolated(*keep_, fn.name, values, result, err)))
      throw error(err);
    i = 0;
    std::size_t out_index = 0;
    (detail::copy_back(reg, fn, detail::cpp_param(fn, i++), args, result, out_index), ...);
    (void)out_index;
    if constexpr (!std::is_void_v<R>) return detail::from_value<R>(reg, fn.returns, result.ret);
  }

  const engine::Plan* plan_ = nullptr;  // null: an isolated library's function (called through its surrogate)
  const engine::Function* fn_ = nullptr;
  const engine::TypeRegistry* reg_ = nullptr;
  const ffi_cif* cif_ = nullptr;
  void* symbol_ = nullptr;
  bool direct_ = false;  // called through the C++ function type (fast signatures, default convention)
  bool pinned_ = false;  // pinnable signatures the typemap allows to pass by address
  bool callbacks_direct_ = false;  // with_callbacks signatures called directly (see library::bind)
  bool laned_ = false;  // host_scalars signatures whose plan is laned: through the host adapters (through_lane)
  // Per parameter: the signature of a callback parameter (with_callbacks).
  std::array<const engine::CallbackSig*, sizeof...(A) + 1> callback_sigs_{};
  // Per parameter: the index of the parameter holding a pinned array's count;
  // -1 not an array; -2 - N a constant count N.
  std::array<std::int64_t, sizeof...(A) + 1> counts_{};
  // Per parameter written in place: where an array's count comes from (-1 a
  // constant) and whether its length is the return value.
  struct place {
    int count_param = -1;
    bool length_is_return = false;
  };
  std::array<place, sizeof...(A) + 1> places_{};
  std::shared_ptr<detail::State> keep_;  // the library outlives its functions
};

// How a library is loaded (library(path, {.isolate = isolation::process})).
enum class isolation : std::uint8_t {
  none,     // in this process, unless the typemap's library says "isolate": "process"
  process,  // in a surrogate process (engine/remote): a native crash is an error, not the end of this one
};
struct load_options {
  isolation isolate = isolation::none;
  // Isolated: a call that takes longer is killed with its surrogate and
  // throws; zero: the typemap's library "deadline_ms", else none.
  std::chrono::milliseconds deadline{0};
  // Isolated: the marshal-surrogate program; empty: $MARSHAL_SURROGATE, next
  // to this program, else the installed one.
  std::string surrogate;
  // "HOST:PORT" of a `marshal serve` that serves the same typemap: calls go
  // there instead of to a surrogate process (isolate is implied). Loopback
  // only, unless the tls files are set.
  std::string connect;
  // With connect: mutual TLS, PEM files (all three or none): this client's
  // certificate and key, and the CA the server's certificate must chain to;
  // tls_name: the name the server's certificate must carry (default: the
  // host of connect; kj-tls compares DNS names, so give one for an address).
  std::string tls_cert, tls_key, tls_ca, tls_name;
};

// A library described by a typemap: every signature is checked against it.
// Isolated (load_options, or the typemap's "isolate": "process"), its
// functions are called in a surrogate process with the same results; a
// native crash there throws an error naming the function and the signal, and
// the next call starts a new surrogate. What cannot cross the process
// boundary yet (objects, callbacks, native memory, raw pointers) throws.
class library {
 public:
  explicit library(const std::string& typemap_path, const load_options& options = {});
  engine::Context& context();
  const engine::Typemap& typemap() const;
  // Whether calls run in a surrogate process.
  bool isolated() const { return state_->isolated != nullptr; }

  template <class Sig> marshal::function<Sig> function(const std::string& name) const {
    return bind(name, static_cast<Sig*>(nullptr));
  }

  // An instance of a class of the typemap, through its factory function:
  // lib.create("Counter", 5). The object records the class (and its threading).
  template <class... A> object create(const std::string& cls, const A&... args) const {
    auto it = typemap().classes.find(cls);
    std::vector<engine::Value> values;
    if (it != typemap().classes.end()) {
      const engine::Function& fn = *it->second.create;
      const engine::TypeRegistry& reg = state_->ctx->types();
      // The arguments are the factory's in/inout parameters, in order (its out
      // parameter yields the object); extra ones go to the engine's arity check.
      std::size_t i = 0;
      auto push = [&](const auto& a) {
        while (i < fn.params.size() && !fn.params[i].host_supplied()) ++i;
        if (i < fn.params.size()) detail::push_arg(reg, fn, i++, a, values);
        else values.push_back(engine::Value());
      };
      (push(args), ...);
      (void)push;
    }
    engine::Value out;
    std::string err;
    // Isolated: made in the surrogate; the object is a proxy whose calls go there.
    if (!(state_->lib ? state_->lib->objects().create(cls, values, out, err)
                      : detail::create_isolated(*state_, cls, values, out, err)))
      throw error(err);
    return object(std::move(out));
  }

  // A host object for native code: the member functions of C (bound with
  // .method("Add", &C::Add)) implement the typemap's interfaces. The host
  // object keeps self alive; native references (AddRef) keep the host object
  // alive; native code handing it back gives the same marshal::object.
  template <class C> host_object<C> implement(std::shared_ptr<C> self, std::vector<std::string> interfaces) const {
    return host_object<C>(state_, std::move(self), std::move(interfaces));
  }

 private:
  template <class R, class... A> marshal::function<R(A...)> bind(const std::string& name, R (*)(A...)) const {
    (detail::check_usable<A, true>(), ...);
    if constexpr (!std::is_void_v<R>) detail::check_usable<R, true>();
    const engine::Plan* plan = isolated() ? nullptr : plan_of(name);  // isolated: the surrogate binds it
    const engine::Function& fn = plan ? plan->function() : function_of(name);
    const engine::TypeRegistry& reg = plan ? plan->types() : state_->ctx->types();
    // Parameters the engine computes (Param::value) are not in the C++ signature.
    if (detail::cpp_arity(fn) != sizeof...(A))
      throw error(typemap().file + ": " + name + ": the C++ signature has " + std::to_string(sizeof...(A)) +
                  " parameters, the typemap " + std::to_string(detail::cpp_arity(fn)) +
                  (detail::cpp_arity(fn) != fn.params.size() ? " (and " + std::to_string(fn.params.size() - detail::cpp_arity(fn)) +
                   " the engine computes, which the C++ signature leaves out)" : std::string()));
    std::size_t i = 0;
    (check_param<A>(reg, fn, detail::cpp_param(fn, i++)), ...);
    if (std::string why = detail::mismatch<R>(reg, fn.returns); !why.empty())
      throw error(typemap().file + ": " + name + ": return: " + why);
    marshal::function<R(A...)> f;
    f.plan_ = plan;
    f.fn_ = &fn;
    f.reg_ = &reg;
    f.keep_ = state_;
    if (fn.variadic_from >= 0)
      throw error(typemap().file + ": " + name + ": variadic functions cannot be bound with a fixed C++ signature");
    if (!plan) return f;  // isolated: every call goes through the engine's values and the surrogate
    f.cif_ = plan->cif();
    f.symbol_ = plan->symbol();
    // A declared check or errno needs the plan; so does a non-default convention.
    // ... and so does a computed parameter: the C++ arguments are not the C ones.
    const bool plain_call = fn.check.when == engine::Check::When::never && !fn.capture_errno &&
                            detail::cpp_arity(fn) == fn.params.size();
    if (!plain_call) f.cif_ = nullptr;
    f.direct_ = plain_call && fn.callconv == engine::CallConv::default_ && fn.variadic_from < 0;
    if constexpr (marshal::function<R(A...)>::host_scalars) {
      // The plan's arguments are the C++ ones, in order (no out parameter in
      // a signature of scalars and strings; a laned plan computes nothing).
      f.laned_ = plan->laned() && plan->host_arity() == sizeof...(A) && detail::cpp_arity(fn) == sizeof...(A);
    }
    if constexpr (marshal::function<R(A...)>::with_callbacks) {
      // Directly: a plain call (as for fast signatures) whose callbacks are of
      // scope "call" (a registered one is the engine's, which refuses a host function).
      bool ok = f.direct_;
      std::size_t k = 0;
      auto check = [&]<class T>(T*) {
        if constexpr (detail::is_callback<std::remove_cvref_t<T>>::value) {
          const engine::TypeDesc& d = reg.get(fn.params[k].type);
          ok = ok && fn.params[k].dir == engine::Dir::in && d.kind == engine::Kind::callback &&
               d.as<engine::CallbackInfo>().scope == engine::Scope::call;
          if (ok) f.callback_sigs_[k] = d.as<engine::CallbackInfo>().sig;
        }
        ++k;
      };
      (check(static_cast<std::remove_reference_t<A>*>(nullptr)), ...);
      (void)check;
      f.callbacks_direct_ = ok;
    }
    if constexpr (marshal::function<R(A...)>::pinnable) {
      // Pinned: each array is an `in` array counted by an integer parameter
      // (or a constant), each string an `in` UTF-8 string; else the engine path.
      bool ok = f.direct_;
      std::size_t k = 0;
      constexpr bool integral[sizeof...(A) + 1] = {std::is_integral_v<std::remove_cvref_t<A>>..., false};
      auto check = [&]<class T>(T*) {
        using U = std::remove_cvref_t<T>;
        const engine::Param& p = fn.params[k];
        const engine::TypeDesc& d = reg.get(p.type);
        f.counts_[k] = -1;
        if constexpr (std::is_same_v<U, std::string>) {
          ok = ok && p.dir == engine::Dir::in && d.kind == engine::Kind::string && d.as<engine::StringInfo>().encoding == engine::Encoding::utf8 &&
               !d.as<engine::StringInfo>().capacity.present() && !p.nullable;
        } else if constexpr (detail::pinned_arg<U>::value) {
          const engine::Count& c = d.kind == engine::Kind::array ? d.as<engine::ArrayInfo>().count : engine::Count{};
          ok = ok && p.dir == engine::Dir::in && d.kind == engine::Kind::array && !p.nullable &&
               (c.source == engine::Count::Source::param || c.source == engine::Count::Source::constant);
          if (ok && c.source == engine::Count::Source::param) {
            const engine::TypeDesc& cd = reg.get(fn.params[c.index].type);
            ok = cd.kind == engine::Kind::integer && fn.params[c.index].dir == engine::Dir::in;
            f.counts_[k] = static_cast<std::int64_t>(c.index);
          } else if (ok) {
            f.counts_[k] = -2 - static_cast<std::int64_t>(c.constant);
          }
        } else if constexpr (detail::in_place_arg<U>::value) {
          // Written in place when the engine says the parameter is plain
          // data with a count known before the call (the C++ layout was
          // checked against the typemap above).
          const engine::Plan::InPlace ip = plan->in_place(k);
          constexpr bool array = detail::in_place_arg<U>::array;
          constexpr auto form = detail::in_place_arg<U>::string ? engine::Plan::InPlace::Form::string
                                : array ? engine::Plan::InPlace::Form::array : engine::Plan::InPlace::Form::value;
          ok = ok && ip.form == form;
          ok = ok && (!ip.length_is_return || std::is_integral_v<R>);
          ok = ok && (ip.count_param < 0 || integral[ip.count_param]);
          f.places_[k] = {ip.count_param, ip.length_is_return};
        }
        ++k;
      };
      (check(static_cast<std::remove_reference_t<A>*>(nullptr)), ...);
      (void)check;
      f.pinned_ = ok;
    }
    return f;
  }

  template <class T> void check_param(const engine::TypeRegistry& reg, const engine::Function& fn, std::size_t i) const {
    using U = std::remove_cvref_t<T>;
    const engine::Param& p = fn.params[i];
    const std::string where = typemap().file + ": " + fn.name + ": parameter " + std::to_string(i) + " '" + p.name + "': ";
    const bool writes = detail::is_out<U>::value || detail::is_inout<U>::value;
    const engine::Dir want = detail::is_out<U>::value ? engine::Dir::out : detail::is_inout<U>::value ? engine::Dir::inout : engine::Dir::in;
    if (p.dir != want)
      throw error(where + "the typemap says " + std::string(engine::dir_name(p.dir)) + ", the C++ signature " +
                  std::string(engine::dir_name(want)) + (p.dir != engine::Dir::in && !writes ? " (use marshal::out<T> or inout<T>)" : ""));
    engine::TypeId t = p.type;
    if (reg.get(t).kind == engine::Kind::ptr) t = reg.get(t).ref;
    std::string why;
    if constexpr (detail::is_out<U>::value || detail::is_inout<U>::value) why = detail::mismatch<typename U::type>(reg, t);
    else why = detail::mismatch<U>(reg, t);
    if (!why.empty()) throw error(where + why);
    if constexpr (detail::blittable<U>()) {
      if (reg.get(p.type).kind == engine::Kind::ptr) throw error(where + "the typemap passes a pointer; use out<T> or inout<T>");
    }
  }

  const engine::Plan* plan_of(const std::string& name) const;
  const engine::Function& function_of(const std::string& name) const;
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
    f.direct_ = true;
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

// Builds a host object from the member functions of C, each checked against
// the typemap's method signature when bound.
template <class C> class host_object {
 public:
  host_object(std::shared_ptr<detail::State> state, std::shared_ptr<C> self, std::vector<std::string> interfaces)
      : state_(std::move(state)), self_(std::move(self)), interfaces_(std::move(interfaces)) {
    if (!self_) throw error("marshal: implement() needs an object");
    for (const std::string& n : interfaces_)
      if (!state_->typemap->interfaces.count(n)) throw error(state_->typemap->file + ": no interface '" + n + "'");
  }
  template <class R, class... A> host_object& method(const std::string& name, R (C::*pm)(A...)) {
    auto self = self_;
    return add<R, A...>(name, std::function<R(A...)>([self, pm](A... a) -> R { return ((*self).*pm)(std::forward<A>(a)...); }));
  }
  template <class R, class... A> host_object& method(const std::string& name, R (C::*pm)(A...) const) {
    auto self = self_;
    return add<R, A...>(name, std::function<R(A...)>([self, pm](A... a) -> R { return ((*self).*pm)(std::forward<A>(a)...); }));
  }
  // The object to pass where the interfaces are expected.
  object make() const {
    return object(engine::Value(std::make_shared<engine::HostObject>(typeid(C).name(), interfaces_, methods_)));
  }

 private:
  template <class R, class... A> host_object& add(const std::string& name, std::function<R(A...)> fn) {
    (detail::check_usable<A, true>(), ...);
    if constexpr (!std::is_void_v<R>) detail::check_usable<R, true>();
    const engine::Typemap& tm = *state_->typemap;
    const engine::TypeRegistry& reg = state_->ctx->types();
    // "Add" or "ICounter.Add", among the interfaces this object implements.
    const engine::Method* m = nullptr;
    const engine::Interface* owner = nullptr;
    const auto dot = name.find('.');
    for (const std::string& n : interfaces_)
      for (const engine::Interface* i = &tm.interfaces.at(n); i && !m; i = i->base)
        for (const engine::Method& x : i->methods)
          if ((dot == std::string::npos && x.name == name) || (dot != std::string::npos && i->name + "." + x.name == name)) {
            m = &x;
            owner = i;
            break;
          }
    std::string list;
    for (const std::string& n : interfaces_) list += (list.empty() ? "" : ", ") + n;
    if (!m) throw error(tm.file + ": no method '" + name + "' in " + list);
    const std::string where = tm.file + ": " + owner->name + "." + m->name + ": ";
    if (m->params.size() != sizeof...(A))
      throw error(where + "the method takes " + std::to_string(m->params.size()) + " parameters, the C++ member function " +
                  std::to_string(sizeof...(A)));
    std::size_t i = 0;
    std::string why;
    ((why.empty() ? (m->params[i].dir != engine::Dir::in
                         ? why = "parameter '" + m->params[i].name + "' is " + std::string(engine::dir_name(m->params[i].dir)) +
                                 ": host methods with out parameters return a record; implement them with the dynamic API"
                         : (why = detail::mismatch<std::remove_cvref_t<A>>(reg, m->params[i].type),
                            why = why.empty() ? why : "parameter '" + m->params[i].name + "': " + why),
                     ++i)
                  : ++i),
     ...);
    if (why.empty()) why = detail::mismatch<R>(reg, m->returns);
    if (!why.empty()) throw error(where + why);
    // The state (registry) stays alive as long as the host function does.
    auto keep = state_;
    auto inner = detail::make_host_function<R, A...>(reg, m, std::move(fn));
    methods_[owner->name + "." + m->name] = std::make_shared<engine::HostFunction>(engine::HostFunction{
        inner->name, [keep, inner](const std::vector<engine::Value>& args, engine::Value& result, std::string& err) {
          return inner->fn(args, result, err);
        }});
    return *this;
  }

  std::shared_ptr<detail::State> state_;
  std::shared_ptr<C> self_;
  std::vector<std::string> interfaces_;
  std::map<std::string, std::shared_ptr<engine::HostFunction>> methods_;
};

// A method of one native object bound once: the vtable slot, the prepared CIF
// and the type checks are resolved when binding; a call whose arguments and
// return are blittable is one ffi_call through the slot, like a function's
// fast path. Keeps the object alive.
template <class Sig> class method;
template <class R, class... A> class method<R(A...)> {
 public:
  static constexpr bool fast = (detail::blittable<std::remove_cvref_t<A>>() && ...) &&
                               (std::is_void_v<R> || detail::blittable<R>());
  method() = default;  // unbound: calling it throws
  method(const object& obj, const std::string& name) : obj_(obj), name_(name) {
    if (!obj.value().template is<engine::ObjectRef>()) throw error("marshal: method '" + name + "' of an object that is not native");
    const engine::ObjectRef& ref = obj.value().template as<engine::ObjectRef>();
    // A Library, or for an object of an isolated library's surrogate its
    // stand-in (remote/objects.hpp), whose calls always go through the engine.
    engine::ObjectHost& lib = engine::library_of(ref);
    engine::ObjectSpace::MethodRef m;
    std::string err;
    if (!lib.objects().find_method(ref, name, m, err)) throw error(err);
    const std::string where = lib.typemap().file + ": " + m.owner->name + "." + m.method->name + ": ";
    if (detail::cpp_arity(*m.method) != sizeof...(A))
      throw error(where + "the method takes " + std::to_string(detail::cpp_arity(*m.method)) +
                  " parameters (besides any the engine computes), the C++ signature " + std::to_string(sizeof...(A)));
    if (std::string why = detail::call_mismatch<R, A...>(lib.context().types(), *m.method); !why.empty())
      throw error(where + why);
    // Proxies and neutral objects (a lock per call) always go through the engine.
    if (ref.proxy || ref.remote || (ref.home && ref.home->kind() == engine::Apartment::Kind::neutral)) return;
    home_ = ref.home;
    self_ = ref.object->pointer(*m.view, err);
    if (!self_) throw error(where + err);
    const engine::Plan* plan = dynamic_cast<engine::Library&>(lib).bind_method(*m.owner, *m.method, err);
    if (!plan) throw error(err);
    void* const* vtbl;
    std::memcpy(&vtbl, self_, sizeof vtbl);
    target_ = vtbl[m.method->slot];
    // An HRESULT is checked by the plan; computed parameters are passed by it.
    if (!m.method->hresult && detail::cpp_arity(*m.method) == m.method->params.size()) cif_ = plan->cif();
  }
  R operator()(A... args) const {
    if constexpr (fast) {
      if (cif_ && usable_here(home_)) {  // from another apartment: the engine reports it
        // The slot called through its C++ function type (see function<>).
        return reinterpret_cast<R (*)(void*, std::remove_cvref_t<A>...)>(target_)(self_, args...);
      }
    }
    return obj_.template call<R>(name_, args...);
  }

 private:
  object obj_;
  std::string name_;
  std::shared_ptr<engine::Apartment> home_;
  void* self_ = nullptr;
  void* target_ = nullptr;
  const ffi_cif* cif_ = nullptr;
};

template <class Sig> method<Sig> object::bind(const std::string& name) const { return method<Sig>(*this, name); }

template <class R, class... A> R object::call(const std::string& method, A&&... args) const {
  if (!v_.is<engine::ObjectRef>())
    throw error(is_host() ? "marshal: '" + method + "' on a host object: call your own object directly"
                          : "marshal: '" + method + "' called on an empty object");
  const engine::ObjectRef& ref = v_.as<engine::ObjectRef>();
  engine::ObjectSpace& space = engine::library_of(ref).objects();
  const engine::TypeRegistry& reg = engine::library_of(ref).context().types();
  engine::ObjectSpace::MethodRef m;
  std::string err;
  if (!space.find_method(ref, method, m, err)) throw error(err);
  const engine::Method& sig = *m.method;
  const std::string where = engine::library_of(ref).typemap().file + ": " + m.owner->name + "." + sig.name + ": ";
  if (detail::cpp_arity(sig) != sizeof...(A))
    throw error(where + "the method takes " + std::to_string(detail::cpp_arity(sig)) + " parameters, the call passes " +
                std::to_string(sizeof...(A)) + " (out parameters are passed as marshal::out<T>; parameters the "
                "engine computes are left out)");
  if (std::string why = detail::call_mismatch<R, A...>(reg, sig); !why.empty()) throw error(where + why);
  std::vector<engine::Value> values;
  values.reserve(sizeof...(A));
  std::size_t i = 0;
  (detail::push_arg(reg, sig, detail::cpp_param(sig, i++), args, values), ...);
  engine::CallResult result;
  if (!space.call(ref, method, values, result, err)) throw error(err);
  i = 0;
  std::size_t out_index = 0;
  (detail::copy_back(reg, sig, detail::cpp_param(sig, i++), args, result, out_index), ...);
  (void)out_index;
  if constexpr (!std::is_void_v<R>) return detail::from_value<R>(reg, sig.returns, result.ret);
}

}  // namespace marshal
