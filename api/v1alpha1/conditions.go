package v1alpha1

// Condition types. They are named constants so that controllers, tests and
// users' tooling agree on the spelling.
const (
	// ConditionReady is True when the object is fully reconciled and serving.
	ConditionReady = "Ready"
	// ConditionReconciled is True when every child object has been applied.
	ConditionReconciled = "Reconciled"
	// ConditionEngineAvailable is True when the engine Deployment has all of
	// its desired replicas available.
	ConditionEngineAvailable = "EngineAvailable"
	// ConditionDegraded is True, with a reason, when something is wrong that
	// the operator cannot repair by itself.
	ConditionDegraded = "Degraded"
	// ConditionSuspended is True while spec.suspend scales the engines to zero.
	ConditionSuspended = "Suspended"
	// ConditionLossObserved is True when the last cohort-loss measurement was
	// valid (closed loop).
	ConditionLossObserved = "LossObserved"
	// ConditionConverged is True when the tuner considers the strength settled.
	ConditionConverged = "Converged"
	// ConditionInterventionHarm reports whether an intervention the engines
	// offer measurably raises the loss. It is:
	//   - True, reason HarmDetected, when the 95% confidence interval of at
	//     least one entry of status.effects lies wholly above zero; the
	//     message names each such intervention with its estimate and
	//     interval.
	//   - False, reason NoHarmDetected, otherwise: no published effect's
	//     interval lies wholly above zero (an interval that spans zero is no
	//     evidence either way).
	//   - Absent until a measurement has published effects once: the
	//     Prometheus loss source, a program not in Auto mode, or engines
	//     whose decisions do not yet reach the world's minCohortSize leave
	//     it unset rather than claim "no harm" on no evidence. Once set it
	//     stays, False when the effects later go.
	// It is a finding about the program, for a person to act on (remove the
	// intervention from spec.interventions, lower strength.max); the
	// operator changes nothing because of it, and it does not feed Ready or
	// Degraded, which describe whether the engines are running as declared.
	// Each interval is a 95% interval looked at every measurement, so with
	// several interventions an occasional false alarm is expected:
	// watch it persist across measurements before acting.
	ConditionInterventionHarm = "InterventionHarm"
)

// Condition reasons.
const (
	ReasonReconciled     = "Reconciled"
	ReasonApplyFailed    = "ApplyFailed"
	ReasonWorldNotFound  = "WorldNotFound"
	ReasonWrongNamespace = "WrongNamespace"
	// ReasonWorldNotReady (MeditationProgram Ready and Reconciled False):
	// the program's world has not been reconciled yet, or waits for its
	// Secret access (SecretAccessPending); the program is reconciled again
	// when the world's set-up ends.
	ReasonWorldNotReady     = "WorldNotReady"
	ReasonSuspended         = "Suspended"
	ReasonNotSuspended      = "NotSuspended"
	ReasonAvailable         = "Available"
	ReasonProgressing       = "Progressing"
	ReasonUnavailable       = "Unavailable"
	ReasonAsExpected        = "AsExpected"
	ReasonNamespaceConflict = "NamespaceConflict"
	// ReasonSecretAccessPending (VirtualWorld Ready False): the operator
	// has just bound its Secret role in the world's namespace and the API
	// server does not yet authorize it; the world is reconciled again
	// every 250ms and its programs wait (WorldNotReady). After 30s the
	// wait becomes ApplyFailed, naming the ClusterRole and the verbs it
	// lacks.
	ReasonSecretAccessPending = "SecretAccessPending"
	ReasonMetricsUnavailable  = "MetricsUnavailable"
	ReasonCohortTooSmall      = "CohortTooSmall"
	// ReasonEngineCertificateUntrusted (LossObserved False): no engine
	// answered, and at least one presented a certificate that the world's
	// CA bundle does not verify for the program's Service name.
	ReasonEngineCertificateUntrusted = "EngineCertificateUntrusted"
	// ReasonCertificatePending (EngineAvailable False): the engines'
	// serving certificate is not issued yet (cert-manager mode) or
	// cannot be (cert-manager not installed, CA Secret invalid).
	ReasonCertificatePending = "CertificatePending"
	ReasonStale              = "Stale"
	ReasonObserved           = "Observed"
	ReasonTuningDisabled     = "TuningDisabled"
	ReasonSearching          = "Searching"
	ReasonConverged          = "Converged"
	ReasonUnschedulable      = "Unschedulable"
	ReasonQuotaExceeded      = "QuotaExceeded"
	ReasonReplicaFailure     = "ReplicaFailure"
	// ReasonStrengthPending (LossObserved False): the measurement is
	// valid, but not every engine it counts has run the strength in force
	// for spec.tuning.settle (engines report what they run in GET
	// /v1/cohort), so the loss is not credited to that strength and the
	// strength is held. A replica still on another configuration three
	// intervals after the strength was put in force is named (pod name).
	ReasonStrengthPending = "StrengthPending"
	// ReasonStoreSecretInvalid: the PostgreSQL store's Secret is missing or
	// holds neither connectionString nor host.
	ReasonStoreSecretInvalid = "StoreSecretInvalid"
	// ReasonHarmDetected (InterventionHarm True): some intervention's effect
	// interval lies wholly above zero.
	ReasonHarmDetected = "HarmDetected"
	// ReasonNoHarmDetected (InterventionHarm False): no intervention's
	// effect interval lies wholly above zero.
	ReasonNoHarmDetected = "NoHarmDetected"
)

// Event reasons beyond the condition reasons above.
const (
	// EventReasonEffectDetected: an intervention's effect interval has just
	// come to exclude zero (Normal when it lowers the loss, Warning when it
	// raises it). Emitted once per such change, not every measurement.
	EventReasonEffectDetected = "EffectDetected"
)
