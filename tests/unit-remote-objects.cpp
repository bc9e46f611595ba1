// marshal tests: native objects across the process boundary (issue 17, part 3).
// An object made in the surrogate (or `marshal serve`) is a proxy on the host:
// its methods give the in-process results, identity holds through interfaces,
// a proxy passed back is the original object there, the surrogate's single
// reference is released when the host drops the proxy (the fixture's live and
// fault counters, read through the same library), and a dead surrogate's
// proxies are clear errors.
#include "call_support.hpp"
#include "isolated_support.hpp"
#include "serve_support.hpp"

#include "apartments/apartment.hpp"
#include "base/error.hpp"
#include "marshal/marshal.hpp"
#include "objects/object.hpp"
#include "remote/surrogate.hpp"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <cerrno>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;
using namespace std::chrono_literals;

namespace {

const char* fixture = "tests/fixtures/objects.json";

struct Isolated : IsolatedBase {
  explicit Isolated(const std::string& connect = "", std::chrono::milliseconds deadline = 0ms) {
    open_path(fixture, deadline, connect);
  }
  // objects.json plus poke_i32 (a write through any address), to crash the surrogate.
  Isolated(const std::string& text, const std::string& file) { open_text(text, file); }
  std::int64_t live() { return I(call("objects_live").ret); }
  // Releases cross asynchronously: the live count reaches `want` within 2 s.
  bool settles(std::int64_t want) {
    for (int i = 0; i < 200; ++i) {
      if (live() == want) return true;
      std::this_thread::sleep_for(10ms);
    }
    return live() == want;
  }
};


Value as(const Value& obj, const std::string& iface) {
  const ObjectRef& ref = obj.as<ObjectRef>();
  Value out;
  std::string error;
  const bool ok = library_of(ref).objects().query(ref, iface, out, error);
  INFO(iface << ": " << error);
  REQUIRE(ok);
  return out;
}

const Value& out_of(const CallResult& r, const std::string& name) {
  for (const auto& [k, v] : r.out)
    if (k == name) return v;
  FAIL("no out value " << name);
  static Value none;
  return none;
}

bool is_remote(const Value& v) { return v.is<ObjectRef>() && v.as<ObjectRef>().remote && !v.as<ObjectRef>().object; }

}  // namespace

TEST_SUITE("remote") {
  TEST_CASE("an object made in the surrogate is a proxy whose methods give the in-process results and errors") {
    Bound here(fixture);
    Isolated there;
    Value a = there.call("counter_create", {5}).ret;
    REQUIRE(is_remote(a));
    CHECK(a.as<ObjectRef>().iface->name == "ICounter");
    Value b = here.call("counter_create", {5}).ret;
    CHECK(I(mcall(a, "Add", {3}).ret) == 8);
    CHECK(I(mcall(b, "Add", {3}).ret) == 8);
    CHECK(I(mcall(a, "Get").ret) == I(mcall(b, "Get").ret));
    // Every parameter form, compared with the same calls in-process.
    Value wa = as(a, "IWidget"), wb = as(b, "IWidget");
    REQUIRE(is_remote(wa));
    struct Case {
      const char* method;
      std::vector<Value> args;
    };
    const std::vector<Case> cases = {
        {"Scale", {Value(rec({{"x", 1.5}, {"y", -2.0}})), 4.0}},
        {"Sum", {Value(List{1, 2, 3, 40}), 4}},
        {"SetName", {"remote"}},
        {"GetName", {16}},
        {"Describe", {}},
        {"ICounter.Add", {-1}},
        {"Fail", {1}},
    };
    for (const auto& c : cases) {
      INFO(c.method);
      CallResult x = mcall(wa, c.method, c.args), y = mcall(wb, c.method, c.args);
      CHECK(x.ret == y.ret);
      CHECK(x.out == y.out);
    }
    CHECK(out_of(mcall(wa, "GetName", {16}), "buffer") == Value("remote"));
    CHECK(out_of(mcall(wa, "Scale", {Value(rec({{"x", 1.0}, {"y", 2.0}})), 3.0}), "out") ==
          Value(rec({{"x", 3.0}, {"y", 6.0}})));
    // Failures: the same message and the same structured record as in-process.
    for (const auto& [method, args] : std::vector<std::pair<std::string, std::vector<Value>>>{
             {"Fail", {static_cast<std::int32_t>(0x80004005u)}}, {"Sum", {"not a list"}}, {"Nope", {}}}) {
      INFO(method);
      const std::string ex = mcall_error(wb, method, args);
      const Error rx = last_error();
      const std::string ey = mcall_error(wa, method, args);
      const Error ry = last_error();
      CHECK(ey == ex);
      if (rx.message == ex) {  // a failure the engine records (an unknown method name is a message only)
        CHECK(ry.id == rx.id);
        CHECK(ry.native_kind == rx.native_kind);
        CHECK(ry.native_code == rx.native_code);
        CHECK(ry.message == ey);
      }
    }
    CHECK(mcall_error(wa, "Fail", {static_cast<std::int32_t>(0x80004005u)}).find("HRESULT 0x80004005 E_FAIL") !=
          std::string::npos);
    // A class of the typemap made through the isolated library's objects.
    Value made;
    std::string error;
    REQUIRE(there.lib->objects().create("Counter", std::vector<Value>{7}, made, error));
    REQUIRE(is_remote(made));
    CHECK(I(mcall(made, "Add", {1}).ret) == 8);
  }

  TEST_CASE("identity crosses the boundary: one proxy per remote object, whichever interface or call it came through") {
    Isolated there;
    Value a = there.call("counter_create", {1}).ret;
    Value other = there.call("counter_create", {1}).ret;
    Value w = as(a, "IWidget");
    Value back = as(w, "ICounter");
    CHECK(w == a);
    CHECK(back == a);
    CHECK_FALSE(other == a);
    CHECK(w.as<ObjectRef>().remote == a.as<ObjectRef>().remote);  // the same proxy
    CHECK(w.as<ObjectRef>().iface->name == "IWidget");
    Value self = mcall(w, "Self").ret;  // a method returning its own object
    CHECK(self == a);
    CHECK(self.as<ObjectRef>().remote == a.as<ObjectRef>().remote);
    Value twin = out_of(mcall(w, "Twin"), "out");  // a new object through an out pointer
    REQUIRE(is_remote(twin));
    CHECK_FALSE(twin == a);
    // Through a native container: put, then read back as an out value.
    Value store = there.call("store_create").ret;
    mcall(store, "Put", {a});
    mcall(store, "Put", {twin});
    CHECK(out_of(mcall(store, "Get", {0}), "item") == a);
    CHECK(out_of(mcall(store, "Get", {1}), "item") == twin);
    CHECK(out_of(mcall(store, "Get", {0}), "item").as<ObjectRef>().remote == a.as<ObjectRef>().remote);
    // Another library's proxies are other objects, even at the same remote address.
    Isolated second;
    Value c = second.call("counter_create", {1}).ret;
    CHECK_FALSE(c == a);
  }

  TEST_CASE("a proxy passed back to its library is the original native object there") {
    Bound here(fixture);
    Isolated there;
    Value a = there.call("counter_create", {10}).ret;
    Value b = here.call("counter_create", {10}).ret;
    CHECK(I(there.call("counter_add_direct", {a, 5}).ret) == 15);  // native code calls its vtable
    CHECK(I(here.call("counter_add_direct", {b, 5}).ret) == 15);
    CHECK(I(mcall(a, "Get").ret) == 15);                              // the same object's state
    // The surrogate holds one reference per interface its wrapper holds, as in-process.
    CHECK(I(there.call("object_refs", {a}).ret) == 1);
    CHECK(I(here.call("object_refs", {b}).ret) == 1);
    CHECK(I(there.call("counter_get", {as(a, "IWidget")}).ret) == 15);
    CHECK(I(here.call("counter_get", {as(b, "IWidget")}).ret) == 15);
    CHECK(I(there.call("object_refs", {a}).ret) == 2);
    CHECK(I(here.call("object_refs", {b}).ret) == 2);
    // A native object with a second interface: as_shape queries it natively.
    CallResult sq = there.call("square_create", {3.0});
    Value square = out_of(sq, "out");
    Value shape = there.call("as_shape", {square}).ret;
    REQUIRE(is_remote(shape));
    CHECK(shape == square);
    CHECK(mcall(shape, "Area").ret == Value(9.0));
    CHECK(mcall(as(square, "IShape"), "Area").ret == Value(9.0));
  }

  TEST_CASE("the surrogate's reference is released when the host drops its last proxy, never twice") {
    Isolated there;
    there.call("objects_reset");
    const std::int64_t base = there.live();
    {
      Value a = there.call("counter_create", {1}).ret;
      Value w = as(a, "IWidget");
      Value twin = out_of(mcall(w, "Twin"), "out");
      Value self = mcall(w, "Self").ret;
      CHECK(there.live() == base + 2);
      a = Value();
      w = Value();
      CHECK(I(mcall(self, "Add", {1}).ret) == 2);  // one proxy still held: the object lives
      CHECK(there.live() == base + 2);
      twin = Value();
      CHECK(there.settles(base + 1));  // twin's capability dropped: released in the surrogate
      CHECK(I(mcall(self, "Get").ret) == 2);
    }
    CHECK(there.settles(base));
    // A native holder keeps the object after the host lets go.
    Value store = there.call("store_create").ret;
    {
      Value c = there.call("counter_create", {4}).ret;
      mcall(store, "Put", {c});
    }
    std::this_thread::sleep_for(50ms);
    CHECK(there.live() == base + 2);  // the store and the counter it holds
    CHECK(I(mcall(out_of(mcall(store, "Get", {0}), "item"), "Get").ret) == 4);
    mcall(store, "Clear");
    CHECK(there.settles(base + 1));
    store = Value();
    CHECK(there.settles(base));
    CHECK(I(there.call("objects_faults").ret) == 0);  // no Release past zero
  }

  TEST_CASE("objects of another library or process are refused with a message naming the parameter") {
    Bound here(fixture);
    Isolated there;
    Isolated second;
    Value local = here.call("counter_create", {1}).ret;
    Value remote_a = there.call("counter_create", {1}).ret;
    Value remote_b = second.call("counter_create", {1}).ret;
    std::string e = there.error_of("counter_get", {local});
    CHECK(e == "counter_get: parameter 0 'c': ICounter is an object of this process; only objects that came from this "
               "library's surrogate can be passed to it");
    e = there.error_of("counter_get", {remote_b});
    CHECK(e == "counter_get: parameter 0 'c': ICounter came from another library (" + source_path(fixture) +
               "); an object can be passed only to the library it came from");
    e = here.error_of("counter_get", {remote_a});
    CHECK(e.find("an object of another process (ICounter of " + source_path(fixture) +
                 ") can be passed only to functions and methods of the library it came from") != std::string::npos);
    // As a method argument too.
    Value store = there.call("store_create").ret;
    e = mcall_error(store, "Put", {remote_b});
    CHECK(e.find("came from another library") != std::string::npos);
    CHECK(I(mcall(store, "Count").ret) == 0);
  }

  TEST_CASE("a dead surrogate's proxies are clear errors; its releases never hang; a new surrogate serves new objects") {
    nlohmann::ordered_json tm = nlohmann::ordered_json::parse(read_text(source_path(fixture)));
    tm["functions"]["poke_i32"] = nlohmann::ordered_json::parse(
        R"({"returns": "void", "params": [{"name": "address", "type": "uint64"}, {"name": "v", "type": "int32"}]})");
    // IWidget.Sum's array declared as a plain address: a crash inside a method.
    for (auto& m : tm["interfaces"]["IWidget"]["methods"])
      if (m["name"] == "Sum")
        m["params"] = nlohmann::ordered_json::parse(
            R"([{"name": "xs", "type": "uint64"}, {"name": "n", "type": "int32"}])");
    Isolated there(tm.dump(), "objects-poke.json");
    Value a = there.call("counter_create", {1}).ret;
    Value w = as(a, "IWidget");
    const int pid = there.lib->pid();
    const std::string crash = "function poke_i32 crashed in the surrogate (pid " + std::to_string(pid) +
                              ") with SIGSEGV (address 0x48)";
    CHECK(there.error_of("poke_i32", {0x48, 1}) == crash);
    const std::string e = mcall_error(w, "Add", {1});
    CHECK(e == "IWidget.Add: the object came from a surrogate that has ended (" + crash +
               "); the objects of a dead surrogate are gone with it");
    CHECK(last_error().id == ErrorId::disconnected);
    Value q;
    std::string error;
    CHECK_FALSE(library_of(a.as<ObjectRef>()).objects().query(a.as<ObjectRef>(), "ICounter", q, error));
    CHECK(error.find("the object came from a surrogate that has ended") != std::string::npos);
    // Passing it back to a function of the library (which starts a new surrogate).
    CHECK(there.error_of("counter_get", {a}).find("the object came from a surrogate that has ended") !=
          std::string::npos);
    Value fresh = there.call("counter_create", {3}).ret;
    CHECK(there.lib->pid() != pid);
    CHECK(I(mcall(fresh, "Add", {1}).ret) == 4);
    CHECK_FALSE(fresh == a);
    a = Value();
    w = Value();  // dropping a dead proxy is quick and harmless
    CHECK(there.live() == 1);

    // Killed from outside while a proxy is held.
    const int pid2 = there.lib->pid();
    REQUIRE(::kill(pid2, SIGKILL) == 0);
    CHECK(ended(pid2));
    const std::string e2 = mcall_error(fresh, "Get");
    INFO(e2);
    CHECK(e2.find("ICounter.Get: the object came from a surrogate that has ended (the surrogate (pid " +
                  std::to_string(pid2) + ") was killed by SIGKILL)") == 0);
    CHECK(last_error().id == ErrorId::disconnected);

    // A crash inside a method names the method, and its object is gone with the surrogate.
    Value c = there.call("counter_create", {1}).ret;
    Value bad = as(c, "IWidget");
    const int pid3 = there.lib->pid();
    CHECK(mcall_error(bad, "Sum", {0x48, 1}) == "function IWidget.Sum crashed in the surrogate (pid " +
                                                   std::to_string(pid3) + ") with SIGSEGV (address 0x48)");
    CHECK(last_error().id == ErrorId::native_crash);
    CHECK(mcall_error(c, "Get").find("the object came from a surrogate that has ended (function IWidget.Sum "
                                     "crashed") != std::string::npos);
  }

  TEST_CASE("a method call past the library's deadline kills the surrogate and is an error naming the method") {
    Isolated there("", 300ms);
    Value probe = there.call("probe_create").ret;
    CHECK(I(mcall(probe, "Enter", {1000}).ret) >= 0);  // 1 ms: within the deadline
    const int pid = there.lib->pid();
    const auto start = std::chrono::steady_clock::now();
    const std::string e = mcall_error(probe, "Enter", {5000000});  // 5 s
    CHECK(std::chrono::steady_clock::now() - start < 4s);
    CHECK(e == "function IProbe.Enter timed out after 300 ms in the surrogate (pid " + std::to_string(pid) +
               "); the surrogate was killed");
    CHECK(last_error().id == ErrorId::deadline_exceeded);
    CHECK(mcall_error(probe, "Calls").find("the object came from a surrogate that has ended") != std::string::npos);
    Value fresh = there.call("probe_create").ret;  // a new surrogate
    CHECK(I(mcall(fresh, "Calls").ret) == 0);
  }

  TEST_CASE("a proxy that outlives its isolated library is an error, not a crash") {
    Context ctx;  // outlives the references, as in-process
    Value kept;
    {
      remote::IsolateOptions o;
      o.surrogate = MARSHAL_SURROGATE;
      std::string error;
      auto lib = remote::IsolatedLibrary::open_file(ctx, source_path(fixture), o, error);
      REQUIRE(lib);
      CallResult r;
      REQUIRE(lib->call("counter_create", std::vector<Value>{1}, r, error));
      kept = r.ret;
      CHECK(I(mcall(kept, "Add", {1}).ret) == 2);
    }
    const std::string e = mcall_error(kept, "Get");
    CHECK(e == source_path(fixture) + ": ICounter.Get: the isolated library this object came from is closed");
  }

  TEST_CASE("typed C++ API: objects of an isolated library, made by create() or returned by a function") {
    ::setenv("MARSHAL_SURROGATE", MARSHAL_SURROGATE, 1);
    marshal::library there(source_path(fixture), {.isolate = marshal::isolation::process});
    marshal::object c = there.create("Counter", 5);
    CHECK(c.interface_name() == "ICounter");
    CHECK(c.call<std::int32_t>("Add", 3) == 8);
    marshal::object w = c.as("IWidget");
    CHECK(w == c);
    auto add = w.bind<std::int32_t(std::int32_t)>("Add");  // through the engine: a remote object has no vtable here
    CHECK(add(2) == 10);
    std::string name;
    CHECK(w.call<std::int32_t>("GetName", marshal::out<std::string>(name), 32) == 7);
    CHECK(name == "counter");
    auto make = there.function<marshal::object(std::int32_t)>("counter_create");
    marshal::object d = make(1);
    CHECK_FALSE(d == c);
    auto get = there.function<std::int32_t(marshal::object)>("counter_get");
    CHECK(get(w) == 10);  // passed back: the original object in the surrogate
    CHECK(get(d) == 1);
  }

  TEST_CASE("marshal serve on loopback: objects, identity, pass-back and releases over TCP") {
    Server server({fixture});
    Isolated there(server.address());
    there.call("objects_reset");
    const std::int64_t base = there.live();
    {
      Value a = there.call("counter_create", {2}).ret;
      REQUIRE(is_remote(a));
      CHECK(I(mcall(a, "Add", {3}).ret) == 5);
      Value w = as(a, "IWidget");
      CHECK(w == a);
      CHECK(mcall(w, "Self").ret == a);
      CHECK(I(there.call("counter_add_direct", {w, 10}).ret) == 15);
      CHECK(there.live() == base + 1);
    }
    CHECK(there.settles(base));
    // A client that disconnects holding objects: the server releases them.
    {
      Isolated other(server.address());
      Value x = other.call("counter_create", {1}).ret;
      Value y = other.call("counter_create", {1}).ret;
      CHECK(there.live() == base + 2);
    }
    CHECK(there.settles(base));
    CHECK(I(there.call("objects_faults").ret) == 0);
  }

  TEST_CASE("apartments: a remote reference belongs to the apartment that received it (wrong-apartment rules), and marshals to another") {
    Isolated there;
    Value in_sta;
    std::mutex m;
    std::condition_variable cv;
    bool got = false, done = false;
    std::uint64_t token = 0;
    std::thread sta([&] {
      std::string e;
      auto apartment = enter_sta(e);
      REQUIRE(apartment);
      Value c = there.call("counter_create", {5}).ret;
      CHECK(I(mcall(c, "Add", {1}).ret) == 6);  // used in its apartment
      std::uint64_t t = 0;
      CHECK(marshal_interface(c, t, e));  // for another apartment
      {
        std::lock_guard lock(m);
        in_sta = c;
        token = t;
        got = true;
      }
      cv.notify_all();
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return done; });
      in_sta = Value();
      c = Value();
      lock.unlock();
      leave_apartment();
    });
    {
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return got; });
    }
    // This thread entered no apartment: the STA's reference is not its to use.
    const std::string e = mcall_error(in_sta, "Get");
    CHECK(e.find("wrong apartment") != std::string::npos);
    CHECK(last_error().id == ErrorId::wrong_apartment);
    Value q;
    std::string error;
    CHECK_FALSE(library_of(in_sta.as<ObjectRef>()).objects().query(in_sta.as<ObjectRef>(), "ICounter", q, error));
    CHECK(last_error().id == ErrorId::wrong_apartment);
    // Marshaled to another apartment (a token), the same remote object is
    // that apartment's to use: its calls go to the surrogate directly.
    std::thread mta([&] {
      std::string e;
      auto apartment = enter_mta(e);
      REQUIRE(apartment);
      Value moved;
      REQUIRE(unmarshal_interface(token, moved, e));
      CHECK(identity_of(moved.as<ObjectRef>()) == identity_of(in_sta.as<ObjectRef>()));
      CHECK(moved.as<ObjectRef>().home == apartment);
      CHECK(I(mcall(moved, "Add", {10}).ret) == 16);  // the same counter: 6 + 10
      CHECK_FALSE(unmarshal_interface(token, moved, e));  // a token is used once
      moved = Value();
      leave_apartment();
    });
    mta.join();
    // A reference received outside any apartment is usable from any thread, as in-process.
    Value free = there.call("counter_create", {1}).ret;
    std::thread other([&] { CHECK(I(mcall(free, "Add", {2}).ret) == 3); });
    other.join();
    {
      std::lock_guard lock(m);
      done = true;
    }
    cv.notify_all();
    sta.join();
  }
}
