// marshal remote: the serving side's native threads (issue 17, part 4).
// A surrogate, or `marshal serve`, once a host function or host object has
// come to it (before, see Runtime), makes every native call for its hosts on
// a native thread of its own, never on its I/O thread, so that native code can
// call a host function back: the callback's request goes out and its reply
// comes in on the I/O thread while the native thread waits. Native code runs
// under one baton, so the native calls of all clients stay serialized, as they
// were on the I/O thread. A thread waiting for a host function hands the baton
// on: the calls that host function makes to the library (re-entrant calls,
// known by the wait's chain) run nested on that waiting thread, as in-process
// (a COM STA's modal loop), and every other call (another host thread's,
// another client's) runs on another native thread, started when none is idle,
// so a call never waits for one that came after it (no call buried under a
// later one). In the common case, one caller and no host function waiting,
// every call runs on the first native thread. Releases of handles and objects
// run there too.
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
#include <vector>

namespace marshal::engine::remote {

class NativeThread {
 public:
  NativeThread();  // one native thread started; more on demand (at most max_threads)
  ~NativeThread();  // finish(1 s); threads still busy then are left running (the process is ending)
  NativeThread(const NativeThread&) = delete;
  NativeThread& operator=(const NativeThread&) = delete;

  static constexpr int max_threads = 64;

  // Any thread: queues a job, run by a native thread holding the baton. False
  // once finished (the job did not run).
  bool post(std::function<void()> job);
  // Whether the calling thread is one of these native threads.
  bool here() const;
  // A native thread (holding the baton) about to wait for a host function:
  // hands the baton on, and another native thread runs the queued jobs (one
  // is started when none is idle).
  void begin_wait();
  // The same thread, between begin_wait and end_wait: runs a job that is part
  // of the call it waits for (a re-entrant call), under the baton.
  void run_nested(const std::function<void()>& job);
  // Its wait is over: takes the baton back before native code goes on.
  void end_wait();
  // Stops taking jobs and waits up to `grace` for the queued ones to run;
  // true when they did (every thread has ended).
  bool finish(std::chrono::milliseconds grace);

 private:
  struct State {
    std::mutex m;
    std::condition_variable cv;
    std::deque<std::function<void()>> jobs;
    bool closed = false;
    int threads = 0, idle = 0, waiting = 0, live = 0;
    std::mutex baton;  // held while native code runs
  };
  void start_locked();  // a new native thread (s.m held)
  std::shared_ptr<State> state_ = std::make_shared<State>();
  std::vector<std::thread> threads_;  // under state_->m
};

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
