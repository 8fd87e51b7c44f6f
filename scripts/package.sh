#!/usr/bin/env bash
# Builds the extranet .deb and .rpm into dist/ (make packages), with nfpm
# run as a Go tool pinned in go.mod. Reproducible: the version and every file
# date come from the last commit, so building the same commit twice gives
# byte-identical packages.
#   scripts/package.sh [deb|rpm]...     (default: both)
# Environment: VERSION overrides scripts/version.sh (the package test builds
# a newer one), DIST the output directory (default dist).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
formats=("$@")
((${#formats[@]})) || formats=(deb rpm)

VERSION=${VERSION:-$(scripts/version.sh)}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
ARCH=${ARCH:-$($GO env GOARCH)}
DIST=${DIST:-dist}
# Fixed: nfpm.yaml names it.
STAGE=dist/stage
export VERSION SOURCE_DATE_EPOCH ARCH

rm -rf "$STAGE"
mkdir -p "$DIST"
install -d "$STAGE/usr/bin" "$STAGE/usr/lib/systemd/system" "$STAGE/usr/share/man" \
	"$STAGE/usr/share/bash-completion/completions" "$STAGE/usr/share/zsh/vendor-completions" \
	"$STAGE/usr/share/fish/vendor_completions.d" "$STAGE/usr/share/doc/extranet"

# PIE: address space randomisation for a daemon facing the internet, and
# what lintian expects of a Go binary built outside Debian's Go toolchain
# (a non-PIE static binary is an error there).
CGO_ENABLED=0 GOARCH=$ARCH $GO build -trimpath -buildmode=pie \
	-ldflags "-s -w -X github.com/extranetgw/extranet/internal/version.Version=$VERSION" \
	-o "$STAGE/usr/bin/" ./cmd/extranetd ./cmd/extranetctl

# The units say /usr/local (make install's prefix); the package's is /usr.
for u in extranetd.service extranetd-close.service extranet-expire.service extranet-expire.timer; do
	sed 's#/usr/local/#/usr/#g' "systemd/$u" >"$STAGE/usr/lib/systemd/system/$u"
done

# -n: no name or date in the gzip header; -9: what Debian expects.
$GO run ./internal/tools/genman -version "$VERSION" -out "$STAGE/usr/share/man"
gzip -9n "$STAGE"/usr/share/man/man*/*

# Completion scripts from the binary just built (for this host's arch) or,
# cross-building, from one built for the host.
ctl=$STAGE/usr/bin/extranetctl
if [ "$ARCH" != "$($GO env GOHOSTARCH)" ]; then
	ctl=$STAGE/extranetctl-host
	CGO_ENABLED=0 $GO build -trimpath -o "$ctl" ./cmd/extranetctl
fi
"$ctl" completion bash >"$STAGE/usr/share/bash-completion/completions/extranetctl"
"$ctl" completion zsh >"$STAGE/usr/share/zsh/vendor-completions/_extranetctl"
"$ctl" completion fish >"$STAGE/usr/share/fish/vendor_completions.d/extranetctl.fish"

# The docs as make install lays them out, plus what Debian wants beside them.
install -m 0644 README.md docs/*.md scripts/packaging/copyright "$STAGE/usr/share/doc/extranet/"
# Uncompressed: the units' Documentation= links name README.md and
# lifecycle.md.
printf 'extranet (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- %s  %s\n' \
	"$VERSION" "$(git rev-parse --short HEAD)" \
	"$(sed -n 's/^maintainer: //p' scripts/packaging/nfpm.yaml)" \
	"$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")" |
	gzip -9n >"$STAGE/changelog.Debian.gz"
chmod -R u=rwX,go=rX "$STAGE"

for f in "${formats[@]}"; do
	$GO tool nfpm package --config scripts/packaging/nfpm.yaml --packager "$f" --target "$DIST/"
done
rm -rf "$STAGE"
mkdir -p "$DIST"
