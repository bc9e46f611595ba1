-- marshal Lua example: a zlib round trip through typemaps/zlib.json, no glue
-- code. Run: marshal-lua bindings/lua/examples/zlib_roundtrip.lua [TYPEMAPS_DIR]
local marshal = require("marshal")
local dir = arg and arg[1] or "typemaps"
local z = marshal.load(dir .. "/zlib.json")

print("zlib " .. z.zlibVersion())
print("crc32('hello') = " .. z.crc32(0, "hello"))           -- len is computed from the string
assert(z.crc32(0, "hello", 5) == 907060870)                    -- or given, and checked

local text = string.rep("marshal: P/Invoke for any host. ", 40)
-- compress2(dest OUT, destLen INOUT, source, sourceLen computed, level):
-- the capacity goes in, the results come back as ret, dest, destLen
local rc, packed, packed_len = z.compress2(z.compressBound(#text), text, 9)
assert(rc == z.Z_OK, "compress2 failed: " .. rc)
print(string.format("compress2: %d bytes -> %d bytes", #text, packed_len))
local rc2, back = z.uncompress(#text, packed)
assert(rc2 == z.Z_OK and back == text, "the round trip changed the text")
print("uncompress: the same " .. #back .. " bytes back")

-- a bad argument is a Lua error naming the function and the parameter
local ok, err = pcall(z.crc32, 0.5, "hello")
assert(not ok and err.parameter == "crc" and err["function"] == "crc32")
print("error: " .. tostring(err))
