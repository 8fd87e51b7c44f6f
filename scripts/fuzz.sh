#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME each (default 3s): a smoke run in
# `make test`, a long one with `make fuzz` (FUZZTIME=2m). New crashers land
# in the package's testdata/fuzz/ and then run as regular tests.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-3s}
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "fuzz $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >/dev/null
	done
done
