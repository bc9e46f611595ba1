// marshal tests: variadic arguments (TYPEMAP.md, functions: variadic_from).
// The type of each one is any type expression of the typemap, with C's
// default promotions; va_digest (fixtures/objects.c) reads each form with
// va_arg and the engine's call must give the direct call's digest. Errors
// name the argument's index; a bare bool names both choices. Also the CLI.
#include "call_support.hpp"

#include "fixtures/objects.h"

#include <array>
#include <cstdio>
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

Bound& fx() {
  static Bound b("tests/fixtures/objects.json");
  return b;
}

Value va(Value type, Value v) { return Value(rec({{"type", std::move(type)}, {"value", std::move(v)}})); }
Value type(std::initializer_list<std::pair<const char*, Value>> kind) { return Value(rec(kind)); }

std::int64_t digest(std::vector<Value> args) { return I(fx().call("va_digest", std::move(args)).ret); }

// Runs the marshal command; stdout, and stderr into *err.
int marshal_run(const std::string& args, std::string& out, std::string& err) {
  const std::string err_file =
      std::filesystem::temp_directory_path() / ("marshal-variadic-" + std::to_string(::getpid()) + ".err");
  FILE* p = ::popen((std::string(MARSHAL_EXE) + " " + args + " 2>" + err_file).c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  for (std::size_t n; (n = std::fread(buf.data(), 1, buf.size(), p)) > 0;) out.append(buf.data(), n);
  const int st = ::pclose(p);
  err = read_text(err_file);
  std::filesystem::remove(err_file);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace

TEST_SUITE("call") {
  TEST_CASE("a variadic argument's type is any type expression, with C's default promotions") {
    CHECK(digest({"s", va(type({{"string", "utf8"}}), "abc")}) == va_digest("s", "abc"));
    CHECK(digest({"w", va(type({{"string", "wchar"}}), "h\xc3\xa9")}) == va_digest("w", L"h\u00e9"));
    const std::int32_t seven = 7;
    CHECK(digest({"p", va(type({{"ptr", "int32"}}), 7)}) == va_digest("p", &seven));
    const std::int32_t three[] = {1, 2, 3};
    CHECK(digest({"a", va(type({{"array", "int32"}, {"count", 3}}), List{1, 2, 3})}) == va_digest("a", three));
    const std::int32_t ended[] = {4, 5, 0};
    CHECK(digest({"z", va(type({{"array", "int32"}, {"count", type({{"sentinel", 0}})}}), List{4, 5})}) ==
          va_digest("z", ended));
    const Vec2 v{1.5, 2};
    CHECK(digest({"v", va("Vec2", Value(rec({{"x", 1.5}, {"y", 2.0}})))}) == va_digest("v", v));
    // Promotions: an enum by name (uint8), cbool, a VARIANT_BOOL-like bool, short, float.
    CHECK(digest({"iiiii", va("Mode", "FAST"), va("cbool", true), va(type({{"bool", 2}, {"true", -1}}), true),
                  va("int16", -5), va(type({{"bool", 4}, {"true", 1}}), false)}) == va_digest("iiiii", 200, 1, -1, -5, 0));
    // float to double after rounding to float: 2^24 + 1 is not a float.
    CHECK(digest({"d", va("float", 16777217.0)}) == va_digest("d", static_cast<double>(16777217.0f)));
    // Names as before: "string" (UTF-8 here), int64, a mix.
    CHECK(digest({"lsi", va("int64", std::int64_t{1} << 40), va("string", "x"), va("char", 65)}) ==
          va_digest("lsi", std::int64_t{1} << 40, "x", 65));
  }

  TEST_CASE("a bad variadic argument is an error naming its index") {
    auto error = [](std::vector<Value> args) { return fx().error_of("va_digest", std::move(args)); };
    const std::string at1 = fx().tm->file + ": va_digest: variadic argument 1: ";
    const std::string at2 = fx().tm->file + ": va_digest: variadic argument 2: ";
    CHECK(error({"i", va("bool", true)}) ==
          at1 + "'bool' is ambiguous: use \"cbool\" (1 byte, C _Bool), \"bool32\" (4 bytes, Win32 BOOL), "
                "{\"bool\": SIZE, \"true\": VALUE}, or set /defaults/bool");
    CHECK(error({"ia", va("int", 1), va(type({{"array", "int32"}, {"count", type({{"param", "n"}})}}), List{1})}) ==
          at2 + "type/count/param: array count of a variadic argument is a constant or {\"sentinel\": VALUE} "
                "(it has no sibling parameters)");
    CHECK(error({"p", va(type({{"ptr", "nonsense"}}), 1)}).rfind(at1 + "type/ptr: unknown type 'nonsense'", 0) == 0);
    CHECK(error({"a", va(type({{"array", "int32"}, {"count", 3}}), List{1})}).rfind(at1 + "(", 0) == 0);
    CHECK(error({"i", va("Mode", "MEDIUM")}).rfind(at1 + "(Mode): ", 0) == 0);
    CHECK(error({"i", va("void", 1)}) == at1 + "'void' is not a value type");
    CHECK(error({"s", va(type({{"string", "utf8"}}), Value())}) == at1 + "(string<utf8>): null is not allowed here (not nullable)");
    CHECK(error({"i", va(type({{"string", "klingon"}}), "x")}).rfind(at1 + "type/string: expected one of: ", 0) == 0);
    CHECK(error({"i", Value(rec({{"type", 5}, {"value", 1}}))}).rfind(at1 + "expected {\"type\": T, \"value\": V}", 0) == 0);
  }

  TEST_CASE("a bare bool as a variadic type follows /defaults/bool when it is set") {
    auto doc = nlohmann::ordered_json::parse(read_text(source_path("tests/fixtures/objects.json")));
    doc["defaults"] = {{"bool", "bool32"}};
    Context ctx;
    LoadResult r = ctx.load_text(doc.dump(), "objects-bool32.json");
    REQUIRE(r.ok());
    std::string error;
    auto lib = Library::open(ctx, *r.typemap, error);
    REQUIRE(lib);
    const Plan* plan = lib->bind("va_digest", error);
    REQUIRE(plan);
    CallResult result;
    CHECK(plan->call(std::vector<Value>{"ii", va("bool", true), va("bool", false)}, result, error));
    CHECK(I(result.ret) == va_digest("ii", 1, 0));
  }
}

TEST_SUITE("cli") {
  TEST_CASE("marshal call: a variadic argument typed by a type expression") {
    std::string out, err;
    CHECK(marshal_run(R"(call typemaps/libc.json snprintf 32 '"%s|%d"' '{"type":{"string":"utf8"},"value":"x"}' )"
                      R"('{"type":"int","value":7}')", out, err) == 0);
    INFO(err);
    CHECK(nlohmann::json::parse(out)["out"]["str"] == "x|7");
    out.clear();
    CHECK(marshal_run(R"(call typemaps/libc.json snprintf 32 '"%d"' '{"type":"bool","value":true}')", out, err) == 1);
    CHECK(out.empty());
    CHECK(err.find("snprintf: variadic argument 2: 'bool' is ambiguous: use \"cbool\"") != std::string::npos);
    CHECK(err.find('\n') == err.size() - 1);  // one line
  }
}
