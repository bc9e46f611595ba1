// marshal tests: the stable C API (bindings/c/marshal.h), through libmarshal_c only.
// Statuses and per-thread messages, NULL arguments, values and containers,
// reference counting, and calls whose results match direct C calls.
#include <doctest/doctest.h>

#include "fixtures/callbacks.h"
#include "fixtures/objects.h"
#include "fixtures/pinvoke.h"
#include "marshal.h"
#include "c_api_values.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>
#include <zlib.h>

namespace {

struct Api {
  marshal_context* ctx = nullptr;
  marshal_library* lib = nullptr;
  explicit Api(const char* typemap) {
    REQUIRE(marshal_context_create(&ctx) == MARSHAL_OK);
    marshal_typemap* tm = nullptr;
    INFO(marshal_error_message(marshal_last_error()));
    REQUIRE(marshal_typemap_load(ctx, typemap, &tm) == MARSHAL_OK);
    REQUIRE(marshal_library_create(tm, &lib) == MARSHAL_OK);
  }
  ~Api() {
    marshal_library_release(lib);
    marshal_context_release(ctx);
  }
  marshal_function* fn(const char* name) {
    marshal_function* f = nullptr;
    INFO(marshal_error_message(marshal_last_error()));
    REQUIRE(marshal_library_function(lib, name, &f) == MARSHAL_OK);
    return f;
  }
};

}  // namespace

TEST_SUITE("c-api") {
  TEST_CASE("zlib crc32 and compress2 through the C API match zlib") {
    Api z("typemaps/zlib.json");
    const char* text = "the C API calls zlib";
    // crc32's len and compress2's sourceLen are computed by the engine (the typemap's "value").
    marshal_value* args[2] = {mv_uint64(0), mv_bytes(text, std::strlen(text))};
    marshal_result* r = nullptr;
    CHECK(marshal_function_arity(z.fn("crc32")) == 2);
    REQUIRE(marshal_function_call(z.fn("crc32"), args, 2, &r) == MARSHAL_OK);
    uint64_t crc = 0;
    REQUIRE(marshal_value_get_uint64(marshal_result_return(r), &crc) == MARSHAL_OK);
    CHECK(crc == ::crc32(0, reinterpret_cast<const Bytef*>(text), static_cast<uInt>(std::strlen(text))));
    CHECK(marshal_result_out_count(r) == 0);
    marshal_result_release(r);
    for (auto* a : args) marshal_value_release(a);

    marshal_value* cargs[3] = {mv_uint64(128), mv_bytes(text, std::strlen(text)),
                               mv_int64(6)};
    REQUIRE(marshal_function_call(z.fn("compress2"), cargs, 3, &r) == MARSHAL_OK);
    CHECK(marshal_result_out_count(r) == 2);
    CHECK(std::string(marshal_result_out_name(r, 0)) == "dest");
    const uint8_t* data = nullptr;
    size_t n = 0;
    REQUIRE(marshal_value_get_bytes(marshal_result_out(r, "dest"), &data, &n) == MARSHAL_OK);
    Bytef direct[128];
    uLongf dlen = sizeof direct;
    REQUIRE(::compress2(direct, &dlen, reinterpret_cast<const Bytef*>(text), std::strlen(text), 6) == Z_OK);
    CHECK(n == dlen);
    CHECK(std::memcmp(data, direct, n) == 0);
    int64_t dest_len = 0;
    CHECK(marshal_value_get_int64(marshal_result_out(r, "destLen"), &dest_len) == MARSHAL_OK);
    CHECK(dest_len == static_cast<int64_t>(dlen));
    CHECK(marshal_result_out(r, "nope") == nullptr);
    marshal_result_release(r);
    for (auto* a : cargs) marshal_value_release(a);
  }

  TEST_CASE("computed parameters given too: checked against the engine's value, then left out") {
    Api z("typemaps/zlib.json");
    marshal_value* args[3] = {mv_uint64(0), mv_bytes("hello", 5), mv_int64(5)};
    marshal_result* r = nullptr;
    REQUIRE(marshal_function_call(z.fn("crc32"), args, 3, &r) == MARSHAL_OK);
    uint64_t crc = 0;
    REQUIRE(marshal_value_get_uint64(marshal_result_return(r), &crc) == MARSHAL_OK);
    CHECK(crc == 907060870u);
    marshal_result_release(r);
    marshal_value_release(args[2]);
    args[2] = mv_int64(6);
    CHECK(marshal_function_call(z.fn("crc32"), args, 3, &r) == MARSHAL_ERROR_CALL);
    CHECK(r == nullptr);
    const marshal_error* e = marshal_last_error();
    CHECK(marshal_error_id(e) == MARSHAL_E_INVALID_ARGUMENT);
    CHECK(marshal_error_parameter_index(e) == 2);
    CHECK(std::string(marshal_error_parameter_name(e)) == "len");
    CHECK(std::string(marshal_error_got(e)) == "6");
    CHECK(std::string(marshal_error_expected(e)) == "5");
    CHECK(std::string(marshal_error_function(e)) == "crc32");
    CHECK(std::string(marshal_error_message(e)).find("crc32: parameter 2 'len' (uint): is computed by the engine "
                                                     "(count_of 'buf' = 5); got 6") != std::string::npos);
    // Four arguments are neither form: the arity error, before anything is read.
    marshal_value* four[4] = {args[0], args[1], args[2], args[2]};
    CHECK(marshal_function_call(z.fn("crc32"), four, 4, &r) == MARSHAL_ERROR_CALL);
    CHECK(marshal_error_id(marshal_last_error()) == MARSHAL_E_INVALID_ARGUMENT);
    for (auto* a : args) marshal_value_release(a);
  }

  TEST_CASE("errors: statuses, messages naming the place, NULL arguments") {
    marshal_context* ctx = nullptr;
    REQUIRE(marshal_context_create(&ctx) == MARSHAL_OK);
    marshal_typemap* tm = nullptr;
    CHECK(marshal_typemap_load(ctx, "tests/typemaps/bad/bare_bool.json", &tm) == MARSHAL_ERROR_TYPEMAP);
    CHECK(std::string(marshal_error_message(marshal_last_error())).rfind("tests/typemaps/bad/bare_bool.json: /types/S/struct/0/type: 'bool' is ambiguous", 0) == 0);
    CHECK(marshal_typemap_load(nullptr, "x", &tm) == MARSHAL_ERROR_ARGUMENT);
    CHECK(marshal_context_create(nullptr) == MARSHAL_ERROR_ARGUMENT);
    const char* missing = R"({"typemap": 1, "library": {"name": "gone", "load": {"linux": ["libgone.so.7"]}}})";
    REQUIRE(marshal_typemap_load_text(ctx, missing, std::strlen(missing), "gone.json", &tm) == MARSHAL_OK);
    marshal_library* lib = nullptr;
    CHECK(marshal_library_create(tm, &lib) == MARSHAL_ERROR_LIBRARY);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("cannot load library 'gone': tried libgone.so.7") != std::string::npos);
    REQUIRE(marshal_typemap_load(ctx, "typemaps/libc.json", &tm) == MARSHAL_OK);
    REQUIRE(marshal_library_create(tm, &lib) == MARSHAL_OK);
    marshal_function* fn = nullptr;
    CHECK(marshal_library_function(lib, "no_such", &fn) == MARSHAL_ERROR_BIND);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("no function 'no_such'") != std::string::npos);
    REQUIRE(marshal_library_function(lib, "div", &fn) == MARSHAL_OK);
    CHECK(marshal_function_arity(fn) == 2);
    marshal_value* one = mv_int64(1);
    marshal_result* r = nullptr;
    CHECK(marshal_function_call(fn, &one, 1, &r) == MARSHAL_ERROR_CALL);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("div: expects 2 arguments (numer, denom), got 1") != std::string::npos);
    CHECK(r == nullptr);
    marshal_value* bad[2] = {one, nullptr};
    CHECK(marshal_function_call(fn, bad, 2, &r) == MARSHAL_ERROR_ARGUMENT);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("argument 1 is NULL") != std::string::npos);
    marshal_value* big = mv_uint64(UINT64_MAX);
    marshal_value* args[2] = {big, one};
    CHECK(marshal_function_call(fn, args, 2, &r) == MARSHAL_ERROR_CALL);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("parameter 0 'numer' (int): 18446744073709551615 is out of range for int") != std::string::npos);
    marshal_value_release(big);
    marshal_value_release(one);
    marshal_library_release(lib);
    marshal_context_release(ctx);
  }

  TEST_CASE("the last error is per thread") {
    marshal_context* ctx = nullptr;
    marshal_typemap* tm = nullptr;
    REQUIRE(marshal_context_create(&ctx) == MARSHAL_OK);
    CHECK(marshal_typemap_load(ctx, "no/such/file.json", &tm) == MARSHAL_ERROR_TYPEMAP);
    std::string other;
    std::thread t([&] {
      other = marshal_error_message(marshal_last_error());
      marshal_value* v = mv_null();
      int b;
      CHECK(marshal_value_get_bool(v, &b) == MARSHAL_ERROR_ARGUMENT);
      marshal_value_release(v);
    });
    t.join();
    CHECK(other.empty());
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("no/such/file.json: /: cannot read the file") == 0);
    marshal_context_release(ctx);
  }

  TEST_CASE("values: scalars, strings, bytes, lists, records, JSON, reference counts") {
    marshal_value* rec = mv_record();
    marshal_value* x = mv_int64(-3);
    marshal_value* s = mv_string("h\xc3\xa9", 3);
    REQUIRE(marshal_record_set(rec, "x", x) == MARSHAL_OK);
    REQUIRE(marshal_record_set(rec, "s", s) == MARSHAL_OK);
    marshal_value* list = mv_list();
    REQUIRE(marshal_list_append(list, x) == MARSHAL_OK);
    REQUIRE(marshal_list_append(list, rec) == MARSHAL_OK);
    CHECK(marshal_list_append(x, x) == MARSHAL_ERROR_ARGUMENT);
    CHECK(marshal_list_size(list) == 2);
    CHECK(marshal_value_kind(marshal_list_get(list, 1)) == MARSHAL_RECORD);
    const marshal_value* inner = marshal_record_get(marshal_list_get(list, 1), "s");
    const char* data = nullptr;
    size_t n = 0;
    REQUIRE(marshal_value_get_string(inner, &data, &n) == MARSHAL_OK);
    CHECK(std::string(data, n) == "h\xc3\xa9");
    CHECK(marshal_record_size(rec) == 2);
    CHECK(std::string(marshal_record_name(rec, 1)) == "s");
    CHECK(marshal_list_get(list, 2) == nullptr);
    // A borrowed item may be retained past its container.
    marshal_value* kept = marshal_value_retain(const_cast<marshal_value*>(marshal_list_get(list, 0)));
    char* json = mv_json(list);
    CHECK(std::string(json) == R"([-3,{"x":-3,"s":"hé"}])");
    marshal_free(json);
    marshal_value_release(list);
    int64_t k = 0;
    CHECK(marshal_value_get_int64(kept, &k) == MARSHAL_OK);
    CHECK(k == -3);
    marshal_value_release(kept);
    uint64_t u = 0;
    CHECK(marshal_value_get_uint64(x, &u) == MARSHAL_ERROR_ARGUMENT);  // negative
    double d = 0;
    CHECK(marshal_value_get_double(x, &d) == MARSHAL_ERROR_ARGUMENT);
    marshal_value* parsed = nullptr;
    REQUIRE(marshal_value_create_from_json(R"({"base64":"AAEC"})", &parsed) == MARSHAL_OK);
    const uint8_t* bytes = nullptr;
    REQUIRE(marshal_value_get_bytes(parsed, &bytes, &n) == MARSHAL_OK);
    CHECK(n == 3);
    CHECK(bytes[2] == 2);
    marshal_value_release(parsed);
    CHECK(marshal_value_create_from_json("{nope", &parsed) == MARSHAL_ERROR_ARGUMENT);
    marshal_value_release(x);
    marshal_value_release(s);
    marshal_value_release(rec);
    marshal_value_release(nullptr);  // accepted
    CHECK(marshal_value_kind(nullptr) == MARSHAL_NULL);
  }

  TEST_CASE("the C API passes the same bytes as a direct call (checksum)") {
    Api f("tests/fixtures/pinvoke.json");
    const int32_t v[] = {5, -6, 7};
    const uint64_t direct = checksum_args(-7, 2.5, Point{1, 2}, v, 3, "bytes", MixBD{9, -1.5});
    marshal_value* point = nullptr;
    marshal_value* list = nullptr;
    marshal_value* mix = nullptr;
    REQUIRE(marshal_value_create_from_json(R"({"x": 1, "y": 2})", &point) == MARSHAL_OK);
    REQUIRE(marshal_value_create_from_json("[5, -6, 7]", &list) == MARSHAL_OK);
    REQUIRE(marshal_value_create_from_json(R"({"tag": 9, "v": -1.5})", &mix) == MARSHAL_OK);
    marshal_value* args[7] = {mv_int64(-7), mv_double(2.5), point, list, mv_uint64(3),
                              mv_string("bytes", 5), mix};
    marshal_result* r = nullptr;
    REQUIRE(marshal_function_call(f.fn("checksum_args"), args, 7, &r) == MARSHAL_OK);
    uint64_t sum = 0;
    REQUIRE(marshal_value_get_uint64(marshal_result_return(r), &sum) == MARSHAL_OK);
    CHECK(sum == direct);
    marshal_result_release(r);
    for (auto* a : args) marshal_value_release(a);
  }

  TEST_CASE("callbacks from C: function pointer, user data, destroy always called") {
    static int destroyed = 0;
    destroyed = 0;
    struct Data { int32_t offset; int calls; };
    Data data{100, 0};
    auto add_offset = [](void* user, const marshal_value* const* args, size_t n, marshal_value** result, const char** error) -> int {
      auto* d = static_cast<Data*>(user);
      int64_t v = 0;
      if (n != 1 || marshal_value_get_int64(args[0], &v) != MARSHAL_OK) {
        *error = "bad arguments";
        return 1;
      }
      ++d->calls;
      if (v < 0) {
        *error = "negative input";
        return 1;
      }
      *result = mv_int64(v + d->offset);
      return 0;
    };
    {
      Api f("tests/fixtures/callbacks.json");
      marshal_value* fn = mv_function("add_offset", add_offset, &data, [](void*) { ++destroyed; });
      REQUIRE(fn);
      CHECK(marshal_value_kind(fn) == MARSHAL_FUNCTION);
      marshal_value* five = mv_int64(5);
      marshal_value* args[2] = {fn, five};
      marshal_result* r = nullptr;
      REQUIRE(marshal_function_call(f.fn("apply_i32"), args, 2, &r) == MARSHAL_OK);
      int64_t got = 0;
      REQUIRE(marshal_value_get_int64(marshal_result_return(r), &got) == MARSHAL_OK);
      CHECK(got == apply_i32([](int32_t v) { return v + 100; }, 5));
      marshal_result_release(r);
      marshal_value* minus = mv_int64(-1);
      args[1] = minus;
      CHECK(marshal_function_call(f.fn("apply_i32"), args, 2, &r) == MARSHAL_ERROR_CALL);
      CHECK(std::string(marshal_error_message(marshal_last_error())).find("callback 'IntFn' failed: negative input") != std::string::npos);
      // Registered: created by the host, released by the host.
      marshal_value* cb = nullptr;
      REQUIRE(marshal_value_create_callback(f.lib, "IntFn", fn, &cb) == MARSHAL_OK);
      CHECK(marshal_value_kind(cb) == MARSHAL_CALLBACK);
      REQUIRE(marshal_function_call(f.fn("register_i32"), &cb, 1, &r) == MARSHAL_OK);
      marshal_result_release(r);
      marshal_value* seven = mv_int64(7);
      REQUIRE(marshal_function_call(f.fn("fire_registered"), &seven, 1, &r) == MARSHAL_OK);
      REQUIRE(marshal_value_get_int64(marshal_result_return(r), &got) == MARSHAL_OK);
      CHECK(got == 107);
      marshal_result_release(r);
      marshal_callback_deactivate(cb);
      CHECK(marshal_function_call(f.fn("fire_registered"), &seven, 1, &r) == MARSHAL_ERROR_CALL);
      CHECK(std::string(marshal_error_message(marshal_last_error())).find("callback 'IntFn' was called after it was released") != std::string::npos);
      marshal_value* none = mv_null();
      REQUIRE(marshal_function_call(f.fn("register_i32"), &none, 1, &r) == MARSHAL_OK);
      marshal_result_release(r);
      for (auto* v : {fn, five, minus, cb, seven, none}) marshal_value_release(v);
      CHECK(destroyed == 0);  // the library still holds the function (its closure is reused)
    }
    CHECK(destroyed == 1);  // exactly once, when the library let go
    CHECK(data.calls == 3);
    CHECK(mv_function("x", nullptr, &data, [](void*) { ++destroyed; }) == nullptr);
    CHECK(destroyed == 2);  // also when creation fails
  }

  TEST_CASE("a struct out parameter and errno through the C API") {
    Api f("tests/fixtures/pinvoke.json");
    marshal_result* r = nullptr;
    REQUIRE(marshal_function_call(f.fn("fill_out_header"), nullptr, 0, &r) == MARSHAL_OK);
    const marshal_value* h = marshal_result_out(r, "h");
    int64_t n = 0;
    REQUIRE(marshal_value_get_int64(marshal_record_get(h, "n"), &n) == MARSHAL_OK);
    Header direct{};
    fill_out_header(&direct);
    CHECK(n == direct.n);
    CHECK(marshal_list_size(marshal_record_get(h, "items")) == 3);
    CHECK(marshal_value_kind(marshal_result_return(r)) == MARSHAL_NULL);
    marshal_result_release(r);
    marshal_value* zero = mv_int64(0);
    REQUIRE(marshal_function_call(f.fn("fail_with_errno"), &zero, 1, &r) == MARSHAL_OK);
    int err = -1;
    CHECK(marshal_result_errno(r, &err) == 1);
    CHECK(err == 0);
    marshal_result_release(r);
    marshal_value_release(zero);
  }

  TEST_CASE("a reused result and values changed in place: no surprise for values the host kept") {
    Api f("tests/fixtures/pinvoke.json");
    marshal_result* r = mv_result();
    REQUIRE(r);
    marshal_value* a = mv_int64(0);
    marshal_value* b = mv_int64(3);
    marshal_value* args[2] = {a, b};
    int64_t x = 0;
    for (int64_t i = 0; i < 5; ++i) {
      REQUIRE(marshal_value_set_int64(a, i * 10) == MARSHAL_OK);
      REQUIRE(marshal_function_call_into(f.fn("add_i32"), args, 2, r) == MARSHAL_OK);
      REQUIRE(marshal_value_get_int64(marshal_result_return(r), &x) == MARSHAL_OK);
      CHECK(x == i * 10 + 3);
    }
    // A return value the host retained keeps its contents when the result is reused.
    auto* kept = marshal_value_retain(const_cast<marshal_value*>(marshal_result_return(r)));
    REQUIRE(marshal_value_set_int64(a, 100) == MARSHAL_OK);
    REQUIRE(marshal_function_call_into(f.fn("add_i32"), args, 2, r) == MARSHAL_OK);
    REQUIRE(marshal_value_get_int64(marshal_result_return(r), &x) == MARSHAL_OK);
    CHECK(x == 103);
    REQUIRE(marshal_value_get_int64(kept, &x) == MARSHAL_OK);
    CHECK(x == 43);
    marshal_value_release(kept);
    // A shared value may not change: the other holder would see it change.
    auto* shared = marshal_value_retain(const_cast<marshal_value*>(marshal_result_return(r)));
    CHECK(marshal_value_set_int64(shared, 1) == MARSHAL_ERROR_ARGUMENT);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("shared") != std::string::npos);
    REQUIRE(marshal_value_get_int64(marshal_result_return(r), &x) == MARSHAL_OK);
    CHECK(x == 103);
    marshal_value_release(shared);
    CHECK(marshal_value_set_int64(nullptr, 1) == MARSHAL_ERROR_ARGUMENT);
    // A failed call leaves the result as it was.
    REQUIRE(marshal_value_set_int64(a, int64_t{1} << 40) == MARSHAL_OK);
    CHECK(marshal_function_call_into(f.fn("add_i32"), args, 2, r) == MARSHAL_ERROR_CALL);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("parameter 0 'a' (int32)") != std::string::npos);
    REQUIRE(marshal_value_get_int64(marshal_result_return(r), &x) == MARSHAL_OK);
    CHECK(x == 103);
    CHECK(marshal_function_call_into(f.fn("add_i32"), args, 2, nullptr) == MARSHAL_ERROR_ARGUMENT);
    // Other kinds in place, and out parameters replaced call after call.
    marshal_value* d = mv_double(0);
    REQUIRE(marshal_value_set_double(d, 0.25) == MARSHAL_OK);
    marshal_value* dargs[2] = {d, d};
    REQUIRE(marshal_function_call_into(f.fn("add_f64"), dargs, 2, r) == MARSHAL_OK);
    double y = 0;
    REQUIRE(marshal_value_get_double(marshal_result_return(r), &y) == MARSHAL_OK);
    CHECK(y == 0.5);
    marshal_value* t = mv_bool(0);
    REQUIRE(marshal_value_set_bool(t, 1) == MARSHAL_OK);
    REQUIRE(marshal_function_call_into(f.fn("not_cbool"), &t, 1, r) == MARSHAL_OK);
    CHECK(marshal_value_kind(marshal_result_return(r)) == MARSHAL_BOOL);
    marshal_value* u = mv_uint64(0);
    REQUIRE(marshal_value_set_uint64(u, 18446744073709551615u) == MARSHAL_OK);
    REQUIRE(marshal_function_call_into(f.fn("echo_u64"), &u, 1, r) == MARSHAL_OK);
    uint64_t big = 0;
    REQUIRE(marshal_value_get_uint64(marshal_result_return(r), &big) == MARSHAL_OK);
    CHECK(big == 18446744073709551615u);
    marshal_value* pargs[2] = {a, b};
    for (int32_t i = 1; i <= 3; ++i) {
      REQUIRE(marshal_value_set_int64(a, i) == MARSHAL_OK);
      REQUIRE(marshal_function_call_into(f.fn("get_out_point"), pargs, 2, r) == MARSHAL_OK);
      REQUIRE(marshal_result_out_count(r) == 1);
      CHECK(std::string(marshal_result_out_name(r, 0)) == "out");
      REQUIRE(marshal_value_get_int64(marshal_record_get(marshal_result_out(r, "out"), "x"), &x) == MARSHAL_OK);
      CHECK(x == i);
      CHECK(marshal_value_kind(marshal_result_return(r)) == MARSHAL_NULL);
    }
    // The next call has no out parameters: none are left over.
    REQUIRE(marshal_function_call_into(f.fn("add_i32"), args, 2, r) == MARSHAL_OK);
    CHECK(marshal_result_out_count(r) == 0);
    for (marshal_value* v : {a, b, d, t, u}) marshal_value_release(v);
    marshal_result_release(r);
  }

  TEST_CASE("a reused result: out lists rewritten call after call, lists and items the host kept unchanged") {
    Api f("tests/fixtures/pinvoke.json");
    marshal_result* r = mv_result();
    marshal_value* n = mv_uint64(0);
    marshal_function* fill = f.fn("fill_out_i32_array");
    auto items = [](const marshal_value* list) {
      std::vector<int64_t> got(marshal_list_size(list));
      for (size_t i = 0; i < got.size(); ++i) REQUIRE(marshal_value_get_int64(marshal_list_get(list, i), &got[i]) == MARSHAL_OK);
      return got;
    };
    auto direct = [](size_t k) {
      std::vector<int32_t> out(k + 1);
      fill_out_i32_array(out.data(), k);
      return std::vector<int64_t>(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(k));
    };
    // Longer, shorter, empty and longer again: the list a call writes into
    // is the storage of an earlier call's list.
    for (size_t k : {5u, 300u, 7u, 300u, 0u, 64u, 64u}) {
      REQUIRE(marshal_value_set_uint64(n, k) == MARSHAL_OK);
      REQUIRE(marshal_function_call_into(fill, &n, 1, r) == MARSHAL_OK);
      const marshal_value* out = marshal_result_out(r, "out");
      REQUIRE(marshal_value_kind(out) == MARSHAL_LIST);
      CHECK(items(out) == direct(k));
    }
    // A list the host retained, and an item it retained, keep their contents.
    REQUIRE(marshal_value_set_uint64(n, 3) == MARSHAL_OK);
    REQUIRE(marshal_function_call_into(fill, &n, 1, r) == MARSHAL_OK);
    marshal_value* kept = marshal_value_retain(const_cast<marshal_value*>(marshal_result_out(r, "out")));
    for (int round = 0; round < 3; ++round) {  // the retained list is not reused: later calls build their own
      REQUIRE(marshal_value_set_uint64(n, 6 + static_cast<uint64_t>(round)) == MARSHAL_OK);
      REQUIRE(marshal_function_call_into(fill, &n, 1, r) == MARSHAL_OK);
      CHECK(items(marshal_result_out(r, "out")) == direct(6 + static_cast<size_t>(round)));
      CHECK(items(kept) == direct(3));
    }
    marshal_value_release(kept);
    // inout: items read before the next call are the new call's.
    marshal_function* twice = f.fn("fill_inout_i32_array");
    marshal_value* three = mv_uint64(3);
    marshal_value* item = marshal_value_retain(const_cast<marshal_value*>(marshal_list_get(marshal_result_out(r, "out"), 1)));
    for (int64_t base : {1, 10, 100}) {
      marshal_value* in = mv_list();
      for (int64_t k = 0; k < 3; ++k) {
        marshal_value* x = mv_int64(base * (k + 1));
        REQUIRE(marshal_list_append(in, x) == MARSHAL_OK);
        marshal_value_release(x);
      }
      marshal_value* args[2] = {in, three};
      REQUIRE(marshal_function_call_into(twice, args, 2, r) == MARSHAL_OK);
      const marshal_value* v = marshal_result_out(r, "v");
      int64_t second = 0;
      REQUIRE(marshal_value_get_int64(marshal_list_get(v, 1), &second) == MARSHAL_OK);
      CHECK(second == base * 4);
      CHECK(items(v) == std::vector<int64_t>{base * 2, base * 4, base * 6});
      marshal_value_release(in);
    }
    int64_t old = 0;
    REQUIRE(marshal_value_get_int64(item, &old) == MARSHAL_OK);
    CHECK(old == direct(8)[1]);  // an item of an earlier result, retained: its own value
    marshal_value_release(item);
    // The same parameter name with another element type (float, through the
    // lane's rule): the kinds change with the values.
    marshal_function* reverse = f.fn("reverse_inout_f32_array");
    for (double base : {1.5, -2.25}) {
      marshal_value* in = mv_list();
      for (int k = 0; k < 3; ++k) {
        marshal_value* x = mv_double(base * (k + 1));
        REQUIRE(marshal_list_append(in, x) == MARSHAL_OK);
        marshal_value_release(x);
      }
      marshal_value* args[2] = {in, three};
      REQUIRE(marshal_function_call_into(reverse, args, 2, r) == MARSHAL_OK);
      const marshal_value* v = marshal_result_out(r, "v");
      REQUIRE(marshal_list_size(v) == 3);
      for (size_t k = 0; k < 3; ++k) {
        CHECK(marshal_value_kind(marshal_list_get(v, k)) == MARSHAL_DOUBLE);
        double y = 0;
        REQUIRE(marshal_value_get_double(marshal_list_get(v, k), &y) == MARSHAL_OK);
        CHECK(y == base * static_cast<double>(3 - k));
      }
      marshal_value_release(in);
    }
    // A failed call leaves the result as it was.
    marshal_value* short_list = mv_list();
    marshal_value* x = mv_int64(1);
    REQUIRE(marshal_list_append(short_list, x) == MARSHAL_OK);
    marshal_value* bad[2] = {short_list, three};
    CHECK(marshal_function_call_into(twice, bad, 2, r) == MARSHAL_ERROR_CALL);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("the array has 1 elements but its count is 3") !=
          std::string::npos);
    double y = 0;
    REQUIRE(marshal_value_get_double(marshal_list_get(marshal_result_out(r, "v"), 0), &y) == MARSHAL_OK);
    CHECK(y == -2.25 * 3);
    marshal_value_release(x);
    marshal_value_release(short_list);
    marshal_value_release(three);
    marshal_value_release(n);
    marshal_result_release(r);
  }

  TEST_CASE("native memory from C: arrays without per-element conversion, `in` copied, errors") {
    Api f("tests/fixtures/pinvoke.json");
    marshal_value* mem = nullptr;
    REQUIRE(marshal_value_create_native(f.lib, "int32", 4, &mem) == MARSHAL_OK);
    CHECK(marshal_value_kind(mem) == MARSHAL_NATIVE);
    void* data = nullptr;
    size_t size = 0;
    REQUIRE(marshal_native_data(mem, &data, &size) == MARSHAL_OK);
    REQUIRE(size == 4 * sizeof(int32_t));
    const int32_t init[4] = {1, 2, 3, 4};
    std::memcpy(data, init, sizeof init);
    marshal_value* four = mv_uint64(4);
    marshal_value* args[2] = {mem, four};
    marshal_result* r = mv_result();
    REQUIRE(marshal_function_call_into(f.fn("sum_in_i32_array"), args, 2, r) == MARSHAL_OK);
    int64_t sum = 0;
    REQUIRE(marshal_value_get_int64(marshal_result_return(r), &sum) == MARSHAL_OK);
    CHECK(sum == 10);
    // `in`: the callee scribbles on a copy; the host's memory is unchanged.
    REQUIRE(marshal_function_call_into(f.fn("scribble_in_i32_array"), args, 2, r) == MARSHAL_OK);
    CHECK(std::memcmp(data, init, sizeof init) == 0);
    // `inout`: written in place.
    REQUIRE(marshal_function_call_into(f.fn("fill_inout_i32_array"), args, 2, r) == MARSHAL_OK);
    const int32_t twice[4] = {2, 4, 6, 8};
    CHECK(std::memcmp(data, twice, sizeof twice) == 0);
    // Structs of the typemap, by name.
    marshal_value* pts = nullptr;
    REQUIRE(marshal_value_create_native(f.lib, "Point", 3, &pts) == MARSHAL_OK);
    REQUIRE(marshal_native_data(pts, &data, &size) == MARSHAL_OK);
    CHECK(size == 3 * sizeof(Point));
    const Point p3[3] = {{1, 2}, {3, 4}, {5, 6}};
    std::memcpy(data, p3, sizeof p3);
    marshal_value* three = mv_uint64(3);
    marshal_value* pargs[2] = {pts, three};
    REQUIRE(marshal_function_call_into(f.fn("sum_in_point_array"), pargs, 2, r) == MARSHAL_OK);
    REQUIRE(marshal_value_get_int64(marshal_result_return(r), &sum) == MARSHAL_OK);
    CHECK(sum == sum_in_point_array(p3, 3));
    // Errors name the place and both types.
    marshal_value* wrong[2] = {pts, four};
    CHECK(marshal_function_call_into(f.fn("sum_in_i32_array"), wrong, 2, r) == MARSHAL_ERROR_CALL);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("native memory of Point given for an array of int32") != std::string::npos);
    marshal_value* none = nullptr;
    CHECK(marshal_value_create_native(f.lib, "Pointy", 1, &none) == MARSHAL_ERROR_ARGUMENT);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("unknown type 'Pointy'") != std::string::npos);
    CHECK(marshal_value_create_native(f.lib, "int32", 0, &none) == MARSHAL_ERROR_ARGUMENT);
    CHECK(marshal_native_data(four, &data, &size) == MARSHAL_ERROR_ARGUMENT);
    CHECK(none == nullptr);
    for (marshal_value* v : {mem, four, pts, three}) marshal_value_release(v);
    marshal_result_release(r);
  }

  TEST_CASE("objects from C: a class, methods, identity, a host object from a function table") {
    {
      Api o("tests/fixtures/objects.json");
      marshal_value* five = mv_int64(5);
      marshal_value* counter = nullptr;
      INFO(marshal_error_message(marshal_last_error()));
      REQUIRE(marshal_value_create_object(o.lib, "Counter", &five, 1, &counter) == MARSHAL_OK);
      CHECK(marshal_value_kind(counter) == MARSHAL_OBJECT);
      CHECK(std::string(marshal_object_interface(counter)) == "ICounter");
      marshal_value* three = mv_int64(3);
      marshal_result* r = nullptr;
      REQUIRE(marshal_object_call(counter, "Add", &three, 1, &r) == MARSHAL_OK);
      int64_t v = 0;
      REQUIRE(marshal_value_get_int64(marshal_result_return(r), &v) == MARSHAL_OK);
      CHECK(v == 8);
      marshal_result_release(r);
      marshal_value* widget = nullptr;
      REQUIRE(marshal_object_query(counter, "IWidget", &widget) == MARSHAL_OK);
      CHECK(marshal_object_same(counter, widget));
      marshal_value* fail = mv_int64(FX_E_FAIL);
      CHECK(marshal_object_call(widget, "Fail", &fail, 1, &r) == MARSHAL_ERROR_CALL);
      CHECK(std::string(marshal_error_message(marshal_last_error())).find("HRESULT 0x80004005 E_FAIL") != std::string::npos);
      // The error record names the method with its interface, and the typemap.
      CHECK(std::string(marshal_error_function(marshal_last_error())) == "IWidget.Fail");
      CHECK(std::string(marshal_error_file(marshal_last_error())) == "tests/fixtures/objects.json");
      CHECK(marshal_object_call(widget, "ICounter.Add", nullptr, 1, &r) == MARSHAL_ERROR_ARGUMENT);
      CHECK(std::string(marshal_error_function(marshal_last_error())) == "ICounter.Add");
      marshal_value* no_class = five;
      CHECK(marshal_value_create_object(o.lib, "NoSuchClass", nullptr, 0, &no_class) == MARSHAL_ERROR_CALL);
      CHECK(no_class == nullptr);
      CHECK(marshal_error_id(marshal_last_error()) == MARSHAL_E_NOT_FOUND);
      CHECK(std::string(marshal_error_function(marshal_last_error())) == "NoSuchClass");
      CHECK(marshal_object_query(counter, "IShape", nullptr) == MARSHAL_ERROR_ARGUMENT);
      marshal_value* none = nullptr;
      CHECK(marshal_object_query(counter, "IShape", &none) == MARSHAL_ERROR_CALL);
      CHECK(std::string(marshal_error_message(marshal_last_error())).find("does not implement IShape") != std::string::npos);

      // A host object: a function table plus user data, destroy called once.
      struct State {
        int64_t value = 0;
        int destroyed = 0;
      } state;
      marshal_host_method methods[2] = {
          {"Add",
           [](void* user, const marshal_value* const* args, size_t, marshal_value** result, const char**) {
             auto* st = static_cast<State*>(user);
             int64_t by = 0;
             marshal_value_get_int64(args[0], &by);
             st->value += by;
             *result = mv_int64(st->value);
             return 0;
           }},
          {"Get",
           [](void* user, const marshal_value* const*, size_t, marshal_value** result, const char**) {
             *result = mv_int64(static_cast<State*>(user)->value);
             return 0;
           }}};
      const char* ifaces[1] = {"ICounter"};
      marshal_value* host = mv_host_object("c-counter", ifaces, 1, methods, 2, &state,
                                                      [](void* user) { static_cast<State*>(user)->destroyed++; });
      REQUIRE(host);
      CHECK(marshal_value_kind(host) == MARSHAL_HOST_OBJECT);
      marshal_value* store = nullptr;
      REQUIRE(marshal_value_create_object(o.lib, "Store", nullptr, 0, &store) == MARSHAL_OK);
      REQUIRE(marshal_object_call(store, "Put", &host, 1, &r) == MARSHAL_OK);
      marshal_result_release(r);
      CHECK(marshal_host_object_refs(host) == 1);
      marshal_value* two = mv_int64(2);
      REQUIRE(marshal_object_call(store, "AddAll", &two, 1, &r) == MARSHAL_OK);
      marshal_result_release(r);
      CHECK(state.value == 2);
      marshal_value* zero = mv_int64(0);
      REQUIRE(marshal_object_call(store, "Get", &zero, 1, &r) == MARSHAL_OK);
      CHECK(marshal_object_same(marshal_result_out(r, "item"), host));  // the same host object back
      marshal_result_release(r);
      marshal_value_release(host);  // the store still holds it
      CHECK(state.destroyed == 0);
      REQUIRE(marshal_object_call(store, "Clear", nullptr, 0, &r) == MARSHAL_OK);
      marshal_result_release(r);
      CHECK(state.destroyed == 1);
      for (marshal_value* x : {five, counter, three, widget, fail, store, two, zero}) marshal_value_release(x);
      marshal_function* live = o.fn("objects_live");
      REQUIRE(marshal_function_call(live, nullptr, 0, &r) == MARSHAL_OK);
      REQUIRE(marshal_value_get_int64(marshal_result_return(r), &v) == MARSHAL_OK);
      CHECK(v == 0);
      marshal_result_release(r);
    }
    // Bad input names the problem.
    CHECK(marshal_object_call(nullptr, "Add", nullptr, 0, nullptr) == MARSHAL_ERROR_ARGUMENT);
    marshal_value* num = mv_int64(1);
    marshal_result* r = nullptr;
    CHECK(marshal_object_call(num, "Add", nullptr, 0, &r) == MARSHAL_ERROR_ARGUMENT);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("expected a native object, got the integer 1") != std::string::npos);
    marshal_value_release(num);
    int destroyed = 0;
    marshal_host_method broken[1] = {{nullptr, nullptr}};
    CHECK(mv_host_object("x", nullptr, 0, broken, 1, &destroyed, [](void* u) { ++*static_cast<int*>(u); }) ==
          nullptr);
    CHECK(destroyed == 1);
  }

  TEST_CASE("apartments from C: enter, tokens, a proxy from another thread, wrong apartment") {
    Api o("tests/fixtures/objects.json");
    REQUIRE(marshal_apartment_enter(1) == MARSHAL_OK);
    CHECK(marshal_apartment_enter(0) == MARSHAL_ERROR_CALL);
    CHECK(marshal_error_id(marshal_last_error()) == MARSHAL_E_WRONG_APARTMENT);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("already in STA") != std::string::npos);
    marshal_value* probe = nullptr;
    REQUIRE(marshal_value_create_object(o.lib, "ProbeApartment", nullptr, 0, &probe) == MARSHAL_OK);
    CHECK_FALSE(marshal_object_is_proxy(probe));
    uint64_t token = 0, back_token = 0;
    REQUIRE(marshal_interface_marshal(probe, &token) == MARSHAL_OK);
    REQUIRE(marshal_interface_marshal(probe, &back_token) == MARSHAL_OK);
    // Another thread in the MTA: the raw reference is refused, the token gives a proxy.
    std::atomic<bool> done{false};
    std::string wrong;
    int proxied = 0, same = 0;
    int64_t calls = 0;
    std::thread mta([&] {
      marshal_apartment_enter(0);
      marshal_result* r = nullptr;
      marshal_value* zero = mv_int64(0);
      if (marshal_object_call(probe, "Enter", &zero, 1, &r) != MARSHAL_OK) wrong = marshal_error_message(marshal_last_error());
      marshal_value* proxy = nullptr;
      if (marshal_interface_unmarshal(token, &proxy) == MARSHAL_OK) {
        proxied = marshal_object_is_proxy(proxy);
        same = marshal_object_same(proxy, probe);
        if (marshal_object_call(proxy, "Enter", &zero, 1, &r) == MARSHAL_OK) {
          marshal_value_get_int64(marshal_result_return(r), &calls);
          marshal_result_release(r);
        }
        marshal_value_release(proxy);
      }
      marshal_value_release(zero);
      marshal_apartment_leave();
      done = true;
    });
    marshal_status pumped = MARSHAL_OK;
    while (!done && pumped == MARSHAL_OK) pumped = marshal_apartment_pump(10, nullptr);  // this STA serves the proxy's calls
    mta.join();
    CHECK(pumped == MARSHAL_OK);
    CHECK(wrong.find("wrong apartment") != std::string::npos);
    CHECK(proxied == 1);
    CHECK(same == 1);
    CHECK(calls == 1);
    marshal_value* back = nullptr;
    REQUIRE(marshal_interface_unmarshal(back_token, &back) == MARSHAL_OK);
    CHECK_FALSE(marshal_object_is_proxy(back));  // home again
    CHECK(marshal_interface_unmarshal(back_token, &back) == MARSHAL_ERROR_CALL);
    marshal_value_release(back);
    marshal_value_release(probe);
    marshal_apartment_leave();
    marshal_apartment_leave();  // idempotent
    // Outside an STA there is no loop to pump.
    size_t ran = 99;
    CHECK(marshal_apartment_pump(0, &ran) == MARSHAL_ERROR_MISUSE);
    CHECK(ran == 0);
    CHECK(marshal_error_id(marshal_last_error()) == MARSHAL_E_WRONG_APARTMENT);
    CHECK(std::string(marshal_error_message(marshal_last_error())) ==
          "marshal_apartment_pump: this thread is not in a single-threaded apartment (marshal_apartment_enter(1))");
  }
}

// ---- misuse: every handle type checked, never undefined behaviour ----
// (run under ASan+UBSan: each case below was a use-after-free, a stale read
// or an overflow before handles were checked.)

namespace {

std::string last() { return marshal_error_message(marshal_last_error()); }

template <class H> H* forge(uintptr_t bits) { return reinterpret_cast<H*>(bits); }

// A library of its own (not through Api): the tests release it themselves.
marshal_library* open_library(marshal_context** ctx, const char* typemap) {
  REQUIRE(marshal_context_create(ctx) == MARSHAL_OK);
  marshal_typemap* tm = nullptr;
  REQUIRE(marshal_typemap_load(*ctx, typemap, &tm) == MARSHAL_OK);
  marshal_library* lib = nullptr;
  REQUIRE(marshal_library_create(tm, &lib) == MARSHAL_OK);
  return lib;
}

}  // namespace

TEST_SUITE("c-api") {
  TEST_CASE("misuse: double release and use after release of contexts, typemaps, libraries and functions") {
    marshal_context* ctx = nullptr;
    REQUIRE(marshal_context_create(&ctx) == MARSHAL_OK);
    CHECK(marshal_context_release(ctx) == MARSHAL_OK);
    CHECK(marshal_context_release(ctx) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_context_release: context handle already released");
    marshal_typemap* tm = nullptr;
    CHECK(marshal_typemap_load(ctx, "tests/fixtures/pinvoke.json", &tm) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_typemap_load: ctx: context handle used after release");
    CHECK(marshal_context_retain(ctx) == nullptr);
    CHECK(last() == "marshal_context_retain: context handle used after release");

    // A typemap dies with its context.
    REQUIRE(marshal_context_create(&ctx) == MARSHAL_OK);
    REQUIRE(marshal_typemap_load(ctx, "tests/fixtures/pinvoke.json", &tm) == MARSHAL_OK);
    REQUIRE(marshal_context_release(ctx) == MARSHAL_OK);
    marshal_library* lib = nullptr;
    CHECK(marshal_library_create(tm, &lib) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_library_create: tm: typemap handle used after its context was released");
    CHECK(lib == nullptr);

    // A function fails cleanly after its library was released (it does not keep it alive).
    lib = open_library(&ctx, "tests/fixtures/pinvoke.json");
    marshal_function* add = nullptr;
    REQUIRE(marshal_library_function(lib, "add_i32", &add) == MARSHAL_OK);
    CHECK(marshal_library_retain(lib) == lib);
    CHECK(marshal_library_release(lib) == MARSHAL_OK);  // one reference left: still usable
    CHECK(marshal_function_arity(add) == 2);
    CHECK(marshal_library_release(lib) == MARSHAL_OK);
    CHECK(marshal_library_release(lib) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_library_release: library handle already released");
    marshal_value* one = mv_int64(1);
    marshal_value* args[2] = {one, one};
    marshal_result* r = nullptr;
    CHECK(marshal_function_call(add, args, 2, &r) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_function_call: fn: function handle used after its library was released");
    CHECK(r == nullptr);
    CHECK(marshal_function_arity(add) == 0);
    CHECK(last() == "marshal_function_arity: fn: function handle used after its library was released");
    marshal_function* again = nullptr;
    CHECK(marshal_library_function(lib, "add_i32", &again) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_library_function: lib: library handle used after release");
    marshal_value* mem = nullptr;
    CHECK(marshal_value_create_native(lib, "int32", 1, &mem) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(marshal_library_retain(lib) == nullptr);
    // The library held the context: both are gone now.
    CHECK(marshal_context_release(ctx) == MARSHAL_OK);
    CHECK(marshal_context_release(ctx) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(marshal_value_release(one) == MARSHAL_OK);
  }

  TEST_CASE("misuse: results and values released twice or used after release; stale handles never revive") {
    Api f("tests/fixtures/pinvoke.json");
    marshal_value* a = mv_int64(2);
    marshal_value* args[2] = {a, a};
    marshal_result* r = nullptr;
    REQUIRE(marshal_function_call(f.fn("add_i32"), args, 2, &r) == MARSHAL_OK);
    const marshal_value* ret = marshal_result_return(r);
    CHECK(marshal_result_release(r) == MARSHAL_OK);
    CHECK(marshal_result_release(r) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_result_release: result handle already released");
    CHECK(marshal_result_return(r) == nullptr);
    CHECK(last() == "marshal_result_return: r: result handle used after release");
    CHECK(marshal_result_out_count(r) == 0);
    CHECK(marshal_function_call_into(f.fn("add_i32"), args, 2, r) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_function_call_into: result: result handle used after release");
    // The result's values went with it.
    int64_t x = 0;
    CHECK(marshal_value_get_int64(ret, &x) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_value_get_int64: v: value handle used after release (a borrowed value goes with its list, record or result)");

    CHECK(marshal_value_release(a) == MARSHAL_OK);
    CHECK(marshal_value_release(a) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_value_release: value handle already released");
    CHECK(marshal_value_get_int64(a, &x) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(marshal_value_kind(a) == MARSHAL_INVALID);
    CHECK(last() == "marshal_value_kind: v: value handle used after release (a borrowed value goes with its list, record or result)");
    CHECK(marshal_value_set_int64(a, 5) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(marshal_value_retain(a) == nullptr);
    CHECK(mv_json(a) == nullptr);
    CHECK(marshal_function_call(f.fn("add_i32"), args, 2, &r) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_function_call: argument 0: value handle used after release (a borrowed value goes with its list, record or result)");

    // The slot of a released value is reused, with a new generation: the old
    // handle stays dead while the new one works.
    bool reused = false;
    marshal_value* fresh[64];
    for (auto*& v : fresh) {
      v = mv_int64(7);
      reused = reused || ((reinterpret_cast<uintptr_t>(v) ^ reinterpret_cast<uintptr_t>(a)) & 0xffffffffu) == 0;
    }
    CHECK(reused);
    CHECK(marshal_value_get_int64(a, &x) == MARSHAL_ERROR_INVALID_HANDLE);
    for (auto* v : fresh) {
      REQUIRE(marshal_value_get_int64(v, &x) == MARSHAL_OK);
      CHECK(x == 7);
      CHECK(marshal_value_release(v) == MARSHAL_OK);
    }
  }

  TEST_CASE("misuse: a handle of another type, a made-up handle, NULL handles and NULL out-pointers") {
    Api f("tests/fixtures/pinvoke.json");
    marshal_result* r = mv_result();
    marshal_value* v = mv_int64(1);
    CHECK(marshal_value_release(reinterpret_cast<marshal_value*>(r)) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_value_release: the handle is a result handle, not a value handle");
    CHECK(marshal_result_release(reinterpret_cast<marshal_result*>(v)) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_result_release: the handle is a value handle, not a result handle");
    CHECK(marshal_context_release(reinterpret_cast<marshal_context*>(f.lib)) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_context_release: the handle is a library handle, not a context handle");
    marshal_typemap* tm = nullptr;
    CHECK(marshal_library_create(reinterpret_cast<marshal_typemap*>(f.fn("add_i32")), nullptr) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_library_create: tm: the handle is a function handle, not a typemap handle");
    marshal_value* args[2] = {v, reinterpret_cast<marshal_value*>(r)};
    CHECK(marshal_function_call_into(f.fn("add_i32"), args, 2, r) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_function_call_into: argument 1: the handle is a result handle, not a value handle");
    // Both still work: a wrong-type call changed nothing.
    args[1] = v;
    REQUIRE(marshal_function_call_into(f.fn("add_i32"), args, 2, r) == MARSHAL_OK);

    // Pointers that no function of the API returned.
    int local = 0;
    CHECK(marshal_value_release(forge<marshal_value>(reinterpret_cast<uintptr_t>(&local))) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last().rfind("marshal_value_release: ", 0) == 0);
    CHECK(marshal_value_kind(forge<marshal_value>(0xdeadbeef)) == MARSHAL_INVALID);
    CHECK(last() == "marshal_value_kind: v: not a value handle (not made by this API, or corrupted)");
    CHECK(marshal_value_kind(forge<marshal_value>(0x00000006ffffffffu)) == MARSHAL_INVALID);  // a value's kind, no such slot
    CHECK(last() == "marshal_value_kind: v: not a value handle (not made by this API, or corrupted)");
    CHECK(marshal_value_kind(forge<marshal_value>(reinterpret_cast<uintptr_t>(v) + (uintptr_t{1} << 36))) == MARSHAL_INVALID);  // a future generation
    CHECK(last() == "marshal_value_kind: v: not a value handle (not made by this API, or corrupted)");

    // NULL handles and NULL out-pointers: an argument error naming the parameter.
    int64_t x = 0;
    CHECK(marshal_value_get_int64(nullptr, &x) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_get_int64: v is NULL");
    CHECK(marshal_value_get_int64(v, nullptr) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_get_int64: out is NULL");
    void* data = nullptr;
    CHECK(marshal_native_data(v, &data, nullptr) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_native_data: size is NULL");
    marshal_function* fn = nullptr;
    CHECK(marshal_library_function(f.lib, nullptr, &fn) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_library_function: name is NULL");
    CHECK(marshal_library_function(nullptr, "add_i32", &fn) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_library_function: lib is NULL");
    marshal_result* out = nullptr;
    CHECK(marshal_function_call(f.fn("add_i32"), nullptr, 2, &out) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_function_call: args is NULL");
    CHECK(marshal_function_call(f.fn("add_i32"), args, 2, nullptr) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_function_call: out is NULL");
    CHECK(marshal_function_call(nullptr, args, 2, &out) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_function_call: fn is NULL");
    CHECK(marshal_result_out(r, nullptr) == nullptr);
    CHECK(last() == "marshal_result_out: name is NULL");
    CHECK(marshal_result_out_name(r, 3) == nullptr);
    CHECK(last() == "marshal_result_out_name: index 3 is out of range (0 out parameters)");
    CHECK(marshal_record_get(v, "x") == nullptr);
    CHECK(last() == "marshal_record_get: expected a record, got the integer 1");
    CHECK(marshal_list_size(v) == 0);
    CHECK(last() == "marshal_list_size: expected a list, got the integer 1");
    CHECK(marshal_typemap_load(nullptr, "x", &tm) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_typemap_load: ctx is NULL");
    CHECK(marshal_value_create_from_json("1", nullptr) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_create_from_json: out is NULL");
    CHECK(marshal_interface_marshal(v, nullptr) == MARSHAL_ERROR_ARGUMENT);
    // NULL is accepted by every release function.
    CHECK(marshal_value_release(nullptr) == MARSHAL_OK);
    CHECK(marshal_result_release(nullptr) == MARSHAL_OK);
    CHECK(marshal_library_release(nullptr) == MARSHAL_OK);
    CHECK(marshal_context_release(nullptr) == MARSHAL_OK);
    CHECK(marshal_callback_deactivate(nullptr) == MARSHAL_OK);
    CHECK(marshal_value_release(v) == MARSHAL_OK);
    CHECK(marshal_result_release(r) == MARSHAL_OK);
  }

  TEST_CASE("misuse: setters keep a value's kind; borrowed values are read-only and released by their owner") {
    marshal_value* s = mv_string("abc", 3);
    CHECK(marshal_value_set_int64(s, 1) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_set_int64: value is a string, not an integer (make a new value to change its kind)");
    const char* text = nullptr;
    size_t n = 0;
    REQUIRE(marshal_value_get_string(s, &text, &n) == MARSHAL_OK);  // unchanged
    CHECK(std::string(text, n) == "abc");
    marshal_value* i = mv_int64(-1);
    CHECK(marshal_value_set_double(i, 0.5) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_set_double: value is an integer, not a double (make a new value to change its kind)");
    CHECK(marshal_value_set_bool(i, 1) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_set_bool: value is an integer, not a bool (make a new value to change its kind)");
    CHECK(marshal_value_set_uint64(i, UINT64_MAX) == MARSHAL_OK);  // an integer stays an integer
    CHECK(marshal_value_kind(i) == MARSHAL_UINT64);
    marshal_value* nul = mv_null();
    CHECK(marshal_value_set_int64(nul, 1) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_set_int64: value is null, not an integer (make a new value to change its kind)");
    CHECK(marshal_value_kind(nul) == MARSHAL_NULL);
    marshal_value* d = mv_double(1);
    CHECK(marshal_value_set_uint64(d, 1) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_set_uint64: value is a double, not an integer (make a new value to change its kind)");

    // Borrowed: items of a list (and values of a result) belong to it.
    marshal_value* list = nullptr;
    REQUIRE(marshal_value_create_from_json("[1, [2, 3]]", &list) == MARSHAL_OK);
    auto* item = const_cast<marshal_value*>(marshal_list_get(list, 0));
    auto* inner = const_cast<marshal_value*>(marshal_list_get(list, 1));
    CHECK(marshal_value_set_int64(item, 5) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_set_int64: the value is borrowed (an item of a list or record, a value of a result, or an argument of a host function); it is read-only");
    CHECK(marshal_list_append(inner, item) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last().find("marshal_list_append: the container is borrowed") == 0);
    CHECK(marshal_value_release(item) == MARSHAL_ERROR_MISUSE);
    CHECK(last() == "marshal_value_release: value is borrowed (an item of a list or record, a value of a result, or an argument of a host function): its owner releases it; retain it to keep it");
    int64_t x = 0;
    REQUIRE(marshal_value_get_int64(item, &x) == MARSHAL_OK);  // still there
    CHECK(x == 1);
    // Retained, it is the host's too, and outlives the list.
    CHECK(marshal_value_retain(item) == item);
    CHECK(marshal_value_release(list) == MARSHAL_OK);
    CHECK(marshal_list_size(inner) == 0);  // went with the list
    CHECK(last() == "marshal_list_size: list: value handle used after release (a borrowed value goes with its list, record or result)");
    REQUIRE(marshal_value_get_int64(item, &x) == MARSHAL_OK);
    CHECK(marshal_value_set_int64(item, 9) == MARSHAL_OK);  // now the host's alone
    CHECK(marshal_value_release(item) == MARSHAL_OK);
    CHECK(marshal_value_release(item) == MARSHAL_ERROR_INVALID_HANDLE);

    // A list changed after an item was read: the old item handle is dead, not stale data.
    marshal_value* l2 = mv_list();
    REQUIRE(marshal_list_append(l2, s) == MARSHAL_OK);
    const marshal_value* first = marshal_list_get(l2, 0);
    REQUIRE(marshal_list_append(l2, l2) == MARSHAL_OK);  // itself, copied first
    CHECK(marshal_value_get_string(first, &text, &n) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(marshal_list_size(marshal_list_get(l2, 1)) == 1);
    marshal_value* rec = mv_record();
    REQUIRE(marshal_record_set(rec, "self", rec) == MARSHAL_OK);
    REQUIRE(marshal_record_set(rec, "self", rec) == MARSHAL_OK);
    CHECK(marshal_record_size(marshal_record_get(rec, "self")) == 1);
    for (marshal_value* v : {s, i, nul, d, l2, rec}) CHECK(marshal_value_release(v) == MARSHAL_OK);
  }

  TEST_CASE("misuse: counts and lengths (negative, huge, without NUL)") {
    Api f("tests/fixtures/pinvoke.json");
    marshal_value* one = mv_int64(1);
    marshal_value* two_args[2] = {one, one};
    marshal_result* r = nullptr;
    CHECK(marshal_function_call(f.fn("add_i32"), two_args, static_cast<size_t>(-1), &r) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_function_call: nargs is 18446744073709551615, more than 65535 (a negative count?)");
    // A count that cannot be right is not used to read the host's array (ASan
    // would see args[2] read past this 2-element array).
    CHECK(marshal_function_call(f.fn("add_i32"), two_args, 3, &r) == MARSHAL_ERROR_CALL);
    CHECK(last().find("add_i32: expects 2 arguments (a, b), got 3") != std::string::npos);
    CHECK(marshal_function_call(f.fn("add_i32"), two_args, 40, &r) == MARSHAL_ERROR_CALL);
    CHECK(last().find("expects 2 arguments (a, b), got 40") != std::string::npos);
    CHECK(r == nullptr);
    marshal_value* obj = nullptr;
    CHECK(marshal_value_create_object(f.lib, "Nothing", two_args, static_cast<size_t>(-2), &obj) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_create_object: nargs is 18446744073709551614, more than 65535 (a negative count?)");

    CHECK(mv_string("abc", static_cast<size_t>(-1)) == nullptr);
    CHECK(last() == "marshal_value_create_string: length is 18446744073709551615, more than PTRDIFF_MAX (a negative count?)");
    CHECK(mv_bytes("abc", static_cast<size_t>(-3)) == nullptr);
    CHECK(last() == "marshal_value_create_bytes: length is 18446744073709551613, more than PTRDIFF_MAX (a negative count?)");
    CHECK(mv_string(nullptr, 5) == nullptr);
    CHECK(last() == "marshal_value_create_string: utf8 is NULL with a length of 5");
    CHECK(mv_bytes(nullptr, 2) == nullptr);
    CHECK(last() == "marshal_value_create_bytes: data is NULL with a length of 2");
    marshal_value* empty = mv_string(nullptr, 0);
    const char* text = nullptr;
    size_t n = 9;
    REQUIRE(marshal_value_get_string(empty, &text, &n) == MARSHAL_OK);
    CHECK(n == 0);
    // Exactly `length` bytes are read: no NUL needed (ASan checks the bound).
    auto* unterminated = new char[3]{'a', 'b', 'c'};
    marshal_value* abc = mv_string(unterminated, 3);
    marshal_value* raw = mv_bytes(unterminated, 3);
    delete[] unterminated;
    REQUIRE(marshal_value_get_string(abc, &text, &n) == MARSHAL_OK);
    CHECK(std::string(text, n) == "abc");
    const char* tm_text = R"({"typemap": 1, "constants": {"A": 1}})";
    std::vector<char> exact(tm_text, tm_text + std::strlen(tm_text));  // no NUL after it
    marshal_typemap* tm = nullptr;
    CHECK(marshal_typemap_load_text(f.ctx, exact.data(), exact.size(), "exact.json", &tm) == MARSHAL_OK);
    CHECK(marshal_typemap_load_text(f.ctx, exact.data(), static_cast<size_t>(-1), "x.json", &tm) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_typemap_load_text: length is 18446744073709551615, more than PTRDIFF_MAX (a negative count?)");
    int destroyed = 0;
    marshal_host_method m[1] = {{"Get", [](void*, const marshal_value* const*, size_t, marshal_value**, const char**) { return 0; }}};
    CHECK(mv_host_object("x", nullptr, 0, m, static_cast<size_t>(-1), &destroyed,
                                    [](void* u) { ++*static_cast<int*>(u); }) == nullptr);
    CHECK(destroyed == 1);
    for (marshal_value* v : {one, empty, abc, raw}) CHECK(marshal_value_release(v) == MARSHAL_OK);
  }

  TEST_CASE("native memory: the size is checked before anything is allocated (count x size overflow, the limit)") {
    Api f("tests/fixtures/pinvoke.json");
    marshal_value* mem = nullptr;
    // 4 x (2^62 + 1) wraps to 4 bytes: refused, not a 4-byte box claiming 2^62 + 1 elements.
    CHECK(marshal_value_create_native(f.lib, "int32", (size_t{1} << 62) + 1, &mem) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_create_native: 4611686018427387905 elements of int32 (4 bytes each) overflow size_t");
    CHECK(marshal_value_create_native(f.lib, "Point", SIZE_MAX, &mem) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_create_native: 18446744073709551615 elements of Point (8 bytes each) overflow size_t");
    // Fits in size_t but is more than the library allows: refused at once, nothing allocated.
    CHECK(marshal_value_create_native(f.lib, "int32", size_t{1} << 29, &mem) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_create_native: 536870912 elements of int32 are 2147483648 bytes, more than the library's "
                    "limit of 268435456 (marshal_library_set_max_alloc)");
    CHECK(marshal_value_create_native(f.lib, "uint8", size_t{1} << 40, &mem) == MARSHAL_ERROR_ARGUMENT);
    CHECK(mem == nullptr);
    REQUIRE(marshal_library_set_max_alloc(f.lib, 64) == MARSHAL_OK);
    CHECK(marshal_value_create_native(f.lib, "int32", 17, &mem) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_create_native: 17 elements of int32 are 68 bytes, more than the library's limit of 64 "
                    "(marshal_library_set_max_alloc)");
    REQUIRE(marshal_value_create_native(f.lib, "int32", 16, &mem) == MARSHAL_OK);
    void* data = nullptr;
    size_t size = 0;
    REQUIRE(marshal_native_data(mem, &data, &size) == MARSHAL_OK);
    CHECK(size == 64);
    CHECK(marshal_library_set_max_alloc(f.lib, 0) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_library_set_max_alloc: bytes is 0 (expected 1 to PTRDIFF_MAX)");
    CHECK(marshal_value_release(mem) == MARSHAL_OK);
  }

  TEST_CASE("misuse: releasing a library and its context while a result, native memory and an object from it live") {
    marshal_context* ctx = nullptr;
    marshal_library* lib = open_library(&ctx, "tests/fixtures/pinvoke.json");
    marshal_function* fn = nullptr;
    REQUIRE(marshal_library_function(lib, "get_out_point", &fn) == MARSHAL_OK);
    marshal_value* x = mv_int64(4);
    marshal_value* args[2] = {x, x};
    marshal_result* r = nullptr;
    REQUIRE(marshal_function_call(fn, args, 2, &r) == MARSHAL_OK);
    marshal_value* mem = nullptr;
    REQUIRE(marshal_value_create_native(lib, "Point", 2, &mem) == MARSHAL_OK);
    CHECK(marshal_library_release(lib) == MARSHAL_OK);
    CHECK(marshal_context_release(ctx) == MARSHAL_OK);
    // The result holds host values only: still readable.
    int64_t got = 0;
    REQUIRE(marshal_value_get_int64(marshal_record_get(marshal_result_out(r, "out"), "x"), &got) == MARSHAL_OK);
    CHECK(got == 4);
    char* json = mv_json(marshal_result_out(r, "out"));
    CHECK(std::string(json) == R"({"x":4,"y":4})");
    marshal_free(json);
    void* data = nullptr;
    size_t size = 0;
    REQUIRE(marshal_native_data(mem, &data, &size) == MARSHAL_OK);
    CHECK(size == 2 * sizeof(Point));
    CHECK(marshal_result_release(r) == MARSHAL_OK);
    CHECK(marshal_value_release(mem) == MARSHAL_OK);

    // An object keeps its (engine) library and the types of its context alive:
    // calling it, and releasing it last, uses them.
    lib = open_library(&ctx, "tests/fixtures/objects.json");
    marshal_value* counter = nullptr;
    marshal_value* five = mv_int64(5);
    REQUIRE(marshal_value_create_object(lib, "Counter", &five, 1, &counter) == MARSHAL_OK);
    CHECK(marshal_library_release(lib) == MARSHAL_OK);
    CHECK(marshal_context_release(ctx) == MARSHAL_OK);
    REQUIRE(marshal_object_call(counter, "Add", &x, 1, &r) == MARSHAL_OK);
    REQUIRE(marshal_value_get_int64(marshal_result_return(r), &got) == MARSHAL_OK);
    CHECK(got == 9);
    CHECK(marshal_result_release(r) == MARSHAL_OK);
    CHECK(std::string(marshal_object_interface(counter)) == "ICounter");
    CHECK(marshal_value_release(counter) == MARSHAL_OK);  // the last: Release, then the library, then its context
    CHECK(marshal_value_release(five) == MARSHAL_OK);
    CHECK(marshal_value_release(x) == MARSHAL_OK);
  }

  TEST_CASE("misuse: callbacks released twice, and what a host function does with its call's handles") {
    struct State {
      marshal_library* lib = nullptr;
      marshal_result* result = nullptr;
      marshal_value* arg = nullptr;  // the outer call's second argument
      marshal_status set_arg = MARSHAL_OK;
      std::string set_arg_error;
      marshal_status release_lib = MARSHAL_ERROR_INTERNAL, release_result = MARSHAL_ERROR_INTERNAL,
                     release_arg = MARSHAL_ERROR_INTERNAL, release_again = MARSHAL_OK;
      std::string again_error;
    } st;
    marshal_context* ctx = nullptr;
    st.lib = open_library(&ctx, "tests/fixtures/callbacks.json");
    CHECK(marshal_context_release(ctx) == MARSHAL_OK);  // the library keeps it
    marshal_function* apply = nullptr;
    REQUIRE(marshal_library_function(st.lib, "apply_i32", &apply) == MARSHAL_OK);
    // Drops the last reference of everything the running call uses.
    auto rude = [](void* user, const marshal_value* const* args, size_t, marshal_value** result, const char**) -> int {
      auto* s = static_cast<State*>(user);
      s->set_arg = marshal_value_set_int64(s->arg, 100);
      s->set_arg_error = marshal_error_message(marshal_last_error());
      s->release_arg = marshal_value_release(s->arg);
      s->release_again = marshal_value_release(s->arg);
      s->again_error = marshal_error_message(marshal_last_error());
      s->release_result = marshal_result_release(s->result);
      s->release_lib = marshal_library_release(s->lib);
      int64_t v = 0;
      marshal_value_get_int64(args[0], &v);
      *result = mv_int64(v * 2);
      return 0;
    };
    marshal_value* fn = mv_function("rude", rude, &st, nullptr);
    st.arg = mv_int64(21);
    st.result = mv_result();
    marshal_value* args[2] = {fn, st.arg};
    REQUIRE(marshal_function_call_into(apply, args, 2, st.result) == MARSHAL_OK);
    CHECK(st.set_arg == MARSHAL_ERROR_MISUSE);
    CHECK(st.set_arg_error == "marshal_value_set_int64: value is an argument of a call in progress on this thread (a host function may not change it)");
    CHECK(st.release_arg == MARSHAL_OK);  // deferred to the end of the call
    CHECK(st.release_again == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(st.again_error == "marshal_value_release: value handle already released");
    CHECK(st.release_result == MARSHAL_OK);
    CHECK(st.release_lib == MARSHAL_OK);
    // All three are gone now that the call returned.
    CHECK(marshal_result_release(st.result) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(marshal_library_release(st.lib) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(marshal_value_release(st.arg) == MARSHAL_ERROR_INVALID_HANDLE);
    marshal_result* r = nullptr;
    CHECK(marshal_function_call(apply, args, 2, &r) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_function_call: fn: function handle used after its library was released");
    CHECK(marshal_value_release(fn) == MARSHAL_OK);

    Api f("tests/fixtures/callbacks.json");
    // A host function that releases an argument it only borrowed, or returns a dead handle.
    auto drops_arg = [](void*, const marshal_value* const* args, size_t, marshal_value** result, const char**) -> int {
      const marshal_status st = marshal_value_release(const_cast<marshal_value*>(args[0]));
      *result = mv_int64(st == MARSHAL_ERROR_MISUSE ? 1 : 0);
      return 0;
    };
    marshal_value* g = mv_function("drops_arg", drops_arg, nullptr, nullptr);
    marshal_value* seven = mv_int64(7);
    marshal_value* gargs[2] = {g, seven};
    REQUIRE(marshal_function_call(f.fn("apply_i32"), gargs, 2, &r) == MARSHAL_OK);
    int64_t refused = 0;
    REQUIRE(marshal_value_get_int64(marshal_result_return(r), &refused) == MARSHAL_OK);
    CHECK(refused == 1);
    CHECK(marshal_result_release(r) == MARSHAL_OK);
    auto dead = [](void*, const marshal_value* const*, size_t, marshal_value** result, const char**) -> int {
      *result = mv_int64(1);
      marshal_value_release(*result);
      return 0;
    };
    marshal_value* h = mv_function("dead", dead, nullptr, nullptr);
    gargs[0] = h;
    CHECK(marshal_function_call(f.fn("apply_i32"), gargs, 2, &r) == MARSHAL_ERROR_CALL);
    CHECK(last().find("the host function's result: value handle used after release") != std::string::npos);
    auto echo = [](void*, const marshal_value* const* args, size_t, marshal_value** result, const char**) -> int {
      *result = const_cast<marshal_value*>(args[0]);  // borrowed, not retained: copied, left to its owner
      return 0;
    };
    marshal_value* e = mv_function("echo", echo, nullptr, nullptr);
    gargs[0] = e;
    REQUIRE(marshal_function_call(f.fn("apply_i32"), gargs, 2, &r) == MARSHAL_OK);
    int64_t got = 0;
    REQUIRE(marshal_value_get_int64(marshal_result_return(r), &got) == MARSHAL_OK);
    CHECK(got == 7);
    CHECK(marshal_result_release(r) == MARSHAL_OK);

    // A registered callback released twice; a value that is not a callback.
    marshal_value* cb = nullptr;
    REQUIRE(marshal_value_create_callback(f.lib, "IntFn", e, &cb) == MARSHAL_OK);
    CHECK(marshal_callback_deactivate(cb) == MARSHAL_OK);
    CHECK(marshal_callback_deactivate(cb) == MARSHAL_ERROR_MISUSE);
    CHECK(last() == "marshal_callback_deactivate: callback 'IntFn' already deactivated (by marshal_callback_deactivate or with its library)");
    CHECK(marshal_error_id(marshal_last_error()) == MARSHAL_E_RELEASED);
    CHECK(marshal_callback_deactivate(seven) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_callback_deactivate: expected a callback (marshal_value_create_callback), got the integer 7");
    marshal_value* not_made = seven;
    CHECK(marshal_value_create_callback(f.lib, "IntFn", seven, &not_made) == MARSHAL_ERROR_ARGUMENT);
    CHECK(last() == "marshal_value_create_callback: expected a function value (marshal_value_create_function), got the integer 7");
    CHECK(not_made == nullptr);  // a failed constructor leaves NULL
    // Deactivated is not released: the handle lives until marshal_value_release.
    CHECK(marshal_value_kind(cb) == MARSHAL_CALLBACK);
    CHECK(marshal_value_release(cb) == MARSHAL_OK);
    CHECK(marshal_callback_deactivate(cb) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(last() == "marshal_callback_deactivate: callback: value handle used after release (a borrowed value goes with its list, record or result)");
    for (marshal_value* v : {g, seven, h, e}) CHECK(marshal_value_release(v) == MARSHAL_OK);
  }

  TEST_CASE("misuse from threads: shared references, racing double releases, handles outliving their thread") {
    marshal_value* shared = mv_int64(42);
    std::vector<std::thread> threads;
    std::atomic<int> bad{0};
    for (int t = 0; t < 8; ++t)
      threads.emplace_back([&] {
        for (int i = 0; i < 2000; ++i) {
          marshal_value* mine = marshal_value_retain(shared);
          int64_t x = 0;
          if (!mine || marshal_value_get_int64(mine, &x) != MARSHAL_OK || x != 42) ++bad;
          marshal_value* tmp = mv_int64(i);
          if (marshal_value_release(tmp) != MARSHAL_OK || marshal_value_release(mine) != MARSHAL_OK) ++bad;
        }
      });
    for (auto& t : threads) t.join();
    threads.clear();
    CHECK(bad == 0);
    CHECK(marshal_value_release(shared) == MARSHAL_OK);
    CHECK(marshal_value_release(shared) == MARSHAL_ERROR_INVALID_HANDLE);

    // Two threads release the same last reference: exactly one succeeds.
    int ok = 0, invalid = 0;
    for (int round = 0; round < 200; ++round) {
      marshal_value* v = mv_string("racy", 4);
      marshal_status s1 = MARSHAL_OK, s2 = MARSHAL_OK;
      std::atomic<bool> go{false};
      std::thread a([&] {
        while (!go) std::this_thread::yield();
        s1 = marshal_value_release(v);
      });
      std::thread b([&] {
        while (!go) std::this_thread::yield();
        s2 = marshal_value_release(v);
      });
      go = true;
      a.join();
      b.join();
      ok += (s1 == MARSHAL_OK) + (s2 == MARSHAL_OK);
      invalid += (s1 == MARSHAL_ERROR_INVALID_HANDLE) + (s2 == MARSHAL_ERROR_INVALID_HANDLE);
    }
    CHECK(ok == 200);
    CHECK(invalid == 200);

    // Values made on threads that have exited, released here (their free slots went back to the pool).
    std::vector<marshal_value*> made(1000);
    std::thread maker([&] {
      for (size_t i = 0; i < made.size(); ++i) made[i] = mv_int64(static_cast<int64_t>(i));
    });
    maker.join();
    int64_t x = 0;
    for (size_t i = 0; i < made.size(); ++i) {
      REQUIRE(marshal_value_get_int64(made[i], &x) == MARSHAL_OK);
      CHECK(x == static_cast<int64_t>(i));
      CHECK(marshal_value_release(made[i]) == MARSHAL_OK);
    }
  }

  TEST_CASE("marshal_value_create_from_json: the engine's bounded reader, errors naming the limit or the place") {
    marshal_value* v = nullptr;
    // 20,000 nested lists: an argument error naming the depth limit, not a
    // deep recursion or an internal error.
    const std::string deep = std::string(20000, '[') + std::string(20000, ']');
    CHECK(marshal_value_create_from_json(deep.c_str(), &v) == MARSHAL_ERROR_ARGUMENT);
    CHECK(std::string(marshal_error_message(marshal_last_error())) == "marshal_value_create_from_json: JSON nesting is deeper than 256 levels");
    const std::string objects = [] {
      std::string s;
      for (int i = 0; i < 300; ++i) s += "{\"a\": ";
      return s + "1" + std::string(300, '}');
    }();
    CHECK(marshal_value_create_from_json(objects.c_str(), &v) == MARSHAL_ERROR_ARGUMENT);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("deeper than 256 levels") != std::string::npos);
    // 256 levels are within the limit.
    const std::string ok = std::string(256, '[') + std::string(256, ']');
    REQUIRE(marshal_value_create_from_json(ok.c_str(), &v) == MARSHAL_OK);
    CHECK(marshal_value_kind(v) == MARSHAL_LIST);
    marshal_value_release(v);
    CHECK(marshal_value_create_from_json("[1, 2", &v) == MARSHAL_ERROR_ARGUMENT);
    CHECK(std::string(marshal_error_message(marshal_last_error())).rfind("marshal_value_create_from_json: not JSON at byte", 0) == 0);
    CHECK(marshal_value_create_from_json(R"({"x": 1, "x": 2})", &v) == MARSHAL_ERROR_ARGUMENT);
    CHECK(std::string(marshal_error_message(marshal_last_error())) == "marshal_value_create_from_json: the key 'x' appears twice in one object");
    // A typemap given as text is read with the loader's own limit.
    marshal_context* ctx = nullptr;
    REQUIRE(marshal_context_create(&ctx) == MARSHAL_OK);
    marshal_typemap* tm = nullptr;
    const std::string deep_typemap = R"({"typemap": 1, "constants": )" + deep + "}";
    CHECK(marshal_typemap_load_text(ctx, deep_typemap.data(), deep_typemap.size(), "deep.json", &tm) != MARSHAL_OK);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("deeper than") != std::string::npos);
    marshal_context_release(ctx);
  }

  TEST_CASE("a handle value that comes back after an explicit release is a new handle") {
    Api f("tests/fixtures/callback_buffers.json");
    auto call = [&](const char* fn, const marshal_value* arg) {
      marshal_result* r = nullptr;
      auto* a = const_cast<marshal_value*>(arg);  // a result's value, passed as an argument
      INFO(fn << ": " << marshal_error_message(marshal_last_error()));
      REQUIRE(marshal_function_call(f.fn(fn), &a, 1, &r) == MARSHAL_OK);
      return r;
    };
    marshal_value* one = mv_int64(1);
    marshal_result* first = call("slot_open", one);
    marshal_result_release(call("slot_close", marshal_result_return(first)));
    marshal_value* two = mv_int64(2);
    marshal_result* second = call("slot_open", two);  // the fixture's pool: the same address again
    marshal_result* value = call("slot_value", marshal_result_return(second));
    int64_t got = 0;
    CHECK(marshal_value_get_int64(marshal_result_return(value), &got) == MARSHAL_OK);
    CHECK(got == 2);
    marshal_result* stale = nullptr;
    auto* old = const_cast<marshal_value*>(marshal_result_return(first));
    CHECK(marshal_function_call(f.fn("slot_value"), &old, 1, &stale) != MARSHAL_OK);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("already released") != std::string::npos);
    marshal_result_release(call("slot_close", marshal_result_return(second)));
    for (marshal_result* r : {first, second, value}) marshal_result_release(r);
    marshal_value_release(one);
    marshal_value_release(two);
  }
}

// ---- issue 16: the C API's conventions ----
namespace {
std::string text(const char* s) { return s ? s : "(null)"; }
const marshal_error* err() { return marshal_last_error(); }
}  // namespace

TEST_SUITE("c-api") {
  TEST_CASE("conventions: every constructor returns a status and writes its handle to `out`") {
    // Each value constructor: OK with a handle, and the NULL-out case named.
    marshal_value* v = nullptr;
    CHECK(marshal_value_create_null(&v) == MARSHAL_OK);
    CHECK(marshal_value_kind(v) == MARSHAL_NULL);
    marshal_value_release(v);
    CHECK(marshal_value_create_bool(1, &v) == MARSHAL_OK);
    CHECK(marshal_value_kind(v) == MARSHAL_BOOL);
    marshal_value_release(v);
    CHECK(marshal_value_create_double(0.5, &v) == MARSHAL_OK);
    CHECK(marshal_value_kind(v) == MARSHAL_DOUBLE);
    marshal_value_release(v);
    CHECK(marshal_value_create_list(&v) == MARSHAL_OK);
    CHECK(marshal_value_kind(v) == MARSHAL_LIST);
    marshal_value_release(v);
    CHECK(marshal_value_create_record(&v) == MARSHAL_OK);
    CHECK(marshal_value_kind(v) == MARSHAL_RECORD);
    marshal_value_release(v);
    CHECK(marshal_value_create_int64(1, nullptr) == MARSHAL_ERROR_ARGUMENT);
    CHECK(text(marshal_error_message(err())) == "marshal_value_create_int64: out is NULL");
    CHECK(marshal_error_id(err()) == MARSHAL_E_INVALID_ARGUMENT);
    CHECK(marshal_result_create(nullptr) == MARSHAL_ERROR_ARGUMENT);
    CHECK(marshal_value_create_from_json("[1", nullptr) == MARSHAL_ERROR_ARGUMENT);
    // A failed constructor leaves NULL in *out (never a stale handle).
    v = reinterpret_cast<marshal_value*>(std::uintptr_t{1});
    CHECK(marshal_value_create_string(nullptr, 3, &v) == MARSHAL_ERROR_ARGUMENT);
    CHECK(v == nullptr);
    CHECK(text(marshal_error_message(err())) == "marshal_value_create_string: utf8 is NULL with a length of 3");
    v = reinterpret_cast<marshal_value*>(std::uintptr_t{1});
    CHECK(marshal_value_create_from_json("[1", &v) == MARSHAL_ERROR_ARGUMENT);
    CHECK(v == nullptr);
    // A failed function constructor still calls destroy once, and says why.
    static int destroyed = 0;
    destroyed = 0;
    v = reinterpret_cast<marshal_value*>(std::uintptr_t{1});
    CHECK(marshal_value_create_function("f", nullptr, nullptr, [](void*) { ++destroyed; }, &v) == MARSHAL_ERROR_ARGUMENT);
    CHECK(v == nullptr);
    CHECK(destroyed == 1);
    CHECK(text(marshal_error_message(err())) == "marshal_value_create_function: fn is NULL");
    CHECK(marshal_value_create_host_object("h", nullptr, 0, nullptr, 0, nullptr, [](void*) { ++destroyed; }, nullptr) ==
          MARSHAL_ERROR_ARGUMENT);
    CHECK(destroyed == 2);
    // to_json: a status and the text in *out.
    REQUIRE(marshal_value_create_from_json(R"({"a": [1, 2.5, "x"]})", &v) == MARSHAL_OK);
    char* json = nullptr;
    REQUIRE(marshal_value_to_json(v, &json) == MARSHAL_OK);
    CHECK(text(json) == R"({"a":[1,2.5,"x"]})");
    marshal_free(json);
    CHECK(marshal_value_to_json(v, nullptr) == MARSHAL_ERROR_ARGUMENT);
    marshal_value_release(v);
    CHECK(marshal_value_to_json(v, &json) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(marshal_error_id(err()) == MARSHAL_E_RELEASED);
  }

  TEST_CASE("version: marshal_version and its numbers are meson's project version") {
    CHECK(text(marshal_version()) == MARSHAL_PROJECT_VERSION);
    const std::string joined = std::to_string(marshal_version_major()) + "." + std::to_string(marshal_version_minor()) +
                               "." + std::to_string(marshal_version_micro());
    CHECK(joined == MARSHAL_PROJECT_VERSION);
  }

  TEST_CASE("errors: the structured record (id, function, parameter, pointer, file, got, expected, native code)") {
    // Nothing failed yet on a new thread: an empty record.
    std::thread([] {
      CHECK(marshal_error_id(marshal_last_error()) == MARSHAL_E_NONE);
      CHECK(text(marshal_error_message(marshal_last_error())).empty());
      CHECK(marshal_error_parameter_index(marshal_last_error()) == -1);
      CHECK(marshal_error_native_code(marshal_last_error()) == -1);
    }).join();
    // NULL reads as no error.
    CHECK(marshal_error_id(nullptr) == MARSHAL_E_NONE);
    CHECK(text(marshal_error_file(nullptr)).empty());
    CHECK(marshal_error_parameter_index(nullptr) == -1);
    CHECK(text(marshal_error_code_name(MARSHAL_E_CONVERSION)) == "MARSHAL_E_CONVERSION");
    CHECK(text(marshal_error_code_name(static_cast<marshal_error_code>(999))).empty());

    marshal_context* ctx = nullptr;
    REQUIRE(marshal_context_create(&ctx) == MARSHAL_OK);
    marshal_typemap* tm = nullptr;
    // A typemap error: its file and the JSON Pointer of the first problem.
    CHECK(marshal_typemap_load(ctx, "tests/typemaps/bad/bare_bool.json", &tm) == MARSHAL_ERROR_TYPEMAP);
    CHECK(marshal_error_id(err()) == MARSHAL_E_TYPEMAP);
    CHECK(text(marshal_error_file(err())) == "tests/typemaps/bad/bare_bool.json");
    CHECK(text(marshal_error_pointer(err())) == "/types/S/struct/0/type");
    CHECK(text(marshal_error_function(err())).empty());
    // A library that is not there.
    const char* missing = R"({"typemap": 1, "library": {"name": "gone", "load": {"linux": ["libgone.so.7"]}}})";
    REQUIRE(marshal_typemap_load_text(ctx, missing, std::strlen(missing), "gone.json", &tm) == MARSHAL_OK);
    marshal_library* lib = nullptr;
    CHECK(marshal_library_create(tm, &lib) == MARSHAL_ERROR_LIBRARY);
    CHECK(marshal_error_id(err()) == MARSHAL_E_LIBRARY_NOT_FOUND);
    CHECK(text(marshal_error_file(err())) == "gone.json");

    REQUIRE(marshal_typemap_load(ctx, "typemaps/libc.json", &tm) == MARSHAL_OK);
    REQUIRE(marshal_library_create(tm, &lib) == MARSHAL_OK);
    // A function the typemap does not have.
    marshal_function* fn = nullptr;
    CHECK(marshal_library_function(lib, "no_such", &fn) == MARSHAL_ERROR_BIND);
    CHECK(marshal_error_id(err()) == MARSHAL_E_NOT_FOUND);
    CHECK(text(marshal_error_function(err())) == "no_such");
    CHECK(text(marshal_error_file(err())) == "typemaps/libc.json");

    REQUIRE(marshal_library_function(lib, "div", &fn) == MARSHAL_OK);
    marshal_value* one = mv_int64(1);
    marshal_result* r = nullptr;
    // A wrong count: an argument error, with what was got and expected.
    CHECK(marshal_function_call(fn, &one, 1, &r) == MARSHAL_ERROR_CALL);
    CHECK(marshal_error_id(err()) == MARSHAL_E_INVALID_ARGUMENT);
    CHECK(text(marshal_error_function(err())) == "div");
    CHECK(text(marshal_error_got(err())) == "1 arguments");
    CHECK(text(marshal_error_expected(err())) == "2 arguments");
    CHECK(text(marshal_error_pointer(err())) == "/functions/div");
    CHECK(text(marshal_error_file(err())) == "typemaps/libc.json");
    CHECK(marshal_error_parameter_index(err()) == -1);
    // A NULL argument: the parameter it was for, by index and name.
    marshal_value* bad[2] = {one, nullptr};
    CHECK(marshal_function_call(fn, bad, 2, &r) == MARSHAL_ERROR_ARGUMENT);
    CHECK(marshal_error_id(err()) == MARSHAL_E_INVALID_ARGUMENT);
    CHECK(marshal_error_parameter_index(err()) == 1);
    CHECK(text(marshal_error_parameter_name(err())) == "denom");
    CHECK(text(marshal_error_pointer(err())) == "/functions/div/params/1");
    CHECK(text(marshal_error_function(err())) == "div");
    // A released value as argument 0.
    marshal_value* gone = mv_int64(2);
    marshal_value_release(gone);
    marshal_value* stale[2] = {gone, one};
    CHECK(marshal_function_call(fn, stale, 2, &r) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(marshal_error_id(err()) == MARSHAL_E_RELEASED);
    CHECK(marshal_error_parameter_index(err()) == 0);
    CHECK(text(marshal_error_parameter_name(err())) == "numer");
    // A handle of another kind is not "released".
    marshal_value* wrong[2] = {reinterpret_cast<marshal_value*>(fn), one};
    CHECK(marshal_function_call(fn, wrong, 2, &r) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(marshal_error_id(err()) == MARSHAL_E_INVALID_ARGUMENT);
    // A conversion inside the engine: its record (base/error.hpp) says which
    // parameter, what was given and what was expected.
    marshal_value* big = mv_uint64(UINT64_MAX);
    marshal_value* args[2] = {big, one};
    CHECK(marshal_function_call(fn, args, 2, &r) == MARSHAL_ERROR_CALL);
    CHECK(marshal_error_id(err()) == MARSHAL_E_CONVERSION);
    CHECK(text(marshal_error_function(err())) == "div");
    CHECK(marshal_error_parameter_index(err()) == 0);
    CHECK(text(marshal_error_parameter_name(err())) == "numer");
    CHECK(text(marshal_error_pointer(err())) == "/functions/div/params/0");
    CHECK(text(marshal_error_got(err())).find("18446744073709551615") != std::string::npos);
    CHECK(text(marshal_error_expected(err())).find("int") != std::string::npos);
    CHECK(marshal_error_native_code(err()) == -1);
    CHECK(text(marshal_error_message(err())).find("out of range for int") != std::string::npos);
    // A stale engine record is not adopted: a failure of this API's own keeps its id.
    CHECK(marshal_function_call(fn, nullptr, 2, &r) == MARSHAL_ERROR_ARGUMENT);
    CHECK(marshal_error_id(err()) == MARSHAL_E_INVALID_ARGUMENT);
    CHECK(marshal_error_parameter_index(err()) != 0);
    // A failed check after the native call: the errno it captured.
    marshal_function* clock = nullptr;
    REQUIRE(marshal_library_function(lib, "clock_gettime", &clock) == MARSHAL_OK);
    marshal_value* no_clock = mv_int64(987654);
    CHECK(marshal_function_call(clock, &no_clock, 1, &r) == MARSHAL_ERROR_CALL);
    CHECK(marshal_error_id(err()) == MARSHAL_E_NATIVE);
    CHECK(marshal_error_native_code(err()) == EINVAL);
    CHECK(text(marshal_error_function(err())) == "clock_gettime");
    // Values read out of range or as the wrong kind.
    int64_t i = 0;
    CHECK(marshal_value_get_int64(big, &i) == MARSHAL_ERROR_ARGUMENT);
    CHECK(marshal_error_id(err()) == MARSHAL_E_CONVERSION);
    CHECK(text(marshal_error_got(err())) == "the integer 18446744073709551615");
    CHECK(text(marshal_error_expected(err())) == "an integer from INT64_MIN to INT64_MAX");
    marshal_value* s = mv_string("x", 1);
    CHECK(marshal_value_get_int64(s, &i) == MARSHAL_ERROR_ARGUMENT);
    CHECK(marshal_error_id(err()) == MARSHAL_E_INVALID_ARGUMENT);
    // Names a value does not have.
    marshal_value* rec = mv_record();
    CHECK(marshal_record_get(rec, "nope") == nullptr);
    CHECK(marshal_error_id(err()) == MARSHAL_E_NOT_FOUND);
    // A limit: the allocation limit, with what was asked and what is allowed.
    REQUIRE(marshal_library_set_max_alloc(lib, 64) == MARSHAL_OK);
    marshal_value* mem = nullptr;
    CHECK(marshal_value_create_native(lib, "int32", 17, &mem) == MARSHAL_ERROR_ARGUMENT);
    CHECK(marshal_error_id(err()) == MARSHAL_E_LIMIT);
    CHECK(text(marshal_error_got(err())) == "68 bytes");
    CHECK(text(marshal_error_expected(err())) == "at most 64 bytes");
    CHECK(marshal_value_create_native(lib, "NoSuchType", 1, &mem) == MARSHAL_ERROR_ARGUMENT);
    CHECK(marshal_error_id(err()) == MARSHAL_E_NOT_FOUND);
    // A borrowed value released by the host: misuse.
    marshal_value* list = mv_list();
    REQUIRE(marshal_list_append(list, one) == MARSHAL_OK);
    CHECK(marshal_value_release(const_cast<marshal_value*>(marshal_list_get(list, 0))) == MARSHAL_ERROR_MISUSE);
    CHECK(marshal_error_id(err()) == MARSHAL_E_MISUSE);
    // A new failure clears the fields of the last one.
    CHECK(marshal_typemap_load(nullptr, "x", &tm) == MARSHAL_ERROR_ARGUMENT);
    CHECK(text(marshal_error_got(err())).empty());
    CHECK(text(marshal_error_function(err())).empty());
    CHECK(marshal_error_native_code(err()) == -1);
    // Per thread: another thread's failure leaves this thread's record alone.
    std::thread([] { CHECK(marshal_context_create(nullptr) == MARSHAL_ERROR_ARGUMENT); }).join();
    CHECK(text(marshal_error_message(err())) == "marshal_typemap_load: ctx is NULL");
    for (marshal_value* x : {one, big, no_clock, s, rec, list}) marshal_value_release(x);
    marshal_library_release(lib);
    marshal_context_release(ctx);
  }

  TEST_CASE("introspection: functions, their parameters and return types, types and fields") {
    Api z("typemaps/zlib.json");
    const size_t n = marshal_library_function_count(z.lib);
    REQUIRE(n > 3);
    // In name order, each one's signature reachable by its name.
    std::vector<std::string> names;
    for (size_t i = 0; i < n; ++i) names.push_back(text(marshal_library_function_name(z.lib, i)));
    CHECK(std::is_sorted(names.begin(), names.end()));
    CHECK(std::find(names.begin(), names.end(), "compress2") != names.end());
    for (const std::string& name : names) {
      marshal_signature* sig = nullptr;
      REQUIRE(marshal_library_signature(z.lib, name.c_str(), &sig) == MARSHAL_OK);
      CHECK(text(marshal_signature_name(sig)) == name);
    }
    CHECK(marshal_library_function_name(z.lib, n) == nullptr);
    CHECK(text(marshal_error_message(err())) == "marshal_library_function_name: index " + std::to_string(n) +
                                                    " is out of range (" + std::to_string(n) + " functions)");
    CHECK(marshal_error_id(err()) == MARSHAL_E_INVALID_ARGUMENT);

    // compress2(dest out, destLen inout, source, sourceLen computed, level) -> int
    marshal_signature* sig = nullptr;
    REQUIRE(marshal_library_signature(z.lib, "compress2", &sig) == MARSHAL_OK);
    marshal_signature* again = nullptr;
    REQUIRE(marshal_library_signature(z.lib, "compress2", &again) == MARSHAL_OK);
    CHECK(again == sig);  // one per function, owned by the library
    CHECK(text(marshal_signature_return_type(sig)) == "int");
    CHECK(marshal_signature_variadic_from(sig) == -1);
    REQUIRE(marshal_signature_param_count(sig) == 5);
    struct Want {
      const char* name;
      marshal_direction dir;
      uint32_t flags;
    } want[5] = {{"dest", MARSHAL_DIR_OUT, 0},
                 {"destLen", MARSHAL_DIR_INOUT, 0},
                 {"source", MARSHAL_DIR_IN, 0},
                 {"sourceLen", MARSHAL_DIR_IN, MARSHAL_PARAM_COMPUTED},
                 {"level", MARSHAL_DIR_IN, 0}};
    std::vector<std::string> types;
    for (size_t i = 0; i < 5; ++i) {
      const char *name = nullptr, *type = nullptr;
      marshal_direction dir = MARSHAL_DIR_IN;
      uint32_t flags = 99;
      REQUIRE(marshal_signature_param(sig, i, &name, &type, &dir, &flags) == MARSHAL_OK);
      CHECK(text(name) == want[i].name);
      CHECK(dir == want[i].dir);
      CHECK(flags == want[i].flags);
      types.push_back(text(type));
    }
    CHECK(types[1] == "ptr<ulong>");
    CHECK(types[3] == "ulong");
    CHECK(types[4] == "int");
    CHECK(types[0].find("uint8") != std::string::npos);  // an array of uint8
    // Out pointers are optional.
    CHECK(marshal_signature_param(sig, 0, nullptr, nullptr, nullptr, nullptr) == MARSHAL_OK);
    CHECK(marshal_signature_param(sig, 5, nullptr, nullptr, nullptr, nullptr) == MARSHAL_ERROR_ARGUMENT);
    CHECK(text(marshal_error_message(err())) ==
          "marshal_signature_param: index 5 is out of range ('compress2' has 5 parameters)");
    CHECK(marshal_error_id(err()) == MARSHAL_E_INVALID_ARGUMENT);
    CHECK(text(marshal_error_got(err())) == "5");
    CHECK(text(marshal_error_expected(err())) == "0 to 4");
    CHECK(marshal_library_signature(z.lib, "nope", &sig) == MARSHAL_ERROR_ARGUMENT);
    CHECK(marshal_error_id(err()) == MARSHAL_E_NOT_FOUND);
    CHECK(sig == nullptr);

    // Types: a record's layout as the C compiler has it, a primitive, errors.
    Api p("tests/fixtures/pinvoke.json");
    const size_t nt = marshal_library_type_count(p.lib);
    REQUIRE(nt > 2);
    bool saw_point = false;
    for (size_t i = 0; i < nt; ++i) saw_point |= text(marshal_library_type_name(p.lib, i)) == "Point";
    CHECK(saw_point);
    CHECK(marshal_library_type_name(p.lib, nt) == nullptr);
    CHECK(marshal_error_id(err()) == MARSHAL_E_INVALID_ARGUMENT);
    marshal_type* t = nullptr;
    REQUIRE(marshal_library_type(p.lib, "Vec2", &t) == MARSHAL_OK);
    marshal_type_kind kind = MARSHAL_TYPE_VOID;
    size_t size = 0, align = 0;
    REQUIRE(marshal_type_layout(t, &kind, &size, &align) == MARSHAL_OK);
    CHECK(kind == MARSHAL_TYPE_STRUCT);
    CHECK(size == sizeof(Vec2));
    CHECK(align == alignof(Vec2));
    CHECK(text(marshal_type_text(t)) == "Vec2");
    REQUIRE(marshal_type_field_count(t) == 2);
    const char *fname = nullptr, *ftype = nullptr;
    size_t off = 99;
    REQUIRE(marshal_type_field(t, 1, &fname, &off, &ftype) == MARSHAL_OK);
    CHECK(text(fname) == "y");
    CHECK(off == offsetof(Vec2, y));
    CHECK(text(ftype) == "double");
    CHECK(marshal_type_field(t, 2, &fname, &off, &ftype) == MARSHAL_ERROR_ARGUMENT);
    CHECK(text(marshal_error_message(err())) == "marshal_type_field: index 2 is out of range ('Vec2' has 2 fields)");
    REQUIRE(marshal_library_type(p.lib, "int16", &t) == MARSHAL_OK);
    REQUIRE(marshal_type_layout(t, &kind, &size, nullptr) == MARSHAL_OK);
    CHECK(kind == MARSHAL_TYPE_INTEGER);
    CHECK(size == 2);
    CHECK(marshal_type_field_count(t) == 0);
    CHECK(marshal_library_type(p.lib, "NoSuch", &t) == MARSHAL_ERROR_ARGUMENT);
    CHECK(marshal_error_id(err()) == MARSHAL_E_NOT_FOUND);
  }

  TEST_CASE("introspection: handles die with their library, checked like every handle") {
    marshal_context* ctx = nullptr;
    marshal_library* lib = open_library(&ctx, "typemaps/zlib.json");
    marshal_signature* sig = nullptr;
    marshal_type* t = nullptr;
    REQUIRE(marshal_library_signature(lib, "crc32", &sig) == MARSHAL_OK);
    REQUIRE(marshal_library_type(lib, "ulong", &t) == MARSHAL_OK);
    CHECK(marshal_signature_param_count(sig) == 3);
    marshal_library_release(lib);
    marshal_context_release(ctx);
    CHECK(marshal_signature_param_count(sig) == 0);
    CHECK(text(marshal_error_message(err())) ==
          "marshal_signature_param_count: sig: signature handle used after its library was released");
    CHECK(marshal_error_id(err()) == MARSHAL_E_RELEASED);
    CHECK(marshal_signature_name(sig) == nullptr);
    CHECK(marshal_type_layout(t, nullptr, nullptr, nullptr) == MARSHAL_ERROR_INVALID_HANDLE);
    CHECK(marshal_error_id(err()) == MARSHAL_E_RELEASED);
    // A handle of another type.
    CHECK(marshal_type_text(reinterpret_cast<marshal_type*>(sig)) == nullptr);
    CHECK(text(marshal_error_message(err())) ==
          "marshal_type_text: type: the handle is a signature handle, not a type handle");
    CHECK(marshal_library_function_count(nullptr) == 0);
    CHECK(text(marshal_error_message(err())) == "marshal_library_function_count: lib is NULL");
  }

  TEST_CASE("pump: owner-delivered callbacks from native threads run on the C host's thread") {
    Api f("tests/fixtures/callbacks.json");
    struct Seen {
      std::thread::id owner;
      std::atomic<long> calls{0};
      std::atomic<long> elsewhere{0};
    } seen;
    seen.owner = std::this_thread::get_id();
    auto on_owner = [](void* user, const marshal_value* const* args, size_t, marshal_value** result,
                       const char**) -> int {
      auto* s = static_cast<Seen*>(user);
      if (std::this_thread::get_id() != s->owner) ++s->elsewhere;
      ++s->calls;
      int64_t v = 0;
      marshal_value_get_int64(args[0], &v);
      return marshal_value_create_int64(v + 1, result) == MARSHAL_OK ? 0 : 1;
    };
    marshal_value* fn = mv_function("on_owner", on_owner, &seen, nullptr);
    marshal_value* cb = nullptr;
    REQUIRE(marshal_value_create_callback(f.lib, "OwnerFn", fn, &cb) == MARSHAL_OK);
    // Nothing pending: the pump returns at once with nothing run.
    size_t ran = 99;
    CHECK(marshal_library_pump(f.lib, 0, &ran) == MARSHAL_OK);
    CHECK(ran == 0);
    const int threads = 4, per = 100;
    marshal_value* args[3] = {cb, mv_int64(threads), mv_int64(per)};
    marshal_result* r = nullptr;
    REQUIRE(marshal_function_call(f.fn("start_async"), args, 3, &r) == MARSHAL_OK);
    marshal_result_release(r);
    // The native threads wait for this thread: it pumps until all ran.
    size_t total = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (seen.calls.load() < threads * per && std::chrono::steady_clock::now() < deadline) {
      REQUIRE(marshal_library_pump(f.lib, 50, &ran) == MARSHAL_OK);
      total += ran;
    }
    // Without a working pump the native threads are still waiting: stop before joining them.
    REQUIRE(seen.calls.load() == threads * per);
    CHECK(total == static_cast<size_t>(threads * per));
    REQUIRE(marshal_function_call(f.fn("join_async"), nullptr, 0, &r) == MARSHAL_OK);
    int64_t sum = 0;
    REQUIRE(marshal_value_get_int64(marshal_result_return(r), &sum) == MARSHAL_OK);
    int64_t expected = 0;
    for (int i = 0; i < per; ++i) expected += i + 1;
    CHECK(sum == expected * threads);
    CHECK(seen.calls.load() == threads * per);
    CHECK(seen.elsewhere.load() == 0);  // every call ran on the pumping thread
    marshal_result_release(r);
    // Nothing left; a NULL ran pointer is fine; a bad library is an error.
    CHECK(marshal_library_pump(f.lib, 0, nullptr) == MARSHAL_OK);
    CHECK(marshal_library_pump(nullptr, 0, &ran) == MARSHAL_ERROR_ARGUMENT);
    CHECK(text(marshal_error_message(err())) == "marshal_library_pump: lib is NULL");
    CHECK(marshal_callback_deactivate(cb) == MARSHAL_OK);
    for (marshal_value* v : {args[1], args[2], cb, fn}) marshal_value_release(v);
  }
}
