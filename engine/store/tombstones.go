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
	sc := bufio.NewScanner(bytes.NewReader(journal))
	for sc.Scan() {
		// A torn last line (a kill mid-append) has fewer fields; its
		// erasure never committed.
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue
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
