-- marshal Lua host: apartments. The Lua thread as an STA; a `free` class
-- created there lives in the MTA and Lua gets a proxy; calls through it run on
-- an engine thread; a Lua table passed through the proxy is called back on the
-- Lua thread (the STA runs incoming calls while it waits).
local check = dofile("tests/lua/check.lua")
local marshal = require("marshal")
local o = marshal.load("tests/fixtures/objects.json")

check.ok(marshal.apartment("sta"):find("STA", 1, true), "the Lua thread is an STA")
check.err(function() marshal.apartment("mta") end, nil)  -- already in one
local here = o.current_thread()

local probe = o:create("ProbeFree")
check.ok(probe.is_proxy, "a free class from an STA: a proxy")
check.ok(probe:Thread() ~= here, "its calls run on another thread")
local local_probe = o:create("ProbeApartment")
check.ok(not local_probe.is_proxy, "an apartment class from an STA: direct")
check.eq(local_probe:Thread(), here, "and runs here")

local store = o:create("FreeStore")
check.ok(store.is_proxy, "FreeStore: a proxy")
local ran_on = {}
local mine = { n = 0 }
function mine:Add(by) self.n = self.n + by; ran_on[#ran_on + 1] = o.current_thread(); return self.n end
function mine:Get() return self.n end
check.eq(store:Put(mine), 0, "a Lua table through the proxy")
store:AddAll(5)
check.eq(mine.n, 5, "native code in the MTA called the Lua table")
check.eq(ran_on[1], here, "on the Lua thread")
local counter = o:create("Counter", 1)
store:Put(counter)
store:AddAll(1)
check.eq(counter:Get(), 2, "a native object passed through the proxy")
check.eq(mine.n, 6, "both items")
store:Clear()
store, probe, local_probe, counter = nil, nil, nil, nil
collectgarbage(); collectgarbage()
marshal.leave_apartment()
check.done("lua-apartments")
