// Browser test of the jobs page (the queue dashboard) in headless Chromium, against a real
// redis-server, api and worker (see lib.mjs). It runs under the default rate limits (60/min per
// client), shared by the page and the test's own API calls, and asserts that no request got 429.
// Covers: register through the page → done; a failing job → dead with its error history; retry
// one; bulk retry and bulk delete of selected dead jobs; tabs, pagination and the type filter;
// cancel a scheduled job; pause → banner, a due job does not start, resume → it runs; the chart;
// the page follows the queue's event stream; the queue's limits and a job's limit key; a second,
// declared queue with limits picked in the page, a job registered into it with a priority.
// No sleeps: every wait is for something the page shows, and bounded.

import { mkdirSync, copyFileSync, rmSync } from "node:fs";
import path from "node:path";
import { ARTIFACTS, ROOT, STEP_MS, fatal, launchBrowser, log, runTest, waitFor } from "./lib.mjs";

const WHOLE_TEST_MS = 300_000;
/** A queue declared in the stack's config, with limits the page shows. */
const LIMITED = "e2e-limited";
const QUEUES_CONFIG = `jobqueue:
  queues:
    - { name: ${LIMITED}, concurrency: 3, rate_limit: { max: 100, per: 1m }, key_concurrency: 2 }`;
const CHART_MS = 90_000; // the page fetches the history about once a minute

const row = (page, id) => page.locator(`#jobs-body tr[data-job-id="${id}"]`);
const rows = (page) => page.locator("#jobs-body tr");

async function shot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/**
 * Do `action`, then wait for a *new* alert (its sequence number grew) of `kind` whose text
 * matches `pattern`; returns the match. A new alert of the other kind fails at once.
 */
async function expectAlert(page, action, kind, pattern) {
  const alert = page.locator("#alert");
  const before = Number(await alert.getAttribute("data-seq"));
  await action();
  return waitFor(`a new ${kind} alert matching ${pattern}`, async () => {
    if (Number(await alert.getAttribute("data-seq")) <= before || (await alert.isHidden())) return null;
    const text = (await alert.textContent()) || "";
    if (!(await alert.getAttribute("class")).includes(kind)) throw fatal(`the page said: ${text}`);
    return pattern.exec(text) || null;
  });
}

async function registerThroughPage(page, payload, delay, maxRetry) {
  await page.selectOption("#job-type", "demo:delay_print");
  await page.fill("#payload", JSON.stringify(payload));
  await page.fill("#delay", String(delay));
  await page.fill("#max-retry", String(maxRetry));
  const [, id] = await expectAlert(page, () => page.click("#register"), "success", /Job (\S+) registered/);
  return id;
}

async function openTab(page, state) {
  await page.click(`#tabs [data-state="${state}"]`);
  await page.locator(`#tabs [data-state="${state}"].active`).waitFor();
}

async function count(page, state) {
  return Number(await page.locator(`[data-count="${state}"]`).textContent());
}

async function countBecomes(page, state, n, ms) {
  await waitFor(`the ${state} tab to count ${n}`, async () => (await count(page, state)) === n, ms);
}

async function rowShown(page, id, ms) {
  await waitFor(`job ${id} in the list`, async () => (await row(page, id).count()) === 1, ms);
}

async function rowCount(page, n) {
  await waitFor(`${n} rows in the list`, async () => (await rows(page).count()) === n);
}

/** The api's own client, for setting up many jobs in one request (it shares the rate limit). */
async function registerBatch(base, jobs) {
  const resp = await fetch(`${base}/api/jobs/batch`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ jobs }),
  });
  if (resp.status !== 201) throw new Error(`batch: ${resp.status} ${await resp.text()}`);
  return (await resp.json()).jobs.map((j) => j.job_id);
}

async function scenario({ base, worker }) {
  rmSync(path.join(ARTIFACTS, "jobs-page-failure.png"), { force: true }); // from an earlier run
  const context = await launchBrowser();
  const page = context.pages()[0] || (await context.newPage());
  // The page's last API calls, printed on failure: when did it last read what?
  const calls = [];
  page.on("response", (r) => {
    if (!r.url().includes("/api/")) return;
    calls.push(`${new Date().toISOString().slice(11, 23)} ${r.request().method()} ${r.status()} ${r.url().slice(base.length)}`);
    if (calls.length > 40) calls.shift();
  });
  try {
    await steps(page, base, worker);
  } catch (e) {
    // What the page showed when it failed, for the CI artefacts.
    await shot(page, "jobs-page-failure.png").catch(() => {});
    console.error(`--- the page's last API calls ---\n${calls.join("\n")}`);
    throw e;
  } finally {
    await context.close().catch(() => {});
  }
}

async function steps(page, base, worker) {
  {
    page.setDefaultTimeout(STEP_MS);
    const pageErrors = [];
    const limited = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    page.on("dialog", (d) => d.accept()); // the bulk delete asks for confirmation
    page.on("response", (r) => r.status() === 429 && limited.push(r.url()));
    const streams = []; // the page follows the queue's event stream (SSE) instead of polling
    page.on("response", (r) => r.url().endsWith("/api/queues/dm-jobqueue/events") && streams.push(r.status()));
    await page.goto(`${base}/`, { timeout: STEP_MS });
    await page.locator("#queue-name", { hasText: "dm-jobqueue" }).waitFor();
    await page.locator('#job-type option[value="demo:delay_print"]').waitFor({ state: "attached" });
    // The queue's limits (none declared for it here): running against its concurrency, the
    // waiting jobs, and each limit shown as such.
    await page.locator('#queue-limits [data-limit="running"]', { hasText: /^\d+ \(no limit\)$/ }).waitFor();
    for (const limit of ["rate_limit", "key_concurrency", "key_rate_limit"]) {
      await page.locator(`#queue-limits [data-limit="${limit}"]`, { hasText: "no limit" }).waitFor();
    }
    await page.locator('#queue-limits [data-limit="waiting"]', { hasText: /^\d+$/ }).waitFor();

    // 1. Register through the page and see it done.
    const message = `hello from the e2e test ${Date.now()}`;
    const id = await registerThroughPage(page, { message }, 1, 0);
    log(`registered ${id}; waiting for done`);
    await openTab(page, "done");
    await rowShown(page, id);
    await waitFor("the worker's printed line", () => worker.output.includes(message));

    // 2. A failing job reaches dead; its detail shows the error history (2 runs).
    const failing = await registerThroughPage(page, { message: `fail: on purpose ${Date.now()}` }, 0, 1);
    await openTab(page, "dead");
    await rowShown(page, failing);
    await row(page, failing).locator("button.link").click();
    await page.locator("#detail-id", { hasText: failing }).waitFor();
    await page.locator('#detail [data-field="status"]', { hasText: "dead" }).waitFor();
    await waitFor("two failures in the error history", async () => (await page.locator("#detail-errors tbody tr").count()) === 2);
    const errors = await page.locator("#detail-errors tbody").textContent();
    if (!errors.includes("on purpose")) throw new Error(`error history without the failure: ${errors}`);
    await shot(page, "jobs-page-detail.png");

    // 3. Retry one: it gets its runs again (1 + max retry), fails again and is dead once more.
    await expectAlert(page, () => row(page, failing).locator("button", { hasText: "Retry" }).click(), "success",
      new RegExp(`Job ${failing} queued again`));
    await waitFor("the retried job dead again with 4 failures in its history", async () =>
      (await page.locator("#detail-errors tbody tr").count()) === 4 &&
      (await page.locator('#detail [data-field="status"]').textContent()) === "dead");

    // 4. Bulk retry, then bulk delete, of selected dead jobs.
    const more = await registerBatch(base, [1, 2].map((i) => ({
      type: "demo:delay_print", payload: { message: `fail: bulk ${i}` }, max_retry: 0,
    })));
    for (const m of more) await rowShown(page, m);
    await countBecomes(page, "dead", 3);
    for (const m of more) await row(page, m).locator("input.select").check();
    await expectAlert(page, () => page.click("#bulk-retry"), "success", /^2 jobs of 2 selected queued again/);
    await waitFor("both retried jobs dead again (2 failures each)", async () => {
      for (const m of more) {
        if ((await row(page, m).count()) !== 1) return false; // not back in the dead tab yet
        if ((await row(page, m).getAttribute("data-failures")) !== "2") return false;
      }
      return true;
    });
    await page.check("#select-all");
    await expectAlert(page, () => page.click("#bulk-delete"), "success", /^3 jobs of 3 selected deleted/);
    await countBecomes(page, "dead", 0);
    await page.locator("#jobs-empty", { hasText: "No dead jobs" }).waitFor();

    // 5. Tabs + pagination (more jobs than a page) + type filter; cancel a scheduled job.
    const later = await registerBatch(base, Array.from({ length: 12 }, (_, i) => ({
      type: "demo:delay_print", payload: { message: `later ${i}` }, delay_seconds: 3600, limit_key: `tenant-${i}`,
    })));
    await openTab(page, "scheduled");
    await page.selectOption("#page-size", "10");
    await countBecomes(page, "scheduled", 12);
    await rowCount(page, 10);
    await page.locator("#next-page:enabled").waitFor();
    await page.click("#next-page");
    await page.locator("#page-label", { hasText: "page 2" }).waitFor();
    await rowCount(page, 2);
    const seen = new Set();
    for (const tr of await rows(page).all()) seen.add(await tr.getAttribute("data-job-id"));
    await page.click("#prev-page");
    await page.locator("#page-label", { hasText: "page 1" }).waitFor();
    await rowCount(page, 10);
    for (const tr of await rows(page).all()) seen.add(await tr.getAttribute("data-job-id"));
    if (!later.every((j) => seen.has(j))) throw new Error("the two pages do not hold all 12 scheduled jobs");
    await page.fill("#type-filter", "other:type");
    await page.press("#type-filter", "Enter");
    await page.locator("#jobs-empty", { hasText: "No scheduled jobs of type other:type" }).waitFor();
    await page.fill("#type-filter", "demo:delay_print");
    await page.press("#type-filter", "Enter");
    await rowCount(page, 10);
    const cancelled = await rows(page).first().getAttribute("data-job-id");
    await expectAlert(page, () => row(page, cancelled).locator("button", { hasText: "Cancel" }).click(), "success",
      new RegExp(`Job ${cancelled} cancelled`));
    await countBecomes(page, "scheduled", 11);
    await waitFor("the cancelled job gone from the list", async () => (await row(page, cancelled).count()) === 0);
    await page.fill("#type-filter", "");
    await page.press("#type-filter", "Enter");

    // 6. Pause → banner; a due job does not start; resume → it runs.
    await expectAlert(page, () => page.click("#pause-toggle"), "success", /paused/);
    await page.locator("#paused-banner").waitFor({ state: "visible" });
    const pausedMessage = `while paused ${Date.now()}`;
    const held = await registerThroughPage(page, { message: pausedMessage }, 0, 0);
    await openTab(page, "pending");
    await rowShown(page, held);
    // Two more refreshes of the page (each reads the counts) with the job still pending.
    for (let i = 0; i < 2; i++) {
      const stamp = await page.locator("#updated").textContent();
      await waitFor("the page to refresh", async () => (await page.locator("#updated").textContent()) !== stamp);
    }
    if ((await row(page, held).count()) !== 1 || worker.output.includes(pausedMessage)) {
      throw new Error("a job started while the queue was paused");
    }
    const waiting = Number(await page.locator('#queue-limits [data-limit="waiting"]').textContent());
    if (waiting < 1) throw new Error(`the held job is not counted as waiting: ${waiting}`);
    await shot(page, "jobs-page-paused.png");
    await expectAlert(page, () => page.click("#banner-resume"), "success", /resumed/);
    await page.locator("#paused-banner").waitFor({ state: "hidden" });
    await openTab(page, "done");
    await rowShown(page, held);
    await waitFor("the held job's printed line", () => worker.output.includes(pausedMessage));

    // 7. The chart shows processed and failed runs (from the history route).
    await waitFor("the chart to count processed and failed runs", async () => {
      const summary = page.locator("#chart-summary");
      return Number(await summary.getAttribute("data-processed")) >= 2 &&
        Number(await summary.getAttribute("data-failed")) >= 5 &&
        (await page.locator("#chart rect.processed").count()) >= 1 &&
        (await page.locator("#chart rect.failed").count()) >= 1;
    }, CHART_MS);
    await openTab(page, "scheduled");
    await rowCount(page, 10); // 11 left, 10 a page
    await rows(page).first().locator("button.link").click();
    await page.locator('#detail [data-field="status"]', { hasText: "scheduled" }).waitFor();
    await page.locator('#detail [data-field="limit_key"]', { hasText: /^tenant-\d+$/ }).waitFor();
    const dashboard = await shot(page, "jobs-dashboard.png");
    if (process.env.E2E_UPDATE_DOCS) copyFileSync(dashboard, path.join(ROOT, "docs", "jobs-dashboard.png"));
    await page.click("#detail-close");

    // 8. The declared queue, picked in the page: its limits; a job registered into it (the form's
    //    queue follows the queue shown) with priority 7 runs there and is listed there only.
    await page.selectOption("#queue-picker", LIMITED);
    await page.locator("#queue-name", { hasText: LIMITED }).waitFor();
    await page.locator('#queue-limits [data-limit="running"]', { hasText: /^\d+ \/ 3$/ }).waitFor();
    await page.locator('#queue-limits [data-limit="rate_limit"]', { hasText: "100 per 60 s" }).waitFor();
    await page.locator('#queue-limits [data-limit="key_concurrency"]', { hasText: /^2$/ }).waitFor();
    if ((await page.inputValue("#job-queue")) !== LIMITED) throw new Error("the form's queue is not the queue shown");
    await page.fill("#priority", "7");
    const elsewhere = `in ${LIMITED} ${Date.now()}`;
    const elsewhereId = await registerThroughPage(page, { message: elsewhere }, 0, 0);
    await openTab(page, "done");
    await rowShown(page, elsewhereId);
    await waitFor("the other queue's printed line", () => worker.output.includes(elsewhere));
    await row(page, elsewhereId).locator("button.link").click();
    await page.locator('#detail [data-field="priority"]', { hasText: /^7$/ }).waitFor();
    await page.selectOption("#queue-picker", "dm-jobqueue");
    await page.locator("#queue-name", { hasText: "dm-jobqueue" }).waitFor();
    await rowShown(page, held);
    if ((await row(page, elsewhereId).count()) !== 0) throw new Error(`${elsewhereId} is listed in dm-jobqueue`);

    if (pageErrors.length) throw new Error(`errors in the page: ${pageErrors.join("; ")}`);
    if (limited.length) throw new Error(`the page was rate limited (429): ${limited.join(", ")}`);
    if (!streams.includes(200)) throw new Error(`the page never opened the queue's event stream: ${streams.join(", ")}`);
    log(`ok; screenshots in ${ARTIFACTS}`);
  }
}

runTest("jobs page", scenario, WHOLE_TEST_MS, { config: QUEUES_CONFIG });
