-- marshal Lua tests: a few assertions; every failure is printed with its line,
-- and done() exits 1 when any failed.
local M = { failures = 0, count = 0 }

local function where()
  local info = debug.getinfo(3, "Sl")
  return info.short_src .. ":" .. info.currentline
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

function M.eq(got, want, what)
  M.count = M.count + 1
  if got ~= want and not (got ~= got and want ~= want) then
    M.failures = M.failures + 1
    print(string.format("FAIL %s: %s: got %s, want %s", where(), what or "", show(got), show(want)))
  end
end

function M.ok(cond, what)
  M.count = M.count + 1
  if not cond then
    M.failures = M.failures + 1
    print(string.format("FAIL %s: %s", where(), what or "condition"))
  end
end

-- Deep comparison of tables (for records and sequences).
local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
M.same = same

local function dump(v)
  if type(v) ~= "table" then return show(v) end
  local parts = {}
  for k, x in pairs(v) do parts[#parts + 1] = tostring(k) .. "=" .. dump(x) end
  table.sort(parts)
  return "{" .. table.concat(parts, ", ") .. "}"
end
M.dump = dump

function M.deq(got, want, what)
  M.count = M.count + 1
  if not same(got, want) then
    M.failures = M.failures + 1
    print(string.format("FAIL %s: %s: got %s, want %s", where(), what or "", dump(got), dump(want)))
  end
end

-- fn must raise; the error's text must contain `text` (plain), and its
-- fields must equal `fields` (when given). Returns the error.
function M.err(fn, text, fields)
  M.count = M.count + 1
  local ok, e = pcall(fn)
  if ok then
    M.failures = M.failures + 1
    print(string.format("FAIL %s: expected an error containing %s", where(), show(text)))
    return nil
  end
  local s = tostring(e)
  if text and not s:find(text, 1, true) then
    M.failures = M.failures + 1
    print(string.format("FAIL %s: error %s does not contain %s", where(), show(s), show(text)))
  end
  for k, v in pairs(fields or {}) do
    local got = type(e) == "table" and e[k] or nil
    if got ~= v then
      M.failures = M.failures + 1
      print(string.format("FAIL %s: error field %s: got %s, want %s (error: %s)", where(), k, show(got), show(v), s))
    end
  end
  return e
end

function M.done(name)
  print(string.format("%s: %d checks, %d failed", name or arg and arg[0] or "lua test", M.count, M.failures))
  if M.failures > 0 then os.exit(1) end
end

return M
