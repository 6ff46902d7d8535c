#!/usr/bin/env bash
# Evaluate on VSPW: scripts/eval_vspw.sh CONFIG CKPT [GPUS] [extra `vidseg eval` args]
#   GPUS > 1 runs `torchrun --nproc-per-node=GPUS -m vidseg eval ...`, else plain `vidseg eval`
#   (add --device cuda for one GPU). Under torchrun the videos are split across all processes of
#   all nodes (each on cuda:LOCAL_RANK when CUDA is available), every process writes the
#   prediction PNGs of its own videos and global rank 0 merges the scores into metrics.json.
# Several nodes / SLURM: the same variables as scripts/train_vspw.sh (see scripts/_launch.sh);
#   the output directory must be on a file system every node sees.
# The data root comes from the config (data.root) or the VSPW_ROOT environment variable.
# DRY_RUN=1 prints the command instead of running it.
# Example:
#   VSPW_ROOT=/data/VSPW_480p scripts/eval_vspw.sh configs/vspw/upernet_video_mcibipp_r50.yaml \
#       work_dirs/upernet_video_mcibipp_r50/best.pth 8
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
