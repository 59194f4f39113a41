// The guided session: ask the engine at a natural break, deliver what it
// decided for the dose's duration (a breathing pacer for resonance
// breathing, timed written steps for the rest), with pause and stop, then
// a one-tap rating sent as an intervention sample linked to the decision.

import { EngineError, type Engine } from "./api.js";
import { h, uid } from "./dom.js";
import { t } from "./i18n.js";
import type { Launch } from "./launch.js";
import type { Decision } from "./types.js";

/** Resonance breathing: six breaths a minute, five seconds in and five out. */
export const breathSeconds = 10;

export interface SessionContext {
  engine: Engine;
  launch: Launch;
  /** Called when the user leaves a finished session, or after a rating. */
  onReported: () => void;
  onError: (e: unknown) => void;
  announce: (message: string, visible?: boolean) => void;
}

const reducedMotion = () => window.matchMedia("(prefers-reduced-motion: reduce)").matches;

/** The session screen. It owns its timers; stop() ends them. */
export class SessionScreen {
  readonly el = h("section", { class: "screen", "aria-labelledby": "screen-title" });
  private timer: number | undefined;
  private frame: number | undefined;
  /** True while a decision is offered, running or awaiting its rating. */
  busy = false;

  constructor(private readonly ctx: SessionContext) {
    this.idle();
  }

  /** Stops every timer (the screen is being left). */
  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    if (this.frame !== undefined) cancelAnimationFrame(this.frame);
    this.timer = this.frame = undefined;
  }

  private show(...children: (Node | false | undefined)[]): void {
    this.stop();
    this.el.replaceChildren(...children.filter((c): c is Node => !!c));
  }

  private title(text: string): HTMLElement {
    return h("h1", { id: "screen-title", tabindex: -1 }, text);
  }

  private focusTitle(): void {
    this.el.querySelector<HTMLElement>("h1")?.focus();
  }

  private idle(note?: string): void {
    const m = t().session;
    this.busy = false;
    const ask = h("button", { type: "button", class: "primary", onclick: () => this.ask(ask) }, m.ask);
    this.show(this.title(m.title), h("p", {}, m.intro), note ? h("p", { class: "note", role: "status" }, note) : undefined, h("div", { class: "actions" }, ask));
  }

  private async ask(button: HTMLButtonElement): Promise<void> {
    const m = t().session;
    button.disabled = true;
    button.textContent = m.asking;
    try {
      const d = await this.ctx.engine.decide(this.ctx.launch.context);
      if (d.action === "none") this.none(d);
      else this.offer(d);
      this.focusTitle();
    } catch (e) {
      this.ctx.onError(e);
      button.disabled = false;
      button.textContent = m.ask;
    }
  }

  private none(d: Decision): void {
    const m = t().session;
    const why = m.reasons[d.reason ?? "randomised"] ?? m.reasons["randomised"];
    this.show(
      this.title(m.none),
      h("p", { "data-testid": "no-session-reason" }, why ?? ""),
      h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onclick: () => this.idle() }, m.askAgain)),
    );
  }

  /** The session's length: the dose, capped by the launch's sessionSeconds (tests, demos). */
  private seconds(d: Decision): number {
    const dose = d.dose?.durationSeconds ?? 60;
    return Math.min(dose, this.ctx.launch.sessionSeconds ?? dose);
  }

  private offer(d: Decision): void {
    this.busy = true;
    const msg = t();
    const m = msg.session;
    const guide = msg.interventions[d.action];
    const seconds = this.seconds(d);
    const steps = guide?.steps ?? [d.instructions];
    this.show(
      this.title(m.offered),
      h(
        "article",
        { class: "card offer", "data-intervention": d.action },
        h("h2", {}, guide?.name ?? d.action),
        // The engine's instructions are English; other languages show the translated steps.
        h("p", {}, msg.lang === "en" ? d.instructions : steps.join(" ")),
        d.action === "ResonanceBreathing" && h("p", {}, m.pace),
        h(
          "dl",
          { class: "inline" },
          h("dt", {}, m.length),
          h("dd", { "data-testid": "dose-duration" }, m.duration(d.dose?.durationSeconds ?? seconds)),
          d.dose && h("dt", {}, m.strength),
          d.dose && h("dd", {}, d.dose.strength.toFixed(2)),
        ),
        seconds < (d.dose?.durationSeconds ?? seconds) && h("p", { class: "note" }, m.shortened(seconds)),
      ),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "primary", onclick: () => this.run(d, seconds) }, m.begin),
        h("button", { type: "button", onclick: () => this.send(d, false, undefined, m.declined) }, m.notNow),
      ),
    );
  }

  private run(d: Decision, seconds: number): void {
    const msg = t();
    const m = msg.session;
    const guide = msg.interventions[d.action];
    const breathing = d.action === "ResonanceBreathing";
    const steps = guide?.steps ?? [d.instructions];
    let elapsedMs = 0;
    let since = performance.now();
    let paused = false;
    const totalMs = seconds * 1000;

    const remaining = h("span", { class: "time", "data-testid": "remaining" });
    const progress = h("div", {
      class: "progress",
      role: "progressbar",
      "aria-label": m.progress,
      "aria-valuemin": 0,
      "aria-valuemax": seconds,
    });
    const bar = h("div", { class: "progress-bar" });
    progress.append(bar);
    const phase = h("p", { class: "phase", "aria-live": "polite", "data-testid": "phase" });
    const count = h("p", { class: "count", "aria-hidden": "true", "data-testid": "count" });
    const breathInfo = h("p", { class: "meta", "data-testid": "breath" });
    const circle = h("div", { class: "pacer-circle", "data-testid": "pacer-circle" });
    const reduced = reducedMotion();
    const stepItems = steps.map((s) => h("li", {}, s));
    const pauseButton = h("button", { type: "button", "aria-pressed": "false" }, m.pause);
    const stopButton = h("button", { type: "button", class: "danger" }, m.stop);

    const guideEl = breathing
      ? h(
          "div",
          { class: reduced ? "pacer reduced" : "pacer", role: "group", "aria-label": m.pacer, "data-testid": "pacer" },
          !reduced && circle,
          phase,
          reduced && count,
          breathInfo,
        )
      : h("div", { class: "guide" }, h("p", { class: "phase", "aria-live": "polite", "data-testid": "phase" }), h("ol", { class: "steps", "aria-label": m.steps }, ...stepItems));
    const stepPhase = breathing ? phase : (guideEl.querySelector(".phase") as HTMLElement);

    let lastPhaseText = "";
    const render = () => {
      const now = performance.now();
      if (!paused) {
        elapsedMs += now - since;
      }
      since = now;
      const done = elapsedMs >= totalMs;
      const shown = Math.min(elapsedMs, totalMs);
      const left = Math.ceil((totalMs - shown) / 1000);
      remaining.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
      progress.setAttribute("aria-valuenow", String(Math.floor(shown / 1000)));
      progress.setAttribute("aria-valuetext", `${remaining.textContent}`);
      bar.style.width = `${(100 * shown) / totalMs}%`;
      let text: string;
      if (breathing) {
        const inCycle = (shown / 1000) % breathSeconds;
        const inhaling = inCycle < breathSeconds / 2;
        text = inhaling ? m.breatheIn : m.breatheOut;
        count.textContent = String(Math.floor(inCycle % (breathSeconds / 2)) + 1);
        const breaths = Math.max(1, Math.ceil(seconds / breathSeconds));
        breathInfo.textContent = m.breath(Math.min(breaths, Math.floor(shown / 1000 / breathSeconds) + 1), breaths);
        circle.dataset["phase"] = inhaling ? "in" : "out";
        // The circle's size follows the breath: smallest at the start of
        // an inhalation, largest at its end (a half cosine each way).
        const scale = 0.55 + 0.45 * (0.5 - 0.5 * Math.cos((2 * Math.PI * inCycle) / breathSeconds));
        circle.style.transform = `scale(${scale.toFixed(3)})`;
      } else {
        const i = Math.min(steps.length - 1, Math.floor((shown / totalMs) * steps.length));
        stepItems.forEach((li, j) => (j === i ? li.setAttribute("aria-current", "step") : li.removeAttribute("aria-current")));
        text = m.step(i + 1, steps.length);
      }
      if (paused) text = m.paused;
      if (text !== lastPhaseText) {
        stepPhase.textContent = text;
        lastPhaseText = text;
      }
      if (done) this.finished(d, true);
    };
    const loop = () => {
      render();
      if (this.frame !== undefined) this.frame = requestAnimationFrame(loop);
    };

    pauseButton.addEventListener("click", () => {
      render();
      paused = !paused;
      pauseButton.textContent = paused ? m.resume : m.pause;
      pauseButton.setAttribute("aria-pressed", paused ? "true" : "false");
      this.el.classList.toggle("is-paused", paused);
      render();
    });
    stopButton.addEventListener("click", () => {
      render();
      if (this.timer !== undefined) this.finished(d, elapsedMs >= totalMs);
    });

    this.show(
      this.title(guide?.name ?? d.action),
      h("div", { class: "card running" }, h("p", { class: "remaining" }, h("span", { class: "label" }, m.remaining + " "), remaining), progress, guideEl),
      h("div", { class: "actions" }, pauseButton, stopButton),
    );
    // Text updates four times a second; the circle every frame unless
    // motion is reduced.
    this.timer = window.setInterval(render, 250);
    if (breathing && !reduced) this.frame = requestAnimationFrame(loop);
    render();
    this.focusTitle();
  }

  private finished(d: Decision, completed: boolean): void {
    const m = t().session;
    const ratingId = uid("rate");
    const buttons = m.ratings.map((label, i) =>
      // The visible text is the accessible name ("4 Quite"): the group's
      // heading asks the question.
      h(
        "button",
        { type: "button", class: "rating", "data-rating": i + 1, onclick: () => this.send(d, completed, i + 1, m.thanks) },
        h("span", { class: "rating-n" }, String(i + 1)),
        " ",
        h("span", { class: "rating-label" }, label),
      ),
    );
    this.show(
      this.title(completed ? m.done : m.stopped),
      h(
        "div",
        { class: "card" },
        h("h2", { id: ratingId }, m.rate),
        h("div", { class: "ratings", role: "group", "aria-labelledby": ratingId }, ...buttons),
      ),
      h("div", { class: "actions" }, h("button", { type: "button", onclick: () => this.send(d, completed, undefined, m.thanks) }, m.skipRating)),
    );
    this.ctx.announce(completed ? m.done : m.stopped, false); // the heading shows it
    this.focusTitle();
  }

  /** Sends the intervention sample that answers the decision. */
  private async send(d: Decision, completed: boolean, rating: number | undefined, thanks: string): Promise<void> {
    const m = t().session;
    this.el.querySelectorAll("button").forEach((b) => (b.disabled = true));
    try {
      await this.ctx.engine.report({
        user: this.ctx.launch.user,
        kind: "intervention",
        at: new Date().toISOString(),
        intervention: d.action,
        completed,
        ...(rating !== undefined ? { rating } : {}),
        decision: d.id,
      });
      this.idle(thanks);
      this.ctx.announce(thanks);
      this.ctx.onReported();
    } catch (e) {
      this.el.querySelectorAll("button").forEach((b) => (b.disabled = false));
      if (e instanceof EngineError && e.status === 403) {
        this.ctx.onError(new EngineError(403, m.needsBehaviour, e.field));
      } else {
        this.ctx.onError(e);
      }
    }
  }
}
