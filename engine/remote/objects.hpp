// marshal remote: native objects across the process boundary (issue 17, part 3).
// An object made in a surrogate (or `marshal serve`) stays there; the host
// holds a RemoteProxy per remote identity, reached from ObjectRef::remote, and
// a RemoteHost that stands for the remote library as an ObjectHost, so
// library_of(ref).objects().call/query work on a remote reference as on a
// local one. Calls go over the IsolatedLibrary's connection (an ObjectLink,
// surrogate.cpp); arguments and results are converted on the serving side by
// the ordinary in-process method call.
#pragma once

#include "objects/object.hpp"
#include "typemap/context.hpp"
#include "values/handles.hpp"

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>

namespace marshal::engine::remote {

class RemoteProxy;

// What proxies need of the IsolatedLibrary they came from (its Impl).
class ObjectLink {
 public:
  virtual ~ObjectLink() = default;
  virtual bool call_object(const RemoteProxy& p, const Interface& view, std::string_view method,
                           std::span<const Value* const> args, CallResult& result, std::string& error) = 0;
  virtual bool query_object(const RemoteProxy& p, const Interface& want, Value& out, std::string& error) = 0;
  // The host dropped its last reference to p: its capability goes (on the I/O thread).
  virtual void release_object(const RemoteProxy* p) noexcept = 0;
  virtual bool call_function(const std::string& name, std::span<const Value> args, CallResult& result,
                             std::string& error) = 0;
};

// The remote library as this side's ObjectHost. Proxies keep it alive; once
// its IsolatedLibrary is gone (detach), their calls are errors.
class RemoteHost final : public ObjectHost, public std::enable_shared_from_this<RemoteHost> {
 public:
  RemoteHost(Context& ctx, const Typemap& tm, ObjectLink& link) : ctx_(ctx), tm_(tm), link_(&link) {}
  RemoteHost(const RemoteHost&) = delete;
  RemoteHost& operator=(const RemoteHost&) = delete;
  // The library closes: waits for calls in flight, refuses later ones.
  void detach();

  const Typemap& typemap() const override { return tm_; }
  Context& context() override { return ctx_; }
  HandleTable& handles() override { return handles_; }
  ObjectSpace& objects() override { return objects_; }
  std::size_t max_buffer() const override { return default_max_buffer; }
  std::shared_ptr<ObjectHost> keep_loaded() override { return shared_from_this(); }
  // Never reached for a remote reference (ObjectSpace forwards those to the proxy).
  bool call_method(const Interface& owner, const Method& m, void*, void*, std::span<const Value* const>,
                   CallResult&, std::string& error) override;
  // A class's factory: called in the other process (the object arrives as a proxy).
  bool call_function(const std::string& name, std::span<const Value> args, CallResult& result,
                     std::string& error) override;

  // f(link) while the library is open; false with a message once it is closed.
  template <class F> bool with_link(const std::string& what, std::string& error, F f) {
    std::shared_lock lock(mutex_);
    if (!link_) {
      error = tm_.file + ": " + what + ": the isolated library this object came from is closed";
      return false;
    }
    return f(*link_);
  }
  void release(const RemoteProxy* p) noexcept;

 private:
  Context& ctx_;
  const Typemap& tm_;
  std::shared_mutex mutex_;
  ObjectLink* link_;
  HandleTable handles_{HandleTable::Releaser{}};
  ObjectSpace objects_{*this};
};

// One object identity of the serving side, as the host holds it. Its address
// is the host's identity of the object (ObjectRef::identity).
class RemoteProxy final : public RemoteObject {
 public:
  RemoteProxy(std::shared_ptr<RemoteHost> host, std::uint64_t identity, int generation)
      : host_(std::move(host)), identity_(identity), generation_(generation) {}
  RemoteProxy(const RemoteProxy&) = delete;
  RemoteProxy& operator=(const RemoteProxy&) = delete;
  ~RemoteProxy() override { host_->release(this); }

  ObjectHost& host() override { return *host_; }
  bool call(const Interface& view, std::string_view method, std::span<const Value* const> args, CallResult& result,
            std::string& error) override;
  bool query(const Interface& want, Value& out, std::string& error) override;

  // The serving side's COM identity (for messages), and which connection
  // (surrogate generation) the object lives in.
  std::uint64_t remote_identity() const { return identity_; }
  int generation() const { return generation_; }
  const RemoteHost& remote_host() const { return *host_; }

 private:
  std::shared_ptr<RemoteHost> host_;
  std::uint64_t identity_;
  int generation_;
};

}  // namespace marshal::engine::remote
