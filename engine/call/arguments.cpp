// marshal engine: computed parameters given by a host (see arguments.hpp).
#include "call/arguments.hpp"

#include "base/error.hpp"
#include "convert/strings.hpp"

namespace marshal::engine {

std::size_t full_arity(const Function& sig) {
  if (sig.variadic_from >= 0) return 0;
  std::size_t all = 0, computed = 0;
  for (const Param& p : sig.params) {
    if (p.dir == Dir::out) continue;
    ++all;
    computed += p.value.present() ? 1 : 0;
  }
  return computed ? all : 0;
}

namespace {

// Code units of a string value as the engine passes them (without the
// terminator); false when the value does not convert (the call then reports
// it with the conversion's own message).
bool string_units(const StringInfo& si, const Value& v, std::uint64_t& units) {
  const std::size_t unit = encoding_unit(si.encoding);
  auto one = [&](const Value& item, std::uint64_t& n) {
    if (si.encoding == Encoding::bytes && item.is<Bytes>()) {
      n = item.as<Bytes>().data.size();
      return true;
    }
    if (!item.is<std::string>()) return false;
    std::vector<std::uint8_t> out;
    std::string error;
    if (!encode_text(si.encoding, si.unmappable, item.as<std::string>(), out, error)) return false;
    n = out.size() / unit;
    return true;
  };
  if (si.terminator != Terminator::double_nul) return one(v, units);
  if (!v.is<List>()) return false;
  units = 0;
  for (const Value& item : v.as<List>()) {  // each string and its terminator
    std::uint64_t n = 0;
    if (!one(item, n)) return false;
    units += n + 1;
  }
  return true;
}

// What the engine computes for parameter i from the arguments (by parameter
// index; null where not given); false when it cannot be known before the
// conversion (which then reports the argument).
bool computed_value(const TypeRegistry& reg, const Signature& sig, std::size_t i,
                    const std::vector<const Value*>& by_param, std::uint64_t& value) {
  const Computed& cv = sig.params[i].value;
  if (cv.measure == Computed::Measure::size_of) {
    value = cv.size;
    return true;
  }
  if (cv.index >= sig.params.size() || !by_param[cv.index]) return false;
  const Value& hv = *by_param[cv.index];
  const TypeDesc& td = reg.get(sig.params[cv.index].type);
  std::uint64_t elements = 0, unit = 1;
  if (td.kind == Kind::string) {
    if (!string_units(td.as<StringInfo>(), hv, elements)) return false;
    unit = encoding_unit(td.as<StringInfo>().encoding);
  } else {  // an array: what the host gave, as Plan::run measures it
    if (hv.is<List>()) elements = hv.as<List>().size();
    else if (hv.is<Bytes>()) elements = hv.as<Bytes>().data.size();
    else if (hv.is<std::shared_ptr<NativeBox>>()) elements = hv.as<std::shared_ptr<NativeBox>>()->count;
    unit = td.ref != no_type ? reg.get(td.ref).size : 1;
  }
  value = cv.measure == Computed::Measure::count_of ? elements : elements * unit;
  return true;
}

}  // namespace

bool host_arguments(const TypeRegistry& reg, const std::string& file, const Function& sig,
                    std::span<const Value* const>& args, std::vector<const Value*>& host, std::string& error) {
  const std::string& function = sig.name;
  host.clear();
  const std::size_t full = full_arity(sig);
  if (full == 0 || args.size() != full) return true;
  // Each given value by parameter index (out parameters: null).
  std::vector<const Value*> by_param(sig.params.size(), nullptr);
  std::size_t k = 0;
  for (std::size_t i = 0; i < sig.params.size(); ++i)
    if (sig.params[i].dir != Dir::out) by_param[i] = args[k++];
  for (std::size_t i = 0; i < sig.params.size(); ++i) {
    const Param& p = sig.params[i];
    if (p.dir == Dir::out) continue;
    if (!p.value.present()) {
      host.push_back(by_param[i]);
      continue;
    }
    std::uint64_t expect = 0;
    if (!computed_value(reg, sig, i, by_param, expect)) continue;  // the measured argument's conversion reports it
    const Value& given = *by_param[i];
    const bool same = (given.is<std::int64_t>() && given.as<std::int64_t>() >= 0 &&
                       static_cast<std::uint64_t>(given.as<std::int64_t>()) == expect) ||
                      (given.is<std::uint64_t>() && given.as<std::uint64_t>() == expect);
    if (same) continue;
    const std::string what = std::string(measure_name(p.value.measure)) + " " +
                             (p.value.measure == Computed::Measure::size_of ? reg.spell(p.value.type)
                                                                            : "'" + p.value.name + "'");
    const std::string got = given.is_integer() ? given.to_json().dump() : given.describe();
    Error e;
    e.id = ErrorId::invalid_argument;
    e.file = file;
    e.function = function;
    e.param_index = static_cast<int>(i);
    e.param_name = p.name;
    e.got = got;
    e.expected = std::to_string(expect);
    e.message = file + ": " + function + ": parameter " + std::to_string(i) + " '" + p.name + "' (" +
                reg.spell(p.type) + "): is computed by the engine (" + what + " = " + std::to_string(expect) +
                "); got " + got + " (leave it out, or give " + std::to_string(expect) + ")";
    host.clear();
    return set_error(error, std::move(e));
  }
  args = std::span<const Value* const>(host.data(), host.size());
  return true;
}

}  // namespace marshal::engine
