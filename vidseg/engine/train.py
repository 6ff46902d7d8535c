"""The training loop: SGD + poly schedule, AMP on CUDA, DDP under torchrun, exact resume.

Reproducibility: every source of randomness the loop touches (Python, NumPy, torch CPU/CUDA and
the loader's private generator) is saved in each checkpoint together with the sampler position,
and the data samples are a function of `(seed, epoch, index)`; so on the CPU a run resumed from
any checkpoint ends with bit-identical weights to the uninterrupted run. Validation happens
before the checkpoint of the same iteration, so its RNG use is part of the saved state.

Nothing is lost: a run directory that already holds a run is refused unless the call resumes it
or asks to move it aside (`overwrite`), and SIGINT / SIGTERM finish the current iteration, write
a checkpoint at it and return with `stopped` set (`vidseg train` then exits with
`EXIT_STOPPED`).
"""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from vidseg.engine import checkpoint as ckpt_io
from vidseg.engine import distributed as du
from vidseg.engine.input_size import check_input_size, network_stride
from vidseg.engine.logger import RunLogger, lr_by_group
from vidseg.engine.schedule import PolyLR, describe_lrs, param_groups
from vidseg.errors import EXIT_PARTIAL, VidsegError

# `vidseg train` exit code for a run stopped by SIGINT / SIGTERM after writing its checkpoint
# (the same "stopped early, output kept" code as `vidseg stream`)
EXIT_STOPPED = 3

# files whose presence means a directory already holds a training run
RUN_MARKERS = ("latest", "best.pth", "config.yaml", "train.log", "scalars.jsonl")


class NonFiniteLossError(VidsegError, RuntimeError):
    """The loss became NaN or Inf; the run stopped without writing a checkpoint (the earlier
    checkpoints are kept: exit code 3)."""

    code = EXIT_PARTIAL


class RunDirExistsError(VidsegError, FileExistsError):
    """The run directory already holds a run and neither resume nor overwrite was asked for."""


def run_dir_contents(work_dir: Path) -> list[str]:
    """Names in `work_dir` that belong to a training run (empty when there is none)."""
    if not work_dir.is_dir():
        return []
    found = [n for n in RUN_MARKERS if (work_dir / n).exists()]
    found += sorted(p.name for p in work_dir.glob("iter_*.pth"))
    return found


def move_aside(work_dir: Path) -> Path:
    """Rename `work_dir` to `<work_dir>.old-<YYYYmmdd-HHMMSS>[-N]` (never deletes); returns it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = work_dir.with_name(f"{work_dir.name}.old-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = work_dir.with_name(f"{work_dir.name}.old-{stamp}-{n}")
    os.rename(work_dir, dest)
    return dest


def _prepare_run_dir(work_dir: Path, resume, overwrite: bool, info) -> Path | None:
    """Refuse or move aside an existing run; rank 0 decides, every rank gets the same outcome.

    Returns where the old run was moved (overwrite), else None.
    Raises:
        RunDirExistsError: `work_dir` holds a run and neither `resume` nor `overwrite` was given.
    """
    outcome: tuple[str, str] | None = None
    if info.is_main and resume is None:
        found = run_dir_contents(work_dir)
        if found and not overwrite:
            shown = ", ".join(found[:4]) + (f", ... (+{len(found) - 4})" if len(found) > 4 else "")
            outcome = (
                "error",
                f"{work_dir} already holds a training run ({shown}); pass --resume "
                f"to continue it or --overwrite to move it aside and start fresh "
                f"(from Python: resume='latest' or overwrite=True)",
            )
        elif found:
            try:
                outcome = ("moved", str(move_aside(work_dir)))
            except OSError as exc:
                outcome = ("error", f"--overwrite: cannot move {work_dir} aside: {exc}")
    outcome = du.broadcast_object(outcome)
    if outcome is None:
        return None
    if outcome[0] == "error":
        raise RunDirExistsError(outcome[1])
    return Path(outcome[1])


class _StopRequest:
    """SIGINT / SIGTERM handlers that only record the signal; the loop stops after the current
    iteration. A second signal raises KeyboardInterrupt at once (no checkpoint). Installed only
    in the main thread (Python delivers signals there); the previous handlers come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def _build_model(cfg):
    from vidseg.engine.inference import build_checked

    return build_checked(cfg, "the config")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _set_determinism(cfg, device: torch.device) -> None:
    if cfg.train.deterministic:
        # cuBLAS needs this before its first use to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _memory_stats(model) -> dict:
    """Scalar summaries of the class memory, from the model's `memory_stats()` when it has one."""
    out = {}
    stats_fn = getattr(model, "memory_stats", None)
    for k, v in (stats_fn() if callable(stats_fn) else {}).items():
        if torch.is_tensor(v):
            v = v.float().mean().item() if v.numel() else float("nan")
        if isinstance(v, (int, float)):
            out[k if k.startswith("memory") else f"memory_{k}"] = float(v)
    return out


def _validate(model, cfg, work_dir: Path, iteration: int) -> dict:
    """Score the val split; the model is in eval mode for it and back in training mode after."""
    from vidseg.engine.evaluate import evaluate

    model.eval()
    try:
        return evaluate(
            model,
            cfg,
            split=cfg.data.val_split,
            max_videos=cfg.train.val_videos or None,
            out_dir=str(work_dir / "val" / f"iter_{iteration:07d}"),
            progress=False,
        )
    finally:
        model.train()


def _find_unused(model) -> bool:
    # a model can declare that some parameters never receive a gradient in training (e.g. an
    # inference-only head); DDP then has to look for them every step
    return bool(getattr(model, "ddp_find_unused_parameters", False))


def train(
    cfg,
    resume: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    model_factory=None,
    dataset=None,
    overwrite: bool = False,
) -> dict:
    """Train `cfg` for `cfg.train.iters` iterations.

    Args:
        cfg: resolved `Config`.
        resume: None (fresh run), "latest" (the run directory's `latest`), a run directory or a
            checkpoint file.
        work_dir: run directory (default `cfg.work_dir`).
        model_factory: callable `cfg -> nn.Module` replacing `build_model` (tests, custom models).
        dataset: training dataset with `set_epoch` replacing the VSPW clips (tests).
        overwrite: when `work_dir` already holds a run (checkpoints, `latest`, `config.yaml`,
            `train.log` or `scalars.jsonl`) and `resume` is None, move it to
            `<work_dir>.old-<timestamp>` and start fresh; without it such a directory is refused.
    Returns:
        dict with `iterations` (completed), `work_dir`, `checkpoint` (last written), `loss` (last
        logged total), `best_miou`, `val` (last validation metrics or None), `stopped` (None, or
        "SIGINT" / "SIGTERM" when a signal stopped the run after checkpointing the current
        iteration) and `moved_to` (where `overwrite` moved the previous run, or None).
    Raises:
        RunDirExistsError: `work_dir` holds a run and neither `resume` nor `overwrite` was given
            (raised before any work).
        ValueError: both `resume` and `overwrite`.
        NonFiniteLossError: the loss became NaN/Inf (message names the iteration).
        FileNotFoundError: data root missing or not VSPW-shaped.
        CheckpointError: unreadable / mismatched checkpoint, or out of disk space.
    """
    from vidseg.config import config_to_dict, save_config

    if resume is not None and overwrite:
        raise ValueError(
            "resume and overwrite exclude each other: resume continues the run in the "
            "directory, overwrite moves it aside"
        )
    info = du.init_distributed()
    try:
        return _train(
            cfg,
            info,
            resume,
            work_dir,
            model_factory,
            dataset,
            config_to_dict,
            save_config,
            overwrite,
        )
    finally:
        du.cleanup()


def _init_weights(model, spec: str) -> None:
    """Start training from trained weights (`train.init_from`): a vidseg checkpoint, the authors'
    checkpoint or a zoo name; an image model's fusion is widened exactly for a video model."""
    from vidseg.engine.inference import adapt_state, read_weights

    state, _ = read_weights(spec)
    ckpt_io.load_model_state(
        model, adapt_state(state, model, str(spec)), source=f"init_from {spec}"
    )


def _train(
    cfg,
    info,
    resume,
    work_dir,
    model_factory,
    dataset,
    config_to_dict,
    save_config,
    overwrite=False,
) -> dict:
    import dataclasses

    tc = cfg.train
    work_dir = Path(work_dir or cfg.work_dir)
    cfg = dataclasses.replace(cfg, work_dir=str(work_dir))
    moved_to = _prepare_run_dir(work_dir, resume, overwrite, info)  # before any work
    device = info.device
    _set_determinism(cfg, device)
    # per-rank seeds: dropout masks differ across ranks as they would with separate batches
    _seed_everything(tc.seed + info.rank)

    if dataset is None:  # a bad data root fails here, before any model or run directory exists
        from vidseg.engine.data import build_train_dataset

        dataset = build_train_dataset(cfg)
    ckpt = None
    if resume is not None:
        path = ckpt_io.resolve_resume(resume, work_dir)
        ckpt = ckpt_io.load_checkpoint(path)
        if not isinstance(ckpt, dict) or "model" not in ckpt or "iteration" not in ckpt:
            raise ckpt_io.CheckpointError(f"{path}: not a vidseg training checkpoint")

    model = (model_factory or _build_model)(cfg)
    # a crop the network cannot take fails now, not in the first iteration
    low = cfg.model.hmsa.train_low_scale if cfg.model.hmsa.enabled else 1.0
    check_input_size(cfg.data.crop_size, network_stride(model), (low, 1.0), what="data.crop_size")
    if ckpt is not None:
        ckpt_io.load_model_state(model, ckpt["model"], source=f"checkpoint {path}")
    elif tc.init_from:
        _init_weights(model, tc.init_from)
    sync_bn = bool(tc.sync_bn and du.sync_bn_possible(device))
    model = du.convert_sync_bn(model, sync_bn, device).to(device)
    if cfg.model.backbone.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    raw = model
    use_amp = bool(tc.amp and device.type == "cuda")
    groups = param_groups(raw, tc.lr, tc.backbone_lr_mult)
    optimizer = torch.optim.SGD(
        groups, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay
    )
    scheduler = PolyLR(optimizer, tc.lr, tc.iters, tc.poly_power, tc.warmup_iters, tc.warmup_ratio)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_iter, best_miou = 0, -1.0
    start_batch = 0
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as exc:
            raise ckpt_io.CheckpointError(
                f"checkpoint {path}: optimizer state does not fit this "
                f"model's parameter groups: {exc}"
            ) from exc
        # load_state_dict restores each group's saved settings: the multipliers come from the
        # config (a checkpoint written with other multipliers resumes at the config's rates)
        for group, fresh in zip(optimizer.param_groups, groups):
            group["lr_mult"] = fresh["lr_mult"]
        scheduler.load_state_dict(ckpt.get("scheduler", {}))
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_iter = int(ckpt["iteration"])
        best_miou = float(ckpt.get("best_miou", -1.0))
        start_batch = int(ckpt.get("sampler", {}).get("batches", start_iter))
    if start_iter > tc.iters:
        raise ckpt_io.CheckpointError(
            f"checkpoint is at iteration {start_iter} but train.iters={tc.iters}"
        )

    # without SyncBN (CPU / gloo) rank 0's BN statistics are broadcast before each forward so
    # that every rank holds the same model
    model = du.wrap_ddp(
        raw, info, find_unused_parameters=_find_unused(raw), broadcast_buffers=not sync_bn
    )
    loader, sampler = build_train_loader_for(cfg, info, start_batch, dataset)
    loader_gen = loader.generator
    if ckpt is not None:
        states = ckpt.get("rng_per_rank") or [ckpt.get("rng")]
        if len(states) == info.world_size and states[info.rank] is not None:
            ckpt_io.restore_rng_state(states[info.rank], {"loader": loader_gen})
        # else: a different number of processes; the run continues but is not bit-identical
    del ckpt

    if info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, work_dir / "config.yaml")
    du.barrier()
    log = RunLogger(work_dir, tc.iters, start_iter, enabled=info.is_main)
    if tc.sync_bn and info.distributed and not sync_bn:
        log.warning(
            "train.sync_bn: SyncBatchNorm needs CUDA; on the CPU rank 0's BatchNorm "
            "statistics are broadcast instead"
        )
    log.info(
        f"{'resuming at' if start_iter else 'starting'} iteration {start_iter}/{tc.iters} on "
        f"{device} x{info.world_size}, amp={use_amp}, batch {cfg.data.batch_size} "
        f"({sampler.per_rank}/process), work_dir={work_dir}"
    )
    scheduler.step(start_iter)
    log.info(describe_lrs(optimizer) + (f" at iteration {start_iter}" if start_iter else ""))
    if log.dropped_rows:
        log.info(
            f"scalars.jsonl: dropped {log.dropped_rows} rows logged after iteration "
            f"{start_iter} by the interrupted run (they are logged again)"
        )
    if moved_to is not None:
        log.info(f"--overwrite: the previous run in {work_dir} was moved to {moved_to}")
    if resume is None and tc.init_from:
        log.info(f"weights initialised from train.init_from={tc.init_from}")
    cfg_dict = config_to_dict(cfg)
    revision = ckpt_io.git_revision()

    def save(iteration: int, is_best: bool) -> Path | None:
        if not sync_bn:  # the checkpoint holds rank 0's statistics: make every rank hold them
            du.broadcast_buffers(raw)
        rng = ckpt_io.capture_rng_state({"loader": loader_gen})
        rng_all = du.all_gather_object(rng)
        if not info.is_main:
            return None
        import vidseg

        state = {
            "model": raw.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if use_amp else {},
            "iteration": iteration,
            "rng": rng,
            "rng_per_rank": rng_all,
            "sampler": sampler.position(iteration),
            "world_size": info.world_size,
            "best_miou": best_miou,
            "config": cfg_dict,
            "git_revision": revision,
            "vidseg_version": vidseg.__version__,
        }
        return ckpt_io.save_checkpoint(
            work_dir, state, iteration, keep=tc.keep_checkpoints, is_best=is_best
        )

    model.train()
    it_iter = iter(loader)
    last_path = ckpt_io.find_latest(work_dir) if info.is_main else None
    last_loss, last_val = float("nan"), None
    window = {"data": 0.0, "iter": 0.0, "n": 0, "samples": 0, "substituted": 0}
    losses_acc: dict[str, float] = {}
    stop = _StopRequest()
    done, stopped = start_iter, None
    with stop:
        for it in range(start_iter, tc.iters):
            t0 = time.perf_counter()
            batch = next(it_iter)
            frames = batch["frames"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            t_data = time.perf_counter() - t0
            lr = scheduler.step(it)
            if hasattr(raw, "set_progress"):
                raw.set_progress(it / tc.iters)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                terms = model(frames, labels)
            loss = sum(terms.values())
            bad = not bool(torch.isfinite(loss.detach()).item())
            if du.any_true(bad, device):
                values = {k: float(v.detach().float().item()) for k, v in terms.items()}
                log.close()
                raise NonFiniteLossError(
                    f"loss is not finite at iteration {it + 1} (terms: {values}); stopped without "
                    f"saving; last good checkpoint: {last_path or 'none yet'}"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tc.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(raw.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            done = it + 1

            for k, v in terms.items():
                losses_acc[k] = losses_acc.get(k, 0.0) + float(v.detach().float().item())
            losses_acc["loss"] = losses_acc.get("loss", 0.0) + float(loss.detach().float().item())
            window["data"] += t_data
            window["iter"] += time.perf_counter() - t0
            window["n"] += 1
            window["samples"] += frames.shape[0] * info.world_size
            window["substituted"] += int(torch.as_tensor(batch.get("substituted", 0)).sum())
            log.step(1, {"loss": f"{float(loss.detach()):.3f}", "lr": f"{lr:.2e}"})
            if done % max(tc.log_interval, 1) == 0 or done == tc.iters:
                n = window["n"]
                means = du.reduce_scalars({k: v / n for k, v in losses_acc.items()}, device)
                last_loss = means["loss"]
                row = {
                    **means,
                    "lr": lr,
                    **lr_by_group(optimizer),
                    **_memory_stats(raw),
                    "iter_time": window["iter"] / n,
                    "data_time": window["data"] / n,
                    "samples_per_s": window["samples"] / max(window["iter"], 1e-9),
                    "substituted": window["substituted"],
                }
                log.scalars(done, row)
                log.info(
                    f"iter {done}/{tc.iters} "
                    + " ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float))
                )
                window = {"data": 0.0, "iter": 0.0, "n": 0, "samples": 0, "substituted": 0}
                losses_acc = {}

            is_best = False
            if tc.validate and (
                (tc.val_interval and done % tc.val_interval == 0) or done == tc.iters
            ):
                try:  # every rank: the evaluator splits the videos across ranks and merges the scores
                    metrics = _validate(raw, cfg, work_dir, done)
                except Exception as exc:
                    # keep the trained iterations: checkpoint first, then report the evaluator's error
                    if not info.distributed:  # (a rank-0-only save would wait for the other ranks)
                        log.warning(
                            f"validation failed at iteration {done}; checkpoint written first"
                        )
                        save(done, False)
                        if isinstance(exc, VidsegError):  # e.g. a bad val mask: stopped, work kept
                            exc.code = EXIT_PARTIAL
                    log.close()
                    raise
                metrics = du.broadcast_object(metrics)
                if metrics is not None:
                    last_val = metrics
                    miou = float(metrics.get("miou", float("nan")))
                    log.scalars(
                        done,
                        {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                        "val",
                    )
                    log.info(
                        f"validation at iter {done}: "
                        + ", ".join(
                            f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)
                        )
                    )
                    if math.isfinite(miou) and miou > best_miou:
                        best_miou, is_best = miou, True
            saved = done % max(tc.ckpt_interval, 1) == 0 or done == tc.iters or is_best
            if saved:
                path = save(done, is_best)
                if path is not None:
                    last_path = path
                    log.info(f"checkpoint {path}{' (best)' if is_best else ''}")
            # every rank stops at the same iteration, even when only one received the signal
            if done < tc.iters and du.any_true(stop.signum is not None, device):
                stopped = stop.name or "a signal on another rank"
                if not saved:
                    path = save(done, False)
                    if path is not None:
                        last_path = path
                log.info(
                    f"{stopped} received: stopped after iteration {done}/{tc.iters}; "
                    f"checkpoint {last_path}; continue with --resume"
                )
                break

    if stopped is None:
        log.info(f"finished {tc.iters} iterations; last checkpoint {last_path}")
    log.close()
    return {
        "iterations": done,
        "work_dir": str(work_dir),
        "checkpoint": str(last_path) if last_path else None,
        "loss": last_loss,
        "best_miou": best_miou if best_miou >= 0 else None,
        "val": last_val,
        "stopped": stopped,
        "moved_to": str(moved_to) if moved_to else None,
    }


def build_train_loader_for(cfg, info, start_batch: int, dataset):
    from vidseg.engine.data import build_train_loader

    return build_train_loader(
        cfg, info.rank, info.world_size, start_batch=start_batch, dataset=dataset
    )
