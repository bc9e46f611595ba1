// marshal engine: strict JSON reading for typemaps.
#include "typemap/json_reader.hpp"

#include <vector>

namespace marshal::engine {

std::string pointer_join(const std::string& base, std::string_view token) {
  std::string out = base;
  out += '/';
  for (char c : token) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}

std::string pointer_join(const std::string& base, std::size_t index) {
  return base + "/" + std::to_string(index);
}

namespace {

using json = nlohmann::ordered_json;

// Builds the DOM while tracking where it is, so an error can name its pointer.
class StrictBuilder {
 public:
  explicit StrictBuilder(json& root) : root_(root) {}

  bool null() { return value(json(nullptr)); }
  bool boolean(bool v) { return value(json(v)); }
  bool number_integer(json::number_integer_t v) { return value(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return value(json(v)); }
  bool number_float(json::number_float_t v, const std::string&) { return value(json(v)); }
  bool string(std::string& v) { return value(json(std::move(v))); }
  bool binary(json::binary_t&) { return fail(here(), "binary values are not JSON"); }

  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(std::string& k) {
    Frame& f = stack_.back();
    if (f.node->contains(k))
      return fail(pointer_join(f.pointer, k), "duplicate key '" + k + "'");
    f.key = k;
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) {
    if (!message_.empty()) return false;  // already failed in a callback
    error_position_ = position;
    std::string what = ex.what();
    // Strip nlohmann's "[json.exception.parse_error.101] parse error at line 1, column 2: " prefix.
    if (auto colon = what.find(": ", what.find("parse error")); colon != std::string::npos)
      what = what.substr(colon + 2);
    message_ = "invalid JSON: " + what;
    pointer_ = here();
    return false;
  }

  const std::string& message() const { return message_; }
  const std::string& pointer() const { return pointer_; }
  std::size_t error_position() const { return error_position_; }

 private:
  struct Frame {
    json* node;
    std::string pointer;
    std::string key;  // objects: the key being read
  };

  std::string here() const {
    if (stack_.empty()) return "";
    const Frame& f = stack_.back();
    if (f.node->is_object()) return f.key.empty() ? f.pointer : pointer_join(f.pointer, f.key);
    return pointer_join(f.pointer, f.node->size());
  }

  json* slot(std::string& where) {
    if (stack_.empty()) {
      where = "";
      return &root_;
    }
    Frame& f = stack_.back();
    where = here();
    if (f.node->is_object()) return &(*f.node)[f.key];
    f.node->push_back(nullptr);
    return &f.node->back();
  }

  bool value(json v) {
    std::string where;
    *slot(where) = std::move(v);
    return true;
  }

  bool open(json v) {
    if (stack_.size() >= max_json_depth)
      return fail(here(), "nesting is deeper than " + std::to_string(max_json_depth) + " levels");
    std::string where;
    json* s = slot(where);
    *s = std::move(v);
    stack_.push_back({s, where, {}});
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  bool fail(std::string pointer, std::string message) {
    pointer_ = std::move(pointer);
    message_ = std::move(message);
    return false;
  }

  json& root_;
  std::vector<Frame> stack_;
  std::string message_;
  std::string pointer_;
  std::size_t error_position_ = 0;
};

}  // namespace

JsonRead read_json(std::string_view text, const std::string& file) {
  JsonRead out;
  StrictBuilder builder(out.doc);
  bool ok = false;
  try {
    ok = json::sax_parse(text.begin(), text.end(), &builder, json::input_format_t::json, true, false);
  } catch (const std::exception& e) {
    out.error = Diagnostic{file, builder.pointer(), std::string("invalid JSON: ") + e.what()};
    return out;
  }
  if (!ok) {
    out.error = Diagnostic{file, builder.pointer(), builder.message().empty() ? "invalid JSON" : builder.message()};
    out.doc = nullptr;  // a partial document is never used
  }
  return out;
}

}  // namespace marshal::engine
