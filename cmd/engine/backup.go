package main

import (
	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/store"
)

// backupOptions serve GET /v1/admin/backup when the store is the embedded
// one (encrypted or not); a PostgreSQL store is backed up with its
// database.
func backupOptions(db store.Store) []api.Option {
	if src := store.BackupOf(db); src != nil {
		return []api.Option{api.WithBackup(src)}
	}
	return nil
}
