// marshal command line: `marshal check TYPEMAP...`.
// Loads each typemap into one context and prints a summary line per good file
// or every error of a bad one (each "FILE: /json/pointer: message").
#include "commands.hpp"
#include "tools.hpp"

#include "typemap/context.hpp"
#include "call/library.hpp"

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

namespace marshal::cli {
using namespace marshal::engine;

namespace {

// typemaps/ holds the JSON Schema beside the typemaps, so `check typemaps/*.json`
// meets it: a document that declares a json-schema.org $schema and has no
// "typemap" key is reported as skipped, not as a broken typemap.
bool is_json_schema(const std::string& path) {
  std::ifstream in(path);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  return j.is_object() && !j.contains("typemap") && j.contains("$schema") && j["$schema"].is_string() &&
         j["$schema"].get<std::string>().find("json-schema.org") != std::string::npos;
}

}  // namespace

int cmd_check(const Args& args) {
  if (wants_help(args)) {
    std::printf(
        "usage: marshal check [--resolve] TYPEMAP...\n"
        "\n"
        "Validates each typemap (JSON syntax, keys, names, types, layouts, counts,\n"
        "ownership) without loading its library. Prints one summary line per valid\n"
        "file on stdout; for an invalid file, every error found on stderr, each as\n"
        "FILE: /json/pointer: message. Exits 0 when all files are valid, 1 otherwise.\n"
        "A JSON Schema document (such as typemaps/typemap.schema.json) is skipped.\n"
        "\n"
        "--resolve  also load each library and report every symbol it lacks.\n"
        "--against LIBRARY  read LIBRARY's ELF exports: every function must be an\n"
        "           exported function (not data) with the version its symbol@VERSION\n"
        "           names; --coverage also lists the exports no function describes;\n"
        "           --dwarf also compares records (size, field offsets) and functions\n"
        "           (parameter count, each parameter's size and class) with LIBRARY's\n"
        "           DWARF debug info.\n");
    return 0;
  }
  Args files;
  bool resolve = false;
  AgainstOptions against;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--resolve") resolve = true;
    else if (a == "--coverage") against.coverage = true;
    else if (a == "--dwarf") against.dwarf = true;
    else if (a == "--against" && i + 1 < args.size()) against.library = args[++i];
    else if (a == "--against") {
      std::fprintf(stderr, "marshal check: --against needs a library file\n");
      return 2;
    } else files.push_back(a);
  }
  if ((against.coverage || against.dwarf) && against.library.empty()) {
    std::fprintf(stderr, "marshal check: --coverage and --dwarf need --against LIBRARY\n");
    return 2;
  }
  if (files.empty()) {
    std::fprintf(stderr, "marshal check: no typemap given (see marshal check --help)\n");
    return 2;
  }
  Context ctx;
  int status = 0;
  for (const std::string& path : files) {
    if (is_json_schema(path)) {
      std::printf("%s: skipped: a JSON Schema, not a typemap\n", path.c_str());
      continue;
    }
    const Typemap* loaded = load_or_report(ctx, path, true);
    if (!loaded) {
      status = 1;
      continue;
    }
    const Typemap& tm = *loaded;
    if (resolve && tm.library.present) {
      std::string error;
      auto lib = Library::open(ctx, tm, error);
      if (!lib) {
        std::fprintf(stderr, "%s: /library: %s\n", path.c_str(), error.c_str());
        status = 1;
        continue;
      }
      auto missing = lib->missing_symbols();
      for (const auto& m : missing) std::fprintf(stderr, "%s\n", m.c_str());
      if (!missing.empty()) {
        status = 1;
        continue;
      }
    }
    if (!against.library.empty() && check_against(tm, against) != 0) {
      status = 1;
      continue;
    }
    if (against.dwarf && check_dwarf(tm, ctx.types(), against.library) != 0) {
      status = 1;
      continue;
    }
    std::printf("%s: ok: %zu types, %zu functions, %zu callbacks, %zu interfaces, %zu classes, %zu constants\n",
                path.c_str(), tm.types.size(), tm.functions.size(), tm.callbacks.size(), tm.interfaces.size(),
                tm.classes.size(), tm.constants.size());
  }
  return status;
}

}  // namespace marshal::cli
