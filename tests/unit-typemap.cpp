// marshal tests: what the loader builds from a valid typemap.
// Descriptors, signatures, resolved counts, ownership, interfaces with their
// vtable slots, classes and constants of tests/typemaps/good/everything.json.
#include <doctest/doctest.h>

#include "typemap/context.hpp"
#include "sanitized.hpp"
#include "support.hpp"

#include <algorithm>
#include <ctime>
#include <string>

using namespace marshal;
using namespace marshal::engine;

namespace {

struct Loaded {
  Context ctx;
  const Typemap* tm = nullptr;
  Loaded() {
    LoadResult r = ctx.load_file(test::source_path("tests/typemaps/good/everything.json"));
    for (const auto& e : r.errors) MESSAGE(e.text());
    REQUIRE(r.ok());
    tm = r.typemap;
  }
  const TypeDesc& type(TypeId id) const { return ctx.types().get(id); }
  const TypeDesc& named(const char* n) const { return type(tm->find_type(n)); }
  const Function& fn(const char* n) const { return tm->functions.at(n); }
};

// Typemaps generated at a given size, for the growth of loading time.
std::string head() { return R"({"typemap": 1, "library": {"name": "self", "load": {"any": ["self"]}}, )"; }

std::string wide_struct(std::size_t fields, bool explicit_offsets) {
  std::string t = head() + R"("types": {"Wide": {"struct": [)";
  for (std::size_t i = 0; i < fields; ++i) {
    t += (i ? "," : "") + std::string(R"({"name": "f)") + std::to_string(i) + R"(", "type": "int32")";
    // Explicit offsets from the last field to the first: every placement is checked against all others.
    if (explicit_offsets) t += R"(, "offset": )" + std::to_string(4 * (fields - 1 - i));
    t += "}";
  }
  return t + "]}}}";
}

std::string many_params(std::size_t pairs) {
  std::string t = head() + R"("functions": {"f": {"returns": "void", "params": [)";
  for (std::size_t i = 0; i < pairs; ++i)
    t += (i ? "," : "") + std::string(R"({"name": "xs)") + std::to_string(i) +
         R"(", "type": {"array": "int32", "count": {"param": "n)" + std::to_string(i) + R"("}}},)" +
         R"({"name": "n)" + std::to_string(i) + R"(", "type": "int32"})";
  return t + "]}}}";
}

std::string interface_chain(std::size_t depth) {
  std::string t = head() + R"("interfaces": {)";
  for (std::size_t i = 0; i < depth; ++i) {
    t += (i ? "," : "") + std::string(R"("I)") + std::to_string(i) + R"(": {)";
    if (i) t += R"("base": "I)" + std::to_string(i - 1) + R"(", )";
    t += R"("methods": [{"name": "m)" + std::to_string(i) + R"(", "returns": "int32"}]})";
  }
  return t + "}}";
}

// This thread's CPU time: other processes on a busy machine do not count
// (a wall-clock ratio failed once at load average 10).
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// The best of three loads in CPU time, checked by `check`.
template <class F> double load_seconds(const std::string& text, F check) {
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    Context ctx;
    const double t0 = thread_cpu_seconds();
    LoadResult r = ctx.load_text(text, "generated.json");
    best = std::min(best, thread_cpu_seconds() - t0);
    for (const auto& e : r.errors) MESSAGE(e.text());
    REQUIRE(r.ok());
    check(ctx, *r.typemap);
  }
  return best;
}

}  // namespace

TEST_SUITE("typemap") {
  TEST_CASE("loading grows linearly with fields per struct, parameters and interface chains") {
    // Timed tests are not allowed (sanitizers and a shared machine change
    // every absolute time), so the assertion is on growth: an input five
    // times as large must load in less than ten times as long. Linear work
    // gives 5 (n log n a little more); quadratic work gives 25.
    auto growth = [](const char* what, std::size_t small, std::size_t large, auto make, auto check) {
      const double t_small = load_seconds(make(small), [&](Context& c, const Typemap& tm) { check(c, tm, small); });
      const double t_large = load_seconds(make(large), [&](Context& c, const Typemap& tm) { check(c, tm, large); });
      MESSAGE(std::string(what) << ": " << small << " in " << t_small << " s, " << large << " in " << t_large << " s (x"
                   << t_large / t_small << ")");
      CHECK(t_large < 10 * t_small);
    };
    auto wide = [](Context& c, const Typemap& tm, std::size_t n) {
      const TypeDesc& d = c.types().get(tm.find_type("Wide"));
      CHECK(d.size == 4 * n);
      CHECK(d.as<RecordInfo>().fields.back().offset == 0);
    };
    // Under a sanitizer (ASan + UBSan at -O0 loads ~40x slower) a fifth of the sizes:
    // the same code paths and growth, in seconds instead of minutes.
    constexpr std::size_t scale = test::sanitized ? 5 : 1;
    growth("fields", 20000 / scale, 100000 / scale, [](std::size_t n) { return wide_struct(n, false); },
           [](Context& c, const Typemap& tm, std::size_t n) {
             CHECK(c.types().get(tm.find_type("Wide")).size == 4 * n);
             CHECK(c.types().get(tm.find_type("Wide")).as<RecordInfo>().fields.back().offset == 4 * (n - 1));
           });
    growth("fields with explicit offsets", 10000 / scale, 50000 / scale, [](std::size_t n) { return wide_struct(n, true); }, wide);
    growth("parameters", 10000 / scale, 50000 / scale, many_params, [](Context&, const Typemap& tm, std::size_t n) {
      const Function& f = tm.functions.at("f");
      REQUIRE(f.params.size() == 2 * n);
    });
    // Not interface chains: a chain of depth n has n(n+1)/2 vtable slots in all
    // (every interface lists its bases' methods), so its load cannot be linear.
    // They load without recursion (a deep chain cannot overflow the stack):
    const double deep = load_seconds(interface_chain(3000 / scale), [](Context&, const Typemap& tm) {
      CHECK(tm.interfaces.at("I" + std::to_string(3000 / scale - 1)).slot_count() == 3000 / scale);
    });
    MESSAGE("interface chain of " << 3000 / scale << ": " << deep << " s");
  }

  TEST_CASE("a duplicate method name anywhere along a base chain is an error naming the other interface") {
    Context ctx;
    LoadResult r = ctx.load_text(head() + R"("interfaces": {
      "A": {"methods": [{"name": "Get", "returns": "int32"}]},
      "B": {"base": "A", "methods": [{"name": "Put", "returns": "int32"}]},
      "C": {"base": "B", "methods": [{"name": "Get", "returns": "int32"}, {"name": "Put", "returns": "int32"}]},
      "D": {"base": "A", "methods": [{"name": "Put", "returns": "int32"}, {"name": "Put", "returns": "int32"}]}}})",
                                 "dup.json");
    REQUIRE(r.errors.size() == 3);
    CHECK(r.errors[0].text() == "dup.json: /interfaces/C/methods/0/name: duplicate method name 'Get' (also in interface 'A')");
    CHECK(r.errors[1].text() == "dup.json: /interfaces/C/methods/1/name: duplicate method name 'Put' (also in interface 'B')");
    CHECK(r.errors[2].text() == "dup.json: /interfaces/D/methods/1/name: duplicate method name 'Put' (also in interface 'D')");
  }

  TEST_CASE("named types resolve to complete descriptors") {
    Loaded l;
    const TypeDesc& header = l.named("Header");
    CHECK(header.kind == Kind::struct_);
    CHECK(header.size == 48);  // 4 + 32 (inline char[32]) + 4 + pointer
    const RecordInfo& rec = header.as<RecordInfo>();
    CHECK(rec.size_field == 0);
    const TypeDesc& name = l.type(rec.fields[1].type);
    CHECK(name.kind == Kind::string);
    CHECK(name.as<StringInfo>().inline_storage);
    const TypeDesc& items = l.type(rec.fields[3].type);
    REQUIRE(items.kind == Kind::ptr);
    const ArrayInfo& arr = l.type(items.ref).as<ArrayInfo>();
    CHECK(arr.count.source == Count::Source::field);
    CHECK(arr.count.index == 2);
    CHECK(rec.fields[3].nullable);

    CHECK(l.named("Value").kind == Kind::union_);
    CHECK(l.named("Value").size == 8);
    const TypeDesc& flags = l.named("Flags");
    CHECK(flags.as<EnumInfo>().flags);
    CHECK(flags.size == 4);
    CHECK_FALSE(flags.has(flag_signed));
    const TypeDesc& fd = l.named("Fd");
    CHECK(fd.kind == Kind::handle);
    CHECK_FALSE(fd.as<HandleInfo>().by_pointer);
    CHECK(fd.as<HandleInfo>().invalid == std::vector<std::int64_t>{-1});
    CHECK(fd.as<HandleInfo>().release == "close");
    CHECK(l.named("File").as<HandleInfo>().by_pointer);
    // An alias is another name for the same descriptor.
    CHECK(l.tm->find_type("ssize") == l.ctx.types().find_primitive("ssize_t"));
    const TypeDesc& vb = l.named("VBool");
    CHECK(vb.kind == Kind::boolean);
    CHECK(vb.size == 2);
    CHECK(vb.as<BoolInfo>().true_value == -1);
  }

  TEST_CASE("function signatures: directions, counts, ownership, errno, variadics") {
    Loaded l;
    const Function& rd = l.fn("read_items");
    REQUIRE(rd.params.size() == 2);
    CHECK(rd.params[0].dir == Dir::out);
    const ArrayInfo& a = l.type(rd.params[0].type).as<ArrayInfo>();
    CHECK(a.count.source == Count::Source::param);
    CHECK(a.count.index == 1);
    CHECK(a.length.source == Count::Source::return_value);

    const Function& fopen = l.fn("fopen");
    CHECK(fopen.capture_errno);
    CHECK(fopen.check.when == Check::When::null);
    CHECK(fopen.check.error_errno);
    CHECK(fopen.return_nullable);

    const Function& names = l.fn("list_names");
    CHECK(names.free_with.how == FreeWith::How::symbol);
    CHECK(names.free_with.library == "libc");
    CHECK(names.free_with.name == "free");
    const TypeDesc& arr = l.type(names.returns);
    CHECK(arr.as<ArrayInfo>().count.source == Count::Source::sentinel);
    CHECK(arr.as<ArrayInfo>().count.sentinel_null);

    const Function& alloc = l.fn("alloc_points");
    CHECK(alloc.params[0].free_with.how == FreeWith::How::free);

    const Function& memcpy_v = l.fn("memcpy_v");
    CHECK(memcpy_v.symbol == "memcpy");
    CHECK(memcpy_v.version == "GLIBC_2.14");
    CHECK(l.fn("printf").variadic_from == 1);
    CHECK(l.type(l.fn("subscribe").returns).name == "cbool");  // defaults.bool

    const TypeDesc& cb = l.type(l.fn("sort_points").params[2].type);
    REQUIRE(cb.kind == Kind::callback);
    CHECK(cb.as<CallbackInfo>().scope == Scope::call);
    CHECK(cb.as<CallbackInfo>().sig == &l.tm->callbacks.at("Compare"));
    CHECK(l.tm->callbacks.at("Compare").on_error.present);
    CHECK(l.tm->callbacks.at("Compare").on_error.value == 0);
    CHECK(l.tm->callbacks.at("OnEvent").delivery == Delivery::owner);
  }

  TEST_CASE("strings carry encoding, terminator, capacity and length") {
    Loaded l;
    const StringInfo& name = l.type(l.fn("get_name").params[0].type).as<StringInfo>();
    CHECK(name.encoding == Encoding::utf16);
    CHECK(name.capacity.constant == 64);
    CHECK(name.length.source == Count::Source::return_value);
    CHECK_FALSE(name.inline_storage);
    const StringInfo& env = l.type(l.fn("env_block").returns).as<StringInfo>();
    CHECK(env.terminator == Terminator::double_nul);
    const auto& p = l.fn("to_latin1").params;
    CHECK(l.type(p[0].type).as<StringInfo>().unmappable == Unmappable::replace);
    CHECK(l.type(p[1].type).as<StringInfo>().terminator == Terminator::none);
    CHECK(l.type(p[1].type).as<StringInfo>().length.index == 2);
  }

  TEST_CASE("interfaces: bases first, slots, refcounting, iids; classes") {
    Loaded l;
    const Interface& unk = l.tm->interfaces.at("IUnknown");
    const Interface& counter = l.tm->interfaces.at("ICounter");
    const Interface& shape = l.tm->interfaces.at("IShape");
    CHECK(unk.refcounted);
    CHECK(counter.refcounted);
    CHECK(shape.refcounted);
    CHECK(counter.base == &unk);
    CHECK(counter.first_slot == 3);
    CHECK(counter.methods[1].slot == 4);
    CHECK(shape.first_slot == 5);
    CHECK(shape.methods[0].slot == 5);
    CHECK(counter.methods[0].hresult);
    CHECK(counter.methods[1].on_error.value == -1);
    REQUIRE(counter.iid.has_value());
    CHECK((*counter.iid)[0] == 0x3e);  // Data1 is stored little-endian
    CHECK((*counter.iid)[3] == 0x6c);
    CHECK((*counter.iid)[8] == 0x9a);  // Data4 in text order
    CHECK(l.type(counter.type).has(flag_refcounted));
    const ClassDesc& c = l.tm->classes.at("Counter");
    CHECK(c.threading == Threading::apartment);
    CHECK(c.iface == &counter);
    CHECK(c.create == &l.fn("make_counter"));
    CHECK(l.tm->classes.at("Shape").threading == Threading::both);
    CHECK(l.tm->constants.at("MAX_POINTS") == 64);
    CHECK(l.tm->constants.at("NAME") == "everything");
  }

  TEST_CASE("names resolve in any order (forward references)") {
    Context ctx;
    LoadResult r = ctx.load_text(R"({"typemap": 1, "types": {
      "A": {"struct": [{"name": "z", "type": "Z"}, {"name": "m", "type": "M"}]},
      "M": {"alias": "Z"},
      "Z": {"struct": [{"name": "v", "type": "int64"}, {"name": "e", "type": "E"}]},
      "E": {"enum": {"X": 1}, "underlying": "uint8"}}})", "fwd.json");
    REQUIRE(r.ok());
    CHECK(ctx.types().get(r.typemap->find_type("A")).size == 32);
    CHECK(r.typemap->find_type("M") == r.typemap->find_type("Z"));
  }

  TEST_CASE("two typemaps may use the same names independently") {
    Context ctx;
    LoadResult a = ctx.load_text(R"({"typemap": 1, "types": {"P": {"struct": [{"name": "x", "type": "int8"}]}}})", "a.json");
    LoadResult b = ctx.load_text(R"({"typemap": 1, "types": {"P": {"struct": [{"name": "x", "type": "int64"}]}}})", "b.json");
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(ctx.types().get(a.typemap->find_type("P")).size == 1);
    CHECK(ctx.types().get(b.typemap->find_type("P")).size == 8);
  }
}
