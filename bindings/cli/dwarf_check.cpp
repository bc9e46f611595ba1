// marshal command line: `marshal check --dwarf LIBRARY`.
// Compares a typemap with the library's DWARF debug info (libdw): every struct
// or union the debug info knows by the same name must have the same size and
// the same field offsets (bit offsets for bitfields; scalar fields also the same
// size and class), and every function the
// same parameter count, with each parameter of the same size and class
// (integer, floating point, pointer, record). A mismatch is an error at the
// JSON Pointer of the typemap's element.
#include "tools.hpp"

#ifdef MARSHAL_HAVE_LIBDW

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <fcntl.h>
#include <map>
#include <unistd.h>
#include <vector>

namespace marshal::cli {
using namespace marshal::engine;

namespace {

struct DebugInfo {
  // struct/union name (or its typedef's) -> its definitions: compilation units
  // may define different records under one name (each file's own `union IntOrFloat`)
  std::map<std::string, std::vector<Dwarf_Die>> records;
  std::map<std::string, Dwarf_Die> functions;  // external function definitions and declarations
};

bool is_declaration(Dwarf_Die* d) { return dwarf_hasattr(d, DW_AT_declaration) != 0; }

void collect(Dwarf_Die* parent, DebugInfo& info) {
  Dwarf_Die child;
  if (dwarf_child(parent, &child) != 0) return;
  do {
    const int tag = dwarf_tag(&child);
    const char* name = dwarf_diename(&child);
    if ((tag == DW_TAG_structure_type || tag == DW_TAG_union_type) && name && !is_declaration(&child)) {
      info.records[name].push_back(child);
    } else if (tag == DW_TAG_typedef && name) {
      // typedef struct { ... } Name;
      Dwarf_Attribute a;
      Dwarf_Die target;
      if (dwarf_attr(&child, DW_AT_type, &a) && dwarf_formref_die(&a, &target)) {
        const int t = dwarf_tag(&target);
        if ((t == DW_TAG_structure_type || t == DW_TAG_union_type) && !dwarf_diename(&target) && !is_declaration(&target))
          info.records[name].push_back(target);
      }
    } else if (tag == DW_TAG_subprogram && name && dwarf_hasattr(&child, DW_AT_external)) {
      auto it = info.functions.find(name);
      if (it == info.functions.end() || is_declaration(&it->second)) info.functions[name] = child;
    }
  } while (dwarf_siblingof(&child, &child) == 0);
}

// The class of a C type for comparison: 'i' integer (and enum, bool), 'f' floating,
// 'p' pointer or array parameter, 'r' record, '?' unknown.
char class_of(Dwarf_Die* type, Dwarf_Word& size) {
  Dwarf_Die peeled;
  if (dwarf_peel_type(type, &peeled) != 0) return '?';
  size = 0;
  dwarf_aggregate_size(&peeled, &size);
  switch (dwarf_tag(&peeled)) {
    case DW_TAG_pointer_type: case DW_TAG_array_type: case DW_TAG_subroutine_type: size = sizeof(void*); return 'p';
    case DW_TAG_structure_type: case DW_TAG_union_type: return 'r';
    case DW_TAG_enumeration_type: return 'i';
    case DW_TAG_base_type: {
      Dwarf_Attribute a;
      Dwarf_Word enc = 0;
      if (dwarf_attr(&peeled, DW_AT_encoding, &a)) dwarf_formudata(&a, &enc);
      return enc == DW_ATE_float ? 'f' : 'i';
    }
    default: return '?';
  }
}

char class_of(const TypeRegistry& reg, TypeId t, std::uint64_t& size) {
  const TypeDesc& d = reg.get(t);
  size = d.size;
  switch (d.kind) {
    case Kind::integer: case Kind::boolean: case Kind::enum_: return 'i';
    case Kind::floating: return 'f';
    case Kind::struct_: case Kind::union_: return 'r';
    case Kind::pointer: case Kind::ptr: case Kind::array: case Kind::string: case Kind::callback: case Kind::interface:
      size = sizeof(void*);
      return 'p';
    case Kind::handle:
      if (d.as<HandleInfo>().by_pointer) {
        size = sizeof(void*);
        return 'p';
      }
      return 'i';
    case Kind::void_: return 'v';
  }
  return '?';
}

const char* class_name(char c) {
  switch (c) {
    case 'i': return "an integer";
    case 'f': return "a floating-point number";
    case 'p': return "a pointer";
    case 'r': return "a struct or union";
    case 'v': return "void";
    default: return "an unknown type";
  }
}

// The differences between a record and one DWARF definition, as messages.
std::vector<std::string> record_differences(const TypeRegistry& reg, const std::string& name, const TypeDesc& d,
                                            Dwarf_Die die) {
  std::vector<std::string> out;
  const std::string where = "/types/" + name;
  Dwarf_Word size = 0;
  if (dwarf_aggregate_size(&die, &size) == 0 && size != d.size)
    out.push_back(where + ": size " + std::to_string(d.size) + " in the typemap, " + std::to_string(size) +
                  " in the debug info");
  std::map<std::string, Dwarf_Die> members;  // by name: a typemap may leave out a padding field
  Dwarf_Die child;
  if (dwarf_child(&die, &child) == 0) {
    do {
      const char* n = dwarf_diename(&child);
      if (dwarf_tag(&child) == DW_TAG_member && n) members.emplace(n, child);
    } while (dwarf_siblingof(&child, &child) == 0);
  }
  const auto& fields = d.as<RecordInfo>().fields;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const Field& f = fields[i];
    if (f.is_bitfield && f.bits == 0) continue;  // `unsigned : 0` has no member in DWARF
    const std::string fp = where + (d.kind == Kind::struct_ ? "/struct/" : "/union/") + std::to_string(i);
    auto it = members.find(f.name);
    if (it == members.end()) {
      if (f.name.rfind("_", 0) != 0)  // _pad, _anon: names a generator gave unnamed C members
        out.push_back(fp + ": field '" + f.name + "' is not a member in the debug info");
      continue;
    }
    Dwarf_Attribute a;
    Dwarf_Word bits = 0;
    if (dwarf_attr(&it->second, DW_AT_data_bit_offset, &a)) {
      dwarf_formudata(&a, &bits);
    } else if (dwarf_attr(&it->second, DW_AT_data_member_location, &a)) {
      Dwarf_Word bytes = 0;
      dwarf_formudata(&a, &bytes);
      bits = bytes * 8;
    }  // a union member has no location: offset 0
    // A scalar field's class and size (int32 where C has float is the same layout, not
    // the same field); inline arrays, strings and records may view C's bytes differently.
    const Kind k = reg.get(f.type).kind;
    Dwarf_Die member_type;
    if (!f.is_bitfield && k != Kind::array && k != Kind::string && k != Kind::struct_ && k != Kind::union_ &&
        dwarf_attr(&it->second, DW_AT_type, &a) && dwarf_formref_die(&a, &member_type)) {
      std::uint64_t tm_size = 0;
      Dwarf_Word c_size = 0;
      const char tm_class = class_of(reg, f.type, tm_size);
      const char c_class = class_of(&member_type, c_size);
      if ((c_class == 'i' || c_class == 'f' || c_class == 'p') && (tm_class != c_class || tm_size != c_size))
        out.push_back(fp + ": field '" + f.name + "' is " + class_name(tm_class) + " of " + std::to_string(tm_size) +
                      " bytes (" + reg.spell(f.type) + ") in the typemap, " + class_name(c_class) + " of " +
                      std::to_string(c_size) + " bytes in the debug info");
    }
    const std::uint64_t engine_bits = std::uint64_t{f.offset} * 8 + f.bit_offset;
    if (engine_bits != bits)
      out.push_back(fp + ": field '" + f.name + "' is at bit " + std::to_string(engine_bits) + " in the typemap, at bit " +
                    std::to_string(bits) + " in the debug info");
  }
  return out;
}

// A record matches when one of the definitions of its name does; otherwise the
// differences from the first are reported.
void check_record(const std::string& file, const TypeRegistry& reg, const std::string& name, const TypeDesc& d,
                  const std::vector<Dwarf_Die>& dies, int& status) {
  std::vector<std::string> first;
  for (std::size_t k = 0; k < dies.size(); ++k) {
    std::vector<std::string> diff = record_differences(reg, name, d, dies[k]);
    if (diff.empty()) return;
    if (k == 0) first = std::move(diff);
  }
  for (const std::string& m : first) std::fprintf(stderr, "%s: %s\n", file.c_str(), m.c_str());
  status = 1;
}

void check_function(const std::string& file, const TypeRegistry& reg, const Function& fn, Dwarf_Die die, int& status) {
  std::vector<Dwarf_Die> params;
  bool variadic = false;
  Dwarf_Die child;
  if (dwarf_child(&die, &child) == 0) {
    do {
      if (dwarf_tag(&child) == DW_TAG_formal_parameter) params.push_back(child);
      if (dwarf_tag(&child) == DW_TAG_unspecified_parameters) variadic = true;
    } while (dwarf_siblingof(&child, &child) == 0);
  }
  const std::size_t fixed = fn.variadic_from >= 0 ? static_cast<std::size_t>(fn.variadic_from) : fn.params.size();
  if (params.size() != fixed || variadic != (fn.variadic_from >= 0)) {
    std::fprintf(stderr, "%s: %s: %zu parameter%s%s in the typemap, %zu%s in the debug info\n", file.c_str(),
                 fn.pointer.c_str(), fixed, fixed == 1 ? "" : "s", fn.variadic_from >= 0 ? " and ..." : "",
                 params.size(), variadic ? " and ..." : "");
    status = 1;
    return;
  }
  auto compare = [&](TypeId t, Dwarf_Die* type, const std::string& where, const std::string& what) {
    std::uint64_t tsize = 0;
    Dwarf_Word dsize = 0;
    const char tc = class_of(reg, t, tsize);
    const char dc = type ? class_of(type, dsize) : 'v';
    if (dc == '?') return;
    if (tc != dc || (tc != 'v' && tsize != dsize)) {
      std::fprintf(stderr, "%s: %s: %s is %s of %llu bytes (%s) in the typemap, %s of %llu bytes in the debug info\n",
                   file.c_str(), where.c_str(), what.c_str(), class_name(tc), static_cast<unsigned long long>(tsize),
                   reg.spell(t).c_str(), class_name(dc), static_cast<unsigned long long>(dsize));
      status = 1;
    }
  };
  for (std::size_t i = 0; i < fixed; ++i) {
    Dwarf_Attribute a;
    Dwarf_Die type;
    const bool has_type = dwarf_attr(&params[i], DW_AT_type, &a) && dwarf_formref_die(&a, &type);
    compare(fn.params[i].type, has_type ? &type : nullptr, fn.pointer + "/params/" + std::to_string(i),
            "parameter '" + fn.params[i].name + "'");
  }
  Dwarf_Attribute a;
  Dwarf_Die type;
  const bool has_type = dwarf_attr(&die, DW_AT_type, &a) && dwarf_formref_die(&a, &type);
  compare(fn.returns, has_type ? &type : nullptr, fn.pointer + "/returns", "the return");
}

}  // namespace

int check_dwarf(const Typemap& tm, const TypeRegistry& reg, const std::string& library) {
  const int fd = ::open(library.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "%s: /library: %s: cannot open: %s\n", tm.file.c_str(), library.c_str(), std::strerror(errno));
    return 1;
  }
  Dwarf* dw = dwarf_begin(fd, DWARF_C_READ);
  if (!dw) {
    ::close(fd);
    std::fprintf(stderr, "%s: /library: %s has no DWARF debug info (build it with -g)\n", tm.file.c_str(),
                 library.c_str());
    return 1;
  }
  DebugInfo info;
  Dwarf_Off off = 0, next = 0;
  std::size_t header = 0;
  while (dwarf_nextcu(dw, off, &next, &header, nullptr, nullptr, nullptr) == 0) {
    Dwarf_Die cu;
    if (dwarf_offdie(dw, off + header, &cu)) collect(&cu, info);
    off = next;
  }
  int status = 0;
  std::size_t records = 0, functions = 0;
  for (const auto& [name, id] : tm.types) {
    const TypeDesc& d = reg.get(id);
    if (d.kind != Kind::struct_ && d.kind != Kind::union_) continue;
    auto it = info.records.find(name);
    if (it == info.records.end()) continue;  // named differently in C, or not in this library
    check_record(tm.file, reg, name, d, it->second, status);
    ++records;
  }
  for (const auto& [name, fn] : tm.functions) {
    auto it = info.functions.find(fn.symbol);
    if (it == info.functions.end()) continue;
    check_function(tm.file, reg, fn, it->second, status);
    ++functions;
  }
  dwarf_end(dw);
  ::close(fd);
  if (status == 0)
    std::printf("%s: dwarf %s: %zu records and %zu functions match the debug info\n", tm.file.c_str(), library.c_str(),
                records, functions);
  return status;
}

}  // namespace marshal::cli

#else  // built without libdw

#include <cstdio>

namespace marshal::cli {
using namespace marshal::engine;
int check_dwarf(const Typemap& tm, const TypeRegistry&, const std::string&) {
  std::fprintf(stderr, "%s: /library: this marshal was built without libdw (apt-get install libdw-dev, then rebuild)\n",
               tm.file.c_str());
  return 1;
}
}  // namespace marshal::cli

#endif
