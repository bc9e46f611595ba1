// marshal engine: per-call scratch memory.
// A bump arena with an inline buffer; calls whose scratch fits never allocate,
// larger ones fall back to heap blocks. Everything is released in one step.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

namespace marshal {

class Arena {
 public:
  Arena() : cur_(inline_), cap_(sizeof inline_) {}
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Uninitialized storage of `size` bytes aligned to `align` (a power of two).
  void* alloc(std::size_t size, std::size_t align = alignof(std::max_align_t)) {
    std::size_t at = (used_ + align - 1) & ~(align - 1);
    if (at + size > cap_) return grow(size, align);
    used_ = at + size;
    return cur_ + at;
  }
  void* alloc_zeroed(std::size_t size, std::size_t align = alignof(std::max_align_t)) {
    void* p = alloc(size, align);
    std::memset(p, 0, size);
    return p;
  }
  bool used_heap() const { return !blocks_.empty(); }

 private:
  void* grow(std::size_t size, std::size_t align) {
    std::size_t cap = size + align > 64 * 1024 ? size + align : 64 * 1024;
    blocks_.push_back(std::make_unique<std::byte[]>(cap));
    cur_ = blocks_.back().get();
    cap_ = cap;
    used_ = 0;
    return alloc(size, align);
  }
  alignas(16) std::byte inline_[2048];
  std::byte* cur_;
  std::size_t cap_;
  std::size_t used_ = 0;
  std::vector<std::unique_ptr<std::byte[]>> blocks_;
};

}  // namespace marshal
