-- marshal Lua tests: a small JSON reader and writer, written here so the
-- tests can read `marshal call` output and typemaps without marshal itself.
-- decode: objects are tables (J.keys[t] lists their keys in document order),
-- arrays are sequences (J.arrays[t] is true), null is J.null; integers are
-- exact 64-bit (a value above math.maxinteger wraps, as uint64 does in Lua).
local J = { null = setmetatable({}, { __tostring = function() return "json.null" end }) }
J.keys = setmetatable({}, { __mode = "k" })
J.arrays = setmetatable({}, { __mode = "k" })

local function fail(text, i, what) error(string.format("json: %s at byte %d of %q", what, i, text:sub(1, 200)), 0) end

local function skip(text, i)
  return text:find("[^ \t\r\n]", i) or #text + 1
end

local decode_value

local function decode_string(text, i)  -- text:sub(i, i) == '"'
  local out = {}
  i = i + 1
  while true do
    local c = text:sub(i, i)
    if c == "" then fail(text, i, "unterminated string") end
    if c == '"' then return table.concat(out), i + 1 end
    if c == "\\" then
      local e = text:sub(i + 1, i + 1)
      local simple = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
      if simple[e] then
        out[#out + 1] = simple[e]
        i = i + 2
      elseif e == "u" then
        local cp = tonumber(text:sub(i + 2, i + 5), 16) or fail(text, i, "bad \\u escape")
        i = i + 6
        if cp >= 0xD800 and cp <= 0xDBFF and text:sub(i, i + 1) == "\\u" then
          local lo = tonumber(text:sub(i + 2, i + 5), 16)
          if lo and lo >= 0xDC00 and lo <= 0xDFFF then
            cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
            i = i + 6
          end
        end
        out[#out + 1] = utf8.char(cp)
      else
        fail(text, i, "bad escape")
      end
    else
      local j = text:find('["\\]', i) or #text + 1
      out[#out + 1] = text:sub(i, j - 1)
      i = j
    end
  end
end

local function decode_number(text, i)
  local s, e = text:find("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
  if not s then fail(text, i, "bad number") end
  local lit = text:sub(s, e)
  if lit:find("^-?%d+$") then
    -- exact: digits accumulated in integer arithmetic (wraps above 2^63)
    local neg = lit:sub(1, 1) == "-"
    local v = 0
    for d in lit:gmatch("%d") do v = v * 10 + (neg and -tonumber(d) or tonumber(d)) end
    return v, e + 1
  end
  return tonumber(lit) or fail(text, i, "bad number"), e + 1
end

decode_value = function(text, i, depth)
  if depth > 200 then fail(text, i, "too deep") end
  i = skip(text, i)
  local c = text:sub(i, i)
  if c == "{" then
    local t, keys = {}, {}
    J.keys[t] = keys
    i = skip(text, i + 1)
    if text:sub(i, i) == "}" then return t, i + 1 end
    while true do
      i = skip(text, i)
      if text:sub(i, i) ~= '"' then fail(text, i, "expected a key") end
      local k
      k, i = decode_string(text, i)
      i = skip(text, i)
      if text:sub(i, i) ~= ":" then fail(text, i, "expected ':'") end
      local v
      v, i = decode_value(text, i + 1, depth + 1)
      t[k] = v
      keys[#keys + 1] = k
      i = skip(text, i)
      local d = text:sub(i, i)
      if d == "}" then return t, i + 1 end
      if d ~= "," then fail(text, i, "expected ',' or '}'") end
      i = i + 1
    end
  elseif c == "[" then
    local t = {}
    J.arrays[t] = true
    i = skip(text, i + 1)
    if text:sub(i, i) == "]" then return t, i + 1 end
    while true do
      local v
      v, i = decode_value(text, i, depth + 1)
      t[#t + 1] = v
      i = skip(text, i)
      local d = text:sub(i, i)
      if d == "]" then return t, i + 1 end
      if d ~= "," then fail(text, i, "expected ',' or ']'") end
      i = i + 1
    end
  elseif c == '"' then
    return decode_string(text, i)
  elseif text:find("^true", i) then
    return true, i + 4
  elseif text:find("^false", i) then
    return false, i + 5
  elseif text:find("^null", i) then
    return J.null, i + 4
  else
    return decode_number(text, i)
  end
end

function J.decode(text)
  local v, i = decode_value(text, 1, 0)
  if skip(text, i) <= #text then fail(text, i, "text after the value") end
  return v
end

local b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

function J.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = {}
    for k = 3, 0, -1 do q[#q + 1] = b64:sub((n >> (6 * k)) % 64 + 1, (n >> (6 * k)) % 64 + 1) end
    if not b then q[3], q[4] = "=", "=" elseif not c then q[4] = "=" end
    out[#out + 1] = table.concat(q)
  end
  return table.concat(out)
end

function J.unbase64(s)
  local out, bits, n = {}, 0, 0
  for ch in s:gmatch("[^=]") do
    local v = b64:find(ch, 1, true)
    if not v then error("json: bad base64 " .. s, 0) end
    bits = bits * 64 + (v - 1)
    n = n + 6
    if n >= 8 then
      n = n - 8
      out[#out + 1] = string.char((bits >> n) & 0xFF)
      bits = bits & ((1 << n) - 1)
    end
  end
  return table.concat(out)
end

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
    return named[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

-- encode: nil and J.null are null; a table with a first element is an array,
-- any other table an object (keys sorted); floats keep a fraction or exponent
-- (infinities and NaN as {"float": ...}, as `marshal call` reads them).
-- `leaf(v)`, when given, encodes what it knows (a string back) at any depth.
function J.encode(v, leaf)
  if leaf then
    local s = leaf(v)
    if s then return s end
  end
  local t = type(v)
  if v == nil or v == J.null then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if math.type(v) == "integer" then return string.format("%d", v) end
    if v ~= v then return '{"float":"nan"}' end
    if v == math.huge then return '{"float":"inf"}' end
    if v == -math.huge then return '{"float":"-inf"}' end
    local s = string.format("%.17g", v)
    if not s:find("[.eE]") then s = s .. ".0" end
    return s
  end
  if t == "string" then return encode_string(v) end
  if t == "table" then
    if v[1] ~= nil or (next(v) == nil and J.arrays[v]) then
      local parts = {}
      for i = 1, #v do parts[i] = J.encode(v[i], leaf) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = encode_string(k) .. ":" .. J.encode(v[k], leaf) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  error("json: cannot encode a " .. t, 0)
end

return J
