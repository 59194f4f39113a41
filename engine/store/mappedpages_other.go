//go:build !linux

package store

// ReleaseMappedPages does nothing off Linux (mappedpages_linux.go).
func (s *Bolt) ReleaseMappedPages() error { return nil }

// fileResident is unknown off Linux, so the mapped pages' budget never
// releases anything there.
func fileResident() int64 { return 0 }
