// marshal remote: native objects across the process boundary (see objects.hpp).
#include "remote/objects.hpp"

#include <mutex>

namespace marshal::engine::remote {

void RemoteHost::detach() {
  std::unique_lock lock(mutex_);
  link_ = nullptr;
}

bool RemoteHost::call_method(const Interface& owner, const Method& m, void*, void*, std::span<const Value* const>,
                             CallResult&, std::string& error) {
  error = tm_.file + ": " + owner.name + "." + m.name + ": a remote object's methods run in its own process";
  return false;
}

bool RemoteHost::call_function(const std::string& name, std::span<const Value> args, CallResult& result,
                               std::string& error) {
  return with_link(name, error, [&](ObjectLink& l) { return l.call_function(name, args, result, error); });
}

void RemoteHost::release(const RemoteProxy* p) noexcept {
  std::shared_lock lock(mutex_);
  if (link_) link_->release_object(p);  // else: the library's teardown dropped every capability
}

bool RemoteProxy::call(const Interface& view, std::string_view method, std::span<const Value* const> args,
                       CallResult& result, std::string& error) {
  return host_->with_link(view.name + "." + std::string(method), error, [&](ObjectLink& l) {
    return l.call_object(*this, view, method, args, result, error);
  });
}

bool RemoteProxy::query(const Interface& want, Value& out, std::string& error) {
  return host_->with_link("query(" + want.name + ")", error,
                          [&](ObjectLink& l) { return l.query_object(*this, want, out, error); });
}

}  // namespace marshal::engine::remote
