// marshal engine, base: structured errors.
// One table of error ids (each with a stable name) and the record a failure
// carries. Every layer keeps its `std::string& error` API; the site that fails
// also makes the record this thread's last error, and layers above that prefix
// the message add what they know (function, parameter) to the same record.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace marshal::engine {

// The ids, listed once (X-macro): id, stable name.
#define MARSHAL_ERROR_IDS(X)                                                                    \
  X(none, "none")                         /* no failure */                                      \
  X(invalid_argument, "invalid_argument") /* a wrong call of the API: arity, unknown name */    \
  X(typemap, "typemap")                   /* a typemap that does not load or validate */        \
  X(library_not_found, "library_not_found")                                                     \
  X(symbol_not_found, "symbol_not_found")                                                       \
  X(conversion, "conversion")             /* a host value of the wrong type or out of range */  \
  X(null_not_allowed, "null_not_allowed")                                                       \
  X(limit_exceeded, "limit_exceeded")     /* max_buffer, counts, nesting */                     \
  X(native_error, "native_error")         /* a check failed: errno, HRESULT, return value */    \
  X(native_crash, "native_crash")         /* a signal: guard mode, a crash in a surrogate */    \
  X(deadline_exceeded, "deadline_exceeded") /* a call outlasted its deadline (surrogate killed) */ \
  X(disconnected, "disconnected")         /* a surrogate or server went away during a call */   \
  X(refused, "refused")                   /* a server refused the client: TLS, its allowlist */ \
  X(wrong_apartment, "wrong_apartment")                                                         \
  X(released, "released")                 /* a handle, callback or object used after release */ \
  X(apartment_ended, "apartment_ended")                                                         \
  X(unsupported, "unsupported")           /* refused by the ABI or the engine */                \
  X(internal, "internal")                                                                       \
  X(unclassified, "unclassified")         /* a failure site that names no id yet */

enum class ErrorId : std::uint8_t {
#define MARSHAL_ERROR_ENUM(id, name) id,
  MARSHAL_ERROR_IDS(MARSHAL_ERROR_ENUM)
#undef MARSHAL_ERROR_ENUM
};

// The stable name of an id ("conversion"); "unknown" for a value outside the table.
const char* error_id_name(ErrorId id);
// The id of a stable name; false when no id has it.
bool error_id_from_name(std::string_view name, ErrorId& id);

// What native code reported, when the failure carries it.
enum class NativeCodeKind : std::uint8_t { none, errno_value, hresult, signal, return_value };

// One failure. Fields that are not known stay empty (-1 for the index).
// `message` is the one-line rendering: the text the `std::string& error` APIs give.
struct Error {
  ErrorId id = ErrorId::none;
  std::string file;          // the typemap
  std::string pointer;       // JSON Pointer into the typemap ("/functions/3/params/0/type")
  std::string function;      // the function (or Interface.method)
  int param_index = -1;      // the parameter's index in the signature
  std::string param_name;
  std::string got;           // what the host gave ("300", "a string")
  std::string expected;      // what was expected ("uint8 (0 to 255)")
  NativeCodeKind native_kind = NativeCodeKind::none;
  std::int64_t native_code = 0;  // errno, HRESULT, signal number, return value
  std::string message;

  explicit operator bool() const { return id != ErrorId::none; }
  const char* id_name() const { return error_id_name(id); }
};

// ---- this thread's last error ----------------------------------------------------------------
// Set only where something fails (never on a successful call); read by the
// bindings after an API call reported failure.
const Error& last_error();
void clear_last_error();
// Makes `e` the last error, sets `out` to its message; returns false (for `return fail(...)`).
bool set_error(std::string& out, Error e);
// Starts a record at a failure site: the last error becomes {id, message}; returns it to fill.
Error& raise_error(ErrorId id, std::string message);
// A layer above a failure: the record whose message is `inner` (the last error
// when it matches, else a new unclassified one), to fill and re-render. The
// caller then sets its message (and the record's) with the prefixed text.
Error& error_for(const std::string& inner);
// The id of the failure whose message is `message` (the last error's when it matches), else `otherwise`.
ErrorId error_id_of(const std::string& message, ErrorId otherwise);
// Prefixes a failure's message: out = prefix + inner, and the record follows.
// Returns the record (to add function, parameter...).
Error& prefix_error(std::string& out, const std::string& prefix, const std::string& inner);

}  // namespace marshal::engine
