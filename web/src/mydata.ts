// My data: download what the engine holds (its export endpoint when it
// has one, else what this client can read), and erase it all after a
// confirmation.

import type { Engine } from "./api.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";
import type { Launch } from "./launch.js";
import { history, savedConsent } from "./local.js";

export interface DataContext {
  engine: Engine;
  launch: Launch;
  onErased: () => void;
  onError: (e: unknown) => void;
  announce: (message: string) => void;
}

/**
 * The export: the engine's own (GET /v1/users/{id}/export) when it has
 * one; otherwise assembled here from the state, the consent the engine
 * last confirmed and this device's history, and marked as such.
 */
export async function exportData(engine: Engine, launch: Launch): Promise<{ data: unknown; assembled: boolean }> {
  const fromEngine = await engine.export();
  if (fromEngine !== null) return { data: fromEngine, assembled: false };
  return {
    assembled: true,
    data: {
      format: "attune-web-client-export/1",
      note: "Assembled by the web client: this engine has no GET /v1/users/{id}/export. consent is what the engine last confirmed to this device; history is kept on this device only.",
      exportedAt: new Date().toISOString(),
      engine: launch.engine,
      user: launch.user,
      state: await engine.state(),
      consent: savedConsent(launch.user),
      history: history(launch.user),
    },
  };
}

function download(name: string, data: unknown): void {
  const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2) + "\n"], { type: "application/json" }));
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function dataScreen(ctx: DataContext): HTMLElement {
  const m = t().data;
  const note = h("p", { class: "note", "data-testid": "export-note", hidden: true });
  const dialog = h(
    "dialog",
    { "aria-labelledby": "erase-title", "aria-describedby": "erase-body", class: "card" },
    h("h2", { id: "erase-title" }, m.eraseTitle),
    h("p", { id: "erase-body" }, m.eraseBody),
    h(
      "form",
      { method: "dialog", class: "actions" },
      h("button", { type: "submit", value: "cancel", autofocus: true }, m.cancel),
      h("button", { type: "submit", value: "erase", class: "danger" }, m.confirmErase),
    ),
  );
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "erase") return;
    try {
      await ctx.engine.erase();
      ctx.onErased();
    } catch (e) {
      ctx.onError(e);
    }
  });
  const exportButton = h(
    "button",
    {
      type: "button",
      class: "primary",
      onclick: async () => {
        try {
          const { data, assembled } = await exportData(ctx.engine, ctx.launch);
          download(`attune-my-data-${new Date().toISOString().slice(0, 10)}.json`, data);
          note.hidden = !assembled;
          note.textContent = assembled ? m.assembled : "";
          ctx.announce(m.exported);
        } catch (e) {
          ctx.onError(e);
        }
      },
    },
    m.export,
  );
  return h(
    "section",
    { class: "screen", "aria-labelledby": "screen-title" },
    h("h1", { id: "screen-title", tabindex: -1 }, m.title),
    h("p", {}, m.intro),
    h("div", { class: "actions" }, exportButton),
    note,
    h("div", { class: "actions" }, h("button", { type: "button", class: "danger", onclick: () => dialog.showModal() }, m.erase)),
    dialog,
  );
}
