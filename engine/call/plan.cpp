// marshal engine: call plans and bound libraries.
#include "call/plan.hpp"
#include "call/library.hpp"
#include "call/variadic.hpp"

#include "abi/abi.hpp"
#include "convert/convert.hpp"
#include "convert/strings.hpp"

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace marshal {

namespace {
std::atomic<bool> invokers_on{true};

// Callbacks and objects for one call's arguments: host functions become
// closures of scope "call" (deactivated when the call returns).
class CallReferences final : public ReferenceMarshaler {
 public:
  CallReferences(CallbackPool& pool, std::vector<std::shared_ptr<Callback>>& scoped, ObjectSpace& objects)
      : pool_(pool), scoped_(scoped), objects_(objects) {}
  bool callback_to_native(const CallbackInfo& info, const Value& v, void*& code, std::string& why) override {
    return callback_code(info, v, &pool_, &scoped_, code, why);
  }
  bool object_to_native(const Value& v, const Interface& iface, bool transfer, bool nullable, void*& out,
                        std::string& why) override {
    return objects_.to_native(v, iface, transfer, nullable, out, why);
  }
  bool object_to_host(void* p, const Interface& iface, bool transfer, Value& out, std::string& why) override {
    return objects_.to_host(p, iface, transfer, out, why);
  }

 private:
  CallbackPool& pool_;
  std::vector<std::shared_ptr<Callback>>& scoped_;
  ObjectSpace& objects_;
};

const char* hresult_name(std::int32_t code) {
  switch (static_cast<std::uint32_t>(code)) {
    case 0x80004001u: return " E_NOTIMPL";
    case 0x80004002u: return " E_NOINTERFACE";
    case 0x80004003u: return " E_POINTER";
    case 0x80004004u: return " E_ABORT";
    case 0x80004005u: return " E_FAIL";
    case 0x8000FFFFu: return " E_UNEXPECTED";
    case 0x80070057u: return " E_INVALIDARG";
    case 0x8007000Eu: return " E_OUTOFMEMORY";
    default: return "";
  }
}

// The declared failure test (Function::check) on a return value: a message, or
// empty when the call did not fail.
Error check_failure(const Typemap& tm, const Function& fn, const TypeDesc& rd, const void* ret,
                    std::int64_t return_int, int saved_errno) {
  if (fn.check.when == Check::When::never) return {};
  bool failed = false;
  const std::uint64_t raw = rd.size ? load_unsigned(ret, rd.size) : 0;
  switch (fn.check.when) {
    case Check::When::never: break;
    case Check::When::equals: failed = return_int == fn.check.value; break;
    case Check::When::null: failed = raw == 0; break;
    case Check::When::nonzero: failed = raw != 0; break;
    case Check::When::negative: failed = rd.has(flag_signed) && return_int < 0; break;
  }
  if (!failed) return {};
  Error e;
  e.id = ErrorId::native_error;
  e.file = tm.file;
  e.function = fn.name;
  if (fn.check.hresult) {
    char code[16];
    std::snprintf(code, sizeof code, "0x%08X", static_cast<unsigned>(return_int));
    e.native_kind = NativeCodeKind::hresult;
    e.native_code = static_cast<std::int32_t>(return_int);
    e.got = code;
    e.message = tm.file + ": " + fn.name + " failed (HRESULT " + code + hresult_name(static_cast<std::int32_t>(return_int)) + ")";
    return e;
  }
  e.got = fn.check.when == Check::When::null ? std::string("NULL") : std::to_string(return_int);
  e.message = tm.file + ": " + fn.name + " failed (returned " + e.got + ")";
  e.native_kind = NativeCodeKind::return_value;
  e.native_code = return_int;
  if (fn.check.error_errno) {
    e.message += ": errno " + std::to_string(saved_errno) + " (" + std::strerror(saved_errno) + ")";
    e.native_kind = NativeCodeKind::errno_value;
    e.native_code = saved_errno;
  }
  return e;
}

// The record of a failure in a parameter's conversion (the marshaler's id, got
// and expected; the plan's function and parameter), rendered as `message`.
Error param_error(const Typemap& tm, const Function& fn, std::size_t i, const Marshaler& m, std::string message) {
  Error e;
  e.id = m.error_id == ErrorId::none ? ErrorId::conversion : m.error_id;
  e.file = tm.file;
  e.function = fn.name;
  e.param_index = static_cast<int>(i);
  e.param_name = fn.params[i].name;
  e.got = m.error_got;
  e.expected = m.error_expected;
  e.message = std::move(message);
  return e;
}

// A failure with no parameter: id, file and function.
bool call_error(std::string& out, ErrorId id, const Typemap& tm, const Function& fn, std::string message) {
  Error e;
  e.id = id;
  e.file = tm.file;
  e.function = fn.name;
  e.message = std::move(message);
  return set_error(out, std::move(e));
}
}  // namespace

void set_specialized_invokers(bool on) { invokers_on.store(on); }
void set_scalar_lanes(bool on) { scalar_lanes_enabled.store(on); }

// ---- releasers ---------------------------------------------------------------------------

void Releaser::operator()(std::uint64_t value) const {
  if (!fn) return;
  ffi_cif cif;
  ffi_type* args[1] = {arg};
  if (ffi_prep_cif(&cif, FFI_DEFAULT_ABI, 1, ret, args) != FFI_OK) return;
  alignas(16) std::byte rvalue[16];
  void* avalues[1] = {&value};  // little- and big-endian: value holds the argument's bits
  std::uint64_t narrowed = value;
  if (arg->size < 8) {
    std::byte tmp[8];
    store_bits(tmp, static_cast<std::uint32_t>(arg->size), value);
    std::memcpy(&narrowed, tmp, 8);
    avalues[0] = &narrowed;
  }
  ffi_call(&cif, FFI_FN(fn), rvalue, avalues);
}

// ---- the call --------------------------------------------------------------------------------

bool Plan::marshal_variadic(std::span<const Value* const> extra, std::vector<ffi_type*>& types, std::vector<TypeId>& ids,
                            std::vector<void*>& values,
                            Marshaler& m, Arena& arena, std::string& error) const {
  for (std::size_t k = 0; k < extra.size(); ++k) {
    VariadicArg a;  // variadic.cpp: any type expression, C's default promotions
    if (!variadic_to_native(*lib_, m, arena, *extra[k], a, error)) {
      const std::string inner = error;
      Error& e = prefix_error(error, lib_->typemap().file + ": " + fn_->name + ": variadic argument " +
                                         std::to_string(host_count_ + k) + ": ", inner);
      if (e.id == ErrorId::unclassified) e.id = m.error_id == ErrorId::none ? ErrorId::conversion : m.error_id;
      e.file = lib_->typemap().file;
      e.function = fn_->name;
      e.param_index = static_cast<int>(host_count_ + k);
      return false;
    }
    types.push_back(a.ffi);
    ids.push_back(a.type);
    values.push_back(a.slot);
  }
  return true;
}

// ---- out data in place (the typed C++ API) -----------------------------------------------------

namespace {
// Native bits that are the whole value: what the general path would convert
// to host values and back without changing a bit.
bool plain_data(const TypeRegistry& reg, TypeId t, int depth = 0) {
  const TypeDesc& d = reg.get(t);
  if (depth > 32) return false;
  switch (d.kind) {
    case Kind::integer: case Kind::floating: return d.size > 0;
    case Kind::array:  // inline T[N] inside a struct
      return d.has(flag_blittable) && d.as<ArrayInfo>().count.source == Count::Source::constant &&
             plain_data(reg, d.ref, depth + 1);
    case Kind::struct_:
      if (!d.has(flag_blittable) || d.has(flag_variable_size)) return false;
      for (const Field& f : d.as<RecordInfo>().fields)
        if (f.is_bitfield || !plain_data(reg, f.type, depth + 1)) return false;
      return true;
    default: return false;
  }
}
}  // namespace

Plan::InPlace Plan::in_place(std::size_t i) const {
  InPlace r;
  if (method_ || i >= steps_.size()) return r;
  const Step& s = steps_[i];
  const Param& p = fn_->params[i];
  const TypeRegistry& reg = *reg_;
  const TypeDesc& d = reg.get(s.type);
  if (p.dir == Dir::in) return r;
  if (s.op == Step::Op::ptr) {
    if (!s.free_with && plain_data(reg, d.ref)) r.form = InPlace::Form::value;
    return r;
  }
  if (s.op != Step::Op::array || !plain_data(reg, d.ref)) return r;
  const ArrayInfo& a = d.as<ArrayInfo>();
  if (a.count.source == Count::Source::param) {
    const Param& cp = fn_->params[a.count.index];
    if (cp.dir != Dir::in || reg.get(cp.type).kind != Kind::integer) return r;
    r.count_param = static_cast<int>(a.count.index);
  } else if (a.count.source == Count::Source::constant) {
    r.constant = a.count.constant;
  } else {
    return r;
  }
  if (a.length.present()) {
    if (a.length.source != Count::Source::return_value || reg.get(fn_->returns).kind != Kind::integer) return r;
    r.length_is_return = true;
  }
  r.form = InPlace::Form::array;
  return r;
}

bool Plan::guarded() const { return lib_->guarded(); }

bool Plan::in_place_count(std::size_t i, std::int64_t count_arg, std::uint64_t& count) const {
  if (lib_->guarded()) return false;
  const TypeDesc& d = reg_->get(steps_[i].type);
  const Count& source = d.as<ArrayInfo>().count;
  // Marshaler::count and buffer_bytes: a count of 63 bits at most, and no more
  // bytes than max_buffer (run() gives the message when this says no).
  if (source.source == Count::Source::constant) count = source.constant;
  else if (count_arg < 0) return false;
  else count = static_cast<std::uint64_t>(count_arg);
  std::size_t bytes = 0;
  return checked_mul(count, reg_->get(d.ref).size, bytes) && bytes <= lib_->max_buffer();
}

bool Plan::in_place_length(std::size_t i, std::int64_t ret, std::uint64_t capacity, std::uint64_t& length,
                           std::string& error) const {
  const TypeDesc& d = reg_->get(steps_[i].type);
  Arena arena;
  Marshaler m(*reg_, arena, nullptr);
  m.max_buffer = lib_->max_buffer();
  CallFrame frame;
  frame.sig = fn_;
  frame.after = true;
  frame.return_int = ret;
  Ctx c;
  c.frame = &frame;
  if (m.count(d.as<ArrayInfo>().length, c, length) && m.length_within(length, capacity)) return true;
  const Param& p = fn_->params[i];
  return set_error(error, param_error(lib_->typemap(), *fn_, i, m,
                                      lib_->typemap().file + ": " + fn_->name + ": " + std::string(dir_name(p.dir)) +
                                          " parameter " + std::to_string(i) + " '" + p.name + "': " + m.error));
}

bool Plan::call(std::span<const Value> args, CallResult& result, std::string& error) const {
  ValuePointers p(args);
  return call(p.view, result, error);
}

bool Plan::call(std::span<const Value* const> args, CallResult& result, std::string& error) const {
  if (method_) {
    return call_error(error, ErrorId::invalid_argument, lib_->typemap(), *fn_,
                      lib_->typemap().file + ": " + fn_->name + " is a method: call it on an object");
  }
  return dispatch(nullptr, symbol_, args, result, error);
}

bool Plan::call_method(void* self, void* target, std::span<const Value> args, CallResult& result,
                       std::string& error) const {
  ValuePointers p(args);
  return dispatch(self, target, p.view, result, error);
}

bool Plan::call_method(void* self, void* target, std::span<const Value* const> args, CallResult& result,
                       std::string& error) const {
  return dispatch(self, target, args, result, error);
}

bool Plan::dispatch(void* self, void* target, std::span<const Value* const> args, CallResult& result,
                    std::string& error) const {
  if (laned_ && args.size() == host_count_ && !lib_->guarded() && scalar_lanes_enabled.load(std::memory_order_relaxed)) {
    const int done = run_lane(self, target, args.data(), result, error);
    if (done >= 0) return done == 1;
  }
  return run(self, target, args, result, error);
}

namespace {
// Field names are short: compared inline, without a library call.
inline bool same_name(const std::string& a, const std::string& b) {
  const std::size_t n = a.size();
  if (n != b.size()) return false;
  const char* x = a.data();
  const char* y = b.data();
  for (std::size_t i = 0; i < n; ++i)
    if (x[i] != y[i]) return false;
  return true;
}

// A struct of scalar fields as a record, written in place: a record of the
// same fields (a reused result) only has its values replaced.
void record_to_host(const std::vector<LaneField>& fields, const std::byte* src, Value& out) {
  bool same = out.is<Record>() && out.as<Record>().size() == fields.size();
  for (std::size_t k = 0; same && k < fields.size(); ++k) same = same_name(out.as<Record>()[k].first, *fields[k].name);
  if (!same) {
    Record r;
    r.reserve(fields.size());
    for (const LaneField& f : fields) r.emplace_back(*f.name, Value());
    out = Value(std::move(r));
  }
  Record& r = out.as<Record>();
  for (std::size_t k = 0; k < fields.size(); ++k) {
    lane_to_host(fields[k].op, load_unsigned(src + fields[k].offset, fields[k].op.size), r[k].second);
  }
}
}  // namespace

int Plan::run_lane(void* self, void* target, const Value* const* args, CallResult& result, std::string& error) const {
  // ---- marshal: one switch per argument; anything unusual goes to run() ----
  const std::size_t n = lane_.size();
  std::uint64_t slots[14];
  void* avalues[14];
  alignas(16) std::byte scratch[1024];  // strings
  std::size_t used = 0;
  std::size_t h = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const Lane& l = lane_[i];
    std::uint64_t bits = 0;
    avalues[i] = &slots[i];
    if (l.op == Lane::Op::self) {
      std::memcpy(&slots[i], &self, sizeof self);
      continue;
    }
    const Value& v = *args[h++];
    if (l.op < Lane::Op::void_) {  // a scalar: the common case first
      if (!lane_to_native(l, v, bits)) return -1;
    } else if (l.op == Lane::Op::string) {
      // Well-formed text that fits the scratch; anything else (null not
      // allowed, not a string, not well-formed, too long) goes through run().
      if (v.is<std::string>()) {
        const std::string& text = v.as<std::string>();
        const std::size_t room = (text.size() + 1) * l.unit;
        if (used + room > sizeof scratch) return -1;
        std::byte* dst = scratch + used;
        const std::size_t units = transcode_utf8(text, l.unit, dst);
        if (units == SIZE_MAX) return -1;
        std::memset(dst + units * l.unit, 0, l.unit);
        used += (room + 15) & ~std::size_t{15};
        bits = reinterpret_cast<std::uintptr_t>(dst);
      } else if (!v.is_null() || !l.nullable) {
        return -1;
      }
    } else if (l.op == Lane::Op::record) {
      // A record with exactly the struct's fields, in order, each taken by the
      // lane; anything else (another order, a missing field) goes through run().
      if (!v.is<Record>()) return -1;
      const Record& rec = v.as<Record>();
      const std::vector<LaneField>& fields = record_lanes_[l.record];
      if (rec.size() != fields.size() || used + 32 > sizeof scratch) return -1;
      std::byte* dst = scratch + used;
      std::memset(dst, 0, 32);
      for (std::size_t k = 0; k < fields.size(); ++k) {
        std::uint64_t fb = 0;
        if (!same_name(rec[k].first, *fields[k].name) || !lane_to_native(fields[k].op, rec[k].second, fb)) return -1;
        store_bits(dst + fields[k].offset, fields[k].op.size, fb);
      }
      used += 32;
      avalues[i] = dst;  // an aggregate: libffi reads it where it is
      continue;
    } else if (l.op == Lane::Op::callback) {
      // A registered callback of this signature, still active; a host function
      // (a closure for this call) and every error go through run().
      if (!v.is<std::shared_ptr<Callback>>()) return -1;
      const Callback& cb = *v.as<std::shared_ptr<Callback>>();
      if (&cb.signature() != l.signature || !cb.active()) return -1;
      const void* code = cb.code();
      std::memcpy(&bits, &code, sizeof code);
    }
    slots[i] = bits;
  }

  // ---- invoke ----
  const Function& fn = *fn_;
  alignas(16) std::byte rvalue[32] = {};
  if (callback_error_pending()) {
    std::string stale;
    callback_take_error(stale);  // a failure from an earlier call is not this call's
  }
  const bool wants_errno = fn.capture_errno || fn.check.error_errno;
  if (wants_errno) errno = 0;
  if (invoker_.usable() && invokers_on.load(std::memory_order_relaxed))
    invoke(invoker_, target, avalues, rvalue);
  else
    ffi_call(const_cast<ffi_cif*>(&cif_), FFI_FN(target), rvalue, avalues);
  const int saved_errno = wants_errno ? errno : 0;
  if (fn.capture_errno) result.error_number = saved_errno;

  // ---- unmarshal ----
  std::uint64_t wide;
  std::memcpy(&wide, rvalue, 8);
  std::int64_t return_int = 0;
  if (lane_ret_.op == Lane::Op::record) record_to_host(record_lanes_[lane_ret_.record], rvalue, result.ret);
  else return_int = lane_to_host(lane_ret_, wide, result.ret);
  const std::uint32_t size = lane_ret_.size;
  std::string callback_failure;
  if (callback_error_pending() && callback_take_error(callback_failure)) {
    Error& e = prefix_error(error, lib_->typemap().file + ": " + fn.name + ": ", callback_failure);
    e.file = lib_->typemap().file;
    e.function = fn.name;
    return 0;
  }
  if (fn.check.when != Check::When::never) {
    std::uint64_t narrowed = size < 8 && size ? wide & ((std::uint64_t{1} << (size * 8)) - 1) : wide;
    Error failed = check_failure(lib_->typemap(), fn, reg_->get(fn.returns), &narrowed, return_int, saved_errno);
    if (failed) {
      set_error(error, std::move(failed));
      return 0;
    }
  }
  return 1;
}

bool Plan::run(void* self, void* target, std::span<const Value* const> args, CallResult& result,
               std::string& error) const {
  // ---- setup ----
  const Function& fn = *fn_;
  const TypeRegistry& reg = *reg_;
  const Typemap& tm = lib_->typemap();
  const std::size_t n = steps_.size();
  const bool variadic = fn.variadic_from >= 0;
  if (args.size() < host_count_ || (!variadic && args.size() != host_count_)) {
    std::string names;
    for (std::size_t i = method_ ? 1 : 0; i < fn.params.size(); ++i)
      if (fn.params[i].host_supplied()) names += (names.empty() ? "" : ", ") + fn.params[i].name;
    Error e;
    e.id = ErrorId::invalid_argument;
    e.file = tm.file;
    e.function = fn.name;
    e.got = std::to_string(args.size()) + " arguments";
    e.expected = std::to_string(host_count_) + (variadic ? " or more" : "") + " arguments";
    e.message = tm.file + ": " + fn.name + ": expects " + std::to_string(host_count_) + " argument" +
                (host_count_ == 1 ? "" : "s") + (names.empty() ? "" : " (" + names + ")") +
                (variadic ? " and then variadic ones" : "") + ", got " + std::to_string(args.size());
    return set_error(error, std::move(e));
  }
  Arena arena;
  std::optional<GuardPages> guard;
  if (lib_->guarded()) {
    guard.emplace(fn.name);
    arena.guard(&*guard);
  }
  Marshaler m(reg, arena, &lib_->handles());
  m.max_buffer = lib_->max_buffer();
  // Callbacks of scope "call" live until this call returns, whatever path it takes.
  std::vector<std::shared_ptr<Callback>> call_scoped;
  struct ReleaseAtExit {
    std::vector<std::shared_ptr<Callback>>& list;
    ~ReleaseAtExit() { for (auto& cb : list) cb->release(); }
  } release_at_exit{call_scoped};
  CallReferences refs(lib_->callbacks(), call_scoped, lib_->objects());
  m.refs = &refs;
  const Value* host_small[16];
  void* pointee_small[16];
  void* avalue_small[16];
  std::vector<const Value*> host_big;
  std::vector<void*> pointee_big, avalue_big;
  const Value** host = host_small;
  void** pointee = pointee_small;
  void** avalues = avalue_small;
  if (n > 16) {
    host_big.resize(n);
    pointee_big.resize(n);
    avalue_big.resize(n);
    host = host_big.data();
    pointee = pointee_big.data();
    avalues = avalue_big.data();
  }
  for (std::size_t i = 0; i < n; ++i) {
    host[i] = steps_[i].host_index >= 0 ? args[static_cast<std::size_t>(steps_[i].host_index)] : nullptr;
    pointee[i] = nullptr;
  }
  CallFrame frame;
  frame.sig = &fn;
  frame.param_offset = method_ ? 1 : 0;
  frame.host = std::span<const Value* const>(host, n);
  frame.pointee = std::span<void* const>(pointee, n);

  // ---- marshal: every argument is converted before any native code runs ----
  auto fail = [&](std::size_t i) {
    return set_error(error, param_error(tm, fn, i, m,
                                        tm.file + ": " + fn.name + ": parameter " + std::to_string(i) + " '" +
                                            fn.params[i].name + "' (" + reg.spell(fn.params[i].type) + "): " + m.error));
  };
  // Converts parameter i into its slot; `units` (strings) receives the code
  // units passed, without the terminator.
  auto marshal_param = [&](std::size_t i, std::size_t& units) -> bool {
    const Step& s = steps_[i];
    const Param& p = fn.params[i];
    const TypeDesc& d = reg.get(s.type);
    if (guard) guard->label(static_cast<int>(i), p.name);
    // Slots are zeroed and rounded up to 16 bytes: a struct split into eightbytes
    // (abi.hpp) is read 8 bytes at a time.
    void* slot = arena.alloc_zeroed((std::max<std::size_t>(s.slot_size, sizeof(void*)) + 15) & ~std::size_t{15},
                                    std::max<std::size_t>(s.slot_align, alignof(void*)));
    avalues[i] = slot;
    Ctx c;
    c.frame = &frame;
    c.nullable = p.nullable;
    c.is_const = p.is_const;
    void* ptr = nullptr;
    if (method_ && i == 0) {  // `this`
      std::memcpy(slot, &self, sizeof self);
      return true;
    }
    switch (s.op) {
      case Step::Op::value:
        return m.to_native(s.type, *host[i], slot, c) || fail(i);
      case Step::Op::ptr:
        if (p.dir == Dir::out) {
          std::size_t size = reg.get(d.ref).size;
          ptr = arena.alloc_zeroed(size ? size : 1, std::max<std::uint32_t>(reg.get(d.ref).align, 1));
          m.lend(ptr, size ? size : 1);
        } else {
          c.transfer = p.dir == Dir::inout;  // the callee may replace an object it is given
          if (!m.to_native(s.type, *host[i], slot, c)) return fail(i);
          std::memcpy(&ptr, slot, sizeof ptr);
        }
        break;
      case Step::Op::array:
        if (p.dir == Dir::out) {
          // The callee is told `count` elements: it gets room for all of them,
          // or the call fails here, before any allocation.
          const Count& source = d.as<ArrayInfo>().count;
          std::uint64_t count = 0;
          std::size_t bytes = 0;
          const TypeDesc& e = reg.get(d.ref);
          if (!m.count(source, c, count) || !m.buffer_bytes(count, e.size, &source, bytes)) return fail(i);
          ptr = arena.alloc_zeroed(bytes ? bytes : 1, std::max<std::uint32_t>(e.align, 1));
          m.lend(ptr, bytes ? bytes : 1);
        } else if (host[i]->is_null()) {
          if (!p.nullable) {
            m.fail_null();
            return fail(i);
          }
        } else if (!m.array_to_native(s.type, *host[i], c, ptr, p.dir == Dir::inout)) {
          return fail(i);
        }
        break;
      case Step::Op::string: {
        const StringInfo& si = d.as<StringInfo>();
        std::uint64_t cap = 0;
        if (si.capacity.present() && !m.count(si.capacity, c, cap)) return fail(i);
        if (p.dir == Dir::out) {
          const std::size_t unit = encoding_unit(si.encoding);
          std::size_t bytes = 0;
          if (!m.buffer_bytes(cap ? cap : 1, unit, &si.capacity, bytes)) return fail(i);
          ptr = arena.alloc_zeroed(bytes, unit);
          m.lend(ptr, bytes);
        } else if (host[i]->is_null()) {
          if (!p.nullable) {
            m.fail_null();
            return fail(i);
          }
        } else if (!m.string_to_native(si, *host[i], cap, ptr, c, &units)) {
          return fail(i);
        }
        break;
      }
    }
    std::memcpy(slot, &ptr, sizeof ptr);
    pointee[i] = ptr;
    return true;
  };
  // Computed parameters first (extension "value"), so that every count that
  // names one reads the engine's value: a string they measure is converted
  // here, an array is measured by what the host gave (and converted with that
  // count below). The value must fit the parameter's integer type.
  std::vector<Value> computed(computed_.size());
  std::uint8_t done_small[16] = {};  // converted already (a string a computed parameter measures)
  std::vector<std::uint8_t> done_big;
  std::uint8_t* done = done_small;
  if (n > 16) {
    done_big.assign(n, 0);
    done = done_big.data();
  }
  for (std::size_t k = 0; k < computed_.size(); ++k) {
    const std::size_t i = computed_[k];
    const Computed& cv = fn.params[i].value;
    std::uint64_t value = cv.size;
    if (cv.measure != Computed::Measure::size_of) {
      const std::size_t t = cv.index + (method_ ? 1 : 0);
      const TypeDesc& td = reg.get(steps_[t].type);
      const Value& hv = *host[t];
      std::uint64_t elements = 0;
      std::size_t unit = 1;
      if (td.kind == Kind::string) {
        std::size_t units = 0;
        if (!done[t] && !marshal_param(t, units)) return false;
        done[t] = 1;
        elements = units;
        unit = encoding_unit(td.as<StringInfo>().encoding);
      } else {  // an array counted by this parameter (or a sentinel): what the host gave
        if (hv.is<List>()) elements = hv.as<List>().size();
        else if (hv.is<Bytes>()) elements = hv.as<Bytes>().data.size();
        else if (hv.is<std::shared_ptr<NativeBox>>()) elements = hv.as<std::shared_ptr<NativeBox>>()->count;
        // anything else (null, a wrong kind) counts 0: its conversion accepts or reports it
        unit = reg.get(td.ref).size;
      }
      std::size_t bytes = 0;
      if (cv.measure == Computed::Measure::count_of) value = elements;
      else if (checked_mul(elements, unit, bytes)) value = bytes;
      else value = UINT64_MAX;  // cannot be: the host's data exists; reported as out of range below
    }
    const TypeDesc& pd = reg.get(steps_[i].type);
    std::uint64_t bits = 0;
    if (integer_fit(Value(value), pd.size * 8u, pd.has(flag_signed), bits) != Fit::ok) {
      m.error_id = ErrorId::limit_exceeded;
      m.error_got = std::to_string(value);
      m.error_expected = reg.spell(steps_[i].type);
      return set_error(error, param_error(tm, fn, i, m,
                                          tm.file + ": " + fn.name + ": parameter " + std::to_string(i) + " '" +
                                              fn.params[i].name + "' (" + reg.spell(steps_[i].type) +
                                              "): the computed value " + std::to_string(value) + " (" +
                                              std::string(measure_name(cv.measure)) + " " +
                                              (cv.measure == Computed::Measure::size_of ? reg.spell(cv.type)
                                                                                        : "'" + cv.name + "'") +
                                              ") does not fit " + reg.spell(steps_[i].type)));
    }
    computed[k] = Value(value);
    host[i] = &computed[k];
  }
  for (std::size_t i = 0; i < n; ++i) {
    std::size_t units = 0;
    if (!done[i] && !marshal_param(i, units)) return false;
  }

  // Variadic arguments: promoted and prepared per call.
  ffi_cif var_cif;
  const ffi_cif* cif = &cif_;
  std::vector<ffi_type*> var_types;
  std::vector<void*> var_values;
  std::vector<void*> split_values;
  if (variadic) {
    var_types.assign(atypes_.begin(), atypes_.end());
    std::vector<TypeId> ids(value_types_);
    var_values.assign(avalues, avalues + n);
    if (!marshal_variadic(args.subspan(host_count_), var_types, ids, var_values, m, arena, error)) return false;
    std::vector<LoweredArg> lowered;
    unsigned fixed = static_cast<unsigned>(fn.variadic_from);
    if (lower_arguments(reg, ids, var_types, fn.returns, lowered)) {
      std::vector<ffi_type*> types;
      fixed = 0;
      for (const LoweredArg& a : lowered) {
        types.push_back(a.type);
        split_values.push_back(static_cast<std::byte*>(var_values[a.param]) + a.offset);
        if (a.param < static_cast<std::uint32_t>(fn.variadic_from)) ++fixed;
      }
      var_types = std::move(types);
      var_values = split_values;
    }
    ffi_abi abi = FFI_DEFAULT_ABI;
    if (!ffi_abi_of(fn.callconv, abi, error)) {
      error_for(error).id = ErrorId::unsupported;
      return false;
    }
    if (ffi_prep_cif_var(&var_cif, abi, fixed, static_cast<unsigned>(var_types.size()), cif_.rtype,
                         var_types.data()) != FFI_OK)
      return call_error(error, ErrorId::unsupported, tm, fn, tm.file + ": " + fn.name + ": libffi cannot prepare this variadic call");
    cif = &var_cif;
    avalues = var_values.data();
  } else if (!lowered_.empty()) {
    for (const LoweredArg& a : lowered_) split_values.push_back(static_cast<std::byte*>(avalues[a.param]) + a.offset);
    avalues = split_values.data();
  }

  // ---- pin: host-owned native memory (NativeBox) was passed by address above,
  // as was host data in the native layout for a `const` parameter (which guard
  // mode copies read-only instead); everything else is a copy in the arena.

  // ---- invoke ----
  // A handle this call releases leaves the identity table first: once the
  // callee frees it, its value may come back as a new handle (HandleTable).
  for (std::size_t i = 0; i < n; ++i)
    if (steps_[i].releases_handle && host[i]->is<std::shared_ptr<HandleBox>>())
      lib_->handles().released(host[i]->as<std::shared_ptr<HandleBox>>());
  const TypeDesc& rd = reg.get(fn.returns);
  if (guard) guard->label(-1, {});
  void* rvalue = arena.alloc(return_buffer_size(rd), 16);
  if (callback_error_pending()) {
    std::string stale;
    callback_take_error(stale);  // a failure from an earlier call is not this call's
  }
  errno = 0;
  if (cif == &cif_ && invoker_.usable() && invokers_on.load(std::memory_order_relaxed))
    invoke(invoker_, target, avalues, rvalue);
  else
    ffi_call(const_cast<ffi_cif*>(cif), FFI_FN(target), rvalue, avalues);
  const int saved_errno = errno;
  if (fn.capture_errno) result.error_number = saved_errno;
  // A host function that failed inside this call: native code got its on_error
  // value; the host caller gets the error once unmarshal has run, so memory the
  // callee handed over (an error message to free, say) is still freed.
  // Failures are kept as records until the first is reported (unmarshal may fail again).
  Error callback_failure;
  {
    std::string text;
    if (callback_error_pending() && callback_take_error(text)) {
      callback_failure = error_for(text);
      callback_failure.message = tm.file + ": " + fn.name + ": " + text;
      callback_failure.file = tm.file;
      callback_failure.function = fn.name;
    }
  }

  // ---- unmarshal: the return value, then out/inout parameters ----
  frame.after = true;
  void* ret = arena.alloc(std::max<std::size_t>(rd.size, 8), 16);
  std::memset(ret, 0, std::max<std::size_t>(rd.size, 8));
  if (rd.kind == Kind::string || rd.kind == Kind::array || rd.kind == Kind::ptr) std::memcpy(ret, rvalue, sizeof(void*));
  else if (rd.kind != Kind::void_) read_return(rd, rvalue, ret);
  if (rd.kind == Kind::integer || rd.kind == Kind::enum_)
    frame.return_int = rd.has(flag_signed) ? load_signed(ret, rd.size) : static_cast<std::int64_t>(load_unsigned(ret, rd.size));
  Ctx rc;
  rc.frame = &frame;
  rc.transfer = true;  // a returned object carries a reference for the caller
  Error fail_text = check_failure(tm, fn, rd, ret, frame.return_int, saved_errno);
  // Unmarshal always runs to the end, so that every pointer the callee handed
  // over is converted and freed; the first problem is reported afterwards.
  Error unmarshal_error;
  auto note = [&](std::string e, ErrorId id = ErrorId::conversion, int param = -1) {
    if (unmarshal_error) return;
    if (param >= 0) unmarshal_error = param_error(tm, fn, static_cast<std::size_t>(param), m, std::move(e));
    else {
      unmarshal_error.id = id == ErrorId::none ? ErrorId::conversion : id;
      unmarshal_error.file = tm.file;
      unmarshal_error.function = fn.name;
      unmarshal_error.message = std::move(e);
    }
  };
  const bool owned = rd.kind == Kind::string || rd.kind == Kind::array || rd.kind == Kind::ptr;
  if (rd.kind == Kind::void_) result.ret.set_null();  // a reused result holds no earlier return
  if (owned) {
    void* p;
    std::memcpy(&p, ret, sizeof p);
    bool ok = true;
    if (!p) {
      result.ret = Value();
      if (!fn.return_nullable && !fail_text)
        note(tm.file + ": " + fn.name + " returned NULL, and its return is not nullable", ErrorId::null_not_allowed);
    } else if (rd.kind == Kind::string) {
      ok = m.string_to_host(rd.as<StringInfo>(), p, 0, rc, result.ret);
    } else if (rd.kind == Kind::array) {
      ok = m.array_to_host(fn.returns, p, rc, result.ret);
    } else {
      ok = m.to_host(fn.returns, ret, result.ret, rc);
    }
    if (p && ret_free_) ret_free_(reinterpret_cast<std::uintptr_t>(p));  // converted first, then freed
    if (!ok) note(tm.file + ": " + fn.name + ": return value: " + m.error, m.error_id);
  } else if (rd.kind != Kind::void_) {
    if (!m.to_host(fn.returns, ret, result.ret, rc)) note(tm.file + ": " + fn.name + ": return value: " + m.error, m.error_id);
    if (rd.kind == Kind::handle && result.ret.is_null() && !fn.return_nullable && !fail_text)
      note(tm.file + ": " + fn.name + " returned an invalid " + rd.name + " handle", ErrorId::native_error);
    if (rd.kind == Kind::interface && result.ret.is_null() && !fn.return_nullable && !fail_text)
      note(tm.file + ": " + fn.name + " returned NULL, and its return is not nullable",  // TYPEMAP.md, returns
           ErrorId::null_not_allowed);
  }
  for (std::size_t i = 0; i < n; ++i) {
    const Param& p = fn.params[i];
    if (p.dir == Dir::in) continue;
    const Step& s = steps_[i];
    const TypeDesc& d = reg.get(s.type);
    Value v;
    bool ok = true;
    Ctx c;
    c.frame = &frame;
    c.transfer = true;  // an object written to an out pointer carries a reference
    switch (s.op) {
      case Step::Op::value: break;
      case Step::Op::ptr: {
        if (!pointee[i]) break;
        ok = m.to_host(d.ref, pointee[i], v, c);
        if (s.free_with) {
          void* inner;
          std::memcpy(&inner, pointee[i], sizeof inner);
          if (inner) s.free_with(reinterpret_cast<std::uintptr_t>(inner));
        }
        break;
      }
      case Step::Op::array:
        if (pointee[i]) ok = m.array_to_host(s.type, pointee[i], c, v, &d.as<ArrayInfo>().length);
        break;
      case Step::Op::string: {
        if (!pointee[i]) break;
        const StringInfo& si = d.as<StringInfo>();
        std::uint64_t cap = 0;
        if (si.capacity.present()) {
          Ctx before = c;
          ok = m.count(si.capacity, before, cap);
        }
        ok = ok && m.string_to_host(si, pointee[i], cap, c, v);
        break;
      }
    }
    if (!ok)
      note(tm.file + ": " + fn.name + ": " + std::string(dir_name(p.dir)) + " parameter " + std::to_string(i) + " '" +
           p.name + "': " + m.error, m.error_id, static_cast<int>(i));
    result.out.emplace_back(p.name, std::move(v));
  }
  // The first failure wins: a host callback's is the cause of what follows it.
  for (Error* e : {&callback_failure, &fail_text, &unmarshal_error})
    if (*e) return set_error(error, std::move(*e));
  // ---- cleanup: the arena releases all scratch memory when it goes out of scope.
  return true;
}

}  // namespace marshal
