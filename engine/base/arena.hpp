// marshal engine: per-call scratch memory.
// A bump arena with an inline buffer; calls whose scratch fits never allocate,
// larger ones fall back to heap blocks. Everything is released in one step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

namespace marshal::engine {

class GuardPages;

class Arena {
 public:
  Arena() : cur_(inline_), cap_(sizeof inline_) {}
  ~Arena() {
    // Keep one standard block for this thread's next call (large arrays and
    // strings then cost no allocation call after call).
    for (auto& b : blocks_)
      if (b.size == block_size && !spare()) {
        spare() = std::move(b.mem);
        break;
      }
  }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Uninitialized storage of `size` bytes aligned to `align` (a power of two).
  // A size that cannot be allocated throws std::bad_alloc; callers bound sizes
  // from host counts first (bounds.hpp), so that is an internal failure only.
  void* alloc(std::size_t size, std::size_t align = alignof(std::max_align_t)) {
    if (guard_) [[unlikely]] return guarded(size, align);
    std::size_t at = (used_ + align - 1) & ~(align - 1);
    // Written so that nothing wraps: `at + size > cap_` is false for a size
    // near SIZE_MAX and would hand out a few bytes for a huge request.
    if (at > cap_ || size > cap_ - at) return grow(size, align);
    used_ = at + size;
    return cur_ + at;
  }
  void* alloc_zeroed(std::size_t size, std::size_t align = alignof(std::max_align_t)) {
    void* p = alloc(size, align);
    std::memset(p, 0, size);
    return p;
  }
  bool used_heap() const { return !blocks_.empty(); }
  // Guard mode (guard.hpp): every allocation from now on gets its own mapping
  // against a guard page.
  void guard(GuardPages* pages) { guard_ = pages; }
  GuardPages* guard_pages() const { return guard_; }

 private:
  static constexpr std::size_t block_size = 64 * 1024;
  struct Block {
    std::unique_ptr<std::byte[]> mem;
    std::size_t size;
  };
  static std::unique_ptr<std::byte[]>& spare() {
    static thread_local std::unique_ptr<std::byte[]> block;
    return block;
  }
  void* grow(std::size_t size, std::size_t align) {
    if (size > SIZE_MAX - align) throw std::bad_alloc();
    std::size_t cap = size + align > block_size ? size + align : block_size;
    if (cap == block_size && spare()) blocks_.push_back({std::move(spare()), cap});
    else blocks_.push_back({std::make_unique_for_overwrite<std::byte[]>(cap), cap});  // alloc_zeroed zeroes what it hands out
    cur_ = blocks_.back().mem.get();
    cap_ = cap;
    used_ = 0;
    return alloc(size, align);
  }
  alignas(16) std::byte inline_[2048];
  std::byte* cur_;
  std::size_t cap_;
  std::size_t used_ = 0;
  std::vector<Block> blocks_;
  GuardPages* guard_ = nullptr;
  void* guarded(std::size_t size, std::size_t align);  // guard.cpp
};

}  // namespace marshal::engine
