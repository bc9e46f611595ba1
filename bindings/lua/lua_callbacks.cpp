// marshal Lua host: threads and callbacks. The host record's mailbox (Lua
// runs on the Lua thread only: callbacks from other native threads are queued
// and wait for its pump), pumping calls, and the host functions that run Lua
// functions for native code (call-scoped slots, registered callbacks, host
// object methods), each under lua_pcall so no Lua error unwinds native frames.
#include "lua_host.hpp"

#include "apartments/apartment.hpp"

#include <chrono>

namespace marshal::lua {

Host::~Host() = default;

bool Host::on_lua_thread(const std::function<void()>& fn, std::string& error) {
  if (std::this_thread::get_id() == thread) {
    if (!L) {
      error = "the Lua state is closed";
      return false;
    }
    fn();
    return true;
  }
  Task task{fn};
  std::unique_lock lock(mail_mutex);
  if (closed) {
    error = "the Lua state is closed";
    return false;
  }
  // The Lua thread waits inside a native call that does not pump: waiting
  // for it would deadlock. Lua never runs on this thread.
  auto stuck = [&] { return blocking_calls.load() > 0 && pumping_calls.load() == 0; };
  auto refuse = [&] {
    error = "a Lua function was called from another native thread while the Lua thread waits in a native call that "
            "does not pump callbacks; list that function in marshal.load's `pump` option";
    if (foreign_error.empty()) foreign_error = error;
    has_foreign_error.store(true);
  };
  // Stuck means: inside the same non-pumping call for 200 ms while this
  // callback waits (a short call the Lua thread makes between pumps is not).
  std::uint64_t seq = blocking_seq.load();
  auto since = std::chrono::steady_clock::now();
  auto stuck_long = [&] {
    const auto now = std::chrono::steady_clock::now();
    const std::uint64_t s = blocking_seq.load();
    if (!stuck() || s != seq) {
      seq = s;
      since = now;
      return false;
    }
    return now - since >= std::chrono::milliseconds(200);
  };
  mail.push_back(&task);
  mail_cv.notify_all();
  for (;;) {
    mail_cv.wait_for(lock, std::chrono::milliseconds(5), [&] { return task.done || closed; });
    if (task.done) return true;
    if (!task.taken && (closed || stuck_long())) {
      // Not run and never will be (closed), or the Lua thread entered a call
      // that does not pump since this was queued: withdraw it.
      for (auto it = mail.begin(); it != mail.end(); ++it)
        if (*it == &task) {
          mail.erase(it);
          break;
        }
      if (closed) error = "the Lua state was closed before the callback could run";
      else refuse();
      return false;
    }
  }
}

std::size_t Host::drain() {
  std::size_t ran = 0;
  std::unique_lock lock(mail_mutex);
  while (!mail.empty()) {
    Task* t = mail.front();
    mail.pop_front();
    t->taken = true;
    lock.unlock();
    t->run();  // run() catches everything (call_lua)
    lock.lock();
    t->done = true;
    mail_cv.notify_all();
    ++ran;
  }
  return ran;
}

std::size_t Host::pump(int ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms < 0 ? 0 : ms);
  for (;;) {
    std::size_t ran = drain();
    for (auto it = libraries.begin(); it != libraries.end();) {
      if (auto lib = it->lock()) {
        ran += lib->callbacks().pump();
        ++it;
      } else {
        it = libraries.erase(it);
      }
    }
    if (auto a = current_apartment(); a && a->kind() == Apartment::Kind::sta) ran += a->pump();
    if (ran > 0 || std::chrono::steady_clock::now() >= deadline) return ran;
    std::unique_lock lock(mail_mutex);
    mail_cv.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(2)),
                       [&] { return !mail.empty(); });
  }
}

void Host::run_pumping(const std::function<void()>& fn) {
  // A thread per pumping call (such calls start threads of their own anyway):
  // a callback inside one may make another.
  bool done = false;  // under mail_mutex
  {
    std::lock_guard lock(mail_mutex);
    ++pumping_calls;
  }
  std::thread t;
  try {
    t = std::thread([&] {
      try {
        fn();
      } catch (...) {
      }
      std::lock_guard lock(mail_mutex);
      done = true;
      mail_cv.notify_all();
    });
  } catch (...) {
    std::lock_guard lock(mail_mutex);
    --pumping_calls;
    throw;
  }
  for (;;) {
    drain();
    for (auto& w : libraries)
      if (auto lib = w.lock()) lib->callbacks().pump();
    std::unique_lock lock(mail_mutex);
    if (done && mail.empty()) {
      --pumping_calls;
      break;
    }
    mail_cv.wait_for(lock, std::chrono::milliseconds(2), [&] { return !mail.empty() || done; });
  }
  t.join();
}

std::string Host::take_foreign_error() {
  if (!has_foreign_error.load(std::memory_order_acquire)) return {};
  std::lock_guard lock(mail_mutex);
  has_foreign_error.store(false);
  std::string e;
  e.swap(foreign_error);
  return e;
}

void Host::drop_refs() {
  if (!has_unref.load(std::memory_order_acquire)) return;
  std::vector<int> refs;
  {
    std::lock_guard lock(unref_mutex);
    refs.swap(unref);
    has_unref.store(false);
  }
  for (int r : refs) luaL_unref(L, LUA_REGISTRYINDEX, r);
}

// ---- Lua functions called by native code ----------------------------------------

namespace {
struct LuaCall {
  LuaFn* fn;
  const std::vector<Value>* args;
  Value* result;
  bool converted = false;
  std::string error;  // conversion of the result
};

// Runs under lua_pcall: pushes the function and its arguments, calls it,
// converts its first result. Holds no C++ object while Lua may raise.
int lua_call_thunk(lua_State* L) {
  auto* c = static_cast<LuaCall*>(lua_touserdata(L, 1));
  const int base = lua_gettop(L);
  if (c->fn->slot) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_slots);
    lua_rawgeti(L, -1, c->fn->slot);
    lua_remove(L, -2);
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->fn->ref);
  }
  int nargs = 0;
  if (c->fn->self_id != 0) {  // a host object's method: self[name](self, ...)
    lua_pop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host_weak);
    lua_rawgeti(L, -1, c->fn->self_id);
    lua_remove(L, -2);
    if (lua_isnil(L, -1)) luaL_error(L, "the Lua table behind this host object was collected (Lua let it go while native code held no reference)");
    lua_getfield(L, -1, c->fn->name.c_str());
    lua_insert(L, -2);
    ++nargs;
  }
  luaL_checkstack(L, static_cast<int>(c->args->size()) + 4, "marshal: too many callback arguments");
  static const std::shared_ptr<Library> no_lib;
  for (const Value& a : *c->args) {
    push_value(L, a, no_lib);
    ++nargs;
  }
  lua_call(L, nargs, 1);
  try {
    ToValue tv{L};
    c->converted = to_value(tv, -1, no_type, *c->result);
    if (!c->converted) c->error = "its result: " + tv.error;
  } catch (const std::exception& e) {
    c->error = e.what();
  } catch (...) {
    c->error = "failed";
  }
  lua_settop(L, base);
  return 0;
}

// Runs under lua_pcall: the error value (argument 1) kept as the pending cause
// (the first one of the outermost call), and its text as argument 2's string.
int lua_error_thunk(lua_State* L) {
  auto* h = static_cast<Host*>(lua_touserdata(L, 2));
  if (h->pending_cause == LUA_NOREF && h->call_depth > 0) {
    lua_pushvalue(L, 1);
    h->pending_cause = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  luaL_tolstring(L, 1, nullptr);
  return 1;
}

// result_failed: set when the function ran but its result could not be converted.
bool call_lua(Host& host, LuaFn& fn, const std::vector<Value>& args, Value& result, std::string& error,
              bool* result_failed = nullptr) {
  lua_State* L = host.L;
  if (!L) {
    error = "the Lua state is closed";
    return false;
  }
  if (!lua_checkstack(L, 8)) {
    error = "the Lua stack is full";
    return false;
  }
  // The usual callback: a plain function given numbers, booleans and nil.
  // Pushing those allocates nothing, so the function is pcalled directly
  // (no thunk), its result converted here (to_value raises nothing).
  bool plain = fn.self_id == 0 && args.size() <= 16;
  for (std::size_t k = 0; plain && k < args.size(); ++k) {
    const Value::Type t = args[k].type();
    plain = t == Value::Type::null || t == Value::Type::boolean || t == Value::Type::int64 ||
            t == Value::Type::uint64 || t == Value::Type::real;
  }
  if (plain && lua_checkstack(L, static_cast<int>(args.size()) + 4)) {
    const int base = lua_gettop(L);
    if (fn.slot) {
      lua_rawgetp(L, LUA_REGISTRYINDEX, &key_slots);
      lua_rawgeti(L, -1, fn.slot);
      lua_remove(L, -2);
    } else {
      lua_rawgeti(L, LUA_REGISTRYINDEX, fn.ref);
    }
    for (const Value& a : args) {
      switch (a.type()) {
        case Value::Type::boolean: lua_pushboolean(L, a.as<bool>()); break;
        case Value::Type::int64: lua_pushinteger(L, static_cast<lua_Integer>(a.as<std::int64_t>())); break;
        case Value::Type::uint64: lua_pushinteger(L, static_cast<lua_Integer>(a.as<std::uint64_t>())); break;
        case Value::Type::real: lua_pushnumber(L, a.as<double>()); break;
        default: lua_pushnil(L); break;
      }
    }
    if (lua_pcall(L, static_cast<int>(args.size()), 1, 0) == LUA_OK) {
      bool converted = false;
      try {
        ToValue tv{L};
        converted = to_value(tv, -1, no_type, result);
        if (!converted) error = "its result: " + tv.error;
      } catch (const std::exception& e) {
        error = e.what();
      } catch (...) {
        error = "failed";
      }
      if (!converted && result_failed) *result_failed = true;
      lua_settop(L, base);
      return converted;
    }
  } else {
    LuaCall c{&fn, &args, &result};
    lua_pushcfunction(L, lua_call_thunk);
    lua_pushlightuserdata(L, &c);
    if (lua_pcall(L, 1, 0, 0) == LUA_OK) {
      if (!c.converted) error = c.error;
      if (!c.converted && result_failed) *result_failed = true;
      return c.converted;
    }
  }
  // The error value is on top: keep it, and its text.
  lua_pushcfunction(L, lua_error_thunk);
  lua_insert(L, -2);
  lua_pushlightuserdata(L, &host);
  if (lua_pcall(L, 2, 1, 0) == LUA_OK) {
    std::size_t n = 0;
    const char* s = lua_tolstring(L, -1, &n);
    error = s ? std::string(s, n) : "a Lua error";
  } else {
    error = "a Lua error (its message could not be read)";
  }
  lua_pop(L, 1);
  return false;
}
}  // namespace

namespace {
// Set on a native thread by the last Lua function delivered from it: whether
// the Lua thread ran it inside a call (that call waits for its failures).
thread_local bool delivered_in_call = false;

// A delivered Lua function's result native code cannot take: kept for the
// call that delivered it (on a native thread).
void hf_result_failed(Host& host, const std::string& error) {
  if (!delivered_in_call) return;
  std::lock_guard lock(host.mail_mutex);
  if (host.foreign_error.empty()) host.foreign_error = error + " (a Lua function called from another native thread)";
  host.has_foreign_error.store(true);
}
}  // namespace

std::shared_ptr<HostFunction> make_host_function(const std::shared_ptr<LuaFn>& fn) {
  auto hf = std::make_shared<HostFunction>();
  hf->name = fn->name;
  // Its result not convertible for native code (a string or nil for an int):
  // on the Lua thread the engine fails the call; from another native thread
  // the failure is recorded here for the call that delivered it, which raises
  // it (as a Lua error in a delivered callback does), never only on_error.
  hf->result_failed = [fn](const std::string& error) {
    auto host = fn->host.lock();
    if (host && std::this_thread::get_id() != host->thread) hf_result_failed(*host, error);
  };
  hf->fn = [fn](const std::vector<Value>& args, Value& result, std::string& error) -> bool {
    auto host = fn->host.lock();
    if (!host) {
      error = "the Lua state is closed";
      return false;
    }
    if (std::this_thread::get_id() == host->thread) {  // the usual case: no queue, no std::function
      if (!host->L) {
        error = "the Lua state is closed";
        return false;
      }
      return call_lua(*host, *fn, args, result, error);
    }
    bool ok = false, in_call = false, bad_result = false;
    std::string why;
    delivered_in_call = false;
    if (!host->on_lua_thread([&] {
          ok = call_lua(*host, *fn, args, result, why, &bad_result);
          in_call = host->call_depth > 0;
        }, error))
      return false;
    delivered_in_call = in_call;
    if (!ok) error = why;
    if (bad_result) hf_result_failed(*host, fn->name + ": " + why);  // not a Lua error: no cause tells the call
    return ok;
  };
  return hf;
}

bool slot_function(lua_State* L, int idx, CallScope& scope, Value& out, std::string& error) {
  Host& h = *scope.host;
  int slot = 0;
  if (!h.free_slots.empty()) {
    slot = h.free_slots.back();
    h.free_slots.pop_back();
  } else {
    if (static_cast<int>(h.slot_fns.size()) >= Host::max_slots) {
      error = "more than " + std::to_string(Host::max_slots) + " Lua functions are in native calls at once";
      return false;
    }
    auto fn = std::make_shared<LuaFn>();
    fn->host = h.weak_from_this();
    fn->slot = static_cast<int>(h.slot_fns.size()) + 1;
    fn->name = "Lua function";
    h.slot_fns.push_back(make_host_function(fn));
    slot = fn->slot;
  }
  scope.slots.push_back(slot);
  // Room for every slot in free_slots: ~CallScope gives them back without allocating.
  h.free_slots.reserve(h.slot_fns.size());
  // The slot table's array part was sized for max_slots: no allocation here.
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_slots);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
  out = Value(h.slot_fns[static_cast<std::size_t>(slot - 1)]);
  return true;
}

CallScope::~CallScope() {
  if (!host || slots.empty() || !host->L) return;
  lua_State* L = host->L;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_slots);
  for (int s : slots) {
    lua_pushnil(L);
    lua_rawseti(L, -2, s);  // an existing array slot: no allocation
    try {
      host->free_slots.push_back(s);  // within the capacity slot_function reserved: no allocation
    } catch (...) {  // (never): the slot is lost, not the process
    }
  }
  lua_pop(L, 1);
}

}  // namespace marshal::lua
