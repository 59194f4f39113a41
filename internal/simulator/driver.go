package simulator

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/telemetry"
)

// Driver makes the model's users talk to real engines over the engine's
// HTTP API: consent, RR intervals, SART trials, chat messages, BRS answers
// and intervention outcomes generated from each user's latent state, so the
// whole estimation path is exercised. It reads the strength in force from
// the engines, so the operator's tuning closes the loop.
type Driver struct {
	Model   *Model
	Engines []string // base URLs, e.g. http://127.0.0.1:8080
	Token   string   // the engines' read-write token
	// Intervention is reported as completed every few ticks.
	Intervention string
	HTTP         *http.Client
	Now          func() time.Time

	rng      *rand.Rand
	consents map[int]string            // model user ID → engine that holds the user
	clients  map[string]*client.Client // by engine base URL
	ticks    int
}

// TickReport says what one tick did.
type TickReport struct {
	Strength float64
	TrueLoss float64
	Users    int
	Samples  int
}

func (d *Driver) init() {
	if d.rng == nil {
		d.rng = rand.New(rand.NewPCG(d.Model.P.Seed, 0xd1)) // #nosec: simulation only
		d.consents = map[int]string{}
	}
	if d.HTTP == nil {
		d.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Intervention == "" {
		d.Intervention = "ResonanceBreathing"
	}
	if d.clients == nil {
		d.clients = map[string]*client.Client{}
	}
}

// client is the engine client of one engine's base URL. It sends every
// request once: a tick that fails is the caller's to repeat.
func (d *Driver) client(engine string) (*client.Client, error) {
	if c, ok := d.clients[engine]; ok {
		return c, nil
	}
	c, err := client.New(engine, client.WithHTTPClient(d.HTTP), client.WithToken(d.Token), client.WithRetry(client.NoRetry))
	if err != nil {
		return nil, err
	}
	d.clients[engine] = c
	return c, nil
}

func userID(id int) string { return fmt.Sprintf("sim-user-%06d", id) }

// Strength reads the strength in force from the first engine that answers.
func (d *Driver) Strength(ctx context.Context) (float64, error) {
	d.init()
	var lastErr error
	for _, e := range d.Engines {
		c, err := d.client(e)
		if err != nil {
			lastErr = err
			continue
		}
		cohort, err := c.Cohort(ctx)
		if err != nil {
			lastErr = fmt.Errorf("GET %s/v1/cohort: %w", e, err)
			continue
		}
		return cohort.Strength, nil
	}
	return 0, fmt.Errorf("no engine answered: %w", lastErr)
}

// Tick advances the population one interval under the engines' strength and
// sends the resulting telemetry.
func (d *Driver) Tick(ctx context.Context) (TickReport, error) {
	d.init()
	strength, err := d.Strength(ctx)
	if err != nil {
		return TickReport{}, err
	}
	d.Model.Interval(strength)
	d.ticks++
	if err := d.syncUsers(ctx); err != nil {
		return TickReport{}, err
	}
	batches := map[string][]telemetry.Sample{}
	for i := range d.Model.Users {
		u := &d.Model.Users[i]
		engine := d.consents[u.ID]
		batches[engine] = append(batches[engine], d.samples(u)...)
	}
	sent := 0
	for engine, samples := range batches {
		c, err := d.client(engine)
		if err != nil {
			return TickReport{}, err
		}
		for start := 0; start < len(samples); start += 500 {
			chunk := samples[start:min(start+500, len(samples))]
			if _, err := c.Ingest(ctx, chunk); err != nil {
				return TickReport{}, fmt.Errorf("telemetry: POST %s/v1/telemetry: %w", engine, err)
			}
			sent += len(chunk)
		}
	}
	return TickReport{Strength: strength, TrueLoss: d.Model.CohortLoss(), Users: len(d.Model.Users), Samples: sent}, nil
}

// syncUsers gives consent for newcomers and erases users who left (churn).
func (d *Driver) syncUsers(ctx context.Context) error {
	present := map[int]bool{}
	for i, u := range d.Model.Users {
		present[u.ID] = true
		if _, ok := d.consents[u.ID]; ok {
			continue
		}
		engine := d.Engines[i%len(d.Engines)]
		c, err := d.client(engine)
		if err != nil {
			return err
		}
		if _, err := c.SetConsent(ctx, userID(u.ID), telemetry.ScopeBehaviour, telemetry.ScopePhysiology, telemetry.ScopeText); err != nil {
			return fmt.Errorf("consent: %w", err)
		}
		d.consents[u.ID] = engine
	}
	for id, engine := range d.consents {
		if !present[id] {
			c, err := d.client(engine)
			if err != nil {
				return err
			}
			if err := c.Erase(ctx, userID(id)); err != nil {
				return fmt.Errorf("erase: %w", err)
			}
			delete(d.consents, id)
		}
	}
	return nil
}

var phrases = [3][]string{
	{"I feel stressed and anxious, everything is going wrong", "so tired and upset today", "this is awful, I can't focus"},
	{"okay day, a bit tired", "nothing special, just working", "it's fine I guess"},
	{"I feel calm and happy today", "that session was great, thank you", "feeling relaxed and focused, wonderful"},
}

// samples renders one user's telemetry for this tick from the latent state.
func (d *Driver) samples(u *User) []telemetry.Sample {
	at := d.Now().UTC()
	id := userID(u.ID)
	attention, emotion, resilience := u.State[0], u.State[1], u.State[2]

	// RR: alternating beats whose successive difference (≈ RMSSD) grows
	// with emotional calm.
	amplitude := 4 + 40*emotion
	rr := make([]float64, 90)
	for i := range rr {
		sign := 1.0
		if i%2 == 1 {
			sign = -1
		}
		rr[i] = math.Round(800 + sign*amplitude/2 + 3*d.rng.NormFloat64())
	}
	// SART: errors and reaction-time variability grow as attention falls.
	trials := make([]telemetry.Trial, 30)
	for i := range trials {
		digit := 1 + d.rng.IntN(9)
		var responded bool
		if digit == 3 {
			responded = d.rng.Float64() < 0.9*(1-attention)
		} else {
			responded = d.rng.Float64() >= 0.3*(1-attention)
		}
		rt := 0.0
		if responded {
			rt = math.Max(150, 400*(1+(0.05+0.3*(1-attention))*d.rng.NormFloat64()))
		}
		trials[i] = telemetry.Trial{Digit: digit, Responded: responded, RTms: math.Round(rt)}
	}
	mood := 1 + int(math.Round(4*emotion))
	brsScore := 1 + 4*resilience
	positive := int(math.Round(brsScore))
	reversed := int(math.Round(6 - brsScore))
	tone := min(2, int(emotion*3))
	out := []telemetry.Sample{
		{User: id, Kind: telemetry.KindRR, At: at, RRms: rr},
		{User: id, Kind: telemetry.KindSART, At: at, Trials: trials},
		{User: id, Kind: telemetry.KindText, At: at, Text: phrases[tone][d.rng.IntN(len(phrases[tone]))], Source: "chat"},
		{User: id, Kind: telemetry.KindQuestionnaire, At: at, BRS: []int{positive, reversed, positive, reversed, positive, reversed}, Mood: &mood},
	}
	if d.ticks%5 == 0 {
		completed, rating := true, 4
		out = append(out, telemetry.Sample{User: id, Kind: telemetry.KindIntervention, At: at, Intervention: d.Intervention, Completed: &completed, Rating: &rating})
	}
	return out
}
