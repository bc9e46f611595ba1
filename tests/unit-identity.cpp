// marshal tests: handle identity across explicit release.
// The same native handle value maps to one host object while the host holds
// it; once the host releases it explicitly (a call of its release function),
// a new native handle with the same value (malloc reusing an address, a pool
// reusing a slot) is a new host object, never the released one.
#include "call_support.hpp"

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;

TEST_SUITE("identity") {
  TEST_CASE("a handle value that comes back after an explicit release is a new host object") {
    Bound f("tests/fixtures/callback_buffers.json");
    const Value first = f.call("slot_open", {1}).ret;
    REQUIRE(first.is<std::shared_ptr<HandleBox>>());
    CHECK(I(f.call("slot_value", {first}).ret) == 1);
    f.call("slot_close", {first});
    // The fixture's pool gives the lowest free slot: the same address again.
    const Value second = f.call("slot_open", {2}).ret;
    REQUIRE(second.is<std::shared_ptr<HandleBox>>());
    CHECK(second.as<std::shared_ptr<HandleBox>>()->value == first.as<std::shared_ptr<HandleBox>>()->value);
    CHECK(second.as<std::shared_ptr<HandleBox>>() != first.as<std::shared_ptr<HandleBox>>());
    CHECK_FALSE(second.as<std::shared_ptr<HandleBox>>()->released);
    CHECK(I(f.call("slot_value", {second}).ret) == 2);
    // The released one stays released; the new one keeps its identity while held.
    CHECK(f.error_of("slot_value", {first}).find("already released") != std::string::npos);
    const Value again = f.call("slot_open", {3}).ret;
    CHECK(again.as<std::shared_ptr<HandleBox>>()->value != second.as<std::shared_ptr<HandleBox>>()->value);
    CHECK(I(f.call("slots_open").ret) == 2);
    f.call("slot_close", {again});
    CHECK(f.lib->handles().live() == 1);  // second: released handles left the table, though still held here
  }

  TEST_CASE("dropping the new host object releases the new handle once") {
    Bound f("tests/fixtures/callback_buffers.json");
    const std::int32_t before = static_cast<std::int32_t>(I(f.call("slots_open").ret));
    {
      const Value a = f.call("slot_open", {1}).ret;
      f.call("slot_close", {a});
      const Value b = f.call("slot_open", {2}).ret;
      CHECK(I(f.call("slots_open").ret) == before + 1);
    }  // b dropped: its release runs (slot_close); a, released explicitly, does not close it again
    CHECK(I(f.call("slots_open").ret) == before);
    const Value c = f.call("slot_open", {3}).ret;
    CHECK(I(f.call("slot_value", {c}).ret) == 3);
  }
}
