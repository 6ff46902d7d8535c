"""Streaming with the history buffer vs per-frame image model vs naive history recomputation.

Side by side in one run, same backbone, same frames, random weights, at every input size:
  (a) image      the per-frame image model (model.history = 0), `step()` per frame;
  (b) stream     Video-MCIBI++ with h history frames, `step()`: one backbone pass per frame, the
                 history frames' stage-1 maps come from the ring buffer;
  (c) recompute  the offline `model(clip)` path on the last h + 1 frames for every frame, i.e.
                 the h history frames are re-encoded each time (h + 1 backbone passes).
Repetitions are interleaved (every size and variant once per round, the variant order rotating
between rounds) and summarised by medians, so all variants see the same load on a shared CPU.
Targets (issue 14) for h = 2 on the light config: (b)/(a) <= 1.05 and (c)/(b) >= 2.9.

The FLOP ratio (b)/(a) of one frame is printed too: the history's only extra work is the fusion
conv's h * Z extra input channels, so it bounds what (b)/(a) should measure.

Also prints `StreamState.nbytes()` for h = 2 at 480x853 for the ResNet-50 paper config, computed
from the map size of a small run (the history maps scale with the input area).

Usage: PYTHONPATH=. python bench/stream_vs_recompute.py [--config CFG] [--sizes 360x640 480x853]
    [--rounds N]
Last line: {"sizes": {"360x640": {"stream_over_image": ..., "recompute_over_stream": ...,
"flops_stream_over_image": ..., "ms": {"image": ..., "stream": ..., "recompute": ...}}, ...},
"history": 2, "backbone": ..., "config": ..., "pass": ...}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

R50 = ROOT / "configs" / "vspw" / "upernet_video_mcibipp_r50.yaml"
LIGHT = ROOT / "configs" / "synthetic" / "stream_light.yaml"
MAX_STREAM_OVER_IMAGE = 1.05
MIN_RECOMPUTE_OVER_STREAM = 2.9


def build(config, history: int, extra=()):
    from vidseg.engine.inference import load_inference_model

    overrides = ["model.backbone.pretrained=false", f"model.history={history}", *extra]
    # as `vidseg stream`'s torch backend runs it (BatchNorms folded, channels-last, Winograd)
    return load_inference_model(config, None, overrides, random_init=True, optimize=True)[1]


def r50_state_bytes(h_in: int = 480, w_in: int = 853, probe=(64, 107)) -> tuple[int, str]:
    """nbytes of an h = 2 R50 stream state at h_in x w_in, from the map stride of a small probe."""
    import torch

    model = build(R50, 2)
    x = torch.randn(1, 3, *probe)
    with torch.no_grad():
        _, state = model.step(x, None)
        _, state = model.step(x, state)
        _, state = model.step(x, state)
    maps = [t for buf in state.history.values() for t in buf]
    z, mh, mw = maps[0].shape[1:]
    stride = probe[0] / mh
    per_map = z * math.ceil(h_in / stride) * math.ceil(w_in / stride) * maps[0].element_size()
    c_dl = 0 if state.c_dl is None else state.c_dl.numel() * state.c_dl.element_size()
    total = per_map * len(maps) + c_dl
    how = (
        f"{len(maps)} maps of Z={z} at stride {stride:g} -> {math.ceil(h_in / stride)}x"
        f"{math.ceil(w_in / stride)} each ({per_map / 2**20:.2f} MiB) + C_dl {c_dl / 1024:.0f} KiB; "
        f"measured at {probe[0]}x{probe[1]}: {state.nbytes()} bytes"
    )
    return total, how


def parse_size(text: str) -> tuple[int, int]:
    """ "480x853" -> (480, 853)."""
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def step_flops(model, x) -> int:
    """FLOPs of one steady-state `step()` (history buffer full) on the frame `x`."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    state = None
    with torch.no_grad():
        for _ in range(model.history + 1):
            _, state = model.step(x, state)
        counter = FlopCounterMode(display=False)
        with counter:
            model.step(x, state)
    return counter.get_total_flops()


class SizeRun:
    """The three variants at one input size, each with its own stream state / clip window."""

    def __init__(self, image, video, h: int, size: tuple[int, int], count: int):
        import torch

        self.image, self.video, self.h, self.size = image, video, h, size
        g = torch.Generator().manual_seed(0)
        self.frames = [torch.randn(1, 3, *size, generator=g) for _ in range(count)]
        self.states: dict = {"image": None, "stream": None}
        self.window: list = []
        self.times: dict = {"image": [], "stream": [], "recompute": []}

    def run(self, key: str, x) -> None:
        import torch

        if key == "image":
            _, self.states["image"] = self.image.step(x, self.states["image"])
        elif key == "stream":
            _, self.states["stream"] = self.video.step(x, self.states["stream"])
        else:
            self.window.append(x)
            del self.window[: -(self.h + 1)]
            with torch.no_grad():  # (1, T, 3, H, W), oldest first, T <= h + 1
                self.video(torch.stack(self.window, dim=1))

    def median_ms(self, key: str) -> float:
        return 1000 * statistics.median(self.times[key])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(LIGHT), help="model config (default: the light one)")
    p.add_argument(
        "--sizes", nargs="+", default=["360x640", "480x853"], help="input sizes HxW, all in one run"
    )
    p.add_argument("--rounds", type=int, default=12, help="timed rounds (+ h + 1 warm-up rounds)")
    p.add_argument("--history", type=int, default=2)
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: CPU cores - 1)"
    )
    args = p.parse_args()
    import torch

    from vidseg.engine.stream import default_threads

    # Same thread policy as `vidseg stream`: a full OpenMP pool on a busy small CPU spin-waits.
    torch.set_num_threads(args.threads or default_threads())
    h = args.history
    sizes = [parse_size(t) for t in args.sizes]
    image = build(args.config, 0)
    video = build(args.config, h)
    runs = [SizeRun(image, video, h, size, args.rounds + h + 1) for size in sizes]
    print(
        f"config {args.config}, sizes {', '.join(args.sizes)}, h = {h}, {args.rounds} timed "
        f"rounds (variants interleaved, order rotating, medians), {torch.get_num_threads()} "
        f"threads, load average {os.getloadavg()[0]:.1f}; random weights"
    )
    order = ["image", "stream", "recompute"]
    for i in range(args.rounds + h + 1):
        keys = order[i % 3 :] + order[: i % 3]  # no variant always runs right after another
        for run in runs:
            x = run.frames[i]
            for key in keys:
                t0 = time.perf_counter()
                run.run(key, x)
                if i >= h + 1:  # warm-up, and the recompute window is full from here on
                    run.times[key].append(time.perf_counter() - t0)

    results = {}
    ok = True
    for run in runs:
        t_a, t_b, t_c = (run.median_ms(k) for k in order)
        flops = step_flops(video, run.frames[0]) / step_flops(image, run.frames[0])
        name = f"{run.size[0]}x{run.size[1]}"
        results[name] = {
            "stream_over_image": round(t_b / t_a, 3),
            "recompute_over_stream": round(t_c / t_b, 3),
            "flops_stream_over_image": round(flops, 3),
            "ms": {k: round(run.median_ms(k), 1) for k in order},
        }
        ok &= t_b / t_a <= MAX_STREAM_OVER_IMAGE and t_c / t_b >= MIN_RECOMPUTE_OVER_STREAM
        print(f"{name}: (a) image model, h = 0      {t_a:8.1f} ms/frame")
        print(
            f"{name}: (b) stream, buffer, h = {h}   {t_b:8.1f} ms/frame   (b)/(a) = "
            f"{t_b / t_a:.3f} (target <= {MAX_STREAM_OVER_IMAGE}; FLOPs {flops:.3f}); state "
            f"{run.states['stream'].nbytes() / 1024:.0f} KiB"
        )
        print(
            f"{name}: (c) recompute history, h = {h} {t_c:8.1f} ms/frame   (c)/(b) = "
            f"{t_c / t_b:.3f} (target >= {MIN_RECOMPUTE_OVER_STREAM})"
        )
    total, how = r50_state_bytes()
    print(
        f"R50 h = 2 StreamState.nbytes() at 480x853: {total} bytes ({total / 2**20:.1f} MiB): {how}"
    )
    print(
        json.dumps(
            {
                "sizes": results,
                "history": h,
                "backbone": video.image_model.backbone.name,
                "config": Path(args.config).name,
                "threads": torch.get_num_threads(),
                "pass": bool(ok),
            }
        )
    )


if __name__ == "__main__":
    main()
