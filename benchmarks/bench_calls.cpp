// marshal benchmarks: scenario x implementation, each figure a ratio to a
// direct C call measured in the same run. Implementations: direct C, raw
// libffi (a prepared CIF), the typed C++ API, dynamic values (the engine's
// own API), the C API. The peers (ctypes, cffi, LuaJIT, Koffi) have drivers in
// benchmarks/peers/ run by benchmarks/run_all.py over the same fixture library.
// Every implementation checks its result once, then consumes every result.
// Usage: bench-calls [--root DIR] [--iterations N] [--repetitions R] [--json]
//                    [--only SCENARIO[,SCENARIO...]] [--impl IMPLEMENTATION] (for profiling one)
#include "bench_support.hpp"
#include "fixtures/callbacks.h"
#include "fixtures/objects.h"
#include "fixtures/pinvoke.h"
#include "marshal.h"
#include "c_api_values.hpp"
#include "marshal/marshal.hpp"
#include "convert/native.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

using namespace marshal::bench;

// Every C++ allocation of the process (the engine's included: the replaced
// operator new serves every library), counted for the allocations-per-call
// figures (measure()). C-level malloc (libffi's closures, a heap out array
// above the plan's stack scratch) is not counted.
static std::atomic<long> cxx_allocations{0};
// Not inlined: GCC would otherwise see free() of operator new's memory at
// every call site (-Wmismatched-new-delete; both sides are malloc's here).
[[gnu::noinline]] void* operator new(std::size_t n) {
  cxx_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new[](std::size_t n) { return operator new(n); }
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

struct P { int32_t x, y; };
struct V2 { double x, y; };

int32_t plus_one(int32_t v) { return v + 1; }
void libffi_plus_one(ffi_cif*, void* ret, void** args, void*) {
  int32_t v;
  std::memcpy(&v, args[0], sizeof v);
  ffi_arg r = static_cast<ffi_arg>(v + 1);
  std::memcpy(ret, &r, sizeof r);
}
int host_plus_one_c(void*, const marshal_value* const* args, size_t, marshal_value** result, const char**) {
  int64_t v = 0;
  marshal_value_get_int64(args[0], &v);
  marshal_value_create_int64(v + 1, result);
  return 0;
}

const char* kText64 = "marshal: P/Invoke for any host. marshal: P/Invoke for any host. ";
const char* kText16 = "h\xc3\xa9llo w\xc3\xb6rld, \xe2\x88\x91 UTF-16 text here";  // 31 UTF-16 units
const char16_t kText16u[] = u"h\u00e9llo w\u00f6rld, \u2211 UTF-16 text here";

}  // namespace

int main(int argc, char** argv) {
  long iterations = 2000000;
  int reps = 5;
  bool json = false;
  std::string root = ".";
  std::string only, impl_only;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--iterations") && i + 1 < argc) iterations = std::atol(argv[++i]);
    else if (!std::strcmp(argv[i], "--repetitions") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--root") && i + 1 < argc) root = argv[++i];
    else if (!std::strcmp(argv[i], "--json")) json = true;
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = "," + std::string(argv[++i]) + ",";
    else if (!std::strcmp(argv[i], "--impl") && i + 1 < argc) impl_only = argv[++i];
  }
  const std::string pinvoke = root + "/tests/fixtures/pinvoke.json";
  const std::string callbacks = root + "/tests/fixtures/callbacks.json";
  const std::string objects = root + "/tests/fixtures/objects.json";

  allocation_counter = &cxx_allocations;
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) { std::fprintf(stderr, "wrong result: %s\n", what); ++failures; }
  };
  std::vector<Row> rows;
  // weight: how much slower than a plain call the body is, to keep run times even.
  auto wanted = [&](const char* scenario, const char* impl) {
    return (only.empty() || only.find("," + std::string(scenario) + ",") != std::string::npos) &&
           (impl_only.empty() || impl_only == impl);
  };
  auto add = [&](const char* scenario, const char* impl, long weight, const std::function<double(long)>& body) {
    if (!wanted(scenario, impl)) return;
    rows.push_back({scenario, impl, measure(std::max(1L, iterations / weight), reps, body)});
  };
  const char* C = "direct C";
  const char* FFI = "raw libffi";
  const char* TYPED = "marshal typed C++";
  const char* DYN = "marshal dynamic values";
  const char* CAPI = "marshal C API";
  const char* HANDOFF = "raw thread hand-off";
  const long slow = 10;  // the engine paths

  // ---- the libraries, through each API ----
  marshal::library lib(pinvoke);
  marshal::library cblib(callbacks);
  marshal::library olib(objects);
  marshal::engine::Context ctx;
  std::string err;
  auto dyn_of = [&](const std::string& tm) {
    marshal::engine::LoadResult lr = ctx.load_file(tm);
    return marshal::engine::Library::open(ctx, *lr.typemap, err);
  };
  auto dyn = dyn_of(pinvoke);
  auto dyn_cb = dyn_of(callbacks);
  auto dyn_obj = dyn_of(objects);
  auto plan = [&](marshal::engine::Library& l, const char* fn) {
    const marshal::engine::Plan* p = l.bind(fn, err);
    if (!p) { std::fprintf(stderr, "%s\n", err.c_str()); std::exit(2); }
    return p;
  };
  marshal_context* cctx = nullptr;
  marshal_context_create(&cctx);
  auto c_lib = [&](const std::string& tm) {
    marshal_typemap* t = nullptr;
    marshal_library* l = nullptr;
    marshal_typemap_load(cctx, tm.c_str(), &t);
    marshal_library_create(t, &l);
    return l;
  };
  marshal_library* c_pinvoke = c_lib(pinvoke);
  marshal_library* c_callbacks = c_lib(callbacks);
  marshal_library* c_objects = c_lib(objects);
  auto c_fn = [&](marshal_library* l, const char* name) {
    marshal_function* f = nullptr;
    marshal_library_function(l, name, &f);
    return f;
  };
  // Calls a C API function into a result made once per timed loop
  // (marshal_function_call_into: no allocation per call for scalar results).
  auto c_call = [](marshal_function* f, std::initializer_list<marshal_value*> args, marshal_result* r) {
    marshal_function_call_into(f, args.begin(), args.size(), r);
    return r;
  };
  // Host-owned native memory holding a copy of count elements at src.
  auto c_native = [&](const char* type, size_t count, const void* src) {
    marshal_value* v = nullptr;
    marshal_value_create_native(c_pinvoke, type, count, &v);
    void* mem = nullptr;
    size_t size = 0;
    marshal_native_data(v, &mem, &size);
    std::memcpy(mem, src, size);
    return v;
  };
  auto c_int = [](const marshal_value* v) {
    int64_t x = 0;
    marshal_value_get_int64(v, &x);
    return x;
  };
  auto c_double = [](const marshal_value* v) {
    double x = 0;
    marshal_value_get_double(v, &x);
    return x;
  };
  // The result is read where the call left it (a host reads it in place).
  auto dyn_call = [&](const marshal::engine::Plan* p, const std::vector<marshal::engine::Value>& args,
                      marshal::engine::CallResult& r) -> const marshal::engine::Value& {
    r.out.clear();
    p->call(args, r, err);
    return r.ret;
  };
  auto num = [](const marshal::engine::Value& v) {
    return v.is<double>() ? v.as<double>() : v.is<std::uint64_t>() ? static_cast<double>(v.as<std::uint64_t>())
                                                                   : static_cast<double>(v.as<std::int64_t>());
  };

  // ---- add_i32 ----
  ffi_cif cif_add;
  ffi_type* add_args[] = {&ffi_type_sint32, &ffi_type_sint32};
  ffi_prep_cif(&cif_add, FFI_DEFAULT_ABI, 2, &ffi_type_sint32, add_args);
  add("add_i32", C, 1, [](long n) {
    int64_t t = 0;
    for (long i = 0; i < n; ++i) t += add_i32(static_cast<int32_t>(i), 3);
    return static_cast<double>(t);
  });
  add("add_i32", FFI, 1, [&](long n) {
    int64_t t = 0;
    for (long i = 0; i < n; ++i) {
      int32_t a = static_cast<int32_t>(i), b = 3;
      ffi_arg r;
      void* av[] = {&a, &b};
      ffi_call(&cif_add, FFI_FN(add_i32), &r, av);
      t += static_cast<int32_t>(r);
    }
    return static_cast<double>(t);
  });
  auto typed_add = lib.function<int32_t(int32_t, int32_t)>("add_i32");
  expect(typed_add(1, 2) == 3, "typed add_i32");
  add("add_i32", TYPED, 1, [&](long n) {
    int64_t t = 0;
    for (long i = 0; i < n; ++i) t += typed_add(static_cast<int32_t>(i), 3);
    return static_cast<double>(t);
  });
  const marshal::engine::Plan* p_add = plan(*dyn, "add_i32");
  {
    marshal::engine::CallResult r;
    expect(num(dyn_call(p_add, {1, 2}, r)) == 3, "dynamic add_i32");
  }
  add("add_i32", DYN, slow, [&](long n) {
    double t = 0;
    std::vector<marshal::engine::Value> args{0, 3};
    marshal::engine::CallResult r;
    for (long i = 0; i < n; ++i) {
      args[0] = marshal::engine::Value(static_cast<std::int64_t>(i));
      t += num(dyn_call(p_add, args, r));
    }
    return t;
  });
  marshal_function* c_add = c_fn(c_pinvoke, "add_i32");
  add("add_i32", CAPI, slow, [&](long n) {
    int64_t t = 0;
    marshal_value* three = mv_int64(3);
    marshal_value* a = mv_int64(0);
    marshal_result* r = mv_result();
    for (long i = 0; i < n; ++i) {
      marshal_value_set_int64(a, i);
      t += c_int(marshal_result_return(c_call(c_add, {a, three}, r)));
    }
    marshal_result_release(r);
    marshal_value_release(a);
    marshal_value_release(three);
    return static_cast<double>(t);
  });

  // ---- sum_f64: double[1000] in ----
  std::vector<double> data(1000);
  for (int i = 0; i < 1000; ++i) data[static_cast<std::size_t>(i)] = i;
  ffi_cif cif_sum;
  ffi_type* sum_args[] = {&ffi_type_pointer, &ffi_type_uint64};
  ffi_prep_cif(&cif_sum, FFI_DEFAULT_ABI, 2, &ffi_type_double, sum_args);
  add("sum_f64", C, 200, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) t += sum_in_f64_array(data.data(), 1000);
    return t;
  });
  add("sum_f64", FFI, 200, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) {
      const double* p = data.data();
      size_t k = 1000;
      double r;
      void* av[] = {&p, &k};
      ffi_call(&cif_sum, FFI_FN(sum_in_f64_array), &r, av);
      t += r;
    }
    return t;
  });
  auto typed_sum = lib.function<double(std::span<const double>, size_t)>("sum_in_f64_array");
  expect(typed_sum(data, 1000) == 499500, "typed sum_f64");
  add("sum_f64", TYPED, 200, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) t += typed_sum(data, 1000);
    return t;
  });
  // Dynamic values and the C API pass the array as host-owned native memory,
  // as the peers' drivers do (a ctypes array, cffi's ffi.new, a Float64Array):
  // one copy for an `in` array, no conversion per element.
  const marshal::engine::Plan* p_sum = plan(*dyn, "sum_in_f64_array");
  auto dbox = marshal::engine::native_new(ctx.types(), ctx.types().find_primitive("double"), data.size());
  std::memcpy(dbox->data(), data.data(), data.size() * sizeof(double));
  add("sum_f64", DYN, 200 * slow, [&](long n) {
    double t = 0;
    std::vector<marshal::engine::Value> args{marshal::engine::Value(dbox), 1000};
    marshal::engine::CallResult r;
    for (long i = 0; i < n; ++i) t += num(dyn_call(p_sum, args, r));
    return t;
  });
  marshal_function* c_sum = c_fn(c_pinvoke, "sum_in_f64_array");
  add("sum_f64", CAPI, 200 * slow, [&](long n) {
    double t = 0;
    marshal_value* list = c_native("double", data.size(), data.data());
    marshal_value* k = mv_uint64(1000);
    marshal_result* r = mv_result();
    for (long i = 0; i < n; ++i) t += c_double(marshal_result_return(c_call(c_sum, {list, k}, r)));
    marshal_result_release(r);
    marshal_value_release(list);
    marshal_value_release(k);
    return t;
  });

  // ---- utf8_len: a 64-byte host string ----
  const std::string text64 = kText64;
  ffi_cif cif_len;
  ffi_type* len_args[] = {&ffi_type_pointer};
  ffi_prep_cif(&cif_len, FFI_DEFAULT_ABI, 1, &ffi_type_uint64, len_args);
  add("utf8_len", C, 2, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) t += static_cast<double>(len_in_utf8(text64.c_str()));
    return t;
  });
  add("utf8_len", FFI, 2, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) {
      const char* s = text64.c_str();
      ffi_arg r;
      void* av[] = {&s};
      ffi_call(&cif_len, FFI_FN(len_in_utf8), &r, av);
      t += static_cast<double>(r);
    }
    return t;
  });
  // The engine's three paths for a function taking one host string.
  auto string_rows = [&](const char* scenario, const char* fn, const std::string& text, std::size_t want,
                         long weight) {
    auto typed = lib.function<size_t(const std::string&)>(fn);
    expect(typed(text) == want, fn);
    add(scenario, TYPED, weight, [&, typed](long n) {
      double t = 0;
      for (long i = 0; i < n; ++i) t += static_cast<double>(typed(text));
      return t;
    });
    const marshal::engine::Plan* p = plan(*dyn, fn);
    add(scenario, DYN, weight, [&, p](long n) {
      double t = 0;
      std::vector<marshal::engine::Value> args{text};
      marshal::engine::CallResult r;
      for (long i = 0; i < n; ++i) t += num(dyn_call(p, args, r));
      return t;
    });
    marshal_function* c = c_fn(c_pinvoke, fn);
    add(scenario, CAPI, weight, [&, c](long n) {
      double t = 0;
      marshal_value* s = mv_string(text.data(), text.size());
      marshal_result* r = mv_result();
      for (long i = 0; i < n; ++i) t += static_cast<double>(c_int(marshal_result_return(c_call(c, {s}, r))));
      marshal_result_release(r);
      marshal_value_release(s);
      return t;
    });
  };
  string_rows("utf8_len", "len_in_utf8", text64, 64, slow);

  // ---- utf16_len: a UTF-8 host string passed as UTF-16 ----
  const std::string text16 = kText16;
  add("utf16_len", C, 2, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) t += static_cast<double>(len_in_utf16(kText16u));
    return t;
  });
  add("utf16_len", FFI, 2, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) {
      const char16_t* s = kText16u;
      ffi_arg r;
      void* av[] = {&s};
      ffi_call(&cif_len, FFI_FN(len_in_utf16), &r, av);
      t += static_cast<double>(r);
    }
    return t;
  });
  string_rows("utf16_len", "len_in_utf16", text16, 31, slow);

  // ---- vec2_add: structs by value ----
  ffi_type* v2_elems[] = {&ffi_type_double, &ffi_type_double, nullptr};
  ffi_type v2_type{0, 0, FFI_TYPE_STRUCT, v2_elems};
  ffi_type* vec_args[] = {&v2_type, &v2_type};
  ffi_cif cif_vec;
  ffi_prep_cif(&cif_vec, FFI_DEFAULT_ABI, 2, &v2_type, vec_args);
  add("vec2_add", C, 1, [](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) t += add_vec2(Vec2{static_cast<double>(i), 1}, Vec2{2, 3}).x;
    return t;
  });
  add("vec2_add", FFI, 1, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) {
      Vec2 a{static_cast<double>(i), 1}, b{2, 3}, r;
      void* av[] = {&a, &b};
      ffi_call(&cif_vec, FFI_FN(add_vec2), &r, av);
      t += r.x;
    }
    return t;
  });
  auto typed_vec = lib.function<V2(V2, V2)>("add_vec2");
  expect(typed_vec({1, 2}, {3, 4}).y == 6, "typed vec2_add");
  add("vec2_add", TYPED, 1, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) t += typed_vec({static_cast<double>(i), 1}, {2, 3}).x;
    return t;
  });
  const marshal::engine::Plan* p_vec = plan(*dyn, "add_vec2");
  add("vec2_add", DYN, slow, [&](long n) {
    double t = 0;
    marshal::engine::Record a{{"x", 0.0}, {"y", 1.0}}, b{{"x", 2.0}, {"y", 3.0}};
    std::vector<marshal::engine::Value> args{a, b};
    marshal::engine::CallResult r;
    for (long i = 0; i < n; ++i) {
      args[0].as<marshal::engine::Record>()[0].second = marshal::engine::Value(static_cast<double>(i));
      t += dyn_call(p_vec, args, r).field("x")->as<double>();
    }
    return t;
  });
  marshal_function* c_vec = c_fn(c_pinvoke, "add_vec2");
  add("vec2_add", CAPI, slow, [&](long n) {
    double t = 0;
    marshal_value *a = nullptr, *b = nullptr;
    marshal_value_create_from_json(R"({"x": 1.0, "y": 1.0})", &a);
    marshal_value_create_from_json(R"({"x": 2.0, "y": 3.0})", &b);
    marshal_result* r = mv_result();
    for (long i = 0; i < n; ++i) t += c_double(marshal_record_get(marshal_result_return(c_call(c_vec, {a, b}, r)), "x"));
    marshal_result_release(r);
    marshal_value_release(a);
    marshal_value_release(b);
    return t;
  });

  // ---- fill_i32: an out int32[256] ----
  std::vector<int32_t> out(256);
  ffi_cif cif_fill;
  ffi_type* fill_args[] = {&ffi_type_pointer, &ffi_type_uint64};
  ffi_prep_cif(&cif_fill, FFI_DEFAULT_ABI, 2, &ffi_type_void, fill_args);
  add("fill_i32", C, 20, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) { fill_out_i32_array(out.data(), 256); t += out[5]; }
    return t;
  });
  add("fill_i32", FFI, 20, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) {
      int32_t* p = out.data();
      size_t k = 256;
      void* av[] = {&p, &k};
      ffi_call(&cif_fill, FFI_FN(fill_out_i32_array), nullptr, av);
      t += out[5];
    }
    return t;
  });
  auto typed_fill = lib.function<void(marshal::out<std::vector<int32_t>>, size_t)>("fill_out_i32_array");
  {
    std::vector<int32_t> got;
    typed_fill(got, 256);
    expect(got.size() == 256 && got[255] == 255 * 255 - 3, "typed fill_i32");
  }
  add("fill_i32", TYPED, 20 * slow, [&](long n) {
    double t = 0;
    std::vector<int32_t> got;
    for (long i = 0; i < n; ++i) { typed_fill(got, 256); t += got[5]; }
    return t;
  });
  const marshal::engine::Plan* p_fill = plan(*dyn, "fill_out_i32_array");
  add("fill_i32", DYN, 20 * slow, [&](long n) {
    double t = 0;
    std::vector<marshal::engine::Value> args{256};
    marshal::engine::CallResult r;
    for (long i = 0; i < n; ++i) {
      dyn_call(p_fill, args, r);
      t += num(r.out[0].second.as<marshal::engine::List>()[5]);
    }
    return t;
  });
  marshal_function* c_fill = c_fn(c_pinvoke, "fill_out_i32_array");
  add("fill_i32", CAPI, 20 * slow, [&](long n) {
    double t = 0;
    marshal_value* k = mv_uint64(256);
    marshal_result* r = mv_result();
    for (long i = 0; i < n; ++i)
      t += static_cast<double>(c_int(marshal_list_get(marshal_result_out(c_call(c_fill, {k}, r), "out"), 5)));
    marshal_result_release(r);
    marshal_value_release(k);
    return t;
  });

  // ---- out_struct: an out Point* ----
  ffi_cif cif_pt;
  ffi_type* pt_args[] = {&ffi_type_pointer, &ffi_type_sint32, &ffi_type_sint32};
  ffi_prep_cif(&cif_pt, FFI_DEFAULT_ABI, 3, &ffi_type_void, pt_args);
  add("out_struct", C, 1, [](long n) {
    double t = 0;
    Point p;
    for (long i = 0; i < n; ++i) { get_out_point(&p, static_cast<int32_t>(i), 1); t += p.x; }
    return t;
  });
  add("out_struct", FFI, 1, [&](long n) {
    double t = 0;
    Point p;
    for (long i = 0; i < n; ++i) {
      Point* pp = &p;
      int32_t x = static_cast<int32_t>(i), y = 1;
      void* av[] = {&pp, &x, &y};
      ffi_call(&cif_pt, FFI_FN(get_out_point), nullptr, av);
      t += p.x;
    }
    return t;
  });
  auto typed_pt = lib.function<void(marshal::out<P>, int32_t, int32_t)>("get_out_point");
  {
    P got{};
    typed_pt(got, 3, 4);
    expect(got.x == 3 && got.y == 4, "typed out_struct");
  }
  add("out_struct", TYPED, slow, [&](long n) {
    double t = 0;
    P got{};
    for (long i = 0; i < n; ++i) { typed_pt(got, static_cast<int32_t>(i), 1); t += got.x; }
    return t;
  });
  const marshal::engine::Plan* p_pt = plan(*dyn, "get_out_point");
  add("out_struct", DYN, slow, [&](long n) {
    double t = 0;
    std::vector<marshal::engine::Value> args{0, 1};
    marshal::engine::CallResult r;
    for (long i = 0; i < n; ++i) {
      args[0] = marshal::engine::Value(static_cast<std::int64_t>(i));
      dyn_call(p_pt, args, r);
      t += num(*r.out[0].second.field("x"));
    }
    return t;
  });
  marshal_function* c_pt = c_fn(c_pinvoke, "get_out_point");
  add("out_struct", CAPI, slow, [&](long n) {
    double t = 0;
    marshal_value* one = mv_int64(1);
    marshal_value* x = mv_int64(0);
    marshal_result* r = mv_result();
    for (long i = 0; i < n; ++i) {
      marshal_value_set_int64(x, i & 0xffff);
      t += static_cast<double>(c_int(marshal_record_get(marshal_result_out(c_call(c_pt, {x, one}, r), "out"), "x")));
    }
    marshal_result_release(r);
    marshal_value_release(x);
    marshal_value_release(one);
    return t;
  });

  // ---- out_string: a caller-allocated output string (char[64]) ----
  char buf[64];
  ffi_cif cif_rev;
  ffi_type* rev_args[] = {&ffi_type_pointer, &ffi_type_pointer, &ffi_type_uint64};
  ffi_prep_cif(&cif_rev, FFI_DEFAULT_ABI, 3, &ffi_type_uint64, rev_args);
  add("out_string", C, 2, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) t += static_cast<double>(reverse_out_utf8("marshal", buf, 64)) + buf[0];
    return t;
  });
  add("out_string", FFI, 2, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) {
      const char* in = "marshal";
      char* o = buf;
      size_t cap = 64;
      ffi_arg r;
      void* av[] = {&in, &o, &cap};
      ffi_call(&cif_rev, FFI_FN(reverse_out_utf8), &r, av);
      t += static_cast<double>(r) + buf[0];
    }
    return t;
  });
  auto typed_rev = lib.function<size_t(std::string, marshal::out<std::string>, size_t)>("reverse_out_utf8");
  {
    std::string got;
    expect(typed_rev("marshal", got, 64) == 7 && got == "lahsram", "typed out_string");
  }
  add("out_string", TYPED, slow, [&](long n) {
    double t = 0;
    std::string got;
    const std::string in = "marshal";
    for (long i = 0; i < n; ++i) t += static_cast<double>(typed_rev(in, got, 64)) + got[0];
    return t;
  });
  const marshal::engine::Plan* p_rev = plan(*dyn, "reverse_out_utf8");
  add("out_string", DYN, slow, [&](long n) {
    double t = 0;
    std::vector<marshal::engine::Value> args{"marshal", 64};
    marshal::engine::CallResult r;
    for (long i = 0; i < n; ++i) t += num(dyn_call(p_rev, args, r)) + r.out[0].second.as<std::string>()[0];
    return t;
  });
  marshal_function* c_rev = c_fn(c_pinvoke, "reverse_out_utf8");
  add("out_string", CAPI, slow, [&](long n) {
    double t = 0;
    marshal_value* in = mv_string("marshal", 7);
    marshal_value* cap = mv_uint64(64);
    marshal_result* r = mv_result();
    for (long i = 0; i < n; ++i) {
      const char* s = nullptr;
      size_t len = 0;
      marshal_value_get_string(marshal_result_out(c_call(c_rev, {in, cap}, r), "out"), &s, &len);
      t += static_cast<double>(len) + s[0];
    }
    marshal_result_release(r);
    marshal_value_release(in);
    marshal_value_release(cap);
    return t;
  });

  // ---- struct_array: Point[100] in ----
  std::vector<P> pts(100);
  for (int i = 0; i < 100; ++i) pts[static_cast<std::size_t>(i)] = {i, -i};
  int64_t want = 0;
  for (int i = 0; i < 100; ++i) want += i * 10 - i;
  ffi_cif cif_pts;
  ffi_type* pts_args[] = {&ffi_type_pointer, &ffi_type_uint64};
  ffi_prep_cif(&cif_pts, FFI_DEFAULT_ABI, 2, &ffi_type_sint64, pts_args);
  add("struct_array", C, 20, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) t += static_cast<double>(sum_in_point_array(reinterpret_cast<Point*>(pts.data()), 100));
    return t;
  });
  add("struct_array", FFI, 20, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) {
      const P* p = pts.data();
      size_t k = 100;
      ffi_arg r;
      void* av[] = {&p, &k};
      ffi_call(&cif_pts, FFI_FN(sum_in_point_array), &r, av);
      t += static_cast<double>(static_cast<int64_t>(r));
    }
    return t;
  });
  auto typed_pts = lib.function<int64_t(std::span<const P>, size_t)>("sum_in_point_array");
  expect(typed_pts(pts, 100) == want, "typed struct_array");
  add("struct_array", TYPED, 20, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) t += static_cast<double>(typed_pts(pts, 100));
    return t;
  });
  const marshal::engine::Plan* p_pts = plan(*dyn, "sum_in_point_array");
  auto pbox = marshal::engine::native_new(ctx.types(), dyn->typemap().find_type("Point"), pts.size());
  std::memcpy(pbox->data(), pts.data(), pts.size() * sizeof(P));
  add("struct_array", DYN, 20 * slow, [&](long n) {
    double t = 0;
    std::vector<marshal::engine::Value> args{marshal::engine::Value(pbox), 100};
    marshal::engine::CallResult r;
    for (long i = 0; i < n; ++i) t += num(dyn_call(p_pts, args, r));
    return t;
  });
  marshal_function* c_pts = c_fn(c_pinvoke, "sum_in_point_array");
  add("struct_array", CAPI, 20 * slow, [&](long n) {
    double t = 0;
    marshal_value* list = c_native("Point", pts.size(), pts.data());
    marshal_value* k = mv_uint64(100);
    marshal_result* r = mv_result();
    for (long i = 0; i < n; ++i) t += static_cast<double>(c_int(marshal_result_return(c_call(c_pts, {list, k}, r))));
    marshal_result_release(r);
    marshal_value_release(list);
    marshal_value_release(k);
    return t;
  });

  // ---- call_cb: native code calls a host callback once ----
  ffi_cif cif_cb, cif_apply;
  ffi_type* cb_args[] = {&ffi_type_sint32};
  ffi_prep_cif(&cif_cb, FFI_DEFAULT_ABI, 1, &ffi_type_sint32, cb_args);
  ffi_type* apply_args[] = {&ffi_type_pointer, &ffi_type_sint32};
  ffi_prep_cif(&cif_apply, FFI_DEFAULT_ABI, 2, &ffi_type_sint32, apply_args);
  void* closure_code = nullptr;
  auto* closure = static_cast<ffi_closure*>(ffi_closure_alloc(sizeof(ffi_closure), &closure_code));
  ffi_prep_closure_loc(closure, &cif_cb, libffi_plus_one, nullptr, closure_code);
  add("call_cb", C, 1, [](long n) {
    int64_t t = 0;
    for (long i = 0; i < n; ++i) t += apply_i32(plus_one, static_cast<int32_t>(i));
    return static_cast<double>(t);
  });
  add("call_cb", FFI, 1, [&](long n) {
    int64_t t = 0;
    for (long i = 0; i < n; ++i) {
      void* f = closure_code;
      int32_t v = static_cast<int32_t>(i);
      ffi_arg r;
      void* av[] = {&f, &v};
      ffi_call(&cif_apply, FFI_FN(apply_i32), &r, av);
      t += static_cast<int32_t>(r);
    }
    return static_cast<double>(t);
  });
  auto typed_apply = cblib.function<int32_t(marshal::callback<int32_t(int32_t)>, int32_t)>("apply_i32");
  marshal::callback<int32_t(int32_t)> typed_cb([](int32_t v) { return v + 1; });
  expect(typed_apply(typed_cb, 41) == 42, "typed call_cb");
  add("call_cb", TYPED, slow, [&](long n) {
    int64_t t = 0;
    for (long i = 0; i < n; ++i) t += typed_apply(typed_cb, static_cast<int32_t>(i));
    return static_cast<double>(t);
  });
  auto host_plus_one = std::make_shared<marshal::engine::HostFunction>(marshal::engine::HostFunction{
      "plus_one", [](const std::vector<marshal::engine::Value>& a, marshal::engine::Value& r, std::string&) {
        r = marshal::engine::Value(a[0].as<std::int64_t>() + 1);
        return true;
      }});
  const marshal::engine::Plan* p_apply = plan(*dyn_cb, "apply_i32");
  {
    marshal::engine::CallResult r;
    expect(num(dyn_call(p_apply, {marshal::engine::Value(host_plus_one), 41}, r)) == 42, "dynamic call_cb");
  }
  // Dynamic values and the C API pass a callback registered once, as the
  // peers' drivers do (koffi.register, a ctypes CFUNCTYPE object, ffi.callback).
  auto registered_plus_one = dyn_cb->callback("IntFn", host_plus_one, err);
  add("call_cb", DYN, slow, [&](long n) {
    double t = 0;
    std::vector<marshal::engine::Value> args{marshal::engine::Value(registered_plus_one), 0};
    marshal::engine::CallResult r;
    for (long i = 0; i < n; ++i) {
      args[1] = marshal::engine::Value(static_cast<std::int64_t>(i));
      t += num(dyn_call(p_apply, args, r));
    }
    return t;
  });
  marshal_function* c_apply = c_fn(c_callbacks, "apply_i32");
  marshal_value* c_plus_one = mv_function("plus_one", host_plus_one_c, nullptr, nullptr);
  marshal_value* c_registered = nullptr;
  marshal_value_create_callback(c_callbacks, "IntFn", c_plus_one, &c_registered);
  add("call_cb", CAPI, slow, [&](long n) {
    int64_t t = 0;
    marshal_value* v = mv_int64(0);
    marshal_result* r = mv_result();
    for (long i = 0; i < n; ++i) {
      marshal_value_set_int64(v, i & 0xffff);
      t += c_int(marshal_result_return(c_call(c_apply, {c_registered, v}, r)));
    }
    marshal_result_release(r);
    marshal_value_release(v);
    return static_cast<double>(t);
  });

  // ---- cb_thread: a callback called from a thread the native library started ----
  add("cb_thread", C, 2, [](long n) { return static_cast<double>(call_from_threads(plus_one, 1, static_cast<int32_t>(n))); });
  add("cb_thread", FFI, 2, [&](long n) {
    return static_cast<double>(call_from_threads(reinterpret_cast<cb_i32>(closure_code), 1, static_cast<int32_t>(n)));
  });
  auto typed_threads = cblib.function<int64_t(marshal::callback<int32_t(int32_t)>, int32_t, int32_t)>("call_from_threads");
  expect(typed_threads(typed_cb, 1, 10) == 55, "typed cb_thread");
  add("cb_thread", TYPED, slow, [&](long n) {
    return static_cast<double>(typed_threads(typed_cb, 1, static_cast<int32_t>(n)));
  });
  const marshal::engine::Plan* p_threads = plan(*dyn_cb, "call_from_threads");
  add("cb_thread", DYN, slow, [&](long n) {
    marshal::engine::CallResult r;
    return num(dyn_call(p_threads, {marshal::engine::Value(registered_plus_one), 1, marshal::engine::Value(static_cast<std::int64_t>(n))}, r));
  });
  marshal_function* c_threads = c_fn(c_callbacks, "call_from_threads");
  add("cb_thread", CAPI, slow, [&](long n) {
    marshal_value* one = mv_int64(1);
    marshal_value* k = mv_int64(n);
    marshal_result* r = mv_result();
    const double t = static_cast<double>(c_int(marshal_result_return(c_call(c_threads, {c_registered, one, k}, r))));
    marshal_result_release(r);
    marshal_value_release(one);
    marshal_value_release(k);
    return t;
  });

  // ---- vtable_method: ICounter::Add through the object's vtable ----
  {
    ICounter* c = counter_create(0);
    add("vtable_method", C, 1, [c](long n) {
      int64_t t = 0;
      for (long i = 0; i < n; ++i) t += c->vtbl->Add(c, 1);
      return static_cast<double>(t);
    });
    ffi_cif cif_m;
    ffi_type* m_args[] = {&ffi_type_pointer, &ffi_type_sint32};
    ffi_prep_cif(&cif_m, FFI_DEFAULT_ABI, 2, &ffi_type_sint32, m_args);
    add("vtable_method", FFI, 1, [&](long n) {
      int64_t t = 0;
      for (long i = 0; i < n; ++i) {
        int32_t by = 1;
        ffi_arg r;
        void* av[] = {&c, &by};
        ffi_call(&cif_m, FFI_FN(c->vtbl->Add), &r, av);
        t += static_cast<int32_t>(r);
      }
      return static_cast<double>(t);
    });
    c->vtbl->Release(c);
  }
  {
    marshal::object obj = olib.create("Counter", 0);
    auto bound = obj.bind<int32_t(int32_t)>("Add");
    expect(bound(1) == 1, "typed vtable_method");
    add("vtable_method", TYPED, 1, [&](long n) {
      int64_t t = 0;
      for (long i = 0; i < n; ++i) t += bound(1);
      return static_cast<double>(t);
    });
    marshal::engine::Value dobj;
    dyn_obj->objects().create("Counter", std::vector<marshal::engine::Value>{0}, dobj, err);
    const marshal::engine::ObjectRef& ref = dobj.as<marshal::engine::ObjectRef>();
    add("vtable_method", DYN, slow, [&](long n) {
      double t = 0;
      std::vector<marshal::engine::Value> args{1};
      marshal::engine::CallResult r;
      for (long i = 0; i < n; ++i) {
        r.out.clear();
        dyn_obj->objects().call(ref, "Add", args, r, err);
        t += num(r.ret);
      }
      return t;
    });
    marshal_value* cobj = nullptr;
    marshal_value* zero = mv_int64(0);
    marshal_value_create_object(c_objects, "Counter", &zero, 1, &cobj);
    add("vtable_method", CAPI, slow, [&](long n) {
      int64_t t = 0;
      marshal_value* one = mv_int64(1);
      marshal_result* r = mv_result();
      for (long i = 0; i < n; ++i) {
        marshal_object_call_into(cobj, "Add", &one, 1, r);
        t += c_int(marshal_result_return(r));
      }
      marshal_result_release(r);
      marshal_value_release(one);
      return static_cast<double>(t);
    });
    marshal_value_release(cobj);
    marshal_value_release(zero);
  }

  // ---- apartments: a call inside the object's STA, and one through a proxy from the MTA ----
  {
    if (wanted("same_apartment", C) || wanted("proxy_call", C)) {  // one measurement, two rows
      ICounter* c = counter_create(0);
      auto direct = measure(iterations, reps, [c](long n) {
        int64_t t = 0;
        for (long i = 0; i < n; ++i) t += c->vtbl->Add(c, 1);
        return static_cast<double>(t);
      });
      c->vtbl->Release(c);
      if (wanted("same_apartment", C)) rows.push_back({"same_apartment", C, direct});
      if (wanted("proxy_call", C)) rows.push_back({"proxy_call", C, direct});
    }
    std::thread same([&] {
      marshal::apartment_scope sta(marshal::apartment_scope::kind::sta);
      marshal::object obj = olib.create("ApartmentCounter", 0);
      expect(!obj.is_proxy(), "an apartment class created in an STA is direct");
      auto bound = obj.bind<int32_t(int32_t)>("Add");
      add("same_apartment", TYPED, 1, [&](long n) {
        int64_t t = 0;
        for (long i = 0; i < n; ++i) t += bound(1);
        return static_cast<double>(t);
      });
      const marshal::engine::ObjectRef& ref = obj.value().as<marshal::engine::ObjectRef>();
      marshal::engine::ObjectSpace& space = marshal::engine::library_of(ref).objects();
      add("same_apartment", DYN, slow, [&](long n) {
        double t = 0;
        std::vector<marshal::engine::Value> args{1};
        marshal::engine::CallResult r;
        for (long i = 0; i < n; ++i) {
          space.call(ref, "Add", args, r, err);
          t += num(r.ret);
        }
        return t;
      });
    });
    same.join();
    std::atomic<bool> stop{false};
    std::promise<uint64_t> token;
    std::thread owner([&] {
      marshal::apartment_scope sta(marshal::apartment_scope::kind::sta);
      marshal::object obj = olib.create("ApartmentCounter", 0);
      token.set_value(marshal::marshal_interface(obj));
      sta.run_until([&] { return stop.load(); });
    });
    {
      marshal::apartment_scope mta(marshal::apartment_scope::kind::mta);
      marshal::object proxy = marshal::unmarshal_interface(token.get_future().get());
      expect(proxy.is_proxy() && proxy.call<int32_t>("Add", 1) == 1, "proxied call");
      auto bound = proxy.bind<int32_t(int32_t)>("Add");
      add("proxy_call", TYPED, 1000, [&](long n) {
        int64_t t = 0;
        for (long i = 0; i < n; ++i) t += bound(1);
        return static_cast<double>(t);
      });
      const marshal::engine::ObjectRef& ref = proxy.value().as<marshal::engine::ObjectRef>();
      marshal::engine::ObjectSpace& space = marshal::engine::library_of(ref).objects();
      add("proxy_call", DYN, 1000, [&](long n) {
        double t = 0;
        std::vector<marshal::engine::Value> args{1};
        marshal::engine::CallResult r;
        for (long i = 0; i < n; ++i) {
          space.call(ref, "Add", args, r, err);
          t += num(r.ret);
        }
        return t;
      });
    }
    stop = true;
    owner.join();
  }

  // ---- the floor of proxy_call: a raw hand-off round trip between two threads ----
  // The same wait strategy as an apartment's (spin a few microseconds with pause,
  // yielding now and then, then sleep on a futex), the vtable call made on the
  // other thread; no marshaling, no queue, no allocation.
  {
    ICounter* c = counter_create(0);
    std::atomic<uint32_t> request{0}, reply{0};
    std::atomic<bool> quit{false};
    int32_t argument = 0, answer = 0;  // published by the release store of request / reply
    auto wait_change = [](std::atomic<uint32_t>& a, uint32_t old) {
      for (int i = 0; i < 4000; ++i) {
        if (a.load(std::memory_order_acquire) != old) return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (i % 64 == 63) std::this_thread::yield();
      }
      while (a.load(std::memory_order_acquire) == old) a.wait(old, std::memory_order_acquire);
    };
    std::thread server([&] {
      uint32_t seen = 0;
      for (;;) {
        wait_change(request, seen);
        seen = request.load(std::memory_order_acquire);
        if (quit.load(std::memory_order_acquire)) return;
        answer = c->vtbl->Add(c, argument);
        reply.store(seen, std::memory_order_release);
        reply.notify_one();
      }
    });
    add("proxy_call", HANDOFF, 1000, [&](long n) {
      int64_t t = 0;
      for (long i = 0; i < n; ++i) {
        argument = 1;
        const uint32_t ticket = request.load(std::memory_order_relaxed) + 1;
        request.store(ticket, std::memory_order_release);
        request.notify_one();
        wait_change(reply, ticket - 1);
        t += answer;
      }
      return static_cast<double>(t);
    });
    quit.store(true, std::memory_order_release);
    request.fetch_add(1, std::memory_order_release);
    request.notify_one();
    server.join();
    if (wanted("proxy_call", HANDOFF)) expect(c->vtbl->Add(c, 0) > 0, "the hand-off floor called the object");
    c->vtbl->Release(c);
  }

  // ---- scale rows: large data, as bytes per second next to memcpy of the same bytes ----
  // Each scenario runs iterations / 20000 calls (100 in a full run). "memcpy" copies
  // the scenario's input bytes (its output bytes for fill) into a scratch buffer.
  {
    const long big = 20000, huge = 200000;  // weights: engine paths building host values per element
    std::vector<char> scratch;
    auto memcpy_row = [&](const char* scenario, const void* src, std::size_t bytes) {
      scratch.resize(bytes);
      add(scenario, "memcpy", big, [&, src, bytes](long n) {
        double t = 0;
        for (long i = 0; i < n; ++i) {
          std::memcpy(scratch.data(), src, bytes);
          asm volatile("" : : "r"(scratch.data()) : "memory");  // the copy is used
          t += scratch[bytes / 2];
        }
        return t;
      });
    };

    // sum_f64 over 10^6 doubles (8 MB in)
    const std::size_t nd = 1000000;
    std::vector<double> many(nd);
    for (std::size_t i = 0; i < nd; ++i) many[i] = static_cast<double>(i % 1000);
    memcpy_row("scale_sum_f64", many.data(), nd * sizeof(double));
    add("scale_sum_f64", C, big, [&](long n) {
      double t = 0;
      for (long i = 0; i < n; ++i) t += sum_in_f64_array(many.data(), nd);
      return t;
    });
    add("scale_sum_f64", TYPED, big, [&](long n) {
      double t = 0;
      for (long i = 0; i < n; ++i) t += typed_sum(many, nd);
      return t;
    });
    auto many_box = marshal::engine::native_new(ctx.types(), ctx.types().find_primitive("double"), nd);
    std::memcpy(many_box->data(), many.data(), nd * sizeof(double));
    add("scale_sum_f64", DYN, big, [&](long n) {
      double t = 0;
      std::vector<marshal::engine::Value> args{marshal::engine::Value(many_box), static_cast<std::uint64_t>(nd)};
      marshal::engine::CallResult r;
      for (long i = 0; i < n; ++i) t += num(dyn_call(p_sum, args, r));
      return t;
    });
    add("scale_sum_f64", CAPI, big, [&](long n) {
      double t = 0;
      marshal_value* list = c_native("double", nd, many.data());
      marshal_value* k = mv_uint64(nd);
      marshal_result* r = mv_result();
      for (long i = 0; i < n; ++i) t += c_double(marshal_result_return(c_call(c_sum, {list, k}, r)));
      marshal_result_release(r);
      marshal_value_release(list);
      marshal_value_release(k);
      return t;
    });

    // utf8_len and utf16_len of a 1 MiB text, ASCII and mixed (2- and 3-byte characters)
    auto text_of = [](const std::string& unit) {
      std::string t;
      while (t.size() + unit.size() <= (1u << 20)) t += unit;
      return t;
    };
    const std::string ascii = text_of("marshal: P/Invoke for any host. ");
    const std::string mixed = text_of(kText16 + std::string(" "));
    auto utf16_of = [](const std::string& u8) {  // well-formed input, no 4-byte sequences
      std::u16string out;
      for (std::size_t i = 0; i < u8.size();) {
        const unsigned char c = static_cast<unsigned char>(u8[i]);
        const int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : 3;
        char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : (c & 0x0F);
        for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(u8[i + k]) & 0x3F);
        out.push_back(static_cast<char16_t>(cp));
        i += static_cast<std::size_t>(len);
      }
      return out;
    };
    const std::u16string ascii16 = utf16_of(ascii), mixed16 = utf16_of(mixed);
    auto text_rows = [&](const char* scenario, const char* fn, const std::string& text, const std::u16string& text16,
                         bool wide) {
      memcpy_row(scenario, text.data(), text.size());
      add(scenario, C, big, [&, wide](long n) {
        double t = 0;
        for (long i = 0; i < n; ++i)
          t += static_cast<double>(wide ? len_in_utf16(text16.c_str()) : len_in_utf8(text.c_str()));
        return t;
      });
      string_rows(scenario, fn, text, wide ? text16.size() : text.size(), big);
    };
    text_rows("scale_utf8_ascii", "len_in_utf8", ascii, ascii16, false);
    text_rows("scale_utf8_mixed", "len_in_utf8", mixed, mixed16, false);
    text_rows("scale_utf16_ascii", "len_in_utf16", ascii, ascii16, true);
    text_rows("scale_utf16_mixed", "len_in_utf16", mixed, mixed16, true);

    // fill_i32 of 10^6 elements (4 MB out)
    const std::size_t nf = 1000000;
    std::vector<int32_t> filled(nf);
    memcpy_row("scale_fill_i32", filled.data(), nf * sizeof(int32_t));
    add("scale_fill_i32", C, big, [&](long n) {
      double t = 0;
      for (long i = 0; i < n; ++i) { fill_out_i32_array(filled.data(), nf); t += filled[5]; }
      return t;
    });
    add("scale_fill_i32", TYPED, huge, [&](long n) {
      double t = 0;
      std::vector<int32_t> got;
      for (long i = 0; i < n; ++i) { typed_fill(got, nf); t += got[5]; }
      return t;
    });
    add("scale_fill_i32", DYN, huge, [&](long n) {
      double t = 0;
      std::vector<marshal::engine::Value> args{static_cast<std::uint64_t>(nf)};
      marshal::engine::CallResult r;
      for (long i = 0; i < n; ++i) {
        dyn_call(p_fill, args, r);
        t += num(r.out[0].second.as<marshal::engine::List>()[5]);
      }
      return t;
    });
    add("scale_fill_i32", CAPI, huge, [&](long n) {
      double t = 0;
      marshal_value* k = mv_uint64(nf);
      marshal_result* r = mv_result();
      for (long i = 0; i < n; ++i)
        t += static_cast<double>(c_int(marshal_list_get(marshal_result_out(c_call(c_fill, {k}, r), "out"), 5)));
      marshal_result_release(r);
      marshal_value_release(k);
      return t;
    });

    // struct_array of 10^5 points (800 KB in)
    const std::size_t np = 100000;
    std::vector<P> points(np);
    for (std::size_t i = 0; i < np; ++i) points[i] = {static_cast<int32_t>(i % 1000), -static_cast<int32_t>(i % 1000)};
    memcpy_row("scale_struct_array", points.data(), np * sizeof(P));
    add("scale_struct_array", C, big, [&](long n) {
      double t = 0;
      for (long i = 0; i < n; ++i) t += static_cast<double>(sum_in_point_array(reinterpret_cast<Point*>(points.data()), np));
      return t;
    });
    add("scale_struct_array", TYPED, big, [&](long n) {
      double t = 0;
      for (long i = 0; i < n; ++i) t += static_cast<double>(typed_pts(points, np));
      return t;
    });
    auto points_box = marshal::engine::native_new(ctx.types(), dyn->typemap().find_type("Point"), np);
    std::memcpy(points_box->data(), points.data(), np * sizeof(P));
    add("scale_struct_array", DYN, big, [&](long n) {
      double t = 0;
      std::vector<marshal::engine::Value> args{marshal::engine::Value(points_box), static_cast<std::uint64_t>(np)};
      marshal::engine::CallResult r;
      for (long i = 0; i < n; ++i) t += num(dyn_call(p_pts, args, r));
      return t;
    });
    add("scale_struct_array", CAPI, big, [&](long n) {
      double t = 0;
      marshal_value* list = c_native("Point", np, points.data());
      marshal_value* k = mv_uint64(np);
      marshal_result* r = mv_result();
      for (long i = 0; i < n; ++i) t += static_cast<double>(c_int(marshal_result_return(c_call(c_pts, {list, k}, r))));
      marshal_result_release(r);
      marshal_value_release(list);
      marshal_value_release(k);
      return t;
    });
  }

  // ---- report ----
  std::vector<std::string> order;
  for (const Row& r : rows)
    if (std::find(order.begin(), order.end(), r.scenario) == order.end()) order.push_back(r.scenario);
  if (json) {
    print_json(rows);
  } else {
    std::printf("%-15s %-24s %10s %16s %9s %9s\n", "scenario", "implementation", "ns/call", "spread (min-max)",
                "x direct", "x libffi");
    for (const std::string& sc : order) {
      double direct = 0, ffi = 0;
      for (const Row& q : rows)
        if (q.scenario == sc) {
          if (q.impl == C) direct = q.s.median;
          if (q.impl == FFI) ffi = q.s.median;
        }
      for (const Row& r : rows) {
        if (r.scenario != sc) continue;
        char ffi_ratio[32] = "-";
        if (ffi > 0) std::snprintf(ffi_ratio, sizeof ffi_ratio, "%.2f", r.s.median / ffi);
        std::printf("%-15s %-24s %10.1f %7.1f-%-8.1f %9.2f %9s\n", r.scenario.c_str(), r.impl.c_str(), r.s.median,
                    r.s.low, r.s.high, r.s.median / direct, ffi_ratio);
      }
    }
  }
  marshal_callback_deactivate(c_registered);
  marshal_value_release(c_registered);
  marshal_value_release(c_plus_one);
  registered_plus_one->release();
  marshal_library_release(c_pinvoke);
  marshal_library_release(c_callbacks);
  marshal_library_release(c_objects);
  marshal_context_release(cctx);
  return failures == 0 ? 0 : 1;
}
