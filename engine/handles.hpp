// marshal engine: handle identity.
// The same native handle value of a handle type maps to one host HandleBox while
// the host holds it; when the host drops the last reference the type's release
// function runs once.
#pragma once

#include "value.hpp"

#include <functional>
#include <map>
#include <memory>
#include <mutex>

namespace marshal {

class HandleTable {
 public:
  using Releaser = std::function<std::function<void(std::int64_t)>(TypeId)>;
  explicit HandleTable(Releaser releaser) : releaser_(std::move(releaser)) {}

  std::shared_ptr<HandleBox> wrap(TypeId type, const std::string& type_name, std::int64_t value) {
    std::lock_guard lock(mutex_);
    auto key = std::make_pair(type, value);
    if (auto it = map_.find(key); it != map_.end())
      if (auto alive = it->second.lock()) return alive;
    auto box = std::make_shared<HandleBox>();
    box->type = type;
    box->value = value;
    box->type_name = type_name;
    if (releaser_) box->release = releaser_(type);
    map_[key] = box;
    return box;
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

}  // namespace marshal
