// marshal engine: what a call takes and gives as host values.
#pragma once

#include "values/value.hpp"

#include <optional>
#include <span>
#include <vector>

namespace marshal {

// What the host sees of a call: the return value, every out/inout parameter by
// name, and errno when the function captures it.
struct CallResult {
  Value ret;
  Record out;
  std::optional<int> error_number;
};

// Host arguments by address, for the calls that take them so (no copy of a
// value): a small array on the stack for the usual counts.
struct ValuePointers {
  explicit ValuePointers(std::span<const Value> args) {
    if (args.size() > std::size(small)) big.resize(args.size());
    const Value** p = big.empty() ? small : big.data();
    for (std::size_t i = 0; i < args.size(); ++i) p[i] = &args[i];
    view = std::span<const Value* const>(p, args.size());
  }
  ValuePointers(const ValuePointers&) = delete;
  ValuePointers& operator=(const ValuePointers&) = delete;
  const Value* small[16];
  std::vector<const Value*> big;
  std::span<const Value* const> view;
};

}  // namespace marshal
