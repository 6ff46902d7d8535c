"""Evaluate a model on a split (any `data.format`) with the causal streaming path.

Every frame goes through `model.step()` (one backbone pass per frame), logits are resized to the
mask size (480p for VSPW) before the argmax, predictions are optionally written as VSPW-format
PNGs, and every metric is accumulated in one pass (`SplitScorer`). Under torchrun the videos are
split across ranks and the partial results are merged exactly on rank 0.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from vidseg.config import Config
from vidseg.engine import distributed as du
from vidseg.metrics.report import write_metrics

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_video(
    model, video, cfg: Config, device, on_frame=None, no_history: bool = False
) -> int:
    """Run `step()` over one `LabelledVideo`; calls `on_frame(index, rgb, pred, mask)` per frame.

    The test-time protocol (`eval.mode/crop_size/stride/scales/flip`) is applied per frame by
    `segment_frame` (`engine/tta.py`), each view keeping its own causal history. `mask` is the
    frame's mask in the VSPW raw convention (what the scorer reads; `data.labels: train_ids`
    masks are converted), or None without annotation.

    With `no_history` every frame is processed as the first frame of its video (the history
    maps are the frame's own), which measures what the temporal context contributes.

    Returns the number of frames whose image was unreadable (they reuse the previous frame).
    """
    from vidseg.data.frame_access import iter_labelled_frames
    from vidseg.data.image_files import UnreadableImageError, read_mask, to_vspw_raw
    from vidseg.engine.predict import segment_frame
    from vidseg.engine.tta import TTASettings

    tta = TTASettings.from_config(cfg.eval)
    short_side = cfg.data.eval_short_side or cfg.data.short_side
    state = None
    bad = 0
    rgb = None
    for i, (frame, problem) in enumerate(iter_labelled_frames(video)):
        if frame is None:
            if rgb is None:
                raise UnreadableImageError(
                    f"video {video.name}: its first frame is unreadable: {problem}"
                )
            log.warning("%s; reusing the previous frame", problem)
            bad += 1
        else:
            rgb = frame
        path = video.mask_paths[i] if video.mask_paths else None
        mask = None if path is None else to_vspw_raw(read_mask(path), path, cfg.data.labels)
        pred, state = segment_frame(
            model,
            rgb,
            state,
            short_side,
            cfg.data.mean,
            cfg.data.std,
            device,
            out_size=None if mask is None else mask.shape,
            video_id=video.name,
            no_history=no_history,
            tta=tta,
        )
        if on_frame is not None:
            on_frame(i, rgb, pred, mask)
    return bad


def evaluate(
    model,
    cfg: Config,
    split: str | None = None,
    max_videos: int | None = None,
    out_dir: str | Path | None = None,
    *,
    root: str | None = None,
    save_pred: bool = False,
    save_color: bool = False,
    progress: bool = True,
    no_history: bool = False,
) -> dict:
    """Score `model` on a split; returns the metrics dict (see `SplitScorer.result`).

    The split is read in `data.format` (vspw, video, frames); videos whose masks do not pair
    with their frames are refused, or left out and listed as `skipped_videos` with
    `data.bad_videos: skip`.

    Args:
        model: a `VideoSegmentor` (switched to eval mode here and restored afterwards).
        cfg: the resolved config (`data` for the layout and pre-processing, `eval` for metric
            options).
        split: split name (default `cfg.eval.split`).
        max_videos: evaluate only the first N videos of the split (0/None = all).
        out_dir: where `metrics.json` (and predictions) go; None = nothing written.
        root: dataset root (default from the config / `$VSPW_ROOT`).
        save_pred: write prediction PNGs (train ids) `<out_dir>/pred/<video>/<stem>.png`.
        save_color: also write colour PNGs under `<out_dir>/color/`.
        no_history: process every frame as the first of its video (ablation of the history).
    """
    from vidseg.engine.data import load_split

    if max_videos is not None and max_videos < 0:  # a negative slice would drop videos silently
        raise ValueError(f"max_videos={max_videos}: expected a count >= 1 (0 or None = all)")
    split = split or cfg.eval.split
    root, videos, skipped = load_split(cfg, split, root=root, max_videos=max_videos)
    rank, world = du.get_rank(), du.get_world_size()
    ec = cfg.eval
    scorer = _new_scorer(cfg, root)
    label_writer = color_writer = None
    if out_dir is not None and save_pred:
        from vidseg.io.sinks import LabelPngWriter

        label_writer = LabelPngWriter(Path(out_dir) / "pred")
    if out_dir is not None and save_color:
        from vidseg.io.sinks import ColorPngWriter

        color_writer = ColorPngWriter(Path(out_dir) / "color")

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # contiguous blocks, so that merging the ranks' partial results in rank order is video order
    per_rank = -(-len(videos) // world)
    mine = list(enumerate(videos))[rank * per_rank : (rank + 1) * per_rank]
    start = time.perf_counter()
    unreadable = 0
    bar = tqdm(mine, desc=f"eval {split}", unit="video", disable=not progress or rank != 0)
    try:
        for index, video in bar:
            in_tc = ec.tc and (ec.tc_videos is None or index < ec.tc_videos)
            scorer.start_video(video.name, in_tc=in_tc)

            def on_frame(i, rgb, pred, mask, video=video, in_tc=in_tc):
                where = video.mask_paths[i] if video.mask_paths else video.describe_frame(i)
                scorer.add_frame(mask, pred, rgb if in_tc else None, name=where)
                if label_writer is not None:
                    label_writer.write(video.name, video.stems[i], pred)
                if color_writer is not None:
                    color_writer.write(video.name, video.stems[i], pred, rgb)

            unreadable += predict_video(model, video, cfg, device, on_frame, no_history)
            scorer.end_video()
    finally:
        model.train(was_training)
    if world > 1:
        states = du.all_gather_object((scorer.state(), unreadable))
        scorer = _new_scorer(cfg, root)
        for state, _ in states:  # rank order = video order (contiguous blocks)
            scorer.merge_state(state)
        unreadable = sum(n for _, n in states)  # every rank's skipped frames, not rank 0's
    result = scorer.result()
    result.update(
        {
            "split": split,
            "unreadable_frames": unreadable,
            "tta": _protocol(ec),
            "format": cfg.data.format,
            "skipped_videos": skipped,
            "seconds": round(time.perf_counter() - start, 2),
        }
    )
    if out_dir is not None and rank == 0:
        write_metrics(result, Path(out_dir) / "metrics.json")
    return result


def _protocol(ec) -> dict:
    """The test-time protocol in metrics.json (how the numbers were obtained)."""
    return {
        "mode": ec.mode,
        "crop_size": ec.crop_size,
        "stride": ec.stride,
        "scales": list(ec.scales),
        "flip": ec.flip,
    }


def _new_scorer(cfg: Config, root: str):
    from vidseg.data.layouts import class_names
    from vidseg.metrics.scorer import SplitScorer

    ec = cfg.eval
    names = class_names(root, cfg.data.format, cfg.model.num_classes)
    return SplitScorer(
        cfg.model.num_classes,
        names,
        tc=ec.tc,
        tc_videos=ec.tc_videos,
        flow=ec.flow,
        include_last_window=ec.include_last_window,
        raft_weights=ec.raft_weights or None,
    )
