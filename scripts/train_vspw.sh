#!/usr/bin/env bash
# Train on VSPW: scripts/train_vspw.sh CONFIG [GPUS] [extra `vidseg train` args]
#   GPUS > 1 runs `torchrun --nproc_per_node=GPUS -m vidseg train ...` (DDP, one process per GPU);
#   GPUS = 1 (default) or a CPU-only machine runs plain `vidseg train`.
# The data root comes from the config (data.root) or the VSPW_ROOT environment variable.
# Examples:
#   VSPW_ROOT=/data/VSPW_480p scripts/train_vspw.sh configs/vspw/upernet_video_mcibipp_r50.yaml 4
#   scripts/train_vspw.sh configs/vspw/fcn_r50.yaml 1 --set train.iters=1000 --resume
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 CONFIG [GPUS] [extra vidseg train args]" >&2
    exit 2
fi
CONFIG=$1
shift
GPUS=1
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    GPUS=$1
    shift
fi
PYTHON=${PYTHON:-python}

if [ "$GPUS" -gt 1 ]; then
    exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$GPUS" \
        -m vidseg train "$CONFIG" "$@"
else
    exec "$PYTHON" -m vidseg train "$CONFIG" "$@"
fi
