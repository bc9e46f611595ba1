// marshal tests: the dynamic Value itself.
// Its size (a large kind lives in a box, so a list of numbers is not as large
// as the rarest kind), and copy, move, take and assignment between every pair
// of kinds, boxed ones included: values equal after, moved-from states as
// documented, every shared reference counted exactly (nothing leaked, nothing
// released twice), and a native object's identity kept.
#include "call_support.hpp"

#include "objects/object.hpp"

#include <array>
#include <stdexcept>
#include <variant>

using namespace marshal::engine;
using namespace marshal::test;

namespace {

constexpr std::size_t kinds = 16;
std::size_t at(Value::Type t) { return static_cast<std::size_t>(t); }

Bound& objects_fixture() {
  static Bound b("tests/fixtures/objects.json");
  return b;
}
std::int64_t live() { return I(objects_fixture().call("objects_live").ret); }
std::int64_t native_refs(const Value& obj) { return I(objects_fixture().call("object_refs", {obj}).ret); }

// What the samples share, held here too so its use counts can be read.
struct Resources {
  int handle_releases = 0;
  std::shared_ptr<HandleBox> handle;
  std::shared_ptr<NativeBox> native = std::make_shared<NativeBox>();
  std::shared_ptr<HostFunction> function =
      std::make_shared<HostFunction>(HostFunction{"f", [](const std::vector<Value>&, Value&, std::string&) { return true; }});
  // A Callback is made by a callback pool only; a Value never reads through
  // the pointer, so one aliasing a counted int stands in for one.
  std::shared_ptr<Callback> callback = [] {
    auto owner = std::make_shared<int>(0);
    return std::shared_ptr<Callback>(owner, reinterpret_cast<Callback*>(owner.get()));
  }();
  Value object;
  std::shared_ptr<HostObject> host = std::make_shared<HostObject>("host", std::vector<std::string>{},
                                                                  std::map<std::string, std::shared_ptr<HostFunction>>{});
  Resources() {
    handle = std::make_shared<HandleBox>();
    handle->value = 7;
    handle->type_name = "H";
    handle->release = [this](std::int64_t) { ++handle_releases; };
    native->storage = std::make_unique<std::byte[]>(8);
    native->size = 8;
    std::string error;
    const std::vector<Value> args{5};
    const bool ok = objects_fixture().lib->objects().create("Counter", args, object, error);
    INFO(error);
    REQUIRE(ok);
    REQUIRE(object.is<ObjectRef>());
  }

  // One value of every kind, in the order of Value::Type.
  std::vector<Value> samples() const {
    std::vector<Value> s;
    s.emplace_back();
    s.emplace_back(true);
    s.emplace_back(std::int64_t{-42});
    s.emplace_back(std::uint64_t{UINT64_MAX});
    s.emplace_back(2.5);
    s.emplace_back(std::string(100, 'x'));  // longer than the short-string buffer: heap memory to leak or free twice
    s.emplace_back(Bytes{{1, 2, 3}});
    s.emplace_back(List{Value(1), Value("two"), object});
    s.emplace_back(rec({{"a", 1}, {"o", object}}));
    s.emplace_back(Address{0x1000});
    s.emplace_back(handle);
    s.emplace_back(native);
    s.emplace_back(function);
    s.emplace_back(callback);
    s.emplace_back(object);
    s.emplace_back(host);
    REQUIRE(s.size() == kinds);
    for (std::size_t k = 0; k < kinds; ++k) REQUIRE(at(s[k].type()) == k);
    return s;
  }

  // The use count of what each kind's sample shares (0: a kind that shares
  // nothing). A list's and a record's copies are counted through the object
  // they hold.
  std::array<long, kinds> counts() const {
    std::array<long, kinds> c{};
    c[at(Value::Type::handle)] = handle.use_count();
    c[at(Value::Type::native)] = native.use_count();
    c[at(Value::Type::function)] = function.use_count();
    c[at(Value::Type::callback)] = callback.use_count();
    c[at(Value::Type::object)] = object.as<ObjectRef>().object.use_count();
    c[at(Value::Type::host_object)] = host.use_count();
    return c;
  }
};

// How many references a value of kind t holds to the resources, by kind.
std::array<long, kinds> held_by(Value::Type t) {
  std::array<long, kinds> h{};
  if (t == Value::Type::list || t == Value::Type::record) h[at(Value::Type::object)] = 1;
  else if (t >= Value::Type::handle) h[at(t)] = 1;
  return h;
}

// The counts when values of the given kinds are alive besides the base.
std::array<long, kinds> with(std::array<long, kinds> base, std::initializer_list<Value::Type> alive) {
  for (Value::Type t : alive) {
    const auto h = held_by(t);
    for (std::size_t k = 0; k < kinds; ++k) base[k] += h[k];
  }
  return base;
}

// The state a Value moved from is left in (value.hpp): its kind, except an
// object, which is null.
void check_moved_from(const Value& v, Value::Type was) {
  if (was == Value::Type::object) CHECK(v.is_null());
  else CHECK(v.type() == was);
}

void check_same_object(const Value& a, const Value& b) {
  REQUIRE(a.is<ObjectRef>());
  REQUIRE(b.is<ObjectRef>());
  const ObjectRef& x = a.as<ObjectRef>();
  const ObjectRef& y = b.as<ObjectRef>();
  CHECK(x.object == y.object);
  CHECK(x.identity == y.identity);
  CHECK(x.identity != nullptr);
  CHECK(x.iface == y.iface);
  CHECK(x.home == y.home);
  CHECK(x.proxy == y.proxy);
  CHECK(x.remote == y.remote);
}

// Through a reference the compiler cannot see is the same object (no
// -Wself-move / -Wself-assign warning; the point is the aliasing).
Value& same(Value& v) { return v; }

}  // namespace

// A Value is its largest inline kind, a std::string, plus the variant's index:
// 40 bytes with libstdc++ on 64-bit targets (an ObjectRef inline made it 88).
// The rare, large kinds are boxed (value.hpp).
static_assert(sizeof(Value) <= sizeof(std::string) + sizeof(void*));
static_assert(std::is_nothrow_move_constructible_v<Value> && std::is_nothrow_move_assignable_v<Value>);

TEST_SUITE("values") {
  TEST_CASE("copy, move, take and assignment between every pair of kinds") {
    Resources r;
    {
      const std::vector<Value> s = r.samples();
      const auto base = r.counts();
      REQUIRE(base[at(Value::Type::handle)] == 2);  // the holder's and the sample's
      REQUIRE(base[at(Value::Type::object)] == 4);  // the holder, the sample, the list's and the record's
      CHECK(native_refs(r.object) == 1);            // host copies share one native reference
      for (std::size_t i = 0; i < kinds; ++i) {
        const Value::Type ti = s[i].type();
        CAPTURE(s[i].describe());
        {  // copy construction
          Value c = s[i];
          CHECK(c == s[i]);
          CHECK(r.counts() == with(base, {ti}));
        }
        CHECK(r.counts() == base);
        {  // move construction
          Value src = s[i];
          Value m = std::move(src);
          CHECK(m == s[i]);
          check_moved_from(src, ti);
          CHECK(r.counts() == with(base, {ti}));
          src = s[i];  // a moved-from Value takes a new value
          CHECK(src == s[i]);
          CHECK(r.counts() == with(base, {ti, ti}));
        }
        CHECK(r.counts() == base);
        {  // self copy leaves the value as it was; self move and self take
           // keep the kind (a scalar's and an object's value too), and never
           // leak or release twice
          Value x = s[i];
          x = same(x);
          CHECK(x == s[i]);
          x = std::move(same(x));
          CHECK(x.type() == ti);
          x.take(std::move(same(x)));
          CHECK(x.type() == ti);
          if (ti <= Value::Type::real || ti == Value::Type::address || ti == Value::Type::object) CHECK(x == s[i]);
          if (ti == Value::Type::object) check_same_object(x, s[i]);
          x = s[i];
          CHECK(r.counts() == with(base, {ti}));
        }
        CHECK(r.counts() == base);
        for (std::size_t j = 0; j < kinds; ++j) {
          const Value::Type tj = s[j].type();
          CAPTURE(s[j].describe());
          {  // copy assignment over a value of kind j
            Value x = s[j];
            x = s[i];
            CHECK(x == s[i]);
            CHECK(r.counts() == with(base, {ti}));
          }
          CHECK(r.counts() == base);
          {  // move assignment over a value of kind j
            Value x = s[j];
            Value src = s[i];
            x = std::move(src);
            CHECK(x == s[i]);
            check_moved_from(src, ti);
            CHECK(r.counts() == with(base, {ti}));
            src = s[j];
            CHECK(src == s[j]);
            CHECK(r.counts() == with(base, {ti, tj}));
          }
          CHECK(r.counts() == base);
          {  // take over a value of kind j: scalars are copied, the rest moved
            Value x = s[j];
            Value src = s[i];
            x.take(std::move(src));
            CHECK(x == s[i]);
            check_moved_from(src, ti);
            if (ti <= Value::Type::real || ti == Value::Type::address) CHECK(src == s[i]);
            CHECK(r.counts() == with(base, {ti}));
          }
          CHECK(r.counts() == base);
        }
      }
      CHECK(r.handle_releases == 0);
    }
    const auto alone = r.counts();  // the holders' own references only
    for (std::size_t k = 0; k < kinds; ++k) {
      CAPTURE(k);
      CHECK(alone[k] == (held_by(static_cast<Value::Type>(k))[k] ? 1 : 0));
    }
    CHECK(native_refs(r.object) == 1);
    CHECK(r.handle_releases == 0);
  }

  TEST_CASE("a boxed object: copies have their own box and the same object, moves carry the box") {
    Resources r;
    const long base = r.counts()[at(Value::Type::object)];
    Value a = r.object;
    const ObjectRef* box = &a.as<ObjectRef>();
    check_same_object(a, r.object);
    CHECK(&r.object.as<ObjectRef>() != box);  // a copy is a copy, not a shared box
    CHECK(r.counts()[at(Value::Type::object)] == base + 1);

    Value b = std::move(a);  // the box moves: the same ObjectRef, at the same address
    CHECK(&b.as<ObjectRef>() == box);
    CHECK(a.is_null());
    CHECK(r.counts()[at(Value::Type::object)] == base + 1);

    Value c;
    c = std::move(b);
    CHECK(&c.as<ObjectRef>() == box);
    CHECK(b.is_null());
    Value d = 1;
    d.take(std::move(c));
    CHECK(&d.as<ObjectRef>() == box);
    CHECK(c.is_null());
    check_same_object(d, r.object);
    CHECK(r.counts()[at(Value::Type::object)] == base + 1);

    // Changing one copy's ObjectRef changes that copy only.
    Value e = d;
    e.as<ObjectRef>().iface = nullptr;
    CHECK(d.as<ObjectRef>().iface != nullptr);
    CHECK(d.as<ObjectRef>().iface == r.object.as<ObjectRef>().iface);
    CHECK(e == d);  // equality is COM identity
    CHECK(r.counts()[at(Value::Type::object)] == base + 2);

    // Copy assignment between two objects keeps the target's box, with the source's object.
    Value f = r.object;
    const ObjectRef* f_box = &f.as<ObjectRef>();
    f = d;
    CHECK(&f.as<ObjectRef>() == f_box);
    check_same_object(f, d);

    // Lists of objects: reallocation moves the boxes, nothing is counted twice.
    {
      List many;
      for (int k = 0; k < 100; ++k) many.push_back(r.object);
      CHECK(r.counts()[at(Value::Type::object)] == base + 3 + 100);
      List copy = many;
      CHECK(r.counts()[at(Value::Type::object)] == base + 3 + 200);
      for (const Value& v : copy) check_same_object(v, r.object);
      many.erase(many.begin(), many.begin() + 50);
      CHECK(r.counts()[at(Value::Type::object)] == base + 3 + 150);
    }
    CHECK(r.counts()[at(Value::Type::object)] == base + 3);
    CHECK(native_refs(r.object) == 1);
  }

  TEST_CASE("the accessors of a boxed kind: is and as see the ObjectRef, a wrong kind throws") {
    Resources r;
    const std::vector<Value> s = r.samples();
    for (const Value& v : s) {
      CAPTURE(v.describe());
      CHECK(v.is<ObjectRef>() == (v.type() == Value::Type::object));
      if (!v.is<ObjectRef>()) CHECK_THROWS_AS(v.as<ObjectRef>(), std::bad_variant_access);
    }
    CHECK_THROWS_AS(s[at(Value::Type::object)].as<std::string>(), std::bad_variant_access);
    CHECK(s[at(Value::Type::object)].describe() == "a native object");
    CHECK(s[at(Value::Type::object)].to_json()["object"] == r.object.as<ObjectRef>().iface->name);
  }

  TEST_CASE("every native object of the values tests was released, and each handle once") {
    int releases = 0;
    {
      Resources r;
      CHECK(live() == 1);
      const std::vector<Value> s = r.samples();
      std::vector<Value> copies(s.begin(), s.end());
      std::vector<Value> moved(std::make_move_iterator(copies.begin()), std::make_move_iterator(copies.end()));
      CHECK(moved == s);
      r.handle->release = [&releases](std::int64_t) { ++releases; };
    }
    CHECK(releases == 1);
    CHECK(live() == 0);
  }
}
