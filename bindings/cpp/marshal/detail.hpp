// marshal: the typed C++ API, internals.
// Compile-time classification of C++ types (blittable, usable), conversions
// between C++ values and engine values, and the bind-time check of a C++ type
// against a typemap type. Included by marshal.hpp; not an API of its own.
#pragma once

#include "typemap/context.hpp"
#include "call/host_io.hpp"
#include "call/library.hpp"
#include "convert/strings.hpp"
#include "values/call_values.hpp"
#include "marshal/wrappers.hpp"

#include <array>
#include <boost/pfr.hpp>
#include <cstring>
#include <deque>
#include <ffi.h>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace marshal {

namespace engine::remote { class IsolatedLibrary; }

namespace detail {

template <class T> struct is_std_array : std::false_type {};
template <class U, std::size_t N> struct is_std_array<std::array<U, N>> : std::true_type {};
template <class T> struct is_vector : std::false_type {};
template <class U, class A> struct is_vector<std::vector<U, A>> : std::true_type {};
template <class T> struct is_span : std::false_type {};
template <class U, std::size_t E> struct is_span<std::span<U, E>> : std::true_type {};
template <class T> struct is_callback : std::false_type {};
template <class S> struct is_callback<callback<S>> : std::true_type {};
template <class T> struct is_optional : std::false_type {};
template <class U> struct is_optional<std::optional<U>> : std::true_type {};
template <class T> struct is_out : std::false_type {};
template <class U> struct is_out<written<U, false>> : std::true_type {};
template <class T> struct is_inout : std::false_type {};
template <class U> struct is_inout<written<U, true>> : std::true_type {};
template <class T> inline constexpr bool is_string_v =
    std::is_same_v<T, std::string> || std::is_same_v<T, std::u16string> || std::is_same_v<T, std::u32string> ||
    std::is_same_v<T, std::wstring>;

// A struct the engine reflects: an aggregate class of plain fields.
template <class T> inline constexpr bool is_record_v =
    std::is_class_v<T> && std::is_aggregate_v<T> && !is_std_array<T>::value && !is_string_v<T> &&
    !is_out<T>::value && !is_inout<T>::value && !std::is_same_v<T, address> && !is_callback<T>::value &&
    !std::is_same_v<T, object>;

template <class T> constexpr bool blittable();
template <class T, std::size_t... I> constexpr bool fields_blittable(std::index_sequence<I...>) {
  return (blittable<boost::pfr::tuple_element_t<I, T>>() && ...);
}
// Same bits on both sides: passed and returned as is by the fast path.
template <class T> constexpr bool blittable() {
  if constexpr (std::is_same_v<T, bool>) return false;
  else if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T>) return true;
  else if constexpr (is_std_array<T>::value) return blittable<typename T::value_type>();
  else if constexpr (is_record_v<T>) return fields_blittable<T>(std::make_index_sequence<boost::pfr::tuple_size_v<T>>{});
  else return false;
}

// Arguments the typed API can pass by address (pinned): a span or vector of
// blittable elements for an `in` array, a std::string for an `in` UTF-8
// string. native_t is what the C function receives, native_arg produces it.
template <class T> struct pinned_arg : std::false_type {};
template <class E, std::size_t X> struct pinned_arg<std::span<E, X>> : std::bool_constant<blittable<std::remove_cv_t<E>>()> {
  using type = const std::remove_cv_t<E>*;
};
template <class E, class Al> struct pinned_arg<std::vector<E, Al>> : std::bool_constant<blittable<E>()> {
  using type = const E*;
};
template <> struct pinned_arg<std::string> : std::true_type { using type = const char*; };
// Out data written in place: out<T>/inout<T> of a blittable T (the callee
// writes the caller's variable), out/inout<std::vector<E>> of blittable E
// (the callee writes the vector's storage, sized by the engine's count), and
// out<std::string> for an out UTF-8 string with a capacity (the callee writes
// the string's buffer, sized by the capacity; read back as the engine reads it).
template <class T> struct in_place_arg : std::false_type {
  static constexpr bool array = false;
  static constexpr bool string = false;
};
template <class T, bool R> struct in_place_arg<written<T, R>> : std::bool_constant<blittable<T>()> {
  using type = T*;
  static constexpr bool array = false;
  static constexpr bool string = false;
};
template <class E, class Al, bool R> struct in_place_arg<written<std::vector<E, Al>, R>> : std::bool_constant<blittable<E>()> {
  using type = E*;
  static constexpr bool array = true;
  static constexpr bool string = false;
};
template <> struct in_place_arg<written<std::string, false>> : std::true_type {
  using type = char*;
  static constexpr bool array = false;
  static constexpr bool string = true;
};
template <class T> constexpr bool passes_direct() {
  return blittable<T>() || pinned_arg<T>::value || in_place_arg<T>::value;
}
template <class T> struct native_of { using type = T; };
template <class T> requires pinned_arg<T>::value struct native_of<T> { using type = typename pinned_arg<T>::type; };
template <class T> requires in_place_arg<T>::value struct native_of<T> { using type = typename in_place_arg<T>::type; };
template <class T> using native_t = typename native_of<std::remove_cvref_t<T>>::type;
// `empty`: what an empty pinned or in-place array passes (the engine never
// passes NULL for an array, even of 0 elements: a C callee may hand it to
// memcpy, where NULL is undefined even with a size of 0).
template <class T> native_t<T> native_arg(const T& v, void* empty) {
  using U = std::remove_cvref_t<T>;
  if constexpr (std::is_same_v<U, std::string>) return v.c_str();
  else if constexpr (pinned_arg<U>::value) return v.empty() ? static_cast<native_t<T>>(empty) : v.data();
  else if constexpr (in_place_arg<U>::value && in_place_arg<U>::array)
    return v.get().empty() ? static_cast<native_t<T>>(empty) : v.get().data();
  else if constexpr (in_place_arg<U>::value && in_place_arg<U>::string) return v.get().data();
  else if constexpr (in_place_arg<U>::value) return &v.get();
  else return v;
}
// A std::string passes by address when it is plain ASCII without NUL (valid
// UTF-8 as it is); anything else goes through the engine, which validates it
// and reports a NUL or an invalid sequence, exactly as before.
template <class T> bool pinnable_value(const T& v) {
  if constexpr (std::is_same_v<std::remove_cvref_t<T>, std::string>) return engine::plain_ascii(v);
  else return true;
}
template <class T> std::int64_t integral_or_zero(const T& v) {
  if constexpr (std::is_integral_v<std::remove_cvref_t<T>>) return static_cast<std::int64_t>(v);
  else return 0;
}
template <class T> std::size_t size_or_zero(const T& v) {
  if constexpr (pinned_arg<std::remove_cvref_t<T>>::value && !std::is_same_v<std::remove_cvref_t<T>, std::string>)
    return v.size();
  else return 0;
}

// Compile-time rules every C++ type must pass, with a readable message.
template <class T, bool Typemap> constexpr void check_usable() {
  using U = std::remove_cvref_t<T>;
  if constexpr (is_out<U>::value || is_inout<U>::value) {
    check_usable<typename U::type, Typemap>();
  } else if constexpr (is_optional<U>::value) {
    check_usable<typename U::value_type, Typemap>();
  } else if constexpr (is_vector<U>::value || is_span<U>::value || is_std_array<U>::value) {
    check_usable<typename U::value_type, Typemap>();
  } else if constexpr (is_callback<U>::value) {
    static_assert(Typemap, "marshal: callbacks need a typemap (lifetime, error value, thread delivery)");
  } else if constexpr (std::is_same_v<U, object>) {
    static_assert(Typemap, "marshal: objects need a typemap (their interfaces)");
  } else {
    static_assert(!std::is_pointer_v<U>,
                  "marshal: a raw pointer is ambiguous (one value? an array? a string? who owns it?): "
                  "use std::string, std::vector/std::span, out<T>/inout<T>, or marshal::address");
    static_assert(!std::is_same_v<U, bool> || Typemap,
                  "marshal: bool is ambiguous without a typemap (1-byte _Bool or 4-byte BOOL?): "
                  "describe the function in a typemap, or use uint8_t / int32_t");
    static_assert(!std::is_reference_v<T> || std::is_const_v<std::remove_reference_t<T>>,
                  "marshal: pass values, const references, or out<T>/inout<T> for parameters the callee writes");
    if constexpr (std::is_class_v<U> && !is_string_v<U> && !std::is_same_v<U, address>) {
      static_assert(std::is_aggregate_v<U>,
                    "marshal: a struct passed to native code must be an aggregate (no constructors, "
                    "no virtual functions, no private fields) so its fields can be reflected");
      static_assert(std::is_copy_assignable_v<U>,
                    "marshal: a struct passed to native code must hold plain fields, not references or "
                    "const members");
    }
    static_assert(!is_string_v<U> || Typemap, "marshal: strings need a typemap (encoding, ownership)");
  }
}

// ---- C++ values <-> engine values (the typemap path) ----

std::string describe_type(const engine::TypeRegistry& reg, engine::TypeId t);

template <class T> engine::Value to_value(const engine::TypeRegistry& reg, engine::TypeId t, const T& v);
template <class T> T from_value(const engine::TypeRegistry& reg, engine::TypeId t, const engine::Value& v);

// ---- scalars: C++ values <-> host scalars (the callbacks' direct form) ----

// A C++ type a host scalar holds as it is: integers, bool, floats, enums, address.
template <class T> inline constexpr bool scalar_v =
    std::is_arithmetic_v<T> || std::is_enum_v<T> || std::is_same_v<T, address>;

// A C++ value as the host scalar to_value makes of it (to_value's rule for
// scalars is this one: integers as int64 or uint64 by signedness, floats as
// double, enums as their integer, address as an address).
template <class T> engine::HostScalar to_scalar(const T& v) {
  if constexpr (std::is_same_v<T, bool>) return engine::HostScalar::of_bool(v);
  else if constexpr (std::is_enum_v<T>)
    return engine::HostScalar::of_int(static_cast<std::int64_t>(static_cast<std::underlying_type_t<T>>(v)));
  else if constexpr (std::is_floating_point_v<T>) return engine::HostScalar::of_real(static_cast<double>(v));
  else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return engine::HostScalar::of_int(static_cast<std::int64_t>(v));
  else if constexpr (std::is_integral_v<T>) return engine::HostScalar::of_uint(static_cast<std::uint64_t>(v));
  else if constexpr (std::is_same_v<T, address>) return engine::HostScalar::of_address(v.value);
  else static_assert(sizeof(T) == 0, "marshal: not a scalar");
}

// A host scalar, as the scalar lane reads a native argument (lane_scalar), as
// C++ type T: what from_value makes of the same value. The typemap type was
// checked against T when binding (mismatch: the same width), so the casts
// are exact but for a 1-byte integer of the other signedness, which wraps as
// from_value's does.
template <class T> T from_scalar(const engine::HostScalar& s) {
  using K = engine::HostScalar::Kind;
  if constexpr (std::is_same_v<T, bool>) return s.kind == K::boolean ? s.b : s.u != 0;
  else if constexpr (std::is_floating_point_v<T>) return static_cast<T>(s.d);
  else if constexpr (std::is_enum_v<T>)
    return static_cast<T>(static_cast<std::underlying_type_t<T>>(s.kind == K::uint64 ? static_cast<std::int64_t>(s.u) : s.i));
  else if constexpr (std::is_integral_v<T>) return static_cast<T>(s.kind == K::uint64 ? static_cast<std::int64_t>(s.u) : s.i);
  else if constexpr (std::is_same_v<T, address>) return address{s.kind == K::address ? s.p : 0};
  else static_assert(sizeof(T) == 0, "marshal: not a scalar");
}

// HostFunction::scalar for a callable of scalars: its arguments straight from
// the engine's host scalars, its result back as one (a throw is the engine's
// callback failure). self: the std::function<R(A...)>.
template <class R, class... A>
bool scalar_host(const void* self, const engine::HostScalar* args, engine::HostScalar& result, std::string&) {
  const auto& fn = *static_cast<const std::function<R(A...)>*>(self);
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    if constexpr (std::is_void_v<R>) fn(from_scalar<std::remove_cvref_t<A>>(args[I])...);
    else result = to_scalar<R>(fn(from_scalar<std::remove_cvref_t<A>>(args[I])...));
    (void)args;
  }(std::index_sequence_for<A...>{});
  return true;
}

// A HostFunction that converts native arguments to A..., calls fn, and converts
// its result back; failures (and exceptions) become the engine's callback errors.
// A callable of scalars only also gets the direct form (HostFunction::scalar),
// which the engine calls for a callback signature of scalars: no Value per call.
template <class R, class... A>
std::shared_ptr<engine::HostFunction> make_host_function(const engine::TypeRegistry& reg, const engine::Signature* sig,
                                                 std::function<R(A...)> fn) {
  auto target = std::make_shared<const std::function<R(A...)>>(std::move(fn));
  auto host = std::make_shared<engine::HostFunction>(engine::HostFunction{
      sig->name, [&reg, sig, target](const std::vector<engine::Value>& args, engine::Value& result, std::string& error) {
        if (args.size() != sizeof...(A)) {
          error = "expected " + std::to_string(sizeof...(A)) + " arguments, got " + std::to_string(args.size());
          return false;
        }
        const std::function<R(A...)>& fn = *target;
        auto call = [&]<std::size_t... I>(std::index_sequence<I...>) {
          if constexpr (std::is_void_v<R>) {
            fn(from_value<std::remove_cvref_t<A>>(reg, sig->params[I].type, args[I])...);
          } else {
            result = to_value(reg, sig->returns, fn(from_value<std::remove_cvref_t<A>>(reg, sig->params[I].type, args[I])...));
          }
        };
        call(std::index_sequence_for<A...>{});
        return true;
      }});
  if constexpr ((scalar_v<std::remove_cvref_t<A>> && ...) && (std::is_void_v<R> || scalar_v<R>)) {
    host->scalar = &scalar_host<R, A...>;
    host->scalar_self = target;
  }
  return host;
}

// The host function of callback object c, made on first use (once, whichever
// thread gets there first).
template <class R, class... A>
const std::shared_ptr<engine::HostFunction>& host_of(const callback<R(A...)>& c, const engine::TypeRegistry& reg,
                                                     const engine::Signature* sig) {
  callback_state& st = c.state();
  if (!st.made.load(std::memory_order_acquire)) {
    std::lock_guard lock(st.making);
    if (!st.host) st.host = make_host_function(reg, sig, c.fn());
    st.made.store(true, std::memory_order_release);
  }
  return st.host;
}

template <class T> std::string utf8_of(const T& s) {
  if constexpr (std::is_same_v<T, std::string>) {
    return s;
  } else {
    constexpr engine::Encoding e = std::is_same_v<T, std::u16string> ? engine::Encoding::utf16
                           : std::is_same_v<T, std::u32string> ? engine::Encoding::utf32 : engine::Encoding::wchar;
    std::string out, err;
    if (!engine::decode_text(e, s.data(), s.size(), out, err)) throw error("marshal: " + err);
    return out;
  }
}

template <class T> T string_from_utf8(const std::string& s) {
  if constexpr (std::is_same_v<T, std::string>) {
    return s;
  } else {
    constexpr engine::Encoding e = std::is_same_v<T, std::u16string> ? engine::Encoding::utf16
                           : std::is_same_v<T, std::u32string> ? engine::Encoding::utf32 : engine::Encoding::wchar;
    std::vector<std::uint8_t> units;
    std::string err;
    if (!engine::encode_text(e, engine::Unmappable::error, s, units, err)) throw error("marshal: " + err);
    T out(units.size() / sizeof(typename T::value_type), typename T::value_type{});
    std::memcpy(out.data(), units.data(), units.size());
    return out;
  }
}

// The type a parameter's value has: its pointee for ptr types.
inline engine::TypeId value_type(const engine::TypeRegistry& reg, engine::TypeId t) {
  const engine::TypeDesc& d = reg.get(t);
  return d.kind == engine::Kind::ptr ? d.ref : t;
}

template <class T> engine::Value to_value(const engine::TypeRegistry& reg, engine::TypeId t, const T& v) {
  if (reg.get(t).kind == engine::Kind::ptr) return to_value(reg, reg.get(t).ref, v);  // the engine allocates the pointee
  const engine::TypeDesc& d = reg.get(t);
  if constexpr (is_optional<T>::value) {
    return v ? to_value(reg, t, *v) : engine::Value();
  } else if constexpr (std::is_same_v<T, address>) {
    return engine::Value(engine::Address{v.value});
  } else if constexpr (scalar_v<T>) {
    engine::Value out;
    engine::put_scalar(to_scalar(v), out);
    return out;
  } else if constexpr (is_callback<T>::value) {
    return engine::Value(host_of(v, reg, d.as<engine::CallbackInfo>().sig));
  } else if constexpr (std::is_same_v<T, object>) {
    return v.value();
  } else if constexpr (is_string_v<T>) {
    return engine::Value(utf8_of(v));
  } else if constexpr (is_vector<T>::value || is_span<T>::value || is_std_array<T>::value) {
    using E = std::remove_cv_t<typename T::value_type>;
    if constexpr (std::is_same_v<E, std::uint8_t>) {
      return engine::Value(engine::Bytes{std::vector<std::uint8_t>(v.begin(), v.end())});
    } else {
      engine::TypeId elem = d.kind == engine::Kind::array ? d.ref : t;
      engine::List items;
      items.reserve(v.size());
      for (const auto& x : v) items.push_back(to_value(reg, elem, x));
      return engine::Value(std::move(items));
    }
  } else if constexpr (is_record_v<T>) {
    const auto& fields = d.as<engine::RecordInfo>().fields;
    engine::Record r;
    std::size_t i = 0;
    boost::pfr::for_each_field(v, [&](const auto& f) {
      while (i < fields.size() && fields[i].is_bitfield && fields[i].bits == 0) ++i;
      r.emplace_back(fields[i].name, to_value(reg, fields[i].type, f));
      ++i;
    });
    return engine::Value(std::move(r));
  } else {
    static_assert(sizeof(T) == 0, "marshal: no conversion for this C++ type");
  }
}

template <class T> T from_value(const engine::TypeRegistry& reg, engine::TypeId t, const engine::Value& v) {
  if (reg.get(t).kind == engine::Kind::ptr && !std::is_same_v<T, address>) return from_value<T>(reg, reg.get(t).ref, v);
  const engine::TypeDesc& d = reg.get(t);
  auto integer = [&]() -> std::int64_t {
    if (v.is<std::int64_t>()) return v.as<std::int64_t>();
    if (v.is<std::uint64_t>()) return static_cast<std::int64_t>(v.as<std::uint64_t>());
    throw error("marshal: expected an integer, got " + v.describe());
  };
  if constexpr (is_optional<T>::value) {
    if (v.is_null()) return std::nullopt;
    return from_value<typename T::value_type>(reg, t, v);
  } else if constexpr (std::is_same_v<T, bool>) {
    return v.as<bool>();
  } else if constexpr (std::is_enum_v<T>) {
    if (v.is<std::string>())
      for (const engine::EnumItem& e : d.as<engine::EnumInfo>().items)
        if (e.name == v.as<std::string>()) return static_cast<T>(e.value);
    return static_cast<T>(integer());
  } else if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(v.as<double>());
  } else if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(integer());
  } else if constexpr (std::is_same_v<T, address>) {
    return address{v.is_null() ? 0 : v.as<engine::Address>().value};
  } else if constexpr (std::is_same_v<T, object>) {
    if (!v.is_null() && !v.is<engine::ObjectRef>() && !v.is<std::shared_ptr<engine::HostObject>>())
      throw error("marshal: expected an object, got " + v.describe());
    return object(v);
  } else if constexpr (is_string_v<T>) {
    return string_from_utf8<T>(v.as<std::string>());
  } else if constexpr (is_vector<T>::value) {
    using E = typename T::value_type;
    if constexpr (std::is_same_v<E, std::uint8_t>) {
      if (v.is<engine::Bytes>()) return T(v.as<engine::Bytes>().data.begin(), v.as<engine::Bytes>().data.end());
    }
    engine::TypeId elem = d.kind == engine::Kind::array ? d.ref : t;
    T out;
    for (const engine::Value& x : v.as<engine::List>()) out.push_back(from_value<E>(reg, elem, x));
    return out;
  } else if constexpr (is_std_array<T>::value) {
    T out{};
    engine::TypeId elem = d.ref;
    if (v.is<engine::Bytes>()) {
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<typename T::value_type>(v.as<engine::Bytes>().data.at(i));
    } else {
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = from_value<typename T::value_type>(reg, elem, v.as<engine::List>().at(i));
    }
    return out;
  } else if constexpr (is_record_v<T>) {
    T out{};
    const auto& fields = d.as<engine::RecordInfo>().fields;
    std::size_t i = 0;
    boost::pfr::for_each_field(out, [&](auto& f) {
      while (i < fields.size() && fields[i].is_bitfield && fields[i].bits == 0) ++i;
      const engine::Value* fv = v.field(fields[i].name);
      if (!fv) throw error("marshal: missing field '" + fields[i].name + "'");
      f = from_value<std::remove_cvref_t<decltype(f)>>(reg, fields[i].type, *fv);
      ++i;
    });
    return out;
  } else {
    static_assert(sizeof(T) == 0, "marshal: no conversion for this C++ type");
  }
}

// ---- arguments of a signature (functions and methods) ----

// A C++ signature lists every parameter of the typemap's signature except the
// ones the engine computes (Param::value): the k-th C++ argument is parameter
// cpp_param(sig, k).
inline std::size_t cpp_arity(const engine::Signature& sig) {
  std::size_t n = 0;
  for (const engine::Param& p : sig.params) n += p.value.present() ? 0 : 1;
  return n;
}
inline std::size_t cpp_param(const engine::Signature& sig, std::size_t k) {
  for (std::size_t i = 0; i < sig.params.size(); ++i)
    if (!sig.params[i].value.present() && k-- == 0) return i;
  return sig.params.size();
}

// Appends the engine value of argument i (out<T> passes nothing).
template <class T>
void push_arg(const engine::TypeRegistry& reg, const engine::Signature& sig, std::size_t i, T& a, std::vector<engine::Value>& values) {
  using U = std::remove_cvref_t<T>;
  if constexpr (is_out<U>::value) {
    return;
  } else if constexpr (is_inout<U>::value) {
    values.push_back(to_value(reg, value_type(reg, sig.params[i].type), a.get()));
  } else {
    values.push_back(to_value(reg, value_type(reg, sig.params[i].type), a));
  }
}

// Assigns out<T>/inout<T> argument i from the call's result.
template <class T>
void copy_back(const engine::TypeRegistry& reg, const engine::Signature& sig, std::size_t i, T& a, const engine::CallResult& result,
               std::size_t& out_index) {
  using U = std::remove_cvref_t<T>;
  if constexpr (is_out<U>::value || is_inout<U>::value) {
    const engine::Value& v = result.out.at(out_index++).second;
    a.get() = from_value<typename U::type>(reg, value_type(reg, sig.params[i].type), v);
  }
}

template <class T> std::string mismatch(const engine::TypeRegistry& reg, engine::TypeId t);

// "" when the C++ arguments A... (out<T>/inout<T> for written parameters) and
// return R fit signature sig, else why not, naming the parameter.
template <class R, class... A> std::string call_mismatch(const engine::TypeRegistry& reg, const engine::Signature& sig) {
  std::size_t i = 0;
  std::string why;
  auto check = [&]<class T>(T*) {
    using U = std::remove_cvref_t<T>;
    const std::size_t at = cpp_param(sig, i);
    const engine::Param& p = sig.params[at];
    const engine::Dir want = is_out<U>::value ? engine::Dir::out : is_inout<U>::value ? engine::Dir::inout : engine::Dir::in;
    if (why.empty() && p.dir != want)
      why = "parameter " + std::to_string(at) + " '" + p.name + "': the typemap says " + std::string(engine::dir_name(p.dir)) +
            ", the call passes " + std::string(engine::dir_name(want));
    if (why.empty()) {
      if constexpr (is_out<U>::value || is_inout<U>::value)
        why = mismatch<typename U::type>(reg, value_type(reg, p.type));
      else
        why = mismatch<U>(reg, p.type);
      if (!why.empty()) why = "parameter " + std::to_string(at) + " '" + p.name + "': " + why;
    }
    ++i;
  };
  (check(static_cast<std::remove_reference_t<A>*>(nullptr)), ...);
  (void)check;
  if (why.empty()) why = mismatch<R>(reg, sig.returns);
  return why;
}

// ---- checking a C++ type against a typemap type, at bind time ----

template <class T> std::string cpp_name() {
  if constexpr (std::is_same_v<T, bool>) return "bool";
  else if constexpr (std::is_floating_point_v<T>) return sizeof(T) == 4 ? "float" : "double";
  else if constexpr (std::is_integral_v<T>)
    return std::string(std::is_signed_v<T> ? "int" : "uint") + std::to_string(sizeof(T) * 8) + "_t";
  else if constexpr (std::is_enum_v<T>) return "enum (" + std::to_string(sizeof(T)) + " bytes)";
  else if constexpr (std::is_same_v<T, std::string>) return "std::string";
  else if constexpr (std::is_same_v<T, std::u16string>) return "std::u16string";
  else if constexpr (std::is_same_v<T, std::u32string>) return "std::u32string";
  else if constexpr (std::is_same_v<T, std::wstring>) return "std::wstring";
  else if constexpr (is_vector<T>::value) return "std::vector<" + cpp_name<typename T::value_type>() + ">";
  else if constexpr (is_span<T>::value) return "std::span<" + cpp_name<std::remove_cv_t<typename T::value_type>>() + ">";
  else if constexpr (is_std_array<T>::value) return "std::array<" + cpp_name<typename T::value_type>() + ", " + std::to_string(std::tuple_size_v<T>) + ">";
  else if constexpr (is_optional<T>::value) return "std::optional<" + cpp_name<typename T::value_type>() + ">";
  else if constexpr (std::is_same_v<T, address>) return "marshal::address";
  else if constexpr (is_callback<T>::value) return "marshal::callback";
  else if constexpr (std::is_same_v<T, object>) return "marshal::object";
  else if constexpr (is_record_v<T>) return "struct of " + std::to_string(boost::pfr::tuple_size_v<T>) + " fields (" + std::to_string(sizeof(T)) + " bytes)";
  else if constexpr (std::is_void_v<T>) return "void";
  else return "an unsupported C++ type";
}

template <class T> std::string mismatch(const engine::TypeRegistry& reg, engine::TypeId t);

template <class R, class... A>
std::string callback_mismatch(const engine::TypeRegistry& reg, const engine::CallbackSig& sig, callback<R(A...)>*) {
  if (sig.params.size() != sizeof...(A))
    return "callback '" + sig.name + "' takes " + std::to_string(sig.params.size()) + " parameters, the C++ callback " +
           std::to_string(sizeof...(A));
  std::string why;
  std::size_t i = 0;
  // A ptr parameter reaches the callable as the value it points to.
  auto value_of = [&](std::size_t k) { return value_type(reg, sig.params[k].type); };
  ((why.empty() ? (why = mismatch<std::remove_cvref_t<A>>(reg, value_of(i)),
                   why = why.empty() ? why : "callback '" + sig.name + "' parameter " + std::to_string(i) + ": " + why, ++i)
                : ++i),
   ...);
  if (why.empty()) {
    std::string r = mismatch<R>(reg, sig.returns);
    if (!r.empty()) why = "callback '" + sig.name + "' return: " + r;
  }
  return why;
}

// Returns "" when T can stand for the typemap type t, else why not.
template <class T> std::string mismatch(const engine::TypeRegistry& reg, engine::TypeId t) {
  if constexpr (!std::is_same_v<T, address> && !std::is_void_v<T>)
    if (reg.get(t).kind == engine::Kind::ptr && !blittable<T>()) return mismatch<T>(reg, reg.get(t).ref);
  const engine::TypeDesc& d = reg.get(t);
  auto no = [&] { return "C++ type " + cpp_name<T>() + " does not match typemap type " + reg.spell(t); };
  if constexpr (std::is_void_v<T>) {
    return d.kind == engine::Kind::void_ ? "" : no();
  } else if constexpr (is_optional<T>::value) {
    return mismatch<typename T::value_type>(reg, t);
  } else if constexpr (std::is_same_v<T, bool>) {
    return d.kind == engine::Kind::boolean ? "" : no();
  } else if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T>) {
    const bool fl = std::is_floating_point_v<T>;
    const bool kind_ok = fl ? d.kind == engine::Kind::floating
                            : (d.kind == engine::Kind::integer || d.kind == engine::Kind::enum_ ||
                               (d.kind == engine::Kind::handle && !d.as<engine::HandleInfo>().by_pointer));
    if (!kind_ok || d.size != sizeof(T)) return no();
    if constexpr (std::is_integral_v<T>)
      if (d.kind == engine::Kind::integer && d.has(engine::flag_signed) != std::is_signed_v<T> && sizeof(T) > 1) return no();
    return "";
  } else if constexpr (std::is_same_v<T, address>) {
    return d.kind == engine::Kind::pointer ? "" : no();
  } else if constexpr (is_callback<T>::value) {
    if (d.kind != engine::Kind::callback) return no();
    return callback_mismatch(reg, *d.as<engine::CallbackInfo>().sig, static_cast<T*>(nullptr));
  } else if constexpr (std::is_same_v<T, object>) {
    return d.kind == engine::Kind::interface ? "" : no();
  } else if constexpr (is_string_v<T>) {
    return d.kind == engine::Kind::string ? "" : no();
  } else if constexpr (is_vector<T>::value || is_span<T>::value) {
    if (d.kind != engine::Kind::array) return no();
    std::string inner = mismatch<std::remove_cv_t<typename T::value_type>>(reg, d.ref);
    return inner.empty() ? "" : no() + ": elements: " + inner;
  } else if constexpr (is_std_array<T>::value) {
    if (d.kind != engine::Kind::array || d.as<engine::ArrayInfo>().count.source != engine::Count::Source::constant ||
        d.as<engine::ArrayInfo>().count.constant != std::tuple_size_v<T>)
      return no();
    return mismatch<typename T::value_type>(reg, d.ref);
  } else if constexpr (is_record_v<T>) {
    // A blittable C++ struct is the native struct: same size, alignment and
    // offsets. Any other (std::string, std::vector fields) is converted field by
    // field, matched by position and type.
    constexpr bool same_bits = blittable<T>();
    if (d.kind != engine::Kind::struct_ && d.kind != engine::Kind::union_) return no();
    if (same_bits && (d.size != sizeof(T) || d.align != alignof(T))) return no();
    const auto& fields = d.as<engine::RecordInfo>().fields;
    std::vector<const engine::Field*> real;
    for (const engine::Field& f : fields)
      if (!(f.is_bitfield && f.bits == 0)) real.push_back(&f);
    if (real.size() != boost::pfr::tuple_size_v<T>) return no() + ": " + std::to_string(real.size()) + " fields in the typemap";
    std::string why;
    const T probe{};
    std::size_t i = 0;
    boost::pfr::for_each_field(probe, [&](const auto& f) {
      using F = std::remove_cvref_t<decltype(f)>;
      const engine::Field& tf = *real[i];
      const auto offset = static_cast<std::size_t>(reinterpret_cast<const char*>(&f) - reinterpret_cast<const char*>(&probe));
      if (why.empty() && tf.is_bitfield) why = "field '" + tf.name + "' is a bitfield, which C++ reflection cannot see";
      if (why.empty() && same_bits && offset != tf.offset)
        why = "field '" + tf.name + "' is at offset " + std::to_string(offset) + " in C++ but " + std::to_string(tf.offset) + " in the typemap";
      if (why.empty()) {
        std::string inner = mismatch<F>(reg, tf.type);
        if (!inner.empty()) why = "field '" + tf.name + "': " + inner;
      }
      ++i;
    });
    return why.empty() ? "" : no() + ": " + why;
  } else {
    return no();
  }
}

// Reads a fast-path return of type R from libffi's return buffer (integers
// narrower than a register come back widened to ffi_arg).
template <class R> R read_return(const void* rbuf) {
  if constexpr ((std::is_integral_v<R> || std::is_enum_v<R>) && sizeof(R) < sizeof(ffi_arg)) {
    ffi_arg wide;
    std::memcpy(&wide, rbuf, sizeof wide);
    if constexpr (std::is_enum_v<R>) return static_cast<R>(static_cast<std::underlying_type_t<R>>(wide));
    else return static_cast<R>(wide);
  } else {
    R r;
    std::memcpy(&r, rbuf, sizeof r);
    return r;
  }
}

// ---- libffi types from C++ types (plain libraries, no typemap) ----
class FfiFromCpp {
 public:
  template <class T> ffi_type* get() {
    if constexpr (std::is_void_v<T>) return &ffi_type_void;
    else if constexpr (std::is_enum_v<T>) return get<std::underlying_type_t<T>>();
    else if constexpr (std::is_floating_point_v<T>) return sizeof(T) == 4 ? &ffi_type_float : &ffi_type_double;
    else if constexpr (std::is_integral_v<T>) {
      switch (sizeof(T)) {
        case 1: return std::is_signed_v<T> ? &ffi_type_sint8 : &ffi_type_uint8;
        case 2: return std::is_signed_v<T> ? &ffi_type_sint16 : &ffi_type_uint16;
        case 4: return std::is_signed_v<T> ? &ffi_type_sint32 : &ffi_type_uint32;
        default: return std::is_signed_v<T> ? &ffi_type_sint64 : &ffi_type_uint64;
      }
    } else if constexpr (is_std_array<T>::value) {
      return nullptr;  // only inside records
    } else {
      auto& elements = elements_.emplace_back();
      add_fields<T>(elements);
      elements.push_back(nullptr);
      ffi_type& t = types_.emplace_back();
      t.size = 0;
      t.alignment = 0;
      t.type = FFI_TYPE_STRUCT;
      t.elements = elements.data();
      return &t;
    }
  }

 private:
  template <class T> void add_fields(std::vector<ffi_type*>& out) {
    boost::pfr::for_each_field(T{}, [&](const auto& f) {
      using F = std::remove_cvref_t<decltype(f)>;
      if constexpr (is_std_array<F>::value) {
        ffi_type* e = get<typename F::value_type>();
        for (std::size_t i = 0; i < std::tuple_size_v<F>; ++i) out.push_back(e);
      } else {
        out.push_back(get<F>());
      }
    });
  }
  std::deque<ffi_type> types_;
  std::deque<std::vector<ffi_type*>> elements_;
};

// What a library handle shares with the functions bound from it.
struct State {
  std::unique_ptr<engine::Context> ctx;
  const engine::Typemap* typemap = nullptr;
  std::shared_ptr<engine::Library> lib;        // typemap libraries
  std::shared_ptr<engine::remote::IsolatedLibrary> isolated;  // a typemap library in a surrogate (lib is null)
  std::unique_ptr<engine::SharedLibrary> so;   // plain libraries
  std::mutex mutex;
  FfiFromCpp ffi;
  std::deque<ffi_cif> cifs;
  std::deque<std::vector<ffi_type*>> arg_types;
};

// A call of an isolated library's function (through its surrogate).
bool call_isolated(const State& state, const std::string& function, std::span<const engine::Value> args, engine::CallResult& result,
                   std::string& error);
// An instance of a class made in an isolated library's surrogate (a proxy here).
bool create_isolated(const State& state, const std::string& cls, std::span<const engine::Value> args,
                     engine::Value& out, std::string& error);

}  // namespace detail

}  // namespace marshal
