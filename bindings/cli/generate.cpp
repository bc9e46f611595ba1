// marshal command line: `marshal generate HEADER... --library NAME`.
// Parses C headers with libclang's C API and writes a draft typemap: records
// (laid out exactly as the compiler does, checked against it), enums, callbacks,
// functions and constants. What C cannot say becomes a "$question" entry the
// loader rejects, so a draft is never used by mistake (typemaps/README.md).
// Annotations (SAL, GI, doxygen) are read in generate_annotations.cpp and turned
// into answers in generate_apply.cpp.
#include "tools.hpp"

#ifdef MARSHAL_HAVE_LIBCLANG

#include "typemap/context.hpp"
#include "generate.hpp"

#include <clang-c/Index.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace marshal::cli {
using namespace marshal::engine;

namespace gen {

// ---- names ---------------------------------------------------------------------------

void Generator::name_typedefs(CXCursor root) {
  clang_visitChildren(
      root,
      [](CXCursor c, CXCursor, CXClientData data) {
        auto* self = static_cast<Generator*>(data);
        if (clang_getCursorKind(c) != CXCursor_TypedefDecl) return CXChildVisit_Continue;
        CXType u = clang_getCanonicalType(clang_getTypedefDeclUnderlyingType(c));
        if (u.kind != CXType_Record && u.kind != CXType_Enum) return CXChildVisit_Continue;
        const std::string usr = str(clang_getCursorUSR(clang_getTypeDeclaration(u)));
        self->typedef_names_.emplace(usr, str(clang_getCursorSpelling(c)));  // the first typedef names it
        return CXChildVisit_Continue;
      },
      this);
}

// ---- type expressions -----------------------------------------------------------------

// The typemap's primitive for a C scalar type: typedef names that fix a width
// or a platform meaning are kept (size_t, int32_t, ...), else the C type.
std::optional<std::string> primitive(CXType t) {
  static const std::map<std::string, std::string> typedefs = {
      {"size_t", "size_t"},   {"ssize_t", "ssize_t"},   {"intptr_t", "intptr_t"}, {"uintptr_t", "uintptr_t"},
      {"ptrdiff_t", "ptrdiff_t"}, {"wchar_t", "wchar_t"}, {"int8_t", "int8"},     {"uint8_t", "uint8"},
      {"int16_t", "int16"},   {"uint16_t", "uint16"},   {"int32_t", "int32"},     {"uint32_t", "uint32"},
      {"int64_t", "int64"},   {"uint64_t", "uint64"},   {"char16_t", "char16_t"}, {"char32_t", "char32_t"}};
  for (CXType cur = t; cur.kind == CXType_Typedef || cur.kind == CXType_Elaborated;) {
    if (cur.kind == CXType_Elaborated) {
      cur = clang_Type_getNamedType(cur);
      continue;
    }
    const std::string name = str(clang_getTypedefName(cur));
    auto it = typedefs.find(name);
    if (it != typedefs.end()) return it->second;
    cur = clang_getTypedefDeclUnderlyingType(clang_getTypeDeclaration(cur));
  }
  switch (clang_getCanonicalType(t).kind) {
    case CXType_Bool: return "cbool";
    case CXType_Char_S: case CXType_Char_U: return "char";
    case CXType_SChar: return "schar";
    case CXType_UChar: return "uchar";
    case CXType_Short: return "short";
    case CXType_UShort: return "ushort";
    case CXType_Int: return "int";
    case CXType_UInt: return "uint";
    case CXType_Long: return "long";
    case CXType_ULong: return "ulong";
    case CXType_LongLong: return "longlong";
    case CXType_ULongLong: return "ulonglong";
    case CXType_Float: return "float";
    case CXType_Double: return "double";
    case CXType_WChar: return "wchar_t";
    case CXType_Char16: return "char16_t";
    case CXType_Char32: return "char32_t";
    default: return std::nullopt;
  }
}

bool is_integer(CXType t) {
  auto p = primitive(t);
  return p && *p != "float" && *p != "double" && *p != "cbool";
}

bool const_elements(CXType array) {
  return clang_isConstQualifiedType(array) != 0 ||
         clang_isConstQualifiedType(clang_getCanonicalType(clang_getArrayElementType(array))) != 0;
}

bool is_char(CXType t) {
  const CXTypeKind k = clang_getCanonicalType(t).kind;
  return k == CXType_Char_S || k == CXType_Char_U;
}

// A type expression for t where no direction or ownership is needed (fields,
// pointees, by-value parameters); pointers whose meaning is unknown are opaque.
json Generator::type_expr(CXType t, const std::string& where) {
  if (auto p = primitive(t)) return *p;
  CXType c = clang_getCanonicalType(t);
  switch (c.kind) {
    case CXType_Void: return "void";
    case CXType_Record: return record(c);
    case CXType_Enum: return enumeration(c);
    case CXType_Pointer: {
      CXType pointee = clang_getCanonicalType(clang_getPointeeType(c));
      if (pointee.kind == CXType_FunctionProto || pointee.kind == CXType_FunctionNoProto) {
        // A typedef'd function pointer becomes a callback signature; as a
        // field it stays an opaque pointer (set by native code, or by the host).
        reasons.push_back(where + ": " + spelling(t) + " is a function pointer: an opaque pointer here");
      }
      return "pointer";
    }
    case CXType_ConstantArray: {
      json a;
      a["array"] = type_expr(clang_getArrayElementType(c), where);
      a["count"] = clang_getArraySize(c);
      return a;
    }
    default: {
      json o;
      question(o, where + ": the C type " + spelling(t) + " has no typemap equivalent; describe it by hand");
      return o;
    }
  }
}

std::string Generator::enumeration(CXType t) {
  CXCursor decl = clang_getTypeDeclaration(t);
  const std::string usr = str(clang_getCursorUSR(decl));
  if (auto it = record_names_.find(usr); it != record_names_.end()) return it->second;
  std::string name = typedef_names_.count(usr) ? typedef_names_[usr] : str(clang_getCursorSpelling(decl));
  if (name.empty() || clang_Cursor_isAnonymous(decl) || name.find(' ') != std::string::npos)
    name = "enum_" + std::to_string(anon_++);
  record_names_[usr] = name;
  json items = json::object();
  clang_visitChildren(
      decl,
      [](CXCursor c, CXCursor, CXClientData data) {
        if (clang_getCursorKind(c) == CXCursor_EnumConstantDecl)
          (*static_cast<json*>(data))[str(clang_getCursorSpelling(c))] = clang_getEnumConstantDeclValue(c);
        return CXChildVisit_Continue;
      },
      &items);
  json e;
  e["enum"] = items;
  e["underlying"] = primitive(clang_getEnumDeclIntegerType(decl)).value_or("int");
  types_[name] = e;
  return name;
}

std::string Generator::record(CXType t) {
  CXCursor decl = clang_getTypeDeclaration(t);
  const std::string usr = str(clang_getCursorUSR(decl));
  if (auto it = record_names_.find(usr); it != record_names_.end()) return it->second;
  std::string name = typedef_names_.count(usr) ? typedef_names_[usr] : str(clang_getCursorSpelling(decl));
  if (name.empty() || clang_Cursor_isAnonymous(decl) || name.find(' ') != std::string::npos)
    name = "record_" + std::to_string(anon_++);
  record_names_[usr] = name;
  const bool is_union = clang_getCursorKind(decl) == CXCursor_UnionDecl;
  const long long size = clang_Type_getSizeOf(t);
  if (size < 0) {  // incomplete: opaque, only ever behind a pointer
    json h;
    h["handle"] = json::object();
    question(h, "/types/" + name + " is an opaque struct: which function releases it (\"release\"), and which "
                "values are invalid?");
    types_[name] = h;
    return name;
  }
  types_[name] = json::object();  // reserved: a field may refer back to this record
  struct Ctx {
    Generator* self;
    std::string name;
    json fields = json::array();
    RecordFacts facts;
    long long natural = 1;
    bool packed_attr = false;
    bool ms_layout = false;
    std::string last_integer;
  } ctx{this, name, json::array(), {}, 1, false, false, {}};
  ctx.facts.name = name;
  ctx.facts.size = size;
  ctx.facts.align = clang_Type_getAlignOf(t);
  clang_visitChildren(
      decl,
      [](CXCursor c, CXCursor, CXClientData data) {
        auto* x = static_cast<Ctx*>(data);
        if (clang_getCursorKind(c) == CXCursor_PackedAttr) x->packed_attr = true;
        if (clang_getCursorKind(c) == CXCursor_UnexposedAttr && x->self->attribute_is(c, "ms_struct")) x->ms_layout = true;
        if (clang_getCursorKind(c) != CXCursor_FieldDecl) return CXChildVisit_Continue;
        std::string fname = str(clang_getCursorSpelling(c));
        const bool bitfield = clang_Cursor_isBitField(c) != 0;
        if (fname.empty() && bitfield) fname = "_pad" + std::to_string(x->fields.size());
        if (fname.empty()) fname = "_anon" + std::to_string(x->fields.size());
        CXType ft = clang_getCursorType(c);
        json f;
        f["name"] = fname;
        if (clang_getCanonicalType(ft).kind == CXType_IncompleteArray) {
          // A flexible array member: its count is another field's, which only the
          // author knows; the draft guesses the last integer field before it named like a
          // count (else the last integer field).
          json a;
          a["array"] = x->self->type_expr(clang_getArrayElementType(clang_getCanonicalType(ft)), "/types/" + x->name);
          a["count"] = x->last_integer.empty() ? json(0) : json{{"field", x->last_integer}};
          f["type"] = a;
          x->self->question(f, "'" + fname + "' is a flexible array member (" + spelling(ft) +
                                   "): which field holds its element count ({\"field\": NAME})?");
        } else {
          f["type"] = x->self->type_expr(ft, "/types/" + x->name + "/" + fname);
        }
        if (is_integer(ft) && !bitfield && (x->last_integer.empty() || length_name(fname) || !length_name(x->last_integer)))
          x->last_integer = fname;  // a field named like a count wins
        if (bitfield) f["bits"] = clang_getFieldDeclBitWidth(c);
        x->natural = std::max(x->natural, clang_Type_getAlignOf(ft));
        x->facts.field_bits.emplace_back(fname, clang_Cursor_getOffsetOfField(c));
        x->fields.push_back(f);
        return CXChildVisit_Continue;
      },
      &ctx);
  json r;
  r[is_union ? "union" : "struct"] = ctx.fields;
  // #pragma pack(N) and __attribute__((packed)) show as an alignment below the
  // fields' natural one; the loader applies the same cap to every field.
  if (ctx.ms_layout) r["layout"] = "msvc";  // __attribute__((ms_struct)): MSVC bitfield rules
  if (ctx.packed_attr) r["pack"] = 1;
  else if (ctx.facts.align < ctx.natural) r["pack"] = ctx.facts.align;
  types_[name] = r;
  records.push_back(ctx.facts);
  return name;
}

std::string Generator::callback(CXType fn_type, const std::string& name) {
  if (callbacks_.contains(name)) return name;
  callbacks_[name] = json::object();  // reserved against recursion
  std::vector<std::string> names;
  const int n = clang_getNumArgTypes(fn_type);
  for (int i = 0; i < n; ++i) names.push_back("arg" + std::to_string(i));
  callbacks_[name] = signature(fn_type, names, "/callbacks/" + name, true, name);
  return name;
}

// ---- parameters and signatures ----------------------------------------------------------

json Generator::param(CXType t, const std::string& name, const std::string& p, const std::vector<CXType>& types,
                      const std::vector<std::string>& names, std::size_t i, const std::string& fname) {
  json j;
  j["name"] = name;
  CXType c = clang_getCanonicalType(t);
  if (c.kind == CXType_ConstantArray) {
    // A parameter of array type (uuid_t) is a pointer to its first element, with a known count.
    CXType elem = clang_getArrayElementType(c);
    j["type"] = json{{"array", type_expr(elem, p)}, {"count", clang_getArraySize(c)}};
    if (const_elements(c)) {
      reasons.push_back(p + ": " + spelling(t) + " (const array of " + std::to_string(clang_getArraySize(c)) +
                        "): an in array of that count");
    } else {
      j["dir"] = "out";
      question(j, "'" + name + "' is " + spelling(t) + " (an array, not const): filled by the callee (\"out\") or "
                  "read and written (\"inout\")?");
    }
    return j;
  }
  if (c.kind != CXType_Pointer) {
    j["type"] = type_expr(t, p);
    return j;
  }
  CXType sugared = t;  // the pointer type itself, through typedefs of it (api_cmp, voidpf)
  while (sugared.kind == CXType_Typedef || sugared.kind == CXType_Elaborated)
    sugared = sugared.kind == CXType_Typedef ? clang_getTypedefDeclUnderlyingType(clang_getTypeDeclaration(sugared))
                                             : clang_Type_getNamedType(sugared);
  CXType pointee_decl = clang_getPointeeType(sugared);  // keeps typedef names (Bytef)
  CXType pointee = clang_getCanonicalType(pointee_decl);
  const bool is_const = clang_isConstQualifiedType(pointee) != 0;
  // The adjacent integer named like a length, when there is one.
  std::optional<std::size_t> len;
  if (i + 1 < types.size() && is_integer(types[i + 1]) && length_name(names[i + 1])) len = i + 1;
  if (pointee.kind == CXType_FunctionProto || pointee.kind == CXType_FunctionNoProto) {
    // A typedef'd function pointer keeps its name as the callback's.
    CXType named = t.kind == CXType_Elaborated ? clang_Type_getNamedType(t) : t;
    std::string cb = named.kind == CXType_Typedef ? str(clang_getTypedefName(named)) : fname + "_" + name;
    for (char& ch : cb)
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_') ch = '_';
    callback(pointee, cb);
    j["type"] = json{{"callback", cb}, {"scope", "call"}};
    question(j, "'" + name + "' is a function pointer (" + spelling(t) + "): is it used only during the call "
                "(\"scope\": \"call\") or kept by the library after it returns (\"registered\")?");
    return j;
  }
  if (pointee.kind == CXType_Void) {
    if (len) {
      j["type"] = json{{"array", "uint8"}, {"count", json{{"param", names[*len]}}}};
      if (is_const) {
        reasons.push_back(p + ": const void * followed by '" + names[*len] + "': an in byte array of that count");
      } else {
        j["dir"] = "out";
        question(j, "'" + name + "' is void * followed by '" + names[*len] + "': is the buffer filled by the callee "
                    "(\"out\", with a \"length\" if it reports how much) or read and written (\"inout\")?");
      }
      return j;
    }
    j["type"] = "pointer";
    reasons.push_back(p + ": void * without a length: an opaque pointer");
    return j;
  }
  if (is_char(pointee)) {
    if (is_const && !len) {
      j["type"] = string_name();
      reasons.push_back(p + ": const char * is an in string");
      return j;
    }
    if (is_const) {
      j["type"] = json{{"array", "uint8"}, {"count", json{{"param", names[*len]}}}};
      question(j, "'" + name + "' is const char * followed by '" + names[*len] + "': bytes (an array, as drafted) "
                  "or text ({\"string\": ..., \"length\": {\"param\": \"" + names[*len] + "\"}, \"terminator\": \"none\"})?");
      return j;
    }
    j["type"] = json{{"string", opt_.string_default.empty() ? "utf8" : opt_.string_default},
                     {"capacity", len ? json{{"param", names[*len]}} : json(0)}};
    j["dir"] = "out";
    question(j, "'" + name + "' is char * (not const): an out buffer the callee fills (its \"capacity\"? a \"length\"?), "
                "an inout string, or bytes?");
    return j;
  }
  if (pointee.kind == CXType_Record && clang_Type_getSizeOf(pointee) < 0) {
    j["type"] = "pointer";
    reasons.push_back(p + ": a pointer to the incomplete struct " + spelling(pointee) + ": an opaque pointer");
    return j;
  }
  json elem = type_expr(pointee_decl, p);
  if (is_const && len) {
    j["type"] = json{{"array", elem}, {"count", json{{"param", names[*len]}}}};
    reasons.push_back(p + ": " + spelling(pointee_decl) + " * followed by '" + names[*len] +
                      "': an in array of that count");
    return j;
  }
  if (is_const) {
    j["type"] = json{{"ptr", elem}};
    reasons.push_back(p + ": " + spelling(pointee_decl) + " *: an in pointer to one value");
    return j;
  }
  if (len) {
    j["type"] = json{{"array", elem}, {"count", json{{"param", names[*len]}}}};
    j["dir"] = "out";
    question(j, "'" + name + "' is " + spelling(t) + " followed by '" + names[*len] + "': an array the callee "
                "fills (\"out\", with a \"length\" if it reports how many) or reads and writes (\"inout\")?");
    return j;
  }
  j["type"] = json{{"ptr", elem}};
  j["dir"] = "out";
  question(j, "'" + name + "' is " + spelling(t) + " (not const): one value written by the callee (\"out\"), read "
              "and written (\"inout\"), or an array (with which count)? May it be NULL (\"nullable\")?");
  return j;
}

// C's const on what a parameter points to, kept as the typemap's "const" (the
// callee promises not to write through it, so the engine may pass host memory in
// place): only on an in pointer to data (ptr), array or string as drafted; never on
// out/inout, an opaque pointer, a callback or a value. Before any question, so a
// draft reads in the order the shipped typemaps use.
void Generator::mark_const(json& j, CXType t) {
  CXType c = clang_getCanonicalType(t);
  bool c_const = false;
  if (c.kind == CXType_Pointer) c_const = clang_isConstQualifiedType(clang_getCanonicalType(clang_getPointeeType(c))) != 0;
  else if (c.kind == CXType_ConstantArray) c_const = const_elements(c);
  if (!c_const) return;
  if (j.value("dir", "in") != "in" || !j.contains("type")) return;
  const json& type = j.at("type");
  const bool data = type.is_object() ? type.contains("ptr") || type.contains("array") || type.contains("string")
                                     : type == json(string_type);
  if (!data) return;
  std::optional<json> asked;
  if (j.contains("$question")) {
    asked = j.at("$question");
    j.erase("$question");
  }
  j["const"] = true;
  if (asked) j["$question"] = *asked;
}

json Generator::signature(CXType fn_type, const std::vector<std::string>& names_in, const std::string& p,
                          bool is_callback, const std::string& fname, const ann::FunctionNotes* notes) {
  json sig;
  const int n = std::max(0, clang_getNumArgTypes(fn_type));
  std::vector<CXType> types;
  std::vector<std::string> names = names_in;
  for (int i = 0; i < n; ++i) {
    types.push_back(clang_getArgType(fn_type, static_cast<unsigned>(i)));
    if (static_cast<std::size_t>(i) >= names.size() || names[static_cast<std::size_t>(i)].empty())
      names.resize(std::max<std::size_t>(names.size(), static_cast<std::size_t>(i) + 1)),
          names[static_cast<std::size_t>(i)] = "arg" + std::to_string(i);
  }
  CXType rt = clang_getResultType(fn_type);
  CXType rc = clang_getCanonicalType(rt);
  std::optional<json> annotated;
  if (notes && !notes->returns.empty()) annotated = annotated_returns(rt, p + "/returns", fname, types, names, notes->returns);
  if (annotated) {
    sig["returns"] = *annotated;
  } else if (rc.kind == CXType_Pointer) {
    CXType pointee = clang_getCanonicalType(clang_getPointeeType(rc));
    json r;
    if (pointee.kind == CXType_Void || (pointee.kind == CXType_Record && clang_Type_getSizeOf(pointee) < 0) ||
        pointee.kind == CXType_FunctionProto) {
      sig["returns"] = "pointer";
      reasons.push_back(p + "/returns: " + spelling(rt) + ": an opaque pointer");
    } else if (is_char(pointee)) {
      r["type"] = string_name();
      r["free_with"] = "none";
      question(r, fname + " returns " + spelling(rt) + ": who frees it: nobody (\"none\": the library keeps it), "
                  "\"free\", or a function of the library? May it be NULL (\"nullable\")?");
      sig["returns"] = r;
    } else {
      r["type"] = json{{"ptr", type_expr(clang_getPointeeType(rt), p + "/returns")}};
      r["free_with"] = "none";
      question(r, fname + " returns " + spelling(rt) + ": one value, an array (of which count), or an opaque "
                  "pointer; and who frees it?");
      sig["returns"] = r;
    }
  } else {
    sig["returns"] = type_expr(rt, p + "/returns");
  }
  json params = json::array();
  for (std::size_t i = 0; i < types.size(); ++i) {
    const std::string ip = p + "/params/" + std::to_string(i);
    auto it = notes ? notes->params.find(names[i]) : std::map<std::string, std::vector<ann::Note>>::const_iterator{};
    if (notes && it != notes->params.end() && !it->second.empty())
      params.push_back(annotated_param(types[i], names[i], ip, types, names, i, fname, it->second));
    else
      params.push_back(param(types[i], names[i], ip, types, names, i, fname));
    mark_const(params.back(), types[i]);
  }
  if (!is_callback) compute_counts(params, p);
  if (!params.empty()) sig["params"] = params;
  if (!is_callback && clang_isFunctionTypeVariadic(fn_type)) sig["variadic_from"] = n;
  return sig;
}

// An `in` array counted by an `in` integer parameter that counts nothing else:
// the engine computes that count from the host's array ("value": {"count_of"}),
// so a host can never pass a count its data does not have (TYPEMAP.md: computed
// parameters, typemaps/README.md).
void Generator::compute_counts(json& params, const std::string& p) {
  std::map<std::string, int> uses;  // how many parameters name each count parameter
  for (const json& q : params) {
    if (!q.contains("type") || !q["type"].is_object()) continue;
    for (const char* key : {"count", "length", "capacity"})
      if (q["type"].contains(key) && q["type"][key].is_object() && q["type"][key].contains("param"))
        ++uses[q["type"][key]["param"].get<std::string>()];
  }
  for (const json& q : params) {
    const json& t = q.value("type", json());
    if (!t.is_object() || !t.contains("array") || q.value("dir", "in") != "in" || q.contains("$question")) continue;
    if (!t.contains("count") || !t["count"].is_object() || !t["count"].contains("param")) continue;
    const std::string count = t["count"]["param"].get<std::string>();
    if (uses[count] != 1) continue;
    for (std::size_t i = 0; i < params.size(); ++i) {
      json& c = params[i];
      if (c.value("name", "") != count || c.value("dir", "in") != "in" || c.contains("$question") || c.contains("value") ||
          !c["type"].is_string())
        continue;
      c["value"] = json{{"count_of", q["name"]}};
      reasons.push_back(p + "/params/" + std::to_string(i) + ": '" + count + "' counts the in array '" +
                        q["name"].get<std::string>() + "': computed by the engine from the host's array");
    }
  }
}

// ---- constants from #define NAME literal ---------------------------------------------------

void Generator::constant_from_macro(CXCursor c) {
  if (clang_Cursor_isMacroFunctionLike(c) || clang_Cursor_isMacroBuiltin(c)) return;
  CXToken* tokens = nullptr;
  unsigned n = 0;
  clang_tokenize(tu_, clang_getCursorExtent(c), &tokens, &n);
  std::vector<std::string> t;
  for (unsigned i = 0; i < n; ++i) t.push_back(str(clang_getTokenSpelling(tu_, tokens[i])));
  clang_disposeTokens(tu_, tokens, n);
  if (t.size() < 2) return;
  const std::string name = t[0];
  std::vector<std::string> body(t.begin() + 1, t.end());
  // Accept: LIT, -LIT, (LIT), (-LIT).
  if (body.size() >= 3 && body.front() == "(" && body.back() == ")") body = {body.begin() + 1, body.end() - 1};
  bool negative = false;
  if (body.size() == 2 && body[0] == "-") {
    negative = true;
    body.erase(body.begin());
  }
  if (body.size() != 1) return;
  std::string lit = body[0];
  if (lit.size() >= 2 && lit.front() == '"' && lit.back() == '"') {
    if (negative || lit.find('\\') != std::string::npos) return;  // escapes: by hand
    constants_[name] = lit.substr(1, lit.size() - 2);
    return;
  }
  while (!lit.empty() && (lit.back() == 'u' || lit.back() == 'U' || lit.back() == 'l' || lit.back() == 'L'))
    lit.pop_back();
  if (lit.empty() || !std::isdigit(static_cast<unsigned char>(lit[0]))) return;
  errno = 0;
  char* end = nullptr;
  if (lit.find_first_of(".eE") != std::string::npos && lit.rfind("0x", 0) != 0) {
    const double d = std::strtod(lit.c_str(), &end);
    if (*end == '\0' || ((*end == 'f' || *end == 'F') && end[1] == '\0')) constants_[name] = negative ? -d : d;
    return;
  }
  const unsigned long long v = std::strtoull(lit.c_str(), &end, 0);
  if (*end != '\0' || errno == ERANGE) return;
  if (negative) {
    if (v > static_cast<unsigned long long>(LLONG_MAX)) return;
    constants_[name] = -static_cast<long long>(v);
  } else {
    constants_[name] = v;
  }
}

// ---- the draft -------------------------------------------------------------------------------

json Generator::run() {
  CXCursor root = clang_getTranslationUnitCursor(tu_);
  name_typedefs(root);
  clang_visitChildren(
      root,
      [](CXCursor c, CXCursor, CXClientData data) {
        auto* self = static_cast<Generator*>(data);
        if (!self->in_headers(c)) return CXChildVisit_Continue;
        const std::string name = str(clang_getCursorSpelling(c));
        if (self->opt_.match && !std::regex_search(name, *self->opt_.match)) return CXChildVisit_Continue;
        switch (clang_getCursorKind(c)) {
          case CXCursor_FunctionDecl: {
            if (clang_Cursor_getStorageClass(c) == CX_SC_Static) break;  // inline helpers: not exported
            if (self->functions_.contains(name)) break;                    // redeclared
            std::vector<std::string> names;
            const int n = clang_Cursor_getNumArguments(c);
            for (int i = 0; i < n; ++i) {
              names.push_back(str(clang_getCursorSpelling(clang_Cursor_getArgument(c, static_cast<unsigned>(i)))));
              if (names.back().empty()) names.back() = "arg" + std::to_string(i);  // as signature() names it
            }
            const ann::FunctionNotes notes = ann::read(c, names);
            for (const std::string& why : notes.ignored) self->ignored.push_back("/functions/" + name + ": " + why);
            self->functions_[name] = self->signature(clang_getCursorType(c), names, "/functions/" + name, false, name, &notes);
            break;
          }
          case CXCursor_StructDecl: case CXCursor_UnionDecl:
            if (clang_isCursorDefinition(c) && !clang_Cursor_isAnonymous(c)) self->record(clang_getCursorType(c));
            break;
          case CXCursor_EnumDecl:
            if (!clang_isCursorDefinition(c)) break;
            if (clang_Cursor_isAnonymous(c) && !self->typedef_names_.count(str(clang_getCursorUSR(c)))) {
              clang_visitChildren(  // enum { A = 1 }: its items are constants
                  c,
                  [](CXCursor e, CXCursor, CXClientData d) {
                    if (clang_getCursorKind(e) == CXCursor_EnumConstantDecl)
                      (*static_cast<json*>(d))[str(clang_getCursorSpelling(e))] = clang_getEnumConstantDeclValue(e);
                    return CXChildVisit_Continue;
                  },
                  &self->constants_);
            } else {
              self->enumeration(clang_getCursorType(c));
            }
            break;
          case CXCursor_TypedefDecl: {
            CXType u = clang_getCanonicalType(clang_getTypedefDeclUnderlyingType(c));
            if (u.kind == CXType_Pointer) {
              CXType f = clang_getCanonicalType(clang_getPointeeType(u));
              if (f.kind == CXType_FunctionProto) self->callback(f, name);
            }
            break;
          }
          case CXCursor_MacroDefinition: self->constant_from_macro(c); break;
          default: break;
        }
        return CXChildVisit_Continue;
      },
      this);

  json draft;
  draft["$schema"] = "typemap.schema.json";
  draft["typemap"] = 1;
  json lib;
  lib["name"] = opt_.library;
  lib["load"] = json{{"linux", json::array({opt_.load.empty() ? "lib" + opt_.library + ".so" : opt_.load})}};
  draft["library"] = lib;
  if (uses_strings_) {
    json d;
    d["string"] = opt_.string_default.empty() ? "utf8" : opt_.string_default;
    if (opt_.string_default.empty())
      question(d, "which encoding does this library's text use (utf8, latin1, ascii, ...)? (or run generate with "
                  "--string-default)");
    draft["defaults"] = d;
  }
  if (!types_.empty()) draft["types"] = types_;
  if (!callbacks_.empty()) draft["callbacks"] = callbacks_;
  if (!functions_.empty()) draft["functions"] = functions_;
  if (!constants_.empty()) draft["constants"] = constants_;
  return draft;
}

// The draft's answers left as they are: questions about meaning (a handle's
// release, a flexible array's count field) do not change a layout.
json without_questions(json j) {
  if (j.is_object()) {
    j.erase("$question");
    for (auto& [k, v] : j.items()) v = without_questions(v);
  } else if (j.is_array()) {
    for (auto& v : j) v = without_questions(v);
  }
  return j;
}

// Loads the draft's types alone (they hold no questions unless a record does)
// and compares every record with the compiler: size, alignment, field offsets.
std::vector<std::string> check_layouts(const json& draft, const std::vector<RecordFacts>& records) {
  std::vector<std::string> problems;
  json types_only;
  types_only["typemap"] = 1;
  if (draft.contains("types")) types_only["types"] = without_questions(draft["types"]);
  Context ctx;
  LoadResult r = ctx.load_text(types_only.dump(), "draft");
  if (!r.ok()) {
    for (const Diagnostic& d : r.errors)
      if (d.message.rfind("question: ", 0) != 0) problems.push_back(d.pointer + ": " + d.message);
    return problems;
  }
  const TypeRegistry& reg = ctx.types();
  for (const RecordFacts& f : records) {
    const TypeId id = r.typemap->find_type(f.name);
    if (id == no_type) continue;
    const TypeDesc& d = reg.get(id);
    if (d.kind != Kind::struct_ && d.kind != Kind::union_) continue;
    const std::string where = "/types/" + f.name;
    if (d.size != static_cast<std::uint64_t>(f.size) || d.align != static_cast<std::uint64_t>(f.align))
      problems.push_back(where + ": the engine lays it out in " + std::to_string(d.size) + " bytes aligned to " +
                         std::to_string(d.align) + ", the compiler in " + std::to_string(f.size) + " aligned to " +
                         std::to_string(f.align));
    const auto& fields = d.as<RecordInfo>().fields;
    for (std::size_t i = 0; i < fields.size() && i < f.field_bits.size(); ++i) {
      const long long engine_bits = static_cast<long long>(fields[i].offset) * 8 + fields[i].bit_offset;
      if (engine_bits != f.field_bits[i].second)
        problems.push_back(where + "/" + (d.kind == Kind::struct_ ? "struct" : "union") + "/" + std::to_string(i) +
                           ": field '" + f.field_bits[i].first + "' is at bit " + std::to_string(engine_bits) +
                           " for the engine, at bit " + std::to_string(f.field_bits[i].second) + " for the compiler");
    }
  }
  return problems;
}

}  // namespace gen

using namespace gen;

int cmd_generate(const Args& args) {
  if (wants_help(args)) {
    std::printf(
        "usage: marshal generate HEADER... --library NAME [--load SONAME] [-I DIR] [-D X[=V]]\n"
        "                        [--match REGEX] [--string-default ENCODING] [-o FILE]\n"
        "\n"
        "Parses C headers with libclang and writes a draft typemap (stdout, or FILE):\n"
        "the functions, structs, unions, enums, function-pointer typedefs (callbacks)\n"
        "and simple #define constants declared in the HEADERs (--match: only names\n"
        "matching REGEX, and what they use). Layouts are exact: every record is\n"
        "checked against the compiler's. What C cannot say (out or inout? which\n"
        "count? who frees? callback scope? string encoding?) is a \"$question\" entry;\n"
        "`marshal check` lists them all, and the draft cannot be loaded until each\n"
        "is answered and its \"$question\" key removed. Annotations answer questions:\n"
        "SAL (_In_reads_(n), _Out_writes_to_(c, l), _Outptr_, _In_z_, ...; predefined as\n"
        "clang annotate attributes), GObject-Introspection doc comments ((out),\n"
        "(array length=n), (transfer full), (nullable), (scope async)) and doxygen\n"
        "@param[in|out|in,out]; one contradicting another or C's const is a question.\n"
        "What was inferred, and why, is printed on stderr.\n");
    return 0;
  }
  Options opt;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const char* what) -> std::optional<std::string> {
      if (i + 1 >= args.size()) {
        std::fprintf(stderr, "marshal generate: %s needs a value\n", what);
        return std::nullopt;
      }
      return args[++i];
    };
    if (a == "--library" || a == "--load" || a == "--match" || a == "--string-default" || a == "-o" || a == "-I" ||
        a == "-D") {
      auto v = value(a.c_str());
      if (!v) return 2;
      if (a == "--library") opt.library = *v;
      else if (a == "--load") opt.load = *v;
      else if (a == "--string-default") opt.string_default = *v;
      else if (a == "-o") opt.output = *v;
      else if (a == "-I" || a == "-D") opt.clang_args.push_back(a + *v);
      else {
        try {
          opt.match = std::regex(*v, std::regex::extended);
        } catch (const std::regex_error& e) {
          std::fprintf(stderr, "marshal generate: --match '%s': not a regular expression: %s\n", v->c_str(), e.what());
          return 2;
        }
      }
    } else if (a.rfind("-I", 0) == 0 || a.rfind("-D", 0) == 0) {
      opt.clang_args.push_back(a);
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "marshal generate: unknown option '%s' (see marshal generate --help)\n", a.c_str());
      return 2;
    } else {
      opt.headers.push_back(a);
    }
  }
  if (opt.headers.empty() || opt.library.empty()) {
    std::fprintf(stderr, "marshal generate: expected HEADER... --library NAME (see marshal generate --help)\n");
    return 2;
  }
  for (const std::string& h : opt.headers)
    if (!std::filesystem::is_regular_file(h)) {
      std::fprintf(stderr, "marshal generate: %s: no such header\n", h.c_str());
      return 1;
    }
  // One translation unit including every header, as C.
  std::string unit = ann::sal_prelude();
  for (const std::string& h : opt.headers)
    unit += "#include \"" + std::filesystem::absolute(h).string() + "\"\n";
  std::vector<const char*> cargs = {"-x", "c", "-std=gnu11"};
  for (const std::string& a : opt.clang_args) cargs.push_back(a.c_str());
  CXUnsavedFile file{"marshal-generate.c", unit.c_str(), static_cast<unsigned long>(unit.size())};
  CXIndex index = clang_createIndex(0, 0);
  CXTranslationUnit tu = nullptr;
  const CXErrorCode rc = clang_parseTranslationUnit2(index, "marshal-generate.c", cargs.data(), static_cast<int>(cargs.size()),
                                                     &file, 1,
                                                     CXTranslationUnit_DetailedPreprocessingRecord |
                                                         CXTranslationUnit_SkipFunctionBodies,
                                                     &tu);
  if (rc != CXError_Success || !tu) {
    std::fprintf(stderr, "marshal generate: libclang could not parse the headers (error %d)\n", int(rc));
    clang_disposeIndex(index);
    return 1;
  }
  int status = 0;
  for (unsigned i = 0; i < clang_getNumDiagnostics(tu); ++i) {
    CXDiagnostic d = clang_getDiagnostic(tu, i);
    if (clang_getDiagnosticSeverity(d) >= CXDiagnostic_Error) {
      std::fprintf(stderr, "marshal generate: %s\n",
                   str(clang_formatDiagnostic(d, clang_defaultDiagnosticDisplayOptions())).c_str());
      status = 1;
    }
    clang_disposeDiagnostic(d);
  }
  json draft;
  std::vector<std::string> reasons, ignored;
  std::vector<RecordFacts> records;
  if (status == 0) {
    Generator g(opt, tu);
    draft = g.run();
    reasons = std::move(g.reasons);
    ignored = std::move(g.ignored);
    records = std::move(g.records);
  }
  clang_disposeTranslationUnit(tu);
  clang_disposeIndex(index);
  if (status != 0) return status;

  for (const std::string& p : check_layouts(draft, records)) {
    std::fprintf(stderr, "marshal generate: layout differs from the compiler's: %s\n", p.c_str());
    status = 1;
  }
  for (const std::string& r : reasons) std::fprintf(stderr, "inferred: %s\n", r.c_str());
  for (const std::string& r : ignored) std::fprintf(stderr, "annotation not used: %s\n", r.c_str());
  const std::string text = draft.dump(1) + "\n";
  if (opt.output.empty()) {
    std::fwrite(text.data(), 1, text.size(), stdout);
  } else {
    std::ofstream out(opt.output, std::ios::binary);
    out << text;
    if (!out) {
      std::fprintf(stderr, "marshal generate: cannot write %s\n", opt.output.c_str());
      return 1;
    }
  }
  return status;
}

}  // namespace marshal::cli

#else  // built without libclang

#include <cstdio>

namespace marshal::cli {
using namespace marshal::engine;

int cmd_generate(const Args&) {
  std::fprintf(stderr,
               "marshal generate: this marshal was built without libclang (apt-get install libclang-dev, then "
               "reconfigure and rebuild)\n");
  return 1;
}

}  // namespace marshal::cli

#endif
