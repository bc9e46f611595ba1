// marshal tests: the `marshal` command.
// Runs the built binary: check on good and bad typemaps (exit codes, one error
// per bad file, FILE: /pointer: prefixes), layout output against the compiler,
// and --help on every command.
#include <doctest/doctest.h>

#include "fixtures/layout_table.h"
#include "support.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#ifndef MARSHAL_EXE
#error "MARSHAL_EXE must be defined by the build"
#endif

namespace {

struct Run {
  int status;
  std::string out;
};

// Runs marshal with arguments (already shell-quoted), stdout and stderr captured
// separately through a temporary file for stderr.
Run marshal_run(const std::string& args, std::string* err = nullptr) {
  const std::string err_file = std::filesystem::temp_directory_path() / ("marshal-cli-" + std::to_string(::getpid()) + ".err");
  std::string cmd = std::string(MARSHAL_EXE) + " " + args + " 2>" + err_file;
  Run r{-1, {}};
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  if (err) *err = marshal::test::read_text(err_file);
  std::filesystem::remove(err_file);
  return r;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

}  // namespace

TEST_SUITE("cli") {
  TEST_CASE("check: valid typemaps exit 0 with a summary line each") {
    std::string err;
    Run r = marshal_run("check typemaps/libc.json typemaps/libm.json typemaps/zlib.json tests/fixtures/layout.json", &err);
    CHECK(r.status == 0);
    CHECK(err.empty());
    auto ls = lines(r.out);
    REQUIRE(ls.size() == 4);
    CHECK(ls[0].rfind("typemaps/libc.json: ok: ", 0) == 0);
    CHECK(ls[3].find("40 types") != std::string::npos);
  }

  TEST_CASE("check: typemaps/*.json passes, skipping the schema beside them") {
    std::string err;
    Run r = marshal_run("check typemaps/*.json", &err);
    CHECK(r.status == 0);
    CHECK(err.empty());
    CHECK(r.out.find("typemaps/typemap.schema.json: skipped: a JSON Schema, not a typemap") != std::string::npos);
    CHECK(r.out.find("typemaps/zlib.json: ok") != std::string::npos);
  }

  TEST_CASE("check: every bad typemap gives one error line starting with FILE: /pointer") {
    std::vector<std::string> files;
    for (const auto& e : std::filesystem::directory_iterator("tests/typemaps/bad"))
      if (e.path().extension() == ".json") files.push_back("tests/typemaps/bad/" + e.path().filename().string());
    std::sort(files.begin(), files.end());
    std::string args = "check";
    for (const auto& f : files) args += " " + f;
    std::string err;
    Run r = marshal_run(args, &err);
    CHECK(r.status == 1);
    CHECK(r.out.empty());
    auto ls = lines(err);
    REQUIRE(ls.size() == files.size());
    for (std::size_t i = 0; i < files.size(); ++i) {
      CAPTURE(ls[i]);
      CHECK(ls[i].rfind(files[i] + ": /", 0) == 0);
    }
  }

  TEST_CASE("check: a mix of good and bad files fails and still summarizes the good ones") {
    std::string err;
    Run r = marshal_run("check typemaps/libm.json tests/typemaps/bad/bare_bool.json", &err);
    CHECK(r.status == 1);
    CHECK(r.out.rfind("typemaps/libm.json: ok", 0) == 0);
    CHECK(err.find("tests/typemaps/bad/bare_bool.json: /types/S/struct/0/type: 'bool' is ambiguous") == 0);
  }

  TEST_CASE("layout of a packed nested struct equals the compiler's offsets") {
    Run r = marshal_run("layout tests/fixtures/layout.json OuterPacked");
    REQUIRE(r.status == 0);
    std::size_t count = 0;
    const fx_record* recs = fx_layouts(&count);
    const fx_record* outer = nullptr;
    for (std::size_t i = 0; i < count; ++i)
      if (std::string(recs[i].name) == "OuterPacked") outer = &recs[i];
    REQUIRE(outer != nullptr);
    CHECK(r.out.find("size " + std::to_string(outer->size) + ", align " + std::to_string(outer->align)) != std::string::npos);
    for (std::size_t k = 0; k < outer->nfields; ++k) {
      const fx_field& f = outer->fields[k];
      CAPTURE(f.name);
      bool found = false;
      for (const auto& l : lines(r.out)) {
        std::istringstream in(l);
        std::size_t off, size;
        std::string name;
        if (in >> off >> size >> name && name == f.name) {
          found = true;
          CHECK(off == f.offset);
          CHECK(size == f.size);
        }
      }
      CHECK(found);
    }
  }

  TEST_CASE("layout shows bit ranges and padding") {
    Run r = marshal_run("layout tests/fixtures/layout.json Bits2");
    REQUIRE(r.status == 0);
    CHECK(r.out.find("blittable no") != std::string::npos);
    CHECK(r.out.find("0..3") != std::string::npos);  // a:4 in byte 1
    Run m = marshal_run("layout tests/fixtures/layout.json Mixed");
    CHECK(m.out.find("padding: 7 bytes at offset 1") != std::string::npos);
    CHECK(m.out.find("padding: 6 bytes at offset 18 (tail)") != std::string::npos);
  }

  TEST_CASE("layout names the available types when one is unknown") {
    std::string err;
    Run r = marshal_run("layout tests/fixtures/layout.json Nope", &err);
    CHECK(r.status == 1);
    CHECK(err.find("no type 'Nope'") != std::string::npos);
    CHECK(err.find("OuterPacked") != std::string::npos);
  }

  TEST_CASE("call: the acceptance examples, exactly one JSON object on stdout") {
    CHECK(marshal_run("call typemaps/zlib.json crc32 0 '{\"base64\":\"aGVsbG8=\"}'").out == "{\"return\":907060870,\"out\":{}}\n");
    CHECK(marshal_run("call typemaps/libm.json frexp 8.0").out == "{\"return\":0.5,\"out\":{\"exp\":4}}\n");
    CHECK(marshal_run("call typemaps/libc.json div 17 5").out == "{\"return\":{\"quot\":3,\"rem\":2},\"out\":{}}\n");
    CHECK(marshal_run("call typemaps/libc.json toupper 97").out == "{\"return\":65,\"out\":{}}\n");
    Run v = marshal_run("call typemaps/libc.json free null");
    CHECK(v.out == "{\"return\":null,\"out\":{}}\n");  // void returns print null
    Run e = marshal_run("call typemaps/libc.json strtol '\"12\"' 10");
    CHECK(e.out.find("\"errno\":0}") != std::string::npos);
    Run s = marshal_run("call typemaps/libc.json snprintf 16 '\"%d-%s\"' '{\"type\":\"int\",\"value\":5}' '{\"type\":\"string\",\"value\":\"x\"}'");
    CHECK(s.out == "{\"return\":3,\"out\":{\"str\":\"5-x\"}}\n");
  }

  TEST_CASE("call: a compress2 then uncompress round trip returns the input") {
    Run c = marshal_run("call typemaps/zlib.json compress2 128 '{\"base64\":\"aGVsbG8gaGVsbG8gaGVsbG8gaGVsbG8=\"}' 9");
    REQUIRE(c.status == 0);
    auto j = nlohmann::json::parse(c.out);
    CHECK(j["return"] == 0);
    const std::string packed = j["out"]["dest"]["base64"];
    Run u = marshal_run("call typemaps/zlib.json uncompress 128 '{\"base64\":\"" + packed + "\"}'");  // sourceLen: computed
    REQUIRE(u.status == 0);
    auto k = nlohmann::json::parse(u.out);
    CHECK(k["out"]["dest"]["base64"] == "aGVsbG8gaGVsbG8gaGVsbG8gaGVsbG8=");
    CHECK(k["out"]["destLen"] == 23);
  }

  TEST_CASE("call: every error is one line on stderr naming the place, exit 1") {
    struct Case { const char* args; const char* expected; };
    const Case cases[] = {
        {"call typemaps/libc.json div 17", "typemaps/libc.json: div: expects 2 arguments (numer, denom), got 1"},
        {"call typemaps/libc.json div 1 2 3", "expects 2 arguments"},
        {"call typemaps/zlib.json compressBound -1", "parameter 0 'sourceLen' (ulong): -1 is out of range for ulong"},
        {"call typemaps/libc.json toupper '\"a\"'", "parameter 0 'c' (int): expected an integer for int, got a string"},
        {"call typemaps/libc.json strlen null", "parameter 0 's' (string<utf8>): null is not allowed here (not nullable)"},
        {"call typemaps/libc.json strlen hello", "parameter 0 's': argument is not JSON: hello"},
        // crc32's len is computed from buf: a host may give it, but cannot lie about it.
        {"call typemaps/zlib.json crc32 0 '{\"base64\":\"aGVsbG8=\"}' 6",
         "typemaps/zlib.json: crc32: parameter 2 'len' (uint): is computed by the engine (count_of 'buf' = 5); got 6"},
        {"call typemaps/zlib.json crc32 0 '{\"base64\":\"aGVsbG8=\"}' 5 5", "typemaps/zlib.json: crc32: expects 2 arguments (crc, buf), got 4"},
        {"call typemaps/libc.json strlen '\"a\\u0000b\"'", "NUL character at byte 1"},
        {"call typemaps/libc.json nosuch", "no function 'nosuch'"},
        {"call tests/typemaps/bad/bare_bool.json f", "tests/typemaps/bad/bare_bool.json: /types/S/struct/0/type:"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.args);
      std::string err;
      Run r = marshal_run(c.args, &err);
      CHECK(r.status == 1);
      CHECK(r.out.empty());
      CHECK(std::count(err.begin(), err.end(), '\n') == 1);
      CHECK(err.find(c.expected) != std::string::npos);
    }
  }

  TEST_CASE("check --resolve reports missing symbols") {
    std::string err;
    CHECK(marshal_run("check --resolve typemaps/libc.json typemaps/libm.json typemaps/zlib.json", &err).status == 0);
    CHECK(err.empty());
    const std::string path = std::filesystem::temp_directory_path() / "marshal-resolve.json";
    {
      std::ofstream f(path);
      f << R"({"typemap": 1, "library": {"name": "libc", "load": {"linux": ["libc.so.6"]}},
               "functions": {"strlen": {"returns": "size_t", "params": [{"name": "s", "type": {"string": "utf8"}}]},
                             "nope_one": {"returns": "void"}, "nope_two": {"returns": "void"}}})";
    }
    Run r = marshal_run("check --resolve " + path, &err);
    CHECK(r.status == 1);
    CHECK(err.find("/functions/nope_one: symbol 'nope_one' not found in library 'libc'") != std::string::npos);
    CHECK(err.find("/functions/nope_two: symbol 'nope_two' not found") != std::string::npos);
    std::filesystem::remove(path);
  }

  TEST_CASE("--help on every command, and usage errors") {
    for (const char* cmd : {"--help", "check --help", "layout --help", "call --help"}) {
      CAPTURE(cmd);
      Run r = marshal_run(cmd);
      CHECK(r.status == 0);
      CHECK(r.out.find("usage: marshal") != std::string::npos);
    }
    CHECK(marshal_run("").status == 2);
    CHECK(marshal_run("frobnicate").status == 2);
    CHECK(marshal_run("check").status == 2);
    CHECK(marshal_run("layout typemaps/libc.json").status == 2);
  }

  TEST_CASE("call: hostile arguments of issue 15 are one error line naming the parameter, exit 1") {
    const std::string fx = "call tests/fixtures/pinvoke.json ";
    struct Case { std::string args; const char* expected; };
    const Case cases[] = {
        {fx + "fill_out_i32_array 4611686018427387905",
         "fill_out_i32_array: parameter 0 'out' (array<int32>): a buffer of 4611686018427387905 units of 4 bytes"},
        {fx + "sum_in_bytes '\"abc\"' 2000", "sum_in_bytes: parameter 0 's' (string<bytes>): the string has 3 bytes but its length (parameter 'n') is 2000"},
        {fx + "sum_in_bytes '\"abc\"' 10000000", "its length (parameter 'n') is 10000000"},
        {fx + "reverse_out_utf8 '\"abc\"' 2147483648",
         "reverse_out_utf8: parameter 1 'out' (string<utf8>): a buffer of 2147483648 bytes, counted by parameter 'cap', is larger than the limit of 268435456 bytes"},
        {fx + "reverse_out_utf8 '\"abc\"' 1099511627776", "a buffer of 1099511627776 bytes, counted by parameter 'cap'"},
        {fx + "sum_in_i32_array '" + std::string(20000, '[') + std::string(20000, ']') + "' 1",
         "parameter 0 'v' (array<int32>): JSON nesting is deeper than 256 levels"},
        {fx + "sum_in_i32_array '{\"a\": 1, \"a\": 2}' 1", "parameter 0 'v' (array<int32>): the key 'a' appears twice in one object"},
        {"call typemaps/zlib.json compressBound 18446744073709551616",
         "compressBound: parameter 0 'sourceLen' (ulong): the number 18446744073709551616 is out of range for ulong"},
        {fx + "echo_f32 3.5e38", "echo_f32: parameter 0 'v' (float32): the number 3.5e+38 is out of range for float32"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.args.substr(0, 120));
      std::string err;
      Run r = marshal_run(c.args, &err);
      CHECK(r.status == 1);
      CHECK(r.out.empty());
      CHECK(std::count(err.begin(), err.end(), '\n') == 1);
      CHECK(err.find(c.expected) != std::string::npos);
      CHECK(err.find("internal error") == std::string::npos);
    }
  }

  TEST_CASE("call: infinities and NaN print as {\"float\": ...} and are read back the same way") {
    const std::string fx = "call tests/fixtures/pinvoke.json ";
    CHECK(marshal_run(fx + "echo_f64 '{\"float\":\"inf\"}'").out == "{\"return\":{\"float\":\"inf\"},\"out\":{}}\n");
    CHECK(marshal_run(fx + "echo_f64 '{\"float\":\"-inf\"}'").out == "{\"return\":{\"float\":\"-inf\"},\"out\":{}}\n");
    CHECK(marshal_run(fx + "echo_f32 '{\"float\":\"nan\"}'").out == "{\"return\":{\"float\":\"nan\"},\"out\":{}}\n");
    CHECK(marshal_run(fx + "echo_f64 1e308").out == "{\"return\":1e+308,\"out\":{}}\n");
    // A float32 that rounds within range is fine; an integer exactly at the top of uint64 too.
    CHECK(marshal_run(fx + "echo_f32 3.4028235e38").out == "{\"return\":3.4028234663852886e+38,\"out\":{}}\n");
    CHECK(marshal_run(fx + "echo_u64 18446744073709551615").out == "{\"return\":18446744073709551615,\"out\":{}}\n");
    CHECK(marshal_run("call typemaps/libm.json pow 10 400").out == "{\"return\":{\"float\":\"inf\"},\"out\":{}}\n");
  }
}
