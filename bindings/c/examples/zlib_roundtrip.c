/* marshal C API example: a zlib round trip and a struct out parameter.
 * Build: cc -std=c99 example.c $(pkg-config --cflags --libs marshal-c)
 * Run from the repository root (or pass the typemaps folder as argv[1]). */
#include <marshal.h>

#include <stdio.h>
#include <string.h>

/* Every function that can fail returns a status; the error is on this thread. */
static int check(marshal_status s, const char *what) {
  if (s != MARSHAL_OK) {
    const marshal_error *e = marshal_last_error();
    fprintf(stderr, "%s: %s [%s]\n", what, marshal_error_message(e), marshal_error_code_name(marshal_error_id(e)));
  }
  return s == MARSHAL_OK;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "typemaps";
  char path[512];
  marshal_context *ctx = NULL;
  marshal_typemap *ztm = NULL, *ctm = NULL;
  marshal_library *zlib = NULL, *libc = NULL;
  marshal_function *compress2 = NULL, *uncompress = NULL, *crc32 = NULL, *clock_gettime = NULL;
  const char *text = "C calls zlib through marshal, C calls zlib through marshal";
  const size_t len = strlen(text);
  int ok = check(marshal_context_create(&ctx), "context");
  printf("marshal %s\n", marshal_version());

  snprintf(path, sizeof path, "%s/zlib.json", dir);
  ok = ok && check(marshal_typemap_load(ctx, path, &ztm), "zlib typemap");
  ok = ok && check(marshal_library_create(ztm, &zlib), "zlib");
  ok = ok && check(marshal_library_function(zlib, "compress2", &compress2), "compress2");
  ok = ok && check(marshal_library_function(zlib, "uncompress", &uncompress), "uncompress");
  ok = ok && check(marshal_library_function(zlib, "crc32", &crc32), "crc32");
  if (!ok) return 1;

  /* crc32(0, text, len): the typemap computes len from text ("value": {"count_of": "buf"}) */
  {
    marshal_value *args[2] = {NULL, NULL};
    marshal_result *r = NULL;
    uint64_t crc = 0;
    ok = check(marshal_value_create_uint64(0, &args[0]), "crc") &&
         check(marshal_value_create_bytes(text, len, &args[1]), "buf") &&
         check(marshal_function_call(crc32, args, 2, &r), "crc32 call") &&
         check(marshal_value_get_uint64(marshal_result_return(r), &crc), "crc32 result");
    if (ok) printf("crc32: %llu\n", (unsigned long long)crc);
    marshal_result_release(r);
    marshal_value_release(args[0]);
    marshal_value_release(args[1]);
  }

  /* compress2(dest[out], destLen[inout], source, sourceLen[computed], level), then uncompress */
  if (ok) {
    marshal_value *cargs[3] = {NULL, NULL, NULL}, *uargs[2] = {NULL, NULL};
    marshal_result *c = NULL, *u = NULL;
    const uint8_t *packed = NULL, *restored = NULL;
    size_t packed_len = 0, restored_len = 0;
    ok = check(marshal_value_create_uint64(256, &cargs[0]), "destLen") &&
         check(marshal_value_create_bytes(text, len, &cargs[1]), "source") &&
         check(marshal_value_create_int64(9, &cargs[2]), "level") &&
         check(marshal_function_call(compress2, cargs, 3, &c), "compress2 call") &&
         check(marshal_value_get_bytes(marshal_result_out(c, "dest"), &packed, &packed_len), "compress2 dest");
    if (ok) {
      ok = check(marshal_value_create_uint64(256, &uargs[0]), "destLen") &&
           check(marshal_value_create_bytes(packed, packed_len, &uargs[1]), "source") &&
           check(marshal_function_call(uncompress, uargs, 2, &u), "uncompress call") &&
           check(marshal_value_get_bytes(marshal_result_out(u, "dest"), &restored, &restored_len), "uncompress dest");
      marshal_value_release(uargs[0]);
      marshal_value_release(uargs[1]);
    }
    if (ok) {
      printf("zlib round trip: %zu bytes -> %zu bytes -> %zu bytes: %s\n", len, packed_len, restored_len,
             restored_len == len && memcmp(restored, text, len) == 0 ? "identical" : "DIFFERENT");
      ok = restored_len == len && memcmp(restored, text, len) == 0;
    }
    marshal_result_release(c);
    marshal_result_release(u);
    for (int i = 0; i < 3; ++i) marshal_value_release(cargs[i]);
  }

  /* A struct out parameter: clock_gettime(CLOCK_MONOTONIC, &ts) */
  snprintf(path, sizeof path, "%s/libc.json", dir);
  ok = ok && check(marshal_typemap_load(ctx, path, &ctm), "libc typemap");
  ok = ok && check(marshal_library_create(ctm, &libc), "libc");
  ok = ok && check(marshal_library_function(libc, "clock_gettime", &clock_gettime), "clock_gettime");
  if (ok) {
    marshal_value *clock = NULL;
    marshal_result *r = NULL;
    int64_t sec = -1, nsec = -1;
    ok = check(marshal_value_create_int64(1, &clock), "clock") &&
         check(marshal_function_call(clock_gettime, &clock, 1, &r), "clock_gettime call");
    if (ok) {
      const marshal_value *ts = marshal_result_out(r, "tp");
      char *json = NULL;
      ok = check(marshal_value_get_int64(marshal_record_get(ts, "tv_sec"), &sec), "tv_sec") &&
           check(marshal_value_get_int64(marshal_record_get(ts, "tv_nsec"), &nsec), "tv_nsec") &&
           check(marshal_value_to_json(ts, &json), "to_json");
      if (ok) printf("clock_gettime: %s (tv_sec %lld, tv_nsec in range: %s)\n", json, (long long)sec,
                     nsec >= 0 && nsec < 1000000000 ? "yes" : "no");
      marshal_free(json);
    }
    marshal_result_release(r);
    marshal_value_release(clock);
  }

  marshal_library_release(zlib);
  marshal_library_release(libc);
  marshal_context_release(ctx);
  return ok ? 0 : 1;
}
