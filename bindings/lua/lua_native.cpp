// marshal Lua host: handles and native memory. Handles are userdata with
// identity (one per native value, weak registry), released by __gc exactly
// once, by <close> or by :release(); native memory boxes (lib:new) give field
// access by name and pass by address.
#include "lua_host.hpp"

#include "convert/native.hpp"

#include <cstring>

namespace marshal::lua {

namespace {

// Pushes one host value (protected: a Lua memory error is caught there); 1, or -1 with the error pushed.
int push_value_protected(lua_State* L, const Value& v, const std::shared_ptr<Library>& lib, const std::string& function) {
  struct D { const Value* v; const std::shared_ptr<Library>* lib; } d{&v, &lib};
  return push_protected(L, [](lua_State* L) -> int {
    auto* d = static_cast<D*>(lua_touserdata(L, 1));
    push_value(L, *d->v, *d->lib);
    return 1;
  }, &d, function);
}

// ---- handles ---------------------------------------------------------------------------

int l_handle_release(lua_State* L) {
  auto* h = test_ud<HandleUd>(L, 1, &mt_handle);
  if (!h) return luaL_argerror(L, 1, "expected a handle");
  MARSHAL_LUA_RETURN(guarded(L, "release", [&]() -> int {
    if (h->box && !h->box->released) {
      auto box = std::move(h->box);
      const auto release = box->release;
      const std::int64_t value = box->value;
      if (h->lib) h->lib->handles().released(box);
      else box->released = true;
      h->lib.reset();
      if (release) release(value);
    }
    h->box.reset();
    h->lib.reset();
    return 0;
  }));
}

int l_handle_gc(lua_State* L) {
  auto* h = static_cast<HandleUd*>(lua_touserdata(L, 1));
  try {
    h->box.reset();  // the last reference runs the type's release function (once)
    h->lib.reset();
  } catch (...) {
  }
  return 0;
}

int l_handle_index(lua_State* L) {
  auto* h = test_ud<HandleUd>(L, 1, &mt_handle);
  const char* k = luaL_checkstring(L, 2);
  if (!std::strcmp(k, "release")) {
    lua_pushcfunction(L, l_handle_release);
    return 1;
  }
  if (!std::strcmp(k, "value")) {
    if (!h || !h->box) return 0;
    lua_pushinteger(L, h->box->value);
    return 1;
  }
  if (!std::strcmp(k, "released")) {
    lua_pushboolean(L, !h || !h->box || h->box->released);
    return 1;
  }
  return 0;
}

int l_handle_tostring(lua_State* L) {
  auto* h = test_ud<HandleUd>(L, 1, &mt_handle);
  if (h && h->box) lua_pushfstring(L, "marshal.handle(%s: 0x%p)", h->box->type_name.c_str(), reinterpret_cast<void*>(h->box->value));
  else lua_pushliteral(L, "marshal.handle(released)");
  return 1;
}

// ---- native memory boxes --------------------------------------------------------------

int l_box_index(lua_State* L) {
  auto* b = test_ud<BoxUd>(L, 1, &mt_box);
  if (!b) return luaL_argerror(L, 1, "expected native memory");
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  const char* k = lua_tostring(L, 2);
  // Methods: get, set, address, size, free (a field of the same name wins).
  auto method = [&](const char* name) {
    if (!b->box) return true;
    const TypeDesc& d = b->lib->context().types().get(b->box->type);
    if (d.kind == Kind::struct_ || d.kind == Kind::union_)
      for (const Field& f : d.as<RecordInfo>().fields)
        if (f.name == name) return false;
    return true;
  };
  static const char* const methods[] = {"get", "set", "address", "size", "free"};
  for (const char* m : methods)
    if (!std::strcmp(k, m) && method(k)) {
      lua_getmetatable(L, 1);
      lua_getfield(L, -1, "methods");
      lua_getfield(L, -1, k);
      return 1;
    }
  MARSHAL_LUA_RETURN(guarded(L, "field", [&]() -> int {
    ErrorInfo err;
    err.function = k;
    Value v;
    std::string error;
    if (!b->box || !native_get(b->lib->context().types(), *b->box, std::string(k), v, error)) {
      err.message = err.text = b->box ? error : "this native memory was freed";
      push_error(L, err);
      return -1;
    }
    return push_value_protected(L, v, b->lib, err.function);
  }));
}

int l_box_newindex(lua_State* L) {
  auto* b = test_ud<BoxUd>(L, 1, &mt_box);
  if (!b) return luaL_argerror(L, 1, "expected native memory");
  const char* k = luaL_checkstring(L, 2);
  MARSHAL_LUA_RETURN(guarded(L, "field", [&]() -> int {
    ErrorInfo err;
    err.function = k;
    err.parameter = k;
    if (!b->box) {
      err.message = err.text = "this native memory was freed";
      push_error(L, err);
      return -1;
    }
    const TypeRegistry& reg = b->lib->context().types();
    const TypeDesc& d = reg.get(b->box->type);
    TypeId ft = no_type;
    if (d.kind == Kind::struct_ || d.kind == Kind::union_)
      for (const Field& f : d.as<RecordInfo>().fields)
        if (f.name == k) ft = f.type;
    Value v;
    ToValue tv{L, &reg, &b->lib, nullptr};
    if (!to_value(tv, 3, ft, v) || !native_set(reg, *b->box, k, v, tv.error)) {
      err.message = tv.error;
      err.text = d.name + "." + k + ": " + tv.error;
      push_error(L, err);
      return -1;
    }
    return 0;
  }));
}

int l_box_get(lua_State* L) {
  auto* b = test_ud<BoxUd>(L, 1, &mt_box);
  if (!b || !b->box) return luaL_argerror(L, 1, "expected native memory (not freed)");
  MARSHAL_LUA_RETURN(guarded(L, "get", [&]() -> int {
    ErrorInfo err;
    err.function = "get";
    Value v;
    if (!native_load(b->lib->context().types(), *b->box, v, err.message)) {
      err.text = err.message;
      push_error(L, err);
      return -1;
    }
    return push_value_protected(L, v, b->lib, err.function);
  }));
}

int l_box_set(lua_State* L) {
  auto* b = test_ud<BoxUd>(L, 1, &mt_box);
  if (!b || !b->box) return luaL_argerror(L, 1, "expected native memory (not freed)");
  MARSHAL_LUA_RETURN(guarded(L, "set", [&]() -> int {
    ErrorInfo err;
    err.function = "set";
    const TypeRegistry& reg = b->lib->context().types();
    Value v;
    ToValue tv{L, &reg, &b->lib, nullptr};
    if (!to_value(tv, 2, b->box->count > 1 ? no_type : b->box->type, v) || !native_store(reg, *b->box, v, tv.error)) {
      err.message = err.text = tv.error;
      push_error(L, err);
      return -1;
    }
    return 0;
  }));
}

int l_box_address(lua_State* L) {
  auto* b = test_ud<BoxUd>(L, 1, &mt_box);
  if (!b || !b->box) return luaL_argerror(L, 1, "expected native memory (not freed)");
  lua_pushlightuserdata(L, b->box->data());
  return 1;
}

int l_box_size(lua_State* L) {
  auto* b = test_ud<BoxUd>(L, 1, &mt_box);
  if (!b || !b->box) return luaL_argerror(L, 1, "expected native memory (not freed)");
  lua_pushinteger(L, static_cast<lua_Integer>(b->box->size));
  return 1;
}

int l_box_free(lua_State* L) {
  auto* b = test_ud<BoxUd>(L, 1, &mt_box);
  if (!b) return luaL_argerror(L, 1, "expected native memory");
  try {
    b->box.reset();  // native code may still hold it through a call's value: the engine's reference keeps it
    b->lib.reset();
  } catch (...) {
  }
  return 0;
}

int l_box_tostring(lua_State* L) {
  auto* b = test_ud<BoxUd>(L, 1, &mt_box);
  if (b && b->box) lua_pushfstring(L, "marshal.native(%s x%d: %p)", b->lib->context().types().get(b->box->type).name.c_str(),
                                   static_cast<int>(b->box->count), b->box->data());
  else lua_pushliteral(L, "marshal.native(freed)");
  return 1;
}
}  // namespace

void open_native(lua_State* L) {
  static const luaL_Reg handle_fns[] = {{"__gc", l_handle_gc}, {"__close", l_handle_release}, {"__index", l_handle_index},
                      {"__tostring", l_handle_tostring}, {nullptr, nullptr}};
  new_metatable(L, &mt_handle, "marshal.handle", handle_fns, nullptr);
  static const luaL_Reg box_fns[] = {{"__gc", gc_reset<BoxUd>}, {"__close", l_box_free}, {"__index", l_box_index},
                     {"__newindex", l_box_newindex}, {"__tostring", l_box_tostring}, {nullptr, nullptr}};
  static const luaL_Reg box_methods[] = {{"get", l_box_get}, {"set", l_box_set}, {"address", l_box_address},
                       {"size", l_box_size}, {"free", l_box_free}, {nullptr, nullptr}};
  new_metatable(L, &mt_box, "marshal.native", box_fns, box_methods);
}

}  // namespace marshal::lua
