// marshal fuzz target: the C API's value builders.
// The input is a small program over a stack of marshal_value handles: JSON
// values, scalars, strings, bytes, lists and records built and mutated,
// native memory of any type and count (filled and read in full), borrowed
// items retained, values converted to JSON, and calls of fixture functions
// with values from the stack. The API is used as documented (every reference
// released once, borrowed values retained before their container changes);
// misuse is not what this target looks for. Failing calls are fine; a
// sanitizer report or a crash is a finding.
#include "marshal.h"
#include "../c_api_values.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#ifndef MARSHAL_SOURCE_DIR
#error "MARSHAL_SOURCE_DIR must be defined by the build"
#endif
#ifndef MARSHAL_FUZZ_FIXTURE
#error "MARSHAL_FUZZ_FIXTURE must be defined by the build"
#endif

namespace {

constexpr std::size_t max_input = 64 * 1024;
constexpr std::size_t max_stack = 32;

// Type names for marshal_value_create_native: primitives, the fixtures' records, and
// names that are not types.
constexpr const char* type_names[] = {"int8", "uint8", "int32", "uint64", "double", "float32", "cbool", "size_t",
                                      "pointer", "void", "FzPoint", "FzHeader", "FzFlex", "Point", "Header",
                                      "Big100", "Bits", "Color", "no_such_type", ""};

// Types holding a pointer: native memory of them is an opaque address the host
// vouches for (the engine passes it as it is; TYPEMAP.md leaves addresses to the
// caller), so this target fills it with zeros only, never with input bytes.
constexpr const char* pointer_types[] = {"pointer", "FzHeader", "Header"};

bool holds_pointers(const char* type) {
  for (const char* t : pointer_types)
    if (std::strcmp(t, type) == 0) return true;
  return false;
}

// Values copy on append and set (the C API's value semantics), so appending a
// list to itself doubles it: a few dozen operations would build a value of 2^N
// nodes, whose JSON form outlasts any timeout. That is the host's own memory,
// not a finding; the program keeps each container under this many nodes.
constexpr std::size_t max_nodes = 4096;

// The nodes of v, counted up to limit (then limit).
std::size_t nodes(const marshal_value* v, std::size_t limit) {
  std::size_t n = 1;
  if (!v) return n;
  if (marshal_value_kind(v) == MARSHAL_LIST) {
    for (std::size_t i = 0; i < marshal_list_size(v) && n < limit; ++i) n += nodes(marshal_list_get(v, i), limit - n);
  } else if (marshal_value_kind(v) == MARSHAL_RECORD) {
    for (std::size_t i = 0; i < marshal_record_size(v) && n < limit; ++i)
      if (const char* name = marshal_record_name(v, i)) n += nodes(marshal_record_get(v, name), limit - n);
  }
  return std::min(n, limit);
}

// As in fuzz-call-args: P/Invoke fixture functions with C preconditions no
// typemap states (variadic counts, format strings, opaque addresses).
constexpr const char* unchecked[] = {"sum_var_i32", "fmt_var", "fixture_free", "reverse_out_utf8", "range_ret_i32"};

struct Api {
  marshal_context* ctx = nullptr;
  std::vector<marshal_library*> libs;
  std::vector<marshal_function*> fns;

  Api() {
    if (marshal_context_create(&ctx) != MARSHAL_OK) die("context");
    for (const char* file : {"tests/fuzz/fuzz_fixture.json", "tests/fixtures/pinvoke.json"}) {
      std::ifstream in(std::string(MARSHAL_SOURCE_DIR) + "/" + file, std::ios::binary);
      std::ostringstream s;
      s << in.rdbuf();
      nlohmann::ordered_json j = nlohmann::ordered_json::parse(s.str());
      j["library"]["load"] = {{"linux", {MARSHAL_FUZZ_FIXTURE}}};
      const std::string text = j.dump();
      marshal_typemap* tm = nullptr;
      marshal_library* lib = nullptr;
      if (marshal_typemap_load_text(ctx, text.c_str(), text.size(), file, &tm) != MARSHAL_OK) die(file);
      if (marshal_library_create(tm, &lib) != MARSHAL_OK) die(file);
      // The documented per-library limit, set low: a 256 MiB box is legal but
      // its JSON form takes longer than the target's timeout under ASan.
      if (marshal_library_set_max_alloc(lib, std::size_t{1} << 20) != MARSHAL_OK) die("max_alloc");
      libs.push_back(lib);
      for (const auto& [name, fn] : j["functions"].items()) {
        bool skip = false;
        for (const char* u : unchecked) skip = skip || name == u;
        marshal_function* f = nullptr;
        if (skip) continue;
        // A signature the engine refuses to bind (a packed struct by value) is not callable.
        if (marshal_library_function(lib, name.c_str(), &f) == MARSHAL_OK) fns.push_back(f);
      }
    }
  }
  [[noreturn]] static void die(const char* what) {
    std::fprintf(stderr, "fuzz: %s: %s\n", what, marshal_error_message(marshal_last_error()));
    std::abort();
  }
};

Api& api() {
  static Api* a = new Api;  // lives to the end of the process
  return *a;
}

struct Reader {
  const std::uint8_t* data;
  std::size_t size;
  std::size_t at = 0;
  bool done() const { return at >= size; }
  std::uint8_t u8() { return at < size ? data[at++] : 0; }
  std::uint64_t u64() {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = v << 8 | u8();
    return v;
  }
  std::string text(std::size_t n) {
    n = std::min(n, size - std::min(at, size));
    std::string s(reinterpret_cast<const char*>(data + at), n);
    at += n;
    return s;
  }
};

// Reads every byte of a value as the host would (kind, scalars, strings,
// items), and its JSON form.
void read_all(const marshal_value* v, int depth = 0) {
  if (!v || depth > 8) return;
  int b;
  int64_t i;
  uint64_t u;
  double d;
  const char* s;
  const uint8_t* bytes;
  std::size_t n;
  void* data;
  switch (marshal_value_kind(v)) {
    case MARSHAL_BOOL: (void)marshal_value_get_bool(v, &b); break;
    case MARSHAL_INT64: case MARSHAL_UINT64: case MARSHAL_DOUBLE:
      (void)marshal_value_get_int64(v, &i);
      (void)marshal_value_get_uint64(v, &u);
      (void)marshal_value_get_double(v, &d);
      break;
    case MARSHAL_STRING:
      if (marshal_value_get_string(v, &s, &n) == MARSHAL_OK) {
        volatile char sink = 0;
        for (std::size_t k = 0; k < n; ++k) sink = sink ^ s[k];
        if (s[n] != 0) std::abort();  // documented as a C string too
      }
      break;
    case MARSHAL_BYTES:
      if (marshal_value_get_bytes(v, &bytes, &n) == MARSHAL_OK) {
        volatile std::uint8_t sink = 0;
        for (std::size_t k = 0; k < n; ++k) sink = sink ^ bytes[k];
      }
      break;
    // The first items one by one (a wrapper each: slow under ASan for a
    // 70,000-item out array); all of them through the JSON form below.
    case MARSHAL_LIST:
      for (std::size_t k = 0; k < marshal_list_size(v) && k < 256; ++k) read_all(marshal_list_get(v, k), depth + 1);
      break;
    case MARSHAL_RECORD:
      for (std::size_t k = 0; k < marshal_record_size(v) && k < 256; ++k) {
        const char* name = marshal_record_name(v, k);
        if (name) read_all(marshal_record_get(v, name), depth + 1);
      }
      break;
    case MARSHAL_NATIVE:
      if (marshal_native_data(v, &data, &n) == MARSHAL_OK) {
        volatile std::uint8_t sink = 0;
        for (std::size_t k = 0; k < n; ++k) sink = sink ^ static_cast<std::uint8_t*>(data)[k];
      }
      break;
    default: break;
  }
  if (char* j = mv_json(v)) marshal_free(j);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  api();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > max_input) return -1;
  Api& a = api();
  Reader in{data, size};
  std::vector<marshal_value*> stack;
  std::vector<const void*> opaque;  // native memory of pointer-holding types (zeros only)
  marshal_result* reused = mv_result();
  auto push = [&](marshal_value* v) {
    if (!v) return;
    if (stack.size() < max_stack) stack.push_back(v);
    else marshal_value_release(v);
  };
  auto pick = [&]() -> marshal_value* { return stack.empty() ? nullptr : stack[in.u8() % stack.size()]; };
  for (int ops = 0; ops < 256 && !in.done(); ++ops) {
    switch (in.u8() % 15) {
      case 0: {  // a JSON value (C string: up to the first NUL)
        const std::string text = in.text(in.u8() | (in.u8() << 8));
        marshal_value* v = nullptr;
        if (marshal_value_create_from_json(text.c_str(), &v) == MARSHAL_OK) push(v);
        break;
      }
      case 1:
        switch (in.u8() % 5) {
          case 0: push(mv_null()); break;
          case 1: push(mv_bool(in.u8())); break;
          case 2: push(mv_int64(static_cast<int64_t>(in.u64()))); break;
          case 3: push(mv_uint64(in.u64())); break;
          default: {
            const std::uint64_t bits = in.u64();
            double d;
            std::memcpy(&d, &bits, sizeof d);
            push(mv_double(d));
          }
        }
        break;
      case 2: {
        const std::string s = in.text(in.u8());
        push(mv_string(s.data(), s.size()));
        break;
      }
      case 3: {
        const std::string s = in.text(in.u8());
        push(mv_bytes(s.data(), s.size()));
        break;
      }
      case 4: push(in.u8() % 2 ? mv_list() : mv_record()); break;
      case 5: {
        marshal_value* list = pick();
        marshal_value* item = pick();
        if (list && item && nodes(list, max_nodes) + nodes(item, max_nodes) < max_nodes)
          (void)marshal_list_append(list, item);
        break;
      }
      case 6: {
        marshal_value* record = pick();
        const std::string name = in.text(in.u8() % 16);
        marshal_value* item = pick();
        if (record && item && nodes(record, max_nodes) + nodes(item, max_nodes) < max_nodes)
          (void)marshal_record_set(record, name.c_str(), item);
        break;
      }
      case 7: {  // native memory: any type, any count
        marshal_library* lib = a.libs[in.u8() % a.libs.size()];
        const char* type = type_names[in.u8() % std::size(type_names)];
        const std::uint8_t how = in.u8();
        const std::size_t count = how & 1 ? in.u64() : (how & 2 ? in.u8() : in.u8() | (in.u8() << 8));
        marshal_value* v = nullptr;
        if (marshal_value_create_native(lib, type, count, &v) == MARSHAL_OK) {
          void* p;
          std::size_t n;
          if (marshal_native_data(v, &p, &n) != MARSHAL_OK) std::abort();
          const bool pointers = holds_pointers(type);
          if (pointers) opaque.push_back(p);
          std::memset(p, pointers ? 0 : how, n);  // the host may fill all of it
          push(v);
        }
        break;
      }
      case 8: {  // fill native memory with input bytes
        marshal_value* v = pick();
        void* p;
        std::size_t n;
        if (v && marshal_native_data(v, &p, &n) == MARSHAL_OK &&
            std::find(opaque.begin(), opaque.end(), p) == opaque.end()) {
          const std::string s = in.text(in.u8());
          for (std::size_t k = 0; k < n; ++k) static_cast<char*>(p)[k] = s.empty() ? 0 : s[k % s.size()];
        }
        break;
      }
      case 9: read_all(pick()); break;
      case 10: {  // a borrowed item, retained to keep
        marshal_value* v = pick();
        if (!v) break;
        const std::uint8_t k = in.u8();
        const marshal_value* item = marshal_value_kind(v) == MARSHAL_LIST ? marshal_list_get(v, k)
                                    : marshal_value_kind(v) == MARSHAL_RECORD && marshal_record_name(v, k)
                                        ? marshal_record_get(v, marshal_record_name(v, k))
                                        : nullptr;
        if (item) push(marshal_value_retain(const_cast<marshal_value*>(item)));
        break;
      }
      case 11: {  // setters (an error unless the caller holds the one reference of a scalar)
        marshal_value* v = pick();
        if (!v) break;
        const std::uint8_t k = in.u8();
        const std::uint64_t x = in.u64();
        double d;
        std::memcpy(&d, &x, sizeof d);
        if (k % 4 == 0) (void)marshal_value_set_bool(v, static_cast<int>(x));
        if (k % 4 == 1) (void)marshal_value_set_int64(v, static_cast<int64_t>(x));
        if (k % 4 == 2) (void)marshal_value_set_uint64(v, x);
        if (k % 4 == 3) (void)marshal_value_set_double(v, d);
        break;
      }
      case 12:
        if (!stack.empty()) {
          marshal_value_release(stack.back());
          stack.pop_back();
        }
        break;
      case 13: {  // a call with values of the stack
        const marshal_function* fn = a.fns[in.u8() % a.fns.size()];
        std::vector<marshal_value*> args;
        const std::size_t n = in.u8() % 6;
        for (std::size_t k = 0; k < n && !stack.empty(); ++k) args.push_back(pick());
        if (in.u8() % 2) {
          if (marshal_function_call_into(fn, args.data(), args.size(), reused) == MARSHAL_OK) {
            read_all(marshal_result_return(reused));
            for (std::size_t k = 0; k < marshal_result_out_count(reused); ++k)
              read_all(marshal_result_out(reused, marshal_result_out_name(reused, k)));
          }
        } else {
          marshal_result* r = nullptr;
          if (marshal_function_call(fn, args.data(), args.size(), &r) == MARSHAL_OK) {
            read_all(marshal_result_return(r));
            for (std::size_t k = 0; k < marshal_result_out_count(r); ++k) {
              const marshal_value* out = marshal_result_out(r, marshal_result_out_name(r, k));
              read_all(out);
              if (out && in.u8() % 4 == 0) push(marshal_value_retain(const_cast<marshal_value*>(out)));
            }
            marshal_result_release(r);
          }
        }
        break;
      }
      default:  // another reference to a value
        if (marshal_value* v = pick()) push(marshal_value_retain(v));
        break;
    }
  }
  for (marshal_value* v : stack) marshal_value_release(v);
  marshal_result_release(reused);
  return 0;
}
