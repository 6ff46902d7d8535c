"""Optical flow backends for the TC metric.

Every backend returns the forward flow from frame t to frame t+1 as `(H, W, 2)` float32
(x component first), with the same sign convention as RAFT(I_t, I_t+1): frame t's pixel x
moves to x + F(x) in frame t+1.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class DISFlow:
    """OpenCV DIS optical flow on grayscale frames (default preset: medium).

    Args:
        preset: "ultrafast", "fast" or "medium".
    """

    _PRESETS = {
        "ultrafast": "DISOPTICAL_FLOW_PRESET_ULTRAFAST",
        "fast": "DISOPTICAL_FLOW_PRESET_FAST",
        "medium": "DISOPTICAL_FLOW_PRESET_MEDIUM",
    }

    def __init__(self, preset: str = "medium"):
        import cv2

        if preset not in self._PRESETS:
            raise ValueError(
                f"DIS preset {preset!r} unknown; expected one of {sorted(self._PRESETS)}"
            )
        self.preset = preset
        self._cv2 = cv2
        self._dis = cv2.DISOpticalFlow_create(getattr(cv2, self._PRESETS[preset]))

    def __call__(self, rgb_t: np.ndarray, rgb_t1: np.ndarray) -> np.ndarray:
        """rgb_t, rgb_t1: (H, W, 3) uint8 RGB -> flow (H, W, 2) float32 from t to t+1."""
        cv2 = self._cv2
        if max(rgb_t.shape[:2]) < 12:
            raise ValueError(
                f"DIS flow needs frames with width or height >= 12, got "
                f"{rgb_t.shape[1]}x{rgb_t.shape[0]}"
            )
        g0 = cv2.cvtColor(np.ascontiguousarray(rgb_t), cv2.COLOR_RGB2GRAY)
        g1 = cv2.cvtColor(np.ascontiguousarray(rgb_t1), cv2.COLOR_RGB2GRAY)
        return self._dis.calc(g0, g1, None)


class RaftFlow:
    """torchvision `raft_large` with user-supplied weights, called like the official TC script.

    The official script feeds 0..255 frames padded with zeros to a multiple of 8 (split
    symmetrically) to RAFT, which maps them to [-1, 1]; torchvision's RAFT expects [-1, 1]
    inputs, so we pad first and normalise after, giving the same -1 padding. 20 refinement
    iterations as in the official call. The official weights are `raft-things`
    (torchvision `Raft_Large_Weights.C_T_V1`).

    Args:
        weights: path to a local state-dict file of torchvision `raft_large`.
        device: torch device ("cuda" when available by default).
        iters: number of flow updates.
    """

    def __init__(self, weights: str, device: str | None = None, iters: int = 20):
        import torch
        from torchvision.models.optical_flow import raft_large

        from vidseg.engine.checkpoint import load_checkpoint

        if not weights or not os.path.isfile(weights):
            raise FileNotFoundError(
                f"RAFT weights file {weights!r} not found; pass a local "
                f"torchvision raft_large state dict (e.g. Raft_Large_Weights."
                f"C_T_V1, the official raft-things) or use the DIS flow"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # one-line CheckpointError for an empty, truncated or code-carrying file
        state = load_checkpoint(weights)
        if (
            isinstance(state, dict)
            and "state_dict" in state
            and isinstance(state["state_dict"], dict)
        ):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(
                f"{weights}: holds a {type(state).__name__}, not a torchvision "
                "raft_large state dict"
            )
        state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
        model = raft_large(weights=None, progress=False)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{weights}: not a torchvision raft_large state dict "
                f"({len(missing)} missing keys e.g. {missing[:3]}, "
                f"{len(unexpected)} unexpected e.g. {unexpected[:3]})"
            )
        self.model = model.eval().to(self.device)
        self.iters = int(iters)
        self._torch = torch

    def __call__(self, rgb_t: np.ndarray, rgb_t1: np.ndarray) -> np.ndarray:
        torch = self._torch
        h, w = rgb_t.shape[:2]
        pad_h = (8 - h % 8) % 8
        pad_w = (8 - w % 8) % 8
        top, left = pad_h // 2, pad_w // 2

        def prep(rgb):
            x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
            x = torch.nn.functional.pad(x, (left, pad_w - left, top, pad_h - top))
            return (x / 255.0 * 2.0 - 1.0).to(self.device)

        with torch.inference_mode():
            flows = self.model(prep(rgb_t), prep(rgb_t1), num_flow_updates=self.iters)
        flow = flows[-1][0, :, top : top + h, left : left + w]
        return flow.permute(1, 2, 0).float().cpu().numpy()


def build_flow(
    flow: str | FlowFn, raft_weights: str | None = None, device: str | None = None
) -> tuple[FlowFn, str]:
    """Return `(flow_fn, method_label)` for a backend name or a user callable.

    Labels: "TC-DIS", "TC-RAFT", "TC-custom" (a callable, e.g. ground-truth flow in tests).
    """
    if callable(flow):
        return flow, "TC-custom"
    if flow == "dis":
        return DISFlow("medium"), "TC-DIS"
    if flow == "raft":
        if not raft_weights:
            raise ValueError(
                "flow 'raft' needs a local weights file (raft_weights / --raft-weights); "
                "nothing is downloaded. Use flow 'dis' otherwise"
            )
        return RaftFlow(raft_weights, device=device), "TC-RAFT"
    raise ValueError(f"unknown flow backend {flow!r}; expected 'dis', 'raft' or a callable")
