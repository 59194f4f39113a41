package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"time"

	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/telemetry"
)

// SetConsent records the scopes user consents to, replacing the earlier
// ones (POST /v1/users/{id}/consent); the first consent creates the user.
// Safe to retry: it sets, it does not add.
func (c *Client) SetConsent(ctx context.Context, user string, scopes ...telemetry.Scope) (contract.Consent, error) {
	path, err := userPath(user, "/consent")
	if err != nil {
		return contract.Consent{}, err
	}
	body, err := jsonBody(contract.ConsentRequest{Scopes: scopes})
	if err != nil {
		return contract.Consent{}, err
	}
	var out contract.Consent
	_, err = c.call(ctx, &request{method: http.MethodPost, path: path, body: body, contentType: contract.ContentTypeJSON, safe: true, want: http.StatusOK}, &out)
	return out, err
}

// WithdrawConsent withdraws the given scopes, every scope when none is
// given (DELETE /v1/users/{id}/consent). What is stored stays until Erase
// or the retention period; no new data of those scopes is accepted.
func (c *Client) WithdrawConsent(ctx context.Context, user string, scopes ...telemetry.Scope) (contract.Consent, error) {
	path, err := userPath(user, "/consent")
	if err != nil {
		return contract.Consent{}, err
	}
	r := &request{method: http.MethodDelete, path: path, safe: true, want: http.StatusOK}
	if len(scopes) > 0 {
		if r.body, err = jsonBody(contract.ConsentRequest{Scopes: scopes}); err != nil {
			return contract.Consent{}, err
		}
		r.contentType = contract.ContentTypeJSON
	}
	var out contract.Consent
	_, err = c.call(ctx, r, &out)
	return out, err
}

// Ingest sends one batch of samples as a JSON array (POST /v1/telemetry).
// The engine accepts or rejects the batch whole, and a 200 means every
// sample is committed. A batch over the engine's limits
// (contract.MaxBatchSamples samples or contract.MaxBodyBytes encoded) is
// refused with ErrBatchTooLarge before anything is sent, so one call stays
// one atomic batch; IngestStream splits large batches instead.
//
// Every batch carries an Idempotency-Key (a random one), so Ingest retries
// it like any request that is safe to repeat (see the package comment): a
// retry of a batch the engine committed, whose answer was lost, is
// answered from the engine's record of that commit and stores nothing
// twice. To retry across a restart of the caller, keep the key and use
// IngestWithKey.
func (c *Client) Ingest(ctx context.Context, samples []telemetry.Sample) (contract.IngestResult, error) {
	res, _, err := c.IngestWithKey(ctx, samples, "")
	return res, err
}

// IngestWithKey is Ingest with the caller's Idempotency-Key ("" for a
// random one). The same key with the same samples within
// contract.IdempotencyWindow of the commit is answered with the first
// answer, and replayed says so; the same key with other samples is
// ErrIdempotencyMismatch.
func (c *Client) IngestWithKey(ctx context.Context, samples []telemetry.Sample, idempotencyKey string) (res contract.IngestResult, replayed bool, err error) {
	if len(samples) > contract.MaxBatchSamples {
		return contract.IngestResult{}, false, fmt.Errorf("%w: %d samples, at most %d in one request (IngestStream splits)", ErrBatchTooLarge, len(samples), contract.MaxBatchSamples)
	}
	body, err := jsonBody(samples)
	if err != nil {
		return contract.IngestResult{}, false, err
	}
	if len(body) > contract.MaxBodyBytes {
		return contract.IngestResult{}, false, fmt.Errorf("%w: the batch encodes to %d bytes, at most %d in one request (IngestStream splits)", ErrBatchTooLarge, len(body), contract.MaxBodyBytes)
	}
	return c.ingest(ctx, body, contract.ContentTypeJSON, idempotencyKey)
}

func (c *Client) ingest(ctx context.Context, body []byte, contentType, idempotencyKey string) (contract.IngestResult, bool, error) {
	if idempotencyKey == "" {
		idempotencyKey = rand.Text()
	}
	if len(idempotencyKey) > contract.MaxIdempotencyKeyBytes {
		return contract.IngestResult{}, false, fmt.Errorf("Idempotency-Key longer than %d bytes", contract.MaxIdempotencyKeyBytes)
	}
	var out contract.IngestResult
	header, err := c.call(ctx, &request{method: http.MethodPost, path: "/v1/telemetry", body: body, contentType: contentType,
		header: http.Header{contract.HeaderIdempotencyKey: {idempotencyKey}}, safe: true, want: http.StatusOK}, &out)
	if err != nil {
		return contract.IngestResult{}, false, err
	}
	return out, header.Get(contract.HeaderIdempotentReplayed) == "true", nil
}

// IngestStream sends samples as NDJSON (Content-Type application/x-ndjson),
// in as few requests as the engine's limits allow: each request carries at
// most contract.MaxBatchSamples samples and contract.MaxBodyBytes bytes,
// in the order the sequence yields them, one request after the other.
//
// Each request is one atomic batch with an Idempotency-Key of its own
// (retried like Ingest), the whole stream is not: when a request fails,
// IngestStream stops and returns the totals of the batches committed
// before it (their Accepted samples are the first ones of the sequence)
// with the failed batch's error (an *APIError other than
// ErrOutcomeUnknown: nothing of that batch was stored; otherwise its fate
// is unknown). Users in the totals counts a user once per batch. A sample
// that alone exceeds contract.MaxBodyBytes is ErrBatchTooLarge.
func (c *Client) IngestStream(ctx context.Context, samples iter.Seq[telemetry.Sample]) (contract.IngestResult, error) {
	total := contract.IngestResult{ByKind: map[string]int{}}
	var buf bytes.Buffer
	n, index := 0, 0 // samples in buf; samples read from the sequence
	flush := func() error {
		if n == 0 {
			return nil
		}
		res, _, err := c.ingest(ctx, buf.Bytes(), contract.ContentTypeNDJSON, "")
		if err != nil {
			return fmt.Errorf("telemetry batch of samples %d–%d: %w", index-n, index-1, err)
		}
		total.Accepted += res.Accepted
		total.Users += res.Users
		for k, v := range res.ByKind {
			total.ByKind[k] += v
		}
		buf.Reset()
		n = 0
		return nil
	}
	for s := range samples {
		line, err := json.Marshal(s)
		if err != nil {
			return total, fmt.Errorf("encode sample %d: %w", index, err)
		}
		line = append(line, '\n')
		if len(line) > contract.MaxBodyBytes {
			return total, fmt.Errorf("%w: sample %d alone encodes to %d bytes, at most %d in one request", ErrBatchTooLarge, index, len(line), contract.MaxBodyBytes)
		}
		if n == contract.MaxBatchSamples || buf.Len()+len(line) > contract.MaxBodyBytes {
			if err := flush(); err != nil {
				return total, err
			}
		}
		buf.Write(line)
		n++
		index++
	}
	return total, flush()
}

// Decide asks for a decision at a decision point of user (POST
// /v1/users/{id}/decisions). idempotencyKey ("" for a random one) makes
// the request safe to retry: a repeat with the same key returns the logged
// decision, and replayed reports that the engine answered from its log
// (Idempotent-Replayed). Pass the same key when retrying a decision
// yourself, e.g. after a restart; the engine remembers a user's last 32.
func (c *Client) Decide(ctx context.Context, user string, req contract.DecisionRequest, idempotencyKey string) (d contract.Decision, replayed bool, err error) {
	path, err := userPath(user, "/decisions")
	if err != nil {
		return contract.Decision{}, false, err
	}
	if idempotencyKey == "" {
		idempotencyKey = rand.Text()
	}
	if len(idempotencyKey) > contract.MaxIdempotencyKeyBytes {
		return contract.Decision{}, false, fmt.Errorf("Idempotency-Key longer than %d bytes", contract.MaxIdempotencyKeyBytes)
	}
	body, err := jsonBody(req)
	if err != nil {
		return contract.Decision{}, false, err
	}
	header, err := c.call(ctx, &request{
		method: http.MethodPost, path: path, body: body, contentType: contract.ContentTypeJSON,
		header: http.Header{contract.HeaderIdempotencyKey: {idempotencyKey}},
		safe:   true, want: http.StatusOK,
	}, &d)
	if err != nil {
		return contract.Decision{}, false, err
	}
	return d, header.Get(contract.HeaderIdempotentReplayed) == "true", nil
}

// State reads user's current state estimate (GET /v1/users/{id}/state).
// It changes nothing on the engine; an unknown user is ErrUnknownUser.
func (c *Client) State(ctx context.Context, user string) (contract.UserState, error) {
	path, err := userPath(user, "/state")
	if err != nil {
		return contract.UserState{}, err
	}
	var out contract.UserState
	_, err = c.call(ctx, &request{method: http.MethodGet, path: path, safe: true, want: http.StatusOK}, &out)
	return out, err
}

// Export reads everything the engine stores about user, decrypted (GET
// /v1/users/{id}/export): consent and consent ledger, state, evidence,
// policy state and decisions (contract.UserExport). It changes nothing on
// the engine; an unknown user is ErrUnknownUser.
func (c *Client) Export(ctx context.Context, user string) (contract.UserExport, error) {
	path, err := userPath(user, "/export")
	if err != nil {
		return contract.UserExport{}, err
	}
	var out contract.UserExport
	_, err = c.call(ctx, &request{method: http.MethodGet, path: path, safe: true, want: http.StatusOK}, &out)
	return out, err
}

// Erase deletes everything the engine holds about user, their decision
// log included (DELETE /v1/users/{id}). A user unknown to the engine is
// ErrUnknownUser, so a retried erasure whose first answer was lost ends in
// ErrUnknownUser: the user is gone either way.
func (c *Client) Erase(ctx context.Context, user string) error {
	path, err := userPath(user, "")
	if err != nil {
		return err
	}
	_, err = c.call(ctx, &request{method: http.MethodDelete, path: path, safe: true, want: http.StatusNoContent}, nil)
	return err
}

// Cohort reads the cohort summary (GET /v1/cohort; the read-only token
// suffices).
func (c *Client) Cohort(ctx context.Context) (contract.CohortSummary, error) {
	var out contract.CohortSummary
	_, err := c.call(ctx, &request{method: http.MethodGet, path: "/v1/cohort", safe: true, want: http.StatusOK}, &out)
	return out, err
}

// ExportDecisions streams the decision log (GET /v1/decisions, NDJSON):
// fn is called with each decision taken at or after since (everything when
// since is zero) of the users who grant the research scope, under their
// pseudonyms, in the engine's order. An error of fn stops the export and is
// returned. The request is retried only until the answer starts; an answer
// cut off midway (the engine aborts the stream when its store fails) is an
// error after the decisions already passed to fn, never a short success.
func (c *Client) ExportDecisions(ctx context.Context, since time.Time, fn func(contract.ExportedDecision) error) error {
	r := &request{method: http.MethodGet, path: "/v1/decisions", safe: true, want: http.StatusOK,
		header: http.Header{"Accept": {contract.ContentTypeNDJSON}}}
	if !since.IsZero() {
		r.query = url.Values{"since": {since.UTC().Format(time.RFC3339Nano)}}
	}
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	dec := json.NewDecoder(resp.Body)
	for n := 0; ; n++ {
		var d contract.ExportedDecision
		if err := dec.Decode(&d); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("decision export interrupted after %d decisions: %w", n, err)
		}
		if err := fn(d); err != nil {
			return err
		}
	}
}
