package service

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
)

// Errors of the store the API maps to status codes.
var (
	// ErrStoreUnavailable: the store could not be reached; nothing was
	// stored (503 with Retry-After).
	ErrStoreUnavailable = store.ErrUnavailable
	// ErrOutcomeUnknown: the store failed while a commit was in flight and
	// could not say afterwards whether it was stored (503 without
	// Retry-After, "outcome": "unknown").
	ErrOutcomeUnknown = store.ErrOutcomeUnknown
)

// IdempotencyWindow is how long the answer to a committed ingest batch
// with an Idempotency-Key is kept: a retry within it is answered from the
// record and stores nothing again, also after a restart. The sweep deletes
// older records (a retry later than that is a new batch).
const IdempotencyWindow = 24 * time.Hour

// BatchID identifies an ingest batch for its retries.
type BatchID struct {
	// Key is the client's Idempotency-Key ("" for a batch without one).
	Key string
	// Digest identifies the request's content (the API's SHA-256 of the
	// body); empty, it is computed from the samples. The same key with
	// another digest is ErrIdempotencyMismatch.
	Digest string
}

// pendingBatch is a batch with an ID on its way through Ingest.
type pendingBatch struct {
	// id is the stored ID: an HMAC of the key, so a client's key (which
	// may be anything printable) is not stored as it is.
	id       string
	digest   string
	replayed bool
}

// batchRecord is a committed batch's stored record.
type batchRecord struct {
	Digest string       `json:"r"`
	Result IngestResult `json:"a"`
}

func (s *Service) pendingBatch(id BatchID, samples []telemetry.Sample) (*pendingBatch, error) {
	if id.Key == "" {
		return nil, nil
	}
	digest := id.Digest
	if digest == "" {
		b, err := json.Marshal(samples)
		if err != nil {
			return nil, fmt.Errorf("digest the batch: %w", err)
		}
		sum := sha256.Sum256(b)
		digest = hex.EncodeToString(sum[:])
	}
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte("attune/ingest-batch\x00" + id.Key))
	return &pendingBatch{id: hex.EncodeToString(mac.Sum(nil)[:16]), digest: digest}, nil
}

// replayBatch reads the batch's record: found when it was committed
// (ErrIdempotencyMismatch when the key came with another request).
func (s *Service) replayBatch(ctx context.Context, b *pendingBatch) (IngestResult, bool, error) {
	stored, err := s.store.Batch(ctx, b.id)
	if err != nil {
		return IngestResult{}, false, fmt.Errorf("read the batch's record: %w", err)
	}
	if stored.Value == nil {
		return IngestResult{}, false, nil
	}
	var rec batchRecord
	if err := gojson.Unmarshal(stored.Value, &rec); err != nil {
		return IngestResult{}, false, fmt.Errorf("decode the batch's record: %w", err)
	}
	if rec.Digest != b.digest {
		return IngestResult{}, false, ErrIdempotencyMismatch
	}
	return rec.Result, true, nil
}

// record is the batch's record for its commit.
func (b *pendingBatch) record(now time.Time, result IngestResult) (map[string]store.Batch, error) {
	v, err := gojson.Marshal(batchRecord{Digest: b.digest, Result: result})
	if err != nil {
		return nil, fmt.Errorf("encode the batch's record: %w", err)
	}
	return map[string]store.Batch{b.id: {At: now, Value: v}}, nil
}
