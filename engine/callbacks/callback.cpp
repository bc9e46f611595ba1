// marshal engine: callbacks (libffi closures, trap, error policy).
#include "callbacks/callback.hpp"
#include "base/error.hpp"

#include "abi/abi.hpp"
#include "apartments/apartment.hpp"
#include "base/arena.hpp"
#include "convert/convert.hpp"

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>

namespace marshal::engine {

std::atomic<int> callback_errors_anywhere{0};

namespace {
// One thread's untaken failure; a thread that ends with one untaken gives its
// count back, so the process-wide count stays exact.
struct PendingError {
  std::string text;
  bool pending = false;
  ~PendingError() {
    if (pending) callback_errors_anywhere.fetch_sub(1, std::memory_order_relaxed);
  }
};
thread_local PendingError pending;
}  // namespace

void callback_note_error(const std::string& message) {
  if (pending.pending) return;  // the first failure is the cause
  pending.text = message;
  pending.pending = true;
  callback_errors_anywhere.fetch_add(1, std::memory_order_relaxed);
}

bool callback_error_pending_here() { return pending.pending; }

bool callback_take_error(std::string& message) {
  if (!pending.pending) return false;
  message = std::move(pending.text);
  pending.text.clear();
  pending.pending = false;
  callback_errors_anywhere.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

void Callback::release() {
  active_.store(false);  // seq_cst, as recycle() and the trampoline read it
  if (!stand_in_) return;
  std::function<void(const Callback*)> f;
  {
    std::lock_guard lock(owner_mutex_);
    f = std::move(on_release_);
    on_release_ = nullptr;
  }
  if (f) f(this);
}

std::shared_ptr<Callback> Callback::stand_in(const CallbackSig& sig, std::function<void(const Callback*)> on_release) {
  auto cb = std::shared_ptr<Callback>(new Callback);
  cb->sig_ = &sig;
  cb->name_ = sig.name;
  cb->stand_in_ = true;
  cb->on_release_ = std::move(on_release);
  cb->active_.store(true);
  return cb;
}

void Callback::set_owner_apartment() {
  auto a = current_apartment();
  std::lock_guard lock(owner_mutex_);
  owner_sta_ = a && a->kind() == Apartment::Kind::sta ? a : nullptr;
}

void Callback::write_on_error(void* ret) const {
  // ret_size_ bytes: libffi's return buffer holds at least a register (ffi_arg);
  // a return in memory is exactly the value's size, which ret_size_ then is.
  if (returns_value_) std::memcpy(ret, on_error_bytes_.data(), ret_size_);
}

namespace {
// Closures live as long as the process: a native library may call one at any
// time, even at exit. This is the one process-wide store, and it only grows.
std::vector<std::shared_ptr<Callback>>& graveyard() {
  static auto* kept = new std::vector<std::shared_ptr<Callback>>;
  return *kept;
}
std::mutex graveyard_mutex;
}  // namespace

namespace {
// Host argument lists reused call after call on each thread: a callback runs
// without allocating one. Nested callbacks (a host function calling native
// code that calls back) each take the next level.
struct ArgLevels {
  std::vector<std::unique_ptr<std::vector<Value>>> levels;
  std::size_t depth = 0;
};
thread_local ArgLevels arg_levels;

class ArgLease {
 public:
  // scalars: the caller writes only scalars, which hold nothing alive, so
  // they may stay for the next call (each is then overwritten in place).
  ArgLease(std::size_t n, bool scalars) : levels_(arg_levels), keep_(scalars) {
    if (levels_.levels.size() == levels_.depth) levels_.levels.push_back(std::make_unique<std::vector<Value>>());
    args_ = levels_.levels[levels_.depth++].get();
    if (args_->size() != n || !scalars) {
      args_->clear();
      args_->resize(n);
    }
  }
  ~ArgLease() {
    if (!keep_) args_->clear();  // the values go now; the capacity stays for the next call
    --levels_.depth;
  }
  ArgLease(const ArgLease&) = delete;
  ArgLease& operator=(const ArgLease&) = delete;
  std::vector<Value>& args() { return *args_; }

 private:
  ArgLevels& levels_;
  bool keep_;
  std::vector<Value>* args_;
};

// Tells fn that its result could not be converted (a throw is ignored).
void tell_result_failed(const HostFunction& fn, const std::string& name, const std::string& error) noexcept {
  if (!fn.result_failed) return;
  try {
    fn.result_failed("callback '" + name + "' failed: " + error);
  } catch (...) {
  }
}

// Calls the host function; a throw is a failure (nothing unwinds through native frames).
bool call_host(const HostFunction& fn, const std::vector<Value>& args, Value& result, std::string& error) {
  try {
    return fn.fn(args, result, error);
  } catch (const std::exception& e) {
    error = std::string("threw: ") + e.what();
  } catch (...) {
    error = "threw a non-standard exception";
  }
  return false;
}

// A native argument's bytes as the low bytes of a register (little-endian),
// by fixed-size loads for the usual sizes.
[[gnu::always_inline]] inline std::uint64_t load_bits(const void* p, unsigned size) {
  switch (size) {
    case 1: { std::uint8_t v; std::memcpy(&v, p, 1); return v; }
    case 2: { std::uint16_t v; std::memcpy(&v, p, 2); return v; }
    case 4: { std::uint32_t v; std::memcpy(&v, p, 4); return v; }
    case 8: { std::uint64_t v; std::memcpy(&v, p, 8); return v; }
    default: { std::uint64_t v = 0; std::memcpy(&v, p, size); return v; }
  }
}

// The same for a host function of scalars (HostFunction::scalar).
[[gnu::always_inline]] inline bool call_scalar(const HostFunction& fn, const HostScalar* args, HostScalar& result,
                                               std::string& error) {
  try {
    return fn.scalar(fn.scalar_self.get(), args, result, error);
  } catch (const std::exception& e) {
    error = std::string("threw: ") + e.what();
  } catch (...) {
    error = "threw a non-standard exception";
  }
  return false;
}
}  // namespace

bool Callback::reactivate() {
  bool expected = false;
  if (!active_.compare_exchange_strong(expected, true)) return false;
  if (deliver_to_owner_) {  // read only for delivery "owner"
    owner_.store(std::this_thread::get_id());
    set_owner_apartment();
  }
  return true;
}

// The scalar lane for a host function of scalars (HostFunction::scalar): the
// native arguments read as host scalars by the lane's rule (lane_scalar), the
// result written by it (lane_to_native gives the register's bits, integers
// sign- or zero-extended to 64 as the return widening of store_return makes
// them; libffi's return buffer of a scalar holds at least an ffi_arg).
[[gnu::always_inline]] inline bool Callback::run_scalar(void* ret, void** args, std::string& error) {
  const HostFunction& fn = *fn_;
  const std::size_t n = lane_.size();
  alignas(HostScalar) unsigned char storage[16 * sizeof(HostScalar)];  // laned_: at most 16 parameters
  auto* host_args = reinterpret_cast<HostScalar*>(storage);
  for (std::size_t i = 0; i < n; ++i) new (&host_args[i]) HostScalar(lane_scalar(lane_[i], load_bits(args[i], lane_[i].size)));
  HostScalar result;
  result.kind = HostScalar::Kind::null;
  if (!call_scalar(fn, host_args, result, error)) return false;
  if (!returns_value_) return true;
  std::uint64_t bits = 0;
  if (lane_to_native(lane_ret_, result, bits)) [[likely]] {
    static_assert(sizeof bits == sizeof(ffi_arg));
    std::memcpy(ret, &bits, sizeof bits);
    return true;
  }
  return scalar_result_general(result, ret, error);
}

void Callback::failed(void* ret, const std::string& error) {
  callback_note_error("callback '" + name_ + "' failed: " + error);
  write_on_error(ret);
}

void Callback::trampoline(ffi_cif*, void* ret, void** args, void* self) {
  // Counted before active() is read (seq_cst, paired with recycle()): a
  // closure is recycled only when no call is inside it, so fn_ is never
  // replaced under a running call; a call that enters later sees active()
  // false (the trap) or true with the new host function.
  auto* cb = static_cast<Callback*>(self);
  cb->running_.fetch_add(1);
  struct Leave {
    Callback* cb;
    ~Leave() { cb->running_.fetch_sub(1, std::memory_order_release); }
  } leave{cb};
  // A host function of scalars that runs here (delivery "inline"), active:
  // straight to it. Everything else (the trap, delivery, Values) below.
  if (cb->scalar_ && !cb->deliver_to_owner_ && cb->active() && scalar_lanes_enabled.load(std::memory_order_relaxed))
      [[likely]] {
    std::string error;
    if (!cb->run_scalar(ret, args, error)) [[unlikely]] cb->failed(ret, error);
    return;
  }
  cb->run(ret, args);
}

void Callback::run(void* ret, void** args) {
  if (active() && deliver_to_owner_ && std::this_thread::get_id() != owner_.load()) {
    std::shared_ptr<Apartment> sta;
    {
      std::lock_guard lock(owner_mutex_);
      sta = owner_sta_;
    }
    if (sta) {
      // The owner is an STA: its message loop runs the call (also while it
      // waits for a call of its own).
      std::string error;
      if (!run_in(sta, [&] { run_here(ret, args); }, error)) {
        callback_note_error("callback '" + name_ + "': " + error);
        write_on_error(ret);
      }
      return;
    }
    // delivery "owner": queue the call to the thread that owns the callback and
    // block this (native) thread until the owner ran it.
    CallbackPool::Task task{this, ret, args, owner_.load()};
    pool_->post_and_wait(task);
    return;
  }
  run_here(ret, args);
}

void CallbackPool::post_and_wait(Task& task) {
  std::unique_lock lock(mail_mutex_);
  mail_.push_back(&task);
  posted_.notify_all();
  finished_.wait(lock, [&] { return task.done; });
}

std::size_t CallbackPool::pump(std::chrono::milliseconds wait) {
  const auto me = std::this_thread::get_id();
  std::size_t ran = 0;
  std::unique_lock lock(mail_mutex_);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    auto it = std::find_if(mail_.begin(), mail_.end(), [&](const Task* t) { return t->owner == me; });
    if (it == mail_.end()) {
      if (ran > 0 || std::chrono::steady_clock::now() >= deadline) return ran;
      posted_.wait_until(lock, deadline);
      continue;
    }
    Task* task = *it;
    mail_.erase(it);
    lock.unlock();
    task->cb->run_here(task->ret, task->args);
    lock.lock();
    task->done = true;
    finished_.notify_all();
    ++ran;
  }
}

void Callback::run_here(void* ret, void** args) {
  if (!active()) {
    // The trap: native code called a callback the host released.
    std::fprintf(stderr, "marshal: callback '%s' was called after it was released\n", name_.c_str());
    if (!has_on_error_ && returns_value_) {
      std::fprintf(stderr, "marshal: callback '%s' has no on_error value to return; aborting\n", name_.c_str());
      std::abort();
    }
    callback_note_error(raise_error(ErrorId::released, "callback '" + name_ + "' was called after it was released").message);
    write_on_error(ret);
    return;
  }
  std::string error;
  if (laned_ && scalar_lanes_enabled.load(std::memory_order_relaxed)) {
    if (!(scalar_ ? run_scalar(ret, args, error) : run_lane(ret, args, error))) failed(ret, error);
    return;
  }
  Arena arena;
  Marshaler m(*reg_, arena, handles_);
  m.refs = objects_;
  m.max_buffer = pool_->max_buffer();
  if (!run_host_function(m, *sig_, args, ret, *fn_, error)) {
    callback_note_error("callback '" + name_ + "' failed: " + error);
    write_on_error(ret);
  }
}

bool Callback::run_lane(void* ret, void** args, std::string& error) {
  const std::size_t n = lane_.size();
  ArgLease lease(n, true);
  std::vector<Value>& host_args = lease.args();
  for (std::size_t i = 0; i < n; ++i) {
    std::uint64_t bits = 0;
    std::memcpy(&bits, args[i], lane_[i].size);  // little-endian: the value's bytes are the low bytes
    lane_to_host(lane_[i], bits, host_args[i]);
  }
  Value result;
  if (!call_host(*fn_, host_args, result, error)) return false;
  if (!returns_value_) return true;
  struct Told {  // a failed conversion of the result: told to the host function
    const HostFunction& fn;
    const std::string& name;
    const std::string& error;
    bool failed = true;
    ~Told() { if (failed) tell_result_failed(fn, name, error); }
  } told{*fn_, name_, error};
  const TypeDesc& rd = reg_->get(sig_->returns);
  std::uint64_t bits = 0;
  std::byte value[16] = {};
  if (lane_to_native(lane_ret_, result, bits)) {
    std::memcpy(value, &bits, sizeof bits);
  } else {  // what the lane does not take: the general conversion, for its value or its message
    Arena arena;
    Marshaler m(*reg_, arena, handles_);
    m.max_buffer = pool_->max_buffer();
    Ctx c;
    c.nullable = sig_->return_nullable;
    if (!m.to_native(sig_->returns, result, value, c)) {
      error = "return value: " + m.error;
      return false;
    }
  }
  store_return(rd, value, ret);
  told.failed = false;
  return true;
}

// What the lane does not take of a scalar host function's result: the
// general conversion, for its value or its message.
bool Callback::scalar_result_general(const HostScalar& result, void* ret, std::string& error) {
  Value v;
  put_scalar(result, v);
  Arena arena;
  Marshaler m(*reg_, arena, handles_);
  m.max_buffer = pool_->max_buffer();
  Ctx c;
  c.nullable = sig_->return_nullable;
  std::byte value[16] = {};
  if (!m.to_native(sig_->returns, v, value, c)) {
    error = "return value: " + m.error;
    tell_result_failed(*fn_, name_, error);
    return false;
  }
  store_return(reg_->get(sig_->returns), value, ret);
  return true;
}

namespace {

// Parameters converted after the others: arrays and strings, whose counts
// (capacity, length) may name another parameter (sqlite3's row values,
// expat's character data and its `len`).
bool counted(const TypeRegistry& reg, TypeId t) {
  const TypeDesc& d = reg.get(t);
  if (d.kind == Kind::ptr) {
    const Kind k = reg.get(d.ref).kind;
    return k == Kind::array || k == Kind::string;
  }
  return d.kind == Kind::array || d.kind == Kind::string;
}

std::string count_text(const Count& n) {
  switch (n.source) {
    case Count::Source::constant: return "its count " + std::to_string(n.constant);
    case Count::Source::param: return "its count, parameter '" + n.name + "'";
    case Count::Source::none: case Count::Source::field: case Count::Source::return_value: case Count::Source::sentinel:
      break;
  }
  return "its count";
}

// The host's elements for an out/inout array of a callback, written into the
// buffer native code gave: at most its count (native code's word for how much
// it lent), never more. Converted into scratch first, so a failed element
// leaves native memory as it was.
bool array_into_native(Marshaler& m, TypeId array, const Value& v, void* target, const Ctx& c, std::string& error) {
  const TypeRegistry& reg = m.types();
  const TypeDesc& d = reg.get(array);
  const Count& count = d.as<ArrayInfo>().count;
  const TypeDesc& e = reg.get(d.ref);
  std::uint64_t cap = 0;
  if (!m.count(count, c, cap)) {
    error = m.error;
    return false;
  }
  const bool is_bytes = v.is<Bytes>() && e.kind == Kind::integer && e.size == 1;
  if (!is_bytes && !v.is<List>()) {
    error = "expected a list" + std::string(e.kind == Kind::integer && e.size == 1 ? " or bytes" : "") + ", got " +
            v.describe();
    return false;
  }
  const std::size_t have = is_bytes ? v.as<Bytes>().data.size() : v.as<List>().size();
  if (have > cap) {
    error = "the host gave " + std::to_string(have) + " elements but native code's buffer holds " + std::to_string(cap) +
            " (" + count_text(count) + ")";
    return false;
  }
  std::size_t bytes = 0;
  if (!m.buffer_bytes(have, e.size, &count, bytes)) {
    error = m.error;
    return false;
  }
  if (bytes == 0) return true;
  if (is_bytes) {
    std::memcpy(target, v.as<Bytes>().data.data(), bytes);
    return true;
  }
  auto* scratch = static_cast<std::byte*>(m.arena().alloc_zeroed(bytes, std::max<std::size_t>(e.align, 1)));
  Ctx ec;
  ec.frame = c.frame;
  ec.transfer = true;  // objects written for native code carry a reference
  const List& items = v.as<List>();
  for (std::size_t i = 0; i < have; ++i)
    if (!m.to_native(d.ref, items[i], scratch + i * e.size, ec)) {
      error = "element " + std::to_string(i) + ": " + m.error;
      return false;
    }
  std::memcpy(target, scratch, bytes);
  return true;
}

// The host's string for an out/inout string of a callback, written into the
// buffer native code gave (its capacity, terminator included), never past it.
bool string_into_native(Marshaler& m, TypeId string, const Value& v, void* target, const Ctx& c, std::string& error) {
  const StringInfo& s = m.types().get(string).as<StringInfo>();
  std::uint64_t cap = 0;
  if (!s.capacity.present()) {
    error = "a string written by the host needs a 'capacity' (the buffer native code gives)";
    return false;
  }
  if (!m.count(s.capacity, c, cap)) {
    error = m.error;
    return false;
  }
  std::size_t bytes = 0;
  if (!m.buffer_bytes(cap, encoding_unit(s.encoding), &s.capacity, bytes)) {
    error = m.error;
    return false;
  }
  if (cap == 0) {  // nothing fits, not even a terminator
    const bool empty = (v.is<std::string>() && v.as<std::string>().empty()) || (v.is<Bytes>() && v.as<Bytes>().data.empty());
    if (empty && s.terminator == Terminator::none) return true;
    error = "native code's buffer holds 0 units (capacity, " +
            (s.capacity.source == Count::Source::param ? "parameter '" + s.capacity.name + "'" : std::string("constant")) +
            ")";
    return false;
  }
  // Into scratch first: a string that does not fit leaves native memory as it was.
  void* scratch = m.arena().alloc_zeroed(bytes, encoding_unit(s.encoding));
  void* out = scratch;
  if (!m.string_to_native(s, v, static_cast<std::size_t>(cap), out, c)) {
    error = m.error;
    return false;
  }
  std::memcpy(target, scratch, bytes);
  return true;
}

}  // namespace

bool callback_code(const CallbackInfo& info, const Value& v, CallbackPool* pool,
                   std::vector<std::shared_ptr<Callback>>* call_scoped, void*& code, std::string& why) {
  if (v.is<std::shared_ptr<Callback>>()) {
    const Callback& cb = *v.as<std::shared_ptr<Callback>>();
    if (cb.is_stand_in()) {
      why = "callback '" + cb.name() + "' was made by a library in another process (its closure lives there); "
            "pass it to that library";
      return false;
    }
    if (cb.name() != info.sig->name) {
      why = "a callback of '" + cb.name() + "' given for '" + info.sig->name + "'";
      return false;
    }
    if (!cb.active()) {
      why = raise_error(ErrorId::released, "callback '" + cb.name() + "' was already released").message;
      return false;
    }
    code = cb.code();
    return true;
  }
  if (!v.is<std::shared_ptr<HostFunction>>()) {
    why = "expected a host function for callback '" + info.sig->name + "', got " + v.describe();
    return false;
  }
  if (info.scope == Scope::registered) {
    why = "a registered callback outlives the call: create it with Library::callback() and release it "
          "when native code is done with it";
    return false;
  }
  if (!pool || !call_scoped) {
    why = "callbacks are not available here";
    return false;
  }
  auto cb = pool->acquire(*info.sig, v.as<std::shared_ptr<HostFunction>>(), why);
  if (!cb) return false;
  call_scoped->push_back(cb);
  code = cb->code();
  return true;
}

bool run_host_function(Marshaler& m, const Signature& sig, void** args, void* ret, const HostFunction& fn,
                       std::string& error) {
  const TypeRegistry& reg = m.types();
  Arena& arena = m.arena();
  const std::size_t n = sig.params.size();
  ArgLease lease(n, false);
  std::vector<Value>& host_args = lease.args();
  // Arrays and strings last: their counts may name other parameters.
  // Per-call scratch comes from the arena (inline buffer), not the heap.
  auto** by_index = static_cast<const Value**>(arena.alloc(sizeof(Value*) * (n ? n : 1), alignof(Value*)));
  auto** no_pointees = static_cast<void**>(arena.alloc_zeroed(sizeof(void*) * (n ? n : 1), alignof(void*)));
  for (std::size_t i = 0; i < n; ++i) by_index[i] = &host_args[i];
  CallFrame frame;
  frame.sig = &sig;
  frame.host = std::span<const Value* const>(by_index, n);
  frame.pointee = std::span<void* const>(no_pointees, n);
  bool ok = true;
  for (int pass = 0; pass < 2 && ok; ++pass)
    for (std::size_t i = 0; i < n && ok; ++i) {
      const TypeId t = sig.params[i].type;
      if (counted(reg, t) != (pass == 1)) continue;
      const TypeDesc& d = reg.get(t);
      Ctx c;
      c.frame = &frame;
      c.nullable = true;
      if (sig.params[i].dir == Dir::out) continue;  // the host writes it; it reads nothing
      if (d.kind == Kind::ptr && sig.params[i].dir == Dir::inout) {  // the host sees the value it may replace
        void* p;
        std::memcpy(&p, args[i], sizeof p);
        ok = !p || m.to_host(d.ref, p, host_args[i], c);
      } else if (d.kind == Kind::array) {  // a parameter of array type is a pointer to its first element
        void* p;
        std::memcpy(&p, args[i], sizeof p);
        ok = !p || m.array_to_host(t, p, c, host_args[i]);
      } else {
        ok = m.to_host(t, args[i], host_args[i], c);
      }
      if (!ok) error = "argument " + std::to_string(i) + " '" + sig.params[i].name + "': " + m.error;
    }
  Value result;
  if (ok) ok = call_host(fn, host_args, result, error);
  const bool returned = ok;
  // With out/inout parameters the host returns {"return": R, NAME: V, ...}.
  bool has_out = false;
  for (const Param& p : sig.params) has_out = has_out || p.dir != Dir::in;
  if (ok && has_out) {
    if (!result.is<Record>()) {
      ok = false;
      error = "with out parameters the host returns a record {\"return\": R, NAME: V, ...}, got " + result.describe();
    }
    for (std::size_t i = 0; i < n && ok; ++i) {
      const Param& p = sig.params[i];
      if (p.dir == Dir::in) continue;
      const Value* v = result.field(p.name);
      void* target;
      std::memcpy(&target, args[i], sizeof target);
      if (!v) {
        if (p.dir == Dir::out) {
          ok = false;
          error = "the result has no value for out parameter '" + p.name + "'";
        }
        continue;  // inout: unchanged
      }
      if (!target) continue;  // native code passed NULL: nothing to write
      // Counts are read as native code gave them (frame: the arguments before the call).
      Ctx c;
      c.frame = &frame;
      c.transfer = true;  // an object written to an out pointer carries a reference
      c.nullable = true;
      const TypeDesc& d = reg.get(p.type);
      // Callbacks were checked at load; host objects' methods (whose
      // interfaces native objects implement too) are checked here.
      std::string why = callback_param_refusal(reg, p);
      if (!why.empty()) {
        ok = false;
      } else if (d.kind == Kind::array) {
        ok = array_into_native(m, p.type, *v, target, c, why);
      } else if (d.kind == Kind::string) {
        ok = string_into_native(m, p.type, *v, target, c, why);
      } else if (d.kind == Kind::ptr && reg.get(d.ref).kind == Kind::array) {
        ok = array_into_native(m, d.ref, *v, target, c, why);  // a pointer to the array's first element
      } else if (d.kind == Kind::ptr) {
        ok = m.to_native(d.ref, *v, target, c);
        if (!ok) why = m.error;
      } else {
        ok = false;
        why = "the host cannot write a " + reg.spell(p.type);
      }
      if (!ok) error = "out parameter '" + p.name + "': " + why;
    }
    if (ok) {
      const Value* r = result.field("return");
      result = r ? *r : Value();
    }
  }
  const TypeDesc& rd = reg.get(sig.returns);
  if (ok && rd.kind != Kind::void_) {
    // Converted into scratch first: a failed conversion leaves ret for on_error.
    std::byte small[64] = {};
    std::byte* tmp = small;
    if (rd.size > sizeof small) tmp = static_cast<std::byte*>(arena.alloc_zeroed(rd.size, 16));
    Ctx c;
    c.transfer = true;  // a returned object carries a reference
    c.nullable = sig.return_nullable;
    if (!m.to_native(sig.returns, result, tmp, c)) {
      ok = false;
      error = "return value: " + m.error;
    } else {
      store_return(rd, tmp, ret);
    }
  }
  if (returned && !ok) tell_result_failed(fn, sig.name, error);
  return ok;
}

CallbackPool::~CallbackPool() {
  // The closures stay (as traps); the host functions and the typemap go.
  std::lock_guard lock(graveyard_mutex);
  for (auto& cb : all_) {
    cb->active_.store(false);
    cb->scalar_ = false;
    cb->fn_.reset();
    graveyard().push_back(cb);
  }
}

std::shared_ptr<Callback> CallbackPool::acquire(const CallbackSig& sig, const std::shared_ptr<HostFunction>& fn,
                                                std::string& error) {
  std::shared_ptr<HostFunction> old;  // a recycled closure's former host function, destroyed unlocked
  std::lock_guard lock(mutex_);
  auto& mine = by_function_[{&sig, fn.get()}];
  for (Callback* cb : mine) {
    bool expected = false;
    if (cb->fn_ == fn && cb->active_.compare_exchange_strong(expected, true)) {
      cb->owner_.store(std::this_thread::get_id());
      cb->set_owner_apartment();
      for (auto& s : all_)
        if (s.get() == cb) return s;
    }
  }
  if (all_.size() >= limit_) {
    if (auto cb = recycle(sig, fn, old)) {
      mine.push_back(cb.get());
      return cb;
    }
    error = "too many callbacks: " + std::to_string(limit_) + " closures exist and none of signature '" + sig.name +
            "' is released with no handle left (closures are never freed, so a late call cannot reach freed "
            "memory; release callbacks and drop their handles, reuse host functions, or raise the limit)";
    if (mine.empty()) by_function_.erase({&sig, fn.get()});
    return nullptr;
  }
  for (const Param& p : sig.params)
    if (std::string why = callback_param_refusal(reg_, p); !why.empty()) {
      error = "callback '" + sig.name + "': parameter '" + p.name + "': " + why;
      return nullptr;
    }
  auto cb = std::shared_ptr<Callback>(new Callback);
  cb->reg_ = &reg_;
  cb->sig_ = &sig;
  cb->handles_ = handles_;
  cb->objects_ = objects_;
  cb->pool_ = this;
  cb->name_ = sig.name;
  cb->fn_ = fn;
  for (const Param& p : sig.params) {
    ffi_type* t = ffi_.lower(reg_, p.type, error);
    if (!t) return nullptr;
    cb->atypes_.push_back(t);
  }
  ffi_type* rt = ffi_.lower(reg_, sig.returns, error);
  if (!rt) return nullptr;
  ffi_abi abi;
  if (!ffi_abi_of(sig.callconv, abi, error)) {
    error = "callback '" + sig.name + "': " + error;
    return nullptr;
  }
  if (ffi_prep_cif(&cb->cif_, abi, static_cast<unsigned>(cb->atypes_.size()), rt, cb->atypes_.data()) != FFI_OK) {
    error = "callback '" + sig.name + "': libffi cannot prepare its signature";
    return nullptr;
  }
  const TypeDesc& rd = reg_.get(sig.returns);
  cb->returns_value_ = rd.kind != Kind::void_;
  cb->ret_size_ = std::max<std::size_t>(rd.size, sizeof(ffi_arg));
  cb->has_on_error_ = sig.on_error.present;
  if (cb->returns_value_) {
    // A struct returned in memory (over 16 bytes) needs nothing special: libffi
    // gives the trampoline the caller's hidden return pointer as `ret`.
    std::vector<std::byte> value(cb->ret_size_);
    cb->on_error_bytes_.assign(cb->ret_size_, std::byte{0});
    if (sig.on_error.present) {
      Arena arena;
      Marshaler m(reg_, arena, handles_);
      Ctx c;
      c.nullable = true;
      if (!m.to_native(sig.returns, Value::from_json(sig.on_error.value), value.data(), c)) {
        error = "callback '" + sig.name + "': on_error: " + m.error;
        return nullptr;
      }
    }
    store_return(rd, value.data(), cb->on_error_bytes_.data());
  }
  cb->laned_ = sig.params.size() <= 16 && lane_of(reg_, sig.returns, cb->lane_ret_);
  for (const Param& p : sig.params) {
    LaneOp l;
    cb->laned_ = cb->laned_ && p.dir == Dir::in && lane_of(reg_, p.type, l) && l.op != LaneOp::Op::void_;
    cb->lane_.push_back(l);
  }
  cb->scalar_ = cb->laned_ && fn->scalar;
  cb->closure_ = static_cast<ffi_closure*>(ffi_closure_alloc(sizeof(ffi_closure), &cb->code_));
  if (!cb->closure_ ||
      ffi_prep_closure_loc(cb->closure_, &cb->cif_, &Callback::trampoline, cb.get(), cb->code_) != FFI_OK) {
    error = "callback '" + sig.name + "': cannot allocate a closure";
    return nullptr;
  }
  cb->deliver_to_owner_ = sig.delivery == Delivery::owner && !inline_only_.load(std::memory_order_relaxed);
  cb->owner_.store(std::this_thread::get_id());
  cb->set_owner_apartment();
  cb->active_.store(true);
  all_.push_back(cb);
  mine.push_back(cb.get());
  return cb;
}

std::shared_ptr<Callback> CallbackPool::recycle(const CallbackSig& sig, const std::shared_ptr<HostFunction>& fn,
                                                std::shared_ptr<HostFunction>& old) {
  // Round robin from where the last search stopped: a released closure is
  // taken again only after the others have had their turn. use_count() == 1:
  // no handle outside all_ (copies are made only under mutex_), so no holder
  // of the released callback sees it active again.
  const std::size_t n = all_.size();
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t i = (cursor_ + k) % n;
    std::shared_ptr<Callback>& cb = all_[i];
    // Inactive and no call inside (seq_cst, paired with trampoline()): only
    // acquire (under mutex_) makes a closure active, so it stays inactive
    // while fn_ is replaced below.
    if (cb->sig_ != &sig || cb.use_count() != 1 || cb->active() || cb->running_.load() != 0) continue;
    auto at = by_function_.find({&sig, cb->fn_.get()});
    if (at != by_function_.end()) {
      auto& v = at->second;
      v.erase(std::remove(v.begin(), v.end(), cb.get()), v.end());
      if (v.empty()) by_function_.erase(at);
    }
    old = std::move(cb->fn_);
    cb->fn_ = fn;
    cb->scalar_ = cb->laned_ && fn->scalar;
    cb->owner_.store(std::this_thread::get_id());
    cb->set_owner_apartment();
    cb->active_.store(true);  // after fn_: a call that sees it active runs fn
    ++recycled_;
    cursor_ = (i + 1) % n;
    return cb;
  }
  return nullptr;
}

CallbackStats CallbackPool::stats() {
  std::lock_guard lock(mutex_);
  std::size_t live = 0;  // counted here: making a callback active or releasing it counts nothing
  for (const auto& cb : all_) live += cb->active() ? 1 : 0;
  return {live, all_.size(), limit_, recycled_};
}

}  // namespace marshal::engine
