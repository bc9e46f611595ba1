// marshal tests: host functions called back across the process boundary
// (issue 17, part 4). A host function passed to an isolated library (or to
// `marshal serve`) runs in the host when native code in the other process
// calls it: results equal in-process ones, it runs on the thread waiting for
// the call (qsort's comparator on the qsort caller, an STA on its own thread),
// it may call the library again (nested, both sides), callbacks from the
// library's own threads run on a dispatcher (delivery inline) or on the
// waiting owner (delivery owner), a host failure is native code's on_error
// and the call's error, and a surrogate that dies or hangs inside a callback
// is the usual error, never a hang.
#include "call_support.hpp"
#include "isolated_support.hpp"
#include "serve_support.hpp"

#include "apartments/apartment.hpp"
#include "base/error.hpp"
#include "objects/object.hpp"
#include "remote/surrogate.hpp"

#include "fixtures/callbacks.h"
#include "marshal.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <csignal>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<HostFunction> host(std::string name, std::function<bool(const std::vector<Value>&, Value&, std::string&)> fn) {
  return std::make_shared<HostFunction>(HostFunction{std::move(name), std::move(fn)});
}

// A host function giving its argument + k, counting its calls and those made
// on another thread than `caller`.
std::shared_ptr<HostFunction> counting_adder(std::string name, std::int64_t k, std::thread::id caller,
                                             std::atomic<int>& calls, std::atomic<int>& elsewhere) {
  return host(std::move(name), [k, caller, &calls, &elsewhere](const std::vector<Value>& a, Value& r, std::string&) {
    ++calls;
    if (std::this_thread::get_id() != caller) ++elsewhere;
    r = Value(I(a[0]) + k);
    return true;
  });
}

std::string slurp(const std::string& path) {
  std::ifstream in(source_path(path), std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A typemap's library in a surrogate through the C API; released with it.
struct CIsolated {
  marshal_context* ctx = nullptr;
  marshal_library* lib = nullptr;
  explicit CIsolated(const char* typemap) {
    ::setenv("MARSHAL_SURROGATE", MARSHAL_SURROGATE, 1);  // the C API's surrogate
    REQUIRE(marshal_context_create(&ctx) == MARSHAL_OK);
    marshal_typemap* tm = nullptr;
    REQUIRE(marshal_typemap_load(ctx, typemap, &tm) == MARSHAL_OK);
    REQUIRE(marshal_library_create_isolated(tm, 0, &lib) == MARSHAL_OK);
  }
  ~CIsolated() { release(); }
  void release() {
    marshal_library_release(lib);
    marshal_context_release(ctx);
    lib = nullptr;
    ctx = nullptr;
  }
};

struct Isolated : IsolatedBase {
  explicit Isolated(const std::string& typemap = "tests/fixtures/callbacks.json", const std::string& connect = "",
                    std::chrono::milliseconds deadline = 0ms) {
    open_path(typemap, deadline, connect);
  }
  Isolated(const std::string& text, const std::string& file, int) { open_text(text, file); }
};

Bound& in_process() {
  static Bound b("tests/fixtures/callbacks.json");
  return b;
}

// apply_* with the same host functions in-process and through `lib`.
void same_as_in_process(Isolated& there) {
  auto& here = in_process();
  const auto caller = std::this_thread::get_id();
  std::atomic<int> elsewhere{0};
  auto triple = host("triple", [&](const std::vector<Value>& a, Value& r, std::string&) {
    if (std::this_thread::get_id() != caller) ++elsewhere;
    r = Value(I(a[0]) * 3);
    return true;
  });
  auto squares = host("squares", [](const std::vector<Value>& a, Value& r, std::string&) {
    r = Value(D(a[0]) + D(a[1]) * D(a[1]));
    return true;
  });
  auto point = host("point", [](const std::vector<Value>& a, Value& r, std::string&) {
    r = Value(I(*a[0].field("x")) * 100 + I(*a[0].field("y")));
    return true;
  });
  auto text = host("text", [](const std::vector<Value>& a, Value& r, std::string&) {
    r = Value(static_cast<std::int64_t>(a[0].as<std::string>().size()));
    return true;
  });
  auto byte = host("byte", [](const std::vector<Value>& a, Value& r, std::string&) {
    r = Value(I(a[0]) + 100);
    return true;
  });
  auto writes = host("writes", [](const std::vector<Value>& a, Value& r, std::string&) {
    r = Value(rec({{"return", 4}, {"result", I(a[0]) * 2}}));
    return true;
  });
  auto scale = host("scale", [](const std::vector<Value>& a, Value& r, std::string&) {
    r = Value(rec({{"x", D(*a[0].field("x")) * I(a[1])}, {"y", D(*a[0].field("y")) * I(a[1])}}));
    return true;
  });
  const std::vector<std::pair<std::string, std::vector<Value>>> calls = {
      {"apply_i32", {Value(triple), 14}},
      {"apply_i32", {Value(triple), -7}},
      {"fold_f64", {Value(squares), List{1.0, 2.0, 3.5}, 3}},
      {"apply_point", {Value(point), 4, 2}},
      {"apply_text", {Value(text), "h\xc3\xa9llo"}},
      {"apply_u8", {Value(byte), 100}},
      {"apply_out", {Value(writes), 21}},
      {"apply_vec", {Value(scale), Value(rec({{"x", 1.5}, {"y", -2.0}}))}},
  };
  for (const auto& [fn, args] : calls) {
    CAPTURE(fn);
    const CallResult a = here.call(fn, args);
    const CallResult b = there.call(fn, args);
    CHECK(a.ret == b.ret);
    CHECK(a.out.size() == b.out.size());
  }
  CHECK(I(there.call("apply_i32", {Value(triple), 14}).ret) == apply_i32([](int32_t v) { return v * 3; }, 14));
  CHECK(elsewhere.load() == 0);  // every callback ran on the thread that called
}

// A host function that calls the library again, twice nested: each level
// crosses to the surrogate and back while the outer ones wait.
void reentrant(Isolated& there) {
  auto add_one = host("add_one", [](const std::vector<Value>& a, Value& r, std::string&) {
    r = Value(I(a[0]) + 1);
    return true;
  });
  auto middle = host("middle", [&](const std::vector<Value>& a, Value& r, std::string& e) {
    CallResult inner;
    if (!there.lib->call("apply_i32", std::vector<Value>{Value(add_one), Value(I(a[0]) * 10)}, inner, e)) return false;
    r = inner.ret;
    return true;
  });
  auto outer = host("outer", [&](const std::vector<Value>& a, Value& r, std::string& e) {
    CallResult inner;
    if (!there.lib->call("apply_i32", std::vector<Value>{Value(middle), Value(I(a[0]) + 2)}, inner, e)) return false;
    r = Value(I(inner.ret) * 2);
    return true;
  });
  // outer(5): middle(7) = add_one(70) = 71; outer returns 142.
  CHECK(I(there.call("apply_i32", {Value(outer), 5}).ret) == 142);
}

// qsort of libc with a host comparator, through `lib`, against std::sort.
void qsort_items(Isolated& there, int n) {
  std::mt19937 rng(1234);
  List items;
  std::vector<std::pair<int, int>> expect;
  for (int i = 0; i < n; ++i) {
    const int key = static_cast<int>(rng() % 1000) - 500;
    items.push_back(Value(rec({{"key", key}, {"value", i}})));
    expect.emplace_back(key, i);
  }
  std::atomic<int> compares{0};
  const auto caller = std::this_thread::get_id();
  std::atomic<int> elsewhere{0};
  auto by_key = host("by_key", [&](const std::vector<Value>& a, Value& r, std::string&) {
    ++compares;
    if (std::this_thread::get_id() != caller) ++elsewhere;
    const auto ka = I(*a[0].field("key")), kb = I(*a[1].field("key"));
    const auto va = I(*a[0].field("value")), vb = I(*a[1].field("value"));
    r = Value(static_cast<std::int64_t>(ka != kb ? (ka < kb ? -1 : 1) : (va < vb ? -1 : va > vb ? 1 : 0)));
    return true;
  });
  const CallResult r = there.call("qsort", {Value(items), Value(by_key)});
  std::sort(expect.begin(), expect.end());
  REQUIRE(r.out.size() == 1);
  const List& sorted = r.out[0].second.as<List>();
  REQUIRE(sorted.size() == expect.size());
  bool same = true;
  for (std::size_t i = 0; i < sorted.size(); ++i)
    same = same && I(*sorted[i].field("key")) == expect[i].first && I(*sorted[i].field("value")) == expect[i].second;
  CHECK(same);
  CHECK(compares.load() >= n - 1);
  CHECK(elsewhere.load() == 0);
}

}  // namespace

TEST_SUITE("remote") {
  TEST_CASE("host functions cross the boundary: the in-process results, on the calling thread") {
    Isolated there;
    same_as_in_process(there);
  }

  TEST_CASE("qsort of libc with a host comparator through the surrogate") {
    Isolated libc("typemaps/libc.json");
    qsort_items(libc, 500);
    qsort_items(libc, 1);
    // A crash on the surrogate's native thread (where calls run once a host
    // function came) is the usual error naming the function and the signal.
    const std::string crashed = libc.error_of("div", {1, 0});
    CHECK(crashed.find("function div crashed in the surrogate") == 0);
    CHECK(crashed.find("SIGFPE") != std::string::npos);
    CHECK(last_error().id == ErrorId::native_crash);
    CHECK(I(*libc.call("div", {17, 5}).ret.field("quot")) == 3);
    qsort_items(libc, 50);
  }

  TEST_CASE("a host function that calls the library again nests on both sides") {
    Isolated there;
    reentrant(there);
    reentrant(there);  // and the surrogate's native thread is free again
  }

  TEST_CASE("host failures: native code gets on_error, the call reports the host's error") {
    Isolated there;
    auto fails = host("fails", [](const std::vector<Value>&, Value&, std::string& e) {
      e = "the host says no";
      return false;
    });
    std::string error = there.error_of("apply_i32", {Value(fails), 1});
    CHECK(error.find("the host says no") != std::string::npos);
    auto throws = host("throws", [](const std::vector<Value>&, Value&, std::string&) -> bool {
      throw std::runtime_error("thrown in the host");
    });
    error = there.error_of("apply_i32", {Value(throws), 1});
    CHECK(error.find("thrown in the host") != std::string::npos);
    // A result native code cannot take is the surrogate's conversion error.
    auto wrong = host("wrong", [](const std::vector<Value>&, Value& r, std::string&) {
      r = Value("not a number");
      return true;
    });
    error = there.error_of("apply_i32", {Value(wrong), 1});
    CHECK(error.find("IntFn") != std::string::npos);
    // And the library still works.
    auto twice = host("twice", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(I(a[0]) * 2);
      return true;
    });
    CHECK(I(there.call("apply_i32", {Value(twice), 21}).ret) == 42);
    // A native callback of this process cannot cross; a registered scope is
    // refused with the engine's message.
    auto& here = in_process();
    std::string e;
    auto made = here.lib->callback("IntFn", twice, e);
    REQUIRE(made);
    error = there.error_of("apply_i32", {Value(made), 1});
    CHECK(error.find("native function pointer of this process") != std::string::npos);
    made->release();
    error = there.error_of("register_i32", {Value(twice)});
    CHECK(error.find("registered callback") != std::string::npos);
  }

  TEST_CASE("callbacks from the library's own threads: delivery inline on a host thread, exact results") {
    Isolated there;
    std::atomic<long> calls{0};
    const auto caller = std::this_thread::get_id();
    std::atomic<long> on_caller{0};
    auto counting = host("counting", [&](const std::vector<Value>& a, Value& r, std::string&) {
      ++calls;
      if (std::this_thread::get_id() == caller) ++on_caller;
      r = Value(I(a[0]) * 3);
      return true;
    });
    const int threads = 4, per = 100;
    const std::int64_t expected = 3 * (per - 1) * per / 2;
    CHECK(I(there.call("call_from_threads", {Value(counting), threads, per}).ret) == expected * threads);
    CHECK(calls.load() == threads * per);
    CHECK(on_caller.load() == 0);  // inline: not the waiting thread's to run
  }

  TEST_CASE("a host function called from the library's own thread may call the library again") {
    // call_from_threads joins its threads inside the native call, so the
    // surrogate's native thread is blocked: the nested calls run on the
    // library's thread that waits for the host function there (its chain).
    // The deadline turns a deadlock into a failure instead of a hang.
    Isolated there("tests/fixtures/callbacks.json", "", 10000ms);
    auto add_one = host("add_one", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(I(a[0]) + 1);
      return true;
    });
    std::atomic<int> nested{0};
    auto reenters = host("reenters", [&](const std::vector<Value>& a, Value& r, std::string& e) {
      CallResult inner;
      if (!there.lib->call("apply_i32", std::vector<Value>{Value(add_one), a[0]}, inner, e)) return false;
      ++nested;
      r = inner.ret;
      return true;
    });
    const int threads = 2, per = 5;
    // Each thread calls f(0..per-1): the sum of (i + 1).
    CHECK(I(there.call("call_from_threads", {Value(reenters), threads, per}).ret) == threads * (per * (per + 1) / 2));
    CHECK(nested.load() == threads * per);
  }

  TEST_CASE("callbacks from the library's own threads with delivery owner run on the waiting owner") {
    // call_from_threads with a callback of delivery "owner" (OwnerFn).
    std::string text = slurp("tests/fixtures/callbacks.json");
    const std::string from = "\"call_from_threads\"";
    auto at = text.find(from);
    REQUIRE(at != std::string::npos);
    auto cb = text.find("\"IntFn\"", at);
    REQUIRE(cb != std::string::npos);
    text.replace(cb, 7, "\"OwnerFn\"");
    Isolated there(text, "owner-callbacks.json", 0);
    const auto caller = std::this_thread::get_id();
    std::atomic<long> elsewhere{0};
    auto owner = host("owner", [&](const std::vector<Value>& a, Value& r, std::string&) {
      if (std::this_thread::get_id() != caller) ++elsewhere;
      r = Value(I(a[0]) + 1);
      return true;
    });
    const int threads = 3, per = 50;
    const std::int64_t expected = ((per - 1) * per / 2 + per) * threads;
    CHECK(I(there.call("call_from_threads", {Value(owner), threads, per}).ret) == expected);
    CHECK(elsewhere.load() == 0);
  }

  TEST_CASE("4 host threads with their own host functions: each callback on its own thread, exact results") {
    Isolated there;
    std::atomic<int> wrong{0}, bad{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([&, t] {
        const auto me = std::this_thread::get_id();
        auto fn = host("mine", [&, me, t](const std::vector<Value>& a, Value& r, std::string&) {
          if (std::this_thread::get_id() != me) ++wrong;
          r = Value(I(a[0]) * 10 + t);
          return true;
        });
        for (int i = 0; i < 150; ++i) {
          CallResult r;
          std::string e;
          if (!there.lib->call("apply_i32", std::vector<Value>{Value(fn), i}, r, e) || I(r.ret) != i * 10 + t) ++bad;
        }
      });
    for (auto& t : ts) t.join();
    CHECK(wrong.load() == 0);
    CHECK(bad.load() == 0);
  }

  TEST_CASE("a callback into a waiting STA runs on the STA's thread") {
    Isolated there;
    std::thread sta([&] {
      std::string e;
      auto apartment = enter_sta(e);
      REQUIRE(apartment);
      const auto me = std::this_thread::get_id();
      bool here = false;
      auto fn = host("in_sta", [&](const std::vector<Value>& a, Value& r, std::string&) {
        here = std::this_thread::get_id() == me && current_apartment() == apartment;
        r = Value(I(a[0]) + 5);
        return true;
      });
      CallResult r;
      CHECK(there.lib->call("apply_i32", std::vector<Value>{Value(fn), 1}, r, e));
      CHECK(I(r.ret) == 6);
      CHECK(here);
      leave_apartment();
    });
    sta.join();
  }

  TEST_CASE("the direct channel stops once a host function has gone to the surrogate (it may call back any time)") {
    Isolated there;
    const auto d0 = there.lib->direct_calls();
    CHECK(I(there.call("fire_registered", {5}).ret) == -999);  // plain data: direct
    CHECK(there.lib->direct_calls() == d0 + 1);
    std::atomic<int> ran{0}, elsewhere{0};
    auto plus = counting_adder("plus", 1000, std::this_thread::get_id(), ran, elsewhere);
    std::string error;
    auto registered = there.lib->callback("IntFn", plus, error);
    INFO(error);
    REQUIRE(registered);
    there.call("register_i32", {Value(registered)});
    const auto d1 = there.lib->direct_calls();
    // fire_registered is plain data too, but native code calls the host
    // back in it: through RPC, where the waiting caller runs the callback.
    for (int i = 0; i < 20; ++i) CHECK(I(there.call("fire_registered", {i}).ret) == i + 1000);
    CHECK(ran == 20);
    CHECK(elsewhere == 0);
    CHECK(there.lib->direct_calls() == d1);
    registered->release();
    there.call("register_i32", {Value()});
  }

  TEST_CASE("registered callbacks: made in the surrogate, kept by native code there, released from the host") {
    Isolated there;
    std::atomic<int> calls{0}, elsewhere{0};
    auto h = counting_adder("plus_ten", 10, std::this_thread::get_id(), calls, elsewhere);
    std::string error;
    CHECK(there.error_of("register_i32", {Value(h)}).find("a registered callback outlives the call") != std::string::npos);
    auto registered = there.lib->callback("IntFn", h, error);
    REQUIRE(registered);
    CHECK(registered->is_stand_in());
    CHECK(registered->code() == nullptr);
    there.call("register_i32", {Value(registered)});
    // Native code keeps the pointer and calls it during later calls: each
    // call comes back to the thread waiting for that call.
    CHECK(I(there.call("fire_registered", {5}).ret) == 15);
    CHECK(I(there.call("fire_registered", {6}).ret) == 16);
    CHECK(I(there.call("apply_i32", {Value(registered), 1}).ret) == 11);  // where a callback of scope "call" goes too
    CHECK(elsewhere.load() == 0);
    // From the library's own threads (delivery inline): a dispatcher thread here.
    const int threads = 3, per = 20;
    CHECK(I(there.call("call_from_threads", {Value(registered), threads, per}).ret) == threads * (per * (per - 1) / 2 + 10 * per));
    CHECK(calls.load() == 3 + threads * per);
    // Not a function pointer of this process: an in-process library refuses it.
    CHECK(in_process().error_of("apply_i32", {Value(registered), 1}).find("was made by a library in another process") !=
          std::string::npos);
    // Another library's (another surrogate's) is refused, with a message.
    Isolated other;
    auto theirs = other.lib->callback("IntFn", h, error);
    REQUIRE(theirs);
    CHECK(there.error_of("register_i32", {Value(theirs)}).find("was made by another library") != std::string::npos);
    CHECK(I(other.call("apply_i32", {Value(theirs), 2}).ret) == 12);

    // Released: native code there still holds the pointer, and reaches the
    // trap, which names the callback; the outer call reports it.
    calls = 0;
    registered->release();
    CHECK_FALSE(registered->active());
    const std::string late = there.error_of("fire_registered", {7});
    CHECK(late.find("callback 'IntFn' was called after it was released") != std::string::npos);
    CHECK(calls.load() == 0);
    CHECK(there.error_of("register_i32", {Value(registered)}).find("callback 'IntFn' was already released") !=
          std::string::npos);
    there.call("register_i32", {Value()});  // nullable: native code forgets it
    CHECK(I(there.call("fire_registered", {1}).ret) == -999);
    CHECK(there.lib->callback("NoSuchSig", h, error) == nullptr);
    CHECK(error.find("no callback signature 'NoSuchSig'") != std::string::npos);
    CHECK(last_error().id == ErrorId::invalid_argument);

    // One made in a surrogate that has ended is refused by the next one.
    auto again = there.lib->callback("IntFn", h, error);
    REQUIRE(again);
    there.call("register_i32", {Value(again)});
    CHECK(I(there.call("fire_registered", {1}).ret) == 11);
    const int old = there.lib->pid();
    ::kill(old, SIGKILL);
    REQUIRE(ended(old));
    const std::string gone = there.error_of("apply_i32", {Value(again), 1});
    CHECK(gone.find("callback 'IntFn' was made in a surrogate that has ended") != std::string::npos);
    CHECK(I(there.call("fire_registered", {1}).ret) == -999);  // a fresh surrogate: nothing registered there
    again->release();  // harmless: its surrogate is gone
  }

  TEST_CASE("a surrogate that dies or hangs inside a callback: the call's error, then a fresh surrogate") {
    Isolated there;
    auto kills = host("kills", [&](const std::vector<Value>&, Value& r, std::string&) {
      ::kill(there.lib->pid(), SIGKILL);
      std::this_thread::sleep_for(100ms);
      r = Value(1);
      return true;
    });
    const std::string died = there.error_of("apply_i32", {Value(kills), 1});
    CHECK(died.find("apply_i32") != std::string::npos);
    auto twice = host("twice", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(I(a[0]) * 2);
      return true;
    });
    CHECK(I(there.call("apply_i32", {Value(twice), 4}).ret) == 8);

    Isolated slow("tests/fixtures/callbacks.json", "", 300ms);
    auto sleeps = host("sleeps", [](const std::vector<Value>&, Value& r, std::string&) {
      std::this_thread::sleep_for(800ms);
      r = Value(1);
      return true;
    });
    const std::string late = slow.error_of("apply_i32", {Value(sleeps), 1});
    CHECK(late.find("timed out") != std::string::npos);
    CHECK(last_error().id == ErrorId::deadline_exceeded);
    CHECK(I(slow.call("apply_i32", {Value(twice), 5}).ret) == 10);
  }

  TEST_CASE("host objects cross: native code in the surrogate keeps them, calls them, hands back the same object") {
    Isolated there("tests/fixtures/objects.json");
    auto value = std::make_shared<std::atomic<std::int64_t>>(0);
    const auto caller = std::this_thread::get_id();
    std::atomic<int> elsewhere{0};
    std::map<std::string, std::shared_ptr<HostFunction>> m;
    m["Add"] = host("Add", [value, caller, &elsewhere](const std::vector<Value>& a, Value& r, std::string&) {
      if (std::this_thread::get_id() != caller) ++elsewhere;
      r = Value(static_cast<std::int64_t>(value->fetch_add(I(a[0])) + I(a[0])));
      return true;
    });
    m["Get"] = host("Get", [value](const std::vector<Value>&, Value& r, std::string&) {
      r = Value(static_cast<std::int64_t>(value->load()));
      return true;
    });
    std::weak_ptr<HostObject> watch;
    Value store = there.call("store_create").ret;
    auto call = [&](const std::string& method, std::vector<Value> args = {}) { return mcall(store, method, std::move(args)); };
    {
      auto obj = std::make_shared<HostObject>("host-counter", std::vector<std::string>{}, m);
      watch = obj;
      call("Put", {Value(obj)});
      call("Put", {Value(obj)});  // the same object again: one native object there, two references
      CHECK(I(call("Count").ret) == 2);
      // Native code hands it back: the host's own object, not a wrapper.
      CallResult g = call("Get", {1});
      REQUIRE(g.out.size() == 1);
      const Value& back = g.out[0].second;
      REQUIRE(back.is<std::shared_ptr<HostObject>>());
      CHECK(back.as<std::shared_ptr<HostObject>>().get() == obj.get());
    }
    // The host dropped its references; the surrogate's keep it alive and callable.
    CHECK_FALSE(watch.expired());
    CHECK(I(call("AddAll", {5}).ret) == 5 + 10);  // two references to one counter: Add gives 5, then 10
    CHECK(value->load() == 10);
    CHECK(elsewhere.load() == 0);  // called back on the thread waiting for AddAll
    CHECK(I(call("Clear").ret) == 2);
    // The last native Release there drops the capability: the host's object goes (asynchronously).
    for (int i = 0; i < 200 && !watch.expired(); ++i) std::this_thread::sleep_for(10ms);
    CHECK(watch.expired());
    // A host object from a dead surrogate's time is simply sent again to the new one.
    auto again = std::make_shared<HostObject>("again", std::vector<std::string>{}, m);
    call("Put", {Value(again)});
    CHECK(I(call("AddAll", {1}).ret) == 11);
    CHECK(I(call("Clear").ret) == 1);
  }

  TEST_CASE("a host object made in an STA runs its methods on the STA's thread, whichever thread calls") {
    Isolated there("tests/fixtures/objects.json");
    Value store = there.call("store_create").ret;
    std::atomic<bool> put{false}, stop{false}, on_sta{true};
    std::atomic<int> calls{0};
    std::thread sta([&] {
      std::string e;
      auto apartment = enter_sta(e);
      REQUIRE(apartment);
      const auto me = std::this_thread::get_id();
      std::map<std::string, std::shared_ptr<HostFunction>> m;
      m["Add"] = host("Add", [&, me](const std::vector<Value>& a, Value& r, std::string&) {
        if (std::this_thread::get_id() != me) on_sta = false;
        ++calls;
        r = Value(I(a[0]));
        return true;
      });
      m["Get"] = host("Get", [](const std::vector<Value>&, Value& r, std::string&) {
        r = Value(0);
        return true;
      });
      auto obj = std::make_shared<HostObject>("sta-counter", std::vector<std::string>{}, m);
      const ObjectRef& ref = store.as<ObjectRef>();
      CallResult r;
      CHECK(library_of(ref).objects().call(ref, "Put", std::vector<Value>{Value(obj)}, r, e));
      INFO(e);
      CHECK(e.empty());
      obj = nullptr;
      put = true;
      apartment->run_until([&] { return stop.load(); });  // its message loop
      leave_apartment();
    });
    while (!put) std::this_thread::sleep_for(1ms);
    // From this thread (no apartment): the calls go to the STA's loop.
    const ObjectRef& ref = store.as<ObjectRef>();
    CallResult r;
    std::string e;
    CHECK(library_of(ref).objects().call(ref, "AddAll", std::vector<Value>{Value(7)}, r, e));
    INFO(e);
    CHECK(I(r.ret) == 7);
    CHECK(calls.load() == 1);
    CHECK(on_sta.load());
    CHECK(library_of(ref).objects().call(ref, "Clear", std::vector<Value>{}, r, e));
    stop = true;
    sta.join();
  }

  TEST_CASE("C API: a function value crosses, and a registered callback made in the surrogate") {
    CIsolated c("tests/fixtures/callbacks.json");
    marshal_library* lib = c.lib;
    static std::atomic<int> destroyed{0};
    marshal_value* fn = nullptr;
    REQUIRE(marshal_value_create_function(
                "plus_seven",
                [](void*, const marshal_value* const* args, size_t nargs, marshal_value** result, const char** error) {
                  std::int64_t v = 0;
                  if (nargs != 1 || marshal_value_get_int64(args[0], &v) != MARSHAL_OK) {
                    *error = "plus_seven: one integer expected";
                    return 1;
                  }
                  return marshal_value_create_int64(v + 7, result) == MARSHAL_OK ? 0 : 1;
                },
                nullptr, [](void*) { ++destroyed; }, &fn) == MARSHAL_OK);
    marshal_function* apply = nullptr;
    REQUIRE(marshal_library_function(lib, "apply_i32", &apply) == MARSHAL_OK);
    marshal_value* v = nullptr;
    REQUIRE(marshal_value_create_int64(35, &v) == MARSHAL_OK);
    marshal_value* args[] = {fn, v};
    marshal_result* r = nullptr;
    REQUIRE(marshal_function_call(apply, args, 2, &r) == MARSHAL_OK);
    std::int64_t got = 0;
    REQUIRE(marshal_value_get_int64(marshal_result_return(r), &got) == MARSHAL_OK);
    CHECK(got == 42);
    marshal_result_release(r);
    // A registered callback: made in the surrogate, kept there by native code.
    marshal_value* registered = nullptr;
    REQUIRE(marshal_value_create_callback(lib, "IntFn", fn, &registered) == MARSHAL_OK);
    marshal_function* reg = nullptr;
    marshal_function* fire = nullptr;
    REQUIRE(marshal_library_function(lib, "register_i32", &reg) == MARSHAL_OK);
    REQUIRE(marshal_library_function(lib, "fire_registered", &fire) == MARSHAL_OK);
    marshal_value* reg_args[] = {registered};
    REQUIRE(marshal_function_call(reg, reg_args, 1, &r) == MARSHAL_OK);
    marshal_result_release(r);
    marshal_value* fire_args[] = {v};
    REQUIRE(marshal_function_call(fire, fire_args, 1, &r) == MARSHAL_OK);
    REQUIRE(marshal_value_get_int64(marshal_result_return(r), &got) == MARSHAL_OK);
    CHECK(got == 42);
    marshal_result_release(r);
    REQUIRE(marshal_callback_deactivate(registered) == MARSHAL_OK);
    CHECK(marshal_callback_deactivate(registered) == MARSHAL_ERROR_MISUSE);
    CHECK(marshal_function_call(fire, fire_args, 1, &r) != MARSHAL_OK);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("called after it was released") != std::string::npos);
    marshal_value* unknown = nullptr;
    CHECK(marshal_value_create_callback(lib, "NoSuchSig", fn, &unknown) == MARSHAL_ERROR_BIND);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("no callback signature 'NoSuchSig'") != std::string::npos);
    marshal_value* ended_with = nullptr;  // deactivated with its library, as in-process
    REQUIRE(marshal_value_create_callback(lib, "IntFn", fn, &ended_with) == MARSHAL_OK);
    marshal_value_release(registered);
    marshal_value_release(v);
    marshal_value_release(fn);
    c.release();
    CHECK(marshal_callback_deactivate(ended_with) == MARSHAL_ERROR_MISUSE);
    CHECK(std::string(marshal_error_message(marshal_last_error())).find("already deactivated") != std::string::npos);
    marshal_value_release(ended_with);
    CHECK(destroyed.load() == 1);  // the surrogate's reference went with the library
  }

  TEST_CASE("C API: an object made in the surrogate, a host object passed to it and handed back") {
    CIsolated c("tests/fixtures/objects.json");
    marshal_library* lib = c.lib;
    marshal_value* store = nullptr;
    REQUIRE(marshal_value_create_object(lib, "Store", nullptr, 0, &store) == MARSHAL_OK);
    REQUIRE(marshal_value_kind(store) == MARSHAL_OBJECT);
    static std::atomic<int> destroyed{0};
    auto add = [](void*, const marshal_value* const* args, size_t, marshal_value** result, const char**) {
      std::int64_t v = 0;
      marshal_value_get_int64(args[0], &v);
      return marshal_value_create_int64(v * 3, result) == MARSHAL_OK ? 0 : 1;
    };
    auto get = [](void*, const marshal_value* const*, size_t, marshal_value** result, const char**) {
      return marshal_value_create_int64(0, result) == MARSHAL_OK ? 0 : 1;
    };
    const marshal_host_method methods[] = {{"Add", add}, {"Get", get}};
    const char* ifaces[] = {"ICounter"};
    marshal_value* obj = nullptr;
    REQUIRE(marshal_value_create_host_object("tripler", ifaces, 1, methods, 2, nullptr, [](void*) { ++destroyed; },
                                             &obj) == MARSHAL_OK);
    marshal_value* args[] = {obj};
    marshal_result* r = nullptr;
    REQUIRE(marshal_object_call(store, "Put", args, 1, &r) == MARSHAL_OK);
    marshal_result_release(r);
    marshal_value* by = nullptr;
    REQUIRE(marshal_value_create_int64(4, &by) == MARSHAL_OK);
    marshal_value* args2[] = {by};
    REQUIRE(marshal_object_call(store, "AddAll", args2, 1, &r) == MARSHAL_OK);
    std::int64_t total = 0;
    REQUIRE(marshal_value_get_int64(marshal_result_return(r), &total) == MARSHAL_OK);
    CHECK(total == 12);
    marshal_result_release(r);
    marshal_value* zero = nullptr;
    REQUIRE(marshal_value_create_int64(0, &zero) == MARSHAL_OK);
    marshal_value* args3[] = {zero};
    REQUIRE(marshal_object_call(store, "Get", args3, 1, &r) == MARSHAL_OK);
    const marshal_value* back = marshal_result_out(r, "item");
    REQUIRE(back);
    CHECK(marshal_object_same(back, obj) == 1);  // the host's own object again
    marshal_result_release(r);
    REQUIRE(marshal_object_call(store, "Clear", nullptr, 0, &r) == MARSHAL_OK);
    marshal_result_release(r);
    marshal_value_release(zero);
    marshal_value_release(by);
    marshal_value_release(obj);
    marshal_value_release(store);
    c.release();
    CHECK(destroyed.load() == 1);
  }

  TEST_CASE("host functions through marshal serve: results, qsort, nesting, library threads") {
    Server server({source_path("tests/fixtures/callbacks.json"), source_path("typemaps/libc.json")});
    const std::string address = "127.0.0.1:" + std::to_string(server.port);
    Isolated there("tests/fixtures/callbacks.json", address);
    same_as_in_process(there);
    reentrant(there);
    std::atomic<long> calls{0};
    auto counting = host("counting", [&](const std::vector<Value>& a, Value& r, std::string&) {
      ++calls;
      r = Value(I(a[0]));
      return true;
    });
    CHECK(I(there.call("call_from_threads", {Value(counting), 2, 20}).ret) == 2 * (19 * 20 / 2));
    CHECK(calls.load() == 40);
    // A registered callback made at the server, kept there, released from here.
    std::string error;
    auto registered = there.lib->callback("IntFn", counting, error);
    REQUIRE(registered);
    there.call("register_i32", {Value(registered)});
    CHECK(I(there.call("fire_registered", {9}).ret) == 9);
    CHECK(calls.load() == 41);
    registered->release();
    CHECK(there.error_of("fire_registered", {9}).find("called after it was released") != std::string::npos);
    there.call("register_i32", {Value()});
    Isolated libc("typemaps/libc.json", address);
    qsort_items(libc, 200);
    // A host object to the server and back.
    Server objects_server({source_path("tests/fixtures/objects.json")});
    Isolated objs("tests/fixtures/objects.json", "127.0.0.1:" + std::to_string(objects_server.port));
    std::map<std::string, std::shared_ptr<HostFunction>> m;
    m["Add"] = host("Add", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(I(a[0]) * 2);
      return true;
    });
    m["Get"] = host("Get", [](const std::vector<Value>&, Value& r, std::string&) {
      r = Value(0);
      return true;
    });
    auto obj = std::make_shared<HostObject>("doubler", std::vector<std::string>{}, m);
    Value store = objs.call("store_create").ret;
    const ObjectRef& ref = store.as<ObjectRef>();
    CallResult r;
    std::string e;
    CHECK(library_of(ref).objects().call(ref, "Put", std::vector<Value>{Value(obj)}, r, e));
    INFO(e);
    CHECK(e.empty());
    CHECK(library_of(ref).objects().call(ref, "AddAll", std::vector<Value>{Value(21)}, r, e));
    CHECK(I(r.ret) == 42);
    CHECK(library_of(ref).objects().call(ref, "Get", std::vector<Value>{Value(0)}, r, e));
    REQUIRE(r.out.size() == 1);
    CHECK(r.out[0].second == Value(obj));
  }

  TEST_CASE("marshal serve: while one client's host function runs, another client's calls are served") {
    Server server({source_path("tests/fixtures/callbacks.json")});
    const std::string address = "127.0.0.1:" + std::to_string(server.port);
    Isolated a("tests/fixtures/callbacks.json", address);
    Isolated b("tests/fixtures/callbacks.json", address);
    std::mutex m;
    std::condition_variable cv;
    bool b_done = false;
    // A's host function returns only once B's calls have: were B's calls held
    // up behind it (the server's one native thread), it would wait 10 s and
    // say so.
    auto waits_for_b = host("waits_for_b", [&](const std::vector<Value>& args, Value& r, std::string&) {
      std::unique_lock lock(m);
      const bool seen = cv.wait_for(lock, 10s, [&] { return b_done; });
      r = Value(seen ? I(args[0]) : -1);
      return true;
    });
    std::thread ta([&] { CHECK(I(a.call("apply_i32", {Value(waits_for_b), 7}).ret) == 7); });
    auto twice = host("twice", [](const std::vector<Value>& v, Value& r, std::string&) {
      r = Value(I(v[0]) * 2);
      return true;
    });
    for (int i = 0; i < 5; ++i) CHECK(I(b.call("apply_i32", {Value(twice), i}).ret) == 2 * i);
    {
      std::lock_guard lock(m);
      b_done = true;
    }
    cv.notify_all();
    ta.join();
  }

  TEST_CASE("marshal serve: a client whose connection ends while its host function runs frees the server for others") {
    Server server({source_path("tests/fixtures/callbacks.json")});
    const std::string address = "127.0.0.1:" + std::to_string(server.port);
    Isolated slow("tests/fixtures/callbacks.json", address, 300ms);
    Isolated other("tests/fixtures/callbacks.json", address);
    auto twice = host("twice", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(I(a[0]) * 2);
      return true;
    });
    CHECK(I(other.call("apply_i32", {Value(twice), 1}).ret) == 2);
    auto sleeps = host("sleeps", [](const std::vector<Value>&, Value& r, std::string&) {
      std::this_thread::sleep_for(1500ms);
      r = Value(1);
      return true;
    });
    std::thread t([&] {
      const std::string e = slow.error_of("apply_i32", {Value(sleeps), 1});
      CHECK(e.find("timed out") != std::string::npos);
    });
    std::this_thread::sleep_for(500ms);  // the deadline closed slow's connection meanwhile
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(I(other.call("apply_i32", {Value(twice), 21}).ret) == 42);
    // Not held up until the sleeping host function returns (1 s from here).
    CHECK(std::chrono::steady_clock::now() - t0 < 800ms);
    t.join();
  }
}
