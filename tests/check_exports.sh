#!/usr/bin/env bash
# marshal tests: the C API's shared library exports only the C API (marshal_*).
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
missing=0
for f in $(grep -oE 'marshal_[a-z0-9_]+\(' "$header" | tr -d '(' | sort -u); do
  echo "$names" | grep -qx "$f" || { echo "declared but not exported: $f"; missing=$((missing + 1)); }
done
echo "$total exported symbols, all marshal_*; $missing missing"
[ "$missing" -eq 0 ] && echo "1 passed, 0 failed" || { echo "0 passed, 1 failed"; exit 1; }
