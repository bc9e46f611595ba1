// marshal tests: the engine's layout of every struct and union of a typemap, printed in
// the line format of the C program gen_layouts.py writes, so check_layouts.py can compare
// them. In process, through the loader (which calls compute_layout, as `marshal layout` does).
#include "typemap/context.hpp"

#include <cstdio>
#include <string>

using namespace marshal;
using namespace marshal::engine;

namespace {

// Fields in declaration order; anonymous nested records flattened as outer.inner (named
// ones are records of their own); zero-width bitfields have no storage and are skipped.
void print_fields(const TypeRegistry& reg, const std::string& rec, const TypeDesc& d, std::uint64_t base,
                  const std::string& prefix) {
  for (const Field& f : d.as<RecordInfo>().fields) {
    const TypeDesc& t = reg.get(f.type);
    const std::string path = prefix + f.name;
    const std::uint64_t at = base + f.offset;
    if (f.is_bitfield) {
      if (f.bits != 0)
        std::printf("B %s %s %llu %u\n", rec.c_str(), path.c_str(),
                    static_cast<unsigned long long>(at * 8 + f.bit_offset), unsigned{f.bits});
      continue;
    }
    std::printf("F %s %s %llu %u\n", rec.c_str(), path.c_str(), static_cast<unsigned long long>(at), t.size);
    if ((t.kind == Kind::struct_ || t.kind == Kind::union_) && t.name.empty()) print_fields(reg, rec, t, at, path + ".");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: layout-dump TYPEMAP\n");
    return 2;
  }
  Context ctx;
  LoadResult r = ctx.load_file(argv[1]);
  // A layout the engine refuses is a difference too: report it, print the rest.
  for (const auto& e : r.errors) std::printf("E %s\n", e.text().c_str());
  if (!r.typemap) return 1;
  const TypeRegistry& reg = ctx.types();
  for (const auto& [name, id] : r.typemap->types) {
    const TypeDesc& d = reg.get(id);
    if (d.kind != Kind::struct_ && d.kind != Kind::union_) continue;
    std::printf("R %s %u %u\n", name.c_str(), d.size, d.align);
    print_fields(reg, name, d, 0, "");
  }
  return 0;
}
