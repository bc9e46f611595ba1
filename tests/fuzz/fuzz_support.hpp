// marshal fuzz targets: what the libFuzzer harnesses share.
// The fixture typemaps loaded against the instrumented fixture library, the
// input split "function name, newline, JSON arguments", and the finding
// report (both sides printed, then abort so libFuzzer saves the input).
#pragma once

#include "typemap/context.hpp"
#include "call/library.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <fstream>
#include <memory>
#include <random>
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
using namespace marshal::engine;

// The largest input a harness takes. A real host can pass any amount; this
// only keeps one execution short (libFuzzer's -max_len is the same).
constexpr std::size_t max_input = 64 * 1024;

[[noreturn]] inline void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "\n== FINDING: %s\n%s\n", what, detail.c_str());
  std::fflush(stderr);
  std::abort();
}

// Exact sameness: the kind, and doubles bit for bit (0.0 and -0.0 differ, a NaN
// equals itself). Shared by the targets that compare two ways of getting a value.
inline bool same(const Value& a, const Value& b) {
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Value::Type::real: {
      const double x = a.as<double>(), y = b.as<double>();
      return std::memcmp(&x, &y, sizeof x) == 0;
    }
    case Value::Type::list: {
      const List& x = a.as<List>();
      const List& y = b.as<List>();
      if (x.size() != y.size()) return false;
      for (std::size_t i = 0; i < x.size(); ++i)
        if (!same(x[i], y[i])) return false;
      return true;
    }
    case Value::Type::record: {
      const Record& x = a.as<Record>();
      const Record& y = b.as<Record>();
      if (x.size() != y.size()) return false;
      for (std::size_t i = 0; i < x.size(); ++i)
        if (x[i].first != y[i].first || !same(x[i].second, y[i].second)) return false;
      return true;
    }
    default:
      return a == b;
  }
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

// The call targets' fixture: every function of the given typemaps that binds
// and that keep(name, plan) accepts, with their context and libraries.
struct CallFixture {
  Context ctx;
  std::vector<std::shared_ptr<Library>> libs;
  std::vector<Callable> fns;

  template <class Keep> CallFixture(std::initializer_list<const char*> files, Keep keep) {
    for (const char* file : files) {
      const Typemap& tm = load_fixture(ctx, file);
      libs.push_back(open_fixture(ctx, tm));
      // A legal buffer of 200 MB (a capacity just under the default limit)
      // takes the fixture's every-byte callee past libFuzzer's timeout under
      // ASan: the documented per-library limit, 1 MiB here, keeps each input
      // fast while every limit check stays in play.
      libs.back()->set_max_buffer(1 << 20);
      for (const auto& [name, fn] : tm.functions) {
        std::string error;
        // A signature the engine refuses to bind (e.g. a packed struct by
        // value) is not callable at all.
        const Plan* plan = libs.back()->bind(name, error);
        if (plan && keep(name, *plan)) fns.push_back({name, libs.back().get(), plan});
      }
    }
    if (fns.empty()) {
      std::fprintf(stderr, "fuzz: no function to call in the fixtures\n");
      std::abort();
    }
  }
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

// parse_call, where an exception escaping the host value conversion is a finding.
inline bool read_call(const std::uint8_t* data, std::size_t size, const std::vector<Callable>& fns, CallInput& in) {
  try {
    return parse_call(data, size, fns, in);
  } catch (const std::exception& e) {
    finding("an exception escaped Value::from_json", e.what());
  }
}

// ---- structure-aware mutation of "NAME\nJSON" inputs ----
// Byte mutations mostly break the JSON; this mutator changes the arguments as
// values instead: another function, a node replaced by a value of another kind
// or by an integer at a type's edge (2^31, 2^62 + 1, 2^64, ...), array items
// duplicated or dropped, records given other fields. One input in four still
// gets libFuzzer's byte mutations (syntax errors and odd spellings stay covered).

inline nlohmann::json interesting_value(std::mt19937_64& rng) {
  static const nlohmann::json numbers = nlohmann::json::parse(
      "[0, 1, -1, 2, 3, 4, 7, 8, 16, 255, 256, -128, -129, 65535, 65536, 2147483647, 2147483648, -2147483649,"
      " 4294967295, 4294967296, 1099511627776, 4611686018427387904, 4611686018427387905, 2305843009213693953,"
      " 9223372036854775807, -9223372036854775808, 9223372036854775808, 18446744073709551615,"
      " 1.8446744073709552e19, 0.5, -0.0, 1e308, -1e308, 3.5e38, 1e-320, 100000000]");
  static const char* const words[] = {"x", "y", "a", "b", "n", "cb", "name", "items", "tag", "data", "v", "f", "i", "d",
                                      "RED", "BLUE", "READ", "WRITE", "EXEC", "base64", "address", "type", "value"};
  auto word = [&] { return std::string(words[rng() % std::size(words)]); };
  switch (rng() % 12) {
    case 0: case 1: case 2: return numbers[rng() % numbers.size()];
    case 3: return static_cast<std::int64_t>(rng() % 4096) - 2048;
    case 4: return std::string(rng() % 64, static_cast<char>('a' + rng() % 26));
    case 5: return word();
    case 6: return rng() % 2 == 0;
    case 7: return nullptr;
    case 8: {
      nlohmann::json a = nlohmann::json::array();
      for (std::size_t k = rng() % 12; k > 0; --k) a.push_back(static_cast<std::int64_t>(rng() % 512) - 256);
      return a;
    }
    case 9: {
      std::string b64(4 * (rng() % 16), 'A');
      for (char& c : b64) c = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[rng() % 64];
      return {{"base64", b64}};
    }
    case 10: {
      nlohmann::json o = nlohmann::json::object();
      for (std::size_t k = rng() % 4; k > 0; --k) o[word()] = static_cast<std::int64_t>(rng() % 100);
      return o;
    }
    default: return {{"type", rng() % 2 ? "int32" : "double"}, {"value", static_cast<std::int64_t>(rng() % 100)}};
  }
}

inline void collect_nodes(nlohmann::json& j, std::vector<nlohmann::json*>& out) {
  out.push_back(&j);
  if (out.size() > 4096) return;
  if (j.is_array() || j.is_object())
    for (auto& item : j) collect_nodes(item, out);
}

// For LLVMFuzzerCustomMutator: fns are the functions the harness may call.
inline std::size_t mutate_call(std::uint8_t* data, std::size_t size, std::size_t max_size, unsigned seed,
                               const std::vector<Callable>& fns,
                               std::size_t (*byte_mutate)(std::uint8_t*, std::size_t, std::size_t)) {
  std::mt19937_64 rng(seed);
  std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::size_t nl = text.find('\n');
  nlohmann::json args =
      nl == std::string_view::npos ? nlohmann::json() : nlohmann::json::parse(text.substr(nl + 1), nullptr, false);
  if (rng() % 4 == 0 || nl == std::string_view::npos || args.is_discarded() || fns.empty())
    return byte_mutate(data, size, max_size);
  std::string name(text.substr(0, nl));
  if (!args.is_array()) args = nlohmann::json::array({args});
  for (int rounds = 1 + static_cast<int>(rng() % 3); rounds > 0; --rounds) {
    std::vector<nlohmann::json*> nodes;
    collect_nodes(args, nodes);
    nlohmann::json& at = *nodes[rng() % nodes.size()];
    switch (rng() % 8) {
      case 0: name = fns[rng() % fns.size()].name; break;
      case 1: case 2: case 3: at = interesting_value(rng); break;
      case 4:  // duplicate or drop an item
        if (at.is_array() && !at.empty()) {
          const std::size_t k = rng() % at.size();
          if (rng() % 2) at.insert(at.begin() + static_cast<std::ptrdiff_t>(k), at[k]);
          else at.erase(k);
        } else if (at.is_object() && !at.empty()) {
          at.erase(at.begin());
        }
        break;
      case 5:  // a new item or field
        if (at.is_array()) at.push_back(interesting_value(rng));
        else if (at.is_object()) {
          const nlohmann::json key = interesting_value(rng);
          at[key.is_string() ? key.get<std::string>() : key.dump()] = interesting_value(rng);
        }
        break;
      case 6: at = nlohmann::json::array({at}); break;  // one level deeper
      default:  // many items (counts and capacities meet long arrays)
        if (at.is_array() && !at.empty()) {
          const nlohmann::json item = at[rng() % at.size()];
          for (std::size_t k = rng() % 2000; k > 0; --k) at.push_back(item);
        }
        break;
    }
  }
  const std::string out = name + "\n" + args.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (out.size() > max_size) return byte_mutate(data, size, max_size);
  std::memcpy(data, out.data(), out.size());
  return out.size();
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

// libFuzzer's entry points shared by the call targets: the structure-aware
// mutator over FIXTURE().fns, and the fixture built once before the first input.
#define MARSHAL_FUZZ_CALL_ENTRY_POINTS(FIXTURE)                                                                   \
  extern "C" std::size_t LLVMFuzzerMutate(std::uint8_t* data, std::size_t size, std::size_t max_size);          \
  extern "C" std::size_t LLVMFuzzerCustomMutator(std::uint8_t* data, std::size_t size, std::size_t max_size,    \
                                                 unsigned seed) {                                                \
    return marshal::fuzz::mutate_call(data, size, max_size, seed, FIXTURE().fns, LLVMFuzzerMutate);            \
  }                                                                                                              \
  extern "C" int LLVMFuzzerInitialize(int*, char***) {                                                           \
    FIXTURE();                                                                                                   \
    return 0;                                                                                                    \
  }
