// marshal tests: ABI edge cases by value (fixture abi_edge.c).
// Returns in memory, whose hidden pointer takes the first integer register;
// callbacks returning structs in memory; packed structs whose fields are all
// naturally aligned, by value in registers and on the stack, as arguments and
// callback returns; refusals reported by the loader (and so by `marshal check`).
// Results are compared byte by byte with the direct C call, made by the compiler.
#include "call_support.hpp"

#include "abi/abi.hpp"
#include "convert/convert.hpp"
#include "fixtures/abi_edge.h"
#include "marshal/marshal.hpp"

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MARSHAL_EXE
#error "MARSHAL_EXE must be defined by the build"
#endif

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;

namespace {

Bound& edge() {
  static Bound b("tests/fixtures/abi_edge.json");
  return b;
}

TypeId type_of(Bound& b, const char* name) {
  TypeId t = b.tm->find_type(name);
  REQUIRE(t != no_type);
  return t;
}

// The native bytes of a host value of the typemap type `type`.
std::vector<std::uint8_t> native_bytes(Bound& b, const char* type, const Value& v) {
  const TypeRegistry& reg = b.ctx.types();
  const TypeId t = type_of(b, type);
  std::vector<std::uint8_t> out(reg.get(t).size);
  Arena arena;
  Marshaler m(reg, arena, nullptr);
  Ctx c;
  INFO(m.error);
  REQUIRE(m.to_native(t, v, out.data(), c));
  return out;
}

// The host value of a native struct (what the engine would make of its bytes).
template <class T> Value host_value(Bound& b, const char* type, const T& native) {
  const TypeRegistry& reg = b.ctx.types();
  const TypeId t = type_of(b, type);
  REQUIRE(reg.get(t).size == sizeof(T));
  Arena arena;
  Marshaler m(reg, arena, nullptr);
  Ctx c;
  Value out;
  REQUIRE(m.to_host(t, &native, out, c));
  return out;
}

template <class T> std::vector<std::uint8_t> bytes_of(const T& v) {
  std::vector<std::uint8_t> out(sizeof(T));
  std::memcpy(out.data(), &v, sizeof(T));
  return out;
}

std::shared_ptr<HostFunction> host(std::string name, std::function<bool(const std::vector<Value>&, Value&, std::string&)> fn) {
  return std::make_shared<HostFunction>(HostFunction{std::move(name), std::move(fn)});
}

// Runs the marshal command; stdout is returned, the exit status stored.
std::string run_marshal(const std::string& args, int& status) {
  const std::string cmd = std::string(MARSHAL_EXE) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int st = ::pclose(p);
  status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

// Native callbacks the direct calls use: the same rules as the host functions below.
PkDF native_pkdf(PkDF p, PkHdr h) { return PkDF{p.d * 2 + h.a, p.f + h.b}; }
PkSix native_pksix(PkSix p) { return PkSix{p.a + 7, static_cast<uint16_t>(p.b ^ 0x5555)}; }
PkU32x5 native_pku32x5(PkU32x5 p) {
  PkU32x5 r;
  for (uint32_t i = 0; i < 5; ++i) r.v[i] = p.v[i] ^ ((i + 1) * 0x01010101u);
  return r;
}

// A C++ mirror of S64 (std::array for the typed API's reflection).
struct S64cpp {
  std::array<double, 8> d;
};

}  // namespace

TEST_SUITE("abi") {
  TEST_CASE("a return in memory takes %rdi: register counting starts at 1 (libffi PR #848 workaround)") {
    Bound& b = edge();
    const TypeRegistry& reg = b.ctx.types();
    FfiTypes ffi;
    const TypeId i64 = reg.find_primitive("int64"), f64 = reg.find_primitive("double");
    const TypeId id = type_of(b, "ID"), big = type_of(b, "Big");
    CHECK(returns_in_memory(reg, big));
    CHECK_FALSE(returns_in_memory(reg, id));
    CHECK_FALSE(returns_in_memory(reg, i64));
    auto lowered = [&](const std::vector<TypeId>& args, TypeId ret, std::vector<LoweredArg>& out) {
      std::vector<ffi_type*> types;
      std::string error;
      for (TypeId t : args) types.push_back(ffi.lower(reg, t, error));
      return lower_arguments(reg, args, types, ret, out);
    };
    // r1: %rdi, then a..d take the next four: ID's integer half lands in the
    // sixth register with a double before it, the case libffi 3.4.4 gets wrong.
    std::vector<LoweredArg> out;
    CHECK(lowered({f64, i64, i64, i64, i64, id}, big, out));
    CHECK(out.size() == 7);
    out.clear();
    CHECK_FALSE(lowered({f64, i64, i64, i64, i64, id}, i64, out));  // a register return: no split needed
    // r2: %rdi and five integers: no register left, ID goes on the stack whole.
    out.clear();
    CHECK_FALSE(lowered({i64, i64, i64, f64, i64, i64, id}, big, out));
    CHECK(out.size() == 7);
    out.clear();
    CHECK(lowered({i64, i64, i64, f64, i64, i64, id}, i64, out));
  }

  TEST_CASE("r1 and r2: every argument arrives with a struct returned in memory") {
    Bound& b = edge();
    const Value s = rec({{"i", 5}, {"d", 2.5}});
    const CallResult one = b.call("r1", {1.5, 1, 2, 3, 4, s});
    const Big want1 = r1(1.5, 1, 2, 3, 4, ID{5, 2.5});
    CHECK(want1.a == 1500);
    CHECK(want1.b == 2500);
    CHECK(I(*one.ret.field("a")) == 1500);  // x = 1.5 (it was 2.5: the struct's double clobbered %xmm0)
    CHECK(native_bytes(b, "Big", one.ret) == bytes_of(want1));
    const CallResult two = b.call("r2", {10, 20, 30, 0.25, 40, 50, rec({{"i", -7}, {"d", 8.125}})});
    const Big want2 = r2(10, 20, 30, 0.25, 40, 50, ID{-7, 8.125});
    CHECK(I(*two.ret.field("b")) == 8125);  // s.d (it was garbage: split where no register was left)
    CHECK(native_bytes(b, "Big", two.ret) == bytes_of(want2));
  }

  TEST_CASE("marshal call r1 passes x = 1.5") {
    int status = -1;
    const std::string out =
        run_marshal("call tests/fixtures/abi_edge.json r1 1.5 1 2 3 4 '{\"i\": 5, \"d\": 2.5}'", status);
    INFO(out);
    REQUIRE(status == 0);
    const auto j = nlohmann::json::parse(out);
    const Big want = r1(1.5, 1, 2, 3, 4, ID{5, 2.5});
    CHECK(j["return"]["a"] == 1500);
    CHECK(j["return"]["b"] == 2500);
    CHECK(j["return"]["c"].get<std::int64_t>() == want.c);
  }

  TEST_CASE("callbacks return structs in memory (24, 64 and 100 bytes)") {
    Bound& b = edge();
    auto big = host("big", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(rec({{"a", I(a[0]) * 3}, {"b", static_cast<std::int64_t>(D(a[1]) * 1000)}, {"c", ~I(a[0])}}));
      return true;
    });
    const CallResult rb = b.call("call_cb_big", {Value(big), 41, 0.75});
    CHECK(native_bytes(b, "Big", rb.ret) == bytes_of(Big{123, 750, ~std::int64_t{41}}));

    auto s64 = host("s64", [](const std::vector<Value>& a, Value& r, std::string&) {
      List d;
      for (int i = 0; i < 8; ++i) d.push_back(Value(static_cast<double>(I(a[0])) + i / 4.0));
      r = Value(rec({{"d", Value(std::move(d))}}));
      return true;
    });
    S64 want64;
    for (int i = 0; i < 8; ++i) want64.d[i] = 9 + i / 4.0;
    CHECK(native_bytes(b, "S64", b.call("call_cb_s64", {Value(s64), 9}).ret) == bytes_of(want64));

    auto s100 = host("s100", [](const std::vector<Value>& a, Value& r, std::string&) {
      List v;
      for (int i = 0; i < 100; ++i) v.push_back(Value(static_cast<std::int64_t>((I(a[0]) + i * 7) & 0xff)));
      r = Value(rec({{"b", Value(std::move(v))}}));
      return true;
    });
    S100 want100;
    for (int i = 0; i < 100; ++i) want100.b[i] = static_cast<uint8_t>((200 + i * 7) & 0xff);
    CHECK(native_bytes(b, "S100", b.call("call_cb_s100", {Value(s100), 200}).ret) == bytes_of(want100));

    // The closure counts the hidden pointer too: s arrives whole after five integers and a double.
    auto split = host("split", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(rec({{"a", I(a[0]) + I(a[1]) * 10 + I(a[2]) * 100 + I(a[3]) * 1000},
                     {"b", static_cast<std::int64_t>(D(a[4]) * 1000)},
                     {"c", I(*a[5].field("i")) * 1000 + static_cast<std::int64_t>(D(*a[5].field("d")) * 1000)}}));
      return true;
    });
    const CallResult rs = b.call("call_cb_big_split", {Value(split), 1, 2, 3, 4, 1.5, rec({{"i", 6}, {"d", 0.5}})});
    CHECK(native_bytes(b, "Big", rs.ret) == bytes_of(Big{4321, 1500, 6500}));

    // A failing host function: native code receives on_error (in memory), the caller the error.
    auto fails = host("fails", [](const std::vector<Value>&, Value&, std::string& e) {
      e = "no";
      return false;
    });
    CHECK(b.error_of("call_cb_big", {Value(fails), 1, 1.0}).find("callback 'BigFn' failed: no") != std::string::npos);
  }

  TEST_CASE("packed structs with aligned fields pass by value, in registers and on the stack") {
    Bound& b = edge();
    const PkHdr hdr{0x1234, 0xbeef};
    CHECK(native_bytes(b, "PkHdr", b.call("pk_hdr", {host_value(b, "PkHdr", hdr), Value(0x0101)}).ret) ==
          bytes_of(pk_hdr(hdr, 0x0101)));
    const PkSix six{0xdeadbeef, 0x4242};
    CHECK(native_bytes(b, "PkSix", b.call("pk_six", {host_value(b, "PkSix", six), Value(std::uint64_t{0x0f0f0f0fu})}).ret) ==
          bytes_of(pk_six(six, 0x0f0f0f0fu)));
    const PkU32x5 five{{1, 0xffffffffu, 3, 0x80000000u, 5}};
    CHECK(native_bytes(b, "PkU32x5", b.call("pk_u32x5", {host_value(b, "PkU32x5", five), 11}).ret) ==
          bytes_of(pk_u32x5(five, 11)));
    const PkDF df{-3.25, 1.5f};
    CHECK(native_bytes(b, "PkDF", b.call("pk_df", {host_value(b, "PkDF", df), 0.125}).ret) == bytes_of(pk_df(df, 0.125)));
    const PkIF pif{-1234567890123, 2.75f};
    CHECK(native_bytes(b, "PkIF", b.call("pk_if", {host_value(b, "PkIF", pif), 77}).ret) == bytes_of(pk_if(pif, 77)));
    // Every register taken: all four packed structs on the stack.
    std::vector<Value> args = {1, 2, 3, 4, 5, 6};
    for (int i = 0; i < 8; ++i) args.push_back(Value(0.5 + i));
    for (Value v : {host_value(b, "PkHdr", hdr), host_value(b, "PkSix", six), host_value(b, "PkDF", df),
                    host_value(b, "PkIF", pif)})
      args.push_back(v);
    CHECK(native_bytes(b, "PkDF", b.call("pk_stack", args).ret) ==
          bytes_of(pk_stack(1, 2, 3, 4, 5, 6, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, hdr, six, df, pif)));
    // PkIF ({INTEGER, SSE}) in the sixth integer register after a double: split.
    CHECK(native_bytes(b, "PkIF", b.call("pk_if_split", {0.25, 1, 2, 3, 4, 5, host_value(b, "PkIF", pif)}).ret) ==
          bytes_of(pk_if_split(0.25, 1, 2, 3, 4, 5, pif)));
  }

  TEST_CASE("callbacks take and return packed structs with aligned fields") {
    Bound& b = edge();
    auto pkdf = host("pkdf", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(rec({{"d", D(*a[0].field("d")) * 2 + static_cast<double>(I(*a[1].field("a")))},
                     {"f", D(*a[0].field("f")) + static_cast<double>(I(*a[1].field("b")))}}));
      return true;
    });
    const PkDF df{10.5, -0.25f};
    const PkHdr hdr{3, 4};
    CHECK(native_bytes(b, "PkDF",
                       b.call("call_cb_pkdf", {Value(pkdf), host_value(b, "PkDF", df), host_value(b, "PkHdr", hdr)}).ret) ==
          bytes_of(call_cb_pkdf(native_pkdf, df, hdr)));
    auto pksix = host("pksix", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(rec({{"a", I(*a[0].field("a")) + 7}, {"b", I(*a[0].field("b")) ^ 0x5555}}));
      return true;
    });
    const PkSix six{0x01020304, 0x0506};
    CHECK(native_bytes(b, "PkSix", b.call("call_cb_pksix", {Value(pksix), host_value(b, "PkSix", six)}).ret) ==
          bytes_of(call_cb_pksix(native_pksix, six)));
    auto pk5 = host("pk5", [](const std::vector<Value>& a, Value& r, std::string&) {
      const List& in = a[0].field("v")->as<List>();
      List v;
      for (std::int64_t i = 0; i < 5; ++i) v.push_back(Value(I(in[static_cast<std::size_t>(i)]) ^ ((i + 1) * 0x01010101)));
      r = Value(rec({{"v", Value(std::move(v))}}));
      return true;
    });
    const PkU32x5 five{{10, 20, 30, 40, 0xfffffff0u}};
    CHECK(native_bytes(b, "PkU32x5", b.call("call_cb_pku32x5", {Value(pk5), host_value(b, "PkU32x5", five)}).ret) ==
          bytes_of(call_cb_pku32x5(native_pku32x5, five)));
  }

  TEST_CASE("packed structs of 9 to 11 bytes with an SSE eightbyte first pass by value, also nested") {
    // libffi's float is aligned to 4 and would make these 12 bytes: refused
    // before the engine lowered their SSE eightbyte to floats aligned to 1.
    Bound& b = edge();
    const PkF2B f2b{{1.25f, -3.5f}, 0xfe};
    CHECK(native_bytes(b, "PkF2B", b.call("pk_f2b", {host_value(b, "PkF2B", f2b), 0.5}).ret) ==
          bytes_of(pk_f2b(f2b, 0.5f)));
    const PkF2C3 f2c3{{7.0f, 0.125f}, {-1, 2, 0x7f}};
    CHECK(native_bytes(b, "PkF2C3", b.call("pk_f2c3", {host_value(b, "PkF2C3", f2c3), 2.0}).ret) ==
          bytes_of(pk_f2c3(f2c3, 2.0f)));
    const PkD2B d2b{-0.75, 200, 17};
    const InPkD2B in{{1e10, 3, 4}};
    CHECK(native_bytes(b, "PkD2B",
                       b.call("pk_d2b", {host_value(b, "PkD2B", d2b), 4.0, host_value(b, "InPkD2B", in)}).ret) ==
          bytes_of(pk_d2b(d2b, 4.0, in)));
    const PkOfPk pp{{{2.5f, 8.0f}, 9}, 250};
    CHECK(native_bytes(b, "PkOfPk", b.call("pk_of_pk", {host_value(b, "PkOfPk", pp), 0.5}).ret) ==
          bytes_of(pk_of_pk(pp, 0.5)));
    std::vector<Value> args = {1, 2, 3, 4, 5, 6};
    for (int i = 0; i < 8; ++i) args.push_back(Value(0.25 * i));
    for (Value v : {host_value(b, "PkF2B", f2b), host_value(b, "PkD2B", d2b), host_value(b, "PkF2C3", f2c3)})
      args.push_back(v);
    CHECK(native_bytes(b, "PkD2B", b.call("pk_small_stack", args).ret) ==
          bytes_of(pk_small_stack(1, 2, 3, 4, 5, 6, 0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, f2b, d2b, f2c3)));
    // A callback taking and returning them.
    auto cb = host("pkd2b", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(rec({{"d", D(*a[0].field("d")) + D(a[1].field("v")->as<List>()[1])},
                     {"a", I(*a[0].field("b"))},
                     {"b", I(*a[1].field("t"))}}));
      return true;
    });
    const PkD2B want{-0.75 - 3.5, 17, 0xfe};
    CHECK(native_bytes(b, "PkD2B",
                       b.call("call_cb_pkd2b", {Value(cb), host_value(b, "PkD2B", d2b), host_value(b, "PkF2B", f2b)})
                           .ret) == bytes_of(want));
    const TypeRegistry& reg = b.ctx.types();
    FfiTypes ffi;
    for (const char* name : {"PkF2B", "PkF2C3", "PkD2B", "InPkD2B", "PkOfPk"}) {
      CAPTURE(name);
      std::string error;
      ffi_type* t = ffi.lower(reg, type_of(b, name), error);
      INFO(error);
      REQUIRE(t);
      CHECK(t->size == reg.get(type_of(b, name)).size);
      CHECK(t->alignment == reg.get(type_of(b, name)).align);
    }
  }

  TEST_CASE("lowering: sizes are C's, unaligned fields refused with the reason") {
    Bound& b = edge();
    const TypeRegistry& reg = b.ctx.types();
    FfiTypes ffi;
    for (const char* name : {"PkHdr", "PkSix", "PkU32x5", "PkDF", "PkIF"}) {
      CAPTURE(name);
      std::string error;
      ffi_type* t = ffi.lower(reg, type_of(b, name), error);
      REQUIRE(t);
      CHECK(t->size == reg.get(type_of(b, name)).size);
      CHECK(by_value_refusal(reg, type_of(b, name)).empty());
    }
    CHECK(by_value_refusal(reg, type_of(b, "PkUnaligned")).find("unaligned fields") != std::string::npos);
    PkUnaligned u{1, 2};
    CHECK(I(b.call("pk_unaligned_sum", {host_value(b, "PkUnaligned", u)}).ret) == 3);  // by pointer it works
  }

  TEST_CASE("the System V classifier: classes, MEMORY and why; an inline UTF-16 string at an odd offset is unaligned") {
    Context ctx;
    LoadResult r = ctx.load_text(R"({"typemap": 1, "library": {"name": "c", "load": {"linux": ["libc.so.6"]}},
      "types": {
        "W": {"struct": [{"name": "t", "type": "uint8"},
                         {"name": "s", "type": {"string": "utf16", "capacity": 2}}], "pack": 1},
        "WA": {"struct": [{"name": "t", "type": "uint16"},
                          {"name": "s", "type": {"string": "utf16", "capacity": 2}}], "pack": 1},
        "IF": {"struct": [{"name": "i", "type": "int32"}, {"name": "f", "type": "float"},
                          {"name": "d", "type": "double"}]},
        "Big": {"struct": [{"name": "v", "type": {"array": "double", "count": 3}}]}},
      "functions": {}})", "t.json");
    std::string errors;
    for (const auto& e : r.errors) errors += e.text() + "\n";
    INFO(errors);
    REQUIRE(r.ok());
    const TypeRegistry& reg = ctx.types();
    const SysvClasses w = sysv_classify(reg, r.typemap->find_type("W"));
    CHECK(w.memory);
    CHECK(w.why == "a field at offset 1 is not aligned to its 2 bytes (packed)");
    // Before, the engine missed it: a char16_t[2] at offset 1 passed in a register.
    CHECK(by_value_refusal(reg, r.typemap->find_type("W")).find("unaligned fields") != std::string::npos);
    const SysvClasses wa = sysv_classify(reg, r.typemap->find_type("WA"));
    CHECK_FALSE(wa.memory);
    CHECK(wa.eightbytes == std::vector<EightbyteClass>{EightbyteClass::integer});
    const SysvClasses f = sysv_classify(reg, r.typemap->find_type("IF"));
    CHECK(f.eightbytes == std::vector<EightbyteClass>{EightbyteClass::integer, EightbyteClass::sse});
    const SysvClasses big = sysv_classify(reg, r.typemap->find_type("Big"));
    CHECK(big.memory);
    CHECK(big.why == "larger than 16 bytes");
    CHECK(returns_in_memory(reg, r.typemap->find_type("Big")));
    CHECK_FALSE(returns_in_memory(reg, r.typemap->find_type("IF")));
    CHECK(std::string(eightbyte_class_name(EightbyteClass::none)) == "NO_CLASS");
  }

  TEST_CASE("the loader refuses what binding would refuse, at its JSON Pointer") {
    auto errors_of = [](const std::string& functions, const std::string& callbacks = "{}") {
      Context ctx;
      LoadResult r = ctx.load_text(R"({"typemap": 1, "library": {"name": "c", "load": {"linux": ["libc.so.6"]}},
        "types": {"U": {"struct": [{"name": "t", "type": "uint8"}, {"name": "v", "type": "uint32"}], "pack": 1}},
        "callbacks": )" + callbacks + R"(, "functions": )" + functions + "}", "t.json");
      std::vector<std::string> out;
      for (const auto& e : r.errors) out.push_back(e.text());
      return out;
    };
    auto one = errors_of(R"({"f": {"returns": "void", "params": [{"name": "a", "type": "int"}, {"name": "u", "type": "U"}]}})");
    REQUIRE(one.size() == 1);
    CHECK(one[0].rfind("t.json: /functions/f/params/1/type: U has unaligned fields", 0) == 0);
    auto ret = errors_of(R"({"f": {"returns": "U", "params": []}})");
    REQUIRE(ret.size() == 1);
    CHECK(ret[0].rfind("t.json: /functions/f/returns: U has unaligned fields", 0) == 0);
    auto cb = errors_of(R"({})", R"({"C": {"returns": "U", "params": []}})");
    REQUIRE(cb.size() == 1);
    CHECK(cb[0].rfind("t.json: /callbacks/C/returns: U has unaligned fields", 0) == 0);
    auto ok = errors_of(R"({"f": {"returns": "void", "params": [{"name": "u", "type": {"ptr": "U"}}]}})");
    CHECK(ok.empty());
  }

  TEST_CASE("typed C++ API: returns in memory and callbacks returning them agree with the C call") {
    marshal::library lib(source_path("tests/fixtures/abi_edge.json"));
    auto f1 = lib.function<Big(double, int64_t, int64_t, int64_t, int64_t, ID)>("r1");
    CHECK(bytes_of(f1(1.5, 1, 2, 3, 4, ID{5, 2.5})) == bytes_of(r1(1.5, 1, 2, 3, 4, ID{5, 2.5})));
    auto f2 = lib.function<Big(int64_t, int64_t, int64_t, double, int64_t, int64_t, ID)>("r2");
    CHECK(bytes_of(f2(9, 8, 7, -6.5, 5, 4, ID{3, 2.25})) == bytes_of(r2(9, 8, 7, -6.5, 5, 4, ID{3, 2.25})));
    auto cb = lib.function<Big(marshal::callback<Big(int64_t, double)>, int64_t, double)>("call_cb_big");
    const Big got = cb([](int64_t k, double x) { return Big{k, static_cast<int64_t>(x * 4), -k}; }, 12, 2.5);
    CHECK(bytes_of(got) == bytes_of(Big{12, 10, -12}));
    auto cb64 = lib.function<S64cpp(marshal::callback<S64cpp(int64_t)>, int64_t)>("call_cb_s64");
    const S64cpp g64 = cb64([](int64_t k) {
      S64cpp s{};
      for (std::size_t i = 0; i < 8; ++i) s.d[i] = static_cast<double>(k) * static_cast<double>(i);
      return s;
    }, 3);
    for (std::size_t i = 0; i < 8; ++i) CHECK(g64.d[i] == 3.0 * static_cast<double>(i));
    auto split = lib.function<Big(marshal::callback<Big(int64_t, int64_t, int64_t, int64_t, double, ID)>, int64_t,
                                  int64_t, int64_t, int64_t, double, ID)>("call_cb_big_split");
    const Big gs = split([](int64_t a, int64_t b2, int64_t c, int64_t d, double x, ID s) {
      return Big{a + b2 + c + d, static_cast<int64_t>(x * 8), s.i + static_cast<int64_t>(s.d * 8)};
    }, 1, 2, 3, 4, 0.5, ID{100, 0.25});
    CHECK(bytes_of(gs) == bytes_of(Big{10, 4, 102}));
  }
}
