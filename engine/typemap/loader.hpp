// marshal engine: typemap loader internals (private to the engine).
// Reads a parsed typemap in passes: declare every name, resolve aliases, fill
// named types, complete layouts, then signatures, interfaces, classes; each
// problem becomes a Diagnostic at its JSON Pointer, and a failed name poisons its
// users silently so one mistake gives one error.
#pragma once

#include "typemap/json_reader.hpp"
#include "types/layout.hpp"
#include "types/registry.hpp"
#include "types/typemap.hpp"

#include <initializer_list>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace marshal::engine::detail {

using json = nlohmann::ordered_json;  // declaration order matters (enum items, fields)

// Where a type expression stands: decides which counts it may use and whether
// arrays/strings are inline storage.
struct TypeCtx {
  enum class Where : std::uint8_t { param, returns, field, pointee, element, alias };
  Where where = Where::param;
  const std::vector<std::string>* names = nullptr;  // sibling params or fields
  const std::unordered_map<std::string_view, std::uint32_t>* index = nullptr;  // names: first position of each
  bool params = false;                              // names are parameters (else fields)
  bool allow_return_count = false;
  bool allow_void = false;
};

// A count that refers to another parameter or field, checked once all siblings
// have types.
struct CountRef {
  std::string pointer;
  Count::Source source;
  std::uint32_t index;
  std::string name;
};

struct PendingValue {   // a value that must fit a type (sentinels, on_error)
  std::string pointer;
  TypeId type;
  json value;
};

struct PendingFree {    // free_with / release naming a function of this typemap
  std::string pointer;
  const FreeWith* target;
  std::string what;      // "free_with" or "release"
};

class Loader {
 public:
  Loader(TypeRegistry& reg, Typemap& tm, std::vector<Diagnostic>& errors)
      : reg_(reg), tm_(tm), errors_(errors) {}
  void run(const json& root);
  // A type expression given at run time (a variadic argument's type), read
  // against the typemap this loader's Typemap already holds (loaded): what a
  // parameter's type may be, with constant or sentinel counts only (there
  // are no sibling parameters). Errors point inside the expression.
  TypeId parse_detached(const json& j);

 private:
  // ---- diagnostics and strict object reading (typemap_loader.cpp) ----
  void error(const std::string& pointer, std::string message);
  bool is_object(const json& j, const std::string& p, std::string_view what);
  bool check_keys(const json& j, const std::string& p, std::initializer_list<std::string_view> allowed);
  bool read_bool(const json& j, const std::string& p, bool& out);
  bool read_string(const json& j, const std::string& p, std::string& out);
  bool read_name(const json& j, const std::string& p, std::string& out, std::string_view what);
  template <class E>
  bool read_enum(const json& j, const std::string& p, std::initializer_list<std::pair<std::string_view, E>> choices, E& out);
  bool check_value(const std::string& p, TypeId t, const json& v);

  // ---- passes (typemap_loader.cpp) ----
  void read_defaults(const json& j, const std::string& p);
  void read_library(const json& j, const std::string& p);
  void declare_names(const json& root);
  void read_callbacks(const json& j);
  void read_interfaces(const json& j);
  void check_method_names(const std::vector<std::string>& order);
  void read_functions(const json& j);
  void read_classes(const json& j);
  void read_constants(const json& j);
  void resolve_free_functions();
  bool read_signature(const json& j, const std::string& p, Signature& sig,
                      std::initializer_list<std::string_view> extra_keys, bool is_callback);
  void read_returns(const json& j, const std::string& p, Signature& sig, bool is_callback,
                    std::vector<CountRef>& refs);
  void read_free_with(const json& j, const std::string& p, FreeWith& out);
  void read_on_error(const json& j, const std::string& p, const Signature& sig, OnError& out);
  void check_count_refs(const std::vector<CountRef>& refs, const Signature& sig);
  bool read_computed(const json& j, const std::string& p, const std::string& param_pointer,
                     const std::vector<std::string>& names,
                     const std::unordered_map<std::string_view, std::uint32_t>& index, Param& prm);
  bool check_computed(Signature& sig, const std::string& params_pointer);

  // ---- type expressions (typemap_types.cpp) ----
  TypeId parse_type(const json& j, const std::string& p, const TypeCtx& ctx, std::vector<CountRef>& refs);
  TypeId parse_named(const std::string& name, const std::string& p, const TypeCtx& ctx);
  TypeId parse_kind_object(const json& j, const std::string& p, const TypeCtx& ctx, std::vector<CountRef>& refs,
                           TypeId named_target);
  bool parse_count(const json& j, const std::string& p, const TypeCtx& ctx, std::vector<CountRef>& refs,
                   Count& out, std::string_view what);
  void fill_record(const json& j, const std::string& p, TypeId id, bool is_union);
  void fill_enum(const json& j, const std::string& p, TypeId id);
  void fill_handle(const json& j, const std::string& p, TypeId id);
  TypeId resolve_alias(const std::string& name);
  void fill_named_types(const json& types);
  bool complete(TypeId id);
  void complete_all();
  std::string count_key(const Count& c) const;

  TypeRegistry& reg_;
  Typemap& tm_;
  std::vector<Diagnostic>& errors_;
  std::set<std::string> reported_;  // pointers already reported (one error per place)

  // Named types: the JSON of each and what it became.
  struct Named {
    const json* j = nullptr;
    std::string pointer;
    std::string kind;  // struct, union, enum, handle, alias, or "" (bad)
    TypeId id = no_type;
    enum class State : std::uint8_t { pending, resolving, done, failed } state = State::pending;
  };
  std::map<std::string, Named> named_;
  std::vector<std::string> alias_stack_;  // aliases being resolved, for cycle messages
  std::set<std::string> interface_names_;
  std::set<std::string> callback_names_;

  // Records and arrays created by this load, completed after all names are filled.
  struct RecordSite {
    std::string pointer;
    std::vector<std::string> field_pointers;
  };
  std::map<TypeId, RecordSite> records_;
  std::set<TypeId> to_complete_;
  std::set<TypeId> in_progress_;
  std::set<TypeId> failed_;

  std::vector<PendingValue> pending_values_;
  std::vector<PendingFree> pending_free_;
  std::deque<FreeWith> handle_release_;  // parsed handle 'release' values, for validation
  bool default_string_set_ = false;
  Encoding default_string_ = Encoding::utf8;
  TypeId default_bool_ = no_type;
  bool detached_ = false;  // parse_detached: no parameters or fields to count by
};

// Each name's first position (duplicates keep the first): finding a sibling
// by name in constant time keeps loading linear in the number of fields.
std::unordered_map<std::string_view, std::uint32_t> first_positions(const std::vector<std::string>& names);

bool is_identifier(std::string_view s);
std::string json_type_name(const json& j);
std::string did_you_mean(std::string_view got, const std::vector<std::string>& choices);

// Reads a string that must be one of a fixed set of names.
template <class E>
bool Loader::read_enum(const json& j, const std::string& p, std::initializer_list<std::pair<std::string_view, E>> choices,
                       E& out) {
  std::string list;
  std::vector<std::string> names;
  for (const auto& [name, value] : choices) {
    if (j.is_string() && j.get_ref<const std::string&>() == name) {
      out = value;
      return true;
    }
    list += (list.empty() ? "" : ", ") + std::string(name);
    names.emplace_back(name);
  }
  std::string got = j.is_string() ? "'" + j.get<std::string>() + "'" : json_type_name(j);
  error(p, "expected one of: " + list + "; got " + got + (j.is_string() ? did_you_mean(j.get<std::string>(), names) : ""));
  return false;
}

}  // namespace marshal::engine::detail
