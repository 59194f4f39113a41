//go:build !linux

package store

// ReleaseMappedPages does nothing off Linux (mappedpages_linux.go).
func (s *Bolt) ReleaseMappedPages() error { return nil }
