-- marshal Lua example: COM-style objects with identity (tests/fixtures/objects.json):
-- methods, QueryInterface with obj:as(), == by COM identity, and a Lua table
-- implementing an interface that native code calls.
local marshal = require("marshal")
local o = marshal.load("tests/fixtures/objects.json")

local counter = o:create("Counter", 5)
print("Add(3) -> " .. counter:Add(3))
local widget = counter:as("IWidget")
print("the same object as IWidget: " .. tostring(widget == counter))
assert(widget == counter and widget:Get() == 8)

local square = o:create("Square", 2.0):as("IShape")
print("Square area: " .. square:Area())

local mine = { n = 0 }
function mine:Add(by) self.n = self.n + by; return self.n end
function mine:Get() return self.n end
local store = o:create("Store")
store:Put(counter)
store:Put(mine)                 -- a Lua table as ICounter
store:AddAll(10)                -- native code calls both
print("after AddAll(10): counter " .. counter:Get() .. ", Lua table " .. mine.n)
assert(counter:Get() == 18 and mine.n == 10)
local _, back = store:Get(1)
assert(rawequal(back, mine))
print("native code handed the Lua table back as itself")
store:Clear()
