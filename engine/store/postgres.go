package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attune-io/attune/engine/config"
)

// Postgres is the shared backend: every replica of a program reads and
// writes the same rows, so a user's state is one wherever their requests
// land. Rows are keyed by program, so several programs may share a database
// without seeing each other's users.
//
// A deleted row's bytes stay in the table's files as a dead tuple until
// vacuumed, and vacuuming frees the space without overwriting it. The
// wrapped data keys (Sealed) therefore live in a small table of their own
// that is rewritten whole (VACUUM FULL) CompactDelay after erasures, at
// most once per CompactDelay, by one replica at a time; the users' rows
// and decisions are ciphertext whose key is then gone.
type Postgres struct {
	pool          *pgxpool.Pool
	program       string
	rowSecurity   bool
	closed        atomic.Bool
	erased        chan struct{}
	stopCompactor chan struct{}
	compactorDone chan struct{}
}

// migrations are applied in order of version (index + 1), each once,
// recorded in attune_schema_migrations. Never edit one that has shipped;
// append. An empty entry is a version reserved by a change not yet here:
// it is skipped and not recorded, and applied by the engine that brings
// it, even after later versions (each version is applied when it is not
// recorded, not only above the highest recorded one), so migrations must
// not depend on a reserved one.
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
	// 4: row-level security. A program's rows are visible and writable
	// only to the database roles registered for it in
	// attune_program_roles (each role sees only its own registrations),
	// so that per-program roles are kept apart by the database itself,
	// not only by the engines' WHERE program = $1. Table owners and
	// superusers bypass it (a single-role setup works as before).
	// Every table keyed by program gets the policy attune_program_isolation
	// (migration 6 for the data keys, which may come after this one).
	`CREATE TABLE attune_program_roles (
		program text PRIMARY KEY,
		role    name NOT NULL);
	ALTER TABLE attune_program_roles ENABLE ROW LEVEL SECURITY;
	CREATE POLICY attune_own_programs ON attune_program_roles FOR SELECT USING (role = current_user);
	DO $$
	DECLARE t text;
	BEGIN
		FOREACH t IN ARRAY ARRAY['attune_users', 'attune_meta', 'attune_decisions', 'attune_data_keys'] LOOP
			IF to_regclass(t) IS NOT NULL THEN
				EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
				EXECUTE format('CREATE POLICY attune_program_isolation ON %I
					USING (program IN (SELECT program FROM attune_program_roles))
					WITH CHECK (program IN (SELECT program FROM attune_program_roles))', t);
			END IF;
		END LOOP;
	END $$`,
	// 5: users' wrapped data keys (Sealed): written when a user is
	// created, deleted first when the user is erased, and otherwise only
	// rewritten when the key-encryption key rotates. A table of its own,
	// small, so that it can be rewritten whole (VACUUM FULL) after
	// erasures: its dead tuples must not keep erased users' keys.
	`CREATE TABLE attune_data_keys (
		program text NOT NULL,
		key     text NOT NULL,
		value   bytea NOT NULL,
		version bigint NOT NULL,
		PRIMARY KEY (program, key))`,
	// 6: row-level security on the data keys, where migration 4 found
	// no such table yet (4 and 5 may be applied in either order).
	`DO $$
	BEGIN
		IF to_regclass('attune_data_keys') IS NOT NULL AND NOT EXISTS (
			SELECT 1 FROM pg_policies WHERE schemaname = current_schema() AND tablename = 'attune_data_keys' AND policyname = 'attune_program_isolation') THEN
			ALTER TABLE attune_data_keys ENABLE ROW LEVEL SECURITY;
			CREATE POLICY attune_program_isolation ON attune_data_keys
				USING (program IN (SELECT program FROM attune_program_roles))
				WITH CHECK (program IN (SELECT program FROM attune_program_roles));
		END IF;
	END $$`,
	// 7: committed ingest batches by ID (an Idempotency-Key's digest),
	// swept by age; under row-level security like every program's table
	// when migration 4 is there.
	`CREATE TABLE attune_batches (
		program text NOT NULL,
		id      text NOT NULL,
		value   bytea NOT NULL,
		created timestamptz NOT NULL,
		PRIMARY KEY (program, id));
	CREATE INDEX attune_batches_by_created ON attune_batches (program, created);
	DO $$
	BEGIN
		IF to_regclass('attune_program_roles') IS NOT NULL THEN
			ALTER TABLE attune_batches ENABLE ROW LEVEL SECURITY;
			CREATE POLICY attune_program_isolation ON attune_batches
				USING (program IN (SELECT program FROM attune_program_roles))
				WITH CHECK (program IN (SELECT program FROM attune_program_roles));
		END IF;
	END $$`,
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
	var version int
	if err := pool.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		pool.Close()
		return nil, fmt.Errorf("read the PostgreSQL server's version: %w", err)
	}
	if err := supportedPostgres(version); err != nil {
		pool.Close()
		return nil, err
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	confined, err := checkRowSecurity(ctx, pool, program)
	if err != nil {
		pool.Close()
		return nil, err
	}
	p := &Postgres{pool: pool, program: program, rowSecurity: confined, erased: make(chan struct{}, 1), stopCompactor: make(chan struct{}), compactorDone: make(chan struct{})}
	// A replica killed between an erasure and its compaction left the
	// wrapped data key in a dead tuple: every start compacts once, as if
	// it had just erased.
	p.erased <- struct{}{}
	go p.compactor()
	return p, nil
}

// MinPostgresVersion is the oldest PostgreSQL server the store runs on
// (server_version_num): 13, for pg_current_xact_id and pg_xact_status,
// with which a COMMIT whose answer was lost is looked up
// (docs/operations.md, "PostgreSQL requirements").
const MinPostgresVersion = 130000

// supportedPostgres refuses a server older than MinPostgresVersion.
func supportedPostgres(versionNum int) error {
	if versionNum < MinPostgresVersion {
		minor := versionNum % 10000
		if versionNum < 100000 { // 9.6.24 is 90624
			minor = versionNum / 100 % 100
		}
		return fmt.Errorf("PostgreSQL %d.%d is too old: the store needs PostgreSQL 13 or later (pg_current_xact_id and pg_xact_status)", versionNum/10000, minor)
	}
	return nil
}

// compactor rewrites the data-key table CompactDelay after an erasure,
// then waits at least CompactDelay before the next.
func (p *Postgres) compactor() {
	defer close(p.compactorDone)
	for {
		select {
		case <-p.stopCompactor:
			return
		case <-p.erased:
		}
		select {
		case <-p.stopCompactor:
			return
		case <-time.After(CompactDelay):
		}
		select {
		case <-p.erased:
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		// A failure leaves dead tuples to the next erasure's compaction
		// (and autovacuum); the data they hold is ciphertext.
		_ = p.Compact(ctx)
		cancel()
	}
}

// Compact rewrites the data-key table (VACUUM FULL: a new file, the old
// one removed), so that no dead tuple keeps an erased user's wrapped data
// key. It holds the table's exclusive lock for the rewrite, a few
// milliseconds per thousand users, during which writes that create or
// check a data key wait. One replica at a time does it.
func (p *Postgres) Compact(ctx context.Context) error {
	_, err := p.Exclusive(ctx, "compact-data-keys", func(ctx context.Context) error {
		_, err := p.pool.Exec(ctx, `VACUUM (FULL) attune_data_keys`)
		return err
	})
	if err != nil {
		return fmt.Errorf("compact data keys: %w", err)
	}
	return nil
}

// checkRowSecurity reports whether the database confines this connection's
// role to registered programs (row-level security applies to it), and
// refuses a confined role that is not registered for program: every read
// would find nothing and every write would fail.
func checkRowSecurity(ctx context.Context, pool *pgxpool.Pool, program string) (bool, error) {
	var confined, registered bool
	var role string
	err := pool.QueryRow(ctx, `SELECT row_security_active('attune_users'), current_user,
		EXISTS (SELECT 1 FROM attune_program_roles WHERE program = $1)`, program).Scan(&confined, &role, &registered)
	if err != nil {
		return false, fmt.Errorf("check row-level security: %w", err)
	}
	if confined && !registered {
		return false, fmt.Errorf("the PostgreSQL role %q is confined by row-level security but not registered for program %q: "+
			"the database administrator adds the row (program, role) to attune_program_roles (docs/scale-out.md)", role, program)
	}
	return confined, nil
}

// RowSecurity reports whether the database itself keeps this store's role
// to its program's rows (a per-program role), rather than only the
// engine's queries (the schema owner's role bypasses row-level security).
func (p *Postgres) RowSecurity() bool { return p.rowSecurity }

// upToDate reports whether every migration is recorded, read without DDL:
// a per-program role may read the schema but not change it.
func upToDate(ctx context.Context, conn *pgxpool.Conn) (bool, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('attune_schema_migrations') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return false, err
	}
	rows, err := conn.Query(ctx, `SELECT version FROM attune_schema_migrations`)
	if err != nil {
		return false, fmt.Errorf("read schema version: %w", err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return false, fmt.Errorf("read schema version: %w", err)
	}
	for v, m := range migrations {
		if m != "" && !slices.Contains(applied, v+1) {
			return false, nil
		}
	}
	return len(applied) == len(slices.DeleteFunc(slices.Clone(migrations), func(m string) bool { return m == "" })), nil
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
	if done, err := upToDate(ctx, conn); err != nil || done {
		return err
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS attune_schema_migrations (
		version    integer PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "42501" {
			return errors.New("the database schema needs migrations that this engine's PostgreSQL role may not apply: " +
				"start one engine with the schema owner's role first (docs/scale-out.md)")
		}
		return fmt.Errorf("create attune_schema_migrations: %w", err)
	}
	rows, err := conn.Query(ctx, `SELECT version FROM attune_schema_migrations`)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	for _, v := range applied {
		if v > len(migrations) || migrations[v-1] == "" {
			return fmt.Errorf("the database schema has migration %d, newer than this engine's: run a newer engine", v)
		}
	}
	for v := 1; v <= len(migrations); v++ {
		if migrations[v-1] == "" || slices.Contains(applied, v) {
			continue
		}
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

// CompactAll rewrites the users', decisions' and data keys' tables
// (VACUUM FULL), so that no dead tuple keeps what was deleted: after
// MigratePlaintext, the plaintext. It holds each table's exclusive lock
// while it rewrites it.
func (p *Postgres) CompactAll(ctx context.Context) error {
	if _, err := p.pool.Exec(ctx, `VACUUM (FULL) attune_users, attune_decisions, attune_data_keys`); err != nil {
		return fmt.Errorf("compact: %w", err)
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
	return p.read(ctx, "attune_users", keys)
}

// read reads the given keys' rows of a table keyed like attune_users.
func (p *Postgres) read(ctx context.Context, table string, keys []string) (map[string]Item, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	rows, err := p.pool.Query(ctx, `SELECT key, value, version FROM `+table+` WHERE program = $1 AND key = ANY($2)`, p.program, keys)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, classify(err))
	}
	out := make(map[string]Item, len(keys))
	var key string
	var item Item
	_, err = pgx.ForEachRow(rows, []any{&key, &item.Value, &item.Version}, func() error {
		out[key] = Item{Value: item.Value, Version: item.Version}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, classify(err))
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
		return fmt.Errorf("read users: %w", classify(err))
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
		return 0, fmt.Errorf("count users: %w", classify(err))
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
		return Item{}, fmt.Errorf("read %s: %w", key, classify(err))
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
	// Data keys first, in key order: erasure destroys the key before the
	// rows it decrypts, and every writer locks key rows before decisions
	// and users, so none waits on another in the opposite order.
	for _, user := range slices.Sorted(slices.Values(c.EraseDataKeys)) {
		batch.Queue(`DELETE FROM attune_data_keys WHERE program = $1 AND key = $2`, p.program, user)
		exact = append(exact, false)
	}
	for _, key := range slices.Sorted(maps.Keys(c.DataKeys)) {
		query, args, ok := writeStatement("attune_data_keys", p.program, key, c.DataKeys[key], nil)
		if !ok {
			continue
		}
		batch.Queue(query, args...)
		exact = append(exact, true)
	}
	// A check whose user is written in this change rides on that write
	// (writeStatement); the others lock the key row until the commit, so
	// it cannot be erased between the check and the commit.
	for _, key := range slices.Sorted(maps.Keys(c.DataKeyChecks)) {
		if w, ok := c.Users[key]; ok && w.Value != nil {
			continue
		}
		batch.Queue(`SELECT 1 FROM attune_data_keys WHERE program = $1 AND key = $2 AND value = $3 FOR SHARE`, p.program, key, c.DataKeyChecks[key])
		exact = append(exact, true)
	}
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
			var check []byte
			if table.name == "attune_users" {
				check = c.DataKeyChecks[key]
			}
			query, args, ok := writeStatement(table.name, p.program, key, table.writes[key], check)
			if !ok {
				continue
			}
			batch.Queue(query, args...)
			exact = append(exact, true)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(c.Batches)) {
		batch.Queue(`INSERT INTO attune_batches (program, id, value, created) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
			p.program, id, c.Batches[id].Value, c.Batches[id].At)
		exact = append(exact, true)
	}
	if batch.Len() == 0 {
		return nil
	}
	err := p.commitBatch(ctx, batch, exact)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01" || pgErr.Code == "23505") {
		return ErrConflict // serialization failure, deadlock, or a racing insert
	}
	if err != nil && !errors.Is(err, ErrConflict) {
		return fmt.Errorf("commit: %w", err)
	}
	if err == nil && erases(c) {
		select {
		case p.erased <- struct{}{}:
		default: // a compaction is already due
		}
	}
	return err
}

// commitBatch runs the statements in one transaction. A failure before the
// COMMIT was sent stored nothing (ErrUnavailable when the database could
// not be reached). When the connection fails while the COMMIT is in
// flight, the database is asked for the transaction's status: committed
// is success, aborted stored nothing, and only when it cannot be asked
// (or the transaction is still finishing after a few seconds) is the
// outcome ErrOutcomeUnknown.
func (p *Postgres) commitBatch(ctx context.Context, batch *pgx.Batch, exact []bool) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return classify(err)
	}
	rollback := func(err error) error {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return classify(err)
	}
	// The transaction's ID comes first in the same round trip: it names
	// the transaction if the COMMIT's answer is lost.
	statements := batch.QueuedQueries
	withID := &pgx.Batch{}
	withID.Queue(`SELECT pg_current_xact_id()::text`)
	withID.QueuedQueries = append(withID.QueuedQueries, statements...)
	results := tx.SendBatch(ctx, withID)
	var xid string
	if err := results.QueryRow().Scan(&xid); err != nil {
		_ = results.Close()
		return rollback(err)
	}
	for i := range statements {
		tag, err := results.Exec()
		if err != nil {
			_ = results.Close()
			return rollback(err)
		}
		if exact[i] && tag.RowsAffected() != 1 {
			_ = results.Close()
			return rollback(ErrConflict)
		}
	}
	if err := results.Close(); err != nil {
		return rollback(err)
	}
	err = tx.Commit(ctx)
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pgErr), errors.Is(err, pgx.ErrTxCommitRollback):
		return err // the database refused the commit: nothing stored
	}
	// Even an error that pgx calls safe to retry may come after the
	// COMMIT was sent (a read that failed marks the connection closed, and
	// the next read says "conn closed"): only the database can tell.
	return p.resolveCommit(ctx, xid, err)
}

// resolveCommit asks the database whether transaction xid committed,
// after its COMMIT's answer was lost.
func (p *Postgres) resolveCommit(ctx context.Context, xid string, commitErr error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resolveTimeout)
	defer cancel()
	for {
		var status *string
		err := p.pool.QueryRow(ctx, `SELECT pg_xact_status($1::xid8)`, xid).Scan(&status)
		if err == nil && status != nil {
			switch *status {
			case "committed":
				return nil
			case "aborted":
				return fmt.Errorf("%w (the connection failed during the commit; the database says it was rolled back): %w", ErrUnavailable, commitErr)
			}
		}
		select { // "in progress", or the database cannot be asked yet
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrOutcomeUnknown, commitErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// resolveTimeout bounds how long a commit whose answer was lost waits to
// learn its outcome.
var resolveTimeout = 5 * time.Second

// classify marks err as ErrUnavailable when it says the database could
// not be reached or went away: a failed dial, a lost or refused
// connection, a server shutting down or out of connections.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrConflict) || errors.Is(err, ErrUnavailable) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // shutting down, cannot connect now
			pgErr.Code == "53300": // too many connections
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return err
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	if errors.As(err, &connectErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// writeStatement is the SQL for one write, conditional on the version read
// (it affects no row when that version no longer holds) and, when
// dataKey is not nil, on the key's data key holding exactly dataKey. ok
// is false for a write with nothing to do (deleting a key read as absent).
func writeStatement(table, program, key string, w Write, dataKey []byte) (query string, args []any, ok bool) {
	const keyHeld = ` AND EXISTS (SELECT 1 FROM attune_data_keys k WHERE k.program = $1 AND k.key = $2 AND k.value = $%d)`
	switch {
	case w.Value == nil && w.IfVersion == 0:
		return "", nil, false
	case w.Value == nil:
		return `DELETE FROM ` + table + ` WHERE program = $1 AND key = $2 AND version = $3`, []any{program, key, w.IfVersion}, true
	case w.IfVersion == 0 && dataKey != nil:
		return `INSERT INTO ` + table + ` (program, key, value, version) SELECT $1, $2, $3, 1 WHERE true` + fmt.Sprintf(keyHeld, 4) + ` ON CONFLICT DO NOTHING`,
			[]any{program, key, w.Value, dataKey}, true
	case w.IfVersion == 0:
		return `INSERT INTO ` + table + ` (program, key, value, version) VALUES ($1, $2, $3, 1) ON CONFLICT DO NOTHING`,
			[]any{program, key, w.Value}, true
	case dataKey != nil:
		return `UPDATE ` + table + ` SET value = $3, version = version + 1 WHERE program = $1 AND key = $2 AND version = $4` + fmt.Sprintf(keyHeld, 5),
			[]any{program, key, w.Value, w.IfVersion, dataKey}, true
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

// Batch implements Store.
func (p *Postgres) Batch(ctx context.Context, id string) (Batch, error) {
	if err := p.check(); err != nil {
		return Batch{}, err
	}
	var b Batch
	err := p.pool.QueryRow(ctx, `SELECT value, created FROM attune_batches WHERE program = $1 AND id = $2`, p.program, id).Scan(&b.Value, &b.At)
	if errors.Is(err, pgx.ErrNoRows) {
		return Batch{}, nil
	}
	if err != nil {
		return Batch{}, fmt.Errorf("read batch: %w", classify(err))
	}
	return b, nil
}

// DeleteBatchesBefore implements Store.
func (p *Postgres) DeleteBatchesBefore(ctx context.Context, t time.Time) (int, error) {
	if err := p.check(); err != nil {
		return 0, err
	}
	tag, err := p.pool.Exec(ctx, `DELETE FROM attune_batches WHERE program = $1 AND created < $2`, p.program, t)
	if err != nil {
		return 0, fmt.Errorf("delete expired batches: %w", classify(err))
	}
	return int(tag.RowsAffected()), nil
}

// DataKeys implements Backend.
func (p *Postgres) DataKeys(ctx context.Context, keys []string) (map[string]Item, error) {
	return p.read(ctx, "attune_data_keys", keys)
}

// EachDataKey implements Backend.
func (p *Postgres) EachDataKey(ctx context.Context, fn func(key string, item Item) error) error {
	if err := p.check(); err != nil {
		return err
	}
	rows, err := p.pool.Query(ctx, `SELECT key, value, version FROM attune_data_keys WHERE program = $1`, p.program)
	if err != nil {
		return fmt.Errorf("read data keys: %w", classify(err))
	}
	var key string
	var item Item
	_, err = pgx.ForEachRow(rows, []any{&key, &item.Value, &item.Version}, func() error { return fn(key, item) })
	if err != nil {
		return fmt.Errorf("read data keys: %w", classify(err))
	}
	return nil
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
		return Item{}, fmt.Errorf("read decision: %w", classify(err))
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
		return fmt.Errorf("read decisions: %w", classify(err))
	}
	var key DecisionKey
	var item Item
	_, err = pgx.ForEachRow(rows, []any{&key.User, &key.ID, &item.Value, &item.Version}, func() error { return fn(key, item) })
	if err != nil {
		return fmt.Errorf("read decisions: %w", classify(err))
	}
	return nil
}

// UserDecisions implements Store.
func (p *Postgres) UserDecisions(ctx context.Context, user string) ([]DecisionEntry, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	rows, err := p.pool.Query(ctx, `SELECT id, value, version FROM attune_decisions WHERE program = $1 AND user_key = $2 ORDER BY id`, p.program, user)
	if err != nil {
		return nil, fmt.Errorf("read decisions: %w", classify(err))
	}
	var out []DecisionEntry
	var e DecisionEntry
	_, err = pgx.ForEachRow(rows, []any{&e.ID, &e.Value, &e.Version}, func() error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read decisions: %w", classify(err))
	}
	return out, nil
}

// DeleteDecisionsBefore implements Store.
func (p *Postgres) DeleteDecisionsBefore(ctx context.Context, beforeID string) (int, error) {
	if err := p.check(); err != nil {
		return 0, err
	}
	tag, err := p.pool.Exec(ctx, `DELETE FROM attune_decisions WHERE program = $1 AND id < $2`, p.program, beforeID)
	if err != nil {
		return 0, fmt.Errorf("delete expired decisions: %w", classify(err))
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
		return false, fmt.Errorf("lock %s: %w", name, classify(err))
	}
	defer conn.Release()
	key := lockKey(p.program, name)
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&locked); err != nil {
		return false, fmt.Errorf("lock %s: %w", name, classify(err))
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
	return classify(p.pool.Ping(ctx))
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
		close(p.stopCompactor)
		<-p.compactorDone
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
