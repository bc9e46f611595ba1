// marshal engine: objects (COM-style interfaces) in both directions.
//
// Native objects for the host (runtime-callable wrappers): a pointer to an
// interface becomes a NativeObject, one per COM identity (the IUnknown pointer
// QueryInterface returns) and library while the host holds it, so the same
// object always maps to the same wrapper, whichever interface it came through.
// The wrapper holds one reference per interface pointer it keeps and releases
// each exactly once when the host drops it. Methods are vtable slots called
// through the same plans as functions, `this` first.
//
// Host objects for native code (COM-callable wrappers): a HostObject (named
// host functions, one per method) passed where an interface is expected gets
// a vtable whose slots are libffi closures, plus an engine IUnknown
// (QueryInterface by iid, AddRef, Release). Native references keep the host
// object alive; when native code hands the pointer back the host receives its
// own object, never a wrapper of a wrapper.
#pragma once

#include "apartments/apartment.hpp"
#include "convert/convert.hpp"
#include "objects/object_host.hpp"
#include "types/typemap.hpp"
#include "values/value.hpp"

#include <atomic>
#include <ffi.h>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace marshal::engine {

class ObjectSpace;
class HostObject;
HostObject* host_object_of(void* p);

// HRESULT-style status codes (as in COM).
namespace hr {
constexpr std::int32_t ok = 0;
constexpr std::int32_t no_interface = static_cast<std::int32_t>(0x80004002u);
constexpr std::int32_t pointer = static_cast<std::int32_t>(0x80004003u);
constexpr std::int32_t fail = static_cast<std::int32_t>(0x80004005u);
}  // namespace hr

// The IID of IUnknown (00000000-0000-0000-C000-000000000046), GUID byte order.
const Guid& iid_iunknown();

// A native object as the host sees it (one per identity and library).
class NativeObject {
 public:
  NativeObject() = default;
  NativeObject(const NativeObject&) = delete;
  NativeObject& operator=(const NativeObject&) = delete;
  ~NativeObject();

  // The COM identity: the IUnknown pointer (the object pointer itself for
  // interfaces that do not derive from IUnknown).
  void* identity() const { return identity_; }
  // The class it was created through (classes), or nullptr.
  const ClassDesc* cls() const { return cls_; }
  bool refcounted() const { return refcounted_; }
  // The pointer for interface `want`: one held already (for `want` or an
  // interface derived from it), or obtained now by QueryInterface and held.
  // nullptr with a message when the object does not implement it.
  void* pointer(const Interface& want, std::string& error);
  // The interfaces held now, in the order they were obtained.
  std::vector<const Interface*> interfaces() const;
  ObjectHost& library() { return *lib_; }

 private:
  friend class ObjectSpace;
  std::shared_ptr<ObjectHost> lib_;  // the library stays loaded while wrappers exist
  ObjectSpace* space_ = nullptr;
  void* identity_ = nullptr;
  bool refcounted_ = false;
  const ClassDesc* cls_ = nullptr;
  // The interface and pointer the object was first obtained as: set before
  // the object is shared and never changed, so calls through it take no lock.
  const Interface* first_iface_ = nullptr;
  void* first_ptr_ = nullptr;
  mutable std::mutex mutex_;
  std::vector<std::pair<const Interface*, void*>> ptrs_;  // each holds one reference
  SyncDomain calls_;  // neutral objects: one call chain at a time (TYPEMAP.md, neutral)
};

// What proxies refer to: a direct reference kept in the object's home
// apartment, released there when the last proxy goes (or when the apartment
// ends, on its thread).
struct Stub : Lent {
  ObjectRef direct;
  std::shared_ptr<Apartment> home;
  std::mutex mutex;
  bool released = false;
  Stub(ObjectRef d, std::shared_ptr<Apartment> h) : direct(std::move(d)), home(std::move(h)) {}
  ~Stub() override;
  void release_now() override;  // on the home apartment's thread
  // The direct reference, or an error when its apartment has ended.
  bool get(ObjectRef& out, std::string& error);
};
void register_stub(const std::shared_ptr<Apartment>& home, const std::shared_ptr<Stub>& stub);

struct Proxy {
  std::shared_ptr<Stub> stub;
  std::shared_ptr<ObjectHost> lib;
  void* identity = nullptr;  // the object's COM identity, for ==
  std::mutex mutex;
  // Host objects that stand for this proxy when it is passed to native code
  // (their methods call through the proxy), one per interface.
  std::map<const Interface*, std::shared_ptr<HostObject>> forwarders;
};

// An object that lives in another process (engine/remote implements it, one
// per remote identity): a reference whose `remote` is set calls and queries
// through it; objects/ only forwards. Its host() is the ObjectHost that
// stands for the remote library on this side (library_of).
class RemoteObject {
 public:
  virtual ~RemoteObject() = default;
  virtual ObjectHost& host() = 0;
  // A method by name ("Add" or "ICounter.Add") seen through interface `view`.
  virtual bool call(const Interface& view, std::string_view method, std::span<const Value* const> args,
                    CallResult& result, std::string& error) = 0;
  virtual bool query(const Interface& want, Value& out, std::string& error) = 0;
};

// The library a reference's object belongs to, and its identity (for ==).
ObjectHost& library_of(const ObjectRef& ref);
void* identity_of(const ObjectRef& ref);

// Every object reference inside v (lists and records too) made usable in
// apartment `to`: a reference of another apartment becomes a proxy, a proxy
// whose object lives in `to` becomes the direct reference again.
void marshal_value_for(Value& v, const std::shared_ptr<Apartment>& to);

// Cross-apartment tokens (CoMarshalInterThreadInterfaceInStream and
// CoGetInterfaceAndReleaseStream): marshal in the reference's apartment,
// unmarshal once in another.
bool marshal_interface(const Value& ref, std::uint64_t& token, std::string& error);
bool unmarshal_interface(std::uint64_t token, Value& out, std::string& error);
// Drops the tokens marshaled in an apartment that ends (their references are released).

// A host object that native code can call: methods by name ("Add" or, to
// tell interfaces apart, "ICounter.Add"), and the interfaces it implements
// (their bases too). An empty list means: the interfaces it is passed as.
class HostObject : public std::enable_shared_from_this<HostObject> {
 public:
  // Created in an STA, its methods run on that STA's thread whatever thread
  // native code calls from.
  HostObject(std::string name, std::vector<std::string> interfaces,
             std::map<std::string, std::shared_ptr<HostFunction>> methods)
      : name_(std::move(name)), interface_names_(std::move(interfaces)), methods_(std::move(methods)),
        home_(current_apartment()) {}
  HostObject(const HostObject&) = delete;
  HostObject& operator=(const HostObject&) = delete;
  ~HostObject();

  const std::string& name() const { return name_; }
  // References native code holds now (AddRef minus Release).
  std::uint32_t native_refs() const;
  const HostFunction* method(const Interface& iface, const std::string& name) const;
  // What it was made of (engine/remote sends a host object as these).
  const std::vector<std::string>& interface_names() const { return interface_names_; }
  const std::map<std::string, std::shared_ptr<HostFunction>>& methods() const { return methods_; }
  // The STA its methods run in, or null.
  const std::shared_ptr<Apartment>& home() const { return home_; }

 private:
  friend class ObjectSpace;
  friend HostObject* host_object_of(void* p);
  // A COM-callable wrapper: what native code points at for one interface.
  // vtbl must stay the first member.
  struct Ccw {
    void* const* vtbl = nullptr;
    HostObject* owner = nullptr;
    const Interface* iface = nullptr;
    ObjectSpace* space = nullptr;
    std::shared_ptr<ObjectHost> lib;  // its vtable's closures and typemap
    std::vector<const HostFunction*> fns;  // per vtable slot: the host method (owned by methods_)
  };
  static std::int32_t ccw_query(void* self, const void* iid, void** out);
  static std::uint32_t ccw_add_ref(void* self);
  static std::uint32_t ccw_release(void* self);
  std::uint32_t add_ref();
  std::uint32_t release();

  std::string name_;
  std::vector<std::string> interface_names_;
  std::map<std::string, std::shared_ptr<HostFunction>> methods_;
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Ccw>> ccws_;      // the first one per space is the identity
  std::vector<const Interface*> implemented_;   // resolved: declared, or passed as
  std::uint32_t refs_ = 0;
  std::shared_ptr<HostObject> keep_;            // set while refs_ > 0
  std::shared_ptr<Apartment> home_;             // where its methods run (an STA), or null
  Value forwards_;                              // a forwarder: the proxy it stands for
};

struct ObjectStats {
  std::size_t wrappers = 0;       // native objects wrapped for the host, alive
  std::size_t vtables = 0;        // host-object vtables built (one per interface)
  std::size_t faults = 0;         // Release calls on host objects already at zero
};

// The objects of one library: the identity table of wrappers, the vtables of
// host objects, method plans, classes. As a ReferenceMarshaler it converts
// interface values (and registered callbacks) for a host function's
// arguments and results.
class ObjectSpace : public ReferenceMarshaler {
 public:
  explicit ObjectSpace(ObjectHost& lib) : lib_(lib) {}
  ObjectSpace(const ObjectSpace&) = delete;
  ObjectSpace& operator=(const ObjectSpace&) = delete;
  ~ObjectSpace() override;

  // A native interface pointer to its host value: the host's own object when
  // p points into a host object (round trip), else the wrapper of p's
  // identity. transfer: p carries a reference the host now owns.
  bool to_host(void* p, const Interface& iface, bool transfer, Value& out, std::string& error);
  // A host value (native object, host object or null) for an interface
  // parameter; with transfer the receiver gets a reference of its own.
  bool to_native(const Value& v, const Interface& iface, bool transfer, bool nullable, void*& out, std::string& error);

  bool callback_to_native(const CallbackInfo& info, const Value& v, void*& code, std::string& why) override;
  bool object_to_native(const Value& v, const Interface& iface, bool transfer, bool nullable, void*& out,
                        std::string& why) override {
    return to_native(v, iface, transfer, nullable, out, why);
  }
  bool object_to_host(void* p, const Interface& iface, bool transfer, Value& out, std::string& why) override {
    return to_host(p, iface, transfer, out, why);
  }

  // A method by name ("Add" or "ICounter.Add") of a native object: the
  // interface whose pointer is `this`, the interface declaring the method.
  struct MethodRef {
    const Interface* view = nullptr;
    const Interface* owner = nullptr;
    const Method* method = nullptr;
  };
  bool find_method(const ObjectRef& obj, std::string_view name, MethodRef& out, std::string& error);
  // Calls a method by name ("Add" or "ICounter.Add") on a native object.
  bool call(const ObjectRef& obj, std::string_view method, std::span<const Value> args, CallResult& result,
            std::string& error);
  // The same with the arguments by address (no copy of a host value: the C API).
  bool call(const ObjectRef& obj, std::string_view method, std::span<const Value* const> args, CallResult& result,
            std::string& error);
  // The same object seen as another interface (QueryInterface by its iid).
  bool query(const ObjectRef& obj, const std::string& iface, Value& out, std::string& error);
  // An instance of a class of the typemap, through its factory function.
  bool create(const std::string& cls, std::span<const Value> args, Value& out, std::string& error);

  ObjectStats stats();
  ObjectHost& library() { return lib_; }

 private:
  friend class NativeObject;
  friend class HostObject;
  void* const* vtable(const Interface& iface, std::string& error);
  void* ccw_for(HostObject& h, const Interface& iface, std::string& error);
  bool wrap(void* p, const Interface& iface, bool transfer, ObjectRef& out, std::string& error);
  bool call_through(const ObjectRef& obj, std::string_view method, std::span<const Value> args, CallResult& result,
                    std::string& error);
  std::shared_ptr<HostObject> forwarder(const ObjectRef& proxy, const Interface& iface, std::string& error);
  bool make_here(const ClassDesc& c, std::span<const Value> args, Value& out, std::string& error);
  void forget(NativeObject* obj);
  const Interface* find_by_iid(const void* iid) const;

  struct MethodThunk {
    ObjectSpace* space = nullptr;
    const Interface* iface = nullptr;  // the interface that declares the method
    const Method* method = nullptr;
    ffi_cif cif{};
    std::vector<ffi_type*> atypes;
    ffi_closure* closure = nullptr;
    std::size_t ret_size = 0;
    bool returns_value = false;
    std::vector<std::byte> on_error;  // ret_size bytes, already widened for libffi
  };
  static void method_trampoline(ffi_cif* cif, void* ret, void** args, void* self);

  ObjectHost& lib_;
  std::mutex mutex_;
  std::unordered_map<void*, std::weak_ptr<NativeObject>> identities_;
  std::map<const Interface*, std::vector<void*>> vtables_;   // slot code pointers, per interface
  std::vector<std::unique_ptr<MethodThunk>> thunks_;
  std::atomic<std::size_t> faults_{0};
};

// Whether p points at a host object's wrapper (any library): its owner, or nullptr.
HostObject* host_object_of(void* p);

}  // namespace marshal::engine
