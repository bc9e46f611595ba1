-- marshal Lua host: COM-style objects. Methods as obj:Method(...), identity
-- (one userdata per object and interface, == across interfaces), obj:as(),
-- host objects from Lua tables, exact reference counting checked with the
-- fixture's live counters after collectgarbage(), tokens.
local check = dofile("tests/lua/check.lua")
local marshal = require("marshal")
local o = marshal.load("tests/fixtures/objects.json")

collectgarbage(); collectgarbage()
local base, faults = o.objects_live(), o.objects_faults()

do
  local c = o:create("Counter", 5)
  check.eq(marshal.type(c), "object", "marshal.type")
  check.eq(c.interface, "ICounter", "its interface")
  check.eq(c:Add(3), 8, "a method")
  check.eq(c:Get(), 8, "another")
  check.eq(o.counter_get(c), 8, "passed to a function")
  check.eq(o.objects_live(), base + 1, "one live")

  -- identity
  local w = c:as("IWidget")
  check.eq(w.interface, "IWidget", "as")
  check.ok(w == c, "== across interfaces (COM identity)")
  check.ok(not rawequal(w, c), "a userdata per interface")
  local again = w:Self()
  check.ok(rawequal(again, c), "the same object and interface: the same userdata")
  local _, twin = w:Twin()
  check.ok(twin ~= c and twin:Get() == c:Get(), "an out object: a new counter (Twin)")
  check.eq(o.as_shape(c), nil, "QueryInterface refused: nil (nullable)")
  check.err(function() return c:as("IShape") end, "IShape")

  -- every parameter form through methods
  local hr, scaled = w:Scale({ x = 1, y = 2 }, 2.5)
  check.eq(hr, 0, "S_OK")
  check.deq(scaled, { x = 2.5, y = 5.0 }, "out struct")
  check.eq(w:Sum({ 1, 2, 3 }, 3), 14, "array (plus the value 8)")
  w:SetName("lua")
  local _, name = w:GetName(16)
  check.eq(name, "lua", "out string")
  check.ok(type(w:Describe()) == "string", "returned string")
  check.eq(w:Apply(function(v) return v * 3 end, 2), 14, "a Lua callback through a method")
  check.err(function() return w:Fail(-2147467259) end, "HRESULT")
  check.err(function() return c:NoSuchMethod() end, "NoSuchMethod")
  check.err(function() return c:Add("x") end, "'by'", { parameter = "by", position = 1 })
  check.err(function() return c:Add() end, "expects 1 argument")
  check.err(function() return w:Nothing() end, "Nothing")
  check.eq(w:NothingOrNull(), nil, "a nullable null object")
  -- methods of a native object take the host adapters (LuaArgs, LuaResults):
  -- the same checks and the same errors as the Value path
  local before = c:Get()
  check.err(function() return c:Add(2 ^ 31) end, "out of range", { ["function"] = "ICounter.Add", parameter = "by", position = 1 })
  check.err(function() return c:Add(1.5) end, "1.5", { parameter = "by", position = 1 })
  check.err(function() return c:Add(1, 2) end, "expects 1 argument (by), got 2")
  check.err(function() return c:Add(nil) end, nil, { parameter = "by", position = 1 })
  check.eq(c:Get(), before, "no failed call reached the object")
  check.eq(c:Add(2.0), before + 2, "an integral float")
  check.eq(math.type(c:Add(0)), "integer", "an integer result")
  check.eq(c["ICounter.Add"](c, 1), before + 3, "a method by its qualified name")
  check.eq(c:Add(-3), before, "back to where it was")
  check.err(function() return w:Sum({ 1, "x" }, 2) end, nil, { parameter = "xs", position = 1 })
  local hr2, s2 = w:Scale({ x = -1, y = 0.5 }, -2)
  check.eq(hr2, 0, "S_OK again")
  check.deq(s2, { x = 2.0, y = -1.0 }, "out struct again")
  check.err(function() return w:Scale({ x = 1 }, 2) end, "'y'", { parameter = "v", position = 1 })

  -- two interfaces, one identity
  local sq = o:create("Square", 2.0)
  local sh = sq:as("IShape")
  check.eq(sh:Area(), 4.0, "IShape.Area")
  check.ok(sh == sq, "Square as ICounter and IShape: one identity")
  check.ok(sh ~= c, "different objects differ")

  -- host objects from Lua tables
  local s = o:create("Store")
  local mine = { n = 0 }
  function mine:Add(by) self.n = self.n + by; return self.n end
  function mine:Get() return self.n end
  check.eq(s:Put(c), 0, "Put a native counter")
  check.eq(s:Put(mine), 0, "Put a Lua table as ICounter")
  check.eq(s:Count(), 2, "two items")
  s:AddAll(4)
  check.eq(mine.n, 4, "native code called the Lua table's method")
  check.eq(c:Get(), 12, "and the native counter's")
  local _, back = s:Get(0)
  check.ok(rawequal(back, c), "a native object comes back as its userdata")
  local _, mine_back = s:Get(1)
  check.ok(rawequal(mine_back, mine), "a Lua table comes back as itself")
  s:Clear()

  -- a class-style Lua object: methods through its metatable
  local Counter = {}
  Counter.__index = Counter
  function Counter:Add(by) self.n = self.n + by; return self.n end
  function Counter:Get() return self.n end
  local obj = setmetatable({ n = 10 }, Counter)
  s:Put(obj)
  s:AddAll(5)
  check.eq(obj.n, 15, "methods inherited through a metatable")
  check.eq(o.counter_get(obj), 15, "the same table passed as ICounter again")
  -- a method the table lacks: an error in Lua, never a crash
  local partial = { Add = function(self, by) return by end }
  check.err(function() return o.counter_get(partial) end, "counter_get")
  s:Clear()
end
collectgarbage(); collectgarbage()
check.eq(o.objects_live(), base, "every object released after collectgarbage()")

-- a Lua table passed as an object: kept while native code holds it, collected after
do
  local seen = setmetatable({}, { __mode = "k" })
  local s = o:create("Store")
  do
    local t = { n = 0 }
    function t:Add(by) self.n = self.n + by; return self.n end
    function t:Get() return self.n end
    seen[t] = true
    s:Put(t)
  end
  collectgarbage(); collectgarbage()
  check.ok(next(seen) ~= nil, "held by native code: not collected")
  check.eq(s:AddAll(2), 2, "still callable")
  s:Clear()
  o.objects_live()  -- any call: the binding notices native code let go
  collectgarbage(); collectgarbage()
  check.ok(next(seen) == nil, "let go by native code and Lua: collected")
  local t2 = { Add = function(self, by) return by end, Get = function() return 0 end }
  check.eq(o.counter_get(t2), 0, "a table native code never kept")
  seen[t2] = true
  t2 = nil
  o.objects_live()
  collectgarbage(); collectgarbage()
  check.ok(next(seen) == nil, "collected too")
  s:release()
end
check.eq(o.objects_faults(), faults, "none released twice")

-- <close> and :release()
do
  local x <close> = o:create("Counter", 1)
  check.eq(o.objects_live(), base + 1, "alive in the block")
end
check.eq(o.objects_live(), base, "<close> released it")
local y = o:create("Counter", 1)
y:release()
check.eq(o.objects_live(), base, ":release()")
check.err(function() return y:Add(1) end, "released")
y:release()
-- identity after :release(): the released userdata never comes back for a live object
do
  local c = o:create("Counter", 4)
  local w = c:as("IWidget")
  c:release()
  check.eq(o.objects_live(), base + 1, "alive through w")
  local back = w:Self()
  check.ok(not rawequal(back, c), "a new userdata, not the released one")
  check.eq(tostring(back):find("released", 1, true), nil, "not a released object: " .. tostring(back))
  check.eq(back:Get(), 4, "usable")
  check.ok(rawequal(w:Self(), back), "then the same userdata again")
  w:release(); back:release()
  check.eq(o.objects_live(), base, "released both")
  -- and a new object in place of a released one (its address may be reused)
  for i = 1, 20 do
    local a = o:create("Counter", i)
    a:release()
    local b = o:create("Counter", 100 + i)
    check.ok(not rawequal(a, b), "a new object is a new userdata (" .. i .. ")")
    check.eq(b:Get(), 100 + i, "usable (" .. i .. ")")
    check.eq(o.objects_live(), base + 1, "alive (" .. i .. ")")
    b:release()
  end
  check.eq(o.objects_live(), base, "all released")
end
y = nil
collectgarbage(); collectgarbage()
check.eq(o.objects_faults(), faults, "still no fault")

-- many objects dropped
for i = 1, 300 do o:create("Counter", i):Add(1) end
collectgarbage(); collectgarbage()
check.eq(o.objects_live(), base, "300 dropped objects released")

-- tokens (cross-apartment marshaling; here unmarshaled in the same thread)
check.ok(marshal.apartment("sta"):find("STA", 1, true), "this thread: an STA")
local c = o:create("Counter", 7)
local ok, token = pcall(function() return c:token() end)
if ok then
  local c2 = marshal.unmarshal(token)
  check.ok(c2 == c, "unmarshaled: the same object")
  check.eq(c2:Get(), 7, "usable")
  check.err(function() return marshal.unmarshal(token) end, nil)  -- a token is used once
else
  print("tokens: " .. tostring(token))
end
c = nil
collectgarbage(); collectgarbage()
check.eq(o.objects_live(), base, "released")

check.done("lua-objects")
