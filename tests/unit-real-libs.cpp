// marshal tests: real libraries through the typemaps in typemaps/.
// Every function of libc.json, libm.json and zlib.json is called through the
// engine and compared with a direct C call, including zlib's streaming API over
// a z_stream in host-owned native memory (its address must not change).
#include "call_support.hpp"

#include "convert/native.hpp"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <cwchar>
#include <sqlite3.h>
#include <zlib.h>
#include <algorithm>

using namespace marshal;
using namespace marshal::engine;
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
    CallResult m = c.call("memchr", {Bytes{{'a', 'b', 'c', 'd', 'e', 'f'}}, 'd'});  // n: computed
    CHECK(m.ret.is<Address>());
    CHECK(std::memchr(hay, 'd', 6) != nullptr);
    CHECK(c.call("memchr", {Bytes{{'a', 'b'}}, 'z'}).ret.is_null());
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
    CHECK(I(z.call("crc32", {0, in}).ret) == static_cast<std::int64_t>(crc32(0, raw, text.size())));
    CHECK(I(z.call("crc32", {0, Bytes{{'h', 'e', 'l', 'l', 'o'}}}).ret) == 907060870);
    CHECK(I(z.call("adler32", {1, in}).ret) == static_cast<std::int64_t>(adler32(1, raw, text.size())));
    CHECK(I(z.call("compressBound", {1000}).ret) == static_cast<std::int64_t>(compressBound(1000)));
    CallResult c = z.call("compress2", {256, in, 9});  // sourceLen: computed
    CHECK(I(c.ret) == Z_OK);
    std::vector<Bytef> direct(256);
    uLongf direct_len = 256;
    REQUIRE(compress2(direct.data(), &direct_len, raw, text.size(), 9) == Z_OK);
    direct.resize(direct_len);
    CHECK(z.out(c, "dest") == Value(Bytes{direct}));  // exactly destLen bytes come back
    CHECK(I(z.out(c, "destLen")) == static_cast<std::int64_t>(direct_len));
    CallResult u = z.call("uncompress", {512, z.out(c, "dest")});
    CHECK(I(u.ret) == Z_OK);
    CHECK(z.out(u, "dest") == Value(in));
    CHECK(I(z.call("uncompress", {4, z.out(c, "dest")}).ret) == Z_BUF_ERROR);
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
    CHECK(I(z.call("deflateInit_", {Value(strm), 6, zlibVersion()}).ret) == Z_OK);
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
    CHECK(I(z.call("inflateInit_", {Value(is), zlibVersion()}).ret) == Z_OK);
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

  TEST_CASE("libc qsort and bsearch over structs with a host comparator") {
    Bound c("typemaps/libc.json");
    int compared = 0;
    auto by_key = std::make_shared<HostFunction>(HostFunction{"by_key", [&](const std::vector<Value>& a, Value& r, std::string&) {
      ++compared;
      const std::int64_t x = I(*a[0].field("key")), y = I(*a[1].field("key"));
      r = Value(x < y ? -1 : x > y ? 1 : 0);
      return true;
    }});
    struct Item { int32_t key, value; };
    std::vector<Item> direct{{5, 50}, {1, 10}, {4, 40}, {2, 20}, {3, 30}};
    List items;
    for (const Item& it : direct) items.push_back(Value(rec({{"key", it.key}, {"value", it.value}})));
    CallResult r = c.call("qsort", {items, Value(by_key)});  // nmemb and size: computed
    std::qsort(direct.data(), direct.size(), sizeof(Item), [](const void* a, const void* b) {
      const int32_t x = static_cast<const Item*>(a)->key, y = static_cast<const Item*>(b)->key;
      return x < y ? -1 : x > y ? 1 : 0;
    });
    const List& sorted = c.out(r, "base").as<List>();
    REQUIRE(sorted.size() == 5);
    for (std::size_t i = 0; i < 5; ++i) {
      CHECK(I(*sorted[i].field("key")) == direct[i].key);
      CHECK(I(*sorted[i].field("value")) == direct[i].value);
    }
    CHECK(compared > 0);
    CHECK(c.call("bsearch", {Value(rec({{"key", 4}, {"value", 0}})), c.out(r, "base"), Value(by_key)}).ret ==
          Value(rec({{"key", 4}, {"value", 40}})));
    CHECK(c.call("bsearch", {Value(rec({{"key", 9}, {"value", 0}})), c.out(r, "base"), Value(by_key)}).ret.is_null());
  }

  TEST_CASE("sqlite3: exec with a row callback, prepared statements, handles that close") {
    Bound s("typemaps/sqlite3.json");
    CHECK(s.call("sqlite3_libversion").ret.as<std::string>() == sqlite3_libversion());
    CallResult open = s.call("sqlite3_open", {":memory:"});
    CHECK(I(open.ret) == SQLITE_OK);
    Value db = s.out(open, "db");
    REQUIRE(db.is<std::shared_ptr<HandleBox>>());
    CallResult created = s.call("sqlite3_exec", {db, "create table t(id integer, name text);"
                                                     "insert into t values (1, 'one'), (2, 'two'), (3, NULL);",
                                                 Value(), Value()});
    CHECK(I(created.ret) == SQLITE_OK);
    CHECK(s.out(created, "errmsg").is_null());
    std::vector<std::string> rows;
    auto row = std::make_shared<HostFunction>(HostFunction{"row", [&](const std::vector<Value>& a, Value& r, std::string&) {
      std::string line;
      const List& values = a[2].as<List>();
      const List& names = a[3].as<List>();
      for (std::size_t i = 0; i < values.size(); ++i)
        line += names[i].as<std::string>() + "=" + (values[i].is_null() ? std::string("NULL") : values[i].as<std::string>()) + ";";
      rows.push_back(line);
      r = Value(0);
      return true;
    }});
    CHECK(I(s.call("sqlite3_exec", {db, "select id, name from t order by id;", Value(row), Value()}).ret) == SQLITE_OK);
    CHECK(rows == std::vector<std::string>{"id=1;name=one;", "id=2;name=two;", "id=3;name=NULL;"});

    // The same rows through sqlite3 directly.
    sqlite3* direct = nullptr;
    REQUIRE(sqlite3_open(":memory:", &direct) == SQLITE_OK);
    REQUIRE(sqlite3_exec(direct, "create table t(id integer, name text); insert into t values (1, 'one'), (2, 'two'), (3, NULL);",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    std::vector<std::string> direct_rows;
    sqlite3_exec(direct, "select id, name from t order by id;", [](void* p, int n, char** v, char** names) {
      std::string line;
      for (int i = 0; i < n; ++i) line += std::string(names[i]) + "=" + (v[i] ? v[i] : "NULL") + ";";
      static_cast<std::vector<std::string>*>(p)->push_back(line);
      return 0;
    }, &direct_rows, nullptr);
    sqlite3_close(direct);
    CHECK(rows == direct_rows);

    // A row callback that fails stops sqlite3 (on_error returns 1: abort) and the error reaches the host.
    auto failing = std::make_shared<HostFunction>(HostFunction{"failing", [](const std::vector<Value>&, Value&, std::string& e) {
      e = "stop here";
      return false;
    }});
    CHECK(s.error_of("sqlite3_exec", {db, "select id from t;", Value(failing), Value()}).find("callback 'ExecRow' failed: stop here") !=
          std::string::npos);

    CallResult bad = s.call("sqlite3_exec", {db, "select nope from t;", Value(), Value()});
    CHECK(I(bad.ret) != SQLITE_OK);
    CHECK(s.out(bad, "errmsg").as<std::string>() == "no such column: nope");  // freed with sqlite3_free after conversion

    CallResult prep = s.call("sqlite3_prepare_v2", {db, "select name from t where id = ?;"});  // nbyte: computed
    CHECK(I(prep.ret) == SQLITE_OK);
    Value stmt = s.out(prep, "stmt");
    CHECK(I(s.call("sqlite3_bind_int", {stmt, 1, 2}).ret) == SQLITE_OK);
    CHECK(I(s.call("sqlite3_step", {stmt}).ret) == SQLITE_ROW);
    CHECK(s.call("sqlite3_column_text", {stmt, 0}).ret.as<std::string>() == "two");
    CHECK(I(s.call("sqlite3_step", {stmt}).ret) == SQLITE_DONE);
    CHECK(I(s.call("sqlite3_finalize", {stmt}).ret) == SQLITE_OK);  // finalized by hand: not again at drop
    CHECK(s.error_of("sqlite3_step", {stmt}).find("the Stmt handle was already released") != std::string::npos);
    CHECK(s.call("sqlite3_errmsg", {db}).ret.as<std::string>() == "not an error");
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
