// marshal engine: host adapters, how a binding gives a plan its arguments and
// takes its results without a Value per argument.
//
// A plan reads each argument through HostArgs: a scalar (HostScalar: null,
// bool, integer, double, address, UTF-8 text) for what its fast instructions
// convert (integers, floats, bools, pointers, `in` strings), and the dynamic
// Value (value(i)) only for what needs the general converter (records, lists,
// handles, callbacks, objects, native memory, a scalar the fast form refuses so
// that the general converter reports it). Results flow back through
// HostResults the same way: scalars for the fast returns, records and arrays of
// scalars as native bytes when the adapter takes them so, Values for the rest.
// The dynamic Value is one adapter among others (ValueArgs, ValueResults);
// the C API has its own over its argument handles.
#pragma once

#include "convert/lane.hpp"
#include "types/typemap.hpp"
#include "values/call_values.hpp"
#include "values/value.hpp"

#include <cstddef>
#include <span>

namespace marshal::engine {

// A call's host arguments: in/inout parameters in order (out parameters are
// not given), then for a variadic function one record {"type": T, "value": V}
// per extra argument.
class HostArgs {
 public:
  virtual ~HostArgs() = default;
  virtual std::size_t size() const = 0;
  // Argument i as a scalar; kind `other` when it is not one (the plan then asks value(i)).
  virtual void scalar(std::size_t i, HostScalar& out) const = 0;
  // Argument i as a dynamic Value, valid until the call returns: asked only
  // when the call needs the general converter (then for every argument, since
  // counts may name any parameter), or for a record or callback argument.
  virtual const Value& value(std::size_t i) const = 0;
  // Argument i as a struct of scalar fields (a record fast form): true when it
  // holds exactly these fields, each a scalar, written to out[k] for
  // fields[k] (fields.size() is at most max_record_fields); false when it is
  // not one or the adapter does not read records so (then value(i) is asked).
  static constexpr std::size_t max_record_fields = 8;
  virtual bool record(std::size_t /*i*/, std::span<const LaneField> /*fields*/, HostScalar* /*out*/) const {
    return false;
  }
};

// Where a call's results go. Result i: `ret` (-1) for the return value,
// otherwise the index (in Function::params) of an out/inout parameter, given in
// parameter order after the return value. Called only when the call succeeds
// or its unmarshal has run (a failed check still converts what the callee gave).
class HostResults {
 public:
  static constexpr int ret = -1;
  virtual ~HostResults() = default;
  // A scalar result (a void return is null).
  virtual void scalar(int i, const HostScalar& s) = 0;
  // Any other result.
  virtual void value(int i, Value&& v) = 0;
  // Storage the plan may convert result i into in place (the Value adapter:
  // its reused result), or nullptr: the plan then converts into a temporary
  // and calls value(i).
  virtual Value* place(int /*i*/) { return nullptr; }
  // A struct of scalar fields (a record fast form), its native bytes at src,
  // each field at fields[k].offset read by its LaneOp (lane_scalar); true
  // when the adapter took it, false: the plan makes a record Value (place, value).
  virtual bool record(int /*i*/, std::span<const LaneField> /*fields*/, const std::byte* /*src*/) { return false; }
  // An out array of `count` scalar elements (integers other than uint8, which
  // comes back as bytes, and floating-point numbers), each `element.size`
  // bytes at data read by element (lane_scalar); true when the adapter took
  // it, false: the plan makes a list Value (value).
  virtual bool array(int /*i*/, const LaneOp& /*element*/, const void* /*data*/, std::size_t /*count*/) {
    return false;
  }
  // errno after the call, for a function that captures it.
  virtual void error_number(int /*e*/) {}
};

// The Value adapter: arguments by address.
class ValueArgs final : public HostArgs {
 public:
  explicit ValueArgs(std::span<const Value* const> args) : args_(args) {}
  std::size_t size() const override { return args_.size(); }
  void scalar(std::size_t i, HostScalar& out) const override { scalar_of(*args_[i], out); }
  const Value& value(std::size_t i) const override { return *args_[i]; }

 private:
  std::span<const Value* const> args_;
};

// The Value adapter: results into a CallResult (the return in place, out
// parameters appended by name, errno).
class ValueResults final : public HostResults {
 public:
  ValueResults(CallResult& r, const Function& fn) : r_(r), fn_(fn) {}
  void scalar(int i, const HostScalar& s) override {
    if (i == ret) {
      put_scalar(s, r_.ret);
      return;
    }
    Value v;
    put_scalar(s, v);
    r_.out.emplace_back(fn_.params[static_cast<std::size_t>(i)].name, std::move(v));
  }
  void value(int i, Value&& v) override {
    if (i == ret) r_.ret = std::move(v);
    else r_.out.emplace_back(fn_.params[static_cast<std::size_t>(i)].name, std::move(v));
  }
  Value* place(int i) override { return i == ret ? &r_.ret : nullptr; }
  void error_number(int e) override { r_.error_number = e; }

 private:
  CallResult& r_;
  const Function& fn_;
};

}  // namespace marshal::engine
