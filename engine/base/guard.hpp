// marshal engine: guard mode (a debugging aid against callees that overrun).
// In guard mode every buffer of a call's scratch (out buffers, copied-in data,
// argument slots) gets its own mapping whose last byte abuts a PROT_NONE page,
// so a callee that reads or writes one byte past what it was given faults at
// once. A SIGSEGV/SIGBUS handler recognizes the guard page and prints which
// function and parameter the buffer belonged to before the process aborts,
// instead of memory being corrupted silently. It costs two system calls per
// buffer: a mode for finding bugs and for untrusted callees under test, not for
// production (where the surrogate process isolates crashes).
// What a `const` parameter passes (TYPEMAP.md) is copied into such a mapping
// and then made read-only (protect): a callee that writes through it despite
// its promise faults, and the handler names the function and the parameter.
// The host's own memory is never mprotect'ed: its pages hold other data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace marshal::engine {

// MARSHAL_GUARD=1 (or any value but "0" and empty) turns guard mode on for
// every library of the process; read once.
bool guard_from_environment();

// The guarded allocations of one call. What is being marshaled is named with
// label() before the allocations it makes; the label is copied into the
// fault handler's table with each mapping.
class GuardPages {
 public:
  explicit GuardPages(std::string_view function);
  ~GuardPages();
  GuardPages(const GuardPages&) = delete;
  GuardPages& operator=(const GuardPages&) = delete;

  // Names the parameter (index, name) whose buffers come next; index -1 for
  // the engine's own scratch (the return buffer, for example).
  void label(int index, std::string_view name);
  // `size` bytes aligned to `align`, ending as close to the guard page as the
  // alignment allows (exactly at it when size is a multiple of align, as it is
  // for every array and string); nullptr when the system refuses a mapping.
  void* alloc(std::size_t size, std::size_t align);
  // Makes the pages of the mapping that alloc() returned `p` from read-only
  // until the call ends. false (and nothing changed) when p is not the start
  // of such a buffer (an allocation that fell back to the unguarded arena).
  bool protect(const void* p);

 private:
  struct Mapping {
    void* base;
    std::size_t length;
    std::uintptr_t start;  // the buffer handed out
    int slot;  // entry of the fault handler's table, -1 when it was full
  };
  std::vector<Mapping> mappings_;
  char function_[96] = {};
  char param_[96] = {};
  int index_ = -1;
};

// For tests: the number of guarded mappings alive in the process.
std::size_t guard_live_mappings();

}  // namespace marshal::engine
