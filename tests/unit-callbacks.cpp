// marshal tests: callbacks.
// Host functions as native function pointers (scope "call" and "registered"),
// every argument form the fixture exercises, host failures returned as on_error
// to native code and re-raised to the host, the trap after release, nested
// callbacks, and calls from threads the native library starts itself.
#include "call_support.hpp"

#include "fixtures/callbacks.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <stdexcept>

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;

namespace {

Bound& cb() {
  static Bound b("tests/fixtures/callbacks.json");
  return b;
}

std::shared_ptr<HostFunction> host(std::string name, std::function<bool(const std::vector<Value>&, Value&, std::string&)> fn) {
  return std::make_shared<HostFunction>(HostFunction{std::move(name), std::move(fn)});
}

int32_t triple(int32_t v) { return v * 3; }
double sum_squares(double acc, double x) { return acc + x * x; }

}  // namespace

TEST_SUITE("callbacks") {
  TEST_CASE("scope call: a host function as a function pointer, compared with a C one") {
    auto& f = cb();
    auto h = host("triple", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(I(a[0]) * 3);
      return true;
    });
    CHECK(I(f.call("apply_i32", {Value(h), 14}).ret) == apply_i32(triple, 14));
    const double v[] = {1, 2, 3.5};
    auto fold = host("squares", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(D(a[0]) + D(a[1]) * D(a[1]));
      return true;
    });
    CHECK(D(f.call("fold_f64", {Value(fold), List{1.0, 2.0, 3.5}, 3}).ret) == fold_f64(sum_squares, v, 3));
    auto point = host("point", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(I(*a[0].field("x")) * 100 + I(*a[0].field("y")));
      return true;
    });
    CHECK(I(f.call("apply_point", {Value(point), 4, 2}).ret) == 402);
    auto text = host("text", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(static_cast<std::int64_t>(a[0].as<std::string>().size()));
      return true;
    });
    CHECK(I(f.call("apply_text", {Value(text), "h\xc3\xa9llo"}).ret) == 6);
    auto byte = host("byte", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(I(a[0]) + 100);
      return true;
    });
    CHECK(I(f.call("apply_u8", {Value(byte), 100}).ret) == 201);  // small return widened both ways
    CHECK(f.lib->callbacks().stats().live == 0);  // released when the call returned
  }

  TEST_CASE("structs by value into and out of a callback") {
    auto& f = cb();
    auto scale = host("scale", [](const std::vector<Value>& a, Value& r, std::string&) {
      const double k = static_cast<double>(I(a[1]));
      r = Value(rec({{"x", D(*a[0].field("x")) * k}, {"y", D(*a[0].field("y")) * k}}));
      return true;
    });
    Vec2 direct = apply_vec([](Vec2 v, int32_t k) { return Vec2{v.x * k, v.y * k}; }, Vec2{1.5, -2});
    CHECK(f.call("apply_vec", {Value(scale), Value(rec({{"x", 1.5}, {"y", -2.0}}))}).ret ==
          Value(rec({{"x", direct.x}, {"y", direct.y}})));
  }

  TEST_CASE("out parameters written by the host") {
    auto& f = cb();
    auto writes = host("writes", [](const std::vector<Value>& a, Value& r, std::string&) {
      CHECK(a[1].is_null());  // an out parameter has no value for the host
      r = Value(rec({{"return", 4}, {"result", I(a[0]) * 2}}));
      return true;
    });
    CHECK(I(f.call("apply_out", {Value(writes), 21}).ret) ==
          apply_out([](int32_t v, int32_t* out) { *out = v * 2; return 4; }, 21));
    auto forgets = host("forgets", [](const std::vector<Value>&, Value& r, std::string&) {
      r = Value(rec({{"return", 4}}));
      return true;
    });
    CHECK(f.error_of("apply_out", {Value(forgets), 1}).find("the result has no value for out parameter 'result'") != std::string::npos);
  }

  TEST_CASE("exhausting the closures is an error naming the cause") {
    auto& f = cb();
    CallbackPool small(f.ctx.types(), f.ctx.ffi(), nullptr, 2);
    const CallbackSig& sig = f.tm->callbacks.at("IntFn");
    std::string error;
    auto a = small.acquire(sig, host("a", [](const std::vector<Value>&, Value&, std::string&) { return true; }), error);
    auto b = small.acquire(sig, host("b", [](const std::vector<Value>&, Value&, std::string&) { return true; }), error);
    CHECK(a);
    CHECK(b);
    CHECK(small.acquire(sig, host("c", [](const std::vector<Value>&, Value&, std::string&) { return true; }), error) == nullptr);
    CHECK(error.find("too many callbacks: 2 closures exist") != std::string::npos);
    CHECK(small.stats().created == 2);
    CHECK(small.stats().live == 2);
    a->release();
    CHECK(small.stats().live == 1);
  }

  TEST_CASE("at the limit, released closures without handles are recycled: no limit over a library's life") {
    auto& f = cb();
    CallbackPool small(f.ctx.types(), f.ctx.ffi(), nullptr, 2);
    const CallbackSig& sig = f.tm->callbacks.at("IntFn");
    const CallbackSig& other = f.tm->callbacks.at("OwnerFn");
    auto adds = [](std::int64_t k) {
      return host("adds", [k](const std::vector<Value>& a, Value& r, std::string&) {
        r = Value(I(a[0]) + k);
        return true;
      });
    };
    using Fn = int32_t (*)(int32_t);
    std::string error;
    // Below the limit a released closure stays a trap: a new host function gets a new closure.
    auto a = small.acquire(sig, adds(1), error);
    REQUIRE(a);
    void* a_code = a->code();
    a->release();
    a.reset();
    auto b = small.acquire(sig, adds(2), error);
    REQUIRE(b);
    CHECK(b->code() != a_code);
    CHECK(small.stats().created == 2);
    // At the limit: the released one is recycled for the next host function, which it runs.
    auto c = small.acquire(sig, adds(3), error);
    INFO(error);
    REQUIRE(c);
    CHECK(c->code() == a_code);
    CHECK(reinterpret_cast<Fn>(c->code())(10) == 13);
    CHECK(small.stats().created == 2);
    CHECK(small.stats().recycled == 1);
    // A released callback whose handle is still held is not recycled (its holder
    // must keep seeing it released); nor is a closure of another signature.
    b->release();
    CHECK(small.acquire(sig, adds(4), error) == nullptr);
    CHECK(error.find("too many callbacks: 2 closures exist") != std::string::npos);
    CHECK_FALSE(b->active());
    CHECK(reinterpret_cast<Fn>(b->code())(1) == -1);  // the trap: IntFn's on_error
    std::string trapped;
    CHECK(callback_take_error(trapped));
    CHECK(trapped.find("called after it was released") != std::string::npos);
    b.reset();
    CHECK(small.acquire(other, adds(5), error) == nullptr);
    // Many more than the limit over the pool's life, two at a time.
    for (int i = 0; i < 3000; ++i) {
      auto d = small.acquire(sig, adds(i), error);
      REQUIRE(d);
      CHECK(reinterpret_cast<Fn>(d->code())(1) == 1 + i);
      d->release();
    }
    CHECK(small.stats().created == 2);
    CHECK(small.stats().live == 1);  // c
    CHECK(reinterpret_cast<Fn>(c->code())(0) == 3);
    c->release();
  }

  TEST_CASE("the same host function reuses its closure: no growth in a loop") {
    auto& f = cb();
    auto h = host("inc", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(I(a[0]) + 1);
      return true;
    });
    f.call("apply_i32", {Value(h), 1});
    const std::size_t created = f.lib->callbacks().stats().created;
    for (int i = 0; i < 1000; ++i) CHECK(I(f.call("apply_i32", {Value(h), i}).ret) == i + 1);
    CHECK(f.lib->callbacks().stats().created == created);
  }

  TEST_CASE("host failures: native code gets on_error, the host caller gets the error") {
    auto& f = cb();
    auto failing = host("failing", [](const std::vector<Value>&, Value&, std::string& e) {
      e = "no thanks";
      return false;
    });
    std::string e = f.error_of("apply_i32", {Value(failing), 1});
    CHECK(e.find("apply_i32: callback 'IntFn' failed: no thanks") != std::string::npos);
    auto throwing = host("throwing", [](const std::vector<Value>&, Value&, std::string&) -> bool {
      throw std::runtime_error("boom");
    });
    CHECK(f.error_of("apply_i32", {Value(throwing), 1}).find("callback 'IntFn' failed: threw: boom") != std::string::npos);
    auto bad = host("bad", [](const std::vector<Value>&, Value& r, std::string&) {
      r = Value("not a number");
      return true;
    });
    CHECK(f.error_of("apply_u8", {Value(bad), 1}).find("callback 'ByteFn' failed: return value: expected an integer") !=
          std::string::npos);
    // The next call is clean: the failure was this call's.
    auto ok = host("ok", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = a[0];
      return true;
    });
    CHECK(I(f.call("apply_i32", {Value(ok), 5}).ret) == 5);
  }

  TEST_CASE("the scalar lane of callbacks gives what the general path gives: values, errors, on_error") {
    auto& f = cb();
    const std::vector<Value> returns = {Value(41), Value(-7), Value(300), Value(-1), Value(4.0), Value(4.5),
                                        Value("x"), Value(), Value(true), Value(std::uint64_t{18446744073709551615u})};
    struct Case { const char* fn; std::vector<Value> rest; };
    const std::vector<Case> cases = {{"apply_i32", {5}}, {"apply_u8", {200}}, {"fold_f64", {List{1.0, 2.5}, 2}}};
    for (const Case& c : cases)
      for (const Value& give : returns)
        for (int mode = 0; mode < 3; ++mode) {  // 0: return `give`, 1: fail, 2: throw
          INFO(c.fn << " returning " << give.to_json().dump() << " mode " << mode);
          auto h = host("h", [&, mode](const std::vector<Value>& a, Value& r, std::string& e) -> bool {
            if (mode == 1) {
              e = "refused " + a[0].to_json().dump();
              return false;
            }
            if (mode == 2) throw std::runtime_error("boom");
            r = give.is_null() ? a[0] : give;
            return true;
          });
          std::vector<Value> args{Value(h)};
          args.insert(args.end(), c.rest.begin(), c.rest.end());
          CallResult laned, general;
          std::string laned_error, general_error;
          const bool laned_ok = f.lib->bind(c.fn, laned_error)->call(args, laned, laned_error);
          set_scalar_lanes(false);
          const bool general_ok = f.lib->bind(c.fn, general_error)->call(args, general, general_error);
          set_scalar_lanes(true);
          CHECK(laned_ok == general_ok);
          CHECK(laned_error == general_error);
          CHECK(laned.ret == general.ret);
          CHECK(f.lib->callbacks().stats().live == 0);
        }
    // A registered callback goes through the plan's lane too (its code pointer).
    auto twice = host("twice", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(I(a[0]) * 2);
      return true;
    });
    std::string error;
    auto registered = f.lib->callback("IntFn", twice, error);
    REQUIRE(registered);
    const Plan* apply = f.lib->bind("apply_i32", error);
    CHECK(apply->laned());
    CHECK(I(f.call("apply_i32", {Value(registered), 21}).ret) == 42);
    set_scalar_lanes(false);
    CHECK(I(f.call("apply_i32", {Value(registered), 21}).ret) == 42);
    set_scalar_lanes(true);
    registered->release();
    const std::string released = f.error_of("apply_i32", {Value(registered), 1});
    CHECK(released.find("callback 'IntFn' was already released") != std::string::npos);
    set_scalar_lanes(false);
    CHECK(f.error_of("apply_i32", {Value(registered), 1}) == released);
    set_scalar_lanes(true);
    // The lane took at least the plain cases (a value in range comes back).
    auto plus = host("plus", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(I(a[0]) + 1);
      return true;
    });
    CHECK(I(f.call("apply_i32", {Value(plus), 41}).ret) == 42);
    CHECK(f.error_of("apply_u8", {Value(plus), 255}).find("return value: 256 is out of range for uint8") !=
          std::string::npos);
  }

  TEST_CASE("registered callbacks live until released; a late call reaches the trap") {
    auto& f = cb();
    std::atomic<int> calls{0};
    std::string error;
    auto h = host("plus_ten", [&](const std::vector<Value>& a, Value& r, std::string&) {
      ++calls;
      r = Value(I(a[0]) + 10);
      return true;
    });
    CHECK(f.error_of("register_i32", {Value(h)}).find("a registered callback outlives the call") != std::string::npos);
    std::shared_ptr<Callback> registered = f.lib->callback("IntFn", h, error);
    REQUIRE(registered);
    f.call("register_i32", {Value(registered)});
    CHECK(I(f.call("fire_registered", {5}).ret) == 15);
    CHECK(I(f.call("fire_registered", {6}).ret) == 16);
    CHECK(f.lib->callbacks().stats().live >= 1);
    registered->release();
    // Native code still holds the pointer: the trap names the callback, returns
    // on_error (-1) to native code, and the outer call reports it.
    std::string late = f.error_of("fire_registered", {7});
    CHECK(late.find("callback 'IntFn' was called after it was released") != std::string::npos);
    CHECK(calls == 2);
    CHECK(f.error_of("register_i32", {Value(registered)}).find("callback 'IntFn' was already released") != std::string::npos);
    f.call("register_i32", {Value()});  // nullable: native code forgets it
    CHECK(I(f.call("fire_registered", {1}).ret) == -999);
    CHECK(f.lib->callback("NoSuchSig", h, error) == nullptr);
    CHECK(error.find("no callback signature 'NoSuchSig'") != std::string::npos);
  }

  TEST_CASE("nested callbacks: a host function that calls native code that calls back") {
    auto& f = cb();
    auto inner = host("inner", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(I(a[0]) * 2);
      return true;
    });
    auto outer = host("outer", [&](const std::vector<Value>& a, Value& r, std::string& e) {
      std::string err;
      const Plan* apply = f.lib->bind("apply_i32", err);
      CallResult inside;
      if (!apply->call(std::vector<Value>{Value(inner), Value(I(a[0]) + 1)}, inside, err)) {
        e = err;
        return false;
      }
      r = Value(I(inside.ret) + 1000);
      return true;
    });
    CHECK(I(f.call("apply_i32", {Value(outer), 4}).ret) == 1010);
  }

  TEST_CASE("calls from 8 threads the library started itself, 100000 in total") {
    auto& f = cb();
    std::atomic<long> calls{0};
    auto counting = host("counting", [&](const std::vector<Value>& a, Value& r, std::string&) {
      calls.fetch_add(1, std::memory_order_relaxed);
      r = Value(I(a[0]) % 7);
      return true;
    });
    const int threads = 8, per = 12500;
    std::int64_t expected = 0;
    for (int i = 0; i < per; ++i) expected += i % 7;
    CHECK(I(f.call("call_from_threads", {Value(counting), threads, per}).ret) == expected * threads);
    CHECK(calls.load() == threads * per);
  }

  TEST_CASE("delivery owner: calls from native threads run on the owner thread while it pumps") {
    auto& f = cb();
    const auto owner = std::this_thread::get_id();
    std::atomic<long> calls{0};
    std::atomic<long> elsewhere{0};
    auto on_owner = host("on_owner", [&](const std::vector<Value>& a, Value& r, std::string&) {
      if (std::this_thread::get_id() != owner) ++elsewhere;
      ++calls;
      r = Value(I(a[0]) + 1);
      return true;
    });
    std::string error;
    auto registered = f.lib->callback("OwnerFn", on_owner, error);
    REQUIRE(registered);
    const int threads = 4, per = 250;
    f.call("start_async", {Value(registered), threads, per});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (calls.load() < threads * per && std::chrono::steady_clock::now() < deadline)
      f.lib->callbacks().pump(std::chrono::milliseconds(50));
    std::int64_t expected = 0;
    for (int i = 0; i < per; ++i) expected += i + 1;
    CHECK(I(f.call("join_async").ret) == expected * threads);
    CHECK(calls.load() == threads * per);
    CHECK(elsewhere.load() == 0);  // every call ran on the owner thread
    CHECK(f.lib->callbacks().pump() == 0);  // nothing left
    registered->release();
  }

  TEST_CASE("a wrong value for a callback parameter is an error before the call") {
    auto& f = cb();
    CHECK(f.error_of("apply_i32", {5, 1}).find("parameter 0 'f' (callback): expected a host function for callback 'IntFn', got the integer 5") !=
          std::string::npos);
    CHECK(f.error_of("apply_i32", {Value(), 1}).find("null is not allowed") != std::string::npos);
  }

  TEST_CASE("a host function of scalars: no Values, the lane's rules, the trap, and held closures at the pool's limit") {
    auto& f = cb();
    // The Value form fails: a call that succeeds ran the scalar form.
    auto values_fail = [](const std::vector<Value>&, Value&, std::string& e) {
      e = "the Value form ran";
      return false;
    };
    auto h = host("triple", values_fail);
    h->scalar = [](const void*, const HostScalar* a, HostScalar& r, std::string&) {
      r = HostScalar::of_int(a[0].i * 3);
      return true;
    };
    CHECK(I(f.call("apply_i32", {Value(h), 14}).ret) == 42);
    CHECK(I(f.call("apply_i32", {Value(h), -14}).ret) == -42);
    // From native threads (delivery inline): the scalar form on each.
    CHECK(I(f.call("call_from_threads", {Value(h), 4, 100}).ret) == 4 * 3 * (99 * 100 / 2));
    // With the lanes off the general path runs the Value form (so the check above means something).
    set_scalar_lanes(false);
    CHECK(f.error_of("apply_i32", {Value(h), 14}).find("callback 'IntFn' failed: the Value form ran") != std::string::npos);
    set_scalar_lanes(true);
    // A throw: on_error for native code, the error for the host.
    auto thrower = host("thrower", values_fail);
    thrower->scalar = [](const void*, const HostScalar*, HostScalar&, std::string&) -> bool {
      throw std::runtime_error("scalar boom");
    };
    CHECK(f.error_of("apply_i32", {Value(thrower), 1}).find("callback 'IntFn' failed: threw: scalar boom") != std::string::npos);
    // A result out of the return type's range: the general conversion's words, as for the Value form.
    auto wide = host("wide", [](const std::vector<Value>&, Value& r, std::string&) {
      r = Value(std::int64_t{1} << 40);
      return true;
    });
    const std::string general = f.error_of("apply_i32", {Value(wide), 1});
    wide->scalar = [](const void*, const HostScalar*, HostScalar& r, std::string&) {
      r = HostScalar::of_int(std::int64_t{1} << 40);
      return true;
    };
    CHECK(general.find("return value:") != std::string::npos);
    CHECK(f.error_of("apply_i32", {Value(wide), 1}) == general);
    // u8: 200 in, 255 out (no sign extension either way); 256 is out of range (on_error 7, apply_u8 adds 1).
    auto byte = host("byte", values_fail);
    byte->scalar = [](const void*, const HostScalar* a, HostScalar& r, std::string&) {
      r = HostScalar::of_uint(a[0].kind == HostScalar::Kind::uint64 && a[0].u == 200 ? 255 : 256);
      return true;
    };
    CHECK(I(f.call("apply_u8", {Value(byte), 200}).ret) == 0);  // 255 + 1 wraps in uint8
    CHECK(f.error_of("apply_u8", {Value(byte), 1}).find("callback 'ByteFn' failed: return value:") != std::string::npos);

    // The pool: a held closure is reactivated for each call and released after
    // it (the trap between), and at the limit it is never recycled while held.
    CallbackPool small(f.ctx.types(), f.ctx.ffi(), nullptr, 2);
    const CallbackSig& sig = f.tm->callbacks.at("IntFn");
    using Fn = int32_t (*)(int32_t);
    std::string error;
    auto a = small.acquire(sig, h, error);
    REQUIRE(a);
    CHECK(a->scalar_host());
    CHECK(reinterpret_cast<Fn>(a->code())(5) == 15);
    CHECK_FALSE(a->reactivate());  // active: another call has it
    a->release();
    CHECK(small.stats().live == 0);
    CHECK(reinterpret_cast<Fn>(a->code())(5) == -1);  // the trap: IntFn's on_error
    std::string trapped;
    CHECK(callback_take_error(trapped));
    CHECK(trapped.find("callback 'IntFn' was called after it was released") != std::string::npos);
    CHECK(a->reactivate());
    CHECK(small.stats().live == 1);
    CHECK(reinterpret_cast<Fn>(a->code())(6) == 18);
    a->release();
    auto b = small.acquire(sig, host("b", values_fail), error);
    REQUIRE(b);
    CHECK_FALSE(b->scalar_host());  // the Value form only
    b->release();
    auto third = host("third", values_fail);
    third->scalar = [](const void*, const HostScalar* a, HostScalar& r, std::string&) {
      r = HostScalar::of_int(a[0].i + 1000);
      return true;
    };
    CHECK(small.acquire(sig, third, error) == nullptr);  // both held: nothing to recycle
    CHECK(error.find("too many callbacks") != std::string::npos);
    Callback* was_b = b.get();
    b.reset();  // b's handle dropped: recyclable, a stays
    auto c = small.acquire(sig, third, error);
    REQUIRE(c);
    CHECK(c.get() == was_b);
    CHECK(c->scalar_host());  // the recycled closure takes the new host function's form
    CHECK(reinterpret_cast<Fn>(c->code())(1) == 1001);
    CHECK(reinterpret_cast<Fn>(a->code())(1) == -1);  // a: released, still the trap
    CHECK(callback_take_error(trapped));
    c->release();
  }
}
