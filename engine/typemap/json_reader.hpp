// marshal engine: strict JSON reading for typemaps.
// nlohmann/json's SAX parser with a DOM builder that rejects duplicate keys and
// nesting deeper than max_depth, and anchors every error at a JSON Pointer.
#pragma once

#include "types/typemap.hpp"

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace marshal::engine {

inline constexpr std::size_t max_json_depth = 64;

struct JsonRead {
  nlohmann::ordered_json doc;  // keys in document order
  std::optional<Diagnostic> error;
};

JsonRead read_json(std::string_view text, const std::string& file);

// RFC 6901 escaping of one reference token, appended to a pointer.
std::string pointer_join(const std::string& base, std::string_view token);
std::string pointer_join(const std::string& base, std::size_t index);

}  // namespace marshal::engine
