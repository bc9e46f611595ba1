// marshal tests: parameters the engine computes (the typemap's "value":
// sizeof, count_of, bytes_of). The callees of tests/fixtures/sizes.c report what
// they were given; a host cannot supply such a parameter, so it cannot lie about
// it; the loader refuses what cannot be computed, at its JSON Pointer. Also the
// typemap's "library": {"guard": true}.
#include "call_support.hpp"
#include "child_process.hpp"

#include "base/guard.hpp"
#include "marshal/marshal.hpp"

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <sqlite3.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;

namespace {

struct SizesPair { std::int32_t key; std::int64_t weight; };  // as in tests/fixtures/sizes.c

Value pairs(std::initializer_list<SizesPair> items) {
  List l;
  for (const SizesPair& p : items) l.push_back(Value(rec({{"key", p.key}, {"weight", p.weight}})));
  return Value(std::move(l));
}

Bytes bytes(std::size_t n, std::uint8_t fill) { return Bytes{std::vector<std::uint8_t>(n, fill)}; }

// The one error of a typemap that has one.
std::string load_error(const std::string& text) {
  Context ctx;
  LoadResult r = ctx.load_text(text, "t.json");
  CHECK_FALSE(r.ok());
  REQUIRE(r.errors.size() == 1);
  return r.errors[0].text();
}

// `marshal ARGS` (shell-quoted), with its stdout and exit status; stderr joins stdout.
std::pair<int, std::string> marshal_cli(const std::string& args) {
  FILE* p = ::popen((std::string(MARSHAL_EXE) + " " + args + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// A typemap of one function f with these parameters.
std::string with_params(const std::string& params) {
  return R"({"typemap": 1, "library": {"name": "x", "load": {"any": ["self"]}},
             "functions": {"f": {"returns": "void", "params": [)" + params + "]}}}";
}

}  // namespace

TEST_SUITE("sizes") {
  TEST_CASE("computed values reach the callee exactly: count_of, sizeof, bytes_of") {
    Bound b("tests/fixtures/sizes.json");
    CallResult r = b.call("sizes_sum_pairs", {pairs({{1, 10}, {2, 20}, {3, 30}})});
    CHECK(I(b.out(r, "got_nmemb")) == 3);
    CHECK(I(b.out(r, "got_size")) == static_cast<std::int64_t>(sizeof(SizesPair)));
    CHECK(I(r.ret) == 1 * 10 + 2 * 20 + 3 * 30);
    CallResult empty = b.call("sizes_sum_pairs", {Value(List{})});
    CHECK(I(b.out(empty, "got_nmemb")) == 0);
    CHECK(I(empty.ret) == 0);

    CallResult u8 = b.call("sizes_sum_u8", {bytes(255, 1)});
    CHECK(I(b.out(u8, "got")) == 255);
    CHECK(I(u8.ret) == 255);
    CallResult list = b.call("sizes_sum_u8", {Value(List{Value(7), Value(8)})});
    CHECK(I(b.out(list, "got")) == 2);
    CHECK(I(list.ret) == 15);
    CallResult none = b.call("sizes_sum_u8", {Value()});  // nullable: NULL and 0
    CHECK(I(b.out(none, "got")) == 0);

    // UTF-16: bytes_of is twice the code units, without the terminator.
    CallResult w = b.call("sizes_sum_utf16", {"h\xc3\xa9!"});
    CHECK(I(b.out(w, "got")) == 6);
    CHECK(I(w.ret) == 'h' + 0xe9 + '!');
    CallResult pair = b.call("sizes_sum_utf16", {"\xf0\x9f\x98\x80"});  // one surrogate pair
    CHECK(I(b.out(pair, "got")) == 4);
    CHECK(I(pair.ret) == 0xd83d + 0xde00);
    CHECK(I(b.out(b.call("sizes_sum_utf16", {""}), "got")) == 0);

    // A non-terminated UTF-8 string: count_of is its bytes, and also its "length".
    CallResult t = b.call("sizes_sum_text", {"h\xc3\xa9llo"});
    CHECK(I(b.out(t, "got")) == 6);
    CHECK(I(t.ret) == 'h' + 0xc3 + 0xa9 + 'l' + 'l' + 'o');

    CHECK(I(b.call("sizes_echo_pair_size").ret) == static_cast<std::int64_t>(sizeof(SizesPair)));
    CHECK(I(b.call("sizes_echo_array_size").ret) == 6);  // int16[3]
  }

  TEST_CASE("a computed count sizes the other buffers it counts, before or after the data it measures") {
    Bound b("tests/fixtures/sizes.json");
    const Value in(List{Value(1), Value(-2), Value(30)});
    for (const char* fn : {"sizes_double_i32", "sizes_double_i32_rev"}) {
      CAPTURE(fn);
      CallResult r = b.call(fn, {in});
      const List& out = b.out(r, "out").as<List>();
      REQUIRE(out.size() == 3);
      CHECK(I(out[0]) == 2);
      CHECK(I(out[1]) == -4);
      CHECK(I(out[2]) == 60);
    }
    // A string measured while an earlier out buffer waits for its count.
    CHECK(b.out(b.call("sizes_copy_text", {"marshal"}), "out").as<std::string>() == "marshal");
  }

  TEST_CASE("a host cannot supply a computed parameter, on any path") {
    Bound b("tests/fixtures/sizes.json");
    CHECK(b.error_of("sizes_sum_pairs", {pairs({{1, 1}}), 1000, 16}) ==
          b.tm->file + ": sizes_sum_pairs: expects 1 argument (base), got 3");
    CHECK(b.error_of("sizes_echo_pair_size", {4}) == b.tm->file + ": sizes_echo_pair_size: expects 0 arguments, got 1");
    std::string error;
    CHECK(b.lib->bind("sizes_sum_text", error)->host_arity() == 1);

    // The typed C++ API: the C++ signature leaves computed parameters out.
    marshal::library lib(source_path("tests/fixtures/sizes.json"));
    auto twice = lib.function<void(std::span<const std::int32_t>, marshal::out<std::vector<std::int32_t>>)>(
        "sizes_double_i32");
    const std::vector<std::int32_t> in{4, 5};
    std::vector<std::int32_t> out;
    twice(in, out);
    CHECK(out == std::vector<std::int32_t>{8, 10});
    auto sum = lib.function<std::int64_t(std::span<const std::uint8_t>, marshal::out<std::uint64_t>)>("sizes_sum_u8");
    std::uint64_t got = 0;
    const std::vector<std::uint8_t> data{1, 2, 3};
    CHECK(sum(data, got) == 6);
    CHECK(got == 3);
    try {
      (void)lib.function<std::int64_t(std::span<const std::uint8_t>, std::uint8_t, marshal::out<std::uint64_t>)>(
          "sizes_sum_u8");
      FAIL("a C++ signature with the computed parameter was accepted");
    } catch (const marshal::error& e) {
      CHECK(std::string(e.what()).find("the C++ signature has 3 parameters, the typemap 2 (and 1 the engine computes, "
                                       "which the C++ signature leaves out)") != std::string::npos);
    }
  }

  TEST_CASE("object methods: a computed parameter follows `this`, and the host does not give it") {
    // tests/fixtures/objects.json with IWidget.Sum's count computed from its array.
    std::string text = read_text(source_path("tests/fixtures/objects.json"));
    const std::string plain = R"({"name": "n", "type": "int32"}]},)";
    const auto at = text.find(plain, text.find(R"("name": "Sum")"));
    REQUIRE(at != std::string::npos);
    text.replace(at, plain.size(), R"({"name": "n", "type": "int32", "value": {"count_of": "xs"}}]},)");
    Context ctx;
    LoadResult loaded = ctx.load_text(text, "objects-computed.json");
    for (const auto& e : loaded.errors) MESSAGE(e.text());
    REQUIRE(loaded.ok());
    std::string error;
    auto lib = Library::open(ctx, *loaded.typemap, error);
    INFO(error);
    REQUIRE(lib);
    Value counter, widget;
    const std::vector<Value> start{Value(4)};
    REQUIRE(lib->objects().create("Counter", start, counter, error));
    REQUIRE(lib->objects().query(counter.as<ObjectRef>(), "IWidget", widget, error));
    CallResult r;
    const std::vector<Value> xs{Value(List{1, 2, 3, 10})}, xs_and_n{Value(List{1, 2}), Value(2)};
    REQUIRE(lib->objects().call(widget.as<ObjectRef>(), "Sum", xs, r, error));
    CHECK(I(r.ret) == 4 + 16);  // as unit-objects.cpp's call with n = 4
    CHECK_FALSE(lib->objects().call(widget.as<ObjectRef>(), "Sum", xs_and_n, r, error));
    CHECK(error == "objects-computed.json: IWidget.Sum: expects 1 argument (xs), got 2");
  }

  TEST_CASE("the command line: call without computed arguments, explain and lint show them") {
    auto [status, out] = marshal_cli("call tests/fixtures/sizes.json sizes_sum_u8 '{\"base64\":\"AQID\"}'");
    CHECK(status == 0);
    CHECK(out == "{\"return\":6,\"out\":{\"got\":3}}\n");
    // Or given (the long form), and then it must be what the engine computes.
    auto [full, full_out] = marshal_cli("call tests/fixtures/sizes.json sizes_sum_u8 '{\"base64\":\"AQID\"}' 3");
    CHECK(full == 0);
    CHECK(full_out == out);
    auto [bad, msg] = marshal_cli("call tests/fixtures/sizes.json sizes_sum_u8 '{\"base64\":\"AQID\"}' 4");
    CHECK(bad == 1);
    CHECK(msg.find("is computed by the engine (bytes_of 'data' = 3); got 4") != std::string::npos);
    auto [e, explained] = marshal_cli("explain typemaps/sqlite3.json sqlite3_bind_text");
    CHECK(e == 0);
    CHECK(explained.find("computed by the engine, not given by the host: the size in bytes of 'text' as passed") !=
          std::string::npos);
    // lint suggests "value" where the host still passes a count beside its data.
    auto [l, linted] = marshal_cli("lint tests/fixtures/pinvoke.json");
    CHECK(linted.find("/functions/sum_in_bytes/params/1: lint: the host passes 'n', the length of the in string 's', "
                      "beside it: write \"value\": {\"count_of\": \"s\"}") != std::string::npos);
    auto [z, zlib] = marshal_cli("lint typemaps/zlib.json typemaps/libc.json typemaps/sqlite3.json");
    CHECK(zlib.find("count_of") == std::string::npos);
  }

  TEST_CASE("a computed value that does not fit its parameter's type is an error naming it; nothing is called") {
    Bound b("tests/fixtures/sizes.json");
    CHECK(b.error_of("sizes_sum_u8", {bytes(256, 1)}) ==
          b.tm->file + ": sizes_sum_u8: parameter 1 'n' (uint8): the computed value 256 (bytes_of 'data') "
          "does not fit uint8");
    // The measured data is still checked as usual.
    CHECK(b.error_of("sizes_sum_pairs", {Value("no")}).find("parameter 0 'base'") != std::string::npos);
    CHECK(b.error_of("sizes_sum_utf16", {Value(3)}).find("parameter 0 's' (string<utf16>): expected a string") !=
          std::string::npos);
  }

  TEST_CASE("plans with a computed parameter do not take the scalar lane, and give the same result") {
    Bound b("tests/fixtures/sizes.json");
    std::string error;
    const Plan* p = b.lib->bind("sizes_echo_pair_size", error);
    REQUIRE(p);
    CHECK_FALSE(p->laned());
    set_scalar_lanes(false);
    const std::int64_t general = I(b.call("sizes_echo_pair_size").ret);
    set_scalar_lanes(true);
    CHECK(general == I(b.call("sizes_echo_pair_size").ret));
  }

  TEST_CASE("shipped typemaps: sqlite3's nbyte is computed for text and blobs") {
    Bound s("typemaps/sqlite3.json");
    CallResult open = s.call("sqlite3_open", {":memory:"});
    REQUIRE(I(open.ret) == SQLITE_OK);
    Value db = s.out(open, "db");
    CallResult prep = s.call("sqlite3_prepare_v2", {db, "select hex(?1), length(?1), ?2, length(?2); trailing"});
    REQUIRE(I(prep.ret) == SQLITE_OK);
    Value stmt = s.out(prep, "stmt");
    const Value transient(Address{~std::uintptr_t{0}});  // SQLITE_TRANSIENT: sqlite copies the data
    CHECK(I(s.call("sqlite3_bind_blob", {stmt, 1, Bytes{{0, 1, 2, 255}}, transient}).ret) == SQLITE_OK);
    CHECK(I(s.call("sqlite3_bind_text", {stmt, 2, "h\xc3\xa9llo", transient}).ret) == SQLITE_OK);
    REQUIRE(I(s.call("sqlite3_step", {stmt}).ret) == SQLITE_ROW);
    CHECK(s.call("sqlite3_column_text", {stmt, 0}).ret.as<std::string>() == "000102FF");
    CHECK(I(s.call("sqlite3_column_int", {stmt, 1}).ret) == 4);
    CHECK(s.call("sqlite3_column_text", {stmt, 2}).ret.as<std::string>() == "h\xc3\xa9llo");
    CHECK(I(s.call("sqlite3_column_int", {stmt, 3}).ret) == 5);  // characters
    CHECK(I(s.call("sqlite3_finalize", {stmt}).ret) == SQLITE_OK);
    CHECK(s.error_of("sqlite3_bind_text", {Value(), 1, "x", 5, transient}).find("expects 4 arguments (stmt, index, text, "
                                                                                 "destructor), got 5") != std::string::npos);
  }

  TEST_CASE("the loader refuses what cannot be computed, at the JSON Pointer") {
    struct Case { std::string params; std::string expected; };
    const Case cases[] = {
        {R"({"name": "buf", "type": {"array": "uint8", "count": {"param": "len"}}},
            {"name": "len", "type": "size_t", "value": {"count_of": "bfu"}})",
         "t.json: /functions/f/params/1/value/count_of: count_of refers to parameter 'bfu' which does not exist "
         "(parameters: buf, len)"},
        {R"({"name": "size", "type": "double", "value": {"sizeof": "int32"}})",
         "t.json: /functions/f/params/0/type: a computed parameter (\"value\") has an integer type (the engine passes a "
         "size or count), not double"},
        {R"({"name": "s", "type": {"string": "utf8", "capacity": {"param": "n"}}},
            {"name": "n", "type": "int", "value": {"bytes_of": "s"}})",
         "t.json: /functions/f/params/1/value/bytes_of: a cycle: the capacity of string 's' is parameter 'n', which the "
         "engine computes from that string"},
        {R"({"name": "s1", "type": {"string": "utf8", "capacity": {"param": "m"}}},
            {"name": "n", "type": "int", "value": {"bytes_of": "s1"}},
            {"name": "s2", "type": {"string": "utf8", "capacity": {"param": "n"}}},
            {"name": "m", "type": "int", "value": {"bytes_of": "s2"}})",
         "t.json: /functions/f/params/1/value: a cycle: each of these computed parameters measures a string whose "
         "capacity is the next: n -> m -> n"},
        {R"({"name": "buf", "type": {"array": "uint8", "count": {"param": "len"}}}, {"name": "len", "type": "size_t"},
            {"name": "n", "type": "size_t", "value": {"count_of": "buf"}})",
         "t.json: /functions/f/params/2/value/count_of: array 'buf' is counted by parameter 'len'; an array the engine "
         "measures is counted by what it computes: write \"count\": {\"param\": \"n\"}"},
        {R"({"name": "buf", "type": {"array": "uint8", "count": 4}}, {"name": "n", "type": "size_t", "value": {"count_of": "buf"}})",
         "t.json: /functions/f/params/1/value/count_of: array 'buf' is counted by the constant 4; an array the engine "
         "measures is counted by what it computes: write \"count\": {\"param\": \"n\"}"},
        {R"({"name": "buf", "type": {"array": "uint8", "count": {"param": "n"}}, "dir": "out"},
            {"name": "n", "type": "size_t", "value": {"count_of": "buf"}})",
         "t.json: /functions/f/params/1/value/count_of: parameter 'buf' is out: the host gives no data to measure"},
        {R"({"name": "n", "type": {"ptr": "size_t"}, "dir": "out", "value": {"sizeof": "int32"}})",
         "t.json: /functions/f/params/0/dir: a computed parameter (\"value\") is an in parameter: the engine passes its "
         "value; it cannot be out"},
        {R"({"name": "a", "type": {"array": "int32", "count": {"param": "n"}}}, {"name": "n", "type": "size_t", "value": {"bytes_of": "a"}})",
         "t.json: /functions/f/params/1/value/bytes_of: array 'a' is counted by 'n' in elements of 4 bytes, but bytes_of "
         "is its size in bytes: use {\"count_of\": \"a\"}"},
        {R"({"name": "s", "type": {"string": "utf16", "terminator": "none", "length": {"param": "n"}}},
            {"name": "n", "type": "int", "value": {"bytes_of": "s"}})",
         "t.json: /functions/f/params/1/value/bytes_of: the length of string 's' counts code units of 2 bytes, but "
         "bytes_of is its size in bytes: use {\"count_of\": \"s\"}"},
        {R"({"name": "s", "type": {"string": "utf8", "terminator": "double_nul"}}, {"name": "n", "type": "int", "value": {"count_of": "s"}})",
         "t.json: /functions/f/params/1/value/count_of: string 's' is a double_nul list of strings, which has no one "
         "length to compute"},
        {R"({"name": "x", "type": "int"}, {"name": "n", "type": "int", "value": {"count_of": "x"}})",
         "t.json: /functions/f/params/1/value/count_of: count_of measures an array or string parameter; 'x' is int (for "
         "the size of a type use {\"sizeof\": TYPE})"},
        {R"({"name": "n", "type": "int", "value": {"count_of": "n"}})",
         "t.json: /functions/f/params/0/value/count_of: parameter 'n' cannot measure itself"},
        {R"({"name": "n", "type": "int", "value": {"sizeof": "int", "count_of": "n"}})",
         "t.json: /functions/f/params/0/value: expected exactly one of {\"sizeof\": TYPE}, {\"count_of\": PARAMETER} or "
         "{\"bytes_of\": PARAMETER}, got 2 keys"},
        {R"({"name": "n", "type": "int", "value": {"size_of": "int"}})",
         "t.json: /functions/f/params/0/value/size_of: unknown key 'size_of' (did you mean 'sizeof'?) (expected: "
         "sizeof, count_of, bytes_of)"},
        {R"({"name": "n", "type": "int", "value": {"count_of": 3}})",
         "t.json: /functions/f/params/0/value/count_of: expected the name of the parameter to measure, got an integer"},
        {R"({"name": "n", "type": "int8", "value": {"sizeof": {"array": "int64", "count": 16}}})",
         "which does not fit parameter 'n' (int8)"},
        {R"({"name": "n", "type": "int", "value": {"sizeof": "void"}})",
         "t.json: /functions/f/params/0/value/sizeof: 'void' is only allowed as a return type"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.params);
      const std::string got = load_error(with_params(c.params));
      INFO(got);
      CHECK(got.find(c.expected) != std::string::npos);
      if (c.expected.rfind("t.json", 0) == 0) CHECK(got.rfind(c.expected, 0) == 0);
    }
    CHECK(load_error(R"({"typemap": 1, "library": {"name": "x", "load": {"any": ["self"]}},
                         "callbacks": {"cb": {"returns": "void", "params": [{"name": "n", "type": "int", "value": {"sizeof": "int"}}]}}})") ==
          "t.json: /callbacks/cb/params/0/value: a callback's parameters come from native code; \"value\" (computed by the "
          "engine) applies to functions and methods");
  }

  TEST_CASE("\"library\": {\"guard\": true} turns guard mode on for the typemap's calls") {
    CHECK(load_error(R"({"typemap": 1, "library": {"name": "x", "guard": "yes", "load": {"any": ["self"]}}})") ==
          "t.json: /library/guard: expected true or false, got a string");
    {
      Bound plain("tests/fixtures/guard.json");
      if (!guard_from_environment()) CHECK_FALSE(plain.lib->guarded());
      Bound on("tests/fixtures/guard_typemap.json");
      CHECK(on.tm->library.guard);
      CHECK(on.lib->guarded());
      CallResult r = on.call("fill_exact_i32_array", {3});  // a callee that keeps its contract is unaffected
      CHECK(I(on.out(r, "out").as<List>()[2]) == 6);
    }
    // A callee that overruns faults at once, naming the function and parameter,
    // with no set_guard call: the typemap asked for it.
    const Child c = in_child([] {
      Bound b("tests/fixtures/guard_typemap.json");
      b.call("overrun_out_i32_array", {3});
    });
    INFO(c.err);
    CHECK(aborted(c));
    CHECK(c.err.find("marshal guard: function 'overrun_out_i32_array': parameter 0 'out'") != std::string::npos);
  }
}
