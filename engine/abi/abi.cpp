// marshal engine: ABI knowledge, quarantined.
#include "abi/abi.hpp"

#include <algorithm>
#include <cstring>

namespace marshal::engine {

ffi_type* scalar_ffi_type(const TypeRegistry& reg, const TypeDesc& d) {
  auto integer = [](std::uint32_t size, bool is_signed) -> ffi_type* {
    switch (size) {
      case 1: return is_signed ? &ffi_type_sint8 : &ffi_type_uint8;
      case 2: return is_signed ? &ffi_type_sint16 : &ffi_type_uint16;
      case 4: return is_signed ? &ffi_type_sint32 : &ffi_type_uint32;
      case 8: return is_signed ? &ffi_type_sint64 : &ffi_type_uint64;
      default: return nullptr;
    }
  };
  switch (d.kind) {
    case Kind::void_: return &ffi_type_void;
    case Kind::integer: return integer(d.size, d.has(flag_signed));
    case Kind::floating: return d.size == 4 ? &ffi_type_float : &ffi_type_double;
    case Kind::boolean: return integer(d.size, false);
    case Kind::enum_: return integer(d.size, d.has(flag_signed));
    case Kind::handle:
      return d.as<HandleInfo>().by_pointer ? &ffi_type_pointer : integer(d.size, reg.get(d.ref).has(flag_signed));
    case Kind::pointer: case Kind::ptr: case Kind::string: case Kind::callback: case Kind::interface:
    case Kind::array:  // a parameter of array type decays to a pointer
      return &ffi_type_pointer;
    case Kind::struct_: case Kind::union_: return nullptr;
  }
  return nullptr;
}

ffi_type* FfiTypes::make_struct(std::vector<ffi_type*> elements) {
  elements.push_back(nullptr);
  elements_.push_back(std::move(elements));
  ffi_type& t = types_.emplace_back();
  t.size = 0;
  t.alignment = 0;
  t.type = FFI_TYPE_STRUCT;
  t.elements = elements_.back().data();
  return &t;
}

namespace {

// A scalar piece of an aggregate at its absolute offset.
struct Leaf {
  std::uint64_t offset;
  std::uint32_t size;
  bool is_float;
};

// Collects leaves; reports whether the aggregate is "regular": no unions, no
// bitfields and every leaf at its natural alignment, so that libffi's own
// classification of a struct of its leaves equals the C ABI's.
void collect(const TypeRegistry& reg, TypeId t, std::uint64_t base, std::vector<Leaf>& out, bool& regular,
             bool& misaligned) {
  const TypeDesc& d = reg.get(t);
  switch (d.kind) {
    case Kind::struct_: case Kind::union_:
      if (d.kind == Kind::union_) regular = false;
      for (const Field& f : d.as<RecordInfo>().fields) {
        if (f.is_bitfield) {
          regular = false;
          if (f.bits == 0) continue;
          std::uint64_t first = (base + f.offset) * 8 + f.bit_offset;
          for (std::uint64_t b = first / 8; b < (first + f.bits + 7) / 8; ++b) out.push_back({b, 1, false});
          continue;
        }
        collect(reg, f.type, base + f.offset, out, regular, misaligned);
      }
      return;
    case Kind::array: {
      const TypeDesc& e = reg.get(d.ref);
      const std::uint64_t n = d.as<ArrayInfo>().count.constant;
      for (std::uint64_t i = 0; i < n; ++i) collect(reg, d.ref, base + i * e.size, out, regular, misaligned);
      return;
    }
    case Kind::string: {  // an inline char[N] in a struct: N units
      const std::uint32_t unit = d.align;
      if (base % unit != 0) misaligned = true;
      for (std::uint32_t i = 0; i < d.size / unit; ++i) out.push_back({base + i * unit, unit, false});
      return;
    }
    case Kind::void_: case Kind::integer: case Kind::floating: case Kind::boolean: case Kind::pointer:
    case Kind::ptr: case Kind::enum_: case Kind::handle: case Kind::callback: case Kind::interface:
      if (base % d.size != 0) misaligned = true;
      out.push_back({base, d.size, d.kind == Kind::floating});
      return;
  }
}

}  // namespace

ffi_type* FfiTypes::lower(const TypeRegistry& reg, TypeId t, std::string& error) {
  std::lock_guard lock(mutex_);
  return lower_locked(reg, t, error);
}

ffi_type* FfiTypes::lower_locked(const TypeRegistry& reg, TypeId t, std::string& error) {
  const TypeDesc& d = reg.get(t);
  if (d.kind != Kind::struct_ && d.kind != Kind::union_) {
    ffi_type* s = scalar_ffi_type(reg, d);
    if (!s) error = "no libffi type for " + reg.spell(t);
    return s;
  }
  if (auto it = cache_.find(t); it != cache_.end()) return it->second;
  if (d.has(flag_variable_size)) {
    error = reg.spell(t) + " ends in a flexible array member and cannot be passed by value";
    return nullptr;
  }
  std::vector<Leaf> leaves;
  bool regular = true, misaligned = false;
  collect(reg, t, 0, leaves, regular, misaligned);
  ffi_type* result = nullptr;
  std::vector<std::uint64_t> offsets;  // where C has each element of the libffi struct
  if (regular && !misaligned) {
    // Natural layout: a struct of the members, nested structs as nested ffi
    // structs and inline arrays as repeated elements (libffi's documented way).
    std::vector<ffi_type*> elements;
    bool ok = true;
    for (const Field& f : d.as<RecordInfo>().fields) {
      TypeId ft = f.type;
      std::uint64_t repeat = 1;
      while (reg.get(ft).kind == Kind::array) {
        repeat *= reg.get(ft).as<ArrayInfo>().count.constant;
        ft = reg.get(ft).ref;
      }
      ffi_type* e = nullptr;
      const TypeDesc& fd = reg.get(ft);
      std::uint64_t stride = fd.size;
      if (fd.kind == Kind::string) {  // inline char[N]
        e = fd.align == 1 ? &ffi_type_uint8 : fd.align == 2 ? &ffi_type_uint16 : &ffi_type_uint32;
        repeat *= fd.size / fd.align;
        stride = fd.align;
      } else {
        e = lower_locked(reg, ft, error);
      }
      if (!e) {
        ok = false;
        break;
      }
      for (std::uint64_t i = 0; i < repeat; ++i) {
        elements.push_back(e);
        offsets.push_back(f.offset + i * stride);
      }
    }
    if (ok) {
      result = make_struct(std::move(elements));
      // A packed struct whose fields all sit at their natural alignment may
      // still be laid out differently by libffi (a larger size: no tail
      // padding in C); the eightbyte lowering below then stands in for it.
      std::string why;
      if (!same_layout(reg, t, result, offsets, why)) result = nullptr;
      if (!result) error = why;
    }
  }
  if (!result) {
#if defined(__x86_64__) && !defined(_WIN64)
    offsets.clear();
    result = lower_by_eightbytes(reg, t, offsets, error);
    if (!result) return nullptr;
    if (!same_layout(reg, t, result, offsets, error)) return nullptr;
#else
    if (error.empty())
      error = reg.spell(t) + " contains a union, bitfields or unaligned fields; passing it by value is only "
              "supported on x86-64 System V so far: pass it by pointer";
    return nullptr;
#endif
  }
  error.clear();
  cache_[t] = result;
  return result;
}

// libffi computes the aggregate's size, alignment and element offsets; the
// size and every offset must be C's, so that libffi reads and writes exactly
// the C value's bytes and classifies the same bytes into the same eightbytes.
// The alignment must be C's too, except on x86-64 System V where both at most
// 8 pass the same way: a by-value aggregate's stack slot is 8-aligned for any
// alignment up to 8 and register classes do not depend on it (psABI 3.2.3).
bool FfiTypes::same_layout(const TypeRegistry& reg, TypeId t, ffi_type* lowered,
                           const std::vector<std::uint64_t>& offsets, std::string& error) {
  const TypeDesc& d = reg.get(t);
  std::size_t n = 0;
  while (lowered->elements[n]) ++n;
  std::vector<std::size_t> got(n);
  if (ffi_get_struct_offsets(FFI_DEFAULT_ABI, lowered, got.data()) != FFI_OK || n != offsets.size()) {
    error = "libffi cannot lay out " + reg.spell(t) + "; pass it by pointer";
    return false;
  }
  bool align_ok = lowered->alignment == d.align;
#if defined(__x86_64__) && !defined(_WIN64)
  align_ok = align_ok || (lowered->alignment <= 8 && d.align <= 8);
#endif
  bool offsets_ok = true;
  for (std::size_t i = 0; i < n; ++i) offsets_ok = offsets_ok && got[i] == offsets[i];
  if (lowered->size != d.size || !align_ok || !offsets_ok) {
    error = "libffi lays out " + reg.spell(t) + " as " + std::to_string(lowered->size) + " bytes aligned to " +
            std::to_string(lowered->alignment) + (offsets_ok ? "" : " with other field offsets") + ", not " +
            std::to_string(d.size) + " aligned to " + std::to_string(d.align) + "; pass it by pointer";
    return false;
  }
  return true;
}

// Unions, bitfields and packed layouts: libffi has no such types, so build a
// struct that the System V x86-64 classifier (psABI 3.2.3) sorts into the same
// classes: each eightbyte is SSE when every leaf in it is floating point, else
// INTEGER; aggregates over 16 bytes are MEMORY, where only size and alignment
// matter. An SSE eightbyte of an aggregate aligned below 8 is floats (the
// register holds the same 8 bytes as for a double; a double element would
// raise libffi's alignment and pad the size past C's). Below 4, those floats
// are byte_aligned_float: libffi's float alignment of 4 would round a packed
// size such as 9, 10 or 11 up to 12. An aggregate of at most 16 bytes with
// unaligned fields is MEMORY, which libffi cannot express, so it is refused.
// offsets: where each element lies.
namespace {
// A float aligned to 1, for SSE eightbytes of packed aggregates. libffi's
// x86-64 classifier reads an element's type code (FLOAT: an SSE eightbyte),
// size and offset; its alignment only places the element (here at the offsets
// C has) and sets the aggregate's, which stays C's. Stack slots are 8-aligned
// whatever it is (ffi64.c).
ffi_type byte_aligned_float = {4, 1, FFI_TYPE_FLOAT, nullptr};
}  // namespace

ffi_type* FfiTypes::lower_by_eightbytes(const TypeRegistry& reg, TypeId t, std::vector<std::uint64_t>& offsets,
                                        std::string& error) {
  const TypeDesc& d = reg.get(t);
  std::vector<Leaf> leaves;
  bool regular = true, misaligned = false;
  collect(reg, t, 0, leaves, regular, misaligned);
  ffi_type* unit_int = d.align >= 8 ? &ffi_type_uint64 : d.align == 4 ? &ffi_type_uint32
                       : d.align == 2 ? &ffi_type_uint16 : &ffi_type_uint8;
  std::vector<ffi_type*> elements;
  auto push = [&](ffi_type* e, std::uint64_t at) {
    elements.push_back(e);
    offsets.push_back(at);
  };
  if (d.size > 16) {
    for (std::uint32_t i = 0; i < d.size / unit_int->size; ++i) push(unit_int, i * unit_int->size);
    return make_struct(std::move(elements));
  }
  if (misaligned) {
    error = reg.spell(t) + " has unaligned fields (pack), which the System V ABI passes in memory; libffi cannot "
            "express that by value: pass it by pointer";
    return nullptr;
  }
  for (std::uint32_t eb = 0; eb * 8 < d.size; ++eb) {
    const std::uint64_t lo = eb * 8, hi = std::min<std::uint64_t>(lo + 8, d.size);
    bool any = false, all_float = true, has_double = false;
    for (const Leaf& l : leaves)
      if (l.offset < hi && l.offset + l.size > lo) {
        any = true;
        all_float = all_float && l.is_float;
        has_double = has_double || (l.is_float && l.size == 8);
      }
    const std::uint64_t n = hi - lo;
    if (any && all_float) {
      if (has_double && d.align >= 8) push(&ffi_type_double, lo);
      else for (std::uint64_t k = 0; k < n / 4; ++k)
        push(d.align >= 4 ? &ffi_type_float : &byte_aligned_float, lo + 4 * k);
    } else {
      const std::uint64_t unit = unit_int->size;
      for (std::uint64_t k = 0; k < n / unit; ++k) push(unit_int, lo + unit * k);
    }
  }
  return make_struct(std::move(elements));
}

bool return_widened(const TypeDesc& d) {
  return (d.kind == Kind::integer || d.kind == Kind::boolean || d.kind == Kind::enum_ ||
          (d.kind == Kind::handle && !d.as<HandleInfo>().by_pointer)) &&
         d.size < sizeof(ffi_arg);
}

void store_return(const TypeDesc& d, const std::byte* value, void* ret) {
  if (return_widened(d)) {
    const bool is_signed = d.has(flag_signed);
    ffi_arg wide = 0;
    switch (d.size) {
      case 1: { std::uint8_t v; std::memcpy(&v, value, 1); wide = is_signed ? static_cast<ffi_arg>(static_cast<std::int8_t>(v)) : v; break; }
      case 2: { std::uint16_t v; std::memcpy(&v, value, 2); wide = is_signed ? static_cast<ffi_arg>(static_cast<std::int16_t>(v)) : v; break; }
      default: { std::uint32_t v; std::memcpy(&v, value, 4); wide = is_signed ? static_cast<ffi_arg>(static_cast<std::int32_t>(v)) : v; break; }
    }
    std::memcpy(ret, &wide, sizeof wide);
  } else {
    std::memcpy(ret, value, d.size);
  }
}

void read_return(const TypeDesc& d, const void* rvalue, void* dst) {
  if (!return_widened(d)) {
    std::memcpy(dst, rvalue, d.size);
    return;
  }
  // libffi widens integral returns narrower than a register to ffi_arg.
  ffi_arg wide;
  std::memcpy(&wide, rvalue, sizeof wide);
  switch (d.size) {
    case 1: { std::uint8_t v = static_cast<std::uint8_t>(wide); std::memcpy(dst, &v, 1); break; }
    case 2: { std::uint16_t v = static_cast<std::uint16_t>(wide); std::memcpy(dst, &v, 2); break; }
    case 4: { std::uint32_t v = static_cast<std::uint32_t>(wide); std::memcpy(dst, &v, 4); break; }
    default: std::memcpy(dst, &wide, d.size);
  }
}

std::size_t return_buffer_size(const TypeDesc& d) { return std::max<std::size_t>({d.size, sizeof(ffi_arg), 16}); }

const char* eightbyte_class_name(EightbyteClass c) {
  switch (c) {
    case EightbyteClass::none: return "NO_CLASS";
    case EightbyteClass::integer: return "INTEGER";
    case EightbyteClass::sse: return "SSE";
  }
  return "?";
}

// psABI 3.2.3: an aggregate over two eightbytes, or with a field not at its
// natural alignment, is MEMORY; otherwise each eightbyte is the merge of the
// classes of the scalars in it (INTEGER wins over SSE, NO_CLASS yields to
// both; every member of a union counts, bitfields are INTEGER).
SysvClasses sysv_classify(const TypeRegistry& reg, TypeId t) {
  const TypeDesc& d = reg.get(t);
  SysvClasses c;
  if (d.kind != Kind::struct_ && d.kind != Kind::union_) {
    c.eightbytes = {d.kind == Kind::floating ? EightbyteClass::sse : EightbyteClass::integer};
    return c;
  }
  if (d.size > 16 || d.size == 0) {
    c.memory = true;
    c.why = d.size ? "larger than 16 bytes" : "empty";
    return c;
  }
  std::vector<Leaf> leaves;
  bool regular = true, misaligned = false;
  collect(reg, t, 0, leaves, regular, misaligned);
  if (misaligned) {
    c.memory = true;
    c.why = "a field is not at its natural alignment (packed)";
    for (const Leaf& l : leaves)
      if (l.size && l.offset % l.size != 0) {
        c.why = "a field at offset " + std::to_string(l.offset) + " is not aligned to its " + std::to_string(l.size) +
                " bytes (packed)";
        break;
      }
    return c;
  }
  for (std::uint32_t eb = 0; eb * 8 < d.size; ++eb) {
    bool all_float = true, any = false;
    for (const Leaf& l : leaves)
      if (l.offset < eb * 8 + 8 && l.offset + l.size > eb * 8) {
        any = true;
        all_float = all_float && l.is_float;
      }
    c.eightbytes.push_back(!any ? EightbyteClass::none : all_float ? EightbyteClass::sse : EightbyteClass::integer);
  }
  return c;
}

bool returns_in_memory(const TypeRegistry& reg, TypeId t) {
#if defined(__x86_64__) && !defined(_WIN64)
  const TypeDesc& d = reg.get(t);
  return (d.kind == Kind::struct_ || d.kind == Kind::union_) && sysv_classify(reg, t).memory;
#else
  (void)reg; (void)t;
  return false;
#endif
}

bool lower_arguments(const TypeRegistry& reg, const std::vector<TypeId>& by_value, const std::vector<ffi_type*>& types,
                     TypeId returns, std::vector<LoweredArg>& out) {
  bool split_any = false;
#if defined(__x86_64__) && !defined(_WIN64)
  // Registers used so far, as libffi counts them: a return in memory passes
  // its address in %rdi first (psABI 3.2.3, "Returning of Values").
  int gpr = returns_in_memory(reg, returns) ? 1 : 0, sse = 0;
  for (std::uint32_t i = 0; i < by_value.size(); ++i) {
    const TypeDesc& d = reg.get(by_value[i]);
    if (d.kind == Kind::struct_ || d.kind == Kind::union_) {
      const SysvClasses sc = sysv_classify(reg, by_value[i]);
      if (sc.memory) {
        out.push_back({i, 0, types[i]});  // MEMORY: on the stack
        continue;
      }
      const std::vector<EightbyteClass>& classes = sc.eightbytes;
      // An eightbyte of padding only (NO_CLASS) is lowered as integers, so
      // libffi counts it as INTEGER: count it as libffi does.
      int need_gpr = 0, need_sse = 0;
      for (EightbyteClass c : classes) (c == EightbyteClass::sse ? need_sse : need_gpr)++;
      if (gpr + need_gpr > 6 || sse + need_sse > 8) {
        out.push_back({i, 0, types[i]});  // does not fit: the whole struct goes on the stack
        continue;
      }
      const bool affected = classes.size() == 2 && classes[0] != EightbyteClass::sse &&
                            classes[1] == EightbyteClass::sse && gpr == 5 && sse >= 1;
      if (affected) {
        // Two scalars in the same registers: a full INTEGER eightbyte, then the SSE one.
        out.push_back({i, 0, &ffi_type_uint64});
        out.push_back({i, 8, d.size - 8 <= 4 ? &ffi_type_float : &ffi_type_double});
        split_any = true;
      } else {
        out.push_back({i, 0, types[i]});
      }
      gpr += need_gpr;
      sse += need_sse;
      continue;
    }
    out.push_back({i, 0, types[i]});
    if (d.kind == Kind::floating) {
      if (sse < 8) ++sse;
    } else if (gpr < 6) {
      ++gpr;
    }
  }
#else
  (void)returns;
  for (std::uint32_t i = 0; i < by_value.size(); ++i) out.push_back({i, 0, types[i]});
#endif
  return split_any;
}

// ---- refusals the typemap alone shows ---------------------------------------------------

std::string by_value_refusal(const TypeRegistry& reg, TypeId t) {
  const TypeDesc& d = reg.get(t);
  if (d.kind != Kind::struct_ && d.kind != Kind::union_) {
    if (d.kind == Kind::ptr || d.kind == Kind::array || d.kind == Kind::string) return "";  // passed as pointers
    return scalar_ffi_type(reg, d) ? "" : "no libffi type for " + reg.spell(t);
  }
  FfiTypes scratch;
  std::string error;
  return scratch.lower(reg, t, error) ? "" : error;
}

namespace {

// Whether a value of t written to native memory would point into memory the
// engine allocates for the write (pointers, strings behind pointers, the tail
// of a variable-size struct): from a host function that memory is scratch,
// gone when it returns.
bool points_into_scratch(const TypeRegistry& reg, TypeId t) {
  const TypeDesc& d = reg.get(t);
  switch (d.kind) {
    case Kind::void_: case Kind::integer: case Kind::floating: case Kind::boolean: case Kind::pointer:
    case Kind::enum_: case Kind::handle: case Kind::callback: case Kind::interface:
      return false;  // a value, or a reference that carries its own lifetime
    case Kind::ptr: return true;
    case Kind::string: return !d.as<StringInfo>().inline_storage;
    case Kind::array:
      return d.as<ArrayInfo>().count.source != Count::Source::constant || points_into_scratch(reg, d.ref);
    case Kind::struct_: case Kind::union_:
      if (d.has(flag_variable_size)) return true;
      for (const Field& f : d.as<RecordInfo>().fields)
        if (points_into_scratch(reg, f.type)) return true;
      return false;
  }
  return true;
}

}  // namespace

std::string callback_param_refusal(const TypeRegistry& reg, const Param& p) {
  if (p.dir == Dir::in || p.type == no_type) return "";
  const TypeDesc& d = reg.get(p.type);
  TypeId written = no_type;  // what the host writes into native memory
  switch (d.kind) {
    case Kind::ptr: {
      const TypeDesc& r = reg.get(d.ref);
      written = r.kind == Kind::array || r.kind == Kind::string ? no_type : d.ref;
      if (r.kind == Kind::array) written = r.ref;
      if (r.kind == Kind::string) return "an out or inout string of a callback is {\"string\": ..., \"capacity\": N} "
                                         "itself (the buffer native code gives), not a pointer to one";
      break;
    }
    case Kind::array: written = d.ref; break;
    case Kind::string: return "";  // into the buffer native code gives (capacity)
    case Kind::void_: case Kind::integer: case Kind::floating: case Kind::boolean: case Kind::pointer:
    case Kind::struct_: case Kind::union_: case Kind::enum_: case Kind::handle: case Kind::callback:
    case Kind::interface:
      return "out and inout parameters of callbacks must be {\"ptr\": T}, an array or a string (the host writes "
             "into memory native code gives)";
  }
  if (points_into_scratch(reg, written))
    return "the host cannot write " + reg.spell(written) + " into memory native code gives: it would point into memory "
           "that is gone when the host function returns (write values, inline arrays and strings, or an opaque pointer)";
  return "";
}

void signature_refusals(const TypeRegistry& reg, const Signature& sig, bool is_callback,
                        const std::function<void(int, const std::string&)>& report) {
  for (std::size_t i = 0; i < sig.params.size(); ++i) {
    const Param& p = sig.params[i];
    if (p.type == no_type) continue;
    const TypeDesc& d = reg.get(p.type);
    if (is_callback)  // what the host may write for native code (callback.hpp)
      if (std::string why = callback_param_refusal(reg, p); !why.empty()) {
        report(static_cast<int>(i), why);
        continue;
      }
    if (d.kind == Kind::struct_ || d.kind == Kind::union_)
      if (std::string why = by_value_refusal(reg, p.type); !why.empty()) report(static_cast<int>(i), why);
  }
  if (sig.returns == no_type) return;
  const TypeDesc& r = reg.get(sig.returns);
  if (!is_callback && r.kind == Kind::callback) {
    report(-1, "returning callbacks (native function pointers) to the host is not supported; return a pointer instead");
    return;
  }
  if (r.kind == Kind::struct_ || r.kind == Kind::union_)
    if (std::string why = by_value_refusal(reg, sig.returns); !why.empty()) report(-1, why);
}

bool ffi_abi_of(CallConv cc, ffi_abi& out, std::string& error) {
  switch (cc) {
    case CallConv::default_: out = FFI_DEFAULT_ABI; return true;
#if (defined(__i386__) || defined(_M_IX86)) && !defined(_WIN32)
    // libffi's 32-bit x86 conventions (ffitarget.h, non-Windows).
    case CallConv::stdcall: out = FFI_STDCALL; return true;
    case CallConv::fastcall: out = FFI_FASTCALL; return true;
    case CallConv::thiscall: out = FFI_THISCALL; return true;
#else
    case CallConv::stdcall: case CallConv::fastcall: case CallConv::thiscall: break;
#endif
  }
  const char* name = cc == CallConv::stdcall ? "stdcall" : cc == CallConv::fastcall ? "fastcall" : "thiscall";
#if defined(__x86_64__) && !defined(_WIN64)
  const char* target = "x86-64 System V";
#elif defined(__x86_64__)
  const char* target = "x86-64 Windows";
#elif defined(__aarch64__)
  const char* target = "AArch64";
#else
  const char* target = "this target";
#endif
  error = std::string("calling convention ") + name + " does not exist on " + target + " (only \"default\")";
  return false;
}

TypeId promote_variadic(const TypeRegistry& reg, TypeId t) {
  const TypeDesc& d = reg.get(t);
  if (d.kind == Kind::floating && d.size < sizeof(double)) return reg.primitive(Prim::c_double);
  if ((d.kind == Kind::integer || d.kind == Kind::boolean || d.kind == Kind::enum_) && d.size < sizeof(int))
    return reg.primitive(Prim::c_int);
  return t;
}

// ---- the specialized invoker ---------------------------------------------------------------

bool choose_invoker(const TypeRegistry& reg, const std::vector<TypeId>& by_value, TypeId returns, Invoker& out) {
  // x86-64 System V only: the same reasoning holds for AArch64 (AAPCS64: eight
  // x and eight v registers, the callee ignores the unused ones), but no test
  // of this project has run there, so other targets take ffi_call until one does.
#if defined(__x86_64__) && !defined(_WIN32)
  Invoker inv;
  int ints = 0, floats = 0;
  for (TypeId t : by_value) {
    Invoker::Arg a;
    if (t == no_type) {
      a.cls = Invoker::Cls::integer;  // a pointer the plan made
    } else {
      const TypeDesc& d = reg.get(t);
      switch (d.kind) {
        case Kind::integer: case Kind::boolean: case Kind::enum_: case Kind::handle: case Kind::pointer:
        case Kind::ptr: case Kind::callback: case Kind::interface:
          if (d.size == 0 || d.size > 8) return false;
          a.cls = Invoker::Cls::integer;
          a.size = static_cast<std::uint8_t>(d.size);
          a.is_signed = d.has(flag_signed);
          break;
        case Kind::floating:
          if (d.size != 4 && d.size != 8) return false;
          a.cls = d.size == 8 ? Invoker::Cls::f64 : Invoker::Cls::f32;
          break;
        case Kind::string: case Kind::array:
          a.cls = Invoker::Cls::integer;
          break;
        case Kind::void_: case Kind::struct_: case Kind::union_:
          return false;
      }
    }
    if (a.cls == Invoker::Cls::integer ? ++ints > 6 : ++floats > 8) return false;
    inv.args.push_back(a);
  }
  const TypeDesc& r = reg.get(returns);
  switch (r.kind) {
    case Kind::void_: inv.ret = Invoker::Ret::void_; break;
    case Kind::ptr: case Kind::string: case Kind::array:  // returned as a pointer
      inv.ret = Invoker::Ret::integer;
      break;
    case Kind::integer: case Kind::boolean: case Kind::enum_: case Kind::handle: case Kind::pointer:
    case Kind::callback: case Kind::interface:
      if (r.size > 8) return false;
      inv.ret = Invoker::Ret::integer;
      break;
    case Kind::floating:
      if (r.size != 4 && r.size != 8) return false;
      inv.ret = r.size == 8 ? Invoker::Ret::f64 : Invoker::Ret::f32;
      break;
    case Kind::struct_: case Kind::union_:
      return false;
  }
  inv.ints_only = floats == 0;
  out = std::move(inv);
  return true;
#else
  (void)reg; (void)by_value; (void)returns; (void)out;
  return false;
#endif
}

}  // namespace marshal::engine
