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
)

// Condition reasons.
const (
	ReasonReconciled         = "Reconciled"
	ReasonApplyFailed        = "ApplyFailed"
	ReasonWorldNotFound      = "WorldNotFound"
	ReasonWrongNamespace     = "WrongNamespace"
	ReasonWorldNotReady      = "WorldNotReady"
	ReasonSuspended          = "Suspended"
	ReasonNotSuspended       = "NotSuspended"
	ReasonAvailable          = "Available"
	ReasonProgressing        = "Progressing"
	ReasonUnavailable        = "Unavailable"
	ReasonAsExpected         = "AsExpected"
	ReasonNamespaceConflict  = "NamespaceConflict"
	ReasonMetricsUnavailable = "MetricsUnavailable"
	ReasonCohortTooSmall     = "CohortTooSmall"
	ReasonStale              = "Stale"
	ReasonObserved           = "Observed"
	ReasonTuningDisabled     = "TuningDisabled"
	ReasonSearching          = "Searching"
	ReasonConverged          = "Converged"
	ReasonUnschedulable      = "Unschedulable"
	ReasonQuotaExceeded      = "QuotaExceeded"
	ReasonReplicaFailure     = "ReplicaFailure"
	// ReasonStoreSecretInvalid: the PostgreSQL store's Secret is missing or
	// holds neither connectionString nor host.
	ReasonStoreSecretInvalid = "StoreSecretInvalid"
)
