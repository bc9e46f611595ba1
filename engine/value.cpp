// marshal engine: host values and their JSON form.
#include "value.hpp"

#include "object.hpp"
#include "typemap.hpp"

#include <cstdio>

namespace marshal {

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
    case Value::Type::object: return identity_of(a.as<ObjectRef>()) == identity_of(b.as<ObjectRef>());  // COM identity
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
    case Type::real: return as<double>();
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
      std::snprintf(buf, sizeof buf, "0x%jx", static_cast<std::uintmax_t>(reinterpret_cast<std::uintptr_t>(identity_of(o))));
      oj j{{"object", o.iface ? o.iface->name : std::string()}, {"identity", buf}};
      if (o.proxy) j["proxy"] = true;
      return j;
    }
    case Type::host_object: return oj{{"host_object", as<std::shared_ptr<HostObject>>()->name()}};
  }
  return nullptr;
}

namespace {
template <class J>
Value value_from(const J& j) {
  switch (j.type()) {
    case J::value_t::null: return Value();
    case J::value_t::boolean: return Value(j.template get<bool>());
    case J::value_t::number_integer: return Value(j.template get<std::int64_t>());
    case J::value_t::number_unsigned: return Value(j.template get<std::uint64_t>());
    case J::value_t::number_float: return Value(j.template get<double>());
    case J::value_t::string: return Value(j.template get<std::string>());
    case J::value_t::array: {
      List l;
      l.reserve(j.size());
      for (const auto& e : j) l.push_back(value_from(e));
      return Value(std::move(l));
    }
    case J::value_t::object: {
      if (j.size() == 1 && j.contains("base64") && j.at("base64").is_string()) {
        Bytes b;
        if (base64_decode(j.at("base64").template get<std::string>(), b.data)) return Value(std::move(b));
      }
      if (j.size() == 1 && j.contains("address") && j.at("address").is_string()) {
        const std::string s = j.at("address").template get<std::string>();
        char* end = nullptr;
        unsigned long long a = std::strtoull(s.c_str(), &end, 16);
        if (s.rfind("0x", 0) == 0 && end && *end == '\0') return Value(Address{static_cast<std::uintptr_t>(a)});
      }
      Record r;
      for (const auto& [k, v] : j.items()) r.emplace_back(k, value_from(v));
      return Value(std::move(r));
    }
    case J::value_t::binary: case J::value_t::discarded: return Value();
  }
  return Value();
}
}  // namespace

Value Value::from_json(const nlohmann::json& j) { return value_from(j); }
Value Value::from_json(const nlohmann::ordered_json& j) { return value_from(j); }

}  // namespace marshal
