// marshal generate: the generator's state, shared by generate.cpp (declarations,
// records, the draft) and generate_apply.cpp (what annotations make certain).
#pragma once

#include "generate_annotations.hpp"

#include <clang-c/Index.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace marshal::cli::gen {


using json = nlohmann::ordered_json;
namespace ann = annotations;

inline std::string str(CXString s) {
  const char* c = clang_getCString(s);
  std::string out = c ? c : "";
  clang_disposeString(s);
  return out;
}

inline std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

inline bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// An integer parameter named like the length of the buffer next to it.
inline bool length_name(const std::string& name) {
  const std::string n = lower(name);
  for (const char* w : {"len", "length", "size", "count", "n", "num", "nbytes", "nmemb", "cb"})
    if (n == w) return true;
  for (const char* w : {"len", "length", "size", "count", "bytes"})
    if (ends_with(n, w) || n.rfind(w, 0) == 0) return true;
  return n.rfind("num", 0) == 0 || n.rfind("n_", 0) == 0;
}

// What the clang type says about a record field's or parameter's C type, for
// questions and reasons.
inline std::string spelling(CXType t) { return str(clang_getTypeSpelling(t)); }

struct Options {
  std::vector<std::string> headers;
  std::string library;
  std::string load;
  std::vector<std::string> clang_args;
  std::optional<std::regex> match;
  std::string string_default;  // utf8, ...; empty: a question
  std::string output;          // -o FILE; empty: stdout
};

// A record the draft describes, with the compiler's layout for the check.
struct RecordFacts {
  std::string name;
  long long size = 0, align = 0;
  std::vector<std::pair<std::string, long long>> field_bits;  // field name -> offset in bits
};

class Generator {
 public:
  Generator(const Options& opt, CXTranslationUnit tu) : opt_(opt), tu_(tu) {
    for (const std::string& h : opt.headers) {
      std::error_code ec;
      headers_.insert(std::filesystem::weakly_canonical(h, ec).string());
    }
  }

  json run();
  std::vector<std::string> reasons;  // what was inferred, and why
  std::vector<std::string> ignored;  // annotations read but not used, and why
  std::vector<RecordFacts> records;

 private:
  bool in_headers(CXCursor c) const {
    CXFile file;
    clang_getSpellingLocation(clang_getCursorLocation(c), &file, nullptr, nullptr, nullptr);
    if (!file) return false;
    std::error_code ec;
    const std::string path = std::filesystem::weakly_canonical(str(clang_getFileName(file)), ec).string();
    if (headers_.count(path)) return true;
    // An umbrella header's own folder counts as the header: lzma.h and lzma/*.h.
    for (const std::string& h : headers_) {
      const std::string dir = h.substr(0, h.size() - std::filesystem::path(h).extension().string().size()) + "/";
      if (path.rfind(dir, 0) == 0) return true;
    }
    return false;
  }
  void name_typedefs(CXCursor root);
  json type_expr(CXType t, const std::string& where);
  std::string record(CXType t);
  std::string enumeration(CXType t);
  std::string callback(CXType fn_type, const std::string& name);
  json signature(CXType fn_type, const std::vector<std::string>& names, const std::string& p, bool is_callback,
                 const std::string& fname, const ann::FunctionNotes* notes = nullptr);
  void compute_counts(json& params, const std::string& p);
  json param(CXType t, const std::string& name, const std::string& p, const std::vector<CXType>& types,
             const std::vector<std::string>& names, std::size_t i, const std::string& fname);
  void mark_const(json& j, CXType t);
  // What a parameter's or the return's annotations make certain (generate_apply.cpp).
  json annotated_param(CXType t, const std::string& name, const std::string& p, const std::vector<CXType>& types,
                       const std::vector<std::string>& names, std::size_t i, const std::string& fname,
                       const std::vector<ann::Note>& notes);
  std::optional<json> annotated_returns(CXType rt, const std::string& p, const std::string& fname,
                                        const std::vector<CXType>& types, const std::vector<std::string>& names,
                                        const std::vector<ann::Note>& notes);
  std::optional<json> count_of(const std::string& expr, const std::vector<CXType>& types,
                               const std::vector<std::string>& names, bool allow_return, std::string& why_not);
  std::optional<json> text_type(CXType pointee);
  static constexpr const char* string_type = "string";  // the draft's UTF-8 (or --string-default) string type
  std::string string_name() {
    uses_strings_ = true;
    return string_type;
  }
  void constant_from_macro(CXCursor c);
  // Whether an attribute libclang does not expose is spelled with this word.
  bool attribute_is(CXCursor attr, const std::string& word) {
    CXToken* tokens = nullptr;
    unsigned n = 0;
    clang_tokenize(tu_, clang_getCursorExtent(attr), &tokens, &n);
    bool found = false;
    for (unsigned i = 0; i < n && !found; ++i) found = str(clang_getTokenSpelling(tu_, tokens[i])) == word;
    clang_disposeTokens(tu_, tokens, n);
    return found;
  }
  void question(json& j, const std::string& text) { j["$question"] = text; ++questions_; }

  const Options& opt_;
  CXTranslationUnit tu_;
  std::set<std::string> headers_;
  std::map<std::string, std::string> typedef_names_;  // record/enum USR -> typedef name
  std::map<std::string, std::string> record_names_;   // USR -> name in the draft
  std::set<std::string> used_names_;
  json types_ = json::object();
  json callbacks_ = json::object();
  json functions_ = json::object();
  json constants_ = json::object();
  bool uses_strings_ = false;
  int questions_ = 0;
  int anon_ = 0;
};

// The typemap's primitive for a C scalar type (typedefs that fix a width kept).
std::optional<std::string> primitive(CXType t);
bool is_integer(CXType t);
bool is_char(CXType t);
// Whether the elements of an array type (canonical) are const: `const uuid_t` qualifies
// the array type itself, which C reads as const elements.
bool const_elements(CXType array);

}  // namespace marshal::cli::gen
