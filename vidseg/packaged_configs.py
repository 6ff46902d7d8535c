"""The configs shipped with vidseg, and how a config argument resolves to a file.

The repository's top-level `configs/` is the only copy. A wheel (`pip install .`) carries it as
package data in `vidseg/_configs` (setup.py maps it there); an editable install or a plain
checkout has no `vidseg/_configs`, so the `configs/` folder next to the package is read directly.

A config argument is, in this order:
1. an existing file: absolute, or relative to the current directory (to the including file's
   folder for a `_base_` entry);
2. a packaged config name: its path under `configs/` (`vspw/upernet_mcibipp_r50`) or its file
   name when that is unique (`upernet_mcibipp_r50`), with or without `.yaml`; a leading
   `configs/` is accepted, so the repository paths of the README work from any directory.
Anything else raises `ConfigError` in one line with the closest names.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from pathlib import Path

from vidseg.config import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
SUFFIXES = (".yaml", ".yml")


def configs_root() -> Path | None:
    """The folder holding the packaged configs, or None when this installation has none."""
    installed = PACKAGE_DIR / "_configs"
    if installed.is_dir():
        return installed
    checkout = PACKAGE_DIR.parent
    if (checkout / "configs").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout / "configs"
    return None


@lru_cache(maxsize=4)
def _index(root: Path | None) -> dict[str, Path]:
    if root is None:
        return {}
    files = sorted(p for suffix in SUFFIXES for p in root.rglob(f"*{suffix}"))
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in files}


def packaged_configs(include_bases: bool = True) -> dict[str, Path]:
    """`{name: path}` of every packaged config, sorted by name (`vspw/upernet_mcibipp_r50`).

    Args:
        include_bases: also the partial configs under `_base_/` that others inherit.
    """
    index = _index(configs_root())
    if include_bases:
        return dict(index)
    return {name: path for name, path in index.items() if not name.startswith("_base_/")}


def describe(path: Path) -> str:
    """A config's one-line description: the first sentence of its leading comment block, or ""."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = line.strip()
            if not text.startswith("#"):
                break
            lines.append(text.lstrip("#").strip())
    block = " ".join(t for t in lines if t)
    end = re.search(r"\.(?=\s+[A-Z(]|$)", block)
    return block[: end.end()] if end else block


def _name_of(spec: str) -> str:
    name = spec.replace("\\", "/").strip()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    while name.startswith("./"):
        name = name[2:]
    return name.removeprefix("configs/")


def closest_names(spec: str, n: int = 3) -> list[str]:
    """The `n` packaged config names most similar to `spec` (whole name or file name)."""
    name = _name_of(spec)
    leaf = name.rsplit("/", 1)[-1]
    scored = []
    for candidate in packaged_configs(include_bases=False):
        ratio = max(
            difflib.SequenceMatcher(None, name, candidate).ratio(),
            difflib.SequenceMatcher(None, leaf, candidate.rsplit("/", 1)[-1]).ratio(),
        )
        scored.append((-ratio, candidate))
    return [candidate for _, candidate in sorted(scored)[:n]]


def find_packaged(spec: str) -> Path | None:
    """The packaged config named `spec`, or None; `ConfigError` for an ambiguous file name."""
    index = packaged_configs()
    name = _name_of(spec)
    if name in index:
        return index[name]
    if "/" in name:
        return None
    matches = [key for key in index if key.rsplit("/", 1)[-1] == name]
    if len(matches) > 1:
        raise ConfigError(
            f"config name {spec!r} is ambiguous: {', '.join(matches)}; give the folder too"
        )
    return index[matches[0]] if matches else None


def _unknown(spec: str, where: str) -> ConfigError:
    if not packaged_configs():
        hint = "this installation has no packaged configs (reinstall vidseg)"
    else:
        hint = f"closest: {', '.join(closest_names(spec))} (`vidseg configs` lists them all)"
    return ConfigError(f"{where}{spec!r} is neither a file nor a packaged config; {hint}")


def resolve_config(
    spec: str | Path, base_dir: str | Path | None = None, included_from: str | Path | None = None
) -> Path:
    """Resolve a config argument (a file or a packaged config name) to an existing file.

    Args:
        spec: a path or a name, see the module docstring.
        base_dir: folder that relative paths start from (default: the current directory).
        included_from: the file whose `_base_` names `spec`, for the error message.
    Raises:
        ConfigError: neither a file nor a packaged config (one line, with the closest names),
            or a file name shared by several packaged configs.
    """
    path = Path(spec).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(
            f"config {str(spec)!r} is a directory, expected a YAML file or a packaged config name"
        )
    found = find_packaged(str(spec))
    if found is not None:
        return found
    where = f"{included_from}: _base_ " if included_from is not None else "config "
    raise _unknown(str(spec), where)
