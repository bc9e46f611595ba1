// marshal engine: host values and their JSON form.
#include "values/value.hpp"

#include "types/typemap.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string_view>

namespace marshal::engine {

// An empty box's destructor does nothing: the variant is made anew over it
// without one (ending a lifetime without its destructor is allowed when
// nothing depends on its effects, [basic.life]).
void Value::null_if_box_empty() noexcept {
  if (std::get_if<Boxed<ObjectRef>>(&v_)->empty()) ::new (&v_) Storage();
}

const Value* Value::field(std::string_view name) const {
  if (!is<Record>()) return nullptr;
  for (const auto& [k, v] : as<Record>())
    if (k == name) return &v;
  return nullptr;
}

std::string Value::describe() const {
  switch (type()) {
    case Type::null: return "null";
    case Type::boolean: return as<bool>() ? "true" : "false";
    case Type::int64: return "the integer " + std::to_string(as<std::int64_t>());
    case Type::uint64: return "the integer " + std::to_string(as<std::uint64_t>());
    case Type::real: {
      char buf[64];
      std::snprintf(buf, sizeof buf, "the number %.17g", as<double>());
      return buf;
    }
    case Type::string: return "a string";
    case Type::bytes: return "bytes";
    case Type::list: return "a list of " + std::to_string(as<List>().size());
    case Type::record: return "a record";
    case Type::address: return "an address";
    case Type::handle: return "a handle";
    case Type::native: return "native memory";
    case Type::function: return "a host function";
    case Type::callback: return "a callback";
    case Type::object: return "a native object";
    case Type::host_object: return "a host object";
  }
  return "?";
}

bool operator==(const Value& a, const Value& b) {
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Value::Type::null: return true;
    case Value::Type::boolean: return a.as<bool>() == b.as<bool>();
    case Value::Type::int64: return a.as<std::int64_t>() == b.as<std::int64_t>();
    case Value::Type::uint64: return a.as<std::uint64_t>() == b.as<std::uint64_t>();
    case Value::Type::real: return a.as<double>() == b.as<double>();
    case Value::Type::string: return a.as<std::string>() == b.as<std::string>();
    case Value::Type::bytes: return a.as<Bytes>().data == b.as<Bytes>().data;
    case Value::Type::list: return a.as<List>() == b.as<List>();
    case Value::Type::record: return a.as<Record>() == b.as<Record>();
    case Value::Type::address: return a.as<Address>().value == b.as<Address>().value;
    case Value::Type::handle: return a.as<std::shared_ptr<HandleBox>>() == b.as<std::shared_ptr<HandleBox>>();
    case Value::Type::native: return a.as<std::shared_ptr<NativeBox>>() == b.as<std::shared_ptr<NativeBox>>();
    case Value::Type::function: return a.as<std::shared_ptr<HostFunction>>() == b.as<std::shared_ptr<HostFunction>>();
    case Value::Type::callback: return a.as<std::shared_ptr<Callback>>() == b.as<std::shared_ptr<Callback>>();
    case Value::Type::object: return a.as<ObjectRef>().identity == b.as<ObjectRef>().identity;  // COM identity
    case Value::Type::host_object: return a.as<std::shared_ptr<HostObject>>() == b.as<std::shared_ptr<HostObject>>();
  }
  return false;
}

// ---- base64 (RFC 4648) --------------------------------------------------------------

static constexpr char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(const std::uint8_t* data, std::size_t n) {
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (std::size_t i = 0; i < n; i += 3) {
    std::uint32_t chunk = std::uint32_t{data[i]} << 16;
    if (i + 1 < n) chunk |= std::uint32_t{data[i + 1]} << 8;
    if (i + 2 < n) chunk |= data[i + 2];
    out += b64[(chunk >> 18) & 63];
    out += b64[(chunk >> 12) & 63];
    out += i + 1 < n ? b64[(chunk >> 6) & 63] : '=';
    out += i + 2 < n ? b64[chunk & 63] : '=';
  }
  return out;
}

bool base64_decode(std::string_view text, std::vector<std::uint8_t>& out) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.size() % 4 != 0) return false;
  out.clear();
  for (std::size_t i = 0; i < text.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      char c = text[i + k];
      if (c == '=' && i + 4 == text.size() && k >= 2) { v[k] = 0; ++pad; continue; }
      if (pad) return false;
      v[k] = val(c);
      if (v[k] < 0) return false;
    }
    std::uint32_t chunk = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out.push_back(static_cast<std::uint8_t>(chunk >> 16));
    if (pad < 2) out.push_back(static_cast<std::uint8_t>(chunk >> 8));
    if (pad < 1) out.push_back(static_cast<std::uint8_t>(chunk));
  }
  return true;
}

// ---- JSON -------------------------------------------------------------------------------

nlohmann::ordered_json Value::to_json() const {
  using oj = nlohmann::ordered_json;
  switch (type()) {
    case Type::null: return nullptr;
    case Type::boolean: return as<bool>();
    case Type::int64: return as<std::int64_t>();
    case Type::uint64: return as<std::uint64_t>();
    case Type::real: {
      // JSON has no infinities or NaN (nlohmann would print null): a one-key
      // object that from_json reads back as the same double.
      const double d = as<double>();
      if (std::isfinite(d)) return d;
      return oj{{"float", std::isnan(d) ? "nan" : d > 0 ? "inf" : "-inf"}};
    }
    case Type::string: return as<std::string>();
    case Type::bytes: return oj{{"base64", base64_encode(as<Bytes>().data.data(), as<Bytes>().data.size())}};
    case Type::list: {
      oj a = oj::array();
      for (const Value& v : as<List>()) a.push_back(v.to_json());
      return a;
    }
    case Type::record: {
      oj o = oj::object();
      for (const auto& [k, v] : as<Record>()) o[k] = v.to_json();
      return o;
    }
    case Type::address: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "0x%jx", static_cast<std::uintmax_t>(as<Address>().value));
      return oj{{"address", buf}};
    }
    case Type::handle: {
      const auto& h = as<std::shared_ptr<HandleBox>>();
      return oj{{"handle", h->type_name}, {"value", h->value}};
    }
    case Type::native: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "0x%jx", static_cast<std::uintmax_t>(reinterpret_cast<std::uintptr_t>(as<std::shared_ptr<NativeBox>>()->data())));
      return oj{{"native", buf}};
    }
    case Type::function: return oj{{"function", as<std::shared_ptr<HostFunction>>()->name}};
    case Type::callback: return oj{{"callback", "registered"}};
    case Type::object: {
      const ObjectRef& o = as<ObjectRef>();
      char buf[32];
      std::snprintf(buf, sizeof buf, "0x%jx", static_cast<std::uintmax_t>(reinterpret_cast<std::uintptr_t>(o.identity)));
      oj j{{"object", o.iface ? o.iface->name : std::string()}, {"identity", buf}};
      if (o.proxy) j["proxy"] = true;
      return j;
    }
    case Type::host_object: return oj{{"host_object", true}};  // objects/ know its name; values do not
  }
  return nullptr;
}

namespace {

// The one-key objects of the JSON form: {"base64": ...}, {"address": "0x..."}
// and {"float": "inf" | "-inf" | "nan"}. Anything else (a bad encoding, an
// address that does not fit) stays a record, which conversion then refuses
// with a message naming the fields.
bool json_form(const std::string& key, const Value& v, Value& out) {
  if (!v.is<std::string>()) return false;
  const std::string& text = v.as<std::string>();
  if (key == "base64") {
    Bytes b;
    if (!base64_decode(text, b.data)) return false;
    out = Value(std::move(b));
    return true;
  }
  if (key == "address") {
    if (text.size() < 3 || text.compare(0, 2, "0x") != 0) return false;
    std::uintptr_t a = 0;
    for (std::size_t i = 2; i < text.size(); ++i) {
      const char c = text[i];
      const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (digit < 0 || a > (UINTPTR_MAX >> 4)) return false;  // not hex, or more than an address holds
      a = (a << 4) | static_cast<std::uintptr_t>(digit);
    }
    out = Value(Address{a});
    return true;
  }
  if (key == "float") {
    if (text == "inf") out = Value(HUGE_VAL);
    else if (text == "-inf") out = Value(-HUGE_VAL);
    else if (text == "nan") out = Value(std::nan(""));
    else return false;
    return true;
  }
  return false;
}

std::string too_deep() {
  return "JSON nesting is deeper than " + std::to_string(max_value_depth) + " levels";
}

template <class J>
bool value_from(const J& j, std::size_t depth, Value& out, std::string& error) {
  switch (j.type()) {
    case J::value_t::null: out = Value(); return true;
    case J::value_t::boolean: out = Value(j.template get<bool>()); return true;
    case J::value_t::number_integer: out = Value(j.template get<std::int64_t>()); return true;
    case J::value_t::number_unsigned: out = Value(j.template get<std::uint64_t>()); return true;
    case J::value_t::number_float: out = Value(j.template get<double>()); return true;
    case J::value_t::string: out = Value(j.template get<std::string>()); return true;
    case J::value_t::array: {
      if (depth >= max_value_depth) { error = too_deep(); return false; }
      List l;
      l.reserve(j.size());
      for (const auto& e : j) {
        l.emplace_back();
        if (!value_from(e, depth + 1, l.back(), error)) return false;
      }
      out = Value(std::move(l));
      return true;
    }
    case J::value_t::object: {
      if (depth >= max_value_depth) { error = too_deep(); return false; }
      Record r;
      r.reserve(j.size());
      for (const auto& [k, v] : j.items()) {
        r.emplace_back(k, Value());
        if (!value_from(v, depth + 1, r.back().second, error)) return false;
      }
      if (r.size() == 1 && json_form(r[0].first, r[0].second, out)) return true;
      out = Value(std::move(r));
      return true;
    }
    case J::value_t::binary: case J::value_t::discarded: out = Value(); return true;
  }
  out = Value();
  return true;
}

// Builds a Value straight from nlohmann's SAX events: no JSON document, the
// depth checked as containers open, duplicate keys refused.
class ValueBuilder {
 public:
  using json = nlohmann::json;
  bool null() { return put(Value()); }
  bool boolean(bool b) { return put(Value(b)); }
  bool number_integer(json::number_integer_t i) { return put(Value(static_cast<std::int64_t>(i))); }
  bool number_unsigned(json::number_unsigned_t u) { return put(Value(static_cast<std::uint64_t>(u))); }
  bool number_float(json::number_float_t d, const std::string&) { return put(Value(d)); }
  bool string(std::string& text) { return put(Value(std::move(text))); }
  bool binary(json::binary_t&) { return fail("binary values are not JSON"); }
  bool start_array(std::size_t) { return open(false); }
  bool start_object(std::size_t) { return open(true); }
  bool key(std::string& k) {
    stack_.back().record.emplace_back(std::move(k), Value());
    return true;
  }
  bool end_array() {
    Value v(std::move(stack_.back().list));
    stack_.pop_back();
    return put(std::move(v));
  }
  bool end_object() {
    Record r = std::move(stack_.back().record);
    stack_.pop_back();
    if (r.size() > 1) {  // sorted names: a repeated key is found in n log n, not n^2
      std::vector<std::string_view> names;
      names.reserve(r.size());
      for (const auto& [k, _] : r) names.push_back(k);
      std::sort(names.begin(), names.end());
      if (auto it = std::adjacent_find(names.begin(), names.end()); it != names.end())
        return fail("the key '" + std::string(*it) + "' appears twice in one object");
    }
    Value v;
    if (r.size() == 1 && json_form(r[0].first, r[0].second, v)) return put(std::move(v));
    return put(Value(std::move(r)));
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) {
    std::string what = ex.what();
    if (auto colon = what.find(": ", what.find("parse error")); colon != std::string::npos) what = what.substr(colon + 2);
    return fail("not JSON at byte " + std::to_string(position) + ": " + what);
  }

  Value root;
  std::string error;

 private:
  struct Frame {
    bool is_record;
    List list;
    Record record;
  };
  bool put(Value v) {
    if (stack_.empty()) root = std::move(v);
    else if (stack_.back().is_record) stack_.back().record.back().second = std::move(v);
    else stack_.back().list.push_back(std::move(v));
    return true;
  }
  bool open(bool record) {
    if (stack_.size() >= max_value_depth) return fail(too_deep());
    stack_.push_back(Frame{record, {}, {}});
    return true;
  }
  bool fail(std::string message) {
    if (error.empty()) error = std::move(message);
    return false;
  }
  std::vector<Frame> stack_;
};

}  // namespace

bool Value::from_json(const nlohmann::json& j, Value& out, std::string& error) { return value_from(j, 0, out, error); }
bool Value::from_json(const nlohmann::ordered_json& j, Value& out, std::string& error) {
  return value_from(j, 0, out, error);
}

Value Value::from_json(const nlohmann::json& j) {
  Value v;
  std::string error;
  if (!value_from(j, 0, v, error)) throw std::invalid_argument(error);
  return v;
}
Value Value::from_json(const nlohmann::ordered_json& j) {
  Value v;
  std::string error;
  if (!value_from(j, 0, v, error)) throw std::invalid_argument(error);
  return v;
}

bool Value::parse_json(std::string_view text, Value& out, std::string& error) {
  ValueBuilder b;
  bool ok = false;
  try {
    ok = nlohmann::json::sax_parse(text.begin(), text.end(), &b, nlohmann::json::input_format_t::json, true, false);
  } catch (const std::exception& e) {
    error = std::string("not JSON: ") + e.what();
    return false;
  }
  if (!ok) {
    error = b.error.empty() ? "not JSON" : b.error;
    return false;
  }
  out = std::move(b.root);
  return true;
}

}  // namespace marshal::engine
