// marshal engine: host-owned native memory.
// A NativeBox holds `count` values of a type in zeroed native memory that the
// host owns (like a ctypes instance or cffi's ffi.new). Passed to a ptr
// parameter of its type, or to a `pointer`, it goes by address, without a copy,
// so a library may keep the address across calls (zlib's z_stream).
#pragma once

#include "types/registry.hpp"
#include "values/value.hpp"

#include <memory>
#include <string>

namespace marshal::engine {

// count values of type, zeroed; nullptr with a message when count times the
// type's size overflows or exceeds max_bytes (bounds.hpp), before allocating.
std::shared_ptr<NativeBox> native_new(const TypeRegistry& reg, TypeId type, std::size_t count, std::size_t max_bytes,
                                      std::string& error);
// The same without a limit: an overflowing size throws std::length_error
// (never a small box that claims many elements).
std::shared_ptr<NativeBox> native_new(const TypeRegistry& reg, TypeId type, std::size_t count = 1);

// The whole value: a record for a struct, a list (bytes for uint8) when count > 1.
bool native_store(const TypeRegistry& reg, NativeBox& box, const Value& v, std::string& error);
bool native_load(const TypeRegistry& reg, const NativeBox& box, Value& out, std::string& error);

// One field of a struct box.
bool native_set(const TypeRegistry& reg, NativeBox& box, const std::string& field, const Value& v, std::string& error);
bool native_get(const TypeRegistry& reg, const NativeBox& box, const std::string& field, Value& out, std::string& error);

}  // namespace marshal::engine
