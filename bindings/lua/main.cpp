// marshal-lua: Lua 5.4 with the marshal module preloaded (require("marshal")
// needs no package.cpath). Runs a script file with its arguments, or -e CHUNK.
// An error is printed with its traceback (a marshal error by its __tostring);
// the exit status is then 1.
extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
int luaopen_marshal(lua_State* L);
}

#include <cstdio>
#include <cstring>

namespace {
int traceback(lua_State* L) {
  const char* msg = luaL_tolstring(L, 1, nullptr);  // __tostring of marshal errors
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int run(lua_State* L, int status, int nargs) {
  if (status == LUA_OK) {
    const int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    status = lua_pcall(L, nargs, 0, base);
    lua_remove(L, base);
  }
  if (status != LUA_OK) {
    std::fprintf(stderr, "marshal-lua: %s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(error object)");
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

void usage() {
  std::fprintf(stderr,
               "usage: marshal-lua SCRIPT [ARG...]   run a Lua script (arg[1..] are its arguments)\n"
               "       marshal-lua -e CHUNK [-e CHUNK...] [SCRIPT [ARG...]]\n"
               "Lua 5.4 with require(\"marshal\") preloaded.\n");
}
}  // namespace

int main(int argc, char** argv) {
  lua_State* L = luaL_newstate();
  if (!L) {
    std::fprintf(stderr, "marshal-lua: cannot create a Lua state\n");
    return 1;
  }
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_marshal);
  lua_setfield(L, -2, "marshal");
  lua_pop(L, 1);
  int status = 0, i = 1;
  bool ran = false;
  for (; i < argc && status == 0; ++i) {
    if (!std::strcmp(argv[i], "-e")) {
      if (i + 1 >= argc) {
        usage();
        lua_close(L);
        return 2;
      }
      const char* chunk = argv[++i];
      status = run(L, luaL_loadbuffer(L, chunk, std::strlen(chunk), "=(command line)"), 0);
      ran = true;
    } else if (!std::strcmp(argv[i], "-h") || !std::strcmp(argv[i], "--help")) {
      usage();
      lua_close(L);
      return 0;
    } else {
      break;
    }
  }
  if (status == 0 && i < argc) {
    // arg: the script at 0, its arguments from 1.
    lua_createtable(L, argc - i, 1);
    for (int k = i; k < argc; ++k) {
      lua_pushstring(L, argv[k]);
      lua_rawseti(L, -2, k - i);
    }
    lua_setglobal(L, "arg");
    const int loaded = luaL_loadfile(L, argv[i]);
    int nargs = 0;
    if (loaded == LUA_OK)
      for (int k = i + 1; k < argc; ++k, ++nargs) lua_pushstring(L, argv[k]);
    status = run(L, loaded, nargs);
    ran = true;
  }
  if (!ran) {
    usage();
    lua_close(L);
    return 2;
  }
  lua_close(L);
  return status;
}
