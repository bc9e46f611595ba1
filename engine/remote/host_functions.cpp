// marshal remote: host functions called back from the other side (see host_functions.hpp).
#include "remote/host_functions.hpp"

#include "apartments/apartment.hpp"

namespace marshal::engine::remote {

namespace {
struct ChainContext {
  const CallbackSite* site = nullptr;
  std::uint64_t chain = 0;
};
thread_local ChainContext tls_chain;
}  // namespace

std::uint64_t current_chain(const CallbackSite* site) { return tls_chain.site == site ? tls_chain.chain : 0; }

bool Waiter::push(CallbackJob job) {
  {
    std::lock_guard lock(m);
    if (done) return false;
    jobs.push_back(std::move(job));
  }
  cv.notify_all();
  return true;
}

void Waiter::run_until(const std::function<bool()>& finished) {
  std::unique_lock lock(m);
  for (;;) {
    cv.wait(lock, [&] { return finished() || !jobs.empty(); });
    if (jobs.empty()) break;  // finished, nothing queued
    if (finished()) break;    // finished first: what is queued is refused below
    auto job = std::move(jobs.front());
    jobs.pop_front();
    lock.unlock();
    job(std::string());
    job = nullptr;
    lock.lock();
  }
  done = true;
  std::deque<CallbackJob> left;
  left.swap(jobs);
  lock.unlock();
  for (auto& job : left) job("the call it came back for had already returned");
}

std::uint64_t Waiters::next_token() {
  std::lock_guard lock(m_);
  return ++next_;
}

void Waiters::enter(std::uint64_t token, const std::shared_ptr<Waiter>& w) {
  std::lock_guard lock(m_);
  tokens_[token] = w;
  threads_[std::this_thread::get_id()].push_back(w);
}

void Waiters::leave(std::uint64_t token) {
  std::lock_guard lock(m_);
  auto t = tokens_.find(token);
  if (t == tokens_.end()) return;
  auto it = threads_.find(std::this_thread::get_id());
  if (it != threads_.end()) {
    auto& stack = it->second;
    for (auto s = stack.end(); s != stack.begin();) {
      --s;
      if (*s == t->second) {
        stack.erase(s);
        break;
      }
    }
    if (stack.empty()) threads_.erase(it);
  }
  tokens_.erase(t);
}

std::shared_ptr<Waiter> Waiters::by_token(std::uint64_t token) {
  std::lock_guard lock(m_);
  auto it = tokens_.find(token);
  return it == tokens_.end() ? nullptr : it->second;
}

std::shared_ptr<Waiter> Waiters::innermost(std::thread::id thread) {
  std::lock_guard lock(m_);
  auto it = threads_.find(thread);
  return it == threads_.end() || it->second.empty() ? nullptr : it->second.back();
}

void Dispatcher::post(CallbackJob job) {
  std::unique_lock lock(m_);
  if (stopping_) {
    lock.unlock();
    job("the library is closing");
    return;
  }
  jobs_.push_back(std::move(job));
  if (!thread_.joinable()) {
    thread_ = std::thread([this] {
      std::unique_lock l(m_);
      for (;;) {
        cv_.wait(l, [&] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        auto next = std::move(jobs_.front());
        jobs_.pop_front();
        const bool refuse = stopping_;
        l.unlock();
        next(refuse ? std::string("the library is closing") : std::string());
        next = nullptr;
        l.lock();
      }
    });
  }
  lock.unlock();
  cv_.notify_all();
}

void Dispatcher::stop() {
  {
    std::lock_guard lock(m_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

HostCallbackServer::HostCallbackServer(CallbackSite& site, std::shared_ptr<HostFunction> fn, CallbackOwner owner)
    : site_(site), fn_(std::move(fn)), owner_(std::move(owner)) {}

HostCallbackServer::~HostCallbackServer() { site_.forget_function(fn_.get()); }

kj::Promise<void> HostCallbackServer::call(CallContext context) {
  auto params = context.getParams();
  const std::string what = "host function '" + fn_->name + "'";
  auto args = std::make_shared<std::vector<Value>>(params.getArgs().size());
  std::string error;
  for (unsigned i = 0; i < params.getArgs().size(); ++i)
    if (!remote::to_host(params.getArgs()[i], (*args)[i], what + ", argument " + std::to_string(i), &site_.codec(), error)) {
      context.getResults().initOutcome().setError(error);
      return kj::READY_NOW;
    }
  auto& pending = *pending_;
  const std::uint64_t id = ++pending.next;
  auto paf = kj::newPromiseAndFulfiller<std::shared_ptr<Reply>>();  // (by pointer: GCC 12 misreads kj's Maybe of a string)
  pending.replies[id] = kj::mv(paf.fulfiller);

  // Runs (or refuses) the host function on whichever thread takes it, then
  // hands the reply to the I/O thread.
  CallbackJob job = [fn = fn_, args, id, weak = std::weak_ptr<Pending>(pending_), queue = site_.queue(), what,
                     site = &site_, chain = params.getChain()](const std::string& refused) mutable {
    auto reply = std::make_shared<Reply>();
    Reply& r = *reply;
    if (!refused.empty()) {
      r.error = what + " was not run: " + refused;
    } else {
      const ChainContext outer = tls_chain;
      tls_chain = ChainContext{site, chain};
      try {
        r.ok = fn->fn(*args, r.result, r.error);
      } catch (const std::exception& e) {
        r.ok = false;
        r.error = e.what();
      } catch (...) {
        r.ok = false;
        r.error = what + " threw";
      }
      tls_chain = outer;
      if (!r.ok && r.error.empty()) r.error = what + " failed";
    }
    args = nullptr;  // the host's values go on the host's thread
    queue->post([weak, id, reply = std::move(reply)]() mutable {
      if (auto p = weak.lock()) {
        if (auto it = p->replies.find(id); it != p->replies.end()) {
          it->second->fulfill(kj::mv(reply));
          p->replies.erase(it);
        }
      }
      return kj::Promise<void>(kj::READY_NOW);
    });
  };

  const std::uint64_t token = params.getToken();
  // Delivery "owner" goes to its owner whichever thread called; otherwise the
  // thread waiting for the call it came back from, if any.
  std::shared_ptr<Waiter> waiter = owner_.owner_delivery ? site_.waiters().innermost(owner_.thread)
                                   : token                ? site_.waiters().by_token(token)
                                                          : nullptr;
  if (waiter && waiter->push(job)) {
    // runs on the waiting thread
  } else if (owner_.owner_delivery) {
    if (owner_.sta && owner_.sta->alive()) {
      site_.dispatcher().post([job, sta = owner_.sta](const std::string& refused) mutable {
        if (!refused.empty()) return job(refused);
        bool ran = false;
        std::string why;
        if (!run_in(sta, [&] { ran = true; job(std::string()); }, why) && !ran) job(why);
      });
    } else {
      job("its delivery is \"owner\" and it was called from another thread of the library while the thread that "
          "passed it was not waiting for a call to that library (and is in no STA that could run it)");
    }
  } else {
    site_.dispatcher().post(std::move(job));
  }

  CallbackSite* site = &site_;
  return paf.promise.then([site, context, what](std::shared_ptr<Reply> reply) mutable {
    const Reply& r = *reply;
    auto outcome = context.getResults().initOutcome();
    if (!r.ok) {
      outcome.setError(r.error);
      return;
    }
    std::string e;
    if (!remote::to_wire(r.result, outcome.initOk().initRet(), "the result of " + what, &site->codec(), e))
      outcome.setError(e);
  });
}

}  // namespace marshal::engine::remote
