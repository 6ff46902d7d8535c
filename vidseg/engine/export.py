"""ONNX export of the streaming step: the history buffer becomes explicit inputs and outputs.

The exported graph is `StepGraph.forward(frame, first, hist_1, ..., hist_h) -> (logits, new_map)`
for one fixed input size. The caller keeps the ring buffer (`OnnxStreamer` does it the way
`VideoSegmentor.step` does): `new_map` is the frame's stage-1 map (C_bi) to append, `hist_1` is
the most recent history map. On the first frame of a stream no history exists; `first = 1` makes
the graph use the frame's own map for every history slot, exactly as `step()` pads.
C_dl (the class distributions sampled from the frozen memory) is baked in as a constant.
"""

from __future__ import annotations

import warnings
from collections import deque
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vidseg.engine.input_size import check_input_size, network_stride
from vidseg.errors import VidsegError
from vidseg.models.video import pick_history


class ExportError(VidsegError, RuntimeError):
    """A model or environment that cannot be exported / checked; the message says why."""


class StepGraph(nn.Module):
    """One causal step of a `VideoSegmentor` at scale 1.0 with explicit history tensors.

    Args:
        model: the `VideoSegmentor` (eval mode, history h >= 1, one inference scale).
    """

    def __init__(self, model):
        super().__init__()
        if model.history < 1:
            raise ExportError(
                "model.history is 0: export the image model with a plain "
                "torch.onnx.export of model(frames); this wrapper carries history"
            )
        if tuple(model.scales) != (1.0,):
            raise ExportError(f"export supports the single scale 1.0, the model has {model.scales}")
        self.model = model
        self.history = model.history
        c_dl = model.image_model.sample_memory()
        self.register_buffer("c_dl", None if c_dl is None else c_dl.detach().clone())

    def forward(self, frame: torch.Tensor, first: torch.Tensor, *hist: torch.Tensor):
        """Args:
            frame: `(1, 3, H, W)` normalised frame.
            first: `(1,)` float, 1.0 on the first frame of a stream (history ignored), else 0.0.
            hist: h maps `(1, Z, h', w')`, most recent first (zeros when `first` is 1).
        Returns:
            logits `(1, K, h', w')` at the model grid and the frame's map `(1, Z, h', w')`.
        """
        m = self.model.image_model
        enc = m.encode(frame, self.c_dl)
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
        ExportError: when the model cannot be traced or written.
    """
    check_input_size(size, network_stride(model), what="export size")
    graph = StepGraph(model).eval()
    frame = torch.zeros(1, 3, *size)
    current = model._history_map(model.image_model.encode(frame, graph.c_dl))
    hist = [torch.zeros_like(current) for _ in range(graph.history)]
    names = ["frame", "first"] + [f"hist_{i + 1}" for i in range(graph.history)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            # Shape checks inside the model become constants in the trace: right for a fixed size.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                graph,
                (frame, torch.ones(1), *hist),
                str(path),
                input_names=names,
                output_names=["logits", "new_map"],
                opset_version=opset,
                dynamo=False,
            )
    except Exception as exc:  # noqa: BLE001 - tracing fails in many ways; report the first line
        raise ExportError(
            f"torch.onnx.export failed for backbone "
            f"'{getattr(model.backbone, 'name', '?')}': "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    return {
        "inputs": names,
        "outputs": ["logits", "new_map"],
        "size": list(size),
        "map_shape": list(current.shape),
        "history": graph.history,
    }


class OnnxStreamer:
    """Runs an exported step with onnxruntime and keeps the ring buffer like `step()` does.

    Args:
        path: the .onnx file from `export_onnx`.
        history: h, as exported.
        history_stride: distance between history frames (the model's `history_stride`).
    """

    def __init__(self, path: str | Path, history: int, history_stride: int = 1):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ExportError("onnxruntime is not installed: pip install -e '.[onnx]'") from exc
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.history = history
        self.history_stride = history_stride
        self.buffer: deque = deque(maxlen=history * history_stride)

    def step(self, frame: np.ndarray) -> np.ndarray:
        """Logits `(1, K, h', w')` for one normalised float32 frame `(1, 3, H, W)`."""
        first = not self.buffer
        if first:  # the graph substitutes the frame's own map; the zeros only fix the shape
            shape = self.session.get_inputs()[2].shape
            hist = [np.zeros(shape, np.float32) for _ in range(self.history)]
        else:
            hist = pick_history(list(self.buffer), self.history, self.history_stride, None)
        feeds = {
            "frame": frame.astype(np.float32),
            "first": np.array([1.0 if first else 0.0], np.float32),
        }
        feeds.update({f"hist_{i + 1}": h for i, h in enumerate(hist)})
        logits, new_map = self.session.run(["logits", "new_map"], feeds)
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


__all__ = ["ExportError", "OnnxStreamer", "StepGraph", "check_against_torch", "export_onnx"]
