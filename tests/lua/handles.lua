-- marshal Lua host: handles (one userdata per identity, __gc releases exactly
-- once, <close>, :release()), native memory boxes with field access (a zlib
-- stream in host-owned memory).
local check = dofile("tests/lua/check.lua")
local marshal = require("marshal")
local fx = marshal.load("tests/fixtures/pinvoke.json")

collectgarbage()
local base = fx.res_live()

-- a handle per native value; released by the collector exactly once
local a, b, c = fx.res_open(1), fx.res_open(2), fx.res_open(3)
check.eq(marshal.type(a), "handle", "marshal.type")
check.eq(fx.res_live(), base + 3, "three open")
check.eq(fx.res_value(b), 2, "a handle passed back")
a = nil
collectgarbage(); collectgarbage()
check.eq(fx.res_live(), base + 2, "__gc released one")
-- explicit release, once
b:release()
check.eq(fx.res_live(), base + 1, ":release()")
check.ok(b.released, "b.released")
b:release()
check.eq(fx.res_live(), base + 1, "a second :release() does nothing")
check.err(function() return fx.res_value(b) end, "released", { parameter = "r" })
-- released by the typemap's own release function (res_close): never again by __gc
check.eq(fx.res_close(c), 0, "res_close")
check.eq(fx.res_live(), base, "closed through the function")
c = nil
collectgarbage(); collectgarbage()
check.eq(fx.res_live(), base, "__gc after res_close releases nothing more")
-- <close>
do
  local h <close> = fx.res_open(9)
  check.eq(fx.res_live(), base + 1, "open in the block")
end
check.eq(fx.res_live(), base, "<close> released it")
-- identity after an explicit release: the released userdata never stands for a
-- new handle (its box may reuse the address), and the new resource stays open
for i = 1, 20 do
  local r1 = fx.res_open(100 + i)
  if i % 2 == 0 then r1:release() else getmetatable(r1).__close(r1) end
  check.eq(fx.res_live(), base, "released (" .. i .. ")")
  local r2 = fx.res_open(200 + i)
  check.ok(not rawequal(r1, r2), "a new handle is a new userdata (" .. i .. ")")
  check.ok(r1.released and not r2.released, "the old one released, the new one open (" .. i .. ")")
  check.eq(fx.res_live(), base + 1, "the new native resource stays open (" .. i .. ")")
  check.eq(fx.res_value(r2), 200 + i, "the new handle's value (" .. i .. ")")
  r2:release()
  check.eq(fx.res_live(), base, "then released (" .. i .. ")")
end
-- many handles, dropped: every one released exactly once
for i = 1, 200 do fx.res_open(i) end
collectgarbage(); collectgarbage()
check.eq(fx.res_live(), base, "200 dropped handles released")
b = nil
collectgarbage(); collectgarbage()
check.eq(fx.res_live(), base, "nothing released twice")
-- invalid values are refused on the way in
check.err(function() return fx.res_value(42) end, nil, { parameter = "r" })

-- native memory: a z_stream in host-owned memory, fields by name
local z = marshal.load("typemaps/zlib.json")
local text = string.rep("a streamed line of text, compressed by zlib\n", 50)
local input = z:new("uint8", #text, text)
local output = z:new("uint8", 8192)
local strm = z:new("z_stream")
check.eq(marshal.type(strm), "native", "a native box")
check.eq(strm.avail_in, 0, "zeroed")
check.err(function() return strm.no_such_field end, "no_such_field")
check.err(function() strm.avail_in = -1 end, "avail_in")
check.eq(z.deflateInit_(strm, 6, z.zlibVersion()), z.Z_OK, "deflateInit_")
strm.next_in = input
strm.avail_in = #text
strm.next_out = output
strm.avail_out = 8192
check.eq(z.deflate(strm, z.Z_FINISH), z.Z_STREAM_END, "deflate")
local packed_len = strm.total_out
check.ok(packed_len > 0 and packed_len < #text, "compressed")
check.eq(z.deflateEnd(strm), z.Z_OK, "deflateEnd")
local packed = output:get():sub(1, packed_len)
-- the one-shot API agrees
local rc, back = z.uncompress(#text, packed)
check.eq(rc, z.Z_OK, "uncompress")
check.eq(back, text, "round trip through the stream")
local rec = strm:get()
check.eq(rec.total_out, packed_len, "the whole record")
check.eq(strm:size(), rec and strm:size(), "size")
check.eq(type(strm:address()), "userdata", "address")
check.err(function() z:new("no_such_type") end, "no_such_type")
check.err(function() z:new("uint8", math.maxinteger) end, nil)

check.done("lua-handles")
