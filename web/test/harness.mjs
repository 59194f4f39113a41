// Test harness: a real engine process on loopback (cmd/engine, built with
// `go build -o` unless ATTUNE_ENGINE_BINARY names one), a second origin
// serving web/dist the way a world would host it, and Debian's chromium
// driven by playwright-core.

import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const webDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const repoRoot = resolve(webDir, "..");
export const distDir = join(webDir, "dist");
export const outputDir = resolve(process.env.ATTUNE_WEB_TEST_OUTPUT || join(webDir, "test-output"));

/** The engine binary: ATTUNE_ENGINE_BINARY, else built from cmd/engine. */
export function engineBinary(scratch) {
  if (process.env.ATTUNE_ENGINE_BINARY) return resolve(process.env.ATTUNE_ENGINE_BINARY);
  const out = join(scratch, "engine");
  execFileSync("go", ["build", "-o", out, "./cmd/engine"], { cwd: repoRoot, stdio: "inherit" });
  return out;
}

/**
 * Starts an engine with the given configuration overrides; resolves once
 * it serves. Returns its URL, its tokens and stop().
 */
export async function startEngine(binary, overrides = {}) {
  const dir = mkdtempSync(join(tmpdir(), "attune-web-engine-"));
  const rw = "rw-" + randomBytes(16).toString("hex");
  const ro = "ro-" + randomBytes(16).toString("hex");
  writeFileSync(join(dir, "token"), rw, { mode: 0o600 });
  writeFileSync(join(dir, "ro-token"), ro, { mode: 0o600 });
  writeFileSync(join(dir, "key"), randomBytes(32), { mode: 0o600 });
  mkdirSync(join(dir, "data"));
  const config = {
    program: "web/e2e",
    target: { attention: 0.8, emotion: 0.7, resilience: 0.7 },
    weights: { attention: 1, emotion: 1, resilience: 1 },
    interventions: ["ResonanceBreathing"],
    strength: { value: 0.9, min: 0.1, max: 0.9 },
    context: "Workplace",
    privacy: { retention: "720h", minCohortSize: 2 },
    tokenFile: join(dir, "token"),
    readOnlyTokenFile: join(dir, "ro-token"),
    pseudonymizationKeyFile: join(dir, "key"),
    dataDir: join(dir, "data"),
    listenAddress: "127.0.0.1:0",
    seed: 7,
    ...overrides,
  };
  const configPath = join(dir, "config.json");
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  const proc = spawn(binary, ["-config", configPath], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  const url = await new Promise((resolveURL, reject) => {
    const timer = setTimeout(() => reject(new Error(`engine did not start within 30 s:\n${log}`)), 30_000);
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (chunk) => {
      log += chunk;
      for (const line of log.split("\n")) {
        try {
          const entry = JSON.parse(line);
          if (entry.msg === "engine serving") {
            clearTimeout(timer);
            resolveURL(`http://${entry.address}`);
          }
        } catch {
          // not a whole JSON line yet
        }
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`engine exited with ${code}:\n${log}`));
    });
  });
  return {
    url,
    token: rw,
    readOnlyToken: ro,
    config,
    logs: () => log,
    /** Rewrites the configuration file; the engine reloads it within seconds. */
    reconfigure(more) {
      Object.assign(config, more);
      writeFileSync(configPath, JSON.stringify(config, null, 2));
    },
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Calls the engine API the way a world server would. */
export async function api(engine, method, path, body) {
  const resp = await fetch(engine.url + path, {
    method,
    headers: { Authorization: `Bearer ${engine.token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await resp.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // NDJSON or empty
  }
  return { status: resp.status, text, json };
}

// The engine's own headers for the client (engine/api/app.go), so the
// second origin runs the client under the same Content-Security-Policy.
const csp =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; form-action 'none'";
const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".json": "application/json" };

/** Serves dist/ on a loopback port: a world hosting the client itself. */
export async function serveClient() {
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    const file = normalize(join(distDir, path === "/" ? "index.html" : path));
    if (!file.startsWith(distDir + sep)) {
      res.writeHead(404).end();
      return;
    }
    try {
      if (!statSync(file).isFile()) throw new Error("not a file");
    } catch {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": types[extname(file)] ?? "application/octet-stream", "Content-Security-Policy": csp, "Cache-Control": "no-cache" });
    createReadStream(file).pipe(res);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return { origin: `http://127.0.0.1:${port}`, stop: () => new Promise((r) => server.close(r)) };
}

/**
 * Debian's chromium, headless, with its background networking off (this
 * machine's network is closed). Playwright gives each launch a fresh,
 * empty profile directory of its own.
 */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

export const viewports = {
  phone: { width: 390, height: 844 },
  desktop: { width: 1280, height: 800 },
};

/** Screenshots the page at phone and desktop sizes into outputDir/screenshots. */
export async function screenshots(page, name) {
  const dir = join(outputDir, "screenshots");
  mkdirSync(dir, { recursive: true });
  const before = page.viewportSize();
  const paths = [];
  for (const [size, viewport] of Object.entries(viewports)) {
    await page.setViewportSize(viewport);
    const path = join(dir, `${name}-${size}.png`);
    await page.screenshot({ path, fullPage: true, animations: "allow" });
    paths.push(path);
  }
  if (before) await page.setViewportSize(before);
  return paths;
}

const axeSource = readFileSync(join(webDir, "node_modules", "axe-core", "axe.min.js"), "utf8");

/** Runs axe-core on the page (WCAG 2.x A and AA rules and best practices). */
export async function axe(page, screen) {
  // Evaluated through the DevTools protocol, so the page's CSP does not
  // apply to it and the page runs under its real policy.
  await page.evaluate(axeSource);
  const result = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"] } }),
  );
  return result.violations.map((v) => ({ screen, id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")) }));
}
