"""Streaming with the history buffer vs per-frame image model vs naive history recomputation.

Side by side in one run, same backbone, same input size, same frames, random weights:
  (a) image      the per-frame image model (model.history = 0), `step()` per frame;
  (b) stream     Video-MCIBI++ with h history frames, `step()`: one backbone pass per frame, the
                 history frames' stage-1 maps come from the ring buffer;
  (c) recompute  the offline `model(clip)` path on the last h + 1 frames for every frame, i.e.
                 the h history frames are re-encoded each time (h + 1 backbone passes).
Targets (issue 4): (b)/(a) <= 1.15 and (c)/(b) >= 2.5 for h = 2.

Also prints `StreamState.nbytes()` for h = 2 at 480x853 for the ResNet-50 paper config, computed
from the map size of a small run (the history maps scale with the input area).

Usage: PYTHONPATH=. python bench/stream_vs_recompute.py [--config CFG] [--size H W] [--frames N]
Last line: {"stream_over_image": ..., "recompute_over_stream": ..., "history": 2, "backbone": ...,
"input": [H, W]}.
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


def build(config, history: int, extra=()):
    import torch

    from vidseg.engine.inference import load_inference_model

    torch.manual_seed(0)
    overrides = ["model.backbone.pretrained=false", f"model.history={history}", *extra]
    return load_inference_model(config, None, overrides, random_init=True)[1]


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--config", default=str(R50), help="model config (default: the R50 paper config)"
    )
    p.add_argument("--size", type=int, nargs=2, default=[128, 224], metavar=("H", "W"))
    p.add_argument(
        "--frames", type=int, default=6, help="timed frames per variant (+ h + 1 warm-up)"
    )
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
    H, W = args.size
    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(1, 3, H, W, generator=g) for _ in range(args.frames + h + 1)]
    print(
        f"config {args.config}, input {H}x{W}, h = {h}, {args.frames} timed frames (medians, "
        f"variants interleaved), {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; random weights"
    )

    image = build(args.config, 0)
    video = build(args.config, h)
    states = {"a": None, "b": None}
    window: list = []

    def run_image(x):
        _, states["a"] = image.step(x, states["a"])

    def run_stream(x):
        _, states["b"] = video.step(x, states["b"])

    @torch.no_grad()
    def run_recompute(x):
        window.append(x)
        del window[: -(h + 1)]
        video(torch.stack(window, dim=1))  # (1, T, 3, H, W), oldest first, T <= h + 1

    # Interleaved per frame, medians: the three variants see the same load on a shared CPU.
    times = {"a": [], "b": [], "c": []}
    for i, x in enumerate(frames):
        for key, fn in (("a", run_image), ("b", run_stream), ("c", run_recompute)):
            t0 = time.perf_counter()
            fn(x)
            if i >= h + 1:  # warm-up, and the recompute window is full from here on
                times[key].append(time.perf_counter() - t0)
    t_a, t_b, t_c = (statistics.median(times[k]) for k in "abc")
    state_bytes = states["b"].nbytes()
    backbone = video.image_model.backbone.name
    print(f"(a) image model, h = 0      {1000 * t_a:8.1f} ms/frame")
    print(
        f"(b) stream, buffer, h = {h}   {1000 * t_b:8.1f} ms/frame   (b)/(a) = {t_b / t_a:.3f} "
        f"(target <= 1.15); state {state_bytes / 1024:.0f} KiB at {H}x{W}"
    )
    print(
        f"(c) recompute history, h = {h} {1000 * t_c:8.1f} ms/frame   (c)/(b) = {t_c / t_b:.3f} "
        f"(target >= 2.5)"
    )
    total, how = r50_state_bytes()
    print(
        f"R50 h = 2 StreamState.nbytes() at 480x853: {total} bytes ({total / 2**20:.1f} MiB): {how}"
    )
    print(
        json.dumps(
            {
                "stream_over_image": round(t_b / t_a, 3),
                "recompute_over_stream": round(t_c / t_b, 3),
                "history": h,
                "backbone": backbone,
                "input": [H, W],
            }
        )
    )


if __name__ == "__main__":
    main()
