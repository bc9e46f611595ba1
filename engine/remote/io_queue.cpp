// marshal remote: tasks for an I/O thread (see io_queue.hpp).
#include "remote/io_queue.hpp"

#include <kj/debug.h>

#include <cerrno>
#include <cstdint>
#include <sys/eventfd.h>
#include <unistd.h>

namespace marshal::engine::remote {

IoQueue::IoQueue() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (fd_ < 0) KJ_FAIL_SYSCALL("eventfd", errno);
}

IoQueue::~IoQueue() {
  if (fd_ >= 0) ::close(fd_);
}

bool IoQueue::post(std::function<kj::Promise<void>()> task) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return false;
    pending_.push_back(std::move(task));
  }
  const std::uint64_t one = 1;
  while (::write(fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
  return true;
}

void IoQueue::close() {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
  }
  const std::uint64_t one = 1;
  while (::write(fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

kj::Promise<void> IoQueue::run(kj::UnixEventPort& port) {
  observer_ = kj::heap<kj::UnixEventPort::FdObserver>(port, fd_, kj::UnixEventPort::FdObserver::OBSERVE_READ);
  running_ = kj::heap<kj::TaskSet>(*this);
  return loop();
}

// Waits for the eventfd first, then drains it and runs what is queued: a post
// after the drain wakes the wait registered before it, so none is missed.
kj::Promise<void> IoQueue::loop() {
  auto woken = observer_->whenBecomesReadable();
  std::uint64_t n = 0;
  while (::read(fd_, &n, sizeof n) < 0 && errno == EINTR) {
  }
  std::vector<std::function<kj::Promise<void>()>> now;
  bool closed = false;
  {
    std::lock_guard lock(mutex_);
    now.swap(pending_);
    closed = closed_;
  }
  for (auto& task : now) running_->add(kj::evalNow([&] { return task(); }));
  if (closed) return kj::READY_NOW;
  return woken.then([this] { return loop(); });
}

void IoQueue::cancel_all() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    pending_.clear();  // posted after the close was seen: never started
  }
  running_ = nullptr;
  observer_ = nullptr;
}

}  // namespace marshal::engine::remote
