package api

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/engine/store"
)

// BackupSource takes a consistent snapshot of the embedded store
// (store.Bolt.Backup); the caller reads and closes it.
type BackupSource func(context.Context) (*store.Snapshot, error)

// WithBackup serves GET /v1/admin/backup from src (an engine on the
// embedded store; without it the route answers 404, as on PostgreSQL,
// which is backed up with its database).
func WithBackup(src BackupSource) Option { return func(s *Server) { s.backup = src } }

// Backup delivery bounds. Each backup keeps a full copy of the database
// on the engine's volume until its client has read it, so only one runs
// at a time (a second is answered 429), and a client that stalls is cut
// off: the response must go at least backupMinRate, with at least
// backupMinDeadline in all, after which the copy is removed.
const (
	backupMinRate     = 1 << 20 // bytes per second
	backupMinDeadline = 10 * time.Minute
	// backupRetryAfter is the Retry-After of a backup refused while
	// another runs, in seconds.
	backupRetryAfter = "60"
)

// backupDeadline is how long a snapshot of size bytes may take to send.
func backupDeadline(size int64) time.Duration {
	return max(backupMinDeadline, time.Duration(size/backupMinRate+1)*time.Second)
}

func (s *Server) routeBackup() {
	s.route("GET /v1/admin/backup", auth.ScopeBackup, s.getBackup)
}

// getBackup answers GET /v1/admin/backup: the whole embedded store as a
// bbolt file, consistent as of one moment while ingest goes on
// (docs/operations.md, "Backup and restore"). The body is the store as
// it is at rest: users' values sealed under their data keys, those
// wrapped by the world's key-encryption key, which is not in it.
// Repr-Digest (RFC 9530) carries the file's SHA-256 so the copy can be
// checked before it is relied on.
func (s *Server) getBackup(w http.ResponseWriter, r *http.Request) {
	if s.backup == nil {
		s.reject(w, http.StatusNotFound, "no_backup",
			"this engine's store is shared (PostgreSQL): back it up with the database (pg_dump, or the provider's snapshots)", "store")
		return
	}
	if !s.backupRunning.CompareAndSwap(false, true) {
		w.Header().Set("Retry-After", backupRetryAfter)
		s.reject(w, http.StatusTooManyRequests, "backup_running",
			"another backup is being taken or delivered: one at a time, as each keeps a full copy of the store on the engine's volume until it is read", "")
		return
	}
	defer s.backupRunning.Store(false)
	start := time.Now()
	snap, err := s.backup(r.Context())
	if errors.Is(err, store.ErrBackupUnencrypted) {
		s.reject(w, http.StatusConflict, "backup_unencrypted", err.Error(), "keyEncryptionKeyDir")
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	// On every path out, the local copy goes (Snapshot.Close removes it).
	defer func() { _ = snap.Close() }()
	// The copy may take longer than the server's write timeout, but not
	// for ever: a stalled client would keep the copy on the volume.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(backupDeadline(snap.Size)))
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", `attachment; filename="`+store.FileName+`"`)
	h.Set("Content-Length", strconv.FormatInt(snap.Size, 10))
	h.Set("Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(snap.SHA256[:])+":")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	n, err := io.Copy(w, snap)
	if err != nil {
		s.log.Warn("backup not delivered whole", "bytes", n, "size", snap.Size, "error", err)
		return
	}
	s.log.Info("backup delivered", "bytes", n, "duration", time.Since(start))
}
