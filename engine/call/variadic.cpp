// marshal engine: variadic arguments (see variadic.hpp).
#include "call/variadic.hpp"

#include "abi/abi.hpp"
#include "call/library.hpp"

#include <algorithm>
#include <cstring>

namespace marshal::engine {

namespace {

// The type T of {"type": T, ...}. Names are looked up directly (the common
// case, no lock); "string" or "utf8" (UTF-8, or /defaults/string when set)
// and "wchar" are this engine's shorthands (typemaps/README.md, Variadics).
// Everything else (objects, bool names, unknown names) is read as a type
// expression by the loader, so its rules and messages are the ones of a
// parameter's type.
TypeId resolve(Library& lib, const Value& type, std::string& error) {
  const Typemap& tm = lib.typemap();
  Context& ctx = lib.context();
  const TypeRegistry& reg = ctx.types();
  if (type.is<std::string>()) {
    const std::string& name = type.as<std::string>();
    if (name == "void") {
      error = "'void' is not a value type";
      return no_type;
    }
    if (TypeId t = reg.find_primitive(name); t != no_type) return t;
    if (TypeId t = tm.find_type(name); t != no_type) return t;
    if ((name == "string" && !tm.default_string) || name == "utf8") return ctx.string_type(Encoding::utf8);
    if (name == "wchar") return ctx.string_type(Encoding::wchar);
  }
  return ctx.variadic_type(tm, type.to_json(), error);
}

}  // namespace

bool variadic_to_native(Library& lib, Marshaler& m, Arena& arena, const Value& item, VariadicArg& out,
                        std::string& error) {
  const Value* type = item.field("type");
  const Value* value = item.field("value");
  if (!item.is<Record>() || !type || !value || item.as<Record>().size() != 2 ||
      !(type->is<std::string>() || type->is<Record>())) {
    error = "expected {\"type\": T, \"value\": V}, got " + item.describe();
    return false;
  }
  const TypeRegistry& reg = lib.context().types();
  const TypeId t = resolve(lib, *type, error);
  if (t == no_type) {
    if (error.empty()) error = "unknown type " + type->describe();
    return false;
  }
  const TypeDesc& d = reg.get(t);
  Ctx c;  // a variadic argument is `in` and not nullable: pass {"type": "pointer", "value": null} for NULL
  if (d.kind == Kind::array) {
    // As a parameter: a pointer to the first element (C's array decay).
    void* p = nullptr;
    if (value->is_null()) {
      error = "(" + reg.spell(t) + "): null is not allowed here (not nullable)";
      return false;
    }
    if (!m.array_to_native(t, *value, c, p)) {
      error = "(" + reg.spell(t) + "): " + m.error;
      return false;
    }
    out.slot = arena.alloc_zeroed(16, 16);
    std::memcpy(out.slot, &p, sizeof p);
    out.type = reg.pointer_type();
    out.ffi = &ffi_type_pointer;
    return true;
  }
  // C's default argument promotions (abi.cpp, promote_variadic): the value is
  // converted as its own type first, so names of enums and the range of
  // small types are checked as T, then widened as C widens it.
  const TypeId passed = promote_variadic(reg, t);
  const TypeDesc& pd = reg.get(passed);
  std::string why;
  out.ffi = lib.context().ffi().lower(reg, passed, why);
  if (!out.ffi) {
    error = why;
    return false;
  }
  // Zeroed and rounded up to 16 bytes: a struct split into eightbytes is read 8 at a time.
  out.slot = arena.alloc_zeroed((std::max<std::size_t>(pd.size, sizeof(void*)) + 15) & ~std::size_t{15}, 16);
  out.type = passed;
  if (passed == t) {
    if (!m.to_native(t, *value, out.slot, c)) {
      error = "(" + reg.spell(t) + "): " + m.error;
      return false;
    }
    return true;
  }
  alignas(16) std::byte narrow[16] = {};
  if (d.size > sizeof narrow || !m.to_native(t, *value, narrow, c)) {
    error = "(" + reg.spell(t) + "): " + m.error;
    return false;
  }
  if (d.kind == Kind::floating) {  // float to double
    float f;
    std::memcpy(&f, narrow, sizeof f);
    const double wide = f;
    std::memcpy(out.slot, &wide, sizeof wide);
    return true;
  }
  // bool, char, short and small enums to int.
  std::int64_t wide = 0;
  if (d.kind == Kind::boolean) wide = load_unsigned(narrow, d.size) != 0 ? d.as<BoolInfo>().true_value : 0;
  else if (d.has(flag_signed)) wide = load_signed(narrow, d.size);
  else wide = static_cast<std::int64_t>(load_unsigned(narrow, d.size));
  store_bits(out.slot, pd.size, static_cast<std::uint64_t>(wide));
  return true;
}

}  // namespace marshal::engine
