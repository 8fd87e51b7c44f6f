// Package version holds the build's version, set at link time.
package version

// Version is overridden with -ldflags "-X github.com/extranetgw/extranet/internal/version.Version=...".
var Version = "dev"
