// marshal engine: text encodings.
#include "convert/strings.hpp"

#include <bit>
#include <cstdio>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace marshal::engine {

namespace {

// Next code point of UTF-8 text, or -1 for invalid input (overlong forms,
// surrogates and values past U+10FFFF are invalid).
long next_code_point(std::string_view s, std::size_t& i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    ++i;
    return c;
  }
  const int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : -1;  // continuation bytes
  if (n < 0 || c > 0xF4) return -1;
  if (i + static_cast<std::size_t>(n) >= s.size()) return -1;  // truncated sequence
  long cp = c & (0x3F >> n);
  for (int k = 1; k <= n; ++k) {
    const unsigned char cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (cc & 0x3F);
  }
  static const long min_for[] = {0, 0x80, 0x800, 0x10000};
  if (cp < min_for[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
  i += static_cast<std::size_t>(n) + 1;
  return cp;
}

void put_unit(std::vector<std::uint8_t>& out, std::uint32_t unit, std::size_t size) {
  std::uint8_t buf[4];
  if (size == 2) { std::uint16_t u = static_cast<std::uint16_t>(unit); std::memcpy(buf, &u, 2); }
  else if (size == 4) std::memcpy(buf, &unit, 4);
  else buf[0] = static_cast<std::uint8_t>(unit);
  out.insert(out.end(), buf, buf + size);
}

void put_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) out += static_cast<char>(cp);
  else if (cp < 0x800) { out += static_cast<char>(0xC0 | (cp >> 6)); out += static_cast<char>(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string hex_cp(long cp) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "U+%04lX", cp);
  return buf;
}

// ---- Fast paths: well-formed UTF-8 without NUL, validated and transcoded ----
// Plain ASCII goes a block at a time: 16 bytes with SSE2 (the x86-64
// baseline), else a portable 8-byte word. A block is loaded only while all of
// it lies inside the text; the rest goes one character at a time, branching
// on the lead byte (the rules of next_code_point, written out: overlongs,
// surrogates, values past U+10FFFF, truncated sequences and NUL are refused).

#if defined(__SSE2__)
constexpr std::size_t kBlock = 16;

inline __m128i load16(const unsigned char* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

// Bit k set when byte k of the block at p is not plain ASCII (0x80 and up, or NUL).
inline unsigned other_bytes(const unsigned char* p) {
  const __m128i v = load16(p);
  return static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(v, _mm_cmpeq_epi8(v, _mm_setzero_si128()))));
}

// The block at p as kBlock code units of U bytes at out (meaningful up to the
// first byte that is not plain ASCII; the caller counts only those).
template <std::size_t U> inline void widen_block(const unsigned char* p, std::byte* out) {
  const __m128i v = load16(p), zero = _mm_setzero_si128();
  const __m128i lo = _mm_unpacklo_epi8(v, zero), hi = _mm_unpackhi_epi8(v, zero);
  auto* o = reinterpret_cast<__m128i*>(out);
  if constexpr (U == 2) {
    _mm_storeu_si128(o, lo);
    _mm_storeu_si128(o + 1, hi);
  } else {
    _mm_storeu_si128(o, _mm_unpacklo_epi16(lo, zero));
    _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(lo, zero));
    _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(hi, zero));
    _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(hi, zero));
  }
}
#else
constexpr std::size_t kBlock = 8;

inline unsigned other_bytes(const unsigned char* p) {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  const std::uint64_t high = 0x8080808080808080ull, ones = 0x0101010101010101ull;
  if (!((w & high) || ((w - ones) & ~w & high))) return 0;  // the common case, any byte order
  unsigned bits = 0;
  for (std::size_t k = 0; k < kBlock; ++k)
    if (p[k] == 0 || p[k] >= 0x80) bits |= 1u << k;
  return bits;
}

template <std::size_t U> inline void widen_block(const unsigned char* p, std::byte* out) {
  for (std::size_t k = 0; k < kBlock; ++k) {
    if constexpr (U == 2) {
      const std::uint16_t u = p[k];
      std::memcpy(out + k * 2, &u, 2);
    } else {
      const std::uint32_t u = p[k];
      std::memcpy(out + k * 4, &u, 4);
    }
  }
}
#endif

// The well-formed sequence at p[i], a byte that is not plain ASCII (0x80 and
// up, or NUL): its length, and its code point in cp; 0 when it is not
// well-formed (NUL, a stray continuation, an overlong form, a surrogate, past
// U+10FFFF, truncated).
inline std::size_t other_sequence(const unsigned char* p, std::size_t n, std::size_t i, std::uint32_t& cp) {
  const unsigned c = p[i];
  auto cont = [&](std::size_t k) { return (p[i + k] & 0xC0) == 0x80; };
  if (c < 0xE0) {  // NUL, 0x80..0xC1 (a continuation, an overlong lead) fail here
    if (c < 0xC2 || i + 1 >= n || !cont(1)) return 0;
    cp = (c & 0x1Fu) << 6 | (p[i + 1] & 0x3Fu);
    return 2;
  }
  if (c < 0xF0) {
    if (i + 2 >= n || !cont(1) || !cont(2)) return 0;
    cp = (c & 0x0Fu) << 12 | (p[i + 1] & 0x3Fu) << 6 | (p[i + 2] & 0x3Fu);
    return cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF) ? 3 : 0;  // not overlong, not a surrogate
  }
  if (c > 0xF4 || i + 3 >= n || !cont(1) || !cont(2) || !cont(3)) return 0;
  cp = (c & 0x07u) << 18 | (p[i + 1] & 0x3Fu) << 12 | (p[i + 2] & 0x3Fu) << 6 | (p[i + 3] & 0x3Fu);
  return cp >= 0x10000 && cp <= 0x10FFFF ? 4 : 0;
}

// Code point cp as U-byte units at out[o] (two for UTF-16 past U+FFFF); U 0 writes nothing.
template <std::size_t U> inline void put_code_point(std::byte* out, std::size_t& o, std::uint32_t cp) {
  if constexpr (U == 2) {
    if (cp >= 0x10000) {
      const auto hi = static_cast<std::uint16_t>(0xD800 + ((cp - 0x10000) >> 10));
      std::memcpy(out + o++ * 2, &hi, 2);
      cp = 0xDC00 + ((cp - 0x10000) & 0x3FF);
    }
    const auto u = static_cast<std::uint16_t>(cp);
    std::memcpy(out + o * 2, &u, 2);
  } else if constexpr (U == 4) {
    std::memcpy(out + o * 4, &cp, 4);
  }
  ++o;
}

#if defined(__SSE2__)
inline __m128i bytes_at_least(__m128i v, unsigned char k) {  // 0xFF where v >= k (unsigned)
  return _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(static_cast<char>(k))), v);
}
inline __m128i bytes_equal(__m128i v, unsigned char k) { return _mm_cmpeq_epi8(v, _mm_set1_epi8(static_cast<char>(k))); }

// Checks p[0, n) as UTF-8 without NUL, 16 bytes at a time and without a branch
// per character, as far as whole blocks go: false when something there is not
// well-formed, else true with `done` at the character boundary where the rest
// is to be checked one character at a time. The rules, byte by byte (Unicode
// Table 3-7): a byte is a continuation (80..BF) exactly when one of the three
// before it leads a sequence that long (C0.., E0.., F0..); C0, C1 and F5..FF
// never occur; after E0 comes A0.., after ED ..9F, after F0 90.., after F4
// ..8F; no NUL.
bool check_blocks(const unsigned char* p, std::size_t n, std::size_t& done) {
  const __m128i zero = _mm_setzero_si128();
  // A block that ends in the middle of a sequence: bytes past these in its last three.
  const __m128i complete_max = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, static_cast<char>(0xEF),
                                             static_cast<char>(0xDF), static_cast<char>(0xBF));
  __m128i prev = zero, error = zero;
  auto check = [&](const __m128i v, std::size_t at) {  // the block at p + at
    error = _mm_or_si128(error, bytes_equal(v, 0));
    if (!_mm_movemask_epi8(v)) {  // ASCII: only a sequence left open by the block before is wrong
      error = _mm_or_si128(error, _mm_subs_epu8(prev, complete_max));
      prev = v;
      return;
    }
    // The bytes 1, 2 and 3 before each (loaded again; none before the text).
    const bool first = at == 0;
    const __m128i prev1 = first ? _mm_slli_si128(v, 1) : load16(p + at - 1);
    const __m128i prev2 = first ? _mm_slli_si128(v, 2) : load16(p + at - 2);
    const __m128i prev3 = first ? _mm_slli_si128(v, 3) : load16(p + at - 3);
    // The high bit of must_continue: C0.. one before, E0.. two before, F0.. three before.
    const __m128i must_continue =
        _mm_or_si128(_mm_or_si128(_mm_subs_epu8(prev1, _mm_set1_epi8(0x40)), _mm_subs_epu8(prev2, _mm_set1_epi8(0x60))),
                     _mm_subs_epu8(prev3, _mm_set1_epi8(0x70)));
    const __m128i is_continuation = _mm_cmpgt_epi8(_mm_set1_epi8(static_cast<char>(0xC0)), v);  // 80..BF (signed)
    error = _mm_or_si128(error, _mm_and_si128(_mm_xor_si128(must_continue, is_continuation),
                                              _mm_set1_epi8(static_cast<char>(0x80))));
    error = _mm_or_si128(error, bytes_equal(_mm_and_si128(v, _mm_set1_epi8(static_cast<char>(0xFE))), 0xC0));
    error = _mm_or_si128(error, bytes_at_least(v, 0xF5));
    // The second byte's range after E0, F0 (overlong), ED (a surrogate), F4 (past U+10FFFF).
    const __m128i low = _mm_or_si128(_mm_and_si128(bytes_equal(prev1, 0xE0), _mm_set1_epi8(static_cast<char>(0xA0))),
                                     _mm_and_si128(bytes_equal(prev1, 0xF0), _mm_set1_epi8(static_cast<char>(0x90))));
    const __m128i high_gap = _mm_or_si128(_mm_and_si128(bytes_equal(prev1, 0xED), _mm_set1_epi8(0x60)),
                                          _mm_and_si128(bytes_equal(prev1, 0xF4), _mm_set1_epi8(0x70)));
    error = _mm_or_si128(error, _mm_subs_epu8(low, v));  // v below its lowest
    error = _mm_or_si128(error, _mm_subs_epu8(v, _mm_xor_si128(high_gap, _mm_set1_epi8(-1))));  // v above its highest
    prev = v;
  };
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m128i a = load16(p + i), b = load16(p + i + 16), c = load16(p + i + 32), d = load16(p + i + 48);
    if (!_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d)))) {  // 64 ASCII bytes
      const __m128i low = _mm_min_epu8(_mm_min_epu8(a, b), _mm_min_epu8(c, d));
      error = _mm_or_si128(error, _mm_or_si128(bytes_equal(low, 0), _mm_subs_epu8(prev, complete_max)));
      prev = d;
    } else {
      check(a, i);
      check(b, i + 16);
      check(c, i + 32);
      check(d, i + 48);
    }
  }
  for (; i + 16 <= n; i += 16) check(load16(p + i), i);
  if (_mm_movemask_epi8(_mm_cmpeq_epi8(error, zero)) != 0xFFFF) return false;
  // The last block's open sequence, if any, is checked again whole with the tail.
  done = i;
  for (std::size_t back = 1; back <= 3 && back <= i; ++back) {
    const unsigned c = p[i - back];
    if ((c & 0xC0) == 0x80) continue;
    const std::size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (len > back) done = i - back;
    break;
  }
  return true;
}
#endif

// Well-formed UTF-8 without NUL at p[0, n) to U-byte code units at out (U 0:
// only checked, nothing written; 2: UTF-16; 4: UTF-32), which has room for n
// units. The number of units, or SIZE_MAX when the text is not well-formed.
// Whole blocks are written where only a part counts: they end inside the room
// (units written <= bytes read, and a block is taken only where kBlock bytes remain).
template <std::size_t U> std::size_t convert_utf8(const unsigned char* p, std::size_t n, std::byte* out) {
  std::size_t i = 0, o = 0;
  std::uint32_t cp = 0;
  // The character at i (plain ASCII or a sequence), written at o; false when
  // the text is not well-formed there.
  auto one_character = [&]() -> bool {
    if (p[i] != 0 && p[i] < 0x80) {
      put_code_point<U>(out, o, p[i++]);
      return true;
    }
    const std::size_t len = other_sequence(p, n, i, cp);
    if (!len) return false;
    put_code_point<U>(out, o, cp);
    i += len;
    return true;
  };
  while (i + kBlock <= n) {
    unsigned other = other_bytes(p + i);
    if (!other) {
      if constexpr (U != 0) widen_block<U>(p + i, out + o * U);
      i += kBlock;
      o += kBlock;
      continue;
    }
    if (std::popcount(other) > 8) {  // mostly other text: one character at a time to the block's end
      for (const std::size_t end = i + kBlock; i < end;)
        if (!one_character()) return SIZE_MAX;
      continue;
    }
    // The other bytes of the block, in order: the plain ASCII before each
    // widened (a block from there), each sequence decoded.
    std::size_t at_end = i;  // end of what is done
    do {
      const std::size_t at = i + static_cast<std::size_t>(std::countr_zero(other));
      if (at != at_end) {
        if constexpr (U != 0) {
          if (at_end + kBlock <= n) {
            widen_block<U>(p + at_end, out + o * U);
          } else {  // near the end of the text: the gap alone
            for (std::size_t k = at_end, w = o; k < at; ++k) put_code_point<U>(out, w, p[k]);
          }
        }
        o += at - at_end;
      }
      const std::size_t len = other_sequence(p, n, at, cp);
      if (!len) return SIZE_MAX;
      put_code_point<U>(out, o, cp);
      at_end = at + len;
      other = at_end - i < kBlock ? other & (~0u << (at_end - i)) : 0;
    } while (other);
    i = at_end;  // the next block starts here (ASCII left in this one is read again)
  }
  while (i < n)  // the tail, one character at a time
    if (!one_character()) return SIZE_MAX;
  return o;
}

// Native UTF-16 (U 2) or UTF-32 (U 4) units at p, valid, to UTF-8 at d (room
// for 3 bytes a UTF-16 unit, 4 a UTF-32 unit); the end of what was written,
// or nullptr at the first invalid unit (decode_text's own loop then says
// which). Plain ASCII goes 8 units at a time.
template <std::size_t U> char* wide_to_utf8(const std::uint8_t* p, std::size_t units, char* d) {
  auto unit_at = [&](std::size_t k) -> std::uint32_t {
    if constexpr (U == 2) {
      std::uint16_t u;
      std::memcpy(&u, p + k * 2, 2);
      return u;
    } else {
      std::uint32_t u;
      std::memcpy(&u, p + k * 4, 4);
      return u;
    }
  };
  for (std::size_t k = 0; k < units;) {
#if defined(__SSE2__)
    if (k + 8 <= units) {  // 8 units narrowed and stored; those before the first one past 0x7F count
      __m128i packed, ascii;  // ascii: 0xFFFF for each unit below 0x80
      if constexpr (U == 2) {
        const __m128i a = load16(p + k * 2);
        ascii = _mm_cmpeq_epi16(_mm_and_si128(a, _mm_set1_epi16(static_cast<short>(0xFF80))), _mm_setzero_si128());
        packed = _mm_packus_epi16(a, a);
      } else {
        const __m128i a = load16(p + k * 4), b = load16(p + k * 4 + 16), high = _mm_set1_epi32(~0x7F);
        ascii = _mm_packs_epi32(_mm_cmpeq_epi32(_mm_and_si128(a, high), _mm_setzero_si128()),
                                _mm_cmpeq_epi32(_mm_and_si128(b, high), _mm_setzero_si128()));
        const __m128i words = _mm_packs_epi32(a, b);  // (only the ASCII ones are kept)
        packed = _mm_packus_epi16(words, words);
      }
      _mm_storel_epi64(reinterpret_cast<__m128i*>(d), packed);
      const unsigned others = ~static_cast<unsigned>(_mm_movemask_epi8(ascii)) & 0xFFFF;  // two bits a unit
      const std::size_t plain = others ? static_cast<std::size_t>(std::countr_zero(others)) / 2 : 8;
      d += plain;
      k += plain;
      if (plain == 8) continue;
    }
#endif
    std::uint32_t cp = unit_at(k);
    if (cp < 0x80) {
      *d++ = static_cast<char>(cp);
      ++k;
      continue;
    }
    if (U == 2 && cp >= 0xD800 && cp <= 0xDBFF && k + 1 < units) {
      const std::uint32_t lo = unit_at(k + 1);
      if (lo >= 0xDC00 && lo <= 0xDFFF) {
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        ++k;
      }
    }
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return nullptr;
    if (cp < 0x800) {
      d[0] = static_cast<char>(0xC0 | (cp >> 6));
      d[1] = static_cast<char>(0x80 | (cp & 0x3F));
      d += 2;
    } else if (cp < 0x10000) {
      d[0] = static_cast<char>(0xE0 | (cp >> 12));
      d[1] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      d[2] = static_cast<char>(0x80 | (cp & 0x3F));
      d += 3;
    } else {
      d[0] = static_cast<char>(0xF0 | (cp >> 18));
      d[1] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      d[2] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      d[3] = static_cast<char>(0x80 | (cp & 0x3F));
      d += 4;
    }
    ++k;
  }
  return d;
}

}  // namespace

bool encode_text(Encoding e, Unmappable policy, std::string_view s, std::vector<std::uint8_t>& out, std::string& error) {
  const std::size_t unit = encoding_unit(e);
  out.reserve(out.size() + s.size() * unit);
  if (e == Encoding::bytes) {
    out.insert(out.end(), s.begin(), s.end());
    return true;
  }
  if (transcodes_utf8(e)) {  // well-formed text without NUL: straight into out; the rest below says why
    const std::size_t had = out.size();
    out.resize(had + s.size() * unit);
    const std::size_t units = transcode_utf8(s, unit, out.data() + had);
    out.resize(units == SIZE_MAX ? had : had + units * unit);
    if (units != SIZE_MAX) return true;
  }
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t at = i;
    long cp = next_code_point(s, i);
    if (cp < 0) {
      error = "invalid UTF-8 at byte " + std::to_string(at);
      return false;
    }
    switch (e) {
      case Encoding::utf8:
        out.insert(out.end(), s.begin() + static_cast<std::ptrdiff_t>(at), s.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      case Encoding::latin1: case Encoding::ascii: {
        const long limit = e == Encoding::latin1 ? 0xFF : 0x7F;
        if (cp > limit) {
          if (policy == Unmappable::error) {
            error = "character " + hex_cp(cp) + " at byte " + std::to_string(at) + " cannot be encoded in " +
                    std::string(encoding_name(e));
            return false;
          }
          cp = '?';
        }
        out.push_back(static_cast<std::uint8_t>(cp));
        break;
      }
      case Encoding::utf16:
        if (cp >= 0x10000) {
          put_unit(out, 0xD800 + ((cp - 0x10000) >> 10), 2);
          put_unit(out, 0xDC00 + ((cp - 0x10000) & 0x3FF), 2);
        } else {
          put_unit(out, static_cast<std::uint32_t>(cp), 2);
        }
        break;
      case Encoding::utf32: put_unit(out, static_cast<std::uint32_t>(cp), 4); break;
      case Encoding::wchar:
        if (unit == 2 && cp >= 0x10000) {
          put_unit(out, 0xD800 + ((cp - 0x10000) >> 10), 2);
          put_unit(out, 0xDC00 + ((cp - 0x10000) & 0x3FF), 2);
        } else {
          put_unit(out, static_cast<std::uint32_t>(cp), unit);
        }
        break;
      case Encoding::bytes: break;
    }
  }
  return true;
}

bool decode_text(Encoding e, const void* data, std::size_t units, std::string& out, std::string& error) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  const std::size_t unit = encoding_unit(e);
  auto unit_at = [&](std::size_t k) -> std::uint32_t {
    if (unit == 2) { std::uint16_t u; std::memcpy(&u, p + k * 2, 2); return u; }
    if (unit == 4) { std::uint32_t u; std::memcpy(&u, p + k * 4, 4); return u; }
    return p[k];
  };
  // The common case: ASCII text is the same bytes in UTF-8, Latin-1 and ASCII.
  if (unit == 1 && e != Encoding::bytes && plain_ascii(std::string_view(reinterpret_cast<const char*>(p), units))) {
    out.assign(reinterpret_cast<const char*>(p), units);
    return true;
  }
  switch (e) {
    case Encoding::bytes: out.assign(reinterpret_cast<const char*>(p), units); return true;
    case Encoding::utf8: {
      std::string_view s(reinterpret_cast<const char*>(p), units);
      if (utf8_well_formed(s)) {  // (a NUL inside, allowed here, takes the loop)
        out.assign(s);
        return true;
      }
      for (std::size_t i = 0; i < s.size();) {
        std::size_t at = i;
        if (next_code_point(s, i) < 0) {
          error = "the native string is not valid UTF-8 (at byte " + std::to_string(at) + ")";
          return false;
        }
      }
      out.assign(s);
      return true;
    }
    case Encoding::latin1: case Encoding::ascii:
      for (std::size_t k = 0; k < units; ++k) {
        if (e == Encoding::ascii && p[k] > 0x7F) {
          error = "the native string is not ASCII (byte " + std::to_string(k) + " is " + std::to_string(p[k]) + ")";
          return false;
        }
        put_utf8(out, p[k]);
      }
      return true;
    case Encoding::utf16: case Encoding::utf32: case Encoding::wchar: {
      const std::size_t had = out.size();
      out.resize(had + units * (unit == 2 ? 3 : 4));
      char* end = unit == 2 ? wide_to_utf8<2>(p, units, out.data() + had) : wide_to_utf8<4>(p, units, out.data() + had);
      out.resize(end ? static_cast<std::size_t>(end - out.data()) : had);
      if (end) return true;
      // An invalid unit: the loop says which, at which unit.
      for (std::size_t k = 0; k < units; ++k) {
        std::uint32_t cp = unit_at(k);
        if (unit == 2 && cp >= 0xD800 && cp <= 0xDBFF && k + 1 < units) {
          std::uint32_t lo = unit_at(k + 1);
          if (lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            ++k;
          }
        }
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
          error = "the native string holds an invalid code unit " + hex_cp(cp) + " at unit " + std::to_string(k);
          return false;
        }
        put_utf8(out, cp);
      }
      return true;
    }
  }
  return false;
}

std::size_t units_until_nul(Encoding e, const void* data, std::size_t max) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  const std::size_t unit = encoding_unit(e);
  if (unit == 1) {
    const void* z = max ? std::memchr(p, 0, max) : nullptr;
    return z ? static_cast<std::size_t>(static_cast<const std::uint8_t*>(z) - p) : max;
  }
  // Whole units, and none past the terminator (the memory after it may not be readable).
  if (unit == 2) {
    for (std::size_t k = 0; k < max; ++k) {
      std::uint16_t u;
      std::memcpy(&u, p + k * 2, 2);
      if (!u) return k;
    }
    return max;
  }
  if (unit == 4) {
    for (std::size_t k = 0; k < max; ++k) {
      std::uint32_t u;
      std::memcpy(&u, p + k * 4, 4);
      if (!u) return k;
    }
    return max;
  }
  for (std::size_t k = 0; k < max; ++k) {
    bool zero = true;
    for (std::size_t b = 0; b < unit; ++b) zero = zero && p[k * unit + b] == 0;
    if (zero) return k;
  }
  return max;
}

bool plain_ascii(std::string_view t) {
  const auto* p = reinterpret_cast<const unsigned char*>(t.data());
  const std::size_t n = t.size();
  std::size_t i = 0;
#if defined(__SSE2__)
  for (; i + 64 <= n; i += 64) {  // four blocks: any high bit, and the smallest byte (a NUL is 0)
    const __m128i a = load16(p + i), b = load16(p + i + 16), c = load16(p + i + 32), d = load16(p + i + 48);
    const __m128i high = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));
    const __m128i low = _mm_min_epu8(_mm_min_epu8(a, b), _mm_min_epu8(c, d));
    if (_mm_movemask_epi8(_mm_or_si128(high, _mm_cmpeq_epi8(low, _mm_setzero_si128())))) return false;
  }
#endif
  for (; i + kBlock <= n; i += kBlock)
    if (other_bytes(p + i)) return false;
  for (; i < n; ++i)
    if (p[i] == 0 || p[i] >= 0x80) return false;
  return true;
}

bool utf8_well_formed(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  std::size_t done = 0;
#if defined(__SSE2__)
  if (!check_blocks(p, text.size(), done)) return false;
#endif
  return convert_utf8<0>(p + done, text.size() - done, nullptr) != SIZE_MAX;
}

std::size_t transcode_utf8(std::string_view text, std::size_t unit, void* dst) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  auto* out = static_cast<std::byte*>(dst);
  switch (unit) {
    case 1:  // UTF-8 is its own form: checked, then copied once
      if (!utf8_well_formed(text)) return SIZE_MAX;
      if (n) std::memcpy(out, p, n);
      return n;
    case 2: return convert_utf8<2>(p, n, out);
    default: return convert_utf8<4>(p, n, out);
  }
}

}  // namespace marshal::engine
