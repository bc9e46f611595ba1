// marshal engine: call plans.
// Binding a function builds its Plan once: the prepared ffi_cif, the resolved
// symbol and free functions, and one instruction per parameter (Instr): a fast
// form (the scalar lane: integers, floats, bools, pointers, registered
// callbacks, `in` strings, structs of scalars) where the parameter has one,
// and the general converter's step (Marshaler) for everything else and for
// every value the fast form does not take. A call runs the one loop over them,
// through the stages setup, marshal, pin, invoke, unmarshal, cleanup (plan.cpp).
// Arguments come from a host adapter and results go to one (host_io.hpp).
// Plans are immutable and may be called from many threads at once.
#pragma once

#include "abi/abi.hpp"
#include "base/arena.hpp"
#include "base/bounds.hpp"
#include "base/error.hpp"
#include "callbacks/callback.hpp"
#include "typemap/context.hpp"
#include "base/guard.hpp"
#include "values/handles.hpp"
#include "convert/lane.hpp"
#include "abi/shared_library.hpp"
#include "objects/object.hpp"
#include "values/call_values.hpp"
#include "values/value.hpp"

#include <ffi.h>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace marshal::engine {

// A function that frees memory or releases a handle: called as fn(value).
struct Releaser {
  void* fn = nullptr;
  ffi_type* arg = &ffi_type_pointer;
  ffi_type* ret = &ffi_type_void;
  explicit operator bool() const { return fn != nullptr; }
  void operator()(std::uint64_t value) const;
};

class Library;
// Host adapters (call/host_io.hpp; the typed C++ API includes it for its
// signatures of scalars and strings).
class HostArgs;
class HostResults;

class Plan {
 public:
  // in/inout parameter values in order (out parameters are not given), then for
  // a variadic function one record {"type": T, "value": V} per extra argument.
  bool call(std::span<const Value> args, CallResult& result, std::string& error) const;
  // The same with the arguments by address (no copy of a host value: the C API).
  bool call(std::span<const Value* const> args, CallResult& result, std::string& error) const;
  // A method plan (Library::bind_method): `self` is the interface pointer
  // passed as `this`, `target` the vtable slot's code.
  bool call_method(void* self, void* target, std::span<const Value> args, CallResult& result, std::string& error) const;
  bool call_method(void* self, void* target, std::span<const Value* const> args, CallResult& result,
                   std::string& error) const;
  // The same through host adapters (host_io.hpp): a binding's own arguments,
  // with no Value built for what the fast instructions take.
  bool call(const HostArgs& args, HostResults& results, std::string& error) const;
  bool call_method(void* self, void* target, const HostArgs& args, HostResults& results, std::string& error) const;

  const Function& function() const { return *fn_; }
  std::size_t host_arity() const { return host_count_; }
  // For callers that marshal on their own (the typed C++ fast path): the
  // prepared CIF (fixed-arity functions only) and the resolved symbol.
  // nullptr when the call needs more than "each argument by address" (a
  // variadic function, or arguments lowered to several libffi arguments).
  const ffi_cif* cif() const { return fn_->variadic_from >= 0 || !lowered_.empty() ? nullptr : &cif_; }
  void* symbol() const { return symbol_; }
  const TypeRegistry& types() const { return *reg_; }
  // Out data written in place (the typed C++ API passes the caller's own
  // storage of the same layout instead of converting host values). A
  // parameter qualifies when it is out/inout and plain data (integers,
  // floating-point numbers, structs and inline arrays of them, no bitfields:
  // the native bits are the whole value), either
  //  - value: a ptr to one such value, or
  //  - array: an array of such elements counted by a constant or by an `in`
  //    integer parameter (count_param), with no length or the return value
  //    as its length (length_is_return).
  //  - string: an `out` UTF-8 string, nul-terminated, with a capacity (an
  //    `in` integer parameter or a constant) and no length: the callee
  //    writes the caller's buffer of that many bytes (in_place_string reads it).
  // Everything else (sentinels, counts after the call, other strings, handles,
  // enums) keeps the general path. Method plans never qualify.
  struct InPlace {
    enum class Form : std::uint8_t { none, value, array, string };
    Form form = Form::none;
    int count_param = -1;        // array: the parameter holding the count, or -1 for a constant
    std::uint64_t constant = 0;  // array: the constant count
    bool length_is_return = false;
  };
  InPlace in_place(std::size_t i) const;
  // Array (or string: its capacity) parameter i written in place, before the call: the element count
  // run() would give the callee for the count argument `count_arg` (ignored
  // for a constant count). False where run() refuses the call (a negative
  // count, a buffer above max_buffer): the caller then takes run(), which
  // reports it with the usual message. Guard mode also answers false.
  bool in_place_count(std::size_t i, std::int64_t count_arg, std::uint64_t& count) const;
  // After the call: the length the callee reports for array parameter i
  // (its return value `ret`), checked as run() checks it against the
  // `capacity` the callee was given; false with run()'s message.
  bool in_place_length(std::size_t i, std::int64_t ret, std::uint64_t capacity, std::uint64_t& length,
                       std::string& error) const;
  // After the call: string parameter i's buffer of `capacity` bytes (written
  // in place) as the general path converts it (up to the terminator, or the
  // whole buffer without one; decoded and checked); false with its message.
  bool in_place_string(std::size_t i, const char* data, std::uint64_t capacity, std::string& out,
                       std::string& error) const;
  // Guard mode is on for this plan's library: in-place writes are not used.
  bool guarded() const;

  // Whether calls go through the specialized invoker (abi.hpp) rather than ffi_call.
  bool specialized() const { return invoker_.usable(); }
  // Whether every instruction and the return have a fast form (the scalar
  // lane): such calls need no arena, marshaler or frame unless a value is one
  // the fast form does not take.
  bool laned() const { return laned_; }

  // The fast form of a parameter or the return (convert/lane.hpp). A value
  // the fast form does not take as it is (a wrong kind, out of range, native
  // memory for a pointer) goes to the general converter, which converts it or
  // reports the error exactly as for every other plan.
  using Lane = LaneOp;

 private:
  friend class Library;
  template <class Args, class Results> friend class PlanRun;  // plan.cpp: one call
  // One parameter's instruction, decided at bind time.
  struct Instr {
    enum class Op : std::uint8_t { value, ptr, array, string };  // the general converter's form
    Op op = Op::value;
    bool has_fast = false;        // `fast` is used (when the fast forms are on)
    LaneOp fast;                  // the fast form (self: `this` of a method)
    TypeId type = no_type;
    std::uint32_t slot_size = 0;  // bytes of the argument itself
    std::uint32_t slot_align = 1;
    int host_index = -1;          // position among host arguments; -1 for out
    Releaser free_with;           // out ptr to callee-allocated memory
    bool releases_handle = false; // this function is the release of the handle passed here
    // fast.op out_value / out_array (the scalar lane only; the general run
    // converts such a parameter as any other): the pointee's or element's
    // lane (a record: its fields in record_fields_), and an array's count:
    // the `in` integer parameter count_param, or count_constant.
    LaneOp out;
    int count_param = -1;
    std::uint64_t count_constant = 0;
  };
  bool marshal_variadic(std::span<const Value* const> extra, std::vector<ffi_type*>& types, std::vector<TypeId>& ids,
                        std::vector<void*>& values,
                        class Marshaler& m, Arena& arena, std::string& error) const;

  Library* lib_ = nullptr;
  const Function* fn_ = nullptr;
  const TypeRegistry* reg_ = nullptr;
  void* symbol_ = nullptr;
  ffi_cif cif_{};
  std::vector<ffi_type*> atypes_;     // one per parameter
  std::vector<TypeId> value_types_;   // what each parameter passes by value (ptr kinds: the pointer)
  std::vector<LoweredArg> lowered_;   // empty unless an argument is split (abi.hpp)
  std::vector<ffi_type*> lowered_types_;
  std::vector<Instr> instrs_;         // one per parameter
  std::vector<std::uint32_t> computed_;  // computed parameters (Param::value), in evaluation order
  std::size_t host_count_ = 0;
  Releaser ret_free_;
  bool method_ = false;  // parameter 0 is `this`, given by call_method
  const Method* source_ = nullptr;  // the method a method plan was built for
  Invoker invoker_;      // usable: register-only signature, called without ffi_call
  bool laned_ = false;   // every instruction and the return have a fast form
  bool lane_outs_ = false;  // laned, with `out` parameters (LaneOp out_value, out_array)
  bool needs_general_ = true;  // a call always needs the general converter (some instruction or the
                              // return has no fast form; variadic, split or computed arguments)
  bool ret_fast_ = false;     // the return has a fast form
  LaneOp ret_lane_;
  std::vector<std::vector<LaneField>> record_fields_;  // LaneOp::Op::record: the fields
};

// Tests turn the specialized invoker off to compare it with ffi_call, and the
// scalar lane off to compare it with the general path.
void set_specialized_invokers(bool on);
void set_scalar_lanes(bool on);

}  // namespace marshal::engine
