"""Training data: the configured dataset's clips and an iteration-based, resumable sampler.

`data.format` picks the layout (vspw, video, frames; `vidseg.data.layouts`); every layout
goes through the same `ClipDataset`.

The index stream is the concatenation of per-epoch permutations, each a function of
`(seed, epoch)` only. Global batch `s` takes stream positions `[s * B, (s + 1) * B)` (B = the
total batch over all ranks) and rank r takes its contiguous slice of `B / world_size` of them, so
the order is the same for any number of processes and the position is just `s`. Samples are
addressed as `(epoch, index)`, and `ClipDataset` draws every random choice from
`(seed, epoch, index)`, so a sample does not depend on which worker loads it or when.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)


def resolve_data_root(root: str, split: str, fmt: str = "vspw") -> str:
    """`root` (or `$VSPW_ROOT` when empty), checked to look like a dataset of format `fmt`.

    Raises:
        FileNotFoundError: no root given, missing folder, or (VSPW) no `<split>.txt` / `data/`
            in it, (video) no `videos/` in it; the message points to `vidseg data check`.
    """
    source = "data.root"
    if not root:
        root = os.environ.get("VSPW_ROOT", "")
        source = "$VSPW_ROOT"
    if not root:
        raise FileNotFoundError(
            "no data root: set data.root in the config (or --set data.root=DIR) "
            "or the environment variable VSPW_ROOT to the VSPW_480p folder"
        )
    path = Path(root).expanduser()
    hint = f"; run `vidseg data check {path}` to see what a {fmt} root needs (docs/DATA.md)"
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "folder does not exist"
        raise FileNotFoundError(f"{source}={root}: {what}{hint}")
    needed = {"vspw": (f"{split}.txt", "data"), "video": ("videos",), "frames": ()}[fmt]
    missing = [name for name in needed if not (path / name).exists()]
    if missing:
        what = "a VSPW root" if fmt == "vspw" else f"a data.format={fmt} root"
        raise FileNotFoundError(f"{source}={root}: not {what} (missing {', '.join(missing)}){hint}")
    return str(path)


def load_split(
    cfg, split: str, root: str | None = None, max_videos: int | None = None, readers=None
) -> tuple[str, list, list[str]]:
    """The labelled videos of `split` in the configured format, with the bad-video policy.

    Args:
        cfg: the full `Config` (`data.root`, `data.format`, `data.bad_videos`).
        split: split name.
        root: dataset root overriding `data.root`.
        max_videos: only the first N videos of the split (0/None = all).
        readers: `VideoFileReaders` for `data.format: video` (default: decided here).

    Returns:
        `(root, videos, skipped names)`: `LabelledVideo`s in split order.
    """
    from vidseg.data.layouts import load_videos, split_names

    d = cfg.data
    root = resolve_data_root(root or d.root, split, d.format)
    names = split_names(root, d.format, split)
    if max_videos:
        names = names[:max_videos]
    videos, skipped = load_videos(
        root, d.format, names, d.bad_videos, with_masks=True, readers=readers
    )
    return root, videos, skipped


class EpochIndexed(Dataset):
    """Wraps a dataset with `set_epoch`; items are addressed by `(epoch, index)` pairs."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        # each worker owns its copy of the dataset and handles one item at a time
        if getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


class InfiniteBatchSampler(Sampler):
    """Endless batches of `(epoch, index)` for one rank, starting at global batch `start`.

    Args:
        size: dataset length n.
        global_batch: batch size over all ranks B.
        rank, world_size: this process and the number of processes (B % world_size == 0).
        seed: seed of the epoch permutations.
        start: number of global batches already consumed (the resume position).
    """

    def __init__(
        self,
        size: int,
        global_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start: int = 0,
    ):
        if size < 1:
            raise ValueError("the training set is empty")
        if global_batch < world_size or global_batch % world_size:
            raise ValueError(
                f"data.batch_size={global_batch} must be a positive multiple of the "
                f"number of processes ({world_size})"
            )
        self.size = size
        self.global_batch = global_batch
        self.per_rank = global_batch // world_size
        self.rank = rank
        self.seed = seed
        self.start = start
        self._cache: dict[int, np.ndarray] = {}

    def position(self, batches: int) -> dict:
        """Sampler position after `batches` global batches: epoch and index within it."""
        pos = batches * self.global_batch
        return {"batches": int(batches), "epoch": pos // self.size, "index": pos % self.size}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}
            self._cache[epoch] = epoch_permutation(self.seed, epoch, self.size)
        return self._cache[epoch]

    def batch(self, s: int) -> list[tuple[int, int]]:
        """The `(epoch, index)` pairs of global batch `s` that belong to this rank."""
        first = s * self.global_batch + self.rank * self.per_rank
        out = []
        for pos in range(first, first + self.per_rank):
            epoch, i = divmod(pos, self.size)
            out.append((int(epoch), int(self._perm(epoch)[i])))
        return out

    def __iter__(self):
        s = self.start
        while True:
            yield self.batch(s)
            s += 1

    def __len__(self) -> int:  # DataLoader asks; the stream is endless
        return 2**62


def build_train_dataset(cfg):
    """A `ClipDataset` over `cfg.data.train_split` in `data.format`, with the training transform.

    Raises:
        FileNotFoundError: the root or a split file is missing.
        DataLayoutError: a video whose frames and masks do not pair up (unless
            `data.bad_videos: skip`), or none usable.
    """
    from vidseg.data.clip_dataset import ClipDataset
    from vidseg.data.transforms import ClipTransform

    d = cfg.data
    readers = None
    if d.format == "video":
        from vidseg.data.frame_access import VideoFileReaders

        readers = VideoFileReaders("auto")
        logger.info("video files read with %s (%s)", readers.backend, readers.decision.reason)
    root, videos, skipped = load_split(cfg, d.train_split, readers=readers)  # skips are logged
    if not videos:
        from vidseg.data.videos import DataLayoutError

        why = f"all {len(skipped)} skipped (data.bad_videos: skip)" if skipped else "it lists none"
        raise DataLayoutError(f"{root}: no videos to train on in split {d.train_split} ({why})")
    transform = ClipTransform(
        train=True,
        short_side=d.short_side,
        scale_range=tuple(d.scale_range),
        crop_size=tuple(d.crop_size),
        cat_max_ratio=d.cat_max_ratio,
        flip_prob=d.flip_prob,
        jitter=d.jitter,
        mean=d.mean,
        std=d.std,
    )
    return ClipDataset(
        videos,
        history=cfg.model.history,
        stride=d.clip.stride,
        mode="train",
        transform=transform,
        seed=cfg.train.seed,
        label_format=d.labels,
        num_classes=cfg.model.num_classes,
        readers=readers,
    )


def build_train_loader(
    cfg, rank: int = 0, world_size: int = 1, start_batch: int = 0, dataset=None
) -> tuple[DataLoader, InfiniteBatchSampler]:
    """An endless DataLoader of training batches for this rank, starting at `start_batch`.

    Args:
        cfg: the full `Config`.
        rank, world_size: this process and the number of processes.
        start_batch: global batches already consumed (from a checkpoint's sampler position).
        dataset: optional dataset with `set_epoch` (default: `build_train_dataset(cfg)`).
    Returns:
        `(loader, sampler)`; each batch is a dict with `frames (b, T, 3, H, W)`,
        `label (b, H, W)`, `substituted (b,)`, with b = data.batch_size // world_size.
    """
    dataset = dataset if dataset is not None else build_train_dataset(cfg)
    sampler = InfiniteBatchSampler(
        len(dataset), cfg.data.batch_size, rank, world_size, seed=cfg.train.seed, start=start_batch
    )
    # a private generator: creating the iterator draws worker base seeds from it, not from the
    # global RNG, so starting (or restarting) the loader leaves the training RNG untouched
    generator = torch.Generator().manual_seed(int(cfg.train.seed) + 7919 * rank)
    workers = int(cfg.data.num_workers)
    loader = DataLoader(
        EpochIndexed(dataset),
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
    )
    return loader, sampler
