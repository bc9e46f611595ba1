// marshal engine: host-owned native memory.
#include "convert/native.hpp"

#include "base/arena.hpp"
#include "convert/convert.hpp"

#include <cstring>
#include <stdexcept>

namespace marshal::engine {

std::shared_ptr<NativeBox> native_new(const TypeRegistry& reg, TypeId type, std::size_t count, std::size_t max_bytes,
                                      std::string& error) {
  std::size_t size = 0;
  if (!checked_mul(count, reg.get(type).size, size) || size > max_bytes) {
    error = "native memory of " + std::to_string(count) + " " + reg.spell(type) + " values of " +
            std::to_string(reg.get(type).size) + " bytes is larger than the limit of " + std::to_string(max_bytes) + " bytes";
    return nullptr;
  }
  auto box = std::make_shared<NativeBox>();
  box->type = type;
  box->count = count;
  box->size = size;
  box->storage = std::make_unique<std::byte[]>(size ? size : 1);  // value-initialized: zeroed
  return box;
}

std::shared_ptr<NativeBox> native_new(const TypeRegistry& reg, TypeId type, std::size_t count) {
  std::string error;
  auto box = native_new(reg, type, count, SIZE_MAX, error);
  if (!box) throw std::length_error(error);
  return box;
}

namespace {

// Memory that pointer fields written into the box point to lives as long as the box.
Arena& box_arena(NativeBox& box) {
  auto arena = std::make_shared<Arena>();
  box.keep_alive.push_back(arena);
  return *arena;
}

const Field* find_field(const TypeRegistry& reg, const NativeBox& box, const std::string& name, std::string& error) {
  const TypeDesc& d = reg.get(box.type);
  if (d.kind != Kind::struct_ && d.kind != Kind::union_) {
    error = reg.spell(box.type) + " has no fields";
    return nullptr;
  }
  for (const Field& f : d.as<RecordInfo>().fields)
    if (f.name == name && !f.is_bitfield) return &f;
  error = "no field '" + name + "' in " + reg.spell(box.type) + " (bitfields are read and written with the whole record)";
  return nullptr;
}

}  // namespace

bool native_store(const TypeRegistry& reg, NativeBox& box, const Value& v, std::string& error) {
  Marshaler m(reg, box_arena(box), nullptr);
  m.lend(box.data(), box.size);  // a flexible array member is written within the box, or refused
  const TypeDesc& d = reg.get(box.type);
  Ctx c;
  if (box.count == 1) {
    if (!m.to_native(box.type, v, box.data(), c)) { error = m.error; return false; }
    return true;
  }
  if (v.is<Bytes>() && d.kind == Kind::integer && d.size == 1) {
    if (v.as<Bytes>().data.size() > box.count) {
      error = std::to_string(v.as<Bytes>().data.size()) + " bytes do not fit in " + std::to_string(box.count);
      return false;
    }
    if (!v.as<Bytes>().data.empty()) std::memcpy(box.data(), v.as<Bytes>().data.data(), v.as<Bytes>().data.size());
    return true;
  }
  if (!v.is<List>() || v.as<List>().size() > box.count) {
    error = "expected a list of at most " + std::to_string(box.count) + " elements, got " + v.describe();
    return false;
  }
  for (std::size_t i = 0; i < v.as<List>().size(); ++i)
    if (!m.to_native(box.type, v.as<List>()[i], static_cast<std::byte*>(box.data()) + i * d.size, c)) {
      error = "element " + std::to_string(i) + ": " + m.error;
      return false;
    }
  return true;
}

bool native_load(const TypeRegistry& reg, const NativeBox& box, Value& out, std::string& error) {
  Arena scratch;
  Marshaler m(reg, scratch, nullptr);
  m.lend(box.data(), box.size);  // counts in the box are read within it
  const TypeDesc& d = reg.get(box.type);
  Ctx c;
  if (box.count == 1) {
    if (!m.to_host(box.type, box.data(), out, c)) { error = m.error; return false; }
    return true;
  }
  if (d.kind == Kind::integer && d.size == 1 && !d.has(flag_signed)) {
    const auto* p = static_cast<const std::uint8_t*>(box.data());
    out = Value(Bytes{std::vector<std::uint8_t>(p, p + box.count)});
    return true;
  }
  List items;
  for (std::size_t i = 0; i < box.count; ++i) {
    Value item;
    if (!m.to_host(box.type, static_cast<const std::byte*>(box.data()) + i * d.size, item, c)) {
      error = "element " + std::to_string(i) + ": " + m.error;
      return false;
    }
    items.push_back(std::move(item));
  }
  out = Value(std::move(items));
  return true;
}

bool native_set(const TypeRegistry& reg, NativeBox& box, const std::string& field, const Value& v, std::string& error) {
  const Field* f = find_field(reg, box, field, error);
  if (!f) return false;
  Marshaler m(reg, box_arena(box), nullptr);
  m.lend(box.data(), box.size);
  Ctx c;
  c.nullable = f->nullable;
  if (!m.to_native(f->type, v, static_cast<std::byte*>(box.data()) + f->offset, c)) {
    error = "field '" + field + "': " + m.error;
    return false;
  }
  return true;
}

bool native_get(const TypeRegistry& reg, const NativeBox& box, const std::string& field, Value& out, std::string& error) {
  const Field* f = find_field(reg, box, field, error);
  if (!f) return false;
  Arena scratch;
  Marshaler m(reg, scratch, nullptr);
  m.lend(box.data(), box.size);
  Ctx c;
  c.rec = &reg.get(box.type).as<RecordInfo>();
  c.native_rec = static_cast<const std::byte*>(box.data());
  if (!m.to_host(f->type, static_cast<const std::byte*>(box.data()) + f->offset, out, c)) {
    error = "field '" + field + "': " + m.error;
    return false;
  }
  return true;
}

}  // namespace marshal::engine
