// marshal remote: what a serving side received from its client as
// capabilities standing for things that live in the client (host functions,
// host objects), each with the local stand-in made for it here. One stand-in
// per capability while it lives, found by the capability's hook (capnp gives
// one import per export, so the same host-side thing arrives as the same
// stand-in: the callback pool reuses its closure, native code sees one
// object); found by the stand-in too (sent back, it becomes the capability
// again). I/O thread only; an entry goes once its stand-in has gone.
#pragma once

#include <capnp/capability.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace marshal::engine::remote {

template <class Client, class Local>
class ImportTable {
 public:
  struct Entry {
    Client cap = nullptr;
    std::weak_ptr<Local> local;
    const void* hook = nullptr;
    std::string name;
  };

  static const void* hook_of(Client& cap) { return capnp::ClientHook::from(kj::cp(cap)).get(); }

  // The live stand-in for the capability with this hook, or null.
  std::shared_ptr<Local> find(const void* hook) {
    auto h = by_hook_.find(hook);
    if (h == by_hook_.end()) return nullptr;
    if (auto local = entries_.at(h->second).local.lock()) return local;
    by_hook_.erase(h);  // its stand-in is going: the next one replaces it
    return nullptr;
  }
  // The entry of a stand-in, or null.
  Entry* entry_of(const Local* local) {
    auto p = by_local_.find(local);
    return p == by_local_.end() ? nullptr : &entries_.at(p->second);
  }
  Entry* entry(std::uint64_t id) {
    auto it = entries_.find(id);
    return it == entries_.end() ? nullptr : &it->second;
  }
  // An id for the next add (its stand-in may need it before it exists).
  std::uint64_t reserve() { return ++next_; }
  void add(std::uint64_t id, Client cap, const void* hook, const std::shared_ptr<Local>& local, std::string name) {
    entries_.emplace(id, Entry{kj::mv(cap), local, hook, std::move(name)});
    by_hook_[hook] = id;
    by_local_[local.get()] = id;
  }
  // Its stand-in has gone: the entry goes, and with it the capability.
  void erase(std::uint64_t id) {
    auto it = entries_.find(id);
    if (it == entries_.end() || !it->second.local.expired()) return;
    if (auto h = by_hook_.find(it->second.hook); h != by_hook_.end() && h->second == id) by_hook_.erase(h);
    for (auto p = by_local_.begin(); p != by_local_.end(); ++p)
      if (p->second == id) {
        by_local_.erase(p);
        break;
      }
    entries_.erase(it);
  }

 private:
  std::map<std::uint64_t, Entry> entries_;
  std::map<const void*, std::uint64_t> by_hook_;
  std::map<const Local*, std::uint64_t> by_local_;
  std::uint64_t next_ = 0;
};

}  // namespace marshal::engine::remote
