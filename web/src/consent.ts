// The consent screen: each scope the engine knows, in plain words, granted
// or withdrawn one at a time.

import type { Engine } from "./api.js";
import { h, uid } from "./dom.js";
import { t } from "./i18n.js";
import type { Consent, PrivacyNotice, ScopeNotice } from "./types.js";

/**
 * The version of the privacy notice these texts state (both languages
 * translate the same version). Change it whenever a scope's text changes.
 * A program that declares its own version (consent.policyVersion, in GET
 * /v1/privacy) overrides it: that is the version the engine records.
 */
export const privacyNoticeVersion = "2026-12-01";

/** The notice version shown and sent with every grant. */
export function noticeVersion(notice: PrivacyNotice): string {
  return notice.policyVersion || privacyNoticeVersion;
}

export interface ConsentContext {
  engine: Engine;
  notice: PrivacyNotice;
  /** The consent the engine last confirmed; null when the user is unknown. */
  consent: Consent | null;
  known: boolean;
  onChange: (c: Consent, message: string) => void;
  onError: (e: unknown) => void;
  onContinue: () => void;
}

export function consentScreen(ctx: ConsentContext): HTMLElement {
  const m = t().consent;
  const version = noticeVersion(ctx.notice);
  const granted = new Set(ctx.consent?.scopes ?? []);
  // Consent given under an older notice: ask to confirm under this one.
  const outdated = ctx.consent && granted.size > 0 && ctx.consent.policyVersion !== version;
  const reconfirm = async () => {
    try {
      ctx.onChange(await ctx.engine.setConsent([...granted], version), m.confirmed(version));
    } catch (e) {
      ctx.onError(e);
    }
  };
  const status = ctx.consent
    ? granted.size > 0
      ? m.recorded(t().fmtTime(ctx.consent.at))
      : m.allWithdrawn
    : ctx.known
      ? ""
      : m.none;
  return h(
    "section",
    { class: "screen", "aria-labelledby": "screen-title" },
    h("h1", { id: "screen-title", tabindex: -1 }, m.title),
    h("p", {}, m.intro),
    h("p", { class: "meta" }, h("span", { "data-testid": "policy-version" }, m.policyVersion(version)), " · ", m.world(ctx.notice.context)),
    h("p", { class: "meta", "data-testid": "consent-status" }, status),
    outdated &&
      h(
        "div",
        { class: "note", "data-testid": "reconsent" },
        h("p", {}, m.outdated(ctx.consent?.policyVersion ?? "", version, ctx.notice.requireReconsent === true)),
        h("button", { type: "button", class: "primary", onclick: reconfirm }, m.confirm(version)),
      ),
    h("ul", { class: "scopes" }, ...ctx.notice.scopes.map((s) => h("li", {}, scopeCard(ctx, s, granted.has(s.scope))))),
    h(
      "div",
      { class: "actions" },
      granted.size > 0 &&
        h("button", { type: "button", class: "primary", onclick: ctx.onContinue }, m.next),
      granted.size > 0 &&
        h(
          "button",
          {
            type: "button",
            onclick: async () => {
              try {
                ctx.onChange(await ctx.engine.withdraw([...granted]), m.allWithdrawn);
              } catch (e) {
                ctx.onError(e);
              }
            },
          },
          m.withdrawAll,
        ),
    ),
  );
}

function scopeCard(ctx: ConsentContext, s: ScopeNotice, on: boolean): HTMLElement {
  const msg = t();
  const m = msg.consent;
  const text = msg.scopes[s.scope] ?? msg.unknownScope(s.scope);
  const titleId = uid("scope");
  const kinds = s.kinds.length > 0 ? msg.list(s.kinds.map((k) => msg.kinds[k] ?? k)) : m.noKinds;
  const kept = s.scope === "research" ? m.researchRetention(ctx.notice.retentionSeconds) : m.retention(ctx.notice.retentionSeconds);
  const toggle = async () => {
    try {
      if (on) {
        ctx.onChange(await ctx.engine.withdraw([s.scope]), m.nowWithdrawn(text.title));
      } else {
        // POST replaces the granted set: send it whole, with this scope.
        const next = [...new Set([...(ctx.consent?.scopes ?? []), s.scope])];
        ctx.onChange(await ctx.engine.setConsent(next, noticeVersion(ctx.notice)), m.nowGranted(text.title));
      }
    } catch (e) {
      ctx.onError(e);
    }
  };
  return h(
    "article",
    { class: "card scope", "aria-labelledby": titleId, "data-scope": s.scope },
    h(
      "div",
      { class: "scope-head" },
      h("h2", { id: titleId }, text.title),
      h(
        "button",
        {
          type: "button",
          role: "switch",
          class: "switch",
          "aria-checked": on ? "true" : "false",
          "aria-label": m.allow(text.title),
          disabled: s.prohibited === true && !on,
          onclick: toggle,
        },
        h("span", { class: "switch-track", "aria-hidden": "true" }, h("span", { class: "switch-thumb" })),
        h("span", { class: "switch-text" }, on ? m.granted : m.notGranted),
      ),
    ),
    s.prohibited && h("p", { class: "note" }, m.prohibited),
    h(
      "dl",
      {},
      h("dt", {}, m.what),
      h("dd", {}, text.what, h("span", { class: "kinds" }, m.kinds(kinds))),
      h("dt", {}, m.why),
      h("dd", {}, text.why),
      h("dt", {}, m.kept),
      h("dd", {}, kept),
      h("dt", {}, m.basis),
      h("dd", {}, text.basis),
    ),
  );
}
