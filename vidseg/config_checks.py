"""Range checks for every numeric config value, run by `vidseg.config.validate`.

A value of the right type can still be unusable (`model.num_classes: 0`, `train.lr: -1`,
`data.crop_size: [4, 4]` under a stride-8 backbone, `train.ckpt_interval: 0`, a NaN). Each is
refused when the config is loaded, before anything is built, with one line naming the file (or
`--set`) that set the key, the key, the value and the accepted range. The checks depend on the
config only, never on the machine: a checkpoint's stored config is validated on load, wherever
that happens. The limits that depend on the machine (`--threads`, `--device`) are checked by the
commands; the per-frame input size by `vidseg/engine/input_size.py`.

Where 0 is accepted for a count, it has the documented meaning noted in `RULES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from vidseg.config import Config, ConfigError
from vidseg.engine.input_size import MAX_SIDE

OUTPUT_STRIDES = (8, 16, 32)
MAX_CLASSES = 255  # label maps are uint8 and 255 is the ignore label


def _range(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> tuple[Callable[[float], bool], str]:
    """A predicate for `low <= v <= high` (open ends when asked) and its wording."""

    def ok(v: float) -> bool:
        above = low is None or (v > low if low_open else v >= low)
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    if low is not None and high is not None:
        text = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        return ok, f"in {text}"
    if low is not None:
        return ok, f"{'>' if low_open else '>='} {low:g}"
    return ok, f"{'<' if high_open else '<='} {high:g}"


POSITIVE = _range(0, low_open=True)
AT_LEAST_1 = _range(1)
NON_NEGATIVE = _range(0)
UNIT = _range(0, 1)

# dotted key -> (test, accepted values, what 0 or None means when accepted); None values are
# accepted wherever the field's type allows None (it then means "not set"). model.history,
# model.iis_stages and train.backbone_lr_mult are checked in vidseg/config.py itself.
RULES: dict[str, tuple[Callable[[float], bool], str, str]] = {
    "model.num_classes": (*_range(1, MAX_CLASSES), "uint8 label maps, 255 = ignore"),
    "model.channels": (*AT_LEAST_1, ""),
    "model.key_channels": (*AT_LEAST_1, ""),
    "model.pr_weight": (*NON_NEGATIVE, ""),
    "model.aux_weight": (*NON_NEGATIVE, "0 = no auxiliary loss"),
    "model.aux_channels": (*NON_NEGATIVE, "0 = channels / 2"),
    "model.backbone.stem_width": (*AT_LEAST_1, ""),
    "model.memory.momentum": (*UNIT, ""),
    "model.memory.power": (*NON_NEGATIVE, ""),
    "model.memory.noise_seed": (*NON_NEGATIVE, ""),
    "model.memory.rcl_weight": (*NON_NEGATIVE, ""),
    "model.gald.kernel": (*AT_LEAST_1, ""),
    "model.gald.dilation": (*AT_LEAST_1, ""),
    "model.hmsa.train_low_scale": (*_range(0, 1, low_open=True, high_open=True), ""),
    "model.hmsa.channels": (*AT_LEAST_1, ""),
    "model.hmsa.per_scale_weight": (*NON_NEGATIVE, ""),
    "model.contrast.weight": (*NON_NEGATIVE, ""),
    "model.contrast.temperature": (*POSITIVE, ""),
    "model.contrast.base_temperature": (*POSITIVE, ""),
    "model.contrast.proj_dim": (*AT_LEAST_1, ""),
    "model.contrast.queue_size": (*NON_NEGATIVE, "0 = no queue"),
    "model.contrast.max_samples": (*AT_LEAST_1, ""),
    "model.contrast.max_views": (*AT_LEAST_1, ""),
    "model.contrast.warmup_iters": (*NON_NEGATIVE, ""),
    "model.head.fpn_channels": (*AT_LEAST_1, ""),
    "model.head.fpn_out_channels": (*NON_NEGATIVE, "0 = model.channels"),
    "model.head.cwi_weight": (*NON_NEGATIVE, ""),
    "data.clip.stride": (*AT_LEAST_1, ""),
    "data.cat_max_ratio": (*POSITIVE, ">= 1 disables the crop redraw"),
    "data.flip_prob": (*UNIT, ""),
    "data.batch_size": (*AT_LEAST_1, "the total over all processes"),
    "data.num_workers": (*NON_NEGATIVE, "0 = load in the training process"),
    "train.iters": (*AT_LEAST_1, ""),
    "train.lr": (*POSITIVE, ""),
    "train.momentum": (*_range(0, 1, high_open=True), ""),
    "train.weight_decay": (*NON_NEGATIVE, ""),
    "train.poly_power": (*NON_NEGATIVE, ""),
    "train.warmup_iters": (*NON_NEGATIVE, "0 = no warm-up"),
    "train.warmup_ratio": (*UNIT, ""),
    "train.grad_clip": (*POSITIVE, "unset (null) = no clipping"),
    "train.seed": (*NON_NEGATIVE, ""),
    "train.log_interval": (*AT_LEAST_1, ""),
    "train.ckpt_interval": (*AT_LEAST_1, ""),
    "train.val_interval": (*NON_NEGATIVE, "0 = validate only at the end"),
    "train.val_videos": (*NON_NEGATIVE, "0 = all val videos"),
    "train.keep_checkpoints": (*NON_NEGATIVE, "0 = keep every iter_*.pth"),
    "eval.tc_videos": (*NON_NEGATIVE, "0 = no TC, unset = all videos"),
    "stream.queue_size": (*AT_LEAST_1, ""),
    "stream.alpha": (*UNIT, ""),
    "stream.shot_cut_threshold": (*POSITIVE, ""),
}


def _lookup(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _fail(origin: dict, key: str, value: Any, expected: str, meaning: str = "") -> None:
    note = f" ({meaning})" if meaning else ""
    raise ConfigError(
        f"{origin.get(key, '<defaults>')}: {key}={value!r}, expected {expected}{note}"
    )


def _check_number(origin: dict, key: str, value: Any, test, expected: str, meaning: str) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        _fail(origin, key, value, f"a finite number {expected}", meaning)
    if not test(value):
        _fail(origin, key, value, f"a value {expected}", meaning)


def _check_list(
    origin: dict, key: str, value, length: int | tuple[int, ...] | None, test, expected: str
) -> None:
    """Every item of the list `value` passes `test`; its length is one of `length`."""
    if value is None:
        return
    lengths = (length,) if isinstance(length, int) else length
    wanted = (
        f"{' or '.join(map(str, lengths))} values, each {expected}"
        if lengths
        else f"a non-empty list of values {expected}"
    )
    if (
        (lengths and len(value) not in lengths)
        or not value
        or any(not math.isfinite(v) or not test(v) for v in value)
    ):
        _fail(origin, key, list(value), wanted)


def check_ranges(cfg: Config, origin: dict | None = None) -> None:
    """Refuse every numeric config value outside its range (see `RULES` and the list checks).

    Args:
        cfg: the config built from the YAML files and overrides.
        origin: dotted key -> the file or `--set` that set it (for the message).
    Raises:
        ConfigError: one line naming the origin, the key, the value and the accepted range.
    """
    origin = origin or {}
    for key, (test, expected, meaning) in RULES.items():
        _check_number(origin, key, _lookup(cfg, key), test, expected, meaning)

    stride = cfg.model.backbone.output_stride
    if stride not in OUTPUT_STRIDES:
        _fail(
            origin,
            "model.backbone.output_stride",
            stride,
            f"one of {', '.join(map(str, OUTPUT_STRIDES))}",
        )
    # an input side below the output stride leaves the coarsest feature map empty
    side_ok, side_text = _range(stride, MAX_SIDE)
    side_text = f"{side_text} px (from the backbone's output stride to the input limit)"
    for key in ("data.short_side", "data.eval_short_side", "stream.short_side"):
        _check_number(origin, key, _lookup(cfg, key), side_ok, side_text, "")
    for key in ("data.crop_size", "eval.crop_size"):
        _check_list(origin, key, _lookup(cfg, key), 2, side_ok, side_text)

    bb = cfg.model.backbone
    _check_list(origin, "model.backbone.img_size", bb.img_size, (1, 2), side_ok, side_text)
    _check_list(origin, "model.backbone.widths", bb.widths, 4, AT_LEAST_1[0], AT_LEAST_1[1])
    _check_list(
        origin,
        "model.head.aspp_dilations",
        cfg.model.head.aspp_dilations,
        None,
        AT_LEAST_1[0],
        AT_LEAST_1[1],
    )
    _check_list(origin, "model.hmsa.scales", cfg.model.hmsa.scales, None, POSITIVE[0], POSITIVE[1])
    _check_list(origin, "data.mean", cfg.data.mean, 3, UNIT[0], f"{UNIT[1]} (RGB, 0..1 units)")
    _check_list(origin, "data.std", cfg.data.std, 3, POSITIVE[0], f"{POSITIVE[1]} (RGB)")
    low, high = cfg.data.scale_range  # two values: `validate` checked the length
    if not (0 < low <= high) or not math.isfinite(high):
        _fail(
            origin,
            "data.scale_range",
            list(cfg.data.scale_range),
            "two numbers [low, high] with 0 < low <= high",
        )
    if cfg.data.short_side * high > MAX_SIDE:
        _fail(
            origin,
            "data.scale_range",
            list(cfg.data.scale_range),
            f"high * data.short_side ({cfg.data.short_side}) <= {MAX_SIDE} px (the input limit)",
        )
    if not cfg.work_dir.strip():
        _fail(origin, "work_dir", cfg.work_dir, "a folder name")


__all__ = ["MAX_CLASSES", "OUTPUT_STRIDES", "RULES", "check_ranges"]
