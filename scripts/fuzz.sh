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
		if ! out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1); then
			echo "$out" >&2
			echo "fuzz: $target found a failing input; it is saved under the package's testdata/fuzz/ and now runs with go test" >&2
			exit 1
		fi
	done
done
