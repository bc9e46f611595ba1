// marshal engine: apartments (STA message loops, the MTA and its engine
// threads, cross-apartment calls).
#include "apartments/apartment.hpp"
#include "base/error.hpp"


#include <algorithm>
#include <atomic>
#include <future>
#include <sstream>

namespace marshal::engine {

struct Apartment::Task {
  std::function<void()> fn;
  std::uint64_t chain = 0;            // the caller's call chain, taken on by the thread that runs fn
  std::shared_ptr<Apartment> waiter;  // an STA caller, woken through its own loop
  std::mutex mutex;                   // otherwise: the caller waits here
  std::condition_variable cv;
  std::atomic<bool> done{false};
  bool failed = false;
  std::string error;
};

namespace {

std::atomic<int> next_sta{1};

struct ThreadState {
  std::shared_ptr<Apartment> apartment;
  ~ThreadState() {
    // A thread that exits leaves its apartment: its STA ends here.
    if (apartment && apartment->kind() == Apartment::Kind::sta) leave_apartment();
  }
};
thread_local ThreadState state;

// Call chains (current_call_chain): 0 until the thread first needs its own id.
std::atomic<std::uint64_t> next_chain{1};
thread_local std::uint64_t chain_id = 0;
// The synchronization domains this thread is inside now, innermost last.
thread_local std::vector<const SyncDomain*> domains_inside;

// Runs a call for another apartment as part of the caller's chain.
struct ChainScope {
  std::uint64_t saved;
  explicit ChainScope(std::uint64_t chain) : saved(chain_id) { chain_id = chain; }
  ~ChainScope() { chain_id = saved; }
  ChainScope(const ChainScope&) = delete;
  ChainScope& operator=(const ChainScope&) = delete;
};

// Spins for a few microseconds until ready() holds (true) or gives up (false).
template <class F> bool spin_until(F ready) {
  for (int i = 0; i < 4000; ++i) {
    if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    if (i % 64 == 63) std::this_thread::yield();
  }
  return ready();
}

std::string thread_text(std::thread::id id) {
  std::ostringstream s;
  s << id;
  return s.str();
}

// The MTA's engine threads: calls from other apartments into the MTA run on
// one of them (a new one starts when all are busy, so a call that waits for
// another never starves).
class MtaThreads {
 public:
  ~MtaThreads() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void post(std::function<void()> job) {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
    if (idle_ == 0) threads_.emplace_back([this] { work(); });
    else cv_.notify_one();
  }

 private:
  void work() {
    std::string ignored;
    enter_mta(ignored);
    std::unique_lock lock(mutex_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty()) return;  // stopping
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  int idle_ = 0;
  bool stop_ = false;
};

MtaThreads& mta_threads() {
  the_mta();  // constructed first, so destroyed after the threads that use it
  static MtaThreads threads;
  return threads;
}

// The engine-owned STA: a thread running its loop until the process ends.
struct HostSta {
  std::shared_ptr<Apartment> apartment;
  std::thread thread;
  std::atomic<bool> stop{false};
  ~HostSta() {
    if (!thread.joinable()) return;
    stop = true;
    apartment->wake();
    thread.join();
  }
};

}  // namespace

std::string Apartment::label() const {
  switch (kind_) {
    case Kind::mta: return "the MTA";
    case Kind::neutral: return "the neutral apartment";
    case Kind::sta: break;
  }
  return name_ + " (thread " + thread_text(thread_) + ")";
}

std::string Apartment::describe() const {
  if (kind_ != Kind::sta) return label();
  return alive() ? label() : label() + ", which has ended";
}

std::string describe(const std::shared_ptr<Apartment>& a) { return a ? a->describe() : "no apartment"; }

bool Apartment::alive() const {
  std::lock_guard lock(mutex_);
  return alive_;
}

std::shared_ptr<Apartment> current_apartment() { return state.apartment; }

std::shared_ptr<Apartment> the_mta() {
  static auto* mta = new std::shared_ptr<Apartment>(std::make_shared<Apartment>(Apartment::Kind::mta, "MTA"));
  return *mta;
}

std::shared_ptr<Apartment> neutral_apartment() {
  static auto* na = new std::shared_ptr<Apartment>(std::make_shared<Apartment>(Apartment::Kind::neutral, "NA"));
  return *na;
}

std::shared_ptr<Apartment> enter_sta(std::string& error) {
  if (state.apartment) {
    error = "this thread is already in " + state.apartment->describe() + "; leave it first";
    return nullptr;
  }
  auto a = std::make_shared<Apartment>(Apartment::Kind::sta, "STA " + std::to_string(next_sta.fetch_add(1)));
  a->thread_ = std::this_thread::get_id();
  state.apartment = a;
  return a;
}

std::shared_ptr<Apartment> enter_mta(std::string& error) {
  if (state.apartment) {
    error = "this thread is already in " + state.apartment->describe() + "; leave it first";
    return nullptr;
  }
  state.apartment = the_mta();
  return state.apartment;
}

void leave_apartment() {
  std::shared_ptr<Apartment> a = std::move(state.apartment);
  state.apartment.reset();
  if (a && a->kind() == Apartment::Kind::sta) a->end();
}

std::shared_ptr<Apartment> host_sta() {
  static HostSta host;
  static std::once_flag once;
  std::call_once(once, [] {
    std::promise<std::shared_ptr<Apartment>> ready;
    auto got = ready.get_future();
    host.thread = std::thread([&ready] {
      std::string ignored;
      auto a = enter_sta(ignored);
      a->engine_owned_ = true;
      a->name_ = "the host STA";
      ready.set_value(a);
      a->run_until([] { return host.stop.load(); });
      leave_apartment();
    });
    host.apartment = got.get();
  });
  return host.apartment;
}

bool usable_here(const std::shared_ptr<Apartment>& home) {
  return !home || home->kind() == Apartment::Kind::neutral || home == state.apartment;
}

// ---- the STA loop --------------------------------------------------------------------------

bool Apartment::post(Task* task, std::string& error) {
  {
    std::lock_guard lock(mutex_);
    if (!alive_) {
      error = raise_error(ErrorId::apartment_ended, label() + " has ended (its thread left it)").message;
      return false;
    }
    queue_.push_back(task);
    queued_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  return true;
}

void Apartment::finish(Task* task) {
  if (task->waiter) {
    std::lock_guard lock(task->waiter->mutex_);
    task->done.store(true, std::memory_order_release);
    task->waiter->cv_.notify_all();
  } else {
    std::lock_guard lock(task->mutex);
    task->done.store(true, std::memory_order_release);
    task->cv.notify_all();
  }
}

void Apartment::wake() {
  std::lock_guard lock(mutex_);
  cv_.notify_all();
}

void Apartment::run_front(std::unique_lock<std::mutex>& lock) {
  Task* t = queue_.front();
  queue_.pop_front();
  queued_.fetch_sub(1, std::memory_order_relaxed);
  lock.unlock();  // the call runs unlocked: it may queue calls of its own
  {
    ChainScope chain(t->chain);
    t->fn();
  }
  finish(t);
  lock.lock();
}

std::size_t Apartment::pump(std::chrono::milliseconds wait) {
  std::size_t ran = 0;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::unique_lock lock(mutex_);
  for (;;) {
    if (queue_.empty()) {
      if (ran > 0 || std::chrono::steady_clock::now() >= deadline) return ran;
      cv_.wait_until(lock, deadline);
      continue;
    }
    run_front(lock);
    ++ran;
  }
}

void Apartment::run_until(const std::function<bool()>& done) {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (done()) return;
    if (queue_.empty()) {
      lock.unlock();
      const bool busy = spin_until([&] { return queued_.load(std::memory_order_acquire) > 0 || done(); });
      lock.lock();
      if (!busy && queue_.empty() && !done()) cv_.wait_for(lock, std::chrono::milliseconds(20));
      continue;
    }
    run_front(lock);
  }
}

void Apartment::end() {
  std::deque<Task*> pending;
  std::vector<std::weak_ptr<Lent>> lent;
  {
    std::lock_guard lock(mutex_);
    if (!alive_) return;
    alive_ = false;
    pending.swap(queue_);
    queued_.store(0);
    lent.swap(lent_);
  }
  for (Task* t : pending) {
    t->failed = true;
    t->error = raise_error(ErrorId::apartment_ended, label() + " has ended (its thread left it) before running the call").message;
    finish(t);
  }
  // What other apartments held through proxies, and tokens marshaled here, are
  // released here, on this apartment's own thread; later uses fail with "has ended".
  for (auto& w : lent)
    if (auto s = w.lock()) s->release_now();
}

bool Apartment::lend(const std::shared_ptr<Lent>& what) {
  std::lock_guard lock(mutex_);
  if (!alive_) return false;
  // Expired entries are dropped whenever the list doubles past 64.
  if (lent_.size() >= 64 && (lent_.size() & (lent_.size() - 1)) == 0)
    std::erase_if(lent_, [](const std::weak_ptr<Lent>& w) { return w.expired(); });
  lent_.push_back(what);
  return true;
}

// ---- cross-apartment calls -------------------------------------------------------------------

bool run_in(const std::shared_ptr<Apartment>& target, const std::function<void()>& fn, std::string& error) {
  const auto& here = state.apartment;
  if (!target || target->kind() == Apartment::Kind::neutral || target == here) {
    fn();
    return true;
  }
  Apartment::Task task;
  task.fn = fn;
  task.chain = current_call_chain();
  if (here && here->kind() == Apartment::Kind::sta) task.waiter = here;
  if (target->kind() == Apartment::Kind::mta) {
    mta_threads().post([&task] {
      {
        ChainScope chain(task.chain);
        task.fn();
      }
      Apartment::finish(&task);
    });
  } else if (!target->post(&task, error)) {
    return false;
  }
  if (task.waiter) {
    // An STA keeps running calls queued for it (callbacks into it) while it waits.
    task.waiter->run_until([&task] { return task.done.load(std::memory_order_acquire); });
  } else {
    // A cross-thread round trip is short when the other side is running: look
    // for a while before sleeping (two thread wake-ups cost tens of microseconds).
    spin_until([&] { return task.done.load(std::memory_order_acquire); });
    // Always through the lock: finish() sets done and notifies under it, so
    // the task (its condition variable) is not destroyed while it notifies.
    std::unique_lock lock(task.mutex);
    task.cv.wait(lock, [&] { return task.done.load(std::memory_order_acquire); });
  }
  if (task.failed) {
    error = task.error;
    return false;
  }
  return true;
}

// ---- call chains and synchronization domains ------------------------------------------------

std::uint64_t current_call_chain() {
  if (chain_id == 0) chain_id = next_chain.fetch_add(1, std::memory_order_relaxed);
  return chain_id;
}

bool SyncDomain::admit(std::uint64_t chain, bool nested) {
  auto mine = std::find_if(chains_.begin(), chains_.end(), [&](const auto& c) { return c.first == chain; });
  if (mine != chains_.end()) {
    ++mine->second;
    return true;
  }
  if (!chains_.empty() && !nested) return false;
  // Empty, or this thread is inside already (a call it runs while it waits
  // belongs to another chain): from now on that chain is inside too, so its
  // own hops back here are re-entries and not waits.
  chains_.emplace_back(chain, 1);
  return true;
}

std::uint64_t SyncDomain::enter() {
  const std::uint64_t chain = current_call_chain();
  const bool nested = std::find(domains_inside.begin(), domains_inside.end(), this) != domains_inside.end();
  std::unique_lock lock(mutex_);
  if (!admit(chain, nested)) {
    const std::shared_ptr<Apartment> here = state.apartment;
    if (here && here->kind() == Apartment::Kind::sta) {
      // An STA keeps running calls queued for it while it waits: the chain
      // inside may need this thread before it leaves.
      sta_waiters_.push_back(here);
      lock.unlock();
      // run_until may ask again after a yes: admit once (admission has effects).
      bool admitted = false;
      here->run_until([&] {
        if (!admitted) {
          std::lock_guard inner(mutex_);
          admitted = admit(chain, false);
        }
        return admitted;
      });
      lock.lock();
      sta_waiters_.erase(std::find(sta_waiters_.begin(), sta_waiters_.end(), here));
    } else {
      cv_.wait(lock, [&] { return admit(chain, false); });
    }
  }
  lock.unlock();
  domains_inside.push_back(this);
  return chain;
}

void SyncDomain::leave(std::uint64_t chain) {
  domains_inside.erase(std::find(domains_inside.rbegin(), domains_inside.rend(), this).base() - 1);
  std::vector<std::shared_ptr<Apartment>> wake;
  {
    std::lock_guard lock(mutex_);
    auto mine = std::find_if(chains_.begin(), chains_.end(), [&](const auto& c) { return c.first == chain; });
    if (--mine->second != 0) return;  // the same chains still inside: nobody new may enter
    chains_.erase(mine);
    wake = sta_waiters_;
  }
  cv_.notify_all();
  // Outside the domain's lock: an STA's loop checks admission under its own lock.
  for (const auto& a : wake) a->wake();
}

std::string wrong_apartment(const std::string& what, const std::shared_ptr<Apartment>& home, const std::string& advice) {
  return "wrong apartment: " + what + " belongs to " + describe(home) + ", the calling thread is in " +
         describe(current_apartment()) + (advice.empty() ? "" : " (" + advice + ")");
}

}  // namespace marshal::engine
