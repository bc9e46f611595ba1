-- marshal Lua host: every function of the fixture typemaps the Lua tests use
-- (pinvoke.json, callbacks.json, objects.json), called validly from Lua, each
-- result checked twice:
--   1. against the value the fixture's C source computes (tests/fixtures/*.c),
--      written out below by hand from that source (never from marshal's output);
--   2. against the same call made through the engine's C++ API: `marshal call`
--      (bindings/cli/call.cpp: JSON -> engine Value -> Plan::call -> JSON), run
--      once per call; its JSON is read by tests/lua/json.lua (no marshal code)
--      and compared value by value with what Lua got (positional results:
--      the return unless void, then the out and inout parameters in order,
--      then errno when captured).
-- The run ends by checking that every function of the three typemaps was
-- called here, so a function added to a fixture without a call fails.
--
-- Calls not compared with the C++ API (step 2), and why:
--   res_open, res_value, res_close, res_live: handles and the fixture's count
--     of open handles live in one process; `marshal call` is a new process each
--     time (these are checked against the C semantics and the live count).
--   address_in_*: the address native code was given differs between processes
--     (checked: a real address).
--   every function of callbacks.json and objects.json except va_digest and
--     no_counter_or_null: `marshal call` takes JSON, which has no host
--     functions and no live objects (tests/unit-callbacks.cpp and
--     tests/unit-objects.cpp compare those through the C++ API with C).
-- Functions left out entirely: none.
-- marshal.null inside returned tables: no fixture function returns a record
-- whose pointer field is null (fill_out_header always sets items), so it is
-- checked in a Header read back from native memory (lib:new, box:get()) and
-- inside argument tables (sum_in_header, items = marshal.null).
local check = dofile("tests/lua/check.lua")
local J = dofile("tests/lua/json.lua")
local marshal = require("marshal")

local MARSHAL = os.getenv("MARSHAL_EXE") or "build/bindings/cli/marshal"
local TYPEMAPS = {
  pinvoke = "tests/fixtures/pinvoke.json",
  callbacks = "tests/fixtures/callbacks.json",
  objects = "tests/fixtures/objects.json",
}

-- ---- argument specs: one value, as Lua passes it and as JSON --------------------------
local Bytes = {}
local function B(s) return setmetatable({ bytes = s }, Bytes) end  -- bytes: a Lua string, base64 in JSON
local Unsigned = {}
-- a uint64 argument: in Lua its 64 bits as an integer (2^64 - 1 is -1), in JSON its decimal value
local function U(x) return setmetatable({ value = x }, Unsigned) end
local function A(...) return table.pack(...) end
local R = A

local function lua_arg(a)
  if getmetatable(a) == Bytes then return a.bytes end
  if getmetatable(a) == Unsigned then return a.value end
  return a
end

-- What JSON cannot say by itself: marshal.null, bytes, unsigned 64-bit integers.
local function leaf_json(v)
  if v == marshal.null then return "null" end
  if getmetatable(v) == Bytes then return '{"base64":"' .. J.base64(v.bytes) .. '"}' end
  if getmetatable(v) == Unsigned then
    local x = v.value
    if x >= 0 then return string.format("%d", x) end
    local q = (x >> 1) // 5  -- x / 10, unsigned
    return string.format("%d%d", q, x - q * 10)
  end
  return nil
end

local function to_json(v)
  return J.encode(v, leaf_json)
end

-- ---- exact comparison ------------------------------------------------------------------
local function same(a, b)
  if type(a) == "number" and type(b) == "number" then
    return math.type(a) == math.type(b) and (a == b or (a ~= a and b ~= b))
  end
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- Lua's value against the C++ API's JSON for it.
local function same_json(l, j)
  if j == J.null then return l == nil or l == marshal.null end
  if type(j) == "table" and not J.arrays[j] and J.keys[j] and #J.keys[j] == 1 and J.keys[j][1] == "base64" then
    return type(l) == "string" and l == J.unbase64(j.base64)
  end
  if type(j) == "table" and J.keys[j] and #J.keys[j] == 1 and J.keys[j][1] == "float" then
    local f = ({ inf = math.huge, ["-inf"] = -math.huge })[j.float]
    return math.type(l) == "float" and (f and l == f or (j.float == "nan" and l ~= l))
  end
  if type(j) == "table" then
    if type(l) ~= "table" then return false end
    if J.arrays[j] then
      if #l ~= #j then return false end
      for i = 1, #j do if not same_json(l[i], j[i]) then return false end end
      return next(l, #j > 0 and #j or nil) == nil
    end
    for _, k in ipairs(J.keys[j]) do if not same_json(l[k], j[k]) then return false end end
    for k in pairs(l) do if j[k] == nil then return false end end
    return true
  end
  return same(l, j)
end

local function show(v) return check.dump(v) end
local function show_list(t)
  local parts = {}
  for i = 1, t.n do parts[i] = show(t[i]) end
  return "(" .. table.concat(parts, ", ") .. ")"
end

-- ---- the C++ API: `marshal call` --------------------------------------------------------
local typemap_json = {}
local function typemap(tmkey)
  if not typemap_json[tmkey] then
    local f = assert(io.open(TYPEMAPS[tmkey]))
    typemap_json[tmkey] = J.decode(f:read("a"))
    f:close()
  end
  return typemap_json[tmkey]
end
local function returns_void(tmkey, fn)
  local r = typemap(tmkey).functions[fn].returns
  return r == nil or r == "void"
end

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function call_cpp(tmkey, fn, args)
  local cmd = { quote(MARSHAL), "call", quote(TYPEMAPS[tmkey]), quote(fn) }
  for i = 1, args.n do cmd[#cmd + 1] = quote(to_json(args[i])) end
  local p = assert(io.popen(table.concat(cmd, " ") .. " 2>&1"))
  local text = p:read("a")
  local ok = p:close()
  if not ok then return nil, text end
  local read, doc = pcall(J.decode, text)
  if not read then return nil, doc end
  local list = { n = 0 }
  local function add(v) list.n = list.n + 1; list[list.n] = v end
  if not returns_void(tmkey, fn) then add(doc["return"]) end
  for _, k in ipairs(J.keys[doc.out]) do add(doc.out[k]) end
  if doc.errno ~= nil then add(doc.errno) end
  return list
end

-- ---- the calls ---------------------------------------------------------------------------
local libs = {
  pinvoke = marshal.load(TYPEMAPS.pinvoke),
  callbacks = marshal.load(TYPEMAPS.callbacks, { pump = { "call_from_threads" } }),
  objects = marshal.load(TYPEMAPS.objects),
}
local called = { pinvoke = {}, callbacks = {}, objects = {} }
local compared = 0

-- One call: fn(args) must give `want` (the C semantics); with cpp ~= false the
-- same call through the C++ API must give what Lua got. Returns Lua's results.
local function call(tmkey, fn, args, want, opts)
  opts = opts or {}
  called[tmkey][fn] = true
  local largs = {}
  for i = 1, args.n do largs[i] = lua_arg(args[i]) end
  local all = table.pack(pcall(libs[tmkey][fn], table.unpack(largs, 1, args.n)))
  local what = fn .. show_list(args)
  if not all[1] then
    check.ok(false, what .. " raised " .. tostring(all[2]))
    return nil
  end
  local got = { n = all.n - 1 }  -- the results (nil among them kept by n)
  for i = 1, got.n do got[i] = all[i + 1] end
  if want then
    check.ok(same(got, want), what .. ": got " .. show_list(got) .. ", want (from the C source) " .. show_list(want))
  end
  if opts.cpp ~= false then
    local cpp, err = call_cpp(tmkey, fn, args)
    if not cpp then
      check.ok(false, what .. ": marshal call failed: " .. err)
    else
      local ok = cpp.n == got.n
      for i = 1, cpp.n do ok = ok and same_json(got[i], cpp[i]) end
      check.ok(ok, what .. ": Lua got " .. show_list(got) .. ", the C++ API " .. show_list(cpp))
      compared = compared + 1
    end
  end
  return got
end

local function P(fn, args, want, opts) return call("pinvoke", fn, args, want, opts) end

local function f32(x) return (string.unpack("<f", string.pack("<f", x))) end
local huge = math.huge

-- primitives
P("echo_i8", A(-128), R(-128))
P("echo_i8", A(127), R(127))
P("echo_u8", A(255), R(255))
P("echo_i16", A(-32768), R(-32768))
P("echo_u16", A(65535), R(65535))
P("echo_i32", A(-2147483648), R(-2147483648))
P("echo_u32", A(4294967295), R(4294967295))
P("echo_i64", A(math.mininteger), R(math.mininteger))
P("echo_u64", A(U(-1)), R(-1))                         -- 2^64 - 1: all 64 bits
P("echo_u64", A(U(math.mininteger)), R(math.mininteger)) -- 2^63
P("echo_f32", A(0.1), R(f32(0.1)))
P("echo_f32", A(-huge), R(-huge))
P("echo_f64", A(1 / 3), R(1 / 3))
P("echo_f64", A(huge), R(huge))
P("echo_char", A(65), R(65))
P("echo_long", A(-(1 << 40)), R(-(1 << 40)))
P("echo_ulong", A(U(-1)), R(-1))
P("echo_size", A(1 << 40), R(1 << 40))
P("add_i32", A(2147483647, 1), R(-2147483648))      -- wraps, as the C adds as uint32
P("add_f64", A(0.1, 0.2), R(0.1 + 0.2))
P("add_mixed", A(-3, 2.5, 300, 0.25, 1 << 40), R(-3 + 2.5 + 300 + 0.25 + (1 << 40)))

-- bools and enums
P("not_cbool", A(false), R(true))
P("not_bool32", A(true), R(false))
P("not_vbool", A(false), R(true))
P("not_vbool", A(true), R(false))
P("next_color", A("BLUE"), R("RED"))
P("next_color", A(0), R("GREEN"))
P("flags_or", A({ "READ" }, { "EXEC" }), R({ "READ", "EXEC" }))
P("flags_or", A(3, 4), R({ "READ", "WRITE", "EXEC" }))

-- strings in
P("len_in_utf8", A("h\u{e9}llo"), R(6))
P("len_in_utf16", A("h\u{1F600}\u{e9}"), R(4))    -- a surrogate pair
P("len_in_utf32", A("h\u{1F600}\u{e9}"), R(3))
P("len_in_wchar", A("h\u{1F600}\u{e9}"), R(3))
P("sum_in_latin1", A("a\u{fc}"), R(97 + 0xFC))
P("sum_in_bytes", A(B("\1\2\255"), 3), R((1 * 31 + 2) * 31 + 255))
P("count_in_double_nul", A({ "a", "bc", "d" }), R(3))

-- strings out, inout, returned
P("reverse_out_utf8", A("abcdef", 16), R(6, "fedcba"))
P("reverse_out_utf8", A("abcdef", 4), R(3, "cba"))  -- cut to the capacity
P("copy_out_utf8", A("h\u{e9}llo", 16), R(6, "h\u{e9}llo"))
P("copy_out_utf8", A("abcdef", 4), R(4, "abcd"))  -- a full buffer without a terminator: taken whole
P("copy_out_bytes_utf8", A(B("abc"), 3, 16), R(3, "abc"))
P("copy_out_bytes_utf8", A(B("\xc3\xa9x"), 3, 16), R(3, "\u{e9}x"))
P("copy_out_bytes_utf8", A(B("abcdef"), 6, 4), R(4, "abcd"))  -- a full buffer without a terminator: taken whole
P("fill_out_utf16", A(16), R(7, "h\u{e9}llo\u{1F600}"))
P("fill_out_utf16", A(4), R(3, "h\u{e9}l"))
P("greet_out_latin1", A(), R("gr\u{fc}\u{df}e"))
P("upper_inout_ascii", A("abc1z"), R("ABC1Z"))
P("dup_ret_utf8", A("x\u{e9}z"), R("x\u{e9}z"))
P("static_ret_name", A(), R("fixture"))
P("dup_ret_utf16", A("h\u{1F600}"), R("h\u{1F600}"))
P("make_ret_double_nul", A(), R({ "ab", "cde", "f" }))

-- arrays
P("sum_in_i32_array", A({ 1, -2, 3, 2147483647 }, 4), R(1 - 2 + 3 + 2147483647))
P("sum_in_f64_array", A({ 0.5, 0.25, -2.0 }, 3), R(0.5 + 0.25 - 2.0))
P("sum_in_u8_bytes", A(B("\1\2\250"), 3), R(253))
P("sum_in_u8_bytes", A({ 1, 2, 250 }, 3), R(253))
P("sum_in_point_array", A({ { x = 1, y = 2 }, { x = 3, y = 4 } }, 2), R(12 + 34))
P("count_in_strings_sentinel", A({ "x", "y", "z", "w" }), R(4))
P("sum_in_i16_fixed4", A({ 1, 2, 3, -4 }), R(1 + 2 * 2 + 3 * 3 - 4 * 4))
P("fill_out_i32_array", A(4), R({ -3, -2, 1, 6 }))
P("fill_out_u8_bytes", A(3), R("\250\251\252"))
P("fill_out_points_len", A(5), R(3, { { x = 0, y = 0 }, { x = 1, y = -1 }, { x = 2, y = -2 } }))
P("fill_inout_i32_array", A({ 1, -2, 3 }, 3), R({ 2, -4, 6 }))
P("reverse_inout_f32_array", A({ 1.5, 2.5, 3.5, 4.5 }, 4), R({ 4.5, 3.5, 2.5, 1.5 }))
P("range_ret_i32", A(3), R({ 0, 10, 20 }))
P("range_ret_i32", A(0), R({}))
P("names_ret_sentinel", A(), R({ "alpha", "beta", "gamma" }))
P("fixture_free", A(nil), R())
P("fixture_free", A(marshal.null), R())
P("alloc_out_points", A(), R(0, { { x = 1, y = 100 }, { x = 2, y = 200 }, { x = 3, y = 300 }, { x = 4, y = 400 } }, 4))

-- pointers to one value
P("get_out_i32", A(), R(4242))
P("get_out_point", A(7, -8), R({ x = 7, y = -8 }))
P("incr_inout_i64", A(-1), R(0))
P("read_in_point", A({ x = 2, y = 3 }), R(2003))
P("scale_inout_point", A({ x = 2, y = -3 }, 4), R({ x = 8, y = -12 }))
P("maybe_null_in_i32", A(9), R(9))
P("maybe_null_in_i32", A(nil), R(-1))
P("maybe_null_in_i32", A(marshal.null), R(-1))

-- structs and unions by value
P("sum_in_point", A({ x = 5, y = 6 }), R(11))
P("make_ret_point", A(-1, 2), R({ x = -1, y = 2 }))
P("add_vec2", A({ x = 1.5, y = 2.0 }, { x = 0.25, y = -1.0 }), R({ x = 1.75, y = 1.0 }))
P("echo_s1i", A({ a = 1 }), R({ a = 2 }))
P("echo_s2i", A({ a = 1, b = 2 }), R({ a = 2, b = 4 }))
P("echo_s3i", A({ a = 1, b = 2, c = 3 }), R({ a = 2, b = 4, c = 6 }))
P("echo_s4i", A({ a = 1, b = 2, c = 3, d = 4 }), R({ a = 2, b = 4, c = 6, d = 8 }))
P("echo_s1f", A({ a = 1.0 }), R({ a = 1.5 }))
P("echo_s2f", A({ a = 1.0, b = 2.0 }), R({ a = 1.5, b = 3.5 }))
P("echo_s3f", A({ a = 1.0, b = 2.0, c = 3.0 }), R({ a = 1.5, b = 3.5, c = 5.5 }))
P("echo_s4f", A({ a = 1.0, b = 2.0, c = 3.0, d = 4.0 }), R({ a = 1.5, b = 3.5, c = 5.5, d = 7.5 }))
P("echo_mix_if", A({ i = 1, f = 1.5 }), R({ i = 2, f = 3.0 }))
P("echo_mix_fid", A({ f = 1.5, i = 5, d = 2.5 }), R({ f = 2.5, i = 4, d = 7.5 }))
P("echo_mix_bd", A({ tag = 1, v = 2.5 }), R({ tag = 254, v = -2.5 }))
do
  local data, doubled, t = {}, {}, 0
  for i = 0, 99 do
    data[i + 1] = (i * 3) % 256
    doubled[i + 1] = string.char((i * 3 + i) % 256)
    t = (t * 7 + (i * 3) % 256) & 0xFFFFFFFF
  end
  P("echo_big100", A({ data = data }), R({ data = table.concat(doubled) }))  -- uint8 arrays come back as strings
  P("sum_in_big100", A({ data = data }), R(t))
end
do  -- both members read back: f is the float with i's bits
  local i = 1 ~ 0x00800000
  P("echo_union_if", A({ i = 1 }), R({ i = i, f = (string.unpack("<f", string.pack("<i4", i))) }))
end
P("echo_bits", A({ a = 7, b = 300, c = 1 }), R({ a = (7 + 1) & 7, b = (300 * 2) & 511, c = 1 ~ 0xFFFFF }))
P("echo_arr_in_struct", A({ v = { 1, 2, 3 }, f = 1.5 }), R({ v = { 2, 4, 6 }, f = -1.5 }))

-- stack spills
P("spill12_i64", A(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), R(650))  -- the sum of k*k
P("spill12_mixed", A(1, 0.5, 3, 1.5, 5, 2.5, 7, 3.5, 9, 4.5, 11, 5.5),
  R(1 + 2 * 0.5 + 3 * 3 + 4 * 1.5 + 5 * 5 + 6 * 2.5 + 7 * 7 + 8 * 3.5 + 9 * 9 + 10 * 4.5 + 11 * 11 + 12 * 5.5))
do
  local pts, t = {}, 0
  for k = 1, 7 do
    pts[k] = { x = k, y = -k }
    t = t + k * (k * 100 - k)
  end
  P("spill_points", table.pack(table.unpack(pts, 1, 7)), R(t))
end

-- nested pointers; cb is Header's size field, filled by the engine: sizeof(Header) is 32
-- (uint32, char[16], int32, then the pointer at 24)
P("sum_in_header", A({ name = "abc", n = 2, items = { 5, 6 } }), R(32 * 1000000 + 3 * 1000 + 11))
P("sum_in_header", A({ name = "abcd", n = 2, items = marshal.null }), R(32 * 1000000 + 4 * 1000))
P("fill_out_header", A(), R({ cb = 32, name = "filled", n = 3, items = { 7, 8, 9 } }))
P("sum_in_flex", A({ n = 2, tag = 1, items = { 0.5, 0.25 } }), R(1.75))
do  -- marshal.null inside a returned table: a Header in native memory read back whole
  local fx = libs.pinvoke
  local h = fx:new("Header")
  local t = h:get()
  check.ok(rawequal(t.items, marshal.null), "a null pointer field reads as marshal.null")
  check.deq(t, { cb = 0, name = "", n = 0, items = marshal.null }, "a zeroed Header")
  h:set({ cb = 32, name = "abcde", n = 2, items = marshal.null })
  check.ok(rawequal(h:get().items, marshal.null), "written and read back as marshal.null")
  check.eq(fx.sum_in_header(h), 32 * 1000000 + 5 * 1000, "the box by address: items NULL, n ignored")
  h:set({ cb = 32, name = "abcde", n = 2, items = { 5, 6 } })
  check.eq(fx.sum_in_header(h), 32 * 1000000 + 5 * 1000 + 11, "and with items")
end

-- handles (one process: Lua only)
do
  local fx = libs.pinvoke
  local base = P("res_live", A(), nil, { cpp = false })[1]
  check.eq(math.type(base), "integer", "res_live")
  local h = P("res_open", A(5), nil, { cpp = false })[1]
  check.eq(marshal.type(h), "handle", "res_open gives a handle")
  check.eq(fx.res_live(), base + 1, "one more open")
  P("res_value", A(h), R(5), { cpp = false })
  P("res_close", A(h), R(0), { cpp = false })
  check.eq(fx.res_live(), base, "closed")
  P("res_open", A(-1), R(nil), { cpp = false })  -- NULL: nullable, so nil
end

-- errno and variadics
P("fail_with_errno", A(0), R(0, 0))
P("sum_var_i32", A(3, { type = "int", value = 1 }, { type = "int", value = -2 }, { type = "int", value = 40 }), R(39))
P("fmt_var", A(32, "%d-%s-%.2f", { type = "int", value = 5 }, { type = "string", value = "x" },
  { type = "double", value = 1.25 }), R(8, "5-x-1.25"))

-- direction semantics: `in` arrays and strings are not written back
do
  local v = { 1, 2, 3 }
  P("scribble_in_i32_array", A(v, 3), R(6))
  check.deq(v, { 1, 2, 3 }, "the Lua table is unchanged")
end
P("scribble_in_utf8", A("abc"), R(3))
do
  local p = { x = 1, y = 2 }
  P("scribble_in_point", A(p), R(3))
  check.deq(p, { x = 1, y = 2 }, "the record table is unchanged")
end
P("scribble_in_bytes", A(B("\1\2\3"), 3), R(6))

-- conformance: the fixture's FNV-1a over the argument bytes, computed here
do
  local function fnv(h, bytes)
    for i = 1, #bytes do h = (h ~ bytes:byte(i)) * 1099511628211 end  -- wraps mod 2^64
    return h
  end
  local h = 0xcbf29ce484222325
  h = fnv(h, string.pack("<i1", -3))
  h = fnv(h, string.pack("<d", 2.5))
  h = fnv(h, string.pack("<i4i4", 1, 2))
  h = fnv(h, string.pack("<i4i4i4", 7, 8, 9))
  h = fnv(h, string.pack("<I8", 3))
  h = fnv(h, "hi\0")
  h = fnv(h, string.pack("<I1", 7))
  h = fnv(h, string.pack("<d", 1.25))
  P("checksum_args", A(-3, 2.5, { x = 1, y = 2 }, { 7, 8, 9 }, 3, "hi", { tag = 7, v = 1.25 }), R(h))
end

-- const pinning: the address the callee saw (a different process for the C++ API)
for _, c in ipairs({
  { "address_in_f64_array", A({ 1.0, 2.0 }, 2) }, { "address_in_f64_array_copied", A({ 1.0, 2.0 }, 2) },
  { "address_in_u8_bytes", A(B("ab"), 2) }, { "address_in_u8_bytes_copied", A(B("ab"), 2) },
  { "address_in_utf8", A("ab") }, { "address_in_utf8_copied", A("ab") },
  { "address_in_latin1", A("ab") }, { "address_in_utf16", A("ab") },
}) do
  local r = P(c[1], c[2], nil, { cpp = false })
  check.ok(r and r.n == 1 and math.type(r[1]) == "integer" and r[1] ~= 0, c[1] .. ": an address")
end

-- ---- callbacks.json (against the C source; host functions have no JSON form) --------------
local function CB(fn, args, want) return call("callbacks", fn, args, want, { cpp = false }) end
CB("apply_i32", A(function(v) return v * 2 end, 21), R(42))
CB("fold_f64", A(function(acc, x) return acc * 2 + x end, { 1.0, 2.0, 0.5 }, 3), R(((0 * 2 + 1.0) * 2 + 2.0) * 2 + 0.5))
CB("apply_point", A(function(p) return p.x * 100 + p.y end, 4, 2), R(402))
CB("apply_text", A(function(s) return #s end, "h\u{e9}llo"), R(6))
CB("apply_u8", A(function(v) return v + 100 end, 100), R(201))  -- (100 + 100) + 1, a uint8
CB("apply_out", A(function(v) return { ["return"] = 4, result = v * 2 } end, 21), R(4 * 1000 + 42))
CB("apply_vec", A(function(v, k) return { x = v.x * k, y = v.y * k } end, { x = 1.5, y = -2.0 }),
  R({ x = 4.5, y = -5.5 }))  -- k is 3, then y + 0.5
do
  local r = libs.callbacks:callback("IntFn", function(v) return v + 100 end)
  CB("register_i32", A(r), R())
  CB("fire_registered", A(5), R(105))
  r:release()
  CB("register_i32", A(nil), R())
  CB("fire_registered", A(5), R(-999))  -- none registered
  CB("call_from_threads", A(function(i) return i * 2 end, 3, 10), R(3 * 2 * (9 * 10 // 2)))
  local owner_calls = 0
  local owner = libs.callbacks:callback("OwnerFn", function(v) owner_calls = owner_calls + 1; return v end)
  CB("start_async", A(owner, 2, 5), R())
  local deadline = os.time() + 60
  while owner_calls < 10 and os.time() < deadline do marshal.pump(10) end
  CB("join_async", A(), R(2 * (4 * 5 // 2)))
  owner:release()
end

-- ---- objects.json (against the C source; live objects have no JSON form) ----------------
local function O(fn, args, want, opts) return call("objects", fn, args, want, opts or { cpp = false }) end
do
  local o = libs.objects
  collectgarbage(); collectgarbage()
  O("objects_reset", A(), R())
  local live = O("objects_live", A())[1]
  O("objects_faults", A(), R(0))
  local c = O("counter_create", A(5))[1]
  check.eq(marshal.type(c), "object", "counter_create: an object")
  check.eq(o.objects_live(), live + 1, "one more live object")
  O("counter_get", A(c), R(5))
  O("counter_add_direct", A(c, 3), R(8))
  O("object_refs", A(c), R(1))  -- AddRef then Release: the count Lua's one reference holds
  O("as_shape", A(c), R(nil))   -- a Counter is not an IShape
  local sq = O("square_create", A(2.0))
  check.ok(sq and sq[1] == 0 and marshal.type(sq[2]) == "object", "square_create: S_OK and the object")
  local shape = O("as_shape", A(sq[2]))[1]
  O("shape_grow", A(shape, 1.0), R(0))
  check.eq(shape:Area(), 9.0, "grown by 1: 3 x 3")
  check.err(function() return o.square_create(-1.0) end, "square_create")  -- check: fails_when negative
  local s = O("store_create", A())[1]
  check.eq(marshal.type(s), "object", "store_create: an object")
  O("store_last_sum", A(), R(0))  -- no AddAll has run in this process
  local p = O("probe_create", A())[1]
  check.eq(marshal.type(p), "object", "probe_create: an object")
  check.eq(p:Thread(), o.current_thread(), "the probe runs on this thread")
  local t = O("current_thread", A())[1]
  check.ok(math.type(t) == "integer" and t ~= 0, "current_thread")
  called.objects.no_counter = true
  check.err(function() return o.no_counter() end, "no_counter")  -- not nullable: NULL is an error
  O("no_counter_or_null", A(), R(nil), {})
  O("va_digest", A("ild", { type = "int", value = 2 }, { type = "int64", value = 3 }, { type = "double", value = 0.5 }),
    R(((0 * 31 + 2) * 31 + 3) * 31 + 500), {})
  c, sq, shape, s, p = nil, nil, nil, nil, nil
  collectgarbage(); collectgarbage()
  check.eq(o.objects_live(), live, "all released")
end

-- ---- every function of the three typemaps was called ------------------------------------
for tmkey in pairs(TYPEMAPS) do
  local n = 0
  for fn in pairs(typemap(tmkey).functions) do
    n = n + 1
    check.ok(called[tmkey][fn], TYPEMAPS[tmkey] .. ": " .. fn .. " is not called by tests/lua/coverage.lua")
  end
  check.ok(n > 0, tmkey .. ": functions read")
end
check.ok(compared >= 100, "calls compared with the C++ API: " .. compared)
check.done("lua-coverage")
