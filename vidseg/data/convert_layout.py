"""Rewrite a labelled VSPW-format root in the `video` or `frames` layout (`vidseg.data.layouts`).

Used for test fixtures and the docs (`vidseg data synth --format video|frames` converts the
synthetic VSPW dataset), and by anyone who wants their VSPW-format data as video files. Masks
are copied byte for byte (same values, `data.labels: vspw`); the frames layout copies the frame
files byte for byte too (so it reads back bit-identical), the video layout encodes each video
as H.264 (lossy, so its frames read back close to, not equal to, the source JPEGs).
"""

from __future__ import annotations

import os
import shutil

from vidseg.data.layouts import CLASSES_FILE
from vidseg.data.vspw import VSPWVideo, load_class_names, read_frame, read_split

CONVERTIBLE = ("video", "frames")
VIDEO_FPS = 15  # VSPW's frame rate
VIDEO_CRF = 12  # x264 quality: near-transparent, so frames read back close to the source


def _prepare_out_dir(out_dir: str) -> None:
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise ValueError(
            f"output folder {out_dir} exists and is not empty; expected a new or empty folder"
        )
    os.makedirs(out_dir, exist_ok=True)


def write_mp4(path: str, frames, fps: int = VIDEO_FPS, crf: int = VIDEO_CRF) -> int:
    """Encode RGB uint8 `(H, W, 3)` frames as an H.264 (yuv420p) mp4; returns the frame count.

    Raises:
        ValueError: an odd frame side (yuv420p needs even sizes) or frames of different sizes.
    """
    import av

    count, size = 0, None
    with av.open(path, "w") as container:
        stream = None
        for rgb in frames:
            if size is None:
                size = rgb.shape[:2]
                if size[0] % 2 or size[1] % 2:
                    raise ValueError(
                        f"{path}: frame size {size[1]}x{size[0]} (WxH) has an odd "
                        "side; H.264 yuv420p needs even sizes"
                    )
                stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf)})
                stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
            elif rgb.shape[:2] != size:
                raise ValueError(
                    f"{path}: frame {count} is {rgb.shape[1]}x{rgb.shape[0]}, the "
                    f"first was {size[1]}x{size[0]} (WxH)"
                )
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return count


def _write_video(out_dir: str, video: VSPWVideo) -> None:
    write_mp4(
        os.path.join(out_dir, "videos", video.name + ".mp4"),
        (read_frame(p) for p in video.frame_paths),
    )
    mask_dir = os.path.join(out_dir, "masks", video.name)
    os.makedirs(mask_dir)
    for i, path in enumerate(video.mask_paths):
        shutil.copyfile(path, os.path.join(mask_dir, f"{i:06d}.png"))


def _write_frames(out_dir: str, video: VSPWVideo) -> None:
    # unpadded numbers, so that reading them back relies on natural order (frame2 < frame10)
    images = os.path.join(out_dir, video.name, "images")
    masks = os.path.join(out_dir, video.name, "masks")
    os.makedirs(images)
    os.makedirs(masks)
    for i, (frame, mask) in enumerate(zip(video.frame_paths, video.mask_paths)):
        ext = os.path.splitext(frame)[1].lower()
        shutil.copyfile(frame, os.path.join(images, f"frame{i}{ext}"))
        shutil.copyfile(mask, os.path.join(masks, f"frame{i}.png"))


def convert_vspw(
    src: str | os.PathLike, out_dir: str | os.PathLike, fmt: str, splits=("train", "val")
) -> dict:
    """Write the labelled splits of a VSPW-format root in the `video` or `frames` layout.

    Args:
        src: VSPW-format root (split files, `label_num_dic_final.json`, `data/`).
        out_dir: new or empty output folder.
        fmt: "video" (`videos/<name>.mp4` + `masks/<name>/<index:06d>.png`) or "frames"
            (`<name>/images/frame<i>.<ext>` + `<name>/masks/frame<i>.png`).
        splits: splits to convert; each one present in `src` gets its `<split>.txt` in the
            output. Videos without masks (VSPW's test split) cannot be converted.

    Returns:
        `{"out_dir", "format", "videos": {split: n}, "frames": {split: n}}`.

    Raises:
        ValueError: unknown format, non-empty output folder, odd frame size (video).
        FileNotFoundError / DataLayoutError: the source is not a labelled VSPW root.
    """
    if fmt not in CONVERTIBLE:
        raise ValueError(f"format={fmt!r}; expected one of {', '.join(CONVERTIBLE)}")
    src, out_dir = os.fspath(src), os.fspath(out_dir)
    classes = load_class_names(src)
    todo = {s: read_split(src, s) for s in splits if os.path.isfile(os.path.join(src, f"{s}.txt"))}
    if not any(todo.values()):
        raise ValueError(f"{src}: no video in the splits {', '.join(splits)} to convert")
    # every video's frames and masks are paired before anything is written, so a bad video
    # leaves no half-written output behind
    videos = {
        name: VSPWVideo.from_root(src, name, with_masks=True)
        for names in todo.values()
        for name in names
    }
    _prepare_out_dir(out_dir)
    with open(os.path.join(out_dir, CLASSES_FILE), "w", encoding="utf-8") as f:
        f.writelines(name + "\n" for name in classes)
    if fmt == "video":
        os.makedirs(os.path.join(out_dir, "videos"))
    summary = {"out_dir": out_dir, "format": fmt, "videos": {}, "frames": {}}
    done: set[str] = set()
    for split, names in todo.items():
        with open(os.path.join(out_dir, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.writelines(name + "\n" for name in names)
        frames = 0
        for name in names:
            video = videos[name]
            frames += len(video)
            if name not in done:  # a video listed in two splits is written once
                (_write_video if fmt == "video" else _write_frames)(out_dir, video)
                done.add(name)
        summary["videos"][split], summary["frames"][split] = len(names), frames
    return summary
