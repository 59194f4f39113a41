package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attune-io/attune/engine/config"
)

// Postgres is the shared backend: every replica of a program reads and
// writes the same rows, so a user's state is one wherever their requests
// land. Rows are keyed by program, so several programs may share a database
// without seeing each other's users.
type Postgres struct {
	pool    *pgxpool.Pool
	program string
	closed  atomic.Bool
}

// migrations are applied in order, once each, recorded in
// attune_schema_migrations. Never edit one that has shipped; append.
var migrations = []string{
	`CREATE TABLE attune_users (
		program text NOT NULL,
		key     text NOT NULL,
		value   bytea NOT NULL,
		version bigint NOT NULL,
		PRIMARY KEY (program, key))`,
	`CREATE TABLE attune_meta (
		program text NOT NULL,
		key     text NOT NULL,
		value   bytea NOT NULL,
		version bigint NOT NULL,
		PRIMARY KEY (program, key))`,
	// The decision log: one row per decision, keyed by user so erasure
	// and a user's export are one range; IDs begin with the time, so the
	// second index serves export since a time and the retention sweep.
	`CREATE TABLE attune_decisions (
		program  text NOT NULL,
		user_key text NOT NULL,
		id       text NOT NULL,
		value    bytea NOT NULL,
		version  bigint NOT NULL,
		PRIMARY KEY (program, user_key, id));
	CREATE INDEX attune_decisions_by_id ON attune_decisions (program, id)`,
}

// OpenPostgres connects, migrates the schema (under an advisory lock, so
// replicas starting together migrate once) and returns the store for
// program's rows.
func OpenPostgres(ctx context.Context, connString, program string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		// pgx's message may quote the string, password included: keep only the gist.
		return nil, errors.New("parse PostgreSQL connection string: invalid (check the Secret's connectionString or its parts)")
	}
	if !strings.Contains(connString, "pool_max_conns") {
		// pgxpool's default (the CPU count, at least 4) queues concurrent
		// requests on a small pod; a request holds a connection only for
		// its statements.
		cfg.MaxConns = 16
	}
	if _, set := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]; !set {
		// Plan every statement for its parameters and the table as it is
		// now: a generic plan cached while the table was empty keeps
		// scanning it whole once it holds thousands of users.
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return &Postgres{pool: pool, program: program}, nil
}

func lockKey(parts ...string) int64 {
	h := fnv.New64a()
	h.Write([]byte("attune/" + strings.Join(parts, "/")))
	return int64(h.Sum64())
}

func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Release()
	// A session lock: held across the migration transactions and released
	// explicitly (or when the connection dies).
	key := lockKey("schema-migrations")
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return fmt.Errorf("lock schema migrations: %w", err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key) }()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS attune_schema_migrations (
		version    integer PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create attune_schema_migrations: %w", err)
	}
	var current int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM attune_schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > len(migrations) {
		return fmt.Errorf("the database schema is at version %d, newer than this engine's %d: run a newer engine", current, len(migrations))
	}
	for v := current + 1; v <= len(migrations); v++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO attune_schema_migrations (version) VALUES ($1)`, v)
			return err
		})
		if err != nil {
			return fmt.Errorf("schema migration %d: %w", v, err)
		}
	}
	return nil
}

// Scope implements Store.
func (p *Postgres) Scope() config.Scope { return config.ScopeShared }

func (p *Postgres) check() error {
	if p.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Users implements Store.
func (p *Postgres) Users(ctx context.Context, keys []string) (map[string]Item, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	rows, err := p.pool.Query(ctx, `SELECT key, value, version FROM attune_users WHERE program = $1 AND key = ANY($2)`, p.program, keys)
	if err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	out := make(map[string]Item, len(keys))
	var key string
	var item Item
	_, err = pgx.ForEachRow(rows, []any{&key, &item.Value, &item.Version}, func() error {
		out[key] = Item{Value: item.Value, Version: item.Version}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	return out, nil
}

// EachUser implements Store.
func (p *Postgres) EachUser(ctx context.Context, fn func(key string, item Item) error) error {
	if err := p.check(); err != nil {
		return err
	}
	rows, err := p.pool.Query(ctx, `SELECT key, value, version FROM attune_users WHERE program = $1`, p.program)
	if err != nil {
		return fmt.Errorf("read users: %w", err)
	}
	var key string
	var item Item
	_, err = pgx.ForEachRow(rows, []any{&key, &item.Value, &item.Version}, func() error { return fn(key, item) })
	return err
}

// CountUsers implements Store.
func (p *Postgres) CountUsers(ctx context.Context) (int, error) {
	if err := p.check(); err != nil {
		return 0, err
	}
	var n int
	if err := p.pool.QueryRow(ctx, `SELECT count(*) FROM attune_users WHERE program = $1`, p.program).Scan(&n); err != nil {
		return 0, fmt.Errorf("count users: %w", err)
	}
	return n, nil
}

// Meta implements Store.
func (p *Postgres) Meta(ctx context.Context, key string) (Item, error) {
	if err := p.check(); err != nil {
		return Item{}, err
	}
	var item Item
	err := p.pool.QueryRow(ctx, `SELECT value, version FROM attune_meta WHERE program = $1 AND key = $2`, p.program, key).Scan(&item.Value, &item.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return Item{}, nil
	}
	if err != nil {
		return Item{}, fmt.Errorf("read %s: %w", key, err)
	}
	return item, nil
}

// Commit implements Store: one transaction (the default READ COMMITTED is
// enough: each conditional UPDATE or DELETE re-checks its version after
// waiting for a concurrent writer's row lock). Keys are written in sorted
// order so two replicas' transactions cannot deadlock on each other's rows.
func (p *Postgres) Commit(ctx context.Context, c Change) error {
	if err := p.check(); err != nil {
		return err
	}
	// Every statement is conditional on the version read, so each must
	// affect exactly one row; one that affects none lost a race.
	batch := &pgx.Batch{}
	// exact[i] says statement i must affect exactly one row (a conditional
	// write); erasing a user's decisions may affect any number.
	var exact []bool
	for _, user := range slices.Sorted(slices.Values(c.EraseDecisions)) {
		batch.Queue(`DELETE FROM attune_decisions WHERE program = $1 AND user_key = $2`, p.program, user)
		exact = append(exact, false)
	}
	for _, key := range sortedDecisionKeys(c.Decisions) {
		query, args, ok := decisionStatement(p.program, key, c.Decisions[key])
		if !ok {
			continue
		}
		batch.Queue(query, args...)
		exact = append(exact, true)
	}
	for _, table := range []struct {
		name   string
		writes map[string]Write
	}{{"attune_users", c.Users}, {"attune_meta", c.Meta}} {
		keys := make([]string, 0, len(table.writes))
		for k := range table.writes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, key := range keys {
			query, args, ok := writeStatement(table.name, p.program, key, table.writes[key])
			if !ok {
				continue
			}
			batch.Queue(query, args...)
			exact = append(exact, true)
		}
	}
	if batch.Len() == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		results := tx.SendBatch(ctx, batch)
		for i := range batch.Len() {
			tag, err := results.Exec()
			if err != nil {
				_ = results.Close()
				return err
			}
			if exact[i] && tag.RowsAffected() != 1 {
				_ = results.Close()
				return ErrConflict
			}
		}
		return results.Close()
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01" || pgErr.Code == "23505") {
		return ErrConflict // serialization failure, deadlock, or a racing insert
	}
	if err != nil && !errors.Is(err, ErrConflict) {
		return fmt.Errorf("commit: %w", err)
	}
	return err
}

// writeStatement is the SQL for one write, conditional on the version read
// (it affects no row when that version no longer holds). ok is false for a
// write with nothing to do (deleting a key read as absent).
func writeStatement(table, program, key string, w Write) (query string, args []any, ok bool) {
	switch {
	case w.Value == nil && w.IfVersion == 0:
		return "", nil, false
	case w.Value == nil:
		return `DELETE FROM ` + table + ` WHERE program = $1 AND key = $2 AND version = $3`, []any{program, key, w.IfVersion}, true
	case w.IfVersion == 0:
		return `INSERT INTO ` + table + ` (program, key, value, version) VALUES ($1, $2, $3, 1) ON CONFLICT DO NOTHING`,
			[]any{program, key, w.Value}, true
	default:
		return `UPDATE ` + table + ` SET value = $3, version = version + 1 WHERE program = $1 AND key = $2 AND version = $4`,
			[]any{program, key, w.Value, w.IfVersion}, true
	}
}

func sortedDecisionKeys(writes map[DecisionKey]Write) []DecisionKey {
	keys := make([]DecisionKey, 0, len(writes))
	for k := range writes {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b DecisionKey) int {
		if c := strings.Compare(a.User, b.User); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return keys
}

// decisionStatement is writeStatement for the decision log.
func decisionStatement(program string, key DecisionKey, w Write) (query string, args []any, ok bool) {
	switch {
	case w.Value == nil && w.IfVersion == 0:
		return "", nil, false
	case w.Value == nil:
		return `DELETE FROM attune_decisions WHERE program = $1 AND user_key = $2 AND id = $3 AND version = $4`,
			[]any{program, key.User, key.ID, w.IfVersion}, true
	case w.IfVersion == 0:
		return `INSERT INTO attune_decisions (program, user_key, id, value, version) VALUES ($1, $2, $3, $4, 1) ON CONFLICT DO NOTHING`,
			[]any{program, key.User, key.ID, w.Value}, true
	default:
		return `UPDATE attune_decisions SET value = $4, version = version + 1 WHERE program = $1 AND user_key = $2 AND id = $3 AND version = $5`,
			[]any{program, key.User, key.ID, w.Value, w.IfVersion}, true
	}
}

// Decision implements Store.
func (p *Postgres) Decision(ctx context.Context, key DecisionKey) (Item, error) {
	if err := p.check(); err != nil {
		return Item{}, err
	}
	var item Item
	err := p.pool.QueryRow(ctx, `SELECT value, version FROM attune_decisions WHERE program = $1 AND user_key = $2 AND id = $3`,
		p.program, key.User, key.ID).Scan(&item.Value, &item.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return Item{}, nil
	}
	if err != nil {
		return Item{}, fmt.Errorf("read decision: %w", err)
	}
	return item, nil
}

// EachDecision implements Store, ordered by user so a caller can fold one
// user's decisions at a time.
func (p *Postgres) EachDecision(ctx context.Context, sinceID string, fn func(DecisionKey, Item) error) error {
	if err := p.check(); err != nil {
		return err
	}
	rows, err := p.pool.Query(ctx, `SELECT user_key, id, value, version FROM attune_decisions
		WHERE program = $1 AND id >= $2 ORDER BY user_key, id`, p.program, sinceID)
	if err != nil {
		return fmt.Errorf("read decisions: %w", err)
	}
	var key DecisionKey
	var item Item
	_, err = pgx.ForEachRow(rows, []any{&key.User, &key.ID, &item.Value, &item.Version}, func() error { return fn(key, item) })
	if err != nil {
		return fmt.Errorf("read decisions: %w", err)
	}
	return nil
}

// DeleteDecisionsBefore implements Store.
func (p *Postgres) DeleteDecisionsBefore(ctx context.Context, beforeID string) (int, error) {
	if err := p.check(); err != nil {
		return 0, err
	}
	tag, err := p.pool.Exec(ctx, `DELETE FROM attune_decisions WHERE program = $1 AND id < $2`, p.program, beforeID)
	if err != nil {
		return 0, fmt.Errorf("delete expired decisions: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// Exclusive implements Store with a session advisory lock, tried, not
// waited for: a replica that finds the job running elsewhere skips it.
func (p *Postgres) Exclusive(ctx context.Context, name string, fn func(context.Context) error) (bool, error) {
	if err := p.check(); err != nil {
		return false, err
	}
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("lock %s: %w", name, err)
	}
	defer conn.Release()
	key := lockKey(p.program, name)
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&locked); err != nil {
		return false, fmt.Errorf("lock %s: %w", name, err)
	}
	if !locked {
		return false, nil
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key) }()
	return true, fn(ctx)
}

// Ping implements Store: a round trip to the database.
func (p *Postgres) Ping(ctx context.Context) error {
	if err := p.check(); err != nil {
		return err
	}
	return p.pool.Ping(ctx)
}

// Size is the bytes the users table occupies on disk (all programs in the
// database, with indexes and TOAST).
func (p *Postgres) Size() (int64, error) {
	var n int64
	err := p.pool.QueryRow(context.Background(), `SELECT pg_total_relation_size('attune_users')`).Scan(&n)
	return n, err
}

// Close implements Store.
func (p *Postgres) Close() error {
	if p.closed.CompareAndSwap(false, true) {
		p.pool.Close()
	}
	return nil
}

// ConnStringFromDir reads a mounted Secret: the file connectionString (a
// postgres:// URL or key=value list) when present, else a key=value list
// built from the files host (required), port, user, password, dbname and
// sslmode.
func ConnStringFromDir(dir string) (string, error) {
	if b, err := os.ReadFile(filepath.Join(dir, config.PostgresConnectionStringKey)); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
		return "", fmt.Errorf("store.postgres: %s/%s is empty", dir, config.PostgresConnectionStringKey)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("store.postgres: %w", err)
	}
	var parts []string
	for _, name := range config.PostgresPartKeys {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("store.postgres: %w", err)
		}
		// Values are quoted: a password may hold spaces or quotes.
		value := strings.TrimRight(string(b), "\r\n")
		value = strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(value)
		parts = append(parts, name+"='"+value+"'")
	}
	if !slices.ContainsFunc(parts, func(p string) bool { return strings.HasPrefix(p, config.PostgresHostKey+"=") }) {
		return "", fmt.Errorf("store.postgres: the Secret mounted at %s has neither %q nor %q", dir, config.PostgresConnectionStringKey, config.PostgresHostKey)
	}
	return strings.Join(parts, " "), nil
}
