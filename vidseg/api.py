"""`vidseg.train` and `vidseg.score`: the `vidseg train` and `vidseg score` commands as functions.

Each runs exactly what its command runs (`engine.train.train` in this process, and
`metrics.scorer.score_prediction_dir`), so a Python run and a command-line run with the same
settings give the same checkpoints and the same numbers. Errors are raised, not turned into
exit codes: `ConfigError` (a `VidsegError`) for a bad config or override, `RunDirExistsError`
for a work directory that already holds a run, `FileNotFoundError` / `ValueError` for missing
data or predictions, as documented on each function.

    import vidseg
    run = vidseg.train("synthetic/tiny", data={"root": "data/synth"}, train={"iters": 2})
    metrics = vidseg.score("data/synth", "preds/")        # metrics["miou"], metrics["mvc8"], ...
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from vidseg.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
)

# the top-level keys of a config that `train(**sections)` accepts as section dicts
SECTIONS = ("model", "data", "train", "eval", "stream")
END_OF_DOCUMENT = "\n...\n"


@dataclass(frozen=True)
class TrainResult:
    """What one `train()` call did.

    Attributes:
        work_dir: the run directory (config.yaml, train.log, scalars.jsonl, checkpoints).
        checkpoint: the last checkpoint written (None if none was).
        iterations: iterations completed (counted from the start of the run, resumes included).
        loss: last logged total loss.
        best_miou: best validation mIoU so far, None without validation.
        val: the last validation metrics (the `score()` keys), None without validation.
        stopped: None, or "SIGINT" / "SIGTERM" when a signal stopped the run after it wrote a
            checkpoint of the current iteration (`resume=True` continues it).
        moved_to: where `overwrite=True` moved the previous run, or None.
    """

    work_dir: Path
    checkpoint: Path | None
    iterations: int
    loss: float | None
    best_miou: float | None
    val: dict | None
    stopped: str | None
    moved_to: Path | None


def _plain(value):
    """Paths as strings, recursively, so that YAML can write the value."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def section_overrides(sections: dict) -> list[str]:
    """Section dicts as `key=value` overrides: `{"train": {"iters": 2}}` -> `["train.iters=2"]`.

    Nested dicts become dotted keys, so `model={"backbone": {"name": "resnet18"}}` changes only
    that key of the section. Values are written as YAML, the syntax `--set` reads, so they come
    back with their type (`1e-4` stays a float, `"true"` stays a string).

    Raises:
        ConfigError: a section that is not a config section, or not given as a dict.
    """
    import yaml

    out: list[str] = []

    def walk(prefix: str, tree: dict) -> None:
        for key, value in tree.items():
            dotted = f"{prefix}.{key}"
            if isinstance(value, dict) and value:
                walk(dotted, value)
                continue
            text = yaml.safe_dump(_plain(value), default_flow_style=True, width=math.inf)
            # a bare scalar ends its YAML document with "..."; the override reader needs no end
            out.append(f"{dotted}={text.removesuffix(END_OF_DOCUMENT).strip()}")

    for name, tree in sections.items():
        if name not in SECTIONS:
            raise ConfigError(
                f"vidseg.train: {name}= is not a config section; sections are "
                f"{', '.join(SECTIONS)} (as dicts), or use overrides=['a.b=c']"
            )
        if not isinstance(tree, dict):
            raise ConfigError(
                f"vidseg.train: {name}= takes a dict of that section's keys, e.g. "
                f"train={{'iters': 2}}; got {tree!r}"
            )
        walk(name, tree)
    return out


def resolve_config(config: str | os.PathLike | Config, overrides=(), **sections) -> Config:
    """The `Config` that `train()` runs: a packaged name, a file or a `Config`, plus overrides.

    Args:
        config: a packaged config name (`synthetic/tiny`), a YAML file or a `Config` (not
            modified: overrides apply to a copy).
        overrides: `key=value` strings, as after `vidseg train --set`.
        **sections: section dicts (`train={"iters": 2}`), applied after `overrides`.
    Raises:
        ConfigError: unknown config name, unknown key, wrong type or invalid value (one line
            naming the key and where it was set).
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    texts = [*overrides, *section_overrides(sections)]
    if not isinstance(config, Config):
        return load_config(config, texts)
    if not texts:
        return config
    tree = config_to_dict(config)
    for text in texts:
        key, value = parse_override(text)
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"vidseg.train override {key}: {part!r} is not a config section")
            node = node[part]
        node[parts[-1]] = value
    return config_from_dict(tree, source="vidseg.train overrides")


def train(
    config: str | os.PathLike | Config,
    *,
    overrides=(),
    work_dir: str | os.PathLike | None = None,
    resume: bool | str | os.PathLike | None = None,
    overwrite: bool = False,
    **sections,
) -> TrainResult:
    """Train a model, as `vidseg train` does (one process; DDP when run under torchrun).

    Args:
        config: a packaged config name, a YAML file or a `Config`.
        overrides: `key=value` strings (`["train.iters=2"]`), as `vidseg train --set`.
        work_dir: run directory (default: the config's `work_dir`).
        resume: True (= "latest", the run directory's last checkpoint), a checkpoint file or a
            run directory; None starts a fresh run.
        overwrite: move a run already in `work_dir` to `<work_dir>.old-<timestamp>` first.
        **sections: section dicts, e.g. `train={"iters": 2}`, `data={"root": "data/synth"}`.
    Returns:
        `TrainResult` (`checkpoint` loads into `vidseg.Segmenter(config, checkpoint)`).
    Raises:
        ConfigError: bad config, key or value (before any work).
        RunDirExistsError: `work_dir` holds a run and neither `resume` nor `overwrite` is set.
        FileNotFoundError: the data root is missing or not VSPW-shaped.
        CheckpointError: unreadable or mismatched checkpoint, or a full disk.
        NonFiniteLossError: the loss became NaN / Inf (names the last good checkpoint).
    """
    from vidseg.engine.train import train as run_training

    cfg = resolve_config(config, overrides, **sections)
    if resume is True:
        resume = "latest"
    result = run_training(cfg, resume=resume or None, work_dir=work_dir, overwrite=overwrite)
    return TrainResult(
        work_dir=Path(result["work_dir"]),
        checkpoint=Path(result["checkpoint"]) if result["checkpoint"] else None,
        iterations=result["iterations"],
        loss=result["loss"],
        best_miou=result["best_miou"],
        val=result["val"],
        stopped=result["stopped"],
        moved_to=Path(result["moved_to"]) if result["moved_to"] else None,
    )


def score(
    data: str | os.PathLike,
    pred: str | os.PathLike,
    *,
    split: str = "val",
    tc: bool = True,
    tc_videos: int | None = None,
    flow: str = "dis",
    raft_weights: str | None = None,
    allow_missing: bool = False,
    include_last_window: bool = False,
    workers: int = 0,
    progress: bool = False,
    data_format: str = "auto",
    labels: str = "vspw",
    out: str | os.PathLike | None = None,
) -> dict:
    """Score prediction PNGs, as `vidseg score --data DATA --pred PRED` does.

    Args:
        data: a labelled root in any layout of docs/DATA.md (VSPW, `video`, `frames`).
        pred: folder of predictions `<pred>/<video>/<stem>.png`, train ids at mask size.
        split: split file name without `.txt`.
        tc: compute TC (optical flow); `--no-tc` is `tc=False`.
        tc_videos: TC on the first N videos only (100 = the official protocol); None = all.
        flow: "dis" (OpenCV, reported as TC-DIS) or "raft" (needs `raft_weights`).
        raft_weights: local torchvision raft_large weights for `flow="raft"`.
        allow_missing: count missing predictions instead of failing.
        include_last_window: mVC also counts the window ending at each video's last frame.
        workers: processes scoring videos in parallel (the numbers do not depend on it).
        progress: show a progress bar.
        data_format: "auto" (detected), "vspw", "video" or "frames" (`--format`).
        labels: mask values, "vspw" (0 and 255 ignored, k = class k-1) or "train_ids" (`--labels`).
        out: also write the metrics as strict JSON there (what `vidseg score` writes to
            `<pred>/metrics.json` or `--out`); None writes nothing.
    Returns:
        The metrics dict: `miou` (classes present in GT, official), `miou_all_classes`,
        `pixel_acc`, `mean_class_acc`, `mvc8`, `mvc16`, `tc` (None without TC), `per_class`,
        `per_video`, counts (`videos`, `frames`, `missing_predictions`, ...). Metrics are
        fractions in [0, 1]; undefined ones are NaN (null in the JSON).
    Raises:
        FileNotFoundError: the split, the class list, a video or the prediction folder is missing.
        ValueError: missing (without `allow_missing`), unreadable, mis-sized or out-of-range
            predictions, or bad arguments.
    """
    from vidseg.metrics.report import write_metrics
    from vidseg.metrics.scorer import score_prediction_dir

    if flow == "raft" and not raft_weights:
        raise ValueError(
            "vidseg.score: flow='raft' needs raft_weights=FILE (a local torchvision "
            "raft_large state dict); nothing is downloaded"
        )
    result = score_prediction_dir(
        data,
        pred,
        split=split,
        tc_videos=tc_videos,
        allow_missing=allow_missing,
        flow=flow,
        num_workers=workers,
        tc=tc,
        include_last_window=include_last_window,
        raft_weights=raft_weights,
        progress=progress,
        data_format=data_format,
        label_format=labels,
    )
    if out is not None:
        write_metrics(result, out)
    return result
