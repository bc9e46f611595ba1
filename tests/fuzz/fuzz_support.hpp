// marshal fuzz targets: what the libFuzzer harnesses share.
// The fixture typemaps loaded against the instrumented fixture library, the
// input split "function name, newline, JSON arguments", and the finding
// report (both sides printed, then abort so libFuzzer saves the input).
#pragma once

#include "context.hpp"
#include "plan.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#ifndef MARSHAL_SOURCE_DIR
#error "MARSHAL_SOURCE_DIR must be defined by the build"
#endif
#ifndef MARSHAL_FUZZ_FIXTURE
#error "MARSHAL_FUZZ_FIXTURE (the instrumented fixture library) must be defined by the build"
#endif

namespace marshal::fuzz {

// The largest input a harness takes. A real host can pass any amount; this
// only keeps one execution short (libFuzzer's -max_len is the same).
constexpr std::size_t max_input = 64 * 1024;

[[noreturn]] inline void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "\n== FINDING: %s\n%s\n", what, detail.c_str());
  std::fflush(stderr);
  std::abort();
}

inline std::string read_source(const std::string& relative) {
  std::ifstream in(std::string(MARSHAL_SOURCE_DIR) + "/" + relative, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A fixture typemap of the source tree with its library replaced by the
// instrumented fixture this build made (wherever the harness runs from).
inline const Typemap& load_fixture(Context& ctx, const std::string& relative) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(read_source(relative));
  j["library"]["load"] = {{"linux", {MARSHAL_FUZZ_FIXTURE}}};
  LoadResult r = ctx.load_text(j.dump(), relative);
  if (!r.ok()) {
    for (const Diagnostic& d : r.errors) std::fprintf(stderr, "%s\n", d.text().c_str());
    std::abort();
  }
  return *r.typemap;
}

inline std::shared_ptr<Library> open_fixture(Context& ctx, const Typemap& tm) {
  std::string error;
  auto lib = Library::open(ctx, tm, error);
  if (!lib) {
    std::fprintf(stderr, "fuzz: %s\n", error.c_str());
    std::abort();
  }
  return lib;
}

// A function the harness may call with any arguments, and its library.
struct Callable {
  std::string name;
  Library* lib;
  const Plan* plan;
};

// Input: "NAME\nJSON". NAME picks the function; an unknown NAME (the fuzzer
// mutated it) picks by the first byte, so every input calls something.
// JSON is the argument list (an array); any other JSON value is one argument.
struct CallInput {
  const Callable* fn = nullptr;
  std::vector<Value> args;
  std::string json;  // for reports
};

inline bool parse_call(const std::uint8_t* data, std::size_t size, const std::vector<Callable>& fns, CallInput& in) {
  if (size == 0 || size > max_input || fns.empty()) return false;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::size_t nl = text.find('\n');
  const std::string_view name = nl == std::string_view::npos ? std::string_view() : text.substr(0, nl);
  in.fn = &fns[data[0] % fns.size()];
  for (const Callable& c : fns)
    if (c.name == name) in.fn = &c;
  in.json = std::string(nl == std::string_view::npos ? text : text.substr(nl + 1));
  nlohmann::json j = nlohmann::json::parse(in.json, nullptr, false);
  if (j.is_discarded()) return false;
  if (j.is_array()) {
    for (const auto& item : j) in.args.push_back(Value::from_json(item));
  } else {
    in.args.push_back(Value::from_json(j));
  }
  return true;
}

// The CLI's printing of a result (bindings/cli/call.cpp).
inline std::string result_json(const CallResult& result) {
  nlohmann::ordered_json out;
  out["return"] = result.ret.to_json();
  out["out"] = nlohmann::ordered_json::object();
  for (const auto& [name, v] : result.out) out["out"][name] = v.to_json();
  if (result.error_number) out["errno"] = *result.error_number;
  return out.dump();
}

}  // namespace marshal::fuzz
