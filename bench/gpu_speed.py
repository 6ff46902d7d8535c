"""GPU speed of the paper-size Video-MCIBI++ models: streaming FPS at 480p, training iterations/s.

For each model (R50 and Swin-L Video-MCIBI++, h = 2, configs/vspw/upernet_video_mcibipp_*.yaml,
random weights: speed does not depend on them):
  stream  `step()` frames/s at 480x853 (one backbone pass per frame, history from the buffer), in
          the variants fp32, amp_fp16, amp_bf16 (torch.autocast), channels_last (fp32) and compile
          (torch.compile of the model's modules, fp32), and the combinations
          amp_bf16_channels_last and amp_bf16_compile; `--variants` picks some; `--profile` adds,
          per variant, the top CUDA kernels of 5 profiled frames (torch.profiler);
  train   iterations/s of a training step (forward, backward, SGD) at batch 8 with AMP fp16 as in
          `vidseg train` (GradScaler), clips of h + 1 frames at the 512x512 crop of the config,
          on synthetic random frames and labels of the right shapes (no data loading is timed);
          one GPU, so BatchNorm, not SyncBN.
Every variant is guarded: one that fails prints its error and the others still run. Times are
medians over the timed frames / iterations after warm-up, with `torch.cuda.synchronize()`.

Without CUDA it prints one line and exits 0, unless `--device cpu` is given. `--smoke` shrinks
everything (reduced ResNet backbone in both configs' heads, 64x96 input, 2 frames, batch 2,
1 iteration; compile left out) so that the script runs end to end on a CPU in seconds
(tests/test_gpu_speed.py).

Usage: PYTHONPATH=. python bench/gpu_speed.py [--models r50 swinl] [--variants ...]
       PYTHONPATH=. python bench/gpu_speed.py --device cpu --smoke
Last line: {"device": ..., "smoke": ..., "stream_size": [H, W], "stream_fps": {model: {variant:
fps or {"error": ...}}}, "train": {model: {"it_per_s": ..., "batch": 8, "amp": "fp16", ...}}}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "r50": ROOT / "configs" / "vspw" / "upernet_video_mcibipp_r50.yaml",
    "swinl": ROOT / "configs" / "vspw" / "upernet_video_mcibipp_swinl.yaml",
}
VARIANTS = (
    "fp32",
    "amp_fp16",
    "amp_bf16",
    "channels_last",
    "compile",
    "amp_bf16_channels_last",
    "amp_bf16_compile",
)
# --smoke: the configs' heads on a reduced ResNet-18 (any output stride), Z = 16
SMOKE_OVERRIDES = [
    "model.backbone.name=resnet18",
    "model.backbone.widths=[8,16,32,64]",
    "model.backbone.stem_width=8",
    "model.channels=16",
    "model.key_channels=8",
    "model.aux_channels=16",
    "model.head.fpn_channels=32",
]


def build(name: str, smoke: bool, device):
    """`(cfg, VideoSegmentor)` of model `name` with random weights, on `device`, eval mode."""
    import torch

    from vidseg.config import load_config
    from vidseg.engine.inference import build_checked

    overrides = ["model.backbone.pretrained=false", *(SMOKE_OVERRIDES if smoke else [])]
    cfg = load_config(CONFIGS[name], overrides)
    torch.manual_seed(0)
    return cfg, build_checked(cfg, str(CONFIGS[name])).to(device).eval()


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device, warmup: int, reps: int) -> float:
    """Median seconds of `fn` over `reps` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fresh_for(variant: str, name: str, model, smoke: bool, device):
    """The model for `variant`: a new copy for channels_last / compile (they must not leak)."""
    plain = variant in ("fp32", "amp_fp16", "amp_bf16")
    return model if plain else build(name, smoke, device)[1]


def stepper(model, variant: str, size, device) -> Callable[[], None]:
    """One streaming `step()` of `model` on a fixed random `(1, 3, *size)` frame, in `variant`.

    A variant name combines its parts: `amp_fp16` / `amp_bf16` (autocast), `channels_last`,
    `compile`; plain `fp32` has none of them.
    """
    import torch

    from vidseg.engine.stream import autocast_for

    precision = variant[4:8] if variant.startswith("amp_") else "fp32"
    fmt = torch.channels_last if "channels_last" in variant else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if "compile" in variant:
        from vidseg.models.fuse import compile_modules

        compile_modules(model)
    x = torch.randn(1, 3, *size, device=device).contiguous(memory_format=fmt)
    state = {"s": None}

    def one() -> None:
        with autocast_for(device.type, precision):
            _, state["s"] = model.step(x, state["s"])

    return one


def stream_fps(model, variant: str, size, device, warmup: int, frames: int) -> float:
    """Frames/s of `model.step()` on random `(1, 3, *size)` frames in `variant`."""
    return 1.0 / timed(stepper(model, variant, size, device), device, warmup, frames)


def profile_table(model, variant: str, size, device, warmup: int, rows: int = 12) -> str:
    """torch.profiler table of 5 streaming steps after `warmup`: the top kernels by device time."""
    from torch.profiler import ProfilerActivity, profile

    one = stepper(model, variant, size, device)
    for _ in range(warmup):
        one()
    sync(device)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(5):
            one()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60)


def train_its(cfg, model, device, batch: int, crop, warmup: int, iters: int) -> dict:
    """Iterations/s of forward + backward + SGD at `batch` clips of `h + 1` frames, AMP."""
    import torch

    from vidseg.engine.schedule import param_groups

    model.train()
    t = model.history + 1
    frames = torch.randn(batch, t, 3, *crop, device=device)
    labels = torch.randint(0, cfg.model.num_classes, (batch, *crop), device=device)
    labels[:, : crop[0] // 8] = 255  # some ignored pixels, as in real masks
    if cfg.model.backbone.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    tc = cfg.train
    optimizer = torch.optim.SGD(
        param_groups(model, tc.lr, tc.backbone_lr_mult),
        lr=tc.lr,
        momentum=tc.momentum,
        weight_decay=tc.weight_decay,
    )
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.bfloat16  # CPU autocast: bf16, no scaler
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)

    def one() -> None:
        with torch.autocast(device.type, dtype=dtype):
            loss = sum(model(frames, labels).values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    seconds = timed(one, device, warmup, iters)
    model.eval()
    return {
        "it_per_s": round(1.0 / seconds, 3),
        "batch": batch,
        "clip_frames": t,
        "crop": list(crop),
        "amp": "fp16" if cuda else "bf16",
        "data": "synthetic random",
    }


def guarded(label: str, fn: Callable[[], object]):
    """Run `fn`; on any error print it and return `{"error": ...}` so the next variant runs."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one failing variant must not stop the others
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        print(f"{label}: FAILED {msg}", flush=True)
        return {"error": msg}
    finally:
        _free_cuda()


def _free_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--smoke", action="store_true", help="tiny models and inputs, seconds")
    p.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--variants", nargs="+", default=None, choices=VARIANTS)
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--frames", type=int, default=None, help="timed streaming frames")
    p.add_argument("--iters", type=int, default=None, help="timed training iterations")
    p.add_argument("--batch", type=int, default=None, help="training clips per iteration")
    p.add_argument("--no-train", action="store_true", help="streaming FPS only")
    p.add_argument("--profile", action="store_true", help="print each variant's top kernels")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_speed: no CUDA device; nothing measured (use --device cpu [--smoke] to run)")
        return 0
    device = torch.device(args.device)
    smoke = args.smoke
    size = tuple(args.size or ((64, 96) if smoke else (480, 853)))
    frames = args.frames or (2 if smoke else 50)
    iters = args.iters or (1 if smoke else 20)
    batch = args.batch or (2 if smoke else 8)
    warmup = 1 if smoke else 10
    variants = args.variants or [v for v in VARIANTS if not (smoke and "compile" in v)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, smoke={smoke}, random weights", flush=True)
    result: dict = {"device": name, "smoke": smoke, "stream_size": list(size)}
    result["stream_fps"], result["train"] = {}, {}
    for model_name in args.models:
        built = guarded(f"{model_name} build", lambda n=model_name: build(n, smoke, device))
        if isinstance(built, dict):
            result["stream_fps"][model_name] = built
            continue
        cfg, model = built
        fps = result["stream_fps"].setdefault(model_name, {})
        for variant in variants:
            label = f"{model_name} stream {variant}"
            fps[variant] = guarded(
                label,
                lambda v=variant, n=model_name, m=model: round(
                    stream_fps(fresh_for(v, n, m, smoke, device), v, size, device, warmup, frames),
                    2,
                ),
            )
            if not isinstance(fps[variant], dict):
                print(f"{label}: {fps[variant]:.2f} frames/s at {size[0]}x{size[1]}", flush=True)
            if args.profile:
                table = guarded(
                    f"{label} profile",
                    lambda v=variant, n=model_name, m=model: profile_table(
                        fresh_for(v, n, m, smoke, device), v, size, device, warmup
                    ),
                )
                print(f"{label} profile:\n{table}", flush=True)
        if not args.no_train:
            crop = (64, 64) if smoke else tuple(cfg.data.crop_size)
            train = guarded(
                f"{model_name} train",
                lambda c=cfg, m=model, k=crop: train_its(c, m, device, batch, k, warmup, iters),
            )
            result["train"][model_name] = train
            if "it_per_s" in train:
                print(f"{model_name} train: {train['it_per_s']} it/s, {train}", flush=True)
        del model
        _free_cuda()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
