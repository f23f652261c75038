#!/usr/bin/env bash
# Everything `just test` needs beyond Rust and Node, installed when missing so that the README's
# two commands pass on a fresh machine (nothing is skipped for want of a tool):
#   wrk                         the bench smoke test (crates/bench/tests/smoke.rs) drives the api with it
#   chromium, chromium-driver   the browser tests (e2e/)
#   npm packages from lockfiles e2e (playwright-core), bench/bullmq (the peer), tools/redis-commander
# Redis and the monitoring tools have their own scripts (ensure-redis.sh, ensure-monitoring.sh).
# Safe to run repeatedly; fails at once, naming the tool, when something cannot be installed.
set -euo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/apt.sh"
root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    apt_install ensure-test-tools -- "${missing[@]}"
fi
command -v wrk >/dev/null 2>&1 || { echo "ensure-test-tools: wrk still missing (apt-get install -y wrk)" >&2; exit 1; }
[ -x /usr/bin/chromium ] || { echo "ensure-test-tools: /usr/bin/chromium still missing (apt-get install -y chromium)" >&2; exit 1; }

command -v npm >/dev/null 2>&1 || { echo "ensure-test-tools: npm is missing (install Node.js 18 or newer)" >&2; exit 1; }
# `npm ci` from each lockfile, again only when the lockfile changed since the last install.
for dir in e2e bench/bullmq tools/redis-commander; do
    stamp="$root/$dir/node_modules/.package-lock.json"
    if [ ! -f "$stamp" ] || [ "$root/$dir/package-lock.json" -nt "$stamp" ]; then
        echo "ensure-test-tools: npm ci in $dir" >&2
        (cd "$root/$dir" && npm ci --no-audit --no-fund)
    fi
done
