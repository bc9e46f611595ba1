// marshal tests: the typemap authoring tools (issue 19).
// Runs the built `marshal` on real libraries and fixtures: check --against (ELF
// exports and GNU symbol versions), explain (System V passing and the engine's
// copies), lint (each finding at its JSON Pointer), the loader's "$question"
// entries, and generate (drafts from C headers whose layouts equal the compiler's).
#include <doctest/doctest.h>

#include "typemap/context.hpp"
#include "fixtures/layout_table.h"
#include "cli_run.hpp"
#include "support.hpp"

#include <array>
#include <cstdio>
#include <dlfcn.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>
#include <zlib.h>

#ifndef MARSHAL_EXE
#error "MARSHAL_EXE must be defined by the build"
#endif

using namespace marshal;
using namespace marshal::engine;

namespace {

using test::Run;
using test::run;
using test::temp_path;

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = temp_path(name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// The file a symbol of this process was loaded from (the real libz, libc).
std::string library_of(const void* symbol) {
  Dl_info info{};
  REQUIRE(::dladdr(symbol, &info) != 0);
  return info.dli_fname;
}

std::string zlib_path() { return library_of(reinterpret_cast<const void*>(&::zlibVersion)); }
std::string libc_path() { return library_of(reinterpret_cast<const void*>(&::getpid)); }

using test::without_questions;

// A typemap of one function, its symbol spelled as given.
std::string one_function(const std::string& symbol, const std::string& returns = "int") {
  return R"({"typemap": 1, "library": {"name": "x", "load": {"any": ["self"]}},
             "functions": {"f": {"symbol": ")" + symbol + R"(", "returns": ")" + returns + R"("}}})";
}

}  // namespace

TEST_SUITE("tools") {
  // ---- check --against ------------------------------------------------------------------
  TEST_CASE("check --against: zlib's typemap matches libz's exports") {
    Run r = run("check --against " + zlib_path() + " " + test::source_path("typemaps/zlib.json"));
    INFO(r.err);
    CHECK(r.status == 0);
    CHECK(r.err.empty());
    CHECK(r.out.find("all ") != std::string::npos);
    CHECK(r.out.find("functions exported") != std::string::npos);
  }

  TEST_CASE("check --against: a missing symbol is an error at the function's pointer") {
    const std::string tm = write_temp("missing.json", one_function("no_such_function_xyz"));
    Run r = run("check --against " + zlib_path() + " " + tm);
    CHECK(r.status == 1);
    CHECK(r.err.find(tm + ": /functions/f: symbol 'no_such_function_xyz' is not exported by " + zlib_path()) !=
          std::string::npos);
    std::filesystem::remove(tm);
  }

  TEST_CASE("check --against: GNU symbol versions") {
    // deflateBound is deflateBound@@ZLIB_1.2.0; uncompress2 is @@ZLIB_1.2.9; zlibVersion is unversioned.
    const std::string good = write_temp("good.json", one_function("deflateBound@ZLIB_1.2.0"));
    Run ok = run("check --against " + zlib_path() + " " + good);
    INFO(ok.err);
    CHECK(ok.status == 0);

    const std::string wrong = write_temp("wrong.json", one_function("deflateBound@ZLIB_1.2.9"));
    Run bad = run("check --against " + zlib_path() + " " + wrong);
    CHECK(bad.status == 1);
    CHECK(bad.err.find(wrong + ": /functions/f: symbol 'deflateBound@ZLIB_1.2.9': ") != std::string::npos);
    CHECK(bad.err.find("has no version 'ZLIB_1.2.9' of it (it has deflateBound@@ZLIB_1.2.0)") != std::string::npos);

    const std::string unversioned = write_temp("unv.json", one_function("zlibVersion@ZLIB_1.2.0", "pointer"));
    Run bad2 = run("check --against " + zlib_path() + " " + unversioned);
    CHECK(bad2.status == 1);
    CHECK(bad2.err.find("(it has zlibVersion)") != std::string::npos);
    for (const auto& f : {good, wrong, unversioned}) std::filesystem::remove(f);
  }

  TEST_CASE("check --against: hidden versions are found only when named") {
    // glibc keeps the old memcpy as the hidden memcpy@GLIBC_2.2.5 beside the default memcpy@@GLIBC_2.14.
    const std::string hidden = write_temp("hidden.json", one_function("memcpy@GLIBC_2.2.5", "pointer"));
    Run r = run("check --against " + libc_path() + " " + hidden);
    INFO(r.err);
    CHECK(r.status == 0);
    const std::string plain = write_temp("plain.json", one_function("memcpy", "pointer"));
    Run r2 = run("check --against " + libc_path() + " " + plain);
    INFO(r2.err);
    CHECK(r2.status == 0);
    std::filesystem::remove(hidden);
    std::filesystem::remove(plain);
  }

  TEST_CASE("check --against: data is not a function") {
    const std::string tm = write_temp("data.json", one_function("stdin", "pointer"));
    Run r = run("check --against " + libc_path() + " " + tm);
    CHECK(r.status == 1);
    CHECK(r.err.find(tm + ": /functions/f: symbol 'stdin' is data (an object) in ") != std::string::npos);
    CHECK(r.err.find("not a function") != std::string::npos);
    std::filesystem::remove(tm);
  }

  TEST_CASE("check --against: not a shared object, or no such file") {
    Run r = run("check --against " + test::source_path("typemaps/zlib.json") + " " +
                test::source_path("typemaps/zlib.json"));
    CHECK(r.status == 1);
    CHECK(r.err.find("/library: ") != std::string::npos);
    CHECK(r.err.find("not an ELF file") != std::string::npos);
    Run r2 = run("check --against /nonexistent/libnothing.so " + test::source_path("typemaps/zlib.json"));
    CHECK(r2.status == 1);
    CHECK(r2.err.find("/nonexistent/libnothing.so: cannot open") != std::string::npos);
    Run r3 = run("check --against");
    CHECK(r3.status == 2);
  }

  TEST_CASE("check --against --coverage: N of M exported functions described") {
    Run r = run("check --against " + zlib_path() + " --coverage " + test::source_path("typemaps/zlib.json"));
    INFO(r.err);
    CHECK(r.status == 0);
    Context ctx;
    LoadResult tm = ctx.load_file(test::source_path("typemaps/zlib.json"));
    REQUIRE(tm.ok());
    // Every function of the typemap is an exported default-version function, so N is their number.
    const std::string n = std::to_string(tm.typemap->functions.size());
    CHECK(r.out.find("coverage: " + n + " of ") != std::string::npos);
    CHECK(r.out.find("  not described: deflateBound\n") != std::string::npos);
    CHECK(r.out.find("  not described: compress2\n") == std::string::npos);
    std::size_t listed = 0;
    for (const std::string& l : lines(r.out)) listed += l.rfind("  not described: ", 0) == 0;
    // M - N names are listed.
    const auto at = r.out.find(" of ", r.out.find("coverage: "));
    const std::size_t m = std::stoul(r.out.substr(at + 4));
    CHECK(listed == m - tm.typemap->functions.size());
  }

  // ---- check --dwarf ----------------------------------------------------------------------
  TEST_CASE("check --dwarf: the fixture library's debug info agrees with its typemaps") {
    const std::string fixture = library_of(reinterpret_cast<const void*>(&fx_layouts));
    for (const char* tm : {"tests/fixtures/pinvoke.json", "tests/fixtures/layout.json", "tests/fixtures/callbacks.json"}) {
      Run r = run("check --against " + fixture + " --dwarf " + test::source_path(tm));
      INFO(std::string(tm), r.out, r.err);
      CHECK(r.status == 0);
      CHECK(r.out.find("match the debug info") != std::string::npos);
    }
    Run p = run("check --against " + fixture + " --dwarf " + test::source_path("tests/fixtures/pinvoke.json"));
    // Records and functions were compared, not skipped.
    CHECK(p.out.find(" 0 records and 0 functions") == std::string::npos);
  }

  TEST_CASE("check --dwarf: one field's type changed is an error at its pointer") {
    const std::string fixture = library_of(reinterpret_cast<const void*>(&fx_layouts));
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(test::read_text(test::source_path("tests/fixtures/pinvoke.json")));
    REQUIRE(j["types"].contains("Point"));
    REQUIRE(j["types"]["Point"]["struct"][0]["name"] == "x");
    j["types"]["Point"]["struct"][0]["type"] = "int64";  // C: int32_t x
    const std::string tm = write_temp("dwarf-bad.json", j.dump());
    Run r = run("check --against " + fixture + " --dwarf " + tm);
    INFO(r.err);
    CHECK(r.status == 1);
    CHECK(r.err.find(tm + ": /types/Point: size 16 in the typemap, 8 in the debug info") != std::string::npos);
    CHECK(r.err.find(tm + ": /types/Point/struct/1: field 'y' is at bit 64 in the typemap, at bit 32") != std::string::npos);
    std::filesystem::remove(tm);
    // A parameter's type changed: its size and class against the C prototype.
    nlohmann::ordered_json k = nlohmann::ordered_json::parse(test::read_text(test::source_path("tests/fixtures/pinvoke.json")));
    k["functions"]["add_f64"]["params"][1]["type"] = "int64";
    const std::string tm2 = write_temp("dwarf-bad2.json", k.dump());
    Run r2 = run("check --against " + fixture + " --dwarf " + tm2);
    CHECK(r2.status == 1);
    CHECK(r2.err.find(tm2 + ": /functions/add_f64/params/1: parameter ") != std::string::npos);
    CHECK(r2.err.find("is an integer of 8 bytes (int64) in the typemap, a floating-point number of 8 bytes") !=
          std::string::npos);
    std::filesystem::remove(tm2);
    CHECK(run("check --dwarf " + test::source_path("tests/fixtures/pinvoke.json")).status == 2);
  }

  TEST_CASE("check --dwarf: a field's type changed to another of the same size is an error at its pointer") {
    const std::string fixture = library_of(reinterpret_cast<const void*>(&fx_layouts));
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(test::read_text(test::source_path("tests/fixtures/pinvoke.json")));
    REQUIRE(j["types"]["Point"]["struct"][0]["name"] == "x");
    j["types"]["Point"]["struct"][0]["type"] = "float32";  // C: int32_t x, the same size and offset
    const std::string tm = write_temp("dwarf-float.json", j.dump());
    Run r = run("check --against " + fixture + " --dwarf " + tm);
    INFO(r.err);
    CHECK(r.status == 1);
    CHECK(r.err.find(tm + ": /types/Point/struct/0: field 'x' is a floating-point number of 4 bytes (float32) in the "
                          "typemap, an integer of 4 bytes in the debug info") != std::string::npos);
    std::filesystem::remove(tm);
  }

  // ---- explain ---------------------------------------------------------------------------
  TEST_CASE("explain: zlib's compress2, parameter by parameter") {
    Run r = run("explain " + test::source_path("typemaps/zlib.json") + " compress2");
    INFO(r.out, r.err);
    REQUIRE(r.status == 0);
    CHECK(r.out.find("returns int: in rax") != std::string::npos);
    CHECK(r.out.find("0 dest: out") != std::string::npos);
    CHECK(r.out.find("passing: in rdi (INTEGER), the address") != std::string::npos);
    CHECK(r.out.find("1 destLen: inout") != std::string::npos);
    CHECK(r.out.find("passing: in rsi (INTEGER), the address") != std::string::npos);
    CHECK(r.out.find("4 level: in int") != std::string::npos);
    CHECK(r.out.find("3 sourceLen: in ulong") != std::string::npos);
    CHECK(r.out.find("the engine computes it, the host supplies no value") != std::string::npos);
    CHECK(r.out.find("computed by the engine, not given by the host: the number of elements (code units) of 'source'") !=
          std::string::npos);
    CHECK(r.out.find("passing: in r8 (INTEGER)") != std::string::npos);
    CHECK(r.out.find("zeroed per-call arena storage") != std::string::npos);
    CHECK(r.out.find("copied back into result field 'dest'") != std::string::npos);
    CHECK(r.out.find("cleanup: per-call arena storage is released") != std::string::npos);
  }

  TEST_CASE("explain: eightbyte classes, memory, the hidden return pointer and stack spills") {
    const std::string fx = test::source_path("tests/fixtures/pinvoke.json");
    Run big = run("explain " + fx + " echo_big100");
    INFO(big.out, big.err);
    REQUIRE(big.status == 0);
    CHECK(big.out.find("hidden pointer to 100 bytes in rdi") != std::string::npos);
    CHECK(big.out.find("on the stack (class MEMORY: larger than 16 bytes") != std::string::npos);

    Run mix = run("explain " + fx + " echo_mix_fid");  // {float, int, double}: INTEGER then SSE
    INFO(mix.out);
    REQUIRE(mix.status == 0);
    CHECK(mix.out.find("returns MixFID: in rax + xmm0") != std::string::npos);
    CHECK(mix.out.find("passing: in rdi + xmm0 (eightbytes INTEGER, SSE)") != std::string::npos);

    Run f2 = run("explain " + fx + " echo_s2f");
    INFO(f2.out);
    REQUIRE(f2.status == 0);
    CHECK(f2.out.find("xmm0 (SSE)") != std::string::npos);

    Run spill = run("explain " + fx + " spill12_i64");
    INFO(spill.out);
    REQUIRE(spill.status == 0);
    CHECK(spill.out.find("in r9 (INTEGER)") != std::string::npos);
    CHECK(spill.out.find("on the stack (no integer register left)") != std::string::npos);
  }

  TEST_CASE("explain: unknown function names the choices; wrong usage") {
    Run r = run("explain " + test::source_path("typemaps/zlib.json") + " compress3");
    CHECK(r.status == 1);
    CHECK(r.err.find("no function 'compress3' (functions: ") != std::string::npos);
    CHECK(run("explain").status == 2);
  }

  // ---- lint -------------------------------------------------------------------------------
  TEST_CASE("lint: each suspicious entry at its pointer") {
    const std::string tm = write_temp("lint.json", R"({"typemap": 1, "library": {"name": "x", "load": {"any": ["self"]}},
      "types": {"Point": {"struct": [{"name": "x", "type": "int"}]}},
      "callbacks": {"cmp": {"returns": "int", "params": [{"name": "a", "type": "pointer"}]},
                    "done": {"returns": "void"},
                    "safe": {"returns": "int", "on_error": {"return": -1}}},
      "functions": {
        "point_init": {"returns": "void", "params": [{"name": "pt", "type": {"ptr": "Point"}, "dir": "out"}]},
        "point_move": {"returns": "void", "params": [{"name": "pt", "type": "pointer"}]},
        "point_show": {"returns": "void", "params": [{"name": "point", "type": "pointer"}]},
        "name_dup": {"returns": {"type": {"string": "utf8"}, "free_with": "none"}},
        "name_get": {"returns": {"type": {"string": "utf8"}, "free_with": "none"}},
        "read_name": {"returns": "int", "params": [
          {"name": "buf", "type": {"string": "utf8", "capacity": {"param": "n"}}, "dir": "out"},
          {"name": "n", "type": "size_t"}]},
        "fill": {"returns": "int", "params": [
          {"name": "dest", "type": {"array": "uint8", "count": {"param": "destLen"}}, "dir": "out"},
          {"name": "destLen", "type": {"ptr": "ulong"}}]},
        "fill2": {"returns": "int", "params": [
          {"name": "dest", "type": {"array": "uint8", "count": {"param": "cap"}}, "dir": "out"},
          {"name": "cap", "type": "size_t"}]},
        "fill3": {"returns": "int", "params": [
          {"name": "dest", "type": {"array": "uint8", "count": {"param": "cap"}, "length": {"return": true}}, "dir": "out"},
          {"name": "cap", "type": "size_t"}]}
      }})");
    Run r = run("lint " + tm);
    INFO(r.out, r.err);
    CHECK(r.status == 1);
    auto has = [&](const std::string& pointer, const std::string& words) {
      for (const std::string& l : lines(r.out))
        if (l.rfind(tm + ": " + pointer + ": lint: ", 0) == 0 && l.find(words) != std::string::npos) return true;
      return false;
    };
    CHECK(has("/functions/point_move/params/0/type", "parameter 'pt' is ptr<Point> in point_init"));
    CHECK(has("/functions/point_show/params/0/type", "named like the type 'Point'"));
    CHECK(has("/functions/name_dup/returns/free_with", "named like an allocator"));
    CHECK(has("/functions/read_name/params/0/type", "an out string without \"length\""));
    CHECK(has("/functions/fill/params/1/dir", "make it \"inout\""));
    CHECK(has("/functions/fill2/params/0/type", "has the capacity 'cap' (passed in) and no \"length\""));
    CHECK(has("/callbacks/cmp", "has no on_error"));
    // Not findings: a borrowed string of a getter, a void callback, a callback with on_error, a counted out array.
    CHECK(r.out.find("/functions/name_get") == std::string::npos);
    CHECK(r.out.find("/callbacks/done") == std::string::npos);
    CHECK(r.out.find("/callbacks/safe") == std::string::npos);
    CHECK(r.out.find("/functions/fill3") == std::string::npos);
    CHECK(lines(r.out).size() == 7);
    std::filesystem::remove(tm);
  }

  TEST_CASE("lint: the shipped typemaps, and an invalid one") {
    Run r = run("lint " + test::source_path("typemaps/libm.json"));
    INFO(r.out, r.err);
    CHECK(r.status == 0);
    CHECK(r.out.find("nothing suspicious") != std::string::npos);
    const std::string bad = write_temp("bad.json", R"({"typemap": 2})");
    Run b = run("lint " + bad);
    CHECK(b.status == 1);
    CHECK(b.err.find("/typemap: unsupported version") != std::string::npos);
    std::filesystem::remove(bad);
  }

  // ---- "$question" ----------------------------------------------------------------------------
  TEST_CASE("the loader rejects \"$question\" entries with their pointer and text, and nothing else") {
    Context ctx;
    LoadResult r = ctx.load_text(R"({"typemap": 1, "library": {"name": "x", "load": {"any": ["self"]}},
      "defaults": {"string": "utf8", "$question": "which encoding?"},
      "functions": {"f": {"returns": "int", "params": [
        {"name": "p", "type": {"ptr": "int"}, "dir": "out", "$question": "out or inout?"},
        {"name": "q", "type": "no_such_type"}]}}})",
                                 "draft.json");
    REQUIRE_FALSE(r.ok());
    REQUIRE(r.errors.size() == 2);
    std::map<std::string, std::string> got;
    for (const Diagnostic& d : r.errors) got[d.pointer] = d.message;
    CHECK(got["/defaults"] == "question: which encoding?");
    CHECK(got["/functions/f/params/0"] == "question: out or inout?");
  }

  // ---- generate --------------------------------------------------------------------------------
#ifdef MARSHAL_HAVE_LIBCLANG
  TEST_CASE("generate: zlib.h's draft lists only questions, and its records are the compiler's") {
    const std::string draft = temp_path("zlib-draft.json");
    Run g = run("generate /usr/include/zlib.h --library zlib --load libz.so.1 -o " + draft);
    INFO(g.err);
    REQUIRE(g.status == 0);
    Run c = run("check " + draft);
    CHECK(c.status == 1);
    const auto errs = lines(c.err);
    CHECK(errs.size() > 10);
    for (const std::string& l : errs) {
      CAPTURE(l);
      CHECK(l.rfind(draft + ": /", 0) == 0);
      CHECK(l.find(": question: ") != std::string::npos);
    }
    // The records, loaded alone, against this compiler's zlib.h.
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(test::read_text(draft));
    CHECK(j["library"]["load"]["linux"][0] == "libz.so.1");
    CHECK(j["functions"].contains("compress2"));
    CHECK(j["constants"]["Z_BEST_COMPRESSION"] == 9);
    CHECK(j["functions"]["compress2"]["params"][2]["type"] ==
          nlohmann::ordered_json::parse(R"({"array": "uchar", "count": {"param": "sourceLen"}})"));
    nlohmann::ordered_json types_only = {{"typemap", 1}, {"types", without_questions(j["types"])}};
    Context ctx;
    LoadResult r = ctx.load_text(types_only.dump(), "types.json");
    for (const auto& e : r.errors) INFO(e.text());
    REQUIRE(r.ok());
    const TypeDesc& zs = ctx.types().get(r.typemap->find_type("z_stream"));
    CHECK(zs.size == sizeof(z_stream));
    CHECK(zs.align == alignof(z_stream));
    const auto& f = zs.as<RecordInfo>().fields;
    REQUIRE(f.size() == 14);
    CHECK(f[3].name == "next_out");
    CHECK(f[3].offset == offsetof(z_stream, next_out));
    CHECK(f[6].offset == offsetof(z_stream, msg));
    CHECK(f[13].offset == offsetof(z_stream, reserved));
    const TypeDesc& gz = ctx.types().get(r.typemap->find_type("gz_header"));
    CHECK(gz.size == sizeof(gz_header));
    CHECK(gz.as<RecordInfo>().fields.back().offset == offsetof(gz_header, done));
    std::filesystem::remove(draft);
  }

  TEST_CASE("generate: every fixture record (packed, bitfields, unions, ms_struct) laid out as the compiler does") {
    const std::string draft = temp_path("layout-draft.json");
    Run g = run("generate " + test::source_path("tests/fixtures/layout.h") + " --library fx -o " + draft);
    INFO(g.err);
    REQUIRE(g.status == 0);
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(test::read_text(draft));
    nlohmann::ordered_json types_only = {{"typemap", 1}, {"types", without_questions(j["types"])}};
    CHECK(j["types"]["FlexArr"]["struct"][2]["type"]["count"]["field"] == "n");  // the guess, asked about
    CHECK(j["types"]["FlexArr"]["struct"][2].contains("$question"));
    Context ctx;
    LoadResult r = ctx.load_text(types_only.dump(), "types.json");
    for (const auto& e : r.errors) INFO(e.text());
    REQUIRE(r.ok());
    std::size_t count = 0;
    const fx_record* recs = fx_layouts(&count);
    REQUIRE(count >= 25);
    for (std::size_t i = 0; i < count; ++i) {
      CAPTURE(recs[i].name);
      const TypeId id = r.typemap->find_type(recs[i].name);
      REQUIRE(id != no_type);
      const TypeDesc& d = ctx.types().get(id);
      CHECK(d.size == recs[i].size);
      CHECK(d.align == recs[i].align);
      // Top-level fields (names without a dot) at the compiler's offsets and bits.
      for (std::size_t k = 0; k < recs[i].nfields; ++k) {
        const fx_field& ff = recs[i].fields[k];
        const std::string name = ff.name;
        if (name.find('.') != std::string::npos) continue;
        CAPTURE(name);
        const Field* field = nullptr;
        for (const Field& x : d.as<RecordInfo>().fields)
          if (x.name == name) field = &x;
        REQUIRE(field != nullptr);
        if (ff.bit_first >= 0) CHECK(long(field->offset * 8 + field->bit_offset) == ff.bit_first);
        else CHECK(field->offset == ff.offset);
      }
    }
    CHECK(j["types"]["Packed1"]["pack"] == 1);
    CHECK(j["types"]["Packed4"]["pack"] == 4);
    CHECK(j["types"]["MsBits"]["layout"] == "msvc");
    CHECK(j["types"]["Bits1"]["struct"][0]["bits"] == 3);
    CHECK(j["types"]["Color"]["enum"]["BLUE"] == 2);
    std::filesystem::remove(draft);
  }

  TEST_CASE("generate: inference and questions on a small header") {
    const std::string h = write_temp("api.h", R"(
#include <stddef.h>
#define API_VERSION 3
#define API_NAME "api"
#define API_NEG (-2)
#define API_MACRO(x) ((x) + 1)
typedef struct api_ctx api_ctx;          /* opaque */
typedef struct { int x, y; } api_point;
typedef int (*api_cmp)(const void *a, const void *b);
api_ctx *api_open(const char *path, int flags);
int api_sum(const int *values, size_t count);
int api_fill(unsigned char *buf, size_t len);
void api_move(api_point *p);
double api_norm(const api_point *p);
_Bool api_ok(api_ctx *ctx);
const char *api_name(int code);
void api_sort(void *base, size_t n, api_cmp cmp);
int api_printf(const char *fmt, ...);
static inline int api_helper(int x) { return x; }
)");
    const std::string draft = temp_path("api-draft.json");
    Run g = run("generate " + h + " --library api --string-default utf8 --match '^api_|^API_' -o " + draft);
    INFO(g.err);
    REQUIRE(g.status == 0);
    using J = nlohmann::ordered_json;
    J j = J::parse(test::read_text(draft));
    INFO(j.dump(1));
    const J& fn = j["functions"];
    CHECK(j["defaults"] == J::parse(R"({"string": "utf8"})"));  // given, so no question
    CHECK(fn["api_open"]["returns"] == "pointer");                // opaque struct
    CHECK(fn["api_open"]["params"][0]["type"] == "string");
    CHECK(fn["api_open"]["params"][1]["type"] == "int");
    CHECK(fn["api_sum"]["params"][0]["type"] == J::parse(R"({"array": "int", "count": {"param": "count"}})"));
    CHECK_FALSE(fn["api_sum"]["params"][0].contains("$question"));
    CHECK(fn["api_fill"]["params"][0].contains("$question"));     // out or inout?
    CHECK(fn["api_move"]["params"][0].contains("$question"));
    CHECK(fn["api_norm"]["params"][0]["type"] == J::parse(R"({"ptr": "api_point"})"));
    CHECK(fn["api_ok"]["returns"] == "cbool");
    CHECK(fn["api_name"]["returns"].contains("$question"));       // who frees it?
    CHECK(fn["api_sort"]["params"][2]["type"] == J::parse(R"({"callback": "api_cmp", "scope": "call"})"));
    CHECK(fn["api_sort"]["params"][2].contains("$question"));
    CHECK(fn["api_printf"]["variadic_from"] == 1);
    CHECK_FALSE(fn.contains("api_helper"));
    CHECK(j["callbacks"]["api_cmp"]["returns"] == "int");
    CHECK(j["types"]["api_point"]["struct"][1]["name"] == "y");
    CHECK(j["constants"]["API_VERSION"] == 3);
    CHECK(j["constants"]["API_NAME"] == "api");
    CHECK(j["constants"]["API_NEG"] == -2);
    CHECK_FALSE(j["constants"].contains("API_MACRO"));
    CHECK(g.err.find("inferred: /functions/api_open/params/0: const char * is an in string") != std::string::npos);
    // The draft is not loadable: check lists the questions only.
    Run c = run("check " + draft);
    CHECK(c.status == 1);
    CHECK(c.err.find(draft + ": /functions/api_fill/params/0: question: ") != std::string::npos);
    std::filesystem::remove(h);
    std::filesystem::remove(draft);
  }

  TEST_CASE("generate: bad input") {
    Run r = run("generate /nonexistent.h --library x");
    CHECK(r.status == 1);
    CHECK(r.err.find("/nonexistent.h: no such header") != std::string::npos);
    CHECK(run("generate /usr/include/zlib.h").status == 2);
    const std::string h = write_temp("broken.h", "int broken(;\n");
    Run b = run("generate " + h + " --library x");
    CHECK(b.status == 1);
    CHECK(b.err.find("error") != std::string::npos);
    std::filesystem::remove(h);
  }
#endif
}
