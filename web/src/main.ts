// The reference web client: boot, navigation and the shared status line.

import { Engine, EngineError } from "./api.js";
import { consentScreen } from "./consent.js";
import { h } from "./dom.js";
import { feedbackScreen } from "./feedback.js";
import { currentLang, languages, setLang, t, type Lang } from "./i18n.js";
import { readLaunch, type Launch } from "./launch.js";
import { forget, history, record, saveConsent, savedConsent } from "./local.js";
import { dataScreen } from "./mydata.js";
import { SessionScreen } from "./session.js";
import type { Consent, PrivacyNotice, UserState } from "./types.js";

type Screen = "session" | "feedback" | "consent" | "data";
const screens: Screen[] = ["session", "feedback", "consent", "data"];
const feedbackRefreshMs = 15_000;

class App {
  private readonly root: HTMLElement;
  private readonly status = h("p", { class: "status", role: "status", "data-testid": "status" });
  private readonly alert = h("p", { class: "alert", role: "alert", "data-testid": "alert" });
  private readonly main = h("main", { id: "main" });
  private launch!: Launch;
  private engine!: Engine;
  private notice!: PrivacyNotice;
  private state: UserState | null = null;
  private consent: Consent | null = null;
  private screen: Screen = "consent";
  private session: SessionScreen | undefined;

  constructor(root: HTMLElement) {
    this.root = root;
    // Feedback follows the state while it is on screen (a state read
    // changes nothing in the engine), unless the person is working in it.
    setInterval(() => void this.refreshFeedback(), feedbackRefreshMs);
  }

  private async refreshFeedback(): Promise<void> {
    if (this.screen !== "feedback" || !this.state || document.hidden) return;
    if (this.main.contains(document.activeElement) || this.main.querySelector("details[open]")) return;
    try {
      const state = await this.engine.state();
      if (this.screen !== "feedback") return;
      this.setState(state);
      this.render(false);
    } catch {
      // the next tick tries again; a manual refresh reports errors
    }
  }

  async boot(): Promise<void> {
    document.documentElement.lang = currentLang();
    document.title = t().appName;
    try {
      this.launch = readLaunch();
    } catch {
      this.root.replaceChildren(h("main", { id: "main" }, h("h1", {}, t().appName), h("p", { class: "alert", role: "alert" }, t().errors.launch)));
      return;
    }
    this.engine = new Engine(this.launch);
    this.root.replaceChildren(h("main", { id: "main" }, h("p", { role: "status" }, t().loading)));
    try {
      const [notice, state] = await Promise.all([this.engine.privacy(), this.engine.state()]);
      this.notice = notice;
      this.setState(state);
    } catch (e) {
      this.root.replaceChildren(
        h("main", { id: "main" }, h("h1", {}, t().appName), h("p", { class: "alert", role: "alert" }, this.describe(e)), h("button", { type: "button", onclick: () => this.boot() }, t().retry)),
      );
      return;
    }
    this.consent = this.state ? savedConsent(this.launch.user) : null;
    this.screen = this.state && (this.consent?.scopes.length ?? 1) > 0 ? "session" : "consent";
    this.render(false);
  }

  private setState(state: UserState | null): void {
    this.state = state;
    if (state) record(this.launch.user, state);
    else forget(this.launch.user); // an unknown user has nothing on this device either
  }

  private describe(e: unknown): string {
    if (e instanceof EngineError) return t().errors.engine(e.status, e.message);
    return t().errors.network;
  }

  /** Says message in the status line; visible: false keeps it for screen readers only. */
  private announce = (message: string, visible = true): void => {
    this.status.classList.toggle("sr-only", !visible);
    this.status.textContent = "";
    // A fresh text node after a tick is announced even when it repeats.
    setTimeout(() => (this.status.textContent = message), 50);
  };

  private fail = (e: unknown): void => {
    this.alert.textContent = this.describe(e);
  };

  private async go(screen: Screen): Promise<void> {
    this.alert.textContent = "";
    this.status.textContent = "";
    if (screen === "feedback") {
      try {
        this.setState(await this.engine.state());
      } catch (e) {
        this.fail(e);
      }
    }
    this.screen = screen;
    this.render(true);
  }

  private render(focus: boolean): void {
    const msg = t();
    document.title = `${msg.nav[this.screen]} · ${msg.appName}`;
    const langSelect = h(
      "select",
      {
        id: "lang",
        onchange: (ev: Event) => {
          setLang((ev.target as HTMLSelectElement).value as Lang);
          if (!this.session?.busy) this.session = undefined; // rebuilt in the new language
          this.render(false);
        },
      },
      ...Object.entries(languages).map(([code, name]) => h("option", { value: code, lang: code, selected: code === currentLang() }, name)),
    );
    const nav = h(
      "nav",
      { "aria-label": msg.nav.label },
      h(
        "ul",
        {},
        ...screens.map((s) =>
          h(
            "li",
            {},
            h(
              "button",
              {
                type: "button",
                "data-screen": s,
                "aria-current": s === this.screen ? "page" : undefined,
                disabled: s !== "consent" && !this.state,
                onclick: () => this.go(s),
              },
              msg.nav[s],
            ),
          ),
        ),
      ),
    );
    const header = h(
      "header",
      {},
      h("a", { href: "#main", class: "skip" }, msg.skip),
      h("div", { class: "brand" }, h("p", { class: "name" }, msg.appName), h("p", { class: "tagline" }, msg.tagline)),
      h("div", { class: "lang" }, h("label", { for: "lang" }, msg.language), langSelect),
    );
    this.main.replaceChildren(this.alert, this.screenElement(), this.status);
    this.root.replaceChildren(header, nav, this.main);
    if (focus) this.main.querySelector<HTMLElement>("h1")?.focus();
  }

  private screenElement(): HTMLElement {
    if (this.screen !== "session") {
      this.session?.stop();
      this.session = undefined;
    }
    switch (this.screen) {
      case "consent":
        return consentScreen({
          engine: this.engine,
          notice: this.notice,
          consent: this.consent,
          known: this.state !== null,
          onChange: async (c, message) => {
            this.consent = c;
            saveConsent(this.launch.user, c);
            if (!this.state) this.setState(await this.engine.state().catch(() => null));
            this.alert.textContent = "";
            this.render(false);
            this.announce(message);
          },
          onError: this.fail,
          onContinue: () => this.go("session"),
        });
      case "session":
        this.session ??= new SessionScreen({
          engine: this.engine,
          launch: this.launch,
          onReported: () => undefined,
          onError: this.fail,
          announce: this.announce,
        });
        return this.session.el;
      case "feedback":
        if (!this.state) return h("section", { class: "screen" }, h("h1", { tabindex: -1 }, t().feedback.title), h("p", {}, t().errors.unknownUser));
        return feedbackScreen({ state: this.state, history: history(this.launch.user), onRefresh: () => this.go("feedback") });
      case "data":
        return dataScreen({
          engine: this.engine,
          onErased: async () => {
            this.consent = null;
            this.setState(await this.engine.state().catch(() => null));
            this.screen = "consent";
            this.render(true);
            this.announce(t().data.erased);
          },
          onError: this.fail,
          announce: this.announce,
        });
    }
  }
}

const root = document.getElementById("app");
if (root) void new App(root).boot();
