// marshal tests: a typemap's library in a surrogate (or at a marshal serve),
// for the remote suites (unit-remote*.cpp). Needs MARSHAL_SURROGATE (the
// surrogate program, defined by tests/meson.build) and doctest.
#pragma once

#include "call_support.hpp"
#include "objects/object.hpp"
#include "remote/surrogate.hpp"

#include <cerrno>
#include <chrono>
#include <memory>
#include <poll.h>
#include <string>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

#ifndef MARSHAL_SURROGATE
#error "MARSHAL_SURROGATE must be defined by the build"
#endif

namespace marshal::test {

// Whether process pid has ended, as the host's watch sees it (its pidfd
// readable: every thread gone, not only the main one a zombie), within 2 s.
inline bool ended(int pid) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;  // already reaped
  pollfd p{fd, POLLIN, 0};
  const bool done = ::poll(&p, 1, 2000) == 1;
  ::close(fd);
  return done;
}

struct IsolatedBase {
  engine::Context ctx;
  std::unique_ptr<engine::remote::IsolatedLibrary> lib;

  static engine::remote::IsolateOptions options(std::chrono::milliseconds deadline, const std::string& connect) {
    engine::remote::IsolateOptions o;
    o.surrogate = MARSHAL_SURROGATE;
    o.deadline = deadline;
    o.connect = connect;
    return o;
  }
  // The typemap at `path` (in the source tree); connect: a marshal serve's address instead of a surrogate.
  void open_path(const std::string& path, std::chrono::milliseconds deadline = std::chrono::milliseconds{0},
                 const std::string& connect = "") {
    std::string error;
    lib = engine::remote::IsolatedLibrary::open_file(ctx, source_path(path), options(deadline, connect), error);
    INFO(error);
    REQUIRE(lib);
  }
  // The typemap's text (`file` names it in messages).
  void open_text(const std::string& text, const std::string& file,
                 std::chrono::milliseconds deadline = std::chrono::milliseconds{0}, const std::string& connect = "") {
    std::string error;
    lib = engine::remote::IsolatedLibrary::open_text(ctx, text, file, options(deadline, connect), error);
    INFO(error);
    REQUIRE(lib);
  }
  // Calls and requires success.
  engine::CallResult call(const std::string& fn, std::vector<engine::Value> args = {}) {
    engine::CallResult r;
    std::string error;
    const bool ok = lib->call(fn, args, r, error);
    INFO(fn << ": " << error);
    REQUIRE(ok);
    return r;
  }
  // Calls and requires failure; returns the message.
  std::string error_of(const std::string& fn, std::vector<engine::Value> args = {},
                       std::chrono::milliseconds deadline = std::chrono::milliseconds{0}) {
    engine::CallResult r;
    std::string error;
    CHECK_FALSE(lib->call(fn, args, r, error, deadline));
    return error;
  }
};

// Method calls through whatever library the reference belongs to (the generic
// path the C API and the Lua host use).
inline engine::CallResult mcall(const engine::Value& obj, const std::string& method, std::vector<engine::Value> args = {}) {
  const engine::ObjectRef& ref = obj.as<engine::ObjectRef>();
  engine::CallResult r;
  std::string error;
  const bool ok = engine::library_of(ref).objects().call(ref, method, args, r, error);
  INFO(method << ": " << error);
  REQUIRE(ok);
  return r;
}

inline std::string mcall_error(const engine::Value& obj, const std::string& method, std::vector<engine::Value> args = {}) {
  const engine::ObjectRef& ref = obj.as<engine::ObjectRef>();
  engine::CallResult r;
  std::string error;
  CHECK_FALSE(engine::library_of(ref).objects().call(ref, method, args, r, error));
  return error;
}

}  // namespace marshal::test
