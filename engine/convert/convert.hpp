// marshal engine: marshalers.
// to_native writes a host value as a type's native representation (allocating
// what pointers point to in the call's arena); to_host reads it back. Counts come
// from sibling fields or from the call's parameters (CallFrame). Errors are
// values: a false return, and a message built innermost-first.
#pragma once

#include "base/arena.hpp"
#include "base/bounds.hpp"
#include "base/error.hpp"
#include "types/registry.hpp"
#include "types/typemap.hpp"
#include "values/value.hpp"

#include <cstring>
#include <span>
#include <string>

namespace marshal::engine {

class HandleTable;

// Callbacks and objects belong to the layers above (callbacks/, objects/); the
// marshaler reaches them through this interface, which those layers and the
// call layer implement. Values are never null here (the marshaler checks
// `nullable` itself). false with a message in `why`.
class ReferenceMarshaler {
 public:
  virtual ~ReferenceMarshaler() = default;
  // The native code pointer for a callback parameter.
  virtual bool callback_to_native(const CallbackInfo& info, const Value& v, void*& code, std::string& why) = 0;
  // An interface pointer for an object value (transfer: it carries a reference).
  virtual bool object_to_native(const Value& v, const Interface& iface, bool transfer, bool nullable, void*& out,
                                std::string& why) = 0;
  virtual bool object_to_host(void* p, const Interface& iface, bool transfer, Value& out, std::string& why) = 0;
};

// The parameters of the call being made, for {"param": ...} and {"return": true} counts.
struct CallFrame {
  const Signature* sig = nullptr;
  std::span<const Value* const> host;   // per parameter index (nullptr for out parameters)
  std::span<void* const> pointee;       // per parameter: native storage behind a ptr parameter
  bool after = false;                   // the call has returned
  std::int64_t return_int = 0;          // the return value, when it is an integer
  std::uint32_t param_offset = 0;       // 1 for methods: counts index the method's params, sig has `this` first
};

// Where a value sits: for counts that name sibling fields.
struct Ctx {
  const CallFrame* frame = nullptr;
  const RecordInfo* rec = nullptr;
  const Value* host_rec = nullptr;        // to_native: the host record being written
  const std::byte* native_rec = nullptr;  // to_host: the native record being read
  bool nullable = false;
  // Objects: the pointer carries one reference from the writer to the reader
  // (returns and out parameters, as in COM); otherwise it is borrowed.
  bool transfer = false;
  // The parameter is `const` (Param::is_const): host-owned native memory and
  // host data already in the native layout go in place, without a copy; in
  // guard mode they are copied and the copy is mapped read-only instead.
  bool is_const = false;
};

class Marshaler {
 public:
  Marshaler(const TypeRegistry& reg, Arena& arena, HandleTable* handles) : reg_(reg), arena_(arena), handles_(handles) {}

  bool to_native(TypeId t, const Value& v, void* dst, const Ctx& c);
  bool to_host(TypeId t, const void* src, Value& out, const Ctx& c);

  // Arrays and strings behind a pointer (parameters, ptr pointees, pointer fields).
  // pin: host-owned native memory of the element type is passed by address
  // (inout: the callee writes the host's memory, which is the copy-back);
  // otherwise it is copied once, as all `in` data is, unless c.is_const.
  bool array_to_native(TypeId array, const Value& v, const Ctx& c, void*& out, bool pin = false);
  bool array_to_host(TypeId array, const void* data, const Ctx& c, Value& out, const Count* length = nullptr);
  // What array_to_host converts: the element count (its length or count, a
  // sentinel scanned), checked readable; then the elements.
  bool array_length(TypeId array, const void* data, const Ctx& c, std::uint64_t& n, const Count* length = nullptr);
  bool elements_to_host(TypeId elem, const std::byte* mem, std::uint64_t n, const Ctx& c, Value& out);
  // An `in` string's `length` (when the host gives it) must not exceed the
  // host's string: the callee reads that many units.
  // `units`, when given, receives the code units written, without the terminator.
  bool string_to_native(const StringInfo& s, const Value& v, std::size_t capacity_units, void*& out, const Ctx& c,
                        std::size_t* units = nullptr);
  bool string_to_host(const StringInfo& s, const void* data, std::size_t max_units, const Ctx& c, Value& out);

  // The value of a count; for sentinel counts of host lists, the list's size.
  bool count(const Count& n, const Ctx& c, std::uint64_t& out);
  // Native bytes a value of type t needs (variable-size structs: with their tail).
  // Host-owned native memory passed as it is for a struct ending in a flexible
  // array member: the count field in the memory must not reach past it.
  bool native_box_fits(TypeId t, const NativeBox& box);
  bool native_size(TypeId t, const Value& v, std::size_t& out);

  // Bytes of a buffer of n units of `unit` bytes: an error naming the count
  // (from `source`, when given) when the product overflows or exceeds max_buffer.
  bool buffer_bytes(std::uint64_t n, std::size_t unit, const Count* source, std::size_t& bytes);
  // A length the callee reports for an array of `capacity` elements: at most that.
  bool length_within(std::uint64_t length, std::uint64_t capacity);
  // Records memory handed to native code, so what it reports is read within it.
  void lend(const void* p, std::size_t bytes) { lent_.add(p, bytes); }

  std::string error;
  // What the failure is (base/error.hpp), and for a conversion what the host
  // gave and what was expected; set with `error`, read by the plan.
  ErrorId error_id = ErrorId::none;
  std::string error_got, error_expected;
  // The largest buffer allocated, copied or read for one value (bounds.hpp).
  std::size_t max_buffer = default_max_buffer;
  // Callbacks and objects (null: not available here).
  ReferenceMarshaler* refs = nullptr;

  const TypeRegistry& types() const { return reg_; }
  Arena& arena() { return arena_; }

 private:
  bool fail(std::string message, ErrorId id = ErrorId::conversion, std::string got = {}, std::string expected = {}) {
    error = std::move(message);
    error_id = id;
    error_got = std::move(got);
    error_expected = std::move(expected);
    return false;
  }
 public:
  // A failure reported by an interface (ReferenceMarshaler): its id when it raised one (base/error.hpp).
  bool fail_from(std::string why) {
    const ErrorId id = error_id_of(why, ErrorId::conversion);
    return fail(std::move(why), id);
  }
  // The one "null is not allowed" failure, for a value that is not nullable.
  bool fail_null() { return fail("null is not allowed here (not nullable)", ErrorId::null_not_allowed, "null"); }
 private:
  bool prefix(const std::string& where) {
    // A pointer chain past the nesting limit names the place once, not 256 times.
    if (nest_failed_ && error.rfind(where + ": ", 0) == 0) return false;
    error = where + ": " + error;
    return false;
  }
  // string_to_native's conversion into a buffer of this call (or `out`, when given).
  bool string_copy_to_native(const StringInfo& s, const Value& v, std::size_t capacity_units, void*& out,
                             const Ctx& c, std::size_t* units);
  bool record_to_native(const TypeDesc& d, const Value& v, std::byte* dst, const Ctx& c);
  bool record_to_host(const TypeDesc& d, const std::byte* src, Value& out, const Ctx& c);
  // n units at p may be read: within max_buffer, and within the buffer this
  // call lent when p is in one (what native code reports is not trusted).
  bool readable(const void* p, std::uint64_t n, std::size_t unit, const Count* source);
  // Pointer chains (to_native, to_host) nest at most max_value_depth deep.
  bool enter(bool to_native);
  // Guard mode: what a const parameter passes becomes read-only for the call
  // (p is a buffer this call's arena allocated). Outside guard mode: nothing.
  void read_only(const Ctx& c, const void* p);

  const TypeRegistry& reg_;
  Arena& arena_;
  HandleTable* handles_;
  LentBuffers lent_;
  std::size_t depth_ = 0;
  bool nest_failed_ = false;
};

// Integers in native memory of a descriptor's size and signedness.
inline std::int64_t load_signed(const void* p, std::uint32_t size) {
  switch (size) {
    case 1: { std::int8_t v; std::memcpy(&v, p, 1); return v; }
    case 2: { std::int16_t v; std::memcpy(&v, p, 2); return v; }
    case 4: { std::int32_t v; std::memcpy(&v, p, 4); return v; }
    default: { std::int64_t v; std::memcpy(&v, p, 8); return v; }
  }
}

inline std::uint64_t load_unsigned(const void* p, std::uint32_t size) {
  switch (size) {
    case 1: { std::uint8_t v; std::memcpy(&v, p, 1); return v; }
    case 2: { std::uint16_t v; std::memcpy(&v, p, 2); return v; }
    case 4: { std::uint32_t v; std::memcpy(&v, p, 4); return v; }
    default: { std::uint64_t v; std::memcpy(&v, p, 8); return v; }
  }
}

inline void store_bits(void* p, std::uint32_t size, std::uint64_t bits) {
  switch (size) {
    case 1: { std::uint8_t v = static_cast<std::uint8_t>(bits); std::memcpy(p, &v, 1); break; }
    case 2: { std::uint16_t v = static_cast<std::uint16_t>(bits); std::memcpy(p, &v, 2); break; }
    case 4: { std::uint32_t v = static_cast<std::uint32_t>(bits); std::memcpy(p, &v, 4); break; }
    default: std::memcpy(p, &bits, 8);
  }
}

}  // namespace marshal::engine
