// Wire types of the engine API (engine/contract and docs/engine-api.md),
// as far as this client reads them.

export type Scope = string; // behaviour, physiology, text, research (the engine lists them)

export interface Consent {
  scopes: Scope[];
  at: string;
  /** The privacy notice's version the scopes were granted under. */
  policyVersion?: string;
}

export interface EvidenceReport {
  source: string;
  samples: number;
  window?: string;
  observedAt: string;
  confidence: number;
}

export interface Dimension {
  value: number;
  confidence: number;
  known: boolean;
  evidence: EvidenceReport[] | null;
}

export interface Dose {
  strength: number;
  durationSeconds: number;
  intensity: number;
}

export interface Outcome {
  at: string;
  loss: number;
  change: number;
}

export interface Decision {
  id: string;
  at: string;
  available: boolean;
  context?: string[];
  action: string; // "none" or an intervention
  probability: number;
  candidate?: string;
  treatmentProbability: number;
  reason?: string; // unavailable, cooldown, daily_cap
  dose?: Dose;
  instructions: string;
  policyVersion: string;
  lossAtDecision?: number;
  outcomeDue: string;
  outcome?: Outcome;
  completed?: boolean;
  rating?: number;
}

export interface UserState {
  attention: Dimension;
  emotion: Dimension;
  resilience: Dimension;
  loss: number | null;
  lastDecision?: Decision;
  estimatedAt: string;
  emotionFromPhysiology: boolean;
  samples: number;
}

export interface ScopeNotice {
  scope: Scope;
  kinds: string[];
  prohibited?: boolean;
}

/** GET /v1/privacy: the facts the consent screen states. */
export interface PrivacyNotice {
  context: string;
  retention: string;
  retentionSeconds: number;
  emotionFromPhysiology: boolean;
  minCohortSize: number;
  /** The notice version the program declares (consent requests must name it). */
  policyVersion?: string;
  /** Consent under another version no longer counts. */
  requireReconsent?: boolean;
  scopes: ScopeNotice[];
}

export interface InterventionSample {
  user: string;
  kind: "intervention";
  at: string;
  intervention: string;
  completed: boolean;
  rating?: number;
  decision: string;
}

export const dimensions = ["attention", "emotion", "resilience"] as const;
export type DimensionName = (typeof dimensions)[number];
