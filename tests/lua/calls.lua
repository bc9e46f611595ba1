-- marshal Lua host: every parameter form of the P/Invoke fixture from Lua
-- (scalars, strings, bytes, records, arrays, enums, out and inout, errno,
-- variadics, handles), and bad input as structured errors.
local check = dofile("tests/lua/check.lua")
local marshal = require("marshal")
local fx = marshal.load("tests/fixtures/pinvoke.json")

-- functions are fields, bound once and cached
check.eq(fx.add_i32, fx.add_i32, "the same closure each time")
check.eq(fx.add_i32(2, 3), 5, "add_i32")
check.eq(fx.add_f64(0.25, 0.5), 0.75, "add_f64")
check.eq(fx.add_mixed(1, 2.5, 3, 0.5, 10), 17.0, "add_mixed")

-- integers: exact, range-checked, no fractions
check.eq(fx.echo_i8(-128), -128, "echo_i8 min")
check.eq(fx.echo_u8(255), 255, "echo_u8 max")
check.eq(fx.echo_i64(math.mininteger), math.mininteger, "echo_i64 min")
check.eq(fx.echo_i64(math.maxinteger), math.maxinteger, "echo_i64 max")
check.eq(fx.echo_i32(7.0), 7, "an integral float for an integer")
check.eq(math.type(fx.echo_i32(7.0)), "integer", "comes back as an integer")
check.err(function() return fx.echo_u8(256) end, "out of range", { ["function"] = "echo_u8", parameter = "v", position = 1 })
check.err(function() return fx.echo_i32(1.5) end, "1.5", { parameter = "v" })
check.err(function() return fx.echo_u32(-1) end, "out of range", { parameter = "v" })
-- uint64 beyond math.maxinteger: two's complement in a Lua integer, the same 64 bits back
local big = fx.echo_u64(-1)
check.eq(big, -1, "uint64 max arrives as -1 (0xffffffffffffffff)")
check.eq(string.format("%x", big), "ffffffffffffffff", "its bits")
check.eq(fx.echo_u64(big), big, "round trip")
check.eq(fx.echo_u64(math.mininteger), math.mininteger, "2^63 round trip")
check.ok(math.ult(math.maxinteger, fx.echo_u64(math.mininteger)), "2^63 is above maxinteger unsigned")
check.eq(fx.echo_u64(math.maxinteger), math.maxinteger, "maxinteger")
check.eq(fx.echo_f32(0.5), 0.5, "echo_f32")
check.eq(fx.echo_size(12345), 12345, "echo_size")

-- bools and enums
check.eq(fx.not_cbool(true), false, "cbool")
check.eq(fx.not_bool32(false), true, "bool32")
check.eq(fx.next_color("RED"), "GREEN", "enum by name")
check.eq(fx.next_color(1), "BLUE", "enum by number")
check.err(function() return fx.next_color("PURPLE") end, "PURPLE", { parameter = "c" })
check.deq(fx.flags_or({ "READ" }, { "WRITE" }), { "READ", "WRITE" }, "flags")

-- strings and bytes are Lua strings
check.eq(fx.len_in_utf8("h\u{e9}llo"), 6, "utf8 bytes")
check.eq(fx.len_in_utf16("h\u{e9}llo"), 5, "utf16 units")
check.eq(fx.sum_in_u8_bytes("\1\2\3", 3), 6, "a byte array from a string")
check.eq(fx.sum_in_u8_bytes({ 1, 2, 3 }, 3), 6, "a byte array from a sequence")
check.eq(fx.dup_ret_utf8("abc"), "abc", "returned string")
local n, out = fx.reverse_out_utf8("abc", 16)
check.eq(out, "cba", "out string")
check.eq(n, 3, "its return")
check.eq(fx.fill_out_u8_bytes(4), "\250\251\252\253", "out bytes come back as a string")
check.eq(fx.count_in_strings_sentinel({ "a", "b", "c" }), 3, "a string list")

-- records by field name
check.eq(fx.read_in_point({ x = 3, y = 4 }), 3004, "record in")
check.err(function() return fx.read_in_point({ x = 3 }) end, "'y'", { parameter = "p" })
check.err(function() return fx.read_in_point({ x = 3, y = 4, z = 5 }) end, "unknown field 'z'", { parameter = "p" })
check.err(function() return fx.read_in_point({ 3, 4 }) end, "field names", { parameter = "p" })
check.err(function() return fx.read_in_point({ [true] = 3 }) end, "got a boolean key", { parameter = "p" })
check.err(function() return fx.read_in_point({ [2.5] = 3 }) end, "got a number key", { parameter = "p" })
check.deq(fx.make_ret_point(5, 6), { x = 5, y = 6 }, "record returned")
check.deq(fx.get_out_point(1, 2), { x = 1, y = 2 }, "out record")
check.deq(fx.scale_inout_point({ x = 2, y = 3 }, 10), { x = 20, y = 30 }, "inout record")
check.deq(fx.add_vec2({ x = 1.5, y = 2 }, { x = 0.5, y = 1 }), { x = 2.0, y = 3.0 }, "struct by value")
-- a struct of scalars by value is read by field name straight from the table (host
-- adapter); whatever that fast form refuses goes to the general converter, which says why
check.deq(fx.add_vec2({ y = 2, x = 1.5 }, { y = 1, x = 0.5 }), { x = 2.0, y = 3.0 }, "fields in any order")
check.eq(fx.sum_in_point({ y = 4, x = 3.0 }), 7, "an integral float in an int32 field")
check.err(function() return fx.sum_in_point({ x = 3.5, y = 4 }) end, "field 'x': expected an integer for int32, got the number 3.5",
  { parameter = "p", position = 1 })
check.err(function() return fx.sum_in_point({ x = true, y = 4 }) end, "field 'x'", { parameter = "p" })
check.err(function() return fx.sum_in_point({ x = 3, y = 2 ^ 40 }) end, "out of range for int32", { parameter = "p" })
check.err(function() return fx.sum_in_point({ x = 3 }) end, "missing field 'y'", { parameter = "p" })
check.err(function() return fx.sum_in_point({ x = 3, y = 4, z = 1 }) end, "unknown field 'z'", { parameter = "p" })
check.err(function() return fx.add_vec2({ x = 1, y = 2 }, { x = "a", y = 2 }) end, "field 'x'", { parameter = "b", position = 2 })
check.deq(fx.echo_union_if({ i = 7 }), fx.echo_union_if({ i = 7 }), "union")

-- arrays are sequences
check.eq(fx.sum_in_i32_array({ 1, 2, 3, 4 }, 4), 10, "array in")
check.eq(fx.sum_in_point_array({ { x = 1, y = 2 }, { x = 3, y = 4 } }, 2), 46, "array of records")
check.deq(fx.fill_out_i32_array(3), { -3, -2, 1 }, "out array")
do  -- an out array of int32 becomes a sequence in one pass: every element, integers
  local t = fx.fill_out_i32_array(300)
  check.eq(#t, 300, "out array length")
  for i = 1, 300 do check.eq(t[i], (i - 1) * (i - 1) - 3, "out array element " .. i) end
  check.eq(math.type(t[300]), "integer", "out array elements are integers")
  check.deq(fx.fill_out_i32_array(0), {}, "an empty out array")
end
check.deq(fx.range_ret_i32(4), { 0, 10, 20, 30 }, "returned array")
check.err(function() return fx.sum_in_i32_array({ 1, 2, nil, 4 }, 4) end, nil, { parameter = "v" })
check.err(function() return fx.sum_in_i32_array({ 1, "x" }, 2) end, "element 1", { parameter = "v" })

-- pointers to one value, null
check.eq(fx.incr_inout_i64(41), 42, "inout scalar")
check.eq(fx.maybe_null_in_i32(5), 5, "nullable given")
check.eq(fx.maybe_null_in_i32(nil), -1, "nil is NULL")
check.eq(fx.maybe_null_in_i32(marshal.null), -1, "marshal.null is NULL")
check.err(function() return fx.read_in_point(nil) end, "null", { parameter = "p" })
local enil = check.err(function() return fx.echo_i32(nil) end, "got nil", { parameter = "v" })
check.eq(enil and enil.got, "nil", "e.got names Lua's nil")

-- errno last when captured; a failed check is an error carrying it
local r, e = fx.fail_with_errno(0)
check.eq(r, 0, "fail_with_errno ok")
check.eq(math.type(e), "integer", "errno is the last result")
check.err(function() return fx.fail_with_errno(2) end, "errno 2", { ["function"] = "fail_with_errno" })

-- variadics: {type = T, value = V}
check.eq(fx.sum_var_i32(3, { type = "int", value = 1 }, { type = "int", value = 2 }, { type = "int", value = 3 }), 6,
  "variadic")

-- the table form
local t = fx:call_named("reverse_out_utf8", "xyz", 8)
check.deq(t, { ["return"] = 3, out = "zyx" }, "call_named")

-- wrong counts and kinds: errors naming the function, never a crash
check.err(function() return fx.add_i32(1) end, "expects 2 arguments (a, b), got 1", { ["function"] = "add_i32" })
check.err(function() return fx.add_i32(1, {}) end, nil, { parameter = "b", position = 2 })
check.err(function() return fx.add_i32(1, print) end, "callback", { parameter = "b" })
check.err(function() return fx.add_i32(1, coroutine.create(print)) end, "thread", { parameter = "b" })
check.err(function() return fx.no_such_function end, "no function or constant 'no_such_function'")
local deep = {}
local cur = deep
for _ = 1, 400 do cur.x = {}; cur = cur.x end
check.err(function() return fx.read_in_point(deep) end, nil, { parameter = "p" })
local e2 = check.err(function() return fx.echo_u8(300) end, "echo_u8")
check.eq(marshal.type(e2), "error", "marshal.type of an error")
check.ok(tostring(e2):find("parameter", 1, true) ~= nil, "__tostring is the whole message")
check.err(function() marshal.load("tests/fixtures/no-such.json") end, "no-such.json")
check.err(function() marshal.load("tests/fixtures/pinvoke.json", { isolate = "process" }) end, "surrogate")
-- options of the wrong type: named, not "bad argument #-1"
for _, o in ipairs({ { max_buffer = "x" }, { deadline = {} }, { isolate = {} } }) do
  local k = next(o)
  local ok, msg = pcall(marshal.load, "tests/fixtures/pinvoke.json", o)
  check.ok(not ok and tostring(msg):find("option '" .. k .. "'", 1, true) and not tostring(msg):find("#-1", 1, true),
    "option " .. k .. " of a wrong type: " .. tostring(msg))
end

-- expected and got, when the engine says so
local e3 = check.err(function() return fx.echo_i32("x") end, nil, { parameter = "v" })
check.eq(e3 and e3.expected, "an integer for int32", "expected")
check.eq(e3 and e3.got, "a string", "got")

-- bad input for every function of the fixture: an error before native code runs
local names = fx:functions()
check.ok(#names > 90, "lib:functions()")
local hostile = { coroutine.create(print), io.stdout }
local refused = 0
for _, name in ipairs(names) do
  for _, bad in ipairs(hostile) do
    local ok = pcall(fx[name], bad, bad, bad)
    if not ok then refused = refused + 1 end
  end
end
check.eq(refused, 2 * #names, "every function refused values Lua cannot pass")
check.err(function() return fx.sum_in_i32_array({ 1 }, 1000000) end, nil, { parameter = "v" })
check.err(function() return fx.sum_in_i32_array({ 1 }, -1) end, nil)
check.err(function() return fx.len_in_utf8("a\0b") end, nil, { parameter = "s" })

check.done("lua-calls")
