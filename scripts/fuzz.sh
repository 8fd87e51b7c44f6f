#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME each. `make test` runs a smoke budget
# counted in executions (10000x); `make fuzz` runs by the clock (FUZZTIME=2m).
# New crashers land in the package's testdata/fuzz/ and then run as regular
# tests with plain `go test`.
#
# Why a count for the smoke run: with a duration, Go's fuzz coordinator can
# report "context deadline exceeded" and fail when the clock runs out while a
# worker is mid-call, on a busy machine, with no input at fault (CI saw this).
# A count sets no deadline, so that race cannot happen. For clock-bound runs
# the same race is told apart from a finding: a finding always writes its
# input ("Failing input written to ..."), the race writes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10000x}
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "fuzz $pkg $target ($fuzztime)"
		if out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1); then
			continue
		fi
		echo "$out" >&2
		if ! grep -q 'Failing input written to' <<<"$out" &&
			grep -qx '[[:space:]]*context deadline exceeded' <<<"$out" &&
			! grep -Eq '^panic:|_test\.go:[0-9]+:' <<<"$out"; then
			echo "fuzz: $target stopped on the fuzz clock's deadline without a failing input (a race in Go's fuzz coordinator, not a finding); going on" >&2
			continue
		fi
		echo "fuzz: $target failed; a failing input, if one was found, is saved under the package's testdata/fuzz/ and now runs with go test" >&2
		exit 1
	done
done
