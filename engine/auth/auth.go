// Package auth holds who may call the engine and for what: the scopes of
// the API, the client tokens the operator mounts (one file naming each
// client, the SHA-256 of its token and its scopes) and the short-lived
// user tokens (JWT, HS256) that a client with the ingest or decide scope
// mints for one user.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/attune-io/attune/engine/strictjson"
)

// Scope is one use of the API a token may hold.
type Scope string

// Scopes of the API (docs/engine-api.md maps each route to one).
const (
	// ScopeIngest: POST /v1/telemetry, and minting user tokens.
	ScopeIngest Scope = "ingest"
	// ScopeDecide: POST /v1/users/{id}/decisions, and minting user tokens.
	ScopeDecide Scope = "decide"
	// ScopeReadState: GET /v1/users/{id}/state.
	ScopeReadState Scope = "read-state"
	// ScopeConsent: POST and DELETE /v1/users/{id}/consent.
	ScopeConsent Scope = "consent"
	// ScopeErase: DELETE /v1/users/{id}.
	ScopeErase Scope = "erase"
	// ScopeExport: GET /v1/users/{id}/export.
	ScopeExport Scope = "export"
	// ScopeCohort: GET /v1/cohort (k-anonymous aggregates).
	ScopeCohort Scope = "cohort"
	// ScopeMetrics: GET /metrics.
	ScopeMetrics Scope = "metrics"
	// ScopeResearch: GET /v1/decisions (the pseudonymous decision log).
	ScopeResearch Scope = "research"
)

// AllScopes are every scope, in the order the docs list them.
var AllScopes = []Scope{ScopeIngest, ScopeDecide, ScopeReadState, ScopeConsent, ScopeErase, ScopeExport, ScopeCohort, ScopeMetrics, ScopeResearch}

// ScopeBackup: GET /v1/admin/backup, a copy of the whole embedded store
// (every user's ciphertext and wrapped data key). Only the backup token
// (backupTokenFile, the operator's Secret <program>-engine-backup-token,
// held by the platform team) holds it: it is not in AllScopes, so no
// world client can be granted it, and the read-write token, which world
// apps use, does not hold it either.
const ScopeBackup Scope = "backup"

// ScopeTune: PUT /v1/admin/strength, the operator's push of the tuned
// strength (the configuration file stays the durable source). Like
// backup it is not in AllScopes, so spec.access.clients cannot grant it:
// only the operator's built-in tuning client holds it, in the clients
// file the operator writes, with its token in a Secret of its own.
const ScopeTune Scope = "tune"

// BuiltInScopes are the scopes only the operator's built-in clients of
// the clients file may hold (ParseClients accepts them beside AllScopes).
var BuiltInScopes = []Scope{ScopeTune}

// TuneScopes are the scopes of the operator's tuning client: the push
// and nothing else (not the cohort or metrics it reads with another
// token).
var TuneScopes = []Scope{ScopeTune}

// ReadWriteScopes are the scopes of the read-write token (tokenFile).
var ReadWriteScopes = AllScopes

// BackupScopes are the scopes of the backup token (backupTokenFile):
// the backup and nothing else.
var BackupScopes = []Scope{ScopeBackup}

// ReadOnlyScopes are the scopes of the read-only token (readOnlyTokenFile).
var ReadOnlyScopes = []Scope{ScopeCohort, ScopeMetrics}

// UserScopes are the scopes a user token holds, each confined to its own
// user: state, decisions, consent, its own samples and its export. Erasure
// stays with the world's clients (it is not undoable from a stolen phone).
var UserScopes = []Scope{ScopeIngest, ScopeDecide, ScopeReadState, ScopeConsent, ScopeExport}

// MintScopes are the scopes that allow minting user tokens (any one).
var MintScopes = []Scope{ScopeIngest, ScopeDecide}

// Principal is an authenticated caller.
type Principal struct {
	// Name is the client's name ("read-write", "read-only", a client of
	// the clients file, or "user" for a user token): what metrics, limits
	// and the consent ledger count it as. Never a user ID.
	Name string
	// Scopes the caller holds.
	Scopes []Scope
	// User is the user a user token is confined to; empty for clients.
	User string
}

// Has reports whether p holds scope.
func (p Principal) Has(scope Scope) bool { return slices.Contains(p.Scopes, scope) }

// Client is one entry of the clients file.
type Client struct {
	// Name names the client (a DNS label: it appears in the consent
	// ledger and is the unit of the per-client request limit).
	Name string `json:"name"`
	// TokenSHA256 is the hex SHA-256 of the client's bearer token; the
	// engine never holds the token itself.
	TokenSHA256 string `json:"tokenSHA256"`
	// PreviousTokenSHA256, when set, is the hash of the token this one
	// replaced, accepted too during a rotation's grace period (the
	// operator drops it when the grace period ends).
	PreviousTokenSHA256 string `json:"previousTokenSHA256,omitempty"`
	// PreviousTokenExpiresAt, when set (RFC 3339), ends the grace period
	// in the engine itself: from then on the previous token is refused
	// even before the operator rewrites the file and the kubelet syncs
	// it. Unset: the previous token is accepted until it leaves the file.
	PreviousTokenExpiresAt *time.Time `json:"previousTokenExpiresAt,omitempty"`
	// Scopes the client holds.
	Scopes []Scope `json:"scopes"`
}

// ClientsFile is the clients file (clientTokensFile in the configuration).
type ClientsFile struct {
	Clients []Client `json:"clients"`
}

// ParseClients reads a clients file strictly: every name unique, every
// hash 64 hex digits, every scope known; errors name the field.
func ParseClients(data []byte) ([]Client, error) {
	var f ClientsFile
	if err := strictjson.Decode(data, &f); err != nil {
		return nil, fmt.Errorf("clients file: %w", err)
	}
	seen := map[string]bool{}
	for i, c := range f.Clients {
		field := fmt.Sprintf("clients[%d]", i)
		if c.Name == "" || len(c.Name) > 63 || strings.Trim(c.Name, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			return nil, fmt.Errorf("%s.name: must be a DNS label (a-z, 0-9, -; at most 63), got %q", field, c.Name)
		}
		if c.Name == "user" || c.Name == "read-write" || c.Name == "read-only" {
			return nil, fmt.Errorf("%s.name: %q is reserved", field, c.Name)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("%s.name: %q is listed twice", field, c.Name)
		}
		seen[c.Name] = true
		if b, err := hex.DecodeString(c.TokenSHA256); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%s.tokenSHA256: must be 64 hex digits (the SHA-256 of the token)", field)
		}
		if b, err := hex.DecodeString(c.PreviousTokenSHA256); c.PreviousTokenSHA256 != "" && (err != nil || len(b) != sha256.Size) {
			return nil, fmt.Errorf("%s.previousTokenSHA256: must be 64 hex digits (the SHA-256 of the token) or absent", field)
		}
		if c.PreviousTokenExpiresAt != nil && c.PreviousTokenSHA256 == "" {
			return nil, fmt.Errorf("%s.previousTokenExpiresAt: set without previousTokenSHA256", field)
		}
		if len(c.Scopes) == 0 {
			return nil, fmt.Errorf("%s.scopes: at least one scope is required; known scopes: %v", field, AllScopes)
		}
		for j, s := range c.Scopes {
			if !slices.Contains(AllScopes, s) && !slices.Contains(BuiltInScopes, s) {
				return nil, fmt.Errorf("%s.scopes[%d]: unknown scope %q; known scopes: %v", field, j, s, AllScopes)
			}
		}
	}
	return f.Clients, nil
}

// HashToken is the SHA-256 of a token, as the clients file lists it.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Tokens are the client tokens the engine accepts.
type Tokens struct {
	// ReadWrite is the legacy token with every scope but backup (tokenFile).
	ReadWrite string
	// Backup is the token with only the backup scope (backupTokenFile).
	Backup string
	// ReadOnly is the legacy token with ReadOnlyScopes (readOnlyTokenFile).
	ReadOnly string
	// Clients are the named clients (clientTokensFile).
	Clients []Client
	// Users verifies user tokens and mints them (userTokenKeyFile); nil:
	// user tokens are off.
	Users *UserTokens
	// Now is the clock previousTokenExpiresAt is checked against; nil:
	// time.Now.
	Now func() time.Time
}

// Authenticate finds the client whose token this is. Every candidate is
// compared, in constant time over hashes of equal length, so neither the
// match nor its position shows in the timing.
func (t *Tokens) Authenticate(token string) (Principal, bool) {
	presented := sha256.Sum256([]byte(token))
	var found *Principal
	check := func(want [sha256.Size]byte, p Principal) {
		if subtle.ConstantTimeCompare(presented[:], want[:]) == 1 && found == nil {
			found = &p
		}
	}
	if t.ReadWrite != "" {
		check(sha256.Sum256([]byte(t.ReadWrite)), Principal{Name: "read-write", Scopes: ReadWriteScopes})
	}
	if t.ReadOnly != "" {
		check(sha256.Sum256([]byte(t.ReadOnly)), Principal{Name: "read-only", Scopes: ReadOnlyScopes})
	}
	if t.Backup != "" {
		check(sha256.Sum256([]byte(t.Backup)), Principal{Name: "backup", Scopes: BackupScopes})
	}
	now := time.Now
	if t.Now != nil {
		now = t.Now
	}
	for _, c := range t.Clients {
		hashes := []string{c.TokenSHA256, c.PreviousTokenSHA256}
		if c.PreviousTokenExpiresAt != nil && !now().Before(*c.PreviousTokenExpiresAt) {
			// The grace period is over: compare against the current
			// hash only (the position of the skipped one is public: the
			// file says when it expires).
			hashes = hashes[:1]
		}
		for _, h := range hashes {
			var want [sha256.Size]byte
			if b, err := hex.DecodeString(h); err == nil && len(b) == sha256.Size {
				copy(want[:], b)
				check(want, Principal{Name: c.Name, Scopes: c.Scopes})
			}
		}
	}
	if found == nil {
		return Principal{}, false
	}
	return *found, true
}
