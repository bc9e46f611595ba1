// marshal engine: a host's argument list against a signature, before the call.
// Parameters the engine computes (TYPEMAP.md "value": sizeof, count_of,
// bytes_of) are not given by a host: the arguments are the in/inout parameters
// in order with the computed ones left out (what Plan::call takes). A host may
// instead give every in/inout parameter, the computed ones too (the C
// prototype's order, as `marshal call ... crc32 0 BUF 5` does): each computed
// one must then equal what the engine computes from the other arguments, and
// is dropped before the call; a different value is an error naming the
// parameter (index and name), the value given and the value computed.
// Every host path applies this rule here: the CLI, the C API, the surrogate
// and the isolated library's proxy, the Lua host.
#pragma once

#include "types/registry.hpp"
#include "types/typemap.hpp"
#include "values/value.hpp"

#include <span>
#include <string>
#include <vector>

namespace marshal::engine {

// The number of arguments of the long form (every in/inout parameter of the
// fixed part), or 0 when the signature has no long form (nothing computed, or
// variadic: there a count cannot tell the forms apart).
std::size_t full_arity(const Function& sig);

// args are the host's arguments for function `sig` of typemap file `file`.
// When they are the long form (full_arity() of them), checks each computed
// one and points args at the others (the short form, kept in `storage`);
// otherwise leaves args as they are (the call checks their number). False
// with the error (id invalid_argument, the parameter, got and expected) when
// a computed one differs from what the engine computes.
bool host_arguments(const TypeRegistry& reg, const std::string& file, const Function& sig,
                    std::span<const Value* const>& args, std::vector<const Value*>& storage, std::string& error);

}  // namespace marshal::engine
