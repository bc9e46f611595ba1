// marshal remote: host values on the wire (see wire.hpp).
#include "remote/wire.hpp"

#include "callbacks/callback.hpp"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <vector>

namespace marshal::engine::remote {

capnp::ReaderOptions reader_options() {
  capnp::ReaderOptions o;
  o.traversalLimitInWords = traversal_limit_words;
  o.nestingLimit = nesting_limit;
  return o;
}

namespace {

// ---- reusable receive buffers (see reusing_message_stream) ----

struct ScratchPool {
  static constexpr std::size_t min_words = 1024;                                      // 8 KiB
  static constexpr std::size_t max_words = (std::size_t{16} << 20) / sizeof(capnp::word);  // 16 MiB
  static constexpr std::size_t max_idle = 2;
  std::vector<kj::Array<capnp::word>> idle;
  std::size_t want = min_words;  // the size of the next new buffer

  kj::Array<capnp::word> take() {
    while (!idle.empty()) {
      auto b = kj::mv(idle.back());
      idle.pop_back();
      if (b.size() >= want) return b;
    }
    return kj::heapArray<capnp::word>(want);
  }
  void give_back(kj::Array<capnp::word> b) {
    if (b.size() >= want && idle.size() < max_idle) idle.push_back(kj::mv(b));
  }
  // A message of `words` arrived: later buffers hold one as large (with an
  // eighth more), up to max_words.
  void saw(std::size_t words) {
    if (words > want && words <= max_words) want = std::min(max_words, words + words / 8);
  }
};

// A buffer a message was read into: back to its pool when the message goes
// (the pool outlives the connection if a message does).
struct Lease {
  std::shared_ptr<ScratchPool> pool;
  kj::Array<capnp::word> buffer;
  Lease(std::shared_ptr<ScratchPool> p, kj::Array<capnp::word> b) : pool(std::move(p)), buffer(kj::mv(b)) {}
  Lease(Lease&&) = default;
  ~Lease() {
    if (pool && buffer != nullptr) pool->give_back(kj::mv(buffer));
  }
};

// capnp's traversal limit counts every word a reader visits, revisits
// included; set once per connection (reader_options), a small message whose
// pointers share subtrees could make the decoder visit them millions of
// times. Each message gets its own limit instead: a few times its size
// (every value is read once or twice), never more than the connection's.
std::uint64_t message_traversal_limit(std::size_t words, std::uint64_t connection_limit) {
  return std::min<std::uint64_t>(connection_limit, std::uint64_t{8} * words + (std::uint64_t{64} << 10));
}

void limit_traversal(capnp::MessageReaderAndFds& m, capnp::ReaderOptions options) {
  std::size_t n = 0, words = 0;
  for (; n < 512; ++n) {  // capnp's most segments per message
    auto segment = m.reader->getSegment(static_cast<unsigned>(n));
    if (segment.begin() == nullptr) break;
    words += segment.size();
  }
  auto segments = kj::heapArray<kj::ArrayPtr<const capnp::word>>(n);
  for (std::size_t i = 0; i < n; ++i) segments[i] = m.reader->getSegment(static_cast<unsigned>(i));
  options.traversalLimitInWords = message_traversal_limit(words, options.traversalLimitInWords);
  auto limited = kj::heap<capnp::SegmentArrayMessageReader>(segments.asPtr(), options);
  // Destroyed before what it reads: the segment list and the reader holding the words.
  m.reader = limited.attach(kj::mv(segments), kj::mv(m.reader));
}

class ReusingMessageStream final : public capnp::MessageStream {
 public:
  ReusingMessageStream(kj::AsyncIoStream& stream, std::function<void()> on_message)
      : inner_(stream), on_message_(std::move(on_message)) {}
  using capnp::MessageStream::tryReadMessage;
  using capnp::MessageStream::writeMessage;
  using capnp::MessageStream::writeMessages;

  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> tryReadMessage(kj::ArrayPtr<kj::AutoCloseFd> fds,
                                                                    capnp::ReaderOptions options,
                                                                    kj::ArrayPtr<capnp::word> scratch) override {
    if (scratch.size() > 0) {
      return inner_.tryReadMessage(fds, options, scratch)
          .then([this, options](kj::Maybe<capnp::MessageReaderAndFds>&& got) -> kj::Maybe<capnp::MessageReaderAndFds> {
            if (on_message_) on_message_();
            KJ_IF_MAYBE(m, got) limit_traversal(*m, options);
            return kj::mv(got);
          });
    }
    auto buffer = pool_->take();
    auto space = buffer.asPtr();
    return inner_.tryReadMessage(fds, options, space)
        .then([this, pool = pool_, buffer = kj::mv(buffer), options](
                  kj::Maybe<capnp::MessageReaderAndFds>&& got) mutable -> kj::Maybe<capnp::MessageReaderAndFds> {
          if (on_message_) on_message_();
          KJ_IF_MAYBE(m, got) {
            // The message's size: its segments (capnp read them all into
            // `space` when they fit, else into an allocation of its own).
            std::size_t words = 0;
            for (unsigned i = 0; i < 512; ++i) {
              auto segment = m->reader->getSegment(i);
              if (segment.begin() == nullptr) break;
              words += segment.size();
            }
            if (words <= buffer.size()) {
              m->reader = m->reader.attach(Lease(pool, kj::mv(buffer)));
            } else {
              pool->saw(words);
              pool->give_back(kj::mv(buffer));
            }
            limit_traversal(*m, options);
            return kj::mv(got);
          }
          pool->give_back(kj::mv(buffer));  // the end of the stream
          return nullptr;
        });
  }
  kj::Promise<void> writeMessage(kj::ArrayPtr<const int> fds,
                                 kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) override {
    return inner_.writeMessage(fds, segments);
  }
  kj::Promise<void> writeMessages(
      kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) override {
    return inner_.writeMessages(messages);
  }
  kj::Maybe<int> getSendBufferSize() override { return inner_.getSendBufferSize(); }
  kj::Promise<void> end() override { return inner_.end(); }

 private:
  capnp::AsyncIoMessageStream inner_;
  std::function<void()> on_message_;
  std::shared_ptr<ScratchPool> pool_ = std::make_shared<ScratchPool>();
};

// A list or record of more elements than capnp's list size field holds.
bool fits(std::size_t n, const std::string& where, std::string& error) {
  if (n <= (std::size_t{1} << 28)) return true;
  error = where + ": " + std::to_string(n) + " elements are too many to cross the process boundary";
  return false;
}

// A value of a kind this side's codec does not carry (or without a codec).
bool refuse(const std::string& where, const char* what, std::string& error) {
  error = where + ": " + what + " cannot cross this boundary";
  return false;
}

// referencing: bytes of reference_bytes_from or more are referenced, not
// copied (the caller keeps v alive until the message is written).
bool put(const Value& v, wire::Value::Builder b, const std::string& where, HandleCodec* handles, std::size_t depth,
         std::string& error, bool referencing = false) {
  if (depth > max_value_depth) {
    error = where + ": values nest more than " + std::to_string(max_value_depth) + " deep";
    return false;
  }
  switch (v.type()) {
    case Value::Type::null: b.setNull(); return true;
    case Value::Type::boolean: b.setBool(v.as<bool>()); return true;
    case Value::Type::int64: b.setInt(v.as<std::int64_t>()); return true;
    case Value::Type::uint64: b.setUint(v.as<std::uint64_t>()); return true;
    case Value::Type::real: b.setReal(v.as<double>()); return true;
    case Value::Type::string: {
      // capnp Text carries its length: an embedded NUL crosses as it is, and
      // the other side's engine treats it as in-process.
      const std::string& s = v.as<std::string>();
      if (!fits(s.size(), where, error)) return false;
      b.setText(capnp::Text::Reader(s.data(), s.size()));
      return true;
    }
    case Value::Type::bytes: {
      const auto& d = v.as<Bytes>().data;
      if (!fits(d.size(), where, error)) return false;
      // Referenced data is written as whole words from where it lies: only
      // word-aligned bytes of a whole number of words (else the write would
      // read past their end).
      if (referencing && d.size() >= reference_bytes_from && d.size() % sizeof(capnp::word) == 0 &&
          reinterpret_cast<std::uintptr_t>(d.data()) % sizeof(capnp::word) == 0)
        b.adoptBytes(capnp::Orphanage::getForMessageContaining(b).referenceExternalData(
            capnp::Data::Reader(d.data(), d.size())));
      else
        b.setBytes(capnp::Data::Reader(d.data(), d.size()));
      return true;
    }
    case Value::Type::list: {
      const List& l = v.as<List>();
      if (!fits(l.size(), where, error)) return false;
      auto out = b.initList(static_cast<unsigned>(l.size()));
      for (std::size_t i = 0; i < l.size(); ++i)
        if (!put(l[i], out[static_cast<unsigned>(i)], where + "[" + std::to_string(i) + "]", handles, depth + 1, error,
                 referencing))
          return false;
      return true;
    }
    case Value::Type::record: {
      const Record& r = v.as<Record>();
      if (!fits(r.size(), where, error)) return false;
      auto out = b.initRecord(static_cast<unsigned>(r.size()));
      for (std::size_t i = 0; i < r.size(); ++i) {
        auto f = out[static_cast<unsigned>(i)];
        // By its length (a std::string would convert through c_str() and stop at a NUL).
        f.setName(capnp::Text::Reader(r[i].first.data(), r[i].first.size()));
        if (!put(r[i].second, f.initValue(), where + "." + r[i].first, handles, depth + 1, error, referencing))
          return false;
      }
      return true;
    }
    case Value::Type::address:
      error = where + ": a raw pointer (" + hex(v.as<Address>().value) +
              ") cannot cross the process boundary: an address means nothing in the other process "
              "(pass the data itself, or a handle)";
      return false;
    case Value::Type::handle:
      if (!handles) return refuse(where, "a handle", error);
      return handles->to_wire(v.as<std::shared_ptr<HandleBox>>(), b.initHandle(), where, error);
    case Value::Type::native:
      error = where + ": native memory owned by the host cannot cross the process boundary yet "
                      "(pass the data as a record or bytes)";
      return false;
    case Value::Type::function:
      if (!handles) return refuse(where, "a host function", error);
      return handles->function_to_wire(v.as<std::shared_ptr<HostFunction>>(), b.initFunction(), where, error);
    case Value::Type::callback: {
      const auto& cb = v.as<std::shared_ptr<Callback>>();
      if (cb && cb->is_stand_in() && handles) return handles->callback_to_wire(cb, b.initCallback(), where, error);
      error = where + ": callback '" + (cb ? cb->name() : std::string()) +
              "' is a native function pointer of this process, which means nothing in the other one; pass the "
              "host function itself (the other side makes its own function pointer for it)";
      return false;
    }
    case Value::Type::object:
      if (!handles) return refuse(where, "an object", error);
      return handles->object_to_wire(v.as<ObjectRef>(), b.initObject(), where, error);
    case Value::Type::host_object:
      if (!handles) return refuse(where, "a host object", error);
      return handles->host_object_to_wire(v.as<std::shared_ptr<HostObject>>(), b.initHostObject(), where, error);
  }
  error = where + ": a value of an unknown kind";
  return false;
}

bool get(wire::Value::Reader r, Value& out, const std::string& where, HandleCodec* handles, std::size_t depth,
         std::string& error) {
  if (depth > max_value_depth) {
    error = where + ": values nest more than " + std::to_string(max_value_depth) + " deep";
    return false;
  }
  switch (r.which()) {
    case wire::Value::NULL_: out = Value(); return true;
    case wire::Value::BOOL: out = Value(r.getBool()); return true;
    case wire::Value::INT: out = Value(static_cast<std::int64_t>(r.getInt())); return true;
    case wire::Value::UINT: out = Value(static_cast<std::uint64_t>(r.getUint())); return true;
    case wire::Value::REAL: out = Value(r.getReal()); return true;
    case wire::Value::TEXT: {
      auto t = r.getText();
      out = Value(std::string(t.begin(), t.size()));
      return true;
    }
    case wire::Value::BYTES: {
      auto d = r.getBytes();
      out = Value(Bytes{std::vector<std::uint8_t>(d.begin(), d.end())});
      return true;
    }
    case wire::Value::LIST: {
      auto l = r.getList();
      List list(l.size());
      for (unsigned i = 0; i < l.size(); ++i)
        if (!get(l[i], list[i], where + "[" + std::to_string(i) + "]", handles, depth + 1, error)) return false;
      out = Value(std::move(list));
      return true;
    }
    case wire::Value::RECORD: {
      auto l = r.getRecord();
      Record rec(l.size());
      for (unsigned i = 0; i < l.size(); ++i) {
        auto n = l[i].getName();
        rec[i].first.assign(n.begin(), n.size());
        if (!get(l[i].getValue(), rec[i].second, where + "." + rec[i].first, handles, depth + 1, error)) return false;
      }
      out = Value(std::move(rec));
      return true;
    }
    case wire::Value::HANDLE:
      if (!handles) return refuse(where, "a handle", error);
      return handles->to_host(r.getHandle(), out, where, error);
    case wire::Value::OBJECT:
      if (!handles) return refuse(where, "an object", error);
      return handles->object_to_host(r.getObject(), out, where, error);
    case wire::Value::FUNCTION:
      if (!handles) return refuse(where, "a host function", error);
      return handles->function_to_host(r.getFunction(), out, where, error);
    case wire::Value::HOST_OBJECT:
      if (!handles) return refuse(where, "a host object", error);
      return handles->host_object_to_host(r.getHostObject(), out, where, error);
    case wire::Value::CALLBACK:
      if (!handles) return refuse(where, "a registered callback", error);
      return handles->callback_to_host(r.getCallback(), out, where, error);
  }
  // A union tag this side does not know (a newer peer): refused, not guessed.
  error = where + ": a value of a kind this side does not know (tag " + std::to_string(static_cast<unsigned>(r.which())) + ")";
  return false;
}

}  // namespace

std::string hex(std::uint64_t a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(a));
  return buf;
}

bool HandleCodec::object_to_wire(const ObjectRef&, wire::RemoteRef::Builder, const std::string& where,
                                 std::string& error) {
  return refuse(where, "an object", error);
}

bool HandleCodec::object_to_host(wire::RemoteRef::Reader, Value&, const std::string& where, std::string& error) {
  return refuse(where, "an object", error);
}

bool HandleCodec::function_to_wire(const std::shared_ptr<HostFunction>&, wire::FunctionRef::Builder,
                                   const std::string& where, std::string& error) {
  return refuse(where, "a host function", error);
}

bool HandleCodec::function_to_host(wire::FunctionRef::Reader, Value&, const std::string& where, std::string& error) {
  return refuse(where, "a host function", error);
}

bool HandleCodec::host_object_to_wire(const std::shared_ptr<HostObject>&, wire::HostObjectRef::Builder,
                                      const std::string& where, std::string& error) {
  return refuse(where, "a host object", error);
}

bool HandleCodec::host_object_to_host(wire::HostObjectRef::Reader, Value&, const std::string& where,
                                      std::string& error) {
  return refuse(where, "a host object", error);
}

bool HandleCodec::callback_to_wire(const std::shared_ptr<Callback>&, wire::CallbackRef::Builder, const std::string& where,
                                   std::string& error) {
  return refuse(where, "a registered callback", error);
}

bool HandleCodec::callback_to_host(wire::CallbackRef::Reader, Value&, const std::string& where, std::string& error) {
  return refuse(where, "a registered callback", error);
}

kj::Own<capnp::MessageStream> reusing_message_stream(kj::AsyncIoStream& stream, std::function<void()> on_message) {
  return kj::heap<ReusingMessageStream>(stream, std::move(on_message));
}

bool to_wire(const Value& v, wire::Value::Builder b, const std::string& where, HandleCodec* handles,
             std::string& error) {
  return put(v, b, where, handles, 0, error);
}

bool to_wire_referencing(const Value& v, wire::Value::Builder b, const std::string& where, HandleCodec* handles,
                         std::string& error) {
  return put(v, b, where, handles, 0, error, true);
}

bool to_host(wire::Value::Reader r, Value& out, const std::string& where, HandleCodec* handles, std::string& error) {
  return get(r, out, where, handles, 0, error);
}

}  // namespace marshal::engine::remote
