package service

import (
	"fmt"
	"sync"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
)

// The operator's push of the tuned strength (PUT /v1/admin/strength).
//
// The ConfigMap reaches a pod's file only after the kubelet's sync period
// and cache TTL (about 60–90 s), as long as a tuning interval, so the
// operator also pushes the values it has just written to every ready
// engine. The push lives in memory only: the file stays the durable
// source (a restart reads it), and the pushed values yield to the file as
// soon as the file holds them too, or when contract.StrengthPushHold has
// passed without it (a push no ConfigMap followed, or a file that moved
// on past it). Until then a file that still holds an older strength does
// not undo the push: the kubelet delivers a ConfigMap late, not a newer
// one early, so a file that differs from a fresh push is the older one.

// pushHold is contract.StrengthPushHold (a variable so that a test can
// see a hold end).
var pushHold = contract.StrengthPushHold

// pushState is the file's configuration and the strength pushed over it.
type pushState struct {
	mu sync.Mutex
	// file is the configuration file's (nil until the first reload: then
	// the configuration the service started with).
	file   *config.Config
	pushed *pushedStrength
}

// pushedStrength is a pushed strength and the instant (wall clock: the
// hold is about the kubelet's delay, whatever clock estimates run on)
// it yields to the file.
type pushedStrength struct {
	strength   config.Strength
	generation string
	until      time.Time
}

// PushStrength puts the tuned values st in force at once, ahead of the
// file that will bring them. generation must be st's (a mismatch is a
// FieldError on "generation"), and st must be valid in the configuration
// in force (a FieldError names the strength's field). applied is false
// when the engine already ran that generation; either way it answers the
// generation it runs and since when.
func (s *Service) PushStrength(st config.Strength, generation string) (contract.StrengthPushResult, error) {
	if want := st.Generation(); generation != want {
		return contract.StrengthPushResult{}, &config.FieldError{Field: "generation",
			Reason: fmt.Sprintf("is not the generation of the strength sent (%s): send the values and generation the ConfigMap was rendered with", want)}
	}
	s.push.mu.Lock()
	defer s.push.mu.Unlock()
	if s.push.file == nil {
		s.push.file = s.cfg.Load().cfg
	}
	candidate := *s.push.file
	candidate.Strength = st
	if err := candidate.Validate(); err != nil {
		return contract.StrengthPushResult{}, err
	}
	before := s.cfg.Load().generation
	p := &pushedStrength{strength: st, generation: generation, until: time.Now().Add(pushHold)}
	s.push.pushed = p
	s.applyPushLocked()
	if s.push.pushed == p {
		// Yield to the file when the hold ends, whether or not the file
		// changes by then.
		time.AfterFunc(pushHold, func() {
			s.push.mu.Lock()
			defer s.push.mu.Unlock()
			if s.push.pushed == p {
				s.push.pushed = nil
				s.applyPushLocked()
			}
		})
	}
	running := s.cfg.Load()
	return contract.StrengthPushResult{Generation: running.generation, RunningSince: running.since, Applied: running.generation != before}, nil
}

// applyPushLocked puts in force the file's configuration with the pushed
// strength over it while the push holds (push.mu held).
func (s *Service) applyPushLocked() {
	file := s.push.file
	if file == nil {
		file = s.cfg.Load().cfg
	}
	if p := s.push.pushed; p != nil {
		if file.Strength.Generation() == p.generation || !time.Now().Before(p.until) {
			s.push.pushed = nil // the file caught up, or the hold is over
		} else {
			withPush := *file
			withPush.Strength = p.strength
			file = &withPush
		}
	}
	s.run(file)
}
