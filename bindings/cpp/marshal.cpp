// marshal: the typed C++ API (the parts that are not templates).
#include "marshal/marshal.hpp"

#include "remote/surrogate.hpp"

using namespace marshal::engine;  // this file implements the typed API over the engine

namespace marshal {

library::library(const std::string& typemap_path, const load_options& options)
    : state_(std::make_shared<detail::State>()) {
  state_->ctx = std::make_unique<Context>();
  LoadResult r = state_->ctx->load_file(typemap_path);
  if (!r.ok()) {
    std::string all;
    for (const auto& e : r.errors) all += (all.empty() ? "" : "\n") + e.text();
    Error record = r.errors.front().record();  // the first problem's file and pointer; what() lists all
    record.message = all;
    throw error(std::move(record));
  }
  state_->typemap = r.typemap;
  std::string err;
  const bool tls = !options.tls_cert.empty() || !options.tls_key.empty() || !options.tls_ca.empty() ||
                   !options.tls_name.empty();
  if (tls && options.connect.empty())
    throw error(typemap_path + ": the TLS options are for a connection to marshal serve (load_options::connect)");
  if (options.isolate == isolation::process || !options.connect.empty() || remote::wants_isolation(*r.typemap)) {
    // The library never loads here: a context of its own holds the typemap
    // the surrogate loads too (IsolatedLibrary reads the file again).
    remote::IsolateOptions o;
    o.surrogate = options.surrogate;
    o.deadline = options.deadline;
    o.connect = options.connect;
    o.tls = remote::TlsFiles{options.tls_cert, options.tls_key, options.tls_ca, options.tls_name};
    auto ctx = std::make_unique<Context>();
    auto lib = remote::IsolatedLibrary::open_file(*ctx, typemap_path, o, err);
    if (!lib) throw error(err);
    state_->isolated = std::move(lib);
    state_->typemap = &state_->isolated->typemap();
    state_->ctx = std::move(ctx);  // the isolated library's context (the first one's typemap is not used)
    return;
  }
  if (options.deadline.count() > 0)
    throw error(typemap_path + ": a deadline needs an isolated library (an in-process call cannot be stopped)");
  state_->lib = Library::open(*state_->ctx, *r.typemap, err);
  if (!state_->lib) throw error(err);
}

const Function& library::function_of(const std::string& name) const {
  auto it = state_->typemap->functions.find(name);
  if (it == state_->typemap->functions.end()) {
    std::string names;
    for (const auto& [n, _] : state_->typemap->functions) names += (names.empty() ? "" : ", ") + n;
    throw error(state_->typemap->file + ": no function '" + name + "' (functions: " + names + ")");
  }
  return it->second;
}

namespace detail {
bool call_isolated(const State& state, const std::string& function, std::span<const Value> args, CallResult& result,
                   std::string& error) {
  return state.isolated->call(function, args, result, error);
}
bool create_isolated(const State& state, const std::string& cls, std::span<const Value> args, Value& out,
                     std::string& error) {
  return state.isolated->objects().create(cls, args, out, error);
}
}  // namespace detail

Context& library::context() { return *state_->ctx; }
const Typemap& library::typemap() const { return *state_->typemap; }

const Plan* library::plan_of(const std::string& name) const {
  std::string err;
  const Plan* plan = state_->lib->bind(name, err);
  if (!plan) throw error(err);
  return plan;
}

object object::as(const std::string& iface) const {
  if (!v_.is<ObjectRef>()) throw error("marshal: as(" + iface + "): not a native object");
  const ObjectRef& ref = v_.as<ObjectRef>();
  Value out;
  std::string err;
  if (!library_of(ref).objects().query(ref, iface, out, err)) throw error(err);
  return object(std::move(out));
}

std::string object::interface_name() const {
  return v_.is<ObjectRef>() && v_.as<ObjectRef>().iface ? v_.as<ObjectRef>().iface->name : std::string();
}

apartment_scope::apartment_scope(kind k) {
  std::string err;
  a_ = k == kind::sta ? enter_sta(err) : enter_mta(err);
  if (!a_) throw error("marshal: " + err);
}
apartment_scope::~apartment_scope() { leave_apartment(); }
std::size_t apartment_scope::pump(std::chrono::milliseconds wait) {
  return a_->kind() == Apartment::Kind::sta ? a_->pump(wait) : 0;
}
void apartment_scope::run_until(const std::function<bool()>& done) {
  if (a_->kind() != Apartment::Kind::sta) throw error("marshal: run_until: only an STA has a message loop");
  a_->run_until(done);
}
void apartment_scope::wake() { a_->wake(); }

std::uint64_t marshal_interface(const object& obj) {
  std::uint64_t token = 0;
  std::string err;
  if (!engine::marshal_interface(obj.value(), token, err)) throw error(err);
  return token;
}

object unmarshal_interface(std::uint64_t token) {
  Value v;
  std::string err;
  if (!engine::unmarshal_interface(token, v, err)) throw error(err);
  return object(std::move(v));
}

plain_library::plain_library(const std::string& file) : state_(std::make_shared<detail::State>()) {
  std::string err;
  state_->so = SharedLibrary::open_file(file, err);
  if (!state_->so) throw error("cannot load library '" + file + "': " + err);
}

void* plain_library::symbol_of(const std::string& name) const {
  std::string err;
  void* p = state_->so->symbol(name, "", err);
  if (!p) throw error(err);
  return p;
}

const ffi_cif* plain_library::prepare(ffi_type* r, std::size_t n, ffi_type** args) const {
  std::lock_guard lock(state_->mutex);
  auto& types = state_->arg_types.emplace_back(args, args + n);
  ffi_cif& cif = state_->cifs.emplace_back();
  if (ffi_prep_cif(&cif, FFI_DEFAULT_ABI, static_cast<unsigned>(n), r, types.data()) != FFI_OK)
    throw error("libffi cannot prepare this signature");
  return &cif;
}

}  // namespace marshal
