// marshal Lua host: what the module (lua_marshal.cpp, lua_objects.cpp) and the
// value converter (lua_values.cpp) share: the per-state host record, the
// userdata kinds, and the converter's interface.
//
// Debian's Lua 5.4 is built as C: lua_error longjmps. Every entry point from
// Lua runs its C++ work in a scope of its own, catches every exception there,
// and raises (if at all) only after that scope ended, so no destructor is
// skipped. Pushing results and building error objects can allocate (a memory
// error longjmps too); both run inside lua_pcall'd thunks that hold no C++
// object with a destructor.
#pragma once

extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
}

#include "call/host_io.hpp"
#include "call/library.hpp"
#include "call/plan.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace marshal::engine::remote { class IsolatedLibrary; }

namespace marshal::lua {
using namespace marshal::engine;

// ---- registry keys: addresses of these objects (lua_rawgetp) -----------------
// Metatables of the userdata kinds, the weak identity table, the slot table of
// call-scoped Lua functions, the null sentinel, the host record.
extern const char key_host, key_null, key_identity, key_slots, key_fn_cache;
// Lua tables made host objects: id -> table, weak (key_host_weak), and pinned
// (key_host_pins) while native code holds a reference (lua_objects.cpp).
extern const char key_host_weak, key_host_pins;
extern const char mt_library, mt_function, mt_handle, mt_box, mt_callback, mt_object, mt_host_object, mt_error;

struct Host;

// A Lua function the engine can call: a call-scoped slot (the function sits in
// the slot table while the call runs) or a registered callback's own reference.
struct LuaFn {
  std::weak_ptr<Host> host;
  int slot = 0;           // index in the slot table (call scope), 0: none
  int ref = LUA_NOREF;    // registry reference (registered callbacks, host-object methods)
  int self_id = 0;        // host-object methods: the table passed as `self` (key_host_weak[self_id])
  std::string name;       // for messages
};

// The host record, one per lua_State (the module's first require makes it).
// Lua runs on `thread` only: callbacks native code makes from any other thread
// are queued here and run when that thread pumps (marshal.pump, or while it
// waits for a call that pumps), the calling native thread waiting meanwhile.
struct Host : std::enable_shared_from_this<Host> {
  lua_State* L = nullptr;  // the main state; nullptr once closed
  std::thread::id thread;
  std::shared_ptr<Context> ctx = std::make_shared<Context>();
  std::vector<std::weak_ptr<Library>> libraries;  // for marshal.pump (owner-delivered callbacks)

  // Call-scoped Lua functions: HostFunctions bound to slots, reused call after
  // call so the engine reuses their closures (callbacks are never freed).
  std::vector<std::shared_ptr<HostFunction>> slot_fns;
  std::vector<int> free_slots;
  static constexpr int max_slots = 4096;

  // The first failure of a Lua callback during the current outermost call: the
  // Lua error value (registry reference), raised as the call error's `cause`.
  int pending_cause = LUA_NOREF;
  int call_depth = 0;

  // Callbacks from other threads, waiting for the Lua thread.
  struct Task {
    std::function<void()> run;
    bool taken = false;  // the Lua thread is running it
    bool done = false;
  };
  std::mutex mail_mutex;
  std::condition_variable mail_cv;
  std::deque<Task*> mail;
  bool closed = false;
  // Native calls in progress on the Lua thread that do not pump: a callback
  // from another thread then fails at once (never a deadlock) with a message
  // naming the `pump` option, kept here for the call to raise.
  // (A blocking call made by a callback inside a pumping call returns to the
  // pump: callbacks then wait for it.)
  // Atomic: read on every call; a waiting callback re-checks them while its
  // task is not taken (so a call entered after it was queued is seen too).
  std::atomic<int> blocking_calls{0};
  std::atomic<std::uint64_t> blocking_seq{0};  // counts blocking calls entered
  std::atomic<int> pumping_calls{0};
  std::atomic<bool> has_foreign_error{false};
  std::string foreign_error;   // under mail_mutex: the first such failure

  // Lua tables made host objects, for the sweep that pins the ones native code
  // holds (so a table native code still uses is never collected, and one it
  // let go of is collected with its last Lua reference).
  struct HostRec {
    std::weak_ptr<HostObject> obj;
    int id = 0;
  };
  std::vector<HostRec> host_objects;
  int next_host_id = 0;
  void sweep_host_objects(lua_State* L);  // on the Lua thread; raises nothing

  // Registry references to drop, queued by destructors on other threads.
  std::mutex unref_mutex;
  std::vector<int> unref;
  std::atomic<bool> has_unref{false};

  ~Host();
  // Runs fn on the Lua thread: at once when called there, else queued and
  // waited for. false with a message when the state is closed.
  bool on_lua_thread(const std::function<void()>& fn, std::string& error);
  // Runs queued callbacks (and owner-delivered ones of every library, and the
  // STA's queue when this thread is one); waits up to ms for the first.
  std::size_t pump(int ms);
  std::size_t drain();
  // Runs job on a thread of its own, pumping until it finished.
  void run_pumping(const std::function<void()>& job);
  void drop_refs();  // the queued unrefs, on the Lua thread
  // Written by the Lua thread only: plain stores (no locked instruction per call).
  void enter_blocking() {
    blocking_seq.store(blocking_seq.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    blocking_calls.store(blocking_calls.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }
  void leave_blocking() {
    blocking_calls.store(blocking_calls.load(std::memory_order_relaxed) - 1, std::memory_order_release);
  }
  std::string take_foreign_error();
  // Around a native call made from coroutine L (callbacks run on L meanwhile):
  // begin_call returns the coroutine to restore; end_call restores it and, at
  // the outermost call, hands over what callbacks left: the Lua error one
  // raised (its registry ref, else LUA_NOREF) and a foreign thread's error.
  lua_State* begin_call(lua_State* on) {
    ++call_depth;
    lua_State* outer = L;
    L = on;
    return outer;
  }
  int end_call(lua_State* outer, std::string& foreign) {
    L = outer;
    if (--call_depth != 0) return LUA_NOREF;
    const int cause = pending_cause;
    pending_cause = LUA_NOREF;
    foreign = take_foreign_error();
    return cause;
  }
  // end_call when it has nothing to hand over (a nested call, or no Lua
  // error and no foreign thread's error pending): true, the call ended.
  // false: nothing changed, end_call takes it (the scalar entry's hot path).
  bool end_call_quiet(lua_State* outer) {
    if (call_depth == 1 &&
        (pending_cause != LUA_NOREF || has_foreign_error.load(std::memory_order_acquire)))
      return false;
    L = outer;
    --call_depth;
    return true;
  }
};

Host& host_of(lua_State* L);

// ---- the converter: the one place where Lua values meet engine Values -------
// (calls go through the host adapters below, which use it for what the
// plan's general converter needs: see bindings/lua/README.md). Conversions
// to Value never raise a Lua error (raw access only, stack checked); pushing
// may raise a memory error and so runs inside a protected thunk.
struct CallScope {
  Host* host = nullptr;
  std::vector<int> slots;  // slots taken by this call's Lua functions
  ~CallScope();            // frees them (the engine released the closures)
};

struct ToValue {
  lua_State* L;
  const TypeRegistry* reg = nullptr;     // null: untyped (variadic values)
  const std::shared_ptr<Library>* lib = nullptr;
  CallScope* scope = nullptr;            // null: Lua functions are refused
  std::string error;                      // why, when false
};
// The Lua value at idx as a host value for type t (no_type: untyped).
bool to_value(ToValue& c, int idx, TypeId t, Value& out, int depth = 0);

// ---- the host adapters (call/host_io.hpp): Lua values straight into plans --
// LuaArgs reads a call's arguments from the Lua stack (first .. first+n-1):
// nil, booleans, numbers, strings and light userdata as scalars, a table for a
// struct of scalar fields by its fields; a Value (to_value) only where the
// plan's general converter asks for one. prepare() converts beforehand every
// argument whose conversion can fail (other tables, userdata, functions), so
// that a failure is reported as before the call, in to_value's words, and
// value(i) never fails afterwards. Only on the Lua thread (not for pumping calls).
class LuaArgs final : public HostArgs {
 public:
  LuaArgs(ToValue& tv, int first, std::size_t n, const TypeId* types, std::size_t ntypes);
  ~LuaArgs() override;
  LuaArgs(const LuaArgs&) = delete;
  LuaArgs& operator=(const LuaArgs&) = delete;
  // false: argument `failed` did not convert (tv.error says why).
  bool prepare(std::size_t& failed);
  std::size_t size() const override { return n_; }
  void scalar(std::size_t i, HostScalar& out) const override;
  const Value& value(std::size_t i) const override;
  bool record(std::size_t i, std::span<const LaneField> fields, HostScalar* out) const override;
  // A lazy conversion that failed after all (cannot happen for what prepare left): its text.
  const std::string& late_error() const { return late_error_; }

 private:
  static constexpr std::size_t small = 8;
  TypeId type(std::size_t i) const { return i < ntypes_ ? types_[i] : no_type; }
  Value& slot(std::size_t i) const;
  bool scan_record(std::size_t i, const RecordInfo& info);

  ToValue& tv_;
  lua_State* L_;
  int first_;
  std::size_t n_;
  const TypeId* types_;
  std::size_t ntypes_;
  std::int8_t kind_[small];  // lua_type of each argument, read by prepare
  // Values made so far (made[i]), in place for the usual counts.
  alignas(Value) mutable std::byte values_small_[small * sizeof(Value)];
  mutable std::vector<Value> values_big_;
  mutable std::uint8_t made_small_[small];
  mutable std::vector<std::uint8_t> made_big_;
  // Tables for structs of scalar fields, read by prepare: argument i's fields
  // (in the struct's order) start at rec_at_[i] in rec_ (0xFF: none).
  std::uint8_t rec_at_[small];
  const RecordInfo* rec_info_[small];
  static constexpr std::size_t rec_room = 16;
  alignas(HostScalar) std::byte rec_[rec_room * sizeof(HostScalar)];  // HostScalars, made by prepare
  HostScalar* rec() { return reinterpret_cast<HostScalar*>(rec_); }
  const HostScalar* rec() const { return reinterpret_cast<const HostScalar*>(rec_); }
  std::size_t rec_used_ = 0;
  mutable std::string late_error_;
};

// LuaResults pushes a call's results onto the Lua stack as they come, in the
// documented order: the return value (when not void), out/inout parameters;
// call_body pushes errno last (kept here). Numbers, booleans, nil and light
// userdata are pushed directly (room reserved before the call); whatever
// allocates (strings, tables, userdata) is pushed by a lua_pcall'd thunk, so
// a memory error never unwinds C++ frames: it is noted (out_of_memory) and
// later results are dropped.
class LuaResults final : public HostResults {
 public:
  LuaResults(lua_State* L, const std::shared_ptr<Library>& lib, bool has_return)
      : L_(L), lib_(lib), has_return_(has_return) {}
  void scalar(int i, const HostScalar& s) override;
  void value(int i, Value&& v) override;
  bool record(int i, std::span<const LaneField> fields, const std::byte* src) override;
  bool array(int i, const LaneOp& element, const void* data, std::size_t count) override;
  void error_number(int e) override {
    errno_ = e;
    has_errno_ = true;
  }
  bool out_of_memory() const { return oom_; }
  int pushed() const { return pushed_; }  // values pushed so far
  bool has_errno() const { return has_errno_; }
  int errno_value() const { return errno_; }

 private:
  bool protect(int (*thunk)(lua_State*), void* data);
  lua_State* L_;
  const std::shared_ptr<Library>& lib_;
  bool has_return_;
  bool oom_ = false;
  int pushed_ = 0;
  bool has_errno_ = false;
  int errno_ = 0;
};

// Pushes v for Lua. in_table: null becomes marshal.null (else nil).
// May raise (memory): call only from a protected thunk.
void push_value(lua_State* L, const Value& v, const std::shared_ptr<Library>& lib, bool in_table = false);

// A Lua function (at idx) as a call-scoped host function: a free slot.
bool slot_function(lua_State* L, int idx, CallScope& scope, Value& out, std::string& error);
// A host function calling the Lua function behind fn on the Lua thread.
std::shared_ptr<HostFunction> make_host_function(const std::shared_ptr<LuaFn>& fn);

// ---- userdata payloads ------------------------------------------------------
// A library: in this process (lib), or isolated in a surrogate process
// (isolated, which keeps the context of its typemap alive; lib is null).
struct LibraryUd {
  std::shared_ptr<Library> lib;
  std::shared_ptr<remote::IsolatedLibrary> isolated;
  std::vector<std::string> pump;
  bool pump_all = false;
  const Typemap& typemap() const;
  const TypeRegistry& types() const;
};
struct HandleUd { std::shared_ptr<HandleBox> box; std::shared_ptr<Library> lib; };
struct BoxUd { std::shared_ptr<NativeBox> box; std::shared_ptr<Library> lib; };
struct CallbackUd { std::shared_ptr<Callback> cb; std::shared_ptr<LuaFn> fn; std::shared_ptr<Library> lib; };
struct ObjectUd { Value ref; };  // an ObjectRef
struct HostObjectUd { std::shared_ptr<HostObject> obj; };

template <class T> T* test_ud(lua_State* L, int idx, const char* mt) {
  void* p = lua_touserdata(L, idx);
  if (!p || !lua_getmetatable(L, idx)) return nullptr;
  lua_rawgetp(L, LUA_REGISTRYINDEX, mt);
  const bool same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same ? static_cast<T*>(p) : nullptr;
}
// A new userdata of T (constructed in place) with metatable mt. Raises on memory.
template <class T> T* new_ud(lua_State* L, const char* mt, int uservalues = 0) {
  void* p = lua_newuserdatauv(L, sizeof(T), uservalues);
  T* t = new (p) T();
  lua_rawgetp(L, LUA_REGISTRYINDEX, mt);
  lua_setmetatable(L, -2);
  return t;
}
// __gc of a userdata payload: destroyed and made empty again (a userdata is
// never freed by C++; methods called after __gc see an empty value).
template <class T> int gc_reset(lua_State* L) {
  auto* t = static_cast<T*>(lua_touserdata(L, 1));
  t->~T();
  new (t) T();
  return 0;
}
// A metatable registered under key (with a "methods" table when given).
void new_metatable(lua_State* L, const char* key, const char* name, const luaL_Reg* fns, const luaL_Reg* methods);
// Handles and native memory (lua_native.cpp): their metatables.
void open_native(lua_State* L);

// Objects (lua_objects.cpp): methods, identity, host objects, apartments.
void open_objects(lua_State* L);          // metatables (once per state)
void add_object_functions(lua_State* L);  // marshal.apartment, ... into the table on top
void push_object(lua_State* L, const Value& ref);
void push_host_object(lua_State* L, const std::shared_ptr<HostObject>& obj);
bool host_object_of_table(lua_State* L, int idx, const Interface& iface, Value& out, std::string& error);

// Errors (lua_marshal.cpp): a structured error object, built under pcall.
struct ErrorInfo {
  std::string function;   // function or method
  std::string parameter;  // parameter name, if any
  int position = 0;       // 1-based Lua argument position, 0: none
  std::string type;       // the parameter's type, if known
  std::string message;    // the reason (without the prefix naming function and parameter)
  std::string expected, got;  // when the engine says "expected X, got Y"
  std::string text;       // the whole message
  std::string id;         // the engine's error id name ("native_crash", "refused"), when it reported one
  int cause = LUA_NOREF;  // a Lua callback's error value (registry reference, taken over)
};
// Fills function/parameter/type/message from an engine message.
void parse_engine_error(const std::string& text, ErrorInfo& e);
// Pushes the error object (protected); returns 0 (raise it) to the caller.
void push_error(lua_State* L, ErrorInfo& e);
// Runs body (no Lua errors inside, C++ exceptions caught); on failure pushes
// the error object and returns -1, which the caller turns into lua_error
// after its own C++ locals are gone.
// Pushes results with a protected thunk: fn(L) pushes, returning the count.
int push_protected(lua_State* L, int (*thunk)(lua_State*), void* data, const std::string& function);

// Runs body, whose C++ objects all live inside it; any exception becomes an
// error. body returns the number of results, or -1 with the error object pushed.
// After it returns nothing with a destructor is alive here: raising is safe.
template <class F> int guarded(lua_State* L, const char* what, F&& body) {
  int n = -1;
  {
    std::string failure;  // empty unless an exception escaped body
    try {
      n = body();
    } catch (const std::exception& e) {
      failure = e.what();
      if (failure.empty()) failure = "an exception";
    } catch (...) {
      failure = "an unknown C++ exception";
    }
    if (!failure.empty()) {
      ErrorInfo oops;
      oops.function = what;
      oops.message = oops.text = std::string(what) + ": " + failure;
      push_error(L, oops);
      n = -1;
    }
  }
  return n;
}

#define MARSHAL_LUA_RETURN(expr)      \
  do {                                 \
    const int n_ = (expr);             \
    if (n_ < 0) return lua_error(L);   \
    return n_;                         \
  } while (0)

// A Lua number (at idx) as the engine's scalar: an integer stays an integer,
// a negative one read as its uint64 bits when the target is unsigned 64-bit
// (Lua has no unsigned integers: uint64 beyond math.maxinteger round-trips).
// unsigned64() says so; it is asked only for a negative integer.
template <class F> HostScalar lua_number_scalar(lua_State* L, int idx, F&& unsigned64) {
  HostScalar s;
  if (lua_isinteger(L, idx)) {
    const lua_Integer i = lua_tointeger(L, idx);
    if (i < 0 && unsigned64()) {
      s.kind = HostScalar::Kind::uint64;
      s.u = static_cast<std::uint64_t>(i);
    } else {
      s.kind = HostScalar::Kind::int64;
      s.i = static_cast<std::int64_t>(i);
    }
  } else {
    s.kind = HostScalar::Kind::real;
    s.d = static_cast<double>(lua_tonumber(L, idx));
  }
  return s;
}

// A light userdata (at idx) as the engine's scalar: marshal.null (or a null
// pointer) is null, any other an address.
inline HostScalar lua_pointer_scalar(lua_State* L, int idx) {
  HostScalar s;
  void* p = lua_touserdata(L, idx);
  if (!p || p == static_cast<const void*>(&key_null)) {
    s.kind = HostScalar::Kind::null;
  } else {
    s.kind = HostScalar::Kind::address;
    s.p = reinterpret_cast<std::uintptr_t>(p);
  }
  return s;
}

// Pushes a scalar that needs no allocation (not a string). in_table: null is marshal.null.
inline void push_plain(lua_State* L, const HostScalar& s, bool in_table) {
  switch (s.kind) {
    case HostScalar::Kind::boolean: lua_pushboolean(L, s.b); return;
    case HostScalar::Kind::int64: lua_pushinteger(L, static_cast<lua_Integer>(s.i)); return;
    case HostScalar::Kind::uint64: lua_pushinteger(L, static_cast<lua_Integer>(s.u)); return;  // two's complement
    case HostScalar::Kind::real: lua_pushnumber(L, s.d); return;
    case HostScalar::Kind::address:
      if (s.p) {
        lua_pushlightuserdata(L, reinterpret_cast<void*>(s.p));
        return;
      }
      break;
    default: break;
  }
  if (in_table) lua_pushlightuserdata(L, const_cast<char*>(&key_null));
  else lua_pushnil(L);
}

}  // namespace marshal::lua
