// marshal engine: what a call takes and gives as host values.
#pragma once

#include "values/value.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace marshal::engine {

// What the host sees of a call: the return value, every out/inout parameter by
// name, and errno when the function captures it.
struct CallResult {
  Value ret;
  Record out;
  std::optional<int> error_number;
};

// One host argument or result that is a scalar, as host adapters give and take
// it without a Value (call/host_io.hpp): null, a bool, an exact integer, a
// double, an address, or UTF-8 text (valid while the call runs). `other`: none
// of these (a record, a list, a handle...): the dynamic Value is needed.
struct HostScalar {
  enum class Kind : std::uint8_t { null, boolean, int64, uint64, real, address, string, other };
  Kind kind = Kind::other;
  union {
    std::int64_t i = 0;
    std::uint64_t u;
    double d;
    bool b;
    std::uintptr_t p;
  };
  std::string_view text;  // string

  static HostScalar of_int(std::int64_t x) { HostScalar s; s.kind = Kind::int64; s.i = x; return s; }
  static HostScalar of_uint(std::uint64_t x) { HostScalar s; s.kind = Kind::uint64; s.u = x; return s; }
  static HostScalar of_real(double x) { HostScalar s; s.kind = Kind::real; s.d = x; return s; }
  static HostScalar of_bool(bool x) { HostScalar s; s.kind = Kind::boolean; s.b = x; return s; }
  static HostScalar of_address(std::uintptr_t x) { HostScalar s; s.kind = Kind::address; s.p = x; return s; }
  static HostScalar of_text(std::string_view x) { HostScalar s; s.kind = Kind::string; s.text = x; return s; }
};

// A Value read as a scalar (kind `other` when it is none).
inline void scalar_of(const Value& v, HostScalar& s) {
  switch (v.type()) {
    case Value::Type::null: s.kind = HostScalar::Kind::null; return;
    case Value::Type::boolean: s.kind = HostScalar::Kind::boolean; s.b = v.as<bool>(); return;
    case Value::Type::int64: s.kind = HostScalar::Kind::int64; s.i = v.as<std::int64_t>(); return;
    case Value::Type::uint64: s.kind = HostScalar::Kind::uint64; s.u = v.as<std::uint64_t>(); return;
    case Value::Type::real: s.kind = HostScalar::Kind::real; s.d = v.as<double>(); return;
    case Value::Type::address: s.kind = HostScalar::Kind::address; s.p = v.as<Address>().value; return;
    case Value::Type::string: s.kind = HostScalar::Kind::string; s.text = v.as<std::string>(); return;
    default: s.kind = HostScalar::Kind::other; return;
  }
}

// Text written into a Value in place (out of line: the scalar kinds stay small).
[[gnu::noinline]] inline void put_text(std::string_view text, Value& out) {
  if (out.is<std::string>()) out.as<std::string>().assign(text);
  else out = Value(std::string(text));
}

// A scalar written into a Value in place (an address of 0 is null; `other` is
// null). Always inlined: after lane_scalar (lane.hpp) the two switches fold into one.
[[gnu::always_inline]] inline void put_scalar(const HostScalar& s, Value& out) {
  switch (s.kind) {
    case HostScalar::Kind::boolean: out.set_bool(s.b); return;
    case HostScalar::Kind::int64: out.set_int(s.i); return;
    case HostScalar::Kind::uint64: out.set_uint(s.u); return;
    case HostScalar::Kind::real: out.set_real(s.d); return;
    case HostScalar::Kind::address: out.set_address(s.p); return;
    case HostScalar::Kind::string: put_text(s.text, out); return;
    case HostScalar::Kind::null: case HostScalar::Kind::other: out.set_null(); return;
  }
}

// Host arguments by address, for the calls that take them so (no copy of a
// value): a small array on the stack for the usual counts.
struct ValuePointers {
  explicit ValuePointers(std::span<const Value> args) {
    if (args.size() > std::size(small)) big.resize(args.size());
    const Value** p = big.empty() ? small : big.data();
    for (std::size_t i = 0; i < args.size(); ++i) p[i] = &args[i];
    view = std::span<const Value* const>(p, args.size());
  }
  ValuePointers(const ValuePointers&) = delete;
  ValuePointers& operator=(const ValuePointers&) = delete;
  const Value* small[16];
  std::vector<const Value*> big;
  std::span<const Value* const> view;
};

}  // namespace marshal::engine
