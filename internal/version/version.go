// Package version holds the release version, stamped at build time with
// -ldflags "-X github.com/attune-io/attune/internal/version.Version=v0.1.0".
package version

// Version is "dev" unless stamped.
var Version = "dev"
