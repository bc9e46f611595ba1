// marshal engine: handle identity.
// The same native handle value of a handle type maps to one host HandleBox while
// the host holds it; when the host drops the last reference the type's release
// function runs once.
#pragma once

#include "values/value.hpp"

#include <functional>
#include <map>
#include <memory>
#include <mutex>

namespace marshal::engine {

class HandleTable {
 public:
  using Releaser = std::function<std::function<void(std::int64_t)>(TypeId)>;
  explicit HandleTable(Releaser releaser) : releaser_(std::move(releaser)) {}

  std::shared_ptr<HandleBox> wrap(TypeId type, const std::string& type_name, std::int64_t value) {
    std::lock_guard lock(mutex_);
    auto key = std::make_pair(type, value);
    if (auto it = map_.find(key); it != map_.end())
      if (auto alive = it->second.lock(); alive && !alive->released) return alive;
    auto box = std::make_shared<HandleBox>();
    box->type = type;
    box->value = value;
    box->type_name = type_name;
    if (releaser_) box->release = releaser_(type);
    map_[key] = box;
    return box;
  }
  // The host released box explicitly (a call of its type's release function is
  // about to free it): its value no longer names it. The same value returned
  // later is a new native handle and gets a host object of its own, never the
  // released one.
  void released(const std::shared_ptr<HandleBox>& box) {
    std::lock_guard lock(mutex_);
    box->released = true;
    auto it = map_.find(std::make_pair(box->type, box->value));
    // owner_before both ways: the same box, compared without taking a
    // reference (no destructor, so no release function, runs under the lock).
    if (it != map_.end() && !it->second.owner_before(box) && !box.owner_before(it->second)) map_.erase(it);
  }
  std::size_t live() {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (auto it = map_.begin(); it != map_.end();) {
      if (it->second.expired()) it = map_.erase(it);
      else { ++n; ++it; }
    }
    return n;
  }

 private:
  Releaser releaser_;
  std::mutex mutex_;
  std::map<std::pair<TypeId, std::int64_t>, std::weak_ptr<HandleBox>> map_;
};

}  // namespace marshal::engine
