// marshal tests: the typed C++ API (bindings/cpp/marshal/marshal.hpp).
// Fast path for blittable signatures, the engine path for the rest, signature
// checks against the typemap at bind time, plain libraries without a typemap,
// and conformance: the typed, dynamic and C APIs pass the same bytes.
#include <doctest/doctest.h>

#include "call_support.hpp"
#include "fixtures/pinvoke.h"
#include "marshal/marshal.hpp"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <stdexcept>
#include <thread>
#include <unistd.h>
#include <tuple>
#include <vector>

// Counts every allocation of this test program, to prove the fast path makes none.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // ours pair malloc with free
static std::atomic<long> allocations{0};
void* operator new(std::size_t n) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

using namespace marshal::test;

namespace {
const std::string fixture = marshal::test::source_path("tests/fixtures/pinvoke.json");

struct P { int32_t x, y; };                  // matches Point
struct V2 { double x, y; };                  // matches Vec2
struct BD { uint8_t tag; double v; };        // matches MixBD
struct Big { std::array<uint8_t, 100> data; };  // matches Big100
struct H { uint32_t cb; std::string name; int32_t n; std::vector<int32_t> items; };
enum class Col : uint32_t { red, green, blue };
}  // namespace

namespace {
struct C1i { int32_t a; };
struct C2i { int32_t a, b; };
struct C3i { int32_t a, b, c; };
struct C4i { int32_t a, b, c, d; };
struct C1f { float a; };
struct C2f { float a, b; };
struct C3f { float a, b, c; };
struct C4f { float a, b, c, d; };
struct CIF { int32_t i; float f; };
struct CFID { float f; int32_t i; double d; };

// Calls fn through the engine's dynamic plan (libffi) with host values.
marshal::engine::Value via_libffi(Bound& b, const std::string& fn, std::vector<marshal::engine::Value> args) {
  return b.call(fn, std::move(args)).ret;
}
double F(const marshal::engine::Value& v, const char* field) { return v.field(field)->as<double>(); }
}  // namespace

TEST_SUITE("cpp-api") {
  TEST_CASE("the specialized invoker (a direct call through the C++ function type) equals libffi") {
    marshal::library lib(fixture);
    Bound b("tests/fixtures/pinvoke.json");
    using marshal::engine::Value;
    using marshal::test::rec;
    auto s1i = lib.function<C1i(C1i)>("echo_s1i")({-7});
    CHECK(s1i.a == I(*via_libffi(b, "echo_s1i", {Value(rec({{"a", -7}}))}).field("a")));
    auto s3i = lib.function<C3i(C3i)>("echo_s3i")({1, -2, 3});
    marshal::engine::Value l3 = via_libffi(b, "echo_s3i", {Value(rec({{"a", 1}, {"b", -2}, {"c", 3}}))});
    CHECK((s3i.a == I(*l3.field("a")) && s3i.b == I(*l3.field("b")) && s3i.c == I(*l3.field("c"))));
    auto s4i = lib.function<C4i(C4i)>("echo_s4i")({1, 2, 3, 4});
    CHECK(s4i.d == I(*via_libffi(b, "echo_s4i", {Value(rec({{"a", 1}, {"b", 2}, {"c", 3}, {"d", 4}}))}).field("d")));
    auto s1f = lib.function<C1f(C1f)>("echo_s1f")({1.5f});
    CHECK(s1f.a == F(via_libffi(b, "echo_s1f", {Value(rec({{"a", 1.5}}))}), "a"));
    auto s3f = lib.function<C3f(C3f)>("echo_s3f")({1.5f, -2.25f, 8});
    marshal::engine::Value l3f = via_libffi(b, "echo_s3f", {Value(rec({{"a", 1.5}, {"b", -2.25}, {"c", 8.0}}))});
    CHECK((s3f.a == F(l3f, "a") && s3f.b == F(l3f, "b") && s3f.c == F(l3f, "c")));
    auto s4f = lib.function<C4f(C4f)>("echo_s4f")({1, 2, 3, 4.5f});
    CHECK(s4f.d == F(via_libffi(b, "echo_s4f", {Value(rec({{"a", 1.0}, {"b", 2.0}, {"c", 3.0}, {"d", 4.5}}))}), "d"));
    auto mif = lib.function<CIF(CIF)>("echo_mix_if")({-3, 0.75f});
    marshal::engine::Value lif = via_libffi(b, "echo_mix_if", {Value(rec({{"i", -3}, {"f", 0.75}}))});
    CHECK((mif.i == I(*lif.field("i")) && mif.f == F(lif, "f")));
    auto fid = lib.function<CFID(CFID)>("echo_mix_fid")({0.5f, 9, -1e10});
    marshal::engine::Value lfid = via_libffi(b, "echo_mix_fid", {Value(rec({{"f", 0.5}, {"i", 9}, {"d", -1e10}}))});
    CHECK((fid.f == F(lfid, "f") && fid.i == I(*lfid.field("i")) && fid.d == F(lfid, "d")));
    auto bd = lib.function<BD(BD)>("echo_mix_bd")({7, 2.5});
    marshal::engine::Value lbd = via_libffi(b, "echo_mix_bd", {Value(rec({{"tag", 7}, {"v", 2.5}}))});
    CHECK((bd.tag == I(*lbd.field("tag")) && bd.v == F(lbd, "v")));
    const double mixed = lib.function<double(int32_t, double, int32_t, double, int32_t, double, int32_t, double, int32_t,
                                             double, int32_t, double)>("spill12_mixed")(1, 2.5, 3, 4.5, 5, 6.5, 7, 8.5, 9,
                                                                                         10.5, 11, 12.5);
    CHECK(mixed == D(via_libffi(b, "spill12_mixed", {1, 2.5, 3, 4.5, 5, 6.5, 7, 8.5, 9, 10.5, 11, 12.5})));
    std::vector<Value> seven;
    for (int i = 0; i < 7; ++i) seven.push_back(Value(rec({{"x", i}, {"y", -2 * i}})));
    CHECK(lib.function<int64_t(P, P, P, P, P, P, P)>("spill_points")({0, 0}, {1, -2}, {2, -4}, {3, -6}, {4, -8}, {5, -10},
                                                                     {6, -12}) == I(via_libffi(b, "spill_points", seven)));
    CHECK(lib.function<double(int8_t, double, int16_t, float, int64_t)>("add_mixed")(-3, 1.25, 300, 0.5f, 1ll << 40) ==
          D(via_libffi(b, "add_mixed", {-3, 1.25, 300, 0.5, Value(std::int64_t{1} << 40)})));
  }

  TEST_CASE("blittable signatures take the fast path and match direct calls") {
    marshal::library lib(fixture);
    auto add = lib.function<int32_t(int32_t, int32_t)>("add_i32");
    static_assert(decltype(add)::fast);
    CHECK(add(2, 40) == add_i32(2, 40));
    CHECK(add(INT32_MAX, 1) == add_i32(INT32_MAX, 1));
    CHECK(lib.function<int8_t(int8_t)>("echo_i8")(-100) == -100);          // widened small returns
    CHECK(lib.function<uint16_t(uint16_t)>("echo_u16")(65535) == 65535);
    CHECK(lib.function<double(int8_t, double, int16_t, float, int64_t)>("add_mixed")(-3, 1.25, 300, 0.5f, 1ll << 40) ==
          add_mixed(-3, 1.25, 300, 0.5f, 1ll << 40));
    auto vadd = lib.function<V2(V2, V2)>("add_vec2");
    static_assert(decltype(vadd)::fast);
    V2 r = vadd({1.5, 2}, {0.25, -4});
    Vec2 d = add_vec2({1.5, 2}, {0.25, -4});
    CHECK(r.x == d.x);
    CHECK(r.y == d.y);
    Big b{};
    for (int i = 0; i < 100; ++i) b.data[i] = static_cast<uint8_t>(i);
    Big100 db;
    std::memcpy(db.data, b.data.data(), 100);
    CHECK(lib.function<uint32_t(Big)>("sum_in_big100")(b) == sum_in_big100(db));
    Big e = lib.function<Big(Big)>("echo_big100")(b);
    Big100 de = echo_big100(db);
    CHECK(std::memcmp(e.data.data(), de.data, 100) == 0);
    CHECK(lib.function<int64_t(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                               int64_t, int64_t)>("spill12_i64")(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12) ==
          spill12_i64(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12));
    CHECK(lib.function<Col(Col)>("next_color")(Col::blue) == Col::red);
  }

  TEST_CASE("the fast path converts nothing and allocates nothing") {
    marshal::library lib(fixture);
    auto add = lib.function<int32_t(int32_t, int32_t)>("add_i32");
    auto vadd = lib.function<V2(V2, V2)>("add_vec2");
    long sum = 0;
    const long before = allocations.load();
    for (int i = 0; i < 1000; ++i) sum += add(i, 1) + static_cast<long>(vadd({1.0 * i, 0}, {1, 1}).x);
    CHECK(allocations.load() == before);
    CHECK(sum == 999 * 1000 / 2 + 1000 + 999 * 1000 / 2 + 1000);
    // The engine path, for contrast, does allocate (host values).
    auto len = lib.function<size_t(std::string)>("len_in_utf8");
    const long mid = allocations.load();
    CHECK(len("a string long enough to leave the small-string buffer") == 53);
    CHECK(allocations.load() > mid);
  }

  TEST_CASE("strings, vectors, spans, optionals, out and inout go through the engine") {
    marshal::library lib(fixture);
    auto len = lib.function<size_t(std::string)>("len_in_utf8");
    static_assert(!decltype(len)::fast);
    CHECK(len("h\xc3\xa9llo") == 6);
    CHECK(lib.function<size_t(std::u16string)>("len_in_utf16")(u"h\u00e9llo \U0001F600") == 8);
    CHECK(lib.function<size_t(std::u32string)>("len_in_utf32")(U"h\u00e9llo \U0001F600") == 7);
    CHECK(lib.function<size_t(std::wstring)>("len_in_wchar")(L"h\u00e9llo") == 5);
    std::vector<int32_t> v{1, 2, 3, 400};
    CHECK(lib.function<int64_t(std::vector<int32_t>, size_t)>("sum_in_i32_array")(v, v.size()) == sum_in_i32_array(v.data(), 4));
    CHECK(lib.function<int64_t(std::span<const int32_t>, size_t)>("sum_in_i32_array")(v, 2) == 3);
    std::vector<P> pts{{1, 2}, {3, 4}};
    const Point dpts[] = {{1, 2}, {3, 4}};
    CHECK(lib.function<int64_t(std::vector<P>, size_t)>("sum_in_point_array")(pts, 2) == sum_in_point_array(dpts, 2));
    auto maybe = lib.function<int32_t(std::optional<int32_t>)>("maybe_null_in_i32");
    CHECK(maybe(std::nullopt) == -1);
    CHECK(maybe(7) == 7);
    int32_t got = 0;
    lib.function<void(marshal::out<int32_t>)>("get_out_i32")(got);
    CHECK(got == 4242);
    int64_t counter = 41;
    lib.function<void(marshal::inout<int64_t>)>("incr_inout_i64")(counter);
    CHECK(counter == 42);
    P p{7, 9};
    lib.function<void(marshal::inout<P>, int32_t)>("scale_inout_point")(p, 3);
    CHECK(p.x == 21);
    CHECK(p.y == 27);
    std::vector<int32_t> filled;
    lib.function<void(marshal::out<std::vector<int32_t>>, size_t)>("fill_out_i32_array")(filled, 4);
    int32_t direct[4];
    fill_out_i32_array(direct, 4);
    CHECK(filled == std::vector<int32_t>(direct, direct + 4));
    std::string reversed;
    lib.function<size_t(std::string, marshal::out<std::string>, size_t)>("reverse_out_utf8")("marshal", reversed, 32);
    CHECK(reversed == "lahsram");
    CHECK(lib.function<std::string(std::string)>("dup_ret_utf8")("owned") == "owned");
    H h;
    lib.function<void(marshal::out<H>)>("fill_out_header")(h);
    CHECK(h.name == "filled");
    CHECK(h.items == std::vector<int32_t>{7, 8, 9});
    CHECK(lib.function<bool(bool)>("not_cbool")(false));  // bool is fine with a typemap (cbool there)
  }

  TEST_CASE("a C++ signature that contradicts the typemap is an error naming the parameter and both types") {
    marshal::library lib(fixture);
    auto message = [&](auto bind) {
      try {
        bind();
      } catch (const marshal::error& e) {
        return std::string(e.what());
      }
      return std::string("no error");
    };
    CHECK(message([&] { lib.function<int32_t(int64_t, int32_t)>("add_i32"); })
              .find("add_i32: parameter 0 'a': C++ type int64_t does not match typemap type int32") != std::string::npos);
    CHECK(message([&] { lib.function<int32_t(int32_t)>("add_i32"); }).find("the C++ signature has 1 parameters, the typemap 2") !=
          std::string::npos);
    CHECK(message([&] { lib.function<int64_t(int32_t, int32_t)>("add_i32"); })
              .find("return: C++ type int64_t does not match typemap type int32") != std::string::npos);
    CHECK(message([&] { lib.function<void(int32_t)>("get_out_i32"); })
              .find("parameter 0 'out': the typemap says out, the C++ signature in") != std::string::npos);
    CHECK(message([&] { lib.function<int32_t(BD)>("sum_in_point"); })
              .find("C++ type struct of 2 fields (16 bytes) does not match typemap type Point") != std::string::npos);
    struct Swapped { int32_t y; int64_t x; };
    CHECK(message([&] { lib.function<int32_t(Swapped)>("sum_in_point"); }).find("does not match typemap type Point") != std::string::npos);
    CHECK(message([&] { lib.function<int32_t(std::string)>("echo_i32"); })
              .find("C++ type std::string does not match typemap type int32") != std::string::npos);
    CHECK(message([&] { lib.function<int(int)>("no_such_function"); }).find("no function 'no_such_function'") != std::string::npos);
    CHECK(message([&] { lib.function<int64_t(int32_t)>("sum_var_i32"); }).find("variadic") != std::string::npos);
  }

  TEST_CASE("pinned arguments: in arrays and ASCII strings pass by address through a direct call") {
    marshal::library lib(fixture);
    auto sum = lib.function<double(std::span<const double>, size_t)>("sum_in_f64_array");
    static_assert(decltype(sum)::pinnable);
    std::vector<double> v{1.5, 2.5, 4};
    CHECK(sum(v, 3) == sum_in_f64_array(v.data(), 3));
    CHECK(sum(v, 2) == 4.0);  // fewer than the span holds: fine
    CHECK_THROWS_WITH_AS(sum(v, 4), doctest::Contains("'v': the array has 3 elements but its count is 4"), marshal::error);
    // Zero copy: the callee sees the caller's own memory (a C callee that
    // breaks its `in` promise writes it, as it would from C).
    std::vector<int32_t> mine{1, 2, 3};
    lib.function<int64_t(std::span<const int32_t>, size_t)>("scribble_in_i32_array")(mine, 3);
    std::vector<int32_t> copy{1, 2, 3};
    scribble_in_i32_array(copy.data(), 3);
    CHECK(mine == copy);
    auto len = lib.function<size_t(std::string)>("len_in_utf8");
    static_assert(decltype(len)::pinnable);
    CHECK(len("plain ascii") == 11);
    CHECK(len("h\xc3\xa9llo") == 6);  // not ASCII: through the engine, validated
    CHECK_THROWS_WITH_AS(len("bad \xff utf-8"), doctest::Contains("UTF-8"), marshal::error);
  }

  TEST_CASE("errors at call time surface as marshal::error, nothing runs") {
    marshal::library lib(fixture);
    auto f = lib.function<size_t(std::string)>("len_in_utf8");
    CHECK_THROWS_WITH_AS(f(std::string("a\0b", 3)), doctest::Contains("NUL character at byte 1"), marshal::error);
    auto sum = lib.function<int64_t(std::vector<int32_t>, size_t)>("sum_in_i32_array");
    CHECK_THROWS_WITH_AS(sum({1}, 3), doctest::Contains("the array has 1 elements but its count is 3"), marshal::error);
  }

  TEST_CASE("a plain library without a typemap: blittable signatures") {
    marshal::plain_library m("libm.so.6");
    auto cos = m.function<double(double)>("cos");
    CHECK(cos(0.5) == std::cos(0.5));
    CHECK(m.function<double(double, double)>("pow")(2.0, 10.0) == 1024.0);
    marshal::plain_library fx("libmarshal_fixture.so");
    CHECK(fx.function<P(int32_t, int32_t)>("make_ret_point")(3, -4).y == -4);
    CHECK(fx.function<V2(V2, V2)>("add_vec2")({1, 2}, {3, 4}).y == 6);
    CHECK_THROWS_WITH_AS(m.function<double(double)>("no_such_symbol"), doctest::Contains("no_such_symbol"), marshal::error);
    CHECK_THROWS_AS(marshal::plain_library("libnothere.so.3"), marshal::error);
  }

  TEST_CASE("callbacks from C++: any callable, capturing lambdas included") {
    marshal::library lib(marshal::test::source_path("tests/fixtures/callbacks.json"));
    auto apply = lib.function<int32_t(marshal::callback<int32_t(int32_t)>, int32_t)>("apply_i32");
    int32_t offset = 10;
    CHECK(apply([&](int32_t v) { return v + offset; }, 5) == 15);
    marshal::callback<int32_t(int32_t)> tripler([](int32_t v) { return v * 3; });  // kept: one closure, reused
    for (int32_t i = 0; i < 100; ++i) CHECK(apply(tripler, i) == 3 * i);
    auto point = lib.function<int32_t(marshal::callback<int32_t(P)>, int32_t, int32_t)>("apply_point");
    CHECK(point([](P p) { return p.x * 100 + p.y; }, 4, 2) == 402);
    auto text = lib.function<int32_t(marshal::callback<int32_t(std::string)>, std::string)>("apply_text");
    CHECK(text([](const std::string& s) { return static_cast<int32_t>(s.size()); }, "h\xc3\xa9llo") == 6);
    auto fold = lib.function<double(marshal::callback<double(double, double)>, std::vector<double>, size_t)>("fold_f64");
    CHECK(fold([](double acc, double x) { return acc + x; }, {1.5, 2.5}, 2) == 4.0);
    // An exception in the callable: native code gets on_error, the caller gets marshal::error.
    CHECK_THROWS_WITH_AS(apply([](int32_t) -> int32_t { throw std::runtime_error("nope"); }, 1),
                         doctest::Contains("callback 'IntFn' failed: threw: nope"), marshal::error);
    // A callable whose signature contradicts the typemap's callback is refused at bind time.
    try {
      lib.function<int32_t(marshal::callback<int32_t(double)>, int32_t)>("apply_i32");
      FAIL("bound");
    } catch (const marshal::error& e) {
      CHECK(std::string(e.what()).find("parameter 0 'f': callback 'IntFn' parameter 0: C++ type double does not match typemap type int32") !=
            std::string::npos);
    }
  }

  TEST_CASE("callbacks of scalars: every width, directly, without a Value or an allocation per call") {
    marshal::library lib(marshal::test::source_path("tests/fixtures/callback_scalars.json"));
    auto last_int = lib.function<int64_t()>("cs_last_int");
    auto last_real = lib.function<double()>("cs_last_real");
    // Each width: the value in, a different one out (so a return left unwritten
    // cannot pass), extremes included; native code saw exactly that value.
    auto width = [&]<class T>(const std::string& name, std::initializer_list<T> values, auto change) {
      auto apply = lib.function<T(marshal::callback<T(T)>, T)>("cs_apply_" + name);
      marshal::callback<T(T)> cb([&](T v) { return change(v); });
      for (T v : values) {
        INFO(name << " " << +v);
        CHECK(apply(cb, v) == change(v));
        if constexpr (std::is_floating_point_v<T>) CHECK(last_real() == static_cast<double>(change(v)));
        else CHECK(last_int() == static_cast<int64_t>(change(v)));
      }
      // A throw: native code got the typemap's on_error, the caller a marshal::error.
      marshal::callback<T(T)> thrower([](T) -> T { throw std::runtime_error("boom " + std::to_string(sizeof(T))); });
      try {
        apply(thrower, T{});
        FAIL("no error");
      } catch (const marshal::error& e) {
        CHECK(std::string(e.what()).find("cs_apply_" + name + ": callback 'Cs_" + name + "' failed: threw: boom " +
                                         std::to_string(sizeof(T))) != std::string::npos);
      }
    };
    auto flip = [](auto v) { return static_cast<decltype(v)>(~v); };
    width.operator()<int8_t>("s8", {INT8_MIN, -1, 0, 1, INT8_MAX}, flip);
    CHECK(last_int() == -8);  // on_error, after the throw
    width.operator()<uint8_t>("u8", {0, 1, 127, 128, UINT8_MAX}, flip);
    CHECK(last_int() == 8);
    width.operator()<int16_t>("s16", {INT16_MIN, -1, 0, INT16_MAX}, flip);
    CHECK(last_int() == -16);
    width.operator()<uint16_t>("u16", {0, 0x7fff, 0x8000, UINT16_MAX}, flip);
    CHECK(last_int() == 16);
    width.operator()<int32_t>("s32", {INT32_MIN, -1, 0, INT32_MAX}, flip);
    CHECK(last_int() == -32);
    width.operator()<uint32_t>("u32", {0, 0x7fffffffu, 0x80000000u, UINT32_MAX}, flip);
    CHECK(last_int() == 32);
    width.operator()<int64_t>("s64", {INT64_MIN, -1, 0, INT64_MAX}, flip);
    CHECK(last_int() == -64);
    width.operator()<uint64_t>("u64", {0, uint64_t{1} << 63, UINT64_MAX}, flip);
    CHECK(last_int() == 64);
    width.operator()<float>("f32", {0.0f, -1.5f, 3.25e38f, 1e-45f}, [](float v) { return -v / 2; });
    CHECK(last_real() == 0.5);
    width.operator()<double>("f64", {0.0, -1.5, 1e308, 5e-324}, [](double v) { return -v * 0.5; });
    CHECK(last_real() == 1.5);
    width.operator()<bool>("b", {false, true}, [](bool v) { return !v; });
    CHECK(last_int() == 0);
    width.operator()<bool>("b32", {false, true}, [](bool v) { return !v; });  // bool32: 4 bytes, true is 1
    auto vb = lib.function<bool(marshal::callback<bool(bool)>, bool)>("cs_apply_vb");  // {"bool": 2, "true": -1}
    CHECK(vb([](bool v) { return !v; }, false) == true);
    CHECK(last_int() == -1);  // native code got VARIANT_TRUE
    CHECK(vb([](bool v) { return !v; }, true) == false);
    CHECK(last_int() == 0);
    auto ptr = lib.function<marshal::address(marshal::callback<marshal::address(marshal::address)>, marshal::address)>("cs_apply_ptr");
    CHECK(ptr([](marshal::address a) { return marshal::address{a.value + 16}; }, marshal::address{0x1000}).value == 0x1010);
    CHECK(last_int() == 0x1010);
    CHECK(ptr([](marshal::address a) { return marshal::address{a.value}; }, marshal::address{0}).value == 0);

    // Every kind at once, in order (registers and stack).
    auto mix = lib.function<double(marshal::callback<double(int8_t, uint16_t, int32_t, uint64_t, float, double, bool,
                                                           marshal::address, int64_t, uint8_t)>,
                                   int8_t, uint16_t, int32_t, uint64_t, float, double, bool, marshal::address, int64_t, uint8_t)>("cs_mix");
    auto weigh = [](int8_t a, uint16_t b, int32_t c, uint64_t d, float e, double g, bool h, marshal::address p, int64_t i, uint8_t j) {
      return a + b * 2.0 + c * 4.0 + static_cast<double>(d) * 8 + e * 16.0 + g * 32 + (h ? 64 : 0) +
             static_cast<double>(p.value) * 128 + static_cast<double>(i) * 256 + j * 512.0;
    };
    marshal::callback<double(int8_t, uint16_t, int32_t, uint64_t, float, double, bool, marshal::address, int64_t, uint8_t)> mixed(weigh);
    CHECK(mix(mixed, -3, 65000, -70000, uint64_t{1} << 40, 0.25f, -2.5, true, marshal::address{3}, -5, 250) ==
          weigh(-3, 65000, -70000, uint64_t{1} << 40, 0.25f, -2.5, true, marshal::address{3}, -5, 250));

    // void: called, nothing written back.
    int32_t seen = 0;
    auto with_void = lib.function<int32_t(marshal::callback<void(int32_t)>, int32_t)>("cs_void");
    CHECK(with_void([&](int32_t v) { seen = v; }, 41) == 42);
    CHECK(seen == 41);

    // Narrowing: a 1-byte C++ integer of the other signedness binds (as for
    // functions); a result out of the typemap type's range is the engine's
    // conversion error, in the same words as the general path's, and native
    // code gets on_error.
    auto apply_u8_signed = lib.function<int8_t(marshal::callback<int8_t(int8_t)>, int8_t)>("cs_apply_u8");
    marshal::callback<int8_t(int8_t)> same([](int8_t v) { return v; });
    CHECK(apply_u8_signed(same, 100) == 100);
    int8_t got = 0;
    CHECK(apply_u8_signed([&](int8_t v) { got = v; return int8_t{0}; }, -56) == 0);
    CHECK(got == -56);  // native code's 200, read as from_value reads it
    marshal::callback<int8_t(int8_t)> negative([](int8_t) { return int8_t{-1}; });
    std::string direct, general;
    try {
      apply_u8_signed(negative, 1);
    } catch (const marshal::error& e) {
      direct = e.what();
    }
    CHECK(last_int() == 8);
    marshal::engine::set_scalar_lanes(false);
    try {
      apply_u8_signed(negative, 1);
    } catch (const marshal::error& e) {
      general = e.what();
    }
    marshal::engine::set_scalar_lanes(true);
    CHECK(direct.find("callback 'Cs_u8' failed: return value:") != std::string::npos);
    CHECK(direct == general);

    // The fast path: no allocation per call, and the callable runs without the
    // host function's Value form (replaced here by one that fails).
    auto apply = lib.function<int32_t(marshal::callback<int32_t(int32_t)>, int32_t)>("cs_apply_s32");
    marshal::callback<int32_t(int32_t)> plus([](int32_t v) { return v + 7; });
    CHECK(apply(plus, 1) == 8);
    plus.host()->fn = [](const std::vector<marshal::engine::Value>&, marshal::engine::Value&, std::string& e) {
      e = "the Value form ran";
      return false;
    };
    long sum = 0;
    const long before = allocations.load();
    for (int32_t i = 0; i < 1000; ++i) sum += apply(plus, i);
    CHECK(allocations.load() == before);
    CHECK(sum == 999 * 1000 / 2 + 7000);
    // With the lanes off, the general path runs the Value form: the check above means something.
    marshal::engine::set_scalar_lanes(false);
    CHECK_THROWS_WITH_AS(apply(plus, 1), doctest::Contains("the Value form ran"), marshal::error);
    marshal::engine::set_scalar_lanes(true);
    CHECK(apply(plus, 2) == 9);
  }

  TEST_CASE("callbacks of scalars: threads, delivery, the trap, and concurrent use of one callback") {
    marshal::library lib(marshal::test::source_path("tests/fixtures/callback_scalars.json"));
    // From threads native code starts (delivery inline): on those threads.
    const auto me = std::this_thread::get_id();
    std::atomic<long> here{0}, elsewhere{0};
    marshal::callback<int32_t(int32_t)> counted([&](int32_t v) {
      (std::this_thread::get_id() == me ? here : elsewhere).fetch_add(1);
      if (v == 50) throw std::runtime_error("fifty");  // native code gets on_error (-32)
      return v * 2;
    });
    auto threads = lib.function<int64_t(marshal::callback<int32_t(int32_t)>, int32_t, int32_t)>("cs_threads");
    int64_t expected = 0;
    for (int32_t i = 0; i < 100; ++i) expected += i == 50 ? -32 : i * 2;
    // The failure was on another thread: native code got on_error there; this
    // thread's call has no failure of its own.
    CHECK(threads(counted, 4, 100) == 4 * expected);
    CHECK(elsewhere.load() == 400);
    CHECK(here.load() == 0);

    // delivery "owner", called from the owner's own thread: runs at once.
    auto owner = lib.function<int32_t(marshal::callback<int32_t(int32_t)>, int32_t)>("cs_apply_owner");
    CHECK(owner(counted, 21) == 42);
    CHECK(here.load() == 1);

    // One callback object in calls on several threads at once: each call has
    // an active closure of its own (the kept one, or the engine's).
    auto apply = lib.function<int32_t(marshal::callback<int32_t(int32_t)>, int32_t)>("cs_apply_s32");
    marshal::callback<int32_t(int32_t)> plus([](int32_t v) { return v + 1; });
    std::atomic<long> wrong{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < 4; ++t)
      callers.emplace_back([&, t] {
        for (int32_t i = 0; i < 2000; ++i)
          if (apply(plus, i * 4 + t) != i * 4 + t + 1) ++wrong;
      });
    for (auto& c : callers) c.join();
    CHECK(wrong.load() == 0);

    // Scope "call": native code that keeps the pointer and calls it after the
    // call reaches the trap (on_error), never the callable.
    auto keep = lib.function<int32_t(marshal::callback<int32_t(int32_t)>, int32_t)>("cs_keep");
    auto fire = lib.function<int32_t(int32_t)>("cs_fire_kept");
    std::atomic<int> ran{0};
    marshal::callback<int32_t(int32_t)> kept([&](int32_t v) { ++ran; return v + 100; });
    CHECK(keep(kept, 1) == 101);
    CHECK(ran.load() == 1);
    CHECK(fire(5) == -32);
    CHECK(ran.load() == 1);
    std::string trapped;
    CHECK(marshal::engine::callback_take_error(trapped));
    CHECK(trapped.find("callback 'Cs_s32' was called after it was released") != std::string::npos);
    CHECK(keep(kept, 2) == 102);  // active again for the next call
    CHECK(ran.load() == 2);
  }

  TEST_CASE("the typed, dynamic and C APIs make byte-identical native calls") {
    const int32_t v[] = {5, -6, 7};
    const uint64_t direct = checksum_args(-7, 2.5, Point{1, 2}, v, 3, "bytes", MixBD{9, -1.5});
    marshal::library lib(fixture);
    auto typed = lib.function<uint64_t(int8_t, double, P, std::vector<int32_t>, size_t, std::string, BD)>("checksum_args");
    CHECK(typed(-7, 2.5, {1, 2}, {5, -6, 7}, 3, "bytes", {9, -1.5}) == direct);
    Bound dyn("tests/fixtures/pinvoke.json");
    CHECK(dyn.call("checksum_args", {-7, 2.5, marshal::engine::Value(rec({{"x", 1}, {"y", 2}})), marshal::engine::List{5, -6, 7}, 3, "bytes",
                                     marshal::engine::Value(rec({{"tag", 9}, {"v", -1.5}}))})
              .ret.as<uint64_t>() == direct);
    // The C API is tested through libmarshal_c in unit-c-api.cpp (same export, same check).
    auto add = lib.function<int32_t(int32_t, int32_t)>("add_i32");
    CHECK(add(-5, 9) == dyn.call("add_i32", {-5, 9}).ret.as<int64_t>());
  }
  TEST_CASE("out arrays and out values of plain data are written in place, as the engine's path writes them") {
    marshal::library lib(fixture);
    Bound dyn("tests/fixtures/pinvoke.json");
    auto fill = lib.function<void(marshal::out<std::vector<int32_t>>, size_t)>("fill_out_i32_array");
    // Every size: what the engine's general path returns, element by element.
    for (size_t n : {size_t{0}, size_t{1}, size_t{256}, size_t{1000000}}) {
      CAPTURE(n);
      std::vector<int32_t> got{99, 98, 97};  // stale content never survives an out call
      fill(got, n);
      std::vector<int32_t> want(n);
      if (n) fill_out_i32_array(want.data(), n);
      CHECK(got == want);
      if (n <= 256) {
        const marshal::engine::Value general = dyn.call("fill_out_i32_array", {marshal::engine::Value(static_cast<uint64_t>(n))}).out.at(0).second;
        REQUIRE(general.as<marshal::engine::List>().size() == n);
        for (size_t i = 0; i < n; ++i) CHECK(general.as<marshal::engine::List>()[i].as<int64_t>() == got[i]);
      }
    }
    // In place: the caller's storage, one resize, and no allocation at all once it has room.
    std::vector<int32_t> room;
    room.reserve(256);
    const int32_t* storage = room.data();
    long before = allocations.load();
    for (int i = 0; i < 100; ++i) fill(room, 256);
    CHECK(allocations.load() == before);
    CHECK(room.data() == storage);
    CHECK(room.size() == 256);
    CHECK(room[255] == 255 * 255 - 3);
    // out scalars and structs: the caller's variable, no allocation either.
    auto get_i32 = lib.function<void(marshal::out<int32_t>)>("get_out_i32");
    auto get_point = lib.function<void(marshal::out<P>, int32_t, int32_t)>("get_out_point");
    auto incr = lib.function<void(marshal::inout<int64_t>)>("incr_inout_i64");
    auto scale = lib.function<void(marshal::inout<P>, int32_t)>("scale_inout_point");
    int32_t got = 0;
    P pt{5, 5};
    int64_t counter = 41;
    P sp{7, 9};
    before = allocations.load();
    get_i32(got);
    get_point(pt, 3, -4);
    incr(counter);
    scale(sp, 3);
    CHECK(allocations.load() == before);
    CHECK(got == 4242);
    CHECK(pt.x == 3);
    CHECK(pt.y == -4);
    CHECK(counter == 42);
    CHECK(sp.x == 21);
    CHECK(sp.y == 27);
    // inout arrays: the caller's elements in, the first `count` of them back, as the engine gives them.
    auto twice = lib.function<void(marshal::inout<std::vector<int32_t>>, size_t)>("fill_inout_i32_array");
    std::vector<int32_t> v{1, 2, 3, 4, 5};
    twice(v, 3);
    CHECK(v == std::vector<int32_t>{2, 4, 6});
    const marshal::engine::Value general = dyn.call("fill_inout_i32_array", {marshal::engine::List{1, 2, 3, 4, 5}, 3}).out.at(0).second;
    CHECK(general.as<marshal::engine::List>().size() == 3);
    CHECK(general.as<marshal::engine::List>()[2].as<int64_t>() == 6);
    // A count larger than the caller's inout vector: the engine's error, nothing written.
    std::vector<int32_t> small{1, 2};
    CHECK_THROWS_WITH_AS(twice(small, 1000), doctest::Contains("the array has 2 elements but its count is 1000"), marshal::error);
    CHECK(small == std::vector<int32_t>{1, 2});
    // length: the vector shrinks to what the callee reports.
    auto points = lib.function<size_t(marshal::out<std::vector<P>>, size_t)>("fill_out_points_len");
    for (size_t cap : {size_t{0}, size_t{2}, size_t{8}}) {
      CAPTURE(cap);
      std::vector<P> out(20, P{9, 9});
      const size_t n = points(out, cap);
      CHECK(n == std::min<size_t>(cap, 3));
      REQUIRE(out.size() == n);
      for (size_t i = 0; i < n; ++i) {
        CHECK(out[i].x == static_cast<int32_t>(i));
        CHECK(out[i].y == -static_cast<int32_t>(i));
      }
    }
  }

  // Issue 20's target is at most one allocation for a dynamic out array: its
  // list (one block of n Values). 256 elements meet it (exactly one). 10^6 do
  // not yet: their 4 MB native buffer is past the arena's inline buffer and its
  // spare block, so the arena allocates a block for it and its list of blocks,
  // and a second block when the call needs a few more bytes: 4 per call in the
  // release build, 3 in the debug ASan build (whether that second block is
  // needed depends on the build's object sizes), so the check there is a range
  // (at least the list, at most those four).
  TEST_CASE("dynamic values: allocations per call of an out int32 array (issue 20: at most one)") {
    Bound dyn("tests/fixtures/pinvoke.json");
    std::string error;
    const marshal::engine::Plan* plan = dyn.lib->bind("fill_out_i32_array", error);
    REQUIRE(plan);
    for (const auto& [n, least, most] : {std::tuple<size_t, long, long>{256, 1, 1}, std::tuple<size_t, long, long>{1000000, 1, 4}}) {
      CAPTURE(n);
      std::vector<marshal::engine::Value> args{marshal::engine::Value(static_cast<uint64_t>(n))};
      marshal::engine::CallResult r;
      REQUIRE(plan->call(args, r, error));  // the result's own vectors get their room
      constexpr long calls = 10;
      bool ok = true;
      const long before = allocations.load();
      for (long i = 0; i < calls; ++i) {
        r.out.clear();
        ok = plan->call(args, r, error) && ok;
      }
      const long made = allocations.load() - before;
      CHECK(ok);
      CHECK(made >= least * calls);
      CHECK(made <= most * calls);
      REQUIRE(r.out.size() == 1);
      CHECK(r.out[0].second.as<marshal::engine::List>().size() == n);
    }
  }

  TEST_CASE("in-place out arrays keep the engine's limits and never trust a count") {
    // The fixture with a small max_buffer, and a callee whose reported length
    // (its return value) is larger than the buffer it was given.
    std::string text = read_text(fixture);
    const std::string key = "\"name\": \"marshal_fixture\",";
    REQUIRE(text.find(key) != std::string::npos);
    text.replace(text.find(key), key.size(), key + " \"max_buffer\": 1024,");
    const std::string fns = "\"functions\": {";
    REQUIRE(text.find(fns) != std::string::npos);
    text.replace(text.find(fns), fns.size(),
                 fns + R"("sum_len_u8": {"symbol": "touch_inout_u8", "returns": "uint64", "params": [
                   {"name": "v", "type": {"array": "uint8", "count": {"param": "n"}, "length": {"return": true}}, "dir": "inout"},
                   {"name": "n", "type": "size_t"}]},)");
    const std::string path = (std::filesystem::temp_directory_path() / ("marshal-cpp-inplace-" + std::to_string(getpid()) + ".json")).string();
    {
      std::ofstream f(path, std::ios::binary);
      f << text;
    }
    marshal::library lib(path);
    marshal::engine::Context ctx;
    marshal::engine::LoadResult r = ctx.load_text(text, path);
    REQUIRE(r.ok());
    std::string error;
    auto dyn = marshal::engine::Library::open(ctx, *r.typemap, error);
    REQUIRE(dyn);
    auto general_error = [&](const std::string& fn, std::vector<marshal::engine::Value> args) {
      const marshal::engine::Plan* plan = dyn->bind(fn, error);
      REQUIRE(plan);
      marshal::engine::CallResult res;
      std::string e;
      CHECK_FALSE(plan->call(args, res, e));
      return e;
    };
    auto typed_error = [](auto call) {
      try {
        call();
      } catch (const marshal::error& e) {
        return std::string(e.what());
      }
      return std::string("no error");
    };
    auto fill = lib.function<void(marshal::out<std::vector<int32_t>>, size_t)>("fill_out_i32_array");
    // 256 int32 are 1024 bytes: the limit; one more is the engine's error, word for word.
    std::vector<int32_t> v{7};
    fill(v, 256);
    CHECK(v.size() == 256);
    v.assign(1, 7);
    const std::string over = typed_error([&] { fill(v, 257); });
    CHECK(over == general_error("fill_out_i32_array", {marshal::engine::Value(uint64_t{257})}));
    CHECK(over.find("parameter 0 'out'") != std::string::npos);
    CHECK(over.find("larger than the limit of 1024 bytes") != std::string::npos);
    CHECK(v == std::vector<int32_t>{7});  // refused before the call: the caller's vector is untouched
    // A count no vector could hold (a caller that lies about its buffer): refused, never an overflow.
    const std::string huge = typed_error([&] { fill(v, SIZE_MAX); });
    CHECK(huge == general_error("fill_out_i32_array", {marshal::engine::Value(uint64_t{SIZE_MAX})}));
    CHECK(v == std::vector<int32_t>{7});
    // The vector is sized by the engine's count, not by what the caller had.
    std::vector<int32_t> tiny;
    tiny.reserve(1);
    fill(tiny, 200);
    CHECK(tiny.size() == 200);
    CHECK(tiny[199] == 199 * 199 - 3);
    // A reported length within the buffer shrinks the vector; beyond it, the engine's error.
    auto sum_len = lib.function<uint64_t(marshal::inout<std::vector<uint8_t>>, size_t)>("sum_len_u8");
    std::vector<uint8_t> b{1, 0, 0, 0};
    CHECK(sum_len(b, 4) == 1);
    CHECK(b == std::vector<uint8_t>{1 ^ 0x5a});
    std::vector<uint8_t> lie{200, 200};
    const std::string reported = typed_error([&] { sum_len(lie, 2); });
    CHECK(reported == general_error("sum_len_u8", {marshal::engine::Value(marshal::engine::Bytes{{200, 200}}), marshal::engine::Value(uint64_t{2})}));
    CHECK(reported.find("the callee reports 400 elements written into a buffer of 2") != std::string::npos);
    CHECK(lie.empty());  // what a lying callee wrote is not handed back
    std::filesystem::remove(path);
  }

  TEST_CASE("an empty pinned array is passed as a valid pointer, never NULL, as the engine passes it") {
    // The engine gives an array of 0 elements one zeroed byte; the typed
    // API's pinned and in-place paths give a buffer of their own: a C callee
    // may hand the pointer to memcpy, where NULL is undefined even for 0 bytes.
    marshal::library lib(fixture);
    Bound dyn("tests/fixtures/pinvoke.json");
    auto addr = lib.function<uint64_t(std::vector<double>, size_t)>("address_in_f64_array");
    static_assert(decltype(addr)::pinnable);
    CHECK(addr(std::vector<double>{}, 0) != 0);
    CHECK(addr(std::vector<double>{1.0, 2.0}, 2) != 0);
    const marshal::engine::Value general =
        dyn.call("address_in_f64_array", {marshal::engine::List{}, 0}).ret;
    CHECK(general.as<std::int64_t>() != 0);
    auto copy = lib.function<size_t(std::vector<uint8_t>, size_t, marshal::out<std::string>, size_t)>("copy_out_bytes_utf8");
    std::string got = "stale";
    CHECK(copy({}, 0, got, 8) == 0);  // memcpy(out, bytes, 0) in the callee: UBSan would stop on NULL
    CHECK(got.empty());
  }

  TEST_CASE("scalars and strings the C function cannot take as they are go through the scalar lane, without Values") {
    // A UTF-8 std::string for a UTF-16 parameter, bools: not passed as they
    // are (the string is transcoded, a bool has the typemap's width), so the
    // plan's lane takes them as host scalars (transcoding into its stack
    // scratch): no allocation. What the lane refuses (text that is not
    // well-formed, too long for its scratch) goes to the engine's general
    // path with its words.
    marshal::library lib(fixture);
    Bound dyn("tests/fixtures/pinvoke.json");
    auto len16 = lib.function<size_t(const std::string&)>("len_in_utf16");
    auto not_b = lib.function<bool(bool)>("not_cbool");
    static_assert(decltype(len16)::pinnable && !decltype(not_b)::fast);
    const std::string ascii = "plain text", mixed = "h\xc3\xa9llo \xf0\x9f\x98\x80";
    long before = allocations.load();
    size_t n = 0;
    bool b = false;
    for (int i = 0; i < 100; ++i) {
      n += len16(ascii) + len16(mixed);
      b = not_b(b);
    }
    CHECK(allocations.load() == before);
    CHECK(n == 100 * (10 + 8));
    CHECK_FALSE(b);  // 100 negations
    // Refused by the lane: the general path's result, or its error.
    const std::string longer(5000, 'x');
    CHECK(len16(longer) == 5000);
    for (const std::string& bad : {std::string("\xff"), std::string("a\0b", 3), std::string("\xed\xa0\x80")}) {
      std::string want_error;
      const marshal::engine::Plan* p = dyn.lib->bind("len_in_utf16", want_error);
      REQUIRE(p);
      marshal::engine::CallResult r;
      REQUIRE_FALSE(p->call(std::vector<marshal::engine::Value>{bad}, r, want_error));
      CHECK_THROWS_WITH_AS(len16(bad), want_error.c_str(), marshal::error);
    }
  }

  TEST_CASE("out<std::string>: the callee writes the caller's string, read back as the engine's path reads it") {
    marshal::library lib(fixture);
    Bound dyn("tests/fixtures/pinvoke.json");
    auto rev = lib.function<size_t(std::string, marshal::out<std::string>, size_t)>("reverse_out_utf8");
    static_assert(decltype(rev)::pinnable);
    // The engine's path for the same call: its string, or its error.
    std::string engine_error_sink;
    auto engine = [&](const std::string& in, size_t cap, std::string& error) -> std::optional<std::string> {
      const marshal::engine::Plan* p = dyn.lib->bind("reverse_out_utf8", error);
      REQUIRE(p);
      marshal::engine::CallResult r;
      if (!p->call(std::vector<marshal::engine::Value>{in, static_cast<std::uint64_t>(cap)}, r, error)) return std::nullopt;
      return r.out.at(0).second.as<std::string>();
    };
    struct Case { std::string in; size_t cap; };
    // ASCII (the string as it is), a capacity that cuts the text, non-ASCII
    // output (read by the engine: well-formed UTF-8 reversed by bytes is not),
    // a capacity of 0 (the engine's own path: it gives the callee one byte).
    for (const Case& c : {Case{"marshal", 64}, Case{"marshal", 4}, Case{"marshal", 1}, Case{"", 8},
                          Case{"\xc3\xa9\xc3\xa9", 64}, Case{"h\xc3\xa9", 64}}) {
      CAPTURE(c.in);
      CAPTURE(c.cap);
      std::string got = "stale text that never survives an out call";
      std::string engine_error, typed_error;
      const std::optional<std::string> want = engine(c.in, c.cap, engine_error);
      try {
        rev(c.in, got, c.cap);
      } catch (const marshal::error& e) {
        typed_error = e.what();
      }
      if (want) {
        CHECK(typed_error.empty());
        CHECK(got == *want);
      } else {
        CHECK(typed_error == engine_error);  // a non-ASCII `in` string takes the engine's path: `got` unchanged
      }
    }
    // Any bytes written in place (a pinned byte vector in, copied out by the
    // callee): plain ASCII as it is, the rest read by the engine, which
    // decodes and checks it; a failure clears the caller's string (the callee
    // wrote over it) and says what the engine's path says.
    auto copy = lib.function<size_t(std::vector<uint8_t>, size_t, marshal::out<std::string>, size_t)>("copy_out_bytes_utf8");
    static_assert(decltype(copy)::pinnable);
    const marshal::engine::Plan* cp = dyn.lib->bind("copy_out_bytes_utf8", engine_error_sink);
    REQUIRE(cp);
    const std::vector<std::vector<uint8_t>> outputs = {
        {'a', 'b', 'c'}, {0xc3, 0xa9, 'x'}, {0xe2, 0x82, 0xac}, {0xff, 'a'}, {'a', 0xc3}, {0xed, 0xa0, 0x80},
        {'a', 0, 'b'}, {}, {'x', 'y', 'z', 'w'}};
    for (const std::vector<uint8_t>& bytes : outputs) {
      for (size_t cap : {size_t{1}, size_t{2}, size_t{3}, size_t{4}, size_t{16}}) {
        CAPTURE(marshal::engine::Value(marshal::engine::Bytes{bytes}).to_json().dump());
        CAPTURE(cap);
        marshal::engine::CallResult r;
        std::string engine_error;
        marshal::engine::List args{marshal::engine::Bytes{bytes}, static_cast<std::uint64_t>(bytes.size()),
                                   static_cast<std::uint64_t>(cap)};
        const bool engine_ok = cp->call(args, r, engine_error);
        std::string got = "stale", typed_error;
        try {
          copy(bytes, bytes.size(), got, cap);
        } catch (const marshal::error& e) {
          typed_error = e.what();
        }
        CHECK(typed_error == engine_error);
        if (engine_ok) CHECK(got == r.out.at(0).second.as<std::string>());
        else CHECK(got.empty());
      }
    }
    // A capacity of 0: the engine's own path (it gives the callee one byte).
    marshal::library hostile_cap(source_path("tests/fixtures/hostile.json"));
    std::string none = "stale";
    CHECK(hostile_cap.function<size_t(marshal::out<std::string>, size_t)>("touch_out_utf8")(none, 0) == 0);
    CHECK(none.empty());
    // No terminator in the whole buffer: taken whole, as the engine takes it.
    marshal::library hostile(source_path("tests/fixtures/hostile.json"));
    auto unterminated = hostile.function<size_t(marshal::out<std::string>, size_t)>("fill_out_unterminated_nul");
    std::string whole;
    CHECK(unterminated(whole, 5) == 5);
    CHECK(whole == "xxxxx");
    // The string's own buffer, reused: no allocation once it has room.
    std::string room;
    room.reserve(64);
    const char* storage = room.data();
    const long before = allocations.load();
    size_t n = 0;
    for (int i = 0; i < 100; ++i) n += rev("marshal", room, 64);
    CHECK(allocations.load() == before);
    CHECK(n == 700);
    CHECK(room == "lahsram");
    CHECK(room.data() == storage);
  }

  TEST_CASE("the engine says which parameters can be written in place") {
    Bound b("tests/fixtures/pinvoke.json");
    std::string error;
    auto plan = [&](const char* fn) {
      const marshal::engine::Plan* p = b.lib->bind(fn, error);
      REQUIRE(p);
      return p;
    };
    using Form = marshal::engine::Plan::InPlace::Form;
    CHECK(plan("fill_out_i32_array")->in_place(0).form == Form::array);
    CHECK(plan("fill_out_i32_array")->in_place(0).count_param == 1);
    CHECK(plan("fill_out_i32_array")->in_place(1).form == Form::none);  // an `in` integer
    CHECK(plan("fill_out_points_len")->in_place(0).length_is_return);
    CHECK(plan("get_out_point")->in_place(0).form == Form::value);
    CHECK(plan("fill_out_header")->in_place(0).form == Form::none);    // strings and pointers inside
    CHECK(plan("alloc_out_points")->in_place(0).form == Form::none);   // callee-allocated
    CHECK(plan("reverse_out_utf8")->in_place(1).form == Form::string);  // an out UTF-8 string with a capacity
    CHECK(plan("reverse_out_utf8")->in_place(1).count_param == 2);
    CHECK(plan("reverse_out_utf8")->in_place(0).form == Form::none);    // an `in` string
    CHECK(plan("fill_out_utf16")->in_place(0).form == Form::none);      // UTF-16: converted
    std::uint64_t count = 0;
    CHECK(plan("fill_out_i32_array")->in_place_count(0, 256, count));
    CHECK(count == 256);
    CHECK_FALSE(plan("fill_out_i32_array")->in_place_count(0, -1, count));
    b.lib->set_max_buffer(1024);
    CHECK_FALSE(plan("fill_out_i32_array")->in_place_count(0, 257, count));
    b.lib->set_max_buffer(0);
    // Guard mode: the general path, always.
    b.lib->set_guard(true);
    CHECK(plan("fill_out_i32_array")->guarded());
    CHECK_FALSE(plan("fill_out_i32_array")->in_place_count(0, 4, count));
    b.lib->set_guard(false);
  }
}
