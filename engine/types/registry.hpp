// marshal engine: the type registry.
// Stores descriptors in stable chunks so a TypeId stays valid (and readable from
// any thread) while further typemaps are loaded; structural types are interned.
#pragma once

#include "types/type_desc.hpp"

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace marshal::engine {

class TypeRegistry {
 public:
  TypeRegistry();
  TypeRegistry(const TypeRegistry&) = delete;
  TypeRegistry& operator=(const TypeRegistry&) = delete;
  ~TypeRegistry();

  // Reading: any thread, any time, for ids already handed out.
  const TypeDesc& get(TypeId id) const {  // inline: on every conversion's path
    if (id >= count_.load(std::memory_order_acquire)) bad_id();
    return chunks_[id >> chunk_bits].load(std::memory_order_acquire)[id & (chunk_size - 1)];
  }
  TypeId primitive(Prim p) const { return prim_ids_[static_cast<std::size_t>(p)]; }
  TypeId void_type() const { return void_id_; }
  TypeId pointer_type() const { return pointer_id_; }
  TypeId find_primitive(std::string_view spelling) const;  // no_type if not one
  std::size_t size() const { return count_.load(std::memory_order_acquire); }

  // A human spelling of any type: its name, or e.g. ptr<int32>, string<utf16>.
  std::string spell(TypeId id) const;

  // Writing (loaders only; serialized by the caller's load lock).
  TypeId add(TypeDesc d);                          // a new nominal type
  TypeId intern(const std::string& key, TypeDesc d);  // a structural type, deduplicated
  TypeDesc& edit(TypeId id);                       // before the type is complete

 private:
  [[noreturn]] static void bad_id();
  static constexpr std::size_t chunk_bits = 8;
  static constexpr std::size_t chunk_size = std::size_t{1} << chunk_bits;
  static constexpr std::size_t max_chunks = 1 << 14;  // 4M descriptors
  std::array<std::atomic<TypeDesc*>, max_chunks> chunks_{};
  std::atomic<std::size_t> count_{0};
  std::unordered_map<std::string, TypeId> interned_;
  std::array<TypeId, 64> prim_ids_{};
  TypeId void_id_ = no_type;
  TypeId pointer_id_ = no_type;
};

}  // namespace marshal::engine
