// marshal engine: typemap loader, top level.
// The passes over a typemap document (see loader.hpp), signatures of functions,
// callbacks and methods, interfaces, classes and constants (the context runs it: context.cpp).
#include "typemap/context.hpp"
#include "typemap/json_reader.hpp"
#include "abi/abi.hpp"
#include "typemap/loader.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

namespace marshal::engine {

std::string_view dir_name(Dir d) {
  switch (d) {
    case Dir::in: return "in";
    case Dir::out: return "out";
    case Dir::inout: return "inout";
  }
  return "?";
}

std::string_view measure_name(Computed::Measure m) {
  switch (m) {
    case Computed::Measure::none: return "none";
    case Computed::Measure::size_of: return "sizeof";
    case Computed::Measure::count_of: return "count_of";
    case Computed::Measure::bytes_of: return "bytes_of";
  }
  return "?";
}

std::string escape_for_message(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out;
}

std::optional<Guid> parse_guid(std::string_view t) {
  // 8-4-4-4-12 hex digits; bytes in the textual order (the wire order of Data4,
  // with Data1..3 stored little-endian as in COM's GUID struct).
  if (t.size() != 36 || t[8] != '-' || t[13] != '-' || t[18] != '-' || t[23] != '-') return std::nullopt;
  std::string hex;
  for (char c : t)
    if (c != '-') {
      if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
      hex += c;
    }
  std::uint8_t raw[16];
  for (int i = 0; i < 16; ++i) raw[i] = static_cast<std::uint8_t>(std::stoi(hex.substr(i * 2, 2), nullptr, 16));
  Guid g{};
  const int order[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
  for (int i = 0; i < 16; ++i) g[i] = raw[order[i]];
  return g;
}

namespace detail {

std::unordered_map<std::string_view, std::uint32_t> first_positions(const std::vector<std::string>& names) {
  std::unordered_map<std::string_view, std::uint32_t> index;
  index.reserve(names.size());
  for (std::size_t i = 0; i < names.size(); ++i) index.emplace(names[i], static_cast<std::uint32_t>(i));
  return index;
}

bool is_identifier(std::string_view s) {
  if (s.empty() || s.size() > 200) return false;
  if (!(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

std::string json_type_name(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return j.get<bool>() ? "true" : "false";
    case json::value_t::string: return "a string";
    case json::value_t::number_integer: case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::binary: case json::value_t::discarded: return "an invalid value";
  }
  return "?";
}

std::string did_you_mean(std::string_view got, const std::vector<std::string>& choices) {
  auto distance = [](std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t prev = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        std::size_t cur = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1,
                           prev + (std::tolower(a[i - 1]) == std::tolower(b[j - 1]) ? 0 : 1)});
        prev = cur;
      }
    }
    return row[b.size()];
  };
  std::string best;
  std::size_t best_d = std::max<std::size_t>(1, got.size() / 3) + 1;
  for (const auto& c : choices) {
    if (got.size() > 64) break;
    std::size_t d = distance(got, c);
    if (d < best_d) { best_d = d; best = c; }
  }
  return best.empty() ? "" : " (did you mean '" + best + "'?)";
}

// ---- diagnostics and strict reading ------------------------------------------------

void Loader::error(const std::string& pointer, std::string message) {
  if (!reported_.insert(pointer).second) return;  // one error per place
  errors_.push_back(Diagnostic{tm_.file, pointer, std::move(message)});
}

bool Loader::is_object(const json& j, const std::string& p, std::string_view what) {
  if (j.is_object()) return true;
  error(p, "expected " + std::string(what) + " (an object), got " + json_type_name(j));
  return false;
}

bool Loader::check_keys(const json& j, const std::string& p, std::initializer_list<std::string_view> allowed) {
  bool ok = true;
  for (const auto& [k, _] : j.items()) {
    if (std::find(allowed.begin(), allowed.end(), k) != allowed.end()) continue;
    std::string list;
    std::vector<std::string> choices;
    for (std::string_view a : allowed) {
      list += (list.empty() ? "" : ", ") + std::string(a);
      choices.emplace_back(a);
    }
    error(pointer_join(p, k), "unknown key '" + k + "'" + did_you_mean(k, choices) + " (expected: " + list + ")");
    ok = false;
  }
  return ok;
}

bool Loader::read_bool(const json& j, const std::string& p, bool& out) {
  if (!j.is_boolean()) {
    error(p, "expected true or false, got " + json_type_name(j));
    return false;
  }
  out = j.get<bool>();
  return true;
}

bool Loader::read_string(const json& j, const std::string& p, std::string& out) {
  if (!j.is_string() || j.get_ref<const std::string&>().empty()) {
    error(p, "expected a non-empty string, got " + (j.is_string() ? std::string("an empty string") : json_type_name(j)));
    return false;
  }
  // Names of libraries, symbols and functions reach messages at run time:
  // none of them has a control character.
  const std::string& text = j.get_ref<const std::string&>();
  if (std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    error(p, "'" + text + "' contains a control character");
    return false;
  }
  out = j.get<std::string>();
  return true;
}

bool Loader::read_name(const json& j, const std::string& p, std::string& out, std::string_view what) {
  if (!j.is_string()) {
    error(p, "expected a " + std::string(what) + " (a string), got " + json_type_name(j));
    return false;
  }
  if (!is_identifier(j.get_ref<const std::string&>())) {
    error(p, "'" + j.get<std::string>() + "' is not a valid " + std::string(what) +
                 " (letters, digits and _, not starting with a digit)");
    return false;
  }
  out = j.get<std::string>();
  return true;
}

// ---- top level ------------------------------------------------------------------------

namespace {
// A draft written by `marshal generate` marks what C cannot say with "$question"
// entries (typemaps/README.md): each is an error at its object's place, so a
// draft is the author's to-do list and is never used by mistake.
void find_questions(const json& j, const std::string& p, std::vector<std::pair<std::string, std::string>>& out) {
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      if (k == "$question") out.emplace_back(p, v.is_string() ? v.get<std::string>() : v.dump());
      else find_questions(v, pointer_join(p, k), out);
    }
  } else if (j.is_array()) {
    for (std::size_t i = 0; i < j.size(); ++i) find_questions(j[i], pointer_join(p, i), out);
  }
}
}  // namespace

void Loader::run(const json& root) {
  if (!root.is_object()) {
    error("", "a typemap is a JSON object, got " + json_type_name(root));
    return;
  }
  std::vector<std::pair<std::string, std::string>> questions;
  find_questions(root, "", questions);
  for (const auto& [where, text] : questions) error(where, "question: " + text);
  if (!questions.empty()) return;  // answer them first; the rest is checked then
  check_keys(root, "", {"$schema", "typemap", "library", "defaults", "types", "callbacks", "functions",
                        "interfaces", "classes", "constants"});
  if (!root.contains("typemap")) {
    error("/typemap", "missing (the format version: 1)");
  } else if (!root.at("typemap").is_number_integer() || root.at("typemap") != 1) {
    error("/typemap", "unsupported version " + root.at("typemap").dump() + " (this engine reads version 1)");
  }
  if (root.contains("$schema") && !root.at("$schema").is_string())
    error("/$schema", "expected a string (the schema's path or URL), got " + json_type_name(root.at("$schema")));
  if (root.contains("defaults")) read_defaults(root.at("defaults"), "/defaults");
  if (root.contains("library")) read_library(root.at("library"), "/library");

  declare_names(root);
  if (root.contains("types") && root.at("types").is_object()) fill_named_types(root.at("types"));
  complete_all();
  if (root.contains("callbacks")) read_callbacks(root.at("callbacks"));
  if (root.contains("interfaces")) read_interfaces(root.at("interfaces"));
  if (root.contains("functions")) read_functions(root.at("functions"));
  if (root.contains("classes")) read_classes(root.at("classes"));
  if (root.contains("constants")) read_constants(root.at("constants"));
  resolve_free_functions();
  for (const PendingValue& v : pending_values_) check_value(v.pointer, v.type, v.value);

  if (!tm_.functions.empty() && !tm_.library.present && !root.contains("library"))
    error("/library", "missing (functions need a library to load them from; {\"load\": {\"any\": [\"self\"]}} "
                      "means the host process)");
}

TypeId Loader::parse_detached(const json& j) {
  detached_ = true;
  for (const auto& [name, id] : tm_.types) {
    Named n;
    n.kind = "resolved";  // aliases are stored resolved
    n.id = id;
    n.state = Named::State::done;
    named_.emplace(name, std::move(n));
  }
  for (const auto& [name, i] : tm_.interfaces) interface_names_.insert(name);
  for (const auto& [name, c] : tm_.callbacks) callback_names_.insert(name);
  default_string_set_ = tm_.default_string.has_value();
  if (default_string_set_) default_string_ = *tm_.default_string;
  default_bool_ = tm_.default_bool;
  static const std::vector<std::string> no_names;
  TypeCtx ctx;
  ctx.where = TypeCtx::Where::param;
  ctx.names = &no_names;
  ctx.params = true;
  std::vector<CountRef> refs;
  const TypeId t = parse_type(j, "", ctx, refs);
  if (t == no_type) return no_type;
  for (TypeId id : to_complete_)
    if (!complete(id)) {
      error("", reg_.spell(id) + " cannot be laid out (larger than 2 GiB)");
      return no_type;
    }
  for (const PendingValue& v : pending_values_)
    if (!check_value(v.pointer, v.type, v.value)) return no_type;
  return errors_.empty() ? t : no_type;
}

void Loader::read_defaults(const json& j, const std::string& p) {
  if (!is_object(j, p, "defaults") || !check_keys(j, p, {"string", "bool", "layout"})) return;
  if (j.contains("string")) {
    default_string_set_ = read_enum<Encoding>(
        j.at("string"), pointer_join(p, "string"),
        {{"utf8", Encoding::utf8}, {"utf16", Encoding::utf16}, {"utf32", Encoding::utf32}, {"wchar", Encoding::wchar},
         {"latin1", Encoding::latin1}, {"ascii", Encoding::ascii}, {"bytes", Encoding::bytes}},
        default_string_);
    if (default_string_set_) tm_.default_string = default_string_;
  }
  if (j.contains("bool")) {
    const json& b = j.at("bool");
    if (b == "cbool" || b == "bool32") {
      TypeCtx ctx;
      std::vector<CountRef> refs;
      default_bool_ = parse_type(b, pointer_join(p, "bool"), ctx, refs);
      tm_.default_bool = default_bool_;
    } else {
      error(pointer_join(p, "bool"), "expected \"cbool\" or \"bool32\", got " + b.dump());
    }
  }
  if (j.contains("layout"))
    read_enum<LayoutRule>(j.at("layout"), pointer_join(p, "layout"),
                          {{"sysv", LayoutRule::sysv}, {"msvc", LayoutRule::msvc}}, tm_.default_layout);
}

void Loader::read_library(const json& j, const std::string& p) {
  if (!is_object(j, p, "the library ({\"name\": ..., \"load\": {...}})") || !check_keys(j, p, {"name", "load", "max_buffer", "guard", "isolate", "deadline_ms"})) return;
  bool ok = true;
  // extension: guard mode (guard.hpp) for every call of this library
  if (j.contains("guard")) read_bool(j.at("guard"), pointer_join(p, "guard"), tm_.library.guard);
  if (j.contains("isolate"))  // TYPEMAP.md "Process and host boundaries"
    read_enum<LibrarySpec::Isolate>(j.at("isolate"), pointer_join(p, "isolate"),
                                    {{"none", LibrarySpec::Isolate::none}, {"process", LibrarySpec::Isolate::process}},
                                    tm_.library.isolate);
  if (j.contains("deadline_ms")) {  // extension: the deadline of an isolated call
    const json& d = j.at("deadline_ms");
    if (d.is_number_integer() && (d.is_number_unsigned() || d.get<std::int64_t>() > 0) && d.get<std::uint64_t>() > 0 &&
        d.get<std::uint64_t>() <= 86400000)
      tm_.library.deadline_ms = d.get<std::uint64_t>();
    else
      error(pointer_join(p, "deadline_ms"), "expected a positive integer of milliseconds up to 86400000 (a day): an "
                                            "isolated call that takes longer is killed with its surrogate; got " + d.dump());
  }
  if (j.contains("max_buffer")) {  // extension: the largest buffer for one value (bounds.hpp)
    const json& m = j.at("max_buffer");
    if (m.is_number_integer() && (m.is_number_unsigned() || m.get<std::int64_t>() > 0) && m.get<std::uint64_t>() > 0 &&
        m.get<std::uint64_t>() <= SIZE_MAX)
      tm_.library.max_buffer = static_cast<std::size_t>(m.get<std::uint64_t>());
    else
      error(pointer_join(p, "max_buffer"), "expected a positive integer (bytes: the largest buffer the engine allocates, "
                                           "copies or reads for one value), got " + m.dump());
  }
  if (!j.contains("name")) { error(pointer_join(p, "name"), "missing (the library's name, for messages)"); ok = false; }
  else ok = read_string(j.at("name"), pointer_join(p, "name"), tm_.library.name);
  if (!j.contains("load")) {
    error(pointer_join(p, "load"), "missing (candidates per OS, e.g. {\"linux\": [\"libz.so.1\"]})");
    return;
  }
  const std::string lp = pointer_join(p, "load");
  const json& load = j.at("load");
  if (!is_object(load, lp, "load candidates per OS") ||
      !check_keys(load, lp, {"linux", "darwin", "windows", "freebsd", "any"}))
    return;
  if (load.empty()) { error(lp, "expected at least one OS (linux, darwin, windows, freebsd, any)"); return; }
  for (const auto& [os, list] : load.items()) {
    const std::string op = pointer_join(lp, os);
    if (!list.is_array() || list.empty()) {
      error(op, "expected a non-empty array of library names, got " + json_type_name(list));
      ok = false;
      continue;
    }
    std::vector<std::string> names;
    for (std::size_t i = 0; i < list.size(); ++i) {
      std::string n;
      if (read_string(list[i], pointer_join(op, i), n)) names.push_back(n);
      else ok = false;
    }
    tm_.library.load[os] = names;
  }
  tm_.library.present = ok;
}

void Loader::declare_names(const json& root) {
  static const std::vector<std::string> reserved = {"bool", "string", "cbool", "bool32", "pointer", "void"};
  if (root.contains("types")) {
    const json& types = root.at("types");
    if (is_object(types, "/types", "named types")) {
      for (const auto& [name, j] : types.items()) {
        const std::string p = pointer_join("/types", name);
        Named n;
        n.j = &j;
        n.pointer = p;
        if (!is_identifier(name)) {
          error(p, "'" + name + "' is not a valid type name (letters, digits and _, not starting with a digit)");
          n.state = Named::State::failed;
        } else if (reg_.find_primitive(name) != no_type ||
                   std::find(reserved.begin(), reserved.end(), name) != reserved.end()) {
          error(p, "'" + name + "' is a built-in type name; choose another name");
          n.state = Named::State::failed;
        } else if (!is_object(j, p, "a type definition ({\"struct\": ...}, {\"enum\": ...}, ...)")) {
          n.state = Named::State::failed;
        } else {
          for (std::string_view k : {"struct", "union", "enum", "handle", "alias"})
            if (j.contains(std::string(k))) {
              if (!n.kind.empty()) {
                error(p, "a type definition has exactly one kind key, found: " + n.kind + ", " + std::string(k));
                n.state = Named::State::failed;
              }
              n.kind = k;
            }
          if (n.kind.empty() && n.state != Named::State::failed) {
            std::string hint;
            for (std::string_view k : {"ptr", "array", "string", "callback", "interface", "bool"})
              if (j.contains(std::string(k))) hint = " (for a named " + std::string(k) + " write {\"alias\": {\"" + std::string(k) + "\": ...}})";
            error(p, "a type definition needs one kind key: struct, union, enum, handle or alias" + hint);
            n.state = Named::State::failed;
          }
        }
        if (n.state != Named::State::failed && n.kind != "alias") {
          TypeDesc d;
          d.kind = n.kind == "struct" ? Kind::struct_ : n.kind == "union" ? Kind::union_
                   : n.kind == "enum" ? Kind::enum_ : Kind::handle;
          d.name = name;
          if (d.kind == Kind::handle) d.info = HandleInfo{};
          n.id = reg_.add(std::move(d));
        }
        named_.emplace(name, std::move(n));
      }
    }
  }
  if (root.contains("callbacks") && is_object(root.at("callbacks"), "/callbacks", "callback signatures")) {
    for (const auto& [name, j] : root.at("callbacks").items()) {
      if (!is_identifier(name)) {
        error(pointer_join("/callbacks", name), "'" + name + "' is not a valid callback name (letters, digits and _)");
        continue;
      }
      callback_names_.insert(name);
      tm_.callbacks[name].name = name;
    }
  }
  if (root.contains("interfaces") && is_object(root.at("interfaces"), "/interfaces", "interfaces")) {
    for (const auto& [name, j] : root.at("interfaces").items()) {
      if (!is_identifier(name)) {
        error(pointer_join("/interfaces", name), "'" + name + "' is not a valid interface name (letters, digits and _)");
        continue;
      }
      interface_names_.insert(name);
      Interface& iface = tm_.interfaces[name];
      iface.name = name;
      TypeDesc d;
      d.kind = Kind::interface;
      d.name = name;
      d.size = sizeof(void*);
      d.align = alignof(void*);
      d.flags = flag_complete;
      d.info = InterfaceInfo{&iface};
      iface.type = reg_.add(std::move(d));
    }
  }
}

// ---- signatures -------------------------------------------------------------------------

void Loader::read_free_with(const json& j, const std::string& p, FreeWith& out) {
  std::string s;
  if (!read_string(j, p, s)) return;
  if (s == "free") { out.how = FreeWith::How::free; return; }
  if (s == "none") { out.how = FreeWith::How::none; return; }
  if (auto bang = s.find('!'); bang != std::string::npos) {
    out.library = s.substr(0, bang);
    out.name = s.substr(bang + 1);
    if (out.library.empty() || out.name.empty() || out.name.find('!') != std::string::npos) {
      error(p, "expected \"lib!symbol\" with both parts, got '" + s + "'");
      return;
    }
    out.how = FreeWith::How::symbol;
    return;
  }
  out.how = FreeWith::How::function;
  out.name = s;
  pending_free_.push_back({p, &out, p.size() >= 8 && p.substr(p.size() - 8) == "/release" ? "release" : "free_with"});
}

void Loader::read_returns(const json& j, const std::string& p, Signature& sig, bool is_callback,
                          std::vector<CountRef>& refs) {
  std::vector<std::string> names;
  for (const Param& prm : sig.params) names.push_back(prm.name);
  TypeCtx ctx;
  ctx.where = TypeCtx::Where::returns;
  ctx.names = &names;
  ctx.params = true;
  ctx.allow_void = true;
  const json* type = &j;
  std::string tp = p;
  bool wrapper = j.is_object() && j.contains("type");
  if (wrapper) {
    if (!check_keys(j, p, {"type", "free_with", "nullable"})) return;
    type = &j.at("type");
    tp = pointer_join(p, "type");
  }
  sig.returns = parse_type(*type, tp, ctx, refs);
  if (sig.returns == no_type) return;
  const TypeDesc& d = reg_.get(sig.returns);
  const bool owned_kind = d.kind == Kind::string || d.kind == Kind::array || d.kind == Kind::ptr;
  if (wrapper && j.contains("free_with")) {
    if (is_callback) {
      error(pointer_join(p, "free_with"), "a callback's return has no free_with (the host returns it)");
      return;
    }
    if (!owned_kind) {
      error(pointer_join(p, "free_with"), "free_with applies only to returned strings, arrays and pointers, not " +
                                              reg_.spell(sig.returns));
      return;
    }
    read_free_with(j.at("free_with"), pointer_join(p, "free_with"), sig.free_with);
  }
  if (wrapper && j.contains("nullable")) {
    if (read_bool(j.at("nullable"), pointer_join(p, "nullable"), sig.return_nullable) && sig.return_nullable &&
        !is_pointer_like(d) && d.kind != Kind::array)
      error(pointer_join(p, "nullable"), "only pointers can be null; the return type is " + reg_.spell(sig.returns));
  }
  if (is_callback && (d.kind == Kind::string || d.kind == Kind::array)) {
    error(tp, "a callback cannot return a " + std::string(kind_name(d.kind)) +
                  ": native code could not know when to free it (return a pointer or use an out parameter)");
    return;
  }
  if (!is_callback && owned_kind && sig.free_with.how == FreeWith::How::unset &&
      !(wrapper && j.contains("free_with"))) {
    error(p, "a returned " + std::string(kind_name(d.kind)) + " needs an owner: write {\"type\": ..., \"free_with\": "
             "\"free\" | \"none\" (borrowed) | \"lib!symbol\" | a function of this typemap}");
    return;
  }
  if (d.kind == Kind::string && d.as<StringInfo>().capacity.present())
    error(pointer_join(tp, "capacity"), "'capacity' is for caller-allocated out buffers, not return values");
}

void Loader::check_count_refs(const std::vector<CountRef>& refs, const Signature& sig) {
  for (const CountRef& r : refs) {
    if (r.source == Count::Source::return_value) {
      if (sig.returns != no_type && reg_.get(sig.returns).kind != Kind::integer)
        error(r.pointer, "count {\"return\": true} needs an integer return type (the function returns " +
                             reg_.spell(sig.returns) + ")");
      continue;
    }
    if (r.index >= sig.params.size() || sig.params[r.index].type == no_type) continue;
    TypeId t = sig.params[r.index].type;
    const TypeDesc& d = reg_.get(t);
    const bool integer = d.kind == Kind::integer || (d.kind == Kind::ptr && reg_.get(d.ref).kind == Kind::integer);
    if (!integer)
      error(r.pointer, "count refers to parameter '" + r.name + "' which is not an integer (it is " + reg_.spell(t) + ")");
  }
}

bool Loader::read_signature(const json& j, const std::string& p, Signature& sig,
                            std::initializer_list<std::string_view> extra_keys, bool is_callback) {
  std::vector<std::string_view> allowed = {"returns", "params", "callconv"};
  allowed.insert(allowed.end(), extra_keys.begin(), extra_keys.end());
  bool ok = true;
  for (const auto& [k, _] : j.items())
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      std::string list;
      std::vector<std::string> choices;
      for (auto a : allowed) { list += (list.empty() ? "" : ", ") + std::string(a); choices.emplace_back(a); }
      error(pointer_join(p, k), "unknown key '" + k + "'" + did_you_mean(k, choices) + " (expected: " + list + ")");
      ok = false;
    }
  sig.pointer = p;
  // Parameter names first: counts may refer to any parameter.
  const std::string pp = pointer_join(p, "params");
  const json empty = json::array();
  const json& params = j.contains("params") ? j.at("params") : empty;
  if (!params.is_array()) {
    error(pp, "expected an array of parameters, got " + json_type_name(params));
    return false;
  }
  std::vector<std::string> names(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::string ip = pointer_join(pp, i);
    if (!is_object(params[i], ip, "a parameter ({\"name\": ..., \"type\": ...})")) { ok = false; continue; }
    if (!params[i].contains("name")) { error(pointer_join(ip, "name"), "missing (every parameter has a name)"); ok = false; continue; }
    if (!read_name(params[i].at("name"), pointer_join(ip, "name"), names[i], "parameter name")) { ok = false; continue; }
  }
  const auto index = first_positions(names);
  for (std::size_t i = 0; i < params.size(); ++i)
    if (!names[i].empty())
      if (std::uint32_t k = index.at(names[i]); k != i) {
        error(pointer_join(pointer_join(pp, i), "name"),
              "duplicate parameter name '" + names[i] + "' (also parameter " + std::to_string(k) + ")");
        ok = false;
      }
  for (const auto& n : names) sig.params.push_back(Param{n});
  std::vector<CountRef> refs;
  if (!j.contains("returns")) {
    error(pointer_join(p, "returns"), "missing (the return type; write \"void\" for none)");
    ok = false;
  } else {
    read_returns(j.at("returns"), pointer_join(p, "returns"), sig, is_callback, refs);
    if (sig.returns == no_type) ok = false;
  }
  const bool int_return = sig.returns != no_type && reg_.get(sig.returns).kind == Kind::integer;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::string ip = pointer_join(pp, i);
    if (!params[i].is_object() || names[i].empty()) continue;
    const json& pj = params[i];
    Param& prm = sig.params[i];
    if (!check_keys(pj, ip, {"name", "type", "dir", "nullable", "const", "free_with", "value"})) {
      ok = false;
      continue;
    }
    if (pj.contains("dir") &&
        !read_enum<Dir>(pj.at("dir"), pointer_join(ip, "dir"), {{"in", Dir::in}, {"out", Dir::out}, {"inout", Dir::inout}}, prm.dir)) {
      ok = false;
      continue;
    }
    if (!pj.contains("type")) { error(pointer_join(ip, "type"), "missing (the parameter's type)"); ok = false; continue; }
    TypeCtx ctx;
    ctx.where = TypeCtx::Where::param;
    ctx.names = &names;
    ctx.index = &index;
    ctx.params = true;
    ctx.allow_return_count = !is_callback && prm.dir != Dir::in;
    const std::string tp = pointer_join(ip, "type");
    prm.type = parse_type(pj.at("type"), tp, ctx, refs);
    if (prm.type == no_type) { ok = false; continue; }
    const TypeDesc& d = reg_.get(prm.type);
    if (prm.dir != Dir::in && d.kind != Kind::ptr && d.kind != Kind::array && d.kind != Kind::string) {
      error(pointer_join(ip, "dir"), "an " + std::string(dir_name(prm.dir)) + " parameter must be a pointer, array or "
                                     "string (e.g. {\"ptr\": \"" + reg_.spell(prm.type) + "\"}), not " + reg_.spell(prm.type));
      ok = false;
      continue;
    }
    if (d.kind == Kind::string && prm.dir == Dir::out && !d.as<StringInfo>().capacity.present()) {
      error(tp, "an out string is a caller-allocated buffer and needs 'capacity' (N or {\"param\": NAME})");
      ok = false;
      continue;
    }
    if (d.kind == Kind::array) {
      const ArrayInfo& a = d.as<ArrayInfo>();
      if (prm.dir != Dir::in && a.count.source != Count::Source::constant && a.count.source != Count::Source::param) {
        error(pointer_join(tp, "count"), "an " + std::string(dir_name(prm.dir)) + " array's count is its capacity, "
              "known before the call: use N or {\"param\": NAME}, and {\"return\": true} in 'length'");
        ok = false;
        continue;
      }
      if (prm.dir == Dir::in && a.length.present()) {
        error(pointer_join(tp, "length"), "'length' applies only to out and inout arrays (what the callee wrote)");
        ok = false;
        continue;
      }
    }
    if (pj.contains("nullable")) {
      if (!read_bool(pj.at("nullable"), pointer_join(ip, "nullable"), prm.nullable)) { ok = false; continue; }
      if (prm.nullable && !is_pointer_like(d) && d.kind != Kind::array) {
        error(pointer_join(ip, "nullable"), "only pointers can be null; '" + prm.name + "' is " + reg_.spell(prm.type));
        ok = false;
        continue;
      }
    }
    if (pj.contains("const")) {
      // C's const: only data the callee reads through a pointer can be promised.
      const std::string cp = pointer_join(ip, "const");
      if (!read_bool(pj.at("const"), cp, prm.is_const)) { ok = false; continue; }
      if (prm.is_const && prm.dir != Dir::in) {
        error(cp, "'const' applies only to in parameters (the callee promises not to write through them); '" +
                      prm.name + "' is " + std::string(dir_name(prm.dir)));
        ok = false;
        continue;
      }
      if (prm.is_const && d.kind != Kind::ptr && d.kind != Kind::pointer && d.kind != Kind::array &&
          d.kind != Kind::string) {
        error(cp, "'const' applies only to pointers, arrays and strings (what the callee reads through a pointer); '" +
                      prm.name + "' is " + reg_.spell(prm.type));
        ok = false;
        continue;
      }
    }
    if (pj.contains("free_with")) {
      if (prm.dir == Dir::in || d.kind != Kind::ptr) {
        error(pointer_join(ip, "free_with"), "free_with on a parameter applies only to out/inout pointers to "
                                             "callee-allocated memory");
        ok = false;
        continue;
      }
      read_free_with(pj.at("free_with"), pointer_join(ip, "free_with"), prm.free_with);
    }
    if (pj.contains("value")) {
      if (is_callback) {
        error(pointer_join(ip, "value"), "a callback's parameters come from native code; \"value\" (computed by the "
                                         "engine) applies to functions and methods");
        ok = false;
        continue;
      }
      if (!read_computed(pj.at("value"), pointer_join(ip, "value"), ip, names, index, prm)) ok = false;
    }
  }
  (void)int_return;
  if (ok && !check_computed(sig, pp)) ok = false;
  check_count_refs(refs, sig);
  if (j.contains("callconv")) {
    CallConv cc{};
    const std::string cp = pointer_join(p, "callconv");
    if (read_enum<CallConv>(j.at("callconv"), cp,
                            {{"default", CallConv::default_}, {"stdcall", CallConv::stdcall},
                             {"fastcall", CallConv::fastcall}, {"thiscall", CallConv::thiscall}}, cc)) {
      ffi_abi abi;
      std::string why;
      if (ffi_abi_of(cc, abi, why)) sig.callconv = cc;
      else { error(cp, why); ok = false; }
    } else {
      ok = false;
    }
  }
  // What binding would refuse (abi.hpp), reported here so `check` refuses it too.
  const std::string rp = j.contains("returns") && j.at("returns").is_object() && j.at("returns").contains("type")
                             ? pointer_join(pointer_join(p, "returns"), "type")
                             : pointer_join(p, "returns");
  signature_refusals(reg_, sig, is_callback, [&](int i, const std::string& why) {
    error(i < 0 ? rp : pointer_join(pointer_join(pp, static_cast<std::size_t>(i)), "type"), why);
    ok = false;
  });
  return ok;
}

// ---- computed parameters (extension "value") --------------------------------------------

// A parameter's "value": {"sizeof": TYPE}, {"count_of": PARAM} or {"bytes_of":
// PARAM}. What needs the other parameters' types is checked by check_computed.
bool Loader::read_computed(const json& j, const std::string& p, const std::string& param_pointer,
                           const std::vector<std::string>& names,
                           const std::unordered_map<std::string_view, std::uint32_t>& index, Param& prm) {
  const char* expected = "{\"sizeof\": TYPE}, {\"count_of\": PARAMETER} or {\"bytes_of\": PARAMETER}";
  if (!j.is_object() || j.size() != 1) {
    if (j.is_object() && !j.empty() && !check_keys(j, p, {"sizeof", "count_of", "bytes_of"})) return false;
    error(p, std::string("expected exactly one of ") + expected + ", got " +
                 (j.is_object() ? std::to_string(j.size()) + " keys" : json_type_name(j)));
    return false;
  }
  if (!check_keys(j, p, {"sizeof", "count_of", "bytes_of"})) return false;
  const std::string key = j.begin().key();
  const json& v = j.begin().value();
  const std::string kp = pointer_join(p, key);
  if (prm.dir != Dir::in) {
    error(pointer_join(param_pointer, "dir"), "a computed parameter (\"value\") is an in parameter: the engine passes "
                                              "its value; it cannot be " + std::string(dir_name(prm.dir)));
    return false;
  }
  if (prm.type != no_type && reg_.get(prm.type).kind != Kind::integer) {
    error(pointer_join(param_pointer, "type"), "a computed parameter (\"value\") has an integer type (the engine "
                                               "passes a size or count), not " + reg_.spell(prm.type));
    return false;
  }
  if (key == "sizeof") {
    TypeCtx ctx;
    ctx.where = TypeCtx::Where::field;  // T[N] is inline storage, as C's sizeof sees it
    std::vector<CountRef> refs;
    const TypeId t = parse_type(v, kp, ctx, refs);
    if (t == no_type) return false;
    if (!complete(t)) {  // an inline array made here is laid out now
      error(kp, reg_.spell(t) + " cannot be laid out (larger than 2 GiB)");
      return false;
    }
    const TypeDesc& d = reg_.get(t);
    if (d.kind == Kind::void_ || !d.has(flag_complete) || d.has(flag_variable_size) || d.size == 0) {
      error(kp, reg_.spell(t) + " has no fixed size to pass (void, incomplete, zero-sized, or ending in a "
                                "flexible array member)");
      return false;
    }
    if (prm.type != no_type) {  // a constant: checked against the parameter's type here, not at every call
      const TypeDesc& pd = reg_.get(prm.type);
      const unsigned bits = pd.size * 8u - (pd.has(flag_signed) ? 1u : 0u);
      if (bits < 64 && d.size > (std::uint64_t{1} << bits) - 1) {
        error(kp, "sizeof " + reg_.spell(t) + " is " + std::to_string(d.size) + ", which does not fit parameter '" +
                      prm.name + "' (" + reg_.spell(prm.type) + ")");
        return false;
      }
    }
    prm.value.measure = Computed::Measure::size_of;
    prm.value.type = t;
    prm.value.size = d.size;
    return true;
  }
  if (!v.is_string()) {
    error(kp, "expected the name of the parameter to measure, got " + json_type_name(v));
    return false;
  }
  const std::string& target = v.get_ref<const std::string&>();
  auto at = index.find(target);
  if (at == index.end()) {
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    error(kp, key + " refers to parameter '" + target + "' which does not exist (parameters: " + list + ")" +
                  did_you_mean(target, names));
    return false;
  }
  if (target == prm.name) {
    error(kp, "parameter '" + prm.name + "' cannot measure itself");
    return false;
  }
  prm.value.measure = key == "count_of" ? Computed::Measure::count_of : Computed::Measure::bytes_of;
  prm.value.index = at->second;
  prm.value.name = target;
  return true;
}

// Once every parameter has its type: what a computed parameter measures must
// be host data whose extent it alone describes, and the engine must be able to
// evaluate computed parameters in some order (Signature::computed).
bool Loader::check_computed(Signature& sig, const std::string& params_pointer) {
  bool ok = true;
  std::vector<std::uint32_t> pending;
  for (std::uint32_t i = 0; i < sig.params.size(); ++i) {
    const Param& prm = sig.params[i];
    const Computed& c = prm.value;
    if (!c.present()) continue;
    pending.push_back(i);
    if (c.measure == Computed::Measure::size_of) continue;
    const std::string kp = pointer_join(pointer_join(pointer_join(params_pointer, i), "value"), measure_name(c.measure));
    const std::string key(measure_name(c.measure));
    const Param& t = sig.params[c.index];
    auto refuse = [&](const std::string& why) {
      error(kp, why);
      ok = false;
    };
    if (t.type == no_type) { ok = false; continue; }
    const TypeDesc& d = reg_.get(t.type);
    const std::string self = "{\"param\": \"" + prm.name + "\"}";
    if (t.dir == Dir::out) {
      refuse("parameter '" + t.name + "' is out: the host gives no data to measure");
    } else if (t.value.present()) {
      refuse("parameter '" + t.name + "' is computed itself; " + key + " measures an array or string the host gives");
    } else if (d.kind == Kind::array) {
      const ArrayInfo& a = d.as<ArrayInfo>();
      const std::uint32_t unit = reg_.get(d.ref).size;
      const bool own = a.count.source == Count::Source::param && a.count.index == i;
      if (!own && a.count.source != Count::Source::sentinel)
        refuse("array '" + t.name + "' is counted by " +
               (a.count.source == Count::Source::param ? "parameter '" + a.count.name + "'"
                : a.count.source == Count::Source::constant ? "the constant " + std::to_string(a.count.constant)
                                                             : std::string("something else")) +
               "; an array the engine measures is counted by what it computes: write \"count\": " + self);
      else if (own && c.measure == Computed::Measure::bytes_of && unit != 1)
        refuse("array '" + t.name + "' is counted by '" + prm.name + "' in elements of " + std::to_string(unit) +
               " bytes, but bytes_of is its size in bytes: use {\"count_of\": \"" + t.name + "\"}");
    } else if (d.kind == Kind::string) {
      const StringInfo& si = d.as<StringInfo>();
      const std::size_t unit = encoding_unit(si.encoding);
      if (si.terminator == Terminator::double_nul)
        refuse("string '" + t.name + "' is a double_nul list of strings, which has no one length to compute");
      else if (si.capacity.source == Count::Source::param && si.capacity.index == i)
        refuse("a cycle: the capacity of string '" + t.name + "' is parameter '" + prm.name +
               "', which the engine computes from that string");
      else if (si.length.present() && !(si.length.source == Count::Source::param && si.length.index == i))
        refuse("string '" + t.name + "' has its length from " +
               (si.length.source == Count::Source::param ? "parameter '" + si.length.name + "'" : std::string("elsewhere")) +
               "; a string the engine measures has no length or \"length\": " + self);
      else if (si.length.present() && c.measure == Computed::Measure::bytes_of && unit != 1)
        refuse("the length of string '" + t.name + "' counts code units of " + std::to_string(unit) +
               " bytes, but bytes_of is its size in bytes: use {\"count_of\": \"" + t.name + "\"}");
    } else {
      refuse(key + " measures an array or string parameter; '" + t.name + "' is " + reg_.spell(t.type) +
             " (for the size of a type use {\"sizeof\": TYPE})");
    }
  }
  if (!ok) return false;
  // Evaluation order: a parameter measuring a string whose capacity is another
  // computed parameter comes after that one. Anything else depends on nothing.
  auto depends_on = [&](std::uint32_t i) -> int {
    const Computed& c = sig.params[i].value;
    if (c.measure == Computed::Measure::size_of) return -1;
    const TypeDesc& d = reg_.get(sig.params[c.index].type);
    if (d.kind != Kind::string) return -1;
    const Count& cap = d.as<StringInfo>().capacity;
    if (cap.source != Count::Source::param || !sig.params[cap.index].value.present()) return -1;
    return static_cast<int>(cap.index);
  };
  std::vector<bool> done(sig.params.size(), false);
  sig.computed.clear();
  while (!pending.empty()) {
    std::vector<std::uint32_t> later;
    for (std::uint32_t i : pending) {
      const int dep = depends_on(i);
      if (dep < 0 || done[static_cast<std::size_t>(dep)]) {
        done[i] = true;
        sig.computed.push_back(i);
      } else {
        later.push_back(i);
      }
    }
    if (later.size() == pending.size()) {  // no progress: the rest depend on each other
      std::uint32_t i = later.front();
      std::string chain = sig.params[i].name;
      for (std::size_t k = 0; k < later.size(); ++k) {
        i = static_cast<std::uint32_t>(depends_on(i));
        chain += " -> " + sig.params[i].name;
        if (i == later.front()) break;
      }
      error(pointer_join(pointer_join(params_pointer, later.front()), "value"),
            "a cycle: each of these computed parameters measures a string whose capacity is the next: " + chain);
      return false;
    }
    pending = std::move(later);
  }
  return true;
}

void Loader::read_on_error(const json& j, const std::string& p, const Signature& sig, OnError& out) {
  if (!is_object(j, p, "{\"return\": VALUE}") || !check_keys(j, p, {"return"})) return;
  if (!j.contains("return")) { error(pointer_join(p, "return"), "missing (the value native code receives)"); return; }
  if (sig.returns == no_type) return;
  if (reg_.get(sig.returns).kind == Kind::void_) {
    error(pointer_join(p, "return"), "the signature returns void, so there is no value to return on error");
    return;
  }
  out.present = true;
  out.value = j.at("return");
  pending_values_.push_back({pointer_join(p, "return"), sig.returns, out.value});
}

void Loader::read_callbacks(const json& all) {
  if (!all.is_object()) return;  // reported by declare_names
  for (const auto& [name, j] : all.items()) {
    if (!callback_names_.count(name)) continue;
    const std::string p = pointer_join("/callbacks", name);
    CallbackSig& cb = tm_.callbacks.at(name);
    if (!is_object(j, p, "a callback signature")) continue;
    read_signature(j, p, cb, {"on_error", "delivery"}, true);
    if (j.contains("delivery"))
      read_enum<Delivery>(j.at("delivery"), pointer_join(p, "delivery"),
                          {{"inline", Delivery::inline_}, {"owner", Delivery::owner}}, cb.delivery);
    if (j.contains("on_error")) read_on_error(j.at("on_error"), pointer_join(p, "on_error"), cb, cb.on_error);
  }
}

void Loader::read_functions(const json& all) {
  if (!is_object(all, "/functions", "functions")) return;
  for (const auto& [name, j] : all.items()) {
    const std::string p = pointer_join("/functions", name);
    if (!is_identifier(name)) {
      error(p, "'" + name + "' is not a valid function name (letters, digits and _; put the export's name in 'symbol')");
      continue;
    }
    if (!is_object(j, p, "a function")) continue;
    Function& fn = tm_.functions[name];
    fn.name = name;
    fn.symbol = name;
    bool ok = read_signature(j, p, fn, {"symbol", "errno", "variadic_from", "check"}, false);
    if (j.contains("symbol")) {
      std::string s;
      if (read_string(j.at("symbol"), pointer_join(p, "symbol"), s)) {
        auto at = s.find('@');
        fn.symbol = s.substr(0, at);
        if (at != std::string::npos) {
          fn.version = s.substr(s.find_first_not_of('@', at) == std::string::npos ? s.size() : s.find_first_not_of('@', at));
          if (fn.symbol.empty() || fn.version.empty()) {
            error(pointer_join(p, "symbol"), "expected \"name\" or \"name@VERSION\", got '" + s + "'");
            ok = false;
          }
        }
      } else {
        ok = false;
      }
    }
    if (j.contains("errno")) ok = read_bool(j.at("errno"), pointer_join(p, "errno"), fn.capture_errno) && ok;
    if (j.contains("variadic_from")) {
      const json& v = j.at("variadic_from");
      if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::uint64_t>() > fn.params.size()) {
        error(pointer_join(p, "variadic_from"), "expected the index of the first variadic argument, from 0 to " +
                                                    std::to_string(fn.params.size()) + ", got " + v.dump());
        ok = false;
      } else {
        fn.variadic_from = v.get<int>();
      }
    }
    if (j.contains("check")) {
      const std::string cp = pointer_join(p, "check");
      const json& c = j.at("check");
      if (is_object(c, cp, "a check ({\"fails_when\": V, \"error\": \"errno\"})") &&
          check_keys(c, cp, {"fails_when", "error"})) {
        if (!c.contains("fails_when")) {
          error(pointer_join(cp, "fails_when"), "missing (the return value that means failure: an integer, \"null\", "
                                                "\"nonzero\" or \"negative\")");
        } else {
          const json& w = c.at("fails_when");
          const std::string wp = pointer_join(cp, "fails_when");
          const TypeDesc* rd = fn.returns == no_type ? nullptr : &reg_.get(fn.returns);
          if (w.is_number_integer()) {
            fn.check.when = Check::When::equals;
            fn.check.value = w.is_number_unsigned() ? static_cast<std::int64_t>(w.get<std::uint64_t>()) : w.get<std::int64_t>();
            if (rd && rd->kind != Kind::integer && rd->kind != Kind::enum_)
              error(wp, "an integer failure value needs an integer return type, not " + reg_.spell(fn.returns));
          } else if (w == "null") {
            fn.check.when = Check::When::null;
            if (rd && !is_pointer_like(*rd) && rd->kind != Kind::array)
              error(wp, "\"null\" needs a pointer return type, not " + reg_.spell(fn.returns));
          } else if (w == "nonzero" || w == "negative") {
            fn.check.when = w == "nonzero" ? Check::When::nonzero : Check::When::negative;
            if (rd && rd->kind != Kind::integer && rd->kind != Kind::enum_)
              error(wp, "\"" + w.get<std::string>() + "\" needs an integer return type, not " + reg_.spell(fn.returns));
          } else {
            error(wp, "expected an integer, \"null\", \"nonzero\" or \"negative\", got " + w.dump());
          }
        }
        if (c.contains("error")) {
          std::string how;
          if (c.at("error") != "errno") {
            error(pointer_join(cp, "error"), "expected \"errno\", got " + c.at("error").dump());
          } else if (!fn.capture_errno) {
            error(pointer_join(cp, "error"), "reporting errno needs \"errno\": true on the function");
          } else {
            fn.check.error_errno = true;
          }
        }
      }
    }
    (void)ok;
  }
}

void Loader::read_interfaces(const json& all) {
  if (!all.is_object()) return;
  static const Guid iunknown = *parse_guid("00000000-0000-0000-c000-000000000046");
  // Bases first: resolve each interface's base chain, rejecting cycles.
  std::map<std::string, std::string> base_of;
  std::set<std::string> bad;
  for (const auto& [name, j] : all.items()) {
    if (!interface_names_.count(name)) continue;
    const std::string p = pointer_join("/interfaces", name);
    Interface& iface = tm_.interfaces.at(name);
    if (!is_object(j, p, "an interface ({\"iid\": ..., \"base\": ..., \"methods\": [...]})") ||
        !check_keys(j, p, {"iid", "base", "methods"})) {
      bad.insert(name);
      continue;
    }
    if (j.contains("iid")) {
      std::string s;
      if (read_string(j.at("iid"), pointer_join(p, "iid"), s)) {
        iface.iid = parse_guid(s);
        if (!iface.iid) error(pointer_join(p, "iid"), "expected a GUID like \"6c1f0d3e-0b6e-4f5b-9a53-2f1c8f5e7a01\", got '" + s + "'");
      }
    }
    if (j.contains("base")) {
      std::string b;
      if (!read_string(j.at("base"), pointer_join(p, "base"), b)) { bad.insert(name); continue; }
      if (!interface_names_.count(b)) {
        std::vector<std::string> choices(interface_names_.begin(), interface_names_.end());
        error(pointer_join(p, "base"), "unknown interface '" + b + "'" + did_you_mean(b, choices));
        bad.insert(name);
        continue;
      }
      base_of[name] = b;
    }
  }
  // Order: an interface after its base; a chain that returns to itself is a
  // cycle. Each chain is walked once, without recursion: a chain may be as
  // long as the typemap is large.
  std::vector<std::string> order;
  std::map<std::string, int> state;  // 0 new, 1 on the chain being walked, 2 done
  for (const auto& start : interface_names_) {
    std::vector<std::string> chain;  // not yet done, from start toward its root
    bool ok = true;
    for (std::string n = start;;) {
      int& st = state[n];
      if (st == 2) { ok = !bad.count(n); break; }
      if (st == 1) {
        error(pointer_join(pointer_join("/interfaces", n), "base"), "interface '" + n + "' derives from itself (base cycle)");
        bad.insert(n);
        ok = false;
        break;
      }
      st = 1;
      chain.push_back(n);
      if (bad.count(n)) { ok = false; break; }
      auto it = base_of.find(n);
      if (it == base_of.end()) break;
      n = it->second;
    }
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {  // bases first
      state[*it] = 2;
      if (ok && !bad.count(*it)) order.push_back(*it);
      else { ok = false; bad.insert(*it); }
    }
  }

  std::map<std::string, std::string> iids;
  for (const auto& name : order) {
    const json& j = all.at(name);
    const std::string p = pointer_join("/interfaces", name);
    Interface& iface = tm_.interfaces.at(name);
    if (auto it = base_of.find(name); it != base_of.end()) {
      iface.base = &tm_.interfaces.at(it->second);
      iface.first_slot = iface.base->slot_count();
      iface.refcounted = iface.base->refcounted;
    }
    if (iface.iid) {
      std::string key(iface.iid->begin(), iface.iid->end());
      if (auto it = iids.find(key); it != iids.end())
        error(pointer_join(p, "iid"), "the same iid as interface '" + it->second + "'");
      iids[key] = name;
    }
    const bool is_iunknown = name == "IUnknown" || (iface.iid && *iface.iid == iunknown);
    if (!j.contains("methods")) {
      error(pointer_join(p, "methods"), "missing (the interface's methods in vtable order)");
      continue;
    }
    const std::string mp = pointer_join(p, "methods");
    const json& methods = j.at("methods");
    if (!methods.is_array()) { error(mp, "expected an array of methods, got " + json_type_name(methods)); continue; }
    for (std::size_t i = 0; i < methods.size(); ++i) {
      const std::string ip = pointer_join(mp, i);
      Method m;
      m.slot = iface.first_slot + static_cast<std::uint32_t>(i);
      if (!is_object(methods[i], ip, "a method ({\"name\": ..., \"returns\": ..., \"params\": [...]})")) continue;
      const json& mj = methods[i];
      if (!mj.contains("name")) { error(pointer_join(ip, "name"), "missing (every method has a name)"); continue; }
      if (!read_name(mj.at("name"), pointer_join(ip, "name"), m.name, "method name")) continue;
      read_signature(mj, ip, m, {"name", "hresult", "on_error"}, false);
      if (mj.contains("hresult") && read_bool(mj.at("hresult"), pointer_join(ip, "hresult"), m.hresult) && m.hresult &&
          m.returns != no_type) {
        const TypeDesc& r = reg_.get(m.returns);
        if (!(r.kind == Kind::integer && r.size == 4 && r.has(flag_signed)))
          error(pointer_join(ip, "hresult"), "hresult applies to methods returning int32, not " + reg_.spell(m.returns));
      }
      if (mj.contains("on_error")) read_on_error(mj.at("on_error"), pointer_join(ip, "on_error"), m, m.on_error);
      m.ordinal = tm_.method_count++;
      iface.methods.push_back(std::move(m));
    }
    if (is_iunknown) {
      iface.refcounted = true;
      const char* expected[] = {"QueryInterface", "AddRef", "Release"};
      bool shape = iface.base == nullptr && iface.methods.size() == 3;
      for (std::size_t i = 0; shape && i < 3; ++i) shape = iface.methods[i].name == expected[i];
      if (!shape) error(mp, "IUnknown must declare exactly QueryInterface, AddRef, Release, in that order, with no base");
    }
    if (iface.refcounted) reg_.edit(iface.type).flags |= flag_refcounted;
  }
  check_method_names(order);
}

// A method name is unique along its interface's whole base chain. The chains
// form a forest: walked depth first with the names declared on the path from
// the root, each method is checked once (deep chains stay linear).
void Loader::check_method_names(const std::vector<std::string>& order) {
  std::map<const Interface*, std::vector<const Interface*>> derived;
  std::vector<const Interface*> roots;
  for (const auto& name : order) {
    const Interface& i = tm_.interfaces.at(name);
    if (i.base) derived[i.base].push_back(&i);
    else roots.push_back(&i);
  }
  std::unordered_map<std::string_view, const Interface*> on_path;  // method name -> nearest declaring interface
  struct Frame {
    const Interface* iface;
    std::size_t next = 0;  // the next derived interface to visit
    std::vector<std::pair<std::string_view, const Interface*>> shadowed;  // restored when leaving
  };
  std::vector<Frame> stack;
  auto enter = [&](const Interface* i) {
    Frame f{i};
    for (const Method& m : i->methods) {
      auto [it, fresh] = on_path.try_emplace(m.name, i);
      if (!fresh) {
        error(pointer_join(m.pointer, "name"),
              "duplicate method name '" + m.name + "' (also in interface '" + it->second->name + "')");
        f.shadowed.emplace_back(m.name, it->second);
        it->second = i;
      } else {
        f.shadowed.emplace_back(m.name, nullptr);
      }
    }
    stack.push_back(std::move(f));
  };
  for (const Interface* root : roots) {
    enter(root);
    while (!stack.empty()) {
      Frame& top = stack.back();
      auto kids = derived.find(top.iface);
      if (kids != derived.end() && top.next < kids->second.size()) {
        enter(kids->second[top.next++]);
        continue;
      }
      for (auto it = top.shadowed.rbegin(); it != top.shadowed.rend(); ++it) {
        if (it->second) on_path[it->first] = it->second;
        else on_path.erase(it->first);
      }
      stack.pop_back();
    }
  }
}

void Loader::read_classes(const json& all) {
  if (!is_object(all, "/classes", "classes")) return;
  for (const auto& [name, j] : all.items()) {
    const std::string p = pointer_join("/classes", name);
    if (!is_identifier(name)) { error(p, "'" + name + "' is not a valid class name (letters, digits and _)"); continue; }
    if (!is_object(j, p, "a class ({\"create\": FN, \"interface\": I, \"threading\": ...})") ||
        !check_keys(j, p, {"create", "interface", "threading"}))
      continue;
    ClassDesc c;
    c.name = name;
    bool ok = true;
    for (std::string_view k : {"create", "interface", "threading"})
      if (!j.contains(std::string(k))) {
        error(pointer_join(p, k), k == "threading" ? "missing (where instances live: apartment, free, both or neutral)"
                                                   : "missing");
        ok = false;
      }
    if (!ok) continue;
    std::string fn, in;
    if (!read_string(j.at("create"), pointer_join(p, "create"), fn)) {
      ok = false;
    } else {
      auto it = tm_.functions.find(fn);
      if (it == tm_.functions.end()) {
        std::vector<std::string> choices;
        for (const auto& [n, _] : tm_.functions) choices.push_back(n);
        error(pointer_join(p, "create"), "unknown function '" + fn + "'" + did_you_mean(fn, choices));
        ok = false;
      } else {
        c.create = &it->second;
      }
    }
    if (!read_string(j.at("interface"), pointer_join(p, "interface"), in)) {
      ok = false;
    } else {
      auto it = tm_.interfaces.find(in);
      if (it == tm_.interfaces.end()) {
        std::vector<std::string> choices(interface_names_.begin(), interface_names_.end());
        error(pointer_join(p, "interface"), "unknown interface '" + in + "'" + did_you_mean(in, choices));
        ok = false;
      } else {
        c.iface = &it->second;
      }
    }
    ok = read_enum<Threading>(j.at("threading"), pointer_join(p, "threading"),
                              {{"apartment", Threading::apartment}, {"free", Threading::free},
                               {"both", Threading::both}, {"neutral", Threading::neutral}},
                              c.threading) && ok;
    if (ok && c.create != nullptr && c.iface != nullptr && c.create->returns != no_type) {
      // The factory yields the object as its return value or through one out pointer.
      auto yields = [&](TypeId t) { return t != no_type && reg_.get(t).kind == Kind::interface; };
      bool found = yields(c.create->returns);
      for (const Param& prm : c.create->params)
        if (prm.dir == Dir::out && prm.type != no_type && reg_.get(prm.type).kind == Kind::ptr && yields(reg_.get(prm.type).ref))
          found = true;
      if (!found) {
        error(pointer_join(p, "create"), "function '" + fn + "' must return {\"interface\": ...} or have an out "
                                         "{\"ptr\": {\"interface\": ...}} parameter to create objects");
        ok = false;
      }
    }
    if (ok) tm_.classes[name] = c;
  }
}

void Loader::read_constants(const json& all) {
  if (!is_object(all, "/constants", "constants")) return;
  for (const auto& [name, v] : all.items()) {
    const std::string p = pointer_join("/constants", name);
    if (!is_identifier(name)) { error(p, "'" + name + "' is not a valid constant name (letters, digits and _)"); continue; }
    if (!(v.is_number() || v.is_string() || v.is_boolean())) {
      error(p, "expected a number, string or boolean, got " + json_type_name(v));
      continue;
    }
    tm_.constants[name] = v;
  }
}

void Loader::resolve_free_functions() {
  for (const PendingFree& f : pending_free_) {
    auto it = tm_.functions.find(f.target->name);
    if (it == tm_.functions.end()) {
      error(f.pointer, f.what + " '" + f.target->name + "' is not a function of this typemap (use \"free\", " +
                           (f.what == "release" ? "" : "\"none\", ") + "\"lib!symbol\" or a function in /functions)");
      continue;
    }
    if (it->second.params.size() != 1)
      error(f.pointer, "function '" + f.target->name + "' named by " + f.what + " must take exactly one parameter (it takes " +
                           std::to_string(it->second.params.size()) + ")");
  }
}

}  // namespace detail

}  // namespace marshal::engine
