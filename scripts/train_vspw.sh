#!/usr/bin/env bash
# Train on VSPW: scripts/train_vspw.sh CONFIG [GPUS] [extra `vidseg train` args]
#   GPUS > 1 runs `torchrun --nproc-per-node=GPUS -m vidseg train ...` (DDP, one process per GPU);
#   GPUS = 1 (default) on one node runs plain `vidseg train`. On a CPU-only machine GPUS is the
#   number of CPU processes (gloo).
# Several nodes: run the same command on every node with NNODES, NODE_RANK (0 on the node at
#   MASTER_ADDR), MASTER_ADDR and MASTER_PORT set, or under SLURM with one `srun` task per node
#   (scripts/slurm_train_vspw.sbatch); see scripts/_launch.sh. The run directory must be on a
#   file system every node sees: global rank 0 writes it, every rank reads it on --resume.
# The data root comes from the config (data.root) or the VSPW_ROOT environment variable.
# DRY_RUN=1 prints the command instead of running it.
# Examples:
#   VSPW_ROOT=/data/VSPW_480p scripts/train_vspw.sh configs/vspw/upernet_video_mcibipp_r50.yaml 8
#   scripts/train_vspw.sh configs/vspw/fcn_r50.yaml 1 --set train.iters=1000 --resume
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node01 scripts/train_vspw.sh vspw/upernet_video_mcibipp_r50 8
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node01 scripts/train_vspw.sh vspw/upernet_video_mcibipp_r50 8
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 CONFIG [GPUS] [extra vidseg train args]" >&2
    exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
CONFIG=$1
shift
launch_vidseg train "$CONFIG" -- "$@"
