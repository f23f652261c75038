// The BullMQ side of `just bench` (crates/bench/src/sections/bullmq.rs runs it): BullMQ's own
// producer and no-op worker against a Redis the bench started with the same settings as ours.
// One mode per run, so a worker's RSS is its own process; the result is one JSON line on stdout.
//
//   node bench.mjs <mode> --port P [--jobs N] [--concurrency C] [--in-flight K] [--max-delay S]
//   fill     N due jobs via addBulk(1000)                    → {"jobs"}
//   delayed  Worker running, N jobs delayed 1..S s            → {"late_ms":[start − due, ...]}
//   add      N add() calls, K in flight (1: one at a time)   → {"jobs","secs","rate"}
//   bulk     N jobs via addBulk(1000), K batches in flight   → {"jobs","secs","rate"}
//   idle     Worker on an empty queue: prints {"ready":true}, runs until SIGTERM
//   serve    Worker, paused until SIGUSR1, then drains the queue until SIGTERM: prints {"ready":true}
//            (the bench counts BullMQ's completed set; several at once are BullMQ's recommended
//            throughput set-up: one Worker process per core)
import { Queue, Worker } from "bullmq";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";

const QUEUE = "bench";
const BATCH = 1000;
// Enqueue benchmarks store jobs delayed by an hour, as ours do: nothing runs them.
const HOUR_MS = 3_600_000;

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    port: { type: "string" },
    jobs: { type: "string", default: "1000" },
    concurrency: { type: "string", default: "1" },
    "in-flight": { type: "string", default: "1" },
    "max-delay": { type: "string", default: "5" },
  },
});
const mode = positionals[0];
const connection = { host: "127.0.0.1", port: Number(values.port), maxRetriesPerRequest: null };
const jobs = Number(values.jobs);
const concurrency = Number(values.concurrency);
const inFlight = Number(values["in-flight"]);
const maxDelay = Number(values["max-delay"]);

function emit(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

// Run `task(i)` for i in 0..n with at most `k` pending at once.
async function pool(n, k, task) {
  let next = 0;
  const lane = async () => {
    while (next < n) {
      await task(next++);
    }
  };
  await Promise.all(Array.from({ length: Math.min(k, n) }, lane));
}

function batches(n, size, make) {
  const out = [];
  for (let start = 0; start < n; start += size) {
    const end = Math.min(start + size, n);
    out.push(Array.from({ length: end - start }, (_, j) => make(start + j)));
  }
  return out;
}

async function withQueue(body) {
  const queue = new Queue(QUEUE, { connection });
  try {
    return await body(queue);
  } finally {
    await queue.close();
  }
}

async function fill() {
  await withQueue(async (queue) => {
    for (const batch of batches(jobs, BATCH, (i) => ({ name: "noop", data: { message: `w-${i}` } }))) {
      await queue.addBulk(batch);
    }
  });
  emit({ jobs });
}

async function delayed() {
  const late = [];
  let done;
  const finished = new Promise((resolve) => {
    done = resolve;
  });
  const processor = async (job) => {
    // job.timestamp is set by add() (Date.now()); due = timestamp + delay.
    late.push(Date.now() - (job.timestamp + job.opts.delay));
    if (late.length === jobs) done();
  };
  const worker = new Worker(QUEUE, processor, { connection, concurrency });
  await worker.waitUntilReady();
  await withQueue(async (queue) => {
    const make = (i) => ({ name: "noop", data: { message: `t-${i}` }, opts: { delay: 1000 * (1 + (i % maxDelay)) } });
    // Batches of 100, as ours are registered.
    for (const batch of batches(jobs, 100, make)) {
      await queue.addBulk(batch);
    }
  });
  await finished;
  await worker.close();
  emit({ late_ms: late });
}

async function timed(body) {
  const started = performance.now();
  await withQueue(body);
  const secs = (performance.now() - started) / 1000;
  emit({ jobs, secs, rate: jobs / secs });
}

async function add() {
  await timed((queue) =>
    pool(jobs, inFlight, (i) => queue.add("noop", { message: `a-${i}` }, { delay: HOUR_MS })),
  );
}

async function bulk() {
  const all = batches(jobs, BATCH, (i) => ({ name: "noop", data: { message: `b-${i}` }, opts: { delay: HOUR_MS } }));
  await timed((queue) => pool(all.length, inFlight, (b) => queue.addBulk(all[b])));
}

async function idle() {
  const worker = new Worker(QUEUE, async () => {}, { connection, concurrency });
  await worker.waitUntilReady();
  emit({ ready: true });
  await new Promise((resolve) => process.once("SIGTERM", resolve));
  await worker.close();
}

async function serve() {
  // Started paused so that several processes begin together, after Node has loaded: SIGUSR1 starts it.
  const worker = new Worker(QUEUE, async () => {}, { connection, concurrency, autorun: false });
  await worker.waitUntilReady();
  process.once("SIGUSR1", () => {
    worker.run().catch((e) => process.stderr.write(`${e}\n`));
  });
  emit({ ready: true });
  await new Promise((resolve) => process.once("SIGTERM", resolve));
  await worker.close();
}

const modes = { fill, delayed, add, bulk, idle, serve };
if (!modes[mode] || !values.port) {
  process.stderr.write(`usage: node bench.mjs <${Object.keys(modes).join("|")}> --port P [options]\n`);
  process.exit(2);
}
await modes[mode]();
process.exit(0);
