#!/usr/bin/env bash
# A web browser for the jobqueue Redis (just insight):
#   * with a Docker engine ('docker info' succeeds): Redis Insight from docker-compose.redis-insight.yml
#     at http://localhost:5540;
#   * without one: redis-commander from npm (pinned in tools/redis-commander/package-lock.json),
#     read-only, bound to 127.0.0.1:${INSIGHT_PORT:-8081}, pre-connected to the jobqueue Redis as
#     the read-only ACL user `redis-browser` (tools/redis-commander/redis-browser.acl).
#
# Usage: scripts/start-redis-insight.sh {start|stop|run}
#   start  start in the background (pidfile redis/run/redis-commander.pid, log redis/logs/)
#   stop   stop what start started
#   run    native browser in the foreground (used by e2e/redis-browser.test.mjs)
# Environment: INSIGHT_PORT (8081), REDIS_JOBQUEUE_HOST (127.0.0.1), REDIS_JOBQUEUE_PORT (6379),
#   REDIS_BROWSER=auto|docker|native (auto), REDISCLI_AUTH (admin password to create the ACL
#   user, when the Redis needs one).
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
COMPOSE_FILE="$ROOT/docker-compose.redis-insight.yml"
DOCKER_NETWORK="redis-network"
TOOL_DIR="$ROOT/tools/redis-commander"
RUN_DIR="$ROOT/redis/run"
LOG_DIR="$ROOT/redis/logs"
PIDFILE="$RUN_DIR/redis-commander.pid"
LOGFILE="$LOG_DIR/redis-commander.log"
INSIGHT_PORT="${INSIGHT_PORT:-8081}"
JOBQUEUE_HOST="${REDIS_JOBQUEUE_HOST:-127.0.0.1}"
JOBQUEUE_PORT="${REDIS_JOBQUEUE_PORT:-6379}"
BROWSER_USER="redis-browser"
NATIVE_URL="http://127.0.0.1:${INSIGHT_PORT}/"

usage() {
    echo "usage: $0 {start|stop|run}" >&2
    exit 2
}
die() {
    echo "redis-browser: $*" >&2
    exit 1
}

[ $# -eq 1 ] || usage
cmd="$1"
case "$cmd" in start | stop | run) ;; *) usage ;; esac
[[ "$INSIGHT_PORT" =~ ^[0-9]+$ ]] || die "INSIGHT_PORT: '$INSIGHT_PORT' is not a port number"
[[ "$JOBQUEUE_PORT" =~ ^[0-9]+$ ]] || die "REDIS_JOBQUEUE_PORT: '$JOBQUEUE_PORT' is not a port number"

docker_engine() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

mode="${REDIS_BROWSER:-auto}"
case "$mode" in
    auto) if docker_engine; then mode=docker; else mode=native; fi ;;
    docker) docker_engine || die "REDIS_BROWSER=docker but no Docker engine answers ('docker info' failed)" ;;
    native) ;;
    *) die "REDIS_BROWSER must be auto, docker or native, not '$mode'" ;;
esac
[ "$cmd" = run ] && [ "$mode" = docker ] && die "run is the native browser only (REDIS_BROWSER=native)"

# ---------------------------------------------------------------- Redis Insight (Docker)
if [ "$mode" = docker ]; then
    if docker compose version >/dev/null 2>&1; then
        compose=(docker compose -f "$COMPOSE_FILE")
    elif command -v docker-compose >/dev/null 2>&1; then
        compose=(docker-compose -f "$COMPOSE_FILE")
    else
        die "a Docker engine answers but neither 'docker compose' nor docker-compose is installed"
    fi
    case "$cmd" in
        start)
            docker network inspect "$DOCKER_NETWORK" >/dev/null 2>&1 ||
                docker network create "$DOCKER_NETWORK" >/dev/null
            "${compose[@]}" up -d
            echo "Redis browser: Redis Insight (Docker) at http://localhost:5540"
            echo "  pre-configured connection 'jobqueue' -> redis-jobqueue:6379 (start the stack with: just redis)"
            echo "  the cluster can be added by hand (see the notes in docker-compose.redis-insight.yml)"
            echo "  stop it with: just insight-stop"
            ;;
        stop)
            # down keeps the named volume (saved settings) and the external network.
            "${compose[@]}" down
            echo "Redis Insight stopped"
            ;;
    esac
    exit 0
fi

# ---------------------------------------------------------------- redis-commander (native)
running_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q redis-commander && echo "$pid"
}

if [ "$cmd" = stop ]; then
    if pid="$(running_pid)"; then
        kill -TERM "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        echo "redis-commander stopped (pid $pid)"
    else
        echo "no redis-commander started by 'just insight' is running"
    fi
    rm -f "$PIDFILE"
    exit 0
fi

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
    die "node and npm are needed for the native browser (apt-get install -y nodejs npm)"
command -v redis-cli >/dev/null 2>&1 || die "redis-cli is needed (scripts/ensure-redis.sh installs it)"
if [ ! -x "$TOOL_DIR/node_modules/.bin/redis-commander" ]; then
    echo "redis-browser: installing redis-commander from tools/redis-commander/package-lock.json (npm ci)"
    (cd "$TOOL_DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2
fi

if [ "$cmd" = start ] && pid="$(running_pid)"; then
    echo "redis-commander is already running (pid $pid) at $NATIVE_URL; stop it with: just insight-stop"
    exit 0
fi

# Read-only at the Redis level too: a user that can only read (rules in one file), with a fresh
# password per start, handed to redis-commander in its environment (not on its command line).
redis-cli -h "$JOBQUEUE_HOST" -p "$JOBQUEUE_PORT" PING 2>/dev/null | grep -q PONG ||
    die "the jobqueue Redis at $JOBQUEUE_HOST:$JOBQUEUE_PORT does not answer (start it with: just redis)"
password="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
read -r -a rules <"$TOOL_DIR/redis-browser.acl"
reply="$(redis-cli -h "$JOBQUEUE_HOST" -p "$JOBQUEUE_PORT" ACL SETUSER "$BROWSER_USER" "${rules[@]}" ">$password" 2>&1)"
[ "$reply" = OK ] || die "cannot create the ACL user $BROWSER_USER on $JOBQUEUE_HOST:$JOBQUEUE_PORT: $reply (set REDISCLI_AUTH to an admin password)"
NODE_CONFIG="$(printf '{"connections":[{"label":"jobqueue","host":"%s","port":%s,"username":"%s","password":"%s","dbIndex":0}]}' \
    "$JOBQUEUE_HOST" "$JOBQUEUE_PORT" "$BROWSER_USER" "$password")"
export NODE_CONFIG
args=(--read-only --nosave --address 127.0.0.1 --port "$INSIGHT_PORT" --root-pattern '*')

if [ "$cmd" = run ]; then
    echo "Redis browser: redis-commander (native, read-only) at $NATIVE_URL -> jobqueue Redis $JOBQUEUE_HOST:$JOBQUEUE_PORT as $BROWSER_USER"
    exec "$TOOL_DIR/node_modules/.bin/redis-commander" "${args[@]}"
fi

mkdir -p "$RUN_DIR" "$LOG_DIR"
if curl -fsS -o /dev/null --max-time 2 "$NATIVE_URL" 2>/dev/null; then
    die "something already answers at $NATIVE_URL; pick another port: INSIGHT_PORT=8091 just insight"
fi
nohup "$TOOL_DIR/node_modules/.bin/redis-commander" "${args[@]}" >>"$LOGFILE" 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null --max-time 2 "$NATIVE_URL" 2>/dev/null && break
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || die "redis-commander exited; see $LOGFILE"
    sleep 0.2
done
curl -fsS -o /dev/null --max-time 2 "$NATIVE_URL" 2>/dev/null || die "redis-commander did not answer within 20 s; see $LOGFILE"
cat <<MSG
Redis browser: redis-commander (native, no Docker engine here) at $NATIVE_URL
  read-only, connected to the jobqueue Redis $JOBQUEUE_HOST:$JOBQUEUE_PORT as ACL user $BROWSER_USER
  queue keys: open jobqueue > dm-jobqueue:* (scheduled, active, done, dead, data, ...)
  log: $LOGFILE; stop it with: just insight-stop
MSG
