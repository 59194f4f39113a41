package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// backupPattern names the snapshot a backup writes next to the database
// before sending it (os.CreateTemp's pattern); OpenBolt removes any that
// a killed engine left.
const backupPattern = FileName + ".backup-*"

// errCompactionPending: the file holds erasures not yet compacted.
var errCompactionPending = errors.New("erasures not yet compacted")

// Snapshot is a consistent copy of the embedded store, ready to send.
type Snapshot struct {
	// Size is the copy's length in bytes.
	Size int64
	// SHA256 is the copy's digest.
	SHA256 [sha256.Size]byte
	file   *os.File
}

// Read reads the copy (io.Reader).
func (s *Snapshot) Read(p []byte) (int, error) { return s.file.Read(p) }

// Close removes the copy.
func (s *Snapshot) Close() error {
	err := s.file.Close()
	if rmErr := os.Remove(s.file.Name()); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		err = errors.Join(err, rmErr)
	}
	return err
}

// Backup copies the database as of one read transaction (bbolt's online
// backup, Tx.WriteTo) to a file beside it and returns it, to be read and
// closed by the caller. Commits go on meanwhile: a read transaction does
// not block them. The copy is written locally first, so the read
// transaction lasts as long as the disk takes, not as long as the client
// takes to download it (a long one would hold back the remap of a
// growing file, and with it every commit). Erasures not yet compacted
// are compacted first, so no erased user's data key is in the copy. The
// copy is a bbolt file like the store, its values sealed exactly as
// there: a backup of an encrypted store is encrypted at rest too.
func (s *Bolt) Backup(ctx context.Context) (_ *Snapshot, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(s.path), backupPattern)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	var h hash.Hash
	var n int64
	for attempt := 0; ; attempt++ {
		h = sha256.New()
		err = s.view(func(tx *bolt.Tx) error {
			// Tx.WriteTo copies every page, the freed ones too: after an
			// erasure not yet compacted they hold the erased user's
			// wrapped data key, which must not reach a backup.
			if tx.Bucket(schemaBucket).Get(compactPendingKey) != nil {
				return errCompactionPending
			}
			if err := f.Truncate(0); err != nil {
				return err
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			var err error
			n, err = tx.WriteTo(io.MultiWriter(f, h))
			return err
		})
		if !errors.Is(err, errCompactionPending) || attempt == 3 {
			break
		}
		if err = s.Compact(); err != nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("backup: write the snapshot: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	snap := &Snapshot{Size: n, file: f}
	h.Sum(snap.SHA256[:0])
	return snap, nil
}

// ErrBackupUnencrypted: the embedded store is not encrypted at rest (an
// engine run without keyEncryptionKeyDir), so a backup would carry every
// user's data in the clear; it is refused.
var ErrBackupUnencrypted = errors.New("this engine's store is not encrypted at rest (keyEncryptionKeyDir is not set): " +
	"a backup would hold every user's data in the clear; set keyEncryptionKeyDir (docs/data-protection.md) to take backups")

// BackupOf returns db's Backup when db is the embedded store encrypted
// at rest (under Sealed); for the embedded store in the clear, a source
// that always fails with ErrBackupUnencrypted; nil for a shared store
// (PostgreSQL), which is backed up with its database.
func BackupOf(db Store) func(context.Context) (*Snapshot, error) {
	switch s := db.(type) {
	case *Bolt:
		return func(context.Context) (*Snapshot, error) { return nil, ErrBackupUnencrypted }
	case *Sealed:
		if b, ok := s.inner.(*Bolt); ok {
			return b.Backup
		}
	}
	return nil
}

// removeBackups removes snapshots a killed engine left in dir.
func removeBackups(dir string) error {
	left, err := filepath.Glob(filepath.Join(dir, backupPattern))
	if err != nil {
		return err
	}
	for _, f := range left {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}
