// marshal command line: `marshal check --against LIBRARY [--coverage]`.
// Compares a typemap's functions with a shared object's exports: each must be a
// function (not data) in .dynsym, with the GNU version its "symbol@VERSION"
// names, or a default (name@@VERSION or unversioned) symbol when it names none,
// because that is what dlsym finds.
#include "tools.hpp"

#include "elf_symbols.hpp"

#include <cstdio>
#include <map>
#include <set>

namespace marshal::cli {
using namespace marshal::engine;

namespace {

std::string spell(const ElfExport& e) {
  if (e.version.empty()) return e.name;
  return e.name + (e.is_default ? "@@" : "@") + e.version;
}

std::string list(const std::vector<const ElfExport*>& v) {
  std::string s;
  for (const ElfExport* e : v) s += (s.empty() ? "" : ", ") + spell(*e);
  return s;
}

// The message for a function whose symbol does not match, or "" when it does.
std::string verdict(const Function& fn, const std::vector<const ElfExport*>& same_name, const std::string& lib) {
  const std::string wanted = fn.symbol + (fn.version.empty() ? "" : "@" + fn.version);
  if (same_name.empty()) return "symbol '" + wanted + "' is not exported by " + lib;
  const ElfExport* match = nullptr;
  for (const ElfExport* e : same_name) {
    if (fn.version.empty() ? e->is_default : e->version == fn.version) match = e;
  }
  if (!match) {
    if (fn.version.empty())
      return "symbol '" + fn.symbol + "' has only hidden versions in " + lib + " (" + list(same_name) +
             "): name one as \"symbol\": \"" + fn.symbol + "@VERSION\"";
    return "symbol '" + wanted + "': " + lib + " has no version '" + fn.version + "' of it (it has " +
           list(same_name) + ")";
  }
  if (!match->is_function)
    return "symbol '" + wanted + "' is " + (match->type == "object" ? "data (an object)" : "a " + match->type + " symbol") +
           " in " + lib + ", not a function";
  return "";
}

}  // namespace

int check_against(const Typemap& tm, const AgainstOptions& opt) {
  ElfExports exports;
  std::string error;
  if (!read_elf_exports(opt.library, exports, error)) {
    std::fprintf(stderr, "%s: /library: %s\n", tm.file.c_str(), error.c_str());
    return 1;
  }
  std::map<std::string, std::vector<const ElfExport*>> by_name;
  for (const ElfExport& e : exports.symbols) by_name[e.name].push_back(&e);

  int status = 0;
  std::set<std::string> described;
  for (const auto& [name, fn] : tm.functions) {
    described.insert(fn.symbol);
    auto it = by_name.find(fn.symbol);
    const std::string v = verdict(fn, it == by_name.end() ? std::vector<const ElfExport*>{} : it->second, opt.library);
    if (v.empty()) continue;
    std::fprintf(stderr, "%s: %s: %s\n", tm.file.c_str(), fn.pointer.c_str(), v.c_str());
    status = 1;
  }
  if (status == 0)
    std::printf("%s: against %s: all %zu functions exported\n", tm.file.c_str(), opt.library.c_str(),
                tm.functions.size());
  if (opt.coverage) {
    // Exports a caller can reach by name: default-version functions, once each.
    std::set<std::string> functions, missing;
    for (const ElfExport& e : exports.symbols) {
      if (!e.is_function || !e.is_default) continue;
      functions.insert(e.name);
      if (!described.count(e.name)) missing.insert(e.name);
    }
    std::printf("%s: coverage: %zu of %zu exported functions described\n", tm.file.c_str(),
                functions.size() - missing.size(), functions.size());
    for (const std::string& m : missing) std::printf("  not described: %s\n", m.c_str());
  }
  return status;
}

}  // namespace marshal::cli
