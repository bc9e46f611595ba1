// marshal remote: the surrogate's side (run by marshal-surrogate).
// Loads the typemap the host sends, opens its library in this process and runs
// each call through the ordinary engine (Library::bind, Plan::call). A native
// crash is reported on the crash pipe by a handler on an alternate stack
// (naming the function that was running), then the signal's default action
// ends the process, which the host sees as a disconnect plus an exit status.
#include "base/error.hpp"
#include "call/arguments.hpp"
#include "callbacks/callback.hpp"
#include "call/library.hpp"
#include "call/plan.hpp"
#include "objects/object.hpp"
#include "remote/serving.hpp"
#include "remote/surrogate.hpp"
#include "remote/tls.hpp"
#include "remote/wire.hpp"

#include <capnp/capability.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <arpa/inet.h>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <string_view>
#include <map>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace marshal::engine::remote {

namespace {

// ---- crash reporting (async-signal-safe: fixed buffers, one write) ----

int g_crash_fd = -1;
char g_current[sizeof(CrashRecord::function)] = {};  // the function being called, or empty

void crash_handler(int sig, siginfo_t* si, void*) {
  CrashRecord r;
  r.signo = sig;
  r.code = si ? si->si_code : 0;
  r.address = si ? reinterpret_cast<std::uintptr_t>(si->si_addr) : 0;
  for (std::size_t i = 0; i + 1 < sizeof r.function && g_current[i]; ++i) r.function[i] = g_current[i];
  ssize_t n = write(g_crash_fd, &r, sizeof r);
  (void)n;
  // The default action from here: a fault repeats when the handler returns and
  // kills the process with the same signal, which the host reads with waitid.
  signal(sig, SIG_DFL);
  raise(sig);
}

void install_crash_handlers() {
  static char altstack[64 * 1024];
  stack_t ss{};
  ss.ss_sp = altstack;
  ss.ss_size = sizeof altstack;
  sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = crash_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) sigaction(s, &sa, nullptr);
}

}  // namespace

namespace serving {

struct Current {  // names the native call in progress for the crash handler
  explicit Current(const std::string& fn) {
    std::size_t n = std::min(fn.size(), sizeof g_current - 1);
    std::memcpy(g_current, fn.data(), n);
    g_current[n] = '\0';
  }
  ~Current() { g_current[0] = '\0'; }
};

// Releases `what` (a handle box, an object reference: their last reference,
// whose release runs native code) on the native thread, after the calls
// queued before it; `served` is handed back to the I/O thread.
void release_on_native(std::shared_ptr<Served> served, std::shared_ptr<void> what) {
  auto rt = served->rt;
  if (!rt || !rt->native_mode) return;  // native calls run here: so does the release (what goes here)
  auto* raw = rt.get();
  auto job = [raw, what = std::move(what), served = std::move(served)]() mutable {
    what = nullptr;
    raw->io.post([served = std::move(served)]() mutable {
      served = nullptr;
      return kj::Promise<void>(kj::READY_NOW);
    });
  };
  rt->native.post(std::move(job));  // not queued (ending): released as the job goes, here
}

// A refused or failed call: the message, and the engine's record of it when
// `e` is that failure's (base/error.hpp).
void set_failure(wire::Outcome::Builder outcome, const std::string& error, const Error& e) {
  outcome.setError(error);
  if (!e || e.message != error) return;
  auto r = outcome.initRecord();
  r.setId(e.id_name());
  r.setFunction(e.function);
  r.setFile(e.file);
  r.setPointer(e.pointer);
  r.setParamIndex(e.param_index);
  r.setParamName(e.param_name);
  r.setGot(e.got);
  r.setExpected(e.expected);
  r.setNativeKind(static_cast<std::uint8_t>(e.native_kind));
  r.setNativeCode(e.native_code);
}

// The same with this thread's last error (a failure on the I/O thread).
void set_failure(wire::Outcome::Builder outcome, const std::string& error) { set_failure(outcome, error, last_error()); }

// Decodes a call's arguments into state (false: the outcome says why).
// Without capabilities (a direct message), a value needing one is refused.
bool decode_args(capnp::List<wire::Value>::Reader args, CallState& state, std::string& error, bool capabilities = true) {
  state.args.resize(args.size());
  for (unsigned i = 0; i < args.size(); ++i)
    if (!remote::to_host(args[i], state.args[i], "argument " + std::to_string(i),
                         capabilities ? &state.codec : nullptr, error))
      return false;
  return true;
}
bool decode_args(capnp::List<wire::Value>::Reader args, CallState& state, wire::Outcome::Builder outcome) {
  std::string error;
  if (decode_args(args, state, error)) return true;
  set_failure(outcome, error);
  return false;
}

// An object capability of this side's, for p: the original reference, seen
// as p's interface (defined with ObjectServer).
void resolved_object(Served& served, wire::RemoteObject::Server& s, SurrogateCodec::PendingObject& p, std::string& error);

// Each capability of `list` resolved through `set`: found(server, pending,
// error) fills its slot; one this side did not export is the call's error.
template <class Iface, class Pending, class Found>
kj::Promise<void> resolve_all(kj::Promise<void> ready, const std::shared_ptr<CallState>& state,
                              std::vector<Pending> SurrogateCodec::*list, capnp::CapabilityServerSet<Iface> Exports::*set,
                              const char* refused, Found found) {
  for (std::size_t k = 0; k < (state->codec.*list).size(); ++k)
    ready = ready.then([state, k, list, set, refused, found]() {
      return (state->served->exports.*set)
          .getLocalServer((state->codec.*list)[k].cap)
          .then([state, k, list, refused, found](kj::Maybe<typename Iface::Server&> s) {
            auto& p = (state->codec.*list)[k];
            KJ_IF_MAYBE(server, s) {
              found(*server, p, state->error);
            } else if (state->error.empty()) {
              state->error = p.where + ": " + refused;
            }
          });
    });
  return ready;
}

// Resolves the handles, objects and registered callbacks of a call's
// arguments: each must be a capability this side exported (state.error says
// which was not).
kj::Promise<void> resolve(std::shared_ptr<CallState> state) {
  kj::Promise<void> ready = kj::READY_NOW;
  ready = resolve_all(kj::mv(ready), state, &SurrogateCodec::pending, &Exports::servers,
                      "a handle that this surrogate did not hand out",
                      [](wire::Handle::Server& s, SurrogateCodec::Pending& p, std::string&) {
                        *p.slot = Value(static_cast<HandleServer&>(s).box());
                      });
  ready = resolve_all(kj::mv(ready), state, &SurrogateCodec::objects, &Exports::object_servers,
                      "an object that this surrogate did not hand out",
                      [served = state->served](wire::RemoteObject::Server& s, SurrogateCodec::PendingObject& p,
                                               std::string& error) { resolved_object(*served, s, p, error); });
  return resolve_all(kj::mv(ready), state, &SurrogateCodec::callbacks, &Exports::callback_servers,
                     "a registered callback that this side did not make",
                     [](wire::RegisteredCallback::Server& s, SurrogateCodec::PendingCallback& p, std::string&) {
                       *p.slot = Value(static_cast<CallbackServer&>(s).callback());
                     });
}

// A call's result into its outcome: a raw pointer or a host-only value cannot
// go back either; the message names where it stood.
// Without capabilities (a direct reply: no capability table), a handle or an
// object in the result is refused the same way, and large bytes are
// referenced (the reply is written while the result lives: serve_direct).
void put_result(const CallResult& result, const std::string& function, const std::shared_ptr<Served>& served,
                wire::Outcome::Builder outcome, bool capabilities = true) {
  SurrogateCodec codec(served);
  HandleCodec* handles = capabilities ? &codec : nullptr;
  auto* put = capabilities ? &remote::to_wire : &remote::to_wire_referencing;
  std::string error;
  auto done = outcome.initOk();
  if (!put(result.ret, done.initRet(), "the return value of " + function, handles, error)) {
    set_failure(outcome, error);
    return;
  }
  auto out = done.initOut(static_cast<unsigned>(result.out.size()));
  for (std::size_t i = 0; i < result.out.size(); ++i) {
    auto f = out[static_cast<unsigned>(i)];
    f.setName(result.out[i].first);
    if (!put(result.out[i].second, f.initValue(), "out parameter '" + result.out[i].first + "' of " + function,
             handles, error)) {
      set_failure(outcome, error);
      return;
    }
  }
  if (result.error_number) {
    done.setHasErrno(true);
    done.setErrno(*result.error_number);
  }
}

// ---- a call of the library's (Library.call, or a direct message) ----

// The native thread: the ordinary in-process call.
void run_call(Served& served, CallState& s) {
  Library& lib = *served.lib;
  clear_last_error();
  auto fail = [&s] {
    s.ok = false;
    s.record = last_error();
    s.args.clear();
  };
  const Plan* plan = lib.bind(s.function, s.error);
  if (!plan) return fail();
  // A client may give the computed parameters too (arguments.hpp).
  ValuePointers given(s.args);
  std::span<const Value* const> args = given.view;
  std::vector<const Value*> storage;
  if (!host_arguments(served.ctx->types(), lib.typemap().file, plan->function(), args, storage, s.error)) return fail();
  {
    Current current(s.function);
    s.ok = plan->call(args, s.result, s.error);
  }
  if (!s.ok) return fail();
  s.args.clear();  // their last references go here, on the native thread
}

// Decodes params, resolves the capabilities in them (each must be one this
// side exported), runs the call on the native thread and fills the outcome
// that `outcome` gives (asked for once, when the call is over or refused).
// Without capabilities (a direct message), a value needing one is refused,
// and the outcome references the result's large bytes: the promise gives
// the call's state, which holds them (null when refused before the call).
kj::Promise<std::shared_ptr<CallState>> serve_call(std::shared_ptr<Served> served,
                                                   wire::Library::CallParams::Reader params,
                                                   std::function<wire::Outcome::Builder()> outcome,
                                                   bool capabilities = true) {
  auto fn = params.getFunction();
  auto state = std::make_shared<CallState>(served);
  state->function.assign(fn.begin(), fn.size());
  state->token = params.getToken();
  state->chain = params.getChain();
  std::string error;
  if (!decode_args(params.getArgs(), *state, error, capabilities)) {
    set_failure(outcome(), error);
    return std::shared_ptr<CallState>();
  }
  return resolve(state)
      .then([state, served]() -> kj::Promise<void> {
        if (!state->error.empty()) return kj::READY_NOW;
        auto* s = served.get();
        return served->rt->on_native(state->token, state->chain, [state, s] { run_call(*s, *state); });
      })
      .then([state, served, outcome = std::move(outcome), capabilities]() mutable {
        auto o = outcome();
        if (!state->ok) set_failure(o, state->error, state->record);  // (a record only when the call made one)
        else put_result(state->result, state->function, served, o, capabilities);
        return state;
      });
}

// ---- objects: one capability per COM identity ----

class ObjectServer final : public wire::RemoteObject::Server {
 public:
  ObjectServer(std::shared_ptr<Served> served, ObjectRef ref) : served_(std::move(served)), ref_(std::move(ref)) {
    served_->exports.objects[ref_.object->identity()] = this;
  }
  // The host dropped its last reference (or disconnected): the wrapper goes,
  // and with it the native reference it held (on the native thread).
  ~ObjectServer() {
    served_->exports.objects.erase(ref_.object->identity());
    release_on_native(served_, std::make_shared<ObjectRef>(std::move(ref_)));
  }
  wire::RemoteObject::Client self() { return thisCap(); }
  const ObjectRef& ref() const { return ref_; }

  kj::Promise<void> call(CallContext context) override {
    auto p = context.getParams();
    auto state = std::make_shared<CallState>(served_);
    const std::string iface(p.getInterface().begin(), p.getInterface().size());
    const std::string method(p.getMethod().begin(), p.getMethod().size());
    state->function = method.find('.') != std::string::npos ? method : iface + "." + method;
    state->token = p.getToken();
    state->chain = p.getChain();
    if (!decode_args(p.getArgs(), *state, context.getResults().initOutcome())) return kj::READY_NOW;
    return resolve(state).then([this, state, iface, method, context]() mutable -> kj::Promise<void> {
      auto outcome = context.getResults().initOutcome();
      if (!state->error.empty()) {
        outcome.setError(state->error);
        return kj::READY_NOW;
      }
      ObjectRef ref = ref_;
      if (!view(iface, ref, state->error)) {
        set_failure(outcome, state->error);
        return kj::READY_NOW;
      }
      auto* lib = served_->lib.get();
      return served_->rt
          ->on_native(state->token, state->chain,
                      [state, lib, ref = std::move(ref), method] {
                        Current current(state->function);
                        state->ok = lib->objects().call(ref, method, state->args, state->result, state->error);
                        if (!state->ok) state->record = last_error();
                        state->args.clear();  // their last references go here
                      })
          .then([this, state, context]() mutable {
            auto outcome = context.getResults().initOutcome();
            if (!state->ok) set_failure(outcome, state->error, state->record);
            else put_result(state->result, state->function, served_, outcome);
          });
    });
  }

  kj::Promise<void> queryInterface(QueryInterfaceContext context) override {
    auto name = context.getParams().getInterface();
    const std::string iface(name.begin(), name.size());
    auto state = std::make_shared<CallState>(served_);
    state->function = "query(" + iface + ")";
    auto* lib = served_->lib.get();
    return served_->rt
        ->on_native(0, 0,
                    [state, lib, ref = ref_, iface] {
                      Current current(state->function);
                      state->ok = lib->objects().query(ref, iface, state->result.ret, state->error);
                      if (!state->ok) state->record = last_error();
                    })
        .then([this, state, context]() mutable {
          auto outcome = context.getResults().initOutcome();
          if (!state->ok) set_failure(outcome, state->error, state->record);
          else put_result(state->result, state->function, served_, outcome);
        });
  }

 private:
  // The reference seen as interface `name` (the host's reference's interface).
  bool view(const std::string& name, ObjectRef& ref, std::string& error) {
    const Typemap& tm = served_->lib->typemap();
    auto it = tm.interfaces.find(name);
    if (it == tm.interfaces.end()) {
      error = tm.file + ": no interface '" + name + "'";
      return false;
    }
    ref.iface = &it->second;
    return true;
  }

  std::shared_ptr<Served> served_;  // declared first: destroyed after ref_
  ObjectRef ref_;
};

bool SurrogateCodec::object_to_wire(const ObjectRef& ref, wire::RemoteRef::Builder b, const std::string& where,
                                    std::string& error) {
  if (!ref.object || !ref.iface) {
    // A proxy of another apartment or process: not an object of this library's.
    error = where + ": only this library's own objects can cross the process boundary";
    return false;
  }
  auto& exports = served_->exports;
  void* identity = ref.object->identity();
  auto it = exports.objects.find(identity);
  if (it != exports.objects.end()) b.setCap(it->second->self());
  else b.setCap(exports.object_servers.add(kj::heap<ObjectServer>(served_, ref)));
  b.setIdentity(reinterpret_cast<std::uintptr_t>(identity));
  b.setInterface(ref.iface->name);
  return true;
}

void resolved_object(Served& served, wire::RemoteObject::Server& s, SurrogateCodec::PendingObject& p, std::string& error) {
  const ObjectRef& home = static_cast<ObjectServer&>(s).ref();
  const Typemap& tm = served.lib->typemap();
  auto it = tm.interfaces.find(p.iface);
  if (it == tm.interfaces.end()) {
    if (error.empty()) error = p.where + ": an object as interface '" + p.iface + "', which the typemap does not declare";
    return;
  }
  ObjectRef ref = home;  // the original reference: native code gets the object itself
  ref.iface = &it->second;
  *p.slot = Value(std::move(ref));
}

class LibraryServer final : public wire::Library::Server {
 public:
  explicit LibraryServer(std::shared_ptr<Served> served) : served_(std::move(served)) {}

  // A registered callback for a host function of the host's: made here (the
  // I/O thread; the pool is thread-safe), its capability goes back.
  kj::Promise<void> callback(CallbackContext context) override {
    auto params = context.getParams();
    auto outcome = context.getResults().initOutcome();
    const std::string sig(params.getSignature().begin(), params.getSignature().size());
    SurrogateCodec codec(served_);
    Value fn;
    std::string error;
    clear_last_error();
    if (!codec.function_to_host(params.getFunction(), fn, "callback '" + sig + "'", error)) {
      set_failure(outcome, error);
      return kj::READY_NOW;
    }
    auto cb = served_->lib->callback(sig, fn.as<std::shared_ptr<HostFunction>>(), error);
    if (!cb) {
      set_failure(outcome, error);
      return kj::READY_NOW;
    }
    auto server = kj::heap<CallbackServer>(served_, cb);
    auto ref = outcome.initOk().initRet().initCallback();
    ref.setSignature(sig);
    ref.setCap(served_->exports.callback_servers.add(kj::mv(server)));
    return kj::READY_NOW;
  }

  kj::Promise<void> call(CallContext context) override {
    return serve_call(served_, context.getParams(), [context]() mutable { return context.getResults().initOutcome(); })
        .ignoreResult();
  }

 private:
  std::shared_ptr<Served> served_;
};

using Allowed = std::vector<std::pair<std::string, std::string>>;  // (path, text)

// ---- the direct channel (a surrogate's second socket) ----

// The host sends a call whose values are all plain data (no handle, object or
// function can be in its arguments or results: surrogate.cpp decides) as one
// plain message on the surrogate's second socket, written and read by the
// calling thread itself: two thread hops fewer than through the host's I/O
// thread and Cap'n Proto RPC (issue 17's add_i32 target, within 3x of a raw
// ping-pong). Here it is one more source of calls for the I/O thread, run
// exactly as Library.call is (serve_call: the same native thread and
// serialization with every other call), its outcome one plain message back.
// The host holds the channel for the whole call, so calls come one at a time.
kj::Promise<void> serve_direct(kj::AsyncIoStream& stream, std::shared_ptr<Served> served) {
  return capnp::tryReadMessage(stream, reader_options())
      .then([&stream, served](kj::Maybe<kj::Own<capnp::MessageReader>> message) -> kj::Promise<void> {
        KJ_IF_MAYBE(m, message) {
          auto request = kj::mv(*m);
          auto reply = kj::heap<capnp::MallocMessageBuilder>();
          capnp::MallocMessageBuilder* r = reply.get();
          auto params = request->getRoot<wire::Library::CallParams>();
          return kj::evalNow([&] {
                   return serve_call(served, params, [r] { return r->initRoot<wire::Outcome>(); }, false);
                 })
              .catch_([r](kj::Exception&& e) {  // a message it could not read as a call
                r->initRoot<wire::Outcome>().setError(std::string("the direct call could not be read: ") +
                                                      e.getDescription().cStr());
                return std::shared_ptr<CallState>();
              })
              // The reply references the result's large bytes: the state
              // that holds them stays until it is written.
              .then([&stream, r](std::shared_ptr<CallState> state) {
                return capnp::writeMessage(stream, *r).attach(kj::mv(state));
              })
              .attach(kj::mv(reply), kj::mv(request))
              .then([&stream, served] { return serve_direct(stream, served); });
        }
        return kj::READY_NOW;  // the host closed it
      });
}

class SurrogateServer final : public wire::Surrogate::Server {
 public:
  // allowed: a server's allowlist (nullptr: a surrogate, which opens what its host sends).
  // direct: a surrogate's direct channel (or null), served once the library is open.
  SurrogateServer(std::shared_ptr<Runtime> rt, const Allowed* allowed = nullptr, std::uint32_t heartbeat_ms = 0,
                  kj::AsyncIoStream* direct = nullptr)
      : rt_(std::move(rt)), allowed_(allowed), heartbeat_ms_(heartbeat_ms), direct_(direct) {}

  kj::Promise<void> ping(PingContext) override { return kj::READY_NOW; }

  kj::Promise<void> open(OpenContext context) override {
    auto p = context.getParams();
    auto text = p.getTypemap();
    auto file = p.getFile();
    if (allowed_) {
      const std::string_view sent(text.begin(), text.size());
      bool ok = false;
      std::string served;
      for (const auto& [path, t] : *allowed_) {
        ok = ok || t == sent;
        served += (served.empty() ? "" : ", ") + path;
      }
      if (!ok) {
        context.getResults().setError("typemap " + std::string(file.begin(), file.size()) +
                                      " is not served here: a client may open only the typemaps the server was "
                                      "given, with the same text (served: " + served + ")");
        context.getResults().setErrorId(error_id_name(ErrorId::refused));
        return kj::READY_NOW;
      }
    }
    auto ctx = std::make_unique<Context>();
    LoadResult r = ctx->load_text(std::string_view(text.begin(), text.size()), std::string(file.begin(), file.size()));
    if (!r.ok()) {
      context.getResults().setError(r.errors.empty() ? "the typemap did not load" : r.errors.front().text());
      context.getResults().setErrorId(error_id_name(ErrorId::typemap));
      return kj::READY_NOW;
    }
    std::string error;
    auto lib = Library::open(*ctx, *r.typemap, error);
    if (!lib) {
      context.getResults().setError(error);
      const Error& e = last_error();
      context.getResults().setErrorId(error_id_name(e && e.message == error ? e.id : ErrorId::library_not_found));
      return kj::READY_NOW;
    }
    auto served = std::make_shared<Served>();
    served->ctx = std::move(ctx);
    served->lib = std::move(lib);
    served->rt = rt_;
    // Host functions forward their calls to the host, which honours their
    // delivery (a callback queued here for the native thread, blocked in
    // the call that waits for it, would never run).
    served->lib->callbacks().set_inline_only(true);
    if (direct_ && !direct_started_) {  // the first library opened (a surrogate opens one)
      direct_started_ = true;
      // A failure (a message too large or malformed) ends the channel: the
      // host's caller then sees its end and reports it.
      direct_loop_ = serve_direct(*direct_, served).eagerlyEvaluate([this](kj::Exception&&) { direct_->shutdownWrite(); });
      context.getResults().setDirect(true);
    }
    context.getResults().setLibrary(kj::heap<LibraryServer>(std::move(served)));
    context.getResults().setHeartbeatMs(heartbeat_ms_);
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<Runtime> rt_;
  const Allowed* allowed_;
  std::uint32_t heartbeat_ms_;
  kj::AsyncIoStream* direct_;
  bool direct_started_ = false;
  kj::Promise<void> direct_loop_ = nullptr;
};


// One client of `marshal serve`: its connection and the objects it holds.
struct Session {
  Session(kj::Own<kj::AsyncIoStream> s, const std::shared_ptr<Runtime>& rt, const Allowed& allowed, kj::Timer& timer,
          std::chrono::milliseconds heartbeat)
      : stream(kj::mv(s)),
        last_heard(timer.now()),
        messages(reusing_message_stream(*stream, [this, &timer] { last_heard = timer.now(); })),
        network(*messages, capnp::rpc::twoparty::Side::SERVER, reader_options()),
        rpc(capnp::makeRpcServer(network, kj::heap<SurrogateServer>(rt, &allowed, static_cast<std::uint32_t>(heartbeat.count())))) {
    rpc.setFlowLimit(traversal_limit_words);
  }
  kj::Own<kj::AsyncIoStream> stream;
  kj::TimePoint last_heard;  // the last message from the client (the heartbeat's evidence)
  kj::Own<capnp::MessageStream> messages;  // wire.hpp: reused receive buffers
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

struct Tasks : kj::TaskSet::ErrorHandler {
  void taskFailed(kj::Exception&&) override {}  // one client's failure ends that client only
};

// What the accept loop of `marshal serve` works with.
struct Serving {
  kj::ConnectionReceiver& port;
  const Allowed& allowed;
  kj::TaskSet& tasks;
  kj::TlsContext* tls;  // null: plain TCP (loopback only)
  kj::Timer& timer;
  const std::function<void(const std::string&)>& on_refused;
  std::chrono::milliseconds heartbeat;  // zero: none
  std::shared_ptr<Runtime> rt;
};

// Resolves when nothing came from the session's client for `timeout`. It
// checks a few times per timeout; a check that comes late (the loop ran a
// native call) excuses the silence, since the client could not be heard.
kj::Promise<void> watchdog(Session& s, kj::Timer& timer, kj::Duration timeout, kj::TimePoint due) {
  const kj::Duration tick = timeout / 4;
  return timer.atTime(due).then([&s, &timer, timeout, due, tick]() -> kj::Promise<void> {
    const kj::TimePoint now = timer.now();
    if (now - due > tick) s.last_heard = now;  // the loop was busy: what the client sent was not read yet
    if (now - s.last_heard >= timeout) return kj::READY_NOW;
    return watchdog(s, timer, timeout, now + tick);
  });
}

// One client's session; it ends when the client goes (or falls silent past
// the heartbeat), and with it every handle the client held.
kj::Promise<void> run_session(kj::Own<kj::AsyncIoStream> stream, Serving& s) {
  keep_alive(*stream, s.heartbeat);
  auto session = kj::heap<Session>(kj::mv(stream), s.rt, s.allowed, s.timer, s.heartbeat);
  kj::Promise<void> ended = session->network.onDisconnect();
  if (s.heartbeat.count() > 0) {
    const kj::Duration timeout = s.heartbeat.count() * kj::MILLISECONDS;
    auto* on_refused = &s.on_refused;
    ended = ended.exclusiveJoin(watchdog(*session, s.timer, timeout, s.timer.now() + timeout / 4)
                                    .then([on_refused, timeout] {
                                      if (*on_refused)
                                        (*on_refused)("ended a session: nothing from its client for " +
                                                      std::to_string(timeout / kj::MILLISECONDS) +
                                                      " ms (the heartbeat); its references are released");
                                    }));
  }
  return ended.attach(kj::mv(session));
}

// " from HOST:PORT" of an accepted connection, for the refusal message.
std::string peer_of(kj::AsyncIoStream& stream) {
  sockaddr_storage a{};
  kj::uint len = sizeof a;
  try {
    stream.getpeername(reinterpret_cast<sockaddr*>(&a), &len);
  } catch (...) {
    return "";
  }
  char host[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
    return " from " + std::string(host) + ":" + std::to_string(ntohs(v4->sin_port));
  }
  if (a.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
    inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
    return " from [" + std::string(host) + "]:" + std::to_string(ntohs(v6->sin6_port));
  }
  return "";
}

kj::Promise<void> accept_loop(Serving& s) {
  return s.port.accept().then([&s](kj::Own<kj::AsyncIoStream> stream) {
    if (!s.tls) {
      s.tasks.add(run_session(kj::mv(stream), s));
    } else {
      // Each handshake is a task of its own (one slow client holds up no
      // other), bounded in time; nothing the client sends reaches Cap'n Proto
      // before its certificate is accepted.
      std::string peer = peer_of(*stream);
      s.tasks.add(s.timer.timeoutAfter(tls_handshake_seconds * kj::SECONDS, tls_accept(*s.tls, kj::mv(stream)))
                      .then([&s](kj::Own<kj::AsyncIoStream> secure) { return run_session(kj::mv(secure), s); },
                            [&s, peer](kj::Exception&& e) -> kj::Promise<void> {
                              if (s.on_refused) s.on_refused("refused a client" + peer + ": TLS handshake failed: " +
                                                             tls_reason(e));
                              return kj::READY_NOW;
                            }));
    }
    return accept_loop(s);
  });
}

}  // namespace serving

using namespace serving;

int serve(const std::vector<std::pair<std::string, std::string>>& typemaps, const std::string& listen,
          const TlsFiles& tls, std::chrono::milliseconds heartbeat, const std::function<void(unsigned port)>& on_listening,
          const std::function<void(const std::string&)>& on_refused, std::string& error) {
  if (const std::string missing = tls_missing(tls, "tls.cert", "tls.key", "tls.ca"); !missing.empty()) {
    error = "mutual TLS needs a certificate, its key and the CA of the clients' certificates: " + missing +
            (missing.find(" and ") == std::string::npos ? " is" : " are") + " missing";
    return 1;
  }
  if (!tls.any() && !is_loopback(listen)) {
    error = "refusing to listen on " + listen + ": without mutual TLS (a certificate, its key and a client CA: "
            "marshal serve --tls-cert, --tls-key, --tls-client-ca) only a loopback address (127.0.0.1:PORT, "
            "[::1]:PORT, localhost:PORT) may be served, so that no other machine can call the libraries";
    return 1;
  }
  kj::Own<kj::TlsContext> context;  // outlives the event loop and every connection
  if (tls.any()) {
    context = tls_context(tls, true, error);
    if (context.get() == nullptr) return 1;
  }
  try {
    auto io = kj::setupAsyncIo();
    // Without TLS, loopback peers only, whatever the address resolves to; with
    // it, any peer, which must then present a certificate of a trusted CA.
    kj::Own<kj::Network> restricted;
    kj::Network* network = &io.provider->getNetwork();
    if (context.get() == nullptr) {
      restricted = network->restrictPeers({"local"});
      network = restricted.get();
    }
    auto address = network->parseAddress(listen).wait(io.waitScope);
    auto listener = address->listen();
    on_listening(listener->getPort());
    // Native calls on a thread of their own (native_thread.hpp), handed back
    // through the runtime's queue.
    auto rt = std::make_shared<Runtime>();
    auto queue = rt->io.run(io.unixEventPort).eagerlyEvaluate(nullptr);
    Tasks handler;
    kj::TaskSet tasks(handler);
    Serving serving{*listener, typemaps, tasks, context.get(), io.provider->getTimer(), on_refused, heartbeat, rt};
    accept_loop(serving).wait(io.waitScope);
  } catch (const kj::Exception& e) {
    error = "cannot serve on " + listen + ": " + std::string(e.getDescription().cStr());
    return 1;
  }
  return 0;
}

int run_surrogate(int sock, int crash_fd, int direct_fd) {
  g_crash_fd = crash_fd;
  install_crash_handlers();
  auto io = kj::setupAsyncIo();
  // Native calls on a thread of their own (native_thread.hpp), handed back
  // through the runtime's queue; destroyed before the event loop.
  auto rt = std::make_shared<Runtime>();
  auto queue = rt->io.run(io.unixEventPort).eagerlyEvaluate(nullptr);
  {
    // A plain stream (not a capability stream): no file descriptors can be
    // passed, whatever a peer sends.
    auto stream = io.lowLevelProvider->wrapSocketFd(sock, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
    kj::Own<kj::AsyncIoStream> direct;  // outlives the server serving it
    if (direct_fd >= 0) direct = io.lowLevelProvider->wrapSocketFd(direct_fd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
    auto messages = reusing_message_stream(*stream);  // wire.hpp: reused receive buffers
    capnp::TwoPartyVatNetwork network(*messages, capnp::rpc::twoparty::Side::SERVER, reader_options());
    auto rpc = capnp::makeRpcServer(network, kj::heap<SurrogateServer>(rt, nullptr, 0, direct.get()));
    // At most this many words of calls in flight from the host before capnp
    // stops reading: a flooding peer is slowed, not buffered without bound.
    rpc.setFlowLimit(traversal_limit_words);
    network.onDisconnect().wait(io.waitScope);  // the host went away: exit
  }
  // The releases the disconnect queued run on the native thread (bounded: a
  // native call that hangs is the host's to kill); what they hand back is
  // dropped here, on this thread, with the queue.
  rt->native.finish(std::chrono::seconds(5));
  rt->io.close();
  rt->io.cancel_all();
  return 0;
}

}  // namespace marshal::engine::remote
