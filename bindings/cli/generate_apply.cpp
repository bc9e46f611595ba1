// marshal generate: what annotations make certain. A parameter's SAL, GI and
// doxygen notes are merged into one statement, checked against its C type, and
// written as a typemap entry with the annotation as its recorded reason; a
// disagreement (between annotations, or with C) is a question naming both.
#include "tools.hpp"

#ifdef MARSHAL_HAVE_LIBCLANG

#include "generate.hpp"

#include <cerrno>
#include <climits>
#include <cstdlib>

namespace marshal::cli::gen {
using namespace marshal::engine;

namespace {

std::string extent_text(const ann::Extent& e) {
  switch (e.kind) {
    case ann::Extent::Kind::one: return "one element";
    case ann::Extent::Kind::count: return "a count of " + e.expr;
    case ann::Extent::Kind::fixed: return std::to_string(e.fixed) + " elements";
    case ann::Extent::Kind::zero_terminated: return "zero-terminated";
  }
  return "";
}

// A parameter's notes as one statement; disagreements are kept, naming both sides.
struct Meaning {
  std::optional<ann::Direction> dir;
  std::optional<ann::Extent> extent;
  std::string length;
  bool bytes = false, nullable = false, text = false, outptr = false;
  std::string transfer, scope;
  bool from_gi = false;                // GI: no (array) means one value
  std::string why;                     // the sources, joined: the reason
  std::vector<std::string> conflicts;  // "SAL _In_ says in, doxygen @param[out] says out"
};

Meaning merge(const std::vector<ann::Note>& notes) {
  Meaning m;
  std::string dir_src, extent_src, transfer_src, scope_src;
  for (const ann::Note& n : notes) {
    m.why += (m.why.empty() ? "" : " and ") + n.source;
    m.from_gi = m.from_gi || n.source.rfind("GI ", 0) == 0;
    if (n.dir) {
      if (!m.dir) m.dir = n.dir, dir_src = n.source;
      else if (*m.dir != *n.dir)
        m.conflicts.push_back(dir_src + " says " + ann::direction_name(*m.dir) + ", " + n.source + " says " +
                              ann::direction_name(*n.dir));
    }
    if (n.extent) {
      if (!m.extent) m.extent = n.extent, extent_src = n.source;
      else if (extent_text(*m.extent) != extent_text(*n.extent))
        m.conflicts.push_back(extent_src + " says " + extent_text(*m.extent) + ", " + n.source + " says " +
                              extent_text(*n.extent));
    }
    if (!n.transfer.empty()) {
      if (m.transfer.empty()) m.transfer = n.transfer, transfer_src = n.source;
      else if (m.transfer != n.transfer)
        m.conflicts.push_back(transfer_src + " says transfer " + m.transfer + ", " + n.source + " says transfer " + n.transfer);
    }
    if (!n.scope.empty()) {
      if (m.scope.empty()) m.scope = n.scope, scope_src = n.source;
      else if (m.scope != n.scope)
        m.conflicts.push_back(scope_src + " says scope " + m.scope + ", " + n.source + " says scope " + n.scope);
    }
    if (!n.conflict.empty()) m.conflicts.push_back(n.source + " says " + n.conflict);
    if (!n.length.empty()) m.length = n.length;
    m.bytes = m.bytes || n.bytes;
    m.nullable = m.nullable || n.nullable;
    m.text = m.text || n.text;
    m.outptr = m.outptr || n.outptr;
  }
  return m;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

CXType strip_sugar(CXType t) {
  while (t.kind == CXType_Typedef || t.kind == CXType_Elaborated)
    t = t.kind == CXType_Typedef ? clang_getTypedefDeclUnderlyingType(clang_getTypeDeclaration(t)) : clang_Type_getNamedType(t);
  return t;
}

bool is_function(CXType canonical) {
  return canonical.kind == CXType_FunctionProto || canonical.kind == CXType_FunctionNoProto;
}

}  // namespace

// ---- counts and text ------------------------------------------------------------------------

// An annotation's count: a number, a parameter (or *parameter: the value it points
// to), or `return` where allowed. Anything else is for the author.
std::optional<json> Generator::count_of(const std::string& expr_in, const std::vector<CXType>& types,
                                        const std::vector<std::string>& names, bool allow_return,
                                        std::string& why_not) {
  std::string expr = expr_in;
  while (expr.size() >= 2 && expr.front() == '(' && expr.back() == ')') expr = expr.substr(1, expr.size() - 2);
  if (!expr.empty() && std::all_of(expr.begin(), expr.end(), [](unsigned char c) { return std::isdigit(c); })) {
    errno = 0;
    char* end = nullptr;
    const unsigned long long v = std::strtoull(expr.c_str(), &end, 10);
    if (errno == ERANGE || v > static_cast<unsigned long long>(LLONG_MAX)) {
      why_not = "'" + expr_in + "' is too large";
      return std::nullopt;
    }
    return json(v);
  }
  if (expr == "return") {
    if (allow_return) return json{{"return", true}};
    why_not = "'return' cannot give a capacity (it is known only after the call)";
    return std::nullopt;
  }
  const bool deref = !expr.empty() && expr[0] == '*';
  const std::string name = deref ? expr.substr(1) : expr;
  for (std::size_t k = 0; k < names.size(); ++k) {
    if (names[k] != name) continue;
    CXType t = clang_getCanonicalType(types[k]);
    if (deref) {
      if (t.kind != CXType_Pointer || !is_integer(clang_getPointeeType(t))) {
        why_not = "'" + expr_in + "' reads through parameter '" + name + "', which is " + spelling(types[k]) +
                  ", not a pointer to an integer";
        return std::nullopt;
      }
    } else if (!is_integer(types[k]) &&
               !(t.kind == CXType_Pointer && is_integer(clang_getPointeeType(t)))) {
      why_not = "parameter '" + name + "' is " + spelling(types[k]) + ", not an integer";
      return std::nullopt;
    }
    return json{{"param", name}};
  }
  why_not = "'" + expr_in + "' is neither a number nor a parameter (parameters: " + join(names, ", ") + ")";
  return std::nullopt;
}

// The string type for NUL-terminated text of this element type.
// pointee keeps its typedefs: C's wchar_t is a typedef of int.
std::optional<json> Generator::text_type(CXType pointee) {
  const std::optional<std::string> p = primitive(pointee);
  if (!p) return std::nullopt;
  if (*p == "char" || *p == "schar" || *p == "uchar") return json(string_name());
  if (*p == "wchar_t") return json{{"string", "wchar"}};
  if (*p == "char16_t") return json{{"string", "utf16"}};
  if (*p == "char32_t") return json{{"string", "utf32"}};
  return std::nullopt;
}

// ---- parameters -----------------------------------------------------------------------------

json Generator::annotated_param(CXType t, const std::string& name, const std::string& p, const std::vector<CXType>& types,
                                const std::vector<std::string>& names, std::size_t i, const std::string& fname,
                                const std::vector<ann::Note>& notes) {
  const Meaning m = merge(notes);
  // The draft without annotations, with a question that replaces its own.
  auto ask = [&](const std::string& text) {
    const std::size_t inferred = reasons.size();
    json j = param(t, name, p, types, names, i, fname);
    reasons.resize(inferred);  // the heuristics' reasons: not what the draft stands on here
    question(j, text);
    return j;
  };
  if (!m.conflicts.empty())
    return ask("'" + name + "': the annotations disagree: " + join(m.conflicts, "; ") + ". Which is right?");
  // GI: a parameter without (out) or (inout) is in.
  const ann::Direction dir = m.dir.value_or(ann::Direction::in);
  const char* dir_name = ann::direction_name(dir);
  const std::string said = m.why + " on '" + name + "'";
  json j;
  j["name"] = name;
  CXType c = clang_getCanonicalType(t);

  if (c.kind != CXType_Pointer && c.kind != CXType_ConstantArray) {
    const bool by_value_ok = dir == ann::Direction::in && !m.text && !m.outptr && m.scope.empty() && !m.nullable &&
                             (!m.extent || m.extent->kind == ann::Extent::Kind::one);
    if (!by_value_ok)
      return ask(said + " describes a pointer, but C passes '" + name + "' by value as " + spelling(t) +
                 ": correct the annotation, or describe the parameter by hand");
    reasons.push_back(p + ": " + m.why + ": in, by value");
    return param(t, name, p, types, names, i, fname);
  }

  if (c.kind == CXType_ConstantArray) {  // uuid_t: a pointer to N elements
    CXType elem = clang_getArrayElementType(c);
    const bool is_const = const_elements(c);
    if (dir != ann::Direction::in && is_const)
      return ask(said + " says " + dir_name + ", but C declares it " + spelling(t) +
                 " (const: the callee does not write it). Which is right?");
    j["type"] = json{{"array", type_expr(elem, p)}, {"count", clang_getArraySize(c)}};
    if (dir != ann::Direction::in) j["dir"] = dir_name;
    reasons.push_back(p + ": " + m.why + ": an " + dir_name + " array of " + std::to_string(clang_getArraySize(c)));
    return j;
  }

  CXType pointee_decl = clang_getPointeeType(strip_sugar(t));  // keeps typedef names (Bytef)
  CXType pointee = clang_getCanonicalType(pointee_decl);
  const bool is_const = clang_isConstQualifiedType(pointee) != 0;

  if (is_function(pointee)) {
    if (dir != ann::Direction::in || m.extent || m.text)
      return ask(said + " describes data, but C declares '" + name + "' as a function pointer (" + spelling(t) + ")");
    json d = param(t, name, p, types, names, i, fname);  // the callback signature, and its question
    if (m.scope.empty()) return d;
    d.erase("$question");
    d["type"]["scope"] = m.scope == "call" ? "call" : "registered";
    if (m.nullable) d["nullable"] = true;
    reasons.push_back(p + ": " + m.why + (m.scope == "call" ? ": used only during the call (scope call)"
                                                             : ": kept after the call returns (scope registered: the host "
                                                               "releases it once the library is done with it)"));
    return d;
  }
  if (!m.scope.empty())
    return ask(said + " gives a callback scope, but C declares '" + name + "' as " + spelling(t) + ", not a function pointer");
  if (dir != ann::Direction::in && is_const)
    return ask(said + " says " + dir_name + ", but C declares '" + name + "' as " + spelling(t) +
               " (const: the callee promises not to write through it). Which is right?");

  // NULL: in and inout pointers may be null; out storage is always the engine's.
  auto nullable = [&](json& entry) {
    if (!m.nullable) return;
    if (dir == ann::Direction::out) reasons.push_back(p + ": " + m.why + ": may be NULL, but the engine always passes storage for an out parameter");
    else entry["nullable"] = true;
  };
  auto done = [&](json type, const std::string& what) {
    json entry;
    entry["name"] = name;
    entry["type"] = std::move(type);
    if (dir != ann::Direction::in) entry["dir"] = dir_name;
    nullable(entry);
    reasons.push_back(p + ": " + m.why + ": " + what);
    return entry;
  };

  // The callee writes one pointer through T **: an opaque pointer, or a string it allocated.
  const bool one = !m.extent || m.extent->kind == ann::Extent::Kind::one;
  const bool pointer_out = m.outptr || (dir == ann::Direction::out && pointee.kind == CXType_Pointer && !m.extent);
  if (pointer_out) {
    if (pointee.kind != CXType_Pointer)
      return ask(said + " says the callee writes a pointer, but C declares '" + name + "' as " + spelling(t) +
                 " (not a pointer to a pointer)");
    if (m.extent && !one)
      return ask(said + ": an array the callee allocates and returns through '" + name + "'; a typemap describes "
                 "caller-allocated arrays only: describe it by hand (e.g. an out pointer and the library's accessors)");
    CXType inner = clang_getCanonicalType(clang_getPointeeType(pointee));
    j["type"] = json{{"ptr", "pointer"}};
    j["dir"] = "out";
    if (is_char(inner)) {
      j["type"] = json{{"ptr", string_name()}};
      if (m.transfer == "full") {
        j["free_with"] = "free";
        reasons.push_back(p + ": " + m.why + ": a string the callee allocates, freed with free (GI transfer full: "
                          "g_free, which is free since GLib 2.46)");
        return j;
      }
      if (m.transfer == "none") {
        j["free_with"] = "none";
        reasons.push_back(p + ": " + m.why + ": a string the library keeps (transfer none)");
        return j;
      }
      j["free_with"] = "none";
      question(j, said + ": the callee writes a string (" + spelling(t) + ") into '" + name + "': who frees it: nobody "
                  "(\"none\": the library keeps it), \"free\", or a function of the library?");
      return j;
    }
    reasons.push_back(p + ": " + m.why + ": the callee writes one pointer into '" + name +
                      "', returned to the host as an opaque pointer");
    return j;
  }

  // NUL-terminated text.
  if (m.text) {
    std::optional<json> text = text_type(pointee_decl);
    if (!text)
      return ask(said + " says NUL-terminated text, but C declares '" + name + "' as " + spelling(t));
    if (one && dir == ann::Direction::in) return done(*text, "an in string");
    if (one)
      return ask(said + ": a string the callee writes into '" + name + "' without a stated capacity: how many units "
                 "does the buffer hold ({\"string\": ..., \"capacity\": N or {\"param\": NAME}})?");
    if (m.extent->kind != ann::Extent::Kind::count && m.extent->kind != ann::Extent::Kind::fixed)
      return ask(said + ": which capacity has the string buffer '" + name + "'?");
    std::string why_not;
    std::optional<json> cap = m.extent->kind == ann::Extent::Kind::fixed ? json(m.extent->fixed)
                                                                          : count_of(m.extent->expr, types, names, false, why_not);
    if (!cap) return ask(said + ": the buffer's capacity " + why_not);
    json s = text->is_string() ? json{{"string", opt_.string_default.empty() ? "utf8" : opt_.string_default}} : *text;
    s["capacity"] = *cap;
    if (dir == ann::Direction::in) s = *text;  // an in string ends at its terminator; the capacity is the callee's bound
    json entry = done(s, std::string("an ") + dir_name + " string (NUL-terminated)");
    if (text->is_string() && opt_.string_default.empty() && dir != ann::Direction::in)
      question(entry, said + ": which encoding does the text in '" + name + "' use (utf8, latin1, ...)? (or run "
                      "generate with --string-default)");
    return entry;
  }

  if (pointee.kind == CXType_Void && one) {
    if (dir != ann::Direction::in)
      return ask(said + " says the callee writes through '" + name + "' (" + spelling(t) + "): of which type, and how "
                 "many elements?");
    return done("pointer", "an opaque pointer the callee reads");
  }
  if (pointee.kind == CXType_Record && clang_Type_getSizeOf(pointee) < 0) {
    return done("pointer", "a pointer to the incomplete struct " + spelling(pointee) + ": an opaque pointer");
  }

  // The extent: stated, or (doxygen states only a direction) the adjacent length-named integer.
  ann::Extent e;
  if (m.extent) {
    e = *m.extent;
  } else if (!m.from_gi && i + 1 < types.size() && is_integer(types[i + 1]) && length_name(names[i + 1])) {
    e.kind = ann::Extent::Kind::count;
    e.expr = names[i + 1];
  }
  // Elements: bytes for void; strings for char * elements an in array carries.
  json elem;
  if (pointee.kind == CXType_Void) elem = "uint8";
  else if (pointee.kind == CXType_Pointer && is_char(clang_getPointeeType(pointee)) && dir == ann::Direction::in)
    elem = string_name();
  else elem = type_expr(pointee_decl, p);
  if (m.bytes && pointee.kind != CXType_Void && clang_Type_getSizeOf(pointee) != 1)
    return ask(said + " counts bytes, but each element of '" + name + "' (" + spelling(pointee_decl) + ") is " +
               std::to_string(clang_Type_getSizeOf(pointee)) + " bytes, and a typemap counts elements: which "
               "parameter or constant gives the element count?");

  if (e.kind == ann::Extent::Kind::one) {
    if (is_char(pointee) && dir == ann::Direction::in) return done(string_name(), "an in string (C's char *, read by the callee)");
    return done(json{{"ptr", elem}}, std::string("one ") + spelling(pointee_decl) + ", " + dir_name);
  }

  json array;
  if (e.kind == ann::Extent::Kind::zero_terminated) {
    if (dir != ann::Direction::in)
      return ask(said + ": a zero-terminated array the callee writes into '" + name + "': how many elements does the "
                 "buffer hold (a constant or {\"param\": NAME})?");
    if (is_char(pointee)) return done(string_name(), "an in string (a zero-terminated char array)");
    if (pointee.kind == CXType_Pointer) array = json{{"array", elem}, {"count", json{{"sentinel", nullptr}}}};
    else if (is_integer(pointee)) array = json{{"array", elem}, {"count", json{{"sentinel", 0}}}};
    else
      return ask(said + ": zero-terminated, but the elements of '" + name + "' are " + spelling(pointee_decl) +
                 " (neither integers nor pointers): which element ends the array?");
    return done(array, "an in array ending at its zero element");
  }
  std::string why_not;
  std::optional<json> count = e.kind == ann::Extent::Kind::fixed ? json(e.fixed)
                                                                  : count_of(e.expr, types, names, false, why_not);
  if (!count) return ask(said + ": the element count of '" + name + "': " + why_not);
  const bool char_elems = is_char(pointee);
  array = json{{"array", char_elems ? json("uint8") : elem}, {"count", *count}};
  if (!m.length.empty() && dir != ann::Direction::in) {
    std::optional<json> length = count_of(m.length, types, names, true, why_not);
    if (!length) return ask(said + ": how many elements the callee wrote into '" + name + "': " + why_not);
    array["length"] = *length;
  }
  json entry = done(array, std::string("an ") + dir_name + " array of " +
                               (count->is_number() ? count->dump() : "'" + e.expr + "'") +
                               (m.length.empty() || dir == ann::Direction::in ? "" : ", '" + m.length + "' written"));
  // char elements: bytes or text is still the author's call, unless counted in bytes.
  if (char_elems && !m.bytes && !m.from_gi)
    question(entry, said + ": '" + name + "' holds " + spelling(pointee_decl) + " elements: bytes (an array, as "
                    "drafted) or text ({\"string\": ..., \"length\" or \"capacity\": the count})?");
  return entry;
}

// ---- returns --------------------------------------------------------------------------------

std::optional<json> Generator::annotated_returns(CXType rt, const std::string& p, const std::string& fname,
                                                 const std::vector<CXType>& types, const std::vector<std::string>& names,
                                                 const std::vector<ann::Note>& notes) {
  const Meaning m = merge(notes);
  CXType rc = clang_getCanonicalType(rt);
  json r;
  const bool by_value = rc.kind != CXType_Pointer;
  CXType pointee_decl = by_value ? rc : clang_getPointeeType(strip_sugar(rt));
  CXType pointee = clang_getCanonicalType(pointee_decl);
  const bool opaque = !by_value && (pointee.kind == CXType_Void || is_function(pointee) ||
                                    (pointee.kind == CXType_Record && clang_Type_getSizeOf(pointee) < 0));
  if (by_value || opaque) {
    // By value there is nothing to own; an opaque pointer is the host's to keep
    // (NULL and ownership do not change it). Text or an extent contradicts C.
    if (!m.text && !m.extent && (!by_value || (!m.nullable && m.transfer.empty()))) return std::nullopt;
    r["type"] = by_value ? type_expr(rt, p) : json("pointer");
    question(r, m.why + " on " + fname + "'s return describes " + (by_value ? "a pointer" : "text or an array") +
                    ", but C declares it " + spelling(rt) + ": correct the annotation, or describe the return by hand");
    return r;
  }
  if (!m.conflicts.empty()) {
    r["type"] = "pointer";
    question(r, fname + "'s return: the annotations disagree: " + join(m.conflicts, "; ") + ". Which is right?");
    return r;
  }
  const std::string said = m.why + " on " + fname + "'s return";
  std::optional<json> text = text_type(pointee_decl);
  const bool one = !m.extent || m.extent->kind == ann::Extent::Kind::one;
  if (text && one && (m.text || is_char(pointee))) {
    r["type"] = *text;
  } else if (one) {
    r["type"] = json{{"ptr", type_expr(pointee_decl, p)}};
  } else {
    json elem = pointee.kind == CXType_Pointer && is_char(clang_getPointeeType(pointee)) ? json(string_name())
                                                                                         : type_expr(pointee_decl, p);
    json count;
    std::string why_not;
    if (m.extent->kind == ann::Extent::Kind::zero_terminated) {
      if (pointee.kind == CXType_Pointer) count = json{{"sentinel", nullptr}};
      else if (is_integer(pointee)) count = json{{"sentinel", 0}};
    } else if (m.extent->kind == ann::Extent::Kind::fixed) {
      count = m.extent->fixed;
    } else if (std::optional<json> c = count_of(m.extent->expr, types, names, false, why_not)) {
      count = *c;
    }
    r["type"] = json{{"array", elem}, {"count", count.is_null() ? json(0) : count}};
    if (count.is_null()) {
      r["free_with"] = "none";
      question(r, said + ": the returned array's element count: " +
                      (why_not.empty() ? "which element ends it?" : why_not));
      return r;
    }
  }
  if (m.nullable) r["nullable"] = true;
  const bool array = r["type"].is_object() && r["type"].contains("array");
  const bool scalar_elems = array && !(pointee.kind == CXType_Pointer);
  if (m.transfer == "none") {
    r["free_with"] = "none";
    reasons.push_back(p + ": " + m.why + ": borrowed (transfer none): nothing is freed");
  } else if (m.transfer == "full" && (r["type"] == json(string_name()) || scalar_elems)) {
    r["free_with"] = "free";
    reasons.push_back(p + ": " + m.why + ": the caller owns it (transfer full): freed with free (g_free, which is "
                      "free since GLib 2.46)");
  } else if (m.transfer == "container" && scalar_elems) {
    r["free_with"] = "free";
    reasons.push_back(p + ": " + m.why + ": the caller owns the array (transfer container): freed with free");
  } else {
    r["free_with"] = "none";
    question(r, said + ": " + fname + " returns " + spelling(rt) +
                    (m.transfer.empty() ? "" : ", and the caller owns it (transfer " + m.transfer + ")") +
                    ": who frees it: nobody (\"none\"), \"free\", or a function of the library?" +
                    (m.nullable ? "" : " May it be NULL (\"nullable\")?"));
    return r;
  }
  return r;
}

}  // namespace marshal::cli::gen

#endif  // MARSHAL_HAVE_LIBCLANG
