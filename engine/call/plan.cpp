// marshal engine: call plans and bound libraries.
#include "call/plan.hpp"
#include "call/library.hpp"
#include "call/variadic.hpp"
#include "call/host_io.hpp"

#include "abi/abi.hpp"
#include "convert/convert.hpp"
#include "convert/strings.hpp"

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace marshal::engine {

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
  if (method_ || i >= instrs_.size()) return r;
  const Instr& s = instrs_[i];
  const Param& p = fn_->params[i];
  const TypeRegistry& reg = *reg_;
  const TypeDesc& d = reg.get(s.type);
  if (p.dir == Dir::in) return r;
  if (s.op == Instr::Op::ptr) {
    if (!s.free_with && plain_data(reg, d.ref)) r.form = InPlace::Form::value;
    return r;
  }
  // A count known before the call: an `in` integer parameter or a constant.
  auto known_before = [&](const Count& c) {
    if (c.source == Count::Source::param) {
      const Param& cp = fn_->params[c.index];
      if (cp.dir != Dir::in || reg.get(cp.type).kind != Kind::integer) return false;
      r.count_param = static_cast<int>(c.index);
      return true;
    }
    r.constant = c.constant;
    return c.source == Count::Source::constant;
  };
  if (s.op == Instr::Op::string) {
    const StringInfo& si = d.as<StringInfo>();
    if (p.dir != Dir::out || si.encoding != Encoding::utf8 || si.terminator != Terminator::nul ||
        si.length.present() || !si.capacity.present() || !known_before(si.capacity))
      return InPlace{};
    r.form = InPlace::Form::string;
    return r;
  }
  if (s.op != Instr::Op::array || !plain_data(reg, d.ref)) return r;
  const ArrayInfo& a = d.as<ArrayInfo>();
  if (!known_before(a.count)) return InPlace{};
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
  const TypeDesc& d = reg_->get(instrs_[i].type);
  const bool string = d.kind == Kind::string;
  const Count& source = string ? d.as<StringInfo>().capacity : d.as<ArrayInfo>().count;
  // Marshaler::count and buffer_bytes: a count of 63 bits at most, and no more
  // bytes than max_buffer (run() gives the message when this says no).
  if (source.source == Count::Source::constant) count = source.constant;
  else if (count_arg < 0) return false;
  else count = static_cast<std::uint64_t>(count_arg);
  std::size_t bytes = 0;
  const std::size_t unit = string ? encoding_unit(d.as<StringInfo>().encoding) : reg_->get(d.ref).size;
  return checked_mul(count, unit, bytes) && bytes <= lib_->max_buffer();
}

bool Plan::in_place_string(std::size_t i, const char* data, std::uint64_t capacity, std::string& out,
                           std::string& error) const {
  const StringInfo& si = reg_->get(instrs_[i].type).as<StringInfo>();
  Arena arena;
  Marshaler m(*reg_, arena, nullptr);
  m.max_buffer = lib_->max_buffer();
  m.lend(data, static_cast<std::size_t>(capacity));  // read within the buffer the callee was given
  CallFrame frame;
  frame.sig = fn_;
  frame.after = true;
  Ctx c;
  c.frame = &frame;
  Value v;
  if (m.string_to_host(si, data, static_cast<std::size_t>(capacity), c, v) && v.is<std::string>()) {
    out = std::move(v.as<std::string>());
    return true;
  }
  const Param& p = fn_->params[i];
  return set_error(error, param_error(lib_->typemap(), *fn_, i, m,
                                      lib_->typemap().file + ": " + fn_->name + ": " + std::string(dir_name(p.dir)) +
                                          " parameter " + std::to_string(i) + " '" + p.name + "': " + m.error));
}

bool Plan::in_place_length(std::size_t i, std::int64_t ret, std::uint64_t capacity, std::uint64_t& length,
                           std::string& error) const {
  const TypeDesc& d = reg_->get(instrs_[i].type);
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

// ---- one call ---------------------------------------------------------------------------------

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

// The general converter's per-call state, made when a call first needs it:
// the arena, the marshaler, callbacks of scope "call" (deactivated when the
// call returns, whatever path it takes), the frame counts read, and what pin
// prepares for variadic and split arguments.
struct General {
  General(Library& lib, const TypeRegistry& reg, const Function& fn)
      : m(reg, arena, &lib.handles()), refs(lib.callbacks(), call_scoped, lib.objects()) {
    if (lib.guarded()) {
      guard.emplace(fn.name);
      arena.guard(&*guard);
    }
    m.max_buffer = lib.max_buffer();
    m.refs = &refs;
  }
  General(const General&) = delete;
  General& operator=(const General&) = delete;
  ~General() {
    for (auto& cb : call_scoped) cb->release();
  }

  Arena arena;
  std::optional<GuardPages> guard;
  Marshaler m;
  std::vector<std::shared_ptr<Callback>> call_scoped;
  CallReferences refs;
  CallFrame frame;
  std::vector<Value> computed;     // computed parameters' values
  std::vector<std::uint8_t> done;  // converted already (a string a computed parameter measures)
  ffi_cif var_cif{};
  std::vector<const Value*> extra;  // variadic arguments
  std::vector<ffi_type*> var_types;
  std::vector<void*> var_values, split_values;
};

// Per-parameter storage beyond 16 parameters.
struct BigArrays {
  explicit BigArrays(std::size_t n) : slots(n), avalues(n), pointee(n), host(n) {}
  std::vector<std::uint64_t> slots;
  std::vector<void*> avalues, pointee;
  std::vector<const Value*> host;
};
}  // namespace

// One call of a plan: the instructions run in one loop, stage by stage. Args
// and Results are the host adapters (host_io.hpp); the Value adapters are
// final classes, so their calls are direct.
template <class Args, class Results>
class PlanRun {
 public:
  PlanRun(const Plan& p, void* self, void* target, const Args& args, Results& out, std::string& error)
      : p_(p), fn_(*p.fn_), self_(self), target_(target), args_(args), out_(out), error_(error), n_(p.instrs_.size()) {}
  PlanRun(const PlanRun&) = delete;
  PlanRun& operator=(const PlanRun&) = delete;

  bool run() {
    const bool ok = setup() && marshal() && pin() && invoke() && unmarshal();
    cleanup();
    return ok;
  }

  // A call: a laned plan first runs the tight loop (run_lane), with its state
  // in locals; the general run takes every call the fast forms do not.
  static bool call(const Plan& p, void* self, void* target, const Args& args, Results& out, std::string& error) {
    if (p.laned_ && scalar_lanes_enabled.load(std::memory_order_relaxed) && !p.lib_->guarded()) {
      const int done = p.lane_outs_ ? run_lane<true>(p, self, target, args, out, error)
                                    : run_lane<false>(p, self, target, args, out, error);
      if (done >= 0) return done == 1;
    }
    return run_general(p, self, target, args, out, error);
  }

 private:
  using Instr = Plan::Instr;
  using Op = LaneOp::Op;
  // Fast strings, records and out data, on the stack (an out int32[256] fits).
  static constexpr std::size_t scratch_size = 2048;

  [[gnu::noinline]] static bool run_general(const Plan& p, void* self, void* target, const Args& args, Results& out,
                                            std::string& error) {
    return PlanRun(p, self, target, args, out, error).run();
  }

  // Every instruction and the return have a fast form, and no more than 16
  // parameters: the same stages over the same fast conversions, the state in
  // locals. 1: done, 0: failed (error set), -1: an argument the fast forms do
  // not take (nothing has run yet: the general run then makes the call).
  // Outs: the plan has `out` parameters (LaneOp out_value, out_array, out_string): room
  // for them once the `in` arguments (their counts) are converted, and their
  // values to the host after the return, in parameter order.
  template <bool Outs>
  [[gnu::flatten]] static int run_lane(const Plan& p, void* self, void* target, const Args& args, Results& out, std::string& error) {
    constexpr std::size_t max_params = 16;
    const std::size_t n = p.instrs_.size();
    if (n > max_params || args.size() != p.host_count_) return -1;
    std::uint64_t slots[max_params];
    void* avalues[max_params];
    alignas(16) std::byte scratch[scratch_size];
    std::size_t used = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const Instr& in = p.instrs_[i];
      if (Outs && is_out(in.fast.op)) continue;
      if (!fast_arg(p, in, args, self, slots[i], avalues[i], scratch, used)) return -1;
    }
    [[maybe_unused]] std::conditional_t<Outs, OutRoom, NoRoom> room;  // nothing at all on a plan without outs
    if constexpr (Outs)
      if (!out_room(p, slots, avalues, scratch, used, room)) return -1;
    alignas(16) std::byte rvalue[32] = {};  // fast returns: at most 32 bytes
    int saved_errno = 0;
    std::unique_ptr<Error> callback_failure, failed;
    native_call(p, &p.cif_, target, avalues, rvalue, out, saved_errno, callback_failure);
    std::int64_t return_int = 0;
    fast_return(p, out, rvalue, saved_errno, return_int, failed);
    std::string conversion;  // an out string the general path's conversion refuses (in_place_string's message)
    if constexpr (Outs) out_results(p, out, slots, room, conversion);
    if (callback_failure || failed) [[unlikely]] {
      set_error(error, std::move(callback_failure ? *callback_failure : *failed));  // the callback's is the cause
      return 0;
    }
    if (!conversion.empty()) [[unlikely]] {
      error = std::move(conversion);  // its Error is the thread's last (set by in_place_string)
      return 0;
    }
    return 1;
  }

  static bool is_out(Op op) { return op == Op::out_value || op == Op::out_array || op == Op::out_string; }

  // Out data of a laned call: the stack scratch where it fits, else the heap
  // (zeroed, as the general converter's buffers are); an array's count.
  struct OutRoom {
    std::uint64_t count[16];
    void* heap[16];
    bool any_heap = false;  // heap[i] is set only for i that took the heap
    OutRoom() = default;
    OutRoom(const OutRoom&) = delete;
    OutRoom& operator=(const OutRoom&) = delete;
    ~OutRoom() {
      if (any_heap) [[unlikely]]
        for (void* h : heap) std::free(h);
    }
  };

  struct NoRoom {};

  // Room for each `out` parameter; false (-1: the general run makes the call
  // and reports it) for a count the general converter refuses (negative,
  // above the buffer limit) or memory that cannot be had.
  static bool out_room(const Plan& p, std::uint64_t* slots, void** avalues, std::byte* scratch, std::size_t& used,
                       OutRoom& room) {
    const TypeRegistry& reg = *p.reg_;
    for (std::size_t i = 0; i < p.instrs_.size(); ++i) {
      const Instr& in = p.instrs_[i];
      std::size_t bytes = 0;
      if (in.fast.op == Op::out_value) {
        bytes = in.out.size;
      } else if (in.fast.op == Op::out_array || in.fast.op == Op::out_string) {
        std::int64_t count_arg = 0;
        if (in.count_param >= 0) std::memcpy(&count_arg, &slots[in.count_param], sizeof count_arg);
        std::uint64_t count = 0;
        if (!p.in_place_count(i, count_arg, count)) return false;
        room.count[i] = count;
        if (in.fast.op == Op::out_string) {
          if (count == 0) return false;  // the general path gives the callee one byte
          bytes = static_cast<std::size_t>(count);  // UTF-8: a byte per unit
        } else {
          bytes = static_cast<std::size_t>(count) * reg.get(reg.get(in.type).ref).size;  // checked by in_place_count
        }
      } else {
        continue;
      }
      void* at;
      const std::size_t take = (std::max<std::size_t>(bytes, 1) + 15) & ~std::size_t{15};
      if (take <= scratch_size - used) {
        at = scratch + used;
        std::memset(at, 0, take);
        used += take;
      } else {
        if (!room.any_heap) std::fill(std::begin(room.heap), std::end(room.heap), nullptr);
        room.any_heap = true;
        at = room.heap[i] = std::calloc(bytes, 1);
        if (!at) return false;
      }
      std::memcpy(&slots[i], &at, sizeof at);
      avalues[i] = &slots[i];
    }
    return true;
  }

  // The `out` parameters' values to the host, in parameter order (after the
  // return), as the general converter makes them.
  static void out_results(const Plan& p, Results& out, const std::uint64_t* slots, const OutRoom& room,
                          std::string& conversion) {
    for (std::size_t i = 0; i < p.instrs_.size(); ++i) {
      const Instr& in = p.instrs_[i];
      if (!is_out(in.fast.op)) continue;
      const std::byte* at;
      std::memcpy(&at, &slots[i], sizeof at);
      const int r = static_cast<int>(i);
      if (in.fast.op == Op::out_string) {
        // Up to the terminator (the whole buffer without one): plain ASCII as
        // it is; anything else read by the general path's conversion.
        const auto cap = static_cast<std::size_t>(room.count[i]);
        const char* text = reinterpret_cast<const char*>(at);
        const void* nul = std::memchr(text, 0, cap);
        const std::size_t n = nul ? static_cast<std::size_t>(static_cast<const char*>(nul) - text) : cap;
        if (plain_ascii(std::string_view(text, n))) {
          out.scalar(r, HostScalar::of_text(std::string_view(text, n)));
          continue;
        }
        std::string decoded, why;
        if (p.in_place_string(i, text, cap, decoded, why)) {
          out.scalar(r, HostScalar::of_text(decoded));
        } else {
          HostScalar none;
          none.kind = HostScalar::Kind::null;
          out.scalar(r, none);  // as the general path gives a value it could not convert
          if (conversion.empty()) conversion = std::move(why);
        }
      } else if (in.fast.op == Op::out_array) {
        const auto count = static_cast<std::size_t>(room.count[i]);
        if (out.array(r, in.out, at, count)) continue;
        out.value(r, lane_list(in.out, at, count));
      } else if (in.out.op == Op::record) {
        record_result(out, r, p.record_fields_[in.out.record], at);
      } else {
        out.scalar(r, lane_scalar(in.out, load_unsigned(at, in.out.size)));
      }
    }
  }

  // A struct of scalar fields to the host (result i: the return or an out
  // parameter): taken by the adapter as bytes, written in place, or a record.
  static void record_result(Results& out, int i, const std::vector<LaneField>& fields, const std::byte* src) {
    if (out.record(i, fields, src)) return;  // taken by the adapter
    if (Value* place = out.place(i)) {
      record_to_host(fields, src, *place);
      return;
    }
    Value v;
    record_to_host(fields, src, v);
    out.value(i, std::move(v));
  }

  // ---- setup: the argument count, per-parameter storage, and whether the
  // fast forms are on (not in guard mode, not when tests turn them off) and
  // the general converter is needed from the start.
  bool setup() {
    const bool variadic = fn_.variadic_from >= 0;
    const std::size_t given = args_.size();
    if (given < p_.host_count_ || (!variadic && given != p_.host_count_)) return arity_error(given);
    if (n_ > std::size(slot_small_)) {
      big_ = std::make_unique<BigArrays>(n_);
      slots_ = big_->slots.data();
      avalues_ = big_->avalues.data();
      pointee_ = big_->pointee.data();
      host_ = big_->host.data();
    }
    fast_ = scalar_lanes_enabled.load(std::memory_order_relaxed) && !p_.lib_->guarded();
    if (p_.needs_general_ || !fast_) general();
    return true;
  }

  bool arity_error(std::size_t given) {
    const Typemap& tm = p_.lib_->typemap();
    const bool variadic = fn_.variadic_from >= 0;
    const std::size_t want = p_.host_count_;
    std::string names;
    for (std::size_t i = p_.method_ ? 1 : 0; i < fn_.params.size(); ++i)
      if (fn_.params[i].host_supplied()) names += (names.empty() ? "" : ", ") + fn_.params[i].name;
    Error e;
    e.id = ErrorId::invalid_argument;
    e.file = tm.file;
    e.function = fn_.name;
    e.got = std::to_string(given) + " arguments";
    e.expected = std::to_string(want) + (variadic ? " or more" : "") + " arguments";
    e.message = tm.file + ": " + fn_.name + ": expects " + std::to_string(want) + " argument" + (want == 1 ? "" : "s") +
                (names.empty() ? "" : " (" + names + ")") + (variadic ? " and then variadic ones" : "") + ", got " +
                std::to_string(given);
    return set_error(error_, std::move(e));
  }

  // The general converter's state; made on first need, with every host
  // argument as a Value (counts may name any parameter).
  General& general() {
    if (!g_) {
      g_.emplace(*p_.lib_, *p_.reg_, fn_);
      for (std::size_t i = 0; i < n_; ++i) {
        const int h = p_.instrs_[i].host_index;
        host_[i] = h >= 0 ? &args_.value(static_cast<std::size_t>(h)) : nullptr;
        pointee_[i] = nullptr;
      }
      CallFrame& f = g_->frame;
      f.sig = &fn_;
      f.param_offset = p_.method_ ? 1 : 0;
      f.host = std::span<const Value* const>(host_, n_);
      f.pointee = std::span<void* const>(pointee_, n_);
    }
    return *g_;
  }

  // ---- marshal: every argument is converted before any native code runs;
  // computed parameters first (they read what other parameters hold).
  bool marshal() {
    if (!p_.computed_.empty() && !marshal_computed()) return false;
    for (std::size_t i = 0; i < n_; ++i) {
      if (g_ && !g_->done.empty() && g_->done[i]) continue;
      const Instr& in = p_.instrs_[i];
      if (fast_ && in.has_fast && marshal_fast(i, in)) continue;
      std::size_t units = 0;
      if (!marshal_general(i, units)) return false;
    }
    return true;
  }

  // A fast instruction: the value as native bits, in a slot or the stack
  // scratch; false when the fast form does not take it (the general converter then does).
  // flatten: the scalar rules (numeric.hpp, lane.hpp) inline here, as one switch per argument.
  // Shared by the laned loop (run_lane) and the general run (marshal_fast): one set of rules.
  [[gnu::flatten, gnu::always_inline]] static inline bool fast_arg(const Plan& p, const Instr& in, const Args& args, void* self,
                                        std::uint64_t& slot, void*& avalue, std::byte* scratch, std::size_t& used) {
    const LaneOp& l = in.fast;
    const auto h = static_cast<std::size_t>(in.host_index);
    std::uint64_t bits = 0;
    avalue = &slot;
    switch (l.op) {
      case Op::self:
        std::memcpy(&slot, &self, sizeof self);
        return true;
      case Op::sint: case Op::uint: case Op::f32: case Op::f64: case Op::boolean: case Op::pointer: {
        HostScalar s;
        args.scalar(h, s);
        if (!lane_to_native(l, s, bits)) return false;
        break;
      }
      case Op::string: {
        // Well-formed text that fits the scratch, or null where null is allowed.
        HostScalar s;
        args.scalar(h, s);
        if (s.kind == HostScalar::Kind::string) {
          const std::size_t room = (s.text.size() + 1) * l.unit;
          if (used + room > scratch_size) return false;
          std::byte* dst = scratch + used;
          const std::size_t units = transcode_utf8(s.text, l.unit, dst);
          if (units == SIZE_MAX) return false;
          std::memset(dst + units * l.unit, 0, l.unit);
          used += (room + 15) & ~std::size_t{15};
          bits = reinterpret_cast<std::uintptr_t>(dst);
        } else if (s.kind != HostScalar::Kind::null || !l.nullable) {
          return false;
        }
        break;
      }
      case Op::record: {
        // The adapter's own record of exactly the struct's fields, or a record
        // Value with exactly those fields, in order; each field taken by its
        // fast form. Any other form goes to the general converter.
        const std::vector<LaneField>& fields = p.record_fields_[l.record];
        if (used + 32 > scratch_size) return false;
        std::byte* dst = scratch + used;
        if (fields.size() <= HostArgs::max_record_fields) {
          HostScalar fs[HostArgs::max_record_fields];
          if (args.record(h, fields, fs)) {
            std::memset(dst, 0, 32);
            for (std::size_t k = 0; k < fields.size(); ++k) {
              std::uint64_t fb = 0;
              if (!lane_to_native(fields[k].op, fs[k], fb)) return false;
              store_bits(dst + fields[k].offset, fields[k].op.size, fb);
            }
            used += 32;
            avalue = dst;
            return true;
          }
        }
        const Value& v = args.value(h);
        if (!v.is<Record>()) return false;
        const Record& rec = v.as<Record>();
        if (rec.size() != fields.size()) return false;
        std::memset(dst, 0, 32);
        for (std::size_t k = 0; k < fields.size(); ++k) {
          std::uint64_t fb = 0;
          if (!same_name(rec[k].first, *fields[k].name) || !lane_to_native(fields[k].op, rec[k].second, fb))
            return false;
          store_bits(dst + fields[k].offset, fields[k].op.size, fb);
        }
        used += 32;
        avalue = dst;  // an aggregate: libffi reads it where it is
        return true;
      }
      case Op::callback: {
        // A registered callback of this signature, still active; a host
        // function (a closure for this call) and every error: the general converter.
        const Value& v = args.value(h);
        if (!v.is<std::shared_ptr<Callback>>()) return false;
        const Callback& cb = *v.as<std::shared_ptr<Callback>>();
        if (&cb.signature() != l.signature || !cb.active() || cb.is_stand_in()) return false;
        const void* code = cb.code();
        std::memcpy(&bits, &code, sizeof code);
        break;
      }
      case Op::void_:
      case Op::out_value: case Op::out_array: case Op::out_string:  // run_lane's own; the general converter's in a general run
        return false;
    }
    slot = bits;
    return true;
  }

  [[gnu::flatten]] bool marshal_fast(std::size_t i, const Instr& in) {
    return fast_arg(p_, in, args_, self_, slots_[i], avalues_[i], scratch_, used_);
  }

  bool fail(std::size_t i) {
    const Typemap& tm = p_.lib_->typemap();
    const TypeRegistry& reg = *p_.reg_;
    return set_error(error_, param_error(tm, fn_, i, g_->m,
                                         tm.file + ": " + fn_.name + ": parameter " + std::to_string(i) + " '" +
                                             fn_.params[i].name + "' (" + reg.spell(fn_.params[i].type) +
                                             "): " + g_->m.error));
  }

  // A general instruction: parameter i converted by the marshaler into its
  // slot; `units` (strings) receives the code units passed, without the terminator.
  bool marshal_general(std::size_t i, std::size_t& units) {
    General& g = general();
    Marshaler& m = g.m;
    Arena& arena = g.arena;
    const TypeRegistry& reg = *p_.reg_;
    const Instr& s = p_.instrs_[i];
    const Param& p = fn_.params[i];
    const TypeDesc& d = reg.get(s.type);
    if (g.guard) g.guard->label(static_cast<int>(i), p.name);
    // Slots are zeroed and rounded up to 16 bytes: a struct split into eightbytes
    // (abi.hpp) is read 8 bytes at a time.
    void* slot = arena.alloc_zeroed((std::max<std::size_t>(s.slot_size, sizeof(void*)) + 15) & ~std::size_t{15},
                                    std::max<std::size_t>(s.slot_align, alignof(void*)));
    avalues_[i] = slot;
    Ctx c;
    c.frame = &g.frame;
    c.nullable = p.nullable;
    c.is_const = p.is_const;
    void* ptr = nullptr;
    if (p_.method_ && i == 0) {  // `this`
      std::memcpy(slot, &self_, sizeof self_);
      return true;
    }
    const Value* const* host = host_;
    switch (s.op) {
      case Instr::Op::value:
        return m.to_native(s.type, *host[i], slot, c) || fail(i);
      case Instr::Op::ptr:
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
      case Instr::Op::array:
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
      case Instr::Op::string: {
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
    pointee_[i] = ptr;
    return true;
  }

  // Computed parameters (extension "value"), so that every count that names
  // one reads the engine's value: a string they measure is converted here, an
  // array is measured by what the host gave (and converted with that count
  // later). The value must fit the parameter's integer type.
  bool marshal_computed() {
    General& g = general();
    const TypeRegistry& reg = *p_.reg_;
    const Typemap& tm = p_.lib_->typemap();
    g.computed.resize(p_.computed_.size());
    g.done.assign(n_, 0);
    for (std::size_t k = 0; k < p_.computed_.size(); ++k) {
      const std::size_t i = p_.computed_[k];
      const Computed& cv = fn_.params[i].value;
      std::uint64_t value = cv.size;
      if (cv.measure != Computed::Measure::size_of) {
        const std::size_t t = cv.index + (p_.method_ ? 1 : 0);
        const TypeDesc& td = reg.get(p_.instrs_[t].type);
        const Value& hv = *host_[t];
        std::uint64_t elements = 0;
        std::size_t unit = 1;
        if (td.kind == Kind::string) {
          std::size_t units = 0;
          if (!g.done[t] && !marshal_general(t, units)) return false;
          g.done[t] = 1;
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
      const TypeId type = p_.instrs_[i].type;
      const TypeDesc& pd = reg.get(type);
      std::uint64_t bits = 0;
      if (integer_fit(HostScalar::of_uint(value), pd.size * 8u, pd.has(flag_signed), bits) != Fit::ok) {
        Marshaler& m = g.m;
        m.error_id = ErrorId::limit_exceeded;
        m.error_got = std::to_string(value);
        m.error_expected = reg.spell(type);
        return set_error(error_, param_error(tm, fn_, i, m,
                                             tm.file + ": " + fn_.name + ": parameter " + std::to_string(i) + " '" +
                                                 fn_.params[i].name + "' (" + reg.spell(type) +
                                                 "): the computed value " + std::to_string(value) + " (" +
                                                 std::string(measure_name(cv.measure)) + " " +
                                                 (cv.measure == Computed::Measure::size_of ? reg.spell(cv.type)
                                                                                           : "'" + cv.name + "'") +
                                                 ") does not fit " + reg.spell(type)));
      }
      g.computed[k] = Value(value);
      host_[i] = &g.computed[k];
    }
    return true;
  }

  // ---- pin: what native code is given is fixed. Host-owned native memory
  // (NativeBox) was passed by address in marshal, as was host data already in
  // the native layout for a `const` parameter (guard mode copies it read-only
  // instead); every other argument is a copy (the arena, the slots, the
  // scratch), so `in` data of the host is never touched by the callee. A variadic call gets its own cif, split
  // arguments (abi.hpp) the addresses of their parts.
  bool pin() {
    cif_ = &p_.cif_;
    call_values_ = avalues_;
    if (fn_.variadic_from >= 0) return pin_variadic();
    if (!p_.lowered_.empty()) {
      General& g = general();
      for (const LoweredArg& a : p_.lowered_)
        g.split_values.push_back(static_cast<std::byte*>(avalues_[a.param]) + a.offset);
      call_values_ = g.split_values.data();
    }
    return true;
  }

  // Variadic arguments: promoted and prepared per call.
  bool pin_variadic() {
    General& g = general();
    const TypeRegistry& reg = *p_.reg_;
    const Typemap& tm = p_.lib_->typemap();
    for (std::size_t k = p_.host_count_; k < args_.size(); ++k) g.extra.push_back(&args_.value(k));
    g.var_types.assign(p_.atypes_.begin(), p_.atypes_.end());
    std::vector<TypeId> ids(p_.value_types_);
    g.var_values.assign(avalues_, avalues_ + n_);
    if (!p_.marshal_variadic(g.extra, g.var_types, ids, g.var_values, g.m, g.arena, error_)) return false;
    std::vector<LoweredArg> lowered;
    unsigned fixed = static_cast<unsigned>(fn_.variadic_from);
    if (lower_arguments(reg, ids, g.var_types, fn_.returns, lowered)) {
      std::vector<ffi_type*> types;
      fixed = 0;
      for (const LoweredArg& a : lowered) {
        types.push_back(a.type);
        g.split_values.push_back(static_cast<std::byte*>(g.var_values[a.param]) + a.offset);
        if (a.param < static_cast<std::uint32_t>(fn_.variadic_from)) ++fixed;
      }
      g.var_types = std::move(types);
      g.var_values = g.split_values;
    }
    ffi_abi abi = FFI_DEFAULT_ABI;
    if (!ffi_abi_of(fn_.callconv, abi, error_)) {
      error_for(error_).id = ErrorId::unsupported;
      return false;
    }
    if (ffi_prep_cif_var(&g.var_cif, abi, fixed, static_cast<unsigned>(g.var_types.size()), p_.cif_.rtype,
                         g.var_types.data()) != FFI_OK)
      return call_error(error_, ErrorId::unsupported, tm, fn_,
                        tm.file + ": " + fn_.name + ": libffi cannot prepare this variadic call");
    cif_ = &g.var_cif;
    call_values_ = g.var_values.data();
    return true;
  }

  // The native call proper, shared by run_lane and invoke: errno, and a host
  // callback's failure (kept for after unmarshal).
  [[gnu::always_inline]] static inline void native_call(const Plan& p, const ffi_cif* cif, void* target, void** values, void* rvalue, Results& out,
                          int& saved_errno, std::unique_ptr<Error>& callback_failure) {
    const Function& fn = *p.fn_;
    if (callback_error_pending()) {
      std::string stale;
      callback_take_error(stale);  // a failure from an earlier call is not this call's
    }
    const bool wants_errno = fn.capture_errno || fn.check.error_errno;
    if (wants_errno) errno = 0;
    if (cif == &p.cif_ && p.invoker_.usable() && invokers_on.load(std::memory_order_relaxed))
      engine::invoke(p.invoker_, target, values, rvalue);
    else
      ffi_call(const_cast<ffi_cif*>(cif), FFI_FN(target), rvalue, values);
    saved_errno = wants_errno ? errno : 0;
    if (fn.capture_errno) out.error_number(saved_errno);
    // A host function that failed inside this call: native code got its
    // on_error value; the host caller gets the error once unmarshal has run,
    // so memory the callee handed over (an error message to free, say) is still freed.
    if (callback_error_pending()) {
      std::string text;
      if (callback_take_error(text)) {
        const Typemap& tm = p.lib_->typemap();
        Error e = error_for(text);
        e.message = tm.file + ": " + fn.name + ": " + text;
        e.file = tm.file;
        e.function = fn.name;
        callback_failure = std::make_unique<Error>(std::move(e));
      }
    }
  }

  // ---- invoke: the native call, errno, and a host callback's failure.
  bool invoke() {
    const TypeDesc& rd = p_.reg_->get(fn_.returns);
    if (g_) {
      // A handle this call releases leaves the identity table first: once the
      // callee frees it, its value may come back as a new handle (HandleTable).
      for (std::size_t i = 0; i < n_; ++i)
        if (p_.instrs_[i].releases_handle && host_[i] && host_[i]->is<std::shared_ptr<HandleBox>>())
          p_.lib_->handles().released(host_[i]->as<std::shared_ptr<HandleBox>>());
      if (g_->guard) g_->guard->label(-1, {});
      rvalue_ = g_->arena.alloc(return_buffer_size(rd), 16);
    } else {
      std::memset(rvalue_small_, 0, sizeof rvalue_small_);
      rvalue_ = rvalue_small_;  // fast returns: at most 32 bytes
    }
    native_call(p_, cif_, target_, call_values_, rvalue_, out_, saved_errno_, callback_failure_);
    return true;
  }

  // ---- unmarshal: the return value, then out/inout parameters; it always
  // runs to the end, so that every pointer the callee handed over is
  // converted and freed. The first failure wins: a host callback's is the
  // cause of what follows it, then the declared failure check, then a conversion.
  bool unmarshal() {
    std::unique_ptr<Error> failed, conversion;  // errors only: nothing to build on success
    if (fast_ && p_.ret_fast_) unmarshal_fast_return(failed);
    else unmarshal_general_return(failed, conversion);
    if (g_) unmarshal_outs(conversion);
    for (std::unique_ptr<Error>* e : {&callback_failure_, &failed, &conversion})
      if (*e) return set_error(error_, std::move(**e));
    return true;
  }

  // The fast return, shared by run_lane and unmarshal: the result to the host,
  // the declared failure check; return_int for counts that read it.
  [[gnu::flatten, gnu::always_inline]] static inline void fast_return(const Plan& p, Results& out, const void* rvalue, int saved_errno,
                                           std::int64_t& return_int, std::unique_ptr<Error>& failed) {
    const Function& fn = *p.fn_;
    const LaneOp& l = p.ret_lane_;
    std::uint64_t wide;
    std::memcpy(&wide, rvalue, 8);
    return_int = 0;
    if (l.op == Op::record) {
      record_result(out, HostResults::ret, p.record_fields_[l.record], static_cast<const std::byte*>(rvalue));
    } else {
      const HostScalar s = lane_scalar(l, wide);
      out.scalar(HostResults::ret, s);
      return_int = scalar_int(s);
    }
    if (fn.check.when != Check::When::never) {
      const std::uint32_t size = l.size;
      std::uint64_t narrowed = size < 8 && size ? wide & ((std::uint64_t{1} << (size * 8)) - 1) : wide;
      Error e = check_failure(p.lib_->typemap(), fn, p.reg_->get(fn.returns), &narrowed, return_int, saved_errno);
      if (e) failed = std::make_unique<Error>(std::move(e));
    }
  }

  void unmarshal_fast_return(std::unique_ptr<Error>& failed) {
    std::int64_t return_int = 0;
    fast_return(p_, out_, rvalue_, saved_errno_, return_int, failed);
    if (g_) {  // out parameters follow: counts may read the return value
      g_->frame.after = true;
      g_->frame.return_int = return_int;
    }
  }

  void note(std::unique_ptr<Error>& conversion, std::string e, ErrorId id = ErrorId::conversion, int param = -1) {
    if (conversion) return;
    const Typemap& tm = p_.lib_->typemap();
    if (param >= 0) {
      conversion = std::make_unique<Error>(param_error(tm, fn_, static_cast<std::size_t>(param), g_->m, std::move(e)));
      return;
    }
    Error r;
    r.id = id == ErrorId::none ? ErrorId::conversion : id;
    r.file = tm.file;
    r.function = fn_.name;
    r.message = std::move(e);
    conversion = std::make_unique<Error>(std::move(r));
  }

  void unmarshal_general_return(std::unique_ptr<Error>& failed, std::unique_ptr<Error>& conversion) {
    General& g = general();
    Marshaler& m = g.m;
    const TypeRegistry& reg = *p_.reg_;
    const Typemap& tm = p_.lib_->typemap();
    const TypeDesc& rd = reg.get(fn_.returns);
    CallFrame& frame = g.frame;
    frame.after = true;
    void* ret = g.arena.alloc(std::max<std::size_t>(rd.size, 8), 16);
    std::memset(ret, 0, std::max<std::size_t>(rd.size, 8));
    const bool owned = rd.kind == Kind::string || rd.kind == Kind::array || rd.kind == Kind::ptr;
    if (owned) std::memcpy(ret, rvalue_, sizeof(void*));
    else if (rd.kind != Kind::void_) read_return(rd, rvalue_, ret);
    if (rd.kind == Kind::integer || rd.kind == Kind::enum_)
      frame.return_int = rd.has(flag_signed) ? load_signed(ret, rd.size)
                                             : static_cast<std::int64_t>(load_unsigned(ret, rd.size));
    Ctx rc;
    rc.frame = &frame;
    rc.transfer = true;  // a returned object carries a reference for the caller
    if (Error e = check_failure(tm, fn_, rd, ret, frame.return_int, saved_errno_))
      failed = std::make_unique<Error>(std::move(e));
    if (rd.kind == Kind::void_) {
      HostScalar none;
      none.kind = HostScalar::Kind::null;
      out_.scalar(HostResults::ret, none);  // a reused result holds no earlier return
      return;
    }
    Value* place = out_.place(HostResults::ret);
    Value temp;
    Value& dst = place ? *place : temp;
    if (owned) {
      void* ptr;
      std::memcpy(&ptr, ret, sizeof ptr);
      bool ok = true;
      if (!ptr) {
        dst = Value();
        if (!fn_.return_nullable && !failed)
          note(conversion, tm.file + ": " + fn_.name + " returned NULL, and its return is not nullable",
               ErrorId::null_not_allowed);
      } else if (rd.kind == Kind::string) {
        ok = m.string_to_host(rd.as<StringInfo>(), ptr, 0, rc, dst);
      } else if (rd.kind == Kind::array) {
        ok = m.array_to_host(fn_.returns, ptr, rc, dst);
      } else {
        ok = m.to_host(fn_.returns, ret, dst, rc);
      }
      if (ptr && p_.ret_free_) p_.ret_free_(reinterpret_cast<std::uintptr_t>(ptr));  // converted first, then freed
      if (!ok) note(conversion, tm.file + ": " + fn_.name + ": return value: " + m.error, m.error_id);
    } else {
      if (!m.to_host(fn_.returns, ret, dst, rc))
        note(conversion, tm.file + ": " + fn_.name + ": return value: " + m.error, m.error_id);
      if (rd.kind == Kind::handle && dst.is_null() && !fn_.return_nullable && !failed)
        note(conversion, tm.file + ": " + fn_.name + " returned an invalid " + rd.name + " handle", ErrorId::native_error);
      if (rd.kind == Kind::interface && dst.is_null() && !fn_.return_nullable && !failed)
        note(conversion, tm.file + ": " + fn_.name + " returned NULL, and its return is not nullable",  // TYPEMAP.md, returns
             ErrorId::null_not_allowed);
    }
    if (!place) out_.value(HostResults::ret, std::move(temp));
  }

  void unmarshal_outs(std::unique_ptr<Error>& conversion) {
    General& g = *g_;
    Marshaler& m = g.m;
    const TypeRegistry& reg = *p_.reg_;
    const Typemap& tm = p_.lib_->typemap();
    g.frame.after = true;
    for (std::size_t i = 0; i < n_; ++i) {
      const Param& p = fn_.params[i];
      if (p.dir == Dir::in) continue;
      const Instr& s = p_.instrs_[i];
      const TypeDesc& d = reg.get(s.type);
      Value v;
      bool ok = true;
      bool taken = false;  // the adapter took the result as it is
      Ctx c;
      c.frame = &g.frame;
      c.transfer = true;  // an object written to an out pointer carries a reference
      void* const pointee = pointee_[i];
      switch (s.op) {
        case Instr::Op::value: break;
        case Instr::Op::ptr: {
          if (!pointee) break;
          ok = m.to_host(d.ref, pointee, v, c);
          if (s.free_with) {
            void* inner;
            std::memcpy(&inner, pointee, sizeof inner);
            if (inner) s.free_with(reinterpret_cast<std::uintptr_t>(inner));
          }
          break;
        }
        case Instr::Op::array: {
          if (!pointee) break;
          const Count* length = &d.as<ArrayInfo>().length;
          LaneOp element;
          if (!scalar_elements(reg, d.ref, element)) {
            ok = m.array_to_host(s.type, pointee, c, v, length);
            break;
          }
          // Scalars: the adapter may take them as they are (no Value per element).
          std::uint64_t count = 0;
          ok = m.array_length(s.type, pointee, c, count, length);
          if (ok && out_.array(static_cast<int>(i), element, pointee, static_cast<std::size_t>(count))) {
            taken = true;
            break;
          }
          ok = ok && m.elements_to_host(d.ref, static_cast<const std::byte*>(pointee), count, c, v);
          break;
        }
        case Instr::Op::string: {
          if (!pointee) break;
          const StringInfo& si = d.as<StringInfo>();
          std::uint64_t cap = 0;
          if (si.capacity.present()) {
            Ctx before = c;
            ok = m.count(si.capacity, before, cap);
          }
          ok = ok && m.string_to_host(si, pointee, cap, c, v);
          break;
        }
      }
      if (!ok)
        note(conversion,
             tm.file + ": " + fn_.name + ": " + std::string(dir_name(p.dir)) + " parameter " + std::to_string(i) + " '" +
                 p.name + "': " + m.error,
             m.error_id, static_cast<int>(i));
      if (!taken) out_.value(static_cast<int>(i), std::move(v));
    }
  }

  // ---- cleanup: callbacks of scope "call" are deactivated and the arena
  // releases all scratch memory (the general state goes); the stack scratch
  // goes with the run.
  void cleanup() { g_.reset(); }

  const Plan& p_;
  const Function& fn_;
  void* self_;
  void* target_;
  const Args& args_;
  Results& out_;
  std::string& error_;
  const std::size_t n_;
  bool fast_ = false;
  std::uint64_t slot_small_[16];
  void* avalue_small_[16];
  void* pointee_small_[16];
  const Value* host_small_[16];
  std::unique_ptr<BigArrays> big_;
  std::uint64_t* slots_ = slot_small_;
  void** avalues_ = avalue_small_;
  void** pointee_ = pointee_small_;
  const Value** host_ = host_small_;
  alignas(16) std::byte scratch_[scratch_size];  // fast strings and records
  std::size_t used_ = 0;
  std::optional<General> g_;
  const ffi_cif* cif_ = nullptr;
  void** call_values_ = nullptr;
  alignas(16) std::byte rvalue_small_[32];
  void* rvalue_ = nullptr;
  int saved_errno_ = 0;
  std::unique_ptr<Error> callback_failure_;
};

// ---- the adapters' entry points -----------------------------------------------------------------

namespace {
bool method_error(std::string& error, const Typemap& tm, const Function& fn) {
  return call_error(error, ErrorId::invalid_argument, tm, fn, tm.file + ": " + fn.name + " is a method: call it on an object");
}
}  // namespace

bool Plan::call(std::span<const Value> args, CallResult& result, std::string& error) const {
  ValuePointers p(args);
  return call(p.view, result, error);
}

bool Plan::call(std::span<const Value* const> args, CallResult& result, std::string& error) const {
  if (method_) return method_error(error, lib_->typemap(), *fn_);
  ValueArgs a(args);
  ValueResults r(result, *fn_);
  return PlanRun<ValueArgs, ValueResults>::call(*this, nullptr, symbol_, a, r, error);
}

bool Plan::call_method(void* self, void* target, std::span<const Value> args, CallResult& result,
                       std::string& error) const {
  ValuePointers p(args);
  return call_method(self, target, p.view, result, error);
}

bool Plan::call_method(void* self, void* target, std::span<const Value* const> args, CallResult& result,
                       std::string& error) const {
  ValueArgs a(args);
  ValueResults r(result, *fn_);
  return PlanRun<ValueArgs, ValueResults>::call(*this, self, target, a, r, error);
}

bool Plan::call(const HostArgs& args, HostResults& results, std::string& error) const {
  if (method_) return method_error(error, lib_->typemap(), *fn_);
  return PlanRun<HostArgs, HostResults>::call(*this, nullptr, symbol_, args, results, error);
}

bool Plan::call_method(void* self, void* target, const HostArgs& args, HostResults& results,
                       std::string& error) const {
  return PlanRun<HostArgs, HostResults>::call(*this, self, target, args, results, error);
}

}  // namespace marshal::engine
