#!/usr/bin/env bash
# marshal tests: each tests/compile-fail/*.cpp must fail to compile, with the
# message its first line names (// expect: TEXT). Proves the typed C++ API
# rejects ambiguous or unreflectable types at compile time, readably.
set -u
cxx=$1
root=$2
passed=0
failed=0
for f in "$root"/tests/compile-fail/*.cpp; do
  expect=$(head -n 1 "$f" | sed -n 's|^// expect: ||p')
  out=$("$cxx" -std=c++20 -fsyntax-only -I"$root/engine" -I"$root/bindings/cpp" "$f" 2>&1)
  status=$?
  name=$(basename "$f")
  if [ $status -eq 0 ]; then
    echo "FAIL $name: compiled, but must not"
    failed=$((failed + 1))
  elif ! grep -qF "$expect" <<<"$out"; then
    echo "FAIL $name: did not say '$expect'; the compiler said:"
    grep -m 3 'error' <<<"$out"
    failed=$((failed + 1))
  else
    echo "ok   $name: $(grep -m 1 -oF "$expect" <<<"$out")"
    passed=$((passed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ] && [ $passed -gt 0 ]
