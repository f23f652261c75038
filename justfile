# cacheserver developer commands. `just` lists them.
# Redis: native redis-server processes, or docker-compose.redis.yml when a Docker engine answers
# (see scripts/start-redis.sh). Ports: jobqueue 6379, cluster 7100-7105, api 8080.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments := true

api_pidfile := "redis/run/api.pid"

# List the recipes
default:
    @{{just_executable()}} --justfile {{justfile()}} --list

# Start Redis, build and run the api (Ctrl-C stops the api; `just down` stops everything)
up:
    #!/usr/bin/env bash
    set -euo pipefail
    scripts/start-redis.sh start
    # REDIS_HA=1: the api finds the jobqueue master through Sentinel (settings written by the script).
    if [ "${REDIS_HA:-0}" = 1 ]; then set -a; . redis/run/ha.env; set +a; fi
    cargo build --release -p cacheserver-api --bin api
    host="${APP__SERVER__HOST:-127.0.0.1}"
    case "$host" in "" | 0.0.0.0 | "::" | "[::]") host=127.0.0.1 ;; esac
    url="http://${host}:${APP__SERVER__PORT:-8080}"
    mkdir -p redis/run
    if [ -f "{{api_pidfile}}" ] && kill -0 "$(cat "{{api_pidfile}}")" 2>/dev/null; then
        echo "an api started by 'just up' is still running (pid $(cat "{{api_pidfile}}")); run: just down" >&2
        exit 1
    fi
    if curl -fsS -o /dev/null --max-time 2 "$url/health" 2>/dev/null; then
        echo "something already answers at $url/health; stop it first (just down)" >&2
        exit 1
    fi
    # Run the binary built above directly: $! is the api itself, and no cargo lock is waited for.
    "${CARGO_TARGET_DIR:-target}/release/api" &
    api_pid=$!
    echo "$api_pid" >"{{api_pidfile}}"
    cleanup() {
        trap - EXIT INT TERM
        if kill -0 "$api_pid" 2>/dev/null; then
            echo "stopping api (pid $api_pid)"
            kill -TERM "$api_pid" 2>/dev/null || true
            wait "$api_pid" 2>/dev/null || true
        fi
        rm -f "{{api_pidfile}}"
    }
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    deadline=$((SECONDS + 120))
    until curl -fsS -o /dev/null --max-time 2 "$url/health" 2>/dev/null; do
        if ! kill -0 "$api_pid" 2>/dev/null; then
            rc=0
            wait "$api_pid" || rc=$?
            echo "the api exited (status $rc) before $url/health answered" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "the api did not answer $url/health within 120s" >&2
            exit 1
        fi
        sleep 1
    done
    echo "cacheserver api: ready at $url (jobs page /, docs /swagger-ui/, worker: just worker)"
    rc=0
    wait "$api_pid" || rc=$?
    # 143/130: stopped by SIGTERM/SIGINT (e.g. `just down`), a normal way to end.
    case "$rc" in 130 | 143) echo "api stopped"; rc=0 ;; esac
    exit "$rc"

# Stop the api left by `just up` (if any) and the Redis stack (data is kept)
down:
    #!/usr/bin/env bash
    set -euo pipefail
    pidfile="{{api_pidfile}}"
    if [ -f "$pidfile" ]; then
        pid="$(cat "$pidfile")"
        if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
            tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -Eq '(^|/)(api|cargo)( |$)'; then
            echo "stopping api (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
            if kill -0 "$pid" 2>/dev/null; then
                echo "api still running after 40s; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$pidfile"
    fi
    scripts/start-redis.sh stop

# Run the api only (expects Redis to be up: just redis; REDIS_HA=1 for the Sentinel set)
api:
    if [ "${REDIS_HA:-0}" = 1 ]; then set -a; . redis/run/ha.env; set +a; fi; \
    cargo run --release -p cacheserver-api --bin api

# Run a jobqueue worker; arguments are passed to it (just worker --help); REDIS_HA=1 as for api
worker *ARGS:
    if [ "${REDIS_HA:-0}" = 1 ]; then set -a; . redis/run/ha.env; set +a; fi; \
    cargo run --release -p cacheserver-worker --bin worker -- "$@"

# Start Redis with the jobqueue as a Sentinel set (master 6379, replicas 6380-6381, sentinels 26379-26381)
redis-ha:
    REDIS_HA=1 scripts/start-redis.sh start

# Start the local Redis stack (jobqueue :6379, cluster :7100-7105)
redis:
    scripts/start-redis.sh start

# Show which Redis nodes are up and the cluster state
redis-status:
    scripts/start-redis.sh status

# Stop Redis and DELETE all local Redis data (redis/data)
redis-reset:
    scripts/start-redis.sh reset

# Back up the jobqueue Redis into backups/<UTC time>/ and keep the newest 48 (env: BACKUP_DIR, BACKUP_KEEP, REDIS_*; see scripts/backup.sh)
backup:
    scripts/ensure-redis.sh
    scripts/backup.sh

# Restore the jobqueue Redis from a backup dir: verifies it first; refuses while the api or worker is connected unless --force
restore *ARGS:
    scripts/ensure-redis.sh
    scripts/restore.sh "$@"

# Web Redis browser: Redis Insight (Docker engine) at :5540, else redis-commander (npm, read-only) at 127.0.0.1:${INSIGHT_PORT:-8081}
insight:
    scripts/start-redis-insight.sh start

# Stop what `just insight` started
insight-stop:
    scripts/start-redis-insight.sh stop

# Prometheus + alerts (:9090) and prometheus-redis-exporter (:9121); with a Docker engine also Grafana (:3000)
monitor:
    scripts/start-monitoring.sh start

# Stop what `just monitor` started
monitor-stop:
    scripts/start-monitoring.sh stop

# Run the test suite, then the browser tests (installs what it needs; tests start their own Redis processes)
test: && monitoring-check e2e docker-test
    scripts/ensure-redis.sh
    scripts/ensure-monitoring.sh
    scripts/ensure-test-tools.sh
    if cargo nextest --version >/dev/null 2>&1; then \
        cargo nextest run --workspace --no-fail-fast; \
    else \
        cargo test --workspace --no-fail-fast; \
    fi

# The whole stack in containers: Redis, cluster, api (:8080), worker; args: --scale worker=3, --profile monitoring|insight
stack *ARGS:
    scripts/docker-stack.sh up "$@"

# Stop and remove the containers of `just stack` (-v also deletes their data volumes)
stack-down *ARGS:
    scripts/docker-stack.sh down "$@"

# Images and the compose stack on a real Docker engine: build, run a job, scale, stop a worker mid-job; REDIS_MODE=docker
docker-test:
    scripts/docker-stack-test.sh

# Prometheus config, alert rules + their unit tests (promtool), monitoring compose file
monitoring-check:
    scripts/ensure-monitoring.sh
    deploy/prometheus/check.sh

# Browser tests (headless Debian Chromium): the jobs page on real Redis, api and worker; the native Redis browser
e2e:
    scripts/ensure-redis.sh
    scripts/ensure-test-tools.sh
    cargo build -p cacheserver-api --bin api -p cacheserver-worker --bin worker
    # The scripts bound themselves (300 s, 120 s); the outer timeouts only guard against a hung node.
    timeout 330 node e2e/jobs-page.test.mjs
    timeout 200 node e2e/redis-browser.test.mjs

# Benchmarks on real processes (release builds, own Redis, wrk, BullMQ beside ours); writes docs/benchmarks.md (~5 min)
bench *ARGS:
    scripts/ensure-redis.sh
    # wrk, and BullMQ (bench/bullmq) exactly as its lockfile pins it: BullMQ runs in the same run.
    scripts/ensure-test-tools.sh
    cargo build --release -p cacheserver-api --bin api -p cacheserver-worker --bin worker -p cacheserver-bench --bin cacheserver-bench
    target/release/cacheserver-bench "$@"

# Fault drill: kill worker, api and Redis while registering 10,000 jobs; prints `drill: ... lost=0` (< 5 min)
drill *ARGS:
    scripts/ensure-redis.sh
    cargo build --release -p cacheserver-api --bin api -p cacheserver-worker --bin worker -p cacheserver-bench --bin cacheserver-bench
    timeout 300 target/release/cacheserver-bench drill "$@"

# Format the code
fmt:
    cargo fmt --all

# Check formatting without changing files
fmt-check:
    cargo fmt --all -- --check

# Clippy with warnings as errors
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Everything CI cares about: formatting, lints, tests
check: fmt-check lint test
