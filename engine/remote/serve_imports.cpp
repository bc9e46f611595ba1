// marshal remote: the host's functions and objects on the serving side
// (serving.hpp). A host function that arrives (FunctionRef) becomes a
// HostFunction whose calls go back over the connection (FunctionLink); a host
// object (HostObjectRef) a HostObject whose methods are such functions. One
// stand-in per capability while it lives (ImportTable), so the callback pool
// reuses its closure and native code sees one object per host object.
#include "remote/serving.hpp"

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>

namespace marshal::engine::remote::serving {

namespace {

// Held by what a stand-in of an imported capability is made of (a host
// function's body, a host object's methods): when the stand-in goes, so does
// its entry (and the capability), on the I/O thread.
template <class Client, class Local>
class ImportGuard {
 public:
  using Table = ImportTable<Client, Local> Served::*;
  ImportGuard(const std::shared_ptr<Served>& served, Table table, std::uint64_t id)
      : served_(served), rt_(served->rt), table_(table), id_(id) {}
  ~ImportGuard() {
    rt_->io.post([served = served_, table = table_, id = id_]() {
      if (auto s = served.lock()) ((*s).*table).erase(id);
      return kj::Promise<void>(kj::READY_NOW);
    });
  }
  ImportGuard(const ImportGuard&) = delete;
  ImportGuard& operator=(const ImportGuard&) = delete;

 private:
  std::weak_ptr<Served> served_;
  std::shared_ptr<Runtime> rt_;
  Table table_;
  std::uint64_t id_;
};

// What a host function made for an imported capability holds: where the
// capability is (its Served, by id) and how to reach the I/O thread. Gone
// with the host function (the callback pool may drop it on any thread).
class FunctionLink {
 public:
  FunctionLink(std::shared_ptr<Served> served, std::uint64_t id, std::string name)
      : served_(served), rt_(served->rt), id_(id), what_("host function '" + name + "'"),
        guard_(served, &Served::functions, id) {}
  FunctionLink(const FunctionLink&) = delete;
  FunctionLink& operator=(const FunctionLink&) = delete;

  // Any thread (native code calling back): sends the call to the host and
  // waits for its reply. The native thread keeps running the calls that
  // arrive meanwhile (the host function may call this library again); its
  // call's token tells the host which of its threads waits for that call.
  bool call(const std::vector<Value>& args, Value& result, std::string& error) {
    struct Pending {
      std::mutex m;
      std::atomic<bool> done{false};
      bool ok = false;
      Value result;
      std::string error;
    };
    auto p = std::make_shared<Pending>();
    Runtime* rt = rt_.get();
    const bool on_native = rt->native.here();
    // The waiting thread is known as a chain: the calls the host function
    // makes meanwhile come back with it and run here (Chains), woken through
    // the wait's cv. A native thread hands the baton on while it waits, so
    // other calls run on another native thread, not nested under this one.
    auto wait = std::make_shared<Chains::Wait>();
    const std::uint64_t chain = rt->chains.enter(wait);
    auto finish = [p, wait](bool ok, Value v, std::string e) {
      {
        std::lock_guard lock(p->m);
        if (p->done.load()) return;
        p->ok = ok;
        p->result = std::move(v);
        p->error = std::move(e);
        p->done.store(true, std::memory_order_release);
      }
      { std::lock_guard lock(wait->m); }  // done was set before: seen by the next check
      wait->cv.notify_all();
    };
    // Settles the call if the I/O thread drops it unfinished (the connection ended).
    struct Unfinished {
      std::function<void()> report;
      ~Unfinished() { report(); }
    };
    const std::string& what = what_;
    auto guard = std::make_shared<Unfinished>();
    guard->report = [finish, what] { finish(false, Value(), "the connection to the host ended before " + what + " returned"); };
    const std::uint64_t token = current_token();
    const bool posted = rt->io.post([this, &args, finish, guard, token, chain, what]() -> kj::Promise<void> {
      auto served = served_.lock();
      auto* entry = served ? served->functions.entry(id_) : nullptr;
      if (!entry) {
        finish(false, Value(), what + ": the connection it came from has ended");
        return kj::READY_NOW;
      }
      auto req = entry->cap.callRequest();
      req.setToken(token);
      req.setChain(chain);
      auto wargs = req.initArgs(static_cast<unsigned>(args.size()));
      SurrogateCodec codec(served);
      std::string e;
      for (std::size_t i = 0; i < args.size(); ++i)
        if (!remote::to_wire(args[i], wargs[static_cast<unsigned>(i)], what + ", argument " + std::to_string(i), &codec, e)) {
          finish(false, Value(), e);
          return kj::READY_NOW;
        }
      return req.send()
          .then(
              [served, finish, what](capnp::Response<wire::HostCallback::CallResults> r) -> kj::Promise<void> {
                auto outcome = r.getOutcome();
                if (outcome.isError()) {
                  finish(false, Value(), outcome.getError().cStr());
                  return kj::READY_NOW;
                }
                auto state = std::make_shared<CallState>(served);
                state->args.resize(1);
                std::string e;
                if (!remote::to_host(outcome.getOk().getRet(), state->args[0], "the result of " + what, &state->codec, e)) {
                  finish(false, Value(), e);
                  return kj::READY_NOW;
                }
                return resolve(state).then([state, finish] {
                  if (!state->error.empty()) finish(false, Value(), state->error);
                  else finish(true, std::move(state->args[0]), std::string());
                });
              },
              [finish, what](kj::Exception&& x) {
                finish(false, Value(), what + ": the call back to the host failed (" +
                                           std::string(x.getDescription().cStr()) + ")");
              })
          .attach(kj::mv(guard));
    });
    guard = nullptr;  // the queue's copy decides now
    if (posted) {
      if (on_native) rt->native.begin_wait();
      std::unique_lock lock(wait->m);
      for (;;) {
        wait->cv.wait(lock, [&] { return p->done.load(std::memory_order_acquire) || !wait->jobs.empty(); });
        if (wait->jobs.empty()) break;
        auto job = std::move(wait->jobs.front());
        wait->jobs.pop_front();
        lock.unlock();
        if (on_native) rt->native.run_nested(job);  // a call the host function made meanwhile
        else job();  // (a library thread: inside the native call that holds the baton)
        job = nullptr;
        lock.lock();
      }
      lock.unlock();
      if (on_native) rt->native.end_wait();
    }
    for (auto& job : rt->chains.leave(chain)) rt->native.post(std::move(job));  // came after the reply
    if (!posted) {
      error = what + ": the surrogate is ending";
      return false;
    }
    std::lock_guard lock(p->m);
    if (!p->ok) {
      error = p->error;
      return false;
    }
    result = std::move(p->result);
    return true;
  }

 private:
  std::weak_ptr<Served> served_;
  std::shared_ptr<Runtime> rt_;
  std::uint64_t id_;
  std::string what_;  // "host function 'NAME'", for messages
  ImportGuard<wire::HostCallback::Client, HostFunction> guard_;
};

// The stand-in already made for an imported capability (true: `out` is it),
// or false: none yet, and from now on native code may call a host back.
template <class Client, class Local>
bool already_imported(Served& s, ImportTable<Client, Local>& table, Client& cap, const void*& hook, Value& out) {
  hook = table.hook_of(cap);
  if (auto local = table.find(hook)) {
    out = Value(std::move(local));
    return true;
  }
  s.rt->native_mode = true;
  return false;
}

}  // namespace

bool SurrogateCodec::function_to_host(wire::FunctionRef::Reader r, Value& out, const std::string& where,
                                      std::string& error) {
  auto& s = *served_;
  if (!s.rt) {
    error = where + ": a host function cannot cross this boundary";
    return false;
  }
  wire::HostCallback::Client cap = r.getCap();
  const void* hook = nullptr;
  if (already_imported(s, s.functions, cap, hook, out)) return true;
  const std::uint64_t id = s.functions.reserve();
  auto name = r.getName();
  auto link = std::make_shared<FunctionLink>(served_, id, std::string(name.begin(), name.size()));
  auto fn = std::make_shared<HostFunction>();
  fn->name.assign(name.begin(), name.size());
  fn->fn = [link](const std::vector<Value>& args, Value& result, std::string& e) { return link->call(args, result, e); };
  s.functions.add(id, kj::mv(cap), hook, fn, fn->name);
  out = Value(std::move(fn));
  return true;
}

bool SurrogateCodec::host_object_to_host(wire::HostObjectRef::Reader r, Value& out, const std::string& where,
                                         std::string& error) {
  auto& s = *served_;
  if (!s.rt) {
    error = where + ": a host object cannot cross this boundary";
    return false;
  }
  wire::HostObjectCap::Client cap = r.getCap();
  const void* hook = nullptr;
  if (already_imported(s, s.host_objects, cap, hook, out)) return true;
  const std::uint64_t id = s.host_objects.reserve();
  auto link = std::make_shared<ImportGuard<wire::HostObjectCap::Client, HostObject>>(served_, &Served::host_objects, id);
  std::map<std::string, std::shared_ptr<HostFunction>> methods;
  auto wm = r.getMethods();
  for (unsigned i = 0; i < wm.size(); ++i) {
    const std::string name(wm[i].getName().begin(), wm[i].getName().size());
    Value fv;
    if (!remote::to_host(wm[i].getValue(), fv, where + "." + name, this, error)) return false;
    if (!fv.is<std::shared_ptr<HostFunction>>()) {
      error = where + ": method '" + name + "' of a host object is not a host function";
      return false;
    }
    auto fn = fv.as<std::shared_ptr<HostFunction>>();
    auto wrapped = std::make_shared<HostFunction>();
    wrapped->name = fn->name;
    wrapped->fn = [fn, link](const std::vector<Value>& args, Value& result, std::string& e) { return fn->fn(args, result, e); };
    methods[name] = std::move(wrapped);
  }
  std::vector<std::string> interfaces;
  for (auto n : r.getInterfaces()) interfaces.emplace_back(n.begin(), n.size());
  const std::string name(r.getName().begin(), r.getName().size());
  auto obj = std::make_shared<HostObject>(name, std::move(interfaces), std::move(methods));
  s.host_objects.add(id, kj::mv(cap), hook, obj, name);
  out = Value(std::move(obj));
  return true;
}

bool SurrogateCodec::host_object_to_wire(const std::shared_ptr<HostObject>& obj, wire::HostObjectRef::Builder b,
                                         const std::string& where, std::string& error) {
  auto& s = *served_;
  auto* entry = obj ? s.host_objects.entry_of(obj.get()) : nullptr;
  if (!entry) {
    error = where + ": a host object made in this process cannot cross to the host (only the host's own come back)";
    return false;
  }
  b.setCap(entry->cap);
  b.setName(entry->name);
  return true;
}

}  // namespace marshal::engine::remote::serving
