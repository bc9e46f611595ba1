// marshal fuzz target: the plans' fast instructions (the scalar lane) against
// the general converter.
// Input "NAME\nJSON": arguments for a laned function of the P/Invoke or the
// fuzz fixture. Each input is called on the lane (twice, the second time into
// the same result, as the C API's reused results are), once more through the
// host adapter interface (HostArgs/HostResults by reference, as the C API
// calls), then with the fast forms off (set_scalar_lanes(false), as
// tests/unit-call.cpp compares them). All must succeed with the same result
// or fail with the same message; anything else aborts with both sides printed.
#include "fuzz_support.hpp"
#include "call/host_io.hpp"

#include <cstring>
#include <exception>

using namespace marshal;
using namespace marshal::engine;

namespace {

fuzz::CallFixture& fixture() {
  static auto* f = new fuzz::CallFixture({"tests/fixtures/pinvoke.json", "tests/fuzz/fuzz_fixture.json"},
                                         [](const std::string& name, const Plan& plan) {
                                           // address_* return the address they were given: a copy's
                                           // address differs between two calls by design (unit-const.cpp).
                                           return plan.laned() && !name.starts_with("address_");
                                         });
  return *f;
}

bool same(const CallResult& a, const CallResult& b) {
  if (!fuzz::same(a.ret, b.ret) || a.error_number != b.error_number || a.out.size() != b.out.size()) return false;
  for (std::size_t i = 0; i < a.out.size(); ++i)
    if (a.out[i].first != b.out[i].first || !fuzz::same(a.out[i].second, b.out[i].second)) return false;
  return true;
}

std::string show(bool ok, const CallResult& r, const std::string& error) {
  if (!ok) return "error: " + error;
  nlohmann::ordered_json j;
  j["return"] = r.ret.to_json();
  j["return kind"] = static_cast<int>(r.ret.type());
  for (const auto& [name, v] : r.out) j["out"][name] = v.to_json();
  if (r.error_number) j["errno"] = *r.error_number;
  return "ok: " + j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

MARSHAL_FUZZ_CALL_ENTRY_POINTS(fixture)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::CallInput in;
  if (!fuzz::read_call(data, size, fixture().fns, in)) return 0;
  CallResult laned, again, general, adapted;
  std::string laned_error, again_error, general_error, adapted_error;
  bool laned_ok = false, again_ok = false, general_ok = false, adapted_ok = false;
  try {
    laned_ok = in.fn->plan->call(in.args, laned, laned_error);
    again = laned;
    again.out.clear();  // out parameters are appended (callers clear them); the return is reused in place
    again_ok = in.fn->plan->call(in.args, again, again_error);
    {
      ValuePointers p(in.args);
      ValueArgs a(p.view);
      ValueResults r(adapted, in.fn->plan->function());
      adapted_ok = in.fn->plan->call(static_cast<const HostArgs&>(a), static_cast<HostResults&>(r), adapted_error);
    }
    set_scalar_lanes(false);
    general_ok = in.fn->plan->call(in.args, general, general_error);
    set_scalar_lanes(true);
  } catch (const std::exception& e) {
    fuzz::finding("an exception escaped the call", in.fn->name + " " + in.json + ": " + e.what());
  }
  const auto differ = [&](const char* what, bool a_ok, const CallResult& a, const std::string& a_error, bool b_ok,
                          const CallResult& b, const std::string& b_error) {
    if (a_ok == b_ok && (a_ok ? same(a, b) : a_error == b_error)) return;
    fuzz::finding(what, in.fn->name + " " + in.json + "\n  lane:    " + show(a_ok, a, a_error) +
                            "\n  " + (std::strcmp(what, "lane vs general") == 0 ? "general" : "again  ") + ": " +
                            show(b_ok, b, b_error));
  };
  differ("lane vs general", laned_ok, laned, laned_error, general_ok, general, general_error);
  differ("lane vs lane into a reused result", laned_ok, laned, laned_error, again_ok, again, again_error);
  differ("lane vs host adapter", laned_ok, laned, laned_error, adapted_ok, adapted, adapted_error);
  return 0;
}
