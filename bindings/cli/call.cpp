// marshal command line: `marshal call TYPEMAP FUNCTION [ARG...]`.
// Each ARG is one JSON value for the next in/inout parameter; prints exactly one
// JSON object {"return": R, "out": {...}} (plus "errno" when captured). Any
// error is one line on stderr and exit status 1.
#include "commands.hpp"

#include "typemap/context.hpp"
#include "call/library.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace marshal::cli {

namespace {
// An argument shown in a message: on one line, and not thousands of characters.
std::string shown(const std::string& text) {
  std::string out;
  for (char c : text.substr(0, 200)) {
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (static_cast<unsigned char>(c) < 0x20) out += '?';
    else out += c;
  }
  if (text.size() > 200) out += "... (" + std::to_string(text.size()) + " characters)";
  return out;
}
}  // namespace

int cmd_call(const Args& args) {
  if (wants_help(args)) {
    std::printf(
        "usage: marshal call TYPEMAP FUNCTION [ARG...]\n"
        "\n"
        "Calls FUNCTION of TYPEMAP's library. Each ARG is one JSON value for the next\n"
        "in or inout parameter, in order (out parameters are not given). Variadic\n"
        "arguments are given as {\"type\": T, \"value\": V}. Bytes are\n"
        "{\"base64\": \"...\"}, addresses {\"address\": \"0x...\"}, structs objects.\n"
        "Integers are exact up to 64 bits; a number with a fraction or exponent is a\n"
        "double (an integer parameter takes it only when it is integral and in range).\n"
        "Infinities and NaN are {\"float\": \"inf\"}, {\"float\": \"-inf\"} and\n"
        "{\"float\": \"nan\"}, as arguments and in results. Values nest at most 256 deep.\n"
        "\n"
        "Prints one JSON object: {\"return\": R, \"out\": {NAME: V, ...}}, with\n"
        "\"errno\": N when the function captures errno. Errors go to stderr, exit 1.\n"
        "\n"
        "example: marshal call typemaps/libm.json frexp 8.0\n");
    return 0;
  }
  if (args.size() < 2) {
    std::fprintf(stderr, "marshal call: expected TYPEMAP FUNCTION [ARG...] (see marshal call --help)\n");
    return 2;
  }
  Context ctx;
  const Typemap* tm = load_or_report(ctx, args[0], false);  // one line on stderr, as documented
  if (!tm) return 1;
  std::string error;
  auto lib = Library::open(ctx, *tm, error);
  if (!lib) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  const Plan* plan = lib->bind(args[1], error);
  if (!plan) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  // Arguments: one JSON value each, named by the parameter it is for.
  std::vector<std::string> names, types;
  for (const Param& p : plan->function().params)
    if (p.host_supplied()) {  // not out, not computed by the engine
      names.push_back(p.name);
      types.push_back(plan->types().spell(p.type));
    }
  std::vector<Value> values;
  for (std::size_t i = 2; i < args.size(); ++i) {
    const std::size_t k = i - 2;
    const std::string who = k < names.size() ? "parameter " + std::to_string(k) + " '" + names[k] + "'"
                                             : "variadic argument " + std::to_string(k);
    // Read straight into a host value: nesting bounded while parsing (no deep
    // document, no deep recursion), integers exact, a repeated key an error.
    Value v;
    if (!Value::parse_json(args[i], v, error)) {
      if (!nlohmann::json::accept(args[i]))
        std::fprintf(stderr, "%s: %s: argument is not JSON: %s (write strings in quotes, e.g. '\"text\"')\n",
                     args[0].c_str(), who.c_str(), shown(args[i]).c_str());
      else  // valid JSON the engine does not take (too deep, a repeated key): name the type too
        std::fprintf(stderr, "%s: %s%s: %s\n", args[0].c_str(), who.c_str(),
                     k < types.size() ? (" (" + types[k] + ")").c_str() : "", error.c_str());
      return 1;
    }
    values.push_back(std::move(v));
  }
  CallResult result;
  if (!plan->call(values, result, error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  nlohmann::ordered_json out;
  out["return"] = result.ret.to_json();
  out["out"] = nlohmann::ordered_json::object();
  for (const auto& [name, v] : result.out) out["out"][name] = v.to_json();
  if (result.error_number) out["errno"] = *result.error_number;
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace marshal::cli
