// marshal tests: the ABI differential matrix, driver (issue 14).
// Calls every generated function through the engine, in-process and batched,
// and compares what the callee received (its trace) and what the caller got
// back with what the C compilers produced (expected.json, from run_matrix.py);
// then the reverse direction: native code calls a host function through a
// callback with fixed arguments, and records what the host returned. Each
// (library, direction) batch runs in a child process, so a crash names the
// signature that was being called and the batch goes on after it.
#include "typemap/context.hpp"
#include "call/library.hpp"

#include <nlohmann/json.hpp>

#include <dlfcn.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace marshal;
using namespace marshal::engine;
using json = nlohmann::json;

namespace {

// ---- the generator's description of the matrix (matrix.json) ------------------------------

struct PrimInfo {
  std::string kind;  // int, float, bool
  int size = 0;
  bool is_signed = false;
};

// Signatures that `marshal check` (or the loader) rejects, by number, with the
// message: forward (fN) and reverse (cbN and its callback CbN) separately.
struct CheckErrors {
  std::map<int, std::string> forward, reverse;
};

struct Matrix {
  json doc;        // matrix.json
  json expected;   // expected.json
  json typemap;    // typemap.json
  json loadable;   // typemap.json without the signatures the loader rejects
  CheckErrors checks;
  std::map<std::string, PrimInfo> prims;
  std::string dir;
  std::string reference;        // the library the compilers' disagreements are judged against
  std::set<int> disagreements;  // signatures on which the compilers disagree
  int count = 0;
  std::uint64_t seed = 0;

  const json& record(const std::string& name) const { return doc["records"][name]; }
  const json& fn(int n) const { return doc["functions"][n]; }
};

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  return json::parse(in);
}

// ---- canonical text of values: the callee's trace format -----------------------------------
// One " token" per scalar in declaration order (a union: its active member only);
// integers in decimal, bools as the raw byte, floats as "f" + 8 and doubles as
// "d" + 16 hexadecimal digits of their bits.

std::string hex_bits(std::uint64_t bits, int digits, char tag) {
  char t[24];
  std::snprintf(t, sizeof t, " %c%0*" PRIx64, tag, digits, bits);
  return t;
}

void format_value(const Matrix& m, const json& type, const Value& v, std::string& out) {
  if (type.is_object()) {  // an inline array
    const json& elem = type["array"];
    const std::size_t n = type["count"].get<std::size_t>();
    if (v.is<Bytes>() && v.as<Bytes>().data.size() == n) {
      for (std::uint8_t b : v.as<Bytes>().data) format_value(m, elem, Value(static_cast<std::int64_t>(b)), out);
      return;
    }
    if (!v.is<List>() || v.as<List>().size() != n) {
      out += " <expected " + std::to_string(n) + " elements, got " + v.to_json().dump() + ">";
      return;
    }
    for (const Value& e : v.as<List>()) format_value(m, elem, e, out);
    return;
  }
  const std::string name = type.get<std::string>();
  if (auto it = m.prims.find(name); it != m.prims.end()) {
    const PrimInfo& p = it->second;
    char t[48];
    if (p.kind == "bool") {
      if (!v.is<bool>()) out += " <not a bool: " + v.to_json().dump() + ">";
      else out += v.as<bool>() ? " 1" : " 0";
    } else if (p.kind == "float") {
      if (!v.is<double>()) {
        out += " <not a number: " + v.to_json().dump() + ">";
      } else if (p.size == 4) {
        const float f = static_cast<float>(v.as<double>());
        std::uint32_t b;
        std::memcpy(&b, &f, 4);
        out += hex_bits(b, 8, 'f');
      } else {
        std::uint64_t b;
        const double d = v.as<double>();
        std::memcpy(&b, &d, 8);
        out += hex_bits(b, 16, 'd');
      }
    } else if (v.is<std::int64_t>()) {
      const std::int64_t i = v.as<std::int64_t>();
      if (p.is_signed || i >= 0) std::snprintf(t, sizeof t, " %" PRId64, i);
      else std::snprintf(t, sizeof t, " <negative %" PRId64 ">", i);
      out += t;
    } else if (v.is<std::uint64_t>()) {
      std::snprintf(t, sizeof t, p.is_signed ? " <unsigned %" PRIu64 ">" : " %" PRIu64, v.as<std::uint64_t>());
      out += t;
    } else {
      out += " <not an integer: " + v.to_json().dump() + ">";
    }
    return;
  }
  const json& r = m.record(name);
  if (!v.is<Record>()) {
    out += " <not a record: " + v.to_json().dump() + ">";
    return;
  }
  const json& fields = r["fields"];
  const bool is_union = r["kind"] == "union";
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (is_union && i != r["active"].get<std::size_t>()) continue;
    const std::string fname = fields[i]["name"].get<std::string>();
    const Value* f = v.field(fname);
    if (!f) {
      out += " <no field " + fname + ">";
      continue;
    }
    format_value(m, fields[i]["type"], *f, out);
  }
}

// The path of each scalar, in the same order (for messages).
void leaf_paths(const Matrix& m, const json& type, const std::string& at, std::vector<std::string>& out) {
  if (type.is_object()) {
    for (std::size_t i = 0; i < type["count"].get<std::size_t>(); ++i)
      leaf_paths(m, type["array"], at + "[" + std::to_string(i) + "]", out);
    return;
  }
  const std::string name = type.get<std::string>();
  if (m.prims.count(name)) {
    out.push_back(at + " (" + name + ")");
    return;
  }
  const json& r = m.record(name);
  const json& fields = r["fields"];
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (r["kind"] == "union" && i != r["active"].get<std::size_t>()) continue;
    leaf_paths(m, fields[i]["type"], at + "." + fields[i]["name"].get<std::string>(), out);
  }
}

// Tokens back to a host value (what the host returns from a callback).
struct Tokens {
  std::vector<std::string> items;
  std::size_t pos = 0;
  explicit Tokens(const std::string& text) {
    std::istringstream in(text);
    std::string t;
    while (in >> t) items.push_back(t);
  }
  std::string next() {
    if (pos >= items.size()) throw std::runtime_error("trace too short");
    return items[pos++];
  }
};

Value parse_value(const Matrix& m, const json& type, Tokens& tk) {
  if (type.is_object()) {
    List l;
    for (std::size_t i = 0; i < type["count"].get<std::size_t>(); ++i) l.push_back(parse_value(m, type["array"], tk));
    return Value(std::move(l));
  }
  const std::string name = type.get<std::string>();
  if (auto it = m.prims.find(name); it != m.prims.end()) {
    const PrimInfo& p = it->second;
    const std::string t = tk.next();
    if (p.kind == "bool") return Value(t != "0");
    if (p.kind == "float") {
      const std::uint64_t bits = std::stoull(t.substr(1), nullptr, 16);
      if (p.size == 4) {
        float f;
        const std::uint32_t b = static_cast<std::uint32_t>(bits);
        std::memcpy(&f, &b, 4);
        return Value(static_cast<double>(f));
      }
      double d;
      std::memcpy(&d, &bits, 8);
      return Value(d);
    }
    if (p.is_signed) return Value(static_cast<std::int64_t>(std::stoll(t)));
    return Value(static_cast<std::uint64_t>(std::stoull(t)));
  }
  const json& r = m.record(name);
  const json& fields = r["fields"];
  Record rec;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (r["kind"] == "union" && i != r["active"].get<std::size_t>()) continue;
    rec.emplace_back(fields[i]["name"].get<std::string>(), parse_value(m, fields[i]["type"], tk));
  }
  return Value(std::move(rec));
}

std::string args_trace(const Matrix& m, int n, const std::vector<Value>& args) {
  const json& params = m.fn(n)["params"];
  std::string out = "f" + std::to_string(n) + ":";
  for (std::size_t i = 0; i < params.size(); ++i) {
    out += " |";
    if (i < args.size()) format_value(m, params[i], args[i], out);
    else out += " <missing argument>";
  }
  return out;
}

std::string ret_trace(const Matrix& m, int n, const Value& v) {
  const json& ret = m.fn(n)["ret"];
  std::string out = "r:";
  if (!ret.is_null()) format_value(m, ret, v, out);
  return out;
}

// ---- reports -------------------------------------------------------------------------------

void collect_types(const json& tm, const json& type, std::set<std::string>& names) {
  if (type.is_object()) {
    if (type.contains("array")) collect_types(tm, type["array"], names);
    return;
  }
  const std::string name = type.get<std::string>();
  if (!tm["types"].contains(name) || !names.insert(name).second) return;
  for (const json& f : tm["types"][name].begin().value()) collect_types(tm, f["type"], names);
}

// A signature for a report: its classes, typemap entries (the types it uses
// included) and the arguments.
std::string describe(const Matrix& m, int n, bool reverse) {
  const json& f = m.fn(n);
  const json& tm = m.typemap;
  const std::string fname = "f" + std::to_string(n);
  std::ostringstream out;
  out << "  tags: " << f["tags"].dump() << "\n";
  out << "  typemap: \"" << fname << "\": " << tm["functions"][fname].dump() << "\n";
  if (reverse) {
    out << "  typemap: \"cb" << n << "\": " << tm["functions"]["cb" + std::to_string(n)].dump() << "\n";
    out << "  typemap: \"Cb" << n << "\": " << tm["callbacks"]["Cb" + std::to_string(n)].dump() << "\n";
  }
  std::set<std::string> names;
  for (const json& p : tm["functions"][fname]["params"]) collect_types(tm, p["type"], names);
  collect_types(tm, tm["functions"][fname]["returns"], names);
  for (const std::string& t : names) out << "  typemap: \"" << t << "\": " << tm["types"][t].dump() << "\n";
  out << "  args: " << f["args"].dump() << "\n";
  return out.str();
}

// The differing scalars of two traces, with their paths.
std::string explain(const Matrix& m, int n, const std::string& expected, const std::string& actual, bool is_ret) {
  std::vector<std::string> paths;
  const json& f = m.fn(n);
  auto segments = [](const std::string& s) {
    std::vector<std::string> out;
    std::size_t colon = s.find(':');
    std::string rest = colon == std::string::npos ? s : s.substr(colon + 1);
    std::size_t at = 0;
    while (true) {
      std::size_t bar = rest.find(" |", at);
      out.push_back(rest.substr(at, bar == std::string::npos ? std::string::npos : bar - at));
      if (bar == std::string::npos) break;
      at = bar + 2;
    }
    return out;
  };
  std::vector<std::string> e = segments(expected), a = segments(actual);
  std::ostringstream out;
  int shown = 0;
  for (std::size_t s = 0; s < std::max(e.size(), a.size()) && shown < 6; ++s) {
    const std::string es = s < e.size() ? e[s] : "", as = s < a.size() ? a[s] : "";
    if (es == as) continue;
    std::vector<std::string> leaf;
    if (is_ret) leaf_paths(m, f["ret"], "return", leaf);
    else if (s >= 1 && s - 1 < f["params"].size()) leaf_paths(m, f["params"][s - 1], "a" + std::to_string(s - 1), leaf);
    Tokens et(es), at(as);
    for (std::size_t k = 0; k < std::max(et.items.size(), at.items.size()) && shown < 6; ++k) {
      const std::string x = k < et.items.size() ? et.items[k] : "(none)";
      const std::string y = k < at.items.size() ? at.items[k] : "(none)";
      if (x == y) continue;
      out << "      " << (k < leaf.size() ? leaf[k] : "?") << ": expected " << x << ", actual " << y << "\n";
      ++shown;
    }
  }
  return out.str();
}

// ---- one batch: a library, a direction, in a child process ---------------------------------

enum class Direction { forward, general, reverse };
const char* direction_name(Direction d) {
  switch (d) {
    case Direction::forward: return "forward";
    case Direction::general: return "forward-general";
    case Direction::reverse: return "reverse";
  }
  return "?";
}

struct Shared {
  int printed;  // full mismatch reports printed by this batch (children share it)
};

// The size and alignment of a type of matrix.json (a primitive, an array or a record).
std::pair<std::int64_t, std::int64_t> size_align(const Matrix& m, const json& type) {
  if (type.is_object()) {
    auto [size, align] = size_align(m, type["array"]);
    return {size * type["count"].get<std::int64_t>(), align};
  }
  const std::string name = type.get<std::string>();
  if (auto it = m.prims.find(name); it != m.prims.end()) return {it->second.size, it->second.size};
  return {m.record(name)["size"].get<std::int64_t>(), m.record(name)["align"].get<std::int64_t>()};
}

// Whether a scalar of `type` (every member of a union) lies at an offset that
// is not a multiple of its size, `base` being where the value starts.
bool has_unaligned_field(const Matrix& m, const json& type, std::int64_t base) {
  if (type.is_object()) {
    const std::int64_t step = size_align(m, type["array"]).first;
    for (std::int64_t i = 0; i < type["count"].get<std::int64_t>(); ++i)
      if (has_unaligned_field(m, type["array"], base + i * step)) return true;
    return false;
  }
  const std::string name = type.get<std::string>();
  if (auto it = m.prims.find(name); it != m.prims.end()) return base % it->second.size != 0;
  const json& r = m.record(name);
  for (std::size_t i = 0; i < r["fields"].size(); ++i)
    if (has_unaligned_field(m, r["fields"][i]["type"], base + r["offsets"][i].get<std::int64_t>())) return true;
  return false;
}

// The documented refusal (typemaps/README.md, "Passing by value"): a struct or
// union of 16 bytes or less with a field not at its natural alignment, at any
// depth (packed), which the psABI passes in memory and libffi cannot express
// by value. The error must name such a record that signature n takes or
// returns by value; any other refusal is not documented.
bool documented_refusal(const Matrix& m, int n, const std::string& error) {
  static const std::regex why(R"(([A-Za-z_][A-Za-z0-9_]*) has unaligned fields \(pack\), which the System V ABI )"
                              R"(passes in memory; libffi cannot express that by value: pass it by pointer$)");
  std::smatch g;
  if (!std::regex_search(error, g, why)) return false;
  const std::string name = g[1];
  if (!m.doc["records"].contains(name)) return false;
  const json& r = m.record(name);
  if (r["size"].get<std::int64_t>() > 16 || !has_unaligned_field(m, json(name), 0)) return false;
  const json& f = m.fn(n);
  if (f["ret"] == name) return true;
  for (const json& p : f["params"])
    if (p == name) return true;
  return false;
}

class Batch {
 public:
  Batch(const Matrix& m, std::string lib_name, std::string lib_path, Direction d, FILE* status, Shared* shared,
        int max_print)
      : m_(m), lib_name_(std::move(lib_name)), lib_path_(std::move(lib_path)), dir_(d), status_(status),
        shared_(shared), max_print_(max_print) {}

  // The child's work, from function `first` on.
  int run(int first) {
    json tm = m_.loadable;
    tm["library"]["load"] = json{{"any", json::array({lib_path_})}};
    Context ctx;
    LoadResult r = ctx.load_text(tm.dump(), m_.dir + "/typemap.json");
    if (!r.ok()) {
      for (const auto& e : r.errors) std::printf("abi-matrix: %s\n", e.text().c_str());
      return 2;
    }
    tm_ = r.typemap;
    if (dir_ == Direction::general) {
      set_specialized_invokers(false);
      set_scalar_lanes(false);
    }
    std::string error;
    for (int chunk = first; chunk < m_.count; chunk += chunk_size) {
      // A fresh Library per chunk: closures are capped per library.
      std::shared_ptr<Library> lib = Library::open(ctx, *tm_, error);
      if (!lib) {
        std::printf("abi-matrix: %s: %s\n", lib_name_.c_str(), error.c_str());
        return 2;
      }
      void* h = dlopen(lib_path_.c_str(), RTLD_NOW | RTLD_NOLOAD);
      reset_ = h ? reinterpret_cast<void (*)()>(dlsym(h, "abi_reset")) : nullptr;
      get_ = h ? reinterpret_cast<const char* (*)(int)>(dlsym(h, "abi_get")) : nullptr;
      if (!reset_ || !get_) {
        std::printf("abi-matrix: %s: no trace functions in %s\n", lib_name_.c_str(), lib_path_.c_str());
        return 2;
      }
      for (int n = chunk; n < std::min(m_.count, chunk + chunk_size); ++n) {
        std::fprintf(status_, "S %d\n", n);
        std::fflush(status_);
        alarm(20);  // a hang is reported like a crash
        std::string reason;
        const char* st = dir_ == Direction::reverse ? reverse(*lib, n, reason) : forward(*lib, n, reason);
        alarm(0);
        for (char& c : reason)
          if (c == '\n' || c == '\t') c = ' ';
        std::fprintf(status_, "E %d %s\t%s\n", n, st, reason.c_str());
        std::fflush(status_);
      }
      if (h) dlclose(h);
    }
    return 0;
  }

 private:
  static constexpr int chunk_size = 4096;

  // A signature whose callee or caller built by another compiler behaves
  // differently from the reference compiler's (run_matrix.py lists them): the
  // engine is judged against the reference library only.
  const char* disagreement(int n, std::string& reason) const {
    if (lib_name_ == m_.reference || !m_.disagreements.count(n)) return nullptr;
    reason = "the compilers disagree on this signature; the engine is judged against " + m_.reference + "'s library";
    return "disagreement";
  }

  const char* refused(int n, const std::string& error, std::string& reason) {
    reason = error;
    return documented_refusal(m_, n, error) ? "documented" : "refused";
  }

  const char* forward(Library& lib, int n, std::string& reason) {
    if (const char* st = disagreement(n, reason)) return st;
    const std::string name = "f" + std::to_string(n);
    if (!m_.loadable["functions"].contains(name)) return refused(n, "check: " + m_.checks.forward.at(n), reason);
    std::string error;
    const Plan* plan = lib.bind(name, error);
    if (!plan) return refused(n, error, reason);
    std::vector<Value> args;
    for (const json& a : m_.fn(n)["args"]) args.push_back(Value::from_json(a));
    reset_();
    CallResult result;
    if (!plan->call(args, result, error)) {
      if (documented_refusal(m_, n, error)) return refused(n, error, reason);
      reason = error;
      report(n, "the call failed: " + error, "", "", "", "");
      return "error";
    }
    const std::string trace = get_(0);
    const std::string ret = ret_trace(m_, n, result.ret);
    const json& e = m_.expected["functions"][n];
    const std::string want_trace = e["trace"], want_ret = e["ret"];
    if (trace == want_trace && ret == want_ret) return "ok";
    reason = trace != want_trace ? "arguments" : "return";
    report(n, "", want_trace, trace, want_ret, ret);
    return "mismatch";
  }

  const char* reverse(Library& lib, int n, std::string& reason) {
    if (const char* st = disagreement(n, reason)) return st;
    if (!m_.loadable["functions"].contains("cb" + std::to_string(n)))
      return refused(n, "check: " + m_.checks.reverse.at(n), reason);
    std::string error;
    const Plan* plan = lib.bind("cb" + std::to_string(n), error);
    if (!plan) return refused(n, error, reason);
    const json& e = m_.expected["functions"][n];
    const std::string want_trace = e["trace"], want_ret = e["ret"];
    const json& ret_type = m_.fn(n)["ret"];
    Value give;
    if (!ret_type.is_null()) {
      Tokens tk(want_ret.substr(2));
      give = parse_value(m_, ret_type, tk);
    }
    std::string got_args;
    int calls = 0;
    auto fn = std::make_shared<HostFunction>(HostFunction{
        "host" + std::to_string(n), [&](const std::vector<Value>& a, Value& result, std::string&) {
          ++calls;
          got_args = args_trace(m_, n, a);
          result = give;
          return true;
        }});
    // A registered callback first: a signature the engine cannot make a closure
    // for is a refusal, reported before any native code runs.
    std::shared_ptr<Callback> registered = lib.callback("Cb" + std::to_string(n), fn, error);
    if (!registered) return refused(n, error, reason);
    // Odd functions pass the registered callback, even ones the host function
    // itself (scope "call": the engine makes the closure for the call).
    const Value arg = n % 2 ? Value(registered) : Value(fn);
    reset_();
    CallResult result;
    const bool ok = plan->call(std::vector<Value>{arg}, result, error);
    registered->release();
    if (!ok) {
      if (documented_refusal(m_, n, error)) return refused(n, error, reason);
      reason = error;
      report(n, "the call failed: " + error, "", "", "", "");
      return "error";
    }
    const std::string ret = get_(1);
    if (calls == 1 && got_args == want_trace && ret == want_ret) return "ok";
    reason = calls != 1 ? "calls" : got_args != want_trace ? "arguments" : "return";
    report(n, calls != 1 ? "the host function was called " + std::to_string(calls) + " times" : "", want_trace,
           got_args, want_ret, ret);
    return "mismatch";
  }

  void report(int n, const std::string& note, const std::string& want_trace, const std::string& trace,
              const std::string& want_ret, const std::string& ret) {
    if (shared_->printed++ >= max_print_) return;
    const json& f = m_.fn(n);
    const std::string fname = "f" + std::to_string(n);
    std::ostringstream out;
    out << "MISMATCH " << lib_name_ << " " << direction_name(dir_) << " " << fname << ": "
        << f["proto"].get<std::string>() << "\n";
    if (!note.empty()) out << "  " << note << "\n";
    out << describe(m_, n, dir_ == Direction::reverse);
    if (want_trace != trace) {
      out << "  arguments expected: " << want_trace << "\n  arguments actual:   " << trace << "\n";
      out << explain(m_, n, want_trace, trace, false);
    }
    if (want_ret != ret) {
      out << "  return expected: " << want_ret << "\n  return actual:   " << ret << "\n";
      if (want_trace == trace) out << explain(m_, n, want_ret, ret, true);
      else if (dir_ != Direction::reverse) out << "      (the callee's return is a hash of its arguments)\n";
    }
    std::fputs(out.str().c_str(), stdout);
    std::fflush(stdout);
  }

  const Matrix& m_;
  std::string lib_name_, lib_path_;
  Direction dir_;
  FILE* status_;
  Shared* shared_;
  int max_print_;
  const Typemap* tm_ = nullptr;
  void (*reset_)() = nullptr;
  const char* (*get_)(int) = nullptr;
};

// What the parent learns of each function in a batch.
struct Outcome {
  std::string status = "missing";  // ok, mismatch, error, refused, documented, crash, disagreement
  std::string reason;
};

// Runs the batch in children; a child that dies is reported at the function it
// was calling and a new child continues after it.
std::vector<Outcome> run_batch(const Matrix& m, const std::string& lib_name, const std::string& lib_path, Direction d,
                               int max_print) {
  std::vector<Outcome> out(m.count);
  auto* shared = static_cast<Shared*>(
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (shared == MAP_FAILED) throw std::runtime_error("mmap failed");
  shared->printed = 0;
  FILE* status = std::tmpfile();
  if (!status) throw std::runtime_error("tmpfile failed");
  int first = 0;
  while (first < m.count) {
    std::fflush(stdout);
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      int rc = 3;
      try {
        Batch b(m, lib_name, lib_path, d, status, shared, max_print);
        rc = b.run(first);
      } catch (const std::exception& e) {
        std::printf("abi-matrix: %s\n", e.what());
      }
      std::fflush(stdout);
      std::fflush(status);
      _exit(rc);
    }
    int ws = 0;
    waitpid(pid, &ws, 0);
    // Read every status line so far (the file holds all children's lines).
    std::fflush(status);
    std::rewind(status);
    char line[65536];
    int started = -1;
    while (std::fgets(line, sizeof line, status)) {
      int n = -1;
      if (line[0] == 'S' && std::sscanf(line, "S %d", &n) == 1) {
        started = n;
      } else if (line[0] == 'E' && std::sscanf(line, "E %d", &n) == 1 && n >= 0 && n < m.count) {
        char* st = std::strchr(line + 2, ' ');
        if (!st) continue;
        ++st;
        char* tab = std::strchr(st, '\t');
        if (!tab) continue;
        out[n].status.assign(st, tab);
        std::string reason(tab + 1);
        while (!reason.empty() && reason.back() == '\n') reason.pop_back();
        out[n].reason = reason;
        if (started == n) started = -1;
      }
    }
    std::fseek(status, 0, SEEK_END);
    if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0) break;
    if (WIFEXITED(ws) && started < 0) {
      std::printf("abi-matrix: %s %s: the batch failed (exit %d)\n", lib_name.c_str(), direction_name(d),
                  WEXITSTATUS(ws));
      break;
    }
    const int at = started >= 0 ? started : first;
    std::string why = "exit " + std::to_string(WEXITSTATUS(ws));
    if (WIFSIGNALED(ws))
      why = WTERMSIG(ws) == SIGALRM ? "timeout (20 s)" : std::string("signal ") + strsignal(WTERMSIG(ws));
    out[at].status = "crash";
    out[at].reason = why;
    std::printf("CRASH %s %s f%d: %s\n  %s\n%s", lib_name.c_str(), direction_name(d), at,
                m.fn(at)["proto"].get<std::string>().c_str(), why.c_str(),
                describe(m, at, d == Direction::reverse).c_str());
    first = at + 1;
  }
  std::fclose(status);
  munmap(shared, sizeof(Shared));
  return out;
}

// ---- check: every signature that cannot be called must be a check error -----------------------
// (issue 14, item 4). Errors come from the loader (then the signatures are left
// out of the typemap the batches load) and, with --marshal, from `marshal check`.

// The record names a type uses by value, transitively.
void uses(const Matrix& m, const json& type, std::set<std::string>& out) {
  if (type.is_null()) return;
  if (type.is_object()) return uses(m, type["array"], out);
  const std::string name = type.get<std::string>();
  if (m.prims.count(name) || !out.insert(name).second) return;
  for (const json& f : m.record(name)["fields"]) uses(m, f["type"], out);
}

// Attributes an error at a JSON Pointer to the signatures it is about; false
// when it names none.
bool attribute(const Matrix& m, const std::string& pointer, const std::string& message, CheckErrors& out) {
  static const std::regex fn(R"(^/functions/(f|cb)([0-9]+)(/.*)?$)"), cb(R"(^/callbacks/Cb([0-9]+)(/.*)?$)"),
      type(R"(^/types/([A-Za-z_][A-Za-z0-9_]*)(/.*)?$)");
  std::smatch g;
  const std::string text = pointer + ": " + message;
  if (std::regex_match(pointer, g, fn)) {
    const int n = std::stoi(g[2]);
    if (n < 0 || n >= m.count) return false;
    (g[1] == "f" ? out.forward : out.reverse).emplace(n, text);
    return true;
  }
  if (std::regex_match(pointer, g, cb)) {
    const int n = std::stoi(g[1]);
    if (n < 0 || n >= m.count) return false;
    out.reverse.emplace(n, text);
    return true;
  }
  if (std::regex_match(pointer, g, type)) {  // a type: every signature using it by value
    bool any = false;
    for (int n = 0; n < m.count; ++n) {
      std::set<std::string> names;
      for (const json& p : m.fn(n)["params"]) uses(m, p, names);
      uses(m, m.fn(n)["ret"], names);
      if (names.count(g[1])) {
        out.forward.emplace(n, text);
        out.reverse.emplace(n, text);
        any = true;
      }
    }
    return any;
  }
  return false;
}

// The typemap without the signatures the loader rejects; false (with every
// error printed) when an error names no signature.
bool make_loadable(Matrix& m) {
  json tm = m.typemap;
  for (int round = 0; round < 8; ++round) {
    Context ctx;
    LoadResult r = ctx.load_text(tm.dump(), m.dir + "/typemap.json");
    if (r.ok()) {
      m.loadable = std::move(tm);
      return true;
    }
    bool removed = false;
    for (const auto& e : r.errors) {
      CheckErrors found;
      if (!attribute(m, e.pointer, e.message, found)) {
        std::printf("abi-matrix: the typemap does not load: %s\n", e.text().c_str());
        return false;
      }
      for (const auto& [n, text] : found.forward) {
        m.checks.forward.emplace(n, text);
        removed = tm["functions"].erase("f" + std::to_string(n)) || removed;
      }
      for (const auto& [n, text] : found.reverse) {
        m.checks.reverse.emplace(n, text);
        removed = tm["functions"].erase("cb" + std::to_string(n)) || removed;
        removed = tm["callbacks"].erase("Cb" + std::to_string(n)) || removed;
      }
    }
    if (!removed) {
      for (const auto& e : r.errors) std::printf("abi-matrix: the typemap does not load: %s\n", e.text().c_str());
      return false;
    }
  }
  std::printf("abi-matrix: the typemap does not load after removing the signatures its errors name\n");
  return false;
}

// `marshal check` of the generated typemap: its errors, attributed. False when
// it cannot run or reports an error that names no signature.
bool run_check(Matrix& m, const std::string& marshal, int& reported) {
  const std::string cmd = "'" + marshal + "' check '" + m.dir + "/typemap.json' 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return false;
  static const std::regex line(R"(^[^ ]*: (/[^ ]*): (.*)$)");
  char buf[65536];
  bool ok = true;
  while (std::fgets(buf, sizeof buf, p)) {
    std::string text(buf);
    while (!text.empty() && text.back() == '\n') text.pop_back();
    std::smatch g;
    if (!std::regex_match(text, g, line)) continue;  // the summary line of a valid file
    ++reported;
    if (!attribute(m, g[1], g[2], m.checks)) {
      std::printf("abi-matrix: marshal check: an error about no signature: %s\n", text.c_str());
      ok = false;
    }
  }
  const int status = pclose(p);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) > 1) {
    std::printf("abi-matrix: %s failed\n", cmd.c_str());
    return false;
  }
  return ok;
}

// ---- layouts: the engine's against the compiler's -------------------------------------------

int check_layouts(const Matrix& m, int& checked) {
  Context ctx;
  LoadResult r = ctx.load_text(m.loadable.dump(), m.dir + "/typemap.json");
  if (!r.ok()) {
    for (const auto& e : r.errors) std::printf("abi-matrix: %s\n", e.text().c_str());
    return -1;
  }
  int wrong = 0;
  for (const auto& [name, want] : m.expected["layouts"].items()) {
    ++checked;
    const TypeId id = r.typemap->find_type(name);
    std::vector<std::int64_t> got;
    if (id != no_type) {
      const TypeDesc& d = ctx.types().get(id);
      got = {d.size, d.align};
      for (const Field& f : d.as<RecordInfo>().fields) got.push_back(f.offset);
    }
    if (got != want.get<std::vector<std::int64_t>>()) {
      if (++wrong <= 10)
        std::printf("LAYOUT %s: the compiler says %s (size, align, offsets), the engine %s; typemap: %s\n",
                    name.c_str(), want.dump().c_str(), json(got).dump().c_str(),
                    m.typemap["types"][name].dump().c_str());
    }
  }
  return wrong;
}

int usage() {
  std::fprintf(stderr, "usage: abi-matrix --dir DIR [--max-print N] [--lenient] [--outcomes FILE] [--marshal CLI]\n"
                       "  DIR holds matrix.json, typemap.json and expected.json (tests/abi/run_matrix.py writes them)\n"
                       "  --marshal CLI: also run `CLI check` on the typemap: every refused signature must be\n"
                       "    one of its errors, and no signature it rejects may be callable\n"
                       "  --outcomes FILE: one JSON line per call that was not ok\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Matrix m;
  int max_print = 10;
  bool lenient = false;
  std::string outcomes_path;
  std::string marshal_cli;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) m.dir = argv[++i];
    else if (a == "--max-print" && i + 1 < argc) max_print = std::atoi(argv[++i]);
    else if (a == "--lenient") lenient = true;
    else if (a == "--outcomes" && i + 1 < argc) outcomes_path = argv[++i];
    else if (a == "--marshal" && i + 1 < argc) marshal_cli = argv[++i];
    else return usage();
  }
  if (m.dir.empty()) return usage();
  try {
    m.doc = read_json(m.dir + "/matrix.json");
    m.expected = read_json(m.dir + "/expected.json");
    m.typemap = read_json(m.dir + "/typemap.json");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "abi-matrix: %s\n", e.what());
    return 2;
  }
  for (const auto& [name, p] : m.doc["prims"].items())
    m.prims[name] = PrimInfo{p["kind"].get<std::string>(), p["size"].get<int>(), p["signed"].get<bool>()};
  m.count = static_cast<int>(m.doc["functions"].size());
  m.seed = m.doc["seed"].get<std::uint64_t>();
  m.reference = m.expected.value("reference", m.expected["libs"].begin().key());
  for (const json& n : m.expected.value("disagreements", json::array())) m.disagreements.insert(n.get<int>());

  if (!make_loadable(m)) return 1;
  int check_reported = 0;
  if (!marshal_cli.empty() && !run_check(m, marshal_cli, check_reported)) return 1;
  int layouts = 0;
  const int layouts_wrong = check_layouts(m, layouts);
  if (layouts_wrong < 0) return 1;

  // Per library and direction, every function's outcome.
  struct Run { std::string lib; Direction d; std::vector<Outcome> out; };
  std::vector<Run> runs;
  std::vector<std::string> lib_names;
  for (const auto& [name, path] : m.expected["libs"].items()) {
    lib_names.push_back(name);
    for (Direction d : {Direction::forward, Direction::general, Direction::reverse})
      runs.push_back({name, d, run_batch(m, name, path.get<std::string>(), d, max_print)});
  }

  // Totals, refusal reasons, and outcomes per signature class.
  std::map<std::string, int> totals;
  std::map<std::string, int> reasons;  // "status: reason" with type names blurred
  struct ClassCount { int sigs = 0; std::map<std::string, int> bad; };
  std::map<std::string, ClassCount> classes;
  for (int n = 0; n < m.count; ++n)
    for (const json& t : m.fn(n)["tags"]) ++classes[t.get<std::string>()].sigs;
  for (const Run& r : runs)
    for (int n = 0; n < m.count; ++n) {
      const Outcome& o = r.out[n];
      ++totals[o.status];
      if (o.status != "ok") {
        // One line per kind of reason: no file, parameter, type names or numbers.
        static const std::regex file(R"(^[^ ]*: f[0-9]+: )"), param(R"(parameter [0-9]+ '[^']*' \([^)]*\))"),
            numbers(R"([0-9]+)");
        std::string blurred = std::regex_replace(o.reason, file, "");
        blurred = std::regex_replace(blurred, param, "parameter");
        blurred = std::regex_replace(blurred, numbers, "#");
        ++reasons[std::string(direction_name(r.d)) + " " + o.status + ": " + blurred];
        for (const json& t : m.fn(n)["tags"])
          ++classes[t.get<std::string>()].bad[std::string(direction_name(r.d)) + ":" + o.status];
      }
    }
  if (!outcomes_path.empty()) {  // one JSON line per call that was not ok, for scripts
    std::ofstream f(outcomes_path);
    for (const Run& r : runs)
      for (int n = 0; n < m.count; ++n)
        if (r.out[n].status != "ok")
          f << json{{"lib", r.lib}, {"direction", direction_name(r.d)}, {"n", n}, {"status", r.out[n].status},
                    {"reason", r.out[n].reason}, {"tags", m.fn(n)["tags"]}, {"proto", m.fn(n)["proto"]}}.dump()
            << "\n";
  }
  std::printf("\nper class: signatures, then outcomes other than ok by direction (summed over %zu libraries):\n",
              lib_names.size());
  for (const auto& [tag, c] : classes) {
    std::string bad;
    for (const auto& [st, k] : c.bad) bad += " " + st + "=" + std::to_string(k);
    std::printf("  %-40s %6d%s\n", tag.c_str(), c.sigs, bad.c_str());
  }
  if (!reasons.empty()) {
    std::printf("outcomes other than ok, by reason (count):\n");
    for (const auto& [why, k] : reasons) std::printf("  %6d  %s\n", k, why.c_str());
  }
  const int ok = totals["ok"], mismatches = totals["mismatch"], crashes = totals["crash"], errors = totals["error"],
            documented = totals["documented"], refusals = totals["refused"] + documented,
            missing = totals["missing"], disagreements = totals["disagreement"];
  // Check against the calls: a signature refused in some run must be a check
  // error, and a check error must not name a signature that was called.
  int unchecked = 0, false_alarms = 0;
  for (int n = 0; n < m.count; ++n)
    for (bool rev : {false, true}) {
      const auto& errs = rev ? m.checks.reverse : m.checks.forward;
      const bool checked = errs.count(n) != 0;
      bool refused = false, called = false;
      std::string why;
      for (const Run& r : runs) {
        if ((r.d == Direction::reverse) != rev) continue;
        const Outcome& o = r.out[n];
        if (o.status == "refused" || o.status == "documented") {
          refused = true;
          why = o.reason;
        }
        called = called || o.status == "ok" || o.status == "mismatch";
      }
      if (refused && !checked && ++unchecked <= 3 && !marshal_cli.empty())
        std::printf("UNCHECKED %s%d (%s): refused (%s), but marshal check reports no error\n", rev ? "cb" : "f", n,
                    m.fn(n)["proto"].get<std::string>().c_str(), why.c_str());
      if (checked && called && ++false_alarms <= 3)
        std::printf("CHECK %s%d: marshal check reports %s, but it was called\n", rev ? "cb" : "f", n,
                    errs.at(n).c_str());
    }
  std::string check_summary = "check not run";
  if (!marshal_cli.empty())
    check_summary = "check: " + std::to_string(check_reported) + " errors, " + std::to_string(unchecked) +
                    " refused signatures it accepts, " + std::to_string(false_alarms) + " callable ones it rejects";
  std::string libs;
  for (const std::string& l : lib_names) libs += (libs.empty() ? "" : ", ") + l;
  std::printf("abi-matrix: seed %" PRIu64 ": %d signatures per direction (%s): calls OK %d, mismatches %d, "
              "refusals %d (documented %d), call errors %d, crashes %d%s%s; layouts %d checked, %d wrong; %s\n",
              m.seed, m.count, libs.c_str(), ok, mismatches, refusals, documented, errors, crashes,
              missing ? (", not run " + std::to_string(missing)).c_str() : "",
              disagreements ? (", compiler disagreements " + std::to_string(m.disagreements.size()) + " (" +
                               std::to_string(disagreements) + " calls judged against " + m.reference +
                               "'s library only)").c_str() : "",
              layouts, layouts_wrong, check_summary.c_str());
  const bool failed = mismatches || crashes || errors || missing || refusals != documented || layouts_wrong ||
                      false_alarms || (!marshal_cli.empty() && unchecked);
  if (failed && lenient) std::printf("abi-matrix: --lenient: exit status 0 despite the above\n");
  return failed && !lenient ? 1 : 0;
}
