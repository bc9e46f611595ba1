// marshal tests: structured errors (engine/base/error.hpp). Each failure keeps
// its one-line message and carries a record: id, file, JSON Pointer, function,
// parameter, got/expected, native code. Provoked through the engine's API
// (Plan::call, Library::bind, Context::load) and the typed C++ API.

#include "call_support.hpp"
#include "base/error.hpp"
#include "marshal/marshal.hpp"

#include <cerrno>
#include <future>
#include <thread>

using namespace marshal::test;
using marshal::ErrorId;

namespace {

// A failing call's record: the thread's last error, whose message is the error text.
marshal::Error failure(const std::string& fn, std::vector<marshal::engine::Value> args) {
  std::string text = pinvoke().error_of(fn, std::move(args));
  const marshal::Error& e = marshal::engine::last_error();
  CHECK(e.message == text);
  return e;
}
}  // namespace

TEST_SUITE("errors") {
  TEST_CASE("one table: every id has a stable name, and the name finds the id") {
    for (ErrorId id : {ErrorId::invalid_argument, ErrorId::typemap, ErrorId::library_not_found, ErrorId::symbol_not_found,
                       ErrorId::conversion, ErrorId::null_not_allowed, ErrorId::limit_exceeded, ErrorId::native_error,
                       ErrorId::native_crash, ErrorId::deadline_exceeded, ErrorId::disconnected, ErrorId::refused, ErrorId::wrong_apartment, ErrorId::released, ErrorId::apartment_ended,
                       ErrorId::unsupported, ErrorId::internal}) {
      ErrorId back = ErrorId::none;
      REQUIRE(marshal::engine::error_id_from_name(marshal::engine::error_id_name(id), back));
      CHECK(back == id);
    }
    CHECK(std::string(marshal::engine::error_id_name(ErrorId::conversion)) == "conversion");
    CHECK(std::string(marshal::engine::error_id_name(ErrorId::wrong_apartment)) == "wrong_apartment");
    ErrorId none;
    CHECK_FALSE(marshal::engine::error_id_from_name("no_such_id", none));
  }

  TEST_CASE("a range error names the function, the parameter and what was got and expected") {
    for (bool lanes : {true, false}) {
      marshal::engine::set_scalar_lanes(lanes);
      marshal::Error e = failure("echo_u8", {300});
      CHECK(e.id == ErrorId::conversion);
      CHECK(e.function == "echo_u8");
      CHECK(e.param_index == 0);
      CHECK(e.param_name == "v");
      CHECK(e.got == "the integer 300");  // Value::describe()
      CHECK(e.expected == "uint8 (0 to 255)");
      CHECK(e.file.find("pinvoke.json") != std::string::npos);
      CHECK(e.message.find("echo_u8: parameter 0 'v' (uint8): 300 is out of range for uint8 (0 to 255)") != std::string::npos);
    }
    marshal::engine::set_scalar_lanes(true);
    marshal::Error w = failure("echo_u8", {"text"});
    CHECK(w.id == ErrorId::conversion);
    CHECK(w.expected == "uint8");
  }

  TEST_CASE("null where it is not allowed, and a released handle") {
    marshal::Error n = failure("res_value", {marshal::engine::Value()});
    CHECK(n.id == ErrorId::null_not_allowed);
    CHECK(n.function == "res_value");
    CHECK(n.param_index == 0);
    CHECK(n.param_name == "r");
    CHECK(n.got == "null");
    marshal::engine::Value h = pinvoke().call("res_open", {7}).ret;
    CHECK(I(pinvoke().call("res_close", {h}).ret) == 0);
    marshal::Error r = failure("res_value", {h});
    CHECK(r.id == ErrorId::released);
    CHECK(r.param_name == "r");
    CHECK(r.message.find("the Res handle was already released") != std::string::npos);
  }

  TEST_CASE("arity, unknown functions and missing symbols") {
    marshal::Error a = failure("echo_u8", {});
    CHECK(a.id == ErrorId::invalid_argument);
    CHECK(a.function == "echo_u8");
    CHECK(a.param_index == -1);
    std::string error;
    CHECK(pinvoke().lib->bind("no_such_function", error) == nullptr);
    CHECK(marshal::engine::last_error().id == ErrorId::invalid_argument);
    CHECK(marshal::engine::last_error().message == error);
    CHECK(marshal::engine::last_error().function == "no_such_function");

    marshal::engine::Context ctx;
    const std::string text = R"({"typemap": 1,
      "library": {"name": "marshal_fixture", "load": {"linux": ["libmarshal_fixture.so", "build/tests/libmarshal_fixture.so"]}},
      "functions": {"ghost": {"symbol": "no_such_symbol_anywhere", "returns": "int32", "params": []}}})";
    marshal::engine::LoadResult r = ctx.load_text(text, "ghost.json");
    for (const auto& d : r.errors) MESSAGE(d.text());
    REQUIRE(r.ok());
    auto lib = marshal::engine::Library::open(ctx, *r.typemap, error);
    REQUIRE(lib);
    CHECK(lib->bind("ghost", error) == nullptr);
    const marshal::Error& s = marshal::engine::last_error();
    CHECK(s.id == ErrorId::symbol_not_found);
    CHECK(s.message == error);
    CHECK(s.function == "ghost");
    CHECK(s.got == "no_such_symbol_anywhere");

    const std::string nolib = R"({"typemap": 1,
      "library": {"name": "nothere", "load": {"linux": ["libmarshal_no_such_library.so.9"]}}})";
    marshal::engine::LoadResult r2 = ctx.load_text(nolib, "nolib.json");
    REQUIRE(r2.ok());
    CHECK_FALSE(marshal::engine::Library::open(ctx, *r2.typemap, error));
    CHECK(marshal::engine::last_error().id == ErrorId::library_not_found);
    CHECK(marshal::engine::last_error().message == error);
    CHECK(marshal::engine::last_error().file == "nolib.json");
  }

  TEST_CASE("a typemap error carries the file and the JSON Pointer") {
    marshal::engine::Context ctx;
    marshal::engine::LoadResult r = ctx.load_text(R"({"typemap": 1, "functions": {"f": {"returns": "no_such_type", "params": []}}})",
                                          "bad.json");
    REQUIRE_FALSE(r.ok());
    marshal::Error e = r.errors.front().record();
    CHECK(e.id == ErrorId::typemap);
    CHECK(e.file == "bad.json");
    CHECK(e.pointer == "/functions/f/returns");
    CHECK(e.message == r.errors.front().text());
  }

  TEST_CASE("errno of a failed check is the native code") {
    marshal::Error e = failure("fail_with_errno", {ERANGE});
    CHECK(e.id == ErrorId::native_error);
    CHECK(e.function == "fail_with_errno");
    CHECK(e.native_kind == marshal::NativeCodeKind::errno_value);
    CHECK(e.native_code == ERANGE);
    CHECK(e.message.find("fail_with_errno failed (returned -1): errno " + std::to_string(ERANGE)) != std::string::npos);
  }

  TEST_CASE("the typed C++ API throws marshal::error holding the record") {
    marshal::library lib(source_path("tests/fixtures/pinvoke.json"));
    try {
      lib.function<std::int32_t(std::int32_t)>("fail_with_errno")(ERANGE);
      FAIL("no exception");
    } catch (const marshal::error& e) {
      CHECK(e.id() == ErrorId::native_error);
      CHECK(std::string(e.id_name()) == "native_error");
      CHECK(e.function() == "fail_with_errno");
      CHECK(e.native_code() == ERANGE);
      CHECK(std::string(e.what()).find("errno " + std::to_string(ERANGE)) != std::string::npos);
    }
    try {
      lib.function<std::int32_t()>("no_such_function");
      FAIL("no exception");
    } catch (const marshal::error& e) {
      CHECK(e.id() == ErrorId::invalid_argument);
      CHECK(std::string(e.what()).find("no function 'no_such_function'") != std::string::npos);
    }
    try {
      marshal::library bad(source_path("tests/typemaps/bad/alias_cycle.json"));
      FAIL("no exception");
    } catch (const marshal::error& e) {
      CHECK(e.id() == ErrorId::typemap);
      CHECK(e.file().find("alias_cycle.json") != std::string::npos);
      CHECK(e.pointer().rfind("/", 0) == 0);
      CHECK(std::string(e.what()).find(e.pointer()) != std::string::npos);
    }
    // A message the engine did not record: the exception still has a record.
    marshal::error plain("marshal: something");
    CHECK(plain.id() == ErrorId::unclassified);
    CHECK(plain.parameter_index() == -1);
  }

  TEST_CASE("a reference used from the wrong apartment") {
    marshal::library objs(source_path("tests/fixtures/objects.json"));
    std::promise<std::shared_ptr<marshal::engine::Apartment>> ready;
    std::atomic<bool> stop{false};
    std::thread sta([&] {
      std::string error;
      auto a = marshal::engine::enter_sta(error);
      ready.set_value(a);
      a->run_until([&] { return stop.load(); });
      marshal::engine::leave_apartment();
    });
    auto apt = ready.get_future().get();
    marshal::object p;
    std::string error;
    REQUIRE(marshal::engine::run_in(apt, [&] { p = objs.create("ProbeApartment"); }, error));
    std::thread([&] {
      marshal::apartment_scope mta(marshal::apartment_scope::kind::mta);
      try {
        p.call<std::uint64_t>("Thread");
        FAIL("no exception");
      } catch (const marshal::error& e) {
        CHECK(e.id() == ErrorId::wrong_apartment);
        CHECK(std::string(e.what()).find("wrong apartment") != std::string::npos);
      }
    }).join();
    REQUIRE(marshal::engine::run_in(apt, [&] { p = marshal::object(); }, error));
    stop = true;
    apt->wake();
    sta.join();
  }
}
