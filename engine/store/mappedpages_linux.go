package store

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// ReleaseMappedPages drops the store file's pages from this process's
// memory map (madvise MADV_DONTNEED): a pass over every user faults the
// whole file in, and those pages would otherwise count in the engine's
// RSS until the kernel reclaims them. The data stays in the kernel's page
// cache, so the next read of a page is a minor fault, not a disk read.
// It runs inside a read transaction, which holds bbolt's mapping in place,
// and not through view: the release is not a read the budget counts (and
// counting it could make the release wait for itself).
func (s *Bolt) ReleaseMappedPages() error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	return s.db.View(func(tx *bolt.Tx) error {
		info := tx.DB().Info()
		if info == nil || info.Data == 0 || tx.Size() == 0 {
			return nil
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, info.Data, uintptr(tx.Size()), syscall.MADV_DONTNEED); errno != 0 {
			return fmt.Errorf("release the store's mapped pages: %w", errno)
		}
		return nil
	})
}

// fileResident is this process's file-backed resident memory in bytes
// (the third field of /proc/self/statm, in pages), 0 when unreadable.
func fileResident() int64 {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	fields := bytes.Fields(raw)
	if len(fields) < 3 {
		return 0
	}
	pages, err := strconv.ParseInt(string(fields[2]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}
