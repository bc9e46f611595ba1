// marshal C API: generation-checked handles.
// A handle the host holds is not a pointer but a slot index and the slot's
// generation; every entry point checks it against the slot with one load and
// one compare, so a released, stale, foreign or made-up handle is an error
// with a message instead of undefined behaviour.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace marshal_c {

// What a handle names. `none` marks a free slot (no handle ever names it).
enum class Kind : std::uint8_t { none = 0, context, typemap, library, function, result, value, signature, type };
constexpr Kind last_kind = Kind::type;
const char* kind_name(Kind k);

// A handle's bits (what the host holds, cast to its opaque pointer type):
//   bits  0..31  slot index
//   bits 32..35  kind
//   bits 36..63  the slot's generation when the handle was made
// The high 32 bits are the tag. A slot's state is its current tag and its
// reference count; freeing a slot moves its generation on, so every handle
// made before no longer matches. A slot whose generation would wrap is
// retired instead of reused: a stale handle never becomes valid again.
using Bits = std::uint64_t;
static_assert(sizeof(void*) == 8, "handles need 64-bit pointers (index and generation share one)");

constexpr unsigned kind_shift = 32;
constexpr unsigned gen_shift = 36;
constexpr std::uint32_t max_generation = (1u << 28) - 1;
inline Kind kind_of(Bits h) { return static_cast<Kind>((h >> kind_shift) & 0xf); }
inline std::uint32_t generation_of(Bits h) { return static_cast<std::uint32_t>(h >> gen_shift); }

struct Slot {
  std::atomic<std::uint64_t> state{0};  // tag << 32 | references
  std::atomic<void*> object{nullptr};   // atomic: a stale reader racing a reuse reads a word, not torn memory
};

class Handles {
 public:
  // Slots live in one address range reserved at load (MAP_NORESERVE: pages
  // are made as handles reach them), never unmapped: a stale or made-up
  // handle below the limit reads a slot (zero, or another generation).
  static constexpr std::size_t max_slots = std::size_t{1} << 26;
  struct Table {
    Slot* base;
    std::size_t limit;
  };

  // The slot a handle's index names, or nullptr past the reserved range.
  [[gnu::always_inline]] static Slot* slot(Bits h) noexcept {
    const std::uint64_t i = h & 0xffffffffu;
    if (i >= table_.limit) return nullptr;
    return table_.base + i;
  }

  // The object of a live handle of kind k, or nullptr (NULL, released, stale,
  // another kind, or not a handle at all). The hot path: one load, one compare.
  [[gnu::always_inline]] static void* find(const void* p, Kind k) noexcept {
    std::uint32_t refs;
    return find(p, k, refs);
  }
  // The same, with the references the handle has now.
  [[gnu::always_inline]] static void* find(const void* p, Kind k, std::uint32_t& refs) noexcept {
    const Bits h = reinterpret_cast<std::uintptr_t>(p);
    if (kind_of(h) != k) return nullptr;  // also NULL: its kind is none
    Slot* s = slot(h);
    if (!s) return nullptr;
    const std::uint64_t st = s->state.load(std::memory_order_acquire);
    if ((st >> 32) != (h >> 32)) return nullptr;
    refs = static_cast<std::uint32_t>(st);
    return s->object.load(std::memory_order_relaxed);
  }

  // A new handle of kind k for object with `refs` references; 0 when no slot
  // is left (the message is in `error`).
  static Bits add(Kind k, void* object, std::uint32_t refs, std::string& error);
  // How many slots the reserved range holds (0: none could be reserved).
  static std::size_t limit() noexcept { return table_.limit; }

  // Adds one reference to a live handle; false when it is not live or its
  // count is full (`full` says which).
  static bool retain(Bits h, bool& full) noexcept;

  // What drop() does with a last reference: free the slot, refuse (nothing
  // changes), or defer (the handle dies now, the object stays for the caller
  // to destroy later: it is still in use).
  enum class Last { free, refuse, defer };
  enum class Drop { invalid, kept, last, refused, deferred };
  // Drops one reference of a live handle of kind k. `last(object)` decides
  // what happens to a last reference. On Drop::last and Drop::deferred the
  // handle no longer matches and `object` is set: the caller destroys it,
  // then calls recycle().
  template <class LastRef>
  static Drop drop(Bits h, Kind k, void*& object, LastRef&& last) noexcept {
    if (kind_of(h) != k) return Drop::invalid;
    Slot* s = slot(h);
    if (!s) return Drop::invalid;
    std::uint64_t st = s->state.load(std::memory_order_acquire);
    for (;;) {
      if ((st >> 32) != (h >> 32)) return Drop::invalid;
      const std::uint32_t refs = static_cast<std::uint32_t>(st);
      if (refs != 1) {
        if (s->state.compare_exchange_weak(st, st - 1, std::memory_order_acq_rel, std::memory_order_acquire))
          return Drop::kept;
        continue;
      }
      // The last reference: claimed first (kind none at the same generation:
      // dead to every other use of the handle), so that no other thread can
      // drop and destroy the object while last() looks at it (two threads
      // releasing one last reference: ASan saw the loser read the freed
      // object). Deferred: it stays so (not free to reuse); freed: the next
      // generation; refused: back as it was.
      const std::uint64_t claimed = (st >> gen_shift) << gen_shift;
      if (!s->state.compare_exchange_weak(st, claimed, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      object = s->object.load(std::memory_order_relaxed);
      const Last what = last(object);
      if (what == Last::refuse) {
        object = nullptr;
        s->state.store(st, std::memory_order_release);
        return Drop::refused;
      }
      if (what == Last::defer) return Drop::deferred;
      s->state.store(freed_state(st), std::memory_order_release);
      return Drop::last;
    }
  }

  // Ends a handle that has no reference count (a typemap, a function) with
  // its owner, and gives its slot back.
  static void kill(Bits h) noexcept {
    Slot* s = slot(h);
    if (!s) return;
    s->state.store(freed_state(s->state.load(std::memory_order_relaxed)), std::memory_order_release);
    recycle(h);
  }

  // References a live handle has now (0 when it is not live).
  static std::uint32_t refs(Bits h) noexcept {
    Slot* s = slot(h);
    if (!s) return 0;
    const std::uint64_t st = s->state.load(std::memory_order_acquire);
    return (st >> 32) == (h >> 32) ? static_cast<std::uint32_t>(st) : 0;
  }

  // Gives a slot back for reuse once its object is destroyed. A deferred
  // slot moves to its next generation here.
  static void finish(Bits h) noexcept {
    Slot* s = slot(h);
    if (s) s->state.store(freed_state(s->state.load(std::memory_order_relaxed)), std::memory_order_release);
    recycle(h);
  }
  // Gives a slot freed by drop() back for reuse (its object is destroyed).
  static void recycle(Bits h) noexcept;

  // Whether a handle find() refused is of kind `expected` and was released
  // (or its owner was): stale, not made up.
  static bool stale(const void* p, Kind expected) noexcept;

  // What is wrong with a handle find() refused, for messages: "result handle
  // already released", "the handle is a value handle, not a result handle"...
  static std::string diagnose(const void* p, Kind expected, bool releasing);

 private:
  // Kind none, no references, the next generation (a slot at the last one
  // stays there and is retired by recycle()).
  static std::uint64_t freed_state(std::uint64_t st) {
    std::uint64_t gen = st >> gen_shift;
    if (gen < max_generation) ++gen;
    return gen << gen_shift;
  }
  static const Table table_;
};

// ---- per-thread state ----
// What each thread keeps for the hot paths (free slots, freed value blocks),
// reached through one pointer with the initial-exec TLS model: a plain load,
// no __tls_get_addr call per API call. Only pointer-sized words are
// initial-exec, so the library still fits the static TLS room glibc keeps
// for dlopen.
struct PerThread {
  static constexpr std::size_t max_free = 256;
  static constexpr std::size_t max_blocks = 64;
  std::size_t nfree = 0;
  std::uint32_t free[max_free];
  std::size_t nblocks = 0;
  void* blocks[max_blocks];
};
extern thread_local PerThread* per_thread_state __attribute__((tls_model("initial-exec")));
// Makes this thread's state; nullptr once the thread is exiting (or out of
// memory): callers then use the shared pool and the allocator.
PerThread* make_per_thread() noexcept;
inline PerThread* per_thread() noexcept {
  PerThread* p = per_thread_state;
  return p ? p : make_per_thread();
}

// The C++ object behind each kind of handle (defined by the C API).
template <class T> struct kind_for;

template <class T> [[gnu::always_inline]] inline T* find(const void* p) {
  return static_cast<T*>(Handles::find(p, kind_for<T>::value));
}

template <class H> H* to_handle(Bits b) { return reinterpret_cast<H*>(static_cast<std::uintptr_t>(b)); }
inline Bits bits_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

}  // namespace marshal_c
