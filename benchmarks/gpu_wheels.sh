#!/bin/bash
# Prepares what the device machine (an NVIDIA GPU without internet; jax, torch, flax, numpy,
# pandas, scipy and pytest installed) needs to run `python -m benchmarks.gpu`: wheels for
# Python 3.12 of tangermeme, bpnet-lite and their imports the machine lacks, and of jablate.
# The device tool carries at most 64 MiB per call and llvmlite's wheel (numba's, which
# tangermeme imports) is 57 MiB, so they come in two folders, carried by two calls:
#   .whl-a  llvmlite                      run 1: carry [".whl-a"], then
#           pip install --no-index --no-deps --target .site .whl-a/*.whl
#   .whl-b  the rest and jablate          run 2: carry [".whl-b"], then bash benchmarks/gpu_run.sh
#                                         (case 5, the GPU tests and jablate hits; < 600 s)
# (.site, an ignored path, is kept on the machine between the two calls while it stays warm.)
# benchmarks/README.md, "On a borrowed GPU", gives the device time this takes.
# .gitignore ignores /.whl-a/, /.whl-b/ and /.site/, so the folders travel only when carried.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl-a .whl-b
get() {
    pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 -d "$@"
}
get .whl-a llvmlite==0.50.0
get .whl-b tangermeme==1.6.0 bpnet-lite==1.1.0 numba==0.68.1 h5py tqdm
pip wheel --quiet --no-deps -w .whl-b .
du -sh .whl-a .whl-b
