// marshal command line: dispatch to subcommands.
// `marshal check`, `marshal layout`, `marshal call`; each has --help.
#include "commands.hpp"
#include "tools.hpp"

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string_view>

namespace {

struct Command {
  const char* name;
  int (*run)(const marshal::cli::Args&);
  const char* summary;
};

constexpr Command commands[] = {
    {"check", marshal::cli::cmd_check, "validate typemaps and report every error"},
    {"layout", marshal::cli::cmd_layout, "print the C layout of a struct or union"},
    {"call", marshal::cli::cmd_call, "call a function of a typemap's library"},
    {"serve", marshal::cli::cmd_serve, "serve typemaps' libraries to `marshal call --connect` (loopback, or mutual TLS)"},
    {"explain", marshal::cli::cmd_explain, "how a function's parameters are passed and copied"},
    {"lint", marshal::cli::cmd_lint, "report valid but suspicious typemap entries"},
    {"generate", marshal::cli::cmd_generate, "write a draft typemap from C headers (libclang)"},
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: marshal COMMAND [ARGS...]\n"
               "\n"
               "Calls native C libraries through JSON typemaps.\n"
               "\n"
               "commands:\n");
  for (const Command& c : commands) std::fprintf(out, "  %-9s %s\n", c.name, c.summary);
  std::fprintf(out, "\n'marshal COMMAND --help' describes a command.\n");
}

}  // namespace

const marshal::engine::Typemap* marshal::cli::load_or_report(Context& ctx, const std::string& path, bool all_errors) {
  LoadResult r = ctx.load_file(path);
  if (r.ok()) return r.typemap;
  for (const Diagnostic& d : r.errors) {
    std::fprintf(stderr, "%s\n", d.text().c_str());
    if (!all_errors) break;
  }
  return nullptr;
}

bool marshal::cli::wants_help(const Args& args) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") return true;
  return false;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string_view name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    usage(stdout);
    return 0;
  }
  if (name == "--version") {
    std::printf("marshal 0.1.0\n");
    return 0;
  }
  marshal::cli::Args args(argv + 2, argv + argc);
  for (const Command& c : commands) {
    if (name != c.name) continue;
    try {
      return c.run(args);
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "marshal %s: out of memory\n", c.name);
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "marshal %s: internal error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "marshal: unknown command '%.*s'\n\n", int(name.size()), name.data());
  usage(stderr);
  return 2;
}
