// marshal tests: objects (COM-style interfaces) in both directions.
// Native objects wrapped for the host (methods of every parameter form,
// reference counts, identity through QueryInterface and round trips), host
// objects exposed to native code (vtables of closures, AddRef/Release keeping
// them alive, calls from native threads, failures as HRESULTs or on_error),
// classes. The fixture counts its live objects and any Release past zero:
// every test ends with both at zero.
#include "call_support.hpp"

#include "fixtures/objects.h"
#include "marshal/marshal.hpp"

#include <atomic>
#include <stdexcept>

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;

namespace {

Bound& ob() {
  static Bound b("tests/fixtures/objects.json");
  return b;
}

ObjectSpace& space() { return ob().lib->objects(); }

Value create(const std::string& cls, std::vector<Value> args = {}) {
  Value out;
  std::string error;
  bool ok = space().create(cls, args, out, error);
  INFO(error);
  REQUIRE(ok);
  REQUIRE(out.is<ObjectRef>());
  return out;
}

CallResult call(const Value& obj, const std::string& method, std::vector<Value> args = {}) {
  REQUIRE(obj.is<ObjectRef>());
  CallResult r;
  std::string error;
  bool ok = space().call(obj.as<ObjectRef>(), method, args, r, error);
  INFO(method << ": " << error);
  REQUIRE(ok);
  return r;
}

std::string call_error(const Value& obj, const std::string& method, std::vector<Value> args = {}) {
  CallResult r;
  std::string error;
  CHECK_FALSE(space().call(obj.as<ObjectRef>(), method, args, r, error));
  return error;
}

Value query(const Value& obj, const std::string& iface) {
  Value out;
  std::string error;
  bool ok = space().query(obj.as<ObjectRef>(), iface, out, error);
  INFO(error);
  REQUIRE(ok);
  return out;
}

std::int64_t live() { return I(ob().call("objects_live").ret); }
std::int64_t faults() { return I(ob().call("objects_faults").ret); }
std::int64_t refs(const Value& obj) { return I(ob().call("object_refs", {obj}).ret); }

// Every test leaves nothing alive and nothing released twice.
struct NoLeaks {
  ~NoLeaks() {
    CHECK(live() == 0);
    CHECK(faults() == 0);
    CHECK(space().stats().faults == 0);
    CHECK(space().stats().wrappers == 0);
  }
};

std::shared_ptr<HostFunction> fn(std::string name, std::function<bool(const std::vector<Value>&, Value&, std::string&)> f) {
  return std::make_shared<HostFunction>(HostFunction{std::move(name), std::move(f)});
}

// A host counter: Add/Get over shared state, so tests can watch it after the
// host dropped the object itself.
struct HostCounter {
  std::shared_ptr<std::atomic<std::int64_t>> value = std::make_shared<std::atomic<std::int64_t>>(0);
  std::shared_ptr<HostObject> make(std::string name = "host-counter", std::vector<std::string> ifaces = {}) const {
    auto v = value;
    std::map<std::string, std::shared_ptr<HostFunction>> m;
    m["Add"] = fn("Add", [v](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(static_cast<std::int64_t>(v->fetch_add(I(a[0])) + I(a[0])));
      return true;
    });
    m["Get"] = fn("Get", [v](const std::vector<Value>&, Value& r, std::string&) {
      r = Value(static_cast<std::int64_t>(v->load()));
      return true;
    });
    return std::make_shared<HostObject>(std::move(name), std::move(ifaces), std::move(m));
  }
};

struct CppCounter {
  std::int32_t value = 0;
  std::int32_t Add(std::int32_t by) { return value += by; }
  std::int32_t Get() const { return value; }
  double Wrong(std::int32_t by) { return by; }
};

}  // namespace

TEST_SUITE("objects") {
  TEST_CASE("a native object: methods through its vtable, one reference held and released once") {
    NoLeaks check;
    {
      Value c = create("Counter", {5});
      CHECK(live() == 1);
      CHECK(refs(c) == 1);  // the wrapper's one reference
      CHECK(I(call(c, "Add", {3}).ret) == 8);
      CHECK(I(call(c, "ICounter.Add", {2}).ret) == 10);
      CHECK(I(call(c, "Get").ret) == 10);
      // The method goes through the same vtable slot a C caller uses.
      CHECK(I(ob().call("counter_add_direct", {c, 1}).ret) == 11);
      Value copy = c;  // host copies share the wrapper: still one native reference
      CHECK(refs(copy) == 1);
      CHECK(c.as<ObjectRef>().object->cls()->threading == Threading::both);
      CHECK(space().stats().wrappers == 1);
    }
    CHECK(live() == 0);
  }

  TEST_CASE("an interface returned as NULL is an error naming the function or method, unless nullable") {
    NoLeaks check;
    // TYPEMAP.md, returns: a NULL result is host null when nullable, else an error naming the function.
    CHECK(ob().error_of("no_counter") == ob().tm->file + ": no_counter returned NULL, and its return is not nullable");
    CHECK(ob().call("no_counter_or_null").ret.is_null());
    {
      Value c = create("Counter", {1});
      CHECK(call_error(c, "IWidget.Nothing") ==
            ob().tm->file + ": IWidget.Nothing returned NULL, and its return is not nullable");
      CHECK(call(c, "IWidget.NothingOrNull").ret.is_null());
      CHECK(I(call(c, "Get").ret) == 1);  // the object is unharmed
    }
  }

  TEST_CASE("methods take every parameter form of platform invoke") {
    NoLeaks check;
    Value c = create("Counter", {4});
    Value w = query(c, "IWidget");
    CHECK(w == c);  // one identity
    // struct by value in, out struct through a pointer, HRESULT status
    CallResult r = call(w, "Scale", {Value(rec({{"x", 1.5}, {"y", -2.0}})), 2.0});
    CHECK(I(r.ret) == 0);
    CHECK(D(*ob().out(r, "out").field("x")) == 3.0);
    CHECK(D(*ob().out(r, "out").field("y")) == -4.0);
    // a failed HRESULT is an error naming the method and the code
    std::string e = call_error(w, "Scale", {Value(rec({{"x", 1.0}, {"y", 1.0}})), 0.0});
    CHECK(e.find("IWidget.Scale failed (HRESULT 0x80070057 E_INVALIDARG)") != std::string::npos);
    CHECK(call_error(w, "Fail", {static_cast<std::int64_t>(FX_E_FAIL)}).find("HRESULT 0x80004005 E_FAIL") != std::string::npos);
    CHECK(I(call(w, "Fail", {1}).ret) == 1);  // S_FALSE is a success
    // array counted by a parameter
    CHECK(I(call(w, "Sum", {List{1, 2, 3, 10}, 4}).ret) == 4 + 16);
    // in string, caller-allocated out string
    CHECK(I(call(w, "SetName", {"w\xc3\xa9"}).ret) == 3);
    CallResult g = call(w, "GetName", {16});
    CHECK(ob().out(g, "buffer").as<std::string>() == "w\xc3\xa9");
    CHECK(I(g.ret) == 3);
    // returned string, freed with free after the copy
    CHECK(call(w, "Describe").ret.as<std::string>() == "w\xc3\xa9=4");
    // callback parameter
    auto twice = fn("twice", [](const std::vector<Value>& a, Value& r, std::string&) {
      r = Value(I(a[0]) * 2);
      return true;
    });
    CHECK(I(call(w, "Apply", {Value(twice), 21}).ret) == 42 + 4);
    // an object through an out pointer: a new object, its own wrapper
    CallResult t = call(w, "Twin");
    const Value& twin = ob().out(t, "out");
    REQUIRE(twin.is<ObjectRef>());
    CHECK_FALSE(twin == c);
    CHECK(I(call(twin, "Get").ret) == 4);
    CHECK(live() == 2);
    // an object returned: the same object comes back as the same wrapper
    CHECK(refs(c) == 2);  // the wrapper holds ICounter and IWidget, one reference each
    Value self = call(w, "Self").ret;
    CHECK(self == c);
    CHECK(self.as<ObjectRef>().object == c.as<ObjectRef>().object);
    CHECK(refs(c) == 2);  // the returned reference was released: the wrapper already held ICounter
  }

  TEST_CASE("identity: one wrapper per object, whichever interface it came through") {
    NoLeaks check;
    {
      Value sq = create("Square", {3.0});
      CHECK(sq.as<ObjectRef>().object->cls()->threading == Threading::free);
      // Native code returns the same object as another interface (IShape sits
      // at another address): the host gets the same wrapper.
      Value shape = ob().call("as_shape", {sq}).ret;
      REQUIRE(shape.is<ObjectRef>());
      CHECK(shape.as<ObjectRef>().iface->name == "IShape");
      CHECK(sq.as<ObjectRef>().iface->name == "ICounter");
      CHECK(shape == sq);
      CHECK(shape.as<ObjectRef>().object.get() == sq.as<ObjectRef>().object.get());
      MESSAGE("wrap(square as ICounter) is wrap(square as IShape): " << (shape == sq));
      CHECK(refs(sq) == 2);  // one per interface pointer the wrapper holds
      CHECK(D(call(shape, "Area").ret) == 9.0);
      CHECK(I(call(shape, "Add", {2}).ret) == 2);  // a bare name also resolves on the object's other interfaces
      Value again = query(sq, "IShape");
      CHECK(again == shape);
      CHECK(refs(sq) == 2);
      std::string e;
      Value none;
      CHECK_FALSE(space().query(sq.as<ObjectRef>(), "IWidget", none, e));
      CHECK(e.find("does not implement IWidget (QueryInterface returned 0x80004002 E_NOINTERFACE)") != std::string::npos);
      CHECK_FALSE(space().query(sq.as<ObjectRef>(), "INope", none, e));
      CHECK(e.find("no interface 'INope'") != std::string::npos);
      CHECK(space().stats().wrappers == 1);
    }
    CHECK(live() == 0);
  }

  TEST_CASE("a dead object's wrapper is never reused for a new object at the same address") {
    NoLeaks check;
    std::uintptr_t first = 0;
    {
      Value a = create("Counter", {1});
      first = reinterpret_cast<std::uintptr_t>(a.as<ObjectRef>().object->identity());
    }
    CHECK(space().stats().wrappers == 0);
    for (int k = 0; k < 4; ++k) {
      Value b = create("Counter", {100 + k});
      // Whatever address malloc picks, the wrapper is fresh and calls the new object.
      CHECK(I(call(b, "Get").ret) == 100 + k);
      CHECK(refs(b) == 1);
      (void)first;
    }
  }

  TEST_CASE("host objects: native code keeps them alive, calls them, and hands back the same object") {
    NoLeaks check;
    HostCounter hc;
    std::weak_ptr<HostObject> watch;
    {
      Value store = create("Store");
      {
        auto host = hc.make();
        watch = host;
        Value h(host);
        call(store, "Put", {h});
        CHECK(host->native_refs() == 1);  // the store's AddRef
        CHECK(I(call(store, "Count").ret) == 1);
        // The store hands the object back: the host gets its own object, not a wrapper.
        CallResult g = call(store, "Get", {0});
        const Value& back = ob().out(g, "item");
        REQUIRE(back.is<std::shared_ptr<HostObject>>());
        CHECK(back == h);
        CHECK(back.as<std::shared_ptr<HostObject>>().get() == host.get());
        CHECK(host->native_refs() == 1);  // the returned reference went back to native code's count
        MESSAGE("host object round trip returns the same object: " << (back == h));
      }
      // The host dropped it; the store's reference keeps it alive and callable.
      CHECK_FALSE(watch.expired());
      CHECK(I(call(store, "AddAll", {5}).ret) == 5);
      CHECK(I(call(store, "AddAll", {5}).ret) == 10);
      CHECK(hc.value->load() == 10);
      CHECK(I(call(store, "Clear").ret) == 1);
      CHECK(watch.expired());  // the last native Release freed it
    }
  }

  TEST_CASE("host objects called from a native thread") {
    NoLeaks check;
    HostCounter a, b;
    Value store = create("Store");
    auto ha = a.make("a"), hb = b.make("b");
    call(store, "Put", {Value(ha)});
    call(store, "Put", {Value(hb)});
    Value native = create("Counter", {0});
    call(store, "Put", {native});
    CHECK(refs(native) == 2);  // the wrapper's and the store's
    // 500 rounds on a thread the fixture starts: each Add runs the host function there.
    const std::int64_t sum = I(call(store, "AddAllOnThread", {1, 500}).ret);
    CHECK(a.value->load() == 500);
    CHECK(b.value->load() == 500);
    CHECK(I(call(native, "Get").ret) == 500);
    CHECK(sum == 3 * (500 * 501 / 2));
    call(store, "Clear");
    CHECK(ha->native_refs() == 0);
    CHECK(refs(native) == 1);
  }

  TEST_CASE("host object failures: on_error to native code, HRESULT E_FAIL, the error re-raised to the host") {
    NoLeaks check;
    Value store = create("Store");
    std::map<std::string, std::shared_ptr<HostFunction>> m;
    m["Add"] = fn("Add", [](const std::vector<Value>&, Value&, std::string&) -> bool { throw std::runtime_error("boom"); });
    m["Get"] = fn("Get", [](const std::vector<Value>&, Value& r, std::string&) {
      r = Value(0);
      return true;
    });
    auto bad = std::make_shared<HostObject>("bad", std::vector<std::string>{}, m);
    call(store, "Put", {Value(bad)});
    HostCounter good;
    call(store, "Put", {Value(good.make())});
    std::string e = call_error(store, "AddAll", {10});
    CHECK(e.find("method ICounter.Add of host object 'bad' failed: threw: boom") != std::string::npos);
    // Native code got ICounter.Add's on_error (-1) and went on with the next item.
    CHECK(I(ob().call("store_last_sum").ret) == -1 + 10);
    call(store, "Clear");

    // An HRESULT method: native code receives E_FAIL.
    std::map<std::string, std::shared_ptr<HostFunction>> sm;
    sm["Area"] = fn("Area", [](const std::vector<Value>&, Value& r, std::string&) {
      r = Value(1.0);
      return true;
    });
    sm["Grow"] = fn("Grow", [](const std::vector<Value>& a, Value& r, std::string& why) {
      if (D(a[0]) > 10) {
        why = "too big";
        return false;
      }
      r = Value(0);
      return true;
    });
    auto shape = std::make_shared<HostObject>("shape", std::vector<std::string>{"IShape"}, sm);
    CHECK(I(ob().call("shape_grow", {Value(shape), 1.0}).ret) == 0);
    std::string g = ob().error_of("shape_grow", {Value(shape), 11.0});
    CHECK(g.find("method IShape.Grow of host object 'shape' failed: too big") != std::string::npos);
  }

  TEST_CASE("QueryInterface from native code on a host object; IUnknown identity") {
    NoLeaks check;
    std::map<std::string, std::shared_ptr<HostFunction>> m;
    m["Add"] = fn("Add", [](const std::vector<Value>& a, Value& r, std::string&) { r = a[0]; return true; });
    m["Get"] = fn("Get", [](const std::vector<Value>&, Value& r, std::string&) { r = Value(7); return true; });
    m["Area"] = fn("Area", [](const std::vector<Value>&, Value& r, std::string&) { r = Value(2.5); return true; });
    m["Grow"] = fn("Grow", [](const std::vector<Value>&, Value& r, std::string&) { r = Value(0); return true; });
    auto both = std::make_shared<HostObject>("both", std::vector<std::string>{"ICounter", "IShape"}, m);
    Value h(both);
    // as_shape asks the object (through its ICounter vtable) for IShape, and returns it.
    Value shape = ob().call("as_shape", {h}).ret;
    CHECK(shape == h);  // the same host object, not a wrapper
    CHECK(both->native_refs() == 0);
    CHECK(I(ob().call("counter_get", {h}).ret) == 7);
    CHECK(I(ob().call("object_refs", {h}).ret) == 0);
    // A host object that implements only ICounter answers E_NOINTERFACE: as_shape gives NULL.
    HostCounter hc;
    Value only(hc.make("only"));
    CHECK(ob().call("as_shape", {only}).ret.is_null());
  }

  TEST_CASE("bad input: clear errors, nothing leaked") {
    NoLeaks check;
    Value c = create("Counter", {1});
    CHECK(call_error(c, "Nope").find("ICounter has no method 'Nope' (methods: Add, Get, QueryInterface, AddRef, Release)") !=
          std::string::npos);
    CHECK(call_error(c, "Add", {1, 2}).find("ICounter.Add: expects 1 argument (by), got 2") != std::string::npos);
    CHECK(call_error(c, "Add", {"x"}).find("parameter 1 'by' (int32)") != std::string::npos);
    CHECK(call_error(c, "AddRef").find("is the engine's") != std::string::npos);
    CHECK(call_error(c, "IShape.Area").find("does not implement IShape") != std::string::npos);
    CHECK(ob().error_of("counter_get", {"not an object"}).find("expected an object implementing ICounter") !=
          std::string::npos);
    CHECK(ob().error_of("counter_get", {Value()}).find("null is not allowed") != std::string::npos);
    // A host object missing a method is refused before native code sees it.
    std::map<std::string, std::shared_ptr<HostFunction>> m;
    m["Add"] = fn("Add", [](const std::vector<Value>& a, Value& r, std::string&) { r = a[0]; return true; });
    auto partial = std::make_shared<HostObject>("partial", std::vector<std::string>{}, m);
    CHECK(ob().error_of("counter_get", {Value(partial)}).find("host object 'partial' does not implement ICounter.Get") !=
          std::string::npos);
    auto shape_only = std::make_shared<HostObject>("shape-only", std::vector<std::string>{"IShape"}, m);
    CHECK(ob().error_of("counter_get", {Value(shape_only)}).find("does not implement ICounter (it implements IShape)") !=
          std::string::npos);
    // A failing factory: the error, and no object.
    std::string e;
    Value none;
    const std::vector<Value> negative{Value(-1.0)};
    CHECK_FALSE(space().create("Square", negative, none, e));
    CHECK(e.find("square_create failed") != std::string::npos);
    CHECK_FALSE(space().create("Nope", {}, none, e));
    CHECK(e.find("no class 'Nope' (classes: ApartmentCounter, Counter, FreeStore, ProbeApartment") != std::string::npos);
  }

  TEST_CASE("typed C++: native objects with typed methods, host objects from member functions") {
    NoLeaks check;
    marshal::library lib(source_path("tests/fixtures/objects.json"));
    {
      marshal::object c = lib.create("Counter", 5);
      CHECK(c.interface_name() == "ICounter");
      CHECK(c.call<std::int32_t>("Add", 3) == 8);
      marshal::object w = c.as("IWidget");
      CHECK(w == c);
      Vec2 scaled{};
      CHECK(w.call<std::int32_t>("Scale", Vec2{1, -2}, 3.0, marshal::out<Vec2>(scaled)) == 0);
      CHECK(scaled.x == 3.0);
      CHECK(scaled.y == -6.0);
      std::string name;
      CHECK(w.call<std::int32_t>("GetName", marshal::out<std::string>(name), 32) == 7);
      CHECK(name == "counter");
      CHECK(w.call<std::int64_t>("Sum", std::vector<std::int32_t>{1, 2, 3}, 3) == 8 + 6);
      CHECK(w.call<std::string>("Describe") == "counter=8");
      CHECK_THROWS_WITH_AS(w.call<std::int32_t>("Fail", static_cast<std::int32_t>(FX_E_FAIL)),
                           doctest::Contains("IWidget.Fail failed (HRESULT 0x80004005 E_FAIL)"), marshal::error);
      CHECK_THROWS_WITH_AS(c.call<double>("Add", 1), doctest::Contains("does not match typemap type int32"), marshal::error);
      CHECK_THROWS_WITH_AS(c.call<std::int32_t>("Add", 1.5), doctest::Contains("parameter 0 'by'"), marshal::error);
      CHECK_THROWS_WITH_AS(c.call<std::int32_t>("Add"), doctest::Contains("takes 1 parameters, the call passes 0"),
                           marshal::error);
      CHECK(w.call<marshal::object>("Self") == c);
      // Bound once: the fast path is one ffi_call through the vtable slot.
      auto add = c.bind<std::int32_t(std::int32_t)>("Add");
      static_assert(decltype(add)::fast);
      CHECK(add(2) == 10);
      CHECK(c.call<std::int32_t>("Get") == 10);
      CHECK(add(-2) == 8);
      auto fail = w.bind<std::int32_t(std::int32_t)>("Fail");  // an HRESULT: checked by the plan
      CHECK(fail(1) == 1);
      CHECK_THROWS_WITH_AS(fail(static_cast<std::int32_t>(FX_E_FAIL)), doctest::Contains("E_FAIL"), marshal::error);
      CHECK_THROWS_WITH_AS(c.bind<std::int64_t(std::int32_t)>("Add"), doctest::Contains("int64_t does not match"),
                           marshal::error);
      marshal::object twin;
      w.call<std::int32_t>("Twin", marshal::out<marshal::object>(twin));
      CHECK_FALSE(twin == c);
      CHECK(twin.call<std::int32_t>("Get") == 8);
      marshal::object sq = lib.create("Square", 2.0);
      CHECK(sq.as("IShape").call<double>("Area") == 4.0);

      auto impl = std::make_shared<CppCounter>();
      marshal::object h =
          lib.implement(impl, {"ICounter"}).method("Add", &CppCounter::Add).method("ICounter.Get", &CppCounter::Get).make();
      CHECK(h.is_host());
      marshal::object store = lib.create("Store");
      store.call<std::int32_t>("Put", h);
      store.call<std::int32_t>("Put", c);
      CHECK(store.call<std::int64_t>("AddAll", 4) == 4 + 12);
      CHECK(impl->value == 4);
      marshal::object back;
      store.call<std::int32_t>("Get", 0, marshal::out<marshal::object>(back));
      CHECK(back == h);  // the host object itself
      store.call<std::int32_t>("Get", 1, marshal::out<marshal::object>(back));
      CHECK(back == c);  // the native object's one wrapper
      auto get = lib.function<std::int32_t(marshal::object)>("counter_get");
      CHECK(get(h) == 4);
      CHECK(get(c) == 12);
      store.call<std::int32_t>("Clear");
      CHECK_THROWS_WITH_AS(lib.implement(impl, {"ICounter"}).method("Add", &CppCounter::Wrong),
                           doctest::Contains("ICounter.Add: C++ type double does not match typemap type int32"),
                           marshal::error);
      CHECK_THROWS_WITH_AS(lib.implement(impl, {"ICounter"}).method("Area", &CppCounter::Get),
                           doctest::Contains("no method 'Area' in ICounter"), marshal::error);
      CHECK_THROWS_WITH_AS(lib.create("Counter", std::string("five")), doctest::Contains("counter_create"), marshal::error);
    }
  }
}
