// marshal command line: the typemap authoring tools (issue 19).
// check --against / --dwarf (check_against.cpp, dwarf_check.cpp), explain,
// lint and generate; each tool prints problems as FILE: /json/pointer: message.
#pragma once

#include "commands.hpp"

#include <string>

namespace marshal::cli {
using namespace marshal::engine;

struct AgainstOptions {
  std::string library;  // --against FILE: the shared object to compare with
  bool coverage = false;  // --coverage: list exports the typemap does not describe
  bool dwarf = false;     // --dwarf: compare records and signatures with the debug info
};

// Every function of tm must be an exported function of the library, with the
// version its symbol names; 0 when all are, 1 otherwise (errors on stderr).
int check_against(const Typemap& tm, const AgainstOptions& opt);
// Records' sizes and field offsets, functions' parameter counts and C types,
// against the library's DWARF; 0 when all match, 1 otherwise (errors on stderr).
int check_dwarf(const Typemap& tm, const TypeRegistry& reg, const std::string& library);

int cmd_explain(const Args& args);
int cmd_lint(const Args& args);
int cmd_generate(const Args& args);

}  // namespace marshal::cli
