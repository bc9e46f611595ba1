// marshal remote: the direct channel, the host's side (direct.hpp).
// The messages are framed as Cap'n Proto's standard stream serialization
// (capnp/serialize.h): a table of segment sizes, then the segments, so the
// surrogate reads them with capnp::tryReadMessage. The table is written and
// read here because the socket is non-blocking (every wait is bounded by the
// call's deadline), which capnp's blocking fd helpers are not.
#include "remote/direct.hpp"

#include "remote/wire.hpp"

#include <cerrno>
#include <climits>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <set>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace marshal::engine::remote {

namespace {

bool plain_type(const TypeRegistry& types, TypeId id, std::set<TypeId>& seen) {
  if (id == no_type || !seen.insert(id).second) return true;  // a type already being looked at
  const TypeDesc& d = types.get(id);
  switch (d.kind) {
    case Kind::void_:
    case Kind::integer:
    case Kind::floating:
    case Kind::boolean:
    case Kind::enum_:
    case Kind::string:
      return true;
    case Kind::ptr:
    case Kind::array:
      return plain_type(types, d.ref, seen);
    case Kind::struct_:
    case Kind::union_:
      for (const Field& f : d.as<RecordInfo>().fields)
        if (!plain_type(types, f.type, seen)) return false;
      return true;
    case Kind::pointer:    // a raw address: refused across, by RPC's messages
    case Kind::handle:     // capabilities
    case Kind::callback:
    case Kind::interface:
      return false;
  }
  return false;
}

}  // namespace

bool plain_data(const TypeRegistry& types, const Signature& fn) {
  std::set<TypeId> seen;
  if (!plain_type(types, fn.returns, seen)) return false;
  for (const Param& p : fn.params)
    if (!plain_type(types, p.type, seen)) return false;
  return true;
}

DirectChannel::DirectChannel(int fd, int generation, int pidfd)
    : fd_(fd), generation_(generation), pidfd_(fcntl(pidfd, F_DUPFD_CLOEXEC, 0)) {
  fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
}

DirectChannel::~DirectChannel() {
  close(fd_);
  if (pidfd_ >= 0) close(pidfd_);
}

bool DirectChannel::surrogate_runs() const {
  if (pidfd_ < 0) return false;
  pollfd p{pidfd_, POLLIN, 0};
  return poll(&p, 1, 0) == 0;  // readable once it has ended
}

bool DirectChannel::wait(short events, std::optional<std::chrono::steady_clock::time_point> deadline, bool& timed_out,
                         std::string& error) {
  for (;;) {
    int ms = -1;
    if (deadline) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        timed_out = true;
        return false;
      }
      ms = left.count() > INT_MAX ? INT_MAX : static_cast<int>(left.count());
    }
    pollfd p{fd_, events, 0};
    const int n = poll(&p, 1, ms);
    if (n > 0) return true;  // ready, or an error or hang-up the next read or write reports
    if (n < 0 && errno != EINTR) {
      error = std::string("poll: ") + std::strerror(errno);
      return false;
    }
  }
}

DirectChannel::Status DirectChannel::read_exact(void* into, std::size_t n,
                                                std::optional<std::chrono::steady_clock::time_point> deadline,
                                                std::string& error) {
  auto* p = static_cast<char*>(into);
  while (n > 0) {
    const ssize_t got = ::read(fd_, p, n);
    if (got > 0) {
      p += got;
      n -= static_cast<std::size_t>(got);
      continue;
    }
    if (got == 0) {
      error = "the surrogate's end of the channel closed";
      return Status::ended;
    }
    if (Status s = retry("read", POLLIN, deadline, error); s != Status::ok) return s;
  }
  return Status::ok;
}

DirectChannel::Status DirectChannel::retry(const char* op, short events,
                                           std::optional<std::chrono::steady_clock::time_point> deadline,
                                           std::string& error) {
  if (errno == EINTR) return Status::ok;
  if (errno != EAGAIN && errno != EWOULDBLOCK) {
    error = std::string(op) + ": " + std::strerror(errno);
    return Status::ended;
  }
  bool timed_out = false;
  if (!wait(events, deadline, timed_out, error)) return timed_out ? Status::timed_out : Status::ended;
  return Status::ok;
}

DirectChannel::Status DirectChannel::exchange(capnp::MessageBuilder& request,
                                              std::optional<std::chrono::steady_clock::time_point> deadline,
                                              std::optional<capnp::SegmentArrayMessageReader>& reply,
                                              std::string& error) {
  reply.reset();
  // ---- write: the segment table, then the segments ----
  auto segments = request.getSegmentsForOutput();
  auto& table = table_;  // (reused: no allocation per call once grown)
  table.assign(segments.size() + 1 + (segments.size() % 2 == 0 ? 1 : 0), 0);
  table[0] = static_cast<std::uint32_t>(segments.size() - 1);
  for (std::size_t i = 0; i < segments.size(); ++i) table[i + 1] = static_cast<std::uint32_t>(segments[i].size());
  auto& iov = iov_;
  iov.clear();
  iov.push_back({table.data(), table.size() * sizeof(std::uint32_t)});
  for (auto s : segments) iov.push_back({const_cast<capnp::word*>(s.begin()), s.size() * sizeof(capnp::word)});
  std::size_t first = 0;
  while (first < iov.size()) {
    const int count = static_cast<int>(std::min<std::size_t>(iov.size() - first, IOV_MAX));
    msghdr m{};
    m.msg_iov = iov.data() + first;
    m.msg_iovlen = static_cast<std::size_t>(count);
    const ssize_t put = ::sendmsg(fd_, &m, MSG_NOSIGNAL);
    if (put < 0) {
      if (Status s = retry("write", POLLOUT, deadline, error); s != Status::ok) return s;
      continue;
    }
    auto left = static_cast<std::size_t>(put);
    while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (left > 0) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }

  // ---- read the answer: the table, then the segments ----
  std::uint32_t head[2];
  if (Status s = read_exact(head, sizeof head, deadline, error); s != Status::ok) return s;
  const std::uint64_t count = std::uint64_t{head[0]} + 1;
  if (count > 512) {  // capnp's own bound on a stream message's segments
    error = "the reply has " + std::to_string(count) + " segments";
    return Status::ended;
  }
  auto& sizes = sizes_;
  sizes.assign(static_cast<std::size_t>(count), 0);
  sizes[0] = head[1];
  // The rest of the table and its padding to a word: (count - 1) sizes, plus
  // one when count is even.
  const std::size_t more = static_cast<std::size_t>(count - 1) + (count % 2 == 0 ? 1 : 0);
  auto& rest = rest_;
  rest.assign(more, 0);
  if (more > 0)
    if (Status s = read_exact(rest.data(), more * sizeof(std::uint32_t), deadline, error); s != Status::ok) return s;
  std::uint64_t total = sizes[0];
  for (std::uint64_t i = 1; i < count; ++i) total += (sizes[i] = rest[i - 1]);
  if (total > traversal_limit_words) {
    error = "the reply is " + std::to_string(total) + " words, over the limit of " + std::to_string(traversal_limit_words);
    return Status::ended;
  }
  if (buffer_words_ < total) {  // grown to the largest reply (its contents are not kept)
    buffer_.reset(new capnp::word[static_cast<std::size_t>(total)]);
    buffer_words_ = static_cast<std::size_t>(total);
  }
  if (total > 0)
    if (Status s = read_exact(buffer_.get(), static_cast<std::size_t>(total) * sizeof(capnp::word), deadline, error);
        s != Status::ok)
      return s;
  segments_.clear();
  std::size_t at = 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    segments_.push_back(kj::arrayPtr(buffer_.get() + at, sizes[i]));
    at += sizes[i];
  }
  reply.emplace(kj::arrayPtr(segments_.data(), segments_.size()), reader_options());
  return Status::ok;
}

}  // namespace marshal::engine::remote
