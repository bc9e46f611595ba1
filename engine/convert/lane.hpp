// marshal engine: the fast forms of conversion (the scalar lane).
// Integers, floating-point numbers, bools and opaque pointers convert between
// host scalars and native bits by one switch over what was decided at bind time
// (LaneOp), with no arena, marshaler or frame. Plans use them as the fast form
// of a parameter's instruction (Plan::Instr), callbacks for host functions of
// such signatures. A value the lane does not take as it is (a wrong kind, out of
// range, native memory for a pointer) goes to the general conversion, which
// converts it or reports the error in the words every other path uses.
#pragma once

#include "convert/numeric.hpp"
#include "values/call_values.hpp"
#include "types/registry.hpp"
#include "values/value.hpp"

#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>

namespace marshal::engine {

// Tests turn lanes off (set_scalar_lanes in plan.hpp) to compare them with
// the general path.
inline std::atomic<bool> scalar_lanes_enabled{true};

struct LaneOp {
  // callback: a registered callback; string: an `in` Unicode string copied to
  // the plan's stack scratch (plans only: the plan handles both).
  // record: a struct of scalar fields by value (plans only: Plan::record_lanes_).
  // out_value, out_array: an `out` pointer to one scalar or struct of scalar
  // fields, or an `out` array of scalars counted by an `in` integer or a
  // constant: room on the plan's stack (or heap), read back through the
  // lane of the pointee (plans only: Plan::Instr::out). out_string: an `out`
  // UTF-8 string with such a capacity (Plan::InPlace::Form::string).
  enum class Op : std::uint8_t {
    self, sint, uint, f32, f64, boolean, pointer, void_, callback, string, record, out_value, out_array, out_string
  };
  Op op = Op::void_;
  std::uint8_t size = 0;
  std::uint64_t true_value = 1;     // boolean
  const void* signature = nullptr;  // callback: its CallbackSig
  std::uint8_t unit = 1;            // string: bytes per code unit
  bool nullable = false;            // string: null passes NULL
  std::uint16_t record = 0;         // record: index of its fields in the plan
};

// A field of a record lane: where it sits and how it converts.
struct LaneField {
  const std::string* name = nullptr;
  std::uint32_t offset = 0;
  LaneOp op;
};

// The lane of type t (void: Op::void_); false when t needs the general conversion.
inline bool lane_of(const TypeRegistry& reg, TypeId t, LaneOp& l) {
  if (std::endian::native != std::endian::little) return false;  // bits are written as 8 bytes
  if (t == reg.void_type()) {
    l.op = LaneOp::Op::void_;
    return true;
  }
  const TypeDesc& d = reg.get(t);
  l.size = static_cast<std::uint8_t>(d.size);
  switch (d.kind) {
    case Kind::integer: l.op = d.has(flag_signed) ? LaneOp::Op::sint : LaneOp::Op::uint; return d.size <= 8;
    case Kind::floating:
      if (d.size != 4 && d.size != 8) return false;
      l.op = d.size == 4 ? LaneOp::Op::f32 : LaneOp::Op::f64;
      return true;
    case Kind::boolean:
      l.op = LaneOp::Op::boolean;
      l.true_value = static_cast<std::uint64_t>(d.as<BoolInfo>().true_value);
      return d.size <= 8;
    case Kind::pointer: l.op = LaneOp::Op::pointer; return d.size == sizeof(void*);
    default: return false;
  }
}

// The lane of an array's elements when HostResults::array may take them:
// integers (not uint8: bytes) and floating-point numbers, as elements_to_host
// converts them.
inline bool scalar_elements(const TypeRegistry& reg, TypeId element, LaneOp& l) {
  const TypeDesc& e = reg.get(element);
  if (e.kind == Kind::integer) {
    if (e.size == 1 && !e.has(flag_signed)) return false;
  } else if (e.kind != Kind::floating) {
    return false;
  }
  return lane_of(reg, element, l) && l.size == e.size;
}

// A host scalar as native bits (the low `size` bytes are the value); false
// when the fast form does not take it (then the general conversion converts
// it or says why). Numbers follow the general conversion's rule (numeric.hpp),
// so both accept and refuse the same values.
inline bool lane_to_native(const LaneOp& l, const HostScalar& v, std::uint64_t& bits) {
  switch (l.op) {
    case LaneOp::Op::sint:  // the bits sign-extended to 64, as a register holds them
      return integer_fit(v, l.size * 8u, true, bits) == Fit::ok;
    case LaneOp::Op::uint:
      return integer_fit(v, l.size * 8u, false, bits) == Fit::ok;
    case LaneOp::Op::f64: case LaneOp::Op::f32:
      return float_fit(v, l.op == LaneOp::Op::f32, bits) == Fit::ok;
    case LaneOp::Op::boolean:
      if (v.kind != HostScalar::Kind::boolean) return false;
      bits = v.b ? l.true_value : 0;
      return true;
    case LaneOp::Op::pointer:
      if (v.kind == HostScalar::Kind::address) bits = v.p;
      else if (v.kind == HostScalar::Kind::null) bits = 0;
      else return false;
      return true;
    case LaneOp::Op::self: case LaneOp::Op::void_: case LaneOp::Op::callback: case LaneOp::Op::string:
    case LaneOp::Op::record: case LaneOp::Op::out_value: case LaneOp::Op::out_array: case LaneOp::Op::out_string:
      return false;
  }
  return false;
}

inline bool lane_to_native(const LaneOp& l, const Value& v, std::uint64_t& bits) {
  HostScalar s;
  scalar_of(v, s);
  return lane_to_native(l, s, bits);
}

// Native bits (a register's worth, as libffi and the invokers return them:
// only the low `size` bytes count, integers narrower than a register are read
// from those bytes) as a host scalar: the one return-widening rule of the fast
// forms. void and the non-scalar forms give null.
inline HostScalar lane_scalar(const LaneOp& l, std::uint64_t wide) {
  const std::uint32_t size = l.size;
  const std::uint64_t low = size && size < 8 ? wide & ((std::uint64_t{1} << (size * 8)) - 1) : wide;
  HostScalar s;
  switch (l.op) {
    case LaneOp::Op::sint: {
      const unsigned shift = 64 - size * 8;
      s.kind = HostScalar::Kind::int64;
      s.i = static_cast<std::int64_t>(wide << shift) >> shift;
      return s;
    }
    case LaneOp::Op::uint: s.kind = HostScalar::Kind::uint64; s.u = low; return s;
    case LaneOp::Op::f64: {
      double x;
      std::memcpy(&x, &wide, 8);
      s.kind = HostScalar::Kind::real;
      s.d = x;
      return s;
    }
    case LaneOp::Op::f32: {
      float x;
      std::memcpy(&x, &wide, 4);
      s.kind = HostScalar::Kind::real;
      s.d = static_cast<double>(x);
      return s;
    }
    case LaneOp::Op::boolean: s.kind = HostScalar::Kind::boolean; s.b = low != 0; return s;
    case LaneOp::Op::pointer: s.kind = HostScalar::Kind::address; s.p = static_cast<std::uintptr_t>(wide); return s;
    case LaneOp::Op::self: case LaneOp::Op::void_: case LaneOp::Op::callback: case LaneOp::Op::string:
    case LaneOp::Op::record: case LaneOp::Op::out_value: case LaneOp::Op::out_array: case LaneOp::Op::out_string:
      s.kind = HostScalar::Kind::null;
      return s;
  }
  s.kind = HostScalar::Kind::null;
  return s;
}

// The integer a failure check reads (Function::check): integers only, as the
// general path reads them.
inline std::int64_t scalar_int(const HostScalar& s) {
  if (s.kind == HostScalar::Kind::int64) return s.i;
  if (s.kind == HostScalar::Kind::uint64) return static_cast<std::int64_t>(s.u);
  return 0;
}

// Native bits as a host value, written in place. Returns the value as an
// integer for checks.
inline std::int64_t lane_to_host(const LaneOp& l, std::uint64_t wide, Value& out) {
  const HostScalar s = lane_scalar(l, wide);
  put_scalar(s, out);
  return scalar_int(s);
}

// n scalar elements of native memory (each `e.size` bytes at mem) as a new
// list: the general converter's rule and loops (elements_to_host; convert.cpp).
Value lane_list(const LaneOp& e, const std::byte* mem, std::size_t n);
// The same written over `items` (resized to n: a list reused call after call
// makes no Value anew): one tight loop for int32 and double, the lane's rule
// for the rest.
inline void lane_elements_to_host(const LaneOp& e, const std::byte* p, std::size_t n, List& items) {
  items.resize(n);
  if (e.op == LaneOp::Op::sint && e.size == 4) {
    for (std::size_t k = 0; k < n; ++k) {
      std::int32_t x;
      std::memcpy(&x, p + k * 4, 4);
      items[k].set_int(x);
    }
  } else if (e.op == LaneOp::Op::f64) {
    for (std::size_t k = 0; k < n; ++k) {
      double x;
      std::memcpy(&x, p + k * 8, 8);
      items[k].set_real(x);
    }
  } else {
    for (std::size_t k = 0; k < n; ++k) {
      std::uint64_t wide = 0;
      std::memcpy(&wide, p + k * e.size, e.size <= 8 ? e.size : 8);
      put_scalar(lane_scalar(e, wide), items[k]);
    }
  }
}
}  // namespace marshal::engine
