// marshal remote: host values on the wire.
// Converts the engine's dynamic Value (value.hpp) to and from the Cap'n Proto
// encoding of marshal_remote.capnp. What crosses: null, bools, integers,
// doubles, strings, bytes, lists, records, handles and native objects (as
// capabilities, through the HandleCodec of the side that converts), and host
// functions and host objects (capabilities called back). What never crosses:
// a raw address (it means nothing in the other process), a native callback
// already made here, and native memory boxes; each is refused with a message naming
// where the value stood ("parameter 1 'buf'", "out 'len'").
#pragma once

#include "remote/marshal_remote.capnp.h"
#include "values/value.hpp"

#include <capnp/message.h>
#include <capnp/serialize-async.h>
#include <kj/async-io.h>
#include <functional>
#include <string>

namespace marshal::engine::remote {

// Every reader of a remote message uses these limits, set explicitly rather
// than capnp's defaults (issue 17, "Robust decoding"): a message may not make
// the reader traverse more than 64 MiWords (512 MiB: two max_buffer values and
// their framing), and nesting may go as deep as max_value_depth values (a
// Value is a struct holding a list pointer: two levels each) plus the RPC
// envelope.
inline constexpr std::uint64_t traversal_limit_words = std::uint64_t{64} << 20;
inline constexpr int nesting_limit = 2 * static_cast<int>(max_value_depth) + 32;
capnp::ReaderOptions reader_options();

// The message stream every connection reads through (host, surrogate, serve):
// capnp's, except that each incoming message is read into a buffer kept for
// the next one (up to 2 idle buffers per connection, each up to 16 MiB, grown
// to the largest message seen), not into a fresh allocation per message. A 1
// MiB argument or result otherwise costs a fresh 1 MiB allocation per call,
// which glibc serves with mmap (or trims back) and the kernel faults in page
// by page: the remote layer's large-buffer cost (benchmarks/bench_remote).
// A larger message is read into its own allocation, as capnp does. Like
// capnp's plain AsyncIoMessageStream, it passes no file descriptors.
// on_message, if set, is called (on the stream's thread) each time a message
// or the end of the stream arrives: a server's evidence that its client lives.
kj::Own<capnp::MessageStream> reusing_message_stream(kj::AsyncIoStream& stream,
                                                     std::function<void()> on_message = {});

// An address or a handle's value in hexadecimal (0x...), for messages.
std::string hex(std::uint64_t a);

// How handles cross: each side supplies its own codec (the surrogate exports
// capabilities, the host imports them). Without one, a handle is refused.
class HandleCodec {
 public:
  virtual ~HandleCodec() = default;
  virtual bool to_wire(const std::shared_ptr<HandleBox>& box, wire::HandleRef::Builder b, const std::string& where,
                       std::string& error) = 0;
  // out is set to a placeholder or the final value; false with a message.
  virtual bool to_host(wire::HandleRef::Reader r, Value& out, const std::string& where, std::string& error) = 0;
  // Objects (issue 17, part 3) the same way: the serving side exports one
  // capability per object identity, the host imports them as proxies
  // (remote/objects.hpp). A codec without them refuses objects.
  virtual bool object_to_wire(const ObjectRef& ref, wire::RemoteRef::Builder b, const std::string& where,
                              std::string& error);
  virtual bool object_to_host(wire::RemoteRef::Reader r, Value& out, const std::string& where, std::string& error);
  // Host functions (issue 17, part 4): the sending side exports one
  // capability per host function, the receiving side makes a host function
  // that calls it back over the connection. A codec without them refuses.
  virtual bool function_to_wire(const std::shared_ptr<HostFunction>& fn, wire::FunctionRef::Builder b,
                                const std::string& where, std::string& error);
  virtual bool function_to_host(wire::FunctionRef::Reader r, Value& out, const std::string& where, std::string& error);
  // Host objects (issue 17, part 4) the same way, their methods as host functions.
  virtual bool host_object_to_wire(const std::shared_ptr<HostObject>& obj, wire::HostObjectRef::Builder b,
                                   const std::string& where, std::string& error);
  virtual bool host_object_to_host(wire::HostObjectRef::Reader r, Value& out, const std::string& where,
                                   std::string& error);
  // Registered callbacks: made on the serving side (Library.callback), held by
  // the host as a stand-in (Callback::stand_in) whose capability goes back.
  virtual bool callback_to_wire(const std::shared_ptr<Callback>& cb, wire::CallbackRef::Builder b,
                                const std::string& where, std::string& error);
  virtual bool callback_to_host(wire::CallbackRef::Reader r, Value& out, const std::string& where, std::string& error);
};

// Host value -> wire. `where` names the value in messages.
bool to_wire(const Value& v, wire::Value::Builder b, const std::string& where, HandleCodec* handles,
             std::string& error);
// The same, except that bytes of reference_bytes_from or more (word-aligned,
// a whole number of words) are referenced by the message instead of copied
// into it (capnp's referenceExternalData: written straight from v's memory):
// v must outlive the message's write.
inline constexpr std::size_t reference_bytes_from = 4096;
bool to_wire_referencing(const Value& v, wire::Value::Builder b, const std::string& where, HandleCodec* handles,
                         std::string& error);
// Wire -> host value; nesting beyond max_value_depth is an error.
bool to_host(wire::Value::Reader r, Value& out, const std::string& where, HandleCodec* handles, std::string& error);

}  // namespace marshal::engine::remote
