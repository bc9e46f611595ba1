// marshal engine: text encodings.
#include "convert/strings.hpp"

#include <cstring>

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

}  // namespace

bool encode_text(Encoding e, Unmappable policy, std::string_view s, std::vector<std::uint8_t>& out, std::string& error) {
  const std::size_t unit = encoding_unit(e);
  out.reserve(out.size() + s.size() * unit);
  if (e == Encoding::bytes) {
    out.insert(out.end(), s.begin(), s.end());
    return true;
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
    case Encoding::utf16: case Encoding::utf32: case Encoding::wchar:
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
  return false;
}

std::size_t units_until_nul(Encoding e, const void* data, std::size_t max) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  const std::size_t unit = encoding_unit(e);
  for (std::size_t k = 0; k < max; ++k) {
    bool zero = true;
    for (std::size_t b = 0; b < unit; ++b) zero = zero && p[k * unit + b] == 0;
    if (zero) return k;
  }
  return max;
}

bool plain_ascii(std::string_view t) {
  const char* p = t.data();
  const std::size_t n = t.size();
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    if ((w & 0x8080808080808080ull) || ((w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull)) return false;
  }
  for (; i < n; ++i)
    if (p[i] == 0 || static_cast<unsigned char>(p[i]) >= 0x80) return false;
  return true;
}

bool utf8_well_formed(std::string_view text) {
  if (plain_ascii(text)) return true;
  for (std::size_t i = 0; i < text.size();)
    if (next_code_point(text, i) <= 0) return false;  // invalid, or a NUL
  return true;
}

std::size_t transcode_utf8(std::string_view text, std::size_t unit, void* dst) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  auto* out = static_cast<std::byte*>(dst);
  if (plain_ascii(text)) {  // the common case: one copy, or one widening loop
    if (unit == 1) {
      std::memcpy(out, p, n);
    } else {
      for (std::size_t i = 0; i < n; ++i) {
        if (unit == 2) {
          const std::uint16_t c = p[i];
          std::memcpy(out + i * 2, &c, 2);
        } else {
          const std::uint32_t c = p[i];
          std::memcpy(out + i * 4, &c, 4);
        }
      }
    }
    return n;
  }
  std::size_t units = 0;
  auto put = [&](std::uint32_t u) {
    if (unit == 2) {
      const auto v = static_cast<std::uint16_t>(u);
      std::memcpy(out + units * 2, &v, 2);
    } else {
      std::memcpy(out + units * 4, &u, 4);
    }
    ++units;
  };
  auto cont = [&](std::size_t k) { return k < n && (p[k] & 0xC0) == 0x80; };
  for (std::size_t i = 0; i < n;) {
    if (unit > 1 && i + 8 <= n) {  // a run of ASCII inside other text: 8 bytes at a time
      std::uint64_t w;
      std::memcpy(&w, p + i, 8);
      const std::uint64_t high = 0x8080808080808080ull, ones = 0x0101010101010101ull;
      if ((w & high) == 0 && ((w - ones) & ~w & high) == 0) {
        for (int k = 0; k < 8; ++k) put(p[i + k]);
        i += 8;
        continue;
      }
    }
    const unsigned char c = p[i];
    std::uint32_t cp;
    std::size_t len;
    if (c >= 0x01 && c < 0x80) {
      cp = c;
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF && cont(i + 1)) {
      cp = (c & 0x1Fu) << 6 | (p[i + 1] & 0x3Fu);
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF && cont(i + 1) && cont(i + 2)) {
      cp = (c & 0x0Fu) << 12 | (p[i + 1] & 0x3Fu) << 6 | (p[i + 2] & 0x3Fu);
      if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) return SIZE_MAX;  // overlong, or a surrogate
      len = 3;
    } else if (c >= 0xF0 && c <= 0xF4 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
      cp = (c & 0x07u) << 18 | (p[i + 1] & 0x3Fu) << 12 | (p[i + 2] & 0x3Fu) << 6 | (p[i + 3] & 0x3Fu);
      if (cp < 0x10000 || cp > 0x10FFFF) return SIZE_MAX;
      len = 4;
    } else {
      return SIZE_MAX;  // NUL, a stray continuation byte, a truncated or overlong sequence
    }
    if (unit == 1) {
      for (std::size_t k = 0; k < len; ++k) out[units++] = static_cast<std::byte>(p[i + k]);
    } else if (unit == 2 && cp >= 0x10000) {
      put(0xD800 + ((cp - 0x10000) >> 10));
      put(0xDC00 + ((cp - 0x10000) & 0x3FF));
    } else {
      put(cp);
    }
    i += len;
  }
  return units;
}

}  // namespace marshal::engine
