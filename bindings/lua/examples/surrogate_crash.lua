-- marshal Lua example: a library in a surrogate process. A native crash
-- (here div(1, 0), SIGFPE) is a Lua error naming the function and the
-- signal; this process keeps running and the next call starts a new surrogate.
-- Run: marshal-lua bindings/lua/examples/surrogate_crash.lua [TYPEMAPS_DIR]
-- (marshal-surrogate is found through $MARSHAL_SURROGATE, next to the
-- program, or where it is installed.)
local marshal = require("marshal")
local dir = arg and arg[1] or "typemaps"
local libc = marshal.load(dir .. "/libc.json", {isolate = "process"})

print("div(17, 5) = " .. libc.div(17, 5).quot)
local ok, err = pcall(libc.div, 1, 0)  -- would kill this process in-process
assert(not ok and tostring(err):find("SIGFPE"), tostring(err))
print("caught: " .. tostring(err))
assert(libc.div(17, 5).rem == 2)
print("div(17, 5) again = " .. libc.div(17, 5).quot .. " (a new surrogate)")
