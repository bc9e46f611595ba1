// marshal example: a sqlite3 session through typemaps/sqlite3.json and the
// engine's dynamic values: an in-memory database, rows read through
// sqlite3_exec's row callback (a host function), and a prepared statement.
#include "typemap/context.hpp"
#include "call/library.hpp"

#include <cstdio>
#include <string>

using namespace marshal::engine;

namespace {

// Calls a function and exits on failure; prints what it did.
CallResult call(Library& lib, const char* fn, std::vector<Value> args) {
  std::string error;
  const Plan* plan = lib.bind(fn, error);
  CallResult r;
  if (!plan || !plan->call(args, r, error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    std::exit(1);
  }
  return r;
}

const Value& out(const CallResult& r, const char* name) {
  for (const auto& [k, v] : r.out)
    if (k == name) return v;
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "typemaps";
  Context ctx;
  LoadResult loaded = ctx.load_file(dir + "/sqlite3.json");
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.errors.front().text().c_str());
    return 1;
  }
  std::string error;
  auto lib = Library::open(ctx, *loaded.typemap, error);
  if (!lib) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  std::printf("sqlite %s\n", call(*lib, "sqlite3_libversion", {}).ret.as<std::string>().c_str());
  Value db = out(call(*lib, "sqlite3_open", {":memory:"}), "db");
  const char* setup =
      "create table langs(name text, year integer);"
      "insert into langs values ('C', 1972), ('Lua', 1993), ('C++', 1985), ('Python', 1991);";
  call(*lib, "sqlite3_exec", {db, setup, Value(), Value()});
  std::printf("sqlite3_exec, rows through a host callback:\n");
  auto print_row = std::make_shared<HostFunction>(HostFunction{"print_row", [](const std::vector<Value>& a, Value& r, std::string&) {
    const List& values = a[2].as<List>();
    const List& names = a[3].as<List>();
    std::printf(" ");
    for (std::size_t i = 0; i < values.size(); ++i)
      std::printf(" %s=%s", names[i].as<std::string>().c_str(), values[i].is_null() ? "NULL" : values[i].as<std::string>().c_str());
    std::printf("\n");
    r = Value(0);
    return true;
  }});
  call(*lib, "sqlite3_exec", {db, "select name, year from langs order by year;", Value(print_row), Value()});
  CallResult prep = call(*lib, "sqlite3_prepare_v2", {db, "select name from langs where year > ? order by name;"});
  Value stmt = out(prep, "stmt");
  call(*lib, "sqlite3_bind_int", {stmt, 1, 1984});
  std::printf("prepared statement, year > 1984:");
  while (call(*lib, "sqlite3_step", {stmt}).ret.as<std::int64_t>() == 100)
    std::printf(" %s", call(*lib, "sqlite3_column_text", {stmt, 0}).ret.as<std::string>().c_str());
  std::printf("\n");
  // Dropping the handles finalizes the statement and closes the database.
  return 0;
}
