// marshal tests: guard mode (engine/guard.hpp). Callees of tests/fixtures/guard.c
// touch one element past what they were told; in guard mode the process stops at
// once with a message naming the function and the parameter. Each overrun runs
// in a forked child, whose stderr and end are checked here.
#include "call_support.hpp"
#include "child_process.hpp"

#include "base/guard.hpp"

#include <csignal>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;

namespace {


}  // namespace

TEST_SUITE("guard") {
  TEST_CASE("a callee writing one element past an out array stops at once, naming the function and parameter") {
    Child c = in_child([] {
      Bound b("tests/fixtures/guard.json");
      b.lib->set_guard(true);
      b.call("overrun_out_i32_array", {3});
    });
    INFO(c.err);
    CHECK(aborted(c));
    CHECK(c.err.find("marshal guard: function 'overrun_out_i32_array': parameter 0 'out': the callee wrote past the "
                     "end of the 12-byte buffer it was given (0 bytes past it") != std::string::npos);
  }

  TEST_CASE("a host that sets its own SIGSEGV handler after guard mode began does not turn it off") {
    // A test framework restores the handler it saw before each test; a host
    // may install its own. The next guarded call puts the guard's back.
    Child c = in_child([] {
      Bound b("tests/fixtures/guard.json");
      b.lib->set_guard(true);
      b.call("fill_exact_i32_array", {3});  // installs the handler
      signal(SIGSEGV, SIG_DFL);
      signal(SIGBUS, SIG_DFL);
      b.call("overrun_out_i32_array", {3});
    });
    INFO(c.err);
    CHECK(aborted(c));
    CHECK(c.err.find("marshal guard: function 'overrun_out_i32_array': parameter 0 'out'") != std::string::npos);
  }

  TEST_CASE("a callee reading one byte past copied-in data stops at once") {
    Child c = in_child([] {
      Bound b("tests/fixtures/guard.json");
      b.lib->set_guard(true);
      b.call("overread_in_bytes", {Value(Bytes{{1, 2, 3, 4, 5}}), 5});
    });
    INFO(c.err);
    CHECK(aborted(c));
    CHECK(c.err.find("function 'overread_in_bytes': parameter 0 'data': the callee read past the end of the 5-byte "
                     "buffer") != std::string::npos);
  }

  TEST_CASE("a callee writing its terminator past an out string's capacity stops at once") {
    Child c = in_child([] {
      Bound b("tests/fixtures/guard.json");
      b.lib->set_guard(true);
      b.call("overrun_out_utf8", {7});
    });
    INFO(c.err);
    CHECK(aborted(c));
    CHECK(c.err.find("function 'overrun_out_utf8': parameter 0 'buf': the callee wrote past the end of the 7-byte "
                     "buffer") != std::string::npos);
  }

  TEST_CASE("the same overrun without guard mode is not caught by it (the mode is what catches it)") {
    // Without guard mode the overrun lands in the arena's slack: no message.
    Child c = in_child([] {
      Bound b("tests/fixtures/guard.json");
      b.call("overrun_out_i32_array", {3});
    });
    CHECK(c.err.find("marshal guard") == std::string::npos);
  }

  TEST_CASE("callees that keep their contract give the same results in guard mode, and every mapping is released") {
    Bound b("tests/fixtures/guard.json");
    b.lib->set_guard(true);
    const std::size_t before = guard_live_mappings();
    for (int n : {0, 1, 1024, 5000}) {
      CallResult r = b.call("fill_exact_i32_array", {n});
      const Value& out = b.out(r, "out");
      REQUIRE(out.is<List>());
      REQUIRE(out.as<List>().size() == static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) CHECK(I(out.as<List>()[static_cast<std::size_t>(i)]) == i * 3);
    }
    CHECK(guard_live_mappings() == before);
    b.lib->set_guard(false);
  }
}
