package estimate

import (
	"math"
	"slices"
	"time"
)

// Population priors for personal baselines.
const (
	priorLnRMSSDMean = 3.6 // ln(≈37 ms), a typical resting adult RMSSD
	priorLnRMSSDSD   = 0.5
	priorHRMean      = 72.0
	priorHRSD        = 10.0
)

// Evidence windows.
const (
	rrBufferSpanMS      = 150_000.0 // RR kept for the HRV window (2.5 min)
	baselineUpdateEvery = time.Minute
	maxSARTTrials       = 100
	behaviourWindow     = 10 * time.Minute
	stressZ             = -1.0
	recoveredZ          = -0.5
)

// Default time constants of Timing (docs/engine-model.md).
const (
	// DefaultStateDecay is τ of attention and emotion evidence.
	DefaultStateDecay = 30 * time.Minute
	// DefaultTraitDecay is τ of resilience evidence.
	DefaultTraitDecay = 14 * 24 * time.Hour
	// DefaultStressRecovery is τ of the stress-recovery score e^(−t/τ).
	DefaultStressRecovery = 10 * time.Minute
)

// Timing holds the estimator's time constants; a zero field takes its
// default. A program sets them (spec.estimation) where its users live on
// another time scale, e.g. a simulated population in accelerated time.
type Timing struct {
	// StateDecay is the time constant τ over which attention and emotion
	// evidence loses confidence: c·e^(−age/τ).
	StateDecay time.Duration
	// TraitDecay is τ for resilience evidence.
	TraitDecay time.Duration
	// StressRecovery is τ of the recovery score e^(−t/τ) of a stress
	// episode that lasted t.
	StressRecovery time.Duration
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (t Timing) stateDecay() time.Duration { return orDefault(t.StateDecay, DefaultStateDecay) }
func (t Timing) traitDecay() time.Duration { return orDefault(t.TraitDecay, DefaultTraitDecay) }
func (t Timing) stressRecovery() time.Duration {
	return orDefault(t.StressRecovery, DefaultStressRecovery)
}

// Evidence is one source's latest contribution to one dimension.
type Evidence struct {
	Value      float64   `json:"v"`
	Confidence float64   `json:"c"` // at time At, before decay
	At         time.Time `json:"t"`
	Samples    int       `json:"n"`
}

func (e Evidence) known() bool { return e.Samples > 0 }

// decayed returns the confidence after the evidence has aged to now.
func (e Evidence) decayed(now time.Time, tau time.Duration) float64 {
	age := now.Sub(e.At)
	if age < 0 {
		age = 0
	}
	return e.Confidence * math.Exp(-age.Seconds()/tau.Seconds())
}

// ewma folds a new observation into evidence with weight alpha (the first
// observation is taken as is) and sets the confidence.
func (e *Evidence) ewma(value, alpha, confidence float64, at time.Time) {
	if e.Samples == 0 {
		e.Value = value
	} else {
		e.Value += alpha * (value - e.Value)
	}
	e.Samples++
	e.Confidence, e.At = confidence, at
}

// Model is everything the engine keeps about one user to estimate state.
// It is serialised into the store, so fields are short-named.
type Model struct {
	// RR holds the recent RR intervals in tenths of a millisecond (the
	// precision of any RR sensor): integers encode several times faster
	// than floats, and the record is rewritten on every batch.
	RR            RRBuffer        `json:"rr,omitempty"`
	RRAt          time.Time       `json:"rrAt"`
	LnRMSSD       Baseline        `json:"lnRmssd"`
	HR            Baseline        `json:"hr"`
	BaselineAt    time.Time       `json:"blAt"`
	LastHRV       *HRV            `json:"hrv,omitempty"`
	StressSince   *time.Time      `json:"stress,omitempty"`
	SART          SARTTrials      `json:"sart,omitempty"`
	Behaviour     BehaviourWindow `json:"beh"`
	EmotionPhysio Evidence        `json:"ePhys"`
	EmotionHR     Evidence        `json:"eHr"`
	EmotionText   Evidence        `json:"eText"`
	EmotionSelf   Evidence        `json:"eSelf"`
	AttentionSART Evidence        `json:"aSart"`
	AttentionBeh  Evidence        `json:"aBeh"`
	ResilienceBRS Evidence        `json:"rBrs"`
	Recovery      Evidence        `json:"rRec"`
}

// NewModel returns a model with population-prior baselines.
func NewModel() *Model {
	return &Model{LnRMSSD: NewBaseline(priorLnRMSSDMean, priorLnRMSSDSD), HR: NewBaseline(priorHRMean, priorHRSD)}
}

// AddRR adds RR intervals (ms) ending at time at. When the buffer spans at
// least 60 s of accepted beats, emotion from physiology is Φ(z) of ln(RMSSD)
// against the personal baseline; the baseline absorbs a new window at most
// once a minute; a stress episode (z < −1) and the time to recover
// (z > −0.5) feed resilience, scored with timing's StressRecovery.
func (m *Model) AddRR(at time.Time, rr []float64, timing Timing) {
	if at.After(m.RRAt) && !m.RRAt.IsZero() && at.Sub(m.RRAt) > 5*time.Minute {
		m.RR = m.RR[:0] // a gap: the old beats are not contiguous with the new
	}
	for _, v := range rr {
		m.RR = append(m.RR, uint16(math.Round(v*10)))
	}
	m.RRAt = at
	// Keep the most recent beats spanning rrBufferSpanMS.
	var span float64
	keepFrom := len(m.RR)
	for keepFrom > 0 && span < rrBufferSpanMS {
		keepFrom--
		span += float64(m.RR[keepFrom]) / 10
	}
	m.RR = append(m.RR[:0], m.RR[keepFrom:]...)

	series := make([]float64, len(m.RR))
	for i, tenths := range m.RR {
		series[i] = float64(tenths) / 10
	}
	h, err := ComputeHRV(series)
	if err != nil || h.RMSSD <= 0 {
		return
	}
	m.LastHRV = &h
	x := math.Log(h.RMSSD)
	z := m.LnRMSSD.Z(x)
	quality := float64(h.Beats) / float64(h.Beats+h.Dropped)
	confidence := 0.9 * math.Min(1, h.WindowMS/120_000) * quality
	m.EmotionPhysio.ewma(NormalCDF(z), 0.5, confidence, at)
	if m.BaselineAt.IsZero() || at.Sub(m.BaselineAt) >= baselineUpdateEvery {
		m.LnRMSSD.Update(x)
		m.BaselineAt = at
	}
	m.trackStress(at, z, timing.stressRecovery())
}

func (m *Model) trackStress(at time.Time, z float64, recovery time.Duration) {
	switch {
	case z < stressZ && m.StressSince == nil:
		t := at
		m.StressSince = &t
	case z > recoveredZ && m.StressSince != nil:
		lasted := at.Sub(*m.StressSince)
		m.Recovery.ewma(math.Exp(-lasted.Seconds()/recovery.Seconds()), 0.5, 0.5, at)
		m.StressSince = nil
	}
}

// AddHeartRate adds a heart-rate reading (bpm). Without RR intervals it is
// weak evidence: a rate above the personal baseline lowers emotional calm,
// e = 1 − Φ(z), with confidence 0.3.
func (m *Model) AddHeartRate(at time.Time, bpm float64) {
	z := m.HR.Z(bpm)
	m.EmotionHR.ewma(1-NormalCDF(z), 0.3, 0.3, at)
	m.HR.Update(bpm)
}

// AddTextEmotion adds a text emotion score in [0,1] (VADER compound mapped
// by (c+1)/2, or the model server's). Confidence grows with the number of
// messages: 0.8·(1 − e^(−n/3)).
func (m *Model) AddTextEmotion(at time.Time, score float64) {
	n := float64(m.EmotionText.Samples + 1)
	m.EmotionText.ewma(clamp01(score), 0.3, 0.8*(1-math.Exp(-n/3)), at)
}

// ArousalPenalty is how much a fully aroused text lowers emotional calm
// below its valence: e = (v + 1)/2 − ArousalPenalty·max(0, a). Anger and
// fear are further from calm than sadness of the same valence, and only a
// classifier's circumplex place tells them apart.
const ArousalPenalty = 0.15

// AddTextAffect adds a scored text: valence v and, when a classifier
// answered (hasArousal), arousal a, both in [-1, 1], with the answer's
// confidence in [0, 1] from its class distribution. Without arousal (VADER,
// the Custom single-valence model) it is AddTextEmotion((v + 1)/2). With
// it, high arousal lowers calm (ArousalPenalty) and the confidence
// 0.8·(1 − e^(−n/3)) is scaled by 0.5 + 0.5·confidence, so a top-1-only
// answer counts for less than a sharp distribution.
func (m *Model) AddTextAffect(at time.Time, valence, arousal float64, hasArousal bool, confidence float64) {
	score := (valence + 1) / 2
	if !hasArousal {
		m.AddTextEmotion(at, score)
		return
	}
	score -= ArousalPenalty * math.Max(0, arousal)
	n := float64(m.EmotionText.Samples + 1)
	m.EmotionText.ewma(clamp01(score), 0.3, 0.8*(1-math.Exp(-n/3))*(0.5+0.5*clamp01(confidence)), at)
}

// AddMood adds a self-reported mood on 1–5, mapped to (mood − 1)/4.
func (m *Model) AddMood(at time.Time, mood int) {
	m.EmotionSelf.ewma(float64(mood-1)/4, 0.5, 0.7, at)
}

// AddBRS adds Brief Resilience Scale answers.
func (m *Model) AddBRS(at time.Time, items []int) error {
	_, r, err := ScoreBRS(items)
	if err != nil {
		return err
	}
	m.ResilienceBRS.ewma(r, 0.5, 0.8, at)
	return nil
}

// AddSART adds SART trials and rescores the last 100.
func (m *Model) AddSART(at time.Time, trials []SARTTrial) {
	for _, t := range trials {
		t.RTms = roundRT(t.RTms)
		m.SART = append(m.SART, t)
	}
	if n := len(m.SART); n > maxSARTTrials {
		m.SART = append(m.SART[:0], m.SART[n-maxSARTTrials:]...)
	}
	s, err := ScoreSART(m.SART)
	if err != nil {
		return
	}
	m.AttentionSART.Value = s.Attention
	m.AttentionSART.Samples = s.Trials
	m.AttentionSART.Confidence = math.Min(0.9, float64(s.Trials)/50)
	m.AttentionSART.At = at
}

// AddBehaviour adds interaction events (in time order) and rescores the last
// ten minutes.
func (m *Model) AddBehaviour(events []BehaviourEvent) {
	if len(events) == 0 {
		return
	}
	m.Behaviour.Add(events)
	s, n, err := m.Behaviour.Score()
	if err != nil {
		return
	}
	m.AttentionBeh.Value = s.Attention
	m.AttentionBeh.Samples = n
	m.AttentionBeh.Confidence = 0.6 * math.Min(1, s.WindowMinutes/5) // weaker than a task
	m.AttentionBeh.At = time.UnixMilli(m.Behaviour.Last).UTC()
}

// Dimension is the estimate of one state dimension.
type Dimension struct {
	Value      float64          `json:"value"`
	Confidence float64          `json:"confidence"`
	Known      bool             `json:"known"`
	Evidence   []EvidenceReport `json:"evidence"`
}

// EvidenceReport says what an estimate rests on.
type EvidenceReport struct {
	Source     string    `json:"source"`
	Samples    int       `json:"samples"`
	Window     string    `json:"window,omitempty"`
	ObservedAt time.Time `json:"observedAt"`
	Confidence float64   `json:"confidence"`
}

// State is the estimated user state.
type State struct {
	Attention  Dimension `json:"attention"`
	Emotion    Dimension `json:"emotion"`
	Resilience Dimension `json:"resilience"`
}

type source struct {
	name   string
	ev     Evidence
	tau    time.Duration
	window string
}

// Estimate fuses the sources of each dimension at time now:
//
//	value = Σ cᵢ(t)·vᵢ / Σ cᵢ(t),  confidence = 1 − Π (1 − cᵢ(t)),
//	cᵢ(t) = cᵢ·exp(−age/τ)
//
// so missing evidence lowers confidence without dropping the value, with
// τ from timing. allowPhysiology is false where emotion inference from
// biometric data is prohibited: physiological sources then do not count
// toward emotion.
func (m *Model) Estimate(now time.Time, allowPhysiology bool, timing Timing) State {
	stateDecay, traitDecay := timing.stateDecay(), timing.traitDecay()
	hrvWindow := ""
	if m.LastHRV != nil {
		hrvWindow = (time.Duration(m.LastHRV.WindowMS) * time.Millisecond).Round(time.Second).String()
	}
	emotion := []source{{"text", m.EmotionText, stateDecay, ""}, {"self-report", m.EmotionSelf, stateDecay, ""}}
	if allowPhysiology {
		emotion = append(emotion, source{"rr-intervals", m.EmotionPhysio, stateDecay, hrvWindow}, source{"heart-rate", m.EmotionHR, stateDecay, ""})
	}
	resilience := []source{{"brs", m.ResilienceBRS, traitDecay, ""}}
	if allowPhysiology {
		resilience = append(resilience, source{"stress-recovery", m.Recovery, traitDecay, ""})
	}
	return State{
		Attention: fuse(now, []source{
			{"sart", m.AttentionSART, stateDecay, ""},
			{"behaviour", m.AttentionBeh, stateDecay, behaviourWindow.String()},
		}),
		Emotion:    fuse(now, emotion),
		Resilience: fuse(now, resilience),
	}
}

func fuse(now time.Time, sources []source) Dimension {
	var d Dimension
	var weighted, total float64
	miss := 1.0
	var latest *Evidence
	for i := range sources {
		s := &sources[i]
		if !s.ev.known() {
			continue
		}
		c := s.ev.decayed(now, s.tau)
		weighted += c * s.ev.Value
		total += c
		miss *= 1 - c
		if latest == nil || s.ev.At.After(latest.At) {
			latest = &s.ev
		}
		d.Evidence = append(d.Evidence, EvidenceReport{Source: s.name, Samples: s.ev.Samples, Window: s.window, ObservedAt: s.ev.At, Confidence: c})
	}
	if latest == nil {
		return d
	}
	d.Known = true
	if total > 1e-12 {
		d.Value = weighted / total
	} else {
		d.Value = latest.Value // all evidence has aged out: keep the last value
	}
	d.Confidence = 1 - miss
	return d
}

// Clone returns a deep copy.
func (m *Model) Clone() *Model {
	out := *m
	out.RR = slices.Clone(m.RR)
	out.SART = slices.Clone(m.SART)
	out.Behaviour.Buckets = slices.Clone(m.Behaviour.Buckets)
	if m.LastHRV != nil {
		h := *m.LastHRV
		out.LastHRV = &h
	}
	if m.StressSince != nil {
		t := *m.StressSince
		out.StressSince = &t
	}
	return &out
}
