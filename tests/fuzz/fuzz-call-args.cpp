// marshal fuzz target: host values converted for native calls.
// Input "NAME\nJSON": JSON arguments for a function of the fuzz fixture
// (tests/fuzz/fuzz_fixture.json: callees that read and write every element
// their counts, lengths and capacities announce) or of the P/Invoke fixture,
// called through the engine's dynamic API and printed as the CLI prints.
// Errors are fine; a sanitizer report, a crash or an exception escaping the
// engine is a finding.
#include "fuzz_support.hpp"

#include <algorithm>
#include <exception>

using namespace marshal;
using namespace marshal::engine;

namespace {

// P/Invoke fixture functions whose C preconditions no typemap can state: a
// variadic callee reading as many arguments as its first says, a format
// string, opaque addresses, a callee writing at cap - 1 for cap 0, and one
// allocating whatever size it is asked for. The engine cannot check these
// (TYPEMAP.md: opaque addresses and C preconditions are the caller's).
constexpr const char* unchecked[] = {"sum_var_i32", "fmt_var", "fixture_free", "reverse_out_utf8", "range_ret_i32"};

fuzz::CallFixture& fixture() {
  static auto* f = new fuzz::CallFixture(  // lives to the end of the process
      {"tests/fuzz/fuzz_fixture.json", "tests/fixtures/pinvoke.json"}, [](const std::string& name, const Plan&) {
        return std::find_if(std::begin(unchecked), std::end(unchecked),
                            [&](const char* u) { return name == u; }) == std::end(unchecked);
      });
  return *f;
}

}  // namespace

MARSHAL_FUZZ_CALL_ENTRY_POINTS(fixture)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::CallInput in;
  if (!fuzz::read_call(data, size, fixture().fns, in)) return 0;
  CallResult result;
  std::string error;
  try {
    if (!in.fn->plan->call(in.args, result, error)) return 0;
  } catch (const std::exception& e) {
    fuzz::finding("an exception escaped the call", in.fn->name + " " + in.json + ": " + e.what());
  }
  try {
    (void)fuzz::result_json(result);
  } catch (const std::exception& e) {
    fuzz::finding("the result cannot be printed as the CLI prints it", in.fn->name + " " + in.json + ": " + e.what());
  }
  return 0;
}
