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
  enum class Op : std::uint8_t { self, sint, uint, f32, f64, boolean, pointer, void_, callback, string, record };
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
    case LaneOp::Op::record:
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
    case LaneOp::Op::record:
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

}  // namespace marshal::engine
