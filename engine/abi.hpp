// marshal engine: ABI knowledge, quarantined.
// Lowering descriptors to libffi types (structs and unions by value included),
// reading widened small-integer returns, and C's default argument promotions for
// variadic calls. Everything else leaves register work to libffi.
#pragma once

#include "registry.hpp"

#include <deque>
#include <ffi.h>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace marshal {

// Owns the ffi_type records built for aggregates; one per Context.
class FfiTypes {
 public:
  // The ffi_type libffi classifies exactly as the C ABI classifies `t` passed or
  // returned by value, or nullptr with a message saying why it cannot be done.
  ffi_type* lower(const TypeRegistry& reg, TypeId t, std::string& error);

 private:
  ffi_type* lower_locked(const TypeRegistry& reg, TypeId t, std::string& error);
  ffi_type* make_struct(std::vector<ffi_type*> elements);
  ffi_type* lower_by_eightbytes(const TypeRegistry& reg, TypeId t, std::string& error);
  std::mutex mutex_;
  std::deque<ffi_type> types_;
  std::deque<std::vector<ffi_type*>> elements_;
  std::map<TypeId, ffi_type*> cache_;
};

// The scalar ffi_type of a non-aggregate descriptor (pointer-like kinds are pointers).
ffi_type* scalar_ffi_type(const TypeRegistry& reg, const TypeDesc& d);

// libffi returns integers narrower than a register widened to ffi_arg; this
// stores the value narrowed to the descriptor's size at dst.
void read_return(const TypeDesc& d, const void* rvalue, void* dst);
std::size_t return_buffer_size(const TypeDesc& d);

// One libffi argument of a call: which parameter it comes from, at which byte
// offset of that parameter's native value, and its libffi type.
struct LoweredArg {
  std::uint32_t param;
  std::uint32_t offset;
  ffi_type* type;
};

// The arguments to give libffi for parameters of these types (by value). Usually
// one per parameter. Works around libffi before 3.4.7 on x86-64 System V
// (libffi PR #848): a struct of 9 to 16 bytes passed in registers whose first
// eightbyte is INTEGER and lands in the sixth general register was copied whole
// into that register's slot, overwriting the first SSE register. Such a struct
// is passed as its two eightbytes, as separate scalars: the psABI assigns them
// the very same registers. Returns true when any argument was split.
bool lower_arguments(const TypeRegistry& reg, const std::vector<TypeId>& by_value, const std::vector<ffi_type*>& types,
                     std::vector<LoweredArg>& out);

// C default argument promotions for arguments past the last named parameter:
// float becomes double, integers narrower than int (and bools, enums) become int.
TypeId promote_variadic(const TypeRegistry& reg, TypeId t);

}  // namespace marshal
