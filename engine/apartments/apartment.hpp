// marshal engine: apartments (TYPEMAP.md, "Apartments").
//
// A thread that uses objects enters an apartment: a single-threaded apartment
// (STA: its own thread runs every call into its objects, from a message loop,
// so calls are serialized) or the process's one multithreaded apartment (MTA:
// any number of threads, no synchronization). Objects of `neutral` classes
// live in the neutral apartment: any thread calls them, one call at a time.
// A reference belongs to the apartment it was obtained in; another apartment
// uses it through a proxy made by marshaling (a token, used once), and each
// call through the proxy runs in the owner apartment (run_in). While an STA
// thread waits for such a call it keeps running calls queued for it, so a
// callback into a waiting STA does not deadlock.
//
// Threads that never enter an apartment use objects as before apartments
// existed: directly, with no checks (objects they create belong to no
// apartment).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace marshal::engine {

// What an apartment lent to other apartments (the stub behind their proxies, a
// token not yet unmarshaled): released on the apartment's own thread when it
// ends, so later uses fail with "has ended". objects/ implements it.
struct Lent {
  virtual ~Lent() = default;
  virtual void release_now() = 0;
};

class Apartment : public std::enable_shared_from_this<Apartment> {
 public:
  enum class Kind : std::uint8_t { sta, mta, neutral };
  Apartment(Kind kind, std::string name) : kind_(kind), name_(std::move(name)) {}
  Apartment(const Apartment&) = delete;
  Apartment& operator=(const Apartment&) = delete;

  Kind kind() const { return kind_; }
  // "STA 3 (thread 1402...)", "the MTA", "the neutral apartment": for messages.
  std::string describe() const;
  bool alive() const;
  // An STA's thread (default for the MTA and the neutral apartment).
  std::thread::id thread() const { return thread_; }
  bool engine_owned() const { return engine_owned_; }

  // The STA's message loop, on the STA's own thread only: runs queued calls
  // (waiting up to `wait` for the first); run_until runs them until done()
  // holds (checked after each call, on wake(), and every 20 ms).
  std::size_t pump(std::chrono::milliseconds wait = std::chrono::milliseconds(0));
  void run_until(const std::function<bool()>& done);
  void wake();
  // Keeps a weak reference to what was lent, released when the apartment ends;
  // false when it has ended already (the caller releases it at once).
  bool lend(const std::shared_ptr<Lent>& what);

 private:
  friend bool run_in(const std::shared_ptr<Apartment>& target, const std::function<void()>& fn, std::string& error);
  friend std::shared_ptr<Apartment> enter_sta(std::string& error);
  friend std::shared_ptr<Apartment> host_sta();
  friend void leave_apartment();
  struct Task;
  bool post(Task* task, std::string& error);
  void end();
  static void finish(Task* task);
  void run_front(std::unique_lock<std::mutex>& lock);  // the first queued call
  std::string label() const;

  Kind kind_;
  std::string name_;
  std::thread::id thread_;
  bool engine_owned_ = false;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Task*> queue_;
  std::atomic<std::size_t> queued_{0};  // queue_.size(), readable without the lock
  bool alive_ = true;
  std::vector<std::weak_ptr<Lent>> lent_;  // references this apartment lent to others
};

// This thread's apartment, or nullptr when it entered none.
std::shared_ptr<Apartment> current_apartment();
// Makes this thread a new STA (error if it already is in an apartment).
std::shared_ptr<Apartment> enter_sta(std::string& error);
// Makes this thread a member of the MTA.
std::shared_ptr<Apartment> enter_mta(std::string& error);
// Leaves this thread's apartment. For an STA: calls still queued for it fail
// ("apartment ... has ended"), so do later calls through proxies; the
// references other apartments held through proxies, and tokens it marshaled,
// are released here, on its own thread. A thread that exits leaves its
// apartment the same way.
void leave_apartment();
std::shared_ptr<Apartment> the_mta();
std::shared_ptr<Apartment> neutral_apartment();
// The engine's own STA (one per process, started on first use): where
// `apartment` classes created from the MTA live.
std::shared_ptr<Apartment> host_sta();

// Runs fn in apartment `target` and waits for it: directly when the calling
// thread is in it, else on the STA's thread (queued) or an MTA thread of the
// engine. An STA caller keeps running calls queued for it while it waits.
// false with a message when the target has ended (fn did not run).
bool run_in(const std::shared_ptr<Apartment>& target, const std::function<void()>& fn, std::string& error);

// The logical call chain the calling thread works for (COM's causality): its
// own id, or, while it runs a call another apartment sent it (run_in), the
// chain of the thread that sent it. A call that comes back through an
// apartment hop is so known as part of the chain that is waiting for it.
std::uint64_t current_call_chain();

// A synchronization domain (TYPEMAP.md, neutral; COM+ synchronization): calls
// from different threads run one at a time, but a call that re-enters runs at
// once: when its thread is already inside (a callback chain on one thread), or
// when it belongs to a call chain already inside (it came back through an
// apartment hop while the thread that entered first waits for it). Any other
// call waits until the domain is empty; an STA thread keeps running the calls
// queued for it while it waits, so the chain inside can reach it. A native
// thread the object starts and waits for is a chain the engine cannot see.
class SyncDomain {
 public:
  SyncDomain() = default;
  SyncDomain(const SyncDomain&) = delete;
  SyncDomain& operator=(const SyncDomain&) = delete;

  // Inside from construction to destruction, on one thread.
  class Entry {
   public:
    explicit Entry(SyncDomain& d) : domain_(d), chain_(d.enter()) {}
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;
    ~Entry() { domain_.leave(chain_); }

   private:
    SyncDomain& domain_;
    std::uint64_t chain_;
  };

 private:
  std::uint64_t enter();
  void leave(std::uint64_t chain);
  bool admit(std::uint64_t chain, bool nested);  // under mutex_: enters when allowed

  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::pair<std::uint64_t, std::uint32_t>> chains_;  // inside now: chain, entries
  std::vector<std::shared_ptr<Apartment>> sta_waiters_;          // STAs waiting to enter, woken on leave
};

// Whether the calling thread may use a reference that belongs to `home`
// directly (home null or neutral: always).
bool usable_here(const std::shared_ptr<Apartment>& home);
std::string describe(const std::shared_ptr<Apartment>& a);  // "no apartment" for null
// The one "wrong apartment" message: "wrong apartment: WHAT belongs to HOME,
// the calling thread is in HERE (ADVICE)" (no parentheses when advice is empty).
std::string wrong_apartment(const std::string& what, const std::shared_ptr<Apartment>& home, const std::string& advice);

}  // namespace marshal::engine
