// marshal tests: primitive descriptors and interning.
// Primitive sizes follow the target ABI (checked against this compiler), each
// structural type is interned once, and the registry is readable while loading.
#include <doctest/doctest.h>

#include "typemap/context.hpp"

#include <atomic>
#include <cwchar>
#include <thread>
#include <uchar.h>

using namespace marshal;
using namespace marshal::engine;

TEST_SUITE("types") {
  TEST_CASE("primitive sizes follow the target ABI") {
    TypeRegistry reg;
    auto size = [&](const char* n) { return reg.get(reg.find_primitive(n)).size; };
    auto align = [&](const char* n) { return reg.get(reg.find_primitive(n)).align; };
    auto is_signed = [&](const char* n) { return reg.get(reg.find_primitive(n)).has(flag_signed); };
    CHECK(size("int8") == 1);
    CHECK(size("uint64") == 8);
    CHECK(size("long") == sizeof(long));
    CHECK(size("wchar_t") == sizeof(wchar_t));
    CHECK(size("char16_t") == 2);
    CHECK(size("size_t") == sizeof(size_t));
    CHECK(size("pointer") == sizeof(void*));
    CHECK(align("double") == alignof(double));
    CHECK(is_signed("char") == std::is_signed_v<char>);
    CHECK_FALSE(is_signed("char16_t"));
    CHECK(is_signed("wchar_t") == std::is_signed_v<wchar_t>);
    CHECK(reg.get(reg.find_primitive("float")).kind == Kind::floating);
    CHECK(reg.find_primitive("bool") == no_type);
    CHECK(reg.find_primitive("Point") == no_type);
    CHECK(kind_name(Kind::struct_) == "struct");
    CHECK(reg.spell(reg.find_primitive("ulong")) == "ulong");
  }

  TEST_CASE("structural types are interned once") {
    Context ctx;
    LoadResult r = ctx.load_text(R"({"typemap": 1, "types": {
      "A": {"struct": [{"name": "p", "type": {"ptr": "int32"}}, {"name": "q", "type": {"ptr": "int32"}},
                       {"name": "s", "type": {"string": "utf16"}}, {"name": "t", "type": {"string": "utf16"}},
                       {"name": "u", "type": {"string": "utf8"}}]}}})", "i.json");
    REQUIRE(r.ok());
    const auto& f = ctx.types().get(r.typemap->find_type("A")).as<RecordInfo>().fields;
    CHECK(f[0].type == f[1].type);
    CHECK(f[2].type == f[3].type);
    CHECK(f[3].type != f[4].type);
    CHECK(ctx.types().spell(f[0].type) == "ptr<int32>");
    CHECK(ctx.types().spell(f[4].type) == "string<utf8>");
  }

  TEST_CASE("descriptors stay readable from other threads while typemaps load") {
    Context ctx;
    LoadResult first = ctx.load_text(R"({"typemap": 1, "types": {"P": {"struct": [{"name": "x", "type": "int32"}]}}})", "p.json");
    REQUIRE(first.ok());
    const TypeId p = first.typemap->find_type("P");
    std::atomic<bool> stop{false};
    std::atomic<long> reads{0};
    std::thread reader([&] {
      while (!stop.load()) {
        if (ctx.types().get(p).size != 4) break;
        reads.fetch_add(1);
      }
    });
    int loaded = 0;
    for (int i = 0; i < 200; ++i) {
      std::string text = R"({"typemap": 1, "types": {"Q": {"struct": [{"name": "a", "type": {"array": "int8", "count": )" +
                         std::to_string(i + 1) + "}}]}}}";
      loaded += ctx.load_text(text, "q.json").ok();
    }
    stop = true;
    reader.join();
    CHECK(loaded == 200);
    CHECK(ctx.types().get(p).size == 4);
    CHECK(ctx.types().size() > 256);  // crossed at least one chunk boundary
  }
}
