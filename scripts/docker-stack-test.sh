#!/usr/bin/env bash
# The containers, for real (just test → just docker-test):
#   1. compose files are valid (all profiles; Redis Insight's image cannot be fetched here, so its
#      file and profile are only config-checked);
#   2. the api and worker images build from the Dockerfile (base images: scripts/lib/docker-base.sh);
#   3. the whole stack starts under its own compose project, the api published on a free loopback
#      port; /ready is 200 (jobqueue Redis and the cluster reached from the container), /metrics
#      serves both binaries' metrics;
#   4. a job registered through the containerized api is run by the containerized worker;
#   5. the worker is scaled to 2 (distinct names), one replica holding slow jobs is `docker stop`ped
#      mid-job: it drains and exits 0, and every job ends done (none lost, none dead);
#   5b. `just backup` of the stack's jobqueue Redis (no published port: through `compose exec`),
#      then `just restore` into its named volume (REDIS_START=stack) while the api and the worker
#      stay up: every job of the backup is there afterwards and the api is ready again;
#   6. the Redis-only path of `just up` with a Docker engine (REDIS_MODE=docker scripts/start-redis.sh):
#      the cluster forms and an api on the host reaches both Redis (needs 6379 and 7100-7105 free);
#      a backup of its jobqueue Redis is restored with REDIS_START=docker and a scheduled job is back.
# Everything it started is removed on exit (trap). Every wait is bounded.
# DOCKER_TEST_JUST_UP=0 leaves out step 6 (it holds the fixed ports of `just up` for ~30 s).
# No engine can be started (not root, no dockerd): SKIPPED with the reason, except under CI=true or
# DOCKER_REQUIRED=1, where it fails.
set -euo pipefail
SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
source "$SCRIPT_DIR/lib/docker-base.sh"
cd -- "$ROOT"

T0=$SECONDS
log() { printf 'docker-test: [%3ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
fail() {
    log "FAILED: $*"
    exit 1
}

required=0
if [ "${CI:-}" = true ] || [ "${DOCKER_REQUIRED:-0}" = 1 ]; then required=1; fi
if ! reason="$("$SCRIPT_DIR/ensure-docker.sh" 2>&1)"; then
    printf '%s\n' "$reason" >&2
    [ "$required" = 1 ] && fail "no Docker engine (CI=true / DOCKER_REQUIRED=1: not skipping)"
    echo "docker-test: SKIPPED: no Docker engine can be started here (see above); images and compose stack NOT tested" >&2
    exit 0
fi

# --- 1. compose files -----------------------------------------------------------------------
compose --profile monitoring --profile insight config --quiet
docker-compose -f docker-compose.redis.yml --profile ha config --quiet
docker-compose -f docker-compose.redis-insight.yml config --quiet
log "compose files valid (stack with profiles monitoring + insight, redis, redis-insight: config-checked only)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

export COMPOSE_PROJECT_NAME="cstest$$"
export API_PORT
API_PORT="$(free_port)"
export CACHESERVER_TAG="test$$"
export REVISION
REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# The test polls the api more than the production limit (60/min) allows.
export API_REQUESTS_PER_MINUTE=100000 API_REQUESTS_PER_HOUR=1000000
URL="http://127.0.0.1:$API_PORT"
native_api_pid=""
redis_docker_started=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$rc" != 0 ]; then
        log "state at failure:"
        compose ps >&2 2>/dev/null || true
        compose logs --tail 40 api worker redis-cluster-init >&2 2>/dev/null || true
    fi
    if [ -n "$native_api_pid" ]; then kill "$native_api_pid" 2>/dev/null || true; wait "$native_api_pid" 2>/dev/null || true; fi
    compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
    if [ "$redis_docker_started" = 1 ]; then
        REDIS_MODE=docker scripts/start-redis.sh stop >/dev/null 2>&1 || true
        docker-compose -f docker-compose.redis.yml --profile ha down --remove-orphans --timeout 5 >/dev/null 2>&1 || true
    fi
    docker image rm "cacheserver-api:$CACHESERVER_TAG" "cacheserver-worker:$CACHESERVER_TAG" >/dev/null 2>&1 || true
    log "cleaned up (project $COMPOSE_PROJECT_NAME)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for SECONDS WHAT COMMAND...: run COMMAND every second until it succeeds.
wait_for() {
    local limit="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within ${limit}s"
        sleep 1
    done
}

http() { curl -sS --max-time 10 "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
post_job() {
    http -f -XPOST "$URL/api/jobs" -H 'content-type: application/json' \
        -d "{\"type\":\"demo:delay_print\",\"payload\":{\"message\":\"$1\"},\"delay_seconds\":0,\"max_retry\":0}" |
        json 'd["job_id"]'
}
job_status() { http -f "$URL/api/jobs/$1" | json 'd["status"]'; }
job_done() { [ "$(job_status "$1")" = done ]; }
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$1")" = healthy ]; }
worker_ids() { compose ps -q worker; }

# --- 2. images -------------------------------------------------------------------------------
use_base_images
build_start=$SECONDS
compose build api worker
log "images built in $((SECONDS - build_start))s:" \
    "$(docker image inspect -f '{{index .RepoTags 0}} {{.Size}}' "cacheserver-api:$CACHESERVER_TAG" "cacheserver-worker:$CACHESERVER_TAG" | tr '\n' ' ')"
for image in api worker; do
    [ "$(docker image inspect -f '{{.Config.User}}' "cacheserver-$image:$CACHESERVER_TAG")" = "10001:10001" ] ||
        fail "cacheserver-$image runs as root"
done

# --- 3. the stack ----------------------------------------------------------------------------
compose up -d
wait_for 180 "$URL/ready 200" curl -fsS --max-time 2 "$URL/ready"
ready="$(http "$URL/ready")"
log "/ready: $ready"
api_metrics="$(http -f "$URL/metrics")"
grep -q '^# HELP' <<<"$api_metrics" || fail "api /metrics has no metrics"
api_id="$(compose ps -q api)"
wait_for 60 "api container healthy (HEALTHCHECK)" healthy "$api_id"
worker1="$(worker_ids)"
wait_for 60 "worker container healthy (HEALTHCHECK)" healthy "$worker1"
worker_metrics="$(docker exec "$worker1" curl -fsS http://127.0.0.1:8082/metrics)"
grep -q 'jobqueue_' <<<"$worker_metrics" || fail "worker /metrics has no jobqueue metrics"
log "stack up on $URL: /ready 200, /metrics (api, worker), both containers healthy"

# --- 4. one job through the containers ---------------------------------------------------------
marker="docker-test-$$-$RANDOM"
id="$(post_job "$marker")"
wait_for 60 "job $id done" job_done "$id"
wait_for 10 "the worker printed the job's message" bash -c "docker logs '$worker1' 2>/dev/null | grep -q '$marker'"
log "job $id registered through the api, run by the worker container"

# --- 5. scale to 2, stop one mid-job -----------------------------------------------------------
compose up -d --no-recreate --scale worker=2 worker
two_workers() { [ "$(worker_ids | wc -l)" = 2 ]; }
wait_for 60 "2 worker replicas" two_workers
for w in $(worker_ids); do wait_for 60 "worker $w healthy" healthy "$w"; done
rcli() { compose exec -T redis-jobqueue redis-cli "$@" | tr -d '\r'; }
# Each replica registers under its own name (<container hostname>-<pid>) in the workers zset.
workers_key="$(rcli --scan --pattern '*:workers' | head -n1)"
names="$(rcli zrange "$workers_key" 0 -1)"
for w in $(worker_ids); do
    host="$(docker inspect -f '{{.Config.Hostname}}' "$w")"
    grep -q "^$host-" <<<"$names" || fail "replica $host is not registered in $workers_key ($names)"
done
log "2 replicas, distinct names: $(tr '\n' ' ' <<<"$names")"

n=24
ids=()
for i in $(seq 1 "$n"); do ids+=("$(post_job "slow:4000:docker-slow-$i")"); done
log "registered $n slow jobs (4 s each)"
# The replica to stop must hold jobs: apalis keeps each worker's jobs in <queue>:inflight:<name>,
# and a container's default worker name is <hostname>-<pid>.
victim=""
holds_jobs() {
    local w host keys key count
    for w in $(worker_ids); do
        host="$(docker inspect -f '{{.Config.Hostname}}' "$w")"
        keys="$(rcli --scan --pattern "*inflight:$host-*")"
        for key in $keys; do
            count="$(rcli scard "$key")"
            if [ "${count:-0}" -gt 0 ]; then
                victim="$w"
                victim_key="$key"
                return 0
            fi
        done
    done
    return 1
}
deadline=$((SECONDS + 30))
until holds_jobs; do
    [ "$SECONDS" -lt "$deadline" ] || fail "no worker replica took the slow jobs within 30s"
    sleep 0.2
done
log "stopping worker ${victim:0:12} mid-job ($victim_key holds jobs)"
docker stop -t 40 "$victim" >/dev/null
exit_code="$(docker inspect -f '{{.State.ExitCode}}' "$victim")"
[ "$exit_code" = 0 ] || fail "the stopped worker exited $exit_code (not a clean drain; 137 = killed)"
victim_log="$(docker logs "$victim" 2>&1)"
grep -q 'finishing in-flight jobs' <<<"$victim_log" || fail "the stopped worker did not log its drain"
grep -q 'shutdown grace elapsed' <<<"$victim_log" && fail "the stopped worker ran out of its shutdown grace"
all_done() {
    local id
    for id in "${ids[@]}"; do job_done "$id" || return 1; done
}
wait_for 120 "all $n slow jobs done after the stop" all_done
dead="$(http -f "$URL/api/queues" | json 'd["queues"][0]["counts"]["dead"]')"
[ "$dead" = 0 ] || fail "$dead dead jobs"
log "worker stopped mid-job drained and exited 0; all $n jobs done, 0 dead, none lost"
http -f "$URL/ready" >/dev/null || fail "/ready after the stop"

# --- 5b. backup and restore of the stack's jobqueue Redis (a named volume) ----------------------
backups="$(mktemp -d)"
stack_cli="$(compose_cmd) exec -T redis-jobqueue redis-cli"
REDIS_CLI="$stack_cli" BACKUP_DIR="$backups" scripts/backup.sh >&2 || fail "just backup of the stack's Redis"
backup="$(find "$backups" -mindepth 1 -maxdepth 1 -type d | sort | tail -n1)"
[ -f "$backup/MANIFEST" ] || fail "no backup in $backups"
post_job "after the backup: gone after the restore" >/dev/null
restored="$(REDIS_CLI="$stack_cli" REDIS_START=stack REDIS_DATA_DIR="$backups/stage" scripts/restore.sh --force "$backup")" ||
    fail "just restore into the stack's volume"
log "$restored"
grep -q '(stack)' <<<"$restored" || fail "restore did not use the stack's volume: $restored"
wait_for 60 "/ready after the restore" curl -fsS --max-time 2 "$URL/ready"
for id in "${ids[@]}" "$id"; do
    [ "$(job_status "$id")" = done ] || fail "job $id is not done after the restore ($(job_status "$id" || true))"
done
rm -rf "$backups"
log "backup of the stack's Redis restored into its volume with the api and worker up: all $((n + 1)) earlier jobs present"
# The api gets SIGTERM too (exec-form entrypoint, PID 1) and stops cleanly.
docker stop -t 30 "$api_id" >/dev/null
exit_code="$(docker inspect -f '{{.State.ExitCode}}' "$api_id")"
[ "$exit_code" = 0 ] || fail "the api exited $exit_code on docker stop"
log "api stopped by docker stop: exit 0"
compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1
log "stack removed"

# --- 6. `just up`'s Redis in Docker --------------------------------------------------------------
if [ "${DOCKER_TEST_JUST_UP:-1}" = 0 ]; then
    [ "${CI:-}" = true ] && fail "DOCKER_TEST_JUST_UP=0 is not allowed under CI"
    log "SKIPPED step 6 (REDIS_MODE=docker just up): DOCKER_TEST_JUST_UP=0"
    log "passed in $((SECONDS - T0))s (step 6 skipped)"
    exit 0
fi
busy=()
for p in 6379 7100 7101 7102 7103 7104 7105; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then busy+=("$p"); fi
done
if [ ${#busy[@]} -gt 0 ]; then
    [ "${CI:-}" = true ] && fail "ports ${busy[*]} are taken: REDIS_MODE=docker needs 6379 and 7100-7105"
    log "SKIPPED step 6 (REDIS_MODE=docker just up): ports ${busy[*]} are taken (a running just up?)"
    log "passed in $((SECONDS - T0))s (step 6 skipped)"
    exit 0
fi
redis_docker_started=1
REDIS_MODE=docker REDIS_IMAGE="${REDIS_IMAGE:-redis:7-alpine}" scripts/start-redis.sh start
api_bin="${CARGO_TARGET_DIR:-target}/debug/api"
[ -x "$api_bin" ] || cargo build -p cacheserver-api --bin api
native_port="$(free_port)"
APP_ENV=develop APP__SERVER__PORT="$native_port" "$api_bin" >/dev/null 2>&1 &
native_api_pid=$!
wait_for 60 "native api /ready on the docker Redis" curl -fsS --max-time 2 "http://127.0.0.1:$native_port/ready"
log "REDIS_MODE=docker: cluster formed, api :$native_port ready on both Redis: $(http "http://127.0.0.1:$native_port/ready")"
# `just backup` / `just restore` of that Redis (its data dir bind-mounted: REDIS_START=docker).
kept="$(http -f -XPOST "http://127.0.0.1:$native_port/api/jobs" -H 'content-type: application/json' \
    -d '{"type":"demo:delay_print","payload":{"message":"kept by the backup"},"delay_seconds":3600}' | json 'd["job_id"]')"
backups="$(mktemp -d)"
BACKUP_DIR="$backups" scripts/backup.sh >&2 || fail "just backup of the docker Redis"
backup="$(find "$backups" -mindepth 1 -maxdepth 1 -type d | sort | tail -n1)"
restored="$(REDIS_START=docker scripts/restore.sh --force "$backup")" || fail "just restore into the docker Redis"
log "$restored"
grep -q '(docker)' <<<"$restored" || fail "restore did not restart the docker Redis: $restored"
wait_for 60 "native api /ready after the restore" curl -fsS --max-time 2 "http://127.0.0.1:$native_port/ready"
status="$(http -f "http://127.0.0.1:$native_port/api/jobs/$kept" | json 'd["status"]')"
[ "$status" = scheduled ] || fail "job $kept is $status after the restore, not scheduled"
rm -rf "$backups"
log "REDIS_MODE=docker: backup restored (REDIS_START=docker), the scheduled job is back"
log "passed in $((SECONDS - T0))s"
