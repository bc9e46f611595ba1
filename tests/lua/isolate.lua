-- marshal Lua host: libraries in a surrogate process (marshal.load(path,
-- {isolate = "process"})): the same results as in-process, a native crash
-- as a Lua error naming the function and the signal, the next call working,
-- deadlines, Lua functions called back from the surrogate, and what cannot
-- cross the boundary refused with a message.
-- Run by marshal-lua with MARSHAL_SURROGATE set (tests/meson.build).
local marshal = require("marshal")

-- zlib through the surrogate equals zlib in-process.
local here = marshal.load("typemaps/zlib.json")
local there = marshal.load("typemaps/zlib.json", {isolate = "process"})
assert(there.crc32(0, "hello") == here.crc32(0, "hello"))
assert(there.crc32(0, "hello") == 907060870)
assert(there.crc32(0, "hello", 5) == 907060870)  -- the computed len given, and checked
local ok, err = pcall(there.crc32, 0, "hello", 6)
assert(not ok and err.parameter == "len", tostring(err))
assert(tostring(err):find("is computed by the engine %(count_of 'buf' = 5%); got 6"), tostring(err))
local ok2, err2 = pcall(here.crc32, 0, "hello", 6)  -- the same rule in-process
assert(not ok2 and tostring(err2) == tostring(err), tostring(err2))
local text = string.rep("through the surrogate. ", 50)
local rc, packed, packed_len = there.compress2(there.compressBound(#text), text, 9)
local rc_here, packed_here, len_here = here.compress2(here.compressBound(#text), text, 9)
assert(rc == 0 and rc_here == 0 and packed == packed_here and packed_len == len_here)
local rc2, back = there.uncompress(#text, packed)
assert(rc2 == 0 and back == text)
assert(there.zlibVersion() == here.zlibVersion())
assert(there.Z_OK == 0)  -- constants of the typemap
local named = there:call_named("crc32", 0, "hello")
assert(named["return"] == 907060870)

-- A crash in the surrogate: a Lua error naming the function and the signal.
local libc = marshal.load("typemaps/libc.json", {isolate = "process"})
local q = libc.div(17, 5)
assert(q.quot == 3 and q.rem == 2)
ok, err = pcall(libc.div, 1, 0)
assert(not ok)
assert(tostring(err):find("^function div crashed in the surrogate %(pid %d+%) with SIGFPE %(integer divide by zero at 0x%x+%)$"), tostring(err))
assert(err["function"] == "div")
assert(err.id == "native_crash", tostring(err.id))
-- this process is alive and the next call starts a new surrogate
q = libc.div(-7, 2)
assert(q.quot == -3 and q.rem == -1)

-- Lua functions as callbacks of scope "call" cross the boundary: native code
-- in the surrogate calls them back, on this thread, nested calls included.
local items = {}
for i = 1, 200 do items[i] = { key = (i * 7919) % 101, value = i } end
local sorted = libc.qsort(items, function(a, b)
  if a.key ~= b.key then return a.key < b.key and -1 or 1 end
  return a.value < b.value and -1 or (a.value > b.value and 1 or 0)
end)
assert(#sorted == 200)
for i = 2, #sorted do
  local a, b = sorted[i - 1], sorted[i]
  assert(a.key < b.key or (a.key == b.key and a.value < b.value), "sorted through the surrogate")
end
local cb = marshal.load("tests/fixtures/callbacks.json", {isolate = "process"})
assert(cb.apply_i32(function(v) return v * 2 end, 21) == 42)
assert(cb.apply_i32(function(v) return cb.apply_i32(function(w) return w + 1 end, v) * 10 end, 4) == 50, "nested")
assert(cb.apply_out(function(v) return { ["return"] = v, result = v + 1 } end, 3) == 3004)
ok, err = pcall(cb.apply_i32, function() error("no from Lua") end, 1)
assert(not ok and tostring(err):find("no from Lua"), tostring(err))
assert(cb.apply_i32(function(v) return v + 1 end, 1) == 2)  -- and the library still works
-- Called from the surrogate library's own threads: as in-process, the Lua
-- thread must pump (marshal.load's `pump`), else a clear error, never a hang.
ok, err = pcall(cb.call_from_threads, function(v) return v end, 1, 1)
assert(not ok and tostring(err):find("list that function in marshal.load's `pump` option"), tostring(err))
local pumped = marshal.load("tests/fixtures/callbacks.json", {isolate = "process", pump = {"call_from_threads"}})
assert(pumped.call_from_threads(function(v) return v * 2 end, 2, 10) == 2 * 2 * 45)

-- Registered callbacks: made in the surrogate, kept there by native code,
-- called back during later calls; released from here, a late call reaches
-- the trap there and the call reports it.
local fired = 0
local keep = cb:callback("IntFn", function(v) fired = fired + 1; return v + 10 end)
assert(marshal.type(keep) == "callback")
cb.register_i32(keep)
assert(cb.fire_registered(5) == 15 and cb.fire_registered(6) == 16 and fired == 2)
assert(cb.apply_i32(keep, 1) == 11)
local in_process = marshal.load("tests/fixtures/callbacks.json")
ok, err = pcall(in_process.apply_i32, keep, 1)
assert(not ok and tostring(err):find("made by a library in another process"), tostring(err))
keep:release()
ok, err = pcall(cb.fire_registered, 7)
assert(not ok and tostring(err):find("callback 'IntFn' was called after it was released"), tostring(err))
ok, err = pcall(cb.register_i32, keep)
assert(not ok, "a released callback is refused")
cb.register_i32(nil)
assert(cb.fire_registered(1) == -999)
ok, err = pcall(function() return cb:callback("nope", function() end) end)
assert(not ok and tostring(err):find("no callback signature 'nope'"), tostring(err))

-- A hung call past its deadline: an error, the surrogate killed, the next call works.
local path = os.tmpname()
local f = assert(io.open(path, "w"))
f:write([[{"typemap": 1, "library": {"name": "c", "load": {"linux": ["libc.so.6"]}},
  "functions": {"pause": {"returns": "int", "params": []}, "getpid": {"returns": "int", "params": []}}}]])
f:close()
local hang = marshal.load(path, {isolate = "process", deadline = 200})
ok, err = pcall(hang.pause)
assert(not ok and tostring(err):find("function pause timed out after 200 ms in the surrogate"), tostring(err))
assert(hang.getpid() > 0)
-- a deadline needs isolation
ok, err = pcall(marshal.load, path, {deadline = 200})
assert(not ok and tostring(err):find("needs isolate"), tostring(err))
os.remove(path)

-- What cannot cross the boundary yet is refused with a message, never a crash.
ok, err = pcall(function() return there:new("uint8", 16) end)
assert(not ok and tostring(err):find("cannot cross the process boundary yet"), tostring(err))
ok, err = pcall(function() return there:stats() end)
assert(not ok and tostring(err):find("is isolated"), tostring(err))
ok, err = pcall(marshal.load, "typemaps/zlib.json", {isolate = "thread"})
assert(not ok and tostring(err):find('expected "process"'), tostring(err))
-- a typemap saying "isolate": "process" is isolated without the option
local iso_path = os.tmpname()
local src = assert(io.open("typemaps/libc.json")):read("a")
local at = src:find('"load"', 1, true)
f = assert(io.open(iso_path, "w"))
f:write(src:sub(1, at - 1) .. '"isolate": "process", ' .. src:sub(at))
f:close()
local by_typemap = marshal.load(iso_path)
ok, err = pcall(by_typemap.div, 1, 0)
assert(not ok and tostring(err):find("with SIGFPE"), tostring(err))
assert(by_typemap.div(9, 2).quot == 4)
os.remove(iso_path)

-- COM-style objects from the surrogate: proxies with the in-process behaviour.
local objs = marshal.load("tests/fixtures/objects.json", {isolate = "process"})
collectgarbage(); collectgarbage()
local live0 = objs.objects_live()
do
  local c = objs:create("Counter", 5)
  assert(marshal.type(c) == "object" and c.interface == "ICounter", tostring(c))
  assert(c:Add(3) == 8 and c:Get() == 8)
  assert(objs.counter_get(c) == 8)  -- passed back: the original object there
  local w = c:as("IWidget")
  assert(w.interface == "IWidget" and w == c, "== across interfaces")
  assert(rawequal(w:Self(), c), "the same object and interface: the same userdata")
  local f = objs.counter_create(1)
  assert(f ~= c and f:Add(1) == 2)
  assert(objs.objects_live() == live0 + 2, objs.objects_live() - live0)
  ok, err = pcall(objs.create, objs, "NoSuchClass")
  assert(not ok and tostring(err):find("no class 'NoSuchClass'"), tostring(err))
  local here_objs = marshal.load("tests/fixtures/objects.json")
  ok, err = pcall(here_objs.counter_get, c)  -- a proxy is not an object of this process
  assert(not ok, "a surrogate's object passed to an in-process library")
  -- A Lua table as a host object: the surrogate keeps a native object for it,
  -- calls its methods back here, and hands back the table itself.
  local s = objs:create("Store")
  local mine = { n = 0 }
  function mine:Add(by) self.n = self.n + by; return self.n end
  function mine:Get() return self.n end
  assert(s:Put(c) == 0 and s:Put(mine) == 0 and s:Put(mine) == 0 and s:Count() == 3)
  s:AddAll(4)
  assert(mine.n == 8, "native code called the Lua table's method (twice: put twice)")
  assert(c:Get() == 12, "and the surrogate's counter's")
  local _, back = s:Get(0)
  assert(rawequal(back, c), "the surrogate's object comes back as its userdata")
  local _, mine_back = s:Get(1)
  assert(rawequal(mine_back, mine), "the Lua table comes back as itself")
  s:Clear()
end
collectgarbage(); collectgarbage()
local released = false
for _ = 1, 200 do  -- the surrogate releases them shortly after the proxies go
  if objs.objects_live() == live0 then released = true break end
  os.execute("sleep 0.01")
end
assert(released, "the surrogate's references released: " .. (objs.objects_live() - live0) .. " left")
assert(objs.objects_faults() == 0)

-- A library served by `marshal serve` (option connect), and the ids of the
-- ways a connection fails.
local exe = assert(os.getenv("MARSHAL_EXE"), "MARSHAL_EXE: the marshal program (tests/meson.build sets it)")
local server = assert(io.popen("sh -c 'echo $$; exec " .. exe .. " serve typemaps/zlib.json --listen 127.0.0.1:0'"))
local server_pid = assert(tonumber(server:read("l")))
local listening = server:read("l") or ""
local port = assert(listening:match("^listening on 127%.0%.0%.1:(%d+)$"), listening)
local served = marshal.load("typemaps/zlib.json", {connect = "127.0.0.1:" .. port})
assert(served.crc32(0, "hello") == 907060870)
assert(served.crc32(0, "hello") == here.crc32(0, "hello"))
ok, err = pcall(marshal.load, "typemaps/libc.json", {connect = "127.0.0.1:" .. port})
assert(not ok and tostring(err):find("is not served here"), tostring(err))
assert(err.id == "refused", tostring(err.id))
ok, err = pcall(marshal.load, "typemaps/zlib.json", {connect = "127.0.0.1:1"})
assert(not ok and tostring(err):find("cannot connect to marshal serve at 127.0.0.1:1"), tostring(err))
assert(err.id == "disconnected", tostring(err.id))
ok, err = pcall(marshal.load, "typemaps/zlib.json", {connect = "192.0.2.1:80"})
assert(not ok and tostring(err):find("refusing to connect to 192.0.2.1:80"), tostring(err))
assert(err.id == "refused", tostring(err.id))
ok, err = pcall(marshal.load, "typemaps/zlib.json", {tls = {cert = "c.pem", key = "k.pem", ca = "ca.pem"}})
assert(not ok and tostring(err):find("option 'tls' is for a connection to marshal serve"), tostring(err))
ok, err = pcall(marshal.load, "typemaps/zlib.json", {connect = "127.0.0.1:" .. port, tls = {cert = "c.pem"}})
assert(not ok and tostring(err):find("missing"), tostring(err))
ok, err = pcall(marshal.load, "typemaps/zlib.json", {connect = "127.0.0.1:" .. port, tls = {cert = 3}})
assert(not ok and tostring(err):find("option tls.cert is a file name"), tostring(err))
ok, err = pcall(marshal.load, "typemaps/zlib.json", {connect = "127.0.0.1:" .. port, tls = {certificate = "c.pem"}})
assert(not ok and tostring(err):find("unknown key 'certificate' in option 'tls'"), tostring(err))
ok, err = pcall(marshal.load, "typemaps/zlib.json", {connect = 80})
assert(not ok and tostring(err):find("option 'connect' is a string"), tostring(err))
served = nil
collectgarbage()
os.execute("kill " .. server_pid)
server:close()
print("isolate.lua: ok")
