"""The "hard" synthetic preset: a VSPW-format dataset where dataset-level context and time matter.

It draws the same scenes as `vidseg.data.synthetic` (the `Scene` of `synthetic_scene`), then
changes three things, each giving one of the paper's claims something to act on
(docs/ABLATIONS.md):

- **Twin classes** that look the same locally and differ only in statistics visible across the
  dataset: `haze` is sky with a small colour drift (smaller than the per-video colour jitter and
  the illumination ramp, so one patch does not tell them apart, the class statistics do);
  `hedge` is the tree texture painted as a band low in the ground, where trees never are (a
  position and neighbour cue); `floor` is the main ground class of an indoor scene (any of the
  four ground textures, told apart from them only by the walls around it).
- **Corrupted frames**: every video has bursts of 2-4 frames of heavy noise, strong blur, a
  near-opaque occluder or dropped detail (blocks replaced by their mean, like lost codec
  macroblocks). The masks keep the scene, so only the previous frames can restore what the
  current one lost. The corrupted frames are listed in `corrupted.json`.
- **Slow motion**: the camera pans and the things move at half the normal speed, so the history
  frames show nearly the same place.

Video k is drawn from `numpy.random.default_rng((seed, k))` alone, as in the normal preset.
"""

from __future__ import annotations

import contextlib
import json
import math
import os

import cv2
import numpy as np

from vidseg.data.synthetic import (
    _ID_CHARS,
    _check_args,
    _mp4_writer,
    _write,
    _write_json,
    write_dataset,
)
from vidseg.data.synthetic_scene import STUFF, THINGS, Scene, _texture, photometric

HARD_VERSION = 1
CORRUPTED_FILE = "corrupted.json"
CORRUPTIONS = ("noise", "blur", "occlusion", "dropout")
GROUND = ("road", "grass", "water", "sand")
# twin -> the classes whose texture it copies and the cue that separates them (docs/ABLATIONS.md)
TWINS = {
    "haze": (("sky",), "colour drift"),
    "hedge": (("tree",), "position and neighbours"),
    "floor": (GROUND, "neighbours: the walls of an indoor scene"),
}
# each twin follows the class it copies, so the raw ids of a pair are neighbours
HARD_CLASSES = (
    "sky",
    "haze",
    "wall",
    "building",
    "tree",
    "hedge",
    "grass",
    "road",
    "floor",
    "water",
    "sand",
    "car",
    "person",
)
HAZE_SHIFT = np.array([10.0, 4.0, -10.0], np.float32)  # RGB; per-video jitter is +-12 per channel
SLOWDOWN = 0.5  # camera pan and object speeds relative to the normal preset
_TREE = next(c for c in STUFF + THINGS if c.name == "tree")


def hard_class_ids(num_classes: int = 124) -> dict[str, int]:
    """Raw ids of the hard preset's classes, spread over 1..num_classes in `HARD_CLASSES` order."""
    n = len(HARD_CLASSES)
    return {name: 1 + round(k * (num_classes - 1) / (n - 1)) for k, name in enumerate(HARD_CLASSES)}


def hard_class_table(num_classes: int = 124) -> dict[str, int]:
    """The `label_num_dic_final.json` dict: "others" -> 0, the classes by name, "unused_XXX" rest."""
    used = {v: k for k, v in hard_class_ids(num_classes).items()}
    table = {"others": 0}
    for raw in range(1, num_classes + 1):
        table[used.get(raw, f"unused_{raw:03d}")] = raw
    return table


def _slow_down(scene: Scene) -> None:
    """Halve the camera pan (it stays inside the canvas: the path shrinks towards frame 0) and the
    object speeds."""
    scene.cx = scene.cx * SLOWDOWN
    for obj in scene.objects:
        obj["vel"] = obj["vel"] * SLOWDOWN


def _add_twins(rng: np.random.Generator, scene: Scene, ids: dict[str, int]) -> list[str]:
    """Relabel or paint the twin classes on the scene's canvas; returns the twins drawn."""
    labels, rgb, drawn = scene.labels, scene.rgb, []
    ground = np.isin(labels, [ids[g] for g in GROUND])
    if (labels == ids["wall"]).any() and ground.any():
        # indoors the main ground is "floor", whatever its texture
        main = np.bincount(labels[ground]).argmax()
        labels[labels == main] = ids["floor"]
        drawn.append("floor")
    sky = labels == ids["sky"]
    if rng.random() < 0.5 and sky.any():
        rgb[sky] += HAZE_SHIFT
        labels[sky] = ids["haze"]
        drawn.append("haze")
    if rng.random() < 0.6:
        ch, cw = labels.shape
        xs = np.arange(cw, dtype=np.float32)
        ys = np.arange(ch, dtype=np.float32)[:, None]
        # canvas row shown at fraction `frac` of the frame height in frame 0
        frac = rng.uniform(0.68, 0.8)
        top = scene.cy[0] - scene.oy + (frac - 0.5) * scene.H / scene.zoom[0]
        top = top + 3 * scene.scale * np.sin(
            2 * math.pi * xs / (rng.uniform(30, 80) * scene.scale) + rng.uniform(0, 2 * math.pi)
        )
        height = rng.uniform(0.1, 0.18) * scene.H / scene.zoom[0]
        x0 = rng.uniform(0, 0.5) * cw
        x1 = x0 + rng.uniform(0.4, 1.0) * cw
        band = (ys >= top) & (ys < top + height) & (xs >= x0) & (xs < x1)
        band &= np.isin(labels, [ids[g] for g in GROUND + ("floor",)])
        if band.any():
            tex = _texture(rng, _TREE, ch, cw, scene.scale)
            rgb[band] = tex[band]
            labels[band] = ids["hedge"]
            drawn.append("hedge")
    return drawn


def corruption_plan(
    rng: np.random.Generator, frames: int, height: int, width: int, scale: float
) -> list[dict | None]:
    """Per frame None or the corruption to apply: `{"kind", ...parameters}`.

    Bursts of 2-4 frames, one per 10 frames after the first two (at least one per video), each
    of one kind; the first two frames stay clean so that a corrupted frame has clean history.
    """
    plan: list[dict | None] = [None] * frames
    first = min(2, frames - 1)
    bursts = max(1, round((frames - first) / 10))
    segment = (frames - first) / bursts
    for b in range(bursts):
        lo, hi = first + int(b * segment), first + int((b + 1) * segment)
        length = int(rng.integers(2, 5))
        start = lo + int(rng.integers(0, max(hi - lo - length, 0) + 1))
        kind = CORRUPTIONS[int(rng.integers(len(CORRUPTIONS)))]
        params: dict = {"kind": kind}
        if kind == "noise":
            params["sigma"] = float(rng.uniform(30, 50))
        elif kind == "blur":
            params["sigma"] = float(rng.uniform(3, 5) * scale)
        elif kind == "occlusion":
            mask = np.zeros((height, width), np.uint8)
            center = (int(rng.uniform(0.2, 0.8) * width), int(rng.uniform(0.2, 0.8) * height))
            axes = (int(rng.uniform(0.3, 0.45) * width), int(rng.uniform(0.35, 0.55) * height))
            cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            params["mask"] = mask.astype(bool)
            params["colour"] = rng.uniform(70, 180, 3).astype(np.float32)
        else:
            params["block"] = max(4, round(12 * scale))
            params["p"] = float(rng.uniform(0.4, 0.7))
        for t in range(start, min(start + length, hi, frames)):
            plan[t] = params
    return plan


def _drop_detail(rng: np.random.Generator, rgb: np.ndarray, block: int, p: float) -> np.ndarray:
    """Replace a random fraction `p` of the `block` x `block` cells by their mean colour."""
    h, w, _ = rgb.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.pad(rgb, ((0, hb * block - h), (0, wb * block - w), (0, 0)), mode="edge")
    means = padded.reshape(hb, block, wb, block, 3).mean(axis=(1, 3))
    flat = np.repeat(np.repeat(means, block, 0), block, 1)[:h, :w]
    dropped = np.repeat(np.repeat(rng.random((hb, wb)) < p, block, 0), block, 1)[:h, :w]
    return np.where(dropped[..., None], flat, rgb).astype(np.float32)


def corrupt(
    rng: np.random.Generator, rgb: np.ndarray, blur: float, noise: float, corruption: dict | None
) -> tuple[np.ndarray, float, float]:
    """Apply one frame's corruption to float RGB `(H, W, 3)`; returns (rgb, blur, noise sigma)."""
    if corruption is None:
        return rgb, blur, noise
    kind = corruption["kind"]
    if kind == "noise":
        return rgb, blur, max(noise, corruption["sigma"])
    if kind == "blur":
        return rgb, max(blur, corruption["sigma"]), noise
    if kind == "occlusion":  # a near-opaque veil (dirt on the lens): the texture barely shows
        mask = corruption["mask"][..., None]
        return np.where(mask, 0.85 * corruption["colour"] + 0.15 * rgb, rgb), blur, noise
    return _drop_detail(rng, rgb, corruption["block"], corruption["p"]), blur, noise


def _render_video(out_dir: str, job: dict) -> dict:
    """Write one video's frames and masks; returns pixel counts, twins and corrupted frames."""
    rng = np.random.default_rng((job["seed"], job["index"]))
    name = f"{1001 + job['index']}_{''.join(rng.choice(list(_ID_CHARS), 11))}_0"
    first = int(rng.integers(1, 3000))
    frames, height, width = job["frames"], job["height"], job["width"]
    scene = Scene(rng, frames, height, width, job["ids"])
    _slow_down(scene)
    twins = _add_twins(rng, scene, job["ids"])
    looks = photometric(rng, frames, scene.scale)
    plan = corruption_plan(rng, frames, height, width, scene.scale)
    folder = os.path.join(out_dir, "data", name)
    os.makedirs(os.path.join(folder, "origin"))
    if job["masks"]:
        os.makedirs(os.path.join(folder, "mask"))
    counts = np.zeros(256, np.int64)
    corrupted = []
    mp4 = os.path.join(out_dir, "videos", name + ".mp4")
    with _mp4_writer(mp4, width, height) if job["mp4"] else contextlib.nullcontext() as add_frame:
        for t in range(frames):
            rgb, labels = scene.render(t)
            gain, blur, noise = looks[t]
            rgb *= gain.astype(np.float32)
            rgb, blur, noise = corrupt(rng, rgb, blur, noise, plan[t])
            if blur > 0:
                rgb = cv2.GaussianBlur(rgb, (0, 0), blur)
            rgb += noise * rng.standard_normal(rgb.shape, dtype=np.float32)
            img = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
            stem = f"{first + t:08d}"
            if plan[t] is not None:
                corrupted.append({"index": t, "stem": stem, "kind": plan[t]["kind"]})
            _write(
                os.path.join(folder, "origin", stem + ".jpg"),
                cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90]),
            )
            if job["masks"]:
                _write(os.path.join(folder, "mask", stem + ".png"), cv2.imencode(".png", labels))
                counts += np.bincount(labels.ravel(), minlength=256)
            if add_frame is not None:
                add_frame(img)
    return {"name": name, "counts": counts, "twins": twins, "corrupted": corrupted}


def read_corrupted(root: str | os.PathLike) -> dict[str, set[int]]:
    """Corrupted frame indices per video (position in the video's sorted frames), from
    `<root>/corrupted.json`.

    Raises:
        FileNotFoundError: the root holds no `corrupted.json` (not a hard-preset dataset).
    """
    path = os.path.join(os.fspath(root), CORRUPTED_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: expected a dataset written with `vidseg data synth --preset hard`"
        )
    with open(path, encoding="utf-8") as f:
        videos = json.load(f)["videos"]
    return {name: {int(item["index"]) for item in items} for name, items in videos.items()}


def make_hard_synthetic_vspw(
    out_dir: str | os.PathLike,
    *,
    num_train: int = 32,
    num_val: int = 8,
    num_test: int = 2,
    frames: int = 24,
    height: int = 144,
    width: int = 256,
    seed: int = 0,
    write_mp4: bool = True,
    num_classes: int = 124,
    workers: int | None = None,
) -> dict:
    """Write the hard preset in the VSPW layout (files as `make_synthetic_vspw`, plus
    `corrupted.json`).

    `corrupted.json` holds `{"version", "kinds", "videos": {video: [{"index", "stem", "kind"},
    ...]}}` for every video of every split (`index` is the frame's position in the video, so it
    also holds after `vidseg data convert`). The same arguments give byte-identical files
    whatever `workers` is.

    Args:
        out_dir: output root; created. An earlier synthetic dataset there is replaced.
        num_train, num_val, num_test: videos per split.
        frames: frames per video.
        height, width: frame size in pixels.
        seed: dataset seed; video k uses `default_rng((seed, k))`.
        write_mp4: also write the val videos as mp4.
        num_classes: raw class count K in the class list (13..124).
        workers: threads rendering videos in parallel (default: CPU count).

    Returns:
        Summary dict: `out_dir`, `videos`/`frames`/`masks`/`corrupted_frames` per split,
        `classes_used`, `class_pixels` (train+val), `twin_videos` (twin -> videos drawing it),
        `seconds`, `workers`.
    """
    params = {
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "frames": frames,
        "height": height,
        "width": width,
        "write_mp4": write_mp4,
        "num_classes": num_classes,
    }
    if not len(HARD_CLASSES) <= num_classes <= 124:
        raise ValueError(
            f"make_hard_synthetic_vspw: num_classes={num_classes}, expected "
            f"{len(HARD_CLASSES)}..124"
        )
    _check_args(params)
    summary, videos = write_dataset(
        out_dir,
        params,
        seed=seed,
        workers=workers,
        ids=hard_class_ids(num_classes),
        classes=hard_class_table(num_classes),
        header={
            "generator": "vidseg.data.synthetic_hard",
            "preset": "hard",
            "version": HARD_VERSION,
        },
        extra={"twins": {k: {"copies": list(v[0]), "cue": v[1]} for k, v in TWINS.items()}},
        render=_render_video,
    )
    _write_json(
        os.path.join(summary["out_dir"], CORRUPTED_FILE),
        {
            "version": HARD_VERSION,
            "kinds": list(CORRUPTIONS),
            "videos": {r["name"]: r["corrupted"] for _, r in videos},
        },
    )
    corrupted = {
        s: sum(len(r["corrupted"]) for rs, r in videos if rs == s) for s in summary["videos"]
    }
    return {
        **summary,
        "corrupted_frames": corrupted,
        "twin_videos": {t: sum(t in r["twins"] for _, r in videos) for t in TWINS},
    }
