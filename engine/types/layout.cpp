// marshal engine: C layout of structs and unions.
// The rules, in the order they apply, follow GCC on x86-64/AArch64 System V and
// MSVC (GCC's ms_struct); each rule is cited where it is used.
#include "types/layout.hpp"

#include <algorithm>
#include <iterator>
#include <map>

namespace marshal::engine {

namespace {

std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return a <= 1 ? v : (v + a - 1) / a * a; }

struct Placed { std::uint64_t begin, end; std::size_t field; };

// Bytes a field occupies (bitfields: the bytes holding its bits).
std::pair<std::uint64_t, std::uint64_t> byte_span(const Field& f, const MemberShape& s) {
  if (f.is_bitfield) {
    std::uint64_t first = std::uint64_t{f.offset} * 8 + f.bit_offset;
    return {first / 8, (first + f.bits + 7) / 8};
  }
  return {f.offset, std::uint64_t{f.offset} + s.size};
}

// The bytes placed so far as disjoint ranges (touching ones merged): whether
// a member overlaps any is one lookup, so a record stays n log n in its
// fields; the member it overlaps is searched only to name it in the error.
class Coverage {
 public:
  // Whether [b, e) overlaps a placed range (a zero-size one [x, x) too, when b < x < e).
  bool overlaps(std::uint64_t b, std::uint64_t e) const {
    auto it = ranges_.lower_bound(e);  // ranges from here start at or after e
    if (it == ranges_.begin()) return false;
    return std::prev(it)->second > b;  // the last one starting before e ends last
  }
  void add(std::uint64_t b, std::uint64_t e) {
    auto it = ranges_.upper_bound(e);
    while (it != ranges_.begin()) {
      auto prev = std::prev(it);
      if (prev->second < b) break;
      b = std::min(b, prev->first);
      e = std::max(e, prev->second);
      it = ranges_.erase(prev);
    }
    ranges_.emplace(b, e);
  }

 private:
  std::map<std::uint64_t, std::uint64_t> ranges_;  // begin -> end
};

void place_bits(Field& f, std::uint64_t bitpos) {
  f.offset = static_cast<std::uint32_t>(bitpos / 8);
  f.bit_offset = static_cast<std::uint16_t>(bitpos % 8);
}

}  // namespace

std::optional<LayoutError> compute_layout(bool is_union, LayoutRule rule, std::uint32_t pack,
                                          std::vector<Field>& fields,
                                          const std::vector<MemberShape>& shapes,
                                          LayoutResult& out) {
  std::uint64_t bitpos = 0;      // next free bit (structs)
  std::uint64_t extent = 0;      // bytes used so far (max end)
  std::uint32_t max_align = 1;
  std::vector<Placed> placed;
  Coverage covered;  // the same bytes, for the overlap test

  // MSVC bitfield run: consecutive bitfields of the same type size share one unit
  // of that size; a different size, a non-bitfield or a zero-width field ends it.
  bool in_run = false;
  std::uint64_t run_start = 0, run_bits = 0, run_used = 0;
  std::uint32_t run_size = 0;
  auto close_run = [&] {
    if (in_run) bitpos = run_start + run_bits;
    in_run = false;
  };

  for (std::size_t i = 0; i < fields.size(); ++i) {
    Field& f = fields[i];
    const MemberShape& s = shapes[i];
    // #pragma pack(N): a member's alignment is min(natural, N).
    std::uint32_t fa = pack != 0 ? std::min(s.align, pack) : s.align;

    if (f.is_bitfield && f.bits > s.size * 8)
      return LayoutError{i, "bits", "bitfield width " + std::to_string(f.bits) + " exceeds its type (" +
                                std::to_string(s.size * 8) + " bits)"};

    if (is_union) {
      if (f.has_explicit_offset)
        return LayoutError{i, "offset", "'offset' is not allowed in a union (every member starts at 0)"};
      f.offset = 0;
      f.bit_offset = 0;
      std::uint64_t sz = f.is_bitfield ? (f.bits + 7) / 8 : s.size;
      extent = std::max(extent, sz);
      // SysV: unnamed zero-width bitfields do not affect alignment; all others do.
      if (!(f.is_bitfield && f.bits == 0)) max_align = std::max(max_align, fa);
      continue;
    }

    if (f.has_explicit_offset) {
      // Explicit layout (like .NET's FieldOffset): the offset must respect the
      // member's alignment and may not overlap another member.
      close_run();
      if (f.explicit_offset % fa != 0)
        return LayoutError{i, "offset", "offset " + std::to_string(f.explicit_offset) +
                                  " is not a multiple of the field's alignment " + std::to_string(fa)};
      f.offset = f.explicit_offset;
      f.bit_offset = 0;
      auto [b, e] = byte_span(f, s);
      if (s.size != 0 && covered.overlaps(b, e))
        for (const Placed& p : placed)
          if (b < p.end && p.begin < e)
          return LayoutError{i, "offset", "offset " + std::to_string(b) + " overlaps field '" + fields[p.field].name +
                                    "' (bytes " + std::to_string(p.begin) + " to " +
                                    std::to_string(p.end - 1) + ")"};
      placed.push_back({b, e, i});
      covered.add(b, e);
      bitpos = std::max(bitpos, e * 8);
      extent = std::max(extent, e);
      max_align = std::max(max_align, fa);
      continue;
    }

    if (f.is_bitfield && rule == LayoutRule::sysv) {
      const std::uint64_t unit = std::uint64_t{fa} * 8;
      if (f.bits == 0) {
        // A zero-width bitfield pads to the next boundary of its type's natural
        // alignment: #pragma pack does not cap it (GCC's layout_decl: "such bit-fields
        // are not influenced by any packing"; clang agrees). Unnamed, it does not
        // raise the record's alignment (x86-64 psABI).
        bitpos = round_up(bitpos, std::uint64_t{s.align} * 8);
        place_bits(f, bitpos);
        continue;
      }
      // GCC (PCC_BITFIELD_TYPE_MATTERS, no #pragma pack): a bitfield may not span
      // more alignment units of its type than the type itself has; else it moves
      // to the next unit. Under #pragma pack the bits are packed contiguously.
      if (pack == 0) {
        std::uint64_t type_bits = std::uint64_t{s.size} * 8;
        if ((bitpos % unit + f.bits + unit - 1) / unit > type_bits / unit) bitpos = round_up(bitpos, unit);
      }
      place_bits(f, bitpos);
      bitpos += f.bits;
      max_align = std::max(max_align, fa);
    } else if (f.is_bitfield) {  // MSVC
      if (f.bits == 0) {
        // MSVC: a zero-width bitfield ends the current run (ignored outside one).
        if (in_run) {
          close_run();
          bitpos = round_up(bitpos, std::uint64_t{fa} * 8);
        }
        place_bits(f, bitpos);
        continue;
      }
      if (!(in_run && run_size == s.size && run_used + f.bits <= run_bits)) {
        close_run();
        bitpos = round_up(bitpos, std::uint64_t{fa} * 8);
        in_run = true;
        run_start = bitpos;
        run_bits = std::uint64_t{s.size} * 8;
        run_used = 0;
        run_size = s.size;
      }
      place_bits(f, run_start + run_used);
      run_used += f.bits;
      max_align = std::max(max_align, fa);
      extent = std::max(extent, (run_start + run_bits) / 8);
      continue;
    } else {
      close_run();
      bitpos = round_up(bitpos, std::uint64_t{fa} * 8);
      place_bits(f, bitpos);
      bitpos += std::uint64_t{s.size} * 8;
      max_align = std::max(max_align, fa);
    }
    auto [b, e] = byte_span(f, s);
    placed.push_back({b, e, i});
    covered.add(b, e);
    extent = std::max(extent, e);
  }
  close_run();
  extent = std::max(extent, (bitpos + 7) / 8);

  // The size is a multiple of the record's alignment (tail padding).
  std::uint64_t size = round_up(extent, max_align);
  if (size > 0x7fffffffu) return LayoutError{fields.empty() ? 0 : fields.size() - 1, "", "record is larger than 2 GiB"};
  out.size = static_cast<std::uint32_t>(size);
  out.align = max_align;
  return std::nullopt;
}

std::vector<Hole> padding_holes(const std::vector<Field>& fields,
                                const std::vector<MemberShape>& shapes, std::uint32_t size) {
  std::vector<bool> used(size, false);
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (fields[i].is_bitfield && fields[i].bits == 0) continue;
    auto [b, e] = byte_span(fields[i], shapes[i]);
    for (std::uint64_t k = b; k < e && k < size; ++k) used[k] = true;
  }
  std::vector<Hole> holes;
  for (std::uint32_t k = 0; k < size;) {
    if (used[k]) { ++k; continue; }
    std::uint32_t start = k;
    while (k < size && !used[k]) ++k;
    holes.push_back({start, k - start});
  }
  return holes;
}

}  // namespace marshal::engine
