package service

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/loss"
	"github.com/attune-io/attune/engine/store"
)

// Aggregates that cannot be differenced (docs/data-protection.md).
//
// The k-anonymity floor (privacy.minCohortSize) stops an aggregate over
// fewer than k users, but not the difference of two: a cohort loss over
// n users and the next over the same users but one, or after one user's
// new samples, gives away that user's contribution. So a published
// aggregate changes only when at least k users' contributions changed
// since the last publication: users who joined or left the cohort, or
// whose estimate rests on new samples. Until then every reader (the API,
// the metrics) gets the last published values, with observedAt the time
// they were observed. The difference of any two successive publications
// then mixes the changes of k users or more.
//
// The publication is stored (store meta), so that it holds across
// restarts and, on a shared store, every replica publishes the same.

// publicationKey is the store meta key of the last publication.
const publicationKey = "cohort-publication"

// publication is the last published cohort aggregate and the contributions
// it was computed from.
type publication struct {
	At   time.Time `json:"at"`
	Size int       `json:"size"`
	Loss float64   `json:"loss"`
	// Means are the dimension means; nil where no member knew one.
	Means [loss.Dims]*float64 `json:"means"`
	// Basis fingerprints the configuration the loss is computed under: a
	// change of it (target, weights, floor, time constants) publishes anew.
	Basis string `json:"basis"`
	// Members maps each member (an HMAC of their key, so the stored
	// publication names no one) to the samples their estimate rested on.
	Members map[string]int64 `json:"members"`
}

func (p *publication) aggregate() loss.Aggregate {
	agg := loss.Aggregate{Published: true, Size: p.Size, Loss: p.Loss}
	for i, m := range p.Means {
		agg.Means[i] = math.NaN()
		if m != nil {
			agg.Means[i] = *m
		}
	}
	return agg
}

// publicationCache holds, in replica scope, the last publication and its
// store version; on a shared store it is read from the store each time.
type publicationCache struct {
	mu      sync.Mutex
	loaded  bool
	last    *publication
	version int64
}

// publicationBasis fingerprints what the cohort loss means.
func publicationBasis(cfg *config.Config) string {
	b, _ := json.Marshal(struct {
		Target, Weights config.Vector
		Floor           int
		Retention       time.Duration
		Estimation      config.Estimation
		Physiology      bool
	}{cfg.Target, cfg.Weights, cfg.Privacy.MinCohortSize, cfg.Privacy.Retention.Duration, cfg.Estimation, !cfg.ProhibitsBiometricEmotion()})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// memberID is how a publication names a member.
func (s *Service) memberID(key string) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte("attune/cohort-member\x00" + key))
	return hex.EncodeToString(mac.Sum(nil)[:8])
}

// changedMembers counts the members that joined, left, or rest on other
// samples than in the last publication.
func changedMembers(last, current map[string]int64) int {
	n := 0
	for m, samples := range current {
		if was, ok := last[m]; !ok || was != samples {
			n++
		}
	}
	for m := range last {
		if _, ok := current[m]; !ok {
			n++
		}
	}
	return n
}

// published is the cohort aggregate to publish now and when it was
// observed: the current one when it is below the floor (nothing is
// published then), when nothing was published yet, when the basis
// changed, or when at least minCohortSize members changed; otherwise the
// last publication.
func (s *Service) published(ctx context.Context, cfg *config.Config, now time.Time) (loss.Aggregate, time.Time, error) {
	p, err := s.fullPass(ctx, cfg, now)
	if err != nil {
		return loss.Aggregate{}, now, err
	}
	return s.publish(ctx, cfg, now, p.agg, p.members)
}

// publish is published for the cohort agg of members, found by a pass.
func (s *Service) publish(ctx context.Context, cfg *config.Config, now time.Time, agg loss.Aggregate, members map[string]int64) (loss.Aggregate, time.Time, error) {
	if !agg.Published {
		return agg, now, nil
	}
	current := make(map[string]int64, len(members))
	for key, samples := range members {
		current[s.memberID(key)] = samples
	}
	basis := publicationBasis(cfg)
	c := &s.publication
	c.mu.Lock()
	defer c.mu.Unlock()
	for attempt := 0; ; attempt++ {
		last, version, err := s.lastPublication(ctx)
		if err != nil {
			return loss.Aggregate{}, time.Time{}, err
		}
		if last != nil && last.Basis == basis && changedMembers(last.Members, current) < cfg.Privacy.MinCohortSize {
			return last.aggregate(), last.At, nil
		}
		next := &publication{At: now, Size: agg.Size, Loss: agg.Loss, Basis: basis, Members: current}
		for i, m := range agg.Means {
			next.Means[i] = finite(m)
		}
		err = s.storePublication(ctx, next, version)
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			continue // another replica published meanwhile: weigh against theirs
		}
		if err != nil {
			return loss.Aggregate{}, time.Time{}, fmt.Errorf("store the cohort publication: %w", err)
		}
		return agg, now, nil
	}
}

// lastPublication reads the last publication (nil when none); the caller
// holds the cache's lock.
func (s *Service) lastPublication(ctx context.Context) (*publication, int64, error) {
	c := &s.publication
	if c.loaded && !s.shared() {
		return c.last, c.version, nil
	}
	item, err := s.store.Meta(ctx, publicationKey)
	if err != nil {
		return nil, 0, fmt.Errorf("read the cohort publication: %w", err)
	}
	var last *publication
	if item.Value != nil {
		last = &publication{}
		if err := gojson.Unmarshal(item.Value, last); err != nil {
			return nil, 0, fmt.Errorf("decode the cohort publication: %w", err)
		}
	}
	c.loaded, c.last, c.version = true, last, item.Version
	return last, item.Version, nil
}

// storePublication writes a publication over the one at version.
func (s *Service) storePublication(ctx context.Context, p *publication, version int64) error {
	b, err := gojson.Marshal(p)
	if err != nil {
		return err
	}
	if err := s.store.Commit(ctx, store.Change{Meta: map[string]store.Write{publicationKey: {Value: b, IfVersion: version}}}); err != nil {
		s.publication.loaded = false // read it again
		return err
	}
	s.publication.last, s.publication.version = p, version+1
	return nil
}
