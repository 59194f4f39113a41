// Feedback: attention, emotion and resilience with confidence, in words
// and in a chart over the last days (the history this device kept).

import { h, svg, uid } from "./dom.js";
import { t } from "./i18n.js";
import type { Reading } from "./local.js";
import { dimensions, type Dimension, type DimensionName, type UserState } from "./types.js";

export interface FeedbackContext {
  state: UserState;
  history: Reading[];
  onRefresh: () => void;
}

const chartDays = 7;

/** A level from a value in [0, 1]: the lower, middle or upper third. */
function level(levels: string[], v: number): string {
  return levels[Math.min(levels.length - 1, Math.floor(v * levels.length))] ?? "";
}

export function feedbackScreen(ctx: FeedbackContext): HTMLElement {
  const msg = t();
  const m = msg.feedback;
  return h(
    "section",
    { class: "screen", "aria-labelledby": "screen-title" },
    h("h1", { id: "screen-title", tabindex: -1 }, m.title),
    h("p", {}, m.intro),
    h("p", { class: "meta" }, m.updated(msg.fmtTime(ctx.state.estimatedAt)), " ", h("button", { type: "button", class: "link", onclick: ctx.onRefresh }, m.refresh)),
    h("ul", { class: "dims" }, ...dimensions.map((d) => h("li", {}, dimensionCard(d, ctx.state[d], ctx.state)))),
    chart(ctx.history),
    lastSession(ctx.state),
  );
}

function dimensionCard(name: DimensionName, d: Dimension, state: UserState): HTMLElement {
  const msg = t();
  const m = msg.feedback;
  const titleId = uid("dim");
  const physiologyOff = name === "emotion" && !state.emotionFromPhysiology;
  const body: (Node | string)[] = [];
  if (d.known) {
    const pct = Math.round(d.value * 100);
    const conf = Math.round(d.confidence * 100);
    const bar = h("div", { class: "meter-bar" });
    bar.style.width = `${pct}%`; // through the CSSOM: the CSP refuses style attributes
    body.push(
      h("p", { class: "value", "data-testid": `value-${name}` }, m.value(pct, level(m.levels, d.value))),
      h(
        "div",
        { class: "meter", role: "meter", "aria-labelledby": titleId, "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct, "aria-valuetext": m.value(pct, level(m.levels, d.value)) },
        bar,
      ),
      h("p", { class: "confidence", "data-testid": `confidence-${name}` }, m.confidence(conf, level(m.confidenceLevels, d.confidence))),
    );
    const sources = (d.evidence ?? []).map((e) => `${m.sources[e.source] ?? e.source} (${m.samples(e.samples)})`);
    if (sources.length) body.push(h("p", { class: "meta" }, m.basedOn(msg.list(sources))));
  } else {
    body.push(h("p", { class: "unknown", "data-testid": `unknown-${name}` }, physiologyOff ? m.unknownNoPhysiology : m.unknown));
  }
  if (physiologyOff && d.known) body.push(h("p", { class: "note", "data-testid": "physiology-off" }, m.physiologyOff));
  return h("article", { class: d.known ? "card dim" : "card dim is-unknown", "aria-labelledby": titleId, "data-dimension": name }, h("h2", { id: titleId }, m.dims[name] ?? name), ...body);
}

function chart(history: Reading[]): HTMLElement {
  const msg = t();
  const m = msg.feedback;
  const titleId = uid("chart");
  const descId = uid("chart-desc");
  const end = Date.now();
  const start = end - chartDays * 86400_000;
  const shown = history.filter((r) => Date.parse(r.at) >= start);
  const section = h("section", { class: "card chart", "aria-labelledby": titleId }, h("h2", { id: titleId }, m.chart));
  if (shown.length === 0) {
    section.append(h("p", { class: "meta" }, m.noHistory));
    return section;
  }
  const W = 640;
  const H = 220;
  const pad = { l: 54, r: 12, t: 12, b: 28 };
  const x = (at: string) => pad.l + ((Date.parse(at) - start) / (end - start)) * (W - pad.l - pad.r);
  const y = (v: number) => pad.t + (1 - v) * (H - pad.t - pad.b);
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${titleId} ${descId}`, class: "chart-svg" });
  for (const v of [0, 0.5, 1]) {
    plot.append(svg("line", { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v), class: "grid" }));
    plot.append(svg("text", { x: pad.l - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, `${v * 100}%`));
  }
  for (let day = 0; day <= chartDays; day++) {
    const at = new Date(start + day * 86400_000).toISOString();
    if (day % 2 === 1) continue;
    plot.append(svg("text", { x: x(at), y: H - 8, class: "axis", "text-anchor": "middle" }, new Date(at).toLocaleDateString(msg.lang, { month: "numeric", day: "numeric" })));
  }
  for (const d of dimensions) {
    const points = shown.filter((r) => r[d] !== null).map((r) => `${x(r.at).toFixed(1)},${y(r[d] as number).toFixed(1)}`);
    if (points.length === 0) continue;
    plot.append(svg("polyline", { points: points.join(" "), class: `series series-${d}`, "data-series": d }));
    for (const p of points) {
      const [cx, cy] = p.split(",");
      plot.append(svg("circle", { cx: cx ?? 0, cy: cy ?? 0, r: 3, class: `dot series-${d}` }));
    }
  }
  const legend = h("ul", { class: "legend", "aria-hidden": "true" }, ...dimensions.map((d) => h("li", { class: `key key-${d}` }, m.dims[d] ?? d)));
  const pct = (v: number | null) => (v === null ? "—" : `${Math.round(v * 100)}%`);
  const table = h(
    "details",
    {},
    h("summary", {}, m.table),
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, m.time), ...dimensions.map((d) => h("th", { scope: "col" }, m.dims[d] ?? d)))),
      h("tbody", {}, ...shown.map((r) => h("tr", {}, h("th", { scope: "row" }, msg.fmtTime(r.at)), ...dimensions.map((d) => h("td", {}, pct(r[d])))))),
    ),
  );
  section.append(h("p", { id: descId, class: "meta" }, m.chartDesc(shown.length)), plot, legend, table);
  return section;
}

function lastSession(state: UserState): HTMLElement | null {
  const d = state.lastDecision;
  if (!d) return null;
  const msg = t();
  const m = msg.feedback;
  const at = msg.fmtTime(d.at);
  const parts: string[] = [];
  if (d.action === "none") {
    parts.push(m.lastNone(at));
  } else {
    parts.push(m.lastDelivered(at, msg.interventions[d.action]?.name ?? d.action));
    if (d.completed !== undefined) parts.push(d.completed ? m.completed : m.notCompleted);
    if (d.rating !== undefined) parts.push(m.rated(d.rating));
    if (d.outcome) parts.push(m.outcome(d.outcome.change));
    else if (d.lossAtDecision !== undefined) parts.push(m.outcomePending(msg.fmtTime(d.outcomeDue)));
  }
  return h("section", { class: "card", "aria-labelledby": "last-title" }, h("h2", { id: "last-title" }, m.lastSession), h("p", { "data-testid": "last-decision" }, msg.sentences(parts)));
}
