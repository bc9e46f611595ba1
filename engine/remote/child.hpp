// marshal remote: one surrogate process as its host sees it (private to
// engine/remote). Spawned with posix_spawn on a socketpair (fd 3), a crash
// pipe (fd 4) and a second socketpair (fd 5, the direct channel), watched
// through a pidfd on the I/O thread's event port; when it ends, the crash
// record it wrote (surrogate.hpp, CrashRecord) and its wait status say how,
// in words that name the function, the signal and the faulting address.
#pragma once

#include "base/error.hpp"
#include "remote/surrogate.hpp"

#include <kj/async-unix.h>

#include <memory>
#include <string>
#include <sys/types.h>

namespace marshal::engine::remote {

// A failed call's structured record (base/error.hpp): made on the I/O thread,
// made the caller's last error on the caller's thread.
Error failure(ErrorId id, std::string message, const std::string& function = {}, int signo = 0);

// How a surrogate ended: the words, and the record's id, signal and function.
struct Ending {
  std::string text;
  ErrorId id = ErrorId::disconnected;  // native_crash when a signal ended it
  int signo = 0;
  std::string function;  // the native call it crashed in (its crash record)
};

// The surrogate program: the option, $MARSHAL_SURROGATE, next to this
// program, the installed one; the first that exists.
std::string find_surrogate(const std::string& given);

struct Child {
  pid_t pid = -1;
  int pidfd = -1;
  int crash_fd = -1;  // read end of the crash pipe
  int generation = 0;
  bool timed_out = false;       // killed for a deadline (I/O thread)
  std::string timeout_message;  // what the killed call reports
  kj::Maybe<kj::ForkedPromise<Ending>> exit;  // how it ended (I/O thread)
  kj::Own<kj::UnixEventPort::FdObserver> observer;
  bool reaped = false;
  std::string how;  // once reaped: how it ended (describe_exit's words)

  // Spawns `program` as surrogate number `generation`, watched on `port`;
  // `sock` is the host's end of its socket, `direct` of its direct channel
  // (fd 5 there). nullptr with the reason.
  static std::shared_ptr<Child> spawn(const std::string& program, int generation, kj::UnixEventPort& port, int& sock,
                                      int& direct, std::string& error);
  // Normal shutdown: the connection is gone, so the surrogate exits; one
  // that does not within 2 s is killed. Reaps it.
  ~Child();
  // Whether the process has ended (its pidfd is readable), without waiting.
  bool exited() const;
  void kill() const;
  // After the pidfd became readable: reap, and say how it ended.
  Ending describe_exit();
  // How it ended, reaping it now if the I/O thread has not yet.
  std::string ending();

 private:
  Ending reap();
};

}  // namespace marshal::engine::remote
