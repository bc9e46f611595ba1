-- marshal Lua host: the scalar entry (functions of scalar parameters and a
-- scalar return, bound to a lean entry at bind time). Every result and every
-- error must be the general entry's: the same calls through a library loaded
-- with guard = true (which always takes the engine's general path) are the
-- reference. Plus the checks a lean entry could skip: ranges, non-integral
-- numbers for integers, argument counts, uint64 beyond math.maxinteger, and
-- registered callbacks running (and failing) inside a scalar call.
local check = dofile("tests/lua/check.lua")
local marshal = require("marshal")
local fx = marshal.load("tests/fixtures/pinvoke.json")
local ref = marshal.load("tests/fixtures/pinvoke.json", { guard = true })
local cb = marshal.load("tests/fixtures/callbacks.json")

-- which functions take it
for _, name in ipairs({ "add_i32", "add_f64", "add_mixed", "echo_i8", "echo_u8", "echo_i16", "echo_u16", "echo_i32",
                        "echo_u32", "echo_i64", "echo_u64", "echo_f32", "echo_f64", "echo_size", "not_cbool",
                        "not_bool32" }) do
  check.eq(marshal.entry(fx[name]), "scalar", name .. " takes the scalar entry")
end
check.eq(marshal.entry(fx.len_in_utf8), "general", "a string parameter: the general entry")
check.eq(marshal.entry(fx.read_in_point), "general", "a record parameter: the general entry")
check.eq(marshal.entry(fx.next_color), "general", "an enum (by name): the general entry")
check.eq(marshal.entry(cb.fire_registered), "scalar", "fire_registered takes the scalar entry")
check.eq(marshal.entry(print), nil, "not a bound function")

-- the values a lean entry could get wrong, through every scalar function:
-- the same status, results (and their Lua types) and error fields as the reference
local values = { 0, 1, -1, 7, 127, 128, -128, -129, 255, 256, 32767, 32768, -32769, 65535, 65536,
  2147483647, 2147483648, -2147483648, -2147483649, 4294967295, 4294967296, math.maxinteger, math.mininteger,
  0.0, -0.0, 7.0, -7.0, 1.5, -1.5, 0.1, 2^31, 2^32, 2^53, 2^63, -2^63, 2^64, 1e300, -1e300, 1 / 0, -1 / 0, 0 / 0,
  3.4028234663852886e38, 3.5e38, 1e-45, true, false, nil, "5", "x", {}, marshal.null, print }
local function norm(ok, ...)
  if not ok then
    local e = ...
    if type(e) == "table" then
      return { false, tostring(e.message), tostring(e["function"]), tostring(e.parameter), tostring(e.position) }
    end
    return { false, tostring(e) }
  end
  local out = { true }
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    out[#out + 1] = math.type(v) or type(v)
    out[#out + 1] = v ~= v and "nan" or (math.type(v) == "float" and string.format("%a", v)) or tostring(v)
  end
  return out
end
local compared = 0
local function same_as_ref(name, ...)
  local got = norm(pcall(fx[name], ...))
  local want = norm(pcall(ref[name], ...))
  compared = compared + 1
  local args = {}
  for i = 1, select("#", ...) do args[i] = tostring((select(i, ...))) end
  check.deq(got, want, name .. "(" .. table.concat(args, ", ") .. ")")
end
for _, name in ipairs({ "echo_i8", "echo_u8", "echo_i16", "echo_u16", "echo_i32", "echo_u32", "echo_i64", "echo_u64",
                        "echo_f32", "echo_f64", "echo_char", "echo_long", "echo_ulong", "echo_size", "not_cbool",
                        "not_bool32", "not_vbool" }) do
  for i = 1, #values + 1 do same_as_ref(name, values[i]) end  -- (#values + 1: nil at the end too)
  same_as_ref(name)                                             -- no argument
  same_as_ref(name, 1, 2)                                       -- one too many
end
for _, a in ipairs({ 1, -5, 2147483647, 2147483648, 1.5, 2.0, "3", true }) do
  for _, b in ipairs({ 2, -2147483648, -2147483649, 0.5, 4.0, false }) do same_as_ref("add_i32", a, b) end
end
same_as_ref("add_i32", 1)
same_as_ref("add_i32", 1, 2, 3)
same_as_ref("add_mixed", 1, 2.5, 3, 0.5, 10)
same_as_ref("add_mixed", 128, 2.5, 3, 0.5, 10)
same_as_ref("add_mixed", 1, 2.5, 3, 0.5, 2^63)
same_as_ref("add_mixed", 1, 2.5, 3, 1e300, 10)
check.ok(compared > 900, "compared " .. compared .. " calls")

-- and the same checks stated outright (so a change to the reference is seen too)
check.eq(fx.add_i32(2, 3), 5, "add_i32")
check.eq(math.type(fx.add_i32(2, 3)), "integer", "an integer result")
check.eq(fx.add_i32(2147483647, 1), -2147483648, "int32 wraps in C")
check.eq(fx.add_mixed(1, 2.5, 3, 0.5, 10), 17.0, "add_mixed (integer and floating-point registers)")
check.eq(fx.echo_f32(0.1), 0.10000000149011612, "float parameter and return")
check.eq(fx.echo_i32(7.0), 7, "an integral float for an integer")
check.err(function() return fx.echo_i32(1.5) end, "1.5", { ["function"] = "echo_i32", parameter = "v", position = 1 })
check.err(function() return fx.echo_i32(2147483648) end, "out of range", { parameter = "v", position = 1 })
check.err(function() return fx.echo_u8(-1) end, "out of range", { parameter = "v" })
check.err(function() return fx.add_i32(1, 2^31) end, "out of range", { parameter = "b", position = 2 })
check.err(function() return fx.echo_i64(2^63) end, nil, { parameter = "v" })
check.err(function() return fx.add_i32(1) end, "expects 2 arguments (a, b), got 1", { ["function"] = "add_i32" })
check.err(function() return fx.add_i32(1, 2, 3) end, "expects 2 arguments (a, b), got 3", { ["function"] = "add_i32" })
check.err(function() return fx.add_i32(1, nil) end, nil, { parameter = "b", position = 2 })
check.err(function() return fx.not_cbool(1) end, nil, { parameter = "v" })
check.eq(fx.not_cbool(true), false, "bool")
check.eq(fx.echo_u64(-1), -1, "uint64 max arrives as -1")
check.eq(string.format("%x", fx.echo_u64(math.mininteger)), "8000000000000000", "2^63 round trip")
check.eq(fx.echo_u64(math.maxinteger), math.maxinteger, "maxinteger")
check.err(function() return fx.echo_u64(-1.0) end, "out of range", { parameter = "v" })  -- a float is not bits
check.eq(fx.echo_i64(-1), -1, "int64 -1 stays -1")

-- registered callbacks run inside a scalar call, on this thread; a failing
-- one fails the call with its error as the cause, and the next call is clean
local r = cb:callback("IntFn", function(v)
  if v == 13 then error("boom " .. v) end
  return v * 2
end)
cb.register_i32(r)
check.eq(cb.fire_registered(21), 42, "a registered callback inside a scalar call")
local e = check.err(function() return cb.fire_registered(13) end, "fire_registered", { ["function"] = "fire_registered" })
check.ok(e and tostring(e.cause):find("boom 13", 1, true), "the callback's error is the cause")
check.eq(cb.fire_registered(5), 10, "fine again afterwards")
-- a scalar call made from inside a callback of a scalar call (nested calls)
local inner = cb:callback("IntFn", function(v) return fx.add_i32(v, 1000) end)
cb.register_i32(inner)
check.eq(cb.fire_registered(1), 1001, "nested scalar call")
cb.register_i32(nil)
r:release()
inner:release()
check.eq(fx.add_i32(1, 1), 2, "after the callbacks")

-- in a coroutine too
local co = coroutine.wrap(function(a, b) return fx.add_i32(a, b) end)
check.eq(co(40, 2), 42, "from a coroutine")

check.done()
