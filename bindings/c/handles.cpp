// marshal C API: the handle table (see handles.hpp).
// Slots live in one reserved range that is never unmapped, so a stale handle
// always reads a slot, never freed memory. Free slots are kept per thread (no lock when
// values are made and dropped call after call) and exchanged with a shared
// pool in batches.
#include "handles.hpp"

#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define MARSHAL_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/lsan_interface.h>
#define MARSHAL_LSAN 1
#endif
#endif

#include <algorithm>
#include <mutex>
#include <new>
#include <vector>

namespace marshal_c {

namespace {
// The slot range: max_slots if the address space allows, else a smaller one
// (a process limited by `ulimit -v`), else none (every new handle fails).
Handles::Table reserve() noexcept {
  for (std::size_t n = Handles::max_slots; n >= (std::size_t{1} << 16); n >>= 5) {
    void* p = mmap(nullptr, n * sizeof(Slot), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) return {static_cast<Slot*>(p), n};  // zero: every slot free, generation 0
  }
  return {nullptr, 0};
}
}  // namespace

const Handles::Table Handles::table_ = reserve();
thread_local PerThread* per_thread_state __attribute__((tls_model("initial-exec"))) = nullptr;

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::none: return "free";
    case Kind::context: return "context";
    case Kind::typemap: return "typemap";
    case Kind::library: return "library";
    case Kind::function: return "function";
    case Kind::result: return "result";
    case Kind::value: return "value";
    case Kind::signature: return "signature";
    case Kind::type: return "type";
  }
  return "?";
}

namespace {

struct Pool {
  std::mutex mutex;
  std::vector<std::uint32_t> free;
  std::size_t next = 0;  // the first index never handed out
};
// Never destroyed: threads may drop handles after main returns.
Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

constexpr std::size_t batch = 64;

// Set when this thread's state is gone (thread exit). A bool has no
// destructor, so it is readable until the thread ends.
thread_local bool per_thread_closed __attribute__((tls_model("initial-exec"))) = false;

// Gives this thread's state back when the thread exits: free slots to the
// pool, value blocks to the allocator.
struct PerThreadOwner {
  bool armed = false;
  ~PerThreadOwner() {
    PerThread* p = per_thread_state;
    per_thread_closed = true;
    per_thread_state = nullptr;
    if (!p) return;
    {
      Pool& pool_ = pool();
      std::lock_guard lock(pool_.mutex);
      try {
        pool_.free.insert(pool_.free.end(), p->free, p->free + p->nfree);
      } catch (...) {
        // Out of memory at thread exit: these slots are retired, never reused.
      }
    }
    while (p->nblocks) ::operator delete(p->blocks[--p->nblocks]);
    delete p;
  }
};
thread_local PerThreadOwner per_thread_owner;

// A fresh index from the pool (the caller holds its lock).
bool fresh(Pool& p, std::uint32_t& i, std::string& error) {
  if (p.next >= Handles::limit()) {
    error = Handles::limit() ? "too many handles: " + std::to_string(Handles::limit()) + " slots are in use or retired"
                             : std::string("no address space for the handle table");
    return false;
  }
#ifdef MARSHAL_LSAN
  // The range is an mmap, which LeakSanitizer does not scan: the objects of
  // live handles would look leaked. Each 4096 slots in use become a root.
  constexpr std::size_t step = 4096;
  if (p.next % step == 0)
    __lsan_register_root_region(Handles::slot(p.next), std::min(step, Handles::limit() - p.next) * sizeof(Slot));
#endif
  i = static_cast<std::uint32_t>(p.next++);
  return true;
}

bool take(std::uint32_t& i, std::string& error) {
  if (PerThread* t = per_thread()) {
    if (t->nfree) {
      i = t->free[--t->nfree];
      return true;
    }
    Pool& p = pool();
    std::lock_guard lock(p.mutex);
    while (t->nfree < batch && !p.free.empty()) {
      t->free[t->nfree++] = p.free.back();
      p.free.pop_back();
    }
    while (t->nfree < batch) {
      std::uint32_t f;
      if (!fresh(p, f, error)) break;
      t->free[t->nfree++] = f;
    }
    if (!t->nfree) return false;
    i = t->free[--t->nfree];
    return true;
  }
  Pool& p = pool();
  std::lock_guard lock(p.mutex);
  if (!p.free.empty()) {
    i = p.free.back();
    p.free.pop_back();
    return true;
  }
  return fresh(p, i, error);
}

void give(std::uint32_t i) noexcept {
  if (PerThread* t = per_thread()) {
    if (t->nfree == PerThread::max_free) {
      Pool& p = pool();
      std::lock_guard lock(p.mutex);
      try {
        p.free.insert(p.free.end(), t->free + PerThread::max_free / 2, t->free + PerThread::max_free);
        t->nfree = PerThread::max_free / 2;
      } catch (...) {
        return;  // out of memory: this slot is retired
      }
    }
    t->free[t->nfree++] = i;
    return;
  }
  Pool& p = pool();
  std::lock_guard lock(p.mutex);
  try {
    p.free.push_back(i);
  } catch (...) {
    // retired
  }
}

}  // namespace

PerThread* make_per_thread() noexcept {
  if (per_thread_closed) return nullptr;
  auto* p = new (std::nothrow) PerThread;
  if (!p) return nullptr;
  per_thread_owner.armed = true;  // its first use registers its destructor for this thread's exit
  per_thread_state = p;
  return p;
}

Bits Handles::add(Kind k, void* object, std::uint32_t refs, std::string& error) {
  std::uint32_t i;
  if (!take(i, error)) return 0;
  Slot& s = *slot(i);
  // A free slot's state is its next generation with kind none and no references.
  const std::uint64_t tag = (s.state.load(std::memory_order_relaxed) >> 32) | static_cast<std::uint64_t>(k);
  s.object.store(object, std::memory_order_relaxed);
  s.state.store(tag << 32 | refs, std::memory_order_release);
  return tag << 32 | i;
}

bool Handles::retain(Bits h, bool& full) noexcept {
  full = false;
  Slot* s = slot(h);
  if (!s || kind_of(h) == Kind::none) return false;
  std::uint64_t st = s->state.load(std::memory_order_acquire);
  for (;;) {
    if ((st >> 32) != (h >> 32)) return false;
    if (static_cast<std::uint32_t>(st) == UINT32_MAX) {
      full = true;
      return false;
    }
    if (s->state.compare_exchange_weak(st, st + 1, std::memory_order_acq_rel, std::memory_order_acquire)) return true;
  }
}

void Handles::recycle(Bits h) noexcept {
  // At the last generation the slot is retired: reusing it would make its
  // oldest handles match again.
  if (generation_of(h) >= max_generation) return;
  give(static_cast<std::uint32_t>(h & 0xffffffffu));
}

bool Handles::stale(const void* p, Kind expected) noexcept {
  const Bits h = bits_of(p);
  if (!p || kind_of(h) != expected) return false;
  Slot* s = slot(h);
  if (!s) return false;
  const std::uint64_t st = s->state.load(std::memory_order_acquire);
  const std::uint32_t now = static_cast<std::uint32_t>(st >> gen_shift);
  return generation_of(h) < now || (generation_of(h) == now && kind_of(st) == Kind::none);
}

std::string Handles::diagnose(const void* p, Kind expected, bool releasing) {
  const Bits h = bits_of(p);
  const Kind k = kind_of(h);
  const std::string want = kind_name(expected);
  if (k == Kind::none || k > last_kind) return "not a " + want + " handle (not made by this API, or corrupted)";
  if (k != expected) return "the handle is a " + std::string(kind_name(k)) + " handle, not a " + want + " handle";
  Slot* s = slot(h);
  if (!s) return "not a " + want + " handle (not made by this API, or corrupted)";
  const std::uint64_t st = s->state.load(std::memory_order_acquire);
  const std::uint32_t now = static_cast<std::uint32_t>(st >> gen_shift);
  const bool stale = generation_of(h) < now || (generation_of(h) == now && kind_of(st) == Kind::none);
  if (!stale) {
    if ((st >> 32) == (h >> 32)) return want + " handle was released while this call checked it (another thread)";
    return "not a " + want + " handle (not made by this API, or corrupted)";
  }
  switch (expected) {
    case Kind::typemap: return "typemap handle used after its context was released";
    case Kind::function: return "function handle used after its library was released";
    case Kind::signature: return "signature handle used after its library was released";
    case Kind::type: return "type handle used after its library was released";
    case Kind::value:
      return releasing ? "value handle already released"
                       : "value handle used after release (a borrowed value goes with its list, record or result)";
    case Kind::none: case Kind::context: case Kind::library: case Kind::result: break;
  }
  return want + (releasing ? " handle already released" : " handle used after release");
}

}  // namespace marshal_c
