#!/bin/bash
# On the device machine, after benchmarks/gpu_wheels.sh here and a first call that carried
# .whl-a and installed it into .site (see gpu_wheels.sh): everything issue 19 owes, in one
# call, most important first, inside one deadline (GPU_DEADLINE_S, default 560 s from the
# start of this script, under the call's 600-second limit): each part gets its own limit,
# cut to what is left once the later parts' shares are set aside, so that a slow part cannot
# take the others' time nor the call outlast its limit.
#   1. case 5, `python -m benchmarks.gpu` (rows A-F, up to 330 s; $OUT/gpu.md is rewritten
#      after each row, so a part cut off by its limit still leaves its finished rows; rerun
#      what is missing with GPU_ROWS, e.g. GPU_ROWS=DF);
#   2. the tests a GPU can fail where the CPU passes (up to 90 s): the pinned random streams
#      (the same shuffles on every backend), the parallel shuffles and placement;
#   3. `jablate hits` (benchmarks/gpu_hits.sh: host work per hit, 20,000 BPNet hits; the rest).
# Device budget (15 min a session, start included): start 1-2 min, the install call under a
# minute, this call under 10 min. Runs from /tmp so that the installed jablate wheel is
# imported, not the checkout (whose jablate.bridges lives in bridges/ and needs an install).
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
timeout 60 pip install --quiet --upgrade --no-index --no-deps --target "$REPO/.site" \
    "$REPO"/.whl-b/*.whl 2>&1 | grep -v "Running pip as the 'root' user" | tail -3
export PYTHONPATH="$REPO/.site:$REPO" XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
cd /tmp
timeout 90 python -c "import jax, torch, jablate, tangermeme; print(jax.devices(), torch.cuda.is_available(), jablate.__version__, jablate.__file__)" 2>&1 | tee "$OUT/versions.txt"
T=$(limit bench 330 150); START=$SECONDS
timeout "$T" python -m benchmarks.gpu --rows "$ROWS" --out "$OUT/gpu.md" \
    > "$OUT/gpu_stdout.txt" 2> "$OUT/gpu_log.txt"
echo "benchmarks.gpu exit $? after $(( SECONDS - START )) s (limit $T s)"; tail -3 "$OUT/gpu_log.txt"
T=$(limit tests 90 60); START=$SECONDS
timeout "$T" python -m pytest -q -p no:cacheprovider "$REPO/tests/test_core.py" \
    "$REPO/tests/test_dinucleotide.py" "$REPO/tests/test_parallel_shuffles.py" \
    "$REPO/tests/test_placement.py" -k "pinned or test_parallel_shuffles or test_placement" 2>&1 \
    | tee "$OUT/tests_full.txt" | tail -15 > "$OUT/tests.txt"
echo "tests after $(( SECONDS - START )) s (limit $T s)"; tail -3 "$OUT/tests.txt"
T=$(limit hits 300 5); START=$SECONDS
HITS_LIMIT_S=$T bash "$REPO/benchmarks/gpu_hits.sh"
echo "gpu_hits.sh after $(( SECONDS - START )) s (limit $T s); whole script ${SECONDS} s"
