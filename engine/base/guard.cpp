// marshal engine: guard mode (see guard.hpp).
// Mappings are published in a fixed table that the fault handler scans without
// locks or allocation (async-signal-safe): a slot is claimed with a
// compare-exchange, filled, then made visible with a release store.
#include "base/guard.hpp"

#include "base/arena.hpp"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

namespace marshal::engine {

namespace {

constexpr int table_size = 4096;

struct Entry {
  std::atomic<int> state{0};  // 0 free, 1 being filled or emptied, 2 live
  std::uintptr_t guard = 0;   // the PROT_NONE page
  std::uintptr_t start = 0;   // the buffer handed out
  std::uintptr_t base = 0;    // the first data page
  std::atomic<bool> read_only{false};  // the data pages are PROT_READ (protect)
  std::size_t size = 0;
  int index = -1;
  char function[96] = {};
  char param[96] = {};
};

Entry table[table_size];
std::atomic<std::size_t> live{0};
struct sigaction previous_segv, previous_bus;

std::size_t page_size() {
  static const std::size_t size = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

void copy_name(char (&dst)[96], std::string_view src) {
  const std::size_t n = std::min(src.size(), sizeof dst - 1);
  for (std::size_t i = 0; i < n; ++i) {
    const char ch = src[i];
    dst[i] = (ch < 0x20 || ch == 0x7f) ? '?' : ch;  // one line, whatever the typemap's names hold
  }
  dst[n] = '\0';
}

// ---- the fault handler: async-signal-safe code only ---------------------------------------

struct Line {
  char text[512];
  std::size_t at = 0;
  void put(const char* s) {
    while (*s && at < sizeof text - 1) text[at++] = *s++;
  }
  void put_unsigned(std::uint64_t v, unsigned base = 10) {
    char digits[24];
    int n = 0;
    do {
      const unsigned d = static_cast<unsigned>(v % base);
      digits[n++] = static_cast<char>(d < 10 ? '0' + d : 'a' + d - 10);
      v /= base;
    } while (v != 0);
    while (n > 0 && at < sizeof text - 1) text[at++] = digits[--n];
  }
};

void on_fault(int sig, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
  const std::uintptr_t page = addr & ~(page_size() - 1);
  for (Entry& e : table) {
    if (e.state.load(std::memory_order_acquire) != 2) continue;
    const bool overrun = e.guard == page;
    // A read-only page faults only on a write: a callee that broke `const`.
    const bool const_write =
        !overrun && e.read_only.load(std::memory_order_acquire) && addr >= e.base && addr < e.guard;
    if (!overrun && !const_write) continue;
    bool write = const_write;
#if defined(__x86_64__)
    // Page-fault error code: bit 1 set for a write access.
    if (overrun) write = (static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#endif
    (void)context;
    Line line;
    line.put("marshal guard: function '");
    line.put(e.function);
    line.put("': ");
    if (e.index >= 0) {
      line.put("parameter ");
      line.put_unsigned(static_cast<std::uint64_t>(e.index));
      line.put(" '");
      line.put(e.param);
      line.put("'");
    } else {
      line.put(e.param);
    }
    if (const_write) {
      line.put(": the callee wrote to the ");
      line.put_unsigned(e.size);
      line.put("-byte buffer of a const parameter, which it promised not to write (");
      if (addr >= e.start) {
        line.put("byte ");
        line.put_unsigned(addr - e.start);
        line.put(" of it");
      } else {
        line.put_unsigned(e.start - addr);
        line.put(" bytes before it");
      }
    } else {
      line.put(": the callee ");
      line.put(write ? "wrote" : "read");
      line.put(" past the end of the ");
      line.put_unsigned(e.size);
      line.put("-byte buffer it was given (");
      line.put_unsigned(addr - (e.start + e.size));
      line.put(" bytes past it");
    }
    line.put(", address 0x");
    line.put_unsigned(addr, 16);
    line.put(")\n");
    ssize_t ignored = ::write(2, line.text, line.at);
    (void)ignored;
    signal(SIGABRT, SIG_DFL);
    abort();
  }
  // Not a guard page: the fault belongs to whoever handled it before us.
  sigaction(sig, sig == SIGBUS ? &previous_bus : &previous_segv, nullptr);
}

// Installs the fault handler unless it is the current one. Checked on every
// guarded buffer, not once: a host (or a test framework) that sets its own
// SIGSEGV handler afterwards, or restores the one it saw before ours, would
// otherwise turn guard mode off without a word. The handler found is what a
// fault outside the guard pages goes to.
void install_handler() {
  static std::mutex m;
  const std::lock_guard<std::mutex> lock(m);
  struct sigaction current = {};
  if (sigaction(SIGSEGV, nullptr, &current) == 0 && (current.sa_flags & SA_SIGINFO) &&
      current.sa_sigaction == on_fault) {
    struct sigaction bus = {};
    if (sigaction(SIGBUS, nullptr, &bus) == 0 && (bus.sa_flags & SA_SIGINFO) && bus.sa_sigaction == on_fault) return;
  }
  struct sigaction sa = {};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  struct sigaction before = {};
  for (int sig : {SIGSEGV, SIGBUS}) {
    if (sigaction(sig, &sa, &before) != 0) continue;
    // Never chain to ourselves (both signals are checked above as one).
    if ((before.sa_flags & SA_SIGINFO) && before.sa_sigaction == on_fault) continue;
    (sig == SIGBUS ? previous_bus : previous_segv) = before;
  }
}

int publish(std::uintptr_t base, std::uintptr_t guard, std::uintptr_t start, std::size_t size, int index,
            const char (&function)[96], const char (&param)[96]) {
  for (int i = 0; i < table_size; ++i) {
    int expected = 0;
    Entry& e = table[i];
    if (!e.state.compare_exchange_strong(expected, 1, std::memory_order_acquire)) continue;
    e.guard = guard;
    e.base = base;
    e.read_only.store(false, std::memory_order_relaxed);
    e.start = start;
    e.size = size;
    e.index = index;
    std::memcpy(e.function, function, sizeof e.function);
    std::memcpy(e.param, param, sizeof e.param);
    e.state.store(2, std::memory_order_release);
    return i;
  }
  return -1;  // full: the page still guards, the message names nothing
}

}  // namespace

bool guard_from_environment() {
  static const bool on = [] {
    const char* v = std::getenv("MARSHAL_GUARD");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}

GuardPages::GuardPages(std::string_view function) {
  install_handler();
  copy_name(function_, function);
  copy_name(param_, "the engine's scratch");
}

GuardPages::~GuardPages() {
  for (const Mapping& m : mappings_) {
    if (m.slot >= 0) {
      table[m.slot].state.store(1, std::memory_order_relaxed);
      table[m.slot].guard = 0;
      table[m.slot].state.store(0, std::memory_order_release);
    }
    munmap(m.base, m.length);
    live.fetch_sub(1, std::memory_order_relaxed);
  }
}

void GuardPages::label(int index, std::string_view name) {
  index_ = index;
  copy_name(param_, index < 0 ? std::string_view("the engine's scratch") : name);
}

void* GuardPages::alloc(std::size_t size, std::size_t align) {
  const std::size_t page = page_size();
  if (align == 0 || (align & (align - 1)) != 0 || align > page) return nullptr;
  if (size > SIZE_MAX - 2 * page) return nullptr;
  const std::size_t data_pages = (size + page - 1) / page + (size == 0 ? 1 : 0);
  const std::size_t length = (data_pages + 1) * page;
  void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return nullptr;
  const auto guard = reinterpret_cast<std::uintptr_t>(base) + data_pages * page;
  if (mprotect(reinterpret_cast<void*>(guard), page, PROT_NONE) != 0) {
    munmap(base, length);
    return nullptr;
  }
  const std::uintptr_t start = (guard - size) & ~(static_cast<std::uintptr_t>(align) - 1);
  const int slot = publish(reinterpret_cast<std::uintptr_t>(base), guard, start, size, index_, function_, param_);
  mappings_.push_back({base, length, start, slot});
  live.fetch_add(1, std::memory_order_relaxed);
  return reinterpret_cast<void*>(start);
}

bool GuardPages::protect(const void* p) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  for (const Mapping& m : mappings_) {
    if (m.start != at) continue;
    // Every data page of the mapping holds this buffer and nothing else.
    const std::size_t data = m.length - page_size();
    if (m.slot >= 0) table[m.slot].read_only.store(true, std::memory_order_release);
    if (mprotect(m.base, data, PROT_READ) == 0) return true;
    if (m.slot >= 0) table[m.slot].read_only.store(false, std::memory_order_release);
    return false;
  }
  return false;
}

void* Arena::guarded(std::size_t size, std::size_t align) {
  if (void* p = guard_->alloc(size, align)) return p;
  // No mapping to be had (the process's map count, say): unguarded but safe.
  GuardPages* pages = guard_;
  guard_ = nullptr;
  void* p = alloc(size, align);
  guard_ = pages;
  return p;
}

std::size_t guard_live_mappings() { return live.load(std::memory_order_relaxed); }

}  // namespace marshal::engine
