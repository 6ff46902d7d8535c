"""`vidseg demo`: the whole pipeline on a synthetic VSPW-format dataset, end to end, on a CPU.

synthetic data -> check -> train Video-MCIBI++ (small config) -> causal evaluation (metrics table)
-> stream a synthetic val video and a real video to overlay mp4s -> training curves (curves.png).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from vidseg.cli import CliError, int_arg

log = logging.getLogger("vidseg.demo")


def _section(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def _dataset(out: Path, seed: int):
    from vidseg.data.check import check_vspw
    from vidseg.data.synthetic import make_synthetic_vspw

    root = out / "data"
    if (root / "vidseg_synthetic.json").is_file():
        print(f"reusing {root} (delete it to regenerate)")
    else:
        summary = make_synthetic_vspw(root, seed=seed)
        print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, (dict, list))}))
    report = check_vspw(root)
    print(report.format() if hasattr(report, "format") else report)
    if not report.ok:
        raise CliError(f"the generated dataset at {root} failed its check")
    return root


def _stream(cfg, model, video: Path, out_mp4: Path) -> dict:
    import torch

    from vidseg.engine.stream import StreamRunner, class_names_for, default_threads
    from vidseg.engine.stream_outputs import StreamOutputs
    from vidseg.io.sinks import OverlayVideoWriter
    from vidseg.io.sources import open_source

    threads = torch.get_num_threads()
    torch.set_num_threads(default_threads())  # leave a core to decoding and H.264 encoding
    try:
        with open_source(str(video)) as source:
            writer = OverlayVideoWriter(
                out_mp4, fps=source.fps or 15, class_names=class_names_for(cfg), threaded=True
            )
            outputs = StreamOutputs("stream", overlay=writer)
            summary = StreamRunner(model, cfg, outputs=outputs).run(source)
    finally:
        torch.set_num_threads(threads)
    return summary.to_dict()


def _curves(run_dir: Path) -> str:
    """Draw `run_dir/curves.png`; returns its path, or why it was not drawn (no matplotlib)."""
    from vidseg.engine.plot import PlotError, plot_curves

    try:
        return str(plot_curves(run_dir).out)
    except PlotError as exc:
        return f"not drawn: {exc.one_line()}"


def run(args: argparse.Namespace) -> int:
    from vidseg.cli import check_output_dir
    from vidseg.config import load_config, save_config
    from vidseg.engine.evaluate import evaluate
    from vidseg.engine.train import train
    from vidseg.metrics.report import format_table

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    out = check_output_dir(args.out, "--out")
    # the config and every --set are checked before the dataset is generated
    overrides = [f"data.root={out / 'data'}", f"work_dir={out / 'run'}"] + list(args.set or [])
    if args.iters is not None:
        overrides.append(f"train.iters={args.iters}")
    cfg = load_config(args.config, overrides)
    out.mkdir(parents=True, exist_ok=True)

    _section("1/4 synthetic VSPW-format dataset")
    root = _dataset(out, args.seed)

    _section("2/4 training Video-MCIBI++ on the CPU")
    save_config(cfg, out / "demo_config.yaml")
    t0 = time.perf_counter()
    # a second demo run starts afresh: the previous run folder is moved aside, never deleted
    result = train(cfg, resume="latest" if args.resume else None, overwrite=not args.resume)
    if result.get("moved_to"):
        print(f"previous demo training run moved to {result['moved_to']}")
    train_s = time.perf_counter() - t0

    _section("3/4 causal evaluation on the synthetic val split")
    from vidseg.engine.inference import load_inference_model

    cfg, model = load_inference_model(out / "demo_config.yaml", out / "run")
    result = evaluate(model, cfg, out_dir=out / "eval", save_pred=True)
    print(format_table(result))

    _section("4/4 streaming to overlay videos")
    outputs = {}
    val_videos = sorted((root / "videos").glob("*.mp4"))
    if val_videos:
        outputs["synthetic"] = out / "stream_synthetic.mp4"
        s = _stream(cfg, model, val_videos[0], outputs["synthetic"])
        print(
            f"{val_videos[0].name}: {s['frames']} frames, {s['fps_end_to_end']:.1f} FPS end to end"
        )
    from vidseg.io.samples import sample_video

    real = sample_video("bigbuckbunny")
    if real is not None:
        outputs["real"] = out / "stream_bigbuckbunny.mp4"
        s = _stream(cfg, model, real, outputs["real"])
        print(
            f"{real.name}: {s['frames']} frames, {s['fps_end_to_end']:.1f} FPS end to end "
            "(a real video; the demo model only knows the synthetic classes)"
        )
    else:
        print("real sample video unavailable (offline): skipped")

    _section("done")
    print(f"dataset:      {root}")
    print(f"training run: {out / 'run'} (train.log, scalars.jsonl, checkpoints)")
    print(f"curves:       {_curves(out / 'run')}")
    print(f"metrics:      {out / 'eval' / 'metrics.json'}  (mIoU {100 * result['miou']:.1f} %)")
    print(f"predictions:  {out / 'eval' / 'pred'}")
    for name, path in outputs.items():
        print(f"overlay ({name}): {path}")
    print(f"total time:   {time.perf_counter() - start:.0f} s (training {train_s:.0f} s)")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on a synthetic dataset (CPU, a few minutes)",
        description="Generate a synthetic VSPW-format dataset, train the small Video-MCIBI++ config on "
        "it, evaluate it causally (mIoU, TC-DIS, mVC) and stream videos to overlay mp4s.",
    )
    p.add_argument("--out", default="outputs/demo", help="output directory (default outputs/demo)")
    p.add_argument(
        "--config",
        default="synthetic/demo",
        help="model/training config: YAML file or packaged name (default synthetic/demo)",
    )
    p.add_argument("--iters", type=int_arg(1), default=None, help="override train.iters")
    p.add_argument("--seed", type=int_arg(0), default=0, help="dataset seed")
    p.add_argument("--resume", action="store_true", help="resume an interrupted demo training run")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=run)
