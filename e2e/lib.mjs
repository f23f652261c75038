// Helpers shared by the browser tests (jobs-page.test.mjs, redis-browser.test.mjs): free loopback
// ports, child processes that are always stopped, bounded waits, headless Debian Chromium, and a
// runner with a whole-test watchdog. Node's standard library and playwright-core only.

import { spawn } from "node:child_process";
import { appendFileSync, cpSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const ARTIFACTS = process.env.E2E_ARTIFACTS || path.join(ROOT, "target/e2e");
export const STEP_MS = 45_000; // a bound per step (the jobs page refreshes every 5-12 s), not a pause
const API_BIN = process.env.API_BIN || path.join(ROOT, "target/debug/api");
const WORKER_BIN = process.env.WORKER_BIN || path.join(ROOT, "target/debug/worker");

export const children = [];
const tempDirs = [];

export function log(...args) {
  console.log("[e2e]", ...args);
}

/** A loopback port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A temp dir removed by stopAll. */
export function tempDir(prefix) {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

/** Spawn a child whose output is kept (and echoed on failure). */
export function start(name, cmd, args, env = {}, options = {}) {
  const child = spawn(cmd, args, {
    cwd: ROOT,
    ...options,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.output = "";
  const keep = (chunk) => {
    child.output += chunk.toString();
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  child.exited = new Promise((resolve) => child.once("exit", resolve));
  child.label = name;
  children.push(child);
  return child;
}

/** Poll `check` every 200 ms until truthy or `ms` passes; throws with `what` on timeout.
 * An error made by `fatal()` ends the wait at once; any other counts as "not yet". */
export async function waitFor(what, check, ms = STEP_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      if (e.fatal) throw e; // e.g. the page answered with an error: waiting longer cannot help
    }
    if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** True when something answers 2xx at `url` within 2 s. */
export async function answers(url) {
  const resp = await fetch(url, { signal: AbortSignal.timeout(2000) });
  return resp.ok;
}

/** Send one inline Redis command (raw RESP over TCP, no client library); resolves to the reply text. */
export function redisCommand(port, command) {
  return new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1");
    let reply = "";
    sock.setTimeout(1000, () => {
      sock.destroy();
      resolve(reply);
    });
    sock.on("error", () => resolve(reply));
    sock.on("data", (d) => {
      reply += d.toString();
      sock.destroy();
      resolve(reply);
    });
    sock.write(`${command}\r\n`);
  });
}

/** Redis answers PING. */
export async function redisPing(port) {
  return (await redisCommand(port, "PING")).startsWith("+PONG");
}

/** A redis-server on a free loopback port in a temp dir, without persistence; resolves to its port. */
export async function startRedis() {
  const port = await freePort();
  start("redis", "redis-server", [
    "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
    "--dir", tempDir("cacheserver-e2e-redis-"),
  ]);
  await waitFor("redis-server", () => redisPing(port));
  return port;
}

/** An error that ends a waitFor at once. */
export function fatal(message) {
  return Object.assign(new Error(message), { fatal: true });
}

/** The repository's config with `extra` YAML appended to the test environment's overrides (for
 *  what `APP__*` variables cannot say, such as the list `jobqueue.queues`); its root. */
function configWith(extra) {
  if (!extra) return path.join(ROOT, "config");
  const root = tempDir("cacheserver-e2e-config-");
  cpSync(path.join(ROOT, "config"), root, { recursive: true });
  appendFileSync(path.join(root, "test", "config.yaml"), `\n${extra}\n`);
  return root;
}

/** A redis-server, the api (limiter in memory, default limits) and a worker on free ports;
 *  `config` is YAML added to the test environment's config file (both read it). */
export async function startStack({ config } = {}) {
  for (const bin of [API_BIN, WORKER_BIN, CHROMIUM]) {
    if (!existsSync(bin)) throw new Error(`${bin} is missing (build with: just e2e)`);
  }
  const redisPort = await startRedis();
  const [apiPort, healthPort] = [await freePort(), await freePort()];
  const env = {
    APP_ENV: "test",
    APP_CONFIG_DIR: configWith(config),
    APP__SERVER__HOST: "127.0.0.1",
    APP__SERVER__PORT: String(apiPort),
    APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR: `127.0.0.1:${redisPort}`,
    // Empty: rate limiting in memory, no cluster needed.
    APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS: "",
    APP__JOBQUEUE__WORKER__HEALTH_PORT: String(healthPort),
    APP__LOGGING__LEVEL: "info",
  };
  start("api", API_BIN, [], env);
  const worker = start("worker", WORKER_BIN, ["--name", `e2e-${process.pid}`], env);
  const base = `http://127.0.0.1:${apiPort}`;
  await waitFor("api /ready", () => answers(`${base}/ready`));
  await waitFor("worker /health", () => answers(`http://127.0.0.1:${healthPort}/health`));
  return { base, worker };
}

/** Headless Chromium with a throwaway profile. */
export async function launchBrowser() {
  return chromium.launchPersistentContext(tempDir("cacheserver-e2e-chromium-"), {
    executablePath: CHROMIUM,
    headless: true,
    timeout: STEP_MS,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--no-first-run",
    ],
    viewport: { width: 1100, height: 900 },
  });
}

/** SIGTERM every child, SIGKILL what is left after 5 s. */
export async function stopAll() {
  for (const child of children) if (child.exitCode === null) child.kill("SIGTERM");
  const grace = new Promise((r) => setTimeout(r, 5000));
  await Promise.race([Promise.all(children.map((c) => c.exited)), grace]);
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
}

/**
 * Run `body` under a watchdog of `wholeMs`; on failure print every child's output. Always stops
 * the children, prints the closing line test runners print, and exits with the result.
 */
export async function run(name, wholeMs, body) {
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, async () => {
      await stopAll();
      process.exit(130);
    });
  }
  const watchdog = setTimeout(async () => {
    console.error(`[e2e] FAILED: ${name} took longer than ${wholeMs} ms`);
    await stopAll();
    process.exit(1);
  }, wholeMs);
  let failed = false;
  try {
    await body();
  } catch (e) {
    failed = true;
    console.error(`[e2e] FAILED (${name}):`, e);
    for (const child of children) {
      console.error(`--- ${child.label} output (last 3000 chars) ---\n${child.output.slice(-3000)}`);
    }
  } finally {
    clearTimeout(watchdog);
    await stopAll();
  }
  console.log(failed ? `e2e ${name}: 0 passed, 1 failed` : `e2e ${name}: 1 passed, 0 failed`);
  process.exit(failed ? 1 : 0);
}

/** `run` with a fresh stack (`stack`: [`startStack`]'s options) handed to `scenario({ base, worker })`. */
export function runTest(name, scenario, wholeMs, stack = {}) {
  return run(name, wholeMs, async () => scenario(await startStack(stack)));
}
