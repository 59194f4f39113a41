package service

import (
	"context"
	"fmt"
	"slices"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/telemetry"
)

// ConsentEvent is one entry of a user's consent ledger (engine/contract
// holds the wire type).
type ConsentEvent = contract.ConsentEvent

// consentScheme numbers what consented scopes mean. 1: questionnaires
// have the scope questionnaire. A record from before (0) consented when
// behaviour covered questionnaires, and keeps that meaning until the
// user's consent next changes (effectiveConsent).
const consentScheme = 1

// ConsentChange is a consent request as the ledger records it.
type ConsentChange struct {
	// Scopes are granted (Grant: replacing what was granted) or withdrawn
	// (Withdraw: every scope when empty).
	Scopes []telemetry.Scope
	// PolicyVersion is the privacy notice's version the user saw (Grant);
	// required when the program declares one.
	PolicyVersion string
	// Source names the client that asks, as it authenticated.
	Source string
}

// Grant records the scopes a user consents to, replacing the earlier ones,
// and appends the grant to the user's consent ledger in the same commit.
// The first grant creates the user.
func (s *Service) Grant(ctx context.Context, userID string, ch ConsentChange) (Consent, error) {
	cfg := s.Config()
	if err := checkPolicyVersion(cfg, ch.PolicyVersion); err != nil {
		return Consent{}, err
	}
	key := s.Pseudonym(userID)
	var out Consent
	err := s.update(ctx, []string{key}, func(t *userTxn) error {
		rec := cloneRecord(t.recs[key])
		now := s.now()
		scopes := normaliseScopes(ch.Scopes)
		rec.Consent = Consent{Scopes: scopes, At: now, PolicyVersion: ch.PolicyVersion}
		rec.ConsentScheme = consentScheme
		rec.Ledger = append(rec.Ledger, ConsentEvent{At: now, Action: contract.ConsentGrant, Scopes: scopes,
			InForce: slices.Clone(scopes), PolicyVersion: ch.PolicyVersion, Source: ch.Source})
		rec.LastSeen = now
		out = rec.Consent
		return t.commit(ctx, map[string]*Record{key: rec}, nil, 0)
	})
	return out, err
}

// Withdraw withdraws the given scopes (all when empty) and appends the
// withdrawal to the ledger. Data already stored stays until erased or
// expired; no new data of those scopes is accepted.
func (s *Service) Withdraw(ctx context.Context, userID string, ch ConsentChange) (Consent, error) {
	key := s.Pseudonym(userID)
	var out Consent
	err := s.update(ctx, []string{key}, func(t *userTxn) error {
		if t.recs[key] == nil {
			return ErrUnknownUser
		}
		rec := cloneRecord(t.recs[key])
		// A consent from before questionnaires had their own scope is made
		// explicit first, so that withdrawing questionnaire (or behaviour)
		// means what it says.
		rec.Consent = effectiveConsent(rec)
		rec.ConsentScheme = consentScheme
		withdrawn := normaliseScopes(ch.Scopes)
		if len(withdrawn) == 0 {
			withdrawn = slices.Clone(rec.Consent.Scopes)
		}
		rec.Consent.Scopes = slices.DeleteFunc(rec.Consent.Scopes, func(sc telemetry.Scope) bool { return slices.Contains(withdrawn, sc) })
		now := s.now()
		rec.Consent.At = now
		rec.Ledger = append(rec.Ledger, ConsentEvent{At: now, Action: contract.ConsentWithdraw, Scopes: withdrawn,
			InForce: slices.Clone(rec.Consent.Scopes), Source: ch.Source})
		out = rec.Consent
		return t.commit(ctx, map[string]*Record{key: rec}, nil, 0)
	})
	return out, err
}

// checkPolicyVersion checks a grant's policy version against the
// program's: required when the program declares one.
func checkPolicyVersion(cfg *config.Config, v string) error {
	if v == "" {
		if cfg.Consent.PolicyVersion != "" {
			return &RequestError{"policyVersion", fmt.Sprintf("is required: the program's privacy notice is version %q; send the version the user was shown", cfg.Consent.PolicyVersion)}
		}
		return nil
	}
	if err := config.ValidPolicyVersion(v); err != nil {
		return &RequestError{"policyVersion", err.Error()}
	}
	return nil
}

// consentCurrent reports whether a consent was given under a privacy
// notice the program accepts: any, unless it requires re-consent to its
// current version.
func consentCurrent(cfg *config.Config, c Consent) bool {
	return !cfg.Consent.RequireReconsent || c.PolicyVersion == cfg.Consent.PolicyVersion
}

// effectiveConsent is the record's consent as it applies now (a copy): a
// consent from before the questionnaire scope (ConsentScheme 0) that
// grants behaviour grants questionnaire too, as behaviour did then.
func effectiveConsent(rec *Record) Consent {
	c := rec.Consent
	c.Scopes = slices.Clone(c.Scopes)
	if rec.ConsentScheme == 0 && c.Allows(telemetry.ScopeBehaviour) && !c.Allows(telemetry.ScopeQuestionnaire) {
		c.Scopes = normaliseScopes(append(c.Scopes, telemetry.ScopeQuestionnaire))
	}
	return c
}
