// marshal tests: C layout against the compiler.
// Every record of tests/fixtures/layout.h: size, alignment, each field's offset
// (nested fields as a.b.c) and each bitfield's bit range, as the C compiler laid
// them out, must equal what the engine computes from tests/fixtures/layout.json.
#include <doctest/doctest.h>

#include "typemap/context.hpp"
#include "support.hpp"

#include "fixtures/layout_table.h"

#include <map>

using namespace marshal;
using namespace marshal::engine;

namespace {

struct Flat {
  std::uint64_t offset;
  std::uint32_t size;
  long bit_first;  // -1: not a bitfield
  long bit_width;
};

// Flattens a record's fields as the fixture names them (outer.inner).
void flatten(const TypeRegistry& reg, TypeId id, std::uint64_t base, const std::string& prefix,
             std::map<std::string, Flat>& out) {
  const TypeDesc& d = reg.get(id);
  for (const Field& f : d.as<RecordInfo>().fields) {
    const TypeDesc& t = reg.get(f.type);
    const std::string name = prefix + f.name;
    if (f.is_bitfield) {
      if (f.bits == 0) continue;  // a zero-width run break has no storage
      out[name] = {base + f.offset, 0, long((base + f.offset) * 8 + f.bit_offset), long(f.bits)};
      continue;
    }
    out[name] = {base + f.offset, t.size, -1, 0};
    if (t.kind == Kind::struct_ || t.kind == Kind::union_) flatten(reg, f.type, base + f.offset, name + ".", out);
  }
}

}  // namespace

TEST_SUITE("layout") {
  TEST_CASE("every fixture record matches the C compiler") {
    Context ctx;
    LoadResult r = ctx.load_file(test::source_path("tests/fixtures/layout.json"));
    for (const auto& e : r.errors) INFO(e.text());
    REQUIRE(r.ok());
    std::size_t count = 0;
    const fx_record* recs = fx_layouts(&count);
    REQUIRE(count >= 25);
    std::size_t fields_checked = 0;
    for (std::size_t i = 0; i < count; ++i) {
      const fx_record& rec = recs[i];
      const std::string name = rec.name;  // doctest prints a const char* as an address
      CAPTURE(name);
      TypeId id = r.typemap->find_type(rec.name);
      REQUIRE(id != no_type);
      const TypeDesc& d = ctx.types().get(id);
      CHECK(d.size == rec.size);
      CHECK(d.align == rec.align);
      std::map<std::string, Flat> flat;
      flatten(ctx.types(), id, 0, "", flat);
      for (std::size_t k = 0; k < rec.nfields; ++k) {
        const fx_field& f = rec.fields[k];
        const std::string field = f.name;
        CAPTURE(field);
        auto it = flat.find(f.name);
        REQUIRE(it != flat.end());
        if (f.bit_first >= 0 || f.set_ones) {
          CHECK(it->second.bit_first == f.bit_first);
          CHECK(it->second.bit_width == f.bit_width);
        } else {
          CHECK(it->second.bit_first == -1);
          CHECK(it->second.offset == f.offset);
          CHECK(it->second.size == f.size);
        }
        ++fields_checked;
      }
    }
    CHECK(fields_checked > 100);
  }

  TEST_CASE("blittability follows the fields") {
    Context ctx;
    LoadResult r = ctx.load_file(test::source_path("tests/fixtures/layout.json"));
    REQUIRE(r.ok());
    auto blittable = [&](const char* name) { return ctx.types().get(r.typemap->find_type(name)).has(flag_blittable); };
    CHECK(blittable("Point"));
    CHECK(blittable("Deep"));           // nested structs and inline arrays of blittable fields
    CHECK(blittable("Packed1"));
    CHECK(blittable("IntOrFloat"));
    CHECK(blittable("EnumStruct"));     // enums are their underlying integer
    CHECK_FALSE(blittable("Pointers")); // strings, ptr and callbacks need conversion
    CHECK_FALSE(blittable("VariantBool"));
    CHECK_FALSE(blittable("WideChars")); // an inline string is converted
    CHECK_FALSE(blittable("Bits1"));     // bitfields are extracted
    CHECK_FALSE(blittable("FlexArr"));
    CHECK(ctx.types().get(r.typemap->find_type("FlexArr")).has(flag_variable_size));
  }

  TEST_CASE("msvc layout is selectable per typemap") {
    Context ctx;
    const char* text = R"({"typemap": 1, "defaults": {"layout": "msvc"}, "types": {
      "S": {"struct": [{"name": "a", "type": "uint8", "bits": 3}, {"name": "b", "type": "uint32", "bits": 5},
                        {"name": "c", "type": "uint8", "bits": 2}]},
      "G": {"struct": [{"name": "a", "type": "uint8", "bits": 3}, {"name": "b", "type": "uint32", "bits": 5},
                        {"name": "c", "type": "uint8", "bits": 2}], "layout": "sysv"}}})";
    LoadResult r = ctx.load_text(text, "msvc.json");
    REQUIRE(r.ok());
    std::size_t count = 0;
    const fx_record* recs = fx_layouts(&count);
    std::size_t ms_size = 0;
    for (std::size_t i = 0; i < count; ++i)
      if (std::string(recs[i].name) == "MsBits") ms_size = recs[i].size;
    CHECK(ctx.types().get(r.typemap->find_type("S")).size == ms_size);  // 12 with MSVC rules
    CHECK(ctx.types().get(r.typemap->find_type("G")).size == 4);        // GCC packs them in one int
  }

  TEST_CASE("recursion through pointers works; by value it is an error") {
    Context ctx;
    LoadResult ok = ctx.load_text(R"({"typemap": 1, "types": {
      "Node": {"struct": [{"name": "v", "type": "int32"}, {"name": "next", "type": {"ptr": "Node"}, "nullable": true}]},
      "A": {"struct": [{"name": "b", "type": {"ptr": "B"}}]},
      "B": {"struct": [{"name": "a", "type": "A"}, {"name": "self", "type": {"ptr": "B"}}]}}})", "rec.json");
    REQUIRE(ok.ok());
    CHECK(ctx.types().get(ok.typemap->find_type("Node")).size == 16);
    CHECK(ctx.types().get(ok.typemap->find_type("B")).size == 16);
    LoadResult bad = ctx.load_text(R"({"typemap": 1, "types": {
      "A": {"struct": [{"name": "b", "type": "B"}]},
      "B": {"struct": [{"name": "x", "type": "int32"}, {"name": "a", "type": {"array": "A", "count": 2}}]}}})", "cycle.json");
    REQUIRE(bad.errors.size() == 1);
    CHECK(bad.errors[0].text().find("contains itself by value") != std::string::npos);
  }
}
