// marshal remote: the serving side's native thread (see native_thread.hpp).
#include "remote/native_thread.hpp"

#include <kj/debug.h>

namespace marshal::engine::remote {

namespace {
thread_local std::uint64_t tls_token = 0;
}

std::uint64_t current_token() { return tls_token; }

std::uint64_t Chains::enter(const std::shared_ptr<Wait>& w) {
  std::lock_guard lock(m_);
  const std::uint64_t id = ++next_;
  waits_[id] = w;
  return id;
}

std::deque<std::function<void()>> Chains::leave(std::uint64_t id) {
  std::shared_ptr<Wait> w;
  {
    std::lock_guard lock(m_);
    auto it = waits_.find(id);
    if (it == waits_.end()) return {};
    w = std::move(it->second);
    waits_.erase(it);
  }
  std::lock_guard lock(w->m);
  return std::move(w->jobs);
}

bool Chains::post(std::uint64_t id, const std::function<void()>& job) {
  std::lock_guard lock(m_);  // held: a leave() waits, so the job is either queued before it or refused
  auto it = waits_.find(id);
  if (it == waits_.end()) return false;
  {
    std::lock_guard wl(it->second->m);
    it->second->jobs.push_back(job);
  }
  it->second->cv.notify_all();
  return true;
}

namespace {
thread_local const void* tls_native = nullptr;  // the State of the native threads this thread is one of
}

NativeThread::NativeThread() {
  std::lock_guard lock(state_->m);
  start_locked();
}

void NativeThread::start_locked() {
  auto s = state_;
  ++s->threads;
  ++s->live;
  threads_.emplace_back([s] {
    tls_native = s.get();
    std::unique_lock lock(s->m);
    for (;;) {
      ++s->idle;
      s->cv.wait(lock, [&] { return s->closed || !s->jobs.empty(); });
      --s->idle;
      if (s->jobs.empty()) break;  // closed and drained
      auto job = std::move(s->jobs.front());
      s->jobs.pop_front();
      lock.unlock();
      {
        std::lock_guard baton(s->baton);
        job();
        job = nullptr;  // what it held goes under the baton, before the lock is taken again
      }
      lock.lock();
    }
    --s->live;
    s->cv.notify_all();
  });
}

NativeThread::~NativeThread() {
  const bool ended = finish(std::chrono::seconds(1));
  std::lock_guard lock(state_->m);
  for (auto& t : threads_) {
    if (ended) t.join();
    else t.detach();  // stuck in native code: it keeps its state alive (state_ is shared)
  }
}

bool NativeThread::here() const { return tls_native == state_.get(); }

bool NativeThread::post(std::function<void()> job) {
  {
    std::lock_guard lock(state_->m);
    if (state_->closed) return false;
    state_->jobs.push_back(std::move(job));
    // Every thread busy and one of them waiting for a host function: the
    // job must not wait for that host function (nor nest under it).
    if (state_->idle == 0 && state_->waiting > 0 && state_->threads < max_threads) start_locked();
  }
  state_->cv.notify_all();
  return true;
}

void NativeThread::begin_wait() {
  {
    std::lock_guard lock(state_->m);
    ++state_->waiting;
    if (!state_->jobs.empty() && state_->idle == 0 && state_->threads < max_threads && !state_->closed) start_locked();
  }
  state_->baton.unlock();  // held by this thread since its job began
}

void NativeThread::run_nested(const std::function<void()>& job) {
  std::lock_guard baton(state_->baton);
  job();
}

void NativeThread::end_wait() {
  state_->baton.lock();
  std::lock_guard lock(state_->m);
  --state_->waiting;
}

bool NativeThread::finish(std::chrono::milliseconds grace) {
  std::unique_lock lock(state_->m);
  state_->closed = true;
  state_->cv.notify_all();
  return state_->cv.wait_for(lock, grace, [&] { return state_->live == 0; });
}

kj::Promise<void> Runtime::on_native(std::uint64_t token, std::uint64_t chain, std::function<void()> job) {
  if (!native_mode) {
    job();
    return kj::READY_NOW;
  }
  const std::uint64_t id = ++next_;
  auto paf = kj::newPromiseAndFulfiller<void>();
  waiting_[id] = kj::mv(paf.fulfiller);
  auto run = [this, id, token, job = std::move(job)]() mutable {
    const std::uint64_t outer = tls_token;
    tls_token = token;
    job();
    tls_token = outer;
    // Back on the I/O thread: the job goes there, and the caller's promise resolves.
    io.post([this, id, job = std::move(job)]() mutable {
      job = nullptr;
      if (auto it = waiting_.find(id); it != waiting_.end()) {
        it->second->fulfill();
        waiting_.erase(it);
      }
      return kj::Promise<void>(kj::READY_NOW);
    });
  };
  if (chain != 0 && chains.post(chain, run)) return kj::mv(paf.promise);
  if (!native.post(std::move(run))) {
    waiting_.erase(id);
    return KJ_EXCEPTION(DISCONNECTED, "the surrogate's native thread has ended");
  }
  return kj::mv(paf.promise);
}

}  // namespace marshal::engine::remote
