// Browser test of the jobs page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core). Starts a real redis-server, the api and a worker on free loopback ports,
// registers a job through the page and waits until the page shows it `done`; then a failing job
// becomes dead and is retried from the page. Every wait is bounded; every process is killed on
// exit. Needs the binaries built first (`just e2e` builds them).
//
// Env: API_BIN, WORKER_BIN (default target/debug/{api,worker}), CHROMIUM (default
// /usr/bin/chromium), E2E_ARTIFACTS (screenshots; default target/e2e).

import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import {
  ROOT, CHROMIUM, ARTIFACTS, STEP_MS, log, freePort, start, waitFor, answers, startRedis,
  launchBrowser, run,
} from "./lib.mjs";

const API_BIN = process.env.API_BIN || path.join(ROOT, "target/debug/api");
const WORKER_BIN = process.env.WORKER_BIN || path.join(ROOT, "target/debug/worker");
const WHOLE_TEST_MS = 180_000;

async function startStack() {
  for (const bin of [API_BIN, WORKER_BIN, CHROMIUM]) {
    if (!existsSync(bin)) throw new Error(`${bin} is missing (build with: just e2e)`);
  }
  const redisPort = await startRedis();
  const [apiPort, healthPort] = [await freePort(), await freePort()];
  const env = {
    APP_ENV: "test",
    APP_CONFIG_DIR: path.join(ROOT, "config"),
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

/** Ids the page has announced so far: a success alert naming one of them is stale. */
const announced = new Set();

/** Fill the form and register; returns the new job's id as the page shows it. */
async function registerThroughPage(page, message, delay, maxRetry) {
  await page.fill("#message", message);
  await page.fill("#delay", String(delay));
  await page.fill("#max-retry", String(maxRetry));
  await page.click("#register");
  // The previous registration's alert may still be on screen: wait for one naming a new id.
  const alert = page.locator("#alert.success", { hasText: "registered" });
  const id = await waitFor("the page to announce a new job id", async () => {
    const found = /Job (\S+) registered/.exec((await alert.textContent({ timeout: 1000 })) || "")?.[1];
    return found && !announced.has(found) ? found : null;
  });
  announced.add(id);
  return id;
}

async function jobStatusBecomes(page, id, status) {
  const badge = page.locator(`#jobs-body tr[data-job-id="${id}"] .badge`);
  await waitFor(`job ${id} shown as ${status}`, async () => (await badge.textContent()) === status);
}

async function scenario(base, worker) {
  const context = await launchBrowser();
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(STEP_MS);
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    await page.goto(`${base}/`, { timeout: STEP_MS });

    const message = `hello from the e2e test ${Date.now()}`;
    const id = await registerThroughPage(page, message, 1, 0);
    log(`registered ${id}; waiting for done`);
    await jobStatusBecomes(page, id, "done");
    await waitFor("the worker's printed line", () => worker.output.includes(message));
    await waitFor("queue counts showing the done job", async () =>
      Number(await page.locator('[data-stat="done"]').textContent()) >= 1);

    const failing = await registerThroughPage(page, `fail: on purpose ${Date.now()}`, 0, 0);
    await jobStatusBecomes(page, failing, "dead");
    const retry = page.locator("#dead-body button", { hasText: "Retry" }).first();
    await retry.waitFor({ timeout: STEP_MS });
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, "jobs-page.png"), fullPage: true });
    await retry.click();
    await page.locator("#alert.success", { hasText: "queued again" }).waitFor({ timeout: STEP_MS });
    // The retried job fails again (it always does) and is dead once more.
    await jobStatusBecomes(page, failing, "dead");
    await page.screenshot({ path: path.join(ARTIFACTS, "jobs-page-after-retry.png"), fullPage: true });
    if (pageErrors.length) throw new Error(`errors in the page: ${pageErrors.join("; ")}`);
    log(`ok; screenshots in ${ARTIFACTS}`);
  } finally {
    await context.close().catch(() => {});
  }
}

run("jobs page", WHOLE_TEST_MS, async () => {
  const { base, worker } = await startStack();
  await scenario(base, worker);
});
