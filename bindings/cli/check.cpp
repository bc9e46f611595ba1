// marshal command line: `marshal check TYPEMAP...`.
// Loads each typemap into one context and prints a summary line per good file
// or every error of a bad one (each "FILE: /json/pointer: message").
#include "commands.hpp"

#include "context.hpp"

#include <cstdio>

namespace marshal::cli {

int cmd_check(const Args& args) {
  if (wants_help(args)) {
    std::printf(
        "usage: marshal check TYPEMAP...\n"
        "\n"
        "Validates each typemap (JSON syntax, keys, names, types, layouts, counts,\n"
        "ownership) without loading its library. Prints one summary line per valid\n"
        "file on stdout; for an invalid file, every error found on stderr, each as\n"
        "FILE: /json/pointer: message. Exits 0 when all files are valid, 1 otherwise.\n");
    return 0;
  }
  if (args.empty()) {
    std::fprintf(stderr, "marshal check: no typemap given (see marshal check --help)\n");
    return 2;
  }
  Context ctx;
  int status = 0;
  for (const std::string& path : args) {
    LoadResult r = ctx.load_file(path);
    if (!r.ok()) {
      for (const Diagnostic& d : r.errors) std::fprintf(stderr, "%s\n", d.text().c_str());
      status = 1;
      continue;
    }
    const Typemap& tm = *r.typemap;
    std::printf("%s: ok: %zu types, %zu functions, %zu callbacks, %zu interfaces, %zu classes, %zu constants\n",
                path.c_str(), tm.types.size(), tm.functions.size(), tm.callbacks.size(), tm.interfaces.size(),
                tm.classes.size(), tm.constants.size());
  }
  return status;
}

}  // namespace marshal::cli
