// marshal tests: the C API's value constructors as expressions (tests, fuzz target and
// benchmarks build many values inline).
#pragma once

#include "marshal.h"

#include <cstddef>
#include <cstdint>

// The C API's constructors write to an out parameter and return a status;
// these give the new handle (NULL on failure, the error on this thread) for
// code that builds many values in expressions.
inline marshal_value* mv_null() { marshal_value* v = nullptr; marshal_value_create_null(&v); return v; }
inline marshal_value* mv_bool(int b) { marshal_value* v = nullptr; marshal_value_create_bool(b, &v); return v; }
inline marshal_value* mv_int64(int64_t x) { marshal_value* v = nullptr; marshal_value_create_int64(x, &v); return v; }
inline marshal_value* mv_uint64(uint64_t x) { marshal_value* v = nullptr; marshal_value_create_uint64(x, &v); return v; }
inline marshal_value* mv_double(double x) { marshal_value* v = nullptr; marshal_value_create_double(x, &v); return v; }
inline marshal_value* mv_string(const char* s, size_t n) {
  marshal_value* v = nullptr;
  marshal_value_create_string(s, n, &v);
  return v;
}
inline marshal_value* mv_bytes(const void* p, size_t n) {
  marshal_value* v = nullptr;
  marshal_value_create_bytes(p, n, &v);
  return v;
}
inline marshal_value* mv_list() { marshal_value* v = nullptr; marshal_value_create_list(&v); return v; }
inline marshal_value* mv_record() { marshal_value* v = nullptr; marshal_value_create_record(&v); return v; }
inline marshal_value* mv_function(const char* name, marshal_host_fn fn, void* user, void (*destroy)(void*)) {
  marshal_value* v = nullptr;
  marshal_value_create_function(name, fn, user, destroy, &v);
  return v;
}
inline marshal_value* mv_host_object(const char* name, const char* const* interfaces, size_t ninterfaces,
                                     const marshal_host_method* methods, size_t nmethods, void* user,
                                     void (*destroy)(void*)) {
  marshal_value* v = nullptr;
  marshal_value_create_host_object(name, interfaces, ninterfaces, methods, nmethods, user, destroy, &v);
  return v;
}
inline marshal_result* mv_result() { marshal_result* r = nullptr; marshal_result_create(&r); return r; }
inline char* mv_json(const marshal_value* v) { char* s = nullptr; marshal_value_to_json(v, &s); return s; }
