#!/usr/bin/env bash
# Restore the jobqueue Redis from a backup made by scripts/backup.sh.
#
# Usage: scripts/restore.sh [--force] [--verify-only] BACKUP_DIR      (or: just restore DIR)
#
# 1. Verifies the backup before touching anything: MANIFEST present, every file's size and
#    sha256 as listed, redis-check-rdb / redis-check-aof pass, the RDB format is one this Redis
#    can read, and a scratch redis-server loads it with exactly the manifest's counts. A bad
#    backup is refused with the reason; nothing is stopped or overwritten.
# 2. Builds the new data dir beside the old one (the RDB, plus an AOF written from it, so a Redis
#    with `appendonly yes` loads it).
# 3. If the Redis answers: refuses while an application (api, worker, anything but replicas and
#    this script) is connected, unless --force; pauses writes; shuts it down without saving.
# 4. Moves the old data dir aside (kept as <dir>.replaced-<time>), puts the new one in place,
#    starts Redis (REDIS_START), waits until it has loaded, checks the counts, prints them.
# The api and the worker reconnect by themselves; the worker then runs every job that fell due
# meanwhile (due times are absolute: never early; at least once).
#
# Environment (connection: scripts/lib/redis-backup.sh; use an admin user — restore runs
# CLIENT LIST, CONFIG GET dir, SHUTDOWN):
#   REDIS_DATA_DIR     the Redis' data dir; default <repo>/redis/data/jobqueue (`just up`'s)
#   REDIS_START        auto (default) | native | docker | stack | none
#                      native: redis-server daemonized exactly as scripts/start-redis.sh runs it
#                              (pidfile/log under REDIS_RUN_DIR / REDIS_LOG_DIR)
#                      docker: docker compose stop/start redis-jobqueue (docker-compose.redis.yml)
#                      stack:  the container stack (docker-compose.stack.yml, project
#                              COMPOSE_PROJECT_NAME): its redis-jobqueue keeps its data in a named
#                              volume; the staged data is copied into it while the service is
#                              stopped (the old files kept in the volume as replaced-<time>/).
#                              Reach that Redis with REDIS_CLI="docker compose -f
#                              docker-compose.stack.yml exec -T -e REDISCLI_AUTH redis-jobqueue redis-cli"
#                      none:   you (systemd, your orchestrator) start it; the script waits
#                      auto:   docker when the compose stack's redis-jobqueue exists, else native
#   REDIS_SERVER_ARGS  extra redis-server arguments for native (e.g. "--aclfile /etc/redis/users.acl")
#   REDIS_RUN_DIR      default <repo>/redis/run;  REDIS_LOG_DIR default <repo>/redis/logs
#   RESTORE_WAIT       seconds to wait for Redis to start and load, default 300
set -euo pipefail
BK_TAG=restore
# shellcheck source=lib/redis-backup.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib/redis-backup.sh"

usage() {
    echo "usage: $0 [--force] [--verify-only] BACKUP_DIR" >&2
    exit 2
}
FORCE=0
VERIFY_ONLY=0
BACKUP=""
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --verify-only) VERIFY_ONLY=1 ;;
        -h | --help) usage ;;
        -*) echo "restore: unknown option $arg" >&2; usage ;;
        *) [ -z "$BACKUP" ] || usage; BACKUP="$arg" ;;
    esac
done
[ -n "$BACKUP" ] || usage

RESTORE_WAIT="${RESTORE_WAIT:-300}"
REDIS_START="${REDIS_START:-auto}"
RUN_DIR="${REDIS_RUN_DIR:-$BK_ROOT/redis/run}"
LOG_DIR="${REDIS_LOG_DIR:-$BK_ROOT/redis/logs}"
DATA_DIR="${REDIS_DATA_DIR:-$BK_ROOT/redis/data/jobqueue}"
COMPOSE_FILE="$BK_ROOT/docker-compose.redis.yml"
STACK_FILE="$BK_ROOT/docker-compose.stack.yml"
case "$REDIS_START" in auto | native | docker | stack | none) ;; *) bk_die "REDIS_START must be auto, native, docker, stack or none (got '$REDIS_START')" ;; esac

bk_need redis-cli redis-server redis-check-rdb redis-check-aof sha256sum
bk_connection
bk_resolve_sentinel master

STAGE=""
cleanup() {
    bk_scratch_stop
    [ -z "$STAGE" ] || rm -rf "$STAGE"
}
trap cleanup EXIT
started_at=$SECONDS

# --- 1. verify the backup ---------------------------------------------------------------------
[ -d "$BACKUP" ] || bk_die "$BACKUP is not a directory"
BACKUP="$(cd -- "$BACKUP" && pwd -P)"
MANIFEST="$BACKUP/MANIFEST"
[ -f "$MANIFEST" ] && [ "$(bk_manifest_get "$MANIFEST" format)" = "cacheserver-jobqueue-backup/1" ] ||
    bk_die "$BACKUP is not a backup made by scripts/backup.sh (no MANIFEST with format=cacheserver-jobqueue-backup/1); nothing changed"
grep -q '^file=dump.rdb ' "$MANIFEST" || bk_die "$MANIFEST lists no dump.rdb; nothing changed"
while read -r rel size sum; do
    f="$BACKUP/$rel"
    [ -f "$f" ] || bk_die "$rel is listed in the MANIFEST but missing from $BACKUP; nothing changed"
    [ "$(stat -c %s "$f")" = "$size" ] ||
        bk_die "$rel is $(stat -c %s "$f") bytes, the MANIFEST says $size (truncated or replaced); nothing changed"
    [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$sum" ] ||
        bk_die "$rel does not match its sha256 in the MANIFEST (corrupted); nothing changed"
done < <(sed -n 's/^file=//p' "$MANIFEST")

backup_version="$(bk_manifest_get "$MANIFEST" redis_version)"
rdb_version="$(bk_rdb_version "$BACKUP/dump.rdb")" || bk_die "dump.rdb has no RDB header; nothing changed"
reader_version="$(redis-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')"
if ! out="$(redis-check-rdb "$BACKUP/dump.rdb" 2>&1)" || grep -q 'RDB ERROR DETECTED' <<<"$out"; then
    if grep -q "Can't handle RDB format version" <<<"$out"; then
        bk_die "dump.rdb is RDB format $rdb_version, written by Redis $backup_version; this Redis ($reader_version) cannot read it: restore with Redis >= $backup_version; nothing changed"
    fi
    grep -v '^\[offset' <<<"$out" | tail -n 6 >&2
    bk_die "dump.rdb fails redis-check-rdb (see above); nothing changed"
fi
if [ -d "$BACKUP/appendonlydir" ]; then
    aof_manifest="$(find "$BACKUP/appendonlydir" -name '*.manifest' | head -n1)"
    [ -n "$aof_manifest" ] && redis-check-aof "$aof_manifest" >/dev/null 2>&1 ||
        bk_die "appendonlydir fails redis-check-aof; nothing changed"
fi

# The running target's version, when it answers: it must be able to read the backup too.
target_up=0
if info_server="$(rcli info server 2>/dev/null)"; then
    target_up=1
    target_version="$(bk_info_field "$info_server" redis_version)"
    if [ "$(printf '%s\n%s\n' "$backup_version" "$target_version" | sort -V | tail -n1)" != "$target_version" ] &&
        [ "${backup_version%.*}" != "${target_version%.*}" ]; then
        bk_die "the backup was written by Redis $backup_version; the Redis at $BK_HOST:$BK_PORT is $target_version and may not read it (upgrade it first); nothing changed"
    fi
fi

# --- 2. stage the new data dir beside the old one (same filesystem: the swap is a rename) -----
parent="$(dirname -- "$DATA_DIR")"
mkdir -p "$parent" || bk_die "cannot create $parent"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
STAGE="$DATA_DIR.restore-$stamp"
mkdir "$STAGE" || bk_die "cannot create $STAGE"
errf="$(mktemp)"
cp "$BACKUP/dump.rdb" "$STAGE/dump.rdb" 2>"$errf" || {
    msg="$(tail -n1 "$errf")"
    rm -f "$errf"
    bk_die "cannot copy the RDB to $STAGE ($msg); nothing changed"
}
rm -f "$errf"
bk_scratch_start "$STAGE" || bk_die "this redis-server ($reader_version) could not load the backup; nothing changed"
counts="$(bk_scratch_counts)" || bk_die "counting the staged copy failed; nothing changed"
mismatch=""
while IFS='=' read -r key want; do
    case "$key" in keys_persistent | queues | queue.*) ;; *) continue ;; esac
    got="$(sed -n "s/^$key=//p" <<<"$counts")"
    [ "$got" = "$want" ] || mismatch+=" $key: manifest $want, loaded ${got:-none};"
done <"$MANIFEST"
[ -z "$mismatch" ] || bk_die "the backup loads with other counts than its MANIFEST:$mismatch nothing changed"
# An AOF written from the snapshot: a Redis started with `appendonly yes` and no AOF would start
# empty and ignore dump.rdb.
before="$(bk_info_field "$(scli info persistence)" aof_rewrites)"
scli config set appendonly yes >/dev/null
deadline=$((SECONDS + RESTORE_WAIT))
until p="$(scli info persistence)" &&
    [ "$(bk_info_field "$p" aof_rewrites)" -gt "$before" ] &&
    [ "$(bk_info_field "$p" aof_rewrite_in_progress)" = 0 ] &&
    [ "$(bk_info_field "$p" aof_rewrite_scheduled)" = 0 ]; do
    [ "$SECONDS" -lt "$deadline" ] || bk_die "writing the AOF of the staged copy took over ${RESTORE_WAIT}s; nothing changed"
    sleep 0.05
done
[ "$(bk_info_field "$p" aof_last_bgrewrite_status)" = ok ] ||
    bk_die "writing the AOF of the staged copy failed (disk full?); nothing changed"
bk_scratch_stop
chmod 755 "$STAGE"

if [ "$VERIFY_ONLY" = 1 ]; then
    echo "restore: $BACKUP verified (redis $backup_version, RDB v$rdb_version, $(sed -n 's/^keys=//p' <<<"$counts") keys); nothing changed (--verify-only)"
    exit 0
fi

# --- 3. the running Redis: nobody may be writing ---------------------------------------------
mode="$REDIS_START"
if [ "$mode" = auto ]; then
    mode=native
    if command -v docker >/dev/null 2>&1 && [ -f "$COMPOSE_FILE" ] &&
        [ -n "$(docker ps -aq --filter name='^redis-jobqueue$' 2>/dev/null)" ]; then
        mode=docker
    fi
fi
compose() {
    local file="$COMPOSE_FILE"
    [ "$mode" = stack ] && file="$STACK_FILE"
    if docker compose version >/dev/null 2>&1; then docker compose -f "$file" "$@"; else docker-compose -f "$file" "$@"; fi
}
stack_container=""
if [ "$mode" = stack ]; then
    stack_container="$(compose ps -q redis-jobqueue 2>/dev/null | head -n1)"
    [ -n "$stack_container" ] ||
        bk_die "no redis-jobqueue container in the compose project ${COMPOSE_PROJECT_NAME:-(default)} of docker-compose.stack.yml (set COMPOSE_PROJECT_NAME); nothing changed"
fi

if [ "$target_up" = 1 ]; then
    if [ "$mode" = native ]; then
        running_dir="$(rcli config get dir | sed -n 2p)" || bk_die "CONFIG GET dir was refused: restore needs an admin user (REDIS_USER/REDIS_PASSWORD_FILE); nothing changed"
        if [ "$(cd -- "$running_dir" 2>/dev/null && pwd -P)" != "$(cd -- "$DATA_DIR" 2>/dev/null && pwd -P || echo "$DATA_DIR")" ]; then
            bk_die "the Redis at $BK_HOST:$BK_PORT uses dir $running_dir, not REDIS_DATA_DIR=$DATA_DIR; set REDIS_DATA_DIR; nothing changed"
        fi
    fi
    clients="$(rcli client list)" || bk_die "CLIENT LIST was refused: restore needs an admin user; nothing changed"
    # Applications: normal clients (not replicas, masters, sentinels), but not this very
    # CLIENT LIST (each redis-cli call is its own connection).
    apps="$(awk '{
        cmd=""; flags=""; name=""; addr=""; lib=""
        for (i = 1; i <= NF; i++) {
            split($i, kv, "=")
            if (kv[1] == "cmd") cmd = kv[2]; else if (kv[1] == "flags") flags = kv[2]
            else if (kv[1] == "name") name = kv[2]; else if (kv[1] == "addr") addr = kv[2]
            else if (kv[1] == "lib-name") lib = kv[2]
        }
        if (cmd != "client|list" && flags !~ /[SM]/ && name !~ /^sentinel-/)
            printf "%s%s%s%s", sep, addr, (name != "" ? " name=" name : ""), (lib != "" ? " lib=" lib : "")
        if (cmd != "client|list" && flags !~ /[SM]/ && name !~ /^sentinel-/) sep = ", "
    }' <<<"$clients")"
    if [ -n "$apps" ] && [ "$FORCE" = 0 ]; then
        bk_die "refusing: clients are connected to $BK_HOST:$BK_PORT ($apps): stop the api and the worker first, or pass --force; nothing changed"
    fi
    # Stop writes (reads may go on) while the server goes down; the pause ends with it.
    rcli client pause 600000 write >/dev/null || true
    case "$mode" in
        docker | stack) compose stop redis-jobqueue >/dev/null || bk_die "docker compose stop redis-jobqueue failed" ;;
        *)
            rcli shutdown nosave >/dev/null 2>&1 || true
            deadline=$((SECONDS + 30))
            while rcli ping >/dev/null 2>&1; do
                [ "$SECONDS" -lt "$deadline" ] || bk_die "the Redis at $BK_HOST:$BK_PORT did not shut down within 30s (writes are paused; CLIENT UNPAUSE resumes them)"
                sleep 0.1
            done
            ;;
    esac
    bk_log "stopped the Redis at $BK_HOST:$BK_PORT${apps:+ (connected, --force: $apps)}"
elif [ "$mode" = docker ] || [ "$mode" = stack ]; then
    compose stop redis-jobqueue >/dev/null 2>&1 || true
fi

# --- 4. swap the data dirs, start, check ------------------------------------------------------
replaced=""
if [ "$mode" = stack ]; then
    # The volume is reached through the stopped container (--volumes-from), with its own image:
    # old files move into replaced-<time>/ inside the volume (a rename), the staged ones are
    # copied in and given the owner of /data (the image's redis user).
    image="$(docker inspect -f '{{.Config.Image}}' "$stack_container")" || bk_die "docker inspect $stack_container failed"
    docker run --rm --volumes-from "$stack_container" -v "$STAGE:/restore:ro" --entrypoint sh "$image" -c '
        set -e
        old="/data/replaced-$1"
        mkdir "$old"
        find /data -mindepth 1 -maxdepth 1 ! -name "replaced-*" -exec mv {} "$old/" \;
        cp -a /restore/. /data/
        chown -R "$(stat -c %u:%g /data)" /data
        rmdir "$old" 2>/dev/null || true' restore "$stamp" >&2 ||
        bk_die "copying the backup into the volume of $stack_container failed (the old files are in its /data/replaced-$stamp)"
    replaced="the volume's /data/replaced-$stamp (if it held data)"
    rm -rf "$STAGE"
    STAGE=""
else
    if [ -d "$DATA_DIR" ] && [ -n "$(ls -A "$DATA_DIR")" ]; then
        replaced="$DATA_DIR.replaced-$stamp"
        mv "$DATA_DIR" "$replaced" || bk_die "cannot move $DATA_DIR aside"
    elif [ -d "$DATA_DIR" ]; then
        rmdir "$DATA_DIR"
    fi
    mv "$STAGE" "$DATA_DIR" || bk_die "cannot move $STAGE to $DATA_DIR${replaced:+ (the old data is in $replaced)}"
    STAGE=""
fi

case "$mode" in
    native)
        mkdir -p "$RUN_DIR" "$LOG_DIR"
        # shellcheck disable=SC2086 # REDIS_SERVER_ARGS is a list of arguments
        redis-server --bind "$BK_HOST" --port "$BK_PORT" \
            --daemonize yes --pidfile "$RUN_DIR/redis-$BK_PORT.pid" --logfile "$LOG_DIR/redis-$BK_PORT.log" \
            --dir "$DATA_DIR" --appendonly yes --appendfsync everysec ${REDIS_SERVER_ARGS:-} ||
            bk_die "redis-server did not start; see $LOG_DIR/redis-$BK_PORT.log"
        ;;
    docker | stack) compose start redis-jobqueue >/dev/null || compose up -d redis-jobqueue >/dev/null || bk_die "docker compose could not start redis-jobqueue" ;;
    none) bk_log "the data is in place in $DATA_DIR: start the Redis on $BK_HOST:$BK_PORT now (waiting ${RESTORE_WAIT}s)" ;;
esac
deadline=$((SECONDS + RESTORE_WAIT))
until [ "$(rcli ping 2>/dev/null)" = PONG ] &&
    [ "$(bk_info_field "$(rcli info persistence 2>/dev/null)" loading)" = 0 ]; do
    [ "$SECONDS" -lt "$deadline" ] || bk_die "the Redis at $BK_HOST:$BK_PORT did not come up within ${RESTORE_WAIT}s (data in $DATA_DIR)"
    sleep 0.05
done
ready_at=$SECONDS

# The api and the worker may reconnect at once and add or run jobs: every queue must hold at
# least the jobs of the backup (the exact counts were checked on the staged copy above).
summary=""
for q in $(bk_manifest_get "$MANIFEST" queues | tr ',' ' '); do
    want="$(bk_manifest_get "$MANIFEST" "queue.$q.jobs")"
    got="$(rcli hlen "$q:data")" || bk_die "HLEN $q:data failed after the restore (see above)"
    [ "$got" -ge "$want" ] || bk_die "after the restore $q holds $got jobs, the backup $want"
    summary+=" $q: jobs=$want delayed=$(bk_manifest_get "$MANIFEST" "queue.$q.delayed") ready=$(bk_manifest_get "$MANIFEST" "queue.$q.ready") retrying=$(bk_manifest_get "$MANIFEST" "queue.$q.retrying") active=$(bk_manifest_get "$MANIFEST" "queue.$q.active") inflight=$(bk_manifest_get "$MANIFEST" "queue.$q.inflight") finished=$(bk_manifest_get "$MANIFEST" "queue.$q.finished") dead=$(bk_manifest_get "$MANIFEST" "queue.$q.dead");"
done
snap_ms="$(bk_manifest_get "$MANIFEST" snapshot_started_ms)"
snap="$(date -u -d "@$((snap_ms / 1000))" +%Y-%m-%dT%H:%M:%SZ)"
echo "restore: $BACKUP (snapshot $snap, redis $backup_version, $(sed -n 's/^keys=//p' <<<"$counts") keys) → $BK_HOST:$BK_PORT $([ "$mode" = stack ] && echo "volume of redis-jobqueue" || echo "dir $DATA_DIR") ($mode) in $((ready_at - started_at))s;${summary:- no queues;}${replaced:+ previous data kept in $replaced}"
