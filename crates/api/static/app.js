// The jobs page: an operator's view of the queue. Plain JS, no dependencies.
// Tabs per state with counts, cursor pagination and a type filter; a job's detail with its error
// history; retry / delete one job or the selected ones; pause / resume; runs per minute as an
// SVG chart; a form to register a job; refreshes driven by the queue's event stream (SSE) where
// the api offers it. Every API call goes through `api()`, which shows errors
// readably and paces the page under the api's rate limits (60/min, 1,000/h per client by
// default), leaving room for whatever else the same client calls. textContent only: payloads
// and errors are user input.
"use strict";

const STATES = ["scheduled", "pending", "running", "retrying", "done", "dead", "cancelled"];
/** States a job can be cancelled in (a running one is stopped by its worker). */
const CANCELLABLE = ["scheduled", "pending", "running", "retrying"];
const MIN_POLL_MS = 5000; // fastest refresh of counts (and the list when they change)
const MAX_POLL_MS = 60000;
const HIDDEN_POLL_MS = 30000; // a tab nobody looks at needs no fresh numbers
const LIST_MAX_AGE_MS = 15000; // the list is refreshed at least this often even if counts stay
const HISTORY_MS = 60000; // the chart's data is per minute
const HISTORY_SOON_MS = 20000; // sooner when jobs finished since the last fetch
const BUDGET_SHARE = 0.6; // the page spends at most this share of what is left in a window
const ACTION_GAP_MS = 1000; // refreshes triggered by clicks are at least this far apart
const SCHEDULES_MS = 30000; // schedules change rarely: their list is read this often
// With the queue's event stream open the page refreshes when a job changes state (still paced as
// above) and otherwise only this often: due times pass without an event (scheduled → pending).
const EVENTS_IDLE_MS = 20000;
const EVENTS_RETRY_MS = 60000; // after the stream failed (404: events off, 401, 429, 503), polling until then
const EVENT_STATES = ["registered", "started", "progress", "retrying", "done", "dead", "cancelled"];

const $ = (id) => document.getElementById(id);

const view = {
  state: "scheduled",
  type: "",
  pageSize: 20,
  cursors: [null], // cursors[i] fetches page i; the last entry is the current page's
  nextCursor: null,
  jobs: [], // the current page
  selected: new Set(),
  gen: 0, // bumped when tab, filter, page size or page change: older answers are dropped
};
const queue = { name: null, paused: false, counts: null };
const rate = { minute: null, hour: null, blockedUntil: 0 };
const timers = { settle: 0, listAt: 0, historyAt: 0, historyCounts: null, lastTick: 0, schedulesAt: 0 };
let detailId = null;
let knownTypes = []; // [{name, schema}] from the OpenAPI spec

/** A failed API call, with what the user should see. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// ---- API and rate limits ----

/** fetch + JSON + rate-limit bookkeeping. Throws ApiError with a readable message. */
async function api(method, path, body) {
  const wait = rate.blockedUntil - Date.now();
  if (wait > 0) throw new ApiError(429, `Rate limited by the api: try again in ${Math.ceil(wait / 1000)} s.`);
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch {
    throw new ApiError(0, "The api cannot be reached (is it running?)");
  }
  noteRateLimit(resp);
  const data = resp.status === 204 ? null : await resp.json().catch(() => null);
  if (resp.ok) return data;
  throw new ApiError(resp.status, describe(resp, data));
}

function header(resp, name) {
  const v = resp.headers.get(name);
  return v === null || v === "" || !Number.isFinite(Number(v)) ? null : Number(v);
}

function noteRateLimit(resp) {
  const now = Date.now();
  const window = (remaining, reset) => {
    const r = header(resp, remaining);
    const t = header(resp, reset);
    return r === null ? null : { remaining: r, resetAt: now + (t ?? 60) * 1000 };
  };
  rate.minute = window("X-RateLimit-Remaining", "X-RateLimit-Reset") || rate.minute;
  rate.hour = window("X-RateLimit-Hour-Remaining", "X-RateLimit-Hour-Reset") || rate.hour;
  if (resp.status === 429) {
    rate.blockedUntil = now + Math.max(header(resp, "Retry-After") ?? 0, 1) * 1000;
  }
  const parts = [];
  if (rate.minute) parts.push(`${rate.minute.remaining} requests left this minute`);
  if (rate.hour) parts.push(`${rate.hour.remaining} this hour`);
  $("rate").textContent = parts.length ? `(${parts.join(", ")})` : "";
}

/**
 * How long to wait before a tick that will make `requests` calls: never faster than
 * MIN_POLL_MS, and slow enough that the page uses only BUDGET_SHARE of what is left in each
 * window before it resets (so a user calling the api keeps the rest).
 */
function pollDelay(requests) {
  const now = Date.now();
  let delay = document.hidden ? HIDDEN_POLL_MS : MIN_POLL_MS;
  for (const w of [rate.minute, rate.hour]) {
    if (!w || w.resetAt <= now) continue;
    const left = w.remaining * BUDGET_SHARE;
    const perRequest = left >= 1 ? (w.resetAt - now) / left : w.resetAt - now;
    delay = Math.max(delay, perRequest * requests);
  }
  delay = Math.max(delay, rate.blockedUntil - now);
  return Math.min(delay, MAX_POLL_MS);
}

function describe(resp, data) {
  const msg = data && data.message ? data.message : resp.statusText;
  switch (resp.status) {
    case 429: {
      const secs = resp.headers.get("Retry-After");
      return `Too many requests: the api's rate limit is reached. Try again in ${secs || "a few"} s.`;
    }
    case 503:
      return `The job queue is unavailable right now (Redis down?): ${msg}. Try again shortly.`;
    case 401:
      return `Not authorized: ${msg}.`;
    default:
      return `${resp.status} ${msg}`;
  }
}

// ---- alerts ----

/** Each alert gets a new sequence number, so a reader can tell a new message from an old one. */
function showAlert(kind, text, rateLimited = false) {
  const el = $("alert");
  el.className = `alert ${kind}`;
  el.dataset.rateLimited = String(rateLimited); // cleared by the next successful refresh
  el.textContent = text;
  el.dataset.seq = String(Number(el.dataset.seq) + 1);
  el.hidden = false;
}

function clearAlert() {
  $("alert").hidden = true;
}

function showError(e) {
  showAlert("error", e instanceof ApiError ? e.message : String(e), e.status === 429);
}

// ---- the queue's event stream ----

// One EventSource on GET /api/queues/{queue}/events: each state change marks the page stale and
// brings the next refresh forward; with no change the page reads the api only every
// EVENTS_IDLE_MS instead of every MIN_POLL_MS. EventSource cannot send an Authorization header and
// gives up on a non-200 answer: then the page keeps polling and tries the stream again later.
const events = { source: null, live: false, stale: false, retryAt: 0 };

function openEvents() {
  if (events.source || !queue.name || typeof EventSource === "undefined" || Date.now() < events.retryAt) return;
  const source = new EventSource(`/api/queues/${encodeURIComponent(queue.name)}/events`);
  events.source = source;
  source.onopen = () => {
    events.live = true;
  };
  source.onerror = () => {
    events.live = false;
    if (source.readyState === EventSource.CLOSED) {
      // Refused: fall back to polling; the browser retries by itself only after a dropped stream.
      events.source = null;
      events.retryAt = Date.now() + EVENTS_RETRY_MS;
    }
  };
  const changed = () => {
    if (events.stale) return;
    events.stale = true;
    if (ticking) return; // the tick's end schedules the next one, paced as usual
    clearTimeout(timer);
    timer = setTimeout(loop, Math.max(0, timers.lastTick + pollDelay(2) - Date.now()));
  };
  for (const state of EVENT_STATES) source.addEventListener(state, changed);
}

// ---- polling ----

let timer = null;
let ticking = false;
let again = false;

/** Refresh now (after a click), but never two refreshes within ACTION_GAP_MS. */
function refreshSoon() {
  timers.listAt = 0;
  if (ticking) {
    again = true;
    return;
  }
  clearTimeout(timer);
  timer = setTimeout(loop, Math.max(0, timers.lastTick + ACTION_GAP_MS - Date.now()));
}

/** Ticks never overlap: the next one is scheduled when the previous has finished. */
async function loop() {
  ticking = true;
  let requests = 1;
  try {
    requests = await tick();
  } catch (e) {
    showError(e);
  } finally {
    ticking = false;
    timers.lastTick = Date.now();
    openEvents();
    if (again) {
      again = false;
      timer = setTimeout(loop, ACTION_GAP_MS);
    } else {
      // Pace by what the next tick will likely cost: counts, sometimes the list; with the event
      // stream open and nothing changed, wait longer (an event brings the tick forward).
      const delay = pollDelay(Math.max(requests, 1));
      timer = setTimeout(loop, events.live && !events.stale ? Math.max(delay, EVENTS_IDLE_MS) : delay);
    }
  }
}

/** One refresh: counts, then the list if anything changed, then the chart when due. */
async function tick() {
  const now = Date.now();
  if (now < rate.blockedUntil) return 0; // no request at all until Retry-After has passed
  let requests = 0;
  events.stale = false; // events from now on are news to this tick's reads
  const before = queue.counts;
  await refreshQueues();
  requests++;
  const changed = !before || STATES.some((s) => before[s] !== queue.counts[s]);
  // After a change the list is read on the next tick too: counts and lists are separate reads,
  // and a job counted as done may reach the done list a moment later.
  const settling = timers.settle > 0;
  timers.settle = changed ? 2 : Math.max(0, timers.settle - 1);
  if (changed || settling || now >= timers.listAt) {
    await refreshList();
    requests++;
  }
  const finishedSince =
    timers.historyCounts && (timers.historyCounts.done !== queue.counts.done || timers.historyCounts.dead !== queue.counts.dead);
  if (now >= timers.historyAt || (finishedSince && now >= timers.historyAt - HISTORY_MS + HISTORY_SOON_MS)) {
    await refreshHistory();
    requests++;
  }
  if (now >= timers.schedulesAt) {
    await refreshSchedules();
    requests++;
  }
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  if ($("alert").dataset.rateLimited === "true") clearAlert(); // the limit is over: say no more
  return requests;
}

async function refreshQueues() {
  const data = await api("GET", "/api/queues");
  // The queue picked (by default the first: the default queue), while it is still listed.
  const q = data.queues.find((x) => x.name === queue.name) || data.queues[0];
  if (!q) throw new Error("the api serves no queue");
  if (q.name !== queue.name) showQueue(q.name, false);
  fillQueuePickers(data.queues);
  queue.counts = q.counts;
  setPaused(q.paused);
  $("queue-name").textContent = q.name;
  renderLimits(q.limits);
  for (const el of document.querySelectorAll("[data-count]")) {
    const v = q.counts[el.dataset.count];
    el.textContent = v === undefined ? "–" : String(v);
  }
}

// Every queue the api lists, in the picker (with its pending count and whether it is paused)
// and in the register form's queue select (defaulting to the queue shown).
function fillQueuePickers(queues) {
  const picker = $("queue-picker");
  const label = (q) => `${q.name} (${q.counts.pending ?? 0} pending${q.paused ? ", paused" : ""})`;
  const names = queues.map((q) => q.name).join("\n");
  if (picker.dataset.names !== names) {
    picker.dataset.names = names;
    picker.replaceChildren(...queues.map((q) => new Option(label(q), q.name)));
    const form = $("job-queue");
    const chosen = form.value;
    form.replaceChildren(...queues.map((q) => new Option(q.name, q.name)));
    form.value = queues.some((q) => q.name === chosen) ? chosen : queue.name;
  } else {
    queues.forEach((q, i) => (picker.options[i].text = label(q)));
  }
  picker.value = queue.name;
}

/** Show queue `name`: its counts, limits, jobs, history and event stream. */
function showQueue(name, refresh = true) {
  queue.name = name;
  queue.counts = null;
  timers.historyAt = 0;
  if (events.source) events.source.close();
  Object.assign(events, { source: null, live: false, stale: false, retryAt: 0 });
  $("job-queue").value = name;
  closeDetail();
  clearView();
  if (refresh) refreshSoon();
}

// The queue's limits shared by all workers (jobqueue.queues; null: none) and what they count.
function renderLimits(limits) {
  const l = limits || {};
  const rate = (r) => (r ? `${r.max} per ${r.per_seconds} s` : "no limit");
  const cells = {
    running: l.concurrency == null ? `${l.running ?? 0} (no limit)` : `${l.running ?? 0} / ${l.concurrency}`,
    waiting: String(l.waiting ?? 0),
    rate_limit: rate(l.rate_limit),
    key_concurrency: l.key_concurrency == null ? "no limit" : String(l.key_concurrency),
    key_rate_limit: rate(l.key_rate_limit),
  };
  for (const dd of document.querySelectorAll("[data-limit]")) dd.textContent = cells[dd.dataset.limit];
  const full = l.concurrency != null && (l.running ?? 0) >= l.concurrency;
  $("queue-limits").classList.toggle("at-limit", full);
}

function setPaused(paused) {
  queue.paused = paused;
  $("paused-banner").hidden = !paused;
  $("paused-queue").textContent = queue.name || "";
  const button = $("pause-toggle");
  button.disabled = false;
  button.textContent = paused ? "Resume" : "Pause";
  button.classList.toggle("danger", !paused);
}

async function refreshList() {
  const params = new URLSearchParams({ queue: queue.name, state: view.state, limit: String(view.pageSize) });
  if (view.type) params.set("type", view.type);
  const cursor = view.cursors[view.cursors.length - 1];
  if (cursor) params.set("cursor", cursor);
  const gen = view.gen;
  const data = await api("GET", `/api/jobs?${params}`);
  if (gen !== view.gen) return; // the user moved on while this was in flight; refresh again
  view.jobs = data.jobs;
  view.nextCursor = data.next_cursor;
  timers.listAt = Date.now() + LIST_MAX_AGE_MS;
  renderList();
  const open = detailId && data.jobs.find((j) => j.job_id === detailId);
  if (open) renderDetail(open);
}

async function refreshHistory() {
  const data = await api("GET", `/api/queues/${encodeURIComponent(queue.name)}/history?minutes=60`);
  timers.historyAt = Date.now() + HISTORY_MS;
  timers.historyCounts = queue.counts;
  renderChart(data.minutes);
}

async function refreshSchedules() {
  const data = await api("GET", "/api/schedules");
  timers.schedulesAt = Date.now() + SCHEDULES_MS;
  renderSchedules(data.schedules);
}

// ---- schedules ----

function renderSchedules(schedules) {
  const body = $("schedules-body");
  body.replaceChildren();
  $("schedules-empty").hidden = schedules.length > 0;
  $("schedules-table").hidden = schedules.length === 0;
  for (const s of schedules) {
    const tr = document.createElement("tr");
    tr.append(cell(s.name));
    const cron = cell(s.description || s.cron);
    cron.title = `${s.cron} (${s.timezone})`;
    tr.append(cron, cell(s.paused ? "–" : when(s.next_run_at)));
    const last = document.createElement("td");
    if (s.last_job_id) {
      last.append(button(s.last_job_id, "secondary", () => openDetail(s.last_job_id)));
    } else {
      last.textContent = "–";
    }
    tr.append(last, cell(s.paused ? "paused" : "active"));
    const actions = document.createElement("td");
    const path = `/api/schedules/${encodeURIComponent(s.name)}`;
    actions.append(
      button(s.paused ? "Resume" : "Pause", s.paused ? "" : "danger", (e) =>
        scheduleAction(e.currentTarget, `${path}/${s.paused ? "resume" : "pause"}`, `Schedule ${s.name} ${s.paused ? "resumed" : "paused"}.`)
      ),
      button("Run now", "", (e) => scheduleAction(e.currentTarget, `${path}/trigger`, `Schedule ${s.name} triggered.`))
    );
    tr.append(actions);
    body.append(tr);
  }
}

function scheduleAction(control, path, done) {
  act(control, async () => {
    await api("POST", path);
    timers.schedulesAt = 0;
    return done;
  });
}

// ---- the list ----

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function button(text, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `small ${className || ""}`.trim();
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

function payloadSummary(payload) {
  const text = JSON.stringify(payload);
  return text.length > 80 ? `${text.slice(0, 77)}…` : text;
}

/** The time that matters in each state: when it runs, when it started, when it ended. */
function timeOf(job) {
  if (view.state === "running") return job.started_at;
  if (view.state === "done" || view.state === "dead" || view.state === "cancelled") return job.finished_at;
  return job.run_at;
}

function renderList() {
  const body = $("jobs-body");
  body.replaceChildren();
  const ids = new Set(view.jobs.map((j) => j.job_id));
  for (const id of view.selected) if (!ids.has(id)) view.selected.delete(id);
  for (const job of view.jobs) {
    const id = job.job_id;
    const tr = document.createElement("tr");
    tr.dataset.jobId = id;
    tr.dataset.failures = String(job.errors.length); // the history survives a retry; attempts restart
    tr.classList.toggle("open", id === detailId);
    const check = document.createElement("input");
    check.type = "checkbox";
    check.className = "select";
    check.checked = view.selected.has(id);
    check.setAttribute("aria-label", `select ${id}`);
    check.addEventListener("change", () => {
      if (check.checked) view.selected.add(id);
      else view.selected.delete(id);
      renderBulk();
    });
    const checkCell = document.createElement("td");
    checkCell.appendChild(check);
    const idCell = document.createElement("td");
    idCell.className = "id";
    idCell.appendChild(button(id, "link", () => openDetail(id)));
    const actions = document.createElement("td");
    actions.className = "actions";
    for (const b of jobButtons(job)) actions.appendChild(b);
    tr.append(checkCell, idCell, cell(job.type), cell(payloadSummary(job.payload), "payload"), cell(String(job.attempts)), cell(when(timeOf(job))), actions);
    if (job.last_error && (view.state === "dead" || view.state === "retrying")) {
      tr.title = `${job.errors.length} failure(s); last error: ${job.last_error}`;
    }
    body.appendChild(tr);
  }
  $("jobs-table").hidden = view.jobs.length === 0;
  $("jobs-empty").hidden = view.jobs.length !== 0;
  $("jobs-empty").textContent = view.type ? `No ${view.state} jobs of type ${view.type}.` : `No ${view.state} jobs.`;
  $("time-col").textContent = { running: "Started", done: "Finished", dead: "Died" }[view.state] || "Runs at";
  const page = view.cursors.length;
  $("page-label").textContent = `page ${page}`;
  $("prev-page").disabled = page === 1;
  // A cursor may lead to an empty page; a full page is the only hint that more may follow.
  $("next-page").disabled = !view.nextCursor || view.jobs.length < view.pageSize;
  for (const tab of document.querySelectorAll("#tabs [data-state]")) {
    const on = tab.dataset.state === view.state;
    tab.classList.toggle("active", on);
    tab.setAttribute("aria-selected", String(on));
  }
  for (const job of view.jobs) rememberType(job.type);
  renderBulk();
}

/** Per-job actions: retry a dead job, cancel an unfinished one, delete a finished one. */
function jobButtons(job) {
  const out = [];
  // The clicked button is disabled while its request runs: a double click sends one request.
  if (job.status === "dead") out.push(button("Retry", "", (e) => retryOne(job.job_id, e.currentTarget)));
  if (CANCELLABLE.includes(job.status)) {
    if (!job.cancel_requested) out.push(button("Cancel", "danger", (e) => cancelOne(job.job_id, e.currentTarget)));
  } else {
    out.push(button("Delete", "danger", (e) => deleteOne(job.job_id, "deleted", e.currentTarget)));
  }
  return out;
}

function renderBulk() {
  const n = view.selected.size;
  $("bulk-retry").hidden = view.state !== "dead";
  $("bulk-retry").disabled = n === 0;
  $("bulk-delete").hidden = view.state === "running";
  $("bulk-delete").disabled = n === 0;
  $("bulk-retry").textContent = n ? `Retry selected (${n})` : "Retry selected";
  $("bulk-delete").textContent = n ? `Delete selected (${n})` : "Delete selected";
  const all = $("select-all");
  all.checked = n > 0 && n === view.jobs.length;
  all.indeterminate = n > 0 && n < view.jobs.length;
}

/** Back to the first page with nothing selected; answers still in flight are dropped. */
function clearView(changes = {}) {
  Object.assign(view, changes, { cursors: [null], nextCursor: null, selected: new Set(), gen: view.gen + 1 });
}

/** Tab, filter or page size changed: back to page one, nothing selected, and refresh. */
function resetView(changes) {
  clearView(changes);
  refreshSoon();
}

// ---- actions ----

/** Run one user action: disable its button, show the outcome, refresh. */
async function act(control, work) {
  if (control) control.disabled = true;
  try {
    showAlert("success", await work());
  } catch (e) {
    showError(e);
  } finally {
    if (control) control.disabled = false;
    refreshSoon();
  }
}

function retryOne(id, control) {
  act(control, async () => {
    await api("POST", `/api/jobs/${encodeURIComponent(id)}/retry`);
    return `Job ${id} queued again.`;
  });
}

function cancelOne(id, control) {
  act(control, async () => {
    const { status } = await api("POST", `/api/jobs/${encodeURIComponent(id)}/cancel`);
    return status === "running" ? `Job ${id} is being stopped by its worker.` : `Job ${id} cancelled.`;
  });
}

function deleteOne(id, verb, control) {
  act(control, async () => {
    await api("DELETE", `/api/jobs/${encodeURIComponent(id)}`);
    if (id === detailId) closeDetail();
    return `Job ${id} ${verb}.`;
  });
}

function bulk(kind) {
  const ids = [...view.selected];
  if (!ids.length) return;
  if (kind === "delete" && !confirm(`Delete ${ids.length} job(s)? This cannot be undone.`)) return;
  act($(`bulk-${kind}`), async () => {
    const { affected } = await api("POST", `/api/jobs/${kind}`, { ids });
    view.selected.clear();
    if (kind === "delete" && ids.includes(detailId)) closeDetail();
    const what = affected === 1 ? "1 job" : `${affected} jobs`;
    return kind === "retry" ? `${what} of ${ids.length} selected queued again.` : `${what} of ${ids.length} selected deleted.`;
  });
}

function togglePause() {
  const resume = queue.paused;
  act($("pause-toggle"), async () => {
    const data = await api("POST", `/api/queues/${encodeURIComponent(queue.name)}/${resume ? "resume" : "pause"}`);
    setPaused(data.paused);
    return data.paused ? `Queue ${data.name} paused.` : `Queue ${data.name} resumed.`;
  });
}

async function onRegister(event) {
  event.preventDefault();
  clearAlert(); // a message left from an earlier action must not read as this one's answer
  let payload;
  try {
    payload = JSON.parse($("payload").value);
  } catch (e) {
    showAlert("error", `The payload is not valid JSON: ${e.message}`);
    return;
  }
  const body = {
    type: $("job-type").value,
    payload,
    delay_seconds: Number($("delay").value),
    max_retry: Number($("max-retry").value),
    priority: Number($("priority").value),
    queue: $("job-queue").value || queue.name,
  };
  act($("register"), async () => {
    const created = await api("POST", "/api/jobs", body);
    return `Job ${created.job_id} registered (runs at ${when(created.run_at)}).`;
  });
}

// ---- detail ----

async function openDetail(id) {
  detailId = id;
  try {
    renderDetail(await api("GET", `/api/jobs/${encodeURIComponent(id)}`));
    $("detail").scrollIntoView({ block: "nearest" });
  } catch (e) {
    showError(e);
  }
  for (const tr of $("jobs-body").children) tr.classList.toggle("open", tr.dataset.jobId === id);
}

function closeDetail() {
  detailId = null;
  $("detail").hidden = true;
  for (const tr of $("jobs-body").children) tr.classList.remove("open");
}

function renderDetail(job) {
  if (job.job_id !== detailId) return;
  $("detail").hidden = false;
  $("detail").dataset.status = job.status;
  $("detail-id").textContent = job.job_id;
  const fields = {
    type: job.type,
    status: job.status,
    attempts: String(job.attempts),
    max_retry: String(job.max_retry),
    priority: String(job.priority ?? 5),
    limit_key: job.limit_key ?? "–",
    created_at: when(job.created_at),
    run_at: when(job.run_at),
    started_at: when(job.started_at),
    finished_at: when(job.finished_at),
  };
  for (const dd of $("detail").querySelectorAll("[data-field]")) dd.textContent = fields[dd.dataset.field];
  $("detail-payload").textContent = JSON.stringify(job.payload, null, 2);
  $("detail-progress-box").hidden = !job.progress;
  if (job.progress) {
    $("detail-progress").value = job.progress.percent;
    $("detail-progress-text").textContent = `${job.progress.percent} % ${job.progress.message}`;
  }
  $("detail-result-box").hidden = job.result == null;
  $("detail-result").textContent = job.result == null ? "" : JSON.stringify(job.result, null, 2);
  const rows = $("detail-errors").tBodies[0];
  rows.replaceChildren();
  for (const f of job.errors) {
    const tr = document.createElement("tr");
    tr.append(cell(String(f.attempt)), cell(when(f.at)), cell(f.error, "error"));
    rows.appendChild(tr);
  }
  $("detail-errors").hidden = job.errors.length === 0;
  $("detail-no-errors").hidden = job.errors.length !== 0;
  $("detail-retry").hidden = job.status !== "dead";
  $("detail-cancel").hidden = !CANCELLABLE.includes(job.status) || job.cancel_requested;
  $("detail-delete").hidden = CANCELLABLE.includes(job.status);
  $("detail-updated").textContent = `as of ${new Date().toLocaleTimeString()}`;
}

// ---- chart ----

const SVG = "http://www.w3.org/2000/svg";

function svg(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Processed and failed runs per minute, side by side, oldest left. */
function renderChart(minutes) {
  const chart = $("chart");
  chart.replaceChildren();
  const W = 600, H = 110, top = 12, bottom = 96;
  const max = Math.max(1, ...minutes.map((m) => Math.max(m.processed, m.failed)));
  const slot = W / Math.max(minutes.length, 1);
  const bar = Math.max(1, slot / 2 - 1);
  const scale = (v) => (v / max) * (bottom - top);
  chart.appendChild(svg("line", { x1: 0, y1: bottom + 0.5, x2: W, y2: bottom + 0.5, class: "axis" }));
  minutes.forEach((m, i) => {
    const x = i * slot;
    const label = `${new Date(m.minute).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}: ${m.processed} processed, ${m.failed} failed`;
    const g = svg("g", {});
    g.appendChild(svg("title", {}, label));
    g.appendChild(svg("rect", { x, y: top, width: slot, height: bottom - top, class: "hover" }));
    if (m.processed) g.appendChild(svg("rect", { x, y: bottom - scale(m.processed), width: bar, height: scale(m.processed), class: "processed" }));
    if (m.failed) g.appendChild(svg("rect", { x: x + bar, y: bottom - scale(m.failed), width: bar, height: scale(m.failed), class: "failed" }));
    chart.appendChild(g);
  });
  chart.appendChild(svg("text", { x: 2, y: 10, class: "scale" }, `max ${max}/min`));
  chart.appendChild(svg("text", { x: 2, y: H - 2, class: "scale" }, "60 min ago"));
  chart.appendChild(svg("text", { x: W - 2, y: H - 2, class: "scale end" }, "now"));
  const processed = minutes.reduce((n, m) => n + m.processed, 0);
  const failed = minutes.reduce((n, m) => n + m.failed, 0);
  const summary = $("chart-summary");
  summary.dataset.processed = String(processed);
  summary.dataset.failed = String(failed);
  summary.textContent = `Last hour: ${processed} processed, ${failed} failed (updated ${new Date().toLocaleTimeString()}).`;
}

// ---- job types (from the OpenAPI spec, which is not rate limited) ----

async function loadTypes() {
  try {
    const resp = await fetch("/api-docs/openapi.json");
    const spec = await resp.json();
    // The spec names each registered type and its payload schema: `demo:delay_print` → `DelayPrintPayload`.
    const found = [...(spec.info.description || "").matchAll(/`([^`\s]+:[^`\s]+)` → `(\w+)`/g)];
    knownTypes = found.map(([, name, schemaName]) => ({ name, schema: spec.components.schemas[schemaName] }));
  } catch {
    knownTypes = [];
  }
  if (!knownTypes.length) knownTypes = [{ name: "demo:delay_print", schema: null }];
  const select = $("job-type");
  select.replaceChildren();
  for (const t of knownTypes) {
    const opt = document.createElement("option");
    opt.value = t.name;
    opt.textContent = t.name;
    select.appendChild(opt);
    rememberType(t.name);
  }
  select.value = knownTypes[0].name;
  fillPayloadTemplate();
}

/** A payload skeleton from the schema's examples, so the form starts valid: optional fields
 *  without an example are left out (the api rejects `null` for them). */
function fillPayloadTemplate() {
  const t = knownTypes.find((k) => k.name === $("job-type").value);
  const props = (t && t.schema && t.schema.properties) || {};
  const required = (t && t.schema && t.schema.required) || [];
  const template = {};
  for (const [k, p] of Object.entries(props)) {
    if (p.example !== undefined) template[k] = p.example;
    else if (required.includes(k)) template[k] = p.type === "string" ? "" : {};
  }
  if (Object.keys(template).length) $("payload").value = JSON.stringify(template);
}

/** Types for the filter's suggestions: the known ones and any seen in the lists. */
function rememberType(name) {
  const list = $("known-types");
  if ([...list.options].some((o) => o.value === name)) return;
  const opt = document.createElement("option");
  opt.value = name;
  list.appendChild(opt);
}

// ---- wiring ----

document.addEventListener("DOMContentLoaded", () => {
  $("register-form").addEventListener("submit", onRegister);
  $("job-type").addEventListener("change", fillPayloadTemplate);
  $("alert").addEventListener("click", clearAlert);
  $("pause-toggle").addEventListener("click", togglePause);
  $("queue-picker").addEventListener("change", (e) => showQueue(e.target.value));
  $("banner-resume").addEventListener("click", togglePause);
  $("detail-close").addEventListener("click", closeDetail);
  $("detail-retry").addEventListener("click", (e) => detailId && retryOne(detailId, e.currentTarget));
  $("detail-cancel").addEventListener("click", (e) => detailId && cancelOne(detailId, e.currentTarget));
  $("detail-delete").addEventListener("click", (e) => {
    if (detailId) deleteOne(detailId, "deleted", e.currentTarget);
  });
  $("bulk-retry").addEventListener("click", () => bulk("retry"));
  $("bulk-delete").addEventListener("click", () => bulk("delete"));
  $("select-all").addEventListener("change", (e) => {
    view.selected = e.target.checked ? new Set(view.jobs.map((j) => j.job_id)) : new Set();
    renderList();
  });
  for (const tab of document.querySelectorAll("#tabs [data-state]")) {
    tab.addEventListener("click", () => resetView({ state: tab.dataset.state }));
  }
  // On change (blur, or picking a suggestion) and on Enter; only a new value resets the view.
  const applyFilter = () => {
    const type = $("type-filter").value.trim();
    if (type !== view.type) resetView({ type });
  };
  $("type-filter").addEventListener("change", applyFilter);
  $("type-filter").addEventListener("keydown", (e) => e.key === "Enter" && applyFilter());
  $("page-size").addEventListener("change", (e) => resetView({ pageSize: Number(e.target.value) }));
  $("next-page").addEventListener("click", () => {
    if (!view.nextCursor) return;
    view.cursors.push(view.nextCursor);
    view.selected.clear();
    view.gen++;
    refreshSoon();
  });
  $("prev-page").addEventListener("click", () => {
    if (view.cursors.length > 1) view.cursors.pop();
    view.selected.clear();
    view.gen++;
    refreshSoon();
  });
  // Coming back to a hidden tab: refresh now instead of at the slow hidden pace.
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshSoon();
  });
  loadTypes();
  loop();
});
