// marshal Lua host: the module (luaopen_marshal). Libraries loaded from
// typemaps, their functions bound once and cached as Lua closures, native
// memory boxes, handles with identity, callbacks (call-scoped Lua functions and
// registered ones), pumping, and structured errors. Objects: lua_objects.cpp;
// values: lua_values.cpp.
#include "lua_host.hpp"

#include "abi/abi.hpp"
#include "apartments/apartment.hpp"
#include "base/error.hpp"
#include "call/arguments.hpp"
#include "callbacks/callback.hpp"
#include "convert/lane.hpp"
#include "convert/native.hpp"
#include "remote/surrogate.hpp"

#include <chrono>
#include <cctype>
#include <cstring>
#include <dlfcn.h>
#include <memory>

namespace marshal::lua {

const char key_host = 0, key_null = 0, key_identity = 0, key_slots = 0, key_fn_cache = 0;
const char mt_library = 0, mt_function = 0, mt_handle = 0, mt_box = 0, mt_callback = 0, mt_object = 0,
           mt_host_object = 0, mt_error = 0;

namespace {
const char mt_host = 0;

struct HostUd { std::shared_ptr<Host> host; };

// A bound function: the closure's upvalue.
struct FunctionUd {
  std::shared_ptr<Library> lib;
  std::shared_ptr<remote::IsolatedLibrary> isolated;  // or its library in a surrogate (plan is null)
  Host* host = nullptr;  // the state's host record (outlives every function of the state)
  const Plan* plan = nullptr;
  const Function* fn = nullptr;
  const TypeRegistry* reg = nullptr;
  std::string file;  // the typemap's, for messages
  std::string name;
  std::vector<TypeId> types;                // per host argument
  std::vector<std::string> names;           // per host argument
  // The long form: one argument per non-out parameter, computed ones given
  // too (checked against what the engine computes, then dropped: the
  // engine's rule, call/arguments.hpp).
  std::vector<int> full_to_host;            // per non-out parameter: host index, or -1 (computed)
  std::vector<std::uint32_t> full_params;   // per non-out parameter: its parameter index
  bool has_return = false;
  bool variadic = false;
  bool pump = false;
  // The scalar entry (l_scalar_call), decided at bind time: an in-process
  // function whose parameters are all `in` scalars with a fast form (integers,
  // floats, bools, opaque pointers) and whose return is one or void, with no
  // computed parameter, check, errno or free_with, made through a specialized
  // invoker. Each Lua argument is read straight into native bits by the
  // engine's lane rules (lane_to_native); anything those refuse takes the
  // general entry (l_function_call), which converts it or reports it.
  static constexpr std::size_t max_scalar = 14;  // 6 integer and 8 floating-point registers
  bool scalar = false;
  std::uint8_t scalar_n = 0;
  LaneOp lanes[max_scalar];
  bool u64[max_scalar] = {};  // a uint64 parameter: a negative Lua integer is its two's complement
  LaneOp ret_lane;
  Invoker invoker;
  void* symbol = nullptr;
};
}  // namespace

const Typemap& LibraryUd::typemap() const { return lib ? lib->typemap() : isolated->typemap(); }
const TypeRegistry& LibraryUd::types() const { return lib ? lib->context().types() : isolated->context().types(); }

// ---- the host record ------------------------------------------------------------

Host& host_of(lua_State* L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host);
  auto* h = static_cast<HostUd*>(lua_touserdata(L, -1));
  lua_pop(L, 1);
  return *h->host;  // set by luaopen_marshal before any entry point can run
}

// ---- errors -------------------------------------------------------------------------

void parse_engine_error(const std::string& raw, ErrorInfo& e) {
  e.text = raw;
  // The engine's null is Lua's nil (or marshal.null): "got nil" in Lua's words.
  for (std::size_t at = 0; (at = e.text.find(", got null", at)) != std::string::npos; at += 9)
    if (at + 10 == e.text.size() || !std::isalnum(static_cast<unsigned char>(e.text[at + 10]))) e.text.replace(at + 6, 4, "nil");
  e.message = e.text;
  // "FILE: FUNCTION: parameter N 'NAME' (TYPE): REASON"
  const std::string& text = e.text;
  const std::size_t p = text.find(": parameter ");
  if (p != std::string::npos) {
    const std::size_t q1 = text.find('\'', p);
    const std::size_t q2 = q1 == std::string::npos ? q1 : text.find('\'', q1 + 1);
    if (q2 != std::string::npos) {
      e.parameter = text.substr(q1 + 1, q2 - q1 - 1);
      std::size_t rest = q2 + 1;
      if (text.compare(rest, 2, " (") == 0) {
        const std::size_t close = text.find("):", rest);
        if (close != std::string::npos) {
          e.type = text.substr(rest + 2, close - rest - 2);
          rest = close + 1;
        }
      }
      if (text.compare(rest, 2, ": ") == 0) e.message = text.substr(rest + 2);
    }
  }
  // "... expected X, got Y" (the engine's wording for a value of the wrong kind).
  const std::size_t x = e.message.find("expected ");
  const std::size_t g = x == std::string::npos ? x : e.message.find(", got ", x);
  if (g != std::string::npos) {
    e.expected = e.message.substr(x + 9, g - x - 9);
    e.got = e.message.substr(g + 6);
  }
}

namespace {
int error_thunk(lua_State* L) {
  auto* e = static_cast<ErrorInfo*>(lua_touserdata(L, 1));
  lua_createtable(L, 0, 8);
  auto set = [&](const char* k, const std::string& v) {
    if (v.empty()) return;
    lua_pushlstring(L, v.data(), v.size());
    lua_setfield(L, -2, k);
  };
  set("function", e->function);
  set("parameter", e->parameter);
  set("type", e->type);
  set("message", e->message);
  set("expected", e->expected);
  set("got", e->got);
  set("text", e->text);
  set("id", e->id);
  if (e->position > 0) {
    lua_pushinteger(L, e->position);
    lua_setfield(L, -2, "position");
  }
  if (e->cause != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->cause);
    lua_setfield(L, -2, "cause");
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mt_error);
  lua_setmetatable(L, -2);
  return 1;
}

int error_tostring(lua_State* L) {
  lua_getfield(L, 1, "text");
  if (!lua_isstring(L, -1)) lua_pushliteral(L, "marshal error");
  return 1;
}
}  // namespace

void push_error(lua_State* L, ErrorInfo& e) {
  if (e.text.empty()) e.text = e.message;
  // The engine's record of this failure (its message ends the text): its id.
  if (e.id.empty()) {
    const Error& r = last_error();
    if (r && !r.message.empty() && e.text.size() >= r.message.size() &&
        e.text.compare(e.text.size() - r.message.size(), r.message.size(), r.message) == 0)
      e.id = r.id_name();
  }
  lua_pushcfunction(L, error_thunk);
  lua_pushlightuserdata(L, &e);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    lua_pop(L, 1);
    lua_pushliteral(L, "marshal: out of memory while building an error");
  }
  if (e.cause != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, e.cause);
    e.cause = LUA_NOREF;
  }
}

int push_protected(lua_State* L, int (*thunk)(lua_State*), void* data, const std::string& function) {
  const int base = lua_gettop(L);
  lua_pushcfunction(L, thunk);
  lua_pushlightuserdata(L, data);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) {
    lua_settop(L, base);
    ErrorInfo e;
    e.function = function;
    e.message = e.text = function + ": out of memory while converting the results";
    push_error(L, e);
    return -1;
  }
  return lua_gettop(L) - base;
}

// ---- calls --------------------------------------------------------------------------

namespace {
struct Results {
  const CallResult* r;
  const std::shared_ptr<Library>* lib;
  bool has_return;
  bool named;  // one table {return=, NAME=, errno=}
};

int results_thunk(lua_State* L) {
  auto* d = static_cast<Results*>(lua_touserdata(L, 1));
  lua_settop(L, 0);
  const CallResult& r = *d->r;
  if (d->named) {
    lua_createtable(L, 0, static_cast<int>(r.out.size()) + 2);
    if (d->has_return) {
      push_value(L, r.ret, *d->lib, true);
      lua_setfield(L, -2, "return");
    }
    for (const auto& [name, v] : r.out) {
      lua_pushlstring(L, name.data(), name.size());
      push_value(L, v, *d->lib, true);
      lua_rawset(L, -3);
    }
    if (r.error_number) {
      lua_pushinteger(L, *r.error_number);
      lua_setfield(L, -2, "errno");
    }
    return 1;
  }
  luaL_checkstack(L, static_cast<int>(r.out.size()) + 3, "marshal: too many results");
  int n = 0;
  if (d->has_return) {
    push_value(L, r.ret, *d->lib);
    ++n;
  }
  for (const auto& item : r.out) {
    push_value(L, item.second, *d->lib);
    ++n;
  }
  if (r.error_number) {
    lua_pushinteger(L, *r.error_number);
    ++n;
  }
  return n;
}

// Argument k (0-based) could not be converted: the error's fields and text.
// `name`: its parameter's (nullptr: a variadic argument).
void argument_error(ErrorInfo& e, const FunctionUd& f, std::size_t k, const std::string* name, TypeId type,
                    const std::string& why) {
  e.position = static_cast<int>(k) + 1;
  e.parameter = name ? *name : "";
  e.type = name ? f.reg->spell(type) : "";
  e.message = why;
  e.text = f.file + ": " + f.name + ": " +
           (name ? "parameter '" + e.parameter + "' (" + e.type + ")" : "variadic argument " + std::to_string(k + 1)) +
           ": " + why;
}

// A call through the host adapters (LuaArgs, LuaResults): the usual form of
// an in-process call on the Lua thread. `given` was checked.
int call_direct(lua_State* L, FunctionUd& f, int first, int given, bool named) {
  Host& host = *f.host;
  std::unique_ptr<ErrorInfo> made;  // built on failure only
  auto E = [&]() -> ErrorInfo& {
    if (!made) {
      made = std::make_unique<ErrorInfo>();
      made->function = f.name;
    }
    return *made;
  };
  auto position_of = [&](const std::string& parameter) {
    for (std::size_t k = 0; k < f.names.size(); ++k)
      if (f.names[k] == parameter) return static_cast<int>(k) + 1;
    return 0;
  };
  CallScope scope{&host};
  ToValue tv{L, f.reg, &f.lib, &scope};
  LuaArgs args(tv, first, static_cast<std::size_t>(given), f.types.data(), f.types.size());
  std::size_t bad = 0;
  if (!args.prepare(bad)) {
    const bool typed = bad < f.types.size();
    argument_error(E(), f, bad, typed ? &f.names[bad] : nullptr, typed ? f.types[bad] : no_type, tv.error);
    push_error(L, E());
    return -1;
  }
  // Room for every result and a protected push's function and argument (a C
  // function starts with LUA_MINSTACK free slots).
  const int room = static_cast<int>(f.fn->params.size()) + 8;
  if (room > LUA_MINSTACK && !lua_checkstack(L, room)) {
    E().message = "the Lua stack is full";
    E().text = f.file + ": " + f.name + ": " + E().message;
    push_error(L, E());
    return -1;
  }
  const int base = first + given - 1;  // the top: the arguments are the last values
  std::unique_ptr<CallResult> result;  // call_named only
  std::string error;
  bool ok = false, oom = false, has_errno = false;
  int errno_value = 0, pushed = 0;
  lua_State* outer = host.begin_call(L);  // callbacks run on the calling coroutine
  host.enter_blocking();
  if (named) {
    result = std::make_unique<CallResult>();
    ValueResults out(*result, *f.fn);
    ok = f.plan->call(args, out, error);
  } else {
    LuaResults out(L, f.lib, f.has_return);
    ok = f.plan->call(args, out, error);
    oom = out.out_of_memory();
    pushed = out.pushed();
    has_errno = out.has_errno();
    errno_value = out.errno_value();
  }
  host.leave_blocking();
  std::string foreign;
  const int cause = host.end_call_quiet(outer) ? LUA_NOREF : host.end_call(outer, foreign);
  if (ok && !args.late_error().empty()) {
    ok = false;
    error = f.file + ": " + f.name + ": " + args.late_error();
  }
  if (!ok || cause != LUA_NOREF || !foreign.empty()) {
    lua_settop(L, base);
    parse_engine_error(!foreign.empty() ? f.name + ": " + foreign : ok ? f.name + ": a Lua callback failed" : error, E());
    E().cause = cause;
    if (int at = position_of(E().parameter)) E().position = at;
    push_error(L, E());
    return -1;
  }
  if (oom) {
    lua_settop(L, base);
    E().message = E().text = f.name + ": out of memory while converting the results";
    push_error(L, E());
    return -1;
  }
  if (named) {
    Results data{result.get(), &f.lib, f.has_return, true};
    return push_protected(L, results_thunk, &data, f.name);
  }
  if (has_errno) {
    lua_pushinteger(L, errno_value);  // errno last (room reserved)
    ++pushed;
  }
  return pushed;
}

int call_body(lua_State* L, FunctionUd& f, int first, bool named) {
  Host& host = *f.host;
  if (host.has_unref.load(std::memory_order_acquire)) host.drop_refs();
  if (!host.host_objects.empty()) host.sweep_host_objects(L);
  const int given = lua_gettop(L) - first + 1;
  // Built on failure only: the hot path copies no name and clears no storage
  // (an optional<ErrorInfo> is ~250 bytes the compiler zeroes on every call).
  std::unique_ptr<ErrorInfo> made;
  auto E = [&]() -> ErrorInfo& {
    if (!made) {
      made = std::make_unique<ErrorInfo>();
      made->function = f.name;
    }
    return *made;
  };
  const Function& fn = *f.fn;
  // The long form (computed parameters given too) is taken when the count says so.
  const bool full = !f.variadic && given != static_cast<int>(f.types.size()) &&
                    given == static_cast<int>(f.full_to_host.size());
  if (!f.variadic && !full && given != static_cast<int>(f.types.size())) {
    std::string names;
    for (const auto& n : f.names) names += (names.empty() ? "" : ", ") + n;
    E().message = "expects " + std::to_string(f.types.size()) + " argument" + (f.types.size() == 1 ? "" : "s") +
                  " (" + names + "), got " + std::to_string(given);
    E().text = f.file + ": " + f.name + ": " + E().message;
    push_error(L, E());
    return -1;
  }
  // An in-process call on the Lua thread: through the host adapters. The
  // long form, isolated and pumping calls (run on another thread) take Values.
  if (!full && !f.isolated && !f.pump && f.plan) return call_direct(L, f, first, given, named);
  CallScope scope{&host};
  ToValue tv{L, f.reg, &f.lib, &scope};
  // Arguments: on the stack for the usual counts.
  const std::size_t nargs = f.variadic ? static_cast<std::size_t>(std::max(given, 0))
                                       : full ? f.full_to_host.size() : f.types.size();
  struct Args {  // nargs Values in place (constructed and destroyed exactly that many)
    alignas(Value) std::byte small[6 * sizeof(Value)];
    std::vector<Value> big;
    Value* p = nullptr;
    std::size_t n = 0;
    explicit Args(std::size_t count) : n(count) {
      if (count > 6) {
        big.resize(count);
        p = big.data();
      } else {
        p = reinterpret_cast<Value*>(small);
        for (std::size_t i = 0; i < count; ++i) new (p + i) Value();
      }
    }
    ~Args() {
      if (big.empty())
        for (std::size_t i = 0; i < n; ++i) p[i].~Value();
    }
  } storage(nargs);
  Value* args = storage.p;
  // The Lua argument position of a parameter named in an error.
  auto position_of = [&](const std::string& parameter) {
    if (full) {
      for (std::size_t k = 0; k < f.full_params.size(); ++k)
        if (fn.params[f.full_params[k]].name == parameter) return static_cast<int>(k) + 1;
    } else {
      for (std::size_t k = 0; k < f.names.size(); ++k)
        if (f.names[k] == parameter) return static_cast<int>(k) + 1;
    }
    return 0;
  };
  for (int k = 0; k < given; ++k) {
    const int idx = first + k;
    // Each argument converts to its parameter's type, computed ones too (long form).
    TypeId type = no_type;
    const std::string* pname = nullptr;
    if (full) {
      const Param& p = fn.params[f.full_params[static_cast<std::size_t>(k)]];
      type = p.type;
      pname = &p.name;
    } else if (k < static_cast<int>(f.types.size())) {
      type = f.types[static_cast<std::size_t>(k)];
      pname = &f.names[static_cast<std::size_t>(k)];
    }
    if (!to_value(tv, idx, type, args[k])) {
      argument_error(E(), f, static_cast<std::size_t>(k), pname, type, tv.error);
      push_error(L, E());
      return -1;
    }
  }
  // The long form and isolated calls pass the arguments by address.
  std::vector<const Value*> pointers, host_args;
  std::span<const Value* const> view;
  if (full || f.isolated) {
    pointers.resize(nargs);
    for (std::size_t i = 0; i < nargs; ++i) pointers[i] = &args[i];
    view = std::span<const Value* const>(pointers.data(), nargs);
  }
  if (full && !f.isolated) {  // (an isolated library checks them itself)
    std::string why;
    if (!host_arguments(*f.reg, f.file, fn, view, host_args, why)) {
      parse_engine_error(why, E());
      E().position = position_of(E().parameter);
      push_error(L, E());
      return -1;
    }
  }
  auto invoke = [&](CallResult& result, std::string& error) {
    if (f.isolated) return f.isolated->call_addressed(f.name, view, result, error);
    if (full) return f.plan->call(view, result, error);
    return f.plan->call(std::span<const Value>(args, nargs), result, error);
  };
  CallResult result;
  std::string error;
  bool ok = false;
  lua_State* outer = host.begin_call(L);  // callbacks run on the calling coroutine
  if (f.pump) {
    host.run_pumping([&] { ok = invoke(result, error); });
  } else {
    host.enter_blocking();
    ok = invoke(result, error);
    host.leave_blocking();
  }
  std::string foreign;
  const int cause = host.end_call(outer, foreign);
  if (!ok || cause != LUA_NOREF || !foreign.empty()) {
    parse_engine_error(!foreign.empty() ? f.name + ": " + foreign : ok ? f.name + ": a Lua callback failed" : error, E());
    E().cause = cause;
    if (int at = position_of(E().parameter)) E().position = at;
    push_error(L, E());
    return -1;
  }
  if (!named && result.out.empty() && !result.error_number) {
    // A scalar result: pushed directly (no allocation, so nothing can raise;
    // a C function has LUA_MINSTACK free slots).
    if (!f.has_return) return 0;
    switch (result.ret.type()) {
      case Value::Type::null: lua_pushnil(L); return 1;
      case Value::Type::boolean: lua_pushboolean(L, result.ret.as<bool>()); return 1;
      case Value::Type::int64: lua_pushinteger(L, static_cast<lua_Integer>(result.ret.as<std::int64_t>())); return 1;
      case Value::Type::uint64: lua_pushinteger(L, static_cast<lua_Integer>(result.ret.as<std::uint64_t>())); return 1;
      case Value::Type::real: lua_pushnumber(L, result.ret.as<double>()); return 1;
      default: break;
    }
  }
  Results data{&result, &f.lib, f.has_return, named};
  return push_protected(L, results_thunk, &data, f.name);
}

int l_function_call(lua_State* L) {
  auto* f = static_cast<FunctionUd*>(lua_touserdata(L, lua_upvalueindex(1)));
  MARSHAL_LUA_RETURN(guarded(L, f->name.c_str(), [&] { return call_body(L, *f, 1, false); }));
}

// The scalar entry's rare ends, out of its hot path: a failure from an
// earlier call still pending (not this call's: dropped, as Plan::call drops it).
[[gnu::noinline, gnu::cold]] void drop_stale_callback_error() {
  try {
    std::string stale;
    callback_take_error(stale);
  } catch (...) {  // (out of memory): the engine's next check takes it
  }
}

// After the native call: a host callback failed inside it (the engine's
// pending error, in Plan::call's words) or end_call has something to hand
// over (a Lua callback's error, a foreign thread's). 0: nothing after all
// (the call succeeded), -1: the error object is pushed.
[[gnu::noinline, gnu::cold]] int scalar_call_ended(lua_State* L, FunctionUd& f, lua_State* outer, bool callback_failed) {
  Host& host = *f.host;
  std::string foreign;
  int cause = LUA_NOREF;
  try {
    cause = host.end_call(outer, foreign);
  } catch (...) {  // (out of memory copying the foreign error): its words are lost, not the call's end
    foreign = "a callback from another thread failed";
  }
  return guarded(L, f.name.c_str(), [&]() -> int {
    std::string error;
    bool ok = true;
    std::string text;
    if (callback_failed && callback_take_error(text)) {
      Error e = error_for(text);
      e.message = f.file + ": " + f.fn->name + ": " + text;
      e.file = f.file;
      e.function = f.fn->name;
      set_error(error, std::move(e));
      ok = false;
    }
    if (ok && cause == LUA_NOREF && foreign.empty()) return 0;
    ErrorInfo E;
    E.function = f.name;
    parse_engine_error(!foreign.empty() ? f.name + ": " + foreign : ok ? f.name + ": a Lua callback failed" : error, E);
    E.cause = cause;
    for (std::size_t k = 0; k < f.names.size(); ++k)
      if (f.names[k] == E.parameter) E.position = static_cast<int>(k) + 1;
    push_error(L, E);
    return -1;
  });
}

// The scalar entry (FunctionUd::scalar): the Lua arguments read straight
// into native bits, one specialized call, the result pushed. Every argument
// the lane rules refuse (a wrong kind, out of range, a non-integral number
// for an integer), a wrong count, guard mode or lanes turned off take the
// general entry before anything ran, which converts or reports it in its
// own words. Nothing here has a destructor: raising after it is safe.
int l_scalar_call(lua_State* L) {
  auto* f = static_cast<FunctionUd*>(lua_touserdata(L, lua_upvalueindex(1)));
  const int n = f->scalar_n;
  if (!f->scalar || lua_gettop(L) != n || !scalar_lanes_enabled.load(std::memory_order_relaxed) || f->lib->guarded())
    return l_function_call(L);
  std::uint64_t slots[FunctionUd::max_scalar];
  void* avalues[FunctionUd::max_scalar];
  for (int k = 0; k < n; ++k) {
    const int idx = k + 1;
    HostScalar s;
    switch (lua_type(L, idx)) {
      case LUA_TNUMBER:
        s = lua_number_scalar(L, idx, [&] { return f->u64[k]; });
        break;
      case LUA_TBOOLEAN:
        s.kind = HostScalar::Kind::boolean;
        s.b = lua_toboolean(L, idx) != 0;
        break;
      case LUA_TLIGHTUSERDATA:
        s = lua_pointer_scalar(L, idx);
        break;
      default: return l_function_call(L);  // nil, strings, tables, userdata, functions: the general entry
    }
    if (!lane_to_native(f->lanes[k], s, slots[k])) return l_function_call(L);
    avalues[k] = &slots[k];
  }
  Host& host = *f->host;
  if (host.has_unref.load(std::memory_order_acquire)) host.drop_refs();
  if (!host.host_objects.empty()) host.sweep_host_objects(L);
  if (callback_error_pending()) drop_stale_callback_error();
  alignas(16) std::byte rvalue[16] = {};
  lua_State* outer = host.begin_call(L);  // callbacks run on the calling coroutine
  host.enter_blocking();
  invoke(f->invoker, f->symbol, avalues, rvalue);
  host.leave_blocking();
  const bool callback_failed = callback_error_pending();
  if (callback_failed || !host.end_call_quiet(outer)) [[unlikely]] {
    if (scalar_call_ended(L, *f, outer, callback_failed) < 0) return lua_error(L);
  }
  if (!f->has_return) return 0;
  std::uint64_t wide;
  std::memcpy(&wide, rvalue, 8);
  push_plain(L, lane_scalar(f->ret_lane, wide), false);
  return 1;
}

// Whether f takes the scalar entry (see FunctionUd::scalar); fills its lanes.
[[gnu::cold]] void choose_scalar_entry(FunctionUd& f, const Plan& plan) {
  const Function& fn = *f.fn;
  const TypeRegistry& reg = *f.reg;
  if (f.isolated || f.pump || f.variadic || !plan.laned() || !plan.cif() || !plan.symbol()) return;
  if (fn.callconv != CallConv::default_ || fn.capture_errno || fn.check.when != Check::When::never ||
      !fn.computed.empty() || fn.params.size() > FunctionUd::max_scalar ||
      (fn.free_with.how != FreeWith::How::unset && fn.free_with.how != FreeWith::How::none))
    return;
  std::vector<TypeId> by_value;
  for (std::size_t i = 0; i < fn.params.size(); ++i) {
    const Param& p = fn.params[i];
    if (p.dir != Dir::in || !p.host_supplied()) return;
    LaneOp l;
    if (!lane_of(reg, p.type, l)) return;
    switch (l.op) {
      case LaneOp::Op::sint: case LaneOp::Op::uint: case LaneOp::Op::f32: case LaneOp::Op::f64:
      case LaneOp::Op::boolean: case LaneOp::Op::pointer:
        break;
      default: return;
    }
    f.lanes[i] = l;
    const TypeDesc& d = reg.get(p.type);
    f.u64[i] = d.kind == Kind::integer && d.size == 8 && !d.has(flag_signed);
    by_value.push_back(p.type);
  }
  LaneOp r;
  if (!lane_of(reg, fn.returns, r)) return;
  switch (r.op) {
    case LaneOp::Op::sint: case LaneOp::Op::uint: case LaneOp::Op::f32: case LaneOp::Op::f64:
    case LaneOp::Op::boolean: case LaneOp::Op::pointer: case LaneOp::Op::void_:
      break;
    default: return;
  }
  if (r.op == LaneOp::Op::void_ && f.has_return) return;
  Invoker inv;
  if (!choose_invoker(reg, by_value, fn.returns, inv) || !inv.usable()) return;
  f.ret_lane = r;
  f.invoker = std::move(inv);
  f.symbol = plan.symbol();
  f.scalar_n = static_cast<std::uint8_t>(fn.params.size());
  f.scalar = true;
}

// A function's closure, bound once per library and name (cached in the
// library's uservalue table).
int push_function(lua_State* L, int lib_idx, LibraryUd& lib, const std::string& name) {
  lib_idx = lua_absindex(L, lib_idx);
  return guarded(L, name.c_str(), [&]() -> int {
    ErrorInfo err;
    err.function = name;
    std::string error;
    const Plan* plan = lib.lib ? lib.lib->bind(name, error) : nullptr;  // isolated: bound in the surrogate
    if (lib.lib && !plan) {
      parse_engine_error(error, err);
      push_error(L, err);
      return -1;
    }
    const Function& fn = plan ? plan->function() : lib.typemap().functions.at(name);
    FunctionUd* f = new_ud<FunctionUd>(L, &mt_function);
    f->lib = lib.lib;
    f->isolated = lib.isolated;
    f->host = &host_of(L);
    f->plan = plan;
    f->fn = &fn;
    f->reg = &lib.types();
    f->file = lib.typemap().file;
    f->name = name;
    f->variadic = fn.variadic_from >= 0;
    f->has_return = f->reg->get(fn.returns).kind != Kind::void_;
    for (std::uint32_t i = 0; i < fn.params.size(); ++i) {
      const Param& p = fn.params[i];
      if (f->variadic && static_cast<int>(i) >= fn.variadic_from) break;
      if (p.dir == Dir::out) continue;
      f->full_params.push_back(i);
      f->full_to_host.push_back(p.host_supplied() ? static_cast<int>(f->types.size()) : -1);
      if (p.host_supplied()) {
        f->types.push_back(p.type);
        f->names.push_back(p.name);
      }
    }
    f->pump = lib.pump_all;
    for (const auto& n : lib.pump) f->pump = f->pump || n == name;
    if (plan) choose_scalar_entry(*f, *plan);
    lua_pushcclosure(L, f->scalar ? l_scalar_call : l_function_call, 1);
    // cache: uservalue table of the library
    lua_getiuservalue(L, lib_idx, 1);
    lua_pushlstring(L, name.data(), name.size());
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    return 1;
  });
}

LibraryUd* check_library(lua_State* L, int idx) {
  auto* lib = test_ud<LibraryUd>(L, idx, &mt_library);
  if (!lib || (!lib->lib && !lib->isolated)) luaL_argerror(L, idx, "expected a library (marshal.load)");
  return lib;
}

// An isolated library (in a surrogate process) refusing what cannot cross yet.
int not_across(lua_State* L, const LibraryUd& lib, const char* api, const char* what) {
  {  // destroyed before lua_error unwinds
    ErrorInfo err;
    err.function = api;
    err.message = lib.typemap().file + " is isolated (its library runs in a surrogate process): " + what +
                  " cannot cross the process boundary yet";
    err.text = err.message;
    push_error(L, err);
  }
  return lua_error(L);
}

// ---- libraries ---------------------------------------------------------------------

int l_load(lua_State* L) {
  const char* path = luaL_checkstring(L, 1);
  const bool has_opts = lua_istable(L, 2);
  if (!lua_isnoneornil(L, 2) && !has_opts) luaL_argerror(L, 2, "expected an options table");
  // Options, read before any C++ object exists (luaL_* may raise).
  bool guard = false, pump_all = false;
  lua_Integer max_buffer = 0, deadline = 0;
  const char* isolate = nullptr;  // a string of the options table (alive on the stack)
  const char* connect = nullptr;  // the same
  const char* tls[4] = {};        // cert, key, ca, name: strings of the options' tls table
  std::vector<std::string>* pump = nullptr;
  LibraryUd* ud = new_ud<LibraryUd>(L, &mt_library, 1);  // owns what the options give
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  const int ud_idx = lua_gettop(L);
  pump = &ud->pump;
  if (has_opts) {
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      const char* k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
      int is_int = 0;  // a wrong type is named (not "bad argument #-1")
      const lua_Integer n = lua_tointegerx(L, -1, &is_int);
      if ((!std::strcmp(k, "max_buffer") || !std::strcmp(k, "deadline")) && !is_int)
        return luaL_error(L, "marshal.load: option '%s' is an integer, got %s", k, luaL_typename(L, -1));
      if ((!std::strcmp(k, "isolate") || !std::strcmp(k, "connect")) && lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "marshal.load: option '%s' is a string, got %s", k, luaL_typename(L, -1));
      if (!std::strcmp(k, "guard")) guard = lua_toboolean(L, -1);
      else if (!std::strcmp(k, "max_buffer")) max_buffer = n;
      else if (!std::strcmp(k, "isolate")) isolate = lua_tostring(L, -1);
      else if (!std::strcmp(k, "connect")) connect = lua_tostring(L, -1);
      else if (!std::strcmp(k, "tls")) {
        if (!lua_istable(L, -1)) return luaL_error(L, "marshal.load: option 'tls' is a table {cert, key, ca, name}, got %s", luaL_typename(L, -1));
        static const char* const parts[] = {"cert", "key", "ca", "name"};
        for (int i = 0; i < 4; ++i) {
          const int t = lua_getfield(L, -1, parts[i]);
          if (t != LUA_TNIL && t != LUA_TSTRING)
            return luaL_error(L, "marshal.load: option tls.%s is a file name (a string), got %s", parts[i], luaL_typename(L, -1));
          tls[i] = t == LUA_TSTRING ? lua_tostring(L, -1) : nullptr;  // alive: the tls table holds it
          lua_pop(L, 1);
        }
        lua_pushnil(L);  // no other keys
        while (lua_next(L, -2)) {
          const char* tk = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
          if (std::strcmp(tk, "cert") && std::strcmp(tk, "key") && std::strcmp(tk, "ca") && std::strcmp(tk, "name"))
            return luaL_error(L, "marshal.load: unknown key '%s' in option 'tls' (keys: cert, key, ca, name)", tk);
          lua_pop(L, 1);
        }
      }
      else if (!std::strcmp(k, "deadline")) {
        deadline = n;
        if (deadline < 1 || deadline > 86400000)
          return luaL_error(L, "marshal.load: option 'deadline' is milliseconds from 1 to 86400000");
      }
      else if (!std::strcmp(k, "pump")) {
        if (lua_isboolean(L, -1)) pump_all = lua_toboolean(L, -1);
        else if (lua_istable(L, -1)) {
          for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; ++i) {
            bool no_memory = false;  // raised after the try: nothing is unwound by the longjmp
            try {
              pump->emplace_back(lua_tostring(L, -1));
            } catch (...) {
              no_memory = true;
            }
            if (no_memory) return luaL_error(L, "marshal.load: option 'pump': out of memory");
            lua_pop(L, 1);
          }
          lua_pop(L, 1);
        } else {
          return luaL_error(L, "marshal.load: option 'pump' is true or a list of function names");
        }
      } else {
        return luaL_error(L, "marshal.load: unknown option '%s' (options: guard, max_buffer, isolate, deadline, pump, connect, tls)", k);
      }
      lua_pop(L, 1);
    }
  }
  ud->pump_all = pump_all;
  MARSHAL_LUA_RETURN(guarded(L, "marshal.load", [&]() -> int {
    ErrorInfo err;
    err.function = "marshal.load";
    if (isolate && std::strcmp(isolate, "none") != 0 && std::strcmp(isolate, "process") != 0) {
      err.message = "isolate = \"" + std::string(isolate) + "\": expected \"process\" (a surrogate process) or \"none\"";
      err.text = std::string(path) + ": " + err.message;
      push_error(L, err);
      return -1;
    }
    Host& host = host_of(L);
    LoadResult r = host.ctx->load_file(path);
    if (!r.ok()) {
      std::string all;
      for (const auto& d : r.errors) all += (all.empty() ? "" : "\n") + d.text();
      err.message = err.text = all;
      push_error(L, err);
      return -1;
    }
    std::string error;
    if (!connect && (tls[0] || tls[1] || tls[2] || tls[3])) {
      err.message = "option 'tls' is for a connection to marshal serve (option 'connect')";
      err.text = std::string(path) + ": " + err.message;
      push_error(L, err);
      return -1;
    }
    if ((isolate && !std::strcmp(isolate, "process")) || connect || remote::wants_isolation(*r.typemap)) {
      // The library never loads here: a context of its own holds the typemap
      // the surrogate loads too, alive as long as the isolated library.
      struct Isolation {
        Context ctx;
        std::unique_ptr<remote::IsolatedLibrary> lib;
      };
      auto iso = std::make_shared<Isolation>();
      remote::IsolateOptions o;
      o.deadline = std::chrono::milliseconds(deadline);
      if (connect) o.connect = connect;
      auto text = [](const char* s) { return s ? std::string(s) : std::string(); };
      o.tls = {text(tls[0]), text(tls[1]), text(tls[2]), text(tls[3])};
      iso->lib = remote::IsolatedLibrary::open_file(iso->ctx, path, o, error);
      if (!iso->lib) {
        err.message = err.text = error;
        push_error(L, err);
        return -1;
      }
      ud->isolated = std::shared_ptr<remote::IsolatedLibrary>(iso, iso->lib.get());
      lua_pushvalue(L, ud_idx);
      return 1;
    }
    if (deadline > 0) {
      err.message = "option 'deadline' needs isolate = \"process\" (an in-process call cannot be stopped)";
      err.text = std::string(path) + ": " + err.message;
      push_error(L, err);
      return -1;
    }
    auto lib = Library::open(*host.ctx, *r.typemap, error);
    if (!lib) {
      err.message = err.text = error;
      push_error(L, err);
      return -1;
    }
    lib->keep_alive(host.ctx);
    if (guard) lib->set_guard(true);
    if (max_buffer > 0) lib->set_max_buffer(static_cast<std::size_t>(max_buffer));
    host.libraries.push_back(lib);
    ud->lib = std::move(lib);
    lua_pushvalue(L, ud_idx);
    return 1;
  }));
}

int l_library_index(lua_State* L) {
  LibraryUd* lib = check_library(L, 1);
  // Methods first (lib:new, lib:callback, ...), then the cache, then bind.
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_pushvalue(L, 2);
  if (lua_rawget(L, -2) != LUA_TNIL) return 1;
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, -2) != LUA_TNIL) return 1;
  lua_settop(L, 2);
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  const char* name = lua_tostring(L, 2);
  const Typemap& tm = lib->typemap();
  const bool is_function = tm.functions.find(name) != tm.functions.end();  // no std::string outlives this line
  if (is_function) MARSHAL_LUA_RETURN(push_function(L, 1, *lib, name));
  const auto c = tm.constants.find(name);
  if (c != tm.constants.end()) {
    MARSHAL_LUA_RETURN(guarded(L, "constant", [&]() -> int {
      Value v = Value::from_json(c->second);
      push_value(L, v, lib->lib);  // a constant: small, allocation failure is a plain Lua error (lib may be null)
      return 1;
    }));
  }
  return luaL_error(L, "%s: no function or constant '%s' in this typemap", tm.file.c_str(), name);
}

// lib:call_named("fn", ...): the results as one table {return = R, NAME = V, errno = E}.
int l_library_call_named(lua_State* L) {
  check_library(L, 1);
  luaL_checkstring(L, 2);
  lua_pushvalue(L, 2);
  lua_gettable(L, 1);  // the cached closure (bound on first use)
  FunctionUd* f = nullptr;
  const lua_CFunction entry = lua_tocfunction(L, -1);
  if ((entry == l_function_call || entry == l_scalar_call) && lua_getupvalue(L, -1, 1))
    f = test_ud<FunctionUd>(L, -1, &mt_function);
  if (!f) return luaL_argerror(L, 2, "not a function of this typemap");
  lua_pop(L, 2);
  MARSHAL_LUA_RETURN(guarded(L, f->name.c_str(), [&] { return call_body(L, *f, 3, true); }));
}

int l_library_new(lua_State* L) {
  LibraryUd* lib = check_library(L, 1);
  const char* type = luaL_checkstring(L, 2);
  const lua_Integer count = luaL_optinteger(L, 3, 1);
  if (count < 1) return luaL_argerror(L, 3, "count must be at least 1");
  const bool has_init = !lua_isnoneornil(L, 4);
  if (!lib->lib) return not_across(L, *lib, "new", "native memory owned by the host");
  MARSHAL_LUA_RETURN(guarded(L, "new", [&]() -> int {
    ErrorInfo err;
    err.function = "new";
    const Typemap& tm = lib->lib->typemap();
    TypeId t = tm.find_type(type);
    if (t == no_type) t = lib->lib->context().types().find_primitive(type);  // lib:new("uint8", 4096)
    if (t == no_type) {
      err.message = "no type '" + std::string(type) + "' in " + tm.file;
      err.text = tm.file + ": new: " + err.message;
      push_error(L, err);
      return -1;
    }
    std::string error;
    auto box = native_new(lib->lib->context().types(), t, static_cast<std::size_t>(count), lib->lib->max_buffer(), error);
    if (!box) {
      err.message = error;
      err.text = tm.file + ": new: " + error;
      push_error(L, err);
      return -1;
    }
    if (has_init) {
      Value init;
      ToValue tv{L, &lib->lib->context().types(), &lib->lib, nullptr};
      bool ok = true;
      if (count > 1 && lua_type(L, 4) == LUA_TSTRING) {  // bytes for a byte array
        std::size_t n = 0;
        const char* s = lua_tolstring(L, 4, &n);
        init = Value(Bytes{std::vector<std::uint8_t>(s, s + n)});
      } else {
        ok = to_value(tv, 4, count > 1 ? no_type : t, init);
      }
      if (!ok || !native_store(lib->lib->context().types(), *box, init, tv.error)) {
        err.message = tv.error;
        err.text = tm.file + ": new " + std::string(type) + ": " + tv.error;
        push_error(L, err);
        return -1;
      }
    }
    BoxUd* b = new_ud<BoxUd>(L, &mt_box);
    b->box = box;
    b->lib = lib->lib;
    return 1;
  }));
}

// lib:callback("Sig", f): a registered callback, active until cb:release()
// (an isolated library's lives in its surrogate).
int l_library_callback(lua_State* L) {
  LibraryUd* lib = check_library(L, 1);
  const char* sig = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_pushvalue(L, 3);
  const int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  CallbackUd* ud = new_ud<CallbackUd>(L, &mt_callback);
  MARSHAL_LUA_RETURN(guarded(L, "callback", [&]() -> int {
    Host& host = host_of(L);
    auto fn = std::make_shared<LuaFn>();
    fn->host = host.weak_from_this();
    fn->ref = ref;
    fn->name = sig;
    std::string error;
    // Isolated: made in the surrogate (native code keeps its pointer there);
    // this is the host's stand-in, called back over the connection.
    auto cb = lib->lib ? lib->lib->callback(sig, make_host_function(fn), error)
                       : lib->isolated->callback(sig, make_host_function(fn), error);
    if (!cb) {
      luaL_unref(L, LUA_REGISTRYINDEX, ref);
      ErrorInfo err;
      err.function = "callback";
      err.message = err.text = error;
      push_error(L, err);
      return -1;
    }
    ud->cb = std::move(cb);
    ud->fn = std::move(fn);
    ud->lib = lib->lib;
    return 1;
  }));
}

// lib:functions(): the names of the typemap's functions, sorted.
int l_library_functions(lua_State* L) {
  LibraryUd* lib = check_library(L, 1);
  const auto& fns = lib->typemap().functions;
  lua_createtable(L, static_cast<int>(fns.size()), 0);
  lua_Integer i = 0;
  for (const auto& item : fns) {  // std::map: sorted; nothing here owns memory across a raise
    lua_pushlstring(L, item.first.data(), item.first.size());
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

// lib:stats(): the engine's counters for this library (callback closures, objects).
int l_library_stats(lua_State* L) {
  LibraryUd* lib = check_library(L, 1);
  if (!lib->lib) return not_across(L, *lib, "stats", "the engine's counters");
  CallbackStats cs;
  ObjectStats os;
  std::size_t handles = 0;
  bool failed = false;
  try {
    cs = lib->lib->callbacks().stats();
    os = lib->lib->objects().stats();
    handles = lib->lib->handles().live();
  } catch (...) {
    failed = true;  // raised after the catch: no exception object is live across the longjmp
  }
  if (failed) return luaL_error(L, "marshal: stats failed");
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, static_cast<lua_Integer>(cs.live));
  lua_setfield(L, -2, "callbacks_live");
  lua_pushinteger(L, static_cast<lua_Integer>(cs.created));
  lua_setfield(L, -2, "callbacks_created");
  lua_pushinteger(L, static_cast<lua_Integer>(cs.recycled));
  lua_setfield(L, -2, "callbacks_recycled");
  lua_pushinteger(L, static_cast<lua_Integer>(handles));
  lua_setfield(L, -2, "handles_live");
  lua_pushinteger(L, static_cast<lua_Integer>(os.wrappers));
  lua_setfield(L, -2, "objects_live");
  lua_pushinteger(L, static_cast<lua_Integer>(os.faults));
  lua_setfield(L, -2, "object_faults");
  return 1;
}

// ---- callbacks ----------------------------------------------------------------------------

int l_callback_release(lua_State* L) {
  auto* c = test_ud<CallbackUd>(L, 1, &mt_callback);
  if (!c) return luaL_argerror(L, 1, "expected a callback (lib:callback)");
  if (!c->cb) return luaL_error(L, "marshal: this callback was already released");
  int ref = LUA_NOREF;
  bool already = false;  // raised after the try block
  try {
    if (!c->cb->active()) {
      c->cb.reset();
      already = true;
    } else {
      c->cb->release();  // later calls from native code reach the trap
      if (c->fn) ref = c->fn->ref;
      if (c->fn) c->fn->ref = LUA_NOREF;
      c->cb.reset();
      c->fn.reset();
      c->lib.reset();
    }
  } catch (...) {
  }
  if (already) return luaL_error(L, "marshal: this callback was already released");
  if (ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, ref);
  return 0;
}

int l_callback_gc(lua_State* L) {
  // Not a release: native code may still hold the pointer (explicit release
  // only). The Lua function stays referenced until cb:release().
  auto* c = static_cast<CallbackUd*>(lua_touserdata(L, 1));
  try {
    c->cb.reset();
    c->fn.reset();
    c->lib.reset();
  } catch (...) {
  }
  return 0;
}

int l_callback_index(lua_State* L) {
  auto* c = test_ud<CallbackUd>(L, 1, &mt_callback);
  const char* k = luaL_checkstring(L, 2);
  if (!std::strcmp(k, "release")) {
    lua_pushcfunction(L, l_callback_release);
    return 1;
  }
  if (!std::strcmp(k, "active")) {
    lua_pushboolean(L, c && c->cb && c->cb->active());
    return 1;
  }
  if (!std::strcmp(k, "address")) {
    if (!c || !c->cb) return 0;
    lua_pushlightuserdata(L, c->cb->code());
    return 1;
  }
  return 0;
}

// ---- module functions -------------------------------------------------------------------

int l_pump(lua_State* L) {
  const lua_Integer ms = luaL_optinteger(L, 1, 0);
  MARSHAL_LUA_RETURN(guarded(L, "marshal.pump", [&]() -> int {
    Host& host = host_of(L);
    host.drop_refs();
    host.sweep_host_objects(L);
    lua_State* outer = host.L;
    host.L = L;
    const std::size_t n = host.pump(static_cast<int>(std::min<lua_Integer>(std::max<lua_Integer>(ms, 0), 24 * 3600 * 1000)));
    host.L = outer;
    lua_pushinteger(L, static_cast<lua_Integer>(n));
    return 1;
  }));
}

int l_host_gc(lua_State* L) {
  auto* h = static_cast<HostUd*>(lua_touserdata(L, 1));
  if (!h->host) return 0;
  try {
    {
      std::lock_guard lock(h->host->mail_mutex);
      h->host->closed = true;
    }
    h->host->mail_cv.notify_all();
    h->host->L = nullptr;
    h->host.reset();
  } catch (...) {
  }
  return 0;
}

// marshal.entry(f): which entry a bound function takes, "scalar" (the
// scalar entry, FunctionUd::scalar) or "general"; nil for anything else. For
// tests and for users checking that a hot function takes the scalar entry.
[[gnu::cold]] int l_entry(lua_State* L) {
  const lua_CFunction c = lua_tocfunction(L, 1);
  if (c == l_scalar_call) lua_pushliteral(L, "scalar");
  else if (c == l_function_call) lua_pushliteral(L, "general");
  else lua_pushnil(L);
  return 1;
}

int l_type(lua_State* L) {
  if (test_ud<HandleUd>(L, 1, &mt_handle)) lua_pushliteral(L, "handle");
  else if (test_ud<BoxUd>(L, 1, &mt_box)) lua_pushliteral(L, "native");
  else if (test_ud<CallbackUd>(L, 1, &mt_callback)) lua_pushliteral(L, "callback");
  else if (test_ud<ObjectUd>(L, 1, &mt_object)) lua_pushliteral(L, "object");
  else if (test_ud<HostObjectUd>(L, 1, &mt_host_object)) lua_pushliteral(L, "host_object");
  else if (test_ud<LibraryUd>(L, 1, &mt_library)) lua_pushliteral(L, "library");
  else if (lua_type(L, 1) == LUA_TTABLE && lua_getmetatable(L, 1)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &mt_error);
    if (lua_rawequal(L, -1, -2)) lua_pushliteral(L, "error");
    else lua_pushnil(L);
  } else lua_pushnil(L);
  return 1;
}

}  // namespace

void new_metatable(lua_State* L, const char* key, const char* name, const luaL_Reg* fns, const luaL_Reg* methods) {
  lua_newtable(L);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  if (fns) luaL_setfuncs(L, fns, 0);
  if (methods) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "methods");
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

void open_module(lua_State* L) {
  // The host record.
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host);
  const bool have_host = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (!have_host) {
    static const luaL_Reg host_fns[] = {{"__gc", l_host_gc}, {nullptr, nullptr}};
    new_metatable(L, &mt_host, "marshal.host", host_fns, nullptr);
    auto* h = new_ud<HostUd>(L, &mt_host);
    h->host = std::make_shared<Host>();
    h->host->L = L;
    h->host->thread = std::this_thread::get_id();
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_host);

    lua_pushlightuserdata(L, const_cast<char*>(&key_null));
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_null);
    lua_newtable(L);  // identity: weak values
    lua_newtable(L);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_identity);
    lua_createtable(L, Host::max_slots, 0);
    for (int i = 1; i <= Host::max_slots; ++i) {  // the array part, allocated once
      lua_pushboolean(L, 0);
      lua_rawseti(L, -2, i);
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_slots);

    static const luaL_Reg lib_fns[] = {{"__index", l_library_index}, {"__gc", gc_reset<LibraryUd>}, {nullptr, nullptr}};
    static const luaL_Reg lib_methods[] = {{"new", l_library_new}, {"callback", l_library_callback},
                                           {"call_named", l_library_call_named}, {"stats", l_library_stats},
                                           {"functions", l_library_functions},
                                           {nullptr, nullptr}};
    new_metatable(L, &mt_library, "marshal.library", lib_fns, lib_methods);
    static const luaL_Reg fn_fns[] = {{"__gc", gc_reset<FunctionUd>}, {nullptr, nullptr}};
    new_metatable(L, &mt_function, "marshal.function", fn_fns, nullptr);
    open_native(L);
    static const luaL_Reg cb_fns[] = {{"__gc", l_callback_gc}, {"__close", l_callback_release},
                                      {"__index", l_callback_index}, {nullptr, nullptr}};
    new_metatable(L, &mt_callback, "marshal.callback", cb_fns, nullptr);
    static const luaL_Reg err_fns[] = {{"__tostring", error_tostring}, {nullptr, nullptr}};
    new_metatable(L, &mt_error, "marshal.error", err_fns, nullptr);
    open_objects(L);
  }
  static const luaL_Reg module[] = {{"load", l_load}, {"pump", l_pump}, {"type", l_type}, {"entry", l_entry},
                                         {nullptr, nullptr}};
  luaL_newlib(L, module);
  add_object_functions(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_null);
  lua_setfield(L, -2, "null");
  lua_pushinteger(L, lua_Integer{INT64_MAX});
  lua_setfield(L, -2, "maxinteger");
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "version");
}


}  // namespace marshal::lua

extern "C" __attribute__((visibility("default"))) int luaopen_marshal(lua_State* L) {
  // Pinned in memory: lua_close dlcloses C modules, but native threads the
  // engine started (apartments) or native code holding our closures may
  // outlive the state; unmapping their code would crash the process.
  static const bool pinned = [] {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&luaopen_marshal), &info) && info.dli_fname)
      dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
    return true;
  }();
  (void)pinned;
  marshal::lua::open_module(L);
  return 1;
}
