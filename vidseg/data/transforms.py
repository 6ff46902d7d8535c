"""Clip-consistent augmentation and normalisation.

Every frame of a clip gets the same geometric parameters (scale, crop, flip) and the same
photometric jitter, so the history frames stay aligned with the current frame the way they
would be in a real video. Random parameters come from a `numpy.random.Generator` (passed per
call or owned by the transform), never from the global RNG, so a data-loader sample is
reproducible from its seed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_short_side(
    img: np.ndarray, short_side: int | None, interpolation: int | None = cv2.INTER_LINEAR
) -> np.ndarray:
    """Resize so that min(H, W) == short_side, keeping the aspect ratio (None: unchanged).

    `interpolation=None` picks INTER_AREA when shrinking (averages source pixels, no aliasing)
    and INTER_LINEAR when enlarging; the frame sources use that for display-size decoding.
    """
    if short_side is None:
        return img
    h, w = img.shape[:2]
    scale = short_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return img
    if interpolation is None:
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interpolation)


def _as_rgb(frame: np.ndarray) -> np.ndarray:
    # streaming sources may hand over grayscale or RGBA frames
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return frame[:, :, :3]
    if frame.ndim == 3 and frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame of shape {frame.shape}; expected (H, W, 3) RGB uint8")
    return frame


@functools.lru_cache(maxsize=16)
def _normalise_table(mean: tuple, std: tuple) -> np.ndarray:
    """`(3, 256)` float32: the normalised value of every uint8 level, per channel.

    The arithmetic is the MCIBI++ authors' (sssegmentation `Normalize`): subtract the float32
    mean on the 0-255 scale in float32, then multiply by 1 / std in float64 and round to
    float32, so our input tensors equal theirs bit for bit (tests/test_ssseg_parity.py).
    """
    levels = np.arange(256, dtype=np.float32)
    table = np.empty((3, 256), dtype=np.float32)
    for c in range(3):
        shifted = levels - np.float32(mean[c] * 255.0)
        table[c] = (shifted.astype(np.float64) * (1.0 / (std[c] * 255.0))).astype(np.float32)
    return table


def _normalise(frames: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 `(T, H, W, 3)` -> float32 `(T, 3, H, W)` normalised (one table lookup per value)."""
    table = _normalise_table(tuple(float(m) for m in mean), tuple(float(s) for s in std))
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:  # e.g. float frames after a jitter: same arithmetic, computed
        shift = np.asarray([np.float32(m * 255.0) for m in mean], dtype=np.float32)
        inv = np.asarray([1.0 / (s * 255.0) for s in std])
        out = ((frames.astype(np.float32) - shift).astype(np.float64) * inv).astype(np.float32)
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    chw = frames.transpose(0, 3, 1, 2)
    out = np.empty(chw.shape, dtype=np.float32)
    for c in range(3):
        np.take(table[c], chw[:, c], out=out[:, c])
    return out


def prepare_frame(
    rgb: np.ndarray,
    short_side: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Turn one RGB uint8 `(H, W, 3)` frame into a normalised `(1, 3, H', W')` float tensor.

    Grayscale `(H, W)` and RGBA frames are converted to RGB. `short_side=None` keeps the size.
    The tensor is made on `device` (None: the CPU). Off the CPU the resized uint8 frame is
    uploaded (a quarter of the float32 bytes) and normalised there with the same lookup table,
    so the tensor is bit for bit the CPU one.
    """
    rgb = resize_short_side(_as_rgb(np.asarray(rgb)), short_side, cv2.INTER_LINEAR)
    device = torch.device("cpu" if device is None else device)
    if device.type == "cpu":
        return torch.from_numpy(_normalise(rgb[None], mean, std))
    table, offsets = _device_table(
        tuple(float(m) for m in mean), tuple(float(s) for s in std), device
    )
    pixels = torch.from_numpy(np.ascontiguousarray(rgb)).to(device, non_blocking=True)
    return table[pixels.permute(2, 0, 1).to(torch.int64) + offsets].unsqueeze(0)


@functools.lru_cache(maxsize=8)
def _device_table(
    mean: tuple, std: tuple, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_normalise_table` flat `(3 * 256,)` on `device`, and the channel offsets `(3, 1, 1)`
    (0, 256, 512) that index it from uint8 values; made once per device."""
    table = torch.from_numpy(_normalise_table(mean, std)).reshape(-1).to(device)
    offsets = torch.arange(0, 3 * 256, 256, device=device, dtype=torch.int64).reshape(3, 1, 1)
    return table, offsets


@dataclass
class ClipParams:
    """The random parameters applied to every frame of one clip."""

    size: tuple[int, int]  # (H, W) after resize and scale
    crop: tuple[int, int, int, int]  # y0, x0, y1, x1 in the scaled image
    flip: bool
    brightness: float | None  # additive delta
    contrast: float | None  # multiplier
    saturation: float | None  # multiplier
    hue: int | None  # delta on OpenCV's 0..179 hue


class ClipTransform:
    """Resize / scale / crop / flip / jitter / normalise a clip with shared parameters.

    Args:
        train: True for the random training pipeline; False resizes to `short_side` and
            normalises only.
        short_side: target short side before the random scale (None keeps the size).
        scale_range: random scale factor range applied after the short-side resize.
        crop_size: crop `(H, W)` (or an int for a square); smaller images are padded.
        cat_max_ratio: the crop is redrawn (up to 10 tries) while one class covers at least this
            fraction of the valid pixels of the current frame's label (>= 1 disables).
        flip_prob: probability of a horizontal flip.
        jitter: photometric jitter (brightness, contrast, saturation, hue), each with p = 0.5.
        mean, std: normalisation in [0, 1] units.
        ignore_index: label used for padding.
        seed: seed of the generator used when no `rng` is passed to a call.

    Call: `transform(frames, labels=None, rng=None)` with a list of T RGB uint8 `(H, W, 3)`
    frames and a list of uint8 label maps `(H, W)` (just the current frame's, or all T).
    Returns `frames (T, 3, H', W')` float32 and `labels (T', H', W')` int64 (T' = len(labels),
    an empty `(0, H', W')` tensor when no labels are given).
    """

    def __init__(
        self,
        train: bool,
        short_side: int | None = 512,
        scale_range: tuple[float, float] = (0.5, 2.0),
        crop_size: int | tuple[int, int] = 512,
        cat_max_ratio: float = 0.75,
        flip_prob: float = 0.5,
        jitter: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = 255,
        seed: int | None = None,
    ):
        self.train = train
        self.short_side = short_side
        self.scale_range = tuple(scale_range)
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        self.cat_max_ratio = cat_max_ratio
        self.flip_prob = flip_prob
        self.jitter = jitter
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.ignore_index = ignore_index
        self.rng = np.random.default_rng(seed)

    def __call__(
        self,
        frames: Sequence[np.ndarray],
        labels: Sequence[np.ndarray] | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        frames = [_as_rgb(np.asarray(f)) for f in frames]
        labels = [np.asarray(lab) for lab in (labels or [])]
        if not frames:
            raise ValueError("empty clip: expected at least one frame")
        shape = frames[0].shape[:2]
        for f in frames:
            if f.shape[:2] != shape:
                raise ValueError(f"clip frames differ in size: {f.shape[:2]} vs {shape}")
        for lab in labels:
            if lab.shape != shape:
                raise ValueError(f"label of size {lab.shape} for frames of size {shape}")
        if len(labels) not in (0, 1, len(frames)):
            raise ValueError(
                f"{len(labels)} label maps for {len(frames)} frames; expected 0, 1 or T"
            )
        if not self.train:
            return self._eval(frames, labels)
        return self._train(frames, labels, rng if rng is not None else self.rng)

    def _eval(self, frames, labels):
        frames = np.stack([resize_short_side(f, self.short_side, cv2.INTER_LINEAR) for f in frames])
        labels = [resize_short_side(lab, self.short_side, cv2.INTER_NEAREST) for lab in labels]
        return self._to_tensors(_normalise(frames, self.mean, self.std), labels, frames.shape[1:3])

    def sample_params(
        self, shape: tuple[int, int], label: np.ndarray | None, rng: np.random.Generator
    ) -> ClipParams:
        """Draw the clip's parameters; `label` is the current frame's map at the input size."""
        h, w = shape
        base = 1.0 if self.short_side is None else self.short_side / min(h, w)
        ratio = rng.uniform(*self.scale_range)
        size = (max(1, round(h * base * ratio)), max(1, round(w * base * ratio)))
        scaled_label = None
        if label is not None and self.cat_max_ratio < 1.0:
            scaled_label = cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        crop = self._draw_crop(size, rng)
        if scaled_label is not None:
            for _ in range(9):  # mmseg's RandomCrop: up to 10 draws in total
                y0, x0, y1, x1 = crop
                values, counts = np.unique(scaled_label[y0:y1, x0:x1], return_counts=True)
                counts = counts[values != self.ignore_index]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                crop = self._draw_crop(size, rng)
        flip = bool(rng.random() < self.flip_prob)
        brightness = contrast = saturation = hue = None
        if self.jitter:
            draws = rng.random(4)
            values = (
                rng.uniform(-32, 32),
                rng.uniform(0.5, 1.5),
                rng.uniform(0.5, 1.5),
                int(rng.integers(-18, 19)),
            )
            brightness = values[0] if draws[0] < 0.5 else None
            contrast = values[1] if draws[1] < 0.5 else None
            saturation = values[2] if draws[2] < 0.5 else None
            hue = values[3] if draws[3] < 0.5 else None
        return ClipParams(size, crop, flip, brightness, contrast, saturation, hue)

    def _draw_crop(self, size, rng):
        h, w = size
        ch, cw = self.crop_size
        y0 = int(rng.integers(0, max(h - ch, 0) + 1))
        x0 = int(rng.integers(0, max(w - cw, 0) + 1))
        return y0, x0, min(y0 + ch, h), min(x0 + cw, w)

    def _train(self, frames, labels, rng):
        params = self.sample_params(frames[0].shape[:2], labels[-1] if labels else None, rng)
        return self.apply(frames, labels, params)

    def apply(
        self, frames: Sequence[np.ndarray], labels: Sequence[np.ndarray], params: ClipParams
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply fixed parameters to every frame and label map (see the class docstring)."""
        h, w = params.size
        y0, x0, y1, x1 = params.crop
        out = []
        for f in frames:
            f = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)[y0:y1, x0:x1]
            out.append(f[:, ::-1] if params.flip else f)
        clip = self._photometric(np.stack(out), params)
        maps = []
        for lab in labels:
            lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)[y0:y1, x0:x1]
            maps.append(lab[:, ::-1] if params.flip else lab)
        return self._to_tensors(
            _normalise(clip, self.mean, self.std), maps, self.crop_size, pad=True
        )

    def _photometric(self, clip: np.ndarray, p: ClipParams) -> np.ndarray:
        """Jitter a uint8 `(T, H, W, 3)` clip with one set of parameters."""
        if p.brightness is None and p.contrast is None and p.saturation is None and p.hue is None:
            return clip
        x = clip.astype(np.float32)
        if p.brightness is not None:
            x = np.clip(x + p.brightness, 0, 255)
        if p.contrast is not None:
            x = np.clip(x * p.contrast, 0, 255)
        x = x.astype(np.uint8)
        if p.saturation is not None or p.hue is not None:
            for t in range(len(x)):
                hsv = cv2.cvtColor(x[t], cv2.COLOR_RGB2HSV)
                if p.saturation is not None:
                    hsv[..., 1] = np.clip(hsv[..., 1].astype(np.float32) * p.saturation, 0, 255)
                if p.hue is not None:
                    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + p.hue) % 180
                x[t] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return x

    def _to_tensors(self, frames: np.ndarray, labels, size, pad: bool = False):
        """float `(T, 3, h, w)` + uint8 maps -> tensors, zero/ignore-padded to `size` if `pad`."""
        th, tw = (max(size[0], frames.shape[2]), max(size[1], frames.shape[3])) if pad else size
        t, _, h, w = frames.shape
        if (h, w) != (th, tw):
            padded = np.zeros((t, 3, th, tw), dtype=np.float32)
            padded[:, :, :h, :w] = frames
            frames = padded
        lab = np.full((len(labels), th, tw), self.ignore_index, dtype=np.int64)
        for i, m in enumerate(labels):
            lab[i, : m.shape[0], : m.shape[1]] = m
        return torch.from_numpy(np.ascontiguousarray(frames)), torch.from_numpy(lab)
