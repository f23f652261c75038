#!/usr/bin/env bash
# Make sure a Docker engine answers and a compose tool is present:
#   * no `docker`/`dockerd`: install Debian's docker.io (engine 20.10) with apt-get (root or sudo);
#   * no engine answering: start `dockerd` in the background (root only; log: $DOCKERD_LOG,
#     default /var/log/cacheserver-dockerd.log) and wait for it, at most $DOCKER_WAIT s (60);
#   * no `docker compose` and no `docker-compose`: install Debian's docker-compose (1.29).
# Exits 0 when `docker info` answers, else 1 with one line naming what is missing.
# Used by scripts/docker-stack-test.sh (just test) and just stack. Safe to run repeatedly.
set -euo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/apt.sh"

WAIT="${DOCKER_WAIT:-60}"
LOG="${DOCKERD_LOG:-/var/log/cacheserver-dockerd.log}"

log() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

if ! command -v docker >/dev/null 2>&1 || { ! engine_answers && ! command -v dockerd >/dev/null 2>&1; }; then
    apt_install ensure-docker -o DPkg::Lock::Timeout=600 -- docker.io ||
        die "no Docker engine: install it (apt-get install -y docker.io, or Docker's own packages)"
fi

if ! engine_answers; then
    [ "$(id -u)" -eq 0 ] ||
        die "no Docker engine answers and only root can start dockerd here: sudo dockerd & (or start the docker service)"
    command -v dockerd >/dev/null 2>&1 || die "dockerd is not installed (apt-get install -y docker.io)"
    if pgrep -x dockerd >/dev/null 2>&1; then
        log "dockerd runs but does not answer yet; waiting up to ${WAIT}s"
    else
        log "starting dockerd (log: $LOG)"
        mkdir -p "$(dirname -- "$LOG")"
        # setsid: the engine outlives this script and the shell that ran it.
        setsid dockerd >>"$LOG" 2>&1 </dev/null &
    fi
    deadline=$((SECONDS + WAIT))
    until engine_answers; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "last lines of $LOG:"
            tail -n 20 "$LOG" >&2 2>/dev/null || true
            die "dockerd did not answer within ${WAIT}s (see $LOG)"
        fi
        sleep 1
    done
    log "Docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null) answers"
fi

if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    apt_install ensure-docker -o DPkg::Lock::Timeout=600 -- docker-compose ||
        die "no compose tool: install docker-compose (apt-get install -y docker-compose) or the compose plugin"
fi
