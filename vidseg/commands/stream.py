"""`vidseg stream`: run the video model causally on a file, a frame folder, a camera or a URL.

Exit codes: 0 every frame processed; 3 partially processed (truncated file, lost camera,
interrupt); 2 nothing processed or bad input (one-line error naming the source and the cause).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

EXIT_OK, EXIT_BAD_INPUT, EXIT_PARTIAL = 0, 2, 3
log = logging.getLogger("vidseg.stream")


def parse_scales(text: str | None):
    """'0.5,1.0' -> (0.5, 1.0); None -> None."""
    if text is None:
        return None
    from vidseg.cli import CliError

    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise CliError(f"--scales: expected comma-separated numbers such as 0.5,1.0, got {text!r}") from None


def _progress(source, quiet: bool):
    """A tqdm bar when the length is known (files, folders), else a live FPS line (cameras)."""
    if quiet:
        return None, lambda: None
    if source.num_frames is not None and getattr(source, "device", None) is None:
        from tqdm import tqdm

        bar = tqdm(total=source.num_frames, unit="frame", desc=source.name[-40:], file=sys.stderr)

        def update(done, fps):
            bar.update(1)
            bar.set_postfix_str(f"{fps:.1f} FPS", refresh=False)

        return update, bar.close

    def live(done, fps):
        if done % 5 == 0:
            sys.stderr.write(f"\r{source.name}: {done} frames, {fps:5.1f} FPS, "
                             f"{source.dropped} dropped ")
            sys.stderr.flush()

    return live, lambda: sys.stderr.write("\n")


def _open_sinks(args, video_name: str, fps: float, cfg):
    from vidseg.engine.stream import class_names_for, output_paths
    from vidseg.io.sinks import (
        ColorPngWriter,
        LabelPngWriter,
        OverlayVideoWriter,
        ensure_writable_dir,
    )

    ensure_writable_dir(args.out)
    paths = output_paths(args.out, video_name)
    overlay = None if args.no_overlay else OverlayVideoWriter(
        paths["overlay"], fps=fps, alpha=cfg.stream.alpha, legend=cfg.stream.legend,
        class_names=class_names_for(cfg),
        threaded=True, queue_size=cfg.stream.queue_size)
    labels = LabelPngWriter(paths["labels"]) if args.labels else None
    color = ColorPngWriter(paths["color"], alpha=cfg.stream.alpha) if args.color else None
    return overlay, labels, color, paths


def run(args: argparse.Namespace) -> int:
    from vidseg.cli import CliError
    from vidseg.engine.stream import StreamRunner, model_short_side, source_video_name
    from vidseg.io.sinks import SinkError
    from vidseg.io.sources import SourceError, open_source

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    scales = parse_scales(args.scales)
    if args.checkpoint is None and not args.random_init:
        raise CliError("no checkpoint given: pass --checkpoint CKPT, or --random-init for a smoke test")
    if args.checkpoint is not None and args.random_init:
        raise CliError("--checkpoint and --random-init exclude each other")
    for name in ("max_frames", "stride", "short_side", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} must be >= 1, got {value}")

    import torch

    from vidseg.engine.stream import default_threads

    torch.set_num_threads(args.threads or default_threads())
    # Cheap checks first: a bad source or output folder fails before the model is built.
    try:
        source = open_source(args.source, stride=args.stride, max_frames=args.max_frames)
    except SourceError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    try:
        from vidseg.engine.inference import load_errors, load_inference_model

        if args.random_init:
            print("WARNING: --random-init: the model has RANDOM WEIGHTS, its predictions are "
                  "meaningless (smoke test / speed test only)", file=sys.stderr)
        try:
            cfg, model = load_inference_model(args.config, args.checkpoint, args.overrides or (),
                                              random_init=args.random_init, device=args.device)
        except load_errors() as exc:
            raise CliError(f"{args.config}: cannot build the model: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        video_name = source_video_name(source)
        fps = (source.fps or 25.0) / source.stride
        try:
            overlay, labels, color, paths = _open_sinks(args, video_name, fps, cfg)
        except (SinkError, OSError) as exc:
            raise CliError(f"{args.source}: {exc}", EXIT_BAD_INPUT) from None
        on_frame, done = _progress(source, args.quiet)
        try:
            runner = StreamRunner(model, cfg, overlay, labels, color, show=args.show, scales=scales,
                                  no_history=args.no_history, device=args.device,
                                  short_side=args.short_side or model_short_side(cfg),
                                  video_name=video_name, on_frame=on_frame)
        except ValueError as exc:
            for w in (overlay, labels, color):
                if w is not None:
                    w.close()
            raise CliError(str(exc), EXIT_BAD_INPUT) from None
        try:
            summary = runner.run(source)
        finally:
            done()
    finally:
        source.close()

    print(summary.table())
    if args.json:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(summary.to_dict(), f, indent=2)
                f.write("\n")
        except OSError as exc:
            raise CliError(f"cannot write --json {args.json}: {exc}") from None
    if summary.frames == 0:
        cause = source.error or summary.error or "the source yielded no frames"
        raise CliError(f"{args.source}: nothing processed: {cause}", EXIT_BAD_INPUT)
    if overlay is not None:
        print(f"overlay video: {paths['overlay']} ({overlay.frames_written} frames)")
    if labels is not None:
        print(f"label PNGs: {paths['labels'] / video_name}")
    if color is not None:
        print(f"colour PNGs: {paths['color'] / video_name}")
    if summary.stopped_early:
        print(f"vidseg stream: partial: {summary.error}", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


def register(sub) -> None:
    p = sub.add_parser(
        "stream", help="segment a video file, frame folder, camera or URL causally; overlay mp4",
        description="Run the video model causally (one backbone pass per frame, the history "
                    "buffer carries the previous frames) and write an overlay mp4, optional "
                    "label / colour PNGs and a JSON summary. Exit 0: all frames processed; "
                    "3: stopped early (truncated file, lost camera, interrupt), output kept; "
                    "2: nothing processed or bad input.")
    p.add_argument("config", help="YAML file or packaged config name (`vidseg configs`)")
    p.add_argument("source", help="video file, frame folder, camera index (0) or URL (rtsp/http)")
    p.add_argument("--checkpoint", metavar="CKPT", help="trained checkpoint (.pth or run folder)")
    p.add_argument("--random-init", action="store_true",
                   help="run with random weights (smoke / speed tests only; warns loudly)")
    p.add_argument("--out", default="stream_out", metavar="DIR", help="output folder (default: stream_out)")
    p.add_argument("--show", action="store_true", help="live window when a display exists (q stops)")
    p.add_argument("--scales", metavar="S1,S2", help="inference scales, e.g. 0.5,1.0 (needs HMSA)")
    p.add_argument("--no-history", action="store_true", help="per-frame image model (no history buffer)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--stride", type=int, default=1, metavar="N", help="process every N-th frame")
    p.add_argument("--short-side", type=int, metavar="N",
                   help="model input short side (default: stream.short_side or data.eval_short_side)")
    p.add_argument("--labels", action="store_true", help="also write VSPW-format label PNGs")
    p.add_argument("--color", action="store_true", help="also write colour overlay PNGs")
    p.add_argument("--no-overlay", action="store_true", help="do not write the overlay mp4")
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch intra-op threads (default: CPU cores - 1, leaving a core to the "
                        "decode and encode threads)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="config overrides, e.g. --set model.backbone.pretrained=false")
    p.set_defaults(func=run)
