// marshal engine: host numbers as native integers and floats.
// The one rule for both the general conversion (convert.cpp) and the scalar
// lane (lane.hpp): what a host value may become in an integer of N bits or in
// a float32/float64, checked exactly, without rounding, before any cast.
#pragma once

#include "values/call_values.hpp"
#include "values/value.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace marshal::engine {

enum class Fit : std::uint8_t {
  ok,
  not_number,    // not an integer (or, for floats, not a number) at all
  not_integral,  // a double with a fraction, an infinity or NaN, for an integer type
  inexact,       // a double of exactly -2^63 for a signed 64-bit type (see integer_fit)
  out_of_range,
};

// A host integer, or an integral double, that fits `bits` bits (1..64) of the
// given signedness, as its two's complement bit pattern.
//
// Doubles are compared against exact powers of two, never against a rounded
// bound (2^64 - 1 is not a double: `d <= 2^64 - 1` would let 2^64 through). A
// JSON integer outside 64 bits is read as a double, and one below -2^63 may
// round to exactly -2^63; a double of that value is therefore refused for a
// signed 64-bit type (the integer -9223372036854775808 itself is exact and fine).
// The rule is written once, on a scalar (host adapters give scalars without a
// Value); the Value form reads the Value as a scalar.
inline Fit integer_fit(const HostScalar& v, std::uint32_t bits, bool is_signed, std::uint64_t& out) {
  bool negative = false;
  std::uint64_t mag = 0;
  switch (v.kind) {
    case HostScalar::Kind::int64: {
      const std::int64_t i = v.i;
      negative = i < 0;
      mag = negative ? 0 - static_cast<std::uint64_t>(i) : static_cast<std::uint64_t>(i);
      break;
    }
    case HostScalar::Kind::uint64: mag = v.u; break;
    case HostScalar::Kind::real: {
      const double d = v.d;
      if (!std::isfinite(d) || std::trunc(d) != d) return Fit::not_integral;
      if (d < 0) {
        if (!(d >= -0x1p63)) return Fit::out_of_range;
        if (d == -0x1p63 && is_signed && bits >= 64) return Fit::inexact;
        negative = true;
        mag = d == -0x1p63 ? std::uint64_t{1} << 63 : static_cast<std::uint64_t>(-d);
      } else {
        if (!(d < 0x1p64)) return Fit::out_of_range;
        mag = static_cast<std::uint64_t>(d);  // exact: an integral double below 2^64
      }
      break;
    }
    default: return Fit::not_number;
  }
  bool fits;
  if (is_signed) {
    const std::uint64_t pos_max = bits >= 64 ? std::uint64_t{INT64_MAX} : (std::uint64_t{1} << (bits - 1)) - 1;
    fits = negative ? mag <= pos_max + 1 : mag <= pos_max;
  } else {
    fits = !negative && (bits >= 64 || mag < (std::uint64_t{1} << bits));
  }
  if (!fits) return Fit::out_of_range;
  out = negative ? 0 - mag : mag;
  return Fit::ok;
}

inline Fit integer_fit(const Value& v, std::uint32_t bits, bool is_signed, std::uint64_t& out) {
  HostScalar s;
  scalar_of(v, s);
  return integer_fit(s, bits, is_signed, out);
}

// The largest magnitude that rounds to a finite float32: FLT_MAX plus half an
// ulp (exactly representable as a double). At it and beyond, round-to-nearest
// gives infinity, and a cast from such a double is undefined behaviour.
inline constexpr double float32_limit = 0x1.ffffffp127;

// A host number as the bits of a float32 (single) or float64: integers are
// rounded to nearest directly (no double rounding through a double for
// float32); a finite double that would round to infinity in float32 is out of
// range; infinities and NaN stay what they are.
inline Fit float_fit(const HostScalar& v, bool single, std::uint64_t& bits) {
  bits = 0;
  switch (v.kind) {
    case HostScalar::Kind::real: {
      const double x = v.d;
      if (single) {
        if (std::isfinite(x) && std::fabs(x) >= float32_limit) return Fit::out_of_range;
        const float f = static_cast<float>(x);
        std::memcpy(&bits, &f, 4);
      } else {
        std::memcpy(&bits, &x, 8);
      }
      return Fit::ok;
    }
    case HostScalar::Kind::int64: {
      const std::int64_t i = v.i;
      if (single) { const float f = static_cast<float>(i); std::memcpy(&bits, &f, 4); }
      else { const double x = static_cast<double>(i); std::memcpy(&bits, &x, 8); }
      return Fit::ok;
    }
    case HostScalar::Kind::uint64: {
      const std::uint64_t u = v.u;
      if (single) { const float f = static_cast<float>(u); std::memcpy(&bits, &f, 4); }
      else { const double x = static_cast<double>(u); std::memcpy(&bits, &x, 8); }
      return Fit::ok;
    }
    default: return Fit::not_number;
  }
}

inline Fit float_fit(const Value& v, bool single, std::uint64_t& bits) {
  HostScalar s;
  scalar_of(v, s);
  return float_fit(s, single, bits);
}

}  // namespace marshal::engine
