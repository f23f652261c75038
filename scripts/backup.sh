#!/usr/bin/env bash
# Back up the jobqueue Redis: a consistent RDB snapshot (plus the AOF directory when AOF is on
# and the data dir is local), verified, with a manifest, into $BACKUP_DIR/<UTC timestamp>/.
# Keeps the newest $BACKUP_KEEP backups. Prints one line: the backup's path and its age.
# Safe from cron / a systemd timer: overlapping runs wait for each other (flock), a failed run
# leaves no half backup behind and exits non-zero, the running Redis is never changed.
#
# Usage: scripts/backup.sh            (or: just backup)
#
# Environment (connection: see scripts/lib/redis-backup.sh — REDIS_URL, REDIS_HOST, REDIS_PORT,
# REDIS_USER, REDIS_PASSWORD_FILE, REDIS_SENTINEL, REDIS_MASTER_NAME):
#   BACKUP_DIR      default <repo>/backups
#   BACKUP_KEEP     backups kept, newest first; default 48
#   BACKUP_METHOD   auto (default) | local | protocol
#                   local:    BGSAVE, wait for it, copy dump.rdb (and appendonlydir) from
#                             REDIS_DATA_DIR; the Redis must run on this machine
#                   protocol: `redis-cli --rdb`: Redis streams a fresh snapshot over the
#                             connection (Docker without the bind mount, a remote host, Sentinel)
#                   auto:     local when the data dir is found (REDIS_DATA_DIR, or the one
#                             `just up` uses: redis/data/jobqueue, natively or bind-mounted into
#                             Docker) and holds the fresh snapshot, else protocol
#   REDIS_DATA_DIR  the Redis' `dir` as seen from this machine
#   REDIS_CLI       how to run redis-cli (scripts/lib/redis-backup.sh): a `docker compose exec`
#                   prefix backs up a Redis that publishes no port (then method protocol)
#   BACKUP_WAIT     seconds to wait for the snapshot, default 300
# With REDIS_SENTINEL the backup is taken from a healthy replica (the master is not forked),
# by protocol; from the master when no replica is up.
set -euo pipefail
BK_TAG=backup
# shellcheck source=lib/redis-backup.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib/redis-backup.sh"

BACKUP_DIR="${BACKUP_DIR:-$BK_ROOT/backups}"
BACKUP_KEEP="${BACKUP_KEEP:-48}"
BACKUP_METHOD="${BACKUP_METHOD:-auto}"
BACKUP_WAIT="${BACKUP_WAIT:-300}"
[[ "$BACKUP_KEEP" =~ ^[1-9][0-9]*$ ]] || bk_die "BACKUP_KEEP must be a number >= 1 (got '$BACKUP_KEEP')"
[[ "$BACKUP_WAIT" =~ ^[1-9][0-9]*$ ]] || bk_die "BACKUP_WAIT must be a number of seconds (got '$BACKUP_WAIT')"
case "$BACKUP_METHOD" in auto | local | protocol) ;; *) bk_die "BACKUP_METHOD must be auto, local or protocol (got '$BACKUP_METHOD')" ;; esac
[ $# -eq 0 ] || bk_die "no arguments expected (settings are environment variables; see the top of $0)"

bk_need redis-cli redis-server redis-check-rdb redis-check-aof sha256sum flock
bk_connection
bk_resolve_sentinel replica

now_ms() { date +%s%3N; }

mkdir -p "$BACKUP_DIR" || bk_die "cannot create BACKUP_DIR $BACKUP_DIR"
BACKUP_DIR="$(cd -- "$BACKUP_DIR" && pwd -P)"
# One backup at a time (a slow run and the next timer tick must not interleave).
exec 9>>"$BACKUP_DIR/.lock" || bk_die "cannot write to BACKUP_DIR $BACKUP_DIR"
flock -w "$BACKUP_WAIT" 9 || bk_die "another backup into $BACKUP_DIR is still running"
# Holding the lock, any partial dir left is from a run that was killed.
rm -rf "$BACKUP_DIR"/.partial-*

PARTIAL=""
# Error output goes off the backup disk: when that disk is full, the reason must still be shown.
ERRF="$(mktemp)"
cleanup() {
    bk_scratch_stop
    rm -f "$ERRF"
    [ -z "$PARTIAL" ] || rm -rf "$PARTIAL"
}
trap cleanup EXIT

info_server="$(rcli info server)" || bk_die "cannot reach the jobqueue Redis at $BK_HOST:$BK_PORT (see above)"
version="$(bk_info_field "$info_server" redis_version)"
info_repl="$(rcli info replication)" || bk_die "INFO replication failed (see above)"
role="$(bk_info_field "$info_repl" role)"
info_pers="$(rcli info persistence)" || bk_die "INFO persistence failed (see above)"
aof_enabled="$(bk_info_field "$info_pers" aof_enabled)"

# Where the snapshot file is, when it is on this machine.
data_dir=""
if [ "$BACKUP_METHOD" != protocol ] && [ -z "${REDIS_SENTINEL:-}" ]; then
    if [ -n "${REDIS_DATA_DIR:-}" ]; then
        data_dir="$REDIS_DATA_DIR"
        [ -d "$data_dir" ] || bk_die "REDIS_DATA_DIR $data_dir is not a directory"
    elif [ -z "${REDIS_CLI:-}" ] && [ -d "$BK_ROOT/redis/data/jobqueue" ] &&
        [ "$BK_PORT" = "${REDIS_JOBQUEUE_PORT:-6379}" ] &&
        [[ "$BK_HOST" =~ ^(127\.0\.0\.1|localhost|::1)$ ]]; then
        data_dir="$BK_ROOT/redis/data/jobqueue"
    elif [ "$BACKUP_METHOD" = local ]; then
        bk_die "BACKUP_METHOD=local needs REDIS_DATA_DIR (the Redis' dir on this machine)"
    fi
fi

ts="$(date -u +%Y%m%dT%H%M%SZ)"
name="$ts"
n=1
while [ -e "$BACKUP_DIR/$name" ]; do name="$ts-$n"; n=$((n + 1)); done
PARTIAL="$BACKUP_DIR/.partial-$name"
mkdir "$PARTIAL" || bk_die "cannot create $PARTIAL"

write_failed() {
    local avail
    avail="$(df -Ph "$BACKUP_DIR" 2>/dev/null | awk 'NR==2 {print $4}')"
    bk_die "cannot write the backup into $BACKUP_DIR ($1; free space there: ${avail:-unknown}); nothing kept, Redis untouched"
}

# --- local: BGSAVE and wait for *our* snapshot ------------------------------------------------
# saves FIELD: one field of INFO persistence; exits when Redis stops answering.
saves() {
    local p
    p="$(rcli info persistence)" || bk_die "lost the Redis at $BK_HOST:$BK_PORT while backing up (see above)"
    bk_info_field "$p" "$1"
}
local_snapshot() {
    local deadline=$((SECONDS + BACKUP_WAIT)) before
    # A BGSAVE already running forked before we started: wait for it, then take our own.
    # (A failed `saves` prints why and ends this loop; the explicit checks below then exit.)
    local busy
    while busy="$(saves rdb_bgsave_in_progress)" && [ "$busy" = 1 ]; do
        [ "$SECONDS" -lt "$deadline" ] || bk_die "a BGSAVE already running did not finish within ${BACKUP_WAIT}s"
        sleep 0.1
    done
    before="$(saves rdb_saves)"
    before_lastsave="$(rcli lastsave)" || bk_die "LASTSAVE failed (see above)"
    snapshot_started_ms="$(now_ms)"
    # SCHEDULE: when an AOF rewrite is running, Redis starts the BGSAVE right after it.
    rcli bgsave schedule >/dev/null || bk_die "BGSAVE was refused (see above)"
    local p
    while :; do
        p="$(rcli info persistence)" || bk_die "lost the Redis at $BK_HOST:$BK_PORT while waiting for the BGSAVE"
        if [ "$(bk_info_field "$p" rdb_bgsave_in_progress)" = 0 ] && [ "$(bk_info_field "$p" aof_rewrite_in_progress)" = 0 ]; then
            if [ -n "$before" ]; then
                [ "$(bk_info_field "$p" rdb_saves)" -gt "$before" ] && break
            elif [ "$(rcli lastsave)" != "$before_lastsave" ]; then
                break
            fi
        fi
        [ "$SECONDS" -lt "$deadline" ] || bk_die "the BGSAVE did not finish within ${BACKUP_WAIT}s"
        sleep 0.05
    done
    snapshot_finished_ms="$(now_ms)"
    [ "$(bk_info_field "$p" rdb_last_bgsave_status)" = ok ] ||
        bk_die "the BGSAVE failed (rdb_last_bgsave_status:$(bk_info_field "$p" rdb_last_bgsave_status)); see the Redis log (disk full? permissions?)"
    local rdb="$data_dir/${REDIS_RDB_FILE:-dump.rdb}"
    # The file must be the snapshot just taken, else data_dir is not this Redis' dir.
    if [ ! -f "$rdb" ] || [ $(($(stat -c %Y "$rdb") * 1000 + 999)) -lt "$snapshot_started_ms" ]; then
        [ -n "${REDIS_DATA_DIR:-}" ] &&
            bk_die "$rdb is not the snapshot just taken: is REDIS_DATA_DIR=$REDIS_DATA_DIR the dir of the Redis at $BK_HOST:$BK_PORT?"
        return 1
    fi
    cp "$rdb" "$PARTIAL/dump.rdb" 2>"$ERRF" || write_failed "$(tail -n1 "$ERRF")"
    rm -f "$ERRF"
    method=local
}

# --- protocol: redis-cli --rdb ---------------------------------------------------------------
protocol_snapshot() {
    snapshot_started_ms="$(now_ms)"
    local target="$PARTIAL/dump.rdb"
    # Through a REDIS_CLI prefix (docker exec) the file must come back on stdout.
    [ -z "${REDIS_CLI:-}" ] || target=-
    if ! timeout "$BACKUP_WAIT" "${BK_CLI[@]}" --rdb "$target" >"$PARTIAL/dump.rdb.part" 2>"$ERRF"; then
        grep -qiE 'no space|file too large|write' "$ERRF" && write_failed "$(tail -n1 "$ERRF")"
        bk_die "redis-cli --rdb failed: $(tail -n1 "$ERRF") (the backup user needs +sync +psync +replconf: deploy/redis/cacheserver-backup.acl)"
    fi
    if [ "$target" = - ]; then
        mv "$PARTIAL/dump.rdb.part" "$PARTIAL/dump.rdb"
        # redis-cli 7.0 writes the 40-byte diskless EOF marker after the RDB on stdout: cut the
        # file where redis-check-rdb finds the checksum.
        local end
        end="$(redis-check-rdb "$PARTIAL/dump.rdb" 2>&1 | sed -n 's/^\[offset \([0-9]*\)\] Checksum OK$/\1/p' | head -n1)"
        [ -z "$end" ] || truncate -s "$end" "$PARTIAL/dump.rdb"
    else
        rm -f "$PARTIAL/dump.rdb.part"
    fi
    snapshot_finished_ms="$(now_ms)"
    method=protocol
}

method=""
if [ -n "$data_dir" ]; then
    local_snapshot || bk_log "no fresh snapshot in $data_dir; fetching one over the connection instead"
fi
[ -n "$method" ] || protocol_snapshot

# The AOF directory as well (local only): with it a restore can replay writes after the snapshot.
aof_copied=0
if [ "$method" = local ] && [ "$aof_enabled" = 1 ] && [ -d "$data_dir/${REDIS_AOF_DIRNAME:-appendonlydir}" ]; then
    aof_src="$data_dir/${REDIS_AOF_DIRNAME:-appendonlydir}"
    for attempt in 1 2 3; do
        # Not while a rewrite swaps the files.
        while busy="$(saves aof_rewrite_in_progress)" && [ "$busy" = 1 ]; do sleep 0.1; done
        rm -rf "$PARTIAL/appendonlydir"
        cp -r "$aof_src" "$PARTIAL/appendonlydir" 2>"$ERRF" || write_failed "$(tail -n1 "$ERRF")"
        rm -f "$ERRF"
        aof_manifest="$(find "$PARTIAL/appendonlydir" -name '*.manifest' | head -n1)"
        if [ -n "$aof_manifest" ] && redis-check-aof "$aof_manifest" >"$ERRF" 2>&1; then
            aof_copied=1
            break
        fi
        bk_log "AOF copy attempt $attempt did not check clean (copied while written?): $(tail -n1 "$ERRF")"
    done
    rm -f "$ERRF"
    if [ "$aof_copied" = 0 ]; then
        rm -rf "$PARTIAL/appendonlydir"
        bk_log "warning: the AOF copy is left out; the RDB snapshot is the backup"
    fi
fi

# --- verify the copy: checksum check, then load it into a scratch redis-server and count ------
bk_check_rdb "$PARTIAL/dump.rdb" || bk_die "the copied RDB does not pass redis-check-rdb (see above); nothing kept"
rdb_version="$(bk_rdb_version "$PARTIAL/dump.rdb")" || bk_die "the copied RDB has no RDB header"
bk_scratch_start "$PARTIAL" || bk_die "the copied RDB does not load; nothing kept"
counts="$(bk_scratch_counts)" || bk_die "counting the copied RDB failed"
bk_scratch_stop

{
    echo "format=cacheserver-jobqueue-backup/1"
    echo "created_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "source=$BK_HOST:$BK_PORT"
    echo "source_role=$role"
    echo "method=$method"
    echo "redis_version=$version"
    echo "rdb_version=$rdb_version"
    echo "aof_enabled=$aof_enabled"
    echo "aof_copied=$aof_copied"
    # Every write acknowledged before snapshot_started_ms is in the snapshot; none after
    # snapshot_finished_ms is (unix ms, this machine's clock).
    echo "snapshot_started_ms=$snapshot_started_ms"
    echo "snapshot_finished_ms=$snapshot_finished_ms"
    printf '%s\n' "$counts"
    (cd "$PARTIAL" && find . -type f ! -name 'MANIFEST*' -printf '%P\n' | sort | while read -r f; do
        echo "file=$f $(stat -c %s "$f") $(sha256sum "$f" | cut -d' ' -f1)"
    done)
} >"$PARTIAL/MANIFEST.tmp" 2>"$ERRF" || write_failed "$(tail -n1 "$ERRF")"
rm -f "$ERRF"
sync -f "$PARTIAL/MANIFEST.tmp" 2>/dev/null || true
mv "$PARTIAL/MANIFEST.tmp" "$PARTIAL/MANIFEST" || write_failed "rename failed"
mv "$PARTIAL" "$BACKUP_DIR/$name" || write_failed "rename failed"
PARTIAL=""

# --- retention: newest BACKUP_KEEP complete backups -------------------------------------------
mapfile -t all < <(find "$BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended \
    -regex '.*/[0-9]{8}T[0-9]{6}Z(-[0-9]+)?' -exec test -f '{}/MANIFEST' ';' -printf '%f\n' | sort -V)
removed=0
while [ "${#all[@]}" -gt "$BACKUP_KEEP" ]; do
    rm -rf "${BACKUP_DIR:?}/${all[0]}"
    all=("${all[@]:1}")
    removed=$((removed + 1))
done

bytes="$(du -sb "$BACKUP_DIR/$name" | cut -f1)"
keys="$(sed -n 's/^keys=//p' <<<"$counts")"
age_ms=$(($(now_ms) - snapshot_started_ms))
printf 'backup: %s age %d.%01ds (%s keys, %s, %s from %s %s:%s, redis %s; kept %d, removed %d)\n' \
    "$BACKUP_DIR/$name" $((age_ms / 1000)) $((age_ms % 1000 / 100)) "$keys" "$(bk_human_bytes "$bytes")" \
    "$method" "$role" "$BK_HOST" "$BK_PORT" "$version" "${#all[@]}" "$removed"
