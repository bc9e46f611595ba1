-- marshal benchmarks: the LuaJIT FFI peer.
-- Usage: luajit [-joff] luajit_peers.lua LIBRARY ITERATIONS REPETITIONS LABEL
-- Prints one JSON object like the other peers. Every scenario checks its
-- result once, then consumes every result of the timed loop. Callbacks from
-- foreign threads are not possible with LuaJIT (the VM is not thread-safe).
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { double x, y; } Vec2;
  typedef struct { int32_t x, y; } Point;
  int32_t add_i32(int32_t, int32_t);
  double sum_in_f64_array(const double *, size_t);
  size_t len_in_utf8(const char *);
  size_t len_in_utf16(const uint16_t *);
  Vec2 add_vec2(Vec2, Vec2);
  void fill_out_i32_array(int32_t *, size_t);
  int32_t apply_i32(int32_t (*)(int32_t), int32_t);
  void get_out_point(Point *, int32_t, int32_t);
  size_t reverse_out_utf8(const char *, char *, size_t);
  int64_t sum_in_point_array(const Point *, size_t);
  void *counter_create(int32_t);
  typedef int32_t (*add_fn)(void *, int32_t);
  typedef uint32_t (*release_fn)(void *);
  struct timespec { long tv_sec; long tv_nsec; };
  int clock_gettime(int, struct timespec *);
]]
local path, iterations, reps, label = arg[1], tonumber(arg[2] or "1000000"), tonumber(arg[3] or "5"), arg[4] or "LuaJIT"
local lib = ffi.load(path)
local ts = ffi.new("struct timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end
local sink = 0
local function measure(body, n)
  body(math.max(1, math.floor(n / 20)))
  local ns = {}
  for r = 1, reps do
    local t0 = now()
    body(n)
    ns[r] = (now() - t0) / n
  end
  table.sort(ns)
  return { median = ns[math.floor(#ns / 2) + 1], min = ns[1], max = ns[#ns] }
end
local function expect(ok, what) if not ok then error("wrong result: " .. what) end end

local text64 = string.rep("marshal: P/Invoke for any host. ", 2)
local text16 = "héllo wörld, ∑ UTF-16 text here"
local data = ffi.new("double[1000]")
for i = 0, 999 do data[i] = i end
local out = ffi.new("int32_t[256]")
local pts = ffi.new("Point[100]")
for i = 0, 99 do pts[i].x = i; pts[i].y = -i end
local p = ffi.new("Point[1]")
local buf = ffi.new("char[64]")
local plus_one = ffi.cast("int32_t (*)(int32_t)", function(v) return v + 1 end)
local obj = lib.counter_create(0)
local vtbl = ffi.cast("void ***", obj)[0]
local method = ffi.cast("add_fn", vtbl[3])
local release = ffi.cast("release_fn", vtbl[2])
-- UTF-16 from the host's UTF-8 string, per call (as the other peers do)
local function utf16(s)
  local units, n = ffi.new("uint16_t[?]", #s + 1), 0
  local i = 1
  while i <= #s do
    local c = s:byte(i)
    local cp, len
    if c < 0x80 then cp, len = c, 1
    elseif c < 0xE0 then cp, len = bit.band(c, 0x1F), 2
    elseif c < 0xF0 then cp, len = bit.band(c, 0x0F), 3
    else cp, len = bit.band(c, 0x07), 4 end
    for k = 1, len - 1 do cp = bit.bor(bit.lshift(cp, 6), bit.band(s:byte(i + k), 0x3F)) end
    i = i + len
    if cp >= 0x10000 then
      cp = cp - 0x10000
      units[n] = 0xD800 + bit.rshift(cp, 10); units[n + 1] = 0xDC00 + bit.band(cp, 0x3FF); n = n + 2
    else
      units[n] = cp; n = n + 1
    end
  end
  units[n] = 0
  return units, n
end

expect(lib.add_i32(1, 2) == 3, "add_i32")
expect(lib.sum_in_f64_array(data, 1000) == 499500, "sum_f64")
expect(tonumber(lib.len_in_utf8(text64)) == 64, "utf8_len")
local r = lib.add_vec2(ffi.new("Vec2", 1, 2), ffi.new("Vec2", 3, 4))
expect(r.x == 4 and r.y == 6, "vec2_add")
lib.fill_out_i32_array(out, 256)
expect(out[255] == 255 * 255 - 3, "fill_i32")
expect(lib.apply_i32(plus_one, 41) == 42, "call_cb")
local u, un = utf16(text16)
expect(tonumber(lib.len_in_utf16(u)) == un, "utf16_len")
lib.get_out_point(p, 3, 4)
expect(p[0].x == 3 and p[0].y == 4, "out_struct")
expect(tonumber(lib.reverse_out_utf8("marshal", buf, 64)) == 7 and ffi.string(buf) == "lahsram", "out_string")
local want = 0
for i = 0, 99 do want = want + i * 10 - i end
expect(tonumber(lib.sum_in_point_array(pts, 100)) == want, "struct_array")
expect(method(obj, 1) == 1, "vtable_method")

local s = {}
s.add_i32 = function(n) local t = 0 for i = 1, n do t = t + lib.add_i32(i % 65536, 3) end sink = sink + t end
s.sum_f64 = function(n) local t = 0 for i = 1, n do t = t + lib.sum_in_f64_array(data, 1000) end sink = sink + t end
s.utf8_len = function(n) local t = 0 for i = 1, n do t = t + tonumber(lib.len_in_utf8(text64)) end sink = sink + t end
s.vec2_add = function(n)
  local t = 0
  for i = 1, n do t = t + lib.add_vec2(ffi.new("Vec2", i, 1), ffi.new("Vec2", 2, 3)).x end
  sink = sink + t
end
s.fill_i32 = function(n) local t = 0 for i = 1, n do lib.fill_out_i32_array(out, 256) t = t + out[5] end sink = sink + t end
s.call_cb = function(n) local t = 0 for i = 1, n do t = t + lib.apply_i32(plus_one, i % 65536) end sink = sink + t end
s.utf16_len = function(n) local t = 0 for i = 1, n do t = t + tonumber(lib.len_in_utf16((utf16(text16)))) end sink = sink + t end
s.out_struct = function(n) local t = 0 for i = 1, n do lib.get_out_point(p, i % 65536, 1) t = t + p[0].x end sink = sink + t end
s.out_string = function(n)
  local t = 0
  for i = 1, n do lib.reverse_out_utf8("marshal", buf, 64) t = t + #ffi.string(buf) end
  sink = sink + t
end
s.struct_array = function(n) local t = 0 for i = 1, n do t = t + tonumber(lib.sum_in_point_array(pts, 100)) end sink = sink + t end
s.vtable_method = function(n) local t = 0 for i = 1, n do t = t + method(obj, 1) end sink = sink + t end

local heavy = { sum_f64 = 100, struct_array = 10, fill_i32 = 10, utf16_len = 10 }
local parts = {}
local names = { "add_i32", "sum_f64", "utf8_len", "vec2_add", "fill_i32", "call_cb", "utf16_len", "out_struct",
                "out_string", "struct_array", "vtable_method" }
for _, name in ipairs(names) do
  local m = measure(s[name], math.max(1, math.floor(iterations / (heavy[name] or 1))))
  parts[#parts + 1] = string.format('"%s": {"median": %.3f, "min": %.3f, "max": %.3f}', name, m.median, m.min, m.max)
end
release(obj)
io.write(string.format('{"implementation": "%s", "scenarios": {%s}}\n', label, table.concat(parts, ", ")))
