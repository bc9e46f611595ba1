// marshal command line: a shared library's exported symbols, read from its ELF file.
// The dynamic symbol table (.dynsym) with each symbol's type and its GNU symbol
// version (.gnu.version indexes into .gnu.version_d), as the dynamic linker sees it.
#pragma once

#include <string>
#include <vector>

namespace marshal::cli {

struct ElfExport {
  std::string name;
  std::string version;    // empty: unversioned (or the base version)
  bool is_default = true; // name@@VERSION (what dlsym finds); false for a hidden name@VERSION
  bool is_function = false;  // STT_FUNC or STT_GNU_IFUNC
  std::string type;       // "function", "ifunc", "object", "tls", "common", "notype"
};

struct ElfExports {
  std::vector<ElfExport> symbols;  // defined, global or weak, default or protected visibility
  std::vector<std::string> versions;  // every version the file defines (.gnu.version_d)
};

// Reads the exports of the ELF shared object at path; false with a message
// naming the file when it cannot be read or is not a shared object.
bool read_elf_exports(const std::string& path, ElfExports& out, std::string& error);

}  // namespace marshal::cli
