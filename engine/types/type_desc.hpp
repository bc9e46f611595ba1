// marshal engine: type descriptors.
// One small immutable record per type, kinds listed once (X-macro), interned in a
// TypeRegistry owned by a Context and referred to by a TypeId handle.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace marshal::engine {

// ---- kinds --------------------------------------------------------------
// Every switch over Kind is checked by the compiler (-Werror=switch).
#define MARSHAL_KINDS(X)                                                       \
  X(void_, "void")           /* returns only */                               \
  X(integer, "integer")      /* fixed-width and C platform integers */        \
  X(floating, "float")       /* float32/float64 and C float/double */         \
  X(boolean, "bool")         /* cbool, bool32, {"bool": N, "true": V} */      \
  X(pointer, "pointer")      /* opaque void*, passed as an address value */   \
  X(ptr, "ptr")              /* pointer to one T */                           \
  X(array, "array")          /* inline T[N] in structs, T* as parameters */   \
  X(string, "string")        /* encoded text, pointer or inline buffer */     \
  X(struct_, "struct")                                                         \
  X(union_, "union")                                                           \
  X(enum_, "enum")                                                             \
  X(handle, "handle")        /* opaque pointer or integer with identity */    \
  X(callback, "callback")    /* function pointer built from a host function */\
  X(interface, "interface")  /* pointer to a COM-style object */

enum class Kind : std::uint8_t {
#define MARSHAL_KIND_ENUM(id, spelling) id,
  MARSHAL_KINDS(MARSHAL_KIND_ENUM)
#undef MARSHAL_KIND_ENUM
};
std::string_view kind_name(Kind k);

// ---- primitives ------------------------------------------------------------
// (id, spelling in typemaps, kind, C type). Sizes come from the target ABI: the
// C type as this compiler lays it out (long is 8 bytes on LP64 Linux, wchar_t 4).
#define MARSHAL_PRIMITIVES(X)                                                  \
  X(int8, "int8", integer, std::int8_t)                                       \
  X(uint8, "uint8", integer, std::uint8_t)                                    \
  X(int16, "int16", integer, std::int16_t)                                    \
  X(uint16, "uint16", integer, std::uint16_t)                                 \
  X(int32, "int32", integer, std::int32_t)                                    \
  X(uint32, "uint32", integer, std::uint32_t)                                 \
  X(int64, "int64", integer, std::int64_t)                                    \
  X(uint64, "uint64", integer, std::uint64_t)                                 \
  X(float32, "float32", floating, float)                                      \
  X(float64, "float64", floating, double)                                     \
  X(c_char, "char", integer, char)                                            \
  X(schar, "schar", integer, signed char)                                     \
  X(uchar, "uchar", integer, unsigned char)                                   \
  X(c_short, "short", integer, short)                                         \
  X(ushort, "ushort", integer, unsigned short)                                \
  X(c_int, "int", integer, int)                                               \
  X(uint, "uint", integer, unsigned int)                                      \
  X(c_long, "long", integer, long)                                            \
  X(ulong, "ulong", integer, unsigned long)                                   \
  X(longlong, "longlong", integer, long long)                                 \
  X(ulonglong, "ulonglong", integer, unsigned long long)                      \
  X(size_t_, "size_t", integer, std::size_t)                                  \
  X(ssize_t_, "ssize_t", integer, std::ptrdiff_t)                             \
  X(intptr_t_, "intptr_t", integer, std::intptr_t)                            \
  X(uintptr_t_, "uintptr_t", integer, std::uintptr_t)                         \
  X(ptrdiff_t_, "ptrdiff_t", integer, std::ptrdiff_t)                         \
  X(wchar_t_, "wchar_t", integer, wchar_t)                                    \
  X(char16_t_, "char16_t", integer, char16_t)                                 \
  X(char32_t_, "char32_t", integer, char32_t)                                 \
  X(c_float, "float", floating, float)                                        \
  X(c_double, "double", floating, double)

enum class Prim : std::uint8_t {
  none,  // not a primitive
#define MARSHAL_PRIM_ENUM(id, spelling, kind, ctype) id,
  MARSHAL_PRIMITIVES(MARSHAL_PRIM_ENUM)
#undef MARSHAL_PRIM_ENUM
};

// ---- handles and flags -------------------------------------------------------
using TypeId = std::uint32_t;
inline constexpr TypeId no_type = 0;  // "failed or absent"; never a valid descriptor

enum TypeFlag : std::uint16_t {
  flag_complete = 1 << 0,       // size, align and offsets are final
  flag_blittable = 1 << 1,      // native bits equal the host's raw buffer; no conversion
  flag_signed = 1 << 2,         // integers, enums (through their underlying type)
  flag_msvc_layout = 1 << 3,    // struct/union laid out by MSVC rules
  flag_variable_size = 1 << 4,  // struct ends in a flexible array member
  flag_refcounted = 1 << 5,     // interface derives from IUnknown
};

// ---- kind-specific payloads --------------------------------------------------
// Where an element count comes from (TYPEMAP.md, arrays).
struct Count {
  enum class Source : std::uint8_t { none, constant, param, field, return_value, sentinel };
  Source source = Source::none;
  std::uint64_t constant = 0;
  std::uint32_t index = 0;      // parameter or field index, resolved at load
  std::string name;             // parameter or field name, for messages
  bool sentinel_null = false;   // sentinel is null (for pointer-like elements)
  std::int64_t sentinel = 0;    // sentinel integer (bits, for unsigned too)
  bool present() const { return source != Source::none; }
};

struct BoolInfo { std::int64_t true_value = 1; };

struct ArrayInfo {
  Count count;   // capacity: how many elements exist (constant inline, or a pointer's)
  Count length;  // optional: how many the callee actually wrote
};
// An array type is storage, as in C: T[N] inline in a struct, and a parameter of
// array type decays to a pointer to its first element. A non-constant count is
// storage of unknown size (behind a pointer, a parameter, or a last struct field).

enum class Encoding : std::uint8_t { utf8, utf16, utf32, wchar, latin1, ascii, bytes };
enum class Terminator : std::uint8_t { nul, none, double_nul };
enum class Unmappable : std::uint8_t { error, replace };
std::string_view encoding_name(Encoding e);
std::size_t encoding_unit(Encoding e);  // bytes per code unit

struct StringInfo {
  Encoding encoding = Encoding::utf8;
  Terminator terminator = Terminator::nul;
  Unmappable unmappable = Unmappable::error;
  Count length;
  Count capacity;  // constant capacity on a struct field = inline char[N]
  bool inline_storage = false;  // a struct field char x[N] (else a pointer)
};

struct Field {
  std::string name;
  TypeId type = no_type;
  std::uint32_t offset = 0;      // bytes; for bitfields the byte holding the first bit
  std::uint16_t bit_offset = 0;  // bitfields: first bit within the byte at offset
  std::uint16_t bits = 0;        // bitfields: width (0 with is_bitfield: a zero-width run break)
  bool is_bitfield = false;
  bool nullable = false;
  bool has_explicit_offset = false;
  std::uint32_t explicit_offset = 0;
};

enum class LayoutRule : std::uint8_t { sysv, msvc };

struct RecordInfo {
  std::vector<Field> fields;
  std::uint32_t pack = 0;  // 0: natural; else #pragma pack(N)
  LayoutRule rule = LayoutRule::sysv;
  int size_field = -1;     // index of the field filled with sizeof on the way in
};

struct EnumItem { std::string name; std::int64_t value; };
struct EnumInfo {
  std::vector<EnumItem> items;
  bool flags = false;
};

struct HandleInfo {
  std::vector<std::int64_t> invalid;  // values rejected on the way in
  std::string release;                // function called when the host drops the handle
  bool by_pointer = true;             // an opaque pointer (else an integer such as an fd)
};

struct CallbackSig;  // typemap.hpp
struct Interface;    // typemap.hpp
enum class Scope : std::uint8_t { call, registered };
struct CallbackInfo { const CallbackSig* sig = nullptr; Scope scope = Scope::call; };
struct InterfaceInfo { const Interface* iface = nullptr; };

using TypeInfo = std::variant<std::monostate, BoolInfo, ArrayInfo, StringInfo, RecordInfo,
                              EnumInfo, HandleInfo, CallbackInfo, InterfaceInfo>;

// ---- the descriptor -------------------------------------------------------------
struct TypeDesc {
  Kind kind = Kind::void_;
  Prim prim = Prim::none;
  std::uint16_t flags = 0;
  std::uint32_t size = 0;
  std::uint32_t align = 1;
  TypeId ref = no_type;  // pointee (ptr), element (array), underlying (enum, handle)
  std::string name;      // named types and primitives; empty for anonymous ones
  TypeInfo info;

  bool has(TypeFlag f) const { return (flags & f) != 0; }
  template <class T> const T& as() const { return std::get<T>(info); }
  template <class T> T& as() { return std::get<T>(info); }
};

// True for kinds passed as a machine pointer (what "nullable" may apply to).
bool is_pointer_like(const TypeDesc& d);

}  // namespace marshal::engine
