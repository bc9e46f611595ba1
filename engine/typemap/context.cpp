// marshal engine: the context, which owns the type registry and every typemap loaded into it.
#include "typemap/context.hpp"
#include "typemap/json_reader.hpp"
#include "typemap/loader.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace marshal::engine {

LoadResult Context::load_text(std::string_view text, const std::string& file) {
  std::lock_guard lock(load_mutex_);
  LoadResult result;
  JsonRead parsed = read_json(text, file);
  // Names and strings of the typemap inside a message are escaped: one error, one line.
  auto escaped = [](Diagnostic& d) {
    d.file = escape_for_message(d.file);
    d.pointer = escape_for_message(d.pointer);
    d.message = escape_for_message(d.message);
  };
  if (parsed.error) {
    result.errors.push_back(*parsed.error);
    escaped(result.errors.back());
    return result;
  }
  auto tm = std::make_unique<Typemap>();
  tm->file = file;
  detail::Loader loader(registry_, *tm, result.errors);
  loader.run(parsed.doc);
  for (Diagnostic& d : result.errors) escaped(d);
  if (!result.errors.empty()) return result;
  typemaps_.push_back(std::move(tm));
  result.typemap = typemaps_.back().get();
  return result;
}

TypeId Context::string_type(Encoding e) {
  std::lock_guard lock(load_mutex_);
  TypeDesc d;
  d.kind = Kind::string;
  d.size = sizeof(void*);
  d.align = alignof(void*);
  d.flags = flag_complete;
  StringInfo info;
  info.encoding = e;
  d.info = info;
  return registry_.intern("string:" + std::to_string(int(e)) + ":0:0:-:-", std::move(d));
}

TypeId Context::variadic_type(const Typemap& tm, const nlohmann::ordered_json& expr, std::string& error) {
  std::lock_guard lock(load_mutex_);
  const std::string key = std::to_string(reinterpret_cast<std::uintptr_t>(&tm)) + ":" + expr.dump();
  if (auto it = variadic_types_.find(key); it != variadic_types_.end()) {
    error = it->second.second;
    return it->second.first;
  }
  // Each distinct expression may add descriptors for good (the registry
  // never shrinks): a host that makes up new ones without end is stopped.
  if (variadic_types_.size() >= max_variadic_types) {
    error = "more than " + std::to_string(max_variadic_types) + " distinct variadic argument types in this context";
    return no_type;
  }
  std::vector<Diagnostic> errors;
  // parse_detached only reads the typemap; new descriptors go to the registry.
  detail::Loader loader(registry_, const_cast<Typemap&>(tm), errors);
  TypeId t = loader.parse_detached(expr);
  std::string why;
  if (!errors.empty()) {
    const Diagnostic& d = errors.front();
    why = escape_for_message((d.pointer.empty() ? "" : "type" + d.pointer + ": ") + d.message);
    t = no_type;
  }
  variadic_types_.emplace(key, std::make_pair(t, why));
  error = why;
  return t;
}

LoadResult Context::load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    LoadResult r;
    r.errors.push_back(Diagnostic{escape_for_message(path), "", std::string("cannot read the file: ") + std::strerror(errno)});
    return r;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return load_text(text.str(), path);
}

}  // namespace marshal::engine
