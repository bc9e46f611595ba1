// marshal tests: real libraries through the typemaps in typemaps/.
// Every function of libc.json, libm.json and zlib.json is called through the
// engine and compared with a direct C call, including zlib's streaming API over
// a z_stream in host-owned native memory (its address must not change).
#include "call_support.hpp"

#include "native.hpp"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <cwchar>
#include <zlib.h>

using namespace marshal;
using namespace marshal::test;

TEST_SUITE("real-libs") {
  TEST_CASE("libc") {
    Bound c("typemaps/libc.json");
    CHECK(I(c.call("strlen", {"hello"}).ret) == static_cast<std::int64_t>(std::strlen("hello")));
    CHECK(c.call("strdup", {"copy"}).ret.as<std::string>() == "copy");
    ::setenv("MARSHAL_TEST_VAR", "yes", 1);
    CHECK(c.call("getenv", {"MARSHAL_TEST_VAR"}).ret.as<std::string>() == std::getenv("MARSHAL_TEST_VAR"));
    CHECK(c.call("getenv", {"MARSHAL_NO_SUCH_VAR"}).ret.is_null());
    CallResult r = c.call("strtol", {"  -123xyz", 10});
    CHECK(I(r.ret) == std::strtol("  -123xyz", nullptr, 10));
    CHECK(c.out(r, "end").is<Address>());
    CallResult big = c.call("strtol", {"99999999999999999999", 10});
    CHECK(I(big.ret) == LONG_MAX);
    CHECK(*big.error_number == ERANGE);
    div_t d = std::div(17, 5);
    CHECK(c.call("div", {17, 5}).ret == Value(rec({{"quot", d.quot}, {"rem", d.rem}})));
    ldiv_t ld = std::ldiv(-9000000000L, 7);
    CHECK(c.call("ldiv", {Value(std::int64_t{-9000000000}), 7}).ret ==
          Value(rec({{"quot", Value(std::int64_t{ld.quot})}, {"rem", Value(std::int64_t{ld.rem})}})));
    auto va = [](const char* t, Value v) { return Value(rec({{"type", t}, {"value", std::move(v)}})); };
    char buf[32];
    CallResult s = c.call("snprintf", {32, "%s-%d-%.1f", va("string", "a"), va("int", -7), va("double", 2.25)});
    CHECK(I(s.ret) == std::snprintf(buf, sizeof buf, "%s-%d-%.1f", "a", -7, 2.25));
    CHECK(c.out(s, "str").as<std::string>() == buf);
    CallResult cut = c.call("snprintf", {4, "%s", va("string", "truncated")});
    CHECK(I(cut.ret) == 9);
    CHECK(c.out(cut, "str").as<std::string>() == "tru");
    CHECK(I(c.call("wcslen", {"h\xc3\xa9llo \xe2\x82\xac"}).ret) == static_cast<std::int64_t>(std::wcslen(L"h\u00e9llo \u20ac")));
    CHECK(I(c.call("toupper", {'q'}).ret) == std::toupper('q'));
    const char hay[] = "abcdef";
    CallResult m = c.call("memchr", {Bytes{{'a', 'b', 'c', 'd', 'e', 'f'}}, 'd', 6});
    CHECK(m.ret.is<Address>());
    CHECK(std::memchr(hay, 'd', 6) != nullptr);
    CHECK(c.call("memchr", {Bytes{{'a', 'b'}}, 'z', 2}).ret.is_null());
    CHECK(I(c.call("atoi", {"  42abc"}).ret) == std::atoi("  42abc"));
    CHECK(c.call("free", {Value()}).ret.is_null());
  }

  TEST_CASE("libm") {
    Bound m("typemaps/libm.json");
    CHECK(D(m.call("cos", {0.5}).ret) == std::cos(0.5));
    CHECK(D(m.call("sin", {0.5}).ret) == std::sin(0.5));
    CHECK(D(m.call("pow", {2.0, 0.5}).ret) == std::pow(2.0, 0.5));
    int e = 0;
    CallResult f = m.call("frexp", {8.0});
    CHECK(D(f.ret) == std::frexp(8.0, &e));
    CHECK(m.out(f, "exp") == Value(e));
    double ip = 0;
    CallResult mf = m.call("modf", {-3.75});
    CHECK(D(mf.ret) == std::modf(-3.75, &ip));
    CHECK(D(m.out(mf, "iptr")) == ip);
    CHECK(I(m.call("lround", {2.5}).ret) == std::lround(2.5));
    CHECK(I(m.call("lround", {-2.5}).ret) == std::lround(-2.5));
  }

  TEST_CASE("zlib: checksums, bounds, compress2 and uncompress round trip") {
    Bound z("typemaps/zlib.json");
    CHECK(z.call("zlibVersion").ret.as<std::string>() == zlibVersion());
    const std::string text = "hello hello hello hello marshal marshal marshal";
    Bytes in{{text.begin(), text.end()}};
    const auto* raw = reinterpret_cast<const Bytef*>(text.data());
    CHECK(I(z.call("crc32", {0, in, static_cast<int>(text.size())}).ret) == static_cast<std::int64_t>(crc32(0, raw, text.size())));
    CHECK(I(z.call("crc32", {0, Bytes{{'h', 'e', 'l', 'l', 'o'}}, 5}).ret) == 907060870);
    CHECK(I(z.call("adler32", {1, in, static_cast<int>(text.size())}).ret) == static_cast<std::int64_t>(adler32(1, raw, text.size())));
    CHECK(I(z.call("compressBound", {1000}).ret) == static_cast<std::int64_t>(compressBound(1000)));
    CallResult c = z.call("compress2", {256, in, static_cast<int>(text.size()), 9});
    CHECK(I(c.ret) == Z_OK);
    std::vector<Bytef> direct(256);
    uLongf direct_len = 256;
    REQUIRE(compress2(direct.data(), &direct_len, raw, text.size(), 9) == Z_OK);
    direct.resize(direct_len);
    CHECK(z.out(c, "dest") == Value(Bytes{direct}));  // exactly destLen bytes come back
    CHECK(I(z.out(c, "destLen")) == static_cast<std::int64_t>(direct_len));
    CallResult u = z.call("uncompress", {512, z.out(c, "dest"), static_cast<int>(direct_len)});
    CHECK(I(u.ret) == Z_OK);
    CHECK(z.out(u, "dest") == Value(in));
    CHECK(I(z.call("uncompress", {4, z.out(c, "dest"), static_cast<int>(direct_len)}).ret) == Z_BUF_ERROR);
  }

  TEST_CASE("zlib: streaming deflate and inflate over a z_stream in host-owned memory") {
    Bound z("typemaps/zlib.json");
    const TypeRegistry& reg = z.ctx.types();
    TypeId zs = z.tm->find_type("z_stream");
    const TypeId u8 = reg.primitive(Prim::uint8);
    std::string text;
    for (int i = 0; i < 200; ++i) text += "line " + std::to_string(i) + " of a streamed text\n";
    auto input = native_new(reg, u8, text.size());
    std::string err;
    REQUIRE(native_store(reg, *input, Value(Bytes{{text.begin(), text.end()}}), err));
    auto output = native_new(reg, u8, 8192);
    auto strm = native_new(reg, zs);
    CHECK(I(z.call("deflateInit_", {Value(strm), 6, zlibVersion(), static_cast<int>(sizeof(z_stream))}).ret) == Z_OK);
    REQUIRE(native_set(reg, *strm, "next_in", Value(input), err));
    REQUIRE(native_set(reg, *strm, "avail_in", Value(static_cast<int>(text.size())), err));
    REQUIRE(native_set(reg, *strm, "next_out", Value(output), err));
    REQUIRE(native_set(reg, *strm, "avail_out", Value(8192), err));
    CallResult d = z.call("deflate", {Value(strm), Z_FINISH});
    CHECK(I(d.ret) == Z_STREAM_END);
    Value total;
    REQUIRE(native_get(reg, *strm, "total_out", total, err));
    CHECK(*z.out(d, "strm").field("total_out") == total);  // inout: copied back too
    CHECK(I(z.call("deflateEnd", {Value(strm)}).ret) == Z_OK);

    // The same through zlib directly.
    z_stream ds{};
    REQUIRE(deflateInit(&ds, 6) == Z_OK);
    std::vector<Bytef> dout(8192);
    ds.next_in = reinterpret_cast<Bytef*>(text.data());
    ds.avail_in = static_cast<uInt>(text.size());
    ds.next_out = dout.data();
    ds.avail_out = 8192;
    REQUIRE(deflate(&ds, Z_FINISH) == Z_STREAM_END);
    deflateEnd(&ds);
    CHECK(static_cast<std::uint64_t>(I(total)) == ds.total_out);
    CHECK(std::memcmp(output->data(), dout.data(), ds.total_out) == 0);

    // Inflate it back in two steps, through a small output window.
    auto back = native_new(reg, u8, text.size());
    auto is = native_new(reg, zs);
    CHECK(I(z.call("inflateInit_", {Value(is), zlibVersion(), static_cast<int>(sizeof(z_stream))}).ret) == Z_OK);
    REQUIRE(native_set(reg, *is, "next_in", Value(output), err));
    REQUIRE(native_set(reg, *is, "avail_in", Value(static_cast<std::int64_t>(ds.total_out)), err));
    REQUIRE(native_set(reg, *is, "next_out", Value(back), err));
    REQUIRE(native_set(reg, *is, "avail_out", Value(100), err));
    CHECK(I(z.call("inflate", {Value(is), Z_NO_FLUSH}).ret) == Z_OK);
    REQUIRE(native_set(reg, *is, "avail_out", Value(static_cast<int>(text.size()) - 100), err));
    CHECK(I(z.call("inflate", {Value(is), Z_FINISH}).ret) == Z_STREAM_END);
    CHECK(I(z.call("inflateEnd", {Value(is)}).ret) == Z_OK);
    Value restored;
    REQUIRE(native_load(reg, *back, restored, err));
    CHECK(restored == Value(Bytes{{text.begin(), text.end()}}));
  }

  TEST_CASE("a missing library or symbol is a clear error naming it") {
    Context ctx;
    LoadResult r = ctx.load_text(R"({"typemap": 1,
      "library": {"name": "nothere", "load": {"linux": ["libnothere.so.9", "libnothere.so"], "any": ["libnothere-any.so"]}},
      "functions": {"f": {"returns": "void"}}})", "missing.json");
    REQUIRE(r.ok());
    std::string error;
    CHECK_FALSE(Library::open(ctx, *r.typemap, error));
    CHECK(error.find("cannot load library 'nothere': tried libnothere.so.9: ") != std::string::npos);
    CHECK(error.find("; libnothere.so: ") != std::string::npos);
    CHECK(error.find("; libnothere-any.so: ") != std::string::npos);

    LoadResult s = ctx.load_text(R"({"typemap": 1, "library": {"name": "libc", "load": {"linux": ["libc.so.6"]}},
      "functions": {"strlen": {"returns": "size_t", "params": [{"name": "s", "type": {"string": "utf8"}}]},
                    "no_such_export": {"returns": "void"},
                    "memcpy_old": {"symbol": "memcpy@GLIBC_0.0", "returns": "pointer"},
                    "memcpy_new": {"symbol": "memcpy@GLIBC_2.14", "returns": "pointer",
                                   "params": [{"name": "d", "type": "pointer"}, {"name": "s", "type": "pointer"}, {"name": "n", "type": "size_t"}]}}})",
                                 "symbols.json");
    REQUIRE(s.ok());
    auto lib = Library::open(ctx, *s.typemap, error);
    REQUIRE(lib);
    CHECK(lib->bind("strlen", error));  // lazy: the good ones bind
    CHECK_FALSE(lib->bind("no_such_export", error));
    CHECK(error.find("symbol 'no_such_export' not found in library 'libc' (libc.so.6)") != std::string::npos);
    CHECK(lib->bind("memcpy_new", error));  // a versioned ELF symbol through dlvsym
    CHECK_FALSE(lib->bind("memcpy_old", error));
    CHECK(error.find("memcpy@GLIBC_0.0") != std::string::npos);
    auto missing = lib->missing_symbols();
    REQUIRE(missing.size() == 2);
    CHECK(missing[0].rfind("symbols.json: /functions/memcpy_old: ", 0) == 0);
  }
}
