"""`vidseg eval`: causal evaluation of a checkpoint on a VSPW split (mIoU, acc, TC, mVC)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidseg.cli import CliError, int_arg
from vidseg.errors import EXIT_PARTIAL, VidsegError


def run(args: argparse.Namespace) -> int:
    from vidseg.engine import distributed as du

    # under torchrun the videos are split across every process of every node (each on
    # cuda:LOCAL_RANK with CUDA) and global rank 0 alone writes metrics.json and prints
    if args.device:
        from vidseg.engine.inference import check_device

        check_device(args.device)  # before a process group or a model exists
    info = du.init_distributed(device_type=args.device.split(":")[0] if args.device else None)
    try:
        return _evaluate(
            args, str(info.device) if info.distributed else (args.device or "cpu"), info.is_main
        )
    finally:
        du.cleanup()


def _evaluate(args: argparse.Namespace, device: str, is_main: bool) -> int:
    from vidseg.cli import check_output_dir, check_output_file
    from vidseg.config import load_config
    from vidseg.data.layouts import split_names
    from vidseg.engine.data import resolve_data_root
    from vidseg.engine.evaluate import evaluate
    from vidseg.engine.inference import load_inference_model
    from vidseg.metrics.report import format_table

    overrides = list(args.set or [])
    if args.tc_videos is not None:
        overrides.append(f"eval.tc_videos={args.tc_videos}")
    if args.no_tc:
        overrides.append("eval.tc=false")
    if args.checkpoint is not None and args.random_init:
        raise CliError("--checkpoint and --random-init exclude each other")
    # a bad config, output folder, data root or split fails before the checkpoint is read or
    # the model is built
    cfg = load_config(args.config, overrides)
    split = args.split or cfg.eval.split
    out_dir = check_output_dir(args.out or Path(cfg.work_dir) / f"eval_{split}", "--out")
    check_output_file(out_dir / "metrics.json", "--out")
    try:
        root = resolve_data_root(args.data or cfg.data.root, split, cfg.data.format)
        if not split_names(root, cfg.data.format, split):
            raise CliError(f"{root}: split {split} lists no videos; nothing to evaluate")
    except (ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    cfg, model = load_inference_model(
        args.config, args.checkpoint, overrides, random_init=args.random_init, device=device
    )
    try:
        result = evaluate(
            model,
            cfg,
            split=args.split,
            max_videos=args.max_videos,
            out_dir=out_dir,
            root=args.data,
            save_pred=not args.no_pred,
            save_color=args.color or cfg.eval.save_color,
            no_history=args.no_history,
        )
    except VidsegError:
        raise
    except (ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:  # e.g. a full disk: the predictions written so far stay
        raise CliError(
            f"cannot write {exc.filename or out_dir}: {exc.strerror or exc}", EXIT_PARTIAL
        ) from None
    if not is_main:
        return 0
    print(format_table(result, per_class=args.per_class))
    print(f"metrics: {out_dir / 'metrics.json'}")
    if not args.no_pred:
        print(f"predictions (VSPW format): {out_dir / 'pred'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint causally on a VSPW split",
        description="Run the model frame by frame (streaming step(), history cached) over every video "
        "of a split, write VSPW-format prediction PNGs and metrics.json "
        "(pixel_acc, mean_class_acc, miou, miou_all_classes, mvc8, mvc16, tc).",
    )
    p.add_argument(
        "config",
        help="YAML file or packaged config name (`vidseg configs`); the checkpoint must match it",
    )
    p.add_argument("--checkpoint", help="checkpoint .pth or a run directory (uses its 'latest')")
    p.add_argument("--data", help="dataset root (default: data.root of the config or $VSPW_ROOT)")
    p.add_argument("--split", help="split name (default: eval.split, 'val')")
    p.add_argument("--out", help="output directory (default: <work_dir>/eval_<split>)")
    p.add_argument(
        "--max-videos",
        type=int_arg(1),
        default=None,
        metavar="N",
        help="only the first N videos (default: all)",
    )
    p.add_argument(
        "--tc-videos",
        type=int_arg(0, note="0 = no TC"),
        default=None,
        metavar="N",
        help="TC on the first N videos (100 = official; default: all)",
    )
    p.add_argument("--no-tc", action="store_true", help="skip TC (no optical flow)")
    p.add_argument(
        "--no-history",
        action="store_true",
        help="ignore history: every frame is processed as the first frame of its video",
    )
    p.add_argument("--no-pred", action="store_true", help="do not write prediction PNGs")
    p.add_argument("--color", action="store_true", help="also write colour PNGs")
    p.add_argument("--per-class", action="store_true", help="print per-class IoU")
    p.add_argument(
        "--device",
        default=None,
        help="torch device (cpu, cuda, cuda:1; default cpu); under torchrun each process "
        "uses cuda:LOCAL_RANK (default when CUDA is available) or the CPU",
    )
    p.add_argument(
        "--random-init", action="store_true", help="no checkpoint: random weights (smoke test)"
    )
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=run)
