// marshal command line: `marshal explain TYPEMAP FUNCTION`.
// For a person reading a crash and for the docs: how each parameter and the
// return travel on this target (registers or stack, eightbyte classes, hidden
// return pointer) and what the engine does with them at each stage of a call
// (marshal: copies and allocations, pin, unmarshal: copy-back, cleanup: frees).
#include "tools.hpp"

#include "abi/abi.hpp"
#include "typemap/context.hpp"

#include <cstdio>
#include <string>
#include <vector>

namespace marshal::cli {
using namespace marshal::engine;

namespace {

// ---- x86-64 System V register places ------------------------------------------------
// The classes come from the engine's own classifier (abi.hpp: sysv_classify).

struct Registers {
  int gpr = 0, sse = 0;
  static constexpr const char* gprs[] = {"rdi", "rsi", "rdx", "rcx", "r8", "r9"};
};

// Where an argument of these classes goes, taking registers from `regs`.
// Rule: if all its eightbytes fit the remaining registers they take them in
// order; otherwise the whole argument goes on the stack.
std::string place(const SysvClasses& c, Registers& regs, std::uint32_t size) {
  if (c.memory) return "on the stack (class MEMORY: " + c.why + "; a " + std::to_string(size) + "-byte copy)";
  int need_gpr = 0, need_sse = 0;
  for (EightbyteClass e : c.eightbytes) (e == EightbyteClass::sse ? need_sse : need_gpr) += 1;
  if (regs.gpr + need_gpr > 6 || regs.sse + need_sse > 8)
    return "on the stack (no " + std::string(regs.gpr + need_gpr > 6 ? "integer" : "vector") + " register left)";
  std::string where;
  for (EightbyteClass e : c.eightbytes) {
    if (!where.empty()) where += " + ";
    if (e == EightbyteClass::sse) where += "xmm" + std::to_string(regs.sse++);
    else where += Registers::gprs[regs.gpr++];
  }
  if (c.eightbytes.size() > 1) {
    std::string cls;
    for (EightbyteClass e : c.eightbytes) cls += (cls.empty() ? "" : ", ") + std::string(eightbyte_class_name(e));
    where += " (eightbytes " + cls + ")";
  } else {
    where += std::string(" (") +
             eightbyte_class_name(c.eightbytes.empty() ? EightbyteClass::none : c.eightbytes[0]) + ")";
  }
  return "in " + where;
}

// ---- what the engine does ---------------------------------------------------------------

std::string count_text(const Count& n, bool before) {
  switch (n.source) {
    case Count::Source::none: return "?";
    case Count::Source::constant: return std::to_string(n.constant);
    case Count::Source::param: return "the value of parameter '" + n.name + "'" + (before ? " before the call" : " after the call");
    case Count::Source::field: return "field '" + n.name + "'";
    case Count::Source::return_value: return "the return value";
    case Count::Source::sentinel:
      return n.sentinel_null ? std::string("up to a NULL element") : "up to the element " + std::to_string(n.sentinel);
  }
  return "?";
}

std::string free_text(const FreeWith& fw) {
  switch (fw.how) {
    case FreeWith::How::unset: return "";
    case FreeWith::How::none: return "not freed (borrowed: the library keeps it)";
    case FreeWith::How::free: return "freed by the engine with the C library's free()";
    case FreeWith::How::symbol: return "freed by the engine with " + fw.library + "!" + fw.name + "()";
    case FreeWith::How::function: return "freed by the engine with " + fw.name + "() of this typemap";
  }
  return "";
}

std::string string_text(const StringInfo& s) {
  std::string t = std::string(encoding_name(s.encoding));
  switch (s.terminator) {
    case Terminator::nul: t += ", nul-terminated"; break;
    case Terminator::none: t += ", not terminated"; break;
    case Terminator::double_nul: t += ", a list ended by two nuls"; break;
  }
  return t;
}

// What the engine does for parameter p, stage by stage.
std::vector<std::string> engine_steps(const TypeRegistry& reg, const Param& p) {
  const TypeDesc& d = reg.get(p.type);
  std::vector<std::string> s;
  const bool in = p.dir != Dir::out, out = p.dir != Dir::in;
  const std::string null_text = p.nullable ? "host null passes NULL" : "host null is an error (not nullable)";
  if (p.value.present()) {  // extension "value": the host gives nothing
    const Computed& c = p.value;
    s.push_back(std::string("marshal: computed by the engine, not given by the host: ") +
                (c.measure == Computed::Measure::size_of
                     ? "sizeof " + reg.spell(c.type) + " = " + std::to_string(c.size)
                     : std::string(c.measure == Computed::Measure::count_of ? "the number of elements (code units) of "
                                                                           : "the size in bytes of ") +
                           "'" + c.name + "' as passed (without a terminator)") +
                "; range-checked against " + reg.spell(p.type));
    return s;
  }
  switch (d.kind) {
    case Kind::integer: case Kind::floating: case Kind::boolean: case Kind::enum_:
      s.push_back("marshal: the host value is range-checked and converted to " + std::to_string(d.size) +
                  " native bytes in the argument slot; nothing is allocated or copied back");
      break;
    case Kind::pointer:
      s.push_back("marshal: the host's address value is passed as is (null or {\"address\": ...}); the engine "
                  "neither reads nor frees what it points to");
      break;
    case Kind::handle: {
      const HandleInfo& h = d.as<HandleInfo>();
      s.push_back("marshal: the native value of the host's handle object (invalid values are rejected)");
      if (!h.release.empty())
        s.push_back("cleanup: none per call; " + h.release + "() releases the handle when the host drops its last "
                    "reference");
      break;
    }
    case Kind::callback: {
      const CallbackInfo& cb = d.as<CallbackInfo>();
      if (cb.scope == Scope::call)
        s.push_back("marshal: a closure (native trampoline) calling the host function is taken from the pool; "
                    "cleanup: it is deactivated when the call returns (a later call reaches a trap naming it)");
      else
        s.push_back("marshal: the host's registered callback's closure; it lives until the host releases it "
                    "(the host keeps it alive)");
      if (cb.sig && !cb.sig->on_error.present)
        s.push_back("note: the callback has no on_error: a failing host function returns zero bits to native code");
      break;
    }
    case Kind::interface:
      s.push_back("marshal: the object's interface pointer (a wrapped native object, or a vtable the engine builds "
                  "over a host object); no reference is transferred");
      break;
    case Kind::struct_: case Kind::union_:
      s.push_back(std::string("marshal: the host record is ") +
                  (d.has(flag_blittable) ? "copied as is (blittable)" : "converted field by field") + " into a " +
                  std::to_string(d.size) + "-byte native copy passed by value; nothing is copied back");
      break;
    case Kind::ptr: {
      const TypeDesc& e = reg.get(d.ref);
      const std::string size = std::to_string(e.size) + " bytes for one " + reg.spell(d.ref);
      if (in)
        s.push_back("marshal: the host value is converted into " + size + " of per-call arena storage, whose address "
                    "is passed; " + null_text);
      else
        s.push_back("marshal: " + size + " of zeroed per-call arena storage, whose address is passed (the host "
                    "supplies nothing)");
      if (out) s.push_back("unmarshal: the storage is converted back into result field '" + p.name + "'");
      else s.push_back("unmarshal: nothing (an in pointer: the host value is never modified)");
      if (!free_text(p.free_with).empty())
        s.push_back("cleanup: the pointer the callee stored there is " + free_text(p.free_with) +
                    ", after conversion");
      break;
    }
    case Kind::array: {
      const ArrayInfo& a = d.as<ArrayInfo>();
      const TypeDesc& e = reg.get(d.ref);
      const std::string elems = reg.spell(d.ref) + " elements of " + std::to_string(e.size) + " byte" +
                                (e.size == 1 ? "" : "s") + " (N: " + count_text(a.count, true) + ")";
      if (p.dir == Dir::out)
        s.push_back("marshal: N " + elems + " of zeroed per-call arena storage, whose address is passed");
      else
        s.push_back("marshal: the host array (at least N " + elems + ") is " +
                    (p.dir == Dir::inout ? "copied into the arena, or, when the host passes native memory, pinned "
                                           "and passed in place"
                                         : "copied once into per-call arena storage") +
                    "; " + null_text);
      if (out)
        s.push_back("unmarshal: " +
                    (a.length.present() ? "as many elements as " + count_text(a.length, false) + " says"
                                        : "N elements") +
                    " are copied back into result field '" + p.name + "'");
      break;
    }
    case Kind::string: {
      const StringInfo& si = d.as<StringInfo>();
      if (p.dir == Dir::out)
        s.push_back(std::string("marshal: a buffer of ") + (si.capacity.present() ? "N " : "one ") + string_text(si) +
                    " unit(s) of zeroed per-call arena storage, whose address is passed" +
                    (si.capacity.present() ? " (N: " + count_text(si.capacity, true) + ")" : ""));
      else
        s.push_back("marshal: the host string is encoded as " + string_text(si) +
                    (si.capacity.present() ? " into a buffer of " + count_text(si.capacity, true) + " unit(s)" : "") +
                    " in per-call arena storage, whose address is passed; " + null_text);
      if (out)
        s.push_back("unmarshal: decoded up to " +
                    (si.length.present() ? "as many units as " + count_text(si.length, false) + " says"
                                         : std::string("the terminator")) +
                    " into result field '" + p.name + "'");
      break;
    }
    case Kind::void_: break;
  }
  s.push_back("cleanup: per-call arena storage is released in one step when the call ends, on success or failure");
  if (d.kind == Kind::integer || d.kind == Kind::floating || d.kind == Kind::boolean || d.kind == Kind::enum_ ||
      d.kind == Kind::pointer)
    s.pop_back();  // nothing of theirs lives in the arena
  return s;
}

bool by_pointer(Kind k) { return k == Kind::ptr || k == Kind::array || k == Kind::string; }

}  // namespace

int cmd_explain(const Args& args) {
  if (wants_help(args)) {
    std::printf(
        "usage: marshal explain TYPEMAP FUNCTION\n"
        "\n"
        "Describes how a call of FUNCTION travels on this target: each parameter's\n"
        "register or stack place (x86-64 System V: its eightbyte classes, whether it\n"
        "is split or passed in memory, the hidden return pointer), and what the engine\n"
        "copies, pins or allocates for it, what it copies back and who frees what.\n");
    return 0;
  }
  if (args.size() != 2) {
    std::fprintf(stderr, "marshal explain: expected TYPEMAP FUNCTION (see marshal explain --help)\n");
    return 2;
  }
  Context ctx;
  const Typemap* tm = load_or_report(ctx, args[0], true);
  if (!tm) return 1;
  auto it = tm->functions.find(args[1]);
  if (it == tm->functions.end()) {
    std::string names;
    for (const auto& [n, f] : tm->functions) names += (names.empty() ? "" : ", ") + n;
    std::fprintf(stderr, "marshal explain: %s: no function '%s' (functions: %s)\n", args[0].c_str(), args[1].c_str(),
                 names.empty() ? "none" : names.c_str());
    return 1;
  }
  const Function& fn = it->second;
  const TypeRegistry& reg = ctx.types();
#if defined(__x86_64__) && !defined(_WIN32)
  const bool sysv = true;
  std::printf("%s (%s: %s), symbol %s%s, on x86-64 System V:\n", fn.name.c_str(), args[0].c_str(), fn.pointer.c_str(),
              fn.symbol.c_str(), fn.version.empty() ? "" : ("@" + fn.version).c_str());
#else
  const bool sysv = false;
  std::printf("%s (%s: %s), symbol %s (register places are described for x86-64 System V only; libffi "
              "applies this target's rules):\n",
              fn.name.c_str(), args[0].c_str(), fn.pointer.c_str(), fn.symbol.c_str());
#endif
  Registers regs;
  const TypeDesc& rd = reg.get(fn.returns);
  // ---- the return ----
  std::string ret_place;
  if (rd.kind == Kind::void_) {
    ret_place = "nothing";
  } else if (by_pointer(rd.kind)) {
    ret_place = "a pointer in rax";
  } else {
    const SysvClasses c = sysv_classify(reg, fn.returns);
    if (c.memory) {
      // Rule: a MEMORY return is written to caller storage whose address is a hidden first argument.
      ret_place = "in memory: the caller passes a hidden pointer to " + std::to_string(rd.size) +
                  " bytes in rdi (the parameters start at rsi), returned again in rax (" + c.why + ")";
      ++regs.gpr;
    } else {
      int gi = 0, si = 0;
      static constexpr const char* rets[] = {"rax", "rdx"};
      for (EightbyteClass e : c.eightbytes) {
        if (!ret_place.empty()) ret_place += " + ";
        ret_place += e == EightbyteClass::sse ? "xmm" + std::to_string(si++) : std::string(rets[gi++]);
      }
      ret_place = "in " + ret_place;
      if (rd.size < 8 && rd.kind != Kind::floating)
        ret_place += " (the engine reads the low " + std::to_string(rd.size) + " bytes: the upper bits are unspecified)";
    }
  }
  std::printf("  returns %s: %s\n", reg.spell(fn.returns).c_str(), sysv ? ret_place.c_str() : "as this ABI returns it");
  if (by_pointer(rd.kind)) {
    std::printf("    unmarshal: the %s is converted to the host first, then %s\n", reg.spell(fn.returns).c_str(),
                free_text(fn.free_with).c_str());
    std::printf("    a NULL result %s\n", fn.return_nullable ? "becomes host null" : "is an error naming the function");
  }
  if (fn.check.when != Check::When::never)
    std::printf("    check: the return value is tested for failure after the call%s\n",
                fn.check.error_errno ? ", reported with the captured errno" : "");
  if (fn.capture_errno) std::printf("    errno is read right after the call and reported with the result\n");

  // ---- the parameters ----
  // The engine's own lowering (abi.hpp): a struct the engine splits into its
  // eightbytes to work around libffi before 3.4.7.
  std::vector<TypeId> by_value;
  std::vector<ffi_type*> types;
  bool lowering_ok = true;
  for (const Param& p : fn.params) {
    const TypeDesc& d = reg.get(p.type);
    std::string why;
    ffi_type* t = by_pointer(d.kind) ? &ffi_type_pointer : ctx.ffi().lower(reg, p.type, why);
    if (!t) {
      std::printf("  note: parameter '%s' cannot be passed: %s\n", p.name.c_str(), why.c_str());
      lowering_ok = false;
    }
    by_value.push_back(p.type);
    types.push_back(t);
  }
  std::vector<LoweredArg> lowered;
  const bool split = lowering_ok && lower_arguments(reg, by_value, types, fn.returns, lowered);
  for (std::size_t i = 0; i < fn.params.size(); ++i) {
    const Param& p = fn.params[i];
    const TypeDesc& d = reg.get(p.type);
    std::printf("  %zu %s: %s %s%s\n", i, p.name.c_str(), std::string(dir_name(p.dir)).c_str(),
                reg.spell(p.type).c_str(), p.nullable ? " (nullable)" : "");
    if (sysv) {
      std::string where = by_pointer(d.kind) ? place(SysvClasses{false, "", {EightbyteClass::integer}}, regs, 8) + ", the address"
                                             : place(sysv_classify(reg, p.type), regs, d.size);
      std::printf("    passing: %s%s\n", where.c_str(),
                  p.dir == Dir::out        ? "; the host supplies no value, it appears in the result"
                  : p.value.present()      ? "; the engine computes it, the host supplies no value"
                                           : "");
      if (split) {
        int pieces = 0;
        for (const LoweredArg& a : lowered) pieces += a.param == i;
        if (pieces > 1)
          std::printf("    the engine gives libffi its %d eightbytes as separate arguments (same registers; "
                      "works around libffi before 3.4.7)\n", pieces);
      }
    }
    for (const std::string& line : engine_steps(reg, p)) std::printf("    %s\n", line.c_str());
  }
  if (fn.variadic_from >= 0)
    std::printf("  ... variadic from parameter %d: each extra argument's type is given per call; float is promoted "
                "to double and integers narrower than int to int%s\n",
                fn.variadic_from, sysv ? "; al holds the number of vector registers used" : "");
  if (sysv) {
    std::vector<TypeId> inv_by_value;
    for (std::size_t i = 0; i < fn.params.size(); ++i)
      inv_by_value.push_back(by_pointer(reg.get(fn.params[i].type).kind) ? no_type : fn.params[i].type);
    Invoker inv;
    const bool direct = lowering_ok && fn.variadic_from < 0 && !split && fn.callconv == CallConv::default_ &&
                        choose_invoker(reg, inv_by_value, fn.returns, inv);
    std::printf("  invoke: %s\n", direct ? "through the engine's register-only invoker (no ffi_call)"
                                         : "through libffi's ffi_call with a CIF prepared once");
  }
  return 0;
}

}  // namespace marshal::cli
