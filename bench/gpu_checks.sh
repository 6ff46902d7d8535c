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
# streaming; combo_r50, combo_swinl: bf16 autocast on the compiled model.
set -u
LOG_DIR=${LOG_DIR:-outputs/gpu_checks}
mkdir -p "$LOG_DIR"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/vidseg_site "$WHEELS"/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/vidseg_site"
fi
STEPS=${STEPS:-env speed demo compile_r50 compile_swinl profile combo_r50 combo_swinl}
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
