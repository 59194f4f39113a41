// What this client keeps on the device, per user: the consent the engine
// last confirmed (the API has no read of consent) and a history of state
// readings for the chart (the API has no history). Erasure clears both.

import type { Consent, UserState } from "./types.js";

/** One state reading: values and confidences, null where not known. */
export interface Reading {
  at: string;
  attention: number | null;
  emotion: number | null;
  resilience: number | null;
}

const keepDays = 14;
const minSpacingMs = 5 * 60 * 1000;
const maxReadings = 1000;

const consentKey = (user: string) => `attune.consent.${user}`;
const historyKey = (user: string) => `attune.history.${user}`;

function read<T>(key: string): T | null {
  try {
    const raw = localStorage.getItem(key);
    return raw ? (JSON.parse(raw) as T) : null;
  } catch {
    return null;
  }
}

export function savedConsent(user: string): Consent | null {
  return read<Consent>(consentKey(user));
}

export function saveConsent(user: string, c: Consent): void {
  localStorage.setItem(consentKey(user), JSON.stringify(c));
}

export function history(user: string): Reading[] {
  return read<Reading[]>(historyKey(user)) ?? [];
}

/**
 * Adds a reading of the state. Readings closer than five minutes replace
 * the previous one, so polling does not flood the device; readings older
 * than two weeks are dropped.
 */
export function record(user: string, state: UserState): Reading[] {
  const value = (d: { known: boolean; value: number }) => (d.known ? d.value : null);
  const reading: Reading = {
    at: state.estimatedAt,
    attention: value(state.attention),
    emotion: value(state.emotion),
    resilience: value(state.resilience),
  };
  const now = Date.parse(reading.at);
  let all = history(user).filter((r) => now - Date.parse(r.at) < keepDays * 86400_000);
  const last = all[all.length - 1];
  if (last && now - Date.parse(last.at) < minSpacingMs) all = all.slice(0, -1);
  all.push(reading);
  all = all.slice(-maxReadings);
  localStorage.setItem(historyKey(user), JSON.stringify(all));
  return all;
}

export function forget(user: string): void {
  localStorage.removeItem(consentKey(user));
  localStorage.removeItem(historyKey(user));
}
