// marshal fuzz target: the remote layer's decoder (engine/remote/wire.cpp).
// The input is the byte stream a surrogate or a host reads from its peer:
// Cap'n Proto messages in the standard framing (segment table, segments),
// read through the connection's message stream (reusing_message_stream: its
// receive buffers are reused from message to message) with the remote
// layer's reader limits (reader_options), each decoded into engine values by
// to_host as a call's arguments (Library.call's parameters: what a surrogate
// decodes) and as a call's outcome (what a host decodes).
// Malformed framing, pointers out of bounds, nesting and traversal past the
// limits and unknown union tags must be errors: a kj exception from capnp
// (the connection is closed) or false with a message from to_host. A crash, a
// sanitizer report, a failure without a message, a decoded value that does
// not encode again or comes back different (to_wire, then to_host), or a
// message that changes while a later one is read (a reused buffer handed out
// twice) is a finding.
#include "remote/wire.hpp"
#include "fuzz_support.hpp"

#include <capnp/message.h>
#include <kj/async-io.h>
#include <kj/async.h>

#include <cstring>
#include <string>
#include <vector>

using namespace marshal;
using namespace marshal::engine;

namespace {

// Handles cross as capabilities; a message read here has no capability table,
// so a handle decodes to null after its fields are read (the surrogate's and
// host's codecs are tested with live connections in tests/unit-remote.cpp).
class NoCapabilities final : public remote::HandleCodec {
 public:
  bool to_wire(const std::shared_ptr<HandleBox>&, remote::wire::HandleRef::Builder, const std::string& where,
               std::string& error) override {
    error = where + ": no handles here";
    return false;
  }
  bool to_host(remote::wire::HandleRef::Reader r, Value& out, const std::string&, std::string&) override {
    auto name = r.getTypeName();
    (void)std::string(name.begin(), name.size());
    (void)r.getValue();
    out = Value();
    return true;
  }
};

// One wire value: decoded, or refused with a message; what decodes must
// encode again and come back the same.
void check(remote::wire::Value::Reader r, const std::string& where, std::vector<Value>& decoded) {
  NoCapabilities codec;
  Value v;
  std::string error;
  try {
    if (!remote::to_host(r, v, where, &codec, error)) {
      if (error.empty()) fuzz::finding("to_host failed without a message", where);
      return;
    }
  } catch (const kj::Exception&) {
    return;  // capnp refused the message (bounds, limits): the connection closes
  }
  capnp::MallocMessageBuilder again;
  auto root = again.initRoot<remote::wire::Value>();
  std::string e2;
  if (!remote::to_wire(v, root, where, &codec, e2)) fuzz::finding("a decoded value does not encode again", e2);
  Value back;
  if (!remote::to_host(root.asReader(), back, where, &codec, e2))
    fuzz::finding("an encoded value does not decode again", e2);
  if (!fuzz::same(v, back)) fuzz::finding("to_host(to_wire(v)) differs from v", where);
  decoded.push_back(std::move(v));
}

// Everything one message decodes to, as the surrogate and as the host.
std::vector<Value> decode(capnp::MessageReader& m) {
  std::vector<Value> out;
  try {
    auto p = m.getRoot<remote::wire::Library::CallParams>();
    auto fn = p.getFunction();
    out.emplace_back(std::string(fn.begin(), fn.size()));
    auto args = p.getArgs();
    for (unsigned i = 0; i < args.size(); ++i) check(args[i], "argument " + std::to_string(i), out);
  } catch (const kj::Exception&) {
  }
  try {
    auto o = m.getRoot<remote::wire::Outcome>();
    if (o.isOk()) {
      auto done = o.getOk();
      check(done.getRet(), "the return value", out);
      auto fields = done.getOut();
      for (unsigned i = 0; i < fields.size(); ++i) {
        auto name = fields[i].getName();
        out.emplace_back(std::string(name.begin(), name.size()));
        check(fields[i].getValue(), "out parameter " + std::to_string(i), out);
      }
      out.emplace_back(static_cast<std::int64_t>(done.getErrno()));
    } else if (o.isError()) {
      auto text = o.getError();
      out.emplace_back(std::string(text.begin(), text.size()));
    }
    if (o.hasRecord()) {
      auto r = o.getRecord();
      for (auto t : {r.getId(), r.getFunction(), r.getParamName(), r.getGot(), r.getExpected()})
        out.emplace_back(std::string(t.begin(), t.size()));
      out.emplace_back(static_cast<std::int64_t>(r.getNativeCode()));
    }
  } catch (const kj::Exception&) {
  }
  return out;
}

// A message's words, segment by segment. The previous message is compared
// word for word, not decoded again: each message has its own traversal
// budget (wire.cpp, message_traversal_limit), which a second decode of a
// message built to revisit shared subtrees may exhaust where the first did not.
std::vector<std::string> words_of(capnp::MessageReader& m) {
  std::vector<std::string> out;
  for (unsigned i = 0; i < 512; ++i) {
    auto segment = m.getSegment(i);
    if (segment.begin() == nullptr) break;
    auto bytes = segment.asBytes();
    out.emplace_back(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > fuzz::max_input) return 0;
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  auto pipe = kj::newTwoWayPipe();
  auto messages = remote::reusing_message_stream(*pipe.ends[1]);
  auto* writer = pipe.ends[0].get();
  auto written = writer->write(data, size).then([writer] { writer->shutdownWrite(); }).eagerlyEvaluate(nullptr);
  // The previous message stays alive while the next is read (as capnp's RPC
  // keeps a call's parameters): it must not change.
  kj::Own<capnp::MessageReader> previous;
  std::vector<std::string> previous_words;
  for (int n = 0; n < 16; ++n) {
    kj::Maybe<kj::Own<capnp::MessageReader>> next;
    try {
      next = messages->tryReadMessage(remote::reader_options()).wait(ws);
    } catch (const kj::Exception&) {
      break;  // malformed or truncated framing: the connection closes
    }
    KJ_IF_MAYBE(m, next) {
      if (previous && words_of(*previous) != previous_words)
        fuzz::finding("a message changed while the next one was read", "message " + std::to_string(n - 1));
      auto words = words_of(**m);
      (void)decode(**m);
      if (words_of(**m) != words) fuzz::finding("decoding changed the message", "message " + std::to_string(n));
      previous = kj::mv(*m);
      previous_words = std::move(words);
    } else {
      break;  // the end of the stream
    }
  }
  return 0;
}
