#!/usr/bin/env bash
# Local Redis stack for cacheserver:
#   * jobqueue Redis  127.0.0.1:6379       (single node, AOF everysec)
#   * Redis Cluster   127.0.0.1:7100-7105  (3 masters + 3 replicas, AOF everysec)
#
# Usage: scripts/start-redis.sh {start|stop|status|reset}
#
# With a Docker engine (`docker info` answers) it drives docker-compose.redis.yml, unless nodes it
# started natively still run; otherwise it runs native, daemonized redis-server processes
# (installing the redis-server package when missing). Native layout, relative to the repo root:
#   redis/data/jobqueue, redis/data/cluster-<port>   data (AOF, RDB, nodes-<port>.conf)
#   redis/run/redis-<port>.pid                        pidfiles
#   redis/logs/redis-<port>.log                       logs
#
# Environment (native mode; in Docker mode only REDIS_JOBQUEUE_PORT, and REDIS_IMAGE, the image of
# docker-compose.redis.yml (default redis:7-alpine), are honoured):
#   REDIS_MODE           auto (default) | docker | native
#   REDIS_JOBQUEUE_PORT  default 6379
#   REDIS_CLUSTER_PORTS  default 7100..7105; also "7100-7105" or "7100,7101,..." (>= 6, even count)
#   REDIS_CLUSTER_WAIT   seconds to wait for cluster_state:ok, default 60
#   REDIS_HA             1: the jobqueue Redis becomes a Sentinel set: master on REDIS_JOBQUEUE_PORT,
#                        replicas on REDIS_HA_REPLICA_PORTS (default 6380,6381), sentinels on
#                        REDIS_HA_SENTINEL_PORTS (default 26379,26380,26381), master name
#                        cacheserver-jq; the APP__ settings to use it are written to redis/run/ha.env
#                        (`just up`, `just api` and `just worker` read it when REDIS_HA=1)
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
REDIS_DIR="$ROOT/redis"
DATA_DIR="$REDIS_DIR/data"
LOG_DIR="$REDIS_DIR/logs"
RUN_DIR="$REDIS_DIR/run"
COMPOSE_FILE="$ROOT/docker-compose.redis.yml"
DOCKER_NETWORK="redis-network"

JOBQUEUE_PORT="${REDIS_JOBQUEUE_PORT:-6379}"
HA="${REDIS_HA:-0}"
HA_MASTER_NAME="cacheserver-jq"
IFS=',' read -r -a HA_REPLICA_PORTS <<<"${REDIS_HA_REPLICA_PORTS:-6380,6381}"
IFS=',' read -r -a HA_SENTINEL_PORTS <<<"${REDIS_HA_SENTINEL_PORTS:-26379,26380,26381}"
HA_ENV_FILE="$RUN_DIR/ha.env"
CLUSTER_WAIT="${REDIS_CLUSTER_WAIT:-60}"
MODE="${REDIS_MODE:-auto}"

log() { printf 'redis: %s\n' "$*"; }
err() { printf 'redis: error: %s\n' "$*" >&2; }
die() { err "$*"; exit 1; }

usage() {
    echo "usage: $0 {start|stop|status|reset}" >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------
# Port list parsing
# ---------------------------------------------------------------------------------------------
parse_cluster_ports() {
    local spec="${REDIS_CLUSTER_PORTS:-7100..7105}" a b p
    CLUSTER_PORTS=()
    spec="${spec//[[:space:]]/,}"
    if [[ "$spec" =~ ^([0-9]+)(\.\.|-)([0-9]+)$ ]]; then
        a="${BASH_REMATCH[1]}"
        b="${BASH_REMATCH[3]}"
        for ((p = a; p <= b; p++)); do CLUSTER_PORTS+=("$p"); done
    else
        IFS=',' read -r -a parts <<<"$spec"
        for p in "${parts[@]}"; do
            [ -n "$p" ] || continue
            [[ "$p" =~ ^[0-9]+$ ]] || die "REDIS_CLUSTER_PORTS: '$p' is not a port number"
            CLUSTER_PORTS+=("$p")
        done
    fi
    local n="${#CLUSTER_PORTS[@]}"
    if [ "$n" -lt 6 ] || [ $((n % 2)) -ne 0 ]; then
        die "REDIS_CLUSTER_PORTS must name an even number (>= 6) of ports for --cluster-replicas 1; got $n"
    fi
    [[ "$JOBQUEUE_PORT" =~ ^[0-9]+$ ]] || die "REDIS_JOBQUEUE_PORT: '$JOBQUEUE_PORT' is not a port number"
    [[ "$CLUSTER_WAIT" =~ ^[0-9]+$ ]] || die "REDIS_CLUSTER_WAIT: '$CLUSTER_WAIT' is not a number of seconds"
}

# ---------------------------------------------------------------------------------------------
# Helpers (native mode)
# ---------------------------------------------------------------------------------------------
rcli() {
    local port="$1"
    shift
    timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null | tr -d '\r'
}

is_redis() { [ "$(rcli "$1" ping || true)" = "PONG" ]; }

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

pidfile_of() { echo "$RUN_DIR/redis-$1.pid"; }
logfile_of() { echo "$LOG_DIR/redis-$1.log"; }

data_dir_of() {
    local p
    if [ "$1" = "$JOBQUEUE_PORT" ]; then echo "$DATA_DIR/jobqueue"; return; fi
    for p in "${HA_REPLICA_PORTS[@]}"; do
        [ "$1" = "$p" ] && { echo "$DATA_DIR/jobqueue-replica-$1"; return; }
    done
    for p in "${HA_SENTINEL_PORTS[@]}"; do
        [ "$1" = "$p" ] && { echo "$DATA_DIR/sentinel-$1"; return; }
    done
    echo "$DATA_DIR/cluster-$1"
}

# The running redis' working directory (CONFIG GET dir); "" when unknown.
running_dir() { rcli "$1" config get dir | sed -n '2p' || true; }

# True when the redis answering on $1 was started by this script (its dir is ours).
is_ours() {
    local want
    want="$(data_dir_of "$1")"
    [ -d "$want" ] && [ "$(running_dir "$1")" = "$(cd -- "$want" && pwd -P)" ]
}

pid_alive() {
    local pid
    [ -f "$1" ] || return 1
    pid="$(cat "$1" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'redis-server'
}

cluster_field() { rcli "$1" cluster info | sed -n "s/^$2://p" || true; }

# True while a node this script started natively runs (a live pidfile under redis/run).
native_running() {
    local f
    for f in "$RUN_DIR"/redis-*.pid; do
        pid_alive "$f" && return 0
    done
    return 1
}

# start_node PORT [extra redis-server args...]
start_node() {
    local port="$1"
    shift
    local dir pidfile logfile i
    dir="$(data_dir_of "$port")"
    pidfile="$(pidfile_of "$port")"
    logfile="$(logfile_of "$port")"

    if is_redis "$port"; then
        if is_ours "$port"; then
            log "127.0.0.1:$port already running"
        else
            log "warning: 127.0.0.1:$port is answered by a redis NOT started by this script" \
                "(dir: $(running_dir "$port")); using it as is"
        fi
        return 0
    fi
    if port_open "$port"; then
        err "127.0.0.1:$port is in use by something that is not redis (no PONG to PING)."
        err "free the port (e.g. 'ss -ltnp | grep :$port') or choose other ports with" \
            "REDIS_JOBQUEUE_PORT / REDIS_CLUSTER_PORTS"
        return 1
    fi

    mkdir -p "$dir"
    rm -f "$pidfile"
    redis-server \
        --bind 127.0.0.1 --port "$port" \
        --daemonize yes --pidfile "$pidfile" --logfile "$logfile" \
        --dir "$dir" \
        --appendonly yes --appendfsync everysec \
        "$@"

    for ((i = 0; i < 100; i++)); do
        is_redis "$port" && { log "127.0.0.1:$port started (data: ${dir#"$ROOT"/})"; return 0; }
        sleep 0.1
    done
    err "redis on 127.0.0.1:$port did not answer PING within 10s; last lines of ${logfile#"$ROOT"/}:"
    tail -n 20 "$logfile" >&2 || true
    return 1
}

reset_hint() {
    err "the cluster could not be formed from the existing data, probably stale nodes-<port>.conf files"
    err "(e.g. after the machine or the port list changed, or one node's data dir was removed)."
    err "to start from scratch (deletes ALL local Redis data under redis/data):  just redis-reset"
}

wait_cluster_ok() {
    local deadline=$((SECONDS + CLUSTER_WAIT)) p all_ok
    while :; do
        all_ok=1
        for p in "${CLUSTER_PORTS[@]}"; do
            [ "$(cluster_field "$p" cluster_state)" = "ok" ] || { all_ok=0; break; }
        done
        [ "$all_ok" = 1 ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && break
        sleep 1
    done
    err "cluster not ok after ${CLUSTER_WAIT}s:"
    for p in "${CLUSTER_PORTS[@]}"; do
        err "  127.0.0.1:$p cluster_state=$(cluster_field "$p" cluster_state) known_nodes=$(cluster_field "$p" cluster_known_nodes)"
    done
    return 1
}

ensure_cluster() {
    local n="${#CLUSTER_PORTS[@]}" p known formed=1 fresh=1 addrs=()
    for p in "${CLUSTER_PORTS[@]}"; do
        if [ "$(rcli "$p" info cluster | sed -n 's/^cluster_enabled://p')" != "1" ]; then
            err "127.0.0.1:$p is a redis without cluster mode; it cannot be a cluster node"
            return 1
        fi
        known="$(cluster_field "$p" cluster_known_nodes)"
        [ "$known" = "$n" ] || formed=0
        { [ "$known" = "1" ] && [ "$(rcli "$p" dbsize)" = "0" ]; } || fresh=0
        addrs+=("127.0.0.1:$p")
    done

    if [ "$formed" = 1 ]; then
        log "cluster already formed ($n nodes); waiting for cluster_state:ok"
    elif [ "$fresh" = 1 ]; then
        log "creating cluster: ${addrs[*]} (--cluster-replicas 1)"
        if ! timeout 120 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes; then
            err "redis-cli --cluster create failed"
            reset_hint
            return 1
        fi
    else
        for p in "${CLUSTER_PORTS[@]}"; do
            err "  127.0.0.1:$p knows $(cluster_field "$p" cluster_known_nodes) node(s), $(rcli "$p" dbsize) key(s)"
        done
        reset_hint
        return 1
    fi

    if ! wait_cluster_ok; then
        reset_hint
        return 1
    fi
    log "cluster ok: ${addrs[*]}"
}

# stop_node PORT: shut down a redis we started (SHUTDOWN, fallback: kill by pidfile).
stop_node() {
    local port="$1" pidfile pid i
    pidfile="$(pidfile_of "$port")"
    if is_redis "$port"; then
        if ! is_ours "$port" && ! pid_alive "$pidfile"; then
            log "127.0.0.1:$port: redis not started by this script (dir: $(running_dir "$port")); leaving it running"
            return 0
        fi
        rcli "$port" shutdown >/dev/null || true
    elif ! pid_alive "$pidfile"; then
        rm -f "$pidfile"
        log "127.0.0.1:$port not running"
        return 0
    fi

    for ((i = 0; i < 150; i++)); do
        if ! is_redis "$port" && ! pid_alive "$pidfile"; then
            rm -f "$pidfile"
            log "127.0.0.1:$port stopped"
            return 0
        fi
        sleep 0.1
    done
    if pid_alive "$pidfile"; then
        pid="$(cat "$pidfile")"
        log "127.0.0.1:$port did not shut down in 15s; sending SIGTERM to pid $pid"
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            pid_alive "$pidfile" || { rm -f "$pidfile"; log "127.0.0.1:$port stopped"; return 0; }
            sleep 0.1
        done
        log "127.0.0.1:$port still alive; sending SIGKILL to pid $pid"
        kill -9 "$pid" 2>/dev/null || true
        sleep 0.5
        rm -f "$pidfile"
        return 0
    fi
    err "127.0.0.1:$port still answers but no live pidfile ($pidfile); stop it by hand"
    return 1
}

# ---------------------------------------------------------------------------------------------
# HA mode (REDIS_HA=1): jobqueue master + replicas + sentinels
# ---------------------------------------------------------------------------------------------
start_sentinel() {
    local port="$1" dir conf i
    dir="$(data_dir_of "$port")"
    conf="$dir/sentinel.conf"
    if is_redis "$port"; then log "sentinel 127.0.0.1:$port already running"; return 0; fi
    mkdir -p "$dir"
    # Sentinel rewrites its config (known replicas, epochs): write it only the first time.
    if [ ! -f "$conf" ]; then
        cat >"$conf" <<CONF
port $port
bind 127.0.0.1
dir $dir
sentinel monitor $HA_MASTER_NAME 127.0.0.1 $JOBQUEUE_PORT 2
sentinel down-after-milliseconds $HA_MASTER_NAME 5000
sentinel failover-timeout $HA_MASTER_NAME 30000
sentinel parallel-syncs $HA_MASTER_NAME 1
CONF
    fi
    redis-server "$conf" --sentinel --daemonize yes --pidfile "$(pidfile_of "$port")" \
        --logfile "$(logfile_of "$port")"
    for ((i = 0; i < 100; i++)); do
        is_redis "$port" && { log "sentinel 127.0.0.1:$port started"; return 0; }
        sleep 0.1
    done
    err "sentinel on 127.0.0.1:$port did not answer PING within 10s"
    return 1
}

ha_master() { rcli "${HA_SENTINEL_PORTS[0]}" sentinel get-master-addr-by-name "$HA_MASTER_NAME" | paste -sd: -; }

ha_start() {
    local p failed=0 master_port="$JOBQUEUE_PORT" addrs=()
    # After a failover the master may be a former replica: follow what the sentinels say.
    if is_redis "${HA_SENTINEL_PORTS[0]}"; then
        master_port="$(ha_master | cut -d: -f2)"
        master_port="${master_port:-$JOBQUEUE_PORT}"
    fi
    for p in "$JOBQUEUE_PORT" "${HA_REPLICA_PORTS[@]}"; do
        if [ "$p" = "$master_port" ]; then
            start_node "$p" || failed=1
        else
            start_node "$p" --replicaof 127.0.0.1 "$master_port" || failed=1
        fi
    done
    for p in "${HA_SENTINEL_PORTS[@]}"; do
        start_sentinel "$p" || failed=1
        addrs+=("127.0.0.1:$p")
    done
    [ "$failed" = 0 ] || return 1
    local IFS=,
    cat >"$HA_ENV_FILE" <<ENV
APP__CACHE_SERVER__REDIS__JOBQUEUE__SENTINEL__MASTER_NAME=$HA_MASTER_NAME
APP__CACHE_SERVER__REDIS__JOBQUEUE__SENTINEL__ADDRS=${addrs[*]}
APP__CACHE_SERVER__REDIS__JOBQUEUE__MIN_REPLICAS_ACKED=1
ENV
    log "HA: master $HA_MASTER_NAME at $(ha_master || echo "127.0.0.1:$master_port"), sentinels ${addrs[*]}; settings in ${HA_ENV_FILE#"$ROOT"/}"
}


native_start() {
    "$SCRIPT_DIR/ensure-redis.sh"
    mkdir -p "$DATA_DIR" "$LOG_DIR" "$RUN_DIR"
    local p failed=0
    start_node "$JOBQUEUE_PORT" || failed=1
    for p in "${CLUSTER_PORTS[@]}"; do
        start_node "$p" \
            --cluster-enabled yes \
            --lazyfree-lazy-expire yes \
            --cluster-config-file "nodes-$p.conf" \
            --cluster-node-timeout 5000 || failed=1
    done
    [ "$failed" = 0 ] || die "some Redis nodes could not be started (see above)"
    if [ "$HA" = 1 ]; then ha_start || die "the HA jobqueue set could not be started (see above)"; fi
    ensure_cluster || exit 1
    log "ready: jobqueue 127.0.0.1:$JOBQUEUE_PORT, cluster 127.0.0.1:${CLUSTER_PORTS[0]}..${CLUSTER_PORTS[${#CLUSTER_PORTS[@]}-1]}"
}

native_stop() {
    command -v redis-cli >/dev/null 2>&1 || { log "redis-cli not installed; nothing to stop"; return 0; }
    local p failed=0
    # Shut the cluster down first and quickly, so no failover is triggered half way; sentinels
    # before the jobqueue nodes for the same reason. Stopping also stops an HA set left running.
    local ha=("${HA_SENTINEL_PORTS[@]}" "${HA_REPLICA_PORTS[@]}")
    for p in "${CLUSTER_PORTS[@]}" "${ha[@]}" "$JOBQUEUE_PORT"; do
        if [ "$p" != "$JOBQUEUE_PORT" ] && [[ " ${ha[*]} " == *" $p "* ]] && ! is_redis "$p" &&
            ! pid_alive "$(pidfile_of "$p")"; then
            continue
        fi
        stop_node "$p" || failed=1
    done
    [ "$failed" = 0 ] || exit 1
    log "stopped (data kept under redis/data)"
}

node_status() {
    local port="$1" role="$2" state
    if is_redis "$port"; then
        state="up"
        is_ours "$port" || pid_alive "$(pidfile_of "$port")" ||
            state="up (not started by this script: dir $(running_dir "$port"))"
        if [ "$role" = cluster ]; then
            state="$state, $(rcli "$port" role | head -n1), cluster_state=$(cluster_field "$port" cluster_state)"
        fi
    elif port_open "$port"; then
        state="IN USE by something that is not redis"
    else
        state="down"
    fi
    printf '  %-9s 127.0.0.1:%-5s %s\n' "$role" "$port" "$state"
}

native_status() {
    command -v redis-cli >/dev/null 2>&1 || { log "redis-cli not installed (scripts/ensure-redis.sh installs it)"; return 0; }
    local p first_up=""
    echo "redis (native):"
    node_status "$JOBQUEUE_PORT" jobqueue
    if [ "$HA" = 1 ]; then
        for p in "${HA_REPLICA_PORTS[@]}"; do node_status "$p" replica; done
        for p in "${HA_SENTINEL_PORTS[@]}"; do node_status "$p" sentinel; done
        echo "  jobqueue master (per Sentinel): $(ha_master || echo unknown)"
    fi
    for p in "${CLUSTER_PORTS[@]}"; do
        node_status "$p" cluster
        if [ -z "$first_up" ] && is_redis "$p"; then first_up="$p"; fi
    done
    if [ -n "$first_up" ]; then
        echo "  cluster: cluster_state=$(cluster_field "$first_up" cluster_state)" \
            "known_nodes=$(cluster_field "$first_up" cluster_known_nodes)" \
            "slots_ok=$(cluster_field "$first_up" cluster_slots_ok)"
    else
        echo "  cluster: down"
    fi
}

# ---------------------------------------------------------------------------------------------
# Docker mode
# ---------------------------------------------------------------------------------------------
COMPOSE=()
detect_compose() {
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    else
        return 1
    fi
}

compose() { "${COMPOSE[@]}" -f "$COMPOSE_FILE" "$@"; }

docker_start() {
    mkdir -p "$DATA_DIR/jobqueue" "$LOG_DIR" "$RUN_DIR"
    for p in 7100 7101 7102 7103 7104 7105; do mkdir -p "$DATA_DIR/cluster-$p"; done
    docker network inspect "$DOCKER_NETWORK" >/dev/null 2>&1 || docker network create "$DOCKER_NETWORK" >/dev/null
    local jobqueue=(redis-jobqueue)
    if [ "$HA" = 1 ]; then
        jobqueue=(redis-jq-ha-0 redis-jq-ha-1 redis-jq-ha-2 redis-sentinel-0 redis-sentinel-1 redis-sentinel-2)
        compose stop redis-jobqueue >/dev/null 2>&1 || true
        mkdir -p "$DATA_DIR"/jobqueue-replica-638{0,1} "$DATA_DIR"/sentinel-26379 "$DATA_DIR"/sentinel-2638{0,1}
        printf '%s\n' "APP__CACHE_SERVER__REDIS__JOBQUEUE__SENTINEL__MASTER_NAME=$HA_MASTER_NAME" \
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__SENTINEL__ADDRS=127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381" \
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__MIN_REPLICAS_ACKED=1" >"$HA_ENV_FILE"
    fi
    compose --profile ha up -d "${jobqueue[@]}" redis-cluster-0 redis-cluster-1 redis-cluster-2 \
        redis-cluster-3 redis-cluster-4 redis-cluster-5
    # One-shot: waits for the nodes, creates the cluster if needed, waits for cluster_state:ok.
    if ! compose run --rm redis-cluster-init; then
        reset_hint
        exit 1
    fi
    log "ready (docker): jobqueue 127.0.0.1:$JOBQUEUE_PORT, cluster 127.0.0.1:7100..7105"
}

docker_stop() {
    compose --profile ha stop
    log "stopped (data kept under redis/data)"
}

docker_status() {
    echo "redis (docker, $COMPOSE_FILE):"
    compose ps
    local state
    state="$(compose exec -T redis-cluster-0 redis-cli -p 7100 cluster info 2>/dev/null |
        tr -d '\r' | sed -n 's/^cluster_state://p' || true)"
    echo "  cluster: cluster_state=${state:-down}"
}

# ---------------------------------------------------------------------------------------------
use_docker() {
    case "$MODE" in
        native) return 1 ;;
        docker)
            docker info >/dev/null 2>&1 || die "REDIS_MODE=docker but no Docker engine answers"
            detect_compose || die "REDIS_MODE=docker but neither 'docker compose' nor docker-compose is installed"
            return 0
            ;;
        auto)
            command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || return 1
            # Nodes started natively before a Docker engine came up stay native: stop must stop
            # them, start reuses them (containers would find their ports taken).
            if native_running; then
                log "native nodes started by this script are running (redis/run/*.pid); staying native"
                return 1
            fi
            if ! detect_compose; then
                log "a Docker engine answers but no 'docker compose'/docker-compose; using native redis-server"
                return 1
            fi
            return 0
            ;;
        *) die "REDIS_MODE must be auto, docker or native (got '$MODE')" ;;
    esac
}

main() {
    [ $# -eq 1 ] || usage
    parse_cluster_ports
    local cmd="$1"
    case "$cmd" in start | stop | status | reset) ;; *) usage ;; esac

    if use_docker; then
        case "$cmd" in
            start) docker_start ;;
            stop) docker_stop ;;
            status) docker_status ;;
            reset)
                docker_stop
                rm -rf "$DATA_DIR" || die "could not delete $DATA_DIR (files written by the containers?); try: sudo rm -rf $DATA_DIR"
                log "reset: deleted redis/data"
                ;;
        esac
    else
        case "$cmd" in
            start) native_start ;;
            stop) native_stop ;;
            status) native_status ;;
            reset)
                native_stop
                rm -rf "$DATA_DIR"
                log "reset: deleted redis/data; 'just redis' creates a fresh stack"
                ;;
        esac
    fi
}

main "$@"
