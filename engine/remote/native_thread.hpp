// marshal remote: the serving side's native thread (issue 17, part 4).
// A surrogate, or `marshal serve`, once a host function or host object has
// come to it (before, see Runtime), makes every native call for its hosts on
// one thread of its own, never on its I/O thread, so that native code can call
// a host function back: the callback's request goes out and its reply comes in
// on the I/O thread while the native thread waits. While it waits it runs the
// calls that arrive meanwhile, so a host function that calls the library again
// (a re-entrant call) runs nested, as in-process, instead of deadlocking (a
// COM STA's modal loop). One thread keeps the native calls of all clients
// serialized, as they were on the I/O thread, and the releases of handles
// and objects run there too.
#pragma once

#include "remote/io_queue.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace marshal::engine::remote {

class NativeThread {
 public:
  NativeThread();
  ~NativeThread();  // finish(1 s); a thread still busy then is left running (the process is ending)
  NativeThread(const NativeThread&) = delete;
  NativeThread& operator=(const NativeThread&) = delete;

  // Any thread: queues a job. False once finished (the job did not run).
  bool post(std::function<void()> job);
  // Whether the calling thread is this native thread.
  bool here() const { return std::this_thread::get_id() == id_; }
  // This thread: runs queued jobs until done() holds, checked after each job
  // and on each wake().
  void run_until(const std::function<bool()>& done);
  // Any thread: done() of a run_until may hold now.
  void wake();
  // Stops taking jobs and waits up to `grace` for the queued ones to run;
  // true when they did (the thread has ended).
  bool finish(std::chrono::milliseconds grace);

 private:
  struct State {
    std::mutex m;
    std::condition_variable cv;
    std::deque<std::function<void()>> jobs;
    bool closed = false, ended = false;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
  std::thread thread_;
  std::thread::id id_;
};

// The token of the host call (wire Library.call) running on the calling
// thread now, 0 when none: the callbacks native code makes from this thread
// carry it, so the host runs them on the thread that waits for that call.
std::uint64_t current_token();

// The threads of the library's own (not the native thread) waiting for a host
// function to return: a call the host function makes meanwhile names the wait
// (its chain) and runs on that thread, as it would in-process (the native
// thread may be blocked in the native call that waits for this one).
class Chains {
 public:
  struct Wait {
    std::mutex m;
    std::condition_variable cv;
    std::deque<std::function<void()>> jobs;
  };
  std::uint64_t enter(const std::shared_ptr<Wait>& w);
  // The jobs that came too late to run there (the caller queues them elsewhere).
  std::deque<std::function<void()>> leave(std::uint64_t id);
  // Queues job for wait `id`; false when there is no such wait (any more).
  bool post(std::uint64_t id, const std::function<void()>& job);

 private:
  std::mutex m_;
  std::uint64_t next_ = 0;
  std::map<std::uint64_t, std::shared_ptr<Wait>> waits_;
};

// What the serving side's servers share: the I/O thread's queue (for what
// other threads hand back to it) and the native thread.
//
// Until a host function or host object arrives, nothing native code runs can
// call a host back, so native calls run on the I/O thread itself, as one
// thread hop less per call (the surrogate's add_i32 round trip); the first
// one that arrives switches the runtime, for good and for every client, to
// the native thread (at that moment nothing runs there: no native call
// runs on two threads at once, ever).
struct Runtime {
  IoQueue io;
  NativeThread native;
  Chains chains;
  // I/O thread only: whether native calls go to the native thread now.
  bool native_mode = false;
  // I/O thread: runs job on the native thread (on the thread waiting as
  // `chain`, if one is) with `token` as its token (or here, before
  // native_mode); the promise resolves (on the I/O thread) when it has run.
  // The job is destroyed on the I/O thread, so what it holds is released
  // there. A job that cannot be queued (the runtime is ending) rejects the
  // promise (disconnected).
  kj::Promise<void> on_native(std::uint64_t token, std::uint64_t chain, std::function<void()> job);

 private:
  std::uint64_t next_ = 0;  // I/O thread only, and:
  std::map<std::uint64_t, kj::Own<kj::PromiseFulfiller<void>>> waiting_;
};

}  // namespace marshal::engine::remote
