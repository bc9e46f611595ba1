-- marshal benchmarks: Lua 5.4 + marshal (bindings/lua), the same scenarios as
-- the LuaJIT peer, through the fixture's typemaps.
-- Usage: marshal-lua marshal_lua_peers.lua ROOT ITERATIONS REPETITIONS LABEL
-- (or lua5.4 with LUA_CPATH at the built marshal.so). The fixture library is
-- found by the typemaps' load list (LD_LIBRARY_PATH or build/tests).
-- Prints one JSON object like the other peers; each scenario checks its result
-- once, then consumes every result of the timed loop.
local marshal = require("marshal")
local root, iterations, reps, label = arg[1] or ".", tonumber(arg[2] or "1000000"), tonumber(arg[3] or "5"),
  arg[4] or "marshal Lua 5.4"
local fx = marshal.load(root .. "/tests/fixtures/pinvoke.json")
local cbl = marshal.load(root .. "/tests/fixtures/callbacks.json")
local ob = marshal.load(root .. "/tests/fixtures/objects.json")
-- Wall time, as the other drivers measure (os.clock is CPU time, which leaves
-- out the time the process waited for the CPU): CLOCK_MONOTONIC through libc.
local libc = marshal.load(root .. "/typemaps/libc.json")
local clock_gettime = libc.clock_gettime
local function now()
  local _, ts = clock_gettime(1)
  return ts.tv_sec * 1e9 + ts.tv_nsec
end
local sink = 0
local function measure(body, n)
  body(math.max(1, n // 20))
  local ns = {}
  for r = 1, reps do
    local t0 = now()
    body(n)
    ns[r] = (now() - t0) / n
  end
  table.sort(ns)
  return { median = ns[#ns // 2 + 1], min = ns[1], max = ns[#ns] }
end
local function expect(ok, what) if not ok then error("wrong result: " .. what) end end

local text64 = string.rep("marshal: P/Invoke for any host. ", 2)
local text16 = "h\u{e9}llo w\u{f6}rld, \u{2211} UTF-16 text here"
local values = {}
for i = 1, 1000 do values[i] = i - 1 end
local data = fx:new("double", 1000, values)       -- native memory, like the LuaJIT peer's ffi.new
local pts = {}
for i = 1, 100 do pts[i] = { x = i - 1, y = -(i - 1) } end
local pts_native = fx:new("Point", 100, pts)
local plus_one = cbl:callback("IntFn", function(v) return v + 1 end)  -- registered once, as the peers do
local counter = ob:create("Counter", 0)

local add_i32, sum_f64, len8, len16 = fx.add_i32, fx.sum_in_f64_array, fx.len_in_utf8, fx.len_in_utf16
local add_vec2, fill, get_point, reverse = fx.add_vec2, fx.fill_out_i32_array, fx.get_out_point, fx.reverse_out_utf8
local sum_pts, apply = fx.sum_in_point_array, cbl.apply_i32

expect(add_i32(1, 2) == 3, "add_i32")
expect(sum_f64(data, 1000) == 499500, "sum_f64")
expect(len8(text64) == 64, "utf8_len")
local r = add_vec2({ x = 1, y = 2 }, { x = 3, y = 4 })
expect(r.x == 4 and r.y == 6, "vec2_add")
expect(fill(256)[256] == 255 * 255 - 3, "fill_i32")
expect(apply(plus_one, 41) == 42, "call_cb")
expect(len16(text16) == 31, "utf16_len")
local pt = get_point(3, 4)
expect(pt.x == 3 and pt.y == 4, "out_struct")
local n7, rev = reverse("marshal", 64)
expect(n7 == 7 and rev == "lahsram", "out_string")
local want = 0
for i = 0, 99 do want = want + i * 10 - i end
expect(sum_pts(pts_native, 100) == want, "struct_array")
expect(counter:Add(1) == 1, "vtable_method")

local s = {}
s.add_i32 = function(n) local t = 0 for i = 1, n do t = t + add_i32(i % 65536, 3) end sink = sink + t end
s.sum_f64 = function(n) local t = 0 for _ = 1, n do t = t + sum_f64(data, 1000) end sink = sink + t end
s.utf8_len = function(n) local t = 0 for _ = 1, n do t = t + len8(text64) end sink = sink + t end
s.vec2_add = function(n)
  local t = 0
  for i = 1, n do t = t + add_vec2({ x = i, y = 1 }, { x = 2, y = 3 }).x end
  sink = sink + t
end
s.fill_i32 = function(n) local t = 0 for _ = 1, n do t = t + fill(256)[6] end sink = sink + t end
s.call_cb = function(n) local t = 0 for i = 1, n do t = t + apply(plus_one, i % 65536) end sink = sink + t end
s.utf16_len = function(n) local t = 0 for _ = 1, n do t = t + len16(text16) end sink = sink + t end
s.out_struct = function(n) local t = 0 for i = 1, n do t = t + get_point(i % 65536, 1).x end sink = sink + t end
s.out_string = function(n)
  local t = 0
  for _ = 1, n do local _, o = reverse("marshal", 64) t = t + #o end
  sink = sink + t
end
s.struct_array = function(n) local t = 0 for _ = 1, n do t = t + sum_pts(pts_native, 100) end sink = sink + t end
s.vtable_method = function(n) local t = 0 for _ = 1, n do t = t + counter:Add(1) end sink = sink + t end

local heavy = { sum_f64 = 100, struct_array = 10, fill_i32 = 10, utf16_len = 10 }
local parts = {}
local names = { "add_i32", "sum_f64", "utf8_len", "vec2_add", "fill_i32", "call_cb", "utf16_len", "out_struct",
                "out_string", "struct_array", "vtable_method" }
local only = os.getenv("MARSHAL_LUA_BENCH_ONLY")
for _, name in ipairs(names) do
  if not only or only:find(name, 1, true) then
    local m = measure(s[name], math.max(1, iterations // (heavy[name] or 1)))
    parts[#parts + 1] = string.format('"%s": {"median": %.3f, "min": %.3f, "max": %.3f}', name, m.median, m.min, m.max)
  end
end
plus_one:release()
io.write(string.format('{"implementation": "%s", "scenarios": {%s}}\n', label, table.concat(parts, ", ")))
