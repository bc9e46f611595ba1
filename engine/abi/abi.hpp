// marshal engine: ABI knowledge, quarantined.
// Lowering descriptors to libffi types (structs and unions by value included),
// reading widened small-integer returns, and C's default argument promotions for
// variadic calls. Everything else leaves register work to libffi.
#pragma once

#include "types/registry.hpp"
#include "types/typemap.hpp"

#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <ffi.h>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace marshal::engine {

// Owns the ffi_type records built for aggregates; one per Context.
class FfiTypes {
 public:
  // The ffi_type libffi classifies exactly as the C ABI classifies `t` passed or
  // returned by value, or nullptr with a message saying why it cannot be done.
  ffi_type* lower(const TypeRegistry& reg, TypeId t, std::string& error);

 private:
  ffi_type* lower_locked(const TypeRegistry& reg, TypeId t, std::string& error);
  ffi_type* make_struct(std::vector<ffi_type*> elements);
  ffi_type* lower_by_eightbytes(const TypeRegistry& reg, TypeId t, std::vector<std::uint64_t>& offsets,
                                std::string& error);
  bool same_layout(const TypeRegistry& reg, TypeId t, ffi_type* lowered, const std::vector<std::uint64_t>& offsets,
                   std::string& error);
  std::mutex mutex_;
  std::deque<ffi_type> types_;
  std::deque<std::vector<ffi_type*>> elements_;
  std::map<TypeId, ffi_type*> cache_;
};

// Why a value of type t cannot be passed or returned by value ("" when it can):
// what FfiTypes::lower refuses, checked without keeping the libffi types.
std::string by_value_refusal(const TypeRegistry& reg, TypeId t);

// Every reason binding the signature would fail that the typemap alone shows:
// a parameter or return refused by value, a function returning a callback, a
// callback's out/inout parameter that is not {"ptr": T}. report(i, message):
// i is the parameter's index, -1 for the return. The loader calls it, so
// `marshal check` refuses what binding would refuse, at its JSON Pointer.
void signature_refusals(const TypeRegistry& reg, const Signature& sig, bool is_callback,
                        const std::function<void(int, const std::string&)>& report);

// Why the host cannot write out/inout parameter p of a callback, or "" when it
// can: a {"ptr": T}, an array or a string, whose data lies entirely in the
// memory native code lent (nothing that would point into the callback's
// scratch, which is gone when the host function returns).
std::string callback_param_refusal(const TypeRegistry& reg, const Param& p);

// The libffi ABI of a calling convention on this target; false with a message
// when the target has no such convention (TYPEMAP.md: "where the target has them").
bool ffi_abi_of(CallConv cc, ffi_abi& out, std::string& error);

// The scalar ffi_type of a non-aggregate descriptor (pointer-like kinds are pointers).
ffi_type* scalar_ffi_type(const TypeRegistry& reg, const TypeDesc& d);

// libffi returns integers narrower than a register widened to ffi_arg; this
// stores the value narrowed to the descriptor's size at dst.
// The one return-widening rule: libffi returns integers, bools, enums and
// by-value handles narrower than a register as ffi_arg (sign- or zero-extended).
bool return_widened(const TypeDesc& d);
void read_return(const TypeDesc& d, const void* rvalue, void* dst);
// Stores a native return value for libffi (a callback's or host method's).
void store_return(const TypeDesc& d, const std::byte* value, void* ret);
std::size_t return_buffer_size(const TypeDesc& d);

// One libffi argument of a call: which parameter it comes from, at which byte
// offset of that parameter's native value, and its libffi type.
struct LoweredArg {
  std::uint32_t param;
  std::uint32_t offset;
  ffi_type* type;
};

// The x86-64 System V classification (psABI 3.2.3) of a value passed or
// returned by value: the engine's one classifier (lower_arguments and
// returns_in_memory use it, `marshal explain` prints it). Computed on every
// target, as a description of x86-64.
enum class EightbyteClass : std::uint8_t { none, integer, sse };
const char* eightbyte_class_name(EightbyteClass c);  // "NO_CLASS", "INTEGER", "SSE"
struct SysvClasses {
  bool memory = false;                     // class MEMORY: on the stack, or returned through a hidden pointer
  std::string why;                         // why MEMORY, for people
  std::vector<EightbyteClass> eightbytes;  // otherwise one per eightbyte (a scalar: one)
};
SysvClasses sysv_classify(const TypeRegistry& reg, TypeId t);

// Whether a function returning t gets the return address as a hidden first
// argument (System V x86-64: a struct or union of class MEMORY), which takes
// the first integer register.
bool returns_in_memory(const TypeRegistry& reg, TypeId t);

// The arguments to give libffi for parameters of these types (by value). Usually
// one per parameter. Works around libffi before 3.4.7 on x86-64 System V
// (libffi PR #848): a struct of 9 to 16 bytes passed in registers whose first
// eightbyte is INTEGER and lands in the sixth general register was copied whole
// into that register's slot, overwriting the first SSE register. Such a struct
// is passed as its two eightbytes, as separate scalars: the psABI assigns them
// the very same registers. Registers are counted as libffi counts them, from
// the hidden return pointer on when `returns` is returned in memory. Returns
// true when any argument was split.
bool lower_arguments(const TypeRegistry& reg, const std::vector<TypeId>& by_value, const std::vector<ffi_type*>& types,
                     TypeId returns, std::vector<LoweredArg>& out);

// A specialized invoker: a call whose arguments all travel in registers (up to
// 6 integer/pointer and 8 floating-point ones) and whose return is an integer,
// a pointer, a float, a double or void is made through one fixed C function
// type, (int64 x 6, double x 8) -> int64 or double, instead of ffi_call: on
// x86-64 System V and AArch64 the extra registers are ignored by the callee and
// each argument sits where the ABI puts it. Chosen once at bind time; the
// fixture tests compare it with ffi_call for every signature they have.
struct Invoker {
  enum class Ret : std::uint8_t { none, void_, integer, f64, f32 };
  enum class Cls : std::uint8_t { integer, f64, f32 };
  struct Arg {
    Cls cls = Cls::integer;
    std::uint8_t size = 8;
    bool is_signed = false;
  };
  Ret ret = Ret::none;  // none: use ffi_call
  std::vector<Arg> args;
  bool ints_only = false;  // no floating-point argument: the call loads no vector register
  bool usable() const { return ret != Ret::none; }
};
// by_value: per argument, its type, or no_type for a pointer the plan made
// (strings, arrays, pointers to values). false when ffi_call must be used.
bool choose_invoker(const TypeRegistry& reg, const std::vector<TypeId>& by_value, TypeId returns, Invoker& out);
// An integer argument of `size` bytes at p, sign- or zero-extended to 64 bits.
inline std::uint64_t invoker_widen(const void* p, std::uint8_t size, bool is_signed) {
  switch (size) {
    case 1: { std::uint8_t v; std::memcpy(&v, p, 1); return is_signed ? static_cast<std::uint64_t>(static_cast<std::int8_t>(v)) : v; }
    case 2: { std::uint16_t v; std::memcpy(&v, p, 2); return is_signed ? static_cast<std::uint64_t>(static_cast<std::int16_t>(v)) : v; }
    case 4: { std::uint32_t v; std::memcpy(&v, p, 4); return is_signed ? static_cast<std::uint64_t>(static_cast<std::int32_t>(v)) : v; }
    default: { std::uint64_t v; std::memcpy(&v, p, 8); return v; }
  }
}
// Calls fn with the arguments' native values (avalues, as for ffi_call) and
// writes the return to rvalue (8 bytes; a narrow integer return's upper bits
// are unspecified, as the ABI leaves them: readers narrow it to its size).
inline void invoke(const Invoker& inv, void* fn, void* const* avalues, void* rvalue) {
  if (inv.ints_only) {  // integers and pointers only: six registers, no floating-point ones
    std::uint64_t g[6] = {};
    for (std::size_t k = 0; k < inv.args.size(); ++k) g[k] = invoker_widen(avalues[k], inv.args[k].size, inv.args[k].is_signed);
    using Int6 = std::uint64_t (*)(std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t);
    using Float6 = double (*)(std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t);
    if (inv.ret == Invoker::Ret::f64 || inv.ret == Invoker::Ret::f32) {
      const double r = reinterpret_cast<Float6>(fn)(g[0], g[1], g[2], g[3], g[4], g[5]);
      std::memcpy(rvalue, &r, 8);
    } else {
      const std::uint64_t r = reinterpret_cast<Int6>(fn)(g[0], g[1], g[2], g[3], g[4], g[5]);
      std::memcpy(rvalue, &r, 8);
    }
    return;
  }
  std::uint64_t g[6] = {};
  double x[8] = {};
  int gi = 0, xi = 0;
  for (std::size_t k = 0; k < inv.args.size(); ++k) {
    const Invoker::Arg& a = inv.args[k];
    switch (a.cls) {
      case Invoker::Cls::integer:
        // Narrow integers travel widened (sign- or zero-extended), as compilers pass them.
        g[gi++] = invoker_widen(avalues[k], a.size, a.is_signed);
        break;
      case Invoker::Cls::f64: std::memcpy(&x[xi++], avalues[k], 8); break;
      case Invoker::Cls::f32: {
        std::uint64_t bits = 0;  // the float in the register's low 32 bits
        std::memcpy(&bits, avalues[k], 4);
        std::memcpy(&x[xi++], &bits, 8);
        break;
      }
    }
  }
  using IntFn = std::uint64_t (*)(std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t,
                                  std::uint64_t, double, double, double, double, double, double, double, double);
  using FloatFn = double (*)(std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t,
                             double, double, double, double, double, double, double, double);
  if (inv.ret == Invoker::Ret::f64 || inv.ret == Invoker::Ret::f32) {
    const double r = reinterpret_cast<FloatFn>(fn)(g[0], g[1], g[2], g[3], g[4], g[5], x[0], x[1], x[2], x[3], x[4],
                                                   x[5], x[6], x[7]);
    std::memcpy(rvalue, &r, 8);  // a float return is the low 32 bits
  } else {
    const std::uint64_t r = reinterpret_cast<IntFn>(fn)(g[0], g[1], g[2], g[3], g[4], g[5], x[0], x[1], x[2], x[3],
                                                        x[4], x[5], x[6], x[7]);
    std::memcpy(rvalue, &r, 8);
  }
}

// C default argument promotions for arguments past the last named parameter:
// float becomes double, integers narrower than int (and bools, enums) become int.
TypeId promote_variadic(const TypeRegistry& reg, TypeId t);

}  // namespace marshal::engine
