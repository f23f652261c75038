# Shared by scripts/backup.sh and scripts/restore.sh (source it; it defines functions, runs
# nothing). One place for: how the jobqueue Redis is reached (env vars), the scratch
# redis-server that loads a copy to verify and count it, and the manifest's counts.
#
# Connection (both scripts):
#   REDIS_URL             redis://[user[:password]@]host:port (overrides host/port/user)
#   REDIS_HOST            default 127.0.0.1
#   REDIS_PORT            default $REDIS_JOBQUEUE_PORT or 6379
#   REDIS_USER            ACL user (backup: deploy/redis/cacheserver-backup.acl; restore: an admin)
#   REDIS_PASSWORD_FILE   file holding the password (never put it on the command line)
#   REDIS_SENTINEL        host:port[,host:port...]: find the jobqueue through Sentinel
#   REDIS_MASTER_NAME     default cacheserver-jq (scripts/start-redis.sh's REDIS_HA=1 set)
#   REDIS_CLI             the redis-cli command, default redis-cli; for a Redis only reachable
#                         inside a container: "docker compose -f docker-compose.stack.yml exec -T
#                         -e REDISCLI_AUTH redis-jobqueue redis-cli" (then REDIS_HOST/PORT are as
#                         seen inside it: 127.0.0.1:6379)

BK_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)"
BK_TAG="${BK_TAG:-backup}"

bk_log() { printf '%s: %s\n' "$BK_TAG" "$*" >&2; }
bk_die() {
    printf '%s: error: %s\n' "$BK_TAG" "$*" >&2
    exit 1
}

bk_need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 ||
            bk_die "'$tool' is not installed (scripts/ensure-redis.sh installs the Redis tools)"
    done
}

# Fills BK_HOST, BK_PORT, BK_USER and exports REDISCLI_AUTH (redis-cli reads the password from
# it, so it never shows in `ps`).
bk_connection() {
    BK_HOST="${REDIS_HOST:-127.0.0.1}"
    BK_PORT="${REDIS_PORT:-${REDIS_JOBQUEUE_PORT:-6379}}"
    BK_USER="${REDIS_USER:-}"
    local pass=""
    if [ -n "${REDIS_URL:-}" ]; then
        local re='^rediss?://(([^:@/]*)(:([^@/]*))?@)?([^:/]+)(:([0-9]+))?/?[0-9]*$'
        [[ "$REDIS_URL" =~ $re ]] || bk_die "REDIS_URL '$REDIS_URL' is not redis://[user[:password]@]host[:port]"
        [ -n "${BASH_REMATCH[2]}" ] && BK_USER="${BASH_REMATCH[2]}"
        [ -n "${BASH_REMATCH[4]}" ] && pass="${BASH_REMATCH[4]}"
        BK_HOST="${BASH_REMATCH[5]}"
        BK_PORT="${BASH_REMATCH[7]:-6379}"
    fi
    if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
        [ -r "$REDIS_PASSWORD_FILE" ] || bk_die "REDIS_PASSWORD_FILE '$REDIS_PASSWORD_FILE' is not readable"
        pass="$(head -n1 "$REDIS_PASSWORD_FILE")"
    fi
    if [ -n "$pass" ]; then export REDISCLI_AUTH="$pass"; else unset REDISCLI_AUTH; fi
    bk_cli_args
}

bk_cli_args() {
    local prefix
    read -r -a prefix <<<"${REDIS_CLI:-redis-cli}"
    BK_CLI=("${prefix[@]}" --no-auth-warning -h "$BK_HOST" -p "$BK_PORT")
    [ -n "$BK_USER" ] && BK_CLI+=(--user "$BK_USER")
    return 0
}

# rcli ARGS...: one command on the target, stdout without CRs; fails on an error reply.
rcli() {
    local out
    out="$(timeout 10 "${BK_CLI[@]}" "$@" 2>&1 | tr -d '\r')" || { printf '%s\n' "$out" >&2; return 1; }
    # redis-cli exits 0 on error replies and prints a failed AUTH before running the command.
    if grep -qE '^(ERR|NOAUTH|WRONGPASS|NOPERM|AUTH failed|Could not connect|LOADING|MISCONF|READONLY)' <<<"$out"; then
        printf '%s\n' "$out" >&2
        return 1
    fi
    printf '%s\n' "$out"
}

bk_info_field() { sed -n "s/^$2:\(.*\)$/\1/p" <<<"$1" | head -n1; }

# With REDIS_SENTINEL: point BK_HOST/BK_PORT at a healthy replica (so the master is not loaded)
# when $1 = replica, else at the master. Prints which one it chose.
bk_resolve_sentinel() {
    [ -n "${REDIS_SENTINEL:-}" ] || return 0
    local want="$1" name="${REDIS_MASTER_NAME:-cacheserver-jq}" s out addr="" ip port
    local sentinels
    IFS=',' read -r -a sentinels <<<"$REDIS_SENTINEL"
    for s in "${sentinels[@]}"; do
        local scli=(redis-cli -h "${s%:*}" -p "${s##*:}")
        if [ "$want" = replica ]; then
            # Field/value lines per replica: the first that is just "slave" (not s_down or
            # disconnected) with its link to the master up, else the first that is just "slave"
            # (Sentinel refreshes master-link-status only every 10 s).
            out="$(timeout 5 "${scli[@]}" sentinel replicas "$name" 2>/dev/null | tr -d '\r')" || continue
            addr="$(awk '
                $0=="ip" {getline; ip=$0} $0=="port" {getline; port=$0}
                $0=="flags" {getline; flags=$0}
                $0=="master-link-status" {getline
                    if (flags=="slave" && $0=="ok" && ok=="") ok=ip ":" port
                    if (flags=="slave" && any=="") any=ip ":" port}
                END {print (ok != "" ? ok : any)}
            ' <<<"$out")"
        fi
        if [ -z "$addr" ]; then
            out="$(timeout 5 "${scli[@]}" sentinel get-master-addr-by-name "$name" 2>/dev/null | tr -d '\r')" || continue
            [ -n "$out" ] && addr="$(paste -sd: - <<<"$out")"
        fi
        [ -n "$addr" ] && break
    done
    [ -n "$addr" ] || bk_die "no sentinel of REDIS_SENTINEL=$REDIS_SENTINEL knows '$name'"
    ip="${addr%:*}"
    port="${addr##*:}"
    BK_HOST="$ip"
    BK_PORT="$port"
    bk_cli_args
}

# The RDB format version in a file's header (REDIS0010 → 10).
bk_rdb_version() {
    local head
    head="$(head -c 9 "$1" 2>/dev/null)" || return 1
    [[ "$head" =~ ^REDIS([0-9]{4})$ ]] || return 1
    echo "$((10#${BASH_REMATCH[1]}))"
}

# redis-check-rdb FILE, quiet unless it fails.
bk_check_rdb() {
    local out
    if ! out="$(redis-check-rdb "$1" 2>&1)" || grep -q 'RDB ERROR DETECTED' <<<"$out"; then
        printf '%s\n' "$out" | grep -v '^\[offset' | tail -n 8 >&2
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# Scratch redis-server: loads an RDB from DIR on a private unix socket (no TCP port), for
# verification, counting and building a fresh data dir. Never touches the running Redis.
# ---------------------------------------------------------------------------------------------
BK_SCRATCH_PID=""
BK_SCRATCH_SOCK=""

# bk_scratch_start DIR [extra redis-server args]: DIR holds dump.rdb.
bk_scratch_start() {
    local dir="$1"
    shift
    local sockdir
    sockdir="$(mktemp -d /tmp/cacheserver-restore.XXXXXX)"
    BK_SCRATCH_SOCK="$sockdir/redis.sock"
    env -u REDISCLI_AUTH redis-server --port 0 --unixsocket "$BK_SCRATCH_SOCK" --unixsocketperm 700 \
        --dir "$dir" --dbfilename dump.rdb --appendonly no --save "" \
        --logfile "$sockdir/redis.log" --daemonize no "$@" >/dev/null 2>&1 &
    BK_SCRATCH_PID=$!
    local i
    for ((i = 0; i < 600; i++)); do
        if [ "$(scli ping 2>/dev/null)" = PONG ] &&
            [ "$(bk_info_field "$(scli info persistence)" loading)" = 0 ]; then
            return 0
        fi
        kill -0 "$BK_SCRATCH_PID" 2>/dev/null || break
        sleep 0.1
    done
    bk_log "a scratch redis-server could not load the copy; its log:"
    tail -n 8 "$sockdir/redis.log" >&2 || true
    bk_scratch_stop
    return 1
}

scli() { timeout 60 env -u REDISCLI_AUTH redis-cli -s "$BK_SCRATCH_SOCK" "$@" | tr -d '\r'; }

bk_scratch_stop() {
    [ -n "$BK_SCRATCH_PID" ] || return 0
    scli shutdown nosave >/dev/null 2>&1 || kill "$BK_SCRATCH_PID" 2>/dev/null || true
    wait "$BK_SCRATCH_PID" 2>/dev/null || true
    rm -rf "$(dirname "$BK_SCRATCH_SOCK")"
    BK_SCRATCH_PID=""
}

# The counts of the dataset loaded in the scratch server, as manifest lines:
#   keys=N, keys_persistent=N (no TTL: these must survive a restore exactly), queues=a,b and
#   per queue (crates/jobqueue/src/store/mod.rs' key layout): jobs (the `data` hash), delayed,
#   retrying, active, inflight, finished, dead.
# One Lua call: the scratch server is private, so blocking it is fine.
bk_scratch_counts() {
    scli eval "
        local keys, persistent, queues, cursor = 0, 0, {}, '0'
        repeat
            local r = redis.call('SCAN', cursor, 'COUNT', 1000)
            cursor = r[1]
            for _, k in ipairs(r[2]) do
                keys = keys + 1
                if redis.call('PTTL', k) == -1 then persistent = persistent + 1 end
                local q = string.match(k, '^(.+):data$')
                if q and redis.call('TYPE', k).ok == 'hash' then queues[#queues + 1] = q end
            end
        until cursor == '0'
        table.sort(queues)
        local out = {'keys=' .. keys, 'keys_persistent=' .. persistent, 'queues=' .. table.concat(queues, ',')}
        for _, q in ipairs(queues) do
            local inflight, c = 0, '0'
            repeat
                local r = redis.call('SCAN', c, 'MATCH', q .. ':inflight:*', 'COUNT', 1000)
                c = r[1]
                for _, k in ipairs(r[2]) do inflight = inflight + redis.call('SCARD', k) end
            until c == '0'
            local p = 'queue.' .. q .. '.'
            out[#out + 1] = p .. 'jobs=' .. redis.call('HLEN', q .. ':data')
            out[#out + 1] = p .. 'delayed=' .. redis.call('ZCARD', q .. ':delayed')
            out[#out + 1] = p .. 'ready=' .. redis.call('ZCARD', q .. ':ready')
            out[#out + 1] = p .. 'retrying=' .. redis.call('ZCARD', q .. ':retrying')
            out[#out + 1] = p .. 'active=' .. redis.call('LLEN', q .. ':active')
            out[#out + 1] = p .. 'inflight=' .. inflight
            out[#out + 1] = p .. 'finished=' .. redis.call('ZCARD', q .. ':finished')
            out[#out + 1] = p .. 'dead=' .. redis.call('ZCARD', q .. ':dead_at')
        end
        return out" 0
}

# bk_manifest_get FILE KEY
bk_manifest_get() { sed -n "s/^$2=//p" "$1" | head -n1; }

bk_human_bytes() { numfmt --to=iec --suffix=B "$1" 2>/dev/null || echo "${1}B"; }
