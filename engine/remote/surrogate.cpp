// marshal remote: the host's side of a surrogate process (see surrogate.hpp).
// All Cap'n Proto objects of one IsolatedLibrary live on its I/O thread; a
// caller's thread hands it a call through an IoQueue (io_queue.hpp) and blocks until
// the reply (or the deadline, or the surrogate's death) settles it.
#include "remote/child.hpp"
#include "remote/direct.hpp"
#include "remote/host_functions.hpp"
#include "remote/objects.hpp"
#include "remote/surrogate.hpp"
#include "remote/io_queue.hpp"
#include "remote/tls.hpp"
#include "remote/wire.hpp"

#include "apartments/apartment.hpp"
#include "base/error.hpp"
#include "call/arguments.hpp"
#include "callbacks/callback.hpp"

#include <capnp/capability.h>
#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>

#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace marshal::engine::remote {

bool wants_isolation(const Typemap& tm) { return tm.library.isolate == LibrarySpec::Isolate::process; }

bool is_loopback(const std::string& address) {
  // HOST:PORT, [V6]:PORT; the port must be all digits.
  std::string host;
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) return false;
  for (std::size_t i = colon + 1; i < address.size(); ++i)
    if (address[i] < '0' || address[i] > '9') return false;
  host = address.substr(0, colon);
  if (host == "localhost" || host == "[::1]") return true;
  // 127.0.0.0/8 as dotted decimal: four numbers 0-255, the first 127.
  int parts = 0, value = -1;
  bool first127 = false;
  for (std::size_t i = 0; i <= host.size(); ++i) {
    if (i == host.size() || host[i] == '.') {
      if (value < 0 || value > 255) return false;
      if (parts == 0) first127 = value == 127;
      ++parts;
      value = -1;
    } else if (host[i] >= '0' && host[i] <= '9') {
      value = (value < 0 ? 0 : value * 10) + (host[i] - '0');
      if (value > 255) return false;
    } else {
      return false;
    }
  }
  return parts == 4 && first127;
}

namespace {

// ---- the connection to one surrogate (I/O thread) ----

struct Conn {
  std::shared_ptr<Child> child;
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::MessageStream> messages;  // over stream (wire.hpp: reused receive buffers)
  kj::Own<capnp::TwoPartyVatNetwork> network;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
  wire::Library::Client lib = nullptr;
  bool broken = false;  // the surrogate died or was killed: replaced on the next call
  Error death;          // a server's deadline: what the call that closed the connection reports
  kj::Promise<void> heartbeat = nullptr;  // a server's: pings at a third of its timeout (first to go)
};

// Pings a server every `every` for as long as the connection lasts (the
// promise is the connection's); a ping that fails ends the loop, and the
// connection's failure shows at the next call.
kj::Promise<void> ping_loop(wire::Surrogate::Client server, kj::Timer& timer, kj::Duration every) {
  return timer.afterDelay(every).then([server, &timer, every]() mutable {
    return server.pingRequest().send().then([server, &timer, every](auto&&) mutable {
      return ping_loop(kj::mv(server), timer, every);
    });
  });
}

struct Reply {
  bool ok = false;
  CallResult result;
  Error error;  // its message is the call's error text
};

Reply refused(std::string message, ErrorId id = ErrorId::unclassified, const std::string& function = {}) {
  return Reply{false, {}, failure(id, std::move(message), function)};
}

// The serving side's record of a call it refused or that failed there (the
// engine's own, sent along with the message), else an unclassified one.
Error remote_record(wire::Outcome::Reader outcome) {
  Error e = failure(ErrorId::unclassified, outcome.getError().cStr());
  if (!outcome.hasRecord()) return e;
  auto r = outcome.getRecord();
  ErrorId id;
  if (error_id_from_name(std::string_view(r.getId().begin(), r.getId().size()), id) && id != ErrorId::none) e.id = id;
  e.function = r.getFunction().cStr();
  e.file = r.getFile().cStr();
  e.pointer = r.getPointer().cStr();
  e.param_index = r.getParamIndex();
  e.param_name = r.getParamName().cStr();
  e.got = r.getGot().cStr();
  e.expected = r.getExpected().cStr();
  const auto kind = r.getNativeKind();
  if (kind <= static_cast<std::uint8_t>(NativeCodeKind::return_value)) {
    e.native_kind = static_cast<NativeCodeKind>(kind);
    e.native_code = r.getNativeCode();
  }
  return e;
}

// Runs f (returning a kj::Promise<T>) on the I/O thread and waits for its
// value. The threads meet through IoQueue's mutex and the slot's (never kj's
// futexes: ThreadSanitizer sees every hand-off). A task that never runs, or
// whose promise is dropped unfinished (the I/O thread ending), is a
// disconnected kj exception, never a wait forever. With `waiters`, the wait
// is known by `token` and runs the callbacks that come back for it
// (host_functions.hpp) until the value arrives.
template <class T, class F>
T run_on(IoQueue& queue, F&& f, Waiters* waiters = nullptr, std::uint64_t token = 0) {
  struct Slot : Waiter {
    bool finished = false;
    kj::Maybe<T> value;
    kj::Maybe<kj::Exception> failure;
    void finish(kj::Maybe<T> v, kj::Maybe<kj::Exception> e) {
      std::lock_guard lock(m);
      if (finished) return;
      value = kj::mv(v);
      failure = kj::mv(e);
      finished = true;
      cv.notify_all();
    }
  };
  // Gone with the last copy of the task and of its promise (which may outlive
  // this frame, so the slot is shared): a task that did not finish says so.
  struct Unfinished {
    std::shared_ptr<Slot> slot;
    ~Unfinished() {
      if (slot) slot->finish(nullptr, KJ_EXCEPTION(DISCONNECTED, "the connection's I/O thread ended before the call finished"));
    }
  };
  auto slot = std::make_shared<Slot>();
  auto guard = std::make_shared<Unfinished>();  // (no temporary: its destructor would report)
  guard->slot = slot;
  if (waiters) waiters->enter(token, slot);  // before the call goes: its callbacks find this wait
  const bool posted = queue.post([s = slot.get(), &f, guard]() -> kj::Promise<void> {
    // f and what it refers to stay alive until the slot is done: the caller waits.
    return kj::evalNow([&f] { return f(); })
        .then([s](T v) { s->finish(kj::mv(v), nullptr); }, [s](kj::Exception&& e) { s->finish(nullptr, kj::mv(e)); })
        .attach(std::shared_ptr<Unfinished>(guard));
  });
  guard = nullptr;  // the queue's copies (or none, when not posted) decide now
  if (!posted) {
    if (waiters) waiters->leave(token);
    kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "the connection's I/O thread has ended"));
  }
  slot->run_until([&] { return slot->finished; });
  if (waiters) waiters->leave(token);
  std::unique_lock lock(slot->m);
  KJ_IF_MAYBE(e, slot->failure) { kj::throwFatalException(kj::mv(*e)); }
  KJ_IF_MAYBE(v, slot->value) { return kj::mv(*v); }
  return T{};
}

}  // namespace

// ---- handles imported from surrogates (shared with the HandleBoxes) ----

// The host's HandleBoxes for handles living in a surrogate: one box per
// capability (capnp gives one import per export, and the surrogate exports one
// capability per handle identity), dropped when the host drops the box.
struct Imports {
  struct Entry {
    std::weak_ptr<HandleBox> box;
    wire::Handle::Client cap = nullptr;  // destroyed on the I/O thread only
    int generation = 0;
    const void* hook = nullptr;
  };
  std::mutex mutex;  // guards `alive` and `exec` against HandleBox releases on other threads
  bool alive = true;
  std::shared_ptr<IoQueue> exec;
  std::thread::id io_thread;
  // I/O thread only:
  std::map<const HandleBox*, Entry> by_box;
  std::map<std::pair<int, const void*>, const HandleBox*> by_hook;
  std::map<int, std::string> deaths;  // generation -> how its surrogate ended
  // Objects: one proxy per (generation, remote identity) while the host holds
  // it (the serving side exports one capability per identity).
  struct ObjectEntry {
    std::weak_ptr<RemoteProxy> proxy;
    wire::RemoteObject::Client cap = nullptr;  // destroyed on the I/O thread only
  };
  std::map<const RemoteProxy*, ObjectEntry> objects;
  std::map<std::pair<int, std::uint64_t>, const RemoteProxy*> objects_by_identity;
  // Registered callbacks made on the serving side (IsolatedLibrary::callback):
  // the capability is held while the host's stand-in is active.
  struct CallbackEntry {
    wire::RegisteredCallback::Client cap = nullptr;  // destroyed on the I/O thread only
    int generation = 0;
    std::weak_ptr<Callback> stand_in;  // deactivated with the library, as in-process
  };
  std::map<const Callback*, CallbackEntry> callbacks;

  // Runs f on the I/O thread (here when called there) and waits for it; nothing
  // once the I/O thread is ending (its teardown drops every capability).
  //
  // Each counts in `releases`: the release goes to the surrogate as an RPC
  // message, ahead of any later RPC call but not of a direct one (direct.hpp),
  // so a call made after it takes RPC (and, once that returns, the surrogate
  // has seen every release counted before it: synced_releases).
  std::atomic<std::uint64_t> releases{0};
  template <class F>
  void on_io(F&& f) noexcept {
    releases.fetch_add(1);
    try {
      if (std::this_thread::get_id() == io_thread) {
        f(*this);
        return;
      }
      std::lock_guard lock(mutex);
      if (!alive) return;
      run_on<bool>(*exec, [&] {
        f(*this);
        return kj::Promise<bool>(true);
      });
    } catch (...) {
    }
  }
  template <class F>
  static void on_io(const std::weak_ptr<Imports>& weak, F&& f) noexcept {
    if (auto self = weak.lock()) self->on_io(std::forward<F>(f));
  }
  void forget_object(const RemoteProxy* p) {  // I/O thread
    auto it = objects.find(p);
    if (it == objects.end()) return;
    auto key = std::make_pair(p->generation(), p->remote_identity());
    if (auto k = objects_by_identity.find(key); k != objects_by_identity.end() && k->second == p)
      objects_by_identity.erase(k);
    objects.erase(it);
  }
  // A proxy's release: the host dropped its last reference.
  void release_object(const RemoteProxy* p) noexcept {
    on_io([p](Imports& im) { im.forget_object(p); });
  }

  void forget(const HandleBox* box) {  // I/O thread
    auto it = by_box.find(box);
    if (it == by_box.end()) return;
    by_hook.erase({it->second.generation, it->second.hook});
    by_box.erase(it);
  }
  // A HandleBox's release: the host dropped its last reference.
  static void release(const std::weak_ptr<Imports>& weak, const HandleBox* box) noexcept {
    on_io(weak, [box](Imports& im) { im.forget(box); });
  }
  // A registered callback's release: its capability goes, and with it the
  // serving side's callback (released there before any later call arrives:
  // capnp sends the release ahead of them).
  static void release_callback(const std::weak_ptr<Imports>& weak, const Callback* cb) noexcept {
    on_io(weak, [cb](Imports& im) { im.callbacks.erase(cb); });
  }
};

struct IsolatedLibrary::Impl final : kj::TaskSet::ErrorHandler, ObjectLink, CallbackSite {  // final: deleted through unique_ptr<Impl>
  Context* ctx = nullptr;
  const Typemap* tm = nullptr;
  std::string text, file, surrogate;
  std::chrono::milliseconds deadline{0};
  std::string connect;  // a server's address instead of a surrogate
  std::string tls_name;  // with tls: the name the server's certificate must carry
  kj::Own<kj::TlsContext> tls;  // connect with mutual TLS (made by open_text; used on the I/O thread)

  std::thread io_thread;
  std::shared_ptr<IoQueue> exec = std::make_shared<IoQueue>();
  std::shared_ptr<Imports> imports = std::make_shared<Imports>();
  std::shared_ptr<RemoteHost> objects_host;  // what remote object references say they belong to
  IsolatedLibrary* self = nullptr;            // for a class factory's call (RemoteHost::call_function)
  std::atomic<int> pid{0};
  std::atomic<int> generation{0};

  // Host functions called back (host_functions.hpp): the threads waiting for
  // calls, and the thread for callbacks no waiting thread takes.
  Waiters waiters_;
  Dispatcher dispatcher_;

  // The current surrogate's direct channel (direct.hpp), or null: set and
  // dropped on the I/O thread, taken by callers' threads; under direct_m,
  // with which functions are plain data (decided on first use).
  std::mutex direct_m;
  std::shared_ptr<DirectChannel> direct;
  std::map<const Function*, bool> direct_plain;
  // Once a host function or host object has gone to the surrogate, native
  // code there may call the host back during any call, and the caller must
  // wait as RPC waits (run_on: it runs the callbacks that come back for it):
  // from then on no call takes the direct channel.
  std::atomic<bool> direct_off{false};
  // Imports::releases as of the last RPC call sent that has returned: while
  // it is behind, a release may still be on its way, and calls take RPC.
  std::atomic<std::uint64_t> synced_releases{0};
  std::atomic<std::uint64_t> direct_count{0};  // calls sent over it

  // I/O thread only:
  kj::AsyncIoContext* io = nullptr;
  kj::Own<Conn> conn;
  std::map<const HostFunction*, HostCallbackServer*> function_exports;  // one capability per host function
  struct HostObjectExport {
    HostObjectServer* server = nullptr;
    const void* hook = nullptr;  // its capability's, as it comes back
  };
  std::map<const HostObject*, HostObjectExport> host_object_exports;  // one capability per host object
  std::map<const void*, HostObjectServer*> host_objects_by_hook;
  CallbackOwner caller;  // who passes the argument being encoded (delivery "owner")
  kj::Own<kj::Network> network;  // connect without TLS: loopback peers only
  ErrorId start_error = ErrorId::unclassified;  // the id of the last start's failure

  // Noexcept as ObjectLink's: kj members may declare throwing destructors, none throws here.
  ~Impl() noexcept override = default;
  void taskFailed(kj::Exception&&) override {}

  // ---- handles as the host sees them ----
  class Codec final : public HandleCodec {
   public:
    explicit Codec(Impl& impl) : impl_(impl) {}
    bool to_wire(const std::shared_ptr<HandleBox>& box, wire::HandleRef::Builder b, const std::string& where,
                 std::string& error) override {
      auto& im = *impl_.imports;
      auto it = im.by_box.find(box.get());
      if (it == im.by_box.end()) {
        error = where + ": handle " + box->type_name + " " + hex(static_cast<std::uint64_t>(box->value)) +
                " did not come from this library's surrogate";
        return false;
      }
      if (it->second.generation != impl_.generation.load() || !impl_.conn || impl_.conn->broken) {
        auto d = im.deaths.find(it->second.generation);
        error = where + ": handle " + box->type_name + " came from a surrogate that has ended" +
                (d != im.deaths.end() ? " (" + d->second + ")" : std::string()) +
                "; the handles of a dead surrogate are gone with it";
        return false;
      }
      b.setCap(it->second.cap);
      b.setTypeName(box->type_name);
      b.setValue(box->value);
      return true;
    }
    bool to_host(wire::HandleRef::Reader r, Value& out, const std::string&, std::string&) override {
      auto& im = *impl_.imports;
      wire::Handle::Client cap = r.getCap();
      const void* hook = capnp::ClientHook::from(kj::cp(cap)).get();
      const int gen = impl_.generation.load();
      if (auto it = im.by_hook.find({gen, hook}); it != im.by_hook.end()) {
        if (auto box = im.by_box.at(it->second).box.lock()) {
          out = Value(std::move(box));
          return true;
        }
      }
      auto box = std::make_shared<HandleBox>();
      auto tn = r.getTypeName();
      box->type_name.assign(tn.begin(), tn.size());
      box->type = impl_.tm->find_type(box->type_name);
      box->value = r.getValue();
      std::weak_ptr<Imports> weak = impl_.imports;
      const HandleBox* raw = box.get();
      box->release = [weak, raw](std::int64_t) { Imports::release(weak, raw); };
      im.forget(raw);  // a stale entry at a reused address
      im.by_box[raw] = Imports::Entry{box, kj::mv(cap), gen, hook};
      im.by_hook[{gen, hook}] = raw;
      out = Value(std::move(box));
      return true;
    }
    bool object_to_wire(const ObjectRef& ref, wire::RemoteRef::Builder b, const std::string& where,
                        std::string& error) override {
      const std::string what = ref.iface ? ref.iface->name : std::string("object");
      const auto* p = dynamic_cast<const RemoteProxy*>(ref.remote.get());
      if (!p) {
        error = where + ": " + what + " is an object of this process; only objects that came from this "
                "library's surrogate can be passed to it";
        return false;
      }
      auto& im = *impl_.imports;
      auto it = im.objects.find(p);
      if (it == im.objects.end()) {
        error = where + ": " + what + " came from another library (" + p->remote_host().typemap().file +
                "); an object can be passed only to the library it came from";
        return false;
      }
      if (!impl_.object_alive(*p, where + ": " + what, error)) return false;
      b.setCap(it->second.cap);
      b.setIdentity(p->remote_identity());
      b.setInterface(ref.iface ? ref.iface->name : std::string());
      return true;
    }
    bool function_to_wire(const std::shared_ptr<HostFunction>& fn, wire::FunctionRef::Builder b,
                          const std::string& where, std::string& error) override {
      if (!fn || !fn->fn) {
        error = where + ": a host function without a body";
        return false;
      }
      impl_.direct_off.store(true);  // before it can reach the surrogate
      auto& exports = impl_.function_exports;
      if (auto it = exports.find(fn.get()); it != exports.end()) {
        it->second->set_owner(impl_.caller);  // the latest caller owns it, as in-process
        b.setCap(it->second->self());
      } else {
        auto server = kj::heap<HostCallbackServer>(impl_, fn, impl_.caller);
        HostCallbackServer* raw = server.get();
        wire::HostCallback::Client cap = kj::mv(server);
        exports[fn.get()] = raw;
        b.setCap(kj::mv(cap));
      }
      b.setName(fn->name);
      return true;
    }
    bool host_object_to_wire(const std::shared_ptr<HostObject>& obj, wire::HostObjectRef::Builder b,
                             const std::string& where, std::string& error) override {
      if (!obj) {
        error = where + ": a null host object";
        return false;
      }
      impl_.direct_off.store(true);  // before it can reach the surrogate
      auto& exports = impl_.host_object_exports;
      if (auto it = exports.find(obj.get()); it != exports.end()) {
        b.setCap(it->second.server->self());
      } else {
        auto server = kj::heap<HostObjectServer>(impl_, obj);
        HostObjectServer* raw = server.get();
        wire::HostObjectCap::Client cap = kj::mv(server);
        const void* hook = capnp::ClientHook::from(kj::cp(cap)).get();
        exports[obj.get()] = Impl::HostObjectExport{raw, hook};
        impl_.host_objects_by_hook[hook] = raw;
        b.setCap(kj::mv(cap));
      }
      b.setName(obj->name());
      auto names = b.initInterfaces(static_cast<unsigned>(obj->interface_names().size()));
      for (unsigned i = 0; i < names.size(); ++i) names.set(i, obj->interface_names()[i]);
      // Its methods run where they would in-process: in its STA when it has one.
      const CallbackOwner outer = impl_.caller;
      CallbackOwner owner;
      if (obj->home() && obj->home()->kind() == Apartment::Kind::sta) {
        owner.owner_delivery = true;
        owner.thread = obj->home()->thread();
        owner.sta = obj->home();
      }
      auto methods = b.initMethods(static_cast<unsigned>(obj->methods().size()));
      unsigned i = 0;
      for (const auto& [name, fn] : obj->methods()) {
        methods[i].setName(name);
        impl_.caller = owner;
        const bool put = function_to_wire(fn, methods[i].initValue().initFunction(), where + "." + name, error);
        impl_.caller = outer;
        if (!put) return false;
        ++i;
      }
      return true;
    }
    bool host_object_to_host(wire::HostObjectRef::Reader r, Value& out, const std::string& where,
                             std::string& error) override {
      wire::HostObjectCap::Client cap = r.getCap();
      const void* hook = capnp::ClientHook::from(kj::mv(cap)).get();
      auto it = impl_.host_objects_by_hook.find(hook);
      if (it == impl_.host_objects_by_hook.end()) {
        error = where + ": a host object that did not come from this process (host objects made on the other "
                        "side cannot come here)";
        return false;
      }
      out = Value(it->second->object());
      return true;
    }
    bool callback_to_wire(const std::shared_ptr<Callback>& cb, wire::CallbackRef::Builder b, const std::string& where,
                          std::string& error) override {
      auto& im = *impl_.imports;
      auto it = im.callbacks.find(cb.get());
      if (!cb->active() || it == im.callbacks.end()) {
        error = where + ": " +
                (it == im.callbacks.end() && cb->active()
                     ? "callback '" + cb->name() + "' was made by another library; pass it to the library that made it"
                     : raise_error(ErrorId::released, "callback '" + cb->name() + "' was already released").message);
        return false;
      }
      if (it->second.generation != impl_.generation.load() || !impl_.conn || impl_.conn->broken) {
        auto d = im.deaths.find(it->second.generation);
        error = where + ": callback '" + cb->name() + "' was made in a surrogate that has ended" +
                (d != im.deaths.end() ? " (" + d->second + ")" : std::string()) +
                "; make it again (Library callback) for the new one";
        return false;
      }
      b.setCap(it->second.cap);
      b.setSignature(cb->name());
      return true;
    }
    bool object_to_host(wire::RemoteRef::Reader r, Value& out, const std::string& where,
                        std::string& error) override {
      auto& im = *impl_.imports;
      auto name = r.getInterface();
      auto iface = impl_.tm->interfaces.find(std::string(name.begin(), name.size()));
      if (iface == impl_.tm->interfaces.end()) {
        error = where + ": an object as interface '" + std::string(name.begin(), name.size()) +
                "', which the typemap does not declare";
        return false;
      }
      const int gen = impl_.generation.load();
      const auto key = std::make_pair(gen, static_cast<std::uint64_t>(r.getIdentity()));
      std::shared_ptr<RemoteProxy> proxy;
      if (auto it = im.objects_by_identity.find(key); it != im.objects_by_identity.end())
        proxy = im.objects.at(it->second).proxy.lock();
      if (!proxy) {
        if (auto it = im.objects_by_identity.find(key); it != im.objects_by_identity.end())
          im.forget_object(it->second);  // its host reference is going: a new proxy
        proxy = std::make_shared<RemoteProxy>(impl_.objects_host, key.second, gen);
        im.objects[proxy.get()] = Imports::ObjectEntry{proxy, r.getCap()};
        im.objects_by_identity[key] = proxy.get();
      }
      void* identity = proxy.get();
      out = Value(ObjectRef{nullptr, &iface->second, home, nullptr, identity, std::move(proxy)});
      return true;
    }

    // The apartment of the thread the values are for: the home of the object
    // references it receives (the wrong-apartment rules hold for them too).
    std::shared_ptr<Apartment> home;

   private:
    Impl& impl_;
  };

  // ---- host functions called back (CallbackSite; I/O thread) ----
  std::unique_ptr<Codec> codec_;
  HandleCodec& codec() override {
    if (!codec_) codec_ = std::make_unique<Codec>(*this);
    return *codec_;
  }
  std::shared_ptr<IoQueue> queue() override { return exec; }
  Waiters& waiters() override { return waiters_; }
  Dispatcher& dispatcher() override { return dispatcher_; }
  void forget_function(const HostFunction* fn) override { function_exports.erase(fn); }
  void forget_host_object(const HostObject* obj) override {
    auto it = host_object_exports.find(obj);
    if (it == host_object_exports.end()) return;
    host_objects_by_hook.erase(it->second.hook);
    host_object_exports.erase(it);
  }

  // The calling thread as the owner of the host functions it passes.
  static CallbackOwner calling_thread() {
    CallbackOwner o;
    o.thread = std::this_thread::get_id();
    o.home = current_apartment();
    if (o.home && o.home->kind() == Apartment::Kind::sta) o.sta = o.home;
    return o;
  }

  // Whether a proxy's object still lives: its surrogate (or server
  // connection) is the current one and has not ended. I/O thread.
  bool object_alive(const RemoteProxy& p, const std::string& what, std::string& error) {
    if (conn && !conn->broken && conn->child && conn->child->exited()) {
      conn->broken = true;
      pid.store(0);
      imports->deaths[conn->child->generation] = conn->child->ending();
    }
    if (p.generation() == generation.load() && conn && !conn->broken) return true;
    auto d = imports->deaths.find(p.generation());
    error = what + ": the object came from " + (connect.empty() ? "a surrogate" : "a server connection") +
            " that has ended" + (d != imports->deaths.end() ? " (" + d->second + ")" : std::string()) +
            "; the objects of a dead surrogate are gone with it";
    return false;
  }

  // ---- remote objects (ObjectLink; callers' threads) ----

  bool call_object(const RemoteProxy& p, const Interface& view, std::string_view method,
                   std::span<const Value* const> args, CallResult& result, std::string& error) override {
    const std::string name = method.find('.') != std::string_view::npos ? std::string(method)
                                                                         : view.name + "." + std::string(method);
    Reply reply;
    try {
      const std::uint64_t token = waiters_.next_token();
      const std::uint64_t chain = current_chain(this);
      const CallbackOwner owner = calling_thread();
      reply = run_on<Reply>(
          *exec, [&] { return io_object_call(p, view.name, std::string(method), args, name, deadline, token, chain, owner); },
          &waiters_, token);
    } catch (const std::exception& e) {
      raise_error(ErrorId::internal, "remote call of " + name + " failed: " + e.what()).function = name;
      error = last_error().message;
      return false;
    }
    return finish(std::move(reply), true, result, error);
  }

  bool query_object(const RemoteProxy& p, const Interface& want, Value& out, std::string& error) override {
    const std::string name = "query(" + want.name + ")";
    Reply reply;
    try {
      const CallbackOwner owner = calling_thread();
      reply = run_on<Reply>(*exec, [&] { return io_object_call(p, want.name, std::string(), {}, name, deadline, 0, 0, owner); });
    } catch (const std::exception& e) {
      raise_error(ErrorId::internal, "remote " + name + " failed: " + e.what()).function = name;
      error = last_error().message;
      return false;
    }
    CallResult r;
    if (!finish(std::move(reply), true, r, error)) return false;
    out = std::move(r.ret);
    return true;
  }

  void release_object(const RemoteProxy* p) noexcept override { imports->release_object(p); }

  bool call_function(const std::string& name, std::span<const Value> args, CallResult& result,
                     std::string& error) override {
    return self->call(name, args, result, error);
  }

  // A reply on the caller's thread: the result, or the error record made this
  // thread's last error (the bindings read it).
  bool finish(Reply&& reply, bool named_file, CallResult& result, std::string& error) {
    if (!reply.ok) {
      if (reply.error.file.empty() && named_file) reply.error.file = tm->file;
      return set_error(error, std::move(reply.error));
    }
    result = std::move(reply.result);
    return true;
  }

  // ---- starting a surrogate (I/O thread) ----

  // Spawns the surrogate and opens the typemap's library in it; the promise
  // gives "" or the reason it could not.
  kj::Promise<std::string> start() {
    int sock = -1, direct_fd = -1;
    std::string error;
    auto child = Child::spawn(surrogate, generation.load() + 1, io->unixEventPort, sock, direct_fd, error);
    if (!child) return error;
    generation.store(child->generation);
    pid.store(child->pid);
    return open_over(io->lowLevelProvider->wrapSocketFd(sock, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP), child,
                     std::make_shared<DirectChannel>(direct_fd, child->generation, child->pidfd));
  }

  // Connects to `marshal serve` (with mutual TLS when configured) and opens
  // the typemap's library there. Connecting, and then the TLS handshake, are
  // each bounded by tls_handshake_seconds; their failures are disconnected.
  kj::Promise<std::string> start_connected() {
    if (tls.get() == nullptr && !is_loopback(connect)) {
      start_error = ErrorId::refused;
      return "refusing to connect to " + connect + ": without mutual TLS (a client certificate, its key and the "
             "server's CA: marshal call --tls-cert, --tls-key, --tls-ca) only a loopback address (127.0.0.1:PORT, "
             "[::1]:PORT, localhost:PORT) may be used";
    }
    kj::Network* net = &io->provider->getNetwork();  // with TLS: any peer, authenticated by its certificate
    if (tls.get() == nullptr) {
      if (network.get() == nullptr) network = net->restrictPeers({"local"});
      net = network.get();
    }
    const int gen = generation.load() + 1;
    auto connected = net->parseAddress(connect).then(
        [](kj::Own<kj::NetworkAddress> a) { return a->connect().attach(kj::mv(a)); });
    return io->provider->getTimer()
        .timeoutAfter(tls_handshake_seconds * kj::SECONDS, kj::mv(connected))
        .then([this, gen](kj::Own<kj::AsyncIoStream> stream) -> kj::Promise<std::string> {
                keep_alive(*stream, client_keepalive);
                if (tls.get() == nullptr) {
                  generation.store(gen);
                  return open_over(kj::mv(stream), nullptr);
                }
                auto secured = tls_connect(*tls, kj::mv(stream), tls_name);
                return io->provider->getTimer()
                    .timeoutAfter(tls_handshake_seconds * kj::SECONDS, kj::mv(secured))
                    .then([this, gen](kj::Own<kj::AsyncIoStream> secure) {
                            generation.store(gen);
                            return open_over(kj::mv(secure), nullptr);
                          },
                          [this](kj::Exception&& e) -> kj::Promise<std::string> {
                            start_error = ErrorId::disconnected;
                            if (e.getType() == kj::Exception::Type::OVERLOADED)  // the timer's
                              return "TLS handshake with " + connect + " did not finish within " +
                                     std::to_string(tls_handshake_seconds) + " s";
                            start_error = ErrorId::refused;  // a certificate, a CA or a name did not match
                            return "TLS handshake with " + connect + " failed: " + tls_reason(e);
                          });
              },
              [this](kj::Exception&& e) -> kj::Promise<std::string> {
                start_error = ErrorId::disconnected;
                return "cannot connect to marshal serve at " + connect + ": " + e.getDescription().cStr();
              });
  }

  // Over a fresh connection (to a surrogate, or to a server when child is
  // null): opens the typemap's library; "" or why not.
  // `channel`: a surrogate's direct channel, used once the surrogate says it
  // serves it.
  kj::Promise<std::string> open_over(kj::Own<kj::AsyncIoStream> stream, std::shared_ptr<Child> child,
                                     std::shared_ptr<DirectChannel> channel = nullptr) {
    auto next = kj::heap<Conn>();
    next->child = child;
    next->stream = kj::mv(stream);
    next->messages = reusing_message_stream(*next->stream);
    next->network = kj::heap<capnp::TwoPartyVatNetwork>(*next->messages, capnp::rpc::twoparty::Side::CLIENT,
                                                         reader_options());
    next->rpc = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(capnp::makeRpcClient(*next->network));
    capnp::MallocMessageBuilder vat;
    auto id = vat.initRoot<capnp::rpc::twoparty::VatId>();
    id.setSide(capnp::rpc::twoparty::Side::SERVER);
    auto boot = next->rpc->bootstrap(id).castAs<wire::Surrogate>();
    auto req = boot.openRequest();
    req.setTypemap(text);
    req.setFile(file);
    conn = kj::mv(next);
    Conn* cn = conn.get();
    auto opened = req.send().then(
        [this, cn, boot, channel](capnp::Response<wire::Surrogate::OpenResults> r) mutable -> kj::Promise<std::string> {
          if (r.hasError() && r.getError().size() > 0) {
            ErrorId id = ErrorId::unclassified;
            auto name = r.getErrorId();
            if (error_id_from_name(std::string_view(name.begin(), name.size()), id)) start_error = id;
            return std::string(r.getError().cStr());
          }
          cn->lib = r.getLibrary();
          if (channel && r.getDirect()) {
            std::lock_guard lock(direct_m);
            direct = channel;
          }
          if (const std::uint32_t ms = r.getHeartbeatMs(); ms > 0)
            cn->heartbeat = ping_loop(kj::mv(boot), io->provider->getTimer(), std::max<std::uint32_t>(ms / 3, 1) * kj::MILLISECONDS)
                                .eagerlyEvaluate([](kj::Exception&&) {});
          return std::string();
        },
        [this, cn](kj::Exception&& e) {
          return explain_failure(cn, kj::mv(e), "(opening the library)").then([](Error f) { return f.message; });
        });
    // A library whose loading hangs is a hung surrogate too.
    return io->provider->getTimer()
        .timeoutAfter(30 * kj::SECONDS, kj::mv(opened))
        .catch_([this, cn](kj::Exception&&) -> kj::Promise<std::string> {
          cn->broken = true;
          if (!cn->child) return "the server at " + connect + " did not open the library within 30 s";
          cn->child->kill();
          return std::string("the surrogate (pid ") + std::to_string(cn->child->pid) +
                 ") did not open the library within 30 s and was killed";
        })
        .then([this, cn](std::string e) {
          if (!e.empty()) {
            cn->broken = true;
            pid.store(0);
          }
          return e;
        });
  }

  // A call failed at the RPC level: if the connection is gone, wait (bounded)
  // for the surrogate's exit and say how it ended instead of "disconnected".
  kj::Promise<Error> explain_failure(Conn* cn, kj::Exception&& e, const std::string& function) {
    if (e.getType() != kj::Exception::Type::DISCONNECTED)
      return failure(ErrorId::unclassified, std::string("remote call of ") + function + " failed: " +
                                                e.getDescription().cStr(), function);
    cn->broken = true;
    pid.store(0);
    auto child = cn->child;
    if (child && cn == conn.get()) drop_direct(child->generation);
    if (!child) {  // a server: it went away (or the deadline closed the connection)
      const std::string how = "the connection to marshal serve at " + connect + " ended";
      imports->deaths[generation.load()] = how;
      if (cn->death) return cn->death;
      return failure(ErrorId::disconnected, how + " during " + function, function);
    }
    KJ_IF_MAYBE(x, child->exit) {
      auto& timer = io->provider->getTimer();
      return timer.timeoutAfter(2 * kj::SECONDS, x->addBranch())
          .catch_([child, &timer](kj::Exception&&) -> kj::Promise<Ending> {
            // Disconnected but still running: it closed its socket; end it.
            child->kill();
            KJ_IF_MAYBE(y, child->exit) {
              return timer.timeoutAfter(5 * kj::SECONDS, y->addBranch()).catch_([child](kj::Exception&&) {
                return Ending{"the surrogate (pid " + std::to_string(child->pid) + ") disconnected and did not exit"};
              });
            }
            return Ending{"the surrogate disconnected"};
          })
          .then([this, child, function](Ending how) {
            imports->deaths[child->generation] = how.text;
            // Killed for its deadline: SIGKILL, from this side.
            if (child->timed_out)
              return failure(ErrorId::deadline_exceeded, child->timeout_message, function, SIGKILL);
            // A crash names the function that was running (its crash record);
            // otherwise say which call saw it.
            if (!how.function.empty()) return failure(how.id, how.text, how.function, how.signo);
            return failure(how.id, how.text + " during " + function, function, how.signo);
          });
    }
    return failure(ErrorId::disconnected, "the surrogate disconnected during " + function, function);
  }

  // The connection, a fresh surrogate (or server connection) when the last
  // one ended: "" or why none could be made. A surrogate that ended between
  // calls (killed from outside, say) is replaced before a call is sent.
  kj::Promise<std::string> connected() {
    if (conn && !conn->broken && conn->child && conn->child->exited()) {
      conn->broken = true;
      imports->deaths[conn->child->generation] = conn->child->ending();
    }
    if (conn && !conn->broken) return std::string();
    drop_direct(-1);
    conn = nullptr;  // drops the old capabilities and reaps the old process
    start_error = ErrorId::unclassified;
    return connect.empty() ? start() : start_connected();
  }

  // ---- a registered callback made on the serving side (I/O thread) ----

  kj::Promise<Reply> io_callback(const CallbackSig& sig, const std::shared_ptr<HostFunction>& fn,
                                 const CallbackOwner& owner, std::chrono::milliseconds limit) {
    const std::string what = "callback '" + sig.name + "'";
    return connected().then([this, &sig, &fn, &owner, limit, what](std::string e) -> kj::Promise<Reply> {
      if (!e.empty()) return refused(e, start_error);
      auto req = conn->lib.callbackRequest();
      req.setSignature(sig.name);
      Codec codec(*this);
      std::string error;
      caller = owner;
      caller.owner_delivery = sig.delivery == Delivery::owner;
      const bool put = codec.function_to_wire(fn, req.initFunction(), what, error);
      caller = CallbackOwner{};
      if (!put) return refused(std::move(error), ErrorId::unclassified, sig.name);
      Conn* cn = conn.get();
      const int gen = generation.load();
      auto reply = req.send().then(
          [this, &sig, gen, what](capnp::Response<wire::Library::CallbackResults> r) -> kj::Promise<Reply> {
            auto outcome = r.getOutcome();
            if (outcome.isError()) return Reply{false, {}, remote_record(outcome)};
            auto ret = outcome.getOk().getRet();
            if (!ret.isCallback()) return refused(what + ": the serving side sent no callback back", ErrorId::unclassified, sig.name);
            std::weak_ptr<Imports> weak = imports;
            auto cb = Callback::stand_in(sig, [weak](const Callback* c) { Imports::release_callback(weak, c); });
            imports->callbacks[cb.get()] = Imports::CallbackEntry{ret.getCallback().getCap(), gen, cb};
            Reply reply;
            reply.ok = true;
            reply.result.ret = Value(std::move(cb));
            return reply;
          },
          [this, cn, what](kj::Exception&& x) {
            return explain_failure(cn, kj::mv(x), what).then([](Error why) { return Reply{false, {}, kj::mv(why)}; });
          });
      return bounded(kj::mv(reply), cn, what, limit);
    });
  }

  // ---- one call (I/O thread) ----

  kj::Promise<Reply> io_call(const std::string& function, std::span<const Value* const> args,
                             const std::vector<std::string>& where, std::chrono::milliseconds limit,
                             std::uint64_t token, std::uint64_t chain, const CallbackOwner& owner,
                             const std::vector<bool>& owner_delivery) {
    return connected().then([this, &function, args, &where, limit, token, chain, &owner, &owner_delivery](std::string e) -> kj::Promise<Reply> {
      if (!e.empty()) return refused(e, start_error);
      auto req = conn->lib.callRequest();
      req.setFunction(function);
      req.setToken(token);
      req.setChain(chain);
      auto wargs = req.initArgs(static_cast<unsigned>(args.size()));
      Codec codec(*this);
      std::string error;
      for (std::size_t i = 0; i < args.size(); ++i) {
        caller = owner;
        caller.owner_delivery = i < owner_delivery.size() && owner_delivery[i];
        const bool put = remote::to_wire(*args[i], wargs[static_cast<unsigned>(i)], where[i], &codec, error);
        caller = CallbackOwner{};
        if (!put) return refused(function + ": " + error);
      }
      Conn* cn = conn.get();
      auto reply = req.send().then(
          [this, function, home = owner.home](capnp::Response<wire::Library::CallResults> r) -> kj::Promise<Reply> {
            return read_reply(r.getOutcome(), function, home);
          },
          [this, cn, function](kj::Exception&& e) {
            return explain_failure(cn, kj::mv(e), function).then([](Error why) { return Reply{false, {}, kj::mv(why)}; });
          });
      return bounded(kj::mv(reply), cn, function, limit);
    });
  }

  // A call's outcome as the host's values (I/O thread).
  // Without capabilities (a direct reply, on the caller's thread), a value
  // needing one is refused.
  Reply read_reply(wire::Outcome::Reader outcome, const std::string& function, const std::shared_ptr<Apartment>& home,
                   bool capabilities = true) {
    Reply reply;
    if (outcome.isError()) {
      reply.error = remote_record(outcome);
      return reply;
    }
    auto done = outcome.getOk();
    Codec codec(*this);
    codec.home = home;
    HandleCodec* handles = capabilities ? &codec : nullptr;
    std::string error;
    if (!remote::to_host(done.getRet(), reply.result.ret, "the return value of " + function, handles, error))
      return refused(std::move(error), ErrorId::unclassified, function);
    auto out = done.getOut();
    reply.result.out.resize(out.size());
    for (unsigned i = 0; i < out.size(); ++i) {
      reply.result.out[i].first = out[i].getName().cStr();
      if (!remote::to_host(out[i].getValue(), reply.result.out[i].second,
                           "out parameter '" + reply.result.out[i].first + "'", handles, error))
        return refused(std::move(error), ErrorId::unclassified, function);
    }
    if (done.getHasErrno()) reply.result.error_number = done.getErrno();
    reply.ok = true;
    return reply;
  }

  // A method call (method non-empty) or a query (method empty: `iface` is the
  // interface asked for) on a remote object (I/O thread). A proxy whose
  // surrogate ended is refused without starting a new one: its object is gone.
  kj::Promise<Reply> io_object_call(const RemoteProxy& p, const std::string& iface, const std::string& method,
                                    std::span<const Value* const> args, const std::string& name,
                                    std::chrono::milliseconds limit, std::uint64_t token, std::uint64_t chain,
                                    const CallbackOwner& owner) {
    std::string error;
    if (!object_alive(p, name, error)) return refused(std::move(error), ErrorId::disconnected, name);
    auto it = imports->objects.find(&p);
    if (it == imports->objects.end()) return refused(name + ": an object this library does not hold", ErrorId::unclassified, name);
    Conn* cn = conn.get();
    auto failed = [this, cn, name](kj::Exception&& e) {
      return explain_failure(cn, kj::mv(e), name).then([](Error why) { return Reply{false, {}, kj::mv(why)}; });
    };
    if (method.empty()) {
      auto req = it->second.cap.queryInterfaceRequest();
      req.setInterface(iface);
      auto reply = req.send().then(
          [this, name, home = owner.home](capnp::Response<wire::RemoteObject::QueryInterfaceResults> r) -> kj::Promise<Reply> {
            return read_reply(r.getOutcome(), name, home);
          },
          kj::mv(failed));
      return bounded(kj::mv(reply), cn, name, limit);
    }
    auto req = it->second.cap.callRequest();
    req.setInterface(iface);
    req.setMethod(method);
    req.setToken(token);
    req.setChain(chain);
    auto wargs = req.initArgs(static_cast<unsigned>(args.size()));
    Codec codec(*this);
    for (std::size_t i = 0; i < args.size(); ++i) {
      caller = owner;
      const bool put = remote::to_wire(*args[i], wargs[static_cast<unsigned>(i)], "argument " + std::to_string(i), &codec, error);
      caller = CallbackOwner{};
      if (!put) return refused(name + ": " + error, ErrorId::unclassified, name);
    }
    auto reply = req.send().then(
        [this, name, home = owner.home](capnp::Response<wire::RemoteObject::CallResults> r) -> kj::Promise<Reply> {
          return read_reply(r.getOutcome(), name, home);
        },
        kj::mv(failed));
    return bounded(kj::mv(reply), cn, name, limit);
  }

  // A reply bounded by a deadline (none when limit is zero). Past it the
  // surrogate is killed, and the call reports as the failed call does (the
  // kill disconnects it), with the timeout's words.
  kj::Promise<Reply> bounded(kj::Promise<Reply> reply, Conn* cn, const std::string& function,
                             std::chrono::milliseconds limit) {
    if (limit.count() <= 0) return reply;
    auto timeout = io->provider->getTimer()
                       .afterDelay(static_cast<std::int64_t>(limit.count()) * kj::MILLISECONDS)
                       .then([this, cn, function, limit]() -> kj::Promise<Reply> {
                         auto child = cn->child;
                         if (!child) {  // a server cannot be killed from here: the connection is closed
                           cn->death = failure(ErrorId::deadline_exceeded,
                                               "function " + function + " timed out after " +
                                                   std::to_string(limit.count()) + " ms at marshal serve " + connect +
                                                   "; the connection was closed",
                                               function);
                           return explain_failure(cn, KJ_EXCEPTION(DISCONNECTED, "deadline"), function)
                               .then([](Error why) { return Reply{false, {}, kj::mv(why)}; });
                         }
                         kill_for_deadline(*child, function, limit);
                         return explain_failure(cn, KJ_EXCEPTION(DISCONNECTED, "deadline"), function)
                             .then([](Error why) { return Reply{false, {}, kj::mv(why)}; });
                       });
    return reply.exclusiveJoin(kj::mv(timeout));
  }

  // Kills a surrogate whose call ran past its deadline; the call reports it.
  static void kill_for_deadline(Child& child, const std::string& function, std::chrono::milliseconds limit) {
    child.timed_out = true;
    child.timeout_message = "function " + function + " timed out after " + std::to_string(limit.count()) +
                            " ms in the surrogate (pid " + std::to_string(child.pid) + "); the surrogate was killed";
    child.kill();
  }

  // ---- the direct channel (direct.hpp) ----

  // Drops the channel of surrogate `gen` (-1: whichever): no call takes it
  // any more; one that has it finishes with it. Any thread.
  void drop_direct(int gen) {
    std::lock_guard lock(direct_m);
    if (direct && (gen < 0 || direct->generation() == gen)) direct = nullptr;
  }

  // A call over the direct channel, on the caller's thread. nullopt: not sent
  // (no channel, another call has it, fn is not plain data, or an argument
  // needs more than data), and RPC takes the call.
  std::optional<Reply> direct_call(const Function& fn, const std::string& function, std::span<const Value* const> args,
                                   const std::vector<std::string>& where, std::chrono::milliseconds limit) {
    std::shared_ptr<DirectChannel> ch;
    {
      std::lock_guard lock(direct_m);
      if (!direct || direct->broken.load() || direct->generation() != generation.load()) return std::nullopt;
      auto [it, fresh] = direct_plain.try_emplace(&fn, false);
      if (fresh) it->second = plain_data(ctx->types(), fn);
      if (!it->second) return std::nullopt;
      ch = direct;
    }
    std::unique_lock busy(ch->in_use(), std::try_to_lock);
    if (!busy.owns_lock() || !ch->surrogate_runs()) return std::nullopt;
    // Written before this returns, so large bytes are sent from the
    // arguments' own memory.
    capnp::MallocMessageBuilder message(ch->scratch());
    auto req = message.initRoot<wire::Library::CallParams>();
    req.setFunction(function);
    auto wargs = req.initArgs(static_cast<unsigned>(args.size()));
    std::string error;
    for (std::size_t i = 0; i < args.size(); ++i)
      if (!remote::to_wire_referencing(*args[i], wargs[static_cast<unsigned>(i)], where[i], nullptr, error))
        return std::nullopt;  // RPC refuses it with the same words, or carries it (a host function, variadic)
    std::optional<capnp::SegmentArrayMessageReader> answer;
    std::optional<std::chrono::steady_clock::time_point> until;
    if (limit.count() > 0) until = std::chrono::steady_clock::now() + limit;
    direct_count.fetch_add(1, std::memory_order_relaxed);
    const auto status = ch->exchange(message, until, answer, error);
    if (status == DirectChannel::Status::ok) return read_reply(answer->getRoot<wire::Outcome>(), function, nullptr, false);
    ch->broken.store(true);
    const bool timed_out = status == DirectChannel::Status::timed_out;
    const int gen = ch->generation();
    try {
      return run_on<Reply>(*exec, [&] { return direct_failed(gen, function, timed_out, limit); });
    } catch (const std::exception&) {  // the I/O thread has ended
      return Reply{false, {}, failure(ErrorId::disconnected, "the surrogate's direct channel failed during " + function +
                                                                 " (" + error + ") and the connection has ended", function)};
    }
  }

  // A direct call's channel failed (its caller saw the surrogate's end, or
  // the deadline passed): what happened, in the words an RPC call's failure
  // has (I/O thread).
  kj::Promise<Reply> direct_failed(int gen, const std::string& function, bool timed_out, std::chrono::milliseconds limit) {
    drop_direct(gen);
    Conn* cn = conn.get();
    if (!cn || !cn->child || cn->child->generation != gen) {  // already replaced
      auto d = imports->deaths.find(gen);
      return Reply{false, {}, failure(ErrorId::disconnected, "the surrogate " +
                                          (d != imports->deaths.end() ? "ended (" + d->second + ")" : std::string("disconnected")) +
                                          " during " + function, function)};
    }
    if (timed_out) kill_for_deadline(*cn->child, function, limit);
    return explain_failure(cn, KJ_EXCEPTION(DISCONNECTED, "the direct channel ended"), function).then([](Error why) {
      return Reply{false, {}, kj::mv(why)};
    });
  }

  void shutdown() {
    drop_direct(-1);
    if (!io_thread.joinable()) return;
    {
      std::lock_guard lock(imports->mutex);
      imports->alive = false;
    }
    exec->close();
    io_thread.join();
    dispatcher_.stop();  // after the connection: no callback can come any more
  }
};

IsolatedLibrary::IsolatedLibrary(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  impl_->self = this;
  impl_->objects_host = std::make_shared<RemoteHost>(*impl_->ctx, *impl_->tm, *impl_);
}

IsolatedLibrary::~IsolatedLibrary() {
  impl_->objects_host->detach();  // proxies that outlive the library: their calls are errors now
  impl_->shutdown();
  // Its registered callbacks end with it, as an in-process library's do (the
  // I/O thread is gone: their releases do nothing more).
  for (auto& [raw, entry] : impl_->imports->callbacks)
    if (auto cb = entry.stand_in.lock()) cb->release();
}

const Typemap& IsolatedLibrary::typemap() const { return *impl_->tm; }
Context& IsolatedLibrary::context() const { return *impl_->ctx; }
ObjectSpace& IsolatedLibrary::objects() const { return impl_->objects_host->objects(); }
int IsolatedLibrary::pid() const { return impl_->pid.load(); }
int IsolatedLibrary::generation() const { return impl_->generation.load(); }
std::uint64_t IsolatedLibrary::direct_calls() const { return impl_->direct_count.load(); }

std::unique_ptr<IsolatedLibrary> IsolatedLibrary::open_file(Context& ctx, const std::string& path,
                                                            const IsolateOptions& options, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot read the typemap (" + std::strerror(errno) + ")";
    return nullptr;
  }
  std::ostringstream s;
  s << in.rdbuf();
  return open_text(ctx, s.str(), path, options, error);
}

std::unique_ptr<IsolatedLibrary> IsolatedLibrary::open_text(Context& ctx, std::string text, std::string file,
                                                            const IsolateOptions& options, std::string& error) {
  LoadResult r = ctx.load_text(text, file);
  if (!r.ok()) {
    error = r.errors.empty() ? file + ": the typemap did not load" : r.errors.front().text();
    return nullptr;
  }
  auto impl = std::make_unique<Impl>();
  impl->ctx = &ctx;
  impl->tm = r.typemap;
  impl->text = std::move(text);
  impl->file = std::move(file);
  impl->surrogate = find_surrogate(options.surrogate);
  impl->connect = options.connect;
  if (options.tls.any()) {
    if (options.connect.empty()) {
      error = "TLS options (IsolateOptions::tls) are for a connection to marshal serve (IsolateOptions::connect), "
              "not for a surrogate process";
      return nullptr;
    }
    if (const std::string missing = tls_missing(options.tls, "tls.cert", "tls.key", "tls.ca"); !missing.empty()) {
      error = "mutual TLS needs a client certificate, its key and the server's CA: " + missing +
              (missing.find(" and ") == std::string::npos ? " is" : " are") + " missing";
      return nullptr;
    }
    impl->tls = tls_context(options.tls, false, error);
    if (impl->tls.get() == nullptr) return nullptr;
    // The host of HOST:PORT or [V6]:PORT, unless a name is given.
    impl->tls_name = options.tls.name;
    if (impl->tls_name.empty()) {
      impl->tls_name = options.connect.substr(0, options.connect.rfind(':'));
      if (impl->tls_name.size() > 2 && impl->tls_name.front() == '[' && impl->tls_name.back() == ']')
        impl->tls_name = impl->tls_name.substr(1, impl->tls_name.size() - 2);
    }
  }
  impl->deadline = options.deadline.count() > 0 ? options.deadline
                                                : std::chrono::milliseconds(r.typemap->library.deadline_ms);

  // The I/O thread: one kj event loop serving this library's connection.
  std::mutex m;
  std::condition_variable cv;
  bool ready = false;
  Impl* im = impl.get();
  im->io_thread = std::thread([im, &m, &cv, &ready] {
    auto io = kj::setupAsyncIo();
    im->io = &io;
    auto tasks = im->exec->run(io.unixEventPort);
    {
      std::lock_guard lock(m);
      im->imports->exec = im->exec;
      im->imports->io_thread = std::this_thread::get_id();
      ready = true;
    }
    cv.notify_all();
    tasks.wait(io.waitScope);
    im->exec->cancel_all();  // what still runs ends here, on this thread
    // Teardown on this thread: every capability, then the connection (the
    // surrogate sees the disconnect and exits; ~Child reaps it).
    for (auto& [box, entry] : im->imports->by_box) entry.cap = nullptr;
    for (auto& [proxy, entry] : im->imports->objects) entry.cap = nullptr;
    for (auto& [cb, entry] : im->imports->callbacks) entry.cap = nullptr;
    im->conn = nullptr;
    im->network = nullptr;
    im->io = nullptr;
  });
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return ready; });
  }
  std::unique_ptr<IsolatedLibrary> lib(new IsolatedLibrary(std::move(impl)));
  try {
    error = run_on<std::string>(*lib->impl_->exec, [im] { return im->connect.empty() ? im->start() : im->start_connected(); });
  } catch (const std::exception& e) {
    error = std::string("cannot start the surrogate: ") + e.what();
  }
  if (!error.empty()) {
    // The record (the bindings read its id): disconnected (no connection),
    // refused (TLS, a server's allowlist), the serving side's own (typemap,
    // library_not_found), else library_not_found (no surrogate started).
    const ErrorId id = lib->impl_->start_error == ErrorId::unclassified ? ErrorId::library_not_found : lib->impl_->start_error;
    Error& e = raise_error(id, lib->impl_->file + ": " + error);
    e.file = lib->impl_->file;
    error = e.message;
    return nullptr;
  }
  return lib;
}

bool IsolatedLibrary::call(const std::string& function, std::span<const Value> args, CallResult& result,
                           std::string& error, std::chrono::milliseconds deadline) {
  ValuePointers given(args);
  return call_addressed(function, given.view, result, error, deadline);
}

bool IsolatedLibrary::call_addressed(const std::string& function, std::span<const Value* const> args, CallResult& result,
                           std::string& error, std::chrono::milliseconds deadline) {
  const Function* fn = nullptr;
  if (auto it = impl_->tm->functions.find(function); it != impl_->tm->functions.end()) fn = &it->second;
  // Computed parameters given too (the long form): checked here, before
  // anything is sent, and left out (arguments.hpp).
  std::vector<const Value*> storage;
  if (fn && !host_arguments(impl_->ctx->types(), impl_->tm->file, *fn, args, storage, error)) return false;
  // Where each argument stands, for messages (the surrogate names the rest).
  // And which are host functions of delivery "owner" (host_functions.hpp).
  std::vector<std::string> where(args.size());
  std::vector<bool> owner_delivery(args.size());
  std::size_t k = 0;
  if (fn)
    for (std::size_t i = 0; i < fn->params.size() && k < args.size(); ++i)
      if (fn->params[i].host_supplied()) {
        const auto* cb = std::get_if<CallbackInfo>(&impl_->ctx->types().get(fn->params[i].type).info);
        owner_delivery[k] = cb && cb->sig && cb->sig->delivery == Delivery::owner;
        where[k++] = "parameter " + std::to_string(i) + " '" + fn->params[i].name + "'";
      }
  for (; k < args.size(); ++k) where[k] = (fn ? "variadic argument " : "argument ") + std::to_string(k);

  const auto limit = deadline.count() > 0 ? deadline : impl_->deadline;
  Reply reply;
  try {
    Impl* im = impl_.get();
    const std::uint64_t chain = current_chain(im);
    // Plain data, while nothing can call this host back and no release is on
    // its way ahead of it: the direct channel.
    const std::uint64_t releases = im->imports->releases.load();
    if (fn && chain == 0 && !im->direct_off.load() && releases == im->synced_releases.load())
      if (auto r = im->direct_call(*fn, function, args, where, limit)) return impl_->finish(std::move(*r), true, result, error);
    const std::uint64_t token = im->waiters_.next_token();
    const CallbackOwner owner = Impl::calling_thread();
    reply = run_on<Reply>(
        *im->exec, [&] { return im->io_call(function, args, where, limit, token, chain, owner, owner_delivery); },
        &im->waiters_, token);
    // The surrogate has run this call, so it has seen every release sent before it.
    for (auto seen = im->synced_releases.load(); seen < releases && !im->synced_releases.compare_exchange_weak(seen, releases);) {
    }
  } catch (const std::exception& e) {
    raise_error(ErrorId::internal, "remote call of " + function + " failed: " + e.what()).function = function;
    error = last_error().message;
    return false;
  }
  return impl_->finish(std::move(reply), fn != nullptr, result, error);
}

std::shared_ptr<Callback> IsolatedLibrary::callback(const std::string& sig, std::shared_ptr<HostFunction> fn,
                                                    std::string& error) {
  auto it = impl_->tm->callbacks.find(sig);
  if (it == impl_->tm->callbacks.end()) {
    Error& e = raise_error(ErrorId::invalid_argument, impl_->tm->file + ": no callback signature '" + sig + "'");
    e.file = impl_->tm->file;
    error = e.message;
    return nullptr;
  }
  if (!fn || !fn->fn) {
    error = raise_error(ErrorId::invalid_argument, impl_->tm->file + ": callback '" + sig + "': no host function").message;
    return nullptr;
  }
  Reply reply;
  try {
    Impl* im = impl_.get();
    const CallbackOwner owner = Impl::calling_thread();
    reply = run_on<Reply>(*im->exec, [&] { return im->io_callback(it->second, fn, owner, im->deadline); });
  } catch (const std::exception& e) {
    error = raise_error(ErrorId::internal, "remote callback '" + sig + "' failed: " + e.what()).message;
    return nullptr;
  }
  CallResult result;
  if (!impl_->finish(std::move(reply), true, result, error)) return nullptr;
  return result.ret.as<std::shared_ptr<Callback>>();
}

}  // namespace marshal::engine::remote
