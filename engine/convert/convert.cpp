// marshal engine: marshalers, one case per kind in each direction.
#include "convert/convert.hpp"


#include "base/guard.hpp"
#include "values/handles.hpp"
#include "convert/lane.hpp"
#include "convert/numeric.hpp"
#include "convert/strings.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace marshal::engine {

// ---- native integers ---------------------------------------------------------------

namespace {

std::string range_of(std::uint32_t bits, bool is_signed) {
  if (is_signed) {
    if (bits >= 64) return "-9223372036854775808 to 9223372036854775807";
    return std::to_string(-(std::int64_t{1} << (bits - 1))) + " to " + std::to_string((std::int64_t{1} << (bits - 1)) - 1);
  }
  if (bits >= 64) return "0 to 18446744073709551615";
  return "0 to " + std::to_string((std::uint64_t{1} << bits) - 1);
}

// A host integer (or an integral number) that fits `bits` bits of the given
// signedness, as its two's complement bit pattern (the rule: integer_fit).
// type_name() is only called to build an error: a call that succeeds builds no string.
template <class Name>
bool integer_bits(const Value& v, std::uint32_t bits, bool is_signed, std::uint64_t& out, Marshaler& m,
                  const Name& type_name) {
  std::string& error = m.error;
  const Fit fit = integer_fit(v, bits, is_signed, out);
  if (fit == Fit::ok) return true;
  m.error_id = ErrorId::conversion;
  m.error_got = v.describe();
  m.error_expected = type_name();
  if (fit == Fit::out_of_range) m.error_expected += " (" + range_of(bits, is_signed) + ")";
  switch (fit) {
    case Fit::ok: return true;
    case Fit::not_number: error = "expected an integer for " + type_name() + ", got " + v.describe(); return false;
    case Fit::not_integral:
      error = "expected an integer for " + type_name() + ", got " + v.describe() + " (not integral)";
      return false;
    case Fit::inexact:
      error = v.describe() + " is not exact for " + type_name() +
              " (a number written with a fraction or an exponent, or an integer beyond 64 bits, is a double and may "
              "have been rounded to -2^63; write -9223372036854775808)";
      return false;
    case Fit::out_of_range: {
      std::string shown = v.is<std::int64_t>()    ? std::to_string(v.as<std::int64_t>())
                          : v.is<std::uint64_t>() ? std::to_string(v.as<std::uint64_t>())
                                                  : v.describe();
      if (v.is<double>() && std::fabs(v.as<double>()) < 1e21) {  // integral here: its exact digits (2^64, not 1.8e19)
        char buf[40];
        std::snprintf(buf, sizeof buf, "the number %.0f", v.as<double>());
        shown = buf;
      }
      error = shown + " is out of range for " + type_name() + " (" + range_of(bits, is_signed) + ")";
      return false;
    }
  }
  return false;
}

// Where a count comes from, for messages.
std::string count_source(const Count& n) {
  switch (n.source) {
    case Count::Source::none: return "no count";
    case Count::Source::constant: return "the constant " + std::to_string(n.constant);
    case Count::Source::param: return "parameter '" + n.name + "'";
    case Count::Source::field: return "field '" + n.name + "'";
    case Count::Source::return_value: return "the return value";
    case Count::Source::sentinel: return "a sentinel";
  }
  return "?";
}

Value int_value(std::uint64_t bits, std::uint32_t size, bool is_signed) {
  if (is_signed) {
    std::int64_t v;
    switch (size) {
      case 1: v = static_cast<std::int8_t>(bits); break;
      case 2: v = static_cast<std::int16_t>(bits); break;
      case 4: v = static_cast<std::int32_t>(bits); break;
      default: v = static_cast<std::int64_t>(bits);
    }
    return Value(v);
  }
  return Value(static_cast<std::uint64_t>(size >= 8 ? bits : bits & ((std::uint64_t{1} << (size * 8)) - 1)));
}

// Bitfields: bits [first, first + width) counted from the record's start.
void write_bitfield(std::byte* base, std::uint64_t first, std::uint32_t width, std::uint64_t value) {
  for (std::uint32_t k = 0; k < width; ++k) {
    const std::uint64_t bit = first + k;
    auto& byte = reinterpret_cast<unsigned char&>(base[bit / 8]);
    if ((value >> k) & 1) byte = static_cast<unsigned char>(byte | (1u << (bit % 8)));
    else byte = static_cast<unsigned char>(byte & ~(1u << (bit % 8)));
  }
}

std::uint64_t read_bitfield(const std::byte* base, std::uint64_t first, std::uint32_t width) {
  std::uint64_t v = 0;
  for (std::uint32_t k = 0; k < width; ++k) {
    const std::uint64_t bit = first + k;
    if ((static_cast<unsigned char>(base[bit / 8]) >> (bit % 8)) & 1) v |= std::uint64_t{1} << k;
  }
  return v;
}

}  // namespace

// ---- counts -------------------------------------------------------------------------

bool Marshaler::count(const Count& n, const Ctx& c, std::uint64_t& out) {
  switch (n.source) {
    case Count::Source::none: return fail("no count");
    case Count::Source::constant: out = n.constant; return true;
    case Count::Source::sentinel: return fail("a sentinel count has no value before the data is read");
    case Count::Source::return_value:
      if (!c.frame || !c.frame->after) return fail("the return value is not known before the call");
      if (c.frame->return_int < 0) return fail("the function returned a negative count (" + std::to_string(c.frame->return_int) + ")");
      out = static_cast<std::uint64_t>(c.frame->return_int);
      return true;
    case Count::Source::field: {
      if (!c.rec) return fail("count refers to field '" + n.name + "' outside a struct");
      const Field& f = c.rec->fields[n.index];
      const TypeDesc& fd = reg_.get(f.type);
      if (c.native_rec) {
        std::int64_t v = fd.has(flag_signed) ? load_signed(c.native_rec + f.offset, fd.size)
                                             : static_cast<std::int64_t>(load_unsigned(c.native_rec + f.offset, fd.size));
        if (v < 0) return fail("count field '" + n.name + "' is negative (" + std::to_string(v) + ")");
        out = static_cast<std::uint64_t>(v);
        return true;
      }
      const Value* hv = c.host_rec ? c.host_rec->field(f.name) : nullptr;
      std::uint64_t bits = 0;
      if (!hv || !integer_bits(*hv, 63, false, bits, *this, [&] { return "count field '" + n.name + "'"; }))
        return hv ? false : fail("count field '" + n.name + "' is missing");
      out = bits;
      return true;
    }
    case Count::Source::param: {
      if (!c.frame) return fail("count refers to parameter '" + n.name + "' outside a call");
      const std::size_t index = n.index + c.frame->param_offset;
      const Param& p = c.frame->sig->params[index];
      const TypeDesc& pd = reg_.get(p.type);
      if (pd.kind == Kind::ptr && c.frame->after && c.frame->pointee[index]) {
        const TypeDesc& id = reg_.get(pd.ref);
        std::int64_t v = id.has(flag_signed) ? load_signed(c.frame->pointee[index], id.size)
                                             : static_cast<std::int64_t>(load_unsigned(c.frame->pointee[index], id.size));
        if (v < 0) return fail("count parameter '" + n.name + "' is negative after the call");
        out = static_cast<std::uint64_t>(v);
        return true;
      }
      const Value* hv = c.frame->host[index];
      if (!hv) return fail("count parameter '" + n.name + "' has no value before the call");
      std::uint64_t bits = 0;
      if (!integer_bits(*hv, 63, false, bits, *this, [&] { return "count parameter '" + n.name + "'"; })) return false;
      out = bits;
      return true;
    }
  }
  return false;
}

bool Marshaler::native_size(TypeId t, const Value& v, std::size_t& out) {
  const TypeDesc& d = reg_.get(t);
  out = d.size;
  if (!d.has(flag_variable_size) || d.kind != Kind::struct_) return true;
  // A flexible array member: its count comes from a sibling field of the host record.
  const RecordInfo& rec = d.as<RecordInfo>();
  const Field& last = rec.fields.back();
  const TypeDesc& arr = reg_.get(last.type);
  std::uint64_t n = 0;
  Ctx c;
  c.rec = &rec;
  c.host_rec = &v;
  const Count& source = arr.as<ArrayInfo>().count;
  if (!count(source, c, n)) return false;
  std::size_t tail = 0, end = 0;
  if (!buffer_bytes(n, reg_.get(arr.ref).size, &source, tail)) return false;
  if (!checked_add(last.offset, tail, end) || end > max_buffer) return buffer_bytes(SIZE_MAX, 1, &source, end);
  out = std::max<std::size_t>(d.size, end);
  return true;
}

bool Marshaler::native_box_fits(TypeId t, const NativeBox& box) {
  const TypeDesc& d = reg_.get(t);
  if (!d.has(flag_variable_size) || d.kind != Kind::struct_) return true;
  // The host may have written any bytes into its memory (marshal_native_data):
  // the count field is read from there, as the callee will read it.
  const RecordInfo& rec = d.as<RecordInfo>();
  const Field& last = rec.fields.back();
  const TypeDesc& arr = reg_.get(last.type);
  const Count& source = arr.as<ArrayInfo>().count;
  Ctx c;
  c.rec = &rec;
  c.native_rec = static_cast<const std::byte*>(box.data());
  std::uint64_t n = 0;
  if (!count(source, c, n)) return false;
  std::size_t tail = 0, end = 0;
  if (!buffer_bytes(n, reg_.get(arr.ref).size, &source, tail)) return false;
  const bool sized = checked_add(last.offset, tail, end);
  if (!sized || end > box.size)
    return fail("the native memory holds " + std::to_string(box.size) + " bytes but its " + count_source(source) +
                " (" + std::to_string(n) + ") needs " + (sized ? std::to_string(end) : std::string("more than that")) +
                " bytes");
  return true;
}

// ---- bounds ---------------------------------------------------------------------------

bool Marshaler::buffer_bytes(std::uint64_t n, std::size_t unit, const Count* source, std::size_t& bytes) {
  if (checked_mul(n, unit, bytes) && bytes <= max_buffer) return true;
  std::string what = std::to_string(n) + (unit == 1 ? " bytes" : " units of " + std::to_string(unit) + " bytes");
  std::size_t total = 0;
  if (checked_mul(n, unit, total) && unit != 1) what += " (" + std::to_string(total) + " bytes)";
  else if (unit != 1) what += " (more than the address space)";
  return fail("a buffer of " + what + (source ? ", counted by " + count_source(*source) : std::string()) +
              ", is larger than the limit of " + std::to_string(max_buffer) +
              " bytes (\"max_buffer\" of the typemap's library)",
              ErrorId::limit_exceeded, what, "at most " + std::to_string(max_buffer) + " bytes");
}

bool Marshaler::length_within(std::uint64_t length, std::uint64_t capacity) {
  if (length <= capacity) return true;
  return fail("the callee reports " + std::to_string(length) + " elements written into a buffer of " + std::to_string(capacity));
}

bool Marshaler::readable(const void* p, std::uint64_t n, std::size_t unit, const Count* source) {
  std::size_t bytes = 0;
  if (!buffer_bytes(n, unit, source, bytes)) return false;
  const std::size_t room = lent_.room(p);
  if (room != SIZE_MAX && bytes > room)
    return fail(std::to_string(n) + (unit == 1 ? " bytes" : " units of " + std::to_string(unit) + " bytes") +
                (source ? " (" + count_source(*source) + ")" : std::string()) +
                " are more than the buffer the callee was given holds (" + std::to_string(room) + " bytes)");
  return true;
}

bool Marshaler::enter(bool native) {
  if (depth_ < max_value_depth) {
    ++depth_;
    return true;
  }
  nest_failed_ = true;
  return fail(std::string("pointers nest deeper than ") + std::to_string(max_value_depth) + " levels" +
              (native ? "" : " (a cycle in native data?)"),
              ErrorId::limit_exceeded, {}, "at most " + std::to_string(max_value_depth) + " levels");
}

void Marshaler::read_only(const Ctx& c, const void* p) {
  if (!c.is_const) return;
  if (GuardPages* g = arena_.guard_pages()) g->protect(p);
}

namespace {
// Leaves one level of pointer nesting (Marshaler::enter) on every path.
struct Leave {
  std::size_t& depth;
  ~Leave() { --depth; }
};

// A count known before the call: not the return value, not an out parameter.
bool known_before_call(const Count& n, const Ctx& c) {
  switch (n.source) {
    case Count::Source::constant: case Count::Source::field: return true;
    case Count::Source::param:
      return c.frame && !c.frame->after && n.index + c.frame->param_offset < c.frame->host.size() &&
             c.frame->host[n.index + c.frame->param_offset] != nullptr;
    case Count::Source::none: case Count::Source::return_value: case Count::Source::sentinel: return false;
  }
  return false;
}
}  // namespace

// ---- strings ------------------------------------------------------------------------

bool Marshaler::string_to_native(const StringInfo& s, const Value& v, std::size_t capacity_units, void*& out,
                                 const Ctx& c, std::size_t* units_out) {
  if (!c.is_const || out) return string_copy_to_native(s, v, capacity_units, out, c, units_out);
  // const: a host string that already is the native text (UTF-8, or ASCII for
  // Latin-1 and ASCII, NUL-terminated, no NUL inside) is passed in place.
  if (s.terminator == Terminator::nul && !capacity_units && v.is<std::string>() && !arena_.guard_pages() &&
      (s.encoding == Encoding::utf8 || s.encoding == Encoding::latin1 || s.encoding == Encoding::ascii)) {
    const std::string& text = v.as<std::string>();
    if (s.encoding == Encoding::utf8 ? utf8_well_formed(text) : plain_ascii(text)) {
      if (s.length.present() && known_before_call(s.length, c)) {
        std::uint64_t len = 0;
        if (!count(s.length, c, len)) return false;
        if (len > text.size())
          return fail("the string has " + std::to_string(text.size()) + " bytes but its length (" +
                      count_source(s.length) + ") is " + std::to_string(len));
      }
      out = const_cast<char*>(text.c_str());
      lent_.add(out, text.size() + 1);
      if (units_out) *units_out = text.size();
      return true;
    }
  }
  if (!string_copy_to_native(s, v, capacity_units, out, c, units_out)) return false;
  read_only(c, out);
  return true;
}

bool Marshaler::string_copy_to_native(const StringInfo& s, const Value& v, std::size_t capacity_units, void*& out,
                                      const Ctx& c, std::size_t* units_out) {
  const std::size_t unit = encoding_unit(s.encoding);
  const Count* cap_source = s.capacity.present() ? &s.capacity : nullptr;
  // A length the host gives tells the callee how many units to read: no more
  // than the host's string has (a longer one would read past the copy).
  auto length_fits = [&](std::size_t units) -> bool {
    if (!s.length.present() || !known_before_call(s.length, c)) return true;
    std::uint64_t len = 0;
    if (!count(s.length, c, len)) return false;
    if (len > units)
      return fail("the string has " + std::to_string(units) + (unit == 1 ? " bytes" : " code units") + " but its length (" +
                  count_source(s.length) + ") is " + std::to_string(len));
    return true;
  };
  // Memory this call hands to native code: sized with checked arithmetic, recorded.
  auto allocate = [&](std::size_t units, std::size_t& bytes) -> void* {
    if (!buffer_bytes(units, unit, cap_source, bytes)) return nullptr;
    void* p = arena_.alloc(bytes ? bytes : unit, unit);
    lent_.add(p, bytes ? bytes : unit);
    return p;
  };
  // ASCII text (no NUL) for Latin-1 or ASCII: the same bytes, copied once.
  if (unit == 1 && (s.encoding == Encoding::latin1 || s.encoding == Encoding::ascii) &&
      s.terminator == Terminator::nul && v.is<std::string>() && plain_ascii(v.as<std::string>())) {
    const std::string& text = v.as<std::string>();
    const std::size_t n = text.size();
    if (capacity_units && n + 1 > capacity_units)
      return fail("the string needs " + std::to_string(n + 1) + " units with its terminator but the buffer holds " +
                  std::to_string(capacity_units));
    if (!length_fits(n)) return false;
    const std::size_t total = std::max(capacity_units, n + 1);
    std::size_t bytes = 0;
    if (!out && !(out = allocate(total, bytes))) return false;
    std::memcpy(out, text.data(), n);
    std::memset(static_cast<std::byte*>(out) + n, 0, total - n);
    if (units_out) *units_out = n;
    return true;
  }
  // Well-formed UTF-8 text for a Unicode encoding: transcoded straight into
  // the arena (ASCII in one copy or one widening loop; UTF-16 needs at most one
  // unit per UTF-8 byte).
  const bool unicode = transcodes_utf8(s.encoding);
  if (s.terminator == Terminator::nul && unicode && v.is<std::string>() &&
      (!out || capacity_units > v.as<std::string>().size())) {  // a given buffer must hold the worst case
    const std::string& text = v.as<std::string>();
    const std::size_t room = std::max(capacity_units, text.size() + 1);
    std::size_t bytes = 0;
    void* mem = out ? out : allocate(room, bytes);
    if (!mem) return false;
    const std::size_t n = transcode_utf8(text, unit, mem);
    if (n != SIZE_MAX && (!capacity_units || n + 1 <= capacity_units)) {
      if (!length_fits(n)) return false;
      std::memset(static_cast<std::byte*>(mem) + n * unit, 0, (room - n) * unit);
      out = mem;
      if (units_out) *units_out = n;
      return true;
    }
    // Not well-formed, or too long for the buffer: the general path says why.
  }
  std::vector<std::uint8_t> units;
  auto encode_one = [&](const Value& item) -> bool {
    if (s.encoding == Encoding::bytes && item.is<Bytes>()) {
      units.insert(units.end(), item.as<Bytes>().data.begin(), item.as<Bytes>().data.end());
    } else if (item.is<std::string>()) {
      const std::string& text = item.as<std::string>();
      if (s.terminator != Terminator::none)
        if (auto z = text.find('\0'); z != std::string::npos)
          return fail("the string contains a NUL character at byte " + std::to_string(z) +
                      ", which would end a nul-terminated string");
      if (!encode_text(s.encoding, s.unmappable, text, units, error)) return false;
    } else {
      return fail("expected a string, got " + item.describe());
    }
    return true;
  };
  if (s.terminator == Terminator::double_nul) {
    if (!v.is<List>()) return fail("expected a list of strings (terminator double_nul), got " + v.describe());
    for (const Value& item : v.as<List>()) {
      if (!encode_one(item)) return false;
      if (item.is<std::string>() && item.as<std::string>().empty()) return fail("an empty string cannot be part of a double_nul list");
      units.insert(units.end(), unit, 0);
    }
  } else if (!encode_one(v)) {
    return false;
  }
  const std::size_t n = units.size() / unit;
  const std::size_t term = s.terminator == Terminator::none ? 0 : 1;
  if (capacity_units && n + term > capacity_units)
    return fail("the string needs " + std::to_string(n + term) + " units" + (term ? " with its terminator" : "") +
                " but the buffer holds " + std::to_string(capacity_units));
  if (!length_fits(n)) return false;
  std::size_t total = 0;
  if (out) total = capacity_units * unit;  // inline storage: exactly its capacity
  else if (!(out = allocate(std::max(capacity_units, n + term), total))) return false;
  std::memset(out, 0, total ? total : unit);
  if (!units.empty()) std::memcpy(out, units.data(), units.size());  // an empty vector's data() may be null
  if (units_out) *units_out = n;
  return true;
}

bool Marshaler::string_to_host(const StringInfo& s, const void* data, std::size_t max_units, const Ctx& c, Value& out) {
  const std::size_t unit = encoding_unit(s.encoding);
  // How far a scan for a terminator may go: the capacity, the buffer this call
  // lent (a callee that overwrote the terminator is not read past it), and for
  // memory native code owns, the buffer limit.
  std::size_t bound = max_units ? max_units : SIZE_MAX;
  const std::size_t room = lent_.room(data);
  if (room != SIZE_MAX) bound = std::min(bound, room / unit);
  const bool owned_by_native = bound == SIZE_MAX;
  if (owned_by_native) bound = max_buffer / unit;
  auto unterminated = [&] {
    return fail("the native string has no terminator within " +
                (owned_by_native ? "the limit of " + std::to_string(max_buffer) + " bytes (\"max_buffer\" of the typemap's library)"
                                 : "its buffer of " + std::to_string(bound) + " units"));
  };
  std::size_t n;
  if (s.length.present()) {
    std::uint64_t len = 0;
    if (!count(s.length, c, len)) return false;
    if (max_units && len > max_units) return fail("length " + std::to_string(len) + " exceeds the buffer of " + std::to_string(max_units) + " units");
    if (!readable(data, len, unit, &s.length)) return false;
    n = static_cast<std::size_t>(len);
  } else if (s.terminator == Terminator::none) {
    if (!readable(data, max_units, unit, s.capacity.present() ? &s.capacity : nullptr)) return false;
    n = max_units;
  } else if (s.terminator == Terminator::double_nul) {
    List items;
    const auto* p = static_cast<const std::uint8_t*>(data);
    std::size_t left = bound;  // units not yet scanned
    for (;;) {
      if (left == 0) return unterminated();
      const std::size_t k = units_until_nul(s.encoding, p, left);
      if (k == left) return unterminated();
      if (k == 0) break;
      std::string text;
      if (!decode_text(s.encoding, p, k, text, error)) return false;
      items.push_back(Value(std::move(text)));
      p += (k + 1) * unit;
      left -= k + 1;
    }
    out = Value(std::move(items));
    return true;
  } else {
    n = units_until_nul(s.encoding, data, bound);
    // A full caller-allocated buffer without a terminator is taken whole (as
    // before); memory of unknown size must end within the limit.
    if (n == bound && owned_by_native) return unterminated();
  }
  if (s.encoding == Encoding::bytes) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    out = Value(Bytes{std::vector<std::uint8_t>(p, p + n)});
    return true;
  }
  std::string text;
  if (!decode_text(s.encoding, data, n, text, error)) return false;
  out = Value(std::move(text));
  return true;
}

// ---- arrays behind a pointer ----------------------------------------------------------

bool Marshaler::array_to_native(TypeId array, const Value& v, const Ctx& c, void*& out, bool pin) {
  const TypeDesc& d = reg_.get(array);
  const ArrayInfo& a = d.as<ArrayInfo>();
  const TypeDesc& e = reg_.get(d.ref);
  if (v.is<std::shared_ptr<NativeBox>>() && a.count.source != Count::Source::sentinel) {
    // Host-owned native memory already has the native layout: no conversion.
    const NativeBox& box = *v.as<std::shared_ptr<NativeBox>>();
    if (box.type != d.ref) return fail("native memory of " + reg_.spell(box.type) + " given for an array of " + reg_.spell(d.ref));
    std::uint64_t n = 0;
    if (!count(a.count, c, n)) return false;
    if (box.count < n)
      return fail("the native memory holds " + std::to_string(box.count) + " elements but the count is " +
                  std::to_string(n) + " (" + count_source(a.count) + ")");
    // const: the callee only reads it, so it may read the host's memory
    // (guard mode copies it into a read-only mapping instead).
    if (pin || (c.is_const && !arena_.guard_pages())) {
      out = box.data();
      lent_.add(out, box.size);
    } else {
      std::size_t bytes = 0;
      if (!buffer_bytes(n, e.size, &a.count, bytes)) return false;
      out = arena_.alloc(bytes ? bytes : 1, std::max<std::size_t>(e.align, 1));
      std::memcpy(out, box.data(), bytes);
      lent_.add(out, bytes);
      read_only(c, out);
    }
    return true;
  }
  const bool is_bytes = v.is<Bytes>() && e.size == 1 && (e.kind == Kind::integer);
  if (!is_bytes && !v.is<List>()) return fail("expected a list" + std::string(e.size == 1 && e.kind == Kind::integer ? " or bytes" : "") + ", got " + v.describe());
  const std::size_t have = is_bytes ? v.as<Bytes>().data.size() : v.as<List>().size();
  std::uint64_t n = have;
  const bool sentinel = a.count.source == Count::Source::sentinel;
  if (!sentinel) {
    if (!count(a.count, c, n)) return false;
    if (have < n)
      return fail("the array has " + std::to_string(have) + " elements but its count is " + std::to_string(n) + " (" +
                  count_source(a.count) + ")");
  }
  std::size_t total = 0;
  if (!buffer_bytes(n + (sentinel ? 1 : 0), e.size, &a.count, total)) return false;
  if (is_bytes && c.is_const && !sentinel && n > 0 && !arena_.guard_pages()) {
    // Host bytes already are the native layout of a byte array: in place.
    out = const_cast<std::uint8_t*>(v.as<Bytes>().data.data());
    lent_.add(out, have);
    return true;
  }
  std::byte* mem = static_cast<std::byte*>(arena_.alloc_zeroed(total ? total : 1, std::max<std::size_t>(e.align, 1)));
  lent_.add(mem, total);
  if (is_bytes) {
    if (n) std::memcpy(mem, v.as<Bytes>().data.data(), n);  // blittable: one copy (empty bytes have no address)
  } else {
    const List& items = v.as<List>();
    std::uint64_t i = 0;
    // Numbers: one tight loop, no dispatch per element; anything the loop does
    // not take (a range error, a wrong kind) goes to to_native for its message.
    if (e.kind == Kind::floating && e.size == 8) {
      for (; i < n && items[i].is<double>(); ++i) {
        const double x = items[i].as<double>();
        std::memcpy(mem + i * 8, &x, 8);
      }
    } else if (e.kind == Kind::integer && e.size == 4 && e.has(flag_signed)) {
      for (; i < n && items[i].is<std::int64_t>(); ++i) {
        const std::int64_t x = items[i].as<std::int64_t>();
        if (x < INT32_MIN || x > INT32_MAX) break;
        const auto y = static_cast<std::int32_t>(x);
        std::memcpy(mem + i * 4, &y, 4);
      }
    } else if (e.kind == Kind::integer && e.size == 8 && e.has(flag_signed)) {
      for (; i < n && items[i].is<std::int64_t>(); ++i) {
        const std::int64_t x = items[i].as<std::int64_t>();
        std::memcpy(mem + i * 8, &x, 8);
      }
    }
    Ctx ec;
    ec.frame = c.frame;
    for (; i < n; ++i)
      if (!to_native(d.ref, items[i], mem + i * e.size, ec)) return prefix("element " + std::to_string(i));
  }
  if (sentinel && !a.count.sentinel_null) store_bits(mem + n * e.size, e.size, static_cast<std::uint64_t>(a.count.sentinel));
  read_only(c, mem);
  out = mem;
  return true;
}

bool Marshaler::array_to_host(TypeId array, const void* data, const Ctx& c, Value& out, const Count* length) {
  std::uint64_t n = 0;
  return array_length(array, data, c, n, length) &&
         elements_to_host(reg_.get(array).ref, static_cast<const std::byte*>(data), n, c, out);
}

bool Marshaler::array_length(TypeId array, const void* data, const Ctx& c, std::uint64_t& n, const Count* length) {
  const TypeDesc& d = reg_.get(array);
  const ArrayInfo& a = d.as<ArrayInfo>();
  const TypeDesc& e = reg_.get(d.ref);
  const auto* mem = static_cast<const std::byte*>(data);
  n = 0;
  const Count& which = length && length->present() ? *length : a.count;
  if (which.source == Count::Source::sentinel) {
    // Scan for the sentinel: a null pointer or the integer value, within the
    // buffer this call lent, or within the limit for native memory.
    const std::size_t room = lent_.room(mem);
    const std::uint64_t most = (room != SIZE_MAX ? std::min(room, max_buffer) : max_buffer) / (e.size ? e.size : 1);
    for (;; ++n) {
      if (n >= most)
        return fail("no sentinel within " + (room != SIZE_MAX ? "the buffer the callee was given (" + std::to_string(room) + " bytes)"
                                                              : "the limit of " + std::to_string(max_buffer) +
                                                                    " bytes (\"max_buffer\" of the typemap's library)"));
      const std::byte* p = mem + n * e.size;
      std::uint64_t bits = load_unsigned(p, e.size > 8 ? 8 : e.size);
      if (which.sentinel_null ? bits == 0 : bits == (static_cast<std::uint64_t>(which.sentinel) & (e.size >= 8 ? ~0ull : ((1ull << (e.size * 8)) - 1))))
        break;
    }
  } else if (!count(which, c, n)) {
    return false;
  }
  if (length && length->present() && a.count.source != Count::Source::sentinel) {
    std::uint64_t cap = 0;
    if (count(a.count, c, cap) && !length_within(n, cap)) return false;
  }
  return readable(mem, n, e.size, &which);
}

namespace {
// Native numbers of type N read as host values of type H, for a List's range
// constructor: one allocation, each element made in place, no capacity check
// per element (a random-access iterator: the constructor measures with `-`).
template <class N, class H>
struct NumberReader {
  using iterator_category = std::random_access_iterator_tag;
  using value_type = Value;
  using difference_type = std::ptrdiff_t;
  using pointer = void;
  using reference = Value;
  const std::byte* p;
  Value operator*() const {
    N x;
    std::memcpy(&x, p, sizeof x);
    return Value(static_cast<H>(x));
  }
  NumberReader& operator++() {
    p += sizeof(N);
    return *this;
  }
  NumberReader operator++(int) {
    NumberReader old = *this;
    p += sizeof(N);
    return old;
  }
  difference_type operator-(const NumberReader& o) const { return (p - o.p) / static_cast<difference_type>(sizeof(N)); }
  bool operator==(const NumberReader& o) const { return p == o.p; }
};

// An empty List with room for n values. A large one is memory the allocator
// maps afresh on every call (glibc maps blocks above its mmap threshold, at
// most 32 MB, and unmaps them when freed), and the first touch of each 4 KiB
// page costs more than the Value written there: 10^6 values are 40 MB, some
// 10,000 page faults, most of an out array's conversion. Such memory is
// advised for transparent huge pages before it is touched (Linux, THP
// "always" or "madvise"): 2 MiB pages, 500 times fewer faults. Only a hint:
// where it is not taken, nothing changes.
constexpr std::size_t huge_list_bytes = std::size_t{4} << 20;

List reserved_list(std::uint64_t n) {
  List items;
  items.reserve(static_cast<std::size_t>(n));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(Value);
  if (bytes >= huge_list_bytes) {
    constexpr std::uintptr_t huge = std::uintptr_t{2} << 20;
    const auto at = reinterpret_cast<std::uintptr_t>(items.data());
    const std::uintptr_t begin = (at + huge - 1) & ~(huge - 1), end = (at + bytes) & ~(huge - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // a hint: failure is harmless
  }
#endif
  return items;
}

template <class N, class H>
Value numbers_to_host(const std::byte* mem, std::uint64_t n) {
  if (n * sizeof(Value) < huge_list_bytes) {
    const NumberReader<N, H> first{mem}, last{mem + n * sizeof(N)};
    return Value(List(first, last));
  }
  // Large: room advised for huge pages first, then each element made in place
  // (emplace_back: a Value constructed there, no temporary to move and destroy).
  List items = reserved_list(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    N x;
    std::memcpy(&x, mem + i * sizeof(N), sizeof x);
    items.emplace_back(static_cast<H>(x));
  }
  return Value(std::move(items));
}
}  // namespace

Value lane_list(const LaneOp& e, const std::byte* mem, std::size_t n) {
  if (e.op == LaneOp::Op::sint && e.size == 4) return numbers_to_host<std::int32_t, std::int64_t>(mem, n);
  if (e.op == LaneOp::Op::f64) return numbers_to_host<double, double>(mem, n);
  List items = reserved_list(n);
  for (std::size_t k = 0; k < n; ++k) {
    std::uint64_t wide = 0;
    std::memcpy(&wide, mem + k * e.size, e.size <= 8 ? e.size : 8);
    put_scalar(lane_scalar(e, wide), items.emplace_back());
  }
  return Value(std::move(items));
}

bool Marshaler::elements_to_host(TypeId elem, const std::byte* mem, std::uint64_t n, const Ctx& c, Value& out) {
  const TypeDesc& e = reg_.get(elem);
  if (e.kind == Kind::integer && e.size == 1 && !e.has(flag_signed)) {  // uint8 comes back as bytes
    const auto* p = reinterpret_cast<const std::uint8_t*>(mem);
    out = Value(Bytes{std::vector<std::uint8_t>(p, p + n)});
    return true;
  }
  // n is bounded by the buffer limit in native bytes (readable()), which is
  // enough for the tight loops below: int32 and double elements.
  if (e.kind == Kind::integer && e.size == 4 && e.has(flag_signed)) {
    out = numbers_to_host<std::int32_t, std::int64_t>(mem, n);
    return true;
  }
  if (e.kind == Kind::floating && e.size == 8) {
    out = numbers_to_host<double, double>(mem, n);
    return true;
  }
  // n is bounded by the buffer limit in native bytes, not in host values.
  List items = reserved_list(std::min<std::uint64_t>(n, max_buffer / sizeof(Value)));
  Ctx ec;
  ec.frame = c.frame;
  for (std::uint64_t i = 0; i < n; ++i) {
    Value item;
    if (!to_host(elem, mem + i * e.size, item, ec)) return prefix("element " + std::to_string(i));
    items.push_back(std::move(item));
  }
  out = Value(std::move(items));
  return true;
}

// ---- records ----------------------------------------------------------------------------

bool Marshaler::record_to_native(const TypeDesc& d, const Value& v, std::byte* dst, const Ctx& c) {
  const std::string type_name = d.name.empty() ? std::string(kind_name(d.kind)) : d.name;
  if (!v.is<Record>()) return fail("expected a record of fields for " + type_name + ", got " + v.describe());
  const RecordInfo& rec = d.as<RecordInfo>();
  for (const auto& [name, _] : v.as<Record>()) {
    bool known = false;
    for (const Field& f : rec.fields) known = known || (f.name == name && !(f.is_bitfield && f.bits == 0));
    if (!known) {
      std::string list;
      for (const Field& f : rec.fields)
        if (!(f.is_bitfield && f.bits == 0)) list += (list.empty() ? "" : ", ") + f.name;
      return fail("unknown field '" + name + "' for " + type_name + " (fields: " + list + ")");
    }
  }
  if (d.kind == Kind::union_ && v.as<Record>().size() != 1)
    return fail("a union takes exactly one field, got " + std::to_string(v.as<Record>().size()));
  Ctx fc;
  fc.frame = c.frame;
  fc.rec = &rec;
  fc.host_rec = &v;
  for (std::size_t i = 0; i < rec.fields.size(); ++i) {
    const Field& f = rec.fields[i];
    if (f.is_bitfield && f.bits == 0) continue;
    const Value* fv = v.field(f.name);
    if (static_cast<int>(i) == rec.size_field && !fv) {
      store_bits(dst + f.offset, reg_.get(f.type).size, d.size);
      continue;
    }
    if (!fv) {
      if (d.kind == Kind::union_) continue;
      return fail("missing field '" + f.name + "' of " + type_name);
    }
    fc.nullable = f.nullable;
    if (f.is_bitfield) {
      const TypeDesc& ft = reg_.get(f.type);
      std::uint64_t bits = 0;
      if (ft.kind == Kind::boolean) {
        if (!fv->is<bool>()) return fail("field '" + f.name + "': expected true or false, got " + fv->describe());
        bits = fv->as<bool>() ? static_cast<std::uint64_t>(ft.as<BoolInfo>().true_value) : 0;
      } else {
        std::byte tmp[8] = {};
        if (!to_native(f.type, *fv, tmp, fc)) return prefix("field '" + f.name + "'");
        bits = load_unsigned(tmp, ft.size);
        // The value must fit the field's width.
        const bool is_signed = ft.has(flag_signed);
        std::uint64_t check = 0;
        if (!integer_bits(ft.has(flag_signed) ? Value(load_signed(tmp, ft.size)) : Value(bits), f.bits, is_signed, check, *this,
                          [&] { return "a " + std::to_string(f.bits) + "-bit field"; }))
          return prefix("field '" + f.name + "'");
      }
      write_bitfield(dst, std::uint64_t{f.offset} * 8 + f.bit_offset, f.bits, bits);
      continue;
    }
    if (!to_native(f.type, *fv, dst + f.offset, fc)) return prefix("field '" + f.name + "'");
  }
  return true;
}

bool Marshaler::record_to_host(const TypeDesc& d, const std::byte* src, Value& out, const Ctx& c) {
  const RecordInfo& rec = d.as<RecordInfo>();
  Record r;
  r.reserve(rec.fields.size());
  Ctx fc;
  fc.frame = c.frame;
  fc.rec = &rec;
  fc.native_rec = src;
  for (const Field& f : rec.fields) {
    if (f.is_bitfield) {
      if (f.bits == 0) continue;
      const TypeDesc& ft = reg_.get(f.type);
      std::uint64_t bits = read_bitfield(src, std::uint64_t{f.offset} * 8 + f.bit_offset, f.bits);
      if (ft.kind == Kind::boolean) {
        r.emplace_back(f.name, Value(bits != 0));
        continue;
      }
      if (ft.has(flag_signed) && f.bits < 64 && (bits >> (f.bits - 1)) & 1) bits |= ~0ull << f.bits;  // sign-extend
      std::byte tmp[8];
      store_bits(tmp, ft.size, bits);
      Value fv;
      if (!to_host(f.type, tmp, fv, fc)) return prefix("field '" + f.name + "'");
      r.emplace_back(f.name, std::move(fv));
      continue;
    }
    Value fv;
    fc.nullable = f.nullable;
    if (!to_host(f.type, src + f.offset, fv, fc)) return prefix("field '" + f.name + "'");
    r.emplace_back(f.name, std::move(fv));
  }
  out = Value(std::move(r));
  return true;
}

// ---- one value ---------------------------------------------------------------------------

bool Marshaler::to_native(TypeId t, const Value& v, void* dst_v, const Ctx& c) {
  const TypeDesc& d = reg_.get(t);
  auto* dst = static_cast<std::byte*>(dst_v);
  switch (d.kind) {
    case Kind::void_: return fail("void has no values");
    case Kind::integer: {
      std::uint64_t bits = 0;
      if (!integer_bits(v, d.size * 8, d.has(flag_signed), bits, *this, [&] { return reg_.spell(t); })) return false;
      store_bits(dst, d.size, bits);
      return true;
    }
    case Kind::floating: {
      std::uint64_t bits = 0;
      switch (float_fit(v, d.size == 4, bits)) {
        case Fit::ok: store_bits(dst, d.size, bits); return true;
        case Fit::out_of_range:
          return fail(v.describe() + " is out of range for " + reg_.spell(t) +
                      " (finite values that round to at most 3.40282347e+38 in magnitude)",
                      ErrorId::conversion, v.describe(), reg_.spell(t));
        case Fit::not_number: case Fit::not_integral: case Fit::inexact: break;
      }
      return fail("expected a number for " + reg_.spell(t) + ", got " + v.describe(), ErrorId::conversion, v.describe(),
                  reg_.spell(t));
    }
    case Kind::boolean:
      if (!v.is<bool>())
        return fail("expected true or false for " + reg_.spell(t) + ", got " + v.describe(), ErrorId::conversion,
                    v.describe(), reg_.spell(t));
      store_bits(dst, d.size, v.as<bool>() ? static_cast<std::uint64_t>(d.as<BoolInfo>().true_value) : 0);
      return true;
    case Kind::enum_: {
      const EnumInfo& info = d.as<EnumInfo>();
      const TypeDesc& u = reg_.get(d.ref);
      auto by_name = [&](const Value& item, std::uint64_t& bits) -> bool {
        if (item.is<std::string>()) {
          for (const EnumItem& e : info.items)
            if (e.name == item.as<std::string>()) { bits = static_cast<std::uint64_t>(e.value); return true; }
          std::string names;
          for (const EnumItem& e : info.items) names += (names.empty() ? "" : ", ") + e.name;
          return fail("'" + item.as<std::string>() + "' is not a value of " + reg_.spell(t) + " (" + names + ")");
        }
        return integer_bits(item, u.size * 8, u.has(flag_signed), bits, *this, [&] { return reg_.spell(t); });
      };
      std::uint64_t bits = 0;
      if (info.flags && v.is<List>()) {
        for (const Value& item : v.as<List>()) {
          std::uint64_t one = 0;
          if (!by_name(item, one)) return false;
          bits |= one;
        }
      } else if (!by_name(v, bits)) {
        return false;
      }
      store_bits(dst, d.size, bits);
      return true;
    }
    case Kind::pointer: {
      std::uintptr_t a = 0;
      if (v.is_null()) a = 0;
      else if (v.is<Address>()) a = v.as<Address>().value;
      else if (v.is<std::shared_ptr<NativeBox>>()) {
        const NativeBox& box = *v.as<std::shared_ptr<NativeBox>>();
        void* p = box.data();
        if (c.is_const && arena_.guard_pages()) {  // guard mode: a read-only copy (see Kind::ptr)
          p = arena_.alloc(box.size ? box.size : 1, alignof(std::max_align_t));
          std::memcpy(p, box.data(), box.size);
          read_only(c, p);
        }
        a = reinterpret_cast<std::uintptr_t>(p);
      } else return fail("expected an address ({\"address\": \"0x...\"}), native memory or null, got " + v.describe());
      std::memcpy(dst, &a, sizeof a);
      return true;
    }
    case Kind::handle: {
      const HandleInfo& h = d.as<HandleInfo>();
      std::int64_t value = 0;
      if (v.is_null()) {
        if (!c.nullable)
          return fail("null is not allowed for " + reg_.spell(t) + " (not nullable)", ErrorId::null_not_allowed, "null",
                      reg_.spell(t));
      } else if (v.is<std::shared_ptr<HandleBox>>() && v.as<std::shared_ptr<HandleBox>>()->type == t) {
        if (v.as<std::shared_ptr<HandleBox>>()->released)
          return fail("the " + reg_.spell(t) + " handle was already released", ErrorId::released);
        value = v.as<std::shared_ptr<HandleBox>>()->value;
        for (std::int64_t bad : h.invalid)
          if (bad == value) return fail("an invalid " + reg_.spell(t) + " handle (" + std::to_string(value) + ")");
      } else {
        return fail("expected a " + reg_.spell(t) + " handle, got " + v.describe(), ErrorId::conversion, v.describe(),
                    reg_.spell(t) + " handle");
      }
      store_bits(dst, d.size, static_cast<std::uint64_t>(value));
      return true;
    }
    case Kind::ptr: {
      void* p = nullptr;
      if (!enter(true)) return false;
      Leave leave{depth_};
      if (v.is_null()) {
        if (!c.nullable) return fail_null();
      } else if (v.is<std::shared_ptr<NativeBox>>() && v.as<std::shared_ptr<NativeBox>>()->type == d.ref) {
        const NativeBox& box = *v.as<std::shared_ptr<NativeBox>>();
        if (!native_box_fits(d.ref, box)) return false;
        if (c.is_const && arena_.guard_pages()) {
          // Guard mode: a read-only copy, so a callee that writes despite
          // `const` faults instead of changing the host's memory.
          p = arena_.alloc(box.size ? box.size : 1, std::max<std::uint32_t>(reg_.get(d.ref).align, 1));
          std::memcpy(p, box.data(), box.size);
          read_only(c, p);
        } else {
          p = box.data();  // pinned: the host's own native memory
        }
        lent_.add(p, box.size);
      } else if (reg_.get(d.ref).kind == Kind::array && reg_.get(d.ref).as<ArrayInfo>().count.source != Count::Source::constant) {
        if (!array_to_native(d.ref, v, c, p)) return false;
      } else {
        std::size_t size = 0;
        if (!native_size(d.ref, v, size)) return false;
        p = arena_.alloc_zeroed(size ? size : 1, std::max<std::uint32_t>(reg_.get(d.ref).align, 1));
        lent_.add(p, size ? size : 1);
        Ctx pc;
        pc.frame = c.frame;
        pc.transfer = c.transfer;
        if (!to_native(d.ref, v, p, pc)) return false;
        read_only(c, p);
      }
      std::memcpy(dst, &p, sizeof p);
      return true;
    }
    case Kind::string: {
      const StringInfo& s = d.as<StringInfo>();
      if (s.inline_storage) {
        void* out = dst;
        return string_to_native(s, v, d.size / encoding_unit(s.encoding), out, c);
      }
      void* p = nullptr;
      if (v.is_null()) {
        if (!c.nullable) return fail_null();
      } else {
        std::size_t cap = 0;
        if (s.capacity.present()) {
          std::uint64_t n = 0;
          if (!count(s.capacity, c, n)) return false;
          cap = n;
        }
        if (!string_to_native(s, v, cap, p, c)) return false;
      }
      std::memcpy(dst, &p, sizeof p);
      return true;
    }
    case Kind::array: {  // inline storage: T[N], or a flexible array member
      const TypeDesc& e = reg_.get(d.ref);
      const Count& source = d.as<ArrayInfo>().count;
      std::uint64_t n = 0;
      if (!count(source, c, n)) return false;
      if (source.source != Count::Source::constant) {
        // A flexible array member is written past its struct: into memory
        // sized for it (native_size), which the count must not outgrow.
        std::size_t bytes = 0;
        if (!buffer_bytes(n, e.size, &source, bytes)) return false;
        const std::size_t room = lent_.room(dst);
        if (room != SIZE_MAX && bytes > room)
          return fail(std::to_string(n) + " elements (" + count_source(source) + ") do not fit in the " +
                      std::to_string(room) + " bytes after the struct");
      }
      if (v.is<Bytes>() && e.kind == Kind::integer && e.size == 1) {
        if (v.as<Bytes>().data.size() != n) return fail("expected " + std::to_string(n) + " bytes, got " + std::to_string(v.as<Bytes>().data.size()));
        if (n) std::memcpy(dst, v.as<Bytes>().data.data(), n);
        return true;
      }
      if (!v.is<List>()) return fail("expected a list of " + std::to_string(n) + " elements, got " + v.describe());
      if (v.as<List>().size() != n)
        return fail("expected " + std::to_string(n) + " elements, got " + std::to_string(v.as<List>().size()));
      Ctx ec;
      ec.frame = c.frame;
      for (std::uint64_t i = 0; i < n; ++i)
        if (!to_native(d.ref, v.as<List>()[i], dst + i * e.size, ec)) return prefix("element " + std::to_string(i));
      return true;
    }
    case Kind::struct_: case Kind::union_:
      return record_to_native(d, v, dst, c);
    case Kind::callback: {
      void* code = nullptr;
      if (v.is_null()) {
        if (!c.nullable) return fail_null();
      } else {
        if (!refs) return fail("callbacks are not available here", ErrorId::unsupported);
        std::string why;
        if (!refs->callback_to_native(d.as<CallbackInfo>(), v, code, why)) return fail_from(std::move(why));
      }
      std::memcpy(dst, &code, sizeof code);
      return true;
    }
    case Kind::interface: {
      if (!refs) return fail("objects are not available here", ErrorId::unsupported);
      void* p = nullptr;
      std::string why;
      if (!refs->object_to_native(v, *d.as<InterfaceInfo>().iface, c.transfer, c.nullable, p, why)) return fail_from(std::move(why));
      std::memcpy(dst, &p, sizeof p);
      return true;
    }
  }
  return fail("unhandled kind", ErrorId::internal);
}

bool Marshaler::to_host(TypeId t, const void* src_v, Value& out, const Ctx& c) {
  const TypeDesc& d = reg_.get(t);
  const auto* src = static_cast<const std::byte*>(src_v);
  switch (d.kind) {
    case Kind::void_: out = Value(); return true;
    case Kind::integer:
      out = int_value(load_unsigned(src, d.size), d.size, d.has(flag_signed));
      return true;
    case Kind::floating:
      if (d.size == 4) { float f; std::memcpy(&f, src, 4); out = Value(static_cast<double>(f)); }
      else { double x; std::memcpy(&x, src, 8); out = Value(x); }
      return true;
    case Kind::boolean: out = Value(load_unsigned(src, d.size) != 0); return true;
    case Kind::enum_: {
      const EnumInfo& info = d.as<EnumInfo>();
      const TypeDesc& u = reg_.get(d.ref);
      const std::uint64_t raw = load_unsigned(src, d.size);
      const std::int64_t value = u.has(flag_signed) ? load_signed(src, d.size) : static_cast<std::int64_t>(raw);
      if (!info.flags) {
        for (const EnumItem& e : info.items)
          if (e.value == value) { out = Value(e.name); return true; }
        out = int_value(raw, d.size, u.has(flag_signed));
        return true;
      }
      // Flags: the names of the set bits, then the number of any leftover bits.
      List names;
      std::uint64_t left = raw;
      for (const EnumItem& e : info.items) {
        const std::uint64_t bits = static_cast<std::uint64_t>(e.value);
        if (bits != 0 && (raw & bits) == bits) { names.push_back(Value(e.name)); left &= ~bits; }
      }
      if (left) names.push_back(Value(left));
      out = Value(std::move(names));
      return true;
    }
    case Kind::pointer: {
      std::uintptr_t a;
      std::memcpy(&a, src, sizeof a);
      out = a ? Value(Address{a}) : Value();
      return true;
    }
    case Kind::handle: {
      const HandleInfo& h = d.as<HandleInfo>();
      const std::int64_t value = h.by_pointer ? static_cast<std::int64_t>(load_unsigned(src, d.size)) : load_signed(src, d.size);
      for (std::int64_t bad : h.invalid)
        if (bad == value) { out = Value(); return true; }  // the caller decides whether null is allowed
      if (!handles_) return fail("no handle table", ErrorId::internal);
      out = Value(handles_->wrap(t, d.name, value));
      return true;
    }
    case Kind::ptr: {
      void* p;
      std::memcpy(&p, src, sizeof p);
      if (!p) { out = Value(); return true; }
      if (!enter(false)) return false;
      Leave leave{depth_};
      const TypeDesc& pd = reg_.get(d.ref);
      if (pd.kind == Kind::array && pd.as<ArrayInfo>().count.source != Count::Source::constant)
        return array_to_host(d.ref, p, c, out);
      Ctx pc;
      pc.frame = c.frame;
      pc.transfer = c.transfer;
      return to_host(d.ref, p, out, pc);
    }
    case Kind::string: {
      const StringInfo& s = d.as<StringInfo>();
      if (s.inline_storage) return string_to_host(s, src, d.size / encoding_unit(s.encoding), c, out);
      void* p;
      std::memcpy(&p, src, sizeof p);
      if (!p) { out = Value(); return true; }
      std::size_t max = 0;
      if (s.capacity.present()) {
        std::uint64_t n = 0;
        if (!count(s.capacity, c, n)) return false;
        max = n;
      }
      return string_to_host(s, p, max, c, out);
    }
    case Kind::array: {  // inline storage
      std::uint64_t n = 0;
      const Count& source = d.as<ArrayInfo>().count;
      if (!count(source, c, n)) return false;
      if (source.source != Count::Source::constant && !readable(src, n, reg_.get(d.ref).size, &source)) return false;
      return elements_to_host(d.ref, src, n, c, out);
    }
    case Kind::struct_: case Kind::union_:
      // A union reads back as every member: the host knows which one is live.
      return record_to_host(d, src, out, c);
    case Kind::callback: {
      std::uintptr_t a;
      std::memcpy(&a, src, sizeof a);
      out = a ? Value(Address{a}) : Value();
      return true;
    }
    case Kind::interface: {
      void* p;
      std::memcpy(&p, src, sizeof p);
      if (!p) { out = Value(); return true; }
      if (!refs) return fail("objects are not available here", ErrorId::unsupported);
      std::string why;
      if (!refs->object_to_host(p, *d.as<InterfaceInfo>().iface, c.transfer, out, why)) return fail_from(std::move(why));
      return true;
    }
  }
  return fail("unhandled kind", ErrorId::internal);
}

}  // namespace marshal::engine
