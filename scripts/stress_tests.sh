#!/usr/bin/env bash
# Run the test suite N times in a clean clone of HEAD, then N times with two CPU hogs
# beside it, and print the failures per test.
#
#   scripts/stress_tests.sh N                                   # the whole suite
#   scripts/stress_tests.sh N --files tests/test_resume.py ...  # some test files
#
# Uncommitted changes are not tested: the clone is of the current commit. A run that hangs is
# stopped after RUN_LIMIT seconds (default 1800) and counted as a failure. Not part of CI.
set -u
N=${1:?usage: scripts/stress_tests.sh N [--files FILE...]}
shift
FILES=()
if [ "${1:-}" = "--files" ]; then shift; FILES=("$@"); fi
ROOT=$(git rev-parse --show-toplevel)
COMMIT=$(git -C "$ROOT" rev-parse HEAD)
TMP=$(mktemp -d -t ckptkd-stress-XXXXXX)
HOGS=""
cleanup() { [ -n "$HOGS" ] && kill $HOGS 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
git clone -q "$ROOT" "$TMP/repo" && git -C "$TMP/repo" checkout -q "$COMMIT" || exit 1
cd "$TMP/repo" || exit 1
export PYTHONPATH="$TMP/repo" OMP_NUM_THREADS=1
RUN_LIMIT=${RUN_LIMIT:-1800}  # seconds per whole-suite run; a quiet one takes about 150 on 2 cores

run_mode() {  # run_mode NAME: N runs, each run's failed test ids appended to $TMP/NAME.failed
  : > "$TMP/$1.failed"
  for i in $(seq "$N"); do
    # a run that hangs is stopped after RUN_LIMIT seconds (SIGINT first, so pytest says where it was)
    timeout -k 60 -s INT "$RUN_LIMIT" python -m pytest -q -p no:cacheprovider -rfE "${FILES[@]}" > "$TMP/$1-$i.log" 2>&1
    rc=$?
    grep -E '^(FAILED|ERROR) ' "$TMP/$1-$i.log" | awk '{print $2}' >> "$TMP/$1.failed"
    [ "$rc" -eq 124 ] && echo "HUNG (stopped after ${RUN_LIMIT}s): $(grep -m1 -oE 'tests/[a-z_0-9]+\.py:[0-9]+' "$TMP/$1-$i.log" | tail -1)" >> "$TMP/$1.failed"
    echo "$1 run $i/$N: pytest exit $rc, $(tail -1 "$TMP/$1-$i.log")"
  done
}

report() {
  echo "== $1: failures per test over $N runs"
  if [ -s "$TMP/$1.failed" ]; then sort "$TMP/$1.failed" | uniq -c | sort -rn; else echo "   none"; fi
}

echo "commit $COMMIT, ${FILES[*]:-whole suite}, $N runs per mode"
run_mode quiet
python -c 'while 1: pass' & HOGS="$!"
python -c 'while 1: pass' & HOGS="$HOGS $!"
run_mode loaded
kill $HOGS 2>/dev/null; HOGS=""
report quiet
report loaded
total=$(cat "$TMP/quiet.failed" "$TMP/loaded.failed" | wc -l)
echo "total failures: $total"
[ "$total" -eq 0 ]
