// marshal engine: the type registry, which interns descriptors and spells them.
#include "types/registry.hpp"

#include <cstddef>
#include <stdexcept>
#include <type_traits>

namespace marshal::engine {

namespace {
// The alignment a type gets as a struct member (differs from alignof on some ABIs).
template <class T> struct AlignProbe { char c; T t; };
template <class T> constexpr std::uint32_t member_align() { return offsetof(AlignProbe<T>, t); }
}  // namespace

TypeRegistry::TypeRegistry() {
  // Id 0 is reserved for no_type; give it an inert descriptor.
  add(TypeDesc{});
  TypeDesc v;
  v.kind = Kind::void_;
  v.name = "void";
  v.flags = flag_complete;
  void_id_ = add(std::move(v));
  TypeDesc ptr;
  ptr.kind = Kind::pointer;
  ptr.name = "pointer";
  ptr.size = sizeof(void*);
  ptr.align = member_align<void*>();
  ptr.flags = flag_complete | flag_blittable;
  pointer_id_ = add(std::move(ptr));
#define MARSHAL_PRIM_ADD(id, spelling, k, ctype)                                    \
  {                                                                                 \
    TypeDesc d;                                                                     \
    d.kind = Kind::k;                                                               \
    d.prim = Prim::id;                                                              \
    d.name = spelling;                                                              \
    d.size = sizeof(ctype);                                                         \
    d.align = member_align<ctype>();                                                \
    d.flags = flag_complete | flag_blittable |                                      \
              (std::is_signed_v<ctype> ? flag_signed : 0);                          \
    prim_ids_[static_cast<std::size_t>(Prim::id)] = add(std::move(d));             \
  }
  MARSHAL_PRIMITIVES(MARSHAL_PRIM_ADD)
#undef MARSHAL_PRIM_ADD
  static_assert(static_cast<std::size_t>(Prim::c_double) < 64);
}

TypeRegistry::~TypeRegistry() {
  for (auto& c : chunks_) delete[] c.load(std::memory_order_relaxed);
}

void TypeRegistry::bad_id() { throw std::out_of_range("marshal: bad TypeId"); }

TypeDesc& TypeRegistry::edit(TypeId id) { return const_cast<TypeDesc&>(get(id)); }

TypeId TypeRegistry::find_primitive(std::string_view spelling) const {
  if (spelling == "void") return void_id_;
  if (spelling == "pointer") return pointer_id_;
#define MARSHAL_PRIM_FIND(id, sp, k, ctype) \
  if (spelling == sp) return prim_ids_[static_cast<std::size_t>(Prim::id)];
  MARSHAL_PRIMITIVES(MARSHAL_PRIM_FIND)
#undef MARSHAL_PRIM_FIND
  return no_type;
}

TypeId TypeRegistry::add(TypeDesc d) {
  std::size_t id = count_.load(std::memory_order_relaxed);
  std::size_t chunk = id >> chunk_bits;
  if (chunk >= max_chunks) throw std::length_error("marshal: type registry is full");
  TypeDesc* block = chunks_[chunk].load(std::memory_order_relaxed);
  if (block == nullptr) {
    block = new TypeDesc[chunk_size];
    chunks_[chunk].store(block, std::memory_order_release);
  }
  block[id & (chunk_size - 1)] = std::move(d);
  count_.store(id + 1, std::memory_order_release);
  return static_cast<TypeId>(id);
}

TypeId TypeRegistry::intern(const std::string& key, TypeDesc d) {
  if (auto it = interned_.find(key); it != interned_.end()) return it->second;
  TypeId id = add(std::move(d));
  interned_.emplace(key, id);
  return id;
}

std::string TypeRegistry::spell(TypeId id) const {
  if (id == no_type) return "<invalid>";
  const TypeDesc& d = get(id);
  if (!d.name.empty()) return d.name;
  switch (d.kind) {
    case Kind::ptr: return "ptr<" + spell(d.ref) + ">";
    case Kind::array: {
      const auto& a = d.as<ArrayInfo>();
      std::string s = "array<" + spell(d.ref) + ">";
      if (a.count.source == Count::Source::constant) s += "[" + std::to_string(a.count.constant) + "]";
      return s;
    }
    case Kind::string: return "string<" + std::string(encoding_name(d.as<StringInfo>().encoding)) + ">";
    case Kind::boolean: return "bool" + std::to_string(d.size * 8);
    case Kind::struct_: return "struct";
    case Kind::union_: return "union";
    case Kind::callback: return "callback";
    case Kind::interface: return "interface";
    case Kind::handle: return "handle";
    case Kind::enum_: return "enum";
    case Kind::void_: case Kind::integer: case Kind::floating: case Kind::pointer:
      return std::string(kind_name(d.kind));
  }
  return "?";
}

}  // namespace marshal::engine
