// marshal: the stable C API over the engine.
// Every handle the host holds is checked on entry (handles.hpp): misuse is an
// error with a message, never undefined behaviour. Each entry point catches
// every exception and turns it into a status plus a per-thread message;
// reference counts live in the handle's slot; values read out of containers
// are wrappers cached in (and owned by) their container.
#include "marshal.h"

#include "handles.hpp"
#include "convert/native.hpp"

#include "apartments/apartment.hpp"
#include "typemap/context.hpp"
#include "objects/object.hpp"
#include "call/arguments.hpp"
#include "call/library.hpp"
#include "call/host_io.hpp"
#include "remote/surrogate.hpp"
#include "values/value.hpp"
#include "base/error.hpp"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace marshal_c {

// ---- the error record (marshal_error) ----
// What marshal_last_error() points to: the calling thread's last failure.
struct ErrorRecord {
  marshal_error_code id = MARSHAL_E_NONE;
  std::string message, function, parameter_name, pointer, file, got, expected;
  std::int64_t parameter_index = -1;
  std::int64_t native_code = -1;
};
thread_local ErrorRecord error_record;

// A new failure: every field but the id and the message is unknown until the
// failing site fills it.
void set_error(marshal_error_code id, std::string message) {
  ErrorRecord& e = error_record;
  e.id = id;
  e.message = std::move(message);
  e.function.clear();
  e.parameter_name.clear();
  e.pointer.clear();
  e.file.clear();
  e.got.clear();
  e.expected.clear();
  e.parameter_index = -1;
  e.native_code = -1;
}

// ---- the objects behind the handles ----

// What a call is about, for its error record: the typemap function or
// method, its file, and (functions) its signature.
struct Site {
  const marshal::engine::Signature* sig = nullptr;  // nullptr: not known here (methods are resolved by the engine)
  const std::string* file = nullptr;
  std::string_view function;
  std::string_view iface;  // methods named without their interface
};


struct CTypemap;

struct CContext {
  // Shared with every engine library opened from it: objects and callbacks
  // may keep a library (and so its types) alive after the context handle goes.
  std::shared_ptr<marshal::engine::Context> ctx = std::make_shared<marshal::engine::Context>();
  std::mutex mutex;
  std::vector<std::unique_ptr<CTypemap>> typemaps;
};

// Belongs to its context: its handle dies with the context's.
struct CTypemap {
  Bits self = 0;
  Bits context = 0;
  CContext* ctx = nullptr;
  const marshal::engine::Typemap* tm = nullptr;
  std::string text;  // the JSON (marshal_typemap_load_text), for a surrogate to load too
  std::string path;  // or the file it was read from (marshal_typemap_load)
};

// Belongs to its library: its handle dies with the library's (a function of a
// released library fails cleanly; it does not keep the library alive).
struct CFunction {
  Bits self = 0;
  Bits library = 0;
  const marshal::engine::Plan* plan = nullptr;  // null: a function of an isolated library
  const marshal::engine::Function* fn = nullptr;
  const marshal::engine::TypeRegistry* types = nullptr;
  marshal::engine::remote::IsolatedLibrary* isolated = nullptr;  // its library's (which owns this function)
  Site site;  // for errors
  // Argument counts it takes, made once (set_counts): without its computed
  // parameters, and with them (0: it has none, call/arguments.hpp).
  std::size_t host_count = 0, full_count = 0;
  // An out or inout parameter is an array (set_counts): a reused result
  // converts it into the list its previous call left (ReusedResults).
  bool out_arrays = false;
};

// A function's signature as the host reads it (introspection), with its
// types as text made once. Belongs to its library, like a function.
struct CSignature {
  Bits self = 0;
  const marshal::engine::Signature* sig = nullptr;
  std::int64_t variadic_from = -1;
  std::string returns;
  std::vector<std::string> types;  // one per parameter
};

// A type as the host reads it, copied out of the registry once.
struct CType {
  struct FieldInfo {
    std::string name;
    std::size_t offset;
    std::string type;
  };
  Bits self = 0;
  marshal_type_kind kind = MARSHAL_TYPE_VOID;
  std::size_t size = 0, align = 0;
  std::string text;
  std::vector<FieldInfo> fields;
};

struct CLibrary {
  Bits context = 0;  // one reference, dropped with the library
  std::shared_ptr<marshal::engine::Library> lib;  // null when isolated
  // An isolated library (in a surrogate process) and the context holding its typemap.
  std::shared_ptr<marshal::engine::Context> isolated_ctx;
  std::unique_ptr<marshal::engine::remote::IsolatedLibrary> isolated;
  const marshal::engine::Typemap& typemap() const { return lib ? lib->typemap() : isolated->typemap(); }
  const marshal::engine::TypeRegistry& registry() const { return lib ? lib->context().types() : isolated_ctx->types(); }
  std::mutex mutex;
  std::map<std::string, std::unique_ptr<CFunction>> functions;
  std::map<std::string, std::unique_ptr<CSignature>> signatures;
  std::map<std::string, std::unique_ptr<CType>> types;
  // The typemap's function and type names in order, for index lookups.
  std::vector<const std::string*> function_names, type_names;
};

struct CResult {
  Bits ret = 0;  // borrowed values: the result holds their one reference
  std::vector<std::pair<std::string, Bits>> outs;
  bool has_errno = false;
  int err = 0;
  marshal::engine::CallResult scratch;  // what the engine writes; moved into the values above
  // Out lists the last publish replaced in the values above, by parameter
  // name: the next call into this result writes its out arrays of scalars
  // into them (ReusedResults) instead of building new lists.
  marshal::engine::Record spare;
};

struct CValue {
  marshal::engine::Value v;
  // Handles given out for list items or record fields, each holding one
  // reference owned by this value, by index (0: none made); rebuilt after the
  // container changes. kid_made lists the indexes made, so that dropping
  // them costs what was made, not the container's size (the zeros stay).
  std::vector<Bits> kids;
  std::vector<std::size_t> kid_made;
  // Owned by a container, a result or a host function's argument list: the
  // host may read it and retain it, not release it or change it.
  std::atomic<bool> borrowed{false};

  // Values are made and dropped on every call that converts one (arguments
  // of C host functions, their results): each thread keeps a few freed
  // blocks for its next values instead of going to the allocator.
  static void* operator new(std::size_t size);
  static void operator delete(void* p, std::size_t size) noexcept;
};

template <> struct kind_for<CContext> { static constexpr Kind value = Kind::context; };
template <> struct kind_for<CTypemap> { static constexpr Kind value = Kind::typemap; };
template <> struct kind_for<CLibrary> { static constexpr Kind value = Kind::library; };
template <> struct kind_for<CFunction> { static constexpr Kind value = Kind::function; };
template <> struct kind_for<CResult> { static constexpr Kind value = Kind::result; };
template <> struct kind_for<CValue> { static constexpr Kind value = Kind::value; };
template <> struct kind_for<CSignature> { static constexpr Kind value = Kind::signature; };
template <> struct kind_for<CType> { static constexpr Kind value = Kind::type; };

// Freed blocks kept per thread (handles.hpp, PerThread) for the next values.
// The allocator's own pair is called out of line: a block may have come from
// the cache or from ::operator new, which the compiler cannot tell apart.
[[gnu::noinline]] static void* allocate_block(std::size_t size) { return ::operator new(size); }
[[gnu::noinline]] static void free_block(void* p) noexcept { ::operator delete(p); }

void* CValue::operator new(std::size_t size) {
  if (size == sizeof(CValue))
    if (PerThread* t = per_thread(); t && t->nblocks) return t->blocks[--t->nblocks];
  return allocate_block(size);
}

void CValue::operator delete(void* p, std::size_t size) noexcept {
  if (size == sizeof(CValue))
    if (PerThread* t = per_thread(); t && t->nblocks < PerThread::max_blocks) {
      t->blocks[t->nblocks++] = p;
      return;
    }
  free_block(p);
}

namespace {

// ---- errors ----
// One record per thread (marshal_last_error), rewritten by every failure:
// the id and message always, the other fields where the failing entry point
// knows them for certain (marshal.h says which).

// What each status means when the failing site says nothing finer.
marshal_error_code default_id(marshal_status s) {
  switch (s) {
    case MARSHAL_OK: return MARSHAL_E_NONE;
    case MARSHAL_ERROR_ARGUMENT: return MARSHAL_E_INVALID_ARGUMENT;
    case MARSHAL_ERROR_TYPEMAP: return MARSHAL_E_TYPEMAP;
    case MARSHAL_ERROR_LIBRARY: return MARSHAL_E_LIBRARY_NOT_FOUND;
    case MARSHAL_ERROR_BIND: return MARSHAL_E_BIND;
    case MARSHAL_ERROR_CALL: return MARSHAL_E_CALL;
    case MARSHAL_ERROR_INTERNAL: return MARSHAL_E_INTERNAL;
    case MARSHAL_ERROR_INVALID_HANDLE: return MARSHAL_E_INVALID_ARGUMENT;
    case MARSHAL_ERROR_MISUSE: return MARSHAL_E_MISUSE;
  }
  return MARSHAL_E_INTERNAL;
}

// The engine's id of a failure as the C API's.
marshal_error_code c_id(marshal::engine::ErrorId id) {
  using marshal::engine::ErrorId;
  switch (id) {
    case ErrorId::invalid_argument: return MARSHAL_E_INVALID_ARGUMENT;
    case ErrorId::typemap: return MARSHAL_E_TYPEMAP;
    case ErrorId::library_not_found: return MARSHAL_E_LIBRARY_NOT_FOUND;
    case ErrorId::symbol_not_found: case ErrorId::unsupported: return MARSHAL_E_BIND;
    case ErrorId::conversion: return MARSHAL_E_CONVERSION;
    case ErrorId::null_not_allowed: return MARSHAL_E_NULL_NOT_ALLOWED;
    case ErrorId::limit_exceeded: return MARSHAL_E_LIMIT;
    case ErrorId::native_error: return MARSHAL_E_NATIVE;
    case ErrorId::native_crash: return MARSHAL_E_NATIVE_CRASH;
    case ErrorId::deadline_exceeded: return MARSHAL_E_DEADLINE;
    case ErrorId::disconnected: return MARSHAL_E_DISCONNECTED;
    case ErrorId::refused: return MARSHAL_E_REFUSED;
    case ErrorId::wrong_apartment: return MARSHAL_E_WRONG_APARTMENT;
    case ErrorId::released: return MARSHAL_E_RELEASED;
    case ErrorId::internal: return MARSHAL_E_INTERNAL;
    case ErrorId::none: case ErrorId::apartment_ended: case ErrorId::unclassified: break;
  }
  return MARSHAL_E_NONE;
}

// A failure the engine reported with a record (base/error.hpp): its id and
// fields, when the record is this failure's (the same message), else nothing.
void adopt_engine_error(const std::string& message) {
  const marshal::engine::Error& e = marshal::engine::last_error();
  if (!e || e.message.empty() || message.size() < e.message.size() ||
      message.compare(message.size() - e.message.size(), e.message.size(), e.message) != 0)
    return;
  ErrorRecord& r = error_record;
  if (marshal_error_code id = c_id(e.id); id != MARSHAL_E_NONE) r.id = id;
  if (!e.function.empty()) r.function = e.function;
  if (!e.file.empty()) r.file = e.file;
  if (!e.pointer.empty()) r.pointer = e.pointer;
  if (e.param_index >= 0) {
    r.parameter_index = e.param_index;
    r.parameter_name = e.param_name;
  }
  if (!e.got.empty()) r.got = e.got;
  if (!e.expected.empty()) r.expected = e.expected;
  if (e.native_kind != marshal::engine::NativeCodeKind::none) r.native_code = e.native_code;
}

marshal_status fail(marshal_status s, std::string message, marshal_error_code id = MARSHAL_E_NONE) {
  set_error(id == MARSHAL_E_NONE ? default_id(s) : id, std::move(message));
  // Calls and binds: the engine's record, when it has one for this failure, is finer.
  if (id == MARSHAL_E_NONE && (s == MARSHAL_ERROR_CALL || s == MARSHAL_ERROR_BIND || s == MARSHAL_ERROR_LIBRARY))
    adopt_engine_error(error_record.message);
  return s;
}

// Runs body, turning any exception into MARSHAL_ERROR_INTERNAL.
template <class F>
marshal_status guarded(const char* api, F&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": out of memory");
  } catch (const std::exception& e) {
    return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": internal error: " + e.what());
  } catch (...) {
    return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": internal error");
  }
}

marshal_status null_arg(const char* api, const char* param) {
  return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": " + param + " is NULL");
}

// A handle find() refused: NULL is an argument error, anything else an
// invalid handle, with what is wrong with it. `param` names it when the
// function takes more than one handle.
marshal_status bad_handle(const char* api, const char* param, const void* h, Kind k, bool releasing = false) {
  if (!h) return null_arg(api, param ? param : kind_name(k));
  std::string m = std::string(api) + ": ";
  if (param) m += std::string(param) + ": ";
  return fail(MARSHAL_ERROR_INVALID_HANDLE, m + Handles::diagnose(h, k, releasing),
              Handles::stale(h, k) ? MARSHAL_E_RELEASED : MARSHAL_E_INVALID_ARGUMENT);
}

// For functions that answer with a count or a pointer: the message only.
void note_bad_handle(const char* api, const char* param, const void* h, Kind k) { bad_handle(api, param, h, k); }

// "a string", "an integer": what a value holds, for messages.
const char* noun(const marshal::engine::Value& v) {
  switch (v.type()) {
    case marshal::engine::Value::Type::null: return "null";
    case marshal::engine::Value::Type::boolean: return "a bool";
    case marshal::engine::Value::Type::int64: case marshal::engine::Value::Type::uint64: return "an integer";
    case marshal::engine::Value::Type::real: return "a double";
    case marshal::engine::Value::Type::string: return "a string";
    case marshal::engine::Value::Type::bytes: return "bytes";
    case marshal::engine::Value::Type::list: return "a list";
    case marshal::engine::Value::Type::record: return "a record";
    case marshal::engine::Value::Type::address: return "an address";
    case marshal::engine::Value::Type::handle: return "a handle";
    case marshal::engine::Value::Type::native: return "native memory";
    case marshal::engine::Value::Type::function: return "a host function";
    case marshal::engine::Value::Type::callback: return "a callback";
    case marshal::engine::Value::Type::object: return "a native object";
    case marshal::engine::Value::Type::host_object: return "a host object";
  }
  return "?";
}

marshal_status wrong_kind(const char* api, const CValue* v, const char* want,
                          marshal_error_code id = MARSHAL_E_INVALID_ARGUMENT) {
  std::string got = v->v.describe();
  fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": expected " + want + ", got " + got, id);
  error_record.got = std::move(got);
  error_record.expected = want;
  return MARSHAL_ERROR_ARGUMENT;
}

// Counts and lengths from the host: more than PTRDIFF_MAX is a negative
// number passed as size_t, never a real size.
bool huge(std::size_t n) { return n > static_cast<std::size_t>(PTRDIFF_MAX); }

marshal_status huge_count(const char* api, const char* param, std::size_t n) {
  return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": " + param + " is " + std::to_string(n) +
                                          ", more than PTRDIFF_MAX (a negative count?)");
}

// ---- calls in progress on this thread ----
// A host function runs inside a call; what that call uses (its library, its
// result, its object and arguments) must outlive it even when the host
// function drops the last reference. Such a release is deferred to the end of
// the call: the handle is dead at once for the host, the object lives on for
// the engine. Changing an argument in place during its call is refused.

struct Deferred {
  Kind kind;
  Bits handle;
  void* object;
};

struct CallFrame {
  CallFrame* up;
  Bits library;
  Bits result;
  Bits object;
  marshal_value* const* args;
  std::size_t nargs;
  std::unique_ptr<std::vector<Deferred>> deferred;  // made on the first deferred release (rare)
};

// Initial-exec (see PerThread): checked on every call and release.
thread_local CallFrame* frames __attribute__((tls_model("initial-exec"))) = nullptr;

bool frame_uses(const CallFrame& f, Bits h, Kind k) {
  switch (k) {
    case Kind::library: return f.library == h;
    case Kind::result: return f.result == h;
    case Kind::value:
      if (f.object == h) return true;
      for (std::size_t i = 0; i < f.nargs; ++i)
        if (bits_of(f.args[i]) == h) return true;
      return false;
    case Kind::none: case Kind::context: case Kind::typemap: case Kind::function: case Kind::signature:
    case Kind::type: return false;
  }
  return false;
}

bool in_call(Bits h, Kind k, const CallFrame* from = frames) {
  for (const CallFrame* f = from; f; f = f->up)
    if (frame_uses(*f, h, k)) return true;
  return false;
}

void destroy(Kind k, void* object) noexcept;

// Drops one reference of h (kind k). `host`: the host's own release (a
// borrowed value is refused); otherwise the C API drops a reference it holds.
// `framed`: h may be in use by a call in progress (false only for handles
// made after every running call began, which none of them can hold).
marshal_status drop(const char* api, Bits h, Kind k, bool host, bool framed = true) noexcept {
  bool borrowed = false;
  void* object = nullptr;
  auto last = [&](void* o) {
    if (host && k == Kind::value && static_cast<CValue*>(o)->borrowed.load(std::memory_order_acquire)) {
      borrowed = true;
      return Handles::Last::refuse;
    }
    if (framed && frames && in_call(h, k)) return Handles::Last::defer;
    return Handles::Last::free;
  };
  switch (Handles::drop(h, k, object, last)) {
    case Handles::Drop::invalid:
      return api ? bad_handle(api, nullptr, to_handle<void>(h), k, true) : MARSHAL_ERROR_INVALID_HANDLE;
    case Handles::Drop::kept: return MARSHAL_OK;
    case Handles::Drop::refused:
      return fail(MARSHAL_ERROR_MISUSE,
                  std::string(api ? api : "marshal_value_release") +
                      ": value is borrowed (an item of a list or record, a value of a result, or an argument of a "
                      "host function): its owner releases it; retain it to keep it");
    case Handles::Drop::deferred:
      try {
        if (!frames->deferred) frames->deferred = std::make_unique<std::vector<Deferred>>();
        frames->deferred->push_back({k, h, object});
      } catch (...) {
        // Out of memory: the object is leaked rather than freed under a running call.
      }
      return MARSHAL_OK;
    case Handles::Drop::last:
      destroy(k, object);
      Handles::recycle(h);
      return MARSHAL_OK;
  }
  return MARSHAL_OK;
}

// A value the C API owns and lends (a kid, a result's value): it stops being
// borrowed first, so a reference the host retained becomes the host's own.
void disown(Bits h, bool framed = true) noexcept {
  if (!h) return;
  if (auto* v = static_cast<CValue*>(Handles::find(to_handle<void>(h), Kind::value)))
    v->borrowed.store(false, std::memory_order_release);
  drop(nullptr, h, Kind::value, false, framed);
}

// Pushed by every entry point that runs native code (and so maybe host code).
class FrameGuard {
 public:
  FrameGuard(Bits library, Bits result, Bits object, marshal_value* const* args, std::size_t nargs)
      : frame_{frames, library, result, object, args, nargs, {}} {
    frames = &frame_;
  }
  FrameGuard(const FrameGuard&) = delete;
  FrameGuard& operator=(const FrameGuard&) = delete;
  ~FrameGuard() {
    frames = frame_.up;
    if (frame_.deferred) finish(*frame_.deferred);
  }

 private:
  // What was released during the call goes now, unless an outer call uses it.
  static void finish(const std::vector<Deferred>& deferred) noexcept {
    for (const Deferred& d : deferred) {
      if (frames && in_call(d.handle, d.kind)) {
        try {
          if (!frames->deferred) frames->deferred = std::make_unique<std::vector<Deferred>>();
          frames->deferred->push_back(d);
        } catch (...) {
          // Out of memory: leaked rather than freed under a running call.
        }
        continue;
      }
      destroy(d.kind, d.object);
      Handles::finish(d.handle);
    }
  }

  CallFrame frame_;
};

// ---- values ----

// A new value handle for v (0 with the message set when no handle is left).
Bits wrap(const char* api, marshal::engine::Value&& v, bool borrowed = false) noexcept {
  CValue* c = nullptr;
  try {
    c = new CValue;
  } catch (...) {
    set_error(MARSHAL_E_INTERNAL, std::string(api) + ": out of memory");
    return 0;
  }
  c->v = std::move(v);
  c->borrowed.store(borrowed, std::memory_order_relaxed);
  std::string error;
  Bits h = 0;
  marshal_error_code id = MARSHAL_E_LIMIT;  // no slot left in the handle table
  try {
    h = Handles::add(Kind::value, c, 1, error);
  } catch (...) {
    error = "out of memory";
    id = MARSHAL_E_INTERNAL;
  }
  if (!h) {
    delete c;
    set_error(id, std::string(api) + ": " + error);
  }
  return h;
}

// A new value handle into *out: the constructors' common end.
marshal_status wrap_out(const char* api, marshal::engine::Value&& v, marshal_value** out) noexcept {
  const Bits h = wrap(api, std::move(v));
  if (!h) return MARSHAL_ERROR_INTERNAL;
  *out = to_handle<marshal_value>(h);
  return MARSHAL_OK;
}

[[gnu::noinline]] void drop_kids_now(CValue* v) noexcept {
  for (std::size_t i : v->kid_made) {
    disown(v->kids[i]);
    v->kids[i] = 0;
  }
  v->kid_made.clear();
}
// Inline: most values never had their items read.
inline void drop_kids(CValue* v) noexcept {
  if (!v->kid_made.empty()) drop_kids_now(v);
}

// The handle of a list's item or a record's field i, made on first use (a
// host reading one item of a long list pays for that item only).
Bits kid(const char* api, CValue* v, std::size_t i) {
  const std::size_t n = v->v.is<marshal::engine::List>() ? v->v.as<marshal::engine::List>().size() : v->v.as<marshal::engine::Record>().size();
  try {
    if (v->kids.size() != n) {
      drop_kids(v);
      v->kids.assign(n, 0);
    }
    if (!v->kids[i]) {
      marshal::engine::Value copy = v->v.is<marshal::engine::List>() ? v->v.as<marshal::engine::List>()[i] : v->v.as<marshal::engine::Record>()[i].second;
      v->kid_made.reserve(v->kid_made.size() + 1);  // first: a handle made is always listed
      v->kids[i] = wrap(api, std::move(copy), true);
      if (v->kids[i]) v->kid_made.push_back(i);
    }
    return v->kids[i];
  } catch (...) {
    set_error(MARSHAL_E_INTERNAL, std::string(api) + ": out of memory");
    return 0;
  }
}

// Puts v into *slot (a result's value), reusing the value when nobody else
// holds it (a host that retained a value from an earlier result keeps that
// value unchanged, and an argument of a call in progress is not touched).
// `outer`: the calls in progress that may still read the slot's value.
void put(Bits& slot, marshal::engine::Value&& v, const CallFrame* outer) {
  std::uint32_t refs = 0;
  auto* c = static_cast<CValue*>(Handles::find(to_handle<void>(slot), Kind::value, refs));
  if (c && refs == 1 && !(outer && in_call(slot, Kind::value, outer))) {
    drop_kids(c);
    // A record is swapped, not moved: the engine's scratch keeps its shape, so
    // a record returned call after call is updated in place. So is a list: the
    // replaced one goes back to the scratch, storage for the next call's
    // (CResult::spare), and is not destroyed element by element here.
    if (v.is<marshal::engine::Record>() || v.is<marshal::engine::List>()) std::swap(c->v, v);
    else c->v.take(std::move(v));
    return;
  }
  disown(slot);
  slot = 0;
  slot = wrap("marshal_function_call", std::move(v), true);
  if (!slot) throw std::bad_alloc();
}

// Moves the engine's result (r->scratch) into r's values. The call that made
// it has finished reading its arguments: only the calls around it (a host
// function's caller) may still use r's borrowed values. Those the host took
// from r and passed to this very call are updated in place, as documented
// (borrowed values are valid until a reused result is called into again).
void publish(CResult* r) {
  marshal::engine::CallResult& c = r->scratch;
  const CallFrame* outer = frames ? frames->up : nullptr;
  put(r->ret, std::move(c.ret), outer);
  if (r->outs.size() > c.out.size()) {
    for (std::size_t i = c.out.size(); i < r->outs.size(); ++i) disown(r->outs[i].second);
    r->outs.resize(c.out.size());
  }
  for (std::size_t i = 0; i < c.out.size(); ++i) {
    if (i == r->outs.size()) r->outs.emplace_back(c.out[i].first, 0);
    else if (r->outs[i].first != c.out[i].first) r->outs[i].first = c.out[i].first;
    put(r->outs[i].second, std::move(c.out[i].second), outer);
  }
  r->has_errno = c.error_number.has_value();
  r->err = c.error_number.value_or(0);
  // The lists r's values held before (put swapped them here) are the next
  // call's storage; everything else goes.
  r->spare.clear();
  for (auto& entry : c.out)
    if (entry.second.is<marshal::engine::List>() && entry.second.as<marshal::engine::List>().capacity())
      r->spare.push_back(std::move(entry));
  c.out.clear();
  c.error_number.reset();
}

void destroy(Kind k, void* object) noexcept {
  switch (k) {
    case Kind::context: {
      auto* c = static_cast<CContext*>(object);
      for (auto& t : c->typemaps) Handles::kill(t->self);
      delete c;  // the engine context stays while a library of it does
      break;
    }
    case Kind::library: {
      auto* l = static_cast<CLibrary*>(object);
      for (auto& [name, f] : l->functions) Handles::kill(f->self);
      for (auto& [name, sg] : l->signatures) Handles::kill(sg->self);
      for (auto& [name, t] : l->types) Handles::kill(t->self);
      const Bits ctx = l->context;
      delete l;  // values still held by the host keep the engine's library alive
      drop(nullptr, ctx, Kind::context, false);
      break;
    }
    case Kind::result: {
      auto* r = static_cast<CResult*>(object);
      disown(r->ret);
      for (auto& [n, v] : r->outs) disown(v);
      delete r;
      break;
    }
    case Kind::value: {
      auto* v = static_cast<CValue*>(object);
      drop_kids(v);
      delete v;
      break;
    }
    case Kind::none: case Kind::typemap: case Kind::function: case Kind::signature: case Kind::type:
      break;  // no references: killed with their owner
  }
}

// ---- calls ----

// The most arguments a call takes from the host: more is a wrong count.
constexpr std::size_t max_args = 65535;

// The C API's host adapter (call/host_io.hpp) over the caller's argument
// handles: each one's value by address, no copies; a plan reads scalars
// straight from them, and a Value only where its general converter needs one.
struct ArgView final : marshal::engine::HostArgs {
  const marshal::engine::Value* small[16];
  std::unique_ptr<const marshal::engine::Value*[]> big;  // more than 16 arguments
  std::span<const marshal::engine::Value* const> view;

  std::size_t size() const override { return view.size(); }
  void scalar(std::size_t i, marshal::engine::HostScalar& out) const override { marshal::engine::scalar_of(*view[i], out); }
  const marshal::engine::Value& value(std::size_t i) const override { return *view[i]; }
};

// How many arguments the host gives for a signature's fixed parameters.
std::size_t param_of_argument_count(const marshal::engine::Signature& sig) {
  std::size_t n = 0;
  for (const marshal::engine::Param& p : sig.params) n += p.host_supplied() ? 1 : 0;
  return n;
}

void set_counts(CFunction& f) {
  f.host_count = param_of_argument_count(*f.fn);
  f.full_count = marshal::engine::full_arity(*f.fn);
  f.out_arrays = false;
  for (const marshal::engine::Param& p : f.fn->params)
    f.out_arrays = f.out_arrays ||
                   (p.dir != marshal::engine::Dir::in && f.types->get(p.type).kind == marshal::engine::Kind::array);
}

// The signature's parameter that host argument i supplies (-1: a variadic one).
std::int64_t param_of_argument(const marshal::engine::Signature& sig, std::size_t i) {
  std::size_t seen = 0;
  for (std::size_t p = 0; p < sig.params.size(); ++p)
    if (sig.params[p].host_supplied() && seen++ == i) return static_cast<std::int64_t>(p);
  return -1;
}

// Fills the error record of a failed call with what the site knows for certain.
void describe_site(const Site& site, std::int64_t argument = -1) {
  ErrorRecord& e = error_record;
  if (!site.function.empty()) {
    e.function = site.iface.empty() || site.function.find('.') != std::string_view::npos
                     ? std::string(site.function)
                     : std::string(site.iface) + "." + std::string(site.function);
  }
  if (site.file) e.file = *site.file;
  if (!site.sig) return;
  e.pointer = site.sig->pointer;
  if (argument < 0) {
    // The engine named the parameter (adopt_engine_error): point at it.
    if (e.parameter_index >= 0 && static_cast<std::size_t>(e.parameter_index) < site.sig->params.size())
      e.pointer += "/params/" + std::to_string(e.parameter_index);
    return;
  }
  const std::int64_t p = param_of_argument(*site.sig, static_cast<std::size_t>(argument));
  if (p < 0) return;
  e.parameter_index = p;
  e.parameter_name = site.sig->params[static_cast<std::size_t>(p)].name;
  e.pointer += "/params/" + std::to_string(p);
}

marshal_status collect_args(const char* api, marshal_value* const* args, std::size_t nargs, ArgView& out,
                            const Site& site = {}) {
  if (nargs > max_args) {
    fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": nargs is " + std::to_string(nargs) + ", more than " +
                                     std::to_string(max_args) + " (a negative count?)");
    error_record.got = std::to_string(nargs);
    error_record.expected = "at most " + std::to_string(max_args);
    describe_site(site);
    return MARSHAL_ERROR_ARGUMENT;
  }
  if (nargs && !args) {
    null_arg(api, "args");
    describe_site(site);
    return MARSHAL_ERROR_ARGUMENT;
  }
  const marshal::engine::Value** p = out.small;
  if (nargs > std::size(out.small)) {
    out.big = std::make_unique<const marshal::engine::Value*[]>(nargs);
    p = out.big.get();
  }
  for (std::size_t i = 0; i < nargs; ++i) {
    CValue* v = find<CValue>(args[i]);
    if (!v) {
      marshal_status st;
      if (!args[i]) {
        st = fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": argument " + std::to_string(i) +
                                              " is NULL (use marshal_value_create_null())");
      } else {
        const std::string which = "argument " + std::to_string(i);
        st = bad_handle(api, which.c_str(), args[i], Kind::value);
      }
      describe_site(site, static_cast<std::int64_t>(i));
      return st;
    }
    p[i] = &v->v;
  }
  out.view = std::span<const marshal::engine::Value* const>(p, nargs);
  return MARSHAL_OK;
}

// A fixed-arity function given another number of arguments: the engine says
// so (with the parameter names) from placeholders, without the host's array
// being read past what the function can take.
const marshal::engine::Value null_value;

// Calls through `call` into r; r is left as it was when the call fails.
template <class Call>
marshal_status call_into(const char* api, const Site& site, Bits library, Bits object, marshal_value* const* args,
                         std::size_t nargs, CResult* r, Bits result, bool wrong_count, Call&& call) {
  return guarded(api, [&] {
    ArgView view;
    if (wrong_count && nargs <= max_args) {
      const marshal::engine::Value** p = view.small;
      if (nargs > std::size(view.small)) {
        view.big = std::make_unique<const marshal::engine::Value*[]>(nargs);
        p = view.big.get();
      }
      for (std::size_t i = 0; i < nargs; ++i) p[i] = &null_value;
      view.view = std::span<const marshal::engine::Value* const>(p, nargs);
    } else if (marshal_status st = collect_args(api, args, nargs, view, site); st != MARSHAL_OK) {
      return st;
    }
    FrameGuard frame(library, result, object, args, wrong_count ? 0 : nargs);
    r->scratch.out.clear();
    r->scratch.error_number.reset();
    std::string error;
    if (!call(static_cast<const ArgView&>(view), r->scratch, error)) {
      fail(MARSHAL_ERROR_CALL, error);
      describe_site(site);
      if (wrong_count) {
        // Refused before anything ran: an argument error of this API.
        error_record.id = MARSHAL_E_INVALID_ARGUMENT;
        error_record.got = std::to_string(nargs) + " arguments";
        error_record.expected = std::to_string(site.sig ? param_of_argument_count(*site.sig) : 0) + " arguments";
      }
      // The native call ran and captured errno (a function with "errno": true).
      if (r->scratch.error_number) error_record.native_code = *r->scratch.error_number;
      return MARSHAL_ERROR_CALL;
    }
    publish(r);
    return MARSHAL_OK;
  });
}

// The same into a new result.
template <class Call>
marshal_status call_new(const char* api, const Site& site, Bits library, Bits object, marshal_value* const* args,
                        std::size_t nargs, marshal_result** out, bool wrong_count, Call&& call) {
  auto* r = new (std::nothrow) CResult;
  if (!r) return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": out of memory");
  marshal_status st = call_into(api, site, library, object, args, nargs, r, 0, wrong_count, call);
  if (st != MARSHAL_OK) {
    destroy(Kind::result, r);
    return st;
  }
  std::string error;
  Bits h = 0;
  try {
    h = Handles::add(Kind::result, r, 1, error);
  } catch (...) {
    error = "out of memory";
  }
  if (!h) {
    destroy(Kind::result, r);
    return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": " + error);
  }
  *out = to_handle<marshal_result>(h);
  return MARSHAL_OK;
}

// Whether a function of fixed arity is given another number of arguments
// (neither its arity nor, with computed parameters, the long form's).
bool wrong_count(const CFunction& f, std::size_t nargs) {
  return f.fn->variadic_from < 0 && nargs != f.host_count && nargs != f.full_count;
}

// The Value adapter (call/host_io.hpp) of a result reused call after call
// (marshal_function_call_into), which writes an out array of scalars into the
// list of that parameter the result's previous call left (CResult::spare):
// in place, no allocation, and no Value made or destroyed per element when
// the elements' kinds repeat (a Value is 40 bytes: 10^6 of them are memory
// the allocator maps afresh on every call). The list then goes where the
// Value adapter puts it. Everything else is the Value adapter's.
class ReusedResults final : public marshal::engine::HostResults {
 public:
  ReusedResults(marshal::engine::CallResult& r, const marshal::engine::Function& fn, marshal::engine::Record& spare)
      : values_(r, fn), r_(r), fn_(fn), spare_(spare) {}
  void scalar(int i, const marshal::engine::HostScalar& s) override { values_.scalar(i, s); }
  void value(int i, marshal::engine::Value&& v) override { values_.value(i, std::move(v)); }
  marshal::engine::Value* place(int i) override { return values_.place(i); }
  void error_number(int e) override { values_.error_number(e); }
  bool array(int i, const marshal::engine::LaneOp& element, const void* data, std::size_t count) override {
    if (i == ret) return false;
    const std::string& name = fn_.params[static_cast<std::size_t>(i)].name;
    for (auto& [n, v] : spare_) {
      if (n != name) continue;
      if (!v.is<marshal::engine::List>() || v.as<marshal::engine::List>().capacity() < count) return false;
      marshal::engine::lane_elements_to_host(element, static_cast<const std::byte*>(data), count,
                                             v.as<marshal::engine::List>());
      r_.out.emplace_back(name, std::move(v));
      return true;
    }
    return false;
  }

 private:
  marshal::engine::ValueResults values_;
  marshal::engine::CallResult& r_;
  const marshal::engine::Function& fn_;
  marshal::engine::Record& spare_;
};

// A function's call: computed parameters given too are checked and left out
// (the engine's rule, call/arguments.hpp). `spare`: the out lists of a reused
// result (CResult::spare), or null.
bool call_function(const CFunction& f, const ArgView& args, marshal::engine::CallResult& r, std::string& error,
                   marshal::engine::Record* spare = nullptr) {
  std::span<const marshal::engine::Value* const> view = args.view;
  if (f.isolated) return f.isolated->call_addressed(f.fn->name, view, r, error);  // it applies the rule itself
  if (view.size() != f.full_count) {  // no computed parameter given
    if (spare && f.out_arrays && !spare->empty()) {
      ReusedResults results(r, *f.fn, *spare);
      return f.plan->call(args, results, error);
    }
    return f.plan->call(view, r, error);
  }
  std::vector<const marshal::engine::Value*> storage;
  return marshal::engine::host_arguments(*f.types, *f.site.file, *f.fn, view, storage, error) && f.plan->call(view, r, error);
}

// ---- changing values in place ----

marshal_status changing_argument(const char* api) {
  return fail(MARSHAL_ERROR_MISUSE, std::string(api) + ": value is an argument of a call in progress on this thread "
                                                       "(a host function may not change it)");
}

// A value may change in place only while the caller holds its only
// reference, never a borrowed one, and only to a value of the same kind.
template <class T>
marshal_status set_value(const char* api, marshal_value* h, T x) {
  std::uint32_t refs = 0;
  auto* v = static_cast<CValue*>(Handles::find(h, Kind::value, refs));
  if (!v) return bad_handle(api, "v", h, Kind::value);
  bool same;
  const char* want;
  if constexpr (std::is_same_v<T, bool>) {
    same = v->v.is<bool>();
    want = "a bool";
  } else if constexpr (std::is_same_v<T, double>) {
    same = v->v.is<double>();
    want = "a double";
  } else {
    same = v->v.is_integer();
    want = "an integer";
  }
  if (!same)
    return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": value is " + noun(v->v) + ", not " + want +
                                            " (make a new value to change its kind)");
  if (refs != 1)
    return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": the value is shared (retained elsewhere); only a value with one reference may change");
  if (v->borrowed.load(std::memory_order_acquire))
    return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": the value is borrowed (an item of a list or record, a value of a result, or an argument of a host function); it is read-only");
  if (frames && in_call(bits_of(h), Kind::value)) return changing_argument(api);
  drop_kids(v);
  if constexpr (std::is_same_v<T, bool>) v->v.set_bool(x);
  else if constexpr (std::is_same_v<T, std::int64_t>) v->v.set_int(x);
  else if constexpr (std::is_same_v<T, std::uint64_t>) v->v.set_uint(x);
  else v->v.set_real(x);
  return MARSHAL_OK;
}

// A container may change while it is not borrowed and not an argument of a
// call in progress (other holders of it see the change, as with any object).
marshal_status check_container(const char* api, marshal_value* h, CValue* v) {
  if (v->borrowed.load(std::memory_order_acquire))
    return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": the container is borrowed (an item of a list or record, a value of a result, or an argument of a host function); it is read-only");
  if (frames && in_call(bits_of(h), Kind::value)) return changing_argument(api);
  return MARSHAL_OK;
}

// Retains a handle for the host: the same handle, or NULL with the message.
template <class H>
H* retain_handle(const char* api, H* h, Kind k) {
  if (!h) return nullptr;
  bool full = false;
  if (Handles::retain(bits_of(h), full)) return h;
  if (full)
    fail(MARSHAL_ERROR_MISUSE, std::string(api) + ": " + kind_name(k) + " has 4294967295 references already",
         MARSHAL_E_LIMIT);
  else bad_handle(api, nullptr, h, k);
  return nullptr;
}

}  // namespace
}  // namespace marshal_c

using namespace marshal_c;

extern "C" {

const marshal_error* marshal_last_error(void) { return reinterpret_cast<const marshal_error*>(&error_record); }

// ---- contexts and typemaps ----

marshal_status marshal_context_create(marshal_context** out) {
  if (!out) return null_arg("marshal_context_create", "out");
  *out = nullptr;
  return guarded("marshal_context_create", [&] {
    auto c = std::make_unique<CContext>();
    std::string error;
    const Bits h = Handles::add(Kind::context, c.get(), 1, error);
    if (!h) return fail(MARSHAL_ERROR_INTERNAL, "marshal_context_create: " + error);
    c.release();
    *out = to_handle<marshal_context>(h);
    return MARSHAL_OK;
  });
}

marshal_context* marshal_context_retain(marshal_context* ctx) {
  return retain_handle("marshal_context_retain", ctx, Kind::context);
}

marshal_status marshal_context_release(marshal_context* ctx) {
  return ctx ? drop("marshal_context_release", bits_of(ctx), Kind::context, true) : MARSHAL_OK;
}

static marshal_status finish_load(const char* api, marshal_context* handle, CContext* ctx, marshal::engine::LoadResult r,
                                  marshal_typemap** out, std::string text = {}, std::string path = {}) {
  if (!r.ok()) {
    std::string all;
    for (const auto& e : r.errors) all += (all.empty() ? "" : "\n") + e.text();
    fail(MARSHAL_ERROR_TYPEMAP, all);
    if (!r.errors.empty()) {  // the first problem's place
      error_record.file = r.errors.front().file;
      error_record.pointer = r.errors.front().pointer.empty() ? "/" : r.errors.front().pointer;
    }
    return MARSHAL_ERROR_TYPEMAP;
  }
  auto t = std::make_unique<CTypemap>(CTypemap{0, bits_of(handle), ctx, r.typemap, std::move(text), std::move(path)});
  std::string error;
  std::lock_guard lock(ctx->mutex);
  ctx->typemaps.reserve(ctx->typemaps.size() + 1);
  t->self = Handles::add(Kind::typemap, t.get(), 1, error);
  if (!t->self) return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": " + error);
  *out = to_handle<marshal_typemap>(t->self);
  ctx->typemaps.push_back(std::move(t));
  return MARSHAL_OK;
}

marshal_status marshal_typemap_load(marshal_context* ctx, const char* path, marshal_typemap** out) {
  static const char* api = "marshal_typemap_load";
  CContext* c = find<CContext>(ctx);
  if (!c) return bad_handle(api, "ctx", ctx, Kind::context);
  if (!path) return null_arg(api, "path");
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  return guarded(api, [&] { return finish_load(api, ctx, c, c->ctx->load_file(path), out, {}, path); });
}

marshal_status marshal_typemap_load_text(marshal_context* ctx, const char* json, size_t length, const char* name,
                                         marshal_typemap** out) {
  static const char* api = "marshal_typemap_load_text";
  CContext* c = find<CContext>(ctx);
  if (!c) return bad_handle(api, "ctx", ctx, Kind::context);
  if (!json) return null_arg(api, "json");
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  if (huge(length)) return huge_count(api, "length", length);
  return guarded(api, [&] {
    return finish_load(api, ctx, c, c->ctx->load_text(std::string_view(json, length), name ? name : "<text>"), out,
                       std::string(json, length));
  });
}

// ---- libraries and functions ----

// A library in this process, or isolated in a surrogate process (asked for,
// or the typemap's "isolate": "process").
static marshal_status create_library(const char* api, marshal_typemap* tm, bool isolate, uint32_t deadline_ms,
                                     marshal_library** out, const char* connect = nullptr,
                                     const marshal_tls_files* tls = nullptr) {
  CTypemap* t = find<CTypemap>(tm);
  if (!t) return bad_handle(api, "tm", tm, Kind::typemap);
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  return guarded(api, [&] {
    std::string error;
    auto l = std::make_unique<CLibrary>();
    if (isolate || marshal::engine::remote::wants_isolation(*t->tm)) {
      // The host never loads the library: a context of its own holds the
      // typemap the surrogate (or server) loads too.
      marshal::engine::remote::IsolateOptions o;
      o.deadline = std::chrono::milliseconds(deadline_ms);
      if (connect) o.connect = connect;
      if (tls) {
        auto text = [](const char* s) { return s ? std::string(s) : std::string(); };
        o.tls = {text(tls->cert), text(tls->key), text(tls->ca), text(tls->name)};
      }
      l->isolated_ctx = std::make_shared<marshal::engine::Context>();
      l->isolated = t->text.empty()
                        ? marshal::engine::remote::IsolatedLibrary::open_file(*l->isolated_ctx, t->path, o, error)
                        : marshal::engine::remote::IsolatedLibrary::open_text(*l->isolated_ctx, t->text, t->tm->file, o, error);
      if (!l->isolated) {
        fail(MARSHAL_ERROR_LIBRARY, error);
        adopt_engine_error(error);  // disconnected, refused, or the serving side's id
        error_record.file = t->tm->file;
        return MARSHAL_ERROR_LIBRARY;
      }
    } else {
      if (deadline_ms) {
        fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": a deadline needs an isolated library (an in-process call "
                                                        "cannot be stopped)");
        return MARSHAL_ERROR_ARGUMENT;
      }
      auto lib = marshal::engine::Library::open(*t->ctx->ctx, *t->tm, error);
      if (!lib) {
        fail(MARSHAL_ERROR_LIBRARY, error);
        error_record.file = t->tm->file;
        return MARSHAL_ERROR_LIBRARY;
      }
      lib->keep_alive(t->ctx->ctx);  // the engine library may outlive the context handle
      l->lib = std::move(lib);
    }
    const marshal::engine::Typemap& ltm = l->typemap();
    for (const auto& [name, f] : ltm.functions) l->function_names.push_back(&name);
    for (const auto& [name, ty] : ltm.types) l->type_names.push_back(&name);
    bool full = false;
    if (!Handles::retain(t->context, full))
      return fail(MARSHAL_ERROR_MISUSE, std::string(api) + ": the typemap's context has 4294967295 references already",
                  MARSHAL_E_LIMIT);
    l->context = t->context;
    const Bits h = Handles::add(Kind::library, l.get(), 1, error);
    if (!h) {
      drop(nullptr, l->context, Kind::context, false);
      return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": " + error);
    }
    l.release();
    *out = to_handle<marshal_library>(h);
    return MARSHAL_OK;
  });
}

marshal_status marshal_library_create(marshal_typemap* tm, marshal_library** out) {
  return create_library("marshal_library_create", tm, false, 0, out);
}

marshal_status marshal_library_create_isolated(marshal_typemap* tm, uint32_t deadline_ms, marshal_library** out) {
  return create_library("marshal_library_create_isolated", tm, true, deadline_ms, out);
}

marshal_status marshal_library_connect(marshal_typemap* tm, const char* address, const marshal_tls_files* tls,
                                       uint32_t deadline_ms, marshal_library** out) {
  if (!address || !*address) return null_arg("marshal_library_connect", "address");
  return create_library("marshal_library_connect", tm, true, deadline_ms, out, address, tls);
}

int marshal_library_isolated(const marshal_library* lib) {
  CLibrary* l = find<CLibrary>(lib);
  if (!l) {
    note_bad_handle("marshal_library_isolated", "lib", lib, Kind::library);
    return 0;
  }
  return l->isolated ? 1 : 0;
}

// What an isolated library cannot do yet: MARSHAL_ERROR_ARGUMENT naming it.
static marshal_status not_across(const char* api, const CLibrary* l, const char* what) {
  fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": " + l->typemap().file + " is isolated (its library runs in a "
                                   "surrogate process): " + what + " cannot cross the process boundary yet");
  error_record.file = l->typemap().file;
  return MARSHAL_ERROR_ARGUMENT;
}

marshal_library* marshal_library_retain(marshal_library* lib) {
  return retain_handle("marshal_library_retain", lib, Kind::library);
}

marshal_status marshal_library_release(marshal_library* lib) {
  return lib ? drop("marshal_library_release", bits_of(lib), Kind::library, true) : MARSHAL_OK;
}

marshal_status marshal_library_set_max_alloc(marshal_library* lib, size_t bytes) {
  CLibrary* l = find<CLibrary>(lib);
  if (!l) return bad_handle("marshal_library_set_max_alloc", "lib", lib, Kind::library);
  if (bytes == 0 || huge(bytes)) {
    fail(MARSHAL_ERROR_ARGUMENT,
         "marshal_library_set_max_alloc: bytes is " + std::to_string(bytes) + " (expected 1 to PTRDIFF_MAX)");
    error_record.got = std::to_string(bytes);
    error_record.expected = "1 to PTRDIFF_MAX";
    return MARSHAL_ERROR_ARGUMENT;
  }
  if (!l->lib) return not_across("marshal_library_set_max_alloc", l, "native memory");
  l->lib->set_max_buffer(bytes);  // one limit: native memory and the buffers of calls
  return MARSHAL_OK;
}

marshal_status marshal_library_function(marshal_library* lib, const char* name, marshal_function** out) {
  static const char* api = "marshal_library_function";
  CLibrary* l = find<CLibrary>(lib);
  if (!l) return bad_handle(api, "lib", lib, Kind::library);
  if (!name) return null_arg(api, "name");
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  return guarded(api, [&] {
    std::lock_guard lock(l->mutex);
    auto it = l->functions.find(name);
    if (it == l->functions.end()) {
      std::string error;
      const marshal::engine::Typemap& tm = l->typemap();
      if (l->isolated) {  // bound in the surrogate, at the first call
        const auto known = tm.functions.find(name);
        if (known == tm.functions.end()) {
          std::string names;
          for (const auto& [n, _] : tm.functions) names += (names.empty() ? "" : ", ") + n;
          fail(MARSHAL_ERROR_BIND, tm.file + ": no function '" + name + "' (functions: " + names + ")",
               MARSHAL_E_NOT_FOUND);
          error_record.file = tm.file;
          error_record.function = name;
          return MARSHAL_ERROR_BIND;
        }
        auto f = std::make_unique<CFunction>();
        f->library = bits_of(lib);
        f->fn = &known->second;
        f->types = &l->registry();
        f->isolated = l->isolated.get();
        f->site.sig = f->fn;
        f->site.file = &tm.file;
        f->site.function = f->fn->name;
        set_counts(*f);
        f->self = Handles::add(Kind::function, f.get(), 1, error);
        if (!f->self) return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": " + error);
        it = l->functions.emplace(name, std::move(f)).first;
        *out = to_handle<marshal_function>(it->second->self);
        return MARSHAL_OK;
      }
      const marshal::engine::Plan* plan = l->lib->bind(name, error);
      if (!plan) {
        const auto known = tm.functions.find(name);
        fail(MARSHAL_ERROR_BIND, error, known == tm.functions.end() ? MARSHAL_E_NOT_FOUND : MARSHAL_E_BIND);
        error_record.file = tm.file;
        error_record.function = name;
        if (known != tm.functions.end()) error_record.pointer = known->second.pointer;
        return MARSHAL_ERROR_BIND;
      }
      auto f = std::make_unique<CFunction>();
      f->library = bits_of(lib);
      f->plan = plan;
      f->fn = &plan->function();
      f->types = &plan->types();
      f->site.sig = &plan->function();
      f->site.file = &tm.file;
      f->site.function = plan->function().name;
      set_counts(*f);
      f->self = Handles::add(Kind::function, f.get(), 1, error);
      if (!f->self) return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": " + error);
      it = l->functions.emplace(name, std::move(f)).first;
    }
    *out = to_handle<marshal_function>(it->second->self);
    return MARSHAL_OK;
  });
}

size_t marshal_function_arity(const marshal_function* fn) {
  CFunction* f = find<CFunction>(fn);
  if (!f) {
    note_bad_handle("marshal_function_arity", "fn", fn, Kind::function);
    return 0;
  }
  return param_of_argument_count(*f->fn);
}

marshal_status marshal_function_call(const marshal_function* fn, marshal_value* const* args, size_t nargs,
                                     marshal_result** out) {
  static const char* api = "marshal_function_call";
  CFunction* f = find<CFunction>(fn);
  if (!f) return bad_handle(api, "fn", fn, Kind::function);
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  return call_new(api, f->site, f->library, 0, args, nargs, out, wrong_count(*f, nargs),
                  [&](const ArgView& view, marshal::engine::CallResult& r, std::string& error) { return call_function(*f, view, r, error); });
}

marshal_status marshal_result_create(marshal_result** out) {
  static const char* api = "marshal_result_create";
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  *out = nullptr;
  auto* r = new (std::nothrow) CResult;
  if (!r) return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": out of memory");
  std::string error;
  Bits h = 0;
  marshal_error_code id = MARSHAL_E_LIMIT;
  try {
    h = Handles::add(Kind::result, r, 1, error);
  } catch (...) {
    error = "out of memory";
    id = MARSHAL_E_INTERNAL;
  }
  if (!h) {
    delete r;
    return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": " + error, id);
  }
  *out = to_handle<marshal_result>(h);
  return MARSHAL_OK;
}

marshal_status marshal_function_call_into(const marshal_function* fn, marshal_value* const* args, size_t nargs,
                                          marshal_result* result) {
  static const char* api = "marshal_function_call_into";
  CFunction* f = find<CFunction>(fn);
  if (!f) return bad_handle(api, "fn", fn, Kind::function);
  CResult* r = find<CResult>(result);
  if (!r) return bad_handle(api, "result", result, Kind::result);
  return call_into(api, f->site, f->library, 0, args, nargs, r, bits_of(result), wrong_count(*f, nargs),
                   [&](const ArgView& view, marshal::engine::CallResult& c, std::string& error) {
                     return call_function(*f, view, c, error, &r->spare);
                   });
}

const marshal_value* marshal_result_return(const marshal_result* r) {
  CResult* c = find<CResult>(r);
  if (!c) {
    note_bad_handle("marshal_result_return", "r", r, Kind::result);
    return nullptr;
  }
  return to_handle<const marshal_value>(c->ret);
}

size_t marshal_result_out_count(const marshal_result* r) {
  CResult* c = find<CResult>(r);
  if (!c) {
    note_bad_handle("marshal_result_out_count", "r", r, Kind::result);
    return 0;
  }
  return c->outs.size();
}

const char* marshal_result_out_name(const marshal_result* r, size_t i) {
  CResult* c = find<CResult>(r);
  if (!c) {
    note_bad_handle("marshal_result_out_name", "r", r, Kind::result);
    return nullptr;
  }
  if (i >= c->outs.size()) {
    fail(MARSHAL_ERROR_ARGUMENT, "marshal_result_out_name: index " + std::to_string(i) + " is out of range (" +
                                     std::to_string(c->outs.size()) + " out parameters)");
    return nullptr;
  }
  return c->outs[i].first.c_str();
}

const marshal_value* marshal_result_out(const marshal_result* r, const char* name) {
  CResult* c = find<CResult>(r);
  if (!c) {
    note_bad_handle("marshal_result_out", "r", r, Kind::result);
    return nullptr;
  }
  if (!name) {
    null_arg("marshal_result_out", "name");
    return nullptr;
  }
  for (const auto& [n, v] : c->outs)
    if (n == name) return to_handle<const marshal_value>(v);
  fail(MARSHAL_ERROR_ARGUMENT, std::string("marshal_result_out: no out parameter '") + name + "'", MARSHAL_E_NOT_FOUND);
  return nullptr;
}

int marshal_result_errno(const marshal_result* r, int* err) {
  CResult* c = find<CResult>(r);
  if (!c) {
    note_bad_handle("marshal_result_errno", "r", r, Kind::result);
    return 0;
  }
  if (!c->has_errno) return 0;
  if (err) *err = c->err;
  return 1;
}

marshal_status marshal_result_release(marshal_result* r) {
  return r ? drop("marshal_result_release", bits_of(r), Kind::result, true) : MARSHAL_OK;
}

// ---- values ----

// Every value constructor: out checked first (and NULL on failure), then
// the value made and wrapped.
#define MARSHAL_CHECK_OUT(api) \
  if (!out) return null_arg(api, "out"); \
  *out = nullptr

marshal_status marshal_value_create_null(marshal_value** out) {
  MARSHAL_CHECK_OUT("marshal_value_create_null");
  return wrap_out("marshal_value_create_null", marshal::engine::Value(), out);
}
marshal_status marshal_value_create_bool(int b, marshal_value** out) {
  MARSHAL_CHECK_OUT("marshal_value_create_bool");
  return wrap_out("marshal_value_create_bool", marshal::engine::Value(b != 0), out);
}
marshal_status marshal_value_create_int64(int64_t v, marshal_value** out) {
  MARSHAL_CHECK_OUT("marshal_value_create_int64");
  return wrap_out("marshal_value_create_int64", marshal::engine::Value(std::int64_t{v}), out);
}
marshal_status marshal_value_create_uint64(uint64_t v, marshal_value** out) {
  MARSHAL_CHECK_OUT("marshal_value_create_uint64");
  return wrap_out("marshal_value_create_uint64", marshal::engine::Value(std::uint64_t{v}), out);
}
marshal_status marshal_value_create_double(double v, marshal_value** out) {
  MARSHAL_CHECK_OUT("marshal_value_create_double");
  return wrap_out("marshal_value_create_double", marshal::engine::Value(v), out);
}

// A host buffer given as pointer and length: not NULL unless empty, not larger
// than any object can be. The status, with the error naming api and the pointer.
static marshal_status buffer_ok(const char* api, const char* name, const void* p, size_t length) {
  if (!p && length)
    return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": " + name + " is NULL with a length of " + std::to_string(length));
  if (huge(length)) return huge_count(api, "length", length);
  return MARSHAL_OK;
}

marshal_status marshal_value_create_string(const char* utf8, size_t length, marshal_value** out) {
  static const char* api = "marshal_value_create_string";
  MARSHAL_CHECK_OUT(api);
  if (marshal_status st = buffer_ok(api, "utf8", utf8, length); st != MARSHAL_OK) return st;
  return guarded(api, [&] { return wrap_out(api, marshal::engine::Value(std::string(utf8 ? utf8 : "", length)), out); });
}

marshal_status marshal_value_create_bytes(const void* data, size_t length, marshal_value** out) {
  static const char* api = "marshal_value_create_bytes";
  MARSHAL_CHECK_OUT(api);
  if (marshal_status st = buffer_ok(api, "data", data, length); st != MARSHAL_OK) return st;
  return guarded(api, [&] {
    const auto* p = static_cast<const std::uint8_t*>(data);
    return wrap_out(api, marshal::engine::Value(marshal::engine::Bytes{p ? std::vector<std::uint8_t>(p, p + length)
                                                         : std::vector<std::uint8_t>{}}),
                    out);
  });
}

marshal_status marshal_value_create_list(marshal_value** out) {
  MARSHAL_CHECK_OUT("marshal_value_create_list");
  return wrap_out("marshal_value_create_list", marshal::engine::Value(marshal::engine::List{}), out);
}
marshal_status marshal_value_create_record(marshal_value** out) {
  MARSHAL_CHECK_OUT("marshal_value_create_record");
  return wrap_out("marshal_value_create_record", marshal::engine::Value(marshal::engine::Record{}), out);
}

// Bytes for count elements of `size` bytes, or false when the product
// does not fit in size_t (checked: never a wrapped, tiny buffer).
static bool checked_bytes(std::size_t count, std::size_t size, std::size_t& bytes) {
  return !__builtin_mul_overflow(count, size, &bytes);
}

marshal_status marshal_value_create_native(marshal_library* lib, const char* type, size_t count,
                                          marshal_value** out) {
  static const char* api = "marshal_value_create_native";
  CLibrary* l = find<CLibrary>(lib);
  if (!l) return bad_handle(api, "lib", lib, Kind::library);
  if (!type) return null_arg(api, "type");
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  if (!l->lib) return not_across(api, l, "native memory owned by the host");
  return guarded(api, [&] {
    const marshal::engine::TypeRegistry& reg = l->lib->context().types();
    marshal::engine::TypeId t = reg.find_primitive(type);
    if (t == marshal::engine::no_type) t = l->lib->typemap().find_type(type);
    if (t == marshal::engine::no_type || t == reg.void_type() || reg.get(t).size == 0)
      return fail(MARSHAL_ERROR_ARGUMENT,
                  std::string(api) + ": unknown type '" + type + "' (a primitive or a sized type of " +
                      l->lib->typemap().file + ")",
                  MARSHAL_E_NOT_FOUND);
    if (count == 0) return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": count must be at least 1");
    const std::size_t size = reg.get(t).size;
    std::size_t bytes = 0;
    const std::size_t limit = l->lib->max_buffer();
    if (!checked_bytes(count, size, bytes)) {
      fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": " + std::to_string(count) + " elements of " + type + " (" +
                                       std::to_string(size) + " bytes each) overflow size_t",
           MARSHAL_E_LIMIT);
      error_record.got = std::to_string(count) + " x " + std::to_string(size) + " bytes";
      error_record.expected = "at most " + std::to_string(limit) + " bytes";
      return MARSHAL_ERROR_ARGUMENT;
    }
    if (bytes > limit) {
      fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": " + std::to_string(count) + " elements of " + type + " are " +
                                       std::to_string(bytes) + " bytes, more than the library's limit of " +
                                       std::to_string(limit) + " (marshal_library_set_max_alloc)",
           MARSHAL_E_LIMIT);
      error_record.got = std::to_string(bytes) + " bytes";
      error_record.expected = "at most " + std::to_string(limit) + " bytes";
      return MARSHAL_ERROR_ARGUMENT;
    }
    return wrap_out(api, marshal::engine::Value(marshal::engine::native_new(reg, t, count)), out);
  });
}

marshal_status marshal_native_data(const marshal_value* v, void** data, size_t* size) {
  static const char* api = "marshal_native_data";
  CValue* c = find<CValue>(v);
  if (!c) return bad_handle(api, "v", v, Kind::value);
  if (!data) return null_arg(api, "data");
  if (!size) return null_arg(api, "size");
  if (!c->v.is<std::shared_ptr<marshal::engine::NativeBox>>()) return wrong_kind(api, c, "native memory");
  const marshal::engine::NativeBox& box = *c->v.as<std::shared_ptr<marshal::engine::NativeBox>>();
  *data = box.data();
  *size = box.size;
  return MARSHAL_OK;
}

marshal_value* marshal_value_retain(marshal_value* v) { return retain_handle("marshal_value_retain", v, Kind::value); }

marshal_status marshal_value_set_bool(marshal_value* v, int b) { return set_value("marshal_value_set_bool", v, b != 0); }
marshal_status marshal_value_set_int64(marshal_value* v, int64_t x) {
  return set_value("marshal_value_set_int64", v, std::int64_t{x});
}
marshal_status marshal_value_set_uint64(marshal_value* v, uint64_t x) {
  return set_value("marshal_value_set_uint64", v, std::uint64_t{x});
}
marshal_status marshal_value_set_double(marshal_value* v, double x) { return set_value("marshal_value_set_double", v, x); }

marshal_status marshal_value_release(marshal_value* v) {
  return v ? drop("marshal_value_release", bits_of(v), Kind::value, true) : MARSHAL_OK;
}

marshal_status marshal_list_append(marshal_value* list, const marshal_value* item) {
  static const char* api = "marshal_list_append";
  CValue* l = find<CValue>(list);
  if (!l) return bad_handle(api, "list", list, Kind::value);
  CValue* i = find<CValue>(item);
  if (!i) return bad_handle(api, "item", item, Kind::value);
  if (!l->v.is<marshal::engine::List>()) return wrong_kind(api, l, "a list");
  if (marshal_status st = check_container(api, list, l); st != MARSHAL_OK) return st;
  return guarded(api, [&] {
    marshal::engine::Value copy = i->v;  // first: the item may be the list itself
    drop_kids(l);
    l->v.as<marshal::engine::List>().push_back(std::move(copy));
    return MARSHAL_OK;
  });
}

marshal_status marshal_record_set(marshal_value* record, const char* name, const marshal_value* item) {
  static const char* api = "marshal_record_set";
  CValue* r = find<CValue>(record);
  if (!r) return bad_handle(api, "record", record, Kind::value);
  if (!name) return null_arg(api, "name");
  CValue* i = find<CValue>(item);
  if (!i) return bad_handle(api, "item", item, Kind::value);
  if (!r->v.is<marshal::engine::Record>()) return wrong_kind(api, r, "a record");
  if (marshal_status st = check_container(api, record, r); st != MARSHAL_OK) return st;
  return guarded(api, [&] {
    marshal::engine::Value copy = i->v;  // first: the item may be the record itself
    drop_kids(r);
    auto& fields = r->v.as<marshal::engine::Record>();
    for (auto& [n, v] : fields)
      if (n == name) {
        v = std::move(copy);
        return MARSHAL_OK;
      }
    fields.emplace_back(name, std::move(copy));
    return MARSHAL_OK;
  });
}

marshal_kind marshal_value_kind(const marshal_value* v) {
  if (!v) return MARSHAL_NULL;
  CValue* c = find<CValue>(v);
  if (!c) {
    note_bad_handle("marshal_value_kind", "v", v, Kind::value);
    return MARSHAL_INVALID;
  }
  switch (c->v.type()) {
    case marshal::engine::Value::Type::null: return MARSHAL_NULL;
    case marshal::engine::Value::Type::boolean: return MARSHAL_BOOL;
    case marshal::engine::Value::Type::int64: return MARSHAL_INT64;
    case marshal::engine::Value::Type::uint64: return MARSHAL_UINT64;
    case marshal::engine::Value::Type::real: return MARSHAL_DOUBLE;
    case marshal::engine::Value::Type::string: return MARSHAL_STRING;
    case marshal::engine::Value::Type::bytes: return MARSHAL_BYTES;
    case marshal::engine::Value::Type::list: return MARSHAL_LIST;
    case marshal::engine::Value::Type::record: return MARSHAL_RECORD;
    case marshal::engine::Value::Type::address: return MARSHAL_ADDRESS;
    case marshal::engine::Value::Type::handle: return MARSHAL_HANDLE;
    case marshal::engine::Value::Type::native: return MARSHAL_NATIVE;
    case marshal::engine::Value::Type::function: return MARSHAL_FUNCTION;
    case marshal::engine::Value::Type::callback: return MARSHAL_CALLBACK;
    case marshal::engine::Value::Type::object: return MARSHAL_OBJECT;
    case marshal::engine::Value::Type::host_object: return MARSHAL_HOST_OBJECT;
  }
  return MARSHAL_NULL;
}

marshal_status marshal_value_get_bool(const marshal_value* v, int* out) {
  static const char* api = "marshal_value_get_bool";
  CValue* c = find<CValue>(v);
  if (!c) return bad_handle(api, "v", v, Kind::value);
  if (!out) return null_arg(api, "out");
  if (!c->v.is<bool>()) return wrong_kind(api, c, "a bool");
  *out = c->v.as<bool>() ? 1 : 0;
  return MARSHAL_OK;
}

marshal_status marshal_value_get_int64(const marshal_value* v, int64_t* out) {
  static const char* api = "marshal_value_get_int64";
  CValue* c = find<CValue>(v);
  if (c && out && c->v.is<std::int64_t>()) {
    *out = c->v.as<std::int64_t>();
    return MARSHAL_OK;
  }
  if (!c) return bad_handle(api, "v", v, Kind::value);
  if (!out) return null_arg(api, "out");
  // An integer that does not fit is a range error, anything else the wrong kind.
  return wrong_kind(api, c, "an integer from INT64_MIN to INT64_MAX",
                    c->v.is_integer() ? MARSHAL_E_CONVERSION : MARSHAL_E_INVALID_ARGUMENT);
}

marshal_status marshal_value_get_uint64(const marshal_value* v, uint64_t* out) {
  static const char* api = "marshal_value_get_uint64";
  CValue* c = find<CValue>(v);
  if (!c) return bad_handle(api, "v", v, Kind::value);
  if (!out) return null_arg(api, "out");
  if (c->v.is<std::uint64_t>()) {
    *out = c->v.as<std::uint64_t>();
    return MARSHAL_OK;
  }
  if (c->v.is<std::int64_t>() && c->v.as<std::int64_t>() >= 0) {
    *out = static_cast<std::uint64_t>(c->v.as<std::int64_t>());
    return MARSHAL_OK;
  }
  return wrong_kind(api, c, "a non-negative integer",
                    c->v.is_integer() ? MARSHAL_E_CONVERSION : MARSHAL_E_INVALID_ARGUMENT);
}

marshal_status marshal_value_get_double(const marshal_value* v, double* out) {
  static const char* api = "marshal_value_get_double";
  CValue* c = find<CValue>(v);
  if (c && out && c->v.is<double>()) {
    *out = c->v.as<double>();
    return MARSHAL_OK;
  }
  if (!c) return bad_handle(api, "v", v, Kind::value);
  if (!out) return null_arg(api, "out");
  return wrong_kind(api, c, "a double");
}

marshal_status marshal_value_get_string(const marshal_value* v, const char** data, size_t* length) {
  static const char* api = "marshal_value_get_string";
  CValue* c = find<CValue>(v);
  if (!c) return bad_handle(api, "v", v, Kind::value);
  if (!data) return null_arg(api, "data");
  if (!c->v.is<std::string>()) return wrong_kind(api, c, "a string");
  *data = c->v.as<std::string>().c_str();
  if (length) *length = c->v.as<std::string>().size();
  return MARSHAL_OK;
}

marshal_status marshal_value_get_bytes(const marshal_value* v, const uint8_t** data, size_t* length) {
  static const char* api = "marshal_value_get_bytes";
  CValue* c = find<CValue>(v);
  if (!c) return bad_handle(api, "v", v, Kind::value);
  if (!data) return null_arg(api, "data");
  if (!length) return null_arg(api, "length");
  if (!c->v.is<marshal::engine::Bytes>()) return wrong_kind(api, c, "bytes");
  *data = c->v.as<marshal::engine::Bytes>().data.data();
  *length = c->v.as<marshal::engine::Bytes>().data.size();
  return MARSHAL_OK;
}

// The list or record behind a handle, or nullptr with the message set.
static CValue* container(const char* api, const char* param, const marshal_value* h, bool list) {
  CValue* c = find<CValue>(h);
  if (!c) {
    note_bad_handle(api, param, h, Kind::value);
    return nullptr;
  }
  if (list ? !c->v.is<marshal::engine::List>() : !c->v.is<marshal::engine::Record>()) {
    wrong_kind(api, c, list ? "a list" : "a record");
    return nullptr;
  }
  return c;
}

size_t marshal_list_size(const marshal_value* list) {
  CValue* c = container("marshal_list_size", "list", list, true);
  return c ? c->v.as<marshal::engine::List>().size() : 0;
}

const marshal_value* marshal_list_get(const marshal_value* list, size_t i) {
  static const char* api = "marshal_list_get";
  CValue* c = container(api, "list", list, true);
  if (!c) return nullptr;
  if (i >= c->v.as<marshal::engine::List>().size()) {
    fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": index " + std::to_string(i) + " is out of range (" +
                                     std::to_string(c->v.as<marshal::engine::List>().size()) + " items)");
    return nullptr;
  }
  return to_handle<const marshal_value>(kid(api, c, i));
}

size_t marshal_record_size(const marshal_value* record) {
  CValue* c = container("marshal_record_size", "record", record, false);
  return c ? c->v.as<marshal::engine::Record>().size() : 0;
}

const char* marshal_record_name(const marshal_value* record, size_t i) {
  static const char* api = "marshal_record_name";
  CValue* c = container(api, "record", record, false);
  if (!c) return nullptr;
  if (i >= c->v.as<marshal::engine::Record>().size()) {
    fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": index " + std::to_string(i) + " is out of range (" +
                                     std::to_string(c->v.as<marshal::engine::Record>().size()) + " fields)");
    return nullptr;
  }
  return c->v.as<marshal::engine::Record>()[i].first.c_str();
}

const marshal_value* marshal_record_get(const marshal_value* record, const char* name) {
  static const char* api = "marshal_record_get";
  CValue* c = container(api, "record", record, false);
  if (!c) return nullptr;
  if (!name) {
    null_arg(api, "name");
    return nullptr;
  }
  const auto& r = c->v.as<marshal::engine::Record>();
  for (size_t i = 0; i < r.size(); ++i)
    if (r[i].first == name) return to_handle<const marshal_value>(kid(api, c, i));
  fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": no field '" + name + "'", MARSHAL_E_NOT_FOUND);
  return nullptr;
}

// ---- callbacks ----

namespace {
// The user's function and data; destroy runs when the last holder lets go.
struct UserFunction {
  UserFunction(marshal_host_fn f, void* u, void (*d)(void*)) : fn(f), user(u), destroy(d) {}
  UserFunction(const UserFunction&) = delete;  // destroy must run exactly once
  UserFunction& operator=(const UserFunction&) = delete;
  marshal_host_fn fn;
  void* user;
  void (*destroy)(void*);
  ~UserFunction() {
    if (destroy) destroy(user);
  }
};

// Calls a C host function: arguments wrapped (borrowed by it), its result taken.
bool call_c_host(marshal_host_fn fn, void* user, const std::vector<marshal::engine::Value>& args, marshal::engine::Value& result,
                 std::string& error) {
  static const char* api = "host function";
  Bits small[8];
  std::vector<Bits> big(args.size() > std::size(small) ? args.size() : 0);
  Bits* wrapped = big.empty() ? small : big.data();
  std::size_t made = 0;
  for (; made < args.size(); ++made)
    if (!(wrapped[made] = wrap(api, marshal::engine::Value(args[made]), true))) break;
  if (made < args.size()) {
    for (std::size_t i = 0; i < made; ++i) disown(wrapped[i], false);
    error = error_record.message;
    return false;
  }
  marshal_value* out = nullptr;
  const char* message = nullptr;
  const int status = fn(user, reinterpret_cast<const marshal_value* const*>(wrapped), args.size(), &out, &message);
  bool ok = status == 0;
  if (!ok) error = message ? message : "the C host function returned " + std::to_string(status);
  // *result is a new reference the host gives us; one it only borrowed (an
  // argument, an item of a list) is copied and left to its owner.
  if (out) {
    CValue* o = find<CValue>(out);
    if (!o) {
      if (ok) error = "the host function's result: " + Handles::diagnose(out, Kind::value, false);
      ok = false;
    } else {
      // Borrowed with one reference: the host handed back what it only borrowed.
      const bool owned = !(o->borrowed.load(std::memory_order_acquire) && Handles::refs(bits_of(out)) == 1);
      if (ok) {
        if (owned && Handles::refs(bits_of(out)) == 1 && !o->borrowed.load()) result = std::move(o->v);  // ours alone
        else result = o->v;
      }
      if (owned) drop(nullptr, bits_of(out), Kind::value, false);
    }
  }
  // The arguments (the host could not release them: they are borrowed; a
  // reference it retained is its own from now on).
  for (std::size_t i = 0; i < args.size(); ++i) disown(wrapped[i], false);
  return ok;
}
}  // namespace

marshal_status marshal_value_create_function(const char* name, marshal_host_fn fn, void* user,
                                            void (*destroy)(void*), marshal_value** out) {
  static const char* api = "marshal_value_create_function";
  if (!fn || !out) {
    if (destroy) destroy(user);
    if (out) *out = nullptr;
    return null_arg(api, fn ? "out" : "fn");
  }
  *out = nullptr;
  std::shared_ptr<UserFunction> data;
  try {
    data = std::make_shared<UserFunction>(fn, user, destroy);
  } catch (...) {
    if (destroy) destroy(user);
    return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": out of memory");
  }
  return guarded(api, [&] {
    auto host = std::make_shared<marshal::engine::HostFunction>(marshal::engine::HostFunction{
        name ? name : "c_function",
        [data](const std::vector<marshal::engine::Value>& args, marshal::engine::Value& result, std::string& error) {
          return call_c_host(data->fn, data->user, args, result, error);
        }});
    return wrap_out(api, marshal::engine::Value(std::move(host)), out);
  });
}

marshal_status marshal_value_create_callback(marshal_library* lib, const char* sig, const marshal_value* fn,
                                             marshal_value** out) {
  static const char* api = "marshal_value_create_callback";
  CLibrary* l = find<CLibrary>(lib);
  if (!l) return bad_handle(api, "lib", lib, Kind::library);
  if (!sig) return null_arg(api, "sig");
  CValue* f = find<CValue>(fn);
  if (!f) return bad_handle(api, "fn", fn, Kind::value);
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  if (!f->v.is<std::shared_ptr<marshal::engine::HostFunction>>())
    return wrong_kind(api, f, "a function value (marshal_value_create_function)");
  return guarded(api, [&] {
    std::string error;
    // Isolated: made in the surrogate, where native code keeps its pointer
    // (the value is the host's stand-in; remote/surrogate.hpp).
    const auto& fn = f->v.as<std::shared_ptr<marshal::engine::HostFunction>>();
    auto cb = l->lib ? l->lib->callback(sig, fn, error) : l->isolated->callback(sig, fn, error);
    if (!cb) {
      const marshal::engine::Typemap& tm = l->typemap();
      const auto known = tm.callbacks.find(sig);
      fail(MARSHAL_ERROR_BIND, error, known == tm.callbacks.end() ? MARSHAL_E_NOT_FOUND : MARSHAL_E_BIND);
      error_record.file = tm.file;
      error_record.function = sig;
      if (known != tm.callbacks.end()) error_record.pointer = known->second.pointer;
      return MARSHAL_ERROR_BIND;
    }
    const Bits h = wrap(api, marshal::engine::Value(cb));
    if (!h) {
      cb->release();
      return MARSHAL_ERROR_INTERNAL;
    }
    *out = to_handle<marshal_value>(h);
    return MARSHAL_OK;
  });
}

marshal_status marshal_callback_deactivate(marshal_value* callback) {
  static const char* api = "marshal_callback_deactivate";
  if (!callback) return MARSHAL_OK;  // like the release functions: cleanup paths pass what they have
  CValue* c = find<CValue>(callback);
  if (!c) return bad_handle(api, "callback", callback, Kind::value);
  if (!c->v.is<std::shared_ptr<marshal::engine::Callback>>())
    return wrong_kind(api, c, "a callback (marshal_value_create_callback)");
  auto& cb = *c->v.as<std::shared_ptr<marshal::engine::Callback>>();
  if (!cb.active())
    return fail(MARSHAL_ERROR_MISUSE,
                std::string(api) + ": callback '" + cb.name() +
                    "' already deactivated (by marshal_callback_deactivate or with its library)",
                MARSHAL_E_RELEASED);
  cb.release();  // the engine's word: the host releases its claim on the closure
  return MARSHAL_OK;
}

marshal_status marshal_library_pump(marshal_library* lib, uint32_t wait_ms, size_t* ran) {
  static const char* api = "marshal_library_pump";
  CLibrary* l = find<CLibrary>(lib);
  if (!l) return bad_handle(api, "lib", lib, Kind::library);
  if (ran) *ran = 0;
  return guarded(api, [&] {
    // Host functions run here: one may release the library (deferred to the end).
    std::shared_ptr<marshal::engine::Library> keep = l->lib;
    // Isolated: callbacks run on the thread waiting for the call they belong to
    // or on a dispatcher thread (remote/host_functions.hpp); none queue here.
    if (!keep) return MARSHAL_OK;
    FrameGuard frame(bits_of(lib), 0, 0, nullptr, 0);
    const std::size_t n = keep->callbacks().pump(std::chrono::milliseconds(wait_ms));
    if (ran) *ran = n;
    return MARSHAL_OK;
  });
}

// ---- objects ----

marshal_status marshal_value_create_object(marshal_library* lib, const char* cls, marshal_value* const* args,
                                          size_t nargs, marshal_value** out) {
  static const char* api = "marshal_value_create_object";
  CLibrary* l = find<CLibrary>(lib);
  if (!l) return bad_handle(api, "lib", lib, Kind::library);
  if (!cls) return null_arg(api, "cls");
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  return guarded(api, [&] {
    ArgView view;
    if (marshal_status st = collect_args(api, args, nargs, view); st != MARSHAL_OK) return st;
    std::vector<marshal::engine::Value> values;
    for (const marshal::engine::Value* a : view.view) values.push_back(*a);
    marshal::engine::Value obj;
    std::string error;
    {
      FrameGuard frame(bits_of(lib), 0, 0, args, nargs);
      // An isolated library makes it in the surrogate: a proxy here.
      marshal::engine::ObjectSpace& space = l->lib ? l->lib->objects() : l->isolated->objects();
      if (!space.create(cls, values, obj, error)) {
        const marshal::engine::Typemap& tm = l->typemap();
        const bool known = tm.classes.count(cls) != 0;
        fail(MARSHAL_ERROR_CALL, error, known ? MARSHAL_E_CALL : MARSHAL_E_NOT_FOUND);
        error_record.file = tm.file;
        error_record.function = cls;
        return MARSHAL_ERROR_CALL;
      }
    }
    return wrap_out(api, std::move(obj), out);
  });
}

// The native object behind a handle, or nullptr with the status in *st.
static const marshal::engine::ObjectRef* object_of(const char* api, const marshal_value* obj, marshal_status& st) {
  CValue* c = find<CValue>(obj);
  if (!c) {
    st = bad_handle(api, "obj", obj, Kind::value);
    return nullptr;
  }
  if (!c->v.is<marshal::engine::ObjectRef>()) {
    st = wrong_kind(api, c, "a native object");
    return nullptr;
  }
  return &c->v.as<marshal::engine::ObjectRef>();
}

// A method call's site: the method as named, with its interface when the
// name does not say it.
static Site method_site(const marshal::engine::ObjectRef& ref, const char* method) {
  Site site;
  site.file = &marshal::engine::library_of(ref).typemap().file;
  site.function = method;
  if (ref.iface) site.iface = ref.iface->name;
  return site;
}

marshal_status marshal_object_call(const marshal_value* obj, const char* method, marshal_value* const* args,
                                   size_t nargs, marshal_result** out) {
  static const char* api = "marshal_object_call";
  marshal_status st = MARSHAL_OK;
  const marshal::engine::ObjectRef* ref = object_of(api, obj, st);
  if (!ref) return st;
  if (!method) return null_arg(api, "method");
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  return call_new(api, method_site(*ref, method), 0, bits_of(obj), args, nargs, out, false,
                  [&](const ArgView& view, marshal::engine::CallResult& r, std::string& error) {
                    return marshal::engine::library_of(*ref).objects().call(*ref, method, view.view, r, error);
                  });
}

marshal_status marshal_object_call_into(const marshal_value* obj, const char* method, marshal_value* const* args,
                                        size_t nargs, marshal_result* result) {
  static const char* api = "marshal_object_call_into";
  marshal_status st = MARSHAL_OK;
  const marshal::engine::ObjectRef* ref = object_of(api, obj, st);
  if (!ref) return st;
  if (!method) return null_arg(api, "method");
  CResult* r = find<CResult>(result);
  if (!r) return bad_handle(api, "result", result, Kind::result);
  return call_into(api, method_site(*ref, method), 0, bits_of(obj), args, nargs, r, bits_of(result), false,
                   [&](const ArgView& view, marshal::engine::CallResult& c, std::string& error) {
                     return marshal::engine::library_of(*ref).objects().call(*ref, method, view.view, c, error);
                   });
}

marshal_status marshal_object_query(const marshal_value* obj, const char* iface, marshal_value** out) {
  static const char* api = "marshal_object_query";
  marshal_status st = MARSHAL_OK;
  const marshal::engine::ObjectRef* ref = object_of(api, obj, st);
  if (!ref) return st;
  if (!iface) return null_arg(api, "iface");
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  return guarded(api, [&] {
    marshal::engine::Value v;
    std::string error;
    {
      FrameGuard frame(0, 0, bits_of(obj), nullptr, 0);
      if (!marshal::engine::library_of(*ref).objects().query(*ref, iface, v, error)) return fail(MARSHAL_ERROR_CALL, error);
    }
    const Bits h = wrap(api, std::move(v));
    if (!h) return MARSHAL_ERROR_INTERNAL;
    *out = to_handle<marshal_value>(h);
    return MARSHAL_OK;
  });
}

int marshal_object_same(const marshal_value* a, const marshal_value* b) {
  static const char* api = "marshal_object_same";
  CValue* x = find<CValue>(a);
  if (!x) {
    note_bad_handle(api, "a", a, Kind::value);
    return 0;
  }
  CValue* y = find<CValue>(b);
  if (!y) {
    note_bad_handle(api, "b", b, Kind::value);
    return 0;
  }
  if (x->v.is<marshal::engine::ObjectRef>() && y->v.is<marshal::engine::ObjectRef>()) return x->v == y->v;  // COM identity, proxies included
  if (x->v.is<std::shared_ptr<marshal::engine::HostObject>>() && y->v.is<std::shared_ptr<marshal::engine::HostObject>>())
    return x->v.as<std::shared_ptr<marshal::engine::HostObject>>() == y->v.as<std::shared_ptr<marshal::engine::HostObject>>();
  return 0;
}

const char* marshal_object_interface(const marshal_value* obj) {
  marshal_status st = MARSHAL_OK;
  const marshal::engine::ObjectRef* ref = object_of("marshal_object_interface", obj, st);
  return ref ? ref->iface->name.c_str() : nullptr;
}

marshal_status marshal_value_create_host_object(const char* name, const char* const* interfaces, size_t ninterfaces,
                                                const marshal_host_method* methods, size_t nmethods, void* user,
                                                void (*destroy)(void* user), marshal_value** out) {
  static const char* api = "marshal_value_create_host_object";
  if (!out) {
    if (destroy) destroy(user);
    return null_arg(api, "out");
  }
  *out = nullptr;
  if ((nmethods && !methods) || (ninterfaces && !interfaces) || huge(nmethods) || huge(ninterfaces)) {
    if (destroy) destroy(user);
    return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": methods and interfaces must not be NULL when counted, "
                                                           "and their counts at most PTRDIFF_MAX");
  }
  std::shared_ptr<UserFunction> data;
  try {
    data = std::make_shared<UserFunction>(nullptr, user, destroy);
  } catch (...) {
    if (destroy) destroy(user);
    return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": out of memory");
  }
  return guarded(api, [&] {
    // One owner of the user data for all methods: destroy runs once, with the last of them.
    std::map<std::string, std::shared_ptr<marshal::engine::HostFunction>> table;
    for (size_t i = 0; i < nmethods; ++i) {
      if (!methods[i].name || !methods[i].fn)
        return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": method " + std::to_string(i) +
                                                " has no name or no function");
      marshal_host_fn fn = methods[i].fn;
      table[methods[i].name] = std::make_shared<marshal::engine::HostFunction>(marshal::engine::HostFunction{
          methods[i].name, [data, fn](const std::vector<marshal::engine::Value>& args, marshal::engine::Value& result, std::string& error) {
            return call_c_host(fn, data->user, args, result, error);
          }});
    }
    std::vector<std::string> names;
    for (size_t i = 0; i < ninterfaces; ++i) {
      if (!interfaces[i])
        return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": interface name " + std::to_string(i) + " is NULL");
      names.emplace_back(interfaces[i]);
    }
    auto host = std::make_shared<marshal::engine::HostObject>(name ? name : "c_object", std::move(names), std::move(table));
    return wrap_out(api, marshal::engine::Value(std::move(host)), out);
  });
}

uint32_t marshal_host_object_refs(const marshal_value* obj) {
  static const char* api = "marshal_host_object_refs";
  CValue* c = find<CValue>(obj);
  if (!c) {
    note_bad_handle(api, "obj", obj, Kind::value);
    return 0;
  }
  if (!c->v.is<std::shared_ptr<marshal::engine::HostObject>>()) {
    wrong_kind(api, c, "a host object");
    return 0;
  }
  return c->v.as<std::shared_ptr<marshal::engine::HostObject>>()->native_refs();
}

// ---- apartments ----

marshal_status marshal_apartment_enter(int sta) {
  return guarded("marshal_apartment_enter", [&] {
    std::string error;
    auto a = sta ? marshal::engine::enter_sta(error) : marshal::engine::enter_mta(error);
    // The engine refuses only a thread that is in an apartment already.
    return a ? MARSHAL_OK : fail(MARSHAL_ERROR_CALL, error, MARSHAL_E_WRONG_APARTMENT);
  });
}

void marshal_apartment_leave(void) {
  try {
    marshal::engine::leave_apartment();
  } catch (...) {
  }
}

marshal_status marshal_apartment_pump(uint32_t wait_ms, size_t* ran) {
  static const char* api = "marshal_apartment_pump";
  if (ran) *ran = 0;
  return guarded(api, [&] {
    auto a = marshal::engine::current_apartment();
    if (!a || a->kind() != marshal::engine::Apartment::Kind::sta)
      return fail(MARSHAL_ERROR_MISUSE,
                  std::string(api) + ": this thread is not in a single-threaded apartment (marshal_apartment_enter(1))",
                  MARSHAL_E_WRONG_APARTMENT);
    const std::size_t n = a->pump(std::chrono::milliseconds(wait_ms));
    if (ran) *ran = n;
    return MARSHAL_OK;
  });
}

marshal_status marshal_interface_marshal(const marshal_value* obj, uint64_t* token) {
  static const char* api = "marshal_interface_marshal";
  CValue* c = find<CValue>(obj);
  if (!c) return bad_handle(api, "obj", obj, Kind::value);
  if (!token) return null_arg(api, "token");
  return guarded(api, [&] {
    std::string error;
    std::uint64_t t = 0;
    FrameGuard frame(0, 0, bits_of(obj), nullptr, 0);
    if (!marshal::engine::marshal_interface(c->v, t, error)) return fail(MARSHAL_ERROR_CALL, error);
    *token = t;
    return MARSHAL_OK;
  });
}

marshal_status marshal_interface_unmarshal(uint64_t token, marshal_value** out) {
  static const char* api = "marshal_interface_unmarshal";
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  return guarded(api, [&] {
    std::string error;
    marshal::engine::Value v;
    if (!marshal::engine::unmarshal_interface(token, v, error)) return fail(MARSHAL_ERROR_CALL, error);
    const Bits h = wrap(api, std::move(v));
    if (!h) return MARSHAL_ERROR_INTERNAL;
    *out = to_handle<marshal_value>(h);
    return MARSHAL_OK;
  });
}

int marshal_object_is_proxy(const marshal_value* obj) {
  marshal_status st = MARSHAL_OK;
  const marshal::engine::ObjectRef* ref = object_of("marshal_object_is_proxy", obj, st);
  return ref && ref->proxy ? 1 : 0;
}

marshal_status marshal_value_create_from_json(const char* json, marshal_value** out) {
  static const char* api = "marshal_value_create_from_json";
  if (!json) return null_arg(api, "json");
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  return guarded(api, [&] {
    // The engine's bounded reader: nesting past max_value_depth, a repeated
    // key or bad syntax is an argument error naming the place, never a deep
    // recursion or an internal error.
    marshal::engine::Value v;
    std::string why;
    if (!marshal::engine::Value::parse_json(json, v, why)) return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": " + why);
    const Bits h = wrap(api, std::move(v));
    if (!h) return MARSHAL_ERROR_INTERNAL;
    *out = to_handle<marshal_value>(h);
    return MARSHAL_OK;
  });
}

marshal_status marshal_value_to_json(const marshal_value* v, char** out) {
  static const char* api = "marshal_value_to_json";
  CValue* c = find<CValue>(v);
  if (!c) return bad_handle(api, "v", v, Kind::value);
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  try {
    std::string s = c->v.to_json().dump();
    char* text = static_cast<char*>(std::malloc(s.size() + 1));
    if (!text) return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": out of memory");
    std::memcpy(text, s.c_str(), s.size() + 1);
    *out = text;
    return MARSHAL_OK;
  } catch (const std::bad_alloc&) {
    return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": out of memory");
  } catch (const std::exception& e) {  // a value JSON cannot hold (text that is not UTF-8...)
    return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": " + e.what(), MARSHAL_E_CONVERSION);
  } catch (...) {
    return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": failed");
  }
}

void marshal_free(void* p) { std::free(p); }

// ---- version ----
// MARSHAL_VERSION_* come from meson's project version (bindings/c/meson.build).

const char* marshal_version(void) { return MARSHAL_VERSION_TEXT; }
unsigned marshal_version_major(void) { return MARSHAL_VERSION_MAJOR; }
unsigned marshal_version_minor(void) { return MARSHAL_VERSION_MINOR; }
unsigned marshal_version_micro(void) { return MARSHAL_VERSION_MICRO; }

// ---- the error record ----
// A NULL record reads as "no error" (the accessors never fail).

static const ErrorRecord* record_of(const marshal_error* e) { return reinterpret_cast<const ErrorRecord*>(e); }

marshal_error_code marshal_error_id(const marshal_error* e) { return e ? record_of(e)->id : MARSHAL_E_NONE; }
const char* marshal_error_message(const marshal_error* e) { return e ? record_of(e)->message.c_str() : ""; }
const char* marshal_error_function(const marshal_error* e) { return e ? record_of(e)->function.c_str() : ""; }
int64_t marshal_error_parameter_index(const marshal_error* e) { return e ? record_of(e)->parameter_index : -1; }
const char* marshal_error_parameter_name(const marshal_error* e) {
  return e ? record_of(e)->parameter_name.c_str() : "";
}
const char* marshal_error_pointer(const marshal_error* e) { return e ? record_of(e)->pointer.c_str() : ""; }
const char* marshal_error_file(const marshal_error* e) { return e ? record_of(e)->file.c_str() : ""; }
const char* marshal_error_got(const marshal_error* e) { return e ? record_of(e)->got.c_str() : ""; }
const char* marshal_error_expected(const marshal_error* e) { return e ? record_of(e)->expected.c_str() : ""; }
int64_t marshal_error_native_code(const marshal_error* e) { return e ? record_of(e)->native_code : -1; }

const char* marshal_error_code_name(marshal_error_code id) {
  // A C caller may pass any int (a C enum is one); read it as an int: a C++ load of
  // an enum value outside its enumerators' range is undefined (clang's UBSan stops).
  static_assert(sizeof(marshal_error_code) == sizeof(int) && MARSHAL_E_REFUSED == 18, "every code is named below");
  int code = 0;
  std::memcpy(&code, &id, sizeof code);
  switch (code) {
    case MARSHAL_E_NONE: return "MARSHAL_E_NONE";
    case MARSHAL_E_INVALID_ARGUMENT: return "MARSHAL_E_INVALID_ARGUMENT";
    case MARSHAL_E_TYPEMAP: return "MARSHAL_E_TYPEMAP";
    case MARSHAL_E_LIBRARY_NOT_FOUND: return "MARSHAL_E_LIBRARY_NOT_FOUND";
    case MARSHAL_E_NOT_FOUND: return "MARSHAL_E_NOT_FOUND";
    case MARSHAL_E_BIND: return "MARSHAL_E_BIND";
    case MARSHAL_E_CONVERSION: return "MARSHAL_E_CONVERSION";
    case MARSHAL_E_NULL_NOT_ALLOWED: return "MARSHAL_E_NULL_NOT_ALLOWED";
    case MARSHAL_E_NATIVE: return "MARSHAL_E_NATIVE";
    case MARSHAL_E_WRONG_APARTMENT: return "MARSHAL_E_WRONG_APARTMENT";
    case MARSHAL_E_RELEASED: return "MARSHAL_E_RELEASED";
    case MARSHAL_E_LIMIT: return "MARSHAL_E_LIMIT";
    case MARSHAL_E_INTERNAL: return "MARSHAL_E_INTERNAL";
    case MARSHAL_E_MISUSE: return "MARSHAL_E_MISUSE";
    case MARSHAL_E_CALL: return "MARSHAL_E_CALL";
    case MARSHAL_E_NATIVE_CRASH: return "MARSHAL_E_NATIVE_CRASH";
    case MARSHAL_E_DEADLINE: return "MARSHAL_E_DEADLINE";
    case MARSHAL_E_DISCONNECTED: return "MARSHAL_E_DISCONNECTED";
    case MARSHAL_E_REFUSED: return "MARSHAL_E_REFUSED";
  }
  return "";
}

// ---- introspection ----
// Signatures and types are read from the typemap (never bound), copied into
// small records the first time they are asked for, and owned by the library.

// An index into one of a library's name lists, or nullptr with the error.
static const char* name_at(const char* api, const marshal_library* lib, size_t i, bool types) {
  CLibrary* l = find<CLibrary>(lib);
  if (!l) {
    note_bad_handle(api, "lib", lib, Kind::library);
    return nullptr;
  }
  const auto& names = types ? l->type_names : l->function_names;
  if (i >= names.size()) {
    fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": index " + std::to_string(i) + " is out of range (" +
                                     std::to_string(names.size()) + (types ? " types)" : " functions)"));
    error_record.got = std::to_string(i);
    error_record.expected = names.empty() ? "no index" : "0 to " + std::to_string(names.size() - 1);
    return nullptr;
  }
  return names[i]->c_str();
}

size_t marshal_library_function_count(const marshal_library* lib) {
  CLibrary* l = find<CLibrary>(lib);
  if (!l) {
    note_bad_handle("marshal_library_function_count", "lib", lib, Kind::library);
    return 0;
  }
  return l->function_names.size();
}

const char* marshal_library_function_name(const marshal_library* lib, size_t i) {
  return name_at("marshal_library_function_name", lib, i, false);
}

size_t marshal_library_type_count(const marshal_library* lib) {
  CLibrary* l = find<CLibrary>(lib);
  if (!l) {
    note_bad_handle("marshal_library_type_count", "lib", lib, Kind::library);
    return 0;
  }
  return l->type_names.size();
}

const char* marshal_library_type_name(const marshal_library* lib, size_t i) {
  return name_at("marshal_library_type_name", lib, i, true);
}

// A type's spelling for hosts: "void" for a signature without a return.
static std::string type_text(const marshal::engine::TypeRegistry& reg, marshal::engine::TypeId t) {
  return t == marshal::engine::no_type ? std::string("void") : reg.spell(t);
}

marshal_status marshal_library_signature(marshal_library* lib, const char* function, marshal_signature** out) {
  static const char* api = "marshal_library_signature";
  CLibrary* l = find<CLibrary>(lib);
  if (!l) return bad_handle(api, "lib", lib, Kind::library);
  if (!function) return null_arg(api, "function");
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  return guarded(api, [&] {
    std::lock_guard lock(l->mutex);
    auto it = l->signatures.find(function);
    if (it == l->signatures.end()) {
      const marshal::engine::Typemap& tm = l->typemap();
      const auto fit = tm.functions.find(function);
      if (fit == tm.functions.end()) {
        fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": " + tm.file + " has no function '" + function + "'",
             MARSHAL_E_NOT_FOUND);
        error_record.file = tm.file;
        error_record.function = function;
        return MARSHAL_ERROR_ARGUMENT;
      }
      const marshal::engine::Function& fn = fit->second;
      const marshal::engine::TypeRegistry& reg = l->registry();
      auto sg = std::make_unique<CSignature>();
      sg->sig = &fn;
      sg->variadic_from = fn.variadic_from;
      sg->returns = type_text(reg, fn.returns);
      for (const marshal::engine::Param& p : fn.params) sg->types.push_back(type_text(reg, p.type));
      std::string error;
      sg->self = Handles::add(Kind::signature, sg.get(), 1, error);
      if (!sg->self) return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": " + error, MARSHAL_E_LIMIT);
      it = l->signatures.emplace(function, std::move(sg)).first;
    }
    *out = to_handle<marshal_signature>(it->second->self);
    return MARSHAL_OK;
  });
}

// The signature behind a handle, or nullptr with the error.
static CSignature* signature_of(const char* api, const marshal_signature* sig) {
  CSignature* s = find<CSignature>(sig);
  if (!s) note_bad_handle(api, "sig", sig, Kind::signature);
  return s;
}

const char* marshal_signature_name(const marshal_signature* sig) {
  CSignature* s = signature_of("marshal_signature_name", sig);
  return s ? s->sig->name.c_str() : nullptr;
}

const char* marshal_signature_return_type(const marshal_signature* sig) {
  CSignature* s = signature_of("marshal_signature_return_type", sig);
  return s ? s->returns.c_str() : nullptr;
}

size_t marshal_signature_param_count(const marshal_signature* sig) {
  CSignature* s = signature_of("marshal_signature_param_count", sig);
  return s ? s->sig->params.size() : 0;
}

int64_t marshal_signature_variadic_from(const marshal_signature* sig) {
  CSignature* s = signature_of("marshal_signature_variadic_from", sig);
  return s ? s->variadic_from : -1;
}

static marshal_direction direction_of(marshal::engine::Dir d) {
  switch (d) {
    case marshal::engine::Dir::in: return MARSHAL_DIR_IN;
    case marshal::engine::Dir::out: return MARSHAL_DIR_OUT;
    case marshal::engine::Dir::inout: return MARSHAL_DIR_INOUT;
  }
  return MARSHAL_DIR_IN;
}

marshal_status marshal_signature_param(const marshal_signature* sig, size_t i, const char** name, const char** type,
                                       marshal_direction* dir, uint32_t* flags) {
  static const char* api = "marshal_signature_param";
  CSignature* s = find<CSignature>(sig);
  if (!s) return bad_handle(api, "sig", sig, Kind::signature);
  const std::size_t n = s->sig->params.size();
  if (i >= n) {
    fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": index " + std::to_string(i) + " is out of range ('" +
                                     s->sig->name + "' has " + std::to_string(n) + " parameters)");
    error_record.function = s->sig->name;
    error_record.got = std::to_string(i);
    error_record.expected = n ? "0 to " + std::to_string(n - 1) : "no index";
    return MARSHAL_ERROR_ARGUMENT;
  }
  const marshal::engine::Param& p = s->sig->params[i];
  if (name) *name = p.name.c_str();
  if (type) *type = s->types[i].c_str();
  if (dir) *dir = direction_of(p.dir);
  if (flags)
    *flags = (p.nullable ? MARSHAL_PARAM_OPTIONAL : 0u) | (p.value.present() ? MARSHAL_PARAM_COMPUTED : 0u);
  return MARSHAL_OK;
}

static marshal_type_kind type_kind_of(marshal::engine::Kind k) {
  switch (k) {
    case marshal::engine::Kind::void_: return MARSHAL_TYPE_VOID;
    case marshal::engine::Kind::integer: return MARSHAL_TYPE_INTEGER;
    case marshal::engine::Kind::floating: return MARSHAL_TYPE_FLOAT;
    case marshal::engine::Kind::boolean: return MARSHAL_TYPE_BOOL;
    case marshal::engine::Kind::pointer: return MARSHAL_TYPE_POINTER;
    case marshal::engine::Kind::ptr: return MARSHAL_TYPE_PTR;
    case marshal::engine::Kind::array: return MARSHAL_TYPE_ARRAY;
    case marshal::engine::Kind::string: return MARSHAL_TYPE_STRING;
    case marshal::engine::Kind::struct_: return MARSHAL_TYPE_STRUCT;
    case marshal::engine::Kind::union_: return MARSHAL_TYPE_UNION;
    case marshal::engine::Kind::enum_: return MARSHAL_TYPE_ENUM;
    case marshal::engine::Kind::handle: return MARSHAL_TYPE_HANDLE;
    case marshal::engine::Kind::callback: return MARSHAL_TYPE_CALLBACK;
    case marshal::engine::Kind::interface: return MARSHAL_TYPE_INTERFACE;
  }
  return MARSHAL_TYPE_VOID;
}

marshal_status marshal_library_type(marshal_library* lib, const char* name, marshal_type** out) {
  static const char* api = "marshal_library_type";
  CLibrary* l = find<CLibrary>(lib);
  if (!l) return bad_handle(api, "lib", lib, Kind::library);
  if (!name) return null_arg(api, "name");
  if (!out) return null_arg(api, "out");
  *out = nullptr;
  return guarded(api, [&] {
    std::lock_guard lock(l->mutex);
    auto it = l->types.find(name);
    if (it == l->types.end()) {
      const marshal::engine::Typemap& tm = l->typemap();
      const marshal::engine::TypeRegistry& reg = l->registry();
      marshal::engine::TypeId t = tm.find_type(name);
      if (t == marshal::engine::no_type) t = reg.find_primitive(name);
      if (t == marshal::engine::no_type) {
        fail(MARSHAL_ERROR_ARGUMENT,
             std::string(api) + ": unknown type '" + name + "' (a primitive or a type of " + tm.file + ")",
             MARSHAL_E_NOT_FOUND);
        error_record.file = tm.file;
        return MARSHAL_ERROR_ARGUMENT;
      }
      const marshal::engine::TypeDesc& d = reg.get(t);
      auto ty = std::make_unique<CType>();
      ty->kind = type_kind_of(d.kind);
      ty->size = d.size;
      ty->align = d.align;
      ty->text = reg.spell(t);
      if (d.kind == marshal::engine::Kind::struct_ || d.kind == marshal::engine::Kind::union_)
        for (const marshal::engine::Field& f : d.as<marshal::engine::RecordInfo>().fields)
          ty->fields.push_back({f.name, f.offset, reg.spell(f.type)});
      std::string error;
      ty->self = Handles::add(Kind::type, ty.get(), 1, error);
      if (!ty->self) return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": " + error, MARSHAL_E_LIMIT);
      it = l->types.emplace(name, std::move(ty)).first;
    }
    *out = to_handle<marshal_type>(it->second->self);
    return MARSHAL_OK;
  });
}

marshal_status marshal_type_layout(const marshal_type* type, marshal_type_kind* kind, size_t* size, size_t* align) {
  CType* t = find<CType>(type);
  if (!t) return bad_handle("marshal_type_layout", "type", type, Kind::type);
  if (kind) *kind = t->kind;
  if (size) *size = t->size;
  if (align) *align = t->align;
  return MARSHAL_OK;
}

const char* marshal_type_text(const marshal_type* type) {
  CType* t = find<CType>(type);
  if (!t) {
    note_bad_handle("marshal_type_text", "type", type, Kind::type);
    return nullptr;
  }
  return t->text.c_str();
}

size_t marshal_type_field_count(const marshal_type* type) {
  CType* t = find<CType>(type);
  if (!t) {
    note_bad_handle("marshal_type_field_count", "type", type, Kind::type);
    return 0;
  }
  return t->fields.size();
}

marshal_status marshal_type_field(const marshal_type* type, size_t i, const char** name, size_t* offset,
                                  const char** field_type) {
  static const char* api = "marshal_type_field";
  CType* t = find<CType>(type);
  if (!t) return bad_handle(api, "type", type, Kind::type);
  if (i >= t->fields.size()) {
    fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": index " + std::to_string(i) + " is out of range ('" + t->text +
                                     "' has " + std::to_string(t->fields.size()) + " fields)");
    error_record.got = std::to_string(i);
    error_record.expected = t->fields.empty() ? "no index" : "0 to " + std::to_string(t->fields.size() - 1);
    return MARSHAL_ERROR_ARGUMENT;
  }
  const CType::FieldInfo& f = t->fields[i];
  if (name) *name = f.name.c_str();
  if (offset) *offset = f.offset;
  if (field_type) *field_type = f.type.c_str();
  return MARSHAL_OK;
}

}  // extern "C"
