-- marshal Lua host: callbacks. Lua functions where scope "call" is declared
-- (closures reused: no growth), registered callbacks with explicit release and
-- the trap after it, errors from Lua callbacks re-raised with the original
-- error as `cause`, and calls from 8 native threads delivered to the Lua thread.
local check = dofile("tests/lua/check.lua")
local marshal = require("marshal")
local cb = marshal.load("tests/fixtures/callbacks.json", { pump = { "call_from_threads" } })
local obj = marshal.load("tests/fixtures/objects.json")  -- current_thread()

check.eq(cb.apply_i32(function(v) return v * 2 end, 21), 42, "a Lua function as a callback")
check.eq(cb.apply_point(function(p) return p.x * 10 + p.y end, 3, 4), 34, "a record argument")
check.eq(cb.apply_text(function(s) return #s end, "hello"), 5, "a string argument")
check.eq(cb.fold_f64(function(acc, x) return acc + x end, { 1, 2, 3.5 }, 3), 6.5, "called many times")
check.deq(cb.apply_vec(function(v, k) return { x = v.x * k, y = v.y * k } end, { x = 1, y = 2 }), { x = 3.0, y = 6.5 },
  "a record result")
check.eq(cb.apply_out(function(v) return { ["return"] = v, result = v + 1 } end, 3), 3004, "out parameters as a table")

-- nested: a callback that calls native code that calls back
check.eq(cb.apply_i32(function(v) return cb.apply_i32(function(w) return w + 1 end, v) * 10 end, 4), 50, "nested")

-- no growth: a new closure per call reuses the same native closures
local before = cb:stats().callbacks_created
for i = 1, 5000 do
  local k = i
  assert(cb.apply_i32(function(v) return v + k end, 1) == 1 + k)
end
check.ok(cb:stats().callbacks_created - before <= 2, "5000 closures, at most 2 new native closures")
check.eq(cb:stats().callbacks_live, 0, "none active after the calls")

-- an error in the callback: the native code gets on_error, the call raises
-- with the callback's own error as cause
local e = check.err(function() return cb.apply_i32(function() error({ code = 7 }) end, 1) end, "apply_i32",
  { ["function"] = "apply_i32" })
check.eq(e and type(e.cause) == "table" and e.cause.code, 7, "the Lua error is the cause")
e = check.err(function() return cb.apply_i32(function() error("boom") end, 1) end, "boom")
check.ok(e and tostring(e.cause):find("boom", 1, true), "string cause")
check.err(function() return cb.apply_i32(function() return "not a number" end, 1) end, "apply_i32")
check.eq(cb.apply_i32(function(v) return v end, 5), 5, "fine again afterwards")

-- registered callbacks: explicit, released explicitly, the trap after release
check.err(function() cb.register_i32(function(v) return v end) end, "lib:callback", { parameter = "f" })
local seen = 0
local r = cb:callback("IntFn", function(v) seen = seen + 1; return v + 100 end)
check.eq(marshal.type(r), "callback", "marshal.type")
cb.register_i32(r)
check.eq(cb.fire_registered(1), 101, "fired")
check.eq(cb.fire_registered(2), 102, "fired again")
check.ok(r.active, "active")
r:release()
check.ok(not r.active, "released")
check.err(function() return cb.fire_registered(3) end, "released")
check.eq(seen, 2, "the Lua function did not run after release")
check.err(function() r:release() end, "already released")
check.err(function() cb.register_i32(r) end, "released", { parameter = "f" })
cb.register_i32(nil)
check.err(function() cb:callback("NoSuchSig", print) end, "NoSuchSig")

-- many registered callbacks at once: no small limit
local many = {}
for i = 1, 300 do many[i] = cb:callback("IntFn", function(v) return v + i end) end
cb.register_i32(many[300])
check.eq(cb.fire_registered(0), 300, "the 300th")
for i = 1, 300 do many[i]:release() end
cb.register_i32(nil)

-- callbacks from 8 native threads, delivered to the Lua thread (never run on
-- theirs): call_from_threads is listed in `pump`, so the Lua thread pumps
-- while the call runs
local lua_thread = obj.current_thread()
local calls, foreign = 0, 0
local total = cb.call_from_threads(function(i)
  calls = calls + 1
  if obj.current_thread() ~= lua_thread then foreign = foreign + 1 end
  return i
end, 8, 100)
check.eq(calls, 800, "800 callbacks ran")
check.eq(foreign, 0, "all of them on the Lua thread")
check.eq(total, 8 * (99 * 100 // 2), "their results reached the threads")

-- nested: a callback delivered by a pumping call makes another pumping call
local inner_total = 0
local t2 = cb.call_from_threads(function(i)
  if i == 0 then
    local r = cb.call_from_threads(function(j) return j end, 2, 3)  -- (may run the other thread's call nested)
    inner_total = inner_total + r
  end
  return 1
end, 2, 2)
check.eq(t2, 4, "outer results")
check.eq(inner_total, 12, "inner calls, each from 2 threads")

-- a result native code cannot take ('x' or nil for an int) from a callback
-- delivered from native threads: the call raises, as on the Lua thread (not
-- only on_error silently given to native code)
for _, case in ipairs({ { "x", "return value" }, { false, "return value" }, { coroutine.create(print), "its result" } }) do
  local bad, why = case[1], case[2]
  local e2 = check.err(function()
    return cb.call_from_threads(function(i) if bad then return bad end return nil end, 2, 3)
  end, why, { ["function"] = "call_from_threads" })
  check.ok(e2 and tostring(e2):find("another native thread", 1, true), "named as delivered: " .. tostring(e2))
end
check.eq(cb.call_from_threads(function(i) return i end, 2, 3), 6, "fine again afterwards")
check.eq(cb.apply_i32(function(v) return v end, 5), 5, "and no stale error for the next call")

-- the same function from a library without `pump`: an error, never a deadlock
local plain = marshal.load("tests/fixtures/callbacks.json")
check.err(function() return plain.call_from_threads(function(i) return i end, 2, 3) end, "pump",
  { ["function"] = "call_from_threads" })

-- delivery "owner": native threads queue, marshal.pump runs them here
local owner_calls = 0
local owner = cb:callback("OwnerFn", function(v)
  owner_calls = owner_calls + 1
  if obj.current_thread() ~= lua_thread then foreign = foreign + 1 end
  return v * 2
end)
cb.start_async(owner, 8, 25)
local deadline = os.time() + 60
while owner_calls < 200 and os.time() < deadline do marshal.pump(10) end
check.eq(owner_calls, 200, "200 owner-delivered calls pumped")
check.eq(cb.join_async(), 8 * 2 * (24 * 25 // 2), "their results")
check.eq(foreign, 0, "still on the Lua thread")
owner:release()
check.eq(marshal.pump(0), 0, "nothing left to pump")

-- a callback of another signature is refused before native code runs
local inline = cb:callback("IntFn", function(v) return v end)
check.err(function() cb.start_async(inline, 4, 10) end, "IntFn", { parameter = "f" })
inline:release()
-- no fixed small limit over the library's life: 200,000 registered callbacks
-- made and released one after another (a library holds at most 65,536
-- closures; released ones without handles are recycled once it holds that many)
do
  local wrong = 0
  for i = 1, 200000 do
    local r = cb:callback("IntFn", function(v) return v + i end)
    if i % 10000 == 0 then
      cb.register_i32(r)
      if cb.fire_registered(1) ~= 1 + i then wrong = wrong + 1 end
      cb.register_i32(nil)
    end
    r:release()
  end
  check.eq(wrong, 0, "each sampled callback ran its own function")
  local s = cb:stats()
  check.ok(s.callbacks_created <= 65536, "closures made: " .. s.callbacks_created)
  check.ok(s.callbacks_recycled >= 200000 - 65536, "closures recycled: " .. s.callbacks_recycled)
  check.eq(s.callbacks_live, 0, "none active")
  -- the trap after release still holds for the callback released last
  local last = cb:callback("IntFn", function(v) return v * 3 end)
  cb.register_i32(last)
  check.eq(cb.fire_registered(4), 12, "a recycled closure runs the new function")
  last:release()
  check.err(function() return cb.fire_registered(5) end, "released")
  check.err(function() cb.register_i32(last) end, "released", { parameter = "f" })
  cb.register_i32(nil)
  -- as many held at once as before
  local held = {}
  for i = 1, 1000 do held[i] = cb:callback("IntFn", function(v) return v - i end) end
  cb.register_i32(held[1000])
  check.eq(cb.fire_registered(0), -1000, "the 1000th of those held")
  cb.register_i32(nil)
  for i = 1, 1000 do held[i]:release() end
end
check.done("lua-callbacks")
