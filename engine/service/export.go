package service

import (
	"context"
	"fmt"
	"slices"

	gojson "github.com/goccy/go-json"

	"github.com/attune-io/attune/engine/contract"
)

// UserExport is the answer to GET /v1/users/{id}/export (engine/contract
// holds the wire type).
type UserExport = contract.UserExport

// Export returns everything stored about a user, decrypted: their consent
// and consent ledger, their state estimate and the evidence it rests on,
// their policy state and every logged decision (GDPR Art. 15, 20). It
// reads only. An unknown user is ErrUnknownUser.
func (s *Service) Export(ctx context.Context, userID string) (UserExport, error) {
	key := s.Pseudonym(userID)
	rec, err := s.readRecord(ctx, key)
	if err != nil {
		return UserExport{}, err
	}
	state, err := s.State(ctx, userID)
	if err != nil {
		return UserExport{}, err
	}
	evidence, err := gojson.Marshal(rec.Model)
	if err != nil {
		return UserExport{}, fmt.Errorf("export: encode evidence: %w", err)
	}
	pol, err := gojson.Marshal(rec.Policy)
	if err != nil {
		return UserExport{}, fmt.Errorf("export: encode policy state: %w", err)
	}
	entries, err := s.store.UserDecisions(ctx, key)
	if err != nil {
		return UserExport{}, fmt.Errorf("export: read decisions: %w", err)
	}
	decisions := make([]Decision, 0, len(entries))
	for _, e := range entries {
		d, err := DecodeDecision(e.Value)
		if err != nil {
			return UserExport{}, fmt.Errorf("export: %w", err)
		}
		// An open decision's copy in the record is the newer (a linked
		// completion or rating lands there first).
		if i := slices.IndexFunc(rec.Open, func(o Decision) bool { return o.ID == d.ID }); i >= 0 {
			d = rec.Open[i]
		}
		decisions = append(decisions, d)
	}
	ledger := rec.Ledger
	if ledger == nil {
		ledger = []ConsentEvent{}
	}
	return UserExport{
		Format: contract.UserExportFormat, ExportedAt: s.now(), Program: s.Config().Program, Pseudonym: key,
		Consent: effectiveConsent(rec), ConsentLedger: ledger, LastSeen: rec.LastSeen, Samples: rec.Samples,
		State: state, Evidence: evidence, Policy: pol, Decisions: decisions,
	}, nil
}

// readRecord is a private copy of a user's record (ErrUnknownUser when
// absent).
func (s *Service) readRecord(ctx context.Context, key string) (*Record, error) {
	if s.shared() {
		items, err := s.store.Users(ctx, []string{key})
		if err != nil {
			return nil, err
		}
		item, ok := items[key]
		if !ok {
			return nil, ErrUnknownUser
		}
		return decodeRecord(item.Value)
	}
	entries, err := s.lockUsers(ctx, []string{key})
	if err != nil {
		return nil, err
	}
	defer s.unlockUsers(entries)
	if entries[key].rec == nil {
		return nil, ErrUnknownUser
	}
	return cloneRecord(entries[key].rec), nil
}
