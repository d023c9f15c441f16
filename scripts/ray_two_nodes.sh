#!/usr/bin/env bash
# Two Ray "nodes" on this machine, a study on them, and the second node killed mid-study.
#
#   bash scripts/ray_two_nodes.sh [WORKDIR]
#
# A head (`ray start --head`, 1 CPU) and a worker node (`ray start --address`, 1 CPU) run as
# separate processes, each with a temporary folder of its own. `ckptkd study --executor ray
# --address` runs a small digits study on them; once the students are running, the worker
# node's raylet and its worker processes are SIGKILLed. Ray retries the lost cells on the head
# (max_retries), the study finishes, and its tables are compared with a local run of the same
# study (less the cost columns, which are wall-clock ratios). Every Ray process this script
# started is stopped by its pid at the end, found by the script's own temporary folders; other
# Rays on the machine are left alone. Prints "two-node kill: PASS" (the study finished, Ray
# retried at least one lost cell, the tables are the local ones) or why not, exit 0 or 1.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WORK="$(realpath -m "${1:-$(mktemp -d /tmp/ckptkd-two-nodes.XXXXXX)}")"
mkdir -p "$WORK"
PORT="${RAY_PORT:-6391}"
HEAD_TMP="$WORK/ray-head" WORKER_TMP="$WORK/ray-worker"
export RAY_USAGE_STATS_ENABLED=0
# Ray's token authentication, with a token of this cluster's own: every process of it (head,
# worker node, driver) reads it from the environment, as a real cluster's nodes would
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="${RAY_AUTH_TOKEN:-$(python -c 'import secrets; print(secrets.token_hex(32))')}"

cat > "$WORK/study.yaml" <<'EOF'
name: two-nodes
data: {spec: digits, augment: false}
teacher: {model: mlp_s, epochs: 9, save_every: 3, batch_size: 64}
student: {model: mlp_xs, epochs: 40, batch_size: 64}
info: {probe_size: 200}
teacher_seeds: [0, 1]
student_seeds: [0, 1]
estimators: [kde]
policies: [last, mi]
snapshot_policies: [mi]
device: cpu
EOF

RAY_PROCS='ray::|raylet|gcs_server|default_worker|dashboard|log_monitor|monitor.py'
before_start="$(pgrep -f -- "$RAY_PROCS" | sort || true)"
ours() {  # the Ray processes this script started: their command lines name its folders, or (Ray's
  # agents, which rename themselves ray::...) they are Ray processes that were not there before it
  { pgrep -f -- "$WORK/ray-" || true; comm -13 <(echo "$before_start") <(pgrep -f -- "$RAY_PROCS" | sort); } | sort -u
}
cleanup() {
  local pids
  pids="$(ours)"
  if [ -n "$pids" ]; then kill -9 $pids 2>/dev/null || true; fi
}
trap cleanup EXIT

ray start --head --port "$PORT" --num-cpus 1 --include-dashboard=false --temp-dir "$HEAD_TMP" >"$WORK/head.log" 2>&1
before="$(pgrep -f -- "$HEAD_TMP.*raylet|raylet.*$HEAD_TMP" | sort || true)"
ray start --address "127.0.0.1:$PORT" --num-cpus 1 --temp-dir "$WORKER_TMP" >"$WORK/worker.log" 2>&1 \
  || ray start --address "127.0.0.1:$PORT" --num-cpus 1 >"$WORK/worker.log" 2>&1
sleep 2
worker_raylet="$(pgrep -f -- "raylet.*$WORKER_TMP" | head -1 || true)"
if [ -z "$worker_raylet" ]; then  # the worker node kept the head's folder: the raylet that is not the head's
  worker_raylet="$(comm -13 <(echo "$before") <(pgrep -f -- "raylet/raylet" | sort) | head -1)"
fi
echo "head at 127.0.0.1:$PORT; worker node raylet pid $worker_raylet"
python -c "import ray; ray.init(address='127.0.0.1:$PORT', logging_level='ERROR'); \
print('cluster:', {k: v for k, v in ray.cluster_resources().items() if k == 'CPU'}, \
'nodes:', sum(n['Alive'] for n in ray.nodes()))"

t0=$(date +%s)
python -m ckptkd study "$WORK/study.yaml" --out "$WORK/cluster" --executor ray --address "127.0.0.1:$PORT" \
  --quiet >"$WORK/cluster.log" 2>&1 &
driver=$!
# once students run (a first student finished), kill the worker node: its raylet and its workers
until ls "$WORK"/cluster/cells/student/*/seed*/result.json >/dev/null 2>&1 || ! kill -0 $driver 2>/dev/null; do
  sleep 1
done
workers="$(pgrep -P "$worker_raylet" || true)"
kill -9 "$worker_raylet" $workers 2>/dev/null || true
echo "killed the worker node at $(( $(date +%s) - t0 )) s: raylet $worker_raylet, workers ${workers//$'\n'/ }"
status=0
wait $driver || status=$?
echo "the study on the cluster exited $status after $(( $(date +%s) - t0 )) s"
retried="$(grep -c 'will be retried' "$WORK/cluster.log" || true)"
echo "cells Ray retried after the node died: $retried"
grep -v "will be retried" "$WORK/cluster.log" | tail -3

python -m ckptkd study "$WORK/study.yaml" --out "$WORK/local" --quiet >"$WORK/local.log" 2>&1
same=$(python - "$WORK" <<'EOF'
import json, sys
def tables(p):
    t = json.load(open(p))
    for r in t["selection"]:
        r.pop("cost", None)
    t["verdicts"].pop("cost", None)
    return t
w = sys.argv[1]
print(tables(f"{w}/cluster/tables.json") == tables(f"{w}/local/tables.json"))
EOF
)
echo "tables identical to a local run: $same"
if [ "$status" = 0 ] && [ "$same" = True ] && [ "${retried:-0}" -ge 1 ]; then echo "two-node kill: PASS"; exit 0; fi
if [ "$status" = 0 ] && [ "$same" = True ]; then
  echo "two-node kill: INCONCLUSIVE (the kill found no cell running on the worker node; run again)"; exit 1
fi
echo "two-node kill: FAIL (see $WORK/*.log)"; exit 1
