"""Run logging: `train.log` (text), `scalars.jsonl`, optional TensorBoard, a tqdm bar with ETA.

Only rank 0 writes or prints; on other ranks every method does nothing, so a message shows
once, not once per process. TensorBoard events go to `<run dir>/tb` when
`tensorboard` is installed (the `vidseg[tb]` extra); the first log line says how to open them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

LOG_NAME = "vidseg"


def _setup_file_logging(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger(LOG_NAME)
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    return handler


def lr_by_group(optimizer) -> dict[str, float]:
    """The current rate of every optimizer group as scalars, e.g.
    `{"lr_backbone": 0.001, "lr_heads": 0.01}` (unnamed groups are `lr_group<i>`)."""
    return {
        f"lr_{g.get('name', f'group{i}')}": float(g["lr"])
        for i, g in enumerate(optimizer.param_groups)
    }


def _open_tensorboard(log_dir: Path, purge_step: int | None):
    """A `SummaryWriter` on `log_dir` and the line telling the user how to view it; the writer
    is None, and the line says why, when TensorBoard cannot be used."""
    run_dir = log_dir.parent
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        if getattr(exc, "name", None) == "tensorboard":
            return None, (
                "TensorBoard: not installed; `pip install 'vidseg[tb]'` adds it (and "
                f"matplotlib, for `vidseg plot {run_dir}`)"
            )
        return (
            None,
            f"TensorBoard: disabled ({exc}); `pip install 'vidseg[tb]'` installs one that works",
        )
    try:
        # purge_step: TensorBoard discards the old events from this step on
        writer = SummaryWriter(str(log_dir), purge_step=purge_step)
    except Exception as exc:  # an unwritable folder must not stop training: the jsonl remains
        return None, f"TensorBoard: disabled, cannot write {log_dir} ({exc})"
    return writer, f"TensorBoard: tensorboard --logdir {run_dir}"


def truncate_scalars(path: Path, last_iter: int) -> int:
    """Keep the rows of `path` (scalars.jsonl) up to iteration `last_iter`; returns how many rows
    were dropped (later iterations and lines cut short by a crash). Rewritten atomically."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            keep = isinstance(row, dict) and int(row.get("iter", 0)) <= last_iter
        except (ValueError, TypeError):
            keep = False
        if keep:
            kept.append(line + "\n")
        elif line.strip():
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped


class RunLogger:
    """Writes the run's text log and scalars.

    Args:
        work_dir: run directory (exists).
        total_iters: length of the run (for the bar and the ETA).
        start_iter: iterations already done (resume): rows of `scalars.jsonl` after it are
            dropped (they are logged again) and TensorBoard purges its events after it.
        enabled: False on ranks other than 0.
        tensorboard: also write TensorBoard events when `torch.utils.tensorboard` imports.
        progress: show a tqdm bar on stderr.
    """

    def __init__(
        self,
        work_dir: str | Path,
        total_iters: int,
        start_iter: int = 0,
        enabled: bool = True,
        tensorboard: bool = True,
        progress: bool = True,
    ):
        self.enabled = enabled
        self.log = logging.getLogger(f"{LOG_NAME}.train")
        self._handler = None
        self._tb = None
        self._bar = None
        self._scalars = None
        self.dropped_rows = 0
        if not enabled:
            return
        self.work_dir = Path(work_dir)
        self._handler = _setup_file_logging(self.work_dir / "train.log")
        if start_iter > 0:  # resume: rows logged after the checkpoint will be logged again
            self.dropped_rows = truncate_scalars(self.work_dir / "scalars.jsonl", start_iter)
        self._scalars = open(self.work_dir / "scalars.jsonl", "a", encoding="utf-8")
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_iters,
                initial=start_iter,
                desc="train",
                unit="it",
                dynamic_ncols=True,
                file=sys.stderr,
                mininterval=1.0,
            )
        if tensorboard:
            self._tb, hint = _open_tensorboard(
                self.work_dir / "tb", start_iter + 1 if start_iter > 0 else None
            )
            self.info(hint)

    def info(self, message: str) -> None:
        if self.enabled:
            self.log.info(message)
            if self._bar is not None:
                self._bar.write(message, file=sys.stderr)

    def warning(self, message: str) -> None:
        if not self.enabled:
            return
        self.log.warning(message)
        if self._bar is not None:
            self._bar.write(f"warning: {message}", file=sys.stderr)

    def step(self, n: int = 1, postfix: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)

    def scalars(self, iteration: int, values: dict, prefix: str = "train") -> None:
        """Append one JSON line `{"iter": ..., "phase": prefix, **values}`; mirror to TensorBoard."""
        if not self.enabled:
            return
        row = {"iter": int(iteration), "phase": prefix}
        for k, v in values.items():
            row[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        self._scalars.write(json.dumps(row, allow_nan=True) + "\n")
        self._scalars.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(f"{prefix}/{k}", v, iteration)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._scalars is not None:
            self._scalars.close()
            self._scalars = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._handler is not None:
            logging.getLogger(LOG_NAME).removeHandler(self._handler)
            self._handler.close()
            self._handler = None
