#!/bin/bash
# On the device machine, called by benchmarks/gpu_run.sh (wheels installed in .site):
# issue 19's `jablate hits` rows. (1) The host work per hit with a trivial JAX model
# (benchmarks.hits_host, 10,000 hits); (2) 20,000 hits through translated BPNet, extrapolated
# to 10^6 with the once-per-process cost apart. Writes $OUT/hits_host.txt and
# $OUT/hits_bpnet.txt. HITS_PEAKS (default 4000, 5 hits each) and HITS_REPEATS (default 2)
# shrink it for a check on the CPU; HITS_LIMIT_S (default 180) bounds both parts together
# (a third for the first, the rest for the second).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/out}
PEAKS=${HITS_PEAKS:-4000}
REPEATS=${HITS_REPEATS:-2}
LIMIT=${HITS_LIMIT_S:-180}
mkdir -p "$OUT"
unset XLA_CLIENT_MEM_FRACTION
export PYTHONPATH="$REPO/.site:$REPO" XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 PYTHONUNBUFFERED=1
cd /tmp
timeout -k 5 $((LIMIT / 3)) python3 -m benchmarks.hits_host --repeats 3 --peaks $((PEAKS / 2)) \
    > "$OUT/hits_host.txt" 2>&1
echo "hits_host exit $?"; tail -4 "$OUT/hits_host.txt"
timeout -k 5 $((LIMIT - LIMIT / 3)) python3 -m benchmarks.hits_host --repeats "$REPEATS" --peaks "$PEAKS" \
    --chrom-length $((PEAKS * 500)) --model benchmarks.hits_host:bpnet -- --translate \
    > "$OUT/hits_bpnet.txt" 2>&1
echo "hits_bpnet exit $?"; tail -5 "$OUT/hits_bpnet.txt"
