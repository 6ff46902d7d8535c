"""The training loop: SGD + poly schedule, AMP on CUDA, DDP under torchrun, exact resume.

Reproducibility: every source of randomness the loop touches (Python, NumPy, torch CPU/CUDA and
the loader's private generator) is saved in each checkpoint together with the sampler position,
and the data samples are a function of `(seed, epoch, index)`; so on the CPU a run resumed from
any checkpoint ends with bit-identical weights to the uninterrupted run. Validation happens
before the checkpoint of the same iteration, so its RNG use is part of the saved state.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from vidseg.engine import checkpoint as ckpt_io
from vidseg.engine import distributed as du
from vidseg.engine.logger import RunLogger
from vidseg.engine.schedule import PolyLR, describe_lrs, param_groups


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the run stopped without writing a checkpoint."""


def _build_model(cfg):
    from vidseg.models.build import build_model

    return build_model(cfg)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
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
        return evaluate(model, cfg, split=cfg.data.val_split, max_videos=cfg.train.val_videos or None,
                        out_dir=str(work_dir / "val" / f"iter_{iteration:07d}"), progress=False)
    finally:
        model.train()


def _find_unused(model) -> bool:
    # a model can declare that some parameters never receive a gradient in training (e.g. an
    # inference-only head); DDP then has to look for them every step
    return bool(getattr(model, "ddp_find_unused_parameters", False))


def train(cfg, resume: str | os.PathLike | None = None, work_dir: str | os.PathLike | None = None,
          model_factory=None, dataset=None) -> dict:
    """Train `cfg` for `cfg.train.iters` iterations.

    Args:
        cfg: resolved `Config`.
        resume: None (fresh run), "latest" (the run directory's `latest`), a run directory or a
            checkpoint file.
        work_dir: run directory (default `cfg.work_dir`).
        model_factory: callable `cfg -> nn.Module` replacing `build_model` (tests, custom models).
        dataset: training dataset with `set_epoch` replacing the VSPW clips (tests).
    Returns:
        dict with `iterations`, `work_dir`, `checkpoint` (last written), `loss` (last logged
        total), `best_miou` and `val` (last validation metrics or None).
    Raises:
        NonFiniteLossError: the loss became NaN/Inf (message names the iteration).
        FileNotFoundError: data root missing or not VSPW-shaped.
        CheckpointError: unreadable / mismatched checkpoint, or out of disk space.
    """
    from vidseg.config import config_to_dict, save_config

    info = du.init_distributed()
    try:
        return _train(cfg, info, resume, work_dir, model_factory, dataset, config_to_dict, save_config)
    finally:
        du.cleanup()


def _init_weights(model, spec: str) -> None:
    """Start training from trained weights (`train.init_from`): a vidseg checkpoint, the authors'
    checkpoint or a zoo name; an image model's fusion is widened exactly for a video model."""
    from vidseg.engine.inference import adapt_state, read_weights

    state, _ = read_weights(spec)
    ckpt_io.load_model_state(model, adapt_state(state, model, str(spec)), source=f"init_from {spec}")


def _train(cfg, info, resume, work_dir, model_factory, dataset, config_to_dict, save_config) -> dict:
    import dataclasses

    tc = cfg.train
    work_dir = Path(work_dir or cfg.work_dir)
    cfg = dataclasses.replace(cfg, work_dir=str(work_dir))
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
    optimizer = torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    scheduler = PolyLR(optimizer, tc.lr, tc.iters, tc.poly_power, tc.warmup_iters, tc.warmup_ratio)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_iter, best_miou = 0, -1.0
    start_batch = 0
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as exc:
            raise ckpt_io.CheckpointError(f"checkpoint {path}: optimizer state does not fit this "
                                          f"model's parameter groups: {exc}") from exc
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
        raise ckpt_io.CheckpointError(f"checkpoint is at iteration {start_iter} but train.iters={tc.iters}")

    # without SyncBN (CPU / gloo) rank 0's BN statistics are broadcast before each forward so
    # that every rank holds the same model
    model = du.wrap_ddp(raw, info, find_unused_parameters=_find_unused(raw),
                        broadcast_buffers=not sync_bn)
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
        log.warning("train.sync_bn: SyncBatchNorm needs CUDA; on the CPU rank 0's BatchNorm "
                    "statistics are broadcast instead")
    log.info(f"{'resuming at' if start_iter else 'starting'} iteration {start_iter}/{tc.iters} on "
             f"{device} x{info.world_size}, amp={use_amp}, batch {cfg.data.batch_size} "
             f"({sampler.per_rank}/process), work_dir={work_dir}")
    scheduler.step(start_iter)
    log.info(describe_lrs(optimizer) + (f" at iteration {start_iter}" if start_iter else ""))
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
            "model": raw.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if use_amp else {},
            "iteration": iteration, "rng": rng, "rng_per_rank": rng_all,
            "sampler": sampler.position(iteration), "world_size": info.world_size,
            "best_miou": best_miou, "config": cfg_dict, "git_revision": revision,
            "vidseg_version": vidseg.__version__,
        }
        return ckpt_io.save_checkpoint(work_dir, state, iteration, keep=tc.keep_checkpoints, is_best=is_best)

    model.train()
    it_iter = iter(loader)
    last_path = ckpt_io.find_latest(work_dir) if info.is_main else None
    last_loss, last_val = float("nan"), None
    window = {"data": 0.0, "iter": 0.0, "n": 0, "samples": 0, "substituted": 0}
    losses_acc: dict[str, float] = {}
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
                f"saving; last good checkpoint: {last_path or 'none yet'}")
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
            row = {**means, "lr": lr, **_memory_stats(raw), "iter_time": window["iter"] / n,
                   "data_time": window["data"] / n,
                   "samples_per_s": window["samples"] / max(window["iter"], 1e-9),
                   "substituted": window["substituted"]}
            log.scalars(done, row)
            log.info(f"iter {done}/{tc.iters} " + " ".join(
                f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
            window = {"data": 0.0, "iter": 0.0, "n": 0, "samples": 0, "substituted": 0}
            losses_acc = {}

        is_best = False
        if tc.validate and ((tc.val_interval and done % tc.val_interval == 0) or done == tc.iters):
            try:  # every rank: the evaluator splits the videos across ranks and merges the scores
                metrics = _validate(raw, cfg, work_dir, done)
            except Exception:
                # keep the trained iterations: checkpoint first, then report the evaluator's error
                if not info.distributed:  # (a rank-0-only save would wait for the other ranks)
                    log.warning(f"validation failed at iteration {done}; checkpoint written first")
                    save(done, False)
                log.close()
                raise
            metrics = du.broadcast_object(metrics)
            if metrics is not None:
                last_val = metrics
                miou = float(metrics.get("miou", float("nan")))
                log.scalars(done, {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, "val")
                log.info(f"validation at iter {done}: " + ", ".join(
                    f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
                if math.isfinite(miou) and miou > best_miou:
                    best_miou, is_best = miou, True
        if done % max(tc.ckpt_interval, 1) == 0 or done == tc.iters or is_best:
            path = save(done, is_best)
            if path is not None:
                last_path = path
                log.info(f"checkpoint {path}{' (best)' if is_best else ''}")

    log.info(f"finished {tc.iters} iterations; last checkpoint {last_path}")
    log.close()
    return {"iterations": tc.iters, "work_dir": str(work_dir),
            "checkpoint": str(last_path) if last_path else None, "loss": last_loss,
            "best_miou": best_miou if best_miou >= 0 else None, "val": last_val}


def build_train_loader_for(cfg, info, start_batch: int, dataset):
    from vidseg.engine.data import build_train_loader

    return build_train_loader(cfg, info.rank, info.world_size, start_batch=start_batch, dataset=dataset)
