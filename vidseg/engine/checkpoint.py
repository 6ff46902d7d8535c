"""Checkpoints: atomic writes, a `latest` pointer, retention, safe loading and RNG state capture.

Layout of a run directory:
    iter_0001000.pth ...   the last `keep` periodic checkpoints
    best.pth               the checkpoint with the best validation mIoU
    latest                 a text file naming the newest complete checkpoint

A file is written as `.<name>.tmp` in the same directory, flushed and fsync'ed, then renamed over
the target (`os.replace` is atomic on POSIX), and the directory is fsync'ed so the rename itself
survives a crash. A failure at any point (e.g. the disk is full) leaves the previous checkpoint
and `latest` untouched. Everything stored is a tensor or a plain Python value, so checkpoints load
with `torch.load(weights_only=True)`: opening an untrusted file never runs code.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import torch

from vidseg.errors import EXIT_PARTIAL, VidsegError

LATEST = "latest"
BEST = "best.pth"
_ITER_RE = re.compile(r"^iter_(\d+)\.pth$")

# indirection so tests can simulate a failing write (out of disk space) mid-file
_serialize = torch.save


class CheckpointError(VidsegError, RuntimeError):
    """A checkpoint that cannot be written, found, read or applied."""


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:07d}.pth"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some file systems do not allow opening a directory; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """Run `write(file)` into a temporary file next to `path`, then rename it over `path`."""
    tmp = path.parent / f".{path.name}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise CheckpointError(
                f"out of disk space while writing {path}; the previous "
                f"checkpoint and '{LATEST}' in {path.parent} are unchanged",
                code=EXIT_PARTIAL,
            ) from exc
        raise
    _fsync_dir(path.parent)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """`torch.save` that never leaves a partial file at `path`."""
    _atomic_write(Path(path), lambda f: _serialize(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    _atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


def save_checkpoint(
    work_dir: str | os.PathLike, state: dict, iteration: int, keep: int = 3, is_best: bool = False
) -> Path:
    """Write `iter_<iteration>.pth`, point `latest` at it, optionally `best.pth`, prune old ones.

    Args:
        work_dir: run directory (created if missing).
        state: checkpoint contents (tensors and plain Python values only).
        iteration: completed iterations; names the file.
        keep: number of periodic checkpoints kept (older ones are deleted after `latest` moved).
        is_best: also write the same contents to `best.pth`.
    Returns:
        the path of the periodic checkpoint.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / checkpoint_name(iteration)
    atomic_torch_save(state, path)
    atomic_write_text(work_dir / LATEST, path.name + "\n")
    if is_best:
        atomic_torch_save(state, work_dir / BEST)
    _prune(work_dir, keep, protect=path.name)
    return path


def _prune(work_dir: Path, keep: int, protect: str) -> None:
    found = sorted(
        (int(m.group(1)), p) for p in work_dir.iterdir() if (m := _ITER_RE.match(p.name))
    )
    for _, p in found[:-keep] if keep > 0 else []:
        if p.name != protect:
            try:
                p.unlink()
            except OSError:
                pass


def find_latest(work_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by `<work_dir>/latest`, else the highest `iter_*.pth`, else None."""
    work_dir = Path(work_dir)
    pointer = work_dir / LATEST
    if pointer.is_file():
        target = work_dir / pointer.read_text(encoding="utf-8").strip()
        if target.is_file():
            return target
    found = sorted(
        (int(m.group(1)), p) for p in work_dir.glob("iter_*.pth") if (m := _ITER_RE.match(p.name))
    )
    return found[-1][1] if found else None


def resolve_resume(resume: str | os.PathLike, work_dir: str | os.PathLike) -> Path:
    """Map `--resume` ("latest", a run directory or a file) to a checkpoint file."""
    if str(resume) == "latest":
        found = find_latest(work_dir)
        if found is None:
            raise CheckpointError(
                f"--resume: no checkpoint in {work_dir} (no '{LATEST}' pointer and "
                f"no iter_*.pth); start without --resume or pass a checkpoint path"
            )
        return found
    path = Path(resume)
    if path.is_dir():
        found = find_latest(path)
        if found is None:
            raise CheckpointError(f"--resume {path}: directory holds no checkpoint")
        return found
    if not path.is_file():
        raise CheckpointError(f"--resume {path}: file not found")
    return path


def _check_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise CheckpointError(
            f"{what} {path} is a folder without a checkpoint ('{LATEST}' or iter_*.pth)"
        )
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes): an interrupted copy or download?")


def _why_unreadable(exc: Exception) -> str:
    """A one-line cause for a `torch.load` failure (torch's own messages run to paragraphs)."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "weights only" in text.lower():
        needs = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if needs:
            return (
                f"it needs the Python object {needs.group(1)}, and no code from a file is "
                "run (weights_only=True); save a plain state_dict with torch.save instead"
            )
        return (
            "not a torch.save file of tensors and plain values (loading uses "
            "weights_only=True, no code from a file is run)"
        )
    if "zip archive" in text or isinstance(exc, EOFError):
        return "truncated or corrupt (not a complete torch.save file)"
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no detail'}"


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint on the CPU with `weights_only=True` (no code execution).

    Raises:
        CheckpointError: missing, empty, truncated or not loadable as plain tensors and values.
    """
    path = Path(path)
    _check_file(path, "checkpoint")
    try:
        with warnings.catch_warnings():
            # torch warns about foreign pickle protocols before refusing them: one message is enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except (
        Exception
    ) as exc:  # truncated zip, foreign pickle, ... all mean "not a usable checkpoint"
        raise CheckpointError(f"cannot read checkpoint {path}: {_why_unreadable(exc)}") from exc


def load_model_state(
    model: torch.nn.Module, state_dict: dict, source: str = "checkpoint", assign: bool = False
) -> None:
    """Load `state_dict` strictly; a mismatch raises one error listing keys and shapes.

    `assign=True` makes the model's tensors the state dict's own (converted where the dtype
    differs) instead of copying into them: for a model built on the meta device.

    Raises:
        CheckpointError: missing / unexpected keys or shape mismatches (first 10 of each).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if own and len(missing) == len(own):
        shown = ", ".join(list(state_dict)[:3]) or "none"
        raise CheckpointError(
            f"{source} holds none of this model's {len(own)} tensors (its own "
            f"start with: {shown}): a checkpoint of another model or program"
        )
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict
        and hasattr(state_dict[k], "shape")
        and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for title, items in (
            ("missing in checkpoint", missing),
            ("not in model", unexpected),
            ("shape mismatch", shapes),
        ):
            if items:
                more = f" ... (+{len(items) - 10} more)" if len(items) > 10 else ""
                parts.append(f"{title} ({len(items)}): {', '.join(items[:10])}{more}")
        raise CheckpointError(
            f"{source} does not fit this model (was it trained with a different "
            f"model config?): " + "; ".join(parts)
        )
    if assign:
        state_dict = {
            k: v.to(own[k].dtype) if torch.is_tensor(v) and v.dtype != own[k].dtype else v
            for k, v in state_dict.items()
        }
    model.load_state_dict(state_dict, strict=True, assign=assign)


def load_weights_for_inference(path: str | os.PathLike) -> tuple[dict, dict | None]:
    """Return `(model state_dict, resolved config dict or None)` from a checkpoint or weight file.

    Accepts a full training checkpoint (keys `model`, `config`), a plain state dict, or a
    `.safetensors` file (no config).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        _check_file(path, "weight file")
        try:
            return load_file(str(path)), None
        except Exception as exc:  # noqa: BLE001 - SafetensorError is a Rust exception type
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(
                f"cannot read weight file {path}: not a valid .safetensors file ({text})"
            ) from exc
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        return ckpt["model"], ckpt.get("config")
    if isinstance(ckpt, dict) and ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt, None
    raise CheckpointError(
        f"{path}: neither a vidseg checkpoint (dict with 'model') nor a state dict"
    )


# --------------------------------------------------------------------------- RNG states


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """Every random generator the training loop touches, as weights_only-loadable values."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(mt), "gauss": gauss},
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        # only this process's device: reading every GPU would create a context on each of them
        "cuda": (
            torch.cuda.get_rng_state()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else None
        ),
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    return state


def restore_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of `capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if torch.is_tensor(state.get("cuda")) and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    for key, gen in (generators or {}).items():
        if key in state.get("generators", {}):
            gen.set_state(state["generators"][key])


def git_revision(repo_dir: str | os.PathLike | None = None) -> str:
    """`git rev-parse HEAD` of the source tree, or "unknown"."""
    repo_dir = repo_dir or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
