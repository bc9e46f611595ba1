// marshal remote: handing work to an I/O thread's kj event loop from any thread.
// kj's own cross-thread tools (kj::Executor, cross-thread fulfillers) wait on
// raw futexes, which ThreadSanitizer cannot see (Debian's libkj is not built
// with it), so every hand-off through them looked like a race. Here the
// threads meet only through a std::mutex and an eventfd: the tasks are queued
// under the mutex, the eventfd wakes the loop, and kj's objects are touched on
// the I/O thread alone.
#pragma once

#include <kj/async-io.h>
#include <kj/async-unix.h>

#include <functional>
#include <mutex>
#include <vector>

namespace marshal::engine::remote {

class IoQueue final : public kj::TaskSet::ErrorHandler {
 public:
  IoQueue();
  ~IoQueue();
  IoQueue(const IoQueue&) = delete;
  IoQueue& operator=(const IoQueue&) = delete;

  // Any thread: queues a task for the I/O thread, which runs it and keeps its
  // promise until it resolves. False once closed (nothing will run it).
  bool post(std::function<kj::Promise<void>()> task);
  // Any thread: no more tasks; run() resolves, and the tasks still pending
  // are cancelled when the loop ends (their promises destroyed).
  void close();

  // The I/O thread, inside its event loop: runs the queued tasks until close().
  kj::Promise<void> run(kj::UnixEventPort& port);
  // The I/O thread, after run(): cancels what still runs (in this thread).
  void cancel_all();

  void taskFailed(kj::Exception&&) override {}  // each task reports its own outcome

 private:
  kj::Promise<void> loop();

  int fd_ = -1;  // an eventfd: non-zero when tasks (or the close) wait
  std::mutex mutex_;
  std::vector<std::function<kj::Promise<void>()>> pending_;
  bool closed_ = false;
  // I/O thread only:
  kj::Own<kj::UnixEventPort::FdObserver> observer_;
  kj::Own<kj::TaskSet> running_;
};

}  // namespace marshal::engine::remote
