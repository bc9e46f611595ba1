// marshal command line: a shared library's exported symbols, read with libelf.
// Rules (System V gABI and the GNU symbol-versioning extension):
//  - a symbol is exported when it is defined (st_shndx != SHN_UNDEF), its binding
//    is GLOBAL, WEAK or GNU_UNIQUE and its visibility DEFAULT or PROTECTED;
//  - .gnu.version holds one 16-bit index per .dynsym entry: 0 local, 1 global
//    (unversioned), else a .gnu.version_d entry; bit 15 marks a hidden version
//    (name@VERSION, found by dlvsym only), otherwise it is the default (name@@VERSION);
//  - the .gnu.version_d entry flagged VER_FLG_BASE names the file, not a version.
#include "elf_symbols.hpp"

#ifdef MARSHAL_HAVE_LIBELF

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <map>
#include <memory>
#include <unistd.h>

namespace marshal::cli {

namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};
struct ElfCloser {
  void operator()(Elf* e) const { elf_end(e); }
};

const char* symbol_type(unsigned char t) {
  switch (t) {
    case STT_FUNC: return "function";
    case STT_GNU_IFUNC: return "ifunc";
    case STT_OBJECT: return "object";
    case STT_TLS: return "tls";
    case STT_COMMON: return "common";
    case STT_NOTYPE: return "notype";
    default: return "other";
  }
}

// Version index -> name, from .gnu.version_d (the base entry is skipped).
bool read_verdef(Elf* elf, Elf_Scn* scn, const GElf_Shdr& sh, std::map<unsigned, std::string>& names,
                 std::string& error) {
  Elf_Data* data = elf_getdata(scn, nullptr);
  if (!data) {
    error = "cannot read .gnu.version_d: " + std::string(elf_errmsg(-1));
    return false;
  }
  int offset = 0;
  for (GElf_Word k = 0; k < sh.sh_info; ++k) {  // sh_info: the number of entries
    GElf_Verdef def;
    if (!gelf_getverdef(data, offset, &def)) {
      error = "malformed .gnu.version_d entry " + std::to_string(k);
      return false;
    }
    GElf_Verdaux aux;
    if (def.vd_cnt > 0 && gelf_getverdaux(data, offset + static_cast<int>(def.vd_aux), &aux)) {
      const char* name = elf_strptr(elf, sh.sh_link, aux.vda_name);
      if (name && !(def.vd_flags & VER_FLG_BASE)) names[def.vd_ndx] = name;
    }
    if (def.vd_next == 0) break;
    offset += static_cast<int>(def.vd_next);
  }
  return true;
}

}  // namespace

bool read_elf_exports(const std::string& path, ElfExports& out, std::string& error) {
  out = {};
  if (elf_version(EV_CURRENT) == EV_NONE) {
    error = "libelf is out of date";
    return false;
  }
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) {
    error = path + ": cannot open: " + std::strerror(errno);
    return false;
  }
  std::unique_ptr<Elf, ElfCloser> elf(elf_begin(f.fd, ELF_C_READ, nullptr));
  if (!elf || elf_kind(elf.get()) != ELF_K_ELF) {
    error = path + ": not an ELF file";
    return false;
  }
  GElf_Ehdr eh;
  if (!gelf_getehdr(elf.get(), &eh) || eh.e_type != ET_DYN) {
    error = path + ": not an ELF shared object (e_type is not ET_DYN)";
    return false;
  }
  Elf_Scn* dynsym = nullptr;
  Elf_Scn* versym = nullptr;
  GElf_Shdr dynsym_sh{};
  std::map<unsigned, std::string> version_names;
  for (Elf_Scn* scn = elf_nextscn(elf.get(), nullptr); scn; scn = elf_nextscn(elf.get(), scn)) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh)) continue;
    if (sh.sh_type == SHT_DYNSYM) {
      dynsym = scn;
      dynsym_sh = sh;
    } else if (sh.sh_type == SHT_GNU_versym) {
      versym = scn;
    } else if (sh.sh_type == SHT_GNU_verdef) {
      if (!read_verdef(elf.get(), scn, sh, version_names, error)) {
        error = path + ": " + error;
        return false;
      }
    }
  }
  if (!dynsym) {
    error = path + ": has no dynamic symbol table (.dynsym)";
    return false;
  }
  for (const auto& [ndx, name] : version_names) out.versions.push_back(name);
  Elf_Data* syms = elf_getdata(dynsym, nullptr);
  Elf_Data* vers = versym ? elf_getdata(versym, nullptr) : nullptr;
  if (!syms || dynsym_sh.sh_entsize == 0) {
    error = path + ": cannot read .dynsym";
    return false;
  }
  const std::size_t count = dynsym_sh.sh_size / dynsym_sh.sh_entsize;
  for (std::size_t i = 1; i < count; ++i) {  // entry 0 is the null symbol
    GElf_Sym s;
    if (!gelf_getsym(syms, static_cast<int>(i), &s)) break;
    const unsigned bind = GELF_ST_BIND(s.st_info);
    const unsigned vis = GELF_ST_VISIBILITY(s.st_other);
    if (s.st_shndx == SHN_UNDEF) continue;
    if (bind != STB_GLOBAL && bind != STB_WEAK && bind != STB_GNU_UNIQUE) continue;
    if (vis != STV_DEFAULT && vis != STV_PROTECTED) continue;
    const char* name = elf_strptr(elf.get(), dynsym_sh.sh_link, s.st_name);
    if (!name || !*name) continue;
    ElfExport e;
    e.name = name;
    const unsigned char type = GELF_ST_TYPE(s.st_info);
    e.is_function = type == STT_FUNC || type == STT_GNU_IFUNC;
    e.type = symbol_type(type);
    if (vers) {
      GElf_Versym v;
      if (gelf_getversym(vers, static_cast<int>(i), &v)) {
        const unsigned ndx = v & 0x7fff;
        if (ndx == 0) continue;  // VER_NDX_LOCAL: not visible outside
        e.is_default = (v & 0x8000) == 0;
        auto it = version_names.find(ndx);
        if (it != version_names.end()) e.version = it->second;
      }
    }
    out.symbols.push_back(std::move(e));
  }
  return true;
}

}  // namespace marshal::cli

#else  // built without libelf

namespace marshal::cli {
bool read_elf_exports(const std::string& path, ElfExports&, std::string& error) {
  error = path + ": this marshal was built without libelf (apt-get install libelf-dev, then rebuild)";
  return false;
}
}  // namespace marshal::cli

#endif
