// marshal engine: a loaded typemap.
// The validated, resolved form of one typemap file: named types (descriptors in
// the context's registry), function/callback/method signatures, interfaces and
// classes. Immutable once loaded; calling the signatures is the plan's business.
#pragma once

#include "base/error.hpp"
#include "types/type_desc.hpp"

#include <array>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace marshal::engine {

enum class Dir : std::uint8_t { in, out, inout };
std::string_view dir_name(Dir d);

enum class CallConv : std::uint8_t { default_, stdcall, fastcall, thiscall };

// Who frees returned memory (TYPEMAP.md, functions).
struct FreeWith {
  enum class How : std::uint8_t { unset, none, free, symbol, function };
  How how = How::unset;
  std::string library;  // "lib!symbol": lib
  std::string name;     // symbol, or function of this typemap
};

// Extension "value" (typemaps/README.md): an `in` integer parameter the engine
// computes from the typemap and the other arguments, so a host cannot make it
// disagree with the data it describes. The host does not supply it.
struct Computed {
  enum class Measure : std::uint8_t { none, size_of, count_of, bytes_of };
  Measure measure = Measure::none;
  std::uint64_t size = 0;   // size_of: the type's size in bytes
  TypeId type = no_type;    // size_of: the type
  std::uint32_t index = 0;  // count_of, bytes_of: the parameter measured
  std::string name;         // count_of, bytes_of: its name, for messages
  bool present() const { return measure != Measure::none; }
};
std::string_view measure_name(Computed::Measure m);  // "sizeof", "count_of", "bytes_of"

struct Param {
  std::string name;
  TypeId type = no_type;
  Dir dir = Dir::in;
  bool nullable = false;
  // "const": true (in pointers, arrays and strings only): C's promise that the
  // callee does not write through it. Host-owned native memory (and host data
  // already in the native layout) is then passed in place, without a copy;
  // guard mode maps what such a parameter passes read-only (base/guard.hpp).
  bool is_const = false;
  FreeWith free_with;  // extension: out/inout pointers to callee-allocated memory
  Computed value;      // extension: computed by the engine, not given by the host
  // Whether the host gives this parameter a value when it calls (in and inout
  // parameters that the engine does not compute). Every host-facing path
  // (plans, the CLI, the C and C++ APIs, objects) counts arguments by this.
  bool host_supplied() const { return dir != Dir::out && !value.present(); }
};

struct Check {
  enum class When : std::uint8_t { never, equals, null, nonzero, negative };
  When when = When::never;
  std::int64_t value = 0;
  bool error_errno = false;
  bool hresult = false;  // a method's HRESULT: failures are negative, shown in hex
};

struct OnError {
  bool present = false;
  nlohmann::ordered_json value;  // what native code receives when the host function fails
};

// What functions, callbacks and interface methods share.
struct Signature {
  std::string name;
  std::string pointer;  // JSON Pointer of its definition (for later errors)
  TypeId returns = no_type;
  FreeWith free_with;
  bool return_nullable = false;
  std::vector<Param> params;
  CallConv callconv = CallConv::default_;
  // Indices of the computed parameters (Param::value), in the order the engine
  // evaluates them: one measuring a string whose capacity is another computed
  // parameter comes after it (the loader refuses cycles).
  std::vector<std::uint32_t> computed;
};

struct Function : Signature {
  std::string symbol;
  std::string version;  // "name@VERSION": versioned ELF symbol
  bool capture_errno = false;
  int variadic_from = -1;  // -1: not variadic
  Check check;
};

enum class Delivery : std::uint8_t { inline_, owner };
struct CallbackSig : Signature {
  OnError on_error;
  Delivery delivery = Delivery::inline_;
};

struct Method : Signature {
  std::uint32_t slot = 0;  // vtable index, base interface first
  std::uint32_t ordinal = 0;  // position among all methods of the typemap (Typemap::method_count)
  bool hresult = false;
  OnError on_error;
};

using Guid = std::array<std::uint8_t, 16>;
std::optional<Guid> parse_guid(std::string_view text);

struct Interface {
  std::string name;
  std::optional<Guid> iid;
  const Interface* base = nullptr;
  std::vector<Method> methods;  // this interface's own methods
  std::uint32_t first_slot = 0;  // slots of the base interfaces come first
  bool refcounted = false;       // derives from IUnknown
  TypeId type = no_type;         // the {"interface": name} descriptor
  std::uint32_t slot_count() const { return first_slot + static_cast<std::uint32_t>(methods.size()); }
};

enum class Threading : std::uint8_t { apartment, free, both, neutral };
struct ClassDesc {
  std::string name;
  const Function* create = nullptr;
  const Interface* iface = nullptr;
  Threading threading = Threading::apartment;
};

struct LibrarySpec {
  std::string name;
  std::map<std::string, std::vector<std::string>> load;  // os -> candidates
  std::size_t max_buffer = 0;  // extension "max_buffer": bytes per value; 0: the default (bounds.hpp)
  bool guard = false;          // extension "guard": guard mode (guard.hpp) for every call
  // "isolate": "process" runs the library in a surrogate process (remote/surrogate.hpp);
  // "none" (the default) loads it in-process. Library::open always loads in-process:
  // the choice is made above it (the surrogate itself opens the library in-process).
  enum class Isolate : std::uint8_t { none, process };
  Isolate isolate = Isolate::none;
  std::uint64_t deadline_ms = 0;  // extension "deadline_ms": an isolated call that takes longer is killed; 0: none
  bool present = false;
};

struct Typemap {
  std::string file;
  std::uint32_t method_count = 0;  // methods of all interfaces (Method::ordinal)
  LibrarySpec library;
  LayoutRule default_layout = LayoutRule::sysv;
  std::optional<Encoding> default_string;  // /defaults/string: what the bare name "string" means
  TypeId default_bool = no_type;           // /defaults/bool: what the bare name "bool" means
  std::map<std::string, TypeId> types;  // named types (aliases resolve to their target)
  std::map<std::string, Function> functions;
  std::map<std::string, CallbackSig> callbacks;
  std::map<std::string, Interface> interfaces;
  std::map<std::string, ClassDesc> classes;
  std::map<std::string, nlohmann::ordered_json> constants;

  TypeId find_type(const std::string& name) const {
    auto it = types.find(name);
    return it == types.end() ? no_type : it->second;
  }
};

// Text from a typemap (a name, a key, a value) made safe for a one-line
// message: newline, carriage return and tab become \n, \r, \t, any other
// control character \u00XX; everything else (UTF-8 too) is kept.
std::string escape_for_message(std::string_view text);

// One problem found while loading, anchored at a JSON Pointer in a file.
// Its parts are escaped (escape_for_message): an error never spans two lines.
struct Diagnostic {
  std::string file;
  std::string pointer;  // RFC 6901; the document root is shown as "/"
  std::string message;
  std::string text() const { return file + ": " + (pointer.empty() ? "/" : pointer) + ": " + message; }
  // The structured record (id typemap), its message the text().
  Error record() const {
    Error e;
    e.id = ErrorId::typemap;
    e.file = file;
    e.pointer = pointer.empty() ? "/" : pointer;
    e.message = text();
    return e;
  }
};

}  // namespace marshal::engine
