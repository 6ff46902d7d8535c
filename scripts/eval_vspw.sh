#!/usr/bin/env bash
# Evaluate on VSPW: scripts/eval_vspw.sh CONFIG CKPT [GPUS] [extra `vidseg eval` args]
#   GPUS > 1 runs `torchrun --nproc_per_node=GPUS -m vidseg eval ...`, else plain `vidseg eval`.
# The data root comes from the config (data.root) or the VSPW_ROOT environment variable.
# Example:
#   VSPW_ROOT=/data/VSPW_480p scripts/eval_vspw.sh configs/vspw/upernet_video_mcibipp_r50.yaml \
#       work_dirs/upernet_video_mcibipp_r50/best.pth
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG CKPT [GPUS] [extra vidseg eval args]" >&2
    exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
CONFIG=$1
CKPT=$2
shift 2
launch_vidseg eval "$CONFIG" --checkpoint "$CKPT" -- "$@"
