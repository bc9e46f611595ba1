// marshal engine: objects (runtime- and COM-callable wrappers, identity).
#include "objects/object.hpp"
#include "base/error.hpp"

#include "abi/abi.hpp"
#include "base/arena.hpp"
#include "callbacks/callback.hpp"
#include "convert/convert.hpp"
#include "typemap/context.hpp"
#include "values/handles.hpp"

#include <thread>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <shared_mutex>
#include <unordered_set>

namespace marshal::engine {

namespace {

// IUnknown's three slots, called directly: their C signatures are fixed by COM.
using QueryFn = std::int32_t (*)(void*, const void*, void**);
using RefFn = std::uint32_t (*)(void*);

void* const* vtable_of(void* p) {
  void* const* v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
std::int32_t native_query(void* p, const Guid& iid, void** out) {
  *out = nullptr;
  return reinterpret_cast<QueryFn>(vtable_of(p)[0])(p, iid.data(), out);
}
void native_add_ref(void* p) { reinterpret_cast<RefFn>(vtable_of(p)[1])(p); }
void native_release(void* p) { reinterpret_cast<RefFn>(vtable_of(p)[2])(p); }

std::string hex32(std::int32_t code) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", static_cast<unsigned>(code));
  return buf;
}

bool derives(const Interface* a, const Interface* b) {
  for (; a; a = a->base)
    if (a == b) return true;
  return false;
}

// The root of a chain that derives from IUnknown (its three slots are the engine's).
bool is_iunknown(const Interface& i) { return i.refcounted && i.base == nullptr; }

// Every vtable of a host object wrapper, so that a pointer native code hands
// back is recognized as the host's own object (round-trip identity).
std::shared_mutex ccw_vtables_mutex;
std::unordered_set<const void*>& ccw_vtables() {
  static auto* set = new std::unordered_set<const void*>;
  return *set;
}

}  // namespace

const Guid& iid_iunknown() {
  static const Guid g = *parse_guid("00000000-0000-0000-c000-000000000046");
  return g;
}

HostObject* host_object_of(void* p) {
  if (!p) return nullptr;
  void* const* v = vtable_of(p);
  std::shared_lock lock(ccw_vtables_mutex);
  if (!ccw_vtables().count(v)) return nullptr;
  return static_cast<HostObject::Ccw*>(p)->owner;
}

// ---- native objects ----------------------------------------------------------------------

NativeObject::~NativeObject() {
  if (space_) space_->forget(this);
  // Each held interface pointer carries one reference: released exactly once.
  if (refcounted_)
    for (auto& [iface, p] : ptrs_) native_release(p);
}

std::vector<const Interface*> NativeObject::interfaces() const {
  std::lock_guard lock(mutex_);
  std::vector<const Interface*> out;
  for (const auto& [i, p] : ptrs_) out.push_back(i);
  return out;
}

void* NativeObject::pointer(const Interface& want, std::string& error) {
  if (first_iface_ && derives(first_iface_, &want)) return first_ptr_;
  void* any = nullptr;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [i, p] : ptrs_)
      if (derives(i, &want)) return p;  // a derived interface's pointer is also one of its base
    if (!ptrs_.empty()) any = ptrs_.front().second;
  }
  if (!refcounted_ || !want.refcounted) {
    error = "the object does not implement " + want.name + " (it was obtained as another interface, and " +
            (refcounted_ ? want.name : std::string("its interface")) + " does not derive from IUnknown, so it cannot "
            "be asked for others)";
    return nullptr;
  }
  if (!want.iid) {
    error = "interface " + want.name + " has no iid, so the object cannot be asked for it (QueryInterface)";
    return nullptr;
  }
  void* got = nullptr;
  const std::int32_t status = native_query(any, *want.iid, &got);
  if (status < 0 || !got) {
    if (got) native_release(got);
    error = "the object does not implement " + want.name + " (QueryInterface returned " + hex32(status) +
            (status == hr::no_interface ? " E_NOINTERFACE" : "") + ")";
    return nullptr;
  }
  std::lock_guard lock(mutex_);
  for (const auto& [i, p] : ptrs_)
    if (i == &want) {  // another thread got it first: keep one reference
      native_release(got);
      return p;
    }
  ptrs_.emplace_back(&want, got);
  return got;
}

// ---- host objects ------------------------------------------------------------------------

HostObject::~HostObject() = default;

std::uint32_t HostObject::native_refs() const {
  std::lock_guard lock(mutex_);
  return refs_;
}

const HostFunction* HostObject::method(const Interface& iface, const std::string& name) const {
  if (auto it = methods_.find(iface.name + "." + name); it != methods_.end()) return it->second.get();
  if (auto it = methods_.find(name); it != methods_.end()) return it->second.get();
  return nullptr;
}

std::uint32_t HostObject::add_ref() {
  std::lock_guard lock(mutex_);
  if (refs_++ == 0) keep_ = shared_from_this();  // native code keeps the host object alive
  return refs_;
}

std::uint32_t HostObject::release() {
  std::shared_ptr<HostObject> last;
  std::uint32_t left;
  {
    std::lock_guard lock(mutex_);
    if (refs_ == 0) {
      // A Release past zero: a native bug, counted and never a second free.
      if (!ccws_.empty()) ccws_.front()->space->faults_.fetch_add(1);
      std::fprintf(stderr, "marshal: host object '%s' was released more times than it was referenced\n", name_.c_str());
      return 0;
    }
    left = --refs_;
    if (left == 0) last = std::move(keep_);
  }
  return left;  // `last` may destroy this object now; nothing touches it after
}

std::int32_t HostObject::ccw_query(void* self, const void* iid, void** out) {
  if (!out) return hr::pointer;
  *out = nullptr;
  if (!iid) return hr::pointer;
  auto* c = static_cast<Ccw*>(self);
  HostObject* h = c->owner;
  ObjectSpace* space = c->space;
  Guid want;
  std::memcpy(want.data(), iid, want.size());
  void* target = nullptr;
  if (want == iid_iunknown()) {
    // COM identity: the same IUnknown pointer every time (the first wrapper in this space).
    std::lock_guard lock(h->mutex_);
    for (auto& w : h->ccws_)
      if (w->space == space) { target = w.get(); break; }
  } else {
    const Interface* iface = space->find_by_iid(iid);
    std::string error;
    if (iface) target = space->ccw_for(*h, *iface, error);
  }
  if (!target) return hr::no_interface;
  h->add_ref();
  *out = target;
  return hr::ok;
}

std::uint32_t HostObject::ccw_add_ref(void* self) { return static_cast<Ccw*>(self)->owner->add_ref(); }
std::uint32_t HostObject::ccw_release(void* self) { return static_cast<Ccw*>(self)->owner->release(); }

// ---- the object space ----------------------------------------------------------------------

ObjectSpace::~ObjectSpace() {
  std::unique_lock lock(ccw_vtables_mutex);
  for (auto& [iface, v] : vtables_) ccw_vtables().erase(v.data());
  for (auto& t : thunks_)
    if (t->closure) ffi_closure_free(t->closure);
}

ObjectStats ObjectSpace::stats() {
  std::lock_guard lock(mutex_);
  ObjectStats s;
  for (auto& [id, w] : identities_)
    if (!w.expired()) ++s.wrappers;
  s.vtables = vtables_.size();
  s.faults = faults_.load();
  return s;
}

void ObjectSpace::forget(NativeObject* obj) {
  std::lock_guard lock(mutex_);
  auto it = identities_.find(obj->identity_);
  if (it != identities_.end() && it->second.expired()) identities_.erase(it);
}

const Interface* ObjectSpace::find_by_iid(const void* iid) const {
  for (const auto& [name, i] : lib_.typemap().interfaces)
    if (i.iid && std::memcmp(i.iid->data(), iid, i.iid->size()) == 0) return &i;
  return nullptr;
}

bool ObjectSpace::wrap(void* p, const Interface& iface, bool transfer, ObjectRef& out, std::string& error) {
  void* identity = p;
  void* unknown = nullptr;
  if (iface.refcounted) {
    const std::int32_t status = native_query(p, iid_iunknown(), &unknown);
    if (status < 0 || !unknown) {
      if (transfer) native_release(p);
      error = "the object's QueryInterface(IUnknown) failed (" + hex32(status) + "), so it has no identity";
      return false;
    }
    identity = unknown;
    if (!transfer) native_add_ref(p);  // the wrapper holds a reference of its own
  }
  void* extra = nullptr;  // a reference the wrapper does not need
  std::shared_ptr<NativeObject> obj;
  {
    std::lock_guard lock(mutex_);
    auto& slot = identities_[identity];
    obj = slot.lock();
    if (obj) {
      std::lock_guard olock(obj->mutex_);
      bool held = false;
      for (const auto& [i, q] : obj->ptrs_) held = held || i == &iface;
      if (held) extra = p;
      else obj->ptrs_.emplace_back(&iface, p);
    } else {
      obj = std::make_shared<NativeObject>();
      obj->lib_ = lib_.keep_loaded();
      obj->space_ = this;
      obj->identity_ = identity;
      obj->refcounted_ = iface.refcounted;
      obj->ptrs_.emplace_back(&iface, p);
      obj->first_iface_ = &iface;
      obj->first_ptr_ = p;
      slot = obj;
    }
  }
  // Native Release runs outside every engine lock: it may call back into the host.
  if (iface.refcounted) {
    if (extra) native_release(extra);
    native_release(unknown);
  }
  out.identity = obj->identity();
  out.object = std::move(obj);
  out.iface = &iface;
  out.home = current_apartment();
  return true;
}

bool ObjectSpace::callback_to_native(const CallbackInfo& info, const Value& v, void*& code, std::string& why) {
  return callback_code(info, v, nullptr, nullptr, code, why);  // a host function's result: registered ones only
}

bool ObjectSpace::to_host(void* p, const Interface& iface, bool transfer, Value& out, std::string& error) {
  if (!p) {
    out = Value();
    return true;
  }
  if (HostObject* h = host_object_of(p)) {
    // The host's own object came back: the host gets it, not a wrapper of a wrapper.
    std::shared_ptr<HostObject> mine = h->weak_from_this().lock();
    if (!mine) {
      error = "native code handed back host object '" + h->name_ + "' after it was destroyed";
      return false;
    }
    // A forwarder stands for a proxy: the host gets the proxy back, usable here.
    Value back = h->forwards_.is_null() ? Value(mine) : h->forwards_;
    if (!h->forwards_.is_null()) marshal_value_for(back, current_apartment());
    if (transfer && iface.refcounted) h->release();  // the host holds it; native's reference is returned
    out = std::move(back);
    return true;
  }
  ObjectRef ref;
  if (!wrap(p, iface, transfer, ref, error)) return false;
  out = Value(std::move(ref));
  return true;
}

bool ObjectSpace::to_native(const Value& v, const Interface& iface, bool transfer, bool nullable, void*& out,
                            std::string& error) {
  out = nullptr;
  if (v.is_null()) {
    if (nullable) return true;
    error = "null is not allowed here (not nullable)";
    return false;
  }
  if (v.is<ObjectRef>()) {
    const ObjectRef& r = v.as<ObjectRef>();
    if (!usable_here(r.home)) {
      error = raise_error(ErrorId::wrong_apartment,
                          wrong_apartment("this " + (r.iface ? r.iface->name : iface.name) + " reference", r.home,
                              "marshal it with marshal_interface and pass the proxy")).message;
      return false;
    }
    if (r.remote) {
      error = "an object of another process (" + (r.iface ? r.iface->name : iface.name) + " of " +
              r.remote->host().typemap().file + ") can be passed only to functions and methods of the library it "
              "came from";
      return false;
    }
    if (r.proxy) {
      // Native code here gets a host object whose methods call through the proxy.
      auto fwd = forwarder(r, iface, error);
      if (!fwd) return false;
      out = ccw_for(*fwd, iface, error);
      if (!out) return false;
      if (transfer && iface.refcounted) fwd->add_ref();
      return true;
    }
    if (!r.object) {
      error = "an empty object reference";
      return false;
    }
    out = r.object->pointer(iface, error);
    if (!out) return false;
    if (transfer && iface.refcounted) native_add_ref(out);
    return true;
  }
  if (v.is<std::shared_ptr<HostObject>>()) {
    HostObject& h = *v.as<std::shared_ptr<HostObject>>();
    out = ccw_for(h, iface, error);
    if (!out) return false;
    if (transfer && iface.refcounted) h.add_ref();
    return true;
  }
  error = "expected an object implementing " + iface.name + " (a native object or a host object), got " + v.describe();
  return false;
}

void* ObjectSpace::ccw_for(HostObject& h, const Interface& iface, std::string& error) {
  const Typemap& tm = lib_.typemap();
  std::lock_guard lock(h.mutex_);
  for (auto& c : h.ccws_)
    if (c->space == this && c->iface == &iface) return c.get();
  // What the host object implements: its declared interfaces (and their
  // bases), or, when it declares none, the interfaces it is passed as.
  if (!h.interface_names_.empty()) {
    bool found = false;
    for (const std::string& n : h.interface_names_) {
      auto it = tm.interfaces.find(n);
      if (it == tm.interfaces.end()) {
        error = "host object '" + h.name_ + "' declares interface '" + n + "', which " + tm.file + " does not have";
        return nullptr;
      }
      found = found || derives(&it->second, &iface);
    }
    if (!found) {
      std::string list;
      for (const std::string& n : h.interface_names_) list += (list.empty() ? "" : ", ") + n;
      error = "host object '" + h.name_ + "' does not implement " + iface.name + " (it implements " + list + ")";
      return nullptr;
    }
  }
  // Each method's host function, resolved once per wrapper, by vtable slot:
  // a call from native code looks nothing up.
  auto c = std::make_unique<HostObject::Ccw>();
  c->fns.assign(iface.slot_count(), nullptr);
  for (const Interface* i = &iface; i; i = i->base) {
    if (is_iunknown(*i)) continue;
    for (const Method& m : i->methods) {
      c->fns[m.slot] = h.method(*i, m.name);
      if (!c->fns[m.slot]) {
        error = "host object '" + h.name_ + "' does not implement " + i->name + "." + m.name + " (give it a method '" +
                m.name + "' or '" + i->name + "." + m.name + "')";
        return nullptr;
      }
    }
  }
  void* const* vt = vtable(iface, error);
  if (!vt) return nullptr;
  c->vtbl = vt;
  c->owner = &h;
  c->iface = &iface;
  c->space = this;
  c->lib = lib_.keep_loaded();
  h.ccws_.push_back(std::move(c));
  if (h.interface_names_.empty() &&
      std::find(h.implemented_.begin(), h.implemented_.end(), &iface) == h.implemented_.end())
    h.implemented_.push_back(&iface);
  return h.ccws_.back().get();
}

void* const* ObjectSpace::vtable(const Interface& iface, std::string& error) {
  std::lock_guard lock(mutex_);
  if (auto it = vtables_.find(&iface); it != vtables_.end()) return it->second.data();
  const TypeRegistry& reg = lib_.context().types();
  std::vector<void*> slots(iface.slot_count(), nullptr);
  std::vector<const Interface*> chain;
  for (const Interface* i = &iface; i; i = i->base) chain.push_back(i);
  std::reverse(chain.begin(), chain.end());  // base first
  std::vector<std::unique_ptr<MethodThunk>> made;
  for (const Interface* i : chain) {
    if (is_iunknown(*i)) {
      slots[0] = reinterpret_cast<void*>(&HostObject::ccw_query);
      slots[1] = reinterpret_cast<void*>(&HostObject::ccw_add_ref);
      slots[2] = reinterpret_cast<void*>(&HostObject::ccw_release);
      continue;
    }
    for (const Method& m : i->methods) {
      const std::string where = "host object method " + i->name + "." + m.name + ": ";
      auto t = std::make_unique<MethodThunk>();
      t->space = this;
      t->iface = i;
      t->method = &m;
      t->atypes.push_back(&ffi_type_pointer);  // this
      for (const Param& p : m.params) {
        if (p.dir != Dir::in && reg.get(p.type).kind != Kind::ptr) {
          error = where + "parameter '" + p.name + "': host objects write out and inout parameters through "
                  "{\"ptr\": T} only (one value)";
          return nullptr;
        }
        ffi_type* ft = lib_.context().ffi().lower(reg, p.type, error);
        if (!ft) return nullptr;
        t->atypes.push_back(ft);
      }
      const TypeDesc& rd = reg.get(m.returns);
      if (rd.kind == Kind::string || rd.kind == Kind::array) {
        error = where + "a host object cannot return a " + std::string(kind_name(rd.kind)) +
                " (native code could not know how to free it; use an out parameter)";
        return nullptr;
      }
      ffi_type* rt = lib_.context().ffi().lower(reg, m.returns, error);
      if (!rt) return nullptr;
      ffi_abi abi = FFI_DEFAULT_ABI;
      if (!ffi_abi_of(m.callconv, abi, error)) {
        error = where + error;
        return nullptr;
      }
      if (ffi_prep_cif(&t->cif, abi, static_cast<unsigned>(t->atypes.size()), rt, t->atypes.data()) != FFI_OK) {
        error = where + "libffi cannot prepare its signature";
        return nullptr;
      }
      t->returns_value = rd.kind != Kind::void_;
      t->ret_size = std::max<std::size_t>(rd.size, sizeof(ffi_arg));
      if (t->returns_value) {
        // What native code receives when the host method fails: E_FAIL for an
        // HRESULT, else the method's on_error value, else zero.
        std::vector<std::byte> buffer(t->ret_size);  // a return in memory: libffi's ret is the caller's
        t->on_error.assign(t->ret_size, std::byte{0});
        std::byte* value = buffer.data();
        if (m.hresult) {
          std::memcpy(value, &hr::fail, sizeof hr::fail);
        } else if (m.on_error.present) {
          Arena arena;
          Marshaler mm(reg, arena, &lib_.handles());
          Ctx c;
          c.nullable = true;
          if (!mm.to_native(m.returns, Value::from_json(m.on_error.value), value, c)) {
            error = where + "on_error: " + mm.error;
            return nullptr;
          }
        }
        store_return(rd, value, t->on_error.data());
      }
      void* code = nullptr;
      t->closure = static_cast<ffi_closure*>(ffi_closure_alloc(sizeof(ffi_closure), &code));
      if (!t->closure || ffi_prep_closure_loc(t->closure, &t->cif, &ObjectSpace::method_trampoline, t.get(), code) != FFI_OK) {
        error = where + "cannot allocate a closure";
        if (t->closure) ffi_closure_free(t->closure);
        return nullptr;
      }
      slots[m.slot] = code;
      made.push_back(std::move(t));
    }
  }
  for (auto& t : made) thunks_.push_back(std::move(t));
  auto& stored = vtables_[&iface] = std::move(slots);
  std::unique_lock vlock(ccw_vtables_mutex);
  ccw_vtables().insert(stored.data());
  return stored.data();
}

void ObjectSpace::method_trampoline(ffi_cif*, void* ret, void** args, void* user) {
  auto* t = static_cast<MethodThunk*>(user);
  void* self;
  std::memcpy(&self, args[0], sizeof self);
  auto* c = static_cast<HostObject::Ccw*>(self);
  HostObject* h = c->owner;
  ObjectSpace& space = *t->space;
  const Method& m = *t->method;
  const HostFunction* fn = c->fns[m.slot];  // resolved when the wrapper was made
  std::string error;
  bool ok = true;
  if (ok) {
    auto run = [&] {
      Arena arena;
      Marshaler mm(space.lib_.context().types(), arena, &space.lib_.handles());
      mm.refs = &space;
      mm.max_buffer = space.lib_.max_buffer();  // bounded by the library's limit, as its calls are
      ok = run_host_function(mm, m, args + 1, ret, *fn, error);
    };
    // A host object made in an STA runs there, whatever thread native code calls from.
    const auto& home = h->home_;
    if (home && home->kind() == Apartment::Kind::sta && home->thread() != std::this_thread::get_id()) {
      std::string routed;
      if (!run_in(home, run, routed)) {
        ok = false;
        error = routed;
      }
    } else {
      run();
    }
  }
  if (!ok) {
    callback_note_error("method " + t->iface->name + "." + m.name + " of host object '" + h->name_ + "' failed: " + error);
    if (t->returns_value) std::memcpy(ret, t->on_error.data(), t->ret_size);
  }
}

// ---- calls ---------------------------------------------------------------------------------

bool ObjectSpace::find_method(const ObjectRef& obj, std::string_view method, MethodRef& out, std::string& error) {
  const Typemap& tm = lib_.typemap();
  if ((!obj.object && !obj.proxy && !obj.remote) || !obj.iface) {
    error = tm.file + ": an empty object reference";
    return false;
  }
  // "I.M" names the interface; a bare name resolves on the reference's own
  // interface first, then on the others the object was obtained as.
  const Interface* view = nullptr;
  const Interface* owner = nullptr;
  const Method* m = nullptr;
  std::string_view name = method;
  auto search = [&](const Interface* v) {
    for (const Interface* i = v; i && !m; i = i->base)
      for (const Method& x : i->methods)
        if (x.name == name) {
          view = v;
          owner = i;
          m = &x;
          break;
        }
  };
  if (auto dot = name.find('.'); dot != std::string_view::npos) {
    auto it = tm.interfaces.find(std::string(name.substr(0, dot)));
    if (it == tm.interfaces.end()) {
      error = tm.file + ": no interface '" + std::string(name.substr(0, dot)) + "' (in method name '" + std::string(name) + "')";
      return false;
    }
    name = name.substr(dot + 1);
    search(&it->second);
  } else {
    search(obj.iface);
    if (!m && obj.object)
      for (const Interface* other : obj.object->interfaces()) search(other);
  }
  if (!m) {
    std::string names;
    for (const Interface* i = obj.iface; i; i = i->base)
      for (const Method& x : i->methods) names += (names.empty() ? "" : ", ") + x.name;
    error = tm.file + ": " + obj.iface->name + " has no method '" + std::string(method) + "' (methods: " + names + ")";
    return false;
  }
  if (is_iunknown(*owner)) {
    error = tm.file + ": " + owner->name + "." + m->name + " is the engine's: wrappers count references themselves "
            "(drop the reference to release it; ask for another interface with query)";
    return false;
  }
  out = {view, owner, m};
  return true;
}

bool ObjectSpace::call(const ObjectRef& obj, std::string_view method, std::span<const Value> args, CallResult& result,
                       std::string& error) {
  ValuePointers p(args);
  return call(obj, method, p.view, result, error);
}

bool ObjectSpace::call(const ObjectRef& obj, std::string_view method, std::span<const Value* const> args,
                       CallResult& result, std::string& error) {
  const Typemap& tm = lib_.typemap();
  if (obj.remote && obj.iface) {  // another process; a reference of another apartment still is not this one's
    if (!usable_here(obj.home)) {
      error = raise_error(ErrorId::wrong_apartment,
                          tm.file + ": " + obj.iface->name + "." + std::string(method) + ": " +
                              wrong_apartment("this " + obj.iface->name + " reference (to an object of another process)",
                                              obj.home, "use it in the apartment that received it"))
                  .message;
      return false;
    }
    return obj.remote->call(*obj.iface, method, args, result, error);
  }
  MethodRef ref;
  if (!find_method(obj, method, ref, error)) return false;
  const Interface* view = ref.view;
  const Interface* owner = ref.owner;
  const Method* m = ref.method;
  if (!usable_here(obj.home)) {
    error = raise_error(ErrorId::wrong_apartment,
                        tm.file + ": " + owner->name + "." + m->name + ": " +
            wrong_apartment("this " + obj.iface->name + (obj.proxy ? " proxy" : " reference"), obj.home,
                            "marshal it with marshal_interface and call through the proxy")).message;
    return false;
  }
  if (obj.proxy) {
    std::vector<Value> copied;  // marshaled to the home apartment: copied anyway
    copied.reserve(args.size());
    for (const Value* a : args) copied.push_back(*a);
    return call_through(obj, method, copied, result, error);
  }
  void* self = obj.object->pointer(*view, error);
  if (!self) {
    error = tm.file + ": " + view->name + "." + m->name + ": " + error;
    return false;
  }
  if (obj.home && obj.home->kind() == Apartment::Kind::neutral) {
    SyncDomain::Entry inside(obj.object->calls_);  // neutral: the caller's thread, one call chain at a time
    return lib_.call_method(*owner, *m, self, vtable_of(self)[m->slot], args, result, error);
  }
  return lib_.call_method(*owner, *m, self, vtable_of(self)[m->slot], args, result, error);
}

// Runs fn(direct reference) in the stub's home apartment; false with a message
// when the apartment has ended or fn failed.
template <class F> bool in_home(Stub& stub, std::string& failure, F fn) {
  bool ok = false;
  const bool ran = run_in(stub.home, [&] {
    ObjectRef direct;
    if (stub.get(direct, failure)) ok = fn(direct);
  }, failure);
  return ran && ok;
}

bool ObjectSpace::call_through(const ObjectRef& obj, std::string_view method, std::span<const Value> args,
                               CallResult& result, std::string& error) {
  const std::shared_ptr<Apartment> here = current_apartment();
  std::string failure;
  // Everything that touches the object runs in its apartment: the arguments
  // are made usable there, the results made usable here, and the direct
  // reference never leaves.
  const bool ok = in_home(*obj.proxy->stub, failure, [&](ObjectRef& direct) {
    direct.iface = obj.iface;
    std::vector<Value> copied(args.begin(), args.end());
    for (Value& a : copied) marshal_value_for(a, obj.proxy->stub->home);
    CallResult r;
    const bool called = call(direct, method, copied, r, failure);
    marshal_value_for(r.ret, here);
    for (auto& [n, v] : r.out) marshal_value_for(v, here);
    if (called) result = std::move(r);
    return called;
  });
  if (!ok) {
    error = failure.rfind(lib_.typemap().file, 0) == 0 ? failure
                                                       : lib_.typemap().file + ": " + obj.iface->name + "." +
                                                             std::string(method) + " through a proxy: " + failure;
    return false;
  }
  return true;
}

std::shared_ptr<HostObject> ObjectSpace::forwarder(const ObjectRef& proxy, const Interface& iface, std::string& error) {
  std::lock_guard lock(proxy.proxy->mutex);
  auto& slot = proxy.proxy->forwarders[&iface];
  if (slot) return slot;
  // Its own proxy (not this one, which holds the forwarder): no cycle.
  auto own = std::make_shared<Proxy>();
  own->stub = proxy.proxy->stub;
  own->lib = proxy.proxy->lib;
  own->identity = proxy.proxy->identity;
  ObjectRef target{nullptr, &iface, proxy.home, own};
  std::map<std::string, std::shared_ptr<HostFunction>> methods;
  for (const Interface* i = &iface; i; i = i->base) {
    if (is_iunknown(*i)) continue;
    for (const Method& m : i->methods) {
      const std::string name = i->name + "." + m.name;
      methods[name] = std::make_shared<HostFunction>(HostFunction{
          name, [this, target, name](const std::vector<Value>& args, Value& result, std::string& err) {
            CallResult r;
            if (!call(target, name, args, r, err)) return false;
            if (r.out.empty()) {
              result = std::move(r.ret);
            } else {
              Record rec{{"return", std::move(r.ret)}};
              for (auto& [n, v] : r.out) rec.emplace_back(n, std::move(v));
              result = Value(std::move(rec));
            }
            return true;
          }});
    }
  }
  auto fwd = std::make_shared<HostObject>("proxy of " + iface.name, std::vector<std::string>{iface.name}, std::move(methods));
  fwd->forwards_ = Value(target);
  (void)error;
  slot = fwd;
  return fwd;
}

bool ObjectSpace::query(const ObjectRef& obj, const std::string& iface, Value& out, std::string& error) {
  const Typemap& tm = lib_.typemap();
  auto it = tm.interfaces.find(iface);
  if (it == tm.interfaces.end()) {
    std::string names;
    for (const auto& [n, _] : tm.interfaces) names += (names.empty() ? "" : ", ") + n;
    error = tm.file + ": no interface '" + iface + "' (interfaces: " + names + ")";
    return false;
  }
  if (obj.remote) {  // another process
    if (!usable_here(obj.home)) {
      error = raise_error(ErrorId::wrong_apartment,
                          tm.file + ": query(" + iface + "): " +
                              wrong_apartment("this " + (obj.iface ? obj.iface->name : std::string("object")) +
                                                  " reference (to an object of another process)",
                                              obj.home, "use it in the apartment that received it"))
                  .message;
      return false;
    }
    return obj.remote->query(it->second, out, error);
  }
  if (!usable_here(obj.home)) {
    error = raise_error(ErrorId::wrong_apartment,
                        tm.file + ": query(" + iface + "): " + wrong_apartment("this reference", obj.home, "")).message;
    return false;
  }
  if (obj.proxy) {
    const std::shared_ptr<Apartment> here = current_apartment();
    std::string failure;
    const bool ok = in_home(*obj.proxy->stub, failure, [&](ObjectRef& direct) {
      const bool found = query(direct, iface, out, failure);
      marshal_value_for(out, here);
      return found;
    });
    if (!ok) error = failure;
    return ok;
  }
  if (!obj.object) {
    error = tm.file + ": an empty object reference";
    return false;
  }
  if (!obj.object->pointer(it->second, error)) {
    error = tm.file + ": " + error;
    return false;
  }
  out = Value(ObjectRef{obj.object, &it->second, obj.home, nullptr, obj.identity});
  return true;
}

bool ObjectSpace::create(const std::string& cls, std::span<const Value> args, Value& out, std::string& error) {
  const Typemap& tm = lib_.typemap();
  auto it = tm.classes.find(cls);
  if (it == tm.classes.end()) {
    std::string names;
    for (const auto& [n, _] : tm.classes) names += (names.empty() ? "" : ", ") + n;
    error = tm.file + ": no class '" + cls + "' (classes: " + names + ")";
    return false;
  }
  const ClassDesc& c = it->second;
  const std::shared_ptr<Apartment> here = current_apartment();
  if (!here) return make_here(c, args, out, error);  // no apartments: as created
  // Where the object lives follows its class's threading and the creator's
  // apartment (TYPEMAP.md, Apartments); the creator gets a proxy when it
  // lives elsewhere.
  std::shared_ptr<Apartment> where = here;
  switch (c.threading) {
    case Threading::both: break;
    case Threading::neutral: where = neutral_apartment(); break;
    case Threading::apartment: if (here->kind() != Apartment::Kind::sta) where = host_sta(); break;
    case Threading::free: if (here->kind() != Apartment::Kind::mta) where = the_mta(); break;
  }
  if (where == here || where->kind() == Apartment::Kind::neutral) {
    if (!make_here(c, args, out, error)) return false;
    if (where->kind() == Apartment::Kind::neutral) out.as<ObjectRef>().home = where;
    return true;
  }
  bool ok = false;
  std::string failure;
  std::vector<Value> copied(args.begin(), args.end());
  const bool ran = run_in(where, [&] {
    for (Value& a : copied) marshal_value_for(a, where);
    ok = make_here(c, copied, out, failure);
    copied.clear();
    marshal_value_for(out, here);
  }, failure);
  if (!ran || !ok) {
    error = failure;
    return false;
  }
  return true;
}

bool ObjectSpace::make_here(const ClassDesc& c, std::span<const Value> args, Value& out, std::string& error) {
  const Typemap& tm = lib_.typemap();
  CallResult r;
  if (!lib_.call_function(c.create->name, args, r, error)) return false;
  // The factory yields the object as its return value or through an out pointer.
  Value obj = std::move(r.ret);
  if (!obj.is<ObjectRef>())
    for (auto& [name, v] : r.out)
      if (v.is<ObjectRef>()) obj = std::move(v);
  if (!obj.is<ObjectRef>()) {
    error = tm.file + ": class " + c.name + ": " + c.create->name + " returned no object";
    return false;
  }
  ObjectRef ref = obj.as<ObjectRef>();
  if (ref.remote) {  // made in another process (engine/remote): asked there for the class's interface
    if (ref.iface == c.iface) {
      out = Value(std::move(ref));
      return true;
    }
    return ref.remote->query(*c.iface, out, error);
  }
  ref.object->cls_ = &c;
  if (ref.iface != c.iface) {
    if (!ref.object->pointer(*c.iface, error)) {
      error = tm.file + ": class " + c.name + ": " + error;
      return false;
    }
    ref.iface = c.iface;
  }
  out = Value(std::move(ref));
  return true;
}

// ---- proxies and tokens ----------------------------------------------------------------------

ObjectHost& library_of(const ObjectRef& ref) {
  if (ref.remote) return ref.remote->host();
  return ref.proxy ? *ref.proxy->lib : ref.object->library();
}

void* identity_of(const ObjectRef& ref) { return ref.identity; }

Stub::~Stub() {
  ObjectRef d;
  {
    std::lock_guard lock(mutex);
    if (released) return;
    released = true;
    d = std::move(direct);
  }
  if (!d.object || usable_here(home)) return;  // released here
  // The object's references are released in its own apartment.
  std::string ignored;
  auto* held = &d;
  run_in(home, [held] { *held = ObjectRef(); }, ignored);
}

void Stub::release_now() {
  ObjectRef d;
  std::lock_guard lock(mutex);
  released = true;
  d = std::move(direct);
}

bool Stub::get(ObjectRef& out, std::string& error) {
  std::lock_guard lock(mutex);
  if (released) {
    error = raise_error(ErrorId::apartment_ended, "the object's apartment, " + describe(home) + ", has ended").message;
    return false;
  }
  out = direct;
  return true;
}

void marshal_value_for(Value& v, const std::shared_ptr<Apartment>& to) {
  if (v.is<List>()) {
    for (Value& x : v.as<List>()) marshal_value_for(x, to);
    return;
  }
  if (v.is<Record>()) {
    for (auto& [n, x] : v.as<Record>()) marshal_value_for(x, to);
    return;
  }
  if (!v.is<ObjectRef>()) return;
  ObjectRef r = v.as<ObjectRef>();
  if (r.proxy) {
    if (r.proxy->stub->home == to) {  // back home: the direct reference
      ObjectRef direct;
      std::string ended;
      if (r.proxy->stub->get(direct, ended)) {
        direct.iface = r.iface;
        v = Value(std::move(direct));
        return;
      }
    }
    r.home = to;  // the same proxy, now this apartment's
    v = Value(std::move(r));
    return;
  }
  if (r.remote && !r.object) {
    // Another process's object (engine/remote): its calls go over the
    // connection from any thread, and the serving side serializes them, so
    // the reference itself moves, re-homed (as COM marshals an out-of-process
    // proxy's object reference, never a proxy of a proxy). Identity holds: the
    // same remote proxy.
    if (r.home && r.home != to) {
      r.home = to;
      v = Value(std::move(r));
    }
    return;
  }
  if (!r.home || r.home->kind() == Apartment::Kind::neutral || r.home == to || !r.object) return;
  auto proxy = std::make_shared<Proxy>();
  proxy->lib = r.object->library().keep_loaded();
  proxy->identity = r.object->identity();
  void* identity = proxy->identity;
  const Interface* iface = r.iface;
  auto home = r.home;
  proxy->stub = std::make_shared<Stub>(std::move(r), home);
  register_stub(home, proxy->stub);
  v = Value(ObjectRef{nullptr, iface, to, std::move(proxy), identity});
}

void register_stub(const std::shared_ptr<Apartment>& home, const std::shared_ptr<Stub>& stub) {
  if (!home->lend(stub)) stub->release_now();  // its apartment has ended: nothing will call it
}

namespace {
struct TokenEntry {
  Value ref;
  std::string ended;            // set when the apartment it was marshaled in ended first
  std::shared_ptr<Lent> lease;  // what that apartment releases when it ends
};
std::mutex tokens_mutex;
std::map<std::uint64_t, TokenEntry>& tokens() {
  static auto* t = new std::map<std::uint64_t, TokenEntry>;
  return *t;
}
std::uint64_t next_token = 1;

// A token not yet unmarshaled, as its apartment lent it: the reference is
// released when the apartment ends, and the token then says where it was made.
struct TokenLease : Lent {
  std::uint64_t token = 0;
  const Apartment* home = nullptr;
  void release_now() override {
    Value dropped;
    {
      std::lock_guard lock(tokens_mutex);
      auto it = tokens().find(token);
      if (it == tokens().end() || !it->second.ended.empty()) return;
      it->second.ended = home->describe();
      dropped = std::move(it->second.ref);
      it->second.ref = Value();
    }
    // Released here, on the ending apartment's thread, outside the lock.
  }
};
}  // namespace

bool marshal_interface(const Value& v, std::uint64_t& token, std::string& error) {
  if (!v.is<ObjectRef>() && !v.is<std::shared_ptr<HostObject>>()) {
    error = "marshal_interface: expected an object, got " + v.describe();
    return false;
  }
  if (v.is<ObjectRef>() && !usable_here(v.as<ObjectRef>().home)) {
    error = raise_error(ErrorId::wrong_apartment,
                        "marshal_interface: " +
            wrong_apartment("the reference", v.as<ObjectRef>().home, "marshal it where it was obtained")).message;
    return false;
  }
  const auto here = current_apartment();
  auto lease = std::make_shared<TokenLease>();
  lease->home = here.get();
  {
    std::lock_guard lock(tokens_mutex);
    token = next_token++;
    lease->token = token;
    tokens()[token] = TokenEntry{v, {}, here ? lease : nullptr};
  }
  if (here) here->lend(lease);  // the calling thread's apartment is alive
  return true;
}

bool unmarshal_interface(std::uint64_t token, Value& out, std::string& error) {
  const auto here = current_apartment();
  if (!here) {
    error = "unmarshal_interface: the calling thread is in no apartment (enter an STA or the MTA first)";
    return false;
  }
  TokenEntry e;
  {
    std::lock_guard lock(tokens_mutex);
    auto it = tokens().find(token);
    if (it == tokens().end()) {
      error = "unmarshal_interface: token " + std::to_string(token) +
              " is unknown or was already used (each token is unmarshaled once)";
      return false;
    }
    e = std::move(it->second);
    tokens().erase(it);
  }
  if (!e.ended.empty()) {
    error = raise_error(ErrorId::apartment_ended, "unmarshal_interface: token " + std::to_string(token) + " was marshaled in " + e.ended).message;
    return false;
  }
  out = std::move(e.ref);
  marshal_value_for(out, here);
  return true;
}

}  // namespace marshal::engine
