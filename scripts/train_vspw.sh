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
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
CONFIG=$1
shift
launch_vidseg train "$CONFIG" -- "$@"
