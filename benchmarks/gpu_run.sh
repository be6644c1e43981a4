#!/bin/bash
# On the device machine, after benchmarks/gpu_wheels.sh here and the two carrying calls it
# describes: install the second folder of wheels, run the GPU-relevant tests, then case 5.
# Everything it writes goes under $OUT (gpu.md: the Markdown section for RESULTS.md).
# Then, in a third call on the same warm machine, benchmarks/gpu_hits.sh (jablate hits).
# Runs from /tmp so that the installed jablate wheel is imported, not the checkout (whose
# jablate.bridges lives in bridges/ and needs an install).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
pip install --quiet --no-index --no-deps --target "$REPO/.site" "$REPO"/.whl-b/*.whl 2>&1 | tail -2
export PYTHONPATH="$REPO/.site:$REPO" XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
cd /tmp
python -c "import jax, torch, jablate, tangermeme; print(jax.devices(), torch.cuda.is_available(), jablate.__version__, jablate.__file__)" 2>&1 | tee "$OUT/versions.txt"
timeout 240 python -m pytest -q -p no:cacheprovider -x "$REPO/tests/test_parallel_shuffles.py" \
    "$REPO/tests/test_placement.py" 2>&1 | tail -15 | tee "$OUT/tests.txt"
timeout 420 python -m benchmarks.gpu --out "$OUT/gpu.md" > "$OUT/gpu_stdout.txt" 2> "$OUT/gpu_log.txt"
echo "benchmarks.gpu exit $?"; tail -5 "$OUT/gpu_log.txt"
