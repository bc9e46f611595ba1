// marshal remote: a typemap's library in a surrogate process.
// The host spawns `marshal-surrogate` with a socketpair on fd 3 and a crash
// pipe on fd 4; the two speak Cap'n Proto RPC (marshal_remote.capnp) on one
// I/O thread per library on the host side. A call crosses as the function's
// name and its host values; the surrogate runs the ordinary in-process call
// (Library::bind, Plan::call) and sends back the return value, the out values
// and errno, so results are those of an in-process call. Calls stay
// synchronous for the caller.
//
// Crash policy: a surrogate that dies during a call (SIGSEGV, SIGBUS, SIGFPE,
// SIGILL, SIGABRT) turns that call into an error naming the function, the pid,
// the signal and the faulting address (the data address of SIGSEGV and SIGBUS,
// the instruction of SIGFPE and SIGILL, from the crash record); the host keeps
// running and the next call starts a fresh surrogate. The caller's thread gets
// the structured record (base/error.hpp): id native_crash, the function, the
// signal number as native code; a deadline's kill is deadline_exceeded (native
// code SIGKILL); a surrogate that exits, or a server connection that ends,
// during a call is disconnected. A failure on the serving side (a conversion,
// a check) crosses with its record, as in-process. Handles that came from
// the dead surrogate are refused with a message saying so, and so are objects. A deadline
// (per library or per call) kills a surrogate whose call outlasts it.
// Host functions and host objects passed to the library stay in the host and
// are called back over the connection (host_functions.hpp: on the thread
// waiting for the call, a dispatcher thread or the owner's STA); object
// references received belong to the receiving thread's apartment.
// kj ignores SIGPIPE process-wide once a surrogate has been started.
#pragma once

#include "typemap/context.hpp"
#include "values/call_values.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace marshal::engine {
class ObjectSpace;
}

namespace marshal::engine::remote {

// Mutual TLS between `marshal serve` and its clients (kj-tls), from PEM files:
// all of cert, key and ca, or none. Without them only loopback addresses may be
// served or connected to; with them any address, and each side must present a
// certificate signed by a CA the other trusts (TLS 1.2 or later).
struct TlsFiles {
  std::string cert;  // this side's certificate (or a chain starting with it)
  std::string key;   // its private key, unencrypted
  std::string ca;    // the CA certificates the peer's certificate must chain to
  // A client's only: the name the server's certificate must carry (a DNS name
  // of its subjectAltName, or its common name); empty: the host of the address.
  // An IP address is compared as a DNS name, so a server known by its address
  // needs `name` set to a DNS name of its certificate.
  std::string name;
  bool any() const { return !cert.empty() || !key.empty() || !ca.empty() || !name.empty(); }
};

// What a partial TlsFiles lacks, as the caller names its parts ("--tls-key and
// --tls-ca"); "" when it has all three or none (`name` alone counts as partial).
std::string tls_missing(const TlsFiles& tls, const char* cert_name, const char* key_name, const char* ca_name);

struct IsolateOptions {
  // The surrogate program; empty: $MARSHAL_SURROGATE, else `marshal-surrogate`
  // next to this program, else the installed one.
  std::string surrogate;
  // A call that takes longer is killed with its surrogate and is an error.
  // Zero: the typemap's library "deadline_ms", else no deadline.
  std::chrono::milliseconds deadline{0};
  // "HOST:PORT" of a `marshal serve` to use instead of a surrogate process
  // (loopback only, unless `tls` is set). The server must serve the same
  // typemap text. Its crashes are not reported as a surrogate's; a deadline
  // closes the connection.
  std::string connect;
  // With connect: mutual TLS (the server's CA in tls.ca). A refused handshake
  // is an error (id disconnected) whose message says "TLS handshake".
  TlsFiles tls;
};

// Whether an address names this machine only (127.0.0.0/8, ::1, localhost);
// serve and connect refuse anything else without TLS, with a message saying why.
bool is_loopback(const std::string& address);

// Whether a typemap asks for its library in a surrogate ("isolate": "process").
bool wants_isolation(const Typemap& tm);

class IsolatedLibrary {
 public:
  // Loads the typemap into ctx (for parameter names, and so the host never
  // opens the library itself) and starts a surrogate that loads it too.
  // nullptr with the first error (a typemap error, a surrogate that cannot
  // start or cannot open the library).
  static std::unique_ptr<IsolatedLibrary> open_file(Context& ctx, const std::string& path,
                                                    const IsolateOptions& options, std::string& error);
  static std::unique_ptr<IsolatedLibrary> open_text(Context& ctx, std::string text, std::string file,
                                                    const IsolateOptions& options, std::string& error);
  ~IsolatedLibrary();
  IsolatedLibrary(const IsolatedLibrary&) = delete;
  IsolatedLibrary& operator=(const IsolatedLibrary&) = delete;

  // The in-process call's arguments and results (Plan::call). `deadline`
  // overrides the library's for this call (zero: the library's). Thread-safe.
  // Computed parameters may be given too (call/arguments.hpp: checked here,
  // before anything is sent).
  bool call(const std::string& function, std::span<const Value> args, CallResult& result, std::string& error,
            std::chrono::milliseconds deadline = std::chrono::milliseconds{0});
  // The same with the arguments by address (the C API, the Lua host).
  bool call_addressed(const std::string& function, std::span<const Value* const> args, CallResult& result, std::string& error,
            std::chrono::milliseconds deadline = std::chrono::milliseconds{0});

  // A registered callback (scope "registered") of signature `sig` calling fn:
  // made in the surrogate, where native code keeps its pointer, and called
  // back over the connection as a host function of scope "call" is (its
  // signature's delivery honoured; owner: this thread). The host's callback is
  // a stand-in (Callback::is_stand_in): pass it to this library's calls;
  // release() releases the surrogate's (a late call there reaches its trap).
  // One made in a surrogate that has ended is refused by the next one: make it
  // again. nullptr with the error (an unknown signature, a failed surrogate).
  std::shared_ptr<Callback> callback(const std::string& sig, std::shared_ptr<HostFunction> fn, std::string& error);

  const Typemap& typemap() const;
  // Its objects as the host sees them (issue 17, part 3): an object a call
  // returns (or gives as an out value) lives in the surrogate and arrives as
  // a reference whose calls and queries go there (library_of(ref).objects(),
  // this); create(class) makes one there. A proxy passed back to this
  // library becomes the original object; one of another library or process
  // is refused, and so is one whose surrogate has ended.
  ObjectSpace& objects() const;
  // The context the typemap was loaded into (its types).
  Context& context() const;
  // The current surrogate's process id; 0 when none runs (before the first
  // call after a crash).
  int pid() const;
  // Surrogates started so far (1 after open; one more after each crash).
  int generation() const;
  // Calls that went over the direct channel (surrogate.cpp: plain data, no
  // host function or object sent yet, no release on its way) rather than
  // Cap'n Proto RPC: for tests and benchmarks.
  std::uint64_t direct_calls() const;

  struct Impl;
 private:
  explicit IsolatedLibrary(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The surrogate's side: serves one host on the socket `sock` until it
// disconnects, reporting a native crash on `crash_fd`; `direct_fd` (or -1) is
// the direct channel, where calls of plain data come as one message each
// (surrogate.cpp, "the direct channel"). The main of marshal-surrogate;
// returns its exit status.
int run_surrogate(int sock, int crash_fd, int direct_fd = -1);

// `marshal serve`: serves the typemaps (path, text) on `listen` ("HOST:PORT",
// loopback only unless `tls` is set: then any address, and every client must
// present a certificate signed by a CA of tls.ca before any of its messages is
// read) until killed; a client may open only a typemap whose text is one of
// these (an allowlist: nothing by address or by file name). Each client gets
// its own library objects; its handles are released when it disconnects.
// Heartbeat (zero: none): a client that sends nothing for that long (clients
// ping at a third of it; the server tells them when they open a library) has
// its session ended and its references released; TCP keepalive with the same
// timeout ends connections to a host that stopped answering. A native call
// that runs longer than the heartbeat delays every check (the event loop is
// busy), and silence during it is excused.
// `on_listening` gets the bound port (for port 0); `on_refused`, if set, why a
// client was refused (its address and the TLS reason) or its session ended.
// Returns an exit status; `error` says why it could not serve.
int serve(const std::vector<std::pair<std::string, std::string>>& typemaps, const std::string& listen,
          const TlsFiles& tls, std::chrono::milliseconds heartbeat, const std::function<void(unsigned port)>& on_listening,
          const std::function<void(const std::string&)>& on_refused, std::string& error);

// What the surrogate's crash handler writes to the crash pipe (one write,
// under PIPE_BUF, so it arrives whole).
struct CrashRecord {
  int signo = 0;
  int code = 0;
  std::uint64_t address = 0;
  char function[200] = {};
};

}  // namespace marshal::engine::remote
