// marshal Lua host: the value converter, Lua values to and from the engine's
// dynamic Value, and the host adapters (LuaArgs, LuaResults) that feed Lua
// values straight into plans and push their results, using the converter only
// for what a plan's general converter needs (bindings/lua/README.md, "Design").
#include "lua_host.hpp"

#include "convert/native.hpp"

#include <cstring>

namespace marshal::lua {

namespace {

// What a value of type t is converted as: a {"ptr": T} parameter passes a T.
const TypeDesc* target(const TypeRegistry* reg, TypeId t) {
  if (!reg || t == no_type) return nullptr;
  const TypeDesc* d = &reg->get(t);
  if (d->kind == Kind::ptr && d->ref != no_type) d = &reg->get(d->ref);
  return d;
}

bool wants_bytes(const TypeRegistry* reg, const TypeDesc* d) {
  if (!d) return false;
  if (d->kind == Kind::string) return d->as<StringInfo>().encoding == Encoding::bytes;
  if (d->kind == Kind::array && d->ref != no_type) {
    const TypeDesc& e = reg->get(d->ref);
    return e.kind == Kind::integer && e.size == 1;
  }
  return false;
}

bool unsigned64(const TypeRegistry* reg, const TypeDesc* d) {
  if (!d) return false;
  if (d->kind == Kind::enum_ && d->ref != no_type) d = &reg->get(d->ref);
  return d->kind == Kind::integer && d->size == 8 && !d->has(flag_signed);
}

const char* lua_kind(lua_State* L, int idx) { return lua_typename(L, lua_type(L, idx)); }

bool fail(ToValue& c, std::string message) {
  c.error = std::move(message);
  return false;
}

// The fields of a struct or union, by name.
const Field* find_field(const RecordInfo& r, std::string_view name) {
  for (const Field& f : r.fields)
    if (f.name == name) return &f;
  return nullptr;
}

std::string field_list(const RecordInfo& r) {
  std::string names;
  for (const Field& f : r.fields) names += (names.empty() ? "" : ", ") + f.name;
  return names;
}

// A table as a record: every key a field name.
bool table_to_record(ToValue& c, int idx, const TypeDesc* d, Value& out, int depth) {
  lua_State* L = c.L;
  const RecordInfo* info = d && (d->kind == Kind::struct_ || d->kind == Kind::union_) ? &d->as<RecordInfo>() : nullptr;
  Record rec;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING) {
      const char* kind = lua_kind(L, -2);  // (read before the pop)
      lua_pop(L, 2);
      return fail(c, std::string("a record's keys are field names (strings); got a ") + kind + " key" +
                         (d && !d->name.empty() ? " for " + d->name : ""));
    }
    std::size_t n = 0;
    const char* key = lua_tolstring(L, -2, &n);  // a string: no conversion, lua_next stays valid
    std::string name(key, n);
    TypeId ft = no_type;
    if (info) {
      const Field* f = find_field(*info, name);
      if (!f) {
        lua_pop(L, 2);
        return fail(c, "unknown field '" + name + "' for " + (d->name.empty() ? "this record" : d->name) +
                           " (fields: " + field_list(*info) + ")");
      }
      ft = f->type;
    }
    Value v;
    if (!to_value(c, lua_gettop(L), ft, v, depth + 1)) {
      lua_pop(L, 2);
      c.error = "field '" + name + "': " + c.error;
      return false;
    }
    rec.emplace_back(std::move(name), std::move(v));
    lua_pop(L, 1);
  }
  out = Value(std::move(rec));
  return true;
}

// A table as a list: a sequence 1..n and no other key.
bool table_to_list(ToValue& c, int idx, TypeId element, Value& out, int depth) {
  lua_State* L = c.L;
  const lua_Unsigned n = lua_rawlen(L, idx);
  lua_Unsigned keys = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    ++keys;
    lua_pop(L, 1);
  }
  if (keys != n)
    return fail(c, "an array is a sequence (keys 1.." + std::to_string(n) + "); this table has " + std::to_string(keys) +
                       " keys");
  List list;
  list.reserve(static_cast<std::size_t>(n));
  for (lua_Unsigned i = 1; i <= n; ++i) {
    lua_rawgeti(L, idx, static_cast<lua_Integer>(i));
    Value v;
    const bool ok = to_value(c, lua_gettop(L), element, v, depth + 1);
    lua_pop(L, 1);
    if (!ok) {
      c.error = "item " + std::to_string(i) + ": " + c.error;
      return false;
    }
    list.push_back(std::move(v));
  }
  out = Value(std::move(list));
  return true;
}

}  // namespace

bool to_value(ToValue& c, int idx, TypeId t, Value& out, int depth) {
  lua_State* L = c.L;
  if (depth > static_cast<int>(max_value_depth)) return fail(c, "values nest deeper than " + std::to_string(max_value_depth) + " levels");
  if (depth > 0) {  // top-level arguments: absolute indices, and a C function's LUA_MINSTACK slots
    if (!lua_checkstack(L, 4)) return fail(c, "the Lua stack is full");
    idx = lua_absindex(L, idx);
  } else if (idx < 0) {
    idx = lua_absindex(L, idx);
  }
  const TypeDesc* d = target(c.reg, t);
  switch (lua_type(L, idx)) {
    case LUA_TNONE:
    case LUA_TNIL: out = Value(); return true;
    case LUA_TBOOLEAN: out = Value(lua_toboolean(L, idx) != 0); return true;
    case LUA_TNUMBER: {
      if (lua_isinteger(L, idx)) {
        const lua_Integer i = lua_tointeger(L, idx);
        // uint64 beyond math.maxinteger arrives as a negative integer (two's
        // complement, Lua's own convention): the same 64 bits go back.
        if (i < 0 && unsigned64(c.reg, d)) out = Value(static_cast<std::uint64_t>(i));
        else out = Value(static_cast<std::int64_t>(i));
      } else {
        out = Value(static_cast<double>(lua_tonumber(L, idx)));  // an integer type refuses a fraction (numeric.hpp)
      }
      return true;
    }
    case LUA_TSTRING: {
      std::size_t n = 0;
      const char* s = lua_tolstring(L, idx, &n);
      if (wants_bytes(c.reg, d)) out = Value(Bytes{std::vector<std::uint8_t>(s, s + n)});
      else out = Value(std::string(s, n));
      return true;
    }
    case LUA_TTABLE: {
      if (d && d->kind == Kind::interface) {
        if (!host_object_of_table(L, idx, *d->as<InterfaceInfo>().iface, out, c.error)) return false;
        return true;
      }
      if (d && (d->kind == Kind::struct_ || d->kind == Kind::union_)) return table_to_record(c, idx, d, out, depth);
      if (d && d->kind == Kind::array) return table_to_list(c, idx, d->ref, out, depth);
      if (d && d->kind == Kind::string) return table_to_list(c, idx, no_type, out, depth);  // double_nul lists
      if (d && d->kind == Kind::enum_) return table_to_list(c, idx, no_type, out, depth);   // flags: a list of names
      // Untyped (variadic values, opaque places): a sequence or a record.
      lua_pushnil(L);
      const bool empty = lua_next(L, idx) == 0;
      if (!empty) lua_pop(L, 2);
      if (empty || lua_rawlen(L, idx) > 0) return table_to_list(c, idx, no_type, out, depth);
      return table_to_record(c, idx, nullptr, out, depth);
    }
    case LUA_TLIGHTUSERDATA: {
      void* p = lua_touserdata(L, idx);
      lua_rawgetp(L, LUA_REGISTRYINDEX, &key_null);
      const bool is_null = lua_touserdata(L, -1) == p;
      lua_pop(L, 1);
      if (is_null || !p) out = Value();
      else out = Value(Address{reinterpret_cast<std::uintptr_t>(p)});
      return true;
    }
    case LUA_TUSERDATA: {
      if (auto* h = test_ud<HandleUd>(L, idx, &mt_handle)) {
        if (!h->box) return fail(c, "this handle was released");
        out = Value(h->box);
        return true;
      }
      if (auto* b = test_ud<BoxUd>(L, idx, &mt_box)) {
        if (!b->box) return fail(c, "this native memory was freed");
        out = Value(b->box);
        return true;
      }
      if (auto* cb = test_ud<CallbackUd>(L, idx, &mt_callback)) {
        if (!cb->cb) return fail(c, "this callback was released");
        out = Value(cb->cb);
        return true;
      }
      if (auto* o = test_ud<ObjectUd>(L, idx, &mt_object)) {
        if (o->ref.is_null()) return fail(c, "this object was released");
        out = o->ref;
        return true;
      }
      if (auto* h = test_ud<HostObjectUd>(L, idx, &mt_host_object)) {
        if (!h->obj) return fail(c, "this host object was released");
        out = Value(h->obj);
        return true;
      }
      return fail(c, "a userdata that is not a marshal value");
    }
    case LUA_TFUNCTION: {
      if (d && d->kind == Kind::callback) {
        if (d->as<CallbackInfo>().scope == Scope::registered)
          return fail(c, "callback '" + d->as<CallbackInfo>().sig->name + "' is registered (it outlives the call): make it with lib:callback(\"" +
                             d->as<CallbackInfo>().sig->name + "\", f) and release it when native code is done with it");
        if (!c.scope) return fail(c, "a Lua function cannot be passed here");
        return slot_function(L, idx, *c.scope, out, c.error);
      }
      return fail(c, "a Lua function is taken only for a callback parameter");
    }
    default:
      return fail(c, std::string("a Lua ") + lua_kind(L, idx) + " cannot be passed to native code");
  }
}

// ---- to Lua ---------------------------------------------------------------------

namespace {
// The userdata already standing for key (weak identity table), pushed; false if none.
bool push_known(lua_State* L, const void* key) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_identity);
  lua_rawgetp(L, -1, key);
  if (!lua_isnil(L, -1)) {
    lua_remove(L, -2);
    return true;
  }
  lua_pop(L, 2);
  return false;
}
void remember(lua_State* L, const void* key) {  // the userdata on top
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_identity);
  lua_pushvalue(L, -2);
  lua_rawsetp(L, -2, key);
  lua_pop(L, 1);
}
}  // namespace

void push_value(lua_State* L, const Value& v, const std::shared_ptr<Library>& lib, bool in_table) {
  luaL_checkstack(L, 4, "marshal: values nest too deep");
  switch (v.type()) {
    case Value::Type::null:
      if (in_table) lua_rawgetp(L, LUA_REGISTRYINDEX, &key_null);
      else lua_pushnil(L);
      return;
    case Value::Type::boolean: lua_pushboolean(L, v.as<bool>()); return;
    case Value::Type::int64: lua_pushinteger(L, static_cast<lua_Integer>(v.as<std::int64_t>())); return;
    case Value::Type::uint64: lua_pushinteger(L, static_cast<lua_Integer>(v.as<std::uint64_t>())); return;  // two's complement
    case Value::Type::real: lua_pushnumber(L, v.as<double>()); return;
    case Value::Type::string: lua_pushlstring(L, v.as<std::string>().data(), v.as<std::string>().size()); return;
    case Value::Type::bytes: {
      const auto& b = v.as<Bytes>().data;
      lua_pushlstring(L, reinterpret_cast<const char*>(b.data()), b.size());
      return;
    }
    case Value::Type::list: {
      const List& list = v.as<List>();
      lua_createtable(L, static_cast<int>(std::min<std::size_t>(list.size(), INT32_MAX)), 0);
      lua_Integer i = 0;
      for (const Value& item : list) {
        switch (item.type()) {  // scalars inline: the common out array of numbers
          case Value::Type::int64: lua_pushinteger(L, static_cast<lua_Integer>(item.as<std::int64_t>())); break;
          case Value::Type::real: lua_pushnumber(L, item.as<double>()); break;
          default: push_value(L, item, lib, true); break;
        }
        lua_rawseti(L, -2, ++i);
      }
      return;
    }
    case Value::Type::record: {
      const Record& rec = v.as<Record>();
      lua_createtable(L, 0, static_cast<int>(std::min<std::size_t>(rec.size(), INT32_MAX)));
      for (const auto& [name, item] : rec) {
        lua_pushlstring(L, name.data(), name.size());
        push_value(L, item, lib, true);
        lua_rawset(L, -3);
      }
      return;
    }
    case Value::Type::address:
      lua_pushlightuserdata(L, reinterpret_cast<void*>(v.as<Address>().value));
      return;
    case Value::Type::handle: {
      const auto& box = v.as<std::shared_ptr<HandleBox>>();
      if (push_known(L, box.get())) {  // still standing for this box (not released: a box at a reused address)
        if (static_cast<HandleUd*>(lua_touserdata(L, -1))->box == box) return;
        lua_pop(L, 1);
      }
      HandleUd* h = new_ud<HandleUd>(L, &mt_handle);
      h->box = box;
      h->lib = lib;
      remember(L, box.get());
      return;
    }
    case Value::Type::native: {
      const auto& box = v.as<std::shared_ptr<NativeBox>>();
      if (!lib) {  // no library to read its type with: its address
        lua_pushlightuserdata(L, box->data());
        return;
      }
      if (push_known(L, box.get())) {  // still standing for this box (not freed)
        if (static_cast<BoxUd*>(lua_touserdata(L, -1))->box == box) return;
        lua_pop(L, 1);
      }
      BoxUd* b = new_ud<BoxUd>(L, &mt_box);
      b->box = box;
      b->lib = lib;
      remember(L, box.get());
      return;
    }
    case Value::Type::function: lua_pushnil(L); return;  // host functions never come back as values
    case Value::Type::callback: {
      CallbackUd* cb = new_ud<CallbackUd>(L, &mt_callback);
      cb->cb = v.as<std::shared_ptr<Callback>>();
      cb->lib = lib;
      return;
    }
    case Value::Type::object: push_object(L, v); return;
    case Value::Type::host_object: push_host_object(L, v.as<std::shared_ptr<HostObject>>()); return;
  }
  lua_pushnil(L);
}

}  // namespace marshal::lua

// ---- the host adapters ----------------------------------------------------------------

namespace marshal::lua {

namespace {
// The Lua value at idx as a scalar for a parameter (or field) of type t: true
// when it is one (nil, boolean, number, string, light userdata), with the
// rules of to_value (uint64 beyond math.maxinteger, bytes strings are not
// scalars, marshal.null is null).
bool lua_scalar(lua_State* L, int idx, int lt, const TypeRegistry* reg, TypeId t, HostScalar& out) {
  switch (lt) {
    case LUA_TNONE:
    case LUA_TNIL: out.kind = HostScalar::Kind::null; return true;
    case LUA_TBOOLEAN:
      out.kind = HostScalar::Kind::boolean;
      out.b = lua_toboolean(L, idx) != 0;
      return true;
    case LUA_TNUMBER:
      out = lua_number_scalar(L, idx, [&] { return unsigned64(reg, target(reg, t)); });
      return true;
    case LUA_TSTRING: {
      if (wants_bytes(reg, target(reg, t))) break;
      std::size_t n = 0;
      const char* s = lua_tolstring(L, idx, &n);
      out.kind = HostScalar::Kind::string;
      out.text = std::string_view(s, n);
      return true;
    }
    case LUA_TLIGHTUSERDATA:
      out = lua_pointer_scalar(L, idx);
      return true;
    default: break;
  }
  out.kind = HostScalar::Kind::other;
  return false;
}

// Native bits of a lane at p (little-endian: lanes exist only there).
HostScalar lane_at(const LaneOp& l, const std::byte* p) {
  std::uint64_t w = 0;
  std::memcpy(&w, p, l.size <= 8 ? l.size : 8);
  return lane_scalar(l, w);
}

// Thunks for what allocates, run under lua_pcall (they hold no C++ object).
struct StringJob { const HostScalar* s; };
int string_thunk(lua_State* L) {
  const auto* j = static_cast<const StringJob*>(lua_touserdata(L, 1));
  lua_pushlstring(L, j->s->text.data(), j->s->text.size());
  return 1;
}
struct ValueJob { const Value* v; const std::shared_ptr<Library>* lib; };
int value_thunk(lua_State* L) {
  const auto* j = static_cast<const ValueJob*>(lua_touserdata(L, 1));
  push_value(L, *j->v, *j->lib);
  return 1;
}
struct RecordJob { std::span<const LaneField> fields; const std::byte* src; };
int record_thunk(lua_State* L) {
  const auto* j = static_cast<const RecordJob*>(lua_touserdata(L, 1));
  lua_createtable(L, 0, static_cast<int>(j->fields.size()));
  for (const LaneField& f : j->fields) {
    lua_pushlstring(L, f.name->data(), f.name->size());
    push_plain(L, lane_at(f.op, j->src + f.offset), true);
    lua_rawset(L, -3);
  }
  return 1;
}
struct ArrayJob { const LaneOp* element; const std::byte* data; std::size_t count; };
int array_thunk(lua_State* L) {
  const auto* j = static_cast<const ArrayJob*>(lua_touserdata(L, 1));
  const std::byte* p = j->data;
  const std::size_t n = j->count;
  const LaneOp& e = *j->element;
  lua_createtable(L, static_cast<int>(n), 0);
  if (e.op == LaneOp::Op::sint && e.size == 4) {  // the common int32 array: one tight loop
    for (std::size_t k = 0; k < n; ++k) {
      std::int32_t x;
      std::memcpy(&x, p + k * 4, 4);
      lua_pushinteger(L, x);
      lua_rawseti(L, -2, static_cast<lua_Integer>(k + 1));
    }
  } else if (e.op == LaneOp::Op::f64) {
    for (std::size_t k = 0; k < n; ++k) {
      double x;
      std::memcpy(&x, p + k * 8, 8);
      lua_pushnumber(L, x);
      lua_rawseti(L, -2, static_cast<lua_Integer>(k + 1));
    }
  } else {
    for (std::size_t k = 0; k < n; ++k) {
      push_plain(L, lane_at(e, p + k * e.size), true);
      lua_rawseti(L, -2, static_cast<lua_Integer>(k + 1));
    }
  }
  return 1;
}
}  // namespace

LuaArgs::LuaArgs(ToValue& tv, int first, std::size_t n, const TypeId* types, std::size_t ntypes)
    : tv_(tv), L_(tv.L), first_(first), n_(n), types_(types), ntypes_(ntypes) {
  if (n_ <= small) {
    std::memset(made_small_, 0, n_);
  } else {
    values_big_.resize(n_);
    made_big_.assign(n_, 0);
  }
}

LuaArgs::~LuaArgs() {
  if (n_ <= small) {
    Value* v = reinterpret_cast<Value*>(values_small_);
    for (std::size_t i = 0; i < n_; ++i)
      if (made_small_[i]) v[i].~Value();
  }
}

Value& LuaArgs::slot(std::size_t i) const {
  if (n_ > small) {
    made_big_[i] = 1;
    return values_big_[i];
  }
  Value* v = reinterpret_cast<Value*>(values_small_) + i;
  if (!made_small_[i]) {
    new (v) Value();
    made_small_[i] = 1;
  }
  return *v;
}

bool LuaArgs::scan_record(std::size_t i, const RecordInfo& info) {
  const std::size_t nf = info.fields.size();
  if (nf == 0 || nf > max_record_fields || rec_used_ + nf > rec_room || !lua_checkstack(L_, 3)) return false;
  for (const Field& f : info.fields)
    if (f.is_bitfield) return false;
  const int idx = first_ + static_cast<int>(i);
  HostScalar* dst = rec() + rec_used_;
  unsigned seen = 0;
  lua_pushnil(L_);
  while (lua_next(L_, idx) != 0) {
    std::size_t j = nf;
    if (lua_type(L_, -2) == LUA_TSTRING) {
      std::size_t kn = 0;
      const char* key = lua_tolstring(L_, -2, &kn);  // a string: no conversion, lua_next stays valid
      for (j = 0; j < nf; ++j) {
        const std::string& name = info.fields[j].name;
        if (name.size() == kn && std::memcmp(name.data(), key, kn) == 0) break;
      }
    }
    HostScalar s;
    const int lt = lua_type(L_, -1);
    if (j == nf || lt == LUA_TSTRING || !lua_scalar(L_, -1, lt, tv_.reg, info.fields[j].type, s)) {
      lua_pop(L_, 2);
      return false;  // not a plain record of scalars: to_value converts it, or says why
    }
    new (dst + j) HostScalar(s);
    seen |= 1u << j;
    lua_pop(L_, 1);
  }
  if (seen != (1u << nf) - 1) return false;
  rec_at_[i] = static_cast<std::uint8_t>(rec_used_);
  rec_info_[i] = &info;
  rec_used_ += nf;
  return true;
}

bool LuaArgs::prepare(std::size_t& failed) {
  for (std::size_t i = 0; i < n_ && i < small; ++i) rec_at_[i] = 0xFF;
  for (std::size_t i = 0; i < n_; ++i) {
    const int idx = first_ + static_cast<int>(i);
    const int t = lua_type(L_, idx);
    if (i < small) kind_[i] = static_cast<std::int8_t>(t);
    if (t == LUA_TNIL || t == LUA_TBOOLEAN || t == LUA_TNUMBER || t == LUA_TSTRING || t == LUA_TLIGHTUSERDATA) continue;
    if (t == LUA_TTABLE && i < small && tv_.reg && type(i) != no_type) {
      const TypeDesc& d = tv_.reg->get(type(i));
      if (d.kind == Kind::struct_ && scan_record(i, d.as<RecordInfo>())) continue;
    }
    if (!to_value(tv_, idx, type(i), slot(i))) {
      failed = i;
      return false;
    }
  }
  return true;
}

void LuaArgs::scalar(std::size_t i, HostScalar& out) const {
  const int idx = first_ + static_cast<int>(i);
  lua_scalar(L_, idx, i < small ? kind_[i] : lua_type(L_, idx), tv_.reg, type(i), out);
}

const Value& LuaArgs::value(std::size_t i) const {
  const bool made = n_ > small ? made_big_[i] != 0 : made_small_[i] != 0;
  Value& v = slot(i);
  if (!made && !to_value(tv_, first_ + static_cast<int>(i), type(i), v)) {
    // Cannot happen (prepare converted what can fail); never a half value.
    if (late_error_.empty()) late_error_ = "argument " + std::to_string(i + 1) + ": " + tv_.error;
    v = Value();
  }
  return v;
}

bool LuaArgs::record(std::size_t i, std::span<const LaneField> fields, HostScalar* out) const {
  if (i >= small || i >= n_ || rec_at_[i] == 0xFF) return false;
  const RecordInfo& info = *rec_info_[i];
  const std::size_t nf = info.fields.size();
  if (fields.size() != nf) return false;
  const HostScalar* mine = rec() + rec_at_[i];
  for (std::size_t k = 0; k < nf; ++k) {
    std::size_t j = k;  // the plan's fields are the struct's, in order
    if (fields[k].name != &info.fields[j].name) {
      for (j = 0; j < nf && *fields[k].name != info.fields[j].name; ++j) {}
      if (j == nf) return false;
    }
    out[k] = mine[j];
  }
  return true;
}

bool LuaResults::protect(int (*thunk)(lua_State*), void* data) {
  lua_pushcfunction(L_, thunk);
  lua_pushlightuserdata(L_, data);
  if (lua_pcall(L_, 1, 1, 0) != LUA_OK) {
    lua_pop(L_, 1);
    oom_ = true;  // a memory error: the call reports it, later results are dropped
    return false;
  }
  ++pushed_;
  return true;
}

void LuaResults::scalar(int i, const HostScalar& s) {
  if (oom_ || (i == ret && !has_return_)) return;
  if (s.kind == HostScalar::Kind::string) {
    StringJob j{&s};
    protect(string_thunk, &j);
    return;
  }
  push_plain(L_, s, false);
  ++pushed_;
}

void LuaResults::value(int i, Value&& v) {
  if (oom_ || (i == ret && !has_return_)) return;
  switch (v.type()) {
    case Value::Type::null: lua_pushnil(L_); ++pushed_; return;
    case Value::Type::boolean: lua_pushboolean(L_, v.as<bool>()); ++pushed_; return;
    case Value::Type::int64: lua_pushinteger(L_, static_cast<lua_Integer>(v.as<std::int64_t>())); ++pushed_; return;
    case Value::Type::uint64: lua_pushinteger(L_, static_cast<lua_Integer>(v.as<std::uint64_t>())); ++pushed_; return;
    case Value::Type::real: lua_pushnumber(L_, v.as<double>()); ++pushed_; return;
    default: break;
  }
  ValueJob j{&v, &lib_};
  protect(value_thunk, &j);
}

bool LuaResults::record(int i, std::span<const LaneField> fields, const std::byte* src) {
  if (oom_ || (i == ret && !has_return_)) return true;
  RecordJob j{fields, src};
  protect(record_thunk, &j);
  return true;
}

bool LuaResults::array(int i, const LaneOp& element, const void* data, std::size_t count) {
  if (count > static_cast<std::size_t>(INT32_MAX)) return false;
  if (oom_ || (i == ret && !has_return_)) return true;
  ArrayJob j{&element, static_cast<const std::byte*>(data), count};
  protect(array_thunk, &j);
  return true;
}

}  // namespace marshal::lua
