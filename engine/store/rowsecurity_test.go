package store

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/attune-io/attune/test/postgres"
)

// dbaSetup is what docs/scale-out.md tells the database administrator to
// run once the schema exists: a group role with the engines' privileges,
// and one login role per program, registered for it.
const dbaSetup = `
CREATE ROLE attune_engine NOLOGIN;
GRANT SELECT, INSERT, UPDATE, DELETE ON attune_users, attune_meta, attune_decisions, attune_data_keys TO attune_engine;
GRANT SELECT ON attune_schema_migrations, attune_program_roles TO attune_engine;
CREATE ROLE engine_calm LOGIN IN ROLE attune_engine;
CREATE ROLE engine_focus LOGIN IN ROLE attune_engine;
CREATE ROLE engine_unregistered LOGIN IN ROLE attune_engine;
INSERT INTO attune_program_roles (program, role) VALUES ('plaza/calm', 'engine_calm'), ('arcade/focus', 'engine_focus');`

// TestRowSecurityKeepsProgramsApart: with a role per program, the database
// itself keeps each program to its rows. A role cannot open another
// program's store, and SQL of its own (an engine taken over) can neither
// read, change nor add another program's rows, nor lift the policy.
func TestRowSecurityKeepsProgramsApart(t *testing.T) {
	ctx := context.Background()
	owner := postgres.Start(t).ConnString
	// The schema owner (here a superuser) migrates; it bypasses the policy.
	schema, err := OpenPostgres(ctx, owner, "plaza/calm")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = schema.Close() }()
	if schema.RowSecurity() {
		t.Error("the owner's store reports row-level security")
	}
	if _, err := schema.pool.Exec(ctx, dbaSetup); err != nil {
		t.Fatal(err)
	}
	as := func(role string) string { return strings.Replace(owner, "//attune@", "//"+role+"@", 1) }

	calm, err := OpenPostgres(ctx, as("engine_calm"), "plaza/calm")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = calm.Close() }()
	focus, err := OpenPostgres(ctx, as("engine_focus"), "arcade/focus")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = focus.Close() }()
	if !calm.RowSecurity() || !focus.RowSecurity() {
		t.Error("a per-program role's store does not report row-level security")
	}
	for s, user := range map[*Postgres]string{calm: "calm-user", focus: "focus-user"} {
		if err := s.Commit(ctx, Change{
			Users:     map[string]Write{user: {Value: []byte("state of " + user)}},
			Meta:      map[string]Write{"population": {Value: []byte("prior")}},
			Decisions: map[DecisionKey]Write{{User: user, ID: "d1"}: {Value: []byte("decision")}},
		}); err != nil {
			t.Fatal(err)
		}
	}

	// A role opens only its own program.
	for _, tc := range []struct{ role, program string }{{"engine_calm", "arcade/focus"}, {"engine_unregistered", "plaza/calm"}} {
		_, err := OpenPostgres(ctx, as(tc.role), tc.program)
		if err == nil || !strings.Contains(err.Error(), "not registered for program") {
			t.Errorf("%s opening %s: err = %v", tc.role, tc.program, err)
		}
	}

	// An engine that runs SQL of its own, as engine_calm.
	rogue, err := pgx.Connect(ctx, as("engine_calm"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rogue.Close(ctx) }()
	count := func(query string) int {
		t.Helper()
		var n int
		if err := rogue.QueryRow(ctx, query).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return n
	}
	if n := count(`SELECT count(*) FROM attune_users WHERE program = 'arcade/focus'`); n != 0 {
		t.Errorf("engine_calm reads %d of arcade/focus's users", n)
	}
	if n := count(`SELECT count(*) FROM attune_users`); n != 1 {
		t.Errorf("engine_calm sees %d users in all, want its own 1", n)
	}
	for _, table := range []string{"attune_meta", "attune_decisions"} {
		if n := count(`SELECT count(*) FROM ` + table + ` WHERE program <> 'plaza/calm'`); n != 0 {
			t.Errorf("engine_calm reads %d rows of other programs in %s", n, table)
		}
	}
	if n := count(`SELECT count(*) FROM attune_program_roles`); n != 1 {
		t.Errorf("engine_calm sees %d role registrations, want its own", n)
	}
	for _, stmt := range []string{
		`UPDATE attune_users SET value = 'overwritten' WHERE program = 'arcade/focus'`,
		`DELETE FROM attune_users WHERE program = 'arcade/focus'`,
		`DELETE FROM attune_decisions WHERE program = 'arcade/focus'`,
	} {
		tag, err := rogue.Exec(ctx, stmt)
		if err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
		if tag.RowsAffected() != 0 {
			t.Errorf("%s affected %d rows", stmt, tag.RowsAffected())
		}
	}
	for _, stmt := range []string{
		`INSERT INTO attune_users (program, key, value, version) VALUES ('arcade/focus', 'planted', 'x', 1)`,
		`UPDATE attune_users SET program = 'arcade/focus' WHERE program = 'plaza/calm'`,
		`INSERT INTO attune_program_roles (program, role) VALUES ('arcade/focus', 'engine_calm')`,
		`UPDATE attune_program_roles SET program = 'arcade/focus'`,
		`ALTER TABLE attune_users DISABLE ROW LEVEL SECURITY`,
		`DROP POLICY attune_program_isolation ON attune_users`,
		`SET row_security = off; SELECT count(*) FROM attune_users`,
	} {
		if _, err := rogue.Exec(ctx, stmt); err == nil {
			t.Errorf("engine_calm may run: %s", stmt)
		}
	}

	// Nothing of arcade/focus changed.
	got, err := focus.Users(ctx, []string{"focus-user"})
	if err != nil || string(got["focus-user"].Value) != "state of focus-user" || got["focus-user"].Version != 1 {
		t.Errorf("arcade/focus's user: %+v, %v", got, err)
	}
	if n, err := focus.CountUsers(ctx); err != nil || n != 1 {
		t.Errorf("arcade/focus counts %d users (%v), want 1", n, err)
	}
	// A role that may not migrate is told so when the schema is behind.
	if _, err := schema.pool.Exec(ctx, `DELETE FROM attune_schema_migrations WHERE version = 6`); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPostgres(ctx, as("engine_calm"), "plaza/calm"); err == nil || !strings.Contains(err.Error(), "schema owner") {
		t.Errorf("behind schema, per-program role: err = %v", err)
	}
}
