// marshal remote: host functions called back from the other side (issue 17,
// part 4). A host function passed to an isolated library (or to `marshal
// serve`) crosses as a capability (one per host function while the other side
// holds it: a HostCallbackServer on the host's I/O thread); native code there
// gets a function pointer of its own, and each call of it comes back here.
//
// Where it runs on the host:
// - otherwise, called back from the thread that runs one of this host's calls
//   (the call's token): on the host thread waiting for that call, which runs
//   callbacks while it waits (Waiter), so the comparator of a qsort runs on
//   the thread that called qsort, any host function may call the library
//   again (re-entrant calls nest, on both sides), and a waiting STA runs it
//   on its own thread;
// - delivery "owner" (TYPEMAP.md, Callbacks), and the methods of a host
//   object made in an STA, whatever thread calls: on the thread that passed
//   the function (the object's STA) if it is waiting for a call of this
//   library, else in its STA (run_in, which its message loop runs) if it
//   entered one, else it is refused with a message (native code gets the
//   on_error value; the host sees the error after the call);
// - delivery "inline" from another thread: on a dispatcher thread of this
//   library (the "whatever thread" of an in-process callback).
// A call a host function makes to the same library while it runs for a
// thread of the library's own carries that thread's wait (its chain:
// current_chain), and the serving side runs it on that thread
// (native_thread.hpp, Chains), as in-process.
#pragma once

#include "remote/io_queue.hpp"
#include "remote/wire.hpp"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace marshal::engine {
class Apartment;
}

namespace marshal::engine::remote {

// One callback to run: with an empty `refused` it runs the host function, else
// it reports that reason as the callback's failure without running it.
using CallbackJob = std::function<void(const std::string& refused)>;

// A thread waiting for its call to come back: it runs the callbacks that come
// in for that call meanwhile.
struct Waiter {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::deque<CallbackJob> jobs;
  // Any thread: queues a job for the waiting thread; false once it stopped waiting.
  bool push(CallbackJob job);
  // The waiting thread: runs jobs until done() holds (done() checked under m,
  // after each job and each notify of cv); then refuses what is left.
  void run_until(const std::function<bool()>& done);
};

// The waiting threads of one library, by their calls' tokens and by thread
// (the innermost wait of each: a callback that calls again waits again).
class Waiters {
 public:
  std::uint64_t next_token();
  void enter(std::uint64_t token, const std::shared_ptr<Waiter>& w);  // on the waiting thread
  void leave(std::uint64_t token);                                     // on the waiting thread
  std::shared_ptr<Waiter> by_token(std::uint64_t token);
  std::shared_ptr<Waiter> innermost(std::thread::id thread);

 private:
  std::mutex m_;
  std::uint64_t next_ = 0;
  std::map<std::uint64_t, std::shared_ptr<Waiter>> tokens_;
  std::map<std::thread::id, std::vector<std::shared_ptr<Waiter>>> threads_;
};

// Runs callback jobs on a thread of its own, started on first use.
class Dispatcher {
 public:
  Dispatcher() = default;
  ~Dispatcher() { stop(); }
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;
  void post(CallbackJob job);
  // Refuses what is queued and joins the thread (a host function still
  // running is waited for).
  void stop();

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<CallbackJob> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

// What HostCallbackServers need of their library (I/O thread).
class CallbackSite {
 public:
  virtual ~CallbackSite() = default;
  virtual HandleCodec& codec() = 0;
  virtual std::shared_ptr<IoQueue> queue() = 0;
  virtual Waiters& waiters() = 0;
  virtual Dispatcher& dispatcher() = 0;
  virtual void forget_function(const HostFunction* fn) = 0;  // its capability is gone
  virtual void forget_host_object(const HostObject* obj) = 0;
};

// The chain (wire HostCallback.call) of the callback the calling thread runs
// now for `site`'s library, 0 when none: the calls it makes to that library
// meanwhile carry it, so the serving side runs them on the thread that waits
// for this callback.
std::uint64_t current_chain(const CallbackSite* site);

// Who passed a host function, for delivery "owner".
struct CallbackOwner {
  bool owner_delivery = false;
  std::thread::id thread;
  std::shared_ptr<Apartment> sta;   // the thread's STA, if it entered one
  std::shared_ptr<Apartment> home;  // the thread's apartment, any kind (the home of the objects it receives)
};

class HostCallbackServer final : public wire::HostCallback::Server {
 public:
  HostCallbackServer(CallbackSite& site, std::shared_ptr<HostFunction> fn, CallbackOwner owner);
  ~HostCallbackServer();
  HostCallbackServer(const HostCallbackServer&) = delete;
  HostCallbackServer& operator=(const HostCallbackServer&) = delete;
  wire::HostCallback::Client self() { return thisCap(); }
  // The latest caller that passed it (I/O thread).
  void set_owner(CallbackOwner owner) { owner_ = std::move(owner); }
  kj::Promise<void> call(CallContext context) override;

  struct Reply {
    bool ok = false;
    Value result;
    std::string error;
  };

 private:
  CallbackSite& site_;
  std::shared_ptr<HostFunction> fn_;
  CallbackOwner owner_;
  // Replies on their way back (I/O thread only), shared so that a job that
  // finishes after this server is gone finds nothing.
  struct Pending {
    std::uint64_t next = 0;
    std::map<std::uint64_t, kj::Own<kj::PromiseFulfiller<std::shared_ptr<Reply>>>> replies;
  };
  std::shared_ptr<Pending> pending_ = std::make_shared<Pending>();
};

// A host object sent to the other side: its identity there (one capability
// per host object while the other side holds it), keeping it alive as long.
class HostObjectServer final : public wire::HostObjectCap::Server {
 public:
  HostObjectServer(CallbackSite& site, std::shared_ptr<HostObject> obj) : site_(site), obj_(std::move(obj)) {}
  ~HostObjectServer() { site_.forget_host_object(obj_.get()); }
  HostObjectServer(const HostObjectServer&) = delete;
  HostObjectServer& operator=(const HostObjectServer&) = delete;
  wire::HostObjectCap::Client self() { return thisCap(); }
  const std::shared_ptr<HostObject>& object() const { return obj_; }

 private:
  CallbackSite& site_;
  std::shared_ptr<HostObject> obj_;
};

}  // namespace marshal::engine::remote
