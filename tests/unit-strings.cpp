// marshal tests: host-string conversion (engine/convert/strings), differential.
// The fast UTF-8 validation and transcoding (16-byte blocks, a scalar decoder
// per lead byte) are compared with a verbatim copy of the scalar code they
// replaced (namespace reference below) on random and corrupted inputs: the
// same answers, the same units, the same error messages, byte for byte. The
// inputs sit at the very end of exact-size allocations at every alignment, so
// a read past the end shows under AddressSanitizer.
#include "convert/strings.hpp"
#include "sanitized.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace marshal::engine;

// ---- the reference: engine/convert/strings.cpp before the fast paths (verbatim) ----
namespace reference {
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

}  // namespace reference

// ---- inputs ----------------------------------------------------------------------
namespace {

using Rng = std::mt19937_64;

std::uint32_t pick(Rng& rng, std::uint32_t lo, std::uint32_t hi) {
  return std::uniform_int_distribution<std::uint32_t>(lo, hi)(rng);
}

void append_utf8(std::string& s, std::uint32_t cp) {
  if (cp < 0x80) s += static_cast<char>(cp);
  else if (cp < 0x800) { s += static_cast<char>(0xC0 | (cp >> 6)); s += static_cast<char>(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A code point of one UTF-8 length (1-4), often at the edges of its range.
std::uint32_t code_point(Rng& rng, int len) {
  static const std::uint32_t edges[][6] = {{0x01, 0x7F, 0x20, 0x41, 0x7E, 0x09},
                                           {0x80, 0x7FF, 0xE9, 0xFF, 0x100, 0x7FE},
                                           {0x800, 0xFFFF, 0xD7FF, 0xE000, 0xFFFD, 0x20AC},
                                           {0x10000, 0x10FFFF, 0x1F600, 0xFFFFF, 0x100000, 0x10FFFE}};
  if (pick(rng, 0, 3) == 0) return edges[len - 1][pick(rng, 0, 5)];
  switch (len) {
    case 1: return pick(rng, 1, 0x7F);
    case 2: return pick(rng, 0x80, 0x7FF);
    case 3: {
      std::uint32_t cp = pick(rng, 0x800, 0xFFFF - 0x800);
      return cp >= 0xD800 ? cp + 0x800 : cp;  // no surrogates
    }
    default: return pick(rng, 0x10000, 0x10FFFF);
  }
}

// Well-formed UTF-8 of about `bytes` bytes; the mix of lengths differs by profile
// (0: ASCII only, 1: mostly ASCII, 2: even, 3: no ASCII, 4: runs of one length).
std::string valid_text(Rng& rng, std::size_t bytes, int profile) {
  std::string s;
  int run_len = 1, run_left = 0;
  while (s.size() < bytes) {
    int len;
    switch (profile) {
      case 0: len = 1; break;
      case 1: len = pick(rng, 0, 9) < 8 ? 1 : static_cast<int>(pick(rng, 2, 4)); break;
      case 2: len = static_cast<int>(pick(rng, 1, 4)); break;
      case 3: len = static_cast<int>(pick(rng, 2, 4)); break;
      default:
        if (run_left-- <= 0) { run_len = static_cast<int>(pick(rng, 1, 4)); run_left = static_cast<int>(pick(rng, 1, 40)); }
        len = run_len;
    }
    append_utf8(s, code_point(rng, len));
  }
  return s;
}

// Bytes that make or break UTF-8: NUL, ASCII, continuations, every kind of lead.
const unsigned char kPoison[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2,
                                 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xF7, 0xF8, 0xFE, 0xFF};

// The text copied to the end of an exact-size allocation, `offset` bytes into it
// (so every alignment is seen and nothing lies after the last byte).
struct Placed {
  std::unique_ptr<char[]> mem;
  std::string_view view;
  Placed(const std::string& s, std::size_t offset) : mem(new char[offset + s.size() + (offset + s.size() == 0)]) {
    if (!s.empty()) std::memcpy(mem.get() + offset, s.data(), s.size());
    view = std::string_view(mem.get() + offset, s.size());
  }
};

std::string show(std::string_view s) {
  std::string out;
  char buf[8];
  for (unsigned char c : s.substr(0, 200)) {
    std::snprintf(buf, sizeof buf, "%02x", c);
    out += buf;
  }
  return out + (s.size() > 200 ? "... (" + std::to_string(s.size()) + " bytes)" : "");
}

const Encoding kAll[] = {Encoding::utf8, Encoding::utf16, Encoding::utf32, Encoding::wchar,
                         Encoding::latin1, Encoding::ascii, Encoding::bytes};

// Old and new agree on everything that reads UTF-8 host text: plain_ascii,
// utf8_well_formed, transcode_utf8 (1, 2, 4-byte units), encode_text in every
// encoding and both policies (appending after existing bytes), decode_text of
// the text as native UTF-8, Latin-1, ASCII. The number of checks made is counted.
void compare_utf8(const std::string& text, std::size_t offset, std::size_t& checks) {
  Placed placed(text, offset);
  const std::string_view s = placed.view;
  INFO("text " << show(s) << " at offset " << offset);
  CHECK(plain_ascii(s) == reference::plain_ascii(s));
  const bool wf = reference::utf8_well_formed(s);
  CHECK(utf8_well_formed(s) == wf);
  for (std::size_t unit : {1, 2, 4}) {
    INFO("unit " << unit);
    // Exact room (text.size() units): a write past it shows under AddressSanitizer.
    const std::size_t room = s.size() * unit;
    std::unique_ptr<std::byte[]> got(new std::byte[room + (room == 0)]), want(new std::byte[room + 1]);
    const std::size_t n_got = transcode_utf8(s, unit, got.get());
    const std::size_t n_want = reference::transcode_utf8(s, unit, want.get());
    REQUIRE(n_got == n_want);
    CHECK((n_want == SIZE_MAX) == !wf);
    if (n_want != SIZE_MAX) {
      REQUIRE(n_want * unit <= room);
      CHECK(std::memcmp(got.get(), want.get(), n_want * unit) == 0);
    }
    ++checks;
  }
  for (Encoding e : kAll)
    for (Unmappable policy : {Unmappable::error, Unmappable::replace}) {
      INFO("encode_text " << encoding_name(e) << (policy == Unmappable::error ? " error" : " replace"));
      std::vector<std::uint8_t> got = {0xAB, 0xCD}, want = got;
      std::string got_error = "before", want_error = "before";
      const bool ok_got = encode_text(e, policy, s, got, got_error);
      const bool ok_want = reference::encode_text(e, policy, s, want, want_error);
      CHECK(ok_got == ok_want);
      CHECK(got_error == want_error);
      if (ok_want) CHECK(got == want);  // (on an error the output is not used)
      ++checks;
    }
  for (Encoding e : {Encoding::utf8, Encoding::latin1, Encoding::ascii, Encoding::bytes}) {
    INFO("decode_text " << encoding_name(e));
    std::string got = "x", want = "x", got_error, want_error;
    const bool ok_got = decode_text(e, s.data(), s.size(), got, got_error);
    const bool ok_want = reference::decode_text(e, s.data(), s.size(), want, want_error);
    CHECK(ok_got == ok_want);
    CHECK(got_error == want_error);
    if (ok_want) CHECK(got == want);
    CHECK(units_until_nul(e, s.data(), s.size()) == reference::units_until_nul(e, s.data(), s.size()));
    ++checks;
  }
}

// Native UTF-16 / UTF-32 / wchar units (raw bytes, `units` of them) decoded to
// UTF-8 by old and new, at the end of an exact-size allocation.
void compare_wide(Encoding e, const std::vector<std::uint8_t>& raw, std::size_t offset, std::size_t& checks) {
  const std::size_t unit = encoding_unit(e);
  const std::size_t units = raw.size() / unit;
  std::unique_ptr<std::uint8_t[]> mem(new std::uint8_t[offset + raw.size() + 1]);
  std::uint8_t* p = mem.get() + offset + 1;  // one byte of slack at the front: odd offsets too
  if (!raw.empty()) std::memcpy(p, raw.data(), raw.size());
  INFO("decode_text " << encoding_name(e) << " of " << show(std::string_view(reinterpret_cast<const char*>(p), raw.size()))
                      << " at offset " << offset + 1);
  std::string got = "x", want = "x", got_error, want_error;
  const bool ok_got = decode_text(e, p, units, got, got_error);
  const bool ok_want = reference::decode_text(e, p, units, want, want_error);
  CHECK(ok_got == ok_want);
  CHECK(got_error == want_error);
  if (ok_want) CHECK(got == want);
  CHECK(units_until_nul(e, p, units) == reference::units_until_nul(e, p, units));
  ++checks;
}

// Random units for e: mostly ASCII, or anything, or surrogates (lone, paired,
// reversed) and, for 4-byte units, values past U+10FFFF; zeros now and then.
std::vector<std::uint8_t> random_units(Rng& rng, Encoding e, std::size_t units, int profile) {
  const std::size_t unit = encoding_unit(e);
  std::vector<std::uint8_t> raw(units * unit);
  for (std::size_t k = 0; k < units; ++k) {
    std::uint32_t u;
    const std::uint32_t roll = pick(rng, 0, 99);
    if (profile == 0 && roll < 95) u = pick(rng, 1, 0x7F);
    else if (roll < 40) u = pick(rng, 1, 0x7F);
    else if (roll < 55) u = pick(rng, 0x80, 0xFFFF);
    else if (roll < 70) u = pick(rng, 0xD800, 0xDBFF);
    else if (roll < 85) u = pick(rng, 0xDC00, 0xDFFF);
    else if (roll < 90) u = unit == 4 ? pick(rng, 0x10000, 0x10FFFF) : pick(rng, 0xE000, 0xFFFF);
    else if (roll < 95) u = unit == 4 ? (pick(rng, 0, 1) ? pick(rng, 0x110000, 0x1FFFFF) : pick(rng, 0, 0xFFFFFFFFu)) : 0xFFFF;
    else u = profile == 2 ? 0 : pick(rng, 1, 0x7F);
    if (unit == 2) {
      const auto v = static_cast<std::uint16_t>(u);
      std::memcpy(raw.data() + k * 2, &v, 2);
    } else {
      std::memcpy(raw.data() + k * 4, &u, 4);
    }
  }
  return raw;
}

std::vector<std::size_t> lengths() {
  std::vector<std::size_t> out;
  for (std::size_t n = 0; n <= 100; ++n) out.push_back(n);
  for (std::size_t n : {127, 128, 129, 255, 256, 1000, 4096, 65537}) out.push_back(n);
  return out;
}

}  // namespace

TEST_SUITE("strings") {
  TEST_CASE("UTF-8 checks and transcoding: the fast paths agree with the scalar reference on random bytes") {
    Rng rng(20261203);
    std::size_t checks = 0;
    for (std::size_t n : lengths())
      for (int round = 0; round < (n <= 100 ? 6 : 2); ++round) {
        std::string s(n, '\0');
        const int profile = round % 3;  // any byte; mostly ASCII; ASCII and the poison bytes
        for (char& c : s) {
          if (profile == 0) c = static_cast<char>(pick(rng, 0, 255));
          else if (profile == 1) c = static_cast<char>(pick(rng, 0, 15) ? pick(rng, 1, 0x7F) : pick(rng, 0, 255));
          else c = static_cast<char>(pick(rng, 0, 1) ? pick(rng, 0x20, 0x7E) : kPoison[pick(rng, 0, sizeof kPoison - 1)]);
        }
        compare_utf8(s, pick(rng, 0, 31), checks);
      }
    CHECK(checks > 10000);
  }

  TEST_CASE("well-formed UTF-8 of every length mix and alignment transcodes as before") {
    Rng rng(7);
    std::size_t checks = 0, accepted = 0;
    for (std::size_t n : lengths())
      for (int profile = 0; profile < 5; ++profile) {
        std::string s = valid_text(rng, n, profile);
        for (std::size_t offset : {std::size_t{0}, std::size_t{1}, std::size_t{pick(rng, 2, 15)}}) {
          compare_utf8(s, offset, checks);
          accepted += utf8_well_formed(s);
        }
        // Cut short at a random point: often inside a sequence.
        if (!s.empty()) compare_utf8(s.substr(0, pick(rng, 0, static_cast<std::uint32_t>(s.size() - 1))), 3, checks);
      }
    CHECK(accepted == lengths().size() * 5 * 3);  // every generated text is well-formed
    CHECK(checks > 10000);
  }

  TEST_CASE("one corrupted byte at every position, with every kind of bad byte, is refused as before") {
    Rng rng(11);
    std::size_t checks = 0, refused = 0;
    // Short texts: every position with every poison byte; long ones: positions near
    // block edges (0..17, 30..34, 46..50, the last 20) and random ones.
    for (std::size_t n : {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 18, 19, 20, 31, 32, 33, 40, 47, 48, 49, 63, 64, 65, 80, 100})
      for (int profile = 1; profile < 5; ++profile) {
        const std::string base = valid_text(rng, n, profile);
        for (std::size_t at = 0; at < base.size(); ++at)
          for (unsigned char bad : kPoison) {
            if (pick(rng, 0, 3) && base.size() > 40) continue;  // a quarter of the long ones' cases
            std::string s = base;
            s[at] = static_cast<char>(bad);
            compare_utf8(s, at % 16, checks);
            refused += !utf8_well_formed(s);
          }
      }
    for (std::size_t n : {1000, 4096, 20000}) {
      const std::string base = valid_text(rng, n, 1);
      std::vector<std::size_t> spots;
      for (std::size_t k = 0; k < 18; ++k) spots.push_back(k);
      for (std::size_t k = 0; k < 20; ++k) spots.push_back(base.size() - 1 - k);
      for (std::size_t k = 0; k < 40; ++k) spots.push_back(pick(rng, 0, static_cast<std::uint32_t>(base.size() - 1)));
      for (std::size_t at : spots) {
        std::string s = base;
        s[at] = static_cast<char>(kPoison[pick(rng, 0, sizeof kPoison - 1)]);
        compare_utf8(s, pick(rng, 0, 15), checks);
      }
    }
    // The forms that are refused for their value, placed at every offset in a block
    // of ASCII and of other text: overlong (2, 3, 4 bytes), surrogates, past U+10FFFF.
    const char* forms[] = {"\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xe0\x9f\xbf", "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf",
                           "\xed\xa0\x80", "\xed\xbf\xbf", "\xf4\x90\x80\x80", "\xf7\xbf\xbf\xbf", "\xf8\x88\x80\x80\x80",
                           "\xe0\xa0", "\xf0\x90\x80", "\xc3", "\xed\x9f\xbf", "\xee\x80\x80", "\xf4\x8f\xbf\xbf", "\xe0\xa0\x80",
                           "\xf0\x90\x80\x80", "\xc2\x80"};  // (the last six are well-formed neighbours)
    for (const char* form : forms)
      for (std::size_t at = 0; at < 40; ++at)
        for (int profile = 0; profile < 3; ++profile) {
          std::string s = valid_text(rng, at, profile) + form + valid_text(rng, pick(rng, 0, 40), profile);
          compare_utf8(s, pick(rng, 0, 15), checks);
          std::string end = valid_text(rng, at, profile) + form;  // at the very end
          compare_utf8(end, 0, checks);
        }
    CHECK(refused > 1000);
    CHECK(checks > 10000);
  }

  TEST_CASE("native UTF-16, UTF-32 and wchar decode as before (surrogates, values past U+10FFFF, NUL)") {
    Rng rng(13);
    std::size_t checks = 0;
    for (Encoding e : {Encoding::utf16, Encoding::utf32, Encoding::wchar})
      for (std::size_t n : lengths())
        for (int profile = 0; profile < 3; ++profile) {
          compare_wide(e, random_units(rng, e, n, profile), pick(rng, 0, 15), checks);
          // The encoding of well-formed text, whole and with one unit replaced.
          std::vector<std::uint8_t> units;
          std::string error;
          REQUIRE(encode_text(e, Unmappable::error, valid_text(rng, n, profile + 1), units, error));
          compare_wide(e, units, pick(rng, 0, 15), checks);
          const std::size_t unit = encoding_unit(e);
          if (units.size() >= unit) {
            const std::vector<std::uint8_t> bad = random_units(rng, e, 1, 1);
            std::memcpy(units.data() + pick(rng, 0, static_cast<std::uint32_t>(units.size() / unit - 1)) * unit, bad.data(), unit);
            compare_wide(e, units, pick(rng, 0, 15), checks);
          }
        }
    CHECK(checks > 2000);
  }

  TEST_CASE("large texts: 256 KiB of ASCII and of mixed text, and one bad byte near the end") {
    Rng rng(17);
    std::size_t checks = 0;
    for (int profile = 0; profile < 5; ++profile) {
      // (64 KiB under a sanitizer: the same blocks and tails, a quarter of -O0's minutes)
      std::string s = valid_text(rng, marshal::test::sanitized ? 1 << 16 : 1 << 18, profile);
      compare_utf8(s, 5, checks);
      CHECK(utf8_well_formed(s));
      s[s.size() - 2] = '\xff';
      compare_utf8(s, 0, checks);
      CHECK_FALSE(utf8_well_formed(s));
      s[s.size() - 2] = '\0';
      CHECK_FALSE(utf8_well_formed(s));
      CHECK(transcode_utf8(s, 2, std::vector<std::byte>(s.size() * 2).data()) == SIZE_MAX);
    }
    CHECK(checks > 0);
  }
}
