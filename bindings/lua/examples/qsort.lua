-- marshal Lua example: libc's qsort and bsearch over an array of structs with
-- a Lua comparator (typemaps/libc.json: nmemb and size are computed).
local marshal = require("marshal")
local dir = arg and arg[1] or "typemaps"
local libc = marshal.load(dir .. "/libc.json")

local items = {}
for i, k in ipairs({ 42, 7, 19, 3, 88, 23, 7, 61 }) do items[i] = { key = k, value = i } end
local compared = 0
local function by_key(a, b)
  compared = compared + 1
  return a.key < b.key and -1 or a.key > b.key and 1 or 0
end
local sorted = libc.qsort(items, by_key)  -- base is inout: the sorted array comes back
local keys = {}
for i, it in ipairs(sorted) do keys[i] = it.key end
print("sorted: " .. table.concat(keys, " ") .. " (" .. compared .. " comparisons)")
assert(table.concat(keys, " ") == "3 7 7 19 23 42 61 88")

local found = libc.bsearch({ key = 23, value = 0 }, sorted, by_key)
print("bsearch 23: value " .. found.value)
assert(found.key == 23 and found.value == 6)
assert(libc.bsearch({ key = 5, value = 0 }, sorted, by_key) == nil)
print("bsearch 5: not found")
