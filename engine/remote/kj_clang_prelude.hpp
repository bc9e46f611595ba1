// Cap'n Proto 0.9.2 (Debian 12) under clang >= 16 in C++20: kj/string.h drops
// `const char* == StringPtr` when the compiler has three-way comparison, and
// capnp/blob.h's `a == b.asString()` then fails to compile with clang (gcc
// accepts the rewritten candidate). Put back for clang only (the fuzz build),
// before any capnp header (`-include`, engine/remote/meson.build).
#pragma once

#include <kj/string.h>

#if defined(__clang__) && __cpp_impl_three_way_comparison
namespace kj {
inline bool operator==(const char* a, const StringPtr& b) { return b == StringPtr(a); }
inline bool operator!=(const char* a, const StringPtr& b) { return !(b == StringPtr(a)); }
}  // namespace kj
#endif
