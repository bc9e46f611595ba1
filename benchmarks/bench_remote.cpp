// marshal benchmarks: calls across a process boundary (issue 17), each next to
// its floor measured in the same run: a raw ping-pong of the same payload over
// a socketpair to a forked echo process (one round trip for add_i32's 8 bytes
// in and 4 out; for the 1 MiB array, two copies: 1 MiB over and 1 MiB back).
// Implementations: the floor, a raw TCP loopback ping-pong (the floor of
// serve/connect), direct C and dynamic values in-process (what the call itself
// costs), the surrogate (engine/remote IsolatedLibrary, "isolate": "process")
// and `marshal serve` + connect on loopback.
// Scenarios: remote_add_i32 (add_i32 of tests/fixtures/pinvoke.json) and
// remote_bytes_1mib (touch_inout_u8 of tests/fixtures/hostile.json: a 1 MiB
// uint8 array, inout, so it crosses in and comes back; the callee reads and
// xors every byte).
// Usage: bench-remote [--root DIR] [--iterations N] [--repetitions R] [--json]
//                     [--only SCENARIO[,...]] [--impl IMPLEMENTATION] (for profiling one)
//                     [--marshal PATH] [--surrogate PATH] [--fixture-dir DIR]
// Every implementation checks its result once, then consumes every result.
#include "bench_support.hpp"
#include "fixtures/pinvoke.h"
#include "marshal/marshal.hpp"
#include "remote/surrogate.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#ifndef MARSHAL_EXE
#define MARSHAL_EXE "marshal"
#endif
#ifndef MARSHAL_SURROGATE
#define MARSHAL_SURROGATE ""
#endif
#ifndef FIXTURE_DIR
#define FIXTURE_DIR ""
#endif

using namespace marshal::bench;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench-remote: %s\n", what.c_str());
  std::exit(2);
}

bool read_all(int fd, void* p, std::size_t n) {
  auto* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t k = ::read(fd, c, n);
    if (k <= 0) return false;
    c += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

bool write_all(int fd, const void* p, std::size_t n) {
  const auto* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t k = ::write(fd, c, n);
    if (k <= 0) return false;
    c += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

// The raw floor: a forked process on the other end of `fd` that answers each
// request until EOF. small: reads two int32, writes their sum (add_i32's
// payload); big > 0: reads `big` bytes, writes them back.
struct Echo {
  pid_t pid = -1;
  int fd = -1;
  Echo(const Echo&) = delete;
  Echo& operator=(const Echo&) = delete;
  Echo(int mine, int theirs, std::size_t big) {
    pid = ::fork();
    if (pid < 0) die("fork failed");
    if (pid == 0) {
      ::close(mine);
      if (big == 0) {
        int32_t ab[2];
        while (read_all(theirs, ab, sizeof ab)) {
          const int32_t sum = ab[0] + ab[1];
          if (!write_all(theirs, &sum, sizeof sum)) break;
        }
      } else {
        std::vector<char> buf(big);
        while (read_all(theirs, buf.data(), big))
          if (!write_all(theirs, buf.data(), big)) break;
      }
      ::_exit(0);
    }
    ::close(theirs);
    fd = mine;
  }
  ~Echo() {
    ::close(fd);
    ::waitpid(pid, nullptr, 0);
  }
};

Echo socketpair_echo(std::size_t big) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair failed");
  return Echo(sv[0], sv[1], big);
}

Echo tcp_echo(std::size_t big) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    die("cannot listen on loopback");
  const int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (client < 0 || ::connect(client, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("cannot connect on loopback");
  const int server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (server < 0) die("accept failed");
  ::close(listener);
  const int one = 1;  // as kj sets it on its connections
  ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return Echo(client, server, big);
}

// `marshal serve TYPEMAPS --listen 127.0.0.1:0` in the background; its address.
struct Server {
  pid_t pid = -1;
  std::string address;
  Server(const std::string& exe, const std::vector<std::string>& typemaps) {
    int out[2];
    if (::pipe(out) != 0) die("pipe failed");
    pid = ::fork();
    if (pid < 0) die("fork failed");
    if (pid == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      std::vector<std::string> args{exe, "serve"};
      for (const auto& t : typemaps) args.push_back(t);
      args.push_back("--listen");
      args.push_back("127.0.0.1:0");
      std::vector<char*> argv;
      for (auto& s : args) argv.push_back(s.data());
      argv.push_back(nullptr);
      ::execv(exe.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    std::string line;
    char c;
    while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
    ::close(out[0]);
    const std::string prefix = "listening on ";
    if (line.rfind(prefix, 0) != 0) die("marshal serve did not start (" + exe + "): '" + line + "'");
    address = line.substr(prefix.size());
  }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server() {
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
  }
};

double num(const marshal::engine::Value& v) {
  return v.is<double>() ? v.as<double>() : v.is<std::uint64_t>() ? static_cast<double>(v.as<std::uint64_t>())
                                                                 : static_cast<double>(v.as<std::int64_t>());
}

}  // namespace

int main(int argc, char** argv) {
  long iterations = 2000000;
  int reps = 5;
  bool json = false;
  std::string root = ".", only, impl_only, marshal_exe = MARSHAL_EXE, surrogate = MARSHAL_SURROGATE, fixture_dir = FIXTURE_DIR;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--iterations") && i + 1 < argc) iterations = std::atol(argv[++i]);
    else if (!std::strcmp(argv[i], "--repetitions") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--root") && i + 1 < argc) root = argv[++i];
    else if (!std::strcmp(argv[i], "--json")) json = true;
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = "," + std::string(argv[++i]) + ",";
    else if (!std::strcmp(argv[i], "--impl") && i + 1 < argc) impl_only = argv[++i];
    else if (!std::strcmp(argv[i], "--marshal") && i + 1 < argc) marshal_exe = argv[++i];
    else if (!std::strcmp(argv[i], "--surrogate") && i + 1 < argc) surrogate = argv[++i];
    else if (!std::strcmp(argv[i], "--fixture-dir") && i + 1 < argc) fixture_dir = argv[++i];
    else die(std::string("unknown argument ") + argv[i]);
  }
  // The surrogates and the server find the fixture by the typemaps' load list.
  if (!fixture_dir.empty()) {
    const char* old = std::getenv("LD_LIBRARY_PATH");
    const std::string path = fixture_dir + (old && *old ? ":" + std::string(old) : "");
    ::setenv("LD_LIBRARY_PATH", path.c_str(), 1);
  }
  const std::string pinvoke = root + "/tests/fixtures/pinvoke.json";
  const std::string hostile = root + "/tests/fixtures/hostile.json";

  int failures = 0;
  auto expect = [&](bool ok, const std::string& what) {
    if (!ok) { std::fprintf(stderr, "wrong result: %s\n", what.c_str()); ++failures; }
  };
  std::vector<Row> rows;
  auto wanted = [&](const char* scenario, const char* impl = nullptr) {
    return (only.empty() || only.find("," + std::string(scenario) + ",") != std::string::npos) &&
           (!impl || impl_only.empty() || impl_only == impl);
  };
  // weight: how much slower than a plain call the body is, to keep run times even.
  auto add = [&](const char* scenario, const char* impl, long weight, const std::function<double(long)>& body) {
    if (wanted(scenario, impl)) rows.push_back({scenario, impl, measure(std::max(1L, iterations / weight), reps, body)});
  };
  const char* SMALL = "remote_add_i32";
  const char* BIG = "remote_bytes_1mib";
  const char* C = "direct C";
  const char* DYN = "marshal dynamic values";
  const char* FLOOR = "raw socketpair ping-pong";
  const char* TCP = "raw TCP loopback ping-pong";
  const char* SURROGATE = "marshal surrogate";
  const char* SERVE = "marshal serve/connect (loopback)";
  const long round_trip = 1000, mib = 20000;  // weights: a round trip ~10 us, 1 MiB each way ~100 us

  const std::size_t n = std::size_t{1} << 20;
  std::vector<std::uint8_t> payload(n);
  for (std::size_t i = 0; i < n; ++i) payload[i] = static_cast<std::uint8_t>(i * 131 + (i >> 8));
  std::uint64_t payload_sum = 0;
  for (std::uint8_t b : payload) payload_sum += b;
  auto xored_ok = [&](const std::vector<std::uint8_t>& got) {
    if (got.size() != n) return false;
    for (std::size_t i = 0; i < n; ++i)
      if (got[i] != (payload[i] ^ 0x5a)) return false;
    return true;
  };

  // ---- the floors: a forked echo process (before any thread of ours exists) ----
  {
    Echo pair = socketpair_echo(0), tcp = tcp_echo(0);
    for (auto [impl, e] : {std::pair{FLOOR, &pair}, std::pair{TCP, &tcp}}) {
      const int fd = e->fd;
      int32_t ab[2] = {1, 2}, sum = 0;
      expect(write_all(fd, ab, sizeof ab) && read_all(fd, &sum, sizeof sum) && sum == 3, std::string(impl) + " add_i32");
      add(SMALL, impl, round_trip, [fd](long k) {
        double t = 0;
        for (long i = 0; i < k; ++i) {
          int32_t q[2] = {static_cast<int32_t>(i % 65536), 3}, s = 0;
          if (!write_all(fd, q, sizeof q) || !read_all(fd, &s, sizeof s)) die("the echo process died");
          t += s;
        }
        return t;
      });
    }
  }
  {
    Echo pair = socketpair_echo(n), tcp = tcp_echo(n);
    std::vector<std::uint8_t> back(n);
    for (auto [impl, e] : {std::pair{FLOOR, &pair}, std::pair{TCP, &tcp}}) {
      const int fd = e->fd;
      expect(write_all(fd, payload.data(), n) && read_all(fd, back.data(), n) && back == payload,
             std::string(impl) + " 1 MiB");
      add(BIG, impl, mib, [&, fd](long k) {
        double t = 0;
        for (long i = 0; i < k; ++i) {
          if (!write_all(fd, payload.data(), n) || !read_all(fd, back.data(), n)) die("the echo process died");
          t += back[static_cast<std::size_t>(i) % n];
        }
        return t;
      });
    }
  }

  // ---- in-process: what the calls cost without a boundary ----
  add(SMALL, C, 1, [](long k) {
    double t = 0;
    for (long i = 0; i < k; ++i) t += add_i32(static_cast<int32_t>(i % 65536), 3);
    return t;
  });
  {
    std::vector<std::uint8_t> buf(payload);
    add(BIG, C, mib, [&](long k) {  // the callee's own work on 1 MiB, no copy
      double t = 0;
      for (long i = 0; i < k; ++i) t += static_cast<double>(touch_inout_u8(buf.data(), n));
      return t;
    });
  }
  marshal::engine::Context ctx;
  std::string err;
  auto open_here = [&](const std::string& tm) {
    marshal::engine::LoadResult lr = ctx.load_file(tm);
    if (!lr.typemap) die("cannot load " + tm);
    auto l = marshal::engine::Library::open(ctx, *lr.typemap, err);
    if (!l) die(err);
    return l;
  };
  auto here_small = open_here(pinvoke), here_big = open_here(hostile);
  const marshal::engine::Plan* p_add = here_small->bind("add_i32", err);
  const marshal::engine::Plan* p_touch = here_big->bind("touch_inout_u8", err);
  if (!p_add || !p_touch) die(err);
  std::vector<marshal::engine::Value> big_args{marshal::engine::Value(marshal::engine::Bytes{payload}), marshal::engine::Value(std::uint64_t{n})};
  {
    marshal::engine::CallResult r;
    expect(p_add->call(std::vector<marshal::engine::Value>{1, 2}, r, err) && num(r.ret) == 3, "dynamic add_i32");
    add(SMALL, DYN, 1, [&](long k) {
      double t = 0;
      std::vector<marshal::engine::Value> args{0, 3};
      for (long i = 0; i < k; ++i) {
        args[0] = marshal::engine::Value(static_cast<int>(i % 65536));
        p_add->call(args, r, err);
        t += num(r.ret);
      }
      return t;
    });
    r.out.clear();
    expect(p_touch->call(big_args, r, err) && num(r.ret) == static_cast<double>(payload_sum) &&
               xored_ok(r.out.at(0).second.as<marshal::engine::Bytes>().data),
           "dynamic touch_inout_u8");
    add(BIG, DYN, mib, [&](long k) {
      double t = 0;
      for (long i = 0; i < k; ++i) {
        r.out.clear();
        p_touch->call(big_args, r, err);
        t += num(r.ret) + r.out[0].second.as<marshal::engine::Bytes>().data[static_cast<std::size_t>(i) % n];
      }
      return t;
    });
  }

  // ---- across the boundary: the surrogate, then serve/connect ----
  auto remote_rows = [&](const char* impl, const marshal::engine::remote::IsolateOptions& o) {
    marshal::engine::Context rctx;
    auto small = marshal::engine::remote::IsolatedLibrary::open_file(rctx, pinvoke, o, err);
    if (!small) die(std::string(impl) + ": " + err);
    auto big = marshal::engine::remote::IsolatedLibrary::open_file(rctx, hostile, o, err);
    if (!big) die(std::string(impl) + ": " + err);
    marshal::engine::CallResult r;
    auto call = [&](marshal::engine::remote::IsolatedLibrary& l, const char* fn, const std::vector<marshal::engine::Value>& args) {
      if (!l.call(fn, args, r, err)) die(std::string(impl) + ": " + err);
    };
    call(*small, "add_i32", {1, 2});
    expect(num(r.ret) == 3, std::string(impl) + " add_i32");
    add(SMALL, impl, round_trip, [&](long k) {
      double t = 0;
      std::vector<marshal::engine::Value> args{0, 3};
      for (long i = 0; i < k; ++i) {
        args[0] = marshal::engine::Value(static_cast<int>(i % 65536));
        call(*small, "add_i32", args);
        t += num(r.ret);
      }
      return t;
    });
    call(*big, "touch_inout_u8", big_args);
    expect(num(r.ret) == static_cast<double>(payload_sum) && !r.out.empty() &&
               xored_ok(r.out.at(0).second.as<marshal::engine::Bytes>().data),
           std::string(impl) + " touch_inout_u8");
    add(BIG, impl, mib, [&](long k) {
      double t = 0;
      for (long i = 0; i < k; ++i) {
        call(*big, "touch_inout_u8", big_args);
        t += num(r.ret) + r.out.at(0).second.as<marshal::engine::Bytes>().data[static_cast<std::size_t>(i) % n];
      }
      return t;
    });
  };
  if (wanted(SMALL, SURROGATE) || wanted(BIG, SURROGATE)) {
    marshal::engine::remote::IsolateOptions o;
    o.surrogate = surrogate;
    remote_rows(SURROGATE, o);
  }
  if (wanted(SMALL, SERVE) || wanted(BIG, SERVE)) {
    Server server(marshal_exe, {pinvoke, hostile});
    marshal::engine::remote::IsolateOptions c;
    c.connect = server.address;
    remote_rows(SERVE, c);
  }

  // ---- report (the format of bench-calls) ----
  if (json) {
    print_json(rows);
  } else {
    std::printf("%-18s %-34s %12s %20s %9s\n", "scenario", "implementation", "ns/call", "spread (min-max)", "x floor");
    for (const char* sc : {SMALL, BIG}) {
      double floor = 0;
      for (const Row& q : rows)
        if (q.scenario == sc && q.impl == FLOOR) floor = q.s.median;
      for (const Row& r : rows)
        if (r.scenario == sc)
          std::printf("%-18s %-34s %12.1f %9.1f-%-10.1f %9.2f\n", r.scenario.c_str(), r.impl.c_str(), r.s.median,
                      r.s.low, r.s.high, floor > 0 ? r.s.median / floor : 0.0);
    }
  }
  return failures == 0 ? 0 : 1;
}
