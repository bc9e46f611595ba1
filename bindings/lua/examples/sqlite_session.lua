-- marshal Lua example: a sqlite3 session through typemaps/sqlite3.json: an
-- in-memory database, rows read through sqlite3_exec's row callback (a Lua
-- function), and a prepared statement. Handles close themselves (<close>).
local marshal = require("marshal")
local dir = arg and arg[1] or "typemaps"
local sq = marshal.load(dir .. "/sqlite3.json")

print("sqlite " .. sq.sqlite3_libversion())
local rc, db = sq.sqlite3_open(":memory:")
assert(rc == sq.SQLITE_OK)
do
  local db <close> = db  -- sqlite3_close runs at the end of this block
  assert(sq.sqlite3_exec(db, [[
    create table langs(name text, year integer);
    insert into langs values ('C', 1972), ('Lua', 1993), ('C++', 1985), ('Python', 1991);
  ]], nil, nil) == sq.SQLITE_OK)

  print("sqlite3_exec, rows through a Lua callback:")
  local rows = {}
  local rc2 = sq.sqlite3_exec(db, "select name, year from langs order by year", function(_, ncols, values, names)
    local row = {}
    for i = 1, ncols do row[names[i]] = values[i] end
    rows[#rows + 1] = row
    print(string.format("  %s (%s)", row.name, row.year))
    return 0
  end, nil)
  assert(rc2 == sq.SQLITE_OK and #rows == 4 and rows[1].name == "C" and rows[4].name == "Lua")

  print("a prepared statement:")
  local rc3, stmt = sq.sqlite3_prepare_v2(db, "select name from langs where year > ?")
  assert(rc3 == sq.SQLITE_OK)
  local stmt <close> = stmt
  sq.sqlite3_bind_int(stmt, 1, 1985)
  local names = {}
  while sq.sqlite3_step(stmt) == sq.SQLITE_ROW do names[#names + 1] = sq.sqlite3_column_text(stmt, 0) end
  table.sort(names)
  print("  after 1985: " .. table.concat(names, ", "))
  assert(table.concat(names, ",") == "Lua,Python")

  -- an error inside the row callback stops the query and is raised here
  local ok, err = pcall(sq.sqlite3_exec, db, "select name from langs", function() error("stop!") end, nil)
  assert(not ok and tostring(err.cause):find("stop!"))
  print("a failing callback: " .. tostring(err))
end
