// marshal engine: text encodings.
// UTF-8 host strings to and from utf8, utf16, utf32, wchar, latin1, ascii and
// bytes code units, validating both ways; errors say what and where.
#pragma once

#include "types/type_desc.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace marshal::engine {

// Encodes UTF-8 text into code units of `e` (appended to out, unit-sized,
// native byte order), without a terminator. Returns false with a message.
bool encode_text(Encoding e, Unmappable policy, std::string_view utf8, std::vector<std::uint8_t>& out,
                 std::string& error);

// Plain ASCII without NUL: the same characters in UTF-8, Latin-1, ASCII,
// UTF-16 and UTF-32 (widened), and no terminator inside. Checks 64 bytes at a
// time (SSE2; a portable 8-byte word elsewhere).
bool plain_ascii(std::string_view text);
// Well-formed UTF-8 without NUL (what transcode_utf8 accepts): the text is
// already its own native utf8 form. Checked 16 bytes at a time, without a
// branch per character (SSE2), the last few bytes one character at a time.
bool utf8_well_formed(std::string_view text);
// Well-formed UTF-8 without NUL, transcoded to `unit`-byte code units (1: a
// copy, 2: UTF-16, 4: UTF-32) at dst, which has room for text.size() units;
// the number of units written, or SIZE_MAX when the text is not well-formed
// (or holds a NUL): the caller then takes the general path for its message.
std::size_t transcode_utf8(std::string_view text, std::size_t unit, void* dst);
// The encodings UTF-8 text is transcoded to directly (transcode_utf8): the
// Unicode ones. The one rule for the marshaler and the plans' fast strings.
inline bool transcodes_utf8(Encoding e) {
  return e == Encoding::utf8 || e == Encoding::utf16 || e == Encoding::utf32 || e == Encoding::wchar;
}

// Decodes `units` code units of `e` at data into UTF-8. Invalid input (a lone
// surrogate, a code point past U+10FFFF) is an error, never a silent guess.
bool decode_text(Encoding e, const void* data, std::size_t units, std::string& out, std::string& error);

// Number of code units before the first zero unit, looking at most max units.
std::size_t units_until_nul(Encoding e, const void* data, std::size_t max);

}  // namespace marshal::engine
