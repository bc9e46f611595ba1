// marshal: the stable C API over the engine.
// Each entry point catches every exception and turns it into a status plus a
// per-thread message; objects are reference counted; values read out of
// containers are wrappers cached in (and owned by) their container.
#include "marshal.h"
#include "native.hpp"

#include "context.hpp"
#include "plan.hpp"
#include "apartment.hpp"
#include "object.hpp"
#include "value.hpp"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

struct marshal_context {
  std::atomic<int> refs{1};
  marshal::Context ctx;
  std::mutex mutex;
  std::vector<std::unique_ptr<marshal_typemap>> typemaps;
};

struct marshal_typemap {
  marshal_context* ctx;
  const marshal::Typemap* tm;
};

struct marshal_function {
  const marshal::Plan* plan;
};

struct marshal_library {
  std::atomic<int> refs{1};
  marshal_context* ctx;  // retained
  std::shared_ptr<marshal::Library> lib;
  std::mutex mutex;
  std::map<std::string, std::unique_ptr<marshal_function>> functions;
};

struct marshal_value {
  std::atomic<int> refs{1};
  marshal::Value v;
  // Wrappers handed out for list items or record fields, each holding one
  // reference owned by this value; rebuilt after the container changes.
  mutable std::vector<marshal_value*> kids;

  // Values are made and dropped on every call that converts one (arguments
  // of C host functions, their results): each thread keeps a few freed
  // blocks for its next values instead of going to the allocator.
  static void* operator new(std::size_t size);
  static void operator delete(void* p, std::size_t size) noexcept;
};

namespace {
struct ValueBlocks {
  static constexpr std::size_t keep = 64;
  void* blocks[keep];
  std::size_t count = 0;
  ~ValueBlocks() {
    while (count) ::operator delete(blocks[--count]);
  }
};
thread_local ValueBlocks value_blocks;
}  // namespace

void* marshal_value::operator new(std::size_t size) {
  ValueBlocks& b = value_blocks;
  if (size == sizeof(marshal_value) && b.count) return b.blocks[--b.count];
  return ::operator new(size);
}

void marshal_value::operator delete(void* p, std::size_t size) noexcept {
  ValueBlocks& b = value_blocks;
  if (size == sizeof(marshal_value) && b.count < ValueBlocks::keep) b.blocks[b.count++] = p;
  else ::operator delete(p);
}

struct marshal_result {
  marshal_value* ret = nullptr;
  std::vector<std::pair<std::string, marshal_value*>> outs;
  bool has_errno = false;
  int err = 0;
  marshal::CallResult scratch;  // what the engine writes; moved into the wrappers above
};

namespace {

thread_local std::string last_error;

marshal_status fail(marshal_status s, std::string message) {
  last_error = std::move(message);
  return s;
}

// Runs body, turning any exception into MARSHAL_ERROR_INTERNAL.
template <class F>
marshal_status guarded(F&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(MARSHAL_ERROR_INTERNAL, "out of memory");
  } catch (const std::exception& e) {
    return fail(MARSHAL_ERROR_INTERNAL, std::string("internal error: ") + e.what());
  } catch (...) {
    return fail(MARSHAL_ERROR_INTERNAL, "internal error");
  }
}

marshal_value* wrap(marshal::Value v) {
  try {
    auto* w = new marshal_value;
    w->v = std::move(v);
    return w;
  } catch (...) {
    last_error = "out of memory";
    return nullptr;
  }
}

void drop_kids(const marshal_value* v) {
  for (marshal_value* k : v->kids) marshal_value_release(k);
  v->kids.clear();
}

// The wrapper of a list's item or a record's field i, made on first use (a
// host reading one item of a long list pays for that item only).
const marshal_value* kid(const marshal_value* v, std::size_t i) {
  const std::size_t n = v->v.is<marshal::List>() ? v->v.as<marshal::List>().size() : v->v.as<marshal::Record>().size();
  try {
    if (v->kids.size() != n) {
      drop_kids(v);
      v->kids.assign(n, nullptr);
    }
    if (!v->kids[i])
      v->kids[i] = wrap(v->v.is<marshal::List>() ? v->v.as<marshal::List>()[i] : v->v.as<marshal::Record>()[i].second);
    return v->kids[i];
  } catch (...) {
    last_error = "out of memory";
    return nullptr;
  }
}

}  // namespace

namespace {

// Puts v into *slot, reusing the wrapper when nobody else holds it (a host that
// retained a value from an earlier result keeps that value unchanged).
void put(marshal_value*& slot, marshal::Value&& v) {
  if (slot && slot->refs.load(std::memory_order_acquire) == 1) {
    drop_kids(slot);
    // A record is swapped, not moved: the engine's scratch keeps its shape, so
    // a record returned call after call is updated in place.
    if (v.is<marshal::Record>()) std::swap(slot->v, v);
    else slot->v.take(std::move(v));
    return;
  }
  marshal_value_release(slot);
  slot = wrap(std::move(v));
  if (!slot) throw std::bad_alloc();
}

// Moves the engine's result (r->scratch) into r's wrappers.
void publish(marshal_result* r) {
  marshal::CallResult& c = r->scratch;
  put(r->ret, std::move(c.ret));
  if (r->outs.size() > c.out.size()) {
    for (std::size_t i = c.out.size(); i < r->outs.size(); ++i) marshal_value_release(r->outs[i].second);
    r->outs.resize(c.out.size());
  }
  for (std::size_t i = 0; i < c.out.size(); ++i) {
    if (i == r->outs.size()) r->outs.emplace_back(c.out[i].first, nullptr);
    else if (r->outs[i].first != c.out[i].first) r->outs[i].first = c.out[i].first;
    put(r->outs[i].second, std::move(c.out[i].second));
  }
  r->has_errno = c.error_number.has_value();
  r->err = c.error_number.value_or(0);
  c.out.clear();
  c.error_number.reset();
}

// The engine's view of the host's arguments: their addresses, no copies.
struct ArgView {
  const marshal::Value* small[16];
  std::unique_ptr<const marshal::Value*[]> big;  // more than 16 arguments
  std::span<const marshal::Value* const> view;
};

marshal_status collect_args(const char* api, marshal_value* const* args, size_t nargs, ArgView& out) {
  const marshal::Value** p = out.small;
  if (nargs > std::size(out.small)) {
    out.big = std::make_unique<const marshal::Value*[]>(nargs);
    p = out.big.get();
  }
  for (size_t i = 0; i < nargs; ++i) {
    if (!args[i])
      return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": argument " + std::to_string(i) + " is NULL (use marshal_value_null())");
    p[i] = &args[i]->v;
  }
  out.view = std::span<const marshal::Value* const>(p, nargs);
  return MARSHAL_OK;
}

// Calls through `call` into r; r is left as it was when the call fails.
template <class Call>
marshal_status call_into(const char* api, marshal_value* const* args, size_t nargs, marshal_result* r, Call&& call) {
  return guarded([&] {
    ArgView view;
    if (marshal_status st = collect_args(api, args, nargs, view); st != MARSHAL_OK) return st;
    r->scratch.out.clear();
    r->scratch.error_number.reset();
    std::string error;
    if (!call(view.view, r->scratch, error)) return fail(MARSHAL_ERROR_CALL, error);
    publish(r);
    return MARSHAL_OK;
  });
}

// The same into a new result.
template <class Call>
marshal_status call_new(const char* api, marshal_value* const* args, size_t nargs, marshal_result** out, Call&& call) {
  auto* r = new (std::nothrow) marshal_result;
  if (!r) return fail(MARSHAL_ERROR_INTERNAL, "out of memory");
  marshal_status st = call_into(api, args, nargs, r, call);
  if (st != MARSHAL_OK) {
    marshal_result_release(r);
    return st;
  }
  *out = r;
  return MARSHAL_OK;
}

}  // namespace

namespace {
// A value may change in place only while the caller holds its only reference.
template <class T>
marshal_status set_value(const char* api, marshal_value* v, T x) {
  if (!v) return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": v is NULL");
  if (v->refs.load(std::memory_order_acquire) != 1)
    return fail(MARSHAL_ERROR_ARGUMENT, std::string(api) + ": the value is shared (retained elsewhere); only a value with one reference may change");
  drop_kids(v);
  if constexpr (std::is_same_v<T, bool>) v->v.set_bool(x);
  else if constexpr (std::is_same_v<T, std::int64_t>) v->v.set_int(x);
  else if constexpr (std::is_same_v<T, std::uint64_t>) v->v.set_uint(x);
  else v->v.set_real(x);
  return MARSHAL_OK;
}
}  // namespace

static marshal_status wrong_kind(const char* fn, const marshal_value* v, const char* want) {
  return fail(MARSHAL_ERROR_ARGUMENT, std::string(fn) + ": expected " + want + ", got " + (v ? v->v.describe() : "NULL"));
}

extern "C" {

const char* marshal_last_error(void) { return last_error.c_str(); }

// ---- contexts and typemaps ----

marshal_status marshal_context_create(marshal_context** out) {
  if (!out) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_context_create: out is NULL");
  return guarded([&] {
    *out = new marshal_context;
    return MARSHAL_OK;
  });
}

marshal_context* marshal_context_retain(marshal_context* ctx) {
  if (ctx) ctx->refs.fetch_add(1, std::memory_order_relaxed);
  return ctx;
}

void marshal_context_release(marshal_context* ctx) {
  if (ctx && ctx->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete ctx;
}

static marshal_status finish_load(marshal_context* ctx, marshal::LoadResult r, marshal_typemap** out) {
  if (!r.ok()) {
    std::string all;
    for (const auto& e : r.errors) all += (all.empty() ? "" : "\n") + e.text();
    return fail(MARSHAL_ERROR_TYPEMAP, all);
  }
  std::lock_guard lock(ctx->mutex);
  ctx->typemaps.push_back(std::make_unique<marshal_typemap>(marshal_typemap{ctx, r.typemap}));
  *out = ctx->typemaps.back().get();
  return MARSHAL_OK;
}

marshal_status marshal_typemap_load(marshal_context* ctx, const char* path, marshal_typemap** out) {
  if (!ctx || !path || !out) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_typemap_load: ctx, path and out must not be NULL");
  return guarded([&] { return finish_load(ctx, ctx->ctx.load_file(path), out); });
}

marshal_status marshal_typemap_load_text(marshal_context* ctx, const char* json, size_t length, const char* name,
                                         marshal_typemap** out) {
  if (!ctx || !json || !out) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_typemap_load_text: ctx, json and out must not be NULL");
  return guarded([&] {
    return finish_load(ctx, ctx->ctx.load_text(std::string_view(json, length), name ? name : "<text>"), out);
  });
}

// ---- libraries and functions ----

marshal_status marshal_library_open(marshal_typemap* tm, marshal_library** out) {
  if (!tm || !out) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_library_open: tm and out must not be NULL");
  return guarded([&] {
    std::string error;
    auto lib = marshal::Library::open(tm->ctx->ctx, *tm->tm, error);
    if (!lib) return fail(MARSHAL_ERROR_LIBRARY, error);
    auto* l = new marshal_library;
    l->ctx = marshal_context_retain(tm->ctx);
    l->lib = std::move(lib);
    *out = l;
    return MARSHAL_OK;
  });
}

marshal_library* marshal_library_retain(marshal_library* lib) {
  if (lib) lib->refs.fetch_add(1, std::memory_order_relaxed);
  return lib;
}

void marshal_library_release(marshal_library* lib) {
  if (!lib || lib->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  marshal_context* ctx = lib->ctx;
  delete lib;  // handles still held by the host keep the engine's library alive
  marshal_context_release(ctx);
}

marshal_status marshal_library_function(marshal_library* lib, const char* name, marshal_function** out) {
  if (!lib || !name || !out) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_library_function: lib, name and out must not be NULL");
  return guarded([&] {
    std::lock_guard lock(lib->mutex);
    auto& slot = lib->functions[name];
    if (!slot) {
      std::string error;
      const marshal::Plan* plan = lib->lib->bind(name, error);
      if (!plan) {
        lib->functions.erase(name);
        return fail(MARSHAL_ERROR_BIND, error);
      }
      slot = std::make_unique<marshal_function>(marshal_function{plan});
    }
    *out = slot.get();
    return MARSHAL_OK;
  });
}

size_t marshal_function_arity(const marshal_function* fn) { return fn ? fn->plan->host_arity() : 0; }

marshal_status marshal_function_call(const marshal_function* fn, marshal_value* const* args, size_t nargs,
                                     marshal_result** out) {
  if (!fn || !out || (nargs && !args)) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_function_call: fn, out (and args) must not be NULL");
  return call_new("marshal_function_call", args, nargs, out, [&](auto view, marshal::CallResult& r, std::string& error) {
    return fn->plan->call(view, r, error);
  });
}

marshal_result* marshal_result_create(void) {
  auto* r = new (std::nothrow) marshal_result;
  if (!r) last_error = "out of memory";
  return r;
}

marshal_status marshal_function_call_into(const marshal_function* fn, marshal_value* const* args, size_t nargs,
                                          marshal_result* result) {
  if (!fn || !result || (nargs && !args))
    return fail(MARSHAL_ERROR_ARGUMENT, "marshal_function_call_into: fn, result (and args) must not be NULL");
  return call_into("marshal_function_call_into", args, nargs, result,
                   [&](auto view, marshal::CallResult& r, std::string& error) { return fn->plan->call(view, r, error); });
}

const marshal_value* marshal_result_return(const marshal_result* r) { return r ? r->ret : nullptr; }
size_t marshal_result_out_count(const marshal_result* r) { return r ? r->outs.size() : 0; }
const char* marshal_result_out_name(const marshal_result* r, size_t i) {
  return r && i < r->outs.size() ? r->outs[i].first.c_str() : nullptr;
}
const marshal_value* marshal_result_out(const marshal_result* r, const char* name) {
  if (!r || !name) return nullptr;
  for (const auto& [n, v] : r->outs)
    if (n == name) return v;
  return nullptr;
}
int marshal_result_errno(const marshal_result* r, int* err) {
  if (!r || !r->has_errno) return 0;
  if (err) *err = r->err;
  return 1;
}
void marshal_result_release(marshal_result* r) {
  if (!r) return;
  marshal_value_release(r->ret);
  for (auto& [n, v] : r->outs) marshal_value_release(v);
  delete r;
}

// ---- values ----

marshal_value* marshal_value_null(void) { return wrap(marshal::Value()); }
marshal_value* marshal_value_bool(int b) { return wrap(marshal::Value(b != 0)); }
marshal_value* marshal_value_int64(int64_t v) { return wrap(marshal::Value(std::int64_t{v})); }
marshal_value* marshal_value_uint64(uint64_t v) { return wrap(marshal::Value(std::uint64_t{v})); }
marshal_value* marshal_value_double(double v) { return wrap(marshal::Value(v)); }
marshal_value* marshal_value_string(const char* utf8, size_t length) {
  return wrap(marshal::Value(utf8 ? std::string(utf8, length) : std::string()));
}
marshal_value* marshal_value_bytes(const void* data, size_t length) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  return wrap(marshal::Value(marshal::Bytes{p ? std::vector<std::uint8_t>(p, p + length) : std::vector<std::uint8_t>{}}));
}
marshal_value* marshal_value_list(void) { return wrap(marshal::Value(marshal::List{})); }
marshal_value* marshal_value_record(void) { return wrap(marshal::Value(marshal::Record{})); }

marshal_status marshal_value_native(marshal_library* lib, const char* type, size_t count, marshal_value** out) {
  if (!lib || !type || !out) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_value_native: lib, type and out must not be NULL");
  return guarded([&] {
    const marshal::TypeRegistry& reg = lib->lib->context().types();
    marshal::TypeId t = reg.find_primitive(type);
    if (t == marshal::no_type) t = lib->lib->typemap().find_type(type);
    if (t == marshal::no_type || t == reg.void_type() || reg.get(t).size == 0)
      return fail(MARSHAL_ERROR_ARGUMENT, std::string("marshal_value_native: unknown type '") + type +
                                              "' (a primitive or a sized type of " + lib->lib->typemap().file + ")");
    if (count == 0) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_value_native: count must be at least 1");
    *out = wrap(marshal::Value(marshal::native_new(reg, t, count)));
    return *out ? MARSHAL_OK : MARSHAL_ERROR_INTERNAL;
  });
}

marshal_status marshal_native_data(const marshal_value* v, void** data, size_t* size) {
  if (!v || !data || !size) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_native_data: v, data and size must not be NULL");
  if (!v->v.is<std::shared_ptr<marshal::NativeBox>>()) return wrong_kind("marshal_native_data", v, "native memory");
  const marshal::NativeBox& box = *v->v.as<std::shared_ptr<marshal::NativeBox>>();
  *data = box.data();
  *size = box.size;
  return MARSHAL_OK;
}

marshal_value* marshal_value_retain(marshal_value* v) {
  if (v) v->refs.fetch_add(1, std::memory_order_relaxed);
  return v;
}

marshal_status marshal_value_set_bool(marshal_value* v, int b) { return set_value("marshal_value_set_bool", v, b != 0); }
marshal_status marshal_value_set_int64(marshal_value* v, int64_t x) {
  return set_value("marshal_value_set_int64", v, std::int64_t{x});
}
marshal_status marshal_value_set_uint64(marshal_value* v, uint64_t x) {
  return set_value("marshal_value_set_uint64", v, std::uint64_t{x});
}
marshal_status marshal_value_set_double(marshal_value* v, double x) { return set_value("marshal_value_set_double", v, x); }

void marshal_value_release(marshal_value* v) {
  if (!v || v->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  drop_kids(v);
  delete v;
}

marshal_status marshal_list_append(marshal_value* list, const marshal_value* item) {
  if (!list || !item || !list->v.is<marshal::List>()) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_list_append: expected a list and an item");
  return guarded([&] {
    drop_kids(list);
    list->v.as<marshal::List>().push_back(item->v);
    return MARSHAL_OK;
  });
}

marshal_status marshal_record_set(marshal_value* record, const char* name, const marshal_value* item) {
  if (!record || !name || !item || !record->v.is<marshal::Record>())
    return fail(MARSHAL_ERROR_ARGUMENT, "marshal_record_set: expected a record, a name and an item");
  return guarded([&] {
    drop_kids(record);
    auto& r = record->v.as<marshal::Record>();
    for (auto& [n, v] : r)
      if (n == name) {
        v = item->v;
        return MARSHAL_OK;
      }
    r.emplace_back(name, item->v);
    return MARSHAL_OK;
  });
}

marshal_kind marshal_value_kind(const marshal_value* v) {
  if (!v) return MARSHAL_NULL;
  switch (v->v.type()) {
    case marshal::Value::Type::null: return MARSHAL_NULL;
    case marshal::Value::Type::boolean: return MARSHAL_BOOL;
    case marshal::Value::Type::int64: return MARSHAL_INT64;
    case marshal::Value::Type::uint64: return MARSHAL_UINT64;
    case marshal::Value::Type::real: return MARSHAL_DOUBLE;
    case marshal::Value::Type::string: return MARSHAL_STRING;
    case marshal::Value::Type::bytes: return MARSHAL_BYTES;
    case marshal::Value::Type::list: return MARSHAL_LIST;
    case marshal::Value::Type::record: return MARSHAL_RECORD;
    case marshal::Value::Type::address: return MARSHAL_ADDRESS;
    case marshal::Value::Type::handle: return MARSHAL_HANDLE;
    case marshal::Value::Type::native: return MARSHAL_NATIVE;
    case marshal::Value::Type::function: return MARSHAL_FUNCTION;
    case marshal::Value::Type::callback: return MARSHAL_CALLBACK;
    case marshal::Value::Type::object: return MARSHAL_OBJECT;
    case marshal::Value::Type::host_object: return MARSHAL_HOST_OBJECT;
  }
  return MARSHAL_NULL;
}


marshal_status marshal_value_get_bool(const marshal_value* v, int* out) {
  if (!v || !out || !v->v.is<bool>()) return wrong_kind("marshal_value_get_bool", v, "a bool");
  *out = v->v.as<bool>() ? 1 : 0;
  return MARSHAL_OK;
}

marshal_status marshal_value_get_int64(const marshal_value* v, int64_t* out) {
  if (v && out && v->v.is<std::int64_t>()) { *out = v->v.as<std::int64_t>(); return MARSHAL_OK; }
  return wrong_kind("marshal_value_get_int64", v, "an integer from INT64_MIN to INT64_MAX");
}

marshal_status marshal_value_get_uint64(const marshal_value* v, uint64_t* out) {
  if (v && out && v->v.is<std::uint64_t>()) { *out = v->v.as<std::uint64_t>(); return MARSHAL_OK; }
  if (v && out && v->v.is<std::int64_t>() && v->v.as<std::int64_t>() >= 0) {
    *out = static_cast<std::uint64_t>(v->v.as<std::int64_t>());
    return MARSHAL_OK;
  }
  return wrong_kind("marshal_value_get_uint64", v, "a non-negative integer");
}

marshal_status marshal_value_get_double(const marshal_value* v, double* out) {
  if (!v || !out || !v->v.is<double>()) return wrong_kind("marshal_value_get_double", v, "a double");
  *out = v->v.as<double>();
  return MARSHAL_OK;
}

marshal_status marshal_value_get_string(const marshal_value* v, const char** data, size_t* length) {
  if (!v || !data || !v->v.is<std::string>()) return wrong_kind("marshal_value_get_string", v, "a string");
  *data = v->v.as<std::string>().c_str();
  if (length) *length = v->v.as<std::string>().size();
  return MARSHAL_OK;
}

marshal_status marshal_value_get_bytes(const marshal_value* v, const uint8_t** data, size_t* length) {
  if (!v || !data || !length || !v->v.is<marshal::Bytes>()) return wrong_kind("marshal_value_get_bytes", v, "bytes");
  *data = v->v.as<marshal::Bytes>().data.data();
  *length = v->v.as<marshal::Bytes>().data.size();
  return MARSHAL_OK;
}

size_t marshal_list_size(const marshal_value* list) {
  return list && list->v.is<marshal::List>() ? list->v.as<marshal::List>().size() : 0;
}

const marshal_value* marshal_list_get(const marshal_value* list, size_t i) {
  if (!list || !list->v.is<marshal::List>() || i >= list->v.as<marshal::List>().size()) return nullptr;
  return kid(list, i);
}

size_t marshal_record_size(const marshal_value* record) {
  return record && record->v.is<marshal::Record>() ? record->v.as<marshal::Record>().size() : 0;
}

const char* marshal_record_name(const marshal_value* record, size_t i) {
  if (!record || !record->v.is<marshal::Record>() || i >= record->v.as<marshal::Record>().size()) return nullptr;
  return record->v.as<marshal::Record>()[i].first.c_str();
}

const marshal_value* marshal_record_get(const marshal_value* record, const char* name) {
  if (!record || !name || !record->v.is<marshal::Record>()) return nullptr;
  const auto& r = record->v.as<marshal::Record>();
  for (size_t i = 0; i < r.size(); ++i)
    if (r[i].first == name) return kid(record, i);
  return nullptr;
}

// ---- callbacks ----

namespace {
// The user's function and data; destroy runs when the last holder lets go.
struct UserFunction {
  UserFunction(marshal_host_fn f, void* u, void (*d)(void*)) : fn(f), user(u), destroy(d) {}
  UserFunction(const UserFunction&) = delete;  // destroy must run exactly once
  UserFunction& operator=(const UserFunction&) = delete;
  marshal_host_fn fn;
  void* user;
  void (*destroy)(void*);
  ~UserFunction() {
    if (destroy) destroy(user);
  }
};
}  // namespace

// Calls a C host function: arguments wrapped (borrowed by it), its result taken.
static bool call_c_host(marshal_host_fn fn, void* user, const std::vector<marshal::Value>& args, marshal::Value& result,
                        std::string& error) {
  marshal_value* small[8];
  std::vector<marshal_value*> big(args.size() > std::size(small) ? args.size() : 0);
  marshal_value** wrapped = big.empty() ? small : big.data();
  std::size_t made = 0;
  for (; made < args.size(); ++made)
    if (!(wrapped[made] = wrap(args[made]))) break;
  if (made < args.size()) {
    for (std::size_t i = 0; i < made; ++i) marshal_value_release(wrapped[i]);
    error = "out of memory";
    return false;
  }
  marshal_value* out = nullptr;
  const char* message = nullptr;
  const int status = fn(user, wrapped, args.size(), &out, &message);
  for (std::size_t i = 0; i < args.size(); ++i) marshal_value_release(wrapped[i]);
  if (out && out->refs.load(std::memory_order_acquire) == 1) result = std::move(out->v);  // ours alone
  else if (out) result = out->v;
  marshal_value_release(out);
  if (status != 0) {
    error = message ? message : "the C host function returned " + std::to_string(status);
    return false;
  }
  return true;
}

marshal_value* marshal_value_function(const char* name, marshal_host_fn fn, void* user, void (*destroy)(void*)) {
  if (!fn) {
    if (destroy) destroy(user);
    last_error = "marshal_value_function: fn is NULL";
    return nullptr;
  }
  try {
    auto data = std::make_shared<UserFunction>(fn, user, destroy);
    auto host = std::make_shared<marshal::HostFunction>(marshal::HostFunction{
        name ? name : "c_function",
        [data](const std::vector<marshal::Value>& args, marshal::Value& result, std::string& error) {
          return call_c_host(data->fn, data->user, args, result, error);
        }});
    return wrap(marshal::Value(std::move(host)));
  } catch (...) {
    last_error = "out of memory";
    return nullptr;
  }
}

marshal_status marshal_library_callback(marshal_library* lib, const char* sig, const marshal_value* fn, marshal_value** out) {
  if (!lib || !sig || !fn || !out || !fn->v.is<std::shared_ptr<marshal::HostFunction>>())
    return fail(MARSHAL_ERROR_ARGUMENT, "marshal_library_callback: expected a library, a signature name and a function value");
  return guarded([&] {
    std::string error;
    auto cb = lib->lib->callback(sig, fn->v.as<std::shared_ptr<marshal::HostFunction>>(), error);
    if (!cb) return fail(MARSHAL_ERROR_BIND, error);
    *out = wrap(marshal::Value(std::move(cb)));
    return MARSHAL_OK;
  });
}

void marshal_callback_release(marshal_value* callback) {
  if (callback && callback->v.is<std::shared_ptr<marshal::Callback>>()) callback->v.as<std::shared_ptr<marshal::Callback>>()->release();
}

// ---- objects ----

marshal_status marshal_library_create(marshal_library* lib, const char* cls, marshal_value* const* args, size_t nargs,
                                      marshal_value** out) {
  if (!lib || !cls || !out || (nargs && !args))
    return fail(MARSHAL_ERROR_ARGUMENT, "marshal_library_create: lib, cls, out (and args) must not be NULL");
  return guarded([&] {
    ArgView view;
    if (marshal_status st = collect_args("marshal_library_create", args, nargs, view); st != MARSHAL_OK) return st;
    std::vector<marshal::Value> values;
    for (const marshal::Value* a : view.view) values.push_back(*a);
    marshal::Value obj;
    std::string error;
    if (!lib->lib->objects().create(cls, values, obj, error)) return fail(MARSHAL_ERROR_CALL, error);
    *out = wrap(std::move(obj));
    return MARSHAL_OK;
  });
}

marshal_status marshal_object_call(const marshal_value* obj, const char* method, marshal_value* const* args,
                                   size_t nargs, marshal_result** out) {
  if (!obj || !method || !out || (nargs && !args))
    return fail(MARSHAL_ERROR_ARGUMENT, "marshal_object_call: obj, method, out (and args) must not be NULL");
  if (!obj->v.is<marshal::ObjectRef>()) return wrong_kind("marshal_object_call", obj, "a native object");
  const marshal::ObjectRef& ref = obj->v.as<marshal::ObjectRef>();
  return call_new("marshal_object_call", args, nargs, out, [&](auto view, marshal::CallResult& r, std::string& error) {
    return marshal::library_of(ref).objects().call(ref, method, view, r, error);
  });
}

marshal_status marshal_object_call_into(const marshal_value* obj, const char* method, marshal_value* const* args,
                                        size_t nargs, marshal_result* result) {
  if (!obj || !method || !result || (nargs && !args))
    return fail(MARSHAL_ERROR_ARGUMENT, "marshal_object_call_into: obj, method, result (and args) must not be NULL");
  if (!obj->v.is<marshal::ObjectRef>()) return wrong_kind("marshal_object_call_into", obj, "a native object");
  const marshal::ObjectRef& ref = obj->v.as<marshal::ObjectRef>();
  return call_into("marshal_object_call_into", args, nargs, result,
                   [&](auto view, marshal::CallResult& r, std::string& error) {
                     return marshal::library_of(ref).objects().call(ref, method, view, r, error);
                   });
}

marshal_status marshal_object_query(const marshal_value* obj, const char* iface, marshal_value** out) {
  if (!obj || !iface || !out) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_object_query: obj, iface and out must not be NULL");
  if (!obj->v.is<marshal::ObjectRef>()) return wrong_kind("marshal_object_query", obj, "a native object");
  return guarded([&] {
    const marshal::ObjectRef& ref = obj->v.as<marshal::ObjectRef>();
    marshal::Value v;
    std::string error;
    if (!marshal::library_of(ref).objects().query(ref, iface, v, error)) return fail(MARSHAL_ERROR_CALL, error);
    *out = wrap(std::move(v));
    return MARSHAL_OK;
  });
}

int marshal_object_same(const marshal_value* a, const marshal_value* b) {
  if (!a || !b) return 0;
  if (a->v.is<marshal::ObjectRef>() && b->v.is<marshal::ObjectRef>())
    return a->v == b->v;  // COM identity, proxies included
  if (a->v.is<std::shared_ptr<marshal::HostObject>>() && b->v.is<std::shared_ptr<marshal::HostObject>>())
    return a->v.as<std::shared_ptr<marshal::HostObject>>() == b->v.as<std::shared_ptr<marshal::HostObject>>();
  return 0;
}

const char* marshal_object_interface(const marshal_value* obj) {
  if (!obj || !obj->v.is<marshal::ObjectRef>()) return nullptr;
  return obj->v.as<marshal::ObjectRef>().iface->name.c_str();
}

marshal_value* marshal_value_host_object(const char* name, const char* const* interfaces, size_t ninterfaces,
                                         const marshal_host_method* methods, size_t nmethods, void* user,
                                         void (*destroy)(void* user)) {
  if ((nmethods && !methods) || (ninterfaces && !interfaces)) {
    if (destroy) destroy(user);
    last_error = "marshal_value_host_object: methods and interfaces must not be NULL when counted";
    return nullptr;
  }
  try {
    // One owner of the user data for all methods: destroy runs once, with the last of them.
    auto data = std::make_shared<UserFunction>(nullptr, user, destroy);
    std::map<std::string, std::shared_ptr<marshal::HostFunction>> table;
    for (size_t i = 0; i < nmethods; ++i) {
      if (!methods[i].name || !methods[i].fn) {
        last_error = "marshal_value_host_object: method " + std::to_string(i) + " has no name or no function";
        return nullptr;
      }
      marshal_host_fn fn = methods[i].fn;
      table[methods[i].name] = std::make_shared<marshal::HostFunction>(marshal::HostFunction{
          methods[i].name, [data, fn](const std::vector<marshal::Value>& args, marshal::Value& result, std::string& error) {
            return call_c_host(fn, data->user, args, result, error);
          }});
    }
    std::vector<std::string> names;
    for (size_t i = 0; i < ninterfaces; ++i) {
      if (!interfaces[i]) {
        last_error = "marshal_value_host_object: interface name " + std::to_string(i) + " is NULL";
        return nullptr;
      }
      names.emplace_back(interfaces[i]);
    }
    auto host = std::make_shared<marshal::HostObject>(name ? name : "c_object", std::move(names), std::move(table));
    return wrap(marshal::Value(std::move(host)));
  } catch (...) {
    last_error = "out of memory";
    return nullptr;
  }
}

uint32_t marshal_host_object_refs(const marshal_value* obj) {
  if (!obj || !obj->v.is<std::shared_ptr<marshal::HostObject>>()) return 0;
  return obj->v.as<std::shared_ptr<marshal::HostObject>>()->native_refs();
}

// ---- apartments ----

marshal_status marshal_apartment_enter(int sta) {
  return guarded([&] {
    std::string error;
    auto a = sta ? marshal::enter_sta(error) : marshal::enter_mta(error);
    return a ? MARSHAL_OK : fail(MARSHAL_ERROR_CALL, error);
  });
}

void marshal_apartment_leave(void) {
  try {
    marshal::leave_apartment();
  } catch (...) {
  }
}

size_t marshal_apartment_pump(uint32_t wait_ms) {
  auto a = marshal::current_apartment();
  if (!a || a->kind() != marshal::Apartment::Kind::sta) return 0;
  try {
    return a->pump(std::chrono::milliseconds(wait_ms));
  } catch (...) {
    return 0;
  }
}

marshal_status marshal_interface_marshal(const marshal_value* obj, uint64_t* token) {
  if (!obj || !token) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_interface_marshal: obj and token must not be NULL");
  return guarded([&] {
    std::string error;
    std::uint64_t t = 0;
    if (!marshal::marshal_interface(obj->v, t, error)) return fail(MARSHAL_ERROR_CALL, error);
    *token = t;
    return MARSHAL_OK;
  });
}

marshal_status marshal_interface_unmarshal(uint64_t token, marshal_value** out) {
  if (!out) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_interface_unmarshal: out must not be NULL");
  return guarded([&] {
    std::string error;
    marshal::Value v;
    if (!marshal::unmarshal_interface(token, v, error)) return fail(MARSHAL_ERROR_CALL, error);
    *out = wrap(std::move(v));
    return MARSHAL_OK;
  });
}

int marshal_object_is_proxy(const marshal_value* obj) {
  return obj && obj->v.is<marshal::ObjectRef>() && obj->v.as<marshal::ObjectRef>().proxy ? 1 : 0;
}

marshal_status marshal_value_from_json(const char* json, marshal_value** out) {
  if (!json || !out) return fail(MARSHAL_ERROR_ARGUMENT, "marshal_value_from_json: json and out must not be NULL");
  return guarded([&] {
    auto j = nlohmann::ordered_json::parse(json, nullptr, false);
    if (j.is_discarded()) return fail(MARSHAL_ERROR_ARGUMENT, std::string("marshal_value_from_json: not JSON: ") + json);
    *out = wrap(marshal::Value::from_json(j));
    return *out ? MARSHAL_OK : MARSHAL_ERROR_INTERNAL;
  });
}

char* marshal_value_to_json(const marshal_value* v) {
  if (!v) return nullptr;
  try {
    std::string s = v->v.to_json().dump();
    char* out = static_cast<char*>(std::malloc(s.size() + 1));
    if (out) std::memcpy(out, s.c_str(), s.size() + 1);
    return out;
  } catch (...) {
    last_error = "marshal_value_to_json: failed";
    return nullptr;
  }
}

void marshal_free(void* p) { std::free(p); }

}  // extern "C"
