package simulator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/telemetry"
)

// Driver lets a population live through real engines, over their HTTP API
// only (engine/client): each person consents on the engine that holds
// them, sends the telemetry their hidden state produces, asks for a
// decision at each natural break and answers it with an intervention
// sample. People who leave are erased. Time runs on Scale: each tick
// advances the population by the wall-clock time since the last one.
type Driver struct {
	Population *Population
	// Engines are base URLs (https://127.0.0.1:8080); people are spread
	// over them by ID.
	Engines []string
	Token   string // the engines' read-write token
	Scale   TimeScale
	HTTP    *http.Client
	// ClientOptions are added to every engine client: for HTTPS engines
	// the CA bundle and the Service name their certificate carries
	// (client.WithCABundle, client.WithServerName).
	ClientOptions []client.Option
	// NoPhysiology is for worlds that forbid physiological telemetry
	// (Workplace, Education): no RR intervals are sent.
	NoPhysiology bool
	// Concurrency bounds the requests in flight for decisions and state
	// reads (default 8).
	Concurrency int

	mu        sync.Mutex // guards the population and everything below
	clients   map[string]*client.Client
	homes     map[int]string // person ID → the engine that holds them
	last      time.Time
	strength  float64
	latest    TickReport
	estimates []EstimatePair
}

// TickReport says what one tick did.
type TickReport struct {
	// Elapsed is the simulated time since the start, Hour the hour of the
	// simulated day.
	Elapsed time.Duration
	Hour    float64
	// Strength is the program's strength the engines report, and
	// EngineLoss the cohort loss the first of them publishes (NaN when it
	// publishes none).
	Strength   float64
	EngineLoss float64
	// TrueLoss is the true mean loss of the people awake.
	TrueLoss         float64
	Users, Awake     int
	Samples          int
	Decisions        int
	Interventions    int
	Unavailable      int
	DecisionFailures int
}

func (d *Driver) init() {
	if d.clients == nil {
		d.clients = map[string]*client.Client{}
		d.homes = map[int]string{}
	}
	if d.HTTP == nil {
		d.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if d.Concurrency <= 0 {
		d.Concurrency = 8
	}
	if d.Scale.Speedup == 0 {
		d.Scale.Speedup = DefaultSpeedup
	}
}

// client is the engine client of one engine. It sends every request once:
// a tick that fails is the next tick's to make up.
func (d *Driver) client(engine string) (*client.Client, error) {
	if c, ok := d.clients[engine]; ok {
		return c, nil
	}
	opts := append([]client.Option{client.WithHTTPClient(d.HTTP), client.WithToken(d.Token), client.WithRetry(client.NoRetry)}, d.ClientOptions...)
	c, err := client.New(engine, opts...)
	if err != nil {
		return nil, err
	}
	d.clients[engine] = c
	return c, nil
}

// Latest is the report of the latest tick.
func (d *Driver) Latest() TickReport {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.latest
}

// Run ticks every interval until ctx ends, telling onTick (if not nil)
// of each tick.
func (d *Driver) Run(ctx context.Context, every time.Duration, onTick func(TickReport, error)) {
	for ctx.Err() == nil {
		r, err := d.Tick(ctx)
		if onTick != nil && ctx.Err() == nil {
			onTick(r, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(every):
		}
	}
}

// Tick advances the population by the wall-clock time since the last tick
// (none on the first), syncs who is present with the engines, sends each
// awake person's telemetry, and asks for the decisions of the natural
// breaks that came. Errors of single engines or requests are joined; what
// failed is made up later or lost, as a real client's would be.
func (d *Driver) Tick(ctx context.Context) (TickReport, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.init()
	p := d.Population
	now := time.Now()
	from := d.last
	var elapsed time.Duration
	if !from.IsZero() {
		elapsed = d.Scale.Simulated(now.Sub(from))
	}
	d.last = now
	p.Advance(elapsed)

	var errs []error
	if err := d.syncPeople(ctx); err != nil {
		errs = append(errs, err)
	}
	engineLoss := math.NaN()
	if cohort, err := d.readCohort(ctx); err == nil {
		d.strength = cohort.Strength
		if cohort.Published && cohort.Loss != nil {
			engineLoss = *cohort.Loss
		}
	} else {
		errs = append(errs, err)
	}
	report := TickReport{Elapsed: p.Elapsed(), Hour: p.Hour(), Strength: d.strength, EngineLoss: engineLoss, Users: len(p.Agents)}
	batches := map[string][]telemetry.Sample{}
	h := p.Hour()
	for _, a := range p.Agents {
		engine, ok := d.homes[a.ID]
		if !ok || a.Asleep(h) {
			continue
		}
		report.Awake++
		batches[engine] = append(batches[engine], d.samples(a, from, now, elapsed)...)
	}
	sent, err := d.send(ctx, batches)
	report.Samples = sent
	if err != nil {
		errs = append(errs, err)
	}
	if err := d.decide(ctx, &report); err != nil {
		errs = append(errs, err)
	}
	report.TrueLoss = p.TrueCohortLoss()
	d.latest = report
	return report, errors.Join(errs...)
}

// syncPeople gives consent for newcomers and erases people who left.
func (d *Driver) syncPeople(ctx context.Context) error {
	present := map[int]bool{}
	var errs []error
	// The simulated people consent to everything they send, and to
	// research (the decision export the validation joins on).
	var scopes []telemetry.Scope
	for _, sc := range telemetry.Scopes {
		if sc != telemetry.ScopePhysiology || !d.NoPhysiology {
			scopes = append(scopes, sc)
		}
	}
	for _, a := range d.Population.Agents {
		present[a.ID] = true
		if _, ok := d.homes[a.ID]; ok {
			continue
		}
		engine := d.Engines[a.ID%len(d.Engines)]
		c, err := d.client(engine)
		if err != nil {
			return err
		}
		if _, err := c.SetConsent(ctx, UserID(a.ID), scopes...); err != nil {
			errs = append(errs, fmt.Errorf("consent: %w", redact(err)))
			continue
		}
		d.homes[a.ID] = engine
	}
	for id, engine := range d.homes {
		if present[id] {
			continue
		}
		c, err := d.client(engine)
		if err != nil {
			return err
		}
		if err := c.Erase(ctx, UserID(id)); err != nil && !errors.Is(err, client.ErrUnknownUser) {
			errs = append(errs, fmt.Errorf("erase: %w", redact(err)))
			continue
		}
		delete(d.homes, id)
	}
	return errors.Join(errs...)
}

// readCohort reads the cohort summary (and so the strength in force) of
// the first engine that answers.
func (d *Driver) readCohort(ctx context.Context) (contract.CohortSummary, error) {
	var errs []error
	for _, e := range d.Engines {
		c, err := d.client(e)
		if err != nil {
			return contract.CohortSummary{}, err
		}
		cohort, err := c.Cohort(ctx)
		if err == nil {
			return cohort, nil
		}
		errs = append(errs, fmt.Errorf("GET %s/v1/cohort: %w", e, err))
	}
	return contract.CohortSummary{}, errors.Join(errs...)
}

// Rates of the telemetry a person awake sends, per simulated time.
const (
	sartBlocksPerMinute = 0.4 // blocks of sartBlockTrials trials
	sartBlockTrials     = 20
	chatsPerMinute      = 0.5
	moodsPerHour        = 1.0
	brsPerHour          = 1.0 / 6
	maxRecording        = 3 * time.Minute // of RR intervals per tick
)

// samples renders one person's telemetry for a tick that covered elapsed
// simulated time and the wall-clock interval [from, to).
func (d *Driver) samples(a *Agent, from, to time.Time, elapsed time.Duration) []telemetry.Sample {
	r := a.rng
	id := UserID(a.ID)
	var out []telemetry.Sample
	minutes := elapsed.Minutes()
	if a.Wearable && !d.NoPhysiology && elapsed > 0 {
		span := min(elapsed, maxRecording).Seconds()
		if rr := a.heart.beats(r, span, a.State[Emotion]); len(rr) >= 3 {
			if len(rr) > telemetry.MaxRRPerSample {
				rr = rr[len(rr)-telemetry.MaxRRPerSample:]
			}
			var sum float64
			for _, v := range rr {
				sum += v
			}
			bpm := math.Round(60000 * float64(len(rr)) / sum)
			out = append(out, telemetry.Sample{User: id, Kind: telemetry.KindRR, At: to, RRms: rr, BPM: &bpm})
		}
	}
	for range min(3, poisson(r, sartBlocksPerMinute*minutes)) {
		out = append(out, telemetry.Sample{User: id, Kind: telemetry.KindSART, At: to, Trials: sartTrials(r, sartBlockTrials, a.State[Attention])})
	}
	for range min(4, poisson(r, chatsPerMinute*minutes)) {
		out = append(out, telemetry.Sample{User: id, Kind: telemetry.KindText, At: to, Text: chatLine(r, a.State[Emotion]), Source: "chat"})
	}
	var q telemetry.Sample
	if a.brsDue || poisson(r, brsPerHour*elapsed.Hours()) > 0 {
		q.BRS = brsAnswers(r, a.State[Resilience])
		a.brsDue = false
	}
	if poisson(r, moodsPerHour*elapsed.Hours()) > 0 {
		mood := moodAnswer(r, a.State[Emotion])
		q.Mood = &mood
	}
	if q.BRS != nil || q.Mood != nil {
		q.User, q.Kind, q.At = id, telemetry.KindQuestionnaire, to
		out = append(out, q)
	}
	if a.Behaviour && !from.IsZero() {
		if events := behaviourEvents(r, from, to, a.State[Attention]); len(events) > 0 {
			out = append(out, telemetry.Sample{User: id, Kind: telemetry.KindBehaviour, At: to, Events: events})
		}
	}
	for _, rep := range a.reports {
		s := telemetry.Sample{User: id, Kind: telemetry.KindIntervention, At: to, Intervention: rep.intervention, Decision: rep.decision, Completed: &rep.completed}
		if rep.completed {
			rating := rep.rating
			s.Rating = &rating
		}
		out = append(out, s)
	}
	a.reports = nil
	return out
}

// send ingests each engine's batch (NDJSON, split to the engine's limits)
// and counts the samples committed.
func (d *Driver) send(ctx context.Context, batches map[string][]telemetry.Sample) (int, error) {
	var (
		mu   sync.Mutex
		sent int
		errs []error
		wg   sync.WaitGroup
	)
	for engine, samples := range batches {
		c, err := d.client(engine)
		if err != nil {
			return 0, err
		}
		wg.Go(func() {
			res, err := c.IngestStream(ctx, slices.Values(samples))
			mu.Lock()
			defer mu.Unlock()
			sent += res.Accepted
			if err != nil {
				errs = append(errs, fmt.Errorf("telemetry to %s: %w", engine, redact(err)))
			}
		})
	}
	wg.Wait()
	return sent, errors.Join(errs...)
}

// decide asks the engines for the decisions of the natural breaks that
// came, at most Concurrency at a time, and applies the answers in order.
func (d *Driver) decide(ctx context.Context, report *TickReport) error {
	points := d.Population.DecisionPoints()
	type answer struct {
		decision contract.Decision
		err      error
	}
	answers := make([]answer, len(points))
	sem := make(chan struct{}, d.Concurrency)
	var wg sync.WaitGroup
	for i, pt := range points {
		engine, ok := d.homes[pt.Agent.ID]
		if !ok {
			answers[i].err = errors.New("no consent yet")
			continue
		}
		c, err := d.client(engine)
		if err != nil {
			return err
		}
		available := pt.Available
		req := contract.DecisionRequest{Available: &available, Context: pt.Context}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			dec, _, err := c.Decide(ctx, UserID(pt.Agent.ID), req, "")
			answers[i] = answer{dec, err}
		})
	}
	wg.Wait()
	var errs []error
	for i, pt := range points {
		a := answers[i]
		if a.err != nil {
			report.DecisionFailures++
			if len(errs) < 3 {
				errs = append(errs, fmt.Errorf("decision: %w", redact(a.err)))
			}
			if errors.Is(a.err, client.ErrUnknownUser) {
				delete(d.homes, pt.Agent.ID) // consent again next tick
			}
			continue
		}
		report.Decisions++
		if !pt.Available {
			report.Unavailable++
		}
		if a.decision.Treated() {
			report.Interventions++
		}
		d.Population.Decided(pt.Agent, a.decision, d.strength)
	}
	if report.DecisionFailures > len(errs) {
		errs = append(errs, fmt.Errorf("%d decision requests failed in all", report.DecisionFailures))
	}
	return errors.Join(errs...)
}

// redact drops the request URL from a transport error: it names the
// person (the path holds their ID), and errors end up in logs.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}
