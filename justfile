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

# Run the api only (expects Redis to be up: just redis)
api:
    cargo run --release -p cacheserver-api --bin api

# Run a jobqueue worker; arguments are passed to it (just worker --help)
worker *ARGS:
    cargo run --release -p cacheserver-jobqueue --bin worker -- "$@"

# Start the local Redis stack (jobqueue :6379, cluster :7100-7105)
redis:
    scripts/start-redis.sh start

# Show which Redis nodes are up and the cluster state
redis-status:
    scripts/start-redis.sh status

# Stop Redis and DELETE all local Redis data (redis/data)
redis-reset:
    scripts/start-redis.sh reset

# Start Redis Insight (needs a Docker engine) at http://localhost:5540
insight:
    scripts/start-redis-insight.sh start

# Run the test suite, then the browser test (tests start their own Redis processes)
test: && e2e
    scripts/ensure-redis.sh
    if cargo nextest --version >/dev/null 2>&1; then \
        cargo nextest run --workspace --no-fail-fast; \
    else \
        cargo test --workspace --no-fail-fast; \
    fi

# Browser test of the jobs page: real Redis, api and worker, headless Debian Chromium
e2e:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x /usr/bin/chromium ]; then
        if [ -n "${CI:-}" ]; then
            echo "e2e: /usr/bin/chromium is missing (.ci/run installs it)" >&2
            exit 1
        fi
        echo "e2e: SKIPPED: no /usr/bin/chromium here (apt-get install -y chromium chromium-driver)"
        exit 0
    fi
    cargo build -p cacheserver-api --bin api -p cacheserver-jobqueue --bin worker
    if [ ! -d e2e/node_modules/playwright-core ]; then
        (cd e2e && npm ci --no-audit --no-fund)
    fi
    # The script bounds itself (270 s); the outer timeout only guards against a hung node.
    timeout 300 node e2e/jobs-page.test.mjs

# Benchmarks on real processes (release builds, own Redis, wrk); writes docs/benchmarks.md (~4 min)
bench *ARGS:
    scripts/ensure-redis.sh
    command -v wrk >/dev/null 2>&1 || { apt-get update && apt-get install -y wrk; }
    cargo build --release -p cacheserver-api --bin api -p cacheserver-jobqueue --bin worker -p cacheserver-bench --bin cacheserver-bench
    target/release/cacheserver-bench "$@"

# Fault drill: kill worker, api and Redis while registering 10,000 jobs; prints `drill: ... lost=0` (< 5 min)
drill *ARGS:
    scripts/ensure-redis.sh
    cargo build --release -p cacheserver-api --bin api -p cacheserver-jobqueue --bin worker -p cacheserver-bench --bin cacheserver-bench
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
