// My data: download what the engine holds (its export endpoint), and
// erase it all after a confirmation.

import type { Engine } from "./api.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";

export interface DataContext {
  engine: Engine;
  onErased: () => void;
  onError: (e: unknown) => void;
  announce: (message: string) => void;
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
          download(`attune-my-data-${new Date().toISOString().slice(0, 10)}.json`, await ctx.engine.export());
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
    h("div", { class: "actions" }, h("button", { type: "button", class: "danger", onclick: () => dialog.showModal() }, m.erase)),
    dialog,
  );
}
