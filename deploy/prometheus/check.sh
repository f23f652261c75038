#!/usr/bin/env bash
# Static checks of the monitoring files (just test): the Prometheus config and alert rules are
# valid, every alert has a unit test and the unit tests pass, and the monitoring compose file is
# valid. Needs promtool and docker-compose (scripts/ensure-monitoring.sh installs them).
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")"
root="$(cd ../.. && pwd -P)"

promtool check config prometheus.yml
# The containerized stack's variant (docker-compose.stack.yml, profile monitoring).
promtool check config prometheus.stack.yml
promtool check rules alerts.yml
promtool test rules alerts.test.yml

# A rule without a test is a rule nobody has seen fire.
untested=()
while read -r name; do
    grep -Eq "alertname: ${name}\$" alerts.test.yml || untested+=("$name")
done < <(sed -nE 's/^ *- alert: *([A-Za-z0-9_]+) *$/\1/p' alerts.yml)
if [ ${#untested[@]} -gt 0 ]; then
    echo "alerts without a unit test in alerts.test.yml: ${untested[*]}" >&2
    exit 1
fi

# The compose file needs the exporter password only at run time; any value validates it.
REDIS_EXPORTER_PASSWORD=check docker-compose -f "$root/docker-compose.monitoring.yml" config --quiet
docker-compose -f "$root/docker-compose.redis-insight.yml" config --quiet
echo "monitoring: prometheus.yml, alerts.yml ($(grep -c '^ *- alert:' alerts.yml) alerts, all tested), docker-compose.monitoring.yml, docker-compose.redis-insight.yml OK"
