"""`vidseg train CONFIG [--set k=v ...] [--resume [CKPT] | --overwrite] [--work-dir DIR]`.

The config (with overrides) is loaded and checked before anything else happens, so a typo
fails in a second without creating a run directory. Under torchrun the same command trains with
DistributedDataParallel.

Exit codes (docs/RELIABILITY.md): 0 trained to `train.iters`; 2 nothing done: a bad config,
argument, data root, checkpoint or work directory (one that already holds a run, without
`--resume` / `--overwrite`); 3 stopped early with the checkpoints kept: SIGINT / SIGTERM after
writing a checkpoint at the current iteration (`--resume` continues it), a NaN / Inf loss, a full
disk; 130 a second Ctrl-C during the stop (no new checkpoint).
"""

from __future__ import annotations

import argparse

from vidseg.cli import CliError


def run(args: argparse.Namespace) -> int:
    from vidseg.cli import check_output_dir
    from vidseg.config import load_config

    cfg = load_config(args.config, args.set or [])
    check_output_dir(args.work_dir or cfg.work_dir, "--work-dir" if args.work_dir else "work_dir")

    from vidseg.engine.train import EXIT_STOPPED, train

    try:
        result = train(cfg, resume=args.resume, work_dir=args.work_dir, overwrite=args.overwrite)
    except FileNotFoundError as exc:  # the data root or a split file
        raise CliError(str(exc)) from None
    import os
    import sys

    main_rank = os.environ.get("RANK", "0") == "0"
    if result.get("stopped"):
        if main_rank:
            print(
                f"vidseg train: stopped by {result['stopped']} after iteration "
                f"{result['iterations']}; checkpoint {result['checkpoint']}; continue with "
                f"--resume",
                file=sys.stderr,
            )
        return EXIT_STOPPED
    if main_rank:
        best = result.get("best_miou")
        best_text = f"; best val mIoU {best:.4f}" if best is not None else ""
        print(
            f"trained {result['iterations']} iterations; last loss {result['loss']:.4f}; "
            f"checkpoint {result['checkpoint']}{best_text}"
        )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a config (single process, or DDP under torchrun)",
        description="Train a segmentation model on VSPW clips. Run under `torchrun --nproc_per_node=N "
        "-m vidseg train ...` for multi-GPU (or multi-process CPU) training. Writes "
        "config.yaml, train.log, scalars.jsonl and iter_*.pth / best.pth / latest to the "
        "work directory. A work directory that already holds a run is refused unless "
        "--resume or --overwrite is given. Ctrl-C / SIGTERM finish the current "
        "iteration, write a checkpoint and exit 3. Exit codes: 0 done; 2 bad config, "
        "data, checkpoint or work directory (nothing done); 3 stopped early, "
        "checkpoints kept (Ctrl-C, NaN loss, full disk).",
    )
    p.add_argument(
        "config",
        help="YAML file or packaged config name (`vidseg configs`), "
        "e.g. vspw/upernet_video_mcibipp_r50",
    )
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        help="override config keys, e.g. --set train.iters=100 data.root=/data/VSPW_480p",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CKPT",
        help="resume training: without a value from the work directory's `latest`, "
        "else from this checkpoint file or run directory",
    )
    how.add_argument(
        "--overwrite",
        action="store_true",
        help="the work directory holds an earlier run: move it to "
        "<work_dir>.old-<timestamp> (nothing is deleted) and start fresh",
    )
    p.add_argument(
        "--work-dir", default=None, help="run directory (default: work_dir of the config)"
    )
    p.set_defaults(func=run)
