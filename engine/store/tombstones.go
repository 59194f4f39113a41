package store

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TombstonesFileName is the erasure journal beside the database. Every
// erasure of an encrypted user (a data key deleted) appends a tombstone
// to it, fsynced before the erasure commits: the row key, the identity of
// the data key it destroyed (dataKeyIdentity), and the time. The journal is not part of the
// database, so it outlives a restore of an older backup into the same
// directory: OpenBolt re-applies every tombstone whose data key the
// restored file still holds, and compacts, before the engine serves. It
// holds no pseudonym (row keys are HMACs of them) and nothing that opens
// a value; it grows by about 80 bytes per erasure.
const TombstonesFileName = FileName + ".erasures"

// tombstone is one journal line: "<row key> <data key identity> <RFC 3339 time>".
func tombstone(rowKey string, dataKey []byte, at time.Time) string {
	return rowKey + " " + dataKeyIdentity(dataKey) + " " + at.UTC().Format(time.RFC3339) + "\n"
}

// dataKeyIdentity names one data key across re-wraps: its random ID
// (which Rewrap keeps while the wrapped bytes change with the KEK), or
// the stored value's SHA-256 for a value that is not a data-key record.
func dataKeyIdentity(stored []byte) string {
	var rec dataKeyRecord
	if err := json.Unmarshal(stored, &rec); err == nil && len(rec.ID) == dataKeyIDLen {
		return "id-" + hex.EncodeToString(rec.ID)
	}
	sum := sha256.Sum256(stored)
	return "sha256-" + hex.EncodeToString(sum[:])
}

// journalErasures appends the tombstones of the data keys this change
// erases (those still stored) and fsyncs them, inside the commit's
// transaction: the commit happens only once they are durable.
func (s *Bolt) journalErasures(tx *bolt.Tx, users []string, at time.Time) error {
	if len(users) == 0 || s.tombstones == nil {
		return nil
	}
	keys := tx.Bucket(dataKeysBucket)
	var lines strings.Builder
	for _, user := range users {
		if _, value := split(keys.Get([]byte(user))); value != nil {
			lines.WriteString(tombstone(user, value, at))
		}
	}
	if lines.Len() == 0 {
		return nil
	}
	if _, err := s.tombstones.WriteString(lines.String()); err != nil {
		return fmt.Errorf("journal the erasure: %w", err)
	}
	if s.noSync {
		return nil
	}
	if err := s.tombstones.Sync(); err != nil {
		return fmt.Errorf("journal the erasure: %w", err)
	}
	return nil
}

// openJournal opens the erasure journal for appending, creating it (and
// fsyncing its directory, so the new entry survives a power loss) if
// need be. A journal that does not end in a newline has a torn tail: a
// kill or power loss mid-append. Its erasure never committed (the
// commit waits for the journal's fsync, and a line whose write had not
// completed was not fsynced), so the tail is cut back to the last
// newline and fsynced; else the next tombstone would be appended onto
// it and both lines would be unreadable.
func openJournal(path string) (*os.File, error) {
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the erasure journal: %w", err)
	}
	if err := cutTornTail(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("repair the erasure journal's torn tail: %w", err)
	}
	if created {
		if err := syncDir(filepath.Dir(path)); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("create the erasure journal: %w", err)
		}
	}
	return f, nil
}

// cutTornTail truncates f after its last newline if it does not end in
// one, and fsyncs it.
func cutTornTail(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size == 0 {
		return nil
	}
	// Read backwards in blocks until a newline or the start.
	buf := make([]byte, 4096)
	end := size
	for end > 0 {
		n := int64(len(buf))
		if n > end {
			n = end
		}
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return err
		}
		if end == size && buf[n-1] == '\n' {
			return nil // not torn
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			end = end - n + int64(i) + 1
			break
		}
		end -= n
	}
	if err := f.Truncate(end); err != nil {
		return err
	}
	return f.Sync()
}

// reapplyErasures erases again every user the journal says was erased
// whose data key, the same one, the file still holds (a backup from
// before the erasure restored): data key, row and decisions, in one
// transaction that marks the file for compaction. It returns how many.
func reapplyErasures(db *bolt.DB, path string) (int, error) {
	journal, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the erasure journal: %w", err)
	}
	erased := map[string]map[string]bool{} // row key → identities of its erased data keys
	// A torn tail (no final newline) is cut by openJournal; reading
	// stops at the last newline too, for a journal read before that.
	journal = journal[:bytes.LastIndexByte(journal, '\n')+1]
	sc := bufio.NewScanner(bytes.NewReader(journal))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue // an empty line, or one this version does not know
		}
		if erased[fields[0]] == nil {
			erased[fields[0]] = map[string]bool{}
		}
		erased[fields[0]][fields[1]] = true
	}
	if len(erased) == 0 {
		return 0, nil
	}
	n := 0
	err = db.Update(func(tx *bolt.Tx) error {
		keys := tx.Bucket(dataKeysBucket)
		var again []string
		err := keys.ForEach(func(k, v []byte) error {
			_, value := split(v)
			if erased[string(k)][dataKeyIdentity(value)] {
				again = append(again, string(k))
			}
			return nil
		})
		if err != nil || len(again) == 0 {
			return err
		}
		if err := eraseDataKeys(tx, again); err != nil {
			return err
		}
		users := map[string]Write{}
		for _, k := range again {
			users[k] = Write{}
		}
		if err := applyWrites(tx, usersBucket, users); err != nil {
			return err
		}
		if err := applyDecisionWrites(tx, Change{EraseDecisions: again}); err != nil {
			return err
		}
		n = len(again)
		return tx.Bucket(schemaBucket).Put(compactPendingKey, []byte{1})
	})
	if err != nil {
		return 0, fmt.Errorf("re-apply erasures: %w", err)
	}
	return n, nil
}
