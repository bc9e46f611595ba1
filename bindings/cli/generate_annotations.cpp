// marshal generate: reading SAL, GObject-Introspection and doxygen annotations.
// SAL arrives as clang `annotate` attributes (the macros are predefined by
// sal_prelude()); GI and doxygen are parsed from the function's doc comment.
#include "tools.hpp"

#ifdef MARSHAL_HAVE_LIBCLANG

#include "generate_annotations.hpp"

#include <cctype>
#include <cstdlib>
#include <sstream>

namespace marshal::cli::annotations {
using namespace marshal::engine;

namespace {

std::string str(CXString s) {
  const char* c = clang_getCString(s);
  std::string out = c ? c : "";
  clang_disposeString(s);
  return out;
}

std::string trim(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

bool is_identifier(const std::string& s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}

// ---- SAL ---------------------------------------------------------------------------------
// The subset of Microsoft's sal.h that says what a typemap needs: direction, extent
// (one element, or a count of elements or bytes), what was written, NULL, text.

enum class Args { none, count, count_and_length };

struct SalMacro {
  const char* name;
  Args args;
  std::optional<Direction> dir;
  bool one;       // exactly one element (no count)
  bool bytes;     // the count is in bytes
  bool nullable;  // _opt_: NULL may be passed
  bool text;      // _z_: NUL-terminated
  bool outptr;    // _Outptr_: T ** written with one pointer
  bool returns;   // _Ret_: applies to the return value
};

constexpr Direction in = Direction::in, out = Direction::out, inout = Direction::inout;

const SalMacro sal_macros[] = {
    // name                          args                    dir    one    bytes  opt    z      outptr ret
    {"_In_",                         Args::none,             in,    true,  false, false, false, false, false},
    {"_In_opt_",                     Args::none,             in,    true,  false, true,  false, false, false},
    {"_In_z_",                       Args::none,             in,    true,  false, false, true,  false, false},
    {"_In_opt_z_",                   Args::none,             in,    true,  false, true,  true,  false, false},
    {"_In_reads_",                   Args::count,            in,    false, false, false, false, false, false},
    {"_In_reads_opt_",               Args::count,            in,    false, false, true,  false, false, false},
    {"_In_reads_bytes_",             Args::count,            in,    false, true,  false, false, false, false},
    {"_In_reads_bytes_opt_",         Args::count,            in,    false, true,  true,  false, false, false},
    {"_Out_",                        Args::none,             out,   true,  false, false, false, false, false},
    {"_Out_opt_",                    Args::none,             out,   true,  false, true,  false, false, false},
    {"_Out_writes_",                 Args::count,            out,   false, false, false, false, false, false},
    {"_Out_writes_opt_",             Args::count,            out,   false, false, true,  false, false, false},
    {"_Out_writes_bytes_",           Args::count,            out,   false, true,  false, false, false, false},
    {"_Out_writes_bytes_opt_",       Args::count,            out,   false, true,  true,  false, false, false},
    {"_Out_writes_z_",               Args::count,            out,   false, false, false, true,  false, false},
    {"_Out_writes_to_",              Args::count_and_length, out,   false, false, false, false, false, false},
    {"_Out_writes_to_opt_",          Args::count_and_length, out,   false, false, true,  false, false, false},
    {"_Out_writes_bytes_to_",        Args::count_and_length, out,   false, true,  false, false, false, false},
    {"_Inout_",                      Args::none,             inout, true,  false, false, false, false, false},
    {"_Inout_opt_",                  Args::none,             inout, true,  false, true,  false, false, false},
    {"_Inout_z_",                    Args::none,             inout, true,  false, false, true,  false, false},
    {"_Inout_updates_",              Args::count,            inout, false, false, false, false, false, false},
    {"_Inout_updates_opt_",          Args::count,            inout, false, false, true,  false, false, false},
    {"_Inout_updates_bytes_",        Args::count,            inout, false, true,  false, false, false, false},
    {"_Inout_updates_z_",            Args::count,            inout, false, false, false, true,  false, false},
    {"_Outptr_",                     Args::none,             out,   false, false, false, false, true,  false},
    {"_Outptr_opt_",                 Args::none,             out,   false, false, true,  false, true,  false},
    {"_Outptr_result_maybenull_",    Args::none,             out,   false, false, false, false, true,  false},
    {"_Outptr_opt_result_maybenull_", Args::none,            out,   false, false, true,  false, true,  false},
    {"_Ret_z_",                      Args::none,             std::nullopt, false, false, false, true, false, true},
    {"_Ret_maybenull_",              Args::none,             std::nullopt, false, false, true, false, false, true},
    {"_Ret_maybenull_z_",            Args::none,             std::nullopt, false, false, true, true, false, true},
    {"_Ret_notnull_",                Args::none,             std::nullopt, false, false, false, false, false, true},
};

// SAL macros that say nothing a typemap needs, defined empty so headers using them parse.
const char* const sal_silent[] = {"_Check_return_", "_Must_inspect_result_", "_Printf_format_string_", "_Reserved_",
                                  "_Use_decl_annotations_", "_Frees_ptr_", "_Frees_ptr_opt_"};

const SalMacro* find_sal(const std::string& name) {
  for (const SalMacro& m : sal_macros)
    if (name == m.name) return &m;
  return nullptr;
}

// "sal:_Out_writes_to_(cap,*len)" -> a note, or why not.
std::optional<Note> sal_note(const std::string& annotation, std::string& why_not) {
  const std::string body = annotation.substr(4);
  const std::size_t open = body.find('(');
  const std::string name = body.substr(0, open);
  const SalMacro* m = find_sal(name);
  if (!m) {
    why_not = "unknown SAL annotation " + body;
    return std::nullopt;
  }
  std::vector<std::string> args;
  if (open != std::string::npos && body.size() >= open + 2 && body.back() == ')')
    args = split_arguments(body.substr(open + 1, body.size() - open - 2));
  const std::size_t wanted = m->args == Args::none ? 0 : m->args == Args::count ? 1 : 2;
  if (args.size() != wanted) {
    why_not = "SAL " + body + ": expected " + std::to_string(wanted) + " arguments";
    return std::nullopt;
  }
  Note n;
  n.source = "SAL " + body;
  n.dir = m->dir;
  if (m->one) n.extent = Extent{};
  if (!args.empty()) n.extent = Extent{Extent::Kind::count, args[0], 0};
  if (args.size() == 2) n.length = args[1];
  n.bytes = m->bytes;
  n.nullable = m->nullable;
  n.text = m->text;
  n.outptr = m->outptr;
  return n;
}

// ---- GObject-Introspection ------------------------------------------------------------------
// "@name: (out caller-allocates) (array length=n): text" and "Returns: (transfer full): text".

// The annotation groups after "@name:" when they end in a colon, else none.
std::vector<std::string> gi_groups(const std::string& rest) {
  std::vector<std::string> groups;
  std::size_t i = 0;
  auto skip = [&] {
    while (i < rest.size() && std::isspace(static_cast<unsigned char>(rest[i]))) ++i;
  };
  skip();
  while (i < rest.size() && rest[i] == '(') {
    int depth = 0;
    std::size_t j = i;
    for (; j < rest.size(); ++j) {
      if (rest[j] == '(') ++depth;
      if (rest[j] == ')' && --depth == 0) break;
    }
    if (j >= rest.size()) return {};  // unbalanced: prose, not annotations
    groups.push_back(trim(rest.substr(i + 1, j - i - 1)));
    i = j + 1;
    skip();
  }
  if (groups.empty() || (i < rest.size() && rest[i] != ':')) return {};
  return groups;
}

// Adds one GI annotation to n; false when it is not one the draft reads.
bool gi_apply(const std::string& group, Note& n) {
  std::istringstream words(group);
  std::string name;
  words >> name;
  std::vector<std::string> opts;
  for (std::string w; words >> w;) opts.push_back(w);
  auto option = [&](const std::string& key) -> std::optional<std::string> {
    for (const std::string& o : opts)
      if (o.rfind(key + "=", 0) == 0) return o.substr(key.size() + 1);
    return std::nullopt;
  };
  if (name == "out" || name == "inout" || name == "in-out" || name == "in") {
    const Direction d = name == "out" ? Direction::out : name == "in" ? Direction::in : Direction::inout;
    if (n.dir && *n.dir != d)
      n.conflict = std::string("(") + direction_name(*n.dir) + ") and (" + direction_name(d) + ") in one comment";
    n.dir = d;
    for (const std::string& o : opts) {
      if (o == "caller-allocates") n.caller_allocates = true;
      else if (o != "callee-allocates") return false;
    }
    return true;
  }
  if (name == "array") {
    Extent e;
    if (auto len = option("length")) {
      e.kind = Extent::Kind::count;
      e.expr = *len;
    } else if (auto fixed = option("fixed-size")) {
      char* end = nullptr;
      const long long v = std::strtoll(fixed->c_str(), &end, 10);
      if (fixed->empty() || *end != '\0' || v <= 0) return false;
      e.kind = Extent::Kind::fixed;
      e.fixed = v;
    } else {
      // GI: an array with neither length nor fixed-size is zero-terminated.
      auto z = option("zero-terminated");
      if (z && *z != "1") return false;
      e.kind = Extent::Kind::zero_terminated;
    }
    n.extent = e;
    return true;
  }
  if (name == "transfer" && opts.size() == 1) {
    n.transfer = opts[0];
    return opts[0] == "full" || opts[0] == "none" || opts[0] == "container" || opts[0] == "floating";
  }
  if (name == "nullable" || name == "allow-none" || name == "optional") {
    n.nullable = true;
    return true;
  }
  if (name == "scope" && opts.size() == 1) {
    n.scope = opts[0];
    return opts[0] == "call" || opts[0] == "notified" || opts[0] == "async" || opts[0] == "forever";
  }
  // Annotations for other bindings' needs (names, closures, GTypes): nothing to read.
  for (const char* other : {"closure", "destroy", "element-type", "skip", "type", "not", "method", "constructor",
                            "rename-to", "virtual", "attributes", "default", "value", "finish-func", "sync-func",
                            "async-func", "emitter", "ref-func", "unref-func", "set-value-func", "get-value-func",
                            "foreign"})
    if (name == other) return true;
  return false;
}

// The doc comment's lines without the comment markers.
std::vector<std::string> comment_lines(const std::string& raw) {
  std::vector<std::string> out;
  std::istringstream in(raw);
  for (std::string l; std::getline(in, l);) {
    l = trim(l);
    if (l.rfind("/**", 0) == 0 || l.rfind("/*!", 0) == 0) l = l.substr(3);
    else if (l.rfind("///", 0) == 0 || l.rfind("//!", 0) == 0) l = l.substr(3);
    if (l.size() >= 2 && l.compare(l.size() - 2, 2, "*/") == 0) l.resize(l.size() - 2);
    l = trim(l);
    while (!l.empty() && l[0] == '*') l = trim(l.substr(1));
    out.push_back(l);
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

}  // namespace

const char* direction_name(Direction d) {
  switch (d) {
    case Direction::in: return "in";
    case Direction::out: return "out";
    case Direction::inout: return "inout";
  }
  return "in";
}

std::vector<std::string> split_arguments(const std::string& s) {
  std::vector<std::string> out;
  int depth = 0;
  std::string cur;
  for (char c : s) {
    if (c == '(' || c == '[') ++depth;
    if (c == ')' || c == ']') --depth;
    if (c == ',' && depth == 0) {
      out.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!trim(cur).empty() || !out.empty()) out.push_back(trim(cur));
  return out;
}

std::string sal_prelude() {
  std::string p = "/* marshal generate: SAL annotations kept as clang annotate attributes */\n";
  for (const SalMacro& m : sal_macros) {
    const std::string name = m.name;
    switch (m.args) {
      case Args::none:
        p += "#define " + name + " __attribute__((annotate(\"sal:" + name + "\")))\n";
        break;
      case Args::count:
        p += "#define " + name + "(n) __attribute__((annotate(\"sal:" + name + "(\" #n \")\")))\n";
        break;
      case Args::count_and_length:
        p += "#define " + name + "(n, m) __attribute__((annotate(\"sal:" + name + "(\" #n \",\" #m \")\")))\n";
        break;
    }
  }
  for (const char* s : sal_silent) p += std::string("#define ") + s + "\n";
  p += "#define _Success_(expr)\n";
  return p;
}

FunctionNotes read(CXCursor function, const std::vector<std::string>& names) {
  FunctionNotes notes;
  auto known = [&](const std::string& n) {
    for (const std::string& x : names)
      if (x == n) return true;
    return false;
  };
  // SAL: annotate attributes on the function (returns) and on each parameter.
  struct Ctx {
    FunctionNotes* notes;
    std::string param;  // empty: the function itself
  } ctx{&notes, {}};
  auto visit_attrs = [](CXCursor c, CXCursor, CXClientData data) {
    auto* x = static_cast<Ctx*>(data);
    if (clang_getCursorKind(c) != CXCursor_AnnotateAttr) return CXChildVisit_Continue;
    const std::string a = str(clang_getCursorSpelling(c));
    if (a.rfind("sal:", 0) != 0) return CXChildVisit_Continue;  // another tool's annotation
    std::string why_not;
    std::optional<Note> n = sal_note(a, why_not);
    const bool is_return = n && n->source.rfind("SAL _Ret_", 0) == 0;
    if (!n) x->notes->ignored.push_back(why_not);
    else if (x->param.empty() != is_return)
      x->notes->ignored.push_back(n->source + (x->param.empty() ? " on the function, not on a parameter"
                                                                  : " on parameter '" + x->param + "', not on the function"));
    else if (is_return) x->notes->returns.push_back(*n);
    else x->notes->params[x->param].push_back(*n);
    return CXChildVisit_Continue;
  };
  clang_visitChildren(function, visit_attrs, &ctx);
  const int n = clang_Cursor_getNumArguments(function);
  for (int i = 0; i < n && static_cast<std::size_t>(i) < names.size(); ++i) {
    ctx.param = names[static_cast<std::size_t>(i)];
    clang_visitChildren(clang_Cursor_getArgument(function, static_cast<unsigned>(i)), visit_attrs, &ctx);
  }

  // GI and doxygen: the doc comment.
  const std::string raw = str(clang_Cursor_getRawCommentText(function));
  for (const std::string& line : comment_lines(raw)) {
    // doxygen: @param[in] name, \param[in,out] a, b
    if ((line.rfind("@param", 0) == 0 || line.rfind("\\param", 0) == 0) && line.size() > 6 && line[6] == '[') {
      const std::size_t close = line.find(']');
      if (close == std::string::npos) continue;
      std::string dir;
      for (char c : line.substr(7, close - 7))
        if (!std::isspace(static_cast<unsigned char>(c))) dir += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      Note note;
      note.source = "doxygen " + line.substr(0, close + 1);
      if (dir == "in") note.dir = Direction::in;
      else if (dir == "out") note.dir = Direction::out;
      else if (dir == "in,out" || dir == "out,in" || dir == "inout") note.dir = Direction::inout;
      else {
        notes.ignored.push_back(note.source + ": not a direction (in, out, in,out)");
        continue;
      }
      // The names: identifiers separated by commas, up to the description.
      std::string rest = trim(line.substr(close + 1));
      std::vector<std::string> targets;
      std::size_t i = 0;
      while (i < rest.size()) {
        std::size_t j = i;
        while (j < rest.size() && (std::isalnum(static_cast<unsigned char>(rest[j])) || rest[j] == '_')) ++j;
        if (j == i) break;
        targets.push_back(rest.substr(i, j - i));
        while (j < rest.size() && rest[j] == ' ') ++j;
        if (j >= rest.size() || rest[j] != ',') break;
        ++j;
        while (j < rest.size() && rest[j] == ' ') ++j;
        i = j;
      }
      for (const std::string& t : targets) {
        if (known(t)) notes.params[t].push_back(note);
        else notes.ignored.push_back(note.source + " " + t + ": no parameter of that name (parameters: " + join(names) + ")");
      }
      continue;
    }
    // GI: @name: (annotations): text
    std::string target, rest;
    if (line.size() > 1 && line[0] == '@') {
      const std::size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      target = trim(line.substr(1, colon - 1));
      rest = line.substr(colon + 1);
      if (!is_identifier(target)) continue;  // "@...:" (varargs) and prose
    } else if (line.rfind("Returns:", 0) == 0 || line.rfind("Return value:", 0) == 0) {
      rest = line.substr(line.find(':') + 1);
    } else {
      continue;
    }
    const std::vector<std::string> groups = gi_groups(rest);
    if (groups.empty()) continue;
    Note note;
    std::string spelled;
    for (const std::string& g : groups) spelled += (spelled.empty() ? "(" : " (") + g + ")";
    note.source = "GI " + spelled;
    for (const std::string& g : groups)
      if (!gi_apply(g, note)) notes.ignored.push_back("GI (" + g + ") on " + (target.empty() ? "Returns" : "@" + target) +
                                                      ": not understood (an annotation generate does not read, or a value it does not accept)");
    const bool says_something = note.dir || note.extent || note.nullable || !note.transfer.empty() || !note.scope.empty();
    if (!says_something) continue;  // only (closure), (element-type ...) and the like
    if (target.empty()) {
      notes.returns.push_back(note);
    } else if (known(target)) {
      notes.params[target].push_back(note);
    } else {
      notes.ignored.push_back("GI @" + target + ": no parameter of that name (parameters: " + join(names) + ")");
    }
  }
  return notes;
}

}  // namespace marshal::cli::annotations

#endif  // MARSHAL_HAVE_LIBCLANG
