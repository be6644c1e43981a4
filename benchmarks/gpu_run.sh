#!/bin/bash
# On the device machine, after benchmarks/gpu_wheels.sh here and a first call that carried
# .whl-a and installed it into .site (see gpu_wheels.sh): everything issue 19 owes, in one
# call of at most 600 s, most important first, each part under its own time limit so that a
# slow part cannot take the others' time:
#   1. case 5, `python -m benchmarks.gpu` (rows A-F; $OUT/gpu.md is rewritten after each row,
#      so a part cut off by its limit still leaves its finished rows; rerun what is missing
#      with GPU_ROWS, e.g. GPU_ROWS=DF);
#   2. `jablate hits` (benchmarks/gpu_hits.sh: host work per hit, 20,000 BPNet hits);
#   3. the tests a GPU can fail where the CPU passes: the pinned random streams (the same
#      shuffles on every backend) and the parallel-shuffle and placement tests.
# Device budget (15 min a session, start included): start 1-2 min, the install call under
# a minute, this call under 10 min. Runs from /tmp so that the installed jablate wheel is
# imported, not the checkout (whose jablate.bridges lives in bridges/ and needs an install).
# GPU_BENCH_S, GPU_HITS_S and GPU_TESTS_S set the three limits (seconds).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/out}
ROWS=${GPU_ROWS:-ABECDF}
mkdir -p "$OUT"
pip install --quiet --no-index --no-deps --target "$REPO/.site" "$REPO"/.whl-b/*.whl 2>&1 | tail -2
export PYTHONPATH="$REPO/.site:$REPO" XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
cd /tmp
python -c "import jax, torch, jablate, tangermeme; print(jax.devices(), torch.cuda.is_available(), jablate.__version__, jablate.__file__)" 2>&1 | tee "$OUT/versions.txt"
SECONDS=0
timeout "${GPU_BENCH_S:-330}" python -m benchmarks.gpu --rows "$ROWS" --out "$OUT/gpu.md" \
    > "$OUT/gpu_stdout.txt" 2> "$OUT/gpu_log.txt"
echo "benchmarks.gpu exit $? after ${SECONDS} s"; tail -3 "$OUT/gpu_log.txt"
SECONDS=0
HITS_LIMIT_S=${GPU_HITS_S:-180} bash "$REPO/benchmarks/gpu_hits.sh"
echo "gpu_hits.sh after ${SECONDS} s"
SECONDS=0
timeout "${GPU_TESTS_S:-60}" python -m pytest -q -p no:cacheprovider "$REPO/tests/test_core.py" \
    "$REPO/tests/test_dinucleotide.py" "$REPO/tests/test_parallel_shuffles.py" \
    "$REPO/tests/test_placement.py" -k "pinned or test_parallel_shuffles or test_placement" 2>&1 \
    | tail -15 > "$OUT/tests.txt"
echo "tests after ${SECONDS} s"; tail -3 "$OUT/tests.txt"
