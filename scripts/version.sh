#!/usr/bin/env bash
# Prints extranet's version, valid as a .deb and an .rpm version (neither
# takes '-'): a tag v1.2.0 gives 1.2.0; three commits later 1.2.0+3.gabc1234;
# no tag at all 0.0.0~dev+gabc1234 (~ sorts before any release in dpkg and
# rpm). A dirty tree adds .dirty; outside git, 0.0.0~dev.
set -euo pipefail
cd "$(dirname "$0")/.."
if d=$(git describe --tags --match 'v[0-9]*' --dirty=.dirty 2>/dev/null); then
	d=${d#v}
	# 1.2.0-3-gabc1234[.dirty] -> 1.2.0+3.gabc1234[.dirty]
	if [[ $d =~ ^(.*)-([0-9]+)-(g[0-9a-f]+)(.*)$ ]]; then
		d="${BASH_REMATCH[1]}+${BASH_REMATCH[2]}.${BASH_REMATCH[3]}${BASH_REMATCH[4]}"
	fi
	echo "$d"
elif h=$(git describe --always --dirty=.dirty 2>/dev/null); then
	echo "0.0.0~dev+g$h"
else
	echo "0.0.0~dev"
fi
