"""Scene and texture rendering for the synthetic dataset (`vidseg.data.synthetic`).

Every class is a procedural texture (an oriented grating at a class-specific frequency and angle,
blob noise and grain). A `Scene` is one video's world: textured "stuff" layers with wavy
boundaries on a canvas that the camera pans and zooms over, and "things" that move, scale and
occlude each other in depth order. `photometric` draws the per-frame illumination, noise and blur.
All randomness comes from the generator passed in, consumed in a fixed order, so the same
generator state gives the same video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

BASE_HEIGHT = 144.0  # texture frequencies and sizes are given for this frame height


@dataclass(frozen=True)
class TextureClass:
    """A procedural texture; amplitudes are in 0..255 colour units, `freq` in cycles per pixel."""

    name: str
    mean: tuple[float, float, float]  # RGB
    tint: tuple[float, float, float]  # colour direction of the grating / noise modulation
    freq: float
    angle: float  # degrees; 0 = stripes vary along x
    grating: float
    blobs: float
    grain: float
    blob_px: float = 8.0  # size of the blob-noise lattice cell
    cross: bool = False  # add the perpendicular grating (window grids)


# Muted means and modulation of similar strength in every class keep the colour distributions
# overlapping; frequency, orientation and grain are what tell the classes apart.
STUFF = (
    TextureClass("sky", (140, 150, 165), (0.8, 0.9, 1.0), 0.02, 10, 18, 30, 2, 28),
    TextureClass("wall", (150, 140, 135), (1.0, 0.95, 0.9), 0.22, 90, 34, 10, 4, 12),
    TextureClass("building", (135, 135, 140), (1.0, 1.0, 1.0), 0.10, 0, 26, 12, 4, 10, True),
    TextureClass("tree", (105, 125, 100), (0.9, 1.0, 0.8), 0.30, 45, 26, 24, 18, 4),
    TextureClass("grass", (122, 138, 110), (0.9, 1.0, 0.8), 0.36, 5, 34, 14, 10, 6),
    TextureClass("road", (125, 125, 130), (1.0, 1.0, 1.0), 0.04, 0, 14, 18, 22, 6),
    TextureClass("water", (120, 135, 148), (0.8, 0.95, 1.0), 0.07, 85, 36, 16, 4, 16),
    TextureClass("sand", (155, 145, 128), (1.0, 0.95, 0.85), 0.14, -30, 28, 18, 12, 8),
)
THINGS = (
    TextureClass("car", (130, 120, 130), (1.0, 0.9, 1.0), 0.09, 0, 40, 14, 6, 8),
    TextureClass("person", (142, 128, 120), (1.0, 0.9, 0.85), 0.20, 90, 32, 12, 8, 6),
)
USED_CLASSES = tuple(c.name for c in STUFF + THINGS)
_BY_NAME = {c.name: c for c in STUFF + THINGS}


def _texture(
    rng: np.random.Generator, cls: TextureClass, h: int, w: int, scale: float
) -> np.ndarray:
    """Render `cls` as a float32 RGB `(h, w, 3)` image with per-call jitter."""
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    freq = min(cls.freq * rng.uniform(0.9, 1.1) / scale, 0.45)  # stay below Nyquist
    theta = math.radians(cls.angle + rng.uniform(-8, 8))
    c, s = math.cos(theta), math.sin(theta)
    value = cls.grating * np.sin(
        (2 * math.pi * freq) * (xs * c + ys * s) + rng.uniform(0, 2 * math.pi)
    )
    if cls.cross:
        value += cls.grating * np.sin(
            (2 * math.pi * freq) * (ys * c - xs * s) + rng.uniform(0, 6.3)
        )
        value *= 0.5
    # shared blobs modulate along the tint; per-channel blobs spread the hue of every class
    cell = cls.blob_px * scale
    value = value + cls.blobs * _smooth_noise(rng, h, w, 1, cell)[..., 0]
    value = value + cls.grain * rng.standard_normal((h, w), dtype=np.float32)
    chroma = 12.0 * _smooth_noise(rng, h, w, 3, cell)
    mean = np.asarray(cls.mean, np.float32) + rng.uniform(-12, 12, 3).astype(np.float32)
    return mean + value[..., None] * np.asarray(cls.tint, np.float32) + chroma


def _smooth_noise(
    rng: np.random.Generator, h: int, w: int, channels: int, cell: float
) -> np.ndarray:
    """Unit-scale blob noise `(h, w, channels)`: a Gaussian lattice of `cell` px, cubic-upsampled."""
    step = max(2, int(round(cell)))
    coarse = rng.standard_normal((h // step + 3, w // step + 3, channels), dtype=np.float32)
    fine = cv2.resize(
        coarse, ((w // step + 3) * step, (h // step + 3) * step), interpolation=cv2.INTER_CUBIC
    )
    return fine.reshape(fine.shape[0], fine.shape[1], channels)[step : step + h, step : step + w]


def _others_texture(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """A texture for "others" (raw 0) with random parameters in the same colour range."""
    cls = TextureClass(
        "others",
        tuple(rng.uniform(110, 165, 3)),
        tuple(rng.uniform(0.8, 1.0, 3)),
        rng.uniform(0.03, 0.35),
        rng.uniform(-90, 90),
        rng.uniform(15, 35),
        rng.uniform(8, 25),
        rng.uniform(2, 15),
        rng.uniform(4, 16),
    )
    return _texture(rng, cls, h, w, scale)


def _blob_polygon(
    rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float
) -> np.ndarray:
    n = int(rng.integers(6, 11))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radius = rng.uniform(0.55, 1.0, n)
    pts = np.stack([cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)], 1)
    return np.round(pts).astype(np.int32)


def _wave(rng: np.random.Generator, xs: np.ndarray, amp: float, wavelength: float) -> np.ndarray:
    out = np.zeros_like(xs)
    for k in range(3):
        lam = wavelength * rng.uniform(0.5, 1.5) / (k + 1)
        out += amp / (k + 1) * np.sin(2 * math.pi * xs / lam + rng.uniform(0, 2 * math.pi))
    return out


def _thing_mask(rng: np.random.Generator, kind: str, H: int, W: int) -> tuple[np.ndarray, float]:
    """Binary uint8 silhouette of a car / person / "others" blob (2 px margin) and its height."""
    if kind == "person":
        h = rng.uniform(0.25, 0.5) * H
        w = h * rng.uniform(0.3, 0.42)
    elif kind == "car":
        w = rng.uniform(0.2, 0.38) * W
        h = w * rng.uniform(0.4, 0.55)
    else:
        h = w = rng.uniform(0.12, 0.3) * H
    ph, pw = int(math.ceil(h)) + 4, int(math.ceil(w)) + 4
    mask = np.zeros((ph, pw), np.uint8)
    if kind == "person":  # head and body ellipses
        head, cx = h * 0.12, int(pw / 2)
        cv2.ellipse(mask, (cx, int(2 + head)), (int(head * 0.8), int(head)), 0, 0, 360, 1, -1)
        cv2.ellipse(
            mask, (cx, int(ph / 2 + head)), (int(w / 2), int(h / 2 - head)), 0, 0, 360, 1, -1
        )
    elif kind == "car":  # body and cabin
        body = [[2, ph * 0.45], [pw - 3, ph * 0.5], [pw - 3, ph - 3], [2, ph - 3]]
        roof = [[pw * 0.25, ph * 0.48], [pw * 0.35, 2], [pw * 0.7, 2], [pw * 0.82, ph * 0.5]]
        cv2.fillPoly(mask, [np.round(np.array(p)).astype(np.int32) for p in (body, roof)], 1)
    else:
        cv2.fillPoly(mask, [_blob_polygon(rng, pw / 2, ph / 2, w / 2 - 2, h / 2 - 2)], 1)
    return mask, h


class Scene:
    """One video's world: camera path, background canvas (RGB + labels) and moving objects."""

    def __init__(
        self, rng: np.random.Generator, frames: int, height: int, width: int, ids: dict[str, int]
    ):
        self.rng, self.T, self.H, self.W = rng, frames, height, width
        self.scale = scale = height / BASE_HEIGHT
        t = np.arange(frames, dtype=np.float64)
        u = t / max(frames - 1, 1)
        pan = rng.uniform(0.3, 2.0) * scale * rng.choice([-1.0, 1.0])
        self.zoom = 1.0 + rng.uniform(-0.08, 0.12) * u
        self.cx = pan * t
        self.cy = 1.5 * scale * np.sin(2 * math.pi * t / rng.uniform(8, 20) + rng.uniform(0, 6.3))
        half_w, half_h = width / (2 * self.zoom), height / (2 * self.zoom)
        # canvas origin (world coords) and size: the union of every frame's view plus a margin
        self.ox = float(np.min(self.cx - half_w)) - 3
        self.oy = float(np.min(self.cy - half_h)) - 3
        cw = int(math.ceil(np.max(self.cx + half_w) - self.ox)) + 4
        ch = int(math.ceil(np.max(self.cy + half_h) - self.oy)) + 4
        self.ids = ids
        self.labels, self.rgb = self._background(ch, cw)
        self.objects = self._objects()

    def _canvas_y(self, frac: float) -> float:
        """Canvas row shown at fraction `frac` of the frame height in frame 0."""
        return self.cy[0] - self.oy + (frac - 0.5) * self.H / self.zoom[0]

    def _background(self, ch: int, cw: int) -> tuple[np.ndarray, np.ndarray]:
        rng, sc = self.rng, self.scale
        xs = np.arange(cw, dtype=np.float32)
        ys = np.arange(ch, dtype=np.float32)[:, None]
        indoor = rng.random() < 0.3
        top = "wall" if indoor else "sky"
        horizon = self._canvas_y(rng.uniform(0.45, 0.7) if indoor else rng.uniform(0.3, 0.5))
        horizon = horizon + _wave(rng, xs, 4 * sc, 120 * sc)
        bottom = list(rng.choice(["road", "grass", "water", "sand"], 2, replace=False))
        names = np.array(["", top, "building", "tree", bottom[1], "others"], dtype=object)
        layer = np.zeros((ch, cw), np.uint8)  # index into names; 0 = first bottom class
        layer[ys < horizon] = 1
        middle = None if indoor else rng.choice(["building", "tree", "none"], p=[0.35, 0.35, 0.3])
        if middle == "building":
            edges = np.cumsum(rng.uniform(18, 60, cw) * sc)
            heights = rng.uniform(0.1, 0.3, edges.size) * self.H
            band = heights[np.searchsorted(edges, xs)]
            layer[(ys < horizon) & (ys >= horizon - band)] = 2
        elif middle == "tree":
            band = 0.12 * self.H + _wave(rng, xs, 6 * sc, 30 * sc) + rng.uniform(0, 4 * sc, cw)
            layer[(ys < horizon) & (ys >= horizon - band)] = 3
        if rng.random() < 0.6:  # second ground class beside the first, wavy near-vertical border
            split = rng.uniform(0.2, 0.8) * cw + rng.uniform(-0.6, 0.6) * (ys - horizon.mean())
            split = split + _wave(rng, ys[:, 0], 5 * sc, 40 * sc)[:, None]
            layer[(ys >= horizon) & (xs[None, :] > split)] = 4
        for _ in range(int(rng.integers(0, 3))):  # "others" blobs (signs, rocks) fixed in the world
            poly = _blob_polygon(
                rng, rng.uniform(0, cw), rng.uniform(0, ch), *rng.uniform(8, 25, 2) * sc
            )
            cv2.fillPoly(layer, [poly], 5)
        labels = np.zeros((ch, cw), np.uint8)
        rgb = np.zeros((ch, cw, 3), np.float32)
        for k in np.unique(layer):
            sel = layer == k
            name = names[k] if k else bottom[0]
            if name == "others":
                tex = _others_texture(rng, ch, cw, sc)
            else:
                tex = _texture(rng, _BY_NAME[name], ch, cw, sc)
                labels[sel] = self.ids[name]
            rgb[sel] = tex[sel]
        return labels, rgb

    def _objects(self) -> list[dict]:
        rng, sc, H, W = self.rng, self.scale, self.H, self.W
        objs = []
        for _ in range(int(rng.integers(2, 6))):
            kind = str(rng.choice(["car", "person", "others"], p=[0.4, 0.4, 0.2]))
            mask, h = _thing_mask(rng, kind, H, W)
            ph, pw = mask.shape
            cx, cy = pw / 2, ph / 2
            tex = (
                _others_texture(rng, ph, pw, sc)
                if kind == "others"
                else _texture(rng, _BY_NAME[kind], ph, pw, sc)
            )
            start = np.array([rng.uniform(0.1, 0.9) * W, rng.uniform(0.55, 0.9) * H])
            world = (start - [W / 2, H / 2]) / self.zoom[0] + [
                self.cx[0] - self.ox,
                self.cy[0] - self.oy,
            ]
            objs.append(
                {
                    "label": 0 if kind == "others" else self.ids[kind],
                    "mask": mask,
                    "rgb": tex,
                    "center": np.array([cx, cy]),
                    "pos": world,
                    "vel": np.array(
                        [rng.uniform(0.4, 2.5) * rng.choice([-1, 1]), rng.uniform(-0.3, 0.3)]
                    )
                    * sc,
                    "grow": rng.uniform(-0.25, 0.35),
                    "spin": rng.uniform(-1.0, 1.0) if kind == "others" else 0.0,
                    "wobble": 3.0 if kind == "person" else 0.0,
                    "phase": rng.uniform(0, 6.3),
                    "void": rng.random() < 0.5,
                    "depth": start[1] + h / 2,
                }
            )
        objs.sort(key=lambda o: o["depth"])  # farther (higher in the frame) first, nearer occlude
        return objs

    def _camera(self, t: int) -> np.ndarray:
        """2x3 affine canvas -> frame for frame t."""
        z = self.zoom[t]
        return np.array(
            [
                [z, 0, z * (self.ox - self.cx[t]) + self.W / 2],
                [0, z, z * (self.oy - self.cy[t]) + self.H / 2],
            ]
        )

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame t before photometric effects: float32 RGB `(H, W, 3)` and raw labels uint8 `(H, W)`."""
        size = (self.W, self.H)
        cam = self._camera(t)
        rgb = cv2.warpAffine(
            self.rgb, cam, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        labels = cv2.warpAffine(
            self.labels, cam, size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT
        )
        u = t / max(self.T - 1, 1)
        for o in self.objects:
            angle = math.radians(o["spin"] * t + o["wobble"] * math.sin(0.5 * t + o["phase"]))
            s = 1.0 + o["grow"] * u
            lin = (
                self.zoom[t]
                * s
                * np.array(
                    [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
                )
            )
            pos = o["pos"] + o["vel"] * t
            shift = cam[:, :2] @ pos + cam[:, 2] - lin @ o["center"]
            # warp only into the object's bounding box (+2 px for the void band): far cheaper
            ph, pw = o["mask"].shape
            corners = lin @ np.array([[0, pw, 0, pw], [0, 0, ph, ph]], np.float64) + shift[:, None]
            x0, y0 = np.maximum(np.floor(corners.min(1)).astype(int) - 2, 0)
            x1, y1 = np.minimum(np.ceil(corners.max(1)).astype(int) + 3, [self.W, self.H])
            if x1 <= x0 or y1 <= y0:
                continue
            m = np.hstack([lin, (shift - [x0, y0])[:, None]])
            box = (x1 - x0, y1 - y0)
            mask = cv2.warpAffine(o["mask"], m, box, flags=cv2.INTER_NEAREST)
            tex = cv2.warpAffine(
                o["rgb"], m, box, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
            sel = mask.astype(bool)
            rgb[y0:y1, x0:x1][sel] = tex[sel]
            labels[y0:y1, x0:x1][sel] = o["label"]
            if o["void"]:  # annotators leave a thin unlabelled gap at some object borders
                kernel = np.ones((3, 3), np.uint8)
                band = (cv2.dilate(mask, kernel) ^ cv2.erode(mask, kernel)).astype(bool)
                labels[y0:y1, x0:x1][band] = 255
        return rgb, labels


def photometric(rng: np.random.Generator, frames: int, scale: float) -> list[tuple]:
    """Per frame (gain RGB, blur sigma, noise sigma): illumination ramp plus noise / blur bursts."""
    t = np.arange(frames)
    gain = 1.0 + rng.uniform(0.05, 0.25) * np.sin(
        2 * math.pi * t / rng.uniform(15, 40) + rng.uniform(0, 6.3)
    )
    tint = 1.0 + rng.uniform(-0.04, 0.04, 3)
    blur = np.zeros(frames)
    noise = np.full(frames, rng.uniform(1.0, 4.0))
    for arr, lo, hi in ((blur, 1.0 * scale, 2.5 * scale), (noise, 8.0, 16.0)):
        if rng.random() < 0.5:
            start, length = int(rng.integers(0, frames)), int(rng.integers(2, 6))
            arr[start : start + length] = rng.uniform(lo, hi)
    return [(gain[k] * tint, blur[k], noise[k]) for k in range(frames)]
