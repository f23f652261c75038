#!/usr/bin/env bash
# Redis Insight web UI for the local Redis stack (docker-compose.redis-insight.yml).
# Usage: scripts/start-redis-insight.sh {start|stop}
# Needs a Docker engine; without one it explains the alternatives and exits 0.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
COMPOSE_FILE="$ROOT/docker-compose.redis-insight.yml"
DOCKER_NETWORK="redis-network"
URL="http://localhost:5540"
API_URL="http://127.0.0.1:${APP__SERVER__PORT:-8080}/"
JOBQUEUE_PORT="${REDIS_JOBQUEUE_PORT:-6379}"

usage() {
    echo "usage: $0 {start|stop}" >&2
    exit 2
}

[ $# -eq 1 ] || usage
cmd="$1"
case "$cmd" in start | stop) ;; *) usage ;; esac

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    if [ "$cmd" = stop ]; then
        echo "Redis Insight needs a Docker engine and none answers here ('docker info' failed); nothing to stop."
        exit 0
    fi
    cat <<MSG
Redis Insight runs as a container and needs a Docker engine; no Docker engine answers here
('docker info' failed), so it was not started.

Alternatives without Docker:
  * the api's built-in jobs page: ${API_URL}  (queue counts, job status; start it with: just up)
  * raw keys in the jobqueue Redis: redis-cli -p ${JOBQUEUE_PORT} --scan --pattern '*'
  * the cluster:                    redis-cli -c -p 7100 cluster info
MSG
    exit 0
fi

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose -f "$COMPOSE_FILE")
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose -f "$COMPOSE_FILE")
else
    echo "redis-insight: a Docker engine answers but neither 'docker compose' nor docker-compose is installed" >&2
    exit 1
fi

case "$cmd" in
    start)
        docker network inspect "$DOCKER_NETWORK" >/dev/null 2>&1 ||
            docker network create "$DOCKER_NETWORK" >/dev/null
        "${compose[@]}" up -d
        echo "Redis Insight: $URL"
        echo "  pre-configured connection 'jobqueue' -> redis-jobqueue:6379 (start the stack with: just redis)"
        echo "  the cluster can be added by hand (see the notes in docker-compose.redis-insight.yml)"
        ;;
    stop)
        # down keeps the named volume (saved settings) and the external network.
        "${compose[@]}" down
        echo "Redis Insight stopped"
        ;;
esac
