// marshal command line: `marshal layout TYPEMAP TYPE`.
// Prints a struct's or union's size, alignment, every field (nested records
// flattened with dotted names and absolute offsets), bit ranges and padding.
#include "commands.hpp"

#include "typemap/context.hpp"
#include "types/layout.hpp"

#include <cstdio>
#include <string>

namespace marshal::cli {
using namespace marshal::engine;

namespace {

std::vector<MemberShape> shapes_of(const TypeRegistry& reg, const RecordInfo& info) {
  std::vector<MemberShape> shapes;
  for (const Field& f : info.fields) {
    const TypeDesc& t = reg.get(f.type);
    shapes.push_back({t.size, t.align, t.has(flag_variable_size)});
  }
  return shapes;
}

void print_fields(const TypeRegistry& reg, const TypeDesc& d, std::uint32_t base, const std::string& prefix) {
  const RecordInfo& info = d.as<RecordInfo>();
  for (const Field& f : info.fields) {
    const TypeDesc& t = reg.get(f.type);
    const std::string name = prefix + f.name;
    if (f.is_bitfield) {
      std::string bits = f.bits == 0 ? "(zero-width)"
                                      : std::to_string(f.bit_offset) + ".." + std::to_string(f.bit_offset + f.bits - 1);
      std::printf("  %6u  %5s  %-13s %-24s %s\n", base + f.offset, "-", bits.c_str(), name.c_str(),
                  reg.spell(f.type).c_str());
      continue;
    }
    std::printf("  %6u  %5u  %-13s %-24s %s\n", base + f.offset, t.size, "", name.c_str(), reg.spell(f.type).c_str());
    if (t.kind == Kind::struct_ || t.kind == Kind::union_) print_fields(reg, t, base + f.offset, name + ".");
  }
}

}  // namespace

int cmd_layout(const Args& args) {
  if (wants_help(args)) {
    std::printf(
        "usage: marshal layout TYPEMAP TYPE\n"
        "\n"
        "Prints the C layout of the struct or union TYPE of TYPEMAP: size,\n"
        "alignment, whether it is blittable (copied as is, no conversion), then each\n"
        "field's offset and size in bytes (bitfields: the byte holding the first bit\n"
        "and the bit range from that byte's bit 0), nested records flattened as\n"
        "outer.inner with absolute offsets, and the padding holes.\n");
    return 0;
  }
  if (args.size() != 2) {
    std::fprintf(stderr, "marshal layout: expected TYPEMAP TYPE (see marshal layout --help)\n");
    return 2;
  }
  Context ctx;
  const Typemap* tm = load_or_report(ctx, args[0], true);
  if (!tm) return 1;
  const TypeRegistry& reg = ctx.types();
  TypeId id = tm->find_type(args[1]);
  if (id == no_type) {
    std::string names;
    for (const auto& [n, t] : tm->types)
      if (reg.get(t).kind == Kind::struct_ || reg.get(t).kind == Kind::union_) names += (names.empty() ? "" : ", ") + n;
    std::fprintf(stderr, "marshal layout: %s: no type '%s' (structs and unions: %s)\n", args[0].c_str(),
                 args[1].c_str(), names.empty() ? "none" : names.c_str());
    return 1;
  }
  const TypeDesc& d = reg.get(id);
  if (d.kind != Kind::struct_ && d.kind != Kind::union_) {
    std::printf("%s %s: size %u, align %u, blittable %s\n", std::string(kind_name(d.kind)).c_str(), args[1].c_str(),
                d.size, d.align, d.has(flag_blittable) ? "yes" : "no");
    return 0;
  }
  const RecordInfo& info = d.as<RecordInfo>();
  std::string rules = info.rule == LayoutRule::msvc ? "msvc" : "sysv";
  if (info.pack) rules += ", pack " + std::to_string(info.pack);
  std::printf("%s %s: size %u, align %u, blittable %s (%s%s)\n", std::string(kind_name(d.kind)).c_str(),
              args[1].c_str(), d.size, d.align, d.has(flag_blittable) ? "yes" : "no", rules.c_str(),
              d.has(flag_variable_size) ? ", ends in a flexible array member" : "");
  std::printf("  %6s  %5s  %-13s %-24s %s\n", "offset", "size", "bits", "field", "type");
  print_fields(reg, d, 0, "");
  auto holes = padding_holes(info.fields, shapes_of(reg, info), d.size);
  if (holes.empty()) {
    std::printf("  no padding\n");
  } else {
    for (const Hole& h : holes)
      std::printf("  padding: %u byte%s at offset %u%s\n", h.size, h.size == 1 ? "" : "s", h.offset,
                  h.offset + h.size == d.size ? " (tail)" : "");
  }
  return 0;
}

}  // namespace marshal::cli
