// marshal benchmarks: scenario x implementation, each figure a ratio to a direct
// C call measured in the same run. Scenarios: add_i32(a, b) and vec2_add(Vec2,
// Vec2) by value, a host callback, a vtable method of a native object
// (ICounter::Add) and a host object's method called by native code, from the
// fixture library. Implementations: direct C, raw libffi (prepared CIF), the
// typed C++ fast path, dynamic values, the C API.
// Usage: bench-calls [--iterations N] [--repetitions R]. Prints a table with the
// median ns per call of R repetitions, the spread, and the ratios.
#include "fixtures/callbacks.h"
#include "fixtures/objects.h"
#include "fixtures/pinvoke.h"
#include "marshal.h"
#include "marshal/marshal.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <thread>
#include <string>
#include <vector>

namespace {

volatile double sink;

struct Stat { double median, low, high; };

Stat measure(long iterations, int reps, const std::function<double(long)>& body) {
  body(std::max(1L, iterations / 20));  // warm up
  std::vector<double> ns;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    sink = body(iterations);
    auto t1 = std::chrono::steady_clock::now();
    ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(iterations));
  }
  std::sort(ns.begin(), ns.end());
  return {ns[ns.size() / 2], ns.front(), ns.back()};
}

struct V2 { double x, y; };

int32_t plus_one(int32_t v) { return v + 1; }

}  // namespace

int main(int argc, char** argv) {
  long iterations = 2000000;
  int reps = 5;
  std::string root = ".";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--iterations") && i + 1 < argc) iterations = std::atol(argv[++i]);
    else if (!std::strcmp(argv[i], "--repetitions") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--root") && i + 1 < argc) root = argv[++i];
  }
  const std::string typemap = root + "/tests/fixtures/pinvoke.json";

  // Each implementation checks its result once, then consumes every result.
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) { std::fprintf(stderr, "wrong result: %s\n", what); ++failures; }
  };

  // raw libffi
  ffi_cif cif_add, cif_vec;
  ffi_type* add_args[] = {&ffi_type_sint32, &ffi_type_sint32};
  ffi_prep_cif(&cif_add, FFI_DEFAULT_ABI, 2, &ffi_type_sint32, add_args);
  ffi_type* v2_elems[] = {&ffi_type_double, &ffi_type_double, nullptr};
  ffi_type v2_type{0, 0, FFI_TYPE_STRUCT, v2_elems};
  ffi_type* vec_args[] = {&v2_type, &v2_type};
  ffi_prep_cif(&cif_vec, FFI_DEFAULT_ABI, 2, &v2_type, vec_args);

  // marshal: typed, dynamic, C API
  marshal::library lib(typemap);
  auto typed_add = lib.function<int32_t(int32_t, int32_t)>("add_i32");
  auto typed_vec = lib.function<V2(V2, V2)>("add_vec2");
  marshal::Context ctx;
  marshal::LoadResult lr = ctx.load_file(typemap);
  std::string err;
  auto dyn_lib = marshal::Library::open(ctx, *lr.typemap, err);
  const marshal::Plan* dyn_add = dyn_lib->bind("add_i32", err);
  const marshal::Plan* dyn_vec = dyn_lib->bind("add_vec2", err);
  marshal_context* cctx = nullptr;
  marshal_typemap* ctm = nullptr;
  marshal_library* clib = nullptr;
  marshal_function *c_add = nullptr, *c_vec = nullptr;
  marshal_context_create(&cctx);
  marshal_typemap_load(cctx, typemap.c_str(), &ctm);
  marshal_library_open(ctm, &clib);
  marshal_library_function(clib, "add_i32", &c_add);
  marshal_library_function(clib, "add_vec2", &c_vec);

  struct Row { const char* scenario; const char* impl; Stat s; };
  std::vector<Row> rows;

  // ---- add_i32 ----
  rows.push_back({"add_i32", "direct C", measure(iterations, reps, [](long n) {
    int64_t t = 0;
    for (long i = 0; i < n; ++i) t += add_i32(static_cast<int32_t>(i), 3);
    return static_cast<double>(t);
  })});
  {
    int32_t a = 1, b = 2;
    ffi_arg r;
    void* av[] = {&a, &b};
    ffi_call(&cif_add, FFI_FN(add_i32), &r, av);
    expect(static_cast<int32_t>(r) == 3, "raw libffi add_i32");
  }
  rows.push_back({"add_i32", "raw libffi", measure(iterations, reps, [&](long n) {
    int64_t t = 0;
    for (long i = 0; i < n; ++i) {
      int32_t a = static_cast<int32_t>(i), b = 3;
      ffi_arg r;
      void* av[] = {&a, &b};
      ffi_call(&cif_add, FFI_FN(add_i32), &r, av);
      t += static_cast<int32_t>(r);
    }
    return static_cast<double>(t);
  })});
  expect(typed_add(1, 2) == 3, "typed add_i32");
  rows.push_back({"add_i32", "marshal typed C++", measure(iterations, reps, [&](long n) {
    int64_t t = 0;
    for (long i = 0; i < n; ++i) t += typed_add(static_cast<int32_t>(i), 3);
    return static_cast<double>(t);
  })});
  {
    marshal::CallResult r;
    std::vector<marshal::Value> args{1, 2};
    expect(dyn_add->call(args, r, err) && r.ret.as<std::int64_t>() == 3, "dynamic add_i32");
  }
  const long slow_n = std::max(1L, iterations / 10);
  rows.push_back({"add_i32", "marshal dynamic values", measure(slow_n, reps, [&](long n) {
    int64_t t = 0;
    std::vector<marshal::Value> args{0, 3};
    marshal::CallResult r;
    for (long i = 0; i < n; ++i) {
      args[0] = marshal::Value(static_cast<std::int64_t>(i));
      r.out.clear();
      dyn_add->call(args, r, err);
      t += r.ret.as<std::int64_t>();
    }
    return static_cast<double>(t);
  })});
  rows.push_back({"add_i32", "marshal C API", measure(slow_n, reps, [&](long n) {
    int64_t t = 0;
    marshal_value* three = marshal_value_int64(3);
    for (long i = 0; i < n; ++i) {
      marshal_value* a = marshal_value_int64(i);
      marshal_value* args[] = {a, three};
      marshal_result* r = nullptr;
      marshal_function_call(c_add, args, 2, &r);
      int64_t v = 0;
      marshal_value_get_int64(marshal_result_return(r), &v);
      t += v;
      marshal_result_release(r);
      marshal_value_release(a);
    }
    marshal_value_release(three);
    return static_cast<double>(t);
  })});

  // ---- vec2_add by value ----
  rows.push_back({"vec2_add", "direct C", measure(iterations, reps, [](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) t += add_vec2(Vec2{static_cast<double>(i), 1}, Vec2{2, 3}).x;
    return t;
  })});
  rows.push_back({"vec2_add", "raw libffi", measure(iterations, reps, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) {
      Vec2 a{static_cast<double>(i), 1}, b{2, 3}, r;
      void* av[] = {&a, &b};
      ffi_call(&cif_vec, FFI_FN(add_vec2), &r, av);
      t += r.x;
    }
    return t;
  })});
  expect(typed_vec({1, 2}, {3, 4}).y == 6, "typed vec2_add");
  rows.push_back({"vec2_add", "marshal typed C++", measure(iterations, reps, [&](long n) {
    double t = 0;
    for (long i = 0; i < n; ++i) t += typed_vec({static_cast<double>(i), 1}, {2, 3}).x;
    return t;
  })});
  rows.push_back({"vec2_add", "marshal dynamic values", measure(slow_n, reps, [&](long n) {
    double t = 0;
    marshal::Record a{{"x", 0.0}, {"y", 1.0}}, b{{"x", 2.0}, {"y", 3.0}};
    std::vector<marshal::Value> args{a, b};
    marshal::CallResult r;
    for (long i = 0; i < n; ++i) {
      args[0].as<marshal::Record>()[0].second = marshal::Value(static_cast<double>(i));
      r.out.clear();
      dyn_vec->call(args, r, err);
      t += r.ret.field("x")->as<double>();
    }
    return t;
  })});
  rows.push_back({"vec2_add", "marshal C API", measure(slow_n, reps, [&](long n) {
    double t = 0;
    marshal_value *a = nullptr, *b = nullptr;
    marshal_value_from_json(R"({"x": 1.0, "y": 1.0})", &a);
    marshal_value_from_json(R"({"x": 2.0, "y": 3.0})", &b);
    marshal_value* args[] = {a, b};
    for (long i = 0; i < n; ++i) {
      marshal_result* r = nullptr;
      marshal_function_call(c_vec, args, 2, &r);
      double x = 0;
      marshal_value_get_double(marshal_record_get(marshal_result_return(r), "x"), &x);
      t += x;
      marshal_result_release(r);
    }
    marshal_value_release(a);
    marshal_value_release(b);
    return t;
  })});

  // ---- call_cb: native code calls a host function ----
  marshal::Context cb_ctx;
  marshal::LoadResult cb_tm = cb_ctx.load_file(root + "/tests/fixtures/callbacks.json");
  auto cb_lib = marshal::Library::open(cb_ctx, *cb_tm.typemap, err);
  const marshal::Plan* apply = cb_lib->bind("apply_i32", err);
  auto host_plus_one = std::make_shared<marshal::HostFunction>(marshal::HostFunction{
      "plus_one", [](const std::vector<marshal::Value>& a, marshal::Value& r, std::string&) {
        r = marshal::Value(a[0].as<std::int64_t>() + 1);
        return true;
      }});
  rows.push_back({"call_cb", "direct C", measure(iterations, reps, [](long n) {
    int64_t t = 0;
    for (long i = 0; i < n; ++i) t += apply_i32(plus_one, static_cast<int32_t>(i));
    return static_cast<double>(t);
  })});
  {
    std::vector<marshal::Value> args{marshal::Value(host_plus_one), 41};
    marshal::CallResult r;
    expect(apply->call(args, r, err) && r.ret.as<std::int64_t>() == 42, "dynamic call_cb");
  }
  rows.push_back({"call_cb", "marshal dynamic values", measure(slow_n, reps, [&](long n) {
    int64_t t = 0;
    std::vector<marshal::Value> args{marshal::Value(host_plus_one), 0};
    marshal::CallResult r;
    for (long i = 0; i < n; ++i) {
      args[1] = marshal::Value(static_cast<std::int64_t>(i));
      r.out.clear();
      apply->call(args, r, err);
      t += r.ret.as<std::int64_t>();
    }
    return static_cast<double>(t);
  })});

  // ---- vtable_method: ICounter::Add through the object's vtable ----
  marshal::library olib(root + "/tests/fixtures/objects.json");
  {
    ICounter* c = counter_create(0);
    rows.push_back({"vtable_method", "direct C", measure(iterations, reps, [c](long n) {
      int64_t t = 0;
      for (long i = 0; i < n; ++i) t += c->vtbl->Add(c, 1);
      return static_cast<double>(t);
    })});
    ffi_cif cif_m;
    ffi_type* m_args[] = {&ffi_type_pointer, &ffi_type_sint32};
    ffi_prep_cif(&cif_m, FFI_DEFAULT_ABI, 2, &ffi_type_sint32, m_args);
    rows.push_back({"vtable_method", "raw libffi", measure(iterations, reps, [&](long n) {
      int64_t t = 0;
      for (long i = 0; i < n; ++i) {
        int32_t by = 1;
        ffi_arg r;
        void* av[] = {&c, &by};
        ffi_call(&cif_m, FFI_FN(c->vtbl->Add), &r, av);
        t += static_cast<int32_t>(r);
      }
      return static_cast<double>(t);
    })});
    c->vtbl->Release(c);
  }
  {
    marshal::object obj = olib.create("Counter", 0);
    auto add = obj.bind<int32_t(int32_t)>("Add");
    expect(add(1) == 1, "typed vtable_method");
    rows.push_back({"vtable_method", "marshal typed C++", measure(iterations, reps, [&](long n) {
      int64_t t = 0;
      for (long i = 0; i < n; ++i) t += add(1);
      return static_cast<double>(t);
    })});
    const marshal::ObjectRef& ref = obj.value().as<marshal::ObjectRef>();
    marshal::ObjectSpace& space = marshal::library_of(ref).objects();
    rows.push_back({"vtable_method", "marshal dynamic values", measure(slow_n, reps, [&](long n) {
      int64_t t = 0;
      std::vector<marshal::Value> args{1};
      marshal::CallResult r;
      for (long i = 0; i < n; ++i) {
        r.out.clear();
        space.call(ref, "Add", args, r, err);
        t += r.ret.as<std::int64_t>();
      }
      return static_cast<double>(t);
    })});
    marshal_typemap* otm = nullptr;
    marshal_library* olib_c = nullptr;
    marshal_typemap_load(cctx, (root + "/tests/fixtures/objects.json").c_str(), &otm);
    marshal_library_open(otm, &olib_c);
    marshal_value* cobj = nullptr;
    marshal_value* zero = marshal_value_int64(0);
    marshal_library_create(olib_c, "Counter", &zero, 1, &cobj);
    rows.push_back({"vtable_method", "marshal C API", measure(slow_n, reps, [&](long n) {
      int64_t t = 0;
      marshal_value* one = marshal_value_int64(1);
      for (long i = 0; i < n; ++i) {
        marshal_result* r = nullptr;
        marshal_object_call(cobj, "Add", &one, 1, &r);
        int64_t v = 0;
        marshal_value_get_int64(marshal_result_return(r), &v);
        t += v;
        marshal_result_release(r);
      }
      marshal_value_release(one);
      return static_cast<double>(t);
    })});
    marshal_value_release(cobj);
    marshal_value_release(zero);
    marshal_library_release(olib_c);
  }

  // ---- host_method: native code calls a method of a host object (IStore::AddAll over one item) ----
  {
    IStore* st = store_create();
    ICounter* native = counter_create(0);
    st->vtbl->Put(st, native);
    rows.push_back({"host_method", "direct C", measure(iterations, reps, [st](long n) {
      int64_t t = 0;
      for (long i = 0; i < n; ++i) t += st->vtbl->AddAll(st, 1);
      return static_cast<double>(t);
    })});
    st->vtbl->Release(st);
    native->vtbl->Release(native);
    marshal::object store = olib.create("Store");
    auto value = std::make_shared<int64_t>(0);
    std::map<std::string, std::shared_ptr<marshal::HostFunction>> m;
    m["Add"] = std::make_shared<marshal::HostFunction>(marshal::HostFunction{
        "Add", [value](const std::vector<marshal::Value>& a, marshal::Value& r, std::string&) {
          *value += a[0].as<std::int64_t>();
          r = marshal::Value(*value);
          return true;
        }});
    m["Get"] = std::make_shared<marshal::HostFunction>(marshal::HostFunction{
        "Get", [value](const std::vector<marshal::Value>&, marshal::Value& r, std::string&) {
          r = marshal::Value(*value);
          return true;
        }});
    marshal::object host(marshal::Value(std::make_shared<marshal::HostObject>("bench", std::vector<std::string>{"ICounter"}, m)));
    store.call<int32_t>("Put", host);
    auto add_all = store.bind<int64_t(int32_t)>("AddAll");
    expect(add_all(1) == 1, "host_method");
    rows.push_back({"host_method", "marshal dynamic values", measure(slow_n, reps, [&](long n) {
      int64_t t = 0;
      for (long i = 0; i < n; ++i) t += add_all(1);
      return static_cast<double>(t);
    })});
    store.call<int32_t>("Clear");
  }

  // ---- apartments: a call inside the object's STA, and one through a proxy from the MTA ----
  {
    ICounter* c = counter_create(0);
    auto direct_c = measure(iterations, reps, [c](long n) {
      int64_t t = 0;
      for (long i = 0; i < n; ++i) t += c->vtbl->Add(c, 1);
      return static_cast<double>(t);
    });
    c->vtbl->Release(c);
    rows.push_back({"sta_same_apt", "direct C", direct_c});
    rows.push_back({"sta_proxy", "direct C", direct_c});
    std::thread same([&] {
      marshal::apartment_scope sta(marshal::apartment_scope::kind::sta);
      marshal::object obj = olib.create("ApartmentCounter", 0);
      expect(!obj.is_proxy(), "apartment class created in an STA is direct");
      auto add = obj.bind<int32_t(int32_t)>("Add");
      rows.push_back({"sta_same_apt", "marshal typed C++", measure(iterations, reps, [&](long n) {
        int64_t t = 0;
        for (long i = 0; i < n; ++i) t += add(1);
        return static_cast<double>(t);
      })});
      rows.push_back({"sta_same_apt", "marshal dynamic values", measure(slow_n, reps, [&](long n) {
        int64_t t = 0;
        for (long i = 0; i < n; ++i) t += obj.call<int32_t>("Add", 1);
        return static_cast<double>(t);
      })});
    });
    same.join();
    // The object lives in an STA thread serving its message loop; this thread is in the MTA.
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
      const long proxy_n = std::max(1L, iterations / 100);
      auto add = proxy.bind<int32_t(int32_t)>("Add");
      rows.push_back({"sta_proxy", "marshal typed C++", measure(proxy_n, reps, [&](long n) {
        int64_t t = 0;
        for (long i = 0; i < n; ++i) t += add(1);
        return static_cast<double>(t);
      })});
      const marshal::ObjectRef& ref = proxy.value().as<marshal::ObjectRef>();
      marshal::ObjectSpace& pspace = marshal::library_of(ref).objects();
      rows.push_back({"sta_proxy", "marshal dynamic values", measure(proxy_n, reps, [&](long n) {
        int64_t t = 0;
        std::vector<marshal::Value> args{1};
        marshal::CallResult r;
        for (long i = 0; i < n; ++i) {
          pspace.call(ref, "Add", args, r, err);
          t += r.ret.as<std::int64_t>();
        }
        return static_cast<double>(t);
      })});
    }
    stop = true;
    owner.join();
  }

  std::printf("%-14s %-24s %10s %14s %8s %10s\n", "scenario", "implementation", "ns/call", "spread (min-max)",
              "x direct", "x libffi");
  for (const Row& r : rows) {
    double direct = 0, ffi = 0;
    for (const Row& q : rows)
      if (!std::strcmp(q.scenario, r.scenario)) {
        if (!std::strcmp(q.impl, "direct C")) direct = q.s.median;
        if (!std::strcmp(q.impl, "raw libffi")) ffi = q.s.median;
      }
    if (ffi > 0)
      std::printf("%-14s %-24s %10.1f %6.1f-%-7.1f %8.2f %10.2f\n", r.scenario, r.impl, r.s.median, r.s.low, r.s.high,
                  r.s.median / direct, r.s.median / ffi);
    else
      std::printf("%-14s %-24s %10.1f %6.1f-%-7.1f %8.2f %10s\n", r.scenario, r.impl, r.s.median, r.s.low, r.s.high,
                  r.s.median / direct, "-");
  }
  marshal_library_release(clib);
  marshal_context_release(cctx);
  return failures == 0 ? 0 : 1;
}
