// marshal tests: hostile input (issue 15).
// Counts, lengths and capacities the host gives are checked against the data
// they describe and against the library's buffer limit before any native code
// runs; what a callee reports afterwards is read only within what it was
// given; nesting is bounded; numbers convert exactly. The fixture callees
// (tests/fixtures/hostile.json) read and write every element they are told
// about, so an ASan build reports any buffer smaller than its count.
#include "call_support.hpp"

#include "base/arena.hpp"
#include "base/bounds.hpp"
#include "convert/lane.hpp"
#include "convert/native.hpp"
#include "convert/numeric.hpp"

#include <chrono>
#include <cmath>
#include <limits>
#include <new>
#include <stdexcept>

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;

namespace {

constexpr const char* hostile = "tests/fixtures/hostile.json";

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Calls through the scalar lane (when the plan has one) and through the
// general path; both must succeed alike or fail with the same message.
struct BothPaths {
  bool ok = false;
  std::string error;
  CallResult result;
};
BothPaths both(Bound& b, const std::string& fn, std::vector<Value> args) {
  std::string error;
  const Plan* plan = b.lib->bind(fn, error);
  REQUIRE_MESSAGE(plan, error);
  BothPaths laned, general;
  laned.ok = plan->call(args, laned.result, laned.error);
  set_scalar_lanes(false);
  general.ok = plan->call(args, general.result, general.error);
  set_scalar_lanes(true);
  INFO(fn << " " << Value(List(args.begin(), args.end())).to_json().dump());
  CHECK(laned.ok == general.ok);
  CHECK(laned.error == general.error);
  if (laned.ok && general.ok) {
    CHECK(laned.result.ret.type() == general.result.ret.type());
    if (!(laned.result.ret.is<double>() && std::isnan(laned.result.ret.as<double>())))
      CHECK(laned.result.ret == general.result.ret);
  }
  return laned;
}

std::string nested(std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

}  // namespace

TEST_SUITE("hostile") {
  TEST_CASE("size arithmetic: a count whose byte size wraps is refused before native code") {
    Bound f("tests/fixtures/pinvoke.json");
    const std::uint64_t wraps = (std::uint64_t{1} << 62) + 1;  // 4 x (2^62 + 1) is 4 modulo 2^64
    std::string e = f.error_of("fill_out_i32_array", {Value(wraps)});
    CHECK(has(e, "fill_out_i32_array: parameter 0 'out'"));
    CHECK(has(e, "4611686018427387905 units of 4 bytes (more than the address space), counted by parameter 'n'"));
    CHECK(has(e, "\"max_buffer\""));
    Bound h(hostile);
    // Every count source of an engine-allocated buffer: a parameter, an inout
    // pointer parameter, a string capacity (out and inout).
    e = h.error_of("touch_out_i32", {Value(wraps)});
    CHECK(has(e, "parameter 0 'out'"));
    CHECK(has(e, "counted by parameter 'n'"));
    e = h.error_of("touch_out_i32_ptr", {Value(wraps)});
    CHECK(has(e, "parameter 0 'out'"));
    e = h.error_of("touch_out_utf8", {Value(wraps)});
    CHECK(has(e, "parameter 0 'out'"));
    CHECK(has(e, "counted by parameter 'cap'"));
    e = h.error_of("touch_out_utf16", {Value(std::uint64_t{1} << 63 >> 1)});
    CHECK(has(e, "parameter 0 'out'"));
    e = h.error_of("touch_inout_utf8", {Value("abc"), Value(wraps)});
    CHECK(has(e, "parameter 0 's'"));
    CHECK(has(e, "counted by parameter 'cap'"));
    // Counts are at most 2^63 - 1 whatever the parameter's type.
    e = h.error_of("touch_out_i32", {Value(~std::uint64_t{0})});
    CHECK(has(e, "parameter 0 'out'"));
    CHECK(has(e, "out of range for count parameter 'n'"));
  }

  TEST_CASE("the arena's bound check does not wrap") {
    Arena a;
    CHECK(a.alloc(16) != nullptr);
    CHECK_THROWS_AS(a.alloc(SIZE_MAX - 8), std::bad_alloc);
    CHECK_THROWS_AS(a.alloc(SIZE_MAX), std::bad_alloc);
    std::size_t out = 0;
    CHECK_FALSE(checked_mul((std::uint64_t{1} << 62) + 1, 4, out));
    CHECK(checked_mul(3, 4, out));
    CHECK(out == 12);
    CHECK_FALSE(checked_add(SIZE_MAX, 1, out));
  }

  TEST_CASE("native memory: a count whose size overflows makes no box") {
    Context ctx;
    const TypeId i32 = ctx.types().find_primitive("int32");
    CHECK_THROWS_AS(native_new(ctx.types(), i32, (std::size_t{1} << 62) + 1), std::length_error);
    std::string error;
    CHECK(native_new(ctx.types(), i32, std::size_t{1} << 40, default_max_buffer, error) == nullptr);
    CHECK(has(error, "is larger than the limit of 268435456 bytes"));
    auto box = native_new(ctx.types(), i32, 4, default_max_buffer, error);
    REQUIRE(box);
    CHECK(box->size == 16);
  }

  TEST_CASE("capacities above the limit are refused before any allocation, naming the parameter and the limit") {
    Bound h(hostile);
    for (std::uint64_t cap : {std::uint64_t{1} << 31, std::uint64_t{1} << 40}) {
      const auto start = std::chrono::steady_clock::now();
      const std::string e = h.error_of("touch_out_utf8", {Value(cap)});
      CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(1));  // nothing allocated or zeroed
      CHECK(has(e, "touch_out_utf8: parameter 0 'out'"));
      CHECK(has(e, "a buffer of " + std::to_string(cap) + " bytes, counted by parameter 'cap', is larger than the limit "
                   "of 268435456 bytes (\"max_buffer\" of the typemap's library)"));
      CHECK(has(h.error_of("touch_out_i32", {Value(cap)}), "is larger than the limit of 268435456 bytes"));
    }
    // Exactly at the limit is allowed (the buffer is allocated and filled).
    h.lib->set_max_buffer(1 << 20);
    CHECK(I(h.call("touch_out_utf8", {Value(1 << 20)}).ret) == (1 << 20) - 1);
    CHECK(has(h.error_of("touch_out_utf8", {Value((1 << 20) + 1)}), "limit of 1048576 bytes"));
    h.lib->set_max_buffer(0);  // the default again
    CHECK(h.lib->max_buffer() == default_max_buffer);
  }

  TEST_CASE("the limit is configurable per library: \"max_buffer\" in the typemap") {
    Context ctx;
    std::string text = read_text(source_path(hostile));
    const std::string key = "\"name\": \"marshal_fixture\",";
    text.replace(text.find(key), key.size(), key + " \"max_buffer\": 64,");
    LoadResult r = ctx.load_text(text, "small.json");
    REQUIRE(r.ok());
    std::string error;
    auto lib = Library::open(ctx, *r.typemap, error);
    REQUIRE(lib);
    CHECK(lib->max_buffer() == 64);
    const Plan* plan = lib->bind("touch_out_i32", error);
    REQUIRE(plan);
    CallResult res;
    CHECK(plan->call(std::vector<Value>{Value(16)}, res, error));  // 64 bytes
    CHECK_FALSE(plan->call(std::vector<Value>{Value(17)}, res, error));
    CHECK(has(error, "a buffer of 17 units of 4 bytes (68 bytes), counted by parameter 'n', is larger than the limit of 64 bytes"));
    // In data is bounded too (it is copied), and so is what comes back.
    plan = lib->bind("touch_in_i32", error);
    REQUIRE(plan);
    CHECK_FALSE(plan->call(std::vector<Value>{Value(List(17, Value(1))), Value(17)}, res, error));
    CHECK(has(error, "parameter 0 'v'"));
    for (const char* bad : {"0", "-1", "1.5", "\"big\"", "18446744073709551616"}) {
      std::string t = read_text(source_path(hostile));
      t.replace(t.find(key), key.size(), key + " \"max_buffer\": " + bad + ",");
      LoadResult b = ctx.load_text(t, "bad.json");
      REQUIRE_FALSE(b.ok());
      CHECK(b.errors.at(0).text().rfind("bad.json: /library/max_buffer: expected a positive integer", 0) == 0);
    }
  }

  TEST_CASE("a string's length is checked against the string, for every encoding") {
    Bound f("tests/fixtures/pinvoke.json");
    for (std::uint64_t n : {2000ull, 10000000ull}) {
      const std::string e = f.error_of("sum_in_bytes", {Value("abc"), Value(n)});
      CHECK(has(e, "sum_in_bytes: parameter 0 's' ("));
      CHECK(has(e, "): the string has 3 bytes but its length (parameter 'n') is " + std::to_string(n)));
    }
    Bound h(hostile);
    // Exactly the string, or a prefix, is read; one unit more is refused.
    std::uint64_t abc = ('a' * 31 + 'b') * 31 + 'c';
    CHECK(I(h.call("touch_in_bytes_len", {Value("abc"), Value(3)}).ret) == static_cast<std::int64_t>(abc));
    CHECK(I(h.call("touch_in_bytes_len", {Value("abc"), Value(2)}).ret) == 'a' * 31 + 'b');
    CHECK(has(h.error_of("touch_in_bytes_len", {Value("abc"), Value(4)}), "the string has 3 bytes but its length"));
    CHECK(has(h.error_of("touch_in_bytes_len", {Value(Bytes{{1, 2}}), Value(3)}), "the string has 2 bytes"));
    CHECK(I(h.call("touch_in_bytes_len", {Value(Bytes{{1, 2}}), Value(2)}).ret) == 33);
    // UTF-8 with a terminator (the fast path) and UTF-16 without (the general path).
    CHECK(h.call("touch_in_utf8_len", {Value("h\xc3\xa9llo"), Value(6)}).ret.is_integer());
    CHECK(has(h.error_of("touch_in_utf8_len", {Value("h\xc3\xa9llo"), Value(7)}), "the string has 6 bytes but its length (parameter 'n') is 7"));
    CHECK(h.call("touch_in_utf16_len", {Value("h\xc3\xa9llo\xf0\x9f\x98\x80"), Value(7)}).ret.is_integer());
    CHECK(has(h.error_of("touch_in_utf16_len", {Value("h\xc3\xa9llo\xf0\x9f\x98\x80"), Value(8)}),
              "the string has 7 code units but its length (parameter 'n') is 8"));
  }

  TEST_CASE("a callee told N elements can read and write N, through every count source") {
    Bound h(hostile);
    for (int n : {0, 1, 7, 1000}) {
      const CallResult filled = h.call("touch_out_i32", {Value(n)});
      const Value& out = h.out(filled, "out");
      REQUIRE(out.is<List>());
      REQUIRE(out.as<List>().size() == static_cast<std::size_t>(n));
      if (n) CHECK(I(out.as<List>().back()) == (n - 1) * 7);
      List in;
      for (int i = 0; i < n; ++i) in.push_back(Value(i));
      CHECK(I(h.call("touch_in_i32", {Value(in), Value(n)}).ret) == std::int64_t{n} * (n - 1) / 2);
      // A longer host list is fine: the callee reads the first n.
      in.push_back(Value(1000000));
      CHECK(I(h.call("touch_in_i32", {Value(in), Value(n)}).ret) == std::int64_t{n} * (n - 1) / 2);
    }
    CHECK(has(h.error_of("touch_in_i32", {Value(List{Value(1), Value(2)}), Value(3)}),
              "the array has 2 elements but its count is 3 (parameter 'n')"));
    CHECK(h.out(h.call("touch_out_i32_8"), "out").as<List>().size() == 8);
    CallResult r = h.call("touch_out_i32_ptr", {Value(5)});
    CHECK(h.out(r, "out").as<List>().size() == 5);
    // Bytes in and out of an inout array.
    r = h.call("touch_inout_u8", {Value(Bytes{{1, 2, 3}}), Value(3)});
    CHECK(I(r.ret) == 6);
    CHECK(h.out(r, "v").as<Bytes>().data == std::vector<std::uint8_t>{1 ^ 0x5a, 2 ^ 0x5a, 3 ^ 0x5a});
    CHECK(has(h.error_of("touch_inout_u8", {Value(Bytes{{1, 2}}), Value(3)}), "the array has 2 elements"));
    // Out strings fill their whole capacity; an inout string gets its capacity.
    for (int cap : {1, 2, 64}) {
      CHECK(h.out(h.call("touch_out_utf8", {Value(cap)}), "out").as<std::string>().size() == static_cast<std::size_t>(cap - 1));
      CHECK(I(h.call("touch_out_utf16", {Value(cap)}).ret) == cap - 1);
    }
    r = h.call("touch_inout_utf8", {Value("abc"), Value(8)});
    CHECK(h.out(r, "s") == Value("ABC----"));
    CHECK(has(h.error_of("touch_inout_utf8", {Value("abcdefgh"), Value(8)}), "the string needs 9 units with its terminator"));
    // A struct field counts the array its pointer field points to.
    CHECK(I(h.call("touch_in_counted", {Value(rec({{"n", Value(3)}, {"items", Value(List{Value(1), Value(2), Value(3)})}}))}).ret) == 6);
    CHECK(has(h.error_of("touch_in_counted", {Value(rec({{"n", Value(4)}, {"items", Value(List{Value(1), Value(2), Value(3)})}}))}),
              "the array has 3 elements but its count is 4 (field 'n')"));
    CHECK(has(h.error_of("touch_in_counted", {Value(rec({{"n", Value(-1)}, {"items", Value(List{})}}))}),
              "out of range for count field 'n'"));
  }

  TEST_CASE("a nullable array given null passes NULL whatever its count says: the callee's contract") {
    // fuzz-call-args found pinvoke.json's Header (items nullable, counted by n) read
    // through NULL with n = 3: the fixture broke the contract its typemap states.
    // `nullable` is the author's word that the callee accepts NULL (as glBufferData
    // takes NULL data with a size, or an optional array shares another's count), so
    // the engine passes it and does not second-guess the count.
    Bound p("tests/fixtures/pinvoke.json");
    auto header = [](int n, Value items) {
      return Value(rec({{"cb", Value(0)}, {"items", std::move(items)}, {"n", Value(n)}, {"name", Value("hdr")}}));
    };
    CHECK(I(p.call("sum_in_header", {header(3, Value())}).ret) == 3 * 1000);
    CHECK(I(p.call("sum_in_header", {header(0, Value())}).ret) == 3 * 1000);
    CHECK(I(p.call("sum_in_header", {header(2, Value(List{Value(5), Value(6)}))}).ret) == 3 * 1000 + 11);
    // Without `nullable`, null is refused before the call.
    Bound h(hostile);
    CHECK(has(h.error_of("touch_in_counted", {Value(rec({{"n", Value(3)}, {"items", Value()}}))}), "null is not allowed here"));
    CHECK(has(h.error_of("touch_in_i32", {Value(), Value(3)}), "null is not allowed here"));
  }

  TEST_CASE("what a callee reports after the call is read only within what it was given") {
    Bound h(hostile);
    // An inout struct whose count field the callee raised past the array it got.
    std::string e = h.error_of("grow_inout_counted", {Value(rec({{"n", Value(2)}, {"items", Value(List{Value(5), Value(6)})}}))});
    CHECK(has(e, "grow_inout_counted: inout parameter 0 'c'"));
    CHECK(has(e, "1002 units of 4 bytes (field 'n') are more than the buffer the callee was given holds (8 bytes)"));
    // An inout count that doubled: the out array is read within its 8 bytes.
    e = h.error_of("lie_inout_len", {Value(8)});
    CHECK(has(e, "out parameter 0 'dest'"));
    CHECK(has(e, "are more than the buffer the callee was given holds (8 bytes)"));
    // A double_nul list without its terminators: not read past its capacity.
    e = h.error_of("fill_out_unterminated", {Value(16)});
    CHECK(has(e, "the native string has no terminator within its buffer of 16 units"));
    // A full buffer without a terminator is taken whole, and no more.
    CHECK(h.out(h.call("fill_out_unterminated_nul", {Value(5)}), "out") == Value("xxxxx"));
    // Native memory of unknown size: a count beyond the limit is an error, not a huge read.
    e = h.error_of("lie_ret_i32");
    CHECK(has(e, "lie_ret_i32: return value: a buffer of 1099511627776 units of 4 bytes"));
    CHECK(has(e, "larger than the limit of 268435456 bytes"));
    // A cycle in native data ends at the nesting limit.
    e = h.error_of("cycle_ret_node");
    CHECK(has(e, "pointers nest deeper than 256 levels (a cycle in native data?)"));
  }

  TEST_CASE("a flexible array member is written only within the memory sized for it") {
    Bound f("tests/fixtures/pinvoke.json");
    const TypeId flex = f.tm->find_type("Flex");
    auto box = native_new(f.ctx.types(), flex, 1);  // the header only: room for no item
    std::string error;
    CHECK_FALSE(native_store(f.ctx.types(), *box,
                             Value(rec({{"n", Value(3)}, {"tag", Value(1)}, {"items", Value(List{Value(1.0), Value(2.0), Value(3.0)})}})), error));
    CHECK(has(error, "3 elements (field 'n') do not fit in the 0 bytes after the struct"));
    CHECK(native_store(f.ctx.types(), *box, Value(rec({{"n", Value(0)}, {"tag", Value(1)}, {"items", Value(List{})}})), error));
    // Passed as it is, the count the host wrote into its memory must fit in it:
    // the callee reads that many items (found by fuzz-c-api-values).
    std::uint32_t lie = 3;
    std::memcpy(box->data(), &lie, sizeof lie);  // Flex.n at offset 0
    const std::string e = f.error_of("sum_in_flex", {Value(box)});
    CHECK(has(e, "sum_in_flex: parameter 0 'f'"));
    CHECK(has(e, "the native memory holds 8 bytes but its field 'n' (3) needs 32 bytes"));
    lie = 0;
    std::memcpy(box->data(), &lie, sizeof lie);
    CHECK(D(f.call("sum_in_flex", {Value(box)}).ret) == 1);  // the tag native_store wrote, no items
    // Passed by pointer, the engine sizes it from the count.
    CHECK(D(f.call("sum_in_flex", {Value(rec({{"n", Value(2)}, {"tag", Value(1)}, {"items", Value(List{Value(1.5), Value(2.0)})}}))}).ret) == 4.5);  // tag + items
  }

  TEST_CASE("deep nesting: bounded in Value::parse_json and Value::from_json") {
    Value v;
    std::string error;
    CHECK_FALSE(Value::parse_json(nested(20000), v, error));
    CHECK(error == "JSON nesting is deeper than 256 levels");
    CHECK(Value::parse_json(nested(256), v, error));
    CHECK_FALSE(Value::parse_json(nested(257), v, error));
    const auto doc = nlohmann::ordered_json::parse(nested(20000));  // nlohmann parses iteratively
    CHECK_FALSE(Value::from_json(doc, v, error));
    CHECK(error == "JSON nesting is deeper than 256 levels");
    CHECK_THROWS_AS(Value::from_json(doc), std::invalid_argument);
    CHECK_THROWS_AS(Value::from_json(nlohmann::json::parse(nested(20000))), std::invalid_argument);
    CHECK(Value::from_json(nlohmann::ordered_json::parse(nested(256)), v, error));
    std::string objects;
    for (int i = 0; i < 300; ++i) objects += "{\"a\":";
    objects += "1" + std::string(300, '}');
    CHECK_FALSE(Value::parse_json(objects, v, error));
    CHECK_FALSE(Value::from_json(nlohmann::json::parse(objects), v, error));
    // A repeated key is an error, not a silent choice.
    CHECK_FALSE(Value::parse_json(R"({"x": 1, "y": 2, "x": 3})", v, error));
    CHECK(error == "the key 'x' appears twice in one object");
    CHECK_FALSE(Value::parse_json("[1, 2", v, error));
    CHECK(has(error, "not JSON at byte"));
    CHECK(Value::parse_json(R"({"x": 1, "y": [2, 3.5, "s", null, true]})", v, error));
    CHECK(v.to_json().dump() == R"({"x":1,"y":[2,3.5,"s",null,true]})");
  }

  TEST_CASE("integers convert exactly; lane and general path agree") {
    Bound h(hostile);
    struct Case {
      const char* fn;
      Value arg;
      const char* error;  // nullptr: succeeds
    };
    const Case cases[] = {
        {"echo_u64", Value(~std::uint64_t{0}), nullptr},
        {"echo_u64", Value(0x1p64), "is out of range for uint64 (0 to 18446744073709551615)"},
        {"echo_u64", Value(0x1p63), nullptr},
        {"echo_u64", Value(-1), "-1 is out of range for uint64"},
        {"echo_u64", Value(-0.0), nullptr},
        {"echo_i64", Value(INT64_MIN), nullptr},
        {"echo_i64", Value(-0x1p63), "is not exact for int64"},
        {"echo_i64", Value(0x1p63), "is out of range for int64"},
        {"echo_i64", Value(-0x1p62), nullptr},
        {"echo_i64", Value(1e300), "is out of range for int64"},
        {"echo_i64", Value(std::numeric_limits<double>::infinity()), "(not integral)"},
        {"echo_i64", Value(std::nan("")), "(not integral)"},
        {"echo_i8", Value(127.0), nullptr},
        {"echo_i8", Value(-128.0), nullptr},
        {"echo_i8", Value(128.0), "the number 128 is out of range for int8 (-128 to 127)"},
        {"echo_i8", Value(1.5), "(not integral)"},
        {"echo_i8", Value(-129), "-129 is out of range for int8 (-128 to 127)"},
        {"echo_u32", Value(4294967295.0), nullptr},
        {"echo_u32", Value(4294967296.0), "out of range for uint32"},
        {"echo_u32", Value("1"), "expected an integer for uint32, got a string"},
    };
    for (const Case& c : cases) {
      INFO(c.fn << " " << c.arg.describe());
      BothPaths r = both(h, c.fn, {c.arg});
      CHECK(r.ok == (c.error == nullptr));
      if (c.error) CHECK(has(r.error, c.error));
    }
    CHECK(I(both(h, "echo_i8", {Value(-128.0)}).result.ret) == -128);
    CHECK(both(h, "echo_u64", {Value(0x1p63)}).result.ret == Value(std::uint64_t{1} << 63));
    // 2^64 read from JSON text (nlohmann makes it a double) is refused, as is
    // an integer below -2^63 that rounds to exactly -2^63.
    Value v;
    std::string error;
    REQUIRE(Value::parse_json("18446744073709551616", v, error));
    CHECK(has(h.error_of("echo_u64", {v}), "out of range for uint64"));
    REQUIRE(Value::parse_json("-9223372036854775809", v, error));
    CHECK(has(h.error_of("echo_i64", {v}), "is not exact for int64"));
    REQUIRE(Value::parse_json("18446744073709551615", v, error));
    CHECK(h.call("echo_u64", {v}).ret == Value(~std::uint64_t{0}));
    REQUIRE(Value::parse_json("-9223372036854775808", v, error));
    CHECK(h.call("echo_i64", {v}).ret == Value(INT64_MIN));
    // The lane's rule is the general rule (numeric.hpp), value by value.
    LaneOp u8;
    u8.op = LaneOp::Op::uint;
    u8.size = 1;
    std::uint64_t bits = 0;
    CHECK(lane_to_native(u8, Value(255.0), bits));
    CHECK(bits == 255);
    CHECK_FALSE(lane_to_native(u8, Value(256), bits));
    LaneOp s16;
    s16.op = LaneOp::Op::sint;
    s16.size = 2;
    CHECK(lane_to_native(s16, Value(-32768), bits));
    CHECK(bits == static_cast<std::uint64_t>(std::int64_t{-32768}));
    CHECK_FALSE(lane_to_native(s16, Value(32768.0), bits));
  }

  TEST_CASE("float32: out of range is an error, rounding within range is fine; lane and general path agree") {
    Bound h(hostile);
    const double flt_max = std::numeric_limits<float>::max();
    const double inf = std::numeric_limits<double>::infinity();
    struct Case {
      Value arg;
      bool ok;
      double expect;
    };
    const Case cases[] = {
        {Value(3.5e38), false, 0},
        {Value(-3.5e38), false, 0},
        {Value(float32_limit), false, 0},                                   // rounds to infinity
        {Value(std::nextafter(float32_limit, 0.0)), true, flt_max},         // rounds down to FLT_MAX
        {Value(flt_max), true, flt_max},
        {Value(0.1), true, static_cast<double>(0.1f)},
        {Value(1e-50), true, 0.0},                                          // underflow is rounding, not range
        {Value(inf), true, inf},
        {Value(-inf), true, -inf},
        {Value(std::numeric_limits<std::int64_t>::max()), true, 0x1p63},
        {Value(~std::uint64_t{0}), true, 0x1p64},
        {Value(16777217), true, 16777216.0},                                // nearest, not through a double
    };
    for (const Case& c : cases) {
      INFO(c.arg.describe());
      BothPaths r = both(h, "echo_f32", {c.arg});
      CHECK(r.ok == c.ok);
      if (c.ok) CHECK(D(r.result.ret) == c.expect);
      else CHECK(has(r.error, "is out of range for float32"));
    }
    BothPaths n = both(h, "echo_f32", {Value(std::nan(""))});
    CHECK(n.ok);
    CHECK(std::isnan(D(n.result.ret)));
    CHECK(D(both(h, "echo_f64", {Value(1e308)}).result.ret) == 1e308);
    CHECK(D(both(h, "echo_f64", {Value(~std::uint64_t{0})}).result.ret) == 0x1p64);
  }

  TEST_CASE("infinities and NaN have a reversible JSON form") {
    const double inf = std::numeric_limits<double>::infinity();
    CHECK(Value(inf).to_json().dump() == R"({"float":"inf"})");
    CHECK(Value(-inf).to_json().dump() == R"({"float":"-inf"})");
    CHECK(Value(std::nan("")).to_json().dump() == R"({"float":"nan"})");
    CHECK(Value(1.5).to_json().dump() == "1.5");
    Value v;
    std::string error;
    for (const char* text : {R"({"float":"inf"})", R"({"float":"-inf"})"}) {
      REQUIRE(Value::parse_json(text, v, error));
      REQUIRE(v.is<double>());
      CHECK(v.to_json().dump() == text);
      CHECK(Value::from_json(nlohmann::json::parse(text)).to_json().dump() == text);
    }
    REQUIRE(Value::parse_json(R"({"float":"nan"})", v, error));
    CHECK(std::isnan(v.as<double>()));
    REQUIRE(Value::parse_json(R"({"float":"huge"})", v, error));
    CHECK(v.is<Record>());  // not the form: a record, which conversion then refuses
    // Addresses must fit: an overlong one is not silently clamped.
    REQUIRE(Value::parse_json(R"({"address":"0x1ffffffffffffffff"})", v, error));
    CHECK(v.is<Record>());
    REQUIRE(Value::parse_json(R"({"address":"0xffffffffffffffff"})", v, error));
    CHECK(v.is<Address>());
    CHECK(v.as<Address>().value == UINTPTR_MAX);
    REQUIRE(Value::parse_json(R"({"address":"0x"})", v, error));
    CHECK(v.is<Record>());
  }
}
