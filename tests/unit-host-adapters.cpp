// marshal tests: host adapters (call/host_io.hpp). A binding's own arguments
// go into a plan without a Value per scalar argument, and results come back
// through its sink; the general converter asks for Values only where it is needed.
#include "call_support.hpp"

#include "call/host_io.hpp"
#include "fixtures/pinvoke.h"

#include <cstring>
#include <optional>
#include <string>
#include <vector>

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;

namespace {

// Arguments as a binding might hold them: scalars, and a Value only for what
// is not one. value(i) counts how often the plan asks for a Value.
class TestArgs final : public HostArgs {
 public:
  TestArgs& add(HostScalar s) {
    items_.push_back(s);
    values_.emplace_back();
    return *this;
  }
  TestArgs& add(Value v) {  // not a scalar: only as a Value
    HostScalar s;
    s.kind = HostScalar::Kind::other;
    items_.push_back(s);
    values_.emplace_back(std::move(v));
    return *this;
  }
  std::size_t size() const override { return items_.size(); }
  void scalar(std::size_t i, HostScalar& out) const override { out = items_[i]; }
  const Value& value(std::size_t i) const override {
    ++value_calls;
    if (items_[i].kind != HostScalar::Kind::other && !values_[i]) {
      Value v;
      put_scalar(items_[i], v);
      values_[i] = std::move(v);
    }
    return *values_[i];
  }
  mutable int value_calls = 0;

 private:
  std::vector<HostScalar> items_;
  mutable std::vector<std::optional<Value>> values_;
};

// A sink that records what arrives, and how.
class TestResults final : public HostResults {
 public:
  void scalar(int i, const HostScalar& s) override { scalars.emplace_back(i, s); }
  void value(int i, Value&& v) override { values.emplace_back(i, std::move(v)); }
  void error_number(int e) override { err = e; }
  std::vector<std::pair<int, HostScalar>> scalars;
  std::vector<std::pair<int, Value>> values;
  std::optional<int> err;
};

// A binding that holds records as fields by name (any order) and offers them
// through HostArgs::record; value(i) makes the record Value only when asked.
class RecordArgs final : public HostArgs {
 public:
  using Fields = std::vector<std::pair<std::string, HostScalar>>;
  RecordArgs& add(Fields f) {
    records_.push_back(std::move(f));
    values_.emplace_back();
    return *this;
  }
  std::size_t size() const override { return records_.size(); }
  void scalar(std::size_t, HostScalar& out) const override { out.kind = HostScalar::Kind::other; }
  const Value& value(std::size_t i) const override {
    ++value_calls;
    if (!values_[i]) {
      Record r;
      for (const auto& [name, s] : records_[i]) {
        Value v;
        put_scalar(s, v);
        r.emplace_back(name, std::move(v));
      }
      values_[i] = Value(std::move(r));
    }
    return *values_[i];
  }
  bool record(std::size_t i, std::span<const LaneField> fields, HostScalar* out) const override {
    ++record_calls;
    const Fields& mine = records_[i];
    if (mine.size() != fields.size()) return false;
    for (std::size_t k = 0; k < fields.size(); ++k) {
      bool found = false;
      for (const auto& [name, s] : mine)
        if (name == *fields[k].name) {
          out[k] = s;
          found = true;
        }
      if (!found) return false;
    }
    return true;
  }
  mutable int value_calls = 0, record_calls = 0;

 private:
  std::vector<Fields> records_;
  mutable std::vector<std::optional<Value>> values_;
};

// A sink that takes records and scalar arrays as they are (native bytes read
// through their lanes), and everything else as TestResults does.
class NativeResults final : public HostResults {
 public:
  void scalar(int i, const HostScalar& s) override { scalars.emplace_back(i, s); }
  void value(int i, Value&& v) override { values.emplace_back(i, std::move(v)); }
  bool record(int i, std::span<const LaneField> fields, const std::byte* src) override {
    std::vector<std::pair<std::string, HostScalar>> r;
    for (const LaneField& f : fields) {
      std::uint64_t w = 0;
      std::memcpy(&w, src + f.offset, f.op.size);
      r.emplace_back(*f.name, lane_scalar(f.op, w));
    }
    records.emplace_back(i, std::move(r));
    return true;
  }
  bool array(int i, const LaneOp& element, const void* data, std::size_t count) override {
    std::vector<HostScalar> items;
    for (std::size_t k = 0; k < count; ++k) {
      std::uint64_t w = 0;
      std::memcpy(&w, static_cast<const std::byte*>(data) + k * element.size, element.size);
      items.push_back(lane_scalar(element, w));
    }
    arrays.emplace_back(i, std::move(items));
    return true;
  }
  std::vector<std::pair<int, HostScalar>> scalars;
  std::vector<std::pair<int, Value>> values;
  std::vector<std::pair<int, std::vector<std::pair<std::string, HostScalar>>>> records;
  std::vector<std::pair<int, std::vector<HostScalar>>> arrays;
};

const Plan& plan_of(const char* fn) {
  std::string error;
  const Plan* p = pinvoke().lib->bind(fn, error);
  INFO(fn << ": " << error);
  REQUIRE(p);
  return *p;
}
}  // namespace

TEST_SUITE("call") {
  TEST_CASE("host adapters: scalar arguments need no Value, results arrive through the sink") {
    TestArgs args;
    args.add(HostScalar::of_int(2000000000)).add(HostScalar::of_uint(40));
    TestResults out;
    std::string error;
    REQUIRE(plan_of("add_i32").call(args, out, error));
    CHECK(args.value_calls == 0);
    REQUIRE(out.scalars.size() == 1);
    CHECK(out.values.empty());
    CHECK(out.scalars[0].first == HostResults::ret);
    CHECK(out.scalars[0].second.kind == HostScalar::Kind::int64);
    CHECK(out.scalars[0].second.i == add_i32(2000000000, 40));

    // Floats, narrowing included, and an `in` string from a view.
    TestArgs mixed;
    mixed.add(HostScalar::of_int(-3)).add(HostScalar::of_real(1.25)).add(HostScalar::of_int(300))
        .add(HostScalar::of_real(0.5)).add(HostScalar::of_int(std::int64_t{1} << 40));
    TestResults mixed_out;
    REQUIRE(plan_of("add_mixed").call(mixed, mixed_out, error));
    CHECK(mixed.value_calls == 0);
    REQUIRE(mixed_out.scalars.size() == 1);
    CHECK(mixed_out.scalars[0].second.kind == HostScalar::Kind::real);
    CHECK(mixed_out.scalars[0].second.d == add_mixed(-3, 1.25, 300, 0.5f, std::int64_t{1} << 40));
    const std::string text = "h\xc3\xa9llo";
    TestArgs str;
    str.add(HostScalar::of_text(text));
    TestResults str_out;
    REQUIRE(plan_of("len_in_utf8").call(str, str_out, error));
    CHECK(str.value_calls == 0);
    REQUIRE(str_out.scalars.size() == 1);
    CHECK(str_out.scalars[0].second.u == len_in_utf8(text.c_str()));
  }

  TEST_CASE("host adapters: a value the fast form refuses is reported by the general converter, in its words") {
    TestArgs args;
    args.add(HostScalar::of_int(300));
    TestResults out;
    std::string error;
    CHECK_FALSE(plan_of("echo_u8").call(args, out, error));
    CHECK(args.value_calls == 1);  // the general converter reads the Value
    CHECK(error == pinvoke().error_of("echo_u8", {300}));
    CHECK(error.find("parameter 0 'v' (uint8): 300 is out of range for uint8 (0 to 255)") != std::string::npos);
    CHECK(out.scalars.empty());
    CHECK(out.values.empty());
    // The wrong count: the same message as the Value adapter's.
    TestArgs one;
    one.add(HostScalar::of_int(1));
    CHECK_FALSE(plan_of("add_i32").call(one, out, error));
    CHECK(error.find("expects 2 arguments (a, b), got 1") != std::string::npos);
  }

  TEST_CASE("host adapters: the general path through an adapter, out parameters and errno") {
    std::string error;
    // An array needs the general converter: every argument is asked for as a Value.
    TestArgs arr;
    arr.add(Value(List{1.5, 2.5, 3.0})).add(HostScalar::of_int(3));
    TestResults arr_out;
    REQUIRE(plan_of("sum_in_f64_array").call(arr, arr_out, error));
    CHECK(arr.value_calls == 2);
    REQUIRE(arr_out.scalars.size() == 1);
    CHECK(arr_out.scalars[0].second.d == 7.0);

    // An out parameter arrives by its parameter index, after the (void)
    // return: a scalar from the lane (its out form), a Value from the general path.
    std::int32_t direct = 0;
    get_out_i32(&direct);
    TestArgs none;
    TestResults out;
    REQUIRE(plan_of("get_out_i32").laned());
    REQUIRE(plan_of("get_out_i32").call(none, out, error));
    REQUIRE(out.scalars.size() == 2);
    CHECK(out.scalars[0].first == HostResults::ret);
    CHECK(out.scalars[0].second.kind == HostScalar::Kind::null);
    CHECK(out.scalars[1].first == 0);
    CHECK(out.scalars[1].second.kind == HostScalar::Kind::int64);
    CHECK(out.scalars[1].second.i == direct);
    CHECK(out.values.empty());
    set_scalar_lanes(false);
    TestResults slow;
    const bool slow_ok = plan_of("get_out_i32").call(none, slow, error);
    set_scalar_lanes(true);
    REQUIRE(slow_ok);
    REQUIRE(slow.scalars.size() == 1);
    CHECK(slow.scalars[0].second.kind == HostScalar::Kind::null);
    REQUIRE(slow.values.size() == 1);
    CHECK(slow.values[0].first == 0);
    CHECK(I(slow.values[0].second) == direct);

    // errno reaches the sink; the failure check still fails the call.
    TestArgs e;
    e.add(HostScalar::of_int(2));
    TestResults e_out;
    CHECK_FALSE(plan_of("fail_with_errno").call(e, e_out, error));
    CHECK(error.find("failed (returned -1): errno 2") != std::string::npos);
    REQUIRE(e_out.err);
    CHECK(*e_out.err == 2);
    CHECK(e.value_calls == 0);

    // With the fast forms off, the same call takes the general converter:
    // Values are asked for, and the result is the same.
    set_scalar_lanes(false);
    TestArgs args;
    args.add(HostScalar::of_int(2)).add(HostScalar::of_int(40));
    TestResults general;
    const bool ok = plan_of("add_i32").call(args, general, error);
    set_scalar_lanes(true);
    REQUIRE(ok);
    CHECK(args.value_calls == 2);
    REQUIRE(general.values.size() + general.scalars.size() == 1);
    if (!general.values.empty()) CHECK(I(general.values[0].second) == 42);
  }

  TEST_CASE("host adapters: a struct by value through an adapter (the Value is asked for the record only)") {
    TestArgs args;
    args.add(Value(Record{{"x", 1.5}, {"y", 2.0}})).add(Value(Record{{"x", 3.0}, {"y", -4.25}}));
    TestResults out;
    std::string error;
    REQUIRE(plan_of("add_vec2").call(args, out, error));
    CHECK(args.value_calls == 2);
    REQUIRE(out.values.size() == 1);  // no place() given: the record arrives as a value
    const Value& r = out.values[0].second;
    REQUIRE(r.is<Record>());
    CHECK(D(*r.field("x")) == 4.5);
    CHECK(D(*r.field("y")) == -2.25);
  }

  TEST_CASE("host adapters: records and scalar arrays taken as they are (HostArgs::record, HostResults::record, array)") {
    std::string error;
    // Fields by name in the adapter's own order: no Value is made, and the
    // record return arrives as native fields.
    RecordArgs args;
    args.add({{"y", HostScalar::of_real(2.0)}, {"x", HostScalar::of_real(1.5)}})
        .add({{"x", HostScalar::of_int(3)}, {"y", HostScalar::of_real(-4.25)}});
    NativeResults out;
    REQUIRE(plan_of("add_vec2").call(args, out, error));
    CHECK(args.value_calls == 0);
    CHECK(args.record_calls == 2);
    CHECK(out.values.empty());
    REQUIRE(out.records.size() == 1);
    CHECK(out.records[0].first == HostResults::ret);
    const auto& r = out.records[0].second;
    REQUIRE(r.size() == 2);
    CHECK(r[0].first == "x");
    CHECK(r[0].second.kind == HostScalar::Kind::real);
    CHECK(r[0].second.d == 4.5);
    CHECK(r[1].first == "y");
    CHECK(r[1].second.d == -2.25);
    // A sink that does not take records gets the record Value, the same numbers.
    RecordArgs again;
    again.add({{"x", HostScalar::of_real(1.5)}, {"y", HostScalar::of_real(2.0)}})
        .add({{"x", HostScalar::of_real(3.0)}, {"y", HostScalar::of_real(-4.25)}});
    TestResults plain;
    REQUIRE(plan_of("add_vec2").call(again, plain, error));
    REQUIRE(plain.values.size() == 1);
    CHECK(D(*plain.values[0].second.field("x")) == 4.5);
    CHECK(D(*plain.values[0].second.field("y")) == -2.25);

    // A field the fast form refuses, a missing field: the general converter
    // reads the record Value and reports it in its words.
    RecordArgs bad;
    bad.add({{"x", HostScalar::of_text("no")}, {"y", HostScalar::of_real(2.0)}})
        .add({{"x", HostScalar::of_real(3.0)}, {"y", HostScalar::of_real(-4.25)}});
    NativeResults bad_out;
    CHECK_FALSE(plan_of("add_vec2").call(bad, bad_out, error));
    CHECK(bad.value_calls >= 1);
    CHECK(error.find("parameter 0 'a'") != std::string::npos);
    CHECK(bad_out.records.empty());
    RecordArgs missing;
    missing.add({{"x", HostScalar::of_real(1.0)}}).add({{"x", HostScalar::of_real(3.0)}, {"y", HostScalar::of_real(1.0)}});
    NativeResults missing_out;
    CHECK_FALSE(plan_of("add_vec2").call(missing, missing_out, error));
    CHECK(error.find("'y'") != std::string::npos);
    CHECK(missing.value_calls >= 1);

    // An out array of int32: the native elements, no list Value; the same
    // numbers as the list a plain sink gets.
    TestArgs n;
    n.add(HostScalar::of_int(300));
    NativeResults filled;
    REQUIRE(plan_of("fill_out_i32_array").call(n, filled, error));
    CHECK(filled.values.empty());
    REQUIRE(filled.arrays.size() == 1);
    CHECK(filled.arrays[0].first == 0);  // the parameter's index
    const auto& items = filled.arrays[0].second;
    REQUIRE(items.size() == 300);
    std::vector<std::int32_t> direct(300);
    fill_out_i32_array(direct.data(), direct.size());
    for (std::size_t k = 0; k < items.size(); ++k) {
      CHECK(items[k].kind == HostScalar::Kind::int64);
      CHECK(items[k].i == direct[k]);
    }
    TestResults listed;
    REQUIRE(plan_of("fill_out_i32_array").call(n, listed, error));
    REQUIRE(listed.values.size() == 1);
    REQUIRE(listed.values[0].second.is<List>());
    CHECK(listed.values[0].second.as<List>().size() == 300);
    CHECK(I(listed.values[0].second.as<List>()[299]) == direct[299]);
    // uint8 elements come back as bytes: never offered as scalars.
    NativeResults bytes;
    REQUIRE(plan_of("fill_out_u8_bytes").call(n, bytes, error));
    CHECK(bytes.arrays.empty());
    REQUIRE(bytes.values.size() == 1);
    CHECK(bytes.values[0].second.is<Bytes>());
  }
}
