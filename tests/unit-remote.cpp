// marshal tests: remote marshaling, a typemap's library in a surrogate process
// (engine/remote). The fixture library is called in-process and through the
// surrogate with the same arguments, and the results (or errors) compared;
// then the surrogate's crash, hang and handle rules, and the CLI's --isolate.
#include "call_support.hpp"
#include "isolated_support.hpp"
#include "cli_run.hpp"
#include "serve_support.hpp"

#include "call/arguments.hpp"
#include "marshal/marshal.hpp"
#include "marshal.h"
#include "remote/surrogate.hpp"
#include "remote/wire.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <thread>

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;
using namespace std::chrono_literals;

namespace {

remote::IsolateOptions options(std::chrono::milliseconds deadline = 0ms) { return IsolatedBase::options(deadline, ""); }

struct Isolated : IsolatedBase {
  explicit Isolated(const std::string& typemap, std::chrono::milliseconds deadline = 0ms) { open_path(typemap, deadline); }
  Isolated(const std::string& text, const std::string& file, std::chrono::milliseconds deadline = 0ms) {
    open_text(text, file, deadline);
  }
};

Value va(const char* type, Value v) { return Value(rec({{"type", type}, {"value", std::move(v)}})); }
Value pt(int x, int y) { return Value(rec({{"x", x}, {"y", y}})); }

// libc functions that crash or hang on purpose, declared for these tests.
const char* crashing_libc = R"({"typemap": 1,
  "library": {"name": "c", "load": {"linux": ["libc.so.6"]}},
  "types": {"div_t": {"struct": [{"name": "quot", "type": "int"}, {"name": "rem", "type": "int"}]}},
  "functions": {
    "div": {"returns": "div_t",
            "params": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]},
    "strlen": {"returns": "size_t", "params": [{"name": "s", "type": "uint64"}]},
    "abort": {"returns": "void", "params": []},
    "pause": {"returns": "int", "params": []},
    "getpid": {"returns": "int", "params": []},
    "quit": {"symbol": "_exit", "returns": "void", "params": [{"name": "status", "type": "int"}]}
  }})";

// The fixture's poke_i32 (a write through whatever address it is given), for
// a crash at a known address; 0x48 is below mmap_min_addr, never mapped.
const char* poking_fixture = R"({"typemap": 1,
  "library": {"name": "fx", "load": {"linux": ["libmarshal_fixture.so", "build/tests/libmarshal_fixture.so"]}},
  "functions": {
    "poke_i32": {"returns": "void", "params": [{"name": "address", "type": "uint64"}, {"name": "v", "type": "int32"}]},
    "echo_i32": {"returns": "int32", "params": [{"name": "v", "type": "int32"}]}}})";

// "function div crashed in the surrogate (pid N) with SIGFPE (integer divide by
// zero at 0x7f...)": the words up to the address, and a nonzero address.
bool fpe_text(const std::string& e, const std::string& function, std::int64_t pid) {
  const std::string head = "function " + function + " crashed in the surrogate (pid " + std::to_string(pid) +
                           ") with SIGFPE (integer divide by zero at 0x";
  return e.rfind(head, 0) == 0 && e.size() > head.size() + 1 && e.back() == ')' &&
         e.find_first_not_of("0123456789abcdef", head.size()) == e.size() - 1 &&
         e.substr(head.size(), e.size() - 1 - head.size()).find_first_not_of('0') != std::string::npos;
}

}  // namespace

TEST_SUITE("remote") {
  TEST_CASE("the typemap's library says isolate and deadline_ms; bad values are errors at their pointer") {
    Context ctx;
    auto r = ctx.load_text(R"({"typemap": 1, "library": {"name": "c", "load": {"linux": ["libc.so.6"]},
      "isolate": "process", "deadline_ms": 250}})", "iso.json");
    REQUIRE(r.ok());
    CHECK(remote::wants_isolation(*r.typemap));
    CHECK(r.typemap->library.deadline_ms == 250);
    auto plain = ctx.load_text(R"({"typemap": 1, "library": {"name": "c", "load": {"linux": ["libc.so.6"]}, "isolate": "none"}})", "none.json");
    REQUIRE(plain.ok());
    CHECK_FALSE(remote::wants_isolation(*plain.typemap));
    auto bad = ctx.load_text(R"({"typemap": 1, "library": {"name": "c", "load": {"linux": ["libc.so.6"]}, "isolate": "thread"}})", "bad.json");
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.errors.front().text().find("/library/isolate") != std::string::npos);
    CHECK(bad.errors.front().text().find("expected one of: none, process; got 'thread'") != std::string::npos);
    auto bad_deadline = ctx.load_text(R"({"typemap": 1, "library": {"name": "c", "load": {"linux": ["libc.so.6"]}, "deadline_ms": 0}})", "bad2.json");
    REQUIRE_FALSE(bad_deadline.ok());
    CHECK(bad_deadline.errors.front().text().find("/library/deadline_ms") != std::string::npos);
  }

  TEST_CASE("every fixture call gives the same result or error in-process and through the surrogate") {
    Bound here("tests/fixtures/pinvoke.json");
    Isolated there("tests/fixtures/pinvoke.json");
    CHECK(there.lib->pid() > 0);
    CHECK(there.lib->pid() != ::getpid());
    const std::uint64_t u64max = UINT64_MAX;
    struct Case {
      const char* fn;
      std::vector<Value> args;
    };
    const std::vector<Case> cases = {
        // scalars, in range and out of it (the errors must match too)
        {"echo_i8", {-128}}, {"echo_i8", {128}}, {"echo_i8", {4.5}}, {"echo_i8", {"x"}}, {"echo_i8", {Value()}},
        {"echo_u8", {255}}, {"echo_u16", {65535}}, {"echo_i32", {INT32_MIN}}, {"echo_u32", {Value(std::uint64_t{4294967295u})}},
        {"echo_i64", {INT64_MIN}}, {"echo_u64", {u64max}}, {"echo_u64", {-1}}, {"echo_f32", {1.5}},
        {"echo_f64", {-2.25e300}}, {"echo_char", {65}}, {"echo_long", {Value(std::int64_t{-5000000000})}},
        {"echo_ulong", {Value(std::uint64_t{1} << 63)}}, {"echo_size", {12345}},
        {"add_i32", {2000000000, 2000000000}}, {"add_i32", {2}}, {"add_f64", {0.1, 0.2}},
        {"add_mixed", {-3, 1.25, 300, 0.5, Value(std::int64_t{1} << 40)}},
        {"spill12_i64", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, -12}},
        {"spill12_mixed", {1, 2.5, 3, 4.5, 5, 6.5, 7, 8.5, 9, 10.5, 11, 12.5}},
        // bools, enums, flags
        {"not_cbool", {true}}, {"not_bool32", {false}}, {"not_vbool", {true}}, {"not_cbool", {1}},
        {"next_color", {"BLUE"}}, {"next_color", {1}}, {"next_color", {"PINK"}}, {"flags_or", {List{"READ"}, 6}},
        {"flags_or", {8, 1}},
        // strings in every encoding, in, out, inout, returned
        {"len_in_utf8", {"h\xc3\xa9llo"}}, {"len_in_utf8", {std::string("a\0b", 3)}}, {"len_in_utf8", {"\xff"}},
        {"len_in_utf16", {"h\xc3\xa9llo \xf0\x9f\x98\x80"}}, {"len_in_utf32", {"\xe2\x82\xac"}},
        {"len_in_wchar", {"w\xc3\xb6"}}, {"sum_in_latin1", {"gr\xc3\xbc\xc3\x9f"}},
        {"sum_in_bytes", {Bytes{{1, 0, 2, 255}}, 4}}, {"count_in_double_nul", {Value{List{"a", "bc", "def"}}}},
        {"reverse_out_utf8", {"marshal", 32}}, {"reverse_out_utf8", {"marshal", 4}}, {"fill_out_utf16", {16}},
        {"greet_out_latin1", {}}, {"upper_inout_ascii", {"Hello, marshal"}}, {"dup_ret_utf8", {"copy me"}},
        {"static_ret_name", {}}, {"dup_ret_utf16", {"w\xc3\xb6rld"}}, {"make_ret_double_nul", {}},
        // arrays with every count source
        {"sum_in_i32_array", {List{1, -2, 3, 400}, 4}}, {"sum_in_i32_array", {List{1, -2, 3, 400}, 2}},
        {"sum_in_i32_array", {List{1}, 4}}, {"sum_in_f64_array", {List{0.5, 1.25, -3}, 3}},
        {"sum_in_u8_bytes", {Bytes{{200, 100, 7}}, 3}}, {"sum_in_u8_bytes", {List{200, 100, 7}, 3}},
        {"sum_in_point_array", {List{pt(1, 2), pt(3, 4)}, 2}}, {"count_in_strings_sentinel", {Value{List{"a", "b", "c"}}}},
        {"sum_in_i16_fixed4", {Value{List{1, 2, 3, 4}}}}, {"fill_out_i32_array", {5}}, {"fill_out_u8_bytes", {4}},
        {"fill_out_points_len", {8}}, {"fill_inout_i32_array", {List{1, 2, 3}, 3}},
        {"reverse_inout_f32_array", {List{1.0, 2.0, 3.5}, 3}}, {"range_ret_i32", {4}}, {"names_ret_sentinel", {}},
        {"alloc_out_points", {}},
        // pointers to one value, structs, unions, bitfields, nested pointers
        {"get_out_i32", {}}, {"get_out_point", {-4, 11}}, {"incr_inout_i64", {Value(std::int64_t{1} << 40)}},
        {"read_in_point", {pt(7, 9)}}, {"read_in_point", {Value()}}, {"scale_inout_point", {pt(7, 9), 3}},
        {"maybe_null_in_i32", {Value()}}, {"maybe_null_in_i32", {5}}, {"sum_in_point", {pt(3, 4)}},
        {"make_ret_point", {-1, 2}}, {"add_vec2", {Record{{"x", 1.5}, {"y", 2}}, Record{{"x", 3}, {"y", -4.25}}}},
        {"echo_s1i", {Record{{"a", 1}}}}, {"echo_s3f", {Record{{"a", 1.5}, {"b", 2.5}, {"c", 3.5}}}},
        {"echo_mix_fid", {Record{{"f", 1.5}, {"i", 2}, {"d", 3.5}}}}, {"echo_mix_bd", {Record{{"b", true}, {"d", 3.5}}}},
        {"echo_union_if", {Value(rec({{"i", 12345}}))}}, {"echo_union_if", {Value(rec({{"i", 1}, {"f", 2.0}}))}},
        {"echo_bits", {Value(rec({{"a", 5}, {"b", 300}, {"c", 77}}))}},
        {"echo_bits", {Value(rec({{"a", 8}, {"b", 0}, {"c", 0}}))}},
        {"echo_arr_in_struct", {Value(rec({{"v", List{1, 2, 3}}, {"f", 2.5}}))}},
        {"spill_points", {pt(1, 2), pt(3, 4), pt(5, 6), pt(7, 8), pt(9, 10), pt(11, 12), pt(13, 14)}},
        {"sum_in_header", {Value(rec({{"name", "abc"}, {"n", 2}, {"items", List{5, 6}}}))}},
        {"fill_out_header", {}},
        {"sum_in_flex", {Value(rec({{"n", 3}, {"tag", 1}, {"items", List{1.5, 2.5, 3.5}}}))}},
        // errno and checks, variadics, direction semantics
        {"fail_with_errno", {0}}, {"fail_with_errno", {2}},
        {"sum_var_i32", {3, va("int16", 1), va("int8", -2), va("int", 40)}}, {"sum_var_i32", {1, Value(5)}},
        {"fmt_var", {64, "%s|%d|%.3f|%c", va("string", "x"), va("int", 7), va("float", 0.5), va("char", 65)}},
        {"scribble_in_i32_array", {List{1, 2, 3}, 3}}, {"scribble_in_utf8", {"scribble"}},
        {"scribble_in_point", {pt(1, 2)}}, {"scribble_in_bytes", {Bytes{{1, 2, 3}}, 3}},
        // unknown functions are the surrogate's error, as in-process
        {"no_such_function", {}}};
    int compared = 0, records = 0;
    for (const Case& c : cases) {
      INFO(c.fn << " with " << Value(List(c.args.begin(), c.args.end())).to_json().dump());
      CallResult a, b;
      std::string ea, eb;
      const Plan* plan = here.lib->bind(c.fn, ea);
      const bool ok_here = plan && plan->call(c.args, a, ea);
      const Error rh = last_error();
      const bool ok_there = there.lib->call(c.fn, c.args, b, eb);
      const Error rt = last_error();
      CHECK(ok_here == ok_there);
      CHECK(ea == eb);
      if (!ok_here && !ok_there && rh.message == ea) {  // the structured record crosses too
        CHECK(rt.message == eb);
        CHECK(rt.id == rh.id);
        CHECK(rt.function == rh.function);
        CHECK(rt.param_index == rh.param_index);
        CHECK(rt.param_name == rh.param_name);
        CHECK(rt.got == rh.got);
        CHECK(rt.expected == rh.expected);
        CHECK(rt.native_kind == rh.native_kind);
        CHECK(rt.native_code == rh.native_code);
        ++records;
      }
      if (ok_here && ok_there) {
        CHECK(a.ret.to_json() == b.ret.to_json());
        CHECK(a.ret == b.ret);
        CHECK(a.out == b.out);
        CHECK(a.error_number == b.error_number);
        ++compared;
      }
    }
    CHECK(compared > 80);
    CHECK(records > 5);
  }

  TEST_CASE("computed parameters: left out, or given and checked, in-process and through the surrogate") {
    Bound here("typemaps/zlib.json");
    Isolated there("typemaps/zlib.json");
    const Value hello = Bytes{{'h', 'e', 'l', 'l', 'o'}};
    // In-process: the engine's rule (call/arguments.hpp) before Plan::call.
    auto call_in = [](Bound& b, const char* fn, std::vector<Value> args, CallResult& r, std::string& error) {
      const Plan* plan = b.lib->bind(fn, error);
      REQUIRE(plan);
      ValuePointers given(args);
      std::span<const Value* const> view = given.view;
      std::vector<const Value*> storage;
      return host_arguments(b.ctx.types(), b.tm->file, plan->function(), view, storage, error) &&
             plan->call(view, r, error);
    };
    auto here_call = [&](std::vector<Value> args, CallResult& r, std::string& error) {
      return call_in(here, "crc32", std::move(args), r, error);
    };
    for (const std::vector<Value>& args : {std::vector<Value>{0, hello}, std::vector<Value>{0, hello, 5},
                                           std::vector<Value>{0, hello, Value(std::uint64_t{5})}}) {
      CallResult a, b;
      std::string ea, eb;
      CHECK(here_call(args, a, ea));
      CHECK(there.lib->call("crc32", args, b, eb));
      CHECK(ea == "");
      CHECK(eb == "");
      CHECK(a.ret == Value(std::uint64_t{907060870}));
      CHECK(b.ret == a.ret);
    }
    // A computed value that differs: an error naming the parameter, what was
    // given and what the engine computes; nothing is called.
    for (const Value& wrong : {Value(4), Value(-5), Value("5")}) {
      CallResult a, b;
      std::string ea, eb;
      CHECK_FALSE(here_call({0, hello, wrong}, a, ea));
      CHECK(last_error().id == ErrorId::invalid_argument);
      CHECK(last_error().param_index == 2);
      CHECK(last_error().param_name == "len");
      CHECK(last_error().expected == "5");
      CHECK_FALSE(there.lib->call("crc32", std::vector<Value>{0, hello, wrong}, b, eb));
      CHECK(ea == eb);
      CHECK(ea.find("typemaps/zlib.json: crc32: parameter 2 'len' (uint): is computed by the engine (count_of 'buf' = "
                    "5); got ") != std::string::npos);
    }
    CHECK(here.error_of("crc32", {0, hello, 4}).find("expects 2 arguments (crc, buf), got 3") != std::string::npos);
    // Strings are measured in their encoding's code units; sizeof is constant.
    Bound sizes("tests/fixtures/sizes.json");
    const Function& text = sizes.tm->functions.at("sizes_sum_text");
    CHECK(full_arity(text) == 2);
    CallResult t;
    std::string et;
    CHECK(call_in(sizes, "sizes_sum_text", {"h\xc3\xa9", 3}, t, et));  // 3 UTF-8 bytes
    CHECK(et == "");
    CHECK_FALSE(call_in(sizes, "sizes_sum_text", {"h\xc3\xa9", 2}, t, et));
    CHECK(et.find("parameter 1 'n' (int64): is computed by the engine (count_of 's' = 3); got 2") != std::string::npos);
    CHECK(full_arity(here.tm->functions.at("crc32")) == 3);
    CHECK(full_arity(here.tm->functions.at("compressBound")) == 0);  // nothing computed: no long form
  }

  TEST_CASE("a raw pointer is refused at the boundary, naming the parameter") {
    Isolated there("tests/fixtures/pinvoke.json");
    std::string e = there.error_of("maybe_null_in_i32", {Value(Address{0x1234})});
    CHECK(e == "maybe_null_in_i32: parameter 0 'p': a raw pointer (0x1234) cannot cross the process boundary: an "
               "address means nothing in the other process (pass the data itself, or a handle)");
    // Nested in a record or a list: the path says where.
    e = there.error_of("sum_in_point_array", {List{pt(1, 2), Value(rec({{"x", Value(Address{8})}, {"y", 1}}))}, 2});
    CHECK(e.find("parameter 0 'v'[1].x: a raw pointer (0x8)") != std::string::npos);
    CHECK(there.call("add_i32", {1, 2}).ret == Value(3));  // the connection is fine afterwards
  }

  TEST_CASE("handles live in the surrogate: released when the host drops them, refused once released") {
    Isolated there("tests/fixtures/pinvoke.json");
    const std::int64_t before = I(there.call("res_live").ret);
    {
      Value h = there.call("res_open", {41}).ret;
      REQUIRE(h.is<std::shared_ptr<HandleBox>>());
      CHECK(h.as<std::shared_ptr<HandleBox>>()->type_name == "Res");
      CHECK(I(there.call("res_live").ret) == before + 1);
      CHECK(I(there.call("res_value", {h}).ret) == 41);
      CHECK(I(there.call("res_value", {h}).ret) == 41);  // the same capability again
      CHECK(there.call("res_open", {-1}).ret.is_null());
    }
    // The host dropped its last reference: the surrogate's box went, and the
    // typemap's release (res_close) ran there exactly once.
    CHECK(I(there.call("res_live").ret) == before);
    Value h = there.call("res_open", {7}).ret;
    CHECK(I(there.call("res_close", {h}).ret) == 0);
    CHECK(I(there.call("res_live").ret) == before);
    CHECK(there.error_of("res_value", {h}).find("the Res handle was already released") != std::string::npos);
    // A handle made in this process means nothing to the surrogate.
    Bound here("tests/fixtures/pinvoke.json");
    Value local = here.call("res_open", {3}).ret;
    CHECK(there.error_of("res_value", {local}).find("parameter 0 'r': handle Res") != std::string::npos);
    CHECK(there.error_of("res_value", {local}).find("did not come from this library's surrogate") != std::string::npos);
  }

  TEST_CASE("a native crash is an error naming the function and the signal; the next call gets a fresh surrogate") {
    Isolated there(crashing_libc, "crashing-libc.json");
    const int first = there.lib->pid();
    CHECK(there.call("div", {17, 5}).ret == Value(rec({{"quot", 3}, {"rem", 2}})));
    std::string e = there.error_of("div", {1, 0});
    INFO(e);
    CHECK(fpe_text(e, "div", first));
    CHECK(there.lib->pid() == 0);
    // The host is alive and the next call starts a new surrogate.
    CHECK(there.call("div", {17, 5}).ret == Value(rec({{"quot", 3}, {"rem", 2}})));
    const int second = there.lib->pid();
    CHECK(second > 0);
    CHECK(second != first);
    CHECK(there.lib->generation() == 2);
    CHECK(I(there.call("getpid").ret) == second);
    // A segmentation fault names the faulting address.
    e = there.error_of("strlen", {8});
    CHECK(e == "function strlen crashed in the surrogate (pid " + std::to_string(second) + ") with SIGSEGV (address 0x8)");
    // abort() in the library.
    const std::int64_t third = I(there.call("getpid").ret);
    CHECK(third == there.lib->pid());
    e = there.error_of("abort");
    CHECK(e == "function abort crashed in the surrogate (pid " + std::to_string(third) + ") with SIGABRT");
    CHECK(there.lib->generation() == 3);
    CHECK(there.call("div", {-7, 2}).ret == Value(rec({{"quot", -3}, {"rem", -1}})));
  }

  TEST_CASE("a crash, a deadline and an exit in the surrogate are structured errors (base/error.hpp)") {
    // SIGSEGV: id, function, signal number, the faulting address in the message.
    Isolated there(poking_fixture, "poke.json");
    const int pid = there.lib->pid();
    std::string e = there.error_of("poke_i32", {0x48, 7});
    CHECK(e == "function poke_i32 crashed in the surrogate (pid " + std::to_string(pid) + ") with SIGSEGV (address 0x48)");
    Error r = last_error();
    CHECK(r.message == e);
    CHECK(r.id == ErrorId::native_crash);
    CHECK(std::string(r.id_name()) == "native_crash");
    CHECK(r.function == "poke_i32");
    CHECK(r.file == "poke.json");
    CHECK(r.native_kind == NativeCodeKind::signal);
    CHECK(r.native_code == SIGSEGV);
    // The next call works, in a fresh surrogate.
    CHECK(I(there.call("echo_i32", {41}).ret) == 41);
    CHECK(there.lib->pid() != pid);
    CHECK(there.lib->generation() == 2);
    // SIGFPE: the instruction's address.
    Isolated libc(crashing_libc, "fpe.json");
    const int p2 = libc.lib->pid();
    e = libc.error_of("div", {1, 0});
    INFO(e);
    CHECK(fpe_text(e, "div", p2));
    r = last_error();
    CHECK(r.message == e);
    CHECK(r.id == ErrorId::native_crash);
    CHECK(r.function == "div");
    CHECK(r.native_code == SIGFPE);
    // abort(): the signal, and no address (it was sent, not a fault).
    const std::int64_t p4 = I(libc.call("getpid").ret);
    e = libc.error_of("abort");
    CHECK(e == "function abort crashed in the surrogate (pid " + std::to_string(p4) + ") with SIGABRT");
    CHECK(last_error().id == ErrorId::native_crash);
    CHECK(last_error().native_code == SIGABRT);
    // A deadline: its own id; the surrogate was killed with SIGKILL.
    e = libc.error_of("pause", {}, 200ms);
    CHECK(e.find("function pause timed out after 200 ms in the surrogate") == 0);
    r = last_error();
    CHECK(r.message == e);
    CHECK(r.id == ErrorId::deadline_exceeded);
    CHECK(r.function == "pause");
    CHECK(r.native_kind == NativeCodeKind::signal);
    CHECK(r.native_code == SIGKILL);
    // A surrogate that exits during a call: disconnected, no signal.
    const std::int64_t p3 = I(libc.call("getpid").ret);
    e = libc.error_of("quit", {3});
    CHECK(e == "the surrogate (pid " + std::to_string(p3) + ") exited with status 3 during quit");
    CHECK(last_error().id == ErrorId::disconnected);
    CHECK(last_error().function == "quit");
    CHECK(last_error().native_kind == NativeCodeKind::none);
    CHECK(libc.call("div", {9, 2}).ret == Value(rec({{"quot", 4}, {"rem", 1}})));
    // A failure on the surrogate's side crosses with its record: as in-process.
    e = libc.error_of("div", {Value(std::uint64_t{1} << 40), 1});
    r = last_error();
    CHECK(r.message == e);
    CHECK(r.id == ErrorId::conversion);
    CHECK(r.function == "div");
    CHECK(r.param_index == 0);
    CHECK(r.param_name == "a");
  }

  TEST_CASE("large inout buffers cross exactly, call after call, whatever the order of sizes") {
    // Each side reads a message into a buffer kept for the next (wire.hpp):
    // growing sizes, one past the kept buffers' 16 MiB cap, then small ones
    // again; two calls in flight keep two messages alive at once.
    Isolated there("tests/fixtures/hostile.json");
    for (std::size_t n : {std::size_t{1000}, std::size_t{1} << 20, std::size_t{3} << 20, std::size_t{1} << 20,
                          std::size_t{17} << 20, std::size_t{5}, std::size_t{2} << 20, std::size_t{64}}) {
      CAPTURE(n);
      std::vector<std::uint8_t> data(n);
      std::uint64_t sum = 0;
      for (std::size_t i = 0; i < n; ++i) {
        data[i] = static_cast<std::uint8_t>(i * 7 + n);
        sum += data[i];
      }
      CallResult r = there.call("touch_inout_u8", {Value(Bytes{data}), Value(static_cast<std::uint64_t>(n))});
      CHECK(static_cast<std::uint64_t>(I(r.ret)) == sum);
      REQUIRE(r.out.size() == 1);
      const auto& back = r.out[0].second.as<Bytes>().data;
      REQUIRE(back.size() == n);
      std::size_t wrong = 0;
      for (std::size_t i = 0; i < n; ++i) wrong += back[i] != (data[i] ^ 0x5a);
      CHECK(wrong == 0);
    }
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < 8; ++i) {
          const std::size_t n = (std::size_t{1} << 20) + static_cast<std::size_t>(t * 4096 + i);
          std::vector<std::uint8_t> data(n, static_cast<std::uint8_t>(t * 16 + i));
          CallResult r;
          std::string error;
          const std::vector<Value> args{Value(Bytes{data}), Value(static_cast<std::uint64_t>(n))};
          if (!there.lib->call("touch_inout_u8", args, r, error) ||
              static_cast<std::uint64_t>(I(r.ret)) != static_cast<std::uint64_t>(n) * data[0] ||
              r.out.at(0).second.as<Bytes>().data != std::vector<std::uint8_t>(n, data[0] ^ 0x5a))
            ++bad;
        }
      });
    for (auto& th : threads) th.join();
    CHECK(bad == 0);
  }

  TEST_CASE("the direct channel: plain-data calls skip RPC with the same results, crashes and deadlines") {
    // Calls of plain data go over the surrogate's direct channel (one message
    // each way, written and read by the calling thread); the rest, and calls
    // that a release may not overtake, go through RPC. Every answer is the
    // same either way (the fixture comparisons above run both ways too).
    Isolated there(crashing_libc, "direct.json");
    auto d = there.lib->direct_calls();
    CHECK(there.call("div", {17, 5}).ret == Value(rec({{"quot", 3}, {"rem", 2}})));
    CHECK(there.lib->direct_calls() == ++d);
    // A crash during a direct call: the same words as through RPC, the next
    // call starts a fresh surrogate, and takes the new one's direct channel.
    const int first = there.lib->pid();
    std::string e = there.error_of("div", {1, 0});
    CHECK(there.lib->direct_calls() == ++d);
    CHECK(fpe_text(e, "div", first));
    CHECK(there.call("div", {9, 2}).ret == Value(rec({{"quot", 4}, {"rem", 1}})));  // RPC starts the new one
    CHECK(there.call("div", {9, 2}).ret == Value(rec({{"quot", 4}, {"rem", 1}})));
    CHECK(there.lib->direct_calls() == ++d);
    const int second = there.lib->pid();
    CHECK(second != first);
    e = there.error_of("strlen", {8});
    CHECK(e == "function strlen crashed in the surrogate (pid " + std::to_string(second) + ") with SIGSEGV (address 0x8)");
    CHECK(there.lib->direct_calls() == ++d);
    // A deadline during a direct call kills the surrogate, in the same words.
    CHECK(I(there.call("getpid").ret) > 0);
    const int third = there.lib->pid();
    d = there.lib->direct_calls();
    e = there.error_of("pause", {}, 200ms);
    CHECK(there.lib->direct_calls() == d + 1);
    CHECK(e == "function pause timed out after 200 ms in the surrogate (pid " + std::to_string(third) +
                   "); the surrogate was killed");
    CHECK(::kill(third, 0) != 0);
    // Killed from outside between calls: replaced before the next call is sent.
    const std::int64_t fourth = I(there.call("getpid").ret);
    CHECK(fourth == there.lib->pid());
    ::kill(static_cast<pid_t>(fourth), SIGKILL);
    for (int i = 0; i < 200 && ::kill(static_cast<pid_t>(fourth), 0) == 0; ++i) std::this_thread::sleep_for(5ms);
    CHECK(I(there.call("getpid").ret) != fourth);

    // Handles are capabilities: functions that take or return one take RPC;
    // after a handle's release (an RPC message), the next call takes RPC too,
    // so it cannot overtake the release; then the direct channel again.
    Isolated fx("tests/fixtures/pinvoke.json");
    const std::int64_t live = I(fx.call("res_live").ret);
    d = fx.lib->direct_calls();
    for (int round = 0; round < 3; ++round) {
      {
        Value h = fx.call("res_open", {41 + round}).ret;
        CHECK(fx.lib->direct_calls() == d);
        CHECK(I(fx.call("res_live").ret) == live + 1);
        CHECK(fx.lib->direct_calls() == ++d);
      }
      CHECK(I(fx.call("res_live").ret) == live);  // after the release: RPC
      CHECK(fx.lib->direct_calls() == d);
      CHECK(I(fx.call("res_live").ret) == live);
      CHECK(fx.lib->direct_calls() == ++d);
    }
    // Errors of plain-data calls come back as through RPC (the engine's record).
    e = fx.error_of("add_i32", {Value(std::int64_t{1} << 40), 1});
    CHECK(fx.lib->direct_calls() == ++d);
    CHECK(e.find("parameter 0 'a'") != std::string::npos);
    // Strings, out parameters and records cross the direct channel exactly.
    CHECK(fx.call("add_i32", {40, 2}).ret == Value(42));
    CHECK(fx.lib->direct_calls() == ++d);
  }

  TEST_CASE("the wire encoding round-trips every value kind, NULs in texts and field names included") {
    // Found by tests/fuzz/fuzz-remote-decoder: a record field name crossed
    // through c_str() and lost everything after an embedded NUL.
    const std::string nul("a\0b", 3);
    const Value v(List{Value(), true, -5, Value(std::uint64_t{1} << 63), 2.5, nul, Value(Bytes{{0, 255, 7}}),
                       Value(Record{{nul, Value(1)}, {"y", Value(List{Value(nul)})}})});
    capnp::MallocMessageBuilder m;
    auto root = m.initRoot<remote::wire::Value>();
    std::string error;
    REQUIRE(remote::to_wire(v, root, "v", nullptr, error));
    Value back;
    REQUIRE(remote::to_host(root.asReader(), back, "v", nullptr, error));
    CHECK(back == v);
    CHECK(back.as<List>()[7].as<Record>()[0].first.size() == 3);
  }

  TEST_CASE("a surrogate killed between calls is replaced before the next call is sent") {
    Isolated there(crashing_libc, "killed.json");
    const int pid = there.lib->pid();
    REQUIRE(::kill(pid, SIGKILL) == 0);
    std::this_thread::sleep_for(200ms);  // it has ended (the host reaps it, not the test)
    const std::int64_t now = I(there.call("getpid").ret);
    CHECK(now != pid);
    CHECK(now == there.lib->pid());
    CHECK(there.lib->generation() == 2);
  }

  TEST_CASE("handle identity crosses the boundary: one host box per surrogate handle, and back home as itself") {
    // labs() as an identity function on a handle-sized value: a handle made from
    // a number, and one passed back and returned.
    const std::string text = R"({"typemap": 1,
      "library": {"name": "c", "load": {"linux": ["libc.so.6"]}},
      "types": {"H": {"handle": {"invalid": [0]}}},
      "functions": {
        "make": {"symbol": "labs", "returns": "H", "params": [{"name": "v", "type": "int64"}]},
        "same": {"symbol": "labs", "returns": "H", "params": [{"name": "h", "type": "H"}]},
        "bits": {"symbol": "labs", "returns": "int64", "params": [{"name": "h", "type": "H"}]}}})";
    Isolated there(text, "identity.json");
    Value a = there.call("make", {4096}).ret;
    Value b = there.call("make", {4096}).ret;
    Value c = there.call("make", {8192}).ret;
    REQUIRE(a.is<std::shared_ptr<HandleBox>>());
    const auto& box = a.as<std::shared_ptr<HandleBox>>();
    CHECK(box == b.as<std::shared_ptr<HandleBox>>());  // the same surrogate handle: the same host box
    CHECK(box != c.as<std::shared_ptr<HandleBox>>());
    CHECK(box->value == 4096);
    CHECK(there.call("same", {a}).ret.as<std::shared_ptr<HandleBox>>() == box);  // sent home and back: itself
    CHECK(I(there.call("bits", {b}).ret) == 4096);
    // In-process the engine keeps the same identity: the results agree.
    Context ctx;
    auto r = ctx.load_text(text, "identity-here.json");
    REQUIRE(r.ok());
    std::string error;
    auto lib = Library::open(ctx, *r.typemap, error);
    REQUIRE(lib);
    CallResult x, y;
    std::vector<Value> args{4096};
    REQUIRE(lib->bind("make", error)->call(args, x, error));
    REQUIRE(lib->bind("make", error)->call(args, y, error));
    CHECK(x.ret.as<std::shared_ptr<HandleBox>>() == y.ret.as<std::shared_ptr<HandleBox>>());
    CHECK(x.ret.to_json() == a.to_json());
  }

  TEST_CASE("handles from a dead surrogate are refused with a message, never a hang") {
    Isolated there(std::string(R"({"typemap": 1,
      "library": {"name": "fx", "load": {"linux": ["libmarshal_fixture.so", "build/tests/libmarshal_fixture.so"]}},
      "types": {"Res": {"handle": {"invalid": [0], "release": "res_close"}}},
      "functions": {
        "res_open": {"returns": "Res", "params": [{"name": "value", "type": "int32"}]},
        "res_value": {"returns": "int32", "params": [{"name": "r", "type": "Res"}]},
        "res_close": {"returns": "int32", "params": [{"name": "r", "type": "Res"}]},
        "echo_i32": {"returns": "int32", "params": [{"name": "v", "type": "int32"}]},
        "crash": {"symbol": "res_value", "returns": "int32", "params": [{"name": "r", "type": "uint64"}]}}})"),
                   "handles.json");
    Value h = there.call("res_open", {5}).ret;
    CHECK(I(there.call("res_value", {h}).ret) == 5);
    const int pid = there.lib->pid();
    std::string e = there.error_of("crash", {16});
    CHECK(e == "function crash crashed in the surrogate (pid " + std::to_string(pid) + ") with SIGSEGV (address 0x10)");
    e = there.error_of("res_value", {h});
    CHECK(e == "res_value: parameter 0 'r': handle Res came from a surrogate that has ended (function crash crashed in "
               "the surrogate (pid " + std::to_string(pid) + ") with SIGSEGV (address 0x10)); the handles of a dead "
               "surrogate are gone with it");
    Value fresh = there.call("res_open", {6}).ret;  // the new surrogate's handles work
    CHECK(I(there.call("res_value", {fresh}).ret) == 6);
  }

  TEST_CASE("a call past its deadline kills the surrogate and is an error; the next call works") {
    Isolated there(crashing_libc, "hang.json");
    const int pid = there.lib->pid();
    const auto t0 = std::chrono::steady_clock::now();
    std::string e = there.error_of("pause", {}, 300ms);
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(e == "function pause timed out after 300 ms in the surrogate (pid " + std::to_string(pid) +
                   "); the surrogate was killed");
    CHECK(took >= 300ms);
    CHECK(took < 10s);
    CHECK(::kill(pid, 0) != 0);  // gone (and reaped)
    const std::int64_t next = I(there.call("getpid").ret);
    CHECK(next == there.lib->pid());
    CHECK(next != pid);
    // The library's deadline (the typemap's deadline_ms or the option) applies without a per-call one.
    Isolated limited(crashing_libc, "hang2.json", 200ms);
    e = limited.error_of("pause");
    CHECK(e.find("function pause timed out after 200 ms in the surrogate") != std::string::npos);
    std::string text = crashing_libc;
    text.replace(text.find("\"load\""), 0, "\"deadline_ms\": 150, ");
    Isolated from_typemap(text, "hang3.json");
    e = from_typemap.error_of("pause");
    CHECK(e.find("function pause timed out after 150 ms in the surrogate") != std::string::npos);
    CHECK(from_typemap.call("div", {9, 2}).ret == Value(rec({{"quot", 4}, {"rem", 1}})));
  }

  TEST_CASE("a surrogate that cannot start or open the library is an error at open") {
    Context ctx;
    std::string error;
    auto o = options();
    o.surrogate = "/nonexistent/marshal-surrogate";
    CHECK_FALSE(remote::IsolatedLibrary::open_file(ctx, source_path("typemaps/libm.json"), o, error));
    CHECK(error.find("cannot start the surrogate /nonexistent/marshal-surrogate") != std::string::npos);
    Context ctx2;
    CHECK_FALSE(remote::IsolatedLibrary::open_text(ctx2, R"({"typemap": 1, "library": {"name": "nope",
      "load": {"linux": ["libmarshal-no-such-library.so"]}}})", "nope.json", options(), error));
    CHECK(error.find("nope.json") != std::string::npos);
    CHECK(error.find("libmarshal-no-such-library.so") != std::string::npos);
  }

  TEST_CASE("4 threads x 500 calls through one surrogate give exact results") {
    Isolated there("tests/fixtures/pinvoke.json");
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < 500; ++i) {
          CallResult r;
          std::string error;
          std::vector<Value> args{t * 100000, i};
          if (!there.lib->call("add_i32", args, r, error) || !(r.ret == Value(t * 100000 + i))) ++wrong;
        }
      });
    for (auto& th : threads) th.join();
    CHECK(wrong == 0);
  }

  TEST_CASE("marshal call --isolate: the issue's acceptance commands") {
    Run r = run("call --isolate typemaps/libc.json div 1 0");
    CHECK(r.status == 1);
    CHECK(r.out.empty());
    CHECK(r.err.find("function div crashed in the surrogate (pid ") == 0);
    CHECK(r.err.find(") with SIGFPE (integer divide by zero at 0x") != std::string::npos);
    CHECK(r.err.find(")\n") == r.err.size() - 2);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    // zlib's crc32 computes len from buf (TYPEMAP.md "value"): it is left
    // out, or given and equal to what the engine computes, in-process and
    // isolated alike.
    for (const char* how : {"", "--isolate "}) {
      CAPTURE(how);
      r = run(std::string("call ") + how + "typemaps/zlib.json crc32 0 '{\"base64\":\"aGVsbG8=\"}'");
      CHECK(r.status == 0);
      CHECK(r.out == "{\"return\":907060870,\"out\":{}}\n");
      r = run(std::string("call ") + how + "typemaps/zlib.json crc32 0 '{\"base64\":\"aGVsbG8=\"}' 5");
      CHECK(r.err == "");
      CHECK(r.status == 0);
      CHECK(r.out == "{\"return\":907060870,\"out\":{}}\n");
    }
    Run six_here = run("call typemaps/zlib.json crc32 0 '{\"base64\":\"aGVsbG8=\"}' 6");
    Run six_there = run("call --isolate typemaps/zlib.json crc32 0 '{\"base64\":\"aGVsbG8=\"}' 6");
    CHECK(six_here.err == six_there.err);
    CHECK(six_there.status == 1);
    CHECK(six_there.out.empty());
    CHECK(six_there.err == "typemaps/zlib.json: crc32: parameter 2 'len' (uint): is computed by the engine (count_of "
                           "'buf' = 5); got 6 (leave it out, or give 5)\n");
    r = run("call --isolate typemaps/libc.json div 17 5");
    CHECK(r.out == "{\"return\":{\"quot\":3,\"rem\":2},\"out\":{}}\n");
    r = run("call --isolate --deadline 0 typemaps/libc.json div 17 5");
    CHECK(r.status == 2);
    CHECK(r.err.find("--deadline expects milliseconds") != std::string::npos);
    r = run("call --deadline 100 typemaps/libc.json div 17 5");
    CHECK(r.status == 2);
    CHECK(r.err.find("--deadline needs --isolate") != std::string::npos);
  }
}

// ---- marshal serve / --connect (loopback): Server is in serve_support.hpp ----

TEST_SUITE("remote") {
  TEST_CASE("marshal serve on loopback: --connect calls give the in-process results") {
    Server server({"typemaps/zlib.json", "tests/fixtures/pinvoke.json"});
    Run r = run("call --connect " + server.address() + " typemaps/zlib.json crc32 0 '{\"base64\":\"aGVsbG8=\"}'");
    CHECK(r.err == "");
    CHECK(r.out == "{\"return\":907060870,\"out\":{}}\n");
    // The engine API: the fixture through the server, compared with in-process.
    Bound here("tests/fixtures/pinvoke.json");
    Context ctx;
    std::string error;
    auto o = options();
    o.connect = server.address();
    auto there = remote::IsolatedLibrary::open_file(ctx, source_path("tests/fixtures/pinvoke.json"), o, error);
    INFO(error);
    REQUIRE(there);
    CHECK(there->pid() == 0);  // no surrogate process of ours
    for (const char* fn : {"reverse_out_utf8", "fill_out_i32_array"}) {
      std::vector<Value> args = std::string(fn) == "reverse_out_utf8" ? std::vector<Value>{"marshal", 32}
                                                                       : std::vector<Value>{5};
      CallResult a, b;
      std::string ea, eb;
      REQUIRE(here.lib->bind(fn, ea)->call(args, a, ea));
      REQUIRE(there->call(fn, args, b, eb));
      CHECK(a.ret == b.ret);
      CHECK(a.out == b.out);
    }
    // A client's handles are released when it goes away.
    CallResult live;
    REQUIRE(there->call("res_live", {}, live, error));
    {
      Context ctx2;
      auto other = remote::IsolatedLibrary::open_file(ctx2, source_path("tests/fixtures/pinvoke.json"), o, error);
      REQUIRE(other);
      CallResult h1, h2, n;
      REQUIRE(other->call("res_open", std::vector<Value>{9}, h1, error));
      REQUIRE(other->call("res_open", std::vector<Value>{10}, h2, error));
      REQUIRE(there->call("res_live", {}, n, error));
      CHECK(I(n.ret) == I(live.ret) + 2);  // two clients on one server share the library
    }  // `other` disconnects still holding its handles
    CallResult after;
    for (int i = 0; i < 100; ++i) {  // the server sees the disconnect shortly
      REQUIRE(there->call("res_live", {}, after, error));
      if (I(after.ret) == I(live.ret)) break;
      std::this_thread::sleep_for(10ms);
    }
    CHECK(I(after.ret) == I(live.ret));
  }

  TEST_CASE("marshal serve refuses a non-loopback address without TLS, and typemaps it was not given") {
    Run r = run("serve typemaps/zlib.json --listen 0.0.0.0:7777");
    CHECK(r.status == 1);
    CHECK(r.err.find("refusing to listen on 0.0.0.0:7777: without mutual TLS (--tls-cert, --tls-key, "
                     "--tls-client-ca) only a loopback address") != std::string::npos);
    CHECK(remote::is_loopback("127.0.0.1:1"));
    CHECK(remote::is_loopback("127.200.3.4:65535"));
    CHECK(remote::is_loopback("[::1]:80"));
    CHECK(remote::is_loopback("localhost:80"));
    CHECK_FALSE(remote::is_loopback("128.0.0.1:80"));
    CHECK_FALSE(remote::is_loopback("127.0.0.1"));
    CHECK_FALSE(remote::is_loopback("127.0.0.256:80"));
    CHECK_FALSE(remote::is_loopback("127.0.0.1.5:80"));
    CHECK_FALSE(remote::is_loopback("example.com:80"));
    r = run("call --connect 192.0.2.1:80 typemaps/zlib.json crc32 0 null");
    CHECK(r.status == 1);
    CHECK(r.err.find("refusing to connect to 192.0.2.1:80: without mutual TLS") != std::string::npos);
    CHECK(r.err.find("--tls-cert, --tls-key, --tls-ca") != std::string::npos);
    Server server({"typemaps/zlib.json"});
    r = run("call --connect " + server.address() + " typemaps/libc.json div 17 5");
    CHECK(r.status == 1);
    CHECK(r.err.find("typemap typemaps/libc.json is not served here") != std::string::npos);
    CHECK(r.err.find("(served: typemaps/zlib.json)") != std::string::npos);
  }
}

// ---- marshal serve / --connect with mutual TLS ----

#include "remote/tls.hpp"

#include <arpa/inet.h>
#include <filesystem>
#include <netinet/in.h>
#include <sys/socket.h>

namespace {

// A throwaway PKI made with the openssl command: a CA, a server certificate
// for localhost and 127.0.0.1, a client certificate of that CA, and a second
// CA with a client certificate of its own (a stranger to the server).
struct Pki {
  std::string dir;
  bool ok = false;
  Pki() {
    if (std::system("openssl version >/dev/null 2>&1") != 0) return;
    dir = (std::filesystem::temp_directory_path() / ("marshal-tls-" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(dir);
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    auto sh = [&](const std::string& cmd) {
      const int st = std::system(("cd " + dir + " && (" + cmd + ") >/dev/null 2>&1").c_str());
      INFO(cmd);
      REQUIRE(st == 0);
    };
    for (const char* ca : {"ca", "otherca"})
      sh(std::string("openssl req -x509 ") + key + " -keyout " + ca + ".key -out " + ca + ".crt -days 2 -subj /CN=" +
         ca + " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign");
    auto leaf = [&](const std::string& name, const std::string& ca, const std::string& ext) {
      sh("openssl req " + key + " -keyout " + name + ".key -out " + name + ".csr -subj /CN=" + name);
      sh("printf '" + ext + "\\n' > " + name + ".ext");
      sh("openssl x509 -req -in " + name + ".csr -CA " + ca + ".crt -CAkey " + ca + ".key -CAcreateserial -out " +
         name + ".crt -days 2 -extfile " + name + ".ext");
    };
    leaf("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth");
    leaf("client", "ca", "extendedKeyUsage=clientAuth");
    leaf("stranger", "otherca", "extendedKeyUsage=clientAuth");
    ok = true;
  }
  ~Pki() {
    if (!dir.empty()) std::filesystem::remove_all(dir);
  }
  std::string operator()(const std::string& file) const { return dir + "/" + file; }
  // marshal serve's TLS options.
  std::vector<std::string> serve_options() const {
    return {"--tls-cert", (*this)("server.crt"), "--tls-key", (*this)("server.key"), "--tls-client-ca", (*this)("ca.crt")};
  }
  // marshal call's, for a client with the certificate NAME.crt trusting CA.crt.
  std::string call_options(const std::string& name = "client", const std::string& ca = "ca") const {
    return " --tls-cert " + (*this)(name + ".crt") + " --tls-key " + (*this)(name + ".key") + " --tls-ca " +
           (*this)(ca + ".crt");
  }
};

// A shell command's stdout and exit status.
Run run_shell(const std::string& command) {
  Run r;
  FILE* p = ::popen(command.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

const std::string crc32_hello = " typemaps/zlib.json crc32 0 '{\"base64\":\"aGVsbG8=\"}' 5";
const std::string crc32_result = "{\"return\":907060870,\"out\":{}}\n";

}  // namespace

TEST_SUITE("remote") {
  TEST_CASE("marshal serve with mutual TLS: any address, clients with a certificate of its CA only") {
    Pki pki;
    if (!pki.ok) {
      MESSAGE("skipped: no openssl command to make the test certificates");
      return;
    }
    const std::string server_err = temp_path("tls-server-stderr");
    // 0.0.0.0 is allowed with TLS; the clients come through 127.0.0.1, and
    // check the server's certificate as localhost (an IP address is compared
    // as a DNS name).
    Server server({"typemaps/zlib.json"}, pki.serve_options(), "0.0.0.0:0", server_err);
    const std::string at = " --connect 127.0.0.1:" + std::to_string(server.port);
    const std::string good = at + pki.call_options() + " --tls-name localhost";

    Run r = run("call" + good + crc32_hello);
    CHECK(r.err == "");
    CHECK(r.status == 0);
    CHECK(r.out == crc32_result);

    // A client that connects and says nothing holds up no other: each
    // handshake is a task of its own.
    {
      const int idle = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<std::uint16_t>(server.port));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      REQUIRE(::connect(idle, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
      r = run("call" + good + crc32_hello);
      CHECK(r.err == "");
      CHECK(r.out == crc32_result);
      ::close(idle);
    }
    // TLS 1.1 is refused (1.2 or later only).
    r = run_shell("openssl s_client -connect 127.0.0.1:" + std::to_string(server.port) +
                  " -tls1_1 -cipher DEFAULT@SECLEVEL=0 -CAfile " + pki("ca.crt") + " </dev/null 2>&1");
    CHECK(r.out.find("alert protocol version") != std::string::npos);
    // A client without a certificate: refused in the handshake, before Cap'n
    // Proto reads anything. (marshal call always presents one: kj directly.)
    {
      auto io = kj::setupAsyncIo();
      kj::TlsCertificate ca(kj::StringPtr(read_text(pki("ca.crt")).c_str()));
      kj::TlsContext::Options o;
      o.useSystemTrustStore = false;
      o.trustedCertificates = kj::arrayPtr(&ca, 1);
      kj::TlsContext anonymous(kj::mv(o));
      auto address = io.provider->getNetwork().parseAddress("127.0.0.1", server.port).wait(io.waitScope);
      auto stream = address->connect().wait(io.waitScope);
      std::string why;
      try {
        remote::tls_connect(anonymous, kj::mv(stream), "localhost").wait(io.waitScope);
      } catch (const kj::Exception& e) {
        why = remote::tls_reason(e);
      }
      INFO(why);
      CHECK(why.find("certificate required") != std::string::npos);
    }
    // A client without TLS at all: the server closes the connection.
    r = run("call" + at + crc32_hello);
    CHECK(r.status == 1);
    CHECK(r.out.empty());
    CHECK(r.err.find("the connection to marshal serve at 127.0.0.1:" + std::to_string(server.port) + " ended") !=
          std::string::npos);
    // A certificate of another CA: the server refuses it.
    r = run("call" + at + pki.call_options("stranger") + " --tls-name localhost" + crc32_hello);
    CHECK(r.status == 1);
    CHECK(r.out.empty());
    CHECK(r.err.find("TLS handshake with 127.0.0.1:" + std::to_string(server.port) + " failed: ") != std::string::npos);
    CHECK(r.err.find("unknown ca") != std::string::npos);
    // A client that trusts another CA: the server is not trusted.
    r = run("call" + at + pki.call_options("client", "otherca") + " --tls-name localhost" + crc32_hello);
    CHECK(r.status == 1);
    CHECK(r.err.find("TLS handshake with 127.0.0.1:" + std::to_string(server.port) +
                     " failed: TLS peer's certificate is not trusted") != std::string::npos);
    // The server's certificate does not name the address (IP SANs are not
    // compared), nor another name.
    for (const std::string& name : {std::string(""), std::string(" --tls-name example.org")}) {
      r = run("call" + at + pki.call_options() + name + crc32_hello);
      CHECK(r.status == 1);
      CHECK(r.err.find("TLS handshake with 127.0.0.1:" + std::to_string(server.port) + " failed: ") != std::string::npos);
      CHECK(r.err.find("hostname mismatch") != std::string::npos);
    }
    // The server is still up, and serves the next good client; through the
    // engine API too.
    r = run("call" + good + crc32_hello);
    CHECK(r.err == "");
    CHECK(r.out == crc32_result);
    Context ctx;
    std::string error;
    auto o = options();
    o.connect = "127.0.0.1:" + std::to_string(server.port);
    o.tls = {pki("client.crt"), pki("client.key"), pki("ca.crt"), "localhost"};
    auto lib = remote::IsolatedLibrary::open_file(ctx, source_path("typemaps/zlib.json"), o, error);
    INFO(error);
    REQUIRE(lib);
    CallResult result;
    REQUIRE(lib->call("crc32", std::vector<Value>{0, Bytes{{'h', 'e', 'l', 'l', 'o'}}}, result, error));
    CHECK(I(result.ret) == 907060870);
    o.tls.cert = pki("stranger.crt");
    o.tls.key = pki("stranger.key");
    CHECK_FALSE(remote::IsolatedLibrary::open_file(ctx, source_path("typemaps/zlib.json"), o, error));
    CHECK(error.find("TLS handshake with 127.0.0.1:") != std::string::npos);
    CHECK(marshal::engine::last_error().id == marshal::engine::ErrorId::refused);  // the record the bindings read
    CHECK(marshal::engine::last_error().message == error);
    // The server said whom it refused, and why.
    const std::string log = read_text(server_err);
    INFO(log);
    CHECK(log.find("marshal serve: refused a client from 127.0.0.1:") != std::string::npos);
    CHECK(log.find(": TLS handshake failed: ") != std::string::npos);
    CHECK(log.find(": TLS handshake failed: unsupported protocol") != std::string::npos);  // the TLS 1.1 client
    CHECK(log.find(": TLS handshake failed: certificate verify failed") != std::string::npos);  // the stranger
    std::filesystem::remove(server_err);

    // A TLS client of a server without TLS: the handshake fails, no hang.
    Server plain({"typemaps/zlib.json"});
    r = run("call --connect " + plain.address() + pki.call_options() + " --tls-name localhost" + crc32_hello);
    CHECK(r.status == 1);
    CHECK(r.err.find("TLS handshake with " + plain.address() + " failed") != std::string::npos);
  }

  TEST_CASE("marshal serve and call: partial TLS options and bad PEM files are errors naming what is wrong") {
    Pki pki;
    if (!pki.ok) {
      MESSAGE("skipped: no openssl command to make the test certificates");
      return;
    }
    Run r = run("serve typemaps/zlib.json --listen 0.0.0.0:0 --tls-cert " + pki("server.crt"));
    CHECK(r.status == 2);
    CHECK(r.err == "marshal serve: mutual TLS needs --tls-cert, --tls-key and --tls-client-ca together: --tls-key "
                   "and --tls-client-ca are missing\n");
    r = run("serve typemaps/zlib.json --listen 127.0.0.1:0 --tls-cert " + pki("server.crt") + " --tls-key " +
            pki("server.key"));
    CHECK(r.status == 2);
    CHECK(r.err.find(": --tls-client-ca is missing\n") != std::string::npos);
    r = run("call --connect 127.0.0.1:1 --tls-key " + pki("client.key") + crc32_hello);
    CHECK(r.status == 2);
    CHECK(r.err.find("--tls-cert and --tls-ca are missing") != std::string::npos);
    r = run("call --tls-cert " + pki("client.crt") + " --tls-key " + pki("client.key") + " --tls-ca " + pki("ca.crt") +
            crc32_hello);
    CHECK(r.status == 2);
    CHECK(r.err.find("the --tls-* options are for --connect") != std::string::npos);

    // Each bad file is named, before the server listens.
    auto serve_with = [&](const std::string& cert, const std::string& key, const std::string& ca) {
      return run("serve typemaps/zlib.json --listen 127.0.0.1:0 --tls-cert " + cert + " --tls-key " + key +
                 " --tls-client-ca " + ca);
    };
    const std::string missing = pki("missing.pem");
    r = serve_with(missing, pki("server.key"), pki("ca.crt"));
    CHECK(r.status == 1);
    CHECK(r.out.empty());
    CHECK(r.err == "marshal serve: cannot read the TLS certificate " + missing + " (No such file or directory)\n");
    r = serve_with(pki("server.key"), pki("server.key"), pki("ca.crt"));
    CHECK(r.status == 1);
    CHECK(r.err.find("the TLS certificate " + pki("server.key") + " holds no PEM certificate") != std::string::npos);
    r = serve_with(pki("server.crt"), pki("server.crt"), pki("ca.crt"));
    CHECK(r.status == 1);
    CHECK(r.err.find("the TLS key " + pki("server.crt") + " is not an unencrypted PEM private key") !=
          std::string::npos);
    r = serve_with(pki("server.crt"), pki("client.key"), pki("ca.crt"));
    CHECK(r.status == 1);
    CHECK(r.err.find("the TLS key " + pki("client.key") + " does not belong to the certificate " + pki("server.crt")) !=
          std::string::npos);
    r = serve_with(pki("server.crt"), pki("server.key"), pki("server.csr"));
    CHECK(r.status == 1);
    CHECK(r.err.find("the TLS client CA file " + pki("server.csr") + " holds no PEM certificate") != std::string::npos);
    // The client checks its files too (before connecting: nothing listens there).
    r = run("call --connect 127.0.0.1:1" + pki.call_options("client", "missing") + crc32_hello);
    CHECK(r.status == 1);
    CHECK(r.err.find("cannot read the TLS CA file " + pki("missing.crt")) != std::string::npos);
  }
}

// A measurement, not a check (skipped unless run with --no-skip): add_i32 and
// a 1 MiB bytes in/out through the surrogate, next to a raw socketpair
// ping-pong of the same payloads (the floor). ./run bench owns the real rows.
#include <sys/socket.h>

TEST_SUITE("remote") {
  TEST_CASE("timing: surrogate round trips next to a raw socketpair ping-pong" * doctest::skip()) {
    using clock = std::chrono::steady_clock;
    auto us = [](clock::duration d, int n) { return std::chrono::duration<double, std::micro>(d).count() / n; };
    auto pingpong = [](std::size_t bytes, int n) {
      int sv[2];
      REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
      std::thread echo([&] {
        std::vector<char> buf(bytes);
        for (int i = 0; i < n; ++i) {
          std::size_t got = 0;
          while (got < bytes) got += static_cast<std::size_t>(::read(sv[1], buf.data() + got, bytes - got));
          std::size_t put = 0;
          while (put < bytes) put += static_cast<std::size_t>(::write(sv[1], buf.data() + put, bytes - put));
        }
      });
      std::vector<char> buf(bytes, 'x');
      auto t0 = clock::now();
      for (int i = 0; i < n; ++i) {
        std::size_t put = 0;
        while (put < bytes) put += static_cast<std::size_t>(::write(sv[0], buf.data() + put, bytes - put));
        std::size_t got = 0;
        while (got < bytes) got += static_cast<std::size_t>(::read(sv[0], buf.data() + got, bytes - got));
      }
      auto t = clock::now() - t0;
      echo.join();
      ::close(sv[0]);
      ::close(sv[1]);
      return t;
    };
    Bound here("tests/fixtures/pinvoke.json");
    Isolated there("tests/fixtures/pinvoke.json");
    const int n = 3000;
    std::vector<Value> args{2, 40};
    CallResult r;
    std::string error;
    const Plan* plan = here.lib->bind("add_i32", error);
    auto t0 = clock::now();
    for (int i = 0; i < n; ++i) plan->call(args, r, error);
    auto in_process = clock::now() - t0;
    t0 = clock::now();
    for (int i = 0; i < n; ++i) there.lib->call("add_i32", args, r, error);
    auto isolated = clock::now() - t0;
    auto floor = pingpong(16, n);
    MESSAGE("add_i32: in-process " << us(in_process, n) << " us, surrogate " << us(isolated, n)
                                   << " us, raw socketpair ping-pong " << us(floor, n) << " us");
    const int m = 50;
    std::vector<Value> big{Bytes{std::vector<std::uint8_t>(1 << 20, 7)}, 1 << 20};
    const Plan* scribble = here.lib->bind("scribble_in_bytes", error);
    t0 = clock::now();
    for (int i = 0; i < m; ++i) REQUIRE(scribble->call(big, r, error));
    auto mib_here = clock::now() - t0;
    t0 = clock::now();
    for (int i = 0; i < m; ++i) REQUIRE(there.lib->call("scribble_in_bytes", big, r, error));
    auto mib = clock::now() - t0;
    auto mib_floor = pingpong(1 << 20, m);
    MESSAGE("1 MiB bytes in: in-process " << us(mib_here, m) << " us, surrogate " << us(mib, m)
                                          << " us, raw socketpair 1 MiB each way " << us(mib_floor, m) << " us");
  }
}

// ---- robustness ----

#include <fcntl.h>
#include <spawn.h>

TEST_SUITE("remote") {
  TEST_CASE("a surrogate fed garbage or a truncated message closes the connection and exits, never crashes") {
    for (const std::string& garbage :
         {std::string("\xff\xff\xff\x7f" "garbage that is not a Cap'n Proto message", 45),
          std::string("\x00\x00\x00\x00\x10\x00\x00\x00", 8),  // one segment of 16 words, then nothing
          std::string(4096, '\x41')}) {
      int sv[2], crash[2];
      REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
      REQUIRE(::pipe2(crash, O_CLOEXEC) == 0);
      posix_spawn_file_actions_t fa;
      posix_spawn_file_actions_init(&fa);
      posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
      posix_spawn_file_actions_adddup2(&fa, crash[1], 4);
      // kj reports the protocol error on stderr: keep the test's output clean.
      posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
      char name[] = "marshal-surrogate";
      char* argv[] = {name, nullptr};
      pid_t pid;
      REQUIRE(::posix_spawn(&pid, MARSHAL_SURROGATE, &fa, nullptr, argv, environ) == 0);
      posix_spawn_file_actions_destroy(&fa);
      ::close(sv[1]);
      ::close(crash[1]);
      CHECK(::write(sv[0], garbage.data(), garbage.size()) == static_cast<ssize_t>(garbage.size()));
      ::shutdown(sv[0], SHUT_WR);  // a truncated message: the rest never comes
      int status = 0;
      REQUIRE(::waitpid(pid, &status, 0) == pid);
      CHECK(WIFEXITED(status));  // not killed by a signal
      char byte;
      CHECK(::read(crash[0], &byte, 1) == 0);  // and no crash report
      ::close(sv[0]);
      ::close(crash[0]);
    }
  }

  TEST_CASE("values nested deeper than the engine allows are refused before they are sent") {
    Isolated there("tests/fixtures/pinvoke.json");
    Value deep = List{1};
    for (int i = 0; i < 300; ++i) deep = Value(List{std::move(deep)});
    std::string e = there.error_of("sum_in_i32_array", {deep, 1});
    CHECK(e.find("parameter 0 'v'") != std::string::npos);
    CHECK(e.find("values nest more than 256 deep") != std::string::npos);
    CHECK(there.call("add_i32", {1, 2}).ret == Value(3));
  }

  TEST_CASE("a typemap that says isolate runs isolated from the CLI without --isolate") {
    std::string text = read_text(source_path("typemaps/libc.json"));
    const auto at = text.find("\"load\"");
    REQUIRE(at != std::string::npos);
    text.insert(at, "\"isolate\": \"process\", ");
    const std::string path = temp_path("isolated-libc.json");
    {
      std::ofstream out(path);
      out << text;
    }
    Run r = run("call " + path + " div 1 0");
    CHECK(r.status == 1);
    CHECK(r.err.find("function div crashed in the surrogate (pid ") == 0);
    CHECK(r.err.find("with SIGFPE") != std::string::npos);
    r = run("call " + path + " div 17 5");
    CHECK(r.out == "{\"return\":{\"quot\":3,\"rem\":2},\"out\":{}}\n");
    std::filesystem::remove(path);
    // --deadline: a hung call is one error line and exit status 1.
    const std::string hang = temp_path("hang.json");
    {
      std::ofstream out(hang);
      out << crashing_libc;
    }
    r = run("call --isolate --deadline 200 " + hang + " pause");
    CHECK(r.status == 1);
    CHECK(r.err.find("function pause timed out after 200 ms in the surrogate (pid ") == 0);
    CHECK(r.err.find("); the surrogate was killed\n") != std::string::npos);
    std::filesystem::remove(hang);
  }
}

// ---- isolate as a load option of the typed C++ API and the C API ----

TEST_SUITE("remote") {
  TEST_CASE("typed C++ API: library(path, {.isolate = process}) calls through the surrogate") {
    ::setenv("MARSHAL_SURROGATE", MARSHAL_SURROGATE, 1);
    marshal::library here(source_path("typemaps/zlib.json"));
    marshal::library there(source_path("typemaps/zlib.json"), {.isolate = marshal::isolation::process});
    CHECK_FALSE(here.isolated());
    CHECK(there.isolated());
    const std::vector<std::uint8_t> hello{'h', 'e', 'l', 'l', 'o'};
    auto crc_here = here.function<unsigned long(unsigned long, std::span<const std::uint8_t>)>("crc32");
    auto crc_there = there.function<unsigned long(unsigned long, std::span<const std::uint8_t>)>("crc32");
    CHECK(crc_there(0, hello) == 907060870u);
    CHECK(crc_there(0, hello) == crc_here(0, hello));
    // A crash: an error naming the function and the signal; the next call works.
    marshal::library libc(source_path("typemaps/libc.json"), {.isolate = marshal::isolation::process});
    struct div_t_ {
      int quot, rem;
    };
    auto div = libc.function<div_t_(int, int)>("div");
    CHECK(div(17, 5).quot == 3);
    try {
      (void)div(1, 0);
      FAIL("div(1, 0) returned");
    } catch (const marshal::error& e) {
      CHECK(std::string(e.what()).find("function div crashed in the surrogate (pid ") == 0);
      CHECK(std::string(e.what()).find(") with SIGFPE") != std::string::npos);
    }
    CHECK(div(-7, 2).rem == -1);
    // create() asks the surrogate (objects: unit-remote-objects.cpp); an unknown class is its error.
    CHECK_THROWS_WITH_AS((void)libc.create("Nope"), doctest::Contains("no class 'Nope'"), marshal::error);
    // A deadline needs isolation.
    CHECK_THROWS_WITH_AS(marshal::library(source_path("typemaps/libc.json"), {.deadline = 100ms}),
                         doctest::Contains("a deadline needs an isolated library"), marshal::error);
  }

  TEST_CASE("C API: marshal_library_create_isolated calls through the surrogate") {
    ::setenv("MARSHAL_SURROGATE", MARSHAL_SURROGATE, 1);
    marshal_context* ctx = nullptr;
    REQUIRE(marshal_context_create(&ctx) == MARSHAL_OK);
    marshal_typemap* z = nullptr;
    REQUIRE(marshal_typemap_load(ctx, "typemaps/zlib.json", &z) == MARSHAL_OK);
    marshal_library *here = nullptr, *there = nullptr;
    REQUIRE(marshal_library_create(z, &here) == MARSHAL_OK);
    INFO(marshal_error_message(marshal_last_error()));
    REQUIRE(marshal_library_create_isolated(z, 0, &there) == MARSHAL_OK);
    CHECK(marshal_library_isolated(there) == 1);
    CHECK(marshal_library_isolated(here) == 0);
    marshal_value *crc = nullptr, *buf = nullptr, *len = nullptr;
    REQUIRE(marshal_value_create_uint64(0, &crc) == MARSHAL_OK);
    REQUIRE(marshal_value_create_bytes("hello", 5, &buf) == MARSHAL_OK);
    REQUIRE(marshal_value_create_int64(5, &len) == MARSHAL_OK);
    marshal_value* args[3] = {crc, buf, len};
    for (std::size_t n : {std::size_t{2}, std::size_t{3}}) {  // len left out, or given
      std::uint64_t a = 0, b = 0;
      marshal_function *fa = nullptr, *fb = nullptr;
      REQUIRE(marshal_library_function(here, "crc32", &fa) == MARSHAL_OK);
      REQUIRE(marshal_library_function(there, "crc32", &fb) == MARSHAL_OK);
      CHECK(marshal_function_arity(fb) == 2);
      marshal_result *ra = nullptr, *rb = nullptr;
      REQUIRE(marshal_function_call(fa, args, n, &ra) == MARSHAL_OK);
      REQUIRE(marshal_function_call(fb, args, n, &rb) == MARSHAL_OK);
      REQUIRE(marshal_value_get_uint64(marshal_result_return(ra), &a) == MARSHAL_OK);
      REQUIRE(marshal_value_get_uint64(marshal_result_return(rb), &b) == MARSHAL_OK);
      CHECK(a == 907060870u);
      CHECK(b == a);
      marshal_result_release(ra);
      marshal_result_release(rb);
    }
    // What cannot cross: refused with a message, never a crash.
    marshal_value* box = nullptr;
    CHECK(marshal_value_create_native(there, "uint8", 4, &box) == MARSHAL_ERROR_ARGUMENT);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("cannot cross the process boundary yet") !=
          std::string::npos);
    marshal_function* missing = nullptr;
    CHECK(marshal_library_function(there, "nosuch", &missing) == MARSHAL_ERROR_BIND);
    CHECK(marshal_error_id(marshal_last_error()) == MARSHAL_E_NOT_FOUND);
    // libc's div(1, 0): SIGFPE in the surrogate is a failed call; the next works.
    marshal_typemap* c = nullptr;
    REQUIRE(marshal_typemap_load(ctx, "typemaps/libc.json", &c) == MARSHAL_OK);
    marshal_library* libc = nullptr;
    REQUIRE(marshal_library_create_isolated(c, 0, &libc) == MARSHAL_OK);
    marshal_function* div = nullptr;
    REQUIRE(marshal_library_function(libc, "div", &div) == MARSHAL_OK);
    marshal_value *one = nullptr, *zero = nullptr, *five = nullptr;
    marshal_value_create_int64(1, &one);
    marshal_value_create_int64(0, &zero);
    marshal_value_create_int64(5, &five);
    marshal_value* bad[2] = {one, zero};
    marshal_result* r = nullptr;
    CHECK(marshal_function_call(div, bad, 2, &r) == MARSHAL_ERROR_CALL);
    const std::string msg = marshal_error_message(marshal_last_error());
    CHECK(msg.find("function div crashed in the surrogate (pid ") == 0);
    CHECK(msg.find(") with SIGFPE") != std::string::npos);
    marshal_value* good[2] = {five, one};
    REQUIRE(marshal_function_call(div, good, 2, &r) == MARSHAL_OK);
    std::int64_t quot = 0;
    REQUIRE(marshal_value_get_int64(marshal_record_get(marshal_result_return(r), "quot"), &quot) == MARSHAL_OK);
    CHECK(quot == 5);
    marshal_result_release(r);
    for (auto* v : {crc, buf, len, one, zero, five}) marshal_value_release(v);
    marshal_library_release(libc);
    marshal_library_release(here);
    marshal_library_release(there);
    marshal_context_release(ctx);
  }

  TEST_CASE("a crash and a deadline through the typed C++ API and the C API: id, function, signal, address") {
    ::setenv("MARSHAL_SURROGATE", MARSHAL_SURROGATE, 1);
    const std::string path = temp_path("poke.json");
    {
      std::ofstream out(path);
      out << poking_fixture;
    }
    // Typed C++ API: marshal::error carries the record.
    marshal::library lib(path, {.isolate = marshal::isolation::process});
    auto poke = lib.function<void(std::uint64_t, std::int32_t)>("poke_i32");
    auto echo = lib.function<std::int32_t(std::int32_t)>("echo_i32");
    try {
      poke(0x48, 1);
      FAIL("poke_i32 at 0x48 returned");
    } catch (const marshal::error& e) {
      CHECK(std::string(e.what()).find(") with SIGSEGV (address 0x48)") != std::string::npos);
      CHECK(e.id() == ErrorId::native_crash);
      CHECK(std::string(e.id_name()) == "native_crash");
      CHECK(e.function() == "poke_i32");
      CHECK(e.native_kind() == NativeCodeKind::signal);
      CHECK(e.native_code() == SIGSEGV);
    }
    CHECK(echo(12) == 12);

    // C API: the id, the signal as native_code, the function, the address.
    auto err = [] { return marshal_last_error(); };
    marshal_context* ctx = nullptr;
    REQUIRE(marshal_context_create(&ctx) == MARSHAL_OK);
    marshal_typemap* tm = nullptr;
    REQUIRE(marshal_typemap_load_text(ctx, poking_fixture, std::strlen(poking_fixture), "poke-c.json", &tm) == MARSHAL_OK);
    marshal_library* clib = nullptr;
    REQUIRE(marshal_library_create_isolated(tm, 0, &clib) == MARSHAL_OK);
    marshal_function *cpoke = nullptr, *cecho = nullptr;
    REQUIRE(marshal_library_function(clib, "poke_i32", &cpoke) == MARSHAL_OK);
    REQUIRE(marshal_library_function(clib, "echo_i32", &cecho) == MARSHAL_OK);
    marshal_value *addr = nullptr, *v = nullptr;
    REQUIRE(marshal_value_create_uint64(0x48, &addr) == MARSHAL_OK);
    REQUIRE(marshal_value_create_int64(9, &v) == MARSHAL_OK);
    marshal_value* args[2] = {addr, v};
    marshal_result* r = nullptr;
    CHECK(marshal_function_call(cpoke, args, 2, &r) == MARSHAL_ERROR_CALL);
    CHECK(marshal_error_id(err()) == MARSHAL_E_NATIVE_CRASH);
    CHECK(std::string(marshal_error_code_name(MARSHAL_E_NATIVE_CRASH)) == "MARSHAL_E_NATIVE_CRASH");
    CHECK(marshal_error_native_code(err()) == SIGSEGV);
    CHECK(std::string(marshal_error_function(err())) == "poke_i32");
    CHECK(std::string(marshal_error_message(err())).find(") with SIGSEGV (address 0x48)") != std::string::npos);
    REQUIRE(marshal_function_call(cecho, &v, 1, &r) == MARSHAL_OK);  // the next call works
    std::int64_t got = 0;
    REQUIRE(marshal_value_get_int64(marshal_result_return(r), &got) == MARSHAL_OK);
    CHECK(got == 9);
    marshal_result_release(r);
    // A deadline: MARSHAL_E_DEADLINE, SIGKILL.
    marshal_typemap* hang = nullptr;
    REQUIRE(marshal_typemap_load_text(ctx, crashing_libc, std::strlen(crashing_libc), "hang-c.json", &hang) == MARSHAL_OK);
    marshal_library* hlib = nullptr;
    REQUIRE(marshal_library_create_isolated(hang, 200, &hlib) == MARSHAL_OK);
    marshal_function* pause = nullptr;
    REQUIRE(marshal_library_function(hlib, "pause", &pause) == MARSHAL_OK);
    marshal_value* none[1] = {nullptr};
    CHECK(marshal_function_call(pause, none, 0, &r) == MARSHAL_ERROR_CALL);
    CHECK(marshal_error_id(err()) == MARSHAL_E_DEADLINE);
    CHECK(std::string(marshal_error_code_name(MARSHAL_E_DEADLINE)) == "MARSHAL_E_DEADLINE");
    CHECK(marshal_error_native_code(err()) == SIGKILL);
    CHECK(std::string(marshal_error_function(err())) == "pause");
    // A surrogate that exits: MARSHAL_E_DISCONNECTED.
    marshal_function* quit = nullptr;
    REQUIRE(marshal_library_function(hlib, "quit", &quit) == MARSHAL_OK);
    CHECK(marshal_function_call(quit, &v, 1, &r) == MARSHAL_ERROR_CALL);
    CHECK(marshal_error_id(err()) == MARSHAL_E_DISCONNECTED);
    CHECK(std::string(marshal_error_message(err())).find("exited with status 9 during quit") != std::string::npos);
    marshal_value_release(addr);
    marshal_value_release(v);
    marshal_library_release(hlib);
    marshal_library_release(clib);
    marshal_context_release(ctx);
    std::filesystem::remove(path);
  }
}

// ---- connecting to marshal serve from each API ----

TEST_SUITE("remote") {
  TEST_CASE("typed C++ and C APIs connect to marshal serve, with mutual TLS; failures are disconnected or refused") {
    Server server({"typemaps/zlib.json"});
    const std::vector<std::uint8_t> hello{'h', 'e', 'l', 'l', 'o'};
    // Typed C++: load_options::connect.
    {
      marshal::library z(source_path("typemaps/zlib.json"), {.connect = server.address()});
      CHECK(z.isolated());
      auto crc = z.function<unsigned long(unsigned long, std::span<const std::uint8_t>)>("crc32");
      CHECK(crc(0, hello) == 907060870u);
      // A typemap the server does not serve: refused.
      try {
        marshal::library libc(source_path("typemaps/libc.json"), {.connect = server.address()});
        FAIL("a typemap the server does not serve was opened");
      } catch (const marshal::error& e) {
        CHECK(std::string(e.what()).find("is not served here") != std::string::npos);
        CHECK(e.id() == marshal::ErrorId::refused);
        CHECK(std::string(e.id_name()) == "refused");
      }
      // Nobody listening: disconnected.
      try {
        marshal::library none(source_path("typemaps/zlib.json"), {.connect = "127.0.0.1:1"});
        FAIL("a connection to a closed port succeeded");
      } catch (const marshal::error& e) {
        CHECK(std::string(e.what()).find("cannot connect to marshal serve at 127.0.0.1:1") != std::string::npos);
        CHECK(e.id() == marshal::ErrorId::disconnected);
      }
      // Not loopback, no TLS: refused before connecting.
      try {
        marshal::library far(source_path("typemaps/zlib.json"), {.connect = "192.0.2.1:80"});
        FAIL("a non-loopback connection without TLS was made");
      } catch (const marshal::error& e) {
        CHECK(std::string(e.what()).find("refusing to connect to 192.0.2.1:80") != std::string::npos);
        CHECK(e.id() == marshal::ErrorId::refused);
      }
      CHECK_THROWS_WITH_AS(marshal::library(source_path("typemaps/zlib.json"), {.tls_cert = "x.pem"}),
                           doctest::Contains("the TLS options are for a connection to marshal serve"), marshal::error);
    }
    // C API: marshal_library_connect.
    marshal_context* ctx = nullptr;
    REQUIRE(marshal_context_create(&ctx) == MARSHAL_OK);
    marshal_typemap *z = nullptr, *libc = nullptr;
    REQUIRE(marshal_typemap_load(ctx, "typemaps/zlib.json", &z) == MARSHAL_OK);
    REQUIRE(marshal_typemap_load(ctx, "typemaps/libc.json", &libc) == MARSHAL_OK);
    marshal_library* lib = nullptr;
    const std::string address = server.address();
    INFO(marshal_error_message(marshal_last_error()));
    REQUIRE(marshal_library_connect(z, address.c_str(), nullptr, 0, &lib) == MARSHAL_OK);
    CHECK(marshal_library_isolated(lib) == 1);
    marshal_function* crc = nullptr;
    REQUIRE(marshal_library_function(lib, "crc32", &crc) == MARSHAL_OK);
    marshal_value *seed = nullptr, *buf = nullptr;
    REQUIRE(marshal_value_create_uint64(0, &seed) == MARSHAL_OK);
    REQUIRE(marshal_value_create_bytes("hello", 5, &buf) == MARSHAL_OK);
    marshal_value* args[2] = {seed, buf};
    marshal_result* result = nullptr;
    REQUIRE(marshal_function_call(crc, args, 2, &result) == MARSHAL_OK);
    std::uint64_t got = 0;
    REQUIRE(marshal_value_get_uint64(marshal_result_return(result), &got) == MARSHAL_OK);
    CHECK(got == 907060870u);
    marshal_result_release(result);
    marshal_value_release(seed);
    marshal_value_release(buf);
    marshal_library_release(lib);
    lib = nullptr;
    CHECK(marshal_library_connect(libc, address.c_str(), nullptr, 0, &lib) == MARSHAL_ERROR_LIBRARY);
    CHECK(lib == nullptr);
    CHECK(marshal_error_id(marshal_last_error()) == MARSHAL_E_REFUSED);
    CHECK(std::string(marshal_error_code_name(MARSHAL_E_REFUSED)) == "MARSHAL_E_REFUSED");
    CHECK(marshal_library_connect(z, "127.0.0.1:1", nullptr, 0, &lib) == MARSHAL_ERROR_LIBRARY);
    CHECK(marshal_error_id(marshal_last_error()) == MARSHAL_E_DISCONNECTED);
    CHECK(marshal_library_connect(z, nullptr, nullptr, 0, &lib) == MARSHAL_ERROR_ARGUMENT);
    CHECK(marshal_error_id(marshal_last_error()) == MARSHAL_E_INVALID_ARGUMENT);

    // With mutual TLS: the good client, and a stranger refused.
    Pki pki;
    if (!pki.ok) {
      MESSAGE("TLS part skipped: no openssl command to make the test certificates");
    } else {
      Server tls_server({"typemaps/zlib.json"}, pki.serve_options());
      const std::string at = "127.0.0.1:" + std::to_string(tls_server.port);
      marshal::library zt(source_path("typemaps/zlib.json"),
                          {.connect = at, .tls_cert = pki("client.crt"), .tls_key = pki("client.key"),
                           .tls_ca = pki("ca.crt"), .tls_name = "localhost"});
      CHECK(zt.function<unsigned long(unsigned long, std::span<const std::uint8_t>)>("crc32")(0, hello) == 907060870u);
      try {
        marshal::library stranger(source_path("typemaps/zlib.json"),
                                  {.connect = at, .tls_cert = pki("stranger.crt"), .tls_key = pki("stranger.key"),
                                   .tls_ca = pki("ca.crt"), .tls_name = "localhost"});
        FAIL("a client certificate of another CA was accepted");
      } catch (const marshal::error& e) {
        CHECK(std::string(e.what()).find("TLS handshake with " + at + " failed") != std::string::npos);
        CHECK(e.id() == marshal::ErrorId::refused);
      }
      const std::string cert = pki("client.crt"), key = pki("client.key"), ca = pki("ca.crt");
      marshal_tls_files files{cert.c_str(), key.c_str(), ca.c_str(), "localhost"};
      REQUIRE(marshal_library_connect(z, at.c_str(), &files, 0, &lib) == MARSHAL_OK);
      marshal_library_release(lib);
      lib = nullptr;
      const std::string other = pki("stranger.crt"), other_key = pki("stranger.key");
      marshal_tls_files strange{other.c_str(), other_key.c_str(), ca.c_str(), "localhost"};
      CHECK(marshal_library_connect(z, at.c_str(), &strange, 0, &lib) == MARSHAL_ERROR_LIBRARY);
      CHECK(marshal_error_id(marshal_last_error()) == MARSHAL_E_REFUSED);
      marshal_tls_files partial{cert.c_str(), nullptr, nullptr, nullptr};
      CHECK(marshal_library_connect(z, at.c_str(), &partial, 0, &lib) == MARSHAL_ERROR_LIBRARY);
      CHECK(std::string(marshal_error_message(marshal_last_error())).find("missing") != std::string::npos);
    }
    marshal_context_release(ctx);
  }
}

// ---- marshal serve's heartbeat ----

namespace {
// The client process of the heartbeat test: this test program run again with
// MARSHAL_HEARTBEAT_CLIENT=ADDRESS. It opens two handles on the server, says
// "ready" on stdout and stops itself (SIGSTOP): alive to the kernel, silent
// to the server.
int live_handles(remote::IsolatedLibrary& lib) {
  CallResult n;
  std::string error;
  REQUIRE(lib.call("res_live", {}, n, error));
  return static_cast<int>(I(n.ret));
}
}  // namespace

TEST_SUITE("remote") {
  TEST_CASE("heartbeat client (runs only as the heartbeat test's child process)") {
    const char* address = std::getenv("MARSHAL_HEARTBEAT_CLIENT");
    if (!address) return;
    Context ctx;
    std::string error;
    auto o = options();
    o.connect = address;
    auto lib = remote::IsolatedLibrary::open_file(ctx, source_path("tests/fixtures/pinvoke.json"), o, error);
    REQUIRE(lib);
    CallResult h1, h2;
    REQUIRE(lib->call("res_open", std::vector<Value>{1}, h1, error));
    REQUIRE(lib->call("res_open", std::vector<Value>{2}, h2, error));
    std::printf("ready\n");
    std::fflush(stdout);
    ::raise(SIGSTOP);
  }

  TEST_CASE("marshal serve's heartbeat: a silent client's references are released in seconds, a quiet one's kept") {
    // Starts the child client against `server`; returns its pid once it holds two handles and has stopped.
    auto stopped_client = [](const Server& server) {
      int out[2];
      REQUIRE(::pipe(out) == 0);
      const pid_t pid = ::fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        ::dup2(out[1], 1);
        ::close(out[0]);
        ::close(out[1]);
        ::setenv("MARSHAL_HEARTBEAT_CLIENT", server.address().c_str(), 1);
        char self[] = "/proc/self/exe";
        char tc[] = "-tc=heartbeat client*";
        char nv[] = "--no-version";
        char* argv[] = {self, tc, nv, nullptr};
        ::execv("/proc/self/exe", argv);
        ::_exit(127);
      }
      ::close(out[1]);
      std::string line, got;  // doctest's own lines come first
      char c;
      while (got != "ready" && ::read(out[0], &c, 1) == 1) {
        if (c != '\n') {
          line += c;
          continue;
        }
        got = line;
        line.clear();
      }
      ::close(out[0]);
      if (got != "ready") {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
      REQUIRE(got == "ready");
      int st = 0;
      REQUIRE(::waitpid(pid, &st, WUNTRACED) == pid);  // it stopped itself
      REQUIRE(WIFSTOPPED(st));
      return pid;
    };
    Context ctx;
    std::string error;
    auto o = options();
    {
      Server server({"tests/fixtures/pinvoke.json"}, {"--heartbeat-ms", "1000"});
      o.connect = server.address();
      auto here = remote::IsolatedLibrary::open_file(ctx, source_path("tests/fixtures/pinvoke.json"), o, error);
      INFO(error);
      REQUIRE(here);
      CallResult mine;
      REQUIRE(here->call("res_open", std::vector<Value>{7}, mine, error));  // held through the quiet wait below
      const int base = live_handles(*here);
      const pid_t child = stopped_client(server);
      CHECK(live_handles(*here) == base + 2);
      const auto t0 = std::chrono::steady_clock::now();
      int now = base + 2;
      while (now != base && std::chrono::steady_clock::now() - t0 < 10s) {
        std::this_thread::sleep_for(50ms);
        now = live_handles(*here);
      }
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
      MESSAGE("a stopped client's two handles were released after " << waited.count() << " ms (heartbeat 1000 ms)");
      CHECK(now == base);
      CHECK(waited < 3000ms);
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
      // A quiet client (no calls for 2.5 heartbeats) that pings keeps its session and handle.
      std::this_thread::sleep_for(2500ms);
      CHECK(live_handles(*here) == base);
      CallResult value;
      CHECK(here->call("res_value", std::vector<Value>{mine.ret}, value, error));
      INFO(error);
      CHECK(I(value.ret) == 7);
    }
    {
      // Without the heartbeat the stopped client's handles stay (what the heartbeat is for).
      Server server({"tests/fixtures/pinvoke.json"}, {"--heartbeat-ms", "0"});
      o.connect = server.address();
      auto here = remote::IsolatedLibrary::open_file(ctx, source_path("tests/fixtures/pinvoke.json"), o, error);
      INFO(error);
      REQUIRE(here);
      const int base = live_handles(*here);
      const pid_t child = stopped_client(server);
      std::this_thread::sleep_for(2000ms);
      CHECK(live_handles(*here) == base + 2);
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
    }
    Run r = run("serve typemaps/zlib.json --listen 127.0.0.1:0 --heartbeat-ms 50");
    CHECK(r.status == 2);
    CHECK(r.err.find("--heartbeat-ms expects milliseconds: 0 (none) or 100 to 86400000") != std::string::npos);
  }
}
