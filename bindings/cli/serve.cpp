// marshal command line: `marshal serve TYPEMAP... --listen HOST:PORT
// [--tls-cert FILE --tls-key FILE --tls-client-ca FILE] [--heartbeat-ms MS]`.
// Serves the typemaps' libraries to `marshal call --connect HOST:PORT` over
// Cap'n Proto RPC (engine/remote). Without the TLS options loopback only: any
// other address is refused with a message; with them any address, and every
// client must present a certificate signed by the client CA. Prints
// "listening on HOST:PORT" (the bound port, for :0) on stdout once it accepts
// connections, and each refused client on stderr.
#include "commands.hpp"

#include "remote/surrogate.hpp"

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <malloc.h>
#include <sstream>

namespace marshal::cli {
using namespace marshal::engine;

int cmd_serve(const Args& args) {
  if (wants_help(args)) {
    std::printf(
        "usage: marshal serve TYPEMAP... --listen HOST:PORT\n"
        "                     [--tls-cert FILE --tls-key FILE --tls-client-ca FILE]\n"
        "                     [--heartbeat-ms MS]\n"
        "\n"
        "Runs the libraries of the TYPEMAPs for clients that connect with\n"
        "`marshal call --connect HOST:PORT TYPEMAP FUNCTION ...`. A client may open\n"
        "only these typemaps (the same text), nothing else. Each client's handles are\n"
        "released when it disconnects. Port 0 picks a free port; the line\n"
        "\"listening on HOST:PORT\" says which. Runs until killed.\n"
        "\n"
        "Without TLS options HOST must be a loopback address (127.0.0.1, [::1],\n"
        "localhost). With all three, mutual TLS (1.2 or later) on any address: every\n"
        "client must present a certificate signed by the client CA before any of its\n"
        "messages is read (a refused client is one line on stderr).\n"
        "--tls-cert FILE       this server's certificate (PEM; a chain starting with it)\n"
        "--tls-key FILE        its private key (PEM, unencrypted)\n"
        "--tls-client-ca FILE  the CA certificate(s) (PEM) clients' certificates must\n"
        "                      be signed by; the system's trust store is not used\n"
        "Clients connect with marshal call --connect HOST:PORT --tls-cert FILE\n"
        "--tls-key FILE --tls-ca FILE (the CA of this server's certificate).\n"
        "\n"
        "--heartbeat-ms MS     a client that sends nothing for MS milliseconds (its\n"
        "                      library pings at a third of it) is disconnected and\n"
        "                      its references released; TCP keepalive ends a\n"
        "                      connection to a host that stops answering within\n"
        "                      about MS too (default 10000; 0: neither)\n");
    return 0;
  }
  std::vector<std::string> paths;
  std::string listen;
  remote::TlsFiles tls;
  long heartbeat_ms = 10000;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string* file = args[i] == "--tls-cert"        ? &tls.cert
                        : args[i] == "--tls-key"       ? &tls.key
                        : args[i] == "--tls-client-ca" ? &tls.ca
                                                       : nullptr;
    if (args[i] == "--listen") {
      if (i + 1 >= args.size()) {
        std::fprintf(stderr, "marshal serve: --listen expects HOST:PORT\n");
        return 2;
      }
      listen = args[++i];
    } else if (args[i] == "--heartbeat-ms") {
      char* end = nullptr;
      errno = 0;
      heartbeat_ms = i + 1 < args.size() ? std::strtol(args[i + 1].c_str(), &end, 10) : -1;
      if (i + 1 >= args.size() || args[i + 1].empty() || *end || errno || heartbeat_ms < 0 || heartbeat_ms > 86400000 ||
          (heartbeat_ms > 0 && heartbeat_ms < 100)) {
        std::fprintf(stderr, "marshal serve: --heartbeat-ms expects milliseconds: 0 (none) or 100 to 86400000\n");
        return 2;
      }
      ++i;
    } else if (file) {
      if (i + 1 >= args.size() || args[i + 1].empty()) {
        std::fprintf(stderr, "marshal serve: %s expects a PEM file\n", args[i].c_str());
        return 2;
      }
      *file = args[++i];
    } else if (args[i].rfind("--", 0) == 0) {
      std::fprintf(stderr, "marshal serve: unknown option '%s' (see marshal serve --help)\n", args[i].c_str());
      return 2;
    } else {
      paths.push_back(args[i]);
    }
  }
  if (paths.empty() || listen.empty()) {
    std::fprintf(stderr, "marshal serve: expected TYPEMAP... --listen HOST:PORT (see marshal serve --help)\n");
    return 2;
  }
  if (const std::string missing = remote::tls_missing(tls, "--tls-cert", "--tls-key", "--tls-client-ca");
      !missing.empty()) {
    std::fprintf(stderr,
                 "marshal serve: mutual TLS needs --tls-cert, --tls-key and --tls-client-ca together: %s %s missing\n",
                 missing.c_str(), missing.find(" and ") == std::string::npos ? "is" : "are");
    return 2;
  }
  if (!tls.any() && !remote::is_loopback(listen)) {
    std::fprintf(stderr,
                 "marshal serve: refusing to listen on %s: without mutual TLS (--tls-cert, --tls-key, "
                 "--tls-client-ca) only a loopback address (127.0.0.1:PORT, [::1]:PORT, localhost:PORT) may be "
                 "served, so that no other machine can call the libraries\n",
                 listen.c_str());
    return 1;
  }
  // Each typemap must load here as it will for clients.
  std::vector<std::pair<std::string, std::string>> typemaps;
  for (const std::string& path : paths) {
    Context ctx;
    if (!load_or_report(ctx, path, false)) return 1;
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    typemaps.emplace_back(path, s.str());
  }
  // This process only serves: large arguments and results are allocated and
  // freed on every call, so its malloc keeps blocks up to 32 MiB in the heap
  // and keeps freed memory for the next call, instead of a fresh mmap (or a
  // trim) that the kernel faults in page by page each time. As in
  // marshal-surrogate (surrogate_main.cpp); never in libmarshal, which must
  // not change a host's malloc policy.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  const std::string host = listen.substr(0, listen.rfind(':'));
  std::string error;
  int status = remote::serve(
      typemaps, listen, tls, std::chrono::milliseconds(heartbeat_ms),
      [&](unsigned port) {
        std::printf("listening on %s:%u\n", host.c_str(), port);
        std::fflush(stdout);
      },
      [](const std::string& why) { std::fprintf(stderr, "marshal serve: %s\n", why.c_str()); }, error);
  if (status != 0) std::fprintf(stderr, "marshal serve: %s\n", error.c_str());
  return status;
}

}  // namespace marshal::cli
