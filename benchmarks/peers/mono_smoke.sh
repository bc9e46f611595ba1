#!/bin/sh
# The Mono P/Invoke peer, tiny: built with mcs and run with a few iterations, so a
# wrong declaration or result fails the test suite, not the next `./run bench`.
# usage: mono_smoke.sh MONO_PEERS_CS FIXTURE_LIBRARY
set -eu
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mcs -optimize+ -out:"$out/mono_peers.exe" "$1"
LD_LIBRARY_PATH=$(dirname "$2") mono "$out/mono_peers.exe" 50 1
