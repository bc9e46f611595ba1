// marshal tests: calling a typemap's functions through the engine.
#pragma once

#include <doctest/doctest.h>

#include "typemap/context.hpp"
#include "call/library.hpp"
#include "support.hpp"

namespace marshal::test {
using namespace marshal::engine;

struct Bound {
  Context ctx;
  const Typemap* tm = nullptr;
  std::shared_ptr<Library> lib;

  explicit Bound(const std::string& typemap) {
    LoadResult r = ctx.load_file(source_path(typemap));
    for (const auto& e : r.errors) MESSAGE(e.text());
    REQUIRE(r.ok());
    tm = r.typemap;
    std::string error;
    lib = Library::open(ctx, *tm, error);
    INFO(error);
    REQUIRE(lib);
  }

  // Calls and requires success.
  CallResult call(const std::string& fn, std::vector<Value> args = {}) {
    std::string error;
    const Plan* plan = lib->bind(fn, error);
    INFO(fn << ": " << error);
    REQUIRE(plan);
    CallResult result;
    bool ok = plan->call(args, result, error);
    INFO(fn << ": " << error);
    REQUIRE(ok);
    return result;
  }

  // Calls and requires failure; returns the message (bind or call).
  std::string error_of(const std::string& fn, std::vector<Value> args = {}) {
    std::string error;
    const Plan* plan = lib->bind(fn, error);
    if (!plan) return error;
    CallResult result;
    bool ok = plan->call(args, result, error);
    CHECK_FALSE(ok);
    return error;
  }

  const Value& out(const CallResult& r, const std::string& name) {
    for (const auto& [k, v] : r.out)
      if (k == name) return v;
    FAIL("no out parameter " << name);
    static Value none;
    return none;
  }
};

// The P/Invoke fixture (tests/fixtures/pinvoke.json), bound once per test program.
inline Bound& pinvoke() {
  static Bound b("tests/fixtures/pinvoke.json");
  return b;
}

inline Record rec(std::initializer_list<std::pair<const char*, Value>> fields) {
  Record r;
  for (const auto& [k, v] : fields) r.emplace_back(k, v);
  return r;
}

inline std::int64_t I(const Value& v) { return v.is<std::uint64_t>() ? static_cast<std::int64_t>(v.as<std::uint64_t>()) : v.as<std::int64_t>(); }
inline double D(const Value& v) { return v.as<double>(); }

}  // namespace marshal::test
