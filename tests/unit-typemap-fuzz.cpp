// marshal tests: randomized mutations of valid typemaps.
// Mutations that always break a typemap (an unknown key, a value of an
// impossible shape, nesting past the limit) must give errors; arbitrary
// mutations (dropped keys, swapped values, truncated text, flipped bytes) must
// never crash or hang, and every error they give is well formed.
#include <doctest/doctest.h>

#include "typemap/context.hpp"
#include "sanitized.hpp"
#include "support.hpp"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

using namespace marshal;
using namespace marshal::engine;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::vector<std::pair<std::string, json>> valid_typemaps() {
  std::vector<std::pair<std::string, json>> out;
  for (const char* dir : {"typemaps", "tests/typemaps/good", "tests/fixtures"})
    for (const auto& e : fs::directory_iterator(test::source_path(dir)))
      if (e.path().extension() == ".json" && e.path().filename() != "typemap.schema.json")
        out.emplace_back(e.path().filename().string(), json::parse(test::read_text(e.path().string())));
  return out;
}

// Every node of a document, as JSON Pointers (the root excluded).
void collect(const json& j, const json::json_pointer& at, std::vector<json::json_pointer>& out) {
  if (j.is_object())
    for (const auto& [k, v] : j.items()) { out.push_back(at / k); collect(v, at / k, out); }
  else if (j.is_array())
    for (std::size_t i = 0; i < j.size(); ++i) { out.push_back(at / i); collect(j[i], at / i, out); }
}

std::vector<json::json_pointer> objects_in(const json& doc, const std::vector<json::json_pointer>& nodes) {
  std::vector<json::json_pointer> out{json::json_pointer()};
  for (const auto& p : nodes)
    if (doc.at(p).is_object()) out.push_back(p);
  return out;
}

void check_well_formed(const LoadResult& r, const std::string& file) {
  for (const Diagnostic& d : r.errors) {
    CAPTURE(d.text());
    CHECK(d.file == file);
    CHECK((d.pointer.empty() || d.pointer[0] == '/'));
    CHECK_FALSE(d.message.empty());
  }
}

// Under a sanitizer (-O0: every load ~50x slower) a quarter of the rounds; the
// fuzz target fuzz-typemap-loader runs the same loader far longer in ./run test.
constexpr int kRounds = test::sanitized ? 4 : 1;

}  // namespace

TEST_SUITE("typemap-fuzz") {
  TEST_CASE("mutations that always break a typemap are errors, never crashes") {
    auto docs = valid_typemaps();
    REQUIRE(docs.size() >= 3);
    std::mt19937 rng(20261126);
    int errors_seen = 0;
    for (int iter = 0; iter < 1500 / kRounds; ++iter) {
      auto [name, doc] = docs[rng() % docs.size()];
      std::vector<json::json_pointer> nodes;
      collect(doc, json::json_pointer(), nodes);
      REQUIRE_FALSE(nodes.empty());
      const int kind = static_cast<int>(rng() % 3);
      std::string what;
      if (kind == 0) {  // an unknown key in some object
        auto objs = objects_in(doc, nodes);
        auto at = objs[rng() % objs.size()];
        doc.at(at)["zz_unknown_key"] = json::array({json::array({json::array()})});
        what = "unknown key at " + at.to_string();
      } else if (kind == 1) {  // a value of a shape no position accepts
        auto at = nodes[rng() % nodes.size()];
        doc.at(at) = json::array({json::array({json::array()})});
        what = "[[[]]] at " + at.to_string();
      } else {  // nesting past the reader's limit
        auto at = nodes[rng() % nodes.size()];
        json deep = doc.at(at);
        for (int d = 0; d < 70; ++d) deep = json{{"ptr", deep}};
        doc.at(at) = deep;
        what = "deep nesting at " + at.to_string();
      }
      CAPTURE(name);
      CAPTURE(what);
      Context ctx;
      LoadResult r = ctx.load_text(doc.dump(), name);
      CHECK_FALSE(r.ok());
      CHECK_FALSE(r.errors.empty());
      check_well_formed(r, name);
      errors_seen += !r.errors.empty();
    }
    CHECK(errors_seen == 1500 / kRounds);
  }

  TEST_CASE("arbitrary mutations never crash and give well-formed errors") {
    auto docs = valid_typemaps();
    std::mt19937 rng(7);
    const std::vector<json> values = {nullptr, true, 0, -1, 300, 1.5, "", "int32", "bool", "Point", "utf8", "out",
                                      json::array(), json::object(), json{{"ptr", "int32"}},
                                      json{{"param", "n"}}, json{{"field", "n"}}, 18446744073709551615ull,
                                      json{{"array", "uint8"}, {"count", {{"return", true}}}}};
    int loaded = 0, failed = 0;
    for (int iter = 0; iter < 2000 / kRounds; ++iter) {
      auto [name, doc] = docs[rng() % docs.size()];
      std::string text;
      for (int m = 0; m < 1 + static_cast<int>(rng() % 3); ++m) {
        std::vector<json::json_pointer> nodes;
        collect(doc, json::json_pointer(), nodes);
        if (nodes.empty()) break;
        auto at = nodes[rng() % nodes.size()];
        switch (rng() % 4) {
          case 0: {  // drop a key or element
            auto parent = at.parent_pointer();
            if (doc.at(parent).is_object()) doc.at(parent).erase(at.back());
            else doc.at(parent).erase(static_cast<std::size_t>(std::stoul(at.back())));
            break;
          }
          case 1: doc.at(at) = values[rng() % values.size()]; break;
          case 2: {  // swap two values
            auto other = nodes[rng() % nodes.size()];
            if (other.to_string().rfind(at.to_string(), 0) == 0 || at.to_string().rfind(other.to_string(), 0) == 0) break;
            std::swap(doc.at(at), doc.at(other));
            break;
          }
          default: {  // rename a key
            auto parent = at.parent_pointer();
            if (!doc.at(parent).is_object()) break;
            json v = doc.at(at);
            doc.at(parent).erase(at.back());
            doc.at(parent)[at.back() + "x"] = v;
          }
        }
      }
      text = doc.dump();
      if (rng() % 4 == 0) {  // damage the text itself
        if (rng() % 2) text.resize(rng() % (text.size() + 1));
        else if (!text.empty()) text[rng() % text.size()] = static_cast<char>(rng() % 256);
      }
      Context ctx;
      LoadResult r = ctx.load_text(text, name);
      if (r.ok()) { ++loaded; CHECK(r.errors.empty()); }
      else { ++failed; CHECK_FALSE(r.errors.empty()); }
      check_well_formed(r, name);
    }
    MESSAGE("arbitrary mutations: " << loaded << " still valid, " << failed << " rejected");
    CHECK(failed > 1000 / kRounds);
  }
}
