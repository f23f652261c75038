// Browser test of the native Redis browser (`just insight` without a Docker engine): starts its own
// redis-server on a free port with queue keys (`dm-jobqueue:*`), runs
// `scripts/start-redis-insight.sh run` (redis-commander, read-only, read-only ACL user) on a free
// port, opens it in headless Chromium and finds the keys and a key's contents. Checks that the
// browser's Redis user cannot write, and that it was refused nothing it needed while browsing.
//
// Env: CHROMIUM (default /usr/bin/chromium), E2E_ARTIFACTS (screenshot; default target/e2e).
// Needs tools/redis-commander/node_modules (`npm ci` there; `just e2e` and the script do it).

import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import {
  ROOT, CHROMIUM, ARTIFACTS, STEP_MS, log, freePort, start, waitFor, answers, startRedis,
  redisCommand, launchBrowser, run,
} from "./lib.mjs";

const WHOLE_TEST_MS = 120_000;
const SCRIPT = path.join(ROOT, "scripts/start-redis-insight.sh");

/** Keys shaped like the queue's (the browser folds them at ':' under `dm-jobqueue:*`). */
async function seed(port) {
  const commands = [
    'ZADD dm-jobqueue:scheduled 1893456000000 01JE2ETSCHEDULED0000000000',
    'RPUSH dm-jobqueue:active 01JE2ETACTIVE00000000000000',
    'ZADD dm-jobqueue:dead 1764600000000 01JE2ETDEAD000000000000000',
    'HSET dm-jobqueue:data 01JE2ETDEAD000000000000000 "{\\"message\\":\\"fail: seen in the browser\\"}"',
  ];
  for (const command of commands) {
    const reply = await redisCommand(port, command);
    if (!/^:\d/.test(reply)) throw new Error(`seeding '${command}' answered ${JSON.stringify(reply)}`);
  }
}

async function scenario(redisPort, browserPort) {
  const context = await launchBrowser();
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(STEP_MS);
    await page.goto(`http://127.0.0.1:${browserPort}/`, { timeout: STEP_MS });
    const tree = page.locator("#keyTree");
    await tree.locator("a.jstree-anchor", { hasText: `jobqueue (127.0.0.1:${redisPort}` }).waitFor();
    // The queue's folder; its toggle opens the keys below it.
    const folder = tree.locator("li.jstree-node", {
      has: page.locator(":scope > a.jstree-anchor", { hasText: "dm-jobqueue:*" }),
    });
    await folder.locator(":scope > i.jstree-ocl").click();
    for (const key of ["scheduled", "active", "dead", "data"]) {
      await folder.locator("a.jstree-anchor", { hasText: new RegExp(`^${key}\\b`) }).waitFor();
    }
    await folder.locator("a.jstree-anchor", { hasText: /^data\b/ }).click();
    await page.getByText("fail: seen in the browser").first().waitFor();
    await page.getByText("dm-jobqueue:data").first().waitFor();
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, "redis-browser.png"), fullPage: true });
  } finally {
    await context.close().catch(() => {});
  }
}

run("redis browser", WHOLE_TEST_MS, async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (apt-get install -y chromium)`);
  const redisPort = await startRedis();
  await seed(redisPort);
  const browserPort = await freePort();
  const browser = start("redis-commander", SCRIPT, ["run"], {
    REDIS_BROWSER: "native",
    REDIS_JOBQUEUE_HOST: "127.0.0.1",
    REDIS_JOBQUEUE_PORT: String(redisPort),
    INSIGHT_PORT: String(browserPort),
  });
  await waitFor("redis-commander", () => answers(`http://127.0.0.1:${browserPort}/`), 60_000);
  if (!browser.output.includes(`read-only) at http://127.0.0.1:${browserPort}/`)) {
    throw new Error(`the script did not say what it started:\n${browser.output}`);
  }
  await scenario(redisPort, browserPort);
  // Read-only at the Redis level: the browser's user may not write, and needed nothing it lacked.
  const dryRun = await redisCommand(redisPort, "ACL DRYRUN redis-browser SET dm-jobqueue:x 1");
  if (!dryRun.includes("no permissions")) throw new Error(`redis-browser may write: ${dryRun}`);
  const denied = await redisCommand(redisPort, "ACL LOG");
  if (denied.trim() !== "*0") throw new Error(`ACL denials while browsing: ${denied}`);
  log(`ok; screenshot in ${ARTIFACTS}/redis-browser.png`);
});
