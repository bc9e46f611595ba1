#!/bin/sh
# The installed surfaces, used as a project outside this tree would: `meson install`
# into a staging directory, then the C and C++ examples compiled and linked with
# nothing but what pkg-config says about `marshal-c` and `marshal`, and run against
# the installed typemaps. PKG_CONFIG_SYSROOT_DIR maps the .pc files' /usr/local
# paths into the staging directory (what a packager's DESTDIR build does), in
# flags and variables alike.
# usage: consume.sh BUILD_DIR SOURCE_DIR CC CXX
set -eu
build=$1 src=$2 cc=$3 cxx=$4
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

meson install -C "$build" --no-rebuild --destdir "$stage" >"$stage/install.log" 2>&1 || {
  cat "$stage/install.log"; exit 1; }

pcdir=$(dirname "$(find "$stage" -name marshal-c.pc | head -n 1)")
[ -f "$pcdir/marshal.pc" ] || { echo "no marshal.pc next to $pcdir/marshal-c.pc"; exit 1; }
export PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_SYSROOT_DIR="$stage"
unset PKG_CONFIG_LIBDIR || true
libdir=$(pkg-config --variable=libdir marshal-c)
typemaps=$(pkg-config --variable=typemapsdir marshal)
[ -f "$typemaps/zlib.json" ] || { echo "typemaps not installed at $typemaps"; exit 1; }
[ -f "$typemaps/../typemap.schema.json" ] || { echo "schema not installed next to $typemaps"; exit 1; }
echo "marshal-c: $(pkg-config --cflags --libs marshal-c)"
echo "marshal:   $(pkg-config --cflags --libs marshal)"

# Outside the source tree, so no header of the tree can be picked up by accident.
cd "$stage"

# Only the public headers are installed: marshal/marshal.hpp and the headers it
# includes, directly or not (the engine's, under marshal/engine/, which the
# templates are built on), and marshal.h for C. The compiler says which ones are
# reached (-MM); an installed header it does not reach is not public and fails
# this, as does one it reaches but cannot find (the consumers below would not build).
includedir=$(pkg-config --variable=includedir marshal)
"$cxx" -std=c++20 -MM $(pkg-config --cflags marshal) -x c++ "$includedir/marshal/marshal.hpp" >deps.cpp
"$cc" -std=c99 -MM $(pkg-config --cflags marshal-c) -x c "$includedir/marshal.h" >deps.c
cat deps.cpp deps.c | tr -s ' \\' '\n\n' | grep -v ':$' | grep . | while read -r f; do realpath "$f"; done |
  grep "^$(realpath "$includedir")/" | sort -u >headers.reached
find "$includedir" -type f | while read -r f; do realpath "$f"; done | sort -u >headers.installed
if ! cmp -s headers.reached headers.installed; then
  echo "installed headers and the ones marshal.hpp/marshal.h reach differ (<: reached, not installed; >: installed, not reached):"
  diff headers.reached headers.installed | grep '^[<>]'
  exit 1
fi
echo "headers: $(wc -l <headers.installed) installed, all reached from marshal.hpp or marshal.h"
"$cc" -std=c99 -pedantic -Wall -Wextra -Werror "$src/bindings/c/examples/zlib_roundtrip.c" \
  $(pkg-config --cflags --libs marshal-c) -o c-consumer
"$cxx" -std=c++20 -Wall -Wextra -Werror "$src/bindings/cpp/examples/zlib_roundtrip.cpp" \
  $(pkg-config --cflags --libs marshal) -o cpp-consumer

for program in c-consumer cpp-consumer; do
  echo "== $program"
  LD_LIBRARY_PATH="$libdir" "./$program" "$typemaps" | tee "$program.out"
  grep -q "identical" "$program.out" || { echo "$program: the round trip did not come back identical"; exit 1; }
  # It ran against the staged libraries, not a copy from elsewhere.
  LD_LIBRARY_PATH="$libdir" ldd "./$program" | grep -q "$stage" || { echo "$program: not linked to the staged library"; exit 1; }
done
