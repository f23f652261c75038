#!/usr/bin/env bash
# Make sure the monitoring tools are on PATH, installing the Debian packages when one is missing:
#   prometheus (prometheus + promtool), prometheus-redis-exporter, docker-compose (only used to
#   validate docker-compose.monitoring.yml; no Docker engine is needed for that).
# Used by `just test`, `just monitor` and .ci/run. Safe to run repeatedly.
set -euo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/apt.sh"

missing=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-redis-exporter >/dev/null 2>&1 || missing+=(prometheus-redis-exporter)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0

# No recommends: the prometheus package would pull in node-exporter and friends.
apt_install ensure-monitoring --no-install-recommends -- "${missing[@]}"
# On systemd hosts the packages start system services on 9090/9121; `just monitor` reports a
# port that is already taken instead of fighting over it.
for tool in prometheus promtool prometheus-redis-exporter docker-compose; do
    command -v "$tool" >/dev/null 2>&1 || { echo "ensure-monitoring: $tool still not on PATH" >&2; exit 1; }
done
