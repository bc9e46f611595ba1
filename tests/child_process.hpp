// marshal tests: running a piece of a test in a child process (a fault that
// must abort, e.g. guard mode's), with its stderr and status collected.
#pragma once

#include <doctest/doctest.h>

#include <csignal>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace marshal::test {

struct Child {
  int status = 0;
  std::string err;
};

// Runs fn in a child process; collects its stderr and exit status.
template <class Fn>
inline Child in_child(Fn fn) {
  int pipefd[2];
  REQUIRE(pipe(pipefd) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(pipefd[0]);
    dup2(pipefd[1], 2);
    fn();
    _exit(0);
  }
  close(pipefd[1]);
  Child c;
  char buf[4096];
  for (ssize_t n; (n = read(pipefd[0], buf, sizeof buf)) > 0;) c.err.append(buf, static_cast<std::size_t>(n));
  close(pipefd[0]);
  waitpid(pid, &c.status, 0);
  return c;
}

inline bool aborted(const Child& c) { return WIFSIGNALED(c.status) && WTERMSIG(c.status) == SIGABRT; }

}  // namespace marshal::test
