"""Synthetic VSPW-format dataset: textured stuff layers, moving things, camera motion, degradations.

Every class is a procedural texture (an oriented grating at a class-specific frequency and angle,
blob noise and grain) whose colours overlap with the other classes, so one pixel's colour does not
give its class away: a model needs local context. Each video has a background of "stuff" layers
with wavy boundaries that pans and zooms with the camera, 2-5 "things" that move, scale and occlude
each other in a fixed depth order (their textures move with them), "others" regions (raw 0), thin
void bands (raw 255) around some objects, a global illumination ramp, sensor noise, and bursts of
strong noise or blur. Video k is drawn from `numpy.random.default_rng((seed, k))` alone, so the
output does not depend on how many workers render it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import string
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

GENERATOR_VERSION = 1
MANIFEST = "vidseg_synthetic.json"
CLASS_FILE = "label_num_dic_final.json"
MP4_FPS = 15
BASE_HEIGHT = 144.0  # texture frequencies and sizes are given for this frame height
_ID_CHARS = string.ascii_letters + string.digits + "-_"


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


def class_ids(num_classes: int = 124) -> dict[str, int]:
    """Raw ids of the classes the generator draws, spread over 1..num_classes."""
    n = len(USED_CLASSES)
    return {name: 1 + round(k * (num_classes - 1) / (n - 1)) for k, name in enumerate(USED_CLASSES)}


def class_table(num_classes: int = 124) -> dict[str, int]:
    """The `label_num_dic_final.json` dict: "others" -> 0, used classes by name, "unused_XXX" rest."""
    used = {v: k for k, v in class_ids(num_classes).items()}
    table = {"others": 0}
    for raw in range(1, num_classes + 1):
        table[used.get(raw, f"unused_{raw:03d}")] = raw
    return table


def _texture(rng: np.random.Generator, cls: TextureClass, h: int, w: int, scale: float) -> np.ndarray:
    """Render `cls` as a float32 RGB `(h, w, 3)` image with per-call jitter."""
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    freq = min(cls.freq * rng.uniform(0.9, 1.1) / scale, 0.45)  # stay below Nyquist
    theta = math.radians(cls.angle + rng.uniform(-8, 8))
    c, s = math.cos(theta), math.sin(theta)
    value = cls.grating * np.sin((2 * math.pi * freq) * (xs * c + ys * s) + rng.uniform(0, 2 * math.pi))
    if cls.cross:
        value += cls.grating * np.sin((2 * math.pi * freq) * (ys * c - xs * s) + rng.uniform(0, 6.3))
        value *= 0.5
    # shared blobs modulate along the tint; per-channel blobs spread the hue of every class
    cell = cls.blob_px * scale
    value = value + cls.blobs * _smooth_noise(rng, h, w, 1, cell)[..., 0]
    value = value + cls.grain * rng.standard_normal((h, w), dtype=np.float32)
    chroma = 12.0 * _smooth_noise(rng, h, w, 3, cell)
    mean = np.asarray(cls.mean, np.float32) + rng.uniform(-12, 12, 3).astype(np.float32)
    return mean + value[..., None] * np.asarray(cls.tint, np.float32) + chroma


def _smooth_noise(rng: np.random.Generator, h: int, w: int, channels: int, cell: float) -> np.ndarray:
    """Unit-scale blob noise `(h, w, channels)`: a Gaussian lattice of `cell` px, cubic-upsampled."""
    step = max(2, int(round(cell)))
    coarse = rng.standard_normal((h // step + 3, w // step + 3, channels), dtype=np.float32)
    fine = cv2.resize(coarse, ((w // step + 3) * step, (h // step + 3) * step), interpolation=cv2.INTER_CUBIC)
    return fine.reshape(fine.shape[0], fine.shape[1], channels)[step:step + h, step:step + w]


def _others_texture(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """A texture for "others" (raw 0) with random parameters in the same colour range."""
    cls = TextureClass("others", tuple(rng.uniform(110, 165, 3)), tuple(rng.uniform(0.8, 1.0, 3)),
                       rng.uniform(0.03, 0.35), rng.uniform(-90, 90), rng.uniform(15, 35),
                       rng.uniform(8, 25), rng.uniform(2, 15), rng.uniform(4, 16))
    return _texture(rng, cls, h, w, scale)


def _blob_polygon(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
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
        cv2.ellipse(mask, (cx, int(ph / 2 + head)), (int(w / 2), int(h / 2 - head)), 0, 0, 360, 1, -1)
    elif kind == "car":  # body and cabin
        body = [[2, ph * 0.45], [pw - 3, ph * 0.5], [pw - 3, ph - 3], [2, ph - 3]]
        roof = [[pw * 0.25, ph * 0.48], [pw * 0.35, 2], [pw * 0.7, 2], [pw * 0.82, ph * 0.5]]
        cv2.fillPoly(mask, [np.round(np.array(p)).astype(np.int32) for p in (body, roof)], 1)
    else:
        cv2.fillPoly(mask, [_blob_polygon(rng, pw / 2, ph / 2, w / 2 - 2, h / 2 - 2)], 1)
    return mask, h


class _Scene:
    """One video's world: camera path, background canvas (RGB + labels) and moving objects."""

    def __init__(self, rng: np.random.Generator, frames: int, height: int, width: int,
                 ids: dict[str, int]):
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
            poly = _blob_polygon(rng, rng.uniform(0, cw), rng.uniform(0, ch), *rng.uniform(8, 25, 2) * sc)
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
            tex = _others_texture(rng, ph, pw, sc) if kind == "others" else \
                _texture(rng, _BY_NAME[kind], ph, pw, sc)
            start = np.array([rng.uniform(0.1, 0.9) * W, rng.uniform(0.55, 0.9) * H])
            world = (start - [W / 2, H / 2]) / self.zoom[0] + [self.cx[0] - self.ox, self.cy[0] - self.oy]
            objs.append({
                "label": 0 if kind == "others" else self.ids[kind], "mask": mask, "rgb": tex,
                "center": np.array([cx, cy]), "pos": world,
                "vel": np.array([rng.uniform(0.4, 2.5) * rng.choice([-1, 1]), rng.uniform(-0.3, 0.3)]) * sc,
                "grow": rng.uniform(-0.25, 0.35),
                "spin": rng.uniform(-1.0, 1.0) if kind == "others" else 0.0,
                "wobble": 3.0 if kind == "person" else 0.0, "phase": rng.uniform(0, 6.3),
                "void": rng.random() < 0.5, "depth": start[1] + h / 2,
            })
        objs.sort(key=lambda o: o["depth"])  # farther (higher in the frame) first, nearer occlude
        return objs

    def _camera(self, t: int) -> np.ndarray:
        """2x3 affine canvas -> frame for frame t."""
        z = self.zoom[t]
        return np.array([[z, 0, z * (self.ox - self.cx[t]) + self.W / 2],
                         [0, z, z * (self.oy - self.cy[t]) + self.H / 2]])

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame t before photometric effects: float32 RGB `(H, W, 3)` and raw labels uint8 `(H, W)`."""
        size = (self.W, self.H)
        cam = self._camera(t)
        rgb = cv2.warpAffine(self.rgb, cam, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        labels = cv2.warpAffine(self.labels, cam, size, flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_REFLECT)
        u = t / max(self.T - 1, 1)
        for o in self.objects:
            angle = math.radians(o["spin"] * t + o["wobble"] * math.sin(0.5 * t + o["phase"]))
            s = 1.0 + o["grow"] * u
            lin = self.zoom[t] * s * np.array([[math.cos(angle), -math.sin(angle)],
                                               [math.sin(angle), math.cos(angle)]])
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
            tex = cv2.warpAffine(o["rgb"], m, box, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            sel = mask.astype(bool)
            rgb[y0:y1, x0:x1][sel] = tex[sel]
            labels[y0:y1, x0:x1][sel] = o["label"]
            if o["void"]:  # annotators leave a thin unlabelled gap at some object borders
                kernel = np.ones((3, 3), np.uint8)
                band = (cv2.dilate(mask, kernel) ^ cv2.erode(mask, kernel)).astype(bool)
                labels[y0:y1, x0:x1][band] = 255
        return rgb, labels


def _photometric(rng: np.random.Generator, frames: int, scale: float) -> list[tuple]:
    """Per frame (gain RGB, blur sigma, noise sigma): illumination ramp plus noise / blur bursts."""
    t = np.arange(frames)
    gain = 1.0 + rng.uniform(0.05, 0.25) * np.sin(2 * math.pi * t / rng.uniform(15, 40) + rng.uniform(0, 6.3))
    tint = 1.0 + rng.uniform(-0.04, 0.04, 3)
    blur = np.zeros(frames)
    noise = np.full(frames, rng.uniform(1.0, 4.0))
    for arr, lo, hi in ((blur, 1.0 * scale, 2.5 * scale), (noise, 8.0, 16.0)):
        if rng.random() < 0.5:
            start, length = int(rng.integers(0, frames)), int(rng.integers(2, 6))
            arr[start:start + length] = rng.uniform(lo, hi)
    return [(gain[k] * tint, blur[k], noise[k]) for k in range(frames)]


def _render_video(out_dir: str, job: dict) -> dict:
    """Write one video's frames (and masks unless test; mp4 if asked); returns pixel counts."""
    rng = np.random.default_rng((job["seed"], job["index"]))
    name = f"{1001 + job['index']}_{''.join(rng.choice(list(_ID_CHARS), 11))}_0"
    first = int(rng.integers(1, 3000))
    frames, height, width = job["frames"], job["height"], job["width"]
    scene = _Scene(rng, frames, height, width, job["ids"])
    looks = _photometric(rng, frames, scene.scale)
    folder = os.path.join(out_dir, "data", name)
    os.makedirs(os.path.join(folder, "origin"))
    if job["masks"]:
        os.makedirs(os.path.join(folder, "mask"))
    counts = np.zeros(256, np.int64)
    mp4 = os.path.join(out_dir, "videos", name + ".mp4")
    with _mp4_writer(mp4, width, height) if job["mp4"] else contextlib.nullcontext() as add_frame:
        for t in range(frames):
            rgb, labels = scene.render(t)
            gain, blur, noise = looks[t]
            rgb *= gain.astype(np.float32)
            if blur > 0:
                rgb = cv2.GaussianBlur(rgb, (0, 0), blur)
            rgb += noise * rng.standard_normal(rgb.shape, dtype=np.float32)
            img = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
            stem = f"{first + t:08d}"
            _write(os.path.join(folder, "origin", stem + ".jpg"),
                   cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90]))
            if job["masks"]:
                _write(os.path.join(folder, "mask", stem + ".png"), cv2.imencode(".png", labels))
                counts += np.bincount(labels.ravel(), minlength=256)
            if add_frame is not None:
                add_frame(img)
    return {"name": name, "counts": counts}


def _write(path: str, encoded: tuple[bool, np.ndarray]) -> None:
    ok, data = encoded
    if not ok:
        raise OSError(f"could not encode {path}")
    with open(path, "wb") as f:
        f.write(data.tobytes())


@contextlib.contextmanager
def _mp4_writer(path: str, width: int, height: int):
    """Yield a function that appends an RGB uint8 frame to an H.264 (yuv420p, 15 fps) mp4."""
    import av  # only needed when mp4s are asked for

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=MP4_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        yield lambda rgb: container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))


def _check_args(params: dict) -> None:
    for key in ("num_train", "num_val", "num_test", "frames", "height", "width"):
        if not isinstance(params[key], (int, np.integer)) or params[key] < 0:
            raise ValueError(f"make_synthetic_vspw: {key}={params[key]!r}, expected an integer >= 0")
    if params["num_train"] + params["num_val"] + params["num_test"] == 0 or params["frames"] < 1:
        raise ValueError(f"make_synthetic_vspw: nothing to write ({params}); expected at least "
                         "one video of at least one frame")
    h, w = params["height"], params["width"]
    if h < 16 or w < 16:
        raise ValueError(f"make_synthetic_vspw: frame size {h}x{w} (HxW), expected >= 16x16")
    if params["write_mp4"] and params["num_val"] and (h % 2 or w % 2):
        raise ValueError(f"make_synthetic_vspw: frame size {h}x{w} (HxW) has an odd side; yuv420p "
                         "mp4 needs even sizes (or pass write_mp4=False)")
    if not len(USED_CLASSES) <= params["num_classes"] <= 124:
        raise ValueError(f"make_synthetic_vspw: num_classes={params['num_classes']}, expected "
                         f"{len(USED_CLASSES)}..124 (VSPW raw ids are 1..124)")


def _prepare_out_dir(out_dir: str) -> None:
    """Create `out_dir`; replace an earlier synthetic dataset there, refuse any other content."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not os.path.isfile(os.path.join(out_dir, MANIFEST)):
            raise ValueError(f"output folder {out_dir} is not empty and holds no {MANIFEST}: "
                             "expected a new or empty folder, or an earlier synthetic dataset")
        for sub in ("data", "videos"):
            shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
    os.makedirs(os.path.join(out_dir, "data"), exist_ok=True)


def make_synthetic_vspw(out_dir: str | os.PathLike, *, num_train: int = 16, num_val: int = 4,
                        num_test: int = 2, frames: int = 30, height: int = 144, width: int = 256,
                        seed: int = 0, write_mp4: bool = True, num_classes: int = 124,
                        workers: int | None = None) -> dict:
    """Write a deterministic synthetic dataset in the VSPW layout.

    Writes `train.txt`, `val.txt`, `test.txt`, `label_num_dic_final.json`, `vidseg_synthetic.json`
    (generator version, parameters, expected counts per split), `data/<video>/origin/<stem>.jpg`
    (RGB, JPEG quality 90), `data/<video>/mask/<stem>.png` (raw ids, uint8 single channel; not for
    test videos) and, when `write_mp4`, `videos/<video>.mp4` (H.264 yuv420p, 15 fps) per val video.
    The same arguments give byte-identical files whatever `workers` is (on one machine and the
    same OpenCV / libjpeg / x264 builds; other builds may round the float rendering differently).

    Args:
        out_dir: output root; created. An earlier synthetic dataset there is replaced.
        num_train, num_val, num_test: videos per split.
        frames: frames per video (stems are contiguous from a random source index).
        height, width: frame size in pixels.
        seed: dataset seed; video k uses `default_rng((seed, k))`.
        write_mp4: also write the val videos as mp4 (for the streaming path).
        num_classes: raw class count K in the class list (10..124).
        workers: threads rendering videos in parallel (default: CPU count).

    Returns:
        Summary dict: `out_dir`, `videos`/`frames`/`masks` per split, `classes_used` (name -> raw
        id), `class_pixels` (name -> labelled pixels in train+val, "void" for 255), `seconds`.
    """
    start = time.perf_counter()
    out_dir = os.fspath(out_dir)
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    params = {"num_train": num_train, "num_val": num_val, "num_test": num_test, "frames": frames,
              "height": height, "width": width, "write_mp4": write_mp4, "num_classes": num_classes}
    _check_args(params)
    _prepare_out_dir(out_dir)
    ids = class_ids(num_classes)
    expected = {split: {"videos": n, "frames": n * frames, "masks": 0 if split == "test" else n * frames}
                for split, n in sizes.items()}
    # written first, so that an interrupted run is recognised (and replaced) by the next one
    _write_json(os.path.join(out_dir, MANIFEST), {
        "generator": "vidseg.data.synthetic", "version": GENERATOR_VERSION, "seed": seed,
        "parameters": params, "expected": expected, "classes_used": ids})
    _write_json(os.path.join(out_dir, CLASS_FILE), class_table(num_classes))
    if write_mp4 and num_val:
        os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
    splits = [split for split, n in sizes.items() for _ in range(n)]
    jobs = [{"index": k, "seed": seed, "frames": frames, "height": height, "width": width, "ids": ids,
             "masks": split != "test", "mp4": write_mp4 and split == "val"}
            for k, split in enumerate(splits)]
    workers = max(1, min(len(jobs), workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:  # numpy and OpenCV release the GIL in the heavy parts
        results = list(pool.map(lambda job: _render_video(out_dir, job), jobs))
    for split in sizes:
        with open(os.path.join(out_dir, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.writelines(r["name"] + "\n" for r, s in zip(results, splits) if s == split)
    total = sum(r["counts"] for r in results)
    names = {v: k for k, v in ids.items()} | {0: "others", 255: "void"}
    return {"out_dir": out_dir, **{key: {s: e[key] for s, e in expected.items()}
                                   for key in ("videos", "frames", "masks")},
            "classes_used": ids,
            "class_pixels": {names[v]: int(total[v]) for v in sorted(names) if total[v]},
            "seconds": round(time.perf_counter() - start, 3), "workers": workers}


def _write_json(path: str, obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
