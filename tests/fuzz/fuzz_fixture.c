/* marshal fuzz fixture: callees that use every element they are told about.
 * Each export reads and writes all N elements, bytes or units its count,
 * length or capacity parameter says it was given (a C callee may do exactly
 * that), so a buffer the engine made smaller than the count it passed is an
 * AddressSanitizer report in fuzz-call-args, not a silent overrun.
 * Counts beyond what the engine could have allocated are the engine's to
 * refuse; these callees trust them, as real C code does. */
#define _POSIX_C_SOURCE 200809L /* strdup, strnlen */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uchar.h>

#define API __attribute__((visibility("default")))

typedef struct { int32_t x, y; } FzPoint;
typedef struct { uint32_t cb; char name[8]; int32_t n; int32_t *items; } FzHeader;
typedef struct { uint16_t n; uint8_t tag; int64_t items[]; } FzFlex;

/* Reads and rewrites every byte of [p, p + n). */
static uint64_t touch(void *p, size_t n) {
  unsigned char *b = p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h = (h ^ b[i]) * 1099511628211ull;
    b[i] = (unsigned char)(b[i] ^ 0x5a);
  }
  return h;
}
static uint64_t read_only(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* ---- arrays: every count source and direction ---- */
API uint64_t fz_in_i32(int32_t *v, size_t n) { return touch(v, n * sizeof *v); }
API uint64_t fz_in_const_i32(const int32_t *v, size_t n) { return read_only(v, n * sizeof *v); }
API uint64_t fz_in_i64_by_i32(int64_t *v, int32_t n) { return n > 0 ? touch(v, (size_t)n * sizeof *v) : 0; }
API uint64_t fz_in_u8_by_u8(uint8_t *v, uint8_t n) { return touch(v, n); }
API uint64_t fz_in_f64(double *v, size_t n) { return touch(v, n * sizeof *v); }
API uint64_t fz_in_points(FzPoint *v, size_t n) { return touch(v, n * sizeof *v); }
API uint64_t fz_in_fixed4(int16_t *v) { return touch(v, 4 * sizeof *v); }
API uint64_t fz_inout_i32(int32_t *v, size_t n) { return touch(v, n * sizeof *v); }
API uint64_t fz_inout_points(FzPoint *v, uint32_t n) { return touch(v, n * sizeof *v); }
API void fz_out_i32(int32_t *out, size_t n) { touch(out, n * sizeof *out); }
API void fz_out_u16_by_i64(uint16_t *out, int64_t n) { if (n > 0) touch(out, (size_t)n * sizeof *out); }
API size_t fz_out_points_len(FzPoint *out, size_t cap) { touch(out, cap * sizeof *out); return cap / 2; }
API void fz_out_u8_len_param(uint8_t *out, size_t cap, size_t *len) { touch(out, cap); *len = cap / 3; }
/* zlib's uncompress shape: the count is an inout pointer, read before, written after. */
API int32_t fz_inout_len_ptr(uint8_t *dest, unsigned long *len, const uint8_t *src, unsigned long srclen) {
  read_only(src, srclen);
  touch(dest, *len);
  *len = *len < srclen ? *len : srclen;
  memcpy(dest, src, *len);
  return 0;
}
API uint64_t fz_in_strings(char **v, size_t n) {
  uint64_t h = 0;
  for (size_t i = 0; i < n; ++i) h += touch(v[i], strlen(v[i]));
  return h;
}
API uint64_t fz_in_strings_sentinel(char **v) {
  uint64_t h = 0;
  for (size_t i = 0; v[i]; ++i) h += touch(v[i], strlen(v[i]));
  return h;
}
/* {"ptr": {"array": ...}}: the address of the first element, as a struct field's. */
API uint64_t fz_in_i32_array_ptr(int32_t *v, size_t n) { return touch(v, n * sizeof *v); }

/* ---- strings: lengths and capacities in units ---- */
API uint64_t fz_in_bytes_len(char *s, size_t n) { return touch(s, n); }
API uint64_t fz_in_utf16_len(char16_t *s, uint32_t n) { return touch(s, (size_t)n * sizeof *s); }
API uint64_t fz_in_utf32_len(const char32_t *s, size_t n) { return read_only(s, n * sizeof *s); }
API uint64_t fz_in_utf8(char *s) { return touch(s, strlen(s) + 1); }
API uint64_t fz_in_utf16(char16_t *s) { size_t n = 0; while (s[n]) ++n; return touch(s, (n + 1) * sizeof *s); }
API uint64_t fz_in_latin1(char *s) { return touch(s, strlen(s) + 1); }
API uint64_t fz_in_double_nul(const char *s) {
  size_t n = 0;
  while (s[n] || s[n + 1]) ++n;
  return read_only(s, n + 2);
}
API size_t fz_out_utf8_cap(char *out, size_t cap) {
  if (cap == 0) return 0;
  touch(out, cap);
  for (size_t i = 0; i + 1 < cap; ++i) out[i] = (char)('a' + i % 26);
  out[cap - 1] = 0;
  return cap - 1;
}
API size_t fz_out_utf16_cap_len(char16_t *out, size_t cap) {
  touch(out, cap * sizeof *out);
  for (size_t i = 0; i < cap; ++i) out[i] = (char16_t)(0x41 + i % 26);
  return cap / 2;
}
API void fz_out_wchar_fixed(wchar_t *out) { touch(out, 6 * sizeof *out); for (int i = 0; i < 5; ++i) out[i] = L'w'; out[5] = 0; }
API size_t fz_out_bytes_len(char *out, int32_t cap) {
  if (cap <= 0) return 0;
  touch(out, (size_t)cap);
  return (size_t)cap - 1;
}
API uint64_t fz_inout_utf8(char *s) { return touch(s, strlen(s)); }
API uint64_t fz_inout_utf8_cap(char *s, size_t cap) {
  if (cap == 0) return 0;
  uint64_t h = read_only(s, strnlen(s, cap));
  memset(s + strnlen(s, cap), 'z', cap - strnlen(s, cap));
  s[cap - 1] = 0;
  return h;
}
API char *fz_ret_utf8_dup(const char *s) { return strdup(s); }
API int32_t *fz_ret_i32(size_t n) {
  if (n > (1u << 20)) return NULL; /* what the callee can give; the engine reports the NULL */
  int32_t *p = malloc(n ? n * sizeof *p : 1);
  for (size_t i = 0; i < n; ++i) p[i] = (int32_t)i;
  return p;
}

/* ---- structs holding counts ---- */
API uint64_t fz_in_header(FzHeader *h) {
  uint64_t t = touch(h->name, sizeof h->name) + h->cb;
  if (h->items && h->n > 0) t += touch(h->items, (size_t)h->n * sizeof *h->items);
  return t;
}
API void fz_out_header(FzHeader *h) {
  static int32_t items[3] = {1, 2, 3};
  touch(h, sizeof *h);
  h->cb = sizeof *h;
  memcpy(h->name, "fuzzed", 7);
  h->n = 3;
  h->items = items;
}
API uint64_t fz_in_flex(FzFlex *f) { return touch(f->items, (size_t)f->n * sizeof f->items[0]) + f->tag; }
API uint64_t fz_in_point_ptr(FzPoint *p) { return touch(p, sizeof *p); }
API void fz_inout_point_ptr(FzPoint *p, int32_t k) { p->x = (int32_t)((uint32_t)p->x * (uint32_t)k); p->y = (int32_t)((uint32_t)p->y * (uint32_t)k); }
API FzPoint fz_ret_point(FzPoint a, FzPoint b) { FzPoint r = {a.x ^ b.x, a.y ^ b.y}; return r; }
