"""Synthetic VSPW-format dataset: textured stuff layers, moving things, camera motion, degradations.

Every class is a procedural texture (an oriented grating at a class-specific frequency and angle,
blob noise and grain) whose colours overlap with the other classes, so one pixel's colour does not
give its class away: a model needs local context. Each video has a background of "stuff" layers
with wavy boundaries that pans and zooms with the camera, 2-5 "things" that move, scale and occlude
each other in a fixed depth order (their textures move with them), "others" regions (raw 0), thin
void bands (raw 255) around some objects, a global illumination ramp, sensor noise, and bursts of
strong noise or blur. Video k is drawn from `numpy.random.default_rng((seed, k))` alone, so the
output does not depend on how many workers render it.

This module writes the dataset (files, manifest, class list, mp4s); the textures and scenes are
drawn in `vidseg.data.synthetic_scene`, whose class tables are importable from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import string
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from vidseg.data.synthetic_scene import (
    BASE_HEIGHT,
    STUFF,
    THINGS,
    USED_CLASSES,
    Scene,
    TextureClass,
    photometric,
)

GENERATOR_VERSION = 1
MANIFEST = "vidseg_synthetic.json"
CLASS_FILE = "label_num_dic_final.json"
MP4_FPS = 15
_ID_CHARS = string.ascii_letters + string.digits + "-_"


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


def _render_video(out_dir: str, job: dict) -> dict:
    """Write one video's frames (and masks unless test; mp4 if asked); returns pixel counts."""
    rng = np.random.default_rng((job["seed"], job["index"]))
    name = f"{1001 + job['index']}_{''.join(rng.choice(list(_ID_CHARS), 11))}_0"
    first = int(rng.integers(1, 3000))
    frames, height, width = job["frames"], job["height"], job["width"]
    scene = Scene(rng, frames, height, width, job["ids"])
    looks = photometric(rng, frames, scene.scale)
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
            _write(
                os.path.join(folder, "origin", stem + ".jpg"),
                cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90]),
            )
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
        # x264's MB-tree lookahead made tiny videos differ from run to run (the same frames);
        # without it, and on one thread, the file is the same bytes in every run and machine
        stream = container.add_stream(
            "libx264", rate=MP4_FPS, options={"x264-params": "mbtree=0:rc-lookahead=0"}
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        yield lambda rgb: container.mux(
            stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24"))
        )
        container.mux(stream.encode(None))


def _check_args(params: dict) -> None:
    for key in ("num_train", "num_val", "num_test", "frames", "height", "width"):
        if not isinstance(params[key], (int, np.integer)) or params[key] < 0:
            raise ValueError(
                f"make_synthetic_vspw: {key}={params[key]!r}, expected an integer >= 0"
            )
    if params["num_train"] + params["num_val"] + params["num_test"] == 0 or params["frames"] < 1:
        raise ValueError(
            f"make_synthetic_vspw: nothing to write ({params}); expected at least "
            "one video of at least one frame"
        )
    h, w = params["height"], params["width"]
    if h < 16 or w < 16:
        raise ValueError(f"make_synthetic_vspw: frame size {h}x{w} (HxW), expected >= 16x16")
    if params["write_mp4"] and params["num_val"] and (h % 2 or w % 2):
        raise ValueError(
            f"make_synthetic_vspw: frame size {h}x{w} (HxW) has an odd side; yuv420p "
            "mp4 needs even sizes (or pass write_mp4=False)"
        )
    if not len(USED_CLASSES) <= params["num_classes"] <= 124:
        raise ValueError(
            f"make_synthetic_vspw: num_classes={params['num_classes']}, expected "
            f"{len(USED_CLASSES)}..124 (VSPW raw ids are 1..124)"
        )


def _prepare_out_dir(out_dir: str) -> None:
    """Create `out_dir`; replace an earlier synthetic dataset there, refuse any other content."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not os.path.isfile(os.path.join(out_dir, MANIFEST)):
            raise ValueError(
                f"output folder {out_dir} is not empty and holds no {MANIFEST}: "
                "expected a new or empty folder, or an earlier synthetic dataset"
            )
        for sub in ("data", "videos"):
            shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
    os.makedirs(os.path.join(out_dir, "data"), exist_ok=True)


def make_synthetic_vspw(
    out_dir: str | os.PathLike,
    *,
    num_train: int = 16,
    num_val: int = 4,
    num_test: int = 2,
    frames: int = 30,
    height: int = 144,
    width: int = 256,
    seed: int = 0,
    write_mp4: bool = True,
    num_classes: int = 124,
    workers: int | None = None,
) -> dict:
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
    _check_args(params)
    summary, _ = write_dataset(
        out_dir,
        params,
        seed=seed,
        workers=workers,
        ids=class_ids(num_classes),
        classes=class_table(num_classes),
        header={"generator": "vidseg.data.synthetic", "version": GENERATOR_VERSION},
        render=_render_video,
    )
    return summary


def write_dataset(
    out_dir: str | os.PathLike,
    params: dict,
    *,
    seed: int,
    workers: int | None,
    ids: dict[str, int],
    classes: dict,
    header: dict,
    render,
    extra: dict | None = None,
) -> tuple[dict, list[tuple[str, dict]]]:
    """The VSPW-layout writing every preset shares: manifest, class file, videos, split lists.

    Args:
        out_dir: output root (an earlier synthetic dataset there is replaced).
        params: the checked generator parameters (`num_train`, ..., `num_classes`).
        seed: dataset seed, passed to every video job.
        workers: rendering threads (default: CPU count).
        ids: class name -> raw id of the classes drawn.
        classes: the class file's table.
        header: the manifest's first keys (generator, version); `extra` its last ones.
        render: `render(out_dir, job) -> dict` with at least `name` and `counts` (raw id
            histogram); called once per video, in parallel.

    Returns:
        The summary `make_synthetic_vspw` documents, and `(split, render result)` per video.
    """
    start = time.perf_counter()
    out_dir = os.fspath(out_dir)
    sizes = {s: params[f"num_{s}"] for s in ("train", "val", "test")}
    frames = params["frames"]
    _prepare_out_dir(out_dir)
    expected = {
        split: {"videos": n, "frames": n * frames, "masks": 0 if split == "test" else n * frames}
        for split, n in sizes.items()
    }
    # written first, so that an interrupted run is recognised (and replaced) by the next one
    manifest = {**header, "seed": seed, "parameters": params, "expected": expected}
    _write_json(os.path.join(out_dir, MANIFEST), {**manifest, "classes_used": ids, **(extra or {})})
    _write_json(os.path.join(out_dir, CLASS_FILE), classes)
    if params["write_mp4"] and sizes["val"]:
        os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
    splits = [split for split, n in sizes.items() for _ in range(n)]
    jobs = [
        {
            "index": k,
            "seed": seed,
            "frames": frames,
            "height": params["height"],
            "width": params["width"],
            "ids": ids,
            "masks": split != "test",
            "mp4": params["write_mp4"] and split == "val",
        }
        for k, split in enumerate(splits)
    ]
    workers = max(1, min(len(jobs), workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:  # numpy and OpenCV release the GIL in the heavy parts
        results = list(pool.map(lambda job: render(out_dir, job), jobs))
    for split in sizes:
        with open(os.path.join(out_dir, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.writelines(r["name"] + "\n" for r, s in zip(results, splits) if s == split)
    total = sum(r["counts"] for r in results)
    names = {v: k for k, v in ids.items()} | {0: "others", 255: "void"}
    summary = {
        "out_dir": out_dir,
        **{key: {s: e[key] for s, e in expected.items()} for key in ("videos", "frames", "masks")},
        "classes_used": ids,
        "class_pixels": {names[v]: int(total[v]) for v in sorted(names) if total[v]},
        "seconds": round(time.perf_counter() - start, 3),
        "workers": workers,
    }
    return summary, list(zip(splits, results))


def _write_json(path: str, obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)


__all__ = [
    "make_synthetic_vspw",
    "class_ids",
    "class_table",
    "GENERATOR_VERSION",
    "MANIFEST",
    "CLASS_FILE",
    "MP4_FPS",
    "BASE_HEIGHT",
    "TextureClass",
    "STUFF",
    "THINGS",
    "USED_CLASSES",
]
