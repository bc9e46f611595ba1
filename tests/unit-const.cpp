// marshal tests: `const` parameters (TYPEMAP.md). The callee promises not to
// write through them, so host-owned native memory and host data already in the
// native layout are passed in place; without `const` they are copied. Fixtures
// return the address they were given (tests/fixtures/pinvoke.c); the lying
// callees of tests/fixtures/guard.c write anyway, which guard mode stops.
#include "call_support.hpp"
#include "child_process.hpp"

#include "base/guard.hpp"
#include "convert/native.hpp"

#include <cstdio>
#include <cstring>
#include <sys/mman.h>

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;

namespace {

std::int64_t address_of(const void* p) { return static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(p)); }

std::shared_ptr<NativeBox> doubles(const TypeRegistry& reg, List values) {
  auto box = native_new(reg, reg.find_primitive("double"), values.size());
  std::string err;
  REQUIRE(native_store(reg, *box, Value(std::move(values)), err));
  return box;
}

// The address `fn` was given for args[0], calling with these very values (Bound::call copies them).
std::int64_t address_given(Bound& f, const std::string& fn, const std::vector<Value>& args) {
  std::string error;
  const Plan* plan = f.lib->bind(fn, error);
  INFO(fn << ": " << error);
  REQUIRE(plan);
  CallResult result;
  const bool ok = plan->call(std::span<const Value>(args), result, error);
  INFO(fn << ": " << error);
  REQUIRE(ok);
  return I(result.ret);
}

// Longer than the scalar lane's stack scratch (plan.cpp), so the string goes
// through the marshaler, which is where const is decided.
std::string long_text(std::string unit) {
  std::string s;
  while (s.size() < 4000) s += unit;
  return s;
}
}  // namespace

TEST_SUITE("call") {
  TEST_CASE("const: an in array of host-owned native memory is passed in place; without const it is copied") {
    auto& f = pinvoke();
    const TypeRegistry& reg = f.ctx.types();
    auto box = doubles(reg, List{1.0, 2.0, 3.0, 4.0});
    Value v(box);
    CHECK(I(f.call("address_in_f64_array", {v, 4}).ret) == address_of(box->data()));
    const std::int64_t copied = I(f.call("address_in_f64_array_copied", {v, 4}).ret);
    CHECK(copied != address_of(box->data()));
    CHECK(copied != 0);
    // The shipped fixture says const where the header does: the sum reads the box itself.
    CHECK(D(f.call("sum_in_f64_array", {v, 4}).ret) == 10.0);
    CHECK(D(f.call("sum_in_f64_array", {v, 3}).ret) == 6.0);
    // The checks before a pinned pass are those of a copy.
    CHECK(f.error_of("address_in_f64_array", {v, 5}).find("holds 4 elements but the count is 5") != std::string::npos);
    auto ints = native_new(reg, reg.primitive(Prim::int32), 4);
    CHECK(f.error_of("address_in_f64_array", {Value(ints), 4}).find("native memory of int32 given for an array of double") !=
          std::string::npos);
    // A list has no native layout: it is converted, const or not.
    CHECK(I(f.call("address_in_f64_array", {Value(List{1.0, 2.0}), 2}).ret) != 0);
    CHECK(D(f.call("sum_in_f64_array", {Value(List{1.5, 2.5}), 2}).ret) == 4.0);
  }

  TEST_CASE("const: host bytes for a byte array are passed in place; without const they are copied") {
    auto& f = pinvoke();
    Value b(Bytes{{1, 2, 3, 4, 5}});
    std::vector<Value> five{b, 5}, three{b, 3};
    const std::int64_t host = address_of(five[0].as<Bytes>().data.data());
    CHECK(address_given(f, "address_in_u8_bytes", five) == host);
    // Fewer than the host has: still its memory.
    CHECK(address_given(f, "address_in_u8_bytes", three) == address_of(three[0].as<Bytes>().data.data()));
    CHECK(address_given(f, "address_in_u8_bytes_copied", five) != host);
    CHECK(f.error_of("address_in_u8_bytes", {b, 6}).find("the array has 5 elements but its count is 6") !=
          std::string::npos);
    // No bytes: a buffer of the engine's (the host's empty vector has no address to give).
    CHECK(I(f.call("address_in_u8_bytes", {Value(Bytes{}), 0}).ret) != 0);
  }

  TEST_CASE("const: a UTF-8 host string is passed in place when it already is the native text") {
    auto& f = pinvoke();
    for (const std::string& text : {long_text("ascii "), long_text("h\xc3\xa9llo w\xc3\xb6rld \xe2\x88\x91 ")}) {
      CAPTURE(text.substr(0, 12));
      const std::vector<Value> s{Value(text)};
      const std::int64_t host = address_of(s[0].as<std::string>().c_str());
      CHECK(address_given(f, "address_in_utf8", s) == host);
      CHECK(address_given(f, "address_in_utf8_copied", s) != host);
      // UTF-16 is another layout: transcoded, const or not.
      CHECK(address_given(f, "address_in_utf16", s) != host);
    }
    // Latin-1: ASCII text is the same bytes; other text is transcoded.
    const std::vector<Value> ascii{Value(long_text("abc "))};
    CHECK(address_given(f, "address_in_latin1", ascii) == address_of(ascii[0].as<std::string>().c_str()));
    const std::vector<Value> accented{Value(long_text("\xc3\xa9t\xc3\xa9 "))};
    CHECK(address_given(f, "address_in_latin1", accented) != address_of(accented[0].as<std::string>().c_str()));
    // Text that is not valid native text gets the message it always got.
    std::string with_nul = long_text("x");
    with_nul[10] = '\0';
    CHECK(f.error_of("address_in_utf8", {Value(with_nul)}).find("contains a NUL character at byte 10") != std::string::npos);
    std::string bad = long_text("y");
    bad[20] = '\xff';
    CHECK(f.error_of("address_in_utf8", {Value(bad)}).find("invalid UTF-8 at byte 20") != std::string::npos);
    CHECK(f.error_of("address_in_utf8_copied", {Value(bad)}).find("invalid UTF-8 at byte 20") != std::string::npos);
  }
}

TEST_SUITE("guard") {
  TEST_CASE("guard mode: a callee writing through a const array of host memory faults, naming the function") {
    // The box's bytes live in a shared mapping, so this process sees what the
    // child's callee did to the host's memory.
    auto* shared = static_cast<std::byte*>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    REQUIRE(shared != MAP_FAILED);
    const double start[] = {1.0, 2.0, 3.0, 4.0};
    auto run = [&](bool guard) {
      std::memcpy(shared, start, sizeof start);
      return in_child([&] {
        Bound b("tests/fixtures/guard.json");
        b.lib->set_guard(guard);
        const TypeRegistry& reg = b.ctx.types();
        auto box = native_new(reg, reg.find_primitive("double"), 4);
        box->storage.reset(shared);  // the host's memory, here shared with the parent
        b.call("lie_const_f64_array", {Value(box), 4});
        box->storage.release();
      });
    };
    // Without guard mode the promise is trusted: the callee gets the host's
    // memory in place, and a lying one changes it.
    Child plain = run(false);
    CHECK(WIFEXITED(plain.status));
    double now[4];
    std::memcpy(now, shared, sizeof now);
    CHECK(now[3] == -1.0);
    // Guard mode: a read-only copy; the write faults with the function and the
    // parameter named, and the host's memory is as it was.
    Child c = run(true);
    INFO(c.err);
    CHECK(aborted(c));
    CHECK(c.err.find("marshal guard: function 'lie_const_f64_array': parameter 0 'v': the callee wrote to the 32-byte "
                     "buffer of a const parameter, which it promised not to write (byte 24 of it") != std::string::npos);
    std::memcpy(now, shared, sizeof now);
    CHECK(std::memcmp(now, start, sizeof start) == 0);
    munmap(shared, 4096);
  }

  TEST_CASE("guard mode: writing through a const string or a pointer to const faults too") {
    Child s = in_child([] {
      Bound b("tests/fixtures/guard.json");
      b.lib->set_guard(true);
      b.call("lie_const_utf8", {Value("hello")});
    });
    INFO(s.err);
    CHECK(aborted(s));
    CHECK(s.err.find("function 'lie_const_utf8': parameter 0 's': the callee wrote to the 6-byte buffer of a const "
                     "parameter") != std::string::npos);
    Child p = in_child([] {
      Bound b("tests/fixtures/guard.json");
      b.lib->set_guard(true);
      const TypeRegistry& reg = b.ctx.types();
      auto box = native_new(reg, reg.primitive(Prim::int32), 1);
      b.call("lie_const_i32", {Value(box)});
    });
    INFO(p.err);
    CHECK(aborted(p));
    CHECK(p.err.find("function 'lie_const_i32': parameter 0 'p': the callee wrote to the 4-byte buffer of a const "
                     "parameter") != std::string::npos);
    Child l = in_child([] {  // a converted list: the engine's copy is read-only as well
      Bound b("tests/fixtures/guard.json");
      b.lib->set_guard(true);
      b.call("lie_const_f64_array", {Value(List{1.0, 2.0}), 2});
    });
    INFO(l.err);
    CHECK(aborted(l));
    CHECK(l.err.find("function 'lie_const_f64_array': parameter 0 'v': the callee wrote to the 16-byte buffer of a "
                     "const parameter") != std::string::npos);
  }

  TEST_CASE("guard mode: callees that keep a const promise read the data, and every mapping is released") {
    // In a child: guard mode installs its fault handler once per process, and
    // the other guard tests need theirs in children that fork after this one.
    Child c = in_child([] {
      Bound b("tests/fixtures/pinvoke.json");
      b.lib->set_guard(true);
      const TypeRegistry& reg = b.ctx.types();
      const std::size_t before = guard_live_mappings();
      auto box = doubles(reg, List{1.0, 2.0, 3.0, 4.0});
      std::string failed;
      if (D(b.call("sum_in_f64_array", {Value(box), 4}).ret) != 10.0) failed += "sum; ";
      // In guard mode const data is a read-only copy, never the host's memory.
      if (I(b.call("address_in_f64_array", {Value(box), 4}).ret) == address_of(box->data())) failed += "box pinned; ";
      const std::vector<Value> text{Value(long_text("guarded "))};
      if (address_given(b, "address_in_utf8", text) == address_of(text[0].as<std::string>().c_str()))
        failed += "string pinned; ";
      if (guard_live_mappings() != before) failed += "mappings left; ";
      if (!failed.empty()) {
        std::fprintf(stderr, "FAILED: %s\n", failed.c_str());
        _exit(3);
      }
    });
    INFO(c.err);
    CHECK(WIFEXITED(c.status));
    CHECK(WEXITSTATUS(c.status) == 0);
  }

}
