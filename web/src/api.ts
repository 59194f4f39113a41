// The engine API (docs/engine-api.md), as this client uses it.

import { authorization, type Launch } from "./launch.js";
import type { Consent, Decision, InterventionSample, PrivacyNotice, Scope, UserState } from "./types.js";

/** An answer other than 2xx: the engine's {"error", "field"} body. */
export class EngineError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field: string,
  ) {
    super(message);
  }
}

/** An Idempotency-Key: random hex (crypto.randomUUID needs a secure context, this does not). */
function idempotencyKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Engine {
  constructor(private readonly launch: Launch) {}

  private userPath(suffix = ""): string {
    return `/v1/users/${encodeURIComponent(this.launch.user)}${suffix}`;
  }

  private async send(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
    const init: RequestInit = {
      method,
      headers: { Authorization: authorization(), ...headers },
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      (init.headers as Record<string, string>)["Content-Type"] = "application/json";
    }
    const resp = await fetch(this.launch.engine + path, init);
    if (!resp.ok) {
      let message = resp.statusText;
      let field = "";
      try {
        const e = (await resp.json()) as { error?: string; field?: string };
        message = e.error ?? message;
        field = e.field ?? "";
      } catch {
        // not a JSON error body
      }
      throw new EngineError(resp.status, message, field);
    }
    return resp;
  }

  async privacy(): Promise<PrivacyNotice> {
    return (await this.send("GET", "/v1/privacy")).json();
  }

  /** The user's state, or null when the engine does not know the user. */
  async state(): Promise<UserState | null> {
    try {
      return await (await this.send("GET", this.userPath("/state"))).json();
    } catch (e) {
      if (e instanceof EngineError && e.status === 404 && e.field === "id") return null;
      throw e;
    }
  }

  /** Grants scopes under the notice version the user was shown: the engine replaces the granted set with this one. */
  async setConsent(scopes: Scope[], policyVersion: string): Promise<Consent> {
    return (await this.send("POST", this.userPath("/consent"), { scopes, policyVersion })).json();
  }

  /** Withdraws the given scopes. */
  async withdraw(scopes: Scope[]): Promise<Consent> {
    return (await this.send("DELETE", this.userPath("/consent"), { scopes })).json();
  }

  /** Asks whether to offer an intervention now. A lost answer is retried once with the same key. */
  async decide(context: string[]): Promise<Decision> {
    const key = idempotencyKey();
    const ask = async () => (await this.send("POST", this.userPath("/decisions"), { available: true, context }, { "Idempotency-Key": key })).json();
    try {
      return await ask();
    } catch (e) {
      if (e instanceof EngineError) throw e;
      return ask(); // a network error: the same key returns the same decision
    }
  }

  /** Reports what the user did with a decision. */
  async report(sample: InterventionSample): Promise<void> {
    await this.send("POST", "/v1/telemetry", [sample]);
  }

  /** The user's own export (GET /v1/users/{id}/export), as the engine documents it. */
  async export(): Promise<unknown> {
    return await (await this.send("GET", this.userPath("/export"))).json();
  }

  /** Erases everything the engine holds about the user. */
  async erase(): Promise<void> {
    await this.send("DELETE", this.userPath());
  }
}
