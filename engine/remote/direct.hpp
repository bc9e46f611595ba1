// marshal remote: the direct channel, the host's side (private to engine/remote).
// A surrogate gets a second socket (fd 5 there) beside its Cap'n Proto RPC
// connection. A call whose values are all plain data (no handle, object,
// callback or raw address in any parameter or result: nothing on either side
// needs a capability) goes over it as one plain Cap'n Proto message (a
// Library.call's params) written by the calling thread itself, which then
// reads the one message that answers it (the call's Outcome). Through RPC the
// same call takes two more thread hops (caller -> the host's I/O thread ->
// surrogate -> I/O thread -> caller): the direct channel is the raw
// ping-pong's shape (issue 17: a surrogate add_i32 within 3x of it). The
// surrogate serves it on its I/O thread exactly as Library.call
// (serve_surrogate.cpp, serve_direct). One call at a time holds the channel;
// a caller that finds it busy, and every call that is not plain data, goes
// through RPC as before.
#pragma once

#include "types/registry.hpp"
#include "types/typemap.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <sys/uio.h>
#include <vector>

namespace marshal::engine::remote {

// Whether every parameter and the result of fn is plain data (recursively
// through pointers, arrays and records): integers, floats, bools, enums,
// strings. Handles, objects, callbacks and raw addresses are not.
bool plain_data(const TypeRegistry& types, const Signature& fn);

class DirectChannel {
 public:
  // Takes fd (the host's end), made non-blocking; surrogate number
  // `generation`, whose pidfd (kept as a duplicate) says whether it still runs.
  DirectChannel(int fd, int generation, int pidfd);
  ~DirectChannel();  // closes it: the surrogate's side sees its end
  DirectChannel(const DirectChannel&) = delete;
  DirectChannel& operator=(const DirectChannel&) = delete;

  int generation() const { return generation_; }
  // Whether the surrogate still runs (one that ended between calls is
  // replaced, through RPC, before the next call is sent).
  bool surrogate_runs() const;
  // Held by the one call using the channel (try_lock: busy means RPC).
  std::mutex& in_use() { return in_use_; }
  // Set once an exchange failed: no call uses the channel again.
  std::atomic<bool> broken{false};

  enum class Status { ok, ended, timed_out };
  // Writes `request`, then reads the one message that answers it into
  // `reply` (its words live in this channel until the next exchange). Waits
  // until `deadline` at most (nullopt: no bound). `ended`: the surrogate's
  // side closed or failed (error says what the socket said).
  Status exchange(capnp::MessageBuilder& request, std::optional<std::chrono::steady_clock::time_point> deadline,
                  std::optional<capnp::SegmentArrayMessageReader>& reply, std::string& error);

  // A zeroed first segment for the request's builder, reused call after call
  // (capnp zeroes what it used when the builder goes).
  kj::ArrayPtr<capnp::word> scratch() { return kj::arrayPtr(scratch_.get(), scratch_words); }

 private:
  bool wait(short events, std::optional<std::chrono::steady_clock::time_point> deadline, bool& timed_out,
            std::string& error);
  Status read_exact(void* into, std::size_t n, std::optional<std::chrono::steady_clock::time_point> deadline,
                    std::string& error);
  // After a read or write `op` that failed with errno: ok to try again
  // (interrupted, or ready for `events` within the deadline), else why not.
  Status retry(const char* op, short events, std::optional<std::chrono::steady_clock::time_point> deadline,
               std::string& error);

  int fd_;
  int generation_;
  int pidfd_;
  std::mutex in_use_;
  // (capnp::word cannot be copied, so no std::vector of them: clang refuses
  // its reallocation path.)
  static constexpr std::size_t scratch_words = 1024;
  std::unique_ptr<capnp::word[]> scratch_{new capnp::word[scratch_words]()};  // zeroed
  std::unique_ptr<capnp::word[]> buffer_;  // the last reply's words
  std::size_t buffer_words_ = 0;
  std::vector<kj::ArrayPtr<const capnp::word>> segments_;
  std::vector<std::uint32_t> table_, sizes_, rest_;  // framing, reused call after call
  std::vector<iovec> iov_;
};

}  // namespace marshal::engine::remote
