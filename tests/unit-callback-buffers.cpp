// marshal tests: callbacks given buffers by native code.
// A host function fills an out array (count constant, another parameter, or
// the pointee of an inout parameter), updates an inout array, writes an out
// string into the capacity it was given, or reads a non-terminated string
// whose length is another parameter; never past what native code lent, and
// within the library's buffer limit. The fixture (fixtures/callback_buffers.c)
// puts guards after every buffer and reports any write past the count.
#include "call_support.hpp"

#include "callbacks/callback.hpp"

#include <cstdint>

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;

extern "C" {
typedef int32_t (*cb_fill_i32)(int32_t* buf, int32_t n);
typedef int32_t (*cb_name)(char* buf, int32_t size);
int64_t fill_i32_via(cb_fill_i32 f, int32_t n, int32_t* result);
int64_t name_via(cb_name f, int32_t size, int32_t* result);
}

namespace {

std::shared_ptr<HostFunction> host(std::string name, std::function<bool(const std::vector<Value>&, Value&, std::string&)> fn) {
  return std::make_shared<HostFunction>(HostFunction{std::move(name), std::move(fn)});
}

// The host function's result: {"return": R, name: v}.
Value with_out(std::int64_t ret, const char* name, Value v) { return Value(rec({{"return", ret}, {name, std::move(v)}})); }

List ints(std::initializer_list<std::int64_t> xs) {
  List l;
  for (auto x : xs) l.emplace_back(x);
  return l;
}

// The fixture's checksum: sum of (i + 1) * buf[i]; elements the host did not
// write hold 7.
std::int64_t checksum(const std::vector<std::int64_t>& written, std::size_t n) {
  std::int64_t sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += static_cast<std::int64_t>(i + 1) * (i < written.size() ? written[i] : 7);
  return sum;
}

std::int64_t fnv1a(const std::string& s) {
  std::uint32_t h = 2166136261u;
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

// A host function that returns `out` for parameter `name` (and 1).
std::shared_ptr<HostFunction> writes(const char* name, Value out) {
  return host("writes", [name, out](const std::vector<Value>&, Value& r, std::string&) {
    r = with_out(1, name, out);
    return true;
  });
}

std::string take_callback_error() {
  std::string e;
  callback_take_error(e);
  return e;
}

}  // namespace

TEST_SUITE("callback-buffers") {
  TEST_CASE("an out array counted by another parameter: the host writes up to that count") {
    Bound f("tests/fixtures/callback_buffers.json");
    for (const char* fn : {"fill_out", "fill_ptr"}) {  // {"array": T} and {"ptr": {"array": T}}
      INFO(fn);
      std::int64_t seen_n = -1;
      auto fill = host("fill", [&](const std::vector<Value>& a, Value& r, std::string&) {
        seen_n = I(a[1]);
        CHECK(a[0].is_null());  // out: the host reads nothing
        r = with_out(1, "buf", Value(ints({10, 20, 30, 40, 50})));
        return true;
      });
      CallResult res = f.call(fn, {Value(fill), 5});
      CHECK(seen_n == 5);
      CHECK(I(res.ret) == checksum({10, 20, 30, 40, 50}, 5));  // every element, guards intact
      CHECK(I(f.out(res, "result")) == 1);
      // Fewer than the count: the rest stays as native code had it.
      res = f.call(fn, {Value(writes("buf", Value(ints({3, 4})))), 5});
      CHECK(I(res.ret) == checksum({3, 4}, 5));
      // More than the count: an error naming both, on_error to native code, nothing written.
      std::string e = f.error_of(fn, {Value(writes("buf", Value(ints({1, 2, 3, 4, 5, 6})))), 5});
      CHECK(e.find("out parameter 'buf'") != std::string::npos);
      CHECK(e.find("6 elements") != std::string::npos);
      CHECK(e.find("holds 5") != std::string::npos);
      CHECK(e.find("parameter 'n'") != std::string::npos);
    }
  }

  TEST_CASE("too many elements from the host: native code gets on_error and an untouched buffer") {
    Bound f("tests/fixtures/callback_buffers.json");
    std::string error;
    auto cb = f.lib->callback("FillOut", writes("buf", Value(ints({1, 2, 3, 4}))), error);
    INFO(error);
    REQUIRE(cb);
    int32_t result = 0;
    const int64_t sum = fill_i32_via(reinterpret_cast<cb_fill_i32>(cb->code()), 3, &result);
    CHECK(result == -9);
    CHECK(sum == checksum({}, 3));  // not -1: no guard touched; not written at all
    CHECK(take_callback_error().find("4 elements but native code's buffer holds 3") != std::string::npos);
    // The count native code gives is the bound, whatever the host returns: 0 takes nothing.
    const int64_t none = fill_i32_via(reinterpret_cast<cb_fill_i32>(cb->code()), 0, &result);
    CHECK(none == 0);
    CHECK(result == -9);
    CHECK(take_callback_error().find("holds 0") != std::string::npos);
    cb->release();
  }

  TEST_CASE("an inout array: the host sees count elements and replaces them") {
    Bound f("tests/fixtures/callback_buffers.json");
    List seen;
    auto twice = host("twice", [&](const std::vector<Value>& a, Value& r, std::string&) {
      seen = a[0].as<List>();
      List out;
      for (const Value& v : seen) out.emplace_back(I(v) * 2 + 1);
      r = with_out(1, "buf", Value(out));
      return true;
    });
    CallResult res = f.call("fill_inout", {Value(twice), 4});
    REQUIRE(seen.size() == 4);  // every element, not the first one only
    for (const Value& v : seen) CHECK(I(v) == 7);
    CHECK(I(res.ret) == checksum({15, 15, 15, 15}, 4));
    // An inout the host leaves out of its result stays as it was.
    auto keep = host("keep", [](const std::vector<Value>&, Value& r, std::string&) {
      r = Value(rec({{"return", 2}}));
      return true;
    });
    res = f.call("fill_inout", {Value(keep), 4});
    CHECK(I(res.ret) == checksum({}, 4));
    CHECK(I(f.out(res, "result")) == 2);
  }

  TEST_CASE("a constant count and a count behind an inout pointer") {
    Bound f("tests/fixtures/callback_buffers.json");
    CallResult res = f.call("fill4_via", {Value(writes("buf", Value(ints({1, 2, 3, 4}))))});
    CHECK(I(res.ret) == checksum({1, 2, 3, 4}, 4));
    CHECK(f.error_of("fill4_via", {Value(writes("buf", Value(ints({1, 2, 3, 4, 5}))))}).find("its count 4") !=
          std::string::npos);

    // FillLen(buf, size_t* len): the capacity is *len before the call; the host
    // reports how many it wrote in len.
    std::int64_t seen_len = -1;
    auto two = host("two", [&](const std::vector<Value>& a, Value& r, std::string&) {
      seen_len = I(a[1]);
      r = Value(rec({{"return", 1}, {"buf", Value(ints({1, 2}))}, {"len", 2}}));
      return true;
    });
    res = f.call("fill_len_via", {Value(two), 5});
    CHECK(seen_len == 5);
    CHECK(I(res.ret) == checksum({1, 2}, 5) * 1000 + 2);
    CHECK(f.error_of("fill_len_via", {Value(writes("buf", Value(ints({1, 2, 3, 4, 5, 6})))), 5})
              .find("6 elements but native code's buffer holds 5 (its count, parameter 'len')") != std::string::npos);
  }

  TEST_CASE("an out string: written into the capacity native code gave, terminator included") {
    Bound f("tests/fixtures/callback_buffers.json");
    std::int64_t seen_size = -1;
    auto name = host("name", [&](const std::vector<Value>& a, Value& r, std::string&) {
      seen_size = I(a[1]);
      r = with_out(5, "buf", Value("h\xc3\xa9llo"));
      return true;
    });
    CallResult res = f.call("name_via", {Value(name), 16});
    CHECK(seen_size == 16);
    CHECK(I(res.ret) == fnv1a("h\xc3\xa9llo"));
    CHECK(I(f.out(res, "result")) == 5);
    // Exactly full (6 bytes and the terminator in 7) fits; one more does not.
    CHECK(I(f.call("name_via", {Value(name), 7}).ret) == fnv1a("h\xc3\xa9llo"));
    CHECK(f.error_of("name_via", {Value(name), 6}).find("the buffer holds 6") != std::string::npos);
    CHECK(f.error_of("name_via", {Value(name), 0}).find("holds 0 units") != std::string::npos);

    std::string error;
    auto cb = f.lib->callback("Name", name, error);
    INFO(error);
    REQUIRE(cb);
    int32_t result = 0;
    CHECK(name_via(reinterpret_cast<cb_name>(cb->code()), 4, &result) == -2);  // untouched: no terminator, guards intact
    CHECK(result == -9);
    CHECK(!take_callback_error().empty());
    cb->release();
  }

  TEST_CASE("a non-terminated string whose length is another parameter: exactly len bytes") {
    Bound f("tests/fixtures/callback_buffers.json");
    std::vector<std::string> pieces;
    auto chars = host("chars", [&](const std::vector<Value>& a, Value& r, std::string&) {
      pieces.push_back(a[1].as<std::string>());
      r = Value(I(a[2]));
      return true;
    });
    const std::string text = "h\xc3\xa9llo, world";
    CallResult res = f.call("chars_via", {Value(chars), Value(), text, 4});
    CHECK(I(res.ret) == static_cast<std::int64_t>(text.size()));
    const std::vector<std::string> expected = {"h\xc3\xa9l", "lo, ", "worl", "d"};
    CHECK(pieces == expected);
    // A chunk that splits a UTF-8 sequence is not valid UTF-8 on its own: an error, not a guess.
    pieces.clear();
    CHECK(f.error_of("chars_via", {Value(chars), Value(), text, 2}).find("argument 1 's'") != std::string::npos);
  }

  TEST_CASE("callbacks are bounded by their library's max_buffer, not the default") {
    Bound f("tests/fixtures/callback_buffers.json");
    std::int64_t total = 0;
    auto sum = host("sum", [&](const std::vector<Value>& a, Value& r, std::string&) {
      total = 0;
      for (std::uint8_t b : a[0].as<Bytes>().data) total += b;
      r = Value(static_cast<std::int64_t>(a[0].as<Bytes>().data.size()));
      return true;
    });
    f.lib->set_max_buffer(64);
    CHECK(I(f.call("read_u8_via", {Value(sum), 64}).ret) == 64);
    CHECK(total == 63 * 64 / 2);
    std::string e = f.error_of("read_u8_via", {Value(sum), 65});
    CHECK(e.find("argument 0 'p'") != std::string::npos);
    CHECK(e.find("limit of 64 bytes") != std::string::npos);
    // What the host writes is bounded too.
    List many;
    for (int i = 0; i < 17; ++i) many.emplace_back(i);
    e = f.error_of("fill_out", {Value(writes("buf", Value(many))), 20});
    CHECK(e.find("limit of 64 bytes") != std::string::npos);
    f.lib->set_max_buffer(0);  // the default again
    CHECK(I(f.call("read_u8_via", {Value(sum), 65}).ret) == 65);
  }

  TEST_CASE("out data that would point into the callback's scratch is refused at load") {
    Context ctx;
    auto load = [&](const char* param_type) {
      std::string text = R"({"typemap": 1, "library": {"name": "x", "load": {"any": ["self"]}},
        "callbacks": {"F": {"returns": "void", "params": [{"name": "p", "type": )" +
                         std::string(param_type) + R"(, "dir": "out"}, {"name": "n", "type": "int"}]}}})";
      LoadResult r = ctx.load_text(text, "cb.json");
      std::string all;
      for (const auto& e : r.errors) all += e.text() + "\n";
      return all;
    };
    CHECK(load(R"({"ptr": "int32"})").empty());
    CHECK(load(R"({"array": "double", "count": {"param": "n"}})").empty());
    CHECK(load(R"({"string": "utf8", "capacity": {"param": "n"}})").empty());
    CHECK(load(R"({"ptr": {"string": "utf8"}})").find("/callbacks/F/params/0/type") != std::string::npos);
    CHECK(load(R"({"ptr": {"ptr": "int32"}})").find("gone when the host function returns") != std::string::npos);
    CHECK(load(R"({"array": {"string": "utf8"}, "count": {"param": "n"}})").find("gone when the host function returns") !=
          std::string::npos);
  }
}
