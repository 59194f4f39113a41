// Package effects estimates the causal excursion effect of each
// intervention on the proximal outcome from the engine's decision log, by
// weighted and centred least squares (WCLS; Boruvka et al. 2018, JASA),
// with streaming sums so that the log never has to fit in memory.
//
// What it follows. The estimator is the marginal (f(H)=1) case of WCLS in
// Boruvka, Almirall, Witkiewitz & Murphy (2018), "Assessing time-varying
// causal effect moderation in mobile health", JASA 113(523):1112-1121, as
// implemented by wcls() in the MRTAnalysis R package (Qian et al.): each
// available decision is weighted by W = (p̃/P)^A ((1-p̃)/(1-P))^(1-A), the
// treatment is centred at the fixed reference probability p̃, and
// Y ≈ α + (A - p̃)β is fitted by weighted least squares with an
// intercept-only control g(H)=1. Centring and weighting make β̂ consistent
// for the average excursion effect over available decisions even though
// g(H)=1 is surely wrong and P varies with history; a richer g(H) would
// only cut variance. The variance is the user-clustered sandwich.
//
// Small-sample correction. Boruvka et al. and MRTAnalysis rescale each
// user's residuals by (I - H_uu)^-1 (Mancl & DeRouen 2001) and take the
// critical value from Hotelling's T² with n-p-q denominator degrees of
// freedom, which for one effect coefficient is Student's t with n-2
// degrees of freedom here (n users, p = q = 1). The hat block H_uu needs
// every one of the user's decision rows, which a streaming estimator does
// not keep, so we use the cluster-robust CR1 scaling n/(n-2) of the meat
// (Cameron, Gelbach & Miller 2008; Cameron & Miller 2015) with the same
// t(n-2) quantile. Both inflate the naive sandwich for few users and
// vanish as n grows; the coverage test in this package checks the result.
package effects

// Effect is the estimated causal excursion effect of one intervention
// against "none" on the proximal outcome: the change of the user's loss
// over the outcome window. Negative helps (the loss falls more than it
// would have without the intervention); an interval wholly above zero
// means the intervention raises the loss.
//
// It is what GET /v1/cohort publishes under "effects" and what the
// operator reads and combines; published only when UsersBoth reaches the
// world's minimum cohort size.
type Effect struct {
	// Intervention names the intervention, in the API's spelling.
	Intervention string `json:"intervention"`
	// Estimate is the WCLS estimate of the excursion effect.
	Estimate float64 `json:"estimate"`
	// StdErr is its cluster-robust (by user) standard error.
	StdErr float64 `json:"stdErr"`
	// Lower and Upper bound the 95% confidence interval.
	Lower float64 `json:"lower"`
	Upper float64 `json:"upper"`
	// Users is the number of distinct users whose decisions entered the
	// estimate; UsersBoth of them had both treated and control decisions.
	Users     int `json:"users"`
	UsersBoth int `json:"usersBoth"`
	// Decisions = Treated + Control: the settled, available decisions
	// that entered the estimate.
	Decisions int `json:"decisions"`
	Treated   int `json:"treated"`
	Control   int `json:"control"`
}
