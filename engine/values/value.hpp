// marshal engine: host values.
// One dynamic value type for the host side of a call: null, bool, exact signed
// and unsigned 64-bit integers, double, UTF-8 string, bytes, list, record (ordered
// name -> value), address, handle, and native memory. Converts to and from JSON.
#pragma once

#include "base/bounds.hpp"
#include "types/type_desc.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace marshal::engine {

class Value;
using List = std::vector<Value>;
using Record = std::vector<std::pair<std::string, Value>>;
struct Bytes { std::vector<std::uint8_t> data; };
struct Address { std::uintptr_t value = 0; };

// A native handle with identity: the same (type, value) maps to one HandleBox
// while the host holds it; dropping the last reference calls the release.
struct HandleBox {
  TypeId type = no_type;
  std::int64_t value = 0;
  std::string type_name;
  std::function<void(std::int64_t)> release;  // empty: nothing to release
  // Its release function was called explicitly; using it is an error. Atomic:
  // a call on one thread may release what another thread is converting.
  std::atomic<bool> released{false};
  ~HandleBox() { if (release && !released) release(value); }
};

class Value;
class Callback;      // callback.hpp
class NativeObject;  // object.hpp
class HostObject;    // object.hpp
struct Proxy;        // object.hpp
class RemoteObject;  // object.hpp
class Apartment;     // apartment.hpp
struct Interface;    // typemap.hpp

// A native object as the host holds it: the object (one per COM identity, so
// two references to one object compare equal), the interface it was obtained
// as (which decides how method names resolve), the apartment the reference
// belongs to (null: none), for a reference marshaled from another
// apartment, the proxy its calls go through, and the object's COM identity
// (its IUnknown address; objects/ sets it with the object or proxy): two
// references are equal when it is. An object of another process (a surrogate,
// marshal serve) has neither object nor proxy but `remote`, through which its
// calls go (engine/remote), and the remote proxy's address as its identity.
struct ObjectRef {
  std::shared_ptr<NativeObject> object;
  const Interface* iface = nullptr;
  std::shared_ptr<Apartment> home;
  std::shared_ptr<Proxy> proxy;
  void* identity = nullptr;
  std::shared_ptr<RemoteObject> remote;
};

struct HostScalar;  // values/call_values.hpp

// A host function that native code can call back (through a callback type).
// It returns false with a message to fail; a throw is caught and treated the
// same way: exceptions never unwind through native frames.
struct HostFunction {
  std::string name;
  std::function<bool(const std::vector<Value>& args, Value& result, std::string& error)> fn;
  // Optional: told (on the native thread that called, before it gets the
  // on_error value) when fn returned true but its result or out values could
  // not be converted for native code. A host that ran fn on another thread
  // records the failure for the call waiting there (the Lua host).
  std::function<void(const std::string& error)> result_failed = {};
  // Optional: the same function for native arguments as host scalars, without
  // a Value each (a host that knows its parameter types at compile time: the
  // typed C++ API). A callback whose parameters and return are all scalars
  // (the scalar lane, convert/lane.hpp) calls it instead of fn: args holds one
  // scalar per parameter, read by the lane's rule; it writes its result (left
  // null for void) and fails as fn does (false with a message, or a throw).
  // scalar_self is its first argument, kept alive here.
  bool (*scalar)(const void* self, const HostScalar* args, HostScalar& result, std::string& error) = nullptr;
  std::shared_ptr<const void> scalar_self = {};
};

// Native memory owned by the host (like ctypes' structure instances): passed to
// a ptr parameter of its type by address, without a copy, so a callee may keep
// the address across calls (zlib's z_stream).
struct NativeBox {
  TypeId type = no_type;
  std::size_t count = 1;
  std::vector<std::shared_ptr<void>> keep_alive;  // memory its pointer fields refer to
  std::unique_ptr<std::byte[]> storage;
  std::size_t size = 0;
  void* data() const { return storage.get(); }
};

// An owning pointer to one T, copied with it: a rare kind larger than Value's
// inline storage (ObjectRef: 80 bytes) lives here, so that every Value, and
// every element of a list of numbers, is not as large as the rarest kind.
// Never null while a Value holds it: Value's moves leave a moved-from boxed
// kind null (Value, not Boxed, since only Value can change its own kind).
template <class T>
class Boxed {
 public:
  explicit Boxed(T x) : p_(new T(std::move(x))) {}
  Boxed(const Boxed& o) : p_(new T(*o.p_)) {}
  Boxed(Boxed&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  Boxed& operator=(const Boxed& o) {
    *p_ = *o.p_;  // T's own assignment: safe for self-assignment, keeps this box
    return *this;
  }
  Boxed& operator=(Boxed&& o) noexcept {
    if (this != &o) delete std::exchange(p_, std::exchange(o.p_, nullptr));
    return *this;
  }
  ~Boxed() { delete p_; }
  bool empty() const { return p_ == nullptr; }
  const T& get() const { return *p_; }
  T& get() { return *p_; }

 private:
  T* p_;
};

class Value {
 public:
  using Storage = std::variant<std::monostate, bool, std::int64_t, std::uint64_t, double, std::string, Bytes, List,
                               Record, Address, std::shared_ptr<HandleBox>, std::shared_ptr<NativeBox>,
                               std::shared_ptr<HostFunction>, std::shared_ptr<Callback>, Boxed<ObjectRef>,
                               std::shared_ptr<HostObject>>;
  enum class Type : std::uint8_t {
    null, boolean, int64, uint64, real, string, bytes, list, record, address, handle, native, function, callback,
    object, host_object
  };

  Value() noexcept : v_() {}
  Value(std::nullptr_t) noexcept : v_() {}
  Value(bool b) : v_(b) {}
  Value(int i) : v_(std::int64_t{i}) {}
  Value(std::int64_t i) : v_(i) {}
  Value(std::uint64_t u) : v_() { set_unsigned(u); }
  Value(double d) : v_(d) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(Bytes b) : v_(std::move(b)) {}
  Value(List l) : v_(std::move(l)) {}
  Value(Record r) : v_(std::move(r)) {}
  Value(Address a) : v_(a) {}
  Value(std::shared_ptr<HandleBox> h) : v_(std::move(h)) {}
  Value(std::shared_ptr<NativeBox> n) : v_(std::move(n)) {}
  Value(std::shared_ptr<HostFunction> f) : v_(std::move(f)) {}
  Value(std::shared_ptr<Callback> c) : v_(std::move(c)) {}
  Value(ObjectRef o) : v_(std::in_place_type<Boxed<ObjectRef>>, std::move(o)) {}
  Value(std::shared_ptr<HostObject> h) : v_(std::move(h)) {}
  Value(const Value& o) : v_(o.v_) {}
  // A Value moved from keeps its kind, emptied as that kind's move leaves it
  // (a string, a list, a shared_ptr), except a boxed kind (an object), which
  // becomes null: its box went with the move. An object moved onto itself
  // stays as it was. Scalars move by kind, inline without the variant's
  // visit: a Value made and moved into place (a list of numbers built from
  // native memory) costs a store, and no call per element whatever GCC
  // decides to inline.
  Value(Value&& o) noexcept { make_from(std::move(o)); }
  Value& operator=(const Value& o) {
    v_ = o.v_;
    return *this;
  }
  Value& operator=(Value&& o) noexcept {
    // A scalar here has nothing to destroy: made anew as o's kind (the call
    // paths assign scalar arguments this way, call after call).
    if (trivially_destroyed(type())) {
      make_from(std::move(o));
    } else {
      v_ = std::move(o.v_);
      o.box_moved();
    }
    return *this;
  }
  // Null, bools, numbers and addresses have nothing to destroy: a list of
  // them is dropped without a visit of each element's kind (the variant's
  // destructor is an indirect call per element, most of the cost of
  // dropping a list of numbers).
  ~Value() {
    if (!trivially_destroyed(type())) v_.~Storage();
  }

  Type type() const { return static_cast<Type>(v_.index()); }
  bool is_null() const { return type() == Type::null; }
  bool is_integer() const { return type() == Type::int64 || type() == Type::uint64; }
  // T is the kind as the host sees it (ObjectRef, not its box). as<T> throws
  // std::bad_variant_access when the Value holds another kind.
  template <class T> bool is() const { return std::holds_alternative<Stored<T>>(v_); }
  template <class T> const T& as() const {
    if constexpr (boxed<T>) return std::get<Boxed<T>>(v_).get();
    else return std::get<T>(v_);
  }
  template <class T> T& as() {
    if constexpr (boxed<T>) return std::get<Boxed<T>>(v_).get();
    else return std::get<T>(v_);
  }

  // Replace the value in place: no temporary Value, no visit when the kind is
  // the same as before (the call paths write results this way).
  void set_null() { v_.emplace<std::monostate>(); }
  void set_bool(bool b) { put(b); }
  void set_int(std::int64_t i) { put(i); }
  void set_uint(std::uint64_t u) {
    if (u <= static_cast<std::uint64_t>(INT64_MAX)) put(static_cast<std::int64_t>(u));
    else put(u);
  }
  void set_real(double d) { put(d); }
  void set_address(std::uintptr_t a) {
    if (a) put(Address{a});
    else set_null();
  }

  // Moves o's value here; scalars are copied by kind, without a visit.
  void take(Value&& o) noexcept {
    switch (o.type()) {
      case Type::null: set_null(); return;
      case Type::boolean: put(o.as<bool>()); return;
      case Type::int64: put(o.as<std::int64_t>()); return;
      case Type::uint64: put(o.as<std::uint64_t>()); return;
      case Type::real: put(o.as<double>()); return;
      case Type::address: put(o.as<Address>()); return;
      default:
        v_ = std::move(o.v_);
        o.box_moved();
        return;
    }
  }

  // A record's field, or nullptr.
  const Value* field(std::string_view name) const;
  // For messages: "an integer", "a string", ...
  std::string describe() const;

  // JSON form (TYPEMAP.md "Host values in JSON"): bytes are {"base64": "..."},
  // addresses {"address": "0x..."}, records keep their order. Doubles JSON
  // cannot hold are {"float": "inf" | "-inf" | "nan"}, read back the same way.
  nlohmann::ordered_json to_json() const;
  // Nesting deeper than max_value_depth (bounds.hpp) is an error, not a deep
  // recursion: false with a message.
  static bool from_json(const nlohmann::json& j, Value& out, std::string& error);
  static bool from_json(const nlohmann::ordered_json& j, Value& out, std::string& error);
  // The same, read from text without building a JSON document first: nesting
  // is bounded while parsing, an object that names a key twice is an error,
  // and integers are exact (JSON integers beyond 64 bits become doubles, which
  // integer types refuse: numeric.hpp).
  static bool parse_json(std::string_view text, Value& out, std::string& error);
  // Throws std::invalid_argument where the forms above return false.
  static Value from_json(const nlohmann::json& j);
  static Value from_json(const nlohmann::ordered_json& j);

  friend bool operator==(const Value& a, const Value& b);

 private:
  template <class T> void put(T x) {
    if (T* p = std::get_if<T>(&v_)) *p = x;
    else v_.template emplace<T>(x);
  }
  void set_unsigned(std::uint64_t u) {
    if (u <= static_cast<std::uint64_t>(INT64_MAX)) v_ = static_cast<std::int64_t>(u);
    else v_ = u;
  }
  // The kinds kept in a Boxed rather than inline: those larger than a
  // std::string (Value's largest inline kind), all rare in bulk data.
  template <class T> static constexpr bool boxed = std::is_same_v<T, ObjectRef>;
  template <class T> using Stored = std::conditional_t<boxed<T>, Boxed<T>, T>;
  // Constructs v_ (not alive, or a scalar: nothing to destroy, [basic.life])
  // from o's value; o may be this Value.
  void make_from(Value&& o) noexcept {
    switch (o.type()) {
      case Type::null: ::new (&v_) Storage(); return;
      case Type::boolean: make_scalar<Type::boolean>(o); return;
      case Type::int64: make_scalar<Type::int64>(o); return;
      case Type::uint64: make_scalar<Type::uint64>(o); return;
      case Type::real: make_scalar<Type::real>(o); return;
      case Type::address: make_scalar<Type::address>(o); return;
      default:  // not a scalar, so not this Value (which holds one or nothing)
        ::new (&v_) Storage(std::move(o.v_));
        o.box_moved();
        return;
    }
  }
  template <Type t> void make_scalar(const Value& o) noexcept {
    constexpr auto i = static_cast<std::size_t>(t);
    const auto x = *std::get_if<i>(&o.v_);  // read before v_ is made anew: o may be this
    ::new (&v_) Storage(std::in_place_index<i>, x);
  }
  // After v_ was moved from: a boxed kind's box is empty now (unless it was
  // moved onto itself), and a Value never holds an empty box (as<ObjectRef>
  // would read through null), so it becomes null. Inline, only the kind's
  // test: any more and GCC stops inlining the moves of Values (a list's
  // elements were moved by a call each, 2x the time of an out array).
  void box_moved() noexcept {
    if (type() == Type::object) [[unlikely]]
      null_if_box_empty();
  }
  void null_if_box_empty() noexcept;  // value.cpp
  static constexpr bool trivially_destroyed(Type t) { return t <= Type::real || t == Type::address; }
  static_assert(std::is_nothrow_move_constructible_v<Storage> && std::is_nothrow_move_assignable_v<Storage>);
  // In a union so that ~Value decides when the variant's destructor runs.
  union {
    Storage v_;
  };
};

// Out arrays of numbers and every list or record of values are arrays of
// Value: its size is their memory (10^6 int32 out are 10^6 Values). A kind
// larger than a std::string goes in a Boxed, keeping Value at a string plus
// the variant's index (40 bytes with libstdc++ on 64-bit targets).
static_assert(sizeof(Value) <= 48, "a large kind is stored inline in Value: box it (Boxed, Value::boxed)");

std::string base64_encode(const std::uint8_t* data, std::size_t n);
bool base64_decode(std::string_view text, std::vector<std::uint8_t>& out);

}  // namespace marshal::engine
