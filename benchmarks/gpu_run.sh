#!/bin/bash
# On the device machine, in one call (carry [".whl"] from benchmarks/gpu_wheels.sh, timeout_s
# 600): everything issue 19 owes, most important first, inside one deadline (GPU_DEADLINE_S,
# default 560 s from the start of this script, under the call's 600-second limit): each part
# gets its own limit, cut to what is left once the later parts' shares are set aside, so that
# a slow part cannot take the others' time nor the call outlast its limit.
#   0. install .whl into .site, then a preflight (under 60 s): every import, a tiny
#      tangermeme shuffle (numba compiles), and JAX and torch on the GPU. If it fails, it
#      writes $OUT/PREFLIGHT_FAILED.txt and stops, before any measurement;
#   1. case 5, `python -m benchmarks.gpu` (rows A-F, up to 330 s; $OUT/gpu.md is rewritten
#      after each row, so a part cut off by its limit still leaves its finished rows; rerun
#      what is missing with GPU_ROWS, e.g. GPU_ROWS=DF);
#   2. the tests a GPU can fail where the CPU passes (up to 80 s): the pinned random streams
#      (the same shuffles on every backend) and the parallel shuffles;
#   3. `jablate hits` (benchmarks/gpu_hits.sh: host work per hit, 20,000 BPNet hits; the
#      rest; each run's time is printed as it ends).
# Device budget (15 min a session, start included): start 1-2 min, this call under 10 min.
# Runs from /tmp so that the installed jablate wheel is imported, not the checkout (whose
# jablate.bridges lives in bridges/ and needs an install).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/out}
ROWS=${GPU_ROWS:-ABECDF}
DEADLINE=${GPU_DEADLINE_S:-560}
mkdir -p "$OUT"
# the seconds part $1 may take: at most $2, leaving $3 for the parts after it
limit() {
    local left=$(( DEADLINE - SECONDS - $3 ))
    (( left < $2 )) && echo $(( left > 10 ? left : 10 )) || echo "$2"
}
# --upgrade: a rerun after a fix replaces the jablate wheel installed by an earlier call
timeout -k 5 90 python3 -m pip install --quiet --upgrade --no-index --no-deps --no-compile \
    --target "$REPO/.site" "$REPO"/.whl/*.whl 2>&1 | grep -v "Running pip as the 'root' user" | tail -3
# jaxlib 0.11 refuses XLA_CLIENT_MEM_FRACTION and XLA_PYTHON_CLIENT_MEM_FRACTION together
unset XLA_CLIENT_MEM_FRACTION
export PYTHONPATH="$REPO/.site:$REPO" XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 PYTHONUNBUFFERED=1
cd /tmp
timeout -k 5 60 python3 -m benchmarks.gpu_preflight > "$OUT/versions.txt" 2>&1
STATUS=$?
cat "$OUT/versions.txt"
if (( STATUS != 0 )); then
    { echo "preflight exit $STATUS: nothing was measured"; cat "$OUT/versions.txt"; } \
        > "$OUT/PREFLIGHT_FAILED.txt"
    echo "PREFLIGHT FAILED (exit $STATUS): see PREFLIGHT_FAILED.txt"
    exit 1
fi
T=$(limit bench 330 150); START=$SECONDS
timeout -k 5 "$T" python3 -m benchmarks.gpu --rows "$ROWS" --out "$OUT/gpu.md" \
    > "$OUT/gpu_stdout.txt" 2> "$OUT/gpu_log.txt"
echo "benchmarks.gpu exit $? after $(( SECONDS - START )) s (limit $T s)"; tail -3 "$OUT/gpu_log.txt"
T=$(limit tests 80 60); START=$SECONDS
timeout -k 5 "$T" python3 -m pytest -v -rfE -p no:cacheprovider "$REPO/tests/test_core.py" \
    "$REPO/tests/test_dinucleotide.py" "$REPO/tests/test_parallel_shuffles.py" \
    "$REPO/tests/test_torch_bridge.py" \
    -k "pinned or test_parallel_shuffles or cuda_tensor" 2>&1 \
    | tee "$OUT/tests_full.txt" | tail -15 > "$OUT/tests.txt"
echo "tests after $(( SECONDS - START )) s (limit $T s)"; tail -3 "$OUT/tests.txt"
T=$(limit hits 300 5); START=$SECONDS
HITS_LIMIT_S=$T bash "$REPO/benchmarks/gpu_hits.sh"
echo "gpu_hits.sh after $(( SECONDS - START )) s (limit $T s); whole script ${SECONDS} s"
