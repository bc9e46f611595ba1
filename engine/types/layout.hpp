// marshal engine: C layout of structs and unions.
// Computes offsets, bitfield positions, size and alignment once, by the System V
// (x86-64 / AArch64, GCC) rules or the MSVC rules, with #pragma pack(N).
#pragma once

#include "types/type_desc.hpp"

#include <optional>
#include <string>
#include <vector>

namespace marshal::engine {

// What layout needs to know of each member's type.
struct MemberShape {
  std::uint32_t size = 0;
  std::uint32_t align = 1;
  bool flexible = false;  // a trailing flexible array member (size 0)
};

struct LayoutError {
  std::size_t field;     // index of the offending field
  std::string key;       // the field's key at fault ("offset", "bits"), or "" for the field
  std::string message;
};

struct LayoutResult {
  std::uint32_t size = 0;
  std::uint32_t align = 1;
};

// Fills fields[i].offset / bit_offset and returns size and alignment, or the first
// impossible-layout error. shapes[i] describes fields[i]'s type.
std::optional<LayoutError> compute_layout(bool is_union, LayoutRule rule, std::uint32_t pack,
                                          std::vector<Field>& fields,
                                          const std::vector<MemberShape>& shapes,
                                          LayoutResult& out);

// A gap of padding bytes inside a laid-out record (for `marshal layout`).
struct Hole { std::uint32_t offset; std::uint32_t size; };
std::vector<Hole> padding_holes(const std::vector<Field>& fields,
                                const std::vector<MemberShape>& shapes, std::uint32_t size);

}  // namespace marshal::engine
