#!/usr/bin/env bash
# The GPU checks of issue 14, as one command for a lent GPU machine (bench/gpu_speed.py explains
# the numbers). Run from the repository root with the GPU machine's own python3 (torch, timm,
# pyyaml there); LOG_DIR (default outputs/gpu_checks) receives one log per step. Each step has
# its own time limit, so one that hangs or fails leaves the others their logs.
#   WHEELS=dir   pip-install the wheels in dir first (e.g. av, when the machine lacks it)
#   STEPS="..."  run only these steps (default: all, in this order)
# Steps: env (versions, GPU); speed: streaming FPS (fp32, AMP fp16/bf16, channels_last) and AMP
# training it/s of R50 and Swin-L Video-MCIBI++; demo: `vidseg demo` on CUDA with AMP training
# (the engine's CUDA path: train, causal eval, streaming); compile_r50, compile_swinl:
# torch.compile streaming FPS; profile: top CUDA kernels of fp32, bf16 and bf16 + channels_last
# streaming; combo_r50, combo_swinl: bf16 autocast on the compiled model; stream: `vidseg stream`
# end to end (decode, model, overlay mp4, label PNGs) of R50 on a 480x853 clip in fp32, bf16 and
# bf16 + compile, with the labels' agreement with fp32 (random weights: near-ties flip).
set -u
LOG_DIR=${LOG_DIR:-outputs/gpu_checks}
mkdir -p "$LOG_DIR"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/vidseg_site "$WHEELS"/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/vidseg_site"
fi
STEPS=${STEPS:-env speed demo compile_r50 compile_swinl profile combo_r50 combo_swinl stream}
export LOG_DIR PY
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
    echo "=== $name (limit ${limit}s) ==="
    local t0=$SECONDS
    timeout "$limit" "$@" >"$LOG_DIR/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$LOG_DIR/$name.log"
    echo "=== $name: rc=$rc, $((SECONDS - t0)) s ==="
}
step env 60 bash -c "nvidia-smi; $PY -m vidseg info"
step speed 200 $PY bench/gpu_speed.py --variants fp32 amp_fp16 amp_bf16 channels_last
step demo 150 $PY -m vidseg demo --out /tmp/vidseg_gpu_demo --iters 100 \
    --set model.backbone.pretrained=false train.amp=true
if [ -f /tmp/vidseg_gpu_demo/eval/metrics.json ]; then
    cp /tmp/vidseg_gpu_demo/eval/metrics.json "$LOG_DIR/demo_metrics.json"
    cp /tmp/vidseg_gpu_demo/stream_synthetic.mp4 "$LOG_DIR/demo_stream.mp4"
fi
step compile_r50 120 $PY bench/gpu_speed.py --models r50 --variants compile --no-train
step compile_swinl 120 $PY bench/gpu_speed.py --models swinl --variants compile --no-train
step profile 150 $PY bench/gpu_speed.py --no-train --frames 20 --profile \
    --variants fp32 amp_bf16 amp_bf16_channels_last
step combo_r50 90 $PY bench/gpu_speed.py --models r50 --variants amp_bf16_compile --no-train
step combo_swinl 120 $PY bench/gpu_speed.py --models swinl --variants amp_bf16_compile --no-train
stream_runs() {
    local clip=/tmp/vidseg_gpu_480p.mp4 ckpt=/tmp/vidseg_r50_random.pth cfg=upernet_video_mcibipp_r50
    $PY -c "import sys; sys.path.insert(0, '.'); from pathlib import Path
from tests._video_fixtures import write_video
write_video(Path('$clip'), n=${STREAM_FRAMES:-150}, h=480, w=853)
import torch; from vidseg.engine.inference import load_inference_model
nopre = ['model.backbone.pretrained=false']
torch.save(load_inference_model('$cfg', None, nopre, random_init=True)[1].state_dict(), '$ckpt')" || return 1
    for run in fp32 bf16 bf16_compile; do
        local extra=()
        case $run in bf16) extra=(--precision bf16) ;; bf16_compile) extra=(--precision bf16 --compile) ;; esac
        $PY -m vidseg stream $cfg $clip --checkpoint $ckpt --device "${DEVICE:-cuda}" --quiet --labels \
            --set model.backbone.pretrained=false --out /tmp/vidseg_gpu_stream_$run --json "$LOG_DIR/stream_$run.json" "${extra[@]}" || return 1
    done
    $PY -c "import cv2, glob, numpy as np
ref = sorted(glob.glob('/tmp/vidseg_gpu_stream_fp32/labels/*/*.png'))
for run in ('bf16', 'bf16_compile'):
    other = sorted(glob.glob(f'/tmp/vidseg_gpu_stream_{run}/labels/*/*.png'))
    same = np.mean([np.mean(cv2.imread(a, -1) == cv2.imread(b, -1)) for a, b in zip(ref, other)])
    print(f'{run}: {len(other)} frames, labels equal to fp32 on {100 * same:.2f} % of pixels')"
}
step stream 240 bash -c "$(declare -f stream_runs); stream_runs"
