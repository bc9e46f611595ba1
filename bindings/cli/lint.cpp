// marshal command line: `marshal lint TYPEMAP...`.
// Valid typemaps can still say something the author likely did not mean. Each
// finding names its JSON Pointer and the reason; the loader has already
// rejected everything that is wrong, so these are judgements, not errors.
#include "tools.hpp"

#include "typemap/context.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace marshal::cli {
using namespace marshal::engine;

namespace {

struct Finding {
  std::string pointer;
  std::string reason;
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Named like a function that returns fresh memory: strdup, g_strndup, foo_new, malloc, xmlAlloc...
bool allocator_name(const std::string& name) {
  const std::string n = lower(name);
  return ends_with(n, "dup") || ends_with(n, "_new") || n.find("alloc") != std::string::npos;
}

std::string param_pointer(const Signature& sig, std::size_t i) { return sig.pointer + "/params/" + std::to_string(i); }

// `pointer` where a typed {"ptr": T} fits: the same parameter name is a typed
// pointer elsewhere in the typemap, or the name is that of a record or handle type.
void lint_opaque_pointers(const Typemap& tm, const TypeRegistry& reg, std::vector<Finding>& out) {
  std::map<std::string, std::pair<TypeId, std::string>> typed;  // parameter name -> ptr type, where
  for (const auto& [name, fn] : tm.functions)
    for (const Param& p : fn.params)
      if (reg.get(p.type).kind == Kind::ptr && !typed.count(p.name)) typed[p.name] = {p.type, name};
  std::map<std::string, std::string> type_names;  // lower-case name -> type name (records and handles)
  for (const auto& [name, id] : tm.types) {
    const Kind k = reg.get(id).kind;
    if (k == Kind::struct_ || k == Kind::union_ || k == Kind::handle) type_names[lower(name)] = name;
  }
  for (const auto& [name, fn] : tm.functions) {
    for (std::size_t i = 0; i < fn.params.size(); ++i) {
      const Param& p = fn.params[i];
      if (reg.get(p.type).kind != Kind::pointer) continue;
      auto t = typed.find(p.name);
      if (t != typed.end()) {
        out.push_back({param_pointer(fn, i) + "/type",
                       "'pointer' where a typed pointer fits: parameter '" + p.name + "' is " +
                           reg.spell(t->second.first) + " in " + t->second.second +
                           " (an opaque pointer is passed unchecked; a typed one is converted and checked)"});
        continue;
      }
      auto n = type_names.find(lower(p.name));
      if (n != type_names.end())
        out.push_back({param_pointer(fn, i) + "/type",
                       "'pointer' where a typed pointer fits: parameter '" + p.name + "' is named like the type '" +
                           n->second + "' (use {\"ptr\": \"" + n->second + "\"} or the handle type)"});
    }
  }
}

void lint_signature(const Function& fn, const TypeRegistry& reg, std::vector<Finding>& out) {
  const TypeDesc& rd = reg.get(fn.returns);
  if (rd.kind == Kind::string && fn.free_with.how == FreeWith::How::none && allocator_name(fn.symbol))
    out.push_back({fn.pointer + "/returns/free_with",
                   "\"none\" on the string returned by '" + fn.symbol +
                       "', which is named like an allocator (*dup, *_new, *alloc*): the memory is probably the "
                       "caller's to free, and would leak"});
  std::vector<bool> suggested(fn.params.size(), false);  // one finding per count parameter
  for (std::size_t i = 0; i < fn.params.size(); ++i) {
    const Param& p = fn.params[i];
    const TypeDesc& d = reg.get(p.type);
    // An in array or string whose count the host passes beside it: checked
    // against the data, but the engine could compute it ("value").
    if (p.dir == Dir::in && (d.kind == Kind::array || d.kind == Kind::string)) {
      const Count& n = d.kind == Kind::array ? d.as<ArrayInfo>().count : d.as<StringInfo>().length;
      if (n.source == Count::Source::param && n.index < fn.params.size() && fn.params[n.index].host_supplied() &&
          fn.params[n.index].dir == Dir::in && reg.get(fn.params[n.index].type).kind == Kind::integer &&
          !suggested[n.index]) {
        suggested[n.index] = true;
        out.push_back({param_pointer(fn, n.index),
                       "the host passes '" + fn.params[n.index].name + "', the " +
                           (d.kind == Kind::array ? "count" : "length") + " of the in " + std::string(kind_name(d.kind)) +
                           " '" + p.name + "', beside it: write \"value\": {\"count_of\": \"" + p.name +
                           "\"} so the engine computes it and the host does not pass it"});
      }
    }
    if (d.kind == Kind::string && p.dir != Dir::in && !d.as<StringInfo>().length.present())
      out.push_back({param_pointer(fn, i) + "/type",
                     "an " + std::string(dir_name(p.dir)) + " string without \"length\": the engine decodes up to the "
                     "first terminator within the capacity; if the callee reports how many units it wrote (a return "
                     "value or a parameter), name it with \"length\""});
    if (d.kind == Kind::array && p.dir == Dir::out) {
      const ArrayInfo& a = d.as<ArrayInfo>();
      if (a.count.source != Count::Source::param || a.count.index >= fn.params.size()) continue;
      const Param& c = fn.params[a.count.index];
      if (c.dir != Dir::in) continue;
      if (reg.get(c.type).kind == Kind::ptr)
        out.push_back({param_pointer(fn, a.count.index) + "/dir",
                       "the count '" + c.name + "' of the out array '" + p.name +
                           "' is passed by pointer as 'in': a capacity the callee receives by address is usually "
                           "rewritten with the length it filled (zlib's destLen): make it \"inout\" and name it as "
                           "the array's \"length\""});
      else if (!a.length.present())
        out.push_back({param_pointer(fn, i) + "/type",
                       "the out array '" + p.name + "' has the capacity '" + c.name +
                           "' (passed in) and no \"length\": all of its elements are copied back, including any the "
                           "callee did not write; name the written count with \"length\" (often {\"return\": true})"});
    }
  }
}

}  // namespace

int cmd_lint(const Args& args) {
  if (wants_help(args)) {
    std::printf(
        "usage: marshal lint TYPEMAP...\n"
        "\n"
        "Reports valid but suspicious entries, each as FILE: /json/pointer: lint: reason:\n"
        "  - 'pointer' where a typed {\"ptr\": T} fits;\n"
        "  - free_with \"none\" on a string returned by a function named like an\n"
        "    allocator (*dup, *_new, *alloc*);\n"
        "  - an out string without \"length\";\n"
        "  - an out array whose count is passed 'in' (a capacity by pointer that\n"
        "    should be inout, or a capacity with no \"length\");\n"
        "  - a callback with a return value and no on_error.\n"
        "Exits 0 when nothing is found, 1 when something is (or a typemap is invalid).\n");
    return 0;
  }
  if (args.empty()) {
    std::fprintf(stderr, "marshal lint: no typemap given (see marshal lint --help)\n");
    return 2;
  }
  Context ctx;
  int status = 0;
  for (const std::string& path : args) {
    const Typemap* tm = load_or_report(ctx, path, true);
    if (!tm) {
      status = 1;
      continue;
    }
    const TypeRegistry& reg = ctx.types();
    std::vector<Finding> found;
    lint_opaque_pointers(*tm, reg, found);
    for (const auto& [name, fn] : tm->functions) lint_signature(fn, reg, found);
    for (const auto& [name, cb] : tm->callbacks)
      if (reg.get(cb.returns).kind != Kind::void_ && !cb.on_error.present)
        found.push_back({cb.pointer, "callback '" + name + "' returns " + reg.spell(cb.returns) +
                                         " and has no on_error: when the host function fails, native code receives "
                                         "zero bits, and a call after release aborts; say what it should receive with {\"on_error\": {\"return\": VALUE}}"});
    std::sort(found.begin(), found.end(), [](const Finding& a, const Finding& b) { return a.pointer < b.pointer; });
    for (const Finding& f : found) std::printf("%s: %s: lint: %s\n", path.c_str(), f.pointer.c_str(), f.reason.c_str());
    if (found.empty()) std::printf("%s: lint: nothing suspicious\n", path.c_str());
    else status = 1;
  }
  return status;
}

}  // namespace marshal::cli
