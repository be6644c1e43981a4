#!/bin/bash
# Prepares what the device machine (an NVIDIA GPU without internet) needs to run
# benchmarks/gpu_run.sh: wheels for Python 3.12 of the packages its image lacks, in .whl
# (well under the 64 MiB one call carries). The image holds jax, torch, flax, numpy, pandas,
# scipy, matplotlib, numba and llvmlite (which tangermeme imports), h5py (bpnet-lite), tqdm,
# joblib, seaborn, scikit-learn and pytest (/work/.library/device/KINDS.md, read 2026-11-17);
# it lacks tangermeme, bpnet-lite, pyfaidx (`jablate hits` reads genomes with it) and jablate.
# All four are pure Python, so one call carries them:
#   carry [".whl"], timeout_s 600: bash benchmarks/gpu_run.sh
# gpu_run.sh installs them into .site and checks that everything imports and that JAX
# computes on the GPU before it spends any of the device time on measurements.
# .gitignore ignores /.whl/ and /.site/, so they travel only when carried.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl .whl-a .whl-b
pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
    tangermeme==1.6.0 bpnet-lite==1.1.0 pyfaidx==0.9.2.2
pip wheel --quiet --no-deps -w .whl .
ls .whl
du -sh .whl
