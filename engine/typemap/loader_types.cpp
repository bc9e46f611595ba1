// marshal engine: typemap loader, type expressions.
// Parses type expressions into interned descriptors, fills named structs, unions,
// enums and handles, and completes layouts (detecting by-value recursion).
#include "typemap/loader.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>

namespace marshal::engine::detail {

namespace {

bool int_fits(const TypeDesc& d, const json& v) {
  if (!v.is_number_integer()) return false;
  const unsigned bits = d.size * 8;
  if (d.has(flag_signed)) {
    if (v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
      return false;
    std::int64_t x = v.get<std::int64_t>();
    if (bits >= 64) return true;
    std::int64_t lo = -(std::int64_t{1} << (bits - 1)), hi = (std::int64_t{1} << (bits - 1)) - 1;
    return x >= lo && x <= hi;
  }
  if (!v.is_number_unsigned()) return v.get<std::int64_t>() >= 0 && bits >= 64 ? true
                                    : v.get<std::int64_t>() >= 0 &&
                                          std::uint64_t(v.get<std::int64_t>()) < (std::uint64_t{1} << bits);
  std::uint64_t x = v.get<std::uint64_t>();
  return bits >= 64 || x < (std::uint64_t{1} << bits);
}

std::string range_text(const TypeDesc& d) {
  const unsigned bits = d.size * 8;
  if (d.has(flag_signed)) {
    if (bits >= 64) return "-9223372036854775808 to 9223372036854775807";
    return std::to_string(-(std::int64_t{1} << (bits - 1))) + " to " + std::to_string((std::int64_t{1} << (bits - 1)) - 1);
  }
  if (bits >= 64) return "0 to 18446744073709551615";
  return "0 to " + std::to_string((std::uint64_t{1} << bits) - 1);
}

constexpr std::array<std::string_view, 11> kind_keys = {
    "ptr", "array", "string", "callback", "interface", "handle", "bool", "struct", "union", "enum", "alias"};

}  // namespace

// ---- values that must fit a type (sentinels, on_error) ----------------------------

bool Loader::check_value(const std::string& p, TypeId t, const json& v) {
  const TypeDesc& d = reg_.get(t);
  std::string expected;
  switch (d.kind) {
    case Kind::integer:
      if (int_fits(d, v)) return true;
      expected = "an integer from " + range_text(d) + " for " + reg_.spell(t);
      break;
    case Kind::enum_: {
      if (v.is_string()) {
        for (const auto& item : d.as<EnumInfo>().items)
          if (item.name == v.get_ref<const std::string&>()) return true;
      } else if (int_fits(reg_.get(d.ref), v)) {
        return true;
      }
      expected = "a name or number of enum " + reg_.spell(t);
      break;
    }
    case Kind::boolean:
      if (v.is_boolean()) return true;
      expected = "true or false";
      break;
    case Kind::floating:
      if (v.is_number()) return true;
      expected = "a number";
      break;
    case Kind::pointer: case Kind::ptr: case Kind::string: case Kind::callback:
    case Kind::interface: case Kind::handle: case Kind::array:
      if (v.is_null()) return true;
      expected = "null (the only pointer value a typemap can state)";
      break;
    case Kind::void_: case Kind::struct_: case Kind::union_:
      error(p, "a value of type " + reg_.spell(t) + " cannot be given here");
      return false;
  }
  error(p, "expected " + expected + ", got " + (v.is_string() ? "'" + v.get<std::string>() + "'" : v.dump()));
  return false;
}

// ---- type expressions ---------------------------------------------------------------

TypeId Loader::parse_type(const json& j, const std::string& p, const TypeCtx& ctx, std::vector<CountRef>& refs) {
  if (j.is_object()) return parse_kind_object(j, p, ctx, refs, no_type);
  if (!j.is_string()) {
    error(p, "expected a type (a type name or an object such as {\"ptr\": T}), got " + json_type_name(j));
    return no_type;
  }
  const std::string& s = j.get_ref<const std::string&>();
  if (s == "bool") {
    if (default_bool_ != no_type) return default_bool_;
    error(p, "'bool' is ambiguous: use \"cbool\" (1 byte, C _Bool), \"bool32\" (4 bytes, Win32 BOOL), "
             "{\"bool\": SIZE, \"true\": VALUE}, or set /defaults/bool");
    return no_type;
  }
  if (s == "string") {
    if (!default_string_set_) {
      error(p, "'string' needs an encoding: write {\"string\": \"utf8\"} (or utf16, utf32, wchar, latin1, ascii, "
               "bytes), or set /defaults/string");
      return no_type;
    }
    json expanded = {{"string", std::string(encoding_name(default_string_))}};
    return parse_kind_object(expanded, p, ctx, refs, no_type);
  }
  if (s == "cbool" || s == "bool32") {
    json expanded = {{"bool", s == "cbool" ? 1 : 4}, {"true", 1}};
    TypeId id = parse_kind_object(expanded, p, ctx, refs, no_type);
    return id;
  }
  if (TypeId prim = reg_.find_primitive(s); prim != no_type) {
    if (prim == reg_.void_type() && !ctx.allow_void) {
      error(p, "'void' is only allowed as a return type (use \"pointer\" for void*)");
      return no_type;
    }
    return prim;
  }
  return parse_named(s, p, ctx);
}

TypeId Loader::parse_named(const std::string& name, const std::string& p, const TypeCtx&) {
  auto it = named_.find(name);
  if (it == named_.end()) {
    std::string hint;
    if (interface_names_.count(name)) hint = " ('" + name + "' is an interface: write {\"interface\": \"" + name + "\"})";
    else if (callback_names_.count(name))
      hint = " ('" + name + "' is a callback: write {\"callback\": \"" + name + "\", \"scope\": \"call\"})";
    else {
      std::vector<std::string> choices;
      for (const auto& [n, _] : named_) choices.push_back(n);
#define MARSHAL_PRIM_NAME(id, sp, k, ctype) choices.push_back(sp);
      MARSHAL_PRIMITIVES(MARSHAL_PRIM_NAME)
#undef MARSHAL_PRIM_NAME
      choices.push_back("cbool");
      choices.push_back("bool32");
      choices.push_back("pointer");
      hint = did_you_mean(name, choices);
    }
    error(p, "unknown type '" + name + "'" + hint);
    return no_type;
  }
  Named& n = it->second;
  if (n.state == Named::State::failed) return no_type;
  if (n.kind == "alias") return resolve_alias(name);
  return n.id;
}

std::string Loader::count_key(const Count& c) const {
  switch (c.source) {
    case Count::Source::none: return "-";
    case Count::Source::constant: return "c" + std::to_string(c.constant);
    case Count::Source::param: return "p" + std::to_string(c.index) + "=" + c.name;
    case Count::Source::field: return "f" + std::to_string(c.index) + "=" + c.name;
    case Count::Source::return_value: return "r";
    case Count::Source::sentinel: return c.sentinel_null ? "snull" : "s" + std::to_string(c.sentinel);
  }
  return "?";
}

bool Loader::parse_count(const json& j, const std::string& p, const TypeCtx& ctx, std::vector<CountRef>& refs,
                         Count& out, std::string_view what) {
  if (j.is_number_integer()) {
    if (j.is_number_unsigned() || j.get<std::int64_t>() >= 0) {
      out.source = Count::Source::constant;
      out.constant = j.get<std::uint64_t>();
      if (out.constant > 0x7fffffff) {
        error(p, std::string(what) + " " + std::to_string(out.constant) + " is too large");
        return false;
      }
      return true;
    }
  }
  if (!j.is_object() || j.size() != 1) {
    error(p, "expected " + std::string(what) + ": a non-negative integer, {\"param\": NAME}, {\"field\": NAME}, "
             "{\"return\": true} or {\"sentinel\": VALUE}, got " + (j.is_object() ? "an object with " + std::to_string(j.size()) + " keys" : j.dump()));
    return false;
  }
  const std::string key = j.begin().key();
  const json& val = j.begin().value();
  const std::string kp = pointer_join(p, key);
  if ((key == "param" || key == "field" || key == "return") && detached_) {
    error(kp, std::string(what) + " of a variadic argument is a constant or {\"sentinel\": VALUE} (it has no "
              "sibling parameters)");
    return false;
  }
  if (key == "param" || key == "field") {
    const bool want_params = key == "param";
    if (!val.is_string()) {
      error(kp, "expected a " + std::string(want_params ? "parameter" : "field") + " name, got " + json_type_name(val));
      return false;
    }
    const std::string& name = val.get_ref<const std::string&>();
    if (ctx.names == nullptr || ctx.params != want_params) {
      error(kp, want_params ? std::string(what) + " {\"param\": ...} is only valid in function parameters" +
                                  (ctx.names ? " (in a struct use {\"field\": ...})" : "")
                            : std::string(what) + " {\"field\": ...} is only valid in struct fields" +
                                  (ctx.names ? " (in a function use {\"param\": ...})" : ""));
      return false;
    }
    auto pos = ctx.names->end();
    if (ctx.index) {
      if (auto at = ctx.index->find(name); at != ctx.index->end()) pos = ctx.names->begin() + at->second;
    } else {
      pos = std::find(ctx.names->begin(), ctx.names->end(), name);
    }
    if (pos == ctx.names->end()) {
      std::string list;
      for (const auto& n : *ctx.names) list += (list.empty() ? "" : ", ") + n;
      error(p, std::string(what) + " refers to " + (want_params ? "parameter '" : "field '") + name +
                   "' which does not exist (" + (want_params ? "parameters: " : "fields: ") + list + ")");
      return false;
    }
    out.source = want_params ? Count::Source::param : Count::Source::field;
    out.index = static_cast<std::uint32_t>(pos - ctx.names->begin());
    out.name = name;
    refs.push_back({p, out.source, out.index, name});
    return true;
  }
  if (key == "return") {
    if (!(val.is_boolean() && val.get<bool>())) {
      error(kp, "expected true, got " + val.dump());
      return false;
    }
    if (!ctx.allow_return_count) {
      error(kp, std::string(what) + " {\"return\": true} is only valid for out parameters of a function "
                "(the return value is read after the call)");
      return false;
    }
    out.source = Count::Source::return_value;
    refs.push_back({p, out.source, 0, "return"});
    return true;
  }
  if (key == "sentinel") {
    if (val.is_null()) {
      out.sentinel_null = true;
    } else if (val.is_number_integer()) {
      out.sentinel = val.is_number_unsigned() ? static_cast<std::int64_t>(val.get<std::uint64_t>()) : val.get<std::int64_t>();
    } else {
      error(kp, "expected a sentinel value: null or an integer, got " + val.dump());
      return false;
    }
    out.source = Count::Source::sentinel;
    return true;
  }
  error(kp, "unknown count source '" + key + "' (expected param, field, return or sentinel)");
  return false;
}

TypeId Loader::parse_kind_object(const json& j, const std::string& p, const TypeCtx& ctx,
                                 std::vector<CountRef>& refs, TypeId) {
  std::vector<std::string> found;
  for (std::string_view k : kind_keys)
    if (j.contains(std::string(k))) found.emplace_back(k);
  if (found.size() != 1) {
    std::string list;
    for (const auto& f : found.empty() ? std::vector<std::string>{} : found) list += (list.empty() ? "" : ", ") + f;
    if (found.empty()) {
      std::string keys;
      for (const auto& [k, _] : j.items()) keys += (keys.empty() ? "" : ", ") + k;
      error(p, "a type object needs one kind key (ptr, array, string, callback, interface, handle, bool, struct, "
               "union, enum), got " + (keys.empty() ? std::string("no keys") : "keys: " + keys));
    } else {
      error(p, "a type object has exactly one kind key, found: " + list);
    }
    return no_type;
  }
  const std::string& kind = found.front();
  const std::string kp = pointer_join(p, kind);
  const json& v = j.at(kind);

  if (kind == "ptr") {
    if (!check_keys(j, p, {"ptr"})) return no_type;
    TypeCtx sub = ctx;
    sub.where = TypeCtx::Where::pointee;
    sub.allow_void = false;
    TypeId pointee = parse_type(v, kp, sub, refs);
    if (pointee == no_type) return no_type;
    TypeDesc d;
    d.kind = Kind::ptr;
    d.ref = pointee;
    d.size = sizeof(void*);
    d.align = alignof(void*);
    d.flags = flag_complete;
    return reg_.intern("ptr:" + std::to_string(pointee), std::move(d));
  }

  if (kind == "array") {
    if (!check_keys(j, p, {"array", "count", "length"})) return no_type;
    if (!j.contains("count")) {
      error(pointer_join(p, "count"), "missing (an array needs its element count: N, {\"param\": NAME}, "
                                      "{\"field\": NAME}, {\"return\": true} or {\"sentinel\": VALUE})");
      return no_type;
    }
    TypeCtx sub = ctx;
    sub.where = TypeCtx::Where::element;
    sub.allow_void = false;
    TypeId elem = parse_type(v, kp, sub, refs);
    ArrayInfo info;
    bool ok = parse_count(j.at("count"), pointer_join(p, "count"), ctx, refs, info.count, "array count");
    if (j.contains("length")) {
      ok = parse_count(j.at("length"), pointer_join(p, "length"), ctx, refs, info.length, "array length") && ok;
      if (ok && info.length.source == Count::Source::sentinel) {
        error(pointer_join(p, "length"), "array length cannot be a sentinel (use count)");
        ok = false;
      }
    }
    if (elem == no_type || !ok) return no_type;
    const TypeDesc& e = reg_.get(elem);
    if (e.kind == Kind::array && e.as<ArrayInfo>().count.source != Count::Source::constant) {
      error(kp, "an array of arrays needs a constant inner count (the inner array is stored inline)");
      return no_type;
    }
    if (info.count.source == Count::Source::sentinel) {
      if (info.count.sentinel_null && !is_pointer_like(e)) {
        error(pointer_join(p, "count/sentinel"), "a null sentinel needs pointer elements, not " + reg_.spell(elem));
        return no_type;
      }
      if (!info.count.sentinel_null)
        pending_values_.push_back({pointer_join(p, "count/sentinel"), elem, j.at("count").at("sentinel")});
    }
    TypeDesc d;
    d.kind = Kind::array;
    d.ref = elem;
    d.align = e.align;
    d.info = info;
    TypeId id = reg_.intern("array:" + std::to_string(elem) + ":" + count_key(info.count) + ":" +
                                count_key(info.length),
                            std::move(d));
    if (!reg_.get(id).has(flag_complete)) to_complete_.insert(id);
    return id;
  }

  if (kind == "string") {
    if (!check_keys(j, p, {"string", "terminator", "length", "capacity", "unmappable"})) return no_type;
    StringInfo info;
    bool ok = read_enum<Encoding>(v, kp,
                                  {{"utf8", Encoding::utf8}, {"utf16", Encoding::utf16}, {"utf32", Encoding::utf32},
                                   {"wchar", Encoding::wchar}, {"latin1", Encoding::latin1},
                                   {"ascii", Encoding::ascii}, {"bytes", Encoding::bytes}},
                                  info.encoding);
    if (j.contains("terminator"))
      ok = read_enum<Terminator>(j.at("terminator"), pointer_join(p, "terminator"),
                                 {{"nul", Terminator::nul}, {"none", Terminator::none},
                                  {"double_nul", Terminator::double_nul}},
                                 info.terminator) && ok;
    if (j.contains("unmappable")) {
      ok = read_enum<Unmappable>(j.at("unmappable"), pointer_join(p, "unmappable"),
                                 {{"error", Unmappable::error}, {"replace", Unmappable::replace}}, info.unmappable) && ok;
      if (ok && info.encoding != Encoding::latin1 && info.encoding != Encoding::ascii) {
        error(pointer_join(p, "unmappable"), "'unmappable' applies only to latin1 and ascii strings");
        ok = false;
      }
    }
    TypeCtx cctx = ctx;
    if (j.contains("length")) {
      ok = parse_count(j.at("length"), pointer_join(p, "length"), cctx, refs, info.length, "string length") && ok;
      if (ok && info.length.source == Count::Source::sentinel) {
        error(pointer_join(p, "length"), "a string length cannot be a sentinel (strings end at their terminator)");
        ok = false;
      }
    }
    if (j.contains("capacity")) {
      cctx.allow_return_count = false;
      ok = parse_count(j.at("capacity"), pointer_join(p, "capacity"), cctx, refs, info.capacity, "string capacity") && ok;
      if (ok && info.capacity.source == Count::Source::sentinel) {
        error(pointer_join(p, "capacity"), "a string capacity cannot be a sentinel");
        ok = false;
      }
      if (ok && info.capacity.source == Count::Source::constant && info.capacity.constant == 0) {
        error(pointer_join(p, "capacity"), "a string capacity must be at least 1");
        ok = false;
      }
    }
    if (!ok) return no_type;
    if (info.terminator == Terminator::none && !info.length.present() && !info.capacity.present()) {
      error(p, "a string with terminator \"none\" needs 'length' (or 'capacity') to know where it ends");
      return no_type;
    }
    TypeDesc d;
    d.kind = Kind::string;
    info.inline_storage = ctx.where == TypeCtx::Where::field && info.capacity.source == Count::Source::constant;
    const std::uint32_t unit = static_cast<std::uint32_t>(encoding_unit(info.encoding));
    d.size = info.inline_storage ? static_cast<std::uint32_t>(info.capacity.constant) * unit : sizeof(void*);
    d.align = info.inline_storage ? unit : alignof(void*);
    d.flags = flag_complete;
    std::string key = "string:" + std::to_string(int(info.encoding)) + ":" + std::to_string(int(info.terminator)) +
                      ":" + std::to_string(int(info.unmappable)) + ":" + count_key(info.length) + ":" +
                      count_key(info.capacity) + (info.inline_storage ? ":inline" : "");
    d.info = info;
    return reg_.intern(key, std::move(d));
  }

  if (kind == "callback") {
    if (!check_keys(j, p, {"callback", "scope"})) return no_type;
    std::string name;
    if (!read_string(v, kp, name)) return no_type;
    if (!callback_names_.count(name)) {
      std::vector<std::string> choices(callback_names_.begin(), callback_names_.end());
      error(kp, "unknown callback '" + name + "'" + did_you_mean(name, choices));
      return no_type;
    }
    if (!j.contains("scope")) {
      error(pointer_join(p, "scope"), "missing (how long the callback lives: \"call\" or \"registered\")");
      return no_type;
    }
    Scope scope{};
    if (!read_enum<Scope>(j.at("scope"), pointer_join(p, "scope"),
                          {{"call", Scope::call}, {"registered", Scope::registered}}, scope))
      return no_type;
    const CallbackSig* sig = &tm_.callbacks.at(name);
    TypeDesc d;
    d.kind = Kind::callback;
    d.size = sizeof(void (*)());
    d.align = alignof(void (*)());
    d.flags = flag_complete;
    d.info = CallbackInfo{sig, scope};
    char addr[32];
    std::snprintf(addr, sizeof addr, "%p", static_cast<const void*>(sig));
    return reg_.intern(std::string("callback:") + addr + ":" + std::to_string(int(scope)), std::move(d));
  }

  if (kind == "interface") {
    if (!check_keys(j, p, {"interface"})) return no_type;
    std::string name;
    if (!read_string(v, kp, name)) return no_type;
    if (!interface_names_.count(name)) {
      std::vector<std::string> choices(interface_names_.begin(), interface_names_.end());
      error(kp, "unknown interface '" + name + "'" + did_you_mean(name, choices));
      return no_type;
    }
    return tm_.interfaces.at(name).type;
  }

  if (kind == "handle") {
    if (!check_keys(j, p, {"handle"})) return no_type;
    if (!v.is_string()) {
      error(kp, "an inline handle needs a name: declare it in /types as {\"handle\": {...}} and write "
                "{\"handle\": NAME}");
      return no_type;
    }
    TypeId id = parse_named(v.get<std::string>(), kp, ctx);
    if (id == no_type) return no_type;
    if (reg_.get(id).kind != Kind::handle) {
      error(kp, "'" + v.get<std::string>() + "' is not a handle type (it is " +
                    std::string(kind_name(reg_.get(id).kind)) + ")");
      return no_type;
    }
    return id;
  }

  if (kind == "bool") {
    if (!check_keys(j, p, {"bool", "true"})) return no_type;
    if (!v.is_number_integer() || !(v == 1 || v == 2 || v == 4 || v == 8)) {
      error(kp, "expected the bool's size in bytes: 1, 2, 4 or 8, got " + v.dump());
      return no_type;
    }
    const std::uint32_t size = v.get<std::uint32_t>();
    if (!j.contains("true")) {
      error(pointer_join(p, "true"), "missing (the integer that means true, e.g. 1, or -1 for VARIANT_BOOL)");
      return no_type;
    }
    const json& t = j.at("true");
    TypeDesc probe;
    probe.size = size;
    probe.flags = flag_signed;
    TypeDesc uprobe;
    uprobe.size = size;
    if (!(int_fits(probe, t) || int_fits(uprobe, t)) || t == 0) {
      error(pointer_join(p, "true"), "expected a non-zero integer that fits " + std::to_string(size) +
                                         " bytes, got " + t.dump());
      return no_type;
    }
    TypeDesc d;
    d.kind = Kind::boolean;
    d.size = size;
    d.align = size;
    d.flags = flag_complete;
    std::int64_t tv = t.is_number_unsigned() ? static_cast<std::int64_t>(t.get<std::uint64_t>()) : t.get<std::int64_t>();
    d.info = BoolInfo{tv};
    if (size == 1 && tv == 1) d.name = "cbool";
    if (size == 4 && tv == 1) d.name = "bool32";
    return reg_.intern("bool:" + std::to_string(size) + ":" + std::to_string(tv), std::move(d));
  }

  if (kind == "struct" || kind == "union" || kind == "enum") {
    TypeDesc d;
    d.kind = kind == "struct" ? Kind::struct_ : kind == "union" ? Kind::union_ : Kind::enum_;
    TypeId id = reg_.add(std::move(d));
    if (kind == "enum") fill_enum(j, p, id);
    else fill_record(j, p, id, kind == "union");
    return failed_.count(id) ? no_type : id;
  }

  // kind == "alias"
  error(kp, "'alias' is only allowed for a named type in /types");
  return no_type;
}

// ---- named types ----------------------------------------------------------------------

TypeId Loader::resolve_alias(const std::string& name) {
  Named& n = named_.at(name);
  switch (n.state) {
    case Named::State::done: return n.id;
    case Named::State::failed: return no_type;
    case Named::State::resolving: {
      std::string path;
      auto from = std::find(alias_stack_.begin(), alias_stack_.end(), name);
      for (auto it = from; it != alias_stack_.end(); ++it) path += *it + " -> ";
      error(pointer_join(n.pointer, "alias"), "alias cycle: " + path + name);
      n.state = Named::State::failed;
      return no_type;
    }
    case Named::State::pending: break;
  }
  n.state = Named::State::resolving;
  alias_stack_.push_back(name);
  struct Pop { std::vector<std::string>& s; ~Pop() { s.pop_back(); } } pop{alias_stack_};
  if (!check_keys(*n.j, n.pointer, {"alias"})) {
    n.state = Named::State::failed;
    return no_type;
  }
  TypeCtx ctx;
  ctx.where = TypeCtx::Where::alias;
  std::vector<CountRef> refs;
  TypeId target = parse_type(n.j->at("alias"), pointer_join(n.pointer, "alias"), ctx, refs);
  if (n.state == Named::State::failed || target == no_type) {
    n.state = Named::State::failed;
    return no_type;
  }
  n.state = Named::State::done;
  n.id = target;
  return target;
}

void Loader::fill_named_types(const json& types) {
  for (auto& [name, n] : named_) {
    if (n.state == Named::State::failed) continue;
    if (n.kind == "alias") {
      TypeId id = resolve_alias(name);
      if (id != no_type) tm_.types[name] = id;
      continue;
    }
    if (n.kind == "struct" || n.kind == "union") fill_record(*n.j, n.pointer, n.id, n.kind == "union");
    else if (n.kind == "enum") fill_enum(*n.j, n.pointer, n.id);
    else if (n.kind == "handle") fill_handle(*n.j, n.pointer, n.id);
    if (failed_.count(n.id)) n.state = Named::State::failed;
    else tm_.types[name] = n.id;
  }
  (void)types;
}

void Loader::fill_record(const json& j, const std::string& p, TypeId id, bool is_union) {
  const std::string key = is_union ? "union" : "struct";
  if (!check_keys(j, p, is_union ? std::initializer_list<std::string_view>{"union", "pack", "layout"}
                                 : std::initializer_list<std::string_view>{"struct", "pack", "layout", "size_field"})) {
    failed_.insert(id);
    return;
  }
  const std::string fp = pointer_join(p, key);
  const json& fields = j.at(key);
  if (!fields.is_array() || fields.empty()) {
    error(fp, "expected a non-empty array of fields ({\"name\": ..., \"type\": ...}), got " +
                  (fields.is_array() ? std::string("an empty array") : json_type_name(fields)));
    failed_.insert(id);
    return;
  }
  // Names first, so counts may refer to any sibling field.
  bool ok = true;
  std::vector<std::string> names(fields.size());
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const std::string ip = pointer_join(fp, i);
    if (!is_object(fields[i], ip, "a field")) { ok = false; continue; }
    if (!fields[i].contains("name")) { error(pointer_join(ip, "name"), "missing (every field has a name)"); ok = false; continue; }
    if (!read_name(fields[i].at("name"), pointer_join(ip, "name"), names[i], "field name")) { ok = false; continue; }
  }
  const auto index = first_positions(names);
  for (std::size_t i = 0; i < fields.size(); ++i)
    if (!names[i].empty())
      if (std::uint32_t k = index.at(names[i]); k != i) {
        error(pointer_join(pointer_join(fp, i), "name"),
              "duplicate field name '" + names[i] + "' (also field " + std::to_string(k) + ")");
        ok = false;
      }
  RecordInfo info;
  info.rule = tm_.default_layout;
  RecordSite site;
  site.pointer = p;
  TypeCtx ctx;
  ctx.where = TypeCtx::Where::field;
  ctx.names = &names;
  ctx.index = &index;
  ctx.params = false;
  std::vector<CountRef> refs;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const std::string ip = pointer_join(fp, i);
    site.field_pointers.push_back(ip);
    if (!fields[i].is_object() || names[i].empty()) continue;
    const json& f = fields[i];
    if (!check_keys(f, ip, {"name", "type", "offset", "bits", "nullable"})) { ok = false; continue; }
    Field field;
    field.name = names[i];
    if (!f.contains("type")) { error(pointer_join(ip, "type"), "missing (the field's type)"); ok = false; continue; }
    field.type = parse_type(f.at("type"), pointer_join(ip, "type"), ctx, refs);
    if (field.type == no_type) { ok = false; continue; }
    const TypeDesc& t = reg_.get(field.type);
    if (t.kind == Kind::array) {
      const Count& c = t.as<ArrayInfo>().count;
      const bool flexible = c.source == Count::Source::field && i + 1 == fields.size() && !is_union;
      if (c.source != Count::Source::constant && !flexible) {
        error(pointer_join(ip, "type"), "an array field is stored inline and needs a constant count (or, as the "
                                        "last field of a struct, a {\"field\": ...} count for a flexible array "
                                        "member); for a pointer write {\"ptr\": {\"array\": ...}}");
        ok = false;
        continue;
      }
    }
    if (f.contains("offset")) {
      const json& o = f.at("offset");
      if (!o.is_number_integer() || (!o.is_number_unsigned() && o.get<std::int64_t>() < 0) || o.get<std::uint64_t>() > 0x7fffffff) {
        error(pointer_join(ip, "offset"), "expected a byte offset (a non-negative integer), got " + o.dump());
        ok = false;
        continue;
      }
      field.has_explicit_offset = true;
      field.explicit_offset = o.get<std::uint32_t>();
    }
    if (f.contains("bits")) {
      const json& b = f.at("bits");
      if (!b.is_number_integer() || (!b.is_number_unsigned() && b.get<std::int64_t>() < 0) || b.get<std::uint64_t>() > 64) {
        error(pointer_join(ip, "bits"), "expected a bitfield width from 0 to 64, got " + b.dump());
        ok = false;
        continue;
      }
      if (t.kind != Kind::integer && t.kind != Kind::boolean && t.kind != Kind::enum_) {
        error(pointer_join(ip, "bits"), "a bitfield must have an integer, bool or enum type, not " + reg_.spell(field.type));
        ok = false;
        continue;
      }
      if (field.has_explicit_offset) {
        error(pointer_join(ip, "bits"), "a field cannot have both 'offset' and 'bits'");
        ok = false;
        continue;
      }
      field.is_bitfield = true;
      field.bits = b.get<std::uint16_t>();
      const std::uint32_t limit = (t.kind == Kind::boolean && t.size == 1) ? 1 : t.size * 8;
      if (field.bits > limit) {
        error(pointer_join(ip, "bits"), "bitfield width " + std::to_string(field.bits) + " exceeds its type " +
                                            reg_.spell(field.type) + " (" + std::to_string(limit) + " bits)");
        ok = false;
        continue;
      }
    }
    if (f.contains("nullable")) {
      if (!read_bool(f.at("nullable"), pointer_join(ip, "nullable"), field.nullable)) { ok = false; continue; }
      if (field.nullable && !is_pointer_like(t)) {
        error(pointer_join(ip, "nullable"), "only pointer fields can be null; '" + field.name + "' is " + reg_.spell(field.type));
        ok = false;
        continue;
      }
    }
    info.fields.push_back(std::move(field));
  }
  // Counts must refer to integer fields.
  for (const CountRef& r : refs) {
    if (r.index >= info.fields.size() || info.fields.size() != fields.size()) break;  // already failed
    TypeId t = info.fields[r.index].type;
    if (reg_.get(t).kind != Kind::integer) {
      error(r.pointer, "count refers to field '" + r.name + "' which is not an integer (it is " + reg_.spell(t) + ")");
      ok = false;
    }
  }
  if (j.contains("pack")) {
    const json& pk = j.at("pack");
    if (!(pk == 1 || pk == 2 || pk == 4 || pk == 8 || pk == 16) || !pk.is_number_integer()) {
      error(pointer_join(p, "pack"), "expected 1, 2, 4, 8 or 16 (as #pragma pack(N)), got " + pk.dump());
      ok = false;
    } else {
      info.pack = pk.get<std::uint32_t>();
    }
  }
  if (j.contains("layout"))
    ok = read_enum<LayoutRule>(j.at("layout"), pointer_join(p, "layout"),
                               {{"sysv", LayoutRule::sysv}, {"msvc", LayoutRule::msvc}}, info.rule) && ok;
  if (j.contains("size_field") && ok) {
    std::string sf;
    if (!read_string(j.at("size_field"), pointer_join(p, "size_field"), sf)) {
      ok = false;
    } else {
      auto pos = std::find(names.begin(), names.end(), sf);
      if (pos == names.end()) {
        error(pointer_join(p, "size_field"), "names field '" + sf + "' which does not exist" + did_you_mean(sf, names));
        ok = false;
      } else if (reg_.get(info.fields[pos - names.begin()].type).kind != Kind::integer) {
        error(pointer_join(p, "size_field"), "field '" + sf + "' must be an integer to hold the struct's size");
        ok = false;
      } else {
        info.size_field = static_cast<int>(pos - names.begin());
      }
    }
  }
  if (!ok || info.fields.size() != fields.size()) {
    failed_.insert(id);
    return;
  }
  TypeDesc& d = reg_.edit(id);
  if (info.rule == LayoutRule::msvc) d.flags |= flag_msvc_layout;
  d.info = std::move(info);
  records_[id] = std::move(site);
  to_complete_.insert(id);
}

void Loader::fill_enum(const json& j, const std::string& p, TypeId id) {
  if (!check_keys(j, p, {"enum", "underlying", "flags"})) { failed_.insert(id); return; }
  if (!j.contains("underlying")) {
    error(pointer_join(p, "underlying"), "missing (the enum's integer type, e.g. \"int32\"; C leaves its size to the compiler)");
    failed_.insert(id);
    return;
  }
  TypeCtx ctx;
  ctx.where = TypeCtx::Where::alias;
  std::vector<CountRef> refs;
  TypeId under = parse_type(j.at("underlying"), pointer_join(p, "underlying"), ctx, refs);
  if (under == no_type) { failed_.insert(id); return; }
  const TypeDesc& u = reg_.get(under);
  if (u.kind != Kind::integer) {
    error(pointer_join(p, "underlying"), "an enum's underlying type must be an integer type, not " + reg_.spell(under));
    failed_.insert(id);
    return;
  }
  EnumInfo info;
  bool ok = true;
  if (j.contains("flags")) ok = read_bool(j.at("flags"), pointer_join(p, "flags"), info.flags);
  const json& items = j.at("enum");
  const std::string ip = pointer_join(p, "enum");
  if (!items.is_object() || items.empty()) {
    error(ip, "expected a non-empty object of NAME: VALUE, got " + (items.is_object() ? std::string("an empty object") : json_type_name(items)));
    failed_.insert(id);
    return;
  }
  for (const auto& [name, value] : items.items()) {
    const std::string np = pointer_join(ip, name);
    if (!is_identifier(name)) { error(np, "'" + name + "' is not a valid enum item name (letters, digits, _)"); ok = false; continue; }
    if (!int_fits(u, value)) {
      error(np, "expected an integer from " + range_text(u) + " (underlying " + reg_.spell(under) + "), got " + value.dump());
      ok = false;
      continue;
    }
    std::int64_t v = value.is_number_unsigned() ? static_cast<std::int64_t>(value.get<std::uint64_t>()) : value.get<std::int64_t>();
    info.items.push_back({name, v});
  }
  if (!ok) { failed_.insert(id); return; }
  TypeDesc& d = reg_.edit(id);
  d.ref = under;
  d.size = u.size;
  d.align = u.align;
  d.flags = flag_complete | flag_blittable | (u.flags & flag_signed);
  d.info = std::move(info);
}

void Loader::fill_handle(const json& j, const std::string& p, TypeId id) {
  if (!check_keys(j, p, {"handle"})) { failed_.insert(id); return; }
  const std::string hp = pointer_join(p, "handle");
  const json& h = j.at("handle");
  if (!is_object(h, hp, "handle options ({\"invalid\": [...], \"release\": FN})") ||
      !check_keys(h, hp, {"invalid", "release", "underlying"})) {
    failed_.insert(id);
    return;
  }
  HandleInfo info;
  TypeId under = reg_.find_primitive("uintptr_t");
  bool ok = true;
  if (h.contains("underlying")) {
    const json& u = h.at("underlying");
    if (u == "pointer") {
      info.by_pointer = true;
    } else {
      TypeCtx ctx;
      ctx.where = TypeCtx::Where::alias;
      std::vector<CountRef> refs;
      under = parse_type(u, pointer_join(hp, "underlying"), ctx, refs);
      if (under == no_type) { failed_.insert(id); return; }
      if (reg_.get(under).kind != Kind::integer) {
        error(pointer_join(hp, "underlying"), "a handle is a \"pointer\" or an integer type, not " + reg_.spell(under));
        failed_.insert(id);
        return;
      }
      info.by_pointer = false;
    }
  }
  const TypeDesc& ud = reg_.get(under);
  if (h.contains("invalid")) {
    const json& inv = h.at("invalid");
    const std::string ivp = pointer_join(hp, "invalid");
    if (!inv.is_array()) {
      error(ivp, "expected an array of invalid values, got " + json_type_name(inv));
      ok = false;
    } else {
      for (std::size_t i = 0; i < inv.size(); ++i) {
        const json& v = inv[i];
        TypeDesc as_signed = ud;
        as_signed.flags |= flag_signed;
        if (!(int_fits(ud, v) || (info.by_pointer && int_fits(as_signed, v)))) {
          error(pointer_join(ivp, i), "expected an integer that fits " + reg_.spell(under) + ", got " + v.dump());
          ok = false;
          continue;
        }
        info.invalid.push_back(v.is_number_unsigned() ? static_cast<std::int64_t>(v.get<std::uint64_t>()) : v.get<std::int64_t>());
      }
    }
  }
  if (h.contains("release")) {
    FreeWith& fw = handle_release_.emplace_back();
    read_free_with(h.at("release"), pointer_join(hp, "release"), fw);
    if (fw.how == FreeWith::How::none) {
      error(pointer_join(hp, "release"), "a handle's release cannot be \"none\" (omit 'release' instead)");
      ok = false;
    } else if (fw.how == FreeWith::How::unset) {
      ok = false;
    } else {
      info.release = h.at("release").get<std::string>();
    }
  }
  if (!ok) { failed_.insert(id); return; }
  TypeDesc& d = reg_.edit(id);
  d.ref = under;
  d.size = ud.size;
  d.align = ud.align;
  d.flags = flag_complete | (info.by_pointer ? 0 : (ud.flags & flag_signed));
  d.info = std::move(info);
}

// ---- layout completion ---------------------------------------------------------------

bool Loader::complete(TypeId id) {
  const TypeDesc& d0 = reg_.get(id);
  if (d0.has(flag_complete)) return true;
  if (failed_.count(id)) return false;
  switch (d0.kind) {
    case Kind::array: {
      if (!complete(d0.ref)) { failed_.insert(id); return false; }
      const TypeDesc& e = reg_.get(d0.ref);
      TypeDesc& d = reg_.edit(id);
      const Count& c = d.as<ArrayInfo>().count;
      d.align = e.align;
      if (c.source == Count::Source::constant) {
        std::uint64_t size = c.constant * std::uint64_t{e.size};
        if (size > 0x7fffffff) { failed_.insert(id); return false; }
        d.size = static_cast<std::uint32_t>(size);
      } else {
        d.size = 0;
        d.flags |= flag_variable_size;
      }
      d.flags |= flag_complete | (e.has(flag_blittable) && c.source == Count::Source::constant ? flag_blittable : 0);
      return true;
    }
    case Kind::struct_: case Kind::union_: {
      const bool is_union = d0.kind == Kind::union_;
      const RecordSite& site = records_.at(id);
      in_progress_.insert(id);
      std::vector<MemberShape> shapes;
      bool blittable = true;
      bool variable = false;
      const auto& fields = d0.as<RecordInfo>().fields;
      for (std::size_t i = 0; i < fields.size(); ++i) {
        // The record a field holds by value (through inline arrays).
        TypeId t = fields[i].type;
        while (reg_.get(t).kind == Kind::array) t = reg_.get(t).ref;
        if (in_progress_.count(t)) {
          const std::string& rp = records_.at(t).pointer;
          std::string rname = reg_.get(t).name.empty() ? "(anonymous at " + rp + ")" : "'" + reg_.get(t).name + "'";
          error(pointer_join(site.field_pointers[i], "type"),
                std::string(is_union ? "union " : "struct ") + rname + " contains itself by value through field '" +
                    fields[i].name + "' (refer to it through {\"ptr\": ...})");
          in_progress_.erase(id);
          failed_.insert(id);
          return false;
        }
        if (!complete(fields[i].type)) { in_progress_.erase(id); failed_.insert(id); return false; }
        const TypeDesc& ft = reg_.get(fields[i].type);
        if (ft.has(flag_variable_size) && ft.kind != Kind::array) {
          error(pointer_join(site.field_pointers[i], "type"),
                "a struct with a flexible array member can only be the last member by pointer, not held by value");
          in_progress_.erase(id);
          failed_.insert(id);
          return false;
        }
        MemberShape s{ft.size, ft.align, ft.has(flag_variable_size)};
        variable = variable || s.flexible;
        blittable = blittable && ft.has(flag_blittable) && !fields[i].is_bitfield;
        shapes.push_back(s);
      }
      in_progress_.erase(id);
      TypeDesc& d = reg_.edit(id);
      RecordInfo& info = d.as<RecordInfo>();
      LayoutResult out;
      if (auto err = compute_layout(is_union, info.rule, info.pack, info.fields, shapes, out)) {
        std::string where = err->field < site.field_pointers.size() ? site.field_pointers[err->field] : site.pointer;
        error(err->key.empty() ? where : pointer_join(where, err->key), err->message);
        failed_.insert(id);
        return false;
      }
      d.size = out.size;
      d.align = out.align;
      d.flags |= flag_complete;
      if (blittable && info.size_field < 0 && !variable) d.flags |= flag_blittable;
      if (variable) d.flags |= flag_variable_size;
      return true;
    }
    case Kind::void_: case Kind::integer: case Kind::floating: case Kind::boolean: case Kind::pointer:
    case Kind::ptr: case Kind::string: case Kind::enum_: case Kind::handle: case Kind::callback:
    case Kind::interface:
      return false;  // these are complete when created; reaching here means they failed
  }
  return false;
}

void Loader::complete_all() {
  for (TypeId id : to_complete_) complete(id);
  for (auto& [name, n] : named_)
    if (n.id != no_type && failed_.count(n.id)) {
      n.state = Named::State::failed;
      tm_.types.erase(name);
    }
}

}  // namespace marshal::engine::detail
