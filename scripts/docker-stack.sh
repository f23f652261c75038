#!/usr/bin/env bash
# The whole stack in containers (docker-compose.stack.yml): the jobqueue Redis, the 3+3 cluster,
# the api and the worker, built from the Dockerfile.
#
# Usage: scripts/docker-stack.sh up [--scale worker=N] [--profile monitoring|insight ...]
#        scripts/docker-stack.sh down [-v]      (-v also deletes the data volumes)
#        scripts/docker-stack.sh build | ps | logs [SERVICE]
# Environment: API_PORT (8080), COMPOSE_PROJECT_NAME (cacheserver), DOCKER_BASE_IMAGES
# (auto | public | local, see scripts/lib/docker-base.sh), STACK_READY_WAIT (seconds, 180).
set -euo pipefail
SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
source "$SCRIPT_DIR/lib/docker-base.sh"
cd -- "$SCRIPT_DIR/.."

export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-cacheserver}"
export REVISION="${REVISION:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
API_PORT="${API_PORT:-8080}"
export API_PORT

log() { printf 'stack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -ge 1 ] || { sed -n '5,9p' "$0" >&2; exit 2; }
cmd="$1"
shift

"$SCRIPT_DIR/ensure-docker.sh"

case "$cmd" in
    build)
        use_base_images
        compose build "$@"
        ;;
    up)
        use_base_images
        profiles=() scale=()
        while [ $# -gt 0 ]; do
            case "$1" in
                --profile) profiles+=(--profile "$2"); shift 2 ;;
                --scale) scale+=(--scale "$2"); shift 2 ;;
                *) die "unknown argument '$1' (--scale worker=N, --profile monitoring|insight)" ;;
            esac
        done
        compose build api worker
        compose ${profiles[@]+"${profiles[@]}"} up -d ${scale[@]+"${scale[@]}"}
        url="http://127.0.0.1:$API_PORT"
        wait_s="${STACK_READY_WAIT:-180}"
        deadline=$((SECONDS + wait_s))
        until curl -fsS -o /dev/null --max-time 2 "$url/ready"; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                compose ps >&2
                compose logs --tail 30 api >&2
                die "$url/ready did not answer 200 within ${wait_s}s"
            fi
            sleep 2
        done
        compose ps
        log "ready: api $url (jobs page /, docs /swagger-ui/); more workers: just stack --scale worker=3;" \
            "stop: just stack-down"
        ;;
    down)
        compose --profile monitoring --profile insight down --remove-orphans "$@"
        ;;
    ps | logs)
        compose "$cmd" "$@"
        ;;
    *) die "unknown command '$cmd' (up, down, build, ps, logs)" ;;
esac
