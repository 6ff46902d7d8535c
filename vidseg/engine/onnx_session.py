"""onnxruntime sessions of the exported streaming step, and where their graphs come from.

`StepSession` runs one exported `StepGraph` (fixed input size, history maps as inputs). A
`GraphSource` gives the session for a frame size: `FixedGraph` (a given .onnx file; its size must
be the model input size) or `CachedGraphs` (exported on first use per input size into the vidseg
cache).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vidseg.engine.export import ExportError, export_cached, model_fingerprint
from vidseg.engine.input_size import check_frame_size, scaled_size

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[onnx]' (onnx, onnxruntime), or use --backend torch"


class OnnxBackendError(ExportError):
    """The onnxruntime backend cannot run here or with this model; the message says why."""


def import_onnxruntime():
    """The `onnxruntime` module, or `OnnxBackendError` saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise OnnxBackendError(f"--backend onnxruntime needs onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime


class StepSession:
    """One exported step loaded into onnxruntime (CPU, graph optimisation level all, no spinning).

    Args:
        path: a .onnx file written by `export_onnx`.
        threads: intra-op threads (None: onnxruntime's default, every core).
        default_history_stride: used when the file records no `vidseg.history_stride`.
    Attributes:
        size: model input `(H, W)`; history: h; history_stride; num_classes: K;
        map_shape: shape of a history map (None when h = 0).
    Raises:
        OnnxBackendError: onnxruntime missing, or the file is unreadable or not a streaming step.
    """

    def __init__(self, path: str | Path, threads: int | None, default_history_stride: int = 1):
        ort = import_onnxruntime()
        self.path = Path(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = int(threads)
        # Idle workers sleep instead of spinning: the decode and H.264 threads need those cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OnnxBackendError(f"{path}: not a readable ONNX model ({first})") from None
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        history = sum(name.startswith("hist_") for name in inputs)
        expected = ["frame"] + (["first"] + [f"hist_{i + 1}" for i in range(history)]) * (
            history > 0
        )
        if inputs != expected or outputs[:1] != ["logits"]:
            raise OnnxBackendError(
                f"{path}: not a vidseg streaming step (inputs {inputs}, outputs {outputs}); "
                "export one with `vidseg export`"
            )
        meta = self.session.get_modelmeta().custom_metadata_map
        frame_shape = self.session.get_inputs()[0].shape
        self.size = (int(frame_shape[2]), int(frame_shape[3]))
        self.history = history
        self.history_stride = int(json.loads(meta.get("vidseg.history_stride", "0")) or 0) or int(
            default_history_stride
        )
        self.num_classes = int(self.session.get_outputs()[0].shape[1])
        self.map_shape = tuple(self.session.get_inputs()[2].shape) if history else None
        self._names = ["logits", "new_map"] if history else ["logits"]
        self._zeros = [np.zeros(self.map_shape, np.float32)] * history if history else []

    def run(self, frame: np.ndarray, hist: Sequence[np.ndarray] | None):
        """One step.

        Args:
            frame: float32 `(1, 3, H, W)` normalised frame at `size`.
            hist: the h history maps, most recent first; None on the first frame of a stream
                (the graph then uses the frame's own map for every slot, as `step()` pads).
        Returns:
            logits `(1, K, h', w')` and the frame's map to append to the buffer (None if h = 0).
        """
        feeds = {"frame": frame}
        if self.history:
            feeds["first"] = np.array([0.0 if hist is not None else 1.0], np.float32)
            for i, h in enumerate(hist if hist is not None else self._zeros):
                feeds[f"hist_{i + 1}"] = h
        out = self.session.run(self._names, feeds)
        return out[0], (out[1] if self.history else None)


class FixedGraph:
    """A given .onnx file: every frame must reach the model at the size it was exported for.

    Args:
        path: the .onnx file (`vidseg export`).
        threads: onnxruntime intra-op threads.
        default_history_stride: for files without the `vidseg.history_stride` metadata.
    Raises:
        OnnxBackendError: see `StepSession` (raised here, before any frame is read).
    """

    def __init__(self, path: str | Path, threads: int | None, default_history_stride: int = 1):
        self.session = StepSession(path, threads, default_history_stride)

    def for_frame(self, frame_hw: tuple[int, int], short_side: int | None) -> StepSession:
        """The session for a `frame_hw` frame brought to `short_side`.

        Raises:
            OnnxBackendError: that model input is not the size the file was exported for.
        """
        size = scaled_size(frame_hw, short_side)
        if size != self.session.size:
            h, w = self.session.size
            raise OnnxBackendError(
                f"{self.session.path}: exported for a {h}x{w} model input, but the "
                f"{frame_hw[0]}x{frame_hw[1]} frames become {size[0]}x{size[1]}; export that "
                f"size (vidseg export --size {size[0]} {size[1]}) or leave out --onnx to export "
                "on the fly"
            )
        return self.session


class CachedGraphs:
    """Graphs exported on first use per model input size, kept in `cache_root` for later runs.

    Args:
        model: the `VideoSegmentor` (CPU, eval mode, scale 1.0).
        model_config: the config section that built it (part of the cache key).
        cache_root: folder of the cached .onnx files (`vidseg.cache.cache_dir() / "onnx"`).
        threads: onnxruntime intra-op threads.
        opset: ONNX opset.
    """

    def __init__(self, model, model_config, cache_root: str | Path, threads: int | None, opset=17):
        self.model = model
        self.cache_root = Path(cache_root)
        self.threads = threads
        self.opset = opset
        self.fingerprint = model_fingerprint(model, model_config, opset)
        self._sessions: dict[tuple[int, int], StepSession] = {}

    def path_for(self, size: tuple[int, int]) -> Path:
        """The cached graph for `size`, exported now if missing."""
        path = self.cache_root / f"{self.fingerprint}_{size[0]}x{size[1]}.onnx"
        if not path.is_file():
            log.warning("exporting the streaming step for %dx%d to %s (once)", *size, path)
        try:
            return export_cached(self.model, size, self.fingerprint, self.cache_root, self.opset)
        except ExportError as exc:
            raise OnnxBackendError(f"{exc.one_line()}; use --backend torch") from exc

    def for_frame(self, frame_hw: tuple[int, int], short_side: int | None) -> StepSession:
        """The session for a `frame_hw` frame brought to `short_side` (exported on first use).

        The two most recent input sizes stay loaded.

        Raises:
            InputSizeError: the model input would be below the network stride or too large.
            ExportError: the export failed.
        """
        size = scaled_size(frame_hw, short_side)
        if size not in self._sessions:
            check_frame_size(self.model, frame_hw, short_side)
            session = StepSession(self.path_for(size), self.threads, self.model.history_stride)
            if len(self._sessions) >= 2:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[size] = session
        return self._sessions[size]
