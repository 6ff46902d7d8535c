"""`vidseg stream`: run the video model causally on a file, a frame folder, a camera or a URL.

Exit codes: 0 every frame processed; 3 partially processed (truncated file, lost camera,
interrupt, a failed write such as a full disk; the outputs keep what was written) or the --json
file could not be written (the summary then goes to stderr); 2 nothing processed or written, or
bad input (one-line error naming the source and the cause).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from vidseg.commands import stream_io

EXIT_OK, EXIT_BAD_INPUT, EXIT_PARTIAL = 0, 2, 3
log = logging.getLogger("vidseg.stream")


def parse_scales(text: str | None):
    """'0.5,1.0' -> (0.5, 1.0); None -> None."""
    if text is None:
        return None
    from vidseg.cli import CliError

    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        scales = ()
    if not scales or not all(0 < s < float("inf") for s in scales):
        raise CliError(
            f"--scales: expected comma-separated positive numbers such as 0.5,1.0, got {text!r}"
        )
    return scales


def _backend(args: argparse.Namespace) -> str:
    """The backend to run: `--backend`, else onnxruntime with `--onnx`, else torch."""
    from vidseg.cli import CliError

    if args.onnx is not None:
        if args.backend == "torch":
            raise CliError("--onnx FILE runs with --backend onnxruntime, not --backend torch")
        if args.checkpoint is not None or args.random_init:
            raise CliError(
                f"--onnx {args.onnx} holds the weights: leave out --checkpoint / --random-init"
            )
        if not os.path.isfile(args.onnx):
            raise CliError(f"--onnx {args.onnx}: no such file")
        return "onnxruntime"
    return args.backend or "torch"


def stream_device(spec: str | None, backend: str) -> str:
    """`--device`, else (torch backend) the GPU when a test convolution runs on it, else the CPU."""
    if spec is not None:
        return spec
    if backend != "torch":
        return "cpu"
    from vidseg.io.selftest import cuda_device

    return cuda_device().choice


def run(args: argparse.Namespace) -> int:
    from vidseg.cli import CliError
    from vidseg.engine.stream import StreamRunner, model_short_side
    from vidseg.engine.stream_outputs import StreamOutputs, class_names_for
    from vidseg.io.sinks import SinkError
    from vidseg.io.sources import SourceError, open_source

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    scales = parse_scales(args.scales)
    backend = _backend(args)
    if backend == "onnxruntime" and (args.precision != "fp32" or args.compile):
        raise CliError("--precision and --compile apply to --backend torch (onnxruntime: fp32)")
    if args.onnx is None and args.checkpoint is None and not args.random_init:
        raise CliError(
            "no checkpoint given: pass --checkpoint CKPT, or --random-init for a smoke test"
        )
    if args.checkpoint is not None and args.random_init:
        raise CliError("--checkpoint and --random-init exclude each other")
    from vidseg.cli import check_output_dir, check_output_file
    from vidseg.engine.inference import check_device

    args.device = stream_device(args.device, backend)
    check_device(args.device)
    check_output_dir(args.out, "--out")
    # a run refused at its first frame (size, --scales) leaves no empty output folders behind
    new_out = not os.path.exists(args.out)
    if args.json:
        check_output_file(args.json, "--json")
    if args.timeout is not None and not 0 < args.timeout < float("inf"):
        raise CliError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")

    import torch

    from vidseg.engine.stream import default_threads

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    if backend == "onnxruntime":  # before any work: onnxruntime missing, settings it cannot run
        from vidseg.config import load_config
        from vidseg.engine.onnx_stream import check_onnx_settings, import_onnxruntime

        import_onnxruntime()
        onnx_cfg = load_config(args.config, args.overrides or ())
        check_onnx_settings(onnx_cfg, scales, args.device)
    show = args.show and stream_io.window_or_notice()
    live = stream_io.open_live_view(args.serve, args.source) if args.serve else None
    # Cheap checks first: a bad source or output folder fails before the model is built.
    try:
        # --timeout unset: open_source's default (vidseg.io.camera.DEFAULT_TIMEOUT_S)
        timeout = {} if args.timeout is None else {"timeout_s": args.timeout}
        source = open_source(args.source, stride=args.stride, max_frames=args.max_frames, **timeout)
    except SourceError as exc:
        if live is not None:
            live.close()
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    try:
        from vidseg.engine.inference import load_inference_model
        from vidseg.engine.input_size import check_input_size, network_stride

        if args.random_init:
            print(
                "WARNING: --random-init: the model has RANDOM WEIGHTS, its predictions are "
                "meaningless (smoke test / speed test only)",
                file=sys.stderr,
            )
        if args.onnx is not None:  # the weights are in the file
            cfg, model = onnx_cfg, None
        else:
            cfg, model = load_inference_model(
                args.config,
                args.checkpoint,
                args.overrides or (),
                random_init=args.random_init,
                device=args.device,
                # the torch backend runs the inference rewrites (BatchNorms folded; on a CPU
                # channels-last and Winograd convolutions); the ONNX export takes the model as built
                optimize=backend == "torch",
            )
            if args.compile:
                from vidseg.models.fuse import compile_modules

                compile_modules(model)
        short_side = args.short_side or model_short_side(cfg)
        stepper = None
        if backend == "onnxruntime":
            from vidseg.engine.onnx_stream import onnx_stepper

            stepper = onnx_stepper(cfg, model, args.onnx, threads, short_side, args.no_history)
        if short_side is not None and model is not None:  # the long side is checked per frame
            every = [t * m for t in cfg.eval.scales for m in (scales or model.scales)]
            check_input_size(
                (short_side, short_side),
                network_stride(model),
                every,
                what=f"model input short side {short_side}",
            )
        names = class_names_for(cfg)
        if live is not None:
            live.class_names, live.alpha = names, cfg.stream.alpha
        try:
            outputs = StreamOutputs.for_source(
                args.out,
                source,
                cfg,
                names,
                overlay=not args.no_overlay,
                labels=args.labels,
                color=args.color,
            )
        except (SinkError, OSError) as exc:
            raise CliError(f"{args.source}: {exc}", EXIT_BAD_INPUT) from None
        on_frame, done = stream_io.progress(source, args.quiet)
        try:
            runner = StreamRunner(
                model,
                cfg,
                show=show,
                scales=scales,
                no_history=args.no_history,
                device=args.device,
                short_side=short_side,
                on_frame=on_frame,
                live_view=live,
                outputs=outputs,
                stepper=stepper,
                precision=args.precision,
            )
        except ValueError as exc:
            outputs.close()
            raise CliError(str(exc), EXIT_BAD_INPUT) from None
        try:
            summary = runner.run(source)
        finally:
            done()
    except BaseException:
        if new_out:
            stream_io.remove_empty_folders(args.out)
        raise
    finally:
        source.close()
        if live is not None:
            live.close()

    print(summary.table())
    json_written = stream_io.write_json(args.json, summary) if args.json else True
    nothing = summary.frames_written and not any(summary.frames_written.values())
    if new_out and (summary.frames == 0 or nothing):
        stream_io.remove_empty_folders(args.out)
    if summary.frames == 0:
        cause = source.error or summary.error or "the source yielded no frames"
        raise CliError(f"{args.source}: nothing processed: {cause}", EXIT_BAD_INPUT)
    if nothing:
        cause = summary.error or "no output holds a frame"
        raise CliError(f"{args.source}: nothing written: {cause}", EXIT_BAD_INPUT)
    paths, video_name = outputs.paths, outputs.video_name
    if outputs.overlay is not None and outputs.overlay.frames_kept:
        print(f"overlay video: {paths['overlay']} ({outputs.overlay.frames_kept} frames)")
    if outputs.labels is not None:
        print(f"label PNGs: {paths['labels'] / video_name}")
    if outputs.color is not None:
        print(f"colour PNGs: {paths['color'] / video_name}")
    if summary.stopped_early:
        print(f"vidseg stream: partial: {summary.error}", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK if json_written else EXIT_PARTIAL


def register(sub) -> None:
    from vidseg.cli import int_arg, threads_arg
    from vidseg.engine.input_size import MAX_SIDE

    p = sub.add_parser(
        "stream",
        help="segment a video file, frame folder, camera or URL causally; overlay mp4",
        description="Run the video model causally (one backbone pass per frame, the history "
        "buffer carries the previous frames) and write an overlay mp4, optional "
        "label / colour PNGs and a JSON summary. Exit 0: all frames processed; "
        "3: stopped early (truncated file, lost camera, interrupt, full disk), "
        "output kept; 2: nothing processed or written, or bad input. The overlay "
        "mp4 is fragmented: a killed run leaves it playable up to its last flushed "
        "fragment (1 s of video).",
    )
    p.add_argument("config", help="YAML file or packaged config name (`vidseg configs`)")
    p.add_argument("source", help="video file, frame folder, camera index (0) or URL (rtsp/http)")
    p.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="trained checkpoint (.pth or run folder); not with --onnx",
    )
    p.add_argument(
        "--random-init",
        action="store_true",
        help="run with random weights (smoke / speed tests only; warns loudly)",
    )
    p.add_argument(
        "--out", default="stream_out", metavar="DIR", help="output folder (default: stream_out)"
    )
    p.add_argument(
        "--show",
        action="store_true",
        help="live window with the overlay and legend, FPS in its title; q, Esc or "
        "closing it stops the run (exit 3, outputs kept). Without a display: one "
        "line saying so, and the run goes on without the window",
    )
    p.add_argument(
        "--serve",
        metavar="HOST:PORT",
        help="live view in a browser: a page at http://HOST:PORT/ with the overlay "
        "(MJPEG), FPS, class legend and a Stop button (exit 3, outputs kept); "
        "HOST defaults to 127.0.0.1 (`--serve 8000`), port 0 picks a free one",
    )
    p.add_argument("--scales", metavar="S1,S2", help="inference scales, e.g. 0.5,1.0 (needs HMSA)")
    p.add_argument(
        "--no-history", action="store_true", help="per-frame image model (no history buffer)"
    )
    p.add_argument("--max-frames", type=int_arg(1), metavar="N", help="stop after N frames")
    p.add_argument(
        "--stride", type=int_arg(1), default=1, metavar="N", help="process every N-th frame"
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="connect and read timeout of a URL or /dev/video source (default: 5); "
        "a stream silent for longer is reconnected, then ends (exit 3)",
    )
    p.add_argument(
        "--short-side",
        type=int_arg(1, MAX_SIDE, "the input limit"),
        metavar="N",
        help="model input short side (default: stream.short_side or "
        "data.eval_short_side); at least the network stride, and the frame "
        f"scaled to it at most {MAX_SIDE} px long (docs/RELIABILITY.md)",
    )
    p.add_argument("--labels", action="store_true", help="also write VSPW-format label PNGs")
    p.add_argument("--color", action="store_true", help="also write colour overlay PNGs")
    p.add_argument("--no-overlay", action="store_true", help="do not write the overlay mp4")
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    p.add_argument(
        "--device",
        default=None,
        help="torch device: cpu, cuda, cuda:1, ... (default: cuda when a test convolution runs "
        "on the GPU and the backend is torch, else cpu; `vidseg info` shows the choice)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="run the model under autocast in bf16 / fp16 (torch backend; for GPUs, where with "
        "--compile it is the fastest setting: docs/BENCHMARKS.md, GPU); default fp32",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the backbone and heads (torch backend; the first frame of each "
        "input size waits for the compilation, tens of seconds)",
    )
    p.add_argument(
        "--threads",
        type=threads_arg(),
        metavar="N",
        help="intra-op threads of torch and of onnxruntime (default: CPU cores - 1, leaving "
        "a core to the decode and encode threads; at most 4 x the cores)",
    )
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        help="what runs the model (default: torch; onnxruntime when --onnx is given). "
        "onnxruntime (pip install -e '.[onnx]') runs the streaming step exported to ONNX, "
        "on the CPU, with the same outputs and labels (up to float rounding at class "
        "boundaries); it runs the whole frame at scale 1.0 without flip (eval.mode whole, "
        "one scale): other protocols need torch. The step is exported at the first frame "
        "of each model input size into the vidseg cache ($VIDSEG_CACHE/onnx, default "
        "~/.cache/vidseg/onnx), one file per checkpoint, config and size, and reused by "
        "later runs",
    )
    p.add_argument(
        "--onnx",
        metavar="FILE",
        help="run this exported step (`vidseg export`) with onnxruntime instead of exporting "
        "one; it holds the weights (no --checkpoint), the config gives the pre-processing, "
        "and its input size must be the model input size of the frames (e.g. 360 640 for "
        "16:9 frames at --short-side 360)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        help="config overrides, e.g. --set model.backbone.pretrained=false",
    )
    p.set_defaults(func=run)
