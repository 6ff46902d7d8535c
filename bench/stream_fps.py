"""Streaming speed and memory: `vidseg stream`'s engine on synthetic mp4s, side by side in one run.

  1. end to end vs model only, light config (configs/synthetic/stream_light.yaml), same frames:
     end to end = decode thread + model + threaded overlay mp4 encode, wall clock including the
     final encoder flush; model only = the same per-frame work (prepare, step, upsample,
     argmax) on frames decoded into memory beforehand. Target e2e / model >= 0.9.
  2. the light config's end-to-end FPS at short side 360 (target >= 8 on a 2-core CPU).
  3. the ResNet-50 paper config (configs/vspw/upernet_video_mcibipp_r50.yaml, no pretrained
     download) end to end on a few frames at short side 480.
  4. peak RSS after 300 and after 3,000 frames (light config at a small size, run in a fresh
     child process so earlier benchmarks do not set the peak). Target growth <= 5 %.
  5. the onnxruntime backend (`vidseg stream --backend onnxruntime`) on the light config at
     short side 360, next to torch on the same frames: end to end (decode + model + overlay
     mp4), model only, and the share of pixels whose labels equal torch's. Target >= 30 FPS
     end to end on 2 cores. Then where a frame's time goes, each stage timed alone on the same
     frames: decode, prepare, the onnxruntime step, upsample + argmax, overlay drawing, H.264
     encoding.

All models use random weights: speed does not depend on them. Videos are made with PyAV in a
temporary folder. Last line: a JSON object with the figures.

Usage: PYTHONPATH=. python bench/stream_fps.py [--quick] [--frames N] [--r50-frames N]
       [--light-only]  (parts 1, 2 and 5; the JSON then has null for r50_fps and rss_growth)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LIGHT = ROOT / "configs" / "synthetic" / "stream_light.yaml"
R50 = ROOT / "configs" / "vspw" / "upernet_video_mcibipp_r50.yaml"


def make_video(path: Path, n: int, h: int, w: int, fps: int = 25) -> Path:
    """A textured scene panning right with a bouncing block, H.264 (yuv420p), like real footage."""
    import av

    h, w = h // 2 * 2, w // 2 * 2  # yuv420p needs even sizes
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0 : w * 2]
    base = np.stack([(xx * 255 // (2 * w)), (yy * 255 // h), ((xx + yy) % 64) * 4], -1)
    base = (base + rng.integers(0, 40, base.shape)).clip(0, 255).astype(np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for k in range(n):
            x0 = (3 * k) % w
            rgb = np.ascontiguousarray(base[:, x0 : x0 + w])
            by, bx = (5 * k) % max(1, h - h // 4), (7 * k) % max(1, w - w // 4)
            rgb[by : by + h // 4, bx : bx + w // 4] = (230, 60, 40)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def load(config: Path, short_side: int | None, overrides=(), optimize: bool = True):
    """The model as `vidseg stream` runs it: the torch backend with the inference rewrites
    (`optimize`), the onnxruntime backend exported from the model as built."""
    from vidseg.engine.inference import load_inference_model

    cfg, model = load_inference_model(
        config, None, list(overrides), random_init=True, optimize=optimize
    )
    if short_side is not None:
        cfg.stream.short_side = short_side
    return cfg, model


def end_to_end(
    cfg,
    model,
    video: Path,
    out_dir: Path,
    max_frames: int | None = None,
    on_frame=None,
    stepper=None,
):
    """One StreamRunner run with the threaded overlay writer; returns the StreamSummary."""
    from vidseg.engine.stream import StreamRunner
    from vidseg.engine.stream_outputs import StreamOutputs
    from vidseg.io.sinks import OverlayVideoWriter
    from vidseg.io.sources import VideoFileSource

    source = VideoFileSource(video, max_frames=max_frames)
    writer = OverlayVideoWriter(
        out_dir / f"{video.stem}_overlay.mp4",
        fps=source.fps or 25.0,
        threaded=True,
        queue_size=cfg.stream.queue_size,
    )
    outputs = StreamOutputs("stream", overlay=writer)
    runner = StreamRunner(model, cfg, outputs=outputs, on_frame=on_frame, stepper=stepper)
    return runner.run(source)


def decoded(video: Path, max_frames: int | None = None) -> list:
    from vidseg.io.sources import VideoFileSource

    with VideoFileSource(video, max_frames=max_frames) as src:
        return [rgb for _, _, rgb in src]


def model_only(cfg, model, video: Path, max_frames: int | None = None, stepper=None):
    """FPS of the per-frame model work alone on frames decoded beforehand, and the labels."""
    from vidseg.engine.stream import StreamRunner

    frames = decoded(video, max_frames)
    runner = StreamRunner(model, cfg, stepper=stepper)
    state = None
    labels = []
    t0 = time.perf_counter()
    for rgb in frames:
        out, state = runner.predict(rgb, state)
        labels.append(out)
    return len(frames) / (time.perf_counter() - t0), labels


def warm_up(cfg, model, video: Path, n: int = 3, stepper=None) -> None:
    model_only(cfg, model, video, max_frames=n, stepper=stepper)


def stage_split(cfg, video: Path, stepper, tmp: Path) -> dict:
    """Each stage of the onnxruntime path timed alone on the same frames, in ms per frame.

    Returns:
        stage -> (CPU ms of the whole process, every thread; wall ms). CPU time barely moves
        when other jobs load the machine, so it gives the split on a busy machine too.
    """
    from vidseg.data.transforms import prepare_frame
    from vidseg.engine.onnx_stream import upsample_argmax_np
    from vidseg.io.palette import overlay
    from vidseg.io.sinks import OverlayVideoWriter, draw_fps, draw_legend

    ms = {}
    clock = [time.process_time(), time.perf_counter()]

    def lap(name: str, n: int) -> None:
        now = [time.process_time(), time.perf_counter()]
        ms[name] = tuple(1000 * (b - a) / n for a, b in zip(clock, now))
        clock[:] = [time.process_time(), time.perf_counter()]

    frames = decoded(video)
    n = len(frames)
    lap("decode", n)
    short = stepper.short_side
    xs = [prepare_frame(rgb, short, cfg.data.mean, cfg.data.std).numpy() for rgb in frames]
    lap("prepare", n)
    session = stepper.graphs.for_frame(frames[0].shape[:2], short)
    clock[:] = [time.process_time(), time.perf_counter()]
    logits = [session.run(x, None)[0][0] for x in xs]
    lap("onnxruntime step", n)
    labels = [upsample_argmax_np(lg, rgb.shape[:2]) for lg, rgb in zip(logits, frames)]
    lap("upsample+argmax", n)
    drawn = []
    for rgb, lab in zip(frames, labels):
        img = overlay(rgb, lab, cfg.stream.alpha)
        draw_legend(img, lab, None)
        draw_fps(img, 20.0)
        drawn.append(img)
    lap("overlay drawing", n)
    # the frames are drawn already: alpha 0, no legend, no counter leaves the encoder's work
    writer = OverlayVideoWriter(tmp / "split.mp4", fps=25.0, alpha=0.0, legend=False)
    clock[:] = [time.process_time(), time.perf_counter()]
    for img, lab in zip(drawn, labels):
        writer.write(img, lab)
    writer.close()
    lap("H.264 encode", n)
    return ms


def rss_child(frames: int, size: int, checkpoints: list[int]) -> None:
    """Child process: stream `frames` frames at short side `size`, print peak RSS at checkpoints."""
    from vidseg.engine.stream import peak_rss_mb

    tmp = Path(tempfile.mkdtemp(prefix="vidseg_rss_"))
    video = make_video(tmp / "long.mp4", frames, size, size * 16 // 9)
    cfg, model = load(LIGHT, size)
    marks = {}

    def on_frame(done, _fps):
        if done in checkpoints:
            marks[done] = peak_rss_mb()

    summary = end_to_end(cfg, model, video, tmp, on_frame=on_frame)
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"rss_mb": marks, "frames": summary.frames, "fps": summary.fps_end_to_end}))


def rss_part(args) -> float:
    """Part 4 in a fresh child process (its peak RSS must not include the bigger models)."""
    t = time.perf_counter()
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--rss-child",
            "--rss-frames",
            str(args.rss_frames),
            "--rss-size",
            str(args.rss_size),
        ]
        + ["--threads", str(args.threads)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    if child.returncode != 0:
        sys.exit(f"RSS child failed:\n{child.stderr[-2000:]}")
    rss = json.loads(child.stdout.strip().splitlines()[-1])
    first, last = (rss["rss_mb"].get(str(k)) for k in (args.rss_frames // 10, args.rss_frames))
    growth = (last - first) / first
    print(
        f"[4] RSS, light config at {args.rss_size}p, {rss['frames']} frames ({rss['fps']:.1f} FPS): "
        f"{first:.1f} MiB after {args.rss_frames // 10}, {last:.1f} MiB after {args.rss_frames} "
        f"-> growth {100 * growth:+.2f} % ({time.perf_counter() - t:.0f} s)"
    )

    return growth


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="fewer frames everywhere (about half the time)"
    )
    p.add_argument(
        "--frames", type=int, default=None, help="frames for parts 1-2 (default 90, quick 40)"
    )
    p.add_argument(
        "--r50-frames", type=int, default=None, help="frames for part 3 (default 4, quick 2)"
    )
    p.add_argument("--r50-short-side", type=int, default=480)
    p.add_argument("--rss-frames", type=int, default=3000)
    p.add_argument("--rss-size", type=int, default=64, help="short side of the RSS video")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: as vidseg stream, CPU cores - 1)",
    )
    p.add_argument(
        "--light-only",
        action="store_true",
        help="only the light config (parts 1, 2, 5): no ResNet-50, no RSS child",
    )
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    import torch

    from vidseg.engine.stream import default_threads
    from vidseg.errors import VidsegError

    args.threads = args.threads or default_threads()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args.rss_frames, args.rss_size, [args.rss_frames // 10, args.rss_frames])
        return
    n = args.frames or (40 if args.quick else 90)
    n_r50 = args.r50_frames or (2 if args.quick else 4)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; random weights (speed only)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="vidseg_bench_"))

    # 1 + 2: light config at 360p.
    t = time.perf_counter()
    video = make_video(tmp / "light360.mp4", n, 360, 640)
    cfg, model = load(LIGHT, 360)
    warm_up(cfg, model, video)
    model_fps, torch_labels = model_only(cfg, model, video)
    summary = end_to_end(cfg, model, video, tmp)
    ratio = summary.fps_end_to_end / model_fps
    print(
        f"[1] light config 360x640, {summary.frames} frames: model only {model_fps:.2f} FPS, "
        f"end to end {summary.fps_end_to_end:.2f} FPS -> e2e/model {ratio:.3f}"
    )
    print(
        f"    per frame: decode wait {summary.ms_decode:.1f} ms, model {summary.ms_model:.1f} ms, "
        f"write {summary.ms_write:.1f} ms; state {summary.state_bytes / 1024:.0f} KiB"
    )
    print(
        f"[2] light config end to end at short side 360: {summary.fps_end_to_end:.2f} FPS "
        f"(target >= 8) ({time.perf_counter() - t:.0f} s)"
    )

    # 5: the onnxruntime backend, same model and frames.
    onnx_fps = agreement = None
    try:
        from vidseg.engine.onnx_stream import onnx_stepper

        # exported from the model as built (the same seeded random weights), as `vidseg stream`
        # does; its labels are compared with the torch backend's (inference rewrites on)
        _, plain = load(LIGHT, 360, optimize=False)
        stepper = onnx_stepper(cfg, plain, None, args.threads, 360, cache_root=tmp / "onnx")
    except VidsegError as exc:  # onnx / onnxruntime missing: the other parts still run
        print(f"[5] onnxruntime backend skipped: {exc.one_line()}")
        stepper = None
    if stepper is not None:
        t = time.perf_counter()
        warm_up(cfg, None, video, stepper=stepper)  # exports the step (once) and loads it
        t_export = time.perf_counter() - t
        onnx_model_fps, onnx_labels = model_only(cfg, None, video, stepper=stepper)
        onnx = end_to_end(cfg, None, video, tmp, stepper=stepper)
        same = sum(int((a == b).sum()) for a, b in zip(torch_labels, onnx_labels))
        agreement = same / sum(a.size for a in torch_labels)
        onnx_fps = onnx.fps_end_to_end
        print(
            f"[5] onnxruntime backend, light config 360x640, {onnx.frames} frames "
            f"(export + load {t_export:.1f} s, once): model only {onnx_model_fps:.2f} FPS, "
            f"end to end {onnx_fps:.2f} FPS (target >= 30; torch {summary.fps_end_to_end:.2f}, "
            f"x{onnx_fps / summary.fps_end_to_end:.2f}); labels equal to torch's on "
            f"{100 * agreement:.3f} % of pixels"
        )
        print(
            f"    per frame: decode wait {onnx.ms_decode:.1f} ms, model {onnx.ms_model:.1f} ms, "
            f"write {onnx.ms_write:.1f} ms; state {onnx.state_bytes / 1024:.0f} KiB"
        )
        cores = os.cpu_count() or 1
        if cores > args.threads:  # for information: onnxruntime on every core (no spinning)
            every = onnx_stepper(cfg, plain, None, cores, 360, cache_root=tmp / "onnx")
            warm_up(cfg, None, video, stepper=every)
            all_cores = end_to_end(cfg, None, video, tmp, stepper=every)
            print(
                f"    with {cores} onnxruntime threads instead of {args.threads}: end to end "
                f"{all_cores.fps_end_to_end:.2f} FPS (model {all_cores.ms_model:.1f} ms / frame)"
            )
        split = stage_split(cfg, video, stepper, tmp)
        print(
            "    stages alone, CPU ms per frame (wall ms): "
            + ", ".join(f"{k} {cpu:.1f} ({wall:.1f})" for k, (cpu, wall) in split.items())
        )
    del model

    r50_fps = growth = None
    if not args.light_only:
        r50_fps = r50_part(args, n_r50, tmp)
        growth = rss_part(args)
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        json.dumps(
            {
                "e2e_over_model": round(ratio, 3),
                "light_fps": round(summary.fps_end_to_end, 2),
                "r50_fps": None if r50_fps is None else round(r50_fps, 3),
                "rss_growth": None if growth is None else round(growth, 4),
                "onnx_fps": None if onnx_fps is None else round(onnx_fps, 2),
                "onnx_label_agreement": None if agreement is None else round(agreement, 5),
            }
        )
    )


def r50_part(args, n_r50: int, tmp: Path) -> float:
    """Part 3: the ResNet-50 paper config end to end; returns its FPS."""
    t = time.perf_counter()
    s = args.r50_short_side
    video = make_video(tmp / "r50.mp4", n_r50 + 1, s, round(s * 16 / 9) // 2 * 2)
    cfg, model = load(R50, s, ["model.backbone.pretrained=false"])
    warm_up(cfg, model, video, n=1)
    r50 = end_to_end(cfg, model, video, tmp, max_frames=n_r50)
    print(
        f"[3] ResNet-50 UperNet Video-MCIBI++ at {s}x{round(s * 16 / 9)}: {r50.fps_end_to_end:.3f} FPS "
        f"end to end ({r50.ms_model:.0f} ms model / frame, {r50.frames} frames, state "
        f"{r50.state_bytes / 2**20:.1f} MiB) ({time.perf_counter() - t:.0f} s)"
    )
    return r50.fps_end_to_end


if __name__ == "__main__":
    main()
