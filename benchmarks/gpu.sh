#!/usr/bin/env bash
# The GPU half of the speed benchmarks, as one script for a lent GPU machine: training steps of
# SPADE and MSG-StyleGAN (the models as `geogan train` builds them by default) at 64, 128 and
# 256 px in float32 and bf16 autocast, then `geogan generate`'s pairs/s written against the
# model's own samples/s. Writes the GPU sections of benchmarks/RESULTS.md (training.py-gpu,
# generate.py-gpu); the CPU sections are left alone.
#
#   bash benchmarks/gpu.sh                 # about 5 min on one H200
#   PYTHON=/path/to/python bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to measure')"
"$PY" training.py --devices cuda --precision 32 bf16 --config default --batch 32 \
    --sizes 64 128 256 --tasks spade msg-stylegan --threads 4 --section training.py-gpu
"$PY" generate.py -n 512 --size 256 --batch-size 64 --device cuda --config default \
    --workers 4 12 15 --threads 4 --section generate.py-gpu
