// marshal remote: one surrogate process (child.hpp).
#include "remote/child.hpp"
#include "remote/wire.hpp"

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#ifndef MARSHAL_SURROGATE_INSTALLED
#define MARSHAL_SURROGATE_INSTALLED "/usr/local/bin/marshal-surrogate"
#endif

namespace marshal::engine::remote {

namespace {

std::string signal_name(int s) {
  const char* n = sigabbrev_np(s);
  return n ? std::string("SIG") + n : "signal " + std::to_string(s);
}

// What a fault's si_code says, for SIGFPE and SIGILL (whose si_addr is the
// faulting instruction); "" for a code without words here.
const char* fault_kind(int signo, int code) {
  if (signo == SIGFPE) switch (code) {
      case FPE_INTDIV: return "integer divide by zero";
      case FPE_INTOVF: return "integer overflow";
      case FPE_FLTDIV: return "floating-point divide by zero";
      case FPE_FLTOVF: return "floating-point overflow";
      case FPE_FLTUND: return "floating-point underflow";
      case FPE_FLTRES: return "inexact floating-point result";
      case FPE_FLTINV: return "invalid floating-point operation";
      case FPE_FLTSUB: return "subscript out of range";
      default: return "";
    }
  if (signo == SIGILL) switch (code) {
      case ILL_ILLOPC: return "illegal opcode";
      case ILL_ILLOPN: return "illegal operand";
      case ILL_ILLADR: return "illegal addressing mode";
      case ILL_ILLTRP: return "illegal trap";
      case ILL_PRVOPC: return "privileged opcode";
      case ILL_PRVREG: return "privileged register";
      case ILL_COPROC: return "coprocessor error";
      case ILL_BADSTK: return "internal stack error";
      default: return "";
    }
  return "";
}

// The faulting address of a crash record, in words: the data address of a
// SIGSEGV or SIGBUS, the instruction of a SIGFPE or SIGILL; nothing for a
// signal that was sent rather than raised by a fault (si_code <= 0: abort,
// kill), whose si_addr means nothing.
std::string fault_detail(const CrashRecord& r) {
  if (r.code <= 0) return "";
  if (r.signo == SIGSEGV || r.signo == SIGBUS) return " (address " + hex(r.address) + ")";
  if (r.signo == SIGFPE || r.signo == SIGILL) {
    const std::string kind = fault_kind(r.signo, r.code);
    return " (" + (kind.empty() ? std::string("instruction") : kind) + " at " + hex(r.address) + ")";
  }
  return "";
}

}  // namespace

Error failure(ErrorId id, std::string message, const std::string& function, int signo) {
  Error e;
  e.id = id;
  e.message = std::move(message);
  e.function = function;
  if (signo != 0) {
    e.native_kind = NativeCodeKind::signal;
    e.native_code = signo;
  }
  return e;
}

std::string find_surrogate(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* env = std::getenv("MARSHAL_SURROGATE"); env && *env) return env;
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    std::string dir(self, static_cast<std::size_t>(n));
    dir = dir.substr(0, dir.rfind('/') + 1);
    if (access((dir + "marshal-surrogate").c_str(), X_OK) == 0) return dir + "marshal-surrogate";
  }
  return MARSHAL_SURROGATE_INSTALLED;
}

std::shared_ptr<Child> Child::spawn(const std::string& program, int generation, kj::UnixEventPort& port, int& sock,
                                    int& direct, std::string& error) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    error = std::string("cannot start the surrogate: socketpair: ") + std::strerror(errno);
    return nullptr;
  }
  int crash[2];
  if (pipe2(crash, O_CLOEXEC) != 0) {
    close(sv[0]);
    close(sv[1]);
    error = std::string("cannot start the surrogate: pipe: ") + std::strerror(errno);
    return nullptr;
  }
  int dv[2];  // the direct channel (direct.hpp)
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, dv) != 0) {
    for (int fd : {sv[0], sv[1], crash[0], crash[1]}) close(fd);
    error = std::string("cannot start the surrogate: socketpair: ") + std::strerror(errno);
    return nullptr;
  }
  // Room for a large argument or result in one write (the kernel caps it at
  // net.core.wmem_max): fewer wake-ups of the reader, each for more bytes.
  for (int fd : {dv[0], dv[1]}) {
    const int bytes = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, sv[1], 3);  // dup2 clears close-on-exec
  posix_spawn_file_actions_adddup2(&fa, crash[1], 4);
  posix_spawn_file_actions_adddup2(&fa, dv[1], 5);
  posix_spawn_file_actions_addclosefrom_np(&fa, 6);  // nothing else of the host leaks in
  std::string arg0 = "marshal-surrogate";
  char* argv[] = {arg0.data(), nullptr};
  pid_t child_pid = -1;
  int err = posix_spawn(&child_pid, program.c_str(), &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(sv[1]);
  close(crash[1]);
  close(dv[1]);
  if (err != 0) {
    close(sv[0]);
    close(crash[0]);
    close(dv[0]);
    error = "cannot start the surrogate " + program + ": " + std::strerror(err) +
            " (set MARSHAL_SURROGATE or IsolateOptions::surrogate to the marshal-surrogate program)";
    return nullptr;
  }
  auto child = std::make_shared<Child>();
  child->pid = child_pid;
  child->crash_fd = crash[0];
  fcntl(child->crash_fd, F_SETFL, O_NONBLOCK);
  child->pidfd = static_cast<int>(syscall(SYS_pidfd_open, child_pid, 0));
  child->generation = generation;
  if (child->pidfd < 0) {
    ::kill(child_pid, SIGKILL);
    waitpid(child_pid, nullptr, 0);
    child->reaped = true;
    close(sv[0]);
    close(dv[0]);
    error = std::string("cannot watch the surrogate: pidfd_open: ") + std::strerror(errno);
    return nullptr;
  }
  child->observer = kj::heap<kj::UnixEventPort::FdObserver>(port, child->pidfd, kj::UnixEventPort::FdObserver::OBSERVE_READ);
  Child* c = child.get();
  child->exit = child->observer->whenBecomesReadable().then([c]() { return c->describe_exit(); }).fork();
  sock = sv[0];
  direct = dv[0];
  return child;
}

Child::~Child() {
  observer = nullptr;
  if (!reaped && pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    if (poll(&p, 1, 2000) != 1) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
    siginfo_t si{};
    waitid(static_cast<idtype_t>(3) /* P_PIDFD */, static_cast<id_t>(pidfd), &si, WEXITED);
  }
  if (pidfd >= 0) close(pidfd);
  if (crash_fd >= 0) close(crash_fd);
}

bool Child::exited() const {
  if (reaped) return true;
  pollfd p{pidfd, POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

void Child::kill() const {
  if (!reaped && pidfd >= 0) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
}

Ending Child::describe_exit() {
  Ending end = reap();
  how = end.text;
  return end;
}

std::string Child::ending() {
  if (!reaped) return describe_exit().text;
  return how.empty() ? std::string("it ended") : how;
}

Ending Child::reap() {
  Ending end;
  siginfo_t si{};
  if (waitid(static_cast<idtype_t>(3), static_cast<id_t>(pidfd), &si, WEXITED) != 0) {
    end.text = "the surrogate (pid " + std::to_string(pid) + ") ended (" + std::strerror(errno) + ")";
    return end;
  }
  reaped = true;
  CrashRecord r;
  bool have = read(crash_fd, &r, sizeof r) == static_cast<ssize_t>(sizeof r);
  const std::string who = "the surrogate (pid " + std::to_string(pid) + ")";
  if (si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED) {
    end.id = ErrorId::native_crash;
    end.signo = si.si_status;
    if (have && r.signo == si.si_status) {
      r.function[sizeof r.function - 1] = '\0';
      end.function = r.function;
      end.text = (r.function[0] ? "function " + end.function + " crashed in " + who
                                 : who + " crashed outside a native call") +
                 " with " + signal_name(r.signo) + fault_detail(r);
      return end;
    }
    end.text = who + " was killed by " + signal_name(si.si_status);
    return end;
  }
  end.text = who + " exited with status " + std::to_string(si.si_status);
  return end;
}

}  // namespace marshal::engine::remote
