// marshal tests: malformed typemaps and their exact errors (golden files).
// Each tests/typemaps/bad/NAME.json has NAME.err holding the exact error text;
// each file has exactly one mistake, so exactly one error.
#include <set>
#include <doctest/doctest.h>

#include "typemap/context.hpp"
#include "support.hpp"

#include <algorithm>
#include <filesystem>

using namespace marshal;
using namespace marshal::engine;
namespace fs = std::filesystem;

TEST_SUITE("typemap-bad") {
  TEST_CASE("every malformed typemap gives exactly its golden error") {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(test::source_path("tests/typemaps/bad")))
      if (e.path().extension() == ".json") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    REQUIRE(files.size() >= 40);
    for (const fs::path& file : files) {
      const std::string rel = "tests/typemaps/bad/" + file.filename().string();
      CAPTURE(rel);
      fs::path golden = file;
      golden.replace_extension(".err");
      REQUIRE(fs::exists(golden));
      std::string expected = test::read_text(golden.string());
      while (!expected.empty() && expected.back() == '\n') expected.pop_back();
      Context ctx;
      LoadResult r = ctx.load_text(test::read_text(file.string()), rel);
      CHECK_FALSE(r.ok());
      REQUIRE(r.errors.size() == 1);
      CHECK(r.errors[0].text() == expected);
      // Every message starts with the file name and a JSON Pointer.
      CHECK(r.errors[0].text().rfind(rel + ": /", 0) == 0);
    }
  }

  TEST_CASE("several mistakes in one file are all reported") {
    Context ctx;
    LoadResult r = ctx.load_text(R"({"typemap": 1, "types": {
      "A": {"struct": [{"name": "x", "type": "bool"}]},
      "B": {"struct": [{"name": "y", "type": "nosuch"}]},
      "C": {"struct": [{"name": "z", "type": "A"}]}},
      "functions": {"f": {"returns": "int", "params": [{"name": "p", "type": "int", "dir": "out"}]}}})", "many.json");
    REQUIRE(r.errors.size() == 4);
    CHECK(r.errors[0].pointer == "/types/A/struct/0/type");
    CHECK(r.errors[1].pointer == "/types/B/struct/0/type");
    // C uses the broken A: no second error for it (poisoned names stay silent).
    CHECK(r.errors[2].pointer == "/functions/f/params/0/dir");
    CHECK(r.errors[3].pointer == "/library");
  }

  TEST_CASE("names with a newline or another control character are escaped: every error is one line") {
    Context ctx;
    LoadResult r = ctx.load_text(R"({"typemap": 1, "library": {"name": "x", "load": {"any": ["self"]}},
      "types": {"P": {"struct": [{"name": "a\nb", "type": "int32"}]}, "T\u0001": {"alias": "int32"},
                "Q": {"struct": [{"name": "x", "type": "no\tsuch"}]}},
      "functions": {"f": {"symbol": "f\r\nx", "returns": "void"}}})", "escape\n.json");
    REQUIRE(r.errors.size() == 4);
    for (const Diagnostic& e : r.errors) {
      const std::string text = e.text();
      CAPTURE(text);
      CHECK(std::none_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; }));
      CHECK(text.rfind("escape\\n.json: /", 0) == 0);
    }
    // The loader reads types in an unspecified order: the two name errors in either order.
    std::set<std::string> names{r.errors[0].text(), r.errors[1].text()};
    CHECK(names.count("escape\\n.json: /types/P/struct/0/name: 'a\\nb' is not a valid field name "
                      "(letters, digits and _, not starting with a digit)") == 1);
    CHECK(names.count("escape\\n.json: /types/T\\u0001: 'T\\u0001' is not a valid type name "
                      "(letters, digits and _, not starting with a digit)") == 1);
    CHECK(r.errors[2].text() == "escape\\n.json: /types/Q/struct/0/type: unknown type 'no\\tsuch'");
    CHECK(r.errors[3].text() == "escape\\n.json: /functions/f/symbol: 'f\\r\\nx' contains a control character");
    CHECK(escape_for_message("caf\xc3\xa9\x7f\x1b") == "caf\xc3\xa9\\u007f\\u001b");  // UTF-8 kept
  }

  TEST_CASE("an unreadable file names the file") {
    Context ctx;
    LoadResult r = ctx.load_file("tests/typemaps/bad/does-not-exist.json");
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0].text().rfind("tests/typemaps/bad/does-not-exist.json: /: cannot read the file", 0) == 0);
  }
}
