#!/usr/bin/env bash
# Monitoring for the local stack (just monitor / just monitor-stop):
#   * with a Docker engine ('docker info' succeeds): docker-compose.monitoring.yml — Prometheus,
#     prometheus-redis-exporter and Grafana with the cacheserver dashboard provisioned;
#   * without one: the Debian packages `prometheus` and `prometheus-redis-exporter`, run natively.
# Either way Prometheus loads deploy/prometheus/prometheus.yml + alerts.yml (targets in
# deploy/prometheus/targets/), on http://127.0.0.1:9090, and the exporter (127.0.0.1:9121) logs in
# to every Redis of targets/redis.yml as the ACL user `redis-exporter`, whose rules
# (deploy/prometheus/redis-exporter.acl) allow INFO, CONFIG GET, SLOWLOG, LATENCY and the like,
# and no key at all. Its password is new on every start and handed over in the environment.
#
# Usage: scripts/start-monitoring.sh {start|stop}
# Environment: MONITORING=auto|docker|native (auto), REDISCLI_AUTH (admin password to create the
#   ACL user, when the Redis needs one). Ports are those of the targets files: edit them there.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
PROM_DIR="$ROOT/deploy/prometheus"
COMPOSE_FILE="$ROOT/docker-compose.monitoring.yml"
RUN_DIR="$ROOT/redis/run"
LOG_DIR="$ROOT/redis/logs"
DATA_DIR="$ROOT/redis/data/prometheus"
PROM_ADDR="127.0.0.1:9090"
EXPORTER_ADDR="127.0.0.1:9121"
EXPORTER_USER="redis-exporter"

usage() {
    echo "usage: $0 {start|stop}" >&2
    exit 2
}
die() {
    echo "monitor: $*" >&2
    exit 1
}
[ $# -eq 1 ] || usage
cmd="$1"
case "$cmd" in start | stop) ;; *) usage ;; esac

docker_engine() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}
mode="${MONITORING:-auto}"
case "$mode" in
    auto) if docker_engine; then mode=docker; else mode=native; fi ;;
    docker) docker_engine || die "MONITORING=docker but no Docker engine answers ('docker info' failed)" ;;
    native) ;;
    *) die "MONITORING must be auto, docker or native, not '$mode'" ;;
esac

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -f "$COMPOSE_FILE" "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose -f "$COMPOSE_FILE" "$@"
    else
        die "a Docker engine answers but neither 'docker compose' nor docker-compose is installed"
    fi
}

pidfile_of() { echo "$RUN_DIR/$1.pid"; }
# The pid in the pidfile, if that process is still the program we started.
running_pid() {
    local file pid
    file="$(pidfile_of "$1")"
    [ -f "$file" ] || return 1
    pid="$(cat "$file")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1" && echo "$pid"
}
stop_native() {
    local name pid
    for name in prometheus prometheus-redis-exporter; do
        if pid="$(running_pid "$name")"; then
            kill -TERM "$pid"
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
            echo "$name stopped (pid $pid)"
        fi
        rm -f "$(pidfile_of "$name")"
    done
}

if [ "$cmd" = stop ]; then
    if [ "$mode" = docker ]; then
        # down keeps the named volumes (Prometheus data, Grafana settings).
        REDIS_EXPORTER_PASSWORD=unused compose down
        echo "monitoring stopped (docker-compose.monitoring.yml)"
    else
        stop_native
    fi
    exit 0
fi

"$SCRIPT_DIR/ensure-monitoring.sh"
command -v redis-cli >/dev/null 2>&1 || "$SCRIPT_DIR/ensure-redis.sh"

# The exporter's ACL user on every Redis it scrapes (ACLs are per node, also in a cluster).
password="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
read -r -a rules <"$PROM_DIR/redis-exporter.acl"
created=0
mapfile -t instances < <(grep -oE 'redis://[^],[:space:]]+' "$PROM_DIR/targets/redis.yml" | sed 's|redis://||')
for instance in "${instances[@]}"; do
    host="${instance%:*}" port="${instance##*:}"
    if ! redis-cli -h "$host" -p "$port" PING 2>/dev/null | grep -q PONG; then
        echo "monitor: Redis $instance does not answer; it will show as down (alert RedisDown)" >&2
        continue
    fi
    reply="$(redis-cli -h "$host" -p "$port" ACL SETUSER "$EXPORTER_USER" "${rules[@]}" ">$password" 2>&1)"
    [ "$reply" = OK ] || die "cannot create the ACL user $EXPORTER_USER on $instance: $reply (set REDISCLI_AUTH to an admin password)"
    created=$((created + 1))
done

if [ "$mode" = docker ]; then
    REDIS_EXPORTER_PASSWORD="$password" compose up -d
    cat <<MSG
monitoring (Docker, docker-compose.monitoring.yml):
  Prometheus  http://$PROM_ADDR  (alerts: /alerts, targets: /targets)
  Grafana     http://127.0.0.1:3000  dashboard "cacheserver" (anonymous viewer; admin/admin to edit)
  exporter    http://$EXPORTER_ADDR  as ACL user $EXPORTER_USER
  stop: just monitor-stop
MSG
    exit 0
fi

mkdir -p "$RUN_DIR" "$LOG_DIR" "$DATA_DIR"
for name in prometheus prometheus-redis-exporter; do
    if pid="$(running_pid "$name")"; then
        die "$name started by 'just monitor' is still running (pid $pid); run: just monitor-stop"
    fi
done
for addr in "$PROM_ADDR" "$EXPORTER_ADDR"; do
    if curl -fsS -o /dev/null --max-time 2 "http://$addr/" 2>/dev/null; then
        die "something already answers at http://$addr (a system service from the Debian package? systemctl stop prometheus prometheus-redis-exporter)"
    fi
done

REDIS_EXPORTER_WEB_LISTEN_ADDRESS="$EXPORTER_ADDR" REDIS_ADDR="" REDIS_USER="$EXPORTER_USER" \
    REDIS_PASSWORD="$password" REDIS_EXPORTER_INCL_SYSTEM_METRICS=true \
    nohup prometheus-redis-exporter >>"$LOG_DIR/prometheus-redis-exporter.log" 2>&1 &
echo $! >"$(pidfile_of prometheus-redis-exporter)"
nohup prometheus --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$DATA_DIR" \
    --web.listen-address="$PROM_ADDR" >>"$LOG_DIR/prometheus.log" 2>&1 &
echo $! >"$(pidfile_of prometheus)"

ready=false
for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null --max-time 2 "http://$PROM_ADDR/-/ready" 2>/dev/null &&
        curl -fsS -o /dev/null --max-time 2 "http://$EXPORTER_ADDR/metrics" 2>/dev/null; then
        ready=true
        break
    fi
    for name in prometheus prometheus-redis-exporter; do
        running_pid "$name" >/dev/null || { stop_native; die "$name exited; see $LOG_DIR/$name.log"; }
    done
    sleep 0.2
done
$ready || { stop_native; die "Prometheus or the exporter did not answer within 30 s; see $LOG_DIR"; }
cat <<MSG
monitoring (native, Debian packages; no Docker engine here):
  Prometheus  http://$PROM_ADDR  (alerts: /alerts, targets: /targets; data in redis/data/prometheus)
  exporter    http://$EXPORTER_ADDR  as ACL user $EXPORTER_USER (created on $created of ${#instances[@]} Redis instances)
  Grafana is not a Debian package: import deploy/grafana/cacheserver-dashboard.json into yours,
  or run this with a Docker engine to get it provisioned
  logs: $LOG_DIR/{prometheus,prometheus-redis-exporter}.log; stop: just monitor-stop
MSG
