// The jobs page. Plain JS, no dependencies: register a job, follow its status, show queue
// counts and dead jobs (with Retry). Every API call goes through `api()`, which shows errors
// readably and keeps the page under the api's rate limit (60 requests/minute by default).
"use strict";

const API = "/api/dm-jobqueue";
const TICK_MS = 1000; // one scheduler tick; each job is polled at most once per tick
const FAR_POLL_MS = 5000; // while a job is not due for a while
const STATS_POLL_MS = 10000;
const MAX_JOB_POLLS_PER_TICK = 3;
const LOW_BUDGET = 5; // requests left in the window below which only job polls are made
const TERMINAL = new Set(["done", "dead"]);

const jobs = new Map(); // id -> { id, message, status, attempts, runAt, nextPoll, lastError }
const rate = { remaining: null, resetAt: 0, pausedUntil: 0 };
let statsNext = 0;

const $ = (id) => document.getElementById(id);

/** A failed API call, with what the user should see. */
class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** fetch + JSON + rate-limit bookkeeping. Throws ApiError with a readable message. */
async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "The api cannot be reached (is it running?)");
  }
  noteRateLimit(resp);
  const data = await resp.json().catch(() => null);
  if (resp.ok) return data;
  throw new ApiError(resp.status, describe(resp, data), retryAfterSecs(resp));
}

function retryAfterSecs(resp) {
  const v = Number(resp.headers.get("Retry-After"));
  return Number.isFinite(v) && v > 0 ? v : 0;
}

function noteRateLimit(resp) {
  const remaining = resp.headers.get("X-RateLimit-Remaining");
  const reset = Number(resp.headers.get("X-RateLimit-Reset"));
  if (remaining !== null) {
    rate.remaining = Number(remaining);
    rate.resetAt = Date.now() + (Number.isFinite(reset) ? reset : 60) * 1000;
  }
  if (resp.status === 429) {
    rate.pausedUntil = Date.now() + Math.max(retryAfterSecs(resp), 1) * 1000;
  }
  $("rate").textContent = rate.remaining === null ? "" : `(${rate.remaining} requests left this minute)`;
}

function describe(resp, data) {
  const msg = data && data.message ? data.message : resp.statusText;
  switch (resp.status) {
    case 429:
      return `Too many requests: the api's rate limit is reached. Try again in ${retryAfterSecs(resp) || "a few"} s.`;
    case 503:
      return `The job queue is unavailable right now (Redis down?): ${msg}. Try again shortly.`;
    case 401:
      return `Not authorized: ${msg}.`;
    default:
      return `${resp.status} ${msg}`;
  }
}

function showAlert(kind, text) {
  const el = $("alert");
  el.className = `alert ${kind}`;
  el.textContent = text;
  el.hidden = false;
}

function clearAlert() {
  $("alert").hidden = true;
}

function showError(e) {
  showAlert("error", e instanceof ApiError ? e.message : String(e));
}

// ---- register ----

async function onRegister(event) {
  event.preventDefault();
  const button = $("register");
  const body = {
    message: $("message").value,
    delay_seconds: Number($("delay").value),
    max_retry: Number($("max-retry").value),
  };
  button.disabled = true;
  clearAlert(); // a message left from an earlier action must not read as this one's answer
  try {
    const created = await api("POST", `${API}/register`, body);
    const id = created.job_id;
    const runAt = created.run_at ? Date.parse(created.run_at) : Date.now() + body.delay_seconds * 1000;
    jobs.set(id, { id, message: body.message, status: created.status || "scheduled", attempts: 0, runAt, nextPoll: 0 });
    showAlert("success", `Job ${id} registered.`);
    $("message").value = "";
    renderJobs();
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
  }
}

// ---- polling ----

/** One scheduler tick: poll due jobs, then counts, within the rate budget. */
async function tick() {
  const now = Date.now();
  if (now < rate.pausedUntil) {
    const secs = Math.ceil((rate.pausedUntil - now) / 1000);
    showAlert("error", `Rate limited by the api: updates resume in ${secs} s.`);
    return;
  }
  await pollJobs(now);
  const lowBudget = rate.remaining !== null && rate.remaining <= LOW_BUDGET && now < rate.resetAt;
  if (now >= statsNext && !lowBudget) {
    statsNext = now + STATS_POLL_MS;
    await refreshStats();
  }
}

async function pollJobs(now) {
  const due = [...jobs.values()]
    .filter((j) => !TERMINAL.has(j.status) && now >= j.nextPoll)
    .sort((a, b) => a.nextPoll - b.nextPoll)
    .slice(0, MAX_JOB_POLLS_PER_TICK);
  for (const job of due) {
    // Every second once due; every few seconds while the due time is still far.
    job.nextPoll = now + (job.runAt - now > FAR_POLL_MS ? FAR_POLL_MS : TICK_MS);
    try {
      const info = await api("GET", `${API}/jobs/${encodeURIComponent(job.id)}`);
      const finished = !TERMINAL.has(job.status) && TERMINAL.has(info.status);
      Object.assign(job, { status: info.status, attempts: info.attempts, lastError: info.last_error });
      if (finished) statsNext = 0; // counts changed: refresh them on this tick
    } catch (e) {
      if (e.status === 404) job.status = "gone";
      showError(e);
      if (e.status === 429) break;
    }
  }
  if (due.length) renderJobs();
}

async function refreshStats() {
  try {
    const stats = await api("GET", `${API}/stats`);
    for (const dd of document.querySelectorAll("[data-stat]")) {
      const v = stats[dd.dataset.stat];
      dd.textContent = v === undefined ? "–" : v;
    }
    $("stats-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    renderDead(await deadJobs(stats));
  } catch (e) {
    showError(e);
  }
}

/** Dead jobs of the whole queue (one extra call, only when there are any). */
async function deadJobs(stats) {
  if (!stats.dead) return [];
  const list = await api("GET", `${API}/jobs?status=dead&limit=20`);
  return list.jobs;
}

async function onRetry(id, button) {
  button.disabled = true;
  try {
    await api("POST", `${API}/jobs/${encodeURIComponent(id)}/retry`);
    const job = jobs.get(id);
    if (job) Object.assign(job, { status: "pending", nextPoll: 0, runAt: Date.now() });
    showAlert("success", `Job ${id} queued again.`);
    statsNext = 0;
    renderJobs();
  } catch (e) {
    showError(e);
    button.disabled = false;
  }
}

// ---- rendering (textContent only: messages are user input) ----

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function badge(status) {
  const td = document.createElement("td");
  const span = document.createElement("span");
  span.className = `badge ${status}`;
  span.textContent = status;
  td.appendChild(span);
  return td;
}

function renderJobs() {
  const body = $("jobs-body");
  body.replaceChildren();
  for (const job of [...jobs.values()].reverse()) {
    const tr = document.createElement("tr");
    tr.dataset.jobId = job.id;
    tr.append(
      cell(job.id, "id"),
      cell(job.message),
      badge(job.status),
      cell(String(job.attempts ?? 0)),
      cell(new Date(job.runAt).toLocaleTimeString()),
    );
    body.appendChild(tr);
  }
  $("jobs-table").hidden = jobs.size === 0;
  $("jobs-empty").hidden = jobs.size !== 0;
}

function renderDead(list) {
  const body = $("dead-body");
  body.replaceChildren();
  for (const job of list) {
    const id = job.job_id || job.id;
    const tr = document.createElement("tr");
    const action = document.createElement("td");
    const button = document.createElement("button");
    button.className = "small";
    button.textContent = "Retry";
    button.addEventListener("click", () => onRetry(id, button));
    action.appendChild(button);
    tr.append(cell(id, "id"), cell(job.last_error || job.lastError || ""), cell(String(job.attempts ?? "")), action);
    body.appendChild(tr);
  }
  $("dead-table").hidden = list.length === 0;
  $("dead-empty").hidden = list.length !== 0;
}

/** Ticks never overlap: the next one is scheduled after the previous finished. */
async function loop() {
  try {
    await tick();
  } finally {
    setTimeout(loop, TICK_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("register-form").addEventListener("submit", onRegister);
  $("alert").addEventListener("click", clearAlert);
  loop();
});
