// marshal tests: `marshal serve` in the background for the remote suites
// (unit-remote.cpp, unit-remote-objects.cpp). Needs MARSHAL_EXE (the marshal
// program, defined by tests/meson.build) and doctest.
#pragma once

#include <doctest/doctest.h>

#include <csignal>
#include <fcntl.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#ifndef MARSHAL_EXE
#error "MARSHAL_EXE must be defined by the build"
#endif

namespace marshal::test {

// `marshal serve TYPEMAPS --listen LISTEN OPTIONS` in the background; the
// port it printed. Its stderr goes to `err_file` when one is given.
struct Server {
  pid_t pid = -1;
  unsigned port = 0;
  explicit Server(const std::vector<std::string>& typemaps, const std::vector<std::string>& options = {},
                  const std::string& listen = "127.0.0.1:0", const std::string& err_file = "") {
    int out[2];
    REQUIRE(::pipe(out) == 0);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      if (!err_file.empty()) {
        const int fd = ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) ::dup2(fd, 2);
      }
      std::vector<std::string> args{MARSHAL_EXE, "serve"};
      for (const auto& t : typemaps) args.push_back(t);
      args.push_back("--listen");
      args.push_back(listen);
      for (const auto& o : options) args.push_back(o);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(MARSHAL_EXE, argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    std::string line;
    char c;
    while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
    ::close(out[0]);
    INFO(line);
    REQUIRE(line.rfind("listening on " + listen.substr(0, listen.rfind(':')) + ":", 0) == 0);
    port = static_cast<unsigned>(std::stoul(line.substr(line.rfind(':') + 1)));
  }
  ~Server() {
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
};

}  // namespace marshal::test
