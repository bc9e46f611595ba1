// marshal engine: size arithmetic and buffer limits.
// Every byte count computed from a count that the host or native code gives
// goes through here: a product or sum that does not fit size_t is refused,
// never wrapped to a small number, and a buffer larger than the library's
// limit (typemap "library": {"max_buffer": N}) is refused before anything is
// allocated, zeroed or read.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace marshal::engine {

// The default largest buffer the engine allocates, copies or reads for one
// array, string or struct (TYPEMAP extension "max_buffer", typemaps/README.md).
inline constexpr std::size_t default_max_buffer = std::size_t{256} << 20;

// How deeply host values and pointer chains may nest: JSON arguments,
// Value::from_json, and native data read through pointers (a cycle in native
// data ends here instead of in a stack overflow).
inline constexpr std::size_t max_value_depth = 256;

// n * unit, or false when it does not fit.
inline bool checked_mul(std::uint64_t n, std::uint64_t unit, std::size_t& out) {
  std::uint64_t r;
  if (__builtin_mul_overflow(n, unit, &r) || r > SIZE_MAX) return false;
  out = static_cast<std::size_t>(r);
  return true;
}

// a + b, or false when it does not fit.
inline bool checked_add(std::size_t a, std::size_t b, std::size_t& out) { return !__builtin_add_overflow(a, b, &out); }

// The buffers one call lent to native code (arena copies, out buffers, pinned
// host memory): what native code reports afterwards (a length, a count field,
// a missing terminator) is read only within the buffer it was given. Memory
// that native code owns is not known here; reads of it are bounded by the
// buffer limit only.
class LentBuffers {
 public:
  void add(const void* p, std::size_t size) {
    if (!p || !size) return;
    const Lent l{reinterpret_cast<std::uintptr_t>(p), size};
    if (n_ < std::size(small_) && all_.empty()) {
      small_[n_++] = l;
      return;
    }
    if (all_.empty()) all_.assign(small_, small_ + n_);
    all_.push_back(l);
    sorted_ = false;
  }
  // Bytes from p to the end of the lent buffer holding p (0 at its very end,
  // where a flexible array member of a struct sized without it begins);
  // SIZE_MAX when p is in none of them.
  std::size_t room(const void* p) {
    const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p);
    if (all_.empty()) {
      std::size_t at_end = SIZE_MAX;
      for (std::size_t i = 0; i < n_; ++i) {
        if (a < small_[i].begin) continue;
        if (a - small_[i].begin < small_[i].size) return small_[i].size - (a - small_[i].begin);
        if (a - small_[i].begin == small_[i].size) at_end = 0;
      }
      return at_end;
    }
    if (!sorted_) {  // many buffers (lists of strings): sorted once, then searched
      std::sort(all_.begin(), all_.end(), [](const Lent& x, const Lent& y) { return x.begin < y.begin; });
      sorted_ = true;
    }
    auto it = std::upper_bound(all_.begin(), all_.end(), a, [](std::uintptr_t x, const Lent& l) { return x < l.begin; });
    // Buffers do not overlap, except the same pinned memory lent twice: the
    // nearest start at or below p decides.
    if (it == all_.begin()) return SIZE_MAX;
    --it;
    if (a - it->begin <= it->size) return it->size - (a - it->begin);
    return SIZE_MAX;
  }

 private:
  struct Lent {
    std::uintptr_t begin;
    std::size_t size;
  };
  Lent small_[8];
  std::size_t n_ = 0;
  std::vector<Lent> all_;
  bool sorted_ = true;
};

}  // namespace marshal::engine
