"""ONNX export of the streaming step: the history buffer becomes explicit inputs and outputs.

The exported graph is `StepGraph.forward(frame, first, hist_1, ..., hist_h) -> (logits, new_map)`
for one fixed input size. The caller keeps the ring buffer (`OnnxStreamer` and the stream
backend `vidseg/engine/onnx_stream.py` do it the way `VideoSegmentor.step` does): `new_map` is
the frame's stage-1 map (C_bi) to append, `hist_1` is the most recent history map. On the first
frame of a stream no history exists; `first = 1` makes the graph use the frame's own map for
every history slot, exactly as `step()` pads. A model without history (h = 0) exports as
`forward(frame) -> logits`. C_dl (the class distributions sampled from the frozen memory) is
baked in as a constant. The file's metadata (`vidseg.*` keys) records h, the history stride,
the input size and the class count.

`export_cached` exports once per (weights, model config, input size) into the vidseg cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections import deque
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vidseg.engine.input_size import check_input_size, network_stride
from vidseg.errors import VidsegError
from vidseg.models.video import pick_history

# Bumped when the exported graph or its metadata change, so that cached exports are redone.
EXPORT_FORMAT = 2


class ExportError(VidsegError, RuntimeError):
    """A model or environment that cannot be exported / checked; the message says why."""


class StepGraph(nn.Module):
    """One causal step of a `VideoSegmentor` at scale 1.0 with explicit history tensors.

    Args:
        model: the `VideoSegmentor` (eval mode, one inference scale 1.0; any history h >= 0).
    Raises:
        ExportError: the model runs several scales (HMSA): only the torch backend runs those.
    """

    def __init__(self, model):
        super().__init__()
        if tuple(model.scales) != (1.0,):
            raise ExportError(
                f"ONNX export supports the single scale 1.0, the model has {tuple(model.scales)}"
            )
        self.model = model
        self.history = model.history
        c_dl = model.image_model.sample_memory()
        self.register_buffer("c_dl", None if c_dl is None else c_dl.detach().clone())

    def forward(self, frame: torch.Tensor, first: torch.Tensor | None = None, *hist: torch.Tensor):
        """Args:
            frame: `(1, 3, H, W)` normalised frame.
            first: `(1,)` float, 1.0 on the first frame of a stream (history ignored), else 0.0;
                unused (and not a graph input) when h = 0.
            hist: h maps `(1, Z, h', w')`, most recent first (zeros when `first` is 1).
        Returns:
            logits `(1, K, h', w')` at the model grid and the frame's map `(1, Z, h', w')`;
            logits only when h = 0.
        """
        m = self.model.image_model
        enc = m.encode(frame, self.c_dl)
        if self.history == 0:
            logits, _ = m.predict_frame(
                enc, m.within_image_context(enc), self.c_dl, [], m.iis_stages
            )
            return logits
        current = self.model._history_map(enc)
        w = first.view(1, 1, 1, 1)
        # 1 * current + 0 * zeros is exact, so the first frame matches step() bit for bit in fp32.
        history = [w * current + (1 - w) * h for h in hist]
        logits, _ = m.predict_frame(
            enc, m.within_image_context(enc), self.c_dl, history, m.iis_stages
        )
        return logits, current


@torch.no_grad()
def export_onnx(model, path: str | Path, size: tuple[int, int], opset: int = 17) -> dict:
    """Export `StepGraph(model)` for input `size` = (H, W); returns the I/O description.

    Raises:
        InputSizeError: `size` below the network stride or above the input limit.
        ExportError: when the model cannot be traced or written, or onnx is missing.
    """
    check_input_size(size, network_stride(model), what="export size")
    try:
        import onnx
    except ImportError:
        raise ExportError(
            "ONNX export needs the optional extra: pip install -e '.[onnx]' (onnx, onnxruntime)"
        ) from None
    graph = StepGraph(model).eval()
    frame = torch.zeros(1, 3, *size)
    current = model._history_map(model.image_model.encode(frame, graph.c_dl))
    hist = [torch.zeros_like(current) for _ in range(graph.history)]
    if graph.history:
        names = ["frame", "first"] + [f"hist_{i + 1}" for i in range(graph.history)]
        outputs, args = ["logits", "new_map"], (frame, torch.ones(1), *hist)
    else:
        names, outputs, args = ["frame"], ["logits"], (frame,)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            # Shape checks inside the model become constants in the trace: right for a fixed size.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                graph,
                args,
                str(path),
                input_names=names,
                output_names=outputs,
                opset_version=opset,
                dynamo=False,
            )
        proto = onnx.load(str(path))
        info = {
            "history": graph.history,
            "history_stride": int(model.history_stride),
            "size": list(size),
            "num_classes": int(model.image_model.num_classes),
            "format": EXPORT_FORMAT,
        }
        for key, value in info.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = f"vidseg.{key}", json.dumps(value)
        onnx.save(proto, str(path))
    except Exception as exc:  # noqa: BLE001 - tracing fails in many ways; report the first line
        raise ExportError(
            f"torch.onnx.export failed for backbone "
            f"'{getattr(model.backbone, 'name', '?')}': "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    return {
        "inputs": names,
        "outputs": outputs,
        "size": list(size),
        "map_shape": list(current.shape),
        "history": graph.history,
        "history_stride": info["history_stride"],
    }


def model_fingerprint(model, model_config=None, opset: int = 17) -> str:
    """A hex digest of everything the exported graph depends on, except the input size.

    Args:
        model: the `VideoSegmentor`: every tensor of its state dict (checkpoint or random
            weights) and its history settings go in.
        model_config: the `ModelConfig` dataclass (or any JSON-able value) that built it.
        opset: the ONNX opset.
    """
    digest = hashlib.blake2b(digest_size=16)
    meta = {
        "format": EXPORT_FORMAT,
        "torch": torch.__version__,
        "opset": opset,
        "history": model.history,
        "history_stride": model.history_stride,
        "scales": list(model.scales),
        "config": dataclasses.asdict(model_config)
        if dataclasses.is_dataclass(model_config)
        else model_config,
    }
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def export_cached(
    model,
    size: tuple[int, int],
    fingerprint: str,
    cache_root: str | Path,
    opset: int = 17,
) -> Path:
    """The exported step of `model` for input `size`, exported on the first call only.

    Args:
        model: the `VideoSegmentor`.
        size: input `(H, W)`.
        fingerprint: `model_fingerprint(model, ...)`, computed once per model.
        cache_root: folder of the cached graphs (`vidseg.cache.cache_dir() / "onnx"`).
        opset: the ONNX opset (part of the fingerprint too).
    Returns:
        `<cache_root>/<fingerprint>_<H>x<W>.onnx`.
    Raises:
        ExportError: the model cannot be exported, or the folder is not writable.
    """
    path = Path(cache_root) / f"{fingerprint}_{size[0]}x{size[1]}.onnx"
    if path.is_file():
        return path
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the ONNX cache folder {path.parent}: {exc}") from None
    try:
        export_onnx(model, tmp, size, opset=opset)
        os.replace(tmp, path)  # another process exporting the same graph writes the same file
    finally:
        tmp.unlink(missing_ok=True)
    return path


class OnnxStreamer:
    """Runs an exported step with onnxruntime and keeps the ring buffer like `step()` does.

    Args:
        path: the .onnx file from `export_onnx`.
        history: h, as exported.
        history_stride: distance between history frames (the model's `history_stride`).
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
    """

    def __init__(
        self, path: str | Path, history: int, history_stride: int = 1, threads: int | None = None
    ):
        from vidseg.engine.onnx_session import StepSession

        self.session = StepSession(path, threads, default_history_stride=history_stride)
        if self.session.history != history:
            raise ExportError(f"{path}: the graph has h = {self.session.history}, not {history}")
        self.history = history
        self.history_stride = history_stride
        self.buffer: deque = deque(maxlen=max(1, history * history_stride))

    def step(self, frame: np.ndarray) -> np.ndarray:
        """Logits `(1, K, h', w')` for one normalised float32 frame `(1, 3, H, W)`."""
        hist = None
        if self.buffer:
            hist = pick_history(self.buffer, self.history, self.history_stride, None)
        logits, new_map = self.session.run(frame.astype(np.float32, copy=False), hist)
        if self.history:
            self.buffer.append(new_map)
        return logits


def check_against_torch(model, onnx_path: str | Path, frames: list[torch.Tensor]) -> float:
    """Max |logits_onnx - logits_torch| over a stream of normalised frames `(1, 3, H, W)`."""
    streamer = OnnxStreamer(onnx_path, model.history, model.history_stride)
    state = None
    worst = 0.0
    with torch.no_grad():
        for x in frames:
            ref, state = model.step(x, state)
            got = streamer.step(x.numpy())
            worst = max(worst, float(np.abs(got - ref.numpy()).max()))
    return worst


__all__ = [
    "EXPORT_FORMAT",
    "ExportError",
    "OnnxStreamer",
    "StepGraph",
    "check_against_torch",
    "export_cached",
    "export_onnx",
    "model_fingerprint",
]
