// marshal Lua host: objects. Native COM-style objects as userdata (one per
// object and interface while Lua holds it; == is COM identity), methods as
// obj:Method(...), obj:as("IFace"), release by __gc, __close or :release();
// host objects from Lua tables of functions; apartments and tokens.
#include "lua_host.hpp"

#include "apartments/apartment.hpp"
#include "objects/object.hpp"
#include "remote/surrogate.hpp"

#include <cstring>
#include <deque>

namespace marshal::lua {

const char key_host_weak = 0, key_host_pins = 0;

namespace {
int sweep_thunk(lua_State* L) {
  auto* h = static_cast<Host*>(lua_touserdata(L, 1));
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host_weak);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host_pins);
  auto& recs = h->host_objects;
  std::size_t keep = 0;
  for (std::size_t i = 0; i < recs.size(); ++i) {
    int refs = -1;  // -1: the host object is gone
    if (auto obj = recs[i].obj.lock()) refs = static_cast<int>(obj->native_refs());  // released before any Lua call
    const int id = recs[i].id;
    if (refs < 0) {  // gone: forget its table
      lua_pushnil(L);
      lua_rawseti(L, -3, id);
      lua_pushnil(L);
      lua_rawseti(L, -2, id);
      continue;
    }
    if (refs > 0) {
      lua_rawgeti(L, -2, id);  // the table (alive: pinned until now, or still held by Lua)
      lua_rawseti(L, -2, id);
    } else {
      lua_pushnil(L);
      lua_rawseti(L, -2, id);
    }
    if (keep != i) recs[keep] = std::move(recs[i]);
    ++keep;
  }
  recs.resize(keep);
  return 0;
}
}  // namespace

void Host::sweep_host_objects(lua_State* L) {
  if (host_objects.empty()) return;
  lua_pushcfunction(L, sweep_thunk);
  lua_pushlightuserdata(L, this);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);  // out of memory: try again next time
}

namespace {
const char key_methods = 0;      // name -> method closure (shared by every object)
const char key_host_tables = 0;  // Lua table -> host object userdata (weak keys)
const char key_host_objects = 0; // HostObject* -> its Lua table (weak values)

// The library behind an object (for handles in its results), or null when
// the object's host is not an in-process library.
std::shared_ptr<Library> library_ptr(ObjectHost& host) {
  return std::dynamic_pointer_cast<Library>(host.keep_loaded());
}

ObjectUd* check_object(lua_State* L, int idx) {
  auto* o = test_ud<ObjectUd>(L, idx, &mt_object);
  if (!o) luaL_argerror(L, idx, "expected a marshal object");
  return o;
}

struct Pushed {
  const Value* v;
  const CallResult* r;
  const std::shared_ptr<Library>* lib;
  bool has_return;
};
int push_one_thunk(lua_State* L) {
  auto* d = static_cast<Pushed*>(lua_touserdata(L, 1));
  lua_settop(L, 0);
  push_value(L, *d->v, *d->lib);
  return 1;
}
int push_results_thunk(lua_State* L) {
  auto* d = static_cast<Pushed*>(lua_touserdata(L, 1));
  lua_settop(L, 0);
  luaL_checkstack(L, static_cast<int>(d->r->out.size()) + 3, "marshal: too many results");
  int n = 0;
  if (d->has_return) {
    push_value(L, d->r->ret, *d->lib);
    ++n;
  }
  for (const auto& item : d->r->out) {
    push_value(L, item.second, *d->lib);
    ++n;
  }
  return n;
}

// Host arguments for a signature from Lua arguments first..top (no
// allocation for the usual counts: `args` has room for `room` values).
bool collect(lua_State* L, const Signature& sig, const TypeRegistry& reg, const std::shared_ptr<Library>& lib, int first,
             CallScope& scope, std::vector<Value>& args, ErrorInfo& err) {
  std::size_t count = 0;
  for (const Param& p : sig.params) count += p.host_supplied() ? 1 : 0;
  const int given = lua_gettop(L) - first + 1;
  if (given != static_cast<int>(count)) {
    std::string names;
    for (const Param& p : sig.params)
      if (p.host_supplied()) names += (names.empty() ? "" : ", ") + p.name;
    err.message = "expects " + std::to_string(count) + " argument" + (count == 1 ? "" : "s") + " (" + names +
                  "), got " + std::to_string(given);
    err.text = err.message;  // the caller prefixes the function
    return false;
  }
  ToValue tv{L, &reg, &lib, &scope};
  args.resize(count);
  std::size_t k = 0;
  for (const Param& p : sig.params) {
    if (!p.host_supplied()) continue;
    if (!to_value(tv, first + static_cast<int>(k), p.type, args[k])) {
      err.parameter = p.name;
      err.position = static_cast<int>(k) + 1;
      err.type = reg.spell(p.type);
      err.message = tv.error;
      err.text = "parameter '" + err.parameter + "' (" + err.type + "): " + tv.error;
      return false;
    }
    ++k;
  }
  return true;
}

constexpr int no_direct = -2;

// A method call through the host adapters (LuaArgs, LuaResults) with the
// method's plan (Library::bind_method): the arguments at 2..top. no_direct:
// not taken (nothing ran: the caller's Value path makes the call or reports
// the error in its words); else the result count, or -1 with the error pushed.
int direct_method_call(lua_State* L, const char* name, Host& host, const ObjectRef& ref,
                       const ObjectSpace::MethodRef& m, const std::shared_ptr<Library>& keep, CallScope& scope) {
  if (!keep || ref.remote || ref.proxy || !ref.object || !m.view || !m.owner || !m.method) return no_direct;
  if (ref.home && ref.home->kind() == Apartment::Kind::neutral) return no_direct;
  if (!usable_here(ref.home)) return no_direct;
  const Method& method = *m.method;
  const TypeRegistry& reg = keep->context().types();
  constexpr std::size_t max_args = 16;
  TypeId types[max_args];
  std::size_t count = 0;
  for (const Param& p : method.params) {
    if (!p.host_supplied()) continue;
    if (count == max_args) return no_direct;
    types[count++] = p.type;
  }
  const int given = lua_gettop(L) - 1;
  if (given != static_cast<int>(count)) return no_direct;  // collect says so
  const int room = static_cast<int>(method.params.size()) + 8;
  if (room > LUA_MINSTACK && !lua_checkstack(L, room)) return no_direct;
  std::string error;
  const Plan* plan = keep->bind_method(*m.owner, method, error);
  if (!plan) return no_direct;
  void* self = ref.object->pointer(*m.view, error);
  if (!self) return no_direct;
  void* const* vtable;
  std::memcpy(&vtable, self, sizeof vtable);
  void* target = vtable[method.slot];
  ToValue tv{L, &reg, &keep, &scope};
  LuaArgs args(tv, 2, count, types, count);
  std::size_t bad = 0;
  if (!args.prepare(bad)) return no_direct;  // collect converts it again and reports it
  const int base = lua_gettop(L);
  const bool has_return = reg.get(method.returns).kind != Kind::void_;
  bool ok = false;
  int pushed = 0;
  bool oom = false;
  lua_State* outer = host.begin_call(L);
  host.enter_blocking();
  {
    LuaResults out(L, keep, has_return);
    ok = plan->call_method(self, target, args, out, error);
    oom = out.out_of_memory();
    pushed = out.pushed();
  }
  host.leave_blocking();
  std::string foreign;
  const int cause = host.end_call(outer, foreign);
  if (ok && !args.late_error().empty()) {
    ok = false;
    error = keep->typemap().file + ": " + m.owner->name + "." + method.name + ": " + args.late_error();
  }
  if (!ok || cause != LUA_NOREF || !foreign.empty()) {
    lua_settop(L, base);
    ErrorInfo err;
    err.function = ref.iface->name + "." + name;
    parse_engine_error(!foreign.empty() ? err.function + ": " + foreign
                       : ok ? err.function + ": a Lua callback failed" : error, err);
    int k = 0;
    for (const Param& p : method.params)
      if (p.host_supplied() && ++k && p.name == err.parameter) err.position = k;
    err.cause = cause;
    push_error(L, err);
    return -1;
  }
  if (oom) {
    lua_settop(L, base);
    ErrorInfo err;
    err.function = ref.iface->name + "." + name;
    err.message = err.text = err.function + ": out of memory while converting the results";
    push_error(L, err);
    return -1;
  }
  return pushed;
}

int l_method_call(lua_State* L) {
  ObjectUd* o = check_object(L, 1);
  const char* name = lua_tostring(L, lua_upvalueindex(1));
  MARSHAL_LUA_RETURN(guarded(L, name, [&]() -> int {
    // Built on failure only (an ErrorInfo is ~250 bytes to clear per call).
    std::unique_ptr<ErrorInfo> made;
    auto E = [&]() -> ErrorInfo& {
      if (!made) made = std::make_unique<ErrorInfo>();
      return *made;
    };
    if (o->ref.is_null()) {
      E().function = name;
      E().message = E().text = std::string(name) + ": this object was released";
      push_error(L, E());
      return -1;
    }
    const ObjectRef& ref = o->ref.as<ObjectRef>();
    ObjectHost& lib = library_of(ref);
    std::shared_ptr<Library> keep = library_ptr(lib);
    std::string error;
    ObjectSpace::MethodRef m;
    if (!lib.objects().find_method(ref, name, m, error)) {
      E().function = name;
      parse_engine_error(error, E());
      push_error(L, E());
      return -1;
    }
    Host& host = host_of(L);
    host.drop_refs();
    host.sweep_host_objects(L);
    CallScope scope{&host};
    // A native object of this process, usable here and not neutral (the cases
    // ObjectSpace::call hands to Library::call_method): through the host
    // adapters, as a function call (call_direct) is. Anything else, and
    // every argument error, takes the Value path below.
    if (int n = direct_method_call(L, name, host, ref, m, keep, scope); n != no_direct) return n;
    // Argument vectors reused call after call, one per nesting level.
    static thread_local std::deque<std::vector<Value>> pool;  // deque: growing keeps references
    const std::size_t level = static_cast<std::size_t>(host.call_depth);
    if (pool.size() <= level) pool.resize(level + 1);
    std::vector<Value> args = std::move(pool[level]);
    struct GiveBack {
      std::vector<Value>& from;
      std::vector<Value>& to;
      ~GiveBack() {
        from.clear();  // the values go now; the capacity stays
        if (to.capacity() < from.capacity()) to.swap(from);
      }
    } give_back{args, pool[level]};
    if (!collect(L, *m.method, lib.context().types(), keep, 2, scope, args, E())) {
      E().function = ref.iface->name + "." + name;
      E().text = lib.typemap().file + ": " + E().function + ": " + E().text;
      push_error(L, E());
      return -1;
    }
    CallResult result;
    lua_State* outer = host.begin_call(L);
    host.enter_blocking();
    const bool ok = lib.objects().call(ref, name, args, result, error);
    host.leave_blocking();
    std::string foreign;
    const int cause = host.end_call(outer, foreign);
    if (!ok || cause != LUA_NOREF || !foreign.empty()) {
      E().function = ref.iface->name + "." + name;
      parse_engine_error(!foreign.empty() ? E().function + ": " + foreign
                         : ok ? E().function + ": a Lua callback failed" : error, E());
      int k = 0;
      for (const Param& p : m.method->params)
        if (p.host_supplied() && ++k && p.name == E().parameter) E().position = k;
      E().cause = cause;
      push_error(L, E());
      return -1;
    }
    const bool has_return = lib.context().types().get(m.method->returns).kind != Kind::void_;
    if (result.out.empty()) {  // a scalar result: pushed directly (nothing allocates)
      if (!has_return) return 0;
      switch (result.ret.type()) {
        case Value::Type::null: lua_pushnil(L); return 1;
        case Value::Type::boolean: lua_pushboolean(L, result.ret.as<bool>()); return 1;
        case Value::Type::int64: lua_pushinteger(L, static_cast<lua_Integer>(result.ret.as<std::int64_t>())); return 1;
        case Value::Type::uint64: lua_pushinteger(L, static_cast<lua_Integer>(result.ret.as<std::uint64_t>())); return 1;
        case Value::Type::real: lua_pushnumber(L, result.ret.as<double>()); return 1;
        default: break;
      }
    }
    Pushed d{nullptr, &result, &keep, has_return};
    return push_protected(L, push_results_thunk, &d, name);
  }));
}

int l_object_as(lua_State* L) {
  ObjectUd* o = check_object(L, 1);
  const char* iface = luaL_checkstring(L, 2);
  MARSHAL_LUA_RETURN(guarded(L, "as", [&]() -> int {
    ErrorInfo err;
    err.function = "as";
    if (o->ref.is_null()) {
      err.message = err.text = "as: this object was released";
      push_error(L, err);
      return -1;
    }
    const ObjectRef& ref = o->ref.as<ObjectRef>();
    ObjectHost& host_lib = library_of(ref);
    std::shared_ptr<Library> keep = library_ptr(host_lib);
    Value out;
    std::string error;
    if (!host_lib.objects().query(ref, iface, out, error)) {
      err.message = err.text = error;
      push_error(L, err);
      return -1;
    }
    Pushed d{&out, nullptr, &keep, true};
    return push_protected(L, push_one_thunk, &d, err.function);
  }));
}

int l_object_release(lua_State* L) {
  auto* o = test_ud<ObjectUd>(L, 1, &mt_object);
  if (!o) return luaL_argerror(L, 1, "expected a marshal object");
  try {
    o->ref = Value();  // the wrapper's references are released when its last holder lets go
  } catch (...) {
  }
  return 0;
}

int l_object_token(lua_State* L) {
  ObjectUd* o = check_object(L, 1);
  MARSHAL_LUA_RETURN(guarded(L, "token", [&]() -> int {
    ErrorInfo err;
    err.function = "token";
    std::uint64_t token = 0;
    std::string error;
    if (o->ref.is_null() || !marshal_interface(o->ref, token, error)) {
      err.message = err.text = o->ref.is_null() ? "this object was released" : error;
      push_error(L, err);
      return -1;
    }
    lua_pushinteger(L, static_cast<lua_Integer>(token));
    return 1;
  }));
}

int l_object_index(lua_State* L) {
  ObjectUd* o = check_object(L, 1);
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  // A method seen before (the names below are never in this table).
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_methods);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, -2) != LUA_TNIL) return 1;
  lua_pop(L, 2);
  const char* k = lua_tostring(L, 2);
  if (!std::strcmp(k, "as")) {
    lua_pushcfunction(L, l_object_as);
    return 1;
  }
  if (!std::strcmp(k, "release")) {
    lua_pushcfunction(L, l_object_release);
    return 1;
  }
  if (!std::strcmp(k, "token")) {
    lua_pushcfunction(L, l_object_token);
    return 1;
  }
  if (!std::strcmp(k, "interface")) {
    if (o->ref.is_null()) return 0;
    lua_pushstring(L, o->ref.as<ObjectRef>().iface->name.c_str());
    return 1;
  }
  if (!std::strcmp(k, "is_proxy")) {
    lua_pushboolean(L, !o->ref.is_null() && o->ref.as<ObjectRef>().proxy != nullptr);
    return 1;
  }
  // A method: one closure per name, shared by every object.
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_methods);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, -2) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, l_method_call, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);
  return 1;
}

int l_object_eq(lua_State* L) {
  auto* a = test_ud<ObjectUd>(L, 1, &mt_object);
  auto* b = test_ud<ObjectUd>(L, 2, &mt_object);
  bool same = false;
  try {
    same = a && b && !a->ref.is_null() && !b->ref.is_null() && a->ref == b->ref;  // COM identity
  } catch (...) {
  }
  lua_pushboolean(L, same);
  return 1;
}

int l_object_tostring(lua_State* L) {
  auto* o = test_ud<ObjectUd>(L, 1, &mt_object);
  if (!o || o->ref.is_null()) {
    lua_pushliteral(L, "marshal.object(released)");
    return 1;
  }
  const ObjectRef& ref = o->ref.as<ObjectRef>();
  lua_pushfstring(L, "marshal.object(%s: %p%s)", ref.iface->name.c_str(), identity_of(ref), ref.proxy ? ", proxy" : "");
  return 1;
}

int l_object_gc(lua_State* L) {
  auto* o = static_cast<ObjectUd*>(lua_touserdata(L, 1));
  try {
    o->ref = Value();
  } catch (...) {
  }
  return 0;
}

int l_host_object_gc(lua_State* L) {
  auto* h = static_cast<HostObjectUd*>(lua_touserdata(L, 1));
  try {
    h->obj.reset();
  } catch (...) {
  }
  return 0;
}

int l_host_object_index(lua_State* L) {
  auto* h = test_ud<HostObjectUd>(L, 1, &mt_host_object);
  const char* k = luaL_checkstring(L, 2);
  if (h && h->obj && !std::strcmp(k, "native_refs")) {
    lua_pushinteger(L, h->obj->native_refs());
    return 1;
  }
  return 0;
}

// lib:create("Class", ...): an instance through the class's factory.
int l_library_create(lua_State* L) {
  auto* lib = test_ud<LibraryUd>(L, 1, &mt_library);
  if (!lib || (!lib->lib && !lib->isolated)) return luaL_argerror(L, 1, "expected a library (marshal.load)");
  const char* cls = luaL_checkstring(L, 2);
  MARSHAL_LUA_RETURN(guarded(L, cls, [&]() -> int {
    ErrorInfo err;
    err.function = cls;
    // Isolated: the object is made in the surrogate (or server) and arrives
    // as a proxy whose calls go there (engine/remote/objects.hpp).
    const Typemap& tm = lib->typemap();
    auto c = tm.classes.find(cls);
    if (c == tm.classes.end() || !c->second.create) {
      err.message = "no class '" + std::string(cls) + "' in this typemap";
      err.text = tm.file + ": create: " + err.message;
      push_error(L, err);
      return -1;
    }
    Host& host = host_of(L);
    CallScope scope{&host};
    std::vector<Value> args;
    if (!collect(L, *c->second.create, lib->types(), lib->lib, 3, scope, args, err)) {
      err.function = cls;
      err.text = tm.file + ": " + cls + ": " + err.text;
      push_error(L, err);
      return -1;
    }
    err.function = cls;
    Value out;
    std::string error;
    ObjectSpace& objects = lib->lib ? lib->lib->objects() : lib->isolated->objects();
    if (!objects.create(cls, args, out, error)) {
      parse_engine_error(error, err);
      push_error(L, err);
      return -1;
    }
    Pushed d{&out, nullptr, &lib->lib, true};
    return push_protected(L, push_one_thunk, &d, err.function);
  }));
}

int l_apartment(lua_State* L) {
  const char* kind = luaL_checkstring(L, 1);
  const bool sta = !std::strcmp(kind, "sta");
  if (!sta && std::strcmp(kind, "mta")) return luaL_argerror(L, 1, "\"sta\" or \"mta\"");
  MARSHAL_LUA_RETURN(guarded(L, "marshal.apartment", [&]() -> int {
    std::string error;
    auto a = sta ? enter_sta(error) : enter_mta(error);
    if (!a) {
      ErrorInfo err;
      err.function = "marshal.apartment";
      err.message = err.text = error;
      push_error(L, err);
      return -1;
    }
    lua_pushstring(L, a->describe().c_str());
    return 1;
  }));
}

int l_leave_apartment(lua_State* L) {
  try {
    leave_apartment();
  } catch (...) {
  }
  (void)L;
  return 0;
}

int l_unmarshal(lua_State* L) {
  const lua_Integer token = luaL_checkinteger(L, 1);
  MARSHAL_LUA_RETURN(guarded(L, "marshal.unmarshal", [&]() -> int {
    ErrorInfo err;
    err.function = "marshal.unmarshal";
    Value out;
    std::string error;
    if (!unmarshal_interface(static_cast<std::uint64_t>(token), out, error)) {
      err.message = err.text = error;
      push_error(L, err);
      return -1;
    }
    std::shared_ptr<Library> keep = library_ptr(library_of(out.as<ObjectRef>()));
    Pushed d{&out, nullptr, &keep, true};
    return push_protected(L, push_one_thunk, &d, err.function);
  }));
}
}  // namespace

// ---- to Lua ----------------------------------------------------------------------

void push_object(lua_State* L, const Value& v) {
  const ObjectRef& ref = v.as<ObjectRef>();
  // One userdata per object, interface and proxy while Lua holds it.
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_identity);
  lua_pushfstring(L, "object:%p:%p:%p", identity_of(ref), static_cast<const void*>(ref.iface),
                  static_cast<void*>(ref.proxy.get()));
  lua_pushvalue(L, -1);
  if (lua_rawget(L, -3) != LUA_TNIL && !static_cast<ObjectUd*>(lua_touserdata(L, -1))->ref.is_null()) {
    lua_replace(L, -3);
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);  // none, or one released by :release() or <close>: a new userdata takes its place
  auto* o = new_ud<ObjectUd>(L, &mt_object);
  o->ref = v;
  lua_pushvalue(L, -2);  // key
  lua_pushvalue(L, -2);  // userdata
  lua_rawset(L, -5);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

void push_host_object(lua_State* L, const std::shared_ptr<HostObject>& obj) {
  // Our own object handed back: the Lua table it was made from.
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host_objects);
  if (lua_rawgetp(L, -1, obj.get()) != LUA_TNIL) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 2);
  auto* h = new_ud<HostObjectUd>(L, &mt_host_object);
  h->obj = obj;
}

namespace {
// Registers a new host object for the table (argument 2): weak and pinned by
// id, a userdata for it, table -> userdata and object -> table. Runs under
// lua_pcall (everything here may raise a memory error): the C++ objects are
// the caller's, which is outside the protected call.
struct NewHostObject {
  int id;
  const std::shared_ptr<HostObject>* obj;
};
int new_host_object_thunk(lua_State* L) {
  auto* d = static_cast<NewHostObject*>(lua_touserdata(L, 1));
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host_weak);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, d->id);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host_pins);  // pinned until a sweep sees no native reference
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, d->id);
  lua_pop(L, 2);
  auto* h = new_ud<HostObjectUd>(L, &mt_host_object);
  h->obj = *d->obj;  // copying a shared_ptr does not throw
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host_tables);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);  // table -> userdata
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host_objects);
  lua_pushvalue(L, 2);
  lua_rawsetp(L, -2, d->obj->get());
  return 0;
}
}  // namespace

bool host_object_of_table(lua_State* L, int idx, const Interface& iface, Value& out, std::string& error) {
  idx = lua_absindex(L, idx);
  if (!lua_checkstack(L, 6)) {
    error = "the Lua stack is full";
    return false;
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host_tables);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) != LUA_TNIL) {
    auto* h = static_cast<HostObjectUd*>(lua_touserdata(L, -1));
    out = Value(h->obj);
    lua_pop(L, 2);
    return true;
  }
  lua_pop(L, 2);
  // Methods: every method of iface and its bases (looked up on the table when
  // called, so methods inherited through a metatable work: self[name](self, ...)),
  // and every function field of the table (other interfaces it may be passed
  // as). IUnknown's three are the engine's. It implements the interfaces it is
  // passed as. The C++ side first (nothing here raises a Lua error), then the
  // Lua side in a protected call.
  Host& host = host_of(L);
  const int id = host.next_host_id + 1;
  std::map<std::string, std::shared_ptr<HostFunction>> methods;
  auto add = [&](const std::string& name) {
    if (name == "QueryInterface" || name == "AddRef" || name == "Release" || methods.count(name)) return;
    auto fn = std::make_shared<LuaFn>();
    fn->host = host.weak_from_this();
    fn->self_id = id;
    fn->name = name;
    methods[name] = make_host_function(fn);
  };
  for (const Interface* i = &iface; i; i = i->base)
    for (const Method& m : i->methods) add(m.name);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {  // raw traversal: nothing here raises
    if (lua_type(L, -2) == LUA_TSTRING && lua_isfunction(L, -1)) {
      std::size_t n = 0;
      const char* k = lua_tolstring(L, -2, &n);
      add(std::string(k, n));
    }
    lua_pop(L, 1);
  }
  auto obj = std::make_shared<HostObject>("Lua table", std::vector<std::string>{}, std::move(methods));
  host.host_objects.push_back({obj, id});  // before the Lua side: if that fails, a sweep forgets what it set
  host.next_host_id = id;
  NewHostObject d{id, &obj};
  lua_pushcfunction(L, new_host_object_thunk);
  lua_pushlightuserdata(L, &d);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    lua_pop(L, 1);  // obj goes with this function: the next sweep unpins the table
    error = "out of memory making a host object of a Lua table";
    return false;
  }
  out = Value(std::move(obj));
  return true;
}

void open_objects(lua_State* L) {
  auto meta = [&](const char* key, const char* name, const luaL_Reg* fns) {
    lua_newtable(L);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    luaL_setfuncs(L, fns, 0);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  };
  static const luaL_Reg obj_fns[] = {{"__index", l_object_index}, {"__eq", l_object_eq}, {"__gc", l_object_gc},
                                     {"__close", l_object_release}, {"__tostring", l_object_tostring}, {nullptr, nullptr}};
  meta(&mt_object, "marshal.object", obj_fns);
  static const luaL_Reg host_fns[] = {{"__gc", l_host_object_gc}, {"__index", l_host_object_index}, {nullptr, nullptr}};
  meta(&mt_host_object, "marshal.host_object", host_fns);
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_methods);
  lua_newtable(L);  // weak keys: a table's host object lives while the table does
  lua_newtable(L);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_host_tables);
  lua_newtable(L);
  lua_newtable(L);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_host_objects);
  lua_newtable(L);  // id -> table, weak
  lua_newtable(L);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_host_weak);
  lua_newtable(L);  // id -> table, while native code holds it
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_host_pins);
  // lib:create joins the library's methods.
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mt_library);
  lua_getfield(L, -1, "methods");
  lua_pushcfunction(L, l_library_create);
  lua_setfield(L, -2, "create");
  lua_pop(L, 2);
}

void add_object_functions(lua_State* L) {
  static const luaL_Reg fns[] = {{"apartment", l_apartment}, {"leave_apartment", l_leave_apartment},
                                 {"unmarshal", l_unmarshal}, {nullptr, nullptr}};
  luaL_setfuncs(L, fns, 0);
}

}  // namespace marshal::lua
