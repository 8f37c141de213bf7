#!/usr/bin/env bash
# Prepare, on the CPU machine, everything bench/gpu_check.sh needs on a GPU machine that has torch,
# transformers, accelerate, opencv, pyarrow, safetensors and numpy but not diffusers or webdataset,
# and cannot reach the internet. All of it goes under .device/ (git-ignored; carried beside the
# checkout, at most 64 MiB): the reference script, wheels, and small shards with their embeddings
# already encoded (the MiniLM wheel, 88 MB, does not travel).
#
#   make setup && bash bench/gpu_prepare.sh && du -sh .device      # then, through the device tool:
#   command: bash bench/gpu_check.sh     carry: [".device"]
set -euo pipefail
BIN=${BIN:-.venv/bin}
export HF_HUB_OFFLINE=1
mkdir -p .device/whl
cp ../shared/bench/paper_dn_anchor.py .device/
# The GPU image runs Python 3.12; these wheels are pure Python.
$BIN/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .device/whl diffusers==0.42.1 webdataset==1.0.2 braceexpand
rm -rf .device/shards
# 128-pixel HR crops of the bundled photos, embeddings by MiniLM: the tiny-preset resume check reads these.
$BIN/sr-degrade build --src sample --out .device/shards/train --text-encoder minilm --crops-per-image 8 \
    --crop-size 128 --shard-size 32 --overwrite
du -sh .device
