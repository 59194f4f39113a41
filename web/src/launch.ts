// The launch parameters and the access token: the one module that knows
// where they come from. A world links to the client with
//
//   https://…/app/#engine=https://engine.example&user=player-1&token=…
//
// The fragment is never sent to a server, so the token stays out of
// request lines, access logs and Referer headers. It is read once, kept
// for this tab only (sessionStorage, so a reload works) and removed from
// the address bar. The token is a user token the world server minted for
// this user (POST /v1/users/{id}/tokens with its own client token;
// docs/engine-api.md): it expires (15 minutes by default), after which the
// world links the user here again with a fresh one.

export interface Launch {
  /** Base URL of the engine (default: the origin that serves the page). */
  engine: string;
  user: string;
  /** Decision context tags the world passes (docs/engine-api.md). */
  context: string[];
  /** For tests and demos: sessions last at most this many seconds. */
  sessionSeconds?: number;
}

const storageKey = "attune.launch";

interface Stored extends Launch {
  token: string;
}

let current: Stored | undefined;

export class LaunchError extends Error {}

/** Reads the launch parameters from the fragment, else from this tab's storage. */
export function readLaunch(): Launch {
  const fromFragment = parse(window.location.hash.replace(/^#/, ""));
  if (fromFragment) {
    current = fromFragment;
    try {
      sessionStorage.setItem(storageKey, JSON.stringify(fromFragment));
    } catch {
      // Storage may be disabled; the tab then works until it is reloaded.
    }
    history.replaceState(null, "", window.location.pathname + window.location.search);
  } else {
    const saved = sessionStorage.getItem(storageKey);
    if (saved) current = JSON.parse(saved) as Stored;
  }
  if (!current) throw new LaunchError("no launch parameters");
  const { token: _token, ...launch } = current;
  return launch;
}

function parse(fragment: string): Stored | undefined {
  if (!fragment) return undefined;
  const p = new URLSearchParams(fragment);
  const token = p.get("token");
  const user = p.get("user");
  if (!token || !user) return undefined;
  const engine = (p.get("engine") || window.location.origin).replace(/\/+$/, "");
  const context = (p.get("context") || "between_tasks").split(",").filter(Boolean);
  const stored: Stored = { engine, user, token, context };
  const seconds = Number(p.get("sessionSeconds"));
  if (Number.isFinite(seconds) && seconds > 0) stored.sessionSeconds = seconds;
  return stored;
}

/** The Authorization header value for the engine. */
export function authorization(): string {
  if (!current) throw new LaunchError("no launch parameters");
  return `Bearer ${current.token}`;
}
