#!/usr/bin/env bash
# marshal tests: the C API's shared library exports only the C API (marshal_*):
# every function marshal.h declares, and nothing it does not (a renamed
# function's old name, an internal helper).
set -u
lib=$1
names=$(nm -D --defined-only "$lib" | awk '$2 ~ /[TDBRVW]/ {print $3}')
total=$(echo "$names" | grep -c .)
stray=$(echo "$names" | grep -v '^marshal_' || true)
if [ -n "$stray" ]; then
  echo "symbols outside the C API:"
  echo "$stray" | head -20
  echo "0 passed, 1 failed"
  exit 1
fi
# Every function the header declares is exported.
header=$2
declared=$(grep -oE 'MARSHAL_API [^(]*\bmarshal_[a-z0-9_]+\(' "$header" | grep -oE 'marshal_[a-z0-9_]+\($' | tr -d '(' | sort -u)
missing=0
for f in $declared; do
  echo "$names" | grep -qx "$f" || { echo "declared but not exported: $f"; missing=$((missing + 1)); }
done
# Every exported function is declared (thread-local and data symbols aside).
functions=$(nm -D --defined-only "$lib" | awk '$2 == "T" {print $3}')
extra=0
for f in $functions; do
  echo "$declared" | grep -qx "$f" || { echo "exported but not declared in marshal.h: $f"; extra=$((extra + 1)); }
done
echo "$total exported symbols, all marshal_*; $(echo "$declared" | grep -c .) declared; $missing missing, $extra undeclared"
[ "$missing" -eq 0 ] && [ "$extra" -eq 0 ] && echo "1 passed, 0 failed" || { echo "0 passed, 1 failed"; exit 1; }
