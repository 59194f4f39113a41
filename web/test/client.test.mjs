// The reference client in a real browser against a real engine: consent,
// a decision, a shortened resonance-breathing session with its rating
// recorded on the decision, feedback, export, erasure, languages, reduced
// motion, and axe-core on every screen.

import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { api, axe, distDir, engineBinary, launchBrowser, outputDir, screenshots, serveClient, startEngine, viewports } from "./harness.mjs";

// Long enough for the checks taken while a session runs on a busy machine.
const sessionSeconds = 30;
const noticeV1 = "notice-2026-12";
let scratch, engine, client, browser;
const violations = [];
const shots = [];

before(async () => {
  assert.ok(readFileSync(join(distDir, "index.html")), "web/dist is built (npm run build)");
  mkdirSync(outputDir, { recursive: true });
  scratch = mkdtempSync(join(tmpdir(), "attune-web-test-"));
  const binary = engineBinary(scratch);
  client = await serveClient();
  engine = await startEngine(binary, {
    // Every ask can deliver. Outcomes are measured 25 s after a decision
    // and until 50 s after it: the rating, sent after the 30 s session and
    // its pause, falls in that span and settles the outcome.
    dose: { maxPerDay: 96, cooldown: "0s", outcomeWindow: "25s" },
    app: { dir: distDir },
    cors: { allowedOrigins: [client.origin] },
    consent: { policyVersion: noticeV1 },
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await engine?.stop();
  await client?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  writeFileSync(join(outputDir, "axe.json"), JSON.stringify(violations, null, 2) + "\n");
  const bad = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  console.log(`axe: ${violations.length} violations on the screens checked, ${bad.length} serious or critical; ${shots.length} screenshots in ${outputDir}/screenshots`);
});

/** A page of a fresh context, failing the test on any page error or CSP violation. */
async function openPage(options = {}) {
  const context = await browser.newContext({ viewport: viewports.desktop, acceptDownloads: true, locale: "en-GB", ...options });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // The engine's 404 for an unknown user (and an absent export endpoint) shows as a failed load.
    if (m.type() === "error" && !/status of 404/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  return { context, page, problems };
}

function launchURL(base, user, extra = "") {
  const p = new URLSearchParams({ engine: engine.url, user, token: engine.token, sessionSeconds: String(sessionSeconds) });
  return `${base}#${p}${extra}`;
}

async function check(page, screen) {
  violations.push(...(await axe(page, screen)));
  shots.push(...(await screenshots(page, screen)));
}

function seriousOrCritical(screen) {
  return violations.filter((v) => v.screen === screen && (v.impact === "serious" || v.impact === "critical"));
}

/** Presses Tab until the element matching selector has the focus; fails if it is not in the tab order. */
async function tabTo(page, selector, max = 60) {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) return;
  }
  throw new Error(`${selector} not reached with ${max} presses of Tab`);
}

/** Asks for a session until one is delivered (none is drawn with probability ≥ 0.2). */
async function askUntilOffered(page) {
  for (let i = 0; i < 40; i++) {
    await page.getByRole("button", { name: /Is a session suggested now|现在推荐练习吗/ }).click();
    const offered = page.locator("[data-intervention]");
    const none = page.getByTestId("no-session-reason");
    await offered.or(none).first().waitFor();
    if (await offered.count()) return i + 1;
    await page.getByRole("button", { name: /Ask again|再问一次/ }).click();
  }
  throw new Error("no intervention delivered in 40 decisions");
}

/** Brief Resilience Scale score in [0, 1] (Smith et al. 2008: items 2, 4, 6 reversed, mean, then (m − 1)/4). */
function brsScore(items) {
  const mean = items.reduce((s, v, i) => s + (i % 2 === 1 ? 6 - v : v), 0) / items.length;
  return (mean - 1) / 4;
}

test("a person consents, takes a breathing session, rates it, sees feedback, exports and erases", async () => {
  const user = "web-e2e-ana";
  const { page, problems } = await openPage();
  await page.goto(launchURL(`${client.origin}/index.html`, user));

  // The consent screen: the engine's scopes in plain words.
  await page.getByRole("heading", { level: 1, name: "Your consent" }).waitFor();
  assert.ok(!page.url().includes("token"), `the token left the address bar: ${page.url()}`);
  assert.equal(await page.getByTestId("policy-version").innerText(), `Privacy notice, version ${noticeV1}`);
  // Every scope the engine knows, in its order.
  const notice = (await api(engine, "GET", "/v1/privacy")).json;
  const scopes = await page.locator("[data-scope]").evaluateAll((els) => els.map((e) => e.getAttribute("data-scope")));
  assert.deepEqual(scopes, notice.scopes.map((s) => s.scope));
  for (const s of ["behaviour", "physiology", "text", "research"]) assert.ok(scopes.includes(s), `scope ${s} shown`);
  // Mood and BRS answers need the questionnaire scope where the engine has one, else behaviour.
  const selfReports = scopes.includes("questionnaire") ? ["questionnaire"] : [];
  const behaviourCard = page.locator('[data-scope="behaviour"]');
  for (const heading of ["What is collected", "Why", "How long it is kept", "Legal basis"]) {
    await behaviourCard.getByText(heading, { exact: true }).waitFor();
  }
  assert.match(await behaviourCard.innerText(), /deleted 30 days after you were last active/); // privacy.retention 720h
  // Workplace world: physiology is refused whatever the consent.
  const physiology = page.locator('[data-scope="physiology"] [role="switch"]');
  assert.ok(await physiology.isDisabled(), "the physiology switch is disabled in a Workplace world");
  assert.match(await page.locator('[data-scope="physiology"]').innerText(), /Art\. 5\(1\)\(f\)/);
  await check(page, "consent");

  // Grant behaviour, the self-reports and research; grant text and withdraw it again.
  const granted = ["behaviour", ...selfReports, "research"];
  for (const scope of [...granted, "text"]) {
    const sw = page.locator(`[data-scope="${scope}"] [role="switch"]`);
    await sw.click();
    await page.locator(`[data-scope="${scope}"] [role="switch"][aria-checked="true"]`).waitFor();
  }
  await page.locator('[data-scope="text"] [role="switch"]').click();
  await page.locator('[data-scope="text"] [role="switch"][aria-checked="false"]').waitFor();
  // The engine's view of the consent: behaviour samples are accepted, text is refused.
  const now = new Date().toISOString();
  const mood = 2; // and 4 during the session
  const brs = [4, 2, 4, 2, 3, 2];
  const accepted = await api(engine, "POST", "/v1/telemetry", [{ user, kind: "questionnaire", at: now, brs, mood }]);
  assert.equal(accepted.status, 200, accepted.text);
  const refused = await api(engine, "POST", "/v1/telemetry", [{ user, kind: "text", at: now, text: "hello", source: "chat" }]);
  assert.equal(refused.status, 403, refused.text);
  assert.match(refused.json.error, /text/);
  await check(page, "consent-granted");

  // A decision: asked at a break until the engine delivers one.
  await page.getByRole("button", { name: "Continue to a session" }).click();
  await page.getByRole("heading", { level: 1, name: "Session" }).waitFor();
  await check(page, "session-ask");
  const asks = await askUntilOffered(page);
  const state = (await api(engine, "GET", `/v1/users/${user}/state`)).json;
  const decision = state.lastDecision;
  assert.equal(decision.action, "ResonanceBreathing");
  assert.equal(await page.locator("[data-intervention]").getAttribute("data-intervention"), decision.action);
  const dose = decision.dose.durationSeconds;
  assert.equal(await page.getByTestId("dose-duration").innerText(), `${Math.floor(dose / 60)} min${dose % 60 ? ` ${dose % 60} s` : ""}`);
  assert.ok(decision.lossAtDecision !== undefined, "the loss was known at the decision (mood and BRS sent)");
  await page.getByText(`Shortened to ${sessionSeconds} s`).waitFor();
  await check(page, "session-offer");

  // The session: an animated pacer at six breaths a minute, with pause.
  const started = Date.now();
  await page.getByRole("button", { name: "Begin" }).click();
  const circle = page.getByTestId("pacer-circle");
  await circle.waitFor();
  assert.equal(await page.getByTestId("phase").innerText(), "Breathe in");
  assert.equal(await page.getByTestId("breath").innerText(), `Breath 1 of ${sessionSeconds / 10}`);
  const scale = async () => Number((await circle.evaluate((e) => e.style.transform)).match(/scale\(([\d.]+)\)/)[1]);
  const s1 = await scale();
  await page.waitForTimeout(1500);
  const s2 = await scale();
  assert.ok(s2 > s1, `the circle grows while breathing in: ${s1} → ${s2}`);
  await check(page, "session-breathing");
  await page.getByRole("button", { name: "Pause" }).click();
  await page.getByTestId("phase").filter({ hasText: "Paused" }).waitFor();
  const pausedAt = await page.getByTestId("remaining").innerText();
  await page.waitForTimeout(1500);
  assert.equal(await page.getByTestId("remaining").innerText(), pausedAt, "time stands still while paused");
  await page.getByRole("button", { name: "Resume" }).click();
  // Meanwhile the world reports a better mood: the outcome will show it.
  const later = await api(engine, "POST", "/v1/telemetry", [{ user, kind: "questionnaire", at: new Date().toISOString(), mood: 4 }]);
  assert.equal(later.status, 200, later.text);
  await page.getByTestId("phase").filter({ hasText: "Breathe out" }).waitFor({ timeout: 10_000 });

  // Done: the one-tap rating, linked to the decision.
  await page.getByRole("heading", { level: 1, name: "Well done. The session is over." }).waitFor({ timeout: (sessionSeconds + 10) * 1000 });
  const took = (Date.now() - started) / 1000;
  assert.ok(took >= sessionSeconds + 1, `the session lasted ${took} s: ${sessionSeconds} s of breathing plus the pause`);
  await check(page, "session-rating");
  await page.getByRole("button", { name: "4 Quite" }).click();
  await page.getByTestId("status").filter({ hasText: "Your answer was recorded" }).waitFor();

  // The engine recorded the rating and the outcome on that decision.
  const log = (await api(engine, "GET", "/v1/decisions")).text.trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(log.length, asks, "one logged decision per ask (the research scope exports them)");
  const logged = log.find((d) => d.id === decision.id);
  assert.equal(logged.completed, true);
  assert.equal(logged.rating, 4);
  assert.ok(logged.outcome, `the outcome was settled by the rating: ${JSON.stringify(logged)}`);
  // Ground truth (docs/engine-model.md): mood m → (m − 1)/4, folded in by
  // an EWMA with α = 0.5, so mood 2 then 4 → 0.25 then 0.5; the BRS
  // answers → resilience; attention unknown (no attention data). The loss
  // averages the squared distances of the known dimensions from s*.
  const emotionBefore = (mood - 1) / 4;
  const emotion = emotionBefore + 0.5 * ((4 - 1) / 4 - emotionBefore);
  const resilience = brsScore(brs);
  const target = engine.config.target;
  const lossOf = (e) => ((e - target.emotion) ** 2 + (resilience - target.resilience) ** 2) / 2;
  assert.ok(Math.abs(logged.lossAtDecision - lossOf(emotionBefore)) < 1e-9, `loss at decision ${logged.lossAtDecision}, want ${lossOf(emotionBefore)}`);
  assert.ok(Math.abs(logged.outcome.loss - lossOf(emotion)) < 1e-9, `outcome loss ${logged.outcome.loss}, want ${lossOf(emotion)}`);
  assert.ok(Math.abs(logged.outcome.change - (lossOf(emotion) - lossOf(emotionBefore))) < 1e-9, `outcome change ${logged.outcome.change}`);
  const after = (await api(engine, "GET", `/v1/users/${user}/state`)).json;
  assert.equal(after.lastDecision.id, decision.id);
  assert.equal(after.lastDecision.rating, 4);

  // Feedback, with a history this device kept over the last days.
  await page.evaluate(
    ({ user }) => {
      const days = [6, 5, 4, 3, 2, 1].map((d) => ({
        at: new Date(Date.now() - d * 86400_000).toISOString(),
        attention: null,
        emotion: 0.4 + d * 0.02,
        resilience: 0.6,
      }));
      localStorage.setItem(`attune.history.${user}`, JSON.stringify(days));
    },
    { user },
  );
  await page.getByRole("button", { name: "How I am" }).click();
  await page.getByRole("heading", { level: 1, name: "How I am" }).waitFor();
  assert.match(await page.getByTestId("value-emotion").innerText(), new RegExp(`^${Math.round(emotion * 100)}%`));
  assert.match(await page.getByTestId("value-resilience").innerText(), new RegExp(`^${Math.round(resilience * 100)}%`));
  assert.match(await page.getByTestId("confidence-emotion").innerText(), new RegExp(`Confidence ${Math.round(after.emotion.confidence * 100)}%`));
  assert.match(await page.getByTestId("unknown-attention").innerText(), /Not estimated yet/);
  assert.match(await page.getByTestId("physiology-off").innerText(), /never inferred from heart signals/);
  assert.equal(await page.locator('polyline[data-series="emotion"]').evaluate((e) => e.getAttribute("points").split(" ").length), 7);
  assert.equal(await page.locator('polyline[data-series="attention"]').count(), 0, "no line for a dimension never known");
  const last = await page.getByTestId("last-decision").innerText();
  assert.match(last, /Resonance breathing/);
  assert.match(last, /Completed\. Rated 4 of 5\./);
  assert.match(last, new RegExp(`went down by ${Math.abs(logged.outcome.change).toFixed(3)}`));
  await check(page, "feedback");

  // Simplified Chinese, by the switch.
  await page.getByLabel("Language").selectOption("zh-CN");
  await page.getByRole("heading", { level: 1, name: "我的状态" }).waitFor();
  assert.equal(await page.evaluate(() => document.documentElement.lang), "zh-CN");
  assert.ok(await page.getByRole("button", { name: "我的数据" }).isVisible());
  assert.match(await page.getByTestId("physiology-off").innerText(), /从不根据心脏信号推断/);
  await check(page, "feedback-zh");
  await page.getByLabel("语言").selectOption("en");
  await page.getByRole("heading", { level: 1, name: "How I am" }).waitFor();

  // My data: the export downloads JSON.
  await page.getByRole("button", { name: "My data" }).click();
  await page.getByRole("heading", { level: 1, name: "My data" }).waitFor();
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download my data (JSON)" }).click()]);
  assert.match(download.suggestedFilename(), /^attune-my-data-\d{4}-\d{2}-\d{2}\.json$/);
  const exported = JSON.parse(readFileSync(await download.path(), "utf8"));
  // The engine's own export, downloaded as it answers (docs/engine-api.md).
  assert.equal(exported.format, "attune.user-export/v1");
  assert.deepEqual([...exported.consent.scopes].sort(), [...granted].sort());
  assert.equal(exported.consent.policyVersion, noticeV1, "the engine recorded the notice version the user saw");
  assert.ok(exported.consentLedger.length >= 1, "the consent ledger comes with the user's data");
  assert.ok(Math.abs(exported.state.emotion.value - emotion) < 1e-9, `exported emotion ${exported.state.emotion.value}, want ${emotion}`);
  assert.equal(exported.state.lastDecision.id, decision.id);
  assert.ok(exported.decisions.some((d) => d.id === decision.id), "the decision log comes with the user's data");
  writeFileSync(join(outputDir, "export.json"), JSON.stringify(exported, null, 2) + "\n");
  await check(page, "my-data");

  // Erase, with confirmation; then the engine does not know the user.
  await page.getByRole("button", { name: "Erase all my data" }).click();
  await page.getByRole("dialog", { name: "Erase everything?" }).waitFor();
  await check(page, "erase-confirm");
  await page.getByRole("button", { name: "Yes, erase" }).click();
  await page.getByRole("heading", { level: 1, name: "Your consent" }).waitFor();
  await page.getByTestId("status").filter({ hasText: "Erased. The engine no longer knows you." }).waitFor();
  assert.equal((await api(engine, "GET", `/v1/users/${user}/state`)).status, 404);
  assert.equal((await api(engine, "GET", "/v1/decisions")).text.trim(), "", "the decision log is erased with the user");
  assert.ok(await page.getByRole("button", { name: "Session", exact: true }).isDisabled());
  assert.equal(await page.evaluate((u) => localStorage.getItem(`attune.history.${u}`), user), null);
  await check(page, "erased");

  assert.deepEqual(problems, []);
  for (const screen of ["consent", "consent-granted", "session-ask", "session-offer", "session-breathing", "session-rating", "feedback", "feedback-zh", "my-data", "erase-confirm", "erased"]) {
    assert.deepEqual(seriousOrCritical(screen), [], `serious or critical axe violations on ${screen}`);
  }
});

test("by keyboard alone, with reduced motion: a counting pacer; stopping records an incomplete session", async () => {
  const user = "web-e2e-ben";
  const { page, problems } = await openPage({ reducedMotion: "reduce" });
  await page.goto(launchURL(`${client.origin}/`, user));
  await page.getByRole("heading", { level: 1, name: "Your consent" }).waitFor();
  await tabTo(page, '[data-scope="behaviour"] [role="switch"]');
  await page.keyboard.press("Space");
  await page.locator('[data-scope="behaviour"] [role="switch"][aria-checked="true"]').waitFor();
  await tabTo(page, 'nav [data-screen="session"]');
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { level: 1, name: "Session" }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.tagName), "H1", "focus moves to the new screen's heading");
  await askUntilOffered(page);
  await tabTo(page, "button.primary"); // Begin
  await page.keyboard.press("Enter");
  await page.getByTestId("pacer").waitFor();
  assert.equal(await page.getByTestId("pacer-circle").count(), 0, "no animated circle under reduced motion");
  const counts = new Set();
  for (let i = 0; i < 8; i++) {
    counts.add(await page.getByTestId("count").innerText());
    await page.waitForTimeout(400);
  }
  assert.ok([...counts].every((c) => /^[1-5]$/.test(c)) && counts.size >= 3, `the display counts the seconds of each breath: ${[...counts]}`);
  await tabTo(page, "button[aria-pressed]"); // Pause, so the session outlasts the checks
  await page.keyboard.press("Enter");
  await page.getByTestId("phase").filter({ hasText: "Paused" }).waitFor();
  await check(page, "session-reduced-motion");
  assert.deepEqual(seriousOrCritical("session-reduced-motion"), []);

  await tabTo(page, "button.danger"); // Stop
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { level: 1, name: "You stopped the session." }).waitFor();
  await tabTo(page, 'button[data-rating="1"]');
  await tabTo(page, "button:not([data-rating]):not([data-screen])"); // Skip, after the ratings
  await page.keyboard.press("Enter");
  await page.getByTestId("status").filter({ hasText: "Your answer was recorded" }).waitFor();
  const last = (await api(engine, "GET", `/v1/users/${user}/state`)).json.lastDecision;
  assert.equal(last.completed, false);
  assert.equal(last.rating, undefined);
  assert.deepEqual(problems, []);
});

test("the engine serves the client at /app/, in the browser's language", async () => {
  const { page, problems } = await openPage({ locale: "zh-CN" });
  // No engine parameter: the client talks to the origin that served it.
  await page.goto(`${engine.url}/app/#user=web-e2e-cy&token=${engine.token}`);
  await page.getByRole("heading", { level: 1, name: "你的同意" }).waitFor();
  assert.equal(await page.evaluate(() => document.documentElement.lang), "zh-CN");
  assert.equal(await page.getByTestId("policy-version").innerText(), `隐私声明，版本 ${noticeV1}`);
  assert.match(await page.locator('[data-scope="behaviour"]').innerText(), /30 天后删除/);
  await check(page, "consent-zh");
  assert.deepEqual(seriousOrCritical("consent-zh"), []);
  // Without the launch fragment the client says where to come from.
  const bare = await (await browser.newContext({ locale: "en-GB" })).newPage();
  await bare.goto(`${engine.url}/app/`);
  await bare.getByRole("alert").filter({ hasText: "the link your world gives you" }).waitFor();
  assert.deepEqual(problems, []);
});

test("a new privacy notice asks for consent again before data counts", async () => {
  const user = "web-e2e-dee";
  const { page, problems } = await openPage();
  await page.goto(launchURL(`${client.origin}/`, user));
  await page.locator('[data-scope="behaviour"] [role="switch"]').click();
  await page.locator('[data-scope="behaviour"] [role="switch"][aria-checked="true"]').waitFor();
  const behaviour = () => api(engine, "POST", "/v1/telemetry", [{ user, kind: "behaviour", at: new Date().toISOString(), events: [{ type: "focus", at: new Date().toISOString() }] }]);
  assert.equal((await behaviour()).status, 200);

  // The program publishes a new notice and requires consent to it.
  const noticeV2 = "notice-2027-01";
  engine.reconfigure({ consent: { policyVersion: noticeV2, requireReconsent: true } });
  for (let i = 0; (await api(engine, "GET", "/v1/privacy")).json.policyVersion !== noticeV2; i++) {
    assert.ok(i < 100, "the engine did not reload its configuration");
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal((await behaviour()).status, 403, "consent under the old notice no longer counts");

  await page.reload();
  await page.getByRole("button", { name: "Consent", exact: true }).click();
  const note = page.getByTestId("reconsent");
  await note.waitFor();
  assert.match(await note.innerText(), new RegExp(`version ${noticeV1} .* now version ${noticeV2}.*accepts no new data`));
  await check(page, "consent-reconfirm");
  await page.getByRole("button", { name: `Confirm my choices under version ${noticeV2}` }).click();
  await page.getByTestId("status").filter({ hasText: `confirmed under version ${noticeV2}` }).waitFor();
  assert.equal(await note.count(), 0);
  assert.equal((await behaviour()).status, 200, "consent to the new notice counts");
  assert.deepEqual(seriousOrCritical("consent-reconfirm"), []);
  assert.deepEqual(problems, []);
});
