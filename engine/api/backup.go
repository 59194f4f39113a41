package api

import (
	"context"
	"encoding/base64"
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
	start := time.Now()
	snap, err := s.backup(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	defer func() { _ = snap.Close() }()
	// The copy may take longer than the server's write timeout.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
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
