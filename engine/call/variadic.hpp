// marshal engine: variadic arguments (TYPEMAP.md, functions: variadic_from).
// Each argument from variadic_from on comes as {"type": T, "value": V}: T is
// any type expression of the typemap (read once per distinct expression),
// V is converted to it, and C's default argument promotions apply.
#pragma once

#include "base/arena.hpp"
#include "convert/convert.hpp"
#include "values/value.hpp"

#include <ffi.h>
#include <string>

namespace marshal::engine {

class Library;

// One variadic argument ready for libffi: the type it is passed as (after
// promotion; an array is passed as a pointer to its first element), its
// libffi type, and its value in the arena.
struct VariadicArg {
  TypeId type = no_type;
  ffi_type* ffi = nullptr;
  void* slot = nullptr;
};

// false with a message (without the argument's index: the caller adds it).
bool variadic_to_native(Library& lib, Marshaler& m, Arena& arena, const Value& item, VariadicArg& out,
                        std::string& error);

}  // namespace marshal::engine
