#!/usr/bin/env bash
# Make sure redis-server and redis-cli are on PATH; install the Debian/Ubuntu package
# `redis-server` (which pulls in redis-tools for redis-cli) when either is missing.
# Used by scripts/start-redis.sh, `just test` and .ci/run. Safe to run repeatedly.
set -euo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/apt.sh"

if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    exit 0
fi

echo "ensure-redis: redis-server/redis-cli not found" >&2
apt_install ensure-redis -- redis-server

# The package may start a system-wide redis on 6379 (systemd hosts). We do not rely on it;
# scripts/start-redis.sh will report it as "not started by this script" if it holds the port.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "ensure-redis: installation finished but redis-server/redis-cli are still not on PATH" >&2
    exit 1
fi
echo "ensure-redis: $(redis-server --version)" >&2
