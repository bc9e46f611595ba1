// marshal engine: a typemap's library, loaded: binding functions and methods to plans.
#include "call/library.hpp"

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

// ---- the library ---------------------------------------------------------------------------

Library::Library(Context& ctx, const Typemap& tm, std::unique_ptr<SharedLibrary> so)
    : ctx_(ctx), tm_(tm), so_(std::move(so)), handles_([this](TypeId t) { return handle_releaser(t); }),
      callbacks_(ctx.types(), ctx.ffi(), &handles_),
      max_buffer_(tm.library.max_buffer ? tm.library.max_buffer : default_max_buffer) {
  callbacks_.set_objects(&objects_);
  callbacks_.set_max_buffer_source(&max_buffer_);  // host functions are bounded by this library's limit
  if (tm.library.guard) guard_.store(true, std::memory_order_relaxed);  // "library": {"guard": true}
  method_cache_ = std::make_unique<std::atomic<const Plan*>[]>(tm_.method_count);  // value-initialized: null
}

std::shared_ptr<Callback> Library::callback(const std::string& sig, std::shared_ptr<HostFunction> fn, std::string& error) {
  auto it = tm_.callbacks.find(sig);
  if (it == tm_.callbacks.end()) {
    error = tm_.file + ": no callback signature '" + sig + "'";
    return nullptr;
  }
  if (!fn) {
    error = tm_.file + ": callback '" + sig + "': no host function";
    return nullptr;
  }
  return callbacks_.acquire(it->second, fn, error);
}

std::shared_ptr<Library> Library::open(Context& ctx, const Typemap& tm, std::string& error) {
  if (!tm.library.present) {
    Error e;
    e.id = ErrorId::typemap;
    e.file = tm.file;
    e.pointer = "/library";
    e.message = tm.file + ": the typemap has no library";
    set_error(error, std::move(e));
    return nullptr;
  }
  auto so = SharedLibrary::open(tm.library, error);
  if (!so) {
    error_for(error).file = tm.file;  // SharedLibrary::open raised library_not_found
    return nullptr;
  }
  return std::make_shared<Library>(ctx, tm, std::move(so));
}

bool Library::resolve_free(const FreeWith& fw, Releaser& out, std::string& error) {
  switch (fw.how) {
    case FreeWith::How::unset: case FreeWith::How::none: return true;
    case FreeWith::How::free: out.fn = reinterpret_cast<void*>(&std::free); return true;
    case FreeWith::How::symbol: {
      SharedLibrary* lib = nullptr;
      if (fw.library == tm_.library.name || fw.library == so_->file()) {
        lib = so_.get();
      } else {
        auto& slot = others_[fw.library];
        if (!slot) slot = SharedLibrary::open_file(fw.library, error);
        if (!slot) {
          error = "cannot load '" + fw.library + "' for " + fw.library + "!" + fw.name + ": " + error;
          return false;
        }
        lib = slot.get();
      }
      out.fn = lib->symbol(fw.name, "", error);
      return out.fn != nullptr;
    }
    case FreeWith::How::function: {
      const Function& f = tm_.functions.at(fw.name);
      out.fn = so_->symbol(f.symbol, f.version, error);
      if (!out.fn) return false;
      const TypeDesc& pd = ctx_.types().get(f.params.at(0).type);
      out.arg = scalar_ffi_type(ctx_.types(), pd);
      out.ret = f.returns == no_type ? &ffi_type_void : scalar_ffi_type(ctx_.types(), ctx_.types().get(f.returns));
      if (!out.arg || !out.ret) {
        error = "function '" + fw.name + "' cannot be used to free memory (its parameter or return is an aggregate)";
        return false;
      }
      return true;
    }
  }
  return false;
}

std::function<void(std::int64_t)> Library::handle_releaser(TypeId type) {
  const TypeDesc& d = ctx_.types().get(type);
  const std::string& name = d.as<HandleInfo>().release;
  if (name.empty()) return {};
  FreeWith fw;
  if (name == "free") fw.how = FreeWith::How::free;
  else if (auto bang = name.find('!'); bang != std::string::npos) {
    fw.how = FreeWith::How::symbol;
    fw.library = name.substr(0, bang);
    fw.name = name.substr(bang + 1);
  } else {
    fw.how = FreeWith::How::function;
    fw.name = name;
  }
  Releaser r;
  std::string error;
  std::lock_guard lock(mutex_);
  if (!resolve_free(fw, r, error)) return {};
  if (fw.how == FreeWith::How::free) r.arg = scalar_ffi_type(ctx_.types(), d);
  // The release may run after the host dropped the library: keep it alive.
  auto self = shared_from_this();
  return [self, r](std::int64_t value) { r(static_cast<std::uint64_t>(value)); };
}

std::vector<std::string> Library::missing_symbols() {
  std::vector<std::string> missing;
  for (const auto& [name, f] : tm_.functions) {
    std::string error;
    if (!so_->symbol(f.symbol, f.version, error)) missing.push_back(tm_.file + ": /functions/" + name + ": " + error);
  }
  return missing;
}

const Plan* Library::bind(const std::string& function, std::string& error) {
  std::lock_guard lock(mutex_);
  if (auto it = plans_.find(function); it != plans_.end()) return it->second.get();
  auto fit = tm_.functions.find(function);
  if (fit == tm_.functions.end()) {
    std::string names;
    for (const auto& [n, _] : tm_.functions) names += (names.empty() ? "" : ", ") + n;
    Error e;
    e.id = ErrorId::invalid_argument;
    e.file = tm_.file;
    e.function = function;
    e.got = function;
    e.expected = "a function of the typemap";
    e.message = tm_.file + ": no function '" + function + "' (functions: " + names + ")";
    set_error(error, std::move(e));
    return nullptr;
  }
  const Function& fn = fit->second;
  void* symbol = so_->symbol(fn.symbol, fn.version, error);
  if (!symbol) {
    Error& e = error_for(error);  // SharedLibrary::symbol raised symbol_not_found
    e.file = tm_.file;
    e.function = fn.name;
    return nullptr;
  }
  auto plan = build(fn, symbol, false, error);
  if (!plan) {
    bind_failed(fn.name, error);
    return nullptr;
  }
  const Plan* out = plan.get();
  plans_[function] = std::move(plan);
  return out;
}

const Plan* Library::bind_method(const Interface& iface, const Method& method, std::string& error) {
  const bool cached = method.ordinal < tm_.method_count;
  if (cached)
    if (const Plan* built = method_cache_[method.ordinal].load(std::memory_order_acquire); built && built->source_ == &method)
      return built;
  std::lock_guard lock(mutex_);
  auto& slot = method_plans_[&method];
  if (slot.second) return slot.second.get();
  // A method is called as a function whose parameter 0 is `this`.
  auto fn = std::make_unique<Function>();
  static_cast<Signature&>(*fn) = method;
  fn->name = iface.name + "." + method.name;
  Param self;
  self.name = "this";
  self.type = ctx_.types().find_primitive("pointer");
  fn->params.insert(fn->params.begin(), self);
  if (method.hresult) {
    fn->check.when = Check::When::negative;
    fn->check.hresult = true;
  }
  auto plan = build(*fn, nullptr, true, error);
  if (!plan) {
    bind_failed(fn->name, error);
    method_plans_.erase(&method);
    return nullptr;
  }
  slot.first = std::move(fn);
  slot.second = std::move(plan);
  slot.second->source_ = &method;
  if (cached && !method_cache_[method.ordinal].load(std::memory_order_relaxed))
    method_cache_[method.ordinal].store(slot.second.get(), std::memory_order_release);
  return slot.second.get();
}

// A struct of scalar fields by value (no bitfields, no size field, at most 32
// bytes): its fast form, with the fields stored in `records`.
static bool record_lane(const TypeRegistry& reg, TypeId t, std::vector<std::vector<LaneField>>& records,
                        LaneOp& l) {
  const TypeDesc& d = reg.get(t);
  if (d.kind != Kind::struct_ || d.size == 0 || d.size > 32 || records.size() >= 0xFFFF) return false;
  const RecordInfo& r = d.as<RecordInfo>();
  if (r.size_field >= 0 || r.fields.empty()) return false;
  std::vector<LaneField> fields;
  for (const Field& f : r.fields) {
    LaneField lf;
    lf.name = &f.name;
    lf.offset = f.offset;
    if (f.is_bitfield || !lane_of(reg, f.type, lf.op) || lf.op.op == LaneOp::Op::void_) return false;
    fields.push_back(lf);
  }
  l.op = LaneOp::Op::record;
  l.size = static_cast<std::uint8_t>(d.size);
  l.record = static_cast<std::uint16_t>(records.size());
  records.push_back(std::move(fields));
  return true;
}

// The fast form of `out` parameter i: what the typed C++ API writes in place
// (Plan::in_place) with a pointee or elements the lane reads as the general
// converter does: a pointer to one integer, floating-point number or struct
// of scalar fields; an array of integers (not uint8: bytes) or floating-point
// numbers counted by an `in` integer or a constant, with no separate length;
// an out UTF-8 string with a capacity (Plan::InPlace::Form::string).
// fast: the instruction's form; out: the pointee's or element's lane; an
// array's count from parameter count_param or the constant count_constant.
static bool out_form(const TypeRegistry& reg, const Plan& plan, std::size_t i, TypeId type,
                     std::vector<std::vector<LaneField>>& records, LaneOp& fast, LaneOp& out, int& count_param,
                     std::uint64_t& count_constant) {
  const Plan::InPlace at = plan.in_place(i);
  const TypeDesc& d = reg.get(type);
  if (at.form == Plan::InPlace::Form::value) {
    if (reg.get(d.ref).kind == Kind::struct_) {
      if (!record_lane(reg, d.ref, records, out)) return false;
    } else if (!lane_of(reg, d.ref, out) || (out.op != LaneOp::Op::sint && out.op != LaneOp::Op::uint &&
                                             out.op != LaneOp::Op::f32 && out.op != LaneOp::Op::f64)) {
      return false;
    }
    fast.op = LaneOp::Op::out_value;
    fast.size = sizeof(void*);
    return true;
  }
  if (at.form == Plan::InPlace::Form::string) {
    fast.op = LaneOp::Op::out_string;
    fast.size = sizeof(void*);
    count_param = at.count_param;
    count_constant = at.constant;
    return true;
  }
  if (at.form != Plan::InPlace::Form::array || at.length_is_return || !scalar_elements(reg, d.ref, out)) return false;
  fast.op = LaneOp::Op::out_array;
  fast.size = sizeof(void*);
  count_param = at.count_param;
  count_constant = at.constant;
  return true;
}

// The fast form of parameter i (Plan::Instr::fast); false when it has none
// and always takes the general converter.
static bool fast_form(const TypeRegistry& reg, const Function& fn, bool method, std::size_t i,
                      std::vector<std::vector<LaneField>>& records, LaneOp& l) {
  const Param& p = fn.params[i];
  const TypeDesc& d = reg.get(p.type);
  if (method && i == 0) {
    l.op = LaneOp::Op::self;
    return true;
  }
  if (p.dir != Dir::in) return false;
  if (d.kind == Kind::callback) {  // a registered callback: its code pointer
    l.op = LaneOp::Op::callback;
    l.size = sizeof(void*);
    l.signature = d.as<CallbackInfo>().sig;
    return true;
  }
  if (d.kind == Kind::string) {
    // A NUL-terminated string the callee reads, of an encoding UTF-8 text is
    // transcoded to directly (the marshaler's rule): transcoded to the stack.
    const StringInfo& si = d.as<StringInfo>();
    if (!transcodes_utf8(si.encoding) || si.terminator != Terminator::nul || si.length.present() ||
        si.capacity.present())
      return false;
    l.op = LaneOp::Op::string;
    l.size = sizeof(void*);
    l.unit = static_cast<std::uint8_t>(encoding_unit(si.encoding));
    l.nullable = p.nullable;
    return true;
  }
  if (d.kind == Kind::struct_) return record_lane(reg, p.type, records, l);
  return lane_of(reg, p.type, l) && l.op != LaneOp::Op::void_;
}

// A signature the engine or the ABI refuses (Library::build): id unsupported
// unless the failure site named one.
void Library::bind_failed(const std::string& function, const std::string& error) const {
  Error& e = error_for(error);
  if (e.id == ErrorId::unclassified) e.id = ErrorId::unsupported;
  e.file = tm_.file;
  e.function = function;
}

std::unique_ptr<Plan> Library::build(const Function& fn, void* symbol, bool method, std::string& error) {
  const TypeRegistry& reg = ctx_.types();
  auto plan = std::make_unique<Plan>();
  plan->lib_ = this;
  plan->fn_ = &fn;
  plan->reg_ = &reg;
  plan->symbol_ = symbol;
  plan->method_ = method;

  auto where = [&](std::size_t i) {
    return tm_.file + ": " + fn.name + ": parameter " + std::to_string(i) + " '" + fn.params[i].name + "' (" +
           reg.spell(fn.params[i].type) + "): ";
  };
  for (std::size_t i = 0; i < fn.params.size(); ++i) {
    const Param& p = fn.params[i];
    const TypeDesc& d = reg.get(p.type);
    Plan::Instr s;
    s.type = p.type;
    s.host_index = !p.host_supplied() || (method && i == 0) ? -1 : static_cast<int>(plan->host_count_++);
    switch (d.kind) {
      case Kind::ptr: s.op = Plan::Instr::Op::ptr; break;
      case Kind::array: s.op = Plan::Instr::Op::array; break;
      case Kind::string: s.op = Plan::Instr::Op::string; break;
      case Kind::interface: case Kind::callback: case Kind::void_: case Kind::integer: case Kind::floating: case Kind::boolean: case Kind::pointer:
      case Kind::struct_: case Kind::union_: case Kind::enum_: case Kind::handle:
        s.op = Plan::Instr::Op::value;
        break;
    }
    std::string why;
    ffi_type* t = s.op == Plan::Instr::Op::value ? ctx_.ffi().lower(reg, p.type, why) : &ffi_type_pointer;
    if (!t) {
      error = where(i) + why;
      return nullptr;
    }
    if (d.kind == Kind::struct_ || d.kind == Kind::union_) {
      s.slot_size = d.size;
      s.slot_align = d.align;
    } else {
      s.slot_size = s.op == Plan::Instr::Op::value ? d.size : sizeof(void*);
      s.slot_align = s.op == Plan::Instr::Op::value ? d.align : alignof(void*);
    }
    if (!resolve_free(p.free_with, s.free_with, why)) {
      error = where(i) + "free_with: " + why;
      return nullptr;
    }
    // Calling a handle type's release function by hand releases that handle: the
    // engine will not release it again, and later uses are errors.
    s.releases_handle = d.kind == Kind::handle && d.as<HandleInfo>().release == fn.name;
    plan->atypes_.push_back(t);
    plan->value_types_.push_back(p.type);
    plan->instrs_.push_back(s);
  }
  std::string why;
  ffi_type* rtype = ctx_.ffi().lower(reg, fn.returns, why);
  const TypeDesc& rd = reg.get(fn.returns);
  if (rd.kind == Kind::array || rd.kind == Kind::string || rd.kind == Kind::ptr) rtype = &ffi_type_pointer;
  if (rd.kind == Kind::callback) {
    error = tm_.file + ": " + fn.name + ": returning callbacks (native function pointers) to the host is not supported; "
            "return a pointer instead";
    return nullptr;
  }
  if (!rtype) {
    error = tm_.file + ": " + fn.name + ": return type: " + why;
    return nullptr;
  }
  if (!resolve_free(fn.free_with, plan->ret_free_, why)) {
    error = tm_.file + ": " + fn.name + ": free_with: " + why;
    return nullptr;
  }
  // Computed parameters, in the loader's evaluation order, as plan indices
  // (a method's parameters follow `this`).
  for (std::uint32_t k : fn.computed) plan->computed_.push_back(k + (method ? 1 : 0));
  ffi_abi abi;
  if (!ffi_abi_of(fn.callconv, abi, why)) {  // the loader refuses it too
    error = tm_.file + ": " + fn.name + ": " + why;
    return nullptr;
  }
  ffi_status st;
  if (fn.variadic_from >= 0) {
    // The variadic part is prepared per call; here only the fixed part is checked.
    st = FFI_OK;
  } else {
    std::vector<LoweredArg> lowered;
    if (lower_arguments(reg, plan->value_types_, plan->atypes_, fn.returns, lowered)) {
      plan->lowered_ = lowered;
      for (const LoweredArg& a : lowered) plan->lowered_types_.push_back(a.type);
    }
    auto& types = plan->lowered_.empty() ? plan->atypes_ : plan->lowered_types_;
    st = ffi_prep_cif(&plan->cif_, abi, static_cast<unsigned>(types.size()), rtype, types.data());
    if (plan->lowered_.empty() && fn.callconv == CallConv::default_) {
      std::vector<TypeId> by_value;
      for (std::size_t i = 0; i < plan->instrs_.size(); ++i)
        by_value.push_back(plan->instrs_[i].op == Plan::Instr::Op::value ? plan->value_types_[i] : no_type);
      choose_invoker(reg, by_value, fn.returns, plan->invoker_);
    }
  }
  // Fast forms: not for variadic plans, split arguments or computed
  // parameters (their calls take the general converter throughout), and
  // only where bits are written as 8 bytes (lane_of).
  if (fn.variadic_from < 0 && plan->lowered_.empty() && plan->computed_.empty()) {
    bool all = true;
    for (std::size_t i = 0; i < plan->instrs_.size(); ++i) {
      Plan::Instr& in = plan->instrs_[i];
      in.has_fast = fn.params[i].dir == Dir::out && !(method && i == 0)
                        ? out_form(reg, *plan, i, in.type, plan->record_fields_, in.fast, in.out, in.count_param,
                                   in.count_constant)
                        : fast_form(reg, fn, method, i, plan->record_fields_, in.fast);
      all = all && in.has_fast;
    }
    plan->ret_fast_ = rd.kind == Kind::struct_ ? record_lane(reg, fn.returns, plan->record_fields_, plan->ret_lane_)
                                               : lane_of(reg, fn.returns, plan->ret_lane_);
    plan->laned_ = all && plan->ret_fast_;
    for (const Plan::Instr& in : plan->instrs_)
      plan->lane_outs_ = plan->lane_outs_ || (plan->laned_ && (in.fast.op == LaneOp::Op::out_value ||
                                                               in.fast.op == LaneOp::Op::out_array ||
                                                               in.fast.op == LaneOp::Op::out_string));
    plan->needs_general_ = !plan->laned_;
  }
  plan->cif_.rtype = rtype;
  if (st != FFI_OK) {
    error = tm_.file + ": " + fn.name + ": libffi cannot prepare this signature (status " + std::to_string(st) + ")";
    return nullptr;
  }
  return plan;
}

bool Library::call_method(const Interface& owner, const Method& m, void* self, void* target,
                          std::span<const Value* const> args, CallResult& result, std::string& error) {
  // A wrong argument count is the plan's error (setup): "IFace.Method: expects N arguments (names), got M".
  const Plan* plan = bind_method(owner, m, error);
  if (!plan) return false;
  return plan->call_method(self, target, args, result, error);
}

bool Library::call_function(const std::string& name, std::span<const Value> args, CallResult& result,
                            std::string& error) {
  const Plan* plan = bind(name, error);
  return plan && plan->call(args, result, error);
}

}  // namespace marshal::engine
