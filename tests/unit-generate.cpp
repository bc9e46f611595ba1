// marshal tests: `marshal generate` reading annotations (issue 19). Each fixture
// header (tests/fixtures/generate_{sal,gi,doxygen}.h) is drafted; every annotation
// kind must yield its typemap entry, the records must be the compiler's, and
// `marshal check` must list exactly the questions annotations could not answer.
#include <doctest/doctest.h>

#include "typemap/context.hpp"
#include "cli_run.hpp"
#include "support.hpp"

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

// The fixtures as the compiler sees them (SAL means nothing to gcc).
#define _In_reads_(n)
#define _In_reads_bytes_(n)
#define _Out_writes_(n)
#define _Out_writes_bytes_(n)
#define _Out_writes_to_(n, m)
#define _Out_writes_z_(n)
#define _Out_
#define _Inout_
#define _Inout_updates_(n)
#define _In_z_
#define _Outptr_
#define _In_opt_
#define _Out_opt_
#define _In_
#define _Ret_maybenull_
#define _Ret_z_
extern "C" {
#include "fixtures/generate_doxygen.h"
#include "fixtures/generate_gi.h"
#include "fixtures/generate_sal.h"
}

#ifndef MARSHAL_EXE
#error "MARSHAL_EXE must be defined by the build"
#endif

using namespace marshal;
using namespace marshal::engine;
using J = nlohmann::ordered_json;

namespace {

using test::Run;
using test::run;
using test::temp_path;

using test::without_questions;

struct Draft {
  J json;
  std::string err;       // generate's stderr: what was inferred, and why
  std::string path;
};

Draft generate(const std::string& fixture, const std::string& extra = "--string-default utf8") {
  Draft d;
  d.path = temp_path(fixture + ".json");
  Run g = run("generate " + test::source_path("tests/fixtures/" + fixture) + " --library fx " + extra + " -o " + d.path);
  INFO(g.err);
  REQUIRE(g.status == 0);
  d.err = g.err;
  d.json = J::parse(test::read_text(d.path));
  return d;
}

// The parameter (or "returns") entry at /functions/F/params/I, without its question.
J entry(const Draft& d, const std::string& fn, int param) {
  const J& f = d.json.at("functions").at(fn);
  return without_questions(param < 0 ? f.at("returns") : f.at("params").at(static_cast<std::size_t>(param)));
}

// `marshal check` on the draft: exactly these pointers, each a question, and nothing else.
void check_questions(const Draft& d, const std::map<std::string, std::vector<std::string>>& expected) {
  Run c = run("check " + d.path);
  CHECK(c.status == (expected.empty() ? 0 : 1));
  std::set<std::string> got;
  std::istringstream in(c.err);
  for (std::string line; std::getline(in, line);) {
    CAPTURE(line);
    REQUIRE(line.rfind(d.path + ": /", 0) == 0);
    const std::string rest = line.substr(d.path.size() + 2);
    const std::size_t q = rest.find(": question: ");
    REQUIRE(q != std::string::npos);
    const std::string pointer = rest.substr(0, q);
    got.insert(pointer);
    auto it = expected.find(pointer);
    REQUIRE(it != expected.end());
    for (const std::string& word : it->second) CHECK(rest.find(word) != std::string::npos);  // names both sides
  }
  std::set<std::string> want;
  for (const auto& [p, _] : expected) want.insert(p);
  CHECK(got == want);
  // Every drafted entry loads once its question is answered as drafted.
  Context ctx;
  LoadResult r = ctx.load_text(without_questions(d.json).dump(), "answered.json");
  for (const auto& e : r.errors) INFO(e.text());
  CHECK(r.ok());
}

// A draft record's layout, loaded alone, against the compiler's.
struct Facts {
  std::size_t size, align;
  std::vector<std::pair<std::string, std::size_t>> offsets;
};
void check_record(const Draft& d, const std::string& name, const Facts& f) {
  CAPTURE(name);
  J types_only = {{"typemap", 1}, {"types", without_questions(d.json.at("types"))}};
  Context ctx;
  LoadResult r = ctx.load_text(types_only.dump(), "types.json");
  for (const auto& e : r.errors) INFO(e.text());
  REQUIRE(r.ok());
  const TypeDesc& t = ctx.types().get(r.typemap->find_type(name));
  CHECK(t.size == f.size);
  CHECK(t.align == f.align);
  const auto& fields = t.as<RecordInfo>().fields;
  REQUIRE(fields.size() == f.offsets.size());
  for (std::size_t i = 0; i < fields.size(); ++i) {
    CHECK(fields[i].name == f.offsets[i].first);
    CHECK(fields[i].offset == f.offsets[i].second);
  }
}

bool said(const Draft& d, const std::string& text) { return d.err.find(text) != std::string::npos; }

}  // namespace

#ifdef MARSHAL_HAVE_LIBCLANG
TEST_SUITE("generate") {
  TEST_CASE("generate: SAL annotations") {
    const Draft d = generate("generate_sal.h");
    INFO(d.json.dump(1));
    // C's const on the pointee: "const": true on in pointers, arrays and strings.
    CHECK(entry(d, "sal_sum", 0) ==
          J::parse(R"({"name": "values", "type": {"array": "int32", "count": {"param": "count"}}, "const": true})"));
    CHECK(entry(d, "sal_hash", 0) ==
          J::parse(R"({"name": "data", "type": {"array": "uint8", "count": {"param": "len"}}, "const": true})"));
    CHECK(entry(d, "sal_fill", 0) ==
          J::parse(R"({"name": "out", "type": {"array": "int32", "count": {"param": "cap"}}, "dir": "out"})"));
    CHECK(entry(d, "sal_read", 0) ==
          J::parse(R"({"name": "buf", "type": {"array": "uint8", "count": {"param": "size"}}, "dir": "out"})"));
    CHECK(entry(d, "sal_copy", 0) == J::parse(R"({"name": "dst", "type": {"array": "uint8", "count": {"param": "cap"},
                                                  "length": {"param": "written"}}, "dir": "out"})"));
    CHECK(entry(d, "sal_copy", 2) == J::parse(R"({"name": "written", "type": {"ptr": "size_t"}, "dir": "out"})"));
    CHECK(entry(d, "sal_get", 0) == J::parse(R"({"name": "p", "type": {"ptr": "sal_point"}, "dir": "out"})"));
    CHECK(entry(d, "sal_move", 0) == J::parse(R"({"name": "p", "type": {"ptr": "sal_point"}, "dir": "inout"})"));
    CHECK(entry(d, "sal_scale", 0) ==
          J::parse(R"({"name": "v", "type": {"array": "double", "count": {"param": "n"}}, "dir": "inout"})"));
    CHECK(entry(d, "sal_open", 0) == J::parse(R"({"name": "path", "type": "string", "const": true})"));
    CHECK(entry(d, "sal_open", 1) == J::parse(R"({"name": "ctx", "type": {"ptr": "pointer"}, "dir": "out"})"));
    CHECK(entry(d, "sal_find", 0) == J::parse(R"({"name": "hint", "type": {"ptr": "sal_point"}, "nullable": true, "const": true})"));
    CHECK(entry(d, "sal_find", 1) == J::parse(R"({"name": "index", "type": {"ptr": "int"}, "dir": "out"})"));
    CHECK(entry(d, "sal_length", 0) == J::parse(R"({"name": "s", "type": "string"})"));  // char *: no const promise
    CHECK(entry(d, "sal_name", 0) ==
          J::parse(R"({"name": "buf", "type": {"string": "utf8", "capacity": {"param": "cap"}}, "dir": "out"})"));
    CHECK(entry(d, "sal_key", 0) == J::parse(R"({"name": "key", "type": {"array": "uint8", "count": 16}, "const": true})"));
    CHECK(entry(d, "sal_error", -1) == J::parse(R"({"type": "string", "nullable": true, "free_with": "none"})"));
    // The reasons name the annotation.
    CHECK(said(d, "inferred: /functions/sal_copy/params/0: SAL _Out_writes_to_(cap,*written): an out array of 'cap', "
                  "'*written' written"));
    CHECK(said(d, "inferred: /functions/sal_open/params/1: SAL _Outptr_: the callee writes one pointer"));
    CHECK(said(d, "inferred: /functions/sal_key/params/0: SAL _In_reads_(16): an in array of 16"));
    // Conflicts and what SAL cannot say.
    check_questions(d, {{"/functions/sal_error/returns", {"who frees it"}},
                        {"/functions/sal_const_out/params/0", {"SAL _Out_", "const int32_t *"}},
                        {"/functions/sal_wide_bytes/params/0", {"SAL _In_reads_bytes_(n)", "4 bytes"}},
                        {"/functions/sal_expr/params/0", {"'n * 2' is neither a number nor a parameter"}},
                        {"/functions/sal_disagree/params/0", {"SAL _In_ says in", "doxygen @param[out] says out"}},
                        {"/functions/sal_plain/params/0", {"'p' is int32_t * (not const)"}}});
    check_record(d, "sal_point", {sizeof(sal_point), alignof(sal_point),
                                  {{"x", offsetof(sal_point, x)}, {"y", offsetof(sal_point, y)}, {"tag", offsetof(sal_point, tag)}}});
    std::filesystem::remove(d.path);
  }

  TEST_CASE("generate: SAL text without --string-default asks for its encoding") {
    const Draft d = generate("generate_sal.h", "--match '^sal_name$'");
    CHECK(entry(d, "sal_name", 0) ==
          J::parse(R"({"name": "buf", "type": {"string": "utf8", "capacity": {"param": "cap"}}, "dir": "out"})"));
    check_questions(d, {{"/defaults", {"which encoding"}}, {"/functions/sal_name/params/0", {"_Out_writes_z_(cap)", "encoding"}}});
    std::filesystem::remove(d.path);
  }

  TEST_CASE("generate: GObject-Introspection annotations") {
    const Draft d = generate("generate_gi.h");
    INFO(d.json.dump(1));
    CHECK(entry(d, "gi_get_size", 1) == J::parse(R"({"name": "width", "type": {"ptr": "int"}, "dir": "out"})"));
    CHECK(entry(d, "gi_get_size", 2) == J::parse(R"({"name": "height", "type": {"ptr": "int"}, "dir": "out"})"));
    CHECK(said(d, "/functions/gi_get_size/params/2: GI (out) (optional): may be NULL, but the engine always passes storage"));
    CHECK(entry(d, "gi_get_rect", 1) == J::parse(R"({"name": "rect", "type": {"ptr": "gi_rect"}, "dir": "out"})"));
    CHECK(entry(d, "gi_bump", 0) == J::parse(R"({"name": "value", "type": {"ptr": "int"}, "dir": "inout"})"));
    CHECK(entry(d, "gi_sum", 0) ==
          J::parse(R"({"name": "values", "type": {"array": "int", "count": {"param": "n_values"}}, "const": true})"));  // not adjacent
    CHECK(entry(d, "gi_trace", 0) == J::parse(R"({"name": "m", "type": {"array": "double", "count": 16}, "const": true})"));
    CHECK(entry(d, "gi_join", 0) ==
          J::parse(R"({"name": "strv", "type": {"array": "string", "count": {"sentinel": null}}, "const": true})"));
    CHECK(entry(d, "gi_join", -1) == J::parse(R"({"type": "string", "free_with": "free"})"));
    CHECK(entry(d, "gi_get_name", -1) == J::parse(R"({"type": "string", "nullable": true, "free_with": "none"})"));
    CHECK(entry(d, "gi_set_label", 1) == J::parse(R"({"name": "label", "type": "string", "nullable": true, "const": true})"));
    CHECK(entry(d, "gi_foreach", 1) == J::parse(R"({"name": "func", "type": {"callback": "gi_func", "scope": "call"}})"));
    CHECK(entry(d, "gi_watch", 1) ==
          J::parse(R"({"name": "func", "type": {"callback": "gi_func", "scope": "registered"}})"));
    CHECK(entry(d, "gi_later", 0) ==
          J::parse(R"({"name": "callback", "type": {"callback": "gi_func", "scope": "registered"}})"));
    CHECK(entry(d, "gi_dup_name", 1) ==
          J::parse(R"({"name": "name", "type": {"ptr": "string"}, "dir": "out", "free_with": "free"})"));
    CHECK(entry(d, "gi_values", -1) ==
          J::parse(R"({"type": {"array": "int", "count": {"param": "n"}}, "free_with": "none"})"));
    CHECK(said(d, "inferred: /functions/gi_later/params/0: GI (scope async): kept after the call returns"));
    CHECK(said(d, "annotation not used: /functions/gi_odd: GI (frobnicate) on @x: not understood"));
    check_questions(d, {{"/functions/gi_watch/params/3", {"'destroy' is a function pointer"}},
                        {"/functions/gi_const_out/params/0", {"GI (out)", "const int *"}},
                        {"/functions/gi_new_rect/returns", {"transfer full", "who frees it"}}});
    check_record(d, "gi_rect", {sizeof(gi_rect), alignof(gi_rect),
                                {{"x", offsetof(gi_rect, x)}, {"y", offsetof(gi_rect, y)}, {"w", offsetof(gi_rect, w)},
                                 {"h", offsetof(gi_rect, h)}, {"name", offsetof(gi_rect, name)}}});
    std::filesystem::remove(d.path);
  }

  TEST_CASE("generate: doxygen parameter directions") {
    const Draft d = generate("generate_doxygen.h");
    INFO(d.json.dump(1));
    // [in] on int *: in, but C makes no const promise, so no "const".
    CHECK(entry(d, "dx_sum", 0) == J::parse(R"({"name": "values", "type": {"array": "int", "count": {"param": "count"}}})"));
    CHECK(entry(d, "dx_stats_get", 0) == J::parse(R"({"name": "stats", "type": {"ptr": "dx_stats"}, "dir": "out"})"));
    CHECK(entry(d, "dx_bump", 0) == J::parse(R"({"name": "counter", "type": {"ptr": "long"}, "dir": "inout"})"));
    CHECK(entry(d, "dx_read", 0) ==
          J::parse(R"({"name": "buf", "type": {"array": "uint8", "count": {"param": "len"}}, "dir": "out"})"));
    CHECK(entry(d, "dx_greet", 0) == J::parse(R"({"name": "name", "type": "string"})"));
    CHECK(entry(d, "dx_compare", 0) == J::parse(R"({"name": "a", "type": {"ptr": "dx_stats"}})"));
    CHECK(entry(d, "dx_compare", 1) == J::parse(R"({"name": "b", "type": {"ptr": "dx_stats"}})"));
    CHECK(entry(d, "dx_query", 0) == J::parse(R"({"name": "q", "type": {"ptr": "int"}, "dir": "out"})"));
    CHECK(said(d, "inferred: /functions/dx_bump/params/0: doxygen \\param[in,out]: one long, inout"));
    CHECK(said(d, "annotation not used: /functions/dx_query: doxygen @param[out] missing: no parameter of that name"));
    check_questions(d, {{"/functions/dx_const_out/params/0", {"doxygen @param[out]", "const char *"}},
                        {"/functions/dx_plain/params/0", {"'p' is int * (not const)"}}});
    check_record(d, "dx_stats", {sizeof(dx_stats), alignof(dx_stats),
                                 {{"count", offsetof(dx_stats, count)}, {"total", offsetof(dx_stats, total)},
                                  {"flags", offsetof(dx_stats, flags)}}});
    std::filesystem::remove(d.path);
  }

  TEST_CASE("generate: annotations that contradict C or themselves are questions naming both") {
    const std::string h = temp_path("odd.h");
    std::ofstream(h) << R"(#include <stddef.h>
_Ret_z_ int odd_ret(void);
int odd_outptr(_Outptr_ int *p);
int odd_count(_Out_writes_(n) int *p, double n);
int odd_deref(_Out_writes_(*x) int *p, int x);
void odd_wide(_Out_writes_z_(cap) wchar_t *w, size_t cap);
/** @param[out] x by value in C */
void odd_value(int x);
/**
 * odd_gi:
 * @f: (in) (out): both
 * @e: (scope never): not a scope
 */
void odd_gi(int *f, int *e);
)";
    const std::string out = temp_path("odd.json");
    Run g = run("generate " + h + " --library odd --string-default utf8 -o " + out);
    INFO(g.err);
    REQUIRE(g.status == 0);
    Draft d{J::parse(test::read_text(out)), g.err, out};
    CHECK(entry(d, "odd_wide", 0) ==
          J::parse(R"({"name": "w", "type": {"string": "wchar", "capacity": {"param": "cap"}}, "dir": "out"})"));
    CHECK(said(d, "annotation not used: /functions/odd_gi: GI (scope never) on @e: not understood"));
    Run c = run("check " + out);
    CHECK(c.status == 1);
    for (const char* q : {"/functions/odd_ret/returns: question: SAL _Ret_z_ on odd_ret's return describes a pointer, but C "
                          "declares it int",
                          "/functions/odd_outptr/params/0: question: SAL _Outptr_ on 'p' says the callee writes a pointer, "
                          "but C declares 'p' as int *",
                          "/functions/odd_count/params/0: question: SAL _Out_writes_(n) on 'p': the element count of 'p': "
                          "parameter 'n' is double, not an integer",
                          "/functions/odd_deref/params/0: question: SAL _Out_writes_(*x) on 'p': the element count of 'p': "
                          "'*x' reads through parameter 'x', which is int, not a pointer to an integer",
                          "/functions/odd_value/params/0: question: doxygen @param[out] on 'x' describes a pointer, but C "
                          "passes 'x' by value as int",
                          "/functions/odd_gi/params/0: question: 'f': the annotations disagree: GI (in) (out) says (in) and "
                          "(out) in one comment"}) {
      CAPTURE(q);
      CHECK(c.err.find(out + ": " + q) != std::string::npos);
    }
    std::filesystem::remove(h);
    std::filesystem::remove(out);
  }

  TEST_CASE("generate: zlib declared with SAL drafts zlib.json's entries, no question left, and calls libz") {
    const Draft d = generate("generate_zlib_sal.h", "--load libz.so.1");
    const J shipped = J::parse(test::read_text(test::source_path("typemaps/zlib.json")));
    for (const char* fn : {"crc32", "compress2", "uncompress"}) {
      CAPTURE(fn);
      CHECK(d.json["functions"][fn] == shipped["functions"][fn]);
    }
    check_questions(d, {});  // loads as it is
    const std::string hello = R"({"base64": "aGVsbG8gaGVsbG8gaGVsbG8gaGVsbG8="})";  // "hello hello hello hello"
    Run c = run("call " + d.path + " compress2 64 '" + hello + "' 9");  // sourceLen: computed
    INFO(c.err);
    REQUIRE(c.status == 0);
    const J packed = J::parse(c.out);
    CHECK(packed["return"] == 0);
    CHECK(packed["out"]["destLen"].get<int>() < 23);
    Run u = run("call " + d.path + " uncompress 64 '" + packed["out"]["dest"].dump() + "'");
    INFO(u.err);
    REQUIRE(u.status == 0);
    const J plain = J::parse(u.out);
    CHECK(plain["return"] == 0);
    CHECK(plain["out"]["dest"] == J::parse(hello));
    CHECK(plain["out"]["destLen"] == 23);
    std::filesystem::remove(d.path);
  }

  TEST_CASE("generate: C's const on a pointee becomes \"const\": true on in pointers, arrays and strings only") {
    const std::string h = temp_path("cst.h");
    std::ofstream(h) << R"(#include <stddef.h>
#include <stdint.h>
typedef struct cst_point { int x, y; } cst_point;
typedef struct cst_ctx cst_ctx;
typedef unsigned char cst_uuid[16];
typedef int (*cst_cmp)(const cst_point *a, cst_point *b);
size_t strlen(const char *s);
int cst_sum(const int32_t *values, size_t count);
int cst_hash(const void *data, size_t len);
int cst_norm(const cst_point *p);
int cst_unparse(const cst_uuid uu);
int cst_text(const char *text, size_t len);
int cst_strv(const char *const *argv, size_t count);
void cst_fill(char *buf, size_t size);
void cst_get(cst_point *p);
int cst_read(int32_t *out, size_t count);
void cst_close(const cst_ctx *ctx);
void cst_opaque(const void *handle);
void cst_sort(cst_cmp cmp);
int cst_value(const int x);
int cst_mutable(int * const p);
int cst_sal(_In_reads_(n) int32_t *v, size_t n, _In_z_ const char *name, _Out_ int32_t *total);
)";
    const std::string out = temp_path("cst.json");
    Run g = run("generate " + h + " --library c --load libc.so.6 --string-default utf8 -o " + out);
    INFO(g.err);
    REQUIRE(g.status == 0);
    Draft d{J::parse(test::read_text(out)), g.err, out};
    INFO(d.json.dump(1));
    // In, and C says const: the callee promises not to write.
    CHECK(entry(d, "strlen", 0) == J::parse(R"({"name": "s", "type": "string", "const": true})"));
    CHECK(entry(d, "cst_sum", 0) ==
          J::parse(R"({"name": "values", "type": {"array": "int32", "count": {"param": "count"}}, "const": true})"));
    CHECK(entry(d, "cst_hash", 0) ==
          J::parse(R"({"name": "data", "type": {"array": "uint8", "count": {"param": "len"}}, "const": true})"));
    CHECK(entry(d, "cst_norm", 0) == J::parse(R"({"name": "p", "type": {"ptr": "cst_point"}, "const": true})"));
    CHECK(entry(d, "cst_unparse", 0) == J::parse(R"({"name": "uu", "type": {"array": "uchar", "count": 16}, "const": true})"));
    CHECK(entry(d, "cst_text", 0) ==  // bytes or text is asked; const either way
          J::parse(R"({"name": "text", "type": {"array": "uint8", "count": {"param": "len"}}, "const": true})"));
    CHECK(d.json["functions"]["cst_text"]["params"][0].contains("$question"));
    CHECK(entry(d, "cst_strv", 0) ==
          J::parse(R"({"name": "argv", "type": {"array": "pointer", "count": {"param": "count"}}, "const": true})"));
    CHECK(entry(d, "cst_sal", 2) == J::parse(R"({"name": "name", "type": "string", "const": true})"));
    // A callback's const parameter documents the header, as libc.json's CompareItems does.
    CHECK(without_questions(d.json["callbacks"]["cst_cmp"]["params"][0]) ==
          J::parse(R"({"name": "arg0", "type": {"ptr": "cst_point"}, "const": true})"));
    // Not const in C, out, opaque, a callback or a value: no "const".
    for (auto [fn, i] : std::initializer_list<std::pair<const char*, int>>{
             {"cst_fill", 0}, {"cst_get", 0}, {"cst_read", 0}, {"cst_close", 0}, {"cst_opaque", 0}, {"cst_sort", 0},
             {"cst_value", 0}, {"cst_mutable", 0}, {"cst_sal", 0}, {"cst_sal", 3}}) {
      CAPTURE(fn);
      CAPTURE(i);
      CHECK_FALSE(entry(d, fn, i).contains("const"));
    }
    CHECK_FALSE(without_questions(d.json["callbacks"]["cst_cmp"]["params"][1]).contains("const"));
    CHECK(entry(d, "cst_fill", 0)["dir"] == "out");
    CHECK(entry(d, "cst_close", 0)["type"] == "pointer");
    CHECK(entry(d, "cst_opaque", 0)["type"] == "pointer");
    CHECK(entry(d, "cst_sal", 0)["type"].contains("array"));  // SAL says in; C does not promise const
    // Every entry loads as drafted, const included, and the const string reaches libc.
    Context ctx;
    LoadResult r = ctx.load_text(without_questions(d.json).dump(), "answered.json");
    std::string errors;
    for (const auto& e : r.errors) errors += e.text() + "\n";
    INFO(errors);
    REQUIRE(r.ok());
    CHECK(r.typemap->functions.at("strlen").params[0].is_const);
    CHECK(r.typemap->functions.at("cst_norm").params[0].is_const);
    CHECK_FALSE(r.typemap->functions.at("cst_get").params[0].is_const);
    J only_strlen = d.json;
    only_strlen["functions"] = J{{"strlen", d.json["functions"]["strlen"]}};
    only_strlen.erase("callbacks");
    only_strlen.erase("types");
    const std::string sl = temp_path("cst_strlen.json");
    std::ofstream(sl) << only_strlen.dump();
    Run c = run("call " + sl + " strlen '\"h\u00e9llo\"'");
    INFO(c.err);
    REQUIRE(c.status == 0);
    CHECK(J::parse(c.out)["return"] == 6);
    std::filesystem::remove(h);
    std::filesystem::remove(out);
    std::filesystem::remove(sl);
  }

  TEST_CASE("generate: a header that defines SAL macros itself keeps its own definitions") {
    const std::string h = temp_path("own_sal.h");
    std::ofstream(h) << "#define _In_\n#define _Out_writes_(n)\nint own(_In_ const int *p, _Out_writes_(n) int *q, int n);\n";
    const std::string out = temp_path("own_sal.json");
    Run g = run("generate " + h + " --library own -o " + out);
    INFO(g.err);
    REQUIRE(g.status == 0);  // a macro redefinition is a warning, not an error
    const J j = J::parse(test::read_text(out));
    // The header's empty macros won: no annotation, so the heuristics and their question.
    CHECK(j["functions"]["own"]["params"][0]["type"] == J::parse(R"({"ptr": "int"})"));
    CHECK(j["functions"]["own"]["params"][1].contains("$question"));
    std::filesystem::remove(h);
    std::filesystem::remove(out);
  }
}
#endif
