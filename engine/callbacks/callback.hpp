// marshal engine: callbacks.
// Host functions as native function pointers, through libffi closures
// (ffi_closure_alloc: never writable and executable memory of our own). A
// callback is active while it may be called: during the call for scope "call",
// until the host releases it for "registered". Its closure is never freed, so a
// late call from native code lands in a trap that names the callback, never in
// freed memory; a host function is reused with its closure, so a loop that
// passes the same comparator does not grow memory. Once a library's pool holds
// its limit of closures, a released one of the same signature that no handle
// refers to any more is recycled (round robin over the pool): the trap holds
// for a released callback until that many closures exist, and the number of
// callbacks made over a library's life is not limited, only those held at once.
// Host failures (false or a throw) return the signature's on_error value to
// native code and are re-raised to the host when the outer native call returns.
#pragma once

#include "base/bounds.hpp"
#include "convert/lane.hpp"
#include "types/registry.hpp"
#include "types/typemap.hpp"
#include "values/value.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <thread>
#include <ffi.h>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace marshal::engine {

class HandleTable;
class CallbackPool;
class ReferenceMarshaler;
class Marshaler;

class Callback {
 public:
  void* code() const { return code_; }
  const std::string& name() const { return name_; }
  const CallbackSig& signature() const { return *sig_; }
  bool active() const { return active_.load(std::memory_order_acquire); }
  // The host is done with a registered callback: later calls reach the trap.
  void release();
  // Active again for one more call of scope "call" from this thread, for a host
  // that keeps its handle between calls (the typed C++ API: acquire() once,
  // then reactivate() and release() around each call, no pool lookup). false
  // when it is active already (another call has it): acquire() another one.
  // A handle held keeps the closure from being recycled.
  bool reactivate();
  // Whether its host function takes scalars (HostFunction::scalar) and the
  // signature is one of the scalar lane: no Value per call.
  bool scalar_host() const { return scalar_; }

  // A registered callback whose closure lives in another process (a library
  // in a surrogate, engine/remote): the host's handle to it. It has no code
  // here (code() is null: an in-process library refuses it), and release()
  // runs `on_release` once, which releases the other side's closure (native
  // code there then reaches its trap, as in-process), given this callback.
  static std::shared_ptr<Callback> stand_in(const CallbackSig& sig, std::function<void(const Callback*)> on_release);
  bool is_stand_in() const { return stand_in_; }

 private:
  friend class CallbackPool;
  static void trampoline(ffi_cif* cif, void* ret, void** args, void* self);
  void run(void* ret, void** args);
  void run_here(void* ret, void** args);
  void write_on_error(void* ret) const;
  void set_owner_apartment();

  const TypeRegistry* reg_ = nullptr;
  const CallbackSig* sig_ = nullptr;
  HandleTable* handles_ = nullptr;
  ReferenceMarshaler* objects_ = nullptr;
  CallbackPool* pool_ = nullptr;
  std::string name_;
  std::shared_ptr<HostFunction> fn_;
  std::atomic<bool> active_{false};
  std::atomic<int> running_{0};  // native calls inside the closure now (see trampoline)
  bool deliver_to_owner_ = false;
  std::atomic<std::thread::id> owner_{};  // the thread that made it active
  std::mutex owner_mutex_;
  std::shared_ptr<class Apartment> owner_sta_;  // that thread's STA, whose loop runs owner calls
  ffi_cif cif_{};
  std::vector<ffi_type*> atypes_;
  ffi_closure* closure_ = nullptr;
  void* code_ = nullptr;
  bool stand_in_ = false;
  std::function<void(const Callback*)> on_release_;  // a stand-in's (under owner_mutex_)
  // What the trap needs, owned here: the trap may run after the typemap is gone.
  bool returns_value_ = false;
  bool has_on_error_ = false;
  std::size_t ret_size_ = 0;
  std::vector<std::byte> on_error_bytes_;  // ret_size_ bytes, already widened for libffi
  // The scalar lane (lane.hpp): a signature of only `in` scalars and a scalar
  // return (or none) converts without arena or marshaler.
  bool laned_ = false;
  std::vector<LaneOp> lane_;
  LaneOp lane_ret_;
  bool run_lane(void* ret, void** args, std::string& error);
  // Laned with a host function of scalars (HostFunction::scalar): no Value
  // per call. Set with fn_, before the callback is made active.
  bool scalar_ = false;
  bool run_scalar(void* ret, void** args, std::string& error);
  bool scalar_result_general(const HostScalar& result, void* ret, std::string& error);
  void failed(void* ret, const std::string& error);  // noted for the host, on_error for native code
};

struct CallbackStats {
  std::size_t live = 0;     // active now
  std::size_t created = 0;  // closures allocated (never freed)
  std::size_t limit = 0;
  std::size_t recycled = 0;  // released closures given to another host function
};

// Owns every closure of a library. Closures are allocated on demand up to a
// limit and kept for the process's life; at the limit, released closures of
// the same signature without handles are recycled, and only when none is
// (all held or active) is acquiring an error, never a crash.
class CallbackPool {
 public:
  CallbackPool(const TypeRegistry& reg, class FfiTypes& ffi, HandleTable* handles, std::size_t limit = 65536)
      : reg_(reg), ffi_(ffi), handles_(handles), limit_(limit) {}
  ~CallbackPool();

  // An active callback for fn with signature sig (the same closure as before for
  // the same function and signature when it is not active elsewhere).
  std::shared_ptr<Callback> acquire(const CallbackSig& sig, const std::shared_ptr<HostFunction>& fn, std::string& error);
  CallbackStats stats();
  // Objects passed to and from host functions are wrapped in this space.
  void set_objects(ReferenceMarshaler* objects) { objects_ = objects; }
  // The owning library's buffer limit (Library::max_buffer), read by every
  // callback: what native code hands a host function is bounded like the
  // library's own calls. Without a source: the default (bounds.hpp).
  void set_max_buffer_source(const std::atomic<std::size_t>* limit) { max_buffer_ = limit; }
  std::size_t max_buffer() const {
    return max_buffer_ ? max_buffer_->load(std::memory_order_relaxed) : default_max_buffer;
  }

  // Every callback delivered inline, whatever its signature says: the serving
  // side of a process boundary, whose host functions forward each call to
  // their host, which applies the delivery there (remote/host_functions.hpp).
  void set_inline_only(bool on) { inline_only_.store(on, std::memory_order_relaxed); }

  // delivery "owner": runs the calls other threads queued for callbacks owned
  // by the calling thread, waiting up to `wait` for the first one. Returns how
  // many ran. The owner must pump while native code may call from elsewhere;
  // a thread blocked inside a native call cannot pump.
  std::size_t pump(std::chrono::milliseconds wait = std::chrono::milliseconds(0));

 private:
  friend class Callback;
  const TypeRegistry& reg_;
  FfiTypes& ffi_;
  HandleTable* handles_;
  ReferenceMarshaler* objects_ = nullptr;
  const std::atomic<std::size_t>* max_buffer_ = nullptr;
  std::size_t limit_;
  std::atomic<bool> inline_only_{false};
  std::mutex mutex_;
  std::vector<std::shared_ptr<Callback>> all_;
  std::map<std::pair<const CallbackSig*, const HostFunction*>, std::vector<Callback*>> by_function_;
  std::size_t cursor_ = 0;    // where the next search for a closure to recycle starts
  std::size_t recycled_ = 0;  // under mutex_
  // A released closure of sig that only all_ refers to, taken for fn (mutex_ held);
  // its former host function is moved to `old` (destroyed by the caller, unlocked).
  std::shared_ptr<Callback> recycle(const CallbackSig& sig, const std::shared_ptr<HostFunction>& fn,
                                    std::shared_ptr<HostFunction>& old);

  struct Task {
    Callback* cb;
    void* ret;
    void** args;
    std::thread::id owner;
    bool done = false;
  };
  void post_and_wait(Task& task);
  std::mutex mail_mutex_;
  std::condition_variable posted_, finished_;
  std::deque<Task*> mail_;
};

// Runs host function fn for a native call of signature sig: converts the
// native arguments (args: one pointer per parameter, as libffi gives them),
// calls fn, writes out/inout pointees and the return value to ret. false with
// a message when a step fails; ret is then the caller's to fill.
// The native code pointer for a callback argument v (not null) of callback
// type `info`: a registered callback's code, or, from a host function, a
// closure of scope "call" taken from `pool` and added to `call_scoped` (the
// caller deactivates those when its call returns). Without a pool (a host
// function's results), host functions are refused.
bool callback_code(const CallbackInfo& info, const Value& v, CallbackPool* pool,
                   std::vector<std::shared_ptr<Callback>>* call_scoped, void*& code, std::string& why);
bool run_host_function(Marshaler& m, const Signature& sig, void** args, void* ret, const HostFunction& fn,
                       std::string& error);

// The first host failure inside callbacks on this thread since the last take.
void callback_note_error(const std::string& message);
bool callback_take_error(std::string& message);
// Whether a host function failed on this thread and nobody took its error yet.
// The process-wide count is read first: calls pay for no thread-local lookup
// while no failure is pending anywhere.
extern std::atomic<int> callback_errors_anywhere;
bool callback_error_pending_here();
inline bool callback_error_pending() {
  return callback_errors_anywhere.load(std::memory_order_relaxed) != 0 && callback_error_pending_here();
}

}  // namespace marshal::engine
