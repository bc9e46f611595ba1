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
#include "call/library.hpp"
#include "values/value.hpp"

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

// ---- the objects behind the handles ----

struct CTypemap;

struct CContext {
  // Shared with every engine library opened from it: objects and callbacks
  // may keep a library (and so its types) alive after the context handle goes.
  std::shared_ptr<marshal::Context> ctx = std::make_shared<marshal::Context>();
  std::mutex mutex;
  std::vector<std::unique_ptr<CTypemap>> typemaps;
};

// Belongs to its context: its handle dies with the context's.
struct CTypemap {
  Bits self = 0;
  Bits context = 0;
  CContext* ctx = nullptr;
  const marshal::Typemap* tm = nullptr;
};

// Belongs to its library: its handle dies with the library's (a function of a
// released library fails cleanly; it does not keep the library alive).
struct CFunction {
  Bits self = 0;
  Bits library = 0;
  const marshal::Plan* plan = nullptr;
};

struct CLibrary {
  Bits context = 0;  // one reference, dropped with the library
  std::shared_ptr<marshal::Library> lib;
  std::mutex mutex;
  std::map<std::string, std::unique_ptr<CFunction>> functions;
};

struct CResult {
  Bits ret = 0;  // borrowed values: the result holds their one reference
  std::vector<std::pair<std::string, Bits>> outs;
  bool has_errno = false;
  int err = 0;
  marshal::CallResult scratch;  // what the engine writes; moved into the values above
};

struct CValue {
  marshal::Value v;
  // Handles given out for list items or record fields, each holding one
  // reference owned by this value; rebuilt after the container changes.
  std::vector<Bits> kids;
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

thread_local std::string last_error;

marshal_status fail(marshal_status s, std::string message) {
  last_error = std::move(message);
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
  return fail(MARSHAL_ERROR_INVALID_HANDLE, m + Handles::diagnose(h, k, releasing));
}

// For functions that answer with a count or a pointer: the message only.
void note_bad_handle(const char* api, const char* param, const void* h, Kind k) { bad_handle(api, param, h, k); }

// "a string", "an integer": what a value holds, for messages.
const char* noun(const marshal::Value& v) {
  switch (v.type()) {
    case marshal::Value::Type::null: return "null";
    case marshal::Value::Type::boolean: return "a bool";
    case marshal::Value::Type::int64: case marshal::Value::Type::uint64: return "an integer";
    case marshal::Value::Type::real: return "a double";
    case marshal::Value::Type::string: return "a string";
    case marshal::Value::Type::bytes: return "bytes";
    case marshal::Value::Type::list: return "a list";
    case marshal::Value::Type::record: return "a record";
    case marshal::Value::Type::address: return "an address";
    case marshal::Value::Type::handle: return "a handle";
    case marshal::Value::Type::native: return "native memory";
    case marshal::Value::Type::function: return "a host function";
    case marshal::Value::Type::callback: return "a callback";
    case marshal::Value::Type::object: return "a native object";
    case marshal::Value::Type::host_object: return "a host object";
  }
  return "?";
}

marshal_status wrong_kind(const char* api, const CValue* v, const char* want) {
  return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": expected " + want + ", got " + v->v.describe());
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
    case Kind::none: case Kind::context: case Kind::typemap: case Kind::function: return false;
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
Bits wrap(const char* api, marshal::Value&& v, bool borrowed = false) noexcept {
  CValue* c = nullptr;
  try {
    c = new CValue;
  } catch (...) {
    last_error = std::string(api) + ": out of memory";
    return 0;
  }
  c->v = std::move(v);
  c->borrowed.store(borrowed, std::memory_order_relaxed);
  std::string error;
  Bits h = 0;
  try {
    h = Handles::add(Kind::value, c, 1, error);
  } catch (...) {
    error = "out of memory";
  }
  if (!h) {
    delete c;
    last_error = std::string(api) + ": " + error;
  }
  return h;
}

marshal_value* wrap_handle(const char* api, marshal::Value v) { return to_handle<marshal_value>(wrap(api, std::move(v))); }

[[gnu::noinline]] void drop_kids_now(CValue* v) noexcept {
  for (Bits k : v->kids) disown(k);
  v->kids.clear();
}
// Inline: most values never had their items read.
inline void drop_kids(CValue* v) noexcept {
  if (!v->kids.empty()) drop_kids_now(v);
}

// The handle of a list's item or a record's field i, made on first use (a
// host reading one item of a long list pays for that item only).
Bits kid(const char* api, CValue* v, std::size_t i) {
  const std::size_t n = v->v.is<marshal::List>() ? v->v.as<marshal::List>().size() : v->v.as<marshal::Record>().size();
  try {
    if (v->kids.size() != n) {
      drop_kids(v);
      v->kids.assign(n, 0);
    }
    if (!v->kids[i]) {
      marshal::Value copy = v->v.is<marshal::List>() ? v->v.as<marshal::List>()[i] : v->v.as<marshal::Record>()[i].second;
      v->kids[i] = wrap(api, std::move(copy), true);
    }
    return v->kids[i];
  } catch (...) {
    last_error = std::string(api) + ": out of memory";
    return 0;
  }
}

// Puts v into *slot (a result's value), reusing the value when nobody else
// holds it (a host that retained a value from an earlier result keeps that
// value unchanged, and an argument of a call in progress is not touched).
void put(Bits& slot, marshal::Value&& v) {
  std::uint32_t refs = 0;
  auto* c = static_cast<CValue*>(Handles::find(to_handle<void>(slot), Kind::value, refs));
  if (c && refs == 1 && !in_call(slot, Kind::value)) {
    drop_kids(c);
    // A record is swapped, not moved: the engine's scratch keeps its shape, so
    // a record returned call after call is updated in place.
    if (v.is<marshal::Record>()) std::swap(c->v, v);
    else c->v.take(std::move(v));
    return;
  }
  disown(slot);
  slot = 0;
  slot = wrap("marshal_function_call", std::move(v), true);
  if (!slot) throw std::bad_alloc();
}

// Moves the engine's result (r->scratch) into r's values.
void publish(CResult* r) {
  marshal::CallResult& c = r->scratch;
  put(r->ret, std::move(c.ret));
  if (r->outs.size() > c.out.size()) {
    for (std::size_t i = c.out.size(); i < r->outs.size(); ++i) disown(r->outs[i].second);
    r->outs.resize(c.out.size());
  }
  for (std::size_t i = 0; i < c.out.size(); ++i) {
    if (i == r->outs.size()) r->outs.emplace_back(c.out[i].first, 0);
    else if (r->outs[i].first != c.out[i].first) r->outs[i].first = c.out[i].first;
    put(r->outs[i].second, std::move(c.out[i].second));
  }
  r->has_errno = c.error_number.has_value();
  r->err = c.error_number.value_or(0);
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
    case Kind::none: case Kind::typemap: case Kind::function: break;  // no references: killed with their owner
  }
}

// ---- calls ----

// The most arguments a call takes from the host: more is a wrong count.
constexpr std::size_t max_args = 65535;

// The engine's view of the host's arguments: their addresses, no copies.
struct ArgView {
  const marshal::Value* small[16];
  std::unique_ptr<const marshal::Value*[]> big;  // more than 16 arguments
  std::span<const marshal::Value* const> view;
};

marshal_status collect_args(const char* api, marshal_value* const* args, std::size_t nargs, ArgView& out) {
  if (nargs > max_args)
    return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": nargs is " + std::to_string(nargs) + ", more than " +
                                            std::to_string(max_args) + " (a negative count?)");
  if (nargs && !args) return null_arg(api, "args");
  const marshal::Value** p = out.small;
  if (nargs > std::size(out.small)) {
    out.big = std::make_unique<const marshal::Value*[]>(nargs);
    p = out.big.get();
  }
  for (std::size_t i = 0; i < nargs; ++i) {
    CValue* v = find<CValue>(args[i]);
    if (!v) {
      if (!args[i])
        return fail(MARSHAL_ERROR_ARGUMENT,
                    std::string(api) + ": argument " + std::to_string(i) + " is NULL (use marshal_value_null())");
      const std::string which = "argument " + std::to_string(i);
      return bad_handle(api, which.c_str(), args[i], Kind::value);
    }
    p[i] = &v->v;
  }
  out.view = std::span<const marshal::Value* const>(p, nargs);
  return MARSHAL_OK;
}

// A fixed-arity function given another number of arguments: the engine says
// so (with the parameter names) from placeholders, without the host's array
// being read past what the function can take.
const marshal::Value null_value;

// Calls through `call` into r; r is left as it was when the call fails.
template <class Call>
marshal_status call_into(const char* api, Bits library, Bits object, marshal_value* const* args, std::size_t nargs,
                         CResult* r, Bits result, bool wrong_count, Call&& call) {
  return guarded(api, [&] {
    ArgView view;
    if (wrong_count && nargs <= max_args) {
      const marshal::Value** p = view.small;
      if (nargs > std::size(view.small)) {
        view.big = std::make_unique<const marshal::Value*[]>(nargs);
        p = view.big.get();
      }
      for (std::size_t i = 0; i < nargs; ++i) p[i] = &null_value;
      view.view = std::span<const marshal::Value* const>(p, nargs);
    } else if (marshal_status st = collect_args(api, args, nargs, view); st != MARSHAL_OK) {
      return st;
    }
    FrameGuard frame(library, result, object, args, wrong_count ? 0 : nargs);
    r->scratch.out.clear();
    r->scratch.error_number.reset();
    std::string error;
    if (!call(view.view, r->scratch, error)) return fail(MARSHAL_ERROR_CALL, error);
    publish(r);
    return MARSHAL_OK;
  });
}

// The same into a new result.
template <class Call>
marshal_status call_new(const char* api, Bits library, Bits object, marshal_value* const* args, std::size_t nargs,
                        marshal_result** out, bool wrong_count, Call&& call) {
  auto* r = new (std::nothrow) CResult;
  if (!r) return fail(MARSHAL_ERROR_INTERNAL, std::string(api) + ": out of memory");
  marshal_status st = call_into(api, library, object, args, nargs, r, 0, wrong_count, call);
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

// Whether a function of fixed arity is given another number of arguments.
bool wrong_count(const marshal::Plan* plan, std::size_t nargs) {
  return plan->function().variadic_from < 0 && nargs != plan->host_arity();
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
  if (full) fail(MARSHAL_ERROR_MISUSE, std::string(api) + ": " + kind_name(k) + " has 4294967295 references already");
  else bad_handle(api, nullptr, h, k);
  return nullptr;
}

}  // namespace
}  // namespace marshal_c

using namespace marshal_c;

extern "C" {

const char* marshal_last_error(void) { return last_error.c_str(); }

// ---- contexts and typemaps ----

marshal_status marshal_context_create(marshal_context** out) {
  if (!out) return null_arg("marshal_context_create", "out");
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

static marshal_status finish_load(const char* api, marshal_context* handle, CContext* ctx, marshal::LoadResult r,
                                  marshal_typemap** out) {
  if (!r.ok()) {
    std::string all;
    for (const auto& e : r.errors) all += (all.empty() ? "" : "\n") + e.text();
    return fail(MARSHAL_ERROR_TYPEMAP, all);
  }
  auto t = std::make_unique<CTypemap>(CTypemap{0, bits_of(handle), ctx, r.typemap});
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
  return guarded(api, [&] { return finish_load(api, ctx, c, c->ctx->load_file(path), out); });
}

marshal_status marshal_typemap_load_text(marshal_context* ctx, const char* json, size_t length, const char* name,
                                         marshal_typemap** out) {
  static const char* api = "marshal_typemap_load_text";
  CContext* c = find<CContext>(ctx);
  if (!c) return bad_handle(api, "ctx", ctx, Kind::context);
  if (!json) return null_arg(api, "json");
  if (!out) return null_arg(api, "out");
  if (huge(length)) return huge_count(api, "length", length);
  return guarded(api, [&] {
    return finish_load(api, ctx, c, c->ctx->load_text(std::string_view(json, length), name ? name : "<text>"), out);
  });
}

// ---- libraries and functions ----

marshal_status marshal_library_open(marshal_typemap* tm, marshal_library** out) {
  static const char* api = "marshal_library_open";
  CTypemap* t = find<CTypemap>(tm);
  if (!t) return bad_handle(api, "tm", tm, Kind::typemap);
  if (!out) return null_arg(api, "out");
  return guarded(api, [&] {
    std::string error;
    auto lib = marshal::Library::open(*t->ctx->ctx, *t->tm, error);
    if (!lib) return fail(MARSHAL_ERROR_LIBRARY, error);
    lib->keep_alive(t->ctx->ctx);  // the engine library may outlive the context handle
    auto l = std::make_unique<CLibrary>();
    l->lib = std::move(lib);
    bool full = false;
    if (!Handles::retain(t->context, full))
      return fail(MARSHAL_ERROR_MISUSE, std::string(api) + ": the typemap's context has 4294967295 references already");
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

marshal_library* marshal_library_retain(marshal_library* lib) {
  return retain_handle("marshal_library_retain", lib, Kind::library);
}

marshal_status marshal_library_release(marshal_library* lib) {
  return lib ? drop("marshal_library_release", bits_of(lib), Kind::library, true) : MARSHAL_OK;
}

marshal_status marshal_library_set_max_alloc(marshal_library* lib, size_t bytes) {
  CLibrary* l = find<CLibrary>(lib);
  if (!l) return bad_handle("marshal_library_set_max_alloc", "lib", lib, Kind::library);
  if (bytes == 0 || huge(bytes))
    return fail(MARSHAL_ERROR_ARGUMENT, "marshal_library_set_max_alloc: bytes is " + std::to_string(bytes) +
                                            " (expected 1 to PTRDIFF_MAX)");
  l->lib->set_max_buffer(bytes);  // one limit: native memory and the buffers of calls
  return MARSHAL_OK;
}

marshal_status marshal_library_function(marshal_library* lib, const char* name, marshal_function** out) {
  static const char* api = "marshal_library_function";
  CLibrary* l = find<CLibrary>(lib);
  if (!l) return bad_handle(api, "lib", lib, Kind::library);
  if (!name) return null_arg(api, "name");
  if (!out) return null_arg(api, "out");
  return guarded(api, [&] {
    std::lock_guard lock(l->mutex);
    auto it = l->functions.find(name);
    if (it == l->functions.end()) {
      std::string error;
      const marshal::Plan* plan = l->lib->bind(name, error);
      if (!plan) return fail(MARSHAL_ERROR_BIND, error);
      auto f = std::make_unique<CFunction>(CFunction{0, bits_of(lib), plan});
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
  return f->plan->host_arity();
}

marshal_status marshal_function_call(const marshal_function* fn, marshal_value* const* args, size_t nargs,
                                     marshal_result** out) {
  static const char* api = "marshal_function_call";
  CFunction* f = find<CFunction>(fn);
  if (!f) return bad_handle(api, "fn", fn, Kind::function);
  if (!out) return null_arg(api, "out");
  return call_new(api, f->library, 0, args, nargs, out, wrong_count(f->plan, nargs),
                  [&](auto view, marshal::CallResult& r, std::string& error) { return f->plan->call(view, r, error); });
}

marshal_result* marshal_result_create(void) {
  auto* r = new (std::nothrow) CResult;
  if (!r) {
    last_error = "marshal_result_create: out of memory";
    return nullptr;
  }
  std::string error;
  Bits h = 0;
  try {
    h = Handles::add(Kind::result, r, 1, error);
  } catch (...) {
    error = "out of memory";
  }
  if (!h) {
    delete r;
    last_error = "marshal_result_create: " + error;
    return nullptr;
  }
  return to_handle<marshal_result>(h);
}

marshal_status marshal_function_call_into(const marshal_function* fn, marshal_value* const* args, size_t nargs,
                                          marshal_result* result) {
  static const char* api = "marshal_function_call_into";
  CFunction* f = find<CFunction>(fn);
  if (!f) return bad_handle(api, "fn", fn, Kind::function);
  CResult* r = find<CResult>(result);
  if (!r) return bad_handle(api, "result", result, Kind::result);
  return call_into(api, f->library, 0, args, nargs, r, bits_of(result), wrong_count(f->plan, nargs),
                   [&](auto view, marshal::CallResult& c, std::string& error) { return f->plan->call(view, c, error); });
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
  fail(MARSHAL_ERROR_ARGUMENT, std::string("marshal_result_out: no out parameter '") + name + "'");
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

marshal_value* marshal_value_null(void) { return wrap_handle("marshal_value_null", marshal::Value()); }
marshal_value* marshal_value_bool(int b) { return wrap_handle("marshal_value_bool", marshal::Value(b != 0)); }
marshal_value* marshal_value_int64(int64_t v) {
  return wrap_handle("marshal_value_int64", marshal::Value(std::int64_t{v}));
}
marshal_value* marshal_value_uint64(uint64_t v) {
  return wrap_handle("marshal_value_uint64", marshal::Value(std::uint64_t{v}));
}
marshal_value* marshal_value_double(double v) { return wrap_handle("marshal_value_double", marshal::Value(v)); }

// A host buffer given as pointer and length: not NULL unless empty, not larger
// than any object can be. Records the error (naming api and the pointer) when not.
bool buffer_ok(const char* api, const char* name, const void* p, size_t length) {
  if (!p && length) {
    last_error = std::string(api) + ": " + name + " is NULL with a length of " + std::to_string(length);
    return false;
  }
  if (huge(length)) {
    huge_count(api, "length", length);
    return false;
  }
  return true;
}

marshal_value* marshal_value_string(const char* utf8, size_t length) {
  static const char* api = "marshal_value_string";
  if (!buffer_ok(api, "utf8", utf8, length)) return nullptr;
  try {
    return wrap_handle(api, marshal::Value(std::string(utf8 ? utf8 : "", length)));
  } catch (...) {
    last_error = std::string(api) + ": out of memory";
    return nullptr;
  }
}

marshal_value* marshal_value_bytes(const void* data, size_t length) {
  static const char* api = "marshal_value_bytes";
  if (!buffer_ok(api, "data", data, length)) return nullptr;
  try {
    const auto* p = static_cast<const std::uint8_t*>(data);
    return wrap_handle(api, marshal::Value(marshal::Bytes{p ? std::vector<std::uint8_t>(p, p + length)
                                                            : std::vector<std::uint8_t>{}}));
  } catch (...) {
    last_error = std::string(api) + ": out of memory";
    return nullptr;
  }
}

marshal_value* marshal_value_list(void) { return wrap_handle("marshal_value_list", marshal::Value(marshal::List{})); }
marshal_value* marshal_value_record(void) {
  return wrap_handle("marshal_value_record", marshal::Value(marshal::Record{}));
}

// Bytes for count elements of `size` bytes, or false when the product
// does not fit in size_t (checked: never a wrapped, tiny buffer).
static bool checked_bytes(std::size_t count, std::size_t size, std::size_t& bytes) {
  return !__builtin_mul_overflow(count, size, &bytes);
}

marshal_status marshal_value_native(marshal_library* lib, const char* type, size_t count, marshal_value** out) {
  static const char* api = "marshal_value_native";
  CLibrary* l = find<CLibrary>(lib);
  if (!l) return bad_handle(api, "lib", lib, Kind::library);
  if (!type) return null_arg(api, "type");
  if (!out) return null_arg(api, "out");
  return guarded(api, [&] {
    const marshal::TypeRegistry& reg = l->lib->context().types();
    marshal::TypeId t = reg.find_primitive(type);
    if (t == marshal::no_type) t = l->lib->typemap().find_type(type);
    if (t == marshal::no_type || t == reg.void_type() || reg.get(t).size == 0)
      return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": unknown type '" + type + "' (a primitive or a sized type of " +
                                              l->lib->typemap().file + ")");
    if (count == 0) return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": count must be at least 1");
    const std::size_t size = reg.get(t).size;
    std::size_t bytes = 0;
    if (!checked_bytes(count, size, bytes))
      return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": " + std::to_string(count) + " elements of " + type +
                                              " (" + std::to_string(size) + " bytes each) overflow size_t");
    const std::size_t limit = l->lib->max_buffer();
    if (bytes > limit)
      return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": " + std::to_string(count) + " elements of " + type +
                                              " are " + std::to_string(bytes) + " bytes, more than the library's limit of " +
                                              std::to_string(limit) + " (marshal_library_set_max_alloc)");
    const Bits h = wrap(api, marshal::Value(marshal::native_new(reg, t, count)));
    if (!h) return MARSHAL_ERROR_INTERNAL;
    *out = to_handle<marshal_value>(h);
    return MARSHAL_OK;
  });
}

marshal_status marshal_native_data(const marshal_value* v, void** data, size_t* size) {
  static const char* api = "marshal_native_data";
  CValue* c = find<CValue>(v);
  if (!c) return bad_handle(api, "v", v, Kind::value);
  if (!data) return null_arg(api, "data");
  if (!size) return null_arg(api, "size");
  if (!c->v.is<std::shared_ptr<marshal::NativeBox>>()) return wrong_kind(api, c, "native memory");
  const marshal::NativeBox& box = *c->v.as<std::shared_ptr<marshal::NativeBox>>();
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
  if (!l->v.is<marshal::List>()) return wrong_kind(api, l, "a list");
  if (marshal_status st = check_container(api, list, l); st != MARSHAL_OK) return st;
  return guarded(api, [&] {
    marshal::Value copy = i->v;  // first: the item may be the list itself
    drop_kids(l);
    l->v.as<marshal::List>().push_back(std::move(copy));
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
  if (!r->v.is<marshal::Record>()) return wrong_kind(api, r, "a record");
  if (marshal_status st = check_container(api, record, r); st != MARSHAL_OK) return st;
  return guarded(api, [&] {
    marshal::Value copy = i->v;  // first: the item may be the record itself
    drop_kids(r);
    auto& fields = r->v.as<marshal::Record>();
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
    case marshal::Value::Type::null: return MARSHAL_NULL;
    case marshal::Value::Type::boolean: return MARSHAL_BOOL;
    case marshal::Value::Type::int64: return MARSHAL_INT64;
    case marshal::Value::Type::uint64: return MARSHAL_UINT64;
    case marshal::Value::Type::real: return MARSHAL_DOUBLE;
    case marshal::Value::Type::string: return MARSHAL_STRING;
    case marshal::Value::Type::bytes: return MARSHAL_BYTES;
    case marshal::Value::Type::list: return MARSHAL_LIST;
    case marshal::Value::Type::record: return MARSHAL_RECORD;
    case marshal::Value::Type::address: return MARSHAL_ADDRESS;
    case marshal::Value::Type::handle: return MARSHAL_HANDLE;
    case marshal::Value::Type::native: return MARSHAL_NATIVE;
    case marshal::Value::Type::function: return MARSHAL_FUNCTION;
    case marshal::Value::Type::callback: return MARSHAL_CALLBACK;
    case marshal::Value::Type::object: return MARSHAL_OBJECT;
    case marshal::Value::Type::host_object: return MARSHAL_HOST_OBJECT;
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
  return wrong_kind(api, c, "an integer from INT64_MIN to INT64_MAX");
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
  return wrong_kind(api, c, "a non-negative integer");
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
  if (!c->v.is<marshal::Bytes>()) return wrong_kind(api, c, "bytes");
  *data = c->v.as<marshal::Bytes>().data.data();
  *length = c->v.as<marshal::Bytes>().data.size();
  return MARSHAL_OK;
}

// The list or record behind a handle, or nullptr with the message set.
static CValue* container(const char* api, const char* param, const marshal_value* h, bool list) {
  CValue* c = find<CValue>(h);
  if (!c) {
    note_bad_handle(api, param, h, Kind::value);
    return nullptr;
  }
  if (list ? !c->v.is<marshal::List>() : !c->v.is<marshal::Record>()) {
    wrong_kind(api, c, list ? "a list" : "a record");
    return nullptr;
  }
  return c;
}

size_t marshal_list_size(const marshal_value* list) {
  CValue* c = container("marshal_list_size", "list", list, true);
  return c ? c->v.as<marshal::List>().size() : 0;
}

const marshal_value* marshal_list_get(const marshal_value* list, size_t i) {
  static const char* api = "marshal_list_get";
  CValue* c = container(api, "list", list, true);
  if (!c) return nullptr;
  if (i >= c->v.as<marshal::List>().size()) {
    fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": index " + std::to_string(i) + " is out of range (" +
                                     std::to_string(c->v.as<marshal::List>().size()) + " items)");
    return nullptr;
  }
  return to_handle<const marshal_value>(kid(api, c, i));
}

size_t marshal_record_size(const marshal_value* record) {
  CValue* c = container("marshal_record_size", "record", record, false);
  return c ? c->v.as<marshal::Record>().size() : 0;
}

const char* marshal_record_name(const marshal_value* record, size_t i) {
  static const char* api = "marshal_record_name";
  CValue* c = container(api, "record", record, false);
  if (!c) return nullptr;
  if (i >= c->v.as<marshal::Record>().size()) {
    fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": index " + std::to_string(i) + " is out of range (" +
                                     std::to_string(c->v.as<marshal::Record>().size()) + " fields)");
    return nullptr;
  }
  return c->v.as<marshal::Record>()[i].first.c_str();
}

const marshal_value* marshal_record_get(const marshal_value* record, const char* name) {
  static const char* api = "marshal_record_get";
  CValue* c = container(api, "record", record, false);
  if (!c) return nullptr;
  if (!name) {
    null_arg(api, "name");
    return nullptr;
  }
  const auto& r = c->v.as<marshal::Record>();
  for (size_t i = 0; i < r.size(); ++i)
    if (r[i].first == name) return to_handle<const marshal_value>(kid(api, c, i));
  fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": no field '" + name + "'");
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
bool call_c_host(marshal_host_fn fn, void* user, const std::vector<marshal::Value>& args, marshal::Value& result,
                 std::string& error) {
  static const char* api = "host function";
  Bits small[8];
  std::vector<Bits> big(args.size() > std::size(small) ? args.size() : 0);
  Bits* wrapped = big.empty() ? small : big.data();
  std::size_t made = 0;
  for (; made < args.size(); ++made)
    if (!(wrapped[made] = wrap(api, marshal::Value(args[made]), true))) break;
  if (made < args.size()) {
    for (std::size_t i = 0; i < made; ++i) disown(wrapped[i], false);
    error = last_error;
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

marshal_value* marshal_value_function(const char* name, marshal_host_fn fn, void* user, void (*destroy)(void*)) {
  static const char* api = "marshal_value_function";
  if (!fn) {
    if (destroy) destroy(user);
    last_error = std::string(api) + ": fn is NULL";
    return nullptr;
  }
  std::shared_ptr<UserFunction> data;
  try {
    data = std::make_shared<UserFunction>(fn, user, destroy);
  } catch (...) {
    if (destroy) destroy(user);
    last_error = std::string(api) + ": out of memory";
    return nullptr;
  }
  try {
    auto host = std::make_shared<marshal::HostFunction>(marshal::HostFunction{
        name ? name : "c_function",
        [data](const std::vector<marshal::Value>& args, marshal::Value& result, std::string& error) {
          return call_c_host(data->fn, data->user, args, result, error);
        }});
    return wrap_handle(api, marshal::Value(std::move(host)));
  } catch (...) {
    last_error = std::string(api) + ": out of memory";
    return nullptr;
  }
}

marshal_status marshal_library_callback(marshal_library* lib, const char* sig, const marshal_value* fn, marshal_value** out) {
  static const char* api = "marshal_library_callback";
  CLibrary* l = find<CLibrary>(lib);
  if (!l) return bad_handle(api, "lib", lib, Kind::library);
  if (!sig) return null_arg(api, "sig");
  CValue* f = find<CValue>(fn);
  if (!f) return bad_handle(api, "fn", fn, Kind::value);
  if (!out) return null_arg(api, "out");
  if (!f->v.is<std::shared_ptr<marshal::HostFunction>>())
    return wrong_kind(api, f, "a function value (marshal_value_function)");
  return guarded(api, [&] {
    std::string error;
    auto cb = l->lib->callback(sig, f->v.as<std::shared_ptr<marshal::HostFunction>>(), error);
    if (!cb) return fail(MARSHAL_ERROR_BIND, error);
    const Bits h = wrap(api, marshal::Value(cb));
    if (!h) {
      cb->release();
      return MARSHAL_ERROR_INTERNAL;
    }
    *out = to_handle<marshal_value>(h);
    return MARSHAL_OK;
  });
}

marshal_status marshal_callback_release(marshal_value* callback) {
  static const char* api = "marshal_callback_release";
  if (!callback) return MARSHAL_OK;
  CValue* c = find<CValue>(callback);
  if (!c) return bad_handle(api, "callback", callback, Kind::value);
  if (!c->v.is<std::shared_ptr<marshal::Callback>>()) return wrong_kind(api, c, "a callback (marshal_library_callback)");
  auto& cb = *c->v.as<std::shared_ptr<marshal::Callback>>();
  if (!cb.active())
    return fail(MARSHAL_ERROR_MISUSE, std::string(api) + ": callback '" + cb.name() +
                                          "' already released (by marshal_callback_release or with its library)");
  cb.release();
  return MARSHAL_OK;
}

// ---- objects ----

marshal_status marshal_library_create(marshal_library* lib, const char* cls, marshal_value* const* args, size_t nargs,
                                      marshal_value** out) {
  static const char* api = "marshal_library_create";
  CLibrary* l = find<CLibrary>(lib);
  if (!l) return bad_handle(api, "lib", lib, Kind::library);
  if (!cls) return null_arg(api, "cls");
  if (!out) return null_arg(api, "out");
  return guarded(api, [&] {
    ArgView view;
    if (marshal_status st = collect_args(api, args, nargs, view); st != MARSHAL_OK) return st;
    std::vector<marshal::Value> values;
    for (const marshal::Value* a : view.view) values.push_back(*a);
    marshal::Value obj;
    std::string error;
    {
      FrameGuard frame(bits_of(lib), 0, 0, args, nargs);
      if (!l->lib->objects().create(cls, values, obj, error)) return fail(MARSHAL_ERROR_CALL, error);
    }
    const Bits h = wrap(api, std::move(obj));
    if (!h) return MARSHAL_ERROR_INTERNAL;
    *out = to_handle<marshal_value>(h);
    return MARSHAL_OK;
  });
}

// The native object behind a handle, or nullptr with the status in *st.
static const marshal::ObjectRef* object_of(const char* api, const marshal_value* obj, marshal_status& st) {
  CValue* c = find<CValue>(obj);
  if (!c) {
    st = bad_handle(api, "obj", obj, Kind::value);
    return nullptr;
  }
  if (!c->v.is<marshal::ObjectRef>()) {
    st = wrong_kind(api, c, "a native object");
    return nullptr;
  }
  return &c->v.as<marshal::ObjectRef>();
}

marshal_status marshal_object_call(const marshal_value* obj, const char* method, marshal_value* const* args,
                                   size_t nargs, marshal_result** out) {
  static const char* api = "marshal_object_call";
  marshal_status st = MARSHAL_OK;
  const marshal::ObjectRef* ref = object_of(api, obj, st);
  if (!ref) return st;
  if (!method) return null_arg(api, "method");
  if (!out) return null_arg(api, "out");
  return call_new(api, 0, bits_of(obj), args, nargs, out, false,
                  [&](auto view, marshal::CallResult& r, std::string& error) {
                    return marshal::library_of(*ref).objects().call(*ref, method, view, r, error);
                  });
}

marshal_status marshal_object_call_into(const marshal_value* obj, const char* method, marshal_value* const* args,
                                        size_t nargs, marshal_result* result) {
  static const char* api = "marshal_object_call_into";
  marshal_status st = MARSHAL_OK;
  const marshal::ObjectRef* ref = object_of(api, obj, st);
  if (!ref) return st;
  if (!method) return null_arg(api, "method");
  CResult* r = find<CResult>(result);
  if (!r) return bad_handle(api, "result", result, Kind::result);
  return call_into(api, 0, bits_of(obj), args, nargs, r, bits_of(result), false,
                   [&](auto view, marshal::CallResult& c, std::string& error) {
                     return marshal::library_of(*ref).objects().call(*ref, method, view, c, error);
                   });
}

marshal_status marshal_object_query(const marshal_value* obj, const char* iface, marshal_value** out) {
  static const char* api = "marshal_object_query";
  marshal_status st = MARSHAL_OK;
  const marshal::ObjectRef* ref = object_of(api, obj, st);
  if (!ref) return st;
  if (!iface) return null_arg(api, "iface");
  if (!out) return null_arg(api, "out");
  return guarded(api, [&] {
    marshal::Value v;
    std::string error;
    {
      FrameGuard frame(0, 0, bits_of(obj), nullptr, 0);
      if (!marshal::library_of(*ref).objects().query(*ref, iface, v, error)) return fail(MARSHAL_ERROR_CALL, error);
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
  if (x->v.is<marshal::ObjectRef>() && y->v.is<marshal::ObjectRef>()) return x->v == y->v;  // COM identity, proxies included
  if (x->v.is<std::shared_ptr<marshal::HostObject>>() && y->v.is<std::shared_ptr<marshal::HostObject>>())
    return x->v.as<std::shared_ptr<marshal::HostObject>>() == y->v.as<std::shared_ptr<marshal::HostObject>>();
  return 0;
}

const char* marshal_object_interface(const marshal_value* obj) {
  marshal_status st = MARSHAL_OK;
  const marshal::ObjectRef* ref = object_of("marshal_object_interface", obj, st);
  return ref ? ref->iface->name.c_str() : nullptr;
}

marshal_value* marshal_value_host_object(const char* name, const char* const* interfaces, size_t ninterfaces,
                                         const marshal_host_method* methods, size_t nmethods, void* user,
                                         void (*destroy)(void* user)) {
  static const char* api = "marshal_value_host_object";
  if ((nmethods && !methods) || (ninterfaces && !interfaces) || huge(nmethods) || huge(ninterfaces)) {
    if (destroy) destroy(user);
    last_error = std::string(api) + ": methods and interfaces must not be NULL when counted, and their counts at most PTRDIFF_MAX";
    return nullptr;
  }
  std::shared_ptr<UserFunction> data;
  try {
    data = std::make_shared<UserFunction>(nullptr, user, destroy);
  } catch (...) {
    if (destroy) destroy(user);
    last_error = std::string(api) + ": out of memory";
    return nullptr;
  }
  try {
    // One owner of the user data for all methods: destroy runs once, with the last of them.
    std::map<std::string, std::shared_ptr<marshal::HostFunction>> table;
    for (size_t i = 0; i < nmethods; ++i) {
      if (!methods[i].name || !methods[i].fn) {
        last_error = std::string(api) + ": method " + std::to_string(i) + " has no name or no function";
        return nullptr;
      }
      marshal_host_fn fn = methods[i].fn;
      table[methods[i].name] = std::make_shared<marshal::HostFunction>(marshal::HostFunction{
          methods[i].name, [data, fn](const std::vector<marshal::Value>& args, marshal::Value& result, std::string& error) {
            return call_c_host(fn, data->user, args, result, error);
          }});
    }
    std::vector<std::string> names;
    for (size_t i = 0; i < ninterfaces; ++i) {
      if (!interfaces[i]) {
        last_error = std::string(api) + ": interface name " + std::to_string(i) + " is NULL";
        return nullptr;
      }
      names.emplace_back(interfaces[i]);
    }
    auto host = std::make_shared<marshal::HostObject>(name ? name : "c_object", std::move(names), std::move(table));
    return wrap_handle(api, marshal::Value(std::move(host)));
  } catch (...) {
    last_error = std::string(api) + ": out of memory";
    return nullptr;
  }
}

uint32_t marshal_host_object_refs(const marshal_value* obj) {
  static const char* api = "marshal_host_object_refs";
  CValue* c = find<CValue>(obj);
  if (!c) {
    note_bad_handle(api, "obj", obj, Kind::value);
    return 0;
  }
  if (!c->v.is<std::shared_ptr<marshal::HostObject>>()) {
    wrong_kind(api, c, "a host object");
    return 0;
  }
  return c->v.as<std::shared_ptr<marshal::HostObject>>()->native_refs();
}

// ---- apartments ----

marshal_status marshal_apartment_enter(int sta) {
  return guarded("marshal_apartment_enter", [&] {
    std::string error;
    auto a = sta ? marshal::enter_sta(error) : marshal::enter_mta(error);
    return a ? MARSHAL_OK : fail(MARSHAL_ERROR_CALL, error);
  });
}

void marshal_apartment_leave(void) {
  try {
    marshal::leave_apartment();
  } catch (...) {
  }
}

size_t marshal_apartment_pump(uint32_t wait_ms) {
  auto a = marshal::current_apartment();
  if (!a || a->kind() != marshal::Apartment::Kind::sta) return 0;
  try {
    return a->pump(std::chrono::milliseconds(wait_ms));
  } catch (...) {
    return 0;
  }
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
    if (!marshal::marshal_interface(c->v, t, error)) return fail(MARSHAL_ERROR_CALL, error);
    *token = t;
    return MARSHAL_OK;
  });
}

marshal_status marshal_interface_unmarshal(uint64_t token, marshal_value** out) {
  static const char* api = "marshal_interface_unmarshal";
  if (!out) return null_arg(api, "out");
  return guarded(api, [&] {
    std::string error;
    marshal::Value v;
    if (!marshal::unmarshal_interface(token, v, error)) return fail(MARSHAL_ERROR_CALL, error);
    const Bits h = wrap(api, std::move(v));
    if (!h) return MARSHAL_ERROR_INTERNAL;
    *out = to_handle<marshal_value>(h);
    return MARSHAL_OK;
  });
}

int marshal_object_is_proxy(const marshal_value* obj) {
  marshal_status st = MARSHAL_OK;
  const marshal::ObjectRef* ref = object_of("marshal_object_is_proxy", obj, st);
  return ref && ref->proxy ? 1 : 0;
}

marshal_status marshal_value_from_json(const char* json, marshal_value** out) {
  static const char* api = "marshal_value_from_json";
  if (!json) return null_arg(api, "json");
  if (!out) return null_arg(api, "out");
  return guarded(api, [&] {
    // The engine's bounded reader: nesting past max_value_depth, a repeated
    // key or bad syntax is an argument error naming the place, never a deep
    // recursion or an internal error.
    marshal::Value v;
    std::string why;
    if (!marshal::Value::parse_json(json, v, why)) return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": " + why);
    const Bits h = wrap(api, std::move(v));
    if (!h) return MARSHAL_ERROR_INTERNAL;
    *out = to_handle<marshal_value>(h);
    return MARSHAL_OK;
  });
}

char* marshal_value_to_json(const marshal_value* v) {
  static const char* api = "marshal_value_to_json";
  CValue* c = find<CValue>(v);
  if (!c) {
    note_bad_handle(api, "v", v, Kind::value);
    return nullptr;
  }
  try {
    std::string s = c->v.to_json().dump();
    char* out = static_cast<char*>(std::malloc(s.size() + 1));
    if (!out) {
      last_error = std::string(api) + ": out of memory";
      return nullptr;
    }
    std::memcpy(out, s.c_str(), s.size() + 1);
    return out;
  } catch (const std::exception& e) {
    last_error = std::string(api) + ": " + e.what();
    return nullptr;
  } catch (...) {
    last_error = std::string(api) + ": failed";
    return nullptr;
  }
}

void marshal_free(void* p) { std::free(p); }

}  // extern "C"
