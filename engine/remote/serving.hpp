// marshal remote: the serving side's shared pieces (private to engine/remote):
// what one opened library exported (Served, Exports), the capabilities of its
// handles and registered callbacks, the codec of a call's values, and a call's
// state. serve_surrogate.cpp serves libraries, objects and sessions with
// them; serve_imports.cpp turns the host's functions and objects that arrive
// into stand-ins native code can call.
#pragma once

#include "base/error.hpp"
#include "call/library.hpp"
#include "callbacks/callback.hpp"
#include "objects/object.hpp"
#include "remote/import_table.hpp"
#include "remote/native_thread.hpp"
#include "remote/wire.hpp"
#include "typemap/context.hpp"

#include <capnp/capability.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace marshal::engine::remote::serving {

class HandleServer;
class ObjectServer;
class CallbackServer;

// The surrogate's exports: a HandleBox (one per native handle identity, kept
// by the engine's HandleTable) maps to one capability while the host holds
// it, so capnp reuses the export and the host sees one reference per handle.
// Objects the same way, by COM identity: each ObjectServer holds the
// engine's wrapper of its object (one native reference), released when the
// host drops its last reference or the connection ends.
struct Exports {
  std::map<const HandleBox*, HandleServer*> live;
  capnp::CapabilityServerSet<wire::Handle> servers;
  std::map<void*, ObjectServer*> objects;
  capnp::CapabilityServerSet<wire::RemoteObject> object_servers;
  // Registered callbacks made for the host (Library.callback), by closure.
  std::map<const Callback*, CallbackServer*> callbacks;
  capnp::CapabilityServerSet<wire::RegisteredCallback> callback_servers;
};

// One opened library and what it exported; shared by its LibraryServer and
// every capability it handed out, so whichever capnp drops last, the library
// and its context outlive the objects that call into them. Destroyed on the
// I/O thread (what native jobs hold of it is handed back there).
struct Served {
  std::unique_ptr<Context> ctx;  // destroyed last: the library's types
  std::shared_ptr<Library> lib;
  Exports exports;
  std::shared_ptr<Runtime> rt;
  // Host functions and host objects the client sent (I/O thread only).
  ImportTable<wire::HostCallback::Client, HostFunction> functions;
  ImportTable<wire::HostObjectCap::Client, HostObject> host_objects;
};

// Releases `what` (a handle box, an object reference: their last reference,
// whose release runs native code) on the native thread, after the calls
// queued before it; `served` is handed back to the I/O thread.
void release_on_native(std::shared_ptr<Served> served, std::shared_ptr<void> what);

class HandleServer final : public wire::Handle::Server {
 public:
  HandleServer(std::shared_ptr<Served> served, std::shared_ptr<HandleBox> box)
      : served_(std::move(served)), box_(std::move(box)) {
    served_->exports.live[box_.get()] = this;
  }
  // The host dropped its last reference (or disconnected): the box goes, and
  // with it the handle's release function runs as in-process (on the native
  // thread, like every native call).
  ~HandleServer() {
    served_->exports.live.erase(box_.get());
    release_on_native(served_, std::move(box_));
  }
  wire::Handle::Client self() { return thisCap(); }
  const std::shared_ptr<HandleBox>& box() const { return box_; }

 private:
  std::shared_ptr<Served> served_;
  std::shared_ptr<HandleBox> box_;
};

// A registered callback the host holds: while it does, the callback is active
// here (native code may keep and call its pointer); when the host releases it
// (drops the capability, or disconnects), it is released as in-process, and a
// late call from native code reaches the trap.
class CallbackServer final : public wire::RegisteredCallback::Server {
 public:
  CallbackServer(std::shared_ptr<Served> served, std::shared_ptr<Callback> cb)
      : served_(std::move(served)), cb_(std::move(cb)) {
    served_->exports.callbacks[cb_.get()] = this;
  }
  ~CallbackServer() {
    served_->exports.callbacks.erase(cb_.get());
    cb_->release();
  }
  wire::RegisteredCallback::Client self() { return thisCap(); }
  const std::shared_ptr<Callback>& callback() const { return cb_; }

 private:
  std::shared_ptr<Served> served_;
  std::shared_ptr<Callback> cb_;
};

// Handles and objects in a call's arguments arrive as capabilities; each must
// be one this surrogate exported. They resolve asynchronously
// (getLocalServer), so decoding leaves a placeholder and records where the
// value goes.
class SurrogateCodec final : public HandleCodec {
 public:
  explicit SurrogateCodec(std::shared_ptr<Served> s) : served_(std::move(s)) {}
  bool to_wire(const std::shared_ptr<HandleBox>& box, wire::HandleRef::Builder b, const std::string&,
               std::string&) override {
    auto& exports = served_->exports;
    auto it = exports.live.find(box.get());
    if (it != exports.live.end()) b.setCap(it->second->self());
    else b.setCap(exports.servers.add(kj::heap<HandleServer>(served_, box)));
    b.setTypeName(box->type_name);
    b.setValue(box->value);
    return true;
  }
  bool to_host(wire::HandleRef::Reader r, Value& out, const std::string& where, std::string&) override {
    out = Value();
    pending.push_back({&out, r.getCap(), where});
    return true;
  }
  bool object_to_wire(const ObjectRef& ref, wire::RemoteRef::Builder b, const std::string& where,
                      std::string& error) override;
  bool object_to_host(wire::RemoteRef::Reader r, Value& out, const std::string& where, std::string&) override {
    out = Value();
    auto name = r.getInterface();
    objects.push_back({&out, r.getCap(), where, std::string(name.begin(), name.size())});
    return true;
  }
  bool function_to_host(wire::FunctionRef::Reader r, Value& out, const std::string& where, std::string& error) override;
  bool host_object_to_host(wire::HostObjectRef::Reader r, Value& out, const std::string& where, std::string& error) override;
  bool host_object_to_wire(const std::shared_ptr<HostObject>& obj, wire::HostObjectRef::Builder b, const std::string& where,
                           std::string& error) override;
  bool callback_to_wire(const std::shared_ptr<Callback>& cb, wire::CallbackRef::Builder b, const std::string& where,
                        std::string& error) override {
    auto& exports = served_->exports;
    auto it = exports.callbacks.find(cb.get());
    if (it == exports.callbacks.end()) {
      error = where + ": callback '" + cb->name() + "' was not made for the host";
      return false;
    }
    b.setCap(it->second->self());
    b.setSignature(cb->name());
    return true;
  }
  bool callback_to_host(wire::CallbackRef::Reader r, Value& out, const std::string& where, std::string&) override {
    out = Value();
    callbacks.push_back({&out, r.getCap(), where});
    return true;
  }
  struct Pending {
    Value* slot;
    wire::Handle::Client cap;
    std::string where;
  };
  std::vector<Pending> pending;
  struct PendingObject {
    Value* slot;
    wire::RemoteObject::Client cap;
    std::string where;
    std::string iface;
  };
  std::vector<PendingObject> objects;
  struct PendingCallback {
    Value* slot;
    wire::RegisteredCallback::Client cap;
    std::string where;
  };
  std::vector<PendingCallback> callbacks;

 private:
  std::shared_ptr<Served> served_;
};

// One incoming call: its arguments, decoded, with the capabilities in them
// still to be resolved to what this side exported.
struct CallState {
  explicit CallState(std::shared_ptr<Served> s) : served(s), codec(std::move(s)) {}
  std::shared_ptr<Served> served;
  std::string function;
  std::uint64_t token = 0;  // the host's id of the call (callbacks carry it back)
  std::uint64_t chain = 0;  // the waiting thread it runs on, if any (Chains)
  std::vector<Value> args;
  SurrogateCodec codec;
  std::string error;
  // Set on the native thread, read on the I/O thread once it has run.
  bool ok = false;
  CallResult result;
  Error record;  // the native thread's last error when !ok
};

// Resolves the handles, objects and registered callbacks of a call's
// arguments: each must be a capability this side exported (state.error says
// which was not).
kj::Promise<void> resolve(std::shared_ptr<CallState> state);

}  // namespace marshal::engine::remote::serving
