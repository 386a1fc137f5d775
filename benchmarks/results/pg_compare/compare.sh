#!/bin/bash
# Interleaved before/after: /tmp/pgspeed_base = git archive a08a017 (before), /tmp/pgspeed_new3 = git archive b46f874 (after);
# both with the new benchmarks/cluster.py and benchmarks/pg_trace copied in (for --trace).
set -u
OUT=${OUT:-/tmp/pgspeed_cmp}
mkdir -p $OUT
PY=/work/wt/pgspeed/.venv/bin/python
for run in 1 2 3; do
  (cd /tmp/pgspeed_base && timeout 600 $PY -m benchmarks.cluster --runs 1 --configs pg1 pg2 --rate 1000 --trace --out $OUT/base-$run.json > $OUT/base-$run.log 2>&1)
  (cd /tmp/pgspeed_new3 && timeout 600 $PY -m benchmarks.cluster --runs 1 --configs sqlite pg1 pg2 --rate 1000 --trace --out $OUT/new-$run.json > $OUT/new-$run.log 2>&1)
done
echo done > $OUT/DONE
