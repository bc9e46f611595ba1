// marshal command line: `marshal call [--isolate | --connect HOST:PORT [--tls-cert FILE --tls-key FILE
// --tls-ca FILE [--tls-name NAME]]] [--deadline MS] TYPEMAP FUNCTION [ARG...]`.
// Each ARG is one JSON value for the next in/inout parameter; prints exactly one
// JSON object {"return": R, "out": {...}} (plus "errno" when captured). Any
// error is one line on stderr and exit status 1.
#include "commands.hpp"

#include "typemap/context.hpp"
#include "call/arguments.hpp"
#include "call/library.hpp"
#include "remote/surrogate.hpp"

#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace marshal::cli {
using namespace marshal::engine;

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
        "usage: marshal call [--isolate | --connect HOST:PORT [TLS OPTIONS]] [--deadline MS]\n"
        "                    TYPEMAP FUNCTION [ARG...]\n"
        "\n"
        "Calls FUNCTION of TYPEMAP's library. Each ARG is one JSON value for the next\n"
        "in or inout parameter, in order (out parameters are not given). Parameters\n"
        "the engine computes (the typemap's \"value\") are left out, or all are given\n"
        "and each computed one must equal what the engine computes. Variadic\n"
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
        "--isolate      run the library in a surrogate process (as the typemap's\n"
        "               \"library\": {\"isolate\": \"process\"} does): a crash of the\n"
        "               library is an error naming the function and the signal\n"
        "--connect HOST:PORT  call the library where `marshal serve` runs it; the\n"
        "               server must serve the same typemap. A loopback address, or\n"
        "               any address with mutual TLS (the server's TLS options):\n"
        "  --tls-cert FILE  this client's certificate (PEM), signed by the server's\n"
        "                   client CA\n"
        "  --tls-key FILE   its private key (PEM, unencrypted)\n"
        "  --tls-ca FILE    the CA certificate(s) (PEM) the server's certificate must\n"
        "                   be signed by; the system's trust store is not used\n"
        "  --tls-name NAME  the name the server's certificate must carry (a DNS name\n"
        "                   of its subjectAltName); default: HOST. An IP address is\n"
        "                   matched as a DNS name, so give NAME when HOST is one\n"
        "--deadline MS  with --isolate: a call that takes longer is killed and fails\n"
        "\n"
        "example: marshal call typemaps/libm.json frexp 8.0\n");
    return 0;
  }
  // Options before TYPEMAP (an argument after it is a JSON value, whatever it says).
  bool isolate = false;
  remote::IsolateOptions options;
  std::size_t first = 0;
  while (first < args.size() && args[first].rfind("--", 0) == 0) {
    const std::string& o = args[first];
    if (o == "--isolate") {
      isolate = true;
      ++first;
    } else if (o == "--connect") {
      if (first + 1 >= args.size()) {
        std::fprintf(stderr, "marshal call: --connect expects HOST:PORT of a marshal serve\n");
        return 2;
      }
      isolate = true;
      options.connect = args[first + 1];
      first += 2;
    } else if (o == "--tls-cert" || o == "--tls-key" || o == "--tls-ca" || o == "--tls-name") {
      if (first + 1 >= args.size() || args[first + 1].empty()) {
        std::fprintf(stderr, "marshal call: %s expects %s\n", o.c_str(), o == "--tls-name" ? "a name" : "a PEM file");
        return 2;
      }
      (o == "--tls-cert" ? options.tls.cert : o == "--tls-key" ? options.tls.key
                                              : o == "--tls-ca"  ? options.tls.ca
                                                                 : options.tls.name) = args[first + 1];
      first += 2;
    } else if (o == "--deadline") {
      std::uint64_t ms = 0;
      const std::string v = first + 1 < args.size() ? args[first + 1] : "";
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
      if (v.empty() || ec != std::errc() || end != v.data() + v.size() || ms == 0 || ms > 86400000) {
        std::fprintf(stderr, "marshal call: --deadline expects milliseconds from 1 to 86400000, got '%s'\n",
                     shown(v).c_str());
        return 2;
      }
      options.deadline = std::chrono::milliseconds(ms);
      first += 2;
    } else {
      std::fprintf(stderr, "marshal call: unknown option '%s' (see marshal call --help)\n", shown(o).c_str());
      return 2;
    }
  }
  if (args.size() < first + 2) {
    std::fprintf(stderr, "marshal call: expected TYPEMAP FUNCTION [ARG...] (see marshal call --help)\n");
    return 2;
  }
  if (options.tls.any() && options.connect.empty()) {
    std::fprintf(stderr, "marshal call: the --tls-* options are for --connect (a marshal serve with mutual TLS)\n");
    return 2;
  }
  if (const std::string missing = remote::tls_missing(options.tls, "--tls-cert", "--tls-key", "--tls-ca");
      !missing.empty()) {
    std::fprintf(stderr, "marshal call: mutual TLS needs --tls-cert, --tls-key and --tls-ca together: %s %s missing\n",
                 missing.c_str(), missing.find(" and ") == std::string::npos ? "is" : "are");
    return 2;
  }
  const Args rest(args.begin() + static_cast<std::ptrdiff_t>(first), args.end());
  Context ctx;
  const Typemap* tm = load_or_report(ctx, rest[0], false);  // one line on stderr, as documented
  if (!tm) return 1;
  if (options.deadline.count() > 0 && !isolate && !remote::wants_isolation(*tm)) {
    std::fprintf(stderr, "marshal call: --deadline needs --isolate (an in-process call cannot be stopped)\n");
    return 2;
  }
  std::string error;
  Context ictx;
  std::unique_ptr<remote::IsolatedLibrary> isolated;
  std::shared_ptr<Library> lib;
  const Function* function = nullptr;
  if (isolate || remote::wants_isolation(*tm)) {
    // The host never opens the library; the typemap is read again into a
    // context of its own, the text the surrogate loads too.
    isolated = remote::IsolatedLibrary::open_file(ictx, rest[0], options, error);
    if (!isolated) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return 1;
    }
    auto it = isolated->typemap().functions.find(rest[1]);
    if (it != isolated->typemap().functions.end()) function = &it->second;
  } else {
    lib = Library::open(ctx, *tm, error);
    if (!lib) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return 1;
    }
    const Plan* plan = lib->bind(rest[1], error);
    if (!plan) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return 1;
    }
    function = &plan->function();
  }
  // Arguments: one JSON value each, named by the parameter it is for.
  // The long form gives the computed parameters too (checked before the call).
  const bool long_form = function && full_arity(*function) == rest.size() - 2;
  std::vector<std::string> names, types;
  if (function)
    for (std::size_t i = 0; i < function->params.size(); ++i) {
      const Param& p = function->params[i];
      if (long_form ? p.dir != Dir::out : p.host_supplied()) {  // short form: not out, not computed
        names.push_back(std::to_string(i) + " '" + p.name + "'");
        types.push_back((isolated ? ictx : ctx).types().spell(p.type));
      }
    }
  std::vector<Value> values;
  for (std::size_t i = 2; i < rest.size(); ++i) {
    const std::size_t k = i - 2;
    const std::string who = k < names.size() ? "parameter " + names[k]
                                             : "variadic argument " + std::to_string(k);
    // Read straight into a host value: nesting bounded while parsing (no deep
    // document, no deep recursion), integers exact, a repeated key an error.
    Value v;
    if (!Value::parse_json(rest[i], v, error)) {
      if (!nlohmann::json::accept(rest[i]))
        std::fprintf(stderr, "%s: %s: argument is not JSON: %s (write strings in quotes, e.g. '\"text\"')\n",
                     rest[0].c_str(), who.c_str(), shown(rest[i]).c_str());
      else  // valid JSON the engine does not take (too deep, a repeated key): name the type too
        std::fprintf(stderr, "%s: %s%s: %s\n", rest[0].c_str(), who.c_str(),
                     k < types.size() ? (" (" + types[k] + ")").c_str() : "", error.c_str());
      return 1;
    }
    values.push_back(std::move(v));
  }
  CallResult result;
  bool ok;
  if (isolated) {
    ok = isolated->call(rest[1], values, result, error);  // it takes either form too
  } else {
    const Plan* plan = lib->bind(rest[1], error);
    ValuePointers given(values);
    std::span<const Value* const> host = given.view;
    std::vector<const Value*> storage;
    ok = host_arguments(ctx.types(), tm->file, plan->function(), host, storage, error) &&
         plan->call(host, result, error);
  }
  if (!ok) {
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
